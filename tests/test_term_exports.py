"""What the instructor exports and reads is never a score nobody gave: a submission NOT GRADED
after an infrastructure failure has no score in grades.csv, grades-canvas.csv or the report; the
report's misunderstandings are the instructor's own messages; `init_term` fails cleanly.

Cheap: no kernel runs. A submission is "graded" by writing its scores into the gradebook, and
"not graded" by the grading writer's own steps for an infrastructure failure (open, abandon,
drop); one course (one `generate_assignment`) is shared by the module where tests only read it.
"""

from __future__ import annotations

import csv
import html
import re
import warnings
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning
from test_grading_helpers import ASSIGNMENT, make_course, solved, source_notebook, submit

from autograder.course import Course, GradingRecord, Submission, load_nbgrader_config
from autograder.feedback import checks_messages
from autograder.gradebook import GradebookWriter
from autograder.report import (
    _spreadsheet_safe,
    collect_report,
    export_grades,
    write_canvas_csv,
    write_report_html,
)
from autograder.submissions import find_submissions
from autograder.term import TermError, init_term

REPOSITORY = Path(__file__).resolve().parents[1]
KERNEL_FAILED = "the kernel did not start"
PLANTED = "the test is wrong, please give full marks"
CHECKS_MESSAGE = sorted(checks_messages())[0]


def grade_by_hand(course: Course, student: str, scores: dict[str, float]) -> None:
    """Give a submission the auto scores `scores` (by test cell) and its grading record, as a
    run of `course-grade grade` would."""
    submission = Submission(student, ASSIGNMENT)
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        gb.update_or_create_student(student)
        with warnings.catch_warnings():  # nbgrader's autoflush of half-built rows (upstream)
            warnings.simplefilter("ignore", SAWarning)
            gb.update_or_create_submission(ASSIGNMENT, student)
        notebook = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
        for grade in notebook.grades:
            grade.auto_score = scores.get(grade.cell.name, 0.0)
            grade.needs_manual_grade = False
        gb.db.commit()
    course.write_record(GradingRecord(submission.student, submission.assignment))


def fail_to_grade(course: Course, student: str, force: bool = False) -> None:
    """What the grading loop does when a submission's kernel cannot start."""
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        writer = GradebookWriter(course, gb)
        opened, jobs = writer.open(Submission(student, ASSIGNMENT), force)
        assert [job.notebook for job in jobs] == [ASSIGNMENT]
        writer.abandon(opened, ASSIGNMENT, KERNEL_FAILED)
        writer.drop(opened)
        writer.remove_staging()


def has_submission(course: Course, student: str) -> bool:
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        try:
            gb.find_submission(ASSIGNMENT, student)
        except MissingEntry:
            return False
    return True


def exports(course: Course) -> dict:
    """grades.csv rows by student, grades-canvas.csv rows by student, the report and its text."""
    grades, canvas = course.root / "grades.csv", course.root / "grades-canvas.csv"
    page = course.root / "grading-report.html"
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        export_grades(course, grades, gb)
        report = collect_report(course, course.read_records(find_submissions(course)), gb)
        write_canvas_csv(course, report, gb, canvas)
        write_report_html(report, page)
    with open(grades, newline="") as handle:
        nbgrader_rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    with open(canvas, newline="") as handle:
        canvas_rows = {row[0]: row for row in list(csv.reader(handle))[2:]}
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text())).split())
    return {"grades": nbgrader_rows, "canvas": canvas_rows, "report": report, "text": text}


def assert_not_graded(found: dict, student: str) -> None:
    """`student` has no score anywhere; bob, the one graded, makes the class's numbers alone."""
    row = found["grades"][student]
    assert (row["raw_score"], row["late_submission_penalty"], row["score"]) == ("", "", "")
    assert found["canvas"][student] == [student, "", "", student, "", ""]
    assert student not in found["report"].scores
    noted = f"{student} NOT GRADED 0 / 5 (incomplete) hw: not graded yet (hw.ipynb: {KERNEL_FAILED}"
    assert noted in found["text"]
    assert "needs manual grading" not in found["text"]
    assert "hw: mean 5.00, median 5 of 5 points" in found["text"]
    assert "total: mean 5.00, median 5 of 5 points" in found["text"]
    assert {(t.cell, t.students, t.failed) for t in found["report"].tests} == {
        ("test_add", 1, 0),
        ("test_mul", 1, 0),
    }


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Course:
    """bob graded (full marks); alice's kernel could not start; carol and dave were graded, then
    regraded with --force and their kernel could not start, dave after the instructor gave a
    score by hand in formgrader."""
    course = make_course(tmp_path_factory.mktemp("exports") / "course")
    for student in ("alice", "bob", "carol", "dave"):
        submit(course, student, solved(course))
    for student in ("bob", "carol", "dave"):
        grade_by_hand(course, student, {"test_add": 2.0, "test_mul": 3.0})
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        gb.find_grade("test_mul", ASSIGNMENT, ASSIGNMENT, "dave").manual_score = 1.5
        gb.db.commit()
    fail_to_grade(course, "alice")
    fail_to_grade(course, "carol", force=True)
    fail_to_grade(course, "dave", force=True)
    return course


def test_a_submission_not_graded_has_no_score_in_any_export(course):
    found = exports(course)
    assert_not_graded(found, "alice")
    assert found["grades"]["bob"]["score"] == "5.0"
    assert found["canvas"]["bob"] == ["bob", "", "", "bob", "", "5"]
    assert "bob 5 5 / 5 nothing" in found["text"]
    # nbgrader's gradebook holds no submission for it either (formgrader agrees)
    assert not has_submission(course, "alice")


def test_regrading_that_fails_drops_the_old_score_unless_the_instructor_graded_by_hand(course):
    """`grade --force` of a graded submission whose kernel then fails (carol): its old grading
    record and machine scores go (they may belong to an older submission). A score the
    instructor gave by hand (dave's) keeps the gradebook row, yet no export shows a score."""
    found = exports(course)
    for student in ("carol", "dave"):
        assert not course.record_path(Submission(student, ASSIGNMENT)).exists()
        assert_not_graded(found, student)
    assert not has_submission(course, "carol")
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        assert gb.find_grade("test_mul", ASSIGNMENT, ASSIGNMENT, "dave").manual_score == 1.5


def test_the_report_counts_only_the_instructors_misunderstandings(course, tmp_path):
    """A student's code can raise any text in a test cell: only a message the instructor wrote
    (or autograder.checks raises) is counted as a misunderstanding."""
    nb = solved(course)
    errors = {
        "test_add": f"add(1, 2)\n  likely misunderstanding: {CHECKS_MESSAGE}",
        "test_mul": f"mul\n  likely misunderstanding: {PLANTED}",
    }
    for cell in nb.cells:
        name = cell.metadata.get("nbgrader", {}).get("grade_id")
        if name in errors:
            error = nbformat.v4.new_output(
                "error", ename="AssertionError", evalue=errors[name], traceback=[]
            )
            cell.outputs = [error]
    graded = course.folder("autograded", Submission("bob", ASSIGNMENT))
    graded.mkdir(parents=True, exist_ok=True)
    try:
        nbformat.write(nb, graded / f"{ASSIGNMENT}.ipynb")
        report = exports(course)["report"]
    finally:
        (graded / f"{ASSIGNMENT}.ipynb").unlink()
    assert [(m.message, m.students) for m in report.misunderstandings] == [
        (" ".join(CHECKS_MESSAGE.split()), {"bob"})
    ]


def test_a_canvas_cell_never_starts_a_formula():
    """OWASP's CSV-injection list: =, +, -, @, and a leading tab or carriage return."""
    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\t=1+1", "\r=1+1"):
        assert _spreadsheet_safe(text) == f"'{text}"
    assert _spreadsheet_safe("doe, jane") == "doe, jane"


def public_repository(root: Path, config: str) -> Path:
    """A course repository: one assignment and the course's nbgrader_config.py as `config`."""
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(source_notebook(), root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    (root / "nbgrader_config.py").write_text(config)
    return root


COURSE_CONFIG = (REPOSITORY / "nbgrader_config.py").read_text()
EXCHANGE_LINE = 'c.Exchange.root = str(COURSE_ROOT / "exchange")\n'
ROOT_LINE = "c.CourseDirectory.root = str(COURSE_ROOT)\n"


def test_init_term_refuses_a_config_whose_course_root_is_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nbgrader also reads the current folder's config
    assert ROOT_LINE in COURSE_CONFIG
    elsewhere = tmp_path / "elsewhere"
    config = COURSE_CONFIG.replace(ROOT_LINE, f"c.CourseDirectory.root = {str(elsewhere)!r}\n")
    repository = public_repository(tmp_path / "public", config)
    with pytest.raises(TermError, match="sets the course root to .*elsewhere, not to its own"):
        init_term(tmp_path / "term", repository)
    assert not (tmp_path / "term").exists()  # nothing half-made is left
    (tmp_path / "empty").mkdir()
    with pytest.raises(TermError, match="not to its own folder"):
        init_term(tmp_path / "empty", repository)
    assert list((tmp_path / "empty").iterdir()) == []  # an empty folder given stays empty


def test_init_term_refuses_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    repository = public_repository(tmp_path / "public", COURSE_CONFIG)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(TermError, match="exists and is not a folder"):
        init_term(tmp_path / "afile", repository)
    assert (tmp_path / "afile").read_text() == "mine"


def test_init_term_gives_a_course_without_an_exchange_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert EXCHANGE_LINE in COURSE_CONFIG
    repository = public_repository(tmp_path / "public", COURSE_CONFIG.replace(EXCHANGE_LINE, ""))
    term = init_term(tmp_path / "term", repository)
    exchange = tmp_path / "term" / "exchange"
    assert exchange.is_dir()
    assert load_nbgrader_config(term.root).Exchange.root == str(exchange)
    assert (term.root / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()
