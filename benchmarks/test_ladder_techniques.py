"""The HPC ladder's per-step techniques as speed guards: one DeepFM training step at the ladder's
large batch, plain fp32, under bf16 autocast, and with CowClip's per-row clipping, on the same
batches (``methods/system_efficiency/ladder.py`` measures the whole ladder; this guards its parts).
Ratios land in the closing table; nothing is asserted on time. On this 2-core machine a round's
standard deviation was 15-20% of its mean (2026-11-29): read ratios across rounds, and the ladder's
own 2-epoch measurement for the figures that count (bf16 1.48x there for DeepFM)."""

from __future__ import annotations

import itertools

import pytest
import torch

from benchmarks.conftest import RESULTS
from methods.system_efficiency.ladder import LadderConfig, Rung, build_model, cowclip_, make_optimizers

BATCH = 16384
STEPS = 4


@pytest.mark.parametrize("technique", ["fp32", "bf16 autocast", "cowclip"])
def test_large_batch_step(benchmark, bench_data, technique):
    torch.set_num_threads(2)
    cfg = LadderConfig()
    rung = Rung("bench", batch_size=BATCH, scaling="cowclip", bf16=technique == "bf16 autocast")
    model = build_model(bench_data, cfg, "deepfm", rung)
    opts = make_optimizers(model, rung, cfg)
    batches = list(itertools.islice(bench_data.batches("train", BATCH, shuffle=True), STEPS))
    model.train()

    def run():
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=rung.bf16):
                loss = model.loss(batch, model(batch))
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            if technique == "cowclip":
                cowclip_(model)
            for opt in opts:
                opt.step()

    benchmark.pedantic(run, rounds=5, warmup_rounds=4)  # the first case of a process warms up for several rounds
    per_step = benchmark.stats.stats.mean / STEPS
    RESULTS[f"deepfm step, batch {BATCH}, {technique}"] = {"batches_per_s": 1 / per_step,
                                                           "samples_per_s": BATCH / per_step}
