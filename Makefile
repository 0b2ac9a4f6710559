# Two commands do all the set-up: `make demo` and `make test`.
# Both create and reuse .venv and install what they need.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test venv browser bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch==2.13.0 is pinned in the same command as the packages that need it.
	$(BIN)/python -m pip install -q "torch==2.13.0" -e ".[test,export]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/raddiag demo --out $(DEMO_OUT)

# Chromium for the two headless-browser tests (report, web page); tests/conftest.py finds it.
# Installed here, in one place, when missing: with apt-get as root (CI, a fresh container);
# anywhere else a clear reason is printed and those two tests skip saying the same.
BROWSERS ?= chromium chromium-browser google-chrome
browser:
	@found=""; for b in $(BROWSERS); do command -v $$b >/dev/null 2>&1 && { found=$$(command -v $$b); break; }; done; \
	if [ -n "$$found" ]; then echo "browser: $$found"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: Chromium is missing and cannot be installed here (needs root and apt-get);" \
	       "install it yourself (e.g. 'sudo apt-get install chromium') or the two browser tests skip"; \
	else echo "browser: installing Chromium with apt-get"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  if apt-get update -qq && apt-get install -y -qq chromium >/dev/null; then echo "browser: $$(command -v chromium)"; \
	  else echo "browser: apt-get could not install chromium (no package mirror?); the two browser tests skip"; fi; \
	fi

# one pytest-xdist worker per core of a 2-core machine (7.5 min there against 14 in one process);
# TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900 -n $(TEST_WORKERS) tests

bench: $(STAMP)
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info
