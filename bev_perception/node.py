"""The BEV perception node: LiDAR + camera in, 3D detections and semantic images out.

Topics (node-private names, remap them in the launch file):

* in: ``~/input/pointcloud`` (sensor_msgs/PointCloud2), ``~/input/image`` (sensor_msgs/Image),
  sensor-data QoS (best effort) by default.
* out: ``~/output/detections`` (vision_msgs/Detection3DArray, the cloud's header),
  ``~/output/semantic`` (mono8 class ids, the image's header), ``~/output/semantic_color``
  (rgb8), ``~/output/markers`` (visualization_msgs/MarkerArray), ``~/output/label_info``
  (vision_msgs/LabelInfo, transient local), ``/diagnostics`` and the debug topics
  ``~/debug/timings`` (diagnostic_msgs/DiagnosticArray: one status named ``timings`` whose
  values are ``<stage>_ms`` numbers and frame facts, header = the cloud's header) and
  ``~/debug/end_to_end_latency_ms`` (std_msgs/Float64, now minus the cloud stamp).
  Detections, markers and both semantic images are built and published only while their topic
  has a subscriber (lazy, like image_transport's publishers): nothing is spent on an output
  nobody reads.

Threads: the executor runs the (non-blocking) callbacks and timers; one worker thread converts,
runs inference and publishes. They meet in a latest-wins slot of depth 1, so a slow model drops
old frames (counted) instead of building latency.

Malformed input never stops the node: a refused cloud or image is counted (``bad_clouds`` /
``bad_images`` and one counter per reason, ``bad_cloud_<reason>`` / ``bad_image_<reason>``) and
warned about (at most every ``WARNING_PERIOD_S`` per reason) with its topic, stamp and field.
Start-up problems end ``main`` with exit code 1 and one ``cannot start: ...`` line; SIGINT and
SIGTERM end it cleanly with exit code 0 at any time, from the import of this module on when it
is the program.
"""

from dataclasses import dataclass, field, replace
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

# Started as the perception_node program (its console script, or python -m): until main() takes
# over, SIGINT and SIGTERM end the start-up at once with exit code 0 and no traceback (importing
# torch and rclpy below takes seconds). Other importers keep their own signal handling.
if __name__ == '__main__' or os.path.basename((sys.argv or [''])[0]) == 'perception_node':
    def _stop_while_importing(signum, frame):
        """Leave quietly with exit code 0: nothing has been started yet."""
        sys.exit(0)

    signal.signal(signal.SIGINT, _stop_while_importing)
    signal.signal(signal.SIGTERM, _stop_while_importing)

from bev_perception import conversions
from bev_perception.inference import FrameResult, InferenceRuntime
from bev_perception.model.config import ModelConfig, NMSConfig
from bev_perception.node_params import (check_against_model, descriptor, NodeSettings,
                                        PARAMETERS)
from bev_perception.sync import (LatestWinsSlot, LidarTriggeredSync, stamp_to_seconds,
                                 SyncedFrame)
from bev_perception.weights import SHIPPED_PROFILES, SHIPPED_WEIGHTS_DIR, WeightsError
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Float64, Header
import torch
from vision_msgs.msg import Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

#: File name of the weights shipped with the package.
PACKAGE_NAME = 'bev_perception'
#: Seconds between two warnings of the same kind.
WARNING_PERIOD_S = 5.0
#: Period of the timer that ends expired waits for images (seconds, steady clock).
SYNC_POLL_PERIOD_S = 0.01
#: Marker colours (RGB) of the detection classes, by class index (weights order).
MARKER_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                  (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34),
                  (23, 190, 207), (127, 127, 127))
#: Scaled intensities above this mean the intensity_scale does not fit the driver.
MAX_PLAUSIBLE_SCALED_INTENSITY = 1.5
#: Signals that stop the node cleanly (exit code 0).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Longest frame id quoted in a warning.
MAX_QUOTED_CHARS = 80

INPUT_POINTCLOUD_TOPIC = '~/input/pointcloud'
INPUT_IMAGE_TOPIC = '~/input/image'
OUTPUT_TOPICS = {
    'detections': '~/output/detections',
    'semantic': '~/output/semantic',
    'semantic_color': '~/output/semantic_color',
    'markers': '~/output/markers',
    'label_info': '~/output/label_info',
}
DIAGNOSTICS_TOPIC = '/diagnostics'
TIMINGS_TOPIC = '~/debug/timings'
LATENCY_TOPIC = '~/debug/end_to_end_latency_ms'


class StartupError(Exception):
    """The node cannot start; the message says why and what to change."""


class StopRequested(SystemExit):
    """SIGINT or SIGTERM arrived: stop cleanly. A SystemExit with code 0, never a traceback."""

    def __init__(self, signum: int) -> None:
        super().__init__(0)
        self.signum = signum


def shipped_weights_candidates(profile: str = 'default') -> List[str]:
    """Return where a profile's shipped weights may be: next to this module, then the share dir."""
    if profile not in SHIPPED_PROFILES:
        raise StartupError(f'profile {profile!r} is not one of {", ".join(SHIPPED_PROFILES)}')
    name = f'{profile}.safetensors'
    candidates = [os.path.join(SHIPPED_WEIGHTS_DIR, name)]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(os.path.join(get_package_share_directory(PACKAGE_NAME), 'weights',
                                       name))
    except (ImportError, LookupError, ValueError):
        pass  # not installed through colcon / no ament index: the module folder only
    return candidates


def resolve_weights_path(weights_path: str, profile: str = 'default') -> str:
    """Return the weights file to load (``weights_path``, else the profile's shipped file).

    Raises:
        StartupError: the file does not exist, is a directory or is not a regular file.
    """
    if weights_path:
        path = os.path.expanduser(weights_path)
        if os.path.isdir(path):
            raise StartupError(f'weights_path {weights_path!r} is a directory, not a weights '
                               'file')
        if not os.path.exists(path):
            raise StartupError(f'weights_path {weights_path!r} does not exist')
        if not os.path.isfile(path):
            raise StartupError(f'weights_path {weights_path!r} is not a regular file')
        return path
    candidates = shipped_weights_candidates(profile)
    for path in candidates:
        if os.path.isfile(path):
            return path
    make = 'make weights' if profile == 'default' else f'make weights-{profile}'
    raise StartupError(
        f'weights_path is empty and no shipped {profile!r} weights were found (looked in '
        + ', '.join(candidates) + f'); run `{make}` or set weights_path')


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Return R = Rz(yaw) Ry(pitch) Rx(roll) (3, 3) float64."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch),
                              math.sin(pitch), math.cos(yaw), math.sin(yaw))
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Return the unit quaternions (..., 4) x, y, z, w of rotation matrices (..., 3, 3)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    candidates = np.stack([  # four numerically stable branches, (..., 4, 4) as (branch, xyzw)
        np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                  r[..., 1, 0] - r[..., 0, 1], 1.0 + trace], -1),
        np.stack([1.0 + r[..., 0, 0] - r[..., 1, 1] - r[..., 2, 2],
                  r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0],
                  r[..., 2, 1] - r[..., 1, 2]], -1),
        np.stack([r[..., 0, 1] + r[..., 1, 0],
                  1.0 - r[..., 0, 0] + r[..., 1, 1] - r[..., 2, 2],
                  r[..., 1, 2] + r[..., 2, 1], r[..., 0, 2] - r[..., 2, 0]], -1),
        np.stack([r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1],
                  1.0 - r[..., 0, 0] - r[..., 1, 1] + r[..., 2, 2],
                  r[..., 1, 0] - r[..., 0, 1]], -1),
    ], -2)
    diagonal = np.stack([trace, r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]], -1)
    best = np.argmax(diagonal, axis=-1)[..., None, None]
    quaternion = np.take_along_axis(candidates, np.broadcast_to(
        best, best.shape[:-2] + (1, 4)), axis=-2)[..., 0, :]
    quaternion /= np.linalg.norm(quaternion, axis=-1, keepdims=True)
    return np.where(quaternion[..., 3:] < 0, -quaternion, quaternion)


@dataclass(frozen=True)
class Extrinsic:
    """Rigid transform from the cloud frame into the model frame: p_model = R p_cloud + t."""

    rotation: np.ndarray  # (3, 3) float64
    translation: np.ndarray  # (3,) float64, metres

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> 'Extrinsic':
        """Build from the extrinsic_* parameters."""
        return cls(rotation=rotation_from_rpy(*settings.extrinsic_rpy_rad),
                   translation=np.array(settings.extrinsic_translation_m, dtype=np.float64))

    @property
    def is_identity(self) -> bool:
        """Return True for the identity transform."""
        return bool(np.array_equal(self.rotation, np.eye(3))
                    and not self.translation.any())

    @property
    def keeps_up(self) -> bool:
        """Return True when the rotation is about z only (boxes stay upright in the cloud)."""
        return bool(abs(self.rotation[2, 2] - 1.0) < 1e-12)

    def points_to_model(self, points: np.ndarray) -> np.ndarray:
        """Map (N, >=3) points in place (x, y, z columns) and return them."""
        if not self.is_identity:
            xyz = points[:, :3].astype(np.float64)  # (N, 3)
            points[:, :3] = xyz @ self.rotation.T + self.translation
        return points

    def boxes_to_cloud(self, boxes: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Return boxes (K, 7) in the cloud frame, and their quaternions (K, 4) when tilted.

        The yaw column is exact when the rotation keeps z up; otherwise the returned
        quaternions (x, y, z, w) are the full box orientations in the cloud frame.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)  # (K, 7)
        if self.is_identity:
            return boxes.astype(np.float32), None
        result = boxes.copy()
        result[:, :3] = (boxes[:, :3] - self.translation) @ self.rotation  # R^T (c - t)
        if self.keeps_up:
            yaw_offset = math.atan2(self.rotation[1, 0], self.rotation[0, 0])
            yaw = boxes[:, 6] - yaw_offset
            result[:, 6] = np.arctan2(np.sin(yaw), np.cos(yaw))
            result[:, 6] = np.where(result[:, 6] <= -math.pi, math.pi, result[:, 6])
            return result.astype(np.float32), None
        cos_yaw, sin_yaw = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
        box_rotation = np.zeros((len(boxes), 3, 3))  # (K, 3, 3) Rz(yaw) in the model frame
        box_rotation[:, 0, 0], box_rotation[:, 0, 1] = cos_yaw, -sin_yaw
        box_rotation[:, 1, 0], box_rotation[:, 1, 1] = sin_yaw, cos_yaw
        box_rotation[:, 2, 2] = 1.0
        in_cloud = np.einsum('ji,kjl->kil', self.rotation, box_rotation)  # R^T Rz(yaw)
        quaternions = rotation_to_quaternion(in_cloud)
        result[:, 6] = conversions.quaternion_to_yaw(quaternions)
        return result.astype(np.float32), quaternions


@dataclass(frozen=True)
class FrameSettings:
    """What the worker needs per frame, derived from NodeSettings and the model (immutable)."""

    settings: NodeSettings
    score_thresholds: Tuple[float, ...]
    max_detections: int
    nms: NMSConfig
    intensity_gain: float  # cloud intensity -> raw units the network expects
    extrinsic: Extrinsic

    @classmethod
    def build(cls, settings: NodeSettings, config: ModelConfig) -> 'FrameSettings':
        """Derive the per-frame settings."""
        model_nms = config.head.nms
        nms = NMSConfig(
            kind=model_nms.kind if settings.nms_kind == 'model' else settings.nms_kind,
            radius_m=tuple(r * settings.nms_radius_scale for r in model_nms.radius_m),
            iou_threshold=settings.nms_iou_threshold or model_nms.iou_threshold)
        gain = (settings.intensity_scale / config.point.intensity_scale
                if settings.intensity_scale > 0 else 1.0)
        return cls(
            settings=settings,
            score_thresholds=settings.class_score_thresholds(config.num_detection_classes),
            max_detections=settings.max_detections or config.head.max_objects,
            nms=nms, intensity_gain=gain, extrinsic=Extrinsic.from_settings(settings))


def points_for_model(points: np.ndarray, frame_settings: FrameSettings
                     ) -> Tuple[np.ndarray, int]:
    """Prepare finite cloud points for the network as the node does.

    Clouds over ``max_points`` are subsampled with a uniform stride, intensities multiplied by
    the gain from ``intensity_scale``, and x, y, z mapped by the extrinsic into the model frame.

    Args:
        points: (N, 4) x, y, z, intensity of the cloud (finite; a view is fine, never modified).
        frame_settings: the node's per-frame settings.

    Returns:
        ((M, 4) float32 model-frame points, an own copy; N - M points removed by subsampling).
    """
    max_points = frame_settings.settings.max_points
    kept = points[::math.ceil(len(points) / max_points)] if len(points) > max_points else points
    prepared = np.array(kept, dtype=np.float32)  # (M, 4) own copy, modified below
    if frame_settings.intensity_gain != 1.0:
        prepared[:, 3] *= frame_settings.intensity_gain
    return frame_settings.extrinsic.points_to_model(prepared), len(points) - len(prepared)


@dataclass
class Counters:
    """Cumulative counts shown in diagnostics; every update holds the lock."""

    clouds_in: int = 0
    images_in: int = 0
    frames_out: int = 0
    fused_frames: int = 0
    lidar_only_frames: int = 0
    dropped_frames: int = 0
    skipped_frames: int = 0
    bad_clouds: int = 0
    bad_images: int = 0
    empty_clouds: int = 0
    non_finite_points: int = 0
    points_out_of_range: int = 0
    points_subsampled: int = 0  # above max_points (node)
    pillar_points_capped: int = 0  # above the model's points per pillar (by design, no warning)
    pillars_capped: int = 0  # above the model's max_pillars
    intensity_out_of_range: int = 0
    time_jumps: int = 0
    over_budget: int = 0
    inference_errors: int = 0
    # Refused clouds by reason (conversions.CLOUD_REJECTIONS); their sum is bad_clouds.
    bad_cloud_missing_field: int = 0
    bad_cloud_duplicate_field: int = 0
    bad_cloud_unknown_datatype: int = 0
    bad_cloud_field_count: int = 0
    bad_cloud_field_offset: int = 0
    bad_cloud_point_step: int = 0
    bad_cloud_row_step: int = 0
    bad_cloud_data_size: int = 0
    # Refused images by reason (conversions.IMAGE_REJECTIONS); their sum is bad_images.
    bad_image_encoding: int = 0
    bad_image_empty: int = 0
    bad_image_step: int = 0
    bad_image_data_size: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def names(self) -> Tuple[str, ...]:
        """Return the counter names, in declaration order."""
        return tuple(name for name in self.__dataclass_fields__ if name != 'lock')

    def add(self, **increments: int) -> None:
        """Add to named counters."""
        with self.lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> Dict[str, int]:
        """Return a consistent copy of all counts."""
        with self.lock:
            return {name: getattr(self, name) for name in self.names()}


@dataclass(frozen=True)
class ImagePayload:
    """A received image: its header and an RGB view of its data."""

    header: Header
    rgb: np.ndarray  # (H, W, 3) uint8, possibly a strided view of the message data


@dataclass(frozen=True)
class FrameJob:
    """A synced frame handed to the worker."""

    frame: SyncedFrame
    queued_s: float  # time.monotonic() when queued


#: Counters whose increase within a diagnostics period makes the status WARN, with wording.
WARN_COUNTERS = (
    ('bad_clouds', 'malformed clouds'), ('bad_images', 'malformed images'),
    ('empty_clouds', 'empty clouds'), ('dropped_frames', 'dropped frames'),
    ('lidar_only_frames', 'LiDAR-only frames'), ('points_subsampled', 'points subsampled'),
    ('pillars_capped', 'pillars capped'), ('intensity_out_of_range', 'intensity out of range'),
    ('time_jumps', 'time jumps back'), ('over_budget', 'frames over budget'),
)


class PerceptionNode(Node):
    """ROS 2 node running the BEV fusion network on synced clouds and images.

    Args:
        node_name: ROS node name.
        **kwargs: passed to rclpy's Node (context, parameter_overrides, ...).

    Raises:
        StartupError: invalid parameters, unreadable weights or parameters that contradict
            the weights' metadata.
    """

    def __init__(self, node_name: str = 'perception_node', **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._warned_at: Dict[str, float] = {}
        self._last_error = ''
        self._last_latency_ms = float('nan')
        self.counters = Counters()
        self._stopping = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._input_topics = {'cloud': INPUT_POINTCLOUD_TOPIC, 'image': INPUT_IMAGE_TOPIC}
        try:
            self._start_up()
        except BaseException:  # a start-up error or a stop signal: leave nothing running
            try:
                self.destroy_node()
            except Exception:  # noqa: B902 - the context may be gone already
                pass
            raise

    def _start_up(self) -> None:
        """Load the weights, check the parameters, warm up, then advertise and subscribe."""
        settings = self._declare_parameters()
        weights_path = resolve_weights_path(settings.weights_path, settings.profile)
        if settings.cpu_threads:
            torch.set_num_threads(settings.cpu_threads)
        try:
            self._runtime = InferenceRuntime.from_weights(
                weights_path, device=settings.device, precision=settings.precision,
                torch_compile=settings.torch_compile, cuda_graphs=settings.cuda_graphs)
        except WeightsError as error:
            raise StartupError(f'cannot load weights: {error}') from error
        except (RuntimeError, ValueError) as error:
            raise StartupError(
                f'cannot start inference on {settings.device!r}: {error}') from error
        for notice in self._runtime.notices:
            self.get_logger().warning(notice)
        self._config = self._runtime.config
        self._metadata = self._runtime.metadata
        errors = check_against_model(settings, self._config.detection_classes,
                                     self._config.head.max_objects)
        if errors:
            raise StartupError(f'parameters contradict the weights {weights_path}: '
                               + '; '.join(errors))
        self._frame_settings = FrameSettings.build(settings, self._config)
        self._palette = np.asarray(self._config.semantic_palette, dtype=np.uint8)
        self._marker_colours = {
            name: MARKER_COLOURS[index % len(MARKER_COLOURS)]
            for index, name in enumerate(self._config.detection_classes)}
        self._previous_marker_count = 0

        started = time.perf_counter()
        try:
            self._runtime.warmup()
        except (RuntimeError, ValueError) as error:
            raise StartupError(f'the model of the weights {weights_path} fails on a synthetic '
                               f'frame: {type(error).__name__}: {error}') from error
        warmup_s = time.perf_counter() - started

        self._create_publishers(settings)
        self._publish_label_info()
        self._slot: LatestWinsSlot[FrameJob] = LatestWinsSlot()
        self._sync: LidarTriggeredSync = LidarTriggeredSync(settings.sync_settings())
        self._steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        self._create_subscriptions(settings)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics_previous = self.counters.snapshot()
        self._processing_ms: List[float] = []
        self._diagnostics_timer = self.create_timer(
            settings.diagnostics_period_s, self._publish_diagnostics, clock=self._steady_clock)
        self._worker = threading.Thread(target=self._work, name='bev_perception_worker',
                                        daemon=True)
        self._worker.start()
        provenance = self._metadata.get('provenance') or {}
        origin = ', '.join(f'{key} {provenance[key]}' for key in
                           ('dataset', 'date', 'git_rev', 'git_revision') if key in provenance)
        self.get_logger().info(
            f'ready: device {self._runtime.device}, precision {self._runtime.precision}, '
            f'weights {weights_path} ({origin or "no provenance recorded"}), classes '
            f'{", ".join(self._config.detection_classes)}, sync {settings.sync_policy}, '
            f'warm-up {warmup_s:.1f} s')

    # ------------------------------------------------------------------ set-up

    def _declare_parameters(self) -> NodeSettings:
        values = {}
        for spec in PARAMETERS:
            try:
                self.declare_parameter(spec.name, spec.default, descriptor(spec))
            except ParameterException as error:
                raise StartupError(f'parameter {spec.name}: {error}') from error
            value = self.get_parameter(spec.name).value
            values[spec.name] = list(value) if spec.kind.endswith('_array') else value
        try:
            return NodeSettings.from_values(values)
        except ValueError as error:
            raise StartupError(f'invalid parameters: {error}') from error

    def _create_publishers(self, settings: NodeSettings) -> None:
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                              history=HistoryPolicy.KEEP_LAST)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             history=HistoryPolicy.KEEP_LAST)

        def create(enabled, kind, topic, qos):
            return self.create_publisher(kind, topic, qos) if enabled else None

        self._detections_pub = create(settings.publish_detections, Detection3DArray,
                                      OUTPUT_TOPICS['detections'], reliable)
        self._semantic_pub = create(settings.publish_semantic, Image,
                                    OUTPUT_TOPICS['semantic'], reliable)
        self._semantic_color_pub = create(settings.publish_semantic_color, Image,
                                          OUTPUT_TOPICS['semantic_color'], reliable)
        self._markers_pub = create(settings.publish_markers, MarkerArray,
                                   OUTPUT_TOPICS['markers'], reliable)
        self._label_info_pub = self.create_publisher(
            LabelInfo, OUTPUT_TOPICS['label_info'], latched)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, reliable)
        self._timings_pub = create(settings.publish_debug, DiagnosticArray, TIMINGS_TOPIC,
                                   reliable)
        self._latency_pub = create(settings.publish_debug, Float64, LATENCY_TOPIC, reliable)

    def _input_qos(self, settings: NodeSettings) -> QoSProfile:
        reliability = (ReliabilityPolicy.BEST_EFFORT if settings.input_reliability == 'best_effort'
                       else ReliabilityPolicy.RELIABLE)
        return QoSProfile(depth=settings.qos_depth, reliability=reliability,
                          history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)

    def _create_subscriptions(self, settings: NodeSettings) -> None:
        qos = self._input_qos(settings)
        if settings.sync_policy == 'approximate':
            try:
                import message_filters
            except ImportError as error:
                raise StartupError(
                    "sync_policy 'approximate' needs the ROS 2 message_filters package, which "
                    'is not installed (apt install ros-$ROS_DISTRO-message-filters); or use '
                    "sync_policy 'lidar_triggered'") from error
            self._filter_subscribers = [
                message_filters.Subscriber(self, PointCloud2, INPUT_POINTCLOUD_TOPIC,
                                           qos_profile=qos),
                message_filters.Subscriber(self, Image, INPUT_IMAGE_TOPIC, qos_profile=qos)]
            self._approximate = message_filters.ApproximateTimeSynchronizer(
                self._filter_subscribers, settings.approximate_queue_size,
                settings.approximate_slop_s)
            self._approximate.registerCallback(self._on_approximate_pair)
            for stream, subscriber in zip(('cloud', 'image'), self._filter_subscribers):
                subscription = getattr(subscriber, 'sub', None)  # the rclpy subscription
                self._input_topics[stream] = getattr(subscription, 'topic_name',
                                                     self._input_topics[stream])
            return
        self._cloud_sub = self.create_subscription(
            PointCloud2, INPUT_POINTCLOUD_TOPIC, self._on_cloud, qos)
        self._image_sub = self.create_subscription(
            Image, INPUT_IMAGE_TOPIC, self._on_image, qos)
        self._input_topics = {'cloud': self._cloud_sub.topic_name,
                              'image': self._image_sub.topic_name}
        self._sync_timer = self.create_timer(SYNC_POLL_PERIOD_S, self._on_sync_poll,
                                             clock=self._steady_clock)

    # ------------------------------------------------------------------ parameters

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        values = self._frame_settings.settings.values()
        for parameter in parameters:
            if parameter.name in values:
                value = parameter.value
                values[parameter.name] = (list(value) if isinstance(values[parameter.name], list)
                                          and value is not None else value)
        try:
            settings = NodeSettings.from_values(values, self._config.num_detection_classes)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        errors = check_against_model(settings, self._config.detection_classes,
                                     self._config.head.max_objects)
        if errors:
            return SetParametersResult(successful=False, reason='; '.join(errors))
        previous = self._frame_settings
        self._frame_settings = FrameSettings.build(settings, self._config)
        self._sync.settings = settings.sync_settings()
        if self._frame_settings.score_thresholds != previous.score_thresholds:
            self._publish_label_info()
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks

    def _warn(self, kind: str, message: str) -> None:
        """Log a warning at most once per WARNING_PERIOD_S for each kind."""
        now = time.monotonic()
        if now - self._warned_at.get(kind, -math.inf) >= WARNING_PERIOD_S:
            self._warned_at[kind] = now
            self.get_logger().warning(message)

    def _cloud_fields(self) -> Tuple[str, str, str, str]:
        return ('x', 'y', 'z', self._frame_settings.settings.intensity_field)

    def _check_cloud(self, msg: PointCloud2) -> bool:
        """Cheaply check a cloud's fields and layout; count and warn when it is malformed."""
        try:
            conversions.pointcloud2_to_structured(msg, self._cloud_fields())
        except conversions.ConversionError as error:
            self._reject('cloud', msg, error)
            return False
        return True

    def _image_payload(self, msg: Image) -> Optional[ImagePayload]:
        try:
            return ImagePayload(header=msg.header, rgb=conversions.image_to_rgb(msg))
        except conversions.ConversionError as error:
            self._reject('image', msg, error)
            return None

    def _reject(self, stream: str, msg: Any, error: conversions.ConversionError) -> None:
        """Count a refused cloud or image by reason; warn (per reason) with topic and stamp.

        Args:
            stream: 'cloud' or 'image'.
            msg: the refused message.
            error: why (``kind`` picks the counter ``bad_<stream>_<kind>``).
        """
        counter = f'bad_{stream}_{error.kind}'
        increments = {'bad_clouds' if stream == 'cloud' else 'bad_images': 1}
        if counter in self.counters.names():
            increments[counter] = 1
        self.counters.add(**increments)
        what = 'a malformed point cloud' if stream == 'cloud' else 'an image'
        message = f'ignoring {what} {self._where(stream, msg, error.field)}: {error} [{counter}]'
        self._last_error = message
        self._warn(counter, message)

    def _where(self, stream: str, msg: Any, field_name: str = '') -> str:
        """Return 'on <topic> (stamp <s>, frame <id>[, field <name>])' of an input message."""
        stamp = msg.header.stamp
        frame_id = msg.header.frame_id
        if len(frame_id) > MAX_QUOTED_CHARS:
            frame_id = frame_id[:MAX_QUOTED_CHARS] + '...'
        return (f'on {self._input_topics[stream]} (stamp {stamp.sec}.{stamp.nanosec:09d}, '
                f'frame {frame_id!r}' + (f', field {field_name!r}' if field_name else '') + ')')

    def _on_cloud(self, msg: PointCloud2) -> None:
        self.counters.add(clouds_in=1)
        if not self._check_cloud(msg):
            return
        jumps = self._sync.counters.time_jumps
        frames = self._sync.add_cloud(
            stamp_to_seconds(msg.header.stamp.sec, msg.header.stamp.nanosec), msg,
            time.monotonic())
        self._after_sync(jumps, frames, 'cloud', msg)

    def _on_image(self, msg: Image) -> None:
        self.counters.add(images_in=1)
        payload = self._image_payload(msg)
        if payload is None:
            return
        jumps = self._sync.counters.time_jumps
        frames = self._sync.add_image(
            stamp_to_seconds(msg.header.stamp.sec, msg.header.stamp.nanosec), payload,
            time.monotonic())
        self._after_sync(jumps, frames, 'image', msg)

    def _on_sync_poll(self) -> None:
        self._dispatch(self._sync.poll(time.monotonic()))

    def _after_sync(self, jumps_before: int, frames: List[SyncedFrame], stream: str,
                    msg: Any) -> None:
        jumps = self._sync.counters.time_jumps - jumps_before
        if jumps:
            self.counters.add(time_jumps=jumps)
            self._warn('time_jumps', f'the stamp of the message {self._where(stream, msg)} '
                       'steps back by more than time_jump_threshold_s (bag loop, driver '
                       'restart, or the stamps before it were ahead): synchronisation buffers '
                       'reset')
        self._dispatch(frames)

    def _on_approximate_pair(self, cloud: PointCloud2, image: Image) -> None:
        self.counters.add(clouds_in=1, images_in=1)
        if not self._check_cloud(cloud):
            return
        payload = self._image_payload(image)
        cloud_stamp = stamp_to_seconds(cloud.header.stamp.sec, cloud.header.stamp.nanosec)
        image_stamp = stamp_to_seconds(image.header.stamp.sec, image.header.stamp.nanosec)
        self._dispatch([SyncedFrame(
            cloud=cloud, cloud_stamp_s=cloud_stamp, image=payload,
            image_stamp_s=image_stamp if payload is not None else None,
            nearest_image_offset_s=image_stamp - cloud_stamp, received_s=time.monotonic())])

    def _has_subscribers(self) -> bool:
        publishers = (self._detections_pub, self._semantic_pub, self._semantic_color_pub,
                      self._markers_pub, self._timings_pub, self._latency_pub)
        return any(pub is not None and pub.get_subscription_count() > 0 for pub in publishers)

    def _dispatch(self, frames: List[SyncedFrame]) -> None:
        for frame in frames:
            if (self._frame_settings.settings.skip_when_no_subscribers
                    and not self._has_subscribers()):
                self.counters.add(skipped_frames=1)
                continue
            if frame.lidar_only:
                offset = frame.nearest_image_offset_s
                self._warn('lidar_only', 'no image within max_image_age_s of the cloud '
                           + ('(no image received)' if offset is None else
                              f'(nearest image stamp {offset * 1e3:+.0f} ms from the cloud)')
                           + ': running LiDAR-only')
            if self._slot.put(FrameJob(frame=frame, queued_s=time.monotonic())) is not None:
                self.counters.add(dropped_frames=1)
                self._warn('dropped_frames', 'inference is slower than the input: dropping '
                                             'the oldest waiting frame (latest wins)')

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while not self._stopping.is_set():
            job = self._slot.get(timeout_s=0.1)
            if job is None:
                continue
            try:
                self._process(job)
            except Exception as error:  # noqa: B902 - the worker must survive anything
                if self._stopping.is_set():
                    return
                self.counters.add(inference_errors=1)
                self._last_error = f'{type(error).__name__}: {error}'
                self._warn('inference_errors', f'frame failed: {self._last_error}\n'
                           + traceback.format_exc(limit=3))

    def _process(self, job: FrameJob) -> None:
        started = time.perf_counter()
        frame_settings = self._frame_settings
        settings = frame_settings.settings
        cloud_msg: PointCloud2 = job.frame.cloud
        timings = {'queue': (time.monotonic() - job.queued_s) * 1e3,
                   'sync_wait': (job.queued_s - job.frame.received_s) * 1e3}
        points = self._cloud_points(cloud_msg, frame_settings)
        if points is None:
            return
        image: Optional[ImagePayload] = job.frame.image
        rgb = None if image is None else np.ascontiguousarray(image.rgb)
        timings['convert'] = (time.perf_counter() - started) * 1e3
        if self._runtime.config.head.nms != frame_settings.nms:
            self._runtime.config = replace(
                self._runtime.config,
                head=replace(self._runtime.config.head, nms=frame_settings.nms))
        result = self._runtime(points, rgb, score_thresholds=frame_settings.score_thresholds,
                               max_detections=frame_settings.max_detections)
        timings.update(result.timings_ms)
        if len(points) == 0:  # no LiDAR evidence: no boxes (the image still gives semantics)
            result = replace(result, boxes=np.zeros((0, 7), np.float32),
                             scores=np.zeros(0, np.float32), class_ids=np.zeros(0, np.int64),
                             class_names=[])
        self.counters.add(
            points_out_of_range=result.overflow.out_of_range_dropped,
            non_finite_points=result.overflow.non_finite_dropped,
            pillar_points_capped=result.overflow.points_capped,
            pillars_capped=result.overflow.pillars_capped)
        if result.overflow.pillars_capped:
            self._warn('pillars_capped', f'{result.overflow.pillars_capped} pillars over the '
                       f"model's max_pillars {self._config.grid.max_pillars} were dropped")
        publish_started = time.perf_counter()
        self._publish_results(cloud_msg.header, image, result, frame_settings)
        timings['publish'] = (time.perf_counter() - publish_started) * 1e3
        processing_ms = (time.perf_counter() - started) * 1e3
        timings['processing'] = processing_ms
        self.counters.add(frames_out=1, fused_frames=int(not result.lidar_only),
                          lidar_only_frames=int(result.lidar_only),
                          over_budget=int(processing_ms > settings.inference_budget_ms))
        with self.counters.lock:
            self._processing_ms.append(processing_ms)
        if processing_ms > settings.inference_budget_ms:
            self._warn('over_budget', f'frame took {processing_ms:.0f} ms, over the '
                       f'{settings.inference_budget_ms:.0f} ms budget')
        self._publish_timings(cloud_msg.header, job.frame, result, timings, len(points))

    def _cloud_points(self, msg: PointCloud2, frame_settings: FrameSettings
                      ) -> Optional[np.ndarray]:
        """Return (N, 4) float32 points in the model frame, or None for a malformed cloud."""
        settings = frame_settings.settings
        try:
            cloud = conversions.pointcloud2_to_array_with_stats(msg, self._cloud_fields())
        except conversions.ConversionError as error:
            self._reject('cloud', msg, error)
            return None
        points = cloud.points
        self.counters.add(non_finite_points=cloud.num_non_finite)
        if len(points) == 0:
            self.counters.add(empty_clouds=1)
            self._warn('empty_clouds', f"empty point cloud {self._where('cloud', msg)} "
                       f'({cloud.num_input_points} points, {cloud.num_non_finite} non-finite): '
                       'publishing no boxes')
        num_finite = len(points)
        points, subsampled = points_for_model(points, frame_settings)
        if subsampled:
            self.counters.add(points_subsampled=subsampled)
            self._warn('points_subsampled', f'cloud of {num_finite} points subsampled to '
                       f'{len(points)} (max_points {settings.max_points})')
        if len(points):
            scaled_max = float(points[:, 3].max()) * self._config.point.intensity_scale
            if scaled_max > MAX_PLAUSIBLE_SCALED_INTENSITY:
                self.counters.add(intensity_out_of_range=1)
                self._warn('intensity', f'intensities reach {scaled_max:.1f} after scaling; '
                           'the weights expect 0..1: set intensity_scale for this driver')
        return points

    def _publish_results(self, cloud_header: Header, image: Optional[ImagePayload],
                         result: FrameResult, frame_settings: FrameSettings) -> None:
        """Build and publish the outputs that have subscribers (nothing is sent to none)."""
        detections, markers, mono, colour = (_with_subscribers(publisher) for publisher in (
            self._detections_pub, self._markers_pub, self._semantic_pub,
            self._semantic_color_pub))
        if not (detections or markers or mono or colour):
            return
        boxes, quaternions = frame_settings.extrinsic.boxes_to_cloud(result.boxes)
        if detections:
            msg = conversions.detections_to_msg(cloud_header, boxes, result.scores,
                                                result.class_names)
            if quaternions is not None:
                for detection, quaternion in zip(msg.detections, quaternions):
                    for pose in (detection.bbox.center, detection.results[0].pose.pose):
                        _set_orientation(pose, quaternion)
            self._detections_pub.publish(msg)
        if markers:  # stale markers: those of the last published array
            marker_array = conversions.detections_to_markers(
                cloud_header, boxes, result.scores, result.class_names,
                previous_count=self._previous_marker_count, class_colours=self._marker_colours)
            if quaternions is not None:
                for marker, quaternion in zip(marker_array.markers[0:2 * len(boxes):2],
                                              quaternions):
                    _set_orientation(marker.pose, quaternion)
            self._previous_marker_count = len(boxes)
            self._markers_pub.publish(marker_array)
        if result.semantic is None or image is None or not (mono or colour):
            return
        ids = resize_ids_nearest(result.semantic, frame_settings.settings.semantic_output_hw)
        if mono:
            self._semantic_pub.publish(conversions.semantic_to_mono8(ids, image.header))
        if colour:
            self._semantic_color_pub.publish(
                conversions.semantic_to_color(ids, self._palette, image.header))

    def _publish_timings(self, cloud_header: Header, frame: SyncedFrame, result: FrameResult,
                         timings: Dict[str, float], num_points: int) -> None:
        now = self.get_clock().now()
        end_to_end_ms = (now.nanoseconds - (cloud_header.stamp.sec * 10**9
                                            + cloud_header.stamp.nanosec)) * 1e-6
        with self.counters.lock:
            self._last_latency_ms = end_to_end_ms
        if self._timings_pub is None:
            return
        values = [KeyValue(key=f'{stage}_ms', value=f'{value:.3f}')
                  for stage, value in timings.items()]
        values += [
            KeyValue(key='end_to_end_ms', value=f'{end_to_end_ms:.3f}'),
            KeyValue(key='lidar_only', value=str(result.lidar_only).lower()),
            KeyValue(key='num_points', value=str(num_points)),
            KeyValue(key='num_detections', value=str(len(result.boxes))),
            KeyValue(key='image_offset_ms', value='' if frame.image_stamp_s is None else
                     f'{(frame.image_stamp_s - frame.cloud_stamp_s) * 1e3:.3f}'),
        ]
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name='timings',
                                  message='per-stage times in ms', values=values)
        self._timings_pub.publish(DiagnosticArray(header=cloud_header, status=[status]))
        self._latency_pub.publish(Float64(data=end_to_end_ms))

    # ------------------------------------------------------------------ status

    def _publish_label_info(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._label_info_pub.publish(conversions.label_info_msg(
            header, self._config.detection_classes,
            min(self._frame_settings.score_thresholds)))

    def diagnostic_status(self) -> DiagnosticStatus:
        """Return the health as one DiagnosticStatus.

        Values are counts since start-up; the level and message reflect what changed since the
        previous call (one call per diagnostics period).
        """
        counts = self.counters.snapshot()
        delta = {name: counts[name] - self._diagnostics_previous.get(name, 0) for name in counts}
        self._diagnostics_previous = counts
        with self.counters.lock:
            processing, self._processing_ms = self._processing_ms, []
            latency = self._last_latency_ms
        problems = [f'{delta[name]} {text}' + _reasons(name, delta)
                    for name, text in WARN_COUNTERS if delta[name]]
        worker_alive = self._worker is not None and self._worker.is_alive()
        if delta['inference_errors'] or not worker_alive:
            level = DiagnosticStatus.ERROR
            problems.insert(0, f'{delta["inference_errors"]} failed frames'
                            if worker_alive else 'inference worker stopped')
        elif problems:
            level = DiagnosticStatus.WARN
        elif counts['clouds_in'] == 0:
            level = DiagnosticStatus.WARN
            problems.append('no point cloud received yet')
        else:
            level = DiagnosticStatus.OK
        message = ', '.join(problems) if problems else (
            f'{delta["frames_out"]} frames ({delta["fused_frames"]} fused) since last report')
        values = [KeyValue(key=name, value=str(value)) for name, value in counts.items()]
        values += [
            KeyValue(key='last_error', value=self._last_error),
            KeyValue(key='last_end_to_end_ms', value=f'{latency:.1f}'),
            KeyValue(key='mean_processing_ms',
                     value=f'{np.mean(processing):.1f}' if processing else ''),
            KeyValue(key='device', value=str(self._runtime.device)),
            KeyValue(key='precision', value=self._runtime.precision),
        ]
        return DiagnosticStatus(level=level, name=f'{self.get_name()}: bev_perception',
                                message=message, hardware_id=str(self._runtime.device),
                                values=values)

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray(status=[self.diagnostic_status()])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    # ------------------------------------------------------------------ shutdown

    def stop(self) -> None:
        """Stop and join the worker thread (idempotent)."""
        self._stopping.set()
        if hasattr(self, '_slot'):
            self._slot.close()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=30.0)

    def destroy_node(self) -> None:
        """Stop the worker, then destroy the node."""
        self.stop()
        super().destroy_node()


def _reasons(counter: str, delta: Dict[str, int]) -> str:
    """Return ' (reason n, ...)' of the per-reason counts behind bad_clouds / bad_images."""
    prefix = {'bad_clouds': 'bad_cloud_', 'bad_images': 'bad_image_'}.get(counter)
    if prefix is None:
        return ''
    reasons = [f'{name[len(prefix):]} {count}' for name, count in delta.items()
               if name.startswith(prefix) and count]
    return f' ({", ".join(reasons)})' if reasons else ''


def _with_subscribers(publisher: Any) -> bool:
    """Return True for an enabled publisher that has a matched subscription."""
    return publisher is not None and publisher.get_subscription_count() > 0


def _set_orientation(pose, quaternion: np.ndarray) -> None:
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
        float(v) for v in quaternion)


def resize_ids_nearest(ids: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Resize (H, W) class ids to size_hw by nearest neighbour; a 0 in size_hw keeps the size."""
    height, width = size_hw
    if height == 0 or width == 0 or (height, width) == ids.shape:
        return ids
    rows = ((np.arange(height) + 0.5) * ids.shape[0] / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * ids.shape[1] / width).astype(np.int64)
    rows, cols = np.minimum(rows, ids.shape[0] - 1), np.minimum(cols, ids.shape[1] - 1)
    if height <= ids.shape[0]:  # rows first: fewer pixels left to gather one by one
        return ids[rows][:, cols]
    # Growing: widen the source rows, then copy whole rows (1.5x faster than fancy indexing).
    return np.take(np.take(ids, cols, axis=1), rows, axis=0)


def params_files(args: List[str]) -> List[str]:
    """Return the ``--params-file`` paths among the ROS arguments of a command line."""
    paths = []
    ros_args = False
    for index, arg in enumerate(args):
        if arg == '--ros-args':
            ros_args = True
        elif arg == '--':
            ros_args = False
        elif ros_args and arg == '--params-file' and index + 1 < len(args):
            paths.append(args[index + 1])
    return paths


def check_params_files(args: List[str]) -> Optional[str]:
    """Return why a ``--params-file`` of a command line is unusable (missing, not YAML), or None.

    rclpy.init would refuse it with an RCLError; this names the file and the YAML problem.
    """
    for path in params_files(args):
        if not os.path.exists(path):
            return f'params file {path!r} does not exist'
        if not os.path.isfile(path):
            return f'params file {path!r} is not a file'
        try:
            import yaml

            with open(path, encoding='utf-8') as stream:
                yaml.safe_load(stream)
        except ImportError:
            return None  # no PyYAML: rclpy.init will say it
        except (OSError, UnicodeDecodeError) as read_error:
            return f'cannot read params file {path!r}: {read_error}'
        except yaml.YAMLError as yaml_error:
            mark = getattr(yaml_error, 'problem_mark', None)
            problem = getattr(yaml_error, 'problem', None) or str(yaml_error)
            place = '' if mark is None else f' (line {mark.line + 1}, column {mark.column + 1})'
            return f'params file {path!r} is not valid YAML: {problem}{place}'
    return None


def explain_init_error(error: Exception, args: List[str]) -> str:
    """Say in one line why rclpy.init refused a command line."""
    problem = check_params_files(args)
    if problem is not None:
        return problem
    text = ' '.join(str(error).split())
    text = re.sub(r', at \S+:\d+', '', text)  # rcl's source locations
    return f'invalid ROS arguments: {text}'


def _raise_stop(signum: int, frame: Any) -> None:
    raise StopRequested(signum)


def _ignore_signal(signum: int, frame: Any) -> None:
    pass  # stopping already: let the clean-up finish


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until SIGINT/SIGTERM; return the process exit code.

    0 after a signal (at any moment: during start-up too), 1 with one ``cannot start: ...``
    line when the command line, a parameter or the weights are unusable.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)  # rclpy.init chains its own handlers to these
    logger = rclpy.logging.get_logger('perception_node')
    node = None
    command_line = list(sys.argv if args is None else args)
    try:
        problem = check_params_files(command_line)
        if problem is not None:
            logger.fatal(f'cannot start: {problem}')
            return 1
        try:
            rclpy.init(args=args)
        except _rclpy.RCLError as error:
            logger.fatal(f'cannot start: {explain_init_error(error, command_line)}')
            return 1
        node = PerceptionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except StartupError as error:
        logger.fatal(f'cannot start: {error}')
        return 1
    except (StopRequested, KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: B902 - a signal during start-up invalidates the context
        if rclpy.ok():
            raise
    finally:
        for signum in STOP_SIGNALS:
            signal.signal(signum, _ignore_signal)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
