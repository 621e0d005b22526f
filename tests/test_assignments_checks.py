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
    assert "independent connection" in message
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


# --- the teaching messages a student reads ----------------------------------------------------


def test_a_failure_renders_as_its_wrapped_message_and_nothing_else() -> None:
    long_value = list(range(60))
    with pytest.raises(AssertionError) as raised:
        checks.check_equal(long_value, [], "a long list", "long values wrap " * 12)
    error = raised.value
    shown = error._render_traceback_()  # what IPython prints instead of the traceback
    assert shown == checks.render("a long list", "[]", repr(long_value), "long values wrap " * 12)
    assert shown[0] == "✗ a long list" and all(len(line) <= checks.WIDTH for line in shown)
    assert len(shown) > 5  # the value and the misunderstanding were wrapped
    # the message itself stays one line per part, for the feedback page
    assert str(error).splitlines()[2] == f"  got:      {long_value!r}"


def test_a_passing_check_can_say_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    checks.passed("add_users, visible test")
    assert capsys.readouterr().out == "✓ add_users, visible test: passed\n"


def known_error_message(call) -> str:
    message = message_of(lambda: checks.check_returns(call, "the call", "the cell's own message"))
    assert "the cell's own message" not in message
    return message.rpartition("likely misunderstanding: ")[2]


@pytest.fixture
def engine(tmp_path: Path):
    engine = create_engine(f"sqlite:///{tmp_path / 'users.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(User(id=1, name="Ada"))
        session.commit()
    yield engine
    engine.dispose()


@pytest.mark.filterwarnings("ignore:New instance:sqlalchemy.exc.SAWarning")
def test_sqlalchemys_beginner_errors_get_their_own_teaching_message(engine) -> None:
    from sqlalchemy import select

    with Session(engine) as session:
        one = known_error_message(
            lambda: session.scalars(select(User).where(User.name == "Nobody")).one()
        )
        assert one.startswith("one() (and scalar_one()) raise NoResultFound")
        not_persisted = known_error_message(lambda: session.delete(User(id=1)))
        assert "a new User(id=...) is transient" in not_persisted
        none = known_error_message(lambda: session.delete(session.get(User, 99)))
        assert none.startswith("a lookup found no row and returned None")
        session.get(User, 1)
        begun = known_error_message(session.begin)
        assert begun.startswith("the caller owns the session and its transaction")
        ada = session.get(User, 1)
        with Session(engine) as other:
            attached = known_error_message(lambda: other.add(ada))
        assert attached.startswith("an object belongs to one session at a time")
        session.add(User(id=1, name="Twin"))
        with pytest.raises(Exception):  # noqa: B017, PT011 - the IntegrityError of the flush
            session.flush()
        pending = known_error_message(lambda: session.get(User, 1))
        assert pending.startswith("a flush failed earlier in this session")
    with Session(engine) as session:
        grace = session.get(User, 1)
        session.commit()
    detached = known_error_message(lambda: grace.name)
    assert detached.startswith("the object is detached")


def test_an_expected_error_of_another_known_kind_is_explained_too(engine) -> None:
    with Session(engine) as session:
        message = message_of(
            lambda: checks.check_raises(
                LookupError, lambda: session.delete(User(id=1)), "delete", "the cell's message"
            )
        )
    assert "got:      InvalidRequestError" in message and "is transient" in message


def test_a_session_left_open_is_caught_by_its_connection(engine) -> None:
    def leaks() -> User:
        session = Session(engine)
        user = session.get(User, 1)
        session.commit()
        session.refresh(user)
        session.expunge(user)
        return user

    def closes() -> User:
        with Session(engine, expire_on_commit=False) as session:
            user = session.get(User, 1)
            session.commit()
        return user

    assert checks.check_closes_its_sessions(engine, closes, "closes()", "close it").name == "Ada"
    message = message_of(lambda: checks.check_closes_its_sessions(engine, leaks, "leaks()", "x"))
    assert "1 connection(s) still checked out" in message
    memory = create_engine("sqlite://")
    with pytest.raises(TypeError, match="SingletonThreadPool does not count its connections"):
        checks.check_closes_its_sessions(memory, closes, "closes()", "close it")
    memory.dispose()


# --- no answer key in reach -------------------------------------------------------------------
# An answer key is a name a notebook can import that computes an exercise's answer from its
# inputs. The graded exercise whose answer a library could compute is object-states' state_of
# (the crud and scoped-sessions exercises change a database through the caller's session, which no
# helper does; the predictions are an ungraded self-check). So: every public name of every module
# of autograder and session_visualizer is called on objects in each of the five states (as
# `name(obj)`, `name(inspect(obj))`, and as an oracle `name(obj, state, ...)` that raises or not),
# and of every public class, each public method of an instance made on the objects' session.


def reachable_names() -> dict[str, object]:
    """The project's own public callables (widgets aside: they take a tracker, whose readers
    are probed, and show what those return)."""
    import importlib
    import pkgutil

    from ipywidgets import Widget

    import autograder
    import session_visualizer

    names: dict[str, object] = {}
    for package in (autograder, session_visualizer):
        modules = [package.__name__] + [
            f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
        ]
        for module_name in modules:
            module = importlib.import_module(module_name)
            for name, value in vars(module).items():
                if (
                    not name.startswith("_")
                    and callable(value)
                    and getattr(value, "__module__", "").startswith(package.__name__)
                    and not (isinstance(value, type) and issubclass(value, Widget))
                ):
                    names[f"{module_name}.{name}"] = value
    return names


def objects_in_every_state(session: Session, engine) -> dict[str, User]:
    transient = User(name="T")
    persistent = session.get(User, 1)
    deleted = User(name="D")
    session.add(deleted)
    session.flush()
    session.delete(deleted)
    session.flush()
    with Session(engine) as other:
        detached = other.get(User, 1)
    pending = User(name="P")
    session.add(pending)
    return {
        "transient": transient,
        "pending": pending,
        "persistent": persistent,
        "deleted": deleted,
        "detached": detached,
    }


def answers_states(call, objects: dict[str, User]) -> bool:
    """Whether ``call(obj)`` tells each object's state: by naming it, or by raising or not."""
    told = []
    for state, obj in objects.items():
        try:
            told.append(str(call(obj, state)) == state or call(obj, state) is True)
        except Exception:  # noqa: BLE001 - a probe that fails tells nothing
            told.append(False)
    return all(told)


def test_no_helper_a_notebook_can_import_names_an_objects_state(engine) -> None:
    from sqlalchemy import inspect

    answering = set()
    with Session(engine) as session:
        objects = objects_in_every_state(session, engine)
        probes = {
            "name(obj)": lambda f: lambda obj, _state: f(obj),
            "name(inspect(obj))": lambda f: lambda obj, _state: f(inspect(obj)),
            "oracle": lambda f: lambda obj, state: _passes(f, obj, state, objects),
        }
        for qualified, value in reachable_names().items():
            targets = {qualified: value}
            if isinstance(value, type):
                try:
                    instance = value(session)
                except Exception:  # noqa: BLE001 - not made on a session: no methods to probe
                    instance = None
                targets |= {
                    f"{qualified}().{method}": getattr(instance, method)
                    for method in dir(instance)
                    if instance is not None
                    and not method.startswith("_")
                    and callable(getattr(instance, method, None))
                }
            for name, target in targets.items():
                for probe, make in probes.items():
                    if answers_states(make(target), objects):
                        answering.add(f"{name} as {probe}")
    # the visualizer's own readers name states (that is their job); the grading sandbox cannot
    # import session_visualizer (tests/test_answer_corpus.py grades an answer that tries)
    assert {name for name in answering if not name.startswith("session_visualizer.")} == set()
    assert "session_visualizer.snapshot.state_name as name(inspect(obj))" in answering


def _passes(check, obj: User, state: str, objects: dict[str, User]) -> bool:
    """As an oracle: ``check(obj, state, ...)`` passes for the object's state only."""

    def quietly(candidate: str) -> bool:
        try:
            check(obj, candidate, "what", "why")
        except Exception:  # noqa: BLE001 - failing is the oracle's answer
            return False
        return True

    return quietly(state) and not any(quietly(other) for other in objects if other != state)
