"""The code identity: what a run's computation can reach, digested without comments, docstrings or formatting."""

import textwrap

import pytest

from repro import identity
from repro.registry import ROOT

CORE = {
    "repro/__init__.py": "",
    "repro/run.py": """
        from repro.train import fit
        from repro import metrics as metric_fns

        def _run(config):
            if config["world"] > 1:
                from repro.distributed import launch
                return launch(config)
            return fit(config) + metric_fns.auc()

        def staleness(run):
            return run.resolve()
    """,
    "repro/train.py": '''
        import torch
        from dataclasses import dataclass

        RATE = 0.1

        def fit(config):
            """Fit the model."""
            return step(config,
                        RATE)

        def step(config, rate):
            return rate * 2

        def unused():
            return 3

        @dataclass
        class Unnamed:
            x: int = 1

        @register_model("plugin")
        class Registered:
            y = 2
    ''',
    "repro/metrics.py": "def auc():\n    return 0.5\n\ndef resolve():\n    return 1\n",
    "repro/distributed.py": """
        import subprocess, sys

        def launch(config):
            subprocess.run([sys.executable, "-m", "repro.distributed"])

        def worker():
            return 1

        if __name__ == "__main__":
            worker()
    """,
}


CORE = {path: textwrap.dedent(text).lstrip("\n") for path, text in CORE.items()}


def reader(files: dict[str, str]):
    return lambda rel: files[rel].encode() if rel in files else None


def included(files: dict[str, str], whole: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    return identity.reachable_units("repro/run.py", whole, reader(files))


def edited(path: str, old: str, new: str, files: dict = CORE) -> dict:
    assert old in files[path]
    return {**files, path: files[path].replace(old, new)}


def test_the_identity_holds_what_the_computation_reaches_and_nothing_else():
    units = included(CORE)
    assert set(units["repro/run.py"]) == {"_run", "fit", "metric_fns"}  # not `staleness`; the imports _run uses
    assert set(units["repro/train.py"]) >= {"fit", "step", "RATE", "Registered"}
    assert not {"unused", "Unnamed", "torch"} & set(units["repro/train.py"])
    # `run.resolve()` is an attribute of a run, not of a module: metrics.resolve is not reached
    assert set(units["repro/metrics.py"]) == {"auc"}
    # torchrun runs `-m repro.distributed`: its `__main__` block and what it calls are reached
    assert {"launch", "worker", "<main>"} <= set(units["repro/distributed.py"])


@pytest.mark.parametrize("path, old, new", [
    ("repro/train.py", '"""Fit the model."""', '"""Fit the model, a docstring rewritten."""'),  # docstring
    ("repro/train.py", "RATE = 0.1\n", "RATE = 0.1  # a comment\n# another\n"),  # comments
    ("repro/train.py", "return step(config,\n                RATE)", "return step(config, RATE)"),  # reflow
    ("repro/train.py", "return 3", "return 4"),  # an unreachable definition
    ("repro/run.py", "return run.resolve()", "return None"),  # bookkeeping
    ("repro/train.py", "import torch\n", "import torch\nimport tokenize\n"),  # an import nothing reached uses
    ("repro/train.py", "RATE = 0.1\n", "RATE = 0.1\nNEW_CONSTANT = (1, 2)\n"),  # an unused constant
    ("repro/train.py", "x: int = 1", "x: int = 2"),  # a dataclass nothing reached names
    ("repro/metrics.py", "return 1\n", "return 1\n\nif __name__ == '__main__':\n    print(auc())\n"),  # a CLI
])
def test_what_cannot_change_a_number_changes_no_identity(path, old, new):
    assert included(edited(path, old, new)) == included(CORE)


@pytest.mark.parametrize("path, old, new", [
    ("repro/train.py", "return rate * 2", "return rate * 3"),  # reached through fit
    ("repro/train.py", "RATE = 0.1", "RATE = 0.2"),  # a constant reached
    ("repro/train.py", "y = 2", "y = 3"),  # registered by an unknown decorator, named nowhere
    ("repro/metrics.py", "return 0.5", "return 0.6"),  # through a module alias
    ("repro/distributed.py", "return 1", "return 2"),  # the torchrun worker, reached by its module's name
    ("repro/train.py", "import torch\n", "import torch\ntorch.set_flush_denormal(True)\n"),  # a top-level effect
])
def test_a_real_change_to_what_the_computation_reaches_changes_the_identity(path, old, new):
    assert included(edited(path, old, new)) != included(CORE)


def test_a_whole_plugin_file_counts_every_definition():
    files = {**CORE, "methods/__init__.py": "", "methods/a.py": "def helper():\n    return 1\n"}
    before = included(files, ("methods/a.py",))
    assert set(before["methods/a.py"]) == {"helper"}
    assert included(edited("methods/a.py", "return 1", "return 2", files), ("methods/a.py",)) != before


def test_a_file_loaded_by_path_is_identified_whole():
    files = {**CORE, "methods/__init__.py": "",
             "methods/a.py": ("import importlib.util\n\ndef load():\n"
                              "    return importlib.util.spec_from_file_location('b', 'b.py')\n"),
             "methods/b.py": "def anything():\n    return 1\n"}
    before = included(files, ("methods/a.py",))
    assert "anything" in before["methods/b.py"]
    assert included(edited("methods/b.py", "return 1", "return 2", files), ("methods/a.py",)) != before


def test_the_data_preparation_is_a_boundary():
    files = {**CORE, "repro/data/__init__.py": "",
             "repro/data/prepare.py": "def prepare(source):\n    return clean(source)\n\n"
                                      "def clean(source):\n    return source\n\ndef raw_hash(x):\n    return x\n",
             "repro/run.py": CORE["repro/run.py"] + "\n\ndef open_data(s):\n    return prepare(s), raw_hash(s)\n"
                             "from repro.data.prepare import prepare, raw_hash\n"}
    files["repro/run.py"] = files["repro/run.py"].replace("return fit(config)", "return open_data(1) and fit(config)")
    units = included(files)
    assert set(units["repro/data/prepare.py"]) == {"raw_hash"}  # not prepare, nor clean that only it reaches
    assert included(edited("repro/data/prepare.py", "return source\n", "return None\n", files)) == units


def test_the_committed_core_reaches_its_dynamic_targets():
    """The dispatches found in the core: torchrun's `-m repro.distributed`, the registries'
    decorators, the training's comm hooks by name (a dict of functions)."""
    units = identity.reachable_units("repro/run.py", (), identity.disk_reader(ROOT))
    assert {"launch", "worker", "<main>"} <= set(units["repro/distributed.py"])
    assert {"FullEmbedding", "EMBEDDINGS"} <= set(units["repro/embeddings.py"])  # @register_embedding
    assert {"train", "predict", "COMM_HOOKS", "DataParallel"} <= set(units["repro/train.py"])
    assert "prepare" not in units["repro/data/prepare.py"] and "raw_hash" in units["repro/data/prepare.py"]
    assert not {"resolve", "inputs", "staleness", "execute", "teacher_identity"} & set(units["repro/run.py"])
    assert "repro/environment.py" not in units or "code_identity" not in units["repro/environment.py"]


def test_a_normalised_file_digest_ignores_comments_and_docstrings_only():
    text = b'"""Doc."""\nX = 1\n\ndef f():\n    """Doc."""\n    return X\n'
    same = b'"""Other doc."""\n# comment\nX = 1  # why\n\n\ndef f():\n    return X\n'
    other = b'"""Doc."""\nX = 2\n\ndef f():\n    """Doc."""\n    return X\n'
    assert identity.normalised_file_digest("a.py", text) == identity.normalised_file_digest("a.py", same)
    assert identity.normalised_file_digest("a.py", text) != identity.normalised_file_digest("a.py", other)


def test_indentation_is_structure():
    a = b"def f(x):\n    if x:\n        x = 1\n    return x\n"
    b = b"def f(x):\n    if x:\n        x = 1\n        return x\n"
    assert identity.normalised_file_digest("a.py", a) != identity.normalised_file_digest("a.py", b)


def test_a_local_name_or_a_class_field_is_not_a_module_definition():
    files = {**CORE, "repro/train.py": CORE["repro/train.py"].replace(
        "def unused():\n    return 3",
        "def unused():\n    return 3\n\n@dataclass\nclass Cfg:\n    unused: int = 1\n\n"
        "def local(unused):\n    return [unused for unused in range(unused)]")}
    files["repro/run.py"] = files["repro/run.py"].replace("return fit(config)", "return fit(config) + local(1) + Cfg().unused")
    units = included(files)
    assert {"local", "Cfg"} <= set(units["repro/train.py"]) and "unused" not in units["repro/train.py"]
    assert included(edited("repro/train.py", "return 3", "return 4", files)) == units
