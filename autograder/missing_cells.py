"""Deleted test cells put back where nbgrader's own OverwriteCells cannot put them."""

from __future__ import annotations

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import OverwriteCells

from autograder.duplicates import grade_id_of


class RestoreMissingCells(OverwriteCells):
    """nbgrader's OverwriteCells, placing a deleted test cell just before the first cell of
    the notebook that comes after it in the source (at the end when none does), so that
    every cell the student wrote before that point runs before the test.

    nbgrader puts it right after the source cell just before it and fails (KeyError) when
    that cell is gone too (an answer cell deleted with its test, grading metadata stripped
    by another editor): every cell of the notebook then scores 0.
    """

    def add_missing_grade_cells(
        self, nb: NotebookNode, resources: dict
    ) -> tuple[NotebookNode, dict]:
        """Insert each grade cell of the source missing from `nb`, in source order."""
        source = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        cells = source.source_cells
        order = [cell.name for cell in cells]
        solutions = {cell.name for cell in source.solution_cells}
        for grade_cell in sorted(source.grade_cells, key=lambda cell: order.index(cell.name)):
            present = [grade_id_of(cell) for cell in nb.cells]
            if grade_cell.name in present:
                continue
            position = order.index(grade_cell.name)
            later = [present.index(name) for name in order[position + 1 :] if name in present]
            cell = self.missing_cell_transform(
                cells[position], grade_cell.max_score, is_solution=grade_cell.name in solutions
            )
            nb.cells.insert(min(later) if later else len(nb.cells), cell)
        return nb, resources
