"""The course folder as nbgrader sees it, and where the grading command keeps its own state."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from jupyter_core.paths import jupyter_config_dir, jupyter_config_path
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import parse_utc
from traitlets.config import Application, Config
from traitlets.config.loader import PyFileConfigLoader

from autograder.safe_files import read_file_no_follow, write_file_no_follow

STATE_FOLDER = ".course-grade"
TIMESTAMP_FILE = "timestamp.txt"


@dataclass(frozen=True)
class Submission:
    """One student's submission of one assignment."""

    student: str
    assignment: str


@dataclass
class GradingRecord:
    """What grading one submission found; written once its grades are in the gradebook."""

    student: str
    assignment: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def from_json(cls, text: str) -> GradingRecord:
        """A record from its file's text; ValueError if it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        record = cls(**data)  # TypeError for a missing or unknown field
        if not isinstance(record.problems, list) or not all(
            isinstance(item, str) for item in [record.student, record.assignment, *record.problems]
        ):
            raise ValueError("student, assignment and each problem must be strings")
        if isinstance(record.seconds, bool) or not isinstance(record.seconds, int | float):
            raise ValueError("seconds must be a number")
        return record


class BrokenRecord(Exception):
    """A record file that cannot be read: its submission counts as not graded."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"the grading record {path} is broken ({reason}): the submission counts as not "
            "graded, and `course-grade grade` grades it again"
        )


CONFIG_NAME = "nbgrader_config"


def load_nbgrader_config(root: Path) -> Config:
    """The configuration nbgrader's own commands read for the course at `root`, each file over
    the ones before: nbgrader_config.py and .json in the Jupyter config path (system, then the
    environment's, then the user's), then in the current folder, then the course root's
    nbgrader_config.py."""
    paths = jupyter_config_path()
    if jupyter_config_dir() not in paths:
        paths.insert(0, jupyter_config_dir())
    config = Config()
    for path in (paths, os.getcwd()):
        for loaded, _ in Application._load_config_files(
            CONFIG_NAME, path=path, raise_config_file_errors=True
        ):
            config.merge(loaded)
    if (root / f"{CONFIG_NAME}.py").exists():
        config.merge(PyFileConfigLoader(f"{CONFIG_NAME}.py", str(root)).load_config())
    return config


class Course:
    """A course folder, opened the way nbgrader opens it (`load_nbgrader_config`); the extra
    configuration (command-line options) goes over everything."""

    def __init__(self, root: Path, extra_config: Config | None = None) -> None:
        self.root = root.resolve()
        self.config = load_nbgrader_config(self.root)
        self.config.CourseDirectory.root = str(self.root)
        if extra_config is not None:
            self.config.merge(extra_config)
        self.coursedir = CourseDirectory(config=self.config)

    @property
    def db_url(self) -> str:
        return self.coursedir.db_url

    def folder(self, kind: str, submission: Submission) -> Path:
        """nbgrader's folder of `kind` ("submitted", "autograded", "feedback") for a submission."""
        name = getattr(self.coursedir, f"{kind}_directory")
        return Path(self.coursedir.format_path(name, submission.student, submission.assignment))

    def source_folder(self, assignment: str) -> Path:
        return Path(self.coursedir.format_path(self.coursedir.source_directory, ".", assignment))

    @property
    def state_folder(self) -> Path:
        return self.root / STATE_FOLDER

    def record_path(self, submission: Submission) -> Path:
        return self.state_folder / "records" / submission.assignment / f"{submission.student}.json"

    def read_record(self, submission: Submission) -> GradingRecord | None:
        """The record of a submission whose grading finished, or None; BrokenRecord if its
        file cannot be read as the record of this submission."""
        path = self.record_path(submission)
        shown = path.relative_to(self.root)
        try:
            record = GradingRecord.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as error:
            raise BrokenRecord(shown, str(error) or type(error).__name__) from None
        if (record.student, record.assignment) != (submission.student, submission.assignment):
            raise BrokenRecord(shown, f"it is the record of {record.student}/{record.assignment}")
        return record

    def read_records(self, submissions: list[Submission]) -> list[GradingRecord]:
        """The records of those submissions that have one; a broken record file stands as a
        record whose only problem says so."""
        records = []
        for submission in submissions:
            try:
                record = self.read_record(submission)
            except BrokenRecord as broken:
                record = GradingRecord(submission.student, submission.assignment, [str(broken)])
            if record is not None:
                records.append(record)
        return records

    def is_graded(self, submission: Submission) -> bool:
        """Whether it has a readable record and was not resubmitted since (a newer
        timestamp.txt)."""
        try:
            if self.read_record(submission) is None:
                return False
        except BrokenRecord:
            return False
        submitted = self.timestamp(self.folder("submitted", submission))
        graded = self.timestamp(self.folder("autograded", submission))
        return submitted is None or (graded is not None and submitted <= graded)

    @staticmethod
    def timestamp(folder: Path) -> datetime | None:
        """The time in a submission folder's timestamp.txt (as UTC), or None if it has none
        that reads as a time (nbgrader's own reader crashes on those)."""
        try:
            text = read_file_no_follow(folder / TIMESTAMP_FILE, folder).decode("utf-8").strip()
            return parse_utc(text) if text else None
        except (OSError, UnicodeDecodeError, ValueError, OverflowError):
            return None

    def write_record(self, record: GradingRecord) -> None:
        """Write a record atomically (a crash leaves either no record or the whole record),
        never through a link."""
        path = self.record_path(Submission(record.student, record.assignment))
        write_file_no_follow(path, json.dumps(asdict(record), indent=1), self.root)

    def forget_record(self, submission: Submission) -> None:
        self.record_path(submission).unlink(missing_ok=True)

    def not_graded_path(self, submission: Submission) -> Path:
        return self.state_folder / "not-graded" / submission.assignment / submission.student

    def write_not_graded(self, submission: Submission, reason: str) -> None:
        """Note why the machinery could not grade a submission (it has no record)."""
        write_file_no_follow(self.not_graded_path(submission), reason, self.root)

    def forget_not_graded(self, submission: Submission) -> None:
        self.not_graded_path(submission).unlink(missing_ok=True)

    def not_graded(self, submission: Submission) -> str | None:
        """Why the last run could not grade this submission, or None."""
        try:
            return self.not_graded_path(submission).read_text(errors="replace").strip() or None
        except OSError:
            return None
