"""Assignment 4, transactions-relationships: its answer corpus, graded by nbgrader.

Every exercise has correct answers written differently, which must earn exactly its full points,
and wrong answers, each a real misconception, which must lose points: each one is a student of
one temporary course whose notebook is the full solution with that one answer swapped in, and all
of them are autograded in one nbgrader run. Each wrong answer's first failing test cell must show
the teaching message that names its misconception. The module also checks that release/ is
byte for byte what nbgrader generates, that nbgrader validates the source and (inverted) the
release, and that no hidden test's message quotes a value only the hidden test holds.
"""

from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbformat import NotebookNode

from autograder.feedback import MISUNDERSTANDING, message_arguments, shown_message

# Warnings nbgrader's own code raises while it autogrades; they say nothing about the assignment.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Object of type <Submitted:sqlalchemy.exc.SAWarning"),
    pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning"),
]

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
    """A wrong answer's own student; a correct answer's shared one (see ``right_students``)."""
    if not answer.teaching:
        same = [other for other in CORRECT if other.exercise == answer.exercise]
        return f"right-{same.index(answer) + 1}"
    return f"wrong-{answer.exercise}-{re.sub(r'[^a-z0-9]+', '-', answer.name.lower()).strip('-')}"


def answer_id(answer: Answer) -> str:
    return f"{answer.exercise}-{re.sub(r'[^a-z0-9]+', '-', answer.name.lower()).strip('-')}"


def right_students() -> dict[str, dict[str, str]]:
    """Student ``right-k`` answers every exercise with its k-th correct answer: a correct answer
    needs no student of its own, since it must leave every test cell at full points."""
    students: dict[str, dict[str, str]] = {}
    for answer in CORRECT:
        students.setdefault(student_id(answer), {})[answer.exercise] = answer.code
    return students


# --- the temporary course ----------------------------------------------------------------------


@dataclass
class Course:
    root: Path
    api: object
    config: object


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Course:
    """The course copied to a temporary folder, with this assignment generated there."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    root = tmp_path_factory.mktemp("course")
    shutil.copytree(
        ROOT / "source" / ASSIGNMENT,
        root / "source" / ASSIGNMENT,
        ignore=shutil.ignore_patterns("*.db"),
    )
    shutil.copy(ROOT / "nbgrader_config.py", root)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    with pytest.MonkeyPatch.context() as patch:
        # nbgrader runs `alembic` (installed next to this Python) to create the gradebook.
        patch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
        result = api.generate_assignment(ASSIGNMENT, force=True)
        assert result["success"], result.get("error") or result.get("log")
        yield Course(root=root, api=api, config=config)


@pytest.fixture(scope="module")
def graded(course: Course) -> dict[str, dict[str, float]]:
    """Every answer of the corpus, the full solution and a blank notebook, autograded in one
    run: each student's score per test cell."""
    from nbgrader.api import Gradebook

    source, release = read(course.root / "source"), read(course.root / "release")
    full = solutions(source)
    students = {"full": submission(release, full), "blank": release}
    for student, answers in right_students().items():
        students[student] = submission(release, {**full, **answers})
    for answer in WRONG:
        students[student_id(answer)] = submission(release, {**full, answer.exercise: answer.code})
    for student, nb in students.items():
        folder = course.root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NOTEBOOK)
    result = course.api.autograde(ASSIGNMENT, "*")
    assert result["success"], result.get("error") or result.get("log")
    test_cells = [cell for cells in EXERCISES.values() for cell in cells]
    with Gradebook(course.api.coursedir.db_url) as gradebook:
        return {
            student: {
                cell: gradebook.find_grade(cell, ASSIGNMENT, ASSIGNMENT, student).score
                for cell in test_cells
            }
            for student in students
        }


def autograded(course: Course, student: str) -> NotebookNode:
    return nbformat.read(course.root / "autograded" / student / ASSIGNMENT / NOTEBOOK, as_version=4)


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
    assert len({student_id(answer) for answer in WRONG}) == len(WRONG)


def test_release_is_byte_identical_to_what_nbgrader_generates(course: Course) -> None:
    generated = course.root / "release" / ASSIGNMENT
    committed = ROOT / "release" / ASSIGNMENT
    assert sorted(path.name for path in committed.iterdir()) == [NOTEBOOK], (
        f"release/{ASSIGNMENT} holds other files than the notebook nbgrader generates"
    )
    assert (committed / NOTEBOOK).read_bytes() == (generated / NOTEBOOK).read_bytes(), (
        f"release/{ASSIGNMENT} is out of date: run `nbgrader generate_assignment {ASSIGNMENT} "
        "--force` and commit release/"
    )


def validate(course: Course, folder: str, invert: bool) -> dict:
    from nbgrader.validator import Validator

    validator = Validator(config=course.config, invert=invert)
    return validator.validate(str(course.root / folder / ASSIGNMENT / NOTEBOOK))


def test_validate_source_passes(course: Course) -> None:
    assert validate(course, "source", invert=False) == {}


def test_validate_release_fails_every_test_cell(course: Course) -> None:
    assert validate(course, "release", invert=True) == {}


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
    assert sum(graded["full"].values()) == FULL
    assert sum(graded["blank"].values()) == 0


@pytest.mark.parametrize("answer", CORRECT, ids=answer_id)
def test_a_correct_answer_earns_exactly_full_points(
    graded: dict[str, dict[str, float]], answer: Answer
) -> None:
    scores = graded[student_id(answer)]
    assert {cell: scores[cell] for cell in answer.points} == answer.points
    assert sum(scores.values()) == FULL


@pytest.mark.parametrize("answer", WRONG, ids=answer_id)
def test_a_wrong_answer_loses_its_exercises_points(
    course: Course, graded: dict[str, dict[str, float]], answer: Answer
) -> None:
    scores = graded[student_id(answer)]
    assert {cell: scores[cell] for cell in answer.points} == answer.points
    assert sum(answer.points.values()) < sum(EXERCISES[answer.exercise].values())
    others = {cell: score for cell, score in scores.items() if cell not in answer.points}
    assert others == {cell: graded["full"][cell] for cell in others}, "other exercises unharmed"
    failing = [
        (cell, output)
        for cell in autograded(course, student_id(answer)).cells
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


def test_a_passing_visible_test_says_so_in_one_line(course: Course, graded: dict) -> None:
    for cell in autograded(course, "full").cells:
        if is_test_cell(cell) and not is_hidden_test(cell):
            texts = [(output.get("name"), output.get("text", "")) for output in cell.outputs]
            assert len(texts) == 1 and texts[0][0] == "stdout", (grade_id(cell), texts)
            assert texts[0][1].count("\n") == 1 and "passed" in texts[0][1], texts
