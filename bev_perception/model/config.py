"""Typed, frozen configuration of the BEV fusion network.

Every structural number of the model is written once here; modules are built from these values
and from the output shapes of the modules before them. ``ModelConfig.to_dict()`` is JSON-safe and
``ModelConfig.from_dict()`` restores it exactly (tuples stay tuples), so a config travels inside
the deployable weights file.

BEV grid convention (used by the voxelizer, the targets, the decoder and the fusion encoding):

* The LiDAR canvas is a tensor (B, C, H, W). Row ``r`` runs along the model-frame y axis and
  column ``c`` along the x axis: cell (r, c) covers
  ``x in [x_min + c * s, x_min + (c + 1) * s)`` and ``y in [y_min + r * s, y_min + (r + 1) * s)``
  with ``s = pillar_size_m``. Row 0 is the rightmost strip (most negative y), column 0 the
  nearest strip (smallest x). Default: H = 248 rows, W = 216 columns.
* The detection head works on the backbone output, ``backbone_stride`` times coarser:
  ``head_hw = (ceil(H / stride), ceil(W / stride))`` with square cells of
  ``head_cell_size_m = s * stride`` and the same origin (x_min, y_min).
"""

import dataclasses
import math
from typing import Any, Dict, Tuple

from bev_perception.a2d2_classes import SEMANTIC_CATEGORIES, SEMANTIC_PALETTE
from bev_perception.typed_config import build_dataclass, to_plain

#: Camera input height and width must be multiples of the encoder's deepest stride.
CAMERA_STRIDE_MULTIPLE = 32
#: Camera encoder levels, finest first (strides 4, 8, 16, 32).
CAMERA_LEVELS: Tuple[str, ...] = ('c2', 'c3', 'c4', 'c5')
#: Camera encoder layers that can instance-normalise (the shallow ones, where style lives).
INSTANCE_NORM_LEVELS: Tuple[str, ...] = ('stem', 'c2', 'c3')


def _cells(range_m: Tuple[float, float], size_m: float, name: str) -> int:
    """Return the number of cells of size ``size_m`` covering ``range_m`` (must divide evenly)."""
    extent = (range_m[1] - range_m[0]) / size_m
    cells = int(round(extent))
    if cells < 1 or abs(extent - cells) > 1e-6 * max(1.0, extent):
        raise ValueError(f'{name} {range_m} is not a whole number of {size_m} m cells')
    return cells


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """Point range and pillar grid (metres, model frame); see the module docstring."""

    x_range_m: Tuple[float, float] = (0.0, 69.12)
    y_range_m: Tuple[float, float] = (-39.68, 39.68)
    z_range_m: Tuple[float, float] = (-3.0, 2.0)
    pillar_size_m: float = 0.32
    max_points_per_pillar: int = 32
    max_pillars: int = 30000  # per sample; pillars cost little (no per-pillar padding)

    def __post_init__(self) -> None:
        for name in ('x_range_m', 'y_range_m', 'z_range_m'):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f'GridConfig.{name} must be (low, high) with low < high')
        if self.pillar_size_m <= 0:
            raise ValueError('GridConfig.pillar_size_m must be positive')
        if self.max_points_per_pillar < 1 or self.max_pillars < 1:
            raise ValueError('GridConfig caps must be at least 1')
        _cells(self.x_range_m, self.pillar_size_m, 'x_range_m')
        _cells(self.y_range_m, self.pillar_size_m, 'y_range_m')

    @property
    def num_rows(self) -> int:
        """Return H, the number of cells along y."""
        return _cells(self.y_range_m, self.pillar_size_m, 'y_range_m')

    @property
    def num_cols(self) -> int:
        """Return W, the number of cells along x."""
        return _cells(self.x_range_m, self.pillar_size_m, 'x_range_m')

    @property
    def canvas_hw(self) -> Tuple[int, int]:
        """Return (H, W) of the LiDAR BEV canvas."""
        return (self.num_rows, self.num_cols)

    def contains_xy(self, xyz: Any) -> Any:
        """Return a (K,) bool mask: rows of (K, >=2) x, y (metres) inside the grid's BEV area."""
        x, y = xyz[:, 0], xyz[:, 1]
        (x_min, x_max), (y_min, y_max) = self.x_range_m, self.y_range_m
        return (x >= x_min) & (x < x_max) & (y >= y_min) & (y < y_max)


@dataclasses.dataclass(frozen=True)
class PointConfig:
    """Per-point input features; raw A2D2 reflectance times ``intensity_scale`` enters the net."""

    features: Tuple[str, ...] = ('x', 'y', 'z', 'intensity')
    intensity_scale: float = 1.0 / 255.0

    def __post_init__(self) -> None:
        if tuple(self.features[:3]) != ('x', 'y', 'z') or len(self.features) != 4:
            raise ValueError("PointConfig.features must be ('x', 'y', 'z', <intensity name>)")


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """Camera input: network image size (height, width) and RGB normalisation (0..1 scale)."""

    input_hw: Tuple[int, int] = (256, 416)
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if any(v <= 0 or v % CAMERA_STRIDE_MULTIPLE for v in self.input_hw):
            raise ValueError(
                f'CameraConfig.input_hw {self.input_hw} must be positive multiples of '
                f'{CAMERA_STRIDE_MULTIPLE}')
        if any(s <= 0 for s in self.std):
            raise ValueError('CameraConfig.std must be positive')


@dataclasses.dataclass(frozen=True)
class LidarEncoderConfig:
    """Widths of the pillar feature net and the tiny BEV backbone."""

    pfn_channels: int = 64  # PFN output = BEV canvas channels
    backbone_channels: int = 64  # full-resolution blocks
    backbone_out_channels: int = 128  # after the downsample
    backbone_stride: int = 2  # downsample factor, BEV canvas -> head grid
    full_res_blocks: int = 2  # 3x3 blocks on the canvas, before the downsample
    out_blocks: int = 1  # 3x3 blocks on the head grid, after the downsample
    context_dilation: int = 1  # dilation of the last of them: receptive field for long objects


@dataclasses.dataclass(frozen=True)
class CameraEncoderConfig:
    """Widths of the ResNet-style camera encoder (stem at stride 2, stages at 4, 8, 16, 32)."""

    stem_channels: int = 32
    stage_channels: Tuple[int, int, int, int] = (48, 64, 128, 192)  # C2, C3, C4, C5
    # Shallow layers ('stem', 'c2', 'c3') whose first conv output has half its channels
    # instance-normalised before the BatchNorm (IBN-Net, Pan et al. 2018): each image's own
    # contrast, colour cast and texture statistics are removed there, which helps a network
    # trained on rendered images on real ones. No parameters: the weights' tensors are the same.
    instance_norm_levels: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.instance_norm_levels) - set(INSTANCE_NORM_LEVELS)
        if unknown:
            raise ValueError(f'CameraEncoderConfig.instance_norm_levels must be a subset of '
                             f'{INSTANCE_NORM_LEVELS}, got {tuple(self.instance_norm_levels)}')


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """FuTr cross-attention block: BEV queries attend to camera tokens."""

    camera_levels: Tuple[str, ...] = ('c5',)  # ('c4', 'c5') attends 5x more tokens
    num_heads: int = 4
    ffn_ratio: int = 2
    gate_init: float = 0.1  # initial value of the residual gates (LayerScale)
    bev_wavelengths_m: Tuple[float, float] = (1.0, 200.0)  # sinusoid range for metric x, y
    camera_wavelengths: Tuple[float, float] = (0.02, 4.0)  # for normalised u, v in [0, 1]
    # Calibration-aware queries: each BEV cell is projected into the sample's camera at these
    # model-frame heights (z, metres) and carries where it lands; cells that land nowhere in
    # the image get no image features. Empty: the calibration-blind block (weights before it).
    geometry_heights_m: Tuple[float, ...] = ()

    def __post_init__(self) -> None:
        fusable = CAMERA_LEVELS[1:]  # C2 would give attention 4x the tokens of C3
        if not self.camera_levels or any(level not in fusable for level in self.camera_levels):
            raise ValueError(f'FusionConfig.camera_levels must be a subset of {fusable}')
        if not all(math.isfinite(z) for z in self.geometry_heights_m):
            raise ValueError('FusionConfig.geometry_heights_m must be finite')

    @property
    def uses_calibration(self) -> bool:
        """Return True when the fusion needs each camera's calibration."""
        return bool(self.geometry_heights_m)


#: Same-class suppression kinds (see decode._suppression_matrix).
NMS_KINDS = ('distance', 'rotated', 'none')


@dataclasses.dataclass(frozen=True)
class NMSConfig:
    """Non-maximum suppression among same-class detections.

    ``kind``: 'distance' (BEV centre distance below the class radius), 'rotated' (rotated BEV
    IoU above ``iou_threshold``) or 'none'.
    """

    kind: str = 'distance'
    radius_m: Tuple[float, ...] = (2.0, 3.0, 0.5, 1.0)  # one per detection class
    iou_threshold: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in NMS_KINDS:
            raise ValueError(f'NMSConfig.kind {self.kind!r} not in {NMS_KINDS}')


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Detection and semantic heads, and decoding defaults."""

    shared_channels: int = 64  # shared 3x3 conv of the detection head
    tower_channels: int = 64  # hidden width of each per-target tower
    heatmap_bias_init: float = -2.19  # log(0.1 / 0.9): initial heatmap probability 0.1
    semantic_channels: int = 64  # FPN width of the semantic head
    # Camera levels the semantic FPN merges, consecutive: adding 'c2' (stride 4) predicts at
    # twice the resolution of 'c3' (lane markings, kerbs, poles, distant people).
    semantic_levels: Tuple[str, ...] = ('c3', 'c4', 'c5')
    # True: the semantic head reads a camera encoder of its own (the camera_encoder widths)
    # instead of the one the fusion reads, so that training it for the semantics cannot move
    # the fused detection; costs a second encoder pass per frame.
    semantic_encoder: bool = False
    # Residual blocks per stage (C2 .. C5) of that encoder: depth where the semantics need it
    # (context at the coarse levels) without touching the encoder the fusion reads. Blocks
    # beyond a stage's first start as identities (camera_encoder's module docstring).
    semantic_encoder_blocks: Tuple[int, int, int, int] = (1, 1, 1, 1)
    # True: the semantic head predicts at stride 2 instead of 4: its logits, upsampled, get a
    # per-pixel correction from the encoder stem's features (thin categories: lane markings,
    # poles, kerbs; heads.py's docstring). Needs 'c2' in semantic_levels.
    semantic_stem_detail: bool = False
    max_objects: int = 100  # decode top-K candidates and target capacity per frame
    score_threshold: float = 0.3  # default per-class score threshold
    nms: NMSConfig = dataclasses.field(default_factory=NMSConfig)

    def __post_init__(self) -> None:
        runs = {CAMERA_LEVELS[i:j] for i in range(len(CAMERA_LEVELS))
                for j in range(i + 1, len(CAMERA_LEVELS) + 1)}
        levels = tuple(self.semantic_levels)
        if levels not in runs:
            raise ValueError(f'HeadConfig.semantic_levels must be consecutive levels of '
                             f'{CAMERA_LEVELS}, finest first; got {levels}')
        blocks = tuple(self.semantic_encoder_blocks)
        if len(blocks) != len(CAMERA_LEVELS) or min(blocks) < 1:
            raise ValueError(f'HeadConfig.semantic_encoder_blocks must be {len(CAMERA_LEVELS)} '
                             f'counts of at least 1; got {blocks}')
        if max(blocks) > 1 and not self.semantic_encoder:
            raise ValueError('HeadConfig.semantic_encoder_blocks needs semantic_encoder: true')
        if self.semantic_stem_detail and levels[0] != CAMERA_LEVELS[0]:
            raise ValueError(f'HeadConfig.semantic_stem_detail needs semantic_levels to start at '
                             f'{CAMERA_LEVELS[0]!r} (stride 4); got {levels}')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Complete description of a BEVFusionNet; stored in the weights metadata."""

    grid: GridConfig = dataclasses.field(default_factory=GridConfig)
    point: PointConfig = dataclasses.field(default_factory=PointConfig)
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    lidar_encoder: LidarEncoderConfig = dataclasses.field(default_factory=LidarEncoderConfig)
    camera_encoder: CameraEncoderConfig = dataclasses.field(default_factory=CameraEncoderConfig)
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    detection_classes: Tuple[str, ...] = ('car', 'truck', 'pedestrian', 'cyclist')
    semantic_classes: Tuple[str, ...] = SEMANTIC_CATEGORIES
    semantic_palette: Tuple[Tuple[int, int, int], ...] = SEMANTIC_PALETTE

    def __post_init__(self) -> None:
        if not self.detection_classes:
            raise ValueError('ModelConfig.detection_classes must not be empty')
        if len(self.head.nms.radius_m) != len(self.detection_classes):
            raise ValueError(
                f'NMSConfig.radius_m has {len(self.head.nms.radius_m)} values for '
                f'{len(self.detection_classes)} detection classes')
        if len(self.semantic_palette) != len(self.semantic_classes):
            raise ValueError('semantic_palette needs one colour per semantic class')
        if self.lidar_encoder.backbone_stride < 1:
            raise ValueError('LidarEncoderConfig.backbone_stride must be at least 1')
        if self.lidar_encoder.context_dilation < 1:
            raise ValueError('LidarEncoderConfig.context_dilation must be at least 1')
        if self.lidar_encoder.backbone_out_channels % self.fusion.num_heads:
            raise ValueError('backbone_out_channels must be divisible by fusion.num_heads')

    @property
    def num_detection_classes(self) -> int:
        """Return the number of detection classes (heatmap channels)."""
        return len(self.detection_classes)

    @property
    def num_semantic_classes(self) -> int:
        """Return the number of semantic classes (semantic logit channels)."""
        return len(self.semantic_classes)

    @property
    def head_hw(self) -> Tuple[int, int]:
        """Return (h, w) of the detection head grid (backbone output)."""
        stride = self.lidar_encoder.backbone_stride
        rows, cols = self.grid.canvas_hw
        return (math.ceil(rows / stride), math.ceil(cols / stride))

    @property
    def head_cell_size_m(self) -> float:
        """Return the edge of one detection-head cell in metres."""
        return self.grid.pillar_size_m * self.lidar_encoder.backbone_stride

    def to_dict(self) -> Dict[str, Any]:
        """Return a JSON-safe nested dict (tuples become lists)."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'ModelConfig':
        """Build a config from ``to_dict()`` output; missing keys take defaults, unknown fail."""
        return build_dataclass(cls, data, 'ModelConfig')

    @classmethod
    def lite(cls) -> 'ModelConfig':
        """Return the CPU profile: the default area and classes at about a tenth of the compute.

        0.48 m pillars over the default x range (y trimmed by 0.32 m to divide evenly: a
        164 x 144 canvas instead of 248 x 216), narrow widths, the BEV convolutions on the
        head grid only (none at canvas resolution, the last one dilated for long objects),
        fusion over C5 only and a 192 x 320 camera input (the camera encoder, the semantic
        upsampling and argmax scale with its pixels).
        The fusion is calibration-aware, at the heights of the default recipe
        (``training/configs/synthetic.yaml``).
        """
        return cls(
            grid=GridConfig(pillar_size_m=0.48, y_range_m=(-39.36, 39.36)),
            camera=CameraConfig(input_hw=(192, 320)),
            lidar_encoder=LidarEncoderConfig(
                pfn_channels=32, backbone_channels=32, backbone_out_channels=48,
                full_res_blocks=0, out_blocks=2, context_dilation=3),
            camera_encoder=CameraEncoderConfig(stem_channels=16, stage_channels=(24, 32, 64, 96)),
            fusion=FusionConfig(camera_levels=('c5',), num_heads=2,
                                geometry_heights_m=(-1.6, -0.8, 0.0)),
            head=HeadConfig(shared_channels=32, tower_channels=32, semantic_channels=32))

    @classmethod
    def tiny(cls) -> 'ModelConfig':
        """Return a minimal model on a small odd-sized grid, for unit tests and smoke runs."""
        return cls(
            grid=GridConfig(
                x_range_m=(0.0, 9.92), y_range_m=(-4.16, 4.48), z_range_m=(-3.0, 2.0),
                max_points_per_pillar=8, max_pillars=400),
            camera=CameraConfig(input_hw=(64, 96)),
            lidar_encoder=LidarEncoderConfig(
                pfn_channels=8, backbone_channels=8, backbone_out_channels=16),
            camera_encoder=CameraEncoderConfig(stem_channels=8, stage_channels=(8, 8, 16, 16)),
            fusion=FusionConfig(num_heads=2),
            head=HeadConfig(
                shared_channels=8, tower_channels=8, semantic_channels=8, max_objects=20))
