"""scene-info: summarise a scene file, check it, and draw a contact sheet."""
from __future__ import annotations

import collections
from pathlib import Path

import click
import imageio.v3 as iio
import numpy as np

from ..atomic import atomic_output
from ..scenefile import validate_file
from ..visualize import contact_sheet
from . import common


@click.command("scene-info", context_settings={"max_content_width": 100})
@click.argument("path", type=click.Path(path_type=Path), metavar="FILE.h5")
@click.option("--grid", type=click.Path(path_type=Path), metavar="OUT.png",
              help="Also write a contact sheet: views, depth and masks of a few scenes.")
@click.option("--grid-scenes", type=click.IntRange(min=1), default=4, show_default=True,
              help="Scenes in the contact sheet (spread over the file).")
@click.option("--grid-views", type=click.IntRange(min=1), default=5, show_default=True,
              help="Views per scene in the contact sheet.")
@common.options
def command(path, grid, grid_scenes, grid_views):
    """Print a summary of a scene file after checking it (structure and every camera).

    \b
    Examples:
      scene-info data/synthetic.h5
      scene-info data/synthetic.h5 --grid synthetic.png --grid-scenes 6
    """
    scenes = validate_file(path)
    click.echo(summary(scenes))
    if grid:
        indices = np.unique(np.linspace(0, scenes.num_scenes - 1, min(grid_scenes, scenes.num_scenes)).round().astype(int))
        sheet = contact_sheet(scenes, indices, grid_views)
        # Encoded in memory: imageio writing to a file on a full disk fails a second time at exit.
        image = iio.imwrite("<bytes>", sheet, extension=grid.suffix or ".png")
        with atomic_output(grid) as tmp:
            tmp.write_bytes(image)
        click.echo(f"contact sheet   {grid}")


def summary(scenes) -> str:
    counts = scenes.view_count
    views = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()} to {counts.max()}"
    splits = ", ".join(f"{name} {len(idx)}" for name, idx in scenes.splits().items())
    codecs = sorted(set(scenes.codecs.values()))
    shards = scenes.attrs.get("shards")
    lines = [
        ("file", f"{scenes.path} (scene file v{scenes.attrs['format_version']}, {'/'.join(codecs)} storage"
                 + (f", {len(shards)} shards)" if shards else ")")),
        ("source", scenes.source),
        ("scenes", f"{scenes.num_scenes} ({splits})"),
        ("views", f"{views} per scene, {scenes.num_views} in all"),
        ("image size", f"{scenes.height} x {scenes.width} (H x W)"),
        ("fields", ", ".join(["rgb", "camera_to_world", "intrinsics"]
                             + [f"{k} ({v})" for k, v in scenes.fields.items()])),
    ]
    if scenes.render_range is not None:
        lines.append(("render range", "{:g} to {:g}".format(*scenes.render_range)))
    if scenes.world_up is not None:
        lines.append(("world up", str(np.round(scenes.world_up, 3).tolist())))
    if scenes.categories is not None and any(scenes.categories):
        common_categories = collections.Counter(scenes.categories).most_common(8)
        lines.append(("categories", ", ".join(f"{name} {n}" for name, n in common_categories)))
    if scenes.semantic_classes:
        lines.append(("classes", ", ".join(scenes.semantic_classes)))
    lines.append(("cameras", f"checked: {scenes.num_views} finite rigid poses, pinhole intrinsics"))
    return "\n".join(f"{key:<16}{value}" for key, value in lines)


main = common.entry_point(command)

if __name__ == "__main__":
    main()
