"""Training presets: image size, network widths, optimizer, step counts and loss weights (the omegas).

Three presets, chosen with ``mrisynth train --preset``:

* ``paper``: Sec. 3.4 as printed (Adam, lr 1e-4, beta1 0.5, no weight decay, input dropout 0.1, ngf 64,
  240 x 240 slices, every stage 100 epochs of the training split, all 12 modality pairs per step:
  exact sums) except the batch size, 8 instead of 1. Measured on an H200 with bf16 autocast
  (``python -m models.benchmark --preset paper``, 2026-11-27): the synthesis stage, whose step runs about
  64 EC/DC passes, makes 6.9 images/s at batch 1, 16.9 at batch 8 (40 GiB peak) and does not fit in
  139 GiB at batch 32; structure and segmentation make 24 and 26 images/s at batch 1, 141 and 139 at 8.
  At batch 8, 100 epochs of BraTS 2015's 12,300 training slices take about 20 GPU-hours of synthesis
  instead of 50. Instance norm makes every network's output independent of the batch, so the batch
  only averages the gradients of 8 slices per update, with 8 times fewer updates.
* ``demo``: the same recipe sized for a 2-core CPU and a phantom of about 10 cases: 96 x 96 slices
  (2.5 mm in-plane), ngf 16, batch size 4 (amortizes the per-call overhead that dominates small
  convolutions on CPU), 2 of the 12 modality pairs per step, lr 2e-4 (pix2pix's, with the same
  beta1: the demo has a few thousand steps per stage, not 100 epochs), and a structural code 16
  times smaller than f (6 x 6 x 16) instead of the paper's 4 times, so that DC_f sees the whole
  brain from every code pixel. Step counts come from it/s measured on this project's 2-core CPU with
  two torch threads (structure about 2.2, segmentation about 2, synthesis about 0.6 it/s at 2 pairs,
  0.5 at 4): 2500 + 1200 + 900 steps, about 19 + 10 + 25 minutes, within the hour. 120 x 120 (2 mm,
  half the BraTS grid) would cost about 1.6 times as much per step and does not fit.
  ``segmentation_lr`` / ``segmentation_beta1`` give the segmentation stage (no critic) its own Adam
  settings; the demo keeps lr 2e-4, beta1 0.5. Measured on the 12-case phantom (issue 12, run
  ``demo-v6``): at lr 1e-3, beta1 0.9 the same 1200 steps raise the held-out whole-tumor Dice of
  SEG_t1/t1ce/t2/flair from 0.00/0.65/0.51/0.94 to 0.77/0.78/0.86/0.97, but the synthesis stage guided
  by them then draws faint T1 and T1ce lesions (contrast within +-0.08 healthy-brain sd, the T1ce rim
  +0.02 against the real +3.6), an independent probe names only 4.5 % of the synthetic T1ce images
  T1ce, Table 1's synthetic/real Dice falls to 0.78, and the Dice filter calibrated to the better
  segmentors (0.863) would pass almost nothing (2 % of unfiltered samples reach 0.8, none 0.9):
  better segmentors alone make the synthesis worse.
* ``test``: 32 x 32 slices, ngf 4, 4 steps per stage, axial slices 2-9, for the unit tests (their
  hand-made volumes have 12 slices).

Loss weights. The paper names a weight per term but gives no values. We use one rule: adversarial,
discriminator and distribution terms (1)-(4), (7), (8), (13), (14) weigh 1 (least-squares GAN as in
pix2pix/CycleGAN); pixel-wise reconstruction and consistency terms (6), (9), (10), (15), (16), (17)
weigh 10 (CycleGAN's cycle weight; they carry the content, the critics only the realism), except two
mean squared error over a sparse target, which weighs 100: the structure map reconstruction (5) (f has
about 8 % edge pixels; at 10 the code discriminator FD_f won and the code carried almost nothing:
posterior sigma 0.95, decoded maps the average brain); the lesion guidance (16) weighs 10 with the
registered objective's Dice + cross-entropy and 100 with the printed MSE (below); the semantic-code
consistency terms (11), (18) weigh 1, as codes are unnormalized features whose consistency should not
outweigh the images they must decode to; the segmentation terms (12), (19) weigh 1 (they train their own
parameters only, and Adam is invariant to a constant scale).

One factor inside two equations: the category terms of D's losses (7) and (13) on generated images
(x_t,j,i and x_g,i towards their target modality) weigh 0 (``fake_category``), so that D's category
head learns the modalities from real images only, as in the authors' code. As printed, the head is
also trained to call a translation that still looks like its source modality by its target's name;
it ended at chance (0.23-0.28 for every modality of real slices).

The registered objective (``Preset.registered``, on in every preset; ``mrisynth train --printed`` or
:func:`printed_objective` is the objective as printed). A deviation from the paper, which trains without
registered data: BraTS and the phantom are registered, and as printed the objective is at its minimum
when DC ignores its condition. Measured on the demo trained with the printed objective (issue 12): its
four synthetic modalities were one image (pairwise correlation 1.00 inside the brain; real -0.1;
MS-SSIM between a sample's modalities 0.999 against 0.517 for real ones), T1's tumour core came out
bright (z +2.95) where it is dark, translations correlated 0.989 with their source, and scored with the
trained networks the real four registered modalities cost 27.3 on (15)+(17)+(18) against 3.1 for four
copies of one. What changes (:mod:`models.registered_losses`, :mod:`models.synthesis_stage`):

* (T) paired translation ``||DC(EC(x_j), i) - x_i||`` and (S) paired synthesis: half of each batch
  (``paired_fraction``) fuses f with the slice's *own* label and asks DC(EC_r(fusion), i) to be x_i,
  both at 10 like the other pixel terms; (R) one code for the registered modalities of a slice, at 1
  like (11) and (18), so that (11), (17), (18) no longer reward a collapse;
* ``paired_lesion`` "pasted" (``mrisynth train --paired-lesion pasted``) gives (S) a pixel target for a
  lesion away from where it grew: a library lesion pasted with its four images into the slice, as
  TumorCP's copy-paste. Measured (issue 12, 2026-12-01, the committed demo's structure and segmentation
  stages, 900 synthesis steps each, on a CPU shared with tests for part of the run) against the
  committed demo ("own"): the T1ce necrotic core goes from +0.64 to +0.01 healthy-brain sd (real
  -0.56), its edema from +0.86 to +0.62 (real -0.10), MS-SSIM between a sample's modalities from 0.649
  to 0.621 (real 0.507), Table 1's synthetic/real Dice stays 0.95, acceptance at the calibrated Dice
  12.7 % (own 14.7 %), but the independent probe names T2 41.5 % of the time (own 54.5 %; it calls the
  rest FLAIR) and T1 93.5 % (own 100 %). With (16) at 1 instead of 10, the probe names every modality
  >= 91 % (T1/T1ce/T2/FLAIR 93.5/93/91/100) but the lesions fade: T1 edema and enhancing turn bright,
  Table 1's ratio falls to 0.73 and 4.5 % of unfiltered samples reach Dice 0.5. Neither gets T1ce's
  core and edema dark, so the default stays "own", the recipe of the committed artifacts. Three times the
  synthesis steps of "own" (2700, run ``demo-v5-long``, about 105 minutes of demo instead of 55) names
  T2 100 % (T1/T1ce/T2/FLAIR 100/75.5/100/100) but still draws the T1ce core and edema bright (+0.03,
  +0.24);
* (C) category guidance by CL, a modality classifier trained on real slices with cross-entropy in the
  segmentation stage and frozen in synthesis (as the segmentors), at 1 ((K), its own training, at 1);
* (15) masked at the fused lesion, where f has no edges by construction;
* (L) soft Dice + cross-entropy for (16) and (19) (``lesion_loss``), with (16) at 10: the printed MSE
  on softmax probabilities let the T2 segmentor learn "no lesion" on a 40-case phantom. The printed
  objective keeps the MSE with (16) at 100 (``PRINTED_LESION_2``: at 10, after 900 steps, the generator
  drew no lesion the segmentors could find, whole-tumor Dice 0.03);
* the segmentors stay frozen in the synthesis stage (as the authors' later code), so (12) is not
  computed; DC is conditioned at every normalization layer (:class:`models.networks.ModalityDecoder`).
"""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from models.networks import NetworkConfig
from mrisynth.brats import SliceConfig
from mrisynth.structure import DEFAULT_BETA, DEFAULT_EXPANSION

PRINTED_LESION_2 = 100.0
"""Weight of (16) with the printed MSE lesion loss (``printed_objective``), see the module docstring."""

LesionLoss = Literal["dice_ce", "mse"]
"""The loss of (12), (16), (19): soft Dice + cross-entropy (registered objective) or the printed MSE."""

PairedLesion = Literal["own", "pasted"]
"""The lesion of (S)'s paired samples: the slice's own, or a library slice's pasted in (models.data)."""

STAGES: tuple[str, ...] = ("structure", "segmentation", "synthesis")
"""The training stages, in the order they run: Fig. 1's two training stages, with the lesion segmentors
of Sec. 2.7 pre-trained on real data in between (see :mod:`models.segmentation_stage`)."""


@dataclass(frozen=True)
class LossWeights:
    """The omegas of the paper, one per equation, and those of the registered objective's terms
    (T), (S), (R), (C), (K) of :mod:`models.registered_losses` (see the module docstring for the values)."""

    code_d_f: float = 1.0
    d_f: float = 1.0
    g_f: float = 1.0
    normal: float = 1.0
    reconstruction_f: float = 100.0
    reconstruction_mask: float = 10.0
    d_1: float = 1.0
    g_1: float = 1.0
    reconstruction: float = 10.0
    cycle: float = 10.0
    code_1: float = 1.0
    lesion_1: float = 1.0
    d_2: float = 1.0
    g_2: float = 1.0
    f: float = 10.0
    lesion_2: float = 10.0
    registration: float = 10.0
    code_2: float = 1.0
    segmentation: float = 1.0
    fake_category: float = 0.0
    translation_pair: float = 10.0
    synthesis_pair: float = 10.0
    code_registered: float = 1.0
    category: float = 1.0
    classifier: float = 1.0


@dataclass(frozen=True)
class StageSteps:
    """Optimizer steps per stage (used when the preset gives no ``epochs``)."""

    structure: int
    synthesis: int
    segmentation: int

    def __post_init__(self) -> None:
        if min(self.structure, self.synthesis, self.segmentation) < 1:
            raise ValueError(f"every stage needs >= 1 step, got {self}")


@dataclass(frozen=True)
class Preset:
    """Everything a training run needs besides the data, the output folder and the seed.

    Attributes:
        name: preset name, recorded in ``run.json``.
        network: widths, dropout and lesion-guidance variant of every network.
        image_size: side of the square training slices in pixels, a multiple of 8 (240 in the paper).
        slices: axial slices and subject split of the slice cache (Sec. 3.1: slices 55-104, 9:1).
        batch_size: samples per step, >= 1.
        lr: Adam learning rate (Sec. 3.4: 1e-4).
        beta1: Adam beta1 (Sec. 3.4: 0.5).
        beta2: Adam beta2 (not given by the paper; Adam's default 0.999).
        steps: optimizer steps per stage; give exactly one of ``steps`` and ``epochs``.
        epochs: instead of ``steps``, each stage runs ``ceil(epochs * N_train / batch_size)`` steps (Sec. 3.4:
            "100 epochs of the training dataset"), N_train being the training split's slice count.
        pairs_per_step: modality pairs (j, i) drawn per step for the pair sums (7), (8), (10), (11),
            (17), (18), 1 to 12; 12 means every pair (the exact sums).
        soft_f_tau: temperature of the differentiable Algorithm 1 in loss (15), > 0.
        beta: Algorithm 1 threshold (default 0.12).
        mask_expansion: Algorithm 2 expansion p in pixels (default 5).
        checkpoint_every: steps between checkpoints (and the most work a crash can lose).
        log_every: steps between rows of ``losses.csv``.
        weights: the loss weights.
        registered: the registered objective (default): the paired terms (T), (S), (R), the frozen
            classifier's guidance (C) and (15) masked at the fused lesion, see
            :mod:`models.registered_losses`. False is the objective as printed.
        paired_fraction: with ``registered``, the share of each batch fused with a label whose images
            are known (for (S)); the rest is fused with a label of the lesion library, as the paper. In
            [0, 1].
        paired_lesion: the label of (S)'s samples: ``"own"`` (default), the slice's own label, or
            ``"pasted"``, a library lesion pasted with its four images into the slice at a random shift
            and flip (:mod:`models.data`; measured in the module docstring).
        lesion_loss: the loss of (12), (16) and (19): ``"dice_ce"`` (soft Dice + cross-entropy, (L)) or
            ``"mse"`` (as printed).
        segmentation_lr: Adam learning rate of the segmentation stage (the segmentors and CL); None
            is ``lr``.
        segmentation_beta1: Adam beta1 of the segmentation stage; None is ``beta1``. That stage has
            no critic, so the GAN setting of beta1 (0.5) is not needed there.
    """

    name: str
    network: NetworkConfig
    image_size: int
    slices: SliceConfig
    batch_size: int
    checkpoint_every: int
    log_every: int
    pairs_per_step: int
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    steps: StageSteps | None = None
    epochs: float | None = None
    soft_f_tau: float = 0.02
    beta: float = DEFAULT_BETA
    mask_expansion: int = DEFAULT_EXPANSION
    weights: LossWeights = field(default_factory=LossWeights)
    registered: bool = True
    paired_fraction: float = 0.5
    paired_lesion: PairedLesion = "own"
    lesion_loss: LesionLoss = "dice_ce"
    segmentation_lr: float | None = None
    segmentation_beta1: float | None = None

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.image_size % 8:
            raise ValueError(f"image_size must be a positive multiple of 8, got {self.image_size}")
        if self.batch_size < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("batch_size, checkpoint_every and log_every must be >= 1")
        if not 1 <= self.pairs_per_step <= 12:
            raise ValueError(f"pairs_per_step must be in [1, 12], got {self.pairs_per_step}")
        if self.soft_f_tau <= 0:
            raise ValueError(f"soft_f_tau must be > 0, got {self.soft_f_tau}")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not 0.0 <= self.paired_fraction <= 1.0:
            raise ValueError(f"paired_fraction must be in [0, 1], got {self.paired_fraction}")
        if self.segmentation_lr is not None and self.segmentation_lr <= 0:
            raise ValueError(f"segmentation_lr must be > 0, got {self.segmentation_lr}")
        if self.segmentation_beta1 is not None and not 0.0 <= self.segmentation_beta1 < 1.0:
            raise ValueError(f"segmentation_beta1 must be in [0, 1), got {self.segmentation_beta1}")
        if self.paired_lesion not in get_args(PairedLesion):
            raise ValueError(
                f"paired_lesion must be one of {get_args(PairedLesion)}, got {self.paired_lesion!r}"
            )
        if self.lesion_loss not in get_args(LesionLoss):
            raise ValueError(f"lesion_loss must be one of {get_args(LesionLoss)}, got {self.lesion_loss!r}")

    def steps_for(self, stage: str, n_train: int) -> int:
        """Number of optimizer steps of ``stage`` on a training split of ``n_train`` slices."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * n_train / self.batch_size))
        steps: int = getattr(self.steps, stage)
        return steps

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description, as recorded in ``run.json``."""
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        network=NetworkConfig(ngf=64, dropout=0.1),
        image_size=240,
        slices=SliceConfig(start=55, stop=105, test_fraction=0.1, seed=0),
        batch_size=8,
        epochs=100.0,
        checkpoint_every=2000,
        log_every=100,
        pairs_per_step=12,
    ),
    "demo": Preset(
        name="demo",
        network=NetworkConfig(ngf=16, dropout=0.1, structure_code_stride=16, structure_code_channels=16),
        image_size=96,
        slices=SliceConfig(start=55, stop=105, test_fraction=0.1, seed=0),
        batch_size=4,
        steps=StageSteps(structure=2500, synthesis=900, segmentation=1200),
        checkpoint_every=100,
        log_every=10,
        pairs_per_step=2,
        lr=2e-4,
    ),
    "test": Preset(
        name="test",
        network=NetworkConfig(ngf=4, dropout=0.1),
        image_size=32,
        slices=SliceConfig(start=2, stop=10, test_fraction=0.1, seed=0),
        batch_size=2,
        steps=StageSteps(structure=4, synthesis=4, segmentation=4),
        checkpoint_every=2,
        log_every=1,
        pairs_per_step=4,
    ),
}
"""The presets by name; ``dataclasses.replace`` one to override fields (the tests do)."""


def with_overrides(preset: Preset, weights: Mapping[str, float], steps: Mapping[str, int]) -> Preset:
    """``preset`` with some loss weights and stage step counts replaced (``mrisynth train --weight/--steps``).

    Args:
        preset: the preset to start from; its name is kept (``run.json`` records every value).
        weights: loss weight by :class:`LossWeights` field name, e.g. ``{"lesion_2": 100.0}``.
        steps: optimizer steps by stage name; the preset must count steps (not ``epochs``).

    Raises:
        ValueError: an unknown weight or stage name (the message lists the known ones), or steps for an
            ``epochs`` preset.
    """
    known = {f.name for f in dataclasses.fields(LossWeights)}
    if unknown := sorted(set(weights) - known):
        raise ValueError(f"unknown loss weights {unknown}; choose among {sorted(known)}")
    if unknown := sorted(set(steps) - set(STAGES)):
        raise ValueError(f"unknown stages {unknown}; choose among {list(STAGES)}")
    if steps and preset.steps is None:
        raise ValueError(f"preset {preset.name!r} counts epochs, not steps")
    new_steps = dataclasses.replace(preset.steps, **steps) if preset.steps is not None else None
    return dataclasses.replace(
        preset, weights=dataclasses.replace(preset.weights, **weights), steps=new_steps
    )


def printed_objective(preset: Preset) -> Preset:
    """``preset`` with the objective as printed (``mrisynth train --printed``): no paired terms, no
    classifier guidance, (15) unmasked, the MSE lesion loss at the weight the printed demo used (100)."""
    weights = dataclasses.replace(preset.weights, lesion_2=PRINTED_LESION_2)
    return dataclasses.replace(preset, registered=False, lesion_loss="mse", weights=weights)


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
