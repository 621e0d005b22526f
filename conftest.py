"""PostgreSQL for the tests that need it (issue 13).

Lessons tagged `postgresql` (notebook-level metadata.tags) store PostgreSQL outputs, so nbval, the
browser test and the tests marked `postgresql` must run them against a server. When the collected
tests include one of those, one server is started for the whole session before the first test runs
(tools/postgres_server.py), unless COURSE_DATABASE_URL already names one, and COURSE_DATABASE_URL is
set in this process, so every kernel a test starts inherits it. The server is stopped and deleted
when the session ends. It lives here, at the root, so `pytest notebooks/NN-name.ipynb` has it too.
"""

import sys
from contextlib import ExitStack
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
from postgres_server import postgres_for_the_course  # noqa: E402

TAG = "postgresql"
SERVER = pytest.StashKey[ExitStack]()


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


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lessons = postgresql_lessons()
    if any(
        item.get_closest_marker(TAG) or any(lesson in item.nodeid for lesson in lessons)
        for item in items
    ):
        config.stash[SERVER].enter_context(postgres_for_the_course())


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[SERVER].close()
