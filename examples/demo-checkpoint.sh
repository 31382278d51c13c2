#!/usr/bin/env bash
# Reproduces the shipped demo checkpoint (run by `make demo-checkpoint`; hours on a CPU).
#   1. 10,000 synthetic scenes with seed 1: other scenes than the demo file's (seed 0), whose
#      held-out split the checkpoint is evaluated on
#   2. scene-train srt with the CPU config (resumable: run it again to continue). The shipped
#      weights took two stages (examples/demo-checkpoint/training-time.txt): 15,000 steps on
#      generator-v1 scenes, then steps 15,000 -> 17,000 on these v2 scenes, resumed from the
#      15,000-step weights (fresh optimizer state: the shipped file has none).
#   3. the weights (no optimizer state) and the training log go to examples/demo-checkpoint/
set -euo pipefail
out="${DEMO_CHECKPOINT_DIR:-outputs/demo-checkpoint}"
steps="${DEMO_CHECKPOINT_STEPS:-17000}"
ship=examples/demo-checkpoint
mkdir -p "$out" "$ship"

[ -f "$out/train.h5" ] || scene-convert --from synthetic "$out/train.h5" --scenes 10000 --views 10 --size 64 --seed 1 \
    --generator-version 2
start=$(date +%s)
scene-train srt "$out/train.h5" --config synthetic --max-steps "$steps" --out "$out/run"
python -m scenetools.checkpoint export "$out/run/checkpoints/latest.pt" "$ship/srt-synthetic.pt"
cp "$out/run/metrics.jsonl" "$ship/metrics.jsonl"
cp "$out/run/config.yaml" "$ship/config.yaml"
echo "this invocation: $(( $(date +%s) - start )) s of training up to step $steps" >> "$ship/training-time.txt"
