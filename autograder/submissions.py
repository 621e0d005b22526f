"""Where submissions come from: nbgrader's exchange, a submitted/ folder, or an LMS zip.

Every source ends up in nbgrader's layout, submitted/<student>/<assignment>/ with its
timestamp.txt, which is what the grading reads.

An LMS export is read member by member in chunks, each member and the whole export under a size
budget, into a scratch folder; only then is each student's folder in submitted/ replaced as a
whole, and only by files that differ and are not older. A student id keeps the LMS's participant
id ("john-smith-301"), so two students with one name stay two.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath, PureWindowsPath

from nbgrader.apps import NbGraderAPI
from nbgrader.exchange.default.collect import ExchangeCollect
from traitlets.config import Config

from autograder.course import TIMESTAMP_FILE, Course, Submission
from autograder.safe_files import (
    CREATE_FLAGS,
    copy_regular_files,
    open_folder,
    write_file_no_follow,
)

# Canvas: "doejane_12345_67890_crud.ipynb" (login, user id, file id, file name), with "LATE_"
# after the login when Canvas counts it late, and "-1" before the extension for a resubmission.
CANVAS_NAME = re.compile(
    r"^(?P<name>[^_/]+)_(?P<late>LATE_)?(?P<participant>\d+)_\d+_(?P<file>.+)$"
)
RESUBMISSION_SUFFIX = re.compile(r"-(?P<number>\d+)(?=\.[^.]+$)")
# Moodle: "Jane Doe_301_assignsubmission_file_/crud.ipynb" (full name, participant id).
MOODLE_FOLDER = re.compile(r"^(?P<name>.+?)_(?P<participant>\d+)_assignsubmission_\w+_$")
# The earliest date a zip can hold: what tools write when they have none.
ZIP_NO_DATE = datetime(1980, 1, 1)
CHUNK_BYTES = 64 * 1024


class SubmissionsError(Exception):
    """Submissions that cannot be read, with the file and the reason."""


def find_submissions(
    course: Course, assignment: str | None = None, student: str | None = None
) -> list[Submission]:
    """Every submitted/<student>/<assignment>/ folder matching the (glob) patterns."""
    found = []
    for folder in sorted(submitted_root(course).glob("*/*")):
        submission = Submission(folder.parent.name, folder.name)
        if not folder.is_dir() or folder.name.startswith(".") or folder.parent.name.startswith("."):
            continue
        if assignment and not fnmatch(submission.assignment, assignment):
            continue
        if student and not fnmatch(submission.student, student):
            continue
        found.append(submission)
    return found


def submitted_root(course: Course) -> Path:
    """nbgrader's submitted/ folder."""
    return Path(course.coursedir.format_path(course.coursedir.submitted_directory, ".", "."))


class LinkRefusingCollect(ExchangeCollect):
    """nbgrader's collect, copying only regular files: a link a student put in the exchange (to
    an instructor's file, say) is never followed; each file left out is logged with its reason."""

    def do_copy(self, src: str, dest: str, log: object = None) -> None:  # noqa: D102
        ignored = [*self.coursedir.ignore]
        limit = 1000 * self.coursedir.max_dir_size
        source, destination = Path(src), Path(dest)
        with (
            open_folder(source, source.parent) as from_folder,
            open_folder(destination, Path(self.coursedir.root), create=True) as to_folder,
        ):
            refused = copy_regular_files(
                from_folder, to_folder, limit,
                skip=lambda path: any(fnmatch(part, p) for part in path.parts for p in ignored),
            )  # fmt: skip
        for reason in refused:
            self.log.warning("%s: %s", source.name, reason)


def collect_exchange(course: Course, assignment: str) -> None:
    """Copy the newest submission of each student from the exchange inbound (nbgrader collect)."""
    config = Config(course.config)
    config.ExchangeFactory.collect = LinkRefusingCollect
    api = NbGraderAPI(course.coursedir, config=config)
    result = api.collect(assignment, update=True)
    if not result["success"]:
        raise SubmissionsError(f"nbgrader could not collect '{assignment}': {result['error']}")


def student_id(name: str, participant: str = "") -> str:
    """A student id usable as a folder name: ("Jane Doe", "301") becomes "jane-doe-301"."""
    return re.sub(r"[^a-z0-9]+", "-", f"{name} {participant}".lower()).strip("-")


@dataclass(frozen=True)
class ZipLimits:
    """How much an LMS export may unpack: bytes per member, and in all a multiple of its size."""

    member_bytes: int = 20 * 1024**2
    ratio: int = 100


@dataclass(frozen=True)
class Placement:
    """Where one file of an export goes."""

    student: str
    path: PurePosixPath  # inside the student's assignment folder
    lms: str = ""  # "Canvas" or "Moodle" when the name is theirs
    participant: str = ""  # the LMS's id of the student
    late: bool = False  # Canvas's LATE flag
    resubmission: int = 0  # Canvas's "-N" suffix


def place_in_zip(member: str) -> Placement | str:
    """Where a file of an LMS export goes, or why it is skipped."""
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or PureWindowsPath(member).anchor:
        return "an absolute path"
    if ".." in path.parts:
        return "a path out of the export (..)"
    if path.parts[0] == "__MACOSX" or any(part.startswith(".") for part in path.parts):
        return "a hidden file"
    if len(path.parts) == 1:
        canvas = CANVAS_NAME.match(path.name)
        if canvas is None:
            return "an unrecognised name (not Canvas's login_userid_fileid_name, not in a folder)"
        suffix = RESUBMISSION_SUFFIX.search(canvas["file"])
        return Placement(
            student_id(canvas["name"], canvas["participant"]),
            PurePosixPath(RESUBMISSION_SUFFIX.sub("", canvas["file"])),
            "Canvas",
            canvas["participant"],
            bool(canvas["late"]),
            int(suffix["number"]) if suffix else 0,
        )
    inside = PurePosixPath(*path.parts[1:])
    moodle = MOODLE_FOLDER.match(path.parts[0])
    if moodle:
        student = student_id(moodle["name"], moodle["participant"])
        return Placement(student, inside, "Moodle", moodle["participant"])
    student = student_id(path.parts[0])
    return Placement(student, inside) if student else "a folder name without a letter or digit"


@dataclass
class ExportedSubmission:
    """One student's files in an export (the newest copy of each)."""

    files: dict[PurePosixPath, tuple[zipfile.ZipInfo, Placement]] = field(default_factory=dict)

    def timestamp(self) -> datetime | None:
        """When it was submitted, by the export: its newest file's date (read as UTC) plus
        Canvas's resubmission number in microseconds (zip dates step by 2 seconds)."""
        newest = max(
            datetime(*info.date_time) + timedelta(microseconds=place.resubmission)
            for info, place in self.files.values()
        )
        return newest if newest > ZIP_NO_DATE else None

    def late_by(self) -> str | None:
        """The LMS that flagged it late (Canvas's LATE), if any."""
        return next((place.lms for _, place in self.files.values() if place.late), None)


@dataclass
class Unpacked:
    """What unpacking an export did."""

    updated: list[Submission] = field(default_factory=list)  # new, or resubmitted
    unchanged: list[Submission] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (member or student, why)


def unpack_lms_zip(
    course: Course, archive: Path, assignment: str, limits: ZipLimits | None = None
) -> Unpacked:
    """Unpack an LMS export (Canvas flat names, Moodle or plain per-student folders) into
    submitted/, each submission with its timestamp.txt; every member skipped says why."""
    limits = limits or ZipLimits()
    try:
        bundle = zipfile.ZipFile(archive)
        budget = limits.ratio * archive.stat().st_size
    except (OSError, zipfile.BadZipFile) as error:
        raise SubmissionsError(f"{archive}: not a readable zip file ({error})") from None
    unpacked = Unpacked()
    root = submitted_root(course)
    root.mkdir(parents=True, exist_ok=True)
    # a hidden folder beside the students' (find_submissions skips it), so moves stay renames
    with bundle, tempfile.TemporaryDirectory(prefix=".unpack-", dir=root) as scratch:
        exported = _read_export(bundle, unpacked.skipped)
        if not exported:
            skipped = "".join(f"; {name}: {reason}" for name, reason in unpacked.skipped)
            raise SubmissionsError(
                f"{archive}: no submissions found (expected Canvas names like "
                f"'login_123_456_{assignment}.ipynb' or one folder per student){skipped}"
            )
        exported = {
            _known_student(course, assignment, student, submission): submission
            for student, submission in exported.items()
        }
        extractor = _Extractor(bundle, limits.member_bytes, budget, archive, Path(scratch))
        for student, submission in sorted(exported.items()):
            for path, (info, _) in sorted(submission.files.items()):
                reason = extractor.extract(info, Path(scratch, student, path))
                if reason:
                    unpacked.skipped.append((info.filename, reason))
        for student, submission in sorted(exported.items()):
            staged = Path(scratch, student)
            if staged.is_dir() and any(staged.iterdir()):
                _place(course, Submission(student, assignment), submission, staged, unpacked)
    return unpacked


def _read_export(
    bundle: zipfile.ZipFile, skipped: list[tuple[str, str]]
) -> dict[str, ExportedSubmission]:
    """Each student's files by where they go; why each other member is skipped."""
    exported: dict[str, ExportedSubmission] = {}
    for info in bundle.infolist():
        if info.is_dir():
            continue
        place = place_in_zip(info.filename)
        if isinstance(place, Placement) and place.path == PurePosixPath(TIMESTAMP_FILE):
            place = "a timestamp.txt of its own (the export's date is used)"
        elif stat.S_ISLNK(info.external_attr >> 16):
            place = "a symbolic link"
        elif info.flag_bits & 0x1:
            place = "encrypted"
        elif info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            place = "compressed with a method LMS exports do not use (only stored or deflated)"
        if isinstance(place, str):
            skipped.append((info.filename, place))
            continue
        files = exported.setdefault(place.student, ExportedSubmission()).files
        held = files.get(place.path)
        if held is not None:
            newer = (place.resubmission, info.date_time) > (held[1].resubmission, held[0].date_time)
            older_name = held[0].filename if newer else info.filename
            skipped.append((older_name, f"an older copy of {place.student}/{place.path}"))
            if not newer:
                continue
        files[place.path] = (info, place)
    return exported


def _known_student(
    course: Course, assignment: str, student: str, exported: ExportedSubmission
) -> str:
    """The id this participant already has in submitted/ (the LMS's name for them may have
    changed since), else `student`. Canvas user ids hold course-wide, Moodle's participant
    ids for one assignment."""
    place = next(iter(exported.files.values()))[1]
    if not place.participant:
        return student
    pattern = f"*-{place.participant}/{assignment if place.lms == 'Moodle' else '*'}"
    known = {path.parent.name for path in submitted_root(course).glob(pattern) if path.is_dir()}
    return known.pop() if len(known) == 1 else student


class _Extractor:
    """Writes members in chunks, counting the bytes they really decompress to."""

    def __init__(
        self, bundle: zipfile.ZipFile, member_bytes: int, budget: int, archive: Path, scratch: Path
    ) -> None:
        self.bundle = bundle
        self.member_bytes = member_bytes
        self.budget = budget
        self.left = budget
        self.archive = archive
        self.scratch = scratch

    def extract(self, info: zipfile.ZipInfo, target: Path) -> str | None:
        """Write one member to a new file `target`; None, or why it was skipped. The whole
        export is refused (SubmissionsError) once all members together exceed the budget."""
        written = 0
        try:
            with (
                self.bundle.open(info) as source,
                open_folder(target.parent, self.scratch, create=True) as folder,
                open(os.open(target.name, CREATE_FLAGS, 0o644, dir_fd=folder), "wb") as out,
            ):
                while written <= self.member_bytes and (chunk := source.read(CHUNK_BYTES)):
                    written += len(chunk)
                    self.left -= len(chunk)
                    if self.left < 0:
                        raise SubmissionsError(
                            f"{self.archive}: its members unpack to more than {self.budget} "
                            "bytes (the zip ratio limit times its size): refused as a zip bomb, "
                            "nothing unpacked"
                        )
                    if written <= self.member_bytes:
                        out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError) as error:
            reason = f"unreadable ({error})"
        except OSError as error:
            reason = f"could not be written ({error.strerror})"
        else:
            if written <= self.member_bytes:
                return None
            reason = f"larger than the limit of {self.member_bytes / 1024**2:g} MB"
        with contextlib.suppress(OSError):
            target.unlink()
        return reason


def _place(
    course: Course,
    submission: Submission,
    exported: ExportedSubmission,
    staged: Path,
    unpacked: Unpacked,
) -> None:
    """Put a staged submission in submitted/ if it differs from and is not older than the one
    there; its timestamp.txt comes from the export (or is now when the export has no date)."""
    target = course.folder("submitted", submission)
    if target.is_symlink():
        unpacked.skipped.append((submission.student, f"{target} is a link: not replaced"))
        return
    if target.is_dir() and _same_files(staged, target):
        unpacked.unchanged.append(submission)
        return
    held = course.timestamp(target)
    stamp = exported.timestamp() or datetime.now(UTC).replace(tzinfo=None)
    if held is not None and stamp <= held:
        unpacked.skipped.append(
            (
                submission.student,
                f"not newer ({stamp}) than the submission in submitted/ ({held}): kept that one",
            )
        )
        return
    write_file_no_follow(staged / TIMESTAMP_FILE, f"{stamp:%Y-%m-%d %H:%M:%S.%f} UTC", staged)
    replaced = target.with_name(f".{target.name}.replaced")
    try:
        with open_folder(target.parent, submitted_root(course), create=True) as folder:
            shutil.rmtree(replaced, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.rename(target.name, replaced.name, src_dir_fd=folder, dst_dir_fd=folder)
            os.rename(staged, target.name, dst_dir_fd=folder)
    except OSError as error:  # a link planted on the way (UnsafePath) among them
        unpacked.skipped.append((submission.student, f"not placed in submitted/ ({error})"))
        return
    shutil.rmtree(replaced, ignore_errors=True)
    _mark_late(course, submission, exported.late_by())
    _note_canvas_id(course, submission.student, exported)
    unpacked.updated.append(submission)


def _same_files(staged: Path, held: Path) -> bool:
    """Whether `held` has exactly the files of `staged`, byte for byte (timestamp.txt aside)."""

    def names(folder: Path) -> set[Path]:
        found = {p.relative_to(folder) for p in folder.rglob("*") if not p.is_dir()}
        return found - {Path(TIMESTAMP_FILE)}

    files = names(staged)
    return files == names(held) and all(
        not (held / name).is_symlink() and filecmp.cmp(staged / name, held / name, shallow=False)
        for name in files
    )


def _late_mark(course: Course, submission: Submission) -> Path:
    return course.state_folder / "late" / submission.assignment / submission.student


def _mark_late(course: Course, submission: Submission, lms: str | None) -> None:
    mark = _late_mark(course, submission)
    if lms is None:
        mark.unlink(missing_ok=True)
    else:
        write_file_no_follow(mark, lms, course.root)


def _canvas_id_file(course: Course, student: str) -> Path:
    return course.state_folder / "canvas-ids" / student


def _note_canvas_id(course: Course, student: str, exported: ExportedSubmission) -> None:
    """Keep the Canvas user id of a student whose submission came from a Canvas export (the
    LMS grade export matches students by it)."""
    place = next(iter(exported.files.values()))[1]
    if place.lms == "Canvas" and place.participant:
        write_file_no_follow(_canvas_id_file(course, student), place.participant, course.root)


def canvas_id(course: Course, student: str) -> str | None:
    """The Canvas user id of a student known from a Canvas export, or None."""
    try:
        text = _canvas_id_file(course, student).read_text(errors="replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def marked_late(course: Course, submission: Submission) -> str | None:
    """The LMS whose export flagged this submission late (Canvas's LATE), or None."""
    try:
        return _late_mark(course, submission).read_text(errors="replace").strip() or None
    except OSError:
        return None
