"""Dataset sources for scene-convert: one module per dataset, one interface.

A source object has

* ``info``: a :class:`SourceInfo` (image size, fields, attributes of the output file);
* ``scan() -> list[SceneRef]``: a cheap listing of every scene, in a fixed order;
* ``load(refs) -> list[Scene]``: read and convert up to ``batch_size`` scenes to the
  scenetools conventions (OpenCV camera-to-world, pixel intrinsics, depth along the ray).
  It runs in worker processes, so the source must pickle.

Sources raise :class:`scenetools.errors.BadInput` naming the file for malformed input.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SceneRef:
    """A scene as listed by ``scan``: its output name, split, and what ``load`` needs."""

    name: str
    split: str
    key: object


@dataclass
class SourceInfo:
    source: str
    height: int
    width: int
    render_range: tuple | None
    fields: dict  # optional image fields and their dtypes, e.g. {"depth": "float32"}
    attrs: dict = field(default_factory=dict)  # world_up, semantic_classes, source_info
    views_per_scene: int = 10  # typical; used to pick a storage codec by size


#: source name -> "module:class"; imported only when used, so a source's optional
#: dependencies are never needed by the others.
SOURCES = {
    "synthetic": "scenetools.sources.synthetic:SyntheticSource",
    "kubric": "scenetools.sources.kubric:KubricSource",
    "obsurf": "scenetools.sources.obsurf:ObsurfSource",
    "nmr": "scenetools.sources.nmr:NMRSource",
    "srn": "scenetools.sources.srn:SRNSource",
    "semantic": "scenetools.sources.semantic:SemanticSource",
    "nerfstudio": "scenetools.sources.nerfstudio:NerfstudioSource",
}


#: source name -> "module:function" that gives the baseline renders a scene file of that
#: source allows: {name: render(c2w [V, 4, 4], K [V, 3, 3], H, W) -> uint8 [V, H, W, 3]}.
BASELINES = {"synthetic": "scenetools.sources.synthetic:baselines"}


def baselines(scenes) -> dict:
    """The baseline renderers of a scene file (``scenes.source``), by name; scene-eval scores
    each on the same pixels as the model (``baseline_<name>_psnr``)."""
    entry = BASELINES.get(scenes.source.split(":")[0])
    if entry is None:
        return {}
    module, function = entry.split(":")
    return getattr(importlib.import_module(module), function)(scenes)


def source_class(name: str):
    module, cls = SOURCES[name].split(":")
    return getattr(importlib.import_module(module), cls)
