"""TGB link-prediction sets through py-tgb, on a tiny set written in TGB's on-disk layout (no network)."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from tgb.linkproppred.evaluate import Evaluator

from lightning_mspipe.cli import main
from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.data.tgb import tgb_reciprocal_rank_sum
from lightning_mspipe.models.evaluation import LinkEvaluation

SOURCES, ITEMS, EVENTS = 20, 10, 400


def write_tiny_tgbl_wiki(cache) -> dict[str, dict]:
    """``<cache>/tgbl_wiki/``: TGB's edge list (JODIE's columns; TGB shifts item ids past the users)
    and its pickled negatives, a dict from (src, dst, t) in TGB's ids to negative destinations,
    of varying length as TGB's are for tgbl-wiki. Returns the negatives by split."""
    folder = cache / "tgbl_wiki"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    src, item, t = rng.integers(0, SOURCES, EVENTS), rng.integers(0, ITEMS, EVENTS), np.arange(EVENTS) * 10
    src[0], item[0] = SOURCES - 1, ITEMS - 1  # every id occurs: N = 30
    rows = [f"{s},{i},{ts},0,{0.1 * s:.1f},{0.2 * i:.1f}" for s, i, ts in zip(src, item, t)]
    (folder / "tgbl-wiki_edgelist_v2.csv").write_text("user_id,item_id,timestamp,state_label,f0,f1\n" + "\n".join(rows))
    dst = item + SOURCES
    val_time, test_time = np.quantile(t, [0.7, 0.85])
    splits = {"val": (t > val_time) & (t <= test_time), "test": t > test_time}
    negatives = {}
    for split, mask in splits.items():
        negatives[split] = {}
        for k, (s, d, ts) in enumerate(zip(src[mask], dst[mask], t[mask])):
            others = np.setdiff1d(np.arange(SOURCES, SOURCES + ITEMS), [d])
            negatives[split][(np.int64(s), np.int64(d), np.int64(ts))] = others[: len(others) - k % 3]  # ragged
        with open(folder / f"tgbl-wiki_{split}_ns_v2.pkl", "wb") as file:
            pickle.dump(negatives[split], file)
    return negatives


@pytest.fixture
def tgb_cache(tmp_path):
    return tmp_path, write_tiny_tgbl_wiki(tmp_path)


def tgb_datamodule(cache, **options) -> TemporalDataModule:
    return TemporalDataModule(name="tgbl-wiki", read_options={"cache_dir": str(cache), "download": False},
                              batch_size=20, **options)


def test_events_split_and_evaluation_negatives_are_tgbs(tgb_cache):
    cache, negatives = tgb_cache
    dm = tgb_datamodule(cache)
    assert (dm.num_nodes, dm.edge_dim) == (SOURCES + ITEMS, 2)
    assert dm.split_sizes() == {"train": 280, "val": 60, "test": 60} and dm.split.new_nodes.numel() == 0
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        expected = list(negatives[split].values())
        rows = [(batch.neg_dst[i], batch.neg_mask[i], int(batch.dst[i])) for batch in loader for i in range(batch.size)]
        assert len(rows) == len(expected)
        for (neg, mask, dst), tgb_row in zip(rows, expected):
            assert neg[mask].tolist() == tgb_row.tolist()  # the real negatives, in TGB's order
            assert (neg[~mask] == dst).all() and int(mask.sum()) == len(tgb_row)  # padding: the true destination


def test_mrr_ranks_each_event_against_its_own_negatives_with_tgbs_evaluator():
    """Padded rows give the MRR TGB's evaluator gives on each event's own (unpadded) negatives."""
    generator = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(6, generator=generator), torch.randn(6, 5, generator=generator)
    neg[0, 1] = pos[0]  # a tie counts half
    lengths = torch.tensor([5, 4, 3, 5, 1, 2])
    mask = torch.arange(5) < lengths.unsqueeze(1)
    evaluator = Evaluator(name="tgbl-wiki")
    per_event = [
        evaluator.eval({"y_pred_pos": pos[i : i + 1].numpy(), "y_pred_neg": neg[i : i + 1, : lengths[i]].numpy(),
                        "eval_metric": ["mrr"]})["mrr"]
        for i in range(6)
    ]
    for rank_sum in (None, tgb_reciprocal_rank_sum(evaluator)):  # our rule and TGB's evaluator
        evaluation = LinkEvaluation("test")
        evaluation.use_mrr(rank_sum)
        evaluation.update(pos, neg, None, mask)
        assert float(evaluation.compute()["test/mrr"]) == pytest.approx(float(np.mean(per_event)), abs=1e-6)


def test_mspipe_fit_on_a_tgb_set_reports_test_mrr(tgb_cache, monkeypatch, capsys):
    cache, _ = tgb_cache
    monkeypatch.setattr(sys, "argv", ["mspipe"])
    main(["fit", "--data.name", "tgbl-wiki", "--data.read_options", f'{{"cache_dir": "{cache}", "download": false}}',
          "--data.batch_size", "20", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
          "--model.memory_dim", "8", "--model.time_dim", "4", "--model.embedding_dim", "8",
          "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
          "--trainer.default_root_dir", str(cache)])
    assert "test/mrr" in capsys.readouterr().out


def test_a_tgb_set_keeps_tgbs_split(tgb_cache):
    with pytest.raises(ValueError, match="tgbl-wiki is split as TGB splits it"):
        tgb_datamodule(tgb_cache[0], new_node_ratio=0.1)


def test_without_py_tgb_the_error_says_how_to_install_it(tgb_cache, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tgb.linkproppred.dataset", None)  # as if py-tgb were not installed
    monkeypatch.setattr(sys, "argv", ["mspipe"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.name", "tgbl-wiki", "--data.read_options", f'{{"cache_dir": "{tgb_cache[0]}"}}'])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "mspipe: error: TGB data sets (tgbl-*) are read with TGB's package; "
        "run `pip install 'lightning-mspipe[tgb]'` (TGB's package, py-tgb).\n"
    )
