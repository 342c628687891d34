"""``make demo``: replay a drive bag through the perception node and score it on its ground truth.

    python -m training.demo_drive --out out/demo/drive_bag     # the synthetic drive (checkout)
    python -m bev_perception.tools.demo --bag out/demo/drive_bag --out out/demo

The bag is a converted A2D2 scene (``training.to_bag``; topics ``bag_io.DEFAULT_TOPICS``):
PointCloud2, Image, CameraInfo, and ground truth (Detection3DArray with the training class
names, mono8 semantic ids) with the recorded stamps. The demo starts ``perception_node``
(console script, shipped weights, ``use_sim_time``), replays every topic of the bag into it at
the recorded rate with ``/clock`` (reliable QoS like ``ros2 bag play``, since best effort over
UDP drops megabyte images unless the socket buffers are raised) and records its outputs (into
``outputs_bag``) through ``bev_perception.tools.replay``, then writes ``summary.json``,
``summary.md``, ``bev.png`` (points, predicted and true boxes) and ``camera_semantic.png``
(camera image, predicted and true semantics) to the output folder.

Every process started here keeps DDS on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``,
``ROS_LOCALHOST_ONLY=1``) in a domain of its own (``--domain-id``, default from the process id).
"""

import argparse
from dataclasses import dataclass, field
import json
import math
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bev_perception import conversions
from bev_perception.bag_io import (BagError, BagReader, BagWriter, cdr_header_stamp_ns,
                                   DEFAULT_TOPICS, detections_from_msg, DETECTIONS_TYPE,
                                   IMAGE_TYPE, mono8_to_array, POINTCLOUD_TYPE, stamp_ns)
from bev_perception.metrics import DetectionAccumulator, match_frame, SemanticAccumulator
from bev_perception.tools import replay
from bev_perception.tools.report import (percentiles, plot_bev, plot_camera_semantics,
                                         StripFrame)
from bev_perception.topics import INPUT_TOPICS
from bev_perception.weights import resolve_weights_path, WeightsError
import numpy as np

MATCH_DISTANCE_M = 2.0
DISTANCE_THRESHOLDS_M = (0.5, 1.0, 2.0, 4.0)
#: Node outputs recorded into the outputs bag (with /diagnostics).
RECORDED_OUTPUTS = ('detections', 'semantic', 'semantic_color', 'markers', 'label_info',
                    'timings')
#: The replay ends when every cloud was answered or no output came for this long, seconds.
DRAIN_QUIET_S = 4.0
#: A file in the bag folder describing the drive (``training.demo_drive`` writes it).
DRIVE_DESCRIPTION = 'drive.json'


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run."""

    out_dir: str
    bag: str
    weights: str = ''  # empty: the shipped weights
    device: str = ''  # empty: the params file's (cuda, falling back to cpu)
    rate: float = 1.0
    domain_id: int = 0  # 0: derived from the process id
    params_file: str = ''  # empty: the package's config/perception.yaml
    pictures_dir: str = ''  # also copy the PNG renders here (e.g. for the README)
    startup_timeout_s: float = 180.0


@dataclass
class GroundTruth:
    """The bag's clouds and ground truth, by stamp."""

    cloud_stamps: List[int] = field(default_factory=list)  # in bag order: frame index
    boxes: Dict[int, np.ndarray] = field(default_factory=dict)  # cloud stamp -> (K, 7)
    labels: Dict[int, np.ndarray] = field(default_factory=dict)  # cloud stamp -> (K,) int64
    semantic: Dict[int, np.ndarray] = field(default_factory=dict)  # image stamp -> (H, W)
    image_size: Optional[Tuple[int, int]] = None  # (width, height) of the first image
    unknown_classes: Dict[str, int] = field(default_factory=dict)


@dataclass
class Replayed:
    """What the replay published and recorded."""

    played: replay.Played
    received_s: Dict[int, float]  # cloud stamp -> when its detections arrived (monotonic s)
    node_counters: Dict[str, str]  # the node's last diagnostics values
    topics: Dict[str, str]  # output name -> recorded topic
    recorded_messages: int
    exit_code: Optional[int]


def log(message: str) -> None:
    """Print one progress line."""
    print(f'[demo] {message}', flush=True)


# ------------------------------------------------------------------------------ the bag

def read_ground_truth(bag: BagReader, class_names: Sequence[str]) -> GroundTruth:
    """Return the clouds' stamps and the ground truth of a converted A2D2 bag.

    Raises:
        BagError: the bag lacks the clouds or the detection ground truth.
    """
    topics = DEFAULT_TOPICS
    bag.require(topics.pointcloud, [POINTCLOUD_TYPE], 'point cloud topic')
    bag.require(topics.gt_detections, [DETECTIONS_TYPE],
                'ground truth topic (written by training.to_bag)')
    names = [topics.pointcloud, topics.gt_detections] + [
        topic for topic in (topics.image, topics.gt_semantic) if bag.has_topic(topic)]
    truth = GroundTruth()
    for item in bag.messages(names, raw=True):
        if item.topic == topics.pointcloud:
            truth.cloud_stamps.append(cdr_header_stamp_ns(item.message))
        elif item.topic == topics.image:
            if truth.image_size is None:
                msg = bag.deserialize(item.message, IMAGE_TYPE, item.topic)
                truth.image_size = (int(msg.width), int(msg.height))
        elif item.topic == topics.gt_detections:
            arrays = detections_from_msg(bag.deserialize(item.message, DETECTIONS_TYPE,
                                                         item.topic))
            known = np.array([name in class_names for name in arrays.class_ids], dtype=bool)
            for name in arrays.class_ids:
                if name not in class_names:
                    truth.unknown_classes[name] = truth.unknown_classes.get(name, 0) + 1
            truth.boxes[arrays.stamp_ns] = arrays.boxes[known]
            truth.labels[arrays.stamp_ns] = np.array(
                [class_names.index(name) for name in arrays.class_ids if name in class_names],
                dtype=np.int64)
        else:
            msg = bag.deserialize(item.message, IMAGE_TYPE, item.topic)
            truth.semantic[stamp_ns(msg.header)] = np.array(mono8_to_array(msg))
    return truth


def read_frame(bag_dir: str, cloud_stamp: int, image_stamp: Optional[int]
               ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Return one frame's points (N, 4) and camera image (H, W, 3) (None if not found)."""
    topics = DEFAULT_TOPICS
    points, image = np.zeros((0, 4), dtype=np.float32), None
    with BagReader(bag_dir) as bag:
        names = [topics.pointcloud] + ([topics.image] if bag.has_topic(topics.image) else [])
        for item in bag.messages(names, raw=True):
            stamp = cdr_header_stamp_ns(item.message)
            if item.topic == topics.pointcloud and stamp == cloud_stamp:
                points = conversions.pointcloud2_to_array(
                    bag.deserialize(item.message, POINTCLOUD_TYPE, item.topic))
            elif item.topic == topics.image and stamp == image_stamp:
                image = conversions.image_to_rgb(bag.deserialize(item.message, IMAGE_TYPE,
                                                                 item.topic))
    return points, image


# ------------------------------------------------------------------------------ replay

def replay_bag(config: DemoConfig, weights_path: str, params_file: str, out_dir: str
               ) -> Replayed:
    """Start the node, replay the bag into it, record (``outputs_bag``), drain and stop it."""
    topics = DEFAULT_TOPICS
    parameters: Dict[str, Any] = {'weights_path': weights_path, 'use_sim_time': True,
                                  'input_reliability': 'reliable'}
    if config.device:
        parameters['device'] = config.device
    command = replay.node_command(parameters, params_file, {
        INPUT_TOPICS['pointcloud']: topics.pointcloud, INPUT_TOPICS['image']: topics.image,
        INPUT_TOPICS['camera_info']: topics.camera_info})
    session = replay.RosSession('bev_demo')
    process = None
    try:
        outputs_bag = os.path.join(out_dir, 'outputs_bag')
        with BagReader(config.bag) as bag, BagWriter(outputs_bag, storage='mcap',
                                                     overwrite=True) as writer:
            recorder = replay.OutputRecorder(session.node, writer, RECORDED_OUTPUTS,
                                             record_diagnostics=True)
            publishers = replay.bag_publishers(session.node, bag,
                                               {topic: topic for topic in bag.topics}, log)
            clock = replay.SimClock(session.node, config.rate)
            node_log = os.path.join(out_dir, 'node.log')
            log(f'starting perception_node (ROS_DOMAIN_ID {os.environ["ROS_DOMAIN_ID"]}, log '
                f'{node_log})')
            process = replay.NodeProcess(command, node_log)
            inputs = [publishers[topic] for topic in (topics.pointcloud, topics.image)
                      if topic in publishers]
            if not replay.wait_for_node(session.node, inputs, recorder.topics['detections'],
                                        process, config.startup_timeout_s):
                raise replay.ReplayError(f'perception_node did not come up within '
                                         f'{config.startup_timeout_s:.0f} s; its log:\n'
                                         + process.tail(60))
            log('node ready; replaying the bag')
            played = replay.play(bag, publishers, config.rate, topics.pointcloud, topics.image,
                                 clock=clock, process=process)
            replay.drain(recorder, played.cloud_stamps, DRAIN_QUIET_S, process)
            replay.wait_for_diagnostics(recorder, 5.0)
            recorder.stop_recording()
            clock.stop()
            recorded = sum(writer.counts.values())
    finally:
        exit_code = process.stop(timeout_s=30.0) if process is not None else None
        session.close()
    log(f'node stopped with exit code {exit_code}')
    return Replayed(played, recorder.received_s, recorder.diagnostics, recorder.topics, recorded,
                    exit_code)


def read_outputs(bag_dir: str, topics: Dict[str, str]) -> Dict[str, List[Any]]:
    """Return the recorded messages by output name, in arrival order."""
    names = {topic: name for name, topic in topics.items()}
    outputs: Dict[str, List[Any]] = {name: [] for name in topics}
    with BagReader(bag_dir) as bag:
        for item in bag.messages(list(names)):
            outputs[names[item.topic]].append(item.message)
    return outputs


# ------------------------------------------------------------------------------ analysis

def _status_values(array) -> Dict[str, str]:
    return {kv.key: kv.value for status in array.status for kv in status.values}


def _paired_image(stamp: int, timings: Dict[str, str], image_stamps: Sequence[int]
                  ) -> Optional[int]:
    """Return the stamp of the image the node paired with cloud ``stamp`` (ms in timings)."""
    offset = timings.get('image_offset_ms')
    if not offset or not image_stamps:
        return None
    approximate = stamp + int(round(float(offset) * 1e6))
    nearest = min(image_stamps, key=lambda image_stamp: abs(image_stamp - approximate))
    return nearest if abs(nearest - approximate) <= 1_000_000 else None


def analyse(truth: GroundTruth, class_names: Sequence[str], outputs: Dict[str, List[Any]],
            played: replay.Played, received_s: Dict[int, float], node_counters: Dict[str, str],
            model_config) -> Tuple[dict, dict]:
    """Compare the recorded outputs with the bag's ground truth; return (summary, pairs).

    ``pairs`` maps a processed frame index to its detections (boxes, scores, labels) and the
    stamp of the image the node paired with it, for the renders.
    """
    index_of = {stamp: index for index, stamp in enumerate(truth.cloud_stamps)}
    semantic_by_stamp: Dict[int, np.ndarray] = {}
    for msg in outputs['semantic']:
        semantic_by_stamp.setdefault(stamp_ns(msg.header), mono8_to_array(msg))
    timings_by_stamp = {stamp_ns(msg.header): _status_values(msg) for msg in outputs['timings']
                        if stamp_ns(msg.header) in index_of}

    accumulator = DetectionAccumulator(class_names, DISTANCE_THRESHOLDS_M)
    semantic = SemanticAccumulator(model_config.num_semantic_classes,
                                   class_names=model_config.semantic_classes)
    per_class = {name: {'detections': 0, 'ground_truth': 0, 'matched': 0} for name in
                 class_names}
    unknown_classes = 0
    latencies_ms, pairs = [], {}
    empty_boxes = np.zeros((0, 7), dtype=np.float32)
    for msg in outputs['detections']:
        arrays = detections_from_msg(msg)
        index = index_of.get(arrays.stamp_ns)
        if index is None or index in pairs:
            continue
        boxes, scores = arrays.boxes, arrays.scores
        labels = np.array([class_names.index(name) if name in class_names else -1
                           for name in arrays.class_ids], dtype=np.int64)
        unknown_classes += int((labels < 0).sum())
        known = labels >= 0
        gt_boxes = truth.boxes.get(arrays.stamp_ns, empty_boxes)
        gt_labels = truth.labels.get(arrays.stamp_ns, np.zeros(0, dtype=np.int64))
        gt_keep = model_config.grid.contains_xy(gt_boxes)
        gt_boxes, gt_labels = gt_boxes[gt_keep], gt_labels[gt_keep]
        accumulator.add(boxes[known], scores[known], labels[known], gt_boxes, gt_labels)
        for label, name in enumerate(class_names):
            pred = known & (labels == label)
            true = gt_labels == label
            matched = match_frame(boxes[pred, :2], scores[pred], gt_boxes[true, :2],
                                  MATCH_DISTANCE_M)
            per_class[name]['detections'] += int(pred.sum())
            per_class[name]['ground_truth'] += int(true.sum())
            per_class[name]['matched'] += int(matched.sum())
        if arrays.stamp_ns in received_s and arrays.stamp_ns in played.publish_s:
            latencies_ms.append((received_s[arrays.stamp_ns]
                                 - played.publish_s[arrays.stamp_ns]) * 1e3)
        pairs[index] = {'detections': (boxes, scores, labels), 'image_stamp': _paired_image(
            arrays.stamp_ns, timings_by_stamp.get(arrays.stamp_ns, {}),
            list(semantic_by_stamp))}

    semantic_frames = 0
    for image_stamp, predicted in semantic_by_stamp.items():
        true_ids = truth.semantic.get(image_stamp)
        if true_ids is not None and predicted.shape == true_ids.shape:
            semantic.add(predicted, true_ids)
            semantic_frames += 1
    detection_metrics = accumulator.compute()
    semantic_metrics = semantic.compute()
    gt_pixels = semantic_metrics.confusion.sum(axis=1)
    present_iou = [float(v) for v, count in zip(semantic_metrics.iou, gt_pixels)
                   if count > 0 and not math.isnan(v)]
    lidar_only = sum(1 for values in timings_by_stamp.values()
                     if values.get('lidar_only') == 'true')
    processing = [float(values['processing_ms']) for values in timings_by_stamp.values()
                  if values.get('processing_ms')]
    node_latency = [float(values['end_to_end_ms']) for values in timings_by_stamp.values()
                    if values.get('end_to_end_ms')]
    for counts in per_class.values():
        counts['missed'] = counts['ground_truth'] - counts['matched']
        counts['false'] = counts['detections'] - counts['matched']
    summary = {
        'frames_in': {'clouds': len(played.cloud_stamps), 'images': len(played.image_stamps)},
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
        'ground_truth_unknown_classes': dict(truth.unknown_classes),
        'bev_ap': detection_metrics.to_dict(),
        'semantic': {
            'frames': semantic_frames,
            'miou_present_classes': (round(float(np.mean(present_iou)), 4)
                                     if present_iou else None),
            'pixel_accuracy': semantic_metrics.to_dict()['pixel_accuracy'],
        },
        'latency_ms': {
            'cloud_published_to_detections_received': percentiles(latencies_ms, digits=1),
            'node_processing': percentiles(processing, digits=1),
            'node_end_to_end_sim_time': percentiles(node_latency, digits=1),
        },
    }
    return summary, pairs


# ------------------------------------------------------------------------------ renders

def render(config: DemoConfig, truth: GroundTruth, pairs: dict, outputs: Dict[str, List[Any]],
           class_names: Sequence[str], model_config, out_dir: str) -> None:
    """Write bev.png (the processed frame with the most ground truth) and camera_semantic.png."""
    grid = model_config.grid

    def ground_truth_count(index):
        boxes = truth.boxes.get(truth.cloud_stamps[index], np.zeros((0, 7)))
        return (int(grid.contains_xy(boxes).sum()), index)
    chosen = max(pairs, key=ground_truth_count)
    fused = [index for index in pairs if pairs[index]['image_stamp'] is not None]
    camera_index = chosen if chosen in fused else (fused[-1] if fused else chosen)
    cloud_stamp = truth.cloud_stamps[chosen]
    image_stamp = pairs[camera_index]['image_stamp']
    points, image = read_frame(config.bag, cloud_stamp, image_stamp)
    boxes, scores, labels = pairs[chosen]['detections']
    frame = StripFrame(
        stamp_ns=cloud_stamp, points_xy=points[grid.contains_xy(points)][:, :2],
        gt_boxes=truth.boxes.get(cloud_stamp, np.zeros((0, 7))), pred_boxes=boxes,
        pred_labels=[f'{class_names[label] if label >= 0 else "unknown"} {score:.2f}'
                     for score, label in zip(scores, labels)])
    plot_bev(frame, os.path.join(out_dir, 'bev.png'), grid.x_range_m, grid.y_range_m,
             f'frame {chosen}: ground truth (solid) and predictions (dashed)')
    if image is not None:
        predicted = next((mono8_to_array(msg) for msg in outputs['semantic']
                          if stamp_ns(msg.header) == image_stamp), None)
        plot_camera_semantics(image, predicted, truth.semantic.get(image_stamp),
                              np.asarray(model_config.semantic_palette, dtype=np.uint8),
                              os.path.join(out_dir, 'camera_semantic.png'),
                              f'frame {camera_index}: camera, predicted and true semantics')


def write_summary_markdown(summary: dict, path: str) -> None:
    """Write summary.md: counts, matching per class, AP, semantics, latency, pictures."""
    counters = summary['node_counters']
    drive = summary['drive']
    size = drive.get('image_size')
    images = f', images {size[0]}x{size[1]}' if size else ''
    what = (f"Synthetic A2D2-format drive (seed {drive['seed']}, {drive['frames']} frames at "
            f'10 Hz{images})' if 'seed' in drive else
            f"Drive `{drive['bag']}` ({drive['frames']} frames{images})")
    lines = [
        '# bev_perception demo', '',
        f"{what} replayed from a rosbag2 at {drive['rate']}x the recorded rate into "
        f"perception_node (weights `{summary['weights']['path']}`, device {summary['device']}).",
        '', '| | count |', '| --- | --- |',
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


def _shown_path(path: str) -> str:
    """Return ``path`` relative to the current directory when it lies below it."""
    path = os.path.abspath(path)
    return os.path.relpath(path) if path.startswith(os.getcwd() + os.sep) else path


def _drive_description(bag_dir: str) -> Dict[str, Any]:
    path = os.path.join(bag_dir, DRIVE_DESCRIPTION)
    try:
        with open(path, encoding='utf-8') as stream:
            description = json.load(stream)
    except (OSError, ValueError):
        return {}
    return description if isinstance(description, dict) else {}


def run(config: DemoConfig) -> dict:
    """Run the demo; return the summary (also written to config.out_dir)."""
    from bev_perception.model.config import ModelConfig
    from bev_perception.weights import read_metadata

    started = time.monotonic()
    out_dir = os.path.abspath(config.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    domain_id = config.domain_id or replay.default_domain_id()
    os.environ.update(replay.local_dds_env(domain_id))  # this process's rclpy reads it at init
    os.environ.update(replay.large_message_dds_env())
    params_file = config.params_file or replay.config_file('perception.yaml')
    if not params_file:
        raise SystemExit('cannot find config/perception.yaml (the package share directory or '
                         './config); pass --params-file')

    try:
        weights_path = resolve_weights_path(config.weights)
        random_weights = False
    except WeightsError as error:
        if config.weights:
            raise SystemExit(str(error)) from error
        weights_path = os.path.join(out_dir, 'random_weights.safetensors')
        log(f'WARNING: {error}. Using RANDOM weights: detections will not match.')
        _random_weights(weights_path)
        random_weights = True
    metadata = read_metadata(weights_path)
    model_config = ModelConfig.from_dict(metadata['config'])
    class_names = tuple(model_config.detection_classes)

    try:
        with BagReader(config.bag) as bag:
            truth = read_ground_truth(bag, class_names)
    except BagError as error:
        raise SystemExit(f'{error}\nThe demo replays a converted A2D2 scene with ground truth; '
                         'write the synthetic drive with `python -m training.demo_drive --out '
                         f'{config.bag}` (make demo does).') from error
    if not any(len(boxes) for boxes in truth.boxes.values()):
        log(f'WARNING: the drive {config.bag} has no objects (the generator leaves a few '
            'scenes empty); pick another seed to see detections')
    try:
        replayed = replay_bag(config, weights_path, params_file, out_dir)
    except replay.ReplayError as error:
        raise SystemExit(str(error)) from error
    outputs = read_outputs(os.path.join(out_dir, 'outputs_bag'), replayed.topics)
    summary, pairs = analyse(truth, class_names, outputs, replayed.played, replayed.received_s,
                             replayed.node_counters, model_config)
    drive = {'bag': _shown_path(config.bag), 'frames': len(truth.cloud_stamps),
             'image_size': list(truth.image_size) if truth.image_size else None,
             'rate': config.rate}
    drive.update({key: value for key, value in _drive_description(config.bag).items()
                  if key not in drive})
    summary.update({
        'drive': drive,
        'weights': {'path': _shown_path(weights_path), 'random': random_weights,
                    'provenance': metadata.get('provenance')},
        'device': config.device or 'params file (cuda, cpu fallback)',
        'node_exit_code': replayed.exit_code,
        'recorded_output_messages': replayed.recorded_messages,
        'wall_time_s': None,
    })
    if pairs:
        render(config, truth, pairs, outputs, class_names, model_config, out_dir)
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
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--bag', required=True,
                        help='converted A2D2 scene with ground truth (python -m '
                             'training.demo_drive writes the synthetic drive)')
    parser.add_argument('--out', default='out/demo', help='output folder')
    parser.add_argument('--weights', default='',
                        help='weights file (default: the shipped weights)')
    parser.add_argument('--device', default='',
                        help='cuda or cpu (default: the params file, cuda with cpu fallback)')
    parser.add_argument('--params-file', default='',
                        help="perception_node params (default: the package's "
                             'config/perception.yaml)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='replay rate relative to the recorded rate')
    parser.add_argument('--domain-id', type=int, default=0,
                        help='ROS_DOMAIN_ID for the demo (default: from the process id)')
    parser.add_argument('--pictures', default='',
                        help='also copy bev.png and camera_semantic.png into this folder')
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error('--rate must be above 0')
    return DemoConfig(out_dir=args.out, bag=args.bag, weights=args.weights, device=args.device,
                      rate=args.rate, domain_id=args.domain_id, params_file=args.params_file,
                      pictures_dir=args.pictures)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo from the command line; print where the results are."""
    config = parse_args(argv)
    summary = run(config)
    ap = summary['bev_ap']['map_by_threshold'].get(str(MATCH_DISTANCE_M))
    latency = summary['latency_ms']['cloud_published_to_detections_received']
    log(f"frames in {summary['frames_in']['clouds']}, out {summary['frames_out']}, "
        f"LiDAR-only {summary['lidar_only_frames']}, mAP@{MATCH_DISTANCE_M} m "
        f"{'-' if ap is None else f'{ap:.3f}'}, latency p50/p95 {latency['p50']}/"
        f"{latency['p95']} ms, {summary['wall_time_s']} s; results in "
        f'{os.path.abspath(config.out_dir)}')
    return 0 if summary['node_exit_code'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
