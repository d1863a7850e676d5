"""Data sets by name (lightning_mspipe/data/registry.py), with no network: local caches and file:// mirrors."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_mspipe.data import (
    DATASETS,
    ChecksumError,
    DataSetUnavailableError,
    TemporalDataModule,
    load_dataset,
    registry,
)
from lightning_mspipe.data.checksums import read_record

NUM_EVENTS = 600


def _jodie_csv(path: Path) -> Path:
    """A JODIE file: 30 users and 10 items, both numbered from 0, two feature columns."""
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, NUM_EVENTS), rng.integers(0, 10, NUM_EVENTS)
    users[:30], items[:10] = np.arange(30), np.arange(10)  # every id occurs
    lines = ["user_id,item_id,timestamp,state_label,f0,f1"]
    lines += [f"{u},{i},{t}.0,{int(t % 7 == 0)},{u / 10},{i / 10}" for t, (u, i) in enumerate(zip(users, items))]
    path.write_text("\n".join(lines) + "\n")
    return path


def _uci_zip(path: Path, num_events: int = 50) -> Path:
    """DyGLib's ``uci.zip`` layout: ``uci/ml_uci.csv`` (1-based ids) with its two feature tables."""
    rows = [",u,i,ts,label,idx"] + [f"{e},{e % 5 + 1},{e % 3 + 6},{e * 10},0,{e + 1}" for e in range(num_events)]
    edge_feat, node_feat = np.arange(3 * (num_events + 1), dtype=np.float64).reshape(-1, 3), np.zeros((9, 4))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("uci/ml_uci.csv", "\n".join(rows) + "\n")
        for member, table in (("uci/ml_uci.npy", edge_feat), ("uci/ml_uci_node.npy", node_feat)):
            with archive.open(member, "w") as out:
                np.save(out, table)
    return path


def test_a_file_in_the_cache_is_read_without_downloading(tmp_path):
    _jodie_csv(tmp_path / "wikipedia.csv")
    events = load_dataset("wikipedia", cache_dir=tmp_path, url=(tmp_path / "no-mirror").as_uri())
    assert events.name == "wikipedia" and events.num_events == NUM_EVENTS
    assert int(events.src.max()) == 29 and int(events.dst.min()) == 30  # JODIE items follow the users
    assert events.num_nodes == 40 and events.edge_dim == 2 and events.label is not None


def test_a_file_mirror_is_downloaded_unpacked_and_read(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    _uci_zip(mirror / "uci.zip")
    events = load_dataset("uci", cache_dir=cache, url=mirror.as_uri())
    assert (cache / "uci.zip").is_file() and (cache / "uci" / "ml_uci.csv").is_file()
    assert events.name == "uci" and events.num_events == 50 and events.num_nodes == 8
    assert events.edge_feat is None and events.node_feat is None  # DyGLib's zero tables are skipped
    (mirror / "uci.zip").unlink()  # the cached copy serves from now on, and options reach the reader
    with_features = load_dataset("uci", cache_dir=cache, url=mirror.as_uri(), edge_features=True)
    assert with_features.edge_dim == 3 and float(with_features.edge_feat[0, 0]) == 3.0  # row 0 is padding


def test_the_environment_gives_the_cache_and_the_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _jodie_csv(mirror / "mooc.csv")
    monkeypatch.setenv("MSPIPE_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("MSPIPE_DATA_URL", str(mirror))  # a plain folder works as well as file://
    assert registry.default_cache_dir() == tmp_path / "cache"
    assert load_dataset("mooc").num_events == NUM_EVENTS and (tmp_path / "cache" / "mooc.csv").is_file()


def test_an_unavailable_file_says_where_to_put_it(tmp_path):
    missing = (tmp_path / "offline").as_uri()
    with pytest.raises(DataSetUnavailableError) as error:
        load_dataset("uslegis", cache_dir=tmp_path / "cache", url=missing)
    message = str(error.value)
    assert "\n" not in message and message.startswith("`load_dataset`: cannot get uslegis (DyGLib")
    assert f"from {missing}/USLegis.zip (FileNotFoundError" in message
    assert f"save it as {tmp_path / 'cache' / 'USLegis.zip'}, or pass `url=`" in message
    assert not (tmp_path / "cache" / "USLegis.zip").exists()


def test_an_archive_that_does_not_unpack_says_to_delete_it(tmp_path):
    (tmp_path / "enron.zip").write_bytes(b"not a zip archive")
    target = tmp_path / "enron.zip"
    message = f"`load_dataset`: cannot unpack enron from {target} (BadZipFile: File is not a zip file). Delete {target}"
    with pytest.raises(DataSetUnavailableError, match=re.escape(message)):
        load_dataset("enron", cache_dir=tmp_path)


def test_an_unknown_name_lists_the_data_sets():
    known = "wikipedia, reddit, mooc, lastfm, uci, enron, uslegis"
    tgb = "(TGB's tgbl-* sets load with `TemporalDataModule(name=...)` or `load_tgb`)."
    with pytest.raises(ValueError, match=re.escape(f"unknown data set 'wiki'; the data sets are {known} {tgb}") + "$"):
        load_dataset("wiki")


def test_an_unknown_url_scheme_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="cannot download s3://bucket/lastfm.csv; give a mirror URL with one of"):
        load_dataset("lastfm", cache_dir=tmp_path, url="s3://bucket")


def _register_sha256(monkeypatch, name: str, digest: str) -> None:
    """Give the registry's entry ``name`` a known SHA-256 for the test."""
    entry = dataclasses.replace(DATASETS[name], sha256=digest)
    monkeypatch.setattr(registry, "DATASETS", {**DATASETS, name: entry})


@pytest.mark.parametrize("right", [True, False], ids=["matches", "differs"])
def test_a_registered_checksum_is_verified_on_download(right, tmp_path, monkeypatch):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    content = _jodie_csv(mirror / "reddit.csv").read_bytes()
    digest = hashlib.sha256(content if right else content + b"\n").hexdigest()
    _register_sha256(monkeypatch, "reddit", digest)
    if right:
        assert load_dataset("reddit", cache_dir=cache, url=mirror.as_uri()).num_events == NUM_EVENTS
        return
    actual = hashlib.sha256(content).hexdigest()
    with pytest.raises(ChecksumError) as error:
        load_dataset("reddit", cache_dir=cache, url=mirror.as_uri())
    assert str(error.value) == (
        f"`load_dataset`: reddit: the file downloaded from {mirror.as_uri()}/reddit.csv has SHA-256 {actual}, "
        f"but the registered one (DATASETS['reddit'].sha256) is {digest}. It was not kept; check the mirror, "
        f"or save the right file as {cache / 'reddit.csv'}."
    )
    assert not (cache / "reddit.csv").exists(), "a file with the wrong checksum is not kept"


def test_a_registered_checksum_is_verified_on_every_use(tmp_path, monkeypatch):
    path = _jodie_csv(tmp_path / "reddit.csv")
    _register_sha256(monkeypatch, "reddit", hashlib.sha256(path.read_bytes()).hexdigest())
    load_dataset("reddit", cache_dir=tmp_path)
    path.write_text(path.read_text().replace("user_id", "user"))
    with pytest.raises(ChecksumError, match=f"{re.escape(str(path))} has SHA-256 .*, but the registered one"):
        load_dataset("reddit", cache_dir=tmp_path)


def test_the_first_download_is_recorded_and_checked_on_every_later_use(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    content = _jodie_csv(mirror / "mooc.csv").read_bytes()
    load_dataset("mooc", cache_dir=cache, url=mirror.as_uri())
    record = read_record(cache / "mooc.csv")
    assert record.sha256 == hashlib.sha256(content).hexdigest()
    assert record.source == f"downloaded from {mirror.as_uri()}/mooc.csv"
    (cache / "mooc.csv").write_bytes(content.replace(b"user_id", b"user"))  # damaged in the cache
    with pytest.raises(ChecksumError) as error:
        load_dataset("mooc", cache_dir=cache, url=mirror.as_uri())
    path, sidecar = cache / "mooc.csv", cache / "mooc.csv.sha256.json"
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    assert str(error.value) == (
        f"`load_dataset`: mooc: {path} has SHA-256 {actual}, but the one recorded in {sidecar} at its first use "
        f"({record.source}) is {record.sha256}. Delete {path} to download it again, or delete {sidecar} to "
        "trust this copy."
    )
    path.unlink()  # as the message says: the new download matches the record
    assert load_dataset("mooc", cache_dir=cache, url=mirror.as_uri()).num_events == NUM_EVENTS


def test_a_new_download_that_differs_from_the_record_is_not_kept(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    _jodie_csv(mirror / "lastfm.csv")
    load_dataset("lastfm", cache_dir=cache, url=mirror.as_uri())
    (cache / "lastfm.csv").unlink()
    (mirror / "lastfm.csv").write_text((mirror / "lastfm.csv").read_text() + "0,0,999.0,0,0,0\n")
    sidecar = cache / "lastfm.csv.sha256.json"
    with pytest.raises(ChecksumError, match=re.escape(f"if the published file changed, delete {sidecar} to trust")):
        load_dataset("lastfm", cache_dir=cache, url=mirror.as_uri())
    assert not (cache / "lastfm.csv").exists()
    sidecar.unlink()
    assert load_dataset("lastfm", cache_dir=cache, url=mirror.as_uri()).num_events == NUM_EVENTS + 1


def test_a_given_checksum_is_verified(tmp_path):
    path = _jodie_csv(tmp_path / "wikipedia.csv")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_dataset("wikipedia", cache_dir=tmp_path, sha256=digest.upper()).num_events == NUM_EVENTS
    other = "0" * 64
    message = f"{re.escape(str(path))} has SHA-256 {digest}, but the one given \\(`sha256=`\\) is {other}. Delete"
    with pytest.raises(ChecksumError, match=message):
        load_dataset("wikipedia", cache_dir=tmp_path, sha256=other)
    with pytest.raises(ValueError, match="`load_dataset`: wikipedia: sha256: 'abc' is not a SHA-256 \\(64 hex digits\\)"):
        load_dataset("wikipedia", cache_dir=tmp_path, sha256="abc")


def test_the_data_module_passes_a_checksum(tmp_path):
    _jodie_csv(tmp_path / "lastfm.csv")
    with pytest.raises(ChecksumError, match="but the one given"):
        TemporalDataModule(name="lastfm", batch_size=20, read_options={"cache_dir": str(tmp_path), "sha256": "f" * 64})


def test_every_entry_reads_what_its_archive_holds():
    for name, entry in DATASETS.items():
        assert entry.name == name and entry.url().endswith("/" + entry.file)
        assert entry.read == entry.file if not entry.members else entry.read == entry.members[0]
        assert entry.read_options["format"] == ("ml" if entry.members else "jodie")
    assert DATASETS["uslegis"].url() == "https://zenodo.org/records/7213796/files/USLegis.zip"
    assert DATASETS["wikipedia"].url() == "http://snap.stanford.edu/jodie/wikipedia.csv"


def test_the_data_module_takes_a_name(tmp_path):
    _jodie_csv(tmp_path / "lastfm.csv")
    dm = TemporalDataModule(name="lastfm", batch_size=20, read_options={"cache_dir": str(tmp_path)})
    assert dm.events.name == "lastfm" and dm.num_nodes == 40 and dm.edge_dim == 2
    assert dm.hparams.name == "lastfm" and sum(dm.split_sizes().values()) <= NUM_EVENTS
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(batch.src, dm.events.src[dm.split.train[:20]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "x.csv"}, "got `path` and `name`; pass only one of `events`, `path` and `name`."),
        ({"format": "ml"}, r"`format` \('ml'\) applies to `path`; the data set 'wikipedia' is read in its"),
    ],
    ids=["path", "format"],
)
def test_the_data_module_rejects_a_name_with_other_sources(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TemporalDataModule(name="wikipedia", **kwargs)
