"""Run a student's kernel where it can do no harm: bubblewrap for isolation, prlimit for limits.

Inside the sandbox the kernel sees the system's programs and libraries, the Python
installation and the packages it may import (all read-only), its own working folder and a
private runtime folder for the ZeroMQ ipc sockets. It does not see the course folder
(source/, the gradebook, other submissions) or the instructor's home, and it has no
network: only the ipc transport (Unix sockets in a shared folder) links it to the grader.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Any, Unicode

SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")


@dataclass(frozen=True)
class SandboxPolicy:
    """What a kernel may see and use. `isolate=False` means prlimit only (no bubblewrap)."""

    memory_bytes: int
    cpu_seconds: int
    read_only: tuple[str, ...] = field(default_factory=tuple)
    isolate: bool = True

    def wrap(self, command: list[str], workdir: str, runtime_dir: str) -> list[str]:
        """The kernel `command` run under the limits and, when `isolate`, inside bubblewrap."""
        limited = [
            "prlimit",
            f"--as={self.memory_bytes}",
            f"--cpu={self.cpu_seconds}:{self.cpu_seconds + 1}",
            "--core=0",
            "--",
            *command,
        ]
        if not self.isolate:
            return limited
        return [*self._bwrap_arguments(workdir, runtime_dir), "--", *limited]

    def _bwrap_arguments(self, workdir: str, runtime_dir: str) -> list[str]:
        arguments = ["bwrap", "--unshare-all", "--die-with-parent"]
        for folder in SYSTEM_FOLDERS:
            path = Path(folder)
            if path.is_symlink():
                arguments += ["--symlink", str(path.readlink()), folder]
            elif path.is_dir():
                arguments += ["--ro-bind", folder, folder]
        arguments += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for path in self.read_only:
            arguments += ["--ro-bind", path, path]
        arguments += ["--bind", workdir, workdir, "--bind", runtime_dir, runtime_dir]
        arguments += ["--chdir", workdir, "--clearenv"]
        environment = {
            "HOME": workdir,
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "IPYTHONDIR": "/tmp/ipython",
            "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
            "MPLCONFIGDIR": "/tmp/matplotlib",
            "NBGRADER_EXECUTION": "autograde",
        }
        for name, value in environment.items():
            arguments += ["--setenv", name, value]
        return arguments


def python_paths(packages: tuple[str, ...] = ("autograder",)) -> tuple[str, ...]:
    """Folders the kernel needs to read: the interpreter, the environment, our packages."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for name in packages:
        module = __import__(name)
        paths.update(str(Path(p).resolve()) for p in module.__path__)
    return tuple(sorted(p for p in paths if not p.startswith(SYSTEM_FOLDERS)))


def make_policy(memory_bytes: int, cpu_seconds: int, isolate: bool = True) -> SandboxPolicy:
    """A policy for this Python installation."""
    return SandboxPolicy(memory_bytes, cpu_seconds, python_paths(), isolate)


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

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.transport = "ipc"
        self.ip = str(Path(self.runtime_dir) / "kernel")
        self.connection_file = str(Path(self.runtime_dir) / "kernel.json")

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        """The kernelspec's command, wrapped in the sandbox."""
        command = super().format_kernel_cmd(extra_arguments)
        return self.policy.wrap(command, self.workdir, self.runtime_dir)

    async def start_kernel(self, **kwargs: object) -> None:
        """Start the kernel with its stdout and stderr discarded (outputs go over ZeroMQ)."""
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        await super().start_kernel(**kwargs)

    async def interrupt_kernel(self) -> None:
        """Interrupt by message: a SIGINT would stop bubblewrap, which forwards no signals."""
        self.kernel_spec.interrupt_mode = "message"
        await super().interrupt_kernel()
