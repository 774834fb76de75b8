"""``mrisynth export`` and ``train``: the networks of the paper trained on BraTS data, then exported."""

import argparse
import dataclasses
import logging
import shlex
from pathlib import Path

log = logging.getLogger("mrisynth")


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
    if args.paired_lesion:
        preset = dataclasses.replace(preset, paired_lesion=args.paired_lesion)
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


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``export`` and ``train`` to the subcommands."""
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
    train.add_argument(
        "--paired-lesion",
        choices=("own", "pasted"),
        help="the label of the paired synthesis term (S): the slice's own (the preset's default) or a "
        "library lesion pasted with its images (models/data.py)",
    )
    train.add_argument("--seed", type=int, default=0, help="seed of torch and of the data sampling")
    train.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default 0: all cores; 1 is faster on a busy CPU)"
    )
    train.set_defaults(run=_train)
