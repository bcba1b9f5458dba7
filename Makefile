# The two set-up commands of the README: `make demo` and `make test`.
# Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first: these exact builds lie on the machine's local disk
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/netdissect demo --out runs/demo

# Debian's chromium for the browser tests (Playwright cannot download browsers here).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) browser
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_dissect.py

clean:
	rm -rf $(VENV) runs
