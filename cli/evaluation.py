"""``mrisynth evaluate``: the paper's Tables 1 and 2 with repeats and intervals on held-out cases, paired
fidelity, translation, registration, realism and MMD of artifacts, as a report.

The default run (about an hour on a 2-core CPU, see docs/evaluation/README.md) for the demo artifacts:
``mrisynth phantom --out data/phantom-eval --cases 6 --seed 1`` once, then ``mrisynth evaluate --data
data/phantom --test-data data/phantom-eval --artifacts artifacts/demo --out docs/evaluation``.
"""

import argparse
import logging
import shlex
from pathlib import Path

log = logging.getLogger("mrisynth")


def _evaluate(args: argparse.Namespace) -> None:
    from models.evaluation import EvaluationConfig, run_evaluation, write_report
    from models.evaluation.synthetic import SynthesisConfig
    from models.evaluation.table2 import Table2Config

    config = EvaluationConfig(
        data=args.data,
        artifacts=args.artifacts,
        out=args.out,
        test_data=args.test_data,
        min_test_cases=args.min_test_cases,
        bootstrap=args.bootstrap,
        translation=not args.no_translation,
        cache=args.cache,
        seed=args.seed,
        preset=args.preset,
        threads=args.threads,
        rows=tuple(args.rows),
        table2=Table2Config(
            steps=args.steps,
            repeats=args.repeats,
            evaluations=args.evaluations,
            lr=None if args.lr == 0 else args.lr,
            beta1=None if args.beta1 < 0 else args.beta1,
        ),
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


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the subcommands."""
    evaluate = commands.add_parser(
        "evaluate", help="the paper's Tables 1 and 2 on held-out cases, fidelity and realism of artifacts"
    )
    evaluate.add_argument("--data", type=Path, required=True, help="BraTS directory the artifacts saw")
    evaluate.add_argument(
        "--test-data",
        type=Path,
        help="BraTS directory whose every case is held out (default: the artifacts' test split)",
    )
    evaluate.add_argument("--min-test-cases", type=int, default=5, help="held-out cases required (default 5)")
    evaluate.add_argument("--artifacts", type=Path, required=True, help="artifacts (mrisynth export)")
    evaluate.add_argument("--out", type=Path, required=True, help="report directory to write")
    evaluate.add_argument("--cache", type=Path, help="slice cache to build or reuse (default: temporary)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of synthesis, data order and training")
    evaluate.add_argument("--steps", type=int, default=400, help="segmentor steps per Table 2 run (400)")
    evaluate.add_argument(
        "--rows", type=int, nargs="+", default=[1, 2, 3, 6, 13, 25, 19], help="Table 2 rows by NO."
    )
    evaluate.add_argument("--repeats", type=int, default=3, help="trainings per row from other seeds (3)")
    evaluate.add_argument("--evaluations", type=int, default=3, help="curve points per training (3)")
    evaluate.add_argument("--lr", type=float, default=0.0, help="segmentor Adam lr (default 0: the preset's)")
    evaluate.add_argument(
        "--beta1", type=float, default=-1.0, help="segmentor Adam beta1 (default negative: the preset's)"
    )
    evaluate.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (2000)")
    evaluate.add_argument("--no-translation", action="store_true", help="skip the translation table")
    evaluate.add_argument("--synthetic", type=int, default=200, help="unfiltered synthetic samples (200)")
    evaluate.add_argument("--dice", type=float, help="Table 2 lesion-filter Dice (default: the manifest's)")
    evaluate.add_argument("--structure-mae", type=float, help="Algorithm 3 MAE (default: the manifest's)")
    evaluate.add_argument("--candidates", type=int, default=20, help="candidates per filtered sample (20)")
    evaluate.add_argument("--preset", choices=("demo", "paper", "test"), default="demo", help="segmentors")
    evaluate.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2; 0: all)")
    evaluate.set_defaults(run=_evaluate)
