"""Where submissions come from: an LMS zip, nbgrader's exchange inbound folder, submitted/."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from test_grading_helpers import ASSIGNMENT, make_course, record, scores, solved

from autograder.cli import main
from autograder.course import Submission
from autograder.submissions import SubmissionsError, find_submissions, unpack_lms_zip


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    return make_course(tmp_path_factory.mktemp("inputs") / "course")


def test_an_lms_zip_is_unpacked_into_submitted(course, tmp_path):
    notebook = nbformat.writes(solved(course))
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("doejane_1201_98765_hw.ipynb", notebook)  # Canvas
        bundle.writestr("smithjohn_LATE_1202_98766_hw-1.ipynb", notebook)  # Canvas resubmission
        bundle.writestr("Mary Major_1203_assignsubmission_file_/hw.ipynb", notebook)  # Moodle
        bundle.writestr("__MACOSX/._doejane_1201_98765_hw.ipynb", "junk")
        bundle.writestr("../escape.ipynb", "junk")
    found = unpack_lms_zip(course, archive, "zipped")
    assert found == [Submission(s, "zipped") for s in ("doejane", "mary-major", "smithjohn")]
    for submission in found:
        path = course.folder("submitted", submission) / "hw.ipynb"
        assert path.read_text() == notebook
    assert not (course.root / "escape.ipynb").exists()
    assert find_submissions(course, assignment="zip*", student="*j*") == [
        Submission("doejane", "zipped"),
        Submission("mary-major", "zipped"),
        Submission("smithjohn", "zipped"),
    ]


def test_a_broken_zip_is_named_in_the_error(course, tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_text("not a zip")
    with pytest.raises(SubmissionsError, match="broken.zip: not a readable zip file"):
        unpack_lms_zip(course, archive, ASSIGNMENT)


def test_the_newest_exchange_submission_is_collected(course):
    inbound = course.root / "exchange" / course.coursedir.course_id / "inbound"
    for stamp, body in (
        ("2026-11-20 09:00:00.000000 UTC", "old"),
        ("2026-11-20 11:00:00.000000 UTC", "new"),
    ):
        folder = inbound / f"eve+{ASSIGNMENT}+{stamp}+abc{body}"
        folder.mkdir(parents=True)
        (folder / "hw.ipynb").write_text(body)
        (folder / "timestamp.txt").write_text(stamp)
    assert (
        main(
            ["collect", "--course-dir", str(course.root), "--assignment", ASSIGNMENT, "--exchange"]
        )
        == 0
    )
    collected = course.root / "submitted" / "eve" / ASSIGNMENT
    assert (collected / "hw.ipynb").read_text() == "new"


def test_grade_takes_a_zip_and_regrades_a_resubmission(course, tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(
            "lateuser_1_2_hw.ipynb", nbformat.writes(solved(course, "def mul(a, b):\n    return 0"))
        )
    command = [str(Path(sys.executable).parent / "course-grade"), "grade", "--jobs", "1"]
    first = subprocess.run(
        [*command, "--zip", str(archive), "--assignment", ASSIGNMENT, "--student", "lateuser"],
        cwd=course.root,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    assert scores(course)["lateuser"] == {"test_add": 2.0, "test_mul": 0.0}

    folder = course.root / "submitted" / "lateuser" / ASSIGNMENT
    nbformat.write(solved(course), folder / "hw.ipynb")
    (folder / "timestamp.txt").write_text("2026-11-21 10:00:00.000000 UTC")
    second = subprocess.run(
        [*command, ASSIGNMENT, "--student", "lateuser"],
        cwd=course.root,
        capture_output=True,
        text=True,
    )
    assert second.returncode == 0, second.stderr
    assert scores(course)["lateuser"] == {"test_add": 2.0, "test_mul": 3.0}
    assert record(course, "lateuser")["problems"] == []


def test_report_rewrites_the_exports_from_the_gradebook(course, tmp_path):
    grades, page = tmp_path / "grades.csv", tmp_path / "report.html"
    arguments = ["--course-dir", str(course.root), "--grades", str(grades), "--report", str(page)]
    assert main(["report", *arguments]) == 0
    assert "hw,,2026-11-21 10:00:00,lateuser,,,,5.0,0.0,5.0,5.0" in grades.read_text()
    assert "<svg" in page.read_text()
    assert "test_mul" in page.with_suffix(".csv").read_text()
