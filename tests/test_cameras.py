import numpy as np
import pytest

from scenetools import cameras


def test_known_point_projects_to_its_pixel_and_the_pixel_ray_passes_through_it():
    # A camera at (0, -5, 0) looking at the origin along +y, world z up: image right is
    # world +x, image down is world -z.
    c2w = cameras.look_at([0.0, -5.0, 0.0], [0.0, 0.0, 0.0], up=[0.0, 0.0, 1.0])
    np.testing.assert_allclose(c2w[:3, :3], [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    K = cameras.intrinsics(100.0, 100.0, 32.0, 24.0)
    point = np.array([0.5, 0.0, -0.25])  # right of and below the optical axis, depth 5
    uv, z = cameras.project(point, K, c2w)
    np.testing.assert_allclose(uv, [32 + 100 * 0.5 / 5, 24 + 100 * 0.25 / 5], atol=1e-12)  # (42, 29)
    assert z == pytest.approx(5.0)
    # Row 28, column 41 has its centre at (41.5, 28.5): shift the point onto that centre.
    point = np.array([(41.5 - 32) * 5 / 100, 0.0, -(28.5 - 24) * 5 / 100])
    origin, dirs = cameras.camera_rays(K, c2w, 48, 64)
    ray = dirs[28, 41]
    t = np.dot(point - origin, ray)
    np.testing.assert_allclose(origin + t * ray, point, atol=1e-12)
    assert np.linalg.norm(ray) == pytest.approx(1.0)


def test_rays_through_matches_full_image_rays():
    c2w = cameras.look_at([[3.0, 1.0, 2.0], [-2.0, 4.0, 1.0]], [0.0, 0.0, 0.0])
    K = cameras.intrinsics(30.0, 32.0, 8.0, 6.5)
    dirs = cameras.ray_directions(K, c2w, 12, 16)
    assert dirs.shape == (2, 12, 16, 3)
    one = cameras.rays_through(K, c2w[1], np.array([[5.5, 7.5]]))[0]
    np.testing.assert_allclose(one, dirs[1, 7, 5], atol=1e-12)
    # Every pixel-centre ray re-projects onto its own pixel centre.
    uv, z = cameras.project(c2w[1, :3, 3] + 2.0 * dirs[1], K, c2w[1])
    np.testing.assert_allclose(uv, cameras.pixel_centers(12, 16), atol=1e-9)
    assert (z > 0).all()


def test_look_at_is_level_and_rigid():
    c2w = cameras.look_at([4.0, 3.0, 2.0], [0.0, 0.0, 0.0])
    assert cameras.rigid_transform_error(c2w) < 1e-12
    assert c2w[2, 0] == pytest.approx(0.0)  # the image x axis is horizontal: no roll
    assert c2w[2, 1] < 0  # image down points down in a z-up world
    np.testing.assert_allclose(c2w[:3, 2], -np.array([4.0, 3.0, 2.0]) / np.sqrt(29))


def test_opengl_blender_camera_axes_convert_to_opencv():
    # A Blender/OpenGL camera at (0, -5, 0) looking along +y has camera -z = world +y and
    # camera +y (up) = world +z.
    gl = np.eye(4)
    gl[:3, :3] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
    gl[:3, 3] = [0, -5, 0]
    cv = cameras.opengl_to_opencv(gl)
    np.testing.assert_allclose(cv, cameras.look_at([0, -5, 0], [0, 0, 0]), atol=1e-12)
    np.testing.assert_allclose(cameras.opencv_to_opengl(cv), gl, atol=1e-12)
    # The same world point projects identically under both conventions.
    K = cameras.intrinsics(50.0, 50.0, 20.0, 20.0)
    point = np.array([0.3, 1.0, 0.4])
    cam_gl = np.linalg.inv(gl) @ np.append(point, 1.0)  # OpenGL camera frame: looks down -z
    u = 50.0 * cam_gl[0] / -cam_gl[2] + 20.0
    v = -50.0 * cam_gl[1] / -cam_gl[2] + 20.0  # y is up in OpenGL, rows go down
    uv, _ = cameras.project(point, K, cv)
    np.testing.assert_allclose(uv, [u, v], atol=1e-12)


def test_world_rotation_y_up_to_z_up():
    c2w = cameras.look_at([0.0, 2.0, 5.0], [0.0, 0.0, 0.0], up=[0.0, 1.0, 0.0])  # y-up world
    z_up = cameras.rotate_world(c2w, cameras.Y_UP_TO_Z_UP)
    np.testing.assert_allclose(z_up[:3, 3], [0.0, -5.0, 2.0])
    # Still level in the new world: the image x axis has no vertical component.
    assert z_up[2, 0] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(z_up, cameras.look_at([0.0, -5.0, 2.0], [0.0, 0.0, 0.0]), atol=1e-12)


def test_world_to_camera_rt_to_c2w():
    c2w = cameras.look_at([1.0, -3.0, 2.0], [0.5, 0.0, 0.0])
    w2c = np.linalg.inv(c2w)
    np.testing.assert_allclose(cameras.world_to_camera_to_c2w(w2c[:3, :3], w2c[:3, 3]), c2w, atol=1e-12)


def test_z_depth_and_ray_distance():
    K = cameras.intrinsics(10.0, 10.0, 2.0, 2.0)
    z = np.full((4, 4), 3.0)
    distance = cameras.z_depth_to_ray_distance(z, K)
    # Pixel (0, 0) has its centre at (0.5, 0.5): camera ray (-0.15, -0.15, 1) per unit z.
    assert distance[0, 0] == pytest.approx(3.0 * np.sqrt(1 + 2 * 0.15 ** 2))
    np.testing.assert_allclose(cameras.ray_distance_to_z_depth(distance, K), z)


def test_rigid_transform_error_flags_bad_poses():
    good = cameras.look_at([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    scaled = good.copy()
    scaled[:3, :3] *= 1.1
    nan = good.copy()
    nan[0, 3] = np.nan
    errors = cameras.rigid_transform_error(np.stack([good, scaled, nan]))
    assert errors[0] < 1e-12 and errors[1] > 0.1 and np.isnan(errors[2])


def test_look_at_center_and_orbit():
    eyes = np.array([[4.0, 0.0, 2.0], [0.0, 5.0, 3.0], [-3.0, -3.0, 1.0]])
    target = np.array([0.5, -0.2, 0.3])
    c2w = cameras.look_at(eyes, target)
    np.testing.assert_allclose(cameras.look_at_center(c2w), target, atol=1e-9)
    up = cameras.up_direction(c2w)
    assert up @ np.array([0, 0, 1.0]) > 0.9  # level cameras: image up is roughly world up
    np.testing.assert_allclose(cameras.up_direction(c2w, world_up=[0, 0, 2]), [0, 0, 1])
    turned = cameras.orbit(c2w[0], target, [0, 0, 1], np.pi / 2)
    np.testing.assert_allclose(np.linalg.norm(turned[:3, 3] - target), np.linalg.norm(eyes[0] - target))
    assert turned[2, 3] == pytest.approx(eyes[0, 2])
    np.testing.assert_allclose(cameras.look_at_center(np.stack([turned, c2w[1]])), target, atol=1e-9)
