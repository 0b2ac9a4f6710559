# Two commands do all the set-up: `make demo` and `make test`.
# Both create and reuse .venv and install what they need.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test venv bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch==2.13.0 is pinned in the same command as the packages that need it.
	$(BIN)/python -m pip install -q "torch==2.13.0" -e ".[test,export]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/raddiag demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900 tests

bench: $(STAMP)
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info
