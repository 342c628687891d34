"""Pillar feature net: per-point features -> per-pillar max -> dense BEV canvas.

PointPillars-style decorations per point: x, y, z, scaled intensity, offsets to the mean of the
pillar's points (3) and offsets to the pillar centre in x and y (2). A shared Linear+BN+ReLU
lifts them to ``out_channels``; a max over the pillar's points (a scatter, so padding never enters
the statistics and the result does not depend on point order) gives the pillar feature, which is
written into a zero canvas (B, C, H, W).

In eval mode the normalisation is a fixed per-channel affine map, so ReLU(BN(.)) is monotone in
each channel: non-decreasing where the BN weight is >= 0, non-increasing where it is < 0. The
max over a pillar's points of ReLU(BN(z)) is then ReLU(BN(max z)), or ReLU(BN(min z)) for the
decreasing channels, and floating-point rounding is monotone too, so pooling the linear outputs
first (the max of sign * z) and normalising only the pooled values gives bit-identical features
at a fraction of the cost (BN and ReLU run over pillars instead of points).
"""

from bev_perception.model.config import GridConfig, PointConfig
from bev_perception.model.voxelizer import Pillars
import torch
from torch import nn
import torch.nn.functional as F

#: Decorations added to the raw point features: mean offsets (3) and centre offsets (2).
NUM_DECORATIONS = 5


class PillarFeatureNet(nn.Module):
    """Encode pillars into a BEV canvas.

    Args:
        grid: pillar grid (canvas size, cell geometry).
        point: input point features and intensity scale.
        out_channels: feature width of the canvas.
    """

    def __init__(self, *, grid: GridConfig, point: PointConfig, out_channels: int) -> None:
        super().__init__()
        self.grid = grid
        self.intensity_scale = point.intensity_scale
        self.in_channels = len(point.features) + NUM_DECORATIONS
        self.out_channels = out_channels
        self.linear = nn.Linear(self.in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01)

    def point_features(self, pillars: Pillars) -> torch.Tensor:
        """Return the decorated point features (M, in_channels)."""
        grid = self.grid
        points = pillars.points
        xyz = points[:, :3]  # (M, 3)
        extra = points[:, 3:] * self.intensity_scale  # (M, 1)
        # Points are grouped by pillar: segment sums from a float64 prefix sum are exact enough
        # and, unlike atomic scatter-adds, identical run to run on every device.
        prefix = torch.cat([xyz.new_zeros(1, 3, dtype=torch.float64),
                            torch.cumsum(xyz.to(torch.float64), 0)])  # (M + 1, 3)
        ends = torch.cumsum(pillars.num_points, 0)  # (P,)
        sums = prefix[ends] - prefix[ends - pillars.num_points]  # (P, 3)
        means = (sums / pillars.num_points[:, None]).to(xyz.dtype)  # (P, 3)
        coords = pillars.coords[pillars.point_pillar]  # (M, 3) sample, row, col
        centre_x = grid.x_range_m[0] + (coords[:, 2].to(xyz.dtype) + 0.5) * grid.pillar_size_m
        centre_y = grid.y_range_m[0] + (coords[:, 1].to(xyz.dtype) + 0.5) * grid.pillar_size_m
        to_centre = torch.stack([xyz[:, 0] - centre_x, xyz[:, 1] - centre_y], 1)  # (M, 2)
        return torch.cat([xyz, extra, xyz - means[pillars.point_pillar], to_centre], 1)

    def forward(self, pillars: Pillars) -> torch.Tensor:
        """Return the BEV canvas (B, out_channels, H, W); empty cells are zero."""
        if self.training:
            pillar_features = self._pool_points(pillars)
        else:
            pillar_features = self._pool_linear_outputs(pillars)
        return self._scatter_to_canvas(pillars, pillar_features)

    def _pool_points(self, pillars: Pillars) -> torch.Tensor:
        """Return per-pillar features (P, C): max over points of ReLU(BN(linear(point)))."""
        features = self.linear(self.point_features(pillars))  # (M, C)
        if (self.training and features.shape[0] < 2
                and not isinstance(self.norm, nn.SyncBatchNorm)):
            # Batch statistics need two values; fall back to the running statistics (a
            # SyncBatchNorm gathers values over ranks and must take part in every step).
            features = F.batch_norm(
                features, self.norm.running_mean, self.norm.running_var, self.norm.weight,
                self.norm.bias, training=False, eps=self.norm.eps)
        else:
            features = self.norm(features)
        features = torch.relu(features)
        index = pillars.point_pillar[:, None].expand_as(features)  # (M, C)
        return features.new_zeros(pillars.coords.shape[0], self.out_channels).scatter_reduce(
            0, index, features, reduce='amax', include_self=True)  # (P, C); features >= 0

    def _pool_linear_outputs(self, pillars: Pillars) -> torch.Tensor:
        """Return ``_pool_points``'s features in eval mode, normalising pooled values only."""
        # Negating a weight row negates that channel's outputs exactly (same products and sums).
        sign = torch.where(self.norm.weight < 0, -1.0, 1.0).to(self.linear.weight.dtype)  # (C,)
        signed = F.linear(self.point_features(pillars), self.linear.weight * sign[:, None])
        index = pillars.point_pillar[:, None].expand_as(signed)  # (M, C)
        pooled = signed.new_empty(pillars.coords.shape[0], self.out_channels).scatter_reduce(
            0, index, signed, reduce='amax', include_self=False)  # (P, C); no pillar is empty
        pooled = self.norm(pooled * sign.to(pooled.dtype))  # max or min of each channel
        return torch.relu_(pooled)

    def _scatter_to_canvas(self, pillars: Pillars, pillar_features: torch.Tensor
                           ) -> torch.Tensor:
        """Write pillar features (P, C) into a zero canvas (B, C, H, W)."""
        rows, cols = self.grid.canvas_hw
        sample, row, col = pillars.coords.unbind(1)
        flat_cell = (sample * rows + row) * cols + col  # (P,)
        canvas = pillar_features.new_zeros(self.out_channels, pillars.batch_size * rows * cols)
        canvas.index_copy_(1, flat_cell, pillar_features.t())  # (C, B*H*W)
        canvas = canvas.view(self.out_channels, pillars.batch_size, rows, cols)  # (C, B, H, W)
        return canvas.permute(1, 0, 2, 3).contiguous()  # (B, C, H, W); no copy when B is 1
