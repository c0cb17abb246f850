"""Module-level jobs for writer processes in the tests (a spawned process
imports a job's function by module and name)."""
import mmap

import numpy as np


def describe(a: np.ndarray, label: str) -> tuple:
    """What the process got: its sum, shape, dtype, whether it is a view of
    mapped (shared) memory rather than an unpickled array, and ``label``."""
    return float(a.astype(np.float64).sum()), a.shape, a.dtype.str, isinstance(a.base, mmap.mmap), label
