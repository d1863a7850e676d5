import gzip
import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_mspipe.data import EventStreamError, load_events
from lightning_mspipe.data.formats import FORMATS


@pytest.fixture(scope="module")
def datasets(datasets_dir: Path) -> Path:
    return datasets_dir


@pytest.fixture(scope="module")
def wikipedia(datasets):
    return load_events(datasets / "wikipedia" / "wikipedia_edges.csv.gz")


@pytest.fixture(scope="module")
def uci(datasets):
    return load_events(datasets / "uci" / "ml_uci.csv.gz")


@pytest.fixture(scope="module")
def collegemsg(datasets):
    return load_events(datasets / "collegemsg" / "CollegeMsg.txt.gz")


@pytest.fixture(scope="module")
def opsahl_path(datasets):
    return datasets / "uci" / "OCnodeslinks_chars.txt.gz"


@pytest.fixture(scope="module")
def opsahl(opsahl_path):
    return load_events(opsahl_path, src=1, dst=2, time=0, drop_self_loops=True)


def _distinct_nodes(events) -> int:
    return int(torch.unique(torch.cat([events.src, events.dst])).numel())


def _is_sorted(events) -> bool:
    return bool((events.t[1:] >= events.t[:-1]).all())


def test_wikipedia_matches_readme(wikipedia):
    assert wikipedia.name == "wikipedia_edges.csv.gz"
    assert wikipedia.num_events == 157_474 and wikipedia.num_nodes == 9_227 == _distinct_nodes(wikipedia)
    assert wikipedia.src.unique().numel() == 8_227 and wikipedia.dst.unique().numel() == 1_000
    assert int(wikipedia.src.max()) == 8_226 and int(wikipedia.dst.min()) == 8_227  # items not shifted twice
    assert int(wikipedia.label.sum()) == 217 and wikipedia.edge_feat is None
    assert _is_sorted(wikipedia) and wikipedia.t.dtype == torch.float64
    assert float(wikipedia.t[-1]) == 2_678_373


def test_uci_ml_matches_readme(uci):
    assert uci.num_events == 59_835 and uci.num_nodes == 1_899 == _distinct_nodes(uci)
    assert uci.edge_feat.shape == (59_835, 100) and uci.edge_feat.dtype == torch.float32
    assert not uci.edge_feat.any() and uci.node_feat.shape == (1_899, 100) and not uci.node_feat.any()
    assert not uci.label.any() and _is_sorted(uci)
    assert (float(uci.t[0]), float(uci.t[-1])) == (0.0, 16_736_181.0)


def test_enron_matches_readme(datasets):
    enron = load_events(datasets / "enron" / "ml_enron.csv.gz")
    assert enron.num_events == 125_235 and enron.num_nodes == 184 == _distinct_nodes(enron)
    assert enron.edge_dim == 32 and enron.node_feat.shape == (184, 32) and _is_sorted(enron)
    assert float(enron.t[-1]) == 113_740_399


def test_opsahl_raw_matches_readme(opsahl, opsahl_path):
    assert opsahl.num_events == 59_835 and _distinct_nodes(opsahl) == 1_899
    assert opsahl.num_nodes == 1_900  # ids 1…1899 are kept, so node 0 is unused
    assert opsahl.edge_dim == 1 and float(opsahl.edge_feat.min()) >= 0 and opsahl.node_ids is None
    assert float(opsahl.t[0]) == 1_082_015_761.0  # "2004-04-15 07:56:01", read as UTC
    everything = load_events(opsahl_path, src=1, dst=2, time=0)
    assert everything.num_events == 61_734 and int((everything.src == everything.dst).sum()) == 1_899
    assert load_events(opsahl_path, src=1, dst=2, time=0, drop_self_loops=True, remap=True).num_nodes == 1_899


def test_collegemsg_matches_readme_and_uci(collegemsg, uci, datasets):
    assert collegemsg.num_events == 59_835 and _distinct_nodes(collegemsg) == 1_899 and _is_sorted(collegemsg)
    assert (float(collegemsg.t[0]), float(collegemsg.t[-1])) == (1_082_040_961.0, 1_098_777_142.0)
    assert torch.equal(collegemsg.src - 1, uci.src) and torch.equal(collegemsg.dst - 1, uci.dst)
    assert torch.equal(collegemsg.t, uci.t + 1_082_040_961)
    # SNAP numbers nodes in order of first appearance, so remapping gives exactly the ml_ ids
    remapped = load_events(datasets / "collegemsg" / "CollegeMsg.txt.gz", remap=True)
    assert torch.equal(remapped.src, uci.src) and torch.equal(remapped.dst, uci.dst)
    assert remapped.num_nodes == 1_899 and remapped.node_ids.tolist() == list(range(1, 1_900))


def test_opsahl_is_collegemsg_in_local_time(opsahl, collegemsg):
    # Same node ids, same multiset of events; the dates are UTC−7 wall-clock time and
    # simultaneous messages come in a different order (so remapping by first appearance differs).
    assert torch.equal(opsahl.t + 7 * 3600, collegemsg.t)

    def rows(events, shift):
        table = torch.stack([events.t.long() + shift, events.src, events.dst], 1)
        return table.unique(dim=0, return_counts=True)

    assert all(map(torch.equal, rows(opsahl, 7 * 3600), rows(collegemsg, 0)))
    assert bool((opsahl.src != collegemsg.src).any())


def test_uslegis_matches_readme(datasets, caplog):
    path = datasets / "uslegis" / "LegisEdgelist.txt.gz"
    with caplog.at_level(logging.WARNING, logger="lightning_mspipe.data.formats"):
        raw = load_events(path, format="edgelist", src=1, dst=2, time=0)
    assert "ids reach 95407 but 225 occur; remap=True" in caplog.text and raw.num_nodes == 95_408
    legis = load_events(path, format="edgelist", src=1, dst=2, time=0, remap=True)
    assert legis.num_events == 60_396 and legis.num_nodes == 225 == len(legis.node_ids)
    assert legis.t.unique().tolist() == list(range(12)) and _is_sorted(legis)
    assert legis.edge_dim == 1 and legis.edge_feat.min() == 1 and legis.edge_feat.max() == 314
    assert torch.equal(torch.as_tensor(legis.node_ids)[legis.src], raw.src)


# ------------------------------------------------------------------------------------ synthetic files
def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _save_npy(path: Path, array: np.ndarray) -> None:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            np.save(f, array)
    else:
        np.save(path, array)


JODIE_RAW = (
    "user_id,item_id,timestamp,state_label,comma_separated_list_of_features\n"
    "0,0,0.0,0,0.1,0.2\n1,0,1.5,1,0.3,0.4\n2,1,2.0,0,0.5,0.6\n"
)


def test_jodie_shifts_items_after_users(tmp_path):
    events = load_events(_write(tmp_path, "reddit.csv", JODIE_RAW), "jodie")
    assert events.src.tolist() == [0, 1, 2] and events.dst.tolist() == [3, 3, 4] and events.num_nodes == 5
    assert events.label.tolist() == [0, 1, 0] and events.t.tolist() == [0.0, 1.5, 2.0]
    assert torch.allclose(events.edge_feat, torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]))


def test_jodie_keeps_items_already_after_users(tmp_path):
    path = _write(tmp_path, "wiki.csv", "u,i,ts,label\n0,2,0,0\n1,3,5,1\n")
    assert load_events(path).dst.tolist() == [2, 3]
    assert load_events(path, shift_items=True).dst.tolist() == [4, 5]


def _ml_files(folder: Path, gz: bool = False) -> Path:
    suffix = ".gz" if gz else ""
    csv = ",u,i,ts,label,idx\n0,1,3,0.0,0,2\n1,2,3,4.0,1,1\n2,3,1,9.0,0,3\n"
    _save_npy(folder / f"ml_tiny.npy{suffix}", np.arange(8.0).reshape(4, 2))  # row 0 is padding
    _save_npy(folder / f"ml_tiny_node.npy{suffix}", np.arange(12.0).reshape(4, 3))
    return _write(folder, f"ml_tiny.csv{suffix}", csv)


@pytest.mark.parametrize("gz", [False, True])
def test_ml_roundtrip(tmp_path, gz):
    events = load_events(_ml_files(tmp_path, gz))
    assert events.src.tolist() == [0, 1, 2] and events.dst.tolist() == [2, 2, 0] and events.num_nodes == 3
    assert events.edge_feat.tolist() == [[4.0, 5.0], [2.0, 3.0], [6.0, 7.0]]  # rows picked by idx
    assert events.node_feat.tolist() == [[3.0, 4.0, 5.0], [6.0, 7.0, 8.0], [9.0, 10.0, 11.0]]
    assert events.label.tolist() == [0, 1, 0] and events.name == f"ml_tiny.csv{'.gz' if gz else ''}"


def test_ml_without_feature_files(tmp_path):
    events = load_events(_ml_files(tmp_path), edge_features=False, node_features=False)
    assert events.edge_feat is None and events.node_feat is None and events.num_nodes == 3


def test_ml_remap_moves_node_features(tmp_path):
    events = load_events(_ml_files(tmp_path), remap=True)
    assert events.node_ids.tolist() == [0, 2, 1]  # first appearance: 0, 2, 1, 2, 2, 0
    assert events.node_feat[:, 0].tolist() == [3.0, 9.0, 6.0]


def _tgl_files(folder: Path) -> Path:
    torch.save(torch.arange(6.0).reshape(3, 2), folder / "edge_features.pt")
    torch.save(torch.ones(4, 5), folder / "node_features.pt")
    return _write(folder, "edges.csv", ",src,dst,time,ext_roll\n0,0,1,1.0,0\n1,2,3,2.0,1\n2,1,3,3.0,2\n")


def test_tgl_roundtrip(tmp_path):
    events = load_events(_tgl_files(tmp_path))
    assert (
        events.src.tolist() == [0, 2, 1]
        and events.dst.tolist() == [1, 3, 3]
        and events.t.tolist() == [1, 2, 3]
    )
    assert events.edge_feat.tolist() == [[0, 1], [2, 3], [4, 5]] and events.node_feat.shape == (4, 5)


def test_tgl_explicit_feature_paths(tmp_path):
    path = _tgl_files(tmp_path)
    other = tmp_path / "elsewhere.pt"
    torch.save(torch.full((3, 1), 7.0), other)
    events = load_events(path, "tgl", edge_features=other, node_features=False)
    assert events.edge_feat.tolist() == [[7.0]] * 3 and events.node_feat is None


@pytest.mark.parametrize(
    ("name", "text", "fmt", "why"),
    [
        ("ml_x.csv", ",u,i,ts,label,idx\n0,1,2,0,0,1\n", "ml", "ml_<name>.csv"),
        ("x.csv", ",u,i,ts,label,idx\n0,1,2,0,0,1\n", "ml", ",u,i,ts,label,idx"),
        ("edges.csv", ",src,dst,time,ext_roll\n0,0,1,0,0\n", "tgl", "ext_roll"),
        ("x.csv", "user_id,item_id,timestamp,state_label,f\n0,0,0,0,1\n", "jodie", "user_id"),
        ("x.csv", "u,i,ts,label\n0,1,0,0\n", "jodie", "u,i,ts"),
        ("x.csv", "u,i,ts\n0,1,0\n", "edgelist", "neither"),
        ("x.txt", "0 1 5\n", "edgelist", "neither"),
    ],
)
def test_auto_detection_logs_choice_and_reason(tmp_path, caplog, name, text, fmt, why):
    with caplog.at_level(logging.INFO, logger="lightning_mspipe.data.formats"):
        load_events(_write(tmp_path, name, text))
    assert f"as format {fmt!r} because" in caplog.text and why in caplog.text and name in caplog.text


def test_gz_and_plain_give_the_same_events(tmp_path):
    text = "a,b,t,w\n0,1,1.5,2\n1,2,2.5,3\n"
    plain, packed = (
        load_events(_write(tmp_path, "e.csv", text)),
        load_events(_write(tmp_path, "e.csv.gz", text)),
    )
    assert torch.equal(plain.src, packed.src) and torch.equal(plain.t, packed.t)
    assert torch.equal(plain.edge_feat, packed.edge_feat)
    fake = tmp_path / "gzipped_without_suffix.csv"  # gzip is detected from the bytes, not the name
    fake.write_bytes(gzip.compress(text.encode()))
    assert torch.equal(load_events(fake).t, plain.t)


@pytest.mark.parametrize(
    "text",
    [
        "0,1,10,0.5\n1,2,20,1.5\n",
        "src,dst,time,w\n0,1,10,0.5\n1,2,20,1.5\n",
        "0\t1\t10\t0.5\n1\t2\t20\t1.5\n",
        "0 1 10 0.5\n1 2 20 1.5\n",
        "  0   1  10   0.5\n 1 2    20 1.5\n\n",
    ],
    ids=["comma", "header", "tab", "space", "ragged-whitespace"],
)
def test_separator_and_header_detection(tmp_path, text):
    events = load_events(_write(tmp_path, "e.txt", text))
    assert events.src.tolist() == [0, 1] and events.dst.tolist() == [1, 2] and events.t.tolist() == [10, 20]
    assert events.edge_feat.squeeze(1).tolist() == [0.5, 1.5]


def test_explicit_sep_and_header(tmp_path):
    path = _write(tmp_path, "e.txt", "9;8;7\n0;1;10\n")
    assert load_events(path, sep=";", header=True).t.tolist() == [10.0]
    assert load_events(path, sep=";", header=False, sort=True).num_events == 2


def test_string_names_map_in_order_of_first_appearance(tmp_path):
    text = "from,to,when\nPelosi,Boehner,1\nSchumer,Pelosi,2\n7,Schumer,3\n"
    events = load_events(_write(tmp_path, "politics.csv", text), src="from", dst="to", time="when")
    assert events.src.tolist() == [0, 2, 3] and events.dst.tolist() == [1, 0, 2] and events.num_nodes == 4
    assert events.node_ids.tolist() == ["Pelosi", "Boehner", "Schumer", "7"] and events.edge_feat is None


def test_quoted_datetimes_are_times_not_names(tmp_path):
    text = '"2004-03-23 20:11:55" 3 4 1\n"2004-03-23 20:12:20" 1 3 12\n'
    events = load_events(_write(tmp_path, "msgs.txt", text), src=1, dst=2, time=0)
    assert events.t.tolist() == [1_080_072_715.0, 1_080_072_740.0] and events.node_ids is None
    assert events.src.tolist() == [3, 1] and events.edge_feat.squeeze(1).tolist() == [1.0, 12.0]
    dated = _write(tmp_path, "d.csv", "a,b,day\nx,y,23/03/2004\n")
    assert load_events(dated, time="day", time_format="%d/%m/%Y").t.tolist() == [1_080_000_000.0]


def test_features_and_label_selection(tmp_path):
    path = _write(tmp_path, "e.csv", "u,v,t,w1,kind,w2,y\n0,1,1,5,a,6,1\n1,0,2,7,b,8,0\n")
    assert load_events(path, label="y").edge_feat.tolist() == [[5, 6], [7, 8]]  # text column `kind` skipped
    assert load_events(path, features=["w2"]).edge_feat.tolist() == [[6], [8]]
    assert load_events(path, features=[5, "w1"], label=6).edge_feat.tolist() == [[6, 5], [8, 7]]
    assert load_events(path, features=[]).edge_feat is None
    assert load_events(path, label="y").label.tolist() == [1, 0]


def test_integer_ids_are_kept_unless_remapped(tmp_path):
    path = _write(tmp_path, "e.txt", "5 3 1\n3 9 2\n")
    kept = load_events(path)
    assert kept.src.tolist() == [5, 3] and kept.num_nodes == 10 and kept.node_ids is None
    remapped = load_events(path, remap=True)
    assert remapped.src.tolist() == [0, 1] and remapped.dst.tolist() == [1, 2]
    assert remapped.node_ids.tolist() == [5, 3, 9]


def test_unsorted_times_name_the_file_and_event_and_sort_fixes_them(tmp_path):
    path = _write(tmp_path, "late.csv", "0,1,5,10\n1,2,9,20\n2,0,7,30\n")
    with pytest.raises(
        EventStreamError, match=r"late\.csv: timestamps are not sorted \(event 2: 7 < 9\).*sort=True"
    ):
        load_events(path)
    events = load_events(path, sort=True)
    assert events.t.tolist() == [5, 7, 9] and events.edge_feat.squeeze(1).tolist() == [10, 30, 20]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(-1000, 10**12)), min_size=1))
def test_edgelist_roundtrip_property(rows):
    rows.sort(key=lambda r: r[2])
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), "p.csv", "".join(f"{u},{v},{t}\n" for u, v, t in rows))
        events = load_events(path)
    assert events.src.tolist() == [r[0] for r in rows] and events.dst.tolist() == [r[1] for r in rows]
    assert events.t.tolist() == [float(r[2]) for r in rows]


# ------------------------------------------------------------------------------------ errors
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file: .*nowhere\.csv"):
        load_events(tmp_path / "nowhere.csv")


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("empty.csv", "", r"empty\.csv: the file is empty"),
        ("empty.csv.gz", "", r"empty\.csv\.gz: the file is empty"),
        ("blank.txt", "\n \n", r"blank\.txt: the file is empty"),
        ("only_header.csv", "src,dst,t\n", r"only_header\.csv: the file has a header but no events"),
    ],
)
def test_empty_files(tmp_path, name, text, match):
    with pytest.raises(EventStreamError, match=match):
        load_events(_write(tmp_path, name, text))


def test_unknown_format_lists_valid_ones(tmp_path):
    assert FORMATS == ("auto", "edgelist", "jodie", "ml", "tgl")
    with pytest.raises(
        EventStreamError, match=r"e\.csv: unknown format 'csv'; the formats are 'auto', 'edgelist'"
    ):
        load_events(_write(tmp_path, "e.csv", "0,1,2\n"), "csv")


def test_unknown_option_is_refused(tmp_path):
    with pytest.raises(
        TypeError, match=r"format 'ml' takes no option 'sep' \(ml_tiny\.csv\).*'edge_features'"
    ):
        load_events(_ml_files(tmp_path), sep=",")


@pytest.mark.parametrize(
    ("text", "options", "match"),
    [
        ("0,1,1\n1,2,\n", {}, r"e\.csv: timestamp of event 1 is nan"),
        ("0,1,1\n1,2,inf\n", {}, r"e\.csv: timestamp of event 1 is inf"),
        ("0,1,1\n1,2,soon\n", {}, r"e\.csv: time of event 1 is 'soon', not a number\. Pass `time_format=`"),
        (
            "x,y,2004-03-23\nx,y,soon\n",
            {},
            r"e\.csv: time of event 1 is 'soon', not a date \(ISO8601\)\. Pass",
        ),
        ("0,1,1\n-4,2,2\n", {}, r"e\.csv: `src` of event 1 is -4; node ids must be ≥ 0\. Pass `remap"),
        ("0,1,1\n1,2.5,2\n", {}, r"e\.csv: `dst` of event 1 is 2\.5, not an integer node id"),
        ("0,1,1\n,2,2\n", {}, r"e\.csv: `src` of event 1 is missing"),
        (
            "a,b,c\n0,1,1\n",
            {"time": "when"},
            r"e\.csv: time column 'when' does not exist; the columns are 'a', 'b', 'c'",
        ),
        ("0,1,1\n", {"dst": 3}, r"e\.csv: dst column 3 does not exist; the columns are 0, 1, 2\."),
        ("0,1,1,x\n", {"features": [3]}, r"e\.csv: feature 3 of event 0 is 'x', not a number"),
        ("0,1,1\n", {"time_format": "unix"}, r"e\.csv: unknown time_format='unix'\. Pass `time_format=`"),
    ],
)
def test_bad_edgelists_are_named(tmp_path, text, options, match):
    with pytest.raises(EventStreamError, match=match):
        load_events(_write(tmp_path, "e.csv", text), **options)


def test_ml_errors_name_the_files(tmp_path):
    path = _ml_files(tmp_path)
    _save_npy(tmp_path / "ml_tiny.npy", np.zeros((3, 2)))
    with pytest.raises(
        EventStreamError,
        match=r"ml_tiny\.csv: edge features ml_tiny\.npy have 3 rows, but event 2 needs row 3",
    ):
        load_events(path)
    _save_npy(tmp_path / "ml_tiny_node.npy", np.zeros((3, 2)))
    with pytest.raises(
        EventStreamError, match=r"node features ml_tiny_node\.npy cover 2 nodes .* use node 3"
    ):
        load_events(path, edge_features=False)
    zero = _write(tmp_path, "ml_zero.csv", ",u,i,ts,label,idx\n0,1,0,0.0,0,1\n")
    with pytest.raises(EventStreamError, match=r"ml_zero\.csv: `i` of event 0 is 0; ml_ ids start at 1"):
        load_events(zero)
    bad = _write(tmp_path, "ml_cols.csv", ",u,v,ts,label,idx\n0,1,2,0.0,0,1\n")
    with pytest.raises(
        EventStreamError, match=r"ml_cols\.csv: ml column 'i' does not exist; the columns are 'u', 'v'"
    ):
        load_events(bad)
    with pytest.raises(
        FileNotFoundError, match=r"ml_tiny\.csv: edge-feature file .*absent\.npy does not exist"
    ):
        load_events(path, edge_features=tmp_path / "absent.npy")


def test_tgl_errors_name_the_files(tmp_path):
    path = _tgl_files(tmp_path)
    torch.save(torch.zeros(2, 2), tmp_path / "edge_features.pt")
    with pytest.raises(
        EventStreamError, match=r"edges\.csv: edge features edge_features\.pt have 2 rows, but event 2"
    ):
        load_events(path)
    torch.save({"not": "a tensor"}, tmp_path / "edge_features.pt")
    with pytest.raises(EventStreamError, match=r"edges\.csv: edge_features\.pt holds a dict, not a tensor"):
        load_events(path)


def test_unreadable_files_are_named(tmp_path):
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress(b"0,1,2\n" * 1000)[:20])
    with pytest.raises(EventStreamError, match=r"cut\.csv\.gz: cannot be read"):
        load_events(truncated)
    with pytest.raises(EventStreamError, match=r"short\.csv: has 3 columns; JODIE needs user,item"):
        load_events(_write(tmp_path, "short.csv", "user_id,item_id,timestamp\n0,1,2\n"), "jodie")
    with pytest.raises(
        EventStreamError, match=r"konect\.txt: cannot be parsed as a table \(.*Expected 2 fields"
    ):
        load_events(_write(tmp_path, "konect.txt", "% sym\n1 2 3\n"))
