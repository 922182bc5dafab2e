"""Classification and localization metrics, the evaluation of a checkpoint, linear evaluation, the report."""

from cxrlens.evaluate.evaluator import evaluate

__all__ = ["evaluate"]
