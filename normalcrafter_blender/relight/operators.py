"""Operators: build the relight setup, aim lights from objects, export camera rotations.

All of them run the same way from a button, a script (EXEC) or background mode.
"""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import camera as cam
from . import compat, group, setup, sources
from .errors import RelightError


# Tags the add-on's importer puts on an imported normal pass (normalcrafter_blender/importer.py).
_PASS_OF_STRIP = "normalcrafter_plate"  # on an image strip: the name of its movie strip
_PASS_OF_CLIP = "normalcrafter_clip"  # on an image: the name of its movie clip

_PLATE_SOURCES = (
    ("CLIP", "Movie Clip", "A movie clip in this file"),
    ("STRIP", "Movie Strip", "The file of a movie strip in the sequencer, with the strip's timing"),
    ("FILE", "File", "A video or an image (sequence) on disk"),
)


class NORMALCRAFTER_OT_relight_build(bpy.types.Operator):
    """Build (or update) a compositor setup that relights the plate with the normal pass"""

    bl_idname = "normalcrafter.relight_build"
    bl_label = "Build Relight Setup"
    bl_options = {"REGISTER", "UNDO"}

    normals_path: StringProperty(name="Normal Pass", subtype="FILE_PATH",
                                 description="A normal.<frame>.exr file of the normal pass, or its folder")
    plate_source: EnumProperty(name="Plate", items=_PLATE_SOURCES, default="CLIP")
    plate_clip: StringProperty(name="Clip", description="The movie clip to relight")
    plate_strip: StringProperty(name="Strip", description="The movie strip whose file to relight")
    plate_path: StringProperty(name="File", subtype="FILE_PATH", description="A video or image (sequence) to relight")
    lights: IntProperty(name="Lights", default=1, min=1, max=group.MAX_LIGHTS)
    blend: EnumProperty(name="Blend", items=(("ADD", "Add", "Plate + light"),
                                            ("SCREEN", "Screen", "1 - (1 - plate)(1 - light): softer highlights")))
    rim: BoolProperty(name="Rim Light", default=True, description="Add light on edges that turn away from the camera")
    match_resolution: BoolProperty(name="Match Plate Resolution", default=True,
                                   description="Set the render size to the plate's size")

    def invoke(self, context, event):
        found = setup.find_setup(context.scene)
        if found is not None:
            self._prefill_from_setup(found)
        else:
            self._prefill_from_context(context)
        return context.window_manager.invoke_props_dialog(self, width=460)

    def _prefill_from_setup(self, found: setup.RelightSetup) -> None:
        owned = setup.owned_nodes(found.tree)
        normals, plate = owned.get(setup.NORMALS), owned.get(setup.PLATE)
        if normals is not None and normals.image is not None:
            self.normals_path = normals.image.filepath
        if plate is not None and getattr(plate, "clip", None) is not None:
            self.plate_source, self.plate_clip = "CLIP", plate.clip.name
        elif plate is not None and getattr(plate, "image", None) is not None:
            self.plate_source, self.plate_path = "FILE", plate.image.filepath
        self.lights, self.rim, self.blend = found.lights, found.rim, found.blend

    def _prefill_from_context(self, context) -> None:
        """The clip in the clip editor or the active movie strip, with its imported normal pass."""
        space = context.space_data
        clip = getattr(space, "clip", None) if space is not None and space.type == "CLIP_EDITOR" else None
        if clip is None and len(bpy.data.movieclips) == 1 and space is not None and space.type != "SEQUENCE_EDITOR":
            clip = bpy.data.movieclips[0]
        editor = context.scene.sequence_editor
        strip = editor.active_strip if editor is not None and hasattr(editor, "active_strip") else None
        if clip is not None:
            self.plate_source, self.plate_clip = "CLIP", clip.name
            image = next((im for im in bpy.data.images if im.get(_PASS_OF_CLIP) == clip.name), None)
            if image is not None:
                self.normals_path = image.filepath
        elif strip is not None and strip.type == "MOVIE":
            self.plate_source, self.plate_strip = "STRIP", strip.name
            normals = next((s for s in compat.all_strips(context.scene)
                            if s.type == "IMAGE" and s.get(_PASS_OF_STRIP) == strip.name and len(s.elements)), None)
            if normals is not None:
                self.normals_path = normals.directory + normals.elements[0].filename

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "normals_path")
        layout.prop(self, "plate_source")
        if self.plate_source == "CLIP":
            layout.prop_search(self, "plate_clip", bpy.data, "movieclips")
        elif self.plate_source == "STRIP":
            editor = context.scene.sequence_editor
            if editor is not None:
                layout.prop_search(self, "plate_strip", editor,
                                   "strips_all" if hasattr(editor, "strips_all") else "sequences_all")
            else:
                layout.label(text="The scene has no sequencer strips")
        else:
            layout.prop(self, "plate_path")
        layout.prop(self, "lights")
        layout.prop(self, "blend")
        layout.prop(self, "rim")
        layout.prop(self, "match_resolution")

    def _plate(self, context):
        if self.plate_source == "CLIP":
            clip = bpy.data.movieclips.get(self.plate_clip)
            if clip is None:
                raise RelightError(f"no movie clip named '{self.plate_clip}'" if self.plate_clip
                                   else "choose the movie clip to relight")
            return clip
        if self.plate_source == "STRIP":
            strip = next((s for s in compat.all_strips(context.scene) if s.name == self.plate_strip), None)
            if strip is None:
                raise RelightError(f"no strip named '{self.plate_strip}'" if self.plate_strip
                                   else "choose the movie strip to relight")
            return sources.clip_for_strip(strip)
        if not self.plate_path:
            raise RelightError("choose the plate file to relight")
        return self.plate_path

    def execute(self, context):
        try:
            if not self.normals_path:
                raise RelightError("choose the normal pass (an EXR of it or its folder)")
            built = setup.build_relight(context.scene, self.normals_path, self._plate(context), lights=self.lights,
                                        blend=self.blend, rim=self.rim, match_resolution=self.match_resolution)
        except RelightError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Relight setup ready: adjust the '{built.node.name}' node's inputs")
        return {"FINISHED"}


class NORMALCRAFTER_OT_relight_link_light(bpy.types.Operator):
    """Aim a light of the relight setup from an object's rotation, relative to the scene camera"""

    bl_idname = "normalcrafter.relight_link_light"
    bl_label = "Aim Light from Object"
    bl_options = {"REGISTER", "UNDO"}

    light: IntProperty(name="Light", default=1, min=1, max=group.MAX_LIGHTS)
    object_name: StringProperty(name="Object", description="An Empty or a light; empty: the active object")
    live: BoolProperty(name="Follow", default=True,
                       description="Follow the object and camera every frame (drivers); off: set once")

    def execute(self, context):
        obj = bpy.data.objects.get(self.object_name) if self.object_name else context.active_object
        try:
            if obj is None:
                raise RelightError(f"no object named '{self.object_name}'" if self.object_name
                                   else "select an Empty or a light first")
            setup.link_light(context.scene, self.light, obj, live=self.live)
        except RelightError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class NORMALCRAFTER_OT_relight_unlink_light(bpy.types.Operator):
    """Stop following the object; the light keeps its current direction"""

    bl_idname = "normalcrafter.relight_unlink_light"
    bl_label = "Unlink Light"
    bl_options = {"REGISTER", "UNDO"}

    light: IntProperty(name="Light", default=1, min=1, max=group.MAX_LIGHTS)

    def execute(self, context):
        try:
            setup.unlink_light(context.scene, self.light)
        except RelightError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class NORMALCRAFTER_OT_export_camera_rotations(bpy.types.Operator):
    """Write the scene camera's per-frame rotations as JSON, for world-space normals"""

    bl_idname = "normalcrafter.export_camera_rotations"
    bl_label = "Export Camera Rotations"

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="//camera_rotations.json")
    strip: StringProperty(name="Strip", description="Frames of this movie or image strip, numbered as its input")
    clip: StringProperty(name="Clip", description="Frames of this movie clip, numbered as its video's frames")
    first_input_frame: IntProperty(name="First Input Frame", default=0, min=0,
                                   description="Without a strip or clip: the input frame number of the scene's "
                                               "first frame")

    def execute(self, context):
        scene = context.scene
        try:
            if self.strip:
                strip = next((s for s in compat.all_strips(scene) if s.name == self.strip), None)
                if strip is None:
                    raise RelightError(f"no strip named '{self.strip}'")
                frame_map = cam.strip_frame_map(strip)
            elif self.clip:
                clip = bpy.data.movieclips.get(self.clip)
                if clip is None:
                    raise RelightError(f"no movie clip named '{self.clip}'")
                frame_map = cam.clip_frame_map(clip)
            else:
                offset = self.first_input_frame - scene.frame_start
                frame_map = {t: t + offset for t in range(scene.frame_start, scene.frame_end + 1)}
            path = cam.export_camera_rotations(scene, self.filepath, frame_map)
        except RelightError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {len(frame_map)} camera rotations to {path}")
        return {"FINISHED"}


classes = (
    NORMALCRAFTER_OT_relight_build,
    NORMALCRAFTER_OT_relight_link_light,
    NORMALCRAFTER_OT_relight_unlink_light,
    NORMALCRAFTER_OT_export_camera_rotations,
)
