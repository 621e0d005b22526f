"""The worker's job: execute one sanitized notebook in a sandboxed kernel, cell by cell.

nbgrader's own `Execute` preprocessor runs the cells; this subclass only decides what
happens when a cell goes wrong. A cell that raises or times out gets an error output
(so a test cell scores 0), as in nbgrader. When the kernel dies, or keeps running after
the interrupt that follows a timeout, it is stopped: the cells that ran before keep their
results and every later code cell gets an error output saying why it did not run.
Outputs are capped in bytes as they arrive, so tens of megabytes never pile up. A whole
notebook has a wall-clock limit, and the kernel's cgroup (when there is one) limits memory,
processes and CPU time of the kernel and its children together: past any of them the kernel
is stopped, the cell that was running scores 0 and the cells before keep their results.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import nbformat
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute
from traitlets import Any, Integer, List, Unicode

from autograder.cgroups import KernelCgroup
from autograder.integrity import KernelGuard, withheld_output
from autograder.safe_files import MAX_ENTRIES, copy_regular_files, open_folder
from autograder.sandbox import SandboxedKernelManager, SandboxPolicy

RESPONSE_GRACE_SECONDS = 5
KERNEL_READY_SECONDS = 60  # a kernel's start, and its imports of what the tests need
WATCH_SECONDS = 0.2  # how often a running kernel's limits are checked


class InfrastructureFailure(Exception):
    """The grading machinery failed, not the student's notebook (a kernel that cannot start,
    or cannot import what the test cells import): the submission is left ungraded, with this
    message, and the next run grades it."""


@dataclass
class ExecutionResult:
    """An executed notebook (nbformat JSON) and what went wrong while running it."""

    notebook_json: str
    problems: list[str]
    seconds: float


def cell_label(cell: NotebookNode, index: int) -> str:
    """How a report names a cell: its nbgrader id when it has one."""
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return f"cell {index + 1} ({grade_id})" if grade_id else f"cell {index + 1}"


def error_output(ename: str, evalue: str) -> NotebookNode:
    """An error output, which makes nbgrader score a test cell 0."""
    return nbformat.v4.new_output(
        "error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]
    )


class GuardedExecute(Execute):
    """nbgrader's Execute, made to survive hostile cells and to cap output bytes."""

    output_limit_bytes = Integer(1_000_000, help="Bytes of output one cell may keep.").tag(
        config=True
    )
    notebook_output_limit_bytes = Integer(
        20_000_000, help="Bytes of output all the cells of a notebook may keep together."
    ).tag(config=True)
    notebook_timeout = Integer(
        600, help="Seconds of wall-clock time a whole notebook may run (all its cells)."
    ).tag(config=True)
    kernel_watch = Any(None, allow_none=True, help="The KernelWatch of the kernel's limits.")
    problems = List(Unicode())

    def preprocess(self, nb, resources=None, km=None):  # noqa: D102 - nbconvert's signature
        self._stopped_reason = ""
        self._guard: KernelGuard | None = None
        self._deadline: float | None = None  # set when the first cell starts
        self._cell_bytes: dict[int, int] = {}
        self._truncated: set[int] = set()
        self._kept_bytes = 0  # output bytes kept in the whole notebook
        try:
            return super().preprocess(nb, resources, km)
        except Exception as error:  # the kernel could not start or stop cleanly
            if self._deadline is None:  # no cell ran: nothing of the student's is involved
                raise InfrastructureFailure(
                    f"the kernel did not answer before the first cell: {type(error).__name__}: "
                    f"{error}"
                ) from None
            if not self._stopped_reason:
                self.problems.append(f"kernel failed: {type(error).__name__}: {error}")
                for cell in nb.cells:
                    if cell.cell_type == "code" and not cell.get("outputs"):
                        cell.outputs = [error_output("KernelFailed", str(error))]
            return nb, self.resources

    def preprocess_cell(self, cell, resources, index):  # noqa: D102 - nbconvert's signature
        if self._deadline is None:
            self._start_clocks()
        if cell.cell_type != "code":
            return cell, resources
        if self._stopped_reason:
            cell.outputs = [error_output("CellNotRun", self._stopped_reason)]
            return cell, resources
        label = cell_label(cell, index)
        if out_of_time := self._wall_clock_limit():
            self._stop(f"{label}: {out_of_time}")
            cell.outputs = [error_output("CellNotRun", self._stopped_reason)]
            return cell, resources
        try:
            tampering = self._execute(cell, resources, index)
        except Exception as error:
            self._stop(f"{label}: {self._describe(error)}")
            cell.outputs = [
                *cell.get("outputs", []),
                error_output(type(error).__name__, str(error)),
            ]
            return cell, resources
        timed_out = any(out.get("ename") == self.error_on_timeout["ename"] for out in cell.outputs)
        if limit := self._kernel_limit() or (timed_out and self._wall_clock_limit()):
            self._stop(f"{label}: {limit}")
            cell.outputs.append(error_output("LimitExceeded", limit))
            return cell, resources
        if timed_out:
            if self._kernel_responds():
                self.problems.append(
                    f"{label}: timed out after {self.timeout} s and was interrupted"
                )
            else:
                self._stop(f"{label}: timed out after {self.timeout} s and ignored the interrupt")
        if any(out.get("ename") == "MemoryError" for out in cell.outputs):
            self.problems.append(f"{label}: hit the memory limit (MemoryError)")
        if index in self._truncated:
            note = f"[output cut at {self.output_limit_bytes} bytes]\n"
            cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=note))
            self.problems.append(
                f"{label}: output cut at {self.output_limit_bytes} bytes for the cell, "
                f"{self.notebook_output_limit_bytes} for the notebook"
            )
        if tampering:
            cell.outputs.append(withheld_output(tampering))
            shown = "; ".join(tampering[:5]) + ("; ..." if len(tampering) > 5 else "")
            self.problems.append(f"{label}: points withheld, the test machinery changed: {shown}")
        return cell, resources

    def _execute(self, cell: NotebookNode, resources: dict, index: int) -> list[str]:
        """Run the cell; for a test cell, return what the integrity guard found changed."""
        if self._guard is None:
            self._guard = KernelGuard(self.kc)
            self._guard.install()
        run = functools.partial(super().preprocess_cell, cell, resources, index)
        if not utils.is_grade(cell):
            run()
            return []
        return self._guard.run_test_cell(cell, run)

    def output(self, outs, msg, display_id, cell_index):  # noqa: D102 - nbclient's signature
        size = len(str(msg["content"]))
        limit = self.notebook_output_limit_bytes
        used = self._cell_bytes.get(cell_index, 0) + size
        self._cell_bytes[cell_index] = used
        if msg["msg_type"] == "error":
            msg["content"]["traceback"] = clip_lines(msg["content"]["traceback"], 20_000)
        elif used > self.output_limit_bytes or self._kept_bytes + size > limit:
            self._truncated.add(cell_index)
            return None
        self._kept_bytes += size
        return super().output(outs, msg, display_id, cell_index)

    def _start_clocks(self) -> None:
        """The notebook's wall-clock and CPU time count from its first cell (not the
        kernel's start)."""
        self._deadline = time.monotonic() + self.notebook_timeout
        if self.kernel_watch is not None:
            self.kernel_watch.start()

    def _get_timeout(self, cell: NotebookNode | None) -> float | None:
        """The cell's timeout, shortened to what is left of the notebook's wall-clock time."""
        timeout = super()._get_timeout(cell)
        if self._deadline is None:  # a request before the first cell (kernel_info)
            return timeout
        left = max(0.1, self._deadline - time.monotonic())
        return left if timeout is None else min(timeout, left)

    def _wall_clock_limit(self) -> str | None:
        if self._deadline is None or time.monotonic() < self._deadline:
            return None
        return f"the notebook reached its wall-clock limit of {self.notebook_timeout} s"

    def _kernel_limit(self) -> str | None:
        """A limit of the kernel (memory, processes, CPU time, its folder) it went past."""
        return self.kernel_watch.exceeded() if self.kernel_watch is not None else None

    def _describe(self, error: Exception) -> str:
        if limit := self._kernel_limit() or self._wall_clock_limit():
            return limit
        if isinstance(error, CellTimeoutError):
            return f"timed out after {self.timeout} s and ignored the interrupt"
        if not run_sync(self.km.is_alive)():
            return "the kernel died (a crash, os._exit, or a CPU or memory limit)"
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"

    def _stop(self, reason: str) -> None:
        """Stop the kernel: the rest of the notebook scores 0."""
        self._stopped_reason = f"not run: the kernel was stopped after {reason}"
        self.problems.append(f"{reason}; the kernel was stopped and later cells scored 0")
        run_sync(self.km.shutdown_kernel)(now=True)

    def _kernel_responds(self) -> bool:
        """Whether the kernel answers a kernel_info request within a few seconds."""
        deadline = time.monotonic() + RESPONSE_GRACE_SECONDS
        msg_id = self.kc.kernel_info()
        while time.monotonic() < deadline:
            try:
                reply = run_sync(self.kc.get_shell_msg)(timeout=deadline - time.monotonic())
            except Exception:
                return False
            if reply["parent_header"].get("msg_id") == msg_id:
                return True
        return False


def clip_lines(lines: list[str], limit: int) -> list[str]:
    """Lines whose total length stays under `limit` characters."""
    kept, total = [], 0
    for line in lines:
        total += len(line)
        if total > limit:
            return [*kept, "[traceback cut]"]
        kept.append(line)
    return kept


class KernelWatch:
    """Watches a running kernel from the grader: its cgroup's limits (memory, processes, CPU
    time) and its folder, which may hold twice the disk budget and MAX_ENTRIES entries (each
    file is capped by RLIMIT_FSIZE, not their number). Past any of them it kills the kernel
    at once and keeps saying which limit it was."""

    def __init__(
        self, cgroup: KernelCgroup | None, folder: Path, disk_bytes: int, kill: Callable[[], None]
    ) -> None:
        self.cgroup = cgroup
        self.folder = folder
        self.folder_bytes = 2 * disk_bytes
        self.kill = kill
        self._stopped = threading.Event()

    def start(self) -> None:
        """Count CPU time from now and watch until `stop`."""
        if self.cgroup is not None:
            self.cgroup.start_clock()
        threading.Thread(target=self._watch, daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def exceeded(self) -> str | None:
        """The limit the kernel went past, or None."""
        if self.cgroup is not None and (reason := self.cgroup.exceeded()):
            return reason
        entries, allocated = 0, 0
        for entry_bytes in _allocations(self.folder):
            entries += 1
            allocated += entry_bytes
            if entries > MAX_ENTRIES:
                return f"the kernel made more than {MAX_ENTRIES} files and folders in its folder"
            if allocated > self.folder_bytes:
                megabytes = self.folder_bytes // 1024**2
                return f"the kernel wrote more than {megabytes} MB into its folder"
        return None

    def _watch(self) -> None:
        while not self._stopped.wait(WATCH_SECONDS):
            if self.exceeded():
                self.kill()


def _allocations(folder: Path) -> Iterator[int]:
    """The bytes allocated to each entry below `folder`, links not followed; an entry the kernel
    removes while it is counted (a SQLite journal, say) is skipped."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            allocated = entry.stat(follow_symlinks=False).st_blocks * 512
            is_folder = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        yield allocated
        if is_folder:
            yield from _allocations(Path(entry.path))


class KernelSlot:
    """A sandboxed kernel started in a fresh folder of its own before a notebook needs it."""

    def __init__(
        self, policy: SandboxPolicy, config: object, kernel_name: str, scratch: Path | None
    ) -> None:
        self.kernel_name = kernel_name
        self.folder = Path(tempfile.mkdtemp(prefix="course-grade-kernel-", dir=scratch))
        self.workdir = self.folder / "work"
        runtime_dir = self.folder / "runtime"
        self.workdir.mkdir()
        runtime_dir.mkdir()
        self.cgroup = None
        self.km = None
        try:
            if policy.hierarchy:
                self.cgroup = KernelCgroup(policy.hierarchy, policy.limits)
            self.km = SandboxedKernelManager(
                config=config,
                policy=policy,
                workdir=str(self.workdir),
                runtime_dir=str(runtime_dir),
                cgroup_procs=list(self.cgroup.procs_files) if self.cgroup else [],
                kernel_name=kernel_name,
            )
            hist_file = GuardedExecute.ipython_hist_file.default_value
            arguments = [f"--HistoryManager.hist_file={hist_file}"]
            run_sync(self.km.start_kernel)(extra_arguments=arguments, cwd=str(self.workdir))
        except Exception as error:
            self.close()
            raise InfrastructureFailure(
                f"the kernel '{kernel_name}' could not start: {type(error).__name__}: {error}"
            ) from None

    def kill(self) -> None:
        """Kill the kernel and every process it started (callable from any thread)."""
        if self.cgroup is not None:
            self.cgroup.kill()
        elif self.km is not None and self.km.provisioner is not None and self.km.provisioner.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.km.provisioner.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the kernel and every process it started."""
        if self.km is not None and run_sync(self.km.is_alive)():
            run_sync(self.km.shutdown_kernel)(now=True)
        if self.cgroup is not None:
            self.cgroup.kill()

    def close(self) -> None:
        """Stop the kernel, delete its cgroup and its folder."""
        self.stop()
        if self.cgroup is not None:
            self.cgroup.remove()
        shutil.rmtree(self.folder, ignore_errors=True)


class NotebookRunner:
    """Runs notebooks one after another; with `prefetch`, the next kernel boots meanwhile.

    A kernel spends about a second starting (imports, then ZeroMQ handshakes with pauses);
    starting it while the previous notebook runs hides most of that. The kernel works in its
    own folder: the notebook's files are copied in before the run and, once the kernel and
    all its processes are stopped, its regular files (no links, nothing sparse, within the
    policy's disk budget) are copied back; each file left out is a problem of the run.
    """

    def __init__(
        self, policy: SandboxPolicy, config: object, prefetch: bool, scratch: Path | None = None
    ) -> None:
        self.scratch = scratch
        self.policy = policy
        self.config = config
        self.prefetch = prefetch
        self.spare: KernelSlot | None = None

    def run(
        self, notebook_json: str, workdir: str, modules: tuple[str, ...] = ()
    ) -> ExecutionResult:
        """Execute a sanitized notebook whose files are in `workdir`; results go back there.
        `modules` are what its test cells import: a kernel that cannot import them (before any
        file of the submission is in its folder) raises InfrastructureFailure, as does a kernel
        that cannot start."""
        started = time.monotonic()
        nb = nbformat.reads(notebook_json, as_version=nbformat.NO_CONVERT)
        kernel_name = nb.metadata.get("kernelspec", {}).get("name", "python3")
        slot = self._take_slot(kernel_name)
        # the whole folder: the kernel can write into its runtime folder too (the ipc sockets')
        watch = KernelWatch(slot.cgroup, slot.folder, self.policy.disk_bytes, slot.kill)
        executor = GuardedExecute(config=self.config, kernel_watch=watch)
        folder = Path(workdir)
        notebooks: list[str] = []  # the grader writes the graded notebook, not the kernel

        def notebook(path: PurePosixPath) -> bool:
            if path.suffix == ".ipynb":
                notebooks.append(f"{path} not copied: a notebook (the graded one is the grader's)")
            return path.suffix == ".ipynb"

        try:
            if self.prefetch:
                self._start_spare(kernel_name)
            check_imports(slot.km, modules)
            with (
                open_folder(folder, folder) as source,
                open_folder(slot.workdir, slot.folder) as kernel,
            ):
                copy_regular_files(source, kernel)
            executor.preprocess(nb, {"metadata": {"path": str(slot.workdir)}}, km=slot.km)
            slot.stop()
            relative_paths(nb, slot.workdir)
            with (
                open_folder(slot.workdir, slot.folder) as kernel,
                open_folder(folder, folder) as target,
            ):
                refused = copy_regular_files(kernel, target, self.policy.disk_bytes, notebook)
        finally:
            watch.stop()
            slot.close()
        seconds = time.monotonic() - started
        left_out = sorted([*notebooks, *refused])
        problems = [*executor.problems, *(f"kernel's folder: {reason}" for reason in left_out)]
        return ExecutionResult(nbformat.writes(nb), problems, seconds)

    def close(self) -> None:
        """Stop the spare kernel."""
        if self.spare is not None:
            self.spare.close()
            self.spare = None

    def _start_spare(self, kernel_name: str) -> None:
        """Start the next notebook's kernel now; if it cannot start, the next notebook starts
        its own (and reports the failure then)."""
        try:
            self.spare = KernelSlot(self.policy, self.config, kernel_name, self.scratch)
        except InfrastructureFailure:
            self.spare = None

    def _take_slot(self, kernel_name: str) -> KernelSlot:
        spare, self.spare = self.spare, None
        if spare is not None and spare.kernel_name == kernel_name:
            return spare
        if spare is not None:
            spare.close()
        return KernelSlot(self.policy, self.config, kernel_name, self.scratch)


def relative_paths(nb: NotebookNode, workdir: Path) -> None:
    """Outputs name files of the kernel's folder relative to it, not by the grader's absolute
    (temporary) path: a traceback reads `crud.db`, not `/tmp/course-grade-0/run-.../crud.db`."""

    def strip(text: str) -> str:
        return text.replace(f"{workdir}/", "").replace(str(workdir), ".")

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output.evalue = strip(output.get("evalue", ""))
                output.traceback = [strip(line) for line in output.get("traceback", [])]
            elif output.get("output_type") == "stream":
                output.text = strip(output.get("text", ""))


def imported_modules(nb: NotebookNode, provided: set[str]) -> tuple[str, ...]:
    """The modules the test cells of `nb` import, except those whose top-level name the
    assignment's own folder `provided` (a helper module shipped beside the notebook)."""
    names: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # IPython syntax: its imports are not checked ahead
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return tuple(sorted(name for name in names if name.partition(".")[0] not in provided))


def check_imports(km: SandboxedKernelManager, modules: tuple[str, ...]) -> None:
    """Raise InfrastructureFailure unless the fresh kernel of `km` answers and imports every
    module of `modules` (evaluated as user expressions: nothing enters its namespace)."""
    client = km.client()
    client.start_channels()
    try:
        try:
            run_sync(client.wait_for_ready)(timeout=KERNEL_READY_SECONDS)
        except Exception as error:
            raise InfrastructureFailure(
                f"the kernel did not start: {type(error).__name__}: {error}"
            ) from None
        if not modules:
            return
        expressions = {f"m{i}": f"__import__({name!r}) and None" for i, name in enumerate(modules)}
        msg_id = client.execute("", silent=True, store_history=False, user_expressions=expressions)
        deadline = time.monotonic() + KERNEL_READY_SECONDS
        reply: dict = {}
        while time.monotonic() < deadline and not reply:
            try:
                message = run_sync(client.get_shell_msg)(timeout=deadline - time.monotonic())
            except Exception:  # no reply in time
                break
            if message["parent_header"].get("msg_id") == msg_id:
                reply = message["content"]
        results = reply.get("user_expressions", {})
        missing = []
        for key, name in zip(expressions, modules, strict=True):
            result = results.get(key, {"status": "error", "ename": "no answer", "evalue": ""})
            if result.get("status") != "ok":
                missing.append(f"{name} ({result.get('ename')}: {result.get('evalue')})")
        if missing:
            raise InfrastructureFailure(
                "the grading kernel cannot import what the test cells import: "
                f"{'; '.join(missing)}. Grade with the course's environment (its kernel must "
                "import the course's packages), then run course-grade again"
            )
    finally:
        client.stop_channels()
