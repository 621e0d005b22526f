"""One graded course for the assignments' tests: every submission they need, graded in one run.

tests/test_assignments.py (synthetic students: solved, blank, half solved, tampered, cheating),
tests/test_answer_corpus.py (the answer corpus of tests/answers/ and two mutants) and
tests/test_assignment_transactions_relationships.py (that assignment's corpus) each say which
notebooks they need with a `submissions()` function. The first test that asks for the
`graded_course` fixture grades the notebooks of every module whose tests this session runs, for
the four assignments, in one course and one run of `course-grade grade --jobs 2` (the sandbox,
guard and nbgrader preprocessors of a real class); the other modules reuse it. A notebook two
modules need under one name (SOLVED: every solution; BLANK: the release as it is) is graded
once. Each module imports the fixture from here (`from graded_corpus import graded_course`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parents[1]
def load_tool(name: str) -> ModuleType:
    """A module of tools/ (a folder of scripts, not a package), loaded once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


mutation_pass = load_tool("mutation_pass")
SOLVED = mutation_pass.SOLVED  # the student whose every answer is the source's solution
BLANK = "blank"  # the student who hands in the release notebook unchanged


@dataclass
class GradedCourse:
    """The graded course: each student's score per test cell, and its folder."""

    root: Path
    scores: dict[str, dict[str, dict[str, float]]]  # student -> assignment -> cell -> score

    def notebook(self, student: str, assignment: str) -> NotebookNode:
        """The autograded notebook (with the outputs the student's kernel made)."""
        path = self.root / "autograded" / student / assignment / f"{assignment}.ipynb"
        return nbformat.read(path, as_version=4)

    def total(self, student: str, assignment: str) -> float:
        return sum(self.scores[student][assignment].values())

    @cached_property
    def config(self) -> object:
        """The course's nbgrader configuration (for nbgrader's validator)."""
        from traitlets.config.loader import PyFileConfigLoader

        return PyFileConfigLoader("nbgrader_config.py", path=str(self.root)).load_config()


def submissions(modules: list[ModuleType]) -> dict[str, dict[str, NotebookNode]]:
    """{assignment: {student: notebook}}: what the modules' `submissions()` need graded."""
    merged: dict[str, dict[str, NotebookNode]] = {}
    for module in modules:
        for assignment, students in module.submissions().items():
            for student, nb in students.items():
                known = merged.setdefault(assignment, {}).setdefault(student, nb)
                assert known == nb, f"two different notebooks for {student}/{assignment}"
    return merged


_graded: list[GradedCourse] = []  # the session's one graded course, once made


@pytest.fixture(scope="session")
def graded_course(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> GradedCourse:
    """The submissions of every module this session tests with this fixture, graded in one
    course and one run."""
    if not _graded:
        using = {
            item.module
            for item in request.session.items
            if "graded_course" in getattr(item, "fixturenames", ())
        }
        notebooks = submissions(sorted(using, key=lambda module: module.__name__))
        root = tmp_path_factory.mktemp("graded")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PATH", os.environ["PATH"])  # grading puts nbgrader's bin folder first
            _graded.append(GradedCourse(root, mutation_pass.grade_notebooks(root, notebooks)))
    return _graded[0]
