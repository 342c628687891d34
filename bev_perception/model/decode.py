"""Box <-> regression encoding and detection decoding (peaks, top-K, thresholds, NMS).

Encoding on the head grid (see ``config`` for the cell convention), for a box centre (x, y):
``col + offset_x = (x - x_min) / cell`` and ``row + offset_y = (y - y_min) / cell`` with integer
``col``, ``row`` and offsets in [0, 1); ``cell_index = row * w + col``; ``z`` in metres;
``log_size = log(length, width, height)``; ``yaw = (sin, cos)``. ``regression_to_boxes`` is the
exact inverse of ``boxes_to_regression`` (yaw returned in (-pi, pi]).
"""

import math
from typing import List, NamedTuple, Optional, Sequence, Union

from bev_perception.model.config import ModelConfig, NMSConfig
import numpy as np
import torch
import torch.nn.functional as F


class BoxEncoding(NamedTuple):
    """Boxes encoded on the head grid, K entries each."""

    cell_index: torch.Tensor  # (K,) int64 row * w + col (clamped into the grid)
    offset: torch.Tensor  # (K, 2) float32 sub-cell offset (x, y) in cells
    z: torch.Tensor  # (K, 1) float32 metres
    log_size: torch.Tensor  # (K, 3) float32 log metres
    yaw: torch.Tensor  # (K, 2) float32 sin, cos
    inside: torch.Tensor  # (K,) bool centre lies inside the grid's x, y range


class Detections(NamedTuple):
    """Detections of one sample, on the device of the network output."""

    boxes: torch.Tensor  # (K, 7) float32 x, y, z, length, width, height, yaw
    scores: torch.Tensor  # (K,) float32 in (0, 1)
    labels: torch.Tensor  # (K,) int64 index into ModelConfig.detection_classes


def wrap_angle(yaw: torch.Tensor) -> torch.Tensor:
    """Map angles (radians) into (-pi, pi]."""
    wrapped = torch.remainder(yaw + math.pi, 2.0 * math.pi) - math.pi  # [-pi, pi)
    return torch.where(wrapped <= -math.pi, wrapped + 2.0 * math.pi, wrapped)


def boxes_to_regression(boxes: torch.Tensor, config: ModelConfig) -> BoxEncoding:
    """Encode boxes (K, 7) in the model frame for the detection head grid."""
    rows, cols = config.head_hw
    cell = config.head_cell_size_m
    boxes64 = torch.as_tensor(boxes).to(torch.float64).reshape(-1, 7)
    grid_x = (boxes64[:, 0] - config.grid.x_range_m[0]) / cell
    grid_y = (boxes64[:, 1] - config.grid.y_range_m[0]) / cell
    col = torch.floor(grid_x)
    row = torch.floor(grid_y)
    grid = config.grid
    inside = ((boxes64[:, 0] >= grid.x_range_m[0]) & (boxes64[:, 0] < grid.x_range_m[1])
              & (boxes64[:, 1] >= grid.y_range_m[0]) & (boxes64[:, 1] < grid.y_range_m[1]))
    cell_index = (row.clamp(0, rows - 1) * cols + col.clamp(0, cols - 1)).to(torch.int64)
    offset = torch.stack([grid_x - col, grid_y - row], 1)
    log_size = torch.log(boxes64[:, 3:6].clamp_min(1e-6))
    yaw = torch.stack([torch.sin(boxes64[:, 6]), torch.cos(boxes64[:, 6])], 1)
    return BoxEncoding(
        cell_index=cell_index, offset=offset.float(), z=boxes64[:, 2:3].float(),
        log_size=log_size.float(), yaw=yaw.float(), inside=inside)


def regression_to_boxes(cell_index: torch.Tensor, offset: torch.Tensor, z: torch.Tensor,
                        log_size: torch.Tensor, yaw: torch.Tensor,
                        config: ModelConfig) -> torch.Tensor:
    """Decode regression values at head cells into boxes.

    Args:
        cell_index: (...,) int64 row * w + col.
        offset: (..., 2) sub-cell offset (x, y) in cells.
        z: (..., 1) metres.
        log_size: (..., 3) log metres.
        yaw: (..., 2) sin, cos (need not be normalised).
        config: model config (grid origin, head grid).

    Returns:
        (..., 7) float32 boxes, yaw in (-pi, pi].
    """
    cols = config.head_hw[1]
    cell = config.head_cell_size_m
    row = torch.div(cell_index, cols, rounding_mode='floor').to(torch.float64)
    col = torch.remainder(cell_index, cols).to(torch.float64)
    offset64 = offset.to(torch.float64)
    x = config.grid.x_range_m[0] + (col + offset64[..., 0]) * cell
    y = config.grid.y_range_m[0] + (row + offset64[..., 1]) * cell
    size = torch.exp(log_size.to(torch.float64))
    yaw64 = yaw.to(torch.float64)
    angle = wrap_angle(torch.atan2(yaw64[..., 0], yaw64[..., 1]))
    boxes = torch.cat([x[..., None], y[..., None], z.to(torch.float64), size, angle[..., None]],
                      -1)
    return boxes.to(torch.float32)


def box_corners_bev(boxes: torch.Tensor) -> torch.Tensor:
    """Return the BEV corners (..., 4, 2) of boxes (..., 7), counter-clockwise."""
    half_length = boxes[..., 3] / 2
    half_width = boxes[..., 4] / 2
    cos_yaw = torch.cos(boxes[..., 6])
    sin_yaw = torch.sin(boxes[..., 6])
    local_x = torch.stack([half_length, -half_length, -half_length, half_length], -1)
    local_y = torch.stack([half_width, half_width, -half_width, -half_width], -1)
    x = boxes[..., 0, None] + cos_yaw[..., None] * local_x - sin_yaw[..., None] * local_y
    y = boxes[..., 1, None] + sin_yaw[..., None] * local_x + cos_yaw[..., None] * local_y
    return torch.stack([x, y], -1)  # (..., 4, 2)


def _inside_box(points: torch.Tensor, boxes: torch.Tensor, eps: float) -> torch.Tensor:
    """Return whether points (..., P, 2) lie in the BEV rectangle of boxes (..., 7)."""
    delta = points - boxes[..., None, 0:2]  # (..., P, 2)
    cos_yaw = torch.cos(boxes[..., 6, None])
    sin_yaw = torch.sin(boxes[..., 6, None])
    local_x = cos_yaw * delta[..., 0] + sin_yaw * delta[..., 1]
    local_y = -sin_yaw * delta[..., 0] + cos_yaw * delta[..., 1]
    return ((local_x.abs() <= boxes[..., 3, None] / 2 + eps)
            & (local_y.abs() <= boxes[..., 4, None] / 2 + eps))


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def rotated_bev_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Return the BEV IoU of rotated boxes, broadcasting boxes_a (..., 7) with boxes_b (..., 7).

    The intersection polygon is built from the corners of each box inside the other and all
    edge-edge crossings, ordered by angle around their centroid, and measured by the shoelace
    formula (all in float64, fully vectorised).
    """
    a, b = torch.broadcast_tensors(boxes_a.to(torch.float64), boxes_b.to(torch.float64))
    eps = 1e-9
    corners_a = box_corners_bev(a)  # (..., 4, 2)
    corners_b = box_corners_bev(b)
    edges_a = torch.roll(corners_a, -1, dims=-2) - corners_a  # (..., 4, 2)
    edges_b = torch.roll(corners_b, -1, dims=-2) - corners_b
    # Edge i of a against edge j of b: (..., 4, 4).
    start_a = corners_a[..., :, None, :]
    direction_a = edges_a[..., :, None, :]
    start_b = corners_b[..., None, :, :]
    direction_b = edges_b[..., None, :, :]
    denominator = _cross(direction_a, direction_b)
    safe = torch.where(denominator.abs() > eps, denominator, torch.ones_like(denominator))
    between = start_b - start_a
    t = _cross(between, direction_b) / safe
    u = _cross(between, direction_a) / safe
    crossing_valid = ((denominator.abs() > eps) & (t >= -eps) & (t <= 1 + eps)
                      & (u >= -eps) & (u <= 1 + eps))
    crossings = start_a + t[..., None] * direction_a  # (..., 4, 4, 2)
    shape = crossings.shape[:-3]
    points = torch.cat([corners_a, corners_b, crossings.reshape(*shape, 16, 2)], -2)
    valid = torch.cat([_inside_box(corners_a, b, 1e-6), _inside_box(corners_b, a, 1e-6),
                       crossing_valid.reshape(*shape, 16)], -1)  # (..., 24)
    count = valid.sum(-1)  # (...,)
    weights = valid.to(torch.float64)
    centroid = (points * weights[..., None]).sum(-2) / count.clamp_min(1)[..., None]
    relative = points - centroid[..., None, :]
    angle = torch.atan2(relative[..., 1], relative[..., 0])
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # invalid points last
    order = torch.argsort(angle, dim=-1)
    ordered = torch.gather(relative, -2, order[..., None].expand_as(relative))  # (..., 24, 2)
    ordered_valid = torch.gather(valid, -1, order)
    ordered = torch.where(ordered_valid[..., None], ordered, ordered[..., :1, :])
    following = torch.roll(ordered, -1, dims=-2)
    intersection = 0.5 * _cross(ordered, following).sum(-1).abs()
    intersection = torch.where(count >= 3, intersection, torch.zeros_like(intersection))
    area_a = a[..., 3] * a[..., 4]
    area_b = b[..., 3] * b[..., 4]
    union = (area_a + area_b - intersection).clamp_min(eps)
    return (intersection / union).to(boxes_a.dtype)


def _suppression_matrix(boxes: torch.Tensor, labels: torch.Tensor, nms: NMSConfig,
                        radius_m: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Return (B, K, K) bool: candidate j would suppress candidate i (same class, overlapping).

    ``radius_m`` (n_cls,) on the boxes' device replaces ``nms.radius_m`` (distance NMS), so a
    caller can build it once instead of copying it to the device every frame.
    """
    same_class = labels[:, :, None] == labels[:, None, :]
    if nms.kind == 'distance':
        if radius_m is None:
            radius_m = torch.tensor(nms.radius_m, dtype=boxes.dtype, device=boxes.device)
        radius = radius_m.to(torch.float64)[labels]  # (B, K)
        distance = torch.cdist(boxes[..., :2].double(), boxes[..., :2].double())  # (B, K, K)
        close = distance < radius[:, :, None]
    else:
        close = rotated_bev_iou(boxes[:, :, None, :], boxes[:, None, :, :]) > nms.iou_threshold
    return same_class & close


def greedy_nms(candidate: torch.Tensor, suppression: torch.Tensor) -> torch.Tensor:
    """Run greedy NMS over score-sorted candidates.

    On the GPU a fixed loop over the top-K slots of tensor operations (no host
    synchronisation, so it can be captured in a CUDA graph); on the CPU, where synchronising
    costs nothing, the same recursion in numpy over the candidates only.

    Args:
        candidate: (B, K) bool, candidates sorted by descending score per row.
        suppression: (B, K, K) bool, [b, j, i] true when j suppresses i.

    Returns:
        (B, K) bool kept candidates.
    """
    if candidate.device.type == 'cpu':
        return torch.from_numpy(_greedy_nms_numpy(candidate.numpy(), suppression.numpy()))
    return greedy_nms_slots(candidate, suppression)


def greedy_nms_slots(candidate: torch.Tensor, suppression: torch.Tensor) -> torch.Tensor:
    """Return ``greedy_nms``'s keep mask by a loop of tensor operations over all K slots."""
    keep = torch.zeros_like(candidate)
    for index in range(candidate.shape[1]):  # over top-K slots, tensor ops only
        suppressed = (suppression[:, :index, index] & keep[:, :index]).any(dim=1)
        keep[:, index] = candidate[:, index] & ~suppressed
    return keep


def _greedy_nms_numpy(candidate: np.ndarray, suppression: np.ndarray) -> np.ndarray:
    """Return the (B, K) keep mask: slot i is kept unless a kept j < i suppresses it."""
    keep = np.zeros(candidate.shape, dtype=bool)
    for sample in range(candidate.shape[0]):
        kept: List[int] = []
        for index in np.flatnonzero(candidate[sample]):
            if not suppression[sample, kept, index].any():
                kept.append(index)
        keep[sample, kept] = True
    return keep


def _thresholds(score_thresholds: Union[None, float, Sequence[float], torch.Tensor],
                config: ModelConfig, device: torch.device) -> torch.Tensor:
    num_classes = config.num_detection_classes
    if score_thresholds is None:
        score_thresholds = config.head.score_threshold
    values = torch.as_tensor(score_thresholds, dtype=torch.float32, device=device).reshape(-1)
    if values.numel() == 1:
        values = values.expand(num_classes)
    if values.numel() != num_classes:
        raise ValueError(f'{values.numel()} score thresholds for {num_classes} classes')
    return values


class PaddedDetections(NamedTuple):
    """Detections of a batch padded to the top-K slots, on the device of the network output.

    Slots ``[:count[b]]`` of sample b hold its detections by descending score; the rest are
    the suppressed or below-threshold candidates (ignore them).
    """

    boxes: torch.Tensor  # (B, k, 7) float32 x, y, z, length, width, height, yaw
    scores: torch.Tensor  # (B, k) float32 in (0, 1)
    labels: torch.Tensor  # (B, k) int64 index into ModelConfig.detection_classes
    count: torch.Tensor  # (B,) int64 detections per sample


def decode_padded(output, config: ModelConfig, score_thresholds: torch.Tensor,
                  max_detections: Union[int, torch.Tensor], nms: NMSConfig,
                  radius_m: Optional[torch.Tensor] = None) -> PaddedDetections:
    """Decode dense detection maps without host synchronisation (fixed output shapes).

    Same steps and results as ``decode_detections``; every size depends only on the config, so
    it can run inside a CUDA graph when its tensor arguments live on the maps' device.

    Args:
        output: anything with heatmap (B, n_cls, h, w) logits and offset, z, log_size, yaw maps.
        config: model config.
        score_thresholds: (n_cls,) float32 per-class thresholds on the maps' device.
        max_detections: cap per sample (an int, or a 0-d int64 tensor on the device).
        nms: NMS settings (``radius_m`` needs one radius per class unless kind is 'none').
        radius_m: optional (n_cls,) radii on the device, replacing ``nms.radius_m``.

    Returns:
        The padded detections and the count per sample.
    """
    heatmap = torch.sigmoid(output.heatmap.float())  # (B, n, h, w)
    batch, num_classes, rows, cols = heatmap.shape
    peaks = torch.where(F.max_pool2d(heatmap, 3, stride=1, padding=1) == heatmap, heatmap,
                        torch.zeros_like(heatmap))
    top_k = min(config.head.max_objects, num_classes * rows * cols)
    scores, flat_index = peaks.reshape(batch, -1).topk(top_k, dim=1)  # (B, k), descending
    labels = torch.div(flat_index, rows * cols, rounding_mode='floor')
    cell_index = torch.remainder(flat_index, rows * cols)

    def gather(maps: torch.Tensor) -> torch.Tensor:
        flat = maps.float().reshape(batch, maps.shape[1], rows * cols)  # (B, C, h*w)
        index = cell_index[:, None, :].expand(batch, maps.shape[1], top_k)
        return torch.gather(flat, 2, index).transpose(1, 2)  # (B, k, C)

    boxes = regression_to_boxes(cell_index, gather(output.offset), gather(output.z),
                                gather(output.log_size), gather(output.yaw), config)  # (B, k, 7)
    candidate = scores >= score_thresholds[labels]
    if nms.kind == 'none':
        keep = candidate
    else:
        keep = greedy_nms(candidate, _suppression_matrix(boxes, labels, nms, radius_m))
    keep = keep & (torch.cumsum(keep.to(torch.int64), 1) <= max_detections)
    # Kept candidates first, still by descending score (stable sort).
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # (B, k)
    return PaddedDetections(
        boxes=torch.gather(boxes, 1, order[:, :, None].expand_as(boxes)),
        scores=torch.gather(scores, 1, order), labels=torch.gather(labels, 1, order),
        count=keep.sum(1))


def score_threshold_tensor(score_thresholds: Union[None, float, Sequence[float]],
                           config: ModelConfig, device: Union[str, torch.device]
                           ) -> torch.Tensor:
    """Return the (n_cls,) float32 thresholds: one value, one per class, or None (config's)."""
    return _thresholds(score_thresholds, config, torch.device(device))


def decode_detections(output, config: ModelConfig,
                      score_thresholds: Union[None, float, Sequence[float]] = None,
                      max_detections: Optional[int] = None,
                      nms: Optional[NMSConfig] = None) -> List[Detections]:
    """Turn dense detection maps into boxes per sample.

    Local maxima of the sigmoid heatmap (3x3 max-pool) -> top ``config.head.max_objects`` ->
    per-class score thresholds -> boxes -> same-class NMS -> at most ``max_detections``.
    One host synchronisation (the counts); ``decode_padded`` has none.

    Args:
        output: anything with heatmap (B, n_cls, h, w) logits and offset, z, log_size, yaw maps
            (a NetworkOutput or DetectionMaps).
        config: model config.
        score_thresholds: one value, one per class, or None for ``config.head.score_threshold``.
        max_detections: cap per sample, or None for ``config.head.max_objects``.
        nms: NMS settings, or None for ``config.head.nms``.

    Returns:
        One Detections per sample, sorted by descending score.
    """
    nms = config.head.nms if nms is None else nms
    if nms.kind != 'none' and len(nms.radius_m) != config.num_detection_classes:
        raise ValueError('NMSConfig.radius_m needs one radius per detection class')
    thresholds = _thresholds(score_thresholds, config, output.heatmap.device)
    limit = config.head.max_objects if max_detections is None else max_detections
    padded = decode_padded(output, config, thresholds, limit, nms)
    counts = padded.count.tolist()
    return [Detections(boxes=padded.boxes[b, :n], scores=padded.scores[b, :n],
                       labels=padded.labels[b, :n]) for b, n in enumerate(counts)]
