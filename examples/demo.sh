#!/usr/bin/env bash
# The end-to-end example on synthetic data (run by `make demo`, which puts .venv/bin on PATH).
#   1. generate 1,000 CLEVR-like scenes (800 train / 100 val / 100 test) and look at them
#   2. train a small model on the CPU for a few minutes (fresh run): SRT, or OSRT with
#      DEMO_MODEL=osrt (`make demo-osrt`), or ObSuRF with DEMO_MODEL=obsurf (`make demo-obsurf`)
#   3. score it on the novel views of the held-out test scenes, next to two baselines on the
#      same pixels
#   4. where the model has a shipped demo checkpoint (SRT, ObSuRF), score it on the same test
#      scenes: trained for hours on other synthetic scenes (examples/demo-checkpoint/)
#   5. videos orbiting a held-out scene: the fresh run's, and the shipped checkpoint's (ObSuRF's
#      with its depth, segmentation and per-slot renders). A plain
#      orbit at the cameras' distance: the synthetic cameras all stand 10 units from the centre,
#      so closeups (rotate_and_closeup) leave what the models were trained on
# Outputs go to outputs/demo/ (override with DEMO_DIR). Running it again reuses what exists.
set -euo pipefail
out="${DEMO_DIR:-outputs/demo}"
model="${DEMO_MODEL:-srt}"
steps="${DEMO_STEPS:-300}"
scene=scene_000900  # the first test scene
mkdir -p "$out"

# Generator version 2 (one ring of cameras per scene): the shipped SRT checkpoint was trained on
# it; version 3 (cameras at varied distances, which closeups need) awaits its retraining.
[ -f "$out/synthetic.h5" ] || scene-convert --from synthetic "$out/synthetic.h5" --scenes 1000 --views 10 --size 64 \
    --seed 0 --generator-version 2
scene-info "$out/synthetic.h5" --grid "$out/synthetic.png"

outputs=input,rgb
frames=120
[ "$model" = osrt ] && outputs=input,rgb,segmentation
evaluate=(--split test --targets rest)
render=() video=()
if [ "$model" = obsurf ]; then  # volume rendering, a hundred times the work of a light field, fits in 10
    # minutes as: 200 steps, 3 test scenes with their first input view, 16 frames at 8 fps, bf16
    steps="${DEMO_STEPS:-200}" outputs=input,rgb,depth,segmentation,slots frames=16
    evaluate=(--split test --scenes 3 --items-per-scene 1 --precision bf16)
    render=(--precision bf16) video=(--fps 8)
fi

echo "== fresh run: scene-train $model (CPU config, $steps steps)"
scene-train "$model" "$out/synthetic.h5" --config synthetic --max-steps "$steps" --out "$out/$model-fresh"
scene-eval "$out/$model-fresh" "$out/synthetic.h5" "${evaluate[@]}" --out "$out/$model-fresh-test.json" --overwrite
scene-render "$out/$model-fresh" --scene "$scene" --motion rotate --fade --frames "$frames" \
    --outputs "$outputs" ${render[@]+"${render[@]}"} -o - \
    | scene-video ${video[@]+"${video[@]}"} -o "$out/$model-fresh-orbit.mp4" --overwrite

shipped="examples/demo-checkpoint/$model-synthetic.pt"
if [ -f "$shipped" ]; then
    echo "== shipped demo checkpoint ($shipped)"
    scene-eval "$shipped" "$out/synthetic.h5" "${evaluate[@]}" --out "$out/$model-checkpoint-test.json" \
        --images "$out/$model-checkpoint-test-images" --overwrite
    scene-render "$shipped" --data "$out/synthetic.h5" --scene "$scene" --motion rotate --fade --frames "$frames" \
        --outputs "$outputs" ${render[@]+"${render[@]}"} -o - \
        | scene-video ${video[@]+"${video[@]}"} -o "$out/$model-checkpoint-orbit.mp4" --overwrite
fi
