# Two commands matter: `make demo` (the main job) and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-steerboard

.PHONY: install demo simulate test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch that lies on this machine; a bare `torch` would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[server,demo,dev]"
	touch $@

install: $(STAMP)

demo: install
	$(PY) -m trainer_agent.simulate --scheduler dump --steps 200

simulate: install
	$(PY) -m trainer_agent.simulate --scheduler dump --steps 200

test: install
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check server trainer_agent tests bench
	$(VENV)/bin/mypy trainer_agent

lint: install
	$(VENV)/bin/ruff check server trainer_agent tests bench examples scripts
	$(VENV)/bin/mypy trainer_agent server

bench: install
	$(PY) bench/agent_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output bench/out
