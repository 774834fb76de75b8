"""Synthesis without Redis (``mrisynth synthesize``): the chunks of a dataset run in this process.

The same samples as the RQ jobs make for the same artifacts, request and seed (:mod:`worker.jobs`),
streamed into the bundle one chunk at a time, so memory holds one chunk, not the dataset.
"""

import logging
from pathlib import Path

from tqdm import tqdm

from worker.jobs import DatasetSpec, open_bundle
from worker.pipeline import SynthesisProgress, synthesize
from worker.sessions import Synthesizer

log = logging.getLogger(__name__)


def synthesize_bundle(artifacts_dir: Path, spec: DatasetSpec, out: Path, batch_size: int = 16) -> Path:
    """Synthesize the spec's n samples with the artifacts and write them as the bundle ``out``.

    Raises:
        AcceptanceError: a sample was not accepted within its attempt bound (the message says the
            acceptance rate and which threshold to relax); no bundle is left behind.
    """
    synthesizer = Synthesizer.load(artifacts_dir)
    with open_bundle(out, spec, synthesizer.manifest) as bundle, tqdm(total=spec.n, unit="sample") as bar:
        for indices in spec.chunks():

            def report(progress: SynthesisProgress, done: int = len(bundle)) -> None:
                bar.n = done + progress.accepted
                bar.set_postfix(acceptance=f"{progress.acceptance_rate:.0%}", refresh=True)

            result = synthesize(
                synthesizer, spec.request, spec.seed, len(indices), batch_size,
                first_index=indices.start, progress=report,
            )  # fmt: skip
            for sample in result.samples:
                bundle.add(sample)
    log.info("wrote %d samples to %s", spec.n, out)
    return out
