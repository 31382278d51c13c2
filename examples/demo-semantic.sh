#!/usr/bin/env bash
# Semantic SRN on the CPU, from the shipped SRN demo checkpoint (run by `make demo-semantic`,
# which puts .venv/bin on PATH):
#   1. part-labelled objects of that checkpoint's recipe, regenerated (seed 1): its first 40
#      training objects (it has their codes) and 40 of its test objects (it never saw them)
#   2. semantic SRN's few-shot step: a linear head fitted on 30 labelled maps (views 0, 1
#      and 2 of 10 training objects, named in srn_head/synthetic) with the SRN frozen
#   3. mIoU on views of 10 training objects that neither the SRN nor the head saw, next to
#      the majority class per pixel of the training labels
#   4. one unseen object from one view: a code fitted to its view 0, mIoU on its other 49
#   5. a video orbiting that object (colours and classes, with a legend) and its labelled
#      point cloud (PLY, formats/pointcloud.md)
# Outputs go to outputs/demo-semantic/ (override with DEMO_DIR). Running it again reuses what exists.
set -euo pipefail
out="${DEMO_DIR:-outputs/demo-semantic}"
srn=examples/demo-checkpoint/srn-synthetic.pt
data="$out/objects.h5" run="$out/linear-head"
unseen=object_000900  # the first test object: a chair
mkdir -p "$out"

[ -f "$data" ] || scene-convert --from synthetic --kind objects "$data" --scenes 1000 --views 30 --test-views 50 \
    --size 64 --seed 1 --split train,test --limit 40

echo "== fit a linear head on 30 labelled views, SRN frozen ($srn)"
scene-train srn_head "$data" --config synthetic --init-from "$srn" --out "$run"

echo "== held-out views of 10 training objects (codes trained, views unseen)"
scene-eval "$run" "$data" --split train --scenes 10 --targets held_out --out "$out/held-out-views.json" --overwrite
echo "== one unseen object ($unseen) from one view: a code fitted to view 0, scored on the other 49"
scene-eval "$run" "$data" --split test --scenes 1 --out "$out/unseen-one-view.json" --overwrite
scene-render "$run" --data "$data" --scene "$unseen" --motion rotate --frames 60 --outputs rgb,semantic,pointcloud \
    --pointcloud-out "$out/$unseen.ply" --overwrite -o - | scene-video -o "$out/$unseen-semantic.mp4" --overwrite
echo "outputs in $out: $unseen-semantic.mp4, $unseen.ply, held-out-views.json, unseen-one-view.json"
