"""Relighting: a compositor setup that adds lights to a plate using its NormalCrafter normal pass.

The add-on registers ``classes`` and calls ``draw_panel`` from its sidebar
panel. Scripts can call ``build_relight``, ``link_light`` and
``export_camera_rotations`` directly (the operators wrap them).
"""
from .camera import camera_rotations, clip_frame_map, direction_in_camera, export_camera_rotations, strip_frame_map
from .errors import RelightError
from .operators import classes
from .panel import draw_panel
from .setup import RelightSetup, build_relight, find_setup, link_light, unlink_light

__all__ = [
    "RelightError", "RelightSetup", "build_relight", "camera_rotations", "classes", "clip_frame_map",
    "direction_in_camera", "draw_panel", "export_camera_rotations", "find_setup", "link_light", "strip_frame_map",
    "unlink_light",
]
