"""The legibility rules every report plot follows (issue 27, part 6), in one place.

- **No legend over data**: a legend sits outside the axes, to their right (``legend_outside``),
  never in a corner the data may reach.
- **Log axes where values span decades**: ``axis_scale`` picks ``log`` when the largest positive
  value is at least ten times the smallest.
- **Distinct series**: ``series_styles`` gives each series its own colour *and* marker (tab10's ten
  colours first, then tab20's ten lighter ones, so up to 20 colours differ; the markers tell a dark
  colour from its light twin).
- **The machine named**: ``machine_note`` states the CPU model and cores of the runs' manifests;
  ``finish_figure`` writes it as a footnote below the figure.
- Measured figures say so in their axis labels (the callers' job: "measured on the machine below").

This module is deliberately separate from ``repro.plots``: that file is in the executed-code
fingerprint of the measurements whose plots the method modules draw (``repro.environment``'s import
closure), so editing it would stale their committed results; nothing a run or a measurement
executes imports this one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
LOG_SPAN = 10.0  # max / min at or above which an axis is drawn on a log scale


def series_styles(n: int) -> list[dict]:
    """``n`` matplotlib style dicts (``color``, ``marker``): distinct colours up to 20 series, and
    every (colour, marker) pair distinct however many."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors  # pairs (dark, light): tab10's colours at the even indices
    palette = [tab20[i] for i in range(0, 20, 2)] + [tab20[i] for i in range(1, 20, 2)]
    return [{"color": palette[i % len(palette)], "marker": MARKERS[i % len(MARKERS)]} for i in range(n)]


def axis_scale(values) -> str:
    """``"log"`` when the positive finite ``values`` span a factor of ``LOG_SPAN`` or more, else ``"linear"``."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return "log" if len(v) and v.max() / v.min() >= LOG_SPAN else "linear"


def machine_note(manifests: list[dict]) -> str:
    """Where the runs ran, from their manifests: ``"Runs on AMD EPYC, 2 cores (21 run manifests)."``;
    several machines are each listed with their run count (their speeds are not comparable)."""
    machines = Counter(f"{(m.get('machine') or {}).get('cpu_model', 'unknown CPU')}, "
                       f"{(m.get('machine') or {}).get('cores', '?')} cores" for m in manifests)
    if len(machines) == 1:
        (where, n), = machines.items()
        return f"Runs on {where} ({n} run manifest{'s' if n != 1 else ''})."
    parts = "; ".join(f"{where} ({n} run{'s' if n != 1 else ''})" for where, n in machines.most_common())
    return f"Runs on {len(machines)} machines: {parts}; speeds measured on different machines do not compare."


def legend_outside(ax, **kwargs):
    """The axes' legend to the right of the axes, top-aligned, so it can cover no data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                     fontsize=kwargs.pop("fontsize", 7), **kwargs)


def finish_figure(fig, note: str, title: str | None = None) -> None:
    """Title and lay out ``fig``, then put ``note`` (the machine) in small grey type below
    everything else: the saved bounding box grows to it (``save_report_figure``)."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.text(0.01, 0.0, note, ha="left", va="top", fontsize=7, color="0.3")


def save_report_figure(fig, path: Path, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG atomically, then free it. The saved box is the tight box of everything
    drawn, so legends outside the axes and the footnote are kept."""
    from repro.io import atomic_write
    from repro.plots import pyplot

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight"))
    pyplot().close(fig)
