"""Train TGN with MSPipe's staleness-aware pipeline on the built-in synthetic event stream.

A plain Lightning script (no ``mspipe`` command): a ``TemporalDataModule``, a ``TGN`` sized from
it, and ``Trainer(strategy=MSPipeStrategy(max_staleness=2))``, so memory fetches may miss at most
the two latest memory writes while sampling and fetching run ahead of training. The progress bar
shows events/s and each batch's staleness beside the loss (``PipelineStats``).

Run from the repository root after `make install` (under a minute on 2 CPU cores with the defaults)::

    python examples/train_tgn_mspipe.py
    python examples/train_tgn_mspipe.py --events 2000 --nodes 200 --epochs 1   # a few seconds
"""

from __future__ import annotations

import argparse

import lightning as L

from lightning_mspipe import TGN, MSPipeStrategy, PipelineStats, TemporalDataModule


def main(argv: list[str] | None = None) -> L.Trainer:
    """Train, then test; print the test metrics and return the Trainer.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``); ``--help`` lists them.
    """
    parser = argparse.ArgumentParser(description="Train TGN with MSPipeStrategy on the synthetic stream.")
    parser.add_argument("--nodes", type=int, default=500, help="nodes of the synthetic stream (default 500)")
    parser.add_argument("--events", type=int, default=10_000, help="events of the stream (default 10,000)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument("--batch-size", type=int, default=200, help="events per batch (default 200)")
    parser.add_argument("--dim", type=int, default=64, help="memory, time and embedding width (default 64)")
    args = parser.parse_args(argv)

    L.seed_everything(0)
    data = TemporalDataModule(
        synthetic_nodes=args.nodes, synthetic_events=args.events, batch_size=args.batch_size, mrr_negatives=20
    )
    dims = dict(memory_dim=args.dim, time_dim=args.dim, embedding_dim=args.dim)
    model = TGN(num_nodes=data.num_nodes, edge_dim=data.edge_dim, **dims)
    trainer = L.Trainer(
        max_epochs=args.epochs, strategy=MSPipeStrategy(max_staleness=2), callbacks=[PipelineStats()]
    )
    trainer.fit(model, data)
    (results,) = trainer.test(model, data)  # memory continues from the end of validation
    print(f"test/ap {results['test/ap']:.4f}, test/mrr {results['test/mrr']:.4f}")
    return trainer


if __name__ == "__main__":
    main()
