"""Tiny BEV backbone: (B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s))."""

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Return Conv2d (no bias, 'same' padding for odd kernels) + BatchNorm2d + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                  padding=dilation * (kernel_size // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


class TinyBEVBackbone(nn.Module):
    """Stem 1x1, 3x3 blocks at full resolution, a strided 3x3 downsample, 3x3 blocks after it.

    The default (two full-resolution blocks, one after the downsample) spends most of its
    compute at full resolution; the CPU profile moves it after the downsample.

    Receptive field, in canvas cells: 1 + 2 per full-resolution block, + 2 for the downsample,
    + 2 * stride * dilation per block after it. With 0.48 m pillars, stride 2 and dilation 1
    the default sees 11 cells (5.3 m) and the heads' two 3x3 layers add 8 (9.1 m in all):
    less than a 12 m lorry, whose centre cell then cannot see both ends. ``context_dilation``
    dilates the last block (same weights and compute): 3 adds 8 cells (3.8 m).

    Args:
        in_channels: canvas channels (the pillar net's ``out_channels``).
        channels: width of the full-resolution blocks.
        out_channels: width after the downsample (exposed as ``out_channels``).
        stride: downsample factor (exposed as ``out_stride``).
        full_res_blocks: 3x3 blocks before the downsample.
        out_blocks: 3x3 blocks after the downsample (at least one).
        context_dilation: dilation of the last of them (1: a plain 3x3).
    """

    def __init__(self, *, in_channels: int, channels: int, out_channels: int,
                 stride: int, full_res_blocks: int = 2, out_blocks: int = 1,
                 context_dilation: int = 1) -> None:
        super().__init__()
        if full_res_blocks < 0 or out_blocks < 1 or context_dilation < 1:
            raise ValueError(f'need full_res_blocks >= 0, out_blocks >= 1 and '
                             f'context_dilation >= 1, got {full_res_blocks}, {out_blocks} and '
                             f'{context_dilation}')
        self.out_channels = out_channels
        self.out_stride = stride
        self.stem = conv_bn_relu(in_channels, channels, 1)
        self.blocks = nn.Sequential(
            *(conv_bn_relu(channels, channels, 3) for _ in range(full_res_blocks)))
        self.down = conv_bn_relu(channels, out_channels, 3, stride=stride)
        # One block keeps the module (and state-dict keys) of the original single out_block.
        blocks = [conv_bn_relu(out_channels, out_channels, 3, dilation=d)
                  for d in [1] * (out_blocks - 1) + [context_dilation]]
        self.out_block = blocks[0] if out_blocks == 1 else nn.Sequential(*blocks)

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        """Map the canvas (B, C_in, H, W) to BEV features (B, C_out, h, w)."""
        return self.out_block(self.down(self.blocks(self.stem(canvas))))
