"""The migration reads each manifest's files at its recorded commit, verified by their raw digests."""

import subprocess

from repro import identity
from repro.migrate_identity import GitFiles, _hashes


def git(root, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_a_file_is_read_where_its_recorded_digest_is(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@t")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "a.py").write_text("X = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-qm", "one")
    first = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "a.py").write_text("X = 2\n")
    git(tmp_path, "commit", "-qam", "two")
    files = GitFiles(tmp_path)
    digest = {n: identity.raw_digest(f"X = {n}\n".encode()) for n in (1, 2, 3)}

    problems: list[str] = []
    assert files.verified_reader(first, {"a.py": digest[1]}, False, problems)("a.py") == b"X = 1\n"
    # a run made at `first` on a dirty tree whose file is what HEAD holds now
    assert files.verified_reader(first, {"a.py": digest[2]}, True, problems)("a.py") == b"X = 2\n"
    assert problems == []
    # neither the commit nor HEAD has the bytes the run recorded: reported, read as missing
    assert files.verified_reader(first, {"a.py": digest[3]}, True, problems)("a.py") is None
    assert len(problems) == 1 and "a.py" in problems[0]


def test_the_config_hash_drops_only_the_thread_count():
    config = {"data": {"name": "world"}, "model": {}, "embedding": {}, "seed": 1, "cache_root": "cache",
              "train": {"threads": 2, "progress": False, "keep_predictions": [], "lr": 0.1}}
    other_threads = {**config, "train": {**config["train"], "threads": 8}}
    other_lr = {**config, "train": {**config["train"], "lr": 0.2}}
    assert _hashes(config, drop_threads=True) == _hashes(other_threads, drop_threads=True)
    assert _hashes(config, drop_threads=False) != _hashes(other_threads, drop_threads=False)
    assert _hashes(config, drop_threads=True) != _hashes(other_lr, drop_threads=True)


def test_the_migration_hashes_a_config_as_resolve_does(run_config):
    from repro.run import resolve

    run = resolve(run_config())
    assert _hashes(run.config, drop_threads=True) == (run.config_hash, run.run_dir.parent.name.rsplit("-", 1)[1])
