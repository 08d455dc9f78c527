"""``python -m repro [overrides]``: one run composed by Hydra (``-m`` sweeps, e.g. ``seed=0,1,2``)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from repro.errors import ReproError
from repro.registry import ROOT


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    from repro.run import execute

    try:
        execute(cfg, force=bool(cfg.get("force", False)))
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
