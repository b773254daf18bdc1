"""Peak memory of the senders' condition, one way per process: `python bench/condition_memory.py MODE`.

MODE plain: the senders' prefill without capture; full: all L+1 hidden states captured, then
the layer aggregator (float32 copy, weighted product, sum) as before streaming; streamed: the
capture sums the layers as they run; captured: all L+1 layers captured through the engine
(LLM.capture_hidden: the rows stacked into one batch after the prefill), no aggregator; into:
the same written into one batch made before the prefill (Capture.out, as training's
sender_states takes them); forward: the capture from one model forward alone (no engine). Prints the process's peak resident set in KiB; the
condition's cost is a mode's peak minus plain's. A mid shape (hidden 1024, 16 layers), 8
sender rows × 640 prompt tokens with a 600-token captured span, float32, CPU.
"""

from __future__ import annotations

import sys

import torch

from benchlib import peak_rss_kib
from minitflow.engine.llm import LLM
from minitflow.engine.request import Request
from minitflow.model.config import Qwen3Config
from minitflow.model.qwen3 import Capture
from minitflow.model.weights import empty_model

MID = Qwen3Config(vocab_size=4096, hidden_size=1024, intermediate_size=2048, num_hidden_layers=16,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
                  max_position_embeddings=1024, eos_token_ids=(4095,))
ROWS, PROMPT, SPAN = 8, 640, 600


def main(mode: str) -> int:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = empty_model(MID, torch.float32, torch.device("cpu"), 1024)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    llm = LLM(model, num_slots=ROWS, prefix_cache_bytes=0)
    prompts = [torch.randint(0, 4000, (PROMPT,), generator=torch.Generator().manual_seed(i)).tolist()
               for i in range(ROWS)]
    layers = list(range(MID.num_hidden_layers + 1))
    weights = torch.softmax(torch.randn(len(layers)), 0)
    spans = dict(starts=[PROMPT - SPAN - 1] * ROWS, ends=[PROMPT - 1] * ROWS)
    if mode == "plain":
        llm.capture_hidden(prompts, Capture(layers=[0], starts=[0] * ROWS, ends=[1] * ROWS))
    elif mode == "full":
        cap = llm.capture_hidden(prompts, Capture(layers=layers, **spans))
        cond = (weights[None, :, None, None] * cap.hidden.float()).sum(dim=1)
        assert cond.shape == (ROWS, SPAN, MID.hidden_size)
    elif mode == "captured":
        cap = llm.capture_hidden(prompts, Capture(layers=layers, **spans))
        assert cap.hidden.shape == (ROWS, len(layers), SPAN, MID.hidden_size)
    elif mode == "into":
        hidden = torch.zeros(ROWS, len(layers), SPAN, MID.hidden_size)
        reqs = [Request(p, capture=Capture(layers, [spans["starts"][i]], [spans["ends"][i]], out=[hidden[i]]),
                        generate=False) for i, p in enumerate(prompts)]
        with torch.inference_mode():
            llm.engine.run(reqs)
        assert reqs[0].capture.hidden.data_ptr() == hidden.data_ptr()
    elif mode == "forward":
        ids = torch.tensor(prompts)
        cap = Capture(layers=layers, **spans)
        with torch.inference_mode():
            model(ids, torch.arange(PROMPT)[None].expand(ROWS, -1), None, PROMPT, capture=cap, need_logits=False)
        assert cap.hidden.shape == (ROWS, len(layers), SPAN, MID.hidden_size)
    elif mode == "streamed":
        cap = llm.capture_hidden(prompts, Capture(layers=layers, layer_weights=weights, **spans))
        assert cap.hidden.shape == (ROWS, SPAN, MID.hidden_size)
    else:
        raise SystemExit(f"unknown mode {mode!r}: plain, full, captured, into, forward or streamed")
    print(peak_rss_kib())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
