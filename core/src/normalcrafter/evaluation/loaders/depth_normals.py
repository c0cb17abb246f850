"""Surface normals from a depth map, for benchmarks that ship depth but no normals."""
from __future__ import annotations

import numpy as np

from ... import convention as conv

EDGE_REL = 0.05  # neighbours whose depth differs by more than this fraction are across an edge


def normals_from_depth(depth: np.ndarray, k: np.ndarray, max_depth: float = np.inf) -> np.ndarray:
    """(H, W, 3) float32 unit normals in the OpenGL convention, facing the
    camera, zero where undefined.

    ``depth`` is the z distance along the optical axis (0 or non-finite where
    unknown) and ``k`` the 3x3 pinhole intrinsics. Each pixel is back-projected
    (OpenCV camera axes); the tangents along x and y take, of the two one-sided
    differences, the one to the neighbour nearer in depth, so a tangent never
    straddles an occluding edge. Pixels whose both neighbours along an axis lie
    across an edge (relative depth jump over EDGE_REL) are undefined.
    """
    z = np.where(np.isfinite(depth) & (depth > 0) & (depth < max_depth), depth, 0.0).astype(np.float64)
    h, w = z.shape
    j, i = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([(j - k[0, 2]) / k[0, 0] * z, (i - k[1, 2]) / k[1, 1] * z, z], axis=-1)
    valid = z > 0

    def tangent(axis: int) -> tuple[np.ndarray, np.ndarray]:
        fwd = np.roll(pts, -1, axis=axis) - pts
        bwd = pts - np.roll(pts, 1, axis=axis)
        zf, zb = np.roll(z, -1, axis=axis), np.roll(z, 1, axis=axis)
        idx = np.arange(z.shape[axis])
        shape = [1, 1]
        shape[axis] = -1
        last = (idx == z.shape[axis] - 1).reshape(shape)
        first = (idx == 0).reshape(shape)
        ok_f = (zf > 0) & ~last & (np.abs(zf - z) <= EDGE_REL * z)
        ok_b = (zb > 0) & ~first & (np.abs(zb - z) <= EDGE_REL * z)
        use_f = ok_f & (~ok_b | (np.abs(zf - z) <= np.abs(zb - z)))
        return np.where(use_f[..., None], fwd, bwd), ok_f | ok_b

    tx, okx = tangent(1)
    ty, oky = tangent(0)
    n = np.cross(tx, ty)
    length = np.linalg.norm(n, axis=-1)
    ok = valid & okx & oky & (length > 0)
    n = np.divide(n, length[..., None], out=np.zeros_like(n), where=ok[..., None])
    # Face the camera: the ray to the point and the normal must point against each other.
    n = np.where((np.sum(n * pts, axis=-1) > 0)[..., None], -n, n)
    n[~ok] = 0.0
    return conv.convert(n.astype(np.float32), "opencv", "opengl")
