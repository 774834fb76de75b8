"""Synthetic datasets (paper Sec. 2.8, Fig. 7): :func:`synthesize` n accepted samples, in batches.

Reproducibility. Sample k of a request is a pure function of (artifacts, request, seed, k): it is the
first accepted candidate among attempts a = 0, 1, 2, ... at k, and candidate (k, a) draws its
randomness from ``SeedSequence(seed, spawn_key=(k, a, stream))`` only (:mod:`worker.candidates`).
The batch size, the order of evaluation and how the job layer splits a request into chunks
(``first_index``) therefore never change the arrays: samples ``first_index .. first_index + n - 1``
are the same whether made in one call or in many. This rests on onnxruntime computing each batch
item independently of the others, which holds bit for bit on CPU (the tests check it); with the
CUDA provider cuDNN may choose other kernels for other batch sizes, so the last bits of an array, and
rarely a binarized pixel, may differ between batch sizes there.

Batching. Each round evaluates up to ``batch_size`` candidates with one call per network. It takes
the lowest unresolved samples and gives each its next attempt; when fewer samples remain than the
batch holds, it also gives each some of its following attempts at once (about 1 / acceptance rate of
them, as observed so far), so that a low acceptance rate still fills the batch. Candidates made
beyond a sample's accepted attempt are counted as ``discarded`` and do not enter any other count,
so the counts of a call that succeeds do not depend on batching either.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, computed_field

from worker.candidates import STAGES, Candidate, Rejection, StageClock, evaluate, make_plan
from worker.filters import RejectionTally
from worker.request import SynthesisRequest
from worker.sessions import Synthesizer

log = logging.getLogger(__name__)


class Attempts(BaseModel):
    """How much it took to accept one sample.

    Attributes:
        structure: structural feature maps decoded by DC_f (candidates tried), >= 1.
        lesion: lesion draws over all its candidates (0 for healthy samples).
        dice: candidates synthesized and put through the lesion filter, >= 1.
    """

    model_config = ConfigDict(frozen=True)

    structure: int
    lesion: int
    dice: int


class SampleScores(BaseModel):
    """The scores of an accepted sample, JSON-ready.

    Attributes:
        structure_mae: Algorithm 3's MAE between MG's brain mask and the filled contours of f.
        dice: whole-tumor Dice per requested modality between the label and that modality's
            segmentation (1.0 when both are empty).
        mean_dice: their mean over the requested modalities, the lesion filter's score.
        lesion_pixels: pixels each modality's segmentor calls lesion.
        attempts: see :class:`Attempts`.
    """

    model_config = ConfigDict(frozen=True)

    structure_mae: float
    dice: dict[str, float]
    mean_dice: float
    lesion_pixels: dict[str, int]
    attempts: Attempts


@dataclass(frozen=True, eq=False)
class Sample:
    """One accepted synthetic sample (Fig. 7's output).

    Attributes:
        index: its index k in the request.
        images: float32 (H, W) per requested modality, per-image standardized, in ``MODALITIES`` order.
        label: uint8 (H, W) lesion label, values in (0, 1, 2, 4); all zero for healthy samples.
        f: uint8 (H, W) structural feature map in {0, 1}.
        brain_mask: uint8 (H, W) MG's brain mask in {0, 1}; every lesion pixel lies inside it.
        scores: the filters' scores.
    """

    index: int
    images: dict[str, np.ndarray]
    label: np.ndarray
    f: np.ndarray
    brain_mask: np.ndarray
    scores: SampleScores


class SynthesisProgress(BaseModel):
    """Counters of a :func:`synthesize` call, JSON-ready for ``job.meta``.

    Every candidate counted is accepted or rejected by exactly one filter:
    ``candidates = accepted + rejected_structure + rejected_lesion + rejected_dice``.

    Attributes:
        requested: samples asked for.
        accepted: samples accepted so far.
        candidates: candidates that count towards the samples (up to each one's accepted attempt).
        rejected_structure: by Algorithm 3 (``thresholds.structure_mae``).
        rejected_lesion: no lesion fitted inside the brain mask in ``bounds.lesion_draws`` draws.
        rejected_dice: by the lesion filter (``thresholds.dice``, or ``lesion_free_fraction``).
        discarded: candidates evaluated ahead of need and dropped (batching overhead, not a filter).
        elapsed_s: wall-clock seconds so far.
        stage_seconds: seconds per stage of :data:`worker.candidates.STAGES`.
    """

    requested: int
    accepted: int = 0
    candidates: int = 0
    rejected_structure: int = 0
    rejected_lesion: int = 0
    rejected_dice: int = 0
    discarded: int = 0
    elapsed_s: float = 0.0
    stage_seconds: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def samples_per_s(self) -> float:
        """Accepted samples per second of wall-clock time, 0.0 at the start."""
        return self.accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def acceptance_rate(self) -> float:
        """accepted / candidates, 0.0 before any candidate."""
        return self.accepted / self.candidates if self.candidates else 0.0


@dataclass(frozen=True)
class SynthesisResult:
    """What :func:`synthesize` made: accepted samples in index order, and the counters."""

    samples: list[Sample]
    progress: SynthesisProgress


class AcceptanceError(RuntimeError):
    """A sample was not accepted within ``bounds.candidates_per_sample`` candidates.

    Attributes:
        result: the samples accepted before giving up, and the counters.
        threshold: the request field to relax: the filter that rejected the most candidates.
    """

    def __init__(self, message: str, result: SynthesisResult, threshold: str) -> None:
        super().__init__(message)
        self.result = result
        self.threshold = threshold


ProgressCallback = Callable[[SynthesisProgress], None]


def _advice(progress: SynthesisProgress, dice_threshold: str) -> str:
    """The request field guarding the filter that rejected the most candidates."""
    rejected = {
        "thresholds.structure_mae": progress.rejected_structure,
        "lesion.scale / lesion.count / bounds.lesion_draws": progress.rejected_lesion,
        dice_threshold: progress.rejected_dice,
    }
    return max(rejected, key=lambda name: rejected[name])


def _failure(
    index: int, request: SynthesisRequest, result: SynthesisResult, structure_mae: float, dice: float
) -> AcceptanceError:
    progress = result.progress
    healthy = request.lesion_source == "none"
    dice_threshold = "thresholds.lesion_free_fraction" if healthy else "thresholds.dice"
    threshold = _advice(progress, dice_threshold)
    values = {
        "thresholds.structure_mae": structure_mae,
        "thresholds.dice": dice,
        "thresholds.lesion_free_fraction": request.thresholds.lesion_free_fraction,
    }
    current = f" (now {values[threshold]:g})" if threshold in values else ""
    message = (
        f"sample {index} was not accepted in {request.bounds.candidates_per_sample} candidates "
        f"(bounds.candidates_per_sample); acceptance rate {progress.acceptance_rate:.1%} "
        f"({progress.accepted} of {progress.candidates} candidates; rejected by Algorithm 3 "
        f"{progress.rejected_structure}, by lesion fit {progress.rejected_lesion}, by the lesion "
        f"filter {progress.rejected_dice}); relax {threshold}{current}"
    )
    return AcceptanceError(message, result, threshold)


def _sample(accepted: Candidate, attempts: Attempts, modalities: tuple[str, ...]) -> Sample:
    """A sample from its accepted candidate."""
    assert accepted.images is not None and accepted.dice is not None and accepted.label is not None
    assert accepted.lesion_pixels is not None
    scores = SampleScores(
        structure_mae=accepted.structure_mae,
        dice={m: float(d) for m, d in zip(modalities, accepted.dice, strict=True)},
        mean_dice=float(accepted.dice.mean()),
        lesion_pixels={m: int(n) for m, n in zip(modalities, accepted.lesion_pixels, strict=True)},
        attempts=attempts,
    )
    return Sample(
        index=accepted.index,
        images={m: accepted.images[j].copy() for j, m in enumerate(modalities)},
        label=accepted.label,
        f=accepted.f,
        brain_mask=accepted.brain_mask,
        scores=scores,
    )


def _schedule(next_attempt: dict[int, int], batch_size: int, bound: int, depth: int) -> list[tuple[int, int]]:
    """Up to ``batch_size`` candidates: the next ``depth`` attempts of the lowest unresolved samples."""
    window = sorted(next_attempt)[:batch_size]
    depth = max(1, min(depth, batch_size // len(window)))
    keys = [(k, next_attempt[k] + d) for d in range(depth) for k in window if next_attempt[k] + d < bound]
    return keys[:batch_size]


def synthesize(
    synthesizer: Synthesizer,
    request: SynthesisRequest,
    seed: int,
    n: int,
    batch_size: int = 16,
    *,
    first_index: int = 0,
    progress: ProgressCallback | None = None,
) -> SynthesisResult:
    """Make n accepted samples of a request (Fig. 7: DC_f, MG, Algorithm 3, lesion fit, EC_r, DC, SEG_i).

    Args:
        synthesizer: the loaded artifacts (:meth:`Synthesizer.load`).
        request: what to synthesize.
        seed: the request's seed, >= 0.
        n: samples to make, >= 1: indices ``first_index .. first_index + n - 1``.
        batch_size: candidates per batched network call, >= 1; default 16. Changes speed, not results.
        first_index: index of the first sample, >= 0; a job split into chunks passes each chunk's
            offset with the same seed and gets the same samples as one call would.
        progress: called with a copy of the counters after every batch.

    Returns:
        The n samples in index order, and the counters.

    Raises:
        ValueError: for bad arguments or an unusable lesion source.
        AcceptanceError: when a sample is not accepted in ``request.bounds.candidates_per_sample``
            candidates; it names the threshold to relax and carries the samples accepted so far.
    """
    if n < 1 or batch_size < 1 or first_index < 0:
        raise ValueError(
            f"need n >= 1, batch_size >= 1 and first_index >= 0, got n={n}, batch_size={batch_size}, "
            f"first_index={first_index}"
        )
    start = time.perf_counter()
    plan = make_plan(synthesizer, request, seed)
    clock, tally = StageClock(), RejectionTally(len(plan.modalities))
    counters = SynthesisProgress(requested=n)
    bound = request.bounds.candidates_per_sample
    next_attempt = {k: 0 for k in range(first_index, first_index + n)}
    lesion_draws = dict.fromkeys(next_attempt, 0)
    dice_attempts = dict.fromkeys(next_attempt, 0)
    samples: dict[int, Sample] = {}
    exhausted: list[int] = []
    while next_attempt and not exhausted:
        depth = math.ceil((counters.candidates + 1) / (counters.accepted + 1))
        keys = _schedule(next_attempt, batch_size, bound, depth)
        outcomes = evaluate(synthesizer, plan, keys, tally, clock)
        for outcome in sorted(outcomes, key=lambda c: (c.index, c.attempt)):
            k = outcome.index
            if k in samples:
                counters.discarded += 1
                continue
            counters.candidates += 1
            next_attempt[k] += 1
            lesion_draws[k] += outcome.lesion_draws
            dice_attempts[k] += outcome.rejection in (None, Rejection.DICE)
            if outcome.rejection is None:
                structure = next_attempt.pop(k)
                attempts = Attempts(structure=structure, lesion=lesion_draws[k], dice=dice_attempts[k])
                samples[k] = _sample(outcome, attempts, plan.modalities)
                counters.accepted += 1
            elif outcome.rejection is Rejection.STRUCTURE:
                counters.rejected_structure += 1
            elif outcome.rejection is Rejection.LESION:
                counters.rejected_lesion += 1
            else:
                counters.rejected_dice += 1
        exhausted = sorted(k for k, a in next_attempt.items() if a >= bound)
        counters.elapsed_s = time.perf_counter() - start
        counters.stage_seconds = dict(clock.seconds)
        log.debug("batch of %d candidates: %s", len(outcomes), counters)
        if progress is not None:
            progress(counters.model_copy(deep=True))
    result = SynthesisResult([samples[k] for k in sorted(samples)], counters)
    if exhausted:
        raise _failure(exhausted[0], request, result, plan.structure_mae, plan.dice)
    log.info(
        "synthesized %d samples in %.1f s (%d candidates, acceptance %.1f%%, %d discarded)",
        n,
        counters.elapsed_s,
        counters.candidates,
        100 * counters.acceptance_rate,
        counters.discarded,
    )
    return result
