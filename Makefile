# One entry point per task; each target installs what it needs.
PYTHON ?= python3
VENV := .venv
SQS_VENV := .venv-sqs
BIN := $(VENV)/bin
MINISTACK_VERSION := 1.5.33
STAMP := $(VENV)/.installed
SQS_STAMP := $(SQS_VENV)/.installed-$(MINISTACK_VERSION)

.PHONY: install browser run test lint format typecheck bench clean

# .state holds supervisord's pid file and socket, the local SQS server's queues and the API's keys.
install: $(STAMP) $(SQS_STAMP)
	@mkdir -p .state

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# ministack pins botocore exactly, so it lives in a virtual environment of its own.
$(SQS_STAMP):
	$(PYTHON) -m venv $(SQS_VENV)
	$(SQS_VENV)/bin/pip install --quiet ministack==$(MINISTACK_VERSION)
	touch $@

# One log format for the whole run: text on a terminal, else JSON (QM_LOG_FORMAT chooses).
run: install
	@QM_LOG_FORMAT=$${QM_LOG_FORMAT:-$$(if [ -t 2 ]; then echo text; else echo json; fi)} $(BIN)/supervisord -c supervisord.conf

# The /docs and /ui browser tests need Debian's chromium; CI runs as root and installs it (about 15 s).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
		echo "chromium could not be installed: the /docs and /ui browser tests will be skipped here (and fail in CI)"

# The ministack pass (four test processes, pytest-xdist) and the moto pass (two) run side by side:
# the tests mostly wait on real subprocesses, and one pass after the other left the 2 cores 40 % idle
# (9:55 in a row; side by side with three + two 8:53 in .ci/run, with four + two 6:45-8:35, the
# two passes then ending together). Each test process has its own SQS server. The moto pass's
# output is printed once it ends; Ctrl-C stops both. The moto pass runs the api and e2e tests but
# those marked `one_server`: no SQS request while they run (or none but their API's start-up), or an
# outage made by pausing the server; moto could not change their outcome. Tests that start processes
# or workers are collected first (tests/conftest.py) so that all end on quick ones. Tests that time
# something (marked `alone`) run afterwards, one at a time, with nothing beside them, on ministack only
# (the one of them marked api skips itself on moto).
TEST_WORKERS ?= 4
MOTO_TEST_WORKERS ?= 2
MOTO_TEST_LOG := .state/test-moto.log
# PYTHONASYNCIODEBUG=1 puts the API processes the tests start in asyncio's debug mode; the tests'
# own loops get it from pytest's asyncio_debug option.
# bash's job control (set -m) gives the moto pass a process group of its own, so that it keeps a SIGINT
# it can be stopped with: a background job of a shell without it ignores SIGINT, and so does Python then.
test: SHELL := /bin/bash
test: install browser
	@export PYTHONASYNCIODEBUG=1; failed=0; \
	set -m; QM_TEST_SQS=moto $(BIN)/pytest -n $(MOTO_TEST_WORKERS) -m "(api or e2e) and not one_server and not alone" \
		> $(MOTO_TEST_LOG) 2>&1 & moto=$$!; set +m; \
	trap 'kill -INT $$moto 2>/dev/null; wait $$moto; exit 130' INT TERM; \
	echo "== ministack pass (the moto pass runs beside it; its output follows)"; \
	QM_TEST_SQS=ministack $(BIN)/pytest -n $(TEST_WORKERS) -m "not alone" || failed=1; \
	wait $$moto || failed=1; trap - INT TERM; \
	echo "== moto pass"; cat $(MOTO_TEST_LOG); \
	echo "== alone pass (ministack, one test at a time)"; \
	QM_TEST_SQS=ministack $(BIN)/pytest -m alone || failed=1; \
	exit $$failed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	$(BIN)/yamllint -c .yamllint.yaml compose.yaml .pre-commit-config.yaml deploy/keda-scaledobject.yaml

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

# Every SQS call at 0 and 15 ms of added round trip, ours and stock; the table also goes to .state/bench.json.
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(SQS_VENV) .state .pytest_cache .mypy_cache .ruff_cache
