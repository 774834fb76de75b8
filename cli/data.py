"""``mrisynth phantom``, ``montage``, ``slices`` and ``merge``: BraTS-layout data, written, drawn, sliced
(cached, or written as a bundle) and bundles mixed."""

import argparse
import logging
from pathlib import Path

from cli.bundles import add_bundle_arguments, bundle_options
from mrisynth.conventions import MODALITIES

log = logging.getLogger("mrisynth")


def _phantom(args: argparse.Namespace) -> None:
    from mrisynth.phantom import write_dataset

    cases = write_dataset(args.out, cases=args.cases, seed=args.seed)
    log.info("wrote %d phantom cases in BraTS 2021 layout to %s", len(cases), args.out)


def _scan_montage(args: argparse.Namespace) -> None:
    """The montage of a zip of volumes (a dataset on a scan): per case the ``--scan`` slice, then each
    modality and the label over FLAIR at the same slice."""
    import gzip
    import json
    import zipfile

    import nibabel as nib
    import numpy as np

    from mrisynth.montage import grid, overlay_label, save_png, to_gray
    from worker.bundle_layout import BundleLayout, BundleOptions

    def read(data: bytes) -> np.ndarray:
        image = nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        return np.asarray(image.dataobj)[:, :, args.slice]

    given = to_gray(read(args.scan.read_bytes()))
    with zipfile.ZipFile(args.data) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
        decode = BundleOptions(layout=BundleLayout(manifest["layout"])).label_map
        rows, names = [], []
        for case in manifest["cases"][: args.cases]:
            slices = {key: read(bundle.read(name)) for key, name in case["files"].items()}
            grays = [to_gray(slices[m]) for m in MODALITIES]
            label = np.vectorize(decode.__getitem__, otypes=[np.uint8])(slices["seg"])
            rows.append([given, *grays, overlay_label(grays[MODALITIES.index("flair")], label)])
            names.append(f"{case['case_id']} z={args.slice}")
    save_png(args.out, grid(rows, ["input", *MODALITIES, "flair + label"], names))
    log.info("wrote a montage of %d cases on %s to %s", len(rows), args.scan, args.out)


def _montage(args: argparse.Namespace) -> None:
    from mrisynth.brats import find_cases, load_case
    from mrisynth.montage import grid, overlay_label, save_png, to_gray

    if args.scan is not None:
        _scan_montage(args)
        return
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
    from mrisynth.artifacts import load_manifest
    from mrisynth.brats import SliceConfig, build_slice_cache
    from mrisynth.settings import get_settings
    from worker.real_bundle import write_real_bundle

    config = SliceConfig(start=args.start, stop=args.stop, test_fraction=args.test_fraction, seed=args.seed)
    if args.format == "cache":
        path = build_slice_cache(args.data, args.out, config)
        log.info("slice cache ready at %s", path)
        return
    manifest = load_manifest((args.artifacts or get_settings().artifacts_dir) / "manifest.json")
    options = bundle_options(args, modalities=tuple(args.modalities), voxel_size_mm=manifest.voxel_size_mm)
    write_real_bundle(args.data, args.out, options, config, manifest.image_size[0], args.split)


def _merge(args: argparse.Namespace) -> None:
    from worker.merge import merge_bundles

    merge_bundles(args.bundles, args.out)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``phantom``, ``montage``, ``slices`` and ``merge`` to the subcommands."""
    phantom = commands.add_parser("phantom", help="write a BraTS-like phantom dataset from real anatomy")
    phantom.add_argument("--out", type=Path, required=True, help="directory to write (BraTS 2021 layout)")
    phantom.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    phantom.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    phantom.set_defaults(run=_phantom)

    montage = commands.add_parser(
        "montage", help="PNG of a BraTS directory, or of a dataset made on a scan: four modalities + label"
    )
    montage.add_argument(
        "--data",
        type=Path,
        required=True,
        help="BraTS directory (2015, 2018-2021, 2023), or with --scan a zip",
    )
    montage.add_argument(
        "--scan",
        type=Path,
        help="the NIfTI file a dataset zip (--data) was made on (--structure-from): drawn first in each row",
    )
    montage.add_argument("--out", type=Path, required=True, help="PNG file to write")
    montage.add_argument("--cases", type=int, default=3, help="number of cases, first by id (default 3)")
    montage.add_argument("--slice", type=int, default=80, help="axial slice index (default 80)")
    montage.set_defaults(run=_montage)

    slices = commands.add_parser(
        "slices",
        help="standardized 2D axial slices: a training cache (.npy), or a bundle zip like a synthetic one",
    )
    slices.add_argument("--data", type=Path, required=True, help="BraTS directory (2015, 2018-2021, 2023)")
    slices.add_argument(
        "--out", type=Path, required=True, help="cache directory, or the zip with --format nifti"
    )
    slices.add_argument(
        "--format",
        choices=("cache", "nifti"),
        default="cache",
        help="cache: the .npy slice cache of training (default); nifti: a bundle zip in the layout, image "
        "size, voxel size and scale of the artifacts' synthetic bundles",
    )
    slices.add_argument(
        "--artifacts", type=Path, help="nifti: whose image and voxel size (default: the demo)"
    )
    slices.add_argument("--split", choices=("all", "train", "test"), default="all", help="nifti: cases (all)")
    slices.add_argument("--modalities", nargs="+", default=list(MODALITIES), help="nifti: default all four")
    add_bundle_arguments(slices, layout_default="brats")
    slices.add_argument("--start", type=int, default=55, help="first axial slice (default 55)")
    slices.add_argument("--stop", type=int, default=105, help="axial slice after the last (default 105)")
    slices.add_argument("--test-fraction", type=float, default=0.1, help="held-out subjects (default 0.1)")
    slices.add_argument("--seed", type=int, default=0, help="seed of the subject-level split")
    slices.set_defaults(run=_slices)

    merge = commands.add_parser(
        "merge", help="one bundle from several of the same layout (real and synthetic slices mixed)"
    )
    merge.add_argument("bundles", type=Path, nargs="+", help="bundle zips, e.g. real.zip synthetic.zip")
    merge.add_argument("--out", type=Path, required=True, help="merged zip to write")
    merge.set_defaults(run=_merge)
