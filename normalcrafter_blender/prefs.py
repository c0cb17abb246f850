"""Add-on preferences: where the worker lives and the defaults every scene starts from."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import ui_text
from .session import SESSION

DEVICES = [
    ("auto", "Auto", "The first CUDA GPU if the worker has one, else the CPU"),
    ("cuda", "CUDA GPU", "The first NVIDIA GPU"),
    ("mps", "Apple GPU", "Metal on Apple silicon"),
    ("cpu", "CPU", "Slow; for checks and short clips"),
]
PRECISIONS = [
    ("auto", "Auto", "fp16 on a GPU, fp32 on the CPU"),
    ("fp16", "fp16", "Half precision: fast, half the memory"),
    ("bf16", "bf16", "bfloat16: as fast as fp16 on recent GPUs"),
    ("fp32", "fp32", "Full precision: slowest, most memory"),
]


def get_prefs(context: bpy.types.Context | None = None) -> NormalCrafterPreferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


class NormalCrafterPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python_path: StringProperty(
        name="Worker Python",
        description="Python interpreter of the environment where the normalcrafter package (with torch) "
        "is installed, e.g. /path/to/venv/bin/python",
        subtype="FILE_PATH",
    )
    model_source: StringProperty(
        name="Model",
        description="Hub id (owner/name) or a local model folder; empty uses the worker's bundled default model",
    )
    device: EnumProperty(name="Device", items=DEVICES, default="auto")
    precision: EnumProperty(name="Precision", items=PRECISIONS, default="auto")
    output_dir: StringProperty(
        name="Output Folder",
        description="Where normal passes go, one sub-folder per clip; // is the .blend file's folder. "
        "Unsaved files use the add-on's user folder instead",
        subtype="DIR_PATH",
        default="//normals/",
    )
    keep_warm: BoolProperty(
        name="Keep Worker Warm",
        description="Keep the worker and its loaded model running between jobs (uses memory while idle); "
        "off stops it after each batch",
        default=True,
    )
    download_dir: StringProperty(
        name="Download Into",
        description="Folder for downloaded weights; empty uses the standard hub cache",
        subtype="DIR_PATH",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        row = col.row(align=True)
        row.prop(self, "python_path")
        row.operator("normalcrafter.check_worker", text="Check", icon="CHECKMARK")
        if SESSION.check.lines:
            ui_text.draw_lines(col.box(), SESSION.check.lines, SESSION.check.icon)
        col.separator()
        col.prop(self, "model_source")
        if bpy.app.online_access:
            row = col.row(align=True)
            row.prop(self, "download_dir")
            row.operator("normalcrafter.download_model", text="Download Model", icon="IMPORT")
            if SESSION.download.lines:
                ui_text.draw_lines(col.box(), SESSION.download.lines, SESSION.download.icon)
        else:
            col.label(text="Turn on Allow Online Access (System preferences) to download weights", icon="INFO")
        col.separator()
        col.prop(self, "device")
        col.prop(self, "precision")
        col.prop(self, "output_dir")
        col.prop(self, "keep_warm")
