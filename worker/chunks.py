"""A chunk's accepted samples on disk: one ``.npz`` per chunk, written atomically, read back as samples.

Chunk files are the hand-over from the chunk jobs to the assembly job. A chunk file appears complete
(temp file + ``os.replace``) or not at all, so a retried chunk either finds its file and is done, or
makes it anew; since the samples of a chunk are a pure function of the request, both give the same bytes.
"""

import json
import os
import uuid
from pathlib import Path

import numpy as np

from worker.pipeline import Sample, SampleScores, SynthesisProgress


def save_chunk(path: Path, samples: list[Sample], progress: SynthesisProgress, short: str | None) -> None:
    """Write a chunk's samples (all with the same modalities) and its counters to ``path``.

    Args:
        path: the ``.npz`` file to create; its folder is created.
        samples: accepted samples in index order; may be empty when the chunk stopped short.
        progress: the chunk's counters.
        short: why the chunk made fewer samples than asked (the acceptance error), else None.
    """
    modalities = list(samples[0].images) if samples else []
    arrays: dict[str, np.ndarray] = {
        "index": np.array([s.index for s in samples], np.int64),
        "images": np.array([[s.images[m] for m in modalities] for s in samples], np.float32),
        "label": np.array([s.label for s in samples], np.uint8),
        "f": np.array([s.f for s in samples], np.uint8),
        "brain_mask": np.array([s.brain_mask for s in samples], np.uint8),
    }
    meta = {
        "modalities": modalities,
        "scores": [s.scores.model_dump(mode="json") for s in samples],
        "progress": progress.model_dump(mode="json"),
        "short": short,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")  # unique across hosts
    with partial.open("wb") as stream:
        # numpy's stub matches **arrays against the allow_pickle keyword; no array is named so
        np.savez(stream, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    os.replace(partial, path)


def load_outcome(path: Path) -> tuple[SynthesisProgress, str | None]:
    """A chunk file's counters and short message, without reading its samples."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
    return SynthesisProgress.model_validate(meta["progress"]), meta["short"]


def load_samples(path: Path) -> list[Sample]:
    """A chunk file's samples (see :func:`save_chunk`), each array read and decompressed once."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        index, images, label, f, brain_mask = (
            data[key] for key in ("index", "images", "label", "f", "brain_mask")
        )
    return [
        Sample(
            index=int(index[k]),
            images={m: images[k, c] for c, m in enumerate(meta["modalities"])},
            label=label[k],
            f=f[k],
            brain_mask=brain_mask[k],
            scores=SampleScores.model_validate(meta["scores"][k]),
        )
        for k in range(len(index))
    ]
