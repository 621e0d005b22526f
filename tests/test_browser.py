"""The course in a real browser: JupyterLab, Debian's Chromium, Playwright.

One JupyterLab server and one Chromium for the whole module. Each test opens a notebook
(a copy in the server's own temporary folder, so the repository is never modified), runs
it from the Run menu like a student would, and checks what the page shows.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
from jupyterlab_harness import LabServer, NotebookPage, launch_chromium, running_jupyterlab
from lesson_widgets import KINDS, WidgetDisplay, final_displays, stored_displays
from playwright.sync_api import BrowserContext, Locator, expect, sync_playwright

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(path.name for path in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
ANY_WIDGET = ", ".join(f".{kind}" for kind in KINDS.values())
# Widget roots that are not inside another visualizer widget: one per displayed widget.
WIDGET_ROOTS = ", ".join(f".{kind}:not(:is({ANY_WIDGET}) *)" for kind in KINDS.values())


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    root_dir = tmp_path_factory.mktemp("lab-root")
    for lesson in LESSONS:
        shutil.copy(NOTEBOOKS / lesson, root_dir / lesson)
    with running_jupyterlab(root_dir, tmp_path_factory.mktemp("lab-state")) as server:
        yield server


@pytest.fixture(scope="module")
def browser_context() -> Iterator[BrowserContext]:
    expect.set_options(timeout=60_000)  # JupyterLab takes 5-10 s to load here
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser.new_context(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


@pytest.fixture
def open_notebook(
    lab_server: LabServer, browser_context: BrowserContext
) -> Iterator[Callable[[str], NotebookPage]]:
    """Open notebooks by name; close their pages and stop their kernels after the test."""
    opened: list[NotebookPage] = []

    def open_(name: str) -> NotebookPage:
        opened.append(NotebookPage.open(browser_context, lab_server, name))
        return opened[-1]

    yield open_
    for notebook in opened:
        notebook.page.close()
    lab_server.shutdown_kernels()


def _write_notebook(path: Path, *sources: str) -> None:
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC})
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)


def test_a_stock_widget_renders_and_follows_the_kernel(
    lab_server: LabServer, open_notebook: Callable[[str], NotebookPage]
) -> None:
    """The harness itself: an IntSlider renders, then shows a value set by a later cell."""
    _write_notebook(
        lab_server.root_dir / "harness-check.ipynb",
        "import ipywidgets\nslider = ipywidgets.IntSlider(value=3)\nslider",
        "slider.value = 7",
        "slider.value += 1",
    )
    notebook = open_notebook("harness-check.ipynb")
    readout = notebook.panel.locator(".widget-slider .widget-readout")

    notebook.run_all()
    expect(readout).to_have_text("8")
    notebook.restart_and_run_to(0)
    expect(readout).to_have_text("3")
    notebook.run_from(1)
    expect(readout).to_have_text("8")
    expect(notebook.panel.locator(".widget-slider")).to_have_count(1)
    assert notebook.errors == []


def _expect_widgets(notebook: NotebookPage, expected: list[WidgetDisplay], when: str) -> None:
    """The page shows exactly the expected visualizer widgets, in order, in their states."""
    roots = notebook.panel.locator(WIDGET_ROOTS)
    expect(roots, f"{when}: one rendered widget per widget display").to_have_count(len(expected))
    for index, display in enumerate(expected):
        where = f"{when}: widget {index} (displayed by cell {display.cell})"
        root = roots.nth(index)
        expect(root, f"{where} is a {display.kind}").to_have_class(re.compile(display.kind))
        if display.state is not None:
            expect(_state_marker(root), f"{where} shows its state").to_have_attribute(
                "data-state", display.state
            )


def _state_marker(root: Locator) -> Locator:
    return root.locator("[data-state]")


def test_lessons_are_found() -> None:
    assert LESSONS, f"no lesson notebooks in {NOTEBOOKS}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_in_jupyterlab_with_live_widgets(
    lesson: str, open_notebook: Callable[[str], NotebookPage], tmp_path: Path
) -> None:
    """Run All Cells: every widget renders and shows its object's final state, no JS error."""
    stored = stored_displays(nbformat.read(NOTEBOOKS / lesson, as_version=4))
    expected = final_displays(NOTEBOOKS / lesson, tmp_path)
    assert [d.kind for d in stored] == [d.kind for d in expected], "stored outputs are stale"

    notebook = open_notebook(lesson)
    notebook.run_all()

    _expect_widgets(notebook, expected, f"{lesson} after Run All Cells")
    assert notebook.errors == []
