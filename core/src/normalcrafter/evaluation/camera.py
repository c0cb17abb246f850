"""Pinhole camera helpers shared by the scene recipes and the flow computation.

Cameras follow Blender: the camera-to-world matrix has the camera's +X
(right), +Y (up) and +Z (back, away from where it looks) as its columns, i.e.
camera space is the OpenGL convention "RUB". Pixel (row i, column j) has its
centre at image coordinates (j + 0.5, i + 0.5), rows counted from the top.
"""
from __future__ import annotations

import numpy as np


def look_at(eye: np.ndarray, target: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """4x4 camera-to-world matrix of a camera at ``eye`` looking at ``target``
    with world +Z up (rolled by ``roll_deg`` about the view axis)."""
    eye = np.asarray(eye, dtype=np.float64)
    back = eye - np.asarray(target, dtype=np.float64)
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    if np.linalg.norm(right) < 1e-9:  # looking straight up or down: any right will do
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    r = np.deg2rad(roll_deg)
    right, up = np.cos(r) * right + np.sin(r) * up, -np.sin(r) * right + np.cos(r) * up
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, back, eye
    return m


def intrinsics(width: int, height: int, lens_mm: float, sensor_mm: float) -> dict[str, float]:
    """Focal lengths and principal point in pixels of a Blender camera with
    sensor fit AUTO (the sensor size spans the longer image side)."""
    f = lens_mm / sensor_mm * max(width, height)
    return {"fx": f, "fy": f, "cx": width / 2.0, "cy": height / 2.0}


def project(points_world: np.ndarray, cam_to_world: np.ndarray, k: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates (..., 2) of world points and their depth in front of
    the camera (..., positive when visible)."""
    cam = np.asarray(cam_to_world, dtype=np.float64)
    p = (points_world - cam[:3, 3]) @ cam[:3, :3]  # world -> camera: R^T (p - t)
    depth = -p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = k["cx"] + k["fx"] * p[..., 0] / depth
        v = k["cy"] - k["fy"] * p[..., 1] / depth
    return np.stack([u, v], axis=-1), depth


def reprojection_flow(position: np.ndarray, valid: np.ndarray, next_position: np.ndarray, next_valid: np.ndarray,
                      next_cam_to_world: np.ndarray, k: dict[str, float]) -> np.ndarray:
    """Exact forward optical flow of a static scene from frame t to t+1.

    ``position``/``next_position`` are the world positions seen at each pixel
    (Blender's Position pass). A pixel's flow is where its surface point lands
    in frame t+1 minus its own centre. It is NaN where nothing was hit, the
    point leaves the picture, or something nearer hides it in frame t+1 (its
    depth exceeds the depths rendered around its landing spot by over 1%).
    """
    h, w = valid.shape
    uv, depth = project(position, next_cam_to_world, k)
    j, i = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    flow = np.stack([uv[..., 0] - j, uv[..., 1] - i], axis=-1)
    inside = valid & (depth > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)

    _, next_depth = project(next_position, next_cam_to_world, k)
    next_depth = np.where(next_valid, next_depth, -np.inf)
    # The four pixel centres around the landing spot bound the surface's depth there.
    u0 = np.clip(np.floor(np.nan_to_num(uv[..., 0]) - 0.5).astype(int), 0, w - 1)
    v0 = np.clip(np.floor(np.nan_to_num(uv[..., 1]) - 0.5).astype(int), 0, h - 1)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    around = np.max([next_depth[v0, u0], next_depth[v0, u1], next_depth[v1, u0], next_depth[v1, u1]], axis=0)
    visible = inside & np.isfinite(around) & (depth <= around * 1.01 + 1e-6)
    flow[~visible] = np.nan
    return flow.astype(np.float32)
