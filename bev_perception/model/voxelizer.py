"""Points -> pillars: vectorised, deterministic, capped, with overflow counts.

All work is tensor operations on the points' device (no Python loop over points or pillars) and
uses only integer keys and IEEE float arithmetic, so CPU and CUDA produce the same pillars.

Which points survive the per-pillar cap, and which pillars survive the per-sample cap, is decided
by a hash of the point's values (of the cell index for pillars), not by the input order: the
result does not depend on the order of the points, and the subsample is spread evenly.
"""

from typing import Dict, List, NamedTuple, Sequence, Tuple

from bev_perception.model.config import GridConfig
import torch
from torch import nn

_MASK32 = 0xFFFFFFFF


class VoxelizerCounts(NamedTuple):
    """Per-sample overflow counts, each an int64 tensor (B,)."""

    non_finite_dropped: torch.Tensor  # points with a NaN/inf value
    out_of_range_dropped: torch.Tensor  # finite points outside the grid's x, y, z range
    points_capped: torch.Tensor  # points beyond max_points_per_pillar in their pillar
    pillars_capped: torch.Tensor  # non-empty pillars beyond max_pillars (their points are lost)


class Pillars(NamedTuple):
    """Kept points grouped into pillars, sorted by (sample, row, col)."""

    points: torch.Tensor  # (M, F) float32 raw point features of the kept points
    point_pillar: torch.Tensor  # (M,) int64 pillar index of each point, non-decreasing
    coords: torch.Tensor  # (P, 3) int64 (sample, row, col) of each pillar
    num_points: torch.Tensor  # (P,) int64 kept points per pillar, >= 1
    batch_size: int


def _mul32(values: torch.Tensor, factor: int) -> torch.Tensor:
    """Return (values * factor) mod 2**32 for int64 values in [0, 2**32), without overflow."""
    low = values & 0xFFFF
    high = values >> 16
    return (low * factor + (((high * factor) & 0xFFFF) << 16)) & _MASK32


def mix32(values: torch.Tensor) -> torch.Tensor:
    """Return a well-mixed 32-bit hash (int64 in [0, 2**32)) of int64 values in [0, 2**32)."""
    values = values ^ (values >> 16)
    values = _mul32(values, 0x85EBCA6B)
    values = values ^ (values >> 13)
    values = _mul32(values, 0xC2B2AE35)
    return values ^ (values >> 16)


def hash_rows(points: torch.Tensor) -> torch.Tensor:
    """Return a 32-bit hash (int64 (N,)) of each row of a float32 (N, F) tensor's bit patterns."""
    canonical = (points + 0.0).contiguous()  # -0.0 -> 0.0
    bits = canonical.view(torch.int32).to(torch.int64) & _MASK32  # (N, F)
    result = torch.zeros_like(bits[:, 0])
    for column in range(bits.shape[1]):  # over features (4), not points
        result = mix32(result ^ bits[:, column])
    return result


def _rank_in_segments(segment_sizes: torch.Tensor, total: int) -> torch.Tensor:
    """Return each element's position inside its run, for ``total`` elements in runs (S,)."""
    starts = torch.cumsum(segment_sizes, 0) - segment_sizes
    segment = torch.repeat_interleave(
        torch.arange(segment_sizes.numel(), device=segment_sizes.device), segment_sizes,
        output_size=total)
    return torch.arange(total, device=segment_sizes.device) - starts[segment]


class Voxelizer(nn.Module):
    """Group points into pillars on the BEV grid.

    A point is kept when all its values are finite and x_min <= x < x_max (same for y, z); its
    cell is floor((x - x_min) / pillar_size_m), clamped into the grid against rounding.

    Args:
        grid: pillar grid and caps.
        num_features: values per point (x, y, z, then the other features).
    """

    def __init__(self, *, grid: GridConfig, num_features: int = 4) -> None:
        super().__init__()
        self.grid = grid
        self.num_features = num_features

    def forward(self, points: Sequence[torch.Tensor]) -> Tuple[Pillars, VoxelizerCounts]:
        """Voxelize a batch.

        Args:
            points: B tensors (N_i, F) float (x, y, z metres in the model frame, then intensity);
                N_i may be 0. All on one device.

        Returns:
            The pillars and the per-sample overflow counts.
        """
        grid = self.grid
        batch_size = len(points)
        if batch_size == 0:
            raise ValueError('Voxelizer needs at least one sample')
        device = points[0].device
        num_features = self.num_features
        for sample in points:
            if sample.dim() != 2 or sample.shape[1] != num_features:
                raise ValueError(f'points must be (N, {num_features}), got {tuple(sample.shape)}')
        sizes = torch.tensor([p.shape[0] for p in points], device=device)
        all_points = torch.cat([p.to(torch.float32) for p in points], 0)  # (N, F)
        sample_of_point = torch.repeat_interleave(
            torch.arange(batch_size, device=device), sizes, output_size=all_points.shape[0])

        rows, cols = grid.canvas_hw
        finite = torch.isfinite(all_points).all(dim=1)
        safe = torch.where(finite[:, None], all_points, torch.zeros_like(all_points))
        x, y, z = safe[:, 0], safe[:, 1], safe[:, 2]
        in_range = (finite & (x >= grid.x_range_m[0]) & (x < grid.x_range_m[1])
                    & (y >= grid.y_range_m[0]) & (y < grid.y_range_m[1])
                    & (z >= grid.z_range_m[0]) & (z < grid.z_range_m[1]))
        col = torch.floor((x - grid.x_range_m[0]) / grid.pillar_size_m).to(torch.int64)
        row = torch.floor((y - grid.y_range_m[0]) / grid.pillar_size_m).to(torch.int64)
        col = col.clamp_(0, cols - 1)
        row = row.clamp_(0, rows - 1)
        non_finite = torch.bincount(sample_of_point[~finite], minlength=batch_size)
        out_of_range = torch.bincount(sample_of_point[finite & ~in_range], minlength=batch_size)

        kept = torch.nonzero(in_range).squeeze(1)
        kept_points = all_points[kept]  # (K, F)
        kept_sample = sample_of_point[kept]
        cell = (kept_sample * rows + row[kept]) * cols + col[kept]  # (K,) global cell key
        # Sort by cell, then by a hash of the point's values: independent of the input order.
        order = torch.argsort((cell << 32) | hash_rows(kept_points), stable=True)
        cell = cell[order]
        kept_points = kept_points[order]
        kept_sample = kept_sample[order]

        pillar_cell, pillar_of_point, pillar_sizes = torch.unique_consecutive(
            cell, return_inverse=True, return_counts=True)
        point_rank = _rank_in_segments(pillar_sizes, cell.numel())  # (K,) rank in its pillar
        under_point_cap = point_rank < grid.max_points_per_pillar
        points_capped = torch.bincount(kept_sample[~under_point_cap], minlength=batch_size)

        # Keep at most max_pillars per sample, chosen by a hash of the in-sample cell index.
        pillar_sample = pillar_cell // (rows * cols)
        local_cell = pillar_cell % (rows * cols)
        pillar_order = torch.argsort((pillar_sample << 32) | mix32(local_cell), stable=True)
        pillars_per_sample = torch.bincount(pillar_sample, minlength=batch_size)
        pillar_rank = torch.empty_like(pillar_cell)
        pillar_rank[pillar_order] = _rank_in_segments(pillars_per_sample, pillar_cell.numel())
        keep_pillar = pillar_rank < grid.max_pillars
        pillars_capped = torch.bincount(pillar_sample[~keep_pillar], minlength=batch_size)

        keep_point = under_point_cap & keep_pillar[pillar_of_point]
        new_pillar_index = torch.cumsum(keep_pillar.to(torch.int64), 0) - 1
        point_pillar = new_pillar_index[pillar_of_point[keep_point]]
        kept_cells = pillar_cell[keep_pillar]
        coords = torch.stack(
            [kept_cells // (rows * cols), (kept_cells // cols) % rows, kept_cells % cols], 1)
        num_points = torch.clamp(pillar_sizes[keep_pillar], max=grid.max_points_per_pillar)
        pillars = Pillars(
            points=kept_points[keep_point], point_pillar=point_pillar, coords=coords,
            num_points=num_points, batch_size=batch_size)
        counts = VoxelizerCounts(
            non_finite_dropped=non_finite, out_of_range_dropped=out_of_range,
            points_capped=points_capped, pillars_capped=pillars_capped)
        return pillars, counts


def split_counts(counts: VoxelizerCounts) -> List[Dict[str, int]]:
    """Return one {field: int} dict per sample (host sync)."""
    columns = {name: value.tolist() for name, value in counts._asdict().items()}
    batch_size = len(counts.non_finite_dropped)
    return [{name: values[i] for name, values in columns.items()} for i in range(batch_size)]
