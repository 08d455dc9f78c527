"""The ladder's data-parallel rung (``hpc_data_parallel``): one process against two gloo
processes on the same rows and global batch, and tables whose gradients travel dense."""

from __future__ import annotations

import pytest

from repro.errors import ConfigError
from repro.measurements import MEASUREMENTS

pytestmark = pytest.mark.usefixtures("torchrun_tmp")


def test_two_processes_learn_what_one_learns_and_dense_tables_send_more(cache_root):
    cfg = MEASUREMENTS.config("hpc_data_parallel", {
        "scale": "smoke", "cache_root": str(cache_root), "hidden_units": [16], "dim": 8, "batch_size": 2048,
        "epochs": 1, "hooks": ["none"], "progress": False})
    table = MEASUREMENTS.get("hpc_data_parallel").factory(cfg)
    rows = {row[0]: dict(zip(table["columns"], row)) for row in table["rows"]}
    assert list(rows) == ["1 process", "2 processes, none", "2 processes, none, dense tables"]
    single, sparse, dense = rows.values()
    assert single["MiB sent / step"] == "–"
    assert abs(float(sparse["AUC - 1 process"])) < 2e-3
    # Dense tables all-reduce every row of every table each step; sparse ones only the rows used.
    assert float(dense["MiB sent / step"]) > 2 * float(sparse["MiB sent / step"]) > 0


@pytest.mark.parametrize("params", [{"hooks": ["bf16"]}, {"world_size": 1}])
def test_bad_settings_fail_before_training(params):
    cfg = MEASUREMENTS.config("hpc_data_parallel", params)
    with pytest.raises(ConfigError, match="hpc_data_parallel"):
        MEASUREMENTS.get("hpc_data_parallel").factory(cfg)
