"""The worker: a long-lived process that runs normal-estimation jobs for a
host application (Blender, Nuke, a farm script) over a JSON-lines protocol
on stdin/stdout. ``client.py`` is the standard-library-only client; see
docs/protocol.md for the protocol itself."""
