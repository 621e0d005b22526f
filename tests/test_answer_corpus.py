"""The answer corpus, graded: answers written many ways earn full points, misconceptions lose.

Every answer of tests/answers/ goes into a released notebook, with the source's solutions in the
cells it does not answer; the k-th answers of all exercises share a notebook (the exercises are
independent, and each test cell is scored on its own). The graded course of
tests/graded_corpus.py holds them all: one run of `course-grade grade --jobs 2` grades them in
parallel with the other assignment tests' submissions (the same nbgrader preprocessors, sandbox and
guard as a real class). The autograded notebooks also hold what JupyterLab shows the
student (the kernel's outputs): a failing test cell's output is its teaching message, a passing
visible one prints a line.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import graded_corpus
import pytest
from answers import Answer
from graded_corpus import SOLVED, GradedCourse, mutation_pass
from nbformat import NotebookNode
from test_assignments import (
    exercise_points,
    is_hidden_test,
    is_solution_cell,
    is_test_cell,
    nbgrader_meta,
    read_notebook,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Object of type <Submitted:sqlalchemy.exc.SAWarning"),
    pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning"),
]

graded_course = graded_corpus.graded_course  # the fixture this module shares with two others
ROOT = Path(__file__).resolve().parents[1]
POINTS = 10
MINIMUM_ANSWERS = 3  # correct ones, and wrong ones, per graded exercise


def corpus() -> dict[str, dict[str, list[Answer]]]:
    """{assignment: {solution grade_id: answers}} for every assignment of source/ with a corpus."""
    found = {}
    for folder in sorted((ROOT / "source").iterdir()):
        module = f"answers.{folder.name.replace('-', '_')}"
        if (ROOT / "tests" / f"{module.replace('.', '/')}.py").is_file():
            found[folder.name] = importlib.import_module(module).ANSWERS
    return found


@dataclass(frozen=True)
class Case:
    """One answer of the corpus: its assignment, the exercise it answers, the answer."""

    assignment: str
    exercise: str
    answer: Answer
    number: int  # its place among the exercise's answers

    @property
    def student(self) -> str:
        """The student whose notebook holds this answer.

        Exercises are independent (each test cell sets the table it needs), so student ``k``
        answers every exercise with its ``k``-th answer (the solution where there is none): the
        corpus is graded in a few notebooks, and each exercise's cells are asserted on their own.
        An answer that changes the notebook's whole score has a notebook of its own.
        """
        if self.answer.total is not None:
            return f"{self.assignment}--{self.exercise}--{self.answer.name}"
        return f"{self.assignment}--{self.number}"

    @property
    def id(self) -> str:
        return f"{self.assignment}:{self.exercise}:{self.answer.name}"


CORPUS = corpus()
CASES = [
    Case(assignment, exercise, answer, number)
    for assignment, exercises in CORPUS.items()
    for exercise, answers in exercises.items()
    for number, answer in enumerate(answers)
]


def exercise_of_cells(source: NotebookNode) -> dict[str, str]:
    """{test cell grade_id: the solution cell it tests}."""
    tested, current = {}, ""
    for cell in source.cells:
        if is_solution_cell(cell):
            current = nbgrader_meta(cell)["grade_id"]
        elif is_test_cell(cell):
            tested[nbgrader_meta(cell)["grade_id"]] = current
    return tested


def earned(graded: GradedCourse, case: Case) -> float:
    """The points ``case``'s exercise earned in its student's notebook."""
    tested = exercise_of_cells(read_notebook(ROOT / "source", case.assignment))
    scores = graded.scores[case.student][case.assignment]
    return sum(score for cell, score in scores.items() if tested[cell] == case.exercise)


MUTATED = "scoped-sessions"  # the mutation pass's tool, tried on two mutants of one assignment


def sample_mutants() -> dict[str, tuple[str, str]]:
    """{student: (solution cell, mutated answer)}: the first two mutants of an assignment."""
    source = read_notebook(ROOT / "source", MUTATED)
    made = [
        (nbgrader_meta(cell)["grade_id"], code)
        for cell in source.cells
        if is_solution_cell(cell)
        for _description, code in mutation_pass.mutants(cell.source)
    ]
    return {f"mutant-{number}": made[number] for number in range(2)}


def submissions() -> dict[str, dict[str, NotebookNode]]:
    """Every corpus answer (with the solutions elsewhere), the solutions and two mutants, by
    assignment and student (tests/graded_corpus.py grades them)."""
    students: dict[str, dict[str, dict[str, str]]] = {}
    for case in CASES:
        answers = students.setdefault(case.assignment, {SOLVED: {}})
        answers.setdefault(case.student, {})[case.exercise] = case.answer.source
    for student, (grade_id, code) in sample_mutants().items():
        students[MUTATED][student] = {grade_id: code}
    return {
        assignment: {
            student: mutation_pass.answered(assignment, changed)
            for student, changed in answers.items()
        }
        for assignment, answers in students.items()
    }


# --- the corpus itself ------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", sorted(CORPUS))
def test_every_graded_exercise_has_three_correct_and_three_wrong_answers(assignment: str) -> None:
    points = exercise_points(read_notebook(ROOT / "source", assignment))
    assert set(CORPUS[assignment]) == set(points), "the corpus answers every graded exercise"
    for exercise, answers in CORPUS[assignment].items():
        right = [answer for answer in answers if answer.keeps is None]
        wrong = [answer for answer in answers if answer.keeps is not None]
        assert len(right) >= MINIMUM_ANSWERS and len(wrong) >= MINIMUM_ANSWERS, exercise
        assert len({answer.name for answer in answers}) == len(answers), exercise
        for answer in wrong:
            assert answer.why and 0 <= answer.keeps < points[exercise], (exercise, answer.name)


def test_the_visualizer_is_out_of_a_graded_notebooks_reach(graded_course: GradedCourse) -> None:
    # in JupyterLab session_visualizer names states (tests/test_assignments_checks.py); the
    # grading sandbox cannot import it, so an answer built on it defines nothing
    case = next(case for case in CASES if case.answer.name == "the-visualizer-answers")
    [error] = cell_outputs(graded_course, case.student, case.assignment, case.exercise)
    assert error.ename == "ModuleNotFoundError" and "session_visualizer" in error.evalue


def test_the_issues_examples_are_in_the_corpus() -> None:
    names = {(case.exercise, case.answer.name): case.answer for case in CASES}
    assert names[("rename-user", "session-begin-inside")].keeps == 0
    assert names[("sharing", "merge-then-expunge")].keeps is None
    assert names[("capitalise-name", "never-closes")].keeps is not None
    assert names[("find-user", "one")].keeps == 0
    assert names[("sharing", "add-to-the-target-only")].keeps == 0
    assert names[("delete-user", "a-new-object-with-the-id")].keeps == 0


# --- graded -----------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", sorted(CORPUS))
def test_the_solutions_earn_full_points(graded_course: GradedCourse, assignment: str) -> None:
    assert sum(graded_course.scores[SOLVED][assignment].values()) == POINTS


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_each_answer_earns_exactly_its_points(graded_course: GradedCourse, case: Case) -> None:
    full = exercise_points(read_notebook(ROOT / "source", case.assignment))[case.exercise]
    scores = graded_course.scores[case.student][case.assignment]
    if case.answer.total is not None:
        assert sum(scores.values()) == case.answer.total, scores
    else:
        expected = full if case.answer.keeps is None else case.answer.keeps
        assert earned(graded_course, case) == expected, scores


# --- what a student reads: the failing cell's output, in JupyterLab and the feedback page -------

# A misconception of the corpus, the test cell that catches it, and what that cell must teach
# (the issue's raw errors and misdiagnoses among them).
TEACHES = {
    ("crud:find-user:one", "test-find-user"): "one() (and scalar_one()) raise NoResultFound",
    ("scoped-sessions:sharing:add-to-the-target-only", "test-sharing"): (
        "an object belongs to one session at a time"
    ),
    ("crud:delete-user:a-new-object-with-the-id", "test-delete-user"): (
        "a new User(id=...) is transient, whatever its id"
    ),
    ("crud:rename-user:session-begin-inside", "test-rename-user"): (
        "the caller owns the session and its transaction"
    ),
    ("crud:add-users:ids-before-flush", "hidden-add-users"): "an id is None until the session",
    ("object-states:state-of:an-id-means-persistent", "test-state-of"): (
        "the DELETE was flushed: the object is no longer persistent"
    ),
    ("object-states:state-of:was-deleted-means-deleted", "test-state-of"): (
        "was_deleted stays True, but deleted is False"
    ),
    ("crud:delete-user:no-check-for-none", "hidden-delete-user"): (
        "a lookup found no row and returned None"
    ),
    ("scoped-sessions:worker:reads-the-id-after-remove", "test-worker"): (
        "the object is detached (its session was closed or removed)"
    ),
    ("object-states:capitalise-name:never-closes", "hidden-capitalise-name"): (
        "keeping it open to get around the DetachedInstanceError leaks a session"
    ),
    ("crud:find-or-create:autoflush-turned-off", "test-find-or-create"): "autoflushes it",
    ("scoped-sessions:sharing:merge-without-expunge", "test-sharing"): (
        "merge() copies the object into target but leaves the original in source"
    ),
    ("crud:add-users:commits-the-callers-session", "hidden-add-users"): (
        "a function handed a session must not commit it"
    ),
    ("scoped-sessions:sharing:make-transient-to-move", "hidden-sharing"): (
        "make_transient() would turn it into a new row"
    ),
    ("crud:find-user:closes-the-callers-session", "test-find-user"): (
        "`with session:` (which closes the caller's session)"
    ),
}


def cell_outputs(graded: GradedCourse, student: str, assignment: str, grade_id: str) -> list:
    nb = graded.notebook(student, assignment)
    cell = next(cell for cell in nb.cells if nbgrader_meta(cell).get("grade_id") == grade_id)
    return cell.outputs


@pytest.mark.parametrize(("case_id", "grade_id"), sorted(TEACHES))
def test_each_known_mistake_gets_its_teaching_message(
    graded_course: GradedCourse, case_id: str, grade_id: str
) -> None:
    from autograder.feedback import message_arguments, shown_message

    case = next(case for case in CASES if case.id == case_id)
    [error] = cell_outputs(graded_course, case.student, case.assignment, grade_id)
    assert error.output_type == "error" and error.ename == "AssertionError"
    message = error.evalue.rpartition("\n  likely misunderstanding: ")[2]
    assert TEACHES[case_id, grade_id] in message
    # the feedback page shows the same message: the cell's own, or one autograder.checks raises
    source = read_notebook(ROOT / "source", case.assignment)
    cell = next(cell for cell in source.cells if nbgrader_meta(cell).get("grade_id") == grade_id)
    assert shown_message(error, message_arguments(cell.source)) == f"AssertionError: {message}"


def test_a_failing_cell_shows_only_the_teaching_message_wrapped(
    graded_course: GradedCourse,
) -> None:
    from autograder.checks import WIDTH

    failing = [
        output
        for (case_id, grade_id) in TEACHES
        for case in CASES
        if case.id == case_id
        for output in cell_outputs(graded_course, case.student, case.assignment, grade_id)
    ]
    assert failing
    for error in failing:
        # JupyterLab shows `traceback`: the message itself, first line first, no frame of the
        # checking helpers (IPython uses the exception's _render_traceback_)
        shown = error.traceback
        assert shown[0].startswith("✗ ") and shown[0][2:] in error.evalue
        assert all(len(line) <= WIDTH for line in shown), shown
        assert not any("checks.py" in line or "Traceback" in line for line in shown), shown
        assert " ".join(" ".join(shown).split()) == " ".join(
            ("✗ " + error.evalue).split()
        )


@pytest.mark.parametrize("assignment", sorted(CORPUS))
def test_a_passing_visible_test_says_so_in_one_line(
    graded_course: GradedCourse, assignment: str
) -> None:
    source = read_notebook(ROOT / "source", assignment)
    visible = [
        nbgrader_meta(cell)["grade_id"]
        for cell in source.cells
        if is_test_cell(cell) and not is_hidden_test(cell)
    ]
    for grade_id in visible:
        [line] = cell_outputs(graded_course, SOLVED, assignment, grade_id)
        assert line.output_type == "stream" and line.name == "stdout", line
        assert re.fullmatch(r"✓ [^\n]+: passed\n", line.text), line.text


# --- the mutation pass's tool -------------------------------------------------------------------


def test_mutants_change_only_the_students_code() -> None:
    cell = (
        "def f(session):\n    ### BEGIN SOLUTION\n    session.commit()\n    return 1\n"
        "    ### END SOLUTION"
    )
    made = dict(mutation_pass.mutants(cell))
    assert made == {
        "commit -> flush, line 3": "def f(session):\n    session.flush()\n    return 1",
        "delete commit, line 3": "def f(session):\n    pass\n    return 1",
        "return -> return None, line 4": "def f(session):\n    session.commit()\n    return None",
        "commit the session before return, line 4": (
            "def f(session):\n    session.commit()\n    session.commit()\n    return 1"
        ),
        "roll the session back before return, line 4": (
            "def f(session):\n    session.commit()\n    session.rollback()\n    return 1"
        ),
    }


def test_sample_mutants_are_killed(graded_course: GradedCourse) -> None:
    for student in sample_mutants():
        assert sum(graded_course.scores[student][MUTATED].values()) < POINTS, student
