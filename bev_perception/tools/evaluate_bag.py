"""Evaluate the perception node on a rosbag2 bag, offline (no ROS graph) or live over DDS.

    bev_perception_eval BAG [--weights W] [--out DIR] [--params-file YAML] [-p NAME:=VALUE ...]
                            [--pointcloud-topic T] [--image-topic T]
                            [--gt-detections-topic T] [--gt-semantic-topic T] [--class-map F]
                            [--live [--rate R] [--use-sim-time] [--node-namespace NS]]

Offline (default): the bag's clouds and images go, in log-time order, through the node's own
pairing policy (``bev_perception.sync.LidarTriggeredSync``, receive time = log time) and the
node's per-frame steps (cloud fields and intensity scaling, ``max_points``, extrinsic, NMS and
score settings from the same parameters) into the ``InferenceRuntime``. Every frame runs as the
node runs it ("fused": with its paired image when there is one) and, in addition, without its
image ("lidar_only"), so the report compares both.

Live (``--live``): starts ``perception_node`` with the same parameters (or uses a running node:
``--node-namespace``/``--node-name``), publishes the bag's clouds and images to the node's
``~/input/*`` topics at ``--rate`` times the recorded timing (optionally with ``/clock`` and
``use_sim_time``), records ``~/output/detections``, ``~/output/semantic`` and
``~/debug/timings`` (also into ``DIR/outputs``, a bag), and reports the same metrics plus the
end-to-end latency (cloud published -> its detections received), output rate and dropped
frames. A frame without output counts as a frame without detections. DDS settings come from
the environment: set ROS_DOMAIN_ID / ROS_AUTOMATIC_DISCOVERY_RANGE as for any ROS tool.

Ground truth: Detection3DArray with the cloud's stamp (class ids mapped to the detector's
classes: case-insensitively by name, or through ``--class-map``, a JSON/YAML object
``{gt_class_id: detector_class_or_null}``; boxes centred outside the model's BEV grid are not
evaluated, as in ``training.evaluate``) and mono8 category ids (255 = ignore) with the image's
stamp. Without ground truth topics only timings are reported.

Output in DIR: report.json, report.md, PNG plots (see ``bev_perception.tools.report``) and
frames.jsonl (one line per frame: cloud stamp, paired image stamp, boxes, scores, classes;
offline and live results on the same bag agree line by line when no frame is dropped).
Exit code 0 on success, 1 when the bag, weights or node cannot be used (the message names the
bag file, the topic or the file), 2 for bad arguments.
"""

import argparse
import bisect
from dataclasses import dataclass, field, replace
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from bev_perception import conversions, pipeline
from bev_perception.bag_io import (BagError, BagReader, BagTopics, BagWriter, CAMERA_INFO_TYPE,
                                   cdr_header_stamp_ns, DEFAULT_TOPICS, DetectionArrays,
                                   detections_from_msg, DETECTIONS_TYPE,
                                   IMAGE_TYPE, mono8_to_array, POINTCLOUD_TYPE,
                                   stamp_ns)
from bev_perception.calibration import CalibrationError, CameraIntrinsics
from bev_perception.inference import InferenceRuntime
from bev_perception.metrics import DetectionAccumulator, SemanticAccumulator
from bev_perception.node_params import NodeSettings, PARAMETERS
from bev_perception.sync import LidarTriggeredSync, stamp_to_seconds
from bev_perception.tools import replay
from bev_perception.tools.report import (percentiles, PlotData, StripFrame, write_json,
                                         write_report)
from bev_perception.transforms import TransformTree
import numpy as np
from tqdm import tqdm
import yaml

LOGGER = logging.getLogger('bev_perception_eval')

DEFAULT_NODE_NAME = 'perception_node'
#: Frames shown in the BEV strip.
STRIP_FRAMES = 4
#: Points kept per strip frame.
STRIP_POINTS = 15000
#: Width of the camera images kept for the strip, pixels.
STRIP_IMAGE_WIDTH = 480
#: Unmatched semantic maps kept while waiting for their partner (per side).
SEMANTIC_BUFFER = 64
RUNS_OFFLINE = ('fused', 'lidar_only')
#: Keys of the node's ~/debug/timings that are not per-frame processing stages.
NOT_STAGES = ('image_offset_ms', 'end_to_end_ms')


class EvalError(Exception):
    """The evaluation cannot run; the message says what is wrong and where."""


# ------------------------------------------------------------------------------ settings

def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_param_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """Return {name: value} of ``NAME:=VALUE`` items (values parsed as YAML, like ``-p``)."""
    values = {}
    for item in items:
        if ':=' not in item:
            raise ValueError(f'parameter override {item!r} must look like name:=value')
        name, text = item.split(':=', 1)
        values[name.strip()] = _parse_value(text)
    return values


def load_params_file(path: str, node_name: str = DEFAULT_NODE_NAME) -> Dict[str, Any]:
    """Return the ros__parameters of a ROS 2 params file for ``node_name`` ('/**' merged first).

    Raises:
        EvalError: unreadable file or no ros__parameters section.
    """
    try:
        with open(path, 'r', encoding='utf-8') as stream:
            document = yaml.safe_load(stream) or {}
    except (OSError, yaml.YAMLError) as error:
        raise EvalError(f'{path}: cannot read the params file: {error}') from None
    values: Dict[str, Any] = {}
    found = False
    for key in ('/**', node_name, '/' + node_name.lstrip('/')):
        section = document.get(key) if isinstance(document, dict) else None
        if isinstance(section, dict) and isinstance(section.get('ros__parameters'), dict):
            values.update(section['ros__parameters'])
            found = True
    if not found:
        raise EvalError(f'{path}: no "/**" or "{node_name}" section with ros__parameters')
    return values


def node_settings(params_file: Optional[str], overrides: Mapping[str, Any],
                  node_name: str = DEFAULT_NODE_NAME) -> Tuple[NodeSettings, Dict[str, Any]]:
    """Return the node settings (and the raw values) from a params file plus overrides."""
    values = load_params_file(params_file, node_name) if params_file else {}
    values.update(overrides)
    known = {spec.name for spec in PARAMETERS}
    ignored = sorted(set(values) - known)
    for name in ignored:
        if name != 'use_sim_time':
            LOGGER.warning('parameter %s is not a perception_node parameter; ignored', name)
        values.pop(name)
    try:
        return NodeSettings.from_values(values), values
    except ValueError as error:
        raise EvalError(f'invalid node parameters: {error}') from None


# ------------------------------------------------------------------------------ classes

def load_class_map(path: str) -> Dict[str, Optional[str]]:
    """Return a class map file (JSON or YAML object: gt class id -> detector class or null)."""
    try:
        with open(path, 'r', encoding='utf-8') as stream:
            document = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as error:
        raise EvalError(f'{path}: cannot read the class map: {error}') from None
    if not isinstance(document, dict):
        raise EvalError(f'{path}: the class map must be an object {{gt_class: class or null}}')
    return {str(key): (None if value is None else str(value)) for key, value in document.items()}


class ClassMapper:
    """Map ground truth class ids to detector class indices.

    Lookup order: the explicit map (keys compared case-insensitively), then the detector's own
    class names (case-insensitive). Ids mapped to None are ignored; unknown ids are ignored
    and counted.
    """

    def __init__(self, classes: Sequence[str],
                 class_map: Optional[Mapping[str, Optional[str]]] = None) -> None:
        self.classes = tuple(classes)
        index = {name.lower(): i for i, name in enumerate(self.classes)}
        self._lookup: Dict[str, Optional[int]] = dict(index)
        for key, target in (class_map or {}).items():
            if target is not None and target.lower() not in index:
                raise EvalError(f'class map sends {key!r} to {target!r}, which is not one of '
                                f'the detector classes {", ".join(self.classes)}')
            self._lookup[key.lower()] = None if target is None else index[target.lower()]
        self.unknown: Dict[str, int] = {}
        self.ignored: Dict[str, int] = {}

    def labels(self, class_ids: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Return (kept mask (K,), labels of the kept ids (k,) int64)."""
        kept, labels = np.zeros(len(class_ids), dtype=bool), []
        for i, class_id in enumerate(class_ids):
            key = str(class_id).lower()
            if key not in self._lookup:
                self.unknown[key] = self.unknown.get(key, 0) + 1
                continue
            label = self._lookup[key]
            if label is None:
                self.ignored[key] = self.ignored.get(key, 0) + 1
                continue
            kept[i] = True
            labels.append(label)
        return kept, np.asarray(labels, dtype=np.int64)


# ------------------------------------------------------------------------------ frames

@dataclass(frozen=True)
class FrameOutput:
    """One frame's detections as published (boxes in the cloud frame)."""

    stamp_ns: int  # the cloud's stamp
    image_stamp_ns: Optional[int]  # the paired image's stamp, None for LiDAR-only
    boxes: np.ndarray  # (K, 7) float32
    scores: np.ndarray  # (K,) float32
    class_names: List[str]

    @property
    def lidar_only(self) -> bool:
        """Return True when no image was used."""
        return self.image_stamp_ns is None

    def to_json(self) -> Dict[str, Any]:
        """Return the frame as plain JSON types (floats exact)."""
        return {'stamp_ns': self.stamp_ns, 'image_stamp_ns': self.image_stamp_ns,
                'lidar_only': self.lidar_only,
                'boxes': [[float(v) for v in box] for box in self.boxes],
                'scores': [float(v) for v in self.scores], 'class_names': list(self.class_names)}


def prepare_cloud(msg, frame_pipeline: pipeline.FramePipeline) -> pipeline.PreparedCloud:
    """Return a cloud message prepared for the network as the node prepares it.

    Fields x, y, z and ``intensity_field`` are read (non-finite rows dropped), then the
    pipeline subsamples, scales the intensity and applies the extrinsic.

    Raises:
        conversions.ConversionError: a malformed cloud.
    """
    fields = frame_pipeline.settings.cloud_fields()
    return frame_pipeline.prepare(conversions.pointcloud2_to_array_with_stats(msg, fields).points)


def _downscale(pixels: np.ndarray, width: int = STRIP_IMAGE_WIDTH) -> np.ndarray:
    step = max(1, int(math.ceil(pixels.shape[1] / width)))
    return np.ascontiguousarray(pixels[::step, ::step])


class StripCollector:
    """Keep what the BEV strip needs for a few frames chosen by cloud index (thread-safe)."""

    def __init__(self, total_clouds: int, count: int = STRIP_FRAMES) -> None:
        chosen = np.linspace(0, max(total_clouds - 1, 0), min(count, total_clouds))
        self._indices = {int(round(i)) for i in chosen} if total_clouds else set()
        self._frames: Dict[int, Dict[str, Any]] = {}  # cloud stamp -> parts
        self._images: Dict[int, np.ndarray] = {}  # recent downscaled images by stamp
        self._semantic: Dict[int, np.ndarray] = {}  # recent downscaled semantic by stamp
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Return True when some frame is to be shown."""
        return bool(self._indices)

    def wants(self, cloud_index: int) -> bool:
        """Return True when the cloud with this index (0-based, log order) is shown."""
        return cloud_index in self._indices

    def add_cloud(self, stamp: int, points: np.ndarray, gt_boxes: np.ndarray) -> None:
        """Store a chosen cloud's points (subsampled) and ground truth boxes."""
        step = max(1, int(math.ceil(len(points) / STRIP_POINTS)))
        with self._lock:
            self._frames[stamp] = {'points': np.array(points[::step, :2]),
                                   'gt': np.asarray(gt_boxes).reshape(-1, 7), 'pred': None,
                                   'image_stamp': None}

    def add_image(self, stamp: int, rgb: np.ndarray) -> None:
        """Remember a recent image (downscaled)."""
        with self._lock:
            if self._frames or self._indices:
                self._images[stamp] = _downscale(rgb)
                while len(self._images) > 32:
                    self._images.pop(min(self._images))

    def add_semantic(self, image_stamp: int, ids: np.ndarray) -> None:
        """Remember a recent predicted semantic map (downscaled)."""
        with self._lock:
            self._semantic[image_stamp] = _downscale(ids)
            while len(self._semantic) > 32:
                self._semantic.pop(min(self._semantic))

    def add_prediction(self, output: FrameOutput) -> None:
        """Store a chosen frame's predicted boxes and bind its image."""
        with self._lock:
            frame = self._frames.get(output.stamp_ns)
            if frame is None:
                return
            frame['pred'] = output
            if output.image_stamp_ns is not None:
                frame['image_stamp'] = output.image_stamp_ns
                frame['image'] = self._nearest(self._images, output.image_stamp_ns)

    def frames(self) -> List[StripFrame]:
        """Return the collected frames in stamp order."""
        result = []
        with self._lock:
            for stamp in sorted(self._frames):
                parts = self._frames[stamp]
                pred: Optional[FrameOutput] = parts['pred']
                image = parts.get('image')
                semantic = None
                if parts['image_stamp'] is not None:
                    semantic = self._nearest(self._semantic, parts['image_stamp'])
                if image is not None and semantic is not None and (
                        semantic.shape != image.shape[:2]):
                    semantic = None
                result.append(StripFrame(
                    stamp_ns=stamp, points_xy=parts['points'], gt_boxes=parts['gt'],
                    pred_boxes=pred.boxes if pred is not None else np.zeros((0, 7)),
                    pred_labels=[f'{n} {s:.2f}' for n, s in zip(pred.class_names, pred.scores)]
                    if pred is not None else [], image=image, semantic=semantic))
        return result

    @staticmethod
    def _nearest(table: Dict[int, np.ndarray], stamp: int, tolerance_ns: int = 2_000_000):
        if not table:
            return None
        best = min(table, key=lambda key: abs(key - stamp))
        return table[best] if abs(best - stamp) <= tolerance_ns else None


class Evaluation:
    """Accumulate detection and semantic metrics of frames against the bag's ground truth.

    Detection ground truth is loaded up front (small); semantic maps are matched by image
    stamp as prediction and ground truth arrive (in either order, a bounded buffer each).
    Thread-safe: the live recorder adds predictions from the executor thread.
    """

    def __init__(self, classes: Sequence[str], semantic_classes: Sequence[str],
                 mapper: ClassMapper, runs: Sequence[str]) -> None:
        self.classes = tuple(classes)
        self.mapper = mapper
        self.runs = tuple(runs)
        self.gt_detections: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self._detection = {run: DetectionAccumulator(self.classes) for run in self.runs}
        self._semantic = SemanticAccumulator(len(semantic_classes), 255, semantic_classes)
        self._semantic_pred: Dict[int, np.ndarray] = {}
        self._semantic_gt: Dict[int, np.ndarray] = {}
        self._predicted: Dict[str, set] = {run: set() for run in self.runs}
        self.outputs: Dict[int, FrameOutput] = {}  # first run's outputs by cloud stamp
        self.counts = {'frames_with_gt_detections': 0, 'frames_missing_gt_detections': 0,
                       'gt_boxes_outside_grid': 0,
                       'semantic_frames': 0, 'semantic_unmatched': 0,
                       'semantic_gt_ids_out_of_range': 0, 'semantic_size_mismatch': 0}
        self.has_semantic_gt = False
        self._results: Optional[Tuple[Dict[str, Any], Dict[str, Any]]] = None
        self._lock = threading.Lock()

    def add_gt_detections(self, arrays: DetectionArrays,
                          inside_grid: Optional[np.ndarray] = None) -> None:
        """Store one ground truth Detection3DArray (keyed by its stamp).

        Args:
            arrays: the ground truth boxes (cloud frame) and class ids.
            inside_grid: (K,) bool, False for boxes whose centre lies outside the model's BEV
                grid: those are not evaluated (as in training.evaluate).
        """
        kept, labels = self.mapper.labels(arrays.class_ids)
        if inside_grid is not None:
            outside = kept & ~inside_grid
            self.counts['gt_boxes_outside_grid'] += int(np.count_nonzero(outside))
            labels = labels[inside_grid[kept]]
            kept = kept & inside_grid
        self.gt_detections[arrays.stamp_ns] = (arrays.boxes[kept], labels)

    def add_prediction(self, run: str, output: FrameOutput) -> None:
        """Add one frame's detections of ``run``."""
        labels = np.asarray([self.classes.index(name) for name in output.class_names],
                            dtype=np.int64)
        with self._lock:
            if run == self.runs[0]:
                self.outputs[output.stamp_ns] = output
            if output.stamp_ns in self._predicted[run]:
                return  # a repeated stamp (bag loop): evaluate the first output only
            self._predicted[run].add(output.stamp_ns)
            gt = self.gt_detections.get(output.stamp_ns)
            if gt is None:
                if run == self.runs[0]:
                    self.counts['frames_missing_gt_detections'] += 1
                return
            if run == self.runs[0]:
                self.counts['frames_with_gt_detections'] += 1
            self._detection[run].add(output.boxes, output.scores, labels, gt[0], gt[1])

    def bind_image(self, stamp: int, image_stamp: int) -> Optional[FrameOutput]:
        """Record the image paired with the output of cloud ``stamp``; return the new output."""
        with self._lock:
            output = self.outputs.get(stamp)
            if output is None:
                return None
            self.outputs[stamp] = replace(output, image_stamp_ns=image_stamp)
            return self.outputs[stamp]

    def add_missing(self, cloud_stamps: Sequence[int]) -> int:
        """Count clouds without output as frames without detections; return how many."""
        missing = 0
        empty = np.zeros((0, 7), dtype=np.float32)
        with self._lock:
            for stamp in cloud_stamps:
                gt = self.gt_detections.get(stamp)
                for run in self.runs:
                    if stamp in self._predicted[run]:
                        continue
                    self._predicted[run].add(stamp)
                    if run == self.runs[0]:
                        missing += 1
                    if gt is not None:
                        if run == self.runs[0]:
                            self.counts['frames_with_gt_detections'] += 1
                        self._detection[run].add(empty, np.zeros(0), np.zeros(0, np.int64),
                                                 gt[0], gt[1])
        return missing

    def add_semantic_gt(self, image_stamp: int, ids: np.ndarray) -> None:
        """Add a ground truth semantic map (matched with the prediction of the same stamp)."""
        with self._lock:
            self.has_semantic_gt = True
            self._match(self._semantic_gt, self._semantic_pred, image_stamp, ids, gt_side=True)

    def add_semantic_prediction(self, image_stamp: int, ids: np.ndarray) -> None:
        """Add a predicted semantic map (matched with the ground truth of the same stamp)."""
        with self._lock:
            self._match(self._semantic_pred, self._semantic_gt, image_stamp, ids, gt_side=False)

    def _match(self, mine: Dict[int, np.ndarray], other: Dict[int, np.ndarray], stamp: int,
               ids: np.ndarray, gt_side: bool) -> None:
        if stamp not in other:
            mine[stamp] = np.array(ids, dtype=np.uint8)
            while len(mine) > SEMANTIC_BUFFER:
                mine.pop(min(mine))
                self.counts['semantic_unmatched'] += 1
            return
        partner = other.pop(stamp)
        gt, pred = (ids, partner) if gt_side else (partner, ids)
        gt = np.array(gt, dtype=np.uint8)
        if pred.shape != gt.shape:
            self.counts['semantic_size_mismatch'] += 1
            rows = ((np.arange(gt.shape[0]) + 0.5) * pred.shape[0] / gt.shape[0]).astype(int)
            cols = ((np.arange(gt.shape[1]) + 0.5) * pred.shape[1] / gt.shape[1]).astype(int)
            pred = pred[np.minimum(rows, pred.shape[0] - 1)][:, np.minimum(
                cols, pred.shape[1] - 1)]
        out_of_range = (gt != 255) & (gt >= self._semantic.num_classes)
        if out_of_range.any():
            self.counts['semantic_gt_ids_out_of_range'] += int(out_of_range.sum())
            gt[out_of_range] = 255
        self._semantic.add(pred, gt)
        self.counts['semantic_frames'] += 1

    def results(self) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Return (report parts, metric objects for the plots); call when all frames are in."""
        with self._lock:
            if self._results is not None:
                return self._results
            if self.has_semantic_gt:
                self.counts['semantic_unmatched'] += (len(self._semantic_pred)
                                                      + len(self._semantic_gt))
            self._semantic_pred.clear()
            self._semantic_gt.clear()
            detection = {run: accumulator.compute()
                         for run, accumulator in self._detection.items()}
            semantic = self._semantic.compute() if self.counts['semantic_frames'] else None
        parts = {
            'detection': {run: metrics.to_dict() for run, metrics in detection.items()}
            if self.gt_detections else {},
            'semantic': semantic.to_dict() if semantic is not None else None,
            'ground_truth': dict(self.counts, gt_classes_unknown=dict(self.mapper.unknown),
                                 gt_classes_ignored=dict(self.mapper.ignored)),
        }
        self._results = (parts, {'detection': detection if self.gt_detections else {},
                                 'semantic': semantic})
        return self._results


# ------------------------------------------------------------------------------ options

@dataclass(frozen=True)
class EvalOptions:
    """Everything the evaluator was asked to do."""

    bag: str
    out: str
    weights: Optional[str] = None
    device: Optional[str] = None
    params_file: Optional[str] = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    topics: BagTopics = DEFAULT_TOPICS
    class_map: Optional[str] = None
    lidar_only_pass: bool = True
    max_frames: Optional[int] = None
    progress: bool = True
    live: bool = False
    rate: float = 1.0
    use_sim_time: bool = False
    node_namespace: Optional[str] = None  # set: use a running node in this namespace
    node_name: str = DEFAULT_NODE_NAME
    node_pointcloud_topic: Optional[str] = None  # where to publish clouds (remapped input)
    node_image_topic: Optional[str] = None  # where to publish images (remapped input)
    node_camera_info_topic: Optional[str] = None  # where to publish camera_info (remapped)
    startup_timeout_s: float = 120.0
    drain_timeout_s: float = 5.0


def weights_class_map(metadata: Mapping[str, Any]) -> Optional[Dict[str, Optional[str]]]:
    """Return the dataset class map recorded with the weights (training config), if any."""
    train_config = metadata.get('train_config')
    if train_config is None:
        train_config = (metadata.get('provenance') or {}).get('train_config')
    mapping = ((train_config or {}).get('data') or {}).get('class_map')
    return dict(mapping) if isinstance(mapping, dict) else None


def _class_map(options: EvalOptions, runtime: InferenceRuntime
               ) -> Optional[Dict[str, Optional[str]]]:
    """Return --class-map, else the weights' training class map, else None (names only)."""
    if options.class_map:
        return load_class_map(options.class_map)
    return weights_class_map(runtime.metadata)


def _load_pipeline(options: EvalOptions, settings: NodeSettings
                   ) -> Tuple[pipeline.FramePipeline, str]:
    """Load the weights as the node does; return the frame pipeline and the weights path."""
    try:
        return pipeline.load_pipeline(settings, options.weights)
    except pipeline.PipelineError as error:
        raise EvalError(str(error)) from None


def _check_topics(bag: BagReader, topics: BagTopics, notes: List[str]) -> Dict[str, bool]:
    """Check the input and ground truth topics; return which optional ones are used."""
    bag.require(topics.pointcloud, [POINTCLOUD_TYPE], 'point cloud topic')
    used = {'image': False, 'camera_info': False, 'gt_detections': False, 'gt_semantic': False}
    if topics.image:
        bag.require(topics.image, [IMAGE_TYPE], 'image topic')
        used['image'] = True
        if topics.camera_info and bag.has_topic(topics.camera_info):
            bag.require(topics.camera_info, [CAMERA_INFO_TYPE], 'camera info topic')
            used['camera_info'] = True
    else:
        notes.append('no image topic: every frame runs LiDAR-only')
    for key, msgtype in (('gt_detections', DETECTIONS_TYPE), ('gt_semantic', IMAGE_TYPE)):
        topic = getattr(topics, key)
        if not topic:
            continue
        if bag.has_topic(topic):
            bag.require(topic, [msgtype], 'ground truth topic')
            used[key] = True
        else:
            notes.append(f'ground truth topic {topic} is not in the bag: no '
                         f'{"detection" if key == "gt_detections" else "semantic"} metrics')
    return used


def inside_grid(boxes_cloud: np.ndarray, frame_pipeline: pipeline.FramePipeline) -> np.ndarray:
    """Return (K,) bool: box centres inside the model's BEV grid (x, y, in the model frame)."""
    centres = frame_pipeline.frame_settings.extrinsic.points_to_model(
        np.asarray(boxes_cloud, dtype=np.float64).reshape(-1, 7)[:, :3].copy())  # (K, 3)
    return frame_pipeline.runtime.config.grid.contains_xy(centres)


def _load_gt_detections(bag: BagReader, topic: str, evaluation: Evaluation,
                        frame_pipeline: pipeline.FramePipeline) -> None:
    for item in bag.messages([topic]):
        arrays = detections_from_msg(item.message)
        evaluation.add_gt_detections(arrays, inside_grid(arrays.boxes, frame_pipeline))


def _timing_stats(samples: Mapping[str, List[float]]) -> Dict[str, Dict[str, Optional[float]]]:
    return {stage: percentiles(values) for stage, values in samples.items() if values}


def _write_frames(path: str, outputs: Mapping[int, FrameOutput]) -> None:
    with open(path, 'w', encoding='utf-8') as stream:
        for stamp in sorted(outputs):
            stream.write(json.dumps(outputs[stamp].to_json()) + '\n')


# ------------------------------------------------------------------------------ offline

def _record(stamp: int, image_stamp: Optional[int], output: pipeline.FrameOutput) -> FrameOutput:
    """Return a frame's outputs as a subscriber of the node's messages reads them."""
    return FrameOutput(stamp_ns=stamp, image_stamp_ns=image_stamp,
                       boxes=output.published_boxes(),
                       scores=np.asarray(output.scores, dtype=np.float32),
                       class_names=list(output.class_names))


def evaluate_offline(options: EvalOptions) -> Dict[str, Any]:
    """Run the offline evaluation and write the report; return the report dict."""
    started = time.perf_counter()
    settings, _ = node_settings(options.params_file, options.overrides, options.node_name)
    if options.device:
        settings = replace(settings, device=options.device)
    notes: List[str] = []
    with BagReader(options.bag) as bag:
        used = _check_topics(bag, options.topics, notes)
        frame_pipeline, weights = _load_pipeline(options, settings)
        runtime = frame_pipeline.runtime
        config = runtime.config
        mapper = ClassMapper(config.detection_classes, _class_map(options, runtime))
        runs = RUNS_OFFLINE if options.lidar_only_pass else RUNS_OFFLINE[:1]
        evaluation = Evaluation(config.detection_classes, config.semantic_classes, mapper, runs)
        if used['gt_detections']:
            _load_gt_detections(bag, options.topics.gt_detections, evaluation, frame_pipeline)
        total = bag.message_counts[options.topics.pointcloud]
        if options.max_frames is not None:
            total = min(total, options.max_frames)
        strip = StripCollector(total)
        sync = LidarTriggeredSync(settings.sync_settings())
        timings: Dict[str, List[float]] = {}
        counts = {'clouds': 0, 'images': 0, 'frames': 0, 'fused': 0, 'lidar_only': 0,
                  'bad_clouds': 0, 'bad_images': 0, 'empty_clouds': 0, 'bad_camera_info': 0,
                  'uncalibrated_images': 0, 'unfamiliar_camera_frames': 0,
                  'camera_pose_from_tf': 0, 'bad_transforms': 0}
        camera: List[Optional[CameraIntrinsics]] = [None]  # the latest usable camera_info
        camera_frame = ['']  # its frame
        # The camera pose, as the node takes it: /tf where it links the cloud's and the
        # camera's frames, else the camera_* settings.
        tf_topics = {topic: topic == options.topics.tf_static
                     for topic in (options.topics.tf_static, '/tf')
                     if settings.use_tf and topic and bag.has_topic(topic)}
        tree = TransformTree()
        clock_s = [0.0]  # log time of the latest message: ages /tf edges
        cloud_stamps: List[int] = []
        cloud_index: Dict[int, int] = {}
        runtime.warmup(iterations=1)  # first-frame set-up costs stay out of the timings

        def process(frames) -> None:
            for frame in frames:
                convert_started = time.perf_counter()
                try:
                    cloud = prepare_cloud(frame.cloud, frame_pipeline)
                except conversions.ConversionError:
                    counts['bad_clouds'] += 1
                    continue
                stamp = stamp_ns(frame.cloud.header)
                rgb = None if frame.image is None else np.ascontiguousarray(frame.image[1])
                image_stamp = None if frame.image is None else frame.image[0]
                convert_ms = (time.perf_counter() - convert_started) * 1e3
                placed = rgb is not None and frame_pipeline.places_images(camera[0])
                pose = (tree.lookup(camera_frame[0], frame.cloud.header.frame_id, clock_s[0],
                                    image_stamp * 1e-9)
                        if placed and camera_frame[0] else None)
                geometry = (frame_pipeline.camera_geometry(
                    camera[0], rgb.shape[:2], cloud_to_camera=pose) if placed else None)
                counts['camera_pose_from_tf'] += int(geometry is not None and pose is not None)
                output = frame_pipeline.run(cloud, rgb, camera_geometry=geometry)
                counts['uncalibrated_images'] += int(output.image_uncalibrated)
                counts['unfamiliar_camera_frames'] += int(bool(output.unfamiliar_camera))
                result = output.result
                counts['frames'] += 1
                counts['empty_clouds'] += int(len(cloud.points) == 0)
                counts['lidar_only' if result.lidar_only else 'fused'] += 1
                for stage, value in (('convert', convert_ms), *result.timings_ms.items()):
                    timings.setdefault(stage, []).append(value)
                record = _record(stamp, image_stamp, output)
                evaluation.add_prediction(runs[0], record)
                if strip.wants(cloud_index.get(stamp, -1)):
                    gt = evaluation.gt_detections.get(stamp, (np.zeros((0, 7)), None))[0]
                    strip.add_cloud(stamp, cloud.points, gt)
                    strip.add_prediction(record)
                if result.semantic is not None:
                    evaluation.add_semantic_prediction(image_stamp, result.semantic)
                    strip.add_semantic(image_stamp, result.semantic)
                if len(runs) > 1:
                    alone = output if rgb is None else frame_pipeline.run(cloud, None)
                    evaluation.add_prediction(runs[1], _record(stamp, None, alone))

        input_topics = [options.topics.pointcloud]
        if used['image']:
            input_topics.append(options.topics.image)
        if used['gt_semantic']:
            input_topics.append(options.topics.gt_semantic)
        if used['camera_info']:
            input_topics.append(options.topics.camera_info)
        input_topics += list(tf_topics)
        fields = settings.cloud_fields()
        with tqdm(total=total, desc='offline evaluation', unit='frame',
                  disable=not options.progress) as bar:
            for item in bag.messages(input_topics):
                now_s = clock_s[0] = item.log_time_ns * 1e-9
                process(sync.poll(now_s))
                msg = item.message
                if item.topic in tf_topics:
                    counts['bad_transforms'] += len(tree.update_from_message(
                        msg, tf_topics[item.topic], now_s))
                elif item.topic == options.topics.pointcloud:
                    if options.max_frames is not None and counts['clouds'] >= options.max_frames:
                        break
                    counts['clouds'] += 1
                    bar.update(1)
                    try:
                        conversions.pointcloud2_to_structured(msg, fields)
                    except conversions.ConversionError:
                        counts['bad_clouds'] += 1
                        continue
                    stamp = stamp_ns(msg.header)
                    cloud_stamps.append(stamp)
                    cloud_index[stamp] = counts['clouds'] - 1
                    process(sync.add_cloud(
                        stamp_to_seconds(msg.header.stamp.sec, msg.header.stamp.nanosec), msg,
                        now_s))
                elif item.topic == options.topics.image:
                    counts['images'] += 1
                    try:
                        rgb = conversions.image_to_rgb(msg)
                    except conversions.ConversionError:
                        counts['bad_images'] += 1
                        continue
                    image_stamp = stamp_ns(msg.header)
                    strip.add_image(image_stamp, rgb)
                    process(sync.add_image(
                        stamp_to_seconds(msg.header.stamp.sec, msg.header.stamp.nanosec),
                        (image_stamp, rgb), now_s))
                elif item.topic == options.topics.camera_info:
                    try:
                        camera[0] = CameraIntrinsics.from_camera_info(
                            msg.width, msg.height, msg.k, msg.distortion_model, msg.d)
                        camera_frame[0] = msg.header.frame_id
                    except CalibrationError:
                        counts['bad_camera_info'] += 1
                else:
                    evaluation.add_semantic_gt(stamp_ns(msg.header), mono8_to_array(msg))
            process(sync.flush())
        counts['no_output'] = evaluation.add_missing(cloud_stamps)
    report = _assemble(options, 'offline', weights, runtime, settings, counts,
                       sync.counters.as_dict(), evaluation, timings, notes,
                       time.perf_counter() - started)
    _finish(options, report, evaluation, strip, runtime, {'inference total': timings.get(
        'total', [])})
    return report


def _assemble(options: EvalOptions, mode: str, weights: str, runtime: InferenceRuntime,
              settings: NodeSettings, counts: Dict[str, int], sync_counts: Dict[str, int],
              evaluation: Evaluation, timings: Mapping[str, List[float]], notes: List[str],
              elapsed_s: float) -> Dict[str, Any]:
    parts, _ = evaluation.results()
    unknown = parts['ground_truth']['gt_classes_unknown']
    if unknown:
        notes.append('ground truth class ids not among the detector classes and not in the '
                     f'class map (ignored): {", ".join(sorted(unknown))}; pass --class-map')
    return {
        'mode': mode, 'bag': os.path.abspath(options.bag), 'weights': weights,
        'device': str(runtime.device), 'precision': runtime.precision,
        'elapsed_s': elapsed_s,
        'topics': {key: getattr(options.topics, key) for key in
                   ('pointcloud', 'image', 'gt_detections', 'gt_semantic')},
        'detection_classes': list(runtime.config.detection_classes),
        'settings': settings.values(), 'frames': counts, 'sync': sync_counts,
        'detection': parts['detection'], 'semantic': parts['semantic'],
        'ground_truth': parts['ground_truth'], 'timing_ms': _timing_stats(timings),
        'notes': notes,
    }


def _finish(options: EvalOptions, report: Dict[str, Any], evaluation: Evaluation,
            strip: StripCollector, runtime: InferenceRuntime,
            latency: Mapping[str, List[float]]) -> None:
    _, metrics = evaluation.results()
    plots = PlotData(
        detection=metrics['detection'], semantic=metrics['semantic'],
        latency_ms={name: list(values) for name, values in latency.items()},
        strip=strip.frames(),
        semantic_palette=np.asarray(runtime.config.semantic_palette, dtype=np.uint8),
        x_range_m=tuple(runtime.config.grid.x_range_m),
        y_range_m=tuple(runtime.config.grid.y_range_m))
    os.makedirs(options.out, exist_ok=True)
    _write_frames(os.path.join(options.out, 'frames.jsonl'), evaluation.outputs)
    report['files'] = sorted(write_report(options.out, report, plots)) + ['frames.jsonl']
    write_json(os.path.join(options.out, 'report.json'), report)


# ------------------------------------------------------------------------------ live

def node_command(options: EvalOptions, namespace: str, weights: str,
                 overrides: Mapping[str, Any]) -> List[str]:
    """Return the command line that starts perception_node for a live evaluation."""
    values = dict(overrides)
    values['weights_path'] = weights
    if options.device:
        values['device'] = options.device
    if options.use_sim_time:
        values['use_sim_time'] = True
    return replay.node_command(values, options.params_file,
                               {'__node': options.node_name, '__ns': namespace})


class RecordedOutputs:
    """Evaluate the node outputs a live replay recorded, in arrival order.

    During the replay ``replay.OutputRecorder`` only stores the raw messages in the outputs bag,
    so the evaluator takes as little CPU from the node as it can (decoding and scoring 10 frames
    a second would compete with it on a small machine); ``evaluate`` reads the bag back.
    """

    def __init__(self, evaluation: Evaluation, strip: StripCollector, typestore,
                 topics: Mapping[str, str], image_stamps: Sequence[int]) -> None:
        self.evaluation = evaluation
        self.strip = strip
        self.typestore = typestore
        self.topics = dict(topics)
        self.timings: Dict[str, List[float]] = {}
        self.node_lidar_only: Dict[int, bool] = {}
        self.node_latency_ms: List[float] = []  # node clock now - cloud stamp
        self._image_stamps = sorted(image_stamps)

    def evaluate(self, bag_path: str) -> None:
        """Evaluate the outputs recorded in ``bag_path`` (the closed outputs bag), in order."""
        evaluate = {self.topics['detections']: self._evaluate_detections,
                    self.topics['semantic']: self._evaluate_semantic,
                    self.topics['timings']: self._evaluate_timings}
        with BagReader(bag_path) as bag:
            for item in bag.messages(list(evaluate), raw=True):
                evaluate[item.topic](item.message)

    def _evaluate_detections(self, data: bytes) -> None:
        arrays = detections_from_msg(self.typestore.deserialize_cdr(data, DETECTIONS_TYPE))
        output = FrameOutput(stamp_ns=arrays.stamp_ns, image_stamp_ns=None, boxes=arrays.boxes,
                             scores=arrays.scores, class_names=list(arrays.class_ids))
        self.evaluation.add_prediction(self.evaluation.runs[0], output)
        self.strip.add_prediction(output)

    def _evaluate_semantic(self, data: bytes) -> None:
        msg = self.typestore.deserialize_cdr(data, IMAGE_TYPE)
        ids = mono8_to_array(msg)
        self.evaluation.add_semantic_prediction(stamp_ns(msg.header), ids)
        self.strip.add_semantic(stamp_ns(msg.header), ids)

    def _evaluate_timings(self, data: bytes) -> None:
        msg = self.typestore.deserialize_cdr(data, replay.DIAGNOSTICS_TYPE)
        stamp = stamp_ns(msg.header)
        for status in msg.status:
            values = {item.key: item.value for item in status.values}
            for key, value in values.items():
                if key.endswith('_ms') and key not in NOT_STAGES and value:
                    self.timings.setdefault(key[:-3], []).append(float(value))
            if values.get('end_to_end_ms'):
                self.node_latency_ms.append(float(values['end_to_end_ms']))
            self.node_lidar_only[stamp] = values.get('lidar_only') == 'true'
            offset = values.get('image_offset_ms')
            if offset:
                image_stamp = self.snap_image_stamp(stamp + int(round(float(offset) * 1e6)))
                bound = self.evaluation.bind_image(stamp, image_stamp)
                if bound is not None:
                    self.strip.add_prediction(bound)

    def snap_image_stamp(self, approximate: int, tolerance_ns: int = 1_000_000) -> int:
        """Return the published image stamp nearest ``approximate`` (ms-rounded by the node)."""
        stamps = self._image_stamps
        index = bisect.bisect_left(stamps, approximate)
        near = [stamps[i] for i in (index - 1, index) if 0 <= i < len(stamps)]
        if not near:
            return approximate
        nearest = min(near, key=lambda s: abs(s - approximate))
        return nearest if abs(nearest - approximate) <= tolerance_ns else approximate


def evaluate_live(options: EvalOptions) -> Dict[str, Any]:
    """Replay the bag into the node over DDS, record its outputs and write the report."""
    started = time.perf_counter()
    if options.rate <= 0:
        raise EvalError('--rate must be positive')
    # Images through shared memory, for this process's player and the node it starts.
    os.environ.update(replay.large_message_dds_env())
    settings, _ = node_settings(options.params_file, options.overrides, options.node_name)
    if options.device:
        settings = replace(settings, device=options.device)
    notes: List[str] = []
    os.makedirs(options.out, exist_ok=True)
    topics = options.topics
    with BagReader(options.bag) as bag:
        used = _check_topics(bag, topics, notes)
        # The evaluator loads the same weights for the class names, grid and palette only.
        frame_pipeline, weights = _load_pipeline(
            replace(options, device='cpu'),
            replace(settings, device='cpu', torch_compile=False, cuda_graphs=False))
        runtime = frame_pipeline.runtime
        config = runtime.config
        mapper = ClassMapper(config.detection_classes, _class_map(options, runtime))
        evaluation = Evaluation(config.detection_classes, config.semantic_classes, mapper,
                                ('fused',))
        if used['gt_detections']:
            _load_gt_detections(bag, topics.gt_detections, evaluation, frame_pipeline)
        total = bag.message_counts[topics.pointcloud]
        if options.max_frames is not None:
            total = min(total, options.max_frames)
        strip = StripCollector(total)
        running = options.node_namespace is not None
        namespace = (options.node_namespace if running
                     else f'/bev_perception_eval_{os.getpid()}')
        node_path = f'{namespace.rstrip("/")}/{options.node_name}'
        outputs_path = os.path.join(options.out, 'outputs')
        process = None
        session = replay.RosSession('bev_perception_eval_player')
        try:
            if not running:
                overrides = {name: value for name, value in options.overrides.items()
                             if name not in ('weights_path', 'device', 'use_sim_time')}
                process = replay.NodeProcess(node_command(options, namespace, weights, overrides),
                                             os.path.join(options.out, 'node.log'))
            with BagWriter(outputs_path, storage='mcap', typestore=bag.typestore,
                           overwrite=True) as writer:
                recorder = replay.OutputRecorder(session.node, writer,
                                                 ('detections', 'semantic', 'timings'),
                                                 options.node_name, namespace)
                targets = {topics.pointcloud: (options.node_pointcloud_topic
                                               or f'{node_path}/input/pointcloud')}
                if used['image']:
                    targets[topics.image] = (options.node_image_topic
                                             or f'{node_path}/input/image')
                if used['camera_info']:
                    targets[topics.camera_info] = (options.node_camera_info_topic
                                                   or f'{node_path}/input/camera_info')
                if topics.tf_static and bag.has_topic(topics.tf_static):
                    targets[topics.tf_static] = '/tf_static'  # the camera pose, latched
                publishers = replay.bag_publishers(session.node, bag, targets, LOGGER.warning)
                clock = (replay.SimClock(session.node, options.rate) if options.use_sim_time
                         else None)
                if not replay.wait_for_node(session.node, list(publishers.values()),
                                            recorder.topics['detections'], process,
                                            options.startup_timeout_s):
                    raise EvalError(
                        f'no perception_node at {node_path} within '
                        f'{options.startup_timeout_s:.0f} s (it must subscribe to '
                        f'{targets[topics.pointcloud]} and publish '
                        f'{recorder.topics["detections"]}; for a launched node pass its '
                        'remapped inputs with --node-pointcloud-topic/--node-image-topic)'
                        + (f'; node log {process.log_path}:\n{process.tail()}'
                           if process else ''))
                with tqdm(total=total, desc=f'live replay x{options.rate:g}', unit='frame',
                          disable=not options.progress) as bar:
                    played = replay.play(
                        bag, publishers, options.rate, topics.pointcloud,
                        topics.image if used['image'] else None, clock=clock,
                        also_read=[topics.gt_semantic] if used['gt_semantic'] else [],
                        on_message=_live_inputs(bag, topics, evaluation, strip, bar),
                        max_clouds=total, process=process)
                replay.drain(recorder, played.cloud_stamps, options.drain_timeout_s, process)
                replay.wait_for_diagnostics(recorder, settings.diagnostics_period_s + 1.0)
                recorder.stop_recording()  # outputs arriving from now on are not evaluated
                if clock is not None:
                    clock.stop()
            recorded = RecordedOutputs(evaluation, strip, bag.typestore, recorder.topics,
                                       played.image_stamps)
            recorded.evaluate(outputs_path)
            cloud_stamps = played.cloud_stamps
            missing = evaluation.add_missing(cloud_stamps)
        except replay.ReplayError as error:
            raise EvalError(str(error)) from None
        finally:
            if process is not None:
                exit_code = process.stop()
                if exit_code not in (0, None, -signal.SIGINT):
                    notes.append(f'perception_node exited with code {exit_code}')
            session.close()
    publish_s = played.publish_s
    latencies = [(recorder.received_s[stamp] - publish_s[stamp]) * 1e3
                 for stamp in cloud_stamps if stamp in recorder.received_s]
    received = sorted(recorder.received_s[s] for s in cloud_stamps if s in recorder.received_s)
    published = sorted(publish_s.values())
    lidar_only = sum(1 for stamp in cloud_stamps if recorded.node_lidar_only.get(stamp))
    images = len(played.image_stamps)
    counts = {'clouds': len(cloud_stamps), 'images': images,
              'frames': len(received), 'fused': len(received) - lidar_only,
              'lidar_only': lidar_only, 'no_output': missing}
    report = _assemble(options, 'live', weights, runtime, settings, counts, {}, evaluation,
                       recorded.timings, notes, time.perf_counter() - started)
    report['device'] = recorder.diagnostics.get('device', settings.device)
    report['live'] = {
        'rate': options.rate, 'use_sim_time': options.use_sim_time,
        'node': node_path, 'started_node': not running,
        'clouds_published': len(cloud_stamps), 'images_published': images,
        'detections_received': len(received), 'dropped_frames': missing,
        'end_to_end_latency_ms': percentiles(latencies),
        'output_rate_hz': _rate(received), 'input_rate_hz': _rate(published),
        'node_diagnostics': recorder.diagnostics,
    }
    images_in = recorder.diagnostics.get('images_in')
    if images and images_in == '0':
        notes.append(f'the node received none of the {images} images (its diagnostics say '
                     'images_in 0): with best_effort input QoS, Fast DDS drops large images '
                     '(e.g. 1920x1208 rgb8); rerun with -p input_reliability:=reliable')
    if options.use_sim_time:
        # With /clock the node's own latency (its clock - cloud stamp) is meaningful too.
        report['live']['node_clock_latency_ms'] = percentiles(recorded.node_latency_ms)
    _finish(options, report, evaluation, strip, runtime,
            {'end-to-end': latencies,
             'node processing': recorded.timings.get('processing', [])})
    return report


def _live_inputs(bag: BagReader, topics: BagTopics, evaluation: Evaluation,
                 strip: StripCollector, bar: tqdm) -> Callable[[Any], None]:
    """Return the player's callback: semantic ground truth, strip frames, progress."""
    clouds = 0

    def on_message(item) -> None:
        nonlocal clouds
        if item.topic == topics.gt_semantic:
            msg = bag.deserialize(item.message, IMAGE_TYPE, item.topic)
            evaluation.add_semantic_gt(stamp_ns(msg.header), mono8_to_array(msg))
        elif item.topic == topics.pointcloud:
            bar.update(1)
            if strip.wants(clouds):
                msg = bag.deserialize(item.message, POINTCLOUD_TYPE, item.topic)
                try:
                    points = conversions.pointcloud2_to_array(msg)
                except conversions.ConversionError:
                    points = np.zeros((0, 4), dtype=np.float32)
                stamp = cdr_header_stamp_ns(item.message)
                gt = evaluation.gt_detections.get(stamp, (np.zeros((0, 7)), None))[0]
                strip.add_cloud(stamp, points, gt)
            clouds += 1
        elif item.topic == topics.image and strip.active:
            msg = bag.deserialize(item.message, IMAGE_TYPE, item.topic)
            try:
                strip.add_image(stamp_ns(msg.header), conversions.image_to_rgb(msg))
            except conversions.ConversionError:
                pass
    return on_message


def _rate(times_s: Sequence[float]) -> Optional[float]:
    if len(times_s) < 2 or times_s[-1] <= times_s[0]:
        return None
    return (len(times_s) - 1) / (times_s[-1] - times_s[0])


# ------------------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog='bev_perception_eval',
        description='Evaluate bev_perception on a rosbag2 bag: offline through the inference '
                    'runtime (default) or live through a perception_node over DDS (--live).')
    parser.add_argument('bag', help='rosbag2 bag folder (mcap or sqlite3)')
    parser.add_argument('--weights', help='weights file (default: weights_path of the params, '
                                          "else the shipped weights of the params' profile)")
    parser.add_argument('--out', default='eval_out', help='report folder (default: eval_out)')
    parser.add_argument('--device', help="cpu, cuda or cuda:N (default: the params' device)")
    parser.add_argument('--params-file', help='perception_node params YAML (default: none, the '
                                              "node's defaults)")
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='node parameter override, as with ros2 run -p (repeatable)')
    topics = parser.add_argument_group('topics (a user bag names its own)')
    topics.add_argument('--pointcloud-topic', default=DEFAULT_TOPICS.pointcloud)
    topics.add_argument('--image-topic', default=DEFAULT_TOPICS.image,
                        help='empty string: no camera (LiDAR-only)')
    topics.add_argument('--gt-detections-topic', default=DEFAULT_TOPICS.gt_detections,
                        help='vision_msgs/Detection3DArray ground truth; empty: none')
    topics.add_argument('--gt-semantic-topic', default=DEFAULT_TOPICS.gt_semantic,
                        help='mono8 category-id ground truth; empty: none')
    parser.add_argument('--class-map', help='JSON/YAML object mapping ground truth class ids to '
                                            'detector classes (or null to ignore)')
    parser.add_argument('--no-lidar-only-pass', action='store_true',
                        help='offline: skip the extra LiDAR-only run of fused frames')
    parser.add_argument('--max-frames', type=int, help='stop after this many clouds')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    live = parser.add_argument_group('live replay')
    live.add_argument('--live', action='store_true', help='replay into a node over DDS')
    live.add_argument('--rate', type=float, default=1.0, help='replay speed factor (default 1)')
    live.add_argument('--use-sim-time', action='store_true',
                      help='publish /clock from the bag and start the node with use_sim_time')
    live.add_argument('--node-namespace', help='use the running node in this namespace '
                                               'instead of starting one')
    live.add_argument('--node-name', default=DEFAULT_NODE_NAME,
                      help=f'node name (default {DEFAULT_NODE_NAME})')
    live.add_argument('--node-pointcloud-topic',
                      help='topic the node reads clouds from (default: its ~/input/pointcloud; '
                           'the launch file remaps it to /points)')
    live.add_argument('--node-image-topic',
                      help='topic the node reads images from (default: its ~/input/image; the '
                           'launch file remaps it to /camera/image)')
    live.add_argument('--node-camera-info-topic',
                      help='topic the node reads camera_info from (default: its '
                           '~/input/camera_info; the launch file remaps it to '
                           '/camera/camera_info)')
    live.add_argument('--startup-timeout', type=float, default=120.0,
                      help='seconds to wait for the node (default 120)')
    return parser


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """Return the options of parsed arguments."""
    return EvalOptions(
        bag=args.bag, out=args.out, weights=args.weights, device=args.device,
        params_file=args.params_file, overrides=parse_param_overrides(args.param),
        topics=replace(DEFAULT_TOPICS, pointcloud=args.pointcloud_topic,
                       image=args.image_topic, gt_detections=args.gt_detections_topic,
                       gt_semantic=args.gt_semantic_topic),
        class_map=args.class_map, lidar_only_pass=not args.no_lidar_only_pass,
        max_frames=args.max_frames, progress=not args.no_progress, live=args.live,
        rate=args.rate, use_sim_time=args.use_sim_time, node_namespace=args.node_namespace,
        node_name=args.node_name, node_pointcloud_topic=args.node_pointcloud_topic,
        node_image_topic=args.node_image_topic,
        node_camera_info_topic=args.node_camera_info_topic,
        startup_timeout_s=args.startup_timeout)


def _summary(report: Mapping[str, Any]) -> str:
    lines = [f'{report["mode"]} evaluation of {report["bag"]}: {report["frames"]}']
    for run, values in (report.get('detection') or {}).items():
        lines.append(f'  {run}: mAP {values["map"] if values["map"] is not None else "n/a"} '
                     f'(by threshold {values["map_by_threshold"]})')
    if report.get('semantic'):
        lines.append(f'  semantic mIoU {report["semantic"]["miou"]}')
    total = report.get('timing_ms', {}).get('total')
    if total:
        lines.append(f'  inference p50 {total["p50"]:.1f} ms, p95 {total["p95"]:.1f} ms')
    live = report.get('live')
    if live:
        latency = live['end_to_end_latency_ms']
        lines.append(f'  live: {live["detections_received"]}/{live["clouds_published"]} frames, '
                     f'dropped {live["dropped_frames"]}, end-to-end p50 {latency["p50"]} ms, '
                     f'output {live["output_rate_hz"]} Hz')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the evaluator; return the exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s: %(message)s')
    try:
        options = options_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        report = evaluate_live(options) if options.live else evaluate_offline(options)
    except (BagError, EvalError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    print(_summary(report))
    print(f'report: {os.path.join(options.out, "report.md")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
