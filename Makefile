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

.PHONY: venv test reproduce-all compare promote bench report clean-cache peers peers-rerun

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

# Parity with peer libraries (peers/README.md; not part of `make test`): FuxiCTR's, DeepCTR-Torch's
# and adrepro's DeepFM with the same settings on the same exported rows, each peer in its own venv
# under .peers/ (git-ignored), one run after the other; writes results/peers.md. A second call
# reinstalls and reruns nothing; FORCE=1 reruns the runs (not the installs). PEERS_SCALE=smoke
# PEERS_REPORT=.peers/peers-smoke.md is a quick check; PEERS_ROWS=N caps the training rows.
PEERS        := .peers
PEERS_SCALE  ?= default
PEERS_ROWS   ?= 0
PEERS_REPORT ?= results/peers.md
PEERS_NAME   := world-$(PEERS_SCALE)$(if $(filter-out 0,$(PEERS_ROWS)),-rows$(PEERS_ROWS))
PEERS_DATA   := $(PEERS)/data/$(PEERS_NAME)
PEERS_OUT    := $(PEERS)/out/$(PEERS_NAME)
PEERS_ENV    := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 POLARS_MAX_THREADS=2
PEERS_RERUN  := $(if $(filter 1,$(FORCE)),peers-rerun)
PEERS_COMMON := peers/__init__.py peers/common.py peers/measure.py $(PEERS_DATA)/meta.json $(PEERS_RERUN)
MEASURE       = $(PEERS_ENV) $(PY) -m peers.measure --out $(@D)/measure.json --

$(PEERS)/venv-%/.installed: peers/requirements-%.txt
	test -x $(PEERS)/venv-$*/bin/python || $(PYTHON) -m venv $(PEERS)/venv-$*
	$(PEERS)/venv-$*/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(PEERS_DATA)/meta.json: peers/export.py datasets/world.py | $(STAMP)
	$(PY) -m peers.export --scale $(PEERS_SCALE) --max-train-rows $(PEERS_ROWS) --out $(PEERS_DATA)

$(PEERS_OUT)/fuxictr/result.json: peers/run_fuxictr.py $(PEERS)/venv-fuxictr/.installed $(PEERS_COMMON)
	rm -f $@
	$(MEASURE) $(PEERS)/venv-fuxictr/bin/python -m peers.run_fuxictr --data $(PEERS_DATA) --out $(@D)

$(PEERS_OUT)/deepctr/result.json: peers/run_deepctr.py $(PEERS)/venv-deepctr/.installed $(PEERS_COMMON) \
		| $(PEERS_OUT)/fuxictr/result.json
	rm -f $@
	$(MEASURE) $(PEERS)/venv-deepctr/bin/python -m peers.run_deepctr --data $(PEERS_DATA) --out $(@D)

$(PEERS_OUT)/adrepro/result.json: peers/run_adrepro.py $(STAMP) $(PEERS_COMMON) | $(PEERS_OUT)/deepctr/result.json
	rm -f $@
	$(MEASURE) $(PY) -m peers.run_adrepro --data $(PEERS_DATA) --out $(@D)

# adrepro once more with its own protocol's lazy SparseAdam on the tables (everything else as above).
$(PEERS_OUT)/adrepro_sparse/result.json: peers/run_adrepro.py $(STAMP) $(PEERS_COMMON) | $(PEERS_OUT)/adrepro/result.json
	rm -f $@
	$(MEASURE) $(PY) -m peers.run_adrepro --data $(PEERS_DATA) --out $(@D) --embedding-optimizer sparse_adam

PEERS_RUNS := $(foreach r,fuxictr deepctr adrepro adrepro_sparse,$(PEERS_OUT)/$(r)/result.json)

$(PEERS_REPORT): $(PEERS_RUNS) peers/report.py
	$(PY) -m peers.report --data $(PEERS_DATA) --runs $(PEERS_OUT) --out $@

peers: $(PEERS_REPORT)

peers-rerun:
