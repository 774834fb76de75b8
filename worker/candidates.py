"""Fig. 7 for a batch of candidates, one batched call per network.

A candidate is attempt ``a`` at sample ``k`` of a request. Its randomness comes only from
``SeedSequence(seed, spawn_key=(k, a, stream))`` (:func:`candidate_rng`): stream 0 draws the
structural code, stream 1 the lesions. onnxruntime computes each batch item independently of the
others, so a candidate's outcome is a pure function of (artifacts, request, seed, k, a), whatever
batch it is evaluated in. For B candidates and M requested modalities, :func:`evaluate` runs

1. codes ~ N(0, 1) of the manifest's structure code shape; DC_f -> f = DC_f(code) > p_f (B, H, W),
   with p_f the manifest's calibrated ``structure_probability``; MG -> brain mask MG(f) > p, with p
   its ``probability`` (Sec. 2.3);
2. Algorithm 3: ``structure_mae(f, mask) <= structure_mae`` (Sec. 2.8);
3. for the kept maps, lesion fitting (:func:`worker.lesions.fit_lesions`, Sec. 2.5 and 2.8);
4. for the fitted ones, B' <= B: the fusion map (B', 4, H, W), EC_r -> code (B', C, H/4, W/4), then
   modality by modality, in the order of a :class:`~worker.filters.RejectionTally` (the likeliest to
   reject first): DC on the codes with that modality's one-hot condition planes (Sec. 2.6), its
   SEG_i, its Dice; after each modality the candidates the lesion filter (:mod:`worker.filters`,
   Sec. 2.8) can no longer accept are dropped, so the later modalities' DC and SEG_i run on fewer
   of them. The accepted candidates, their images and scores are those of DC on all B' * M codes in
   one call, every SEG_i on all B' images and the filter on the complete scores: every call computes
   each batch item on its own, and :func:`~worker.filters.may_pass` never drops a candidate the
   filter would accept. Rejected candidates keep the scores and images computed before they were
   dropped.
"""

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from mrisynth.conventions import MODALITIES
from mrisynth.structure import structure_mae
from worker.filters import RejectionTally, fuse, lesion_pixels, may_pass, whole_tumor_dice
from worker.lesions import fit_lesions, read_label_files
from worker.request import LesionControls, SynthesisRequest
from worker.sessions import Synthesizer

STAGES: tuple[str, ...] = (
    "codes",
    "DC_f",
    "MG",
    "algorithm3",
    "lesion_fit",
    "fusion",
    "EC_r",
    "DC",
    "segmentors",
    "dice",
)
"""The timed stages of a candidate, in order."""

CODE_STREAM = 0
"""Spawn-key stream of a candidate's structural code."""

LESION_STREAM = 1
"""Spawn-key stream of a candidate's lesion draws."""


class Rejection(StrEnum):
    """The filter that rejected a candidate."""

    STRUCTURE = "structure"
    LESION = "lesion"
    DICE = "dice"


def candidate_rng(seed: int, index: int, attempt: int, stream: int) -> np.random.Generator:
    """The generator of one random stream of candidate (index, attempt) of a request seeded ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, attempt, stream)))


class StageClock:
    """Wall-clock seconds spent in each of :data:`STAGES`, summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


@dataclass(frozen=True)
class Plan:
    """A request resolved against the artifacts: everything a candidate depends on.

    Attributes:
        seed: the request's seed, >= 0.
        modalities: requested modalities, in ``MODALITIES`` order.
        structure_mae: Algorithm 3 threshold.
        dice: lesion-filter threshold on the mean whole-tumor Dice.
        lesion_free_fraction: lesion-filter tolerance for healthy samples.
        probability: binarization level of MG's output.
        structure_probability: binarization level of DC_f's output (calibrated by the export).
        pool: uint8 (N, H, W) labels to draw lesions from, or None for healthy samples.
        controls: lesion augmentation and count.
        lesion_draws: lesion draws per candidate.
    """

    seed: int
    modalities: tuple[str, ...]
    structure_mae: float
    dice: float
    lesion_free_fraction: float
    probability: float
    structure_probability: float
    pool: np.ndarray | None
    controls: LesionControls
    lesion_draws: int


def make_plan(synthesizer: Synthesizer, request: SynthesisRequest, seed: int) -> Plan:
    """Resolve a request: thresholds left None take the manifest's, the lesion source is read.

    Raises:
        ValueError: if the seed is negative, the structure source is not ``noise``, the lesion library
            holds no lesion or the uploaded label files are unusable (see
            :func:`worker.lesions.read_label_files`).
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if request.structure_source != "noise":
        raise ValueError("a request on an uploaded scan runs in worker.scan_jobs, not here")
    manifest = synthesizer.manifest
    pool: np.ndarray | None = None
    if request.lesion_source == "library":
        pool = synthesizer.lesion_library
        if not len(pool):
            raise ValueError(
                f"the lesion library of {synthesizer.directory} holds no lesion; "
                "use lesion_source='none' or upload label files"
            )
    elif isinstance(request.lesion_source, Path):
        pool = read_label_files(request.lesion_source, manifest.image_size)
    asked, defaults = request.thresholds, manifest.thresholds
    return Plan(
        seed=seed,
        modalities=request.modalities,
        structure_mae=defaults.structure_mae if asked.structure_mae is None else asked.structure_mae,
        dice=defaults.dice if asked.dice is None else asked.dice,
        lesion_free_fraction=asked.lesion_free_fraction,
        probability=manifest.thresholds.probability,
        structure_probability=manifest.thresholds.structure_probability,
        pool=pool,
        controls=request.lesion,
        lesion_draws=request.bounds.lesion_draws,
    )


@dataclass(frozen=True, eq=False)
class Candidate:
    """The outcome of one candidate.

    Attributes:
        index: sample index k.
        attempt: attempt a at that sample.
        rejection: the filter that rejected it, None when accepted.
        structure_mae: its Algorithm 3 MAE.
        lesion_draws: lesion draws made (0 when Algorithm 3 rejected it or the sample is healthy).
        f: uint8 (H, W) structural feature map in {0, 1}.
        brain_mask: uint8 (H, W) MG's brain mask in {0, 1}.
        label: uint8 (H, W) fitted label, None if no lesion fitted (or not tried).
        images: float32 (M, H, W) synthetic modalities, None if not synthesized; NaN in the modalities
            a candidate rejected by the lesion filter was dropped before.
        dice: float64 (M,) whole-tumor Dice per modality, None if not synthesized; NaN where the
            images are.
        lesion_pixels: int64 (M,) pixels each segmentor calls lesion, None if not synthesized; -1
            where the images are NaN.
    """

    index: int
    attempt: int
    rejection: Rejection | None
    structure_mae: float
    lesion_draws: int
    f: np.ndarray
    brain_mask: np.ndarray
    label: np.ndarray | None = None
    images: np.ndarray | None = None
    dice: np.ndarray | None = None
    lesion_pixels: np.ndarray | None = None


def condition_planes(batch: int, modality: str, size: tuple[int, int]) -> np.ndarray:
    """DC's one-hot condition planes of one modality (Sec. 2.4, 2.6), float32 (batch, 4, h, w) at the
    code's size (h, w)."""
    onehot = np.eye(len(MODALITIES), dtype=np.float32)[MODALITIES.index(modality)]
    return np.ascontiguousarray(np.broadcast_to(onehot[None, :, None, None], (batch, len(MODALITIES), *size)))


def _structures(
    synthesizer: Synthesizer, plan: Plan, keys: Sequence[tuple[int, int]], clock: StageClock
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2: float32 f (B, H, W) in {0, 1}, bool brain masks (B, H, W), float32 MAEs (B,)."""
    shape = synthesizer.manifest.structure_code_shape
    with clock("codes"):
        rngs = [candidate_rng(plan.seed, k, a, CODE_STREAM) for k, a in keys]
        codes = np.stack([rng.standard_normal(shape, dtype=np.float32) for rng in rngs])
    with clock("DC_f"):
        f = (synthesizer.run("DC_f", code=codes)[:, 0] > plan.structure_probability).astype(np.float32)
    with clock("MG"):
        masks = synthesizer.run("MG", f=f[:, None])[:, 0] > plan.probability
    with clock("algorithm3"):
        maes = structure_mae(f, masks.astype(np.float32))
    return f, masks, maes


def _lesions(
    plan: Plan, keys: Sequence[tuple[int, int]], masks: np.ndarray, kept: np.ndarray
) -> tuple[list[np.ndarray | None], list[int]]:
    """Step 3 for the kept candidates: (label or None per candidate, lesion draws per candidate)."""
    labels: list[np.ndarray | None] = [None] * len(keys)
    draws = [0] * len(keys)
    for i in map(int, np.flatnonzero(kept)):
        if plan.pool is None:
            labels[i] = np.zeros(masks[i].shape, dtype=np.uint8)
        else:
            k, a = keys[i]
            rng = candidate_rng(plan.seed, k, a, LESION_STREAM)
            labels[i], draws[i] = fit_lesions(plan.pool, masks[i], rng, plan.controls, plan.lesion_draws)
    return labels, draws


def _synthesize(
    synthesizer: Synthesizer,
    plan: Plan,
    f: np.ndarray,
    labels: np.ndarray,
    tally: RejectionTally,
    clock: StageClock,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 4 for B' fitted candidates, modality by modality, dropping those the filter rejects.

    Returns:
        images (B', M, H, W), accepted (B',), Dice (B', M) and lesion pixels (B', M); NaN images and
        Dice, -1 pixels, in the modalities of a rejected candidate that were not evaluated.
    """
    with clock("fusion"):
        fusion = fuse(f, labels, synthesizer.manifest.fusion)
    with clock("EC_r"):
        code = synthesizer.run("EC_r", fusion=fusion)
    batch, (height, width) = len(code), synthesizer.image_size
    healthy = plan.pool is None
    threshold = plan.lesion_free_fraction if healthy else plan.dice

    def passing(dice: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        return may_pass(dice, pixels, healthy=healthy, threshold=threshold, image_size=(height, width))

    images = np.full((batch, len(plan.modalities), height, width), np.nan, dtype=np.float32)
    dice = np.full((batch, len(plan.modalities)), np.nan)
    pixels = np.full((batch, len(plan.modalities)), -1, dtype=np.int64)
    alive = np.arange(batch)
    for j in tally.order():
        modality = plan.modalities[j]
        with clock("DC"):
            condition = condition_planes(len(alive), modality, code.shape[2:])
            images[alive, j] = synthesizer.run("DC", code=code[alive], condition=condition)[:, 0]
        with clock("segmentors"):
            predicted = synthesizer.segment(images[alive, j : j + 1], (modality,))
        with clock("dice"):
            dice[alive, j] = whole_tumor_dice(labels[alive], predicted)[:, 0]
            pixels[alive, j] = lesion_pixels(predicted)[:, 0]
            tally.add(j, ~passing(dice[alive, j : j + 1], pixels[alive, j : j + 1]))
            alive = alive[passing(dice[alive], pixels[alive])]
        if not len(alive):
            break
    accepted = np.zeros(batch, dtype=bool)
    accepted[alive] = True
    return images, accepted, dice, pixels


def evaluate(
    synthesizer: Synthesizer,
    plan: Plan,
    keys: Sequence[tuple[int, int]],
    tally: RejectionTally,
    clock: StageClock,
) -> list[Candidate]:
    """Run candidates (k, a) through Fig. 7 in one batch.

    Args:
        synthesizer: the loaded artifacts.
        plan: the resolved request.
        keys: (sample index, attempt) of each candidate, B >= 1.
        tally: the order of the modalities in the lesion filter, updated with this batch's scores.
        clock: accumulates the seconds per stage.

    Returns:
        One :class:`Candidate` per key, in the order of ``keys``.
    """
    f, masks, maes = _structures(synthesizer, plan, keys, clock)
    kept = maes <= plan.structure_mae
    with clock("lesion_fit"):
        labels, draws = _lesions(plan, keys, masks, kept)
    fitted = [i for i, label in enumerate(labels) if label is not None]
    synthesized: dict[int, tuple[np.ndarray, bool, np.ndarray, np.ndarray]] = {}
    if fitted:
        fitted_labels = np.stack([label for label in labels if label is not None])
        synthesis = _synthesize(synthesizer, plan, f[fitted], fitted_labels, tally, clock)
        images, accepted, dice, pixels = synthesis
        for j, i in enumerate(fitted):
            synthesized[i] = (images[j], bool(accepted[j]), dice[j], pixels[j])
    outcomes = []
    for i, (k, a) in enumerate(keys):
        rejection: Rejection | None = Rejection.STRUCTURE if not kept[i] else Rejection.LESION
        image = dice_i = pixels_i = None
        if i in synthesized:
            image, accepted_i, dice_i, pixels_i = synthesized[i]
            rejection = None if accepted_i else Rejection.DICE
        outcomes.append(
            Candidate(
                index=k,
                attempt=a,
                rejection=rejection,
                structure_mae=float(maes[i]),
                lesion_draws=draws[i],
                f=f[i].astype(np.uint8),
                brain_mask=masks[i].astype(np.uint8),
                label=labels[i],
                images=image,
                dice=dice_i,
                lesion_pixels=pixels_i,
            )
        )
    return outcomes
