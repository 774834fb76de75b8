"""``mrisynth evaluate``: the paper's experiments on the user's data and artifacts, one report.

Order of work (fast checks first, the Table 2 trainings last):

1. the artifacts (:class:`worker.sessions.Synthesizer`, sha256-verified), the real splits of the
   split the artifacts were trained with and the held-out set (:mod:`models.evaluation.real`: the
   artifacts' test split, or every case of ``test_data``), refused below ``min_test_cases`` cases;
2. the synthetic sets (:mod:`models.evaluation.synthetic`) through the worker's ONNX pipeline;
3. Table 1 (:mod:`~models.evaluation.table1`; its real row on the artifacts' test split and on the
   held-out set), registration (:mod:`~models.evaluation.registration`), realism and diversity
   (:mod:`~models.evaluation.realism`), lesion contrast and the modality classifier
   (:mod:`~models.evaluation.modalities`), MMD (:mod:`~models.evaluation.mmd`), paired fidelity
   (:mod:`~models.evaluation.fidelity`) and the translation table
   (:mod:`~models.evaluation.translation_table`), all on the held-out set;
4. Table 2 (:mod:`~models.evaluation.table2`), ``repeats`` trainings per row, scored on the held-out
   set, and the bootstrap intervals of its paired comparisons (:mod:`~models.evaluation.comparisons`);
5. the report (:mod:`~models.evaluation.report`).

Seeds (all recorded in the report, :func:`seeds`): the synthetic samples are samples 0 .. n - 1 of
``seed``; the real-slice order of Table 2 and the augmented set are drawn from ``[seed, 1]`` and
``[seed, 2]``; run r of every Table 2 row from ``seed + 1000 r`` (weights) and ``[seed + 1000 r,
NO.]`` (batches); MMD subsamples from ``[seed, 3]``, the comparisons' resamples from ``[seed, 4, NO.,
reference NO.]``, the translation baseline's reference slices from ``[seed, 5]``; patches and pairs
from ``seed`` as their modules say; the modality classifier from its own seed. On the CPU with the
same thread count, the same command gives the same numbers.
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
from models.evaluation.comparisons import Comparison, compare_rows
from models.evaluation.fidelity import PairedScores, paired_scores, paired_synthesis
from models.evaluation.mmd import MmdResult, mmd_by_modality
from models.evaluation.modalities import ModalitiesResult, modality_scores
from models.evaluation.paper import DEFAULT_ROWS, table2_rows
from models.evaluation.real import (
    MIN_TEST_CASES,
    HeldOut,
    RealSplit,
    artifacts_slice_config,
    check_enough_cases,
    content_leaks,
    leaked_cases,
    load_held_out,
    load_real_splits,
)
from models.evaluation.realism import RealismConfig, RealismResult, realism
from models.evaluation.registration import RegistrationResult, registration
from models.evaluation.stats import RESAMPLES
from models.evaluation.synthetic import SynthesisConfig, SyntheticSet, synthetic_sets
from models.evaluation.table1 import FidelityRow, lesion_fidelity, real_row
from models.evaluation.table2 import (
    RowResult,
    Table2Config,
    Table2Data,
    required_samples,
    run_seeds,
    train_row,
)
from models.evaluation.translation_table import TranslationRow, translation_table
from models.presets import get_preset
from mrisynth.artifacts import MANIFEST_NAME, Manifest, sha256_file
from mrisynth.conventions import MODALITIES
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
        test_data: BraTS folder whose every case is held out (:mod:`models.evaluation.real`); None:
            the artifacts' test split is the held-out set.
        min_test_cases: held-out cases required, >= 1; default 5.
        bootstrap: resamples of the Table 2 intervals, >= 1; default 2000.
        translation: whether to make the translation table; default True.
        cache: slice cache folder of ``data``; None: a temporary one, removed at the end. The held-out
            folder's cache is beside it, ``<cache>-heldout``.
        seed: the evaluation's seed.
        preset: training preset of the Table 2 segmentors (network, batch size, optimizer).
        threads: torch CPU threads, 0 for torch's default; default 2 (the project's CPU); 1 on a shared one.
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
    test_data: Path | None = None
    min_test_cases: int = MIN_TEST_CASES
    bootstrap: int = RESAMPLES
    translation: bool = True
    cache: Path | None = None
    seed: int = 0
    preset: str = "demo"
    threads: int = 2
    rows: tuple[int, ...] = DEFAULT_ROWS
    table2: Table2Config = Table2Config()
    synthesis: SynthesisConfig = SynthesisConfig()
    realism: RealismConfig = RealismConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    examples: int = 4
    command: str = ""

    def __post_init__(self) -> None:
        if self.min_test_cases < 1 or self.bootstrap < 1:
            raise ValueError(
                f"need min_test_cases >= 1 and bootstrap >= 1, got {self.min_test_cases}, {self.bootstrap}"
            )


@dataclass(frozen=True, eq=False)
class EvaluationResults:
    """Everything the report shows.

    Attributes:
        config: the invocation.
        manifest: the artifacts' manifest.
        manifest_sha256: sha256 of ``manifest.json`` at the start and at the end of the run.
        train: the real training split.
        test: the artifacts' real test split (Table 1's real row).
        held_out: the held-out set of everything else.
        leaked: held-out cases the artifacts' training record lists as training cases (same folder), or
            whose slices are byte-identical to training slices (a folder of its own).
        unfiltered: the unfiltered synthetic set.
        table2_set: the Table 2 synthetic set, None when no row needs one.
        table1: our Table 1.
        table2: our Table 2 rows.
        registration: registration Dice.
        realism: SWD and MS-SSIM.
        modalities: lesion contrast per modality and region, and the independent modality probe.
        comparisons: the paired Table 2 comparisons with their intervals.
        fidelity: paired fidelity of the held-out slices.
        mmd: MMD of the held-out and synthetic sets against the training slices.
        translation: the translation table (empty when not asked for).
        wall_s: wall-clock seconds of the whole evaluation.
        environment: torch version, threads, device, and the machine's 1-minute load average.
    """

    config: EvaluationConfig
    manifest: Manifest
    manifest_sha256: tuple[str, str]
    train: RealSplit
    test: RealSplit
    held_out: HeldOut
    leaked: list[str]
    unfiltered: SyntheticSet
    table2_set: SyntheticSet | None
    table1: list[FidelityRow]
    table2: list[RowResult]
    registration: RegistrationResult
    realism: RealismResult
    modalities: ModalitiesResult
    comparisons: list[Comparison]
    fidelity: PairedScores
    mmd: MmdResult
    translation: list[TranslationRow]
    wall_s: float
    environment: dict[str, str]


def seeds(config: EvaluationConfig) -> dict[str, str]:
    """Every seed of the run (module docstring), as the report lists them."""
    from models.evaluation.modalities import ProbeConfig

    s = config.seed
    return {
        "synthetic samples": f"samples 0 .. n - 1 of seed {s}",
        "Table 2 real-slice order, enhanced set": f"[{s}, 1], [{s}, 2]",
        "Table 2 runs (weights; batches [seed, NO.])": ", ".join(
            map(str, run_seeds(s, config.table2.repeats))
        ),
        "SWD patches and directions, MS-SSIM pairs": f"{s}",
        "MMD subsamples": f"[{s}, 3]",
        "bootstrap resamples": f"[{s}, 4, NO., reference NO.]",
        "translation baseline reference": f"[{s}, 5]",
        "modality classifier": f"{ProbeConfig().seed}",
        "real split (slice cache)": "the artifacts' recorded split seed",
    }


def _table2_data(
    config: EvaluationConfig,
    train: RealSplit,
    held_out: HeldOut,
    synthetic: SyntheticSet | None,
    n_enhanced: int,
) -> Table2Data:
    """The Table 2 sources: real slices in a seeded order, the synthetic set, n_enhanced augmented
    slices; the held-out set to score on."""
    order = np.random.default_rng([config.seed, 1]).permutation(len(train))
    real = (train.images[order], train.labels[order])
    enhanced = enhanced_set(*real, n_enhanced, np.random.default_rng([config.seed, 2]), config.augmentation)
    empty = (train.images[:0], train.labels[:0])
    return Table2Data(
        real=real,
        synthetic=empty if synthetic is None else (synthetic.images, synthetic.labels),
        enhanced=enhanced,
        test=(held_out.split.images, held_out.split.labels),
        test_cases=held_out.case_index,
        cases=len(held_out.split.cases),
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
    slice_config = artifacts_slice_config(manifest)
    with tempfile.TemporaryDirectory(prefix="mrisynth-evaluate-") as scratch:
        cache = Path(config.cache or Path(scratch) / "cache")
        train, test = load_real_splits(config.data, cache, slice_config, height)
        separate = config.test_data is not None
        held_out = load_held_out(
            Path(config.test_data or config.data),
            cache.with_name(cache.name + "-heldout") if separate else cache,
            slice_config,
            height,
            separate,
        )
    check_enough_cases(held_out, config.min_test_cases)
    leaked = content_leaks(train, held_out) if separate else leaked_cases(manifest, test)
    if leaked:
        logger.warning("held-out cases %s are among the training cases", leaked)
    held = held_out.split
    held_brain = brain_mask(held.images[:, 0], expansion=0)
    n_synthetic, n_enhanced = required_samples(rows, len(train))
    unfiltered, table2_set = synthetic_sets(synthesizer, config.synthesis, config.seed, n_synthetic)
    table1 = lesion_fidelity(synthesizer, test.images, test.labels, unfiltered.images, unfiltered.labels)
    if separate:
        table1.insert(1, real_row(synthesizer, held.images, held.labels, "real held-out"))
    beta = manifest.thresholds.beta
    registered = registration(unfiltered.images, unfiltered.f, held.images, beta)
    real_like = realism(unfiltered.images, train.images, held.images, config.realism, config.seed)
    distinct = modality_scores(
        train.images,
        (held.images, held.labels, held_brain),
        (unfiltered.images, unfiltered.labels, unfiltered.brain_mask),
    )
    mmd = mmd_by_modality(
        (train.images, brain_mask(train.images[:, 0], expansion=0)),
        (held.images, held_brain),
        (unfiltered.images, unfiltered.brain_mask),
        config.seed,
    )
    paired = paired_synthesis(synthesizer, held.images, held.labels)
    fidelity = paired_scores(held.images, paired, held.labels, MODALITIES, held_brain)
    translation = (
        translation_table(synthesizer, (held.images, held.labels, held_brain), train.images, config.seed)
        if config.translation
        else []
    )
    data = _table2_data(config, train, held_out, table2_set, n_enhanced)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    table2 = [train_row(row, data, preset, config.table2, config.seed, device) for row in rows]
    comparisons = compare_rows(table2, config.seed, config.bootstrap)
    return EvaluationResults(
        config=config,
        manifest=manifest,
        manifest_sha256=(sha_start, sha256_file(manifest_path)),
        train=train,
        test=test,
        held_out=held_out,
        leaked=leaked,
        unfiltered=unfiltered,
        table2_set=table2_set,
        table1=table1,
        table2=table2,
        registration=registered,
        realism=real_like,
        modalities=distinct,
        comparisons=comparisons,
        fidelity=fidelity,
        mmd=mmd,
        translation=translation,
        wall_s=time.perf_counter() - start,
        environment={
            "torch": torch.__version__,
            "threads": str(torch.get_num_threads()),
            "device": str(device),
            "load": f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
        },
    )
