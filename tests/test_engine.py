"""The engine against transformers' Qwen3ForCausalLM on tiny random checkpoints (CPU, float32)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from conftest import GOLDEN, make_tiny_qwen3, need_shared
from minitflow import LLM, Capture, SamplingParams, UserError, build_lora
from minitflow.model.kv_cache import KVCache
from minitflow.model.weights import load_model
from helpers import _random_factors, seed_keys

CONFIGS = {
    "tied-gqa2": dict(tie=True, heads=4, kv_heads=2),
    "untied-mha": dict(tie=False, heads=4, kv_heads=4),
    "tied-gqa4-odd": dict(tie=True, hidden=48, heads=8, kv_heads=2, head_dim=8, intermediate=70, vocab=157, layers=3),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    hf = make_tiny_qwen3(d, **CONFIGS[request.param])
    return hf, load_model(d, torch.float32, "cpu"), d


def test_prefill_and_32_decode_steps_match_transformers(pair):
    hf, model, _ = pair
    torch.manual_seed(1)
    ids = torch.randint(0, hf.config.vocab_size - 2, (1, 11))
    cache = KVCache(model.cfg.num_hidden_layers, 1, 64, model.cfg.num_key_value_heads, model.cfg.head_dim,
                    torch.float32, "cpu")
    with torch.no_grad():
        ref = hf(ids, use_cache=True)
        ours = model(ids, torch.arange(11)[None], cache, 11)
        assert (ours - ref.logits).abs().max() <= 1e-4
        past, tok = ref.past_key_values, ref.logits[:, -1].argmax(-1, keepdim=True)
        for step in range(32):
            pos = 11 + step
            ref = hf(tok, past_key_values=past, use_cache=True)
            ours = model(tok, torch.tensor([[pos]]), cache, pos + 1)
            assert (ours - ref.logits).abs().max() <= 1e-4, f"decode step {step}"
            assert torch.equal(ours[:, -1].argmax(-1), ref.logits[:, -1].argmax(-1))
            past, tok = ref.past_key_values, ref.logits[:, -1].argmax(-1, keepdim=True)


def test_greedy_generate_matches_hf_generate(pair):
    hf, model, _ = pair
    llm = LLM(model, eos_token_ids=[])
    prompt = [3, 17, 42, 5, 9, 100, 7]
    ours = llm.generate([prompt], SamplingParams(max_new_tokens=32))[0]
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, eos_token_id=None,
                      pad_token_id=0)[0, len(prompt):].tolist()
    assert ours.token_ids == ref
    assert ours.prompt_tokens == 7 and ours.completion_tokens == 32 and ours.finish_reason == "length"


def test_capture_equals_output_hidden_states(pair):
    hf, model, _ = pair
    llm = LLM(model)
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22, 23, 24]]
    spans = [(2, 7), (1, 5)]
    L = model.cfg.num_hidden_layers
    cap = llm.capture_hidden(prompts, Capture(layers=list(range(L + 1)), starts=[s for s, _ in spans],
                                              ends=[e for _, e in spans]))
    for b, (p, (s, e)) in enumerate(zip(prompts, spans)):
        with torch.no_grad():
            ref = hf(torch.tensor([p]), output_hidden_states=True).hidden_states
        assert len(ref) == L + 1
        for layer in range(L + 1):
            assert torch.allclose(cap.hidden[b, layer, : e - s], ref[layer][0, s:e], atol=1e-5), (b, layer)
        assert cap.hidden[b, :, e - s:].abs().max() == 0 if e - s < cap.hidden.shape[2] else True
    assert cap.lengths == [5, 4]


def test_a_capture_of_all_layers_never_holds_them_twice(pair):
    """A capture of every layer wrote each layer's span into a list and stacked the list after
    the last layer: for a moment every layer was held twice, the peak of a capture of all L+1
    layers (training's senders). Now each span is written into its slot of one tensor as the
    layer runs: the only op that makes a tensor of the capture's size is its allocation, and
    each slot holds what a capture of that layer alone gives."""
    from torch.utils._python_dispatch import TorchDispatchMode
    _, model, _ = pair
    L, ids = model.cfg.num_hidden_layers, torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22, 23, 24, 25, 26, 27]])
    pos = torch.arange(8)[None].expand(2, -1)

    class Sizes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.made: list[tuple[str, int]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.made += [(func.__name__, t.numel()) for t in (out if isinstance(out, (list, tuple)) else [out])
                          if isinstance(t, torch.Tensor)]
            return out

    cap, sizes = Capture(list(range(L + 1)), [2, 1], [7, 5]), Sizes()
    with torch.no_grad(), sizes:
        model(ids, pos, None, 8, capture=cap, need_logits=False)
    assert cap.hidden.shape == (2, L + 1, 5, model.cfg.hidden_size)
    assert [name for name, n in sizes.made if n == cap.hidden.numel()] == ["new_empty.default"]
    with torch.no_grad():
        for layer in range(L + 1):
            alone = Capture([layer], [2, 1], [7, 5])
            model(ids, pos, None, 8, capture=alone, need_logits=False)
            assert torch.equal(cap.hidden[:, layer], alone.hidden[:, 0]), layer


def test_lora_equals_merged_weights_per_row_and_leaves_no_trace(pair):
    hf, model, _ = pair
    llm = LLM(model, eos_token_ids=[])
    cfg = model.cfg
    senders = [_random_factors(cfg, 2, 4, seed) for seed in (1, 2)]
    weights, scale = (0.5, 0.5), 2.0
    lora = build_lora(cfg, senders, [w * scale for w in weights])
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8, 9]]
    sp = SamplingParams(max_new_tokens=12)
    patched = llm.generate(prompts, sp, lora=lora)
    plain_before = llm.generate(prompts, sp)
    for b, p in enumerate(prompts):
        merged = copy.deepcopy(hf)
        with torch.no_grad():
            for (layer, proj), _ in senders[0].items():
                mod = merged.model.layers[layer].get_submodule(proj)
                for s, w in zip(senders, weights):
                    a, bb = s[(layer, proj)]
                    mod.weight += w * scale * (bb[b] @ a[b])
        ref = merged.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                              pad_token_id=0)[0, len(p):].tolist()
        assert patched[b].token_ids == ref, f"row {b}"
        # the logits themselves, for the prompt
        with torch.no_grad():
            ref_logits = merged(torch.tensor([p])).logits[0, -1]
            cache = KVCache(cfg.num_hidden_layers, 2, 16, cfg.num_key_value_heads, cfg.head_dim, torch.float32, "cpu")
            x = torch.zeros(2, 6, dtype=torch.long)
            for i, q in enumerate(prompts):
                x[i, : len(q)] = torch.tensor(q)
            ours = model(x, torch.arange(6)[None].expand(2, 6), cache, 6, lora=lora)[b, len(p) - 1]
        assert (ours - ref_logits).abs().max() <= 1e-4
    assert patched[0].token_ids != plain_before[0].token_ids or patched[1].token_ids != plain_before[1].token_ids
    plain_after = llm.generate(prompts, sp)
    assert [g.token_ids for g in plain_after] == [g.token_ids for g in plain_before]
    alone = [LLM(model, eos_token_ids=[]).generate([p], sp)[0].token_ids for p in prompts]
    assert alone == [g.token_ids for g in plain_after]


def test_fused_lora_blocks_equal_per_projection_factors():
    """q/k/v and gate/up share A, with one B block per projection; a projection only one sender
    adapts, or none, gets exactly its own (or no) update."""
    from minitflow.model.lora_linear import lora_linear_ref
    from minitflow.model.config import Qwen3Config
    cfg = Qwen3Config(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=4)
    full = _random_factors(cfg, 3, 2, seed=5)
    partial = {k: v for k, v in _random_factors(cfg, 3, 3, seed=6).items() if k[1] == "self_attn.k_proj"}
    del full[(0, "self_attn.v_proj")]  # v: adapted by nobody
    lora = build_lora(cfg, [full, partial], [0.5, 2.0])
    a, blocks = lora.layers[0]["qkv"]
    assert [b.shape[2] for b in blocks] == [2, 2 + 3, 0] and a.shape[1] == 7
    x = torch.randn(3, 4, cfg.hidden_size)
    w = torch.randn(cfg.q_size + 2 * cfg.kv_size, cfg.hidden_size)
    ref = []
    for proj, (s, e) in zip(("q_proj", "k_proj", "v_proj"),
                            ((0, cfg.q_size), (cfg.q_size, cfg.q_size + cfg.kv_size), (cfg.q_size + cfg.kv_size, None))):
        y = x @ w[s:e].T
        for factors, coef in ((full, 0.5), (partial, 2.0)):
            if (0, f"self_attn.{proj}") in factors:
                fa, fb = factors[(0, f"self_attn.{proj}")]
                y = y + coef * (x @ fa.transpose(1, 2) @ fb.transpose(1, 2))
        ref.append(y)
    assert torch.allclose(lora_linear_ref(x, w, lora.layers[0]["qkv"]), torch.cat(ref, -1), atol=1e-5)
    for senders, coefs in (([full], [0.5, 2.0]), ([], [])):
        with pytest.raises(UserError, match=rf"^build_lora: {len(senders)} senders but {len(coefs)} coefficients$"):
            build_lora(cfg, senders, coefs)
    a, b = partial[(0, "self_attn.k_proj")]
    for bad in ((a[:2], b), (a, b[:, :, :2]), (a[:, :, :5], b)):  # another batch than the first factors', a rank, an input
        with pytest.raises(UserError, match=r"^LoRA factors for layer 0 self_attn.k_proj: A .* do not fit "
                                            r"\(batch 3, in 16, out 8\)$"):
            build_lora(cfg, [full, {(0, "self_attn.k_proj"): bad}], [0.5, 2.0])


@pytest.mark.parametrize("path", ["kernel", "folded"])
def test_lora_that_leaves_out_whole_groups_runs_as_zero_factors_for_them(sharp_dir, monkeypatch, path):
    """Factors for some projections only (attention's q and o here, none at all in layer 1): the
    fused weights no sender adapts have no group in that layer (build_lora skips it), and the
    engine runs them plain, as factors of zeros for those projections would."""
    from minitflow.model import lora_linear
    from minitflow.model.lora import PROJECTIONS
    monkeypatch.setattr(lora_linear, "DECODE_LORA", path)
    model = load_model(sharp_dir, torch.float32, "cpu")  # its own: folding re-stores the weights
    full = _random_factors(model.cfg, 2, 4, 3)
    kept = {(0, "self_attn.q_proj"), (0, "self_attn.o_proj")}
    partial = {k: v for k, v in full.items() if k in kept}
    zeros = {k: v if k in kept else (v[0], torch.zeros_like(v[1])) for k, v in full.items()}
    lora = build_lora(model.cfg, [partial], [1.0])
    assert [sorted(layer) for layer in lora.layers] == [["o", "qkv"], []]
    assert [b.shape[2] for b in lora.layers[0]["qkv"][1]] == [4, 0, 0]
    assert len(zeros) == len(PROJECTIONS) * model.cfg.num_hidden_layers
    prompts, sp = [[1, 2, 3, 4, 5, 6], [7, 8, 9]], SamplingParams(max_new_tokens=10)
    llm = LLM(model, eos_token_ids=[], num_slots=2)
    got = [g.token_ids for g in llm.generate(prompts, sp, lora=lora)]
    assert got == [g.token_ids for g in llm.generate(prompts, sp, lora=build_lora(model.cfg, [zeros], [1.0]))]
    assert got != [g.token_ids for g in llm.generate(prompts, sp)]  # the factors kept do change the tokens


def test_batch_invariance_six_prompts(sharp_dir):
    llm = LLM.load(sharp_dir, dtype="float32", device="cpu")
    llm.eos_token_ids = set()
    torch.manual_seed(3)
    prompts = [torch.randint(0, 150, (n,)).tolist() for n in (3, 17, 8, 1, 25, 12)]
    sp = SamplingParams(max_new_tokens=16)
    batch = llm.generate(prompts, sp)
    for p, g in zip(prompts, batch):
        assert llm.generate([p], sp)[0].token_ids == g.token_ids
    # sampling with a per-request seed is batch invariant too
    sps = [SamplingParams(max_new_tokens=10, temperature=0.8, top_p=0.9, top_k=50, seed=i) for i in range(6)]
    batch = llm.generate(prompts, sps)
    for p, s, g in zip(prompts, sps, batch):
        assert llm.generate([p], s)[0].token_ids == g.token_ids


def test_stop_on_eos_and_stop_reason(tiny_dir):
    llm = LLM.load(tiny_dir, dtype="float32", device="cpu")
    prompt = [4, 8, 15, 16, 23, 42]
    free = LLM.load(tiny_dir, dtype="float32", device="cpu")
    free.eos_token_ids = set()
    toks = free.generate([prompt], SamplingParams(max_new_tokens=8))[0].token_ids
    llm.eos_token_ids = {toks[3]}
    g = llm.generate([prompt], SamplingParams(max_new_tokens=8))[0]
    first = toks.index(toks[3])
    assert g.token_ids == toks[: first + 1] and g.finish_reason == "stop"
    assert g.completion_tokens == first + 1 and g.prefill_s > 0 and g.decode_s >= 0


def test_rows_finishing_at_different_steps(tiny_dir):
    """EOS, per-row max_new_tokens and ignore_eos in one batch: each row as if it ran alone."""
    free = LLM.load(tiny_dir, dtype="float32", device="cpu")
    free.eos_token_ids = set()
    prompts = [[4, 8, 15, 16, 23, 42], [1, 2, 3], [9] * 11]
    runs = [free.generate([p], SamplingParams(max_new_tokens=12))[0].token_ids for p in prompts]
    llm = LLM.load(tiny_dir, dtype="float32", device="cpu")
    llm.eos_token_ids = {runs[0][2]}
    sps = [SamplingParams(max_new_tokens=12), SamplingParams(max_new_tokens=5),
           SamplingParams(max_new_tokens=12, ignore_eos=True)]
    batch = llm.generate(prompts, sps)
    for p, s, g in zip(prompts, sps, batch):
        alone = llm.generate([p], s)[0]
        assert (g.token_ids, g.finish_reason) == (alone.token_ids, alone.finish_reason)
    first = runs[0].index(runs[0][2])
    assert batch[0].token_ids == runs[0][: first + 1] and batch[0].finish_reason == "stop"
    assert len(batch[1].token_ids) <= 5 and batch[1].token_ids == runs[1][: len(batch[1].token_ids)]
    assert batch[2].token_ids == runs[2] and batch[2].finish_reason == "length"


def test_stop_strings_cut_text_and_tokens():
    from minitflow import demo_dir
    llm = LLM.load(demo_dir(), dtype="float32", device="cpu")
    prompt = llm.chat_ids([{"role": "user", "content": "Box 3 holds what?"}])
    full = llm.generate([prompt], SamplingParams(max_new_tokens=24, ignore_eos=True))[0]
    stop = full.text[len(full.text) // 2: len(full.text) // 2 + 2]
    assert stop.strip(), full.text
    cut = llm.generate([prompt, prompt], [SamplingParams(max_new_tokens=24, ignore_eos=True, stop=(stop,)),
                                          SamplingParams(max_new_tokens=24, ignore_eos=True)])
    assert cut[0].finish_reason == "stop" and cut[0].text == full.text[: full.text.index(stop)]
    n = len(cut[0].token_ids)
    assert cut[0].token_ids == full.token_ids[:n] and stop in llm.tokenizer.decode(full.token_ids[:n])
    assert stop not in llm.tokenizer.decode(full.token_ids[: n - 1])
    assert cut[1].token_ids == full.token_ids  # the other row runs on


def test_stop_strings_without_a_tokenizer_are_refused(tiny_dir):
    """An engine built on a bare model has no text to search: a stop string there is refused
    before anything runs, not ignored (the request ran to max_new_tokens)."""
    llm = LLM(load_model(tiny_dir, torch.float32, "cpu"), eos_token_ids=[])
    with pytest.raises(UserError, match="stop strings need a tokenizer"):
        llm.generate([[1, 2, 3]], SamplingParams(max_new_tokens=4, stop=("x",)))
    assert llm.generate([[1, 2, 3]], SamplingParams(max_new_tokens=4))[0].finish_reason == "length"


def test_ignore_eos_runs_past_an_eos_token(tiny_dir):
    """ignore_eos: a row whose output holds an EOS id runs on to max_new_tokens (finish
    "length"), while the same row without it stops there."""
    llm = LLM.load(tiny_dir, dtype="float32", device="cpu")
    llm.eos_token_ids = set()
    prompt = [4, 8, 15, 16, 23, 42]
    toks = llm.generate([prompt], SamplingParams(max_new_tokens=8))[0].token_ids
    llm.eos_token_ids = {toks[1]}
    first = toks.index(toks[1])
    free, stopped = llm.generate([prompt, prompt], [SamplingParams(max_new_tokens=8, ignore_eos=True),
                                                    SamplingParams(max_new_tokens=8)])
    assert (free.token_ids, free.finish_reason) == (toks, "length")
    assert (stopped.token_ids, stopped.finish_reason) == (toks[: first + 1], "stop")


def test_the_earliest_of_several_stop_strings_cuts_the_text():
    """Two stop strings completed by the same token: the text is cut before the one that
    starts first."""
    from minitflow import demo_dir
    llm = LLM.load(demo_dir(), dtype="float32", device="cpu")
    prompt = llm.chat_ids([{"role": "user", "content": "Box 3 holds what?"}])
    text = llm.generate([prompt], SamplingParams(max_new_tokens=24, ignore_eos=True))[0].text
    # a character first seen at j - 1 >= 2: it completes text[j - 3: j] and itself at once
    j = next(i + 1 for i in range(2, len(text)) if text[i] not in text[:i] and text[i - 2: i + 1].strip() == text[i - 2: i + 1])
    stop = (text[j - 1], text[j - 3: j])
    for order in (stop, stop[::-1]):
        got = llm.generate([prompt], SamplingParams(max_new_tokens=24, ignore_eos=True, stop=order))[0]
        assert got.finish_reason == "stop" and got.text == text[: j - 3], (order, got.text)


# ---- stop strings, incrementally: StopScan against whole decodes --------------------------

STOPS = ("</answer>", "\n\n", "中文", "é", "<think>")


def _tokenizer(name: str):
    from minitflow import demo_dir
    from minitflow.model.tokenizer import Tokenizer
    return Tokenizer(demo_dir() if name == "demo" else need_shared(GOLDEN / "model"))


def _token_pools(tok, stops=STOPS) -> list[list[int]]:
    """Ids a stream draws from: any; special (<|im_end|>, <think>); pieces of multi-byte UTF-8
    (one byte each, or merged); the prefixes and characters of the stop strings."""
    from tokenizers.pre_tokenizers import ByteLevel
    v = tok._tok.get_vocab(with_added_tokens=True)
    special = [i for t, i in v.items() if t.startswith("<|") or t in ("<think>", "</think>")]
    utf8 = tok.encode("中文 é😀 naïve ∑ 日本語 ĳ") + [v[c] for c in ByteLevel.alphabet() if c in v and ord(c) > 160]
    pieces = [i for s in stops for j in range(1, len(s) + 1) for i in tok.encode(s[:j])]
    pieces += [i for s in stops for ch in s for i in tok.encode(ch)]
    return [list(range(tok.vocab_size)), special, utf8, pieces]


def _stream(rng, pools, n: int) -> list[int]:
    return [rng.choice(pools[rng.choices(range(4), (4, 1, 3, 2))[0]]) for _ in range(n)]


def _scan_texts(decode, ids, stops=("\x00never\x00",)):
    from minitflow.engine.request import StopScan
    scan = StopScan()
    for k in range(1, len(ids) + 1):
        assert scan.find(decode, ids[:k], stops) is None
        yield k, scan


@pytest.mark.parametrize("name", ["demo", "qwen3"])
def test_incremental_text_equals_the_whole_decode_at_every_token(name):
    """Byte tokens, merged multi-byte tokens, special tokens, stop-string pieces: after each id
    the scan's text is decode(ids[:k]), U+FFFD of an incomplete character included."""
    import random
    tok = _tokenizer(name)
    pools = _token_pools(tok)
    for seed in range(150):
        ids = _stream(random.Random(seed), pools, 60)
        for k, scan in _scan_texts(tok.decode, ids):
            assert scan.text == tok.decode(ids[:k]), (seed, ids[:k])
            assert scan.restarts == 0  # byte-level BPE never rewrites final text


@pytest.mark.parametrize("decoder", ["metaspace", "llama", "wordpiece-cleanup", "bpe-suffix"])
def test_incremental_text_is_exact_for_decoders_that_strip_clean_or_rewrite(decoder):
    """Decoders that strip the first token's leading space (Metaspace, Llama's Strip), clean up
    spaces (WordPiece), drop the last token's suffix (BPEDecoder), or turn a byte run into U+FFFD
    when it ends incomplete (Llama's ByteFallback: the scan restarts there)."""
    import random
    from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models
    words = ["▁", "▁a", "a", "▁the", "##ing", "ing", ".", "▁.", "n't", "▁do", "▁not", "?", "<0xE4>",
             "<0xB8>", "<0xAD>", "<0x41>", "▁中", "x</w>", "</w>", " "]
    tok = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="a"))
    tok.add_special_tokens([AddedToken("<|im_end|>", special=True)])
    tok.add_tokens([AddedToken("<think>", special=False)])
    tok.decoder = {"metaspace": decoders.Metaspace(), "wordpiece-cleanup": decoders.WordPiece(cleanup=True),
                   "bpe-suffix": decoders.BPEDecoder(),
                   "llama": decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                               decoders.Fuse(), decoders.Strip(" ", 1, 0)])}[decoder]
    n = tok.get_vocab_size(with_added_tokens=True)
    restarts = 0
    for seed in range(300):
        rng = random.Random(seed)
        ids = [rng.randrange(n) if rng.random() < .5 else rng.randrange(12, 16) for _ in range(30)]
        for k, scan in _scan_texts(tok.decode, ids):
            assert scan.text == tok.decode(ids[:k]), (seed, ids[:k])
        restarts += scan.restarts
    assert (restarts > 0) == (decoder == "llama")


def _whole_decode_stop(decode, stream, stops, eos, max_new):
    """The engine's former stop check: decode every output id after each token."""
    out = []
    for tok in stream[:max_new]:
        out.append(tok)
        if tok in eos:
            return out, None, "stop"
        text = decode(out)
        hits = [text.index(s) for s in stops if s in text]
        if hits:
            return out, text[: min(hits)], "stop"
    return out, None, "length"


@pytest.mark.parametrize("name", ["demo", "qwen3"])
def test_stop_strings_end_rows_as_whole_decodes_did(name):
    """Random streams, random stop strings (substrings of the text, pieces split across tokens,
    several at once): the same output ids, text and finish_reason as decoding everything."""
    import random
    from types import SimpleNamespace
    from minitflow.engine.engine import Engine
    from minitflow.engine.request import Request, Status
    tok = _tokenizer(name)
    pools = _token_pools(tok)
    engine = SimpleNamespace(decode_text=tok.decode, eos_token_ids={tok.eos_token_id}, skip_ids=tok.special_ids,
                             scheduler=SimpleNamespace(release=lambda r: None))
    engine._stop_string = lambda r: Engine._stop_string(engine, r)
    stopped = 0
    for seed in range(200):
        rng = random.Random(seed)
        stream = _stream(rng, pools, 80)
        text = tok.decode(stream)
        stops = tuple(rng.choice([text[(i := rng.randrange(len(text) + 1)): i + rng.randint(1, 6)], rng.choice(STOPS)])
                      for _ in range(rng.randint(1, 3)))
        stops = tuple(s for s in stops if s) or ("\n\n",)
        sp = SamplingParams(max_new_tokens=rng.randint(1, 80), stop=stops, ignore_eos=rng.random() < .5)
        req = Request([1], sp)
        req.status = Status.RUNNING
        for t in stream:
            if Engine._accept(engine, req, t):
                break
        want = _whole_decode_stop(tok.decode, stream, stops, set() if sp.ignore_eos else {tok.eos_token_id},
                                  sp.max_new_tokens)
        assert (req.output_ids, req.text, req.finish_reason) == want, (seed, stops)
        stopped += want[1] is not None
    assert stopped > 50  # most rows end at a stop string


def test_stop_strings_cost_linear_decode_work():
    """2,000 tokens decode O(n) ids in all (decoding the whole output at each token was n^2 / 2)."""
    import random
    tok = _tokenizer("demo")
    pools = _token_pools(tok)
    ids = _stream(random.Random(0), [pools[0], pools[0]] + pools[2:], 2000)  # no special ids: they add no text
    decoded = []
    def decode(xs):
        decoded.append(len(xs))
        return tok.decode(xs)
    for k, scan in _scan_texts(decode, ids, ("\x00never\x00", "</answer>")):
        pass
    assert scan.text == tok.decode(ids)
    assert sum(decoded) < 10 * len(ids), sum(decoded)


def test_compiled_attention_buckets():
    from minitflow.engine.runner import batch_bucket, kv_bucket
    got = [kv_bucket(n, 8192) for n in (1, 256, 257, 1024, 1025, 2049, 5000, 9000)]
    assert got == [256, 256, 512, 1024, 2048, 4096, 8192, 8192]
    assert [batch_bucket(n, 20) for n in (1, 2, 3, 5, 9, 17, 20)] == [1, 2, 4, 8, 16, 20, 20]


def test_compiled_decode_matches_eager(tiny_dir):
    eager = LLM.load(tiny_dir, dtype="float32", device="cpu")
    compiled = LLM.load(tiny_dir, dtype="float32", device="cpu", compile=True)
    for llm in (eager, compiled):
        llm.eos_token_ids = set()
    # the second prompt crosses from the 256-slot attention bucket into the 512-slot one
    prompts = [[1, 2, 3, 4], [(7 * i) % 150 for i in range(250)]]
    sp = SamplingParams(max_new_tokens=10)
    assert [g.token_ids for g in compiled.generate(prompts, sp)] == [g.token_ids for g in eager.generate(prompts, sp)]


def test_compile_on_a_cpu_without_a_cpp_compiler_is_one_line_before_the_load(tiny_dir, monkeypatch):
    """Inductor builds a CPU model's kernels with a C++ compiler: without one, compile=True
    (--compile) ran the load and the prefill, then failed at the first decode step with a
    100-line InductorError traceback."""
    import minitflow.model.weights as weights
    from torch._inductor import config
    model = load_model(tiny_dir, torch.float32, "cpu")

    def no_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the compiler was checked")
    monkeypatch.setattr(weights, "load_model", no_load)
    with config.patch({"cpp.cxx": ("/nonexistent/g++",)}):
        with pytest.raises(UserError, match=r"^compile \(--compile\) on a CPU needs a C\+\+ compiler .*/nonexistent/g\+\+ "
                                            r"does not run: install g\+\+ \(or set CXX\), or run without compile$"):
            LLM(model, compile=True)
        with pytest.raises(UserError, match=r"needs a C\+\+ compiler"):
            LLM.load(tiny_dir, dtype="float32", device="cpu", compile=True)
    assert LLM(model).generate([[1, 2, 3]], SamplingParams(max_new_tokens=2))[0].completion_tokens == 2  # no compile: no compiler


def test_user_errors(tiny_dir, tmp_path):
    with pytest.raises(UserError, match="model directory not found"):
        LLM.load(tmp_path / "nope")
    with pytest.raises(UserError, match=r"or a hub id; the hub id is Qwen/Qwen3-4B, without the trailing '/'\)$"):
        LLM.load("Qwen/Qwen3-4B/")  # a shell's completion of a folder named like it
    import shutil
    from safetensors.torch import load_file, save_file
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    tensors = load_file(bad / "model.safetensors")
    tensors.pop("model.layers.1.mlp.up_proj.weight")
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match="missing tensor model.layers.1.mlp.up_proj.weight"):
        LLM.load(bad, dtype="float32")
    tensors = load_file(tiny_dir / "model.safetensors")
    tensors["model.layers.0.self_attn.o_proj.weight"] = tensors["model.layers.0.self_attn.o_proj.weight"][:, :5].contiguous()
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"tensor model.layers.0.self_attn.o_proj.weight has shape \(64, 5\)"):
        LLM.load(bad, dtype="float32")
    tensors = load_file(tiny_dir / "model.safetensors")
    tensors["model.layers.1.self_attn.q_proj.bias"] = torch.zeros(64)  # Qwen2's biases: another model
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match=rf"^{re.escape(str(bad))}: unexpected tensor model.layers.1.self_attn.q_proj.bias "
                                        r"\(is this a Qwen3 checkpoint\?\)$"):
        LLM.load(bad, dtype="float32")
    with pytest.raises(UserError, match=r"^model directory not found: Qwen/Qwen 3/ \(pass a HF-format Qwen3 directory or "
                                        r"a hub id\)$"):
        LLM.load("Qwen/Qwen 3/")  # no hub id without the '/' either: no hint
    llm = LLM.load(tiny_dir, dtype="float32", max_seq_len=32)
    with pytest.raises(UserError, match="more than the cache's 32 positions"):
        llm.generate([list(range(30))], SamplingParams(max_new_tokens=8))
    with pytest.raises(UserError, match="token id 999 outside the model's vocabulary of 160"):
        llm.generate([[1, 2, 999]])
    with pytest.raises(UserError, match=r"\(prompt 1\): the prompt is empty"):
        llm.generate([[1], []], SamplingParams(max_new_tokens=2))
    with pytest.raises(UserError, match="unknown dtype"):
        LLM.load(tiny_dir, dtype="fp8")
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        import os
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            LLM.load("nobody/not-a-model")
        finally:
            del os.environ["HF_HUB_OFFLINE"]


def test_model_not_cached_names_a_download_command_the_hub_installs(monkeypatch):
    """The one-line error tells the user to run a command of the installed huggingface-hub
    (`huggingface-cli` is gone from huggingface-hub 1.0 on; `hf` exists from 0.34)."""
    import re
    from importlib.metadata import distribution

    from minitflow.model.weights import resolve_model_dir
    scripts = {e.name for e in distribution("huggingface-hub").entry_points if e.group == "console_scripts"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        resolve_model_dir("nobody/not-a-model")
    command = re.search(r"`(\S+) download nobody/not-a-model`", str(err.value))
    assert command and command.group(1) in scripts, (str(err.value), scripts)


@pytest.mark.parametrize("value,offline", [("1", True), ("true", True), ("ON", True), ("yes", True),
                                           ("0", False), ("no", False), ("off", False), ("false", False), ("", False)])
def test_hf_hub_offline_is_read_as_huggingface_hub_reads_it(value, offline, tiny_dir, monkeypatch):
    """HF_HUB_OFFLINE=no / off counted as offline here and as online in huggingface-hub: a model
    missing from the cache was refused instead of downloaded. Both now read 1/ON/YES/TRUE only."""
    import huggingface_hub
    import huggingface_hub.constants

    from minitflow.eval.data import _offline
    from minitflow.model.weights import resolve_model_dir
    calls = []

    def fake(name, allow_patterns=None, local_files_only=False):
        calls.append(local_files_only)
        if local_files_only:
            raise FileNotFoundError(name)
        return str(tiny_dir)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, name, timeout=None: None)  # the hub answers
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert huggingface_hub.constants._is_true(value or None) == offline  # the hub's own reading
    if offline:
        with pytest.raises(UserError, match="not in the Hugging Face cache"):
            resolve_model_dir("org/model")
    else:
        assert resolve_model_dir("org/model") == tiny_dir and calls == [True, False]
    assert _offline() == offline


def test_transformers_offline_puts_the_dataset_loader_offline_too(monkeypatch):
    """huggingface-hub reads TRANSFORMERS_OFFLINE where HF_HUB_OFFLINE is unset, and so does the
    model loader (files.hub_offline); the dataset loader read HF_HUB_OFFLINE only, so it went online."""
    from minitflow.eval.data import _offline
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert _offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    assert not _offline()


def _fake_snapshots(monkeypatch, cached: Path, online: Path) -> list[bool]:
    """huggingface-hub's snapshot_download faked, online: `cached` from the local cache, `online`
    once downloaded. Returns the list of its calls' local_files_only."""
    import huggingface_hub
    calls: list[bool] = []

    def fake(name, allow_patterns=None, local_files_only=False):
        calls.append(local_files_only)
        return str(cached if local_files_only else online)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, name, timeout=None: None)  # the hub answers
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


def test_a_partly_cached_hub_model_is_not_taken_for_the_model(tiny_dir, tmp_path, monkeypatch):
    """A snapshot holding only what AutoConfig/AutoTokenizer fetched (or a download cut short)
    was returned as the model: "no model.safetensors in .../snapshots/...", never downloaded."""
    import json
    import shutil

    from minitflow.model.weights import resolve_model_dir
    partial, full = tmp_path / "partial", tmp_path / "full"
    partial.mkdir()
    shutil.copy(tiny_dir / "config.json", partial / "config.json")
    shutil.copytree(tiny_dir, full)
    calls = _fake_snapshots(monkeypatch, partial, full)
    assert resolve_model_dir("org/model") == full and calls == [True, False]  # online: fetches the rest
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="only partly in the Hugging Face cache: .* lacks model.safetensors"):
        resolve_model_dir("org/model")
    (partial / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "a.safetensors"}}))
    with pytest.raises(UserError, match="only partly in the Hugging Face cache: .* lacks a.safetensors"):  # a shard
        resolve_model_dir("org/model")
    shutil.copy(tiny_dir / "model.safetensors", partial / "a.safetensors")
    assert resolve_model_dir("org/model") == partial


def test_a_cached_hub_model_without_its_tokenizer_is_refused_at_resolution(tiny_dir, tmp_path, monkeypatch):
    """A snapshot with the weights but no tokenizer.json was returned as complete: a caller that
    reads text failed only at the weight load, and online the tokenizer was never fetched."""
    import shutil

    import huggingface_hub

    from minitflow.files import demo_dir
    from minitflow.model.weights import model_config, resolve_model_dir
    cached, full = tmp_path / "cached", tmp_path / "full"
    shutil.copytree(tiny_dir, cached)  # config.json and model.safetensors, no tokenizer.json
    shutil.copytree(tiny_dir, full)
    shutil.copy(demo_dir() / "tokenizer.json", full / "tokenizer.json")
    calls = _fake_snapshots(monkeypatch, cached, full)
    assert resolve_model_dir("org/model") == cached and calls == [True]  # token ids only: the weights suffice
    calls.clear()
    assert resolve_model_dir("org/model", need_tokenizer=True) == full and calls == [True, False]  # fetched
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=f"no tokenizer.json in {cached} .*HF_HUB_OFFLINE is set"):
        resolve_model_dir("org/model", need_tokenizer=True)
    with pytest.raises(UserError, match=f"no tokenizer.json in {cached}: text prompts need"):  # a folder as is
        model_config(cached, need_tokenizer=True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda name, **kw: str(cached))  # a repo without one
    with pytest.raises(UserError, match=f"no tokenizer.json in {cached}: text prompts need"):
        resolve_model_dir("org/model", need_tokenizer=True)


def test_compiled_decode_with_lora_matches_eager(tiny_dir):
    eager = LLM.load(tiny_dir, dtype="float32", device="cpu")
    compiled = LLM.load(tiny_dir, dtype="float32", device="cpu", compile=True)
    for llm in (eager, compiled):
        llm.eos_token_ids = set()
    prompts = [[1, 2, 3, 4], [9, 8, 7, 6, 5, 4, 3]]
    sp = SamplingParams(max_new_tokens=8)
    for seed in (1, 2):  # the second call reuses the static LoRA buffers
        lora = build_lora(eager.cfg, [_random_factors(eager.cfg, 2, 4, seed), _random_factors(eager.cfg, 2, 4, seed + 7)],
                          [1.0, 1.0])
        want = [g.token_ids for g in eager.generate(prompts, sp, lora=lora)]
        assert [g.token_ids for g in compiled.generate(prompts, sp, lora=lora)] == want


def test_fused_elementwise_ops_trace_whole_and_match_eager():
    """On CUDA RMSNorm, the residual add + RMSNorm, q/k norm + RoPE and SiLU·up run as
    torch.compile(fullgraph, dynamic) kernels: the same compile must trace each without a graph
    break and give the op-by-op values (float32, CPU), at decode and prefill shapes."""
    from minitflow.model import layers
    g = torch.Generator().manual_seed(0)
    for b, t in ((1, 1), (3, 5)):
        x = torch.randn(b, t, 4, 64, generator=g)
        w, w2 = torch.randn(64, generator=g), torch.randn(64, generator=g)
        cos, sin = torch.randn(b, 1, t, 64, generator=g), torch.randn(b, 1, t, 64, generator=g)
        for fn, args in ((layers.rms_norm, (x, w, 1e-6)), (layers.qk_norm_rope, (x, w, w2, 3, 1e-6, cos, sin)),
                         (layers.add_rms_norm, (x, cos[:, 0, :, None], w, 1e-6)), (layers.silu_mul, (x,))):
            compiled = torch.compile(fn.eager, dynamic=True, fullgraph=True)
            torch.testing.assert_close(compiled(*args), fn(*args), rtol=1e-5, atol=1e-5)


def _launches(fn, *args) -> tuple[int, object]:
    """(kernels inductor's compile of `fn` launches (CPU: its C++ kernels; no extern call either),
    its result)."""
    import re
    from torch._inductor.utils import run_and_get_code
    torch._dynamo.reset()
    out, code = run_and_get_code(torch.compile(fn, dynamic=True, fullgraph=True), *args)
    call = code[-1][code[-1].index("def call("):]
    assert "extern_kernels" not in call
    return len(re.findall(r"\n\s+(?:cpp_fused_\w+|triton_\w+\.run)\(", call)), out


def test_folded_lora_joins_the_next_fused_kernel():
    """lora_linear.DECODE_LORA "folded": a projection's B u (u from the weight's own matmul) is
    added by the fused function that reads the projection next (the residual add + RMSNorm after
    o and down, SiLU·up after gate/up): what `expand_` (a baddbmm_ per block) adds, within
    float32 rounding, and inductor compiles each with its LoRA into as many kernels as without
    (one), so LoRA launches none of its own. (q/k/v's is the Triton kernel's:
    tests/test_triton_kernels.py.)"""
    from minitflow.model import layers
    from minitflow.model.lora_linear import expand_, expanded
    g = torch.Generator().manual_seed(0)
    b, h, r = 3, 64, 8
    z = torch.randn(b, 1, 2 * h + 5 * 2 * r, generator=g)  # W x, then the u of 5 slots (rows take slots 1..3)
    u = z.as_strided((b, 1, 2 * r), (z.shape[-1] + 2 * r, z.shape[-1], 1), 2 * h + 2 * r)
    y = z[..., :2 * h]
    blocks = (torch.randn(b, h, r, generator=g), torch.randn(b, h, r, generator=g))
    want = expand_(y.clone(), u, blocks)
    torch.testing.assert_close(expanded(y, (u, blocks)), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(expanded(y, None), y)
    x, w = torch.randn(b, 1, h, generator=g), torch.randn(h, generator=g)
    one = (u[..., :r], blocks[:1])  # o / down: one block
    for fn, plain, lora, ref in (
            (layers.add_rms_norm, (x, y[..., :h], w, 1e-6), (x, y[..., :h], w, 1e-6, one),
             lambda: layers.add_rms_norm(x, expand_(y[..., :h].clone(), *one), w, 1e-6)),
            (layers.silu_mul, (y,), (y, (u, blocks)), lambda: layers.silu_mul(want))):
        n_plain, _ = _launches(fn.eager, *plain)
        n_lora, got = _launches(fn.eager, *lora)
        assert n_plain == n_lora == 1, (fn, n_plain, n_lora)
        torch.testing.assert_close(got, ref(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fn(*lora), ref(), rtol=1e-5, atol=1e-5)  # op by op, as CPU runs it


def test_fused_capture_terms_trace_whole_and_match_eager():
    """On CUDA a capture's layer-sum term (gather the span, mask, scale, add) is one
    torch.compile(fullgraph, dynamic) kernel: it must trace without a graph break and give the
    op-by-op values, for a padded batch of spans (float32, CPU)."""
    from minitflow.model import qwen3
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 11, 16, generator=g)
    index, valid = qwen3.Capture([0], starts=[0, 2, 5], ends=[9, 6, 11])._index(h)
    acc, w = torch.randn(3, 9, 16, generator=g), torch.tensor(0.3)
    for fn, args in ((qwen3.weighted_span, (h, index, valid, w)), (qwen3.add_weighted_span, (acc, h, index, valid, w))):
        compiled = torch.compile(fn.eager, dynamic=True, fullgraph=True)
        torch.testing.assert_close(compiled(*args), fn(*args), rtol=1e-6, atol=1e-6)
    got = qwen3.weighted_span(h, index, valid, w)
    assert torch.equal(got[1, :4], 0.3 * h[1, 2:6]) and not got[1, 4:].any()  # row 1: positions 2..5, then zeros


def test_fuse_decode_compiles_only_inside_decode_steps(monkeypatch):
    """fused.FUSE = "decode": a fused function runs op by op outside `decoding()` (prefills, the
    generator) and compiled inside it (the engine's decode steps); "everywhere" compiles both;
    an unknown value is refused. The CUDA path forced on for CPU tensors, as the interpreter
    tests do; the values are the op-by-op ones either way."""
    from minitflow.model import fused

    def triple_plus_one(x):
        return x * 3 + 1

    f = fused.fused_on_cuda(triple_plus_one)
    monkeypatch.setattr(fused, "cuda_inference", lambda x: True)
    x = torch.arange(6.0)
    monkeypatch.setattr(fused, "FUSE", "decode")
    assert torch.equal(f(x), x * 3 + 1) and triple_plus_one not in fused._FUSED  # outside: op by op
    with fused.decoding():
        assert torch.equal(f(x), x * 3 + 1) and triple_plus_one in fused._FUSED  # inside: compiled
    del fused._FUSED[triple_plus_one]
    monkeypatch.setattr(fused, "FUSE", "everywhere")
    assert torch.equal(f(x), x * 3 + 1) and triple_plus_one in fused._FUSED
    monkeypatch.setattr(fused, "FUSE", "sometimes")
    with pytest.raises(ValueError, match="FUSE='sometimes'"):
        f(x)
    del fused._FUSED[triple_plus_one]


def test_fused_functions_may_recompile_past_dynamos_default():
    """A process may need more than dynamo's default 8 variants of one fused function (dtypes,
    size 1 against the others, inference tensors against plain ones); with fullgraph the 9th
    raised on the H200. `allow_recompiles` (run before a fused function's first compile)
    lifts the limit: 12 variants of one function compile."""
    from minitflow.model import fused
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    # cfg.patch, not monkeypatch: pytest 9 undoes a module attribute it set with delattr, which
    # torch 2.13's config turns into hiding the setting, and every later compile then fails
    with cfg.patch(**{name: 8}):
        fused.allow_recompiles(fused.RECOMPILE_LIMIT)
        assert getattr(cfg, name) == fused.RECOMPILE_LIMIT

        def double(x):
            return x * 2

        compiled = torch.compile(double, backend="eager", fullgraph=True, dynamic=True)
        dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                  torch.int16, torch.int8, torch.uint8, torch.complex64)
        for i, dtype in enumerate(dtypes + (torch.float32, torch.int64)):
            x = torch.ones(1 if i >= len(dtypes) else 3, dtype=dtype)  # size 1 is its own variant too
            assert torch.equal(compiled(x), double(x))
        torch._dynamo.reset()


def test_fused_step_tables_trace_whole_and_match_eager():
    """The step's additive attention mask and rotary tables are one fused kernel each on CUDA:
    traced whole with dynamic shapes, they equal the op-by-op ones (CPU) exactly."""
    from minitflow.model.attention import causal_mask
    from minitflow.model.layers import Rotary, rotary_tables
    rot = Rotary(32, 1e6, 600)
    mask = torch.compile(causal_mask.eager, dynamic=True, fullgraph=True)
    tables = torch.compile(rotary_tables.eager, dynamic=True, fullgraph=True)
    for positions, kv_len in ((torch.tensor([[5], [300], [0]]), 512), (torch.tensor([[0, 1, 2, 3], [7, 8, 9, 9]]), 256)):
        assert torch.equal(mask(positions, kv_len, 4, torch.bfloat16), causal_mask(positions, kv_len, 4, torch.bfloat16))
        for got, want in zip(tables(rot.cos, rot.sin, positions, torch.bfloat16), rot(positions, torch.bfloat16)):
            assert torch.equal(got, want)


def test_fused_gumbel_noise_traces_whole_and_matches_eager():
    """On CUDA the sampler's noise (hash of row key, step and token id, two float64 logs, added
    to the scaled logits) is one torch.compile(fullgraph, dynamic) kernel: traced whole, it gives
    the op-by-op scores on CPU, for the whole vocabulary and for top-k candidates."""
    from minitflow.engine.sampler import _bits, _hash32, gumbel_scores
    g = torch.Generator().manual_seed(0)
    keys, step = seed_keys([1, 2, 2**40 + 3]), torch.tensor([0, 7, 2**33])
    id_hash = _hash32(_bits(torch.arange(5000)))
    compiled = torch.compile(gumbel_scores.eager, dynamic=True, fullgraph=True)
    for bits in (id_hash, id_hash[torch.randint(0, 5000, (3, 20), generator=g)]):
        vals = torch.randn(3, bits.shape[-1], generator=g)
        want = gumbel_scores(vals, step, keys, bits)
        torch.testing.assert_close(compiled(vals, step, keys, bits), want, rtol=1e-6, atol=1e-6)
        assert torch.equal(compiled(vals, step, keys, bits).argmax(-1), want.argmax(-1))


def test_q_and_k_heads_normalised_together_equal_q_and_k_apart():
    """qk_norm_rope runs Qwen3's q norm and k norm (different weights) and RoPE over the q and k
    heads side by side, one kernel on CUDA instead of two: each head gets bitwise the values of
    normalising q and k separately (float32 and bf16, CPU), at decode and prefill shapes."""
    from minitflow.model.layers import _rms_norm, apply_rotary, qk_norm_rope
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        for b, t in ((1, 1), (3, 5)):
            qkv = torch.randn(b, t, (6 + 2 + 2) * 32, generator=g).to(dtype)  # q 6 heads, k and v 2
            qw, kw = (1 + 0.1 * torch.randn(2, 32, generator=g)).to(dtype)
            cos, sin = (torch.randn(2, b, 1, t, 32, generator=g)).to(dtype)
            got = qk_norm_rope(qkv[..., :8 * 32].view(b, t, 8, 32), qw, kw, 6, 1e-6, cos, sin)
            q, k = qkv[..., :6 * 32].view(b, t, 6, 32), qkv[..., 6 * 32:8 * 32].view(b, t, 2, 32)
            want = [apply_rotary(_rms_norm(x, w, 1e-6).transpose(1, 2), cos, sin) for x, w in ((q, qw), (k, kw))]
            assert torch.equal(got, torch.cat(want, dim=1))


@pytest.mark.parametrize("edit", ["no rope keys", "no tie_word_embeddings", "no num_key_value_heads",
                                  "rms_norm_eps 0.1", "no head_dim", "rope_theta beside rope_parameters",
                                  "hidden_act swish"])
def test_config_json_is_read_as_transformers_reads_it(edit, tmp_path):
    """A key config.json lacks takes transformers' meaning (RoPE theta 10,000, untied embeddings,
    one KV head per query head) and rms_norm_eps is the file's: the logits equal transformers'
    for the same weights. A missing rope_theta used to be 1,000,000 (Qwen3's value, but not
    transformers' default); every other test's config had these keys, and eps 1e-6 everywhere.
    A missing head_dim was hidden_size // heads (80 for Qwen3-4B), not transformers' 128; a
    top-level rope_theta beside rope_parameters' own won over it (transformers takes the latter).
    hidden_act "swish" is silu in transformers; it was refused."""
    import json
    eps = 0.1 if edit == "rms_norm_eps 0.1" else 1e-6
    head_dim = 128 if edit == "no head_dim" else 16  # transformers' Qwen3Config default, not 64 // 4
    hf = make_tiny_qwen3(tmp_path, tie=False, heads=4, kv_heads=4, eps=eps, head_dim=head_dim)
    path = tmp_path / "config.json"
    cfg = json.loads(path.read_text())
    drop = {"no rope keys": ("rope_theta", "rope_parameters", "rope_scaling"),
            "no tie_word_embeddings": ("tie_word_embeddings",), "no num_key_value_heads": ("num_key_value_heads",),
            "rms_norm_eps 0.1": (), "no head_dim": ("head_dim",), "rope_theta beside rope_parameters": (),
            "hidden_act swish": ()}[edit]
    assert hf.config.rope_parameters["rope_theta"] == 10000.0 and not hf.config.tie_word_embeddings
    if edit == "rope_theta beside rope_parameters":
        cfg["rope_theta"] = 500.0
    if edit == "hidden_act swish":  # transformers' name for silu too (ACT2FN); it was refused
        cfg["hidden_act"] = "swish"
    path.write_text(json.dumps({k: v for k, v in cfg.items() if k not in drop}))
    model = load_model(tmp_path, torch.float32, "cpu")
    ids = torch.randint(0, 150, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(ids, torch.arange(13).expand(2, 13), None, 13)
        ref = hf(ids).logits
    assert (ours - ref).abs().max() <= 1e-4
    from transformers import Qwen3Config as HFConfig
    read = HFConfig.from_pretrained(tmp_path)  # what transformers reads from the same file
    assert (read.rope_parameters["rope_theta"], read.head_dim) == (model.cfg.rope_theta, model.cfg.head_dim)


def test_positions_the_model_cannot_run_are_one_line(tiny_dir):
    """A direct forward (the engine bounds its own requests by max_seq_len), as a researcher
    scoring a long sequence would call it: past max_position_embeddings (512 here) was an
    IndexError from the rotary table; a negative position silently read a row from the table's
    end; positions past kv_len (an offset without a cache) silently attended later tokens: no
    longer causal, and not transformers' logits for those position_ids; a kv_len other than T
    without a cache was an SDPA shape error. 512 tokens, the last position in the table, still
    run as transformers runs them; a call of no tokens gives empty logits, not an error from the check."""
    from transformers import AutoModelForCausalLM
    model = load_model(tiny_dir, torch.float32, "cpu")
    hf = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, 150, (1, 513), generator=torch.Generator().manual_seed(0))
    for n, positions, kv_len, words in (
            (513, torch.arange(513)[None], 513, "positions 0..512 are outside the model's rotary table of 512"),
            (3, torch.tensor([[-1, 0, 1]]), 3, "positions -1..1 are outside"),
            (3, torch.tensor([[5, 6, 7]]), 3, "position 7 is past this call's 3 tokens"),
            (3, torch.arange(3)[None], 8, "kv_len must be 3, got 8")):
        with pytest.raises(UserError, match=re.escape(words)), torch.no_grad():
            model(ids[:, :n], positions, None, kv_len)
    with torch.no_grad():
        assert model(ids[:, :0], torch.zeros(1, 0, dtype=torch.long), None, 0).shape == (1, 0, model.cfg.vocab_size)
        ours = model(ids[:, :512], torch.arange(512)[None], None, 512)
        ref = hf(ids[:, :512]).logits
    assert (ours - ref).abs().max() <= 1e-4


def test_rms_norm_equals_transformers_in_bfloat16():
    """RMSNorm as transformers' Qwen3RMSNorm: the mean of squares in float32, the normalised
    value cast back to the input dtype before the weight multiplies it (in bf16 the order shows)."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm
    from minitflow.model.layers import RMSNorm
    g = torch.Generator().manual_seed(0)
    x = (30 * torch.randn(4, 7, 256, generator=g)).bfloat16()
    w = (1 + 0.3 * torch.randn(256, generator=g)).bfloat16()
    ref, ours = Qwen3RMSNorm(256, eps=1e-6).bfloat16(), RMSNorm(256, 1e-6).bfloat16()
    with torch.no_grad():
        ref.weight.copy_(w)
        ours.weight.copy_(w)
        assert torch.equal(ours(x), ref(x))


def test_sharded_checkpoint_loads_and_a_missing_shard_is_named(tmp_path):
    """A model.safetensors.index.json with its shards (what save_pretrained writes for large
    models) loads as the single file does; a shard it lists that is absent is one UserError."""
    hf = make_tiny_qwen3(tmp_path / "one", tie=False)
    hf.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="20KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    want, got = load_model(tmp_path / "one", torch.float32), load_model(tmp_path / "sharded", torch.float32)
    assert want.state_dict().keys() == got.state_dict().keys()
    assert all(torch.equal(v, got.state_dict()[k]) for k, v in want.state_dict().items())
    shards[-1].unlink()
    with pytest.raises(UserError, match=f"shard {shards[-1].name} listed in model.safetensors.index.json is missing"):
        load_model(tmp_path / "sharded", torch.float32)


def test_tied_checkpoint_that_also_stores_lm_head_loads(tmp_path):
    """Some tied checkpoints store lm_head.weight as well (a copy of the embeddings): transformers
    loads them and ties; it must not be refused as an unexpected tensor."""
    from safetensors.torch import load_file, save_file
    hf = make_tiny_qwen3(tmp_path, tie=True)
    tensors = load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in tensors
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = load_model(tmp_path, torch.float32)
    assert model.lm_head.weight is model.embed_tokens.weight
    ids = torch.tensor([[3, 17, 42, 5, 9]])
    with torch.no_grad():
        assert (model(ids, torch.arange(5)[None], None, 5) - hf(ids).logits).abs().max() <= 1e-4


@pytest.mark.parametrize("layers", [[0, 99], [1, 1], [-1]])
def test_a_capture_of_layers_the_model_lacks_is_refused_not_left_unwritten(pair, layers):
    """A capture of all its layers writes each into its slot of one tensor made first: a layer
    the forward never reaches (past the last, negative) or a duplicate (one slot taken twice, the
    other never) left a slot of uninitialised memory, returned as the capture without a word (the
    old stack of a list was a TypeError). One line now, before the forward runs."""
    _, model, _ = pair
    ids, pos = torch.tensor([[5, 6, 7, 8]]), torch.arange(4)[None]
    with pytest.raises(UserError, match="^" + re.escape(f"capture layers {layers} are not distinct layers 0 ")):
        model(ids, pos, None, 4, capture=Capture(layers, [0], [4]), need_logits=False)
