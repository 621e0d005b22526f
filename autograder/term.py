"""The instructor's private course for one term (`course-grade init-term FOLDER`).

The public repository holds `source/`: anyone can read its solutions and hidden tests. An
instructor who grades for credit keeps a copy outside it, where they may rewrite the hidden
tests, and runs every instructor command there: the sources, nbgrader_config.py, the gradebook,
the generated student versions (release/), the exchange and everything grading produces.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from nbgrader.apps import NbGraderAPI

from autograder.course import CONFIG_NAME, Course, load_nbgrader_config

IGNORED = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc", "*.db")


class TermError(Exception):
    """The instructor's course cannot be created there."""


def repository_root(folder: Path) -> Path | None:
    """The git work tree `folder` lies in, or None."""
    probe = folder if folder.is_dir() else folder.parent
    while not probe.exists():
        probe = probe.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(probe), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return Path(result.stdout.strip()).resolve() if result.returncode == 0 else None


def init_term(
    folder: Path,
    repository: Path,
    course_id: str | None = None,
    exchange_root: Path | None = None,
) -> Course:
    """Create the instructor's course in `folder` from the course `repository`; return it.

    On any failure the folder is left as it was found (removed if this call created it)."""
    folder, repository = folder.resolve(), repository.resolve()
    if not (repository / "source").is_dir() or not (repository / f"{CONFIG_NAME}.py").is_file():
        raise TermError(f"{repository} has no source/ and {CONFIG_NAME}.py: pass --from")
    if folder.exists() and not folder.is_dir():
        raise TermError(f"{folder} exists and is not a folder")
    if folder.exists() and any(folder.iterdir()):
        raise TermError(f"{folder} exists and is not empty")
    work_tree = repository_root(folder)
    if folder.is_relative_to(repository) or (
        work_tree is not None and work_tree == repository_root(repository)
    ):
        raise TermError(
            f"{folder} is inside the course repository: a private copy must live outside it "
            "(or it would be published with the next push)"
        )
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _fill(folder, repository, course_id, exchange_root)
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


def _fill(
    folder: Path, repository: Path, course_id: str | None, exchange_root: Path | None
) -> Course:
    """Write the term's configuration, check it, copy source/ and generate every assignment."""
    config = (repository / f"{CONFIG_NAME}.py").read_text()
    overrides = ["", "# This term's private course (written by course-grade init-term)."]
    if course_id:
        overrides.append(f"c.CourseDirectory.course_id = {course_id!r}")
    if exchange_root:
        overrides.append(f"c.Exchange.root = {str(exchange_root.resolve())!r}")
    config_file = folder / f"{CONFIG_NAME}.py"
    config_file.write_text(config.rstrip("\n") + "\n" + "\n".join(overrides) + "\n")
    # what nbgrader's own commands will read (Course puts its own root over it)
    loaded = load_nbgrader_config(folder)
    root = loaded.CourseDirectory.get("root")
    if isinstance(root, str) and Path(root).resolve() != folder:
        raise TermError(
            f"{CONFIG_NAME}.py sets the course root to {root}, not to its own folder {folder}: "
            f"nbgrader would work on that course (set it to Path(__file__).resolve().parent)"
        )
    exchange = loaded.Exchange.get("root")
    if not isinstance(exchange, str):  # nbgrader's default is a system folder: use the term's
        exchange = str(folder / "exchange")
        with config_file.open("a") as handle:
            handle.write(f"c.Exchange.root = {exchange!r}\n")
    Path(exchange).mkdir(parents=True, exist_ok=True)
    shutil.copytree(repository / "source", folder / "source", ignore=IGNORED)
    course = Course(folder)
    api = NbGraderAPI(course.coursedir, config=course.config)
    for assignment in sorted(path.name for path in (folder / "source").iterdir() if path.is_dir()):
        result = api.generate_assignment(assignment, force=True)
        if not result["success"]:
            raise TermError(f"nbgrader could not generate {assignment}: {result['error']}")
    return course
