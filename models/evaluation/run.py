"""``mrisynth evaluate``: the paper's experiments on the user's data and artifacts, one report.

Order of work (fast checks first, the Table 2 trainings last):

1. the artifacts (:class:`worker.sessions.Synthesizer`, sha256-verified) and the real splits of the
   split the artifacts were trained with (:mod:`models.evaluation.real`);
2. the synthetic sets (:mod:`models.evaluation.synthetic`) through the worker's ONNX pipeline;
3. Table 1 (:mod:`~models.evaluation.table1`), registration (:mod:`~models.evaluation.registration`),
   realism and diversity (:mod:`~models.evaluation.realism`);
4. Table 2 (:mod:`~models.evaluation.table2`), one training per row and repeat;
5. the report (:mod:`~models.evaluation.report`).

Seeds: the synthetic samples are samples 0 .. n - 1 of ``seed``; the real-slice order of Table 2 and
the augmented set are drawn from ``[seed, 1]`` and ``[seed, 2]``; row trainings, patches and pairs
from ``seed`` as their modules say. On the CPU with the same thread count, the same command gives the
same numbers.
"""

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.evaluation.augmentation import AugmentationConfig, enhanced_set
from models.evaluation.modalities import ModalitiesResult, modality_scores
from models.evaluation.paper import DEFAULT_ROWS, table2_rows
from models.evaluation.real import RealSplit, artifacts_slice_config, leaked_cases, load_real_splits
from models.evaluation.realism import RealismConfig, RealismResult, realism
from models.evaluation.registration import RegistrationResult, registration
from models.evaluation.synthetic import SynthesisConfig, SyntheticSet, synthetic_sets
from models.evaluation.table1 import FidelityRow, lesion_fidelity
from models.evaluation.table2 import RowResult, Table2Config, Table2Data, required_samples, train_row
from models.presets import get_preset
from mrisynth.artifacts import MANIFEST_NAME, Manifest, sha256_file
from mrisynth.structure import brain_mask
from worker.sessions import Synthesizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationConfig:
    """One ``mrisynth evaluate`` invocation.

    Attributes:
        data: BraTS folder the artifacts were trained on (its test split is held out).
        artifacts: artifacts directory (``mrisynth export``).
        out: report directory (report.md, results.csv, PNG figures).
        cache: slice cache folder; None: a temporary one, removed at the end.
        seed: the evaluation's seed.
        preset: training preset of the Table 2 segmentors (network, batch size, optimizer).
        threads: torch CPU threads, 0 for torch's default; 1 on a shared CPU.
        rows: Table 2 rows by NO.
        table2: steps, repeats and evaluations of the Table 2 trainings.
        synthesis: sizes and thresholds of the synthetic sets.
        realism: SWD and MS-SSIM settings.
        augmentation: ranges of the enhanced data (Sec. 3.3).
        examples: synthetic samples (and half as many real slices) in examples.png.
        command: the command line, recorded in the report.
    """

    data: Path
    artifacts: Path
    out: Path
    cache: Path | None = None
    seed: int = 0
    preset: str = "demo"
    threads: int = 1
    rows: tuple[int, ...] = DEFAULT_ROWS
    table2: Table2Config = Table2Config()
    synthesis: SynthesisConfig = SynthesisConfig()
    realism: RealismConfig = RealismConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    examples: int = 4
    command: str = ""


@dataclass(frozen=True, eq=False)
class EvaluationResults:
    """Everything the report shows.

    Attributes:
        config: the invocation.
        manifest: the artifacts' manifest.
        manifest_sha256: sha256 of ``manifest.json`` at the start and at the end of the run.
        train: the real training split.
        test: the real test split.
        leaked: test cases the artifacts' training record lists as training cases.
        unfiltered: the unfiltered synthetic set.
        table2_set: the Table 2 synthetic set, None when no row needs one.
        table1: our Table 1.
        table2: our Table 2 rows.
        registration: registration Dice.
        realism: SWD and MS-SSIM.
        modalities: lesion contrast per modality and region, and the independent modality probe.
        wall_s: wall-clock seconds of the whole evaluation.
        environment: torch version, threads, device, and the machine's 1-minute load average.
    """

    config: EvaluationConfig
    manifest: Manifest
    manifest_sha256: tuple[str, str]
    train: RealSplit
    test: RealSplit
    leaked: list[str]
    unfiltered: SyntheticSet
    table2_set: SyntheticSet | None
    table1: list[FidelityRow]
    table2: list[RowResult]
    registration: RegistrationResult
    realism: RealismResult
    modalities: ModalitiesResult
    wall_s: float
    environment: dict[str, str]


def _table2_data(
    config: EvaluationConfig,
    train: RealSplit,
    test: RealSplit,
    synthetic: SyntheticSet | None,
    n_enhanced: int,
) -> Table2Data:
    """The Table 2 sources: real slices in a seeded order, the synthetic set, n_enhanced augmented slices."""
    order = np.random.default_rng([config.seed, 1]).permutation(len(train))
    real = (train.images[order], train.labels[order])
    enhanced = enhanced_set(*real, n_enhanced, np.random.default_rng([config.seed, 2]), config.augmentation)
    empty = (train.images[:0], train.labels[:0])
    return Table2Data(
        real=real,
        synthetic=empty if synthetic is None else (synthetic.images, synthetic.labels),
        enhanced=enhanced,
        test=(test.images, test.labels),
    )


def run_evaluation(config: EvaluationConfig) -> EvaluationResults:
    """Run every experiment of the evaluation (module docstring); writes nothing."""
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    manifest_path = Path(config.artifacts) / MANIFEST_NAME
    sha_start = sha256_file(manifest_path)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    preset = get_preset(config.preset)
    rows = table2_rows(config.rows)
    synthesizer = Synthesizer.load(config.artifacts)
    manifest = synthesizer.manifest
    height, width = manifest.image_size
    if height != width:
        raise ValueError(f"the evaluation needs square images, the artifacts have {manifest.image_size}")
    with tempfile.TemporaryDirectory(prefix="mrisynth-evaluate-") as scratch:
        cache = config.cache or Path(scratch) / "cache"
        train, test = load_real_splits(config.data, cache, artifacts_slice_config(manifest), height)
    leaked = leaked_cases(manifest, test)
    if leaked:
        logger.warning("test cases %s are among the artifacts' training cases", leaked)
    n_synthetic, n_enhanced = required_samples(rows, len(train))
    unfiltered, table2_set = synthetic_sets(synthesizer, config.synthesis, config.seed, n_synthetic)
    table1 = lesion_fidelity(synthesizer, test.images, test.labels, unfiltered.images, unfiltered.labels)
    beta = manifest.thresholds.beta
    registered = registration(unfiltered.images, unfiltered.f, test.images, beta)
    real_like = realism(unfiltered.images, train.images, test.images, config.realism, config.seed)
    real_brain = brain_mask(test.images[:, 0], expansion=0)
    distinct = modality_scores(
        train.images,
        (test.images, test.labels, real_brain),
        (unfiltered.images, unfiltered.labels, unfiltered.brain_mask),
    )
    data = _table2_data(config, train, test, table2_set, n_enhanced)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    table2 = [train_row(row, data, preset, config.table2, config.seed, device) for row in rows]
    return EvaluationResults(
        config=config,
        manifest=manifest,
        manifest_sha256=(sha_start, sha256_file(manifest_path)),
        train=train,
        test=test,
        leaked=leaked,
        unfiltered=unfiltered,
        table2_set=table2_set,
        table1=table1,
        table2=table2,
        registration=registered,
        realism=real_like,
        modalities=distinct,
        wall_s=time.perf_counter() - start,
        environment={
            "torch": torch.__version__,
            "threads": str(torch.get_num_threads()),
            "device": str(device),
            "load": f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
        },
    )
