"""Reading and writing course folders without ever following a link a student could plant.

Every folder is reached from a trusted folder (the course root, a kernel's own folder) one
component at a time with O_NOFOLLOW, and every file is opened with O_NOFOLLOW: a symbolic
link anywhere below the trusted folder is refused, never followed, whoever made it and
whenever. Copies take regular files only (no links, hard links, devices, fifos or sockets),
refuse sparse files, and stop at a byte budget; each refusal comes back as a reason.
Writes go to a new file (O_EXCL) renamed over the old name, so they never write through a link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1024 * 1024
SPARSE_MIN_BYTES = 1024 * 1024  # smaller files are never called sparse (filesystems round)
MAX_ENTRIES = 1000  # files and folders a copy takes from a student or a kernel


class _TooManyEntries(Exception):
    """A copy met more entries than it may take."""


class UnsafePath(OSError):
    """A path below a trusted folder that goes through a link or is not a folder."""


@contextlib.contextmanager
def open_folder(path: Path, trusted: Path, create: bool = False) -> Iterator[int]:
    """A descriptor of `path`, reached from `trusted` without following any link below it.

    `trusted` itself may be reached through links (the instructor's choice); with `create`,
    missing folders below it are made."""
    relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(trusted))
    descriptor = os.open(trusted, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in relative.parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=descriptor)
            try:
                child = os.open(part, FOLDER_FLAGS, dir_fd=descriptor)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise UnsafePath(f"{path}: {part} is a link or not a folder") from None
            os.close(descriptor)
            descriptor = child
        yield descriptor
    finally:
        os.close(descriptor)


def read_file_no_follow(path: Path, trusted: Path) -> bytes:
    """The content of regular file `path` (below `trusted`), refusing links on the way."""
    with open_folder(path.parent, trusted) as folder:
        try:
            handle = os.open(path.name, READ_FLAGS, dir_fd=folder)
        except OSError as error:
            raise UnsafePath(f"{path.name} is a link or not readable ({error.strerror})") from None
        with os.fdopen(handle, "rb") as stream:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode):
                raise UnsafePath(f"{path.name} is not a regular file")
            return stream.read()


def write_file_no_follow(path: Path, data: bytes | str, trusted: Path) -> None:
    """Write `data` to `path` (below `trusted`) atomically, never through a link."""
    content = data.encode() if isinstance(data, str) else data
    with open_folder(path.parent, trusted, create=True) as folder:
        temporary = f".{path.name}.{uuid.uuid4().hex[:8]}.partial"
        handle = os.open(temporary, CREATE_FLAGS, 0o644, dir_fd=folder)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(content)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            raise


def remove_no_follow(path: Path, trusted: Path) -> None:
    """Remove what is at `path` (a file, a link or a folder tree) without following a link."""
    with open_folder(path.parent, trusted, create=True) as parent:
        try:
            os.unlink(path.name, dir_fd=parent)
        except IsADirectoryError:
            shutil.rmtree(path.name, dir_fd=parent)
        except FileNotFoundError:
            pass


def copy_regular_files(
    source: int,
    destination: int,
    limit_bytes: int | None = None,
    skip: Callable[[PurePosixPath], bool] = lambda path: False,
    limit_entries: int | None = MAX_ENTRIES,
    hard_links: bool = False,
) -> list[str]:
    """Copy the regular files below folder descriptor `source` into `destination`.

    Anything else (a link, a hard-linked file, a device, fifo or socket), a sparse file and
    a file that would take the total past `limit_bytes` is left out; paths for which `skip`
    is true are left out silently; the copy stops after `limit_entries` files and folders.
    `hard_links` accepts hard-linked files (made by the instructor's backups, say, not by a
    kernel). Returns one reason per file left out."""
    copy = _TreeCopy(limit_bytes, skip, limit_entries, hard_links)
    try:
        copy.folder(source, destination, PurePosixPath())
    except _TooManyEntries:
        copy.refused.append(f"more than {limit_entries} files and folders: the rest not copied")
    return copy.refused


@dataclass
class _TreeCopy:
    bytes_left: int | None
    skip: Callable[[PurePosixPath], bool]
    entries_left: int | None
    hard_links: bool
    refused: list[str] = field(default_factory=list)

    def folder(self, source: int, destination: int, relative: PurePosixPath) -> None:
        for entry in sorted(os.scandir(source), key=lambda entry: entry.name):
            path = relative / entry.name
            if self.skip(path):
                continue
            if self.entries_left is not None:
                if self.entries_left == 0:
                    raise _TooManyEntries
                self.entries_left -= 1
            if not entry.is_dir(follow_symlinks=False):
                reason = self.file(source, destination, entry.name)
                if reason:
                    self.refused.append(f"{path} not copied: {reason}")
                continue
            with contextlib.suppress(FileExistsError):
                os.mkdir(entry.name, 0o755, dir_fd=destination)
            try:
                inner = os.open(entry.name, FOLDER_FLAGS, dir_fd=source)
                target = os.open(entry.name, FOLDER_FLAGS, dir_fd=destination)
            except OSError:
                self.refused.append(f"{path}/ not copied: a link, or changed while copied")
                continue
            try:
                self.folder(inner, target, path)
            finally:
                os.close(inner)
                os.close(target)

    def file(self, source: int, destination: int, name: str) -> str | None:
        """Copy one regular file; the reason it was refused, or None."""
        try:
            handle = os.open(name, READ_FLAGS, dir_fd=source)
        except OSError as error:
            if error.errno == errno.ELOOP:
                return "a symbolic link"
            return f"not a readable regular file ({error.strerror})"
        with os.fdopen(handle, "rb") as stream:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode):
                return "not a regular file (a device, fifo or socket)"
            if info.st_nlink > 1 and not self.hard_links:
                return "a hard link to another file"
            if info.st_size > SPARSE_MIN_BYTES and info.st_blocks * 512 < info.st_size // 2:
                return f"a sparse file ({info.st_size} bytes, {info.st_blocks * 512} on disk)"
            if self.bytes_left is not None and info.st_size > self.bytes_left:
                return f"{info.st_size} bytes, over the size budget ({self.bytes_left} bytes left)"
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(name, dir_fd=destination)
            try:
                target = os.open(name, CREATE_FLAGS, 0o644, dir_fd=destination)
            except OSError as error:
                return f"could not be written ({error.strerror})"
            with os.fdopen(target, "wb") as out:
                copied = self.bounded(stream, out)
            if copied is None:
                os.unlink(name, dir_fd=destination)
                return "grew past the size budget while being copied"
        if self.bytes_left is not None:
            self.bytes_left -= copied
        return None

    def bounded(self, stream: BinaryIO, out: BinaryIO) -> int | None:
        """Bytes copied, or None when there were more than the budget allows."""
        copied = 0
        while chunk := stream.read(CHUNK):
            copied += len(chunk)
            if self.bytes_left is not None and copied > self.bytes_left:
                return None
            out.write(chunk)
        return copied
