"""``python -m worker.benchmark --artifacts DIR``: synthesis throughput and where the time goes.

For each batch size (default 1, 16, 64) it synthesizes ``--samples`` accepted samples after a warm-up
and prints accepted samples/s and the milliseconds per accepted sample spent in each stage of
:data:`worker.candidates.STAGES`. With ``--run RUN`` (the training run the artifacts were exported
from) it also times each network in onnxruntime and in torch eager mode on the same inputs; torch is
imported only then (with ``OMP_WAIT_POLICY=PASSIVE`` unless set), and the comparison is skipped with a
message when torch is not installed.
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
from worker.candidates import STAGES
from worker.pipeline import AcceptanceError, SynthesisProgress, synthesize
from worker.request import RequestThresholds, SynthesisRequest
from worker.sessions import Synthesizer

log = logging.getLogger(__name__)

PIPELINE_NETWORKS: tuple[str, ...] = ("DC_f", "MG", "EC_r", "DC", *(f"SEG_{m}" for m in MODALITIES))
"""The networks :func:`worker.pipeline.synthesize` runs, compared with torch."""


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain-text table lines: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[j]) for row in [header, *rows]) for j in range(len(header))]

    def line(row: Sequence[str]) -> str:
        first, *rest = zip(row, widths, strict=True)
        return "  ".join([first[0].ljust(first[1]), *(cell.rjust(width) for cell, width in rest)])

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def _timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _progress(
    synthesizer: Synthesizer, request: SynthesisRequest, seed: int, samples: int, batch_size: int
) -> SynthesisProgress:
    """The counters of one :func:`synthesize` call, also when it gives up on a sample."""
    try:
        return synthesize(synthesizer, request, seed, samples, batch_size).progress
    except AcceptanceError as error:
        log.warning("batch size %d: %s", batch_size, error)
        return error.result.progress


def throughput(
    synthesizer: Synthesizer, request: SynthesisRequest, samples: int, batch_sizes: Sequence[int], seed: int
) -> dict[int, SynthesisProgress]:
    """Counters of one timed :func:`synthesize` call per batch size, each after a warm-up call."""
    results = {}
    for batch_size in batch_sizes:
        _progress(synthesizer, request, seed + 1, min(samples, batch_size), batch_size)
        results[batch_size] = progress = _progress(synthesizer, request, seed, samples, batch_size)
        log.info("batch size %d: %.2f accepted samples/s", batch_size, progress.accepted / progress.elapsed_s)
    return results


def throughput_lines(results: dict[int, SynthesisProgress]) -> list[str]:
    """Summary and per-stage table of :func:`throughput`'s counters."""
    sizes = list(results)
    header = ["", *(f"batch {b}" for b in sizes)]
    summary = [
        ["accepted samples/s", *(f"{p.accepted / p.elapsed_s:.2f}" for p in results.values())],
        ["candidates/s", *(f"{(p.candidates + p.discarded) / p.elapsed_s:.2f}" for p in results.values())],
        ["acceptance rate", *(f"{p.acceptance_rate:.1%}" for p in results.values())],
        ["discarded candidates", *(str(p.discarded) for p in results.values())],
        ["elapsed s", *(f"{p.elapsed_s:.2f}" for p in results.values())],
    ]
    stages = []
    for stage in (*STAGES, "other"):
        cells = []
        for p in results.values():
            seconds = (
                p.elapsed_s - sum(p.stage_seconds.values()) if stage == "other" else p.stage_seconds[stage]
            )
            per_sample = f"{1000 * seconds / p.accepted:.2f}" if p.accepted else "-"
            cells.append(f"{per_sample} ({seconds / p.elapsed_s:.0%})")
        stages.append([stage, *cells])
    return [*table(header, summary), "", "ms per accepted sample (share of time):", *table(header, stages)]


def torch_ratio_lines(
    synthesizer: Synthesizer, run: Path, batch_sizes: Sequence[int], repeats: int
) -> list[str]:
    """onnxruntime vs torch eager time of each pipeline network, on the same random inputs."""
    # Like the sessions' (no spinning), torch's OpenMP threads must sleep when idle: spinning ones
    # slowed torch 10 to 100 times on our 2-core machine whenever another process was running.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch

        from models.export import load_run
        from models.export_onnx import worker_networks
    except ImportError as error:
        return [f"torch comparison skipped: {error} (install the 'train' extra)"]
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker.benchmark", description=__doc__)
    parser.add_argument("--artifacts", type=Path, required=True, help="artifacts directory (mrisynth export)")
    parser.add_argument("--run", type=Path, help="training run of the artifacts, for the torch comparison")
    parser.add_argument(
        "--samples", type=int, default=64, help="accepted samples per batch size (default 64)"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64], help="default 1 16 64")
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES), help="default all four")
    parser.add_argument("--lesion-source", default="library", help="library (default), none, or a path")
    parser.add_argument("--structure-mae", type=float, help="Algorithm 3 threshold (default: the manifest's)")
    parser.add_argument("--dice", type=float, help="lesion-filter Dice threshold (default: the manifest's)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed calls per network in the torch comparison"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and log the tables."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    synthesizer = Synthesizer.load(args.artifacts)
    request = SynthesisRequest.model_validate(
        {
            "modalities": args.modalities,
            "lesion_source": args.lesion_source,
            "thresholds": RequestThresholds(structure_mae=args.structure_mae, dice=args.dice),
        }
    )
    manifest = synthesizer.manifest
    log.info(
        "artifacts %s: preset %s, %s images, %d semantic channels, %s; %s; %d CPUs; request %s",
        args.artifacts,
        manifest.training.preset,
        "x".join(map(str, manifest.image_size)),
        manifest.semantic_code_channels,
        manifest.lesion_guidance,
        synthesizer.provider,
        os.cpu_count() or 0,
        request.model_dump_json(),
    )
    results = throughput(synthesizer, request, args.samples, args.batch_sizes, args.seed)
    lines = ["", *throughput_lines(results), ""]
    if args.run is None:
        lines.append("torch comparison skipped: pass --run RUN, the training run of these artifacts")
    else:
        lines += torch_ratio_lines(synthesizer, args.run, args.batch_sizes, args.repeats)
    log.info("\n".join(lines))


if __name__ == "__main__":
    main()
