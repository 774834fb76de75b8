"""Translation of real MRI into its missing modalities with EC and DC (paper Sec. 2.4, Fig. 3).

EC encodes a real image ``x_j`` of modality j into its semantic feature map ``code_j`` (B, C, H/4, W/4);
DC decodes a code with the one-hot condition planes of modality i into ``x_t,j,i``, the translation of
``x_j`` into modality i. Several registered inputs of one case are combined by the **mean of their codes**,
``code = (1 / |J|) sum_{j in J} EC(x_j)``, then decoded once per target. The networks were trained with the
semantic consistency loss (11), which makes the codes of a case's registered modalities equal (and the
paired translation loss (T) of ``models.registered_losses`` makes each decode to the other modalities), so
every ``EC(x_j)`` estimates the same code and their mean is a lower-variance estimate of it; how much it
helps on held-out real slices is measured in ``docs/translations.md``.

Images are what the networks were trained on (``models.data``): each axial slice standardized per image
(:func:`mrisynth.conventions.standardize`) and resized to the artifacts' size S with
:func:`mrisynth.brats.slices.resize_image`; :func:`prepare_slices` does both. No torch here: the networks
run in onnxruntime through :class:`worker.sessions.Synthesizer`.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from mrisynth.brats.slices import resize_image
from mrisynth.conventions import MODALITIES, standardize
from worker.candidates import condition_planes
from worker.sessions import Synthesizer


def prepare_slices(slices: np.ndarray, size: int) -> np.ndarray:
    """Slices as the networks take them: each standardized, then resized to (size, size) as training does.

    Args:
        slices: (B, H, W) axial slices of one modality, any intensity scale.
        size: the artifacts' side S.

    Returns:
        float32 (B, S, S), each slice standardized (mean 0, sd 1).
    """
    if slices.ndim != 3:
        raise ValueError(f"slices must be (B, H, W), got shape {slices.shape}")
    return np.stack([resize_image(standardize(image), size) for image in slices]).astype(np.float32)


def _check_images(synthesizer: Synthesizer, images: Mapping[str, np.ndarray]) -> tuple[int, ...]:
    """The common (B, S, S) shape of the inputs, checked against the artifacts and each other."""
    if not images:
        raise ValueError("give at least one input modality")
    unknown = sorted(set(images) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; modalities are {MODALITIES}")
    shapes = {modality: image.shape for modality, image in images.items()}
    shape = next(iter(shapes.values()))
    if len(set(shapes.values())) != 1 or len(shape) != 3 or shape[1:] != synthesizer.image_size:
        size = synthesizer.image_size
        raise ValueError(f"inputs must all be (B, {size[0]}, {size[1]}) slices, got {shapes}")
    if not all(np.isfinite(image).all() for image in images.values()):
        raise ValueError("inputs hold NaN or infinite values")
    return shape


def encode(synthesizer: Synthesizer, images: Mapping[str, np.ndarray]) -> np.ndarray:
    """The code of a case's registered slices: the mean of ``EC(x_j)`` over the given modalities j.

    Args:
        synthesizer: the loaded artifacts.
        images: modality -> float32 (B, S, S) slices prepared as :func:`prepare_slices` makes them, the
            same B slices of one case in every modality (registered).

    Returns:
        float32 (B, C, S/4, S/4), one EC call over all B * |J| images.

    Raises:
        ValueError: no input, an unknown modality, shapes that differ or are not the artifacts' size,
            NaN or infinite values.
    """
    batch = _check_images(synthesizer, images)[0]
    stacked = np.concatenate([images[m] for m in MODALITIES if m in images])[:, None]
    codes = synthesizer.run("EC", image=stacked)
    return codes.reshape(len(images), batch, *codes.shape[1:]).mean(axis=0, dtype=np.float32)


def decode(synthesizer: Synthesizer, code: np.ndarray, targets: Sequence[str]) -> dict[str, np.ndarray]:
    """DC of codes in each target modality (Sec. 2.4, 2.6), one DC call over all B * |targets| images.

    Args:
        synthesizer: the loaded artifacts.
        code: float32 (B, C, S/4, S/4) codes, from :func:`encode` (EC) or EC_r.
        targets: modalities to decode, distinct.

    Returns:
        target -> float32 (B, S, S) images, per-image standardized as DC makes them.
    """
    unknown = sorted(set(targets) - set(MODALITIES))
    if not targets or unknown or len(set(targets)) != len(targets):
        raise ValueError(f"targets must be distinct modalities of {MODALITIES}, got {tuple(targets)}")
    batch = len(code)
    conditions = np.concatenate([condition_planes(batch, m, code.shape[2:]) for m in targets])
    images = synthesizer.run("DC", code=np.concatenate([code] * len(targets)), condition=conditions)[:, 0]
    return {m: images[t * batch : (t + 1) * batch] for t, m in enumerate(targets)}


def translate(
    synthesizer: Synthesizer, images: Mapping[str, np.ndarray], targets: Sequence[str]
) -> dict[str, np.ndarray]:
    """Translate registered slices of one or more modalities into the target modalities (Sec. 2.4).

    ``x_t,i = DC(mean_j EC(x_j), i)``: with one input this is the paper's translation ``x_t,j,i``; with
    several, their codes are averaged (module docstring).

    Args:
        synthesizer: the loaded artifacts.
        images: modality -> float32 (B, S, S) slices at the artifacts' size S, standardized as in training
            (:func:`prepare_slices`).
        targets: modalities to produce; a given modality may be asked for too (its reconstruction).

    Returns:
        target -> float32 (B, S, S), per-image standardized.

    Raises:
        ValueError: as :func:`encode` and :func:`decode`.
    """
    return decode(synthesizer, encode(synthesizer, images), targets)
