"""``bev_perception_bench``: per-stage latency, memory, fast path and side-by-side benchmarks.

    bev_perception_bench [--out out/bench] [--configs default,lite] [--devices cpu,cuda]
                         [--precisions fp32,fp16] [--inputs front,surround] [--iterations N]
                         [--warmup N] [--quick] [--skip-node] [--skip-side-by-side]
                         [--skip-fast-path] [--cpu-compile] [--weights CONFIG=PATH ...]
                         [--node-bag BAG [--node-frames N]]

Sections (each in ``bench.json`` and as a table in ``bench.md`` in ``--out``):

* **stages**: per-stage latency p50/p95 (cloud conversion, voxelize, PFN + scatter, backbone,
  camera encoder, fusion, heads, decode, semantic resize, message building, ...) and peak
  memory, batch 1, for every config x device x precision (fp16 on CUDA only) x input:
  ``front`` = an A2D2 front-camera frame (about 8k LiDAR points in the camera's 60 degree
  field of view, 1920 x 1208 image) and ``surround`` = a 360 degree cloud of 120k points with
  the same image. Warm-up runs are excluded; CUDA stages are timed with CUDA events and the
  frame ends with a stream synchronisation (``bev_perception.inference.StageClock``). Peak
  memory: CUDA ``max_memory_allocated``; CPU the rise of the process's peak RSS (VmHWM, reset
  through /proc/self/clear_refs) over its RSS after loading the model. On the CPU the semantic
  head's final upsampling runs fused with the argmax, so it counts in the semantic argmax +
  resize row, not in heads. Message building builds every output, as the node does when each
  topic has a subscriber (the node builds none for a topic without one).
* **fast_path**: the runtime with ``torch_compile`` and/or ``cuda_graphs`` on and off (CUDA;
  compile on the CPU only with ``--cpu-compile``, it takes minutes on a small machine).
* **voxelizer**: our voxelizer against spconv's ``PointToVoxel`` on the same points and grid in
  the same run, timed in alternation (ratio = median over iterations of ours / spconv;
  ``make bench`` installs the spconv CPU wheel).
* **conversion**: PointCloud2 -> (N, 4) float32 by a plain per-point Python loop, by a
  structured-numpy copy per column, and by the zero-copy path (``conversions``).
* **node**: ``perception_node`` end to end on a bag (``--node-bag``, e.g. the synthetic
  drive ``python -m training.demo_drive`` writes; ``make bench`` does) replayed at its recorded
  rate (``bev_perception_eval --live --rate 1``): rate kept, latency percentiles, dropped frames.
  Without ``--node-bag`` the section is not measured, and the bench says so.

Inputs are synthetic and deterministic (LiDAR-like rings hitting a ground plane, walls and
cars; a noise image). Weights: ``--weights CONFIG=PATH``, else the shipped weights when their
config is that config, else random initialisation (timings do not depend on the values, except
decode and message building through the number of detections, which is reported). Timing
statistics are ``report.percentiles`` (count, mean, p50, p95, p99, max; ms, 3 decimals).
"""

import argparse
import ctypes
import json
import math
import os
import platform
import re
import struct
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from bev_perception import conversions
from bev_perception.bag_io import BagError, resolve_bag_path
from bev_perception.inference import InferenceRuntime, TIMING_KEYS
from bev_perception.model.camera_geometry import forward_camera
from bev_perception.model.config import GridConfig, ModelConfig
from bev_perception.model.network import BEVFusionNet, STAGES
from bev_perception.model.voxelizer import Voxelizer
from bev_perception.tools import replay
from bev_perception.tools.report import percentiles as _percentiles
from bev_perception.weights import (load_weights, read_metadata, save_weights, SHIPPED_PROFILES,
                                    SHIPPED_WEIGHTS_DIR, WeightsError)
import numpy as np
import torch

#: Model configs by name; 'shipped' and 'shipped-lite' (the shipped weights' configs) are
#: resolved by shipped_config.
CONFIGS: Dict[str, Callable[[], ModelConfig]] = {
    'default': ModelConfig, 'lite': ModelConfig.lite, 'tiny': ModelConfig.tiny}
#: Config name -> the shipped profile whose weights' config it is.
SHIPPED_CONFIGS = {'shipped': 'default', 'shipped-lite': 'lite'}
CONFIG_NAMES = ('default', 'lite', 'shipped', 'shipped-lite', 'tiny')

#: A2D2's camera image size (height, width).
A2D2_IMAGE_HW = (1208, 1920)
#: Horizontal field of view of A2D2's front-centre camera, degrees (2 atan(960 / fx)).
FRONT_FOV_DEG = 60.0
#: Height of the model frame's origin (the camera) above the ground, metres.
SENSOR_HEIGHT_M = 1.8

#: Rows of the per-stage table: key, label.
BENCH_STAGES = (
    ('cloud_conversion', 'cloud conversion (PointCloud2 -> numpy)'),
    ('image_conversion', 'image conversion (Image -> numpy)'),
    ('preprocess', 'input upload + image resize/normalise'),
    ('voxelize', 'voxelize'),
    ('pillar_net', 'PFN + scatter'),
    ('backbone', 'BEV backbone'),
    ('camera_encoder', 'camera encoder'),
    ('fusion', 'fusion (cross-attention)'),
    ('semantic_encoder', "semantic encoder (the semantic head's own, if any)"),
    ('heads', 'heads (detection + semantic)'),
    ('cuda_graph', 'CUDA graph (backbone..decode)'),
    ('decode', 'decode (peaks, top-K, NMS)'),
    ('semantic_resize', 'semantic argmax + resize (CPU: with the logits upsampling)'),
    ('postprocess', 'transfer back + unpack'),
    ('message_building', 'message building (detections, markers, 2 images)'),
    ('model_forward', 'model forward (voxelize..heads)'),
    ('inference_total', 'runtime total'),
    ('end_to_end', 'end to end (conversion + runtime + messages)'),
)

#: Fast-path variants: name -> (torch_compile, cuda_graphs).
FAST_PATH_VARIANTS = {
    'eager': (False, False), 'compile': (True, False), 'cuda_graphs': (False, True),
    'compile+cuda_graphs': (True, True)}


# ------------------------------------------------------------------------------ machine

def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as stream:
            for line in stream:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def load_average() -> List[float]:
    """Return the 1, 5 and 15 minute load averages (rounded)."""
    return [round(value, 2) for value in os.getloadavg()]


def machine_info() -> Dict[str, Any]:
    """Describe the machine the numbers come from."""
    info = {
        'cpu_model': _cpu_model(), 'cpu_cores': os.cpu_count(),
        'torch_threads': torch.get_num_threads(), 'torch': torch.__version__,
        'python': platform.python_version(), 'niceness': os.nice(0),
        'load_average_at_start': load_average(), 'cuda': None,
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info['cuda'] = {'device': properties.name,
                        'memory_gb': round(properties.total_memory / 2**30, 1),
                        'cuda_version': torch.version.cuda}
    return info


# ------------------------------------------------------------------------------ inputs

def lidar_cloud(num_points: int, fov_deg: float, seed: int) -> np.ndarray:
    """Return a LiDAR-like (N, 4) float32 cloud (model frame) of exactly ``num_points``.

    64 rings between -25 and +3 degrees elevation over ``fov_deg`` of azimuth (centred on +x):
    downward rays hit the ground (z = -1.8 m), the others walls 5-80 m away; a fifth of the
    points lie on the surfaces of car-sized boxes. Intensity 0-255.
    """
    generator = np.random.default_rng(seed)
    half = math.radians(fov_deg) / 2
    num_objects = num_points // 5
    num_scan = num_points - num_objects
    azimuth = generator.uniform(-half, half, num_scan)
    elevation = np.radians(generator.choice(np.linspace(-25.0, 3.0, 64), num_scan))
    ground = elevation < math.radians(-1.0)
    distance = np.where(ground, SENSOR_HEIGHT_M / np.tan(-np.minimum(elevation, -1e-3)),
                        generator.uniform(5.0, 80.0, num_scan))
    distance = np.minimum(distance, 120.0) * generator.normal(1.0, 0.01, num_scan)
    horizontal = distance * np.cos(elevation)
    scan = np.stack([horizontal * np.cos(azimuth), horizontal * np.sin(azimuth),
                     np.where(ground, -SENSOR_HEIGHT_M, distance * np.sin(elevation))], 1)
    centres_azimuth = generator.uniform(-half, half, 24)
    centres_range = generator.uniform(6.0, 60.0, 24)
    owner = generator.integers(0, 24, num_objects)
    local = generator.uniform(-0.5, 0.5, (num_objects, 3)) * np.array([4.5, 1.9, 1.6])
    objects = np.stack([centres_range[owner] * np.cos(centres_azimuth[owner]),
                        centres_range[owner] * np.sin(centres_azimuth[owner]),
                        np.full(num_objects, -SENSOR_HEIGHT_M + 0.8)], 1) + local
    points = np.concatenate([scan, objects])
    intensity = generator.uniform(0.0, 255.0, (num_points, 1))
    return np.concatenate([points, intensity], 1).astype(np.float32)  # (N, 4)


def camera_image(height_width: Tuple[int, int], seed: int) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB noise image."""
    return np.random.default_rng(seed).integers(0, 256, (*height_width, 3), dtype=np.uint8)


def camera_calibration(height_width: Tuple[int, int]) -> np.ndarray:
    """Return the geometry (camera_geometry.SIZE,) of the bench camera.

    It sits at the model origin, looking along +x with the field of view of the front cloud
    (``FRONT_FOV_DEG``). Weights that fuse by calibration need one with every image (others
    ignore it); the projection's cost does not depend on the values.
    """
    height, width = height_width
    return forward_camera((width, height), math.radians(FRONT_FOV_DEG))


def cloud_message(points: np.ndarray, header: Any = None) -> Any:
    """Return a driver-like PointCloud2: x, y, z, intensity (float32), ring (uint16), time."""
    from std_msgs.msg import Header

    layout = np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring', 'time'],
                       'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<f4'],
                       'offsets': [0, 4, 8, 12, 16, 20], 'itemsize': 24})
    structured = np.zeros(len(points), dtype=layout)
    for column, name in enumerate(('x', 'y', 'z', 'intensity')):
        structured[name] = points[:, column]
    structured['ring'] = np.arange(len(points)) % 64
    return conversions.structured_to_pointcloud2(structured, header or Header(frame_id='lidar'))


def input_specs(quick: bool) -> Dict[str, Dict[str, Any]]:
    """Return the benchmark inputs by name: points, field of view, image size."""
    if quick:
        return {'front': {'points': 2000, 'fov_deg': FRONT_FOV_DEG, 'image_hw': (151, 240)},
                'surround': {'points': 6000, 'fov_deg': 360.0, 'image_hw': (151, 240)}}
    return {'front': {'points': 8000, 'fov_deg': FRONT_FOV_DEG, 'image_hw': A2D2_IMAGE_HW},
            'surround': {'points': 120000, 'fov_deg': 360.0, 'image_hw': A2D2_IMAGE_HW}}


# ------------------------------------------------------------------------------ statistics

def percentiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """Return ``report.percentiles`` of timing samples (ms) to 3 decimals."""
    return _percentiles(values, digits=3)


def _time_ms(function: Callable[[], Any], iterations: int, warmup: int) -> List[float]:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1e3)
    return samples


def _time_interleaved_ms(first: Callable[[], Any], second: Callable[[], Any], iterations: int,
                         warmup: int) -> Tuple[List[float], List[float]]:
    """Time two functions in alternation and return the samples (ms) of each.

    Which of the two runs first alternates too, so both see the same machine state.
    """
    samples: Tuple[List[float], List[float]] = ([], [])
    for index in range(warmup + iterations):
        order = (0, 1) if index % 2 == 0 else (1, 0)
        for which in order:
            started = time.perf_counter()
            (first, second)[which]()
            if index >= warmup:
                samples[which].append((time.perf_counter() - started) * 1e3)
    return samples


class PeakRss:
    """Peak resident memory of this process (Linux: VmHWM, reset via /proc/self/clear_refs)."""

    def __init__(self) -> None:
        self.resettable = False
        self.baseline_kb: Optional[int] = None

    @staticmethod
    def _status_kb(key: str) -> Optional[int]:
        try:
            with open('/proc/self/status', encoding='utf-8') as stream:
                match = re.search(rf'^{key}:\s+(\d+) kB', stream.read(), re.MULTILINE)
        except OSError:
            return None
        return int(match.group(1)) if match else None

    def start(self) -> None:
        """Return freed heap memory to the OS and reset the peak to the current RSS."""
        try:
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:
            with open('/proc/self/clear_refs', 'w', encoding='utf-8') as stream:
                stream.write('5')
            self.resettable = True
        except OSError:
            self.resettable = False
        self.baseline_kb = self._status_kb('VmRSS')

    def rise_mb(self) -> Optional[float]:
        """Return the peak RSS since ``start`` minus the RSS at ``start`` (MB)."""
        peak = self._status_kb('VmHWM')
        if peak is None or self.baseline_kb is None or not self.resettable:
            return None
        return round((peak - self.baseline_kb) / 1024, 1)


# ------------------------------------------------------------------------------ models

def model_and_weights(config_name: str, weights: Mapping[str, str]
                      ) -> Tuple[BEVFusionNet, ModelConfig, str]:
    """Return the model of a config with its weights and where they came from.

    ``weights[config_name]`` when given; else the shipped weights when their config is the
    config ('shipped': always); else random initialisation.
    """
    path = weights.get(config_name)
    if path:
        model, config, _ = load_weights(path, device='cpu')
        return model, config, path
    config = model_config(config_name)
    for profile in SHIPPED_PROFILES:
        shipped = shipped_weights_path(profile)
        if shipped and ModelConfig.from_dict(read_metadata(shipped)['config']) == config:
            model, config, _ = load_weights(shipped, device='cpu')
            return model, config, os.path.relpath(shipped)
    torch.manual_seed(0)
    return BEVFusionNet(config).eval(), config, 'random init'


def model_config(config_name: str) -> ModelConfig:
    """Return the config of a name in CONFIG_NAMES ('shipped...': see shipped_config)."""
    if config_name in SHIPPED_CONFIGS:
        return shipped_config(SHIPPED_CONFIGS[config_name])
    return CONFIGS[config_name]()


def shipped_config(profile: str = 'default') -> ModelConfig:
    """Return the model config recorded in a profile's shipped weights' metadata.

    Raises:
        ValueError: the shipped weights are not installed.
    """
    shipped = shipped_weights_path(profile)
    if shipped is None:
        name = next(n for n, p in SHIPPED_CONFIGS.items() if p == profile)
        raise ValueError(f'--configs {name} needs the shipped weights '
                         f'({os.path.join(SHIPPED_WEIGHTS_DIR, profile + ".safetensors")}: '
                         f'missing; `make weights` trains them)')
    return ModelConfig.from_dict(read_metadata(shipped)['config'])


def shipped_weights_path(profile: str = 'default') -> Optional[str]:
    """Return a profile's shipped weights file in the package, if there is one."""
    path = os.path.join(SHIPPED_WEIGHTS_DIR, f'{profile}.safetensors')
    return path if os.path.isfile(path) else None


# ------------------------------------------------------------------------------ stages

def _message_building(result: Any, header: Any, image_header: Any, palette: np.ndarray
                      ) -> None:
    """Build what the node publishes for one frame (without publishing)."""
    conversions.detections_to_msg(header, result.boxes, result.scores, result.class_names)
    conversions.detections_to_markers(header, result.boxes, result.scores, result.class_names,
                                      previous_count=0)
    if result.semantic is not None:
        conversions.semantic_to_mono8(result.semantic, image_header)
        conversions.semantic_to_color(result.semantic, palette, image_header)


def bench_stages(config_name: str, device: str, precision: str, input_name: str,
                 spec: Mapping[str, Any], iterations: int, warmup: int,
                 weights: Mapping[str, str], score_threshold: float) -> Dict[str, Any]:
    """Time every stage of one scenario (batch 1) and measure its peak memory."""
    from std_msgs.msg import Header

    model, config, weights_from = model_and_weights(config_name, weights)
    points = lidar_cloud(spec['points'], spec['fov_deg'], seed=1)
    rgb = camera_image(tuple(spec['image_hw']), seed=2)
    geometry = camera_calibration(tuple(spec['image_hw']))
    header = Header(frame_id='lidar')
    image_header = Header(frame_id='camera')
    cloud_msg = cloud_message(points, header)
    image_msg = conversions.rgb_to_image(rgb, image_header)
    palette = np.asarray(config.semantic_palette, dtype=np.uint8)
    cuda = device.startswith('cuda')
    memory = PeakRss()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        memory.start()
    runtime = InferenceRuntime(model, config, device=device, precision=precision)
    weights_mb = (torch.cuda.memory_allocated() / 2**20) if cuda else None
    samples: Dict[str, List[float]] = {key: [] for key, _ in BENCH_STAGES}
    detections = []
    kept_points = []
    for index in range(warmup + iterations):
        started = time.perf_counter()
        cloud = conversions.pointcloud2_to_array(cloud_msg)
        converted = time.perf_counter()
        image = conversions.image_to_rgb(image_msg)
        image_converted = time.perf_counter()
        result = runtime(cloud, image, score_thresholds=score_threshold,
                         camera_geometry=geometry)
        inferred = time.perf_counter()
        _message_building(result, header, image_header, palette)
        finished = time.perf_counter()
        if index < warmup:
            continue
        timings = result.timings_ms
        for key in TIMING_KEYS:
            if key in samples:
                samples[key].append(timings[key])
        samples['heads'].append(timings['detection_head'] + timings['semantic_head'])
        samples['model_forward'].append(sum(timings[stage] for stage in STAGES))
        samples['cloud_conversion'].append((converted - started) * 1e3)
        samples['image_conversion'].append((image_converted - converted) * 1e3)
        samples['inference_total'].append(timings['total'])
        samples['message_building'].append((finished - inferred) * 1e3)
        samples['end_to_end'].append((finished - started) * 1e3)
        detections.append(len(result.boxes))
        kept_points.append(len(cloud) - result.overflow.out_of_range_dropped)
    if cuda:
        peak = {'kind': 'cuda max_memory_allocated (weights included)',
                'peak_mb': round(torch.cuda.max_memory_allocated() / 2**20, 1),
                'weights_mb': round(weights_mb, 1),
                'reserved_mb': round(torch.cuda.max_memory_reserved() / 2**20, 1)}
    else:
        peak = {'kind': 'CPU peak RSS rise over the RSS with the model loaded',
                'peak_mb': memory.rise_mb()}
    return {
        'config': config_name, 'device': str(runtime.device), 'precision': runtime.precision,
        'input': input_name, 'points': int(spec['points']),
        'points_in_grid': int(np.mean(kept_points)) if kept_points else None,
        'image_hw': list(spec['image_hw']), 'iterations': iterations, 'warmup': warmup,
        'weights': weights_from, 'detections_per_frame': float(np.mean(detections)),
        'stages_ms': {key: percentiles(values) for key, values in samples.items()},
        'memory': peak, 'load_average': load_average(),
    }


def bench_fast_path(config_name: str, device: str, precision: str, spec: Mapping[str, Any],
                    variants: Sequence[str], iterations: int, warmup: int,
                    weights: Mapping[str, str], score_threshold: float) -> List[Dict[str, Any]]:
    """Time the runtime (batch 1, camera frame) with torch.compile / CUDA graphs on and off."""
    points = lidar_cloud(spec['points'], spec['fov_deg'], seed=1)
    rgb = camera_image(tuple(spec['image_hw']), seed=2)
    geometry = camera_calibration(tuple(spec['image_hw']))
    rows = []
    reference = None
    for variant in variants:
        torch_compile, cuda_graphs = FAST_PATH_VARIANTS[variant]
        model, config, _ = model_and_weights(config_name, weights)
        runtime = InferenceRuntime(model, config, device=device, precision=precision,
                                   torch_compile=torch_compile, cuda_graphs=cuda_graphs)
        started = time.perf_counter()
        runtime(points, rgb, score_thresholds=score_threshold,
                camera_geometry=geometry)  # compiles / captures
        first_ms = (time.perf_counter() - started) * 1e3
        forward: List[float] = []
        totals: List[float] = []
        for index in range(warmup + iterations):
            result = runtime(points, rgb, score_thresholds=score_threshold,
                             camera_geometry=geometry)
            if index >= warmup:
                timings = result.timings_ms
                forward.append(sum(timings[stage] for stage in STAGES) + timings['cuda_graph'])
                totals.append(timings['total'])
        if reference is None:
            reference = result
        rows.append({
            'config': config_name, 'device': str(runtime.device), 'precision': runtime.precision,
            'variant': variant, 'points': int(spec['points']),
            'first_frame_ms': round(first_ms, 1),
            'forward_ms': percentiles(forward), 'total_ms': percentiles(totals),
            'max_box_difference_vs_eager': _box_difference(reference, result),
            'load_average': load_average()})
        del runtime, model
    return rows


def _box_difference(reference: Any, result: Any) -> Optional[float]:
    if reference.boxes.shape != result.boxes.shape:
        return None  # different detections: reported as not comparable
    if not len(reference.boxes):
        return 0.0
    return round(float(np.abs(reference.boxes - result.boxes).max()), 6)


# ------------------------------------------------------------------------------ side by side

def spconv_point_to_voxel(grid: GridConfig, device: torch.device) -> Tuple[Any, Optional[str]]:
    """Return spconv's PointToVoxel on our grid, or (None, why not)."""
    try:
        from spconv.pytorch.utils import PointToVoxel
    except ImportError as error:
        return None, (f'spconv is not installed ({error}); `make bench` installs the spconv '
                      'CPU wheel (pip install spconv)')
    z_extent = grid.z_range_m[1] - grid.z_range_m[0]
    try:
        generator = PointToVoxel(
            vsize_xyz=[grid.pillar_size_m, grid.pillar_size_m, z_extent],
            coors_range_xyz=[grid.x_range_m[0], grid.y_range_m[0], grid.z_range_m[0],
                             grid.x_range_m[1], grid.y_range_m[1], grid.z_range_m[1]],
            num_point_features=4, max_num_voxels=grid.max_pillars,
            max_num_points_per_voxel=grid.max_points_per_pillar, device=device)
    except Exception as error:  # noqa: B902 - any failure of a third-party build is reported
        return None, f'spconv PointToVoxel failed on {device}: {type(error).__name__}: {error}'
    return generator, None


def bench_voxelizer(points: np.ndarray, grid: GridConfig, device: str, iterations: int,
                    warmup: int) -> Dict[str, Any]:
    """Time our voxelizer and spconv's PointToVoxel on identical points and the same grid."""
    torch_device = torch.device(device)
    tensor = torch.from_numpy(points).to(torch_device)
    voxelizer = Voxelizer(grid=grid, num_features=4)
    cuda = torch_device.type == 'cuda'

    def synchronise() -> None:
        if cuda:
            torch.cuda.synchronize(torch_device)

    def ours() -> Any:
        with torch.inference_mode():
            output = voxelizer([tensor])
        synchronise()
        return output

    pillars, _ = ours()
    row: Dict[str, Any] = {
        'device': device, 'points': len(points), 'grid_hw': list(grid.canvas_hw),
        'pillar_size_m': grid.pillar_size_m, 'max_pillars': grid.max_pillars,
        'max_points_per_pillar': grid.max_points_per_pillar,
        'ours_ms': None, 'ours_pillars': int(pillars.coords.shape[0]), 'spconv_ms': None,
        'spconv_pillars': None, 'ratio_ours_over_spconv': None, 'note': None}
    generator, why_not = spconv_point_to_voxel(grid, torch_device)
    if generator is None:
        row['ours_ms'] = percentiles(_time_ms(ours, iterations, warmup))
        row['note'] = why_not
    else:
        def theirs() -> Any:
            output = generator(tensor)
            synchronise()
            return output

        voxels = theirs()[0]
        ours_ms, spconv_ms = _time_interleaved_ms(ours, theirs, iterations, warmup)
        row['ours_ms'], row['spconv_ms'] = percentiles(ours_ms), percentiles(spconv_ms)
        row['spconv_pillars'] = int(voxels.shape[0])
        # The median of the per-iteration ratios: both sides of a pair ran back to back.
        row['ratio_ours_over_spconv'] = round(float(np.median(
            np.asarray(ours_ms) / np.asarray(spconv_ms))), 3)
    row['load_average'] = load_average()
    return row


def points_by_python_loop(msg: Any, fields: Sequence[str]) -> np.ndarray:
    """Read float32 fields point by point with ``struct`` (the naive reference)."""
    offsets = {field.name: field.offset for field in msg.fields}
    order = '>' if msg.is_bigendian else '<'
    unpackers = [struct.Struct(order + 'f') for _ in fields]
    data = bytes(msg.data)
    rows = []
    for index in range(msg.width * msg.height):
        base = index * msg.point_step
        row = [unpacker.unpack_from(data, base + offsets[name])[0]
               for unpacker, name in zip(unpackers, fields)]
        if all(math.isfinite(value) for value in row):
            rows.append(row)
    return np.asarray(rows, dtype=np.float32).reshape(-1, len(fields))


def points_by_column_copy(msg: Any, fields: Sequence[str]) -> np.ndarray:
    """Read fields through a structured numpy view, copying column by column."""
    structured = conversions.pointcloud2_to_structured(msg, fields)
    points = np.empty((len(structured), len(fields)), dtype=np.float32)
    for column, name in enumerate(fields):
        points[:, column] = structured[name]
    return points[np.isfinite(points).all(axis=1)]


def bench_conversion(points: np.ndarray, iterations: int, loop_iterations: int
                     ) -> Dict[str, Any]:
    """Compare three ways of turning a PointCloud2 into (N, 4) float32."""
    msg = cloud_message(points)
    fields = conversions.DEFAULT_POINT_FIELDS
    methods = {
        'python_loop': (lambda: points_by_python_loop(msg, fields), loop_iterations),
        'numpy_column_copy': (lambda: points_by_column_copy(msg, fields), iterations),
        'zero_copy': (lambda: conversions.pointcloud2_to_array(msg, fields), iterations),
    }
    outputs = {name: function() for name, (function, _) in methods.items()}
    agree = all(np.array_equal(outputs['zero_copy'], output) for output in outputs.values())
    row: Dict[str, Any] = {'points': len(points), 'point_step': msg.point_step,
                           'outputs_agree': bool(agree)}
    for name, (function, count) in methods.items():
        row[f'{name}_ms'] = percentiles(_time_ms(function, count, 0))
    zero_copy = row['zero_copy_ms']['p50']
    row['speedup_zero_copy_vs_python_loop'] = (
        round(row['python_loop_ms']['p50'] / zero_copy, 1) if zero_copy else None)
    row['speedup_zero_copy_vs_column_copy'] = (
        round(row['numpy_column_copy_ms']['p50'] / zero_copy, 1) if zero_copy else None)
    row['load_average'] = load_average()
    return row


# ------------------------------------------------------------------------------ node replay

def _node_weights(config_name: str, weights: Mapping[str, str], out_dir: str
                  ) -> Tuple[str, str]:
    """Return (weights file, where from) for the node: given, shipped, or random init."""
    model, config, weights_from = model_and_weights(config_name, weights)
    if not weights_from.startswith('random init'):
        return weights_from, weights_from
    path = os.path.join(out_dir, 'weights', f'{config_name}_random.safetensors')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_weights(path, model, config, provenance={'dataset': 'none: random init (benchmark)'})
    return path, weights_from


def bench_node(config_names: Sequence[str], device: str, bag: str, weights: Mapping[str, str],
               out_dir: str, frames: Optional[int] = None, cpu_threads: int = 0,
               startup_timeout_s: float = 300.0) -> List[Dict[str, Any]]:
    """Replay ``bag`` into perception_node at its recorded rate for each config.

    ``frames`` limits the clouds replayed (None: all); ``cpu_threads`` goes to the node's
    ``cpu_threads`` parameter (0: torch's default).
    """
    from bev_perception.tools.evaluate_bag import EvalOptions, evaluate_live

    os.environ.update(replay.local_dds_env(replay.default_domain_id()))
    os.environ.update(replay.large_message_dds_env())
    image_size = _bag_image_size(bag)
    rows = []
    for config_name in config_names:
        path, weights_from = _node_weights(config_name, weights, out_dir)
        report_dir = os.path.join(out_dir, 'node_replay', config_name)
        options = EvalOptions(
            bag=bag, out=report_dir, weights=path, device=device, live=True, rate=1.0,
            max_frames=frames, progress=False, startup_timeout_s=startup_timeout_s,
            overrides={'input_reliability': 'reliable', 'device': device,
                       'cpu_threads': cpu_threads})
        load_before = load_average()
        report = evaluate_live(options)
        live = report['live']
        diagnostics = live.get('node_diagnostics') or {}
        input_rate = live.get('input_rate_hz')
        output_rate = live.get('output_rate_hz')
        rows.append({
            'config': config_name, 'device': report.get('device', device),
            'weights': weights_from, 'bag': bag, 'frames': live['clouds_published'],
            'image_size': image_size, 'cpu_threads': cpu_threads or None, 'rate': 1.0,
            'input_rate_hz': _rounded(input_rate),
            'output_rate_hz': _rounded(output_rate),
            'clouds_published': live['clouds_published'],
            'detections_received': live['detections_received'],
            'dropped_frames': live['dropped_frames'],
            'node_dropped_frames': diagnostics.get('dropped_frames'),
            'rate_kept': bool(live['dropped_frames'] == 0),
            'end_to_end_latency_ms': live['end_to_end_latency_ms'],
            'node_processing_ms': (report.get('timing_ms') or {}).get('processing'),
            'report': os.path.relpath(os.path.join(report_dir, 'report.md'), out_dir),
            'load_average_before': load_before, 'load_average': load_average()})
    return rows


def _bag_image_size(bag: str) -> Optional[List[int]]:
    """Return [width, height] of the bag's first camera image (None without one)."""
    from bev_perception.bag_io import BagReader, DEFAULT_TOPICS, IMAGE_TYPE

    with BagReader(bag) as reader:
        if not reader.has_topic(DEFAULT_TOPICS.image):
            return None
        for item in reader.messages([DEFAULT_TOPICS.image], raw=True):
            msg = reader.deserialize(item.message, IMAGE_TYPE, item.topic)
            return [int(msg.width), int(msg.height)]
    return None


def _rounded(value: Optional[float], digits: int = 2) -> Optional[float]:
    return None if value is None else round(float(value), digits)


# ------------------------------------------------------------------------------ markdown

def _cell(stats: Optional[Mapping[str, Any]]) -> str:
    if not stats or stats.get('p50') is None:
        return '-'
    return f'{_number(stats["p50"])} / {_number(stats["p95"])}'


def _number(value: float) -> str:
    if value >= 100:
        return f'{value:.0f}'
    if value >= 10:
        return f'{value:.1f}'
    return f'{value:.2f}'


def markdown(report: Mapping[str, Any]) -> str:
    """Return the report as Markdown tables."""
    machine = report['machine']
    gpu = machine['cuda']['device'] if machine['cuda'] else 'none'
    lines = ['# bev_perception benchmark', '',
             f'Machine: {machine["cpu_model"]}, {machine["cpu_cores"]} cores, torch '
             f'{machine["torch"]} ({machine["torch_threads"]} threads), GPU: {gpu}; niceness '
             f'{machine["niceness"]}, load average {machine["load_average_at_start"]} at the '
             f'start. Command: `{report["command"]}`.', '']
    stages = report.get('stages') or []
    if stages:
        lines += ['## Per-stage latency, batch 1 (ms, p50 / p95)', '']
        headers = [f'{row["config"]} {row["device"]} {row["precision"]} {row["input"]}'
                   for row in stages]
        lines.append('| stage | ' + ' | '.join(headers) + ' |')
        lines.append('| --- |' + ' --- |' * len(stages))
        for key, label in BENCH_STAGES:
            if all(not (row['stages_ms'][key]['p50'] or 0) for row in stages):
                continue  # a stage that never ran here (e.g. the CUDA graph on a CPU)
            lines.append(f'| {label} | '
                         + ' | '.join(_cell(row['stages_ms'][key]) for row in stages) + ' |')
        lines.append('| peak memory (MB) | ' + ' | '.join(
            '-' if row['memory']['peak_mb'] is None else f'{row["memory"]["peak_mb"]:.0f}'
            for row in stages) + ' |')
        lines.append('| points (in grid) | ' + ' | '.join(
            f'{row["points"]} ({row["points_in_grid"]})' for row in stages) + ' |')
        lines.append('| detections / frame | ' + ' | '.join(
            f'{row["detections_per_frame"]:.0f}' for row in stages) + ' |')
        lines.append('| load average (1/5/15 min) | ' + ' | '.join(
            '/'.join(f'{value:.1f}' for value in row['load_average']) for row in stages) + ' |')
        lines += ['', f'Image {stages[0]["image_hw"][1]}x{stages[0]["image_hw"][0]}; weights: '
                  + ', '.join(sorted({f'{row["config"]}: {row["weights"]}' for row in stages}))
                  + f'; {stages[0]["iterations"]} timed iterations after '
                  f'{stages[0]["warmup"]} warm-up. Memory: '
                  + '; '.join(sorted({row['memory']['kind'] for row in stages})) + '.', '']
    fast = report.get('fast_path') or []
    if fast:
        lines += ['## Fast path (batch 1, camera frame; ms, p50 / p95)', '',
                  '| config | device | precision | variant | first frame | model forward | '
                  'runtime total | max box diff vs eager | load |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
        for row in fast:
            lines.append(
                f'| {row["config"]} | {row["device"]} | {row["precision"]} | {row["variant"]} | '
                f'{row["first_frame_ms"]:.0f} | {_cell(row["forward_ms"])} | '
                f'{_cell(row["total_ms"])} | {row["max_box_difference_vs_eager"]} | '
                f'{row["load_average"][0]:.1f} |')
        lines.append('')
    voxelizer = report.get('voxelizer') or []
    if voxelizer:
        lines += ['## Voxelizer vs spconv PointToVoxel (same points, same grid; ms p50 / p95)',
                  '', '| device | points | ours | spconv | ours / spconv | pillars ours / '
                  'spconv | load | note |', '| --- | --- | --- | --- | --- | --- | --- | --- |']
        for row in voxelizer:
            lines.append(
                f'| {row["device"]} | {row["points"]} | {_cell(row["ours_ms"])} | '
                f'{_cell(row["spconv_ms"])} | {row["ratio_ours_over_spconv"] or "-"} | '
                f'{row["ours_pillars"]} / {row["spconv_pillars"] or "-"} | '
                f'{row["load_average"][0]:.1f} | {row["note"] or ""} |')
        lines.append('')
    conversion = report.get('conversion')
    if conversion:
        lines += ['## PointCloud2 -> (N, 4) float32 (ms p50 / p95)', '',
                  '| points | point_step | python loop | numpy column copy | zero copy | '
                  'zero copy speed-up vs loop / copy | outputs agree | load |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- |',
                  f'| {conversion["points"]} | {conversion["point_step"]} | '
                  f'{_cell(conversion["python_loop_ms"])} | '
                  f'{_cell(conversion["numpy_column_copy_ms"])} | '
                  f'{_cell(conversion["zero_copy_ms"])} | '
                  f'{conversion["speedup_zero_copy_vs_python_loop"]}x / '
                  f'{conversion["speedup_zero_copy_vs_column_copy"]}x | '
                  f'{conversion["outputs_agree"]} | {conversion["load_average"][0]:.1f} |', '']
    node = report.get('node') or []
    if node:
        lines += ['## Node end to end, 10 Hz bag replay (bev_perception_eval --live --rate 1)',
                  '', '| config | device | CPU threads | weights | clouds | outputs | dropped | '
                  'rate kept | input / output Hz | latency p50 / p95 / max (ms) | node processing '
                  'p50 / p95 (ms) | load before / after |', '| --- |' + ' --- |' * 11]
        for row in node:
            latency = row['end_to_end_latency_ms'] or {}
            processing = row['node_processing_ms'] or {}
            lines.append(
                f'| {row["config"]} | {row["device"]} | {row["cpu_threads"] or "default"} | '
                f'{row["weights"]} | {row["clouds_published"]} | {row["detections_received"]} | '
                f'{row["dropped_frames"]} | {"yes" if row["rate_kept"] else "no"} | '
                f'{row["input_rate_hz"]} / {row["output_rate_hz"]} | '
                + ' / '.join('-' if latency.get(key) is None else _number(latency[key])
                             for key in ('p50', 'p95', 'max')) + ' | '
                + ' / '.join('-' if processing.get(key) is None else _number(processing[key])
                             for key in ('p50', 'p95')) + ' | '
                f'{row["load_average_before"][0]:.1f} / {row["load_average"][0]:.1f} |')
        lines.append('')
    if report.get('not_measured'):
        lines += ['## Not measured here', ''] + [f'- {item}' for item in report['not_measured']]
        lines.append('')
    return '\n'.join(lines)


# ------------------------------------------------------------------------------ main

def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(prog='bev_perception_bench',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='out/bench', help='output folder (default out/bench)')
    parser.add_argument('--configs', default='default,lite,shipped',
                        help='model configs, comma-separated: default, lite, shipped and '
                             "shipped-lite (the shipped weights' configs), tiny")
    parser.add_argument('--devices', default='cpu,cuda',
                        help='cpu and/or cuda (cuda is skipped, and listed as not measured, '
                             'without a GPU)')
    parser.add_argument('--precisions', default='fp32,fp16', help='fp32 and/or fp16 (CUDA)')
    parser.add_argument('--inputs', default='front,surround', help='front and/or surround')
    parser.add_argument('--iterations', type=int, default=20, help='timed runs per scenario')
    parser.add_argument('--warmup', type=int, default=3, help='untimed runs first')
    parser.add_argument('--quick', action='store_true',
                        help='small inputs, 2 iterations, 1 warm-up (smoke test)')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch intra-op threads (default 0: one per core, as torch picks)')
    parser.add_argument('--score-threshold', type=float, default=0.1,
                        help='detection score threshold (the number of detections is reported)')
    parser.add_argument('--weights', action='append', default=[], metavar='CONFIG=PATH',
                        help='weights file of a config (default: shipped if it matches, else '
                             'random init)')
    parser.add_argument('--skip-stages', action='store_true', help='no per-stage section')
    parser.add_argument('--skip-fast-path', action='store_true', help='no fast-path section')
    parser.add_argument('--cpu-compile', action='store_true',
                        help='also measure torch.compile on the CPU (slow to compile)')
    parser.add_argument('--skip-side-by-side', action='store_true',
                        help='no voxelizer / conversion comparisons')
    parser.add_argument('--skip-node', action='store_true', help='no node replay')
    parser.add_argument('--node-bag',
                        help='bag replayed into the node (topics of a converted A2D2 scene, '
                             'e.g. the synthetic drive `python -m training.demo_drive` writes); '
                             'without it the node replay is not measured')
    parser.add_argument('--node-frames', type=int,
                        help='clouds of the bag replayed (default: all)')
    return parser


def _split(text: str, allowed: Sequence[str], name: str) -> List[str]:
    values = [value.strip() for value in text.split(',') if value.strip()]
    unknown = [value for value in values if value not in allowed]
    if unknown or not values:
        raise ValueError(f'--{name} must be a comma-separated subset of {", ".join(allowed)}')
    return values


def run(args: argparse.Namespace, command: str) -> Dict[str, Any]:
    """Run the selected sections; return the report (also written to args.out)."""
    configs = _split(args.configs, CONFIG_NAMES, 'configs')
    devices = _split(args.devices, ('cpu', 'cuda'), 'devices')
    precisions = _split(args.precisions, ('fp32', 'fp16'), 'precisions')
    inputs = _split(args.inputs, ('front', 'surround'), 'inputs')
    weights = dict(item.split('=', 1) for item in args.weights)
    iterations, warmup = (2, 1) if args.quick else (args.iterations, args.warmup)
    if iterations < 1 or warmup < 0:
        raise ValueError('--iterations must be at least 1 and --warmup at least 0')
    specs = input_specs(args.quick)
    if args.node_bag and not args.skip_node:
        try:
            resolve_bag_path(args.node_bag)
        except BagError as error:
            raise ValueError(f'--node-bag: {error}') from None
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    report: Dict[str, Any] = {'command': command, 'machine': machine_info(), 'stages': [],
                              'fast_path': [], 'voxelizer': [], 'conversion': None,
                              'node': [], 'not_measured': []}
    not_measured = report['not_measured']
    gpu = torch.cuda.is_available()
    if 'cuda' in devices and not gpu:
        devices = [device for device in devices if device != 'cuda']
        not_measured.append(
            'CUDA (no GPU in this environment): per-stage latency and memory fp32/fp16, the '
            'fast path (torch.compile, CUDA graphs) and spconv on CUDA; on a GPU machine run '
            f'`bev_perception_bench --devices cuda --configs {",".join(configs)} --out '
            'out/bench_cuda`')
    if 'fp16' in precisions and not gpu:
        not_measured.append('fp16 (CUDA only; the CPU runs fp32)')
    if not args.skip_node and not args.node_bag:
        missing = ('node replay: no --node-bag given (a bag to replay into perception_node, '
                   'e.g. `python -m training.demo_drive --frames 40 --workers 1 --out BAG` in a '
                   'source checkout, as `make bench` does; or --skip-node)')
        not_measured.append(missing)
        print(f'[bench] WARNING: {missing}', file=sys.stderr, flush=True)

    def log(message: str) -> None:
        print(f'[bench] {message} (load {load_average()[0]:.1f})', flush=True)

    def scenarios():
        for device in devices:
            for precision in precisions:
                if precision == 'fp16' and device == 'cpu':
                    continue
                for config_name in configs:
                    yield device, precision, config_name

    if not args.skip_stages:
        for device, precision, config_name in scenarios():
            for input_name in inputs:
                log(f'stages: {config_name} {device} {precision} {input_name}')
                report['stages'].append(bench_stages(
                    config_name, device, precision, input_name, specs[input_name], iterations,
                    warmup, weights, args.score_threshold))
    if not args.skip_fast_path:
        for device, precision, config_name in scenarios():
            if device == 'cuda':
                variants = list(FAST_PATH_VARIANTS)
            elif args.cpu_compile:
                variants = ['eager', 'compile']
            else:
                continue
            log(f'fast path: {config_name} {device} {precision} {variants}')
            report['fast_path'] += bench_fast_path(
                config_name, device, precision, specs['front'], variants, iterations, warmup,
                weights, args.score_threshold)
        if not args.cpu_compile and 'cpu' in devices:
            not_measured.append('torch.compile on the CPU (compiling takes minutes on this '
                                'machine): add --cpu-compile')
    if not args.skip_side_by_side:
        surround = lidar_cloud(specs['surround']['points'], 360.0, seed=3)
        grid = model_config(configs[0]).grid
        for device in devices:
            log(f'voxelizer vs spconv on {device}')
            report['voxelizer'].append(bench_voxelizer(surround, grid, device, iterations,
                                                       warmup))
        log('PointCloud2 conversion')
        report['conversion'] = bench_conversion(surround, iterations,
                                                loop_iterations=min(iterations, 3))
    if not args.skip_node and args.node_bag:
        node_configs = [name for name in configs if name != 'tiny']
        log(f'node replay of {args.node_bag} at its recorded rate: {node_configs}')
        report['node'] = bench_node(node_configs, 'cuda' if 'cuda' in devices else 'cpu',
                                    args.node_bag, weights, args.out, frames=args.node_frames,
                                    cpu_threads=args.threads)
    report['machine']['load_average_at_end'] = load_average()
    with open(os.path.join(args.out, 'bench.json'), 'w', encoding='utf-8') as stream:
        json.dump(report, stream, indent=2)
    with open(os.path.join(args.out, 'bench.md'), 'w', encoding='utf-8') as stream:
        stream.write(markdown(report))
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark from the command line; print the Markdown report."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = 'bev_perception_bench ' + ' '.join(sys.argv[1:] if argv is None else argv)
    try:
        report = run(args, command.strip())
    except ValueError as error:
        parser.error(str(error))
    except WeightsError as error:  # names the file and the fault
        raise SystemExit(f'bev_perception_bench: {error}') from None
    print(markdown(report))
    print(f'[bench] wrote {os.path.join(args.out, "bench.json")} and bench.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
