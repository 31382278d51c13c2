#!/usr/bin/env bash
# The end-to-end example on synthetic data (run by `make demo`, which puts .venv/bin on PATH).
#   1. generate a synthetic dataset of CLEVR-like scenes
#   2. look at it: summary and contact sheet
# Outputs go to outputs/demo/ (override with DEMO_DIR).
set -euo pipefail
out="${DEMO_DIR:-outputs/demo}"
mkdir -p "$out"

scene-convert --from synthetic "$out/synthetic.h5" --scenes 1000 --views 10 --size 64 --seed 0 --overwrite
scene-info "$out/synthetic.h5" --grid "$out/synthetic.png"
