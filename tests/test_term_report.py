"""The instructor's report: one row per student with links to their feedback, mean and median,
what each test cell checks, the class's most frequent misunderstandings with who showed them,
plots, nothing loaded from the network; rebuilt by `course-grade report`; a Canvas CSV."""

from __future__ import annotations

import csv
import html
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbgrader.apps import NbGraderAPI
from test_grading_helpers import ASSIGNMENT, COMMAND, HIDDEN_LINE, make_course, solved, submit

from autograder import checks
from autograder.course import Course
from autograder.execute import relative_paths
from autograder.report import MISUNDERSTANDING

ADD_MISUNDERSTANDING = "add must return the sum, not print it"
MUL_MISUNDERSTANDING = "mul multiplies; it does not add"
TEST_ADD = (
    "# add returns the sum of its two arguments\n"
    f"assert add(1, 2) == 3, 'add(1, 2)\\n  expected: 3\\n  likely misunderstanding: "
    f"{ADD_MISUNDERSTANDING}'"
)
TEST_MUL = (
    "# mul multiplies two numbers\n"
    f"assert mul(2, 3) == 6, 'mul(2, 3)\\n  expected: 6\\n  likely misunderstanding: "
    f"{MUL_MISUNDERSTANDING}'\n"
    f"### BEGIN HIDDEN TESTS\n{HIDDEN_LINE}\n### END HIDDEN TESTS"
)
ADDS = "def mul(a, b):\n    return a + b"
PRINTS = "def add(a, b):\n    print(a + b)"


def build_graded_class(root: Path) -> Course:
    """A graded class of four: alice right, bob's mul adds, carol's add prints and her mul adds,
    dave right but under another notebook name."""
    course = make_course(root)
    source = course.root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    nb = nbformat.read(source, as_version=4)
    nb.cells[2].source, nb.cells[4].source = TEST_ADD, TEST_MUL
    nbformat.write(nb, source)
    api = NbGraderAPI(course.coursedir, config=course.config)
    assert api.generate_assignment(ASSIGNMENT, force=True)["success"]
    submit(course, "alice", solved(course))
    submit(course, "bob", solved(course, ADDS))
    carol = solved(course, ADDS)
    carol.cells[1].source = PRINTS
    submit(course, "carol", carol)
    submit(course, "dave", solved(course), name="homework")
    result = subprocess.run(
        [COMMAND, "grade", "--jobs", "2"], cwd=course.root, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return course


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = build_graded_class(tmp_path_factory.mktemp("report") / "course")
    page = (course.root / "grading-report.html").read_text()
    (course.root / "grading-report.html").unlink()
    rebuilt = subprocess.run([COMMAND, "report"], cwd=course.root, capture_output=True, text=True)
    assert rebuilt.returncode == 0, rebuilt.stderr
    return {"course": course, "page": page}


def text_of(page: str) -> str:
    """The page's text, tags removed, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_report_rebuilds_the_same_page_from_the_gradebook(graded):
    assert (graded["course"].root / "grading-report.html").read_text() == graded["page"]


def test_one_row_per_student_with_scores_total_feedback_link_and_reason(graded):
    page, course = graded["page"], graded["course"]
    text = text_of(page)
    assert "alice 5 5 / 5 nothing" in text
    assert "bob 2 2 / 5 nothing" in text
    assert "carol 0 0 / 5 nothing" in text
    assert "dave 5 5 / 5 hw: hw.ipynb was submitted as homework.ipynb" in text
    for student in ("alice", "bob", "carol", "dave"):
        link = f'href="feedback/{student}/{ASSIGNMENT}/{ASSIGNMENT}.html"'
        assert link in page
        assert (course.root / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").is_file()


def test_class_mean_and_median(graded):
    text = text_of(graded["page"])
    assert "hw: mean 3.00, median 3.5 of 5 points" in text
    assert "total: mean 3.00, median 3.5 of 5 points" in text


def test_what_each_test_cell_checks_and_its_failure_fraction(graded):
    text = text_of(graded["page"])
    assert "hw test_mul mul multiplies two numbers 3 2/4 50 %" in text
    assert "hw test_add add returns the sum of its two arguments 2 1/4 25 %" in text
    assert graded["page"].count("<svg") == 2  # the score histogram and the failure bars


def test_most_frequent_misunderstandings_with_the_students_who_showed_them(graded):
    text = text_of(graded["page"])
    section = text.split("Most frequent misunderstandings")[1].split("Students Each score")[0]
    assert f"2 hw {MUL_MISUNDERSTANDING} bob, carol" in section
    assert f"1 hw {ADD_MISUNDERSTANDING} carol" in section
    assert section.index(MUL_MISUNDERSTANDING) < section.index(ADD_MISUNDERSTANDING)


def test_the_report_opens_offline_and_shows_no_hidden_test(graded):
    page = graded["page"]
    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert "<script" not in page
    assert HIDDEN_LINE not in page and "mul(-2" not in page


def test_canvas_csv_imports_scores_with_points_possible(graded):
    course = graded["course"]
    with open(course.root / "grades-canvas.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", ASSIGNMENT]
    assert rows[1] == ["Points Possible", "", "", "", "", "5"]
    assert rows[2:] == [
        ["alice", "", "", "alice", "", "5"],
        ["bob", "", "", "bob", "", "2"],
        ["carol", "", "", "carol", "", "0"],
        ["dave", "", "", "dave", "", "5"],
    ]
    assert (course.root / "grades.csv").is_file()  # nbgrader's own export beside it


def test_the_checks_own_failure_message_is_parsed():
    """The wording autograder.checks writes is the one the report counts."""
    with pytest.raises(AssertionError) as failure:
        checks.fail("the id", 1, 2, "ids are given at flush")
    assert MISUNDERSTANDING.search(str(failure.value))[1].strip() == "ids are given at flush"


def test_outputs_name_the_kernels_files_relative_to_its_folder(tmp_path):
    """The grader's temporary kernel folder never shows in a graded notebook."""
    workdir = tmp_path / "course-grade-kernel-x" / "work"
    error = nbformat.v4.new_output(
        "error",
        ename="AssertionError",
        evalue=f"the database file {workdir}/crud.db\n  got: no such file",
        traceback=[f'File "{workdir}/helper.py", line 3', "AssertionError"],
    )
    stream = nbformat.v4.new_output("stream", name="stdout", text=f"cwd is {workdir}\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[error, stream])])
    relative_paths(nb, workdir)
    assert error.evalue == "the database file crud.db\n  got: no such file"
    assert error.traceback[0] == 'File "helper.py", line 3'
    assert stream.text == "cwd is .\n"
    assert str(tmp_path) not in nbformat.writes(nb)
