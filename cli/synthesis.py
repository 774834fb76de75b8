"""``mrisynth synthesize``, ``translate``, ``worker``, ``serve`` and ``generate``: datasets made from
exported artifacts, in this process or by the service."""

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cli.bundles import add_bundle_arguments, bundle_options
from mrisynth.conventions import MODALITIES

if TYPE_CHECKING:
    from worker.scan_jobs import ScanProgress

log = logging.getLogger("mrisynth")

STRUCTURE_FROM_HELP = (
    "synthesize on this scan's structure (Sec. 2.5), n volumes on its grid: a folder of one case's NIfTI "
    "files (<key>.nii.gz or <case>_<key>.nii.gz) or KEY=PATH files, keys t1, t1ce, t2, flair, seg"
)


def _scan_files(arguments: list[str]) -> dict[str, Path]:
    """One case's files by key (t1, t1ce, t2, flair, seg): ``KEY=PATH`` arguments, or one folder whose
    files are named ``<key>.nii[.gz]`` or ``<case>_<key>.nii[.gz]`` (BraTS 2021).

    Raises:
        SystemExit: naming what is wrong: an argument that is not ``KEY=PATH`` of a known key, a file
            that does not exist, a key given twice (naming both files), a folder with no scan file.
    """
    from worker.scans import SCAN_KEYS, nifti_stem

    given: dict[str, list[Path]] = {}
    if len(arguments) == 1 and Path(arguments[0]).is_dir():
        folder = Path(arguments[0])
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            stem = nifti_stem(path.name)
            key = next((k for k in SCAN_KEYS if stem == k or stem.endswith("_" + k)), None)
            if key is not None:
                given.setdefault(key, []).append(path.resolve())
        if not given:
            raise SystemExit(f"{folder}: no <key>.nii[.gz] or <case>_<key>.nii[.gz] file, keys {SCAN_KEYS}")
    else:
        for pair in arguments:
            key, _, name = pair.partition("=")
            if key not in SCAN_KEYS or not name:
                raise SystemExit(f"{pair!r} is not KEY=PATH with KEY in {SCAN_KEYS}, nor a scan folder")
            if not Path(name).is_file():
                raise SystemExit(f"{pair!r}: {name} is not a file")
            given.setdefault(key, []).append(Path(name).resolve())
    twice = {key: paths for key, paths in given.items() if len(paths) > 1}
    if twice:
        clashes = "; ".join(f"{' and '.join(map(str, paths))} are both {key}" for key, paths in twice.items())
        raise SystemExit(f"one file per key: {clashes}; keep one of each (or pass KEY=PATH files)")
    return {key: paths[0] for key, paths in given.items()}


def _log_progress(progress: "ScanProgress") -> None:
    """Log a local scan job's progress (:class:`worker.scan_jobs.ScanProgress`)."""
    log.info(
        "%d of %d slices, %d of %d volumes",
        progress.slices_done,
        progress.slices_total,
        progress.accepted,
        progress.requested,
    )


def _on_scan(args: argparse.Namespace, spec_fields: dict, files: dict[str, Path]) -> None:
    """Run a dataset on a scan in this process: its files linked as a scan set, one zip written."""
    import tempfile

    from mrisynth.settings import get_settings
    from worker.jobs import DatasetSpec
    from worker.scan_jobs import scan_bundle
    from worker.sessions import Synthesizer

    settings = get_settings()
    with tempfile.TemporaryDirectory() as folder:
        for key, path in files.items():
            (Path(folder) / (key + (".nii.gz" if path.name.endswith(".gz") else ".nii"))).symlink_to(path)
        request = spec_fields.pop("request").model_copy(update={"structure_source": Path(folder)})
        spec = DatasetSpec(dataset_id="local", request=request, **spec_fields)
        synthesizer = Synthesizer.load(args.artifacts or settings.artifacts_dir)
        scan_bundle(synthesizer, spec, args.out, settings.batch_size, _log_progress)


def _synthesize(args: argparse.Namespace) -> None:
    from mrisynth.settings import get_settings
    from worker.jobs import DatasetSpec
    from worker.local import synthesize_bundle
    from worker.request import RequestThresholds, SynthesisRequest

    request = SynthesisRequest(
        modalities=tuple(args.modalities),
        lesion_source=args.lesion_source,
        thresholds=RequestThresholds(structure_mae=args.structure_mae, dice=args.dice),
    )
    options = bundle_options(args, previews=args.previews, montage_samples=args.montage)
    if args.structure_from:
        fields = {"n": args.n, "seed": args.seed, "request": request, "bundle": options}
        _on_scan(args, fields, _scan_files(args.structure_from))
        return
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


def _translate(args: argparse.Namespace) -> None:
    """Translate a case's given modalities into ``--targets`` (default the missing) in this process."""
    from worker.request import SynthesisRequest

    files = _scan_files(args.inputs)
    targets = args.targets or [m for m in MODALITIES if m not in files]
    if not targets:
        raise SystemExit("every modality is given; name the ones to make (reconstructed) with --targets")
    request = SynthesisRequest(modalities=tuple(targets), lesion_source="none")
    fields = {"n": 1, "seed": 0, "request": request, "bundle": bundle_options(args), "task": "translation"}
    _on_scan(args, fields, files)


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
    from service.client import dataset_request, generate, open_client, scan_set

    files = _scan_files(args.structure_from) if args.structure_from else None
    with open_client(args.server, args.key) as client:
        request = dataset_request(
            args.n,
            args.modalities,
            lesion_source=args.lesion_source,
            structure_source=scan_set(client, files) if files else "noise",
            seed=args.seed,
            layout=args.layout,
            dice=args.dice,
            structure_mae=args.structure_mae,
            bundle={
                "case_prefix": args.case_prefix,
                "nnunet_dataset_id": args.nnunet_id,
                "nnunet_dataset_name": args.nnunet_name,
            },
        )
        try:
            generate(client, request, args.out)
        except KeyboardInterrupt:
            log.info("interrupted: run the same command again to resume")
            raise SystemExit(130) from None


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``synthesize``, ``worker``, ``serve`` and ``generate`` to the subcommands."""
    synth = commands.add_parser(
        "synthesize", help="synthesize a dataset in this process (no Redis) into a zip"
    )
    synth.add_argument("--artifacts", type=Path, default=None, help="artifacts (default: the committed demo)")
    synth.add_argument("--n", type=int, default=8, help="samples (default 8)")
    synth.add_argument("--seed", type=int, default=0, help="seed; same seed, same samples")
    synth.add_argument("--out", type=Path, required=True, help="bundle zip to write")
    synth.add_argument("--modalities", nargs="+", default=list(MODALITIES), help="default: all four")
    synth.add_argument("--lesion-source", default="library", help="library (default), none, or label files")
    add_bundle_arguments(synth, layout_default="brats")
    synth.add_argument("--structure-mae", type=float, help="Algorithm 3 threshold (default: the manifest's)")
    synth.add_argument("--dice", type=float, help="lesion-filter Dice threshold (default: the manifest's)")
    synth.add_argument("--previews", action="store_true", help="a PNG preview per sample")
    synth.add_argument("--montage", type=int, default=4, help="samples in montage.png (default 4)")
    synth.add_argument("--structure-from", nargs="+", metavar="SCAN", help=STRUCTURE_FROM_HELP)
    synth.set_defaults(run=_synthesize)

    translate = commands.add_parser(
        "translate", help="translate the given modalities of a case into the missing ones (Sec. 2.4)"
    )
    translate.add_argument("inputs", nargs="+", metavar="KEY=PATH", help="e.g. t1=case_t1.nii.gz")
    translate.add_argument("--out", type=Path, required=True, help="zip to write")
    translate.add_argument("--targets", nargs="+", choices=MODALITIES, help="default: the missing modalities")
    translate.add_argument(
        "--artifacts", type=Path, default=None, help="artifacts (default: the committed demo)"
    )
    add_bundle_arguments(translate, layout_default="brats")
    translate.set_defaults(run=_translate)

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
    add_bundle_arguments(generate, layout_default=None)
    generate.add_argument("--structure-mae", type=float, help="Algorithm 3 threshold (default: the model's)")
    generate.add_argument("--dice", type=float, help="lesion-filter Dice threshold (default: the model's)")
    generate.add_argument("--structure-from", nargs="+", metavar="SCAN", help=STRUCTURE_FROM_HELP)
    generate.set_defaults(run=_generate)
