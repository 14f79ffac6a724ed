# ripple — the two commands of the README's quick start, and their parts.
# `make demo`: set up (.venv) and run the whole pipeline on a small local graph.
# `make test`: set up (.venv) and run the test suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.ripple-installed

.PHONY: setup kernels demo test test-fast test-gpu clean

# Third-party dependencies live in a venv cached outside the clone, keyed by a hash of pyproject.toml and the
# constraints (what a CI dependency cache does): a fresh clone links it in and installs only ripple itself
# (seconds) instead of re-installing torch, Ray and PyG (about ten minutes on 2 cores).
DEPS_KEY := $(shell cat pyproject.toml constraints-cpu.txt | sha256sum | cut -c1-16)
DEPS_VENV ?= $(HOME)/.cache/ripple/deps-$(DEPS_KEY)
DEPS_STAMP := $(DEPS_VENV)/.complete

# The requirements of pyproject.toml: `$(call reqs,)` the core, `$(call reqs,test)` an extra's
reqs = $(shell $(PY) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	print(' '.join(repr(r) for r in (p['optional-dependencies']['$(1)'] if '$(1)' else p['dependencies'])))")

# Wheels only (--only-binary): nothing the demo needs compiles.
$(DEPS_STAMP):
	rm -rf $(DEPS_VENV)
	$(PY) -m venv $(DEPS_VENV)
	$(DEPS_VENV)/bin/python -m pip install -q --upgrade pip setuptools
	# CPU torch from this machine's disk first; clusters use the CUDA image (k8s/Dockerfile)
	$(DEPS_VENV)/bin/python -m pip install -q -c constraints-cpu.txt torch
	$(DEPS_VENV)/bin/python -m pip install -q --only-binary=:all: -c constraints-cpu.txt $(call reqs,)
	touch $(DEPS_STAMP)

# The test extra (moto, kubectl, cynetdiff, ...): wheels too, added to the same cached venv, resolved together
# with the core (boto3 alone would move botocore past the range s3fs's aiobotocore pins).
TEST_STAMP := $(DEPS_VENV)/.test
$(TEST_STAMP): $(DEPS_STAMP)
	$(DEPS_VENV)/bin/python -m pip install -q --only-binary=:all: -c constraints-cpu.txt $(call reqs,) $(call reqs,test)
	touch $(TEST_STAMP)

# ripple[kernels]: torch-scatter/torch-sparse have no PyPI wheels, so they build from source (~20 min on 2 cores,
# seconds once pip's wheel cache has them). Optional: `sampling.backend: torch-sparse`, the sampler benchmarks'
# baseline and the tests that compare with PyG's own sampler, which CI runs (.ci/run builds them first).
KERNELS_STAMP := $(DEPS_VENV)/.kernels
$(KERNELS_STAMP): $(DEPS_STAMP)
	MAX_JOBS=2 $(DEPS_VENV)/bin/python -m pip install -q -c constraints-cpu.txt --no-build-isolation $(call reqs,kernels)
	touch $(KERNELS_STAMP)

kernels: $(KERNELS_STAMP)

$(STAMP): $(DEPS_STAMP)
	rm -rf $(VENV)
	$(PY) -m venv --without-pip $(VENV)
	$(DEPS_VENV)/bin/python -c "import site, sys; print(f'import site; site.addsitedir({site.getsitepackages()[0]!r})')" \
		> $$($(BIN)/python -c "import site; print(site.getsitepackages()[0])")/ripple-deps.pth
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	# the `ray` CLI on this venv's interpreter (a head started with it imports this clone's ripple)
	printf '#!/bin/sh\nexec "$$(dirname "$$0")/python" -m ray.scripts.scripts "$$@"\n' > $(BIN)/ray
	chmod +x $(BIN)/ray
	$(BIN)/python -c "import ripple.sampling.backends as b; print('sampling kernels:', ', '.join(b.available()))"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/ripple demo --out ripple-demo

test: $(STAMP) $(TEST_STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-gpu: $(STAMP) $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m gpu

clean:
	rm -rf ripple-demo .pytest_cache
