"""Where submissions come from: nbgrader's exchange, a submitted/ folder, or an LMS zip.

Every source ends up in nbgrader's layout, submitted/<student>/<assignment>/, which is
what the grading reads.
"""

from __future__ import annotations

import re
import zipfile
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

from nbgrader.apps import NbGraderAPI

from autograder.course import Course, Submission

# Canvas: "doejane_12345_67890_crud.ipynb", "doejane_LATE_12345_67890_crud-1.ipynb".
CANVAS_NAME = re.compile(r"^(?P<student>[^_/]+)_(?:LATE_)?\d+_\d+_(?P<file>.+)$")
# Moodle: "Jane Doe_12345_assignsubmission_file_/crud.ipynb".
MOODLE_FOLDER = re.compile(r"^(?P<student>.+?)_\d+_assignsubmission_\w+_$")
# A resubmission's suffix that Canvas adds: "crud-1.ipynb".
RESUBMISSION_SUFFIX = re.compile(r"-\d+(?=\.[^.]+$)")


class SubmissionsError(Exception):
    """Submissions that cannot be read, with the file and the reason."""


def find_submissions(
    course: Course, assignment: str | None = None, student: str | None = None
) -> list[Submission]:
    """Every submitted/<student>/<assignment>/ folder matching the (glob) patterns."""
    submitted = Path(course.coursedir.format_path(course.coursedir.submitted_directory, ".", "."))
    found = []
    for folder in sorted(submitted.glob("*/*")):
        submission = Submission(folder.parent.name, folder.name)
        if not folder.is_dir() or folder.name.startswith(".") or folder.parent.name.startswith("."):
            continue
        if assignment and not fnmatch(submission.assignment, assignment):
            continue
        if student and not fnmatch(submission.student, student):
            continue
        found.append(submission)
    return found


def collect_exchange(course: Course, assignment: str) -> None:
    """Copy the newest submission of each student from the exchange inbound (nbgrader collect)."""
    api = NbGraderAPI(course.coursedir, config=course.config)
    result = api.collect(assignment, update=True)
    if not result["success"]:
        raise SubmissionsError(f"nbgrader could not collect '{assignment}': {result['error']}")


def student_id(name: str) -> str:
    """A student id usable as a folder name: "Jane Doe" becomes "jane-doe"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def place_in_zip(member: str) -> tuple[str, PurePosixPath] | None:
    """(student, path inside the assignment folder) for one file of an LMS export."""
    path = PurePosixPath(member)
    if path.is_absolute() or ".." in path.parts or member.endswith("/"):
        return None
    if path.name.startswith(".") or path.parts[0] == "__MACOSX":
        return None
    if len(path.parts) == 1:
        match = CANVAS_NAME.match(path.name)
        if match is None:
            return None
        name = RESUBMISSION_SUFFIX.sub("", match["file"])
        return student_id(match["student"]), PurePosixPath(name)
    folder = MOODLE_FOLDER.match(path.parts[0])
    student = folder["student"] if folder else path.parts[0]
    return student_id(student), PurePosixPath(*path.parts[1:])


def unpack_lms_zip(course: Course, archive: Path, assignment: str) -> list[Submission]:
    """Unpack an LMS export (Canvas flat names, Moodle or plain per-student folders)."""
    try:
        bundle = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as error:
        raise SubmissionsError(f"{archive}: not a readable zip file ({error})") from None
    placed: dict[str, list[tuple[zipfile.ZipInfo, PurePosixPath]]] = {}
    with bundle:
        for info in bundle.infolist():
            place = place_in_zip(info.filename)
            if place is not None and place[0]:
                placed.setdefault(place[0], []).append((info, place[1]))
        if not placed:
            raise SubmissionsError(
                f"{archive}: no submissions found (expected Canvas names like "
                f"'login_123_456_{assignment}.ipynb' or one folder per student)"
            )
        for student, files in placed.items():
            folder = course.folder("submitted", Submission(student, assignment))
            for info, relative in files:
                target = folder / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(bundle.read(info))
    return [Submission(student, assignment) for student in sorted(placed)]
