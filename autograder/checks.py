"""Checking helpers for the assignments' test cells.

Every check raises ``AssertionError`` with a message in three parts: what was expected, what came
back, and the misunderstanding that most likely explains the difference. Checks compare types and
identity (``type(x) is int``, ``a is b``), not only ``==``, and read the database through a
connection of their own (``sqlite3`` for an assignment's SQLite file, the engine's driver for a
server such as PostgreSQL), never the student's session, so a patched session or a look-alike object
cannot fake a pass.

In Jupyter a failing check shows only that message, wrapped, as the cell's whole output: IPython
prints what an exception's ``_render_traceback_`` returns instead of the traceback, so none of these
helpers' frames shows. ``str(error)`` stays the unwrapped message the feedback page matches.
Errors a student's code raises while a check calls it (``check_returns``, ``check_raises``) become
teaching messages too; the common beginners' errors get their own explanation.

Nothing here computes an answer to an exercise: the helpers compare what a test cell hands them.
This module imports only the standard library and SQLAlchemy: grading needs no front end.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import textwrap
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import Engine
from sqlalchemy.exc import InvalidRequestError, NoResultFound, PendingRollbackError
from sqlalchemy.orm.exc import DetachedInstanceError, UnmappedInstanceError

STATES = ("transient", "pending", "persistent", "deleted", "detached")
WIDTH = 100
"""Columns a failure message is wrapped to in the notebook."""


def show(value: object) -> str:
    """``repr(value)``, or a description when even ``repr`` fails (a detached, expired object)."""
    try:
        return repr(value)
    except Exception as error:  # noqa: BLE001 - a message must never hide the real problem
        return f"<{type(value).__name__} whose repr raised {type(error).__name__}: {error}>"


def render(what: str, expected: object, got: object, misunderstanding: str) -> list[str]:
    """The lines a failing check shows in the notebook: its message, wrapped to ``WIDTH``."""
    lines = textwrap.wrap(f"✗ {what}", WIDTH, subsequent_indent="  ") or ["✗"]
    for label, text in (
        ("expected: ", expected),
        ("got:      ", got),
        ("likely misunderstanding: ", misunderstanding),
    ):
        first = f"  {label}"
        lines += textwrap.wrap(
            str(text),
            WIDTH,
            initial_indent=first,
            subsequent_indent=" " * len(first),
            break_long_words=True,
            replace_whitespace=True,
        ) or [first.rstrip()]
    return lines


def fail(what: str, expected: object, got: object, misunderstanding: str) -> NoReturn:
    """Raise the teaching message: what was checked, expected, got, likely misunderstanding."""
    __tracebackhide__ = True
    error = AssertionError(
        f"{what}\n"
        f"  expected: {expected}\n"
        f"  got:      {got}\n"
        f"  likely misunderstanding: {misunderstanding}"
    )
    lines = render(what, expected, got, misunderstanding)
    error._render_traceback_ = lambda: lines  # IPython shows these lines, not the traceback
    raise error


def passed(what: str) -> None:
    """Say in one line that a visible test cell passed."""
    print(f"✓ {what}: passed")


def check(condition: bool, what: str, expected: object, got: object, misunderstanding: str) -> None:
    """Fail with the teaching message unless ``condition`` holds."""
    __tracebackhide__ = True
    if not condition:
        fail(what, expected, got, misunderstanding)


def check_type(value: object, expected_type: type, what: str, misunderstanding: str) -> None:
    """Check that ``type(value) is expected_type`` exactly (a subclass or look-alike fails)."""
    __tracebackhide__ = True
    check(
        type(value) is expected_type,
        what,
        f"an object of type {expected_type.__name__}",
        f"{show(value)} of type {type(value).__name__}",
        misunderstanding,
    )


def check_equal(got: object, expected: object, what: str, misunderstanding: str) -> None:
    """Check that ``got`` has exactly the type of ``expected`` and equals it."""
    __tracebackhide__ = True
    check(
        type(got) is type(expected) and got == expected,
        what,
        show(expected),
        show(got),
        misunderstanding,
    )


def check_is(got: object, expected: object, what: str, misunderstanding: str) -> None:
    """Check identity: ``got is expected`` (the very same Python object)."""
    __tracebackhide__ = True
    if expected is None or type(expected) is bool:
        wanted = f"exactly {expected!r} (checked with `is`)"
    else:
        wanted = f"the very object {show(expected)} (checked with `is`)"
    check(got is expected, what, wanted, f"another object, {show(got)}", misunderstanding)


def explain_known_error(error: BaseException, what: str, expected: str) -> None:
    """Fail with the teaching message of a beginner's error SQLAlchemy raised; else return."""
    __tracebackhide__ = True
    got = f"{type(error).__name__}: {error}"
    text = str(error)
    if isinstance(error, NoResultFound):
        fail(
            what,
            expected,
            got,
            misunderstanding="one() (and scalar_one()) raise NoResultFound when no row "
            "matches; one_or_none() (or scalar_one_or_none()) returns None instead",
        )
    if isinstance(error, DetachedInstanceError):
        fail(
            what,
            expected,
            got,
            misunderstanding="the object is detached (its session was closed or removed) and "
            "its attributes were expired by commit(): read what you need before the session "
            "closes, or open it with expire_on_commit=False",
        )
    if isinstance(error, PendingRollbackError):
        fail(
            what,
            expected,
            got,
            misunderstanding="a flush failed earlier in this session, and the session refuses "
            "all work until the transaction is rolled back",
        )
    if isinstance(error, UnmappedInstanceError) and "NoneType" in text:
        fail(
            what,
            expected,
            got,
            misunderstanding="a lookup found no row and returned None, and None was handed on "
            "to the session: check for None before using what session.get() returns",
        )
    if isinstance(error, InvalidRequestError) and "already attached to session" in text:
        fail(
            what,
            expected,
            got,
            misunderstanding="an object belongs to one session at a time: expunge() it from the "
            "session that holds it before add() puts it in another, or let merge() copy it "
            "into the other",
        )
    if isinstance(error, InvalidRequestError) and "is not persisted" in text:
        fail(
            what,
            expected,
            got,
            misunderstanding="session.delete() takes an object the session loaded (persistent); "
            "a new User(id=...) is transient, whatever its id: load it with session.get() "
            "first, or run a delete(User).where(...) statement",
        )
    if isinstance(error, InvalidRequestError) and "transaction is already begun" in text:
        fail(
            what,
            expected,
            got,
            misunderstanding="the caller owns the session and its transaction: a function "
            "handed a session must not call session.begin() (it would commit the caller's "
            "work); change the objects and let the caller commit",
        )


def check_returns(call: Callable[[], Any], what: str, misunderstanding: str) -> Any:
    """Return ``call()``; an error it raises becomes the teaching message instead."""
    __tracebackhide__ = True
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - any error is the wrong answer
        explain_known_error(error, what, "a value returned")
        fail(what, "a value returned", f"{type(error).__name__}: {error}", misunderstanding)


def check_raises(
    expected_type: type[BaseException],
    call: Callable[[], object],
    what: str,
    misunderstanding: str,
) -> BaseException:
    """Check that ``call()`` raises ``expected_type`` (or a subclass); return the error."""
    __tracebackhide__ = True
    wanted = f"{expected_type.__name__} raised"
    try:
        result = call()
    except expected_type as error:
        return error
    except Exception as error:  # noqa: BLE001 - any other error is the wrong answer
        explain_known_error(error, what, wanted)
        fail(what, wanted, f"{type(error).__name__}: {error}", misunderstanding)
    fail(what, wanted, f"no error; it returned {show(result)}", misunderstanding)


def check_closes_its_sessions(
    engine: Engine, call: Callable[[], Any], what: str, misunderstanding: str
) -> Any:
    """Return ``call()``; fail if it leaves a connection of ``engine`` checked out.

    A session that is not closed keeps its connection while its transaction lasts (a
    ``refresh()`` or a query after ``commit()`` begins a new one). Garbage collection, which
    would return it later, is paused during the call. The engine's pool must count its
    connections (a file database's ``QueuePool`` does; in-memory SQLite's pool does not).
    """
    __tracebackhide__ = True
    if not hasattr(engine.pool, "checkedout"):
        raise TypeError(f"{type(engine.pool).__name__} does not count its connections")
    before = engine.pool.checkedout()
    collecting = gc.isenabled()
    gc.disable()
    try:
        result = check_returns(call, what, misunderstanding)
        left = engine.pool.checkedout() - before
    finally:
        if collecting:
            gc.enable()
    check(
        left <= 0,
        what,
        "every connection back in the pool when it returns (every session it opened closed)",
        f"{left} connection(s) still checked out by a session left open",
        misunderstanding,
    )
    return result


Database = Engine | str | os.PathLike
"""What the database helpers read and write: an assignment's engine, or a SQLite file's path."""
LOCK_SECONDS = 3
"""How long preparing a table waits for a session that holds it (then the test says why)."""


def sqlite_file(database: Database) -> Path | None:
    """The SQLite file ``database`` is (a path, or a SQLite engine's file); None for a server."""
    if not isinstance(database, Engine):
        return Path(database)
    if database.dialect.name != "sqlite":
        return None
    return Path(database.url.database or ":memory:")


def server_connection(engine: Engine) -> Any:
    """A new connection of the engine's own driver to its database (and schema), outside its pool
    and any session: it sees only what was committed."""
    arguments, keywords = engine.dialect.create_connect_args(engine.url)
    return engine.dialect.loaded_dbapi.connect(*arguments, **keywords)


def table_rows(database: Database, table: str) -> list[tuple[Any, ...]]:
    """All rows of ``table`` ordered by their first column, read through a new connection (a
    read-only ``sqlite3`` one for a SQLite file).

    It sees only committed data, never a session's pending changes.
    """
    __tracebackhide__ = True
    path = sqlite_file(database)
    if path is None:
        connection = server_connection(database)
    elif path.is_file():
        uri = f"{path.resolve().as_uri()}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, timeout=5)
    else:
        fail(
            f"Reading table {table!r}",
            f"the database file {path.resolve()}",
            "no such file",
            "the notebook's set-up cell creates the database: run it before the test cells",
        )
    with closing(connection):
        cursor = connection.cursor()
        cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
        rows = [tuple(row) for row in cursor.fetchall()]
        connection.rollback()
    return rows


def write_rows(database: Database, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Replace every row of ``table`` with ``rows``, through a new connection, and commit.

    The next id the database hands out is one more than the largest id written: SQLite does this
    by itself, and on PostgreSQL the id's sequence is set so.
    """
    __tracebackhide__ = True
    path = sqlite_file(database)
    if path is None:
        connection, marker = server_connection(database), "%s"
        locked = database.dialect.loaded_dbapi.OperationalError
    else:
        connection, marker = sqlite3.connect(path, timeout=LOCK_SECONDS), "?"
        locked = sqlite3.OperationalError
    try:
        with closing(connection):
            cursor = connection.cursor()
            if path is None:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_SECONDS}s'")
            cursor.execute(f'DELETE FROM "{table}"')
            for row in rows:
                marks = ", ".join([marker] * len(row))
                cursor.execute(f'INSERT INTO "{table}" VALUES ({marks})', row)
            if path is None:
                restart_ids(cursor, table)
            connection.commit()
    except locked as error:
        fail(
            f"Preparing table {table!r} for the test",
            "a table no session is writing to",
            f"{type(error).__module__}.{type(error).__name__}: {error}",
            "a session that flushed but was never committed or closed still holds its locks (on "
            "SQLite, the whole database's write lock): open sessions with "
            "`with Session(engine) as session:`",
        )


def restart_ids(cursor: Any, table: str) -> None:
    """Make a PostgreSQL table's id sequence go on after its largest id, as SQLite's rowid does."""
    cursor.execute(f'SELECT * FROM "{table}" LIMIT 0')
    key = cursor.description[0][0]
    cursor.execute(
        f'SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE(MAX("{key}"), 0) + 1, false) '
        f'FROM "{table}"',
        (f'"{table}"', key),
    )


def check_rows(
    database: Database, table: str, expected: Sequence[tuple[Any, ...]], misunderstanding: str
) -> None:
    """Check the committed rows of ``table`` (ordered by first column) against ``expected``."""
    __tracebackhide__ = True
    rows = table_rows(database, table)
    check(
        rows == [tuple(row) for row in expected],
        f"Committed rows of table {table!r}, read through an independent connection",
        list(expected),
        rows,
        misunderstanding,
    )


def outcome(call: Callable[[], Any]) -> tuple[Any, Exception | None]:
    """``(call(), None)``, or ``(None, error)`` when ``call()`` raises: a test then explains the
    error with one check per misunderstanding, outside any ``except`` block (so no traceback of
    the student's code is chained before the teaching message)."""
    try:
        return call(), None
    except Exception as error:  # noqa: BLE001 - the test explains whatever was raised
        return None, error
