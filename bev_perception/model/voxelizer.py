"""Points -> pillars: vectorised, deterministic, capped, with overflow counts.

All work is tensor operations on the points' device (no Python loop over points or pillars) and
uses only integer keys and IEEE float arithmetic, so CPU and CUDA produce the same pillars.

Which points survive the per-pillar cap, and which pillars survive the per-sample cap, is decided
by a hash of the point's values (of the cell index for pillars), not by the input order: the
result does not depend on the order of the points, and the subsample is spread evenly.
"""

import math
from typing import List, NamedTuple, Sequence, Tuple

from bev_perception.model.config import GridConfig
import torch
from torch import nn

_MASK32 = 0xFFFFFFFF
_MASK61 = (1 << 61) - 1
# Odd multipliers below 2**29: a 32-bit value times one stays below 2**61 (no int64 overflow).
_COLUMN_FACTORS = (0x1B873593, 0x0CC9E2D5, 0x19B873A3, 0x0E6546B3)
# No grid range may lie beyond this distance (metres), see _float32_bounds.
_FAR_BOUND_M = 1e30


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
    bits = points.contiguous().view(torch.int32)  # (N, F) signed, |bits| < 2**31; added as int64
    combined = torch.zeros(bits.shape[0], dtype=torch.int64, device=bits.device)
    for column, values in enumerate(bits.unbind(1)):  # over features, not points
        # combined + factor * bits: each product is below 2**60 in magnitude, so four of them
        # cannot overflow int64; masking before every fifth keeps that true for any F.
        if column % 4 == 0 and column:
            combined.bitwise_and_(_MASK61)
        combined.add_(values, alpha=_COLUMN_FACTORS[column % 4])
    # Fold the well-mixed high bits 29..60 (they depend on every input bit) onto the low 32; bits
    # 0..60 are those of the sum modulo 2**61, whatever its sign.
    return combined.bitwise_xor_(combined >> 29).bitwise_and_(_MASK32)


def _gather_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Return ``rows[index]`` for a contiguous float32 (N, F) tensor and int64 indices (M,).

    Rows of 4 floats are moved as single 16-byte (complex128) elements: the same bytes, copied
    about twice as fast as 4 separate floats.
    """
    num_features = rows.shape[1]
    if (num_features == 4 and rows.shape[0] > 0 and rows.is_contiguous()
            and rows.storage_offset() % 4 == 0):
        packed = rows.view(torch.complex128).view(-1)  # (N,) one element per row
        return packed.index_select(0, index).view(torch.float32).view(-1, num_features)
    return rows.index_select(0, index)


def _segment_counts(flags: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    """Return the number of true flags in each consecutive run of ``sizes`` (int64 (B,))."""
    if len(sizes) == 1:
        return torch.count_nonzero(flags).reshape(1)
    return torch.stack([torch.count_nonzero(part) for part in flags.split(sizes)])  # samples


def _per_sample_sums(values: torch.Tensor, sample: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Return the int64 sums (B,) of ``values`` grouped by ``sample`` (exact on every device)."""
    if batch_size == 1:
        return values.sum().reshape(1)
    return torch.zeros(batch_size, dtype=torch.int64, device=values.device).index_add_(
        0, sample, values)


def _rank_in_segments(segment_sizes: torch.Tensor, total: int) -> torch.Tensor:
    """Return each element's position inside its run, for ``total`` elements in runs (S,)."""
    starts = torch.cumsum(segment_sizes, 0) - segment_sizes
    segment = torch.repeat_interleave(
        torch.arange(segment_sizes.numel(), device=segment_sizes.device), segment_sizes,
        output_size=total)
    return torch.arange(total, device=segment_sizes.device) - starts[segment]


def _float32_bounds(range_m: Tuple[float, float]) -> Tuple[float, float]:
    """Return (low, the largest float32 below high) of a range, as float32 values.

    For a float32 v, ``v - low >= 0`` is then exactly ``v >= low`` and ``high_below - v >= 0``
    exactly ``v < high``: a float32 difference is rounded monotonically and is 0 only for equal
    values. The bounds are rounded to float32, as when a float32 tensor is compared with them.
    """
    low, high = torch.tensor(range_m, dtype=torch.float32)
    if low >= _FAR_BOUND_M or high <= -_FAR_BOUND_M:
        # Nearer bounds keep v - low and high_below - v above -inf for every finite v.
        raise ValueError(f'range {range_m} lies beyond +-{_FAR_BOUND_M:g} m')
    return float(low), float(torch.nextafter(high, high.new_tensor(-math.inf)))


class Voxelizer(nn.Module):
    """Group points into pillars on the BEV grid.

    A point is kept when all its values are finite and x_min <= x < x_max (same for y, z); its
    cell is floor((x - x_min) / pillar_size_m), clamped into the grid against rounding.

    Points are sorted by (cell, hash of the point's values) with one 64-bit sort; runs of equal
    cells are the pillars. The caps then keep a prefix of each pillar's run (the points with the
    smallest hashes) and, per sample, the pillars with the smallest cell hashes.

    Args:
        grid: pillar grid and caps.
        num_features: values per point (x, y, z, then the other features).
    """

    def __init__(self, *, grid: GridConfig, num_features: int = 4) -> None:
        super().__init__()
        self.grid = grid
        self.num_features = num_features
        self._bounds = [_float32_bounds(axis_range)
                        for axis_range in (grid.x_range_m, grid.y_range_m, grid.z_range_m)]

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
        sizes = [int(p.shape[0]) for p in points]
        if batch_size == 1:
            all_points = points[0].to(torch.float32).contiguous()  # (N, F)
        else:
            all_points = torch.cat([p.to(torch.float32) for p in points], 0)  # (N, F)

        rows, cols = grid.canvas_hw
        cells_per_sample = rows * cols

        # margin: the minimum over x, y, z of (v - low, high_below - v) and over the other features
        # f of (f - f). It is >= 0 exactly when the point is kept (NaN compares false), and NaN
        # or -inf exactly when a value is not finite (see _float32_bounds). This replaces separate
        # finite and range checks: float arithmetic costs less than comparisons producing bools.
        columns = all_points.unbind(1)  # F x (N,)
        margin = torch.rsub(columns[0], self._bounds[0][1])  # (N,)
        for axis, (low, high_below) in enumerate(self._bounds):
            if axis:
                torch.minimum(margin, torch.rsub(columns[axis], high_below), out=margin)
            torch.minimum(margin, columns[axis] - low, out=margin)
        for values in columns[3:]:  # over features, not points
            torch.minimum(margin, values - values, out=margin)  # 0, or NaN for inf and NaN
        in_range = margin >= 0  # (N,)
        kept = torch.nonzero(in_range).squeeze(1)  # (K,)
        num_kept_total = kept.numel()
        if batch_size == 1:
            num_kept = torch.full((1,), num_kept_total, dtype=torch.int64, device=device)
        else:
            num_kept = _segment_counts(in_range, sizes)
        num_finite = _segment_counts(margin > -math.inf, sizes)
        non_finite = torch.tensor(sizes, device=device) - num_finite
        out_of_range = num_finite - num_kept

        kept_points = _gather_rows(all_points, kept)  # (K, F)
        # (v - low) / size >= 0 for kept points, so truncating to an integer is the floor.
        (x_min, _), (y_min, _), _ = self._bounds
        col = (kept_points[:, 0] - x_min).div_(grid.pillar_size_m).to(torch.int32)
        row = (kept_points[:, 1] - y_min).div_(grid.pillar_size_m).to(torch.int32)
        cell = col.clamp_(max=cols - 1).add_(row.clamp_(max=rows - 1), alpha=cols)  # (K,) int32
        # Sort by (cell, hash of the point's values): independent of the input order.
        key = hash_rows(kept_points).add_(cell, alpha=1 << 32)  # (K,) int64 cell * 2**32 + hash
        if batch_size > 1:
            sample_of_point = torch.repeat_interleave(
                torch.arange(batch_size, device=device), num_kept, output_size=num_kept_total)
            key.add_(sample_of_point, alpha=cells_per_sample << 32)  # global cell
        sorted_key, order = torch.sort(key, stable=True)
        pillar_cell, pillar_of_point, pillar_sizes = torch.unique_consecutive(
            sorted_key >> 32, return_inverse=True, return_counts=True)  # (P,), (K,), (P,)
        num_pillars = pillar_cell.numel()
        coords = pillar_cell.new_zeros((num_pillars, 3))  # (P, 3) sample, row, col
        pillar_sample, pillar_row, pillar_col = coords.unbind(1)  # views, filled in place
        torch.floor_divide(pillar_cell, cols, out=pillar_row)  # sample * rows + row
        torch.add(pillar_cell, pillar_row, alpha=-cols, out=pillar_col)
        if batch_size == 1:
            pillars_per_sample = torch.full((1,), num_pillars, dtype=torch.int64, device=device)
        else:
            torch.floor_divide(pillar_row, rows, out=pillar_sample)
            pillar_row.add_(pillar_sample, alpha=-rows)
            pillars_per_sample = torch.bincount(pillar_sample, minlength=batch_size)  # (B,)
        num_points = torch.clamp(pillar_sizes, max=grid.max_points_per_pillar)  # (P,)

        # One host sync decides whether any cap applies (the same decision on every device).
        num_output_points, largest_sample = torch.stack(
            [num_points.sum(), pillars_per_sample.max()]).tolist()
        points_capped = _per_sample_sums(pillar_sizes - num_points, pillar_sample, batch_size)
        pillar_start = torch.cumsum(pillar_sizes, 0).sub_(pillar_sizes)  # (P,) in sorted order
        if largest_sample > grid.max_pillars:
            # Keep at most max_pillars per sample, chosen by a hash of the in-sample cell index.
            local_cell = pillar_cell % cells_per_sample
            pillar_order = torch.argsort((pillar_sample << 32) | mix32(local_cell), stable=True)
            pillar_rank = torch.empty_like(pillar_cell)
            pillar_rank[pillar_order] = _rank_in_segments(pillars_per_sample, num_pillars)
            keep_pillar = pillar_rank < grid.max_pillars
            pillars_capped = pillars_per_sample - _per_sample_sums(
                keep_pillar.to(torch.int64), pillar_sample, batch_size)
            kept_pillars = torch.nonzero(keep_pillar).squeeze(1)  # (P',)
            coords = coords.index_select(0, kept_pillars)
            pillar_start = pillar_start.index_select(0, kept_pillars)
            num_points = num_points.index_select(0, kept_pillars)
            num_output_points = int(num_points.sum())  # this path syncs again (rare)
        else:
            kept_pillars = None
            pillars_capped = torch.zeros(batch_size, dtype=torch.int64, device=device)
        if kept_pillars is not None or num_output_points < num_kept_total:
            # The kept points of a pillar are the first num_points of its run in sorted order.
            pillar_of_point = torch.repeat_interleave(
                num_points, output_size=num_output_points)  # (M,) 0, 0, 1, ...
            output_start = torch.cumsum(num_points, 0).sub_(num_points)
            source = pillar_start.sub_(output_start).index_select(0, pillar_of_point).add_(
                torch.arange(num_output_points, device=device))  # (M,) position in sorted order
            order = order.index_select(0, source)
        kept_points = _gather_rows(kept_points, order)  # (M, F)

        pillars = Pillars(
            points=kept_points, point_pillar=pillar_of_point, coords=coords,
            num_points=num_points, batch_size=batch_size)
        counts = VoxelizerCounts(
            non_finite_dropped=non_finite, out_of_range_dropped=out_of_range,
            points_capped=points_capped, pillars_capped=pillars_capped)
        return pillars, counts
