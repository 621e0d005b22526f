"""How `make test` splits the suite between two processes (`pytest -n 2 --dist loadfile`).

pytest-xdist's loadfile sends each test file whole to one process, so a module's fixtures (a
JupyterLab server, a graded course, the kernel nbval runs a lesson's cells in) are set up once.
Here the modules that share the session fixture `graded_course` (tests/graded_corpus.py) also go
to one process together, so the corpus is graded once; a module that starts using it and is not
in SHARING still passes, it grades the corpus a second time. The two browser modules are put
first: together they take half of the suite's time, and either one started last would run alone
at the end while the other process idles (`--no-loadscope-reorder` keeps this order).
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadFileScheduling

SHARING = (
    "tests/test_answer_corpus.py",
    "tests/test_assignment_transactions_relationships.py",
    "tests/test_assignments.py",
)
FIRST = ("tests/test_lite.py", "tests/test_browser.py")


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class LoadFileSharingTheCorpus(LoadFileScheduling):
    """xdist's loadfile, with the files in SHARING as one unit of work."""

    def _split_scope(self, nodeid: str) -> str:
        file = _file(nodeid)
        return "the graded corpus" if file in SHARING else file


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: `pytest -p no:xdist` works too
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadFileScheduling | None:
    if config.getvalue("dist") == "loadfile":
        return LoadFileSharingTheCorpus(config, log)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        file = _file(item.nodeid)
        return FIRST.index(file) if file in FIRST else len(FIRST)

    items.sort(key=rank)
