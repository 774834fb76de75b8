"""The ``mrisynth`` command line: one subcommand per task, each a thin call into the library."""

import argparse
import logging
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
        rows.append(
            [*slices, overlay_label(slices[MODALITIES.index("flair")], volume.label[:, :, args.slice])]
        )
    titles = [*MODALITIES, "flair + label"]
    save_png(args.out, grid(rows, titles, row_names=[f"{c.case_id} z={args.slice}" for c in cases]))
    log.info("wrote a montage of %d cases to %s", len(cases), args.out)


def _slices(args: argparse.Namespace) -> None:
    from mrisynth.brats import SliceConfig, build_slice_cache

    config = SliceConfig(start=args.start, stop=args.stop, test_fraction=args.test_fraction, seed=args.seed)
    path = build_slice_cache(args.data, args.out, config)
    log.info("slice cache ready at %s", path)


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
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mrisynth`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as error:
        parser.exit(2, f"mrisynth {args.command}: error: {error}\n")
