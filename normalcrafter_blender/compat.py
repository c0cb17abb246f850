"""The sequencer API under its 4.2 LTS and its 5.0 names.

4.2 calls strips "sequences" (``sequence_editor.sequences``, ``MovieSequence``),
5.0 only "strips" (``sequence_editor.strips``, ``MovieStrip``), 4.4 has both.
Everything here goes by attribute presence, never by version number, so a
release in between works whichever names it has.
"""
from __future__ import annotations

import bpy

# Checked by rendering: the 4.2.0 sequencer reads no pass of a multilayer EXR
# (it draws garbage or crashes on an uninitialised size); 4.4.0 and 5.0.1 draw
# its RGB/Combined pass.
SEQUENCER_SHOWS_MULTILAYER_EXR = bpy.app.version >= (4, 4, 0)


def top_strips(scene: bpy.types.Scene):
    """The scene's top-level strip collection (the one ``new_image`` lives on), or None."""
    ed = scene.sequence_editor
    if ed is None:
        return None
    return ed.strips if hasattr(ed, "strips") else ed.sequences


def all_strips(scene: bpy.types.Scene) -> list:
    """Every strip of the scene, inside meta strips too."""
    ed = scene.sequence_editor
    if ed is None:
        return []
    return list(ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all)


def container_of(scene: bpy.types.Scene, strip):
    """The collection that holds ``strip``: its meta strip's, or the top level."""
    meta = strip.parent_meta()
    if meta is None:
        return top_strips(scene)
    return meta.strips if hasattr(meta, "strips") else meta.sequences


def is_movie_strip(strip) -> bool:
    return strip.type == "MOVIE"


def selected_movie_strips(scene: bpy.types.Scene) -> list:
    """Selected movie strips in timeline order (then channel), so batch jobs
    and their reports come in the order the user sees them."""
    strips = [s for s in all_strips(scene) if is_movie_strip(s) and s.select]
    return sorted(strips, key=lambda s: (s.frame_final_start, s.channel, s.name))


def movie_strips(scene: bpy.types.Scene) -> list:
    strips = [s for s in all_strips(scene) if is_movie_strip(s)]
    return sorted(strips, key=lambda s: (s.frame_final_start, s.channel, s.name))
