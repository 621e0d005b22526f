"""Mutation pass: do the assignments' tests catch small wrong changes of each solution?

Usage: python tools/mutation_pass.py [ASSIGNMENT ...] [--limit N] [--keep DIR]

For every solution cell of each assignment in source/ (all of them by default), each mutation
below is applied at each place it fits, one at a time: delete a commit, flush or add, commit ->
flush, one()/one_or_none() -> first(), return None, swap a state name, flip a bool or a None test,
drop an expunge, a remove() or a raise, expire_on_commit=False -> True, commit or roll back
the session before a return. Every mutant becomes one
student (the release notebook, the source's solutions in every other cell; release/ must be what
nbgrader generates from source/, as tests/test_assignments.py checks), all are graded in one
run of `course-grade grade`, and a mutant is killed when it scores less than the solutions. The
report gives, per assignment, the fraction killed and the mutants that survived: each survivor is
either a gap in the tests or a change that does not change behaviour.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
STATES = ("transient", "pending", "persistent", "deleted", "detached")
SOLVED = "solved"

# (name, pattern, replacement): the replacement is applied at one match at a time.
REPLACEMENTS = (
    ("commit -> flush", r"\.commit\(\)", ".flush()"),
    ("one_or_none -> first", r"\.one_or_none\(\)", ".first()"),
    ("one -> first", r"\.one\(\)", ".first()"),
    ("scalar_one_or_none -> first", r"\.scalar_one_or_none\(\)", ".scalars().first()"),
    ("return -> return None", r"\breturn (?!None\b)[^\n]+", "return None"),
    ("is None -> is not None", r"\bis None\b", "is not None"),
    ("True -> False", r"\bTrue\b", "False"),
    ("False -> True", r"\bFalse\b", "True"),
    ("expire_on_commit=False -> True", r"expire_on_commit=False", "expire_on_commit=True"),
    *(
        (f"{state} -> {STATES[(i + 1) % len(STATES)]}", f'"{state}"', f'"{STATES[(i + 1) % 5]}"')
        for i, state in enumerate(STATES)
    ),
)
# (name, pattern): a whole statement line matching the pattern becomes `pass`.
DELETIONS = (
    ("delete commit", r"\.commit\(\)"),
    ("delete flush", r"\.flush\(\)"),
    ("drop add", r"\.add(_all)?\("),
    ("drop expunge", r"\.expunge\("),
    ("drop remove()", r"\.remove\(\)"),
    ("drop raise", r"^\s*raise\b"),
)
# (name, statement): inserted before each `return` of a cell that works with a `session`.
INSERTIONS = (
    ("commit the session before return", "session.commit()"),
    ("roll the session back before return", "session.rollback()"),
)


def solutions(source: NotebookNode) -> dict[str, str]:
    """The source's answer of each solution cell, without nbgrader's markers."""
    return {
        cell.metadata["nbgrader"]["grade_id"]: "\n".join(
            line for line in cell.source.splitlines() if line.strip() not in SOLUTION_MARKERS
        )
        for cell in source.cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }


def solution_lines(cell_source: str) -> set[int]:
    """Indexes of the lines between nbgrader's solution markers (the code a student writes)."""
    inside, lines = False, set()
    for index, line in enumerate(cell_source.splitlines()):
        if line.strip() == SOLUTION_MARKERS[0]:
            inside = True
        elif line.strip() == SOLUTION_MARKERS[1]:
            inside = False
        elif inside:
            lines.add(index)
    return lines


def mutants(cell_source: str) -> Iterator[tuple[str, str]]:
    """(description, mutated answer) for each mutation of the solution regions of a cell."""
    lines = cell_source.splitlines()
    seen = set()
    for index in sorted(solution_lines(cell_source)):
        line = lines[index]
        variants = [
            (f"{name}, line {index + 1}", line[: m.start()] + new + line[m.end() :])
            for name, pattern, new in REPLACEMENTS
            for m in re.finditer(pattern, line)
        ]
        variants += [
            (f"{name}, line {index + 1}", re.sub(r"\S.*", "pass", line))
            for name, pattern in DELETIONS
            if re.search(pattern, line)
        ]
        if re.match(r"\s*return\b", line) and re.search(r"\bsession\b", cell_source):
            indent = line[: len(line) - len(line.lstrip())]
            variants += [
                (f"{name}, line {index + 1}", f"{indent}{statement}\n{line}")
                for name, statement in INSERTIONS
            ]
        for description, changed in variants:
            mutated = "\n".join(
                changed if i == index else text
                for i, text in enumerate(lines)
                if text.strip() not in SOLUTION_MARKERS
            )
            if changed != line and mutated not in seen and compiles(mutated):
                seen.add(mutated)
                yield description, mutated


def compiles(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def submission(release: NotebookNode, answers: dict[str, str]) -> NotebookNode:
    """The release notebook with ``answers`` (by grade_id) in its solution cells."""
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = answers[grade_id]
    return nb


def read_notebook(folder: Path, assignment: str) -> NotebookNode:
    return nbformat.read(folder / assignment / f"{assignment}.ipynb", as_version=4)


def answered(assignment: str, changed: dict[str, str]) -> NotebookNode:
    """The released notebook of ``assignment`` with the source's solutions in its answer cells,
    and ``changed`` (answers by grade_id) where given."""
    release = read_notebook(ROOT / "release", assignment)
    answers = solutions(read_notebook(ROOT / "source", assignment))
    return submission(release, {**answers, **changed})


def grade_submissions(
    root: Path, students: dict[str, dict[str, dict[str, str]]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Grade ``{assignment: {student: {grade_id: answer}}}`` in a new course at ``root``: every
    answer cell not given holds the source's solution (see ``grade_notebooks``)."""
    return grade_notebooks(
        root,
        {
            assignment: {student: answered(assignment, changed) for student, changed in of.items()}
            for assignment, of in students.items()
        },
    )


def grade_notebooks(
    root: Path, notebooks: dict[str, dict[str, NotebookNode]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Grade ``{assignment: {student: submitted notebook}}`` in a new course at ``root``.

    The course is a copy of source/ (the assignments named) and nbgrader_config.py, with each
    assignment generated. One run of `course-grade grade --jobs 2` grades everything. Returns
    each student's score per test cell, by assignment.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    root.mkdir(parents=True, exist_ok=True)
    for assignment in notebooks:
        shutil.copytree(
            ROOT / "source" / assignment,
            root / "source" / assignment,
            ignore=shutil.ignore_patterns("*.db"),
        )
    shutil.copy(ROOT / "nbgrader_config.py", root)
    bin_folder = Path(sys.executable).parent
    # nbgrader runs `alembic` (installed next to this Python) to create the gradebook.
    os.environ["PATH"] = f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}"
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    for assignment, students in notebooks.items():
        result = api.generate_assignment(assignment, force=True)
        if not result["success"]:
            raise RuntimeError(result.get("error") or result.get("log"))
        for student, nb in students.items():
            folder = root / "submitted" / student / assignment
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, folder / f"{assignment}.ipynb")
    run = subprocess.run(
        [str(bin_folder / "course-grade"), "grade", "--jobs", "2"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if run.returncode != 0:
        raise RuntimeError(run.stdout + run.stderr)
    return gradebook_scores(root)


def gradebook_scores(root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{student: {assignment: {test cell: auto score}}} from the course's gradebook."""
    from nbgrader.api import Grade, Gradebook

    scores: dict[str, dict[str, dict[str, float]]] = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for grade in gradebook.db.query(Grade).all():
            notebook = grade.notebook
            student = notebook.assignment.student.id
            assignment = notebook.assignment.assignment.name
            scores.setdefault(student, {}).setdefault(assignment, {})[grade.cell.name] = (
                grade.auto_score
            )
    return scores


def mutation_pass(
    assignments: list[str], root: Path, limit: int | None = None
) -> dict[str, tuple[int, list[str]]]:
    """{assignment: (mutants graded, descriptions of the survivors)}."""
    described: dict[str, dict[str, str]] = {}
    students: dict[str, dict[str, dict[str, str]]] = {}
    for assignment in assignments:
        source = read_notebook(ROOT / "source", assignment)
        made = [
            (cell.metadata["nbgrader"]["grade_id"], description, code)
            for cell in source.cells
            if cell.metadata.get("nbgrader", {}).get("solution")
            for description, code in mutants(cell.source)
        ][:limit]
        students[assignment] = {SOLVED: {}}
        described[assignment] = {}
        for number, (grade_id, description, code) in enumerate(made):
            student = f"{assignment}--mutant-{number}"
            students[assignment][student] = {grade_id: code}
            described[assignment][student] = f"{grade_id}: {description}"
    scores = grade_submissions(root, students)
    result = {}
    for assignment in assignments:
        full = sum(scores[SOLVED][assignment].values())
        survivors = [
            what
            for student, what in described[assignment].items()
            if sum(scores[student][assignment].values()) >= full
        ]
        result[assignment] = (len(described[assignment]), survivors)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", help="default: every assignment of source/")
    parser.add_argument("--limit", type=int, help="grade only the first N mutants of each")
    parser.add_argument("--keep", type=Path, help="grade in this folder and keep it")
    args = parser.parse_args(argv)
    assignments = args.assignments or sorted(
        path.name for path in (ROOT / "source").iterdir() if path.is_dir()
    )
    with tempfile.TemporaryDirectory() as scratch:
        result = mutation_pass(assignments, args.keep or Path(scratch) / "course", args.limit)
    for assignment, (graded, survivors) in result.items():
        killed = graded - len(survivors)
        print(f"{assignment}: {killed}/{graded} mutants killed ({killed / max(graded, 1):.0%})")
        for what in survivors:
            print(f"  survived: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
