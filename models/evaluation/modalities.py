"""Do the synthetic modalities differ as real ones do? Lesion contrast and an independent modality probe.

* Lesion contrast, per modality and label region (1 necrotic core, 2 edema, 4 enhancing): the mean
  intensity inside the region minus that of the healthy brain, in units of the healthy brain's
  standard deviation, averaged over the slices that hold at least ``MIN_REGION_PIXELS`` of the region.
  Real test slices beside synthetic samples: the signs must agree (edema bright on T2/FLAIR, the core
  dark on T1, ...). The brain is Algorithm 2 without expansion for real slices (every pixel above the
  background) and MG's brain mask for synthetic samples.
* A modality probe, independent of the classifier CL that guided the training (other seed, other
  architecture: an :class:`~models.networks.blocks.Encoder` body with a global mean, where CL is a
  PatchGAN trunk): trained on the real training slices only, with cross-entropy, it names the modality
  of each synthetic image; its accuracy per requested modality, beside its accuracy on the real test
  slices.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.alarms import lesion_contrast
from models.networks.blocks import Encoder, init_net
from mrisynth.conventions import MODALITIES

REGIONS: dict[int, str] = {1: "necrotic core", 2: "edema", 4: "enhancing"}
"""Label value -> region name, for the contrast table."""

MIN_REGION_PIXELS = 3
"""Pixels of a region a slice must hold to count in that region's contrast."""


@dataclass(frozen=True)
class ProbeConfig:
    """Training of the modality probe.

    Attributes:
        ngf: width of its Encoder body.
        steps: Adam steps.
        batch_size: images per step.
        lr: Adam learning rate.
        seed: seed of its weights and batches (CL's is the training seed; this one differs).
    """

    ngf: int = 8
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 1234


@dataclass(frozen=True)
class ModalitiesResult:
    """Contrast tables ``{modality: {label value: contrast}}`` (NaN: no slice holds the region) and the
    probe's accuracy per modality."""

    contrast_real: dict[str, dict[int, float]]
    contrast_synthetic: dict[str, dict[int, float]]
    probe_synthetic: dict[str, float]
    probe_real: dict[str, float]
    probe: ProbeConfig


def contrast_table(images: np.ndarray, labels: np.ndarray, brain: np.ndarray) -> dict[str, dict[int, float]]:
    """The lesion contrast of the module docstring.

    Args:
        images: float32 (N, 4, H, W), modalities in ``MODALITIES`` order.
        labels: (N, H, W) label values.
        brain: (N, H, W) brain masks, nonzero inside.
    """
    brain_t = torch.from_numpy((brain > 0).astype(np.float32))[:, None]
    table: dict[str, dict[int, float]] = {}
    for i, modality in enumerate(MODALITIES):
        x = torch.from_numpy(np.ascontiguousarray(images[:, i : i + 1], dtype=np.float32))
        table[modality] = {}
        for value in REGIONS:
            region = labels == value
            held = region.reshape(len(labels), -1).sum(axis=1) >= MIN_REGION_PIXELS
            if not held.any():
                table[modality][value] = float("nan")
                continue
            region_t = torch.from_numpy(region[held].astype(np.float32))[:, None]
            lesion_t = torch.from_numpy((labels[held] > 0).astype(np.float32))[:, None]
            healthy = brain_t[held] * (1 - lesion_t)  # the brain without any lesion region
            contrast = lesion_contrast(x[held], region_t, healthy + region_t)
            table[modality][value] = float(contrast.mean())
    return table


def define_probe(ngf: int) -> nn.Module:
    """The probe: Encoder body to 4 channels at a quarter resolution, then the spatial mean: (B, 1, H, W)
    -> logits (B, 4)."""
    return init_net(
        nn.Sequential(Encoder(1, len(MODALITIES), ngf, 0.0), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    )


def train_probe(images: np.ndarray, config: ProbeConfig) -> nn.Module:
    """Train the probe on real slices (N, 4, H, W): every image labelled by its modality channel."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    probe = define_probe(config.ngf)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr)
    flat = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).flatten(0, 1)[:, None]
    targets = torch.arange(len(MODALITIES)).repeat(len(images))
    probe.train()
    for _ in range(config.steps):
        rows = torch.randint(len(flat), (config.batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(probe(flat[rows]), targets[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return probe.eval()


def probe_accuracy(probe: nn.Module, images: np.ndarray, batch: int = 64) -> dict[str, float]:
    """Share of the images of each modality channel of (N, 4, H, W) that the probe names by it."""
    correct = np.zeros(len(MODALITIES))
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch], dtype=np.float32))
            for i in range(len(MODALITIES)):
                correct[i] += int((probe(chunk[:, i : i + 1]).argmax(1) == i).sum())
    return {m: float(correct[i] / len(images)) for i, m in enumerate(MODALITIES)}


def modality_scores(
    train: np.ndarray,
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    synthetic: tuple[np.ndarray, np.ndarray, np.ndarray],
    config: ProbeConfig = ProbeConfig(),
) -> ModalitiesResult:
    """Both scores of the module docstring.

    Args:
        train: real training images (N, 4, H, W), the probe's training data.
        test: real test (images, labels, brain masks).
        synthetic: synthetic (images, labels, brain masks).
        config: the probe's training.
    """
    probe = train_probe(train, config)
    return ModalitiesResult(
        contrast_real=contrast_table(*test),
        contrast_synthetic=contrast_table(*synthetic),
        probe_synthetic=probe_accuracy(probe, synthetic[0]),
        probe_real=probe_accuracy(probe, test[0]),
        probe=config,
    )
