# esper-ab: two commands on a fresh machine, `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Two pytest-xdist workers, one whole module per worker at a time (module-scoped fixtures: one
# Ray or one recording per module, as serially), the longest modules first (tests/suite_plan.py);
# `make test XDIST=` runs in one process.
XDIST ?= -n 2 --dist loadscope --no-loadscope-reorder

.PHONY: venv demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned first: a bare `torch` would pull several GB of CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/esper-ab demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25 $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu" -x $(XDIST) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check esper_ab tests benchmarks jobs

bench: $(STAMP)
	$(BIN)/python benchmarks/telemetry_overhead.py
	$(BIN)/python benchmarks/replay_throughput.py
	$(BIN)/python benchmarks/replay_search_speed.py
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/peer_tune.py
	$(BIN)/python benchmarks/time_to_verdict.py
	$(BIN)/python benchmarks/episode_time.py
	$(BIN)/python benchmarks/episode_profile.py --replicate 1
	$(BIN)/python benchmarks/episode_flops.py
	$(BIN)/python benchmarks/flagship_end_to_end.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
