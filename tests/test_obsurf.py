import math

import numpy as np
import pytest
import torch

from scenetools import cameras
from scenetools import config as configs
from scenetools.errors import BadInput
from scenetools.models import volume
from scenetools.models.base import encoder_inputs, near_far
from scenetools.models.obsurf import ObSuRF, features_at

PRESETS = ["clevr3d", "clevr3d_nolo", "clevr3d_nopixel", "msn", "msn_nolo", "msn_nopixel", "synthetic"]


def build(preset, overrides=()):
    return ObSuRF(**configs.resolve("obsurf", f"obsurf/{preset}", overrides)["model"])


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("preset, encoder, decoder", [
    ("clevr3d", 3_320_832, 237_258), ("msn", 11_950_080, 867_530),
    # no pixel features: the colour head's first layer loses c_dim x hidden weights
    ("clevr3d_nopixel", 3_320_832, 237_258 - 128 * 128), ("msn_nopixel", 11_950_080, 867_530 - 256 * 256)])
def test_parameter_counts_match_the_reference(preset, encoder, decoder):
    model = build(preset)
    assert (count(model.encoder), count(model.decoder)) == (encoder, decoder)


def test_presets_follow_the_reference_configs():
    for preset in PRESETS:
        build(preset)  # every preset builds
    msn, nopixel = configs.resolve("obsurf", "obsurf/msn"), configs.resolve("obsurf", "obsurf/msn_nopixel")
    assert (msn["data"]["num_rays"], msn["model"]["decoder"]["max_density"], msn["training"]["lr"]) == (8192, 8, 4e-4)
    assert (nopixel["model"]["decoder"]["max_density"], nopixel["model"]["loss"]["l1"]) == (10, 0.03)
    assert build("clevr3d_nolo").loss_config["l1"] == 0 and build("msn_nolo").loss_config["l1"] == 0


# ----------------------------------------------------------------------------- volume rendering

def test_compositing_a_constant_density_slab_matches_the_closed_form():
    sigma, a, b = 0.7, 2.0, 5.0
    depths = torch.linspace(0.0, 10.0, 20001, dtype=torch.float64)
    density = torch.where((depths >= a) & (depths < b), sigma, 0.0)
    weights = volume.composite(density, depths)
    L = b - a
    assert weights.sum().item() == pytest.approx(1 - math.exp(-sigma * L), abs=1e-7)  # opacity
    transmittance = 1 - torch.cat([torch.zeros(1, dtype=torch.float64), weights.cumsum(0)[:-1]])
    expected = torch.exp(-sigma * (depths - a).clamp(0, L))
    assert torch.allclose(transmittance, expected, atol=1e-7)
    mean_depth = a + 1 / sigma - L * math.exp(-sigma * L) / (1 - math.exp(-sigma * L))
    step = (depths[1] - depths[0]).item()
    assert volume.expected_depth(weights, depths).item() == pytest.approx(mean_depth, abs=step)


def test_termination_weights_of_a_slab_give_the_mean_depth_of_what_stops():
    sigma, a, b = 0.7, 2.0, 5.0
    depths = torch.linspace(0.0, 10.0, 20001, dtype=torch.float64)
    density = torch.where((depths >= a) & (depths < b), sigma, 0.0) + 1e-10
    weights = volume.termination_weights(density, depths)
    L = b - a
    mean_depth = a + 1 / sigma - L * math.exp(-sigma * L) / (1 - math.exp(-sigma * L))
    assert weights.sum().item() == pytest.approx(1.0)
    assert (weights * depths).sum().item() == pytest.approx(mean_depth, abs=1e-3)
    # on evenly spaced samples: NeRF's weights, given that the ray stops
    nerf = volume.composite(density, depths)
    assert torch.allclose(weights, nerf / nerf.sum(), atol=1e-6)


def test_compositing_an_opaque_wall_stops_the_ray_there():
    depths = torch.linspace(1.0, 3.0, 5)  # 1, 1.5, 2, 2.5, 3
    weights = volume.composite(torch.tensor([0.0, 0.0, 1e4, 1e4, 0.0]), depths, last=0.5)
    assert torch.allclose(weights, torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))
    assert volume.expected_depth(weights, depths).item() == pytest.approx(2.0)


def test_coarse_samples_span_near_to_far():
    near, far = torch.tensor([0.5, 1.0]), torch.tensor([60.0, 3.0])
    t = volume.coarse_depths(near, far, 5)
    assert torch.allclose(t[1], torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))
    s = volume.coarse_depths(near, far, 64, stratified=True)
    assert (s.diff(dim=-1) >= 0).all() and (s[:, 0] >= near).all() and torch.equal(s[:, -1], far)


def test_fine_samples_go_where_the_weights_are():
    depths = torch.linspace(0.0, 10.0, 11)  # one sample per unit
    near, far = torch.tensor(0.0), torch.tensor(10.0)
    weights = torch.zeros(11)
    weights[4], weights[8] = 0.3, 0.7
    for stratified in (False, True):
        t = volume.fine_depths(weights, depths, near, far, 4000, stratified=stratified)
        assert (t.diff() >= 0).all()
        share = lambda lo, hi: ((t >= lo) & (t < hi)).float().mean().item()  # noqa: E731
        # each sample's weight: 75% on the segment in front of it, 25% on the one behind
        assert share(3, 4) == pytest.approx(0.75 * 0.3, abs=0.03)
        assert share(4, 5) == pytest.approx(0.25 * 0.3, abs=0.03)
        assert share(7, 8) == pytest.approx(0.75 * 0.7, abs=0.03)
        assert share(8, 9) == pytest.approx(0.25 * 0.7, abs=0.03)
        assert share(3, 5) + share(7, 9) > 0.99
    # a ray that barely stops anywhere is sampled where it does stop
    faint = volume.fine_depths(weights * 1e-4, depths, near, far, 4000)
    assert torch.allclose(faint, volume.fine_depths(weights, depths, near, far, 4000))
    last = torch.zeros(11)
    last[-1] = 1.0  # a quarter of it lies past the last sample: clipped to far
    assert volume.fine_depths(last, depths, near, far, 100).max().item() == 10.0


# ----------------------------------------------------------------------------- the loss

def test_loss_matches_a_hand_computation(monkeypatch):
    """Fixed slot densities and colours at the training points: the objective must combine
    them as the reference does. importance_cutoff 0.5 makes the empty-point weight the depth
    whichever half the point falls in, and depth_noise 0 puts surface points on the surface."""
    model = ObSuRF(num_slots=2, c_dim=8, h_dim=8, decoder={"hidden": 8},
                   loss={"color_std": 0.5, "depth_noise": 0.0, "importance_cutoff": 0.5, "l1": 0.2,
                         "anneal_start": 100, "anneal_until": 300})
    surface_density = torch.tensor([[[2.0, 3.0, 1.0, 4.0, 1.0], [1.0, 0.5, 1.0, 4.0, 3.0]]])  # [B=1, S=2, R=5]
    slot_colour = torch.tensor([[[[1.0, 0.0, 0.0]] * 5, [[0.0, 0.0, 1.0]] * 5]])  # slot 0 red, slot 1 blue
    empty_density = torch.tensor([[[0.1, 0.2, 0.3, 0.4, 0.05], [0.0, 0.1, 0.0, 0.0, 0.05]]])
    calls = []

    def decode(scene, points, rays=None):
        calls.append(points)
        return (surface_density, slot_colour) if rays is not None else (empty_density, None)

    monkeypatch.setattr(model, "encode", lambda inputs: {})
    monkeypatch.setattr(model, "decode", decode)
    batch = {"target_camera_pos": torch.zeros(1, 5, 3), "target_rays": torch.tensor([[[0.0, 0.0, 1.0]] * 5]),
             # a surface, another, sky, unknown, beyond far
             "target_depth": torch.tensor([[2.0, 4.0, np.inf, 0.0, 12.0]]),
             "target_pixels": torch.tensor([[[0.5, 0, 0.5], [1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 0, 1.0]]]),
             "render_range": torch.tensor([[0.5, 10.0]])}
    loss, logs = model(batch, step=200)  # halfway through the annealing: l1 weight 0.1

    # nothing before far: a backdrop at far
    assert torch.allclose(calls[0][0, [0, 1, 2, 4], 2], torch.tensor([2.0, 4.0, 10.0, 10.0]))
    # rays 0, 1, 2, 4 (ray 3 has unknown depth); colours: ray 0 (2 red + 1 blue) / 3,
    # ray 1 (3 red + 0.5 blue) / 3.5, ray 2 (red + blue) / 2, ray 4 (red + 3 blue) / 4
    colour = np.array([[2 / 3, 0, 1 / 3], [3 / 3.5, 0, 0.5 / 3.5], [0.5, 0, 0.5], [0.25, 0, 0.75]])
    target = np.array([[0.5, 0, 0.5], [1, 0, 0], [0, 0, 0], [0, 0, 1]])
    value_ll = (-0.5 * ((target - colour) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)).sum(1)
    depth_ll = np.log([3.0, 3.5, 2.0, 4.0]) - np.array([0.1, 0.3, 0.3, 0.1]) * np.array([2.0, 4.0, 10.0, 10.0])
    overlap = np.array([1.0, 0.5, 1.0, 1.0])
    expected = -(value_ll.mean() + depth_ll.mean()) + 0.1 * overlap.mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["value_ll"].item() == pytest.approx(value_ll.mean(), rel=1e-5)
    assert logs["depth_ll"].item() == pytest.approx(depth_ll.mean(), rel=1e-5)
    assert logs["overlap"].item() == pytest.approx(overlap.mean(), rel=1e-5)
    assert logs["mse"].item() == pytest.approx(((colour - target) ** 2).mean(), rel=1e-5)
    assert torch.allclose(logs["prediction"]["segmentation"][0, 0], torch.tensor([2 / 3, 1 / 3]))
    assert model(batch, step=50)[0].item() == pytest.approx(expected - 0.1 * overlap.mean(), rel=1e-5)  # no l1 yet


# ----------------------------------------------------------------------------- cameras and weights

def test_render_of_two_known_slots(monkeypatch):
    """Slot 0: a thin slab of density 25 from 4 to 4.2 along the rays from x < 1, red growing
    with depth; slot 1: a blue backdrop of density 5 from 11.9 on. Rendered between 0.5 and 12
    with 64 coarse samples (one in the slab) and 64 fine ones, which must find the slab."""
    model = tiny(num_slots=2, render={"coarse_samples": 64, "fine_samples": 64}).eval()

    def decode(scene, points, rays=None):
        x, t = points[..., 0], points[..., 2]  # the rays run along +z
        if points.dim() == 3:  # shared by the slots, or per slot
            x, t = x[:, None].expand(-1, 2, -1), t[:, None].expand(-1, 2, -1)
        density = torch.stack([torch.where((t[:, 0] >= 4) & (t[:, 0] < 4.2) & (x[:, 0] < 1), 25.0, 0.0),
                               torch.where(t[:, 1] >= 11.9, 5.0, 0.0)], 1) + 1e-10
        red = torch.stack([t[:, 0] / 10, torch.zeros_like(t[:, 1])], 1)
        blue = torch.stack([torch.zeros_like(t[:, 0]), torch.ones_like(t[:, 1])], 1)
        return density, torch.stack([red, torch.zeros_like(red), blue], -1)

    monkeypatch.setattr(model, "decode", decode)
    origins = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])  # ray 2 misses the slab
    rays = torch.tensor([[[0.0, 0.0, 1.0]] * 3])
    out = model.render({"slots": torch.zeros(1, 2, 16)}, origins, rays, torch.tensor([0.5]), torch.tensor([12.0]))

    # the ray stops in the slab (its mean depth there); the backdrop is as good as hidden
    opacity = 1 - math.exp(-25 * 0.2)
    slab_depth = 4 + 1 / 25 - 0.2 * math.exp(-5) / opacity
    expected_rgb = torch.tensor([[slab_depth / 10, 0, 0]] * 2 + [[0.0, 0.0, 1.0]])
    assert torch.allclose(out["rgb"][0], expected_rgb, atol=3e-3)
    # ray 2: the backdrop stops it between 11.9 and 12, most of it at 12
    assert torch.allclose(out["depth"][0], torch.tensor([slab_depth, slab_depth, 12.0]), atol=0.05)
    assert torch.allclose(out["segmentation"][0], torch.tensor([[1.0, 0.0]] * 2 + [[0.0, 1.0]]), atol=3e-3)
    # alone, over black with its opacity: the slab lets e^-5 through; the backdrop nothing
    slot_0 = torch.tensor([[slab_depth / 10 * opacity, 0, 0]] * 2 + [[0.0, 0, 0]])
    assert torch.allclose(out["slot_rgb"][0, :, 0], slot_0, atol=3e-3)
    assert torch.allclose(out["slot_rgb"][0, :, 1], torch.tensor([[0.0, 0.0, 1.0]] * 3), atol=3e-3)


def test_rays_end_at_the_floor(monkeypatch):
    """With ``min_z`` rays stop where they reach that height (a ground at z = 0 here)."""
    model = tiny(num_slots=2, render={"coarse_samples": 32, "fine_samples": 16, "min_z": -0.1}).eval()
    heights, distances = [], []

    def decode(scene, points, rays=None):
        distance = (points - torch.tensor([0.0, 0.0, 5.0])).norm(dim=-1).max().item()
        heights.extend([points[..., 2].min().item(), points[..., 2].max().item()])
        distances.append(distance)
        shape = points.shape[:-1] if points.dim() == 4 else (points.shape[0], 2, points.shape[1])
        density = torch.where(points[..., 2] < 0, 10.0, 1e-10)
        density = density.expand(shape) if points.dim() == 4 else density[:, None].expand(shape)
        return density, torch.ones(shape + (3,)) * 0.5

    monkeypatch.setattr(model, "decode", decode)
    # the ground; the sky; the ground, but beyond far
    down = torch.nn.functional.normalize(torch.tensor([[[1.0, 0.0, -1.0], [0.0, 1.0, 0.2], [1.0, 0.0, -0.05]]]), dim=-1)
    out = model.render({"slots": torch.zeros(1, 2, 16)}, torch.tensor([[[0.0, 0.0, 5.0]] * 3]), down,
                       torch.tensor([0.5]), torch.tensor([40.0]))
    assert min(heights) >= -0.1 - 1e-4
    assert out["depth"][0, 0].item() == pytest.approx(5 * math.sqrt(2), abs=0.05)
    assert max(heights) == pytest.approx(5 + 40 * down[0, 1, 2].item(), abs=1e-3)  # no floor ahead: up to far
    assert max(distances) == pytest.approx(40.0, abs=1e-3)  # a floor beyond far: up to far


def test_pixel_features_come_from_the_cell_a_point_projects_to():
    features = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 4, 6, 1)  # h 4, w 6
    c2w = torch.tensor(cameras.look_at([0.0, 0.0, 0.0], [0.0, 0.0, 1.0], up=[0.0, -1.0, 0.0]), dtype=torch.float32)
    assert torch.allclose(c2w[:3, :3], torch.eye(3))  # camera axes = world axes
    K = torch.tensor(cameras.intrinsics(2.0, 2.0, 3.0, 2.0), dtype=torch.float32)  # 6 x 4 feature map
    points = torch.tensor([[[0.0, 0.0, 5.0], [-1.2, -0.9, 1.0], [2.4, 0.2, 2.0], [50.0, 50.0, 1.0]]])
    # u = 2 x/z + 3, v = 2 y/z + 2: (3, 2) -> cell (2, 3); (0.6, 0.2) -> (0, 0); (5.4, 2.2) -> (2, 5); far off -> (3, 5)
    picked = features_at(features, c2w[None], K[None], points)[0, :, 0]
    assert picked.tolist() == [2 * 6 + 3, 0, 2 * 6 + 5, 3 * 6 + 5]


def reference_decoder(decoder, slots, points, rays=None, pixel_features=None):
    """The reference's NerfAinNet written out: every slot shifts and scales its own copy of
    the encoded points, and the colour head sees the concatenated inputs."""
    S = slots.shape[1]
    per_slot = lambda x: x[:, None].expand(-1, S, -1, -1) if x.dim() == 3 else x  # noqa: E731
    h = per_slot(decoder.encoding(points))
    for conditioning, layer in zip(decoder.conditioning, decoder.layers):
        shift, scale = conditioning(slots)[:, :, None].chunk(2, -1)
        h = torch.relu(layer((h + shift) * scale))
    out = decoder.layers[-1](h)
    density = torch.sigmoid(out[..., 0]) * decoder.max_density + 1e-10
    if rays is None:
        return density, None
    extra = [per_slot(pixel_features)] if pixel_features is not None else []
    inputs = torch.cat([out[..., 1:]] + [x.expand(out.shape[:-1] + (-1,)) for x in extra + [per_slot(rays)]], -1)
    return density, torch.sigmoid(decoder.color_head(inputs))


@pytest.mark.parametrize("pixels", [True, False])
@pytest.mark.parametrize("per_slot", [False, True])
def test_decoder_equals_the_reference_formula(pixels, per_slot):
    torch.manual_seed(0)
    model = tiny(decoder={"hidden": 16, "use_pixel_features": pixels}).double()
    B, S, P = 2, 3, 10
    slots = torch.randn(B, S, 16, dtype=torch.float64)
    shape = (B, S, P) if per_slot else (B, P)
    points, rays = torch.randn(shape + (3,), dtype=torch.float64), torch.randn(shape + (3,), dtype=torch.float64)
    pixel_features = torch.randn(shape + (16,), dtype=torch.float64) if pixels else None
    density, colour = model.decoder(slots, points, rays, pixel_features)
    expected_density, expected_colour = reference_decoder(model.decoder, slots, points, rays, pixel_features)
    assert density.shape == (B, S, P) and colour.shape == (B, S, P, 3)
    assert torch.allclose(density, expected_density, atol=1e-12) and torch.allclose(colour, expected_colour, atol=1e-12)
    density_only, none = model.decoder(slots, points)
    assert none is None and torch.allclose(density_only, expected_density, atol=1e-12)


def test_encoder_equals_its_cnn_on_the_broadcast_camera_encoding():
    torch.manual_seed(0)
    encoder = tiny().encoder.double().eval()
    images, rays = torch.rand(2, 3, 16, 20, dtype=torch.float64), torch.randn(2, 16, 20, 3, dtype=torch.float64)
    position = torch.randn(2, 3, dtype=torch.float64)
    broadcast = encoder.camera_encoding(position)[:, :, None, None].expand(-1, -1, 16, 20)
    direct = encoder.cnn.conv1(torch.cat([images, rays.permute(0, 3, 1, 2), broadcast], 1))
    x = encoder.cnn.layer4(encoder.cnn.layer3(encoder.cnn.layer2(encoder.cnn.layer1(
        torch.relu(encoder.cnn.bn1(direct))))))
    assert torch.allclose(encoder.cnn(torch.cat([images, rays.permute(0, 3, 1, 2)], 1),
                                      encoder.camera_encoding(position)), x, atol=1e-12)


def tiny(**overrides):
    config = {"num_slots": 3, "c_dim": 16, "h_dim": 16, "decoder": {"hidden": 16},
              "loss": {"anneal_start": 0, "anneal_until": 10}, "render": {"coarse_samples": 12, "fine_samples": 8}}
    return ObSuRF(**{**config, **overrides})


def tiny_batch(B=2, R=64, H=16, W=20, seed=0):
    """Cameras looking at the origin from about 10 units, depths where rays cross z = 0 (sky: inf)."""
    g = torch.Generator().manual_seed(seed)
    positions = np.array([[10.0, 0.0, 4.0], [0.0, -9.0, 5.0]])[:B]
    c2w = cameras.look_at(positions, np.zeros(3))
    K = cameras.intrinsics(W, W, W / 2, H / 2)
    rays = torch.tensor(cameras.ray_directions(K, c2w, H, W), dtype=torch.float32)
    target = torch.randn(B, R, 3, generator=g) * torch.tensor([0.3, 0.3, 0.2]) + torch.tensor([0.0, 0.0, -0.6])
    target = target / target.norm(dim=-1, keepdim=True)
    origin = torch.tensor(positions, dtype=torch.float32)[:, None].expand(B, R, 3)
    depth = torch.where(target[..., 2] < 0, -origin[..., 2] / target[..., 2].clamp(max=-1e-6), torch.inf)
    return {"input_images": torch.rand(B, 1, 3, H, W, generator=g), "input_rays": rays[:, None],
            "input_camera_pos": torch.tensor(positions, dtype=torch.float32)[:, None],
            "input_camera_to_world": torch.tensor(c2w, dtype=torch.float32)[:, None],
            "input_intrinsics": torch.tensor(K, dtype=torch.float32).expand(B, 1, 3, 3),
            "render_range": torch.tensor([[0.5, 30.0]]).expand(B, 2), "target_camera_pos": origin,
            "target_rays": target, "target_depth": depth, "target_pixels": torch.rand(B, R, 3, generator=g)}


def reference_state(num_slots=7, c=128, h=128, hidden=128, data_parallel=False):
    """An ObSuRF reference checkpoint of random weights, keys and shapes as its CheckpointIO
    saves the Obsurf module (ConvSlotEncoder with CustomResnet, SlottedDecoder with NerfAinNet)."""
    enc = {"resnet.conv1.weight": (h, 105, 7, 7)}
    def bn(prefix, n):  # noqa: E306
        enc.update({f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
                    f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()})
    bn("resnet.bn1", h)
    for layer in range(1, 5):
        for block in range(2):
            p = f"resnet.layer{layer}.{block}"
            enc[f"{p}.conv1.weight"] = enc[f"{p}.conv2.weight"] = (h, h, 3, 3)
            bn(f"{p}.bn1", h), bn(f"{p}.bn2", h)
    enc["resnet.layer2.0.downsample.0.weight"] = (h, h, 1, 1)
    bn("resnet.layer2.0.downsample.1", h)
    enc.update({"norm.weight": (h,), "norm.bias": (h,), "fc1.weight": (h, h), "fc1.bias": (h,),
                "fc2.weight": (c, h), "fc2.bias": (c,), "slot_att.slots_mu": (1, 1, c),
                "slot_att.slots_sigma": (1, 1, c), "slot_att.gru.weight_ih": (3 * c, c),
                "slot_att.gru.weight_hh": (3 * c, c), "slot_att.gru.bias_ih": (3 * c,),
                "slot_att.gru.bias_hh": (3 * c,),
                "slot_att.mlp.0.weight": (c, c), "slot_att.mlp.0.bias": (c,), "slot_att.mlp.2.weight": (c, c),
                "slot_att.mlp.2.bias": (c,), "slot_att.self_att.in_proj_weight": (3 * c, c),
                "slot_att.self_att.in_proj_bias": (3 * c,), "slot_att.self_att.out_proj.weight": (c, c),
                "slot_att.self_att.out_proj.bias": (c,)})
    for name in ("to_q", "to_k", "to_v"):
        enc[f"slot_att.{name}.weight"], enc[f"slot_att.{name}.bias"] = (c, c), (c,)
    for name in ("norm_input", "norm_slots", "norm_pre_ff"):
        enc[f"slot_att.{name}.weight"] = enc[f"slot_att.{name}.bias"] = (c,)
    dec = {}
    for i, width in enumerate([99, hidden, hidden, hidden]):
        dec[f"net.net.cond_layers.{i}.weight"], dec[f"net.net.cond_layers.{i}.bias"] = (2 * width, c), (2 * width,)
        dec[f"net.net.main_layers.{i}.weight"], dec[f"net.net.main_layers.{i}.bias"] = (hidden, width), (hidden,)
    dec["net.net.main_layers.4.weight"], dec["net.net.main_layers.4.bias"] = (hidden + 1, hidden), (hidden + 1,)
    dec.update({"net.color_predictor.0.weight": (hidden, hidden + c + 3), "net.color_predictor.0.bias": (hidden,),
                "net.color_predictor.2.weight": (3, hidden), "net.color_predictor.2.bias": (3,)})
    wrap = ".module" if data_parallel else ""
    state = {f"encoder{wrap}.{k}": torch.randn(s) for k, s in enc.items()}
    state.update({f"decoder{wrap}.{k}": torch.randn(s) for k, s in dec.items()})
    return {"model": state, "optimizer": {}, "epoch_it": 3, "it": 50000, "loss_val_best": 0.0}


@pytest.mark.parametrize("data_parallel", [False, True])
def test_reference_checkpoints_map_onto_ours(data_parallel):
    reference = reference_state(data_parallel=data_parallel)
    model = build("clevr3d")
    state = ObSuRF.from_reference(reference)
    assert sorted(state) == sorted(model.state_dict())
    model.load_state_dict(state)  # strict: same keys, same shapes
    wrap = ".module" if data_parallel else ""
    ref = reference["model"]
    assert torch.equal(model.encoder.slot_attention.slots_mu, ref[f"encoder{wrap}.slot_att.slots_mu"].reshape(-1))
    assert torch.equal(model.encoder.cnn.layer2[0].downsample[1].running_var,
                       ref[f"encoder{wrap}.resnet.layer2.0.downsample.1.running_var"])
    assert torch.equal(model.decoder.layers[4].weight, ref[f"decoder{wrap}.net.net.main_layers.4.weight"])
    assert torch.equal(model.decoder.color_head[0].weight, ref[f"decoder{wrap}.net.color_predictor.0.weight"])
    with pytest.raises(BadInput, match="unknown keys"):
        ObSuRF.from_reference({"model": {"encoder.something_else": torch.zeros(1)}})


# ----------------------------------------------------------------------------- the model end to end

def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = tiny()
    loss, logs = model(tiny_batch(), step=100)
    loss.backward()
    assert torch.isfinite(loss)
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead
    assert logs["prediction"]["segmentation"].shape == (2, 64, 3)


def test_render_returns_the_declared_outputs_in_any_chunking():
    torch.manual_seed(0)
    model, batch = tiny().eval(), tiny_batch(R=40)
    with torch.no_grad():
        scene = model.encode(encoder_inputs(batch))
        out = model.render(scene, batch["target_camera_pos"], batch["target_rays"], *near_far(batch))
        model.render_config["max_points"] = 3 * (12 + 16) * 2 * 7  # 7 rays per piece
        pieces = model.render(scene, batch["target_camera_pos"], batch["target_rays"], *near_far(batch))
        rgb_only = model.render(scene, batch["target_camera_pos"], batch["target_rays"], *near_far(batch), outputs=())
        shares = model.point_segmentation(scene, batch["target_camera_pos"][:, :5] * 0.1)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "rgb": (2, 40, 3), "depth": (2, 40), "segmentation": (2, 40, 3), "slot_rgb": (2, 40, 3, 3)}
    assert set(model.outputs) | {"rgb"} == set(out) and set(rgb_only) == {"rgb"}
    for key in out:
        assert torch.allclose(out[key], pieces[key], atol=1e-5), key
    assert ((out["rgb"] >= 0) & (out["rgb"] <= 1)).all() and ((out["depth"] >= 0.5) & (out["depth"] <= 30)).all()
    assert torch.allclose(out["segmentation"].sum(-1), torch.ones(2, 40))
    assert shares.shape == (2, 5, 3) and torch.allclose(shares.sum(-1), torch.ones(2, 5))


def test_pixel_features_can_be_turned_off():
    torch.manual_seed(0)
    off = tiny(decoder={"hidden": 16, "use_pixel_features": False}).eval()
    assert off.decoder.color_head[0].in_features == 16 + 3
    scene = off.encode(encoder_inputs(tiny_batch()))
    points, rays = torch.randn(2, 10, 3), torch.nn.functional.normalize(torch.randn(2, 10, 3), dim=-1)
    _, colour = off.decode(scene, points, rays)
    _, other = off.decode({**scene, "features": torch.randn_like(scene["features"])}, points, rays)
    assert torch.equal(colour, other)


def test_a_reference_model_pt_loads_through_the_commands_loader(tmp_path):
    """stelzner/obsurf's CheckpointIO file ({"model": ..., "it": ...}) is recognised as a
    reference checkpoint and loads with --config obsurf/clevr3d."""
    from scenetools import checkpoint as ckpt

    reference = reference_state()
    path = tmp_path / "model.pt"
    torch.save({**reference, "it": 1234}, path)
    model, checkpoint, _ = ckpt.load_model(path, reference_preset="obsurf/clevr3d")
    assert isinstance(model, ObSuRF) and checkpoint["step"] == 1234
    assert torch.equal(model.decoder.layers[4].weight, reference["model"]["decoder.net.net.main_layers.4.weight"])
