"""Assignment 4, transactions-relationships: its answer corpus, graded by `course-grade`.

Every exercise has correct answers written differently, which must earn exactly its full points,
and wrong answers, each a real misconception, which must lose points. Student ``right-k`` answers
every exercise with its k-th correct answer, student ``wrong-k`` with its k-th wrong one (the
solution where an exercise has no k-th): the exercises are independent, since each test cell sets
the tables it needs, so each exercise's cells are asserted on their own. They are graded with the
other assignment tests' submissions (tests/graded_corpus.py). Each wrong answer's first failing
test cell must show the teaching message that names its misconception. No hidden test's message
may quote a value only the hidden test holds. (tests/test_assignments.py checks, for all four
assignments, that release/ is what nbgrader generates and that nbgrader validates both versions.)
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from pathlib import Path

import graded_corpus
import nbformat
import pytest
from graded_corpus import BLANK, SOLVED, GradedCourse
from nbformat import NotebookNode

from autograder.feedback import MISUNDERSTANDING, message_arguments, shown_message

# Warnings nbgrader's own code raises while it autogrades; they say nothing about the assignment.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Object of type <Submitted:sqlalchemy.exc.SAWarning"),
    pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning"),
]

graded_course = graded_corpus.graded_course  # the fixture this module shares with two others
ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "transactions-relationships"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
# Each exercise (its answer cell) and its test cells with their points.
EXERCISES = {
    "import-users": {"test-import-users": 1, "hidden-import-users": 2},
    "register": {"test-register": 1, "hidden-register": 1},
    "order-lines": {"test-order-lines": 1, "hidden-order-lines": 1},
    "load-users": {"test-load-users": 1, "hidden-load-users": 2},
}
FULL = sum(sum(cells.values()) for cells in EXERCISES.values())


# --- the corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One answer to one exercise: the code of its answer cell, and what it must earn there.

    ``points`` maps each of the exercise's test cells to its expected score; ``teaching`` is a
    phrase the first failing test cell's message must hold (empty for a correct answer).
    """

    name: str
    exercise: str
    code: str
    points: dict[str, int]
    teaching: str = ""


def right(name: str, exercise: str, code: str) -> Answer:
    return Answer(name, exercise, code, EXERCISES[exercise])


def wrong(name: str, exercise: str, code: str, earned: tuple[int, int], teaching: str) -> Answer:
    visible, hidden = EXERCISES[exercise]
    return Answer(name, exercise, code, {visible: earned[0], hidden: earned[1]}, teaching)


ORDER_CELL = """\
class ShopBase(DeclarativeBase):
    pass


class Order(ShopBase):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(50))
    {lines}


class OrderLine(ShopBase):
    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    product: Mapped[str] = mapped_column(String(50))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    {order}


ShopBase.metadata.create_all(engine)
"""
ORDER_SIDE = 'order: Mapped[Order] = relationship(back_populates="lines")'


def order_cell(lines: str, order: str = ORDER_SIDE) -> str:
    return ORDER_CELL.format(lines=lines, order=order)


CORRECT = [
    right(
        "savepoint object, flush, commit or roll back the savepoint",
        "import-users",
        """
def import_users(session, names):
    refused = []
    for name in names:
        savepoint = session.begin_nested()
        session.add(User(name=name))
        try:
            session.flush()
        except IntegrityError:
            savepoint.rollback()
            refused.append(name)
        else:
            savepoint.commit()
    return refused
""",
    ),
    right(
        "a Core insert() in a savepoint block",
        "import-users",
        """
from sqlalchemy import insert


def import_users(session, names):
    refused = []
    for name in names:
        try:
            with session.begin_nested():
                session.execute(insert(User).values(name=name))
        except IntegrityError:
            refused.append(name)
    return refused
""",
    ),
    right(
        "a helper per name, flush inside the block, a comprehension",
        "import-users",
        """
def import_users(session: Session, names: list[str]) -> list[str]:
    def refuses(name: str) -> bool:
        try:
            with session.begin_nested():
                session.add(User(name=name))
                session.flush()
        except IntegrityError:
            return True
        return False

    return [name for name in names if refuses(name)]
""",
    ),
    right(
        "flush in a try, keep the id, commit after",
        "register",
        """
def register(session, name):
    user = User(name=name)
    try:
        session.add(user)
        session.flush()
    except IntegrityError:
        session.rollback()
        return None
    new_id = user.id
    session.commit()
    return new_id
""",
    ),
    right(
        "a savepoint for the insert, then commit",
        "register",
        """
def register(session, name):
    user = User(name=name)
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError:
        return None  # only the savepoint is rolled back: the session goes on
    session.commit()
    return user.id
""",
    ),
    right(
        "an insert() ... returning(), rolled back on error",
        "register",
        """
from sqlalchemy import insert


def register(session, name):
    try:
        new_id = session.scalar(insert(User).values(name=name).returning(User.id))
        session.commit()
    except IntegrityError as error:
        session.rollback()
        print("refused:", error.orig)
        return None
    return new_id
""",
    ),
    right(
        "every cascade spelled out",
        "order-lines",
        order_cell(
            'lines: Mapped[list["OrderLine"]] = relationship(\n'
            '        back_populates="order", cascade="save-update, merge, delete, delete-orphan"\n'
            "    )"
        ),
    ),
    right(
        "delete-orphan first, no merge, ordered lines",
        "order-lines",
        order_cell(
            'lines: Mapped[list["OrderLine"]] = relationship(\n'
            '        "OrderLine",\n'
            '        back_populates="order",\n'
            '        cascade="delete-orphan, delete, save-update",\n'
            '        order_by="OrderLine.id",\n'
            "    )"
        ),
    ),
    right(
        "no annotation, the target named as a string",
        "order-lines",
        order_cell(
            'lines = relationship("OrderLine", back_populates="order", cascade="all,delete-orphan")'
        ),
    ),
    right(
        "joinedload, with unique()",
        "load-users",
        """
from sqlalchemy.orm import joinedload


def load_users(engine):
    with Session(engine) as session:
        query = select(User).options(joinedload(User.addresses)).order_by(User.id)
        return list(session.scalars(query).unique())
""",
    ),
    right(
        "subqueryload, the session closed by hand",
        "load-users",
        """
from sqlalchemy.orm import subqueryload


def load_users(engine):
    session = Session(engine)
    try:
        return session.scalars(
            select(User).order_by(User.id).options(subqueryload(User.addresses))
        ).all()
    finally:
        session.close()
""",
    ),
    right(
        "a sessionmaker that keeps attributes after its commit",
        "load-users",
        """
from sqlalchemy.orm import selectinload, sessionmaker


def load_users(engine):
    with sessionmaker(engine, expire_on_commit=False).begin() as session:
        users = session.execute(
            select(User).order_by(User.id).options(selectinload(User.addresses))
        ).scalars().all()
    return list(users)
""",
    ),
]

WRONG = [
    wrong(
        "the whole transaction rolled back, not the savepoint",
        "import-users",
        """
def import_users(session, names):
    refused = []
    for name in names:
        session.add(User(name=name))
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            refused.append(name)
    return refused
""",
        (0, 0),
        "session.rollback() rolls back the caller's whole transaction",
    ),
    wrong(
        "the error caught, never rolled back",
        "import-users",
        """
def import_users(session, names):
    refused = []
    for name in names:
        session.add(User(name=name))
        try:
            session.flush()
        except IntegrityError:
            refused.append(name)
    return refused
""",
        (0, 0),
        "refuses all work until it is rolled back",
    ),
    wrong(
        "a commit per name, inside a function handed a session",
        "import-users",
        """
def import_users(session, names):
    refused = []
    for name in names:
        session.add(User(name=name))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            refused.append(name)
    return refused
""",
        (0, 0),
        "a function handed a session never commits it",
    ),
    wrong(
        "the error expected at add(), inside the savepoint block",
        "import-users",
        """
def import_users(session, names):
    refused = []
    for name in names:
        with session.begin_nested():
            try:
                session.add(User(name=name))
            except IntegrityError:
                refused.append(name)
    return refused
""",
        (0, 0),
        "not at session.add(): catch IntegrityError around the whole block",
    ),
    wrong(
        "one savepoint for every name",
        "import-users",
        """
def import_users(session, names):
    refused = []
    with session.begin_nested():
        for name in names:
            session.add(User(name=name))
            try:
                session.flush()
            except IntegrityError:
                refused.append(name)
    return refused
""",
        (0, 0),
        "give each name a savepoint of its own",
    ),
    wrong(
        "taken names looked up first, the database's other refusals ignored",
        "import-users",
        """
def import_users(session, names):
    refused = []
    for name in names:
        taken = session.scalar(select(User).where(User.name == name))
        if taken is not None:
            refused.append(name)
        else:
            session.add(User(name=name))
            session.flush()
    return refused
""",
        (1, 0),
        "whatever the constraint",
    ),
    wrong(
        "the error caught, never rolled back",
        "register",
        """
def register(session, name):
    user = User(name=name)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        return None
    return user.id
""",
        (0, 0),
        "catching the error is not enough",
    ),
    wrong(
        "the refused object expunged instead of a rollback",
        "register",
        """
def register(session, name):
    user = User(name=name)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.expunge(user)
        return None
    return user.id
""",
        (0, 0),
        "expunge() finds nothing",
    ),
    wrong(
        "the caller's session closed instead of rolled back",
        "register",
        """
def register(session, name):
    user = User(name=name)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.close()
        return None
    return user.id
""",
        (0, 0),
        "do not close it",
    ),
    wrong(
        "rolled back, but the error re-raised instead of reported",
        "register",
        """
def register(session, name):
    user = User(name=name)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise
    return user.id
""",
        (0, 0),
        "catch it, roll back, and return None",
    ),
    wrong(
        "a taken name looked up first, an empty name not foreseen",
        "register",
        """
def register(session, name):
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        return None
    user = User(name=name)
    session.add(user)
    session.commit()
    return user.id
""",
        (1, 0),
        "every refusal is an IntegrityError at the flush",
    ),
    wrong(
        "flushed, never committed",
        "register",
        """
def register(session, name):
    user = User(name=name)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return None
    return user.id
""",
        (0, 0),
        "a flush alone is rolled back",
    ),
    wrong(
        "cascade='all' without delete-orphan",
        "order-lines",
        order_cell(
            'lines: Mapped[list["OrderLine"]] = relationship(back_populates="order", cascade="all")'
        ),
        (0, 0),
        "without the delete-orphan cascade",
    ),
    wrong(
        "the default cascade",
        "order-lines",
        order_cell('lines: Mapped[list["OrderLine"]] = relationship(back_populates="order")'),
        (0, 0),
        "without the delete-orphan cascade",
    ),
    wrong(
        "delete and delete-orphan without save-update",
        "order-lines",
        order_cell(
            'lines: Mapped[list["OrderLine"]] = relationship(\n'
            '        back_populates="order", cascade="delete, delete-orphan"\n'
            "    )"
        ),
        (0, 1),
        "only with the save-update cascade",
    ),
    wrong(
        "delete-orphan on the many-to-one side",
        "order-lines",
        order_cell(
            'lines: Mapped[list["OrderLine"]] = relationship(back_populates="order")',
            "order: Mapped[Order] = relationship(\n"
            '        back_populates="lines", cascade="all, delete-orphan"\n'
            "    )",
        ),
        (0, 0),
        "delete-orphan belongs on the one-to-many side",
    ),
    wrong(
        "passive_deletes with no ON DELETE CASCADE in the schema",
        "order-lines",
        order_cell(
            'lines: Mapped[list["OrderLine"]] = relationship(\n'
            '        back_populates="order", cascade="all, delete-orphan", passive_deletes=True\n'
            "    )"
        ),
        (1, 0),
        "the delete cascade deletes exactly the deleted order's lines",
    ),
    wrong(
        "a lazy load, which works only while the session is open",
        "load-users",
        """
def load_users(engine):
    with Session(engine) as session:
        return list(session.scalars(select(User).order_by(User.id)))
""",
        (0, 0),
        "user.addresses is loaded lazily",
    ),
    wrong(
        "joinedload of a collection without unique()",
        "load-users",
        """
from sqlalchemy.orm import joinedload


def load_users(engine):
    with Session(engine) as session:
        return session.scalars(
            select(User).options(joinedload(User.addresses)).order_by(User.id)
        ).all()
""",
        (0, 0),
        "call .unique() on it",
    ),
    wrong(
        "each collection touched before the session closes, one SELECT each",
        "load-users",
        """
def load_users(engine):
    with Session(engine) as session:
        users = list(session.scalars(select(User).order_by(User.id)))
        for user in users:
            user.addresses
        return users
""",
        (0, 0),
        "one SELECT per user",
    ),
    wrong(
        "eager loading in session.begin(), whose commit expires everything",
        "load-users",
        """
from sqlalchemy.orm import selectinload


def load_users(engine):
    with Session(engine) as session, session.begin():
        return list(
            session.scalars(select(User).options(selectinload(User.addresses)).order_by(User.id))
        )
""",
        (0, 0),
        "a commit expires every loaded",
    ),
    wrong(
        "a session that is never closed",
        "load-users",
        """
def load_users(engine):
    session = Session(engine)
    return list(session.scalars(select(User).order_by(User.id)))
""",
        (0, 0),
        "so that it is closed when load_users returns",
    ),
    wrong(
        "Rows returned instead of User objects",
        "load-users",
        """
from sqlalchemy.orm import selectinload


def load_users(engine):
    with Session(engine) as session:
        return session.execute(
            select(User).options(selectinload(User.addresses)).order_by(User.id)
        ).all()
""",
        (0, 0),
        "not Rows",
    ),
]


# --- notebooks ---------------------------------------------------------------------------------


def nbgrader_meta(cell: NotebookNode) -> dict:
    return cell.metadata.get("nbgrader", {})


def grade_id(cell: NotebookNode) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def is_test_cell(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("grade"))


def is_hidden_test(cell: NotebookNode) -> bool:
    return is_test_cell(cell) and "### BEGIN HIDDEN TESTS" in cell.source


def read(folder: Path) -> NotebookNode:
    return nbformat.read(folder / ASSIGNMENT / NOTEBOOK, as_version=4)


def solutions(source: NotebookNode) -> dict[str, str]:
    """Each answer cell's solution, markers removed, as a student would write it."""
    return {
        grade_id(cell): "\n".join(
            line for line in cell.source.splitlines() if line.strip() not in SOLUTION_MARKERS
        )
        for cell in source.cells
        if nbgrader_meta(cell).get("solution")
    }


def submission(release: NotebookNode, answers: dict[str, str]) -> NotebookNode:
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        if grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    return nb


def student_id(answer: Answer) -> str:
    """The student whose notebook holds ``answer``: ``right-k`` or ``wrong-k`` for the k-th
    correct or wrong answer of its exercise."""
    kind, answers = ("wrong", WRONG) if answer.teaching else ("right", CORRECT)
    same = [other for other in answers if other.exercise == answer.exercise]
    return f"{kind}-{same.index(answer) + 1}"


def answer_id(answer: Answer) -> str:
    return f"{answer.exercise}-{re.sub(r'[^a-z0-9]+', '-', answer.name.lower()).strip('-')}"


def submissions() -> dict[str, dict[str, NotebookNode]]:
    """The solution, the blank release and the corpus's students (see the module's docstring),
    for tests/graded_corpus.py to grade."""
    release = read(ROOT / "release")
    full = solutions(read(ROOT / "source"))
    answered: dict[str, dict[str, str]] = {}
    for answer in CORRECT + WRONG:
        answered.setdefault(student_id(answer), {})[answer.exercise] = answer.code
    students = {SOLVED: submission(release, full), BLANK: release}
    for student, answers in answered.items():
        students[student] = submission(release, {**full, **answers})
    return {ASSIGNMENT: students}


@pytest.fixture(scope="module")
def graded(graded_course: GradedCourse) -> dict[str, dict[str, float]]:
    """Each student's score per test cell of this assignment."""
    return {
        student: assignments[ASSIGNMENT]
        for student, assignments in graded_course.scores.items()
        if ASSIGNMENT in assignments
    }


# --- the assignment's structure ----------------------------------------------------------------


def test_points_cells_and_corpus_size() -> None:
    source = read(ROOT / "source")
    tests = {grade_id(cell): cell for cell in source.cells if is_test_cell(cell)}
    assert {cell: nbgrader_meta(tests[cell])["points"] for cell in tests} == {
        cell: points for cells in EXERCISES.values() for cell, points in cells.items()
    }
    assert FULL == 10
    for cell in tests.values():
        assert "checks = importlib.reload(autograder.checks)" in cell.source
    hidden = [cell for cell in tests.values() if is_hidden_test(cell)]
    assert len(hidden) == len(EXERCISES)
    assert all(cell.source.startswith("# Hidden tests: ") for cell in hidden)
    for exercise in EXERCISES:
        assert sum(answer.exercise == exercise for answer in CORRECT) >= 3, exercise
        assert sum(answer.exercise == exercise for answer in WRONG) >= 3, exercise
    assert len({answer_id(answer) for answer in CORRECT + WRONG}) == len(CORRECT + WRONG)


def data(source: str) -> set[object]:
    """The values a test cell's data is made of: strings and numbers (with a letter or digit)
    written inside a list, tuple, set or dict (its rows, inputs and expected values)."""
    return {
        item.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict)
        for item in ast.iter_child_nodes(node)
        if isinstance(item, ast.Constant)
        and type(item.value) in (str, int)
        and re.search(r"\w", str(item.value))
    }


def quotes(message: str, value: object) -> bool:
    if isinstance(value, str):
        return value in message
    return re.search(rf"(?<![\w.]){re.escape(str(value))}(?!\w)", message) is not None


def test_hidden_test_messages_quote_no_value_of_their_cell() -> None:
    # The feedback shows a failing hidden test its teaching message only: the message names the
    # misconception and never quotes the cell's inputs or expected values (visible or hidden).
    hidden = [cell for cell in read(ROOT / "source").cells if is_hidden_test(cell)]
    assert len(hidden) == len(EXERCISES)
    for cell in hidden:
        values = data(cell.source)
        assert {"Ada", 1} <= values, grade_id(cell)
        for message in message_arguments(cell.source):
            assert [value for value in values if quotes(message, value)] == [], (
                grade_id(cell),
                message,
            )


# --- the corpus, graded --------------------------------------------------------------------------


def test_the_full_solution_earns_every_point_and_a_blank_none(
    graded: dict[str, dict[str, float]],
) -> None:
    assert sum(graded[SOLVED].values()) == FULL
    assert sum(graded[BLANK].values()) == 0


@pytest.mark.parametrize("answer", CORRECT, ids=answer_id)
def test_a_correct_answer_earns_exactly_full_points(
    graded: dict[str, dict[str, float]], answer: Answer
) -> None:
    scores = graded[student_id(answer)]
    assert {cell: scores[cell] for cell in answer.points} == answer.points
    assert sum(scores.values()) == FULL  # right-k answers every exercise correctly


@pytest.mark.parametrize("answer", WRONG, ids=answer_id)
def test_a_wrong_answer_loses_its_exercises_points(
    graded_course: GradedCourse, graded: dict[str, dict[str, float]], answer: Answer
) -> None:
    scores = graded[student_id(answer)]
    assert {cell: scores[cell] for cell in answer.points} == answer.points
    assert sum(answer.points.values()) < sum(EXERCISES[answer.exercise].values())
    failing = [
        (cell, output)
        for cell in graded_course.notebook(student_id(answer), ASSIGNMENT).cells
        if grade_id(cell) in answer.points
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert failing, "no test cell of the exercise failed"
    cell, error = failing[0]
    assert error.ename == "AssertionError", (error.ename, error.evalue)
    teaching = error.evalue.partition(MISUNDERSTANDING)[2]
    assert answer.teaching in teaching, error.evalue
    # the feedback page shows the same teaching message, in full
    assert shown_message(error, message_arguments(cell.source)) == f"AssertionError: {teaching}"


def test_a_passing_visible_test_says_so_in_one_line(graded_course: GradedCourse) -> None:
    for cell in graded_course.notebook(SOLVED, ASSIGNMENT).cells:
        if is_test_cell(cell) and not is_hidden_test(cell):
            texts = [(output.get("name"), output.get("text", "")) for output in cell.outputs]
            assert len(texts) == 1 and texts[0][0] == "stdout", (grade_id(cell), texts)
            assert texts[0][1].count("\n") == 1 and "passed" in texts[0][1], texts
