"""Small ResNet-style camera encoder giving C2, C3, C4, C5 (strides 4, 8, 16, 32) and its stem.

``CameraEncoderConfig.instance_norm_levels`` picks shallow layers where half of the first conv's
channels are instance-normalised (per image and channel, over H x W) before the BatchNorm, as
IBN-Net does: the style of an image (its contrast, colour cast, texture statistics) is taken
out early while the other half keeps what BatchNorm keeps. The normalisation has no
parameters, so a weights file loads with it switched on or off.

A stage may hold more than its one strided block (``blocks``): the blocks after the first keep
the stage's width and stride 1 and start as identities (the gain of their last BatchNorm is
zero, so each adds nothing to its shortcut at first), which lets an encoder grow from the
weights of a shallower one and compute the same until it trains.
"""

from typing import Dict, Sequence, Tuple

from bev_perception.model.bev_backbone import conv_bn_relu
from bev_perception.model.config import CAMERA_LEVELS, CameraEncoderConfig
import torch
from torch import nn
from torch.nn import functional


class HalfInstanceNorm(nn.Module):
    """Instance-normalise the first half of the channels of (B, C, H, W); keep the rest."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, C, H, W): channels [0, C // 2) zero-mean, unit-variance per image."""
        half = x.shape[1] // 2
        return torch.cat([functional.instance_norm(x[:, :half]), x[:, half:]], dim=1)


def _style_norm(enabled: bool) -> nn.Module:
    return HalfInstanceNorm() if enabled else nn.Identity()


#: Output levels and their strides relative to the input image.
LEVEL_STRIDES: Dict[str, int] = {level: 4 * 2 ** i for i, level in enumerate(CAMERA_LEVELS)}
#: Key of the stem's output (stride 2) among the encoder's features, beside the levels.
STEM = 'stem'


class BasicBlock(nn.Module):
    """Residual block: two 3x3 convs with BN, projection shortcut when the shape changes.

    Args:
        in_channels: input width.
        out_channels: output width.
        stride: stride of the first conv and of the shortcut.
        instance_norm: instance-normalise half of the first conv's output (see the module
            docstring).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 instance_norm: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = _style_norm(instance_norm)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to (B, C_in, H, W) -> (B, C_out, ceil(H/s), ceil(W/s))."""
        out = torch.relu(self.bn1(self.norm1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CameraEncoder(nn.Module):
    """Stem (stride 2) and four residual stages (strides 4, 8, 16, 32).

    Exposes ``out_channels`` and ``out_strides``: dicts keyed 'c2', 'c3', 'c4', 'c5', and
    ``stem_channels``, the width of the stem's output (``STEM`` in the features, stride 2).

    Args:
        config: widths of the stem and the four stages.
        blocks: residual blocks per stage (C2 .. C5), at least 1; the first of a stage is
            ``stages[i]``, the others ``extra_blocks[i]`` (absent when every stage has one, so
            the tensor names of one-block encoders stay as they were).
    """

    def __init__(self, *, config: CameraEncoderConfig,
                 blocks: Sequence[int] = (1,) * len(LEVEL_STRIDES)) -> None:
        super().__init__()
        if len(blocks) != len(LEVEL_STRIDES) or min(blocks) < 1:
            raise ValueError(f'blocks must be {len(LEVEL_STRIDES)} counts of at least 1, '
                             f'got {tuple(blocks)}')
        self.stem = conv_bn_relu(3, config.stem_channels, 3, stride=2)
        self.stem_norm = _style_norm('stem' in config.instance_norm_levels)
        widths: Tuple[int, ...] = (config.stem_channels,) + tuple(config.stage_channels)
        self.stages = nn.ModuleList(
            BasicBlock(widths[i], widths[i + 1], stride=2,
                       instance_norm=level in config.instance_norm_levels)
            for i, level in enumerate(LEVEL_STRIDES))
        self.extra_blocks = None
        if max(blocks) > 1:
            self.extra_blocks = nn.ModuleList(
                nn.Sequential(*(_identity_block(widths[i + 1]) for _ in range(count - 1)))
                for i, count in enumerate(blocks))
        self.out_channels: Dict[str, int] = dict(zip(LEVEL_STRIDES, widths[1:]))
        self.out_strides: Dict[str, int] = dict(LEVEL_STRIDES)
        self.stem_channels = config.stem_channels

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Encode normalised images (B, 3, H, W) into {'c2' .. 'c5'}: (B, C_l, H_l, W_l).

        The stem's output, (B, C_stem, H/2, W/2), is there as well under ``STEM``.
        """
        conv, batch_norm, relu = self.stem
        stem = relu(batch_norm(self.stem_norm(conv(images))))  # (B, C_stem, H/2, W/2)
        features: Dict[str, torch.Tensor] = {STEM: stem}
        x = stem
        for index, level in enumerate(LEVEL_STRIDES):  # strides 4, 8, 16, 32
            x = self.stages[index](x)  # (B, C_l, H_l, W_l)
            if self.extra_blocks is not None:
                x = self.extra_blocks[index](x)  # same shape
            features[level] = x
        return features


def _identity_block(channels: int) -> BasicBlock:
    """Return a stride-1 block that starts as the identity on ReLU outputs (its last BN gain 0)."""
    block = BasicBlock(channels, channels, stride=1)
    nn.init.zeros_(block.bn2.weight)
    return block
