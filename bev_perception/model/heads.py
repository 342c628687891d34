"""Task heads: CenterPoint detection on the fused BEV, FPN semantic segmentation on the camera.

The semantic head merges consecutive camera levels (C2/C3 .. C5) into one map at the finest
level's stride and predicts logits there. With ``detail_channels``
(``HeadConfig.semantic_stem_detail``) it predicts at half that stride: its logits (B, n, h, w),
upsampled to the stem's (B, n, 2h, 2w), get a per-pixel correction from the encoder's stem
features (a 1x1 conv-ReLU-1x1 conv: colours and edges at stride 2, where lane markings, poles
and kerbs are still a few pixels wide), as FCN's skip layers refine coarse scores with finer
ones. The correction's last layer starts at zero, so until it trains the head gives its
coarse logits, upsampled. Only 1x1 layers run at stride 2: about 0.06
GMAC at 128 x 208 for a 32-channel stem, where one 3x3 conv over the merged map would cost 1.
"""

from typing import Dict, NamedTuple, Optional, Tuple

from bev_perception.model.bev_backbone import conv_bn_relu
from bev_perception.model.camera_encoder import STEM
import torch
from torch import nn
import torch.nn.functional as F

#: Regression maps of the detection head and their channels.
REGRESSION_CHANNELS: Dict[str, int] = {'offset': 2, 'z': 1, 'log_size': 3, 'yaw': 2}


class DetectionMaps(NamedTuple):
    """Dense detection head outputs on the head grid (B, ·, h, w)."""

    heatmap: torch.Tensor  # (B, n_cls, h, w) logits
    offset: torch.Tensor  # (B, 2, h, w) centre offset in cells from the cell corner (x, y)
    z: torch.Tensor  # (B, 1, h, w) centre z in metres
    log_size: torch.Tensor  # (B, 3, h, w) log of length, width, height in metres
    yaw: torch.Tensor  # (B, 2, h, w) sin(yaw), cos(yaw)


class CenterPointHead(nn.Module):
    """Shared 3x3 conv, then one light tower (1x1 conv-BN-ReLU, 1x1 predictor) per target.

    Args:
        in_channels: fused BEV width.
        shared_channels: width of the shared 3x3 conv.
        tower_channels: hidden width of each tower.
        num_classes: heatmap channels.
        heatmap_bias_init: initial bias of the heatmap predictor (logit).
    """

    def __init__(self, *, in_channels: int, shared_channels: int, tower_channels: int,
                 num_classes: int, heatmap_bias_init: float) -> None:
        super().__init__()
        self.shared = conv_bn_relu(in_channels, shared_channels, 3)
        outputs = {'heatmap': num_classes, **REGRESSION_CHANNELS}
        self.towers = nn.ModuleDict({
            name: nn.Sequential(conv_bn_relu(shared_channels, tower_channels, 1),
                                nn.Conv2d(tower_channels, channels, 1))
            for name, channels in outputs.items()})
        nn.init.constant_(self.towers['heatmap'][-1].bias, heatmap_bias_init)

    def forward(self, bev: torch.Tensor) -> DetectionMaps:
        """Predict the detection maps from fused BEV features (B, C, h, w)."""
        shared = self.shared(bev)
        return DetectionMaps(**{name: tower(shared) for name, tower in self.towers.items()})


class SemanticFPNHead(nn.Module):
    """Per-level conv + x2 upsampling to the finest level, summed, 1x1 predictor, upsampled.

    With ``detail_channels``, the logits are corrected at stride 2 from the stem's features
    before the final upsampling (module docstring).

    Args:
        in_channels: width of each level it merges (e.g. 'c3', 'c4', 'c5').
        in_strides: stride of each level; the finest is the common stride.
        channels: FPN width.
        num_classes: semantic classes (logit channels).
        detail_channels: width of the encoder's stem features (``STEM``) to predict at stride
            2 with (module docstring); 0: predict at the finest level's stride.
    """

    def __init__(self, *, in_channels: Dict[str, int], in_strides: Dict[str, int],
                 channels: int, num_classes: int, detail_channels: int = 0) -> None:
        super().__init__()
        self.levels: Tuple[str, ...] = tuple(sorted(in_strides, key=in_strides.get))
        finest = in_strides[self.levels[0]]
        self.level_convs = nn.ModuleDict()
        for index, level in enumerate(self.levels):
            if in_strides[level] != finest * 2 ** index:
                raise ValueError(f'levels must double their stride, got {in_strides}')
            # Level i: max(1, i) convs, each followed by x2 upsampling when i > 0.
            convs = [conv_bn_relu(in_channels[level], channels, 3)]
            convs += [conv_bn_relu(channels, channels, 3) for _ in range(index - 1)]
            self.level_convs[level] = nn.ModuleList(convs)
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        self.detail: Optional[nn.Module] = None
        if detail_channels:
            self.detail = nn.Sequential(
                nn.Conv2d(detail_channels, detail_channels, 1), nn.ReLU(inplace=True),
                nn.Conv2d(detail_channels, num_classes, 1))
            nn.init.zeros_(self.detail[-1].weight)
            nn.init.zeros_(self.detail[-1].bias)

    def forward(self, features: Dict[str, torch.Tensor],
                output_hw: Optional[Tuple[int, int]]) -> torch.Tensor:
        """Return logits (B, num_classes, *output_hw) from the camera features (its levels).

        ``output_hw`` None: the logits before the final bilinear upsampling, at the head's
        stride: the finest level's, or the stem's with ``detail_channels`` (for
        ``semantic_ids.upsampled_argmax_ids``).
        """
        sizes = [tuple(features[level].shape[-2:]) for level in self.levels]  # fine to coarse
        total = None
        for index, level in enumerate(self.levels):
            x = features[level]
            for step, conv in enumerate(self.level_convs[level]):
                x = conv(x)
                if index > 0:  # to the size of the next finer level, exact for odd sizes
                    x = F.interpolate(x, size=sizes[index - step - 1], mode='bilinear',
                                      align_corners=False)
            total = x if total is None else total + x
        logits = self.predictor(total)  # (B, n_sem, h, w) at the finest level
        if self.detail is not None:  # to the stem's stride 2, corrected by its features
            stem = features[STEM]  # (B, C_stem, 2h, 2w)
            logits = self.detail(stem).add_(F.interpolate(
                logits, size=tuple(stem.shape[-2:]), mode='bilinear',
                align_corners=False))  # (B, n_sem, 2h, 2w)
        if output_hw is None:
            return logits
        return F.interpolate(logits, size=tuple(output_hw), mode='bilinear', align_corners=False)
