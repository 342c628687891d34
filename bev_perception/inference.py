"""Inference runtime: numpy points (+ optional RGB image) in, typed per-frame results out; no ROS.

Usage::

    runtime = InferenceRuntime.from_weights('default.safetensors', device='cuda')
    runtime.warmup()
    result = runtime(points_xyzi, rgb_image)  # FrameResult

On CUDA the hot path is built to keep the GPU busy: inputs are staged in pinned (page-locked)
host memory and copied asynchronously; the image is resized and normalised on the GPU; decoding
(peaks, top-K, thresholds, NMS) and the semantic argmax and resize run on the GPU with fixed
shapes; everything the caller gets back travels in one packed device-to-host copy followed by
the frame's one stream synchronisation. Stage times come from CUDA events, which never block.
The only other synchronisations are inside the voxelizer, whose output size depends on the data.

On the CPU the image is resized as uint8 before it becomes float (``preprocess_image``), the
semantic logits leave the network at the head's stride and are upsampled and argmaxed a band of
rows at a time (``semantic_ids.upsampled_argmax_ids``: the same ids as the argmax of the
upsampled logits), and the nearest resize to the image copies whole rows.

On every device the BatchNorms that follow convolutions are folded into them when the runtime
is built (``model.folding``): the runtime's model computes the same without their passes over
the feature maps.

Options (both off by default, both measured by ``bev_perception_bench``):

* ``torch_compile``: ``torch.compile`` the fixed-shape stages (backbone, camera encoder, fusion,
  heads) in place; the first frames of each input shape compile (seconds to minutes).
* ``cuda_graphs`` (CUDA, batch 1): capture backbone -> heads -> decode -> semantic argmax as a
  CUDA graph per (camera or LiDAR-only, NMS settings) and replay it; its time is reported as
  ``cuda_graph`` and the stages inside read 0.
"""

import contextlib
import dataclasses
import logging
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from bev_perception.model.camera_geometry import forward_camera, SIZE as GEOMETRY_SIZE
from bev_perception.model.config import ModelConfig, NMSConfig
from bev_perception.model.decode import decode_padded, PaddedDetections, score_threshold_tensor
from bev_perception.model.folding import fold_batch_norms
from bev_perception.model.network import (BEVFusionNet, image_normalisation, preprocess_image,
                                          STAGES)
from bev_perception.model.semantic_ids import upsampled_argmax_ids
from bev_perception.weights import load_weights, PathLike
import numpy as np
import torch

LOGGER = logging.getLogger(__name__)

#: Keys of ``FrameResult.timings_ms``, in pipeline order.
TIMING_KEYS = ('preprocess',) + STAGES + (
    'cuda_graph', 'decode', 'semantic_resize', 'postprocess', 'total')

#: The fixed-shape network stages ``torch_compile`` compiles (attributes of BEVFusionNet; a
#: model without a semantic encoder has None there).
COMPILED_MODULES = ('backbone', 'camera_encoder', 'fusion', 'detection_head', 'semantic_encoder',
                    'semantic_head')

#: Untimed runs before a CUDA graph is captured (cuDNN and allocator warm-up).
GRAPH_WARMUP_RUNS = 3

#: Device copies of thresholds, radii and caps kept between frames.
MAX_CACHED_CONSTANTS = 64

Thresholds = Union[None, float, Sequence[float]]
#: A frame for ``run_batch``: (points, image or None[, camera geometry or None]).
Frame = Union[Tuple[np.ndarray, Optional[np.ndarray]],
              Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]]


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


class StageClock:
    """Accumulate per-stage times without blocking the GPU.

    On CUDA each stage records a pair of CUDA events on the current stream (read by
    ``milliseconds`` once the stream has been synchronised); on the CPU, and for stages
    entered with ``host=True``, host ``time.perf_counter`` is used.

    Args:
        device: the device the stages run on.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == 'cuda'
        self._host_ms: Dict[str, float] = {}
        self._events: List[Tuple[str, Any, Any]] = []

    @contextlib.contextmanager
    def __call__(self, stage: str, host: bool = False) -> Iterator[None]:
        """Time the body of a ``with`` block as ``stage`` (times of a repeated stage add up)."""
        if self._cuda and not host:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((stage, start, end))
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1e3
            self._host_ms[stage] = self._host_ms.get(stage, 0.0) + elapsed_ms

    def milliseconds(self) -> Dict[str, float]:
        """Return the time per stage (ms); call after the timed work has completed."""
        result = dict(self._host_ms)
        for stage, start, end in self._events:
            result[stage] = result.get(stage, 0.0) + float(start.elapsed_time(end))
        return result


@dataclasses.dataclass
class _CapturedGraph:
    """A CUDA graph of the fixed-shape stages with its static input and output tensors."""

    graph: Any  # torch.cuda.CUDAGraph
    canvas: torch.Tensor  # (1, C, H, W)
    images: Optional[torch.Tensor]  # (1, 3, Hc, Wc) or None (LiDAR-only graph)
    geometry: Optional[torch.Tensor]  # (1, camera_geometry.SIZE) for calibration-aware fusion
    thresholds: torch.Tensor  # (n_cls,) float32
    limit: torch.Tensor  # () int64
    detections: PaddedDetections
    semantic_ids: Optional[torch.Tensor]  # (1, Hc, Wc) uint8
    constants: Tuple[torch.Tensor, ...]  # device constants the graph reads (kept alive)


class InferenceRuntime:
    """Run a BEVFusionNet on single frames or small batches.

    Args:
        model: the network, changed in place: moved to ``device``, put in eval mode and its
            BatchNorms folded into the convolutions before them (``model.folding``), so it
            must not be trained or saved as weights afterwards.
        config: its config.
        metadata: the weights metadata (kept for callers; may be None).
        device: 'cpu', 'cuda' or 'cuda:N'; CUDA falls back to CPU with a logged notice.
        precision: 'fp32' or 'fp16' (autocast, CUDA only; fp32 on CPU with a notice).
        torch_compile: compile the fixed-shape stages with ``torch.compile`` (in place).
        compile_backend: the ``torch.compile`` backend ('inductor'; 'eager' or 'aot_eager'
            only trace, for tests).
        cuda_graphs: replay batch-1 frames as CUDA graphs (CUDA only; off with a notice on CPU).
        notify: receives each fallback notice once (default: this module's logger); the
            notices are also kept in ``notices``.
    """

    def __init__(self, model: BEVFusionNet, config: ModelConfig,
                 metadata: Optional[Dict[str, Any]] = None, *,
                 device: Union[str, torch.device] = 'cpu', precision: str = 'fp32',
                 torch_compile: bool = False, compile_backend: str = 'inductor',
                 cuda_graphs: bool = False, notify: Callable[[str], Any] = LOGGER.warning
                 ) -> None:
        self.device, self.precision, self.notices = resolve_device(device, precision)
        if cuda_graphs and self.device.type != 'cuda':
            self.notices.append('cuda_graphs needs CUDA: running without CUDA graphs')
            cuda_graphs = False
        for notice in self.notices:
            notify(notice)
        self.config = config
        self.metadata = metadata or {}
        self.model = model.to(self.device).eval()
        # Eval-mode BatchNorm is a per-channel affine map: fold it into the preceding convs
        # (one memory pass less per layer); before compiling, which would see the BatchNorms.
        self.folded_batch_norms = fold_batch_norms(self.model)
        self.class_names: Tuple[str, ...] = tuple(config.detection_classes)
        self.torch_compile = torch_compile
        self.cuda_graphs = cuda_graphs
        if torch_compile:
            for name in COMPILED_MODULES:
                module = getattr(self.model, name)
                if module is not None:
                    module.compile(backend=compile_backend, dynamic=False)
        self._normalisation = image_normalisation(config, self.device)
        self._device_constants: Dict[Any, torch.Tensor] = {}
        self._graphs: Dict[Any, _CapturedGraph] = {}

    @classmethod
    def from_weights(cls, path: PathLike, device: Union[str, torch.device] = 'cuda',
                     precision: str = 'fp32', **options: Any) -> 'InferenceRuntime':
        """Load a weights file (see ``bev_perception.weights``) and build a runtime.

        ``options`` are the keyword-only options of the constructor (``torch_compile``,
        ``compile_backend``, ``cuda_graphs``).
        """
        model, config, metadata = load_weights(path, device='cpu')
        return cls(model, config, metadata, device=device, precision=precision, **options)

    # ------------------------------------------------------------------ inputs

    def _to_device(self, array: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        """Return ``array`` as a tensor on the device (via pinned memory on CUDA)."""
        if self.device.type == 'cuda':
            staged = torch.empty(array.shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype,
                                 pin_memory=True)
            staged.numpy()[...] = array  # one host copy: any dtype, read-only or strided input
            return staged.to(self.device, non_blocking=True)
        array = np.ascontiguousarray(array, dtype=dtype)
        if not array.flags.writeable:
            array = array.copy()  # torch refuses to share read-only memory
        return torch.from_numpy(array)

    def _points_tensor(self, points: np.ndarray) -> torch.Tensor:
        array = np.asarray(points)
        if array.ndim != 2 or array.shape[1] != len(self.config.point.features):
            raise ValueError(f'points must be (N, {len(self.config.point.features)}) '
                             f'{self.config.point.features}, got {array.shape}')
        return self._to_device(array, np.dtype(np.float32))

    def _image_tensor(self, image: np.ndarray) -> torch.Tensor:
        """Return the (3, Hc, Wc) network input of an (H, W, 3) uint8 image."""
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f'image must be (H, W, 3) RGB, got {array.shape}')
        if array.dtype != np.uint8:
            raise ValueError(f'image must be uint8, got {array.dtype}')
        return preprocess_image(self._to_device(array, np.dtype(np.uint8)), self.config,
                                normalisation=self._normalisation)

    def _geometry_tensor(self, frames: Sequence[Frame], valid: Sequence[bool]
                         ) -> Optional[torch.Tensor]:
        """Return the (B, SIZE) camera geometry of a calibration-aware model, else None."""
        if not self.needs_calibration or not any(valid):
            return None
        rows = []
        for frame, has_image in zip(frames, valid):
            geometry = frame[2] if len(frame) > 2 else None
            if has_image and geometry is None:
                raise ValueError('these weights fuse by calibration: an image needs its '
                                 'camera_geometry (or run the frame LiDAR-only)')
            array = (np.zeros(GEOMETRY_SIZE, np.float32) if geometry is None
                     else np.asarray(geometry, dtype=np.float32))
            if array.shape != (GEOMETRY_SIZE,) or not np.isfinite(array).all():
                raise ValueError(f'camera_geometry must be {GEOMETRY_SIZE} finite values, '
                                 f'got shape {array.shape}')
            rows.append(array)
        return self._to_device(np.stack(rows), np.dtype(np.float32))

    def _constant(self, key: Any, values: Any, dtype: torch.dtype) -> torch.Tensor:
        """Return a cached device tensor of ``values`` (no host-to-device copy per frame)."""
        cache_key = (key, dtype, values)
        tensor = self._device_constants.get(cache_key)
        if tensor is None:
            if len(self._device_constants) >= MAX_CACHED_CONSTANTS:
                self._device_constants.clear()  # e.g. a threshold sweep: keep the cache small
            tensor = torch.tensor(values, dtype=dtype).to(self.device)
            self._device_constants[cache_key] = tensor
        return tensor

    def _thresholds(self, score_thresholds: Thresholds) -> torch.Tensor:
        values = score_threshold_tensor(score_thresholds, self.config, 'cpu')  # (n_cls,)
        return self._constant('thresholds', tuple(values.tolist()), torch.float32)

    def _autocast(self) -> Any:
        if self.precision == 'fp16':
            # No weight-cast cache: each weight is used once per frame, and CUDA graph capture
            # needs it off.
            return torch.autocast('cuda', dtype=torch.float16, cache_enabled=False)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ running

    @property
    def needs_calibration(self) -> bool:
        """Return True when images must come with their camera's geometry (calibration)."""
        return self.config.fusion.uses_calibration

    def __call__(self, points: np.ndarray, image: Optional[np.ndarray] = None,
                 score_thresholds: Thresholds = None, max_detections: Optional[int] = None,
                 nms: Optional[NMSConfig] = None,
                 camera_geometry: Optional[np.ndarray] = None) -> FrameResult:
        """Run one frame.

        Args:
            points: (N, 4) float32 x, y, z (metres, model frame) and raw intensity.
            image: (H, W, 3) uint8 RGB of any size, or None for LiDAR-only.
            score_thresholds: one value or one per class (default: the config's).
            max_detections: cap on detections (default: the config's top-K).
            nms: NMS settings (default: the config's).
            camera_geometry: (camera_geometry.SIZE,) calibration of ``image``; required with an
                image when ``needs_calibration``, ignored otherwise.

        Returns:
            The frame's detections, semantic map, overflow counts and stage timings.
        """
        return self.run_batch([(points, image, camera_geometry)], score_thresholds,
                              max_detections, nms)[0]

    def run_batch(self, frames: Sequence[Frame], score_thresholds: Thresholds = None,
                  max_detections: Optional[int] = None, nms: Optional[NMSConfig] = None
                  ) -> List[FrameResult]:
        """Run several frames as one batch; timings are batch-wide.

        A frame is (points, image or None) or (points, image or None, camera geometry or
        None), as the arguments of ``__call__``.
        """
        if not frames:
            return []
        nms = self.config.head.nms if nms is None else nms
        if nms.kind != 'none' and len(nms.radius_m) != self.config.num_detection_classes:
            raise ValueError('NMSConfig.radius_m needs one radius per detection class')
        limit = self.config.head.max_objects if max_detections is None else max_detections
        started = time.perf_counter()
        clock = StageClock(self.device)
        with torch.inference_mode():
            with clock('preprocess'):
                points = [self._points_tensor(frame[0]) for frame in frames]
                valid = [frame[1] is not None for frame in frames]
                images = None
                camera_valid = None  # all or none of the frames have an image
                if any(valid):
                    blank = torch.zeros(3, *self.config.camera.input_hw, device=self.device)
                    images = torch.stack([
                        self._image_tensor(frame[1]) if frame[1] is not None else blank
                        for frame in frames])  # (B, 3, Hc, Wc)
                    if not all(valid):
                        camera_valid = self._to_device(np.asarray(valid), np.dtype(np.bool_))
                geometry = self._geometry_tensor(frames, valid)
            with self._autocast():
                canvas, counts = self.model.encode_lidar(points, stage_timer=clock)
            thresholds = self._thresholds(score_thresholds)
            if self.cuda_graphs and len(frames) == 1:
                detections, semantic_ids = self._run_graph(
                    canvas, images, geometry, thresholds, limit, nms, clock)
            else:
                detections, semantic_ids = self._run_eager(
                    canvas, images, camera_valid, geometry, thresholds, limit, nms, clock)
            with clock('semantic_resize'):
                semantic = [
                    resize_nearest(semantic_ids[index], np.asarray(frame[1]).shape[:2])
                    if frame[1] is not None else None for index, frame in enumerate(frames)]
            with clock('postprocess', host=True):
                overflow = torch.stack(tuple(counts), 1)  # (B, 4) int64, VoxelizerCounts order
                fetched = self._fetch(
                    [detections.boxes, detections.scores, detections.labels, detections.count,
                     overflow] + [ids for ids in semantic if ids is not None])
                results = self._results(frames, valid, fetched)
        timings = dict.fromkeys(TIMING_KEYS, 0.0)
        timings.update(clock.milliseconds())
        timings['total'] = (time.perf_counter() - started) * 1e3
        return [FrameResult(**result, timings_ms=dict(timings)) for result in results]

    def _run_eager(self, canvas: torch.Tensor, images: Optional[torch.Tensor],
                   camera_valid: Optional[torch.Tensor], geometry: Optional[torch.Tensor],
                   thresholds: torch.Tensor, limit: Union[int, torch.Tensor], nms: NMSConfig,
                   clock: Optional[StageClock]
                   ) -> Tuple[PaddedDetections, Optional[torch.Tensor]]:
        """Run the fixed-shape stages, decode and the semantic argmax (no host syncs)."""
        timer = clock if clock is not None else _no_clock
        # On the CPU the semantic logits stay at the head's stride: upsampled_argmax_ids takes
        # the argmax of their upsampling band by band (the same ids, a fraction of the time).
        on_cpu = self.device.type == 'cpu'
        with self._autocast():
            output = self.model.forward_dense(canvas, images, camera_valid, stage_timer=clock,
                                              upsample_semantic=not on_cpu,
                                              camera_geometry=geometry)
        with timer('decode'):
            radius = (self._constant('radius', tuple(nms.radius_m), torch.float32)
                      if nms.kind == 'distance' else None)
            detections = decode_padded(output, self.config, thresholds, limit, nms, radius)
        semantic_ids = None
        if output.semantic is not None:
            with timer('semantic_resize'):
                if on_cpu:
                    semantic_ids = upsampled_argmax_ids(
                        output.semantic, tuple(images.shape[2:]))  # (B, Hc, Wc) uint8
                else:
                    # max().indices: the first maximum, like argmax, and faster.
                    semantic_ids = output.semantic.max(1).indices.to(torch.uint8)
        return detections, semantic_ids

    def _run_graph(self, canvas: torch.Tensor, images: Optional[torch.Tensor],
                   geometry: Optional[torch.Tensor], thresholds: torch.Tensor, limit: int,
                   nms: NMSConfig, clock: StageClock
                   ) -> Tuple[PaddedDetections, Optional[torch.Tensor]]:
        """Replay (capturing on first use) the CUDA graph of a batch-1 frame."""
        key = (images is not None, tuple(canvas.shape), canvas.dtype, nms)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(canvas, images, geometry, thresholds, limit, nms)
            self._graphs[key] = captured
        with clock('cuda_graph'):
            captured.canvas.copy_(canvas, non_blocking=True)
            if images is not None:
                captured.images.copy_(images, non_blocking=True)
            if captured.geometry is not None:
                captured.geometry.copy_(geometry, non_blocking=True)
            captured.thresholds.copy_(thresholds, non_blocking=True)
            captured.limit.copy_(self._constant('limit', int(limit), torch.int64),
                                 non_blocking=True)
            captured.graph.replay()
        return captured.detections, captured.semantic_ids

    def _capture(self, canvas: torch.Tensor, images: Optional[torch.Tensor],
                 geometry: Optional[torch.Tensor], thresholds: torch.Tensor, limit: int,
                 nms: NMSConfig) -> _CapturedGraph:
        """Capture the fixed-shape stages of one frame kind as a CUDA graph."""
        static_canvas = canvas.clone()
        static_images = None if images is None else images.clone()
        static_geometry = None if geometry is None else geometry.clone()
        static_thresholds = thresholds.clone()
        static_limit = self._constant('limit', int(limit), torch.int64).clone()

        def run() -> Tuple[PaddedDetections, Optional[torch.Tensor]]:
            return self._run_eager(static_canvas, static_images, None, static_geometry,
                                   static_thresholds, static_limit, nms, None)

        side_stream = torch.cuda.Stream(self.device)
        side_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side_stream):
            for _ in range(GRAPH_WARMUP_RUNS):
                run()
        torch.cuda.current_stream(self.device).wait_stream(side_stream)
        # The graph reads the cached radii by address: hold them even if the cache is cleared.
        constants = ((self._constant('radius', tuple(nms.radius_m), torch.float32),)
                     if nms.kind == 'distance' else ())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            detections, semantic_ids = run()
        LOGGER.info('captured a CUDA graph (%s)', 'camera' if images is not None else
                    'LiDAR-only')
        return _CapturedGraph(
            graph=graph, canvas=static_canvas, images=static_images, geometry=static_geometry,
            thresholds=static_thresholds, limit=static_limit, detections=detections,
            semantic_ids=semantic_ids, constants=constants)

    # ------------------------------------------------------------------ outputs

    def _fetch(self, tensors: Sequence[torch.Tensor]) -> List[np.ndarray]:
        """Return the tensors as numpy arrays; on CUDA one packed copy and one synchronisation."""
        if self.device.type != 'cuda':
            return [tensor.numpy() for tensor in tensors]
        packed = pack_tensors(tensors)  # (bytes,) uint8 on the device
        host = torch.empty(packed.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return unpack_arrays(host.numpy(), tensors)

    def _results(self, frames: Sequence[Frame],
                 valid: Sequence[bool], fetched: Sequence[np.ndarray]) -> List[Dict[str, Any]]:
        """Split the fetched padded arrays into per-frame result fields."""
        boxes, scores, labels, count, overflow = fetched[:5]
        semantic = iter(fetched[5:])
        results = []
        for index in range(len(frames)):
            kept = int(count[index])
            class_ids = labels[index, :kept].astype(np.int64)
            results.append({
                'boxes': boxes[index, :kept],
                'scores': scores[index, :kept],
                'class_ids': class_ids,
                'class_names': [self.class_names[i] for i in class_ids],
                'semantic': next(semantic) if valid[index] else None,
                'lidar_only': not valid[index],
                'overflow': OverflowCounts(*(int(value) for value in overflow[index]))})
        return results

    def warmup(self, iterations: int = 2) -> None:
        """Run synthetic frames (camera and LiDAR-only) so later calls run at full speed.

        With ``torch_compile`` this compiles, and with ``cuda_graphs`` it captures the graphs
        of the config's NMS settings.
        """
        generator = np.random.default_rng(0)
        grid = self.config.grid
        low = [grid.x_range_m[0], grid.y_range_m[0], grid.z_range_m[0], 0.0]
        high = [grid.x_range_m[1], grid.y_range_m[1], grid.z_range_m[1], 255.0]
        points = generator.uniform(low, high, size=(4096, 4)).astype(np.float32)
        image = generator.integers(0, 256, size=(*self.config.camera.input_hw, 3),
                                   dtype=np.uint8)
        geometry = forward_camera(image.shape[1::-1])
        for _ in range(iterations):
            self(points, image, camera_geometry=geometry)
            self(points, None)


@contextlib.contextmanager
def _no_clock(stage: str, host: bool = False) -> Iterator[None]:
    yield


def pack_tensors(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate the bytes of tensors (any dtypes and shapes) into one flat uint8 tensor."""
    parts = [tensor.contiguous().reshape(-1).view(torch.uint8) for tensor in tensors]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)


def unpack_arrays(buffer: np.ndarray, like: Sequence[torch.Tensor]) -> List[np.ndarray]:
    """Split a ``pack_tensors`` byte buffer (numpy) into arrays shaped like ``like`` (views)."""
    arrays = []
    offset = 0
    for tensor in like:
        dtype = torch.empty(0, dtype=tensor.dtype).numpy().dtype
        size = tensor.numel() * dtype.itemsize
        arrays.append(buffer[offset:offset + size].view(dtype).reshape(tuple(tensor.shape)))
        offset += size
    if offset != buffer.size:
        raise ValueError(f'packed buffer has {buffer.size} bytes, the tensors {offset}')
    return arrays


def resize_nearest(ids: torch.Tensor, size_hw: Tuple[int, int]) -> torch.Tensor:
    """Resize a (h, w) label map to ``size_hw`` by nearest neighbour (pixel centres)."""
    rows_in, cols_in = ids.shape
    height, width = size_hw
    rows = ((torch.arange(height, device=ids.device) + 0.5) * rows_in / height).long()
    cols = ((torch.arange(width, device=ids.device) + 0.5) * cols_in / width).long()
    rows, cols = rows.clamp_(max=rows_in - 1), cols.clamp_(max=cols_in - 1)
    if ids.device.type != 'cpu':
        return ids[rows][:, cols]
    # Columns of the small map first, then whole rows (memory copies) instead of gathering
    # every output element.
    widened = np.take(ids.numpy(), cols.numpy(), axis=1)  # (h, width)
    return torch.from_numpy(np.take(widened, rows.numpy(), axis=0))  # (height, width)
