"""Inference on single radiographs: ``cxrlens predict``, ONNX export and the ONNX Runtime backend."""

from cxrlens.infer.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
