"""Camera-space normals to world space with a per-frame camera rotation.

The rotations come from a JSON file the Blender extension writes (or any tool
that knows the camera)::

    {"convention": "opengl",
     "frames": {"<input frame number>": [[r00, r01, r02], [r10, ...], [r20, ...]]}}

Each matrix is the camera-to-world rotation (Blender's
``camera.matrix_world.to_3x3()``): its columns are the camera's axes in world
space, expressed for camera space in ``convention``. Matrices are returned for
OpenGL camera space (+X right, +Y up, +Z toward the viewer), the convention
the pipeline's normals are in.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from normalcrafter import convention as conv
from normalcrafter.errors import INPUT_INVALID, INPUT_UNREADABLE, NormalCrafterError

# A rotation matrix read from JSON has ~7 significant digits per element; a
# shear or a mirror is off by far more than this.
_ORTHO_TOLERANCE = 1e-3


def load_camera_rotations(path: str | Path) -> dict[int, np.ndarray]:
    """Read camera-to-world rotations, keyed by input frame number (OpenGL camera space)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NormalCrafterError(
            INPUT_UNREADABLE, f"cannot read camera rotations {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NormalCrafterError(INPUT_INVALID, f"camera rotations {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), dict):
        raise NormalCrafterError(INPUT_INVALID, f"camera rotations {path} has no 'frames' object")
    try:
        to_rub = conv.to_matrix(str(data.get("convention", "opengl")))
    except ValueError as exc:
        raise NormalCrafterError(INPUT_INVALID, f"camera rotations {path}: {exc}") from None
    if not data["frames"]:
        raise NormalCrafterError(INPUT_INVALID, f"camera rotations {path} lists no frames")
    rotations = {}
    for key, value in data["frames"].items():
        frame = _frame_number(key, path)
        rotation = _rotation(value, f"camera rotations {path}, frame {key}")
        # R maps the file's camera space to world; RUB vectors enter it through
        # the inverse of to_rub (a rotation, so its transpose).
        rotations[frame] = rotation @ to_rub.T.astype(np.float64)
    return rotations


def rotation_for_frame(rotations: dict[int, np.ndarray], frame: int) -> np.ndarray:
    """The rotation of one input frame; a clear error when the file lacks it."""
    try:
        return rotations[frame]
    except KeyError:
        raise NormalCrafterError(
            INPUT_INVALID,
            f"camera rotations have no entry for input frame {frame} "
            f"(they cover {min(rotations)}..{max(rotations)})",
        ) from None


def to_world(normals_cam_opengl: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate (H, W, 3) OpenGL camera-space normals into world space."""
    normals = np.asarray(normals_cam_opengl)
    if normals.ndim != 3 or normals.shape[-1] != 3:
        raise NormalCrafterError(INPUT_INVALID, f"normals must be (H, W, 3), got {normals.shape}")
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape != (3, 3):
        raise NormalCrafterError(INPUT_INVALID, f"rotation must be 3x3, got {rotation.shape}")
    dtype = normals.dtype if np.issubdtype(normals.dtype, np.floating) else np.float32
    return (normals.astype(np.float64) @ rotation.T).astype(dtype)


def _frame_number(key: str, path: Path) -> int:
    try:
        return int(key)
    except ValueError:
        raise NormalCrafterError(
            INPUT_INVALID, f"camera rotations {path}: frame key {key!r} is not an integer") from None


def _rotation(value: object, where: str) -> np.ndarray:
    try:
        matrix = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NormalCrafterError(INPUT_INVALID, f"{where}: not a 3x3 matrix of numbers") from None
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
        raise NormalCrafterError(INPUT_INVALID, f"{where}: not a 3x3 matrix of finite numbers")
    # matrix_world carries the camera's scale; only its direction matters.
    lengths = np.linalg.norm(matrix, axis=0)
    if np.any(lengths < 1e-9):
        raise NormalCrafterError(INPUT_INVALID, f"{where}: a column is zero")
    matrix = matrix / lengths
    error = float(np.abs(matrix.T @ matrix - np.eye(3)).max())
    if error > _ORTHO_TOLERANCE or np.linalg.det(matrix) < 0:
        raise NormalCrafterError(INPUT_INVALID, f"{where}: not a rotation (sheared or mirrored camera)")
    return matrix
