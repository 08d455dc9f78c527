# adrepro: every target sets itself up; a second call reinstalls nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# FORCE=1 reruns every experiment even when a done run with the same config exists.
FORCE  ?= 0
EXPERIMENTS ?= baselines embedding_compression embedding_compression_curve embedding_compression_large apg pcf_gnn hpc_ladder

# Where `make reproduce-all` reruns: a local, git-ignored run store; results/ is the reference.
LOCAL  := reproduced

.PHONY: venv test reproduce-all compare promote bench report clean-cache

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Reruns every experiment on this machine into $(LOCAL)/ (cached there: a second call reruns
# nothing), builds its tables and plots there, then compares every cell with the committed
# reference in results/: $(LOCAL)/reproduction.md.
reproduce-all: $(STAMP)
	$(PY) -m repro.experiments $(EXPERIMENTS) --results-dir $(LOCAL) --force=$(FORCE)
	$(PY) -m repro.reproduce compare $(EXPERIMENTS)

compare: $(STAMP)
	$(PY) -m repro.reproduce compare $(EXPERIMENTS)

# Maintainers: make the local runs the committed reference (results/runs/...) and rebuild its tables.
promote: $(STAMP)
	$(PY) -m repro.reproduce promote $(EXPERIMENTS)

# Rebuilds the committed tables and plots under results/ from the committed manifests alone.
report: $(STAMP)
	$(PY) -m repro.report $(EXPERIMENTS)

bench: $(STAMP)
	$(PY) -m pytest -q benchmarks --benchmark-only --benchmark-columns=mean,stddev,rounds,ops --benchmark-sort=name

clean-cache:
	rm -rf cache outputs multirun
