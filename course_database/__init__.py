"""The course's one database switch: ``COURSE_DATABASE_URL``.

Unset, every lesson runs on an in-memory SQLite database and every assignment on a SQLite file next
to its notebook, as they always have. Set to a database URL (for example
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``), the lessons and assignments that use
``course_engine()`` run on that database instead, each in a schema of its own.
``course_async_engine()``, lesson 11's asyncio engine, follows the same switch.
``python tools/postgres_server.py`` starts a throwaway PostgreSQL server and prints the line that
sets it.
"""

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.exc import OperationalError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

VARIABLE = "COURSE_DATABASE_URL"
DEFAULT_URL = "sqlite://"
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")
LOCK_TIMEOUT = "10s"
"""How long emptying a schema waits for a connection that still uses it (then it says so)."""


def course_database_url() -> str:
    """The URL the course runs on: ``COURSE_DATABASE_URL`` if set, else in-memory SQLite."""
    return os.environ.get(VARIABLE) or DEFAULT_URL


def course_engine(
    schema: str | None = None,
    *,
    sqlite_file: str | os.PathLike[str] | None = None,
    **options: object,
) -> Engine:
    """An engine on the course's database; ``options`` go to ``create_engine()`` unchanged.

    On PostgreSQL, ``schema`` names a schema of the notebook's own, made empty here and put in
    the engine's URL as the connections' search_path: each run starts from no tables, leaves the
    server's other tables alone, and ``create_engine(engine.url)`` reaches the same tables.
    Without ``COURSE_DATABASE_URL``, ``sqlite_file`` (deleted here, for the same fresh start)
    replaces in-memory SQLite: a file that several connections and threads share.
    """
    configured = os.environ.get(VARIABLE)
    if not configured:
        if sqlite_file is None:
            return create_engine(DEFAULT_URL, **options)
        path = Path(sqlite_file)
        path.unlink(missing_ok=True)
        return create_engine(f"sqlite:///{path}", **options)
    url = make_url(configured)
    if schema is None or url.get_backend_name() != "postgresql":
        return create_engine(url, **options)
    engine = create_engine(in_schema(url, schema), **options)
    empty_schema(engine, schema)
    return engine


def in_schema(url: URL, schema: str) -> URL:
    """``url`` whose connections start with ``schema`` as their search_path (libpq's options)."""
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"schema {schema!r}: use lower-case letters, digits and underscores")
    setting = f"-csearch_path={schema}"
    given = url.query.get("options")
    return url.update_query_dict({"options": f"{given} {setting}" if given else setting})


def empty_schema(engine: Engine, schema: str) -> None:
    """Drop ``schema`` with everything in it, and create it again, empty."""
    with engine.begin() as connection:
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        try:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        except OperationalError as error:
            raise RuntimeError(
                f"schema {schema} is still in use by another connection (a session of an earlier "
                "run, left open): close it, or restart the kernel, and run this cell again"
            ) from error
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")


def course_async_engine(schema: str | None = None, **options: object) -> "AsyncEngine":
    """``course_engine()`` for asyncio: the same database, through an asyncio driver.

    In-memory SQLite becomes ``sqlite+aiosqlite://``; on PostgreSQL, psycopg serves both kinds of
    engine, so the URL stays the one ``course_engine(schema)`` makes (and empties the schema of).
    ``options`` go to ``create_async_engine()`` unchanged.
    """
    # Imported here: the asyncio extension needs greenlet at import, which the browser's Python
    # (Pyodide) lacks, and the lessons that run there import this module too.
    from sqlalchemy.ext.asyncio import create_async_engine

    plain = course_engine(schema)
    plain.dispose()  # it was only needed to set up the schema
    url = plain.url
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return create_async_engine(url, **options)
