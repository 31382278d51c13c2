"""scene-eval: score a trained model on held-out scenes."""
from __future__ import annotations

import contextlib
from pathlib import Path

import click

from .. import checkpoint as ckpt
from ..device import pick as pick_device
from ..atomic import atomic_output, check_new_output, free_name
from ..errors import BadInput
from ..progress import note
from ..scenefile import SceneFile
from ..data import view_selection
from . import common


@click.command("scene-eval", context_settings={"max_content_width": 100})
@click.argument("source", type=click.Path(path_type=Path), metavar="RUN_DIR|CKPT")
@click.argument("data", type=click.Path(path_type=Path), metavar="DATA.h5")
@click.option("--split", default="test", show_default=True, help="Split to evaluate.")
@click.option("--scenes", "max_scenes", type=click.IntRange(min=1), help="Evaluate only the first N scenes.")
@click.option("--items-per-scene", type=click.IntRange(min=1), help="Only the first N items of each scene [all: "
              "the protocols that take each view in turn as the input (nmr, clevr3d) score every one].")
@click.option("--out", "out", type=click.Path(path_type=Path), metavar="METRICS.json",
              help="Where to write the metrics [RUN_DIR/eval/<data>-<split>.json, or ./metrics.json]; "
                   "the per-scene CSV goes next to it.")
@click.option("--images", type=click.Path(path_type=Path), metavar="DIR",
              help="Also write prediction, ground truth and error PNGs of every target view.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file or --images folder (a default "
              "--out never replaces: it takes the next free name).")
@click.option("--chunk", type=click.IntRange(min=1), default=8192, show_default=True,
              help="Rays decoded at once (memory stays bounded whatever the image size).")
@common.precision_option
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda when available.")
@click.option("--targets", type=click.Choice(["rest", "all", "held_out"]),
              help="Score the views that are not inputs (rest: novel views only), every view, or the "
                   "views training held out (data.held_out_views: novel views of the scenes it trained "
                   "on, with --split train) [the model's protocol].")
@click.option("--segmentation-scale", type=click.Choice(["subsample", "full"]), default="subsample",
              show_default=True, help="Input-view ARI on a 64 x 64 grid of pixels (as the ObSuRF reference) or "
              "on every pixel.")
@click.option("--input-views", help="Comma-separated views given to the model as its inputs, e.g. 64 (SRN's "
              "one-shot protocol) or 64,104 (two-shot) [the config's data.evaluation, else its protocol].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the checkpoint's config that does not change its weights, e.g. "
                   "--set model.fit.steps=200 (SRN's latent fitting) (repeatable).")
@click.option("--config", "preset", help="For a reference model.pt only: its model and config, e.g. srt/msn.")
@click.option("--lpips", "lpips_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Score LPIPS with the weights in DIR: torchvision's alexnet-owt-7be5be79.pth and LPIPS "
                   "v0.1's alex.pth (default: where torch's hub cache and an installed lpips package keep them; "
                   "nothing is downloaded).")
@common.options
def command(source, data, split, max_scenes, items_per_scene, out, images, overwrite, chunk, precision, device, targets,
            segmentation_scale, input_views, overrides, preset, lpips_dir):
    """Score a checkpoint on full target images: PSNR (all pixels and object pixels, with
    the mean-colour and, for synthetic data, background-only baselines), SSIM, ARI and
    FG-ARI (models that segment: on the target views, on the input view, and at the true
    surface points for models that segment 3D points, each next to random slots), mIoU and
    category mIoU (models that predict part classes, next to the majority class per pixel of
    the train split), depth error (models that predict depth), LPIPS when its weights are
    on this machine (--lpips; stderr says why when not).

    \b
    Examples:
      scene-eval outputs/synthetic/srt/synthetic data/synthetic.h5 --split test
      scene-eval run/checkpoints/step-5000.pt data/nmr.h5 --scenes 100 --images eval-images
      scene-eval examples/demo-checkpoint/srt-synthetic.pt data/synthetic.h5 --targets rest
      scene-eval msn_srt/model.pt data/msn.h5 --config srt/msn
    """
    from ..evaluate import evaluate, report, summary_table, write_outputs

    for given in (out, images):
        if given:
            check_new_output(given, overwrite)
    input_views = common.parse_views(input_views)
    model, checkpoint, run = ckpt.load_model(source, reference_preset=preset, overrides=overrides)
    device = pick_device(device)
    model.to(device)
    scenes = SceneFile(data)
    scenes.split(split)  # a clear error for a missing split
    lpips, lpips_missing = lpips_metric(lpips_dir)
    out = out or free_name(run / "eval" / f"{data.stem}-{split}.json" if run else Path("metrics.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:  # the images folder appears only when complete
        images_tmp = stack.enter_context(atomic_output(images)) if images else None
        data_config = common.inference_data_config(checkpoint["config"]["data"], input_views, targets)
        summary, rows = evaluate(model, scenes, split, data_config, device, max_scenes, chunk, precision,
                                 images_tmp, segmentation_size=64 if segmentation_scale == "subsample" else None,
                                 items_per_scene=items_per_scene, lpips=lpips)
        if not rows:
            raise BadInput(f"no items to evaluate in split {split!r}", data)
    name = run.name if run else Path(source).stem
    metrics = report(summary, rows, checkpoint=source, step=checkpoint.get("step"),
                     model_name=checkpoint["model_name"], data=data, split=split, run_name=name,
                     targets={"rest": "novel views only", "all": "all views",
                              "held_out": "held-out views only"}[view_selection(data_config).targets])
    csv_path = write_outputs(metrics, rows, out)
    click.echo(summary_table(metrics))
    click.echo(f"metrics  {out}\nper item {csv_path}")
    if lpips_missing:  # said once the scores exist: an error before then stays the only line on stderr
        note(lpips_missing)


def lpips_metric(folder) -> tuple:
    """(LPIPS, None) from ``--lpips DIR`` (a bad DIR is an error) or else from the default places;
    (None, why) when they do not hold it."""
    from .. import lpips
    return (lpips.from_folder(folder), None) if folder is not None else lpips.find()


main = common.entry_point(command)

if __name__ == "__main__":
    main()
