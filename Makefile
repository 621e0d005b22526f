# The two set-up commands of the README: `make course` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
# nbgrader runs `alembic` by name, so the environment's bin folder must be on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# JupyterLab settings of the course: saved notebooks keep their widgets' state (see jupyter-settings/).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.d/sqlalchemy-sessions.json
# The student's own copies of the lessons and assignments (ignored by git).
WORKSPACE := workspace

# `make test` runs pytest in two processes, a test file each; tools/xdist_groups.py says how.
PARALLEL := -n 2 --dist loadfile --no-loadscope-reorder
# What the PostgreSQL pass of `make test` runs (the rest does not depend on the database).
POSTGRESQL_PASS := notebooks tests/test_assignments_postgresql.py

.PHONY: course test system-packages lessons lite

# A virtual environment with the course and everything its tests need.
$(VENV)/.installed: pyproject.toml jupyter-settings/overrides.json
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lite]'
	install -D -m 644 jupyter-settings/overrides.json $(LAB_SETTINGS)
	touch $@

## Install everything and open the course in JupyterLab, at the first lesson, in the student's copies,
## without nbgrader's instructor tools (jupyter-settings/student/).
course: $(VENV)/.installed
	$(BIN)/python tools/working_copies.py $(WORKSPACE)
	JUPYTER_CONFIG_PATH=$(abspath jupyter-settings/student) $(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.root_dir=$(WORKSPACE) \
	  $(WORKSPACE)/notebooks/01-session-lifecycle.ipynb

## Debian packages the tests use: Chromium for the browser test, bubblewrap for the grading sandbox,
## PostgreSQL for the concurrency lesson (tools/postgres_server.py: initdb on PATH or Debian's).
system-packages:
	@command -v chromium >/dev/null && command -v bwrap >/dev/null && \
	  { command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium bubblewrap postgresql; }

## Install everything and run the whole test suite: ruff; every test on SQLite (lesson 12 on a
## throwaway PostgreSQL); then nbval over every lesson and the assignments' grading on PostgreSQL;
## last, a check that no test left a PostgreSQL server running.
test: $(VENV)/.installed system-packages
	$(BIN)/ruff check .
	$(BIN)/pytest $(PARALLEL)
	$(BIN)/pytest $(PARALLEL) --course-database=postgresql $(POSTGRESQL_PASS)
	@! pgrep -a -f '^[^ ]*postgres -D [^ ]*/course-postgres-' || \
	  { echo "a course PostgreSQL server still runs (the tests must stop theirs)" >&2; exit 1; }

## Re-execute every lesson and store its outputs (after changing a lesson or the visualizers).
lessons: $(VENV)/.installed
	$(BIN)/python tools/execute_lessons.py

## Build the course's JupyterLite site into build/lite/: static files for any web server.
lite: $(VENV)/.installed
	$(BIN)/python tools/build_lite.py
