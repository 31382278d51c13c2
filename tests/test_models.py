import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scenetools import cameras
from scenetools import config as configs
from scenetools.models import build_model, count_parameters
from scenetools.models.reference import from_reference, map_state_dict
from scenetools.models.srt import rigid_inverse, to_frame


@pytest.mark.parametrize("name, preset, expected", [
    ("srt", "srt/nmr", 73_932_563), ("srt", "srt/msn", 73_932_563), ("srt", "srt/clevr3d", 73_932_563),
    ("isrt", "isrt/msn", 41_033_583)])
def test_shipped_configs_match_reference_parameter_counts(name, preset, expected):
    model = build_model(name, configs.resolve(name, preset)["model"])
    assert count_parameters(model) == expected


def test_shipped_configs_have_reference_hyperparameters():
    for preset in ("srt/nmr", "srt/msn", "srt/clevr3d", "isrt/msn"):
        training = configs.resolve(preset.split("/")[0], preset)["training"]
        assert (training["batch_size"], training["lr"], training["lr_warmup"], training["lr_decay_rate"],
                training["lr_decay_steps"], training["max_steps"]) == (256, 1e-4, 2500, 0.16, 4_000_000, 4_000_000)
        assert configs.resolve(preset.split("/")[0], preset)["data"]["num_rays"] == 8192


# --- reference checkpoints: the key names and shapes stelzner/srt's modules produce

def reference_transformer(prefix, depth, dim, inner, mlp, kv_dim=None):
    keys = {}
    for i in range(depth):
        p = f"{prefix}.layers.{i}"
        keys[f"{p}.0.norm.weight"] = keys[f"{p}.0.norm.bias"] = (dim,)
        if kv_dim is None:
            keys[f"{p}.0.fn.to_qkv.weight"] = (3 * inner, dim)
        else:
            keys[f"{p}.0.fn.to_q.weight"] = (inner, dim)
            keys[f"{p}.0.fn.to_kv.weight"] = (2 * inner, kv_dim)
        keys[f"{p}.0.fn.to_out.0.weight"], keys[f"{p}.0.fn.to_out.0.bias"] = (dim, inner), (dim,)
        keys[f"{p}.1.norm.weight"] = keys[f"{p}.1.norm.bias"] = (dim,)
        keys[f"{p}.1.fn.net.0.weight"], keys[f"{p}.1.fn.net.0.bias"] = (mlp, dim), (mlp,)
        keys[f"{p}.1.fn.net.3.weight"], keys[f"{p}.1.fn.net.3.bias"] = (dim, mlp), (dim,)
    return keys


def reference_srt_state(improved: bool):
    enc = {}
    channels = [(183, 96, 192), (192, 192, 384), (384, 384, 768)] + ([] if improved else [(768, 768, 1536)])
    for i, (a, h, o) in enumerate(channels):
        enc[f"conv_blocks.{i}.layers.0.weight"] = (h, a, 3, 3)
        enc[f"conv_blocks.{i}.layers.2.weight"] = (o, h, 3, 3)
    enc["per_patch_linear.weight"], enc["per_patch_linear.bias"] = (768, channels[-1][2], 1, 1), (768,)
    if not improved:
        enc["pixel_embedding"] = (1, 768, 15, 20)
        enc["canonical_camera_embedding"] = enc["non_canonical_camera_embedding"] = (1, 1, 768)
    enc.update(reference_transformer("transformer", 5 if improved else 10, 768, 768, 1536))
    if improved:
        dec = {"allocation_transformer.input_mlp.0.weight": (360, 180), "allocation_transformer.input_mlp.0.bias": (360,),
               "allocation_transformer.input_mlp.2.weight": (180, 360), "allocation_transformer.input_mlp.2.bias": (180,)}
        dec.update(reference_transformer("allocation_transformer.transformer", 2, 180, 768, 1536, kv_dim=768))
        for j, (a, b) in enumerate([(180, 1536), (1536, 1536), (1536, 1536), (1536, 1536), (1536, 3)]):
            dec[f"render_mlp.{2 * j}.weight"], dec[f"render_mlp.{2 * j}.bias"] = (b, a), (b,)
    else:
        dec = reference_transformer("ray_predictor.transformer", 2, 180, 768, 1536, kv_dim=768)
        dec.update({"ray_predictor.output_mlp.0.weight": (128, 180), "ray_predictor.output_mlp.0.bias": (128,),
                    "ray_predictor.output_mlp.2.weight": (3, 128), "ray_predictor.output_mlp.2.bias": (3,)})
    rand = lambda shapes: {k: torch.randn(s) for k, s in shapes.items()}  # noqa: E731
    return {"encoder": rand(enc), "decoder": rand(dec), "optimizer": {}, "it": 4321}


@pytest.mark.parametrize("name, preset, improved", [("srt", "srt/msn", False), ("isrt", "isrt/msn", True)])
def test_reference_checkpoint_keys_map_onto_ours(name, preset, improved):
    reference = reference_srt_state(improved)
    config = configs.resolve(name, preset)
    converted = from_reference(reference, name, config)
    model = build_model(name, config["model"])
    model.load_state_dict(converted["model"])  # strict: every key, every shape
    assert converted["step"] == 4321
    n_reference = sum(v.numel() for part in ("encoder", "decoder") for v in reference[part].values())
    assert n_reference == count_parameters(model)
    mapped = map_state_dict(reference)
    assert torch.equal(mapped["encoder.transformer.layers.3.attention.to_qkv.weight"],
                       reference["encoder"]["transformer.layers.3.0.fn.to_qkv.weight"])


def test_reference_checkpoint_of_another_model_is_rejected():
    from scenetools.errors import BadInput
    with pytest.raises(BadInput, match="does not fit isrt"):
        from_reference(reference_srt_state(improved=False), "isrt", configs.resolve("isrt", "isrt/msn"))


def small_srt(canonical=True):
    torch.manual_seed(0)
    return build_model("srt", {"encoder": {"num_conv_blocks": 2, "num_att_blocks": 2, "dim": 64, "heads": 2,
                                           "dim_head": 32, "mlp_dim": 128, "conv_channels": 16},
                               "decoder": {"type": "lightfield", "heads": 2}, "canonical_frame": canonical}).eval()


def random_views(B=2, I=2, H=16, W=16, seed=0):
    rng = np.random.default_rng(seed)
    az = rng.uniform(0, 2 * np.pi, (B, I))
    eyes = np.stack([3 * np.cos(az), 3 * np.sin(az), rng.uniform(1, 2, (B, I))], -1)
    c2w = cameras.look_at(eyes, np.zeros(3))
    K = cameras.intrinsics(20.0, 20.0, W / 2, H / 2)
    return c2w, K


def encode_decode(model, c2w, K, images, targets_pos, targets_dir):
    H, W = images.shape[-2:]
    f = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    scene = model.encode({"input_images": images, "input_camera_pos": f(c2w[..., :3, 3]),
                          "input_rays": f(cameras.ray_directions(K, c2w, H, W)), "input_camera_to_world": f(c2w)})
    return model.render(scene, f(targets_pos), f(targets_dir))["rgb"]


def test_canonical_frame_makes_srt_invariant_to_the_world_frame():
    model = small_srt(canonical=True)
    c2w, K = random_views()
    images = torch.rand(2, 2, 3, 16, 16)
    pos = np.repeat(c2w[:, :1, :3, 3], 7, 1) + 0.1
    dirs = -pos / np.linalg.norm(pos, axis=-1, keepdims=True)
    moved = np.eye(4)
    moved[:3, :3] = cameras.rotation_about([0.3, -0.5, 0.8], 1.1)
    moved[:3, 3] = [2.0, -1.0, 0.5]
    before = encode_decode(model, c2w, K, images, pos, dirs)
    after = encode_decode(model, moved @ c2w, K, images, pos @ moved[:3, :3].T + moved[:3, 3], dirs @ moved[:3, :3].T)
    assert torch.allclose(before, after, atol=1e-4)
    world = small_srt(canonical=False)
    world.load_state_dict(model.state_dict())
    assert not torch.allclose(encode_decode(world, c2w, K, images, pos, dirs),
                              encode_decode(world, moved @ c2w, K, images, pos @ moved[:3, :3].T + moved[:3, 3],
                                            dirs @ moved[:3, :3].T), atol=1e-3)


def test_rigid_inverse():
    c2w = torch.tensor(cameras.look_at([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]), dtype=torch.float64)
    assert torch.allclose(rigid_inverse(c2w), torch.linalg.inv(c2w), atol=1e-12)


def test_gradients_reach_every_parameter():
    model = small_srt().train()
    c2w, K = random_views()
    out = encode_decode(model, c2w, K, torch.rand(2, 2, 3, 16, 16), np.zeros((2, 5, 3)) + [3, 0, 1],
                        np.tile([[-1.0, 0, 0]], (2, 5, 1)))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_canonical_frame_stays_float32_under_bf16_autocast():
    """The ray encoding multiplies positions by up to 2^9 pi: bf16 geometry would make its
    high octaves noise that a bf16-trained model fits and an fp32 evaluation does not see."""
    c2w = torch.from_numpy(cameras.look_at([7.3, -2.1, 4.4], [0.0, 0.0, 0.0])).float()[None]
    positions, rays = torch.randn(1, 50, 3), torch.nn.functional.normalize(torch.randn(1, 50, 3), dim=-1)
    expected = to_frame(rigid_inverse(c2w), positions, rays)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = to_frame(rigid_inverse(c2w), positions, rays)
    for e, g in zip(expected, got):
        assert g.dtype == torch.float32 and torch.equal(e, g)


def test_slot_attention_round_normalises_over_slots_then_takes_a_weighted_mean():
    """Slots compete for each token (softmax over slots), then each slot averages the values
    with its share of every token: hand-computed for 2 slots and 3 tokens."""
    from scenetools.models.layers import slot_attention_round
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    k = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    updates = slot_attention_round(torch.zeros(1, 2, 2), q, k, v, lambda u, s: u, scale=1.0, eps=0.0)
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    share = np.exp(logits) / np.exp(logits).sum(0)  # over slots, per token
    expected = (share / share.sum(1, keepdims=True)) @ v[0].numpy()
    np.testing.assert_allclose(updates[0].numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (7, 2, 3), (3, 2, 1), (5, 3, 0)])
@pytest.mark.parametrize("layout", ["obsurf", "srt"])
def test_a_conv_over_constant_channels_equals_the_conv_of_their_broadcast(kernel, stride, padding, layout):
    """conv2d_of_parts (the first conv of ObSuRF: [pixels, constants]; of SRT and OSRT:
    [image, constants, ray encoding]) against F.conv2d on the materialised input, in values
    and in the weight's gradient."""
    from torch import nn

    from scenetools.models.layers import conv2d_of_parts

    torch.manual_seed(0)
    conv = nn.Conv2d(10, 8, kernel, stride, padding, bias=kernel == 5).double()
    x, constant = torch.randn(2, 4, 17, 13, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    broadcast = constant[:, :, None, None].expand(-1, -1, 17, 13)
    if layout == "obsurf":
        parts, full = [x, constant], torch.cat([x, broadcast], 1)
    else:
        parts, full = [x[:, :1], constant, x[:, 1:]], torch.cat([x[:, :1], broadcast, x[:, 1:]], 1)
    ours = conv2d_of_parts(conv, parts)
    (ours * torch.linspace(-1, 1, ours.numel(), dtype=torch.float64).view_as(ours)).sum().backward()
    grad, conv.weight.grad = conv.weight.grad, None
    expected = conv(full)
    (expected * torch.linspace(-1, 1, expected.numel(), dtype=torch.float64).view_as(expected)).sum().backward()
    assert torch.allclose(ours, expected, atol=1e-12)
    assert torch.allclose(grad, conv.weight.grad, atol=1e-12)


@pytest.mark.parametrize("batch, grid, stride, multiplied", [(2, (15, 20), 2, True), (4, (15, 20), 2, True),
                                                           (8, (15, 20), 2, False), (1, (15, 20), 1, True),
                                                           (2, (15, 20), 1, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_conv_with_a_small_output_grid_is_one_product_in_bf16_and_equals_the_conv(batch, grid, stride,
                                                                                   multiplied, dtype):
    """layers.conv2d: im2col and one product for bf16 on the CPU up to SMALL_GRID_BF16 output
    pixels (SRT's last conv at batch 2 has 160), else F.conv2d; values and gradients against
    the conv in float64 on the same (rounded) numbers, on both sides of the switch."""
    from scenetools.models import layers

    torch.manual_seed(0)
    x = torch.randn(batch, 32, *grid).to(dtype).requires_grad_()
    weight = (torch.randn(48, 32, 3, 3) / 17).to(dtype).requires_grad_()
    out = layers.conv2d(x, weight, None, stride, 1)
    assert out.is_contiguous() != (multiplied and dtype == torch.bfloat16)  # the product's layout
    direction = torch.randn(out.shape, dtype=torch.float64)
    (out.double() * direction).sum().backward()
    x64, w64 = (t.detach().double().requires_grad_() for t in (x, weight))
    expected = F.conv2d(x64, w64, None, stride, 1)
    (expected * direction).sum().backward()
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    for ours, exact in [(out, expected), (x.grad, x64.grad), (weight.grad, w64.grad)]:
        assert (ours.double() - exact).abs().max() <= tolerance * exact.abs().max()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("context", [80, 300, 600, 1100])
def test_attention_multiplied_out_on_short_contexts_equals_sdpa(dtype, tolerance, context):
    """attend() writes short contexts out as two products (faster on the CPU): the same
    attention as torch's SDPA, in values and in gradients, on both sides of the switch."""
    from torch.nn.functional import scaled_dot_product_attention

    from scenetools.models.layers import attend
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 16, dtype=dtype, requires_grad=True) for n in (50, context, context))
    gradient = torch.randn(2, 3, 50, 16, dtype=dtype)
    ours, expected = attend(q, k, v), scaled_dot_product_attention(q, k, v)
    ours_grads = torch.autograd.grad(ours, (q, k, v), gradient)
    expected_grads = torch.autograd.grad(expected, (q, k, v), gradient)
    for a, b in zip((ours, *ours_grads), (expected, *expected_grads)):
        assert torch.allclose(a.float(), b.float(), atol=tolerance, rtol=tolerance)
