# Two front doors: `make devnet` (set up, then a whole local network with a demo job)
# and `make test` (set up, then every test). Set-up is idempotent and only redone when
# the pinned dependencies change.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-12)
ANVIL  := node_modules/.bin/anvil
ARGS   ?=

.PHONY: setup devnet test bench lint artifact bubblewrap

setup: $(STAMP) $(ANVIL) bubblewrap

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: pip takes the CPU build; anything else would pull a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

$(ANVIL): package.json package-lock.json
	# `npm ci` refuses a lock without every platform's optional binary; the pins hold either way
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# The sandbox for OpenGPU sources and Golem scripts (gridtask/node/sandbox.py) runs them under
# bubblewrap. Installed when missing and we may (root with apt); otherwise say how, and go on:
# everything else works, and nodes simply do not serve sandboxed tasks.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (the task sandbox)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else \
	    echo "bubblewrap (bwrap) is missing: nodes cannot run OpenGPU sources or Golem scripts;" \
	      "install it: sudo apt-get install bubblewrap" >&2; \
	  fi; }

devnet: setup
	$(VENV)/bin/gridtask devnet $(ARGS)

# Four workers on any machine: most end-to-end tests wait (on blocks, deadlines, daemons
# starting) rather than compute, so four keep two cores busy. --dist loadfile keeps each
# file's tests, and the devnet its module shares, on one worker; tests/conftest.py hands out
# the longest files first. One at a time: `make test ARGS="-n 0"`.
TEST_WORKERS ?= 4

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(ARGS)

bench: setup
	$(PY) -m bench $(ARGS)

lint: setup
	$(VENV)/bin/ruff check gridtask tests bench
	$(VENV)/bin/mypy gridtask

artifact: setup
	$(PY) -m gridtask.chain.artifact
