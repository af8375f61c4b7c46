# Two commands do all set-up on a fresh machine:
#   make demo   - creates .venv, installs wmrl with every env, runs the main job on a small default
#                 (collect Breakout -> dataset summary -> stage-1 encoder -> probes -> stage-2 world model
#                 -> MPC planning in the real env)
#   make test   - creates .venv, installs wmrl with every env, runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.wmrl-installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch unless a torch (e.g. a CUDA build, see README) is already in the venv
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[all,dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	rm -rf data/demo runs/demo runs/demo-wm
	$(BIN)/wmrl collect --config demo --out data/demo
	$(BIN)/wmrl data info data/demo
	$(BIN)/wmrl train --stage 1 --config demo --data data/demo --out runs/demo
	$(BIN)/wmrl eval --stage 1 --checkpoint runs/demo --data data/demo
	$(BIN)/wmrl train --stage 2 --config demo --encoder runs/demo --data data/demo --out runs/demo-wm
	$(BIN)/wmrl eval --stage 2 --checkpoint runs/demo-wm --data data/demo --video runs/demo-wm/imagined.mp4
	$(BIN)/wmrl plan --config demo --checkpoint runs/demo-wm --episodes 1 --max-steps 300 --video runs/demo-wm/plan.mp4

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py --env breakout --env reacher --env crafter

clean:
	rm -rf $(VENV) data/demo runs/demo runs/demo-wm
