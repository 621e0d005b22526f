"""The only process that writes the gradebook: nbgrader's preprocessors before and after execution.

nbgrader's `Autograde` converter runs two chains of preprocessors around its `Execute`:
the sanitizing chain (ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells,
CheckCellMetadata) and the grading chain (IgnorePattern, ClearMetadata, LimitOutput,
SaveAutoGrades, AssignLatePenalties, CheckCellMetadata). `GradebookWriter` runs exactly
those chains, read from an `Autograde` instance so that nbgrader_config.py applies, in the
parent process; only the `Execute` step in the middle goes to the workers.

A submission is graded in a staging folder and moved into autograded/ only after all its
grades are committed; its record is written last (after its feedback). A submission with a
record is done.

The whole run uses one gradebook connection: the writer's own queries and nbgrader's
preprocessors, which open a gradebook of their own per notebook, are lent it (`lent_gradebook`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.converters import Autograde
from nbgrader.preprocessors import (
    ClearHiddenTests,
    Execute,
    OverwriteCells,
    latesubmissions,
    overwritecells,
    overwritekernelspec,
    saveautogrades,
)
from sqlalchemy.exc import SAWarning

from autograder import duplicates
from autograder.course import Course, GradingRecord, Submission
from autograder.duplicates import ResolveCellCopies
from autograder.execute import ExecutionResult, imported_modules
from autograder.missing_cells import RestoreMissingCells
from autograder.safe_files import (
    UnsafePath,
    copy_regular_files,
    open_folder,
    read_file_no_follow,
    remove_no_follow,
    write_file_no_follow,
)


class GradingError(Exception):
    """The course itself is not ready for grading (not a problem of one submission)."""


@dataclass
class NotebookJob:
    """A sanitized notebook waiting to be executed in `workdir`."""

    submission: Submission
    notebook: str
    notebook_json: str
    workdir: str
    modules: tuple[str, ...] = ()  # what its test cells import


@dataclass
class OpenSubmission:
    """A submission whose notebooks are being executed."""

    submission: Submission
    staging: Path
    pending: set[str]
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    not_graded: str = ""  # why the machinery could not grade it (it stays without a record)


# nbgrader's preprocessors the writer runs that open a gradebook of their own, and ours
GRADEBOOK_OPENERS = (
    saveautogrades,
    latesubmissions,
    overwritecells,
    overwritekernelspec,
    duplicates,
)


class _Lent:
    """The run's gradebook as a preprocessor's own: closing it leaves it open."""

    def __init__(self, gradebook: Gradebook) -> None:
        self._gradebook = gradebook

    def __getattr__(self, name: str) -> object:
        return getattr(self._gradebook, name)

    def __enter__(self) -> _Lent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def lent_gradebook(gradebook: Gradebook) -> Iterator[None]:
    """Within the block, nbgrader's preprocessors (and ours) that open a gradebook get
    `gradebook` instead; its changes are committed at the end (rolled back on an error)."""
    lent = _Lent(gradebook)
    originals = {module: module.Gradebook for module in GRADEBOOK_OPENERS}
    for module in GRADEBOOK_OPENERS:
        module.Gradebook = lambda *args, **kwargs: lent
    try:
        yield
        gradebook.db.commit()
    except BaseException:
        gradebook.db.rollback()
        raise
    finally:
        for module, original in originals.items():
            module.Gradebook = original


class GradebookWriter:
    """Prepares notebooks for the workers and saves what they return, one at a time."""

    def __init__(
        self, course: Course, gradebook: Gradebook, disk_bytes: int = 100 * 1024**2
    ) -> None:
        self.course = course
        self.gradebook = gradebook
        self.disk_bytes = disk_bytes
        autograde = Autograde(coursedir=course.coursedir, config=course.config)
        self.exclude_overwriting = autograde.exclude_overwriting
        self.sanitizers = [
            (RestoreMissingCells if pp is OverwriteCells else pp)(config=course.config)
            for pp in autograde.sanitize_preprocessors
        ]
        self.graders = [
            pp(config=course.config)
            for pp in autograde.autograde_preprocessors
            if not issubclass(pp, Execute)
        ]
        self.hidden_tests = ClearHiddenTests(config=course.config)
        self.copies = ResolveCellCopies(config=course.config)
        self.staging_root = course.state_folder / "staging" / uuid.uuid4().hex[:8]

    def notebooks_of(self, assignment: str) -> list[str]:
        """The assignment's notebook names, or a GradingError if it is not in the gradebook."""
        with lent_gradebook(self.gradebook):
            try:
                return [nb.name for nb in self.gradebook.find_assignment(assignment).notebooks]
            except MissingEntry:
                raise GradingError(
                    f"assignment '{assignment}' is not in the gradebook {self.course.db_url}: "
                    f"run 'nbgrader generate_assignment {assignment}' first"
                ) from None

    def open(self, submission: Submission, force: bool) -> tuple[OpenSubmission, list[NotebookJob]]:
        """Register the submission, stage its files and sanitize its notebooks."""
        expected = self.notebooks_of(submission.assignment)
        submitted = self.course.folder("submitted", submission)
        if force:
            self.course.forget_record(submission)
        staging = self.staging_root / submission.student / submission.assignment
        shutil.rmtree(staging, ignore_errors=True)
        staged = self._stage_files(submission, submitted, staging)
        with lent_gradebook(self.gradebook):
            gb = self.gradebook
            gb.update_or_create_student(submission.student)
            timestamp = self.course.timestamp(submitted)
            extra = {"timestamp": timestamp} if timestamp else {}
            with warnings.catch_warnings():
                # nbgrader's add_submission autoflushes half-built rows (harmless, upstream)
                warnings.simplefilter("ignore", SAWarning)
                gb.update_or_create_submission(submission.assignment, submission.student, **extra)
        opened = OpenSubmission(submission, staging, pending=set(), problems=staged)
        provided = {
            path.stem for path in self.course.source_folder(submission.assignment).iterdir()
        }
        jobs = []
        for name, path in self._match_notebooks(expected, submitted, opened.problems).items():
            nb = self._read(path, name, opened.problems) if path else None
            if nb is None:
                self._zero_notebook(submission, name)
                continue
            try:
                with lent_gradebook(self.gradebook):
                    nb, _ = self.copies.preprocess(nb, self._resources(submission, name))
                    opened.problems += [f"{name}.ipynb {change}" for change in self.copies.changes]
                    changes = self._test_cell_changes(submission, name, nb)
                    nb = self._sanitize(submission, name, nb)
            except Exception as error:  # e.g. nbgrader metadata the student broke
                self.fail(opened, name, f"{type(error).__name__}: {error}")
                continue
            opened.problems += changes
            opened.pending.add(name)
            modules = imported_modules(nb, provided)
            jobs.append(NotebookJob(submission, name, nbformat.writes(nb), str(staging), modules))
        return opened, jobs

    def save(self, opened: OpenSubmission, notebook: str, result: ExecutionResult) -> None:
        """Run nbgrader's grading preprocessors on an executed notebook: the grades are saved."""
        nb = nbformat.reads(result.notebook_json, as_version=nbformat.NO_CONVERT)
        resources = self._resources(opened.submission, notebook)
        with lent_gradebook(self.gradebook):
            for preprocessor in self.graders:
                nb, resources = preprocessor(nb, resources)
        write_file_no_follow(
            opened.staging / f"{notebook}.ipynb", nbformat.writes(nb), self.course.root
        )
        opened.problems += [f"{notebook}.ipynb {problem}" for problem in result.problems]
        opened.seconds += result.seconds
        opened.pending.discard(notebook)

    def fail(self, opened: OpenSubmission, notebook: str, reason: str) -> None:
        """A notebook whose execution failed outside the kernel: its cells score 0."""
        self._zero_notebook(opened.submission, notebook)
        opened.problems.append(
            f"{notebook}.ipynb could not be graded ({reason}): its cells scored 0"
        )
        opened.pending.discard(notebook)

    def abandon(self, opened: OpenSubmission, notebook: str, reason: str) -> None:
        """A notebook the machinery could not grade (InfrastructureFailure): the submission
        gets no record, so the next run grades it again; the reason is kept for the report."""
        opened.not_graded = opened.not_graded or f"{notebook}.ipynb: {reason}"
        opened.pending.discard(notebook)

    def drop(self, opened: OpenSubmission) -> None:
        """Leave an abandoned submission ungraded: no record (an earlier run's goes too), its
        staging folder removed, its gradebook submission removed (`forget_grades`), a note
        saying why."""
        shutil.rmtree(opened.staging, ignore_errors=True)
        self.course.forget_record(opened.submission)
        self.forget_grades(opened.submission)
        self.course.write_not_graded(opened.submission, opened.not_graded)

    def forget_grades(self, submission: Submission) -> None:
        """Remove a submission nobody graded from the gradebook, so that no export, report or
        formgrader shows nbgrader's 0 for its empty grades (the next run creates it again).

        Its scores are the machinery's alone (this run's, or an earlier run's that a `--force`
        or a resubmission replaces): a submission where the instructor graded by hand (a manual
        score, extra credit or a comment) is kept, and the exports leave it out while it has
        a not-graded note."""
        with lent_gradebook(self.gradebook):
            try:
                found = self.gradebook.find_submission(submission.assignment, submission.student)
            except MissingEntry:
                return
            grades = [grade for notebook in found.notebooks for grade in notebook.grades]
            comments = [comment for notebook in found.notebooks for comment in notebook.comments]
            if any(g.manual_score is not None or g.extra_credit for g in grades) or any(
                comment.manual_comment for comment in comments
            ):
                return
            self.gradebook.remove_submission(submission.assignment, submission.student)

    def publish(self, opened: OpenSubmission) -> None:
        """Move the graded folder into autograded/ (its grades are committed by now).

        The folders on the way are reached without following links; a link in the place of
        the submission's own folder is replaced, never followed."""
        destination = self.course.folder("autograded", opened.submission)
        remove_no_follow(destination, self.course.root)
        with (
            open_folder(destination.parent, self.course.root) as parent,
            open_folder(opened.staging.parent, self.course.root) as staging,
        ):
            os.rename(opened.staging.name, destination.name, src_dir_fd=staging, dst_dir_fd=parent)

    def finish(self, opened: OpenSubmission) -> GradingRecord:
        """Write the record that marks the submission done."""
        record = GradingRecord(
            opened.submission.student,
            opened.submission.assignment,
            opened.problems,
            round(opened.seconds, 2),
        )
        self.course.write_record(record)
        self.course.forget_not_graded(opened.submission)
        return record

    def remove_staging(self) -> None:
        shutil.rmtree(self.staging_root, ignore_errors=True)

    def _stage_files(self, submission: Submission, submitted: Path, staging: Path) -> list[str]:
        """The student's other files, then the source's files over them, as nbgrader does.

        Only regular files are copied, never through a link, the student's within the disk
        budget; returns why files were left out."""
        ignore = [*self.course.coursedir.ignore, "*.ipynb"]
        source = self.course.source_folder(submission.assignment)
        excluded = set(self.exclude_overwriting.get(submission.assignment, []))

        def ignored(path: PurePosixPath) -> bool:
            return any(fnmatch(path.name, pattern) for pattern in ignore)

        problems = []
        with open_folder(staging, self.course.root, create=True) as target:
            try:
                with open_folder(submitted, self.course.root) as folder:
                    refused = copy_regular_files(
                        folder, target, self.disk_bytes, ignored, hard_links=True
                    )
                problems += [f"submitted file {reason}" for reason in refused]
            except UnsafePath:
                problems.append(f"{submitted.name}/ in submitted/ is a link: nothing read from it")
            with (
                contextlib.suppress(FileNotFoundError),
                open_folder(source, self.course.root) as folder,
            ):
                copy_regular_files(
                    folder,
                    target,
                    skip=lambda path: ignored(path) or str(path) in excluded,
                    limit_entries=None,
                    hard_links=True,
                )
        return problems

    @staticmethod
    def _match_notebooks(
        expected: list[str], submitted: Path, problems: list[str]
    ) -> dict[str, Path | None]:
        """Each expected notebook's file; a single unexpected notebook stands in for a single
        missing one (a renamed notebook, or an LMS's "-1" suffix)."""
        present = {path.stem: path for path in sorted(submitted.glob("*.ipynb"))}
        found: dict[str, Path | None] = {name: present.get(name) for name in expected}
        missing = [name for name, path in found.items() if path is None]
        unknown = [stem for stem in present if stem not in found]
        if len(missing) == 1 and len(unknown) == 1:
            found[missing[0]] = present[unknown[0]]
            problems.append(f"{missing[0]}.ipynb was submitted as {unknown[0]}.ipynb")
        else:
            problems += [f"{name}.ipynb is missing: its cells scored 0" for name in missing]
            problems += [f"{stem}.ipynb is not part of the assignment: ignored" for stem in unknown]
        return found

    def _read(self, path: Path, name: str, problems: list[str]) -> NotebookNode | None:
        try:
            if (size := path.stat(follow_symlinks=False).st_size) > self.disk_bytes:
                raise ValueError(f"too large: {size} bytes, past --disk-mb")
            text = read_file_no_follow(path, self.course.root).decode("utf-8")
            nb = nbformat.reads(text, as_version=4)  # an older format is converted
            nbformat.validate(nb)
        except Exception as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            problems.append(
                f"{name}.ipynb is not a valid notebook ({first_line}): its cells scored 0"
            )
            return None
        return nb

    def _zero_notebook(self, submission: Submission, notebook: str) -> None:
        """Score 0 for every cell of a notebook that cannot be graded; manual grades stay."""
        with lent_gradebook(self.gradebook):
            found = self.gradebook.find_submission_notebook(
                notebook, submission.assignment, submission.student
            )
            for grade in found.grades:
                grade.auto_score = 0
                grade.needs_manual_grade = grade.manual_score is not None

    def _test_cell_changes(
        self, submission: Submission, notebook: str, nb: NotebookNode
    ) -> list[str]:
        """Test cells the student deleted or edited (OverwriteCells restores them)."""
        submitted = {
            cell.metadata["nbgrader"]["grade_id"]: cell
            for cell in nb.cells
            if utils.is_grade(cell) and "grade_id" in cell.metadata.get("nbgrader", {})
        }
        changes = []
        gb = self.gradebook
        source_notebook = gb.find_notebook(notebook, submission.assignment)
        solution_names = {cell.name for cell in source_notebook.solution_cells}
        for grade_cell in source_notebook.grade_cells:
            if grade_cell.name in solution_names:
                continue
            cell = submitted.get(grade_cell.name)
            if cell is None:
                changes.append(f"{notebook}.ipynb test cell {grade_cell.name} was deleted")
                continue
            source = gb.find_source_cell(grade_cell.name, notebook, submission.assignment)
            released = nbformat.v4.new_code_cell(
                source.source, metadata=copy.deepcopy(cell.metadata)
            )
            released, _ = self.hidden_tests.preprocess_cell(released, {}, 0)
            if released.source.strip() != cell.source.strip():
                changes.append(f"{notebook}.ipynb test cell {grade_cell.name} was edited")
        return [f"{change} (restored from source/)" for change in changes]

    def _sanitize(self, submission: Submission, notebook: str, nb: NotebookNode) -> NotebookNode:
        resources = self._resources(submission, notebook)
        for preprocessor in self.sanitizers:
            nb, resources = preprocessor(nb, resources)
        return nb

    def _resources(self, submission: Submission, notebook: str) -> dict:
        return {
            "unique_key": notebook,
            "output_files_dir": f"{notebook}_files",
            "nbgrader": {
                "student": submission.student,
                "assignment": submission.assignment,
                "notebook": notebook,
                "db_url": self.course.db_url,
            },
        }
