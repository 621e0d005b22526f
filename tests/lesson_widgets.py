"""What the session_visualizer widgets of a notebook should show, read without a browser.

Each widget has a deterministic `text/plain` (e.g. "ObjectCard User(id=2, name='Mary'):
transient . pending . [persistent] . deleted . detached | key (User, (2,))") and, in the
page, an element whose data attribute carries the same fact (`data-state="persistent"`).
Two sources of the text:
- the outputs saved in the notebook: each widget as it was when its cell displayed it
  (lessons save a widget's text/plain and static HTML, not its widget view: that holds a
  random model id);
- a headless run with nbclient that displays every widget once more after the last cell:
  each widget as it is at the end, which is what its live view shows after "Run All Cells".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat
from nbclient import NotebookClient

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Appended to the notebook: displays again, in order, every widget the notebook displayed.
REDISPLAY = """\
from IPython.display import display
from ipywidgets import widget_serialization

for model_id in {model_ids!r}:
    display(widget_serialization["from_json"]("IPY_MODEL_" + model_id, None))
"""


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
    model_id: str | None  # None in saved lessons: they keep no widget-view output (random ids)


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
    model_id = data.get(WIDGET_VIEW, {}).get("model_id")
    return WidgetDisplay(cell, kind, kind.read(text), model_id)


def stored_displays(notebook: nbformat.NotebookNode) -> list[WidgetDisplay]:
    """Every visualizer widget in a notebook's outputs, in order, as it was when displayed."""
    return [
        display
        for index, cell in enumerate(notebook.cells)
        for output in cell.get("outputs", [])
        if (display := _describe(index, output)) is not None
    ]


def final_displays(path: Path, workdir: Path, timeout: int = 120) -> list[WidgetDisplay]:
    """Run the notebook at `path` headless in `workdir`: its widgets as they are at the end."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )  # fmt: skip
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
        displayed = stored_displays(notebook)
        model_ids = [display.model_id for display in displayed]
        if None in model_ids:
            raise RuntimeError(f"{path}: a widget shows no live view in a fresh run")
        notebook.cells.append(nbformat.v4.new_code_cell(REDISPLAY.format(model_ids=model_ids)))
        client.execute_cell(notebook.cells[-1], len(notebook.cells) - 1)
    at_end = stored_displays(nbformat.v4.new_notebook(cells=notebook.cells[-1:]))
    if [display.kind for display in at_end] != [display.kind for display in displayed]:
        raise RuntimeError(f"{path}: displaying its widgets again gave {at_end}, not {displayed}")
    return [
        replace(before, value=after.value) for before, after in zip(displayed, at_end, strict=True)
    ]
