"""The course's async engine (`course_async_engine()`, lesson 11) on each database.

The test marked `postgresql` gets COURSE_DATABASE_URL from the session's server (conftest.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from course_database import VARIABLE, course_async_engine

WITHOUT_GREENLET = """\
import sys

sys.modules["greenlet"] = None  # what the browser's Python (Pyodide) lacks: importing it fails
from course_database import course_engine

print(course_engine(schema="lesson_01").url)
"""
# Other tests make a table `made` in schemas of their own: look in this test's schema only.
WHERE_MADE = (
    "SELECT table_schema FROM information_schema.tables"
    " WHERE table_name = 'made' AND table_schema = 'test_async'"
)


async def _make_then_read(engine: AsyncEngine) -> list[int]:
    """Make a table with two rows on one connection, read them back on another, dispose."""
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE made (x int)"))
        await connection.execute(text("INSERT INTO made VALUES (1), (2)"))
    async with engine.connect() as connection:
        rows = (await connection.scalars(text("SELECT x FROM made ORDER BY x"))).all()
    await engine.dispose()
    return list(rows)


def test_without_the_variable_the_async_engine_is_one_in_memory_aiosqlite_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    engine = course_async_engine(schema="ignored", echo=True)
    assert str(engine.url) == "sqlite+aiosqlite://"
    assert engine.echo  # options reach create_async_engine()
    # Every connection sees the same in-memory database (lesson 11's sessions rely on it).
    assert asyncio.run(_make_then_read(engine)) == [1, 2]


@pytest.mark.postgresql
def test_on_postgresql_the_async_engine_is_psycopg_in_the_schema_it_empties() -> None:
    engine = course_async_engine(schema="test_async")
    assert (engine.dialect.name, engine.dialect.driver, engine.dialect.is_async) == (
        "postgresql", "psycopg", True,
    )  # fmt: skip
    assert asyncio.run(_make_then_read(engine)) == [1, 2]

    async def where_made(engine: AsyncEngine) -> str | None:
        async with engine.connect() as connection:
            schema = await connection.scalar(text(WHERE_MADE))
        await engine.dispose()
        return schema

    assert asyncio.run(where_made(engine)) == "test_async"
    assert asyncio.run(where_made(course_async_engine(schema="test_async"))) is None  # emptied


def test_the_lessons_that_run_in_the_browser_can_import_it_without_greenlet() -> None:
    """Only course_async_engine() needs SQLAlchemy's asyncio extension, which needs greenlet."""
    environment = {"PATH": "/usr/bin:/bin"}  # no COURSE_DATABASE_URL: in-memory SQLite
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_GREENLET], env=environment, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "sqlite://"
