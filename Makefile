# Two commands for a fresh clone:
#   make demo   installs what it needs, then runs a demo federation of four hospitals on this machine
#   make test   installs what it needs, then runs the whole test suite
# Everything comes from the package registries (PyPI, npm); nothing is downloaded at run time.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
REPORT ?= demo-run/report.json
PYTEST_ARGS ?=

.PHONY: demo test install browser clean

install: $(VENV)/.installed node_modules/.installed

# The browser tests drive Debian's Chromium (a browser download would fail here); installed once, as root.
browser:
	@command -v chromium >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned in pyproject.toml (==2.13.0): any range would pull a CUDA build of several GB.
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

demo: install
	$(BIN)/twinledger demo --report $(REPORT)

test: install browser
	$(BIN)/python -m pytest -n 2 --dist loadscope $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules demo-run contracts/build
