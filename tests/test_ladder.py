"""The HPC ladder's pieces: CowClip's per-row clipping, row-wise quantised storage, and a smoke
climb whose every rung trains, evaluates and reports (speed targets live in the measurement, not
here)."""

from __future__ import annotations

import math

import pytest
import torch

from methods.system_efficiency.ladder import (
    COWCLIP_ZETA,
    BatchSweepConfig,
    LadderConfig,
    TrainingConfig,
    cowclip_,
    describe_world,
    embedding_l2,
    hpc_batch_sweep,
    hpc_ladder,
    ladder_rungs,
    learning_rates,
    open_world,
    quantise_rows_,
    run_rung,
)
from repro.errors import ConfigError


def test_cowclip_clips_each_touched_row_to_r_times_its_weight_norm_times_its_count():
    table = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.6, 0.8]]))  # norms 5, 0, 1
    # row 0 looked up twice (grads summed: norm 100 -> clip 5 * 2 = 10), row 1 once (zero weight:
    # clip r * sqrt(dim) * zeta), row 2 once with a small gradient (norm 0.5 < clip 1: untouched)
    idx = torch.tensor([[0, 1, 0, 2]])
    values = torch.tensor([[30.0, 40.0], [1.0, 0.0], [30.0, 40.0], [0.3, 0.4]])
    table.grad = torch.sparse_coo_tensor(idx, values, (3, 2), check_invariants=True)
    model = torch.nn.Module()
    model.table = table
    cowclip_(model)
    g = table.grad.to_dense()
    torch.testing.assert_close(g[0], torch.tensor([6.0, 8.0]))
    torch.testing.assert_close(g[1], torch.tensor([COWCLIP_ZETA * math.sqrt(2), 0.0]))  # floor r * sqrt(dim) * zeta
    torch.testing.assert_close(g[2], torch.tensor([0.3, 0.4]))


def test_cowclip_clips_dense_matrices_per_output_unit():
    w = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        w.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    w.weight.grad = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    cowclip_(w)
    torch.testing.assert_close(w.weight.grad, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


@pytest.mark.parametrize("storage, bytes_per_row", [("fp32", 64), ("fp16", 32), ("int8", 24)])
def test_row_wise_storage_rounds_within_its_precision_and_counts_its_bytes(storage, bytes_per_row):
    torch.manual_seed(0)
    table = torch.randn(100, 16)
    original = table.clone()
    assert quantise_rows_(table, storage) == 100 * bytes_per_row
    err = (table - original).abs()
    if storage == "fp32":
        assert torch.equal(table, original)
    elif storage == "fp16":
        assert 0 < err.max() < 1e-3
    else:  # half a quantisation step of each row at most, and each row keeps its min and max
        step = (original.max(1).values - original.min(1).values) / 255
        assert err.max() > 0 and (err <= step.unsqueeze(1) / 2 + 1e-6).all()
        torch.testing.assert_close(table.min(1).values, original.min(1).values)
        torch.testing.assert_close(table.max(1).values, original.max(1).values)


def test_each_rung_adds_one_change_and_the_shown_rules_are_not_built_upon():
    rungs = ladder_rungs(4096, 4.0)
    names = [r.name for r in rungs]
    assert names[0].startswith("0 naive") and rungs[0].loader == "rows" and not rungs[0].sparse
    assert rungs[1].loader == "columnar" and not rungs[1].sparse
    assert rungs[2].sparse and rungs[2].batch_size == 512
    linear, cowclip, base_l2 = rungs[3:6]
    assert linear.scaling == "linear" and not linear.builds_on
    assert cowclip.scaling == "cowclip" and cowclip.l2_scaled and not cowclip.builds_on
    assert base_l2.scaling == "cowclip" and not base_l2.l2_scaled and base_l2.builds_on
    assert all(r.scaling == "cowclip" and not r.l2_scaled and r.batch_size == 4096 for r in rungs[6:])
    assert not any(r.compiled for r in ladder_rungs(4096, 4.0, compile=False))


def test_the_scaling_rules_set_the_rates_and_the_l2_cowclip_gives():
    cowclip, base_l2 = ladder_rungs(8192, 4.0)[4:6]  # s = 16
    assert learning_rates(cowclip, 1e-3) == pytest.approx((4e-3, 1e-3))
    assert learning_rates(ladder_rungs(8192, 4.0)[3], 1e-3) == pytest.approx((16e-3, 16e-3))
    assert embedding_l2(cowclip, 1e-4) == pytest.approx(16e-4)
    assert embedding_l2(base_l2, 1e-4) == pytest.approx(1e-4)


def test_a_smoke_climb_reports_every_rung_with_a_finite_auc(cache_root):
    cfg = LadderConfig(models=["deepfm"], hidden_units=[32], dim=16, scale="smoke", cache_root=str(cache_root),
                       epochs=2, evals_per_epoch=2, large_batch=2048, compile=False, progress=False)
    result = hpc_ladder(cfg)
    names = [row[0] for row in result["rows"]]
    assert names == [f"deepfm · {r.name}" for r in ladder_rungs(2048, 4.0, compile=False)]
    aucs = {row[0].split(" · ")[1]: float(row[result["columns"].index("test AUC")]) for row in result["rows"]}
    # two smoke epochs: enough for every rung to learn, the large-batch ones after their warm-up
    assert all(0.6 < a < 1 for a in aucs.values()), aucs
    # fp16 storage moves the AUC by rounding only; int8 by more or as much
    hashed, fp16, int8 = aucs["6 multi-hash embedding"], aucs["7 fp16 rows"], aucs["7 int8 rows"]
    assert abs(fp16 - hashed) < 2e-3 and math.isfinite(int8)
    model_mib = {row[0].split(" · ")[1]: float(row[result["columns"].index("model MiB")]) for row in result["rows"]}
    assert model_mib["7 int8 rows"] < model_mib["7 fp16 rows"] < model_mib["6 multi-hash embedding"]
    ratio = {row[0].split(" · ")[1]: float(row[result["columns"].index("model x rung 0")]) for row in result["rows"]}
    assert ratio["2 sparse row updates"] == 1.0  # the same full table, whatever its optimizer
    # MiB are shown to two decimals, so the ratio of the shown figures is close, not equal
    assert ratio["7 int8 rows"] == pytest.approx(model_mib["7 int8 rows"] / model_mib["0 naive"], rel=0.06)


def test_the_batch_sweep_reports_every_batch_and_rule_against_the_base_batch(cache_root):
    cfg = BatchSweepConfig(hidden_units=[32], scale="smoke", cache_root=str(cache_root), batches=[1024, 4096],
                           epochs=1, progress=False)
    result = hpc_batch_sweep(cfg)
    col = result["columns"].index
    assert [row[0] for row in result["rows"]] == ["base · 512"] + [f"{r} · {b}" for b in ("1,024", "4,096")
                                                                  for r in ("linear", "cowclip", "cowclip, base L2")]
    assert result["rows"][0][col("AUC - 512")] == "+0.0000"
    base_auc = float(result["rows"][0][col("test AUC")])
    for row in result["rows"][1:]:
        assert float(row[col("AUC - 512")]) == pytest.approx(float(row[col("test AUC")]) - base_auc, abs=2e-4)
    by = {row[0]: row for row in result["rows"]}
    assert by["cowclip · 4,096"][col("embedding L2")] == "0.0008" and by["cowclip, base L2 · 4,096"][col("embedding L2")] == "0.0001"
    steps = {b: int(by[f"linear · {b}"][col("steps")].replace(",", "")) for b in ("1,024", "4,096")}
    assert steps["4,096"] == steps["1,024"] // 4 > 0  # one epoch of full batches
    with pytest.raises(ConfigError, match="rules must be among"):
        hpc_batch_sweep(BatchSweepConfig(rules=["sqrt"], progress=False))


def test_a_rung_that_misses_the_target_trains_on_for_its_time_only(cache_root):
    cfg = TrainingConfig(hidden_units=[16], scale="smoke", cache_root=str(cache_root), epochs=1, evals_per_epoch=2,
                         progress=False)
    data = open_world(cfg)
    rung = ladder_rungs(2048, 4.0)[5]  # CowClip, base L2, at batch 2,048
    plain, plain_model = run_rung(data, None, cfg, "deepfm", rung)
    missed, missed_model = run_rung(data, None, cfg, "deepfm", rung, target=0.99, patience=1.0)  # out of reach
    hit, _ = run_rung(data, None, cfg, "deepfm", rung, target=0.0, patience=1.0)  # reached at the first check
    steps = data.num_rows("train") // 2048
    assert plain.steps == missed.steps == steps and plain.extra_samples == hit.extra_samples == 0
    assert plain.time_to(0.99) is None
    assert missed.extra_samples == steps * 2048 and missed.extra_s > 0 and missed.time_to(0.99) is None
    assert len(missed.curve) == 2 * len(plain.curve)  # checks went on through the extra epoch
    # the budget's figures and model, not the extension's
    assert missed.test_auc == plain.test_auc and missed.samples == plain.samples
    for (k, a), b in zip(plain_model.state_dict().items(), missed_model.state_dict().values()):
        assert torch.equal(a, b), k


def test_the_efficiency_page_carries_the_ladder_table_and_its_measurements(tmp_path):
    from repro.report import write_group_page

    (tmp_path / "hpc_ladder.md").write_text(
        "# ladder\n\n- data set: world\n\n| model | seeds |\n|---|---|\n| DeepFM | 1 |\n\n## Measured beside the runs\n\n"
        "### Measurement `hpc_ladder`\n\n| model · rung | x |\n|---|---|\n| deepfm · 0 naive | 1 |\n\n## Checks\n\n- c\n")
    text = write_group_page("efficiency", tmp_path).read_text()
    assert "| DeepFM | 1 |" in text and "| deepfm · 0 naive | 1 |" in text  # a standard report's table, then its measurements
    assert "#### Measurement `hpc_ladder`" in text and "- data set" not in text and "- c" not in text


def test_world_keys_over_the_scale_reach_the_world_and_a_misspelt_one_is_an_error(cache_root):
    def world(**keys):
        cfg = TrainingConfig(scale="smoke", world=keys, cache_root=str(cache_root), progress=False)
        return cfg, open_world(cfg)

    _, base = world()
    cfg, fewer_users = world(users=300)
    users = lambda data: data.feature_map.field("user_id").vocab_size  # noqa: E731
    assert users(fewer_users) <= 302 < users(base)  # 300 users at most, with padding and OOV
    text = describe_world(cfg, fewer_users)
    rows = sum(f.vocab_size for f in fewer_users.feature_map.categorical)
    assert "users=300" in text and f"{rows:,} embedding rows" in text
    with pytest.raises(ConfigError, match="userz"):
        world(userz=300)


def test_the_high_cardinality_measurements_and_the_run_name_the_same_world():
    from repro.experiments import load_experiment
    from repro.measurements import MEASUREMENTS

    spec = load_experiment("hpc_ladder_large")
    data = {}
    for o in spec["overrides"]:
        key, value = o.lstrip("+").split("=", 1)
        if key.startswith("data."):
            data[key[len("data."):]] = value
    assert {m["name"] for m in spec["measurements"]} == {"hpc_ladder", "hpc_torchrec"}
    for measurement in spec["measurements"]:
        cfg = MEASUREMENTS.config(measurement["name"], measurement["params"])
        measured = {"scale": cfg.scale, "min_count": cfg.min_count, **cfg.world}
        assert {k: str(v) for k, v in measured.items()} == data, measurement["name"]
