#!/usr/bin/env bash
# The end-to-end example on synthetic data (run by `make demo`, which puts .venv/bin on PATH).
#   1. generate 1,000 CLEVR-like scenes (800 train / 100 val / 100 test) and look at them
#   2. train a small SRT on the CPU for a few minutes (fresh run)
#   3. score it on the held-out test scenes, next to two baselines on the same pixels
#   4. score the shipped demo checkpoint (trained for hours on other synthetic scenes,
#      see examples/demo-checkpoint/) on the same test scenes
# Outputs go to outputs/demo/ (override with DEMO_DIR). Running it again reuses what exists.
set -euo pipefail
out="${DEMO_DIR:-outputs/demo}"
steps="${DEMO_STEPS:-300}"
mkdir -p "$out"

[ -f "$out/synthetic.h5" ] || scene-convert --from synthetic "$out/synthetic.h5" --scenes 1000 --views 10 --size 64 --seed 0
scene-info "$out/synthetic.h5" --grid "$out/synthetic.png"

echo "== fresh run: scene-train srt (CPU config, $steps steps)"
scene-train srt "$out/synthetic.h5" --config synthetic --max-steps "$steps" --out "$out/srt-fresh"
scene-eval "$out/srt-fresh" "$out/synthetic.h5" --split test --out "$out/srt-fresh-test.json"

echo "== shipped demo checkpoint (examples/demo-checkpoint/srt-synthetic.pt)"
scene-eval examples/demo-checkpoint/srt-synthetic.pt "$out/synthetic.h5" --split test \
    --out "$out/srt-checkpoint-test.json" --images "$out/srt-checkpoint-test-images"
