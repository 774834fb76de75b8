#!/usr/bin/env bash
# The GPU check of issue 3, one script: on a machine with a CUDA GPU, from the repository root, with
# torch, onnx, onnxscript, onnxruntime and mrisynth's base and phantom dependencies importable.
#   1. `python -m models.benchmark` of the paper preset at 240 x 240 (steps/s, images/s, peak memory);
#   2. a 12-case phantom (seed 0) and the demo preset trained on it (seed 0), exported, and its
#      acceptance measured under the default thresholds (and at Dice 0.9 and 0.8).
# Results go to $OUT (default gpu-check/): logs, and the run record with the artifacts as a .tgz.
# PRESET, BENCH_PRESET and CASES (default demo, paper, 12) shrink it for a try on the CPU.
# Measured on an H200 (2026-11-27): the benchmark takes about 70 s. The demo's stages ran at 16, 17
# and 6.5 steps/s while three demo trainings shared the GPU (about 9 minutes each; small networks
# leave the GPU waiting on Python, so one training alone is faster, by how much was not measured).
set -uo pipefail
out=${OUT:-gpu-check}
work=$(mktemp -d)
mkdir -p "$out"
export TQDM_MININTERVAL=30 PYTHONUNBUFFERED=1
stamp() { echo "== $(date +%T) (+${SECONDS}s) $*"; }

stamp "GPU: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader)"
python3 -m cli phantom --out "$work/phantom" --cases "${CASES:-12}" --seed 0 || exit 1
stamp "phantom written"
python3 -m models.benchmark --data "$work/phantom" --cache "$work/cache240" --preset "${BENCH_PRESET:-paper}" \
    --batch-sizes 1 8 32 --steps 5 --warmup 2 > "$out/paper-benchmark.log" 2>&1
stamp "benchmark done"; grep -v -i warn "$out/paper-benchmark.log"

run="$work/demo"
python3 -m cli train --data "$work/phantom" --out "$run" --preset "${PRESET:-demo}" --seed 0 --threads 4 \
    > "$out/train.log" 2>&1 || exit 1
stamp "trained"
python3 -m cli export "$run" --out "$run/artifacts" >> "$out/train.log" 2>&1 || exit 1
tar czf "$out/demo.tgz" -C "$run" run.json losses.csv artifacts
stamp "exported"
for dice in 0.95 0.9 0.8; do
    echo "### dice $dice"
    python3 -m worker.benchmark --artifacts "$run/artifacts" --batch-sizes 64 --samples 64 --dice "$dice"
done > "$out/acceptance.log" 2>&1
stamp "done"; grep -E "###|acceptance rate|accepted samples/s" "$out/acceptance.log"
