class RelightError(Exception):
    """A problem the user can fix (bad path, no camera...); operators report its one-line message."""
