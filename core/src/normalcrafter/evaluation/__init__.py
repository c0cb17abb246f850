"""Evaluation of predicted normals: DSINE-protocol accuracy, motion-compensated
flicker, benchmark loaders, Blender-rendered ground truth and pictures.

Python API::

    from normalcrafter.evaluation import open_normal_clips, open_benchmark, evaluate
    preds, _ = open_normal_clips("out/clip", convention="opengl")
    gts = open_benchmark("blender", "gt/clip")
    report = evaluate(preds, gts)          # dict, as written to metrics.json
    report["overall"]["mean"], report["overall"]["flicker"]

Ground truth with Blender: :func:`normalcrafter.evaluation.blender_gt.render_clip`.
Only light modules are imported here; bpy is used in a subprocess only.
"""
from __future__ import annotations

from .clips import Clip
from .evaluate import InputFrames, PlotOptions, evaluate
from .loaders import BENCHMARKS, open_benchmark
from .metrics import ErrorStats, angular_error
from .normal_files import open_normal_clips, read_normal_file

__all__ = [
    "BENCHMARKS",
    "Clip",
    "ErrorStats",
    "InputFrames",
    "PlotOptions",
    "angular_error",
    "evaluate",
    "open_benchmark",
    "open_normal_clips",
    "read_normal_file",
]
