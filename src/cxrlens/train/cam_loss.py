"""Paper 000's CAM loss: a differentiable Grad-CAM compared with the radiologist's boxes.

Grad-CAM (paper 000 eq. 1-2, Selvaraju et al.): for class ``c`` with score ``y^c`` and
feature map ``A`` (C x h x w),

    alpha_k^c = 1/(h w) sum_ij d y^c / d A^k_ij          (eq. 1)
    L^c       = ReLU(sum_k alpha_k^c A^k)                 (eq. 2)

Here :func:`cxrlens.explain.grad_cam.gradcam` takes the gradients with ``create_graph=True``
so the heatmap stays a function of the encoder's weights, for all requested classes in
one batched autograd call. The CAM loss (eq. 6-7) is the binary
cross-entropy between ``sigmoid(L^c)`` and the image's merged box mask, for every
(image, finding) pair whose boxes the image carries; eq. 8 adds ``lambda`` times it to
the BYOL loss.

The ReLU of eq. 2 is optional here (``relu``) and off in the default config: after it,
``sigmoid(L^c) >= 0.5`` everywhere, so pixels outside the boxes are stuck at a loss of
log 2 with zero gradient and, with Grad-CAM's small magnitudes, the whole loss stalls
(see ``PretrainConfig.cam_relu``). Without it the CAM is a logit map and both inside and
outside pixels are trained. The scores come from BYOL-CAM's finding head in pretraining
(:mod:`cxrlens.ssl.byol_cam`) and from the classifier's own logits in fine-tuning
(:class:`cxrlens.train.objectives.SupervisedObjective`, paper 000's "XRV + CAM loss").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrlens.explain.grad_cam import gradcam


def cam_loss(features: torch.Tensor, scores: torch.Tensor, box_mask: torch.Tensor, box_findings: torch.Tensor,
             resolution: str = "feature", relu: bool = False) -> torch.Tensor:
    """Mean BCE(sigmoid(Grad-CAM), merged box mask) over the boxed (image, finding) pairs (eq. 6-7).

    ``box_mask``: B x 1 x H x W in {0, 1} (the union of each image's boxes); ``box_findings``:
    B x K multi-hot of the findings those boxes show. ``resolution="feature"`` compares at
    the feature map's size (the mask area-averaged into soft targets); ``"image"`` upsamples
    the CAM bilinearly to the mask. Returns a zero that still depends on ``scores`` when
    the batch has no boxes, so every parameter takes part in every step (DDP).
    """
    pairs = box_findings.nonzero()
    if len(pairs) == 0:
        return scores.sum() * 0.0
    classes = box_findings.any(dim=0).nonzero().flatten()
    cams = gradcam(features, scores, classes, relu=relu, create_graph=True)  # B x P x h x w
    slot = torch.searchsorted(classes, pairs[:, 1])
    chosen = cams[pairs[:, 0], slot]                                          # N x h x w
    target = box_mask[pairs[:, 0], 0].to(chosen.dtype)                        # N x H x W
    if resolution == "feature":
        target = F.interpolate(target[:, None], size=chosen.shape[-2:], mode="area")[:, 0]
    elif resolution == "image":
        chosen = F.interpolate(chosen[:, None], size=target.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    else:
        raise ValueError(f"resolution must be 'feature' or 'image', not {resolution!r}")
    return F.binary_cross_entropy_with_logits(chosen.float(), target.float())
