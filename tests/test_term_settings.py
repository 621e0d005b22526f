"""course-grade's settings are read the nbgrader way, and a run opens one gradebook connection.

Precedence, lowest first: the Jupyter config path, the current folder, the course root's
nbgrader_config.py, then a command-line option, only when it is given.
"""

from __future__ import annotations

import nbgrader.api
import pytest
from test_grading_helpers import FULL, make_course, scores, solved, submit

from autograder import cli
from autograder.execute import GuardedExecute
from autograder.settings import CourseGrade


def settings(argv: list[str]) -> tuple[CourseGrade, GuardedExecute, int]:
    course = cli.open_course(cli.build_parser().parse_args(argv))
    executor = GuardedExecute(config=course.config)
    return CourseGrade(config=course.config), executor, executor.timeout


@pytest.fixture
def configured(tmp_path, monkeypatch):
    """A course whose settings come from three files: the user's Jupyter config folder, the
    current folder and the course root."""
    user, here, root = tmp_path / "jupyter-config", tmp_path / "here", tmp_path / "course"
    for folder in (user, here, root):
        folder.mkdir()
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(user))
    monkeypatch.delenv("JUPYTER_CONFIG_PATH", raising=False)
    monkeypatch.chdir(here)
    (user / "nbgrader_config.py").write_text(
        "c.CourseGrade.jobs = 3\nc.CourseGrade.memory_mb = 1000\nc.CourseGrade.disk_mb = 50\n"
        "c.Execute.timeout = 11\n"
    )
    (here / "nbgrader_config.json").write_text(
        '{"CourseGrade": {"memory_mb": 1500, "cpu_seconds": 60}}'
    )
    (root / "nbgrader_config.py").write_text(
        "c.CourseGrade.cpu_seconds = 77\nc.GuardedExecute.output_limit_bytes = 5000\n"
        "c.CourseGrade.sandbox = False\n"
    )
    return root


def test_each_file_overrides_the_ones_before(configured):
    grading, executor, timeout = settings(["grade", "--course-dir", str(configured)])
    assert grading.jobs == 3  # the Jupyter config path
    assert grading.memory_mb == 1500  # the current folder over the Jupyter config path
    assert grading.cpu_seconds == 77  # the course root over the current folder
    assert grading.disk_mb == 50
    assert grading.max_processes == 128  # nobody set it: the trait's default
    assert grading.sandbox is False
    assert executor.output_limit_bytes == 5000
    assert executor.notebook_timeout == 600
    assert timeout == 11


def test_an_option_overrides_only_when_given(configured):
    argv = ["grade", "--course-dir", str(configured), "--cpu-seconds", "88", "--output-kb", "7"]
    grading, executor, timeout = settings([*argv, "--timeout", "4", "--jobs", "1"])
    assert (grading.cpu_seconds, grading.jobs, grading.memory_mb) == (88, 1, 1500)
    assert executor.output_limit_bytes == 7000
    assert timeout == 4
    grading, executor, _ = settings(["grade", "--course-dir", str(configured), "--no-sandbox"])
    assert grading.sandbox is False and executor.output_limit_bytes == 5000


def test_a_run_opens_one_gradebook_connection(tmp_path, monkeypatch):
    course = make_course(tmp_path / "course")
    for student in ("ann", "ben", "cat"):
        submit(course, student, solved(course))
    opened = []
    original = nbgrader.api.Gradebook.__init__

    def counting(self, *args, **kwargs):
        opened.append(args[0] if args else kwargs.get("db_url"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(nbgrader.api.Gradebook, "__init__", counting)
    monkeypatch.chdir(course.root)
    code = cli.main(["grade", "--course-dir", str(course.root), "--jobs", "2", "--no-sandbox"])
    assert code == 0
    assert opened == [course.db_url]  # the workers' own (feedback pages) are not counted here
    assert scores(course) == {student: FULL for student in ("ann", "ben", "cat")}
