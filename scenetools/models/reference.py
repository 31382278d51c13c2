"""Load checkpoints trained with the reference implementations.

Each model class maps its reference's weights onto its own names (``from_reference``); this
module checks the result against a freshly built model. stelzner/srt and stelzner/osrt save
``encoder`` and ``decoder`` state dicts (plus optimizer and counters) with the same layers as
ours under other names, so for them a list of renaming rules maps every key.
"""
from __future__ import annotations

import re

from ..errors import BadInput

#: (reference key pattern, our key), applied in order to "encoder.<key>" / "decoder.<key>".
RULES = [
    # pre-norm transformer blocks (lucidrains-style PreNorm(fn) pairs)
    (r"(.*transformer\.layers\.\d+)\.0\.norm\.(.*)", r"\1.attention_norm.\2"),
    (r"(.*transformer\.layers\.\d+)\.0\.fn\.to_out\.0\.(.*)", r"\1.attention.to_out.\2"),
    (r"(.*transformer\.layers\.\d+)\.0\.fn\.(to_qkv|to_q|to_kv)\.(.*)", r"\1.attention.\2.\3"),
    (r"(.*transformer\.layers\.\d+)\.1\.norm\.(.*)", r"\1.mlp_norm.\2"),
    (r"(.*transformer\.layers\.\d+)\.1\.fn\.net\.0\.(.*)", r"\1.mlp.0.\2"),
    (r"(.*transformer\.layers\.\d+)\.1\.fn\.net\.3\.(.*)", r"\1.mlp.2.\2"),
    # OSRT: the improved SRT encoder is nested in its encoder, slot attention sits beside it here
    (r"encoder\.srt_encoder\.(.*)", r"encoder.\1"),
    (r"encoder\.slot_attention\.(.*)", r"slot_attention.\1"),
    (r"decoder\.render_mlp\.net\.(.*)", r"decoder.render_mlp.\1"),
    (r"decoder\.mixing_block\.norm1\.(.*)", r"decoder.mixing_block.norm_rays.\1"),
    (r"decoder\.mixing_block\.norm2\.(.*)", r"decoder.mixing_block.norm_mix.\1"),
    # SRT encoder
    (r"encoder\.conv_blocks\.(\d+)\.layers\.0\.(.*)", r"encoder.conv_blocks.\1.conv1.\2"),
    (r"encoder\.conv_blocks\.(\d+)\.layers\.2\.(.*)", r"encoder.conv_blocks.\1.conv2.\2"),
    (r"encoder\.per_patch_linear\.(.*)", r"encoder.patch_projection.\1"),
    (r"encoder\.pixel_embedding", r"encoder.patch_embedding"),
    # SRT decoders: the light-field output MLP sits inside the reference's RayPredictor;
    # the improved decoder calls its RayPredictor "allocation_transformer"
    (r"decoder\.ray_predictor\.output_mlp\.(.*)", r"decoder.output_mlp.\1"),
    (r"decoder\.allocation_transformer\.(.*)", r"decoder.ray_predictor.\1"),
]


def rename(key: str) -> str:
    """Our name for a reference key: every rule that matches is applied, in order."""
    for pattern, replacement in RULES:
        key = re.sub(f"^{pattern}$", replacement, key)
    return key


def map_state_dict(reference: dict) -> dict:
    """Our state dict from a reference checkpoint's ``encoder`` and ``decoder`` dicts."""
    out = {}
    for part in ("encoder", "decoder"):
        for key, value in reference[part].items():
            out[rename(f"{part}.{key}")] = value
    return out


def from_reference(reference: dict, model_name: str, config: dict) -> dict:
    """A scenetools checkpoint dict (weights only) from a reference ``model.pt``.

    The weights are checked against a freshly built model: every key must map onto one of
    ours with the same shape, and none of ours may be left out.
    """
    from . import build_model

    model = build_model(model_name, config["model"])
    if not hasattr(model, "from_reference"):
        raise BadInput(f"model {model_name!r} has no reference checkpoint format")
    state = model.from_reference(reference)
    model.size_for_state(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BadInput(f"reference checkpoint does not fit {model_name}: missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise BadInput(f"reference checkpoint does not fit {model_name}: {key} has shape "
                           f"{tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    return {"model_name": model_name, "config": config, "model": state, "step": int(reference.get("it", 0)),
            "optimizer": None, "reference": True}
