"""Load a HF-format Qwen3 directory (or hub id from the local cache) with safetensors.

Tensors are read one at a time and copied into parameters already allocated in the target
dtype and device, so no full float32 copy of the model ever exists.
"""

from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from minitflow.errors import UserError
from minitflow.files import connection_errors, hub_offline, hub_silence, model_file, read_text
from minitflow.model.config import Qwen3Config
from minitflow.model.layers import Rotary
from minitflow.model.qwen3 import Qwen3Model

HF_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.txt"]
# the files of a model minitflow reads: a cached snapshot that holds them is whole, whatever else huggingface-hub's
# file list names (`hf download --include "*.json" "*.safetensors"` leaves out merges.txt, which was "lacks merges.txt")
READ_PATTERNS = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "*.safetensors",
                 "model.safetensors.index.json"]


def model_files(model_dir: Path) -> dict[str, Path]:
    """The model folder's own files (HF_PATTERNS), as {"--model's NAME": path}: the inputs an output
    path must not be (check_output_file), or the results would be written over the weights."""
    return {f"--model's {p.name}": p for p in sorted(model_dir.iterdir())
            if p.is_file() and any(fnmatch.fnmatch(p.name, pattern) for pattern in HF_PATTERNS)}


def resolve_model_dir(name_or_path: str | Path, need_tokenizer: bool = False) -> Path:
    """A local directory as is; otherwise a hub id looked up in huggingface-hub's cache
    (downloaded only when online). Offline and not cached: one clear error. `need_tokenizer`
    (callers that read text) refuses a folder or snapshot without tokenizer.json here, before
    anything runs on it: else it would fail only after the checks, outputs and checkpoint."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        # models--Org--Name in the hub cache, or its snapshots/: refused as "no tokenizer.json" or "no config.json"
        repo_dir = path.parent if path.name == "snapshots" else path
        if (repo_dir / "snapshots").is_dir() and (repo_dir / "refs").is_dir() and not (path / "config.json").exists():
            folder = repo_dir.name
            repo = folder[len("models--"):].replace("--", "/") if folder.startswith("models--") else None
            raise UserError(f"{path} is a Hugging Face cache folder, not a model folder: pass the hub id"
                            f"{f' {repo}' if repo else ''} or one of its snapshots/<revision> folders")
        if not (path / "config.json").exists() and _is_hub_id(str(name_or_path)):
            # an empty clone or a stray mkdir named like the hub id hid it: was "no config.json in Org/Name"
            raise UserError(f"{name_or_path} is a folder here without config.json, so not a model folder, and a folder "
                            f"comes before the hub id {name_or_path}: pass the model's folder, or rename ./{name_or_path} "
                            "to use the hub id")
        return _check_tokenizer(path, need_tokenizer)
    name = str(name_or_path)
    if path.exists():  # model.safetensors or config.json itself: was "model directory not found"
        raise UserError(f"{name} is a file, not a model directory: pass the folder that holds config.json and the "
                        f"weights ({path.parent})")
    if name.count("/") != 1 or name.startswith((".", "/")):
        bare = name.rstrip("/")  # a shell's completion of a folder adds one; a hub id has none
        hint = f"; the hub id is {bare}, without the trailing '/'" if bare != name and _is_hub_id(bare) else ""
        raise UserError(f"model directory not found: {name} (pass a HF-format Qwen3 directory or a hub id{hint})")
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(name)
    except HFValidationError:  # Org/Name@rev: was "not in the Hugging Face cache", or a failed download online
        raise UserError(f"{name} is neither a folder here nor a hub id (Org/Name of letters, digits, '-', '_' and '.'; "
                        "minitflow takes no @revision: pass the snapshot folder of that revision)") from None
    local: Path | None = None
    lacks: str | None = None
    try:
        local = Path(snapshot_download(name, allow_patterns=READ_PATTERNS, local_files_only=True))
        lacks = _lacks(local)  # a snapshot with only config.json (AutoConfig cached it) is not the model
    except Exception as e:
        # IncompleteSnapshotError: the hub's cached file list shows a download cut short. Offline that
        # was "not in the Hugging Face cache", and the user looked for the wrong cause
        partial = getattr(e, "snapshot_path", None)
        local = Path(partial) if partial else None
        lacks = (_lacks(local) or _hub_lacks(e)) if local is not None else None
    if local is not None and lacks is None and (not need_tokenizer or (local / "tokenizer.json").is_file()):
        return local
    # main is not cached whole, another revision may be: `hf download ID --revision <commit>` writes no
    # refs/main, and AutoConfig online after main moved on upstream fetches only the new config.json
    whole = [s for s in _cached_snapshots(name) if (local is None or s.name != local.name)
             and (not need_tokenizer or (s / "tokenizer.json").is_file())]
    other = f" such as {whole[0]}, a whole snapshot of another revision" if whole else ""
    spelled = None if local is not None or whole else _cached_spelling(name)
    if spelled is not None:  # offline "not in the cache"; online a second download of the same weights
        raise UserError(f"{name} is not in the Hugging Face cache, but {spelled} is: the same hub repository (the hub "
                        f"reads an id in any letter case, its cache folders do not): pass {spelled}")
    offline = hub_offline()
    if offline:
        if local is not None and lacks is not None:  # "not in the cache" sent users looking for another cause
            broken = " (a broken link: a download cut short?)" if (local / lacks).is_symlink() else ""
            raise UserError(f"{name} is only partly in the Hugging Face cache: {local} lacks {lacks}{broken}, and "
                            f"{offline} is set: run `hf download {name}` where there is network, or pass a "
                            f"local directory{other}")
        if local is not None:  # the weights are cached, the tokenizer is not
            raise UserError(f"no tokenizer.json in {local} (the cached {name}) and {offline} is set: run "
                            f"`hf download {name}` where there is network, or pass a local directory")
        if whole:  # "not in the Hugging Face cache" was false
            more = f" and {len(whole) - 1} more" if len(whole) > 1 else ""
            raise UserError(f"{name} is in the Hugging Face cache only at another revision than main ({whole[0]}"
                            f"{more}) and {offline} is set: pass that snapshot folder as the model (a hub id is its "
                            f"main revision), or run `hf download {name}` where there is network")
        raise UserError(f"{name} is not in the Hugging Face cache (nor a folder here) and {offline} is set: run "
                        f"`hf download {name}` where there is network, or pass a local directory")
    _hub_answers(name, other)
    hooks = _time_every_request()
    try:
        fetched = Path(snapshot_download(name, allow_patterns=HF_PATTERNS))
    except Exception as e:  # network errors, gated repos, typos
        stalled = _stalled(e)
        if stalled:
            raise UserError(f"could not get {name}: {stalled}, nor is it a folder here; run `hf download {name}` "
                            f"where there is network, or pass a local directory{other}") from None
        raise UserError(f"could not get {name} from the Hugging Face hub ({type(e).__name__}), nor is it a folder here; run "
                        f"`hf download {name}` where there is network, or pass a local directory{other}") from None
    finally:  # the shared client serves other hub users of the process too (datasets): theirs are left as they were
        if hooks is not None and _timed in hooks:
            hooks.remove(_timed)
    return _check_tokenizer(fetched, need_tokenizer)


def _is_hub_id(name: str) -> bool:
    """Whether `name` is Org/Name as the hub spells its ids."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    if name.count("/") != 1 or name.startswith((".", "/")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_answers(name: str, other: str = "") -> None:
    """Ask the hub for `name`'s info (snapshot_download's own first request) with a timeout
    (files.hub_silence): snapshot_download asks without one, and a hub behind a firewall that drops
    packets, or a proxy that never answers, held a run forever. An answer, an HTTP error included
    (gated, private, no such repo), leaves the rest to snapshot_download.
    `other`: the error's words for a whole snapshot of another revision in the cache."""
    silence = hub_silence(name)
    if silence:
        raise UserError(f"could not get {name}: {silence}, nor is it a folder here; run `hf download {name}` where "
                        f"there is network, or pass a local directory{other}")


def _time_every_request() -> list | None:
    """Give huggingface-hub's requests that have no timeout HF_HUB_ETAG_TIMEOUT, by a request
    hook on its shared client. snapshot_download asks for the repo's info and file list with none:
    a hub that answered _hub_answers and then stalled held the run forever. The file downloads
    keep their HF_HUB_DOWNLOAD_TIMEOUT and the metadata requests theirs. huggingface-hub before
    1.0 sends with requests, which has no request hooks: there nothing changes.  Returns the hook
    list (None there), from which the caller removes the hook after its download."""
    from huggingface_hub import get_session
    hooks = getattr(get_session(), "event_hooks", {}).get("request")
    if hooks is not None and _timed not in hooks:
        hooks.append(_timed)
    return hooks


def _timed(request) -> None:
    """The request hook of _time_every_request: a None connect, read or write timeout becomes
    HF_HUB_ETAG_TIMEOUT (pool: waiting for one of the client's own connections, left as is)."""
    from huggingface_hub import constants
    timeout = {"connect": None, "read": None, "write": None, "pool": None, **request.extensions.get("timeout", {})}
    request.extensions = {**request.extensions, "timeout": {
        k: constants.HF_HUB_ETAG_TIMEOUT if v is None and k != "pool" else v for k, v in timeout.items()}}


def _stalled(error: BaseException) -> str | None:
    """What the hub stopped sending, when `error` is (or was raised from) an HTTP timeout: "the
    Hugging Face hub at URL stopped sending model.safetensors (ReadTimeout: nothing for
    HF_HUB_DOWNLOAD_TIMEOUT=10 s)", the knob named where it set that wait. None for other errors."""
    from urllib.parse import parse_qs, unquote
    from huggingface_hub import constants
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, connection_errors("TimeoutException")):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    try:
        request = seen.request
    except RuntimeError:  # httpx: a timeout raised outside a request
        request = None
    what, knob, seconds = "an answer", "HF_HUB_ETAG_TIMEOUT", None
    if request is not None:
        path, query = unquote(request.url.path), request.url.query
        query = query.decode() if isinstance(query, bytes) else query
        # a redirect to the CDN names the file only in the Content-Disposition it asks for
        disposition = " ".join(parse_qs(query).get("response-content-disposition", []))
        file = (path.split("/resolve/", 1)[1].partition("/")[2] if "/resolve/" in path
                else disposition.split('filename="', 1)[1].split('"', 1)[0] if 'filename="' in disposition else None)
        if file and request.method == "GET":
            what, knob = file, "HF_HUB_DOWNLOAD_TIMEOUT"
        else:  # HEAD: the hub retries it with its own 60 s, not the knob's
            what = f"the size and hash of {file}" if file else f"its answer to {request.method} {path}"
        seconds = request.extensions.get("timeout", {}).get("read")
    setting = getattr(constants, knob)
    waited = f"{knob}={setting:g} s" if seconds in (None, setting) else f"{seconds:g} s"
    return f"the Hugging Face hub at {constants.ENDPOINT} stopped sending {what} ({type(seen).__name__}: nothing for {waited})"


def _check_tokenizer(model_dir: Path, need_tokenizer: bool) -> Path:
    if need_tokenizer and not model_file(model_dir / "tokenizer.json"):
        raise UserError(f"no tokenizer.json in {model_dir}: text prompts need the model's tokenizer")
    return model_dir


def _lacks(snapshot: Path) -> str | None:
    """The first of config.json and the weight files a snapshot lacks, or a broken link to it
    (the cache keeps whatever was fetched); None when all are there."""
    if not (snapshot / "config.json").is_file():
        return "config.json"
    if (snapshot / "model.safetensors").is_file():
        return None
    index = snapshot / "model.safetensors.index.json"
    if not index.is_file():  # a broken link to it is a sharded download cut short, not a missing model.safetensors
        return index.name if index.is_symlink() else "model.safetensors"
    try:
        shards = sorted(set(_indexed_files(snapshot).values()))
    except UserError:  # an index that is none: no file is missing, and weight_files names what is wrong with it
        return None  # (was "lacks model.safetensors" offline, and a download of what the cache holds online)
    return next((f.name for f in shards if not f.is_file()), None)


def _cached_snapshots(name: str) -> list[Path]:
    """The snapshot folders of hub id `name` in huggingface-hub's cache that hold the whole model
    (config.json and weights), newest first: where the cache has no main revision (refs/main) to
    look up, what the user has instead."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name
    snapshots = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=name, repo_type="model") / "snapshots"
    try:  # a cache shared between users may not let this one list it: then there is nothing to name
        whole = [s for s in snapshots.iterdir() if s.is_dir() and _lacks(s) is None] if snapshots.is_dir() else []
        return sorted(whole, key=lambda s: s.stat().st_mtime, reverse=True)
    except OSError:
        return []


def _cached_spelling(name: str) -> str | None:
    """The hub id, spelt otherwise than `name` in letter case only, of a repository with a whole
    snapshot in huggingface-hub's cache (its folders keep the id as a download spelt it), or None."""
    from huggingface_hub import constants
    want = "models--" + name.replace("/", "--")
    try:  # a hub id has no "--" (validate_repo_id), so the folder name gives the id back
        spellings = [d.name[len("models--"):].replace("--", "/") for d in Path(constants.HF_HUB_CACHE).iterdir()
                     if d.name != want and d.name.lower() == want.lower()]
    except OSError:  # no cache yet, or one this user cannot list
        return None
    return next((s for s in sorted(spellings) if _cached_snapshots(s)), None)


def _hub_lacks(error: BaseException) -> str:
    """The files huggingface-hub's IncompleteSnapshotError lists as missing from a snapshot."""
    import re
    found = re.search(r"are missing \((.*?)\)\. ", str(error))
    return found.group(1) if found else "files its download listed"


def model_config(name_or_path: str | Path, need_tokenizer: bool = False) -> Qwen3Config:
    """The config.json of a model directory or hub id, without its weights: what a check that
    must come before the (minutes-long at 4B) weight load needs."""
    return Qwen3Config.from_dir(resolve_model_dir(name_or_path, need_tokenizer))


def weight_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> file, from model.safetensors or else the sharded index. model.safetensors
    first, as transformers does: save_pretrained over a sharded save leaves the old index."""
    index = model_dir / "model.safetensors.index.json"
    single = model_dir / "model.safetensors"
    if not model_file(single) and model_file(index):  # a broken link to an unused index is no matter
        files = _indexed_files(model_dir)
        for f in sorted(set(files.values())):
            if not model_file(f):
                raise UserError(f"shard {f.name} listed in {index.name} is missing from {model_dir}")
        return files
    if not model_file(single):
        raise UserError(f"no model.safetensors or model.safetensors.index.json in {model_dir}")
    with _open_safetensors(single) as f:
        return {name: single for name in f.keys()}


def _indexed_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> shard file, as model.safetensors.index.json lists them (the files may be missing)."""
    index = model_dir / "model.safetensors.index.json"
    text = read_text(index, "weight index")  # a UserError (a ValueError too) of its own
    try:
        weight_map = json.loads(text)["weight_map"]
        files = {str(name): model_dir / f for name, f in weight_map.items()}
    except (ValueError, KeyError, TypeError, AttributeError):  # ValueError: JSONDecodeError or a huge integer
        raise UserError(f"{index} is not a safetensors index (needs a \"weight_map\" of tensor -> file)") from None
    # "../other/model.safetensors" or an absolute path: another folder's weights, loaded without a word
    outside = sorted(f for f in set(weight_map.values()) if Path(f).is_absolute() or ".." in Path(f).parts)
    if outside:
        raise UserError(f"{index} names the shard {outside[0]}, outside {model_dir}: an index lists files of its "
                        "own folder (a hand-edited index, or another model's?)")
    return files


def _open_safetensors(path: Path):
    """safe_open, with a corrupt, empty or truncated file as one UserError line."""
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        f"{_refetch(path)}") from None


def _refetch(path: Path) -> str:
    """What to do about a damaged weight file. huggingface-hub keeps a file its cache holds (it
    checks the name, not the bytes): a blob cut short by a copy of the cache to another machine
    stayed as it was after the plain `hf download` that "re-download" led users to."""
    parts = path.parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if 0 < i < len(parts) - 2 and parts[i - 1].startswith("models--"):
            repo = parts[i - 1][len("models--"):].replace("--", "/")
            return (f"fetch it again with `hf download {repo} {'/'.join(parts[i + 2:])} --revision {parts[i + 1]} "
                    "--force-download` (a plain `hf download` keeps the cached copy)")
    return "re-download or re-save the model"


def _targets(model: Qwen3Model) -> dict[str, tuple[torch.Tensor, int]]:
    """HF tensor name -> (our parameter, first row), fusing q/k/v and gate/up row-wise."""
    cfg = model.cfg
    t: dict[str, tuple[torch.Tensor, int]] = {"model.embed_tokens.weight": (model.embed_tokens.weight, 0),
                                               "model.norm.weight": (model.norm.weight, 0)}
    if not cfg.tie_word_embeddings:
        t["lm_head.weight"] = (model.lm_head.weight, 0)
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = (layer.input_layernorm.weight, 0)
        t[p + "post_attention_layernorm.weight"] = (layer.post_attention_layernorm.weight, 0)
        t[p + "self_attn.q_proj.weight"] = (layer.qkv_proj.weight, 0)
        t[p + "self_attn.k_proj.weight"] = (layer.qkv_proj.weight, cfg.q_size)
        t[p + "self_attn.v_proj.weight"] = (layer.qkv_proj.weight, cfg.q_size + cfg.kv_size)
        t[p + "self_attn.o_proj.weight"] = (layer.o_proj.weight, 0)
        t[p + "self_attn.q_norm.weight"] = (layer.q_norm.weight, 0)
        t[p + "self_attn.k_norm.weight"] = (layer.k_norm.weight, 0)
        t[p + "mlp.gate_proj.weight"] = (layer.gate_up_proj.weight, 0)
        t[p + "mlp.up_proj.weight"] = (layer.gate_up_proj.weight, cfg.intermediate_size)
        t[p + "mlp.down_proj.weight"] = (layer.down_proj.weight, 0)
    return t


def _expected_shape(name: str, cfg: Qwen3Config, param: torch.Tensor) -> tuple[int, ...]:
    rows = {"q_proj": cfg.q_size, "k_proj": cfg.kv_size, "v_proj": cfg.kv_size,
            "gate_proj": cfg.intermediate_size, "up_proj": cfg.intermediate_size}
    key = name.split(".")[-2]
    if key in rows:
        return (rows[key], param.shape[1])
    return tuple(param.shape)


def empty_model(cfg: Qwen3Config, dtype: torch.dtype, device: torch.device | str,
                max_positions: int | None = None) -> Qwen3Model:
    """A model whose parameters are allocated (uninitialised) directly in dtype on device."""
    with torch.device("meta"):
        model = Qwen3Model(cfg, max_positions).to(dtype)  # free on meta: nothing is allocated yet
    model.to_empty(device=device)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.rotary = Rotary(cfg.head_dim, cfg.rope_theta, max_positions or cfg.max_position_embeddings).to(device)
    return model.requires_grad_(False).eval()


def read_weights(model_dir: str | Path) -> tuple[Qwen3Config, int]:
    """Every check load_model makes before it allocates (the files, their tensor names, shapes and
    dtypes, from the headers alone), returning the config and the elements of every tensor it
    reads (a tied lm_head once): what a command line checks before it makes its output folder or
    reads a checkpoint, and what the memory check counts the weights from, read once."""
    cfg, _, numel = _plan(Path(model_dir))
    return cfg, numel


def _plan(model_dir: Path) -> tuple[Qwen3Config, dict[Path, dict[str, str]], int]:
    """The config, per weight file the tensors to read (our name -> the file's), and their
    elements in all, every header checked."""
    cfg = Qwen3Config.from_dir(model_dir)
    stored = weight_files(model_dir)
    names = _prefixed(stored)
    files = {name: stored[names[name]] for name in names}
    held = len({n.split(".")[2] for n in files if n.startswith("model.layers.")})
    # fewer: before the meta model (10**6 layers took minutes to build as modules); more: a config.json of
    # a smaller model beside the weights was "unexpected tensor model.layers.N... (is this a Qwen3 checkpoint?)"
    if cfg.num_hidden_layers != held:
        raise UserError(f"{model_dir}: config.json has num_hidden_layers {cfg.num_hidden_layers}, its weights "
                        f"hold {held} layers")
    # the files are checked against the parameters' shapes on meta, before anything is allocated:
    # a config.json that disagrees with them (a vocab_size of 10**11) is then one line, not an OOM
    with torch.device("meta"):
        shapes = _targets(Qwen3Model(cfg))
    skip = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    unexpected = sorted(n for n in files if n not in shapes and n not in skip and not n.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise UserError(f"{model_dir}: unexpected tensor {names[unexpected[0]]} (is this a Qwen3 checkpoint?)")
    missing = sorted(n for n in shapes if n not in files)
    if missing == ["lm_head.weight"]:  # transformers would run it with a random output layer
        raise UserError(f"{model_dir}: missing tensor lm_head.weight, which config.json asks for (tie_word_embeddings "
                        "false or absent): set it to true if the output layer is the embedding (Qwen3 up to 4B), "
                        "else download the model again")
    if missing:
        raise UserError(f"{model_dir}: missing tensor {missing[0]}")
    by_file: dict[Path, dict[str, str]] = {}
    for name in shapes:
        by_file.setdefault(files[name], {})[name] = names[name]
    numel = _check_headers(model_dir, by_file, shapes, cfg)
    if cfg.tie_word_embeddings and "lm_head.weight" in files:  # the embeddings' shape and dtype checked first
        _check_tied_head(model_dir, files, names)
    return cfg, by_file, numel


def _check_tied_head(model_dir: Path, files: dict[str, Path], names: dict[str, str]) -> None:
    """A tied config's lm_head.weight in the files must be a copy of the embeddings: one that
    differs was dropped here for the embeddings, while transformers 5 then unties and uses it (4
    drops it), so which output layer the model has is not settled by the files. Compared in
    blocks of rows, from the files' maps, before anything is allocated."""
    embed, lm = files["model.embed_tokens.weight"], files["lm_head.weight"]
    with _open_safetensors(embed) as fe, _open_safetensors(lm) as fh:
        if names["lm_head.weight"] not in fh.keys():  # else a SafetensorError traceback (_check_headers skips it)
            raise _misplaced(model_dir, names["lm_head.weight"], lm)
        try:
            emb, head = fe.get_slice(names["model.embed_tokens.weight"]), fh.get_slice(names["lm_head.weight"])
            shape = emb.get_shape()
            same = list(head.get_shape()) == list(shape)
            step = max(1, (1 << 24) // max(1, math.prod(shape[1:])))  # 16 Mi elements a block
            for r in range(0, shape[0] if same else 0, step):
                a, b = emb[r:r + step], head[r:r + step]
                if a.dtype != b.dtype:
                    a, b = a.double(), b.double()
                if not torch.equal(a, b):
                    same = False
                    break
        except (SafetensorError, OSError) as e:
            raise _unreadable(lm, names["lm_head.weight"], e) from None
    if not same:
        raise UserError(f"{model_dir}: config.json ties the output layer to the embeddings (tie_word_embeddings true), "
                        "yet the weights hold an lm_head.weight that differs from model.embed_tokens.weight: set "
                        "tie_word_embeddings false to use it as the output layer (what transformers 5 runs), or "
                        "remove it from the weights")


def load_model(model_dir: str | Path, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu") -> Qwen3Model:
    model_dir = Path(model_dir)
    cfg, by_file, _ = _plan(model_dir)
    model = empty_model(cfg, dtype, device)
    targets = _targets(model)
    with torch.no_grad():
        for path, names in by_file.items():
            with _open_safetensors(path) as f:
                for name, stored in names.items():
                    param, row = targets[name]
                    try:
                        tensor = f.get_tensor(stored)
                    except (SafetensorError, OSError) as e:
                        raise _unreadable(path, stored, e) from None
                    dst = param.narrow(0, row, tensor.shape[0]) if param.dim() > 0 else param
                    dst.copy_(tensor)
    return model


def _misplaced(model_dir: Path, stored: str, path: Path) -> UserError:
    return UserError(f"{model_dir / 'model.safetensors.index.json'} places tensor {stored} in {path.name}, "
                     "which does not hold it: download the model again")


def _unreadable(path: Path, name: str, e: Exception) -> UserError:
    return UserError(f"{path}: cannot read tensor {name} ({type(e).__name__}); {_refetch(path)}")


def _prefixed(files: dict[str, Path]) -> dict[str, str]:
    """Tensor name as transformers' Qwen3ForCausalLM has it -> the name in the files. The official
    Qwen3-Embedding checkpoints (and Qwen3Model.save_pretrained) store the decoder without the
    "model." prefix, which transformers adds as it loads them: minitflow said "its weights hold
    0 layers"."""
    flat = not any(n.startswith("model.") for n in files) and any(n.startswith("layers.") for n in files)
    return {("model." + n if flat and not n.startswith("lm_head.") else n): n for n in files}


def _check_headers(model_dir: Path, by_file: dict[Path, dict[str, str]], targets: dict, cfg: Qwen3Config) -> int:
    """Every tensor's shape and dtype from the file headers, before any tensor is read: a wrong
    one in the last shard must not cost loading all the others first (minutes at 4B). Returns
    their elements in all."""
    numel = 0
    for path, names in by_file.items():
        with _open_safetensors(path) as f:
            held = set(f.keys())
            for name, stored in names.items():
                if stored not in held:  # else "cannot read tensor ... (SafetensorError)"
                    raise _misplaced(model_dir, stored, path)
                try:
                    sl = f.get_slice(stored)
                    shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
                except (SafetensorError, OSError) as e:
                    raise _unreadable(path, stored, e) from None
                want = _expected_shape(name, cfg, targets[name][0])
                if shape != want:
                    raise UserError(f"{model_dir}: tensor {stored} has shape {shape}, expected {want}")
                if not (dtype.startswith("F") or dtype == "BF16"):  # F16, F32, F64, F8_*; not I*, U*, BOOL
                    raise UserError(f"{path}: tensor {stored} is {dtype}, expected floating point weights")
                numel += math.prod(shape)
    return numel
