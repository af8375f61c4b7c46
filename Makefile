# Two commands do all set-up on a fresh machine:
#   make demo   - creates .venv, installs wmrl with every env, runs the main job on a small default:
#                 the online agent on Breakout (random data -> stage-1 V-JEPA encoder -> acting on Q
#                 while Q learns end to end and the world model beside it), then encoder probes, the
#                 agent's diagnostics and an episode acted by the 2-step search in the real env
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
	rm -rf runs/demo
	$(BIN)/wmrl run --config demo --out runs/demo
	$(BIN)/wmrl data info runs/demo/data
	$(BIN)/wmrl eval --stage 1 --checkpoint runs/demo/encoder --data runs/demo/data
	$(BIN)/wmrl eval --agent runs/demo --episodes 2
	$(BIN)/wmrl plan --checkpoint runs/demo --depth 2 --episodes 1 --max-steps 2000 --video runs/demo/plan.mp4

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py --env breakout --env reacher --env crafter

clean:
	rm -rf $(VENV) runs/demo
