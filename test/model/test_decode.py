"""Box encoding round trip, rotated BEV IoU, NMS and detection decoding."""

import math

from bev_perception.model.config import ModelConfig, NMSConfig
from bev_perception.model.decode import (
    boxes_to_regression, decode_detections, greedy_nms, greedy_nms_slots, regression_to_boxes,
    rotated_bev_iou, wrap_angle)
from bev_perception.model.heads import DetectionMaps
import pytest
import torch

CONFIG = ModelConfig.tiny()  # head grid 14 x 16 cells of 0.64 m, origin (0, -4.16)


def _random_boxes(count, seed, config=CONFIG):
    generator = torch.Generator().manual_seed(seed)
    grid = config.grid
    rand = torch.rand(count, 7, generator=generator, dtype=torch.float64)
    boxes = torch.empty(count, 7, dtype=torch.float64)
    boxes[:, 0] = grid.x_range_m[0] + rand[:, 0] * (grid.x_range_m[1] - grid.x_range_m[0])
    boxes[:, 1] = grid.y_range_m[0] + rand[:, 1] * (grid.y_range_m[1] - grid.y_range_m[0])
    boxes[:, 2] = -2.0 + 2.0 * rand[:, 2]
    boxes[:, 3:6] = 0.3 + 6.0 * rand[:, 3:6]
    boxes[:, 6] = math.pi - 2 * math.pi * rand[:, 6]  # (-pi, pi]
    return boxes.float()


def _angle_difference(a, b):
    return torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi


@pytest.mark.parametrize('config', [CONFIG, ModelConfig()])
def test_encode_decode_round_trip(config):
    boxes = _random_boxes(500, 0, config)
    near_pi = torch.tensor([math.pi, math.pi - 1e-6, -math.pi + 1e-6, -math.pi + 1e-3, 0.0, 1e-7])
    extra = boxes[:near_pi.numel()].clone()
    extra[:, 6] = near_pi
    boxes = torch.cat([boxes, extra])
    encoding = boxes_to_regression(boxes, config)
    assert encoding.inside.all()
    assert (encoding.offset >= 0).all() and (encoding.offset < 1).all()
    decoded = regression_to_boxes(encoding.cell_index, encoding.offset, encoding.z,
                                  encoding.log_size, encoding.yaw, config)
    assert decoded.dtype == torch.float32
    torch.testing.assert_close(decoded[:, :6], boxes[:, :6], atol=1e-5, rtol=0)
    assert _angle_difference(decoded[:, 6], boxes[:, 6]).abs().max() < 1e-5
    assert (decoded[:, 6] > -math.pi).all() and (decoded[:, 6] <= math.pi).all()


def test_boxes_off_the_grid_are_flagged():
    boxes = torch.tensor([[-1.0, 0.0, 0, 1, 1, 1, 0], [5.0, 4.6, 0, 1, 1, 1, 0],
                          [5.0, 0.0, 0, 1, 1, 1, 0]])
    assert boxes_to_regression(boxes, CONFIG).inside.tolist() == [False, False, True]


def test_wrap_angle_range():
    angles = torch.tensor([-math.pi, math.pi, 3 * math.pi, -3 * math.pi + 0.1, 0.5],
                          dtype=torch.float64)
    wrapped = wrap_angle(angles)
    assert (wrapped > -math.pi).all() and (wrapped <= math.pi).all()
    assert wrapped[0] == pytest.approx(math.pi) and wrapped[4] == pytest.approx(0.5)


def _box(x, y, length, width, yaw):
    return torch.tensor([x, y, 0.0, length, width, 1.0, yaw])


@pytest.mark.parametrize('a, b, expected', [
    (_box(0, 0, 2, 1, 0.3), _box(0, 0, 2, 1, 0.3), 1.0),
    (_box(0, 0, 2, 1, 0.0), _box(5, 5, 2, 1, 0.0), 0.0),
    (_box(0, 0, 2, 2, 0.0), _box(1, 0, 2, 2, 0.0), 1.0 / 3.0),
    (_box(0, 0, 1, 1, 0.0), _box(0, 0, 1, 1, math.pi / 4), math.sqrt(2) / 2),
    (_box(0, 0, 2, 1, 0.0), _box(0, 0, 1, 2, math.pi / 2), 1.0),
    (_box(0, 0, 4, 2, 0.0), _box(0, 0, 4, 2, math.pi), 1.0),
    (_box(0, 0, 2, 2, 0.0), _box(2, 0, 2, 2, 0.0), 0.0),  # touching edges
    (_box(0, 0, 4, 4, 0.0), _box(0, 0, 2, 2, 0.7), 0.25),  # contained
])
def test_rotated_iou_known_values(a, b, expected):
    assert float(rotated_bev_iou(a, b)) == pytest.approx(expected, abs=1e-6)
    assert float(rotated_bev_iou(b, a)) == pytest.approx(expected, abs=1e-6)


def test_rotated_iou_broadcasts_pairwise():
    boxes = _random_boxes(6, 1)
    pairwise = rotated_bev_iou(boxes[:, None], boxes[None, :])
    assert pairwise.shape == (6, 6)
    torch.testing.assert_close(pairwise, pairwise.T)
    torch.testing.assert_close(torch.diagonal(pairwise), torch.ones(6))


def test_greedy_nms_lets_suppressed_boxes_not_suppress():
    # 0 suppresses 1, 1 would suppress 2; greedy keeps 0 and 2.
    suppression = torch.zeros(1, 3, 3, dtype=torch.bool)
    suppression[0, 0, 1] = suppression[0, 1, 0] = True
    suppression[0, 1, 2] = suppression[0, 2, 1] = True
    keep = greedy_nms(torch.ones(1, 3, dtype=torch.bool), suppression)
    assert keep.tolist() == [[True, False, True]]
    keep = greedy_nms(torch.tensor([[False, True, True]]), suppression)
    assert keep.tolist() == [[False, True, False]]


def test_greedy_nms_cpu_path_equals_the_graph_capturable_loop():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        candidate = torch.rand(3, 40, generator=generator) < 0.5
        suppression = torch.rand(3, 40, 40, generator=generator) < 0.15
        expected = greedy_nms_slots(candidate, suppression)
        assert torch.equal(greedy_nms(candidate, suppression), expected)
        assert expected.any()


def _maps(boxes, labels, scores, config=CONFIG, batch=1):
    """Return DetectionMaps whose peaks and regression encode the given boxes (sample 0)."""
    rows, cols = config.head_hw
    classes = config.num_detection_classes
    heatmap = torch.full((batch, classes, rows * cols), -20.0)
    regression = {'offset': 2, 'z': 1, 'log_size': 3, 'yaw': 2}
    values = {name: torch.zeros(batch, channels, rows * cols)
              for name, channels in regression.items()}
    encoding = boxes_to_regression(boxes, config)
    logits = torch.logit(torch.as_tensor(scores, dtype=torch.float32))
    heatmap[0, labels, encoding.cell_index] = logits
    for name in regression:
        values[name][0][:, encoding.cell_index] = getattr(encoding, name).T
    return DetectionMaps(heatmap=heatmap.view(batch, classes, rows, cols),
                         **{k: v.view(batch, -1, rows, cols) for k, v in values.items()})


def test_decode_recovers_encoded_boxes_with_labels_and_scores():
    boxes = torch.tensor([[2.0, -2.0, -1.0, 4.0, 1.8, 1.5, 0.3],
                          [7.0, 2.0, -0.8, 0.6, 0.6, 1.7, -3.0],
                          [5.0, 0.5, -1.2, 1.8, 0.7, 1.6, math.pi]])
    labels = torch.tensor([0, 2, 3])
    maps = _maps(boxes, labels, [0.9, 0.6, 0.4])
    (found,) = decode_detections(maps, CONFIG, score_thresholds=0.3)
    assert found.labels.tolist() == [0, 2, 3]
    torch.testing.assert_close(found.scores, torch.tensor([0.9, 0.6, 0.4]))
    torch.testing.assert_close(found.boxes[:, :6], boxes[:, :6], atol=1e-5, rtol=0)
    assert _angle_difference(found.boxes[:, 6], boxes[:, 6]).abs().max() < 1e-5
    assert found.boxes.dtype == torch.float32 and found.labels.dtype == torch.int64


def test_per_class_thresholds_and_max_detections():
    boxes = torch.tensor([[2.0, -2.0, -1.0, 4.0, 1.8, 1.5, 0.3],
                          [7.0, 2.0, -0.8, 0.6, 0.6, 1.7, -3.0],
                          [5.0, 0.5, -1.2, 1.8, 0.7, 1.6, 1.0]])
    maps = _maps(boxes, torch.tensor([0, 2, 3]), [0.9, 0.6, 0.4])
    (found,) = decode_detections(maps, CONFIG, score_thresholds=[0.95, 0.5, 0.5, 0.3])
    assert found.labels.tolist() == [2, 3]
    (found,) = decode_detections(maps, CONFIG, score_thresholds=0.1, max_detections=2)
    assert found.labels.tolist() == [0, 2]
    with pytest.raises(ValueError, match='thresholds'):
        decode_detections(maps, CONFIG, score_thresholds=[0.1, 0.2])


@pytest.mark.parametrize('nms', [NMSConfig(kind='distance', radius_m=(2.0, 3.0, 0.5, 1.0)),
                                 NMSConfig(kind='rotated', radius_m=(2.0, 3.0, 0.5, 1.0),
                                           iou_threshold=0.2)])
def test_nms_suppresses_same_class_duplicates_only(nms):
    # Two cars 1.28 m apart (two cells: both are local maxima) and a truck on the second.
    boxes = torch.tensor([[3.0, 0.2, -1.0, 4.0, 1.8, 1.5, 0.0],
                          [4.28, 0.2, -1.0, 4.0, 1.8, 1.5, 0.0]])
    maps = _maps(boxes, torch.tensor([0, 0]), [0.9, 0.8])
    maps.heatmap[0, 1].view(-1)[boxes_to_regression(boxes[1:], CONFIG).cell_index] = 1.0
    (found,) = decode_detections(maps, CONFIG, score_thresholds=0.3, nms=nms)
    assert sorted(found.labels.tolist()) == [0, 1]
    assert float(found.scores[0]) == pytest.approx(0.9)
    (unsuppressed,) = decode_detections(maps, CONFIG, score_thresholds=0.3,
                                        nms=NMSConfig(kind='none'))
    assert unsuppressed.labels.numel() == 3


def test_only_local_maxima_become_detections():
    maps = _maps(torch.tensor([[3.0, 0.2, -1.0, 4.0, 1.8, 1.5, 0.0]]), torch.tensor([0]), [0.9])
    cell = int(boxes_to_regression(torch.tensor([[3.0, 0.2, 0, 1, 1, 1, 0]]), CONFIG).cell_index)
    maps.heatmap[0, 0].view(-1)[cell + 1] = 1.5  # a lower neighbour: not a peak
    (found,) = decode_detections(maps, CONFIG, score_thresholds=0.3, nms=NMSConfig(kind='none'))
    assert found.labels.numel() == 1


def test_batch_and_empty_output():
    maps = _maps(torch.tensor([[3.0, 0.2, -1.0, 4.0, 1.8, 1.5, 0.0]]), torch.tensor([1]), [0.9],
                 batch=2)
    first, second = decode_detections(maps, CONFIG)
    assert first.labels.tolist() == [1]
    assert second.boxes.shape == (0, 7) and second.scores.shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_decode_stays_on_cuda():
    maps = _maps(torch.tensor([[3.0, 0.2, -1.0, 4.0, 1.8, 1.5, 0.0]]), torch.tensor([1]), [0.9])
    maps = DetectionMaps(*(m.cuda() for m in maps))
    for kind in ('distance', 'rotated'):
        (found,) = decode_detections(maps, CONFIG, nms=NMSConfig(kind=kind))
        assert found.boxes.is_cuda and found.labels.tolist() == [1]
