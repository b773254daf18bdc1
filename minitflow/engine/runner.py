"""The model side of the engine: device state per slot and the two kinds of forward pass.

A slot is a row of the KV cache plus that row of the LoRA buffers and of the sampler, the
last token sampled there and the position it writes next. `prefill` runs the admitted
requests' prompts but their last tokens (right-padded, in forwards of similar lengths, only
real tokens written, each into its slot after any cached or handed-over prefix), with no
lm_head; `decode` runs one step for a set of slots, the last prompt token of a new request
included, and samples the next tokens.
Nothing here knows about queues or text.

Slots without LoRA carry zero factors while a neighbour has some: W x + 0·(0·x) is W x
exactly, so they get bit-identical results, and no per-row branch or mask is needed in the
step; when no running slot has LoRA, the step runs without it.
"""

from __future__ import annotations

from typing import Callable, Collection

import torch

from minitflow.engine.request import Request
from minitflow.engine.sampler import Sampler, choose_tokens
from minitflow.errors import UserError
from minitflow.model.fused import allow_recompiles, decoding
from minitflow.model.kv_cache import KVCache, real_tokens
from minitflow.model.layers import DecoderLayer
from minitflow.model import lora_linear
from minitflow.model.lora import LoraWeights, projection_shapes, GROUPS
from minitflow.model.lora_linear import Folded
from minitflow.model.qwen3 import Capture, Qwen3Model
from minitflow.model.transfer import host_to_device

KV_BUCKET = 256  # static-shape decode: attention length granularity (see kv_bucket)


def kv_bucket(need: int, max_len: int) -> int:
    """Cache positions a static-shape decode step (compiled or CUDA graphs) attends over: multiples of 256 up to 1024, then
    powers of two, so a few captured graphs serve every length while a step does not read the
    whole static cache early in a generation."""
    bucket = -(-need // KV_BUCKET) * KV_BUCKET if need <= 4 * KV_BUCKET else 1 << (need - 1).bit_length()
    return min(bucket, max_len)


def cache_positions(need: int, max_len: int) -> int:
    """Positions per slot of a cache grown for a request of `need` (KV_BUCKET steps, at most max_len)."""
    return min(-(-need // KV_BUCKET) * KV_BUCKET, max_len)


def batch_bucket(n: int, num_slots: int) -> int:
    """Rows a static-shape decode step runs: the next power of two (one graph per size)."""
    return min(1 << (n - 1).bit_length(), num_slots)


FORWARD_TOKENS = 128  # token-rows one more prefill forward is taken to cost (launches, Python): see length_groups


def length_groups(lens: list[int], overhead: float) -> list[list[int]]:
    """Indices of `lens` (prompt tokens to compute per row) split into right-padded forwards, each in
    ascending index order: of the splits of the lengths sorted, the one that computes the fewest
    token-rows (rows x longest, per forward) plus `overhead` per forward. One padded forward of a
    1,024-token prompt beside fifteen of 32 computes 16,384 token-rows for 1,504 real ones; two
    forwards compute the 1,504 for one more overhead. An O(n^2) dynamic programme over at most a
    step's admissions."""
    order = sorted(range(len(lens)), key=lambda i: (lens[i], i))
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):  # best[j]: the cheapest split of the first j sorted rows
        for i in range(j):
            cost = best[i] + overhead + (j - i) * lens[order[j - 1]]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j:
        groups.append(sorted(order[cut[j]:j]))
        j = cut[j]
    return groups[::-1]


def lora_layout(lora: LoraWeights) -> list:
    """What a buffer depends on: which groups each layer has and every factor's shape past the batch."""
    return [[(k, tuple(a.shape[1:]), tuple(tuple(b.shape[1:]) for b in bs)) for k, (a, bs) in layer.items()]
            for layer in lora.layers]


def lora_tensors(lora: LoraWeights) -> list[torch.Tensor]:
    return [t for layer in lora.layers for a, bs in layer.values() for t in (a, *bs)]


def check_lora(lora: LoraWeights, model: Qwen3Model, who: Callable[[], str]) -> None:
    """One request's factors must fit the model: batch 1, A (1, R, in), B blocks (1, out_p, r_p).
    `who()` names the request in an error."""
    if not isinstance(lora, LoraWeights):  # else an AttributeError from deep inside
        raise UserError(f"{who()}: lora must be LoraWeights (build_lora(...), .row(i) for one request), got "
                        f"{type(lora).__name__}")
    cfg = model.cfg
    shapes = projection_shapes(cfg)
    if lora.batch != 1 or len(lora.layers) != cfg.num_hidden_layers:
        raise UserError(f"{who()}: LoRA factors must be for batch 1 and {cfg.num_hidden_layers} layers, got batch "
                        f"{lora.batch} and {len(lora.layers)} layers")
    for i, layer in enumerate(lora.layers):
        for group, (a, bs) in layer.items():
            projs = GROUPS.get(group)
            if projs is None or len(bs) != len(projs):
                raise UserError(f"{who()}: layer {i} has an unknown LoRA group {group!r}")
            n_in = shapes[projs[0]][0]
            ok = a.dim() == 3 and a.shape[0] == 1 and a.shape[2] == n_in and \
                sum(b.shape[2] for b in bs) == a.shape[1] and \
                all(b.dim() == 3 and b.shape[0] == 1 and b.shape[1] == shapes[p][1] for b, p in zip(bs, projs))
            if not ok:
                raise UserError(f"{who()}: LoRA factors of layer {i} {group}: A {tuple(a.shape)} / B "
                                f"{[tuple(b.shape) for b in bs]} do not fit the model")


def check_compiler(device: torch.device) -> None:
    """torch.compile builds a CPU model's kernels with a C++ compiler (inductor): without one the
    first decode step failed, after the load and the prefill, with a 100-line InductorError."""
    if device.type != "cpu":  # CUDA kernels are Triton's
        return
    from torch._inductor import config, cpp_builder, exc
    try:
        cpp_builder.get_cpp_compiler()  # `CXX --version`, once per process
    except exc.InvalidCxxCompiler:
        names = [c for c in (config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else [config.cpp.cxx]) if c]
        raise UserError(f"compile (--compile) on a CPU needs a C++ compiler for torch.compile's kernels, and "
                        f"{' / '.join(names) or 'none'} does not run: install g++ (or set CXX), or run without "
                        "compile") from None


_CAPTURE_STREAMS: dict[torch.device, "torch.cuda.Stream"] = {}


def capture_stream(device: torch.device) -> "torch.cuda.Stream":
    """The one side stream per device that every graph capture warms up and captures on. PyTorch
    keeps a cuBLAS (and a cuBLASLt) workspace for each stream a matmul has run on, for the life
    of the process (32 MiB each on Hopper by cuBLAS's advice), so a new stream per capture (the
    pool hands out 32 in turn) could add up to a gigabyte over a long run's captures; on the
    stream it was warmed up on, a capture also allocates no workspace inside the graphs' pool."""
    device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
    stream = _CAPTURE_STREAMS.get(device)
    if stream is None:
        stream = _CAPTURE_STREAMS[device] = torch.cuda.Stream(device)
    return stream


class ModelRunner:
    """`compile`: decode through `torch.compile` (inductor; CUDA graphs on GPU). `cuda_graphs`:
    the eager step's kernels captured as one CUDA graph per (rows, attention bucket, LoRA,
    sampling path) and replayed, which takes a fraction of a second per graph where inductor
    takes minutes at 4B. Either way a step runs bucketed, static shapes."""

    def __init__(self, model: Qwen3Model, num_slots: int, max_seq_len: int, compile: bool = False,
                 cuda_graphs: bool = False):
        self.model, self.cfg = model, model.cfg
        self.device = model.embed_tokens.weight.device
        self.dtype = model.embed_tokens.weight.dtype
        if cuda_graphs and (compile or self.device.type != "cuda"):
            raise UserError("cuda_graphs needs a CUDA model and excludes compile (which captures its own graphs)")
        if compile:
            check_compiler(self.device)
        self.num_slots, self.max_seq_len = num_slots, max_seq_len
        self.compiled = compile
        self.static_shapes = compile or cuda_graphs  # bucketed rows and attention length
        self.cuda_graphs = cuda_graphs
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None  # one memory pool for every captured graph (they never run concurrently)
        self._restores = DecoderLayer.restores  # the weights' re-storings the graphs were captured after
        self.cache: KVCache | None = None
        self.lora: LoraWeights | None = None  # (num_slots, ...) buffers at fixed addresses
        self.folded: list[dict[str, torch.Tensor]] | None = None  # per layer: weights with A beneath
        self.lora_slots: set[int] = set()
        self.sampler = Sampler(num_slots, self.device, compile=compile)
        self.tokens = torch.zeros(num_slots, dtype=torch.long, device=self.device)  # last sampled
        self.positions = torch.zeros(num_slots, dtype=torch.long, device=self.device)  # next write
        self.next_pos = [0] * num_slots  # the same positions, known on the host without a sync
        self._step = self._compile() if compile else self._decode_step

    # ---- admission -----------------------------------------------------------------------
    def fits(self, req: Request, running: Collection[Request]) -> bool:
        """Whether `req` can take a slot now beside the `running` requests (admitted ones
        included), growing the cache for it if need be. LoRA factors of another layout than a
        running request's wait until no such request runs; then the buffers are made anew for
        them. (Finished requests' slots do not count: their factors stayed behind in the
        buffers, and an engine used to wait for them forever.)"""
        if req.lora is not None:
            held = next((r.lora for r in running if r.lora is not None), None)
            if held is not None and lora_layout(held) != lora_layout(req.lora):
                return False
        if self.cache is None or self.cache.max_len < req.max_len:
            self._grow(req.max_len, idle=not running)
        return True

    def _grow(self, need: int, idle: bool) -> None:
        """A cache of `need` positions per slot (in KV_BUCKET steps, at most max_seq_len). Idle,
        the old one goes first; with slots in use their rows are copied over, which holds both
        caches for a moment instead of making the request wait for every running one to end (a
        stage barrier each time a longer prompt arrives)."""
        old = self.cache
        size = cache_positions(max(need, old.max_len if old else 0), self.max_seq_len)
        self.cache = None
        self._drop_graphs()  # they read the old cache's addresses
        if idle:
            old = None
        self.cache = KVCache(self.cfg.num_hidden_layers, self.num_slots, size,
                             self.cfg.num_key_value_heads, self.cfg.head_dim, self.dtype, self.device)
        if old is not None:
            self.cache.k[:, :, :, :old.max_len].copy_(old.k)
            self.cache.v[:, :, :, :old.max_len].copy_(old.v)
        if self.compiled:  # torch.compile's graphs read the cache in place instead of copying it each step
            torch._dynamo.mark_static_address(self.cache.k)
            torch._dynamo.mark_static_address(self.cache.v)

    def load(self, req: Request, prefix: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Fill `req`'s slot before its prefill: handed-over KV and/or a cached prefix (at
        positions [0, n)), its LoRA factors (or zeros), its sampling settings."""
        slot = req.slot
        assert slot is not None and self.cache is not None
        start = 0
        for kv in (req.past, prefix):
            if kv is not None:
                self.cache.write(slot, start, kv[0], kv[1])
                start += kv[0].shape[2]
        if req.lora is not None:
            if self.lora is None or lora_layout(self.lora) != lora_layout(req.lora):
                self._new_lora_buffers(req.lora)
            # one multi-tensor kernel on CUDA instead of a copy per tensor (~400 at Qwen3-4B's shape)
            torch._foreach_copy_([t[slot] for t in lora_tensors(self.lora)], [t[0] for t in lora_tensors(req.lora)])
            self.lora_slots.add(slot)
        elif slot in self.lora_slots:
            torch._foreach_zero_([t[slot] for t in lora_tensors(self.lora)])
            self.lora_slots.discard(slot)
        self.sampler.set_row(slot, req.sampling)

    def scrub(self, req: Request) -> None:
        """Zero the keys and values `req` wrote in its slot (prompt and decode steps), and its LoRA
        factors there: a prefill-only request's as it ends, an aborted one's. Nothing refused NaN or
        inf from their input (handed-over KV, factors, float16 overflow): the first samples nothing,
        the second went before the host read its NaN token (CUDA's run-ahead). A later row in the slot
        beside a longer one read them through the mask (NaN + -inf is NaN), and a static-shape step's
        junk row of the free slot ran them."""
        slot = req.slot
        n = max(req.context_len, self.next_pos[slot] + 1)  # a decode step writes at next_pos
        with torch.inference_mode():  # the cache and buffers are inference tensors (abort() runs outside)
            self.cache.k[:, slot, :, :n].zero_()
            self.cache.v[:, slot, :, :n].zero_()
            if slot in self.lora_slots:
                torch._foreach_zero_([t[slot] for t in lora_tensors(self.lora)])
                self.lora_slots.discard(slot)

    def clear_cache(self) -> None:
        """Zero every slot's keys and values, and the LoRA factors slots hold, in place (the captured
        graphs keep their addresses). The factors too: a static-shape step runs a free slot as a junk
        row with the factors it holds, and a refused request's NaN ones wrote NaN keys there again."""
        with torch.inference_mode():  # the cache and buffers are inference tensors
            if self.cache is not None:
                self.cache.k.zero_()
                self.cache.v.zero_()
            if self.lora_slots:
                torch._foreach_zero_(lora_tensors(self.lora))  # the other slots' rows are zeros already
                self.lora_slots.clear()

    def _new_lora_buffers(self, like: LoraWeights) -> None:
        """Zeroed (num_slots, ...) buffers for factors shaped like `like`'s. Under
        lora_linear.DECODE_LORA "folded" (not with compile) each A buffer is the spare rows
        beneath its weight (DecoderLayer.spare_rows), which decode multiplies by in one matmul.
        Each engine folds into a copy of its own: two engines on one model (two LLMs over the
        same weights) hold every fused weight twice (~6.8 GiB more at Qwen3-4B in bfloat16), which
        keeps each one's folded decode, and its captured graphs, on tensors it holds itself: the
        other's re-fold or release re-stores the model's parameters, not them."""
        self.lora = None  # the old buffers (and folded weights' spare rows) go before new ones come
        self.lora_slots.clear()  # the requests whose factors they held have finished (see fits)
        self._drop_graphs()  # they read the old buffers' addresses
        fold = lora_linear.DECODE_LORA == "folded" and not self.compiled
        if not fold:
            self._unfold()
        self.folded = None  # folding anew: each old (out + rows, in) tensor goes as its weight is re-stored
        layers, folded = [], []
        for layer, groups in zip(self.model.layers, like.layers):
            buffers, full = {}, {}
            for k, (a, bs) in groups.items():
                if fold:
                    r = a.shape[1]
                    full[k] = layer.spare_rows(k, self.num_slots * r)
                    a_buf = full[k][full[k].shape[0] - self.num_slots * r:].view(self.num_slots, r, a.shape[2])
                else:
                    a_buf = self._zeros(*a.shape[1:])
                buffers[k] = (a_buf, tuple(self._zeros(*b.shape[1:]) for b in bs))
            layers.append(buffers)
            folded.append(full)
        self.folded = folded if fold else None
        self.lora = LoraWeights(layers, self.num_slots)
        for t in lora_tensors(self.lora):
            torch._dynamo.mark_static_address(t)

    def _zeros(self, *shape: int) -> torch.Tensor:
        """A zeroed (num_slots, *shape) buffer in the model's dtype and device, as the folded A rows
        are: not the first factors' (float32 factors for a bfloat16 model ran or failed by what
        had made the buffers before)."""
        return torch.zeros(self.num_slots, *shape, dtype=self.dtype, device=self.device)

    def _unfold(self) -> None:
        """Give the model tight weights again (the spare rows' memory back)."""
        if self.folded is not None:
            for layer, full in zip(self.model.layers, self.folded):
                for k in full:
                    layer.spare_rows(k, 0)
        self.folded = None

    def _lora_rows(self, rows: torch.Tensor | slice, slots: list[int], decode: bool = False) -> LoraWeights | None:
        """The LoRA buffers' rows for `slots`: views when the slots are consecutive (a gather
        per factor tensor otherwise, ~400 kernels at Qwen3-4B's shape); for a decode step over
        consecutive slots with folded buffers, `Folded` projections."""
        if self.lora is None or not self.lora_slots.intersection(slots):
            return None
        if isinstance(rows, torch.Tensor) and slots == list(range(slots[0], slots[0] + len(slots))):
            rows = slice(slots[0], slots[0] + len(slots))
        if decode and self.folded is not None and isinstance(rows, slice):
            return LoraWeights([{k: Folded(full[k], full[k].shape[0] - a.shape[0] * a.shape[1], rows.start,
                                           tuple(b[rows] for b in bs)) for k, (a, bs) in layer.items()}
                                for layer, full in zip(self.lora.layers, self.folded)], len(slots))
        return LoraWeights([{k: (a[rows], tuple(b[rows] for b in bs)) for k, (a, bs) in layer.items()}
                            for layer in self.lora.layers], len(slots))

    # ---- prefill -------------------------------------------------------------------------
    @staticmethod
    def prefill_len(req: Request) -> int:
        """Prompt tokens the prefill computes: all of them for a request that only prefills or
        captures, else all but the last, which the decode step runs as its first input (so the
        first token comes from the same batched lm_head and sampler as every other token, and a
        prefill never samples). A capture that also generates prefills everything and the
        decode step recomputes the last position."""
        return len(req.prompt_ids) - (req.generate and req.capture is None)

    def prefill(self, reqs: list[Request]) -> None:
        """Prefill `reqs` (already loaded into their slots) and fill their captures; a request
        that generates is left with its last prompt token as the slot's next decode input."""
        assert self.cache is not None
        todo = [r for r in reqs if self.prefill_len(r) > r.cached_tokens]
        for group in length_groups([self.prefill_len(r) - r.cached_tokens for r in todo], FORWARD_TOKENS):
            self._forward([todo[i] for i in group])
        for r in reqs:
            self.next_pos[r.slot] = r.context_len if not r.generate else r.context_len - 1
        gen = [r for r in reqs if r.generate]
        if gen:
            rows = host_to_device(torch.tensor([r.slot for r in gen]), self.device)
            self.tokens[rows] = host_to_device(torch.tensor([r.prompt_ids[-1] for r in gen]), self.device)
            self.positions[rows] = host_to_device(torch.tensor([r.context_len - 1 for r in gen]), self.device)

    def _forward(self, reqs: list[Request]) -> None:
        """One right-padded forward over the uncached prompt tokens of `reqs`, no lm_head."""
        b = len(reqs)
        starts = [r.past_len + r.cached_tokens for r in reqs]
        suffixes = [r.prompt_ids[r.cached_tokens:self.prefill_len(r)] for r in reqs]
        lens = [len(s) for s in suffixes]
        t = max(lens)
        x = torch.zeros(b, t, dtype=torch.long)
        pos = torch.zeros(b, t, dtype=torch.long)
        for i, (s, n) in enumerate(zip(suffixes, lens)):
            x[i, :n] = torch.tensor(s)
            pos[i, :n] = torch.arange(starts[i], starts[i] + n)
        slots = [r.slot for r in reqs]
        rows = host_to_device(torch.tensor(slots), self.device)
        capture = None
        if reqs[0].capture is not None:  # the engine groups prefills by capture layers
            capture = Capture(reqs[0].capture.layers,
                              starts=[max(r.capture.starts[0] - r.cached_tokens, 0) for r in reqs],
                              ends=[r.capture.ends[0] - r.cached_tokens for r in reqs],
                              layer_weights=reqs[0].capture.layer_weights,
                              out=None if reqs[0].capture.out is None else [r.capture.out[0] for r in reqs])
        dev = self.device
        self.model(host_to_device(x, dev), host_to_device(pos, dev), self.cache, max(s + n for s, n in zip(starts, lens)),
                   rows=rows, real=real_tokens(lens, dev), lora=self._lora_rows(rows, slots), capture=capture,
                   need_logits=False)
        if capture is not None:
            for i, r in enumerate(reqs):
                r.capture.hidden = capture.out[i][None] if capture.out else capture.hidden[i:i + 1, ..., : capture.lengths[i], :]
                r.capture.lengths = [capture.lengths[i]]

    # ---- decode --------------------------------------------------------------------------
    def _decode_step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, kv_len: int,
                     rows: torch.Tensor | None, lora: LoraWeights | None, sampling: tuple | None) -> torch.Tensor:
        """The model and the sampler: one step's next tokens (one graph when compiled)."""
        logits = self.model(tokens[:, None], positions[:, None], cache, kv_len, rows=rows, lora=lora)[:, -1]
        return choose_tokens(logits, sampling)

    def _compile(self):
        """One graph per (rows, attention bucket, LoRA layout, sampling path), each captured once
        as a CUDA graph ("reduce-overhead") from one whole-step graph, model and sampler (fullgraph: a graph break would split
        the step into several launches). The limit covers every bucket of every row count
        instead of silently falling back to eager after 8."""
        allow_recompiles(128)
        mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        return torch.compile(self._decode_step, mode=mode, fullgraph=True, dynamic=False)

    def decode(self, slots: list[int]) -> tuple[list[int], torch.Tensor]:
        """One decode step for `slots` (sorted): (the slots the step ran, their next tokens).

        Compiled or CUDA graphs: the first `batch_bucket` slots as one view (static shapes; slots
        that hold no request compute junk nobody reads). Eager: the first n slots as a view when they are all
        in use, else exactly `slots` (a gather: the tail of a long-tailed batch costs its rows only).
        """
        assert self.cache is not None
        if self._restores != DecoderLayer.restores:
            # a weight was re-stored (spare_rows: another engine on this model folded LoRA A beneath
            # it or gave it back): the graphs read the old tensor, which nothing holds any more
            self._drop_graphs()
            self._restores = DecoderLayer.restores
        n = slots[-1] + 1
        if self.static_shapes:
            n = batch_bucket(n, self.num_slots)
        rows: torch.Tensor | slice
        if self.static_shapes or len(slots) == n:
            ran, rows, cache_rows = list(range(n)), slice(0, n), None
        else:
            ran = slots
            rows = cache_rows = host_to_device(torch.tensor(slots), self.device)
        need = max(self.next_pos[s] for s in ran) + 1
        kv_len = kv_bucket(need, self.cache.max_len) if self.static_shapes else need
        if self.compiled and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        def args() -> tuple:
            return (self.tokens[rows], self.positions[rows], self.cache, kv_len, cache_rows,
                    self._lora_rows(rows, ran, decode=True), self.sampler.args(rows, ran, self.cfg.vocab_size))
        with decoding():  # fused.FUSE = "decode" fuses here only
            if self.cuda_graphs:
                lora_on = self.lora is not None and bool(self.lora_slots.intersection(ran))
                tokens = self._replay((n, kv_len, lora_on, self.sampler.path(ran)), args)
            else:
                tokens = self._step(*args())
        self.tokens[rows] = tokens.clamp(min=0)  # a NaN-marked row feeds a valid id; the host refuses it
        # a finished slot the host has not heard of yet stays inside the cache
        self.positions[rows] = (self.positions[rows] + 1).clamp(max=self.cache.max_len - 1)
        self.sampler.advance(rows)
        for s in ran:
            self.next_pos[s] = min(self.next_pos[s] + 1, self.cache.max_len - 1)
        return ran, tokens

    def _replay(self, key: tuple, args: Callable[[], tuple]) -> torch.Tensor:
        """Run the decode step as the CUDA graph of its shape `key` (rows, attention bucket,
        LoRA on, sampling path), capturing it on first use; `args` builds the step's inputs
        only then.

        Every input is a view at a fixed address (the first n rows of the slot buffers, the
        cache, the LoRA buffers, the sampler's row state), so a replay reads the current
        values; the returned tokens live in the graph's pool until its next replay (the engine
        copies them at once). The warm-up run before the capture writes the same K/V the
        replay writes again."""
        hit = self.graphs.get(key)
        if hit is None:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            inputs = args()
            main, side = torch.cuda.current_stream(self.device), capture_stream(self.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):  # kernels pick their workspaces outside the capture
                self._decode_step(*inputs)
            main.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, stream=side, capture_error_mode="thread_local"):
                out = self._decode_step(*inputs)
            hit = self.graphs[key] = (graph, out)
        hit[0].replay()
        return hit[1]

    def _drop_graphs(self) -> None:
        """Forget every captured graph and their pool: a pool whose graphs are gone is freed,
        and capturing into its stale handle would fail."""
        self.graphs.clear()
        self._pool = None

    def release_memory(self) -> None:
        self._drop_graphs()
        self.cache, self.lora = None, None
        self._unfold()
        self.lora_slots.clear()
