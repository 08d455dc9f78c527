# adrepro: every target sets itself up; a second call reinstalls nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# FORCE=1 reruns every experiment even when a done run with the same config exists.
FORCE  ?= 0
EXPERIMENTS ?= baselines

.PHONY: venv test reproduce-all bench report clean-cache

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Runs every experiment of conf/experiment/ that is missing or stale, then
# rebuilds the tables and plots under results/ from the run manifests alone.
reproduce-all: $(STAMP)
	$(PY) -m repro.experiments $(EXPERIMENTS) --force=$(FORCE)

report: $(STAMP)
	$(PY) -m repro.report $(EXPERIMENTS)

bench: $(STAMP)
	$(PY) -m pytest -q benchmarks --benchmark-only --benchmark-columns=mean,stddev,rounds,ops --benchmark-sort=name

clean-cache:
	rm -rf cache outputs multirun
