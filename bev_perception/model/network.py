"""BEVFusionNet: wires voxelizer -> PFN -> BEV backbone -> fusion -> heads; image preprocessing."""

import contextlib
from typing import (Callable, ContextManager, Dict, NamedTuple, Optional, Sequence, Tuple,
                    Union)

from bev_perception.model.bev_backbone import TinyBEVBackbone
from bev_perception.model.camera_encoder import CameraEncoder
from bev_perception.model.config import ModelConfig
from bev_perception.model.fusion import FuTrFusion
from bev_perception.model.heads import CenterPointHead, SemanticFPNHead
from bev_perception.model.pillar_net import PillarFeatureNet
from bev_perception.model.voxelizer import Voxelizer, VoxelizerCounts
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

#: Names of the stages a ``stage_timer`` sees, in order ('semantic_encoder': the semantic head's
#: own encoder, when ``HeadConfig.semantic_encoder`` gives it one; 0 ms otherwise).
STAGES = ('voxelize', 'pillar_net', 'backbone', 'camera_encoder', 'fusion', 'detection_head',
          'semantic_encoder', 'semantic_head')

StageTimer = Callable[[str], ContextManager]


class NetworkOutput(NamedTuple):
    """Everything the network predicts for a batch of B samples."""

    heatmap: torch.Tensor  # (B, n_cls, h, w) logits, (h, w) = config.head_hw
    offset: torch.Tensor  # (B, 2, h, w) sub-cell centre offset (x, y) in cells
    z: torch.Tensor  # (B, 1, h, w) centre z, metres
    log_size: torch.Tensor  # (B, 3, h, w) log length, width, height (metres)
    yaw: torch.Tensor  # (B, 2, h, w) sin, cos of yaw
    # (B, n_sem, Hc, Wc) logits (at the head's stride: forward_dense(upsample_semantic=False));
    # None without images
    semantic: Optional[torch.Tensor]
    camera_valid: torch.Tensor  # (B,) bool, samples that used their image
    counts: Optional[VoxelizerCounts]  # per-sample drops and caps; None: forward_dense


def _no_timer(stage: str) -> ContextManager:
    return contextlib.nullcontext()


def image_normalisation(config: ModelConfig, device: Optional[Union[str, torch.device]] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return the (1, 3, 1, 1) mean and std on the 0..255 scale, for ``preprocess_image``."""
    mean = torch.tensor(config.camera.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config.camera.std, device=device).view(1, 3, 1, 1) * 255.0
    return mean, std


def preprocess_image(rgb: Union[np.ndarray, torch.Tensor], config: ModelConfig,
                     device: Optional[Union[str, torch.device]] = None,
                     normalisation: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                     ) -> torch.Tensor:
    """Resize an RGB uint8 image to the network input and normalise it.

    Args:
        rgb: (H, W, 3) uint8 RGB image (numpy or tensor), any size.
        config: model config (``camera.input_hw``, ``mean``, ``std`` on a 0..1 scale).
        device: where to do the work (default: the tensor's device, CPU for numpy).
        normalisation: ``image_normalisation(config, device)``, built once by callers that
            preprocess many images (default: built here).

    Returns:
        (3, Hc, Wc) float32, bilinear resize (antialiased when shrinking), then
        (value / 255 - mean) / std. On the CPU the resize runs on the uint8 pixels (torch's
        vectorised channels-last uint8 kernel, the one torchvision uses, instead of converting
        the whole image to float32 first) and rounds to whole grey levels after each of its two
        separable passes: at most about 1 grey level (0..255 scale) from the float32 resize
        done on other devices, where the uint8 antialiased resize does not exist.
    """
    if isinstance(rgb, np.ndarray) and not rgb.flags.writeable:
        rgb = rgb.copy()  # torch refuses to share read-only memory (e.g. ROS message buffers)
    image = torch.as_tensor(rgb)
    if device is not None:
        image = image.to(device)
    if image.dim() != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be (H, W, 3) RGB, got {tuple(image.shape)}')
    if image.dtype != torch.uint8:
        raise ValueError(f'image must be uint8, got {image.dtype}')
    height, width = config.camera.input_hw
    chw = image.permute(2, 0, 1)[None]  # (1, 3, H, W), channels-last strides
    if tuple(chw.shape[-2:]) != (height, width):
        shrinking = chw.shape[-2] > height or chw.shape[-1] > width
        if chw.device.type == 'cpu':  # uint8 in, uint8 out (rounded)
            chw = chw.contiguous(memory_format=torch.channels_last)
        else:
            chw = chw.to(torch.float32)
        chw = F.interpolate(chw, size=(height, width), mode='bilinear', align_corners=False,
                            antialias=shrinking)
    chw = chw.to(torch.float32)
    mean, std = (image_normalisation(config, chw.device) if normalisation is None
                 else normalisation)
    return ((chw - mean) / std)[0]  # (3, Hc, Wc)


class BEVFusionNet(nn.Module):
    """LiDAR-camera BEV network with a CenterPoint detection head and an FPN semantic head.

    Args:
        config: the model config; every module is built from it and from the declared output
            shapes of the module before it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.voxelizer = Voxelizer(grid=config.grid, num_features=len(config.point.features))
        self.pillar_net = PillarFeatureNet(
            grid=config.grid, point=config.point, out_channels=config.lidar_encoder.pfn_channels)
        self.backbone = TinyBEVBackbone(
            in_channels=self.pillar_net.out_channels,
            channels=config.lidar_encoder.backbone_channels,
            out_channels=config.lidar_encoder.backbone_out_channels,
            stride=config.lidar_encoder.backbone_stride,
            full_res_blocks=config.lidar_encoder.full_res_blocks,
            out_blocks=config.lidar_encoder.out_blocks,
            context_dilation=config.lidar_encoder.context_dilation)
        self.camera_encoder = CameraEncoder(config=config.camera_encoder)
        self.fusion = FuTrFusion(
            bev_channels=self.backbone.out_channels,
            camera_channels=self.camera_encoder.out_channels, config=config.fusion,
            head_hw=config.head_hw, origin_m=(config.grid.x_range_m[0], config.grid.y_range_m[0]),
            cell_size_m=config.head_cell_size_m)
        self.detection_head = CenterPointHead(
            in_channels=self.fusion.out_channels, shared_channels=config.head.shared_channels,
            tower_channels=config.head.tower_channels,
            num_classes=config.num_detection_classes,
            heatmap_bias_init=config.head.heatmap_bias_init)
        # The semantic head's own encoder (HeadConfig.semantic_encoder), or None: it reads the
        # fusion's camera encoder.
        self.semantic_encoder = (
            CameraEncoder(config=config.camera_encoder,
                          blocks=config.head.semantic_encoder_blocks)
            if config.head.semantic_encoder else None)
        levels = config.head.semantic_levels
        self.semantic_head = SemanticFPNHead(
            in_channels={level: self.camera_encoder.out_channels[level] for level in levels},
            in_strides={level: self.camera_encoder.out_strides[level] for level in levels},
            channels=config.head.semantic_channels, num_classes=config.num_semantic_classes,
            detail_channels=(self.camera_encoder.stem_channels
                             if config.head.semantic_stem_detail else 0))

    def forward(self, points: Sequence[torch.Tensor], images: Optional[torch.Tensor] = None,
                camera_valid: Optional[torch.Tensor] = None,
                stage_timer: Optional[StageTimer] = None,
                camera_geometry: Optional[torch.Tensor] = None) -> NetworkOutput:
        """Run the network on a batch.

        Args:
            points: B tensors (N_i, 4) float32: x, y, z (metres, model frame), raw intensity.
            images: (B, 3, Hc, Wc) from ``preprocess_image``, or None (all LiDAR-only).
            camera_valid: (B,) bool, False where a sample has no image; None = all True when
                images are given.
            stage_timer: optional ``stage_timer(name)`` context manager wrapped around each
                stage (names in ``STAGES``), e.g. for per-stage timings.
            camera_geometry: (B, camera_geometry.SIZE) calibration of each sample's camera
                (rows of samples without an image are not read); needed with images when
                ``config.fusion.uses_calibration``, ignored otherwise.

        Returns:
            The dense predictions, the camera-valid mask and the voxelizer's counts.
        """
        canvas, counts = self.encode_lidar(points, stage_timer)
        return self.forward_dense(canvas, images, camera_valid, stage_timer,
                                  camera_geometry=camera_geometry)._replace(counts=counts)

    def encode_lidar(self, points: Sequence[torch.Tensor],
                     stage_timer: Optional[StageTimer] = None
                     ) -> Tuple[torch.Tensor, VoxelizerCounts]:
        """Voxelize a batch and encode it into the BEV canvas.

        The only stages with data-dependent shapes (and so host synchronisation on CUDA).

        Args:
            points: B tensors (N_i, 4) as in ``forward``.
            stage_timer: as in ``forward`` ('voxelize', 'pillar_net').

        Returns:
            The canvas (B, C, H, W) and the voxelizer's per-sample counts.
        """
        timer = _no_timer if stage_timer is None else stage_timer
        with timer('voxelize'):
            pillars, counts = self.voxelizer(points)
        with timer('pillar_net'):
            canvas = self.pillar_net(pillars)  # (B, C, H, W)
        return canvas, counts

    def forward_dense(self, canvas: torch.Tensor, images: Optional[torch.Tensor] = None,
                      camera_valid: Optional[torch.Tensor] = None,
                      stage_timer: Optional[StageTimer] = None,
                      upsample_semantic: bool = True,
                      camera_geometry: Optional[torch.Tensor] = None) -> NetworkOutput:
        """Run the fixed-shape stages: backbone, camera encoder, fusion and both heads.

        With ``camera_valid`` None (all samples have an image, or none has) nothing here
        synchronises with the host, so these stages can be compiled or captured as a CUDA graph.

        Args:
            canvas: (B, C, H, W) from ``encode_lidar``.
            images: (B, 3, Hc, Wc) or None, as in ``forward``.
            camera_valid: (B,) bool or None, as in ``forward``.
            stage_timer: as in ``forward`` (every stage after 'pillar_net').
            upsample_semantic: False leaves the semantic logits at the head's stride, without
                its final bilinear upsampling to (Hc, Wc), for inference that wants class ids
                only (``semantic_ids.upsampled_argmax_ids`` gives those of the upsampled
                logits).
            camera_geometry: (B, camera_geometry.SIZE) or None, as in ``forward``.

        Returns:
            The predictions with ``counts`` None.
        """
        timer = _no_timer if stage_timer is None else stage_timer
        batch = canvas.shape[0]
        with timer('backbone'):
            bev = self.backbone(canvas)  # (B, C', h, w)
        all_valid = images is not None and camera_valid is None
        valid = self._camera_valid(images, camera_valid, batch, canvas.device)
        semantic = None
        semantic_hw = tuple(images.shape[2:]) if images is not None and upsample_semantic else None
        if all_valid:
            with timer('camera_encoder'):
                features = self.camera_encoder(images)
            with timer('fusion'):
                bev = self.fusion(bev, features, None, camera_geometry)
            semantic = self._semantic(images, features, semantic_hw, timer)
        elif images is not None:
            valid_index = torch.nonzero(valid).squeeze(1)  # (Bv,)
            all_valid = valid_index.numel() == batch
            if valid_index.numel() == 0:  # zero logits, at (Hc, Wc) whatever upsample_semantic
                semantic = bev.new_zeros(
                    (batch, self.config.num_semantic_classes) + tuple(images.shape[2:]))
            else:
                valid_images = images if all_valid else images.index_select(0, valid_index)
                with timer('camera_encoder'):
                    features = self.camera_encoder(valid_images)
                with timer('fusion'):
                    geometry = (camera_geometry if camera_geometry is None or all_valid
                                else camera_geometry.index_select(0, valid_index))
                    bev = self.fusion(bev, features, valid, geometry)
                semantic = self._semantic(valid_images, features, semantic_hw, timer)
                if not all_valid:  # zero logits for samples without an image
                    with timer('semantic_head'):
                        semantic = semantic.new_zeros(
                            (batch,) + tuple(semantic.shape[1:])).index_copy(
                            0, valid_index, semantic)
        with timer('detection_head'):
            maps = self.detection_head(bev)
        return NetworkOutput(
            heatmap=maps.heatmap, offset=maps.offset, z=maps.z, log_size=maps.log_size,
            yaw=maps.yaw, semantic=semantic, camera_valid=valid, counts=None)

    def forward_semantic(self, images: torch.Tensor) -> torch.Tensor:
        """Return the semantic logits (B, n_sem, Hc, Wc) of (B, 3, Hc, Wc) images alone.

        The same logits as ``forward``'s for samples with an image, without the LiDAR path,
        the fusion or the detection head (for training the semantics alone).
        """
        return self._semantic(images, None, tuple(images.shape[2:]))

    def _semantic(self, images: torch.Tensor, features: Optional[Dict[str, torch.Tensor]],
                  semantic_hw: Optional[Tuple[int, int]], timer: StageTimer = _no_timer
                  ) -> torch.Tensor:
        """Return the semantic logits of (Bv, 3, Hc, Wc) images and their fusion features.

        With a semantic encoder of its own the head reads that encoder's levels of the images;
        otherwise it reads ``features``, the fusion's camera encoder levels (computed here when
        None).
        """
        with timer('semantic_encoder'):
            if self.semantic_encoder is not None:
                features = self.semantic_encoder(images)
            elif features is None:
                features = self.camera_encoder(images)
        with timer('semantic_head'):
            return self.semantic_head(features, semantic_hw)

    @staticmethod
    def _camera_valid(images: Optional[torch.Tensor], camera_valid: Optional[torch.Tensor],
                      batch: int, device: torch.device) -> torch.Tensor:
        if images is None:
            return torch.zeros(batch, dtype=torch.bool, device=device)
        if images.dim() != 4 or images.shape[0] != batch or images.shape[1] != 3:
            raise ValueError(f'images must be ({batch}, 3, H, W), got {tuple(images.shape)}')
        if camera_valid is None:
            return torch.ones(batch, dtype=torch.bool, device=device)
        camera_valid = camera_valid.to(device=device, dtype=torch.bool).reshape(-1)
        if camera_valid.numel() != batch:
            raise ValueError(f'camera_valid has {camera_valid.numel()} entries for {batch}')
        return camera_valid
