"""Copied or added cells with grading metadata, resolved before nbgrader's sanitizers see them.

JupyterLab's copy and paste keeps a cell's metadata, so a student who duplicates a test cell
hands in two cells with one `grade_id`; nbgrader's sanitizers then fail (KeyError
'grade_id') and every cell of the notebook scores 0. `ResolveCellCopies` keeps, for each
id the gradebook knows, one cell: the first one identical to the source (or to the released
version, hidden tests removed), else the first one. A copy of a solution cell stays as an
ordinary code cell (it may hold the student's answer); a copy of any other cell (a test, a
locked cell) is dropped, since nbgrader restores the original from the gradebook anyway.
A cell whose grading metadata names an id the gradebook does not know (or none) keeps its
content and loses the metadata. Each change is recorded in `changes`.
"""

from __future__ import annotations

import copy

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader.api import Gradebook
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from traitlets import List, Unicode


def grade_id_of(cell: NotebookNode) -> str | None:
    """The cell's nbgrader id, or None when it has no grading metadata (or no id)."""
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def has_grading_metadata(cell: NotebookNode) -> bool:
    return bool(cell.metadata.get("nbgrader"))


class ResolveCellCopies(NbGraderPreprocessor):
    """Keep one cell per gradebook id; strip or drop copies and unknown grading cells."""

    changes = List(Unicode(), help="What was resolved in the last notebook, one line each.")

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        """Resolve `nb` against the gradebook entry named in `resources["nbgrader"]`."""
        self.changes = []
        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gb:
            notebook = gb.find_notebook(info["notebook"], info["assignment"])
            originals = {cell.name: (cell.source, cell.cell_type) for cell in notebook.source_cells}
            solutions = {cell.name for cell in notebook.solution_cells}
        kept = self._choose_originals(nb, originals)
        cells = []
        for index, cell in enumerate(nb.cells):
            grade_id = grade_id_of(cell)
            label = f"cell {index + 1}"
            if not has_grading_metadata(cell) or kept.get(grade_id) == index:
                cells.append(cell)
            elif grade_id not in originals:
                del cell.metadata["nbgrader"]
                self.changes.append(
                    f"{label} had grading metadata with an id the assignment does not have "
                    f"({grade_id!r}): it was removed and the cell ran as an ordinary cell"
                )
                cells.append(cell)
            elif grade_id in solutions:
                del cell.metadata["nbgrader"]
                self.changes.append(
                    f"{label} is a copy of answer cell {grade_id}: it ran as an ordinary cell"
                )
                cells.append(cell)
            else:
                self.changes.append(f"{label} is a copy of cell {grade_id}: it was dropped")
        nb.cells = cells
        return nb, resources

    def _choose_originals(
        self, nb: NotebookNode, originals: dict[str, tuple[str, str]]
    ) -> dict[str, int]:
        """For each known id present, the index of the cell to keep."""
        candidates: dict[str, list[int]] = {}
        for index, cell in enumerate(nb.cells):
            grade_id = grade_id_of(cell)
            if grade_id in originals:
                candidates.setdefault(grade_id, []).append(index)
        kept = {}
        for grade_id, indexes in candidates.items():
            pristine = self._pristine_versions(nb.cells[indexes[0]], *originals[grade_id])
            same = [i for i in indexes if nb.cells[i].source.strip() in pristine]
            kept[grade_id] = (same or indexes)[0]
        return kept

    def _pristine_versions(self, cell: NotebookNode, source: str, cell_type: str) -> set[str]:
        """The source cell's text, and its released text (hidden tests removed)."""
        released = nbformat.v4.new_code_cell(source, metadata=copy.deepcopy(cell.metadata))
        released.cell_type = cell_type
        released, _ = ClearHiddenTests(parent=self).preprocess_cell(released, {}, 0)
        return {source.strip(), released.source.strip()}
