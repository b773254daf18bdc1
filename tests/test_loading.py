"""Model folders and Hugging Face caches as users have them, broken the ways downloads break:
each is one `error:` line (exit 2) that names the file and what to do, before the weights load."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from minitflow import demo_dir, generate
from minitflow.errors import UserError
from helpers import fails, gen_args, model_copy, no_model_load

DEMO = demo_dir()
REV = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo: str, files: dict[str, bytes | None]) -> Path:
    """huggingface-hub's cache layout for `repo`: blobs/<sha256>, refs/main, and
    snapshots/<rev>/<name> a relative link to its blob; None: a blob the download never finished
    (only `<sha256>.incomplete` is there, the link dangles). Returns the snapshot folder."""
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "blobs").mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(REV)
    snap = base / "snapshots" / REV
    snap.mkdir(parents=True)
    for name, data in files.items():
        blob = hashlib.sha256(name.encode() if data is None else data).hexdigest()
        if data is None:
            (base / "blobs" / f"{blob}.incomplete").write_bytes(b"cut short")
        else:
            (base / "blobs" / blob).write_bytes(data)
        (snap / name).symlink_to(Path("../../blobs") / blob)
    return snap


def demo_files() -> dict[str, bytes | None]:
    return {f.name: f.read_bytes() for f in DEMO.iterdir()
            if f.name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                          "model.safetensors")}


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


@pytest.mark.parametrize("name", ["generation_config.json", "tokenizer_config.json", "tokenizer.json", "config.json",
                                  "model.safetensors"])
def test_a_broken_link_in_a_model_folder_is_named(name, tmp_path, capsys, monkeypatch):
    """A snapshot's files are links to blobs; a cleaned cache or a download cut short leaves one
    dangling. A dangling generation_config.json or tokenizer_config.json was read as absent: the
    run went ahead with top_k 50 and no eos ids of the file's, without a word. A dangling
    config.json, tokenizer.json or model.safetensors was "no ... in <folder>"."""
    no_model_load(monkeypatch)
    snap = hub_cache(tmp_path, "org/model", {**demo_files(), name: None})
    fails(capsys, generate.main, gen_args("--model", snap), f"{snap / name} is a broken link", "download the model again")


def test_a_hub_id_only_partly_cached_names_what_the_snapshot_lacks(offline_cache, capsys, monkeypatch):
    """Offline, a snapshot whose model.safetensors or a shard was never finished was "org/model
    is not in the Hugging Face cache": the user sees the folder there and looks elsewhere."""
    no_model_load(monkeypatch)
    hub_cache(offline_cache, "org/model", {**demo_files(), "model.safetensors": None})
    fails(capsys, generate.main, gen_args("--model", "org/model"), "org/model is only partly in the Hugging Face cache",
          "lacks model.safetensors (a broken link", "hf download org/model")


def sharded_demo_files() -> dict[str, bytes | None]:
    """demo_files with the weights in two shards and model.safetensors.index.json, as a sharded hub repo."""
    from safetensors.torch import load_file, save
    files = {k: v for k, v in demo_files().items() if k != "model.safetensors"}
    tensors = load_file(DEMO / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, held in shards.items():
        files[shard] = save({k: tensors[k] for k in held}, metadata={"format": "pt"})
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {}, "weight_map": {k: shard for shard, held in shards.items() for k in held}}).encode()
    return files


@pytest.mark.parametrize("offline", ["1", ""])
def test_a_cached_snapshot_with_an_unreadable_index_names_the_index(offline, offline_cache, capsys, monkeypatch):
    """A sharded snapshot whose model.safetensors.index.json is no index (cut short, hand-edited)
    was "only partly in the Hugging Face cache: ... lacks model.safetensors" offline (it never had
    one), and online the hub was asked for the files the cache holds. Every file is there: the
    error is the index's own, and nothing goes online."""
    import huggingface_hub
    def no_hub(*a, local_files_only=False, **k):
        raise AssertionError("went online for a snapshot whose files are all cached")
    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, local_files_only=False, **k: (real if local_files_only else no_hub)(
                            *a, local_files_only=local_files_only, **k))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    no_model_load(monkeypatch)
    files = sharded_demo_files()
    cut = files["model.safetensors.index.json"][:40]
    hub_cache(offline_cache, "org/model", {**files, "model.safetensors.index.json": cut})
    fails(capsys, generate.main, gen_args("--model", "org/model"),
          "model.safetensors.index.json is not a safetensors index (needs a \"weight_map\"")


def test_a_broken_link_to_the_index_is_named_not_model_safetensors(offline_cache, capsys, monkeypatch):
    """A sharded snapshot whose index download was cut short was said to lack model.safetensors,
    which a sharded repo never has."""
    no_model_load(monkeypatch)
    hub_cache(offline_cache, "org/model", {**sharded_demo_files(), "model.safetensors.index.json": None})
    fails(capsys, generate.main, gen_args("--model", "org/model"), "only partly in the Hugging Face cache",
          "lacks model.safetensors.index.json (a broken link")


def test_a_sharded_cached_snapshot_loads(offline_cache):
    """The sharded layout above is one that loads: the refusals are the index's, not the layout's."""
    import torch
    from minitflow import LLM
    hub_cache(offline_cache, "org/model", sharded_demo_files())
    sharded, single = LLM.load("org/model", dtype="float32", device="cpu"), LLM.load(DEMO, dtype="float32", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(sharded.model.state_dict().values(), single.model.state_dict().values()))


def test_a_complete_cached_snapshot_loads(offline_cache, capsys):
    """The layout hub_cache builds is one huggingface-hub resolves: the refusals above are not an
    artefact of it."""
    hub_cache(offline_cache, "org/model", demo_files())
    from minitflow.errors import run_cli
    assert run_cli(generate.main, gen_args("--model", "org/model")) == 0, capsys.readouterr().err


@pytest.mark.parametrize("up", [1, 2])
def test_a_hub_cache_folder_passed_as_the_model_says_what_to_pass(up, tmp_path, capsys, monkeypatch):
    """--model ~/.cache/huggingface/hub/models--Org--Name (the repo's cache folder, not a model
    folder) or its snapshots/ was "no tokenizer.json in ...": the user then looked for a missing
    tokenizer."""
    no_model_load(monkeypatch)
    snap = hub_cache(tmp_path, "Org/Name", demo_files())
    fails(capsys, generate.main, gen_args("--model", snap.parents[up - 1]), "is a Hugging Face cache folder",
          "pass the hub id Org/Name or one of its snapshots/<revision> folders")


def test_an_index_placing_a_tensor_in_the_wrong_shard_is_named(tmp_path, capsys, monkeypatch):
    """model.safetensors.index.json naming a shard that does not hold the tensor was "cannot read
    tensor ... (SafetensorError)", which named neither the index nor the shard's contents."""
    from safetensors.torch import load_file, save_file
    no_model_load(monkeypatch)
    d = model_copy(tmp_path)
    tensors = load_file(DEMO / "model.safetensors")
    names = sorted(tensors)
    shards = {"a.safetensors": names[:len(names) // 2], "b.safetensors": names[len(names) // 2:]}
    for shard, held in shards.items():
        save_file({k: tensors[k] for k in held}, d / shard, metadata={"format": "pt"})
    weight_map = {k: shard for shard, held in shards.items() for k in held}
    weight_map[names[0]] = "b.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    fails(capsys, generate.main, gen_args("--model", d),
          f"model.safetensors.index.json places tensor {names[0]} in b.safetensors, which does not hold it")
    weight_map[names[0]] = "a.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    from minitflow.model.weights import read_weights
    assert read_weights(d)[0].num_hidden_layers == 4  # the shards are sound: the index was the fault


@pytest.mark.parametrize("offline", ["1", ""])
def test_a_hub_id_with_a_revision_is_refused_as_no_hub_id(offline, capsys, monkeypatch):
    """`--model Org/Name@rev` (no --revision exists) was "Org/Name@rev is not in the Hugging Face
    cache" offline, and a download attempt online that failed as HFValidationError."""
    import huggingface_hub
    def no_hub(*a, **k):
        raise AssertionError("the hub was asked for a name that is no hub id")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--model", "Org/Name@main"),
          "Org/Name@main is neither a folder here nor a hub id", "no @revision: pass the snapshot folder")


def test_a_missing_folder_that_looks_like_a_hub_id_says_so(offline_cache, capsys, monkeypatch):
    """A mistyped relative path with one slash is taken for a hub id: the error said only that the
    hub id is not cached, as if the folder had never been meant."""
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--model", "models/Qwen3-4B"),
          "models/Qwen3-4B is not in the Hugging Face cache (nor a folder here)")


@pytest.mark.parametrize("offline", ["1", "0"])
def test_a_hub_id_cached_in_other_letter_case_names_that_spelling(offline, offline_cache, capsys, monkeypatch):
    """The hub reads Org/Name in any letter case, its cache folders keep the spelling of the
    download: offline, `qwen/qwen3-4b` with Qwen/Qwen3-4B cached was "not in the Hugging Face
    cache"; online it downloaded the same weights again into a second folder (8 GB at 4B)."""
    import huggingface_hub
    no_model_load(monkeypatch)
    snap = hub_cache(offline_cache, "Org/Name", demo_files())
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    def no_download(*a, **k):
        if not k.get("local_files_only"):
            raise AssertionError("downloaded a repository the cache holds in other letter case")
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    fails(capsys, generate.main, gen_args("--model", "org/NAME"),
          "org/NAME is not in the Hugging Face cache, but Org/Name is: the same hub repository", "pass Org/Name")
    monkeypatch.undo()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(offline_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from minitflow.model.weights import resolve_model_dir
    assert resolve_model_dir("Org/Name") == snap  # the spelling it names loads


@pytest.mark.parametrize("refs", ["none", "another commit", "none, no network"])
def test_a_hub_id_cached_only_at_another_revision_names_its_snapshot(refs, offline_cache, capsys, monkeypatch):
    """`hf download Org/Name --revision <commit>` (the pinned revision the README has users pass
    as its snapshot folder) writes no refs/main; removing a snapshot folder by hand leaves
    refs/main naming a commit with none. Offline, `--model Org/Name` was "Org/Name is not in the
    Hugging Face cache", with the whole model in it: the error names the snapshot there, and that
    folder loads. Online with no network, the hub's silence names it too."""
    no_model_load(monkeypatch)
    snap = hub_cache(offline_cache, "Org/Name", demo_files())
    main = snap.parents[1] / "refs" / "main"
    if refs == "another commit":
        main.write_text("f" * 40)
    else:
        main.unlink()
    words = [f"Org/Name is in the Hugging Face cache only at another revision than main ({snap})",
             "pass that snapshot folder as the model"]
    if refs == "none, no network":
        import huggingface_hub
        def no_network(*a, **k):
            raise ConnectionError("[Errno -3] Temporary failure in name resolution")
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        words = ["did not answer (ConnectionError", f"or pass a local directory such as {snap}, a whole snapshot of another "
                 "revision"]
    fails(capsys, generate.main, gen_args("--model", "Org/Name"), *words)
    from minitflow.model.weights import read_weights
    assert read_weights(snap)[0].num_hidden_layers == 4


def test_a_cache_folder_this_user_cannot_list_is_no_traceback(offline_cache, capsys, monkeypatch):
    """The look for another revision's snapshot lists snapshots/, which a cache shared between users
    may not let this one do: that is "not in the Hugging Face cache", not a PermissionError traceback.
    (Root lists any folder, so iterdir is made to refuse it as the OS would.)"""
    no_model_load(monkeypatch)
    snap = hub_cache(offline_cache, "Org/Name", demo_files())
    (snap.parents[1] / "refs" / "main").unlink()
    real = Path.iterdir
    def denied(self):
        if self.name == "snapshots":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(Path, "iterdir", denied)
    fails(capsys, generate.main, gen_args("--model", "Org/Name"), "Org/Name is not in the Hugging Face cache")


def test_a_hub_id_whose_main_is_partly_cached_names_the_whole_older_snapshot(offline_cache, capsys, monkeypatch):
    """Main moved on upstream and AutoConfig, online, fetched only its config.json: refs/main names
    the new commit. Offline, the error said only that the model is partly cached; the older
    snapshot, whole, is named too."""
    import os
    no_model_load(monkeypatch)
    old = hub_cache(offline_cache, "Org/Name", demo_files())
    new = old.parent / ("f" * 40)
    new.mkdir()
    (new / "config.json").symlink_to(os.readlink(old / "config.json"))
    (old.parents[1] / "refs" / "main").write_text(new.name)
    fails(capsys, generate.main, gen_args("--model", "Org/Name"), f"{new} lacks model.safetensors",
          f"or pass a local directory such as {old}, a whole snapshot of another revision")


@pytest.mark.parametrize("command", ["generate", "model_config"])
def test_a_folder_named_like_the_hub_id_says_it_hides_the_hub_id(command, offline_cache, tmp_path, capsys, monkeypatch):
    """A folder here comes before a hub id of the same name: an empty clone or a stray mkdir of
    ./Org/Name was "no tokenizer.json in Org/Name" (or "no config.json"), and the user looked in
    the hub's repo for the file. Now it says the folder was read instead of the hub id, which is
    cached here and would load."""
    from minitflow.model.weights import model_config
    hub_cache(offline_cache, "Org/Name", demo_files())
    (tmp_path / "here" / "Org" / "Name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "here")
    no_model_load(monkeypatch)
    words = ("Org/Name is a folder here without config.json, so not a model folder, and a folder comes before the hub "
             "id Org/Name: pass the model's folder, or rename ./Org/Name to use the hub id")
    if command == "generate":
        fails(capsys, generate.main, gen_args("--model", "Org/Name"), words)
    else:
        with pytest.raises(UserError, match=re.escape(words)):
            model_config("Org/Name")
    monkeypatch.chdir(tmp_path)
    assert model_config("Org/Name").num_hidden_layers > 0  # the hub id itself is there


@pytest.mark.parametrize("shards", [1, 3])
def test_weights_stored_without_the_model_prefix_load_as_transformers_loads_them(shards, tmp_path):
    """The official Qwen3-Embedding checkpoints (0.6B, 4B, 8B), and Qwen3Model.save_pretrained, store
    the decoder as embed_tokens.weight, layers.N..., norm.weight: transformers loads them into
    Qwen3ForCausalLM with the "model." prefix added. minitflow refused them as "config.json has
    num_hidden_layers 2, its weights hold 0 layers". Now the logits equal transformers'."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Qwen3ForCausalLM
    from conftest import make_tiny_qwen3
    from minitflow.model.weights import load_model
    make_tiny_qwen3(tmp_path)  # tied, as Qwen3-Embedding-0.6B and -4B
    tensors = {k.removeprefix("model."): v for k, v in load_file(tmp_path / "model.safetensors").items()}
    assert not any(k.startswith("model.") for k in tensors) and "lm_head.weight" not in tensors
    (tmp_path / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {k: f"model-{i % shards + 1:05d}-of-{shards:05d}.safetensors" for i, k in enumerate(names)}
    for shard in set(weight_map.values()):
        save_file({k: tensors[k] for k in names if weight_map[k] == shard}, tmp_path / shard, metadata={"format": "pt"})
    if shards > 1:
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        (tmp_path / weight_map[names[0]]).rename(tmp_path / "model.safetensors")
    hf = Qwen3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    model = load_model(tmp_path, torch.float32, "cpu")
    ids = torch.randint(0, 150, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids, torch.arange(9).expand(2, 9), None, 9), hf(ids).logits)


@pytest.mark.parametrize("tie", [True, False])
def test_a_sharded_bfloat16_save_loads_as_transformers_loads_it(tie, tmp_path):
    """What transformers 5 writes for Qwen3-4B's kind of checkpoint: bfloat16 shards, an index, a
    config.json with rope_parameters and dtype (no torch_dtype), no lm_head.weight when tied.
    Loaded in float32 and in bfloat16, the logits equal transformers' on the same files."""
    import torch
    from transformers import Qwen3ForCausalLM
    from conftest import make_tiny_qwen3
    from minitflow.model.weights import load_model
    make_tiny_qwen3(tmp_path / "f32", tie=tie).to(torch.bfloat16).save_pretrained(tmp_path / "bf16", max_shard_size="20KB")
    d = tmp_path / "bf16"
    cfg, index = json.loads((d / "config.json").read_text()), json.loads((d / "model.safetensors.index.json").read_text())
    assert {"rope_parameters", "dtype"} <= set(cfg) and "torch_dtype" not in cfg and cfg["dtype"] == "bfloat16"
    assert len(set(index["weight_map"].values())) > 2
    assert ("lm_head.weight" in index["weight_map"]) != tie
    ids = torch.randint(0, 150, (2, 9), generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.bfloat16):
        hf = Qwen3ForCausalLM.from_pretrained(d, dtype=dtype).eval()
        with torch.no_grad():
            ours = load_model(d, dtype, "cpu")(ids, torch.arange(9).expand(2, 9), None, 9)
            assert torch.equal(ours, hf(ids).logits), dtype


def test_an_untied_config_without_lm_head_says_which_setting(tmp_path, capsys, monkeypatch):
    """A config.json re-saved without tie_word_embeddings (its default is false) beside tied
    weights was "missing tensor lm_head.weight", with no word of the setting that asks for it."""
    no_model_load(monkeypatch)
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")  # tied: no lm_head.weight
    cfg = json.loads((d / "config.json").read_text())
    del cfg["tie_word_embeddings"]
    (d / "config.json").write_text(json.dumps(cfg))
    fails(capsys, generate.main, gen_args("--model", d), "missing tensor lm_head.weight",
          "tie_word_embeddings false or absent", "set it to true")


@pytest.mark.parametrize("name,what", [("generation_config.json", "generation config"),
                                       ("tokenizer_config.json", "tokenizer config"), ("tokenizer.json", "tokenizer")])
def test_an_unreadable_small_file_is_one_line(name, what, tmp_path, capsys, monkeypatch):
    """In a cache shared between users a blob may be unreadable to this one: generation_config.json
    and tokenizer_config.json were read with Path.read_text unguarded, a PermissionError traceback;
    tokenizer.json was "not a valid tokenizer file".
    (Root reads any file, so open() is made to refuse it as the OS would.)"""
    no_model_load(monkeypatch)
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")
    real_open = Path.open
    def denied(self, *a, **k):
        if self.name == name:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *a, **k)
    monkeypatch.setattr(Path, "open", denied)
    fails(capsys, generate.main, gen_args("--model", d), f"cannot read {what} {d / name}",
          "Permission denied")


def test_a_damaged_weight_file_under_a_snapshots_folder_not_the_hubs_says_re_download(tmp_path, capsys, monkeypatch):
    """A folder of the user's own that a "snapshots" folder holds is no hub cache snapshot: no
    `hf download` command is made up from its path."""
    no_model_load(monkeypatch)
    (tmp_path / "snapshots").mkdir()
    d = model_copy(tmp_path / "snapshots")
    (d / "model.safetensors").write_bytes(b"not safetensors")
    error = fails(capsys, generate.main, gen_args("--model", d), f"{d / 'model.safetensors'} is not a readable "
                  "safetensors file", "re-download or re-save the model")
    assert "hf download" not in error


@pytest.mark.parametrize("where", ["../other", "absolute"])
def test_an_index_naming_a_shard_outside_its_folder_is_refused(where, tmp_path, capsys, monkeypatch):
    """model.safetensors.index.json naming "../other/model.safetensors" (or an absolute path)
    loaded that folder's weights as this model's, without a word."""
    no_model_load(monkeypatch)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(DEMO / "model.safetensors", other / "model.safetensors")
    d = model_copy(tmp_path)
    from safetensors import safe_open
    with safe_open(str(DEMO / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
    shard = "../other/model.safetensors" if where == "../other" else str(other / "model.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: shard for k in names}}))
    fails(capsys, generate.main, gen_args("--model", d), f"names the shard {shard}, outside {d}")


def test_an_mlx_quantized_config_is_refused_as_quantized(tmp_path, capsys, monkeypatch):
    """mlx-community's quantized Qwen3 writes "quantization" (not "quantization_config"): its
    packed weights were refused as "unexpected tensor ....scales (is this a Qwen3 checkpoint?)"."""
    from safetensors.torch import load_file, save_file
    no_model_load(monkeypatch)
    d = model_copy(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "quantization": {"group_size": 64, "bits": 4}}))
    tensors = load_file(DEMO / "model.safetensors")
    tensors["model.embed_tokens.scales"] = tensors["model.embed_tokens.weight"][:, :2].contiguous()
    save_file(tensors, d / "model.safetensors", metadata={"format": "mlx"})
    fails(capsys, generate.main, gen_args("--model", d), "quantized checkpoints (mlx) are not supported")


def test_a_weight_file_passed_as_the_model_names_its_folder(capsys, monkeypatch):
    """--model .../model.safetensors (a file that exists) was "model directory not found"."""
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--model", DEMO / "model.safetensors"),
          f"{DEMO / 'model.safetensors'} is a file, not a model directory", f"({DEMO})")


def test_transformers_offline_counts_as_offline_for_a_partly_cached_model(offline_cache, capsys, monkeypatch):
    """huggingface-hub is offline under TRANSFORMERS_OFFLINE=1 when HF_HUB_OFFLINE is unset; we
    read HF_HUB_OFFLINE alone, so a partly cached model was tried online and refused there
    ("could not get ... (OfflineModeIsEnabled)"), without a word of what the cache lacks."""
    import huggingface_hub
    real = huggingface_hub.snapshot_download
    def cache_only(*a, local_files_only=False, **k):
        if not local_files_only:
            raise AssertionError("went online")
        return real(*a, local_files_only=True, **k)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", cache_only)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    no_model_load(monkeypatch)
    hub_cache(offline_cache, "org/model", {**demo_files(), "model.safetensors": None})
    fails(capsys, generate.main, gen_args("--model", "org/model"), "org/model is only partly in the Hugging Face cache",
          "TRANSFORMERS_OFFLINE is set")


def test_a_config_with_fewer_layers_than_the_weights_says_so(tmp_path, capsys, monkeypatch):
    """config.json of a smaller model (or a num_hidden_layers cut down by hand) beside the weights
    was "unexpected tensor model.layers.3... (is this a Qwen3 checkpoint?)"; it is one, with more
    layers than the config says."""
    no_model_load(monkeypatch)
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    fails(capsys, generate.main, gen_args("--model", d), "config.json has num_hidden_layers 3, its weights hold 4 layers")


def test_a_safetensors_generator_checkpoint_is_named_as_such(tmp_path, capsys, monkeypatch):
    """A generator saved with safetensors (tensors only, no flags or pg_arch) was "not a torch
    checkpoint: not a torch.save file, or cut short", sending the user to re-download it."""
    import torch
    from safetensors.torch import save_file
    no_model_load(monkeypatch)
    path = tmp_path / "tflow.safetensors"
    state = torch.load(DEMO / "tflow.pt", weights_only=True)
    save_file({f"parameter_generator.{k}": v.contiguous() for k, v in state["parameter_generator"].items()}, path)
    fails(capsys, generate.main, ["--method", "tflow", "--question", "Q?", "--device", "cpu", "--checkpoint", path],
          f"{path} is a safetensors file: a TFlow checkpoint is a torch.save dict")


def test_a_broken_link_to_an_unused_index_does_not_stop_model_safetensors(tmp_path):
    """model.safetensors wins over an index (a stale one from an earlier sharded save): a broken
    link to that index must not refuse a folder whose weights are all there."""
    from minitflow.model.weights import read_weights
    snap = hub_cache(tmp_path, "org/model", {**demo_files(), "model.safetensors.index.json": None})
    assert read_weights(snap)[0].num_hidden_layers == 4
