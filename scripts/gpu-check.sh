#!/usr/bin/env bash
# The GPU check of issue 3, one script: on a machine with a CUDA GPU, from the repository root, with
# torch, onnx, onnxscript, onnxruntime and mrisynth's base and phantom dependencies importable.
#   1. a 12-case phantom (seed 0), as the demo run on the CPU used;
#   2. the demo preset trained on it with seeds 0 and 1 side by side (the GPU is far from busy with
#      96 x 96 images), and beside them seed 0 with twice the synthesis steps (how much longer
#      training helps; stopped unfinished when it would delay step 3); each finished run is exported
#      and its acceptance measured under the default thresholds (and at Dice 0.9 and 0.8);
#   3. `python -m models.benchmark` of the paper preset at 240 x 240 (steps/s, images/s, peak memory),
#      alone on the GPU, with whatever time is left before DEADLINE_S.
# Results go to $OUT (default gpu-check/): logs, run records and the exported artifacts as .tgz.
# PRESET, BENCH_PRESET and CASES (default demo, paper, 12) shrink it for a try on the CPU.
set -uo pipefail
out=${OUT:-gpu-check}
deadline=$((SECONDS + ${DEADLINE_S:-540}))
work=$(mktemp -d)
mkdir -p "$out"
export TQDM_MININTERVAL=30 PYTHONUNBUFFERED=1
stamp() { echo "== $(date +%T) (+${SECONDS}s) $*"; }

stamp "GPU: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader)"
python3 -m mrisynth phantom --out "$work/phantom" --cases "${CASES:-12}" --seed 0 || exit 1
stamp "phantom written"

train_and_export() {
    local name=$1 run="$work/$1"
    shift
    python3 -m mrisynth train --data "$work/phantom" --out "$run" --preset "${PRESET:-demo}" --threads 4 "$@" \
        && stamp "$name trained" \
        && python3 -m mrisynth export "$run" --out "$run/artifacts" \
        && stamp "$name exported" \
        && tar czf "$out/$name.tgz" -C "$run" run.json losses.csv artifacts
}
train_and_export seed0 --seed 0 > "$out/seed0.log" 2>&1 &
seed0=$!
train_and_export seed1 --seed 1 > "$out/seed1.log" 2>&1 &
seed1=$!
timeout $((deadline - SECONDS - 200)) bash -c "$(declare -f stamp train_and_export); out=$out work=$work \
    train_and_export long --seed 0 --steps synthesis=2600" > "$out/long.log" 2>&1 &
long=$!
wait $seed0 $seed1
stamp "seeds 0 and 1 done"
wait $long
stamp "long run done or stopped"; tail -n 2 "$out"/*.log

acceptance() {
    for name in seed0 seed1 long; do
        local artifacts="$work/$name/artifacts"
        [ -f "$artifacts/manifest.json" ] || continue
        for dice in 0.95 0.9 0.8; do
            echo "### $name, dice $dice"
            python3 -m worker.benchmark --artifacts "$artifacts" --batch-sizes 64 --samples 64 --dice "$dice"
        done
    done
}
acceptance > "$out/acceptance.log" 2>&1 &

left=$((deadline - SECONDS > 30 ? deadline - SECONDS : 30))
stamp "paper benchmark with ${left}s left"
timeout "$left" python3 -m models.benchmark --data "$work/phantom" --cache "$work/cache240" \
    --preset "${BENCH_PRESET:-paper}" --batch-sizes 1 8 32 --steps 5 --warmup 2 > "$out/paper-benchmark.log" 2>&1
wait
stamp "done"; grep -v -i warn "$out/paper-benchmark.log"; grep -E "###|acceptance rate|accepted samples/s" "$out/acceptance.log"
