"""Synthetic data of the evaluation, made by the worker's ONNX pipeline (Sec. 2.8, Fig. 7).

Two sets, both from :func:`worker.pipeline.synthesize` with the artifacts' lesion library:

* the **unfiltered** set (Table 1, registration, realism): the lesion filter off (Dice threshold 0),
  as Table 1 scores "unfiltered synthetic data" (Sec. 3.5) with the very segmentors the filter uses;
  Algorithm 3 keeps its threshold, since a map with an open brain outline is not a brain;
* the **Table 2** set: the lesion filter at the requested Dice threshold (default the manifest's,
  0.95 for the paper), each sample allowed ``candidates`` candidates. When a sample is not accepted
  within them (:class:`worker.pipeline.AcceptanceError`), the filter is dropped and the set is the
  unfiltered one; :attr:`SyntheticSet.note` says so, with the acceptance counts, for the report.

Sample k of a request is a pure function of (artifacts, request, seed, k), so the first n samples of a
larger set are the set of n samples: the unfiltered set is made once, at the larger of the two sizes.
"""

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mrisynth.conventions import MODALITIES
from worker.pipeline import AcceptanceError, SynthesisProgress, synthesize
from worker.request import AttemptBounds, RequestThresholds, SynthesisRequest
from worker.sessions import Synthesizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthesisConfig:
    """How the synthetic sets are made.

    Attributes:
        samples: size of the unfiltered set of Table 1, registration and realism, >= 2; default 200.
        dice: lesion-filter threshold of the Table 2 set; None: the manifest's (0.95 by default).
        structure_mae: Algorithm 3 threshold of both sets; None: the manifest's (0.05 by default).
        candidates: candidates a Table 2 sample may take before the filter is dropped, >= 1; default 20.
        batch_size: candidates per batched ONNX call; changes speed, not samples. Default 16.
    """

    samples: int = 200
    dice: float | None = None
    structure_mae: float | None = None
    candidates: int = 20
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.samples < 2 or self.candidates < 1 or self.batch_size < 1:
            raise ValueError("samples must be >= 2, candidates and batch_size >= 1")


@dataclass(frozen=True, eq=False)
class SyntheticSet:
    """Synthetic samples as arrays.

    Attributes:
        images: float32 (N, 4, H, W), modalities in ``MODALITIES`` order.
        labels: uint8 (N, H, W), the input lesion labels.
        f: uint8 (N, H, W), the input structural feature maps (Algorithm 1 space).
        brain_mask: uint8 (N, H, W), MG's brain masks in {0, 1}.
        mean_dice: float64 (N,), the lesion filter's score of each sample.
        request: the request that made them.
        progress: the synthesis counters (acceptance and rejections).
        note: how the set came about, for the report ("" when as asked).
    """

    images: np.ndarray
    labels: np.ndarray
    f: np.ndarray
    brain_mask: np.ndarray
    mean_dice: np.ndarray
    request: SynthesisRequest
    progress: SynthesisProgress
    note: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> "SyntheticSet":
        """The first n samples (the set a request of n samples gives)."""
        return dataclasses.replace(
            self,
            images=self.images[:n],
            labels=self.labels[:n],
            f=self.f[:n],
            brain_mask=self.brain_mask[:n],
            mean_dice=self.mean_dice[:n],
        )


def make_request(dice: float | None, structure_mae: float | None, candidates: int = 200) -> SynthesisRequest:
    """A request for the four modalities with lesions from the artifacts' library."""
    return SynthesisRequest(
        thresholds=RequestThresholds(dice=dice, structure_mae=structure_mae),
        bounds=AttemptBounds(candidates_per_sample=candidates),
    )


def synthesize_set(
    synthesizer: Synthesizer, request: SynthesisRequest, seed: int, n: int, batch_size: int
) -> SyntheticSet:
    """n samples of a request (samples 0 .. n - 1 of ``seed``), with a progress bar.

    Raises:
        AcceptanceError: a sample was not accepted within the request's candidate bound.
    """
    with tqdm(total=n, desc="synthesis", unit="sample", dynamic_ncols=True) as bar:

        def report(progress: SynthesisProgress) -> None:
            bar.n = progress.accepted
            bar.set_postfix(acceptance=f"{progress.acceptance_rate:.0%}", refresh=True)

        result = synthesize(synthesizer, request, seed, n, batch_size, progress=report)
    samples = result.samples
    return SyntheticSet(
        images=np.stack([np.stack([s.images[m] for m in MODALITIES]) for s in samples]).astype(np.float32),
        labels=np.stack([s.label for s in samples]),
        f=np.stack([s.f for s in samples]),
        brain_mask=np.stack([s.brain_mask for s in samples]),
        mean_dice=np.asarray([s.scores.mean_dice for s in samples]),
        request=request,
        progress=result.progress,
    )


def synthetic_sets(
    synthesizer: Synthesizer, config: SynthesisConfig, seed: int, table2_samples: int
) -> tuple[SyntheticSet, SyntheticSet | None]:
    """The unfiltered set of ``config.samples`` and the Table 2 set of ``table2_samples`` (module docstring).

    Args:
        synthesizer: the loaded artifacts.
        config: sizes and thresholds.
        seed: the synthesis seed.
        table2_samples: samples Table 2 needs; 0 for none.

    Returns:
        (unfiltered set, Table 2 set or None).
    """
    unfiltered = make_request(0.0, config.structure_mae)
    filtered = make_request(config.dice, config.structure_mae, config.candidates)
    asked = synthesizer.manifest.thresholds.dice if config.dice is None else config.dice
    table2: SyntheticSet | None = None
    note = ""
    if table2_samples and asked > 0:
        try:
            table2 = synthesize_set(synthesizer, filtered, seed, table2_samples, config.batch_size)
        except AcceptanceError as error:
            progress = error.result.progress
            note = (
                f"the lesion filter at Dice {asked:g} accepted {progress.accepted} of "
                f"{progress.candidates} candidates ({progress.acceptance_rate:.1%}) before a sample "
                f"exceeded {config.candidates} candidates; Table 2 uses the unfiltered set (Dice 0)"
            )
            logger.warning("%s", note)
    needed = max(config.samples, table2_samples if table2 is None else 0)
    unfiltered_set = synthesize_set(synthesizer, unfiltered, seed, needed, config.batch_size)
    if table2 is None and table2_samples:
        table2 = dataclasses.replace(unfiltered_set.head(table2_samples), note=note)
    return unfiltered_set.head(config.samples), table2
