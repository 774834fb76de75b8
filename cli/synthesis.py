"""``mrisynth synthesize``, ``worker``, ``serve`` and ``generate``: datasets made from exported artifacts,
in this process or by the service."""

import argparse
import logging
import os
from pathlib import Path

from cli.bundles import add_bundle_arguments, bundle_options
from mrisynth.conventions import MODALITIES

log = logging.getLogger("mrisynth")


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
        bundle={
            "case_prefix": args.case_prefix,
            "nnunet_dataset_id": args.nnunet_id,
            "nnunet_dataset_name": args.nnunet_name,
        },
    )
    with open_client(args.server, args.key) as client:
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
    add_bundle_arguments(generate, layout_default=None)
    generate.add_argument("--structure-mae", type=float, help="Algorithm 3 threshold (default: the model's)")
    generate.add_argument("--dice", type=float, help="lesion-filter Dice threshold (default: the model's)")
    generate.set_defaults(run=_generate)
