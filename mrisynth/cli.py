"""The ``mrisynth`` command line: one subcommand per task, each a thin call into the library."""

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from mrisynth.conventions import MODALITIES

log = logging.getLogger("mrisynth")


def _phantom(args: argparse.Namespace) -> None:
    from mrisynth.phantom import write_dataset

    cases = write_dataset(args.out, cases=args.cases, seed=args.seed)
    log.info("wrote %d phantom cases in BraTS 2021 layout to %s", len(cases), args.out)


def _montage(args: argparse.Namespace) -> None:
    from mrisynth.brats import find_cases, load_case
    from mrisynth.montage import grid, overlay_label, save_png, to_gray

    cases = find_cases(args.data)[: args.cases]
    rows = []
    for case in cases:
        volume = load_case(case)
        slices = [to_gray(volume.images[m][:, :, args.slice]) for m in MODALITIES]
        flair = slices[MODALITIES.index("flair")]
        label = None if volume.label is None else volume.label[:, :, args.slice]
        rows.append([*slices, flair if label is None else overlay_label(flair, label)])
    titles = [*MODALITIES, "flair + label"]
    save_png(args.out, grid(rows, titles, row_names=[f"{c.case_id} z={args.slice}" for c in cases]))
    log.info("wrote a montage of %d cases to %s", len(cases), args.out)


def _slices(args: argparse.Namespace) -> None:
    from mrisynth.brats import SliceConfig, build_slice_cache

    config = SliceConfig(start=args.start, stop=args.stop, test_fraction=args.test_fraction, seed=args.seed)
    path = build_slice_cache(args.data, args.out, config)
    log.info("slice cache ready at %s", path)


def _export(args: argparse.Namespace) -> None:
    from models.export import export_run

    # The ONNX optimizer reports every pass at INFO, the exporter warns of every missing torchvision op.
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    manifest = export_run(args.run_directory, args.out, force=args.force, tolerance=args.tolerance)
    log.info(
        "wrote %d networks and %d lesion labels to %s",
        len(manifest.networks),
        manifest.lesion_library.count,
        args.out,
    )


def _assignment(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` of ``--weight`` and ``--steps``, VALUE a number."""
    name, _, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


def _train(args: argparse.Namespace) -> None:
    from models.presets import get_preset, printed_objective, with_overrides
    from models.trainer import TrainOptions, stage_names, train

    steps = {stage: int(value) for stage, value in args.steps}
    preset = get_preset(args.preset)
    if args.printed:
        preset = printed_objective(preset)
    options = TrainOptions(
        data=args.data,
        out=args.out,
        preset=with_overrides(preset, dict(args.weight), steps),
        stages=tuple(stage_names(args.stage)),
        resume=args.resume,
        seed=args.seed,
        command=shlex.join(["mrisynth", *args.argv]),
        threads=args.threads,
    )
    train(options)
    log.info("trained %s in %s", ", ".join(options.stages), args.out)


def _synthesize(args: argparse.Namespace) -> None:
    from mrisynth.settings import get_settings
    from worker.bundle_layout import BundleLayout, BundleOptions
    from worker.jobs import DatasetSpec
    from worker.local import synthesize_bundle
    from worker.request import RequestThresholds, SynthesisRequest

    request = SynthesisRequest(
        modalities=tuple(args.modalities),
        lesion_source=args.lesion_source,
        thresholds=RequestThresholds(structure_mae=args.structure_mae, dice=args.dice),
    )
    options = BundleOptions(
        layout=BundleLayout(args.layout), extras=True, previews=args.previews, montage_samples=args.montage
    )
    settings = get_settings()
    spec = DatasetSpec(
        dataset_id="local",
        n=args.n,
        seed=args.seed,
        request=request,
        bundle=options,
        chunk_size=settings.chunk_size,
    )
    synthesize_bundle(args.artifacts or settings.artifacts_dir, spec, args.out, settings.batch_size)


def _worker(args: argparse.Namespace) -> None:
    from mrisynth.settings import get_settings
    from worker.runner import run_worker

    run_worker(get_settings(), burst=args.burst)


def _serve(args: argparse.Namespace) -> None:
    from mrisynth.settings import get_settings
    from service.embedded import ServeOptions, serve

    settings = get_settings()
    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    serve(settings, ServeOptions(host=args.host, port=args.port, workers=args.workers))


def _generate(args: argparse.Namespace) -> None:
    from service.client import dataset_request, generate, open_client

    request = dataset_request(
        args.n,
        args.modalities,
        lesion_source=args.lesion_source,
        seed=args.seed,
        layout=args.layout,
        dice=args.dice,
        structure_mae=args.structure_mae,
    )
    with open_client(args.server, args.key) as client:
        try:
            generate(client, request, args.out)
        except KeyboardInterrupt:
            log.info("interrupted: run the same command again to resume")
            raise SystemExit(130) from None


def _evaluate(args: argparse.Namespace) -> None:
    from models.evaluation import EvaluationConfig, run_evaluation, write_report
    from models.evaluation.synthetic import SynthesisConfig
    from models.evaluation.table2 import Table2Config

    config = EvaluationConfig(
        data=args.data,
        artifacts=args.artifacts,
        out=args.out,
        cache=args.cache,
        seed=args.seed,
        preset=args.preset,
        threads=args.threads,
        rows=tuple(args.rows),
        table2=Table2Config(steps=args.steps, repeats=args.repeats),
        synthesis=SynthesisConfig(
            samples=args.synthetic,
            dice=args.dice,
            structure_mae=args.structure_mae,
            candidates=args.candidates,
        ),
        command=shlex.join(["mrisynth", *args.argv]),
    )
    report = write_report(run_evaluation(config))
    log.info("evaluation report: %s", report)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrisynth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    phantom = commands.add_parser("phantom", help="write a BraTS-like phantom dataset from real anatomy")
    phantom.add_argument("--out", type=Path, required=True, help="directory to write (BraTS 2021 layout)")
    phantom.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    phantom.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    phantom.set_defaults(run=_phantom)

    montage = commands.add_parser("montage", help="PNG of a BraTS directory: four modalities + label")
    montage.add_argument("--data", type=Path, required=True, help="BraTS directory (2015, 2018-2021, 2023)")
    montage.add_argument("--out", type=Path, required=True, help="PNG file to write")
    montage.add_argument("--cases", type=int, default=3, help="number of cases, first by id (default 3)")
    montage.add_argument("--slice", type=int, default=80, help="axial slice index (default 80)")
    montage.set_defaults(run=_montage)

    slices = commands.add_parser("slices", help="cache standardized 2D axial slices and the 9:1 split")
    slices.add_argument("--data", type=Path, required=True, help="BraTS directory (2015, 2018-2021, 2023)")
    slices.add_argument("--out", type=Path, required=True, help="cache directory")
    slices.add_argument("--start", type=int, default=55, help="first axial slice (default 55)")
    slices.add_argument("--stop", type=int, default=105, help="axial slice after the last (default 105)")
    slices.add_argument("--test-fraction", type=float, default=0.1, help="held-out subjects (default 0.1)")
    slices.add_argument("--seed", type=int, default=0, help="seed of the subject-level split")
    slices.set_defaults(run=_slices)

    export = commands.add_parser("export", help="ONNX networks + manifest of a training run, for the worker")
    export.add_argument(
        "run_directory", metavar="RUN", type=Path, help="training run directory (mrisynth train --out)"
    )
    export.add_argument("--out", type=Path, required=True, help="artifacts directory to write")
    export.add_argument("--force", action="store_true", help="replace --out if it exists and is not empty")
    export.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest max-abs difference between ONNX and torch outputs (default 1e-4)",
    )
    export.set_defaults(run=_export)

    train = commands.add_parser("train", help="train the networks of the paper on a BraTS directory")
    train.add_argument("--data", type=Path, required=True, help="BraTS directory (2015, 2018-2021, 2023)")
    train.add_argument("--out", type=Path, required=True, help="run directory (docs/artifacts.md)")
    train.add_argument(
        "--preset", choices=("demo", "paper", "test"), default="demo", help="training preset (default demo)"
    )
    train.add_argument(
        "--stage",
        choices=("structure", "segmentation", "synthesis", "all"),
        default="all",
        help="stage to train; all (default) runs the three in order",
    )
    train.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    train.add_argument(
        "--weight",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="replace a loss weight, e.g. lesion_2=100 (repeatable; names in models/presets.py)",
    )
    train.add_argument(
        "--steps",
        type=_assignment,
        action="append",
        default=[],
        metavar="STAGE=N",
        help="replace a stage's step count, e.g. synthesis=4000 (repeatable)",
    )
    train.add_argument(
        "--printed",
        action="store_true",
        help="the objective as printed in the paper, without the registered terms (models/presets.py)",
    )
    train.add_argument("--seed", type=int, default=0, help="seed of torch and of the data sampling")
    train.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default 0: all cores; 1 is faster on a busy CPU)"
    )
    train.set_defaults(run=_train)

    synth = commands.add_parser(
        "synthesize", help="synthesize a dataset in this process (no Redis) into a zip"
    )
    synth.add_argument("--artifacts", type=Path, default=None, help="artifacts (default: the committed demo)")
    synth.add_argument("--n", type=int, default=8, help="samples (default 8)")
    synth.add_argument("--seed", type=int, default=0, help="seed; same seed, same samples")
    synth.add_argument("--out", type=Path, required=True, help="bundle zip to write")
    synth.add_argument("--modalities", nargs="+", default=list(MODALITIES), help="default: all four")
    synth.add_argument("--lesion-source", default="library", help="library (default), none, or label files")
    synth.add_argument("--layout", choices=("brats", "brats2023", "nnunet"), default="brats")
    synth.add_argument("--structure-mae", type=float, help="Algorithm 3 threshold (default: the manifest's)")
    synth.add_argument("--dice", type=float, help="lesion-filter Dice threshold (default: the manifest's)")
    synth.add_argument("--previews", action="store_true", help="a PNG preview per sample")
    synth.add_argument("--montage", type=int, default=4, help="samples in montage.png (default 4)")
    synth.set_defaults(run=_synthesize)

    worker = commands.add_parser(
        "worker", help="run a synthesis worker on REDIS_URL's queue (settings: MRISYNTH_* variables)"
    )
    worker.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    worker.set_defaults(run=_worker)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API; without REDIS_URL also a private redis-server and workers",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes without REDIS_URL (default 1)"
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        help="datasets, lesion sets and, without REDIS_URL, Redis' files; kept across restarts "
        "(default: $MRISYNTH_DATA_DIR, else ./var)",
    )
    serve.set_defaults(run=_serve)

    generate = commands.add_parser("generate", help="have a mrisynth server make a dataset; download its zip")
    generate.add_argument("--n", type=int, required=True, help="samples")
    generate.add_argument("--out", type=Path, required=True, help="zip to write (resumes <out>.part)")
    generate.add_argument("--server", default="http://127.0.0.1:8000", help="server URL (default: local)")
    generate.add_argument(
        "--key", default=os.environ.get("MRISYNTH_API_KEY"), help="API key (default: $MRISYNTH_API_KEY)"
    )
    generate.add_argument("--seed", type=int, help="seed; same seed, same samples (default: the server's)")
    generate.add_argument("--modalities", nargs="+", default=list(MODALITIES), help="default: all four")
    generate.add_argument("--lesion-source", default="library", help="library (default), none, or a set id")
    generate.add_argument("--layout", choices=("brats", "brats2023", "nnunet"), help="default: brats")
    generate.add_argument("--structure-mae", type=float, help="Algorithm 3 threshold (default: the model's)")
    generate.add_argument("--dice", type=float, help="lesion-filter Dice threshold (default: the model's)")
    generate.set_defaults(run=_generate)

    evaluate = commands.add_parser(
        "evaluate", help="the paper's Tables 1 and 2, registration and realism of artifacts, as a report"
    )
    evaluate.add_argument("--data", type=Path, required=True, help="BraTS directory the artifacts saw")
    evaluate.add_argument("--artifacts", type=Path, required=True, help="artifacts (mrisynth export)")
    evaluate.add_argument("--out", type=Path, required=True, help="report directory to write")
    evaluate.add_argument("--cache", type=Path, help="slice cache to build or reuse (default: temporary)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of synthesis, data order and training")
    evaluate.add_argument("--steps", type=int, default=400, help="segmentor steps per Table 2 row (400)")
    evaluate.add_argument(
        "--rows", type=int, nargs="+", default=[1, 2, 3, 6, 13, 25, 19], help="Table 2 rows by NO."
    )
    evaluate.add_argument("--repeats", type=int, default=1, help="trainings per row, best kept (paper: 4)")
    evaluate.add_argument("--synthetic", type=int, default=200, help="unfiltered synthetic samples (200)")
    evaluate.add_argument("--dice", type=float, help="Table 2 lesion-filter Dice (default: the manifest's)")
    evaluate.add_argument("--structure-mae", type=float, help="Algorithm 3 MAE (default: the manifest's)")
    evaluate.add_argument("--candidates", type=int, default=20, help="candidates per filtered sample (20)")
    evaluate.add_argument("--preset", choices=("demo", "paper", "test"), default="demo", help="segmentors")
    evaluate.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0: all)")
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mrisynth`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError) as error:
        parser.exit(2, f"mrisynth {args.command}: error: {error}\n")
