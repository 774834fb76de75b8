"""``python -m models.benchmark --data DIR --preset paper``: speed and memory of one training step.

For every stage of :data:`models.presets.STAGES` and every ``--batch-sizes`` value it builds the
preset's networks, draws one batch of the real training data at the preset's image size, and times
``--steps`` calls of ``optimize_parameters`` on that batch after ``--warmup`` calls (the batch is
reused, so the figures are the networks' and not the data loader's). It prints, per stage and batch
size: optimizer steps/s, images/s (batch size x steps/s) and, on CUDA, the peak memory torch
allocated; then how many batches/s :meth:`models.data.TrainingData.batch` makes on one CPU core.

One step of each stage runs several network passes (module docstrings of the stages): structure
EC_f, DC_f, MG, D_f, FD_f; synthesis about 12 EC and 16 DC passes with 4 pairs (20 and 44 with all
12, the paper preset) besides EC_r, D, FD and the segmentors; segmentation one pass per segmentor.
"""

import argparse
import dataclasses
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.data import load_training_data
from models.networks import define_networks
from models.presets import STAGES, get_preset
from models.trainer import STAGE_CLASSES

log = logging.getLogger(__name__)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_stage(
    stage_name: str, batch: dict[str, torch.Tensor], preset_name: str, steps: int, warmup: int
) -> tuple[float, float | None]:
    """Steps/s of one stage on a fixed batch, and the peak CUDA memory in GiB (None on CPU).

    Args:
        stage_name: a name of :data:`models.presets.STAGES`.
        batch: a batch of :meth:`models.data.TrainingData.batch`, on the device to time.
        preset_name: preset of the networks and the optimizer.
        steps: timed steps, >= 1.
        warmup: untimed steps first (cuDNN autotuning, allocator warm-up), >= 0.
    """
    device = batch["x"].device
    preset = dataclasses.replace(get_preset(preset_name), batch_size=batch["x"].shape[0])
    networks = define_networks(preset.network).to(device)
    stage = STAGE_CLASSES[stage_name](networks, preset, device)
    stage.train()
    stage.set_input(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        stage.optimize_parameters()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        stage.optimize_parameters()
    _synchronize(device)
    rate = steps / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return rate, peak


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and print the table (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m models.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="BraTS directory (e.g. a phantom)")
    parser.add_argument("--cache", type=Path, help="slice cache to build or reuse (default: temporary)")
    parser.add_argument("--preset", default="paper", help="preset to time (default paper)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], help="default 1 8 32")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="default: all")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    preset = get_preset(args.preset)
    with tempfile.TemporaryDirectory() as scratch:
        data = load_training_data(args.data, args.cache or Path(scratch) / "cache", preset)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(10):
            data.batch(preset.batch_size, rng, torch.device("cpu"))
        loader_rate = 10 / (time.perf_counter() - start)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        size = preset.image_size
        log.info("preset %s, %d x %d, on %s (torch %s)", preset.name, size, size, name, torch.__version__)
        log.info("%-13s %6s %9s %9s %9s", "stage", "batch", "steps/s", "images/s", "peak GiB")
        for stage in args.stages:
            for batch_size in args.batch_sizes:
                batch = data.batch(batch_size, rng, device)
                try:
                    rate, peak = time_stage(stage, batch, preset.name, args.steps, args.warmup)
                except torch.cuda.OutOfMemoryError:
                    log.info("%-13s %6d out of GPU memory", stage, batch_size)
                    torch.cuda.empty_cache()
                    continue
                memory = f"{peak:9.2f}" if peak is not None else f"{'-':>9}"
                log.info("%-13s %6d %9.2f %9.1f %s", stage, batch_size, rate, rate * batch_size, memory)
        log.info("data loader: %.1f batches/s of %d on one CPU core", loader_rate, preset.batch_size)


if __name__ == "__main__":
    main()
