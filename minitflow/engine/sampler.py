"""Token selection: greedy, temperature, top-k, top-p for a whole batch in a fixed number of tensor ops.

Randomness is counter-based: the noise for (row seed, step, token id) is an integer hash, so a row's
draw depends only on its own seed, the step and its logits, never on the batch it runs in or on the
device. No per-row generators and no Python loop over rows: the op count does not grow with the
batch, there are no host syncs, and the step may be a device tensor (CUDA-graph friendly).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from minitflow.errors import UserError, is_int
from minitflow.model.fused import fused_on_cuda

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # odd; spreads consecutive steps over all 32 bits
_TOP_K_OFF = 1 << 31  # a rank no vocabulary reaches
_I32 = 1 << 31


# The smallest temperature above 0: below ~1e-37 logits / T overflow float32 (inf - inf: NaN)
# and a wrong token was drawn without a word; 1e-30 leaves logits up to ~1e8 finite.
MIN_TEMPERATURE = 1e-30
# The largest: the sampler holds temperatures as float32, where a larger finite Python float is
# inf (torch refused it at admission, aborting every request in flight).
MAX_TEMPERATURE = torch.finfo(torch.float32).max


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy. `stop` strings end a row like EOS (the text is cut before them).
    `vocab_rows` > 0: only the first vocab_rows token ids can be chosen (LatentMAS's judger
    samples over the tokenizer's 151,669 ids, not the model's 151,936 rows); 0: all."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    vocab_rows: int = 0

    def __post_init__(self):
        # a bool is an int to Python: max_new_tokens=True ran one token, temperature=True sampled at 1
        for name in ("max_new_tokens", "top_k", "vocab_rows"):
            if not is_int(getattr(self, name)):
                raise UserError(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("temperature", "top_p"):
            if not isinstance(getattr(self, name), numbers.Real) or isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be a number, got {getattr(self, name)!r}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):  # nan and inf too
            raise UserError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if 0 < self.temperature < MIN_TEMPERATURE:  # logits / T overflow float32 (or T rounds to 0 there)
            raise UserError(f"temperature {self.temperature} is too small to divide float32 logits by: use 0 for "
                            f"greedy, or at least {MIN_TEMPERATURE}")
        if self.temperature > MAX_TEMPERATURE:
            raise UserError(f"temperature {self.temperature} is too large for the sampler's float32 numbers: at "
                            f"most {MAX_TEMPERATURE:.4g}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.top_k < _TOP_K_OFF:  # the sampler's int64 rows overflowed at 2^63
            raise UserError(f"top_k must be in [0, 2^31) (0 = off), got {self.top_k}")
        # a tuple before the check: a list left the frozen params unhashable, and the check used up
        # an iterator's strings (stop=iter(["x"]) became (), never stopping)
        stop = None if isinstance(self.stop, str) or not isinstance(self.stop, Iterable) else tuple(self.stop)
        if stop is None or not all(isinstance(s, str) and s for s in stop):
            # a bare string would stop on each of its characters, and "" on the first token
            raise UserError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", stop)
        if not is_int(self.seed) or not 0 <= self.seed < 1 << 64:  # the noise hashes its two 32-bit halves
            raise UserError(f"seed must be an integer in [0, 2^64), got {self.seed!r}")
        if self.ignore_eos not in (True, False):  # "no" or "false" (a config's string) is truthy: it ignored EOS
            raise UserError(f"ignore_eos must be True or False, got {self.ignore_eos!r}")
        object.__setattr__(self, "ignore_eos", bool(self.ignore_eos))
        if self.vocab_rows < 0:
            raise UserError(f"vocab_rows must be >= 0, got {self.vocab_rows}")
        # plain Python numbers: a numpy seed or length reached the results' metadata, which json refused
        for name in ("max_new_tokens", "top_k", "seed", "vocab_rows"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("temperature", "top_p"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def per_row(sampling: object, n: int, row: str) -> list[SamplingParams]:
    """One SamplingParams per row (`row`: "prompt" or "question" in the errors), from one for
    every row or a sequence of n (a generator's too). None, a dict of settings or a number was a
    TypeError / AttributeError from deep inside, or a dict's keys read as the list."""
    if isinstance(sampling, SamplingParams):
        return [sampling] * n
    many = isinstance(sampling, Iterable) and not isinstance(sampling, (Mapping, str, bytes))
    params = list(sampling) if many else [sampling]
    bad = next((p for p in params if not isinstance(p, SamplingParams)), params)
    if bad is not params:
        raise UserError(f"sampling must be a SamplingParams or a list of one per {row}, got {type(bad).__name__}")
    if len(params) != n:
        raise UserError(f"{len(params)} sampling params for {n} {row}s")
    return params


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits (V,) outside the top-k / nucleus to -inf (always keeping the best token).

    The one-row reference that `Sampler` reproduces in batch. The nucleus keeps a token when the
    probability of the tokens with a strictly larger logit is at most top_p (so tied tokens stay
    or go together), summed in float64, so the summation order (sorted here, a histogram in the
    batched path, another again on another device) decides nothing but a token within ~1e-12 of
    the boundary."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        drop = _outside_nucleus_sorted(sorted_logits[None], top_p)[0]
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def _outside_nucleus_sorted(vals: torch.Tensor, top_p: torch.Tensor | float,
                            tail: torch.Tensor | None = None) -> torch.Tensor:
    """vals (B, n) sorted best first -> (B, n) bool, the tokens the nucleus drops: those whose
    float64 weight of strictly larger values passes top_p of the row's. That weight is an
    exclusive cumsum taken at the start of each run of equal values (it only grows along a row,
    so a running max carries it over the run). `tail` (B, 1): how many more tokens, not in
    `vals`, equal its last value (they count in the row's total)."""
    e = (vals.double() - vals[:, :1]).exp()
    excl = torch.cat([torch.zeros_like(e[:, :1]), e.cumsum(-1)[:, :-1]], dim=-1)
    starts = torch.cat([torch.ones_like(vals[:, :1], dtype=torch.bool), vals[:, 1:] != vals[:, :-1]], dim=-1)
    ahead = torch.where(starts, excl, torch.zeros_like(excl)).cummax(-1).values
    total = e.sum(-1, keepdim=True)
    if tail is not None:
        total = total + torch.where(tail > 0, tail * e[:, -1:], 0.0)
    return ahead > top_p * total


@fused_on_cuda
def _filter_candidates(vals: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                       top_p: torch.Tensor, tail: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k candidates (B, k), sorted best first -> scaled by the temperature, -inf below each
    row's top_k-th value (tokens tied with it stay, as in transformers' TopKLogitsWarper) and
    outside its nucleus (a cumsum over k values): one or two kernels on CUDA. With `tail` (B, 1),
    the count of tokens past the candidates tied with the last one (`_tied_past_candidates`):
    they count in the nucleus's total, and one column more stands for their best, at the last
    candidate's value (-inf when there are none)."""
    vals = vals / temperature
    vals = vals.masked_fill(vals < _kth(vals, top_k), -torch.inf)
    vals = vals.masked_fill(_outside_nucleus_sorted(vals, top_p, tail), -torch.inf)
    return vals if tail is None else torch.cat([vals, vals[:, -1:].masked_fill(tail == 0, -torch.inf)], dim=-1)


def _kth(vals: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """vals (B, n) sorted best first -> (B, 1) each row's top_k-th value (the last when top_k >= n)."""
    return vals.gather(1, top_k.clamp(max=vals.shape[1]) - 1)


@fused_on_cuda
def _tied_past_candidates(logits: torch.Tensor, vals: torch.Tensor, ids: torch.Tensor, temperature: torch.Tensor,
                          step: torch.Tensor, keys: torch.Tensor, id_hash: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens topk (`vals`, `ids`) left out whose scaled value ties its last candidate's:
    their count (B, 1), and the one among them with the largest noise (B, 1) (the top 24 bits
    `_to_unit` maps to u: the Gumbel-max winner the whole-vocabulary path would see; the first
    id on equal bits, 0 when there are none)."""
    tied = (logits / temperature == vals[:, -1:] / temperature).scatter(1, ids, False)
    bits = (_hash32(_step_keys(keys, step)[:, None] ^ id_hash) >> 8) & 0xFFFFFF
    return tied.sum(-1, keepdim=True), torch.where(tied, bits, -1).argmax(-1, keepdim=True)


def _order_keys(vals: torch.Tensor) -> torch.Tensor:
    """float32 (B, V) -> int32 words whose unsigned order is the values' order (IEEE bits with the
    negative half flipped), so equal words are equal values. -0.0 becomes 0.0 first: the two are
    equal values (a tie), but their bits would order -0.0 below 0.0 and the nucleus drop it alone."""
    bits = vals.masked_fill(vals == 0, 0.0).contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) | -_I32)


def _digits(rows: int, vocab: int) -> list[tuple[int, int]]:
    """(shift, width) of the keys' digits, most significant first. A pass costs a few ops over
    the (rows, vocab) logits and a few over its (rows, 2^width) histogram, so a digit is about
    as wide as the vocabulary (16 bits for 151,936: two passes; 11 for 4,096: three), at least
    8 bits, and the histograms stay within 2^22 bins (32 MiB) however many rows there are. The
    layout changes with the row count (past 64 rows at 151,936) but the threshold does not: only
    the float64 sums' rounding differs, which moves nothing but a token within ~1e-12 of it."""
    width = max(8, min(16, vocab.bit_length() - 1, (max(1, (1 << 22) // rows)).bit_length() - 1))
    passes = -(-32 // width)
    widths = [32 // passes + (i < 32 % passes) for i in range(passes)]
    return [(sum(widths[i + 1:]), w) for i, w in enumerate(widths)]


def _nucleus_unsorted(vals: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """(B, V) bool: the tokens `filter_logits`'s nucleus keeps, without sorting 151,936 logits
    (a sort costs ~10 ms a row on one CPU core): a radix select on the values' order keys.

    A token stays when the float64 weight of the tokens with a strictly larger value is at most
    top_p of the row's total, so the kept tokens are those whose key is at least some threshold.
    Each pass sums the weights of the tokens that share the threshold's digits so far, per next
    digit: the bins whose weight above (higher bins, plus everything above the shared prefix) is
    within the budget are kept, so the threshold's digit is the lowest such bin. After the last
    pass the digits are the whole key, so a bin is one value and ties stay or go together.
    The elementwise and scan steps between the histograms are fused functions (one kernel or a
    few each on CUDA; the same ops on CPU)."""
    e, budget, keys = _nucleus_weights(vals, top_p)
    cut = torch.zeros(vals.shape[0], 1, dtype=torch.int64, device=vals.device)  # the threshold's digits so far
    above = torch.zeros_like(budget)         # the weight of the keys above that prefix's range
    for i, (shift, width) in enumerate(_digits(*vals.shape)):
        high = shift + width  # the masks are plain ints here: torch 2.11's dynamo fails on 1 << SymInt
        index = _digit_index(e, keys, cut, shift, (1 << width) - 1, high, (1 << (32 - high)) - 1, i > 0)
        hist = torch.zeros(vals.shape[0], 1 << width, dtype=torch.float64, device=vals.device)
        hist.scatter_add_(1, index, e)
        above, cut = _threshold_digit(hist, above, budget, cut, shift)
    return _at_least(keys, cut)


@fused_on_cuda
def _nucleus_weights(vals: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each token's float64 weight exp(v - max), the row's budget top_p x total, the order keys."""
    e = vals.double().sub_(vals.amax(-1, keepdim=True)).exp_()  # in place: fewer fresh pages per step
    return e, top_p * e.sum(-1, keepdim=True), _order_keys(vals)


@fused_on_cuda
def _digit_index(e: torch.Tensor, keys: torch.Tensor, cut: torch.Tensor, shift: int, mask: int, high: int,
                 high_mask: int, narrow: bool) -> torch.Tensor:
    """The histogram bin of each token's next digit (the `mask` bits from `shift`); with `narrow`,
    the weights of the tokens that no longer share the threshold's digits so far (the
    `high_mask` bits from `high`: a shrinking set) set to 0, in place."""
    if narrow:
        e.masked_fill_(((keys >> high) & high_mask) != cut >> high, 0.0)
    return ((keys >> shift) & mask).long()


@fused_on_cuda
def _threshold_digit(hist: torch.Tensor, above: torch.Tensor, budget: torch.Tensor, cut: torch.Tensor,
                     shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The threshold's digit from one pass's histogram: the lowest bin whose weight above
    (every higher bin, plus everything above the prefix) is within the budget. Returns the
    weight above that bin and the digits so far."""
    bins_above = hist.flip(-1).cumsum(-1).flip(-1) - hist + above   # weight of every higher key
    digit = (bins_above > budget).sum(-1, keepdim=True)
    return bins_above.gather(1, digit), cut | (digit << shift)


@fused_on_cuda
def _at_least(keys: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """Keys at or above the threshold, in unsigned order (compared as signed)."""
    return keys.bitwise_xor_(-_I32) >= cut - _I32


def _bits(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> int32 with the same 32 bits (the words the hash works on)."""
    return ((x ^ _I32) - _I32).to(torch.int32)


def _s32(c: int) -> int:
    """A 32-bit constant as the int32 with its bits."""
    return c - (1 << 32) if c >= _I32 else c


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """Chris Wellons' lowbias32, a bijection on 32-bit words with near-ideal avalanche, on int32
    tensors: shifts are made logical by masking, and products wrap modulo 2^32, as int32
    multiplication does on every PyTorch backend (SIMD mullo on CPU, CUDA, Triton); the tests
    pin the values to Python integers, eager and compiled. On CPU this is 5-10x faster than the
    overflow-free int64 form over Qwen3's vocabulary (bench/test_micro.py::test_noise_hash)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _s32(0x7FEB352D)
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _s32(0x846CA68B)
    return x ^ ((x >> 16) & 0xFFFF)


def _seed_key(seed: int) -> int:
    """A row's 32-bit key (an int32 word) from its seed, both halves of a 64-bit seed counted:
    _hash32's lowbias32 in Python, as a request's admission hashed its seed with ten tensor
    operations on one element (~70 us on CPU, ~5% of a cached prefill)."""
    def h(x: int) -> int:  # _hash32 on an unsigned 32-bit word
        x ^= x >> 16
        x = (x * 0x7FEB352D) & _M32
        x ^= x >> 15
        x = (x * 0x846CA68B) & _M32
        return x ^ (x >> 16)
    key = h((seed & _M32) ^ h(((seed >> 32) & _M32) ^ _GOLDEN))
    return key - (1 << 32) if key >= _I32 else key  # the int32 with its bits


def _step_keys(keys: torch.Tensor, step: int | torch.Tensor) -> torch.Tensor:
    """Hash the step in, so streams of different steps are not shifted copies of each other."""
    step = torch.as_tensor(step, dtype=torch.int64, device=keys.device)
    return _hash32(keys ^ (_bits(step & _M32) * _s32(_GOLDEN)))


def _to_unit(bits: torch.Tensor) -> torch.Tensor:
    """Top 24 bits of int32 words -> u in (0, 1). float64 keeps (k + 0.5) / 2^24 exact: float32
    would round the largest value to 1.0."""
    return (((bits >> 8) & 0xFFFFFF).double() + 0.5) * 2.0**-24


@fused_on_cuda
def gumbel_scores(vals: torch.Tensor, step: torch.Tensor, keys: torch.Tensor, token_bits: torch.Tensor) -> torch.Tensor:
    """vals (B, n) + the Gumbel noise of (row key, row step, token), token_bits (n,) or (B, n)
    the tokens' hashed ids. Gumbel-max: argmax(logits / T + g) is a draw from softmax(logits / T)
    over the survivors. One kernel on CUDA instead of ~30 (the hash is a chain of shifts, masks,
    xors and products, then two float64 logs)."""
    u = _to_unit(_hash32(_step_keys(keys, step)[:, None] ^ token_bits))
    return vals + (-torch.log(-torch.log(u))).float()


def _look_past(vals: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor) -> bool:
    """Whether the top-k path looks for ties past its candidates `vals` (topk(kmax + 1)): on
    CUDA and compiled always (no host sync; one fused kernel on CUDA), on CPU eager only when
    some row's top_k-th value equals the last candidate's (a sync, but no pass over the
    vocabulary on the steps without such a tie)."""
    if vals.is_cuda or torch.compiler.is_compiling():
        return True
    return bool(((_kth(vals / temperature, top_k) == vals[:, -1:] / temperature) & (top_k < _TOP_K_OFF)).any())


def _choose(logits: torch.Tensor, step: torch.Tensor, keys: torch.Tensor, id_hash: torch.Tensor,
            greedy: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
            vocab_rows: torch.Tensor, kmax: int, kmix: int, filtering: bool, limited: bool) -> torch.Tensor:
    """One sampling step as a pure tensor function (compiled as a whole when the engine is)."""
    b, v = logits.shape
    if limited:  # ids past a row's vocab_rows are never chosen (noise is per id: as if cut off)
        logits = logits.masked_fill(torch.arange(v, device=logits.device) >= vocab_rows, -torch.inf)
    if kmax:  # sorted, best first: top-k by value, then the nucleus by a cumsum over k candidates
        # One candidate more than any row keeps: tokens tied with a row's top_k-th value all
        # stay, and when the tie runs past the candidates (their last one equals the k-th) the
        # rest are counted and the best of their noise found over the vocabulary, one more
        # candidate.
        vals, ids = torch.topk(logits, min(kmax + 1, v))
        tail = None
        if vals.shape[1] < v and _look_past(vals, temperature, top_k):
            tail, best = _tied_past_candidates(logits, vals, ids, temperature, step, keys, id_hash)
            ids = torch.cat([ids, best], dim=-1)
        vals = _filter_candidates(vals, temperature, top_k, top_p, tail)
    elif filtering:  # the whole vocabulary, unsorted; rows with a top-k mask what is below their top_k-th value
        vals, ids = logits / temperature, None
        if kmix:
            kth = _kth(torch.topk(vals, min(kmix, v)).values, top_k)
            vals = vals.masked_fill((vals < kth) & (top_k < _TOP_K_OFF), -torch.inf)
        vals = vals.masked_fill(~_nucleus_unsorted(vals, top_p), -torch.inf)
    else:
        vals, ids = logits / temperature, None
    # The noise of a token is hashed from its id (`id_hash` = _hash32(token ids), looked up), so
    # any candidate order (topk or the whole vocabulary) sees the same noise per token.
    scores = gumbel_scores(vals, step, keys, id_hash if ids is None else id_hash[ids])
    best = scores.argmax(-1, keepdim=True)
    if ids is None:  # the first of equal scores: the lowest id
        sampled = best[:, 0]
    else:  # the lowest id of equal scores too (the candidates are in value order), so an exact float32 tie
        # draws what the whole-vocabulary path draws; a NaN best (marked later) matches nothing and is kept
        tied = ids.masked_fill(scores != scores.gather(1, best), v).amin(-1)
        sampled = torch.minimum(tied, ids.gather(1, best)[:, 0])
    return torch.where(greedy, logits.argmax(-1), sampled)


def choose_tokens(logits: torch.Tensor, args: tuple | None, choose=None) -> torch.Tensor:
    """Next tokens from logits and `Sampler.args` (None: greedy argmax, the first index on ties).
    A NaN logit wins every argmax, so a row that chose one is marked NAN_TOKEN (-1) for the engine
    to refuse: NaN weights or factors, or float16 overflow, would otherwise decode as a run of
    token 0 ("!!!"), silently."""
    logits = logits.float()
    tokens = logits.argmax(-1) if args is None else (choose or _choose)(logits, *args)
    return _mark_nan(logits, tokens)


NAN_TOKEN = -1


@fused_on_cuda
def _mark_nan(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return tokens.masked_fill(logits.gather(1, tokens[:, None])[:, 0].isnan(), NAN_TOKEN)


def _path(params: list[SamplingParams | None]) -> tuple[bool, int, int, bool, bool]:
    """(any row samples, kmax, kmix, filtering, any row limits its vocabulary) for a set of rows:
    every sampled row with a top_k caps the candidates at topk(kmax), far cheaper than the whole
    vocabulary; when only some have one, those mask the rest of their topk(kmix) instead."""
    sampled = [p for p in params if p is not None and not p.greedy]
    filtering = any(p.top_k > 0 or p.top_p < 1 for p in sampled)
    kmix = max((p.top_k for p in sampled), default=0)
    kmax = kmix if sampled and all(p.top_k > 0 for p in sampled) else 0
    limited = any(p is not None and p.vocab_rows > 0 for p in params)
    return bool(sampled), kmax, 0 if kmax else kmix, filtering, limited


class Sampler:
    """Per-row sampling state for a fixed number of rows (the engine's slots).

    A row's settings become tensors when a request takes the row (`set_row`); every call then
    samples any subset of rows in a fixed number of tensor ops, each row at its own step (the
    index of the token it is choosing), so a row's draw never depends on its neighbours. The
    path (argmax / top-k candidates / nucleus over the whole vocabulary / no filter) is chosen per call from the rows'
    settings; each path gives a row the same token. `compile=True` fuses the step's ops.

    `Sampler(params, device)` with a list sets one row per params, for a one-off batch."""

    def __init__(self, rows: int | list[SamplingParams], device: torch.device, compile: bool = False):
        params = rows if isinstance(rows, list) else None
        n = len(params) if params is not None else rows
        self.device = device
        self.params: list[SamplingParams | None] = [None] * n
        self.greedy = torch.ones(n, dtype=torch.bool, device=device)
        self.temperature = torch.ones(n, 1, dtype=torch.float32, device=device)
        self.top_k = torch.full((n, 1), _TOP_K_OFF, dtype=torch.int64, device=device)
        # inf, not 1.0, when off: a rounded cumsum can exceed 1 and would drop tail tokens.
        self.top_p = torch.full((n, 1), float("inf"), dtype=torch.float64, device=device)  # the nucleus sums in float64
        self.vocab_rows = torch.full((n, 1), _TOP_K_OFF, dtype=torch.int64, device=device)
        self.keys = torch.zeros(n, dtype=torch.int32, device=device)  # 32-bit words, as the hash takes them
        self.step = torch.zeros(n, dtype=torch.int64, device=device)  # written in place: no host sync
        self.id_hash: torch.Tensor | None = None
        self.choose = torch.compile(_choose, fullgraph=True, dynamic=False) if compile else _choose
        for i, p in enumerate(params or []):
            self.set_row(i, p)

    def set_row(self, row: int, p: SamplingParams) -> None:
        """A request takes `row`: its settings, its seed's key, step 0. Greedy rows get harmless
        settings (T=1, no filter); their sampled token is discarded."""
        self.params[row] = p
        self.greedy[row] = p.greedy
        self.temperature[row] = 1.0 if p.greedy else p.temperature
        self.top_k[row] = p.top_k if p.top_k > 0 and not p.greedy else _TOP_K_OFF
        self.top_p[row] = p.top_p if p.top_p < 1 and not p.greedy else float("inf")
        self.vocab_rows[row] = p.vocab_rows or _TOP_K_OFF
        self.keys[row] = _seed_key(p.seed)  # hashed on the host: no copy that waits for the GPU
        self.step[row] = 0

    def args(self, rows: torch.Tensor | slice | None, row_ids: list[int], vocab: int) -> tuple | None:
        """What `choose` needs besides the logits for rows `rows` (`row_ids` the same on the
        host), or None when every row is greedy (argmax). A decode step passes these into its
        compiled graph, so sampling runs inside the captured step."""
        sampled, kmax, kmix, filtering, limited = self.path(row_ids)
        if not sampled and not limited:
            return None
        if self.id_hash is None or self.id_hash.shape[0] != vocab:
            self.id_hash = _hash32(_bits(torch.arange(vocab, device=self.device)))
        pick = (lambda t: t) if rows is None else (lambda t: t[rows])
        return (pick(self.step), pick(self.keys), self.id_hash, pick(self.greedy), pick(self.temperature),
                pick(self.top_k), pick(self.top_p), pick(self.vocab_rows), kmax, kmix, filtering, limited)

    def sample(self, logits: torch.Tensor, rows: torch.Tensor | slice | None, row_ids: list[int]) -> torch.Tensor:
        """logits (n, V) of rows `rows` (None: all rows, in order; `row_ids` the same on the host)
        -> tokens (n,) int64, each at its row's current step."""
        return choose_tokens(logits, self.args(rows, row_ids, logits.shape[1]), self.choose)

    def path(self, row_ids: list[int]) -> tuple[bool, int, int, bool, bool]:
        """Which sampling path rows `row_ids` take (part of a captured graph's key)."""
        return _path([self.params[r] for r in row_ids])

    @property
    def kmax(self) -> int:
        return _path(self.params)[1]

    @property
    def filtering(self) -> bool:
        return _path(self.params)[3]

    def advance(self, rows: torch.Tensor | slice) -> None:
        self.step[rows] += 1

    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """Every row at the same step (a one-off batch)."""
        self.step.fill_(step)
        return self.sample(logits, None, list(range(len(self.params))))
