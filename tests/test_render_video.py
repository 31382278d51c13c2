import io
import json
import math
import subprocess
import sys

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from scenetools import camera_paths, cameras
from scenetools.device import bf16_supported
from scenetools.errors import BadInput
from scenetools.framestream import encode_frame, read_stream
from conftest import assert_bad_input, run_command
from test_train import data, trained  # noqa: F401  (the trained tiny SRT run)

CENTER = np.array([0.5, -0.3, 0.0])


def frame_and_base():
    eye = CENTER + np.array([8.0, 3.0, 4.0])
    base = cameras.look_at(eye, CENTER)
    K = cameras.intrinsics(50.0, 50.0, 32.0, 32.0)
    ring = np.stack([cameras.look_at(CENTER + 8.5 * np.array([np.cos(a), np.sin(a), 0.5]), CENTER)
                     for a in np.linspace(0, 6, 8)])
    return camera_paths.SceneFrame(ring, world_up=[0, 0, 1]), base, K


def test_scene_frame_comes_from_the_cameras():
    frame, _, _ = frame_and_base()
    np.testing.assert_allclose(frame.center, CENTER, atol=1e-9)
    np.testing.assert_allclose(frame.up, [0, 0, 1])


def test_orbit_keeps_distance_and_height():
    frame, base, K = frame_and_base()
    path = camera_paths.motion_path("rotate", base, K, frame, 36)
    eyes = np.stack([c2w[:3, 3] for c2w, _ in path])
    np.testing.assert_allclose(np.linalg.norm(eyes - CENTER, axis=1), np.linalg.norm(base[:3, 3] - CENTER))
    np.testing.assert_allclose(eyes[:, 2], base[2, 3])
    np.testing.assert_allclose(path[0][0], base, atol=1e-12)
    np.testing.assert_allclose(path[9][0][:3, 3] - CENTER, [-3.0, 8.0, 4.0], atol=1e-9)  # a quarter turn
    for c2w, _ in path:  # still looking at the centre
        forward = c2w[:3, 2]
        to_center = (CENTER - c2w[:3, 3]) / np.linalg.norm(CENTER - c2w[:3, 3])
        np.testing.assert_allclose(forward, to_center, atol=1e-9)


def test_closeup_ends_where_the_reference_formula_puts_it():
    frame, base, K = frame_and_base()
    end = camera_paths.closeup(base, frame, 1.0)
    # reference: final position = 0.2 * orig (horizontal), z = 0.1 * orig z; the camera then
    # looks at orig + 3 * (centre - orig) with z on the ground: -2 * orig horizontally
    offset = base[:3, 3] - CENTER
    np.testing.assert_allclose(end[:3, 3] - CENTER, [0.2 * offset[0], 0.2 * offset[1], 0.1 * offset[2]], atol=1e-9)
    track = CENTER + np.array([-2 * offset[0], -2 * offset[1], 0.0])
    direction = (track - end[:3, 3]) / np.linalg.norm(track - end[:3, 3])
    np.testing.assert_allclose(end[:3, 2], direction, atol=1e-9)
    # the height follows the ease-out curve: -t^2/2 + 3t/2
    half = camera_paths.closeup(base, frame, 0.5)
    assert half[2, 3] - CENTER[2] == pytest.approx(offset[2] * (1 - 0.9 * camera_paths.easeout(0.5)))


def test_fade_is_monotonic_with_eased_ends():
    ts = np.linspace(0, 1, 501)
    faded = np.array([camera_paths.apply_fade(t) for t in ts])
    assert faded[0] == 0 and faded[-1] == pytest.approx(1) and np.all(np.diff(faded) > 0)
    slope = np.diff(faded) / np.diff(ts)
    assert slope[0] < 0.05 and slope[-1] < 0.05  # starts and ends at rest
    assert slope[250] == pytest.approx(1.25, rel=1e-3)  # cruising at 1 / (1 - 0.2)


def test_every_motion_gives_rigid_cameras_starting_at_the_base():
    frame, base, K = frame_and_base()
    for motion in ("rotate", "zoom", "closeup", "rotate_and_closeup", "eyeroll", "spiral"):
        path = camera_paths.motion_path(motion, base, K, frame, 10, fade=True)
        assert len(path) == 10
        assert np.all(cameras.rigid_transform_error(np.stack([c for c, _ in path])) < 1e-9)
        if motion != "eyeroll":  # the reference's eyeroll starts looking beside the centre
            np.testing.assert_allclose(path[0][0], base, atol=1e-9)
        else:
            np.testing.assert_allclose(path[0][0][:3, 3], base[:3, 3])
    zoom = camera_paths.motion_path("zoom", base, K, frame, 10)
    assert zoom[-1][1][0, 0] == pytest.approx(50 * (1 + 4 * 9 / 10))


def test_camera_path_json_round_trip(tmp_path):
    frame, base, K = frame_and_base()
    path = camera_paths.motion_path("spiral", base, K, frame, 6)
    camera_paths.save_camera_path(path, 64, 64, 24, tmp_path / "p.json")
    document = json.loads((tmp_path / "p.json").read_text())
    assert document["render_height"] == 64 and len(document["camera_path"][0]["camera_to_world"]) == 16
    assert document["camera_path"][0]["fov"] == pytest.approx(math.degrees(2 * math.atan(32 / 50)))
    loaded, height, width = camera_paths.load_camera_path(tmp_path / "p.json")
    for (a, Ka), (b, Kb) in zip(path, loaded):
        np.testing.assert_allclose(a, b, atol=1e-9)
        np.testing.assert_allclose(Ka, Kb)
    with pytest.raises(BadInput, match="not a camera path"):
        (tmp_path / "bad.json").write_text("{}")
        camera_paths.load_camera_path(tmp_path / "bad.json")


def test_frame_stream_round_trip_and_plain_pngs():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in range(5)]
    stream = b"".join([encode_frame(images[0], "input", 0, 2)] +
                      [encode_frame(images[1 + 2 * k + j], name, k, 2) for k in range(2)
                       for j, name in enumerate(["rgb", "segmentation"])])
    got = list(read_stream(io.BytesIO(stream)))
    assert [(m["output"], m["frame"]) for m, _ in got] == [("input", 0), ("rgb", 0), ("segmentation", 0),
                                                          ("rgb", 1), ("segmentation", 1)]
    for (_, image), expected in zip(got, images):
        np.testing.assert_array_equal(image, expected)
    with pytest.raises(BadInput, match="ends inside a PNG"):
        list(read_stream(io.BytesIO(stream[:-10])))
    with pytest.raises(BadInput, match="truncated frame stream: 1 of 2"):
        list(read_stream(io.BytesIO(stream[:len(stream) - len(encode_frame(images[3], "rgb", 1, 2))
                                           - len(encode_frame(images[4], "segmentation", 1, 2))])))


def test_single_output_stream_is_read_by_ffmpeg_image2pipe(tmp_path):
    frames = b"".join(encode_frame(np.full((8, 10, 3), 40 * k, np.uint8), "rgb", k, 4) for k in range(4))
    out = tmp_path / "pipe.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "image2pipe", "-i", "-",
                    "-pix_fmt", "yuv420p", str(out)], input=frames, check=True)
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 4


def decoded(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta["size"], [np.frombuffer(f, np.uint8) for f in reader]


def test_render_pipe_video_decodes_to_n_frames(trained, tmp_path):  # noqa: F811
    video = tmp_path / "orbit.mp4"
    render = subprocess.Popen([sys.executable, "-m", "scenetools.cli.render", str(trained), "--motion",
                               "rotate_and_closeup", "--frames", "9", "--fade", "--outputs", "input,rgb", "-o", "-"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    result = subprocess.run([sys.executable, "-m", "scenetools.cli.video", "-o", str(video)], stdin=render.stdout,
                            capture_output=True, text=True)
    assert render.wait() == 0 and result.returncode == 0, result.stderr
    size, frames = decoded(video)
    assert len(frames) == 9 and size == (512, 272)  # input | render, 16 px scaled up to 256, labels on top
    # The frames show what was rendered: the render panel matches the PNG frames of the same path.
    folder = tmp_path / "frames"
    assert run_command("render", trained, "--motion", "rotate_and_closeup", "--frames", 9, "--fade", "-o",
                       folder).returncode == 0
    for k in (0, 4, 8):
        png = iio.imread(folder / "rgb" / f"{k:05d}.png").repeat(16, 0).repeat(16, 1).astype(float)
        panel = frames[k].reshape(272, 512, 3)[16:, 256:].astype(float)
        assert np.abs(panel - png).mean() < 4, k  # h264 at crf 18
        other = iio.imread(folder / "rgb" / f"{(k + 4) % 9:05d}.png").repeat(16, 0).repeat(16, 1).astype(float)
        assert np.abs(panel - png).mean() < np.abs(panel - other).mean()


def test_a_bare_checkpoint_renders_its_preview_scene_through_the_pipe(trained, tmp_path):  # noqa: F811
    """The design card's pipe from a checkpoint alone: no run folder, no data beside it."""
    bare = tmp_path / "alone.pt"
    bare.write_bytes((trained / "checkpoints" / "latest.pt").read_bytes())
    pipe = subprocess.run(f"{sys.executable} -m scenetools.cli.render {bare} --motion rotate_and_closeup --frames 4"
                          f" | {sys.executable} -m scenetools.cli.video -o {tmp_path / 'card.mp4'}",
                          shell=True, capture_output=True, text=True, cwd=tmp_path)
    assert pipe.returncode == 0, pipe.stderr
    assert "preview scene" in pipe.stderr and len(decoded(tmp_path / "card.mp4")[1]) == 4
    # The preview is the run's first validation scene, so it renders what --data renders.
    a, b = tmp_path / "preview", tmp_path / "data"
    assert run_command("render", bare, "--frames", 3, "-o", a).returncode == 0
    assert run_command("render", bare, "--frames", 3, "-o", b, "--data", trained / "../scenes.h5").returncode == 0
    for k in range(3):
        np.testing.assert_array_equal(iio.imread(a / "rgb" / f"{k:05d}.png"), iio.imread(b / "rgb" / f"{k:05d}.png"))
    other = run_command("render", bare, "--scene", 3, "-o", tmp_path / "x")
    assert other.returncode == 2 and "--data" in other.stderr


def test_render_folder_then_gif_and_odd_sizes(trained, tmp_path):  # noqa: F811
    frames = tmp_path / "frames"
    result = run_command("render", trained, "--motion", "spiral", "--frames", 4, "--size", "15x21", "-o", frames,
                         "--save-path", tmp_path / "path.json")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (frames / "rgb").iterdir()) == [f"{k:05d}.png" for k in range(4)]
    again = run_command("render", trained, "--motion", "path", "--path", tmp_path / "path.json", "-o", tmp_path / "f2")
    assert again.returncode == 0, again.stderr
    for k in range(4):  # the saved path renders the same frames
        a = (frames / "rgb" / f"{k:05d}.png").read_bytes()
        assert a == (tmp_path / "f2" / "rgb" / f"{k:05d}.png").read_bytes()
    mp4 = run_command("video", frames, "-o", tmp_path / "odd.mp4")
    assert mp4.returncode == 0, mp4.stderr
    size, decoded_frames = decoded(tmp_path / "odd.mp4")
    assert len(decoded_frames) == 4 and size[0] % 2 == 0 and size[1] % 2 == 0
    gif = run_command("video", frames, "--gif", "-o", tmp_path / "a.gif")
    assert gif.returncode == 0 and (tmp_path / "a.gif").read_bytes()[:6] == b"GIF89a"


def test_render_in_bf16_draws_the_fp32_frames_within_rounding(trained, tmp_path):  # noqa: F811
    frames = {}
    for precision in ("fp32", "bf16"):
        result = run_command("render", trained, "--motion", "rotate", "--frames", 2, "--precision", precision,
                             "-o", tmp_path / precision)
        assert result.returncode == 0, result.stderr
        frames[precision] = np.stack([iio.imread(tmp_path / precision / "rgb" / f"{k:05d}.png") for k in range(2)])
    difference = np.abs(frames["fp32"].astype(int) - frames["bf16"])
    assert difference.mean() < 2.0 and difference.max() < 40, (difference.mean(), difference.max())
    if bf16_supported(torch.device("cpu")):  # else autocast falls back to fp32
        assert difference.any(), "--precision bf16 rendered exactly the fp32 frames: no autocast"


def test_truncated_stream_and_empty_folder_exit_2(tmp_path):
    stream = b"".join(encode_frame(np.zeros((8, 8, 3), np.uint8), "rgb", k, 3) for k in range(3))
    out = tmp_path / "v.mp4"
    result = subprocess.run([sys.executable, "-m", "scenetools.cli.video", "-", "-o", str(out)],
                            input=stream[:-20], capture_output=True)
    assert_bad_input(type("R", (), {"returncode": result.returncode, "stderr": result.stderr.decode()})(),
                     ["truncated frame stream"], out)
    (tmp_path / "empty").mkdir()
    assert_bad_input(run_command("video", tmp_path / "empty", "-o", out), ["empty", "no frames"], out)


def test_render_rejects_outputs_the_model_lacks(trained, tmp_path):  # noqa: F811
    result = run_command("render", trained, "--outputs", "rgb,segmentation", "--frames", 2, "-o", tmp_path / "f")
    assert_bad_input(result, ["does not predict segmentation"], tmp_path / "f")
    result = run_command("render", trained, "--outputs", "semantic", "--frames", 2, "-o", tmp_path / "f")
    assert_bad_input(result, ["does not predict semantic"], tmp_path / "f")
    result = run_command("render", trained, "--outputs", "rgb,pointcloud", "--frames", 2, "-o", tmp_path / "f")
    assert_bad_input(result, ["does not predict pointcloud (needs depth)"], tmp_path / "f")


def test_render_checks_its_output_before_rendering(trained, tmp_path):  # noqa: F811
    existing = tmp_path / "frames.png"
    existing.write_bytes(b"not a folder")
    result = run_command("render", trained, "--frames", 500, "-o", existing)
    assert result.returncode == 2 and "--overwrite" in result.stderr, result.stderr
    assert existing.read_bytes() == b"not a folder" and not list(tmp_path.glob(".*partial*"))
    assert run_command("render", trained, "--frames", 2, "-o", "/dev/null").returncode == 0


def test_render_streams_only_into_a_pipe(trained, tmp_path):  # noqa: F811
    redirected = tmp_path / "out.txt"
    with open(redirected, "w") as stdout:
        result = subprocess.run([sys.executable, "-m", "scenetools.cli.render", str(trained), "--frames", "2"],
                                stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = redirected.read_bytes()
    assert not written.startswith(b"\x89PNG")
    folder = trained / written.decode().strip().split(str(trained) + "/")[-1]
    assert written.decode().strip().startswith(str(trained / "renders" / "rotate-")) and (folder / "rgb").is_dir()


def test_default_outputs_never_replace_earlier_ones(trained, tmp_path):  # noqa: F811
    frames = tmp_path / "frames"
    assert run_command("render", trained, "--frames", 2, "-o", frames).returncode == 0
    first = run_command("video", frames, cwd=tmp_path)
    second = run_command("video", frames, cwd=tmp_path)
    assert first.returncode == second.returncode == 0
    assert first.stdout.strip() == "video.mp4" and second.stdout.strip() == "video-1.mp4"
    refused = run_command("video", frames, "-o", tmp_path / "video.mp4")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
