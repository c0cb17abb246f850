"""Small text helpers for panels: Blender labels do not wrap."""
from __future__ import annotations

import textwrap

WIDTH = 52


def draw_lines(layout, lines: list[str], icon: str = "NONE") -> None:
    """Draw ``lines`` wrapped to the sidebar's width, the icon on the first."""
    col = layout.column(align=True)
    first = True
    for line in lines:
        for part in textwrap.wrap(line, WIDTH) or [""]:
            col.label(text=part, icon=icon if first else "BLANK1")
            first = False


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(done: int, total: int, fps: float, eta_s: float | None) -> str:
    """"12 / 40 frames · 3.1 fps · 9 s left"."""
    text = f"{done} / {total} frames"
    if fps:
        text += f" · {fps:.2f} fps" if fps < 10 else f" · {fps:.0f} fps"
    if done < total:
        text += f" · {duration(eta_s)} left"
    return text


def size(nbytes: float | None) -> str:
    if nbytes is None:
        return "?"
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    for unit in ("KB", "MB"):
        nbytes /= 1024
        if nbytes < 1024:
            return f"{nbytes:.1f} {unit}"
    return f"{nbytes / 1024:.1f} GB"
