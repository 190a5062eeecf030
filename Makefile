# Two commands matter: `make demo` (the main job) and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-steerboard

ASSETS := static/vendor/htmx.min.js

.PHONY: install assets dist browser demo simulate test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch that lies on this machine; a bare `torch` would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[server,demo,trl,dev]"
	# verl's declared requirements (numpy<2, transformers<5.11, ray with CUDA extras) conflict with
	# this environment although the parts we use import and run; install it and what it imports
	# without resolving its pins. See README, "verl".
	$(PY) -m pip install -q --no-deps verl==0.7.1 tensordict==0.10.0 ray==2.60.0 omegaconf==2.3.1 \
	  hydra-core==1.3.8 antlr4-python3-runtime==4.9.3 codetiming==1.4.0 torchdata==0.11.0 \
	  cloudpickle==3.1.3 pyvers==0.1.0 lazy-importer==0.1.0
	# ... and the light packages verl and ray import at load time.
	$(PY) -m pip install -q msgpack protobuf requests jsonschema
	touch $@

install: $(STAMP)

# htmx, its SSE extension and Plotly's basic bundle come from npm (package-lock.json pins them) into
# static/vendor/ for the editable install; setup.py's build_vendor owns the list, and the wheel and
# sdist builds run it too. Nothing is fetched from a CDN at run time and no third-party file is committed.
$(ASSETS): package.json package-lock.json setup.py | $(STAMP)
	$(PY) setup.py -q build_vendor --force

assets: $(ASSETS)

# The sdist and the wheel into dist/, as the Docker image's build stage makes them.
dist: install
	PYTHON=$(PY) sh scripts/build-dist.sh dist

# Browser tests drive Debian's chromium through Playwright (browser downloads fail here).
browser:
	@test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

demo: install assets
	$(VENV)/bin/steerboard demo

simulate: install
	$(PY) -m trainer_agent.simulate --scheduler dump --steps 200

test: install assets browser
	$(PY) -m pytest -q
	$(MAKE) lint

lint: install
	$(VENV)/bin/ruff check server trainer_agent tests bench setup.py
	$(VENV)/bin/mypy trainer_agent server

bench: install
	$(PY) bench/agent_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output bench/out build dist
