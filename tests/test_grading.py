"""End to end: a synthetic class with every hostile case, graded once by `course-grade grade`."""

from __future__ import annotations

import csv
import subprocess

import pytest
from nbgrader.api import Gradebook
from test_grading_helpers import (
    ADD_ONLY,
    ASSIGNMENT,
    COMMAND,
    FULL,
    HIDDEN_LINE,
    NOTHING,
    answer,
    gradebook_rows,
    make_course,
    record,
    release_notebook,
    scores,
    solved,
    stock_autograde,
    submit,
)

from autograder.cli import main

# student: (answer to the `mul` cell or a special case, expected scores, expected reason)
CASES = {
    "alice": (None, FULL, None),
    "bob": ("blank", NOTHING, None),
    "carol": ("def mul(a, b):\n    return a * b if a > 0 else 0", ADD_ONLY, None),
    "loop": (
        "while True:\n    pass",
        ADD_ONLY,
        "cell 4 (mul): timed out after 3 s and was interrupted",
    ),
    "deaf": (
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        ADD_ONLY,
        "cell 4 (mul): timed out after 3 s and ignored the interrupt; the kernel was stopped",
    ),
    "quitter": ("import os\nos._exit(1)", ADD_ONLY, "cell 4 (mul): the kernel died"),
    "segfault": ("import ctypes\nctypes.string_at(0)", ADD_ONLY, "cell 4 (mul): the kernel died"),
    "hog": (
        "memory = bytearray(8 * 1024**3)\ndef mul(a, b):\n    return a * b",
        ADD_ONLY,
        "cell 4 (mul): hit the memory limit (MemoryError)",
    ),
    "flood": (
        "print('x' * 30_000_000)\ndef mul(a, b):\n    return a * b",
        FULL,
        "cell 4 (mul): output cut at 1000000 bytes",
    ),
    "garbled": ("not json", NOTHING, "hw.ipynb is not a valid notebook"),
    "absent": ("missing", NOTHING, "hw.ipynb is missing: its cells scored 0"),
    "renamer": ("renamed", FULL, "hw.ipynb was submitted as homework.ipynb"),
    "editor": ("edit test", FULL, "test cell test_add was edited (restored from source/)"),
    "deleter": ("delete test", FULL, "test cell test_mul was deleted (restored from source/)"),
    "meddler": ("break metadata", NOTHING, "hw.ipynb could not be graded (SchemaTooNewError"),
}
# Submissions stock nbgrader can grade without dropping them (compared with its grades).
STOCK_GRADABLE = ["alice", "bob", "carol", "loop", "editor", "deleter"]


def make_submission(course, student: str, case: str | None) -> None:
    if case is None:
        submit(course, student, solved(course))
    elif case == "blank":
        submit(course, student, release_notebook(course))
    elif case == "not json":
        submit(course, student, '{"cells": [')
    elif case == "missing":
        submit(course, student, None)
    elif case == "renamed":
        submit(course, student, solved(course), name="homework")
    elif case == "edit test":
        submit(course, student, answer(solved(course), "test_add", "pass"))
    elif case == "delete test":
        nb = solved(course)
        nb.cells = [
            c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_mul"
        ]
        submit(course, student, nb)
    elif case == "break metadata":
        nb = solved(course)
        nb.cells[2].metadata["nbgrader"]["schema_version"] = 99
        submit(course, student, nb)
    else:
        submit(course, student, solved(course, mul=case))


def grade_command(course, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [COMMAND, "grade", "--jobs", "2", *arguments],
        cwd=course.root,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded once by course-grade, and a copy graded by stock nbgrader autograde."""
    root = tmp_path_factory.mktemp("grading")
    course = make_course(root / "course")
    for student, (case, _, _) in CASES.items():
        make_submission(course, student, case)
    stock = stock_autograde(course, root / "stock", STOCK_GRADABLE)
    result = grade_command(course)
    assert result.returncode == 0, result.stderr
    return course, stock, result


def test_every_submission_gets_the_points_its_honest_answers_earn(graded):
    course, _, _ = graded
    assert scores(course) == {student: expected for student, (_, expected, _) in CASES.items()}


def test_every_hostile_submission_has_its_reason_recorded(graded):
    course, _, result = graded
    for student, (_, _, reason) in CASES.items():
        problems = record(course, student)["problems"]
        if reason is None:
            assert problems == [], student
        else:
            assert any(reason in problem for problem in problems), (student, problems)
            assert student in result.stderr  # listed in the final table


def test_grades_match_a_serial_nbgrader_autograde(graded):
    course, stock, _ = graded
    ours = {
        student: cells for student, cells in scores(course).items() if student in STOCK_GRADABLE
    }
    assert ours == scores(stock)


def test_the_gradebook_holds_every_grade_exactly_once(graded):
    course, _, _ = graded
    keys = [(student, cell) for student, _, cell, _, _ in gradebook_rows(course)]
    assert sorted(keys) == sorted((student, cell) for student in CASES for cell in FULL)


def test_flooded_output_is_cut_before_it_reaches_the_autograded_notebook(graded):
    course, _, _ = graded
    notebook = course.root / "autograded" / "flood" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert notebook.stat().st_size < 2_000_000


def test_feedback_shows_results_and_messages_but_no_hidden_test_source(graded):
    course, _, _ = graded
    pages = sorted((course.root / "feedback").glob(f"*/{ASSIGNMENT}/*.html"))
    ungradable = {"garbled", "absent", "meddler"}  # no autograded notebook to show
    assert sorted(page.parent.parent.name for page in pages) == sorted(set(CASES) - ungradable)
    for page in pages:
        text = page.read_text()
        assert "BEGIN HIDDEN TESTS" not in text
        assert "mul(-2" not in text and "negative numbers'" not in text, page
    carol = (course.root / "feedback" / "carol" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "AssertionError: mul must handle negative numbers" in carol
    assert "Score: 0.0 / 3.0" in carol and "Score: 2.0 / 2.0" in carol
    assert HIDDEN_LINE.split(",")[0] not in carol


def test_grades_are_exported_with_nbgraders_columns(graded):
    course, _, _ = graded
    with open(course.root / "grades.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "assignment",
        "duedate",
        "timestamp",
        "student_id",
        "last_name",
        "first_name",
        "email",
        "raw_score",
        "late_submission_penalty",
        "score",
        "max_score",
    ]
    totals = {row["student_id"]: float(row["score"]) for row in rows}
    assert totals == {student: sum(cells.values()) for student, (_, cells, _) in CASES.items()}


def test_report_shows_the_distribution_and_the_failure_rate_of_each_test(graded):
    course, _, _ = graded
    page = (course.root / "grading-report.html").read_text()
    assert "<svg" in page and "<rect" in page
    with open(course.root / "grading-report.csv") as handle:
        rows = {row["test_cell"]: row for row in csv.DictReader(handle)}
    failed_mul = sum(1 for _, cells, _ in CASES.values() if cells["test_mul"] == 0)
    assert rows["test_mul"]["failed"] == str(failed_mul)
    assert rows["test_mul"]["students"] == str(len(CASES))
    assert float(rows["test_mul"]["failed_fraction"]) == pytest.approx(
        failed_mul / len(CASES), abs=1e-3
    )
    checks = "mul(2, 3) should be 6; mul must handle negative numbers"  # hidden ones too
    assert rows["test_mul"]["checks"] == checks
    assert (
        f'test_mul</td><td>{checks}</td><td class="num">3</td>'
        f'<td class="num">{failed_mul}/{len(CASES)}</td>'
    ) in page


def test_a_second_run_grades_nothing_again(graded):
    course, _, _ = graded
    before = {p: p.stat().st_mtime_ns for p in course.state_folder.glob("records/*/*.json")}
    result = grade_command(course)
    assert result.returncode == 0, result.stderr
    assert f"{len(CASES)} submissions already graded" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_manual_grades_survive_a_forced_regrade(graded):
    course, _, _ = graded
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        grade = gb.find_grade("test_mul", ASSIGNMENT, ASSIGNMENT, "carol")
        grade.manual_score = 1.5
        comment = gb.find_comment("mul", ASSIGNMENT, ASSIGNMENT, "carol")
        comment.manual_comment = "Close: think about negative numbers."
        gb.db.commit()
    result = grade_command(course, "--force", "--student", "carol")
    assert result.returncode == 0, result.stderr
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        grade = gb.find_grade("test_mul", ASSIGNMENT, ASSIGNMENT, "carol")
        assert (grade.auto_score, grade.manual_score, grade.needs_manual_grade) == (0.0, 1.5, True)
        comment = gb.find_comment("mul", ASSIGNMENT, ASSIGNMENT, "carol")
        assert comment.manual_comment == "Close: think about negative numbers."
    assert "needs manual grading" in result.stderr


@pytest.mark.parametrize("command", ["grade", "collect", "report"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: course-grade {command}" in capsys.readouterr().out
