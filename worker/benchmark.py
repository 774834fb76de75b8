"""``python -m worker.benchmark --artifacts DIR``: synthesis throughput and where the time goes.

For each batch size (default 1, 16, 64) it synthesizes ``--samples`` accepted samples after a warm-up
and prints accepted samples/s, the candidates each filter rejected and the milliseconds per accepted
sample spent in each stage of :data:`worker.candidates.STAGES`. Timing each network in onnxruntime
against torch eager mode needs torch and the training run: that is ``python -m models.onnx_benchmark``;
the same figures next to a TorchIO label-to-image augmenter are ``python -m models.peer_benchmark``.
"""

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from mrisynth.conventions import MODALITIES
from worker.candidates import STAGES
from worker.pipeline import AcceptanceError, SynthesisProgress, synthesize
from worker.request import RequestThresholds, SynthesisRequest
from worker.sessions import Synthesizer

log = logging.getLogger(__name__)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain-text table lines: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[j]) for row in [header, *rows]) for j in range(len(header))]

    def line(row: Sequence[str]) -> str:
        first, *rest = zip(row, widths, strict=True)
        return "  ".join([first[0].ljust(first[1]), *(cell.rjust(width) for cell, width in rest)])

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


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


def _share(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.0%})" if whole else str(part)


def throughput_lines(results: dict[int, SynthesisProgress]) -> list[str]:
    """Summary and per-stage table of :func:`throughput`'s counters.

    Each filter's rejections are given with their share of the candidates that reached it: all of
    them for Algorithm 3, those it kept for the lesion fit, those fitted for the lesion filter.
    """
    sizes = list(results)
    header = ["", *(f"batch {b}" for b in sizes)]
    progresses = results.values()
    summary = [
        ["accepted samples/s", *(f"{p.accepted / p.elapsed_s:.2f}" for p in progresses)],
        ["candidates/s", *(f"{(p.candidates + p.discarded) / p.elapsed_s:.2f}" for p in progresses)],
        ["acceptance rate", *(f"{p.acceptance_rate:.1%}" for p in progresses)],
        ["candidates", *(str(p.candidates) for p in progresses)],
        ["rejected by Algorithm 3", *(_share(p.rejected_structure, p.candidates) for p in progresses)],
        [
            "rejected by lesion fit",
            *(_share(p.rejected_lesion, p.candidates - p.rejected_structure) for p in progresses),
        ],
        [
            "rejected by lesion filter",
            *(
                _share(p.rejected_dice, p.candidates - p.rejected_structure - p.rejected_lesion)
                for p in progresses
            ),
        ],
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


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--artifacts``, request and ``--seed`` options, read back by :func:`request_of`."""
    parser.add_argument("--artifacts", type=Path, required=True, help="artifacts directory (mrisynth export)")
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES), help="default all four")
    parser.add_argument("--lesion-source", default="library", help="library (default), none, or a path")
    parser.add_argument("--structure-mae", type=float, help="Algorithm 3 threshold (default: the manifest's)")
    parser.add_argument("--dice", type=float, help="lesion-filter Dice threshold (default: the manifest's)")
    parser.add_argument("--seed", type=int, default=0)


def request_of(args: argparse.Namespace) -> SynthesisRequest:
    """The request of :func:`add_request_arguments`' options."""
    return SynthesisRequest.model_validate(
        {
            "modalities": args.modalities,
            "lesion_source": args.lesion_source,
            "thresholds": RequestThresholds(structure_mae=args.structure_mae, dice=args.dice),
        }
    )


def log_setup(synthesizer: Synthesizer, request: SynthesisRequest) -> None:
    """Log the artifacts, the execution provider, the CPUs, the onnxruntime threads and the request."""
    manifest = synthesizer.manifest
    log.info(
        "artifacts %s: preset %s, %s images, %d semantic channels, %s; %s; %d CPUs; onnxruntime "
        "intra-op threads %d (0: its default); request %s",
        synthesizer.directory,
        manifest.training.preset,
        "x".join(map(str, manifest.image_size)),
        manifest.semantic_code_channels,
        manifest.lesion_guidance,
        synthesizer.provider,
        os.cpu_count() or 0,
        synthesizer.intra_op_threads,
        request.model_dump_json(),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker.benchmark", description=__doc__)
    add_request_arguments(parser)
    parser.add_argument(
        "--samples", type=int, default=64, help="accepted samples per batch size (default 64)"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64], help="default 1 16 64")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and log the tables."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    synthesizer = Synthesizer.load(args.artifacts)
    request = request_of(args)
    log_setup(synthesizer, request)
    results = throughput(synthesizer, request, args.samples, args.batch_sizes, args.seed)
    log.info("\n".join(["", *throughput_lines(results)]))


if __name__ == "__main__":
    main()
