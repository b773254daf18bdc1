#!/usr/bin/env bash
# The GPU checks and benchmarks that fit one 10-minute command, most important first, each part
# under its own time limit so that whatever finished comes back when a later part runs long (and a
# part cut short keeps the benchmarks it finished: bench/partial_json.py).
#
#   bash bench/gpu_session.sh OUT_DIR [SECONDS]      (default 560)
#   PARTS="pipelines long-tail" bash bench/gpu_session.sh OUT_DIR 560   (only those parts: a second
#   command for what the first one's deadline skipped)
#
# Writes OUT_DIR/session.log and one pytest-benchmark JSON per part (lora-sweep: its own list of
# timings, which table.py skips); join them with `python bench/table.py OUT_DIR/*.json`. Needs a Qwen3 tokenizer for the method benchmarks
# (MINITFLOW_BENCH_TOKENIZER or ../shared/reference/golden-small/model, which a device machine's
# copy of the checkout may lack: carry one in); refuses to start without one unless PARTS leaves
# those parts out. Runs from a bare checkout (PYTHONPATH), so a machine without package registries needs no install.
set -u
out=${1:?usage: gpu_session.sh OUT_DIR [SECONDS]}
deadline=$((SECONDS + ${2:-560}))
mkdir -p "$out"
log="$out/session.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

wanted() {  # wanted NAME: whether PARTS (all parts when unset) names NAME
    [ -z "${PARTS:-}" ] || [[ " $PARTS " == *" $1 "* ]]
}

# The parts that run the methods need a Qwen3 tokenizer. Without one they skip or fail one by one,
# each after building the 4B model (a minute or two of device time gone, and the method numbers
# with it): refuse at once instead, before anything starts.
tok=${MINITFLOW_BENCH_TOKENIZER:-../shared/reference/golden-small/model}
if [ ! -f "$tok/tokenizer.json" ]; then
    for name in methods stage-memory profile-stages pipelines refill generator latentmas-stream methods-eager samples; do
        if wanted "$name"; then
            echo "gpu_session.sh: no tokenizer.json in $tok, which part $name needs: set MINITFLOW_BENCH_TOKENIZER" \
                 "to a Qwen3 tokenizer folder, or leave the part out of PARTS" | tee -a "$log" >&2
            exit 2
        fi
    done
fi

part() {  # part NAME LIMIT_S COMMAND...: run COMMAND for at most LIMIT_S (less if the session ends sooner)
    local name=$1 limit=$2 left=$((deadline - SECONDS))
    shift 2
    wanted "$name" || return 0
    if [ "$left" -lt 40 ]; then echo "== $name: skipped, ${left}s left" >>"$log"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s): $*" >>"$log"
    local t0=$SECONDS
    timeout "$limit" "$@" >>"$log" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0))s" >>"$log"
    local f  # a part cut short wrote no JSON: the benchmarks it finished are in the partial one (bench/partial_json.py)
    for f in "$out"/*.json.partial; do
        [ -e "$f" ] || continue
        if [ -s "${f%.partial}" ]; then rm -f "$f"; else mv -f "$f" "${f%.partial}"; echo "== $name: cut short, ${f%.partial} holds the benchmarks it finished" >>"$log"; fi
    done
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } >>"$log" 2>&1
bench="python3 -m pytest -q -p no:cacheprovider --benchmark-only"
part gpu-tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -k "not compiled"
part decode 150 $bench bench/test_micro.py -k "(decode_step or lora_projection) and not compiled" --benchmark-json="$out/decode.json"  # graphs / graphs-bmm+expand / graphs-bmm / graphs-folded: lora_linear.DECODE_LORA's verdict
# every part after `decode` runs the LoRA path its captured step found fastest (lora_linear.DECODE_LORA)
if lora_path=$(python3 bench/table.py --fastest-decode-lora "$out/decode.json" 2>>"$log"); then
  export MINITFLOW_BENCH_DECODE_LORA=$lora_path
fi
echo "== later parts run DECODE_LORA=${MINITFLOW_BENCH_DECODE_LORA:-the default}" >>"$log"
part methods 170 $bench bench/test_e2e.py -k "test_method and graphs" --benchmark-json="$out/methods.json"
part stage-memory 90 python3 bench/stage_memory.py "$tok" 256  # which tflow stage holds the memory over the official
part profile-stages 90 python3 bench/profile_stages.py "$tok" 64  # launch-bound or kernel-bound: what to do about tflow's eager stages
part profile 60 python3 bench/profile_step.py 5  # where the step's time goes decides what to fuse next
part sampling 40 $bench bench/test_micro.py -k "sampling or nucleus" --benchmark-json="$out/sampling.json"
part lora-sweep 90 python3 bench/lora_kernel_sweep.py "$out/lora_sweep.json"  # the LoRA kernel's tiling
part pipelines 150 $bench bench/test_serving.py -k "pipeline_vs_chunked and qwen3" --benchmark-json="$out/pipelines.json"
part refill 200 $bench bench/test_serving.py -k tflow_refill_share --benchmark-json="$out/refill.json"  # --refill_share's verdict for tflow
part long-tail 200 $bench bench/test_serving.py -k long_tail --benchmark-json="$out/long_tail.json"
part generator 150 $bench bench/test_e2e.py -k "tflow_generator_options and all" --benchmark-json="$out/generator.json"
part transformers 100 $bench bench/test_e2e.py -k "transformers and graphs" --benchmark-json="$out/hf.json"
part latentmas-stream 120 $bench bench/test_serving.py -k latentmas_pipeline --benchmark-json="$out/latentmas_stream.json"  # REFILL_SHARE's verdict
part methods-eager 120 $bench bench/test_e2e.py -k "test_method and eager and tflow" --benchmark-json="$out/eager.json"
part prefill-lengths 60 $bench bench/test_serving.py -k prefill_by_length --benchmark-json="$out/prefill_lengths.json"  # runner.FORWARD_TOKENS' verdict
part samples 240 $bench bench/test_serving.py -k "samples_vs_repeated or baseline_samples_wait" --benchmark-json="$out/samples.json"  # what samples=K shares
exit 0
