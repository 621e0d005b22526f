"""The instructor's private course (`course-grade init-term`) and the student's view (`make
course`): solutions and instructor tools stay with the instructor."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from test_grading_helpers import ASSIGNMENT, COMMAND, source_notebook

from autograder.course import Course

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "tools"))
from working_copies import make_working_copies  # noqa: E402

STUDENT_SETTINGS = REPOSITORY / "jupyter-settings" / "student"
INSTRUCTOR_PLUGINS = {
    f"@jupyter/nbgrader:{name}"
    for name in ("formgrader", "create-assignment", "course-list", "menu", "validate-assignment")
}
SERVER_EXTENSIONS = """
from jupyter_server.serverapp import ServerApp
app = ServerApp()
app.load_config_file()
app.find_server_extensions()
print(sorted(name for name, on in app.jpserver_extensions.items() if on and "nbgrader" in name))
"""


@pytest.fixture
def repository(tmp_path):
    """A public course repository: the course's nbgrader_config.py and one assignment."""
    folder = tmp_path / "public"
    (folder / "source" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(source_notebook(), folder / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    shutil.copy(REPOSITORY / "nbgrader_config.py", folder)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return folder


def init_term(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [COMMAND, "init-term", *arguments], cwd=cwd, capture_output=True, text=True
    )


def test_init_term_creates_the_private_course(tmp_path, repository):
    private = tmp_path / "fall-2026"
    exchange = tmp_path / "srv-exchange"
    result = init_term(
        str(private), "--course-id", "fall-2026", "--exchange-root", str(exchange),
        cwd=repository,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (private / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()
    assert (private / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()
    assert exchange.is_dir()
    course = Course(private)
    assert Path(course.coursedir.root) == private
    assert course.coursedir.course_id == "fall-2026"
    assert course.config.Exchange.root == str(exchange)
    assert course.db_url == f"sqlite:///{private / 'gradebook.db'}"
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        assert [a.name for a in gb.assignments] == [ASSIGNMENT]
        assert gb.find_assignment(ASSIGNMENT).max_score == 5
    # the public repository is untouched: no gradebook, release or exchange appear there
    assert sorted(p.name for p in repository.iterdir()) == [".git", "nbgrader_config.py", "source"]


def test_init_term_refuses_a_folder_inside_the_public_repository(tmp_path, repository):
    result = init_term(str(repository / "private"), cwd=repository)
    assert result.returncode == 2
    assert "is inside the course repository" in " ".join(result.stderr.split())
    assert not (repository / "private").exists()


def test_init_term_refuses_a_folder_that_is_not_empty(tmp_path, repository):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    result = init_term(str(tmp_path / "used"), cwd=repository)
    assert result.returncode == 2
    assert "exists and is not empty" in " ".join(result.stderr.split())


def test_students_working_copies_hold_lessons_and_student_assignments_only(tmp_path):
    make_working_copies(tmp_path / "workspace")
    assert sorted(p.name for p in (tmp_path / "workspace").iterdir()) == ["notebooks", "release"]
    copied = {p.relative_to(tmp_path / "workspace") for p in (tmp_path / "workspace").rglob("*")}
    assert not any(
        part in ("source", "gradebook.db", "autograded") for p in copied for part in p.parts
    )
    released = {p.name for p in (REPOSITORY / "release").iterdir() if p.is_dir()}
    assert {p.name for p in (tmp_path / "workspace" / "release").iterdir()} == released


def jupyter(*arguments: str, student: bool) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "JUPYTER_CONFIG_PATH"}
    if student:
        environment["JUPYTER_CONFIG_PATH"] = str(STUDENT_SETTINGS)
    result = subprocess.run(
        [*arguments], capture_output=True, text=True, env=environment, cwd="/", timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def disabled_plugins(output: str) -> set[str]:
    section = output.split("Disabled extensions:")[1] if "Disabled extensions:" in output else ""
    return {line.strip().split()[0] for line in section.splitlines() if line.strip()}


def test_the_student_view_has_no_instructor_tools():
    labextension = [str(Path(sys.executable).parent / "jupyter"), "labextension", "list"]
    assert disabled_plugins(jupyter(*labextension, student=True)) >= INSTRUCTOR_PLUGINS
    assert disabled_plugins(jupyter(*labextension, student=False)).isdisjoint(INSTRUCTOR_PLUGINS)
    server = [sys.executable, "-c", SERVER_EXTENSIONS]
    assert (
        jupyter(*server, student=True)
        .strip()
        .endswith("['nbgrader.server_extensions.assignment_list']")
    )
    assert "nbgrader.server_extensions.formgrader" in jupyter(*server, student=False)


def test_make_course_opens_the_student_view():
    result = subprocess.run(
        ["make", "-n", "course"], cwd=REPOSITORY, capture_output=True, text=True, check=True
    )
    assert f"JUPYTER_CONFIG_PATH={STUDENT_SETTINGS}" in result.stdout
    assert "--ServerApp.root_dir=workspace" in result.stdout
