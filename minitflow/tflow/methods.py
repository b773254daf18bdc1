"""The paper's methods as request pipelines on the serving engine: baseline, textmas, tflow.

A question is a small graph of requests. baseline: one generation. textmas: two sender
generations, then the receiver with their texts. tflow: two prefill-only sender requests
that capture the condition (the layer aggregator's sum, as the layers run), then the
generator, batched over every question whose senders finished in the same engine step, then
the receiver with its generated factors in its slot. Stages of different questions overlap:
a slot never waits for another question's stage, and a question's output does not depend on
which others run beside it. latentmas streams the same way (latentmas.stream_latentmas): its
senders run in lockstep groups beside the engine, their judgers on it.

Every result carries per-agent token usage (prompt, cached, completion; tflow's senders count
their forward pass as processed prompt tokens), the processed total, the official count
(generating agents only, as in the paper's Table 1) and seconds per stage for that question.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from minitflow.engine.engine import TokenRing
from minitflow.engine.llm import LLM
from minitflow.engine.timer import DeviceTimer
from minitflow.engine.request import Request, new_context_key
from minitflow.engine.sampler import SamplingParams, per_row
from minitflow.errors import UserError, check_int, check_ordered, is_int
from minitflow.model.lora import LoraWeights, build_lora, projection_shapes
from minitflow.model.tokenizer import render_chat
from minitflow.tflow import prompts
from minitflow.tflow.prompts import METHODS
from minitflow.tflow.checkpoint import TFlowGenerator
from minitflow.tflow.condition import generator_factors, sender_prompt, sender_request, stack_conditions
from minitflow.tflow.generator import PIECE_TOKENS
from minitflow.tflow.latentmas import (JUDGER, OPTIONS as LATENT_OPTIONS, SENDERS, agent_prompt_text,
                                       stream_latentmas, validate_options)
from minitflow.tflow.stream import (REFILL_SHARE, SEEDS, AgentUsage, MethodResult, check_keep, check_refill_share,
                                    check_samples, run_step, sample_seed, stream_window)

# run_method's method-specific keyword options, each for one method: latentmas' refused on another, the rest ignored
OPTIONS = ("sender_max_new_tokens", "generator_batch", "generator_piece", *LATENT_OPTIONS)
SENDER_WEIGHTS = (0.5, 0.5)  # official fixed fusion weights of senders A and B
TEXTMAS_SEED_B = 1_000_003  # sender B samples with the question's seed plus this (mod 2^64)
# Questions per generator call, by device type (None: every question whose senders finished in
# the same engine step). On CPU its activations grow with every question batched (each is tens
# of thousands of parameter tokens at Qwen3-4B's shape) while its cost per question does not
# fall (bench/generator_memory.py), so questions go one by one. On a GPU a call's kernel
# launches are shared by its questions: on an H200 at Qwen3-4B's shape, 20 questions in one call
# took tflow-20 0.75x the time of one per call at the same peak memory (13.4 against 13.2 GiB;
# bench/test_e2e.py::test_tflow_generator_options), the stages' pieces bounding the activations.
GENERATOR_BATCH: dict[str, int | None] = {"cpu": 1, "cuda": None}


def default_generator_batch(device: torch.device | str) -> int | None:
    """GENERATOR_BATCH for `device` (one question per call on devices not measured)."""
    return GENERATOR_BATCH.get(torch.device(device).type, 1)


def slots_per_question(method: str) -> int:
    """Requests one question runs at once at its widest stage: textmas' two senders generate
    together (the official batch runs them as 2 x batch rows, and a decode step costs about the
    same with twice the rows); every other method has one generating request at a time (tflow's
    senders are prefill-only). An engine for `n` questions in flight wants n times this."""
    return 2 if method == "textmas" else 1


def chat_text(system: str, question: str, context: str = "") -> str:
    """An agent's prompt text (also counted before the model loads, positions_needed)."""
    msgs = [{"role": "system", "content": system}]
    if context:
        msgs += [{"role": "user", "content": context},
                 {"role": "assistant", "content": prompts.TEXTMAS_ASSISTANT_TURN}]
    return render_chat(msgs + [{"role": "user", "content": question}], add_generation_prompt=True)


def chat(llm: LLM, system: str, question: str, context: str = "") -> list[int]:
    return llm.encode(chat_text(system, question, context))


def positions_needed(method: str, encode: Callable[[str], list[int]], style: str, question: str,
                     sender_question: str, max_new_tokens: int, **options) -> int:
    """The most cache positions one of the question's requests takes (prompt, handed-over KV, new
    tokens), counted from the prompts alone: what the engine checks only at each request's turn.
    textmas' receiver is counted with empty sender texts (theirs are not known before they run)."""
    return request_positions(method, encode, style, question, sender_question, max_new_tokens, **options)[0]


def request_positions(method: str, encode: Callable[[str], list[int]], style: str, question: str,
                      sender_question: str, max_new_tokens: int, **options) -> tuple[int, int]:
    """(positions_needed, the positions the question's senders hold outside the engine's cache
    until its judger takes them over: latentmas' cache row (prompts and latent steps), 0 for the
    other methods), from one tokenisation of the prompts: what the memory check before the weights
    load (cli.check_memory) sizes the caches from."""
    style = prompts.resolve_style(style)  # an alias ("math") as run_method reads it

    def chat_len(system: str, q: str, context: str = "") -> int:
        return len(encode(chat_text(system, q, context)))

    if method == "baseline":
        return chat_len(prompts.baseline_system(style), question) + max_new_tokens, 0
    if method == "textmas":
        (_, a_sys), (_, b_sys), (_, c_sys) = prompts.textmas_roles(style)
        sender_max = options.get("sender_max_new_tokens") or prompts.TEXTMAS_SENDER_MAX_NEW_TOKENS
        return max(chat_len(a_sys, sender_question) + sender_max, chat_len(b_sys, sender_question) + sender_max,
                   chat_len(c_sys, question, textmas_context(style, ["", ""])) + max_new_tokens), 0
    if method == "tflow":  # the senders are prefill-only
        a_sys, b_sys, c_sys = prompts.tflow_agents(style)
        senders = [len(encode(sender_prompt(system, sender_question))) for system in (a_sys, b_sys)]
        return max(*senders, chat_len(c_sys, question) + max_new_tokens), 0
    if method == "latentmas":
        k, topology = options.get("latent_steps") or 0, options.get("topology") or "sequential"
        think = bool(options.get("think"))
        roles = (*(SENDERS if k > 0 or options.get("handover_at_zero") else ()), JUDGER)
        lengths = [len(encode(agent_prompt_text(role, question if role == JUDGER else sender_question, style,
                                                topology, think))) for role in roles]
        held = sum(lengths[:-1]) + k * (len(roles) - 1)  # latentmas._plan's sender_len
        return held + lengths[-1] + max_new_tokens, held
    raise UserError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")


def textmas_context(style: str, texts: Sequence[str]) -> str:
    """The receiver's context turn: each sender's text under "[role | Round 0]", joined by "---"."""
    names = [name for name, _ in prompts.textmas_roles(style)[:-1]]
    return "\n\n---\n\n".join(f"[{name} | Round 0]\n{text}" for name, text in zip(names, texts))


def generated_lora(llm: LLM, generator: TFlowGenerator, hidden: torch.Tensor, mask: torch.Tensor | None,
                   n: int, aggregated: bool = False,
                   piece: int | None = PIECE_TOKENS) -> LoraWeights:
    """Generator -> the receiver's fused LoRA; rows of `hidden` are senders outermost, n questions
    each: all L+1 layers (B, L+1, S, H), or with `aggregated` the layer aggregator's sum (B, S, H),
    which inference passes, with the generator in pieces of `piece` parameter tokens
    (condition.generator_factors). Without `aggregated` it is differentiable: training uses it."""
    factors = generator_factors(generator, hidden, mask, piece) if aggregated else generator(hidden, mask)
    per_sender = [{k: (a[i * n:(i + 1) * n].to(llm.dtype), b[i * n:(i + 1) * n].to(llm.dtype))
                   for k, (a, b) in factors.items()} for i in range(len(SENDER_WEIGHTS))]
    return build_lora(llm.cfg, per_sender, [w * generator.arch.lora_scale for w in SENDER_WEIGHTS])


@dataclass(eq=False, repr=False)
class _Question:
    index: int
    question: str
    sender_question: str
    sampling: SamplingParams
    start_t: float = field(default_factory=time.perf_counter)
    agents: dict[str, Request] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    # stage -> the device timers whose longest span it took, read once the question is done
    timers: dict[str, list[DeviceTimer]] = field(default_factory=dict)
    label: str = ""  # what an error calls it (evaluate: its sample id); "question {index}" if empty
    sample: int = 0  # which of the question's samples this is (run_method's `samples`)
    # tflow: sample 0 runs the senders and the generator; samples 1.. (its followers) only their receivers
    followers: list["_Question"] = field(default_factory=list)

    def __repr__(self) -> str:  # names a request in an error; never prints its agents' tensors
        return self.label or f"question {self.index}"


class _Pipeline:
    """One method's request graph. `start` queues a question's first requests; `advance` takes
    the requests finished in one engine step, queues what they unblock, and returns the
    questions that are done."""

    method = ""
    final = ""  # the agent whose answer is the question's

    def __init__(self, llm: LLM, style: str, window: int):
        self.llm, self.style, self.window = llm, style, window

    def add(self, q: _Question, agent: str, req: Request) -> None:
        req.tag = (q, agent)
        q.agents[agent] = req
        self.llm.engine.add_request(req)

    def start(self, q: _Question) -> None:
        raise NotImplementedError

    def step(self) -> list[Request]:
        return run_step(self.llm)

    def advance(self, finished: list[Request]) -> list[_Question]:
        raise NotImplementedError

    def text(self, req: Request) -> str:
        """A finished request's text (cut before a stop string when one ended it)."""
        return req.text if req.text is not None else self.llm.tokenizer.decode(req.output_ids)

    def result(self, q: _Question) -> MethodResult:
        """A finished question's result. Its requests go with it (tflow's receiver holds its LoRA
        factors, 32 MiB at Qwen3-4B's shape): a run keeps the questions in flight, not all it did."""
        final = q.agents[self.final]
        usage = {k: AgentUsage.of(r) for k, r in q.agents.items()}
        times = {**q.times, **{k: max((t.seconds for t in ts if t is not None), default=0.0) for k, ts in q.timers.items()},
                 "receiver_prefill_s": final.prefill_s, "decode_s": final.decode_s,
                 "queue_s": final.queue_s, "total_s": final.finished_t - q.start_t}
        result = MethodResult(self.method, self.style, q.question, self.text(final), final.finish_reason or "length",
                              usage, times, self.window, final.output_ids, sampling=final.sampling, sample=q.sample,
                              compiled=self.llm.compiled)
        q.agents.clear()  # also breaks the cycle request.tag -> q -> request: freed now, not at a gc pass
        q.timers.clear()
        return result


class _Baseline(_Pipeline):
    method, final = "baseline", "single"

    def start(self, q):
        self.add(q, "single", Request(chat(self.llm, prompts.baseline_system(self.style), q.question), q.sampling))

    def advance(self, finished):
        return [r.tag[0] for r in finished]


class _TextMAS(_Pipeline):
    method = "textmas"

    def __init__(self, llm, style, window,
                 sender_max_new_tokens: int | Sequence[int] = prompts.TEXTMAS_SENDER_MAX_NEW_TOKENS):
        super().__init__(llm, style, window)
        self.roles = prompts.textmas_roles(style)
        self.final = self.roles[2][0]
        self.sender_max = sender_max_new_tokens

    def start(self, q):
        limit = self.sender_max if isinstance(self.sender_max, int) else self.sender_max[q.index]
        sp = replace(q.sampling, max_new_tokens=limit)
        (a, a_sys), (b, b_sys), _ = self.roles
        self.add(q, a, Request(chat(self.llm, a_sys, q.sender_question), sp))
        self.add(q, b, Request(chat(self.llm, b_sys, q.sender_question), replace(sp, seed=(sp.seed + TEXTMAS_SEED_B) % SEEDS)))

    def advance(self, finished):
        (a, _), (b, _), (c, c_sys) = self.roles
        done = []
        for r in finished:
            q, agent = r.tag
            if agent == c:
                done.append(q)
            elif q.agents[a].finished and q.agents[b].finished and c not in q.agents:
                q.times["senders_s"] = time.perf_counter() - q.start_t
                texts = [self.text(q.agents[x]) for x in (a, b)]
                receiver = Request(chat(self.llm, c_sys, q.question, textmas_context(self.style, texts)), q.sampling)
                try:
                    self.add(q, c, receiver)
                except UserError as e:  # the one prompt no check before the run can size
                    if receiver.max_len <= self.llm.max_seq_len:
                        raise
                    raise UserError(f"{e} (its prompt holds the senders' texts, {len(receiver.prompt_ids)} tokens in "
                                    "all: a smaller sender_max_new_tokens or max_new_tokens fits it)") from None
        return done

    def result(self, q):
        """With the official `conversation_log`: each sender's text as textmas_context gave it to the
        receiver, then the receiver's answer (read before the base result lets the requests go)."""
        (a, _), (b, _), (c, _) = self.roles
        senders = [{"agent": x, "round": 0, "text": self.text(q.agents[x])} for x in (a, b)]
        result = super().result(q)
        result.conversation_log = [*senders, {"agent": c, "round": 1, "text": result.answer}]
        return result


def check_generator(generator: object, cfg) -> None:
    """Refuse a generator that is not one, or one made for another backbone, before any request
    runs: a path failed on .parameters(), and another shape once the senders had run (another
    layer count as a capture error, another hidden size as torch's matmul error in the generator,
    other projections as a LoRA error at the receiver)."""
    if not isinstance(generator, TFlowGenerator):
        raise UserError(f"generator must be a TFlowGenerator (load_checkpoint(path, llm.cfg, llm.dtype, llm.device)), "
                        f"got {type(generator).__name__}")
    pg, shapes = generator.parameter_generator, projection_shapes(cfg)
    have = {"layers": generator.pg_layer_aggregator.layer_weights.shape[0] - 1, "generated layers":
            generator.arch.num_base_model_layers, "hidden size": pg.hidden_in.in_features,
            **{k: pg.shapes.get(k) for k in shapes}}
    want = {"layers": cfg.num_hidden_layers, "generated layers": cfg.num_hidden_layers,
            "hidden size": cfg.hidden_size, **shapes}
    diffs = [f"{k} {have[k]} (this LLM: {want[k]})" for k in want if have[k] != want[k]]
    if diffs:
        raise UserError(f"the generator is for another backbone: {', '.join(diffs)} (a checkpoint or random_generator "
                        "made for another model?)")


class _TFlow(_Pipeline):
    method, final = "tflow", "receiver"

    def __init__(self, llm, style, window, generator: TFlowGenerator, generator_batch: int | None | str = "device",
                 generator_piece: int | None = PIECE_TOKENS):
        super().__init__(llm, style, window)
        if generator_batch == "device":
            generator_batch = default_generator_batch(llm.device)
        if generator_batch is not None and (not is_int(generator_batch) or generator_batch < 1):
            raise UserError(f"generator_batch must be >= 1 or None, got {generator_batch!r}")
        generator_batch = None if generator_batch is None else int(generator_batch)  # numpy's too
        if generator_piece is not None and (not is_int(generator_piece) or generator_piece < 1):
            # True was a TypeError from torch.narrow, after the senders ran
            raise UserError(f"generator_piece must be >= 1 or None, got {generator_piece!r}")
        generator_piece = None if generator_piece is None else int(generator_piece)
        check_generator(generator, llm.cfg)
        where = next(generator.parameters()).device
        if where != llm.device:  # else a device mismatch deep in the generator, once the senders have run
            raise UserError(f"the generator is on {where} and the LLM on {llm.device}: load it with "
                            "load_checkpoint(..., device=llm.device), or move it with .to(llm.device)")
        self.generator, self.generator_batch, self.generator_piece = generator, generator_batch, generator_piece
        self.systems = prompts.tflow_agents(style)
        # per generator call, which questions' conditions are finite: on CUDA read once there (the
        # receivers' tokens, read anyway, come after them), never waited for (no sync of their own)
        self.finite = TokenRing(llm.device, run_ahead=sys.maxsize)
        with torch.no_grad():  # not an inference tensor: the engine caches condition rows only under a version counter
            self.layer_weights = generator.pg_layer_aggregator.weights().float().to(llm.device)

    def start(self, q):
        if q.sample:  # a follower: its receiver is queued with its sample 0's, from the same factors
            return
        for name, system in zip(("sender_A", "sender_B"), self.systems[:2]):
            self.add(q, name, sender_request(self.llm, system, q.sender_question, self.layer_weights))

    def step(self):
        try:
            return run_step(self.llm)
        except UserError:  # the receiver's NaN logits: a NaN condition, when it was one, is the cause
            self.check_conditions(wait=True)
            raise

    def check_conditions(self, wait: bool = False) -> None:
        """A NaN or inf in a sender's condition (its hidden states) poisons every factor the
        generator makes from it: name the question, not only its receiver's NaN logits."""
        for group, finite in self.finite.pop(drain=wait):
            bad = next((q for q, ok in zip(group, finite) if not ok), None)
            if bad is not None:
                senders = ", ".join(str(bad.agents[s].id) for s in ("sender_A", "sender_B"))
                raise UserError(f"{bad}: its senders' hidden states (requests {senders}) hold NaN or inf, which "
                                "poison the LoRA factors generated from them (float16 overflow? run in bfloat16 or "
                                "float32; or NaN/inf in the model's weights)")

    def advance(self, finished):
        self.check_conditions()
        done, ready = [], []
        for r in finished:
            q, agent = r.tag
            if agent == "receiver":
                done.append(q)
            elif q.agents["sender_A"].finished and q.agents["sender_B"].finished and \
                    q not in ready:  # both senders may finish in one step
                ready.append(q)
        step = self.generator_batch or max(len(ready), 1)
        for i in range(0, len(ready), step):
            self.receivers(ready[i:i + step])
        return done

    def receivers(self, group: list[_Question]) -> None:
        """The generator over `group` (questions whose senders are done), then their receivers.
        Nothing here waits for the device: the generator's kernels queue behind the decode
        steps in flight, and its time is read from events when the question is done."""
        timer = DeviceTimer(self.llm.device)
        caps = [q.agents[s].capture.hidden for s in ("sender_A", "sender_B") for q in group]
        with torch.inference_mode():
            cond, mask = stack_conditions(caps)
            self.finite.push(group, torch.isfinite(cond).flatten(1).all(1).view(2, len(group)).all(0))
            self.check_conditions()  # at once where reading the flags needs no sync (CPU)
            lora = generated_lora(self.llm, self.generator, cond, mask, len(group), aggregated=True,
                                  piece=self.generator_piece)
        timer.stop()
        for i, q in enumerate(group):
            senders = [q.agents[s].prefill_timer for s in ("sender_A", "sender_B")]
            for s in ("sender_A", "sender_B"):
                q.agents[s].capture.hidden = None  # the condition is spent: free it
            prompt = chat(self.llm, self.systems[2], q.question)
            # every sample's receiver takes the same factors, and so the same prompt KV: the first
            # stores it in the prefix cache, the others take it (one key for the question's factors)
            factors, key = lora.row(i), new_context_key() if q.followers else None
            # the stages run once per question: their times are sample 0's, as its senders' usage is (and
            # latentmas' shared stages'), so a sum over results counts them once
            q.timers.update(sender_prefill_s=senders, generator_s=[timer])
            for one in (q, *q.followers):
                self.add(one, "receiver", Request(list(prompt), one.sampling, lora=factors, context_key=key))
            q.followers.clear()


def run_method(method: str, llm: LLM, questions: Sequence[str], *, style: str = "gsm8k",
               sampling: SamplingParams | Sequence[SamplingParams] | None = None, generator: TFlowGenerator | None = None,
               batch_size: int = 8, sender_questions: Sequence[str] | None = None,
               seeds: Sequence[int] | None = None, on_result: Callable[[int, MethodResult], None] | None = None,
               refill_share: float | None = None, labels: Sequence[str] | None = None, samples: int = 1,
               keep_results: bool = True, **kwargs) -> list[MethodResult]:
    """Run `method` on every question with at most `batch_size` questions in flight (the
    engine's slots bound the requests running at once); results in input order.

    `samples` K: K outputs per question, in one flat list, question-major (question i's sample j
    at i * K + j, its `sample` field j); `on_result(i, result)` once per sample, i the question.
    Sample j samples with sample_seed(seeds[i], j) (sample 0 with seeds[i]) and gives exactly the
    tokens question i alone gives with samples=1 and that seed. What does not depend on the seed
    runs once: tflow's senders and generator run once per question and its K receivers take the
    same factors (the senders' usage is on sample 0's result only, so sums over results count
    what ran); latentmas' senders (their latent stage does not sample) run once per question and
    its K judgers take copies of their KV (their usage on sample 0's result, as tflow's); baseline's
    K requests share the prompt (the prefix cache: the first stores it, the others wait a step for
    it); textmas' senders sample, so each sample runs the whole method.
    The `batch_size` window counts questions (K outputs each) and `wall_s_per_question` is the
    run's time over its questions.

    `sender_questions` (textmas, tflow, latentmas) gives the senders other text than the receiver,
    e.g. a private context plus the question: the receiver then learns it only through them.
    Question i samples with seeds[i] (default sampling.seed + i), whatever runs beside it;
    `sampling` may also be one SamplingParams per question (e.g. per-question max_new_tokens).
    `on_result(i, result)` is called as each question finishes (streaming evaluation), while the
    run holds the engine (Engine.lock): it may use this LLM, but must not wait for another
    thread's use of it (or of another LLM on the same model), which waits for the run.
    `labels[i]` names question i in an error raised mid-run (evaluate passes sample ids;
    default "question i"). `keep_results=False` (needs on_result): results go to on_result only
    and the return is [], so a run of thousands of outputs (evaluate's) holds what is in flight,
    not what it has done (~90 KiB a 2,048-token output).
    `refill_share`: new questions start once this share of the `batch_size` window is free,
    together (their prefills and generator calls batched), instead of as each place frees (0);
    default REFILL_SHARE[method]. It changes the throughput only, never a question's output.
    textmas takes `sender_max_new_tokens` as one limit or one per question; latentmas takes
    `latent_steps`, `topology`, `realign`, `think` and `handover_at_zero`; tflow takes
    `generator_batch`, the most questions one generator call takes (None: all whose senders
    finished together; default GENERATOR_BATCH for the device: 1 on CPU, None on CUDA),
    and `generator_piece`, the parameter tokens each generator stage takes at once (default
    generator.PIECE_TOKENS; None: all, the most memory).
    """
    run = _run_inputs(method, questions, style, sampling, generator, batch_size, sender_questions, seeds,
                      refill_share, labels, samples, kwargs)
    n, samples, keep = len(run.questions), run.samples, check_keep(keep_results, on_result)
    # the whole run holds the engine: another thread's generate() waits for it (latentmas' senders run the
    # model beside the engine, and a step() between this run's would take its requests)
    with llm.engine.lock:
        if llm.engine.in_flight():  # its pipeline takes every request step() returns for one of its own
            raise UserError("run_method needs the LLM to itself, and requests are in flight (add_request, or a "
                            "run_method whose on_result called this one): step() them to the end, or abort_all(), first")
        sq = run.sender_questions if run.sender_questions is not None else run.questions
        for name, texts in (("question", run.questions), ("sender question", sq)):
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:  # else an error (latentmas: a TypeError) when its turn came, mid-run
                hint = ": pass [s.question for s in samples]" if hasattr(texts[bad], "question") else ""
                raise UserError(f"{name} {bad} is not a string but a {type(texts[bad]).__name__}{hint}")
        if method == "textmas" and kwargs.get("sender_max_new_tokens") is not None:
            kwargs["sender_max_new_tokens"] = _sender_limits(kwargs["sender_max_new_tokens"], n)
        items = [(i, j) for i in range(n) for j in range(samples)]  # item i * samples + j
        item_labels = [run.labels[i] + (f" (sample {j})" if samples > 1 else "") for i, j in items]
        # every method: latentmas' realign without a latent step too (run_latentmas takes it, as the official code)
        validate_options(method, **{k: kwargs.get(k) for k in ("latent_steps", "topology")},
                         realign=bool(kwargs.get("realign")), think=bool(kwargs.get("think")),
                         handover_at_zero=bool(kwargs.get("handover_at_zero")))
        if method == "latentmas":
            options = {"latent_steps": 0, **{k: v for k, v in kwargs.items() if v is not None and k in LATENT_OPTIONS}}
            return _latentmas_samples(llm, run.questions, run.style, run.per_q, run.seeds, run.batch_size, on_result,
                                      run.sender_questions, run.share, run.labels, samples, keep, options)
        _check_positions(method, llm, run.style, run.questions, sq, run.per_q, run.labels,
                         kwargs.get("sender_max_new_tokens"))
        pipeline = _PIPELINES[method](llm, run.style, run.batch_size, **_extra(method, generator, kwargs))
        qs = [_Question(i, run.questions[i], sq[i], replace(run.per_q[i], seed=sample_seed(run.seeds[i], j)),
                        label=label, sample=j) for (i, j), label in zip(items, item_labels)]
        for q in qs:
            if method == "tflow" and q.sample:
                qs[q.index * samples].followers.append(q)

        def start(group: list[int]) -> None:
            for i in group:
                for q in qs[i * samples:(i + 1) * samples]:  # sample 0 first: tflow's followers wait on it
                    q.start_t = time.perf_counter()
                    pipeline.start(q)

        with torch.inference_mode(), _aborting(llm):
            return stream_window(n, run.batch_size, start,
                                 lambda: [(q.index * samples + q.sample, pipeline.result(q))
                                          for q in pipeline.advance(pipeline.step())],
                                 refill_share=run.share, on_result=on_result, samples=samples, keep_results=keep)


@dataclass(frozen=True)
class _RunInputs:
    """run_method's arguments checked and normalised: one entry per question in each list."""
    style: str
    questions: list  # strings checked under the engine's lock: a run in flight is the first error
    sender_questions: list | None
    per_q: list[SamplingParams]
    seeds: list[int]
    labels: list[str]
    batch_size: int
    samples: int
    share: float


def _run_inputs(method: str, questions, style: str, sampling, generator, batch_size, sender_questions, seeds,
                refill_share, labels, samples, kwargs: dict) -> _RunInputs:
    """run_method's checks of its arguments that need no engine, apart so that the run reads on its own;
    those that need the engine (requests in flight first, then the texts and options) follow under its lock."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    unknown = sorted(set(kwargs) - set(OPTIONS))
    if unknown:  # a misspelt option would otherwise run with the default unnoticed
        raise UserError(f"run_method: unknown option(s) {', '.join(unknown)}; the method options are "
                        f"{', '.join(sorted(OPTIONS))}")
    style = prompts.resolve_style(style)
    for name, value in (("questions", questions), ("sender_questions", sender_questions), ("seeds", seeds),
                        ("labels", labels)):
        if isinstance(value, str):  # list() would make each character a question
            raise UserError(f"{name} is one string: pass a list, e.g. [{name[:-1]}]")
        check_ordered(value, name)
    questions = list(questions)
    if sender_questions is not None:  # an iterable as questions takes (a generator was a TypeError from len())
        sender_questions = list(sender_questions)
    if not questions:
        raise UserError("no questions given")
    batch_size, samples = check_int(batch_size, "batch_size"), check_samples(samples)
    share = check_refill_share(REFILL_SHARE[method] if refill_share is None else refill_share)
    if sender_questions is not None and len(sender_questions) != len(questions):
        raise UserError(f"{len(sender_questions)} sender questions for {len(questions)} questions")
    if method == "tflow" and generator is None:
        raise UserError("tflow needs a ParameterGenerator: pass generator=load_checkpoint(path, llm.cfg, llm.dtype, "
                        "llm.device) (or random_generator(llm.cfg) for a smoke test; both in minitflow.tflow.checkpoint)")
    if sampling is None:  # not `sampling or`: an empty list ran every question with the default settings
        sampling = SamplingParams(max_new_tokens=prompts.default_max_new_tokens(style))
    per_q = per_row(sampling, len(questions), "question")
    seeds = list(seeds) if seeds is not None else [(sp.seed + i) % SEEDS for i, sp in enumerate(per_q)]
    if len(seeds) != len(questions):
        raise UserError(f"{len(seeds)} seeds for {len(questions)} questions")
    bad = next((i for i, s in enumerate(seeds) if not is_int(s) or not 0 <= s < SEEDS), None)
    if bad is not None:  # SamplingParams' rule: a numpy seed overflowed in sample_seed, -1 ran as 2^64 - 1
        raise UserError(f"seeds[{bad}] must be an integer in [0, 2^64), got {seeds[bad]!r}")
    seeds = [int(s) for s in seeds]
    labels = [str(x) for x in labels] if labels is not None else [f"question {i}" for i in range(len(questions))]
    if len(labels) != len(questions):
        raise UserError(f"{len(labels)} labels for {len(questions)} questions")
    return _RunInputs(style, questions, sender_questions, per_q, seeds, labels, batch_size, samples, share)


def _latentmas_samples(llm: LLM, questions: list[str], style: str, per_q: list[SamplingParams], seeds: list[int],
                       batch_size: int, on_result, sender_questions: Sequence[str] | None, share: float,
                       labels: list[str], samples: int, keep: bool, options: dict) -> list[MethodResult]:
    """latentmas through its stream: `samples` judgers per question on one run of its senders
    (their latent stage does not sample), batch_size questions in flight."""
    with _aborting(llm):
        return stream_latentmas(llm, questions, style, [replace(sp, seed=s) for sp, s in zip(per_q, seeds)],
                                window=batch_size, on_result=on_result, refill_share=share, labels=labels,
                                samples=samples, keep_results=keep, sender_questions=sender_questions, **options)


class _aborting:
    """On an error (or Ctrl-C) mid-run, drop this run's requests so the engine stays usable."""

    def __init__(self, llm: LLM):
        self.llm = llm

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if kind is not None:
            self.llm.engine.abort_all()
        return False


def _check_positions(method: str, llm: LLM, style: str, questions: list[str], sender_questions: list[str],
                     sps: list[SamplingParams], labels: list[str], sender_limits: int | list[int] | None) -> None:
    """Refuse a question whose requests cannot fit the engine's positions before any request runs
    (latentmas' plan does the same): the engine refuses a request only at its turn, after every
    question before it (and this one's senders) had run, and run_method lost their results.
    textmas' receiver is counted with empty sender texts (its own refusal, mid-run, says why)."""
    for i, (q, sq, sp, label) in enumerate(zip(questions, sender_questions, sps, labels)):
        opts = {}
        if method == "textmas":
            opts["sender_max_new_tokens"] = prompts.TEXTMAS_SENDER_MAX_NEW_TOKENS if sender_limits is None else \
                sender_limits if isinstance(sender_limits, int) else sender_limits[i]
        need = positions_needed(method, llm.encode, style, q, sq, sp.max_new_tokens, **opts)
        if need > llm.max_seq_len:
            limits = "".join(f" and {k} {v}" for k, v in opts.items())
            raise UserError(f"{label}: its {method} prompts need {need} positions with max_new_tokens "
                            f"{sp.max_new_tokens}{limits}, more than max_seq_len {llm.max_seq_len}")


def _sender_limits(limit, n: int) -> int | list[int]:
    """textmas' sender_max_new_tokens as one int or one per question, checked before the run: a
    numpy integer was indexed as a list, and a list of another length failed mid-run."""
    def one(x) -> bool:
        return is_int(x) and x >= 1

    if one(limit):
        return int(limit)
    if not isinstance(limit, (str, bytes)) and hasattr(limit, "__len__") and len(limit) == n and all(map(one, limit)):
        return [int(x) for x in limit]
    raise UserError(f"sender_max_new_tokens must be one integer >= 1 or one per question ({n}), got {limit!r}")


def _extra(method: str, generator, kwargs: dict) -> dict:
    if method == "tflow":
        return {"generator": generator, **{k: kwargs[k] for k in ("generator_batch", "generator_piece") if k in kwargs}}
    if method == "textmas" and kwargs.get("sender_max_new_tokens") is not None:
        return {"sender_max_new_tokens": kwargs["sender_max_new_tokens"]}
    return {}


_PIPELINES: dict[str, type[_Pipeline]] = {"baseline": _Baseline, "textmas": _TextMAS, "tflow": _TFlow}
