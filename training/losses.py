"""Multi-task loss: heatmap focal loss, L1 regression at object centres, semantic cross-entropy.

The semantic part may add a Lovász-softmax term (Berman, Rannen Triki and Blaschko, CVPR 2018;
``LossWeights.semantic_lovasz``): for each category present in the batch, the pixels' errors
``|[label = c] - p_c|`` sorted from the largest weigh by how much each adds to the category's
Jaccard loss ``1 - |intersection| / |union|`` of the prediction, which makes the term the
Lovász extension of that loss, a convex surrogate whose gradient follows the IoU (the
metric reported) where cross-entropy follows the pixel count.
"""

import dataclasses
from typing import NamedTuple, Optional

from bev_perception.a2d2_classes import IGNORE_INDEX
from bev_perception.model.network import NetworkOutput
import torch
import torch.nn.functional as F
from training.targets import Targets


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Task weights of the total loss and per-target weights inside the regression loss."""

    heatmap: float = 1.0
    regression: float = 0.25  # CenterPoint's weight of the box regression
    semantic: float = 1.0
    semantic_balance: float = 0.0  # class weights (batch frequency)^-balance; 0: plain mean
    semantic_lovasz: float = 0.0  # weight of the Lovász-softmax term next to the cross-entropy
    offset: float = 1.0
    z: float = 1.0
    log_size: float = 1.0
    yaw: float = 1.0


class LossBreakdown(NamedTuple):
    """Weighted total and the unweighted task losses (0-dim tensors)."""

    total: torch.Tensor
    heatmap: torch.Tensor
    regression: torch.Tensor
    semantic: torch.Tensor


def heatmap_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                       beta: float = 4.0, ignore: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Return the CenterNet penalty-reduced focal loss, summed and divided by the positives.

    Args:
        logits: (B, n_cls, h, w) heatmap logits.
        target: (B, n_cls, h, w) Gaussian heatmap in [0, 1]; cells equal to 1 are positives.
        alpha: focusing exponent.
        beta: exponent of the penalty reduction around positives.
        ignore: (B, h, w) bool cells that are no negatives for any class, or None.
    """
    logits = logits.float()
    positive = target >= 1.0
    probability = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    positive_loss = torch.where(positive, (1 - probability) ** alpha * log_p,
                                torch.zeros_like(logits))
    negative = ~positive if ignore is None else ~positive & ~ignore[:, None].to(positive.device)
    negative_loss = torch.where(negative, (1 - target) ** beta * probability ** alpha * log_not_p,
                                torch.zeros_like(logits))
    num_positive = positive.sum().clamp_min(1).to(logits.dtype)
    return -(positive_loss.sum() + negative_loss.sum()) / num_positive


def gather_at_cells(maps: torch.Tensor, cell_index: torch.Tensor) -> torch.Tensor:
    """Return the values of maps (B, C, h, w) at flat cells (B, M) as (B, M, C)."""
    batch, channels = maps.shape[:2]
    flat = maps.reshape(batch, channels, -1)  # (B, C, h*w)
    index = cell_index[:, None, :].expand(batch, channels, cell_index.shape[1])
    return torch.gather(flat, 2, index).transpose(1, 2)  # (B, M, C)


def regression_loss(output: NetworkOutput, targets: Targets,
                    weights: LossWeights) -> torch.Tensor:
    """Return the weighted L1 over offset, z, log-size and yaw, averaged over objects.

    Each slot counts with its ``Targets.weight`` (1 at object centres,
    ``TargetConfig.footprint_regression`` at the other cells inside a box); the sum is divided
    by the number of objects.
    """
    weight = targets.weight.to(torch.float32)  # (B, M)
    num_objects = targets.mask.sum().clamp_min(1).to(torch.float32)
    total = output.offset.new_zeros(()).float()
    for name in ('offset', 'z', 'log_size', 'yaw'):
        prediction = gather_at_cells(getattr(output, name).float(), targets.cell_index)
        error = (prediction - getattr(targets, name)).abs().sum(2)  # (B, M)
        total = total + getattr(weights, name) * (error * weight).sum() / num_objects
    return total


#: Largest class weight of the balanced semantic loss (the pixel-weighted mean is 1).
MAX_CLASS_WEIGHT = 10.0


def semantic_class_weights(labels: torch.Tensor, classes: int, balance: float) -> torch.Tensor:
    """Return (classes,) weights (batch frequency)^-balance, pixel-weighted mean 1, capped.

    Rare classes (poles, signs, people, lane markings) weigh more than road and sky, so the
    loss follows the per-class IoU rather than the pixel count. Classes absent from the batch
    get weight 0 (they have no pixel to weigh).
    """
    counts = torch.bincount(labels[labels != IGNORE_INDEX].reshape(-1),
                            minlength=classes)[:classes].float()
    total = counts.sum().clamp_min(1.0)
    weights = torch.where(counts > 0, (counts / total).clamp_min(1e-9) ** -balance,
                          torch.zeros_like(counts))
    weights = weights * total / (weights * counts).sum().clamp_min(1e-9)
    return weights.clamp(max=MAX_CLASS_WEIGHT)


def semantic_loss(logits: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                  camera_valid: torch.Tensor, balance: float = 0.0,
                  lovasz: float = 0.0) -> torch.Tensor:
    """Return the pixel-mean cross-entropy over labelled pixels of camera-valid samples.

    With ``lovasz`` > 0, plus that weight times ``lovasz_softmax_loss`` of the same pixels.

    Args:
        logits: (B, n_sem, Hc, Wc) or None.
        labels: (B, Hc, Wc) class ids, IGNORE_INDEX (255) where unlabelled, or None.
        camera_valid: (B,) bool; samples without a valid image contribute nothing.
        balance: exponent of the class weights (``semantic_class_weights``); 0: none.
        lovasz: weight of the Lovász-softmax term; 0: none.
    """
    if logits is None or labels is None:
        zero = camera_valid.new_zeros((), dtype=torch.float32)
        return zero if logits is None else logits.sum() * 0.0
    if tuple(labels.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(f'semantic labels {tuple(labels.shape)} do not match logits '
                         f'{tuple(logits.shape)} (resize labels to the camera input size)')
    labels = labels.to(device=logits.device, dtype=torch.int64)
    ignored = torch.full_like(labels, IGNORE_INDEX)
    labels = torch.where(camera_valid[:, None, None], labels, ignored)
    labelled = (labels != IGNORE_INDEX).sum()
    weight = (semantic_class_weights(labels, logits.shape[1], balance) if balance > 0
              else None)
    summed = F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=IGNORE_INDEX,
                             reduction='sum')
    loss = summed / labelled.clamp_min(1).to(summed.dtype)
    if lovasz > 0:
        loss = loss + lovasz * lovasz_softmax_loss(logits, labels)
    return loss


#: The Lovász-softmax term reads every LOVASZ_PIXEL_STRIDE-th row and column of the logits: it
#: sorts each present category's errors, and sorting every pixel of 256 x 416 images costs more
#: than the rest of a step on the CPU (the semantic head predicts at stride 4 or 2 anyway).
LOVASZ_PIXEL_STRIDE = 4


def lovasz_softmax_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return the Lovász-softmax loss, averaged over the categories present in ``labels``.

    Args:
        logits: (B, n_sem, H, W) logits.
        labels: (B, H, W) int64 category ids, IGNORE_INDEX where unlabelled.
    """
    step = LOVASZ_PIXEL_STRIDE
    probabilities = logits[:, :, ::step, ::step].float().softmax(1)  # (B, n_sem, h, w)
    probabilities = probabilities.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])  # (N, n_sem)
    labels = labels[:, ::step, ::step].reshape(-1)  # (N,)
    labelled = labels != IGNORE_INDEX
    probabilities, labels = probabilities[labelled], labels[labelled]
    if labels.numel() == 0:
        return logits.sum() * 0.0
    present = torch.unique(labels)  # (P,)
    truth = (labels[:, None] == present[None, :]).to(probabilities.dtype)  # (N, P)
    errors = (truth - probabilities[:, present]).abs()  # (N, P)
    errors, order = errors.sort(0, descending=True)
    truth = truth.gather(0, order)
    positives = truth.sum(0)  # (P,)
    # Jaccard loss of predicting the first k sorted pixels as the category, k = 1 .. N.
    jaccard = 1.0 - (positives - truth.cumsum(0)) / (positives + (1.0 - truth).cumsum(0))
    weights = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])  # (N, P) its increments
    return (errors * weights).sum(0).mean()


def multitask_loss(output: NetworkOutput, targets: Targets,
                   semantic_labels: Optional[torch.Tensor],
                   weights: LossWeights = LossWeights()) -> LossBreakdown:
    """Return the weighted multi-task loss and its parts.

    Args:
        output: the network output for a batch of B samples.
        targets: collated targets (see ``training.targets.collate_targets``) on output's device.
        semantic_labels: (B, Hc, Wc) uint8/long ids with 255 = ignore, or None.
        weights: task and regression weights.
    """
    heatmap = heatmap_focal_loss(output.heatmap, targets.heatmap, ignore=targets.ignore)
    regression = regression_loss(output, targets, weights)
    semantic = semantic_loss(output.semantic, semantic_labels, output.camera_valid,
                             weights.semantic_balance, weights.semantic_lovasz)
    total = (weights.heatmap * heatmap + weights.regression * regression
             + weights.semantic * semantic)
    return LossBreakdown(total=total, heatmap=heatmap, regression=regression, semantic=semantic)
