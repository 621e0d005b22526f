"""Notebook cells for the widgets: which tracker steps the running IPython cell made, and the
widgets to pin when it ends.

A widget made by a cell shows that cell's moment: it is pinned to the tracker's history at the
end of the cell (IPython's ``post_run_cell``), so what a student sees under a cell is what the
prose beside it describes, whether the lesson runs cell by cell or with Run All. One ``CellClock``
per IPython shell registers the two hooks once, and knows for every tracker in use its step count
when the running cell began. Outside IPython there are no cells: ``cell_clock()`` is None and a
widget pins itself when it is made (``pin()`` moves the pin).
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from session_visualizer.tracker import SessionTracker


class Pinnable(Protocol):
    """A view that the end of its cell pins (the widgets of ``session_visualizer.widgets``)."""

    def pin(self, first_step: int | None = None) -> None: ...


class CellClock:
    """The cell boundaries of one IPython shell, as step counts of the trackers in use.

    The trackers in use are those a widget was made on and those the notebook names (found in the
    shell's namespace when a cell starts). A tracker first seen in the middle of a cell counts
    from its first step: it was most likely made by that cell.
    """

    def __init__(self, shell: Any) -> None:
        self._shell = weakref.ref(shell)
        self._trackers: weakref.WeakSet[SessionTracker] = weakref.WeakSet()
        self._starts: weakref.WeakKeyDictionary[SessionTracker, int] = (
            weakref.WeakKeyDictionary()
        )
        self._made: list[tuple[weakref.ref[Pinnable], int]] = []
        shell.events.register("pre_run_cell", self._cell_started)
        shell.events.register("post_run_cell", self._cell_ended)

    def enlist(self, view: Pinnable, tracker: SessionTracker) -> int:
        """Pin ``view`` when the running cell ends; return the index of the cell's first step."""
        self._trackers.add(tracker)
        first = self._starts.setdefault(tracker, 0)
        self._made.append((weakref.ref(view), first))
        return first

    def _cell_started(self, info: Any = None) -> None:
        shell = self._shell()
        if shell is not None:
            for value in list(shell.user_ns.values()):
                if isinstance(value, SessionTracker):
                    self._trackers.add(value)
        self._starts = weakref.WeakKeyDictionary(
            (tracker, tracker.step_count) for tracker in list(self._trackers)
        )

    def _cell_ended(self, result: Any = None) -> None:
        for tracker in list(self._trackers):
            tracker.catch_up()  # what the cell changed between Session calls is a step too
        made, self._made = self._made, []
        for view_ref, first in made:
            view = view_ref()
            if view is not None:
                view.pin(first)


_clocks: weakref.WeakKeyDictionary[Any, CellClock] = weakref.WeakKeyDictionary()


def cell_clock(shell: Any = None) -> CellClock | None:
    """The clock of ``shell`` (default: the running IPython shell, if any), made and hooked on
    first use; None outside IPython. Importing ``session_visualizer`` calls it once."""
    if shell is None:
        from IPython import get_ipython  # IPython comes with ipywidgets

        shell = get_ipython()
        if shell is None:
            return None
    clock = _clocks.get(shell)
    if clock is None:
        clock = _clocks[shell] = CellClock(shell)
    return clock
