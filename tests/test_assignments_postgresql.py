"""The four assignments on PostgreSQL as well as SQLite (issue 13).

`course-grade` grades on SQLite whatever COURSE_DATABASE_URL says: its kernels run sandboxed, with
no network and a clean environment, so each submission gets a SQLite file of its own and nothing is
shared between students. This module shows that the assignments grade the same on PostgreSQL, in
the PostgreSQL pass (`pytest --course-database=postgresql tests/test_assignments_postgresql.py`;
without the option the tests that need a server are skipped and none is started). Each notebook is
what nbgrader's autograde runs (the source's cells, hidden tests included, with the student's
answers in the answer cells), executed in an unsandboxed kernel whose COURSE_DATABASE_URL names a
database of its own on the run's server, two kernels at a time; a test cell scores its points when
it raises nothing, as nbgrader scores it. The solutions earn every point, the blank notebooks
none, and chosen wrong answers of the corpora exactly what they earn on SQLite.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_assignment_transactions_relationships as fourth
from graded_corpus import BLANK, SOLVED, mutation_pass
from nbclient import NotebookClient
from nbformat import NotebookNode
from sqlalchemy import Engine, String, create_engine, make_url, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from test_answer_corpus import CORPUS, exercise_of_cells
from test_assignments import (
    ASSIGNMENTS,
    exercise_points,
    is_solution_cell,
    nbgrader_meta,
    read_notebook,
)

from autograder import checks
from course_database import VARIABLE, course_engine, in_schema

ROOT = Path(__file__).resolve().parents[1]
KERNELS_AT_ONCE = 2
CELL_TIMEOUT = 120
# The wrong answers graded on PostgreSQL: student wrong-k answers each exercise named in the k-th
# mapping with that answer (the solution elsewhere). Chosen for what a database decides: commits
# and rollbacks of a caller's session, sessions left open, ids, savepoints, locks, cascades.
WRONG_ON_POSTGRESQL = {
    "crud": [
        {
            "add-users": "commits-the-callers-session",
            "find-user": "case-insensitive",
            "rename-user": "merge-a-new-object",
            "delete-user": "no-check-for-none",
            "find-or-create": "commits-the-callers-session",
        },
        {
            "add-users": "a-session-of-its-own",
            "find-user": "sql-text-with-the-name-pasted-in",
            "rename-user": "sql-text-update",
            "delete-user": "delete-without-where",
            "find-or-create": "autoflush-turned-off",
        },
    ],
    "object-states": [
        {"state-of": "flushes-first", "capitalise-name": "never-closes"},
        {"state-of": "was-deleted-means-deleted", "capitalise-name": "no-commit"},
    ],
    "scoped-sessions": [
        {
            "make-registry": "one-registry-for-all-callers",
            "worker": "swallows-the-error",
            "sharing": "make-transient-to-move",
        },
        {
            "make-registry": "a-sessionmaker",
            "worker": "removes-only-after-success",
            "sharing": "merge-without-expunge",
        },
    ],
    "transactions-relationships": [
        {
            "import-users": "taken names looked up first, the database's other refusals ignored",
            "register": "a taken name looked up first, an empty name not foreseen",
            "order-lines": "passive_deletes with no ON DELETE CASCADE in the schema",
            "load-users": "a session that is never closed",
        },
        {
            "import-users": "one savepoint for every name",
            "register": "flushed, never committed",
            "order-lines": "delete and delete-orphan without save-update",
            "load-users": "eager loading in session.begin(), whose commit expires everything",
        },
    ],
}


@dataclass(frozen=True)
class Wrong:
    """A wrong answer graded on PostgreSQL, and the points its exercise earns on SQLite."""

    assignment: str
    exercise: str
    name: str
    code: str
    earns: int
    student: str

    @property
    def id(self) -> str:
        return f"{self.assignment}:{self.exercise}:{self.name}"


def wrong_answer(assignment: str, exercise: str, name: str, student: str) -> Wrong:
    """The corpus's answer ``name`` to ``exercise``, with the points the corpus expects."""
    if assignment == fourth.ASSIGNMENT:
        [answer] = [a for a in fourth.WRONG if (a.exercise, a.name) == (exercise, name)]
        return Wrong(
            assignment, exercise, name, answer.code, sum(answer.points.values()), student
        )
    [answer] = [a for a in CORPUS[assignment][exercise] if a.name == name]
    assert answer.keeps is not None and answer.total is None, f"{name}: not a plain wrong answer"
    return Wrong(assignment, exercise, name, answer.source, answer.keeps, student)


WRONG = [
    wrong_answer(assignment, exercise, name, f"wrong-{number}")
    for assignment, students in WRONG_ON_POSTGRESQL.items()
    for number, answers in enumerate(students, 1)
    for exercise, name in answers.items()
]


def graded_form(assignment: str, answers: dict[str, str]) -> NotebookNode:
    """The notebook nbgrader's autograde runs: the source's cells (hidden tests included), with
    ``answers`` (by grade_id) in the answer cells and the solutions in the others."""
    source = read_notebook(ROOT / "source", assignment)
    solutions = mutation_pass.solutions(source)
    nb = copy.deepcopy(source)
    for cell in nb.cells:
        if is_solution_cell(cell):
            grade_id = nbgrader_meta(cell)["grade_id"]
            cell.source = answers.get(grade_id, solutions[grade_id])
    return nb


def notebooks() -> dict[tuple[str, str], NotebookNode]:
    """{(assignment, student): notebook} of every student graded on PostgreSQL."""
    made = {}
    for assignment in ASSIGNMENTS:
        release = read_notebook(ROOT / "release", assignment)
        stubs = {
            nbgrader_meta(cell)["grade_id"]: cell.source
            for cell in release.cells
            if is_solution_cell(cell)
        }
        made[assignment, SOLVED] = graded_form(assignment, {})
        made[assignment, BLANK] = graded_form(assignment, stubs)
    answers: dict[tuple[str, str], dict[str, str]] = {}
    for wrong in WRONG:
        answers.setdefault((wrong.assignment, wrong.student), {})[wrong.exercise] = wrong.code
    for (assignment, student), answered in answers.items():
        made[assignment, student] = graded_form(assignment, answered)
    return made


# --- the server, a database per student --------------------------------------------------------


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> str:
    """The URL of the PostgreSQL pass's server (the root conftest.py starts it)."""
    if request.config.getoption("--course-database") != "postgresql":
        pytest.skip("needs the PostgreSQL pass: pytest --course-database=postgresql")
    return os.environ[VARIABLE]


def database_name(assignment: str, student: str) -> str:
    return f"graded_{assignment}_{student}".replace("-", "_")


@pytest.fixture(scope="module")
def databases(server: str) -> Iterator[dict[tuple[str, str], str]]:
    """A new, empty database for each student's notebook: {(assignment, student): its URL}."""
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    urls = {}
    with admin.connect() as connection:
        for key in notebooks():
            name = database_name(*key)
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
            urls[key] = make_url(server).set(database=name).render_as_string(hide_password=False)
    yield urls
    with admin.connect() as connection:
        for key in urls:
            connection.exec_driver_sql(f"DROP DATABASE {database_name(*key)} WITH (FORCE)")
    admin.dispose()


async def execute_all(jobs: dict[tuple[str, str], tuple[NotebookNode, str]], folder: Path) -> None:
    """Execute each notebook with COURSE_DATABASE_URL set to its URL, a few kernels at a time."""
    gate = asyncio.Semaphore(KERNELS_AT_ONCE)

    async def execute(key: tuple[str, str], nb: NotebookNode, url: str) -> None:
        workdir = folder / "-".join(key)
        workdir.mkdir(parents=True)
        client = NotebookClient(
            nb,
            timeout=CELL_TIMEOUT,
            allow_errors=True,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
        )
        async with gate:
            await client.async_execute(env={**os.environ, VARIABLE: url})

    await asyncio.gather(*(execute(key, nb, url) for key, (nb, url) in jobs.items()))


@pytest.fixture(scope="module")
def graded(
    databases: dict[tuple[str, str], str], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], dict[str, float]]:
    """Every notebook executed on PostgreSQL: {(assignment, student): {test cell: score}}."""
    jobs = {key: (nb, databases[key]) for key, nb in notebooks().items()}
    asyncio.run(execute_all(jobs, tmp_path_factory.mktemp("postgresql")))
    return {
        key: {
            nbgrader_meta(cell)["grade_id"]: 0
            if any(output.output_type == "error" for output in cell.outputs)
            else nbgrader_meta(cell)["points"]
            for cell in nb.cells
            if nbgrader_meta(cell).get("grade") and cell.cell_type == "code"
        }
        for key, (nb, _url) in jobs.items()
    }


# --- grading on PostgreSQL -----------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_solutions_earn_every_point_on_postgresql(
    graded: dict[tuple[str, str], dict[str, float]], assignment: str
) -> None:
    scores = graded[assignment, SOLVED]
    assert scores and all(score > 0 for score in scores.values()), scores
    assert sum(scores.values()) == 10


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_a_blank_notebook_earns_nothing_on_postgresql(
    graded: dict[tuple[str, str], dict[str, float]], assignment: str
) -> None:
    assert sum(graded[assignment, BLANK].values()) == 0


@pytest.mark.parametrize("wrong", WRONG, ids=lambda wrong: wrong.id)
def test_a_wrong_answer_earns_on_postgresql_what_it_earns_on_sqlite(
    graded: dict[tuple[str, str], dict[str, float]], wrong: Wrong
) -> None:
    source = read_notebook(ROOT / "source", wrong.assignment)
    tested = exercise_of_cells(source)
    scores = graded[wrong.assignment, wrong.student]
    earned = sum(score for cell, score in scores.items() if tested[cell] == wrong.exercise)
    assert earned == wrong.earns < exercise_points(source)[wrong.exercise], scores


def test_every_notebook_ran_in_a_database_of_its_own(
    graded: dict, databases: dict[tuple[str, str], str]
) -> None:
    for (assignment, student), url in databases.items():
        engine = create_engine(url)
        schema = assignment.replace("-", "_")
        with engine.connect() as connection:
            tables = connection.scalars(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            ).all()
        engine.dispose()
        assert "users" in tables, (assignment, student, tables)


# --- the database switch and the checks' own connection --------------------------------------


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def test_without_a_server_an_assignment_gets_a_fresh_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    path = tmp_path / "crud.db"
    path.write_text("an earlier run's database")
    engine = course_engine(schema="crud", sqlite_file=path)
    assert not path.exists() and engine.url.database == str(path)
    Base.metadata.create_all(engine)
    checks.write_rows(engine, "users", [(1, "Ada")])
    assert checks.table_rows(engine, "users") == checks.table_rows(path, "users") == [(1, "Ada")]
    engine.dispose()


def test_the_schema_is_the_connections_search_path_in_the_url() -> None:
    url = make_url("postgresql+psycopg://me@localhost/course?options=-cstatement_timeout%3D5000")
    assert in_schema(url, "crud").query["options"] == (
        "-cstatement_timeout=5000 -csearch_path=crud"
    )
    for unsafe in ("Crud", "crud; DROP TABLE users", "object-states", ""):
        with pytest.raises(ValueError, match="lower-case letters"):
            in_schema(url, unsafe)


@pytest.fixture
def users(server: str) -> Iterator[Engine]:
    """An assignment's engine on the server: the users table in a schema of its own."""
    engine = course_engine(schema="checks_on_postgresql")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_a_second_engine_on_the_url_reaches_the_same_schema(users: Engine) -> None:
    checks.write_rows(users, "users", [(1, "Ada")])
    second = create_engine(users.url)
    with Session(second) as session:
        assert session.get(User, 1).name == "Ada"
    second.dispose()


def test_written_rows_set_the_next_id_as_sqlite_would(users: Engine) -> None:
    checks.write_rows(users, "users", [(7, "Linus")])
    with Session(users) as session:
        session.add(grace := User(name="Grace"))
        session.commit()
        assert grace.id == 8
    checks.write_rows(users, "users", [])
    with Session(users) as session:
        session.add(ada := User(name="Ada"))
        session.flush()
        assert ada.id == 1
        # only what is committed counts: the checks' connection is not the session's
        assert checks.table_rows(users, "users") == []
        session.commit()
    checks.check_rows(users, "users", [(1, "Ada")], "commit")


def test_a_session_holding_the_rows_is_named_when_a_test_needs_the_table(users: Engine) -> None:
    checks.write_rows(users, "users", [(1, "Ada")])
    with Session(users) as forgotten:
        forgotten.get(User, 1).name = "Grace"
        forgotten.flush()  # its UPDATE holds the row's lock until the session ends
        with pytest.raises(AssertionError) as raised:
            checks.write_rows(users, "users", [])
    message = str(raised.value)
    assert "LockNotAvailable" in message and "with Session(engine)" in message
