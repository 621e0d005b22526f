"""Run a student's kernel where it can do no harm: bubblewrap for isolation; limits per kernel.

Inside the sandbox the kernel sees the system's programs and libraries, the few files of
/etc that Python needs (no /etc/shadow, no keys), the Python installation and the packages
it may import (all read-only), its own working folder, a sized private /tmp and a private
runtime folder for the ZeroMQ ipc sockets. It does not see the course folder (source/, the
gradebook, other submissions) or the instructor's home, and it has no network: only the ipc
transport (Unix sockets in a shared folder) links it to the grader. bubblewrap itself starts
with nothing of the grader's environment (`env -i`): the kernel reads no secret in /proc.

Limits: memory, processes and CPU time of the kernel and all its children together come
from a cgroup per kernel (see autograder.cgroups) where the machine offers one; `prlimit`
adds per-process limits (address space, file size, core dumps, CPU time as a backstop).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from traitlets import Any, List, Unicode

from autograder.cgroups import Hierarchy, Limits, find_hierarchy

SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
# What of /etc Python, ipykernel and sqlite read; nothing secret (no shadow, ssh, ssl keys).
ETC_FILES = (
    "alternatives",
    "fonts",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "python3",
    "python3.11",
    "timezone",
)
SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_MESSAGE_BYTES = 256 * 1024**2  # one message from a kernel (a cell keeps far less)
CPU_BACKSTOP_SECONDS = 10  # per-process CPU limit past the cgroup's, when a cgroup holds it
PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None).prctl  # looked up now: the child calls it between fork and exec


def _die_with_parent() -> None:
    """In the kernel's process before it starts: be killed when the worker that starts it dies
    (even by SIGKILL), with or without bubblewrap (whose --die-with-parent does the same)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class SandboxPolicy:
    """What a kernel may see and use. `isolate=False` means limits only (no bubblewrap).

    With a cgroup `hierarchy`, memory, processes and CPU seconds hold for the kernel and its
    children together; without, each process gets them separately (RLIMIT_NPROC is not
    enforced for root). `disk_bytes` bounds each file, the private /tmp, and what a
    submission brings in and leaves behind."""

    memory_bytes: int
    cpu_seconds: int
    processes: int = 128
    disk_bytes: int = 100 * 1024**2
    read_only: tuple[str, ...] = field(default_factory=tuple)
    isolate: bool = True
    hierarchy: Hierarchy | None = None

    @property
    def limits(self) -> Limits:
        return Limits(self.memory_bytes, self.processes, self.cpu_seconds)

    def describe(self) -> str:
        """Which limits hold per kernel and which per process, for the instructor."""
        if self.hierarchy is None:
            return (
                "limits per process only (no usable cgroup): memory, CPU time and processes "
                "are not summed over a kernel's children"
            )
        return (
            f"limits per kernel ({self.hierarchy.describe()}): memory, processes and CPU time "
            "of a kernel and all its children together"
        )

    def wrap(
        self, command: list[str], workdir: str, runtime_dir: str, cgroup_procs: tuple[str, ...] = ()
    ) -> list[str]:
        """The kernel `command` with a clean environment, in its cgroup, under the limits and,
        when `isolate`, inside bubblewrap."""
        limited = ["prlimit", *self._rlimits(), "--", *command]
        inner = [*self._bwrap_arguments(workdir, runtime_dir), "--", *limited]
        started = inner if self.isolate else limited
        if cgroup_procs:
            join = 'IFS=:; for procs in $1; do echo $$ > "$procs" || exit 1; done; shift; exec "$@"'
            started = ["/bin/sh", "-c", join, "join-cgroup", ":".join(cgroup_procs), *started]
        tmp = "/tmp" if self.isolate else runtime_dir
        return ["/usr/bin/env", "-i", *kernel_environment(workdir, tmp), *started]

    def _rlimits(self) -> list[str]:
        cpu = self.cpu_seconds + (CPU_BACKSTOP_SECONDS if self.hierarchy else 0)
        limits = [
            f"--as={self.memory_bytes}",
            f"--cpu={cpu}:{cpu + 1}",
            f"--fsize={self.disk_bytes}",
            "--core=0",
        ]
        if self.hierarchy is None:
            limits.append(f"--nproc={_processes_of_this_user() + self.processes}")
        return limits

    def _bwrap_arguments(self, workdir: str, runtime_dir: str) -> list[str]:
        arguments = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
        if os.geteuid() == 0:
            arguments += ["--cap-drop", "ALL"]
        for folder in SYSTEM_FOLDERS:
            path = Path(folder)
            if path.is_symlink():
                arguments += ["--symlink", str(path.readlink()), folder]
            elif path.is_dir():
                arguments += ["--ro-bind", folder, folder]
        for name in ETC_FILES:
            arguments += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        arguments += ["--proc", "/proc", "--dev", "/dev"]
        arguments += ["--size", str(self.disk_bytes), "--tmpfs", "/tmp"]
        for path in self.read_only:
            arguments += ["--ro-bind", path, path]
        arguments += ["--bind", workdir, workdir, "--bind", runtime_dir, runtime_dir]
        return [*arguments, "--chdir", workdir]


def kernel_environment(workdir: str, tmp: str) -> list[str]:
    """The kernel's whole environment, as NAME=value arguments of `env`."""
    environment = {
        "HOME": workdir,
        "PATH": f"{Path(sys.executable).parent}:{SEARCH_PATH}",
        "LANG": "C.UTF-8",
        "IPYTHONDIR": f"{tmp}/ipython",
        "JUPYTER_RUNTIME_DIR": f"{tmp}/jupyter-runtime",
        "MPLCONFIGDIR": f"{tmp}/matplotlib",
        "NBGRADER_EXECUTION": "autograde",
    }
    return [f"{name}={value}" for name, value in environment.items()]


def _processes_of_this_user() -> int:
    """How many processes this user runs now (RLIMIT_NPROC counts them all)."""
    uid = os.getuid()
    return sum(1 for status in Path("/proc").glob("[0-9]*") if _owner(status) == uid)


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


def python_paths(packages: tuple[str, ...] = ("autograder", "course_database")) -> tuple[str, ...]:
    """Folders the kernel needs to read: the interpreter, the environment, our packages."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for name in packages:
        module = __import__(name)
        paths.update(str(Path(p).resolve()) for p in module.__path__)
    return tuple(sorted(p for p in paths if not p.startswith(SYSTEM_FOLDERS)))


def make_policy(
    memory_bytes: int,
    cpu_seconds: int,
    processes: int = 128,
    disk_bytes: int = 100 * 1024**2,
    isolate: bool = True,
) -> SandboxPolicy:
    """A policy for this Python installation, with a cgroup per kernel where one can be made."""
    hierarchy, _ = find_hierarchy()
    return SandboxPolicy(
        memory_bytes, cpu_seconds, processes, disk_bytes, python_paths(), isolate, hierarchy
    )


def sandbox_problem(policy: SandboxPolicy, scratch: Path) -> str | None:
    """Why `policy` cannot isolate a kernel here (None when it can): start Python inside it."""
    if shutil.which("prlimit") is None:
        return "prlimit (util-linux) is not installed"
    if not policy.isolate:
        return "isolation was switched off"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    scratch.mkdir(parents=True, exist_ok=True)
    command = policy.wrap([sys.executable, "-c", "import ipykernel"], str(scratch), str(scratch))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap could not start: {error}"
    if result.returncode != 0:
        return f"bubblewrap could not start: {result.stderr.strip() or result.returncode}"
    return None


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager that launches the kernel inside a `SandboxPolicy`, over ipc."""

    policy = Any(help="The SandboxPolicy the kernel runs under.")
    workdir = Unicode(help="The kernel's working folder, the only one it may write to.")
    runtime_dir = Unicode(help="Folder for the connection file and the ipc sockets.")
    cgroup_procs = List(Unicode(), help="The cgroup.procs files the kernel joins.")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.transport = "ipc"
        self.ip = str(Path(self.runtime_dir) / "kernel")
        self.connection_file = str(Path(self.runtime_dir) / "kernel.json")

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        """The kernelspec's command, wrapped in the sandbox."""
        command = super().format_kernel_cmd(extra_arguments)
        return self.policy.wrap(command, self.workdir, self.runtime_dir, tuple(self.cgroup_procs))

    async def start_kernel(self, **kwargs: object) -> None:
        """Start the kernel with its stdout and stderr discarded (outputs go over ZeroMQ),
        killed when the process that starts it dies."""
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        kwargs.setdefault("preexec_fn", _die_with_parent)
        await super().start_kernel(**kwargs)

    def client(self, **kwargs: object) -> AsyncKernelClient:
        """A client whose sockets refuse a message past MAX_MESSAGE_BYTES (a kernel that sends
        one is disconnected), so that no single message fills the grader's memory."""
        client = super().client(**kwargs)
        client.context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        return client

    async def interrupt_kernel(self) -> None:
        """Interrupt by message: a SIGINT would stop bubblewrap, which forwards no signals."""
        self.kernel_spec.interrupt_mode = "message"
        await super().interrupt_kernel()
