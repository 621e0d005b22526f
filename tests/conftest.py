"""Fixtures shared by the modules in tests/ (their time budget: README, "Running the tests")."""

from __future__ import annotations

import functools
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
