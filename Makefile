# adrepro: every target sets itself up; a second call reinstalls nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# FORCE=1 reruns every experiment even when a done run with the same config exists.
FORCE  ?= 0
# JOBS=N trains N stale runs at a time, the cores divided among them (repro/experiments.py).
JOBS   ?= 1
EXPERIMENTS ?= baselines embedding_compression embedding_compression_curve embedding_compression_large apg pcf_gnn hpc_ladder hpc_ladder_large cascade_rdpr cascade_oracle cascade_creative

# Where `make reproduce-all` reruns: a local, git-ignored run store; results/ is the reference.
LOCAL  := reproduced

.PHONY: venv test fuzz preregister plan reproduce-all compare promote bench bench-check bench-baseline report readme-check clean-cache peers peers-rerun

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The property-based tests (marked `fuzz`: the readers', their shared line plumbing's and the config
# loaders') at FUZZ_EXAMPLES examples each, generated at random from FUZZ_SEED (drawn and printed
# here; `make fuzz FUZZ_SEED=N` replays a run). Not part of `make test`, which runs the same tests at
# their bounded counts. Ends with a "fuzz report": per test, the examples tried, the outcomes and
# the reader's rejected lines by kind (tests/conftest.py: fuzz_settings, fuzz_ledger).
FUZZ_EXAMPLES ?= 10000
ifndef FUZZ_SEED
FUZZ_SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
fuzz: $(STAMP)
	@echo "make fuzz: $(FUZZ_EXAMPLES) examples per test, hypothesis seed $(FUZZ_SEED) (replay: make fuzz FUZZ_SEED=$(FUZZ_SEED))"
	ADREPRO_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -m fuzz --hypothesis-seed=$(FUZZ_SEED) tests

# Reruns every experiment on this machine into $(LOCAL)/ (cached there: a second call reruns
# nothing), builds its tables and plots there, then compares every cell with the committed
# reference in results/: $(LOCAL)/reproduction.md.
reproduce-all: $(STAMP)
	$(PY) -m repro.experiments $(EXPERIMENTS) --results-dir $(LOCAL) --force=$(FORCE) --jobs $(JOBS)
	$(PY) -m repro.reproduce compare $(EXPERIMENTS)

# The pre-registration (issue 27, part 5): every claim's conditions and analysis with a power estimate
# from the committed runs, results/preregistration.{md,json}; after it is committed a changed claim
# needs REASON="why", appended to results/preregistration_log.md (a test fails until it is regenerated).
preregister: $(STAMP)
	$(PY) -m repro.preregister $(if $(REASON),--reason "$(REASON)",)

# What is stale in results/ against the checked-out code, why, and the time to regenerate it.
plan: $(STAMP)
	$(PY) -m repro.experiments $(EXPERIMENTS) --plan

compare: $(STAMP)
	$(PY) -m repro.reproduce compare $(EXPERIMENTS)

# Maintainers: make the local runs the committed reference (results/runs/...) and rebuild its tables.
promote: $(STAMP)
	$(PY) -m repro.reproduce promote $(EXPERIMENTS)

# Rebuilds the committed tables and plots under results/ from the committed manifests alone, then
# rewrites the README's marked figures from them (repro/readme_figures.py) and its statement of
# which committed results are stale (repro/freshness.py).
report: $(STAMP)
	$(PY) -m repro.report $(EXPERIMENTS)
	$(PY) -m repro.readme_figures --write
	$(PY) -m repro.freshness --write

# Fails, listing each one, where a marked README figure differs from results/ (also part of `make test`).
readme-check: $(STAMP)
	$(PY) -m repro.readme_figures --check
	$(PY) -m repro.freshness

bench: $(STAMP)
	$(PY) -m pytest -q benchmarks --benchmark-only --ignore=benchmarks/test_ratio_guards.py --benchmark-columns=mean,stddev,rounds,ops --benchmark-sort=name

# Regression checks that can fail (benchmarks/check.py says why each choice; not in `make test`:
# timings are noisy). Compares a selection of benchmarks with this CPU's committed baseline,
# benchmarks/baselines/<cpu model>/, failing where a median is more than 25% slower or where this
# CPU has no baseline, then runs the same-run ratio guards (benchmarks/test_ratio_guards.py).
# Run it on a quiet machine, before and after a change to the trainer, loader or embeddings.
bench-check: $(STAMP)
	$(PY) -m benchmarks.check check

# Maintainers, on a quiet machine: save (replace) this CPU's baseline, then commit it.
bench-baseline: $(STAMP)
	$(PY) -m benchmarks.check baseline

clean-cache:
	rm -rf cache outputs multirun

# Parity with peer libraries (peers/README.md; not part of `make test`): FuxiCTR's, DeepCTR-Torch's
# and adrepro's DeepFM with the same settings on the same exported rows, each peer in its own venv
# under .peers/ (git-ignored), one run after the other; writes results/peers.md. A second call
# reinstalls and reruns nothing; FORCE=1 reruns the runs (not the installs). PEERS_SCALE=smoke
# PEERS_REPORT=.peers/peers-smoke.md is a quick check; PEERS_ROWS=N caps the training rows.
# PEERS_CRITEO=N trains on a generated Criteo-format file of N lines instead of the world
# (reczoo's Criteo_x4 layout, each library's own Criteo preprocessing) -> results/peers_criteo.md.
# PEERS_VARIANT=highcard exports a named variant of the world (peers/export.py: VARIANTS; issue 9's
# 10M+ embedding rows) -> results/peers_highcard.md, with FuxiCTR, adrepro's lazy SparseAdam and
# adrepro's dense Adam at seeds 0 and 1 (FuxiCTR's and adrepro's dense epochs take ~15 min each there).
# PEERS_LIBS and PEERS_SEEDS choose the runs.
PEERS        := .peers
PEERS_SCALE  ?= default
PEERS_ROWS   ?= 0
PEERS_CRITEO ?= 0
PEERS_VARIANT ?=
PEERS_IS_CRITEO := $(filter-out 0,$(PEERS_CRITEO))
PEERS_REPORT ?= $(if $(PEERS_IS_CRITEO),results/peers_criteo.md,$(if $(PEERS_VARIANT),results/peers_$(PEERS_VARIANT).md,results/peers.md))
PEERS_WORLD  := $(if $(PEERS_VARIANT),$(PEERS_VARIANT),$(PEERS_SCALE))
PEERS_NAME   := $(if $(PEERS_IS_CRITEO),criteo-rows$(PEERS_CRITEO),world-$(PEERS_WORLD)$(if $(filter-out 0,$(PEERS_ROWS)),-rows$(PEERS_ROWS)))
PEERS_EXPORT := $(if $(PEERS_IS_CRITEO),--criteo-rows $(PEERS_CRITEO),$(if $(PEERS_VARIANT),--variant $(PEERS_VARIANT),--scale $(PEERS_SCALE)) --max-train-rows $(PEERS_ROWS))
PEERS_DATA   := $(PEERS)/data/$(PEERS_NAME)
PEERS_OUT    := $(PEERS)/out/$(PEERS_NAME)
PEERS_ENV    := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 POLARS_MAX_THREADS=2
PEERS_RERUN  := $(if $(filter 1,$(FORCE)),peers-rerun)
PEERS_COMMON := peers/__init__.py peers/common.py peers/measure.py $(PEERS_DATA)/meta.json $(PEERS_RERUN)

$(PEERS)/venv-%/.installed: peers/requirements-%.txt
	test -x $(PEERS)/venv-$*/bin/python || $(PYTHON) -m venv $(PEERS)/venv-$*
	$(PEERS)/venv-$*/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(PEERS_DATA)/meta.json: peers/export.py $(if $(PEERS_IS_CRITEO),datasets/criteo.py,datasets/world.py) | $(STAMP)
	$(PY) -m peers.export $(PEERS_EXPORT) --out $(PEERS_DATA)

# One measured run of one library at one training seed, in its own process; each run waits for the
# previous one (an order-only prerequisite), so no two runs ever share the CPU. Arguments: name,
# seed, prerequisites, command.
PEERS_RUNS :=
PEERS_PREV :=
define PEERS_RUN
$(PEERS_OUT)/$(1)/seed$(2)/result.json: $(3) $(PEERS_COMMON) | $(PEERS_PREV)
	rm -f $$@
	$(PEERS_ENV) $(PY) -m peers.measure --out $$(@D)/measure.json -- $(4) --data $(PEERS_DATA) --out $$(@D) --seed $(2)
PEERS_RUNS += $(PEERS_OUT)/$(1)/seed$(2)/result.json
PEERS_PREV := $(PEERS_OUT)/$(1)/seed$(2)/result.json
endef
# Seed 0 is the comparison; seeds 1 and 2 give the spread of AUC and speed. Besides the three
# libraries: adrepro with its own protocol's lazy SparseAdam on the tables, and adrepro with
# FuxiCTR's initialisation (the one setting each library keeps its own default for).
PEERS_SEEDS ?= $(if $(PEERS_VARIANT),0 1,0 1 2)
PEERS_LIBS  ?= $(if $(PEERS_VARIANT),fuxictr adrepro_sparse adrepro,fuxictr deepctr adrepro adrepro_sparse adrepro_fuxictr_init)
PEERS_DEPS_fuxictr := peers/run_fuxictr.py $(PEERS)/venv-fuxictr/.installed
PEERS_CMD_fuxictr  := $(PEERS)/venv-fuxictr/bin/python -m peers.run_fuxictr
PEERS_DEPS_deepctr := peers/run_deepctr.py $(PEERS)/venv-deepctr/.installed
PEERS_CMD_deepctr  := $(PEERS)/venv-deepctr/bin/python -m peers.run_deepctr
PEERS_DEPS_adrepro := peers/run_adrepro.py $(STAMP)
PEERS_CMD_adrepro  := $(PY) -m peers.run_adrepro
PEERS_DEPS_adrepro_sparse := $(PEERS_DEPS_adrepro)
PEERS_CMD_adrepro_sparse  := $(PY) -m peers.run_adrepro --embedding-optimizer sparse_adam
PEERS_DEPS_adrepro_fuxictr_init := $(PEERS_DEPS_adrepro)
PEERS_CMD_adrepro_fuxictr_init  := $(PY) -m peers.run_adrepro --init fuxictr
$(foreach seed,$(PEERS_SEEDS),$(foreach lib,$(PEERS_LIBS),\
  $(if $(PEERS_CMD_$(lib)),,$(error PEERS_LIBS: unknown run '$(lib)'; known: fuxictr deepctr adrepro adrepro_sparse adrepro_fuxictr_init))\
  $(eval $(call PEERS_RUN,$(lib),$(seed),$(PEERS_DEPS_$(lib)),$(PEERS_CMD_$(lib))))))

$(PEERS_REPORT): $(PEERS_RUNS) peers/report.py
	$(PY) -m peers.report --data $(PEERS_DATA) --runs $(PEERS_OUT) --out $@

peers: $(PEERS_REPORT)

peers-rerun:
