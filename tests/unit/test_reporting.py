"""Histograms and pictures in the form each logger takes (lightning_mspipe/reporting.py), read back from
TensorBoard's event file."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.image
import numpy as np
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing import event_accumulator as tb

from lightning_mspipe.reporting import histogram_scalars, log_histogram, log_image


def _events(logger: TensorBoardLogger) -> tb.EventAccumulator:
    logger.experiment.flush()
    everything = {tb.HISTOGRAMS: 0, tb.IMAGES: 0}
    return tb.EventAccumulator(logger.log_dir, size_guidance=everything).Reload()


def test_a_histogram_has_one_bin_per_integer_empty_ones_included(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="run")
    log_histogram([logger], "staleness", {0: 2, 3: 5}, step=7)
    (event,) = _events(logger).Histograms("staleness")
    histogram = event.histogram_value
    assert event.step == 7 and (histogram.min, histogram.max, histogram.num, histogram.sum) == (0, 3, 7, 15)
    assert list(histogram.bucket_limit) == [-0.5, 0.5, 1.5, 2.5, 3.5]  # right limits, after an empty first bin
    assert list(histogram.bucket) == [0, 2, 0, 0, 5]


def test_an_empty_histogram_is_not_sent(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="run")
    log_histogram([logger], "staleness", {}, step=0)
    assert "staleness" not in _events(logger).Tags()["histograms"]


def test_a_picture_reaches_tensorboard_as_rgb(tmp_path):
    picture = tmp_path / "picture.png"
    rgba = np.zeros((6, 10, 4), dtype=np.float32)
    rgba[..., 0], rgba[..., 3] = 1.0, 0.5  # red, half transparent
    matplotlib.image.imsave(picture, rgba)
    logger = TensorBoardLogger(tmp_path, name="run")
    log_image([logger, CSVLogger(tmp_path)], "timeline", Path(picture), step=3)  # the CSV logger is skipped
    (event,) = _events(logger).Images("timeline")
    assert (event.step, event.width, event.height) == (3, 10, 6)
    pixels = matplotlib.image.imread(io.BytesIO(event.encoded_image_string), format="png")
    assert pixels.shape == (6, 10, 3)  # the alpha channel is dropped
    assert np.allclose(pixels[..., 0], 1.0) and np.allclose(pixels[..., 1:], 0.0)


def test_histogram_scalars_give_every_bucket_up_to_the_bound():
    assert histogram_scalars("hist", {1: 4}, upto=2) == {"hist/0": 0.0, "hist/1": 4.0, "hist/2": 0.0}
