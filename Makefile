# The two commands of README.md: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/faket-dask demo $(DEMO_OUT)

test: venv slurm copick-venv
	$(PY) -m pytest $(PYTEST_ARGS)

# copick 1.31 (pins zarr<3) in its own venv for tests/test_copick_export.py, built once (stamp).
# Never fails the build: without it the test skips and says why.
COPICK_VENV := .venv-copick
COPICK_STAMP := $(COPICK_VENV)/.installed
.PHONY: copick-venv
copick-venv:
	@test -f $(COPICK_STAMP) || { echo "building $(COPICK_VENV) (copick 1.31) for tests/test_copick_export.py"; \
	  mkdir -p $(COPICK_VENV); \
	  { $(PYTHON) -m venv $(COPICK_VENV) && $(COPICK_VENV)/bin/python -m pip install -q 'copick==1.31.*' \
	    && $(COPICK_VENV)/bin/python -c 'import copick' && touch $(COPICK_STAMP); } > $(COPICK_VENV)/build.log 2>&1 \
	  || echo "WARNING: could not build $(COPICK_VENV) (log: $(COPICK_VENV)/build.log); the copick round trip of tests/test_copick_export.py will SKIP"; }

# slurm-wlm + munge for tests/test_slurm.py (apt-get, as root; skipped when installed). Never
# fails the build: without them the script prints why, loudly, and the SLURM test skips.
.PHONY: slurm
slurm:
	@bash scripts/slurm_one_node.sh install || true

bench: venv
	$(PY) benchmarks/bench_import.py

clean:
	rm -rf $(VENV) $(COPICK_VENV) $(DEMO_OUT) .pytest_cache
