"""Tests for bev_perception.metrics on small hand-computed cases."""

import json
import math

from bev_perception.metrics import (
    category_confusions, DetectionAccumulator, interpolated_average_precision, match_frame,
    SemanticAccumulator)
import numpy as np
import pytest

CLASSES = ('car', 'pedestrian')
CAR, PEDESTRIAN = 0, 1


def boxes_at(*centres_xy):
    """Return (K, 7) float32 boxes of car size at the given BEV centres."""
    boxes = np.zeros((len(centres_xy), 7), dtype=np.float32)
    boxes[:, 3:6] = (4.0, 1.8, 1.5)
    if centres_xy:
        boxes[:, :2] = np.asarray(centres_xy, dtype=np.float32)
    return boxes


def labels(*ids):
    """Return (K,) int64 labels."""
    return np.asarray(ids, dtype=np.int64)


def single_class_ap(pred_xy, scores, gt_xy, thresholds=(0.5,)):
    """Return AP of 'car' per threshold for one frame of car predictions and ground truth."""
    accumulator = DetectionAccumulator(CLASSES, thresholds)
    accumulator.add(boxes_at(*pred_xy), np.asarray(scores), labels(*[CAR] * len(pred_xy)),
                    boxes_at(*gt_xy), labels(*[CAR] * len(gt_xy)))
    return accumulator.compute().ap['car']


def test_perfect_predictions_give_ap_one():
    accumulator = DetectionAccumulator(CLASSES)
    for offset in (0.0, 20.0, 35.0):
        gt = boxes_at((10.0 + offset, 1.0), (15.0 + offset, -3.0), (7.0, 2.0 + offset))
        gt_labels = labels(CAR, PEDESTRIAN, CAR)
        accumulator.add(gt.copy(), np.array([0.9, 0.8, 0.7]), gt_labels, gt, gt_labels)
    metrics = accumulator.compute()
    for name in CLASSES:
        for threshold in (0.5, 1.0, 2.0, 4.0):
            assert metrics.ap[name][threshold] == pytest.approx(1.0)
    assert metrics.map == pytest.approx(1.0)
    assert metrics.num_gt == {'car': 6, 'pedestrian': 3}
    assert metrics.num_pred == {'car': 6, 'pedestrian': 3}
    assert metrics.num_frames == 3


def test_false_positive_ranked_first_halves_ap():
    ap = single_class_ap([(30.0, 0.0), (10.0, 0.0)], [0.9, 0.5], [(10.0, 0.0)])
    # precision (0, 1/2) at recall (0, 1): envelope 1/2 at every recall level
    assert ap[0.5] == pytest.approx(0.5)


def test_false_positive_ranked_last_costs_nothing():
    ap = single_class_ap([(30.0, 0.0), (10.0, 0.0)], [0.2, 0.5], [(10.0, 0.0)])
    assert ap[0.5] == pytest.approx(1.0)


def test_false_positive_in_another_frame_is_ranked_with_the_rest():
    accumulator = DetectionAccumulator(CLASSES, (1.0,))
    accumulator.add(boxes_at((30.0, 0.0)), np.array([0.9]), labels(CAR),
                    boxes_at(), labels())
    accumulator.add(boxes_at((10.0, 0.0)), np.array([0.5]), labels(CAR),
                    boxes_at((10.0, 0.0)), labels(CAR))
    metrics = accumulator.compute()
    assert metrics.ap['car'][1.0] == pytest.approx(0.5)
    curve = metrics.curves['car'][1.0]
    np.testing.assert_allclose(curve.scores, [0.9, 0.5])
    np.testing.assert_allclose(curve.precision, [0.0, 0.5])
    np.testing.assert_allclose(curve.recall, [0.0, 1.0])


def test_missed_ground_truth_limits_recall():
    ap = single_class_ap([(10.0, 0.0)], [0.8], [(10.0, 0.0), (20.0, 5.0)])
    # recall reaches 0.5 with precision 1: recall levels 0.00..0.50 (51 of 101) score 1
    assert ap[0.5] == pytest.approx(51 / 101)


def test_distance_just_inside_and_just_outside_threshold():
    inside = single_class_ap([(10.49, 0.0)], [0.8], [(10.0, 0.0)], (0.5, 1.0))
    outside = single_class_ap([(10.0, 0.51)], [0.8], [(10.0, 0.0)], (0.5, 1.0))
    on_edge = single_class_ap([(10.5, 0.0)], [0.8], [(10.0, 0.0)], (0.5,))
    assert inside[0.5] == pytest.approx(1.0)
    assert outside[0.5] == 0.0
    assert outside[1.0] == pytest.approx(1.0)
    assert on_edge[0.5] == pytest.approx(1.0)  # the threshold is inclusive


def test_distance_is_bev_only():
    accumulator = DetectionAccumulator(CLASSES, (0.5,))
    pred = boxes_at((10.0, 0.0))
    pred[0, 2] = 5.0  # far off in z, same BEV centre
    accumulator.add(pred, np.array([0.7]), labels(CAR), boxes_at((10.0, 0.0)), labels(CAR))
    assert accumulator.compute().ap['car'][0.5] == pytest.approx(1.0)


def test_class_mismatch_is_not_a_match():
    accumulator = DetectionAccumulator(CLASSES, (2.0,))
    accumulator.add(boxes_at((10.0, 0.0)), np.array([0.9]), labels(PEDESTRIAN),
                    boxes_at((10.0, 0.0)), labels(CAR))
    metrics = accumulator.compute()
    assert metrics.ap['car'][2.0] == 0.0  # ground truth, no car predictions
    assert math.isnan(metrics.ap['pedestrian'][2.0])  # no pedestrian ground truth anywhere
    assert metrics.map_by_threshold[2.0] == 0.0  # the NaN class is left out, not counted as 0
    assert metrics.map == 0.0


def test_greedy_matching_by_score_claims_nearest_ground_truth():
    # the higher-scored prediction claims the only box, the closer one becomes a false positive
    tp = match_frame(np.array([[10.3, 0.0], [10.0, 0.0]]), np.array([0.9, 0.8]),
                     np.array([[10.0, 0.0]]), 0.5)
    np.testing.assert_array_equal(tp, [True, False])
    # each prediction takes the nearest box still unmatched
    tp = match_frame(np.array([[10.2, 0.0], [10.9, 0.0]]), np.array([0.8, 0.9]),
                     np.array([[10.0, 0.0], [11.0, 0.0]]), 0.5)
    np.testing.assert_array_equal(tp, [True, True])
    assert not match_frame(np.zeros((1, 2)), np.ones(1), np.zeros((0, 2)), 4.0).any()


def test_duplicate_detection_is_a_false_positive():
    ap = single_class_ap([(10.0, 0.0), (10.1, 0.0), (20.0, 0.0)], [0.9, 0.8, 0.7],
                         [(10.0, 0.0), (20.0, 0.0)])
    # ranks: TP, FP, TP -> precision (1, 1/2, 2/3), recall (1/2, 1/2, 1)
    assert ap[0.5] == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)


def test_interpolated_average_precision_hand_case():
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    assert interpolated_average_precision(recall, precision) == pytest.approx(
        (51 + 50 * 2 / 3) / 101)
    assert interpolated_average_precision(np.zeros(0), np.zeros(0)) == 0.0


def test_no_predictions_and_empty_frames():
    accumulator = DetectionAccumulator(CLASSES, (1.0, 2.0))
    accumulator.add(np.zeros((0, 7)), np.zeros(0), labels(), np.zeros((0, 7)), labels())
    metrics = accumulator.compute()
    assert all(math.isnan(v) for v in metrics.ap['car'].values())
    assert math.isnan(metrics.map)
    accumulator.add(np.zeros((0, 7)), np.zeros(0), labels(), boxes_at((5.0, 5.0)), labels(CAR))
    metrics = accumulator.compute()
    assert metrics.ap['car'] == {1.0: 0.0, 2.0: 0.0}
    assert metrics.map == 0.0


def test_bad_inputs_raise():
    accumulator = DetectionAccumulator(CLASSES)
    with pytest.raises(ValueError, match='labels must be in'):
        accumulator.add(boxes_at((1.0, 1.0)), np.array([0.5]), labels(2), boxes_at(), labels())
    with pytest.raises(ValueError, match='scores'):
        accumulator.add(boxes_at((1.0, 1.0)), np.array([0.5, 0.4]), labels(0), boxes_at(),
                        labels())
    with pytest.raises(ValueError, match='do not match'):
        accumulator.add(boxes_at(), np.zeros(0), labels(), boxes_at((1.0, 1.0)), labels(0, 1))


def test_detection_metrics_to_dict_is_strict_json():
    accumulator = DetectionAccumulator(CLASSES, (0.5, 2.0))
    accumulator.add(boxes_at((10.0, 0.0)), np.array([0.9]), labels(CAR),
                    boxes_at((10.0, 0.0)), labels(CAR))
    result = accumulator.compute().to_dict(include_curves=True)
    text = json.dumps(result, allow_nan=False)
    loaded = json.loads(text)
    assert loaded['ap']['car'] == {'0.5': 1.0, '2.0': 1.0}
    assert loaded['ap']['pedestrian'] == {'0.5': None, '2.0': None}
    assert loaded['map'] == 1.0
    assert loaded['curves']['car']['0.5']['precision'] == [1.0]


def semantic_case(num_classes=3):
    """Return an accumulator fed with the 2 x 3 hand case of test_semantic_iou_tiny_case."""
    gt = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [1, 1, 0]], dtype=np.uint8)
    accumulator = SemanticAccumulator(num_classes, ignore_index=255)
    accumulator.add(pred, gt)
    return accumulator


def test_semantic_iou_tiny_case():
    metrics = semantic_case().compute()
    # class 0: TP 1, FN 1 (the pred 0 on the ignored pixel is not counted) -> 1/2
    # class 1: TP 2, FP 2 -> 1/2;  class 2: TP 0, FN 1 -> 0
    np.testing.assert_allclose(metrics.iou, [0.5, 0.5, 0.0])
    assert metrics.miou == pytest.approx(1 / 3)
    assert metrics.pixel_accuracy == pytest.approx(3 / 5)
    assert metrics.num_ignored_pixels == 1
    np.testing.assert_array_equal(metrics.confusion, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])


def test_category_confusions_read_the_rows_largest_first():
    rows = category_confusions(semantic_case(num_classes=4).compute(), top=2)
    # ground truth pixels: class 0 two (pred 0, 1), class 1 two (pred 1, 1), class 2 one (pred 1)
    assert [row.name for row in rows] == ['0', '1', '2']  # class 3 has no ground truth
    assert [row.share for row in rows] == pytest.approx([0.4, 0.4, 0.2])
    assert rows[0].predicted_as == (('0', 0.5), ('1', 0.5))
    assert rows[1].predicted_as == (('1', 1.0),)  # no zero shares listed
    assert rows[2].predicted_as == (('1', 1.0),) and rows[2].iou == 0.0


def test_semantic_class_absent_everywhere_is_nan_and_excluded():
    metrics = semantic_case(num_classes=5).compute()
    assert np.isnan(metrics.iou[3:]).all()
    assert metrics.miou == pytest.approx(1 / 3)


def test_semantic_class_predicted_but_not_in_ground_truth_scores_zero():
    accumulator = SemanticAccumulator(3)
    accumulator.add(np.array([[0, 2]]), np.array([[0, 0]]))
    metrics = accumulator.compute()
    assert metrics.iou[2] == 0.0
    assert metrics.iou[0] == pytest.approx(0.5)
    assert math.isnan(metrics.iou[1])
    assert metrics.miou == pytest.approx(0.25)


def test_semantic_streaming_equals_one_batch():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, size=(2, 7, 5)).astype(np.uint8)
    gt[gt == 3] = 255
    pred = rng.integers(0, 3, size=(2, 7, 5)).astype(np.uint8)
    streamed = SemanticAccumulator(3)
    for frame in range(2):
        streamed.add(pred[frame], gt[frame])
    batched = SemanticAccumulator(3)
    batched.add(pred.reshape(14, 5), gt.reshape(14, 5))
    np.testing.assert_array_equal(streamed.compute().confusion, batched.compute().confusion)
    assert streamed.compute().num_ignored_pixels == int((gt == 255).sum())


def test_semantic_bad_inputs_raise():
    accumulator = SemanticAccumulator(3)
    with pytest.raises(ValueError, match='shape'):
        accumulator.add(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match='ground truth id 7'):
        accumulator.add(np.zeros((1, 2)), np.array([[0, 7]]))
    with pytest.raises(ValueError, match='predicted id 3'):
        accumulator.add(np.array([[3, 0]]), np.array([[1, 0]]))
    accumulator.add(np.array([[200, 0]]), np.array([[255, 0]]))  # ignored pixel: any prediction
    assert accumulator.compute().pixel_accuracy == 1.0
    with pytest.raises(ValueError, match='class names'):
        SemanticAccumulator(3, class_names=('a', 'b'))


def test_semantic_empty_and_to_dict():
    empty = SemanticAccumulator(2, class_names=('road', 'car')).compute()
    assert math.isnan(empty.miou) and math.isnan(empty.pixel_accuracy)
    result = semantic_case().compute().to_dict(include_confusion=True)
    loaded = json.loads(json.dumps(result, allow_nan=False))
    assert loaded['iou'] == {'0': 0.5, '1': 0.5, '2': 0.0}
    assert loaded['num_evaluated_pixels'] == 5
    assert loaded['confusion'][1] == [0, 2, 0]
