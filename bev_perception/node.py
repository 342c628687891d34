"""The BEV perception node: LiDAR + camera in, 3D detections and semantic images out.

Topics: ``bev_perception.topics`` (names and types); outputs: ``bev_perception.outputs``; a
frame's computation: ``bev_perception.pipeline``; health counters: ``bev_perception.health``.

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

from dataclasses import dataclass, replace
import os
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
        """Leave quietly with exit code 0: nothing has been started yet.

        ``os._exit``, not ``sys.exit``: a signal that lands while an extension module sets
        itself up (rclpy's binds its C++ types) would have its SystemExit turned into an
        ImportError with a traceback and exit code 1.
        """
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)

    signal.signal(signal.SIGINT, _stop_while_importing)
    signal.signal(signal.SIGTERM, _stop_while_importing)

from bev_perception import conversions
from bev_perception.calibration import CalibrationError, CameraIntrinsics
from bev_perception.health import (Counters, describe_input, ERROR, HealthReport, OK,
                                   ThrottledLog, WARN)
from bev_perception.inference import InferenceRuntime
from bev_perception.node_params import (check_params_files, descriptor, explain_init_error,
                                        NodeSettings, PARAMETERS)
from bev_perception.outputs import OutputPublishers
from bev_perception.pipeline import FrameOutput, load_pipeline, PipelineError
from bev_perception.sync import (LatestWinsSlot, LidarTriggeredSync, stamp_to_seconds,
                                 SyncedFrame)
from bev_perception.topics import INPUT_TOPICS, NODE_NAME
from bev_perception.transforms import TransformTree
from bev_perception.weights import describe_provenance
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
import torch

#: Seconds between two warnings of the same kind.
WARNING_PERIOD_S = 5.0
#: Period of the timer that ends expired waits for images (seconds, steady clock).
SYNC_POLL_PERIOD_S = 0.01
#: Signals that stop the node cleanly (exit code 0).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Read-only parameters the runtime may fall back from (set to what runs after start-up).
FALLBACK_PARAMETERS = ('device', 'precision', 'cuda_graphs')
#: health levels -> DiagnosticStatus levels
LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


class StartupError(Exception):
    """The node cannot start; the message says why and what to change."""


class StopRequested(SystemExit):
    """SIGINT or SIGTERM arrived: stop cleanly. A SystemExit with code 0, never a traceback."""

    def __init__(self, signum: int) -> None:
        super().__init__(0)
        self.signum = signum


@dataclass(frozen=True)
class ImagePayload:
    """A received image: its header and an RGB view of its data."""

    header: Header
    rgb: np.ndarray  # (H, W, 3) uint8, possibly a strided view of the message data


class PerceptionNode(Node):
    """ROS 2 node running the BEV fusion network on synced clouds and images.

    A frame's path: ``_on_cloud`` / ``_on_image`` (executor: check, pair) -> ``_dispatch``
    (latest-wins slot) -> ``_process`` (worker: parse, ``FramePipeline.prepare`` and ``run``)
    -> ``OutputPublishers.publish_frame`` and ``_publish_timings``.

    Args:
        node_name: ROS node name.
        **kwargs: passed to rclpy's Node (context, parameter_overrides, ...).

    Raises:
        StartupError: invalid parameters, unreadable weights or parameters that contradict
            the weights' metadata.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._warn = ThrottledLog(self.get_logger().warning, WARNING_PERIOD_S)
        self._last_error = ''
        self.counters = Counters()
        self._health = HealthReport()
        self._stopping = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._input_topics = {'cloud': INPUT_TOPICS['pointcloud'], 'image': INPUT_TOPICS['image']}
        self._camera: Optional[CameraIntrinsics] = None  # the latest usable camera_info
        self._camera_frame = ''  # its header's frame (the camera's optical frame)
        self._tf: Optional[TransformTree] = None  # /tf and /tf_static, when use_tf
        self._camera_pose_source = 'parameters'
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
        if settings.sync_policy == 'approximate':
            _message_filters()  # before the weights: a missing package is said at once
        if settings.cpu_threads:
            torch.set_num_threads(settings.cpu_threads)
        try:
            self._pipeline, weights_path = load_pipeline(settings,
                                                         notify=self.get_logger().warning)
        except PipelineError as error:
            raise StartupError(str(error)) from error
        runtime = self._pipeline.runtime
        settings = self._settle_fallbacks(settings, runtime)
        if settings != self._pipeline.settings:  # a fallback changed device or precision
            self._pipeline.configure(settings)
        self._runtime, self._config = runtime, runtime.config

        started = time.perf_counter()
        try:
            runtime.warmup()
        except (RuntimeError, ValueError) as error:
            raise StartupError(f'the model of the weights {weights_path} fails on a synthetic '
                               f'frame: {type(error).__name__}: {error}') from error
        warmup_s = time.perf_counter() - started

        self._outputs = OutputPublishers(self, settings, self._config)
        self._publish_label_info()
        # Synced frames for the worker, with the time.monotonic() of queueing.
        self._slot: LatestWinsSlot[Tuple[SyncedFrame, float]] = LatestWinsSlot()
        self._sync: LidarTriggeredSync = LidarTriggeredSync(settings.sync_settings())
        self._steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        self._create_subscriptions(settings)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics_timer = self.create_timer(
            settings.diagnostics_period_s, self._publish_diagnostics, clock=self._steady_clock)
        self._worker = threading.Thread(target=self._work, name='bev_perception_worker',
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'ready: device {runtime.device}, precision {runtime.precision}, weights '
            f'{weights_path} ({describe_provenance(runtime.metadata)}), classes '
            f'{", ".join(self._config.detection_classes)}, sync {settings.sync_policy}, '
            f'warm-up {warmup_s:.1f} s')

    # ------------------------------------------------------------------ set-up

    def _declare_parameters(self) -> NodeSettings:
        values = {}
        for spec in PARAMETERS:
            writable = replace(spec, read_only=False) if spec.name in FALLBACK_PARAMETERS else spec
            try:
                self.declare_parameter(spec.name, spec.default, descriptor(writable))
            except ParameterException as error:
                raise StartupError(f'parameter {spec.name}: {error}') from error
            value = self.get_parameter(spec.name).value
            values[spec.name] = list(value) if spec.kind.endswith('_array') else value
        try:
            return NodeSettings.from_values(values)
        except ValueError as error:
            raise StartupError(f'invalid parameters: {error}') from error

    def _settle_fallbacks(self, settings: NodeSettings,
                          runtime: InferenceRuntime) -> NodeSettings:
        """Set device, precision and cuda_graphs to what runs, then make them read-only."""
        running = {'precision': runtime.precision, 'cuda_graphs': runtime.cuda_graphs,
                   'device': (settings.device if runtime.device.type in settings.device
                              else str(runtime.device))}
        changed = [Parameter(name, value=value) for name, value in running.items()
                   if getattr(settings, name) != value]
        if changed:
            self.set_parameters(changed)
        for spec in PARAMETERS:
            if spec.name in FALLBACK_PARAMETERS:
                self.set_descriptor(spec.name, descriptor(spec))
        return replace(settings, **running)

    def _input_qos(self, settings: NodeSettings) -> QoSProfile:
        reliability = (ReliabilityPolicy.BEST_EFFORT if settings.input_reliability == 'best_effort'
                       else ReliabilityPolicy.RELIABLE)
        return QoSProfile(depth=settings.qos_depth, reliability=reliability,
                          history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)

    def _create_subscriptions(self, settings: NodeSettings) -> None:
        qos = self._input_qos(settings)
        self._camera_info_sub = self.create_subscription(
            CameraInfo, INPUT_TOPICS['camera_info'], self._on_camera_info, qos)
        if settings.use_tf:
            self._subscribe_tf()
        if settings.sync_policy == 'approximate':
            message_filters = _message_filters()
            self._filter_subscribers = [
                message_filters.Subscriber(self, PointCloud2, INPUT_TOPICS['pointcloud'],
                                           qos_profile=qos),
                message_filters.Subscriber(self, Image, INPUT_TOPICS['image'], qos_profile=qos)]
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
            PointCloud2, INPUT_TOPICS['pointcloud'], self._on_cloud, qos)
        self._image_sub = self.create_subscription(
            Image, INPUT_TOPICS['image'], self._on_image, qos)
        self._input_topics = {'cloud': self._cloud_sub.topic_name,
                              'image': self._image_sub.topic_name}
        self._sync_timer = self.create_timer(SYNC_POLL_PERIOD_S, self._on_sync_poll,
                                             clock=self._steady_clock)

    # ------------------------------------------------------------------ parameters

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        values = self._pipeline.settings.values()
        for parameter in parameters:
            if parameter.name in values:
                value = parameter.value
                values[parameter.name] = (list(value) if isinstance(values[parameter.name], list)
                                          and value is not None else value)
        try:
            settings = NodeSettings.from_values(values, self._config.num_detection_classes)
            previous = self._pipeline.frame_settings
            self._pipeline.configure(settings)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self._sync.settings = settings.sync_settings()
        if self._pipeline.frame_settings.score_thresholds != previous.score_thresholds:
            self._publish_label_info()
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks

    def _cloud_fields(self) -> Tuple[str, ...]:
        return self._pipeline.settings.cloud_fields()

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
        return describe_input(self._input_topics[stream], msg.header, field_name)

    def _on_cloud(self, msg: PointCloud2) -> None:
        self.counters.add(clouds_in=1)
        if self._check_cloud(msg):
            self._add_to_sync('cloud', msg, msg)

    def _on_image(self, msg: Image) -> None:
        self.counters.add(images_in=1)
        payload = self._image_payload(msg)
        if payload is not None:
            self._add_to_sync('image', msg, payload)

    def _subscribe_tf(self) -> None:
        """Follow /tf and /tf_static for the camera pose (tf2_msgs is optional)."""
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.get_logger().info('tf2_msgs is not installed: the camera pose comes from '
                                   'camera_position_m / camera_rpy_rad')
            return
        self._tf = TransformTree()
        reliable = {'reliability': ReliabilityPolicy.RELIABLE, 'history': HistoryPolicy.KEEP_LAST,
                    'depth': 100}
        self._tf_subscriptions = [
            self.create_subscription(
                TFMessage, '/tf', lambda msg: self._on_tf(msg, static=False),
                QoSProfile(durability=DurabilityPolicy.VOLATILE, **reliable)),
            self.create_subscription(
                TFMessage, '/tf_static', lambda msg: self._on_tf(msg, static=True),
                QoSProfile(durability=DurabilityPolicy.TRANSIENT_LOCAL, **reliable))]

    def _on_tf(self, msg: Any, static: bool) -> None:
        refused = self._tf.update_from_message(msg, static, time.monotonic())
        self.counters.add(transforms_in=len(msg.transforms), bad_transforms=len(refused))
        if refused:
            topic = '/tf_static' if static else '/tf'
            self._warn('bad_transforms', f'refused a transform on {topic}: {refused[0]}')

    def _camera_pose(self, cloud_frame: str, stamp_s: float
                     ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """Return (R, t) cloud frame -> camera optical frame from /tf, None: the parameters.

        ``stamp_s`` is the image's stamp: a moving mount is taken where it was then.
        """
        pose = (None if self._tf is None or not self._camera_frame
                else self._tf.lookup(self._camera_frame, cloud_frame, time.monotonic(),
                                     stamp_s))
        if pose is not None:
            self._camera_pose_source = f'/tf {cloud_frame} -> {self._camera_frame}'
        elif self._tf is not None and self._camera_frame:
            self._camera_pose_source = (f'parameters (/tf does not link {cloud_frame!r} and '
                                        f'{self._camera_frame!r})')
        return pose

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.counters.add(camera_infos_in=1)
        try:
            self._camera = CameraIntrinsics.from_camera_info(
                msg.width, msg.height, msg.k, msg.distortion_model, msg.d)
            self._camera_frame = msg.header.frame_id
        except CalibrationError as error:
            self.counters.add(bad_camera_info=1)
            self._warn('bad_camera_info', f'refused camera_info on '
                       f'{self._camera_info_sub.topic_name}: {error}')

    def _on_sync_poll(self) -> None:
        self._dispatch(self._sync.poll(time.monotonic()))

    def _add_to_sync(self, stream: str, msg: Any, payload: Any) -> None:
        """Give a checked message to the LiDAR-triggered sync; dispatch the frames it completes."""
        jumps_before = self._sync.counters.time_jumps
        add = self._sync.add_cloud if stream == 'cloud' else self._sync.add_image
        frames = add(stamp_to_seconds(msg.header.stamp.sec, msg.header.stamp.nanosec), payload,
                     time.monotonic())
        jumps = self._sync.counters.time_jumps - jumps_before
        if jumps:
            self.counters.add(time_jumps=jumps)
            self._warn('time_jumps', f'the stamp of the message {self._where(stream, msg)} '
                       'steps back by more than time_jump_threshold_s (bag loop, driver '
                       'restart, or the stamps before it were ahead): synchronisation buffers '
                       'reset')
        self._dispatch(frames)

    def _on_approximate_pair(self, cloud: PointCloud2, image: Image) -> None:
        """Run a pair from message_filters; a pair whose image is refused is not run."""
        self.counters.add(clouds_in=1, images_in=1)
        if not self._check_cloud(cloud):
            return
        payload = self._image_payload(image)
        if payload is None:  # approximate sync never runs LiDAR-only
            self.counters.add(unpaired_clouds=1)
            self._warn('unpaired_clouds', f"skipping the cloud {self._where('cloud', cloud)}: "
                       'its approximate-sync partner image was refused (see the image warning)')
            return
        cloud_stamp = stamp_to_seconds(cloud.header.stamp.sec, cloud.header.stamp.nanosec)
        image_stamp = stamp_to_seconds(image.header.stamp.sec, image.header.stamp.nanosec)
        self._dispatch([SyncedFrame(
            cloud=cloud, cloud_stamp_s=cloud_stamp, image=payload, image_stamp_s=image_stamp,
            nearest_image_offset_s=image_stamp - cloud_stamp, received_s=time.monotonic())])

    def _dispatch(self, frames: List[SyncedFrame]) -> None:
        for frame in frames:
            if (self._pipeline.settings.skip_when_no_subscribers
                    and not self._outputs.any_subscribed()):
                self.counters.add(skipped_frames=1)
                continue
            if frame.lidar_only:
                offset = frame.nearest_image_offset_s
                self._warn('lidar_only', 'no image within max_image_age_s of the cloud '
                           + ('(no image received)' if offset is None else
                              f'(nearest image stamp {offset * 1e3:+.0f} ms from the cloud)')
                           + ': running LiDAR-only')
            if self._slot.put((frame, time.monotonic())) is not None:
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
                self._process(*job)
            except Exception as error:  # noqa: B902 - the worker must survive anything
                if self._stopping.is_set():
                    return
                self.counters.add(inference_errors=1)
                self._last_error = f'{type(error).__name__}: {error}'
                self._warn('inference_errors', f'frame failed: {self._last_error}\n'
                           + traceback.format_exc(limit=3))

    def _process(self, frame: SyncedFrame, queued_s: float) -> None:
        """Parse, prepare, infer and publish one synced frame (worker thread)."""
        started = time.perf_counter()
        frame_settings = self._pipeline.frame_settings  # one set of parameters per frame
        settings = frame_settings.settings
        cloud_msg: PointCloud2 = frame.cloud
        timings = {'queue': (time.monotonic() - queued_s) * 1e3,
                   'sync_wait': (queued_s - frame.received_s) * 1e3}
        try:
            cloud = conversions.pointcloud2_to_array_with_stats(cloud_msg, self._cloud_fields())
        except conversions.ConversionError as error:
            self._reject('cloud', cloud_msg, error)
            return
        self.counters.add(non_finite_points=cloud.num_non_finite)
        if len(cloud.points) == 0:
            self.counters.add(empty_clouds=1)
            self._warn('empty_clouds', f"empty point cloud {self._where('cloud', cloud_msg)} "
                       f'({cloud.num_input_points} points, {cloud.num_non_finite} non-finite): '
                       'publishing no boxes')
        prepared = self._pipeline.prepare(cloud.points, frame_settings)
        if prepared.num_subsampled:
            self.counters.add(points_subsampled=prepared.num_subsampled)
            self._warn('points_subsampled', f'cloud of {len(cloud.points)} points subsampled '
                       f'to {len(prepared.points)} (max_points {settings.max_points})')
        if prepared.intensity_out_of_range:
            self.counters.add(intensity_out_of_range=1)
            self._warn('intensity', f'intensities reach {prepared.max_scaled_intensity:.1f} '
                       'after scaling; the weights expect 0..1: set intensity_scale for this '
                       'driver')
        image: Optional[ImagePayload] = frame.image
        rgb = None if image is None else np.ascontiguousarray(image.rgb)
        timings['convert'] = (time.perf_counter() - started) * 1e3
        # The /tf lookup only where the weights will place this image by its calibration.
        placed = rgb is not None and self._pipeline.places_images(self._camera)
        geometry = (self._pipeline.camera_geometry(
            self._camera, rgb.shape[:2], frame_settings,
            self._camera_pose(cloud_msg.header.frame_id, stamp_to_seconds(
                image.header.stamp.sec, image.header.stamp.nanosec))) if placed else None)
        output = self._pipeline.run(prepared, rgb, frame_settings, geometry)
        result = output.result
        if output.image_uncalibrated:
            self.counters.add(uncalibrated_images=1)
            self._warn('uncalibrated_images', 'these weights fuse by camera calibration and no '
                       f'usable camera_info for this {rgb.shape[1]}x{rgb.shape[0]} image came on '
                       f'{self._camera_info_sub.topic_name}: running LiDAR-only')
        if output.unfamiliar_camera:
            self.counters.add(unfamiliar_camera_frames=1)
            self._warn('unfamiliar_camera', 'the camera lies outside the range these weights '
                       'were trained with, fused results may suffer: '
                       + '; '.join(output.unfamiliar_camera))
        timings.update(result.timings_ms)
        self.counters.add(
            points_out_of_range=result.overflow.out_of_range_dropped,
            non_finite_points=result.overflow.non_finite_dropped,
            pillar_points_capped=result.overflow.points_capped,
            pillars_capped=result.overflow.pillars_capped)
        if result.overflow.pillars_capped:
            self._warn('pillars_capped', f'{result.overflow.pillars_capped} pillars over the '
                       f"model's max_pillars {self._config.grid.max_pillars} were dropped")
        publish_started = time.perf_counter()
        self._outputs.publish_frame(cloud_msg.header, None if image is None else image.header,
                                    output, settings)
        timings['publish'] = (time.perf_counter() - publish_started) * 1e3
        processing_ms = (time.perf_counter() - started) * 1e3
        timings['processing'] = processing_ms
        over_budget = processing_ms > settings.inference_budget_ms
        self.counters.add(frames_out=1, fused_frames=int(not result.lidar_only),
                          lidar_only_frames=int(result.lidar_only), over_budget=int(over_budget))
        if over_budget:
            self._warn('over_budget', f'frame took {processing_ms:.0f} ms, over the '
                       f'{settings.inference_budget_ms:.0f} ms budget')
        self._publish_timings(cloud_msg.header, frame, output, timings,
                              len(prepared.points))

    def _publish_timings(self, cloud_header: Header, frame: SyncedFrame, output: FrameOutput,
                         timings: Dict[str, float], num_points: int) -> None:
        end_to_end_ms = (self.get_clock().now().nanoseconds - (
            cloud_header.stamp.sec * 10**9 + cloud_header.stamp.nanosec)) * 1e-6
        self._health.record_frame(timings['processing'], end_to_end_ms)
        self._outputs.publish_timings(cloud_header, timings, {
            'lidar_only': str(output.result.lidar_only).lower(),
            'num_points': str(num_points), 'num_detections': str(len(output.boxes)),
            'image_offset_ms': '' if frame.image_stamp_s is None else
            f'{(frame.image_stamp_s - frame.cloud_stamp_s) * 1e3:.3f}'}, end_to_end_ms)

    # ------------------------------------------------------------------ status

    def _publish_label_info(self) -> None:
        self._outputs.publish_label_info(Header(stamp=self.get_clock().now().to_msg()),
                                         self._pipeline.frame_settings.score_thresholds)

    def diagnostic_status(self) -> DiagnosticStatus:
        """Return the health as one DiagnosticStatus.

        Values are counts since start-up; the level and message reflect what changed since the
        previous call (one call per diagnostics period).
        """
        counts = self.counters.snapshot()
        level, message = self._health.update(
            counts, worker_alive=self._worker is not None and self._worker.is_alive())
        values = [KeyValue(key=key, value=value) for key, value in self._health.values(counts) + [
            ('last_error', self._last_error), ('device', str(self._runtime.device)),
            ('precision', self._runtime.precision),
            ('camera_calibration', self._calibration_state())]]
        return DiagnosticStatus(level=LEVELS[level], name=f'{self.get_name()}: bev_perception',
                                message=message, hardware_id=str(self._runtime.device),
                                values=values)

    def _calibration_state(self) -> str:
        """Say whether the image's calibration is needed and known."""
        camera = self._camera
        known = ('none yet' if camera is None
                 else f'camera_info {camera.width}x{camera.height}')
        needed = ('needed (weights fuse by calibration)' if self._runtime.needs_calibration
                  else 'not used by these weights')
        return f'{needed}; {known}; pose from {self._camera_pose_source}'

    def _publish_diagnostics(self) -> None:
        self._outputs.publish_diagnostics(Header(stamp=self.get_clock().now().to_msg()),
                                          self.diagnostic_status())

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


def _message_filters() -> Any:
    """Return the ROS 2 message_filters module, or raise StartupError saying what to do."""
    try:
        import message_filters
    except ImportError as error:
        raise StartupError(
            "sync_policy 'approximate' needs the ROS 2 message_filters package, which is not "
            'installed (apt install ros-$ROS_DISTRO-message-filters); or use sync_policy '
            "'lidar_triggered'") from error
    return message_filters


def _raise_stop(signum: int, frame: Any) -> None:
    raise StopRequested(signum)


def _ignore_signal(signum: int, frame: Any) -> None:
    pass  # stopping already: let the clean-up finish


class _Executor(SingleThreadedExecutor):
    """rclpy's single-threaded executor whose clean-up survives a constructor cut short.

    rclpy's ``Executor.__del__`` reads ``self._sigint_gc``, which its ``__init__`` sets last;
    when a stop signal lands in the constructor (rclpy's own handler shuts the context down,
    ours raises StopRequested), ``__init__`` stops first and the half-built object's
    ``__del__`` printed a traceback. The class default answers that read.
    """

    _sigint_gc = None


def _build_executor() -> SingleThreadedExecutor:
    """Return a new executor, built with the stop signals held back.

    Masking the stop signals in this thread keeps most of them out of the constructor; one the
    kernel hands to a DDS thread still reaches it, and ``_Executor`` makes that harmless.
    """
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return _Executor()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until SIGINT/SIGTERM; return the process exit code.

    0 after a signal (at any moment: during start-up too), 1 with one ``cannot start: ...``
    line when the command line, a parameter or the weights are unusable.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)  # rclpy.init chains its own handlers to these
    logger = rclpy.logging.get_logger(NODE_NAME)
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
        executor = _build_executor()
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
