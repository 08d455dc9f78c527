"""The committed results stand under the landed identity: planning them finds nothing stale.

Planning all 11 experiments composes 221 Hydra configs and takes about 2 minutes here (2 cores,
measured 2026-12-08), so this plans a representative subset (~50 s): a world-data table
(baselines), teachers and students (cascade_creative), a method data source with its own
fingerprint (pcf_gnn) and the data-parallel rows (hpc_ladder). What a fresh clone cannot have is
not staleness: kept predictions are git-ignored (``results/runs/**/predictions/``), so a run whose
``keep_predictions`` files are absent, and a student whose teacher differs only by the digest of
those absent predictions, are allowed. So is a run whose prepared data the data ledger lists as
not rebuildable on this machine (``unreproduced``: PCF-GNN's pre-trained features round with the
thread count and CPU), whose data identity cannot be known here. Every other reason fails.
"""

import json

from repro.experiments import plan
from repro.run import PREDICTIONS, teacher_dir, teacher_identity

SUBSET = ["baselines", "cascade_creative", "pcf_gnn", "hpc_ladder"]


def _unreproduced_data(job) -> bool:
    """Whether the run's prepared data is one the data ledger lists as not rebuildable here
    (``repro.data.ledger.load_unreproduced``, by the cache's key under the current code: its
    rebuilt splits differ from the ones the run trained on), so its data identity cannot be known
    without the run's own machine."""
    from repro.data.ledger import load_unreproduced
    from repro.data.prepare import PrepareConfig, cache_key
    from repro.run import ledger_path, make_source, resolve

    run = resolve(job.cfg)
    key = cache_key(make_source(run.config), PrepareConfig(min_count=run.config["data"]["min_count"]))
    return key in load_unreproduced(ledger_path(run))


def _fresh_clone_reason(job, reason: str) -> bool:
    if reason == "the data preparation changed: its cache must be built to tell" and _unreproduced_data(job):
        return True
    if reason.startswith("its predictions on ") and reason.endswith(" were not kept"):
        return True
    if reason != "its teacher run changed":
        return False
    from repro.run import resolve

    run = resolve(job.cfg)
    then = json.loads((run.run_dir / "manifest.json").read_text())["inputs"]["teacher"]
    now = teacher_identity(run)
    where = teacher_dir(run)
    return (now is not None and where is not None and not (where / PREDICTIONS).exists()
            and {k: v for k, v in now.items() if k != "predictions"} == {k: v for k, v in then.items() if k != "predictions"})


def test_planning_the_committed_results_finds_nothing_stale():
    jobs = plan(SUBSET)
    assert len(jobs) > 40
    stale = {f"{j.experiment}/{j.label}/seed{j.seed}": [r for r in j.reasons if not _fresh_clone_reason(j, r)]
             for j in jobs}
    assert {k: v for k, v in stale.items() if v} == {}
