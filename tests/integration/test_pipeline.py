"""MSPipeStrategy end to end: equivalence with synchronous training, bounds under delays, faults, resume."""

import random
import threading
import time

import lightning as L
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_mspipe import MSPipeStrategy, PipelineStats, StalenessGuard, StalenessMitigation
from lightning_mspipe.memory import DirectWriter
from lightning_mspipe.models import APAN, JODIE, TGN
from lightning_mspipe.pipeline.loader import PipelineError, PipelineTimeout

from tests.conftest import SMALL_MODEL, small_datamodule


class Recorder(Callback):
    """Per-step loss, memory version seen and the order of memory writes."""

    def __init__(self):
        self.losses, self.seen, self.versions_after = [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.seen.append((batch.index, None if batch.memory is None else batch.memory.version))
        self.versions_after.append(pl_module.memory.current_version)


def fit(model_cls=TGN, strategy="auto", epochs=2, dm=None, callbacks=(), ckpt_path=None, **trainer_kwargs):
    torch.manual_seed(0)
    dm = dm or small_datamodule()
    model = model_cls(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    recorder = Recorder()
    options = dict(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, strategy=strategy,
                   callbacks=[recorder, *callbacks])
    options.update(trainer_kwargs)
    trainer = L.Trainer(**options)
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return model, recorder, trainer


def assert_same_model(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name



@pytest.mark.parametrize("model_cls", [TGN, JODIE, APAN])
def test_staleness_zero_is_bit_identical_to_training_without_the_pipeline(model_cls):
    plain, plain_rec, _ = fit(model_cls)
    piped, piped_rec, trainer = fit(model_cls, MSPipeStrategy(max_staleness=0))
    assert trainer.strategy.pipeline is not None  # the pipeline really ran
    assert piped_rec.losses == plain_rec.losses
    assert_same_model(plain, piped)
    assert isinstance(piped.memory_writer, DirectWriter)  # the strategy took its writer back


def test_sequential_mode_runs_no_lane_and_is_bit_identical_to_training_without_the_pipeline():
    plain, plain_rec, _ = fit(TGN)
    lanes_started = []

    class WatchThreads(Callback):
        def on_train_batch_end(self, *args):
            lanes_started.extend(t.name for t in threading.enumerate() if t.name.startswith(("mspipe-sampler",
                                                                                                "mspipe-fetcher")))

    sequential, rec, trainer = fit(TGN, MSPipeStrategy(max_staleness=0, mode="sequential"), callbacks=[WatchThreads()])
    assert not trainer.strategy.pipeline.threaded and lanes_started == []
    assert rec.losses == plain_rec.losses
    assert_same_model(plain, sequential)


def test_strategy_is_registered_by_name():
    _, recorder, trainer = fit(strategy="mspipe", epochs=1)
    assert isinstance(trainer.strategy, MSPipeStrategy) and trainer.strategy.max_staleness == 2
    assert all(index - version <= 2 for index, version in recorder.seen)


def random_delays(seed, scale=0.004):
    rng = random.Random(seed)
    lock = threading.Lock()

    def hook(stage, index, stop):
        with lock:
            delay = rng.random() * scale
        time.sleep(delay)

    return hook


def slow_writes(seed, scale=0.004):
    rng = random.Random(seed)

    class SlowWrite(Callback):
        def on_train_batch_end(self, *args):
            time.sleep(rng.random() * scale)

    return SlowWrite()


def recording_write_order(hook):
    """Wrap a fault hook: record (batch, memory version) as each write starts on the writer lane."""
    starts, holder = [], {}

    class Capture(Callback):
        def on_fit_start(self, trainer, pl_module):
            holder["store"] = pl_module.memory

    def wrapped(stage, index, stop):
        if stage == "write":
            starts.append((index, holder["store"].current_version))
        hook(stage, index, stop)

    return wrapped, Capture(), starts


PROPERTY = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(delays=st.lists(st.integers(0, 10**6), min_size=2, max_size=2, unique=True), bound=st.integers(1, 3))
def test_exact_mode_is_timing_independent_and_bounded(delays, bound):
    results = []
    for seed in delays:
        strategy = MSPipeStrategy(max_staleness=bound, mode="exact")
        strategy.fault_hook = random_delays(seed)
        model, recorder, _ = fit(strategy=strategy, callbacks=[slow_writes(seed)])
        assert all(index - version == min(index, bound) for index, version in recorder.seen)
        results.append((model, recorder))
    (a, rec_a), (b, rec_b) = results
    assert rec_a.losses == rec_b.losses
    assert_same_model(a, b)


@PROPERTY
@given(seed=st.integers(0, 10**6), bound=st.integers(0, 3))
def test_bounded_mode_never_exceeds_the_bound_under_random_delays(seed, bound):
    strategy = MSPipeStrategy(max_staleness=bound)
    strategy.fault_hook, capture, write_starts = recording_write_order(random_delays(seed))  # writer delayed too
    guard = StalenessGuard()
    _, recorder, _ = fit(strategy=strategy, callbacks=[capture, slow_writes(seed), guard])
    assert max(guard.histogram) <= bound and sum(guard.histogram.values()) == len(recorder.losses)
    # writes commit in batch order, one at a time: the write of batch i starts at version i (each epoch)
    assert len(write_starts) == len(recorder.losses) and all(index == version for index, version in write_starts)


def test_a_stage_that_raises_names_stage_and_batch_and_leaves_no_thread(leaked_threads):
    def fail(stage, index, stop):
        if stage == "features" and index == 3:
            raise OSError("disk unplugged")

    strategy = MSPipeStrategy(max_staleness=1)
    strategy.fault_hook = fail
    with pytest.raises(PipelineError, match=r"stage 'features' failed on batch 3: OSError: disk unplugged"):
        fit(strategy=strategy)
    assert not leaked_threads()


@pytest.mark.timeout(120)  # the deadline: the pipeline's own 0.5 s timeout must end the run long before
@pytest.mark.parametrize("hung", ["sample", "features", "memory"])
def test_a_stage_that_hangs_times_out_with_a_message_and_leaves_no_thread(hung, leaked_threads):
    def hang(stage, index, stop):
        if stage == hung and index == 2:
            stop.wait(60)  # a hang that ends when the pipeline shuts down

    strategy = MSPipeStrategy(max_staleness=1, timeout=0.5)
    strategy.fault_hook = hang
    # training's wait for the fetcher (or, for a hung sampler, the fetcher's wait for it) names the stage
    with pytest.raises(PipelineTimeout, match=rf"waited 0.5s for batch 2; .*is in stage '{hung}' of batch 2"):
        fit(strategy=strategy)
    assert not leaked_threads()


def test_a_stage_stuck_in_an_uninterruptible_call_times_out_and_does_not_freeze_shutdown(leaked_threads):
    release = threading.Event()

    def stuck(stage, index, stop):
        if stage == "features" and index == 2:
            release.wait(60)  # deaf to the stop flag, like a call into C code

    strategy = MSPipeStrategy(max_staleness=1, timeout=0.5)
    strategy.fault_hook = stuck
    with (
        pytest.warns(RuntimeWarning, match=r"did not stop within 0.5s; it is in stage 'features' of batch 2"),
        pytest.raises(PipelineTimeout, match=r"the fetcher is in stage 'features' of batch 2"),
    ):
        fit(strategy=strategy)
    release.set()
    assert not leaked_threads()


def test_the_main_threads_intra_op_thread_count_is_unchanged_by_the_lanes():
    before = torch.get_num_threads()
    fit(strategy=MSPipeStrategy(max_staleness=1), epochs=1, limit_train_batches=4)
    assert torch.get_num_threads() == before


@pytest.mark.timeout(120)
def test_a_hanging_memory_write_ends_in_a_named_timeout(leaked_threads):
    def hang(stage, index, stop):
        if stage == "write" and index == 2:
            stop.wait(60)

    # generous timeout: the gate of batch 2 also waits for batch 0's first (slowest) step on a loaded machine
    strategy = MSPipeStrategy(max_staleness=1, timeout=3.0)
    strategy.fault_hook = hang
    with pytest.raises(PipelineTimeout, match=r"waited 3s.*the writer is in stage 'write' of batch 2"):
        fit(strategy=strategy)
    assert not leaked_threads()


def test_missing_memory_writes_time_out_instead_of_hanging(leaked_threads):
    class Nowhere:
        def submit_write(self, index, write):
            pass

        def flush_writes(self):
            pass

        def live_memory(self, index):
            raise AssertionError("no mitigation here")

    class DropWrites(Callback):
        def on_train_start(self, trainer, pl_module):
            pl_module.use_memory_writer(Nowhere())  # replaces the pipeline the strategy attached

    # the fetcher's wait at the gate or, on a loaded machine where it starts late, training's wait for the fetcher
    gate_or_fetcher = r"waited 0.5s (at the staleness gate for memory version 1|for batch 1; the fetcher is in stage 'wait for memory')"
    with pytest.raises(PipelineTimeout, match=gate_or_fetcher):
        fit(strategy=MSPipeStrategy(max_staleness=0, timeout=0.5), callbacks=[DropWrites()])
    assert not leaked_threads()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(max_staleness=-1), ValueError, "must be ≥ 0"),
        (dict(max_staleness="fast"), ValueError, "non-negative int or 'auto'"),
        (dict(max_staleness=1.5), TypeError, "non-negative int or 'auto'"),
        (dict(max_staleness="auto", mode="exact"), ValueError, "exact' needs a fixed max_staleness"),
        (dict(mode="eventual"), ValueError, "unknown mode 'eventual'"),
        (dict(max_staleness=2, mode="sequential"), ValueError, "sequential' .* needs max_staleness=0, got 2"),
        (dict(max_staleness="auto", mode="sequential"), ValueError, "needs max_staleness=0, got 'auto'"),
        (dict(memory_device="gpu"), ValueError, "unknown memory_device"),
    ],
)
def test_bad_strategy_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        MSPipeStrategy(**kwargs)


def test_a_training_loader_that_cannot_be_pipelined_trains_sequentially_with_a_warning():
    class PreparedBatches:
        """A sized iterable of ready batches: trainable, but without stages or a position to save."""

        def __init__(self, batches):
            self.batches = batches

        def __len__(self):
            return len(self.batches)

        def __iter__(self):
            return iter(self.batches)

    dm = small_datamodule()
    dm.setup("fit")
    batches = PreparedBatches(list(dm.train_dataloader()))
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, strategy=MSPipeStrategy(max_staleness=2))
    with pytest.warns(UserWarning, match=r"training loader \(PreparedBatches\) cannot be pipelined: .* lacks sample, fetch_features"):
        trainer.fit(model, train_dataloaders=batches)
    assert trainer.strategy.pipeline is None and model.memory.current_version == len(batches)


def test_lightning_features_work_with_the_pipeline(leaked_threads):
    stats = PipelineStats()
    _, recorder, trainer = fit(
        strategy=MSPipeStrategy(max_staleness=2), epochs=2, accumulate_grad_batches=2, limit_train_batches=5,
        precision="bf16-mixed", callbacks=[stats],
    )
    assert len(recorder.losses) == 10 and trainer.global_step == 6
    assert len(stats.epochs) == 2 and stats.epochs[-1]["events_per_s"] > 0
    _, recorder, _ = fit(strategy=MSPipeStrategy(max_staleness=2), max_steps=3)
    assert len(recorder.losses) == 3
    _, recorder, _ = fit(strategy=MSPipeStrategy(max_staleness=1), fast_dev_run=True)
    assert len(recorder.losses) == 1
    assert not leaked_threads()


def test_auto_bound_is_chosen_from_measured_stage_times():
    stats = PipelineStats()
    _, recorder, trainer = fit(strategy=MSPipeStrategy(max_staleness="auto", max_auto_staleness=4), callbacks=[stats])
    pipeline = trainer.strategy.pipeline
    assert pipeline.decided and pipeline.choices
    choice = pipeline.choices[0]
    assert 0 <= choice["max_staleness"] <= 4 and choice["train"] > 0 and choice["sample"] > 0
    assert all(index - version <= max(c["max_staleness"] for c in pipeline.choices) for index, version in recorder.seen)


def test_mid_epoch_resume_in_exact_mode_is_bit_identical(tmp_path):
    full, full_rec, _ = fit(strategy=MSPipeStrategy(max_staleness=2, mode="exact"), epochs=2)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, save_on_train_epoch_end=False)
    fit(strategy=MSPipeStrategy(max_staleness=2, mode="exact"), epochs=2, max_steps=4,
        enable_checkpointing=True, callbacks=[checkpoint])
    path = next(tmp_path.glob("*step=4*.ckpt"))
    resumed, resumed_rec, _ = fit(strategy=MSPipeStrategy(max_staleness=2, mode="exact"), epochs=2, ckpt_path=path)
    assert resumed_rec.losses == full_rec.losses[4:]
    assert_same_model(full, resumed)


def test_mid_epoch_model_checkpoint_resumes_exactly_without_the_pipeline(tmp_path):
    full, full_rec, _ = fit(epochs=2)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, save_on_train_epoch_end=False)
    fit(epochs=2, max_steps=4, enable_checkpointing=True, callbacks=[checkpoint])
    resumed, resumed_rec, _ = fit(epochs=2, ckpt_path=next(tmp_path.glob("*step=4*.ckpt")))
    assert resumed_rec.losses == full_rec.losses[4:]  # the checkpoint holds the write of the batch it follows
    assert_same_model(full, resumed)


def test_resuming_with_another_bound_keeps_the_new_bound_and_says_so(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, save_on_train_epoch_end=False)
    fit(strategy=MSPipeStrategy(max_staleness=2, mode="exact"), epochs=1, max_steps=4, enable_checkpointing=True,
        callbacks=[checkpoint])
    guard = StalenessGuard()
    with pytest.warns(UserWarning, match=r"trained with max_staleness=2; this run keeps its own max_staleness=1"):
        _, _, trainer = fit(strategy=MSPipeStrategy(max_staleness=1, mode="exact"), epochs=1, callbacks=[guard],
                            ckpt_path=next(tmp_path.glob("*step=4*.ckpt")))
    assert trainer.strategy.pipeline.bound == 1 and max(guard.histogram) == 1


def test_resume_at_an_epoch_boundary_is_bit_identical(tmp_path):
    full, full_rec, _ = fit(strategy=MSPipeStrategy(max_staleness=2, mode="exact"), epochs=2)
    first, first_rec, trainer = fit(strategy=MSPipeStrategy(max_staleness=2, mode="exact"), epochs=1)
    path = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(path)
    resumed, resumed_rec, _ = fit(strategy=MSPipeStrategy(max_staleness=2, mode="exact"), epochs=2, ckpt_path=path)
    assert first_rec.losses + resumed_rec.losses == full_rec.losses
    assert_same_model(full, resumed)


def test_mitigation_runs_and_reports_its_share():
    mitigation = StalenessMitigation(lam=0.5, quantile=0.5)
    fit(strategy=MSPipeStrategy(max_staleness=3, mode="exact", mitigation=mitigation), epochs=1)
    assert mitigation.seen_roots > 0 and 0 < mitigation.blended_share < 1


def test_refreshed_roots_give_jodie_in_exact_mode_synchronous_trainings_losses():
    # JODIE's embedding reads only its roots' rows, so with every root refreshed from memory version j
    # (exact mode waits for it) and the blend a no-op (lam = 1), each step computes what s = 0 computes,
    # up to rounding (the blend's copied rows change the shape of the updater's matrix products)
    _, sequential, _ = fit(JODIE, MSPipeStrategy(max_staleness=0, mode="sequential"))
    _, stale, _ = fit(JODIE, MSPipeStrategy(max_staleness=2, mode="exact"))
    mitigation = StalenessMitigation(lam=1.0, refresh_roots=True)
    _, refreshed, _ = fit(JODIE, MSPipeStrategy(max_staleness=2, mode="exact", mitigation=mitigation))

    def gap(run):
        return max(abs(a - b) for a, b in zip(run.losses, sequential.losses, strict=True))

    assert gap(refreshed) < 1e-4 < 1e-2 < gap(stale)
    assert all(index - version == min(index, 2) for index, version in refreshed.seen)  # the snapshots stayed stale
    assert mitigation.refreshed_rows > 0


def test_mitigation_meets_the_model_not_the_trainers_callbacks_and_its_table_is_in_the_checkpoint(tmp_path):
    mitigation = StalenessMitigation(lam=0.5, quantile=0.5, top_k=3, similarity="cosine", rebuild_every=2)
    callbacks_given = [StalenessGuard()]
    model, _, trainer = fit(strategy=MSPipeStrategy(max_staleness=2, mode="exact", mitigation=mitigation),
                            epochs=1, callbacks=callbacks_given)
    assert not any(isinstance(c, StalenessMitigation) for c in trainer.callbacks)
    assert model.staleness_mitigation is mitigation and mitigation.built_at_epoch_end
    path = tmp_path / "end.ckpt"
    trainer.save_checkpoint(path)  # after fit, as a user would
    restored = StalenessMitigation(lam=0.5, quantile=0.5, top_k=3, similarity="cosine", rebuild_every=2)
    fresh = TGN(num_nodes=model.hparams.num_nodes, edge_dim=model.hparams.edge_dim, **SMALL_MODEL)
    fresh.use_staleness_mitigation(restored)
    fresh.on_load_checkpoint(torch.load(path, weights_only=False))
    assert torch.equal(restored.cosine.table, mitigation.cosine.table) and restored.built_at_epoch_end
    assert restored.blended_roots == mitigation.blended_roots > 0


def test_mitigation_from_the_live_store_keeps_exact_mode_timing_independent():
    results = []
    for seed in (1, 2):
        mitigation = StalenessMitigation(lam=0.5, quantile=0.5, top_k=3, similarity="cosine", rebuild_every=2)
        strategy = MSPipeStrategy(max_staleness=2, mode="exact", mitigation=mitigation)
        strategy.fault_hook = random_delays(seed)  # the writer lane is delayed too
        model, recorder, _ = fit(strategy=strategy, epochs=1, callbacks=[slow_writes(seed)])
        assert mitigation.cosine.table is not None and mitigation.blended_roots > 0
        results.append((model, recorder, mitigation.blended_roots))
    (a, rec_a, blended_a), (b, rec_b, blended_b) = results
    assert rec_a.losses == rec_b.losses and blended_a == blended_b
    assert_same_model(a, b)


def test_ctrl_c_stops_every_lane(leaked_threads):
    class Interrupt(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 2:
                raise KeyboardInterrupt

    with pytest.raises(SystemExit):  # Lightning ends a Ctrl-C'd run with exit status 1
        fit(strategy=MSPipeStrategy(max_staleness=2), callbacks=[Interrupt()])
    assert not leaked_threads()


class StopAfter(Callback):
    """Sets ``trainer.should_stop`` after ``steps`` batches, as the ``max_time`` Timer does."""

    def __init__(self, steps):
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def stopped_and_saved(tmp_path, strategy_factory, steps, stop):
    """Fit until ``steps`` batches (``stop``: by ``max_steps`` or by ``should_stop``), then
    ``trainer.save_checkpoint``; return the path."""
    limit = {"max_steps": steps} if stop == "max_steps" else {"callbacks": [StopAfter(steps)]}
    _, _, trainer = fit(strategy=strategy_factory(), epochs=2, **limit)
    path = tmp_path / f"stopped-{steps}.ckpt"
    trainer.save_checkpoint(path)
    return path


STRATEGIES = {
    "exact-s2": lambda: MSPipeStrategy(max_staleness=2, mode="exact"),
    "s0": lambda: MSPipeStrategy(max_staleness=0),
    "plain": lambda: "auto",
}


@pytest.mark.parametrize(
    ("strategy", "steps", "stop"),
    [("exact-s2", 4, "max_steps"), ("exact-s2", 13, "max_steps"), ("exact-s2", 10, "max_steps"),  # 10 batches an epoch
     ("exact-s2", 6, "should_stop"), ("s0", 4, "max_steps"), ("plain", 4, "max_steps")],
)
def test_save_checkpoint_after_a_stop_resumes_exactly(tmp_path, strategy, steps, stop):
    make = STRATEGIES[strategy]
    full, full_rec, _ = fit(strategy=make(), epochs=2)
    path = stopped_and_saved(tmp_path, make, steps, stop)
    resumed, resumed_rec, _ = fit(strategy=make(), epochs=2, ckpt_path=path)
    assert len(full_rec.losses) == 20
    assert resumed_rec.losses == full_rec.losses[steps:]
    assert resumed_rec.seen == full_rec.seen[steps:]
    assert_same_model(full, resumed)  # weights and memory, last_update, mailbox, mail_ts, version
