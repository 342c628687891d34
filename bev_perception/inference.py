"""Inference runtime: numpy points (+ optional RGB image) in, typed per-frame results out; no ROS.

Usage::

    runtime = InferenceRuntime.from_weights('default.safetensors', device='cuda')
    runtime.warmup()
    result = runtime(points_xyzi, rgb_image)  # FrameResult
"""

import contextlib
import dataclasses
import logging
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from bev_perception.model.config import ModelConfig, NMSConfig
from bev_perception.model.decode import decode_detections
from bev_perception.model.network import BEVFusionNet, preprocess_image, STAGES
from bev_perception.weights import load_weights, PathLike
import numpy as np
import torch

LOGGER = logging.getLogger(__name__)

#: Keys of ``FrameResult.timings_ms``, in pipeline order.
TIMING_KEYS = ('preprocess',) + STAGES + ('decode', 'postprocess', 'total')

Thresholds = Union[None, float, Sequence[float]]


@dataclasses.dataclass(frozen=True)
class OverflowCounts:
    """Points and pillars the voxelizer dropped or capped for one frame."""

    non_finite_dropped: int
    out_of_range_dropped: int
    points_capped: int
    pillars_capped: int


@dataclasses.dataclass(frozen=True)
class FrameResult:
    """Everything the runtime returns for one frame (boxes in the model frame)."""

    boxes: np.ndarray  # (K, 7) float32 x, y, z, length, width, height (m), yaw (rad)
    scores: np.ndarray  # (K,) float32, descending
    class_ids: np.ndarray  # (K,) int64 index into the detection classes
    class_names: List[str]  # (K,) lower-case detection class names
    semantic: Optional[np.ndarray]  # (H, W) uint8 class ids at the given image's size
    lidar_only: bool  # True when no image was used
    overflow: OverflowCounts
    timings_ms: Dict[str, float]  # per stage (TIMING_KEYS); batch-wide for run_batch


def resolve_device(device: Union[str, torch.device], precision: str
                   ) -> Tuple[torch.device, str, List[str]]:
    """Return (device, precision, notices), falling back to CPU / fp32 where needed."""
    notices = []
    resolved = torch.device(device)
    if precision not in ('fp32', 'fp16'):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    if resolved.type == 'cuda' and not torch.cuda.is_available():
        notices.append(f'device {device!r} requested but CUDA is not available: running on CPU')
        resolved = torch.device('cpu')
    elif resolved.type not in ('cuda', 'cpu'):
        raise ValueError(f"device must be 'cuda[:N]' or 'cpu', got {device!r}")
    if precision == 'fp16' and resolved.type != 'cuda':
        notices.append('precision fp16 needs CUDA: running fp32 on CPU')
        precision = 'fp32'
    return resolved, precision, notices


class InferenceRuntime:
    """Run a BEVFusionNet on single frames or small batches.

    Args:
        model: the network (moved to ``device`` and put in eval mode).
        config: its config.
        metadata: the weights metadata (kept for callers; may be None).
        device: 'cpu', 'cuda' or 'cuda:N'; CUDA falls back to CPU with a logged notice.
        precision: 'fp32' or 'fp16' (autocast, CUDA only; fp32 on CPU with a notice).
    """

    def __init__(self, model: BEVFusionNet, config: ModelConfig,
                 metadata: Optional[Dict[str, Any]] = None, *,
                 device: Union[str, torch.device] = 'cpu', precision: str = 'fp32') -> None:
        self.device, self.precision, self.notices = resolve_device(device, precision)
        for notice in self.notices:
            LOGGER.warning(notice)
        self.config = config
        self.metadata = metadata or {}
        self.model = model.to(self.device).eval()
        self.class_names: Tuple[str, ...] = tuple(config.detection_classes)

    @classmethod
    def from_weights(cls, path: PathLike, device: Union[str, torch.device] = 'cuda',
                     precision: str = 'fp32') -> 'InferenceRuntime':
        """Load a weights file (see ``bev_perception.weights``) and build a runtime."""
        model, config, metadata = load_weights(path, device='cpu')
        return cls(model, config, metadata, device=device, precision=precision)

    @contextlib.contextmanager
    def _timed(self, timings: Dict[str, float], stage: str) -> Iterator[None]:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
            timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1e3

    def _points_tensor(self, points: np.ndarray) -> torch.Tensor:
        array = np.asarray(points)
        if array.ndim != 2 or array.shape[1] != len(self.config.point.features):
            raise ValueError(f'points must be (N, {len(self.config.point.features)}) '
                             f'{self.config.point.features}, got {array.shape}')
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not array.flags.writeable:
            array = array.copy()  # torch refuses to share read-only memory
        return torch.from_numpy(array).to(self.device)

    def __call__(self, points: np.ndarray, image: Optional[np.ndarray] = None,
                 score_thresholds: Thresholds = None, max_detections: Optional[int] = None,
                 nms: Optional[NMSConfig] = None) -> FrameResult:
        """Run one frame.

        Args:
            points: (N, 4) float32 x, y, z (metres, model frame) and raw intensity.
            image: (H, W, 3) uint8 RGB of any size, or None for LiDAR-only.
            score_thresholds: one value or one per class (default: the config's).
            max_detections: cap on detections (default: the config's top-K).
            nms: NMS settings (default: the config's).

        Returns:
            The frame's detections, semantic map, overflow counts and stage timings.
        """
        return self.run_batch([(points, image)], score_thresholds, max_detections, nms)[0]

    def run_batch(self, frames: Sequence[Tuple[np.ndarray, Optional[np.ndarray]]],
                  score_thresholds: Thresholds = None, max_detections: Optional[int] = None,
                  nms: Optional[NMSConfig] = None) -> List[FrameResult]:
        """Run several (points, image or None) frames as one batch; timings are batch-wide."""
        if not frames:
            return []
        timings = dict.fromkeys(TIMING_KEYS, 0.0)
        with torch.inference_mode(), self._timed(timings, 'total'):
            with self._timed(timings, 'preprocess'):
                points = [self._points_tensor(frame[0]) for frame in frames]
                valid = [frame[1] is not None for frame in frames]
                images = None
                if any(valid):
                    blank = torch.zeros(3, *self.config.camera.input_hw, device=self.device)
                    images = torch.stack([
                        preprocess_image(np.asarray(frame[1]), self.config, self.device)
                        if frame[1] is not None else blank for frame in frames])
                camera_valid = torch.tensor(valid, device=self.device)
            autocast = (torch.autocast('cuda', dtype=torch.float16)
                        if self.precision == 'fp16' else contextlib.nullcontext())
            with autocast:
                output = self.model(points, images, camera_valid,
                                    stage_timer=lambda stage: self._timed(timings, stage))
            with self._timed(timings, 'decode'):
                detections = decode_detections(output, self.config, score_thresholds,
                                               max_detections, nms)
            with self._timed(timings, 'postprocess'):
                semantic = self._semantic_maps(output.semantic, frames)
                counts = {name: value.tolist() for name, value in output.counts._asdict().items()}
                results = []
                for index, found in enumerate(detections):
                    class_ids = found.labels.cpu().numpy().astype(np.int64)
                    results.append({
                        'boxes': found.boxes.float().cpu().numpy(),
                        'scores': found.scores.float().cpu().numpy(),
                        'class_ids': class_ids,
                        'class_names': [self.class_names[i] for i in class_ids],
                        'semantic': semantic[index],
                        'lidar_only': not valid[index],
                        'overflow': OverflowCounts(
                            **{name: int(values[index]) for name, values in counts.items()})})
        return [FrameResult(**result, timings_ms=dict(timings)) for result in results]

    def _semantic_maps(self, logits: Optional[torch.Tensor],
                       frames: Sequence[Tuple[np.ndarray, Optional[np.ndarray]]]
                       ) -> List[Optional[np.ndarray]]:
        """Return per-frame (H, W) uint8 class ids, nearest-neighbour at each image's size."""
        maps: List[Optional[np.ndarray]] = []
        for index, (_, image) in enumerate(frames):
            if image is None or logits is None:
                maps.append(None)
                continue
            ids = logits[index].argmax(0).to(torch.uint8)  # (Hc, Wc)
            height, width = np.asarray(image).shape[:2]
            maps.append(resize_nearest(ids, (height, width)).cpu().numpy())
        return maps

    def warmup(self, iterations: int = 2) -> None:
        """Run synthetic frames (camera and LiDAR-only) so later calls run at full speed."""
        generator = np.random.default_rng(0)
        grid = self.config.grid
        low = [grid.x_range_m[0], grid.y_range_m[0], grid.z_range_m[0], 0.0]
        high = [grid.x_range_m[1], grid.y_range_m[1], grid.z_range_m[1], 255.0]
        points = generator.uniform(low, high, size=(4096, 4)).astype(np.float32)
        image = generator.integers(0, 256, size=(*self.config.camera.input_hw, 3),
                                   dtype=np.uint8)
        for _ in range(iterations):
            self(points, image)
            self(points, None)


def resize_nearest(ids: torch.Tensor, size_hw: Tuple[int, int]) -> torch.Tensor:
    """Resize a (h, w) label map to ``size_hw`` by nearest neighbour (pixel centres)."""
    rows_in, cols_in = ids.shape
    height, width = size_hw
    rows = ((torch.arange(height, device=ids.device) + 0.5) * rows_in / height).long()
    cols = ((torch.arange(width, device=ids.device) + 0.5) * cols_in / width).long()
    return ids[rows.clamp_(max=rows_in - 1)][:, cols.clamp_(max=cols_in - 1)]
