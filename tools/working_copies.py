"""Copy the lessons and assignments into a student's own folder, never over the student's work.

Usage: python tools/working_copies.py [WORKSPACE]   (default: workspace/, ignored by git)

`make course` serves this folder, not the repository: JupyterLab saves (and autosaves) into the
copies, so the tracked lessons never change and `git pull` brings course updates without conflicts.
A file the student already has is left as it is; delete it to get the course's current version.
Only the lessons and the student versions of the assignments are copied: never source/ (solutions
and hidden tests), the gradebook or anything else of the instructor's.
"""

import shutil
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
FOLDERS = ("notebooks", "release")  # what a student sees; nothing else of the repository


def copy_if_missing(source: str, destination: str) -> str:
    """shutil.copytree's copy function: copy only files the destination does not have yet."""
    if not Path(destination).exists():
        shutil.copy2(source, destination)
    return destination


def make_working_copies(workspace: Path) -> None:
    """Copy every file of notebooks/ and release/ that `workspace` does not have yet."""
    for folder in FOLDERS:
        shutil.copytree(
            REPOSITORY / folder,
            workspace / folder,
            copy_function=copy_if_missing,
            ignore=shutil.ignore_patterns(".gitignore", ".ipynb_checkpoints", "*.db"),
            dirs_exist_ok=True,
        )


if __name__ == "__main__":
    make_working_copies(Path(sys.argv[1] if len(sys.argv) > 1 else REPOSITORY / "workspace"))
