# The two commands of README.md: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=
# Test processes (pytest-xdist, whole files per process: module fixtures are built once). The
# suite alone kept ~1.2 of 2 cores busy (cluster start-ups, CLI subprocesses); two processes
# took it from 28 to 22 minutes on the 2-core CI machine. At most 4: each may run a cluster.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/faket-dask demo $(DEMO_OUT)

# The three set-ups are independent: built side by side (-j3), ~2 minutes less on a fresh clone.
test:
	@$(MAKE) --no-print-directory -j3 venv slurm copick-venv
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

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
