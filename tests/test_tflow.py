"""TFlow against the official release: golden-small outputs, an independent re-computation of
the generator from TFLOW_FORMAT.md, batch invariance, and the CLI's user errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import GOLDEN, need_shared
from minitflow import LLM, SamplingParams
from minitflow.errors import UserError
from minitflow.tflow import prompts
from minitflow.tflow.checkpoint import load_checkpoint
from minitflow.tflow.condition import sender_states
from minitflow.tflow.methods import run_method


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minitflow.generate", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def golden():
    need_shared(GOLDEN)
    return json.loads((GOLDEN / "golden.json").read_text())


@pytest.fixture(scope="module")
def golden_llm():
    need_shared(GOLDEN)
    return LLM.load(GOLDEN / "model", dtype="float32", device="cpu")


@pytest.mark.parametrize("method", ["tflow", "baseline"])
def test_cli_reproduces_official_golden_outputs(golden, method, tmp_path):
    for i, row in enumerate(golden["rows"]):
        out = tmp_path / f"{method}{i}.json"
        args = ["--method", method, "--model", str(GOLDEN / "model"), "--dataset", "gsm8k", "--greedy",
                "--dtype", "float32", "--device", "cpu", "--max_new_tokens", "24", "--question", row["question"],
                "--output", str(out)]
        if method == "tflow":
            args += ["--checkpoint", str(GOLDEN / "tflow.pt")]
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(out.read_text())
        assert result["answer"] == row[method], f"question {i}"
        usage = result["metadata"]["token_usage"]
        assert {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == row[f"{method}_token_usage"]
        assert result["metadata"]["sampling"] == {"temperature": 0.0, "top_p": 0.95, "top_k": 50, "seed": 0,
                                                  "max_new_tokens": 24}


def test_receiver_without_factors_gives_unpatched_golden(golden, golden_llm):
    receiver = prompts.tflow_agents("gsm8k")[2]
    ids = [golden_llm.chat_ids([{"role": "system", "content": receiver}, {"role": "user", "content": r["question"]}])
           for r in golden["rows"]]
    gens = golden_llm.generate(ids, SamplingParams(max_new_tokens=24))
    assert [g.text for g in gens] == [r["receiver_unpatched"] for r in golden["rows"]]


# ---- an independent re-computation of the ParameterGenerator, written from TFLOW_FORMAT.md ----

def _rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def _angles(ids: torch.Tensor, axes: list[int]) -> torch.Tensor:
    """(N, k) integer ids -> (N, head_dim/2) rotation angles, axis blocks side by side."""
    cols = []
    for i, dim in enumerate(axes):
        freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        cols.append(ids[:, i:i + 1].double() * freq)
    return torch.cat(cols, dim=1)


def _rotate(x: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)).flatten(-2)


def _reference_factors(sd: dict, arch: dict, cond: torch.Tensor, shapes: dict, layer: int, module: str):
    sd = {k: v.double() for k, v in sd.items()}
    d, hd, r, a, n = arch["d_model"], arch["head_dim"], arch["rank"], arch["dim_accumulation"], arch["num_base_model_layers"]
    td = arch["token_dim"]
    lin = lambda x, p: x @ sd[p + ".weight"].T + sd.get(p + ".bias", 0)  # noqa: E731
    names = sorted(shapes)
    tiles = [(m, "A", (r, shapes[m][0])) for m in names] + [(m, "B", (shapes[m][1], r)) for m in names]
    counts = [math.ceil(s[0] * s[1] / (r * td)) for _, _, s in tiles]
    h_a = sum(c for (_, k, _), c in zip(tiles, counts) if k == "A")
    h, w = sum(counts), r // a

    def attend(prefix, xq, xkv, aq, ak):  # xq (Bt, Nq, d), angles per position
        heads = d // hd
        q = _rotate(lin(xq, prefix + ".W_q").view(xq.shape[0], -1, heads, hd).transpose(1, 2), aq)
        k = _rotate(lin(xkv, prefix + ".W_k").view(xkv.shape[0], -1, heads, hd).transpose(1, 2), ak)
        v = lin(xkv, prefix + ".W_v").view(xkv.shape[0], -1, heads, hd).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        return lin(att.transpose(1, 2).reshape(xq.shape[0], -1, d), prefix + ".W_o")

    grid = lambda *ls: torch.stack([g.flatten() for g in torch.meshgrid(*[torch.arange(x) for x in ls], indexing="ij")], -1)  # noqa: E731
    c = _rms(lin(cond.double(), "hidden_in"), sd["model.norm_input.weight"])            # (S, d)
    kv = c @ sd["model.cond_token_proj.weight"].T
    tok = torch.softmax(sd["model.cond_token_query"] @ kv.T / math.sqrt(d), -1) @ kv     # (n*h*w, d)
    pos = (sd["model.hw_pos.weight"][None] + sd["model.layer_pos.weight"][:, None]).reshape(n, h * w, d)
    x = _rms(tok.view(n, h * w, d) + pos, sd["model.norm_tokens.weight"])
    ang_n, ang_hw = _angles(grid(n), [hd]), _angles(grid(h, w), [hd // 2, hd // 2])
    ang_all = _angles(grid(n, h * w), [hd // 2, hd // 2])
    diag = torch.arange(c.shape[0])[:, None].repeat(1, 2) + max(h, w)
    ang_c = _angles(diag, [hd // 2, hd // 2])
    for b in range(arch["num_pg_layers"]):
        p = f"model.blocks.{b}."
        y = _rms(x, sd[p + "norm1.weight"]).transpose(0, 1)
        x = x + attend(p + "self_attn_n", y, y, ang_n, ang_n).transpose(0, 1)
        y = _rms(x, sd[p + "norm2.weight"])
        x = x + attend(p + "self_attn_hw", y, y, ang_hw, ang_hw)
        y = _rms(x, sd[p + "norm3.weight"]).reshape(1, n * h * w, d)
        x = x + attend(p + "self_attn_cross", y, c[None], ang_all, ang_c).view(n, h * w, d)
        y = _rms(x, sd[p + "norm4.weight"])
        x = x + lin(F.silu(lin(y, p + "feed_forward.fc1")), p + "feed_forward.fc2")
    x = _rms(x, sd["model.norm_final.weight"]).view(n, h, w, a, d // a).reshape(n, h, r, d // a)
    out = torch.cat([lin(x[:, :h_a], "model.proj_out_A"), lin(x[:, h_a:], "model.proj_out_B")], dim=1)
    flat = out[layer].reshape(h, -1)
    result, start = {}, 0
    for (m, kind, shape), cnt in zip(tiles, counts):
        if m == module:
            result[kind] = flat[start:start + cnt].flatten()[: shape[0] * shape[1]].view(shape) * 0.01
        start += cnt
    return result["A"], result["B"]


def test_factors_equal_independent_recomputation(golden, golden_llm):
    from transformers import AutoTokenizer, Qwen3ForCausalLM
    state = torch.load(GOLDEN / "tflow.pt", map_location="cpu", weights_only=False)
    question = golden["rows"][0]["question"]
    system = prompts.tflow_agents("gsm8k")[0]
    # the condition, computed with transformers: question span, all L+1 states, aggregator
    tok = AutoTokenizer.from_pretrained(GOLDEN / "model")
    hf = Qwen3ForCausalLM.from_pretrained(GOLDEN / "model", dtype=torch.float32).eval()
    text = tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": question}],
                                   tokenize=False, add_generation_prompt=True)
    at = text.rfind(question)
    start, end = len(tok(text[:at])["input_ids"]), len(tok(text[: at + len(question)])["input_ids"])
    with torch.no_grad():
        states = hf(**tok(text, return_tensors="pt"), output_hidden_states=True).hidden_states
    agg = state["pg_layer_aggregator"]
    wts = torch.softmax(agg["layer_weights"] / agg["log_temperature"].exp().clamp(min=0.01), 0)
    cond = sum(wl * hs[0, start:end] for wl, hs in zip(wts, states))
    cfg = hf.config
    shapes = {"mlp.down_proj": (cfg.intermediate_size, cfg.hidden_size), "mlp.gate_proj": (cfg.hidden_size, cfg.intermediate_size),
              "mlp.up_proj": (cfg.hidden_size, cfg.intermediate_size),
              "self_attn.k_proj": (cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim),
              "self_attn.o_proj": (cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size),
              "self_attn.q_proj": (cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim),
              "self_attn.v_proj": (cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim)}
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg)
    hidden, mask, _, _ = sender_states(golden_llm, [system], [question])
    assert mask is None and hidden.shape[2] == end - start
    with torch.no_grad():
        ours = gen(hidden, mask)
    for layer, module in [(1, "self_attn.v_proj"), (0, "mlp.down_proj")]:
        ref_a, ref_b = _reference_factors(state["parameter_generator"], state["pg_arch"], cond, shapes, layer, module)
        a, b = ours[(layer, module)]
        assert torch.allclose(a[0].double(), ref_a, rtol=1e-4, atol=1e-7), (layer, module)
        assert torch.allclose(b[0].double(), ref_b, rtol=1e-4, atol=1e-7), (layer, module)
        assert ref_b.abs().max() > 0


@pytest.mark.parametrize("generator_batch", [1, 5, None])
def test_tflow_batch_invariance(golden_llm, generator_batch, monkeypatch):
    """Each question's tokens alone = beside four others, whether the generator takes the
    questions one by one (the CPU default) or several per call (padded conditions, masked;
    None, the CUDA default: all whose senders finished together)."""
    from minitflow.tflow import methods
    need_shared(GOLDEN)
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg)
    questions = ["What is 2 + 2?", "Natalia sold clips to 48 of her friends in April, and then half as many in May.",
                 "A train leaves at 3 pm and travels 120 km at 60 km/h. When does it arrive?",
                 "How many legs do 3 spiders have?", "If x = 3, what is 2x + 7, and what is x squared plus one?"]
    sp = SamplingParams(max_new_tokens=12)
    alone = [run_method("tflow", golden_llm, [q], sampling=sp, generator=gen)[0] for q in questions]
    calls = []
    real = methods.generated_lora
    monkeypatch.setattr(methods, "generated_lora", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    batched = run_method("tflow", golden_llm, questions, sampling=sp, generator=gen, batch_size=5,
                         generator_batch=generator_batch)
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    assert sum(calls) == 5 and max(calls) <= (generator_batch or 5) and (generator_batch == 1 or max(calls) > 1), calls
    assert methods.default_generator_batch("cpu") == 1 and methods.default_generator_batch("cuda") is None
    assert all(r.agents["sender_A"].prompt_tokens > 0 and not r.agents["sender_A"].generates for r in batched)
    for bad in (0, True):  # True ran as 1
        with pytest.raises(UserError, match="generator_batch must be >= 1"):
            run_method("tflow", golden_llm, questions[:1], sampling=sp, generator=gen, generator_batch=bad)
    with pytest.raises(UserError, match="unknown option.s. generator_bach;") as e:  # a typo is not run as the default
        run_method("tflow", golden_llm, questions[:1], sampling=sp, generator=gen, generator_bach=2)
    assert "\n" not in str(e.value)


def test_run_method_refuses_one_question_in_place_of_the_list(golden_llm):
    """run_method("baseline", llm, "What is 2 + 2?") ran one question per character, silently."""
    sp = SamplingParams(max_new_tokens=2)
    with pytest.raises(UserError, match=r"^questions is one string: pass a list"):
        run_method("baseline", golden_llm, "What is 2 + 2?", sampling=sp)
    with pytest.raises(UserError, match=r"^sender_questions is one string: pass a list"):
        run_method("textmas", golden_llm, ["What?"], sampling=sp, sender_questions="What?")
    assert len(run_method("baseline", golden_llm, ("What is 2 + 2?",), sampling=sp)) == 1


def test_textmas_sender_limit_as_numpy_or_per_question(golden_llm):
    """sender_max_new_tokens=np.int64(3) was indexed as a per-question list (IndexError), and a
    list shorter than the questions failed only when its question started, mid-run."""
    import numpy as np
    qs, sp = ["What is 7 times 6?", "What is 2 + 2?"], SamplingParams(max_new_tokens=3)
    want = [r.token_ids for r in run_method("textmas", golden_llm, qs, sampling=sp, sender_max_new_tokens=3)]
    assert [r.token_ids for r in run_method("textmas", golden_llm, qs, sampling=sp,
                                            sender_max_new_tokens=np.int64(3))] == want
    assert [r.token_ids for r in run_method("textmas", golden_llm, qs, sampling=sp,
                                            sender_max_new_tokens=np.array([3, 3]))] == want
    for bad in ([3], 0, [3, 0], "3"):
        with pytest.raises(UserError, match=r"^sender_max_new_tokens must be one integer >= 1 or one per question \(2\)"):
            run_method("textmas", golden_llm, qs, sampling=sp, sender_max_new_tokens=bad)
        assert not golden_llm.has_unfinished()


def test_run_method_numeric_options_take_numpy_numbers(golden_llm):
    """generator_batch=np.int64(2), refill_share=np.float32(0.5) and latent_steps=np.int64(1) were
    refused as if out of range ("must be >= 1 or None, got np.int64(2)"), and batch_size=np.int64(2)
    ran but its metadata was refused by json.dumps."""
    import numpy as np
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg)
    qs, sp = ["What is 2 + 2?", "How many legs do 3 spiders have?"], SamplingParams(max_new_tokens=3)
    want = [r.token_ids for r in run_method("tflow", golden_llm, qs, sampling=sp, generator=gen, generator_batch=2)]
    got = run_method("tflow", golden_llm, qs, sampling=sp, generator=gen, generator_batch=np.int64(2),
                     batch_size=np.int64(2), refill_share=np.float32(0.5))
    assert [r.token_ids for r in got] == want
    json.dumps(got[0].metadata())
    latent = run_method("latentmas", golden_llm, qs[:1], sampling=sp, latent_steps=np.int64(1))
    assert latent[0].agents["planner"].latent_steps == 1
    json.dumps(latent[0].metadata())


def test_run_method_refuses_an_llm_with_requests_in_flight(golden_llm):
    """A request of the caller's own in flight reached run_method's pipeline, which read its tag as
    one of its questions: a TypeError, and the caller's request aborted with the run. Now run_method
    refuses before it queues anything, and the request runs on."""
    sp = SamplingParams(max_new_tokens=3)
    mine = golden_llm.add_request([5, 6, 7], SamplingParams(max_new_tokens=4))
    for method in ("baseline", "latentmas"):
        with pytest.raises(UserError, match=r"^run_method needs the LLM to itself, and requests are in flight"):
            run_method(method, golden_llm, ["What is 2 + 2?"], sampling=sp)
    while golden_llm.has_unfinished():
        golden_llm.step()
    assert len(mine.output_ids) == 4 or mine.finish_reason == "stop"
    assert len(run_method("baseline", golden_llm, ["What is 2 + 2?"], sampling=sp)) == 1


def test_run_method_refuses_inputs_that_do_not_line_up(golden_llm):
    """Each a one line before anything runs: a method that is none, no questions (an empty
    generator too), sender questions or seeds of another count than the questions."""
    import re
    sp, qs = SamplingParams(max_new_tokens=2), ["What is 2 + 2?", "What is 3 + 3?"]
    methods = ", ".join(prompts.METHODS)
    for call, line in ((lambda: run_method("tflo", golden_llm, qs), f"unknown method 'tflo': choose one of {methods}"),
                       (lambda: run_method("baseline", golden_llm, [], sampling=sp), "no questions given"),
                       (lambda: run_method("baseline", golden_llm, iter([]), sampling=sp), "no questions given"),
                       (lambda: run_method("textmas", golden_llm, qs, sampling=sp, sender_questions=["a"]),
                        "1 sender questions for 2 questions"),
                       (lambda: run_method("baseline", golden_llm, qs, sampling=sp, seeds=[1, 2, 3]), "3 seeds for 2 questions")):
        with pytest.raises(UserError, match="^" + re.escape(line) + "$"):
            call()
    assert not golden_llm.has_unfinished()
    assert len(run_method("baseline", golden_llm, qs, sampling=sp, seeds=[1, 2])) == 2


def test_a_generator_rank_its_accumulation_cannot_split_is_refused():
    from minitflow.tflow.checkpoint import check_pg_arch
    with pytest.raises(UserError, match=r"^PG arch: rank 3 must divide by dim_accumulation 2$"):
        check_pg_arch({"rank": 3})
    assert check_pg_arch({"rank": 6}) == {"rank": 6}


def test_run_method_refuses_sampling_that_is_not_sampling_params(golden_llm):
    """A list with None in it was an AttributeError reading its seed; a number a TypeError from
    list(), and a dict of settings read as its keys ("got str", or "2 sampling params for 3
    questions")."""
    for bad, name in (([SamplingParams(max_new_tokens=2), None], "NoneType"), (5, "int"),
                      ({"max_new_tokens": 2, "seed": 1}, "dict")):
        with pytest.raises(UserError, match=rf"^sampling must be a SamplingParams or a list of one per question, got {name}"):
            run_method("baseline", golden_llm, ["a", "b"], sampling=bad)
    for empty in ([], ()):  # was read as no sampling given: every question ran with the defaults (2,048 tokens)
        with pytest.raises(UserError, match=r"^0 sampling params for 2 questions$"):
            run_method("baseline", golden_llm, ["a", "b"], sampling=empty)
    assert not golden_llm.has_unfinished()


def test_run_method_refuses_a_question_that_is_not_a_string(golden_llm):
    """load_samples' Samples passed as questions, or a None among them, failed when that question's
    turn came, mid-run (latentmas: a TypeError from str.replace). Now before anything runs."""
    from minitflow.eval import Sample
    sample = Sample(id="gsm8k/0", question="What is 2 + 2?", answer="4")
    sp = SamplingParams(max_new_tokens=2)
    for method in ("baseline", "latentmas"):
        with pytest.raises(UserError, match=r"^question 1 is not a string but a Sample: pass \[s.question for s in samples\]$"):
            run_method(method, golden_llm, ["What is 2 + 2?", sample], sampling=sp)
    with pytest.raises(UserError, match=r"^sender question 0 is not a string but a NoneType$"):
        run_method("textmas", golden_llm, ["What is 2 + 2?"], sampling=sp, sender_questions=[None])
    assert not golden_llm.has_unfinished()
    # sender questions as any iterable, as questions (a generator was a TypeError from len())
    got, want = (run_method("textmas", golden_llm, ["What is 2 + 2?"], sampling=sp, sender_max_new_tokens=2,
                            sender_questions=make(["Context: 3. What is 2 + 2?"]))[0].token_ids for make in (iter, list))
    assert got == want


def test_textmas_context_format_and_accounting(golden_llm):
    from minitflow.model.tokenizer import render_chat
    question = "What is 7 times 6?"
    sp = SamplingParams(max_new_tokens=6)
    r = run_method("textmas", golden_llm, [question], sampling=sp, sender_max_new_tokens=5)[0]
    (a, _), (b, _), (c, c_sys) = prompts.textmas_roles("gsm8k")
    assert set(r.agents) == {a, b, c} and r.agents[a].completion_tokens == 5
    sender_texts = [golden_llm.tokenizer.decode(golden_llm.generate(
        [golden_llm.chat_ids([{"role": "system", "content": sys_}, {"role": "user", "content": question}])],
        SamplingParams(max_new_tokens=5, seed=seed))[0].token_ids) for sys_, seed in
        ((prompts.textmas_roles("gsm8k")[0][1], 0), (prompts.textmas_roles("gsm8k")[1][1], 1_000_003))]
    context = f"[{a} | Round 0]\n{sender_texts[0]}\n\n---\n\n[{b} | Round 0]\n{sender_texts[1]}"
    receiver = render_chat([{"role": "system", "content": c_sys}, {"role": "user", "content": context},
                            {"role": "assistant", "content": prompts.TEXTMAS_ASSISTANT_TURN},
                            {"role": "user", "content": question}])
    assert r.agents[c].prompt_tokens == len(golden_llm.encode(receiver))
    assert r.official_usage["total_tokens"] == r.processed_tokens  # every textmas agent generates


def test_cli_user_errors(tmp_path, capsys):
    from minitflow.errors import run_cli
    from minitflow.generate import main
    need_shared(GOLDEN)
    model = str(GOLDEN / "model")
    bad_ckpt = tmp_path / "other.pt"
    state = torch.load(GOLDEN / "tflow.pt", map_location="cpu", weights_only=False)
    state["pg_arch"] = {**state["pg_arch"], "num_base_model_layers": 3}
    torch.save(state, bad_ckpt)
    flags = tmp_path / "flags.pt"
    state = torch.load(GOLDEN / "tflow.pt", map_location="cpu", weights_only=False)
    state["pg_config_flags"]["use_cond_tokens"] = False
    torch.save(state, flags)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    cases = [
        (["--checkpoint", str(tmp_path / "missing.pt"), "--question", "q"], "TFlow checkpoint not found"),
        (["--checkpoint", str(bad_ckpt), "--question", "q"], "generator is for 3 layers, the backbone has 2"),
        (["--checkpoint", str(flags), "--question", "q"], "pg_config_flags.use_cond_tokens=False"),
        (["--question", "q"], "needs --checkpoint"),
        (["--method", "baseline", "--dataset", "poetry", "--question", "q"], "unknown dataset style 'poetry'"),
        (["--method", "baseline", "--input_file", str(empty)], "no question given"),
        (["--method", "baseline", "--checkpoint", str(GOLDEN / "tflow.pt"), "--question", "q"], "only valid with --method tflow"),
    ]
    for args, message in cases:
        code = run_cli(main, ["--model", model, "--device", "cpu", *args])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, err)


def test_streamed_condition_factors_equal_the_full_path(golden_llm):
    """The capture that sums layers as they run gives the factors of all-L+1-layers + aggregator."""
    from minitflow.tflow.condition import sender_request, stack_conditions
    from minitflow.tflow.methods import generated_lora
    need_shared(GOLDEN)
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg)
    questions = ["What is 2 + 2?", "A train travels 120 km at 60 km/h. How long does it take?"]
    systems = prompts.tflow_agents("gsm8k")[:2]
    hidden, mask, _, _ = sender_states(golden_llm, systems, questions)
    w = gen.pg_layer_aggregator.weights().float()
    reqs = [sender_request(golden_llm, s, q, w) for s in systems for q in questions]
    golden_llm.engine.run(reqs)
    cond, cmask = stack_conditions([r.capture.hidden for r in reqs])
    assert cond.dim() == 3 and (cmask is None) == (mask is None)
    with torch.no_grad():
        full = generated_lora(golden_llm, gen, hidden, mask, len(questions))
        streamed = generated_lora(golden_llm, gen, cond, cmask, len(questions), aggregated=True)
    for lf, ls in zip(full.layers, streamed.layers):
        for k, (a, bs) in lf.items():
            assert torch.allclose(ls[k][0], a, rtol=0, atol=1e-5)
            for b1, b2 in zip(bs, ls[k][1]):
                assert torch.allclose(b1, b2, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["textmas", "tflow"])
def test_each_question_independent_of_its_neighbours(golden_llm, method):
    """Sampled, per-question lengths, 1 vs 5 questions in flight: the same answer per question."""
    need_shared(GOLDEN)
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg) if method == "tflow" else None
    questions = ["What is 2 + 2?", "Natalia sold clips to 48 of her friends in April, and then half as many in May.",
                 "How many legs do 3 spiders have?", "If x = 3, what is 2x + 7?", "Name a prime above 10."]
    sps = [SamplingParams(max_new_tokens=m, temperature=0.7, top_p=0.9) for m in (9, 3, 12, 6, 10)]
    kw = dict(sampling=sps, generator=gen, sender_max_new_tokens=5)
    batched = run_method(method, golden_llm, questions, batch_size=5, **kw)
    alone = [run_method(method, golden_llm, [q], sampling=[sp], generator=gen, sender_max_new_tokens=5,
                        seeds=[sp.seed + i])[0] for i, (q, sp) in enumerate(zip(questions, sps))]
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    assert [len(r.token_ids) for r in batched] == [9, 3, 12, 6, 10]


@pytest.mark.parametrize("piece", [1, 5, 37, 200])
def test_generator_in_pieces_equals_all_at_once(piece):
    """Inference runs the generator's stages on pieces of `piece` parameter tokens (whole layers
    where a stage attends within a layer), overwriting its activations in place: the factors of
    every stage on all tokens at once, for padded conditions of several rows, up to the rounding
    of a matmul kernel chosen for a few rows (≤ 1e-8 here; bitwise for pieces of dozens of
    tokens and more on this CPU); with gradients on, pieces are refused (training needs the
    activations they overwrite)."""
    from minitflow.model.config import Qwen3Config
    from minitflow.tflow.checkpoint import arch_for, random_generator
    from minitflow.tflow.condition import generator_factors
    cfg = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    gen = random_generator(cfg, seed=3, arch=arch_for(cfg, dict(d_model=64, head_dim=16, output_dim=16, token_dim=16)))
    gen.eval().requires_grad_(False)
    model = gen.parameter_generator.model
    assert model.n * model.h * model.w > 2 * piece or piece == 200  # several pieces (200: one per stage, or few)
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(3, 11, cfg.hidden_size, generator=g)
    mask = torch.arange(11)[None, :] < torch.tensor([11, 4, 7])[:, None]
    with torch.no_grad():
        whole = generator_factors(gen, cond, mask, piece=None)
        pieces = generator_factors(gen, cond, mask, piece=piece)
    assert whole.keys() == pieces.keys()
    for key, (a, b) in whole.items():
        torch.testing.assert_close(pieces[key][0], a, rtol=0, atol=1e-7)
        torch.testing.assert_close(pieces[key][1], b, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="without gradients"):
        gen.parameter_generator(cond, mask, piece)


def test_the_generator_at_its_default_scale_gives_the_raw_factors():
    """ParameterGenerator's default scale 1.0 gives its raw output; the scale use passes,
    PG_OUTPUT_SCALE, multiplies every factor (in one kernel before the split: the same products)."""
    from minitflow.model.config import Qwen3Config
    from minitflow.tflow.checkpoint import arch_for, random_generator
    from minitflow.tflow.generator import PG_OUTPUT_SCALE
    cfg = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    pg = random_generator(cfg, seed=3, arch=arch_for(cfg, dict(d_model=64, head_dim=16, output_dim=16,
                                                                   token_dim=16))).parameter_generator.eval()
    cond = torch.randn(2, 5, cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw, used = pg(cond), pg(cond, scale=PG_OUTPUT_SCALE)
    assert raw.keys() == used.keys() and len(raw) == 2 * 7
    for key, (a, b) in raw.items():
        assert not torch.equal(a, used[key][0])
        assert torch.equal(used[key][0], a * PG_OUTPUT_SCALE) and torch.equal(used[key][1], b * PG_OUTPUT_SCALE)


def test_generator_rope_traces_whole_and_matches_eager():
    """On CUDA the generator's RoPE (every q and k of every attention piece) is one
    torch.compile(fullgraph, dynamic) kernel: the same compile traces it without a graph break
    and gives the op-by-op values (CPU), for the shapes its attentions pass."""
    from minitflow.tflow.generator import apply_rope, grid_ids, rope_table
    g = torch.Generator().manual_seed(0)
    compiled = torch.compile(apply_rope.eager, dynamic=True, fullgraph=True)
    for b, heads, n, axes in ((6, 4, 3, [16]), (2, 4, 58, [8, 8]), (1, 4, 37, [8, 8])):
        x = torch.randn(b, heads, n, 16, generator=g)
        ids = grid_ids(n, device=None) if len(axes) == 1 else grid_ids(n, 1)
        rot = rope_table(ids, axes)
        torch.testing.assert_close(compiled(x, rot), apply_rope(x, rot), rtol=1e-6, atol=1e-6)


def test_textmas_sampled_senders_read_the_private_context_and_the_executor_the_question(golden_llm, monkeypatch):
    """Sampled textmas with a private context: each sender reads the sender question, sender A
    with the question's seed and sender B with seed + TEXTMAS_SEED_B (two draws, not one draw
    twice); the executor reads only the plain question after their texts, and its tokens are a
    direct generation of that prompt with the question's seed."""
    from dataclasses import replace
    from minitflow.tflow.methods import TEXTMAS_SEED_B, chat, textmas_context
    question = "What is 7 times 6?"
    private = "Context: the box holds 3 red apples and 4 green ones. " + question
    sp = SamplingParams(max_new_tokens=6, temperature=1.0, top_p=1.0, seed=11)
    prompts_of: dict[str, list[int]] = {}  # each agent's prompt as queued (golden-small's answer barely reads it)
    add = golden_llm.engine.add_request

    def spy(req):
        prompts_of[req.tag[1]] = list(req.prompt_ids)
        return add(req)
    monkeypatch.setattr(golden_llm.engine, "add_request", spy)
    r = run_method("textmas", golden_llm, [question], sampling=sp, seeds=[sp.seed], sender_max_new_tokens=5,
                   sender_questions=[private])[0]
    monkeypatch.undo()
    (a, a_sys), (b, b_sys), (c, c_sys) = prompts.textmas_roles("gsm8k")

    def draw(system: str, seed: int) -> str:
        out = golden_llm.generate([chat(golden_llm, system, private)], replace(sp, max_new_tokens=5, seed=seed))[0]
        return golden_llm.tokenizer.decode(out.token_ids)
    texts = [draw(a_sys, sp.seed), draw(b_sys, sp.seed + TEXTMAS_SEED_B)]
    assert draw(b_sys, sp.seed) != texts[1]  # B's seed shows in its text: the check below can see it
    receiver = chat(golden_llm, c_sys, question, textmas_context("gsm8k", texts))
    assert prompts_of == {a: chat(golden_llm, a_sys, private), b: chat(golden_llm, b_sys, private), c: receiver}
    assert [r.agents[x].prompt_tokens for x in (a, b, c)] == [len(prompts_of[x]) for x in (a, b, c)]
    assert r.token_ids == golden_llm.generate([receiver], sp)[0].token_ids
    # the official metadata.conversation_log: each sender's text as the receiver read it, then its answer
    log = r.metadata()["conversation_log"]
    assert log == [{"agent": a, "round": 0, "text": texts[0]}, {"agent": b, "round": 0, "text": texts[1]},
                   {"agent": c, "round": 1, "text": r.answer}] and all(texts)
    assert chat(golden_llm, c_sys, question, textmas_context("gsm8k", [e["text"] for e in log[:2]])) == prompts_of[c]


def test_textmas_sender_limits_per_question(golden_llm):
    """sender_max_new_tokens may be one limit per question: each question's two senders
    generate up to their own question's limit, whatever runs beside them."""
    qs = ["What is 2 + 2?", "How many legs do 3 spiders have?", "Name a prime above 10."]
    limits = [3, 1, 4]
    res = run_method("textmas", golden_llm, qs, sampling=SamplingParams(max_new_tokens=2, ignore_eos=True),
                     sender_max_new_tokens=limits, batch_size=3)
    (a, _), (b, _), (c, _) = prompts.textmas_roles("gsm8k")
    assert [(r.agents[a].completion_tokens, r.agents[b].completion_tokens) for r in res] == [(n, n) for n in limits]
    assert all(r.agents[c].completion_tokens == 2 for r in res)


def test_tflow_waits_for_both_senders_when_they_prefill_in_different_steps(golden_llm):
    """With fewer engine slots than senders in flight, a question's sender A can prefill a step
    before its sender B: its generator call waits for both, and every question still gets what
    it gets alone."""
    need_shared(GOLDEN)
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg)
    narrow = LLM(golden_llm.model, golden_llm.tokenizer, eos_token_ids=golden_llm.eos_token_ids, num_slots=3)
    qs = ["What is 2 + 2?", "How many legs do 3 spiders have?", "If x = 3, what is 2x + 7?"]
    sp = SamplingParams(max_new_tokens=5)
    got = run_method("tflow", narrow, qs, sampling=sp, generator=gen, batch_size=3)
    alone = [run_method("tflow", golden_llm, [q], sampling=sp, generator=gen)[0] for q in qs]
    assert [r.token_ids for r in got] == [r.token_ids for r in alone]


def test_question_span_is_the_user_turns_occurrence(golden_llm):
    """A question whose text also occurs in the sender's system prompt: the captured span is
    its occurrence in the user turn (the last one), the tokens of the question itself."""
    from minitflow.tflow.condition import encode_with_span, sender_prompt
    system = prompts.tflow_agents("gsm8k")[0]
    for question in ("Strategist", "task"):
        text = sender_prompt(system, question)
        assert system.find(question) != -1  # the system prompt holds it too
        ids, start, end = encode_with_span(golden_llm, text, question)
        assert ids == golden_llm.encode(text)
        assert start >= len(golden_llm.encode(text[:text.index("<|im_start|>user")]))
        assert golden_llm.tokenizer.decode(ids[start:end]) == question


def test_tflow_per_agent_accounting(golden_llm):
    """Each tflow agent's usage is its own request's: sender A and sender B processed their own
    prompts (system prompt A and B over the sender question, no completion), the receiver its
    chat over the plain question; only the receiver counts officially. On a fresh prefix cache the
    first question's senders had nothing cached and the next question's senders reuse the KV of
    the prompt start they share with it (cached_tokens, summed in the metadata)."""
    from minitflow.tflow.condition import sender_prompt
    need_shared(GOLDEN)
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg)
    fresh = LLM(golden_llm.model, golden_llm.tokenizer, eos_token_ids=golden_llm.eos_token_ids)  # empty prefix cache
    qs = ["What is 2 + 2?", "How many legs do 3 spiders have?"]
    private = [f"Context: the shelf holds {i + 3} books. {q}" for i, q in enumerate(qs)]
    res = run_method("tflow", fresh, qs, sampling=SamplingParams(max_new_tokens=4), generator=gen, batch_size=1,
                     sender_questions=private)
    systems = prompts.tflow_agents("gsm8k")
    lens = [len(fresh.encode(sender_prompt(s, private[0]))) for s in systems[:2]]
    assert lens[0] != lens[1]  # the senders' counts tell their prompts apart
    for q, p, r in zip(qs, private, res):
        a = r.agents
        assert list(a) == ["sender_A", "sender_B", "receiver"]
        assert [(a[s].prompt_tokens, a[s].completion_tokens, a[s].generates) for s in ("sender_A", "sender_B")] == \
            [(len(fresh.encode(sender_prompt(s, p))), 0, False) for s in systems[:2]]
        receiver = len(fresh.chat_ids([{"role": "system", "content": systems[2]}, {"role": "user", "content": q}]))
        assert (a["receiver"].prompt_tokens, a["receiver"].completion_tokens) == (receiver, len(r.token_ids))
        assert r.official_usage == {"prompt_tokens": receiver, "completion_tokens": len(r.token_ids),
                                    "total_tokens": receiver + len(r.token_ids)}
        usage = r.metadata()["token_usage"]
        assert usage["cached_tokens"] == sum(x.cached_tokens for x in a.values())
        assert usage["processed_tokens"] == sum(x.prompt_tokens + x.completion_tokens for x in a.values())
        # the official `truncated_by_max_new_tokens`: the receiver's alone (the senders only prefill)
        assert [a[s].finish_reason for s in a] == ["prefill", "prefill", r.finish_reason]
        assert r.metadata()["truncated"] is (r.finish_reason == "length") is r.truncated
        assert "conversation_log" not in r.metadata()  # textmas' alone: tflow's senders write no text
    assert [res[0].agents[s].cached_tokens for s in ("sender_A", "sender_B")] == [0, 0]
    assert all(0 < res[1].agents[s].cached_tokens < res[1].agents[s].prompt_tokens for s in ("sender_A", "sender_B"))


def test_stage_times_run_from_each_questions_own_start(golden_llm):
    """total_s runs from the question's own start, not the call's: with one question in flight,
    question i starts after question i-1 is handed over, so its total is less than the time
    between the two results. wall_s_per_question is the call's wall time over its questions."""
    import time
    qs = ["What is 2 + 2?", "How many legs do 3 spiders have?", "Name a prime above 10."]
    marks: list[float] = []
    streamed: list[float | None] = []
    t0 = time.perf_counter()
    res = run_method("baseline", golden_llm, qs, sampling=SamplingParams(max_new_tokens=6, ignore_eos=True),
                     batch_size=1, on_result=lambda i, r: (marks.append(time.perf_counter()),
                                                           streamed.append(r.metadata()["wall_time_per_question"])))
    wall = time.perf_counter() - t0
    assert all(0 < res[i].timings["total_s"] < marks[i] - marks[i - 1] for i in range(1, len(qs))), \
        ([r.timings["total_s"] for r in res], marks)
    assert len({r.wall_s_per_question for r in res}) == 1
    assert streamed == [None] * len(qs)  # unknown while the run goes on (it read 0.0)
    assert marks[-1] - marks[0] < len(qs) * res[0].wall_s_per_question <= wall


def test_generator_piece_reaches_the_generator(golden_llm, monkeypatch):
    """run_method's generator_piece is the piece size the tflow generator runs with (default
    generator.PIECE_TOKENS), and a bad one is refused, not dropped."""
    from minitflow.tflow import methods
    from minitflow.tflow.generator import PIECE_TOKENS
    need_shared(GOLDEN)
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg)
    pieces = []
    real = methods.generated_lora
    monkeypatch.setattr(methods, "generated_lora", lambda *a, **k: pieces.append(k["piece"]) or real(*a, **k))
    sp = SamplingParams(max_new_tokens=2)
    for piece in (7, None):
        run_method("tflow", golden_llm, ["What is 2 + 2?"], sampling=sp, generator=gen, generator_piece=piece)
    run_method("tflow", golden_llm, ["What is 2 + 2?"], sampling=sp, generator=gen)
    assert pieces == [7, None, PIECE_TOKENS]
    with pytest.raises(UserError, match="generator_piece must be >= 1"):
        run_method("tflow", golden_llm, ["What is 2 + 2?"], sampling=sp, generator=gen, generator_piece=0)


def test_load_checkpoint_casts_only_the_parameter_generator():
    """load_checkpoint's dtype is the parameter generator's; the layer aggregator stays float32
    with the file's exact values (its softmax weights sum the senders' layers in float32)."""
    from minitflow.model.config import Qwen3Config
    need_shared(GOLDEN)
    state = torch.load(GOLDEN / "tflow.pt", map_location="cpu", weights_only=True)
    gen = load_checkpoint(GOLDEN / "tflow.pt", Qwen3Config.from_dir(GOLDEN / "model"), dtype=torch.bfloat16)
    assert {p.dtype for p in gen.parameter_generator.parameters()} == {torch.bfloat16}
    for name, value in state["pg_layer_aggregator"].items():
        ours = getattr(gen.pg_layer_aggregator, name)
        assert ours.dtype == torch.float32 and torch.equal(ours, value.float()), name


def test_load_checkpoint_takes_a_dtype_name_as_llm_load_does():
    """load_checkpoint(path, cfg, "bfloat16") reached module.to("bfloat16"), which torch read as a
    device: "RuntimeError: Invalid device string". Names are LLM.load's, "auto" included."""
    from minitflow import demo_dir
    from minitflow.model.config import Qwen3Config
    cfg = Qwen3Config.from_dir(demo_dir())
    for name, want in (("bfloat16", torch.bfloat16), ("auto", torch.float32), ("float32", torch.float32)):
        gen = load_checkpoint(demo_dir() / "tflow.pt", cfg, name)
        assert {p.dtype for p in gen.parameter_generator.parameters()} == {want}, name
    with pytest.raises(UserError, match=r"^unknown dtype 'fp8'"):
        load_checkpoint(demo_dir() / "tflow.pt", cfg, "fp8")


def test_tflow_refuses_a_generator_on_another_device(golden_llm):
    """load_checkpoint's default device is the CPU: with the LLM on a GPU the run failed with
    torch's device mismatch inside the generator, after the senders ran. (Here: the meta device.)"""
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg).to("meta")
    with pytest.raises(UserError, match=r"^the generator is on meta and the LLM on cpu: load it with "):
        run_method("tflow", golden_llm, ["What is 2 + 2?"], sampling=SamplingParams(max_new_tokens=2), generator=gen)
    assert not golden_llm.has_unfinished()


@pytest.mark.parametrize("other, match", [
    ({"hidden_size": 48}, r"hidden size 48 \(this LLM: 32\)"),
    ({"num_hidden_layers": 1}, r"layers 1 \(this LLM: 2\)"),
    ({"intermediate_size": 96}, r"mlp.gate_proj \(32, 96\) \(this LLM: \(32, 80\)\)"),
    ({"num_key_value_heads": 2}, r"self_attn.k_proj \(32, 32\) \(this LLM: \(32, 16\)\)"),
    (None, r"^generator must be a TFlowGenerator .*got str"),
    ({"generator_piece": True}, r"^generator_piece must be >= 1 or None, got True")],
    ids=["hidden", "layers", "mlp", "kv-heads", "a-path", "piece-true"])
def test_tflow_refuses_a_generator_for_another_backbone_before_any_request(golden_llm, other, match, monkeypatch):
    """A generator of another backbone ran the senders first and then failed: torch's matmul
    error inside the generator (hidden size), a capture error naming layer weights (layers), or
    a LoRA error at the receiver after the generator's work (projections); a path in place of
    the generator was an AttributeError, generator_piece=True a TypeError from torch.narrow."""
    import dataclasses
    from minitflow.tflow.checkpoint import random_generator
    def add_request(r):
        raise AssertionError(f"a request ran before the refusal: {r.tag}")
    monkeypatch.setattr(golden_llm.engine, "add_request", add_request)
    piece = {}
    if other is None:
        gen = str(GOLDEN / "tflow.pt")
    elif "generator_piece" in other:
        gen, piece = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg), other
    else:
        gen = random_generator(dataclasses.replace(golden_llm.cfg, **other))
    with pytest.raises(UserError, match=match):
        run_method("tflow", golden_llm, ["What is 2 + 2?"], sampling=SamplingParams(max_new_tokens=2), generator=gen,
                   **piece)
    assert not golden_llm.has_unfinished()


@pytest.mark.parametrize("deferred", [False, True])
def test_a_nan_condition_names_its_question(golden_llm, monkeypatch, deferred):
    """A NaN in a sender's captured hidden states went on into the generator: every LoRA factor
    made from it was NaN, and the run failed later at the receiver's NaN logits, blaming float16
    or the weights. Now the question is named at its condition. `deferred`: the flags not read
    before the receivers run (CUDA, where they are not waited for): the receiver's NaN logits
    then name the condition too."""
    from minitflow.engine.engine import TokenRing
    from minitflow.tflow import methods
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg)
    real = methods.stack_conditions

    seen = []  # questions before each call: a cold prefix cache (the test alone) prefills them in two steps

    def poisoned(caps):  # rows: senders outermost; question 1's sender B, in whichever call holds it
        cond, mask = real(caps)
        before, n = sum(seen), len(caps) // 2
        seen.append(n)
        if before <= 1 < before + n:
            cond[n + 1 - before, 2] = float("nan")
        return cond, mask

    class Late(TokenRing):
        def pop(self, drain=False):
            return super().pop() if drain else []

    monkeypatch.setattr(methods, "stack_conditions", poisoned)
    if deferred:
        monkeypatch.setattr(methods, "TokenRing", Late)
    with pytest.raises(UserError, match=r"^question 1: its senders' hidden states \(requests \d+, \d+\) hold NaN or "
                                        r"inf, which poison the LoRA factors"):
        run_method("tflow", golden_llm, ["What is 2 + 2?", "What is 3 + 5?"], generator=gen, generator_batch=None,
                   sampling=SamplingParams(max_new_tokens=2))
    assert not golden_llm.has_unfinished()


def test_sender_stage_time_is_the_longer_senders_prefill(golden_llm, monkeypatch):
    """A question's sender_prefill_s is the longer of its two senders' prefill timers: the same
    timer when both prefill in one step, two when an engine with fewer slots than senders
    prefills them in different steps."""
    need_shared(GOLDEN)
    gen = load_checkpoint(GOLDEN / "tflow.pt", golden_llm.cfg)
    narrow = LLM(golden_llm.model, golden_llm.tokenizer, eos_token_ids=golden_llm.eos_token_ids, num_slots=3)
    senders: dict[tuple[int, str], object] = {}
    add = narrow.engine.add_request

    def spy(req):
        senders[(req.tag[0].index, req.tag[1])] = req
        return add(req)
    monkeypatch.setattr(narrow.engine, "add_request", spy)
    qs = ["What is 2 + 2?", "How many legs do 3 spiders have?", "If x = 3, what is 2x + 7?"]
    res = run_method("tflow", narrow, qs, sampling=SamplingParams(max_new_tokens=2), generator=gen, batch_size=3)
    timers = [[senders[(i, s)].prefill_timer for s in ("sender_A", "sender_B")] for i in range(len(qs))]
    assert any(a is not b for a, b in timers)  # some question's senders prefilled in different steps
    assert [r.timings["sender_prefill_s"] for r in res] == [max(a.seconds, b.seconds) for a, b in timers]


def test_seeds_are_checked_before_the_run():
    """run_method's explicit seeds follow SamplingParams' rule, checked before any request: a numpy
    seed (a pandas column) was an OverflowError in sample_seed, "3" a TypeError, and -1 or 2^64 ran
    wrapped, as 2^64 - 1 or 0, without a word; a numpy seed in range runs as its int."""
    import re

    import numpy as np

    from minitflow.files import demo_dir
    llm = LLM.load(demo_dir(), device="cpu", dtype="float32")
    sp = SamplingParams(max_new_tokens=2, temperature=0.7)
    for bad in (-1, 2 ** 64, "3", 1.5, True):
        with pytest.raises(UserError, match=rf"^seeds\[1\] must be an integer in \[0, 2\^64\), got {re.escape(repr(bad))}$"):
            run_method("baseline", llm, ["a", "b"], sampling=sp, seeds=[0, bad])
    assert not llm.engine.in_flight()
    got = run_method("baseline", llm, ["a"], sampling=sp, seeds=[np.int64(5)], samples=2)
    want = run_method("baseline", llm, ["a"], sampling=sp, seeds=[5], samples=2)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert [type(r.sampling.seed) for r in got] == [int, int]


def test_seeds_near_the_top_wrap_instead_of_failing_mid_run():
    """Question i samples with seed + i and textmas' sender B with seed + TEXTMAS_SEED_B: near
    2^64 the sum was refused when that question (or its sender B) started, mid-run; it wraps."""
    from dataclasses import replace

    from minitflow.files import demo_dir
    from minitflow.tflow.methods import TEXTMAS_SEED_B
    llm = LLM.load(demo_dir(), device="cpu", dtype="float32")
    top = 2 ** 64 - 1
    sp = SamplingParams(max_new_tokens=2, temperature=0.7, seed=top)
    base = run_method("baseline", llm, ["a", "b"], sampling=sp)
    assert [r.sampling.seed for r in base] == [top, 0]
    assert base[1].token_ids == run_method("baseline", llm, ["b"], sampling=replace(sp, seed=0))[0].token_ids
    run_method("textmas", llm, ["a"], sampling=sp, sender_max_new_tokens=2)  # sender B: seed TEXTMAS_SEED_B - 1
    assert (top + TEXTMAS_SEED_B) % 2 ** 64 == TEXTMAS_SEED_B - 1
