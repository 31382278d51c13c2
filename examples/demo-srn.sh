#!/usr/bin/env bash
# SRN end to end on the CPU (run by `make demo-srn`, which puts .venv/bin on PATH):
#   1. 300 single objects on white, SRN-style (240 train / 30 val / 30 test), 25 views each
#   2. train a small SRN for a few minutes (srn/synthetic: the last 5 views of every training
#      object are held out)
#   3. score novel views of the training objects (those held-out views, rendered from the
#      trained codes) and single-shot novel views of unseen objects (a code fitted to view 0),
#      each next to the white background on the same pixels
#   4. a video orbiting an unseen object, rendered from its fitted code
#   5. the same single-shot score and video for the shipped SRN demo checkpoint, trained for
#      half an hour on other objects (examples/demo-checkpoint/srn-synthetic.pt)
# Outputs go to outputs/demo-srn/ (override with DEMO_DIR). Running it again reuses what exists.
set -euo pipefail
out="${DEMO_DIR:-outputs/demo-srn}"
steps="${DEMO_STEPS:-300}"
data="$out/objects.h5" run="$out/srn-fresh"
unseen=object_000270  # the first test object
mkdir -p "$out"

[ -f "$data" ] || scene-convert --from synthetic --kind objects "$data" --scenes 300 --views 25 --test-views 25 \
    --size 64 --seed 0
scene-info "$data" --grid "$out/objects.png"

echo "== fresh run: scene-train srn (CPU config, $steps steps)"
scene-train srn "$data" --config synthetic --max-steps "$steps" --out "$run"

echo "== novel views of 30 training objects (held out of training)"
scene-eval "$run" "$data" --split train --scenes 30 --targets held_out --out "$out/srn-train-held-out.json" --overwrite
echo "== single-shot: 8 unseen objects, a code fitted to view 0, scored on the other 24"
scene-eval "$run" "$data" --split test --scenes 8 --out "$out/srn-test-single-shot.json" --overwrite
scene-render "$run" --data "$data" --scene "$unseen" --motion rotate --fade --frames 60 --outputs rgb,depth -o - \
    | scene-video -o "$out/srn-unseen-orbit.mp4" --overwrite

echo "== shipped SRN demo checkpoint (examples/demo-checkpoint/srn-synthetic.pt): the same 8 unseen objects"
scene-eval examples/demo-checkpoint/srn-synthetic.pt "$data" --split test --scenes 8 \
    --out "$out/srn-checkpoint-single-shot.json" --overwrite
scene-render examples/demo-checkpoint/srn-synthetic.pt --data "$data" --scene "$unseen" --motion rotate --fade \
    --frames 60 --outputs rgb,depth -o - | scene-video -o "$out/srn-checkpoint-unseen-orbit.mp4" --overwrite
