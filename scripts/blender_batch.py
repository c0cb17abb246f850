"""Render normal passes for the movie strips of a .blend, headless.

    blender -b shot.blend -P scripts/blender_batch.py -- [options]
    python scripts/blender_batch.py shot.blend -- [options]      (PyPI bpy module)

Needs the NormalCrafter extension installed in that Blender (it is enabled
if it is not); its preferences give the worker interpreter and the defaults,
options below override them for this run. Every movie strip of the scene is processed, or
only those named with --strips; each gets its EXR sequence and an image strip
above it, as the "Estimate Normals" button does.

Exit status: 0 when every strip succeeded, 1 when a job failed, 2 for a usage
problem (bad option, unknown strip, no movie strips, extension missing).
"""
from __future__ import annotations

import argparse
import os
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(arguments before ``--``, options after it)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def parse_options(options: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="blender -b FILE.blend -P blender_batch.py --",
                                description="Estimate normal passes for movie strips.")
    p.add_argument("--strips", nargs="+", metavar="NAME", help="movie strips to process (default: all)")
    p.add_argument("--scene", help="scene to use (default: the file's active scene)")
    p.add_argument("--python", help="worker Python interpreter (default: the add-on preferences)")
    p.add_argument("--model", help="hub id or model folder (default: scene setting, then preferences)")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], help="default: the preferences")
    p.add_argument("--precision", choices=["auto", "fp16", "bf16", "fp32"], help="default: scene, then preferences")
    p.add_argument("--max-res", type=int, help="longest side in pixels, 0 for full size")
    p.add_argument("--window", type=int)
    p.add_argument("--stride", type=int)
    p.add_argument("--decode-chunk", type=int)
    p.add_argument("--output-dir", help="folder for the passes, one sub-folder per strip (// = the .blend's folder)")
    p.add_argument("--save", action="store_true", help="save the .blend with the new image strips")
    return p.parse_args(options)


def find_extension(bpy) -> str:
    """The module name of the NormalCrafter extension, enabling it if it is
    installed but not enabled (the bpy module starts with factory settings)."""
    for addon in bpy.context.preferences.addons:
        if addon.module.startswith("bl_ext.") and addon.module.rsplit(".", 1)[-1] == "normalcrafter":
            return addon.module
    for repo in bpy.context.preferences.extensions.repos:
        if repo.enabled and os.path.isfile(os.path.join(repo.directory, "normalcrafter", "blender_manifest.toml")):
            import addon_utils

            module = f"bl_ext.{repo.module}.normalcrafter"
            addon_utils.enable(module, default_set=True)
            return module
    raise UsageError("the NormalCrafter extension is not installed in this Blender; install the zip "
                     "(Edit > Preferences > Get Extensions > Install from Disk)")


SCENE_OPTIONS = ("model", "precision", "max_res", "window", "stride", "decode_chunk", "output_dir")
PREF_OPTIONS = (("python", "python_path"), ("device", "device"))


def apply_scene_options(args: argparse.Namespace, scene) -> None:
    """Override the scene's settings (kept if the file is saved with --save)."""
    for name in SCENE_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            setattr(scene.normalcrafter, name, value)


def run(argv: list[str]) -> int:
    import bpy

    before, options = split_argv(argv)
    args = parse_options(options)
    if not bpy.app.binary_path:
        # The bpy module starts empty with factory settings; load what
        # `blender -b FILE` would have: the user preferences, then the file.
        # (bpy 4.2 as a module crashes in read_userpref: there the add-on's
        # preferences keep their defaults, so pass --python.)
        blends = [a for a in before[1:] if a.endswith(".blend")]
        if len(blends) != 1:
            raise UsageError("give one .blend file before --, e.g. python blender_batch.py shot.blend -- ...")
        if bpy.app.version >= (5, 0, 0):
            bpy.ops.wm.read_userpref()
        bpy.ops.wm.open_mainfile(filepath=blends[0])
    module = find_extension(bpy)
    scene = bpy.data.scenes.get(args.scene) if args.scene else bpy.context.scene
    if scene is None:
        raise UsageError(f"no scene named {args.scene!r}")
    ed = scene.sequence_editor
    strips = list((ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all) if ed else [])
    movies = [s.name for s in strips if s.type == "MOVIE"]
    names = args.strips or movies
    unknown = [n for n in names if n not in movies]
    if unknown:
        raise UsageError(f"no movie strip named {', '.join(map(repr, unknown))} in scene '{scene.name}' "
                         f"(movie strips: {', '.join(movies) or 'none'})")
    if not names:
        raise UsageError(f"scene '{scene.name}' has no movie strips")
    apply_scene_options(args, scene)
    prefs = bpy.context.preferences.addons[module].preferences
    # Preference overrides last for this run only: they are put back before
    # anything could save the preferences.
    saved = {name: getattr(prefs, name) for _, name in PREF_OPTIONS}
    try:
        for option, name in PREF_OPTIONS:
            if getattr(args, option) is not None:
                setattr(prefs, name, getattr(args, option))
        with bpy.context.temp_override(scene=scene):
            result = bpy.ops.normalcrafter.estimate(strips=",".join(names))
    except RuntimeError as exc:  # the operator reported an error; its lines are printed already
        print(f"blender_batch: failed: {str(exc).strip()}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for name, value in saved.items():
            setattr(prefs, name, value)
        sys.modules[f"{module}.session"].SESSION.shutdown()  # a batch leaves no worker running
    if args.save:
        bpy.ops.wm.save_mainfile()
    return EXIT_OK if result == {"FINISHED"} else EXIT_FAILED


def main() -> int:
    try:
        return run(sys.argv)
    except UsageError as exc:
        print(f"blender_batch: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
