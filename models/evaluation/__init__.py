"""``mrisynth evaluate``: Tables 1 and 2 of Qu et al. on the user's data and artifacts, and the
registration, realism and diversity of the synthetic data (see :mod:`models.evaluation.run`)."""

from models.evaluation.report import write_report
from models.evaluation.run import EvaluationConfig, EvaluationResults, run_evaluation

__all__ = ["EvaluationConfig", "EvaluationResults", "run_evaluation", "write_report"]
