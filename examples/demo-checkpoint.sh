#!/usr/bin/env bash
# Reproduces a shipped demo checkpoint (run by `make demo-checkpoint`, `make
# demo-checkpoint-osrt`, `make demo-checkpoint-obsurf` or `make demo-checkpoint-srn`; hours on a CPU; resumable: run it
# again to continue).
#   srt (DEMO_MODEL=srt, the default):
#     1. 10,000 synthetic scenes with seed 1: other scenes than the demo file's (seed 0), whose
#        held-out split the checkpoint is evaluated on. Generator version 3: cameras at varied
#        distances and heights, so the closeup half of rotate_and_closeup stays inside what
#        the model has seen.
#     2. scene-train srt with the CPU config, 17,000 steps from scratch
#   osrt (DEMO_MODEL=osrt): the same scenes as srt; scene-train osrt with the CPU config,
#     20,000 steps from scratch
#   obsurf (DEMO_MODEL=obsurf): the same scenes again (they carry depth and instance ids);
#     scene-train obsurf with the CPU config, 10,000 steps from scratch
#   srn (DEMO_MODEL=srn):
#     1. 1,000 single objects with seed 1 (make demo-srn's are seed 0), 30 views per training
#        object, of which srn/synthetic holds out the last 5, and 50 per val and test object
#     2. scene-train srn with the CPU config, 3,000 steps (32 px, then 64 px)
#   3. the weights (no optimizer state, with a preview scene) go to
#      examples/demo-checkpoint/<model>-synthetic.pt, with the training log, the config and
#      the training time next to it (<model>-metrics.jsonl, -config.yaml, -training-time.txt)
set -euo pipefail
model="${DEMO_MODEL:-srt}"
out="${DEMO_CHECKPOINT_DIR:-outputs/demo-checkpoint}"
ship=examples/demo-checkpoint
# the SRT, OSRT and ObSuRF checkpoints train on the same scenes, converted once into one file
v3_scenes=(--scenes 10000 --views 10 --size 64 --seed 1 --generator-version 3)
case "$model" in
    srt) steps="${DEMO_CHECKPOINT_STEPS:-17000}" scenes="$out/scenes-v3.h5" data=("${v3_scenes[@]}") ;;
    osrt) steps="${DEMO_CHECKPOINT_STEPS:-20000}" scenes="$out/scenes-v3.h5" data=("${v3_scenes[@]}") ;;
    obsurf) steps="${DEMO_CHECKPOINT_STEPS:-10000}" scenes="$out/scenes-v3.h5" data=("${v3_scenes[@]}") ;;
    srn) steps="${DEMO_CHECKPOINT_STEPS:-3000}" scenes="$out/srn-train.h5"
        data=(--kind objects --scenes 1000 --views 30 --test-views 50 --size 64 --seed 1) ;;
    *) echo "examples/demo-checkpoint.sh: no demo checkpoint recipe for $model" >&2; exit 2 ;;
esac
mkdir -p "$out" "$ship"

[ -f "$scenes" ] || scene-convert --from synthetic "$scenes" "${data[@]}"
start=$(date +%s)
scene-train "$model" "$scenes" --config synthetic --max-steps "$steps" --out "$out/$model"
python -m scenetools.checkpoint export "$out/$model/checkpoints/latest.pt" "$ship/$model-synthetic.pt"
cp "$out/$model/metrics.jsonl" "$ship/$model-metrics.jsonl"
cp "$out/$model/config.yaml" "$ship/$model-config.yaml"
echo "this invocation: $(( $(date +%s) - start )) s of training up to step $steps" >> "$ship/$model-training-time.txt"
