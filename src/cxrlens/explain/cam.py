"""CAM (Zhou et al. 2016; paper 000): the model's own class maps, ``sum_k w_ck A^k`` for a
linear head on pooled features, the saliency map ``S`` for paper 004's model."""

from __future__ import annotations

import torch

from cxrlens.explain.base import METHODS, CAMInputs, CAMMethod


@METHODS.register("cam")
class CAM(CAMMethod):
    def maps(self, inputs: CAMInputs) -> torch.Tensor:
        with torch.no_grad():
            return inputs.model.class_maps(inputs.features, inputs.classes)
