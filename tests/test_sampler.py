"""Sampler: greedy, batch invariance, determinism, filter_logits semantics, distribution, hash."""

from __future__ import annotations

import pytest
import torch

from minitflow.engine.sampler import SamplingParams, Sampler, _bits, _hash32, _step_keys, _to_unit, filter_logits
from minitflow.errors import UserError

from helpers import seed_keys

CPU = torch.device("cpu")


def _uniform(seeds: list[int], step: int, vocab: int) -> torch.Tensor:
    """(B, vocab) uniforms of rows `seeds` at `step`: the u of gumbel_scores, spelled out."""
    ids = _bits(torch.arange(vocab))
    return _to_unit(_hash32(_step_keys(seed_keys(seeds), step)[:, None] ^ _hash32(ids)))


def _logits(rows: int, vocab: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * scale


def _draw(params: list[SamplingParams], logits_per_step: list[torch.Tensor]) -> torch.Tensor:
    """(steps, B) tokens, one Sampler over all steps as generate() uses it."""
    sampler = Sampler(params, CPU)
    return torch.stack([sampler(lg, step) for step, lg in enumerate(logits_per_step)])


def _lowbias32(x: int) -> int:
    m = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def test_a_rows_seed_key_is_the_tensor_hash_of_its_seed():
    """set_row hashes a request's seed in Python (a tensor hash of one element cost ~70 us per
    admitted request): the same int32 words as the tensor hash, both halves of the seed counted."""
    from minitflow.engine.sampler import _seed_key
    import random
    rng = random.Random(0)
    seeds = [0, 1, 7, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63), (1 << 64) - 1] + \
        [rng.getrandbits(64) for _ in range(500)] + [rng.getrandbits(32) for _ in range(500)]
    assert [_seed_key(s) for s in seeds] == seed_keys(seeds).tolist()
    sampler = Sampler(2, CPU)
    sampler.set_row(1, SamplingParams(temperature=0.7, seed=(1 << 64) - 5))
    assert sampler.keys.tolist() == [0, seed_keys([(1 << 64) - 5]).item()]


def test_sampling_params_validation():
    for bad in ({"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -1}):
        with pytest.raises(UserError):
            SamplingParams(**bad)
    with pytest.raises(UserError, match=r"^vocab_rows must be >= 0, got -1$"):  # 0 is every row
        SamplingParams(vocab_rows=-1)
    assert SamplingParams().greedy and not SamplingParams(temperature=0.5).greedy


def test_sampling_params_hold_plain_numbers():
    """numpy numbers (a seed from np.arange, a length from an array) were kept as given and
    reached run_method's metadata, where json.dumps refused them; a temperature given as text
    was a TypeError from math.isfinite. Now they are int and float, and text a one-line error."""
    import json
    from dataclasses import asdict

    import numpy as np
    sp = SamplingParams(max_new_tokens=np.int64(8), temperature=np.float32(0.5), top_p=np.float64(0.9),
                        top_k=np.int32(4), seed=np.uint64(7), vocab_rows=np.int16(3))
    assert [type(v) for v in (sp.max_new_tokens, sp.top_k, sp.seed, sp.vocab_rows)] == [int] * 4
    assert type(sp.temperature) is float and type(sp.top_p) is float and sp.seed == 7
    json.dumps(asdict(sp))
    with pytest.raises(UserError, match=r"^temperature must be a number, got '0.5'$"):
        SamplingParams(temperature="0.5")


def test_hash32_matches_python_lowbias32_eager_and_compiled():
    """The hash works on int32 words whose products wrap modulo 2^32: the same values as the
    Python integers, at every length (SIMD body and scalar tail) and compiled."""
    g = torch.Generator().manual_seed(0)
    xs = [0, 1, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
    xs += torch.randint(0, 2**32, (2000,), generator=g, dtype=torch.int64).tolist()
    want = [_lowbias32(x) for x in xs]
    compiled = torch.compile(_hash32, fullgraph=True, dynamic=False)
    for n in (1, 3, 17, len(xs)):
        words = _bits(torch.tensor(xs[:n], dtype=torch.int64))
        assert words.dtype == torch.int32
        for fn in (_hash32, compiled):
            assert (fn(words).long() & 0xFFFFFFFF).tolist() == want[:n]


def test_uniforms_are_the_documented_integer_recipe():
    """u(seed, step, id) = (top 24 bits of h(h(k ^ (step * G mod 2^32)) ^ h(id)) + 0.5) / 2^24,
    k = h(lo ^ h(hi ^ G)) for the seed's 32-bit halves: the noise a seeded run depends on."""
    m, golden = 0xFFFFFFFF, 0x9E3779B9
    for seed, step in ((0, 0), (7, 3), (2**40 + 5, 2**31 + 9), (123456789012, 17)):
        key = _lowbias32((seed & m) ^ _lowbias32((seed >> 32) ^ golden))
        step_key = _lowbias32(key ^ ((step * golden) & m))
        want = [((_lowbias32(step_key ^ _lowbias32(i)) >> 8) + 0.5) / 2**24 for i in range(50)]
        assert _uniform([seed], step, 50)[0].tolist() == want


def test_uniforms_strictly_inside_unit_interval_and_uniform():
    ends = _to_unit(_bits(torch.tensor([0, 0xFF, 0xFFFFFF00, 0xFFFFFFFF], dtype=torch.int64)))
    assert (ends > 0).all() and (ends < 1).all()
    g = -torch.log(-torch.log(ends))
    assert torch.isfinite(g).all() and torch.isfinite(g.float()).all()

    u = _uniform(list(range(64)), step=3, vocab=4096)
    assert u.shape == (64, 4096) and u.dtype == torch.float64
    assert (u > 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.003
    hist = torch.histc(u.float(), bins=16, min=0, max=1) / u.numel()
    assert (hist - 1 / 16).abs().max() < 0.003
    # rows, steps and tokens all decorrelated
    assert not torch.equal(u[0], u[1])
    assert not torch.equal(_uniform([5], 0, 4096), _uniform([5], 1, 4096))
    assert abs(torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1]) < 0.01


def test_greedy_rows_are_argmax():
    logits = _logits(4, 50, seed=1)
    assert torch.equal(Sampler([SamplingParams()] * 4, CPU)(logits, 0), logits.argmax(-1))
    params = [SamplingParams(), SamplingParams(temperature=1.5, seed=1),
              SamplingParams(), SamplingParams(temperature=2.0, top_k=5, seed=2)]
    for step in range(10):
        logits = _logits(4, 50, seed=100 + step, scale=0.3)  # flat: sampled rows rarely pick the argmax
        tokens = Sampler(params, CPU)(logits, step)
        assert tokens.dtype == torch.int64 and tokens.shape == (4,)
        assert tokens[0] == logits[0].argmax() and tokens[2] == logits[2].argmax()


@pytest.mark.parametrize("row", [
    SamplingParams(temperature=0.6, top_k=20, top_p=0.95, seed=7),
    SamplingParams(temperature=1.0, seed=7),
    SamplingParams(temperature=0.8, top_p=0.9, seed=123456789012),
])
def test_row_tokens_do_not_depend_on_the_batch(row):
    steps, vocab = 20, 300
    own = [_logits(1, vocab, seed=s) for s in range(steps)]
    others = [SamplingParams(temperature=1.3, seed=1), SamplingParams(),
              SamplingParams(temperature=0.7, top_k=5, seed=2),
              SamplingParams(temperature=1.0, top_p=0.5, seed=3)]
    alone = _draw([row], own)[:, 0]
    batch = [torch.cat([_logits(2, vocab, seed=1000 + s), own[s], _logits(2, vocab, seed=2000 + s)])
             for s in range(steps)]
    batched = _draw(others[:2] + [row] + others[2:], batch)[:, 2]
    assert torch.equal(alone, batched)
    assert len(set(alone.tolist())) > 1  # really sampled


def test_same_inputs_same_tokens_and_seeds_steps_change_them():
    logits = _logits(1, 100, seed=3, scale=0.5)
    seqs = {}
    for seed in (0, 1, 2):
        sampler = Sampler([SamplingParams(temperature=1.0, top_k=50, seed=seed)], CPU)
        seqs[seed] = [sampler(logits, step).item() for step in range(60)]
        again = Sampler([SamplingParams(temperature=1.0, top_k=50, seed=seed)], CPU)
        assert [again(logits, step).item() for step in range(60)] == seqs[seed]
        assert len(set(seqs[seed])) > 20  # same logits, different steps -> different draws
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert sum(x != y for x, y in zip(seqs[a], seqs[b])) > 40


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (20, 0.95)])
def test_compiled_step_equals_eager(top_k, top_p):
    """The engine's compiled mode fuses the step; the tokens must not change (nor recompile per step)."""
    logits = _logits(3, 64, seed=4)
    params = [SamplingParams(temperature=1.0, top_k=top_k, top_p=top_p, seed=s) for s in range(2)] + \
        [SamplingParams()]
    from torch._dynamo.utils import counters
    eager, compiled = Sampler(params, CPU), Sampler(params, CPU, compile=True)
    assert torch.equal(eager(logits, 0), compiled(logits, 0))
    graphs = counters["stats"]["unique_graphs"]
    for step in (1, 5, 2**31 + 3):
        assert torch.equal(eager(logits, step), compiled(logits, step))
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (1, 1.0), (3, 1.0), (0, 0.8), (5, 0.7), (2, 0.3),
                                         (20, 0.95), (12, 0.5)])
def test_allowed_tokens_equal_filter_logits(top_k, top_p):
    vocab, rows, steps, temp = 12, 256, 30, 0.8
    logits = _logits(1, vocab, seed=5, scale=1.0)[0]  # rarest token p ~ 0.008: drawn ~60 times
    allowed = set(torch.isfinite(filter_logits(logits / temp, top_k, top_p)).nonzero()[:, 0].tolist())
    params = [SamplingParams(temperature=temp, top_k=top_k, top_p=top_p, seed=s) for s in range(rows)]
    drawn = set(_draw(params, [logits.expand(rows, vocab)] * steps).flatten().tolist())
    assert drawn == allowed


def _frequencies(top_k: int, top_p: float, logits: torch.Tensor, temp: float) -> torch.Tensor:
    rows, steps = 4000, 10  # 40,000 draws, vectorised over rows
    params = [SamplingParams(temperature=temp, top_k=top_k, top_p=top_p, seed=s) for s in range(rows)]
    tokens = _draw(params, [logits.expand(rows, -1)] * steps)
    return torch.bincount(tokens.flatten(), minlength=logits.numel()).float() / tokens.numel()


LOGITS6 = torch.tensor([1.0, 0.5, 0.2, -0.3, -1.0, 0.8])


@pytest.mark.parametrize("top_k,top_p,support", [(0, 1.0, 6), (3, 1.0, 3), (0, 0.5, 2), (0, 0.75, 3),
                                                      (4, 0.8, 3)])
def test_frequencies_match_renormalised_softmax(top_k, top_p, support):
    temp = 0.7
    expected = filter_logits(LOGITS6 / temp, top_k, top_p).softmax(-1)
    assert (expected > 0).sum() == support  # nucleus boundaries are not close calls
    freq = _frequencies(top_k, top_p, LOGITS6, temp)
    assert (freq - expected).abs().max() < 0.01, (freq, expected)
    assert (freq[expected == 0] == 0).all()


@pytest.mark.parametrize("row", [SamplingParams(temperature=0.9, top_k=20, top_p=0.95, seed=11),
                                 SamplingParams(temperature=0.9, top_k=7, seed=12),
                                 SamplingParams(temperature=1.1, seed=13)])
def test_topk_nucleus_and_unfiltered_paths_agree(row):
    steps, vocab = 30, 1000
    own = [_logits(1, vocab, seed=50 + s) for s in range(steps)]
    pair = [torch.cat([lg, _logits(1, vocab, seed=90 + s)]) for s, lg in enumerate(own)]
    runs = {}
    for name, partner in {"topk": SamplingParams(temperature=1.0, top_k=50, seed=1),
                          "nucleus": SamplingParams(temperature=1.0, top_p=0.9, seed=1),
                          "none": SamplingParams(temperature=1.0, seed=1)}.items():
        sampler = Sampler([row, partner], CPU)
        path = "topk" if sampler.kmax else "nucleus" if sampler.filtering else "none"
        if path != name:
            continue  # this row cannot take that path (e.g. an unfiltered row never uses top-k)
        runs[name] = torch.stack([sampler(lg, s) for s, lg in enumerate(pair)])[:, 0]
    alone = Sampler([row], CPU)
    runs["alone"] = torch.stack([alone(lg, s) for s, lg in enumerate(own)])[:, 0]
    assert len(runs) >= 3
    first = next(iter(runs.values()))
    for name, tokens in runs.items():
        assert torch.equal(tokens, first), name


def test_an_exact_score_tie_draws_the_same_token_on_the_top_k_and_whole_vocabulary_paths():
    """Two tokens whose logit + noise are equal in float32: the top-k path took the first in value order (the
    higher logit), the whole vocabulary the lower id, so a row drew another token beside a row without top_k."""
    vocab, seed = 20, 47
    noise = (-torch.log(-torch.log(_uniform([seed], 0, vocab)[0]))).float()
    logits = torch.full((vocab,), -5.0)
    logits[1] = 10.0
    target = logits[1] + noise[1]
    low = target - noise[0]  # nudged until token 0's score equals token 1's exactly, below token 1's logit
    while low + noise[0] != target:
        low = torch.nextafter(low, target if low + noise[0] < target else -target)
    logits[0] = low
    assert logits[0] < logits[1] and (logits + noise)[0] == (logits + noise)[1] == (logits + noise).max()
    me = SamplingParams(temperature=1.0, top_k=20, seed=seed)
    alone = Sampler([me], CPU)
    assert alone.kmax  # the top-k path
    beside = Sampler([me, SamplingParams(temperature=1.0, seed=1)], CPU)
    assert not beside.kmax  # the whole vocabulary, its top_k masked there
    assert alone(logits[None], 0).item() == beside(torch.stack([logits, logits]), 0)[0].item() == 0

@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.6, top_p=0.95), dict(temperature=0.7, top_k=20),
                                dict(temperature=1.0)])
def test_vocab_rows_draws_as_if_the_logits_were_cut(kw):
    """vocab_rows=N gives each row the token it gets from logits[:, :N] (noise is per token id),
    greedy or sampled, whether or not its neighbours are limited."""
    from dataclasses import replace
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=g) * 3
    logits[:, 250:] += 20  # the best ids lie past the cut
    base = [SamplingParams(seed=s, **kw) for s in range(4)]
    cut = Sampler(base, torch.device("cpu"))
    limited = Sampler([replace(p, vocab_rows=250) for p in base], torch.device("cpu"))
    mixed = Sampler([replace(p, vocab_rows=250) if i % 2 == 0 else p for i, p in enumerate(base)], torch.device("cpu"))
    for step in range(3):
        want = cut(logits[:, :250].contiguous(), step)
        got = limited(logits, step)
        assert torch.equal(got, want) and bool((got < 250).all())
        both = mixed(logits, step)
        assert torch.equal(both[0::2], want[0::2]) and torch.equal(both[1::2], cut(logits, step)[1::2])


@pytest.mark.parametrize("vocab", [300, 5000, 70000])
def test_the_unsorted_nucleus_keeps_the_tokens_of_the_sorted_reference(vocab):
    """The radix-select nucleus (no sort of the vocabulary) keeps exactly `filter_logits`'s
    tokens: values spread over all key bits, negative and positive, with runs of ties (kept or
    dropped together), a -inf tail, and budgets from tiny to all; with digits of 8, 11 and 16
    bits (four, three and two passes, by vocabulary size)."""
    from minitflow.engine.sampler import _digits, _nucleus_unsorted
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(6, vocab, generator=g) * torch.tensor([0.01, 0.3, 1.0, 3.0, 30.0, 1e-4])[:, None]
    ties = (torch.randn(3, vocab, generator=g) * 4).round() / 4          # ~60 distinct values
    masked = torch.randn(2, vocab, generator=g).masked_fill(torch.rand(2, vocab, generator=g) < 0.7, -torch.inf)
    rows = torch.cat([spread, ties, masked])
    assert len(_digits(*rows.shape)) == {300: 4, 5000: 3, 70000: 2}[vocab]
    for top_p in (1e-6, 0.1, 0.5, 0.9, 0.95, 0.999, 1.0 - 1e-9):
        kept = _nucleus_unsorted(rows, torch.full((rows.shape[0], 1), top_p, dtype=torch.float64))
        for r in range(rows.shape[0]):
            assert torch.equal(kept[r], torch.isfinite(filter_logits(rows[r], 0, top_p))), (r, top_p)
    off = _nucleus_unsorted(rows, torch.full((rows.shape[0], 1), float("inf"), dtype=torch.float64))
    assert off.all()


def test_the_nucleus_with_its_steps_compiled_keeps_the_same_tokens(monkeypatch):
    """On CUDA the radix select's steps between the histograms are torch.compile(dynamic,
    fullgraph) functions (one in-place): compiled on CPU they keep the eager tokens, at four,
    three and two passes and three row counts, the budget off included."""
    from minitflow.engine import sampler
    g = torch.Generator().manual_seed(1)
    cases = [(rows, vocab, top_p) for rows, vocab in ((3, 300), (5, 5000), (2, 70000)) for top_p in (0.1, 0.95, 2.0)]
    inputs = [((torch.randn(rows, vocab, generator=g) * 2).round(decimals=1),
               torch.full((rows, 1), top_p if top_p < 1 else float("inf"), dtype=torch.float64))
              for rows, vocab, top_p in cases]
    want = [sampler._nucleus_unsorted(v, p) for v, p in inputs]
    for name in ("_nucleus_weights", "_digit_index", "_threshold_digit", "_at_least"):
        monkeypatch.setattr(sampler, name, torch.compile(getattr(sampler, name).eager, dynamic=True, fullgraph=True))
    for (v, p), w in zip(inputs, want):
        assert torch.equal(sampler._nucleus_unsorted(v, p), w)
    assert not all(w.all() for w in want) and any(w.all() for w in want)


def test_top_k_candidates_filtered_compiled_equal_eager():
    """On CUDA the top-k path's temperature, top-k cut and nucleus over the candidates are one
    torch.compile(dynamic, fullgraph) function: compiled on CPU, the same values, ties and -inf
    included, for mixed rows (top_k below k, top-p off)."""
    from minitflow.engine.sampler import _filter_candidates
    g = torch.Generator().manual_seed(2)
    vals = torch.sort((torch.randn(4, 20, generator=g) * 3).round(), descending=True).values
    temperature = torch.tensor([[0.6], [1.0], [0.7], [1.3]])
    top_k = torch.tensor([[20], [5], [1 << 31], [12]])
    top_p = torch.tensor([[0.95], [float("inf")], [0.5], [0.8]], dtype=torch.float64)
    want = _filter_candidates(vals, temperature, top_k, top_p)
    got = torch.compile(_filter_candidates.eager, dynamic=True, fullgraph=True)(vals, temperature, top_k, top_p)
    assert torch.equal(got, want) and torch.isinf(want).any() and torch.isfinite(want).sum() > 4


def test_ties_at_the_nucleus_boundary_stay_or_go_together():
    logits = torch.tensor([2.0, 1.0, 1.0, 1.0, 0.0])
    p = logits.softmax(-1)
    for top_p, kept in ((float(p[0]) * 0.99, 1), (float(p[0]) + 1e-4, 4), (float(p[:4].sum()) + 1e-4, 5)):
        assert int(torch.isfinite(filter_logits(logits, 0, top_p)).sum()) == kept
        params = [SamplingParams(temperature=1.0, top_p=top_p, seed=s) for s in range(400)]
        drawn = set(_draw(params, [logits.expand(400, -1)]).flatten().tolist())
        assert drawn == set(range(kept))


def test_zero_and_negative_zero_logits_are_a_tie_in_every_nucleus():
    """0.0 and -0.0 are equal values: the nucleus keeps or drops them together, on the whole-vocabulary
    path (a radix select on the values' bits) as in the reference and on the top-k candidates, so a
    row draws the same tokens whether or not a neighbour without top_k sends it down that path."""
    from minitflow.engine import sampler
    logits = torch.tensor([1.0, 0.0, -0.0, -0.0, -5.0])  # ahead of the zeros: p(1.0) ~ 0.47 of the total
    p = torch.tensor([[0.5]], dtype=torch.float64)
    assert sampler._nucleus_unsorted(logits[None], p).tolist() == [[True, True, True, True, False]]
    assert set(torch.isfinite(filter_logits(logits, 0, 0.5)).nonzero()[:, 0].tolist()) == {0, 1, 2, 3}
    row = SamplingParams(temperature=1.0, top_k=4, top_p=0.5)
    for partner in (None, SamplingParams(temperature=1.0, seed=1)):  # alone: top-k path; beside: whole vocabulary
        draws = []
        for seed in range(100):
            params = [SamplingParams(**{**row.__dict__, "seed": seed})] + ([partner] if partner else [])
            draws += _draw(params, [logits.expand(len(params), -1)] * 4)[:, 0].tolist()
        assert set(draws) == {0, 1, 2, 3}, partner


def test_a_token_whose_weight_ahead_is_exactly_top_p_stays():
    """The nucleus keeps a token when the weight of the tokens above it is *at most* top_p of the
    total (float64): at exactly top_p x total the token stays on every path (the reference,
    top-k candidates, the unsorted radix select), one ulp of top_p below it goes."""
    import math
    for second in (-0.7, -0.3, -1.1, -0.5, -0.9):
        logits = torch.tensor([0.0, second])
        total = float((logits.double() - logits.max()).exp().sum())  # as the nucleus sums: 1.0 ahead of the 2nd token
        top_p = next((t for t in (1 / total, math.nextafter(1 / total, 1), math.nextafter(1 / total, 0))
                      if t * total == 1.0 and math.nextafter(t, 0) * total < 1.0), None)
        if top_p is not None:
            break
    assert top_p is not None
    for p, kept in ((top_p, {0, 1}), (math.nextafter(top_p, 0), {0})):
        assert set(torch.isfinite(filter_logits(logits, 0, p)).nonzero()[:, 0].tolist()) == kept
        for top_k in (0, 2):  # the whole vocabulary (radix select), the top-k candidates
            params = [SamplingParams(temperature=1.0, top_k=top_k, top_p=p, seed=s) for s in range(200)]
            assert set(_draw(params, [logits.expand(200, 2)]).flatten().tolist()) == kept, (p, top_k)


def test_a_rows_nucleus_does_not_depend_on_the_row_count_that_picks_the_digits():
    """Past 64 rows of a large vocabulary the radix select takes three passes instead of two;
    each row keeps the same tokens as alone."""
    from minitflow.engine.sampler import _digits, _nucleus_unsorted
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(100, 70000, generator=g) * torch.linspace(0.05, 5.0, 100)[:, None]
    top_p = torch.linspace(0.05, 0.999, 100, dtype=torch.float64)[:, None]
    assert len(_digits(1, 70000)) == 2 and len(_digits(100, 70000)) == 3
    together = _nucleus_unsorted(rows, top_p)
    for r in range(0, 100, 9):
        assert torch.equal(together[r], _nucleus_unsorted(rows[r:r + 1], top_p[r:r + 1])[0]), r


def _transformers_scores(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """logits (V,) through transformers' warpers as `generate` builds them for sampling
    (`_get_logits_processor`: temperature, top-k, top-p; min_tokens_to_keep 1), in float32."""
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)
    scores = logits[None].float()
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores[0]


@pytest.mark.parametrize("logits,top_k,top_p", [
    ([2.0, 1.0, 1.0, 1.0, 0.0, 0.0, -1.0, -1.0], 2, 1.0),  # three tied at the 2nd: all stay
    ([1.0, 1.0, 0.0, 0.0, -1.0, -1.0, -2.0, -2.0], 1, 1.0),  # top_k 1 with a tied best: both stay
    ([0.0] * 8, 3, 1.0),                                     # all tied: the whole vocabulary stays
    ([3.0, 2.0] + [0.0] * 6, 3, 0.62),                       # the tied tail counts in the nucleus's total
    ([3.0, 2.0] + [0.0] * 6, 3, 0.61),                       # ... all of it: the 2.0 stays only with the 6th zero
])
def test_every_token_tied_with_the_kth_stays_as_in_transformers(logits, top_k, top_p):
    """transformers' TopKLogitsWarper drops only the tokens below the k-th value, so tokens tied
    with it all stay (`filter_logits` too); the sampler keeps them on the top-k candidates path
    (every row has a top_k; ties past topk(k) included) and on the whole-vocabulary path (a
    neighbour without one), the same token per row on both."""
    logits = torch.tensor(logits)
    rows, steps, vocab = 300, 2, logits.numel()
    want = torch.isfinite(_transformers_scores(logits, 1.0, top_k, top_p))
    assert torch.equal(torch.isfinite(filter_logits(logits, top_k, top_p)), want)
    params = [SamplingParams(temperature=1.0, top_k=top_k, top_p=top_p, seed=s) for s in range(rows)]
    alone = _draw(params, [logits.expand(rows, vocab)] * steps)
    beside = _draw(params + [SamplingParams(temperature=1.0, seed=rows)], [logits.expand(rows + 1, vocab)] * steps)
    assert torch.equal(alone, beside[:, :rows])
    counts = torch.bincount(alone.flatten(), minlength=vocab)
    assert torch.equal(counts > 0, want), counts


def test_ties_past_the_top_k_candidates_compiled_equal_eager():
    """Compiled (and on CUDA) the step always looks for tokens tied with the k-th past the
    candidates; eager CPU looks only when the extra candidate ties it. Same tokens either way:
    rows whose tie runs past topk(kmax + 1), rows with it inside, a smaller top_k beside a
    larger one, a top-p cut, and a greedy row."""
    g = torch.Generator().manual_seed(6)
    logits = (torch.randn(5, 64, generator=g) * 2).round()   # ~10 distinct values: ties everywhere
    logits[0] = 0.0
    logits[1, :3] = 5.0
    params = [SamplingParams(temperature=1.0, top_k=4, seed=0), SamplingParams(temperature=0.7, top_k=2, seed=1),
              SamplingParams(temperature=1.3, top_k=9, top_p=0.6, seed=2), SamplingParams(),
              SamplingParams(temperature=0.9, top_k=1, seed=4)]
    eager, compiled = Sampler(params, CPU), Sampler(params, CPU, compile=True)
    tokens = torch.stack([eager(logits, step) for step in range(8)])
    for step in range(8):
        assert torch.equal(compiled(logits, step), tokens[step])
    assert len(set(tokens[:, 0].tolist())) > 4 and (tokens[:, 0] >= 10).any()  # row 0 draws past topk(kmax + 1)
    assert (tokens[:, 3] == logits[3].argmax()).all()


def test_the_top_k_paths_fused_steps_compiled_equal_eager():
    """On CUDA the tied-past-the-candidates pass and the candidates' filter with its tail are
    torch.compile(dynamic, fullgraph) functions: compiled on CPU, the same count, winner and
    values."""
    from minitflow.engine.sampler import _filter_candidates, _tied_past_candidates
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(3, 300, generator=g) * 2).round()
    vals, ids = torch.topk(logits, 5)
    temperature = torch.tensor([[0.6], [1.0], [1.3]])
    id_hash = _hash32(_bits(torch.arange(300)))
    args = (logits, vals, ids, temperature, torch.tensor([0, 5, 9]), seed_keys([1, 2, 3]), id_hash)
    want = _tied_past_candidates(*args)
    got = torch.compile(_tied_past_candidates.eager, dynamic=True, fullgraph=True)(*args)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and (want[0] > 0).all()
    top_k = torch.tensor([[4], [5], [2]])
    top_p = torch.tensor([[0.9], [float("inf")], [0.5]], dtype=torch.float64)
    want = _filter_candidates(vals, temperature, top_k, top_p, want[0])
    got = torch.compile(_filter_candidates.eager, dynamic=True, fullgraph=True)(vals, temperature, top_k, top_p, got[0])
    assert torch.equal(got, want) and torch.isinf(want).any() and want.shape == (3, 6)


@pytest.mark.parametrize("temperature", [float("nan"), float("inf")])
def test_a_temperature_that_is_not_a_finite_number_is_refused(temperature):
    """nan passed `temperature < 0` and made every scaled logit nan: the argmax on the top-k
    path, token 0 on the others, so a row's token depended on its neighbours. inf scales a
    masked -inf logit to nan, which the argmax then takes: vocab_rows=250 drew id 250.
    (transformers refuses nan; the CLI refuses both already.)"""
    with pytest.raises(UserError, match="temperature must be a finite number >= 0"):
        SamplingParams(temperature=temperature)


def test_a_temperature_past_float32_is_refused_and_the_largest_allowed_keeps_its_filters():
    """1e39 is a finite Python float but inf in the sampler's float32 rows: it was accepted and
    torch refused it when the request took its slot, a RuntimeError traceback that aborted every
    request in flight. The largest allowed still keeps vocab_rows, top_k 1 and a tiny top_p."""
    for t in (1e39, 3.5e38, 1e300):
        with pytest.raises(UserError, match=r"^temperature .* is too large for the sampler's float32 numbers"):
            SamplingParams(temperature=t)
    from minitflow.engine.sampler import MAX_TEMPERATURE
    logits = [_logits(3, 300, seed=s) for s in range(20)]
    argmax = torch.stack([lg.argmax(-1) for lg in logits])  # (steps, rows)
    hot = [SamplingParams(temperature=MAX_TEMPERATURE, seed=s, **kw)
           for s, kw in enumerate([dict(vocab_rows=10), dict(top_k=1), dict(top_p=1e-9)])]
    draws = _draw(hot, logits)
    assert (draws[:, 0] < 10).all() and len(set(draws[:, 0].tolist())) > 3  # every id below 10 about as likely
    assert torch.equal(draws[:, 1:], argmax[:, 1:])


def test_a_seed_outside_64_bits_is_refused():
    """The noise hashes a seed's two 32-bit halves, so a seed outside [0, 2^64) silently drew
    another seed's tokens (-1 those of 2^64 - 1, 2^64 those of 0), and a float failed at the
    first step with a TypeError."""
    for seed in (-1, 2**64, 2**64 + 5, 1.5):
        with pytest.raises(UserError, match=r"seed must be an integer in \[0, 2\^64\)"):
            SamplingParams(temperature=1.0, seed=seed)
    logits = _logits(1, 300, seed=9)
    draws = [_draw([SamplingParams(temperature=1.0, seed=s)], [logits] * 20)[:, 0] for s in (0, 1, 2**64 - 1)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


@pytest.mark.parametrize("field", ["top_k", "max_new_tokens", "vocab_rows"])
def test_a_count_that_is_not_an_integer_is_refused(field):
    """top_k=1.5 was accepted and failed at the first sampling step (torch.topk's TypeError),
    vocab_rows=250.5 was cut to 250 silently (transformers' TopKLogitsWarper refuses a
    non-integer top_k too)."""
    with pytest.raises(UserError, match=f"{field} must be an integer"):
        SamplingParams(temperature=1.0, **{field: 2.5})


def test_a_temperature_too_small_for_float32_is_refused_and_the_smallest_allowed_is_greedy():
    """logits / T overflow float32 below ~1e-37 (inf - inf: NaN) and a wrong token was drawn
    without a word; such a temperature is refused, and MIN_TEMPERATURE still samples the argmax."""
    from minitflow import LLM
    from minitflow.engine.sampler import MIN_TEMPERATURE
    from minitflow.files import demo_dir
    with pytest.raises(UserError, match=r"temperature 1e-38 is too small .*use 0 for greedy"):
        SamplingParams(temperature=1e-38)
    llm = LLM.load(demo_dir(), device="cpu", dtype="float32")
    prompts = ["How many legs do 3 spiders have?", "The blue box holds"]
    greedy = [g.token_ids for g in llm.generate(prompts, SamplingParams(max_new_tokens=6))]
    cold = [g.token_ids for g in llm.generate(prompts, SamplingParams(max_new_tokens=6, temperature=MIN_TEMPERATURE,
                                                                      top_p=0.9, top_k=5))]
    assert cold == greedy


def test_a_top_k_past_the_samplers_range_is_a_one_line_error():
    """top_k >= 2^63 was an OverflowError from the sampler's int64 rows when its request started."""
    for k in (2 ** 31, 2 ** 63, -1):
        with pytest.raises(UserError, match=r"top_k must be in \[0, 2\^31\) \(0 = off\)"):
            SamplingParams(temperature=0.7, top_k=k)
    assert SamplingParams(temperature=0.7, top_k=2 ** 31 - 1).top_k == 2 ** 31 - 1


def test_ignore_eos_that_is_not_a_bool_is_refused():
    """ignore_eos="no" (or "false", a config file's string) is truthy: the row ran past every EOS
    to max_new_tokens without a word. numpy's bools still count."""
    import numpy as np
    for value in ("no", "false", None, 2):
        with pytest.raises(UserError, match=r"^ignore_eos must be True or False, got"):
            SamplingParams(ignore_eos=value)
    assert SamplingParams(ignore_eos=np.True_).ignore_eos is True and SamplingParams().ignore_eos is False


def test_a_bool_in_a_number_field_is_refused_and_a_stop_list_becomes_a_tuple():
    """A bool is an int to Python: max_new_tokens=True ran one token, top_k=True kept one, seed=True
    drew seed 1, without a word. stop=["x"] was kept as a list, which left the frozen params
    unhashable."""
    for field, match in (("max_new_tokens", "max_new_tokens must be an integer"), ("top_k", "top_k must be an integer"),
                         ("vocab_rows", "vocab_rows must be an integer"), ("temperature", "temperature must be a number"),
                         ("top_p", "top_p must be a number"), ("seed", r"seed must be an integer in \[0, 2\^64\)")):
        with pytest.raises(UserError, match=f"^{match}"):
            SamplingParams(**{field: True})
    sp = SamplingParams(stop=["x", "yz"])
    assert sp.stop == ("x", "yz") and hash(sp) == hash(SamplingParams(stop=("x", "yz")))


def test_stop_given_as_an_iterator_keeps_its_strings():
    """stop=iter(["x"]) (or a generator) was used up by the check of its strings and then kept as
    the empty tuple: the row never stopped, without a word. stop=None or a number was a TypeError."""
    assert SamplingParams(stop=iter(["x", "yz"])).stop == ("x", "yz")
    assert SamplingParams(stop=(s for s in ["ab"])).stop == ("ab",)
    for bad in (None, 5, "x", iter(["x", ""])):
        with pytest.raises(UserError, match=r"^stop must be a tuple of non-empty strings, got"):
            SamplingParams(stop=bad)
