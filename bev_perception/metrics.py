"""Evaluation metrics: BEV detection AP at centre-distance thresholds and semantic IoU.

Pure numpy, shared by offline evaluation (``training.evaluate``) and bag evaluation. Both
accumulators stream: call ``add`` once per frame, ``compute`` at the end.

Detection (nuScenes-style matching, COCO-style area):
    - Matching, per frame, class and distance threshold: predictions are taken in descending
      score order; each is a true positive when the nearest not yet matched ground truth box of
      the same class has a BEV centre distance (x, y only) ``<=`` the threshold, which it then
      claims; otherwise it is a false positive.
    - Over all frames, the predictions of a class are ranked by score (ties keep insertion
      order) to give precision = TP / (TP + FP) and recall = TP / (number of GT boxes).
    - AP is the 101-point interpolated area under the precision-recall curve: the mean over
      recall levels r in {0, 0.01, ..., 1} of the highest precision reached at any recall
      >= r (0 where recall r is never reached). There is no nuScenes min-recall/precision
      clipping, so values are not comparable to nuScenes leaderboard numbers.
    - A class without ground truth in the whole set has AP NaN and is left out of the mAP;
      a class with ground truth but no predictions has AP 0.
    - mAP per threshold = mean over classes with AP; ``map`` = mean over thresholds.
    - Ignore regions (optional, per prediction, as KITTI treats DontCare areas): a prediction
      flagged ``ignorable`` takes part in the matching; where it matches a ground truth box it
      counts as usual, where it does not it is dropped from that threshold's ranking (neither
      a true nor a false positive).
    - Operating point (``DetectionMetrics.at_score``): precision and recall of the predictions
      scoring ``>=`` a score threshold, read off the ranked curve. Matching goes in descending
      score order, so it equals evaluating only those predictions.

Semantics:
    - A confusion matrix over pixels whose ground truth is not the ignore index (rows: ground
      truth, columns: prediction).
    - IoU_c = TP / (TP + FP + FN); NaN when class c is absent from both ground truth and
      prediction (union 0), and left out of the mIoU. A class predicted but never in the
      ground truth gets IoU 0 and counts.
    - Pixel accuracy = correctly labelled / evaluated pixels.
"""

from dataclasses import dataclass
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

DEFAULT_DISTANCE_THRESHOLDS_M: Tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)

#: Number of evenly spaced recall levels (0, 0.01, ..., 1) of the interpolated AP.
NUM_RECALL_LEVELS = 101


def _nan_to_none(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else float(value)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float('nan')


def interpolated_average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Return the 101-point interpolated area under a precision-recall curve.

    Args:
        recall: (P,) non-decreasing recall after each ranked prediction.
        precision: (P,) precision after each ranked prediction.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.size == 0:
        return 0.0
    recall_levels = np.linspace(0.0, 1.0, NUM_RECALL_LEVELS)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at recall >= r
    first_reaching = np.searchsorted(recall, recall_levels - 1e-9, side='left')  # (L,)
    reached = first_reaching < recall.size
    interpolated = np.zeros_like(recall_levels)
    interpolated[reached] = envelope[first_reaching[reached]]
    return float(interpolated.mean())


def match_frame_indices(pred_centres_m: np.ndarray, pred_scores: np.ndarray,
                        gt_centres_m: np.ndarray, threshold_m: float) -> np.ndarray:
    """Greedily match one frame's predictions of one class to its ground truth.

    Args:
        pred_centres_m: (P, 2) BEV centres x, y of the predictions, metres.
        pred_scores: (P,) scores.
        gt_centres_m: (G, 2) BEV centres of the ground truth boxes of the same class.
        threshold_m: largest centre distance of a match, metres (inclusive).

    Returns:
        (P,) int64, the index of the ground truth box each prediction claims, -1 for none
        (in input order).
    """
    num_pred = len(pred_scores)
    matched_gt = np.full(num_pred, -1, dtype=np.int64)
    if num_pred == 0 or len(gt_centres_m) == 0:
        return matched_gt
    distances = np.linalg.norm(
        pred_centres_m[:, None, :2] - gt_centres_m[None, :, :2], axis=-1)  # (P, G)
    gt_taken = np.zeros(len(gt_centres_m), dtype=bool)
    for pred_index in np.argsort(-pred_scores, kind='stable'):
        candidates = np.where(gt_taken, np.inf, distances[pred_index])  # (G,)
        nearest = int(np.argmin(candidates))
        if candidates[nearest] <= threshold_m:
            gt_taken[nearest] = True
            matched_gt[pred_index] = nearest
    return matched_gt


def match_frame(pred_centres_m: np.ndarray, pred_scores: np.ndarray,
                gt_centres_m: np.ndarray, threshold_m: float) -> np.ndarray:
    """Return (P,) bool, True where a prediction is a true positive (``match_frame_indices``)."""
    return match_frame_indices(pred_centres_m, pred_scores, gt_centres_m, threshold_m) >= 0


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Precision and recall after each ranked prediction of one class at one threshold.

    Attributes:
        scores: (P,) prediction scores, descending.
        precision: (P,) precision after each prediction.
        recall: (P,) recall after each prediction.
    """

    scores: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def to_dict(self) -> Dict[str, List[float]]:
        """Return the curve as lists for JSON."""
        return {'scores': self.scores.tolist(), 'precision': self.precision.tolist(),
                'recall': self.recall.tolist()}


@dataclass(frozen=True)
class OperatingPoint:
    """Detection counts and rates of one class at one score and distance threshold.

    Attributes:
        true_positives: predictions scoring >= the threshold that match a ground truth box.
        false_positives: the other evaluated predictions scoring >= the threshold.
        num_gt: ground truth boxes of the class.
        precision: TP / (TP + FP), NaN without predictions.
        recall: TP / num_gt, NaN without ground truth.
    """

    true_positives: int
    false_positives: int
    num_gt: int
    precision: float
    recall: float

    def to_dict(self) -> dict:
        """Return plain types for JSON (NaN as None)."""
        return {'true_positives': self.true_positives,
                'false_positives': self.false_positives, 'num_gt': self.num_gt,
                'precision': _nan_to_none(self.precision), 'recall': _nan_to_none(self.recall)}


def operating_point(curve: PrecisionRecallCurve, num_gt: int,
                    score_threshold: float) -> OperatingPoint:
    """Return the counts and rates of the predictions scoring >= ``score_threshold``."""
    count = int(np.count_nonzero(curve.scores >= score_threshold))  # scores are descending
    true_positives = int(round(curve.recall[count - 1] * max(num_gt, 1))) if count else 0
    return OperatingPoint(
        true_positives=true_positives, false_positives=count - true_positives, num_gt=num_gt,
        precision=true_positives / count if count else float('nan'),
        recall=true_positives / num_gt if num_gt else float('nan'))


@dataclass(frozen=True)
class DetectionMetrics:
    """BEV detection results; see the module docstring for the definitions.

    Attributes:
        class_names: evaluated classes, in label order.
        thresholds_m: centre-distance thresholds, metres.
        ap: ap[class_name][threshold_m], NaN for classes without ground truth.
        map_by_threshold: mean AP over classes with ground truth, per threshold.
        map: mean of map_by_threshold.
        curves: curves[class_name][threshold_m] for plotting.
        num_gt: ground truth boxes per class.
        num_pred: predictions per class (ignorable ones included).
        num_frames: frames added.
    """

    class_names: Tuple[str, ...]
    thresholds_m: Tuple[float, ...]
    ap: Dict[str, Dict[float, float]]
    map_by_threshold: Dict[float, float]
    map: float  # noqa: A003 (the metric's usual name; only shadows the builtin as an attribute)
    curves: Dict[str, Dict[float, PrecisionRecallCurve]]
    num_gt: Dict[str, int]
    num_pred: Dict[str, int]
    num_frames: int

    def to_dict(self, include_curves: bool = False) -> dict:
        """Return plain types for JSON: thresholds as strings, NaN as None."""
        result = {
            'thresholds_m': list(self.thresholds_m),
            'ap': {name: {str(t): _nan_to_none(v) for t, v in per_threshold.items()}
                   for name, per_threshold in self.ap.items()},
            'map_by_threshold': {str(t): _nan_to_none(v)
                                 for t, v in self.map_by_threshold.items()},
            'map': _nan_to_none(self.map),
            'num_gt': dict(self.num_gt),
            'num_pred': dict(self.num_pred),
            'num_frames': self.num_frames,
        }
        if include_curves:
            result['curves'] = {name: {str(t): curve.to_dict() for t, curve in per.items()}
                                for name, per in self.curves.items()}
        return result

    def overall_at_score(self, score_threshold: float, threshold_m: float) -> OperatingPoint:
        """Return the operating point of all classes together (counts summed over classes)."""
        points = [per_threshold[threshold_m]
                  for per_threshold in self.at_score(score_threshold).values()]
        true_positives = sum(p.true_positives for p in points)
        false_positives = sum(p.false_positives for p in points)
        num_gt = sum(p.num_gt for p in points)
        predicted = true_positives + false_positives
        return OperatingPoint(
            true_positives=true_positives, false_positives=false_positives, num_gt=num_gt,
            precision=true_positives / predicted if predicted else float('nan'),
            recall=true_positives / num_gt if num_gt else float('nan'))

    def at_score(self, score_threshold: float) -> Dict[str, Dict[float, OperatingPoint]]:
        """Return the operating point per class and distance threshold at a score threshold."""
        return {name: {t: operating_point(curve, self.num_gt[name], score_threshold)
                       for t, curve in per_threshold.items()}
                for name, per_threshold in self.curves.items()}


def _check_boxes(boxes: np.ndarray, labels: np.ndarray, what: str,
                 num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(0, 2) if boxes.size == 0 else boxes
    labels = np.asarray(labels).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] < 2 or len(boxes) != len(labels):
        raise ValueError(
            f'{what} boxes of shape {boxes.shape} do not match {len(labels)} labels')
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f'{what} labels must be in [0, {num_classes}), got {labels.tolist()}')
    return boxes, labels.astype(np.int64)


class DetectionAccumulator:
    """Stream frames of BEV detections and ground truth; compute AP per class and mAP."""

    def __init__(self, class_names: Sequence[str],
                 thresholds_m: Sequence[float] = DEFAULT_DISTANCE_THRESHOLDS_M):
        """Set up for ``class_names`` (label i = class_names[i]) and distance thresholds (m)."""
        self.class_names = tuple(class_names)
        self.thresholds_m = tuple(float(t) for t in thresholds_m)
        num_classes = len(self.class_names)
        self._scores: List[List[List[np.ndarray]]] = [
            [[] for _ in self.thresholds_m] for _ in range(num_classes)]
        self._num_pred = np.zeros(num_classes, dtype=np.int64)
        self._true_positives: List[List[List[np.ndarray]]] = [
            [[] for _ in self.thresholds_m] for _ in range(num_classes)]
        self._num_gt = np.zeros(num_classes, dtype=np.int64)
        self._num_frames = 0

    def add(self, pred_boxes: np.ndarray, pred_scores: np.ndarray, pred_labels: np.ndarray,
            gt_boxes: np.ndarray, gt_labels: np.ndarray,
            pred_ignorable: Optional[np.ndarray] = None) -> None:
        """Add one frame.

        Args:
            pred_boxes: (P, 7) predicted boxes (only x, y are used).
            pred_scores: (P,) scores.
            pred_labels: (P,) class indices into class_names.
            gt_boxes: (G, 7) ground truth boxes.
            gt_labels: (G,) class indices into class_names.
            pred_ignorable: (P,) bool, True where an unmatched prediction is not evaluated
                (in an ignore region; see the module docstring); None: none.
        """
        num_classes = len(self.class_names)
        pred_boxes, pred_labels = _check_boxes(pred_boxes, pred_labels, 'predicted', num_classes)
        gt_boxes, gt_labels = _check_boxes(gt_boxes, gt_labels, 'ground truth', num_classes)
        pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if len(pred_scores) != len(pred_boxes):
            raise ValueError(f'{len(pred_scores)} scores for {len(pred_boxes)} predicted boxes')
        ignorable = (np.zeros(len(pred_scores), dtype=bool) if pred_ignorable is None
                     else np.asarray(pred_ignorable, dtype=bool).reshape(-1))
        if len(ignorable) != len(pred_scores):
            raise ValueError(f'{len(ignorable)} ignorable flags for {len(pred_scores)} '
                             'predicted boxes')
        for label in range(num_classes):
            pred_mask = pred_labels == label
            gt_mask = gt_labels == label
            self._num_gt[label] += int(np.count_nonzero(gt_mask))
            if not pred_mask.any():
                continue
            scores = pred_scores[pred_mask]
            self._num_pred[label] += len(scores)
            for threshold_index, threshold_m in enumerate(self.thresholds_m):
                is_true_positive = match_frame(
                    pred_boxes[pred_mask, :2], scores, gt_boxes[gt_mask, :2], threshold_m)
                evaluated = is_true_positive | ~ignorable[pred_mask]  # (P_c,)
                self._scores[label][threshold_index].append(scores[evaluated])
                self._true_positives[label][threshold_index].append(
                    is_true_positive[evaluated])
        self._num_frames += 1

    def compute(self) -> DetectionMetrics:
        """Return AP per class and threshold, mAP and the precision-recall curves."""
        ap: Dict[str, Dict[float, float]] = {}
        curves: Dict[str, Dict[float, PrecisionRecallCurve]] = {}
        num_pred: Dict[str, int] = {}
        for label, name in enumerate(self.class_names):
            num_pred[name] = int(self._num_pred[label])
            num_gt = int(self._num_gt[label])
            ap[name], curves[name] = {}, {}
            for threshold_index, threshold_m in enumerate(self.thresholds_m):
                score_parts = self._scores[label][threshold_index]
                scores = np.concatenate(score_parts) if score_parts else np.zeros(0)
                order = np.argsort(-scores, kind='stable')
                parts = self._true_positives[label][threshold_index]
                true_positive = (np.concatenate(parts) if parts else np.zeros(0, bool))[order]
                cumulative_tp = np.cumsum(true_positive)
                ranks = np.arange(1, len(true_positive) + 1)
                precision = cumulative_tp / np.maximum(ranks, 1)
                recall = cumulative_tp / max(num_gt, 1)
                curves[name][threshold_m] = PrecisionRecallCurve(
                    scores=scores[order], precision=precision, recall=recall)
                ap[name][threshold_m] = (interpolated_average_precision(recall, precision)
                                         if num_gt else float('nan'))
        map_by_threshold = {t: _nanmean([ap[name][t] for name in self.class_names])
                            for t in self.thresholds_m}
        return DetectionMetrics(
            class_names=self.class_names, thresholds_m=self.thresholds_m, ap=ap,
            map_by_threshold=map_by_threshold, map=_nanmean(list(map_by_threshold.values())),
            curves=curves,
            num_gt={name: int(self._num_gt[i]) for i, name in enumerate(self.class_names)},
            num_pred=num_pred, num_frames=self._num_frames)


@dataclass(frozen=True)
class SemanticMetrics:
    """Semantic segmentation results; see the module docstring for the definitions.

    Attributes:
        class_names: name per class id.
        iou: (C,) IoU per class, NaN where the class is in neither ground truth nor prediction.
        miou: mean of the non-NaN IoUs (NaN when there are none).
        pixel_accuracy: correct / evaluated pixels (NaN when no pixel was evaluated).
        confusion: (C, C) int64 pixel counts, rows ground truth, columns prediction.
        num_ignored_pixels: pixels skipped because their ground truth is the ignore index.
    """

    class_names: Tuple[str, ...]
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    confusion: np.ndarray
    num_ignored_pixels: int

    def to_dict(self, include_confusion: bool = False) -> dict:
        """Return plain types for JSON: IoU per class name, NaN as None."""
        result = {
            'iou': {name: _nan_to_none(v) for name, v in zip(self.class_names, self.iou)},
            'miou': _nan_to_none(self.miou),
            'pixel_accuracy': _nan_to_none(self.pixel_accuracy),
            'num_evaluated_pixels': int(self.confusion.sum()),
            'num_ignored_pixels': self.num_ignored_pixels,
        }
        if include_confusion:
            result['confusion'] = self.confusion.tolist()
        return result


@dataclass(frozen=True)
class CategoryConfusion:
    """Where the pixels of one ground-truth category went."""

    name: str
    share: float  # of all evaluated pixels
    iou: float
    predicted_as: Tuple[Tuple[str, float], ...]  # (category, share of its pixels), largest first


def category_confusions(metrics: SemanticMetrics, top: int = 3) -> List[CategoryConfusion]:
    """Return, per category present in the ground truth (most pixels first), its top predictions.

    A row of the confusion matrix read as fractions: what the model calls the pixels of that
    category (itself included), the ``top`` largest shares that are above zero.
    """
    confusion = metrics.confusion
    total = confusion.sum()
    rows = []
    for index in np.argsort(-confusion.sum(axis=1), kind='stable'):
        pixels = confusion[index]
        count = pixels.sum()
        if count == 0:
            break
        order = np.argsort(-pixels, kind='stable')[:top]
        rows.append(CategoryConfusion(
            name=metrics.class_names[index], share=float(count / total),
            iou=float(metrics.iou[index]),
            predicted_as=tuple((metrics.class_names[j], float(pixels[j] / count))
                               for j in order if pixels[j] > 0)))
    return rows


class SemanticAccumulator:
    """Stream (prediction, ground truth) id maps into a confusion matrix; compute IoU."""

    def __init__(self, num_classes: int, ignore_index: int = 255,
                 class_names: Optional[Sequence[str]] = None):
        """Set up for ids 0..num_classes-1; ground truth pixels equal to ignore_index are skipped.

        Args:
            num_classes: number of classes C.
            ignore_index: ground truth id of pixels that are not evaluated.
            class_names: C names for the results (default: the ids as strings).
        """
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f'{len(class_names)} class names for {num_classes} classes')
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.class_names = tuple(class_names if class_names is not None
                                 else (str(i) for i in range(num_classes)))
        self._confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self._num_ignored = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one frame of predicted and ground truth ids, both (H, W) integers.

        Raises:
            ValueError: shapes differ, or an evaluated id is outside [0, num_classes).
        """
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f'prediction shape {pred.shape} != ground truth shape {gt.shape}')
        evaluated = gt != self.ignore_index
        gt_ids = gt[evaluated].astype(np.int64)
        pred_ids = pred[evaluated].astype(np.int64)
        for what, ids in (('ground truth', gt_ids), ('predicted', pred_ids)):
            if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
                bad = ids[(ids < 0) | (ids >= self.num_classes)][0]
                raise ValueError(
                    f'{what} id {bad} outside [0, {self.num_classes}) on an evaluated pixel')
        counts = np.bincount(gt_ids * self.num_classes + pred_ids,
                             minlength=self.num_classes ** 2)
        self._confusion += counts.reshape(self.num_classes, self.num_classes)  # (C_gt, C_pred)
        self._num_ignored += int(evaluated.size - np.count_nonzero(evaluated))

    def compute(self) -> SemanticMetrics:
        """Return IoU per class, mIoU and pixel accuracy."""
        confusion = self._confusion.copy()
        true_positive = np.diag(confusion).astype(np.float64)
        union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = np.where(union > 0, true_positive / union, np.nan)
        total = confusion.sum()
        return SemanticMetrics(
            class_names=self.class_names, iou=iou, miou=_nanmean(iou.tolist()),
            pixel_accuracy=float(true_positive.sum() / total) if total else float('nan'),
            confusion=confusion, num_ignored_pixels=self._num_ignored)
