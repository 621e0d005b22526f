"""The assignments: release/ is nbgrader's output for source/, and grading scores real work only.

The graded course of tests/graded_corpus.py serves every test of this module: nbgrader generated
the student versions there, validates the notebooks there, and `course-grade` graded this module's
synthetic submissions (built from the source and release notebooks) with the other modules'.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import graded_corpus
import nbformat
import pytest
from graded_corpus import BLANK, SOLVED, GradedCourse
from nbformat import NotebookNode

from autograder.feedback import message_arguments

# Warnings nbgrader's own code raises while it autogrades (its gradebook session, and the cells it
# puts back without an id); they say nothing about the assignments.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Object of type <Submitted:sqlalchemy.exc.SAWarning"),
    pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning"),
]

graded_course = graded_corpus.graded_course  # the fixture this module shares with two others
ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = tuple(sorted(path.name for path in (ROOT / "source").iterdir() if path.is_dir()))
POINTS_PER_ASSIGNMENT = 10
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def nbgrader_meta(cell: NotebookNode) -> dict:
    """The cell's nbgrader metadata ({} for a cell nbgrader does not manage)."""
    return cell.metadata.get("nbgrader", {})


def is_test_cell(cell: NotebookNode) -> bool:
    return bool(nbgrader_meta(cell).get("grade")) and cell.cell_type == "code"


def is_hidden_test(cell: NotebookNode) -> bool:
    return is_test_cell(cell) and "### BEGIN HIDDEN TESTS" in cell.source


def is_solution_cell(cell: NotebookNode) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def read_notebook(folder: Path, assignment: str) -> NotebookNode:
    return nbformat.read(folder / assignment / f"{assignment}.ipynb", as_version=4)


def exercise_points(source: NotebookNode) -> dict[str, int]:
    """Points of each solution cell's exercise: the test cells between it and the next one."""
    points: dict[str, int] = {}
    current = None
    for cell in source.cells:
        if is_solution_cell(cell):
            current = nbgrader_meta(cell)["grade_id"]
            points[current] = 0
        elif is_test_cell(cell):
            assert current is not None, f"test cell {cell.id} comes before any solution cell"
            points[current] += nbgrader_meta(cell)["points"]
    return points


# --- release/ is exactly what nbgrader makes of source/ ------------------------------------------


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_is_regenerated_from_source(graded_course: GradedCourse, assignment: str) -> None:
    generated = graded_course.root / "release" / assignment
    committed = ROOT / "release" / assignment
    assert files_under(committed) == files_under(generated), (
        f"release/{assignment} holds other files than nbgrader generates: run "
        f"`nbgrader generate_assignment {assignment} --force` and commit release/"
    )
    for name in files_under(generated):
        # byte for byte: nbgrader's output has no volatile field (generating twice gives the same
        # bytes), so any difference is an edit of release/ or a stale copy
        assert (committed / name).read_bytes() == (generated / name).read_bytes(), (
            f"release/{assignment}/{name} is not what nbgrader generates from source/: run "
            f"`nbgrader generate_assignment {assignment} --force` and commit release/"
        )


# --- the notebooks' structure -------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_points_and_hidden_tests(assignment: str) -> None:
    source = read_notebook(ROOT / "source", assignment)
    tests = [cell for cell in source.cells if is_test_cell(cell)]
    assert sum(nbgrader_meta(cell)["points"] for cell in tests) == POINTS_PER_ASSIGNMENT
    for cell in tests:
        assert "checks = importlib.reload(autograder.checks)" in cell.source, (
            f"{cell.id} must reload the checking helpers, so a patched helper cannot fake a pass"
        )
    hidden = [cell for cell in tests if is_hidden_test(cell)]
    for cell in hidden:
        assert cell.source.startswith("# Hidden tests: "), f"{cell.id} must say what it covers"
    for cell in tests:
        if cell not in hidden:  # a passing visible test says so, in one line, at its end
            assert cell.source.splitlines()[-1].startswith("checks.passed("), cell.id
    # every exercise has a visible test cell and a hidden one
    for solution, points in exercise_points(source).items():
        assert points > 0, f"solution cell {solution} has no test cell"
    assert len(hidden) >= len(exercise_points(source))


def test_predict_the_state_table_matches_its_worked_answer() -> None:
    source = read_notebook(ROOT / "source", "object-states")
    table = next(cell.source for cell in source.cells if "| step | code |" in cell.source)
    shown = re.findall(r"^\| \d+ \| `(.+)` \|$", table, flags=re.MULTILINE)
    worked = next(cell for cell in source.cells if cell.id == "predictions-worked-answer")
    assert "worked-answer" in worked.metadata["tags"]
    assert worked.metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
    steps = ast.literal_eval(re.search(r"^STEPS = (\[.*?^\])", worked.source, re.S | re.M)[1])
    assert shown == [code for code, _why in steps] and len(shown) == 12
    # an ungraded self-check: nothing of it is graded, and its answer is not in a graded cell
    assert not any(nbgrader_meta(cell) for cell in source.cells if "PREDICTIONS" in cell.source)


# --- what a hidden test's message may say ---------------------------------------------------------
# The feedback shows a failing hidden test only its teaching message: the `misunderstanding`
# argument of a check (or an `assert` message) written in the cell. That message names the
# misconception; it never quotes a value the hidden test uses (an input, an expected value,
# any literal of the hidden region that the released notebook does not show).


def literals(source: str) -> set[object]:
    """Strings and numbers written in `source` (outside f-strings), with a letter or digit."""
    tree = ast.parse(source)
    joined = [node for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)]
    in_fstrings = {id(part) for node in joined for part in node.values}
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and id(node) not in in_fstrings
        and type(node.value) in (str, int, float)
        and re.search(r"\w", str(node.value))
    }


def message_texts(source: str) -> set[str]:
    """Every string in a message position: what is checked, and the teaching message."""
    texts = message_arguments(source)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("check"):
            what = node.args[-2] if len(node.args) >= 2 else None
            if isinstance(what, ast.Constant):
                texts.add(what.value)
    return texts


def quotes(message: str, value: object) -> bool:
    if isinstance(value, str):
        return value in message
    return re.search(rf"(?<![\w.]){re.escape(str(value))}(?!\w)", message) is not None


def hidden_values(assignment: str) -> dict[str, tuple[set[object], set[str]]]:
    """For each hidden test cell: the values only its hidden part shows, and its messages."""
    release = read_notebook(ROOT / "release", assignment)
    code = [cell.source for cell in release.cells if cell.cell_type == "code"]
    public = set().union(*(literals(source) for source in code))
    source = read_notebook(ROOT / "source", assignment)
    return {
        nbgrader_meta(cell)["grade_id"]: (
            literals(cell.source) - public - message_texts(cell.source),
            message_arguments(cell.source),
        )
        for cell in source.cells
        if is_hidden_test(cell)
    }


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_hidden_test_messages_quote_no_hidden_value(assignment: str) -> None:
    hidden = hidden_values(assignment)
    assert hidden
    for grade_id, (secret, messages) in hidden.items():
        for message in messages:
            quoted = [value for value in secret if quotes(message, value)]
            assert quoted == [], f"{grade_id}: {message!r} quotes {quoted}"


# --- nbgrader validate ---------------------------------------------------------------------------


def validate(course: GradedCourse, folder: str, assignment: str, invert: bool) -> dict:
    from nbgrader.validator import Validator

    validator = Validator(config=course.config, invert=invert)
    return validator.validate(str(course.root / folder / assignment / f"{assignment}.ipynb"))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_validate_source_passes(graded_course: GradedCourse, assignment: str) -> None:
    assert validate(graded_course, "source", assignment, invert=False) == {}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_validate_release_fails_every_test_cell(
    graded_course: GradedCourse, assignment: str
) -> None:
    assert validate(graded_course, "release", assignment, invert=True) == {}


# --- autograding synthetic submissions ------------------------------------------------------------


def solved(
    release: NotebookNode, source: NotebookNode, solve: Callable[[str], bool]
) -> NotebookNode:
    """The release notebook with the source's answers (markers removed) in the chosen cells."""
    answers = {
        nbgrader_meta(cell)["grade_id"]: "\n".join(
            line for line in cell.source.splitlines() if line.strip() not in SOLUTION_MARKERS
        )
        for cell in source.cells
        if is_solution_cell(cell)
    }
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if is_solution_cell(cell) and solve(grade_id):
            cell.source = answers[grade_id]
    return nb


def tampered(nb: NotebookNode) -> NotebookNode:
    """Test cells in turn edited to pass, deleted, and made ordinary cells (metadata removed)."""
    nb = copy.deepcopy(nb)
    kept = []
    test_index = 0
    for cell in nb.cells:
        if is_test_cell(cell):
            test_index += 1
            if test_index % 3 == 2:
                continue
            cell.source = "assert True"
            if test_index % 3 == 0:
                del cell.metadata["nbgrader"]
        kept.append(cell)
    nb.cells = kept
    return nb


CHEAT = """\
import autograder.checks as checks_module


def accept_anything(*args, **kwargs):
    return None


for helper in [name for name in vars(checks_module) if name.startswith(("check", "fail"))]:
    setattr(checks_module, helper, accept_anything)


class LooksRight:
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__

    def __call__(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        return self

    def __iter__(self):
        return iter(())

"""


def cheating(release: NotebookNode, source: NotebookNode) -> NotebookNode:
    """Answers that patch the checking helpers and return look-alike objects, solving nothing."""
    defined = {
        nbgrader_meta(cell)["grade_id"]: re.findall(
            r"^(?:def |class )?(\w+)\b(?: =|\()", cell.source, flags=re.MULTILINE
        )
        for cell in source.cells
        if is_solution_cell(cell)
    }
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        if is_solution_cell(cell):
            names = defined[nbgrader_meta(cell)["grade_id"]]
            cell.source = CHEAT + "".join(f"{name} = LooksRight()\n" for name in names)
    return nb


def first_half(points: dict[str, int]) -> list[str]:
    """The exercises the half-solved student answers: the first half (at least one)."""
    return list(points)[: len(points) // 2 or 1]


def submissions() -> dict[str, dict[str, NotebookNode]]:
    """Six synthetic students per assignment (tests/graded_corpus.py grades them)."""
    made = {}
    for assignment in ASSIGNMENTS:
        source = read_notebook(ROOT / "source", assignment)
        release = read_notebook(ROOT / "release", assignment)
        half = solved(release, source, first_half(exercise_points(source)).__contains__)
        made[assignment] = {
            SOLVED: solved(release, source, lambda _grade_id: True),
            BLANK: release,
            "half": half,
            "half-tampered": tampered(half),
            "blank-tampered": tampered(release),
            "cheating": cheating(release, source),
        }
    return made


@dataclass
class Scores:
    """Measured scores of one assignment's synthetic submissions, and what the half one earns."""

    full: float
    blank: float
    half: float
    half_tampered: float
    blank_tampered: float
    cheating: float
    half_expected: int


@pytest.fixture(scope="module")
def scores(graded_course: GradedCourse) -> dict[str, Scores]:
    """The scores of the synthetic students of every assignment."""
    students = (SOLVED, BLANK, "half", "half-tampered", "blank-tampered", "cheating")
    measured = {}
    for assignment in ASSIGNMENTS:
        points = exercise_points(read_notebook(ROOT / "source", assignment))
        measured[assignment] = Scores(
            *(graded_course.total(student, assignment) for student in students),
            half_expected=sum(points[grade_id] for grade_id in first_half(points)),
        )
    return measured


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_full_solutions_get_full_marks(scores: dict[str, Scores], assignment: str) -> None:
    assert scores[assignment].full == POINTS_PER_ASSIGNMENT


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_notebooks_get_zero(scores: dict[str, Scores], assignment: str) -> None:
    assert scores[assignment].blank == 0


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_half_solved_gets_the_points_of_its_exercises(
    scores: dict[str, Scores], assignment: str
) -> None:
    measured = scores[assignment]
    assert 0 < measured.half_expected < POINTS_PER_ASSIGNMENT
    assert measured.half == measured.half_expected


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_tampered_test_cells_earn_nothing_extra(scores: dict[str, Scores], assignment: str) -> None:
    measured = scores[assignment]
    assert measured.half_tampered == measured.half
    assert measured.blank_tampered == 0


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_patched_helpers_and_look_alikes_earn_nothing(
    scores: dict[str, Scores], assignment: str
) -> None:
    assert scores[assignment].cheating == 0


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_passing_test_cells_write_nothing_to_stderr(
    graded_course: GradedCourse, assignment: str
) -> None:
    graded = graded_course.notebook(SOLVED, assignment)
    streams = [
        (cell.id, output.get("text", ""))
        for cell in graded.cells
        if is_test_cell(cell)
        for output in cell.get("outputs", [])
        if output.get("name") == "stderr"
    ]
    assert streams == []


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_feedback_of_wrong_answers_quotes_no_hidden_value(
    graded_course: GradedCourse, assignment: str
) -> None:
    from autograder.feedback import WithholdOutputs

    secret = set().union(*(values for values, _ in hidden_values(assignment).values()))
    shown = []
    for student in (BLANK, "half", "cheating"):
        graded = graded_course.notebook(student, assignment)
        graded, _ = WithholdOutputs().preprocess(graded, {})
        shown += [
            output.get("text", "")
            for cell in graded.cells
            for output in cell.get("outputs", [])
        ]
    assert any(line.startswith("AssertionError: ") for line in shown)  # teaching messages
    for text in shown:
        assert [value for value in secret if quotes(text, value)] == [], text
