"""The course in a real browser: JupyterLab, Debian's Chromium, Playwright.

One JupyterLab server and one Chromium for the whole module. Each test opens a notebook
(a copy in the server's own temporary folder, so the repository is never modified), runs
it from the Run menu like a student would, and checks what the page shows.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from jupyterlab_harness import (
    JupyterLabPage,
    LabServer,
    NotebookPage,
    launch_chromium,
    running_jupyterlab,
)
from lesson_widgets import KINDS, WidgetDisplay, final_displays, stored_displays
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(path.name for path in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
ANY_WIDGET = ", ".join(f".{kind.root_class}" for kind in KINDS.values())
# Widget roots that are not inside another visualizer widget: one per displayed widget.
WIDGET_ROOTS = ", ".join(f".{kind.root_class}:not(:is({ANY_WIDGET}) *)" for kind in KINDS.values())
# The in-between states, the most telling ones to catch a live view in.
IN_BETWEEN = ("pending", "deleted")


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    root_dir = tmp_path_factory.mktemp("lab-root")
    with running_jupyterlab(root_dir, tmp_path_factory.mktemp("lab-state")) as server:
        yield server


@pytest.fixture(scope="module")
def lab_page(lab_server: LabServer) -> Iterator[JupyterLabPage]:
    """JupyterLab, loaded once in headless Chromium."""
    expect.set_options(timeout=30_000)  # JupyterLab takes 5-10 s to load here, more under load
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            yield JupyterLabPage.load(context, lab_server)
        finally:
            browser.close()


@pytest.fixture
def open_notebook(
    lab_server: LabServer, lab_page: JupyterLabPage
) -> Iterator[Callable[[str], NotebookPage]]:
    """Open notebooks by name; close them and stop their kernels after the test."""
    opened: list[NotebookPage] = []

    def open_(name: str) -> NotebookPage:
        opened.append(lab_page.open_notebook(name))
        return opened[-1]

    yield open_
    try:
        for notebook in opened:
            notebook.close()
    except PlaywrightError:  # a failed test left a dialog or menu open
        lab_page.reload()
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


def _expect_widget(notebook: NotebookPage, index: int, display: WidgetDisplay, when: str) -> None:
    """Widget number `index` on the page is of the display's kind and shows its value."""
    root = notebook.panel.locator(WIDGET_ROOTS).nth(index)
    kind, where = display.kind, f"{when}: widget {index} (displayed by cell {display.cell})"
    expect(root, f"{where} is a {kind.root_class}").to_have_class(
        re.compile(rf"\b{kind.root_class}\b")
    )
    expect(root.locator(kind.marker), f"{where} shows {display.value}").to_have_attribute(
        kind.attribute, display.value
    )


def _expect_widgets(notebook: NotebookPage, expected: list[WidgetDisplay], when: str) -> None:
    """The page shows exactly the expected visualizer widgets, in order, with their values."""
    roots = notebook.panel.locator(WIDGET_ROOTS)
    expect(roots, f"{when}: one rendered widget per display").to_have_count(len(expected))
    for index, display in enumerate(expected):
        _expect_widget(notebook, index, display, when)


def _changing_widget(
    stored: list[WidgetDisplay], final: list[WidgetDisplay], cell_count: int
) -> int | None:
    """The widget whose value later cells change, an object caught in-between preferred."""
    changing = [
        index
        for index, (before, after) in enumerate(zip(stored, final, strict=True))
        if before.value != after.value and before.cell + 1 < cell_count
    ]
    return min(
        changing,
        key=lambda index: (
            stored[index].kind.attribute != "data-state",
            stored[index].value not in IN_BETWEEN,
            index,
        ),
        default=None,
    )


def test_lessons_are_found() -> None:
    assert LESSONS, f"no lesson notebooks in {NOTEBOOKS}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_in_jupyterlab(
    lesson: str,
    lab_server: LabServer,
    open_notebook: Callable[[str], NotebookPage],
    tmp_path: Path,
) -> None:
    """A lesson in JupyterLab: its widgets render, show the right states and follow the cells.

    Before running: the saved static widgets show. Run All Cells: every widget renders and
    shows what it shows at the end of a headless run. Then, for a widget that later cells
    change: restart and run up to its cell (it must show what the notebook saved there; a
    screenshot goes to tmp_path), run the rest (it must change to its final value). No
    JavaScript error all along.
    """
    path = Path(shutil.copy(NOTEBOOKS / lesson, lab_server.root_dir / lesson))
    notebook_json = nbformat.read(path, as_version=4)
    stored = stored_displays(notebook_json)
    with ThreadPoolExecutor(max_workers=1) as headless:  # meanwhile, the browser works
        final_run = headless.submit(final_displays, path, tmp_path)
        notebook = open_notebook(lesson)
        expect(notebook.panel.locator(WIDGET_ROOTS), f"{lesson}: saved widgets").to_have_count(
            len(stored)
        )
        notebook.run_all()
        final = final_run.result()
    assert [d.kind.root_class for d in stored] == [d.kind.root_class for d in final], (
        f"{lesson}: its saved outputs show other widgets than a fresh run: re-run and save it"
    )
    _expect_widgets(notebook, final, f"{lesson} after Run All Cells")

    changing = _changing_widget(stored, final, len(notebook_json.cells))
    assert changing is not None, f"{lesson}: no widget changes after its cell displayed it"
    cell = stored[changing].cell
    notebook.restart_and_run_to(cell)
    when = f"{lesson} run up to cell {cell}"
    shown = [display for display in stored if display.cell <= cell]
    expect(notebook.panel.locator(WIDGET_ROOTS), when).to_have_count(len(shown))
    _expect_widget(notebook, changing, stored[changing], when)
    notebook.screenshot(
        tmp_path / f"{path.stem}.png", notebook.panel.locator(WIDGET_ROOTS).nth(changing)
    )
    notebook.run_from(cell + 1)
    _expect_widgets(notebook, final, f"{lesson} after running the cells below {cell}")
    assert notebook.errors == [], f"{lesson}: JavaScript errors in the page"
