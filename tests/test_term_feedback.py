"""Feedback reaches students, and no route to it leaks a hidden test.

End to end through nbgrader's exchange: two students who share one machine (each with
`--student` and a cache of their own) fetch and submit, `course-grade grade --exchange` grades,
stock `nbgrader release_feedback` releases, and each student's `nbgrader fetch_feedback` brings
back exactly their own page. Then the stock routes: `nbgrader generate_feedback` and the API call
formgrader's "Generate Feedback" handler makes (`NbGraderAPI.generate_feedback`; formgrader
itself is not started) render the same leak-free page under the course's nbgrader_config.py.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.apps import NbGraderAPI
from test_grading_helpers import (
    ASSIGNMENT,
    COMMAND,
    CONFIG,
    HIDDEN_LINE,
    make_course,
    solved,
)

from autograder.course import Course

NBGRADER = str(Path(sys.executable).parent / "nbgrader")
COURSE_ID = "grading-test"
WRONG_MUL = "def mul(a, b):\n    return 0"
HIDDEN_TEXT = ("mul(-2, 3)", "BEGIN HIDDEN TESTS")


def nbgrader(cwd: Path, *arguments: str) -> str:
    result = subprocess.run(
        [NBGRADER, *arguments], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def shown(page: str) -> str:
    """The page's text as a reader sees it (highlighted code is split by tags)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def assert_leak_free(page: str) -> None:
    """No hidden test, no CDN, contents titled by what each test checks."""
    for text in HIDDEN_TEXT:
        assert text not in shown(page)
    assert HIDDEN_LINE not in shown(page)
    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert ">Test cell<" not in page
    assert ">add(1, 2) should be 3</a> (Score:" in page


class Student:
    """A student on a shared machine: their own folder and nbgrader cache, `--student`."""

    def __init__(self, name: str, home: Path, exchange: Path) -> None:
        self.name = name
        self.home = home
        self.home.mkdir(parents=True)
        self.options = [
            f"--course={COURSE_ID}",
            f"--Exchange.root={exchange}",
            f"--Exchange.cache={home / 'nbgrader-cache'}",
        ]

    def fetch_and_submit(self, mul: str, course: Course) -> None:
        nbgrader(self.home, "fetch_assignment", ASSIGNMENT, *self.options)
        notebook = self.home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        nbformat.write(solved(course, mul), notebook)
        nbgrader(self.home, "submit", ASSIGNMENT, f"--student={self.name}", *self.options)

    def fetch_feedback(self) -> list[Path]:
        nbgrader(self.home, "fetch_feedback", ASSIGNMENT, f"--student={self.name}", *self.options)
        return sorted((self.home / ASSIGNMENT / "feedback").glob("*/*.html"))


@pytest.fixture(scope="module")
def term(tmp_path_factory):
    root = tmp_path_factory.mktemp("term")
    course = make_course(root / "course")
    nbgrader(course.root, "release_assignment", ASSIGNMENT)
    exchange = course.root / "exchange"
    students = {
        "alice": Student("alice", root / "alice", exchange),
        "bob": Student("bob", root / "bob", exchange),
    }
    students["alice"].fetch_and_submit("def mul(a, b):\n    return a * b", course)
    students["bob"].fetch_and_submit(WRONG_MUL, course)
    graded = subprocess.run(
        [COMMAND, "grade", ASSIGNMENT, "--exchange", "--jobs", "2"],
        cwd=course.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert graded.returncode == 0, graded.stderr
    released = nbgrader(course.root, "release_feedback", ASSIGNMENT)
    fetched = {name: student.fetch_feedback() for name, student in students.items()}
    return {"course": course, "released": released, "fetched": fetched}


def test_each_student_fetches_only_their_own_feedback(term):
    fetched = term["fetched"]
    assert [page.name for page in fetched["alice"]] == [f"{ASSIGNMENT}.html"]
    assert [page.name for page in fetched["bob"]] == [f"{ASSIGNMENT}.html"]
    alice, bob = (fetched[name][0].read_text() for name in ("alice", "bob"))
    assert "(Score: 5.0 / 5.0)" in alice
    assert "(Score: 2.0 / 5.0)" in bob
    assert "AssertionError: mul(2, 3) should be 6" in bob
    assert "AssertionError" not in alice
    assert "white-space: pre-wrap;\n  overflow-wrap: anywhere;" in bob  # long values wrap
    for page in (alice, bob):
        assert_leak_free(page)


def test_release_feedback_reads_what_course_grade_wrote(term):
    course = term["course"]
    for student in ("alice", "bob"):
        folder = course.root / "feedback" / student / ASSIGNMENT
        assert (folder / "submission_secret.txt").read_text() == (
            course.root / "submitted" / student / ASSIGNMENT / "submission_secret.txt"
        ).read_text()
    released = sorted((course.root / "exchange" / COURSE_ID / "feedback").glob("*.html"))
    assert len(released) == 2
    assert "Releasing feedback for student 'bob'" in term["released"]


def test_a_submission_from_outside_the_exchange_still_releases(tmp_path):
    """A folder in submitted/ has no secret: course-grade gives its feedback one nobody holds,
    so nbgrader's release_feedback does not stop there."""
    course = make_course(tmp_path / "course")
    folder = course.root / "submitted" / "carol" / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(solved(course), folder / f"{ASSIGNMENT}.ipynb")
    graded = subprocess.run(
        [COMMAND, "grade", "--jobs", "1"], cwd=course.root, capture_output=True, text=True
    )
    assert graded.returncode == 0, graded.stderr
    feedback = course.root / "feedback" / "carol" / ASSIGNMENT
    assert len((feedback / "submission_secret.txt").read_text()) == 128
    assert (feedback / "timestamp.txt").read_text() == ""
    (course.root / "exchange").mkdir()
    nbgrader(course.root, "release_feedback", ASSIGNMENT)
    assert len(list((course.root / "exchange" / COURSE_ID / "feedback").glob("*.html"))) == 1


def test_stock_generate_feedback_is_leak_free(term):
    autograded = term["course"]
    nbgrader(autograded.root, "generate_feedback", ASSIGNMENT, "--force")
    page = (autograded.root / "feedback" / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert_leak_free(page)
    assert "AssertionError: mul(2, 3) should be 6" in page


def test_formgraders_feedback_route_is_leak_free(term):
    course = Course(term["course"].root)
    page = course.root / "feedback" / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.html"
    page.unlink()
    result = NbGraderAPI(course.coursedir, config=course.config).generate_feedback(
        ASSIGNMENT, "bob"
    )
    assert result["success"], result.get("log")
    assert_leak_free(page.read_text())


def test_without_the_course_configuration_stock_feedback_leaks(tmp_path, term):
    """The checks above can fail: under nbgrader's own settings the hidden test shows."""
    plain = tmp_path / "plain"
    shutil.copytree(term["course"].root, plain)
    config = CONFIG.format(root=plain).replace("c.merge(leak_free_feedback_config())\n", "")
    (plain / "nbgrader_config.py").write_text(config)
    nbgrader(plain, "generate_feedback", ASSIGNMENT, "--force")
    page = (plain / "feedback" / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert HIDDEN_LINE.split(",")[0] in shown(page)
