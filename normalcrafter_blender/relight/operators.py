"""Operators: build the relight setup, aim lights from objects, export camera rotations.

All of them run the same way from a button, a script (EXEC) or background mode.
"""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import camera as cam
from . import compat, group, setup
from .errors import RelightError


class NORMALCRAFTER_OT_relight_build(bpy.types.Operator):
    """Build (or update) a compositor setup that relights the plate with the normal pass"""

    bl_idname = "normalcrafter.relight_build"
    bl_label = "Build Relight Setup"
    bl_options = {"REGISTER", "UNDO"}

    normals_path: StringProperty(name="Normal Pass", subtype="FILE_PATH",
                                 description="A normal.<frame>.exr file of the normal pass, or its folder")
    plate_clip: StringProperty(name="Plate Clip", description="A movie clip in this file to relight")
    plate_path: StringProperty(name="Plate File", subtype="FILE_PATH",
                               description="A video or image (sequence) to relight, used when no clip is chosen")
    lights: IntProperty(name="Lights", default=1, min=1, max=group.MAX_LIGHTS)
    blend: EnumProperty(name="Blend", items=(("ADD", "Add", "Plate + light"),
                                            ("SCREEN", "Screen", "1 - (1 - plate)(1 - light): softer highlights")))
    rim: BoolProperty(name="Rim Light", default=True, description="Add light on edges that turn away from the camera")
    match_resolution: BoolProperty(name="Match Plate Resolution", default=True,
                                   description="Set the render size to the plate's size")

    def invoke(self, context, event):
        found = setup.find_setup(context.scene)
        if found is not None:
            owned = setup.owned_nodes(found.tree)
            normals = owned.get(setup.NORMALS)
            plate = owned.get(setup.PLATE)
            if normals is not None and normals.image is not None and not self.normals_path:
                self.normals_path = normals.image.filepath
            if plate is not None and getattr(plate, "clip", None) is not None and not self.plate_clip:
                self.plate_clip = plate.clip.name
            elif plate is not None and getattr(plate, "image", None) is not None and not self.plate_path:
                self.plate_path = plate.image.filepath
            self.lights, self.rim, self.blend = found.lights, found.rim, found.blend
        elif not self.plate_clip and not self.plate_path and len(bpy.data.movieclips) == 1:
            self.plate_clip = bpy.data.movieclips[0].name
        return context.window_manager.invoke_props_dialog(self, width=460)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "normals_path")
        layout.prop_search(self, "plate_clip", bpy.data, "movieclips")
        if not self.plate_clip:
            layout.prop(self, "plate_path")
        layout.prop(self, "lights")
        layout.prop(self, "blend")
        layout.prop(self, "rim")
        layout.prop(self, "match_resolution")

    def execute(self, context):
        try:
            if self.plate_clip:
                plate = bpy.data.movieclips.get(self.plate_clip)
                if plate is None:
                    raise RelightError(f"no movie clip named '{self.plate_clip}'")
            elif self.plate_path:
                plate = self.plate_path
            else:
                raise RelightError("choose a plate: a movie clip or a file")
            if not self.normals_path:
                raise RelightError("choose the normal pass (an EXR of it or its folder)")
            built = setup.build_relight(context.scene, self.normals_path, plate, lights=self.lights,
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
    strip: StringProperty(name="Strip", description="Frames of this strip, numbered as the strip's input; "
                                                    "empty: the scene's frame range, numbered from First Input Frame")
    first_input_frame: IntProperty(name="First Input Frame", default=0, min=0,
                                   description="Input frame number of the scene's first frame")

    def execute(self, context):
        scene = context.scene
        try:
            if self.strip:
                strip = next((s for s in compat.all_strips(scene) if s.name == self.strip), None)
                if strip is None:
                    raise RelightError(f"no strip named '{self.strip}'")
                frame_map = cam.strip_frame_map(strip)
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
