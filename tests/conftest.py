"""Fixtures shared by the modules in tests/ (their time budget: README, "Running the tests")."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def alembic_head_asked_once() -> Iterator[None]:
    """nbgrader starts the `alembic` program each time it creates a gradebook, only to read the
    head revision of its own migrations: a 3-10 s process that answers the same for the whole
    run. Ask it once, for the gradebooks this process creates (`make_course`); a command the tests
    start (course-grade, nbgrader) still asks alembic itself."""
    api = sys.modules.get("nbgrader.api")
    if api is None:  # no collected module creates a gradebook in this process
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "get_alembic_version", functools.cache(api.get_alembic_version))
        yield


@pytest.fixture(scope="session", autouse=True)
def no_iri_grammars(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every nbgrader, course-grade and jupyter process the tests start imports nbformat, whose
    jsonschema imports `rfc3987_syntax` when it is installed (jupyter-events' extra), only to
    check the "iri" formats no notebook or nbgrader schema uses; its import builds 38 grammars:
    2.3 s of each such process's 4 s start. The processes the tests start find a module of that
    name that raises ImportError, as if it were not installed (jsonschema then skips those
    formats). Measured on tests/test_term_feedback.py: 73 s of CPU without this, 36 s with it."""
    if importlib.util.find_spec("rfc3987_syntax") is None:
        yield
        return
    folder = tmp_path_factory.mktemp("not-installed")
    (folder / "rfc3987_syntax.py").write_text(
        'raise ImportError("rfc3987_syntax is left out of the processes the tests start")\n'
    )
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(paths))
        yield
