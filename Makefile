# ripple — the two commands of the README's quick start, and their parts.
# `make demo`: set up (.venv) and run the whole pipeline on a small local graph.
# `make test`: set up (.venv) and run the test suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.ripple-installed

.PHONY: setup demo test test-fast test-gpu clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch from this machine's disk first; clusters use the CUDA image (k8s/Dockerfile)
	$(PIP) install -q -c constraints-cpu.txt torch
	$(PIP) install -q -c constraints-cpu.txt -e '.[test]'
	# torch-scatter/torch-sparse have no PyPI wheels: built once from source (~10 min), then cached by pip
	MAX_JOBS=2 $(PIP) install -q -c constraints-cpu.txt --no-build-isolation 'torch-scatter>=2.1' 'torch-sparse>=0.6.18'
	$(BIN)/python -c "import ripple.sampling.backends as b; print('sampling kernels:', ', '.join(b.available()))"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/ripple demo --out ripple-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

clean:
	rm -rf ripple-demo .pytest_cache
