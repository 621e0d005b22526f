"""A sandboxed JupyterLab server, and a headless Chromium page that runs notebooks in it.

Used by tests/test_browser.py. What makes it reliable: private HOME, Jupyter directories and
workspaces; a free port that the server may not leave, and a token; no news pop-up; Debian's
Chromium with a fixed set of flags; waiting for the status bar's "Idle" and for every cell's
execution count rather than for the toolbar's kernel indicator.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    WebSocket,
    expect,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
JUPYTER = Path(sys.executable).with_name("jupyter")
KERNEL_IDLE = "Python 3 (ipykernel) | Idle"
# The status bar's kernel item: "<kernel> | Idle" once the notebook's kernel is ready.
KERNEL_STATUS = '#jp-main-statusbar .jp-StatusBar-TextItem[title^="Change kernel"]'
EXECUTED_PROMPT = re.compile(r"^\[\d+\]:$")
# Whether an element is in the viewport after the next frame has been laid out. An
# IntersectionObserver, as Playwright's to_be_in_viewport uses: it also counts the clipping by
# the notebook's scrolling panel, which ends above the status bar (the window does not).
IN_VIEWPORT_NEXT_FRAME = """element => new Promise(resolve => requestAnimationFrame(
    () => requestAnimationFrame(() => {
        const observer = new IntersectionObserver(entries => {
            observer.disconnect();
            resolve(entries[0].intersectionRatio > 0);
        });
        observer.observe(element);
    })))"""
# Stops the status bar's spinning kernel icon on every page load: while a kernel starts, headless
# Chromium draws each frame of it in software (measured: 6% of a core for as long as it spins).
STILL_SPINNER = """document.addEventListener("DOMContentLoaded", () => {
    const style = document.createElement("style");
    style.textContent = ".jp-KernelStatus-spinner { animation: none !important; }";
    document.head.append(style);
});"""
# User settings written before the server starts: no news pop-up over the notebook.
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab: its base URL, its token and the folder it serves."""

    url: str
    token: str
    root_dir: Path

    def shutdown_kernels(self) -> None:
        """Stop every kernel, so that the next notebook does not share the two CPUs."""
        for kernel in self._api("GET", "/api/kernels"):
            self._api("DELETE", f"/api/kernels/{kernel['id']}")

    def _api(self, method: str, path: str) -> list[dict]:
        request = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sandbox_environment(state_dir: Path) -> dict[str, str]:
    """Private HOME and Jupyter/IPython directories, so that nothing leaks in or out."""
    directories = {
        "HOME": "home",
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "IPYTHONDIR": "ipython",
    }
    environment = dict(os.environ)
    for variable, name in directories.items():
        (state_dir / name).mkdir(parents=True, exist_ok=True)
        environment[variable] = str(state_dir / name)
    for name, settings in USER_SETTINGS.items():
        path = state_dir / "config" / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    return environment


@contextmanager
def running_jupyterlab(
    root_dir: Path, state_dir: Path, startup_timeout: float = 60
) -> Iterator[LabServer]:
    """Start `jupyter lab` serving root_dir on a free 127.0.0.1 port; stop it on exit."""
    port, token = _free_port(), secrets.token_hex(16)
    log_path = state_dir / "jupyterlab.log"
    command = [
        str(JUPYTER), "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.terminals_enabled=False", "--ServerApp.allow_root=True",
        f"--LabApp.workspaces_dir={state_dir / 'workspaces'}", "--LabApp.news_url=None",
    ]  # fmt: skip
    environment = _sandbox_environment(state_dir)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, env=environment, cwd=root_dir, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = LabServer(f"http://127.0.0.1:{port}", token, root_dir)
    try:
        _wait_until_serving(server, process, log_path, startup_timeout)
        yield server
    finally:
        _stop(process)


def _wait_until_serving(
    server: LabServer, process: subprocess.Popen, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"jupyter lab exited with code {process.returncode}:\n{log_path.read_text()}"
            )
        try:
            server._api("GET", "/api/status")
            return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"jupyter lab did not answer in {timeout} s:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server, then kill its whole process group (kernels included)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless. Never a browser downloaded by `playwright install`."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(
            f"{CHROMIUM} is missing: install Debian's chromium (`make system-packages`)"
        )
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)


@dataclass
class JupyterLabPage:
    """JupyterLab loaded once in a page; notebooks open and close in it like tabs do."""

    page: Page
    lab_url: str
    errors: list[str] = field(default_factory=list)
    last_message: float = 0.0  # time.monotonic() of the last kernel message sent or received
    kernel_idle: str = KERNEL_IDLE  # the status bar's text for an idle kernel

    @classmethod
    def load(cls, context: BrowserContext, server: LabServer) -> JupyterLabPage:
        """Load JupyterLab in a new page, recording console errors and uncaught exceptions, with
        the kernel's spinner still."""
        lab = cls(context.new_page(), f"{server.url}/lab?reset&token={server.token}")
        lab.page.set_default_timeout(20_000)
        lab.page.on("console", lab._record_console)
        lab.page.on("pageerror", lambda error: lab.errors.append(f"pageerror: {error}"))
        lab.page.on("websocket", lab._watch_messages)
        lab.page.add_init_script(STILL_SPINNER)
        lab.reload()
        return lab

    def reload(self) -> None:
        """Load JupyterLab afresh, with no tab open."""
        self.page.goto(self.lab_url)
        expect(self.page.locator(".jp-DirListing-content")).to_be_visible()

    def _watch_messages(self, websocket: WebSocket) -> None:
        for event in ("framesent", "framereceived"):
            websocket.on(event, lambda _frame: setattr(self, "last_message", time.monotonic()))

    def wait_until_quiet(self, quiet: float = 0.5, timeout: float = 30) -> None:
        """Wait until no kernel message went either way for `quiet` seconds.

        The kernel's "Idle" does not end the exchange: a widget's view may still answer an
        update (a jslink, say) and the kernel answer that in turn.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.last_message < quiet:
            if time.monotonic() > deadline:
                raise TimeoutError(f"kernel messages still flowing after {timeout} s")
            self.page.wait_for_timeout(100)

    def _record_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console.error: {message.text} ({message.location})")

    def menu(self, menu: str, item: str) -> None:
        """Click `item` in menu-bar menu `menu`, e.g. menu("Run", "Run All Cells")."""
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(f"^{menu}$")).click()
        label = self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$"))
        self.page.locator(".lm-Menu-item", has=label).click()

    def answer_dialog(self, button: str) -> None:
        self.page.locator(".jp-Dialog button", has_text=re.compile(f"^{button}$")).click()

    def open_notebook(self, name: str) -> NotebookPage:
        """Open notebook `name` (File > Open from Path), wait until its kernel is idle."""
        self.menu("File", "Open from Path…")
        self.page.locator(".jp-Dialog input").fill(name)
        self.answer_dialog("Open")
        notebook = NotebookPage(self, first_error=len(self.errors))
        expect(notebook.cells.first).to_be_visible()
        notebook.wait_until_idle()
        return notebook


@dataclass
class NotebookPage:
    """The notebook open in a JupyterLabPage."""

    lab: JupyterLabPage
    first_error: int
    is_open: bool = True

    @property
    def page(self) -> Page:
        return self.lab.page

    @property
    def errors(self) -> list[str]:
        """JavaScript errors seen since this notebook was opened."""
        return self.lab.errors[self.first_error :]

    def close(self) -> None:
        """File > Close and Shut Down Notebook: the tab closes, the kernel stops."""
        self.lab.menu("File", "Close and Shut Down Notebook…")
        self.lab.answer_dialog("Ok")
        expect(self.page.locator(".jp-NotebookPanel")).to_have_count(0)
        self.is_open = False

    def save(self) -> None:
        """File > Save Notebook, as a student saves (the autosave does the same)."""
        self.lab.menu("File", "Save Notebook")

    @property
    def panel(self) -> Locator:
        """The notebook's content area (the cells)."""
        return self.page.locator(".jp-NotebookPanel:visible .jp-Notebook")

    @property
    def cells(self) -> Locator:
        """Every cell, code or Markdown, in notebook order."""
        return self.panel.locator(".jp-Cell")

    def wait_until_idle(self) -> None:
        """Wait until the status bar's kernel item says "Idle".

        Waited for on that item, which exists while the kernel starts: Playwright's `expect`
        on an element that does not exist yet takes an accessibility snapshot of the whole page
        at each poll, for its error message (measured: 70% of the page's own CPU while a
        JupyterLite kernel starts)."""
        expect(self.page.locator(KERNEL_STATUS)).to_have_text(self.lab.kernel_idle)

    def run_all(self) -> None:
        """Clear every output, run every cell from the Run menu, wait until all of them ran.

        Collapsed code (a try-it's worked answer) is expanded first: its placeholder has no prompt
        that would show the cell ran."""
        self.lab.menu("Edit", "Clear Outputs of All Cells")
        self.lab.menu("View", "Expand All Code")
        self.lab.menu("Run", "Run All Cells")
        self._wait_until_ran(range(self.cells.count()))

    def restart_and_run_to(self, index: int) -> None:
        """Clear every output, restart the kernel, run cells 0 to `index`, wait until they ran."""
        self.lab.menu("Edit", "Clear Outputs of All Cells")
        self._select(index)
        self.lab.menu("Kernel", "Restart Kernel and Run up to Selected Cell…")
        self.lab.answer_dialog("Restart")
        self._wait_until_ran(range(index + 1))
        self._expect_not_run(range(index + 1, self.cells.count()))

    def run_from(self, index: int) -> None:
        """Run cell `index` and every cell below it (JupyterLab disables this on the last cell)."""
        self._select(index)
        self.lab.menu("Run", "Run Selected Cell and All Below")
        self._wait_until_ran(range(index, self.cells.count()))

    def screenshot(self, path: Path, bottom: Locator) -> None:
        """Save a PNG of the notebook panel scrolled to end at `bottom`: it and the cells above.

        In a long notebook the cells scrolled past render at their real heights once in view and
        can push `bottom` out again: scroll until a frame later it is still in view."""
        for _attempt in range(5):
            bottom.scroll_into_view_if_needed()
            if bottom.evaluate(IN_VIEWPORT_NEXT_FRAME):
                break
        expect(bottom).to_be_in_viewport()
        self.page.locator(".jp-NotebookPanel:visible").screenshot(path=path, animations="disabled")

    def _select(self, index: int) -> None:
        cell = self.cells.nth(index)
        cell.locator(".jp-InputPrompt").click()
        expect(cell).to_have_class(re.compile(r"\bjp-mod-active\b"))

    def _code_prompts(self, indexes: range) -> Iterator[tuple[int, Locator]]:
        for index in indexes:
            cell = self.cells.nth(index)
            if "jp-CodeCell" in cell.get_attribute("class").split():
                yield index, cell.locator(".jp-InputPrompt")

    def _wait_until_ran(self, indexes: range) -> None:
        for index, prompt in self._code_prompts(indexes):
            expect(prompt, f"cell {index} has run").to_have_text(EXECUTED_PROMPT)
        self.wait_until_idle()
        self.lab.wait_until_quiet()

    def _expect_not_run(self, indexes: range) -> None:
        for index, prompt in self._code_prompts(indexes):
            expect(prompt, f"cell {index} has not run").to_have_text("[ ]:")
