"""SHA-256 checks of cached files, trusted on first use and recorded beside each file.

A file ``<cache>/<name>`` gets a sidecar ``<cache>/<name>.sha256.json`` holding its SHA-256, the
size and modification time (ns) it had when it was last hashed, and where it came from. The hash
a file must have is, in this order: a hash the caller knows (a registered or user-given one),
else the one recorded in the sidecar at the file's first use (trust on first use), else none (the
file's hash is then recorded). :func:`verify_file` checks a file against it and refreshes the
sidecar.

Cost: a file whose size and modification time are those recorded is not hashed again (so a
later use costs one ``stat``); any other file is read once, in 1 MiB chunks (a few seconds per
GB). A change that keeps both size and modification time is not seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "ChecksumError", "ChecksumRecord", "check_sha256", "file_sha256", "read_record", "sidecar_path",
    "verify_file",
]

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256.json"
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ChecksumError(ValueError):
    """A file's SHA-256 is not the one it must have (or its sidecar cannot be read)."""


@dataclass(frozen=True)
class ChecksumRecord:
    """What a sidecar holds about its file.

    Args:
        sha256: The file's SHA-256 (64 lower-case hex digits).
        size: The file's size in bytes when it was hashed.
        mtime_ns: The file's modification time (ns) when it was hashed.
        source: Where the file came from when its hash was first recorded (``"downloaded from <URL>"``
            or ``"found in the cache"``).
    """

    sha256: str
    size: int
    mtime_ns: int
    source: str

    def describes(self, stat: os.stat_result) -> bool:
        """Whether a file with this ``stat`` is the one hashed (same size and modification time)."""
        return (self.size, self.mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def sidecar_path(path: Path) -> Path:
    """The sidecar of ``path``: ``<path>.sha256.json``."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def check_sha256(value: str, what: str) -> str:
    """``value`` in lower case when it is a SHA-256 (64 hex digits).

    Raises:
        ValueError: it is not (the message names ``what`` and shows how to compute one).
    """
    digest = value.strip().lower()
    if not _HEX64.fullmatch(digest):
        raise ValueError(
            f"{what}: {value!r} is not a SHA-256 (64 hex digits); compute one with `sha256sum FILE`."
        )
    return digest


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, read in 1 MiB chunks (memory: one chunk)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_record(path: Path) -> ChecksumRecord | None:
    """The sidecar record of ``path``, or ``None`` when it has none.

    Raises:
        ChecksumError: the sidecar exists but is not a record (the message says to delete it).
    """
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        fields = json.loads(sidecar.read_text())
        record = ChecksumRecord(
            sha256=check_sha256(fields["sha256"], str(sidecar)), size=int(fields["size"]),
            mtime_ns=int(fields["mtime_ns"]), source=str(fields["source"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ChecksumError(
            f"{sidecar} is not a checksum record ({type(error).__name__}: {error}); delete it to record "
            f"the hash of {path.name} again."
        ) from error
    return record


def _write_record(path: Path, record: ChecksumRecord) -> None:
    """Replace the sidecar of ``path`` (atomically); a cache that cannot be written is only logged."""
    sidecar = sidecar_path(path)
    partial = sidecar.with_name(sidecar.name + ".part")
    try:
        partial.write_text(json.dumps(asdict(record), indent=1) + "\n")
        os.replace(partial, sidecar)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        log.warning(
            "cannot record the SHA-256 of %s in %s (%s); it is hashed again on every use", path, sidecar, error
        )


def verify_file(
    path: Path,
    *,
    expected: str | None = None,
    expected_from: str = "",
    downloaded_from: str | None = None,
    what: str,
) -> str:
    """Check the file at ``path`` against the hash it must have, and record its hash in the sidecar.

    The hash it must have is ``expected`` when given, else the one in its sidecar, else none (the
    file is trusted and its hash recorded). A file that matches ``expected`` but not its sidecar
    (replaced by the right file) is recorded anew.

    Args:
        path: The file.
        expected: Its known SHA-256 (lower case), or ``None``.
        expected_from: Where ``expected`` comes from, for the error message
            (``"the registered SHA-256"``).
        downloaded_from: The URL the file was just downloaded from, or ``None`` for a file already
            in the cache. A downloaded file is always hashed, and deleted on a mismatch.
        what: The message's prefix (``"`load_dataset`: wikipedia"``).

    Returns:
        The file's SHA-256.

    Raises:
        ChecksumError: the hash differs (the message names the file, both hashes and what to do),
            or the sidecar is unreadable.
    """
    record = read_record(path)
    stat = path.stat()
    known = record is not None and downloaded_from is None and record.describes(stat)
    actual = record.sha256 if known else file_sha256(path)
    if expected is not None:
        want, origin = expected, expected_from
    elif record is not None:
        want = record.sha256
        origin = f"the one recorded in {sidecar_path(path)} at its first use ({record.source})"
    else:
        want, origin = None, ""
    if want is not None and actual != want:
        if downloaded_from is not None:
            path.unlink()
        raise ChecksumError(_mismatch(path, actual, want, origin, downloaded_from, expected is None, what))
    if not known:
        if record is not None and record.sha256 == actual:
            first = record.source
        else:
            first = "found in the cache" if downloaded_from is None else f"downloaded from {downloaded_from}"
        if record is None:
            log.info("%s: recorded the SHA-256 of %s (%s) in %s", what, path, actual, sidecar_path(path))
        _write_record(path, ChecksumRecord(actual, stat.st_size, stat.st_mtime_ns, first))
    return actual


def _mismatch(
    path: Path, actual: str, want: str, origin: str, downloaded_from: str | None, pinned: bool, what: str
) -> str:
    """The one-line message for a file whose hash is not ``want`` (a downloaded one was deleted)."""
    sidecar = sidecar_path(path)
    if downloaded_from is None:
        trust = f", or delete {sidecar} to trust this copy" if pinned else ""
        return (
            f"{what}: {path} has SHA-256 {actual}, but {origin} is {want}. "
            f"Delete {path} to download it again{trust}."
        )
    trust = f"; if the published file changed, delete {sidecar} to trust the new one" if pinned else ""
    return (
        f"{what}: the file downloaded from {downloaded_from} has SHA-256 {actual}, but {origin} is {want}. "
        f"It was not kept; check the mirror, or save the right file as {path}{trust}."
    )
