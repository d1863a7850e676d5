"""Read event files (JODIE, TGN/DyGLib ``ml_``, TGL, delimited edge lists) into :class:`EventStream`.

Each format's reader returns raw columns; the shared parts (plain or gzipped files, column look-up,
feature tables, id mapping, errors naming the file) live in ``_Source``, ``_features``, ``_to_stream``.
"""

from __future__ import annotations

import gzip
import inspect
import io
import logging
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lightning_mspipe.data.events import EventStream, EventStreamError

__all__ = ["FORMATS", "load_events"]

log = logging.getLogger(__name__)

Column = str | int  # a column name, or a 0-based position
FeatureFile = bool | str | Path  # True: the file beside the events, if any; False: none; else a path
_GZIP_MAGIC = b"\x1f\x8b"
_TIME_HINT = " Pass `time_format=` ('numeric', 'datetime' for ISO 8601, or a pattern like '%d/%m/%Y')."


@dataclass
class _Columns:
    """Raw per-event columns a reader hands to :func:`_to_stream` (ids may still be raw names)."""

    src: np.ndarray
    dst: np.ndarray
    t: np.ndarray
    edge_feat: np.ndarray | None = None
    label: np.ndarray | None = None
    node_feat: np.ndarray | None = None
    num_nodes: int | None = None

    def take(self, keep: np.ndarray) -> _Columns:
        per_event = ("src", "dst", "t", "edge_feat", "label")
        return replace(self, **{f: getattr(self, f)[keep] for f in per_event if getattr(self, f) is not None})


@dataclass
class _Source:
    """An event file: opens it plain or gzipped and words every error with its name."""

    path: Path
    gz: bool
    head: list[str]  # the first non-blank lines, for sniffing

    @classmethod
    def open(cls, path: str | Path) -> _Source:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"`load_events`: no such file: {path} (resolved to {path.resolve()}).")
        with path.open("rb") as raw:
            gz = raw.read(2) == _GZIP_MAGIC
        source = cls(path, gz, [])
        try:
            with gzip.open(path, "rt", errors="replace") if gz else path.open(errors="replace") as text:
                source.head = [line.rstrip("\r\n") for line in islice(filter(str.strip, text), 8)]
        except (OSError, EOFError) as err:  # a truncated or corrupt .gz
            raise source.error(f"cannot be read ({err}).") from err
        if not source.head:
            raise source.error("the file is empty (no header and no events).")
        return source

    @property
    def name(self) -> str:
        return self.path.name

    def error(self, problem: str) -> EventStreamError:
        return EventStreamError(f"`load_events`: {self.name}: {problem}")

    def read_csv(self, **kwargs: object) -> pd.DataFrame:
        try:
            frame = pd.read_csv(self.path, compression="gzip" if self.gz else None, **kwargs)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise self.error(f"cannot be parsed as a table ({str(err).strip()}).") from err
        if len(frame) == 0:
            raise self.error("the file has a header but no events.")
        return frame

    def label_of(self, frame: pd.DataFrame, key: Column, role: str) -> Hashable:
        """The frame's label for ``key``: a column name, or a 0-based position."""
        if isinstance(key, str) and key in frame.columns:
            return key
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < frame.shape[1]:
            return frame.columns.tolist()[key]  # a Python int or str, not a NumPy scalar
        columns = ", ".join(repr(c) for c in frame.columns)
        raise self.error(
            f"{role} column {key!r} does not exist; the columns are {columns}. "
            "Name a column from the header, or give its 0-based position."
        )

    def numbers(self, series: pd.Series, role: str, hint: str = "") -> np.ndarray:
        """``series`` as a numeric array; missing values stay NaN, text raises naming the event."""
        values = pd.to_numeric(series, errors="coerce")
        bad = (values.isna() & series.notna()).to_numpy()
        if bad.any():
            row = int(bad.argmax())
            raise self.error(f"{role} of event {row} is {series.iloc[row]!r}, not a number.{hint}")
        return values.to_numpy()

    def matrix(self, frame: pd.DataFrame, labels: Sequence[Hashable]) -> np.ndarray | None:
        """The feature columns ``labels`` as ``[E, len(labels)]`` float32, or ``None`` when there are none."""
        if not labels:
            return None
        return np.stack([self.numbers(frame[c], f"feature {c!r}") for c in labels], 1).astype(np.float32)

    def sidecar(self, option: FeatureFile, beside: str, what: str) -> Path | None:
        """A feature file: ``True`` looks for ``beside`` (or ``beside.gz``) next to the events and
        accepts none, ``False`` skips it, a path must exist."""
        if option is True:
            found = [p for p in (self.path.parent / beside, self.path.parent / f"{beside}.gz") if p.is_file()]
            return found[0] if found else None
        if option is False:
            return None
        if not Path(option).is_file():
            raise FileNotFoundError(f"`load_events`: {self.name}: {what} file {option} does not exist.")
        return Path(option)


def _load_table(path: Path, source: _Source) -> np.ndarray:
    """Load a ``.npy`` / ``.pt`` feature table (optionally gzipped) as a 2-D array ``[rows, D]``."""
    with path.open("rb") as raw:
        data = raw.read()
    data = gzip.decompress(data) if data[:2] == _GZIP_MAGIC else data
    kind = path.name.removesuffix(".gz").rsplit(".", 1)[-1]
    if kind == "npy":
        table = np.load(io.BytesIO(data), allow_pickle=False)
    elif kind == "pt":
        table = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(table, torch.Tensor):
            raise source.error(f"{path.name} holds a {type(table).__name__}, not a tensor of features.")
        table = table.detach().float().numpy() if table.dtype == torch.bfloat16 else table.detach().numpy()
    else:
        raise source.error(f"feature file {path.name} is neither .npy nor .pt (optionally .gz).")
    return table.reshape(len(table), -1) if table.ndim != 2 else table


def _features(
    source: _Source,
    cols: _Columns,
    edge_path: Path | None,
    edge_row: np.ndarray,
    node_path: Path | None,
    skip: int,
) -> _Columns:
    """Attach edge features (row ``edge_row[e]`` of the edge table for event ``e``) and node features
    (the node table minus ``skip`` padding rows; its length fixes ``num_nodes``)."""
    edge_row = edge_row.astype(np.int64)
    if edge_path is not None:
        table = _load_table(edge_path, source)
        bad = (edge_row < 0) | (edge_row >= len(table))
        if bad.any():
            row = int(bad.argmax())
            raise source.error(
                f"edge features {edge_path.name} have {len(table)} rows, but event {row} needs row "
                f"{int(edge_row[row])}. The table needs a row for every edge index."
            )
        cols = replace(cols, edge_feat=table[edge_row].astype(np.float32, copy=False))
    if node_path is not None:
        table = _load_table(node_path, source)[skip:]
        top = max(int(np.nanmax(cols.src)), int(np.nanmax(cols.dst)))
        if top >= len(table):
            raise source.error(
                f"node features {node_path.name} cover {len(table)} nodes (after {skip} padding rows), "
                f"but the events use node {top + skip} (in the file's numbering)."
            )
        cols = replace(cols, node_feat=table, num_nodes=len(table))
    return cols


# ---------------------------------------------------------------------------------------- readers
def _read_jodie(source: _Source, *, shift_items: bool | None = None) -> _Columns:
    """JODIE CSV ``user_id,item_id,timestamp,state_label,features...``, read by position."""
    frame = source.read_csv(header=None, skiprows=1)  # positional: the header may be shorter than the rows
    if frame.shape[1] < 4:
        raise source.error(f"has {frame.shape[1]} columns; JODIE needs user,item,timestamp,label[,features].")
    user, item, t, label = (source.numbers(frame[c], r) for c, r in enumerate(("user", "item", "t", "label")))
    if shift_items is None:  # shift only when the id ranges overlap (PyG's JODIEDataset always shifts)
        shift_items = bool(np.nanmin(item) <= np.nanmax(user))
        log.info(
            "load_events: %s: item ids %s", source.name, ["kept", "shifted after the users"][shift_items]
        )
    item = item + np.nanmax(user) + 1 if shift_items else item
    return _Columns(user, item, t, source.matrix(frame, frame.columns[4:].tolist()), label)


def _read_ml(
    source: _Source, *, edge_features: FeatureFile = True, node_features: FeatureFile = True
) -> _Columns:
    """TGN/DyGLib ``ml_<name>.csv`` (1-based ids; row 0 of both feature tables is padding)."""
    frame = source.read_csv(index_col=0)
    u, i, ts, label, idx = (
        source.numbers(frame[source.label_of(frame, c, "ml")], c) for c in ("u", "i", "ts", "label", "idx")
    )
    for role, ids in (("u", u), ("i", i)):
        if (ids < 1).any():
            row = int((ids < 1).argmax())
            raise source.error(f"`{role}` of event {row} is {ids[row]:g}; ml_ ids start at 1 (0 is padding).")
    base = re.sub(r"\.csv(\.gz)?$", "", source.name)
    edge = source.sidecar(edge_features, f"{base}.npy", "edge-feature")
    node = source.sidecar(node_features, f"{base}_node.npy", "node-feature")
    return _features(source, _Columns(u - 1, i - 1, ts, label=label), edge, idx, node, skip=1)


def _read_tgl(
    source: _Source, *, edge_features: FeatureFile = True, node_features: FeatureFile = True
) -> _Columns:
    """TGL ``edges.csv``; event ``e`` takes edge-feature row ``eid[e]`` (the unnamed first column)."""
    frame = source.read_csv()
    src, dst, t = (source.numbers(frame[source.label_of(frame, c, "TGL")], c) for c in ("src", "dst", "time"))
    unnamed = str(frame.columns[0]).startswith("Unnamed")
    eid = source.numbers(frame.iloc[:, 0], "edge index") if unnamed else np.arange(len(frame))
    edge = source.sidecar(edge_features, "edge_features.pt", "edge-feature")
    node = source.sidecar(node_features, "node_features.pt", "node-feature")
    return _features(source, _Columns(src, dst, t), edge, eid, node, skip=0)


def _read_edgelist(
    source: _Source,
    *,
    src: Column = 0,
    dst: Column = 1,
    time: Column = 2,
    features: Sequence[Column] | None = None,
    label: Column | None = None,
    sep: str | None = None,
    header: bool | None = None,
    time_format: str = "auto",
) -> _Columns:
    """Any delimited table; see :func:`load_events` for the options."""
    if time_format not in ("auto", "numeric", "datetime") and "%" not in time_format:
        raise source.error(f"unknown time_format={time_format!r}.{_TIME_HINT}")
    sep = sep or _sniff_sep(source.head)
    if header is None:
        header = _sniff_header(source, sep, src, dst, time)
    frame = source.read_csv(sep=sep, header=0 if header else None, skipinitialspace=True)
    keys = {"src": src, "dst": dst, "time": time} | ({} if label is None else {"label": label})
    used = {role: source.label_of(frame, key, role) for role, key in keys.items()}
    if features is None:
        rest = [c for c in frame.columns if c not in used.values()]
        feat_cols = [c for c in rest if pd.api.types.is_numeric_dtype(frame[c])]
        if len(feat_cols) < len(rest):
            log.info("load_events: %s: non-numeric columns %s are not features", source.name, rest)
    else:
        feat_cols = [source.label_of(frame, key, "feature") for key in features]
    ids = {role: frame[used[role]] for role in ("src", "dst")}
    for role, column in ids.items():
        if column.isna().any():
            raise source.error(f"`{role}` of event {int(column.isna().to_numpy().argmax())} is missing.")
    numeric = all(pd.api.types.is_numeric_dtype(c) for c in ids.values())
    # names: both columns as text, so that "7" and 7 are one node
    src_ids, dst_ids = (c.to_numpy() if numeric else c.astype(str).to_numpy(object) for c in ids.values())
    lab = None if label is None else source.numbers(frame[used["label"]], "label")
    t = _parse_time(source, frame[used["time"]], time_format)
    return _Columns(src_ids, dst_ids, t, source.matrix(frame, feat_cols), lab)


def _sniff_sep(head: list[str]) -> str:
    """Comma if every sniffed line has one outside quotes, else tab, else any run of whitespace."""
    unquoted = [re.sub(r'"[^"]*"', "", line) for line in head]
    for sep in (",", "\t"):
        if all(sep in line for line in unquoted):
            return sep
    return r"\s+"


def _sniff_header(source: _Source, sep: str, *keys: Column) -> bool:
    """A header exists when a column is given by name, or when the first row's time field is
    neither a number nor a date."""
    if any(isinstance(k, str) for k in keys):
        return True
    first = pd.read_csv(io.StringIO(source.head[0]), sep=sep, header=None, dtype=str, nrows=1)
    time = keys[-1]
    if not 0 <= time < first.shape[1]:
        return False  # the column look-up reports the bad position
    value = first.iloc[:, time]
    is_number = pd.to_numeric(value, errors="coerce").notna().all()
    return not (is_number or pd.to_datetime(value, errors="coerce", format="ISO8601").notna().all())


def _parse_time(source: _Source, column: pd.Series, time_format: str) -> np.ndarray:
    """Times as float64: numbers as they are, dates (ISO 8601 or a strftime ``time_format``) as Unix
    seconds, naive dates read as UTC."""
    first = column.dropna().iloc[:1]  # in "auto" mode the first time decides: number or date
    numeric = pd.api.types.is_numeric_dtype(column) or pd.to_numeric(first, errors="coerce").notna().all()
    if time_format == "numeric" or (time_format == "auto" and numeric):
        return source.numbers(column, "time", _TIME_HINT).astype(np.float64)
    pattern = "ISO8601" if time_format in ("auto", "datetime") else time_format
    stamps = pd.to_datetime(column, errors="coerce", format=pattern, utc=True)
    bad = (stamps.isna() & column.notna()).to_numpy()
    if bad.any():
        row = int(bad.argmax())
        raise source.error(
            f"time of event {row} is {column.iloc[row]!r}, not a date ({pattern}).{_TIME_HINT}"
        )
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(np.float64)


_READERS: dict[str, Callable[..., _Columns]] = {
    "edgelist": _read_edgelist,
    "jodie": _read_jodie,
    "ml": _read_ml,
    "tgl": _read_tgl,
}
FORMATS: tuple[str, ...] = ("auto", *_READERS)


def _detect(source: _Source) -> tuple[str, str]:
    """Pick a format from the file name and first line; return it with the reason."""
    stem = source.name.removesuffix(".gz")
    header = [f.strip().strip('"').lower() for f in source.head[0].split(",")]
    if re.fullmatch(r"ml_.+\.csv", stem):
        return "ml", "the file is named ml_<name>.csv (TGN/DyGLib)"
    if header[:6] == ["", "u", "i", "ts", "label", "idx"]:
        return "ml", "the header is ',u,i,ts,label,idx' (TGN/DyGLib)"
    if {"src", "dst", "time", "ext_roll"} <= set(header):
        return "tgl", "the header has src, dst, time and ext_roll (TGL edges.csv)"
    if header[0] == "user_id" or header[:4] == ["u", "i", "ts", "label"]:
        return "jodie", f"the header starts with {','.join(header[:4])!r} (JODIE)"
    return "edgelist", "neither the name nor the first line matches ml, tgl or jodie"


def _to_stream(
    cols: _Columns, source: _Source, remap: bool, drop_self_loops: bool, sort: bool
) -> EventStream:
    """Drop self-loops, map ids to ``0 … N−1`` where asked or needed, and build the stream."""
    if drop_self_loops:
        cols = cols.take(cols.src != cols.dst)
    src, dst, node_ids, node_feat, num_nodes = cols.src, cols.dst, None, cols.node_feat, cols.num_nodes
    named = src.dtype == object or dst.dtype == object
    if not named and all(np.isfinite(a).all() and (a == np.floor(a)).all() for a in (src, dst)):
        src, dst = src.astype(np.int64), dst.astype(np.int64)
    if remap or named:  # codes in order of first appearance, reading src, dst, src, dst, ...
        codes, uniques = pd.factorize(np.column_stack([src, dst]).ravel())
        src, dst, node_ids, num_nodes = codes[0::2], codes[1::2], np.asarray(uniques), len(uniques)
        node_ids = node_ids.astype(str) if named else node_ids
        node_feat = None if node_feat is None else node_feat[node_ids]
    elif src.dtype.kind == "i" and dst.dtype.kind == "i" and len(src):  # else EventStream names the bad id
        for role, ids in (("src", src), ("dst", dst)):
            if (ids < 0).any():
                row = int((ids < 0).argmax())
                raise source.error(
                    f"`{role}` of event {row} is {ids[row]}; node ids must be ≥ 0. "
                    "Pass `remap=True` to map any ids to 0…N−1."
                )
        top, used = int(max(src.max(), dst.max())), len(pd.unique(np.concatenate([src, dst])))
        if 2 * used < top + 1:
            log.warning(
                "load_events: %s: ids reach %d but %d occur; remap=True packs them", source.name, top, used
            )
    tensors = dict(
        src=_tensor(src), dst=_tensor(dst), t=_tensor(cols.t, np.float64), label=_tensor(cols.label)
    )
    tensors |= dict(edge_feat=_tensor(cols.edge_feat, np.float32), node_feat=_tensor(node_feat, np.float32))
    return EventStream(**tensors, num_nodes=num_nodes, node_ids=node_ids, name=source.name, sort=sort)


def _tensor(array: np.ndarray | None, dtype: type | None = None) -> torch.Tensor | None:
    """A tensor over ``array`` (copied only when pandas handed out a read-only or strided view)."""
    return None if array is None else torch.from_numpy(np.require(array, dtype, requirements=["C", "W"]))


def load_events(
    path: str | Path,
    format: str = "auto",
    *,
    sort: bool = False,
    remap: bool = False,
    drop_self_loops: bool = False,
    **options: object,
) -> EventStream:
    """Read an event file (plain or gzipped, detected from its first bytes) into an :class:`EventStream`.

    Formats (``format="auto"`` picks one from the file name and first line and logs which and why at
    INFO: ``ml_*.csv`` or header ``,u,i,ts,label,idx`` → ``ml``; a header with ``src,dst,time,ext_roll``
    → ``tgl``; a header starting ``user_id`` or ``u,i,ts,label`` → ``jodie``; else → ``edgelist``):

    - ``jodie``: ``user_id,item_id,timestamp,state_label,features...`` (read by position). Items get ids
      after the users (``item + max(user) + 1``, as PyG's ``JODIEDataset``). Option ``shift_items``:
      ``None`` (default) shifts only when the id ranges overlap (``min(item) <= max(user)``), so a file
      whose items already follow the users (our Wikipedia copy, ``u,i,ts,label``) is kept as it is.
    - ``ml``: TGN/DyGLib ``ml_<name>.csv`` (``,u,i,ts,label,idx``) with ``ml_<name>.npy`` and
      ``ml_<name>_node.npy`` beside it. Ids become 0-based; both tables lose their padding row 0;
      event ``e`` takes edge-feature row ``idx[e]``.
    - ``tgl``: TGL ``edges.csv`` (``,src,dst,time,ext_roll``; the roll is ignored) with
      ``edge_features.pt`` and ``node_features.pt`` beside it, indexed by the unnamed edge-id column.
    - ``edgelist``: a delimited table. Options: ``src``/``dst``/``time`` (column names or 0-based
      positions, default 0, 1, 2); ``features`` (columns of edge features; default every other numeric
      column); ``label`` (a label column); ``sep`` (default: comma, else tab, else whitespace, sniffed
      outside quotes); ``header`` (default: a header exists when a column is given by name or the first
      row's time field is neither a number nor a date); ``time_format`` (``"auto"``, ``"numeric"``,
      ``"datetime"`` for ISO 8601, or a strftime pattern; dates become Unix seconds, naive ones as UTC).

    ``ml`` and ``tgl`` take ``edge_features`` / ``node_features``: ``True`` (use the file beside the
    events if present), ``False`` (skip), or a path (``.npy`` or ``.pt``, optionally ``.gz``).

    Ids: non-negative integer ids are kept as they are (``num_nodes = max id + 1``, so a 1-based file
    has an unused node 0). Text ids (names, for example) are mapped to ``0 … N−1`` in order of first
    appearance (reading ``src``, ``dst`` row by row) with ``node_ids`` holding the raw names;
    ``remap=True`` does the same for integer ids (``node_ids`` then holds the raw ids, and node
    features follow their nodes).

    Args:
        path: The event file.
        format: One of :data:`FORMATS`.
        sort: Sort the events by time (stable) instead of raising on unsorted times.
        remap: Map ids to ``0 … N−1`` in order of first appearance.
        drop_self_loops: Drop events with ``src == dst`` (before any remapping).
        **options: The options of the format (above); an option the format does not take raises.

    Returns:
        The events, named after the file so that every error message names it.

    Shapes:
        - src, dst: ``[E]`` int64; t: ``[E]`` float64; edge_feat: ``[E, D_e]`` float32
        - node_feat: ``[N, D_n]`` float32; node_ids: ``[N]`` (raw ids or names)

    Memory: the file is parsed into one pandas frame; feature tables are read whole before the
    per-event rows are gathered (``ml`` tables are float64 on disk).

    Raises:
        FileNotFoundError: ``path`` or an explicitly given feature file does not exist.
        TypeError: an option the format does not take.
        EventStreamError: an unknown format, an empty or unparsable file, a missing column, text
            where numbers belong, negative or non-integer ids, feature tables too short for the
            events, unsorted times without ``sort=True``, NaN or infinite times.
    """
    source = _Source.open(path)
    if format == "auto":
        format, why = _detect(source)
        log.info("load_events: %s: reading it as format %r because %s.", source.name, format, why)
    reader = _READERS.get(format)
    if reader is None:
        raise source.error(f"unknown format {format!r}; the formats are {', '.join(map(repr, FORMATS))}.")
    accepted = [p for p in inspect.signature(reader).parameters if p != "source"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"`load_events`: format {format!r} takes no option {', '.join(map(repr, unknown))} "
            f"({source.name}); its options are {', '.join(map(repr, accepted)) or 'none'}, "
            "plus sort, remap and drop_self_loops."
        )
    cols = reader(source, **options)
    return _to_stream(cols, source, remap, drop_self_loops, sort)
