#!/usr/bin/env bash
# One published result end to end, with the ordinary tools: convert the dataset, train with
# the paper's settings (the shipped preset), evaluate with the paper's protocol, render a
# video. Run by `make reproduce-<row>` (README: "Reproducing the papers"), which puts
# .venv/bin on PATH:
#
#   DATA=<downloaded dataset> GPUS=<n> OUT=<folder> examples/reproduce.sh ROW
#
#   ACCUMULATE=N|auto  sum N batches per step: the paper's global batch on fewer GPUs
#   STEPS=N            stop training at step N (results.md then reports the row as partial)
#   SMOKE=1            the `-smoke` twin: the same pipeline on a tiny dataset (16 px, 4 views
#                      for SRN: one- and two-shot fit views 0 and 0,1 instead of 64 and 64,104;
#                      semantic rows fit view 0, not 65, and label every training object)
#                      with two steps of a shrunk model: it shows the pipeline works, no more
#   CONVERT_ARGS       extra scene-convert options
#
# Running it again continues: the conversion and the training resume where they stopped; the
# evaluation and the video are redone only when the checkpoint is newer than they are.
# Writes OUT/data/<dataset>.h5 (shared by rows on the same dataset) and OUT/<row>/:
# run/ (the run folder), metrics*.json + .csv, video.mp4, row.json, wall-seconds
# (formats/reproduction.md); `make results` turns every row into OUT/results.md.
set -euo pipefail
row="${1:?usage: examples/reproduce.sh ROW}"
: "${DATA:?DATA=<the downloaded dataset> is required (README: Reproducing the papers)}"
gpus="${GPUS:-1}" out="${OUT:-outputs/reproduce}" smoke="${SMOKE:-}"

# Per row: dataset, source, model, shipped config, video outputs, and the published figures,
# one JSON object each: metric (a key of the metrics file's "results"), the metrics file,
# value (null: not retrieved), steps, source, and whether we read it there ("read") or not.
readme_srt="stelzner/srt README" readme_osrt="stelzner/osrt README"
srn_paper="SRN paper (NeurIPS 2019) Table 1, 128 px; our notes' recollection, the table was not read"
obsurf_paper="ObSuRF paper: the table could not be read here"
ssrn_paper="semantic SRN paper (3DV 2020): its mIoU table could not be read here"
published() {  # metric file value steps source checked
    printf '{"metric": "%s", "file": "%s", "value": %s, "steps": %s, "source": "%s", "checked": "%s"}' "$@"
}
case "$row" in
    srt-nmr) dataset=nmr source=nmr model=srt config=srt/nmr outputs=input,rgb
        figures=("$(published psnr metrics.json 27.28 3000000 "$readme_srt" read)") ;;
    srt-msn) dataset=msn source=kubric model=srt config=srt/msn outputs=input,rgb
        figures=("$(published psnr metrics.json 23.39 4000000 "$readme_srt" read)") ;;
    isrt-msn) dataset=msn source=kubric model=isrt config=isrt/msn outputs=input,rgb
        figures=("$(published psnr metrics.json 24.84 2800000 "$readme_srt" read)") ;;
    osrt-clevr3d) dataset=clevr3d source=obsurf model=osrt config=osrt/clevr3d outputs=input,rgb,segmentation
        figures=("$(published fg_ari metrics.json 0.97 1000000 "$readme_osrt (FG-ARI > 0.97; steps: osrt issue #2)" read)") ;;
    osrt-msn-hard) dataset=msn-hard source=kubric model=osrt config=osrt/msn outputs=input,rgb,segmentation
        figures=("$(published fg_ari metrics.json 0.73 750000 "$readme_osrt (about 0.73)" read)"
                 "$(published psnr metrics.json 22.8 750000 "$readme_osrt (about 22.8)" read)") ;;
    obsurf-clevr3d|obsurf-msn) source=obsurf model=obsurf outputs=input,rgb,depth,segmentation
        dataset=${row#obsurf-} config=obsurf/${row#obsurf-}
        [ "$dataset" = msn ] && dataset=obsurf-msn
        figures=("$(published ari_input metrics.json null null "$obsurf_paper" "not retrieved")"
                 "$(published fg_ari_input metrics.json null null "$obsurf_paper" "not retrieved")") ;;
    srn-cars|srn-chairs) category=${row#srn-} source=srn model=srn config=srn/${row#srn-} outputs=rgb,depth
        dataset=srn-$category one=22.25 two=24.84
        [ "$category" = chairs ] && one=22.89 two=24.48
        figures=("$(published psnr metrics-one-shot.json $one null "$srn_paper: one-shot" unverified)"
                 "$(published psnr metrics-two-shot.json $two null "$srn_paper: two-shot" unverified)") ;;
    semantic-chairs|semantic-tables)  # SRN+Linear: an SRN, then a linear head on 30 labelled views
        category=${row#semantic-} source=semantic model=srn_head config=srn_head/$category outputs=rgb,semantic
        dataset=semantic-$category base=srn/semantic_$category
        figures=("$(published miou metrics.json null null "$ssrn_paper: SRN+Linear" "not retrieved")") ;;
    semantic-srn-chairs|semantic-srn-tables)  # the joint model
        category=${row#semantic-srn-} source=semantic model=semantic_srn config=semantic_srn/$category
        dataset=semantic-$category outputs=rgb,semantic
        figures=("$(published miou metrics.json null null "$ssrn_paper: semantic SRN" "not retrieved")") ;;
    *) echo "examples/reproduce.sh: unknown row $row" >&2; exit 2 ;;
esac

dir="$out/$row" data="$out/data/$dataset.h5" run="$out/$row/run"
mkdir -p "$dir" "$out/data"
trap 'echo "$SECONDS" >> "$dir/wall-seconds"' EXIT
{
    printf '{"row": "%s", "dataset": "%s", "data": "%s", "model": "%s", "config": "%s", ' \
        "$row" "$dataset" "$DATA" "$model" "$config"
    printf '"gpus": %s, "accumulate": "%s", "smoke": %s, "published": [' "$gpus" "${ACCUMULATE:-1}" \
        "$([ -n "$smoke" ] && echo true || echo false)"
    (IFS=,; printf '%s' "${figures[*]}")
    printf ']}\n'
} > "$dir/.row.json" && mv "$dir/.row.json" "$dir/row.json"

options=(--gpus "$gpus") base_train=() base_sets=()
[ -n "${ACCUMULATE:-}" ] && options+=(--accumulate "$ACCUMULATE")
[ -n "${STEPS:-}" ] && options+=(--max-steps "$STEPS")
train=(--config "$config" "${options[@]}" --out "$run")
[ -n "${base:-}" ] && base_train=(--config "$base" "${options[@]}" --out "$dir/srn") && train+=(--init-from "$dir/srn")
evaluate=(--split test) render=(--motion rotate --frames 120) one_shot=64 two_shot=64,104
if [ -n "$smoke" ]; then  # a model small enough to train, score and render in seconds on a CPU
    shrink_srt=(model.encoder.num_att_blocks=1 model.encoder.dim=32 model.encoder.heads=2 model.encoder.dim_head=16
                model.encoder.mlp_dim=32 model.encoder.conv_channels=8 model.decoder.num_att_blocks=1
                model.decoder.heads=2 model.decoder.hidden=32)
    shrink_srn=(model.latent_dim=8 model.phi_hidden=16 model.hyper_hidden=16 model.pixel_hidden=16
                model.pixel_layers=1 model.fit.steps=2 model.fit.rays=64 "data.evaluation.input_views=[0]"
                "training.curriculum=[{steps: 1, resolution: 16, batch_size: 2}]")
    case "$model" in
        srt|isrt) sets=("${shrink_srt[@]}") ;;
        osrt) sets=("${shrink_srt[@]}" model.slot_attention.slot_dim=32 model.slot_attention.hidden_dim=32) ;;
        obsurf) sets=(model.c_dim=16 model.h_dim=16 model.decoder.hidden=16 model.decoder.num_layers=2
                      model.render.coarse_samples=4 model.render.fine_samples=4) ;;
        srn) sets=("${shrink_srn[@]}") ;;
        semantic_srn) sets=("${shrink_srn[@]}" model.unet_levels=2) ;;
        srn_head) sets=(data.train_scenes=null "data.evaluation.input_views=[0]")  # its SRN's sizes: the checkpoint's
            base_sets=("${shrink_srn[@]}") ;;
    esac
    common=(training.batch_size=2 training.num_workers=0 training.validate_scenes=1 data.resolution=16
            data.evaluation.resolution=16)
    [ "$model" = semantic_srn ] || common+=(data.num_rays=64)  # it trains on whole images
    for s in "${sets[@]}" "${common[@]}"; do train+=(--set "$s"); done
    for s in "${base_sets[@]}" "${common[@]}"; do base_train+=(--set "$s"); done
    train+=(--max-steps 2) base_train+=(--max-steps 2)
    evaluate+=(--scenes 1 --items-per-scene 1) render=(--motion rotate --frames 2 --size 16x16) one_shot=0 two_shot=0,1
fi

echo "== $row: convert ($source) into $data"
[ -f "$data" ] || scene-convert --from "$source" "$DATA" "$data" ${CONVERT_ARGS:-}
if [ -n "${base:-}" ]; then
    echo "== $row: scene-train srn ${base_train[*]} (the SRN the head is fitted on)"
    scene-train srn "$data" "${base_train[@]}"
fi
echo "== $row: scene-train $model ${train[*]}"
scene-train "$model" "$data" "${train[@]}"

checkpoint="$run/checkpoints/latest.pt"
fresh() { [ -f "$1" ] && [ "$1" -nt "$checkpoint" ]; }
echo "== $row: evaluate on the test split"
if [ "$model" = srn ]; then  # no encoder: codes fitted to view 64 (one-shot), views 64 and 104 (two-shot)
    fresh "$dir/metrics-one-shot.json" || scene-eval "$run" "$data" "${evaluate[@]}" --input-views "$one_shot" \
        --out "$dir/metrics-one-shot.json" --overwrite
    fresh "$dir/metrics-two-shot.json" || scene-eval "$run" "$data" "${evaluate[@]}" --input-views "$two_shot" \
        --out "$dir/metrics-two-shot.json" --overwrite
else
    fresh "$dir/metrics.json" || scene-eval "$run" "$data" "${evaluate[@]}" --out "$dir/metrics.json" --overwrite
fi
echo "== $row: video"
fresh "$dir/video.mp4" || scene-render "$run" --data "$data" "${render[@]}" --outputs "$outputs" -o - \
    | scene-video -o "$dir/video.mp4" --overwrite
