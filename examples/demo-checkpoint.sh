#!/usr/bin/env bash
# Reproduces the shipped demo checkpoint (run by `make demo-checkpoint`; hours on a CPU).
#   1. 10,000 synthetic scenes with seed 1: other scenes than the demo file's (seed 0), whose
#      held-out split the checkpoint is evaluated on
#   2. scene-train srt with the CPU config, 17,000 steps from scratch (resumable: run it again
#      to continue). Generator version 3: cameras at varied distances and heights, so the
#      closeup half of rotate_and_closeup stays inside what the model has seen.
#   3. the weights (no optimizer state) and the training log go to examples/demo-checkpoint/
set -euo pipefail
out="${DEMO_CHECKPOINT_DIR:-outputs/demo-checkpoint}"
steps="${DEMO_CHECKPOINT_STEPS:-17000}"
ship=examples/demo-checkpoint
mkdir -p "$out" "$ship"

[ -f "$out/train.h5" ] || scene-convert --from synthetic "$out/train.h5" --scenes 10000 --views 10 --size 64 --seed 1 \
    --generator-version 3
start=$(date +%s)
scene-train srt "$out/train.h5" --config synthetic --max-steps "$steps" --out "$out/run"
python -m scenetools.checkpoint export "$out/run/checkpoints/latest.pt" "$ship/srt-synthetic.pt"
cp "$out/run/metrics.jsonl" "$ship/metrics.jsonl"
cp "$out/run/config.yaml" "$ship/config.yaml"
echo "this invocation: $(( $(date +%s) - start )) s of training up to step $steps" >> "$ship/training-time.txt"
