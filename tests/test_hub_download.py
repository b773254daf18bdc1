"""A hub id not in the cache, online (minitflow/model/weights.py): an unreachable hub is one line in
seconds, a hub that answers goes on to the download, one that stalls mid-file or after the probe
names the file and its timeout, a download cut short is named offline, and the timeout hook is
left on no client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minitflow import demo_dir, generate
from minitflow.errors import UserError
from helpers import fails, gen_args


DEMO = demo_dir()


# ---- an unreachable hub -----------------------------------------------------------------

HUB_SCRIPT = """
import socket, sys, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(16)
held = []
threading.Thread(target=lambda: [held.append(srv.accept()) for _ in iter(int, 1)], daemon=True).start()
import os
os.environ["HF_ENDPOINT"] = sys.argv[1] or f"http://127.0.0.1:{srv.getsockname()[1]}"
from minitflow import generate
from minitflow.errors import run_cli
sys.exit(run_cli(generate.main, sys.argv[2:]))
"""


@pytest.mark.parametrize("endpoint", ["", "http://127.0.0.1:9"])
def test_an_unreachable_hub_is_one_line_in_seconds(endpoint, tmp_path):
    """A hub id not in the cache, online: snapshot_download asks the hub for the repo's info with
    no timeout, so a hub that takes the connection and never answers (a proxy, a firewall) held
    the run forever. Now the first request has the hub's HF_HUB_ETAG_TIMEOUT (2 s here); a port
    that refuses (127.0.0.1:9) is one line at once, as before."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_ETAG_TIMEOUT="2", OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", HUB_SCRIPT, endpoint, *map(str, gen_args("--model", "org/model"))],
                              capture_output=True, text=True, env=env, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("no answer from the hub held the run for 90 s")
    took = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: could not get org/model: the Hugging Face hub at http://127.0.0.1:"), lines[0]
    assert ("ReadTimeout" if not endpoint else "ConnectError") in lines[0] and "HF_HUB_ETAG_TIMEOUT=2 s" in lines[0]
    assert took < 45, took  # the interpreter and imports included, on a busy machine


def test_a_hub_that_answers_goes_on_to_the_download(monkeypatch):
    """The timed first request is only a probe: a hub that answers, or answers with an HTTP error
    (gated, private, no such repo: snapshot_download words those), goes on to snapshot_download
    as before."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import huggingface_hub
    import huggingface_hub.constants
    from minitflow.model.weights import resolve_model_dir

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *a):
            pass
    server = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    downloads = []
    def snapshot(name, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise FileNotFoundError(name)
        downloads.append(name)
        return str(DEMO)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    try:
        assert resolve_model_dir("org/model") == DEMO and downloads == ["org/model"]  # a 404 answer
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, name, timeout=None: None)
        assert resolve_model_dir("org/model") == DEMO and downloads == ["org/model"] * 2  # the repo's info
    finally:
        server.shutdown()


# ---- a hub that answers, then stalls ------------------------------------------------------

HUB_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A local hub serving the demo model as org/model, online, the cache in tmp_path/hub and
    HF_HUB_DOWNLOAD_TIMEOUT = HF_HUB_ETAG_TIMEOUT = 1 s. Yields its state: set state["stall"] to
    "file" (headers and a third of model.safetensors, then nothing) or "info" (the repo's info
    answered once, the second ask never); state["listed"]: more files its file list names."""
    import hashlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import huggingface_hub.constants as hub
    sha, release = "a" * 40, threading.Event()
    state = {"stall": None, "infos": 0, "listed": []}

    class Hub(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _send(self, body: bytes, head: bool = False, **headers):
            self.send_response(200)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            if head:
                return
            if state["stall"] == "file" and headers.get("X-Repo-Commit") and len(body) > 1_000_000:
                self.wfile.write(body[:len(body) // 3])
                self.wfile.flush()
                release.wait()
                return
            self.wfile.write(body)

        def _file(self, head: bool):
            name = self.path.split("/resolve/")[1].split("/", 1)[1]
            data = (DEMO / name).read_bytes()
            self._send(data, head, **{"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'})

        def do_HEAD(self):
            self._file(head=True)

        def do_GET(self):
            path = self.path.split("?")[0]
            if "/resolve/" in path:
                return self._file(head=False)
            if "/tree/" in path:
                files = [{"type": "file", "path": f, "size": (DEMO / f).stat().st_size, "oid": "0" * 40} for f in HUB_FILES]
                files += [{"type": "file", "path": f, "size": 10, "oid": "1" * 40} for f in state["listed"]]
                return self._send(json.dumps(files).encode())
            if path.startswith("/api/models/org/model"):
                state["infos"] += 1
                if state["stall"] == "info" and state["infos"] > 1:
                    release.wait()
                    return
                return self._send(json.dumps({"id": "org/model", "sha": sha, "siblings": []}).encode())
            if path.startswith("/api/models/"):  # another repo: the hub's answer for one it does not hold (or hides)
                self.send_response(401)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(hub, "ENDPOINT", endpoint)
    monkeypatch.setattr(hub, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for knob in ("HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.setattr(hub, knob, 1)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    yield state
    release.set()
    server.shutdown()


@pytest.mark.parametrize("cut", ["model.safetensors", "tokenizer.json", "config.json"])
def test_a_download_cut_short_offline_names_what_the_snapshot_lacks(cut, fake_hub, tmp_path, monkeypatch):
    """huggingface-hub (2.4, installed) keeps the repo's file list beside a download and, offline, refuses
    a snapshot missing one of those files as IncompleteSnapshotError: that was "org/model is not
    in the Hugging Face cache", for a cache that holds all but the weights. Now it says what the
    snapshot lacks, as for caches without the file list (the weights: our own check; another
    file: the one huggingface-hub names)."""
    from minitflow.model.weights import resolve_model_dir
    snap = resolve_model_dir("org/model", need_tokenizer=True)  # a real download from the fake hub
    assert sorted(p.name for p in snap.iterdir()) == sorted(HUB_FILES)
    assert list((tmp_path / "hub").rglob("trees/*.json")), "the hub's file list, which the refusal reads"
    (snap / cut).resolve().unlink()
    (snap / cut).unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        resolve_model_dir("org/model", need_tokenizer=True)
    assert str(e.value).startswith(f"org/model is only partly in the Hugging Face cache: {snap} lacks {cut}, "
                                   "and HF_HUB_OFFLINE is set"), e.value


@pytest.mark.parametrize("offline", ["1", ""])
def test_a_cached_snapshot_without_files_minitflow_does_not_read_loads(offline, fake_hub, monkeypatch):
    """`hf download org/model --include "*.json" "*.safetensors"` leaves out the repo's merges.txt,
    which minitflow never reads (tokenizer.json holds the merges) and huggingface-hub's file list,
    kept beside the download, names. Offline that whole model was "only partly in the Hugging Face
    cache: ... lacks merges.txt", and online (or with the network down) it went to the hub for it.
    The snapshot counts as whole when it holds every file minitflow reads."""
    from huggingface_hub import snapshot_download
    from minitflow.model.weights import resolve_model_dir
    fake_hub["listed"] = ["merges.txt"]  # not served: a download of it fails
    snap = Path(snapshot_download("org/model", allow_patterns=["*.json", "*.safetensors"]))
    assert sorted(p.name for p in snap.iterdir()) == sorted(HUB_FILES)
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    assert resolve_model_dir("org/model", need_tokenizer=True) == snap


def test_a_cached_weight_file_cut_short_names_the_command_that_fetches_it_again(fake_hub, tmp_path, capsys,
                                                                                 monkeypatch):
    """A blob cut short (a copy of the cache to an offline machine interrupted) was "re-download or
    re-save the model"; the plain `hf download org/model` that led to keeps a file its cache holds,
    so the same error came back. The error names the command that replaces it, which, run as
    written (against the fake hub), does: the model then loads."""
    import os
    import shlex
    import subprocess
    import sys
    import huggingface_hub.constants as hub
    from minitflow.model.weights import read_weights, resolve_model_dir
    snap = resolve_model_dir("org/model", need_tokenizer=True)  # a real download from the fake hub
    blob = (snap / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-100])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = fails(capsys, generate.main, gen_args("--model", "org/model"), f"{snap / 'model.safetensors'} is not a "
                  "readable safetensors file", f"fetch it again with `hf download org/model model.safetensors "
                  f"--revision {snap.name} --force-download` (a plain `hf download` keeps the cached copy)")
    command = shlex.split(error.split("`")[1])
    hf = [sys.executable, "-c", "import sys; from huggingface_hub.cli.hf import main; sys.argv[0] = 'hf'; main()"]
    env = {**os.environ, "HF_ENDPOINT": hub.ENDPOINT, "HF_HUB_CACHE": hub.HF_HUB_CACHE, "HF_HUB_OFFLINE": "0"}
    for run in (command[1:-1], command[1:]):  # the plain download first: it keeps the copy cut short
        subprocess.run(hf + run, env=env, check=True, capture_output=True, timeout=120)
        assert blob.stat().st_size == (DEMO / "model.safetensors").stat().st_size - 100 * (run != command[1:])
    assert read_weights(snap)[0].num_hidden_layers == 4


def _stalls(resolve) -> UserError:
    """`resolve()`'s UserError, run on a thread so that a hang fails the test instead of holding it."""
    import threading
    out: list[object] = []

    def run():
        try:
            out.append(resolve())
        except Exception as e:
            out.append(e)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "a stalled hub held the download for 60 s"
    assert isinstance(out[0], UserError), out
    return out[0]


def test_a_hub_id_the_hub_does_not_hold_is_one_line_naming_its_error(fake_hub):
    """The hub answers that it holds no such repo (a typo): snapshot_download's RepositoryNotFoundError
    is one line naming it, not a timeout's words."""
    from minitflow.model.weights import resolve_model_dir
    with pytest.raises(UserError) as e:
        resolve_model_dir("org/modle")
    assert str(e.value) == ("could not get org/modle from the Hugging Face hub (RepositoryNotFoundError), nor is it a "
                            "folder here; run `hf download org/modle` where there is network, or pass a local directory")


def test_a_hub_that_stalls_mid_file_names_the_file_and_its_timeout(fake_hub, tmp_path, monkeypatch):
    """The hub sends model.safetensors' headers and a third of it, then nothing. huggingface-hub
    times each read (HF_HUB_DOWNLOAD_TIMEOUT) and retries five times; its ReadTimeout then was
    "could not get org/model from the Hugging Face hub (ReadTimeout)", no word of which file
    nor which knob. Now both are named; the third never becomes a blob a later offline run
    trusts: offline, the snapshot lacks model.safetensors."""
    from minitflow.model.weights import resolve_model_dir
    fake_hub["stall"] = "file"
    error = str(_stalls(lambda: resolve_model_dir("org/model", need_tokenizer=True)))
    assert error.startswith("could not get org/model: the Hugging Face hub at http://127.0.0.1:"), error
    assert "stopped sending model.safetensors (ReadTimeout: nothing for HF_HUB_DOWNLOAD_TIMEOUT=1 s)" in error, error
    blobs = sorted(p.stat().st_size for p in (tmp_path / "hub").rglob("blobs/*"))  # no <etag>.incomplete either
    assert blobs == sorted((DEMO / f).stat().st_size for f in HUB_FILES if f != "model.safetensors"), blobs
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="only partly in the Hugging Face cache: .* lacks model.safetensors, "):
        resolve_model_dir("org/model", need_tokenizer=True)


def test_a_hub_that_stalls_after_the_probe_is_one_line_not_a_hang(fake_hub):
    """_hub_answers asks the repo's info with a timeout; snapshot_download asks it again, and for
    the file list, with none: a hub that answered the first ask and not the second held the run
    forever. Every request huggingface-hub sends without a timeout now has HF_HUB_ETAG_TIMEOUT."""
    from minitflow.model.weights import resolve_model_dir
    fake_hub["stall"] = "info"
    error = str(_stalls(lambda: resolve_model_dir("org/model")))
    assert fake_hub["infos"] == 2, fake_hub
    assert error.startswith("could not get org/model: the Hugging Face hub at http://127.0.0.1:"), error
    assert "stopped sending its answer to GET /api/models/org/model/revision/main (ReadTimeout: nothing for " \
           "HF_HUB_ETAG_TIMEOUT=1 s)" in error, error


def test_the_timeout_hook_leaves_a_requests_session_alone(monkeypatch):
    """huggingface-hub before 1.0 (pyproject allows 0.34) sends with a requests.Session, which has
    no request hooks: putting the timeout hook on it was an AttributeError before any download."""
    import huggingface_hub
    import requests
    from minitflow.model.weights import _time_every_request
    session = requests.Session()
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: session)
    _time_every_request()
    assert not hasattr(session, "event_hooks") and session.hooks == {"response": []}
    # ... and a download through it: no hook to remove after it either
    import minitflow.model.weights as weights
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_hub_answers", lambda name, other="": None)

    def snapshot(name, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise FileNotFoundError(name)
        return str(DEMO)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert weights.resolve_model_dir("org/model") == DEMO and session.hooks == {"response": []}


def test_the_timeout_hook_is_removed_after_the_download(monkeypatch):
    """The hook sits on huggingface-hub's process-wide client: left there, every later hub request
    of the process (datasets' downloads, a caller's own) had a 10 s timeout it never asked for."""
    import huggingface_hub
    import minitflow.model.weights as weights
    hooks = getattr(huggingface_hub.get_session(), "event_hooks", {}).get("request")
    if hooks is None:
        pytest.skip("huggingface-hub < 1.0: no request hooks")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_hub_answers", lambda name, other="": None)
    during = []
    def snapshot(name, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise FileNotFoundError(name)
        during.append(weights._timed in hooks)
        return str(DEMO)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert weights.resolve_model_dir("org/model") == DEMO
    assert during == [True] and weights._timed not in hooks
