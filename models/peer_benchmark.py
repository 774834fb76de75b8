"""``python -m models.peer_benchmark --artifacts DIR``: our synthesis next to a SynthSeg-like augmenter.

In one process, on the same CPU and the same lesion labels (the artifacts' lesion library,
:attr:`worker.sessions.Synthesizer.lesion_library`) at the same image size:

* the peer: TorchIO's ``RandomLabelsToImage`` (a random Gaussian intensity per label value of a
  ``LabelMap``, the label as a (1, H, W, 1) volume) followed by ``RandomBlur``, ``RandomBiasField`` and
  ``RandomNoise``, called once per modality of a sample (four calls for four modalities), on labels
  drawn at random from the library;
* ours: :func:`worker.pipeline.synthesize` at the request's thresholds (the manifest's by default),
  timed by :func:`worker.benchmark.throughput`.

It logs the peer's samples/s (measured before and after ours, so that a drift of a busy machine shows),
our accepted samples/s, their ratio, and :func:`worker.benchmark.throughput_lines`: the candidates each
filter rejected and the milliseconds per accepted sample of each stage. torch runs the peer with
``--peer-threads`` threads (default 1: on 96 x 96 images torch's intra-op parallelism costs more than
it gains, 22 against 5 samples/s with 2 threads on a busy 2-core machine); onnxruntime runs ours with
the ``onnx_*`` settings (:mod:`mrisynth.settings`). It lives in ``models`` because torchio imports
torch, which the worker must not.
"""

import argparse
import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
import torchio as tio

from worker.benchmark import add_request_arguments, log_setup, request_of, table, throughput, throughput_lines
from worker.pipeline import SynthesisProgress
from worker.request import SynthesisRequest
from worker.sessions import Synthesizer

log = logging.getLogger(__name__)

PEER_WARMUP = 4
"""Untimed peer samples before each timed run."""


def peer_transform() -> tio.Compose:
    """The SynthSeg-like peer: label-to-image, blur, bias field and noise, TorchIO's defaults."""
    return tio.Compose(
        [
            tio.RandomLabelsToImage(label_key="label", image_key="image"),
            tio.RandomBlur(),
            tio.RandomBiasField(),
            tio.RandomNoise(),
        ]
    )


def peer_rate(labels: np.ndarray, samples: int, modalities: int, seed: int) -> float:
    """Samples/s of the peer: ``modalities`` transform calls per sample on a label drawn from ``labels``.

    Args:
        labels: uint8 (N, H, W) lesion labels, N >= 1.
        samples: timed samples, >= 1 (after :data:`PEER_WARMUP` untimed ones).
        modalities: images per sample, >= 1.
        seed: seeds the label draws and torch's generator.
    """
    transform, rng = peer_transform(), np.random.default_rng(seed)
    torch.manual_seed(seed)

    def sample() -> None:
        label = torch.from_numpy(labels[rng.integers(len(labels))].astype(np.int64))[None, :, :, None]
        subject = tio.Subject(label=tio.LabelMap(tensor=label))
        for _ in range(modalities):
            transform(subject)

    for _ in range(PEER_WARMUP):
        sample()
    start = time.perf_counter()
    for _ in range(samples):
        sample()
    return samples / (time.perf_counter() - start)


def compare(
    synthesizer: Synthesizer, request: SynthesisRequest, samples: int, batch_size: int, seed: int
) -> tuple[tuple[float, float], SynthesisProgress]:
    """The peer's samples/s before and after ours, and the counters of our timed run.

    Args:
        synthesizer: the loaded artifacts; the peer draws from their lesion library.
        request: our request (its modalities are the peer's calls per sample).
        samples: samples of each timed run (ours: accepted ones), >= 1.
        batch_size: our candidates per batched network call, >= 1.
        seed: of both.
    """
    labels, modalities = synthesizer.lesion_library, len(request.modalities)
    if not len(labels):
        raise ValueError(f"the lesion library of {synthesizer.directory} holds no lesion to compare on")
    before = peer_rate(labels, samples, modalities, seed)
    ours = throughput(synthesizer, request, samples, [batch_size], seed)[batch_size]
    after = peer_rate(labels, samples, modalities, seed + 1)
    return (before, after), ours


def comparison_lines(peer: tuple[float, float], ours: SynthesisProgress, batch_size: int) -> list[str]:
    """Both rates and their ratio, then :func:`worker.benchmark.throughput_lines` of ours."""
    mean_peer = sum(peer) / 2
    rate = ours.accepted / ours.elapsed_s if ours.elapsed_s > 0 else 0.0
    rows = [
        ["TorchIO peer, before ours", f"{peer[0]:.2f}"],
        ["TorchIO peer, after ours", f"{peer[1]:.2f}"],
        ["ours, accepted", f"{rate:.2f}"],
        ["ratio ours / peer (mean)", f"{rate / mean_peer:.3f}"],
    ]
    return [*table(["", "samples/s"], rows), "", *throughput_lines({batch_size: ours})]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.peer_benchmark", description=__doc__)
    add_request_arguments(parser)
    parser.add_argument("--n", type=int, default=64, help="samples per timed run, ours accepted (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="our candidates per call (default 16)")
    parser.add_argument("--peer-threads", type=int, default=1, help="torch threads of the peer (default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run both and log the comparison."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.peer_threads)
    synthesizer = Synthesizer.load(args.artifacts)
    request = request_of(args)
    log_setup(synthesizer, request)
    log.info("peer: torchio %s, torch %s, %d threads", tio.__version__, torch.__version__, args.peer_threads)
    peer, ours = compare(synthesizer, request, args.n, args.batch_size, args.seed)
    log.info("\n".join(["", *comparison_lines(peer, ours, args.batch_size)]))


if __name__ == "__main__":
    main()
