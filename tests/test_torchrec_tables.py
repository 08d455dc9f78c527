"""TorchRec's embedding engine beside the suite's (``hpc_torchrec``): row-wise Adagrad as fbgemm
computes it, TorchRec's tables looking up what the suite's table holds, and one and two processes
training the same global-batch steps (speed targets live in the measurement, not here)."""

from __future__ import annotations

import pytest
import torch

from methods.system_efficiency.torchrec_tables import (
    RowWiseAdagrad,
    TorchRecConfig,
    TorchRecTables,
    hpc_torchrec,
)
from repro.embeddings import FullEmbedding, FullEmbeddingConfig
from repro.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torchrun_tmp")


def test_row_wise_adagrad_sums_a_rows_gradients_then_divides_by_its_accumulated_mean_square():
    table = torch.nn.Parameter(torch.zeros(4, 2))
    opt = RowWiseAdagrad([table], lr=0.1, eps=0.0)
    # row 1 twice (summed: [3, 4], mean square 12.5), row 3 once ([0, 2]: 2); rows 0 and 2 untouched
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3, 1]]), torch.tensor([[1.0, 2.0], [0.0, 2.0], [2.0, 2.0]]),
                                         (4, 2))
    opt.step()
    expected = torch.zeros(4, 2)
    expected[1] = -0.1 * torch.tensor([3.0, 4.0]) / 12.5 ** 0.5
    expected[3] = -0.1 * torch.tensor([0.0, 2.0]) / 2 ** 0.5
    torch.testing.assert_close(table.detach(), expected)
    # the second step divides by the sum of both steps' mean squares
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.tensor([[1.0, 1.0]]), (4, 2))
    opt.step()
    expected[1] -= 0.1 * torch.tensor([1.0, 1.0]) / 13.5 ** 0.5
    torch.testing.assert_close(table.detach(), expected)


def test_row_wise_adagrad_takes_fbgemms_fused_step():
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        EmbeddingLocation,
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    torch.manual_seed(0)
    fused = SplitTableBatchedEmbeddingBagsCodegen([(50, 8, EmbeddingLocation.HOST, ComputeDevice.CPU)],
                                                  optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=0.05,
                                                  eps=1e-8, pooling_mode=PoolingMode.SUM)
    table = torch.nn.Parameter(fused.split_embedding_weights()[0].detach().clone())
    opt = RowWiseAdagrad([table], lr=0.05, eps=1e-8)
    for _ in range(3):
        ids = torch.randint(0, 10, (32,))  # repeated rows in every batch
        upstream = torch.randn(32, 8)
        fused(ids, torch.arange(33)).backward(upstream)
        opt.zero_grad()
        torch.nn.functional.embedding(ids, table, sparse=True).backward(upstream)
        opt.step()
    torch.testing.assert_close(table.detach(), fused.split_embedding_weights()[0], rtol=1e-5, atol=1e-6)


def test_torchrec_tables_look_up_the_suites_rows_and_keep_padding_zero(smoke_data, tmp_path):
    full = FullEmbedding(smoke_data.feature_map, FullEmbeddingConfig(dim=8))
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        tables = TorchRecTables(full, lr=0.01, eps=1e-8)
        cat = next(smoke_data.batches("test", 300))["cat"].clone()
        cat[:5, 2] = 0  # missing values
        tables.eval()
        full.eval()
        torch.testing.assert_close(tables(cat), full(cat))
        assert (tables(cat)[:5, 2] == 0).all()
        assert tables.stored_bytes() == full.weight.numel() * 4
    finally:
        torch.distributed.destroy_process_group()


def test_one_and_two_processes_train_the_same_steps_and_only_the_optimizer_moves_the_auc(cache_root):
    cfg = TorchRecConfig(hidden_units=[32], scale="smoke", cache_root=str(cache_root), epochs=1, evals_per_epoch=1,
                         batches=[1024], progress=False)
    result = hpc_torchrec(cfg)
    col = result["columns"].index
    by = {row[col("engine")]: row for row in result["rows"]}
    assert list(by) == ["torch tables, SparseAdam", "torch tables, row-wise Adagrad", "TorchRec, 1 process",
                        "TorchRec, 2 processes"]
    assert all(row[col("batch")] == "1,024" for row in result["rows"])
    auc = {name: float(row[col("test AUC")]) for name, row in by.items()}
    assert 0.6 < auc["torch tables, SparseAdam"] < 1
    # the same optimizer on the same steps: one fused engine, one process or two (global batch equal)
    adagrad = auc["torch tables, row-wise Adagrad"]
    assert auc["TorchRec, 1 process"] == pytest.approx(adagrad, abs=5e-4)
    assert auc["TorchRec, 2 processes"] == pytest.approx(adagrad, abs=5e-4)
    assert by["TorchRec, 2 processes"][col("MiB sent / step")] != "–" and by["TorchRec, 1 process"][col("MiB sent / step")] == "–"
    plan = next(n for n in result["notes"] if n.startswith("TorchRec's plan"))
    assert "rank 0:" in plan and "rank 1:" in plan  # the tables are split over both processes
    with pytest.raises(ConfigError, match="engines must be among"):
        hpc_torchrec(TorchRecConfig(engines=["adam_fused"], progress=False))
