"""scene-train: train a model on a scene file (one process, N workers, or under torchrun)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import torch

from .. import checkpoint as ckpt
from .. import config as configs
from .. import distributed
from ..device import pick as pick_device
from ..errors import BadInput
from ..models import model_names
from ..progress import note
from ..scenefile import SceneFile
from . import common

#: scene file source -> the preset name for it
PRESET_FOR_SOURCE = {"synthetic": "synthetic", "nmr": "nmr", "kubric": "msn", "obsurf:clevr3d": "clevr3d",
                     "obsurf:msn": "obsurf_msn"}


def default_preset(source: str) -> str | None:
    return PRESET_FOR_SOURCE.get(source) or PRESET_FOR_SOURCE.get(source.split(":")[0])


@click.command("scene-train", context_settings={"max_content_width": 100})
@click.argument("model", type=click.Choice(model_names()))
@click.argument("data", type=click.Path(path_type=Path), metavar="DATA.h5")
@click.option("--config", "preset", help="A shipped preset (nmr, srt/msn, ...) or a YAML file. "
              "Default: the preset for the data's source.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set training.batch_size=32 (repeatable).")
@click.option("--out", "run_dir", type=click.Path(path_type=Path),
              help="Run folder [outputs/<data>/<model>/<config>]. Re-running continues from it.")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (one per GPU; on a CPU-only machine, CPU processes with gloo).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Train up to this step (overrides the config).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), help="bf16 autocast where supported [config].")
@click.option("--accumulate", metavar="N|auto", callback=lambda ctx, param, value: parse_accumulate(value),
              help="Sum the gradients of N batches per step: the same global batch in N times less activation "
              "memory per process. auto: the smallest N dividing the batch per process whose --dry-run memory "
              "estimate fits in the device's free memory (on the CPU, available RAM) with 10% to spare; the N "
              "chosen goes into the run's config.yaml [config, 1].")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--wandb", is_flag=True, help="Also log to Weights & Biases (needs wandb).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda when available.")
@click.option("--init-from", type=click.Path(path_type=Path), metavar="CKPT|RUN",
              help="Start a new run from these weights (same model and sizes, or the SRN a semantic head is "
                   "fitted on; fresh optimizer), e.g. to fine-tune a shipped checkpoint. Sets training.init_from "
                   "(stored relative to the run folder). Ignored when the run folder resumes.")
@click.option("--dry-run", is_flag=True, help="Build the model and data, print the model, its parameter count, "
              "an estimate of memory per process and one batch's shapes, and exit. The estimate: 16 B per "
              "parameter (fp32 weights, gradients, Adam's two moments) + the tensors autograd keeps for backward, "
              "measured at fp32 on one scene on the CPU and times the scenes per micro-batch (bf16 roughly halves "
              "them).")
@common.options
def command(model, data, preset, overrides, run_dir, gpus, max_steps, precision, accumulate, compile_, wandb, device,
            init_from, dry_run):
    """Train MODEL on DATA.h5, writing checkpoints, metrics and renders to a run folder.

    Under torchrun (one node or several) it joins the process group from the environment;
    --gpus N starts N workers itself. Running the same command again resumes.

    \b
    Examples:
      scene-train srt data/synthetic.h5 --config synthetic --max-steps 2000
      scene-train srt data/nmr.h5 --gpus 8
      torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint host:29400 \\
          -m scenetools.cli.train srt data/msn.h5 --config srt/msn
      scene-train isrt data/msn.h5 --config isrt/msn --set training.batch_size=64 --dry-run
      scene-train srt data/msn.h5 --config srt/msn --gpus 2 --accumulate auto
    """
    from ..train import Options

    scenes = SceneFile(data)
    preset = preset or default_preset(scenes.source)
    if preset is None:
        raise BadInput(f"no default config for source {scenes.source!r}: pass --config "
                       f"({', '.join(configs.preset_names())})", data)
    config = configs.resolve(model, preset, overrides)
    if max_steps:
        config["training"]["max_steps"] = max_steps
    if precision:
        config["training"]["precision"] = precision
    if accumulate:
        config["training"]["accumulate"] = accumulate
    run_dir = run_dir or Path("outputs") / data.stem / model / Path(preset).stem
    if init_from:
        ckpt.load(ckpt.locate(init_from)[0])  # a missing or unreadable checkpoint: refused before anything is written
        config["training"]["init_from"] = os.path.relpath(init_from.resolve(), Path(run_dir).resolve())
    options = Options(precision=config["training"]["precision"], compile=compile_, wandb=wandb, dry_run=dry_run,
                      device=device, config_name=preset)
    pick_device(device)  # --device cuda without CUDA: refused before anything starts
    if gpus > 1 and not distributed.under_launcher():
        if device != "cuda" and not torch.cuda.is_available():
            note(f"no GPU here: --gpus {gpus} starts {gpus} CPU processes sharing {os.cpu_count()} cores")
        elif torch.cuda.device_count() < gpus:
            raise BadInput(f"--gpus {gpus}: this machine has {torch.cuda.device_count()} GPUs")
        distributed.launch(gpus, worker, model, str(data), config, str(run_dir), options)
    else:
        worker(model, str(data), config, str(run_dir), options)
    if not dry_run:
        click.echo(str(run_dir))


def parse_accumulate(text: str | None):
    """``--accumulate``: None, ``auto`` or an integer of at least 1."""
    if text is None or text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(f"{text!r} is neither an integer of at least 1 nor auto", param_hint="--accumulate")
    return int(text)


def worker(model, data, config, run_dir, options) -> None:
    """One training process (the target of the elastic launcher)."""
    from ..train import train

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_world > 1 and options.device != "cuda":  # share the cores between local CPU workers
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        train(model, data, config, run_dir, options)
        return
    try:  # one of several processes: report a stop once, from rank 0, and exit as one process would
        train(model, data, config, run_dir, options)
    except KeyboardInterrupt as stop:
        if os.environ.get("RANK") == "0":
            print(f"scene-train: {stop or 'interrupted'}", file=sys.stderr, flush=True)
        sys.exit(130)


main = common.entry_point(command)

if __name__ == "__main__":
    main()
