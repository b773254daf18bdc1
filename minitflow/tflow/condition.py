"""Senders' condition: the hidden states of each sender prompt over the question span.

The question span follows the official single-sample semantics: start = tokens of the
prompt text before the question, end = tokens of the prompt text up to its end, each text
tokenised on its own (counted without encoding them again where the tokenizer can tell:
`Tokenizer.encode_counting_prefixes`).

At inference a sender is a prefill-only request whose capture sums the L+1 hidden states
with the layer aggregator's weights as the layers run (float32): the condition is (S, H) per
sender, and no (L+1) × S × H tensor exists. Training keeps all layers (`sender_states`): the
aggregator's weights need their gradients.
"""

from __future__ import annotations

import time

import torch

from minitflow.engine.llm import LLM, sync
from minitflow.engine.request import Request
from minitflow.model.qwen3 import Capture, stack_spans
from minitflow.model.transfer import host_to_device
from minitflow.model.tokenizer import render_chat
from minitflow.tflow.generator import PG_OUTPUT_SCALE, PIECE_TOKENS


def encode_with_span(llm: LLM, prompt: str, question: str) -> tuple[list[int], int, int]:
    """The prompt's ids and the question's token span in them: its last occurrence (the user
    turn's), the whole prompt when it has none or no tokens."""
    idx = prompt.rfind(question)
    if idx == -1:
        ids = llm.encode(prompt)
        return ids, 0, len(ids)
    ids, (start, end) = llm.encode_counting_prefixes(prompt, [idx, idx + len(question)])
    end = min(end, len(ids))
    return (ids, start, end) if end > start else (ids, 0, len(ids))


def sender_prompt(system: str, question: str) -> str:
    return render_chat([{"role": "system", "content": system}, {"role": "user", "content": question}])


def sender_request(llm: LLM, system: str, question: str, layer_weights: torch.Tensor | None) -> Request:
    """A sender's forward pass as a prefill-only request capturing all L+1 layers over the
    question (summed with `layer_weights` when given)."""
    text = sender_prompt(system, question)
    ids, start, end = encode_with_span(llm, text, question)
    capture = Capture(layers=list(range(llm.cfg.num_hidden_layers + 1)), starts=[start], ends=[end],
                      layer_weights=layer_weights)
    return Request(ids, capture=capture, generate=False)


def stack_conditions(captures: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-request captures (1, ..., S_i, H) -> one batch padded to the longest span, and the
    mask of real positions (None when no row is padded)."""
    out, spans = stack_spans(captures)
    return out, span_mask(spans, out.device)


def span_mask(spans: list[int], device: torch.device) -> torch.Tensor | None:
    """(rows, max span) True at each row's real positions; None when no row is padded."""
    if min(spans) == max(spans):
        return None
    # built on the host: a mask computed on the device and checked there would wait for the GPU
    return host_to_device(torch.arange(max(spans))[None, :] < torch.tensor(spans)[:, None], device)


def generator_factors(generator, cond: torch.Tensor, mask: torch.Tensor | None,
                      piece: int | None = PIECE_TOKENS) -> dict:
    """The generator on an already aggregated condition (B, S, H) float32: what
    TFlowGenerator.forward computes after its layer aggregator, at inference in pieces of
    `piece` parameter tokens (no gradients, so no stage needs all its activations at once;
    None: all at once, the same factors bitwise on CPU)."""
    pg = generator.parameter_generator
    return pg(cond.to(next(pg.parameters()).dtype), mask, piece, scale=PG_OUTPUT_SCALE)


def sender_states(llm: LLM, systems: list[str], questions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, list[int], float]:
    """All L+1 layers for training. Rows = every (sender, question) pair, senders outermost.

    Returns hidden (rows, L+1, S, H), mask (rows, S) or None when no row is padded,
    each row's prompt length (processed tokens), and the prefill seconds.
    """
    reqs = [sender_request(llm, s, q, None) for s in systems for q in questions]
    spans = [r.capture.ends[0] - r.capture.starts[0] for r in reqs]
    # made outside inference mode, zero past each span: the prefill writes every row's layers
    # into it as they run, so it is a normal tensor that autograd may use and the condition
    # exists once (captured apart and stacked after, it was held twice for a moment)
    hidden = torch.zeros(len(reqs), llm.cfg.num_hidden_layers + 1, max(spans), llm.cfg.hidden_size,
                         dtype=llm.dtype, device=llm.device)
    for r, row, n in zip(reqs, hidden, spans):
        r.capture.out = [row[:, :n]]
        # the batch in one forward, no KV from the cache: a step computes the same whatever earlier
        # runs left there, so a resumed run is the straight run bit for bit (on CPU a row's last
        # bits depend on the rows it is computed beside, and a cached block's on its first batch)
        r.prefix_cache = False
    sync(llm.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        llm.engine.run(reqs)
    sync(llm.device)
    dt = time.perf_counter() - t0
    return hidden, span_mask(spans, hidden.device), [len(r.prompt_ids) for r in reqs], dt
