"""Shared plotting helpers: matplotlib without a display, and PNGs written atomically."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, title: str, path: Path) -> None:
    """Title, lay out and write ``fig`` as a PNG atomically, then free it."""
    from repro.io import atomic_write

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    pyplot().close(fig)
