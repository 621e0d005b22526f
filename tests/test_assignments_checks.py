"""The checking helpers of the assignments' test cells: strict comparisons, teaching messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from autograder import checks


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def message_of(call) -> str:
    with pytest.raises(AssertionError) as raised:
        call()
    return str(raised.value)


def test_a_failure_says_what_was_expected_what_came_back_and_why() -> None:
    message = message_of(lambda: checks.check_equal(3, 2, "add(1, 1)", "one plus one is two"))
    assert message.splitlines() == [
        "add(1, 1)",
        "  expected: 2",
        "  got:      3",
        "  likely misunderstanding: one plus one is two",
    ]


class LooksLikeAnything(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


@pytest.mark.parametrize(
    ("got", "expected"),
    [(True, 1), (1.0, 1), (LooksLikeAnything(5), 1), ("1", 1), ((1, 2), [1, 2])],
)
def test_equal_values_of_another_type_fail(got: object, expected: object) -> None:
    message = message_of(lambda: checks.check_equal(got, expected, "value", "types matter"))
    assert "types matter" in message


def test_check_type_wants_the_exact_type() -> None:
    checks.check_type(7, int, "id", "an int")
    message = message_of(lambda: checks.check_type(True, int, "id", "an int"))
    assert "got:      True of type bool" in message


def test_check_is_wants_the_very_object() -> None:
    ada = User(name="Ada")
    checks.check_is(ada, ada, "user", "the same object")
    message = message_of(lambda: checks.check_is(User(name="Ada"), ada, "user", "identity"))
    assert "checked with `is`" in message
    assert "exactly False" in message_of(lambda: checks.check_is(0, False, "flag", "a bool"))


def test_check_raises_returns_the_error_or_names_what_happened_instead() -> None:
    error = checks.check_raises(KeyError, lambda: {}["x"], "lookup", "missing keys raise")
    assert type(error) is KeyError
    wrong = message_of(lambda: checks.check_raises(KeyError, lambda: 1 / 0, "lookup", "why"))
    assert "got:      ZeroDivisionError: division by zero" in wrong
    silent = message_of(lambda: checks.check_raises(KeyError, lambda: 5, "lookup", "why"))
    assert "got:      no error; it returned 5" in silent


def test_check_returns_turns_an_error_into_a_teaching_message() -> None:
    assert checks.check_returns(lambda: 5, "call", "why") == 5
    message = message_of(lambda: checks.check_returns(lambda: 1 / 0, "call", "divide elsewhere"))
    assert "ZeroDivisionError" in message and "divide elsewhere" in message


def test_show_survives_a_repr_that_raises() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("detached")

    assert checks.show(Broken()) == "<Broken whose repr raised RuntimeError: detached>"


def test_the_database_is_read_independently_and_only_committed_rows_count(tmp_path: Path) -> None:
    db_file = tmp_path / "users.db"
    engine = create_engine(f"sqlite:///{db_file}")
    Base.metadata.create_all(engine)
    checks.write_rows(db_file, "users", [(1, "Ada"), (2, "O'Brien")])
    with Session(engine) as session:
        session.add(User(name="Grace"))
        session.flush()
        assert checks.table_rows(db_file, "users") == [(1, "Ada"), (2, "O'Brien")]
        session.commit()
    checks.check_rows(db_file, "users", [(1, "Ada"), (2, "O'Brien"), (3, "Grace")], "commit")
    message = message_of(lambda: checks.check_rows(db_file, "users", [(1, "Ada")], "delete"))
    assert "independent sqlite3 connection" in message
    engine.dispose()


def test_a_session_left_open_is_named_when_a_test_needs_the_database(tmp_path: Path) -> None:
    db_file = tmp_path / "users.db"
    engine = create_engine(f"sqlite:///{db_file}", connect_args={"timeout": 0})
    Base.metadata.create_all(engine)
    with Session(engine) as forgotten:
        forgotten.add(User(name="Grace"))
        forgotten.flush()
        message = message_of(lambda: checks.write_rows(db_file, "users", []))
    assert "database is locked" in message and "with Session(engine)" in message
    engine.dispose()


def test_a_missing_database_file_is_named(tmp_path: Path) -> None:
    message = message_of(lambda: checks.table_rows(tmp_path / "none.db", "users"))
    assert str(tmp_path / "none.db") in message and "set-up cell" in message


def test_grading_helpers_need_no_front_end() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, autograder.checks; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "session_visualizer" not in loaded and "ipywidgets" not in loaded
