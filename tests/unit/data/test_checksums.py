"""SHA-256 checks trusted on first use (lightning_mspipe/data/checksums.py), on local files only."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from lightning_mspipe.data import checksums
from lightning_mspipe.data.checksums import ChecksumError, read_record, sidecar_path, verify_file

WHAT = "`load_dataset`: test"


def _file(path: Path, content: bytes = b"u,i,ts\n0,1,2\n") -> tuple[Path, str]:
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_a_file_without_a_record_is_trusted_and_recorded(tmp_path):
    path, digest = _file(tmp_path / "events.csv")
    assert verify_file(path, what=WHAT) == digest
    record = read_record(path)
    stat = path.stat()
    assert sidecar_path(path) == tmp_path / "events.csv.sha256.json"
    assert (record.sha256, record.size, record.mtime_ns) == (digest, stat.st_size, stat.st_mtime_ns)
    assert record.source == "found in the cache"


def test_an_unchanged_file_is_not_hashed_again(tmp_path, monkeypatch):
    path, digest = _file(tmp_path / "events.csv")
    verify_file(path, downloaded_from="file:///mirror/events.csv", what=WHAT)

    def no_hashing(_: Path) -> str:
        raise AssertionError("the file was hashed again")

    monkeypatch.setattr(checksums, "file_sha256", no_hashing)
    assert verify_file(path, what=WHAT) == digest
    assert verify_file(path, expected=digest, expected_from="the registered one", what=WHAT) == digest


def test_a_touched_file_is_hashed_again_and_its_record_refreshed(tmp_path):
    path, digest = _file(tmp_path / "events.csv")
    verify_file(path, downloaded_from="file:///mirror/events.csv", what=WHAT)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # copied, same bytes
    assert verify_file(path, what=WHAT) == digest
    record = read_record(path)
    assert record.mtime_ns == stat.st_mtime_ns + 10**9
    assert record.source == "downloaded from file:///mirror/events.csv"  # where it first came from stays


def test_a_changed_file_differs_from_its_record(tmp_path):
    path, digest = _file(tmp_path / "events.csv")
    verify_file(path, what=WHAT)
    stat = path.stat()
    _, changed = _file(path, b"u,i,ts\n0,1,3\n")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later time, even on a coarse clock
    sidecar = sidecar_path(path)
    with pytest.raises(ChecksumError) as error:
        verify_file(path, what=WHAT)
    assert str(error.value) == (
        f"{WHAT}: {path} has SHA-256 {changed}, but the one recorded in {sidecar} at its first use "
        f"(found in the cache) is {digest}. Delete {path} to download it again, or delete {sidecar} to trust this copy."
    )
    assert path.is_file(), "a cached file is not deleted"


def test_a_download_that_differs_from_the_expected_hash_is_deleted(tmp_path):
    path, digest = _file(tmp_path / "events.csv")
    expected = "a" * 64
    with pytest.raises(ChecksumError) as error:
        verify_file(path, expected=expected, expected_from="the registered one", downloaded_from="URL", what=WHAT)
    assert str(error.value) == (
        f"{WHAT}: the file downloaded from URL has SHA-256 {digest}, but the registered one is {expected}. "
        f"It was not kept; check the mirror, or save the right file as {path}."
    )
    assert not path.exists() and not sidecar_path(path).exists()


def test_a_file_replaced_by_the_expected_one_is_recorded_anew(tmp_path):
    path, _ = _file(tmp_path / "events.csv")
    verify_file(path, what=WHAT)
    _, right = _file(path, b"the right file\n")
    assert verify_file(path, expected=right, expected_from="the one given (`sha256=`)", what=WHAT) == right
    assert read_record(path).sha256 == right
    assert verify_file(path, what=WHAT) == right  # and the record serves from now on


def test_an_unreadable_sidecar_says_to_delete_it(tmp_path):
    path, _ = _file(tmp_path / "events.csv")
    sidecar_path(path).write_text("not json")
    with pytest.raises(ChecksumError, match=re.escape(f"{sidecar_path(path)} is not a checksum record (JSONDecodeError")):
        verify_file(path, what=WHAT)


def test_a_cache_that_cannot_be_written_still_verifies(tmp_path, monkeypatch, caplog):
    path, digest = _file(tmp_path / "events.csv")

    def read_only(*_: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(checksums.os, "replace", read_only)
    assert verify_file(path, expected=digest, expected_from="the registered one", what=WHAT) == digest
    assert [p.name for p in tmp_path.iterdir()] == ["events.csv"]  # no sidecar, nothing half-written
    assert "cannot record the SHA-256 of" in caplog.text and "hashed again on every use" in caplog.text


@pytest.mark.parametrize("value", ["abc", "g" * 64, "a" * 63])
def test_a_sha256_must_be_64_hex_digits(value):
    with pytest.raises(ValueError, match=re.escape(f"sha256: {value!r} is not a SHA-256 (64 hex digits)")):
        checksums.check_sha256(value, "sha256")
