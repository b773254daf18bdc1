"""The serving core: continuous batching, per-slot LoRA, the prefix cache, and bad input.

Every request must get exactly the tokens it gets alone, whatever runs beside it and
whenever it is admitted (CPU, float32, tiny random Qwen3)."""

from __future__ import annotations

import re

import pytest
import torch

from minitflow import LLM, SamplingParams, UserError, build_lora
from minitflow.engine.prefix_cache import BLOCK, PrefixCache
from minitflow.engine.request import Request, Status
from minitflow.engine.sampler import Sampler
from minitflow.model.kv_cache import KVCache
from minitflow.model.lora import LoraWeights
from minitflow.model.weights import load_model
from helpers import LateRing, _llm, _prompts, _random_factors


def _params(n: int, sampled: bool) -> list[SamplingParams]:
    lengths = [3, 17, 6, 25, 1, 11, 9, 30][:n]
    if not sampled:
        return [SamplingParams(max_new_tokens=m) for m in lengths]
    return [SamplingParams(max_new_tokens=m, temperature=0.8, top_p=0.9, top_k=40 if i % 2 else 0, seed=100 + i)
            for i, m in enumerate(lengths)]


def _alone(model, prompts, params, lora=None) -> list[list[int]]:
    """Each request in a fresh one-slot engine without a prefix cache: the reference."""
    out = []
    for i, (p, sp) in enumerate(zip(prompts, params)):
        llm = _llm(model, num_slots=1, prefix_cache_bytes=0)
        row = None if lora is None else _one(lora, i)
        out.append(llm.generate([p], sp, lora=row)[0].token_ids)
    return out


def _one(lora, i):
    return lora.row(i)


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("with_lora", [False, True], ids=["plain", "lora"])
@pytest.mark.parametrize("prefix", [False, True], ids=["nocache", "prefixcache"])
def test_each_request_gets_what_it_gets_alone(model, sampled, with_lora, prefix):
    """8 requests of different lengths through 3 slots: admitted as slots free up."""
    prompts, params = _prompts(8), _params(8, sampled)
    lora = None
    if with_lora:
        lora = build_lora(model.cfg, [_random_factors(model.cfg, 8, 4, 5), _random_factors(model.cfg, 8, 4, 6)],
                          [1.0, 1.0])
        # half the requests without factors: their rows carry zeros next to the others
        lora_rows = [_one(lora, i) if i % 2 else None for i in range(8)]
    want = []
    for i, (p, sp) in enumerate(zip(prompts, params)):
        llm = _llm(model, num_slots=1, prefix_cache_bytes=0)
        want.append(llm.generate([p], sp, lora=lora_rows[i] if with_lora else None)[0].token_ids)
    llm = _llm(model, num_slots=3, prefix_cache_bytes=(1 << 24) if prefix else 0)
    reqs = [Request(p, sp, lora=lora_rows[i] if with_lora else None) for i, (p, sp) in enumerate(zip(prompts, params))]
    llm.engine.run(reqs)
    assert [r.output_ids for r in reqs] == want
    cached = [r.cached_tokens for r in reqs]
    if prefix:  # the shared blocks come from the cache once the first request has run (LoRA rows never)
        assert all(c == (0 if with_lora and i % 2 else 2 * BLOCK) for i, c in enumerate(cached) if i >= 3), cached
    else:
        assert cached == [0] * 8


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_folded_lora_gives_what_the_pairs_give(tiny_dir, sampled, monkeypatch):
    """lora_linear.DECODE_LORA "folded": every slot's A beneath its weight, u from the
    projection's own matmul. Each request gets the tokens of the default path (8 requests through
    3 slots: consecutive slots take the folded projection, a gathered set the pairs), the weights
    keep their values while folded, and releasing the engine gives them back tight; the model
    still trains (its weights are not inference tensors)."""
    from minitflow.model import lora_linear
    model = load_model(tiny_dir, torch.float32, "cpu")  # its own: folding re-stores the weights
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prompts, params = _prompts(8), _params(8, sampled)
    lora = build_lora(model.cfg, [_random_factors(model.cfg, 8, 4, 5), _random_factors(model.cfg, 8, 4, 6)], [1.0, 1.0])
    rows = [_one(lora, i) if i % 3 else None for i in range(8)]

    def run(path: str):
        monkeypatch.setattr(lora_linear, "DECODE_LORA", path)
        llm = _llm(model, num_slots=3, prefix_cache_bytes=0)
        reqs = [Request(p, sp, lora=rows[i]) for i, (p, sp) in enumerate(zip(prompts, params))]
        llm.engine.run(reqs)
        return llm, [r.output_ids for r in reqs]

    _, want = run("kernel")
    folds = []
    real = lora_linear.Folded.project
    monkeypatch.setattr(lora_linear.Folded, "project", lambda self, x: folds.append(1) or real(self, x))
    llm, got = run("folded")
    assert got == want and folds
    w = model.layers[0].gate_up_proj.weight
    r = 2 * 2 * 4  # gate and up, two senders of rank 4
    assert w.untyped_storage().nbytes() == (w.shape[0] + 3 * r) * w.shape[1] * w.element_size()  # A beneath W
    assert not w.is_inference()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # another layout (one sender) re-folds: the weights re-stored with its rows, same tokens
    one = build_lora(model.cfg, [_random_factors(model.cfg, 2, 4, 7)], [1.0])
    refolded = [o.token_ids for o in llm.generate(prompts[:2], params[:2], lora=one)]
    w = model.layers[0].gate_up_proj.weight
    assert w.untyped_storage().nbytes() == (w.shape[0] + 3 * 2 * 4) * w.shape[1] * w.element_size()
    monkeypatch.setattr(lora_linear, "DECODE_LORA", "kernel")
    assert refolded == [o.token_ids for o in _llm(model, num_slots=3).generate(prompts[:2], params[:2], lora=one)]
    llm.engine.runner.release_memory()
    assert w is not model.layers[0].gate_up_proj.weight
    w = model.layers[0].gate_up_proj.weight
    assert w.untyped_storage().nbytes() == w.numel() * w.element_size() and not w.is_inference()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    x = torch.randn(1, 3, model.cfg.hidden_size, requires_grad=True)
    model.layers[0].gate_up_proj(x).sum().backward()
    assert x.grad is not None


def test_another_engines_fold_drops_the_captured_graphs(tiny_dir, monkeypatch):
    """Two engines on one model: when one folds LoRA A beneath the weights (DECODE_LORA "folded")
    or gives them back, the parameters are re-stored and the old tensors freed, so the other's
    CUDA graphs, which read the weights by address, are dropped before its next step (they
    replayed freed memory: NaN or another tensor's values). A step with nothing re-stored keeps
    them. CPU captures no graphs: a stand-in entry shows the drop (tests/test_gpu.py replays real ones)."""
    from minitflow.model import lora_linear
    model = load_model(tiny_dir, torch.float32, "cpu")  # its own: folding re-stores the weights
    prompts, params = _prompts(2), _params(2, sampled=False)
    plain = _llm(model, num_slots=2, prefix_cache_bytes=0)
    want = [o.token_ids for o in plain.generate(prompts, params)]
    graphs = plain.engine.runner.graphs
    graphs[("stand-in",)] = None
    assert [o.token_ids for o in plain.generate(prompts, params)] == want and graphs
    monkeypatch.setattr(lora_linear, "DECODE_LORA", "folded")
    lora = build_lora(model.cfg, [_random_factors(model.cfg, 2, 4, 5)], [1.0])
    folding = _llm(model, num_slots=2, prefix_cache_bytes=0)
    folding.generate(prompts, params, lora=lora)
    assert folding.engine.runner.folded is not None and graphs
    assert [o.token_ids for o in plain.generate(prompts, params)] == want and not graphs
    graphs[("stand-in",)] = None
    folding.release_memory()  # the weights given back tight: re-stored again
    assert [o.token_ids for o in plain.generate(prompts, params)] == want and not graphs


def test_factors_of_another_layout_wait_only_for_running_requests(model):
    """LoRA factors of a new layout (another rank) after the old layout's requests finished:
    they used to wait forever for the finished requests' slots. Now they start at once, and
    while a request with the old layout runs they wait for it alone; each gets its tokens."""
    prompts, params = _prompts(3, seed=4), _params(3, sampled=True)
    two = build_lora(model.cfg, [_random_factors(model.cfg, 3, 4, 8), _random_factors(model.cfg, 3, 4, 9)], [1.0, 1.0])
    one = build_lora(model.cfg, [_random_factors(model.cfg, 3, 2, 10)], [1.0])
    want = [_alone(model, prompts[:1], params[:1], lo)[0] for lo in (two, one, two)]
    llm = _llm(model, num_slots=3)

    def run(reqs: list[Request], steps: int) -> None:
        for r in reqs:
            llm.engine.add_request(r)
        for _ in range(steps):
            if not llm.has_unfinished():
                return
            llm.step()
        raise AssertionError("requests still waiting")

    first = Request(prompts[0], params[0], lora=two.row(0))
    run([first], 50)
    late = [Request(prompts[0], params[0], lora=one.row(0)), Request(prompts[0], params[0], lora=two.row(0))]
    run(late[:1], 50)  # the finished request's slot still holds the rank-8 factors
    blocker = Request(prompts[1], SamplingParams(max_new_tokens=20), lora=two.row(1))
    run([blocker, late[1]], 80)  # the same layout: they run side by side
    assert [r.output_ids for r in (first, *late)] == want
    waiting = Request(prompts[2], params[2], lora=one.row(2))
    llm.engine.add_request(blocker2 := Request(prompts[1], SamplingParams(max_new_tokens=6), lora=two.row(1)))
    llm.step()
    llm.engine.add_request(waiting)
    llm.step()
    assert waiting.status is Status.WAITING and blocker2.status is Status.RUNNING
    while llm.has_unfinished():
        llm.step()
    assert waiting.output_ids == _alone(model, prompts[2:], params[2:], one.row(2))[0]


def test_factors_of_another_dtype_run_in_the_models_whatever_ran_before(model):
    """The slot buffers took the dtype of the first factors that made them: float64 factors
    alone failed inside a step (a RuntimeError, float64 buffers against float32 activations),
    yet after a float32 request they ran, rounded into its buffers. Now the buffers are always
    the model's dtype: the same tokens either way, those of the factors rounded to it."""
    prompt, sp = _prompts(1, seed=15)[0], SamplingParams(max_new_tokens=6)
    f32 = build_lora(model.cfg, [_random_factors(model.cfg, 1, 4, 3)], [1.0])
    f64 = LoraWeights([{k: (a.double(), tuple(b.double() for b in bs)) for k, (a, bs) in layer.items()}
                       for layer in f32.layers], 1)
    want = _alone(model, [prompt], [sp], f32)[0]
    assert _alone(model, [prompt], [sp], f64)[0] == want
    llm = _llm(model, num_slots=2)
    llm.generate([prompt], sp, lora=f32)
    assert llm.generate([prompt], sp, lora=f64)[0].token_ids == want


def test_admitted_mid_flight_next_to_others(model):
    """A request added while others decode gets what it gets in an empty engine."""
    prompts, params = _prompts(5, seed=1), _params(5, sampled=True)
    want = _alone(model, prompts, params)
    llm = _llm(model, num_slots=4)
    first = [llm.add_request(p, sp) for p, sp in zip(prompts[:3], params[:3])]
    for _ in range(4):
        llm.step()
    late = [llm.add_request(p, sp) for p, sp in zip(prompts[3:], params[3:])]
    while llm.has_unfinished():
        llm.step()
    assert [r.output_ids for r in first + late] == want
    assert all(r.status is Status.FINISHED for r in first + late)


@pytest.mark.parametrize("seed", range(4))
def test_random_mixes_get_what_each_request_gets_alone(model, seed):
    """Seeded random scenarios for what the hand-picked tests above do not combine: 1-4 slots,
    a tight max_seq_len, EOS ids that stop some rows at their first token, identical prompts,
    prompts ending on, just before and just after a prefix-cache block, greedy and sampled rows
    (top-k 1, low top-p, ignore_eos), LoRA of one layout on some rows, and the same requests
    again, shuffled, through the warm engine. (200 such seeds passed in a side run.)"""
    import random
    rnd = random.Random(seed)
    n, slots = rnd.randint(5, 10), rnd.randint(1, 4)
    eos = rnd.sample(range(150), rnd.choice([0, 3, 8]))
    max_len = rnd.choice([64, 80])
    shared = [rnd.randrange(150) for _ in range(rnd.choice([BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK]))]
    lora = build_lora(model.cfg, [_random_factors(model.cfg, n, 4, seed), _random_factors(model.cfg, n, 4, seed + 1)],
                      [1.0, 1.0])
    prompts, params, rows = [], [], []
    for i in range(n):
        p = shared + [rnd.randrange(150) for _ in range(rnd.choice([0, 1, 5, BLOCK, 20]))]
        if prompts and rnd.random() < 0.2:
            p = list(rnd.choice(prompts))
        m = max(1, min(rnd.choice([1, 2, 7, 20, 40]), max_len - len(p)))
        sp = SamplingParams(max_new_tokens=m) if rnd.random() < 0.4 else SamplingParams(
            max_new_tokens=m, temperature=rnd.choice([0.5, 1.0, 1.5]), top_p=rnd.choice([1.0, 0.9, 0.3]),
            top_k=rnd.choice([0, 1, 5, 40]), seed=rnd.randrange(1000), ignore_eos=rnd.random() < 0.2)
        prompts.append(p), params.append(sp), rows.append(lora.row(i) if rnd.random() < 0.5 else None)

    def alone(eos: list[int]) -> list[list[int]]:
        return [LLM(model, eos_token_ids=eos, num_slots=1, prefix_cache_bytes=0, max_seq_len=max_len)
                .generate([p], sp, lora=r)[0].token_ids for p, sp, r in zip(prompts, params, rows)]

    # a token before the end of two rows' outputs: those rows (at least) stop on it
    free = [out for out, sp in zip(alone([]), params) if len(out) > 1 and not sp.ignore_eos]
    eos += [rnd.choice(out[:-1]) for out in rnd.sample(free, min(2, len(free)))]
    want = alone(eos)
    assert any(len(w) < sp.max_new_tokens for w, sp in zip(want, params)), "no row stopped on EOS"
    llm = LLM(model, eos_token_ids=eos, num_slots=slots, prefix_cache_bytes=1 << 24, max_seq_len=max_len)
    for order in (list(range(n)), rnd.sample(range(n), n)):
        reqs = [Request(prompts[i], params[i], lora=rows[i]) for i in order]
        llm.engine.run(reqs)
        assert [r.output_ids for r in reqs] == [want[i] for i in order]


def test_queue_time_is_the_wait_for_a_slot(model):
    """`queue_s` is from a request's creation to its prefill: a request that finds a free slot
    waits for nothing, one that waits for the only slot waits about as long as its predecessor ran."""
    prompts = _prompts(2, seed=3)
    llm = _llm(model, num_slots=1, prefix_cache_bytes=0)
    reqs = [llm.add_request(p, SamplingParams(max_new_tokens=24)) for p in prompts]
    assert reqs[0].queue_s == 0.0  # not admitted yet
    while llm.has_unfinished():
        llm.step()
    first, second = reqs
    assert first.admitted_t < first.finished_t <= second.admitted_t
    assert second.queue_s >= first.finished_t - first.admitted_t > first.queue_s


def test_a_longer_request_grows_the_cache_without_waiting_for_the_others(model):
    """A request longer than the cache joins at once: the cache grows with the running rows
    copied over (it used to wait until every running request had ended, a stage barrier), and
    every request still gets what it gets alone."""
    prompts, params = _prompts(3, seed=2), _params(3, sampled=True)
    long_prompt = prompts[2] + list(range(40, 140)) * 3  # 300 tokens more: past the first cache's 256
    prompts[2], params[0] = long_prompt, SamplingParams(max_new_tokens=40, temperature=0.8, seed=7)
    want = _alone(model, prompts, params)
    llm = _llm(model, num_slots=3)
    first = [llm.add_request(p, sp) for p, sp in zip(prompts[:2], params[:2])]
    llm.step()
    small = llm.engine.runner.cache.max_len
    late = llm.add_request(prompts[2], params[2])
    llm.step()
    assert late.status is Status.RUNNING and first[0].status is Status.RUNNING  # joined beside it
    assert llm.engine.runner.cache.max_len > small >= first[0].max_len
    while llm.has_unfinished():
        llm.step()
    assert [r.output_ids for r in first + [late]] == want


def test_prefix_cache_logits_match_the_uncached_prefill(model):
    cfg = model.cfg
    ids = _prompts(1, seed=2)[0] + [5, 6, 7]
    store = PrefixCache(1 << 24)

    def fresh():
        return KVCache(cfg.num_hidden_layers, 1, 128, cfg.num_key_value_heads, cfg.head_dim, torch.float32, "cpu")

    full_cache = fresh()
    t = len(ids)
    with torch.no_grad():
        full = model(torch.tensor([ids]), torch.arange(t)[None], full_cache, t)[0, -1]
        store.insert(ids, lambda a, b: full_cache.read(0, a, b))
        n, k, v, _ = store.lookup(ids, t - 1)
        assert n == 2 * BLOCK and k.shape[2] == n
        cache = fresh()
        cache.write(0, 0, k, v)
        part = model(torch.tensor([ids[n:]]), torch.arange(n, t)[None], cache, t)[0, -1]
    assert (part - full).abs().max() <= 1e-5


def test_prefix_cache_lru_budget_and_exact_match():
    block = torch.zeros(1, 1, BLOCK, 2)
    nbytes = 2 * block.numel() * 4
    store = PrefixCache(3 * nbytes)
    a = list(range(3 * BLOCK))
    store.insert(a, lambda s, e: (block.clone(), block.clone()))
    assert store.used == 3 * nbytes and store.lookup(a, len(a))[0] == 3 * BLOCK
    b = [1] + a[1:]  # differs in the first token: nothing matches
    assert store.lookup(b, len(b))[0] == 0
    c = a[:BLOCK] + [999] * BLOCK  # shares one block; storing its second evicts the oldest leaf
    store.insert(c, lambda s, e: (block.clone(), block.clone()))
    assert store.used <= 3 * nbytes
    assert store.lookup(c, len(c))[0] == 2 * BLOCK
    assert store.lookup(a, len(a))[0] == 2 * BLOCK  # a's last block went, its prefix stayed


def test_prefix_cache_counts_condition_rows_in_its_budget_and_a_block_fits_exactly():
    """`used` is the bytes of every entry, condition rows included, within the budget; a
    budget of exactly one block holds one."""
    block = torch.zeros(1, 1, BLOCK, 2)
    kv = 2 * block.numel() * 4
    read = lambda s, e: (block.clone(), block.clone())  # noqa: E731
    ids = list(range(3 * BLOCK))
    rows = torch.ones(3 * BLOCK - 5, 4)  # condition rows of positions 5, 6, ...
    row_bytes = 3 * BLOCK * 4 * 4  # three blocks of rows (the first one's zero-padded), float32
    for budget in (1 << 20, 3 * kv + 2 * BLOCK * 4 * 4):
        store = PrefixCache(budget)
        store.insert(ids, read, cond=("w", 5, rows))
        assert store.used == sum(e.nbytes for e in store.entries.values()) <= budget
    assert store.used < 3 * kv + row_bytes and store.lookup(ids, len(ids))[0] == 2 * BLOCK  # the leaf went
    one = PrefixCache(kv)
    one.insert(ids[:BLOCK], read)
    assert one.used == kv and one.lookup(ids, BLOCK)[0] == BLOCK


def test_prefix_cache_checks_that_a_block_fits_before_copying_its_kv():
    """Insert copied a block's KV out of the slot and only then saw that it could not fit: one
    wasted copy per insert into a cache too small for a block, or full with the prompt's own
    prefix. The engine's KV cache gives the size that a read would copy."""
    block = torch.zeros(1, 1, BLOCK, 2)
    kv = 2 * block.numel() * 4
    reads = []

    def read(s, e):
        reads.append(s)
        return block.clone(), block.clone()
    ids = list(range(3 * BLOCK))
    tiny = PrefixCache(kv - 1)
    tiny.insert(ids, read, block_bytes=kv)
    assert reads == [] and tiny.used == 0
    full = PrefixCache(2 * kv)  # the first two blocks fit; the third would evict its own prefix
    full.insert(ids, read, block_bytes=kv)
    assert reads == [0, BLOCK] and full.used == 2 * kv and full.lookup(ids, len(ids))[0] == 2 * BLOCK
    full.insert(ids, read, block_bytes=kv)
    assert reads == [0, BLOCK]  # the third block was not read again
    cache = KVCache(3, 2, 4 * BLOCK, 2, 8, torch.float16, "cpu")
    k, v = cache.read(1, BLOCK, 2 * BLOCK)
    assert cache.nbytes(BLOCK) == k.numel() * k.element_size() + v.numel() * v.element_size()


def _reachable(store: PrefixCache) -> bool:
    """Every stored block's parent is stored too (none is kept for nothing)."""
    ids = {e.id for e in store.entries.values()}
    return all(parent == 0 or parent in ids for parent, _ in store.entries)


def test_prefix_cache_evicts_leaves_before_their_prefixes():
    """Inserting appended a chain's blocks first to last, so the least recently used was its
    first block: evicting it left its children stored but unreachable. A prompt longer than the
    budget ended with nothing reusable (each new block evicted its own parent), and a second
    prompt sharing the first block evicted the middle of the first one."""
    block = torch.zeros(1, 1, BLOCK, 2)
    nbytes = 2 * block.numel() * 4
    read = lambda s, e: (block.clone(), block.clone())  # noqa: E731
    a = list(range(3 * BLOCK + 1))
    small = PrefixCache(2 * nbytes)
    small.lookup(a, len(a) - 1)  # the engine's order: a lookup, then the insert of what it prefilled
    small.insert(a[:-1], read)
    assert small.lookup(a, len(a) - 1)[0] == 2 * BLOCK and small.used == 2 * nbytes and _reachable(small)
    store = PrefixCache(3 * nbytes)
    for ids in (a, a[:BLOCK] + [999] * BLOCK + [5]):
        store.lookup(ids, len(ids) - 1)
        store.insert(ids[:-1], read)
        assert store.used <= 3 * nbytes and _reachable(store)
    assert store.lookup(a, len(a) - 1)[0] == 2 * BLOCK  # a's leaf went, not the block before it
    assert store.lookup(a[:BLOCK] + [999] * BLOCK + [5], 2 * BLOCK)[0] == 2 * BLOCK


def test_a_prompt_of_whole_blocks_stores_only_the_blocks_its_prefill_wrote(model):
    """A generating request's prefill leaves its last prompt token to the decode step, so a
    prompt of whole blocks stores one block less (its last position has no KV yet): a longer
    prompt behind it, in the same slot, gets what it gets alone."""
    shared = _prompts(1, seed=11)[0][: 2 * BLOCK]
    longer = shared + [5, 6, 7]
    sp = SamplingParams(max_new_tokens=8)
    alone = _llm(model, num_slots=1, prefix_cache_bytes=0)
    want = alone.generate([longer], sp)[0].token_ids
    llm = _llm(model, num_slots=1)
    llm.generate([shared], sp)
    got = llm.generate([longer], sp)[0]
    assert got.token_ids == want and got.cached_tokens == BLOCK
    for kv, kv_alone in zip(llm.engine.runner.cache.read(0, 0, len(longer)),
                            alone.engine.runner.cache.read(0, 0, len(longer))):
        assert (kv - kv_alone).abs().max() <= 1e-5  # the prompt's keys and values, as computed alone


def test_a_cached_prefill_walks_each_prompt_once_to_admit_it_and_once_to_store_it(model, monkeypatch):
    """Host work per request of a cached prefill: admission's questions (what its prefill costs,
    whether it waits) and its lookup share one walk of its prefix-cache chain (each walked it
    again), the insert walks it once, and `run` checks each request once (add_request checked it
    again); what the requests get stays as it was."""
    prompts = _prompts(4, seed=5)
    llm = _llm(model, num_slots=4)
    llm.engine.run([Request(p, generate=False) for p in prompts])  # the shared blocks are in the cache
    walks, checks = [], []
    chain, check = PrefixCache._chain, type(llm.engine).check
    monkeypatch.setattr(PrefixCache, "_chain", lambda self, ids, *a, **kw: (walks.append(ids), chain(self, ids, *a, **kw))[1])
    monkeypatch.setattr(type(llm.engine), "check", lambda self, r: (checks.append(r), check(self, r))[1])
    reqs = llm.engine.run([Request(p, generate=False) for p in prompts])
    assert [r.cached_tokens for r in reqs] == [(len(p) - 1) // BLOCK * BLOCK for p in prompts]  # every whole block
    assert [r.finish_reason for r in reqs] == ["prefill"] * 4
    assert sorted(map(tuple, walks)) == sorted(tuple(p) for p in prompts * 2) and checks == reqs


def test_the_prefill_budget_fills_up_exactly_and_admits_a_longer_head_alone():
    """Admission stops before the prompt that would pass the prefill token budget (one that
    reaches it exactly still joins), and a head of the queue longer than the whole budget is
    admitted alone rather than never."""
    from minitflow.engine.scheduler import Scheduler
    sched = Scheduler(4, max_prefill_tokens=10)
    for n in (4, 6, 3, 25, 1):
        sched.add(Request(list(range(n))))

    def admit() -> list[int]:
        return [len(r.prompt_ids) for r in sched.admit(lambda r: True)]

    assert admit() == [4, 6]
    assert admit() == [3]
    assert admit() == [25]
    assert admit() == [] and len(sched.waiting) == 1  # no slot left
    sched.release(sched.running[0])
    assert admit() == [1]


def test_a_freed_slot_goes_to_the_next_request_lowest_first_without_its_lora(model, monkeypatch):
    """Requests take the lowest free slots, and freed slots go back in order whatever order
    their requests finished in (the eager step runs the first n slots as a view when they are
    all in use). A plain request in the slot of a finished LoRA request gets its plain tokens,
    and once no running request has factors the decode steps run without LoRA."""
    prompts = _prompts(5, seed=12)
    # ignore_eos: each runs its max_new_tokens, so the order they finish in is the one planned below
    params = [SamplingParams(max_new_tokens=m, ignore_eos=True) for m in (4, 12, 2, 3, 3)]
    loras = [build_lora(model.cfg, [_random_factors(model.cfg, 1, 4, 3)], [1.0]).row(0)] + [None] * 4
    want = [_llm(model, num_slots=1, prefix_cache_bytes=0).generate([p], sp, lora=lo)[0].token_ids
            for p, sp, lo in zip(prompts, params, loras)]
    llm = _llm(model, num_slots=3)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda ids, *a, **kw: calls.append(kw.get("lora") is not None)
                        or forward(ids, *a, **kw))
    reqs = [Request(p, sp, lora=lo) for p, sp, lo in zip(prompts, params, loras)]
    for r in reqs[:3]:
        llm.engine.add_request(r)
    while not reqs[0].finished:  # reqs[2] (slot 2) ends first, then reqs[0] (slot 0)
        llm.step()
    assert reqs[2].finished and any(calls)
    for r in reqs[3:]:
        llm.engine.add_request(r)
    since = len(calls)
    while llm.has_unfinished():
        llm.step()
    assert [r.slot for r in reqs] == [0, 1, 2, 0, 2]
    assert [r.output_ids for r in reqs] == want
    assert not any(calls[since:])


def test_the_models_own_eos_ids_stop_a_generation(model, monkeypatch):
    """LLM stops on the config's eos_token_id as well as on the ids it is given (the tests'
    LLMs pass none)."""
    from dataclasses import replace
    prompt = _prompts(1, seed=14)[0]
    sp = SamplingParams(max_new_tokens=8)
    free = _llm(model).generate([prompt], sp)[0].token_ids
    monkeypatch.setattr(model, "cfg", replace(model.cfg, eos_token_ids=(free[2],)))
    got = _llm(model).generate([prompt], sp)[0]
    assert (got.token_ids, got.finish_reason) == (free[: free.index(free[2]) + 1], "stop")


def test_static_mode_matches_and_computes_more_rows(model):
    prompts = _prompts(6, seed=3)
    params = [SamplingParams(max_new_tokens=m, ignore_eos=True) for m in (2, 2, 2, 2, 2, 40)]
    runs = {}
    for static in (False, True):
        llm = _llm(model, num_slots=3, static=static)
        gens = llm.generate(prompts, params)
        e = llm.engine
        runs[static] = ([g.token_ids for g in gens], e.useful_row_steps, e.row_steps)
    assert runs[False][0] == runs[True][0]
    assert runs[False][1] == runs[True][1]  # the same useful work
    assert runs[False][2] < runs[True][2]  # static keeps finished rows computing


def test_static_mode_rows_of_requests_finished_at_the_cache_end_stay_inside_it(model):
    """Static shapes keep a finished request's row computing while others run: its position
    must stop at the cache's last row, or the next steps write past the cache (max_seq_len)."""
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 150, (10,), generator=g).tolist(), torch.randint(0, 150, (2,), generator=g).tolist()]
    params = [SamplingParams(max_new_tokens=2, ignore_eos=True), SamplingParams(max_new_tokens=10, ignore_eos=True)]
    alone = [_llm(model, num_slots=1, max_seq_len=12).generate([p], [sp])[0].token_ids for p, sp in zip(prompts, params)]
    both = _llm(model, num_slots=2, max_seq_len=12, static=True).generate(prompts, params)
    assert [o.token_ids for o in both] == alone and [len(t) for t in alone] == [2, 10]


def test_static_mode_admits_a_batch_only_into_an_empty_engine(model):
    """static=True: a slot freed by a finished request stays empty until the whole batch is
    done, and every request still gets what it gets alone."""
    prompts = _prompts(4, seed=13)
    params = [SamplingParams(max_new_tokens=m) for m in (2, 6, 3, 3)]
    want = _alone(model, prompts, params)
    llm = _llm(model, num_slots=2, static=True)
    reqs = [llm.add_request(p, sp) for p, sp in zip(prompts, params)]
    for _ in range(40):
        if not llm.has_unfinished():
            break
        llm.step()
        if not reqs[1].finished:
            assert reqs[2].status is Status.WAITING and reqs[3].status is Status.WAITING
    assert [r.output_ids for r in reqs] == want
    assert (llm.engine.useful_row_steps, llm.engine.row_steps) == (2 + 6 + 3 + 3, 2 * 6 + 2 * 3)


def test_ragged_batch_longest_prompt_stops_first(model):
    """The longest prompt with the smallest max_new_tokens (crashed the old eager path)."""
    prompts = [list(range(1, 40)), [3, 4], [5, 6, 7]]
    params = [SamplingParams(max_new_tokens=2), SamplingParams(max_new_tokens=30), SamplingParams(max_new_tokens=20)]
    got = [g.token_ids for g in _llm(model, num_slots=3).generate(prompts, params)]
    assert got == _alone(model, prompts, params)
    assert [len(t) for t in got] == [2, 30, 20]


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_compiled_rows_crossing_a_bucket_match_alone(model, sampled):
    """Compiled decode (CPU; model and sampler in one graph): the longest prompt has the smallest
    max_new_tokens and crosses the 256-position attention bucket; finished rows must not disturb
    the others."""
    prompts = [[(7 * i) % 150 for i in range(250)], [1, 2, 3], [9, 8, 7, 6]]
    extra = dict(temperature=0.8, top_p=0.9, seed=5) if sampled else {}
    params = [SamplingParams(max_new_tokens=n, **extra) for n in (10, 24, 16)]
    compiled = LLM(model, eos_token_ids=[], compile=True, num_slots=4)
    got = [g.token_ids for g in compiled.generate(prompts, params)]
    assert got == _alone(model, prompts, params)


def test_greedy_ties_take_the_first_index():
    sampler = Sampler([SamplingParams(), SamplingParams()], torch.device("cpu"))
    logits = torch.zeros(2, 10)
    logits[0, [3, 7]] = 5.0
    logits[1, [0, 9]] = 2.0
    assert sampler(logits, 0).tolist() == [3, 0]
    assert sampler(logits.to(torch.bfloat16), 1).tolist() == [3, 0]


def test_bad_requests_are_one_line_errors_naming_the_request(model):
    from minitflow import Capture
    llm = _llm(model, num_slots=2, max_seq_len=64)
    with pytest.raises(UserError, match=r"request \d+ \(q7\): the prompt is empty"):
        llm.engine.add_request(Request([], SamplingParams(), tag="q7"))
    with pytest.raises(UserError, match=r"request \d+ \(long\): 60 prompt tokens \+ max_new_tokens 8 is more than the cache's 64"):
        llm.engine.add_request(Request(list(range(60)), SamplingParams(max_new_tokens=8), tag="long"))
    bad = build_lora(model.cfg, [_random_factors(model.cfg, 2, 4, 1)], [1.0])
    with pytest.raises(UserError, match=r"request \d+ \(lora\): LoRA factors must be for batch 1"):
        llm.engine.add_request(Request([1, 2], SamplingParams(max_new_tokens=4), lora=bad, tag="lora"))
    row = _one(bad, 0)
    row.layers[0]["o"] = (row.layers[0]["o"][0][:, :, :5], row.layers[0]["o"][1])
    with pytest.raises(UserError, match=r"LoRA factors of layer 0 o: A \(1, 4, 5\)"):
        llm.engine.add_request(Request([1, 2], SamplingParams(max_new_tokens=4), lora=row, tag="shape"))
    assert not llm.has_unfinished()
    # the boundaries: the first id past the vocabulary, and a prompt plus new tokens one past the cache
    with pytest.raises(UserError, match=rf"request \d+ \(top\): token id {model.cfg.vocab_size} outside the model's "
                                        rf"vocabulary of {model.cfg.vocab_size}"):
        llm.engine.add_request(Request([1, model.cfg.vocab_size], tag="top"))
    with pytest.raises(UserError, match=r"request \d+ \(neg\): token id -1 outside"):
        llm.engine.add_request(Request([-1, 2], tag="neg"))
    with pytest.raises(UserError, match=r"57 prompt tokens \+ max_new_tokens 8 is more than the cache's 64"):
        llm.engine.add_request(Request(list(range(57)), SamplingParams(max_new_tokens=8)))
    vocab = model.cfg.vocab_size  # the judger's vocab_rows past the model's rows: no row to draw from
    with pytest.raises(UserError, match=rf"^request \d+ \(rows\): vocab_rows {vocab + 1} is more than the model's "
                                        rf"vocabulary of {vocab}$"):
        llm.engine.add_request(Request([1, 2], SamplingParams(max_new_tokens=4, vocab_rows=vocab + 1), tag="rows"))
    for starts, ends in (([0], [3]), ([2], [2]), ([0, 1], [1, 2])):  # past the prompt, empty, two spans
        with pytest.raises(UserError, match=r"^request \d+ \(span\): capture span .* is not one span inside its 2 "
                                            r"prompt tokens$"):
            llm.add_request([1, 2], generate=False, capture=Capture([0], starts, ends), tag="span")
    for group, blocks in (("qk", 2), ("qkv", 2)):  # a group the decoder has no weight for, or a block short
        row = _one(build_lora(model.cfg, [_random_factors(model.cfg, 1, 4, 1)], [1.0]), 0)
        row.layers[1][group] = (row.layers[1]["qkv"][0], row.layers[1]["qkv"][1][:blocks])
        with pytest.raises(UserError, match=rf"^request \d+ \(group\): layer 1 has an unknown LoRA group '{group}'$"):
            llm.engine.add_request(Request([1, 2], SamplingParams(max_new_tokens=4), lora=row, tag="group"))
    assert not llm.has_unfinished()
    assert llm.engine.add_request(Request([1, 2], SamplingParams(max_new_tokens=4, vocab_rows=vocab), tag="all"))
    llm.abort_all()
    fits = Request(list(range(56)), SamplingParams(max_new_tokens=8))  # exactly the cache's positions
    llm.engine.run([fits])
    assert len(fits.output_ids) == 8 and fits.finish_reason == "length"


def test_a_request_runs_once(model):
    """A Request run again appended a second output to its first; one listed twice decoded in two
    slots into one output, and its first slot stayed taken for good (has_unfinished() True
    forever). Now a request that ran or runs is refused, and one queued twice runs once."""
    llm = _llm(model, num_slots=2)
    sp = SamplingParams(max_new_tokens=5)
    want = llm.generate([[5, 6, 7]], sp)[0].token_ids
    r = Request([5, 6, 7], sp, tag="again")
    llm.engine.run([r, r])
    assert r.output_ids == want and not llm.has_unfinished() and llm.engine.scheduler.free == [0, 1]
    with pytest.raises(UserError, match=r"request \d+ \(again\): it has already run or is running \(finished\)"):
        llm.engine.run([r])
    assert r.output_ids == want
    running = llm.engine.add_request(Request([5, 6, 7], SamplingParams(max_new_tokens=20)))
    llm.step()
    with pytest.raises(UserError, match=r"it has already run or is running \(running\)"):
        llm.engine.add_request(running)
    while llm.has_unfinished():
        llm.step()
    assert len(running.output_ids) == 20 and llm.generate([[5, 6, 7]], sp)[0].token_ids == want


def test_a_request_brings_no_run_state_and_its_flags_are_bools(model):
    """A Request built with run state: cached_tokens=2 (as if the prefix cache held them) skipped
    the first two prompt tokens' prefill and the row decoded other tokens without a word; text= and
    finish_reason= came back as the run's; id=7 twice gave two requests one id; generate="no" (a
    truthy string) generated. The engine's fields are not Request's (nor LLM.add_request's)
    arguments: Python's TypeError; set on a built Request, or a flag that is not a bool, the engine
    refuses it before the request queues."""
    llm = _llm(model, num_slots=1, prefix_cache_bytes=0)
    sp = SamplingParams(max_new_tokens=4)
    for name, value in (("cached_tokens", 2), ("text", "x"), ("finish_reason", "stop"), ("id", 7), ("arrival_t", 0.0),
                        ("status", Status.WAITING), ("slot", 0), ("output_ids", [1]), ("admitted_t", 1.0)):
        with pytest.raises(TypeError, match=rf"__init__\(\) got an unexpected keyword argument '{name}'"):
            Request([1, 2, 3, 4, 5], sp, **{name: value})
        with pytest.raises(TypeError, match=rf"add_request\(\) got an unexpected keyword argument '{name}'"):
            llm.add_request([1, 2, 3, 4, 5], sp, **{name: value})
    for name, value in (("cached_tokens", 2), ("text", "x"), ("finish_reason", "stop")):
        req = Request([1, 2, 3, 4, 5], sp)
        setattr(req, name, value)
        with pytest.raises(UserError, match=rf"^request \d+: {name} is what the engine sets"):
            llm.engine.add_request(req)
    for bad, match in ((dict(generate="no"), "generate must be True or False, got 'no'"),
                       (dict(prefix_cache="off"), "prefix_cache must be True or False, got 'off'")):
        with pytest.raises(UserError, match=r"^request \d+: " + match):
            llm.engine.add_request(Request([1, 2, 3, 4, 5], sp, **bad))
        with pytest.raises(UserError, match=r"^request \d+: " + match):
            llm.add_request([1, 2, 3, 4, 5], sp, **bad)
    assert not llm.has_unfinished()
    llm.add_request([1, 2, 3, 4, 5], sp, generate=False, prefix_cache=False)  # bools pass
    llm.step()


def test_engine_sizes_are_integers_in_range(model):
    """num_slots=2.5 and max_seq_len=20.5 were TypeErrors from torch, prefix_cache_bytes=None one at
    the first prefill (after the LLM was made), and max_seq_len=-3 refused every request by its length."""
    import numpy as np
    positions = model.cfg.max_position_embeddings
    for kw, match in ((dict(num_slots=2.5), "num_slots must be an integer >= 1, got 2.5"),
                      (dict(num_slots=True), "num_slots must be an integer >= 1, got True"),
                      (dict(prefix_cache_bytes=None), "prefix_cache_bytes must be an integer >= 0, got None"),
                      (dict(prefix_cache_bytes=-1), "prefix_cache_bytes must be an integer >= 0, got -1"),
                      (dict(max_seq_len=-3), "max_seq_len must be an integer >= 1, got -3"),
                      (dict(max_seq_len=20.5), "max_seq_len must be an integer >= 1, got 20.5"),
                      (dict(max_seq_len="64"), "max_seq_len must be an integer >= 1, got '64'"),
                      (dict(max_seq_len=positions + 1), f"max_seq_len {positions + 1} exceeds the model's {positions} positions")):
        with pytest.raises(UserError, match="^" + re.escape(match) + "$"):
            _llm(model, **kw)
    assert _llm(model, max_seq_len=positions).max_seq_len == positions  # the rotary tables' last position: fits
    llm = _llm(model, num_slots=np.int64(2), max_seq_len=np.int64(32), prefix_cache_bytes=np.int64(0))
    assert llm.max_seq_len == 32 and llm.generate([[1, 2, 3]], SamplingParams(max_new_tokens=2))[0].completion_tokens == 2


@pytest.mark.parametrize("inference", [False, True], ids=["tensor", "inference_tensor"])
def test_layer_weights_changed_in_place_are_not_served_from_the_prefix_cache(model, inference):
    """The prefix cache keeps summed condition rows under the layer weights' values, read once per
    weights tensor: a sweep that changed one tensor in place (or kept it and changed the layers)
    got the rows of the first values back for every cached block. Each must equal that layer alone.
    An inference tensor (made and changed under torch.inference_mode) has no version counter to
    show the change: its rows are not cached (they were, and the sweep got layer 0's each time)."""
    from contextlib import nullcontext

    from minitflow import Capture
    llm = _llm(model, num_slots=2)
    p = torch.randint(0, 150, (3 * BLOCK + 5,), generator=torch.Generator().manual_seed(3)).tolist()
    span = dict(starts=[2], ends=[len(p) - 1])
    n = model.cfg.num_hidden_layers
    alone = [llm.capture_hidden([p], Capture(layers=[i], **span)).hidden[:, 0] for i in range(n + 1)]
    mode = torch.inference_mode if inference else nullcontext
    with mode():
        w = torch.zeros(n + 1)
    for i in range(n + 1):
        with mode():
            w.zero_()
            w[i] = 1.0
        got = llm.capture_hidden([p], Capture(layers=list(range(n + 1)), layer_weights=w, **span))
        assert got.hidden.shape == alone[i].shape and torch.allclose(got.hidden, alone[i], atol=1e-6), i
    with mode():
        one = torch.ones(1)
    for i in range(n + 1):
        got = llm.capture_hidden([p], Capture(layers=[i], layer_weights=one, **span))
        assert torch.allclose(got.hidden, alone[i], atol=1e-6), i


def test_requests_that_finish_inside_generate_come_out_of_the_next_step(model):
    """generate() steps the engine until its own requests are done; others that finished meanwhile
    were returned to nobody: a caller streaming with step() never saw them, and run_method, whose
    on_result called generate(), waited for its question forever."""
    llm = _llm(model, num_slots=3)
    mine = llm.add_request([5, 6, 7], SamplingParams(max_new_tokens=2))
    llm.step()
    out = llm.generate([[8, 9, 10]], SamplingParams(max_new_tokens=6, ignore_eos=True))
    assert mine.finished and out[0].completion_tokens == 6
    assert llm.has_unfinished() and llm.step() == [mine]
    assert not llm.has_unfinished() and llm.step() == []
    other = llm.add_request([5, 6, 7], SamplingParams(max_new_tokens=2))
    llm.generate([[8, 9, 10]], SamplingParams(max_new_tokens=6, ignore_eos=True))
    llm.engine.abort_all()  # its caller unwinds: the next caller's step() does not get it
    assert other.finished and not llm.has_unfinished() and llm.step() == []


def test_capture_takes_numpy_layers_and_spans(model):
    """Capture(layers=np.arange(L + 1), ...) was a ValueError (the truth value of an array) from
    the engine's check: the same hidden states as from lists now."""
    import numpy as np
    from minitflow import Capture
    llm = _llm(model, num_slots=2)
    prompts, n = [[5, 6, 7, 8, 9], [10, 11, 12]], model.cfg.num_hidden_layers
    want = llm.capture_hidden(prompts, Capture(layers=list(range(n + 1)), starts=[0, 1], ends=[5, 3])).hidden
    got = llm.capture_hidden(prompts, Capture(layers=np.arange(n + 1), starts=np.array([0, 1]), ends=np.array([5, 3])))
    assert torch.equal(got.hidden, want)
    w = torch.softmax(torch.randn(n + 1), 0)
    summed = llm.capture_hidden(prompts, Capture(layers=np.arange(n + 1), starts=[0, 1], ends=[5, 3], layer_weights=w))
    assert torch.allclose(summed.hidden, (w[None, :, None, None] * want).sum(1), atol=1e-5)


def test_two_threads_generating_on_one_llm_get_the_tokens_each_gets_alone(model):
    """Two threads' generate() on one LLM stepped the same slots, sampler rows and token ring at
    once: both got wrong tokens without a word (or an exception from deep inside). Now the
    engine is one thread's at a time and the second call waits its turn."""
    import sys
    import threading
    llm = _llm(model, num_slots=4)
    prompts = _prompts(8, seed=3)
    sps = [SamplingParams(max_new_tokens=20, temperature=0.8, seed=i) for i in range(8)]
    want = [g.token_ids for g in llm.generate(prompts, sps)]
    got, errors = {}, []

    def work(k: int) -> None:
        try:
            got[k] = [g.token_ids for g in llm.generate(prompts[k::2], sps[k::2])]
        except BaseException as e:  # reported below: a thread swallows it
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads switch every few bytecodes: their steps interleave
    try:
        for _ in range(2):
            threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors and got == {0: want[0::2], 1: want[1::2]}
    finally:
        sys.setswitchinterval(interval)
    assert not llm.has_unfinished()


def test_release_memory_refuses_while_requests_run(model):
    """release_memory() between steps dropped the running request's KV cache: the next step() was
    a bare AssertionError and aborted it. Now it is refused, and the request runs on."""
    llm = _llm(model, num_slots=2)
    sp = SamplingParams(max_new_tokens=8)
    want = llm.generate([[5, 6, 7]], sp)[0].token_ids
    r = llm.add_request([5, 6, 7], sp)
    llm.step()
    with pytest.raises(UserError, match=r"^release_memory\(\) with requests running would drop their KV cache"):
        llm.release_memory()
    while llm.has_unfinished():
        llm.step()
    assert r.output_ids == want
    llm.release_memory()
    assert llm.generate([[5, 6, 7]], sp)[0].token_ids == want


def test_generate_refuses_one_prompt_in_place_of_the_list(model):
    """generate("text") ran one prompt per character, generate(ids) was a TypeError from deep
    inside, and a numpy array of prompts an ambiguous-truth ValueError. Now the first two are
    one-line errors and an array of prompts runs as its rows."""
    import numpy as np
    llm = _llm(model, num_slots=2)
    with pytest.raises(UserError, match=r"^prompts is one string: pass a list of prompts"):
        llm.generate("hi", SamplingParams(max_new_tokens=2))
    for ids in ([5, 6, 7], np.array([5, 6, 7]), torch.tensor([5, 6, 7])):
        with pytest.raises(UserError, match=r"^prompts holds token ids, not prompts"):
            llm.generate(ids, SamplingParams(max_new_tokens=2))
    want = [g.token_ids for g in llm.generate([[5, 6, 7], [8, 9, 10]], SamplingParams(max_new_tokens=3))]
    assert [g.token_ids for g in llm.generate(np.array([[5, 6, 7], [8, 9, 10]]), SamplingParams(max_new_tokens=3))] == want
    assert not llm.has_unfinished()


def test_a_prompt_of_sequences_is_refused_not_read_as_their_ids(model):
    """as_index took a one-element tensor's value, so a 2-D tensor of one column as one prompt ran as its rows'
    ids ([[1], [2], [3]] as the prompt 1, 2, 3), as did a list of one-element tensors; a wider 2-D tensor and a
    nested list were refused as "neither text nor integer token ids". Each is one line naming the prompt.
    A 2-D tensor or array as the prompts (rows = prompts) still runs."""
    import numpy as np
    llm = _llm(model, num_slots=2)
    sp = SamplingParams(max_new_tokens=3)
    for bad in (torch.tensor([[5], [6], [7]]), torch.tensor([[5, 6], [7, 8]]), np.array([[5], [6]]), [[5], [6]],
                [[5, 6], [7]], [torch.tensor([5]), torch.tensor([6])], [5, (6,)]):
        with pytest.raises(UserError, match=r"^prompt 1 is not one sequence of token ids \(an element of it is "
                                            r".*\): pass one list of ids per prompt$"):
            llm.generate([[5, 6], bad], sp)
        with pytest.raises(UserError, match=r"^prompt 0 is not one sequence of token ids"):
            llm.add_request(bad, sp)
    want = [g.token_ids for g in llm.generate([[5, 6], [7, 8]], sp)]
    for prompts in (torch.tensor([[5, 6], [7, 8]]), np.array([[5, 6], [7, 8]]), [[torch.tensor(5), np.int64(6)], [7, 8]]):
        assert [g.token_ids for g in llm.generate(prompts, sp)] == want
    assert not llm.has_unfinished()


def test_token_ids_that_are_not_integers_are_refused_not_cut(model):
    """int() made 5.9 token 5 and b"hi" the ids 104, 105 (its bytes), and the rows ran on; None
    was a TypeError. A bool (a mask passed as ids) ran as token 0 or 1 through operator.index.
    Integer ids of numpy or torch still run as lists do."""
    import numpy as np
    llm = _llm(model, num_slots=2)
    sp = SamplingParams(max_new_tokens=3)
    for bad in ([5.9, 6.0], b"hi", None, torch.tensor([5.0, 6.0]), ["5"], [True, 5], torch.tensor([True, False])):
        with pytest.raises(UserError, match=r"^prompt 1 is neither text nor integer token ids"):
            llm.generate([[5, 6], bad], sp)
        with pytest.raises(UserError, match=r"^prompt 0 is neither text nor integer token ids"):
            llm.add_request(bad, sp)
    want = llm.generate([[5, 6, 7]], sp)[0].token_ids
    for ids in ([np.int64(5), 6, 7], np.array([5, 6, 7], dtype=np.int32), torch.tensor([5, 6, 7])):
        assert llm.generate([ids], sp)[0].token_ids == want
    assert not llm.has_unfinished()


def test_sampling_that_is_not_sampling_params_is_refused(model):
    """generate(prompts, None) was a TypeError and a dict of settings an AttributeError from the
    engine's check; run_method's list of None an AttributeError reading its seed. add_request
    (LLM's or the engine's) with None or a dict was the same AttributeError from the check."""
    llm = _llm(model, num_slots=2)
    for bad, name in ((None, "NoneType"), ({"max_new_tokens": 3}, "dict"), ([SamplingParams(), None], "NoneType")):
        with pytest.raises(UserError, match=rf"^sampling must be a SamplingParams or a list of one per prompt, got {name}"):
            llm.generate([[5, 6], [7, 8]], bad)
    for bad, name in ((None, "NoneType"), ({"max_new_tokens": 3}, "dict")):  # add_request: an AttributeError
        with pytest.raises(UserError, match=rf"^request \d+: sampling must be a SamplingParams, got {name}"):
            llm.add_request([5, 6], bad)
    assert not llm.has_unfinished()


def test_sampling_given_as_a_generator_of_params_runs(model):
    """4c537e2 took only a list or tuple as one SamplingParams per prompt: a generator of them
    (`(replace(sp, seed=i) for i in range(n))`), which list() took before, was refused as 'got
    generator'. run_method takes the same shapes through the same helper (sampler.per_row)."""
    llm = _llm(model, num_slots=2)
    sps = [SamplingParams(max_new_tokens=4, temperature=0.8, seed=i) for i in range(2)]
    want = [g.token_ids for g in llm.generate([[5, 6], [7, 8]], sps)]
    assert [g.token_ids for g in llm.generate([[5, 6], [7, 8]], (sp for sp in sps))] == want
    with pytest.raises(UserError, match=r"^1 sampling params for 2 prompts"):
        llm.generate([[5, 6], [7, 8]], iter(sps[:1]))
    assert not llm.has_unfinished()


@pytest.mark.parametrize("layers, weights", [([0, 5], None), ([1, 1], None), ([], None), ([0, 1], 3)],
                         ids=["past-the-last", "twice", "none", "weights-of-three"])
def test_a_capture_of_layers_the_model_has_not_is_refused_before_it_runs(model, layers, weights):
    """Capture layers past the model's, a layer named twice or none failed inside the prefill (a
    TypeError from stacking a layer never taken), aborting the requests beside it; layer weights
    of another length were read in part. Now the request is refused when added, and the
    neighbour runs on."""
    from minitflow.model.qwen3 import Capture
    llm = _llm(model, num_slots=2)
    prompt, sp = _prompts(1, seed=16)[0], SamplingParams(max_new_tokens=6)
    other = llm.engine.add_request(Request(prompt, sp))
    llm.step()
    w = None if weights is None else torch.ones(weights) / weights
    bad = Request([4, 5, 6, 7], capture=Capture(layers, [0], [3], layer_weights=w), generate=False, tag="sender")
    with pytest.raises(UserError, match=rf"request \d+ \(sender\): capture layers {re.escape(str(layers))} .* "
                                        rf"model's {model.cfg.num_hidden_layers} layers"):
        llm.engine.add_request(bad)
    while llm.has_unfinished():
        llm.step()
    assert other.output_ids == _alone(model, [prompt], [sp])[0]


def test_a_capture_into_the_callers_tensor_holds_what_the_capture_takes(model):
    """Capture.out: the prefill writes each request's layers into the caller's tensor (training's
    senders: one batch made outside inference mode, no copy after), the values a capture
    without it takes, for two requests of different spans in one prefill; an out of another
    shape, or with layer weights, is refused when the request is added."""
    from minitflow.model.qwen3 import Capture
    llm, cfg = _llm(model, num_slots=2), model.cfg
    layers, spans = [0, 1, cfg.num_hidden_layers], [(1, 6), (2, 4)]
    prompts = [list(range(3, 11)), list(range(20, 26))]
    plain = [Request(p, capture=Capture(layers, [s], [e]), generate=False) for p, (s, e) in zip(prompts, spans)]
    llm.engine.run(plain)
    batch = torch.full((2, len(layers), 5, cfg.hidden_size), 7.0)
    into = [Request(p, capture=Capture(layers, [s], [e], out=[batch[i, :, :e - s]]), generate=False)
            for i, (p, (s, e)) in enumerate(zip(prompts, spans))]
    llm.engine.run(into)
    for i, (r, (s, e)) in enumerate(zip(plain, spans)):
        assert torch.equal(batch[i, :, :e - s], r.capture.hidden[0])
        assert into[i].capture.hidden.data_ptr() == batch[i].data_ptr()
    assert (batch[1, :, 2:] == 7).all()  # past the span: as the caller left it
    for out, w in (([torch.zeros(len(layers), 4, cfg.hidden_size)], None),
                   ([torch.zeros(len(layers), 5, cfg.hidden_size)], torch.ones(len(layers)) / len(layers))):
        bad = Request(prompts[0], capture=Capture(layers, [1], [6], layer_weights=w, out=out), generate=False, tag="s")
        with pytest.raises(UserError, match=r"request \d+ \(s\): capture out must be one tensor of shape"):
            llm.engine.add_request(bad)
    with pytest.raises(UserError, match=r"^capture.out is for engine requests"):  # not silently dropped
        llm.capture_hidden(prompts, Capture(layers, [1, 2], [6, 4], out=[batch[0, :, :5], batch[1, :, :2]]))


def test_an_exception_inside_a_step_leaves_the_engine_usable(model, monkeypatch):
    llm = _llm(model, num_slots=2)
    prompts, params = _prompts(3, seed=4), _params(3, sampled=False)
    want = [g.token_ids for g in llm.generate(prompts, params)]
    real = llm.engine.runner.decode
    calls = {"n": 0}

    def flaky(slots):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(slots)

    monkeypatch.setattr(llm.engine.runner, "decode", flaky)
    with pytest.raises(KeyboardInterrupt):
        llm.generate(prompts, params)
    assert not llm.has_unfinished()
    assert [g.token_ids for g in llm.generate(prompts, params)] == want


@pytest.mark.parametrize("sampled", [False, True])
def test_nan_logits_are_refused_naming_the_request(model, sampled):
    """NaN LoRA factors (or weights, or float16 overflow) gave NaN logits, which decoded as a run of
    token 0 without a word; now the request is named, and the engine stays usable."""
    llm = _llm(model, num_slots=3)
    prompts, params = _prompts(3, seed=5), _params(3, sampled=sampled)
    want = [g.token_ids for g in llm.generate(prompts, params)]
    row = _one(build_lora(model.cfg, [_random_factors(model.cfg, 1, 4, 2)], [1.0]), 0)
    a, bs = row.layers[1]["down"]
    row.layers[1]["down"] = (a, tuple(torch.full_like(b, float("nan")) for b in bs))
    reqs = [Request(p, sp, tag=f"q{i}", lora=row if i == 1 else None) for i, (p, sp) in enumerate(zip(prompts, params))]
    with pytest.raises(UserError, match=r"request \d+ \(q1\): the model's logits are NaN at its output token 1 "):
        llm.engine.run(reqs)
    assert not llm.has_unfinished()
    assert [g.token_ids for g in llm.generate(prompts, params)] == want


def test_a_refused_nan_request_leaves_no_nan_keys_in_the_cache(model):
    """A request refused for NaN logits left NaN keys and values in its slot; a shorter request
    there later, beside a longer one (so attending past its own positions, masked), got NaN
    scores from them (NaN + -inf is NaN) and was refused in turn. A prefill-only request (a
    sender) with the same factors ends without an error, its NaN rows in a slot the refusal
    later does not hold: the whole cache goes, not only the refused requests' slots."""
    from minitflow.model.qwen3 import Capture
    llm = _llm(model, num_slots=3)
    row = _one(build_lora(model.cfg, [_random_factors(model.cfg, 1, 4, 2)], [1.0]), 0)
    a, bs = row.layers[0]["qkv"]
    row.layers[0]["qkv"] = (a, tuple(torch.full_like(b, float("nan")) for b in bs))
    long, short = list(range(1, 31)), [5, 6, 7]
    sp = SamplingParams(max_new_tokens=4)
    sender = Request(long, lora=row, capture=Capture([0], [0], [3]), generate=False)
    llm.engine.run([Request(short, sp), sender])
    assert sender.slot == 1 and sender.finish_reason == "prefill"
    with pytest.raises(UserError, match="logits are NaN"):
        llm.engine.run([Request(long, sp, lora=row)])
    reqs = [Request(short, sp), Request(short[::-1], sp), Request(long[::-1], sp)]
    llm.engine.run(reqs)
    assert [r.slot for r in reqs] == [0, 1, 2]
    assert [r.output_ids for r in reqs] == _alone(model, [r.prompt_ids for r in reqs], [sp] * 3)


def test_a_refused_nan_request_leaves_no_nan_factors_for_junk_rows(model):
    """abort_all zeroed the KV cache but left a refused request's NaN LoRA factors in its slot's
    rows. A static-shape step (CUDA graphs or compile: the first 2^k slots) runs free slots as junk
    rows with the factors they hold, so the next run beside that free slot wrote NaN keys there,
    and a short request later admitted into it (beside longer ones) read them through the mask and
    was refused for NaN logits. Static shapes run eagerly here, as in test_engine_fuzz.py."""
    llm = _llm(model, num_slots=4, prefix_cache_bytes=0)
    llm.engine.runner.static_shapes = True
    row = _one(build_lora(model.cfg, [_random_factors(model.cfg, 1, 4, 2)], [1.0]), 0)
    a, bs = row.layers[0]["qkv"]
    row.layers[0]["qkv"] = (a, tuple(torch.full_like(b, float("nan")) for b in bs))
    sp = SamplingParams(max_new_tokens=6)
    prompts = [[i + 1] * (5 + 7 * i) for i in range(4)]
    with pytest.raises(UserError, match="logits are NaN"):
        llm.engine.run([Request(p, sp, lora=row if i == 3 else None) for i, p in enumerate(prompts)])
    three = [Request(p, SamplingParams(max_new_tokens=20)) for p in prompts[2::-1]]  # slots 0-2, slot 3 a junk row
    llm.engine.run(three)
    reqs = [Request(p, sp) for p in [list(range(1, 41))] + prompts[1:3] + [[3, 4]]]  # [3, 4] in slot 3, beside 40
    llm.engine.run(reqs)
    assert reqs[3].slot == 3
    assert [r.output_ids for r in three + reqs] == _alone(model, [r.prompt_ids for r in three + reqs],
                                                            [r.sampling for r in three + reqs])


@pytest.mark.parametrize("bad", ["past", "lora"])
def test_a_prefill_only_request_leaves_no_nan_in_its_slot(model, bad):
    """A prefill-only request (a sender) samples nothing, so nothing refuses NaN in its input
    (handed-over KV, LoRA factors; float16 overflow too): it ended as usual, its NaN keys and
    factors left in its slot. A short request admitted there later beside a longer one read the
    keys through the mask (NaN + -inf is NaN), and junk rows of static-shape steps (the free
    slot run with the factors it holds) wrote more: that request was refused for NaN logits,
    with the others in flight. Its slot's keys, values and factors now go when it ends."""
    from minitflow.model.qwen3 import Capture
    llm = _llm(model, num_slots=4, prefix_cache_bytes=0)
    llm.engine.runner.static_shapes = True  # the compiled / CUDA-graph step's rows, run eagerly
    cfg = model.cfg
    kw = {}
    if bad == "past":
        nan = torch.full((cfg.num_hidden_layers, cfg.num_key_value_heads, 8, cfg.head_dim), float("nan"))
        kw["past"] = (nan, nan)
    else:
        row = _one(build_lora(cfg, [_random_factors(cfg, 1, 4, 2)], [1.0]), 0)
        a, bs = row.layers[0]["qkv"]
        row.layers[0]["qkv"] = (a, tuple(torch.full_like(b, float("nan")) for b in bs))
        kw["lora"] = row
    sp = SamplingParams(max_new_tokens=30)
    x, sender, y = Request(list(range(1, 41)), sp), Request([9] * 12, capture=Capture([1], [0], [3]), generate=False, **kw), \
        Request([7] * 10, sp)
    for r in (x, sender, y):
        llm.engine.add_request(r)
    for _ in range(6):  # slot 1 free, a junk row of each step
        llm.step()
    assert sender.slot == 1 and sender.finish_reason == "prefill" and torch.isnan(sender.capture.hidden).any()
    late = llm.engine.add_request(Request([3, 4], SamplingParams(max_new_tokens=6)))
    while llm.has_unfinished():
        llm.step()
    assert late.slot == 1
    assert [r.output_ids for r in (x, y, late)] == _alone(model, [r.prompt_ids for r in (x, y, late)],
                                                          [r.sampling for r in (x, y, late)])


@pytest.mark.parametrize("static", [False, True], ids=["eager", "static_shapes"])
def test_an_aborted_request_leaves_no_nan_in_its_slot_or_the_prefix_cache(model, static):
    """On CUDA the host reads a step's tokens steps later, so a request with NaN factors can be
    aborted (a stream's reader gone) before its NaN logits are seen: abort() left its NaN keys,
    values and factors in the slot. The next short request there, beside a longer one, read the
    keys through the mask, was refused for NaN logits and had stored its NaN prompt KV in the
    prefix cache, which abort_all keeps: every later prompt sharing it was refused too. The run-
    ahead is emulated on CPU as in test_engine_fuzz.py."""
    llm = _llm(model, num_slots=2)
    llm.engine.runner.static_shapes = static
    llm.engine.ring = LateRing(2)
    row = _one(build_lora(model.cfg, [_random_factors(model.cfg, 1, 4, 2)], [1.0]), 0)
    a, bs = row.layers[0]["qkv"]
    row.layers[0]["qkv"] = (a, tuple(torch.full_like(b, float("nan")) for b in bs))
    bad = llm.add_request(list(range(1, 61)), SamplingParams(max_new_tokens=8), lora=row)
    llm.step()  # prefilled and decoded once; its NaN token not read yet
    assert bad.slot == 0 and not bad.output_ids and llm.abort(bad)
    g = torch.Generator().manual_seed(4)
    short, long = (torch.randint(0, 150, (n,), generator=g).tolist() for n in (2 * BLOCK + 3, 40))
    sp = SamplingParams(max_new_tokens=4)
    reqs = [Request(short, sp), Request(long, SamplingParams(max_new_tokens=8))]
    llm.engine.run(reqs)
    assert reqs[0].slot == 0
    later = Request(short[:2 * BLOCK] + [7, 8], sp)  # alone in the engine, its prefix from the cache
    llm.engine.run([later])
    assert later.cached_tokens == 2 * BLOCK
    assert [r.output_ids for r in reqs + [later]] == _alone(model, [r.prompt_ids for r in reqs + [later]],
                                                             [r.sampling for r in reqs + [later]])


@pytest.mark.parametrize("together", [False, True])
@pytest.mark.parametrize("start", [5, 2 * BLOCK])
def test_prefix_cache_reuses_condition_rows_inside_a_captured_span(model, start, together):
    """A capture whose span starts inside a shared prefix (minerva's 4-shot block lies inside the
    sender's question) takes that prefix's KV and its summed condition rows from the cache; a
    span starting at a block's end takes the blocks before it without rows. `together`: the
    three admitted at once into a cold engine, the last two wait a step for what the first stores."""
    from minitflow.model.qwen3 import Capture
    g = torch.Generator().manual_seed(9)
    shared = torch.randint(0, 150, (2 * BLOCK + 9,), generator=g).tolist()
    prompts = [shared + torch.randint(0, 150, (7 + i,), generator=g).tolist() for i in range(3)]
    layers = list(range(model.cfg.num_hidden_layers + 1))
    w = torch.softmax(torch.randn(len(layers), generator=g), 0)

    def senders(llm):
        reqs = [Request(p, capture=Capture(layers, [start], [len(p) - 1], layer_weights=w), generate=False)
                for p in prompts]
        if together:
            return llm.engine.run(reqs)
        for r in reqs:  # one after another: each finds the blocks the earlier ones stored
            llm.engine.run([r])
        return reqs

    cached = senders(_llm(model, num_slots=3))
    plain = senders(_llm(model, num_slots=3, prefix_cache_bytes=0))
    assert [r.cached_tokens for r in cached] == [0, 2 * BLOCK, 2 * BLOCK]
    for a, b in zip(cached, plain):
        assert a.capture.hidden.shape == b.capture.hidden.shape == (1, len(a.prompt_ids) - 1 - start, model.cfg.hidden_size)
        assert (a.capture.hidden - b.capture.hidden).abs().max() <= 1e-5


def test_condition_rows_stored_by_a_later_starting_span_serve_an_earlier_one(model):
    """A block whose condition rows a later-starting span stored (rows from its 8th on) is taken by a
    span that starts earlier once that span has computed them: its rows replaced the later ones.
    They kept the first rows, and every sender with the earlier span recomputed the block."""
    from minitflow.model.qwen3 import Capture
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, 150, (4 * BLOCK,), generator=g).tolist()
    layers = list(range(model.cfg.num_hidden_layers + 1))
    w = torch.softmax(torch.randn(len(layers), generator=g), 0)

    def sender(llm, start):
        req = Request(prompt, capture=Capture(layers, [start], [len(prompt)], layer_weights=w), generate=False)
        llm.engine.run([req])
        return req

    llm, cold = _llm(model, num_slots=2), _llm(model, num_slots=2, prefix_cache_bytes=0)
    assert sender(llm, 2 * BLOCK + 8).cached_tokens == 0
    early = [sender(llm, BLOCK + 4) for _ in range(3)]
    # the first finds block 1 without rows; then blocks 1 and 2 hold rows from position BLOCK + 4 on
    assert [r.cached_tokens for r in early] == [BLOCK, 3 * BLOCK, 3 * BLOCK]
    want = sender(cold, BLOCK + 4).capture.hidden
    assert all(torch.equal(r.capture.hidden, want) for r in early)
    pc = llm.engine.prefix_cache
    assert pc.used == sum(e.nbytes for e in pc.entries.values())


def test_finished_requests_are_not_held_by_junk_steps_left_unread(model):
    """CUDA's run-ahead leaves a finished request's last steps unread when generate returns; they
    named the request, holding its LoRA factors until the next step. With nothing in flight they
    name none: the factors die with the caller's last reference, and the next step still reads the
    junk (its tokens reach nobody)."""
    import gc
    import weakref

    llm = _llm(model, num_slots=2)
    llm.engine.ring = LateRing(4)
    lora = build_lora(model.cfg, [_random_factors(model.cfg, 1, 2, seed) for seed in (1, 2)], [0.5, 0.5])
    gone = weakref.ref(lora.layers[0]["qkv"][0])
    out = llm.generate([[3, 1, 4, 1, 5]], SamplingParams(max_new_tokens=3), lora=lora)
    del lora
    gc.collect()
    assert gone() is None and len(llm.engine.ring.pending) == 4
    assert llm.generate([[9, 2, 6]], SamplingParams(max_new_tokens=2))[0].token_ids == \
        _llm(model, num_slots=1).generate([[9, 2, 6]], SamplingParams(max_new_tokens=2))[0].token_ids
    assert len(out[0].token_ids) == 3


def test_the_first_token_comes_from_the_decode_step(model, monkeypatch):
    """A prefill runs no lm_head and samples nothing: the last prompt token is the slot's first
    decode input, so requests admitted together get their first tokens in one batched step (no
    prefix cache: with it, the two after the first would wait a step for their shared blocks)."""
    llm = _llm(model, num_slots=4, prefix_cache_bytes=0)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda ids, *a, **kw: calls.append((ids.shape[1], kw.get("need_logits", True)))
                        or forward(ids, *a, **kw))
    prompts = _prompts(3, seed=6)
    gens = llm.generate(prompts, SamplingParams(max_new_tokens=1))
    assert [len(g.token_ids) for g in gens] == [1, 1, 1] and llm.engine.steps == 1
    assert calls == [(max(map(len, prompts)) - 1, False), (1, True)]


def _recomputed(model, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens by recomputing the whole sequence at every step, no cache at all."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            x = torch.tensor([ids])
            logits = model(x, torch.arange(len(ids))[None], None, len(ids))
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_the_first_token_when_the_prefill_has_nothing_or_everything_to_do(model):
    """A one-token prompt (no prefill forward at all), a prompt whose every token but the last
    comes from the prefix cache (none either), and a capture that also generates (prefilled to
    its end for the capture; the decode step computes the last position again) all get the
    tokens of a full recompute, and the capture what a prefill-only request captures."""
    from minitflow.model.qwen3 import Capture
    shared = _prompts(1, seed=8)[0][: 2 * BLOCK]
    llm = _llm(model, num_slots=2, prefix_cache_bytes=1 << 24)
    one, warm, cached = [7], shared + [3, 4], shared + [9]
    sp = SamplingParams(max_new_tokens=6)
    assert llm.generate([one], sp)[0].token_ids == _recomputed(model, one, 6)
    llm.generate([warm], sp)
    got = llm.generate([cached], sp)[0]
    assert got.cached_tokens == 2 * BLOCK == len(cached) - 1
    assert got.token_ids == _recomputed(model, cached, 6)
    prompt = _prompts(1, seed=9)[0]
    span = (3, len(prompt))
    cap = Capture([0, 2], [span[0]], [span[1]])
    assert llm.generate([prompt], sp, capture=cap)[0].token_ids == _recomputed(model, prompt, 6)
    alone = llm.capture_hidden([prompt], Capture([0, 2], [span[0]], [span[1]]))
    assert torch.equal(cap.hidden, alone.hidden) and cap.lengths == [span[1] - span[0]]


def test_cuda_graphs_need_cuda_and_exclude_compile(model):
    """A CPU model cannot capture CUDA graphs: one line before any work, never a silent eager run.
    By default they are on for a CUDA model only."""
    with pytest.raises(UserError, match="cuda_graphs needs a CUDA model"):
        _llm(model, cuda_graphs=True)
    assert not _llm(model).engine.runner.cuda_graphs


def test_a_valid_request_never_formats_its_tag(model):
    """Naming a request costs a repr of its tag (a pipeline's question, which holds device
    tensors: a GPU sync each time): only an error may build it."""
    class Loud:
        def __repr__(self):
            raise AssertionError("the tag was formatted for a valid request")
    llm = _llm(model, num_slots=2)
    req = Request([1, 2, 3], SamplingParams(max_new_tokens=2), tag=Loud())
    llm.engine.run([req])
    assert len(req.output_ids) == 2
    with pytest.raises(UserError, match=r"request \d+ \(question 7, receiver\): the prompt is empty"):
        from minitflow.tflow.methods import _Question
        llm.engine.add_request(Request([], tag=(_Question(7, "q", "q", SamplingParams()), "receiver")))


def _bench_script(script: str, *args: str) -> dict:
    """Run bench/`script` on CPU from the repository root; the JSON object it prints last."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    out = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_stage_memory_script_runs_on_cpu():
    """bench/stage_memory.py (a GPU session part: where tflow's memory goes) runs end to end on
    CPU at the tiny shape with the demo's tokenizer, so a GPU session does not spend its device
    time finding it broken; every stage's number is there, for the generator in pieces and whole."""
    got = _bench_script("stage_memory.py", "minitflow/data/demo", "4")
    assert got["weights_gib"] > 0 and got["kv_cache_gib"] > 0
    assert got["lora_slot_buffers_gib"] > 0  # the receiver's LoRA reached its slot
    for label in ("tflow", "tflow_pieces", "tflow_whole"):  # the first question, then warm in pieces and whole
        assert got[f"{label}_new_tokens"] == 4 and got[f"{label}_generator_s"] > 0
        assert {f"{label}_{stage}_peak_above_start_gib" for stage in ("senders", "generator", "receiver")} <= set(got)


def test_the_stage_profile_script_runs_on_cpu():
    """bench/profile_stages.py (a GPU session part: host, launches and device time per tflow
    stage) runs end to end on CPU with the demo's tokenizer and names every stage."""
    got = _bench_script("profile_stages.py", "minitflow/data/demo", "4")
    for fuse in ("everywhere", "decode"):  # fused.FUSE both ways
        run = got[f"fuse_{fuse}"]
        assert run["new_tokens"] == 4
        assert set(run["stages"]) == {"senders_prefill", "generator", "receiver_prefill", "decode"}
        assert run["stages"]["decode"]["calls"] == 4 and all(s["host_ms"] > 0 for s in run["stages"].values())


def test_the_step_profile_script_runs_on_cpu(monkeypatch):
    """bench/profile_step.py (a GPU session part: where a decode step's time goes) runs end to end
    on CPU with and without LoRA at both batch sizes, and its header names the LoRA path its rows
    run: after the decode part picks "folded", a bare model call (no engine buffers to fold
    into) runs bmm+expand, which the profile would otherwise pass off as folded's."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from minitflow.model import lora_linear
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MINITFLOW_BENCH_DECODE_LORA": "folded", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "bench/profile_step.py", "1"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LoRA at decode: bmm (the CPU path)" in out.stdout.splitlines()[0]
    for batch in (1, 8):
        for name in ("no LoRA", "LoRA"):
            assert f"== batch {batch}, {name}: " in out.stdout
    monkeypatch.syspath_prepend(str(root / "bench"))
    import profile_step
    for path, runs in (("folded", "bmm+expand (a bare model call cannot fold: DECODE_LORA folded)"), ("kernel", "kernel")):
        monkeypatch.setattr(lora_linear, "DECODE_LORA", path)
        assert profile_step.lora_path(cuda=True) == runs


def test_the_gpu_session_runs_later_parts_with_the_fastest_decode_lora(tmp_path):
    """bench/gpu_session.sh hands the parts after `decode` the LoRA path whose captured step was
    fastest (`table.py --fastest-decode-lora`): relative to the best at each batch, over the
    batches every path ran; eager and compiled rows do not count; no captured row is an error."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    def rec(mode: str, path: str, batch: int, step_s: float) -> dict:
        return {"name": f"test_decode_step[{mode}-{batch}]",
                "extra_info": {"mode": mode, "decode_lora": path, "batch": batch, "tokens_per_s": batch / step_s}}

    def pick(records: list[dict]) -> subprocess.CompletedProcess:
        (tmp_path / "decode.json").write_text(json.dumps({"benchmarks": records}))
        return subprocess.run([sys.executable, "bench/table.py", "--fastest-decode-lora", str(tmp_path / "decode.json")],
                              cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60)

    runs = [rec("graphs", "kernel", 1, 6.5e-3), rec("graphs", "kernel", 20, 8.2e-3),
            rec("graphs-bmm", "bmm", 1, 5.0e-3), rec("graphs-bmm", "bmm", 20, 9.9e-3),  # fast at 1, slow at 20
            rec("graphs-folded", "folded", 1, 5.2e-3), rec("graphs-folded", "folded", 20, 6.0e-3),
            rec("eager", "kernel", 1, 1e-4), rec("graphs-bmm+expand", "bmm+expand", 1, 1e-4)]  # one batch only
    got = pick(runs)
    assert got.returncode == 0 and got.stdout.strip() == "folded", got.stderr
    got = pick([rec("eager", "kernel", 1, 1e-3)])
    assert got.returncode != 0 and "decode_step" in got.stderr


def test_the_gpu_session_refuses_at_once_without_a_tokenizer(tmp_path):
    """bench/gpu_session.sh without a Qwen3 tokenizer: one line naming the folder, a part that
    needs it and the knob, exit 2, before any part runs (each method part skipped or failed on
    its own after building the 4B model, minutes of a 15-minute device budget). PARTS that leave
    those parts out run. Python is a stub that records its calls (table.py runs for real)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                                     f'case "$*" in *bench/table.py*) exec {sys.executable} "$@";; esac\n'
                                     # a benchmark part cut short: an empty JSON, what it finished in the partial one
                                     'for a in "$@"; do case "$a" in --benchmark-json=*) f="${a#*=}"; : > "$f"; '
                                     'echo \'{"benchmarks": []}\' > "$f.partial";; esac; done\n')
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho stub GPU\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    (tmp_path / "no-tokenizer").mkdir()

    def session(out: str, **parts: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
               "MINITFLOW_BENCH_TOKENIZER": str(tmp_path / "no-tokenizer")}
        env.pop("PARTS", None)
        return subprocess.run(["bash", "bench/gpu_session.sh", str(tmp_path / out), "600"], env={**env, **parts},
                              cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60)

    got = session("all")
    assert got.returncode == 2 and not calls.exists(), (got.returncode, got.stderr)
    assert got.stderr.strip() == (f"gpu_session.sh: no tokenizer.json in {tmp_path / 'no-tokenizer'}, which part methods "
                                  "needs: set MINITFLOW_BENCH_TOKENIZER to a Qwen3 tokenizer folder, or leave the part "
                                  "out of PARTS")
    assert "which part methods needs" in (tmp_path / "all" / "session.log").read_text()
    got = session("some", PARTS="gpu-tests decode")
    assert got.returncode == 0, got.stderr
    ran = calls.read_text()
    assert "tests/test_gpu.py" in ran and "bench/test_micro.py" in ran and "test_e2e" not in ran
    assert (tmp_path / "some" / "decode.json").read_text() == '{"benchmarks": []}\n'  # the partial one, kept
    assert not list((tmp_path / "some").glob("*.partial"))
    assert "== decode: cut short" in (tmp_path / "some" / "session.log").read_text()



def test_a_benchmark_run_killed_midway_keeps_what_it_finished(tmp_path):
    """pytest-benchmark writes --benchmark-json PATH only when the session ends: a gpu_session.sh
    part that its time limit killed lost every benchmark it had finished. bench/partial_json.py
    (hooks bench/conftest.py imports) keeps them in PATH.partial after each one; a run that ends
    removes it. Here the second benchmark SIGKILLs its own process."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    (tmp_path / "test_two.py").write_text(
        "import os, signal\n"
        "def test_first(benchmark):\n    benchmark.pedantic(sum, args=([1, 2],), rounds=3)\n"
        "def test_second(benchmark):\n"
        "    if os.environ.get('KILL'):\n        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    benchmark.pedantic(sum, args=([3],), rounds=3)\n")

    def run(kill: bool) -> tuple[Path, int]:
        out = tmp_path / f"run-{kill}.json"
        env = {**os.environ, "PYTHONPATH": f"{bench_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        env.pop("KILL", None)
        got = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "partial_json",
                              "--benchmark-only", f"--benchmark-json={out}", str(tmp_path / "test_two.py")],
                             env={**env, **({"KILL": "1"} if kill else {})}, cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        return out, got.returncode

    out, rc = run(kill=True)
    assert rc == -9 and out.read_bytes() == b""
    kept = json.loads(Path(f"{out}.partial").read_text())["benchmarks"]
    assert [b["name"] for b in kept] == ["test_first"] and kept[0]["stats"]["rounds"] == 3
    out, rc = run(kill=False)
    assert rc == 0 and not Path(f"{out}.partial").exists()
    assert [b["name"] for b in json.loads(out.read_text())["benchmarks"]] == ["test_first", "test_second"]

_CUDA_COLLECTION = """
import json, shlex, sys
import pytest, torch
torch.cuda.is_available = lambda: True  # before the bench modules parametrize on it at import
out, got = sys.argv[1], {}

class Names:
    def pytest_collection_finish(self, session):
        self.names = [item.name for item in session.items]

for line in open("bench/gpu_session.sh").read().splitlines():
    words = shlex.split(line, comments=True) if line.startswith("part ") else []
    if words[3:4] == ["$bench"]:
        names = Names()
        args = [w.replace("$out", out) for w in words[4:]]
        # no:unraisableexception: its gc.collect() calls, with torch loaded, took 1 s of each call
        rc = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
                          "--benchmark-only", *args], plugins=[names])
        got[words[1]] = names.names if rc in (0, 5) else f"pytest exit {rc}"  # 5: none selected
print(json.dumps(got))
"""


def test_the_gpu_session_selects_with_cuda_what_its_parts_and_the_table_need(tmp_path):
    """Each benchmark part of bench/gpu_session.sh (`pytest --benchmark-only FILE -k EXPR`) selects,
    with the benchmarks parametrized as on CUDA (decode batches 1 and 20, the graphs and compiled
    modes, 20 questions), exactly the benchmarks it is there for: here the same -k meets the CPU's
    parameters, so an expression that matched nothing on the GPU (a part's time limit gone), or
    a DECODE_LORA path that `table.py --fastest-decode-lora` compares at each batch left out, or
    a compiled variant (minutes of compiling) let in, would go unseen until a rare device session.
    Collection only, in a process where torch.cuda.is_available() answers True."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    from minitflow.model.lora_linear import DECODE_LORA_PATHS
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _CUDA_COLLECTION, str(tmp_path)], cwd=root, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    got = {part: n if isinstance(n, str) else sorted(n) for part, n in json.loads(out.stdout.splitlines()[-1]).items()}

    def names(test: str, *params: str) -> list[str]:
        return [f"{test}[{p}]" for p in params] if params else [test]

    decode_modes = ["eager", "graphs", "graphs-bmm+expand", "graphs-bmm", "graphs-folded"]  # graphs: "kernel"
    assert {m.removeprefix("graphs-") for m in decode_modes[2:]} | {"kernel"} == set(DECODE_LORA_PATHS)
    want = {
        "decode": names("test_decode_step", *(f"{b}-{m}" for b in (1, 20) for m in decode_modes)) +
        names("test_lora_projection", *(f"{v}-{b}" for v in ("fused_eager", "naive", "merged_per_row", "plain_linear",
                                                             "decode_kernel") for b in (1, 8, 20))),
        "methods": names("test_method", *(f"{m}-{q}-graphs" for m in ("baseline", "textmas", "tflow") for q in (1, 20))),
        "sampling": names("test_sampling", "1-official", "1-qwen3", "20-official", "20-qwen3") +
        names("test_nucleus_without_a_sort", "8", "20"),
        "pipelines": names("test_pipeline_vs_chunked", "textmas-qwen3", "tflow-qwen3"),
        "refill": names("test_tflow_refill_share", "0.25", "0.5"),
        "long-tail": names("test_long_tail_continuous_vs_static"),
        "generator": names("test_tflow_generator_options", "all-questions-pieces"),
        "transformers": names("test_generate_vs_transformers", "1-graphs", "20-graphs"),
        "latentmas-stream": names("test_latentmas_pipeline_vs_chunks"),
        "methods-eager": names("test_method", "tflow-1-eager", "tflow-20-eager"),
        "prefill-lengths": names("test_prefill_by_length_vs_one_padded_forward"),
        "samples": names("test_baseline_samples_wait_for_the_shared_prompt", "cold", "warm") +
        names("test_samples_vs_repeated", "tflow-questions", "tflow-receivers", "latentmas-questions"),
    }
    assert got == {part: sorted(n) for part, n in want.items()}
    # the decode part writes the file whose captured steps pick the later parts' LoRA path
    assert (tmp_path / "decode.json").exists()
    assert 'bench/table.py --fastest-decode-lora "$out/decode.json"' in (root / "bench/gpu_session.sh").read_text()


def test_the_table_joins_a_gpu_sessions_json_files(tmp_path):
    """`python bench/table.py OUT_DIR/*.json` (gpu_session.sh's last step) over a session's folder,
    which holds bench/lora_kernel_sweep.py's JSON list beside the pytest-benchmark files, and an
    empty file of a part cut short: the table comes out, each skipped with a note (a TypeError and
    a JSONDecodeError, no table)."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    (tmp_path / "decode.json").write_text(json.dumps({"benchmarks": [
        {"name": "test_decode_step[1-graphs]", "stats": {"min": 6.5e-3, "median": 6.6e-3},
         "extra_info": {"device": "GPU", "mode": "graphs", "decode_lora": "kernel", "batch": 1, "tokens_per_s": 154.0,
                        "lora_overhead": 1.7}}]}))
    (tmp_path / "lora_sweep.json").write_text(json.dumps([{"weight": "qkv", "batch": 1, "best": "128/256/4"}]))
    (tmp_path / "methods.json").write_text("")  # a part that ran no test, or that its time limit cut short
    got = subprocess.run([sys.executable, "bench/table.py", *sorted(map(str, tmp_path.glob("*.json")))],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert "| `test_decode_step[1-graphs]` | 6.50 ms | 6.60 ms | 154 tokens/s | 1.70 |" in got.stdout
    assert "lora_sweep.json is not a pytest-benchmark JSON" in got.stderr
    assert "methods.json is empty or cut short" in got.stderr  # was a JSONDecodeError: no table at all


def test_an_interrupt_between_steps_leaves_no_request_queued(model, monkeypatch):
    """Ctrl-C that lands in generate() between two engine steps (Engine.run's loop, which scans
    its requests after each step: a sizeable share of the time with thousands of prompts) left
    the run's requests queued and running: the next generate() ran them all before its own, and
    run_method and release_memory() refused to start. Now it aborts them, as one inside a step does."""
    llm = _llm(model, num_slots=2)
    prompts, params = _prompts(6, seed=21), _params(6, sampled=True)
    want = [g.token_ids for g in llm.generate(prompts, params)]
    real, calls = llm.engine.step, {"n": 0}

    def interrupted_after(*args):
        out = real(*args)
        calls["n"] += 1
        if calls["n"] == 3:  # the step is over: the signal lands in the loop around it
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(llm.engine, "step", interrupted_after)
    with pytest.raises(KeyboardInterrupt):
        llm.generate(prompts, params)
    monkeypatch.undo()
    assert not llm.has_unfinished()
    llm.release_memory()  # refused while requests ran
    assert [g.token_ids for g in llm.generate(prompts, params)] == want


def test_a_run_reads_each_requests_state_a_bounded_number_of_times(model, monkeypatch):
    """Engine.run checked whether its requests were done with all() over every one after each
    step: the finished ones at the front were read again at every step, O(prompts x steps): 4.5 s
    of a 21 s run of 16,000 one-token prompts on the demo model (0.13 s now), growing with the count. Now a request is read once per step while it is the first unfinished, and once after."""
    llm, n = _llm(model, num_slots=2), 120
    reads = {"n": 0}
    finished = Request.finished

    def counted(self):
        reads["n"] += 1
        return finished.fget(self)

    monkeypatch.setattr(Request, "finished", property(counted))
    prompts = [[1 + i % 100, 2, 3] for i in range(n)]
    outs = llm.generate(prompts, SamplingParams(max_new_tokens=1))
    assert len(outs) == n and all(o.completion_tokens == 1 for o in outs)
    steps = n // 2
    assert reads["n"] <= 4 * n + 2 * steps, reads  # the all() scan read ~n x steps / 2 = 3,600


def test_fields_of_the_wrong_kind_are_refused_before_a_step_and_the_neighbour_runs_on(model):
    """A capture span of 0.5 (or 1.0) passed every check and failed inside the next step, a
    TypeError from the prefix cache that aborted the request running beside it; a layer of 1.7
    was cut to 1 by capture_hidden without a word; lora, capture or past of another kind
    (LLM.add_request's fields) were an AttributeError from deep inside. Now each is one line
    before anything runs, and the neighbour's tokens are its own."""
    from minitflow import Capture
    llm = _llm(model, num_slots=2)
    prompt, sp = _prompts(1, seed=22)[0], SamplingParams(max_new_tokens=8)
    other = llm.add_request(prompt, sp)
    llm.step()
    for name, bad in (("starts", [0.5]), ("ends", [1.0]), ("layers", [1.7]), ("layers", [True]), ("layers", None)):
        spans = {"layers": [0], "starts": [0], "ends": [2], name: bad}
        with pytest.raises(UserError, match=rf"^capture {name} must be integers, got {re.escape(repr(bad))}$"):
            Capture(**spans)
    for field, bad, what in (("lora", "x", "lora must be LoraWeights"), ("capture", {"layers": [0]}, "capture must be a Capture"),
                             ("past", torch.zeros(2), "past must be a \\(keys, values\\) pair of tensors"),
                             ("capture", Capture([0], [0], [2], layer_weights=[1.0]), "capture layer weights must be a tensor")):
        with pytest.raises(UserError, match=rf"^request \d+: {what}.*, got \w+$"):
            llm.add_request([4, 5, 6], generate=field != "capture", **{field: bad})
    got = llm.capture_hidden([[4, 5, 6]], Capture(torch.tensor([0, 1]), [torch.tensor(0)], [2]))  # integer tensors' ints
    assert got.hidden.shape[:3] == (1, 2, 2)
    while llm.has_unfinished():
        llm.step()
    assert other.output_ids == _alone(model, [prompt], [sp])[0]


def test_generate_refuses_prompts_lora_and_capture_of_another_kind_in_one_line(model):
    """generate(None) or generate(5) was a TypeError from len(), generate(lora=a dict) an
    AttributeError ('dict' object has no attribute 'batch'), and capture of another kind (or
    None in capture_hidden) one from capture.starts: a traceback where a researcher's script
    wants the one line every other wrong argument gets."""
    from minitflow import Capture
    llm = _llm(model, num_slots=2)
    for prompts, kind in ((None, "NoneType"), (5, "int")):
        with pytest.raises(UserError, match=rf"^prompts must be a list of prompts \(text or token ids\), got {kind}$"):
            llm.generate(prompts)
    with pytest.raises(UserError, match=r"^lora must be LoraWeights \(build_lora\(\.\.\.\)\), got dict$"):
        llm.generate([[4, 5, 6]], lora={"layers": []})
    with pytest.raises(UserError, match=r"^capture must be a Capture, got str$"):
        llm.generate([[4, 5, 6]], capture="layers 0")
    with pytest.raises(UserError, match=r"^capture must be a Capture, got NoneType$"):
        llm.capture_hidden([[4, 5, 6]], None)
    with pytest.raises(UserError, match=r"^capture has 1 spans for 2 prompts$"):  # as before, for both
        llm.capture_hidden([[4, 5, 6], [7, 8]], Capture([0], [0], [2]))
    with pytest.raises(UserError, match=r"^capture span \[1, 3\) of prompt 1 is outside its 2 tokens$"):
        llm.capture_hidden([[4, 5, 6], [7, 8]], Capture([0], [0, 1], [3, 3]))
    with pytest.raises(UserError, match=r"^no prompts given$"):
        llm.generate([])
    with pytest.raises(UserError, match=r"^LoRA factors are for a batch of 2, got 1 prompts$"):
        llm.generate([[4, 5, 6]], lora=build_lora(model.cfg, [_random_factors(model.cfg, 2, 4, 1)], [1.0]))
    for text in (lambda: llm.generate(["What is 2 + 2?"]), lambda: llm.encode("What is 2 + 2?")):  # no tokenizer
        with pytest.raises(UserError, match=r"^this LLM has no tokenizer: pass token ids$"):
            text()
    assert not llm.has_unfinished()
    assert llm.generate([[4, 5, 6]], SamplingParams(max_new_tokens=3))[0].completion_tokens == 3


def test_a_capture_with_fewer_or_more_ends_than_starts_is_refused_in_one_line(model):
    """generate and capture_hidden checked the capture's starts against the prompts, not its ends:
    one end fewer was an IndexError traceback, one more was dropped without a word (spans read
    from another list of prompts). Now either is one line before any work."""
    from minitflow import Capture
    llm = _llm(model, num_slots=2)
    prompts = [[4, 5, 6], [7, 8, 9]]
    for ends in ([2], [2, 3, 3]):
        with pytest.raises(UserError, match=rf"^capture has 2 starts but {len(ends)} ends: one span per prompt$"):
            llm.capture_hidden(prompts, Capture([0], [0, 1], ends))
        with pytest.raises(UserError, match=rf"^capture has 2 starts but {len(ends)} ends"):
            llm.generate(prompts, SamplingParams(max_new_tokens=2), capture=Capture([0], [0, 1], ends))
    assert not llm.has_unfinished()
    assert llm.capture_hidden(prompts, Capture([0], [0, 1], [2, 3])).lengths == [2, 2]

def test_a_dict_or_a_set_of_prompts_or_questions_is_refused():
    """generate({id: text}) and run_method(questions={id: text}) ran the keys as the prompts,
    without a word; a set ran in an order that changes from process to process (str hashing
    is salted), so run_method's default seeds (sampling.seed + position), and with them its
    sampled answers, changed from run to run. Both are refused before any work; a dict's
    values or keys view, in the order they were put in, still run."""
    from minitflow import demo_dir
    from minitflow.tflow.methods import run_method
    llm = LLM.load(demo_dir(), device="cpu", dtype="float32")
    sp = SamplingParams(max_new_tokens=2)
    texts = {"q1": "What is 2+2?", "q2": "Hi"}
    with pytest.raises(UserError, match=r"^prompts is a dict, whose keys would be the items: pass a list"):
        llm.generate(texts, sp)
    with pytest.raises(UserError, match=r"^prompts is a set, whose order changes from run to run: pass a list"):
        llm.generate(set(texts.values()), sp)
    for kw in ({"questions": texts}, {"questions": frozenset(texts.values())},
               {"questions": list(texts.values()), "seeds": {0: 1, 1: 2}}):
        name = next(k for k, v in kw.items() if not isinstance(v, list))
        with pytest.raises(UserError, match=rf"^{name} is a (dict|frozenset), whose"):
            run_method("baseline", llm, **{"questions": list(texts.values()), "sampling": sp, **kw})
    with pytest.raises(UserError, match=r"^labels is one string: pass a list, e.g. \[label\]$"):  # ran as 'a', 'b'
        run_method("baseline", llm, list(texts.values()), sampling=sp, labels="ab")
    assert not llm.has_unfinished()
    want = [g.token_ids for g in llm.generate(list(texts.values()), sp)]
    assert [g.token_ids for g in llm.generate(texts.values(), sp)] == want
    assert len(llm.generate(texts.keys(), sp)) == 2


def test_a_hand_built_request_takes_integer_prompt_ids_only(model):
    """LLM's paths turn ids into plain ints (as_index), but a Request built by hand went to the
    engine as it was: 1.0 or a one-element tensor passed min/max and failed inside the step that
    ran it, aborting every request beside it; True ran as token 1."""
    llm = _llm(model, num_slots=2)
    sp = SamplingParams(max_new_tokens=3)
    want = llm.generate([[5, 6, 7]], sp)[0].token_ids
    for bad, kind in (([5, 6.0, 7], "float 6.0"), ([5, torch.tensor(6), 7], "Tensor tensor(6)"), ([True, 6, 7], "bool True")):
        with pytest.raises(UserError, match=rf"^request \d+: prompt_ids must be plain ints, got {re.escape(kind)}$"):
            llm.engine.run([Request([5, 6, 7], sp), Request(bad, sp)])  # checked before either queues
        assert not llm.has_unfinished()
    assert [r.output_ids for r in llm.engine.run([Request([5, 6, 7], sp)])] == [want]
