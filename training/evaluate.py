"""Evaluate weights or a checkpoint on A2D2-format, real A2D2 or KITTI data.

Usage::

    python -m training.evaluate --weights bev_perception/weights/default.safetensors
        --data data/synthetic/heldout [--scenes S1 S2] [--out out/eval]
    python -m training.evaluate --checkpoint out/train/checkpoints/last.pt --data ROOT
    python -m training.evaluate --weights W --data KITTI_ROOT [--lidar-only]
    python -m training.evaluate --weights W --data A2D2_CAMERA_LIDAR_SEMANTIC_ROOT

Formats (``--format``; ``auto`` picks ``kitti`` for a KITTI object layout, see
``training.kitti``, and ``a2d2`` otherwise):

* ``a2d2``: A2D2 ``camera_lidar_semantic_bboxes`` roots, real or synthetic
  (``training.a2d2``). A root without any LiDAR folder (A2D2's ``camera_lidar_semantic``
  frames that hold only camera and label images), or ``--semantic-only``, evaluates the
  semantic head alone: those frames are read by ``SemanticOnlyFrames`` (camera + label PNG,
  nothing made up for the missing LiDAR; the network gets an empty cloud, which the semantic
  head does not read).
* ``kitti``: the KITTI 3D object layout (``training.kitti``). KITTI labels only objects inside
  camera 2's image, so ground truth and detections are restricted to that camera's field of
  view, DontCare areas and Tram/Misc boxes are ignore regions (see ``training.kitti``), and
  KITTI has no semantic labels.

Points are prepared as the node prepares them: x, y, z mapped into the model frame by the
extrinsic (``--extrinsic-translation X Y Z`` and ``--extrinsic-rpy R P Y``, the meaning of
the node's ``extrinsic_translation_m`` / ``extrinsic_rpy_rad``: p_model = R p_cloud + t;
ground-truth boxes go through the same transform) and the intensity multiplied by the gain
of the node's rule (``--intensity-scale`` as the node's ``intensity_scale``: 0 = the
weights' value, gain 1; else gain = intensity_scale / the weights' intensity scale).
Defaults per format: identity and 0 for A2D2 (its clouds are in the model frame, 0..255);
``kitti.KITTI_EXTRINSIC`` (road lowered to the training data's height) and
``kitti.KITTI_INTENSITY_SCALE`` (reflectance 0..1) for KITTI.

Every frame runs through the inference runtime (``bev_perception.inference``, the code the
node runs): fused (with the camera image) and LiDAR-only (no image; ``--lidar-only`` runs only
this one). Detection metrics come from ``bev_perception.metrics`` (BEV centre-distance AP per
class at 0.5/1/2/4 m, mAP; see there for the matching and AP definition), evaluated down to a
low score threshold (``EVAL_SCORE_THRESHOLD``) so the precision-recall curves are complete,
plus recall and precision per class at the node's default score threshold
(``NODE_SCORE_THRESHOLD``, ``--operating-threshold``). Ground-truth boxes whose centre lies
outside the model's BEV grid (``config.grid`` x and y range) cannot be detected and are not
evaluated (like the range filter of KITTI and nuScenes). ``--min-points N`` evaluates only
the objects with at least N LiDAR points inside their box (the points the network gets, in the
model frame): fewer-point boxes leave the ground truth and a detection whose centre lies in
such a box's footprint grown by ``kitti.IGNORE_MARGIN_M`` is ignored unless it matches an
evaluated box (Waymo's LEVEL_1 keeps boxes with more than 5 points: ``--min-points 6``;
default 0: every labelled object counts). Semantic IoU per class and mIoU
come from the fused run, compared with the label at its native resolution (the runtime
upsamples the prediction by nearest neighbour, like the node does). ``miou`` follows the
metrics library (classes in ground truth or prediction); ``miou_gt_present`` averages only
the categories that occur in the ground truth; ``one_class_baseline`` is the pixel accuracy
of painting every pixel with the most frequent ground-truth category of the evaluated frames;
``road_iou`` is the IoU of ``ROAD_CATEGORY``.

``--kitti-ring-step K`` keeps every K-th laser ring of KITTI's 64 (``kitti.laser_rings``): 2 and
4 show how the weights do on the clouds of a 32- and a 16-beam sensor, from the same real
scenes and labels.

Writes ``metrics.json``, ``metrics.md`` (a short table), ``pr_curves.png``,
``semantic_iou.png`` and, unless ``--no-renders``, one PNG per frame and run under
``renders/``: the BEV of the points, ground truth (green matched, red missed) and the
detections at the operating threshold with class and score (blue matched, orange false
positive, grey ignored), matched at ``HEADLINE_THRESHOLD_M``; semantic frames get the camera
image, the predicted and the true categories.
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from bev_perception.a2d2_classes import IGNORE_INDEX
from bev_perception.geometry import box_outline_xy, in_footprints
from bev_perception.inference import InferenceRuntime
from bev_perception.metrics import (
    category_confusions, DEFAULT_DISTANCE_THRESHOLDS_M, DetectionAccumulator, DetectionMetrics,
    match_frame_indices, SemanticAccumulator, SemanticMetrics)
from bev_perception.model.camera_geometry import forward_camera, moved as moved_camera
from bev_perception.model.config import ModelConfig
from bev_perception.node_params import parameter_spec
from bev_perception.tools.report import plot_pr_curves
from bev_perception.weights import load_weights, WeightsError
import numpy as np
import torch
import tqdm
from training import kitti
from training.a2d2 import (
    A2D2Dataset, CAMERA_FOLDER, CAMERA_TOKEN, collate_frames, CorruptFrameError,
    DEFAULT_CLASS_MAP, FILE_KINDS, frame_path, list_scenes, PathLike, read_image,
    SemanticDecoder, SkipReports)
from training.cli import output_error
from training.targets import points_in_boxes
from training.train import CheckpointError, load_checkpoint, model_from_checkpoint

LOGGER = logging.getLogger(__name__)

#: Score threshold while evaluating: low, so the precision-recall curves are complete.
EVAL_SCORE_THRESHOLD = 0.05

#: The node's default score threshold (its ``score_thresholds`` parameter): recall and
#: precision are reported there, and the renders show the detections the node would publish.
NODE_SCORE_THRESHOLD = float(parameter_spec('score_thresholds').default[0])

#: The distance threshold of the headline mAP and of the renders' matching (metres).
HEADLINE_THRESHOLD_M = 2.0

#: The semantic category whose IoU is reported as ``road_iou``.
ROAD_CATEGORY = 'RD normal street'

#: Most points drawn in a BEV render (a uniform subsample above).
RENDER_MAX_POINTS = 40000

FORMATS = ('a2d2', 'kitti', 'auto')

#: The two runs of every frame, in the order they run.
RUNS = ('fused', 'lidar_only')


# ----------------------------------------------------------------------------- point preparation


def intensity_gain(intensity_scale: float, config: ModelConfig) -> float:
    """Return the factor from cloud intensities to the network's raw units (the node's rule).

    Args:
        intensity_scale: the node's ``intensity_scale``: 0 means the weights' own scale.
        config: the model config (``point.intensity_scale`` is what the network applies).
    """
    return intensity_scale / config.point.intensity_scale if intensity_scale > 0 else 1.0


@dataclasses.dataclass(frozen=True)
class EvalFrame:
    """One frame ready for the runtime and the metrics, in the model frame.

    Attributes:
        name: the frame's name in reports and render file names.
        points: (N, 4) float32 x, y, z and intensity in the raw units the network expects.
        image: (H, W, 3) uint8 RGB or None.
        gt_boxes: (G, 7) evaluated ground-truth boxes (in scope and in the BEV grid).
        gt_labels: (G,) int64 class indices.
        semantic: (H, W) uint8 true category ids (255 = ignore) or None.
        in_scope: boxes (P, 7) -> (P,) bool, False for ignorable detections; None: all.
        camera_geometry: (camera_geometry.SIZE,) calibration of ``image`` in the model frame,
            or None (no calibration known).
    """

    name: str
    points: np.ndarray
    image: Optional[np.ndarray]
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    semantic: Optional[np.ndarray]
    in_scope: Optional[Callable[[np.ndarray], np.ndarray]] = None
    camera_geometry: Optional[np.ndarray] = None

    def ignorable(self, boxes: np.ndarray, config: ModelConfig) -> np.ndarray:
        """Return (P,) bool: detections out of scope or off the BEV grid."""
        boxes = np.asarray(boxes).reshape(-1, 7)
        keep = in_grid(boxes, config)
        if self.in_scope is not None and len(boxes):
            keep &= self.in_scope(boxes)
        return ~keep


class MissingCalibrationError(ValueError):
    """A fused run of weights that fuse by calibration met an image without calibration."""


def _run_geometry(frame: EvalFrame, runtime: InferenceRuntime,
                  detection: bool) -> Optional[np.ndarray]:
    """Return the camera geometry a fused run of ``frame`` passes to the runtime.

    Weights that fuse by calibration need it with every image. Semantic-only frames without a
    calibration get a nominal forward camera: the semantic head does not read the geometry and
    nothing the fusion makes of it is scored.
    """
    if (not runtime.needs_calibration or frame.image is None
            or frame.camera_geometry is not None):
        return frame.camera_geometry
    if detection:
        raise MissingCalibrationError(
            f'{frame.name}: no camera calibration for a fused run of weights that fuse by '
            'calibration (cams_lidars.json beside the A2D2 scenes, or evaluate LiDAR-only)')
    return forward_camera(frame.image.shape[1::-1])


def in_grid(boxes: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Return (K,) bool: box centres (x, y) inside the BEV grid of ``config``."""
    return config.grid.contains_xy(np.asarray(boxes).reshape(-1, 7))


def _without_few_point_boxes(in_scope: Optional[Callable[[np.ndarray], np.ndarray]],
                             few: np.ndarray) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """Return ``in_scope`` that also puts detections in the footprints of ``few`` out of scope.

    Args:
        in_scope: the frame's own scope test (None: everything in scope).
        few: (F, 7) boxes with too few points to be evaluated.
    """
    if not len(few):
        return in_scope

    def scope(boxes: np.ndarray) -> np.ndarray:
        keep = ~in_footprints(boxes[:, :2], few, kitti.IGNORE_MARGIN_M)  # (P,)
        return keep if in_scope is None else keep & in_scope(boxes)
    return scope


def eval_frame(frame: Any, config: ModelConfig,
               extrinsic: kitti.SensorExtrinsic = kitti.SensorExtrinsic(),
               gain: float = 1.0, min_points: int = 0) -> EvalFrame:
    """Prepare a loaded frame of any format for the runtime and the metrics.

    Args:
        frame: an ``a2d2.Frame`` (points and boxes in the cloud frame: ``extrinsic`` maps
            them), a ``kitti.KittiFrame`` (already in the model frame through its dataset's
            extrinsic) or a ``SemanticFrame`` (no LiDAR).
        config: the model config (BEV grid).
        extrinsic: cloud -> model frame for A2D2 frames.
        gain: intensity gain (``intensity_gain``).
        min_points: objects with fewer LiDAR points in their box are not evaluated and
            detections on them are ignored (module docstring); 0: every object counts.
    """
    if isinstance(frame, SemanticFrame):
        return EvalFrame(name=frame.name, points=np.zeros((0, 4), np.float32),
                         image=frame.image, gt_boxes=np.zeros((0, 7), np.float32),
                         gt_labels=np.zeros(0, np.int64), semantic=frame.semantic)
    if isinstance(frame, kitti.KittiFrame):
        name, points, boxes = frame.name, frame.points, frame.boxes
        keep = frame.gt_in_scope()
        in_scope = frame.detection_in_scope
        geometry = frame.camera_geometry
    else:
        name = f'{frame.scene}_{frame.frame_id}'
        points, boxes = frame.points, frame.boxes
        geometry = frame.camera_geometry
        if not extrinsic.is_identity:
            points, boxes = extrinsic.points_to_model(points), extrinsic.boxes_to_model(boxes)
            if geometry is not None:
                transform = extrinsic.transform
                geometry = moved_camera(geometry, transform.rotation, transform.translation)
        keep, in_scope = np.ones(len(boxes), dtype=bool), None
    if gain != 1.0:
        points = np.array(points, dtype=np.float32)  # (N, 4) own copy
        points[:, 3] *= gain
    keep = keep & in_grid(boxes, config)
    if min_points > 0 and len(boxes):
        few = points_in_boxes(points, boxes) < min_points  # (K,)
        in_scope = _without_few_point_boxes(in_scope, boxes[keep & few])
        keep &= ~few
    return EvalFrame(name=name, points=points, image=frame.image, gt_boxes=boxes[keep],
                     gt_labels=frame.labels[keep], semantic=frame.semantic, in_scope=in_scope,
                     camera_geometry=geometry)


# ----------------------------------------------------------------------------- semantic-only A2D2


@dataclasses.dataclass(frozen=True, eq=False)
class SemanticFrame:
    """A camera image and its semantic label, without LiDAR (A2D2 ``camera_lidar_semantic``)."""

    scene: str
    frame_id: str  # 9 digits
    image: np.ndarray  # (H, W, 3) uint8 RGB
    semantic: np.ndarray  # (H, W) uint8 category ids, 255 = ignore
    paths: Dict[str, str]

    @property
    def name(self) -> str:
        """Return the frame's name in reports."""
        return f'{self.scene}_{self.frame_id}'


class SemanticOnlyFrames(SkipReports):
    """Front-centre camera + label frames of an A2D2 root, whatever else the frames lack.

    Indexes every ``camera/cam_front_center/*.png`` of the scenes; a frame without its label
    PNG is reported and skipped (``skipped``), a corrupt file raises ``CorruptFrameError``
    naming it (``skipping()`` reports and skips instead).

    Args:
        root: A2D2 root (scene folders and ``class_list.json``).
        scenes: scene names (default: every scene folder).
    """

    def __init__(self, root: PathLike, scenes: Optional[Sequence[str]] = None):
        self.root = os.fspath(root)
        available = list_scenes(self.root)
        missing = sorted(set(scenes or ()) - set(available))
        if missing:
            raise ValueError(f'{self.root}: no scene folders {missing}')
        self.scenes = tuple(sorted(scenes) if scenes else available)
        self._decoder = SemanticDecoder.from_class_list(os.path.join(self.root,
                                                                     'class_list.json'))
        self._skipped: List[Tuple[str, str]] = []
        self._records: List[Tuple[str, str, Dict[str, str]]] = []
        folder, token, extension = FILE_KINDS['camera']
        for scene in self.scenes:
            directory = os.path.join(self.root, scene, folder, CAMERA_FOLDER)
            pattern = re.compile(re.escape(f'{scene.replace("_", "")}_{token}_{CAMERA_TOKEN}_')
                                 + r'(\d{9})' + re.escape(f'.{extension}'))
            names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
            for match in filter(None, map(pattern.fullmatch, names)):
                frame_id = match.group(1)
                paths = {kind: frame_path(self.root, scene, frame_id, kind)
                         for kind in ('camera', 'label')}
                if not os.path.isfile(paths['label']):
                    self._report(paths['label'], 'missing file; frame skipped')
                    continue
                self._records.append((scene, frame_id, paths))

    def __len__(self) -> int:
        """Return the number of indexed frames."""
        return len(self._records)

    def __getitem__(self, index: int) -> SemanticFrame:
        """Load frame ``index``; raises CorruptFrameError naming a bad file."""
        scene, frame_id, paths = self._records[index]
        image = read_image(paths['camera'])
        label = read_image(paths['label'])
        if label.shape != image.shape:
            raise CorruptFrameError(paths['label'], f'size {label.shape[:2]} differs from '
                                    f'the camera image {image.shape[:2]}')
        return SemanticFrame(scene=scene, frame_id=frame_id, image=image,
                             semantic=self._decoder.decode(label), paths=dict(paths))


def has_lidar(root: PathLike, scenes: Optional[Sequence[str]] = None) -> bool:
    """Return True when any (chosen) scene of an A2D2 root has a front-centre LiDAR folder."""
    folder = FILE_KINDS['lidar'][0]
    return any(os.path.isdir(os.path.join(os.fspath(root), scene, folder, CAMERA_FOLDER))
               for scene in (scenes or list_scenes(root)))


# ----------------------------------------------------------------------------- evaluation


@dataclasses.dataclass(frozen=True)
class FrameOutcome:
    """What one run did on one frame at the operating threshold (matched at the headline m).

    Attributes:
        name: frame name.
        run: 'fused' or 'lidar_only'.
        num_gt: evaluated ground-truth boxes.
        matched_gt: of them, matched by a detection.
        detections: detections at or above the operating threshold.
        false_positives: of them, unmatched and in scope.
        ignored: of them, unmatched and out of scope.
    """

    name: str
    run: str
    num_gt: int
    matched_gt: int
    detections: int
    false_positives: int
    ignored: int


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one evaluation run.

    Attributes:
        fused: detection metrics with the camera image (None: not run or not evaluated).
        lidar_only: detection metrics without the image (None: not run or not evaluated).
        semantic: semantic metrics of the fused run (None: no semantic ground truth).
        miou_gt_present: mean IoU over the categories present in the ground truth.
        num_frames: frames evaluated.
        skipped: (path, reason) of frames the reader skipped.
        operating_threshold: score threshold of the reported recall and precision.
        frames: per frame and run, the counts at the operating threshold.
    """

    fused: Optional[DetectionMetrics]
    lidar_only: Optional[DetectionMetrics]
    semantic: Optional[SemanticMetrics]
    miou_gt_present: float
    num_frames: int
    skipped: List[Any]
    operating_threshold: float = NODE_SCORE_THRESHOLD
    frames: List[FrameOutcome] = dataclasses.field(default_factory=list)

    @property
    def detection(self) -> Dict[str, DetectionMetrics]:
        """Return run name -> detection metrics of the runs evaluated."""
        return {run: metrics for run, metrics in (('fused', self.fused),
                                                  ('lidar_only', self.lidar_only))
                if metrics is not None}

    def summary(self) -> Dict[str, Optional[float]]:
        """Return the headline numbers (NaN and missing as None)."""
        def plain(value: Optional[float]) -> Optional[float]:
            return None if value is None or math.isnan(value) else round(float(value), 4)

        def detection(metrics: Optional[DetectionMetrics], at_threshold: bool
                      ) -> Optional[float]:
            if metrics is None:
                return None
            return (metrics.map_by_threshold.get(HEADLINE_THRESHOLD_M, float('nan'))
                    if at_threshold else metrics.map)

        def overall(metrics: Optional[DetectionMetrics], key: str) -> Optional[float]:
            if metrics is None:
                return None
            return getattr(metrics.overall_at_score(self.operating_threshold,
                                                    HEADLINE_THRESHOLD_M), key)

        semantic = semantic_summary(self.semantic) if self.semantic is not None else {}
        return {
            'recall_fused': plain(overall(self.fused, 'recall')),
            'precision_fused': plain(overall(self.fused, 'precision')),
            'recall_lidar_only': plain(overall(self.lidar_only, 'recall')),
            'precision_lidar_only': plain(overall(self.lidar_only, 'precision')),
            'map_2m_fused': plain(detection(self.fused, True)),
            'map_2m_lidar_only': plain(detection(self.lidar_only, True)),
            'map_fused': plain(detection(self.fused, False)),
            'map_lidar_only': plain(detection(self.lidar_only, False)),
            'miou': plain(self.semantic.miou if self.semantic is not None else None),
            'miou_gt_present': plain(self.miou_gt_present),
            'pixel_accuracy': plain(semantic.get('pixel_accuracy')),
            'one_class_baseline': plain(semantic.get('one_class_baseline')),
            'road_iou': plain(semantic.get('road_iou')),
        }

    def to_dict(self) -> Dict[str, Any]:
        """Return everything as plain JSON types (no PR curves)."""
        detection = {}
        for run, metrics in self.detection.items():
            document = metrics.to_dict()
            document['at_operating_threshold'] = {
                name: {str(t): point.to_dict() for t, point in per_threshold.items()}
                for name, per_threshold in metrics.at_score(self.operating_threshold).items()}
            detection[run] = document
        semantic = None
        if self.semantic is not None:
            semantic = self.semantic.to_dict()
            semantic.update({key: value for key, value in semantic_summary(
                self.semantic).items() if key not in semantic})
            semantic['miou_gt_present'] = (None if math.isnan(self.miou_gt_present)
                                           else self.miou_gt_present)
        return {
            'summary': self.summary(),
            'num_frames': self.num_frames,
            'operating_threshold': self.operating_threshold,
            'headline_threshold_m': HEADLINE_THRESHOLD_M,
            'detection': detection,
            'semantic': semantic,
            'frames': [dataclasses.asdict(outcome) for outcome in self.frames],
            'skipped_files': [list(item) for item in self.skipped],
        }


def gt_present_miou(metrics: SemanticMetrics) -> float:
    """Return the mean IoU over the categories with ground-truth pixels (NaN if none)."""
    present = metrics.confusion.sum(axis=1) > 0
    values = metrics.iou[present]
    return float(np.mean(values)) if values.size else float('nan')


def semantic_summary(metrics: SemanticMetrics) -> Dict[str, Any]:
    """Return pixel accuracy, the one-class baseline (and its class), mIoU and road IoU."""
    per_gt_class = metrics.confusion.sum(axis=1)  # (C,) true pixels per category
    total = int(per_gt_class.sum())
    most = int(np.argmax(per_gt_class)) if total else None
    road = (metrics.class_names.index(ROAD_CATEGORY)
            if ROAD_CATEGORY in metrics.class_names else None)
    road_iou = float(metrics.iou[road]) if road is not None else float('nan')
    return {
        'pixel_accuracy': metrics.pixel_accuracy,
        'one_class_baseline': per_gt_class[most] / total if total else float('nan'),
        'one_class_baseline_category': metrics.class_names[most] if most is not None else None,
        'miou': metrics.miou,
        'miou_gt_present': gt_present_miou(metrics),
        'road_iou': None if math.isnan(road_iou) else road_iou,
    }


def _frame_outcome(frame: EvalFrame, result: Any, run: str, config: ModelConfig,
                   operating_threshold: float) -> Tuple[FrameOutcome, Dict[str, np.ndarray]]:
    """Match one frame's detections at the operating threshold (headline distance)."""
    shown = np.asarray(result.scores) >= operating_threshold
    boxes = np.asarray(result.boxes).reshape(-1, 7)[shown]
    scores = np.asarray(result.scores)[shown]
    labels = np.asarray(result.class_ids)[shown]
    detection_matched = np.zeros(len(boxes), dtype=bool)
    gt_matched = np.zeros(len(frame.gt_boxes), dtype=bool)
    for label in range(config.num_detection_classes):
        pred_index = np.flatnonzero(labels == label)
        gt_index = np.flatnonzero(frame.gt_labels == label)
        claimed = match_frame_indices(boxes[pred_index, :2], scores[pred_index],
                                      frame.gt_boxes[gt_index, :2], HEADLINE_THRESHOLD_M)
        detection_matched[pred_index] = claimed >= 0
        gt_matched[gt_index[claimed[claimed >= 0]]] = True
    ignored = ~detection_matched & frame.ignorable(boxes, config)
    outcome = FrameOutcome(
        name=frame.name, run=run, num_gt=len(frame.gt_boxes), matched_gt=int(gt_matched.sum()),
        detections=len(boxes), false_positives=int((~detection_matched & ~ignored).sum()),
        ignored=int(ignored.sum()))
    return outcome, {'boxes': boxes, 'scores': scores, 'labels': labels,
                     'matched': detection_matched, 'ignored': ignored, 'gt_matched': gt_matched}


def evaluate(runtime: InferenceRuntime, dataset: Any, batch_size: int = 4,
             score_threshold: float = EVAL_SCORE_THRESHOLD, workers: int = 0,
             thresholds_m: Sequence[float] = DEFAULT_DISTANCE_THRESHOLDS_M,
             show_progress: bool = True, *,
             extrinsic: kitti.SensorExtrinsic = kitti.SensorExtrinsic(), gain: float = 1.0,
             runs: Sequence[str] = RUNS, detection: bool = True,
             operating_threshold: float = NODE_SCORE_THRESHOLD,
             render_dir: Optional[str] = None, min_points: int = 0) -> EvaluationResult:
    """Run every frame fused and LiDAR-only and accumulate the metrics.

    Args:
        runtime: the inference runtime (its config's classes must equal the dataset's).
        dataset: an ``A2D2Dataset``, a ``kitti.KittiDataset`` or ``SemanticOnlyFrames``.
        batch_size: frames per runtime batch.
        score_threshold: detections below it are not evaluated.
        workers: DataLoader processes reading frames.
        thresholds_m: centre-distance thresholds of the AP, metres.
        show_progress: show a tqdm bar.
        extrinsic: cloud -> model frame of A2D2 frames (KITTI frames carry their own).
        gain: intensity gain applied to the points (``intensity_gain``).
        runs: the runs, a subset of RUNS ('fused' also gives the semantic metrics).
        detection: evaluate detection (False for frames without boxes).
        operating_threshold: score threshold of the reported recall and precision.
        render_dir: write one render per frame and run here (None: no renders).
        min_points: evaluate only objects with at least this many LiDAR points (``eval_frame``).
    """
    config = runtime.config
    unknown_runs = sorted(set(runs) - set(RUNS))
    if unknown_runs or not runs:
        raise ValueError(f'runs must be a non-empty subset of {RUNS}, got {list(runs)}')
    classes = getattr(dataset, 'classes', None)
    if detection and tuple(classes or ()) != tuple(config.detection_classes):
        raise ValueError(f'dataset classes {classes} differ from the model classes '
                         f'{config.detection_classes}')
    accumulators = {run: DetectionAccumulator(config.detection_classes, thresholds_m)
                    for run in RUNS if run in runs and detection}
    semantic = SemanticAccumulator(config.num_semantic_classes, IGNORE_INDEX,
                                   config.semantic_classes)
    loader = torch.utils.data.DataLoader(
        dataset.skipping(), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=collate_frames)
    num_frames, with_semantic, outcomes = 0, 0, []
    for loaded in tqdm.tqdm(loader, desc='evaluating', unit='batch', disable=not show_progress):
        if not loaded:
            continue
        frames = [eval_frame(item, config, extrinsic, gain, min_points) for item in loaded]
        results = {}
        for run in RUNS:
            if run in runs:
                results[run] = runtime.run_batch(
                    [(f.points, f.image, _run_geometry(f, runtime, detection))
                     if run == 'fused' else (f.points, None) for f in frames],
                    score_threshold)
        for index, frame in enumerate(frames):
            for run, run_results in results.items():
                result = run_results[index]
                if detection:
                    accumulators[run].add(result.boxes, result.scores, result.class_ids,
                                          frame.gt_boxes, frame.gt_labels,
                                          frame.ignorable(result.boxes, config))
                    outcome, drawn = _frame_outcome(frame, result, run, config,
                                                    operating_threshold)
                    outcomes.append(outcome)
                    if render_dir is not None:
                        render_bev(frame, drawn, outcome, config,
                                   os.path.join(render_dir, f'{frame.name}_{run}.png'))
                if run == 'fused' and frame.semantic is not None \
                        and result.semantic is not None:
                    semantic.add(result.semantic, frame.semantic)
                    with_semantic += 1
                    if render_dir is not None:
                        render_semantic(frame, result.semantic, config, os.path.join(
                            render_dir, f'{frame.name}_semantic.png'))
            num_frames += 1
    semantic_metrics = semantic.compute() if with_semantic else None
    return EvaluationResult(
        fused=accumulators['fused'].compute() if 'fused' in accumulators else None,
        lidar_only=(accumulators['lidar_only'].compute() if 'lidar_only' in accumulators
                    else None),
        semantic=semantic_metrics,
        miou_gt_present=(gt_present_miou(semantic_metrics) if semantic_metrics is not None
                         else float('nan')),
        num_frames=num_frames, skipped=dataset.skipped, operating_threshold=operating_threshold,
        frames=outcomes)


# ----------------------------------------------------------------------------- renders

_GT_MATCHED, _GT_MISSED = '#1a9850', '#d73027'
_TRUE_POSITIVE, _FALSE_POSITIVE, _IGNORED = '#2166ac', '#f46d43', '#999999'


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    return pyplot


def render_bev(frame: EvalFrame, drawn: Mapping[str, np.ndarray], outcome: FrameOutcome,
               config: ModelConfig, path: str) -> None:
    """Draw one frame from above: points, ground truth and detections with class and score.

    Ground truth green when matched, red when missed; detections blue when matched, orange
    when false positives, grey when ignored (out of scope); x forward is up, y left is left.
    """
    pyplot = _pyplot()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    grid = config.grid
    points = frame.points[config.grid.contains_xy(frame.points)] if len(frame.points) \
        else frame.points
    if len(points) > RENDER_MAX_POINTS:
        points = points[::math.ceil(len(points) / RENDER_MAX_POINTS)]
    figure, axis = pyplot.subplots(figsize=(7.0, 7.4))
    axis.scatter(-points[:, 1], points[:, 0], s=0.4, c=points[:, 2], cmap='viridis',
                 vmin=grid.z_range_m[0], vmax=grid.z_range_m[0] + 3.0, linewidths=0)
    for box, matched in zip(frame.gt_boxes, drawn['gt_matched']):
        outline = box_outline_xy(box)
        axis.plot(-outline[:, 1], outline[:, 0], linewidth=1.8,
                  color=_GT_MATCHED if matched else _GT_MISSED)
    for box, score, label, matched, ignored in zip(drawn['boxes'], drawn['scores'],
                                                   drawn['labels'], drawn['matched'],
                                                   drawn['ignored']):
        colour = _TRUE_POSITIVE if matched else _IGNORED if ignored else _FALSE_POSITIVE
        outline = box_outline_xy(box)
        axis.plot(-outline[:, 1], outline[:, 0], color=colour, linewidth=1.0, linestyle='--')
        axis.text(-box[1], box[0] + 0.5 * box[3] + 0.4,
                  f'{config.detection_classes[int(label)]} {score:.2f}', color=colour,
                  fontsize=5.5, ha='center')
    for colour, style, text in ((_GT_MATCHED, '-', 'ground truth, matched'),
                                (_GT_MISSED, '-', 'ground truth, missed'),
                                (_TRUE_POSITIVE, '--', 'detection, matched'),
                                (_FALSE_POSITIVE, '--', 'detection, false positive'),
                                (_IGNORED, '--', 'detection, ignored (out of scope)')):
        axis.plot([], [], color=colour, linestyle=style, label=text)
    axis.plot([0.0], [0.0], marker='^', color='black', markersize=7)
    axis.set_xlim(-grid.y_range_m[1], -grid.y_range_m[0])
    axis.set_ylim(*grid.x_range_m)
    axis.set_aspect('equal')
    axis.set_xlabel('-y (m, right)')
    axis.set_ylabel('x (m, forward)')
    axis.set_title(
        f'{frame.name} {outcome.run}: GT {outcome.matched_gt}/{outcome.num_gt} matched, '
        f'{outcome.detections} detections >= threshold, {outcome.false_positives} FP, '
        f'{outcome.ignored} ignored (match {HEADLINE_THRESHOLD_M:g} m)', fontsize=8)
    axis.legend(loc='lower left', fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def render_semantic(frame: EvalFrame, predicted: np.ndarray, config: ModelConfig,
                    path: str) -> None:
    """Draw the camera image, the predicted and the true categories (ignored pixels plain)."""
    pyplot = _pyplot()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    lookup = np.zeros((256, 3), dtype=np.uint8)
    lookup[:len(config.semantic_palette)] = np.asarray(config.semantic_palette, np.uint8)
    step = max(1, frame.image.shape[1] // 960)  # draw at most about 960 pixels wide

    def overlay(ids: np.ndarray) -> np.ndarray:
        image = frame.image[::step, ::step].astype(np.float32)
        ids = ids[::step, ::step]
        blended = 0.4 * image + 0.6 * lookup[ids].astype(np.float32)
        return np.where((ids == IGNORE_INDEX)[..., None], image, blended).astype(np.uint8)
    panels = (('camera', frame.image[::step, ::step]), ('predicted', overlay(predicted)),
              ('ground truth', overlay(frame.semantic)))
    height, width = panels[0][1].shape[:2]
    figure, axes = pyplot.subplots(3, 1, figsize=(8.0, 3 * 8.0 * height / width + 0.8))
    for axis, (title, image) in zip(axes, panels):
        axis.imshow(image)
        axis.set_title(f'{frame.name}: {title}', fontsize=8)
        axis.axis('off')
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


# ----------------------------------------------------------------------------- report


def plot_semantic(metrics: SemanticMetrics, miou_gt_present: float, path: str) -> None:
    """Plot IoU per category present in the ground truth, with their mean."""
    pyplot = _pyplot()
    present = metrics.confusion.sum(axis=1) > 0
    names = [n for n, keep in zip(metrics.class_names, present) if keep]
    values = metrics.iou[present]
    figure, axis = pyplot.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.5))
    axis.bar(range(len(names)), np.nan_to_num(values), color='tab:blue')
    axis.axhline(miou_gt_present, color='tab:red', linestyle='--',
                 label=f'mIoU (GT categories) {miou_gt_present:.3f}')
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=60, ha='right', fontsize=8)
    axis.set_ylim(0.0, 1.0)
    axis.set_ylabel('IoU')
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def plot_results(result: EvaluationResult, out_dir: str) -> List[str]:
    """Write PR curves and per-category IoU bars as PNG files; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    path = os.path.join(out_dir, 'pr_curves.png')
    if result.detection and plot_pr_curves(result.detection, path):
        paths.append(path)
    if result.semantic is not None and result.semantic.confusion.sum():
        paths.append(os.path.join(out_dir, 'semantic_iou.png'))
        plot_semantic(result.semantic, result.miou_gt_present, paths[-1])
    return paths


def _number(value: Optional[float], digits: int = 3) -> str:
    return 'n/a' if value is None or not math.isfinite(value) else f'{value:.{digits}f}'


def markdown(result: EvaluationResult, extra: Mapping[str, Any]) -> str:
    """Return the short Markdown report of a result."""
    lines = ['# Evaluation', '']
    for key in ('data', 'format', 'weights', 'extrinsic_translation_m', 'extrinsic_rpy_rad',
                'intensity_scale'):
        if key in extra:
            lines.append(f'- {key}: `{extra[key]}`')
    lines.append(f'- frames: {result.num_frames}, skipped files: {len(result.skipped)}')
    if result.detection:
        threshold = result.operating_threshold
        lines += ['', f'## Detection (recall and precision at score >= {threshold:g}, '
                  f'matched within {HEADLINE_THRESHOLD_M:g} m)', '']
        distances = next(iter(result.detection.values())).thresholds_m
        lines += ['| run | class | GT | TP | FP | recall | precision | '
                  + ' | '.join(f'AP {t:g} m' for t in distances) + ' |',
                  '|' + ' --- |' * (7 + len(distances))]
        for run, metrics in result.detection.items():
            points = metrics.at_score(threshold)
            for name in metrics.class_names:
                point = points[name][HEADLINE_THRESHOLD_M]
                lines.append(
                    f'| {run} | {name} | {metrics.num_gt[name]} | {point.true_positives} | '
                    f'{point.false_positives} | {_number(point.recall)} | '
                    f'{_number(point.precision)} | '
                    + ' | '.join(_number(metrics.ap[name][t]) for t in distances) + ' |')
            point = metrics.overall_at_score(threshold, HEADLINE_THRESHOLD_M)
            lines.append(
                f'| {run} | **all** | {point.num_gt} | {point.true_positives} | '
                f'{point.false_positives} | {_number(point.recall)} | '
                f'{_number(point.precision)} | ' + ' | '.join('' for _ in distances) + ' |')
            lines.append(f'| {run} | **mAP** | | | | | | ' + ' | '.join(
                _number(metrics.map_by_threshold[t]) for t in distances) + ' |')
    if result.semantic is not None:
        summary = semantic_summary(result.semantic)
        lines += ['', '## Semantic segmentation (fused run)', '',
                  '| pixel accuracy | one-class baseline | mIoU | mIoU (GT categories) | '
                  'road IoU |', '| --- | --- | --- | --- | --- |',
                  f'| {_number(summary["pixel_accuracy"])} | '
                  f'{_number(summary["one_class_baseline"])} '
                  f'({summary["one_class_baseline_category"]}) | {_number(summary["miou"])} | '
                  f'{_number(summary["miou_gt_present"])} | {_number(summary["road_iou"])} |']
        lines += ['', 'What each category present in the ground truth is predicted as (largest '
                  'first, share of its pixels):', '',
                  '| category | share of pixels | IoU | predicted as |',
                  '| --- | --- | --- | --- |']
        for row in category_confusions(result.semantic):
            lines.append(f'| {row.name} | {row.share:.3f} | {_number(row.iou)} | ' + ', '.join(
                f'{name} {fraction:.2f}' for name, fraction in row.predicted_as) + ' |')
    return '\n'.join(lines) + '\n'


def write_report(result: EvaluationResult, out_dir: str,
                 extra: Optional[Dict[str, Any]] = None) -> str:
    """Write metrics.json (plus ``extra`` keys), metrics.md and the plots; return the JSON path."""
    os.makedirs(out_dir, exist_ok=True)
    document = result.to_dict()
    document.update(extra or {})
    path = os.path.join(out_dir, 'metrics.json')
    with open(path, 'w', encoding='utf-8') as stream:
        json.dump(document, stream, indent=2, sort_keys=True)
    with open(os.path.join(out_dir, 'metrics.md'), 'w', encoding='utf-8') as stream:
        stream.write(markdown(result, extra or {}))
    plot_results(result, out_dir)
    return path


# ----------------------------------------------------------------------------- command line


def load_runtime(weights: Optional[str], checkpoint: Optional[str], device: str
                 ) -> InferenceRuntime:
    """Build the runtime from a safetensors weights file or a training checkpoint."""
    if (weights is None) == (checkpoint is None):
        raise ValueError('give exactly one of weights and checkpoint')
    if weights is not None:
        model, config, metadata = load_weights(weights, device='cpu')
    else:
        state = load_checkpoint(checkpoint)
        model, config = model_from_checkpoint(state)
        metadata = {'train_config': state['train_config']}
    return InferenceRuntime(model, config, metadata, device=device)


def class_map_for(runtime: InferenceRuntime) -> Dict[str, Optional[str]]:
    """Return the A2D2 class map of the run that made the model (default grouping if none)."""
    train_config = runtime.metadata.get('train_config')
    if train_config is None:
        train_config = (runtime.metadata.get('provenance') or {}).get('train_config')
    mapping = ((train_config or {}).get('data') or {}).get('class_map')
    return dict(DEFAULT_CLASS_MAP if mapping is None else mapping)


def detect_format(root: PathLike) -> str:
    """Return 'kitti' for a KITTI object layout, else 'a2d2'."""
    return 'kitti' if kitti.is_kitti_root(root) else 'a2d2'


def format_defaults(data_format: str) -> Dict[str, Any]:
    """Return the extrinsic and intensity scale a format is read with unless overridden."""
    if data_format == 'kitti':
        return {'extrinsic': kitti.KITTI_EXTRINSIC,
                'intensity_scale': kitti.KITTI_INTENSITY_SCALE}
    return {'extrinsic': kitti.SensorExtrinsic(), 'intensity_scale': 0.0}


def _three(values: Optional[Sequence[float]], default: Tuple[float, float, float]
           ) -> Tuple[float, float, float]:
    return default if values is None else (float(values[0]), float(values[1]),
                                           float(values[2]))


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--weights', help='deployable .safetensors weights')
    source.add_argument('--checkpoint', help='training checkpoint (.pt)')
    parser.add_argument('--data', required=True, help='dataset root (A2D2 or KITTI layout)')
    parser.add_argument('--format', choices=FORMATS, default='auto',
                        help='dataset layout (default auto: KITTI if it has its layout)')
    parser.add_argument('--scenes', nargs='+', help='A2D2 scene folders (default: all)')
    parser.add_argument('--frames', nargs='+', help='KITTI frame ids (default: all)')
    parser.add_argument('--out', default='out/eval', help='folder for metrics.json and plots')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default cpu)")
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--workers', type=int, default=0, help='frame-reading processes')
    parser.add_argument('--score-threshold', type=float, default=EVAL_SCORE_THRESHOLD,
                        help='lowest score evaluated (PR curves, AP)')
    parser.add_argument('--operating-threshold', type=float, default=NODE_SCORE_THRESHOLD,
                        help='score threshold of the reported recall and precision (default: '
                        "the node's default score_thresholds)")
    parser.add_argument('--extrinsic-translation', type=float, nargs=3, metavar=('X', 'Y', 'Z'),
                        help="the node's extrinsic_translation_m: the cloud frame's origin in "
                        'the model frame (default: 0 0 0 for A2D2, training.kitti.'
                        'KITTI_EXTRINSIC for KITTI)')
    parser.add_argument('--extrinsic-rpy', type=float, nargs=3, metavar=('R', 'P', 'Y'),
                        help="the node's extrinsic_rpy_rad (default: the format's)")
    parser.add_argument('--intensity-scale', type=float,
                        help="the node's intensity_scale: 0 = the weights' own (default: 0 for "
                        'A2D2, 1 for KITTI)')
    parser.add_argument('--lidar-only', action='store_true', help='skip the fused run')
    parser.add_argument('--semantic-only', action='store_true',
                        help='A2D2: evaluate the semantic head only (automatic for a root '
                        'without LiDAR folders)')
    parser.add_argument('--no-renders', action='store_true', help='write no per-frame renders')
    parser.add_argument('--min-points', type=int, default=0, metavar='N',
                        help='evaluate only objects with at least N LiDAR points in their box '
                        '(fewer-point boxes are ignore regions; default 0: all objects)')
    parser.add_argument('--kitti-ring-step', type=int, default=1, metavar='K',
                        help="KITTI: keep every K-th of the HDL-64E's laser rings (2: a "
                        '32-beam cloud, 4: 16 beams; default 1: all)')
    return parser


def _dataset(args: argparse.Namespace, data_format: str, extrinsic: kitti.SensorExtrinsic,
             runtime: InferenceRuntime
             ) -> Union[A2D2Dataset, kitti.KittiDataset, SemanticOnlyFrames]:
    """Return the frames the command line names: KITTI, A2D2 with LiDAR, or camera-only A2D2."""
    classes = runtime.config.detection_classes
    if data_format == 'kitti':
        if args.semantic_only:
            raise SystemExit('--semantic-only: KITTI object frames have no semantic labels')
        return kitti.KittiDataset(args.data, classes=classes, extrinsic=extrinsic,
                                  load_image=not args.lidar_only, frame_ids=args.frames,
                                  ring_step=args.kitti_ring_step)
    if args.kitti_ring_step != 1:
        raise SystemExit('--kitti-ring-step: only KITTI velodyne files keep their laser rings')
    if args.semantic_only or not has_lidar(args.data, args.scenes):
        if args.lidar_only:
            raise SystemExit('--lidar-only: this A2D2 root has no LiDAR to evaluate')
        LOGGER.info('%s: no LiDAR folders (or --semantic-only): evaluating the semantic '
                    'head only', args.data)
        return SemanticOnlyFrames(args.data, scenes=args.scenes)
    return A2D2Dataset(args.data, scenes=args.scenes, class_map=class_map_for(runtime),
                       classes=classes, load_image=not args.lidar_only,
                       load_semantic=not args.lidar_only)


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    if not os.path.isdir(args.data):
        raise SystemExit(f'training.evaluate: {args.data}: no such data folder')
    try:  # before the evaluation, not after it
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        raise output_error('training.evaluate', args.out, error) from None
    data_format = detect_format(args.data) if args.format == 'auto' else args.format
    defaults = format_defaults(data_format)
    extrinsic = kitti.SensorExtrinsic(
        translation_m=_three(args.extrinsic_translation, defaults['extrinsic'].translation_m),
        rpy_rad=_three(args.extrinsic_rpy, defaults['extrinsic'].rpy_rad))
    intensity_scale = (defaults['intensity_scale'] if args.intensity_scale is None
                       else args.intensity_scale)
    try:
        runtime = load_runtime(args.weights, args.checkpoint, args.device)
    except (WeightsError, CheckpointError) as error:
        raise SystemExit(f'training.evaluate: {error}') from None
    config: ModelConfig = runtime.config
    if args.min_points < 0:
        raise SystemExit(f'--min-points must be >= 0, got {args.min_points}')
    if args.kitti_ring_step < 1:
        raise SystemExit(f'--kitti-ring-step must be >= 1, got {args.kitti_ring_step}')
    try:
        dataset = _dataset(args, data_format, extrinsic, runtime)
    except CorruptFrameError as error:
        raise SystemExit(f'training.evaluate: {error.path}: {error.reason}') from None
    except (OSError, ValueError) as error:  # the readers name the file or folder
        raise SystemExit(f'training.evaluate: {error}') from None
    semantic_only = isinstance(dataset, SemanticOnlyFrames)
    if not len(dataset):
        raise SystemExit(f'{args.data}: no frames to evaluate (format {data_format})')
    runs = ('fused',) if semantic_only else ('lidar_only',) if args.lidar_only else RUNS
    try:
        result = evaluate(
            runtime, dataset, batch_size=args.batch_size, score_threshold=args.score_threshold,
            workers=args.workers, extrinsic=extrinsic,
            gain=intensity_gain(intensity_scale, config), runs=runs,
            detection=not semantic_only, operating_threshold=args.operating_threshold,
            render_dir=None if args.no_renders else os.path.join(args.out, 'renders'),
            min_points=args.min_points)
    except MissingCalibrationError as error:
        raise SystemExit(str(error)) from None
    extra = {'data': os.path.abspath(args.data), 'weights': args.weights or args.checkpoint,
             'format': data_format + (' (semantic only)' if semantic_only else ''),
             'extrinsic_translation_m': list(extrinsic.translation_m),
             'extrinsic_rpy_rad': list(extrinsic.rpy_rad), 'intensity_scale': intensity_scale,
             'runs': list(runs), 'min_points': args.min_points,
             'kitti_ring_step': args.kitti_ring_step}
    path = write_report(result, args.out, extra)
    print(json.dumps({'metrics': path, 'frames': result.num_frames, **result.summary()}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
