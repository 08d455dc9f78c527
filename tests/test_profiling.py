"""The profiling layer (issue 9): phase times, counted FLOPs, optimizer bytes, the machine's
peak, CPU capabilities, NVML sampling (faked here: this machine has no GPU), and a GPU-style
loss cadence that reads the loss every N steps without changing a number."""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch

import repro.profiling as profiling
import repro.train as trainer
from repro.errors import TrainingError
from repro.run import execute
from tests.test_run import metrics_of
from tests.test_train import cfg, small_model


def test_phases_add_up_to_the_step_time_and_each_is_measured(smoke_data):
    result = trainer.train(small_model(smoke_data), smoke_data, cfg(), seed=0)
    phases = result.phase_seconds
    assert set(phases) == {"data", "forward", "backward", "optimizer"}
    assert all(phases[k] > 0 for k in phases)
    steps = sum(phases[k] for k in profiling.PHASES)
    # The step time also holds the loop's own bookkeeping; the phases are most of it, never more.
    assert 0.7 * result.train_seconds < steps <= result.train_seconds
    assert phases["data"] == result.data_seconds


def test_flops_per_sample_count_the_mlps_matrix_products(smoke_data):
    """Widening a DNN's first hidden layer from 16 to 32 adds, per sample, its matrix products:
    forward 2 * (in * 16 + 16 * 8) more; backward twice that (input and weight gradients: the
    layer's input, the embeddings, needs a gradient too): 3x in all. The rest of the model (the
    dense fields' projections) cancels out in the difference."""
    flops = {}
    for width in (16, 32):
        model = small_model(smoke_data, "dnn", hidden_units=[width, 8], dropout=0.0)
        flops[width] = trainer.train(model, smoke_data, cfg(), seed=0).flops_per_sample
    flat = model.embed.flat_dim
    assert flops[32] - flops[16] == pytest.approx(3 * 2 * (flat * 16 + 16 * 8), rel=1e-9)


def test_optimizer_state_bytes_count_adams_moments():
    layer = torch.nn.Linear(10, 1)
    opt = torch.optim.Adam(layer.parameters())
    layer(torch.ones(2, 10)).sum().backward()
    assert profiling.optimizer_state_bytes([opt]) == 0
    opt.step()
    # exp_avg and exp_avg_sq per parameter (11 floats each), and one step counter per parameter.
    assert profiling.optimizer_state_bytes([opt]) == 2 * 11 * 4 + 2 * 4


def test_reading_the_loss_every_n_steps_changes_no_number(smoke_data, monkeypatch):
    every_step = trainer.train(small_model(smoke_data), smoke_data, cfg(batch_size=1024), seed=0)
    monkeypatch.setattr(trainer, "loss_read_every", lambda device: 7)
    batched = trainer.train(small_model(smoke_data), smoke_data, cfg(batch_size=1024), seed=0)
    assert [h["loss"] for h in batched.history] == pytest.approx([h["loss"] for h in every_step.history], rel=1e-12)
    assert batched.best_valid_auc == every_step.best_valid_auc


def test_a_non_finite_loss_read_late_still_names_its_step(smoke_data, monkeypatch):
    monkeypatch.setattr(trainer, "loss_read_every", lambda device: 5)
    model = small_model(smoke_data)
    real_loss = model.loss

    def loss(batch, logits, calls=[0]):  # the 9th step (index 8) diverges
        calls[0] += 1
        out = real_loss(batch, logits)
        return out * float("nan") if calls[0] == 9 else out

    model.loss = loss
    with pytest.raises(TrainingError, match=r"at step 8 .*loss is nan"):
        trainer.train(model, smoke_data, cfg(batch_size=512, grad_clip_norm=0.0), seed=0)


def test_a_run_records_the_profile_and_says_there_is_no_gpu(run_config):
    execute(run_config())
    metrics, _ = metrics_of(run_config())
    p = metrics["profile"]
    assert p["flops_per_sample"] > 0 and p["matmul_peak_flops_per_s"] > 1e9
    assert 0 < p["peak_share"] < 1.5  # a share of the measured peak (a noisy machine may exceed it a little)
    assert p["optimizer_state_bytes"] > 0 and set(p["phase_seconds"]) == {"data", *profiling.PHASES}
    assert p["cpu"]["torch_capability"] and isinstance(p["cpu"]["native_bf16"], bool)
    if not torch.cuda.is_available():
        assert p["gpu"] == {"available": False, "reason": "no CUDA device visible to torch"}


def test_cpu_capabilities_follow_the_flags(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    real_path = profiling.Path
    monkeypatch.setattr(profiling, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    profiling.cpu_capabilities.cache_clear()
    try:
        caps = profiling.cpu_capabilities()
        assert caps["avx512_bf16"] and caps["native_bf16"] and not caps["amx_bf16"] and caps["avx2"]
    finally:
        profiling.cpu_capabilities.cache_clear()


class FakeNvml(types.ModuleType):
    """Just enough of nvidia-ml-py for the sampler: a device with fixed readings."""

    NVML_CLOCK_SM = 1

    def __init__(self):
        super().__init__("pynvml")
        self.shut = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(used=3 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, h):
        return types.SimpleNamespace(gpu=87)

    def nvmlDeviceGetPowerUsage(self, h):
        return 250_000  # mW

    def nvmlDeviceGetClockInfo(self, h, which):
        return 1980


def test_the_gpu_monitor_samples_nvml_in_a_thread(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with profiling.GpuMonitor(interval=0.01) as gpu:
        time.sleep(0.1)
    s = gpu.summary()
    assert s["available"] and s["samples"] >= 3 and fake.shut
    assert s["memory_used_mb_max"] == 3072 and s["utilisation_pct_mean"] == 87
    assert s["power_w_max"] == 250 and s["sm_clock_mhz_max"] == 1980


def test_the_gpu_monitor_says_why_nvml_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with profiling.GpuMonitor() as gpu:
        pass
    s = gpu.summary()
    assert not s["available"] and "NVML unavailable" in s["reason"]


def test_the_phase_clock_reads_cuda_events_only_when_resolved(monkeypatch):
    """On a GPU each boundary records an event; nothing is read (no host sync) until resolve()."""
    reads = []

    class Event:
        clock = 0.0

        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            Event.clock += 1.0
            self.t = Event.clock

        def synchronize(self):
            reads.append("sync")

        def elapsed_time(self, end):
            reads.append("elapsed")
            return (end.t - self.t) * 1000.0  # milliseconds

    monkeypatch.setattr(torch.cuda, "Event", Event)
    clock = profiling.PhaseClock("cuda")
    for _ in range(3):
        clock.start()
        for phase in profiling.PHASES:
            clock.mark(phase)
    assert reads == []
    assert clock.resolve() == {"forward": 3.0, "backward": 3.0, "optimizer": 3.0}
    assert reads.count("sync") == 1
