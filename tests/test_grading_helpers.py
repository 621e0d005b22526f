"""A synthetic nbgrader course for the grading tests (no tests here; built in tmp folders)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
from nbgrader.api import Grade, Gradebook
from nbgrader.apps import NbGraderAPI

from autograder.course import Course

ASSIGNMENT = "hw"
ADD_SOLUTION = "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION"
MUL_SOLUTION = "def mul(a, b):\n    ### BEGIN SOLUTION\n    return a * b\n    ### END SOLUTION"
HIDDEN_LINE = "assert mul(-2, 3) == -6, 'mul must handle negative numbers'"
TEST_ADD = "assert add(1, 2) == 3, 'add(1, 2) should be 3'"
TEST_MUL = (
    "assert mul(2, 3) == 6, 'mul(2, 3) should be 6'\n"
    f"### BEGIN HIDDEN TESTS\n{HIDDEN_LINE}\n### END HIDDEN TESTS"
)
POINTS = {"test_add": 2, "test_mul": 3}
# The grading command of this environment, and the scores of the synthetic assignment's test cells.
COMMAND = str(Path(sys.executable).parent / "course-grade")
FULL = {"test_add": 2.0, "test_mul": 3.0}
ADD_ONLY = {"test_add": 2.0, "test_mul": 0.0}
NOTHING = {"test_add": 0.0, "test_mul": 0.0}

CONFIG = """from autograder.feedback import leak_free_feedback_config
c = get_config()
c.merge(leak_free_feedback_config())
c.CourseDirectory.course_id = "grading-test"
c.CourseDirectory.db_url = "sqlite:///{root}/gradebook.db"
c.OverwriteCells.add_missing_cells = True
c.Execute.timeout = 3
c.Exchange.root = "{root}/exchange"
"""


def _meta(grade_id: str, *, solution: bool = False, points: int = 0) -> dict:
    return {
        "nbgrader": {
            "grade_id": grade_id,
            "solution": solution,
            "grade": points > 0,
            "locked": not solution,
            "schema_version": 3,
            **({"points": points} if points else {}),
        }
    }


def source_notebook() -> nbformat.NotebookNode:
    cells = [
        nbformat.v4.new_markdown_cell("# Homework", metadata=_meta("intro")),
        nbformat.v4.new_code_cell(ADD_SOLUTION, metadata=_meta("add", solution=True)),
        nbformat.v4.new_code_cell(TEST_ADD, metadata=_meta("test_add", points=2)),
        nbformat.v4.new_code_cell(MUL_SOLUTION, metadata=_meta("mul", solution=True)),
        nbformat.v4.new_code_cell(TEST_MUL, metadata=_meta("test_mul", points=3)),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata.kernelspec = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    return nb


def make_course(root: Path) -> Course:
    """A course folder with one generated assignment, hw/hw.ipynb (5 points)."""
    # nbgrader runs the `alembic` command when it creates a gradebook
    bin_folder = str(Path(sys.executable).parent)
    if bin_folder not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = f"{bin_folder}{os.pathsep}{os.environ['PATH']}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(CONFIG.format(root=root))
    source = root / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    nbformat.write(source_notebook(), source / f"{ASSIGNMENT}.ipynb")
    (source / "data.txt").write_text("from source\n")
    course = Course(root)
    result = NbGraderAPI(course.coursedir, config=course.config).generate_assignment(ASSIGNMENT)
    assert result["success"], result["log"]
    return course


def release_notebook(course: Course) -> nbformat.NotebookNode:
    return nbformat.read(course.root / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)


def answer(nb: nbformat.NotebookNode, grade_id: str, source: str) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
    return nb


def solved(course: Course, mul: str = "def mul(a, b):\n    return a * b") -> nbformat.NotebookNode:
    nb = answer(release_notebook(course), "add", "def add(a, b):\n    return a + b")
    return answer(nb, "mul", mul)


def submit(
    course: Course, student: str, nb: nbformat.NotebookNode | str | None, name: str = ASSIGNMENT
) -> None:
    """Put a submission in submitted/<student>/hw/ (a string is written as the file's text)."""
    folder = course.root / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "timestamp.txt").write_text("2026-11-20 10:00:00.000000 UTC")
    if isinstance(nb, str):
        (folder / f"{name}.ipynb").write_text(nb)
    elif nb is not None:
        nbformat.write(nb, folder / f"{name}.ipynb")


def copy_course(course: Course, root: Path) -> Course:
    shutil.copytree(course.root, root)
    (root / "nbgrader_config.py").write_text(CONFIG.format(root=root))
    return Course(root)


def stock_autograde(course: Course, root: Path, students: list[str]) -> Course:
    """A copy of `course` at `root` with only `students`' submissions, graded by stock
    `nbgrader autograde` (one notebook after another)."""
    stock = copy_course(course, root)
    for folder in (stock.root / "submitted").iterdir():
        if folder.name not in students:
            shutil.rmtree(folder)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "nbgrader"), "autograde", ASSIGNMENT],
        cwd=stock.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return stock


def gradebook_rows(course: Course) -> list[tuple]:
    """(student, notebook, cell, auto_score, manual_score) of every grade row in the gradebook."""
    rows = []
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        for grade in gb.db.query(Grade).all():
            notebook = grade.notebook
            rows.append(
                (
                    notebook.assignment.student.id,
                    notebook.name,
                    grade.cell.name,
                    grade.auto_score,
                    grade.manual_score,
                )
            )
    return sorted(rows)


def scores(course: Course) -> dict[str, dict[str, float]]:
    """{student: {test cell: auto score}} from the gradebook."""
    result: dict[str, dict[str, float]] = {}
    for student, _, cell, auto_score, _ in gradebook_rows(course):
        result.setdefault(student, {})[cell] = auto_score
    return result


def record(course: Course, student: str) -> dict:
    path = course.state_folder / "records" / ASSIGNMENT / f"{student}.json"
    return json.loads(path.read_text())


def tree_digest(root: Path) -> dict[str, str]:
    """{path relative to root: sha256 of the file, or "link -> target"} of every file below."""
    digest = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            digest[key] = f"link -> {os.readlink(path)}"
        elif path.is_file():
            digest[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def changed_paths(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Paths added, removed or changed between two tree digests."""
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


# What course-grade writes in a course folder; nothing else may change when it grades.
GRADER_OUTPUTS = (
    "autograded/", "feedback/", ".course-grade/", "gradebook.db", "grades.csv", "grades-canvas.csv",
    "grading-report.html", "grading-report.csv",
)  # fmt: skip


def changed_outside_grader_outputs(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Paths changed between two tree digests that course-grade has no business writing."""
    return {path for path in changed_paths(before, after) if not path.startswith(GRADER_OUTPUTS)}
