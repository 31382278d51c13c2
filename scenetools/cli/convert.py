"""scene-convert: turn a dataset into one scene file."""
from __future__ import annotations

from pathlib import Path

import click

from .. import convert as conversion
from ..atomic import check_new_output, parent_folders
from ..sources import SOURCES, source_class
from . import common

#: The source-specific options, by the source they apply to.
SOURCE_OPTIONS = {"synthetic": ("scenes", "views", "size", "seed", "generator_version", "kind", "test_views",
                                "categories"),
                  "srn": ("as_split",)}


@click.command("scene-convert", context_settings={"max_content_width": 100})
@click.option("--from", "source_name", required=True, type=click.Choice(sorted(SOURCES)),
              help="The dataset to read.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="[IN] OUT.h5")
@click.option("--codec", type=click.Choice(["auto", "raw", "png"]), default="auto", show_default=True,
              help="Image storage: raw pixels (fastest reads) or PNG; auto picks PNG for large outputs.")
@click.option("--split", "splits", help="Comma-separated splits to convert (default: all).")
@click.option("--limit", type=click.IntRange(min=1), help="Convert at most N scenes of each split.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes decoding scenes in parallel.")
@click.option("--shard-size", type=click.IntRange(min=1),
              help="Write shards of N scenes (OUT-00000.h5, ...) joined by the index file OUT.h5.")
@click.option("--overwrite", is_flag=True, help="Replace OUT.h5 if it exists.")
@click.option("--scenes", type=click.IntRange(min=1), help="synthetic: number of scenes [1000].")
@click.option("--views", type=click.IntRange(min=1), help="synthetic: views per scene [10].")
@click.option("--size", type=click.IntRange(min=8), help="synthetic: image side in pixels [64].")
@click.option("--seed", type=int, help="synthetic: random seed [0]; the same seed gives the same file.")
@click.option("--generator-version", type=click.IntRange(1, 3),
              help="synthetic: camera layout [3]; 2 reproduces the older files (one ring of cameras per scene). "
                   "--kind objects has version 1 only.")
@click.option("--kind", type=click.Choice(["scenes", "objects"]),
              help="synthetic: multi-object scenes on a ground plane [scenes], or single part-labelled objects "
                   "on white like SRN's ShapeNet renders (50 views per train object unless --views).")
@click.option("--test-views", type=click.IntRange(min=1),
              help="synthetic --kind objects: views per val and test object, on a spiral [251].")
@click.option("--categories", help="synthetic --kind objects: comma-separated, of chair, table, lamp, car [all].")
@click.option("--as-split", metavar="NAME",
              help="srn: the split of IN, a folder of instance folders whose name gives none [train].")
@common.options
def command(source_name, paths, codec, splits, limit, workers, shard_size, overwrite, **source_options):
    """Convert a dataset into the scenetools scene file format (formats/scene-h5.md).

    An interrupted conversion continues where it stopped when run again with the same
    arguments; OUT.h5 appears only when it is complete.

    \b
    Examples:
      scene-convert --from synthetic data/synthetic.h5 --scenes 1000 --seed 0
      scene-convert --from synthetic small.h5 --scenes 20 --views 6 --size 32
      scene-convert --from synthetic --kind objects data/objects.h5 --scenes 500
      scene-convert --from synthetic --kind objects chairs.h5 --categories chair
      scene-convert --from srn data/srn_cars data/srn_cars.h5 --workers 8
      scene-convert --from srn my_objects my_objects.h5 --as-split test
    """
    source_options = {k: v for k, v in source_options.items() if v is not None}
    takes_input = source_name != "synthetic"
    if len(paths) != 1 + takes_input:
        usage = "IN OUT.h5" if takes_input else "OUT.h5 (it reads no input)"
        raise click.UsageError(f"--from {source_name} takes {usage}")
    for name, options in SOURCE_OPTIONS.items():
        foreign = [k for k in source_options if k in options and name != source_name]
        if foreign:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in foreign)
            raise click.UsageError(f"{flags} only apply to --from {name}")
    source_options = {("split" if k == "as_split" else k): v for k, v in source_options.items()}
    if "categories" in source_options:
        source_options["categories"] = [c for c in source_options["categories"].split(",") if c]
    out = paths[-1]
    check_new_output(out, overwrite)
    cls = source_class(source_name)
    try:
        source = cls(paths[0], **source_options) if takes_input else cls(**source_options)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    split_list = [s for s in splits.split(",") if s] if splits else None
    with parent_folders(out):
        conversion.convert(source, out, codec=codec, splits=split_list, limit=limit, workers=workers,
                           shard_size=shard_size)
    click.echo(str(out))


main = common.entry_point(command)

if __name__ == "__main__":
    main()
