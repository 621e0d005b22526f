"""The answer corpus: answers to every graded exercise, each with the points it must earn.

Each assignment's module maps the grade_id of a solution cell to its answers. A correct answer
earns the exercise's full points; a wrong one, a real misconception, earns only ``keeps`` of them
(usually 0; a visible test cannot see what only the hidden tests check, such as a caller that rolls
back). ``tests/test_answer_corpus.py`` puts each answer into the released notebook, the source's
solutions everywhere else, and grades them all with `course-grade`.
"""

from __future__ import annotations

from dataclasses import dataclass
from textwrap import dedent


@dataclass(frozen=True)
class Answer:
    """One answer cell's code, and the points its exercise must then earn (None: all of them)."""

    name: str
    source: str
    keeps: int | None = None
    why: str = ""
    total: int | None = None
    """The notebook's whole score when it is not 10 minus what this exercise loses."""


def correct(name: str, source: str) -> Answer:
    """A correct answer, written one more way: it must earn the exercise's full points."""
    return Answer(name, dedent(source).strip())


def wrong(name: str, source: str, why: str, keeps: int = 0, total: int | None = None) -> Answer:
    """A wrong answer (the misconception ``why``): its exercise must earn only ``keeps`` points."""
    return Answer(name, dedent(source).strip(), keeps, why, total)
