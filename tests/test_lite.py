"""The course's JupyterLite site (`make lite`) in Chromium: the lessons and an assignment run in
the browser, on Pyodide, and no request leaves 127.0.0.1.

The site is built once for the module by tools/build_lite.py (its downloads are cached in
build/lite-cache/), served by `python3 -m http.server` on 127.0.0.1 and opened in one Chromium
page. Each lesson that is not tagged `lite-skip` is opened, run from the Run menu, and must show no
error output and every visualizer widget as its cell saved it; an assignment is answered, its
visible tests run, and the notebook downloaded.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyterlab_harness import JupyterLabPage, LabServer, NotebookPage, launch_chromium
from lesson_widgets import stored_displays
from playwright.sync_api import Request, expect, sync_playwright
from test_browser import _expect_widgets

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "tools"))
import build_lite  # noqa: E402

LESSONS = sorted(path.name for path in (REPOSITORY / "notebooks").glob("[0-9][0-9]-*.ipynb"))
# The lessons that need what Pyodide lacks, found by running every lesson in it: each must say so
# in its first Markdown cell and carry the notebook tag `lite-skip`. No other lesson is skipped.
# 07 starts threads; 11's aiosqlite runs SQLite in a thread (and SQLAlchemy's asyncio needs
# greenlet); 12 starts threads and uses a database server.
NEEDS_THREADS = {
    "07-scoped-sessions.ipynb",
    "11-async-session.ipynb",
    "12-concurrent-sessions.ipynb",
}
SKIP_SENTENCE = "does not run in the browser: it needs threads"
LITE_IDLE = "Python (Pyodide) | Idle"
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
ASSIGNMENT = "crud"


def _lesson(name: str) -> nbformat.NotebookNode:
    return nbformat.read(REPOSITORY / "notebooks" / name, as_version=4)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as `make lite` builds it (into a temporary folder)."""
    output = tmp_path_factory.mktemp("lite") / "site"
    started = time.monotonic()
    build_lite.build(output)
    print(f"site built in {time.monotonic() - started:.0f} s")
    return output


@pytest.fixture(scope="module")
def site_url(site: Path) -> Iterator[str]:
    """The site served by Python's static file server on a free 127.0.0.1 port."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=site, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/jupyter-lite.json", timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait()


@pytest.fixture(scope="module")
def outside_requests() -> list[str]:
    """Every request the page made to anywhere but the site's own server."""
    return []


@pytest.fixture(scope="module")
def lite(site_url: str, outside_requests: list[str]) -> Iterator[JupyterLabPage]:
    """JupyterLite loaded once in headless Chromium; every request is watched."""
    expect.set_options(timeout=300_000)  # a Pyodide kernel starts in 15 s here, 150 s under load

    def watch(request: Request) -> None:
        if not request.url.startswith((f"{site_url}/", "data:", "blob:")):
            outside_requests.append(request.url)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            context.on("request", watch)
            lab = JupyterLabPage.load(context, LabServer(f"{site_url}", "", Path()))
            lab.kernel_idle = LITE_IDLE
            yield lab
        finally:
            browser.close()
            expect.set_options(timeout=5_000)


def _errors(notebook: NotebookPage) -> list[str]:
    """The error outputs on the page (tracebacks and stderr), and JavaScript errors.

    A 404 is not one: the kernel's file system asks the contents API for folders it may hold
    (site-packages/.../all.json), and JupyterLite says so in the console, "nothing's broken"."""
    outputs = notebook.panel.locator(STDERR)
    texts = [outputs.nth(i).text_content() for i in range(outputs.count())]
    return texts + [error for error in notebook.errors if "404" not in error]


# True once every code cell of the open notebook has run, or as soon as one shows an error (Run All
# stops there, so the cells below would never run).
RAN_OR_FAILED = """() => {
    const notebook = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
    if (notebook.querySelector('[data-mime-type="application/vnd.jupyter.stderr"]')) return true;
    return [...notebook.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
        .every((prompt) => /^\\[\\d+\\]:$/.test(prompt.textContent.trim()));
}"""


def _run_all(notebook: NotebookPage) -> float:
    """Run All Cells as the harness does, but return at the first error instead of waiting.

    Returns when (time.monotonic()) the first code cell had run."""
    lab = notebook.lab
    lab.menu("Edit", "Clear Outputs of All Cells")
    lab.menu("View", "Expand All Code")
    lab.menu("Run", "Run All Cells")
    first = notebook.panel.locator(".jp-CodeCell .jp-InputPrompt").first
    expect(first).to_have_text(re.compile(r"^\[\d+\]:$"))
    first_ran = time.monotonic()
    notebook.page.wait_for_function(RAN_OR_FAILED, timeout=300_000, polling=500)
    notebook.wait_until_idle()
    return first_ran


def _site_copy(site: Path, relative: str) -> nbformat.NotebookNode:
    return nbformat.read(site / "files" / relative, as_version=4)


def test_lite_skip_marks_exactly_the_lessons_that_need_threads() -> None:
    tagged = {name for name in LESSONS if build_lite.is_skipped(_lesson(name))}
    assert tagged == NEEDS_THREADS & set(LESSONS), (
        "the lessons tagged lite-skip (notebook metadata.tags) are not those that fail in "
        f"Pyodide for want of threads: tagged {sorted(tagged)}, needed {sorted(NEEDS_THREADS)}"
    )
    for name in tagged:
        first = next(cell for cell in _lesson(name).cells if cell.cell_type == "markdown")
        assert SKIP_SENTENCE in first.source, f"{name}: its first cell must say {SKIP_SENTENCE!r}"


def test_the_site_is_local_and_its_copies_add_only_the_set_up_cell(site: Path) -> None:
    """Pyodide from the npm package the kernel targets, no CDN, no PyPI fallback; each lesson
    copied with the Pyodide kernel and the set-up cell, a skipped one with its stored outputs."""
    pyodide = json.loads((site / "static" / "pyodide" / "package.json").read_text())
    assert pyodide["version"] == build_lite.PYODIDE_VERSION
    config = (site / "jupyter-lite.json").read_text()
    settings = json.loads(config)["jupyter-config-data"]["litePluginSettings"]
    kernel = settings["@jupyterlite/pyodide-kernel-extension:kernel"]
    assert kernel["disablePyPIFallback"] is True
    assert kernel["pyodideUrl"] == "./static/pyodide/pyodide.mjs"
    assert "https://" not in config
    for name in LESSONS:
        lesson, copy = _lesson(name), _site_copy(site, f"notebooks/{name}")
        assert copy.metadata.kernelspec == build_lite.PYODIDE_KERNELSPEC
        if not build_lite.is_skipped(lesson):
            setup = copy.cells.pop(1)
            assert setup.metadata.tags == [build_lite.SETUP_TAG]
        assert [cell.source for cell in copy.cells] == [cell.source for cell in lesson.cells]
        assert [cell.get("outputs") for cell in copy.cells] == [
            cell.get("outputs") for cell in lesson.cells
        ], f"{name}: the site's copy lost its stored outputs"


def test_a_tagged_notebook_is_copied_with_its_stored_outputs_and_no_set_up_cell() -> None:
    notebook = nbformat.v4.new_notebook(metadata={"tags": [build_lite.SKIP_TAG]})
    output = nbformat.v4.new_output("stream", text="stored\n")
    notebook.cells = [
        nbformat.v4.new_markdown_cell(f"# Lesson 99: threads\n\nThis lesson {SKIP_SENTENCE}."),
        nbformat.v4.new_code_cell("print('stored')", outputs=[output], execution_count=1),
    ]
    copy = build_lite.site_copy(nbformat.from_dict(notebook), "course")
    assert [cell.source for cell in copy.cells] == [cell.source for cell in notebook.cells]
    assert copy.cells[1].outputs == [output]
    assert copy.metadata.kernelspec == build_lite.PYODIDE_KERNELSPEC


def test_the_tracker_imports_without_greenlet() -> None:
    """Pyodide has no greenlet, so SQLAlchemy's asyncio extension cannot be imported there."""
    script = """\
import sys

sys.modules["greenlet"] = None  # what Pyodide lacks: importing greenlet fails
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from session_visualizer import SessionTracker


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)


engine = create_engine("sqlite://")
Base.metadata.create_all(engine)
Session = sessionmaker(engine)
tracker = SessionTracker(Session)
user = User()
with Session() as session:
    session.add(user)
    print(tracker.state_of(user))
    session.commit()
print(tracker.state_of(user))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pending", "detached"]


@pytest.mark.parametrize(
    "lesson", [name for name in LESSONS if not build_lite.is_skipped(_lesson(name))]
)
def test_lesson_runs_in_the_browser(
    lesson: str, site: Path, lite: JupyterLabPage, outside_requests: list[str]
) -> None:
    """Run All Cells on Pyodide: no error output, every widget shows what its cell saved, and
    nothing was fetched from beyond 127.0.0.1."""
    if lesson in NEEDS_THREADS:
        pytest.fail(f"{lesson} needs threads: tag it lite-skip and say {SKIP_SENTENCE!r}")
    started = time.monotonic()
    notebook = lite.open_notebook(f"notebooks/{lesson}")
    ready = time.monotonic()
    first_ran = _run_all(notebook)
    print(
        f"{lesson}: {ready - started:.0f} s from opening to kernel ready, "
        f"{first_ran - started:.0f} s to the first cell run, "
        f"{time.monotonic() - started:.0f} s to all"
    )
    try:
        assert _errors(notebook) == [], f"{lesson}: errors in the browser"
        stored = stored_displays(_site_copy(site, f"notebooks/{lesson}"))
        _expect_widgets(notebook, stored, f"{lesson} in JupyterLite")
        assert outside_requests == [], "requests left the machine"
    finally:
        notebook.close()


def _solutions(assignment: str) -> dict[str, str]:
    """The instructor's solution of each answer cell of an assignment, by grade_id."""
    source = nbformat.read(REPOSITORY / "source" / assignment / f"{assignment}.ipynb", 4)
    return {
        cell.metadata.nbgrader.grade_id: "\n".join(
            line for line in cell.source.splitlines() if "### BEGIN" not in line
            and "### END" not in line
        )
        for cell in source.cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }  # fmt: skip


def test_an_assignment_is_answered_tested_and_downloaded(
    site: Path, lite: JupyterLabPage, outside_requests: list[str], tmp_path: Path
) -> None:
    """A student writes the answers, runs every visible test, and downloads the notebook, and
    nothing was fetched from beyond 127.0.0.1."""
    relative = f"release/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
    copy, solutions = _site_copy(site, relative), _solutions(ASSIGNMENT)
    answers = {
        index: solutions[cell.metadata.nbgrader.grade_id]
        for index, cell in enumerate(copy.cells)
        if cell.metadata.get("nbgrader", {}).get("solution")
    }
    assert len(answers) == 5, f"{relative}: expected five answer cells"
    notebook = lite.open_notebook(relative)
    try:
        for index, answer in answers.items():
            editor = notebook.cells.nth(index).locator(".cm-content")
            editor.click()
            notebook.page.keyboard.press("Control+a")
            notebook.page.keyboard.insert_text(answer)
        _run_all(notebook)
        assert _errors(notebook) == [], f"{relative}: a visible test failed in the browser"
        with notebook.page.expect_download() as download:
            lite.menu("File", "Download")
        path = tmp_path / "downloaded.ipynb"
        download.value.save_as(path)
        downloaded = nbformat.read(path, as_version=4)
        for index, answer in answers.items():
            assert downloaded.cells[index].source == answer, "the download lacks an answer"
        graded = [
            cell for cell in downloaded.cells if cell.metadata.get("nbgrader", {}).get("grade")
        ]
        assert graded and all(cell.get("execution_count") for cell in graded)
        assert outside_requests == [], "requests left the machine"
    finally:
        notebook.close()

