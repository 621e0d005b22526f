"""Where submissions come from: an LMS zip, nbgrader's exchange inbound folder, submitted/."""

from __future__ import annotations

import resource
import signal
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import nbformat
import pytest
from test_grading_helpers import (
    ASSIGNMENT,
    changed_paths,
    make_course,
    solved,
    tree_digest,
)

from autograder.cli import main
from autograder.course import Submission
from autograder.submissions import (
    SubmissionsError,
    find_submissions,
    marked_late,
    unpack_lms_zip,
)

MOODLE = "_assignsubmission_file_"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    return make_course(tmp_path_factory.mktemp("inputs") / "course")


def test_an_lms_zip_is_unpacked_into_submitted(course, tmp_path):
    notebook = nbformat.writes(solved(course))
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("doejane_1201_98765_hw.ipynb", notebook)  # Canvas
        bundle.writestr("smithjohn_LATE_1202_98766_hw-1.ipynb", notebook)  # Canvas resubmission
        bundle.writestr("Mary Major_1203_assignsubmission_file_/hw.ipynb", notebook)  # Moodle
        bundle.writestr("Bo Plain/hw.ipynb", notebook)  # a plain folder per student
    unpacked = unpack_lms_zip(course, archive, "zipped")
    found = [Submission(s, "zipped") for s in ("bo-plain", "doejane-1201", "mary-major-1203")]
    found.insert(3, Submission("smithjohn-1202", "zipped"))
    assert unpacked.updated == found
    assert unpacked.skipped == []
    for submission in found:
        path = course.folder("submitted", submission) / "hw.ipynb"
        assert path.read_text() == notebook
    assert find_submissions(course, assignment="zip*", student="*j*") == found[1:]
    assert marked_late(course, Submission("smithjohn-1202", "zipped")) == "Canvas"
    assert marked_late(course, Submission("doejane-1201", "zipped")) is None


def test_a_participant_renamed_in_the_lms_keeps_the_student_id(course, tmp_path):
    for number, (login, text) in enumerate([("doejane", "first"), ("roejane", "second")]):
        archive = tmp_path / f"{number}.zip"
        with zipfile.ZipFile(archive, "w") as bundle:
            date = (2026, 11, 20 + number, 10, 0, 0)
            bundle.writestr(zipfile.ZipInfo(f"{login}_4242_{number}_hw.ipynb", date), text)
            bundle.writestr(zipfile.ZipInfo(f"Ann Lee_{7 + number}{MOODLE}/hw.ipynb", date), text)
        unpack_lms_zip(course, archive, "renamed")
    folder = course.root / "submitted" / "doejane-4242" / "renamed"
    assert (folder / "hw.ipynb").read_text() == "second"
    assert (folder / "timestamp.txt").read_text() == "2026-11-21 10:00:00.000000 UTC"
    assert find_submissions(course, "renamed") == [
        Submission(student, "renamed") for student in ("ann-lee-7", "ann-lee-8", "doejane-4242")
    ]


def test_a_broken_zip_is_named_in_the_error(course, tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_text("not a zip")
    with pytest.raises(SubmissionsError, match="broken.zip: not a readable zip file"):
        unpack_lms_zip(course, archive, ASSIGNMENT)


def test_an_export_with_nothing_usable_says_why_each_member_was_skipped(course, tmp_path):
    archive = tmp_path / "unusable.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_BZIP2) as bundle:
        bundle.writestr("bz_8_9_hw.ipynb", "x")
        bundle.writestr("notes.txt", "x", compress_type=zipfile.ZIP_STORED)
    with pytest.raises(SubmissionsError) as error:
        unpack_lms_zip(course, archive, "unusable")
    assert str(error.value).endswith(
        "or one folder per student); bz_8_9_hw.ipynb: compressed with a method LMS exports do "
        "not use (only stored or deflated); notes.txt: an unrecognised name (not Canvas's "
        "login_userid_fileid_name, not in a folder)"
    )


def test_every_skipped_member_is_named_with_its_reason(course, tmp_path):
    archive = tmp_path / "hostile.zip"
    link = zipfile.ZipInfo("linker_5_6_hw.ipynb")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(
            zipfile.ZipInfo(f"Eve Doe_7{MOODLE}/hw.ipynb", (2026, 11, 20, 10, 0, 0)), "{}"
        )
        bundle.writestr(f"Eve Doe_7{MOODLE}/timestamp.txt", "2000-01-01 00:00:00 UTC")
        bundle.writestr("../escape.ipynb", "x")
        bundle.writestr("Eve Doe_7_assignsubmission_file_/../../../escape.ipynb", "x")
        bundle.writestr("/tmp/course-grade-absolute.ipynb", "x")
        bundle.writestr("C:\\Users\\escape.ipynb", "x")
        bundle.writestr("..\\..\\escape.ipynb", "x")
        bundle.writestr("__MACOSX/._hw.ipynb", "x")
        bundle.writestr("Eve Doe_7_assignsubmission_file_/.git/config", "x")
        bundle.writestr("readme.txt", "x")
        bundle.writestr(link, "../../../../etc/passwd")
        bundle.writestr("Eve Doe_7_assignsubmission_file_/secret.ipynb", "x")
        bundle.getinfo("Eve Doe_7_assignsubmission_file_/secret.ipynb").flag_bits |= 0x1
        bundle.writestr("bz_8_9_hw.ipynb", "x", compress_type=zipfile.ZIP_BZIP2)
    before = tree_digest(course.root)
    unpacked = unpack_lms_zip(course, archive, "hostile")
    assert unpacked.updated == [Submission("eve-doe-7", "hostile")]
    assert unpacked.skipped == [
        (
            f"Eve Doe_7{MOODLE}/timestamp.txt",
            "a timestamp.txt of its own (the export's date is used)",
        ),
        ("../escape.ipynb", "a path out of the export (..)"),
        ("Eve Doe_7_assignsubmission_file_/../../../escape.ipynb", "a path out of the export (..)"),
        ("/tmp/course-grade-absolute.ipynb", "an absolute path"),
        ("C:\\Users\\escape.ipynb", "an absolute path"),
        ("..\\..\\escape.ipynb", "a path out of the export (..)"),
        ("__MACOSX/._hw.ipynb", "a hidden file"),
        ("Eve Doe_7_assignsubmission_file_/.git/config", "a hidden file"),
        (
            "readme.txt",
            "an unrecognised name (not Canvas's login_userid_fileid_name, not in a folder)",
        ),
        ("linker_5_6_hw.ipynb", "a symbolic link"),
        ("Eve Doe_7_assignsubmission_file_/secret.ipynb", "encrypted"),
        (
            "bz_8_9_hw.ipynb",
            "compressed with a method LMS exports do not use (only stored or deflated)",
        ),
    ]
    folder = "submitted/eve-doe-7/hostile"
    assert changed_paths(before, tree_digest(course.root)) == {
        f"{folder}/hw.ipynb",
        f"{folder}/timestamp.txt",
    }
    timestamp = course.root / folder / "timestamp.txt"
    assert timestamp.read_text() == "2026-11-20 10:00:00.000000 UTC"
    assert not Path("/tmp/course-grade-absolute.ipynb").exists()
    assert not (course.root.parent / "escape.ipynb").exists()


def deflated_zeros(mebibytes: int) -> tuple[bytes, int]:
    """A raw deflate stream of `mebibytes` MiB of zero bytes and their CRC-32, built at once
    (zipfile would take seconds to compress a gigabyte)."""
    zeros = bytes(1024**2)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(zeros, crc)
    return block * mebibytes + compressor.flush(), crc


def write_raw_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """A zip of deflated members (name, deflate stream, CRC-32, declared size), dated
    2026-11-20: the sizes in its headers are whatever the caller declares."""
    date = (2026 - 1980) << 9 | 11 << 5 | 20
    local, central = bytearray(), bytearray()
    for name, data, crc, size in members:
        encoded = name.encode()
        central += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, date, crc, len(data), size,
            len(encoded), 0, 0, 0, 0, 0, len(local),
        )  # fmt: skip
        central += encoded
        local += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, date, crc, len(data), size, len(encoded), 0
        )
        local += encoded + data
    count = len(members)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))


def disk_bytes(root: Path) -> int:
    return sum(path.lstat().st_blocks * 512 for path in root.rglob("*"))


def collect_zip(course, archive: Path, assignment: str, capsys) -> tuple[int, str]:
    """`course-grade collect --zip` unable to write a file over 25 MiB (writing more fails
    with EFBIG); its exit code and what it printed."""
    limit = 25 * 1024**2
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        code = main(
            ["collect", "--course-dir", str(course.root), "--zip", str(archive)]
            + ["--assignment", assignment]
        )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    return code, " ".join(capsys.readouterr().err.split())


def test_a_gigabyte_member_is_cut_off_at_the_member_limit_and_nothing_big_is_written(
    course, tmp_path, capsys
):
    archive = tmp_path / "bomb.zip"
    gigabyte, crc = deflated_zeros(1024)
    write_raw_zip(
        archive,
        [
            ("bomber_31_1_hw.ipynb", gigabyte, crc, 1024**3),
            ("liar_32_1_hw.ipynb", gigabyte, crc, 1000),  # its header says 1000 bytes
            ("honest_33_1_hw.ipynb", *deflated_zeros(1), 1024**2),
        ],
    )
    assert archive.stat().st_size < 2_200_000
    before, used = tree_digest(course.root), disk_bytes(course.root)
    code, output = collect_zip(course, archive, "bombed", capsys)
    assert code == 0, output
    assert "bomber_31_1_hw.ipynb │ larger than the limit of 20 MB" in output
    assert "liar_32_1_hw.ipynb │ unreadable (Bad CRC-32 for file 'liar_32_1_hw.ipynb')" in output
    assert "1 submissions new or resubmitted, 0 unchanged, 2 skipped" in output
    folder = "submitted/honest-33/bombed"
    assert changed_paths(before, tree_digest(course.root)) == {
        f"{folder}/hw.ipynb",
        f"{folder}/timestamp.txt",
        ".course-grade/canvas-ids/honest-33",  # the Canvas user id, for the Canvas grade export
    }
    assert disk_bytes(course.root) - used < 2 * 1024**2


def test_an_export_unpacking_past_its_ratio_is_refused_whole(course, tmp_path, capsys):
    archive = tmp_path / "ratio.zip"
    stream, crc = deflated_zeros(15)  # under the member limit, 15 MiB from about 15 KB
    write_raw_zip(archive, [(f"many_{n}_1_hw.ipynb", stream, crc, 15 * 1024**2) for n in range(8)])
    before = tree_digest(course.root)
    code, output = collect_zip(course, archive, "ratio", capsys)
    assert code == 2
    assert "refused as a zip bomb, nothing unpacked" in output
    assert changed_paths(before, tree_digest(course.root)) == set()


def test_the_newest_exchange_submission_is_collected(course):
    inbound = course.root / "exchange" / course.coursedir.course_id / "inbound"
    for stamp, body in (
        ("2026-11-20 09:00:00.000000 UTC", "old"),
        ("2026-11-20 11:00:00.000000 UTC", "new"),
    ):
        folder = inbound / f"eve+{ASSIGNMENT}+{stamp}+abc{body}"
        folder.mkdir(parents=True)
        (folder / "hw.ipynb").write_text(body)
        (folder / "timestamp.txt").write_text(stamp)
    assert (
        main(
            ["collect", "--course-dir", str(course.root), "--assignment", ASSIGNMENT, "--exchange"]
        )
        == 0
    )
    collected = course.root / "submitted" / "eve" / ASSIGNMENT
    assert (collected / "hw.ipynb").read_text() == "new"


def test_a_link_in_the_exchange_is_never_followed(course, tmp_path):
    """A student's inbound folder linking to an instructor's file: the rest is collected, the
    link's target is not copied into submitted/."""
    secret = tmp_path / "instructor-secret.txt"
    secret.write_text("the instructor's secret")
    stamp = "2026-11-20 09:00:00.000000 UTC"
    inbound = course.root / "exchange" / course.coursedir.course_id / "inbound"
    folder = inbound / f"mallory+{ASSIGNMENT}+{stamp}+abc"
    folder.mkdir(parents=True)
    (folder / "hw.ipynb").write_text("answers")
    (folder / "timestamp.txt").write_text(stamp)
    (folder / "notes.txt").symlink_to(secret)
    command = ["collect", "--course-dir", str(course.root), "--assignment", ASSIGNMENT]
    assert main([*command, "--exchange"]) == 0
    collected = course.root / "submitted" / "mallory" / ASSIGNMENT
    assert (collected / "hw.ipynb").read_text() == "answers"
    assert not (collected / "notes.txt").exists()
    assert all("secret" not in path.read_text() for path in collected.rglob("*") if path.is_file())
