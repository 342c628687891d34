"""Pillar feature net: per-point features -> per-pillar max -> dense BEV canvas.

PointPillars-style decorations per point: x, y, z, scaled intensity, offsets to the mean of the
pillar's points (3) and offsets to the pillar centre in x and y (2). A shared Linear+BN+ReLU
lifts them to ``out_channels``; a max over the pillar's points (a scatter, so padding never enters
the statistics and the result does not depend on point order) gives the pillar feature, which is
written into a zero canvas (B, C, H, W).
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
        rows, cols = self.grid.canvas_hw
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
        num_pillars = pillars.coords.shape[0]
        index = pillars.point_pillar[:, None].expand_as(features)  # (M, C)
        pillar_features = features.new_zeros(num_pillars, self.out_channels).scatter_reduce(
            0, index, features, reduce='amax', include_self=True)  # (P, C); features >= 0
        sample, row, col = pillars.coords.unbind(1)
        flat_cell = (sample * rows + row) * cols + col  # (P,)
        canvas = pillar_features.new_zeros(pillars.batch_size * rows * cols, self.out_channels)
        canvas = canvas.index_copy(0, flat_cell, pillar_features)  # (B*H*W, C)
        canvas = canvas.view(pillars.batch_size, rows, cols, self.out_channels)  # (B, H, W, C)
        return canvas.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
