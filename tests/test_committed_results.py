"""The committed results stand under the landed identity: planning them finds nothing stale.

Planning all 11 experiments composes 221 Hydra configs and takes about 2 minutes here (2 cores,
measured 2026-12-08), so this plans a representative subset (~50 s): a world-data table
(baselines), teachers and students (cascade_creative), a method data source with its own
fingerprint (pcf_gnn) and the data-parallel rows (hpc_ladder). What a fresh clone cannot have is
not staleness: kept predictions are git-ignored (``results/runs/**/predictions/``), so a run whose
``keep_predictions`` files are absent, and a student whose teacher differs only by the digest of
those absent predictions, are allowed; every other reason fails.
"""

import json

from repro.experiments import plan
from repro.run import PREDICTIONS, teacher_dir, teacher_identity

SUBSET = ["baselines", "cascade_creative", "pcf_gnn", "hpc_ladder"]
# pcf_gnn's data source (world_pcf) fingerprints itself with repro.environment.code_identity, whose
# value the second identity changed, so its cache key moved although no byte of its data did.
# The data ledger (repro.data.ledger: the cache's content as the data input) ends this; until it
# lands, only these experiments' data reasons are let through.
DATA_KEY_MOVED = {"pcf_gnn"}


def _fresh_clone_reason(job, reason: str) -> bool:
    if job.experiment in DATA_KEY_MOVED and reason.startswith("the data changed (prepared-data key"):
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
