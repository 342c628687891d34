"""``make demo``: replay a synthetic A2D2 drive as a rosbag2 through the perception node.

    python -m bev_perception.tools.demo --out out/demo

Steps: generate a short A2D2-format drive (``training.synthetic``, run from the repository
root), convert it to a rosbag2 (``training.to_bag``: PointCloud2 + Image + ground truth with the
recorded stamps), start ``perception_node`` (console script, shipped weights,
``use_sim_time``), replay the bag into it at the recorded rate (with ``/clock``; reliable QoS
like ``ros2 bag play``, since best effort over UDP drops megabyte images unless the socket
buffers are raised), record its outputs (and write them as a second bag), then write
``summary.json``, ``summary.md``, ``bev.png`` (points, predicted and true boxes) and
``camera_semantic.png`` (camera image, predicted and true semantics) to the output folder.

Every process started here keeps DDS on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``,
``ROS_LOCALHOST_ONLY=1``) in a domain of its own (``--domain-id``, default from the process id).
"""

import argparse
from dataclasses import dataclass, field
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from bev_perception import conversions
from bev_perception.bag_io import BagReader, BagWriter, cdr_header_stamp_ns, DEFAULT_TOPICS
from bev_perception.metrics import DetectionAccumulator, match_frame, SemanticAccumulator
from bev_perception.node import resolve_weights_path, StartupError
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLOUD_TOPIC = DEFAULT_TOPICS.pointcloud
IMAGE_TOPIC = DEFAULT_TOPICS.image
CLOCK_TOPIC = '/clock'
NODE_NAME = 'perception_node'
MATCH_DISTANCE_M = 2.0
DISTANCE_THRESHOLDS_M = (0.5, 1.0, 2.0, 4.0)
CLOCK_PERIOD_S = 0.01
#: Seed of the demo drive; outside the seeds the shipped weights were trained on.
DEMO_SEED = 880_001
OUTPUT_TOPICS = {
    'detections': ('vision_msgs/msg/Detection3DArray', f'/{NODE_NAME}/output/detections'),
    'semantic': ('sensor_msgs/msg/Image', f'/{NODE_NAME}/output/semantic'),
    'semantic_color': ('sensor_msgs/msg/Image', f'/{NODE_NAME}/output/semantic_color'),
    'markers': ('visualization_msgs/msg/MarkerArray', f'/{NODE_NAME}/output/markers'),
    'label_info': ('vision_msgs/msg/LabelInfo', f'/{NODE_NAME}/output/label_info'),
    'timings': ('diagnostic_msgs/msg/DiagnosticArray', f'/{NODE_NAME}/debug/timings'),
    'diagnostics': ('diagnostic_msgs/msg/DiagnosticArray', '/diagnostics'),
}


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run."""

    out_dir: str
    frames: int = 60
    seed: int = DEMO_SEED
    image_size: Tuple[int, int] = (960, 604)  # (width, height), A2D2's aspect ratio
    weights: str = ''  # empty: the shipped weights
    device: str = ''  # empty: the params file's (cuda, falling back to cpu)
    rate: float = 1.0
    domain_id: int = 0  # 0: derived from the process id
    workers: int = 2
    pictures_dir: str = ''  # also copy the PNG renders here (e.g. for the README)
    startup_timeout_s: float = 180.0
    drain_timeout_s: float = 20.0


@dataclass
class DriveFrame:
    """One frame of the synthetic drive, with its ground truth."""

    stamp_ns: int  # LiDAR stamp
    image_stamp_ns: int
    points: np.ndarray  # (N, 4) float32
    boxes: np.ndarray  # (K, 7) float32, ground truth
    labels: np.ndarray  # (K,) int64 into class_names
    image: np.ndarray  # (H, W, 3) uint8
    semantic: np.ndarray  # (H, W) uint8 category ids, 255 ignore


@dataclass
class Recording:
    """What the player sent and what the recorder received (monotonic seconds)."""

    published_s: Dict[int, float] = field(default_factory=dict)  # cloud stamp ns -> time
    received: Dict[str, List[Tuple[float, object]]] = field(default_factory=dict)
    images_published: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, name: str, msg: object) -> None:
        """Store a received message with its receive time."""
        with self.lock:
            self.received.setdefault(name, []).append((time.monotonic(), msg))

    def messages(self, name: str) -> List[Tuple[float, object]]:
        """Return a copy of the (time, message) list of a topic."""
        with self.lock:
            return list(self.received.get(name, []))


def log(message: str) -> None:
    """Print one progress line."""
    print(f'[demo] {message}', flush=True)


def local_dds_env(domain_id: int) -> Dict[str, str]:
    """Return the environment variables keeping DDS on this machine in ``domain_id``."""
    return {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST', 'ROS_LOCALHOST_ONLY': '1',
            'ROS_DOMAIN_ID': str(domain_id)}


#: Fast DDS profile with a shared-memory segment that holds camera images (config/).
FASTDDS_PROFILE_NAME = 'fastdds_large_messages.xml'
#: Variables naming a Fast DDS XML profiles file: Fast DDS 3 (Jazzy and later), then 2.x
#: (Humble). Only the first is set here (Fast DDS 3 warns that the second is deprecated); one
#: set by the user, either, is left alone.
FASTDDS_PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


def fastdds_profile_path() -> Optional[str]:
    """Return the shipped Fast DDS profile: the checkout's config/, else the share directory."""
    candidates = [os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), 'config', FASTDDS_PROFILE_NAME)]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(os.path.join(get_package_share_directory('bev_perception'), 'config',
                                       FASTDDS_PROFILE_NAME))
    except (ImportError, LookupError, ValueError):
        pass
    return next((path for path in candidates if os.path.isfile(path)), None)


def large_message_dds_env() -> Dict[str, str]:
    """Return variables selecting the shipped Fast DDS profile, unless one is already chosen.

    Transports only (shared memory for images): discovery stays as ``local_dds_env`` sets it.
    """
    if any(os.environ.get(name) for name in FASTDDS_PROFILE_VARIABLES):
        return {}
    path = fastdds_profile_path()
    return {} if path is None else {FASTDDS_PROFILE_VARIABLES[0]: path}


def stamp_ns(msg_stamp) -> int:
    """Return a builtin_interfaces/Time as integer nanoseconds."""
    return msg_stamp.sec * 10**9 + msg_stamp.nanosec


# ------------------------------------------------------------------------------ drive + bag

def generate_drive(config: DemoConfig, data_dir: str, bag_dir: str
                   ) -> Tuple[List[DriveFrame], Tuple[str, ...]]:
    """Write the synthetic drive under ``data_dir``, convert it to a bag; return the frames.

    The bag is written by ``training.to_bag`` (the project's A2D2 -> rosbag2 converter), so it
    holds what a converted real A2D2 scene holds. The returned frames carry the ground truth.
    """
    try:
        from training.a2d2 import A2D2Dataset, DEFAULT_CLASS_MAP, DEFAULT_CLASSES, list_scenes
        from training.synthetic import generate
        from training.to_bag import convert_scene
    except ImportError as error:
        raise SystemExit(f'the demo needs the training package ({error}); run it from the '
                         'repository root: python -m bev_perception.tools.demo') from error
    generate(data_dir, scenes=1, frames=config.frames, seed=config.seed,
             image_size=config.image_size, workers=config.workers)
    (scene,) = list_scenes(data_dir)
    convert_scene(data_dir, scene, bag_dir, storage='mcap', overwrite=True, progress=False)
    dataset = A2D2Dataset(data_dir, class_map=DEFAULT_CLASS_MAP, classes=DEFAULT_CLASSES)
    frames = []
    for index in range(len(dataset)):
        item = dataset[index]
        frames.append(DriveFrame(
            stamp_ns=item.lidar_timestamp_us * 1000,
            image_stamp_ns=item.camera_timestamp_us * 1000, points=item.points,
            boxes=item.boxes, labels=item.labels, image=item.image, semantic=item.semantic))
    return frames, tuple(DEFAULT_CLASSES)


def write_output_bag(recording: Recording, bag_dir: str) -> int:
    """Write the recorded node outputs as a rosbag2 (mcap); return the number of messages."""
    from rclpy.serialization import serialize_message

    entries = []
    with BagWriter(bag_dir, storage='mcap', overwrite=True) as writer:
        for name, (msgtype, topic) in OUTPUT_TOPICS.items():
            received = recording.messages(name)
            if received:
                writer.add_topic(topic, msgtype, latched=name == 'label_info')
                entries += [(received_s, topic, msg) for received_s, msg in received]
        entries.sort(key=lambda entry: entry[0])
        offset_ns = time.time_ns() - int(time.monotonic() * 1e9)
        for received_s, topic, msg in entries:
            writer.write_raw(topic, offset_ns + int(received_s * 1e9), serialize_message(msg))
    return len(entries)


def message_class(msgtype: str):
    """Return the rclpy message class of 'pkg/msg/Type', or None when not installed."""
    package, _, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{package}.msg'), name)
    except (ImportError, AttributeError):
        return None


# ------------------------------------------------------------------------------ ROS side

class DemoRos:
    """The demo's own rclpy node: bag player (with /clock) and output recorder."""

    def __init__(self, recording: Recording) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from diagnostic_msgs.msg import DiagnosticArray
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection3DArray, LabelInfo
        from visualization_msgs.msg import MarkerArray

        self.recording = recording
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('bev_demo', context=self.context)
        self.clock_pub = self.node.create_publisher(Clock, CLOCK_TOPIC, 10)
        kinds = {'detections': Detection3DArray, 'semantic': Image, 'semantic_color': Image,
                 'markers': MarkerArray, 'label_info': LabelInfo, 'timings': DiagnosticArray,
                 'diagnostics': DiagnosticArray}
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.subscriptions = [
            self.node.create_subscription(
                kinds[name], topic, self._keeper(name),
                latched if name == 'label_info' else reliable)
            for name, (_, topic) in OUTPUT_TOPICS.items()]
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinning = threading.Thread(target=self._spin, daemon=True)
        self._clock_stop = threading.Event()
        self._clock_ns = 0
        self._rate = 1.0
        self._clock_lock = threading.Lock()
        self._clock_thread = threading.Thread(target=self._tick_clock, daemon=True)
        self._spinning.start()

    def _keeper(self, name):
        return lambda msg: self.recording.keep(name, msg)

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except (ExternalShutdownException, RuntimeError):
            pass  # shutting down

    def _publish_clock(self, now_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        self.clock_pub.publish(Clock(clock=Time(sec=now_ns // 10**9, nanosec=now_ns % 10**9)))

    def _tick_clock(self) -> None:
        """Publish /clock every CLOCK_PERIOD_S, advancing with wall time from the last set."""
        last_wall = time.monotonic()
        while not self._clock_stop.wait(CLOCK_PERIOD_S):
            with self._clock_lock:
                now_wall = time.monotonic()
                if self._clock_ns:
                    self._clock_ns += int((now_wall - last_wall) * 1e9 * self._rate)
                    self._publish_clock(self._clock_ns)
                last_wall = now_wall

    def set_clock(self, now_ns: int) -> None:
        """Jump /clock to ``now_ns`` (bag time) and publish it."""
        with self._clock_lock:
            self._clock_ns = now_ns
            self._publish_clock(now_ns)

    def wait_for_node(self, process: subprocess.Popen, timeout_s: float) -> bool:
        """Wait until the node is ready (latched LabelInfo arrived, inputs subscribed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            if self.recording.messages('label_info'):
                return True
            time.sleep(0.1)
        return False

    def play(self, bag_dir: str, rate: float) -> Tuple[int, int]:
        """Replay every topic of the bag at ``rate`` x the recorded rate (reliable QoS).

        Clouds and images go to the node; the other topics (camera info, ground truth) are
        published too, as ``ros2 bag play`` would. Returns (clouds, images) published.
        """
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self._rate = rate
        clouds = images = 0
        with BagReader(bag_dir) as reader:
            publishers = {}
            for topic, msgtype in reader.topics.items():
                kind = message_class(msgtype)
                if kind is None:
                    log(f'not replaying {topic}: {msgtype} is not installed')
                    continue
                latched = topic == DEFAULT_TOPICS.tf_static
                publishers[topic] = self.node.create_publisher(kind, topic, QoSProfile(
                    depth=1 if latched else 10, reliability=ReliabilityPolicy.RELIABLE,
                    durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                else DurabilityPolicy.VOLATILE)))
            time.sleep(1.0)  # let the node match the replay publishers
            entries = list(reader.messages(list(publishers), raw=True))
            start_bag_ns = entries[0].log_time_ns if entries else 0
            self.set_clock(start_bag_ns)
            self._clock_thread.start()
            start_wall = time.monotonic()
            for entry in entries:
                due = start_wall + (entry.log_time_ns - start_bag_ns) * 1e-9 / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.set_clock(entry.log_time_ns)
                publishers[entry.topic].publish(entry.message)
                if entry.topic == CLOUD_TOPIC:
                    stamp = cdr_header_stamp_ns(entry.message)
                    self.recording.published_s[stamp] = time.monotonic()
                    clouds += 1
                elif entry.topic == IMAGE_TOPIC:
                    images += 1
        self.recording.images_published = images
        return clouds, images

    def close(self) -> None:
        """Stop the clock, the executor and the context."""
        self._clock_stop.set()
        if self._clock_thread.is_alive():
            self._clock_thread.join(timeout=2.0)
        self.context.try_shutdown()
        self._spinning.join(timeout=5.0)
        self.node.destroy_node()


def start_node(config: DemoConfig, weights_path: str, env: Dict[str, str], log_path: str
               ) -> subprocess.Popen:
    """Start perception_node through its console script with the params file and remaps."""
    executable = shutil.which('perception_node', path=os.path.dirname(sys.executable)
                              + os.pathsep + env.get('PATH', ''))
    if executable is None:
        raise SystemExit('perception_node is not installed: run make setup (or colcon build)')
    command = [executable, '--ros-args',
               '--params-file', os.path.join(REPO_ROOT, 'config', 'perception.yaml'),
               '-p', f'weights_path:={weights_path}', '-p', 'use_sim_time:=true',
               '-p', 'input_reliability:=reliable',
               '-r', f'~/input/pointcloud:={CLOUD_TOPIC}', '-r', f'~/input/image:={IMAGE_TOPIC}']
    if config.device:
        command += ['-p', f'device:={config.device}']
    with open(log_path, 'w') as handle:  # the child keeps its own descriptor
        return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)


def stop_node(process: subprocess.Popen) -> int:
    """Stop the node with SIGINT as ros2 launch does; return its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_for_drain(recording: Recording, timeout_s: float, quiet_s: float = 4.0) -> None:
    """Wait until no detections arrived for ``quiet_s`` (the node finished) or timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        received = recording.messages('detections')
        last = received[-1][0] if received else 0.0
        if time.monotonic() - last > quiet_s:
            return
        time.sleep(0.2)


# ------------------------------------------------------------------------------ analysis

def _status_values(array) -> Dict[str, str]:
    return {kv.key: kv.value for status in array.status for kv in status.values}


def _detections_arrays(msg, class_names: Sequence[str]
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return boxes (K, 7), scores (K,), labels (K,) of a Detection3DArray (unknown names: -1)."""
    boxes = np.zeros((len(msg.detections), 7), dtype=np.float32)
    scores = np.zeros(len(msg.detections), dtype=np.float32)
    labels = np.full(len(msg.detections), -1, dtype=np.int64)
    for index, detection in enumerate(msg.detections):
        centre = detection.bbox.center
        orientation = centre.orientation
        boxes[index] = [centre.position.x, centre.position.y, centre.position.z,
                        detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z,
                        float(conversions.quaternion_to_yaw(
                            [orientation.x, orientation.y, orientation.z, orientation.w]))]
        hypothesis = detection.results[0].hypothesis
        scores[index] = hypothesis.score
        if hypothesis.class_id in class_names:
            labels[index] = class_names.index(hypothesis.class_id)
    return boxes, scores, labels


def _in_range(boxes: np.ndarray, grid) -> np.ndarray:
    return ((boxes[:, 0] >= grid.x_range_m[0]) & (boxes[:, 0] < grid.x_range_m[1])
            & (boxes[:, 1] >= grid.y_range_m[0]) & (boxes[:, 1] < grid.y_range_m[1]))


def _percentiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {'p50': None, 'p95': None, 'max': None}
    return {'p50': round(float(np.percentile(values, 50)), 1),
            'p95': round(float(np.percentile(values, 95)), 1),
            'max': round(float(np.max(values)), 1)}


def analyse(frames: Sequence[DriveFrame], class_names: Tuple[str, ...], recording: Recording,
            model_config, published: Tuple[int, int]) -> Tuple[dict, dict]:
    """Compare the recorded outputs with the drive's ground truth; return (summary, pairs).

    ``pairs`` maps a processed frame index to its detections message, semantic ids (or None)
    and timings, for the renders.
    """
    by_stamp = {frame.stamp_ns: index for index, frame in enumerate(frames)}
    image_by_stamp = {frame.image_stamp_ns: index for index, frame in enumerate(frames)}
    semantic_by_index = {}
    for _, msg in recording.messages('semantic'):
        index = image_by_stamp.get(stamp_ns(msg.header.stamp))
        if index is not None:
            semantic_by_index[index] = np.frombuffer(bytes(msg.data), np.uint8).reshape(
                msg.height, msg.width)
    timings_by_index = {}
    for _, msg in recording.messages('timings'):
        index = by_stamp.get(stamp_ns(msg.header.stamp))
        if index is not None:
            timings_by_index[index] = _status_values(msg)

    accumulator = DetectionAccumulator(class_names, DISTANCE_THRESHOLDS_M)
    semantic = SemanticAccumulator(model_config.num_semantic_classes,
                                   class_names=model_config.semantic_classes)
    per_class = {name: {'detections': 0, 'ground_truth': 0, 'matched': 0} for name in
                 class_names}
    unknown_classes = 0
    latencies_ms, pairs = [], {}
    for received_s, msg in recording.messages('detections'):
        index = by_stamp.get(stamp_ns(msg.header.stamp))
        if index is None or index in pairs:
            continue
        frame = frames[index]
        boxes, scores, labels = _detections_arrays(msg, class_names)
        unknown_classes += int((labels < 0).sum())
        known = labels >= 0
        gt_keep = _in_range(frame.boxes, model_config.grid)
        gt_boxes, gt_labels = frame.boxes[gt_keep], frame.labels[gt_keep]
        accumulator.add(boxes[known], scores[known], labels[known], gt_boxes, gt_labels)
        for label, name in enumerate(class_names):
            pred = known & (labels == label)
            truth = gt_labels == label
            matched = match_frame(boxes[pred, :2], scores[pred], gt_boxes[truth, :2],
                                  MATCH_DISTANCE_M)
            per_class[name]['detections'] += int(pred.sum())
            per_class[name]['ground_truth'] += int(truth.sum())
            per_class[name]['matched'] += int(matched.sum())
        if index in semantic_by_index and semantic_by_index[index].shape == frame.semantic.shape:
            semantic.add(semantic_by_index[index], frame.semantic)
        if frame.stamp_ns in recording.published_s:
            latencies_ms.append((received_s - recording.published_s[frame.stamp_ns]) * 1e3)
        pairs[index] = {'detections': (boxes, scores, labels),
                        'semantic': semantic_by_index.get(index),
                        'timings': timings_by_index.get(index, {})}

    detection_metrics = accumulator.compute()
    semantic_metrics = semantic.compute()
    gt_pixels = semantic_metrics.confusion.sum(axis=1)
    present_iou = [float(v) for v, count in zip(semantic_metrics.iou, gt_pixels)
                   if count > 0 and not math.isnan(v)]
    diagnostics = recording.messages('diagnostics')
    node_counters = {}
    for _, array in reversed(diagnostics):
        if any(status.name.startswith(NODE_NAME) for status in array.status):
            node_counters = _status_values(array)
            break
    lidar_only = sum(1 for values in timings_by_index.values()
                     if values.get('lidar_only') == 'true')
    processing = [float(values['processing_ms']) for values in timings_by_index.values()
                  if values.get('processing_ms')]
    node_latency = [float(values['end_to_end_ms']) for values in timings_by_index.values()
                    if values.get('end_to_end_ms')]
    for counts in per_class.values():
        counts['missed'] = counts['ground_truth'] - counts['matched']
        counts['false'] = counts['detections'] - counts['matched']
    summary = {
        'frames_in': {'clouds': published[0], 'images': published[1]},
        'frames_out': len(pairs),
        'lidar_only_frames': lidar_only,
        'node_counters': {key: node_counters[key] for key in (
            'clouds_in', 'images_in', 'frames_out', 'fused_frames', 'lidar_only_frames',
            'dropped_frames', 'bad_clouds', 'bad_images', 'points_subsampled', 'pillars_capped',
            'over_budget', 'inference_errors') if key in node_counters},
        'detections_per_class': {name: counts['detections'] for name, counts in
                                 per_class.items()},
        'match_distance_m': MATCH_DISTANCE_M,
        'matching_per_class': per_class,
        'detections_with_unknown_class': unknown_classes,
        'bev_ap': detection_metrics.to_dict(),
        'semantic': {
            'frames': int(sum(1 for pair in pairs.values() if pair['semantic'] is not None)),
            'miou_present_classes': (round(float(np.mean(present_iou)), 4)
                                     if present_iou else None),
            'pixel_accuracy': semantic_metrics.to_dict()['pixel_accuracy'],
        },
        'latency_ms': {
            'cloud_published_to_detections_received': _percentiles(latencies_ms),
            'node_processing': _percentiles(processing),
            'node_end_to_end_sim_time': _percentiles(node_latency),
        },
    }
    return summary, pairs


# ------------------------------------------------------------------------------ renders

def _box_outline(box: np.ndarray) -> np.ndarray:
    """Return the BEV corners (5, 2) x, y of a box, closed."""
    x, y, _, length, width, _, yaw = box[:7]
    corners = np.array([[length, width], [length, -width], [-length, -width],
                        [-length, width]]) * 0.5
    rotation = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    outline = corners @ rotation.T + [x, y]
    return np.vstack([outline, outline[:1]])


def render_bev(frame: DriveFrame, pair: dict, class_names: Sequence[str], model_config,
               path: str, title: str) -> None:
    """Draw points, true boxes (green) and predicted boxes (class colours) from above."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    grid = model_config.grid
    figure, axes = plt.subplots(figsize=(7.5, 7.5))
    inside = _in_range(frame.points, grid)
    points = frame.points[inside]
    # Plot with x (forward) up and y (left) to the left: horizontal axis is -y.
    axes.scatter(-points[:, 1], points[:, 0], s=0.8, c=points[:, 2], cmap='viridis',
                 vmin=-2.0, vmax=1.5, linewidths=0)
    for box, label in zip(frame.boxes, frame.labels):
        outline = _box_outline(box)
        axes.plot(-outline[:, 1], outline[:, 0], color='#00c040', linewidth=2.2)
    boxes, scores, labels = pair['detections']
    colours = plt.get_cmap('tab10').colors

    def colour_of(label):
        return colours[(int(label) + 1) % len(colours)] if label >= 0 else 'grey'
    for box, score, label in zip(boxes, scores, labels):
        name = class_names[label] if label >= 0 else 'unknown'
        outline = _box_outline(box)
        axes.plot(-outline[:, 1], outline[:, 0], color=colour_of(label), linewidth=1.2,
                  linestyle='--')
        axes.text(-box[1], box[0] + 0.5 * box[3] + 0.6, f'{name} {score:.2f}',
                  color=colour_of(label), fontsize=6, ha='center')
    axes.plot([], [], color='#00c040', linewidth=2.2, label='ground truth')
    for label, name in enumerate(class_names):
        axes.plot([], [], color=colour_of(label), linestyle='--', label=f'predicted {name}')
    axes.plot([0], [0], marker='^', color='black', markersize=8)
    axes.set_xlim(-grid.y_range_m[1], -grid.y_range_m[0])
    axes.set_ylim(grid.x_range_m[0], grid.x_range_m[1])
    axes.set_aspect('equal')
    axes.set_xlabel('-y (m, right)')
    axes.set_ylabel('x (m, forward)')
    axes.set_title(title, fontsize=9)
    axes.legend(loc='lower left', fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def render_camera(frame: DriveFrame, predicted: Optional[np.ndarray], palette: np.ndarray,
                  path: str, title: str) -> None:
    """Draw the camera image, the predicted semantic overlay and the true one."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    def overlay(ids):
        lookup = np.zeros((256, 3), dtype=np.uint8)
        lookup[:len(palette)] = palette
        colours = lookup[ids].astype(np.float32)
        blended = 0.45 * frame.image.astype(np.float32) + 0.55 * colours
        return np.where((ids == 255)[..., None], frame.image, blended).astype(np.uint8)

    panels = [('camera', frame.image)]
    if predicted is not None:
        panels.append(('predicted semantics', overlay(predicted)))
    panels.append(('ground truth semantics', overlay(frame.semantic)))
    height, width = frame.image.shape[:2]
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 8 * height / width * len(panels)
                                                         + 0.6))
    for axis, (name, image) in zip(np.atleast_1d(axes), panels):
        axis.imshow(image)
        axis.set_title(name, fontsize=9)
        axis.axis('off')
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_summary_markdown(summary: dict, path: str) -> None:
    """Write summary.md: counts, matching per class, AP, semantics, latency, pictures."""
    counters = summary['node_counters']
    lines = [
        '# bev_perception demo', '',
        f"Synthetic A2D2-format drive (seed {summary['drive']['seed']}, "
        f"{summary['drive']['frames']} frames at 10 Hz, images "
        f"{summary['drive']['image_size'][0]}x{summary['drive']['image_size'][1]}) replayed "
        f"from a rosbag2 at {summary['drive']['rate']}x the recorded rate into perception_node "
        f"(weights `{summary['weights']['path']}`, device {summary['device']}).", '',
        '| | count |', '| --- | --- |',
        f"| clouds / images published | {summary['frames_in']['clouds']} / "
        f"{summary['frames_in']['images']} |",
        f"| frames out (detections received) | {summary['frames_out']} |",
        f"| LiDAR-only frames | {summary['lidar_only_frames']} |",
        f"| dropped by the node (latest wins) | {counters.get('dropped_frames', '?')} |",
        f"| inference errors | {counters.get('inference_errors', '?')} |", '',
        f"Detections matched to ground truth within {summary['match_distance_m']} m (BEV "
        'centre distance, same class, greedy by score; ground truth inside the model range):',
        '', '| class | detections | ground truth | matched | missed | false |',
        '| --- | --- | --- | --- | --- | --- |']
    for name, counts in summary['matching_per_class'].items():
        lines.append(f"| {name} | {counts['detections']} | {counts['ground_truth']} | "
                     f"{counts['matched']} | {counts['missed']} | {counts['false']} |")
    ap = summary['bev_ap']
    lines += ['', "BEV AP of the published detections (after the node's score thresholds, so "
              'recall is capped) on the processed frames:', '',
              '| class | ' + ' | '.join(f'{t} m' for t in ap['thresholds_m']) + ' |',
              '| --- |' + ' --- |' * len(ap['thresholds_m'])]
    for name, values in ap['ap'].items():
        lines.append(f'| {name} | ' + ' | '.join(
            '-' if v is None else f'{v:.3f}' for v in values.values()) + ' |')
    lines.append('| **mAP** | ' + ' | '.join(
        '-' if v is None else f'{v:.3f}' for v in ap['map_by_threshold'].values()) + ' |')
    semantic = summary['semantic']
    miou = semantic['miou_present_classes']
    lines += ['', f"Semantic segmentation on {semantic['frames']} fused frames: mIoU "
              f"(classes present in the ground truth) {'-' if miou is None else f'{miou:.3f}'}.",
              '', '| latency (ms) | p50 | p95 | max |', '| --- | --- | --- | --- |']
    names = {'cloud_published_to_detections_received': 'cloud published -> detections received',
             'node_processing': 'node processing (convert to publish)',
             'node_end_to_end_sim_time': 'node end-to-end (now - cloud stamp, sim time)'}
    for key, values in summary['latency_ms'].items():
        lines.append(f'| {names[key]} | {values["p50"]} | {values["p95"]} | {values["max"]} |')
    lines += ['', '![BEV](bev.png)', '', '![camera and semantics](camera_semantic.png)', '']
    with open(path, 'w') as handle:
        handle.write('\n'.join(lines))


# ------------------------------------------------------------------------------ main

def _random_weights(path: str):
    """Write random lite-model weights (used only when no shipped weights exist)."""
    import torch

    from bev_perception.model.config import ModelConfig
    from bev_perception.model.network import BEVFusionNet
    from bev_perception.weights import save_weights

    torch.manual_seed(0)
    config = ModelConfig.lite()
    save_weights(path, BEVFusionNet(config).eval(), config,
                 provenance={'dataset': 'none: random weights (no shipped weights found)'})


def run(config: DemoConfig) -> dict:
    """Run the demo; return the summary (also written to config.out_dir)."""
    from bev_perception.model.config import ModelConfig
    from bev_perception.weights import read_metadata

    started = time.monotonic()
    out_dir = os.path.abspath(config.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    domain_id = config.domain_id or 1 + os.getpid() % 100
    os.environ.update(local_dds_env(domain_id))  # this process's rclpy reads it at init
    os.environ.update(large_message_dds_env())
    env = dict(os.environ, PYTHONUNBUFFERED='1')

    try:
        weights_path = resolve_weights_path(config.weights)
        random_weights = False
    except StartupError as error:
        if config.weights:
            raise SystemExit(str(error)) from error
        weights_path = os.path.join(out_dir, 'random_weights.safetensors')
        log(f'WARNING: {error}. Using RANDOM weights: detections will not match.')
        _random_weights(weights_path)
        random_weights = True
    metadata = read_metadata(weights_path)
    model_config = ModelConfig.from_dict(metadata['config'])

    work_dir = tempfile.mkdtemp(prefix='bev_demo_', dir=out_dir)
    bag_dir = os.path.join(out_dir, 'drive_bag')
    try:
        log(f'generating a {config.frames}-frame synthetic drive (seed {config.seed}) and '
            'converting it to a rosbag2')
        frames, class_names = generate_drive(config, os.path.join(work_dir, 'drive'), bag_dir)
        log(f'wrote {bag_dir} ({len(frames)} frames) after {time.monotonic() - started:.0f} s')
        if not any(len(frame.boxes) for frame in frames):
            log(f'WARNING: the synthetic drive of seed {config.seed} has no objects (the '
                'generator leaves a few scenes empty); pick another --seed to see detections')
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    recording = Recording()
    ros = DemoRos(recording)
    node_log = os.path.join(out_dir, 'node.log')
    process = start_node(config, weights_path, env, node_log)
    try:
        log(f'starting perception_node (ROS_DOMAIN_ID {domain_id}, log {node_log})')
        if not ros.wait_for_node(process, config.startup_timeout_s):
            stop_node(process)
            with open(node_log) as handle:
                raise SystemExit('perception_node did not come up; its log:\n' + handle.read())
        log('node ready; replaying the bag')
        published = ros.play(bag_dir, config.rate)
        wait_for_drain(recording, config.drain_timeout_s)
    finally:
        exit_code = stop_node(process)
        ros.close()
    log(f'node stopped with exit code {exit_code}')
    recorded = write_output_bag(recording, os.path.join(out_dir, 'outputs_bag'))

    summary, pairs = analyse(frames, class_names, recording, model_config, published)
    summary.update({
        'drive': {'seed': config.seed, 'frames': len(frames),
                  'image_size': list(config.image_size), 'rate': config.rate},
        'weights': {'path': os.path.relpath(weights_path, REPO_ROOT)
                    if weights_path.startswith(REPO_ROOT) else weights_path,
                    'random': random_weights,
                    'provenance': metadata.get('provenance')},
        'device': config.device or 'params file (cuda, cpu fallback)',
        'node_exit_code': exit_code,
        'recorded_output_messages': recorded,
        'wall_time_s': None,
    })
    palette = np.asarray(model_config.semantic_palette, dtype=np.uint8)
    if pairs:
        def ground_truth_count(index):
            return (int(_in_range(frames[index].boxes, model_config.grid).sum()), index)
        chosen = max(pairs, key=ground_truth_count)
        render_bev(frames[chosen], pairs[chosen], class_names, model_config,
                   os.path.join(out_dir, 'bev.png'),
                   f'frame {chosen}: ground truth (green) and predictions (dashed)')
        fused = [index for index in pairs if pairs[index]['semantic'] is not None]
        camera_index = chosen if chosen in fused else (fused[-1] if fused else chosen)
        render_camera(frames[camera_index], pairs[camera_index]['semantic'], palette,
                      os.path.join(out_dir, 'camera_semantic.png'),
                      f'frame {camera_index}: camera, predicted and true semantics')
    if config.pictures_dir:
        os.makedirs(config.pictures_dir, exist_ok=True)
        for name in ('bev.png', 'camera_semantic.png'):
            if os.path.exists(os.path.join(out_dir, name)):
                shutil.copy(os.path.join(out_dir, name), config.pictures_dir)
    summary['wall_time_s'] = round(time.monotonic() - started, 1)
    with open(os.path.join(out_dir, 'summary.json'), 'w') as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
    write_summary_markdown(summary, os.path.join(out_dir, 'summary.md'))
    return summary


def parse_args(argv: Optional[Sequence[str]] = None) -> DemoConfig:
    """Parse the command line into a DemoConfig."""
    defaults = DemoConfig(out_dir='out/demo')
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=defaults.out_dir, help='output folder')
    parser.add_argument('--frames', type=int, default=defaults.frames,
                        help='frames of the drive (10 Hz)')
    parser.add_argument('--seed', type=int, default=defaults.seed, help='drive seed')
    parser.add_argument('--image-size', type=int, nargs=2, default=defaults.image_size,
                        metavar=('WIDTH', 'HEIGHT'), help='camera image size')
    parser.add_argument('--weights', default=defaults.weights,
                        help='weights file (default: the shipped weights)')
    parser.add_argument('--device', default=defaults.device,
                        help='cuda or cpu (default: the params file, cuda with cpu fallback)')
    parser.add_argument('--rate', type=float, default=defaults.rate,
                        help='replay rate relative to the recorded rate')
    parser.add_argument('--domain-id', type=int, default=defaults.domain_id,
                        help='ROS_DOMAIN_ID for the demo (default: from the process id)')
    parser.add_argument('--workers', type=int, default=defaults.workers,
                        help='processes generating the drive')
    parser.add_argument('--pictures', default=defaults.pictures_dir,
                        help='also copy bev.png and camera_semantic.png into this folder')
    args = parser.parse_args(argv)
    if args.frames < 1 or args.rate <= 0:
        parser.error('--frames must be positive and --rate above 0')
    return DemoConfig(out_dir=args.out, frames=args.frames, seed=args.seed,
                      image_size=tuple(args.image_size), weights=args.weights,
                      device=args.device, rate=args.rate, domain_id=args.domain_id,
                      workers=args.workers, pictures_dir=args.pictures)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo from the command line; print where the results are."""
    config = parse_args(argv)
    summary = run(config)
    ap = summary['bev_ap']['map_by_threshold'].get(str(MATCH_DISTANCE_M))
    log(f"frames in {summary['frames_in']['clouds']}, out {summary['frames_out']}, "
        f"LiDAR-only {summary['lidar_only_frames']}, mAP@{MATCH_DISTANCE_M} m "
        f"{'-' if ap is None else f'{ap:.3f}'}, latency p50/p95 "
        f"{summary['latency_ms']['cloud_published_to_detections_received']['p50']}/"
        f"{summary['latency_ms']['cloud_published_to_detections_received']['p95']} ms, "
        f"{summary['wall_time_s']} s; results in {os.path.abspath(config.out_dir)}")
    return 0 if summary['node_exit_code'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
