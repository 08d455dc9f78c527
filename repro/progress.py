"""Progress bars for long work (rows parsed, steps, ETA); silent when not wanted."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm


@contextmanager
def progress(total: int | None, desc: str, enabled: bool = True, unit: str = "rows") -> Iterator[tqdm]:
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        disable=not enabled,
        file=sys.stderr,
        mininterval=1.0,
        dynamic_ncols=True,
        leave=False,
    )
    try:
        yield bar
    finally:
        bar.close()
