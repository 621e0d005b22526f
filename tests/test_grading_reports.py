"""Hostile LMS exports and broken records, graded by two `course-grade grade` runs: exact points
and reasons, submission text shown literally (terminal and HTML), nothing else touched."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from rich.console import Console
from test_grading_helpers import (
    ADD_ONLY,
    ASSIGNMENT,
    COMMAND,
    FULL,
    NOTHING,
    changed_paths,
    gradebook_rows,
    make_course,
    record,
    scores,
    solved,
    submit,
    tree_digest,
)

from autograder import cli
from autograder.course import BrokenRecord, Course, GradingRecord, Submission
from autograder.report import ClassReport
from autograder.submissions import unpack_lms_zip

WRONG_MUL = "def mul(a, b):\n    return 0"
GARBLED = "[/] [bold red]<script>x</script>"  # quoted whole in the reason (under 80 characters)
# rich markup, HTML, a terminal escape sequence and an emoji code, in a file name
ODD_NAME = "[bold red]x <b>\x1b[2J:red_circle:"
DUE = datetime(2026, 11, 20, 9, 0, 0)
ON_TIME = (2026, 11, 20, 8, 0, 0)
LATE = (2026, 11, 20, 10, 0, 0)
RESUBMITTED = (2026, 11, 21, 8, 0, 0)
MOODLE = "_assignsubmission_file_"
ABSOLUTE = "/tmp/course-grade-test-absolute.ipynb"

# student id: (points after the first run, after the second, reasons after the second)
EXPECTED = {
    "john-smith-301": (FULL, FULL, []),
    "john-smith-302": (ADD_ONLY, ADD_ONLY, []),
    "doejane-12345": (FULL, FULL, []),
    "resub-777": (ADD_ONLY, FULL, []),
    "mallory-555": (
        NOTHING,
        NOTHING,
        [
            "hw.ipynb is not a valid notebook (Notebook does not appear to be JSON: "
            f"{GARBLED!r}): its cells scored 0"
        ],
    ),
    "eve-markup-303": (FULL, FULL, [f"hw.ipynb was submitted as {ODD_NAME}.ipynb"]),
    "timothy": (FULL, FULL, []),  # from submitted/, its timestamp.txt not a time
}
REGRADED = {"resub-777", "john-smith-301", "john-smith-302"}  # resubmitted, broken records


def write_export(path: Path, course, resubmission: tuple[str, bool, tuple]) -> None:
    """A mixed Canvas and Moodle export of the class, with hostile members; `resubmission` is
    (member name, whether its answers are right, date)."""
    right, wrong = nbformat.writes(solved(course)), nbformat.writes(solved(course, WRONG_MUL))
    name, is_right, date = resubmission
    members = [
        (f"John Smith_301{MOODLE}/hw.ipynb", right, ON_TIME),
        (f"John Smith_302{MOODLE}/hw.ipynb", wrong, ON_TIME),
        ("doejane_LATE_12345_67890_hw.ipynb", right, LATE),
        (name, right if is_right else wrong, date),
        ("mallory_555_1_hw.ipynb", GARBLED, ON_TIME),
        (f"Eve Markup_303{MOODLE}/{ODD_NAME}.ipynb", right, ON_TIME),
        ("../escape.ipynb", "x", ON_TIME),
        (ABSOLUTE, "x", ON_TIME),
    ]
    with zipfile.ZipFile(path, "w") as bundle:
        for name, text, date in members:
            bundle.writestr(zipfile.ZipInfo(name, date), text)


def run(course, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [COMMAND, *arguments],
        cwd=course.root,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "500"},  # table rows on one line each
    )


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Export 1 graded; two records broken, `report`; export 2 (a resubmission) graded; an
    older export unpacked."""
    root = tmp_path_factory.mktemp("reports")
    course = make_course(root / "course")
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        gb.update_or_create_assignment(ASSIGNMENT, duedate=DUE)
    first_export, second_export, old_export = (root / f"{n}.zip" for n in ("1", "2", "old"))
    write_export(first_export, course, ("resub_777_1_hw.ipynb", False, ON_TIME))
    write_export(second_export, course, ("resub_777_2_hw-1.ipynb", True, RESUBMITTED))
    write_export(old_export, course, ("resub_777_1_hw.ipynb", False, ON_TIME))
    submit(course, "timothy", solved(course))
    (course.root / "submitted" / "timothy" / ASSIGNMENT / "timestamp.txt").write_text("?")
    state = {"course": course, "digest start": tree_digest(course.root)}
    state["first"] = run(course, "grade", ASSIGNMENT, "--zip", str(first_export), "--jobs", "2")
    state["first scores"] = scores(course)
    state["first rows"] = gradebook_rows(course)
    state["digest first"] = tree_digest(course.root)
    records = course.state_folder / "records" / ASSIGNMENT
    (records / "john-smith-302.json").write_text("{broken")
    (records / "john-smith-301.json").write_text('{"student": "john-smith-301"}')
    state["digest broken"] = tree_digest(course.root)
    state["broken report"] = run(course, "report")
    state["digest broken report"] = tree_digest(course.root)
    state["second"] = run(course, "grade", ASSIGNMENT, "--zip", str(second_export), "--jobs", "2")
    state["digest second"] = tree_digest(course.root)
    state["old export"] = unpack_lms_zip(course, old_export, ASSIGNMENT)
    state["digest old export"] = tree_digest(course.root)
    return state


def one_line(result: subprocess.CompletedProcess) -> str:
    return " ".join(result.stderr.split())


def test_every_command_succeeds(graded):
    for name in ("first", "broken report", "second"):
        assert graded[name].returncode == 0, (name, graded[name].stderr)


def test_each_student_gets_exact_points_and_reasons(graded):
    course = graded["course"]
    assert graded["first scores"] == {student: first for student, (first, _, _) in EXPECTED.items()}
    assert scores(course) == {student: second for student, (_, second, _) in EXPECTED.items()}
    for student, (_, _, reasons) in EXPECTED.items():
        assert record(course, student)["problems"] == reasons, student


def test_two_moodle_students_with_one_name_stay_two(graded):
    course = graded["course"]
    for student in ("john-smith-301", "john-smith-302"):
        submitted = course.folder("submitted", Submission(student, ASSIGNMENT)) / "hw.ipynb"
        assert submitted.is_file()
    assert scores(course)["john-smith-301"] != scores(course)["john-smith-302"]


def test_a_resubmission_in_a_new_export_is_regraded_and_no_other_grade_changes(graded):
    course, second = graded["course"], graded["second"]
    folder = course.folder("submitted", Submission("resub-777", ASSIGNMENT))
    assert (folder / "timestamp.txt").read_text() == "2026-11-21 08:00:00.000001 UTC"
    assert "1 submissions new or resubmitted, 5 unchanged, 2 skipped" in one_line(second)
    assert "4 submissions already graded" in second.stderr
    others = [row for row in gradebook_rows(course) if row[0] not in REGRADED]
    assert others == [row for row in graded["first rows"] if row[0] not in REGRADED]
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        submission = gb.find_submission(ASSIGNMENT, "resub-777")
        assert submission.timestamp == datetime(2026, 11, 21, 8, 0, 0, 1)


def test_an_older_export_never_replaces_a_newer_submission(graded):
    unpacked = graded["old export"]
    assert unpacked.updated == []
    assert (
        "resub-777",
        "not newer (2026-11-20 08:00:00) than the submission in submitted/ "
        "(2026-11-21 08:00:00.000001): kept that one",
    ) in unpacked.skipped
    assert changed_paths(graded["digest second"], graded["digest old export"]) == set()


def test_canvas_late_flag_is_reported_beside_nbgraders_own_lateness(graded):
    course = graded["course"]
    for name in ("first", "broken report", "second"):
        output = one_line(graded[name])
        assert (
            "doejane-12345 │ hw │ Canvas marked it LATE; nbgrader counts it 3600 s late (submitted "
            "2026-11-20 10:00:00, due 2026-11-20 09:00:00 UTC)"
        ) in output
        assert output.count("marked it LATE") == 1
    grades = (course.root / "grades.csv").read_text()
    assert "hw,2026-11-20 09:00:00,2026-11-20 10:00:00,doejane-12345,,,,5.0,0.0,5.0,5.0" in grades


def test_skipped_members_are_shown_with_their_reason(graded):
    first = one_line(graded["first"])
    assert "../escape.ipynb │ a path out of the export (..)" in first
    assert f"{ABSOLUTE} │ an absolute path" in first
    assert not Path(ABSOLUTE).exists()


def test_submission_text_is_shown_literally_in_the_terminal(graded):
    shown = ODD_NAME.replace("\x1b", "\\x1b")
    for name in ("first", "broken report", "second"):
        output = one_line(graded[name])
        assert "\x1b" not in output, name
        assert f"eve-markup-303 │ hw │ hw.ipynb was submitted as {shown}.ipynb" in output, name
        assert f"mallory-555 │ hw │ {EXPECTED['mallory-555'][2][0]}" in output, name


def test_the_html_report_escapes_submission_text(graded):
    page = (graded["course"].root / "grading-report.html").read_text()
    assert "<script>" not in page and "<b>" not in page
    assert "[/] [bold red]&lt;script&gt;x&lt;/script&gt;" in page


def test_a_broken_record_is_named_and_graded_again(graded):
    course = graded["course"]
    for name in ("broken report", "second"):
        output = one_line(graded[name])
        assert (
            "the grading record .course-grade/records/hw/john-smith-302.json is broken "
            "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
        ) in output, name
        assert (
            "the grading record .course-grade/records/hw/john-smith-301.json is broken "
            "(GradingRecord.__init__() missing 1 required positional argument: 'assignment')"
        ) in output, name
    for student in ("john-smith-301", "john-smith-302"):
        submission = Submission(student, ASSIGNMENT)
        assert course.read_record(submission).problems == EXPECTED[student][2]
        assert course.is_graded(submission)


def test_nothing_outside_the_graded_submissions_changes(graded):
    first = changed_paths(graded["digest start"], graded["digest first"])
    broken = changed_paths(graded["digest broken"], graded["digest broken report"])
    second = changed_paths(graded["digest broken report"], graded["digest second"])
    course_files = {
        "gradebook.db", "grades.csv", "grades-canvas.csv", "grading-report.html",
        "grading-report.csv",
    }  # fmt: skip

    def outside(paths: set[str], students: set[str]) -> set[str]:
        folders = tuple(
            f"{kind}/{student}/{ASSIGNMENT}/"
            for kind in ("submitted", "autograded", "feedback")
            for student in students
        )
        state = tuple(f".course-grade/{kind}/{ASSIGNMENT}/" for kind in ("records", "late"))
        state += tuple(f".course-grade/canvas-ids/{student}" for student in students)
        return {
            path
            for path in paths - course_files
            if not path.startswith(folders + state) and path != ".course-grade/lock"
        }

    assert outside(first, set(EXPECTED)) == set()
    assert broken <= course_files - {"gradebook.db"}
    assert outside(second, REGRADED) == set()
    assert all(
        not path.startswith(f"{kind}/{student}/")
        for path in second
        for student in set(EXPECTED) - REGRADED
        for kind in ("submitted", "autograded", "feedback")
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{broken", "Expecting property name enclosed in double quotes"),
        ("", "Expecting value: line 1 column 1 (char 0)"),
        ("[1, 2]", "expected a JSON object, found list"),
        ('{"student": "ann", "assignment": "hw", "grade": 10}', "unexpected keyword argument"),
        ('{"student": "ann", "assignment": "hw", "problems": "none"}', "must be strings"),
        ('{"student": "ann", "assignment": "hw", "problems": [["[/]"]]}', "must be strings"),
        ('{"student": "ann", "assignment": "hw", "seconds": "1"}', "seconds must be a number"),
        ('{"student": "bob", "assignment": "hw"}', "it is the record of bob/hw"),
        (b"\xff\xfe{", "'utf-8' codec can't decode byte 0xff"),
    ],
)
def test_a_broken_record_counts_as_not_graded_and_names_its_file(tmp_path, text, reason):
    course = Course(tmp_path)
    submission = Submission("ann", ASSIGNMENT)
    path = course.record_path(submission)
    path.parent.mkdir(parents=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(BrokenRecord) as broken:
        course.read_record(submission)
    assert str(broken.value).startswith(
        f"the grading record .course-grade/records/{ASSIGNMENT}/ann.json is broken ("
    )
    assert reason in str(broken.value)
    assert not course.is_graded(submission)
    assert course.read_records([submission]) == [
        GradingRecord("ann", ASSIGNMENT, [str(broken.value)])
    ]


@pytest.mark.parametrize("text", ["", "not a date", "2026-13-45 10:00:00 UTC", "9" * 40])
def test_a_timestamp_that_is_not_a_time_reads_as_none(tmp_path, text):
    (tmp_path / "timestamp.txt").write_text(text)
    assert Course.timestamp(tmp_path) is None


def test_terminal_tables_show_submission_text_literally(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, width=300, force_terminal=True))
    reasons = {
        "[/] [bold red]x :red_circle:": "[/] [bold red]x :red_circle:",
        "[link=https://evil.example]click[/link]": "[link=https://evil.example]click[/link]",
        "a\x1b]0;title\x07b\x1b[2Jc\u202ed": "a\\x1b]0;title\\x07b\\x1b[2Jc\\u202ed",
    }
    attention = [("[/]", ASSIGNMENT, reason) for reason in reasons]
    cli.print_tables(ClassReport(scores={"[/]": {ASSIGNMENT: (1.0, 5.0)}}, attention=attention))
    shown = screen.getvalue()
    assert "\x1b]" not in shown and "\x1b[2J" not in shown and "\u202e" not in shown
    for literal in reasons.values():
        assert f"│ [/] │ hw │ {literal} " in " ".join(shown.split()).replace("\x1b[0m", "")


def test_canvas_csv_matches_canvas_students_by_their_canvas_id(graded):
    with open(graded["course"].root / "grades-canvas.csv", newline="") as handle:
        rows = {row[0]: row for row in csv.reader(handle)}
    assert rows["doejane-12345"] == ["doejane-12345", "12345", "", "", "", "5"]  # from Canvas
    assert rows["john-smith-301"] == ["john-smith-301", "", "", "john-smith-301", "", "5"]
    assert rows["Points Possible"] == ["Points Possible", "", "", "", "", "5"]
