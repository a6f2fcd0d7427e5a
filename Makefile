# Two entry points: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint cluster-up cluster-down bench clean

venv: $(STAMP)

# torch goes in first, pinned, so nothing later pulls a CUDA build from the registry.
$(STAMP): setup.cfg pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==$(TORCH_VERSION)
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/hpcseg demo

cluster-up:
	bash scripts/local-slurm.sh up

cluster-down:
	bash scripts/local-slurm.sh down

test: venv
	bash scripts/run-tests.sh

lint: venv
	$(VENV)/bin/ruff check hpcseg tests benchmarks

bench: venv
	for b in benchmarks/*.py; do $(VPY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
