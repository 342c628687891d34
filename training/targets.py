"""CenterPoint training targets: Gaussian class heatmaps and regression targets at box centres.

Uses the network's own box encoding (``bev_perception.model.decode.boxes_to_regression``), so
targets and decoding are exact inverses of each other.

Footprint regression (``TargetConfig.footprint_regression``): besides its centre cell, each
object may teach its box at every other head cell whose centre lies inside the box (in BEV),
each with that weight. The offset of such a cell points from the cell to the true centre (it
leaves [0, 1)), which the decoder reads as it reads any offset, so a heatmap peak that lands
beside the centre (towards the end of a lorry that the sensor sees, say) still gives the right
box. Long objects teach at many cells, people at none (a 0.96 m cell holds a person's centre
only). A cell inside two boxes teaches the one whose centre is nearer; no footprint entry is
made on any object's centre cell. 0 (the default) keeps CenterPoint's centre-only regression.

Ignore regions (``TargetConfig.min_points``): a labelled object with fewer LiDAR points inside
its box than that is neither a positive nor a negative. Its Gaussian window is marked in
``Targets.ignore`` and the heatmap loss skips those cells for every class: a fragment of a
person behind a parked car then teaches neither "any small blob is a person" nor "a person's
returns are background".
"""

import dataclasses
from typing import NamedTuple, Optional, Sequence, Union

from bev_perception.model.config import ModelConfig
from bev_perception.model.decode import boxes_to_regression
import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class TargetConfig:
    """Heatmap Gaussian settings (CenterPoint defaults)."""

    gaussian_min_overlap: float = 0.1
    gaussian_min_radius: int = 2  # head cells
    min_points: int = 0  # objects with fewer LiDAR points in their box are ignore regions
    # Weight of the regression at the other head cells inside each object's box (module
    # docstring); 0: the centre cell only. Its entries fill ``footprint_slots`` slots after the
    # ``head.max_objects`` centre slots (the nearest cells to their centres first).
    footprint_regression: float = 0.0
    footprint_slots: int = 1024

    def __post_init__(self) -> None:
        if not self.footprint_regression >= 0.0:
            raise ValueError('TargetConfig.footprint_regression must be >= 0, got '
                             f'{self.footprint_regression}')
        if self.footprint_slots < 1:
            raise ValueError('TargetConfig.footprint_slots must be >= 1, got '
                             f'{self.footprint_slots}')

    @property
    def extra_slots(self) -> int:
        """Return how many footprint slots follow the centre slots (0 without footprints)."""
        return self.footprint_slots if self.footprint_regression > 0 else 0


class Targets(NamedTuple):
    """Targets of one sample (shapes below) or a batch (a leading B on every field)."""

    heatmap: torch.Tensor  # (n_cls, h, w) float32 in [0, 1], 1 at object centre cells
    # Regression slots: M = head.max_objects centre slots, then TargetConfig.extra_slots
    # footprint slots (module docstring).
    cell_index: torch.Tensor  # (M,) int64 row * w + col where the slot's box is regressed
    offset: torch.Tensor  # (M, 2) float32 offset (x, y) in cells from that cell to the centre
    z: torch.Tensor  # (M, 1) float32 metres
    log_size: torch.Tensor  # (M, 3) float32 log metres
    yaw: torch.Tensor  # (M, 2) float32 sin, cos
    labels: torch.Tensor  # (M,) int64 detection class
    mask: torch.Tensor  # (M,) bool slot holds an object's centre
    # (M,) float32 regression weight: 1 at centres, footprint_regression in footprint slots,
    # 0 in empty slots
    weight: torch.Tensor
    ignore: torch.Tensor  # (h, w) bool cells the heatmap loss skips (see the module docstring)


def gaussian_radius(length_cells: torch.Tensor, width_cells: torch.Tensor,
                    min_overlap: float) -> torch.Tensor:
    """Return the CornerNet/CenterPoint Gaussian radius (cells) for box footprints (K,).

    The largest corner displacement keeping IoU >= min_overlap, minimum of the three cases.
    """
    height, width = length_cells, width_cells
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def draw_heatmap(centres: torch.Tensor, radii: torch.Tensor, labels: torch.Tensor,
                 num_classes: int, head_hw: Sequence[int]) -> torch.Tensor:
    """Draw one Gaussian per object, max-merged per class.

    Args:
        centres: (K, 2) int64 (col, row) centre cells.
        radii: (K,) int64 radius in cells; sigma = (2 r + 1) / 6, window |d| <= r.
        labels: (K,) int64 class of each object.
        num_classes: heatmap channels.
        head_hw: (h, w).

    Returns:
        (num_classes, h, w) float32.
    """
    rows, cols = head_hw
    heatmap = torch.zeros(num_classes, rows * cols)
    if centres.shape[0] == 0:
        return heatmap.view(num_classes, rows, cols)
    dx = torch.arange(cols)[None, None, :] - centres[:, 0, None, None]  # (K, 1, w)
    dy = torch.arange(rows)[None, :, None] - centres[:, 1, None, None]  # (K, h, 1)
    radius = radii[:, None, None]
    sigma = (2 * radius + 1).to(torch.float32) / 6
    gaussian = torch.exp(-(dx ** 2 + dy ** 2).to(torch.float32) / (2 * sigma ** 2))  # (K, h, w)
    window = (dx.abs() <= radius) & (dy.abs() <= radius)
    gaussian = torch.where(window & (gaussian >= torch.finfo(torch.float32).eps), gaussian,
                           torch.zeros_like(gaussian))
    flat = gaussian.reshape(centres.shape[0], rows * cols)  # (K, h*w)
    heatmap.scatter_reduce_(0, labels[:, None].expand_as(flat), flat, reduce='amax')
    return heatmap.view(num_classes, rows, cols)


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return (K,) int64: how many of the points (N, >= 3) lie inside each box (K, 7)."""
    counts = np.zeros(len(boxes), dtype=np.int64)
    for index, (x, y, z, length, width, height, yaw) in enumerate(boxes):
        dx, dy = points[:, 0] - x, points[:, 1] - y
        c, s = np.cos(yaw), np.sin(yaw)
        inside = ((np.abs(c * dx + s * dy) <= length / 2) & (np.abs(-s * dx + c * dy) <= width / 2)
                  & (np.abs(points[:, 2] - z) <= height / 2))
        counts[index] = int(np.count_nonzero(inside))
    return counts


def build_targets(boxes: ArrayLike, labels: ArrayLike, config: ModelConfig,
                  target_config: TargetConfig = TargetConfig(),
                  num_points: Optional[ArrayLike] = None) -> Targets:
    """Build the targets of one sample.

    Args:
        boxes: (K, 7) boxes in the model frame (x, y, z, length, width, height, yaw).
        labels: (K,) detection class ids; ids outside [0, n_cls) are ignored.
        config: model config (head grid, classes, ``head.max_objects``).
        target_config: Gaussian settings and ``min_points``.
        num_points: (K,) LiDAR points inside each box (``points_in_boxes``); needed when
            ``target_config.min_points`` is set, else unused.

    Returns:
        Targets on the CPU. Boxes whose centre is off the head grid, with non-finite values or
        non-positive sizes are skipped; all others are drawn in the heatmap, and the first
        ``max_objects`` of them (input order) get regression slots.
    """
    boxes = torch.as_tensor(np.asarray(boxes) if not torch.is_tensor(boxes) else boxes)
    boxes = boxes.detach().to('cpu', torch.float32).reshape(-1, 7)
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    labels = labels.detach().to('cpu', torch.int64).reshape(-1)
    if labels.shape[0] != boxes.shape[0]:
        raise ValueError(f'{boxes.shape[0]} boxes but {labels.shape[0]} labels')
    num_classes = config.num_detection_classes
    encoding = boxes_to_regression(boxes, config)
    usable = (encoding.inside & torch.isfinite(boxes).all(1) & (boxes[:, 3:6] > 0).all(1)
              & (labels >= 0) & (labels < num_classes))
    few = torch.zeros_like(usable)
    if target_config.min_points > 0:
        if num_points is None:
            raise ValueError('TargetConfig.min_points needs the points inside each box')
        few = torch.as_tensor(np.asarray(num_points)).reshape(-1) < target_config.min_points
    cols = config.head_hw[1]
    cell = config.head_cell_size_m

    def windows(chosen: torch.Tensor):
        centres = torch.stack([encoding.cell_index[chosen] % cols,
                               encoding.cell_index[chosen] // cols], 1)  # (K, 2) col, row
        radius = gaussian_radius(boxes[chosen, 3].double() / cell,
                                 boxes[chosen, 4].double() / cell,
                                 target_config.gaussian_min_overlap)
        return centres, torch.clamp(radius.floor().to(torch.int64),
                                    min=target_config.gaussian_min_radius)

    index = torch.nonzero(usable & ~few).squeeze(1)
    centres, radius = windows(index)
    heatmap = draw_heatmap(centres, radius, labels[index], num_classes, config.head_hw)
    ignored = torch.nonzero(usable & few).squeeze(1)
    ignored_centres, ignored_radius = windows(ignored)
    ignore = draw_heatmap(ignored_centres, ignored_radius, torch.zeros_like(ignored), 1,
                          config.head_hw)[0] > 0  # (h, w)

    slots = config.head.max_objects
    chosen = index[:slots]
    count = chosen.numel()
    cell_index = encoding.cell_index[chosen]
    offset = encoding.offset[chosen]
    owner = torch.arange(count)  # which chosen object each regression entry teaches
    weight = torch.ones(count)
    # Centre entries fill slots [0, count), footprint entries [slots, slots + E).
    place = torch.arange(count)
    if target_config.footprint_regression > 0 and count:
        extra = footprint_entries(boxes[chosen], cell_index, config,
                                  target_config.footprint_slots)
        cell_index = torch.cat([cell_index, extra.cell_index])
        offset = torch.cat([offset, offset[extra.owner] + extra.shift])
        owner = torch.cat([owner, extra.owner])
        weight = torch.cat([weight, torch.full((extra.owner.numel(),),
                                               target_config.footprint_regression)])
        place = torch.cat([place, slots + torch.arange(extra.owner.numel())])
    total = slots + target_config.extra_slots

    def padded(values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros((total,) + tuple(values.shape[1:]))
        out[place] = values
        return out

    return Targets(
        heatmap=heatmap, cell_index=padded(cell_index), offset=padded(offset),
        z=padded(encoding.z[chosen][owner]), log_size=padded(encoding.log_size[chosen][owner]),
        yaw=padded(encoding.yaw[chosen][owner]), labels=padded(labels[chosen][owner]),
        mask=padded(torch.arange(owner.numel()) < count), weight=padded(weight),
        ignore=ignore)


class FootprintEntries(NamedTuple):
    """Regression entries at the non-centre head cells inside the objects' boxes, E each."""

    cell_index: torch.Tensor  # (E,) int64 row * w + col
    owner: torch.Tensor  # (E,) int64 index of the object (into the boxes given)
    shift: torch.Tensor  # (E, 2) float32 (centre col - col, centre row - row), cells


def footprint_entries(boxes: torch.Tensor, centre_cells: torch.Tensor, config: ModelConfig,
                      limit: int) -> FootprintEntries:
    """Return the footprint regression entries of objects (module docstring).

    Args:
        boxes: (K, 7) the objects' boxes in the model frame.
        centre_cells: (K,) int64 row * w + col of each object's centre cell.
        config: model config (head grid).
        limit: keep at most this many entries, those nearest to their box centre first.
    """
    rows, cols = config.head_hw
    cell = config.head_cell_size_m
    boxes = boxes.double()
    # Every cell whose centre lies in a box is at most ``reach`` cells from the centre cell
    # in each axis (half the box diagonal, plus the centre's half-cell play in its cell).
    reach = int(np.ceil(float((0.5 * torch.hypot(boxes[:, 3], boxes[:, 4])).max()) / cell))
    step = torch.arange(-reach, reach + 1)
    d_row, d_col = (d.reshape(1, -1) for d in torch.meshgrid(step, step, indexing='ij'))
    row = torch.div(centre_cells, cols, rounding_mode='floor')[:, None] + d_row  # (K, S)
    col = torch.remainder(centre_cells, cols)[:, None] + d_col
    dx = config.grid.x_range_m[0] + (col + 0.5) * cell - boxes[:, :1]  # cell - box centre, m
    dy = config.grid.y_range_m[0] + (row + 0.5) * cell - boxes[:, 1:2]
    cos_yaw, sin_yaw = torch.cos(boxes[:, 6:7]), torch.sin(boxes[:, 6:7])
    along, across = cos_yaw * dx + sin_yaw * dy, -sin_yaw * dx + cos_yaw * dy
    keep = ((along.abs() <= boxes[:, 3:4] / 2) & (across.abs() <= boxes[:, 4:5] / 2)
            & ((d_row != 0) | (d_col != 0)) & (row >= 0) & (row < rows) & (col >= 0)
            & (col < cols))  # (K, S)
    owner = torch.nonzero(keep)[:, 0]  # object-major, then row-major: deterministic order
    cell_index = (row * cols + col)[keep]
    shift = torch.stack([-d_col.expand_as(keep)[keep], -d_row.expand_as(keep)[keep]], 1).float()
    distance = torch.hypot(dx, dy)[keep]
    # Per cell, the nearest centre teaches; centre cells teach their own object only.
    order = torch.argsort(distance, stable=True)
    first = np.unique(cell_index[order].numpy(), return_index=True)[1]
    best = order[torch.as_tensor(first)]
    best = best[~torch.isin(cell_index[best], centre_cells)]
    best = best[torch.argsort(distance[best], stable=True)][:limit]
    return FootprintEntries(cell_index=cell_index[best], owner=owner[best], shift=shift[best])


def collate_targets(samples: Sequence[Targets]) -> Targets:
    """Stack per-sample targets into a batch (leading B on every field)."""
    if not samples:
        raise ValueError('collate_targets needs at least one sample')
    return Targets(*(torch.stack(list(field), 0) for field in zip(*samples)))
