"""Per-scene settings (saved in the .blend), shown in the sidebar panels."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from .prefs import PRECISIONS


class NormalCrafterSettings(bpy.types.PropertyGroup):
    model: StringProperty(
        name="Model",
        description="Hub id or local model folder for this scene; empty uses the add-on preferences",
    )
    max_res: IntProperty(
        name="Max Resolution",
        description="Longest side the frames are scaled down to before estimation (0: full size). "
        "Lower is faster and needs less memory",
        default=1024, min=0, soft_min=64, soft_max=2048, step=64,
    )
    window: IntProperty(
        name="Window",
        description="Frames the model sees at once; longer windows are steadier and need more memory",
        default=14, min=1, soft_max=32,
    )
    stride: IntProperty(
        name="Stride",
        description="Frames between window starts; must not exceed the window (window - stride frames overlap)",
        default=10, min=1, soft_max=32,
    )
    decode_chunk: IntProperty(
        name="Decode Chunk",
        description="Frames decoded at once; lower it if the GPU runs out of memory",
        default=7, min=1, soft_max=16,
    )
    precision: EnumProperty(
        name="Precision",
        items=[("PREFS", "Preferences", "Use the add-on preferences' precision"), *PRECISIONS],
        default="PREFS",
    )
    output_dir: StringProperty(
        name="Output Folder",
        description="Folder for this scene's normal passes (one sub-folder per clip); empty uses the preferences",
        subtype="DIR_PATH",
    )
    renormalize: BoolProperty(
        name="Unit Length",
        description="Rescale every normal to length 1 (the model's raw output is close to, not exactly, unit)",
        default=False,
    )
    compile: BoolProperty(
        name="Compile Model",
        description="GPU: compile the model before the first frame (about 3 minutes per resolution in a new "
        "worker, then 1.3-1.5x faster); worth it for thousands of frames at one size",
        default=False,
    )
    world_space: BoolProperty(
        name="World-Space Normals",
        description="Also write world-space normals (EXR pass Nworld) using the scene camera's rotation on each "
        "frame; needs a scene camera that follows the plate (e.g. a solved camera)",
        default=False,
    )
