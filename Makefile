# Two commands for a new user: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
# gevent workers (gunicorn.conf.py): one a core (bench/run.py --serving: 2 beat 3 on 2 cores); each
# serves many connections at once
WORKERS ?= $(shell nproc)

.PHONY: run test serve worker documents lint format clean fuzz chaos bench bench-full

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

## make run: install, migrate, load the demo data, serve on http://127.0.0.1:8000 (SQLite, debug) with
## the background worker beside it (PDFs, emails to the console, reminders); Ctrl-C stops both
run: $(STAMP)
	DJANGO_DEBUG=1 $(PY) manage.py migrate --noinput
	DJANGO_DEBUG=1 $(PY) manage.py seed_demo
	DJANGO_DEBUG=1 $(PY) manage.py queue_documents
	@echo "API:    http://$(HOST):$(PORT)/api/docs/ (the demo user above: POST /api/login/, then Authorize)"
	@echo "Admin:  http://$(HOST):$(PORT)/admin/ (the demo operator above)"
	@echo "Worker: renders PDFs and prints the emails it sends here (EMAIL_URL=console:)"
	@DJANGO_DEBUG=1 $(PY) manage.py run_worker --interval 1 & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	DJANGO_DEBUG=1 $(PY) manage.py runserver $(HOST):$(PORT)

## make test: install and run the whole suite (SQLite unless DATABASE_URL says otherwise)
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## make serve: production-style, DJANGO_DEBUG=0 (needs DJANGO_SECRET_KEY): gunicorn as ./gunicorn.conf.py
## sets it up (gevent workers, request slots, deadlines for slow clients); WORKERS=N to change the count.
## The background work runs apart: `make worker` (or `manage.py run_worker`), as many as you like
serve: $(STAMP)
	@test -n "$$DJANGO_SECRET_KEY" || { echo "Set DJANGO_SECRET_KEY first (see README)."; exit 1; }
	DJANGO_DEBUG=0 $(PY) manage.py migrate --noinput
	DJANGO_DEBUG=0 $(PY) manage.py collectstatic --noinput --verbosity 0
	DJANGO_DEBUG=0 $(VENV)/bin/gunicorn billing.wsgi:application --bind $(HOST):$(PORT) \
		--workers $(WORKERS) --access-logfile -

## make worker: production-style background worker, DJANGO_DEBUG=0: run one or more beside `make serve`, on
## any machines sharing the database (jobs are claimed with SKIP LOCKED, outbox rows by lease); it sends the
## email (EMAIL_URL), renders and stores the PDFs (MEDIA_ROOT or STORAGES) and queues the reminders due
worker: $(STAMP)
	@test -n "$$DJANGO_SECRET_KEY" || { echo "Set DJANGO_SECRET_KEY first (see README)."; exit 1; }
	DJANGO_DEBUG=0 $(PY) manage.py run_worker

## make documents: render the demo organization's issued invoices to PDF and PNG (pdftoppm) under
## bench/tmp/documents/, to look at them
documents: $(STAMP)
	DJANGO_DEBUG=1 $(PY) manage.py render_documents --out bench/tmp/documents

## make slow-clients: gunicorn as `make serve` runs it, 50 + 50 connections trickling bodies and headers;
## then PDFs of the largest draft rendered at once; /api/health/ must still answer within 1 s, and the
## tricklers must be cut at their deadlines
.PHONY: slow-clients
slow-clients: $(STAMP)
	$(PY) tests/live/slow_clients.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## make fuzz: schemathesis against /api/schema/ on a live server, every operation, longer run
fuzz: $(STAMP)
	$(PY) tests/live/fuzz.py --max-examples 200

## make chaos: gunicorn on PostgreSQL, concurrent clients with retries, SIGKILLed workers, then verify
chaos: $(STAMP)
	$(PY) tests/live/chaos.py --duration 60

## make bench: the quick benchmark (< 5 minutes); make bench-full: the million-invoice run
bench: $(STAMP)
	$(PY) bench/run.py --profile quick

bench-full: $(STAMP)
	$(PY) bench/run.py --profile full

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache test_db.sqlite3*
