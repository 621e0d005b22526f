"""Checking helpers for the assignments' test cells.

Every check raises ``AssertionError`` with a message in three parts: what was expected, what came
back, and the misunderstanding that most likely explains the difference. Checks compare types and
identity (``type(x) is int``, ``a is b``), not only ``==``, and read the database through their own
``sqlite3`` connection, so a patched session or a look-alike object cannot fake a pass.

This module imports only the standard library and SQLAlchemy: grading needs no front end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import String, create_engine, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

STATES = ("transient", "pending", "persistent", "deleted", "detached")


def show(value: object) -> str:
    """``repr(value)``, or a description when even ``repr`` fails (a detached, expired object)."""
    try:
        return repr(value)
    except Exception as error:  # noqa: BLE001 - a message must never hide the real problem
        return f"<{type(value).__name__} whose repr raised {type(error).__name__}: {error}>"


def fail(what: str, expected: object, got: object, misunderstanding: str) -> NoReturn:
    """Raise the teaching message: what was checked, expected, got, likely misunderstanding."""
    raise AssertionError(
        f"{what}\n"
        f"  expected: {expected}\n"
        f"  got:      {got}\n"
        f"  likely misunderstanding: {misunderstanding}"
    )


def check(condition: bool, what: str, expected: object, got: object, misunderstanding: str) -> None:
    """Fail with the teaching message unless ``condition`` holds."""
    if not condition:
        fail(what, expected, got, misunderstanding)


def check_type(value: object, expected_type: type, what: str, misunderstanding: str) -> None:
    """Check that ``type(value) is expected_type`` exactly (a subclass or look-alike fails)."""
    check(
        type(value) is expected_type,
        what,
        f"an object of type {expected_type.__name__}",
        f"{show(value)} of type {type(value).__name__}",
        misunderstanding,
    )


def check_equal(got: object, expected: object, what: str, misunderstanding: str) -> None:
    """Check that ``got`` has exactly the type of ``expected`` and equals it."""
    check(
        type(got) is type(expected) and got == expected,
        what,
        show(expected),
        show(got),
        misunderstanding,
    )


def check_is(got: object, expected: object, what: str, misunderstanding: str) -> None:
    """Check identity: ``got is expected`` (the very same Python object)."""
    if expected is None or type(expected) is bool:
        wanted = f"exactly {expected!r} (checked with `is`)"
    else:
        wanted = f"the very object {show(expected)} (checked with `is`)"
    check(got is expected, what, wanted, f"another object, {show(got)}", misunderstanding)


def check_returns(call: Callable[[], Any], what: str, misunderstanding: str) -> Any:
    """Return ``call()``; an error it raises becomes the teaching message instead."""
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - any error is the wrong answer
        fail(what, "a value returned", f"{type(error).__name__}: {error}", misunderstanding)


def check_raises(
    expected_type: type[BaseException],
    call: Callable[[], object],
    what: str,
    misunderstanding: str,
) -> BaseException:
    """Check that ``call()`` raises ``expected_type`` (or a subclass); return the error."""
    try:
        result = call()
    except expected_type as error:
        return error
    except Exception as error:  # noqa: BLE001 - any other error is the wrong answer
        fail(
            what,
            f"{expected_type.__name__} raised",
            f"{type(error).__name__}: {error}",
            misunderstanding,
        )
    fail(
        what,
        f"{expected_type.__name__} raised",
        f"no error; it returned {show(result)}",
        misunderstanding,
    )


def table_rows(db_file: str | Path, table: str) -> list[tuple[Any, ...]]:
    """All rows of ``table`` ordered by their first column, read through a fresh sqlite3 connection.

    The connection is read-only and sees only committed data, never a session's pending changes.
    """
    path = Path(db_file).resolve()
    if not path.is_file():
        fail(
            f"Reading table {table!r}",
            f"the database file {path}",
            "no such file",
            "the notebook's set-up cell creates the database: run it before the test cells",
        )
    uri = f"{path.as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=5)) as connection:
        return connection.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()


def write_rows(db_file: str | Path, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Replace every row of ``table`` with ``rows``, through a fresh sqlite3 connection."""
    try:
        with closing(sqlite3.connect(Path(db_file), timeout=3)) as connection, connection:
            connection.execute(f'DELETE FROM "{table}"')
            for row in rows:
                marks = ", ".join("?" * len(row))
                connection.execute(f'INSERT INTO "{table}" VALUES ({marks})', row)
    except sqlite3.OperationalError as error:
        fail(
            f"Preparing table {table!r} for the test",
            "a database no session is writing to",
            f"sqlite3.OperationalError: {error}",
            "a session that flushed but was never committed or closed still holds the "
            "database's write lock: open sessions with `with Session(engine) as session:`",
        )


def check_rows(
    db_file: str | Path, table: str, expected: Sequence[tuple[Any, ...]], misunderstanding: str
) -> None:
    """Check the committed rows of ``table`` (ordered by first column) against ``expected``."""
    rows = table_rows(db_file, table)
    check(
        rows == [tuple(row) for row in expected],
        f"Committed rows of table {table!r}, read through an independent sqlite3 connection",
        list(expected),
        rows,
        misunderstanding,
    )


def state_name(obj: object) -> str:
    """The state SQLAlchemy itself reports for a mapped object, read from ``inspect(obj)``."""
    state = inspect(obj)
    for name in STATES:
        if getattr(state, name):
            return name
    raise AssertionError(f"SQLAlchemy reports no state for {obj!r}")  # pragma: no cover


def check_state(obj: object, expected: str, what: str, misunderstanding: str) -> None:
    """Check the state SQLAlchemy reports for ``obj``."""
    check_equal(state_name(obj), expected, what, misunderstanding)


# --- "predict the state": the scripted sequence, replayed against real SQLAlchemy ---------------

STATE_SCRIPT = (
    ('ada = User(name="Ada")', "a new object belongs to no session and has no row yet"),
    ("session.add(ada)", "add() only registers the object; nothing is written before a flush"),
    ("session.flush()", "the INSERT ran: the object has a row and an id in this session"),
    ("session.commit()", "commit ends the transaction, but the object stays in the session"),
    ("session.delete(ada)", "delete() only marks the object; the DELETE runs at the next flush"),
    (
        "session.flush()",
        "delete() and flush() have run but commit() has not: the row is gone in this "
        "transaction, and the object leaves the session only at commit",
    ),
    (
        "session.rollback()",
        "rolling back undoes the flushed DELETE: object and row are back as after the commit",
    ),
    ("session.expunge(ada)", "expunge() takes the object out of the session; its row remains"),
    (
        "session.add(ada)",
        "an object that was saved before keeps its identity: add() puts it back in the session "
        "at once, with no INSERT to wait for",
    ),
    ("session.delete(ada)", "delete() alone still only marks the object"),
    ("session.commit()", "commit flushes the DELETE, then the object leaves the session for good"),
    ("session.close()", "close() changes nothing for an object no session holds any more"),
)
"""The "predict the state" exercise: each step's code, and why ``ada`` is in its state after it."""


class _ScriptBase(DeclarativeBase):
    pass


class _ScriptUser(_ScriptBase):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def replay_state_script() -> list[str]:
    """Run ``STATE_SCRIPT`` on a private in-memory database; return ``ada``'s state after each."""
    engine = create_engine("sqlite://")
    _ScriptBase.metadata.create_all(engine)
    namespace: dict[str, Any] = {"User": _ScriptUser, "session": Session(engine)}
    states = []
    try:
        for code, _why in STATE_SCRIPT:
            exec(code, namespace)  # noqa: S102 - the steps are the constants above
            states.append(state_name(namespace["ada"]))
    finally:
        namespace["session"].close()
        engine.dispose()
    return states


def check_predictions(predictions: object, steps: range) -> None:
    """Check the predicted states of ``steps`` (1-based) against SQLAlchemy's own, replayed now."""
    check(
        type(predictions) is list
        and len(predictions) == len(STATE_SCRIPT)
        and all(type(p) is str and p in STATES for p in predictions),
        "PREDICTIONS",
        f"a list of {len(STATE_SCRIPT)} state names, each one of {', '.join(STATES)}",
        show(predictions),
        "write one state name (a lower-case string) for each step, in order",
    )
    actual = replay_state_script()
    for step in steps:
        code, why = STATE_SCRIPT[step - 1]
        check_equal(
            predictions[step - 1],
            actual[step - 1],
            f"the state of ada after step {step}, `{code}`",
            why,
        )


def outcome(call: Callable[[], Any]) -> tuple[Any, Exception | None]:
    """``(call(), None)``, or ``(None, error)`` when ``call()`` raises: a test then explains the
    error with one check per misunderstanding, outside any ``except`` block (so no traceback of
    the student's code is chained before the teaching message)."""
    try:
        return call(), None
    except Exception as error:  # noqa: BLE001 - the test explains whatever was raised
        return None, error
