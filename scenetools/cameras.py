"""Cameras and rays: the one camera convention of scenetools.

Conventions (see ``formats/scene-h5.md``):

* A camera pose is a 4x4 **camera-to-world** matrix in **OpenCV axes**: the camera's
  x axis points right in the image, y points down, z points forward (into the scene).
  Its columns are the camera axes expressed in world coordinates; its last column is
  the camera centre.
* Intrinsics ``K`` are 3x3 and in **pixels**. Image coordinates are continuous, with
  (0, 0) at the top-left corner of the top-left pixel, so the pixel in row ``i`` and
  column ``j`` has its centre at ``(u, v) = (j + 0.5, i + 0.5)``. A camera-frame point
  ``(x, y, z)`` projects to ``u = fx * x / z + cx``, ``v = fy * y / z + cy``.
* Depth is the **distance along the ray** from the camera centre to the surface, so
  ``point = origin + depth * unit_direction``.

All functions take numpy arrays, broadcast over leading batch dimensions and compute in
float64.
"""
from __future__ import annotations

import numpy as np

#: Flips camera y and z: OpenGL/Blender camera axes (x right, y up, looking down -z)
#: to OpenCV axes and back. The matrix is its own inverse.
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def pixel_centers(height: int, width: int) -> np.ndarray:
    """[H, W, 2] continuous (u, v) image coordinates of every pixel centre."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return np.stack([u, v], axis=-1)


def ray_directions(K: np.ndarray, c2w: np.ndarray, height: int, width: int) -> np.ndarray:
    """Unit world-frame directions of the rays through every pixel centre.

    K: [..., 3, 3], c2w: [..., 4, 4] -> [..., H, W, 3].
    """
    uv = pixel_centers(height, width).reshape(-1, 2)
    dirs = rays_through(K, c2w, uv)
    return dirs.reshape(dirs.shape[:-2] + (height, width, 3))


def rays_through(K: np.ndarray, c2w: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Unit world-frame directions of the rays through image points ``uv``.

    K: [..., 3, 3], c2w: [..., 4, 4], uv: [..., P, 2] continuous pixel coordinates
    -> [..., P, 3].
    """
    K, c2w, uv = (np.asarray(x, np.float64) for x in (K, c2w, uv))
    uv1 = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1)
    # R K^-1 [u, v, 1] for every point, as one matmul per camera
    world = uv1 @ np.swapaxes(c2w[..., :3, :3] @ np.linalg.inv(K), -1, -2)
    return world / np.linalg.norm(world, axis=-1, keepdims=True)


def camera_rays(K: np.ndarray, c2w: np.ndarray, height: int, width: int):
    """Origins [..., 3] (the camera centres) and unit directions [..., H, W, 3]."""
    return np.asarray(c2w, np.float64)[..., :3, 3], ray_directions(K, c2w, height, width)


def project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray):
    """Project world points [..., 3] into a camera.

    Returns (uv [..., 2] continuous pixel coordinates, z [...] camera-frame depth).
    Points behind the camera (z <= 0) get meaningless uv; check z.
    """
    K, c2w = np.asarray(K, np.float64), np.asarray(c2w, np.float64)
    w2c = np.linalg.inv(c2w)
    cam = np.einsum("...ij,...j->...i", w2c[..., :3, :3], points) + w2c[..., :3, 3]
    pix = np.einsum("...ij,...j->...i", K, cam)
    return pix[..., :2] / pix[..., 2:3], cam[..., 2]


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world [..., 4, 4] (OpenCV axes) of a camera at ``eye`` looking at ``target``.

    The image's up direction is as close to ``up`` as the viewing direction allows, so a
    level camera has no roll. ``eye`` and ``target`` broadcast against each other.
    """
    eye, target = np.broadcast_arrays(np.asarray(eye, np.float64), np.asarray(target, np.float64))
    forward = _unit(target - eye)
    right = _unit(np.cross(forward, np.broadcast_to(np.asarray(up, np.float64), forward.shape)))
    down = np.cross(forward, right)
    c2w = np.zeros(eye.shape[:-1] + (4, 4))
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, down, forward, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world with OpenGL/Blender camera axes (y up, looking down -z) -> OpenCV axes."""
    return np.asarray(c2w, np.float64) @ OPENGL_TO_OPENCV


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Inverse of :func:`opengl_to_opencv`."""
    return np.asarray(c2w, np.float64) @ OPENGL_TO_OPENCV


def rotate_world(c2w: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Re-express camera-to-world poses in a rotated world frame.

    ``rotation`` [3, 3] maps old world coordinates to new ones (x_new = R x_old), e.g.
    ``Y_UP_TO_Z_UP`` for datasets whose world is y-up.
    """
    R = np.eye(4)
    R[:3, :3] = rotation
    return R @ np.asarray(c2w, np.float64)


#: World rotation taking a y-up world (y up, z towards the viewer) to a z-up one.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def world_to_camera_to_c2w(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """c2w [..., 4, 4] from a world-to-camera rotation R [..., 3, 3] and translation t [..., 3]
    (x_cam = R x_world + t)."""
    R, t = np.asarray(R, np.float64), np.asarray(t, np.float64)
    c2w = np.zeros(R.shape[:-2] + (4, 4))
    c2w[..., :3, :3] = np.swapaxes(R, -1, -2)
    c2w[..., :3, 3] = -np.einsum("...ji,...j->...i", R, t)
    c2w[..., 3, 3] = 1.0
    return c2w


def resized_intrinsics(K: np.ndarray, size: tuple, new_size: tuple) -> np.ndarray:
    """[..., 3, 3] intrinsics of an image of ``size`` (height, width) resized to ``new_size``:
    pixel edges map to pixel edges, so each axis scales by the ratio of its sizes."""
    (H, W), (h, w) = size, new_size
    return np.diag([w / W, h / H, 1.0]) @ K


def focal_from_fov(fov_radians: float, size_pixels: int) -> float:
    """Focal length in pixels of a field of view spanning ``size_pixels``."""
    return 0.5 * size_pixels / np.tan(0.5 * fov_radians)


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 pixel intrinsics."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def z_depth_to_ray_distance(z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-z depth maps [..., H, W] to distance along each pixel-centre ray."""
    return np.asarray(z, np.float64) * _ray_length_per_unit_z(K, *np.shape(z)[-2:])


def ray_distance_to_z_depth(distance: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Inverse of :func:`z_depth_to_ray_distance`."""
    return np.asarray(distance, np.float64) / _ray_length_per_unit_z(K, *np.shape(distance)[-2:])


def _ray_length_per_unit_z(K, height, width):
    """[..., H, W] length of the camera-frame ray through each pixel centre with z = 1."""
    uv1 = np.concatenate([pixel_centers(height, width), np.ones((height, width, 1))], -1).reshape(-1, 3)
    cam = uv1 @ np.swapaxes(np.linalg.inv(np.asarray(K, np.float64)), -1, -2)
    return np.linalg.norm(cam, axis=-1).reshape(cam.shape[:-2] + (height, width))


def rigid_transform_error(c2w: np.ndarray) -> np.ndarray:
    """[...] how far each 4x4 is from a proper rigid transform.

    The max of |R^T R - I|, |det R - 1| and |bottom row - (0, 0, 0, 1)|; NaN if any entry is
    not finite.
    """
    c2w = np.asarray(c2w, np.float64)
    R = c2w[..., :3, :3]
    ortho = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(axis=(-1, -2))
    det = np.abs(np.linalg.det(R) - 1.0)
    bottom = np.abs(c2w[..., 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=-1)
    error = np.maximum(np.maximum(ortho, det), bottom)
    return np.where(np.isfinite(c2w).all(axis=(-1, -2)), error, np.nan)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- scene geometry
# Orbits and other camera paths take their centre, up axis and radius from a scene's cameras.

def up_direction(c2w: np.ndarray, world_up=None) -> np.ndarray:
    """The scene's up direction: ``world_up`` when the file has one, else the mean of the
    cameras' image-up directions (-y in OpenCV axes)."""
    if world_up is not None:
        return _unit(np.asarray(world_up, np.float64))
    return _unit(-np.asarray(c2w, np.float64)[..., :3, 1].reshape(-1, 3).mean(0))


def look_at_center(c2w: np.ndarray) -> np.ndarray:
    """The point closest (least squares) to every camera's optical axis: where the cameras
    look. Falls back to the mean camera position when the axes are (nearly) parallel."""
    c2w = np.asarray(c2w, np.float64).reshape(-1, 4, 4)
    origins, axes = c2w[:, :3, 3], c2w[:, :3, 2]
    projector = np.eye(3) - axes[:, :, None] * axes[:, None, :]  # removes the along-axis part
    A, b = projector.sum(0), np.einsum("nij,nj->i", projector, origins)
    if np.linalg.cond(A) > 1e6:
        return origins.mean(0)
    return np.linalg.solve(A, b)


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about the unit ``axis`` (right-handed)."""
    x, y, z = _unit(np.asarray(axis, np.float64))
    K = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def orbit(c2w: np.ndarray, center: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Camera-to-world [..., 4, 4] rotated by ``angle`` about the line through ``center``
    along ``axis``: the camera keeps its distance and height and turns with the scene."""
    R = np.eye(4)
    R[:3, :3] = rotation_about(axis, angle)
    R[:3, 3] = center - R[:3, :3] @ center
    return R @ np.asarray(c2w, np.float64)
