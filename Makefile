# Each target installs what it needs into .venv/ on a fresh machine (Python 3.10+ with venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch and torchvision are pinned together: PyPI's torchvision does not load beside other torch builds.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint bench bench-gpu clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dckd demo --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/dckd bench --batch 2 --patch 32 --precision auto --loader --out runs/bench.json

# The GPU check (under 5 minutes on one GPU): fp32 released structure vs bf16 DCKD at the paper's
# per-GPU batch, FLOPs, achieved FLOP/s against the measured matmul peak, peak memory, the loader.
bench-gpu: $(STAMP)
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make bench-gpu: no CUDA device here (torch.cuda.is_available() is False)')"
	$(BIN)/dckd bench --device cuda --precision bf16 --loader --no-ray --negatives 5 --batch 16 --patch 48 \
		--steps 10 --warmup 3 --out runs/bench-gpu.json

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
