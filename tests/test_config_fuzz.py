"""The config loaders users touch, fuzzed: every input resolves or raises ``ConfigError``.

Three loaders, each fed a valid config block damaged at random:

- ``repro.run.resolve`` on a run config dict (what ``python -m repro`` composes): top level,
  ``data`` (the world source), ``model`` (DeepFM), ``embedding`` (full) and ``train``;
- ``repro.experiments.load_experiment`` on a yaml file written into a temporary
  ``conf/experiment/`` (``repro.experiments.ROOT`` pointed there: it takes an experiment's name,
  not a path), written by ``yaml.safe_dump`` so that every generated key and value round-trips;
- ``repro.claims.parse_claims`` on a ``claims:`` list, with the experiment's row labels.

The damage, one kind per example (``_damage``):

- **unknown key**: one key added to one block, misspelt from a key the block knows (a letter
  dropped, doubled or swapped, the case changed) or random, with a harmless value (a small
  number, a word, a short list); the one change, so the loader must raise ``ConfigError`` and its
  message must name the key (``repr(key)``, as the loaders list them);
- **garbage**: one to three changes at once: a known key's value replaced by a random value
  (None, a bool, a number, text, an OmegaConf interpolation, nested lists and mappings), a whole
  block replaced by such a value, or a key removed. Such an input may still be valid (``"3"`` is
  a fine epoch count), so it must resolve or raise ``ConfigError``, never another exception.

Bounded count in ``make test`` (derandomised: CI draws the same examples), ``make fuzz``'s there.
"""

from __future__ import annotations

import copy
import re
import dataclasses
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from repro import claims as claims_mod
from repro import experiments
from repro.errors import ConfigError
from repro.registry import EMBEDDINGS, MODELS, SOURCES
from repro.run import DATA_PREP_KEYS, RUN_KEYS, resolve
from repro.train import TrainConfig
from tests.conftest import fuzz_examples, fuzz_settings

_KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _fields(config: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config)}


# What each block of each loader knows: an added key outside these is unknown.
RUN_BLOCKS = {
    (): set(RUN_KEYS),
    ("data",): {*DATA_PREP_KEYS, "name", *_fields(SOURCES.get("world").config)},
    ("model",): {"name", *_fields(MODELS.get("deepfm").config)},
    ("embedding",): {"name", *_fields(EMBEDDINGS.get("full").config)},
    ("train",): _fields(TrainConfig),
}
EXPERIMENT_BLOCKS = {
    (): set(experiments.EXPERIMENT_KEYS),
    ("runs", 0): set(experiments.RUN_ENTRY_KEYS),
    ("runs", 1): set(experiments.RUN_ENTRY_KEYS),
    ("report",): set(experiments.REPORT_KEYS),
    ("measurements", 0): {"name", "params"},
}
CLAIM_BLOCKS = {
    (0,): set(claims_mod.CLAIM_KEYS),
    (1,): set(claims_mod.CLAIM_KEYS),
    (0, "conditions", 0): set(claims_mod.CONDITION_KEYS),
    (2, "conditions", 0): set(claims_mod.MEASURED_KEYS | claims_mod.MEASURED_OPTIONAL_KEYS),
    (2, "conditions", 0, "measured"): set(claims_mod.MEASURED_REF_KEYS),
}


def run_config(results_dir: str) -> dict:
    """A run config that resolves: the smoke world, DeepFM, a full table, one epoch."""
    return {
        "data": {"name": "world", "scale": "smoke", "seed": 0, "min_count": 2, "cache_root": "cache"},
        "model": {"name": "deepfm", "hidden_units": [32, 16]},
        "embedding": {"name": "full", "dim": 8},
        "train": {"epochs": 1, "batch_size": 2048, "progress": False, "lr": 0.01},
        "seed": 0, "experiment_name": "fuzz", "label": "deepfm", "results_dir": results_dir,
    }


EXPERIMENT = {
    "title": "fuzzed", "budget_minutes": 5, "seeds": [0, 1], "overrides": ["data.scale=smoke"],
    "runs": [{"label": "DeepFM", "overrides": ["model=deepfm"]}, {"label": "FM", "overrides": ["model=fm"], "seeds": [0]}],
    "report": {"baseline": "FM", "kind": "table"},
    "measurements": [{"name": "sizes", "params": {"rows": 10}}],
}
LABELS = ["DeepFM", "FM"]
CLAIMS = [
    {"id": "deepfm-over-fm", "text": "DeepFM ranks better than FM", "source": "Guo et al., IJCAI 2017",
     "conditions": [{"metric": "test AUC", "rows": ["DeepFM", "FM"], "stat": "difference", "relation": ">",
                     "threshold": 0.0}]},
    {"id": "online", "text": "a gain online", "source": "a paper", "not_testable": "needs live traffic"},
    {"id": "small", "text": "a small table", "source": "adrepro check", "kind": "check",
     "conditions": [{"measured": {"name": "sizes", "row": "DeepFM", "column": "MiB"}, "relation": "<",
                     "threshold": 10, "deterministic": True}]},
]


# -- values and keys ---------------------------------------------------------------------------

_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["", "auto", "cpu", "world", "deepfm", "full", "${nope}", "${data.seed}",
                                           "1", "0.5", "true", "[1, 2]", "smoke"]),
)
_plain_value = st.one_of(st.integers(-5, 5), st.text(_KEY_ALPHABET, max_size=6), st.lists(st.integers(0, 3), max_size=2))
_garbage = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(_KEY_ALPHABET, min_size=1, max_size=8), inner, max_size=4)),
    max_leaves=8,
)


@st.composite
def _unknown_key(draw, known: set[str]) -> str:
    """A key the block does not know: a known key misspelt, or a random identifier."""
    names = sorted(k for k in known if isinstance(k, str) and k)
    if names and draw(st.booleans()):
        key = draw(st.sampled_from(names))
        i = draw(st.integers(0, len(key) - 1))
        how = draw(st.sampled_from(["drop", "double", "swap", "case", "suffix"]))
        key = {"drop": key[:i] + key[i + 1:], "double": key[:i] + key[i] + key[i:],
               "swap": key[:i] + key[i + 1:i + 2] + key[i:i + 1] + key[i + 2:], "case": key.swapcase(),
               "suffix": key + "s"}[how]
    else:
        key = draw(st.text(_KEY_ALPHABET, min_size=1, max_size=12))
    return draw(st.just(key).filter(lambda k: k and k not in known))


def _at(tree, path):
    for step in path:
        tree = tree[step]
    return tree


@st.composite
def _damage(draw, base, blocks: dict[tuple, set[str]]):
    """``base`` damaged (a deep copy): ("unknown", key) with one unknown key added, or
    ("garbage", changes) with one to three values, blocks or keys replaced or removed."""
    tree = copy.deepcopy(base)
    if draw(st.booleans()):
        path = draw(st.sampled_from(sorted(blocks, key=repr)))
        key = draw(_unknown_key(blocks[path]))
        _at(tree, path)[key] = draw(_plain_value)  # harmless: the key alone is wrong
        return tree, ("unknown", key)
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        holders = [p for p in blocks if _reachable(tree, p)]
        if not holders:
            break
        path = draw(st.sampled_from(sorted(holders, key=repr)))
        block = _at(tree, path)
        how = draw(st.sampled_from(["value", "value", "block", "remove"]))
        if how == "block" and path:
            _at(tree, path[:-1])[path[-1]] = draw(_garbage)
            changes.append(("block", path))
        elif block:
            key = draw(st.sampled_from(sorted(block, key=repr)))
            if how == "remove":
                del block[key]
            else:
                block[key] = draw(_garbage)
            changes.append((how, path, key))
    return tree, ("garbage", changes)


def _reachable(tree, path) -> bool:
    try:
        return isinstance(_at(tree, path), dict)
    except (KeyError, IndexError, TypeError):
        return False


def _judge(ledger, call, damage) -> None:
    """``call()`` resolves or raises ``ConfigError``; an unknown key, the only change, must be named."""
    kind, what = damage
    try:
        call()
    except ConfigError as e:
        if kind == "unknown":
            assert repr(what) in str(e), f"the error does not name the unknown key {what!r}: {e}"
        ledger.outcomes[f"{kind}: ConfigError"] += 1
        return
    assert kind != "unknown", f"an unknown key {what!r} was accepted"
    ledger.outcomes[f"{kind}: resolved"] += 1


# -- the loaders -------------------------------------------------------------------------------


def test_base_configs_are_valid(tmp_path):
    """The undamaged inputs resolve: a damaged one's ConfigError is the damage's, not the base's."""
    assert resolve(run_config(str(tmp_path))).config["model"]["hidden_units"] == [32, 16]
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "x.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    with mock.patch.object(experiments, "ROOT", tmp_path):
        assert [r["label"] for r in experiments.load_experiment("x")["runs"]] == LABELS
    assert [c.id for c in claims_mod.parse_claims("x.yaml", CLAIMS, LABELS)] == ["deepfm-over-fm", "online", "small"]


@pytest.mark.fuzz
def test_fuzzed_run_configs_resolve_or_raise_config_error(fuzz_ledger):
    """200 derandomised examples in ``make test``, ``make fuzz``'s count (random) there."""
    ledger = fuzz_ledger("config: repro.run.resolve")
    results = tempfile.mkdtemp()

    @settings(fuzz_settings(200, database=None, derandomize=True, suppress_health_check=list(HealthCheck)))
    @given(case=_damage(run_config(results), RUN_BLOCKS))
    def check(case):
        with ledger.example():
            tree, damage = case
            _judge(ledger, lambda: resolve(tree), damage)

    check()
    assert ledger.examples >= fuzz_examples(200) // 2
    assert ledger.outcomes["unknown: ConfigError"] > 0 and ledger.outcomes["garbage: ConfigError"] > 0


@pytest.mark.fuzz
def test_fuzzed_experiment_files_load_or_raise_config_error(fuzz_ledger):
    """200 derandomised examples in ``make test``, ``make fuzz``'s count (random) there. Each is
    a yaml file in a temporary ``conf/experiment/``; besides the file's own keys, its ``claims``
    (when it has any) go through ``parse_claims`` as the report reads them."""
    ledger = fuzz_ledger("config: repro.experiments.load_experiment")
    root = Path(tempfile.mkdtemp())
    (root / "conf" / "experiment").mkdir(parents=True)

    @settings(fuzz_settings(200, database=None, derandomize=True, suppress_health_check=list(HealthCheck)))
    @given(case=_damage(EXPERIMENT, EXPERIMENT_BLOCKS))
    def check(case):
        with ledger.example():
            tree, damage = case
            (root / "conf" / "experiment" / "fuzzed.yaml").write_text(yaml.safe_dump(tree, allow_unicode=True))
            if damage[0] == "unknown":  # the key as the loader reads it back: OmegaConf's yaml resolver
                # reads some keys that yaml.safe_dump leaves unquoted as numbers ('0E0' is 0.0)
                damage = ("unknown", next(iter(OmegaConf.create(yaml.safe_dump({damage[1]: 0})))))

            def load():
                spec = experiments.load_experiment("fuzzed")
                claims_mod.parse_claims("fuzzed.yaml", spec.get("claims"), [r["label"] for r in spec["runs"]])

            _judge(ledger, load, damage)

    with mock.patch.object(experiments, "ROOT", root):
        check()
    assert ledger.examples >= fuzz_examples(200) // 2
    assert ledger.outcomes["unknown: ConfigError"] > 0 and ledger.outcomes["garbage: ConfigError"] > 0


@pytest.mark.fuzz
def test_fuzzed_claims_parse_or_raise_config_error(fuzz_ledger):
    """200 derandomised examples in ``make test``, ``make fuzz``'s count (random) there."""
    ledger = fuzz_ledger("config: repro.claims.parse_claims")

    @settings(fuzz_settings(200, database=None, derandomize=True, suppress_health_check=list(HealthCheck)))
    @given(case=_damage(CLAIMS, CLAIM_BLOCKS))
    def check(case):
        with ledger.example():
            tree, damage = case
            _judge(ledger, lambda: claims_mod.parse_claims("fuzzed.yaml", tree, LABELS), damage)

    check()
    assert ledger.examples >= fuzz_examples(200) // 2
    assert ledger.outcomes["unknown: ConfigError"] > 0 and ledger.outcomes["garbage: ConfigError"] > 0


# -- what the fuzzing found (each raised TypeError, ValueError or AttributeError before) ----------


@pytest.mark.parametrize("path, value, named", [
    (("embedding", "name"), [], "embedding"),  # an unhashable registry name
    (("data",), 3952, "data"),  # a block that is not a mapping
    (("model",), [[], {"a": 1}], "model"),
    (("train",), ["x"], "train"),
    (("seed",), None, "seed"),
    (("results_dir",), [97], "results_dir"),
    (("data", "drop_roles"), 3, "drop_roles"),
    (("data", "min_count"), "x", "min_count"),
    (("model", "hidden_units"), [1, "${nope}"], "model 'deepfm'"),  # a broken interpolation
])
def test_found_run_configs_raise_config_error(tmp_path, path, value, named):
    cfg = run_config(str(tmp_path))
    _at(cfg, path[:-1])[path[-1]] = value
    with pytest.raises(ConfigError, match=re.escape(named)):
        resolve(cfg)


@pytest.mark.parametrize("change, named", [
    ({"runs": [[None, 8800]]}, "runs[0]"),
    ({"runs": 5}, "runs"),
    ({"runs": [{"label": ["a"]}]}, "label"),
    ({"report": ["x"]}, "report"),
    ({"measurements": {"name": "x"}}, "measurements"),
    ({"seeds": "0"}, "seeds"),
    ({"overrides": [1]}, "overrides"),
])
def test_found_experiment_files_raise_config_error(tmp_path, change, named):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "x.yaml").write_text(yaml.safe_dump({**EXPERIMENT, **change}))
    with mock.patch.object(experiments, "ROOT", tmp_path), pytest.raises(ConfigError, match=re.escape(named)):
        experiments.load_experiment("x")


@pytest.mark.parametrize("metric", [None, [], 3])
def test_found_claims_with_a_metric_that_is_not_text_raise_config_error(metric):
    claims = copy.deepcopy(CLAIMS)
    claims[0]["conditions"][0]["metric"] = metric
    with pytest.raises(ConfigError, match="unknown metric"):
        claims_mod.parse_claims("x.yaml", claims, LABELS)


@pytest.mark.parametrize("key", ["results_dir", "experiment_name", "cache_root"])
def test_found_a_null_folder_or_name_raises_config_error(tmp_path, key):
    """Found at 10,000 examples: ``results_dir: null`` (or ``data.cache_root``) reached ``Path(None)``."""
    cfg = run_config(str(tmp_path))
    (cfg["data"] if key == "cache_root" else cfg)[key] = None
    with pytest.raises(ConfigError, match=key):
        resolve(cfg)
