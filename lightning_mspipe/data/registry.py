"""Public data sets by name: download once into a cache with ``pooch``, then read with ``load_events``.

The cache holds each published file under its own name (``<cache>/wikipedia.csv``,
``<cache>/uci.zip``); a zip archive is unpacked beside it (``<cache>/uci/ml_uci.csv``). A file put
there by hand is used as it is, so the data sets also work with no network.

Checksums: none of the registered files has a published checksum, and the copies in
``../shared/datasets`` are not byte-identical to them (the Wikipedia copy lacks JODIE's 172
feature columns; the UCI and Enron copies are members of another archive, not Zenodo's zip; the
US Legis copy is a different source file). So every entry has ``sha256=None``, and files are
trusted on first use (:mod:`~lightning_mspipe.data.checksums`): the first download (or the first
use of a file saved by hand) records the file's SHA-256 in ``<cache>/<file>.sha256.json``, and
every later use checks the file against it (hashing it again only when its size or modification
time changed), and so does a later download of the same file. A known hash, the entry's
``sha256`` or one given to :func:`load_dataset`, takes the recorded one's place and is checked on
download and on every use. An archive is checked; the members unpacked from it are not.
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlparse

from lightning_mspipe.data.checksums import check_sha256, verify_file
from lightning_mspipe.data.events import EventStream
from lightning_mspipe.data.formats import load_events

__all__ = ["DATASETS", "DataSet", "DataSetUnavailableError", "default_cache_dir", "load_dataset"]

log = logging.getLogger(__name__)

CACHE_ENV = "MSPIPE_DATA"
MIRROR_ENV = "MSPIPE_DATA_URL"
_JODIE = "http://snap.stanford.edu/jodie/"
_ZENODO = "https://zenodo.org/records/7213796/files/"  # DyGLib / Poursafaei et al., NeurIPS 2022
_SCHEMES = ("http", "https", "ftp", "file")


class DataSetUnavailableError(OSError):
    """Raised when a registered data set is neither in the cache nor downloadable."""


@dataclass(frozen=True)
class DataSet:
    """A public data set: where its file is published and how to read it.

    Args:
        name: The name :func:`load_dataset` takes.
        base_url: The folder the file is published in (a mirror replaces it).
        file: The published file's name, also its name in the cache and in a mirror.
        read: The file to read, relative to the cache: ``file`` itself, or a member of the
            ``file`` archive.
        source: Who published the data (named when the file cannot be had).
        read_options: Keyword arguments for :func:`~lightning_mspipe.data.load_events`.
        members: Archive members to unpack (empty: ``file`` is read as it is).
        sha256: The file's known SHA-256, checked on download and on every use, or ``None`` when
            none is known (the hash of the first copy is then recorded and checked from then on).
    """

    name: str
    base_url: str
    file: str
    read: str
    source: str
    read_options: Mapping[str, Any] = field(default_factory=dict)
    members: tuple[str, ...] = ()
    sha256: str | None = None

    def url(self, mirror: str | None = None) -> str:
        """The file's URL at ``mirror`` (a base URL or a folder), or where it is published."""
        base = self.base_url if mirror is None else mirror
        return base.rstrip("/") + "/" + self.file


def _jodie(name: str) -> DataSet:
    return DataSet(
        name=name,
        base_url=_JODIE,
        file=f"{name}.csv",
        read=f"{name}.csv",
        read_options={"format": "jodie"},
        source="JODIE, Kumar et al. KDD 2019",
    )


def _dyglib(name: str, archive: str, **read_options: Any) -> DataSet:
    """A DyGLib set: Zenodo's ``<archive>.zip`` holds ``<archive>/ml_<archive>.csv``, ``.npy`` and
    ``_node.npy`` (the members DyGLib's ``preprocess_data.py`` reads)."""
    members = tuple(f"{archive}/ml_{archive}{suffix}" for suffix in (".csv", ".npy", "_node.npy"))
    return DataSet(
        name=name,
        base_url=_ZENODO,
        file=f"{archive}.zip",
        read=members[0],
        read_options={"format": "ml", **read_options},
        members=members,
        source="DyGLib's processed data, Poursafaei et al. NeurIPS 2022, Zenodo record 7213796",
    )


_NO_FEATURES = {"edge_features": False, "node_features": False}  # DyGLib's tables are all zeros
DATASETS: Mapping[str, DataSet] = MappingProxyType(
    {
        **{name: _jodie(name) for name in ("wikipedia", "reddit", "mooc", "lastfm")},
        "uci": _dyglib("uci", "uci", **_NO_FEATURES),
        "enron": _dyglib("enron", "enron", **_NO_FEATURES),
        "uslegis": _dyglib("uslegis", "USLegis", node_features=False),  # the edge feature is the weight
    }
)
"""The registered data sets by name."""


def default_cache_dir() -> Path:
    """``$MSPIPE_DATA`` if set, else the user cache folder of ``lightning-mspipe`` (by ``pooch``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(_pooch().os_cache("lightning-mspipe"))


def load_dataset(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    **read_options: Any,
) -> EventStream:
    """Read a registered public data set, downloading it into the cache on first use.

    Args:
        name: A key of :data:`DATASETS` (``wikipedia``, ``reddit``, ``mooc``, ``lastfm``, ``uci``,
            ``enron``, ``uslegis``).
        cache_dir: Where files are kept (default :func:`default_cache_dir`).
        url: A mirror: a base URL, a ``file://`` URL or a folder holding the published file under
            its own name (default ``$MSPIPE_DATA_URL``, else where the file is published).
        sha256: The SHA-256 the file must have (over the registry's), checked on download and
            on every use; default: the registry's, else the one recorded at first use.
        **read_options: Options for :func:`~lightning_mspipe.data.load_events`, over the
            registry's (for example ``edge_features=True`` for DyGLib's zero tables).

    Returns:
        The events, named ``name``.

    Memory: the whole file is downloaded, then parsed as by ``load_events``; JODIE's Reddit
    file is about 1.5 GB of text. Cost: a downloaded file, or a cached one whose size or
    modification time changed since it was last hashed, is hashed once (a few seconds per GB).

    Raises:
        ValueError: an unknown name (the message lists the known ones), a mirror URL with an
            unknown scheme, or a ``sha256`` that is not 64 hex digits.
        ChecksumError: (a ``ValueError``) the file's SHA-256 is not the known or recorded one; the
            message names the file, both hashes and what to do (a download is not kept).
        DataSetUnavailableError: the file is not in the cache and cannot be downloaded; the
            message gives the URL and the path to save the file at by hand.
        ModuleNotFoundError: ``pooch`` is not installed.
    """
    entry = DATASETS.get(name)
    if entry is None:
        known = ", ".join(DATASETS)
        raise ValueError(
            f"`load_dataset`: unknown data set {name!r}; the data sets are {known} (TGB's tgbl-* sets load with "
            "`TemporalDataModule(name=...)` or `load_tgb`)."
        )
    cache = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()).resolve()
    if sha256 is not None:
        expected = check_sha256(sha256, f"`load_dataset`: {name}: sha256")
        expected_from = "the one given (`sha256=`)"
    else:
        expected, expected_from = entry.sha256, f"the registered one (DATASETS[{name!r}].sha256)"
    _fetch(entry, entry.url(url or os.environ.get(MIRROR_ENV) or None), cache, expected, expected_from)
    options = {**entry.read_options, **read_options}
    return load_events(cache / entry.read, **options).with_name(name)


def _fetch(entry: DataSet, location: str, cache: Path, expected: str | None, expected_from: str) -> None:
    """Download ``entry.file`` from ``location`` into ``cache`` unless it is there, check its SHA-256
    (:func:`~lightning_mspipe.data.checksums.verify_file`), then unpack its members."""
    pooch = _pooch()
    scheme = urlparse(location).scheme
    local = scheme in ("", "file") or len(scheme) == 1  # a path, or a Windows drive letter
    if not local and scheme not in _SCHEMES:
        raise ValueError(
            f"`load_dataset`: {entry.name}: cannot download {location}; give a mirror URL with one of the "
            f"schemes {', '.join(_SCHEMES)}, or a folder."
        )
    target = cache / entry.file
    downloaded = not target.is_file()
    if downloaded:
        _download(pooch, entry, location, cache, local)
    verify_file(
        target,
        expected=expected,
        expected_from=expected_from,
        downloaded_from=location if downloaded else None,
        what=f"`load_dataset`: {entry.name}",
    )
    if entry.members:
        try:  # a fresh download is unpacked again; a cached archive only when members are missing
            pooch.Unzip(members=list(entry.members), extract_dir=str(cache))(
                str(target), "download" if downloaded else "fetch", None
            )
        except (OSError, zipfile.BadZipFile) as error:
            raise DataSetUnavailableError(
                f"`load_dataset`: cannot unpack {entry.name} from {target} "
                f"({type(error).__name__}: {error}). "
                f"Delete {target} to download it again."
            ) from error


def _download(pooch: Any, entry: DataSet, location: str, cache: Path, local: bool) -> None:
    """Download ``entry.file`` from ``location`` to ``cache`` with ``pooch`` (not verified here)."""
    log.info("load_dataset: %s: downloading %s to %s", entry.name, location, cache / entry.file)
    pooch_log = pooch.get_logger()
    level = pooch_log.level
    pooch_log.setLevel(logging.WARNING)  # pooch prints every download to stderr; we log it above
    try:
        downloader = _copy_local if local else None
        pooch.retrieve(location, known_hash=None, fname=entry.file, path=cache, downloader=downloader)
    except Exception as error:  # noqa: BLE001 - any failure to get the file gets the same advice
        raise DataSetUnavailableError(
            f"`load_dataset`: cannot get {entry.name} ({entry.source}) from {location} "
            f"({type(error).__name__}: {error}). "
            f"Download it by hand and save it as {cache / entry.file}, or pass `url=` "
            f"(or set ${MIRROR_ENV}) to a mirror holding {entry.file}."
        ) from error
    finally:
        pooch_log.setLevel(level)


def _copy_local(url: str, output_file: str, pooch: object) -> None:
    """A ``pooch`` downloader for ``file://`` URLs and plain paths."""
    parsed = urlparse(url)
    shutil.copyfile(unquote(parsed.path) if parsed.scheme == "file" else url, output_file)


def _pooch() -> Any:
    try:
        import pooch
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "`load_dataset` downloads with pooch, which is not installed; "
            "run `pip install 'lightning-mspipe[datasets]'` (or `pip install pooch`)."
        ) from error
    return pooch
