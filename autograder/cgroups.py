"""Limits for a kernel and all its children together: one control group (cgroup) per kernel.

`prlimit` limits apply to each process and start afresh in every child; a cgroup counts
the kernel and everything it forks. The grader creates one group per kernel under its own
group (cgroup v2 where memory and pids are delegated to it, else cgroup v1's memory, pids
and cpuacct hierarchies), caps memory and processes there, and reads the group's CPU time
and its memory and process-limit events (the grader's KernelWatch kills a kernel past
them). Where neither is usable (no write access, no delegation) `find_hierarchy` says why
and the kernel runs with per-process limits only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_names = itertools.count()


@dataclass(frozen=True)
class Hierarchy:
    """Where this process may create groups: controller name -> parent folder."""

    version: int
    parents: dict[str, Path]

    def describe(self) -> str:
        return f"cgroup v{self.version}"


@dataclass(frozen=True)
class Limits:
    """What one kernel and its children may use together."""

    memory_bytes: int
    processes: int
    cpu_seconds: int


def _own_groups() -> dict[str, str]:
    """This process's group per controller ("" for the v2 unified hierarchy)."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path.lstrip("/")
    return groups


def _candidates() -> list[Hierarchy]:
    groups = _own_groups()
    found = []
    unified = next(
        (p for p in (CGROUP_ROOT, CGROUP_ROOT / "unified") if (p / "cgroup.controllers").exists()),
        None,
    )
    if unified is not None and "" in groups:
        parent = unified / groups[""]
        found.append(Hierarchy(2, {"memory": parent, "pids": parent, "cpu": parent}))
    if all(name in groups for name in ("memory", "pids", "cpuacct")):
        parents = {
            name: CGROUP_ROOT / name / groups[name] for name in ("memory", "pids", "cpuacct")
        }
        found.append(Hierarchy(1, parents))
    return found


def find_hierarchy() -> tuple[Hierarchy | None, str]:
    """The cgroup hierarchy a kernel's group can be made in, or None and why not."""
    reasons = []
    for hierarchy in _candidates():
        try:
            group = KernelCgroup(hierarchy, Limits(64 * 1024**2, 8, 1))
        except OSError as error:
            reasons.append(f"{hierarchy.describe()}: {error.strerror or error}")
            continue
        group.remove()
        _remove_groups_of_dead_graders(hierarchy)
        return hierarchy, hierarchy.describe()
    return None, "; ".join(reasons) or "no cgroup hierarchy with memory and pids controllers"


def _remove_groups_of_dead_graders(hierarchy: Hierarchy) -> None:
    """Delete the empty groups a killed grading run left (their kernels died with it)."""
    for parent in set(hierarchy.parents.values()):
        for folder in parent.glob("course-grade-*-*"):
            try:
                os.kill(int(folder.name.split("-")[2]), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            except (ValueError, PermissionError):
                continue


class KernelCgroup:
    """One kernel's group: its limits, its usage, and a way to kill all its processes."""

    def __init__(self, hierarchy: Hierarchy, limits: Limits) -> None:
        self.hierarchy = hierarchy
        self.limits = limits
        name = f"course-grade-{os.getpid()}-{next(_names)}"
        self.folders = {c: parent / name for c, parent in hierarchy.parents.items()}
        self._cpu_start = 0.0
        try:
            for folder in set(self.folders.values()):
                folder.mkdir()
            self._write_limits()
        except OSError:
            self.remove()
            raise

    def _write_limits(self) -> None:
        memory, pids = self.folders["memory"], self.folders["pids"]
        if self.hierarchy.version == 2:
            (memory / "memory.max").write_text(str(self.limits.memory_bytes))
            with contextlib.suppress(FileNotFoundError):  # no swap accounting
                (memory / "memory.swap.max").write_text("0")
        else:
            (memory / "memory.limit_in_bytes").write_text(str(self.limits.memory_bytes))
            with contextlib.suppress(FileNotFoundError, PermissionError):
                (memory / "memory.memsw.limit_in_bytes").write_text(str(self.limits.memory_bytes))
        (pids / "pids.max").write_text(str(self.limits.processes))

    @property
    def procs_files(self) -> tuple[str, ...]:
        """The files a process writes its pid to, to join the group."""
        return tuple(sorted(str(folder / "cgroup.procs") for folder in set(self.folders.values())))

    def cpu_seconds(self) -> float:
        """CPU time used by every process of the group so far."""
        if self.hierarchy.version == 2:
            return _counter(self.folders["cpu"] / "cpu.stat", "usage_usec") / 1e6
        return int((self.folders["cpuacct"] / "cpuacct.usage").read_text()) / 1e9

    def start_clock(self) -> None:
        """Count CPU time from now (a notebook's start)."""
        self._cpu_start = self.cpu_seconds()

    def exceeded(self) -> str | None:
        """Which limit the kernel and its processes went past, or None."""
        try:
            memory_file = "memory.events" if self.hierarchy.version == 2 else "memory.oom_control"
            if _counter(self.folders["memory"] / memory_file, "oom_kill"):
                megabytes = self.limits.memory_bytes // 1024**2
                return f"the kernel and its processes together used more than {megabytes} MB"
            if _counter(self.folders["pids"] / "pids.events", "max"):
                return (
                    f"the kernel tried to run more than {self.limits.processes} processes "
                    "and threads at once"
                )
            if self.cpu_seconds() - self._cpu_start > self.limits.cpu_seconds:
                return (
                    f"the kernel and its processes together used more than "
                    f"{self.limits.cpu_seconds} s of CPU time"
                )
        except OSError:
            return None
        return None

    def kill(self) -> None:
        """Kill every process of the group."""
        for _ in range(100):
            pids = [
                int(pid) for procs in self.procs_files for pid in Path(procs).read_text().split()
            ]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and delete the group."""
        for folder in set(self.folders.values()):
            if folder.exists():
                with contextlib.suppress(OSError):
                    self.kill()
                for _ in range(50):
                    try:
                        folder.rmdir()
                        break
                    except OSError:
                        time.sleep(0.02)


def _counter(path: Path, key: str) -> int:
    """The value of `key` in a flat-keyed cgroup file ("key value" lines)."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0
