"""The course folder as nbgrader sees it, and where the grading command keeps its own state."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

STATE_FOLDER = ".course-grade"


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


class Course:
    """A course folder with an nbgrader_config.py, opened the way nbgrader opens it."""

    def __init__(self, root: Path, extra_config: Config | None = None) -> None:
        self.root = root.resolve()
        self.config = Config()
        config_file = self.root / "nbgrader_config.py"
        if config_file.exists():
            self.config.merge(PyFileConfigLoader(config_file.name, str(self.root)).load_config())
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
        """The record of a submission whose grading finished, or None."""
        path = self.record_path(submission)
        if not path.exists():
            return None
        return GradingRecord(**json.loads(path.read_text()))

    def is_graded(self, submission: Submission) -> bool:
        """Whether it has a record and was not resubmitted since (a newer timestamp.txt)."""
        if self.read_record(submission) is None:
            return False
        submitted = self.coursedir.get_existing_timestamp(str(self.folder("submitted", submission)))
        graded = self.coursedir.get_existing_timestamp(str(self.folder("autograded", submission)))
        return submitted is None or (graded is not None and submitted <= graded)

    def write_record(self, record: GradingRecord) -> None:
        """Write a record atomically: a crash leaves either no record or the whole record."""
        path = self.record_path(Submission(record.student, record.assignment))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with open(partial, "w") as handle:
            json.dump(asdict(record), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)

    def forget_record(self, submission: Submission) -> None:
        self.record_path(submission).unlink(missing_ok=True)
