# Two commands do all set-up on a fresh machine (see README):
#   make book   # creates .venv, installs the lock, runs every notebook at PROFILE (default cpu), builds the book
#   make test   # creates .venv, installs the lock, runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0
# Float results differ between CPUs and BLAS builds. `make test` runs the numerics-sensitive tests a
# second time under other kernel paths (ATen's non-vectorized kernels, MKL's compatible GEMM, numpy's
# generic OpenBLAS kernel; tests/test_kernel_paths.py checks that this changes the results here), so a
# test that holds only for this machine's round-off fails here rather than on a user's machine.
ALT_KERNELS := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE OPENBLAS_CORETYPE=Prescott
NUMERICS_TESTS := tests/test_fidelity.py tests/test_metrics.py tests/test_stats.py tests/test_repeatable.py tests/test_sampling.py tests/test_generator.py tests/test_classifiers.py

.PHONY: book test test-slow bench install system-deps lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "pip==26.3" "setuptools==84.2.1"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --prefix $(VENV) --name python3 >/dev/null
	rm -f $(VENV)/.installed-* && touch $@

# Headless Chromium prints the PDF and renders the book in the screenshot test (Debian package).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	  else echo "chromium is missing: install Debian's 'chromium' package (sudo apt-get install chromium)"; exit 1; fi; }

book: install system-deps
	$(VENV)/bin/cxr book --profile $(PROFILE)

test: install system-deps
	$(PY) -m pytest -q -m "not slow"
	env $(ALT_KERNELS) $(PY) -m pytest -q -m "not slow" -p no:cacheprovider $(NUMERICS_TESTS)

test-slow: install system-deps
	$(PY) -m pytest -q -m slow

bench: install
	$(VENV)/bin/cxr bench

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v -i '^cxrlib' > requirements.lock.new
	{ head -2 requirements.lock; cat requirements.lock.new; } > requirements.lock.tmp && rm requirements.lock.new
	mv requirements.lock.tmp requirements.lock

clean:
	rm -rf book/_build book/chapters runs
