"""The course in a real browser: JupyterLab, Debian's Chromium, Playwright.

One JupyterLab server and one Chromium per database for the whole module. The server serves working
copies of the lessons made by the same tool as `make course` (the repository's files must never
change), and each test runs a lesson from the Run menu like a student would, saves it, reopens it,
and checks what the page shows. A lesson tagged `postgresql` runs on a server of its own, whose
kernels get COURSE_DATABASE_URL (conftest.py sets it before such a test, unsets it before others).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
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
from lesson_widgets import KINDS, WidgetDisplay, stored_displays
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from course_database import VARIABLE

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
REPOSITORY = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPOSITORY / "notebooks"
LESSONS = sorted(path.name for path in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
ANY_WIDGET = ", ".join(f".{kind.root_class}" for kind in KINDS.values())
# Widget roots that are not inside another visualizer widget: one per displayed widget.
WIDGET_ROOTS = ", ".join(f".{kind.root_class}:not(:is({ANY_WIDGET}) *)" for kind in KINDS.values())
# Parse a saved static picture in the page and read the text of one element of it.
STORED_TEXT = """([html, selector]) => {
    const template = document.createElement('template');
    template.innerHTML = html;
    const found = template.content.querySelector(selector);
    return found === null ? null : found.textContent;
}"""
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def database_of(lesson: str) -> str:
    """The database a lesson's stored outputs come from: postgresql if tagged so, else sqlite."""
    tags = nbformat.read(NOTEBOOKS / lesson, as_version=4).metadata.get("tags", [])
    return "postgresql" if "postgresql" in tags else "sqlite"


# Tests that need no server: JupyterLab on SQLite (the same parameter, so the same server).
ON_SQLITE = pytest.mark.parametrize("lab_server", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def lab_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabServer]:
    """JupyterLab whose kernels run on the database the test's parameter names."""
    on_server = bool(os.environ.get(VARIABLE))
    assert on_server == (request.param == "postgresql"), f"{VARIABLE} is not as the test needs"
    root_dir = tmp_path_factory.mktemp("lab-root")
    tool = REPOSITORY / "tools" / "working_copies.py"
    subprocess.run([sys.executable, str(tool), str(root_dir)], check=True)  # as `make course` does
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
            if notebook.is_open:
                notebook.close()
    except PlaywrightError:  # a failed test left a dialog or menu open
        lab_page.reload()
    lab_server.shutdown_kernels()


def _write_notebook(path: Path, *sources: str) -> None:
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC})
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)


@ON_SQLITE
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


WITH_BLOCK = """\
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from session_visualizer import ObjectCard, SessionTracker


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


engine = create_engine("sqlite://")
Base.metadata.create_all(engine)
Session = sessionmaker(engine)
tracker = SessionTracker(Session)"""
ADD_COMMIT_CLOSE = """\
john = User(name="John")
with Session() as session:
    session.add(john)
    session.commit()
ObjectCard(tracker, john)"""


@ON_SQLITE
def test_a_card_steps_through_its_cell_from_the_keyboard(
    lab_server: LabServer, open_notebook: Callable[[str], NotebookPage]
) -> None:
    """A card made in a cell with a `with` block shows the cell's end (detached); the keyboard
    alone steps it back through the cell's steps, and switches it to "now" and back."""
    _write_notebook(lab_server.root_dir / "keyboard.ipynb", WITH_BLOCK, ADD_COMMIT_CLOSE)
    notebook = open_notebook("keyboard.ipynb")
    notebook.run_all()
    card = notebook.panel.locator(".sv-object-card")
    state = card.locator(".sv-card-body")
    expect(state).to_have_attribute("data-state", "detached")

    card.get_by_role("slider").focus()
    notebook.page.keyboard.press("ArrowLeft")
    expect(state, "one step back: the commit").to_have_attribute("data-state", "persistent")
    card.get_by_role("button", name="back").focus()
    notebook.page.keyboard.press("Enter")
    expect(state, "one more: the add").to_have_attribute("data-state", "pending")
    card.get_by_role("button", name="forward").focus()
    notebook.page.keyboard.press("Space")
    expect(state).to_have_attribute("data-state", "persistent")

    moment = card.locator(".sv-moment")
    card.get_by_role("button", name="now", exact=True).focus()
    notebook.page.keyboard.press("Space")
    expect(moment, "the switch shows the present").to_have_attribute("data-live", "true")
    expect(state).to_have_attribute("data-state", "detached")
    card.get_by_role("button", name="this cell", exact=True).focus()
    notebook.page.keyboard.press("Space")
    expect(moment, "and back to the cell's moment").to_have_attribute("data-live", "false")
    assert notebook.errors == []


def _text(text: str | None) -> str:
    return " ".join((text or "").split())


def _expect_widget(notebook: NotebookPage, index: int, display: WidgetDisplay, when: str) -> None:
    """Widget number `index` on the page is of the display's kind and shows its saved picture."""
    root = notebook.panel.locator(WIDGET_ROOTS).nth(index)
    kind, where = display.kind, f"{when}: widget {index} (displayed by cell {display.cell})"
    expect(root, f"{where} is a {kind.root_class}").to_have_class(
        re.compile(rf"\b{kind.root_class}\b")
    )
    marker = root.locator(kind.marker)
    expect(marker, f"{where} shows {display.value}").to_have_attribute(
        kind.attribute, display.value
    )
    saved = notebook.page.evaluate(STORED_TEXT, [display.html, kind.marker])
    assert _text(marker.text_content()) == _text(saved), f"{where}: not the picture its cell saved"


def _expect_widgets(notebook: NotebookPage, expected: list[WidgetDisplay], when: str) -> None:
    """The page shows exactly the expected visualizer widgets, in order, as saved."""
    roots = notebook.panel.locator(WIDGET_ROOTS)
    expect(roots, f"{when}: one rendered widget per display").to_have_count(len(expected))
    for index, display in enumerate(expected):
        _expect_widget(notebook, index, display, when)


def _reopen(
    lesson: str, lab_server: LabServer, open_notebook: Callable[[str], NotebookPage], widgets: int
) -> NotebookPage:
    """Open the saved lesson again; if none of its widgets renders within the usual wait, say
    what the page shows (a warning in pytest's summary) and close and open it once more.

    Seen once in CI on a busy machine (lesson 9: no widget after 30 s), never in 10 runs under
    load here; the cause is not known (a likely one: the widget manager restores the saved state
    while the new kernel connects, and swallows any error of that restore). A lesson saved
    without its widget state fails both times; so does one whose widgets show the wrong moment."""
    reopened = open_notebook(f"notebooks/{lesson}")
    roots = reopened.panel.locator(WIDGET_ROOTS)
    try:
        expect(roots).not_to_have_count(0)
        return reopened
    except AssertionError:
        seen = {
            text: reopened.panel.get_by_text(text).count()
            for text in ("Error displaying widget", "Loading widget")
        }
        warnings.warn(
            f"{lesson} reopened with 0 of {widgets} widgets rendered ({seen}, JavaScript errors "
            f"{reopened.errors}): closed and opened again",
            stacklevel=2,
        )
    reopened.close()
    lab_server.shutdown_kernels()
    return open_notebook(f"notebooks/{lesson}")


def _digest(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def _wait_for_saved_widget_state(path: Path, timeout: float = 30) -> nbformat.NotebookNode:
    """The notebook as saved on disk, once it holds the widget state JupyterLab saves with it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            saved = nbformat.read(path, as_version=4)
        except nbformat.reader.NotJSONError:  # caught while the server writes it
            saved = nbformat.v4.new_notebook()
        if WIDGET_STATE in saved.metadata.get("widgets", {}):
            return saved
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} was saved without its widget state")
        time.sleep(0.25)


def test_lessons_are_found() -> None:
    assert LESSONS, f"no lesson notebooks in {NOTEBOOKS}"


@pytest.mark.parametrize(
    ("lesson", "lab_server"), [(lesson, database_of(lesson)) for lesson in LESSONS],
    indirect=["lab_server"],
)  # fmt: skip
def test_lesson_in_jupyterlab(
    lesson: str,
    lab_server: LabServer,
    open_notebook: Callable[[str], NotebookPage],
    tmp_path: Path,
) -> None:
    """A lesson in JupyterLab: every widget shows the moment of its cell, before and after a run
    and after a save and a reopen; the repository's lessons never change.

    Opened: the saved static pictures show. Run All Cells: every widget renders and shows what its
    cell saved (a headless run at that cell), although later cells changed the objects. Saved,
    closed with its kernel and reopened: every widget shows the same from the saved widget state,
    never "model not found". No JavaScript error all along.
    """
    tracked = _digest(NOTEBOOKS)
    path = lab_server.root_dir / "notebooks" / lesson
    stored = stored_displays(nbformat.read(path, as_version=4))
    assert stored, f"{lesson}: no visualizer widget in its saved outputs"
    notebook = open_notebook(f"notebooks/{lesson}")
    expect(notebook.panel.locator(WIDGET_ROOTS), f"{lesson}: saved widgets").to_have_count(
        len(stored)
    )
    notebook.run_all()
    _expect_widgets(notebook, stored, f"{lesson} after Run All Cells")
    notebook.screenshot(tmp_path / f"{path.stem}.png", notebook.panel.locator(WIDGET_ROOTS).last)
    assert notebook.errors == [], f"{lesson}: JavaScript errors in the page"

    notebook.save()
    _wait_for_saved_widget_state(path)
    notebook.close()
    lab_server.shutdown_kernels()
    reopened = _reopen(lesson, lab_server, open_notebook, len(stored))
    _expect_widgets(reopened, stored, f"{lesson} saved and reopened")
    expect(reopened.panel.get_by_text("Error displaying widget")).to_have_count(0)
    assert reopened.errors == [], f"{lesson}: JavaScript errors after reopening"
    assert _digest(NOTEBOOKS) == tracked, "a lesson file of the repository changed"
