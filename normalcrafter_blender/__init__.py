"""NormalCrafter for Blender: temporally stable normal passes for movie
strips and movie clips.

The estimation runs in a separate worker process (its own Python with torch,
set in the preferences) driven through ``worker_client``, a standard-library
module the build script copies in from the normalcrafter package. Blender's
process never imports torch, installs packages or opens a network connection.
"""
from __future__ import annotations

import atexit
import os

import bpy
from bpy.props import PointerProperty

from . import operators, prefs, props, ui
from .session import SESSION

# The relighting tools are a separate sub-package; the add-on works without it.
if os.path.isfile(os.path.join(os.path.dirname(__file__), "relight", "__init__.py")):
    from . import relight
else:
    relight = None


def _classes() -> tuple[type, ...]:
    return (
        prefs.NormalCrafterPreferences,
        props.NormalCrafterSettings,
        *operators.classes,
        *ui.panel_classes(relight.draw_panel if relight else None),
        *(relight.classes if relight else ()),
    )


_registered: tuple[type, ...] = ()


@bpy.app.handlers.persistent
def _on_load_pre(*_args) -> None:
    # Jobs belong to the file they were started in: never import into another.
    SESSION.abandon("a new file was loaded")


def register() -> None:
    global _registered
    _registered = _classes()
    for cls in _registered:
        bpy.utils.register_class(cls)
    bpy.types.Scene.normalcrafter = PointerProperty(type=props.NormalCrafterSettings)
    bpy.app.handlers.load_pre.append(_on_load_pre)
    atexit.register(SESSION.shutdown)


def unregister() -> None:
    atexit.unregister(SESSION.shutdown)
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    SESSION.shutdown()
    del bpy.types.Scene.normalcrafter
    for cls in reversed(_registered):
        bpy.utils.unregister_class(cls)
