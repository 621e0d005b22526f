"""safe_files: only regular files are copied, links are never followed, refusals have reasons."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from autograder.safe_files import (
    UnsafePath,
    copy_regular_files,
    open_folder,
    read_file_no_follow,
    remove_no_follow,
    write_file_no_follow,
)


def copy(source: Path, destination: Path, limit: int | None = None) -> list[str]:
    with open_folder(source, source) as a, open_folder(destination, destination) as b:
        return copy_regular_files(a, b, limit)


@pytest.fixture
def folders(tmp_path):
    source, destination = tmp_path / "kernel", tmp_path / "staging"
    (source / "sub").mkdir(parents=True)
    destination.mkdir()
    return tmp_path, source, destination


def test_regular_files_and_folders_are_copied(folders):
    _, source, destination = folders
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.txt").write_text("b")
    assert copy(source, destination) == []
    assert (destination / "sub" / "b.txt").read_text() == "b"


def test_everything_but_a_regular_file_is_refused_with_its_reason(folders):
    tmp_path, source, destination = folders
    (tmp_path / "outside").mkdir()
    (source / "to-file").symlink_to("/etc/passwd")
    (source / "to-folder").symlink_to(tmp_path / "outside")
    os.mkfifo(source / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(source / "socket"))
    (source / "one").write_text("x")
    os.link(source / "one", source / "two")
    with open(source / "sparse", "wb") as handle:
        handle.truncate(10 * 1024**2)
    assert copy(source, destination) == [
        "fifo not copied: not a regular file (a device, fifo or socket)",
        "one not copied: a hard link to another file",
        "socket not copied: not a readable regular file (No such device or address)",
        "sparse not copied: a sparse file (10485760 bytes, 0 on disk)",
        "to-file not copied: a symbolic link",
        "to-folder not copied: a symbolic link",
        "two not copied: a hard link to another file",
    ]
    server.close()
    assert sorted(p.name for p in destination.iterdir()) == ["sub"]


def test_files_past_the_budget_are_refused(folders):
    _, source, destination = folders
    for name in "abc":
        (source / name).write_bytes(b"x" * 400)
    assert copy(source, destination, limit=1000) == [
        "c not copied: 400 bytes, over the size budget (200 bytes left)"
    ]


def test_a_copy_replaces_a_link_at_the_destination_instead_of_writing_through_it(folders):
    tmp_path, source, destination = folders
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (destination / "a.txt").symlink_to(victim)
    (source / "a.txt").write_text("overwritten?")
    assert copy(source, destination) == []
    assert victim.read_text() == "mine"
    assert not (destination / "a.txt").is_symlink()


def test_writes_and_reads_refuse_links_on_the_way(folders):
    tmp_path, _, destination = folders
    (destination / "link").symlink_to(tmp_path)
    (destination / "victim.txt").symlink_to(tmp_path / "planted.txt")
    with pytest.raises(UnsafePath):
        write_file_no_follow(destination / "link" / "planted.txt", "x", tmp_path)
    write_file_no_follow(destination / "victim.txt", "x", tmp_path)  # replaces the link
    assert not (tmp_path / "planted.txt").exists()
    with pytest.raises(UnsafePath):
        read_file_no_follow(destination / "link" / "staging" / "victim.txt", tmp_path)
    remove_no_follow(destination / "link", tmp_path)
    assert tmp_path.exists() and not (destination / "link").exists()
