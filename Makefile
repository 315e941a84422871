# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned resolve would pull the CUDA wheels.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test,examples,bench,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pyro-flows demo

test: $(STAMP)
	$(VENV)/bin/ruff check pyro_flows tests examples benchmarks
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -x

lint: $(STAMP)
	$(VENV)/bin/ruff check pyro_flows tests examples benchmarks

# the gallery runs examples/ in their quick modes (about 2 minutes; only stale ones are rerun,
# GALLERY="--force" reruns all), then Sphinx builds the site with it
docs: $(STAMP)
	$(PY) docs/_ext/gallery.py $(GALLERY)
	$(VENV)/bin/sphinx-build -W -q -b html docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/transforms.py
	$(PY) benchmarks/density.py
	$(PY) benchmarks/amortized.py

clean:
	rm -rf $(VENV) docs/_build outputs
