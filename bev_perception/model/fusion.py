"""FuTr-style fusion: BEV tokens attend to camera tokens with multi-head cross-attention.

Queries are the backbone's BEV cells plus a sinusoidal encoding of their metric (x, y) centre;
keys and values are camera feature cells (projected to the BEV width) plus a sinusoidal encoding
of their normalised image position (u, v) and a learned level embedding. Pre-norm, residual
attention and FFN, each behind a learnable per-channel gate initialised small. Samples without a
valid image skip the block: their BEV features come out exactly as they went in.

Calibration-aware queries (``FusionConfig.geometry_heights_m`` non-empty): every sample brings
its camera's geometry (``camera_geometry.SIZE`` floats: model -> camera pose, intrinsics over
the image size, plumb-bob distortion). Each BEV cell centre is lifted to K heights and
projected into that camera (``camera_geometry.project``): uv (Bv, N, K, 2), depth (Bv, N, K),
inside (Bv, N, K). The query gains

    W_uv (mean over the heights that land in the image of sinusoid(uv))   (Bv, N, C)
    + W_s [inside_k, inside_k * log(depth_k)]_k                           (Bv, N, C)

The uv sinusoid is the camera tokens' own position code, so query-key products can peak where
a cell lands in *this* image, whatever the focal length, size or mounting. Cells with no height
inside the image (``seen`` False) keep their BEV features exactly (a select, not a product).
"""

import math
from typing import Dict, Optional, Tuple

from bev_perception.model import camera_geometry
from bev_perception.model.config import FusionConfig
import torch
from torch import nn
import torch.nn.functional as F


def sinusoidal_encoding_2d(coords: torch.Tensor, dim: int,
                           wavelengths: Tuple[float, float]) -> torch.Tensor:
    """Encode 2D positions with sines and cosines of geometrically spaced wavelengths.

    Args:
        coords: (N, 2) positions (same unit as ``wavelengths``).
        dim: output width; the first half encodes coords[:, 0], the second coords[:, 1]
            (sin block then cos block each); zero-padded when not a multiple of 4.
        wavelengths: (shortest, longest) wavelength.

    Returns:
        (N, dim) float32 encoding.
    """
    num_frequencies = max(dim // 4, 1)
    shortest, longest = wavelengths
    exponent = torch.arange(num_frequencies, dtype=torch.float64, device=coords.device)
    exponent = exponent / max(num_frequencies - 1, 1)
    angular = 2.0 * math.pi / (shortest * (longest / shortest) ** exponent)  # (K,)
    angles = coords.to(torch.float64)[:, :, None] * angular  # (N, 2, K)
    encoding = torch.cat([torch.sin(angles), torch.cos(angles)], 2)  # (N, 2, 2K)
    encoding = encoding.reshape(coords.shape[0], 4 * num_frequencies)[:, :dim]  # (N, <=dim)
    if encoding.shape[1] < dim:
        encoding = F.pad(encoding, (0, dim - encoding.shape[1]))
    return encoding.to(torch.float32)


def bev_cell_centres(head_hw: Tuple[int, int], origin_m: Tuple[float, float],
                     cell_size_m: float) -> torch.Tensor:
    """Return the metric (x, y) centres (h * w, 2) of the head grid cells in row-major order."""
    rows, cols = head_hw
    row = torch.arange(rows, dtype=torch.float64)
    col = torch.arange(cols, dtype=torch.float64)
    y = origin_m[1] + (row + 0.5) * cell_size_m
    x = origin_m[0] + (col + 0.5) * cell_size_m
    grid_y, grid_x = torch.meshgrid(y, x, indexing='ij')  # (h, w) each
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], 1)  # (h*w, 2)


class FuTrFusion(nn.Module):
    """Cross-attention from BEV cells to camera tokens.

    Args:
        bev_channels: BEV feature width C (queries, output).
        camera_channels: width of each camera level ('c3', 'c4', 'c5').
        config: levels used, heads, FFN ratio, gate init, encoding wavelengths.
        head_hw: (h, w) of the BEV features.
        origin_m: metric (x_min, y_min) of the BEV grid.
        cell_size_m: edge of one BEV cell in metres.
    """

    def __init__(self, *, bev_channels: int, camera_channels: Dict[str, int],
                 config: FusionConfig, head_hw: Tuple[int, int], origin_m: Tuple[float, float],
                 cell_size_m: float) -> None:
        super().__init__()
        if bev_channels % config.num_heads:
            raise ValueError(f'{bev_channels} channels not divisible by {config.num_heads} heads')
        self.levels = tuple(config.camera_levels)
        self.num_heads = config.num_heads
        self.head_hw = head_hw
        self.camera_wavelengths = config.camera_wavelengths
        self.out_channels = bev_channels
        width = bev_channels
        self.camera_projections = nn.ModuleDict(
            {level: nn.Conv2d(camera_channels[level], width, 1) for level in self.levels})
        self.level_embedding = nn.Parameter(torch.randn(len(self.levels), width) * 0.02)
        self.norm_query = nn.LayerNorm(width)
        self.norm_camera = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.attention_out = nn.Linear(width, width)
        self.norm_ffn = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, config.ffn_ratio * width), nn.GELU(),
            nn.Linear(config.ffn_ratio * width, width))
        self.gate_attention = nn.Parameter(torch.full((width,), config.gate_init))
        self.gate_ffn = nn.Parameter(torch.full((width,), config.gate_init))
        centres = bev_cell_centres(head_hw, origin_m, cell_size_m)
        self.register_buffer(
            'bev_encoding', sinusoidal_encoding_2d(centres, width, config.bev_wavelengths_m),
            persistent=False)  # (h*w, C)
        self.uses_calibration = config.uses_calibration
        if self.uses_calibration:
            heights = torch.tensor(config.geometry_heights_m, dtype=torch.float64)
            count = len(heights)
            lifted = torch.cat([centres[:, None, :].expand(-1, count, 2),
                                heights[None, :, None].expand(len(centres), count, 1)], 2)
            self.register_buffer('cell_points', lifted.to(torch.float32),
                                 persistent=False)  # (h*w, K, 3)
            self.geometry_uv = nn.Linear(width, width)
            self.geometry_scalars = nn.Linear(2 * count, width)

    def camera_tokens(self, camera_features: Dict[str, torch.Tensor]
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return the normalised camera tokens with and without positions, each (Bv, T, C)."""
        key_inputs = []
        value_inputs = []
        for index, level in enumerate(self.levels):
            feature = self.camera_projections[level](camera_features[level])  # (Bv, C, hl, wl)
            batch, width, rows, cols = feature.shape
            tokens = self.norm_camera(feature.flatten(2).transpose(1, 2))  # (Bv, hl*wl, C)
            v = (torch.arange(rows, device=feature.device, dtype=torch.float32) + 0.5) / rows
            u = (torch.arange(cols, device=feature.device, dtype=torch.float32) + 0.5) / cols
            grid_v, grid_u = torch.meshgrid(v, u, indexing='ij')  # (hl, wl) each
            uv = torch.stack([grid_u.reshape(-1), grid_v.reshape(-1)], 1)  # (hl*wl, 2)
            position = sinusoidal_encoding_2d(uv, width, self.camera_wavelengths)
            position = position.to(tokens.dtype) + self.level_embedding[index].to(tokens.dtype)
            key_inputs.append(tokens + position)
            value_inputs.append(tokens)
        return torch.cat(key_inputs, 1), torch.cat(value_inputs, 1)  # (Bv, T, C) each

    def cell_geometry(self, geometry: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return each cell's query term (Bv, N, C) and ``seen`` (Bv, N) for (Bv, SIZE) cameras."""
        uv, depth, inside = camera_geometry.project(self.cell_points, geometry)
        batch, cells, count = inside.shape
        width = self.out_channels
        inside_f = inside.to(torch.float32)  # (Bv, N, K)
        code = sinusoidal_encoding_2d(uv.reshape(-1, 2), width, self.camera_wavelengths)
        code = code.view(batch, cells, count, width) * inside_f[..., None]  # (Bv, N, K, C)
        code = code.sum(2) / inside_f.sum(2, keepdim=True).clamp(min=1.0)  # (Bv, N, C)
        log_depth = torch.log(depth.clamp(min=camera_geometry.NEAR_M)) * inside_f
        scalars = torch.cat([inside_f, log_depth], 2)  # (Bv, N, 2K)
        term = self.geometry_uv(code) + self.geometry_scalars(scalars)
        return term, inside.any(2)

    def forward(self, bev: torch.Tensor, camera_features: Dict[str, torch.Tensor],
                camera_valid: Optional[torch.Tensor],
                geometry: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fuse camera information into the BEV features.

        Args:
            bev: (B, C, h, w) BEV features.
            camera_features: level -> (Bv, C_l, h_l, w_l) features of the Bv samples whose
                ``camera_valid`` is True, in batch order.
            camera_valid: (B,) bool, or None when every sample has an image (no host
                synchronisation then).
            geometry: (Bv, camera_geometry.SIZE) calibration of those Bv cameras; required
                when the block is calibration-aware, ignored otherwise.

        Returns:
            (B, C, h, w); rows where ``camera_valid`` is False equal ``bev`` exactly, and so
            do the cells a calibration-aware block finds outside the camera's view.
        """
        batch, channels, rows, cols = bev.shape
        if (rows, cols) != tuple(self.head_hw):
            raise ValueError(f'BEV features are {rows}x{cols}, fusion expects {self.head_hw}')
        if camera_valid is None:
            valid_index = None
            num_valid = batch
        else:
            valid_index = torch.nonzero(camera_valid).squeeze(1)  # (Bv,)
            num_valid = valid_index.numel()
        if num_valid == 0:
            return bev
        for level in self.levels:
            if camera_features[level].shape[0] != num_valid:
                raise ValueError(f'camera level {level} has {camera_features[level].shape[0]} '
                                 f'samples for {num_valid} valid cameras')
        heads = self.num_heads
        head_dim = channels // heads
        selected = bev if num_valid == batch else bev.index_select(0, valid_index)
        queries = selected.flatten(2).transpose(1, 2)  # (Bv, N, C)
        key_input, value_input = self.camera_tokens(camera_features)  # (Bv, T, C) each
        position = self.bev_encoding.to(queries.dtype)  # (N, C)
        seen = None
        if self.uses_calibration:
            if geometry is None or tuple(geometry.shape) != (num_valid, camera_geometry.SIZE):
                raise ValueError(
                    f'calibration-aware fusion needs ({num_valid}, {camera_geometry.SIZE}) '
                    f'camera geometry, got {None if geometry is None else tuple(geometry.shape)}')
            term, seen = self.cell_geometry(geometry.to(torch.float32))
            position = position + term.to(queries.dtype)  # (Bv, N, C)
            seen = seen[..., None]  # (Bv, N, 1) bool
        q = self.query(self.norm_query(queries) + position)
        k = self.key(key_input)
        v = self.value(value_input)
        q = q.view(num_valid, -1, heads, head_dim).transpose(1, 2)  # (Bv, nh, N, hd)
        k = k.view(num_valid, -1, heads, head_dim).transpose(1, 2)  # (Bv, nh, T, hd)
        v = v.view(num_valid, -1, heads, head_dim).transpose(1, 2)  # (Bv, nh, T, hd)
        attended = F.scaled_dot_product_attention(q, k, v)  # (Bv, nh, N, hd)
        attended = attended.transpose(1, 2).reshape(num_valid, rows * cols, channels)  # (Bv, N, C)
        tokens = queries + self.gate_attention * self.attention_out(attended)
        tokens = tokens + self.gate_ffn * self.ffn(self.norm_ffn(tokens))
        if seen is not None:
            tokens = torch.where(seen, tokens, queries)
        fused = tokens.transpose(1, 2).reshape(num_valid, channels, rows, cols)  # (Bv, C, h, w)
        if num_valid == batch:
            return fused
        return bev.index_copy(0, valid_index, fused.to(bev.dtype))
