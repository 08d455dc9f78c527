"""The torchrun entry point of ``hpc_torchrec``'s rows: a module of its own, because run as
``__main__`` ``torchrec_tables.py`` would register its measurement a second time when plugin
discovery imports it under its own name."""

import sys
from pathlib import Path

from methods.system_efficiency.torchrec_tables import worker

if __name__ == "__main__":
    worker(Path(sys.argv[1]))
