"""``python -m models.onnx_benchmark --artifacts DIR --run RUN``: onnxruntime against torch eager mode.

For each network that :func:`worker.pipeline.synthesize` runs and each batch size (default 1, 16, 64)
it times the artifacts' ONNX network in onnxruntime and the training run's torch module in eager mode
on the same random inputs, and prints the median milliseconds of ``--repeats`` calls and their ratio.
RUN is the training run the artifacts were exported from (``mrisynth export RUN``). Synthesis
throughput without torch is ``python -m worker.benchmark``.
"""

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from mrisynth.conventions import MODALITIES
from worker.benchmark import table
from worker.sessions import Synthesizer

log = logging.getLogger(__name__)

PIPELINE_NETWORKS: tuple[str, ...] = ("DC_f", "MG", "EC_r", "DC", *(f"SEG_{m}" for m in MODALITIES))
"""The networks :func:`worker.pipeline.synthesize` runs, compared with torch."""


def _timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_ratio_lines(
    synthesizer: Synthesizer, run: Path, batch_sizes: Sequence[int], repeats: int
) -> list[str]:
    """onnxruntime vs torch eager time of each pipeline network, on the same random inputs."""
    # Like the sessions' (no spinning), torch's OpenMP threads must sleep when idle: spinning ones
    # slowed torch 10 to 100 times on our 2-core machine whenever another process was running. The
    # setting counts only before torch is first imported, hence the imports here.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from models.export import load_run
    from models.export_onnx import worker_networks

    loaded = load_run(run)
    specs = {
        spec.name: spec for spec in worker_networks(loaded.networks, loaded.config, loaded.info.image_size)
    }
    rows = []
    for name in PIPELINE_NETWORKS:
        spec = specs[name]
        for batch_size in batch_sizes:
            inputs = spec.make_inputs(batch_size, torch.Generator().manual_seed(0))
            feeds = {n: t.numpy() for n, t in zip(spec.input_names, inputs, strict=True)}
            with torch.no_grad():
                torch_s = _timed(partial(spec.module, *inputs), repeats)
            ort_s = _timed(partial(synthesizer.run, name, **feeds), repeats)
            rows.append(
                [
                    name,
                    str(batch_size),
                    f"{1000 * ort_s:.1f}",
                    f"{1000 * torch_s:.1f}",
                    f"{torch_s / ort_s:.2f}",
                ]
            )
    header = ["network", "batch", "onnxruntime ms", f"torch {torch.__version__} eager ms", "torch / ort"]
    return [f"torch threads {torch.get_num_threads()}", *table(header, rows)]


def main(argv: Sequence[str] | None = None) -> None:
    """Time the networks and log the table."""
    parser = argparse.ArgumentParser(prog="python -m models.onnx_benchmark", description=__doc__)
    parser.add_argument("--artifacts", type=Path, required=True, help="artifacts directory (mrisynth export)")
    parser.add_argument("--run", type=Path, required=True, help="training run the artifacts came from")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64], help="default 1 16 64")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per network (default 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    synthesizer = Synthesizer.load(args.artifacts)
    log.info("artifacts %s, run %s; %s", args.artifacts, args.run, synthesizer.provider)
    lines = torch_ratio_lines(synthesizer, args.run, args.batch_sizes, args.repeats)
    log.info("\n".join(["", *lines]))


if __name__ == "__main__":
    main()
