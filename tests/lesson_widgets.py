"""What the session_visualizer widgets of a notebook should show, read without a browser.

Each widget has a deterministic `text/plain` (e.g. "ObjectCard User(id=2, name='Mary'):
transient . pending . [persistent] . deleted . detached | key (User, (2,))") and, in the
page, an element whose data attribute carries the same fact (`data-state="persistent"`).
The outputs saved in a lesson hold each widget as it was when its cell ended (`make lessons` keeps
a widget's text/plain and static HTML, not its widget view: that holds a random model id).
Since a widget is pinned to the moment its cell ended, the saved text is also what its live view
shows after "Run All Cells", and what a reopened notebook shows from its saved widget state.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _read(pattern: str, **meanings: str) -> Callable[[str], str]:
    """A reader of the first group of `pattern` in a widget's text, renamed by `meanings`."""
    compiled = re.compile(pattern)

    def read(text: str) -> str:
        match = compiled.search(text)
        if match is None:
            raise ValueError(f"no {pattern!r} in the widget text {text!r}")
        found = next(group for group in match.groups() if group is not None)
        return meanings.get(found, found)

    return read


@dataclass(frozen=True)
class Kind:
    """A visualizer widget kind: its root's CSS class, and where the page shows its value."""

    root_class: str
    marker: str  # CSS selector, inside the root, of the element that carries the value
    attribute: str
    read: Callable[[str], str]  # the same value, read from the widget's text/plain


STATE = r"\[(transient|pending|persistent|deleted|detached|gone)\]|: (gone) \(garbage-collected\)"
KINDS = {
    "ObjectCard": Kind("sv-object-card", ".sv-card-body", "data-state", _read(STATE)),
    "StateDiagram": Kind("sv-state-diagram", "svg.sv-diagram", "data-state", _read(STATE)),
    "SessionPanel": Kind(
        "sv-session-panel",
        ".sv-panel-body",
        "data-transaction",
        _read(
            r"^SessionPanel: (transaction open|no transaction)",
            **{"transaction open": "open", "no transaction": "none"},
        ),
    ),  # fmt: skip
    "Timeline": Kind(
        "sv-timeline",
        ".sv-step",
        "data-step",
        _read(r"^Timeline step (\d+) of|^Timeline: (no step) recorded yet", **{"no step": "0"}),
    ),  # fmt: skip
}


@dataclass(frozen=True)
class WidgetDisplay:
    """One visualizer widget displayed by a cell, and the value its page element should show."""

    cell: int
    kind: Kind
    value: str
    html: str  # the static picture saved with the output


def _describe(cell: int, output: dict) -> WidgetDisplay | None:
    """The visualizer widget an output displays, or None for an output that is no widget.

    A displayed visualizer widget is known by its text/plain, with either its widget view
    (a fresh run) or its static HTML (a saved lesson).
    """
    data = output.get("data", {})
    text = data.get("text/plain", "")
    kind = KINDS.get(text.split(" ", 1)[0].rstrip(":"))
    if kind is None or f'class="{kind.root_class}"' not in data.get("text/html", ""):
        if WIDGET_VIEW in data:
            raise ValueError(f"cell {cell} displays a widget that is not a visualizer's: {text!r}")
        return None
    return WidgetDisplay(cell, kind, kind.read(text), data["text/html"])


def stored_displays(notebook: nbformat.NotebookNode) -> list[WidgetDisplay]:
    """Every visualizer widget in a notebook's outputs, in order, as it was when displayed."""
    return [
        display
        for index, cell in enumerate(notebook.cells)
        for output in cell.get("outputs", [])
        if (display := _describe(index, output)) is not None
    ]
