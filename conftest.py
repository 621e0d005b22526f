"""The database each test runs on: SQLite, or PostgreSQL for the tests that need it (issue 13).

Lessons tagged `postgresql` (notebook-level metadata.tags) store PostgreSQL outputs, so nbval, the
browser test and the tests marked `postgresql` must run them against a server; every other test
runs on SQLite. One server is started for the whole session before the first test that needs it
(tools/postgres_server.py), unless COURSE_DATABASE_URL already names one; with pytest-xdist each
worker process that runs such a test starts its own. Before each test COURSE_DATABASE_URL is set in
this process when the test needs the server and unset otherwise, so the kernels the test starts
(nbval's, nbclient's, JupyterLab's) inherit the right one. The server is stopped and deleted when
the session ends. It lives here, at the root, so `pytest notebooks/NN-name.ipynb` has it too.

`pytest --course-database=postgresql` runs every selected test on PostgreSQL, and nbval also
applies tests/nbval-sanitize-postgresql.cfg, whose rules map PostgreSQL's spelling of the same
outputs (its SQL dialect, its URL) to the stored SQLite outputs.
"""

import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
from postgres_server import running_postgres  # noqa: E402

from course_database import VARIABLE  # noqa: E402

pytest_plugins = ["xdist_groups"]  # how `pytest -n 2` splits the suite (tools/xdist_groups.py)

TAG = "postgresql"
SERVER = pytest.StashKey[ExitStack]()
URL = pytest.StashKey[str]()  # the server's, once started
ON_THE_SERVER = pytest.StashKey[set[str]]()  # the node ids of the tests that run on it
POSTGRESQL_RULES = ROOT / "tests" / "nbval-sanitize-postgresql.cfg"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--course-database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the database every lesson and assignment runs on (postgresql: a throwaway server)",
    )


def on_postgresql(config: pytest.Config) -> bool:
    """Whether this run is the PostgreSQL pass (`--course-database=postgresql`)."""
    return config.getoption("--course-database") == "postgresql"


def postgresql_lessons() -> list[str]:
    """The stems of the lessons tagged `postgresql`."""
    return [
        path.stem
        for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
        if TAG in nbformat.read(path, as_version=4).metadata.get("tags", [])
    ]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{TAG}: the test needs COURSE_DATABASE_URL on PostgreSQL")
    config.stash[SERVER] = ExitStack()
    if on_postgresql(config):
        add_postgresql_rules(config)


def add_postgresql_rules(config: pytest.Config) -> None:
    """Point nbval at the usual sanitize rules, then the PostgreSQL ones (it reads one file)."""
    usual = config.getoption("nbval_sanitize_with", None)
    folder = config.stash[SERVER].enter_context(tempfile.TemporaryDirectory())
    merged = Path(folder) / "nbval-sanitize.cfg"
    parts = [Path(usual).read_text()] if usual else []
    merged.write_text("\n".join([*parts, POSTGRESQL_RULES.read_text()]))
    config.option.nbval_sanitize_with = str(merged)


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lessons = postgresql_lessons()
    config.stash[ON_THE_SERVER] = {
        item.nodeid
        for item in items
        if on_postgresql(config)
        or item.get_closest_marker(TAG)
        or any(lesson in item.nodeid for lesson in lessons)
    }


def server_url(config: pytest.Config) -> str:
    """The server's URL: COURSE_DATABASE_URL's when the run began, else one started now."""
    if URL not in config.stash:
        config.stash[URL] = os.environ.get(VARIABLE) or config.stash[SERVER].enter_context(
            running_postgres()
        )
    return config.stash[URL]


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures and nbval's kernel start
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Give the test COURSE_DATABASE_URL if it runs on the server; take it away if not."""
    if item.nodeid in item.config.stash[ON_THE_SERVER]:
        os.environ[VARIABLE] = server_url(item.config)
    else:
        os.environ.pop(VARIABLE, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[SERVER].close()
