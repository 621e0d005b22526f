"""What the session_visualizer widgets of a lesson should show, read without a browser.

Two sources, both from the widgets' own deterministic `text/plain` (e.g. "ObjectCard
User(id=2, name='Mary'): transient . pending . [persistent] . deleted . detached"):
- the outputs stored in the notebook: each widget as it was when its cell displayed it;
- a headless run with nbclient that displays every widget once more at the end: each widget
  as it is after the last cell, which is what a live view shows after "Run All Cells".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat
from nbclient import NotebookClient

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
KINDS = {
    "ObjectCard": "sv-object-card",
    "SessionPanel": "sv-session-panel",
    "StateDiagram": "sv-state-diagram",
    "Timeline": "sv-timeline",
}
CURRENT_STATE = re.compile(r"\[(transient|pending|persistent|deleted|detached)\]")
# Appended to a copy of the lesson: displays again, in order, every widget the lesson displayed.
REDISPLAY = """\
from IPython.display import display
from ipywidgets import widget_serialization

for model_id in {model_ids!r}:
    display(widget_serialization["from_json"]("IPY_MODEL_" + model_id, None))
"""


@dataclass(frozen=True)
class WidgetDisplay:
    """One visualizer widget displayed by a cell, and the state it showed (cards, diagrams)."""

    cell: int
    kind: str
    state: str | None
    model_id: str


def _describe(cell: int, output: dict) -> WidgetDisplay | None:
    """The visualizer widget an output displays, or None for any other output."""
    data = output.get("data", {})
    if WIDGET_VIEW not in data:
        return None
    text = data.get("text/plain", "")
    kind = KINDS.get(text.split(" ", 1)[0])
    if kind is None:
        return None
    state = CURRENT_STATE.search(text)
    return WidgetDisplay(cell, kind, state and state.group(1), data[WIDGET_VIEW]["model_id"])


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
        notebook.cells.append(nbformat.v4.new_code_cell(REDISPLAY.format(model_ids=model_ids)))
        client.execute_cell(notebook.cells[-1], len(notebook.cells) - 1)
    at_end = stored_displays(nbformat.v4.new_notebook(cells=notebook.cells[-1:]))
    if [display.kind for display in at_end] != [display.kind for display in displayed]:
        raise RuntimeError(f"{path}: displaying its widgets again gave {at_end}, not {displayed}")
    return [
        replace(before, state=after.state) for before, after in zip(displayed, at_end, strict=True)
    ]
