"""Camera-space axis conventions, kept as data and converted explicitly.

A convention is a 3-letter code naming where +X, +Y and +Z point, from the
camera: R/L (right/left), U/D (up/down), B/F (back toward the viewer / forward
into the scene). Blender and OpenGL camera space is "RUB" (a surface facing
the camera has normal (0, 0, +1)); OpenCV is "RDF".
"""
from __future__ import annotations

import numpy as np

ALIASES = {"opengl": "RUB", "blender": "RUB", "opencv": "RDF"}

# Unit vectors of each direction letter in the reference frame RUB.
_DIRECTIONS = {
    "R": (1, 0, 0), "L": (-1, 0, 0),
    "U": (0, 1, 0), "D": (0, -1, 0),
    "B": (0, 0, 1), "F": (0, 0, -1),
}


def canonical(name: str) -> str:
    """The 3-letter code of a convention name or code; ValueError if invalid."""
    code = ALIASES.get(name.lower(), name.upper())
    if len(code) != 3 or any(c not in _DIRECTIONS for c in code):
        raise ValueError(f"unknown axis convention {name!r}: use opengl, opencv or a code like RUB")
    axes = sorted("RLUDBF".index(c) // 2 for c in code)
    if axes != [0, 1, 2]:
        raise ValueError(f"axis convention {name!r} names one axis twice")
    return code


def to_matrix(name: str) -> np.ndarray:
    """3x3 matrix taking vectors in convention ``name`` to RUB."""
    return np.array([_DIRECTIONS[c] for c in canonical(name)], dtype=np.float32).T


def convert(normals: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Re-express (..., 3) vectors given in ``src`` in ``dst``."""
    if canonical(src) == canonical(dst):
        return normals
    m = to_matrix(dst).T @ to_matrix(src)  # rotation matrices: inverse = transpose
    return (normals @ m.T).astype(normals.dtype, copy=False)
