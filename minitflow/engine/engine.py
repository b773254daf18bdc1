"""The serving loop: requests in, one step at a time, finished requests out.

Each `step()` admits waiting requests into free slots (a cached prefix copied in, the rest
prefilled but the last prompt token), runs one decode step for every running slot (a new
request's last prompt token gives its first new token there), and hands
the new tokens to the host, which appends them, applies EOS / length / stop strings and frees
the slots of finished requests, so the next step refills them (continuous batching).

On CUDA the host does not wait for each step: new tokens are copied to pinned memory behind
the step's kernels and read `run_ahead` steps later, so the GPU always has queued work. A
request that finished meanwhile runs a few junk steps in its slot that nobody reads (once
nothing is in flight, they no longer name it: its tensors go with the caller's last reference).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from typing import Callable, Sequence

import torch

from minitflow.engine.prefix_cache import BLOCK, PrefixCache
from minitflow.engine.request import Request, Status
from minitflow.engine.runner import ModelRunner, check_lora
from minitflow.engine.sampler import NAN_TOKEN, SamplingParams
from minitflow.engine.scheduler import Scheduler
from minitflow.engine.timer import DeviceTimer
from minitflow.errors import UserError
from minitflow.model.qwen3 import Capture, Qwen3Model

RUN_AHEAD = 4  # decode steps the host may queue before it reads their tokens (CUDA)
COND_KEYS = 8  # layer-weight tensors whose condition keys are remembered (tflow makes one per run_method)


def _who(req: Request) -> str:
    """A request as an error names it. Only for an error: a tag's repr may read device tensors
    (a sync per request)."""
    if req.tag is None:
        return f"request {req.id}"
    tag = ", ".join(map(str, req.tag)) if isinstance(req.tag, tuple) else str(req.tag)
    return f"request {req.id} ({tag})"


class TokenRing:
    """New tokens of each step with the requests that owned the rows, read in order. On CUDA
    each step's tokens go to pinned memory behind its kernels and are read `run_ahead` steps
    later (or as soon as they are there); elsewhere at once."""

    def __init__(self, device: torch.device, run_ahead: int):
        self.cuda = device.type == "cuda"
        self.run_ahead = run_ahead if self.cuda else 0
        self.pending: deque = deque()

    def push(self, owners: list[Request | None], tokens: torch.Tensor) -> None:
        if not self.cuda:
            self.pending.append((owners, tokens.tolist(), None))
            return
        host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
        host.copy_(tokens, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((owners, host, event))

    def pop(self, drain: bool = False) -> list[tuple[list[Request | None], list[int]]]:
        out = []
        while self.pending:
            owners, toks, event = self.pending[0]
            if event is not None:
                if drain or len(self.pending) > self.run_ahead:
                    event.synchronize()
                elif not event.query():
                    break
                toks = toks.tolist()
            self.pending.popleft()
            out.append((owners, toks))
        return out

    def forget_owners(self) -> None:
        """Name no request in the unread steps (their tokens are still read, in order): when
        nothing is in flight they are all junk steps of finished requests, which held those
        requests (tflow's receivers: their LoRA factors) until the next step read them."""
        for i, (owners, toks, event) in enumerate(self.pending):
            self.pending[i] = ([None] * len(owners), toks, event)

    def clear(self) -> None:
        self.pending.clear()


_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: Qwen3Model) -> threading.RLock:
    """The one reentrant lock of every engine on `model`: they share its weights, which an
    engine re-stores when it folds LoRA (DecoderLayer.spare_rows) while another's forward reads
    them, so two LLMs on one model in two threads take turns as two threads on one LLM do."""
    with _MODEL_LOCKS_GUARD:
        return _MODEL_LOCKS.setdefault(model, threading.RLock())


class Engine:
    """Slots, scheduler, runner and prefix cache behind `add_request` / `step`. `lock` (reentrant,
    one per model: `model_lock`) makes each call one thread's at a time: two threads' generate()
    calls stepped the same slots and buffers at once and both got wrong tokens without a word;
    now the second waits its turn. A callback run under it (run_method's on_result) must not
    wait for another thread's use of an engine on the same model: that thread waits for it."""

    def __init__(self, model: Qwen3Model, eos_token_ids: set[int], decode: Callable[[list[int]], str] | None,
                 max_seq_len: int, num_slots: int = 16, compile: bool = False, static: bool = False,
                 prefix_cache_bytes: int = 1 << 30, cuda_graphs: bool = False,
                 skip_ids: frozenset[int] = frozenset()):
        """`skip_ids`: ids `decode` drops wherever they stand (Tokenizer.special_ids), left out of
        the stop-string scan's decodes."""
        self.model, self.cfg = model, model.cfg
        self.device = model.embed_tokens.weight.device
        self.eos_token_ids = eos_token_ids
        self.decode_text = decode
        self.skip_ids = skip_ids
        self.max_seq_len = max_seq_len
        self.runner = ModelRunner(model, num_slots, max_seq_len, compile, cuda_graphs)
        self.scheduler = Scheduler(num_slots, static=static)
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.ring = TokenRing(self.device, RUN_AHEAD)
        self._static_slots: list[int] = []
        self._cond_keys: dict[int, tuple] = {}
        self._context_keys: dict[int, tuple] = {}  # key -> weak references to its factors and handed-over KV
        self.steps = self.row_steps = self.useful_row_steps = 0  # decode steps, rows computed, rows used
        self._held: list[Request] = []  # others' requests that finished inside run(): the next step() returns them
        self._chains: dict[int, list] = {}  # request id -> its prefix-cache chain, walked once per admission
        self.lock = model_lock(model)

    # ---- requests ------------------------------------------------------------------------
    def add_request(self, req: Request) -> Request:
        """Queue a request after checking it; one-line UserErrors name it."""
        with self.lock:
            self.check(req)
            self._enqueue(req)
        return req

    def _enqueue(self, req: Request) -> None:
        """Queue a checked request."""
        req.status = Status.WAITING
        self.scheduler.add(req)

    def check(self, req: Request) -> None:
        vocab = self.cfg.vocab_size
        if req.status is not Status.WAITING or req.slot is not None or req.output_ids:
            # run again it appended to its old output_ids; running or finished, it held a slot for good
            raise UserError(f"{_who(req)}: it has already run or is running ({req.status.value}): "
                            "make a new Request for each run")
        for name in ("finish_reason", "text", "cached_tokens"):  # set on a Request (not its arguments)
            if getattr(req, name) not in (None, 0):  # cached_tokens=2 skipped two prompt tokens' prefill
                raise UserError(f"{_who(req)}: {name} is what the engine sets as it runs a request, got "
                                f"{getattr(req, name)!r}: leave it out")
        for name in ("generate", "prefix_cache"):
            if getattr(req, name) not in (True, False):  # "no" is truthy: it generated
                raise UserError(f"{_who(req)}: {name} must be True or False, got {getattr(req, name)!r}")
        if not isinstance(req.sampling, SamplingParams):  # None or a dict: an AttributeError below
            raise UserError(f"{_who(req)}: sampling must be a SamplingParams, got {type(req.sampling).__name__}")
        if req.past is not None:  # before anything reads its length (max_len): else a traceback from there
            if not (isinstance(req.past, (tuple, list)) and len(req.past) == 2 and
                    all(isinstance(t, torch.Tensor) for t in req.past)):
                raise UserError(f"{_who(req)}: past must be a (keys, values) pair of tensors, got "
                                f"{type(req.past).__name__}")
            k, v = req.past
            want = (self.cfg.num_hidden_layers, self.cfg.num_key_value_heads)
            if k.shape != v.shape or k.dim() != 4 or (k.shape[0], k.shape[1], k.shape[3]) != (*want, self.cfg.head_dim):
                raise UserError(f"{_who(req)}: handed-over KV of shape {tuple(k.shape)} does not fit the model")
        if not req.prompt_ids:
            raise UserError(f"{_who(req)}: the prompt is empty")
        if not {*map(type, req.prompt_ids)} <= {int}:  # LLM's paths convert them (as_index); a hand-built
            bad = next(t for t in req.prompt_ids if type(t) is not int)  # Request's 3.0 failed inside a step
            raise UserError(f"{_who(req)}: prompt_ids must be plain ints, got {type(bad).__name__} {bad!r:.40}")
        lo, hi = min(req.prompt_ids), max(req.prompt_ids)
        if lo < 0 or hi >= vocab:
            raise UserError(f"{_who(req)}: token id {lo if lo < 0 else hi} outside the model's vocabulary of {vocab}")
        if req.generate and req.sampling.stop and self.decode_text is None:
            raise UserError(f"{_who(req)}: stop strings need a tokenizer to read the text, and this engine has none")
        if req.generate and req.sampling.vocab_rows > vocab:
            raise UserError(f"{_who(req)}: vocab_rows {req.sampling.vocab_rows} is more than the model's vocabulary of {vocab}")
        if req.max_len > self.max_seq_len:
            raise UserError(f"{_who(req)}: {req.context_len} prompt tokens + max_new_tokens "
                            f"{req.sampling.max_new_tokens if req.generate else 0} is more than the cache's "
                            f"{self.max_seq_len} positions")
        if req.lora is not None:
            check_lora(req.lora, self.model, lambda: _who(req))
        if req.capture is not None:
            c = req.capture
            if not isinstance(c, Capture):  # else an AttributeError from deep inside
                raise UserError(f"{_who(req)}: capture must be a Capture, got {type(c).__name__}")
            if len(c.starts) != 1 or len(c.ends) != 1 or not 0 <= c.starts[0] < c.ends[0] <= len(req.prompt_ids):
                raise UserError(f"{_who(req)}: capture span {list(zip(c.starts, c.ends))} is not one span inside its "
                                f"{len(req.prompt_ids)} prompt tokens")
            n = self.cfg.num_hidden_layers
            w = c.layer_weights
            if w is not None and not isinstance(w, torch.Tensor):
                raise UserError(f"{_who(req)}: capture layer weights must be a tensor, got {type(w).__name__}")
            if len(c.layers) == 0 or not c.layers_fit(n) or (w is not None and tuple(w.shape) != (len(c.layers),)):
                weights = "" if w is None else f" with layer weights of shape {tuple(w.shape)}"
                raise UserError(f"{_who(req)}: capture layers {list(c.layers)}{weights} are not distinct layers of the "
                                f"model's {n} layers (0, the embeddings, to {n}, the final norm), one weight each")
            want = (len(c.layers), c.ends[0] - c.starts[0], self.cfg.hidden_size)
            if c.out is not None and (w is not None or len(c.out) != 1 or not isinstance(c.out[0], torch.Tensor) or
                                      tuple(c.out[0].shape) != want):
                raise UserError(f"{_who(req)}: capture out must be one tensor of shape {want} (layers, span, hidden), "
                                "without layer weights")
        if req.context_key is not None:  # last: a key is taken by a request that passed every other check
            self._check_context_key(req)

    def _check_context_key(self, req: Request) -> None:
        """A context key stands for the context of the first request that brought it to this
        engine: the same factors and handed-over KV objects. Another context under it would take
        that one's cached prompt KV, wrong without a word: refused."""
        key, has = req.context_key, req.lora is not None or req.past is not None
        if not has or isinstance(key, bool) or not isinstance(key, int) or key < 1:
            raise UserError(f"{_who(req)}: context_key must be a key from new_context_key() on a request with LoRA "
                            f"factors or handed-over KV, got {key!r}" + ("" if has else " without either"))
        objs = (req.lora, None if req.past is None else req.past[0])
        refs = self._context_keys.get(key)
        if refs is None:
            self._context_keys[key] = tuple(None if o is None else weakref.ref(o) for o in objs)
        elif any((r is None) != (o is None) or (r is not None and r() is not o) for r, o in zip(refs, objs)):
            raise UserError(f"{_who(req)}: context_key {key} came with other LoRA factors or handed-over KV than "
                            "its first request's: a key is one context (new_context_key() for each)")

    def in_flight(self) -> bool:
        """Requests waiting, running, or finished and not yet returned by step(): has_unfinished()
        without the junk steps of finished requests that a CUDA engine has still to read."""
        return bool(self.scheduler.waiting or self.scheduler.running or self._held)

    def has_unfinished(self) -> bool:
        return bool(self.scheduler.waiting or self.scheduler.running or self.ring.pending or self._held)

    # ---- one step ------------------------------------------------------------------------
    def step(self) -> list[Request]:
        """Admit, prefill, decode once; return the requests that finished. An exception (or
        Ctrl-C) aborts every request in flight and leaves the engine ready for new ones."""
        with self.lock:
            try:
                with torch.inference_mode():  # the cache and buffers are inference tensors
                    finished = self._step()
            except BaseException:
                self.abort_all()
                raise
            held, self._held = self._held, []
            if self.ring.pending and not self.in_flight():  # host-only: no wait for the device
                self.ring.forget_owners()
            return held + finished

    def abort_all(self) -> list[Request]:
        """Abort every request in flight, and zero the KV cache and the slots' LoRA factors: a
        refused request may leave NaN there, which a later row attending past its own positions
        (beside a longer one) would read through the mask (NaN + -inf is NaN); its factors wrote
        NaN keys again from a junk row of a static-shape step. (A prefill-only request, which
        nothing refuses, scrubs its slot as it ends: ModelRunner.scrub.)"""
        with self.lock:
            self.ring.clear()
            self.runner.clear_cache()
            self._held = []  # finished, but for a caller that is unwinding: not the next one's step()
            gone, now = self.scheduler.abort_all(), time.perf_counter()
            for req in gone:  # as abort() marks one: a stream holding it reads why it ended
                req.finish_reason, req.finished_t = "abort", now
            return gone

    def abort(self, req: Request) -> bool:
        """Abort one request, queued or running: its slot is free for the next step, and the
        tokens of steps still in flight for it are dropped (`_accept` skips a finished request).
        A running one's keys, values and factors are zeroed there (ModelRunner.scrub): on CUDA it
        may go before the host reads its NaN logits, and its NaN keys then reached the next short
        request in the slot through the mask, and from its prefill the prefix cache. True when it
        was in flight here; False for one finished, already aborted or never added (a stream may
        race its last token: nothing to undo)."""
        if not isinstance(req, Request):  # else an AttributeError on .slot
            raise UserError(f"abort takes a Request from add_request, got {type(req).__name__}")
        with self.lock:
            running = req.slot is not None and self.scheduler.running.get(req.slot) is req
            if req.finished or not self.scheduler.abort(req):
                return False
            if running:
                self.runner.scrub(req)
            req.finish_reason, req.finished_t = "abort", time.perf_counter()
            return True

    def _step(self) -> list[Request]:
        finished: list[Request] = []
        self._chains.clear()  # a chain walked in an earlier step may have lost blocks to inserts since
        admitted = self.scheduler.admit(lambda r: self.runner.fits(r, running=self.scheduler.running.values()),
                                        self._prefill_cost, self._waits)
        if admitted:
            if self.scheduler.static:
                self._static_slots = sorted(r.slot for r in admitted if r.generate)
            finished += self._prefill(admitted)
        running = sorted(s for s, r in self.scheduler.running.items() if r.generate)
        if running:
            # static: the whole batch computes until its last request ends (the old path)
            ran, tokens = self.runner.decode(self._static_slots if self.scheduler.static else running)
            self.steps += 1
            self.row_steps += len(ran)
            self.useful_row_steps += len(running)
            self.ring.push([self.scheduler.running.get(s) for s in ran], tokens)
        return finished + self._collect(drain=not running)

    def _collect(self, drain: bool) -> list[Request]:
        """Apply the tokens the host may read now; the requests they finished."""
        finished = []
        for owners, toks in self.ring.pop(drain=drain):
            for req, tok in zip(owners, toks):
                if req is not None and self._accept(req, tok):
                    finished.append(req)
        return finished

    def _cond_key(self, capture) -> object:
        """What a summed condition row depends on besides the tokens: the layers and weights. The
        weights' values are remembered per tensor (reading them waits for the device) while its
        version counter stands: changed in place (a sweep over layers in one tensor), the cached
        rows of the old values were served. An inference tensor has no counter, so a change in place
        goes unseen: its key is the tensor (the requests of one prefill forward share its weights),
        and `_reusable` keeps its rows out of the prefix cache."""
        w = capture.layer_weights
        if w is None:
            return None
        if w.is_inference():
            return tuple(capture.layers), id(w)  # every request holding w is alive while its step runs
        version = w._version
        hit = self._cond_keys.get(id(w))
        if hit is None or hit[0] is not w or hit[1] != version:
            if hit is None and len(self._cond_keys) >= COND_KEYS:  # the oldest: a run long done (each entry holds its tensor)
                del self._cond_keys[next(iter(self._cond_keys))]
            hit = self._cond_keys[id(w)] = (w, version, tuple(w.tolist()))
        return tuple(capture.layers), hit[2]

    def _reusable(self, r: Request) -> tuple[int, tuple | None, int] | None:
        """(limit, span, root) of `r`'s prefix-cache lookup, None when its KV is not reusable
        (handed-over KV or LoRA factors without a `context_key`: not a function of the tokens
        alone), or kept out of it. A keyed request's blocks hang under a root of their own: only
        the requests of its context share them."""
        if not r.prefix_cache or (r.context_key is None and (r.lora is not None or r.past is not None)):
            return None
        root = 0 if r.context_key is None else -r.context_key
        c = r.capture
        if c is None:
            return len(r.prompt_ids) - 1, None, root
        if c.layer_weights is None or c.layer_weights.is_inference():
            # all layers, or summed by weights that may change in place unseen (_cond_key): no row
            # before the span's start reusable inside it (the KV before it does not depend on them)
            return c.starts[0], None, root
        # a summed condition: cached rows of it too, leaving one span token to compute
        return min(len(r.prompt_ids), c.ends[0]) - 1, (self._cond_key(c), c.starts[0]), root

    def _prefill_cost(self, r: Request) -> int:
        """What admission charges `r` against the prefill token budget: the tokens its prefill
        computes, not those the prefix cache gives (its whole prompt was charged, so a step of cache
        hits prefilled a fraction of what it could)."""
        reuse = self._reusable(r)
        cached = 0 if reuse is None else len(self._chain(r, reuse)) * BLOCK
        return max(self.runner.prefill_len(r) - cached, 0)

    def _chain(self, r: Request, reuse: tuple[int, tuple | None, int]) -> list:
        """`r`'s prefix-cache chain (PrefixCache.chain), walked once for admission's questions and
        its lookup: nothing is inserted or evicted from admission until the lookups end."""
        found = self._chains.get(r.id)
        if found is None:
            found = self._chains[r.id] = self.prefix_cache.chain(r.prompt_ids, *reuse)
        return found

    def _waits(self, r: Request, batch: list[Request]) -> bool:
        """Whether `r` should wait a step for blocks of its prompt that a request of `batch` is
        about to store in the prefix cache, rather than compute them beside it: the K samples of a
        prompt, questions that share a role prompt or a few-shot block on a cold cache. Only when it
        is admitted depends on this (and, as for any other batch it could run in, the last bits of
        its floats on CPU)."""
        reuse = self._reusable(r)
        if reuse is None or not batch or self.prefix_cache.budget <= 0:
            return False
        limit, span, root = reuse
        cached = len(self._chain(r, reuse)) * BLOCK
        if (cached // BLOCK + 1) * self.runner.cache.nbytes(BLOCK) > self.prefix_cache.budget:
            return False  # its next block and the prefix under it exceed the budget: nobody stores that block
        for other in batch:
            theirs = self._reusable(other)
            if theirs is None or theirs[2] != root:  # their blocks go under another root
                continue
            n = min(limit, self.runner.prefill_len(other))
            if span is not None and theirs[1] != span:  # their blocks past our span start hold no rows of ours
                n = min(n, span[1])
            # its next block is one `other` stores, on the same chain (the block first: the cheap test)
            a = cached
            if a + BLOCK <= n and r.prompt_ids[a:a + BLOCK] == other.prompt_ids[a:a + BLOCK] and \
                    r.prompt_ids[:a] == other.prompt_ids[:a]:
                return True
        return False

    def _prefill(self, reqs: list[Request]) -> list[Request]:
        now = time.perf_counter()
        r_cond: dict[int, object] = {}
        reuses = {r.id: self._reusable(r) for r in reqs}  # what each takes from the cache is what it stores into
        for r in reqs:
            r.admitted_t = now
            prefix, cached_cond = None, None
            reuse = reuses[r.id]
            if reuse is not None:
                n, k, v, cached_cond = self.prefix_cache.lookup(r.prompt_ids, reuse[0], span=reuse[1], root=reuse[2],
                                                                found=self._chains.get(r.id))
                r.cached_tokens = n
                prefix = (k, v) if n else None
            self.runner.load(r, prefix)
            r_cond[r.id] = cached_cond
        self._chains.clear()  # the inserts below change the cache
        groups: dict[tuple | None, list[Request]] = {}
        for r in reqs:  # one forward per capture layout (usually one)
            key = None if r.capture is None else (tuple(r.capture.layers), self._cond_key(r.capture),
                                                  r.capture.out is None)
            groups.setdefault(key, []).append(r)
        finished = []
        for group in groups.values():
            timer = DeviceTimer(self.device)  # no sync: queued decode steps keep the GPU busy meanwhile
            self.runner.prefill(group)
            for r in group:
                c = r.capture
                if r_cond.get(r.id) is not None:  # the condition rows the prefix cache gave come first
                    c.hidden = torch.cat([r_cond[r.id][None].to(c.hidden.dtype), c.hidden], dim=1)
                    c.lengths = [c.hidden.shape[1]]
                reuse = reuses[r.id]
                if reuse is not None:  # the KV the prefill wrote, and the condition rows its lookup could take
                    cond = None if reuse[1] is None else (*reuse[1], c.hidden[0])
                    self.prefix_cache.insert(  # at the slot's positions after any handed-over KV
                        r.prompt_ids[:self.runner.prefill_len(r)],
                        lambda a, b, s=r.slot, o=r.past_len: self.runner.cache.read(s, o + a, o + b), cond,
                        block_bytes=self.runner.cache.nbytes(BLOCK), root=reuse[2])
            timer.stop()
            for r in group:
                r.prefill_timer = timer
                if not r.generate:
                    r.finish_reason, r.status, r.finished_t = "prefill", Status.FINISHED, time.perf_counter()
                    self.runner.scrub(r)
                    self.scheduler.release(r)
                    finished.append(r)
        return finished

    def _accept(self, req: Request, tok: int) -> bool:
        """Append a token to a running request; True when this token finished it."""
        if req.finished:
            return False  # a junk step after its end
        if tok == NAN_TOKEN:
            raise UserError(f"{_who(req)}: the model's logits are NaN at its output token {len(req.output_ids) + 1} "
                            "(float16 overflow? run in bfloat16 or float32; or NaN/inf in the weights or LoRA factors)")
        if not req.output_ids:
            req.first_token_t = time.perf_counter()
        req.output_ids.append(tok)
        sp = req.sampling
        if not sp.ignore_eos and tok in self.eos_token_ids:
            reason = "stop"
        elif sp.stop and self._stop_string(req):
            reason = "stop"
        elif len(req.output_ids) >= sp.max_new_tokens:
            reason = "length"
        else:
            return False
        req.finish_reason, req.status, req.finished_t = reason, Status.FINISHED, time.perf_counter()
        self.scheduler.release(req)
        return True

    def _stop_string(self, req: Request) -> bool:
        """Whether decode_text(output_ids) holds a stop string; req.text is then cut before the
        earliest. Incremental (StopScan): the whole output is not decoded again at each token."""
        text = req.stop_scan.find(self.decode_text, req.output_ids, req.sampling.stop, self.skip_ids)
        if text is not None:
            req.text = text
        return text is not None

    def run(self, reqs: Sequence[Request]) -> list[Request]:
        """Add `reqs` and step until all of them are done. Others in flight advance too, and those
        that finish here come out of the next step(): a generate() inside run_method's on_result
        took them, and run_method waited forever for its questions. An exception (or Ctrl-C)
        between steps aborts every request in flight, as one inside a step does: else this run's
        requests stayed queued, and the next generate() ran them all before its own."""
        with self.lock:  # another thread's step() would take tokens of these slots
            for r in reqs:
                self.check(r)
            try:
                for r in reqs:  # checked above: add_request would check each again (a walk of its prompt)
                    self._enqueue(r)
                mine = {id(r) for r in reqs}
                done_upto = 0  # reqs[:done_upto] have finished (none unfinishes): no scan of them all per step
                while True:
                    while done_upto < len(reqs) and reqs[done_upto].finished:
                        done_upto += 1
                    if done_upto == len(reqs):
                        break
                    done = self.step()  # before reading self._held, which step() empties
                    self._held += [r for r in done if id(r) not in mine]
            except BaseException:
                self.abort_all()
                raise
        return list(reqs)
