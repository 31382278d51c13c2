"""scene-video: frames (a scene-render folder or stream) to an mp4 or gif."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..atomic import atomic_output, check_new_output, free_name
from ..errors import BadInput
from ..framestream import OUTPUTS, load_png, read_folder, read_stream
from ..progress import progress
from ..video import VideoWriter, compose
from . import common


def frames_from_folder(folder):
    """Yield ({output: image}, total frames) per frame, input views included in each."""
    outputs, count = read_folder(folder)
    inputs = [load_png(p) for p in outputs.pop("input", [])]
    for k in range(count):
        images = {name: load_png(files[k]) for name, files in outputs.items()}
        if inputs:
            images["input"] = inputs[0]
        yield images, count


def frames_from_stream(stream, name="<stdin>"):
    """The same from a scene-render stream: input views come first, then each frame's outputs."""
    inputs, current, current_index = [], {}, None
    for meta, image in read_stream(stream, name):
        if meta["output"] == "input":
            inputs.append(image)
            continue
        if current_index is not None and meta["frame"] != current_index:
            yield _with_input(current, inputs), meta.get("frames")
            current = {}
        current_index = meta["frame"]
        current[meta["output"]] = image
    if current:
        yield _with_input(current, inputs), None


def _with_input(images, inputs):
    return {**images, "input": inputs[0]} if inputs else images


@click.command("scene-video", context_settings={"max_content_width": 100})
@click.argument("source", required=False, metavar="[DIR|-]")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Video file [video.mp4, or video.gif with --gif].")
@click.option("--fps", type=click.FloatRange(min=1), default=30, show_default=True)
@click.option("--gif", is_flag=True, help="A palette GIF instead of h264 mp4.")
@click.option("--layout", default="input,rgb,segmentation,semantic,depth,slots", show_default=True,
              help="Panels side by side, left to right; those the frames lack are left out.")
@click.option("--crf", type=click.IntRange(0, 51), default=18, show_default=True, help="h264 quality (lower is better).")
@click.option("--overwrite", is_flag=True, help="Replace an existing -o file (the default name never replaces: "
              "video.mp4 becomes video-1.mp4, ...).")
@common.options
def command(source, out, fps, gif, layout, crf, overwrite):
    """Compile frames into a video with labelled side-by-side panels (input view, render,
    segmentation, semantic classes, depth), using the ffmpeg that ships in imageio-ffmpeg.

    \b
    Examples:
      scene-render ckpt.pt --motion rotate_and_closeup | scene-video
      scene-render run --outputs input,rgb,segmentation -o - | scene-video -o osrt.mp4 --fps 24
      scene-video frames/ -o orbit.gif --gif
    """
    wanted = [name.strip() for name in layout.split(",") if name.strip()]
    unknown = set(wanted) - set(OUTPUTS)
    if unknown or not wanted:
        raise click.BadParameter(f"unknown panels {sorted(unknown)} (known: {', '.join(OUTPUTS)})", param_hint="--layout")
    if source in (None, "-"):
        if source is None and sys.stdin.isatty():
            raise click.UsageError("give a frames folder, or pipe scene-render into scene-video")
        frames = frames_from_stream(sys.stdin.buffer)
    else:
        frames = frames_from_folder(source)
    if out is not None:
        check_new_output(out, overwrite)
    out = out or free_name(Path("video.gif" if gif else "video.mp4"))
    with atomic_output(out) as tmp:
        writer = VideoWriter(tmp, fps=fps, gif=gif, crf=crf)
        try:
            write_frames(frames, wanted, writer)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    click.echo(str(out))


def write_frames(frames, wanted, writer) -> None:
    panels = None
    bar = None
    for images, total in frames:
        if panels is None:
            panels = [name for name in wanted if name in images]
            if not panels:
                raise BadInput(f"the frames have none of the panels {', '.join(wanted)} (they have {', '.join(images)})")
            bar = progress(total=total, desc="encoding", unit="frames")
        missing = [name for name in panels if name not in images]
        if missing:
            raise BadInput(f"a frame lacks {', '.join(missing)}")
        writer.write(compose(images, panels))
        bar.update(1)
    if bar is not None:
        bar.close()


main = common.entry_point(command)

if __name__ == "__main__":
    main()
