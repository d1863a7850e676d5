"""TGB's link-prediction sets (``tgbl-wiki``, ``tgbl-review``, ...) through TGB's own package, ``py-tgb``.

So that an MRR on a ``tgbl-*`` set is comparable with the TGB leaderboard, everything that
defines the benchmark comes from TGB: the events and edge features (its
``LinkPropPredDataset``, which reads ``<name>_edgelist[_vN].csv``), the chronological split
(its masks: 70 / 15 / 15 % of the time span's quantiles), the fixed evaluation negatives (its
pre-processed ``<name>_{val,test}_ns[_vN].pkl``: a dict from ``(src, dst, t)`` to that event's
negative destinations) and the ranking (its ``Evaluator``: the mean of the optimistic and
pessimistic rank). A set's files live in ``<cache>/<name with _>/`` (``tgbl_wiki/``), TGB's own
layout; files put there by hand are used as they are, so the sets also work with no network.

TGB's negatives per event vary in number (``tgbl-wiki`` ranks each positive against every
other destination), so they are kept padded with ``-1``; the loader turns the padding into a
mask (``TemporalBatch.neg_mask``) and padded scores never count in the rank.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_mspipe.data.events import EventStream
from lightning_mspipe.data.registry import DataSetUnavailableError, default_cache_dir

__all__ = ["TGBLinkData", "is_tgb_name", "load_tgb", "tgb_reciprocal_rank_sum"]

log = logging.getLogger(__name__)

TGB_LINK_PREFIX = "tgbl-"
INSTALL_HINT = "run `pip install 'lightning-mspipe[tgb]'` (TGB's package, py-tgb)"


def is_tgb_name(name: str) -> bool:
    """Whether ``name`` is a TGB link-prediction set (``tgbl-...``)."""
    return name.startswith(TGB_LINK_PREFIX)


@dataclass
class TGBLinkData:
    """A TGB link-prediction set as TGB defines it.

    Shapes:
        - train_mask, val_mask, test_mask: ``[E]`` bool (TGB's split)
        - val_negatives: ``[E_val, Q_max]`` int64, ``-1`` after an event's last negative;
          test_negatives likewise
    """

    events: EventStream
    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor
    val_negatives: Tensor
    test_negatives: Tensor
    evaluator: Any  # tgb.linkproppred.evaluate.Evaluator


def _tgb_modules() -> tuple[Any, Any]:
    """TGB's ``LinkPropPredDataset`` and ``Evaluator`` (imported on first use)."""
    try:
        from tgb.linkproppred.dataset import LinkPropPredDataset
        from tgb.linkproppred.evaluate import Evaluator
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"TGB data sets (tgbl-*) are read with TGB's package; {INSTALL_HINT}.") from error
    return LinkPropPredDataset, Evaluator


def load_tgb(name: str, *, cache_dir: str | Path | None = None, download: bool = True) -> TGBLinkData:
    """Read the TGB link-prediction set ``name`` with TGB's package, downloading it with TGB's code when missing.

    Args:
        name: A TGB link-prediction set, for example ``"tgbl-wiki"`` or ``"tgbl-review"``.
        cache_dir: The folder that holds ``<name with _>/`` (default
            :func:`~lightning_mspipe.data.default_cache_dir`).
        download: Let TGB download the set when its edge list is not in the folder.

    Memory: the negatives of each split are a dense ``[E_s, Q_max]`` int64 table (for
    ``tgbl-wiki`` about 23k × 1,000, 190 MB per split).

    Raises:
        ModuleNotFoundError: py-tgb is not installed (the message says how to install it).
        ValueError: TGB does not know ``name`` as a link-prediction set.
        DataSetUnavailableError: the files are not there and could not be downloaded.
    """
    if not is_tgb_name(name):
        raise ValueError(f"`load_tgb`: {name!r} is not a TGB link-prediction set (their names start with 'tgbl-').")
    dataset_class, evaluator_class = _tgb_modules()
    folder = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()).resolve()
    folder = folder / name.replace("-", "_")
    try:
        evaluator = evaluator_class(name=name)
    except NotImplementedError as error:
        raise ValueError(f"`load_tgb`: TGB has no data set {name!r}; see TGB's list of tgbl-* sets.") from error
    folder.mkdir(parents=True, exist_ok=True)
    try:
        # TGB prefixes a relative `root` with its package folder; an absolute `dir_name` replaces both.
        dataset = dataset_class(name=name, root="datasets", meta_dict={"dir_name": str(folder)}, download=download)
        dataset.load_val_ns()
        dataset.load_test_ns()
    except (OSError, ValueError) as error:
        raise DataSetUnavailableError(
            f"`load_tgb`: cannot read {name} from {folder} ({type(error).__name__}: {error}). Download TGB's "
            f"archive for {name} and unzip it into {folder}, or check the network."
        ) from error
    data = dataset.full_data
    edge_feat = dataset.edge_feat
    events = EventStream(
        src=torch.from_numpy(np.asarray(data["sources"], dtype=np.int64)),
        dst=torch.from_numpy(np.asarray(data["destinations"], dtype=np.int64)),
        t=torch.from_numpy(np.asarray(data["timestamps"], dtype=np.float64)),
        edge_feat=None if edge_feat is None else torch.from_numpy(np.asarray(edge_feat, dtype=np.float32)),
        name=name,
    )
    masks = [torch.from_numpy(np.asarray(m, dtype=bool)) for m in (dataset.train_mask, dataset.val_mask, dataset.test_mask)]
    eval_sets = dataset.negative_sampler.eval_set
    return TGBLinkData(
        events, *masks,
        val_negatives=negatives_table(eval_sets["val"], data, masks[1].numpy(), f"{name} val"),
        test_negatives=negatives_table(eval_sets["test"], data, masks[2].numpy(), f"{name} test"),
        evaluator=evaluator,
    )


def negatives_table(eval_set: dict, data: dict[str, np.ndarray], mask: np.ndarray, what: str) -> Tensor:
    """TGB's negatives of the events in ``mask``, in event order, as a ``[E_s, Q_max]`` table padded with ``-1``.

    ``eval_set`` maps ``(src, dst, t)`` (TGB's ids and times) to that event's negative destinations.
    One dict look-up per event, once, when the data is read (not per batch).

    Raises:
        ValueError: an event has no entry (the negatives belong to another version of the set).
    """
    keys = zip(data["sources"][mask].tolist(), data["destinations"][mask].tolist(), data["timestamps"][mask].tolist())
    rows = []
    for key in keys:
        negatives = eval_set.get(key)
        if negatives is None:
            raise ValueError(
                f"TGB negatives of {what}: the event (src, dst, t) = {key} has none; the negatives file belongs "
                "to another version of the data set. Download the set again."
            )
        rows.append(np.asarray(negatives, dtype=np.int64))
    table = np.full((len(rows), max((r.size for r in rows), default=1)), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        table[i, : row.size] = row
    return torch.from_numpy(table)


def tgb_reciprocal_rank_sum(evaluator: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """A function ``(pos [B], neg [B, Q]) → sum of the B reciprocal ranks``, ranked by TGB's ``Evaluator``.

    Masked negatives must score ``-inf`` (they then never rank above or tie a positive). One
    host copy of the batch's scores per call: evaluation only.
    """

    def reciprocal_rank_sum(pos: Tensor, neg: Tensor) -> Tensor:
        result = evaluator.eval(
            {"y_pred_pos": pos.double().cpu().numpy(), "y_pred_neg": neg.double().cpu().numpy(), "eval_metric": ["mrr"]}
        )
        return torch.tensor(float(result["mrr"]) * pos.numel(), dtype=torch.float64)

    return reciprocal_rank_sum
