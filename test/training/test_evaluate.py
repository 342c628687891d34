"""Tests of training.evaluate: metric wiring, CLI outputs, ignore regions, semantic summaries.

Oracle runtimes check the wiring on A2D2-format and real-dev KITTI frames; the CLI runs on a
tiny synthetic root, the real-dev KITTI root with the shipped weights and a root without LiDAR.
"""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys

from bev_perception.metrics import DetectionAccumulator, SemanticAccumulator
from bev_perception.model.config import ModelConfig
from bev_perception.node_params import parameter_spec
from model_testing import calibrated_tiny_config, write_tiny_weights
import numpy as np
import pytest
from training import kitti, synthetic
from training.a2d2 import A2D2Dataset, list_scenes
from training.evaluate import (
    eval_frame, evaluate, gt_present_miou, in_grid, intensity_gain, NODE_SCORE_THRESHOLD,
    ROAD_CATEGORY, semantic_summary, SemanticOnlyFrames, write_report)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_WEIGHTS = os.path.join(REPO, 'bev_perception', 'weights', 'default.safetensors')
REAL_DEV = os.environ.get('BEV_REAL_DEV_DIR', os.path.join(REPO, '..', 'shared', 'real-dev'))
KITTI_ROOT = os.path.join(REAL_DEV, 'kitti')
KITTI_FRAMES = ('000000', '000001', '000002', '000114', '000134')


@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    """Write 2 scenes x 2 frames of small synthetic A2D2-format data."""
    root = str(tmp_path_factory.mktemp('synthetic_eval') / 'root')
    synthetic.generate(root, scenes=2, frames=2, seed=21, image_size=(160, 101))
    return root


@dataclasses.dataclass
class _Result:
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    semantic: object


class OracleRuntime:
    """Return the ground truth on the BEV grid for fused calls, nothing for LiDAR-only calls."""

    needs_calibration = False

    def __init__(self, dataset, config):
        self.config = config
        self.truth = {}
        for index in range(len(dataset)):
            frame = dataset[index]
            self.truth[frame.points.tobytes()] = frame
        self.calls = []

    def run_batch(self, frames, score_threshold=None):
        results = []
        self.calls.append([frame[1] is None for frame in frames])
        for points, image, *_ in frames:
            frame = self.truth[np.asarray(points).tobytes()]
            if image is None:
                results.append(_Result(np.zeros((0, 7), np.float32), np.zeros(0, np.float32),
                                       np.zeros(0, np.int64), None))
            else:
                assert image.shape[:2] == frame.semantic.shape
                keep = in_grid(frame.boxes, self.config)
                results.append(_Result(frame.boxes[keep], np.linspace(0.9, 0.5, keep.sum()),
                                       frame.labels[keep], frame.semantic.copy()))
        return results


def test_oracle_scores_perfect_fused_and_zero_lidar_only(tiny_root, tmp_path):
    config = ModelConfig()
    dataset = A2D2Dataset(tiny_root, classes=config.detection_classes)
    runtime = OracleRuntime(dataset, config)
    result = evaluate(runtime, dataset, batch_size=3, show_progress=False)
    assert result.num_frames == 4
    assert runtime.calls == [[False] * 3, [True] * 3, [False], [True]]
    for threshold, value in result.fused.map_by_threshold.items():
        assert value == pytest.approx(1.0), threshold
    assert result.lidar_only.map_by_threshold[2.0] == 0.0
    assert result.semantic.miou == pytest.approx(1.0)
    assert result.miou_gt_present == pytest.approx(1.0)
    summary = result.summary()
    assert summary['map_2m_fused'] == 1.0 and summary['map_2m_lidar_only'] == 0.0

    path = write_report(result, str(tmp_path / 'report'), {'note': 'oracle'})
    with open(path, encoding='utf-8') as stream:
        document = json.load(stream)
    assert document['note'] == 'oracle'
    assert document['summary']['miou_gt_present'] == 1.0
    assert set(document['detection']) == {'fused', 'lidar_only'}
    for name in ('pr_curves.png', 'semantic_iou.png'):
        with open(tmp_path / 'report' / name, 'rb') as stream:
            assert stream.read(8) == b'\x89PNG\r\n\x1a\n'


def test_min_points_leaves_few_point_objects_out_of_the_ground_truth(tiny_root):
    config = ModelConfig()
    frame = A2D2Dataset(tiny_root, classes=config.detection_classes)[0]
    boxes = np.concatenate([frame.boxes, [[20.0, -8.0, -0.5, 4.2, 1.8, 1.5, 0.3]]])
    labels = np.concatenate([frame.labels, [0]])
    points = frame.points[np.max(np.abs(frame.points[:, :2] - [20.0, -8.0]), axis=1) > 3.0]
    frame = dataclasses.replace(frame, boxes=boxes.astype(np.float32), labels=labels,
                                points=points)  # the added car has no point
    everything = eval_frame(frame, config)
    visible = eval_frame(frame, config, min_points=1)
    assert len(everything.gt_boxes) == len(visible.gt_boxes) + 1
    assert not np.any(np.all(visible.gt_boxes[:, :2] == [20.0, -8.0], axis=1))
    # A detection on the empty car is ignored, one elsewhere on empty ground is not.
    detections = np.array([[20.5, -8.2, -0.5, 4.2, 1.8, 1.5, 0.3],
                           [30.0, 25.0, -0.5, 4.2, 1.8, 1.5, 0.0]])
    assert everything.ignorable(detections, config).tolist() == [False, False]
    assert visible.ignorable(detections, config).tolist() == [True, False]


def test_gt_present_miou_ignores_categories_only_predicted():
    accumulator = SemanticAccumulator(4)
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 3, 1, 1]], np.uint8)  # one pixel of class 3, absent from the truth
    accumulator.add(pred, gt)
    metrics = accumulator.compute()
    # IoU: class 0 = 1/2, class 1 = 1, class 3 = 0 (predicted only), class 2 NaN.
    assert metrics.miou == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert gt_present_miou(metrics) == pytest.approx(0.75)


def _evaluate_cli(weights, data, out):
    return subprocess.run(
        [sys.executable, '-m', 'training.evaluate', '--weights', str(weights), '--data',
         str(data), '--out', str(out), '--no-renders'], cwd=REPO, capture_output=True,
        text=True, timeout=300)


def test_calibration_aware_weights_evaluate_with_each_roots_calibration(tiny_root, tmp_path):
    weights = tmp_path / 'calibrated.safetensors'
    write_tiny_weights(weights, config=calibrated_tiny_config())
    completed = _evaluate_cli(weights, tiny_root, tmp_path / 'with')
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1])['frames'] == 4
    # The same root without its cams_lidars.json: a scene's own camera cannot be placed ...
    copy = tmp_path / 'root'
    shutil.copytree(tiny_root, copy)
    os.remove(copy / 'cams_lidars.json')
    completed = _evaluate_cli(weights, copy, tmp_path / 'without')
    assert completed.returncode != 0 and 'Traceback' not in completed.stderr
    assert 'a scene camera needs' in completed.stderr
    # ... and without any calibration the fused run cannot place the camera at all.
    for own in copy.glob('*/cams_lidars.json'):
        own.unlink()
    completed = _evaluate_cli(weights, copy, tmp_path / 'without')
    assert completed.returncode != 0
    assert 'no camera calibration' in completed.stderr and 'Traceback' not in completed.stderr
    # A corrupt calibration file is named.
    (copy / 'cams_lidars.json').write_text('{"cameras": []}')
    completed = _evaluate_cli(weights, copy, tmp_path / 'corrupt')
    assert completed.returncode != 0 and 'cams_lidars.json' in completed.stderr
    assert 'Traceback' not in completed.stderr


def test_cli_evaluates_weights_and_writes_report(tiny_root, tmp_path):
    weights = tmp_path / 'tiny.safetensors'
    config = write_tiny_weights(weights)
    out = tmp_path / 'eval'
    completed = subprocess.run(
        [sys.executable, '-m', 'training.evaluate', '--weights', str(weights), '--data',
         tiny_root, '--out', str(out), '--batch-size', '3'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary['frames'] == 4
    with open(out / 'metrics.json', encoding='utf-8') as stream:
        document = json.load(stream)
    for key in ('map_2m_fused', 'map_2m_lidar_only', 'miou', 'miou_gt_present'):
        value = document['summary'][key]
        assert value is None or 0.0 <= value <= 1.0, key
    assert set(document['detection']['fused']['ap']) == set(config.detection_classes)
    assert document['semantic']['num_evaluated_pixels'] > 0
    assert (out / 'pr_curves.png').exists() and (out / 'semantic_iou.png').exists()


# ----------------------------------------------------------------------------- ignore regions


def test_ignorable_predictions_count_only_when_matched():
    accumulator = DetectionAccumulator(('car',), (1.0,))
    gt = np.array([[10.0, 0.0, 0, 4, 2, 1.5, 0]])
    predictions = np.array([[10.2, 0.0, 0, 4, 2, 1.5, 0],  # matches, ignorable: counts
                            [30.0, 5.0, 0, 4, 2, 1.5, 0],  # unmatched, ignorable: dropped
                            [40.0, 5.0, 0, 4, 2, 1.5, 0]])  # unmatched, evaluated: FP
    accumulator.add(predictions, np.array([0.9, 0.8, 0.7]), np.zeros(3, np.int64), gt,
                    np.zeros(1, np.int64), pred_ignorable=np.array([True, True, False]))
    metrics = accumulator.compute()
    assert metrics.num_pred['car'] == 3
    np.testing.assert_allclose(metrics.curves['car'][1.0].precision, [1.0, 0.5])
    assert metrics.ap['car'][1.0] == pytest.approx(1.0)
    points = metrics.at_score(0.75)['car'][1.0]
    assert (points.true_positives, points.false_positives) == (1, 0)
    assert points.precision == 1.0 and points.recall == 1.0
    points = metrics.at_score(0.5)['car'][1.0]
    assert (points.true_positives, points.false_positives, points.precision) == (1, 1, 0.5)
    empty = metrics.at_score(0.95)['car'][1.0]
    assert empty.true_positives == 0 and math.isnan(empty.precision) and empty.recall == 0.0
    with pytest.raises(ValueError, match='ignorable flags'):
        accumulator.add(predictions, np.ones(3), np.zeros(3, np.int64), gt,
                        np.zeros(1, np.int64), pred_ignorable=np.ones(2, bool))


def test_overall_operating_point_sums_the_classes():
    accumulator = DetectionAccumulator(('car', 'pedestrian'), (2.0,))
    gt = np.array([[10.0, 0.0, 0, 4, 2, 1.5, 0], [20.0, 3.0, 0, 0.6, 0.6, 1.7, 0],
                   [30.0, -3.0, 0, 0.6, 0.6, 1.7, 0]])
    predictions = np.array([[10.3, 0.0, 0, 4, 2, 1.5, 0], [20.2, 3.0, 0, 0.6, 0.6, 1.7, 0],
                            [50.0, 0.0, 0, 4, 2, 1.5, 0]])
    accumulator.add(predictions, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), gt,
                    np.array([0, 1, 1]))
    point = accumulator.compute().overall_at_score(0.5, 2.0)
    assert (point.true_positives, point.false_positives, point.num_gt) == (2, 1, 3)
    assert point.recall == pytest.approx(2 / 3) and point.precision == pytest.approx(2 / 3)
    point = accumulator.compute().overall_at_score(0.85, 2.0)
    assert (point.true_positives, point.false_positives) == (1, 0)


def test_node_score_threshold_is_the_node_default():
    assert NODE_SCORE_THRESHOLD == parameter_spec('score_thresholds').default[0]
    assert intensity_gain(0.0, ModelConfig()) == 1.0
    assert intensity_gain(1.0, ModelConfig()) == pytest.approx(255.0)


# ----------------------------------------------------------------------------- KITTI


@pytest.fixture(scope='module')
def kitti_root():
    """Return the real-dev KITTI root beside the checkout (skip without it)."""
    if not os.path.isdir(KITTI_ROOT):
        pytest.skip(f'real-dev KITTI frames not found at {KITTI_ROOT} (../shared/real-dev '
                    'beside the checkout, or set BEV_REAL_DEV_DIR)')
    return KITTI_ROOT


class KittiOracle:
    """Fused: the evaluated ground truth plus a car outside the camera's view (ignorable).

    LiDAR-only: the ground truth plus a truck 15 m ahead, 6 m right: a false positive (no
    truck in range; the place is clear of the DontCare areas).
    """

    needs_calibration = False

    def __init__(self, dataset, config):
        self.config = config
        self.truth = {}
        for index in range(len(dataset)):
            frame = eval_frame(dataset[index], config)
            self.truth[len(frame.points)] = frame

    def run_batch(self, frames, score_threshold=None):
        results = []
        for points, image, *_ in frames:
            frame = self.truth[len(points)]
            extra_box = np.array([[10.0, 30.0, -1.0, 4.0, 1.8, 1.5, 0.0] if image is not None
                                  else [15.0, -6.0, -1.0, 8.0, 2.5, 3.0, 0.0]], np.float32)
            extra_label = 0 if image is not None else 1
            boxes = np.concatenate([frame.gt_boxes, extra_box])
            scores = np.concatenate([np.linspace(0.9, 0.5, len(frame.gt_boxes)), [0.95]])
            labels = np.concatenate([frame.gt_labels, [extra_label]]).astype(np.int64)
            results.append(_Result(boxes, scores, labels, None))
        return results


def test_kitti_scope_with_an_oracle(kitti_root, tmp_path):
    config = ModelConfig()
    dataset = kitti.KittiDataset(kitti_root, classes=config.detection_classes)
    result = evaluate(KittiOracle(dataset, config), dataset, batch_size=2, show_progress=False,
                      render_dir=str(tmp_path / 'renders'))
    assert result.num_frames == 5 and result.semantic is None
    fused, lidar_only = result.fused, result.lidar_only
    assert fused.num_gt == {'car': 15, 'truck': 0, 'pedestrian': 9, 'cyclist': 7}
    for metrics in (fused, lidar_only):
        for name in ('car', 'pedestrian', 'cyclist'):
            assert metrics.ap[name][0.5] == pytest.approx(1.0), name
    fused_points = fused.at_score(NODE_SCORE_THRESHOLD)
    assert all(per[2.0].false_positives == 0 for per in fused_points.values())
    assert fused_points['car'][2.0].recall == 1.0
    truck = lidar_only.at_score(NODE_SCORE_THRESHOLD)['truck'][2.0]
    assert (truck.true_positives, truck.false_positives, truck.precision) == (0, 5, 0.0)
    outcomes = {(o.name, o.run): o for o in result.frames}
    assert outcomes[('000114', 'fused')].ignored == 1
    assert outcomes[('000114', 'lidar_only')].false_positives == 1
    assert outcomes[('000114', 'fused')].matched_gt == 12
    assert len(os.listdir(tmp_path / 'renders')) == 10


def test_cli_evaluates_kitti_lidar_only_with_the_shipped_weights(kitti_root, tmp_path):
    if not os.path.exists(SHIPPED_WEIGHTS):
        pytest.skip(f'{SHIPPED_WEIGHTS} does not exist yet (run `make weights`)')
    out = tmp_path / 'kitti'
    completed = subprocess.run(
        [sys.executable, '-m', 'training.evaluate', '--weights', SHIPPED_WEIGHTS, '--data',
         kitti_root, '--lidar-only', '--out', str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary['frames'] == 5 and summary['map_2m_fused'] is None
    assert 0.0 <= summary['map_2m_lidar_only'] <= 1.0
    with open(out / 'metrics.json', encoding='utf-8') as stream:
        document = json.load(stream)
    assert document['format'] == 'kitti' and document['runs'] == ['lidar_only']
    assert tuple(document['extrinsic_translation_m']) == kitti.KITTI_EXTRINSIC.translation_m
    assert document['intensity_scale'] == kitti.KITTI_INTENSITY_SCALE
    assert document['operating_threshold'] == NODE_SCORE_THRESHOLD
    detection = document['detection']['lidar_only']
    assert detection['num_gt']['car'] == 15 and sum(detection['num_pred'].values()) > 0
    for name, per_threshold in detection['at_operating_threshold'].items():
        for point in per_threshold.values():
            for key in ('recall', 'precision'):
                assert point[key] is None or 0.0 <= point[key] <= 1.0, (name, key)
    for value in detection['ap'].values():
        assert all(v is None or 0.0 <= v <= 1.0 for v in value.values())
    assert 'fused' not in document['detection'] and document['semantic'] is None
    assert '| lidar_only | car | 15 |' in (out / 'metrics.md').read_text()
    for name in ['pr_curves.png'] + [f'renders/{i}_lidar_only.png' for i in KITTI_FRAMES]:
        with open(out / name, 'rb') as stream:
            assert stream.read(8) == b'\x89PNG\r\n\x1a\n', name


def test_cli_thins_kitti_to_a_sparser_sensor(kitti_root, tiny_root, tmp_path):
    if not os.path.exists(SHIPPED_WEIGHTS):
        pytest.skip(f'{SHIPPED_WEIGHTS} does not exist yet (run `make weights`)')
    documents = {}
    for step in (1, 4):
        out = tmp_path / f'step{step}'
        completed = subprocess.run(
            [sys.executable, '-m', 'training.evaluate', '--weights', SHIPPED_WEIGHTS, '--data',
             kitti_root, '--lidar-only', '--no-renders', '--out', str(out),
             '--kitti-ring-step', str(step)],
            cwd=REPO, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-3000:]
        with open(out / 'metrics.json', encoding='utf-8') as stream:
            documents[step] = json.load(stream)
    assert documents[4]['kitti_ring_step'] == 4
    full, sparse = (documents[step]['detection']['lidar_only'] for step in (1, 4))
    assert sparse['num_gt'] == full['num_gt']  # the same labelled objects
    assert sparse['ap'] != full['ap']  # a quarter of the lasers: other detections
    for data, step, message in ((tiny_root, 2, 'only KITTI velodyne files keep their laser'),
                                (kitti_root, 0, '--kitti-ring-step must be >= 1, got 0')):
        completed = subprocess.run(
            [sys.executable, '-m', 'training.evaluate', '--weights', SHIPPED_WEIGHTS, '--data',
             data, '--out', str(tmp_path / 'refused'), '--kitti-ring-step', str(step)],
            cwd=REPO, capture_output=True, text=True, timeout=300)
        assert completed.returncode != 0 and message in completed.stderr
        assert 'Traceback' not in completed.stderr


# ----------------------------------------------------------------------------- semantic only


def test_cli_evaluates_a_root_without_lidar_on_its_semantics(tiny_root, tmp_path):
    root = tmp_path / 'camera_lidar_semantic'
    root.mkdir()
    shutil.copy(os.path.join(tiny_root, 'class_list.json'), root / 'class_list.json')
    for scene in list_scenes(tiny_root):
        for folder in ('camera', 'label'):  # no lidar, no label3D, no camera JSON
            source = os.path.join(tiny_root, scene, folder, 'cam_front_center')
            target = root / scene / folder / 'cam_front_center'
            target.mkdir(parents=True)
            for name in os.listdir(source):
                if name.endswith('.png'):
                    shutil.copy(os.path.join(source, name), target / name)
    frames = SemanticOnlyFrames(root)
    assert len(frames) == 4 and frames[0].semantic.shape == frames[0].image.shape[:2]
    weights = tmp_path / 'tiny.safetensors'
    config = write_tiny_weights(weights)
    out = tmp_path / 'eval'
    completed = subprocess.run(
        [sys.executable, '-m', 'training.evaluate', '--weights', str(weights), '--data',
         str(root), '--out', str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(out / 'metrics.json', encoding='utf-8') as stream:
        document = json.load(stream)
    assert document['format'] == 'a2d2 (semantic only)' and document['detection'] == {}
    semantic = document['semantic']
    for key in ('pixel_accuracy', 'one_class_baseline', 'miou', 'miou_gt_present'):
        assert 0.0 <= semantic[key] <= 1.0, key
    assert semantic['one_class_baseline_category'] in config.semantic_classes
    assert semantic['num_evaluated_pixels'] > 0
    report = (out / 'metrics.md').read_text()
    assert 'one-class baseline' in report
    # one confusion row per category present in the ground truth
    present = [name for name, iou in semantic['iou'].items() if iou is not None]
    rows = [line for line in report.splitlines()
            if line.startswith('| ') and line.split(' | ')[0][2:] in present
            and line.count(' | ') == 3]
    assert rows and len(rows) <= len(present)
    assert len([n for n in os.listdir(out / 'renders') if n.endswith('_semantic.png')]) == 4


def test_semantic_summary_baseline_and_road():
    names = ('Sky', ROAD_CATEGORY, 'Car')
    accumulator = SemanticAccumulator(3, class_names=names)
    gt = np.array([[1, 1, 1, 0, 2, 2]], np.uint8)
    accumulator.add(np.array([[1, 1, 0, 0, 1, 2]], np.uint8), gt)
    summary = semantic_summary(accumulator.compute())
    assert summary['one_class_baseline'] == pytest.approx(0.5)
    assert summary['one_class_baseline_category'] == ROAD_CATEGORY
    assert summary['pixel_accuracy'] == pytest.approx(4 / 6)
    assert summary['road_iou'] == pytest.approx(2 / 4)


def test_evaluate_names_a_missing_weights_file_or_data_folder(tmp_path):
    missing = tmp_path / 'missing.safetensors'
    for arguments, expected in (
            (['--weights', str(missing), '--data', str(tmp_path)],
             f'{missing}: cannot read weights file'),
            (['--weights', str(missing), '--data', str(tmp_path / 'nowhere')],
             f'{tmp_path / "nowhere"}: no such data folder')):
        completed = subprocess.run([sys.executable, '-m', 'training.evaluate', *arguments],
                                   cwd=REPO, capture_output=True, text=True, timeout=120)
        assert completed.returncode != 0
        assert expected in completed.stderr, completed.stderr[-2000:]
        assert 'Traceback' not in completed.stderr


def test_evaluate_names_frames_and_scenes_it_cannot_find(tmp_path):
    tiny_weights = str(tmp_path / 'tiny.safetensors')
    write_tiny_weights(tiny_weights)
    kitti_root, a2d2_root = tmp_path / 'kitti' / 'training', tmp_path / 'a2d2'
    for folder in ('velodyne', 'label_2', 'calib'):
        (kitti_root / folder).mkdir(parents=True)
    a2d2_root.mkdir()
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    for arguments, expected in (
            (['--data', str(tmp_path / 'kitti'), '--format', 'kitti', '--frames', '000042'],
             "no velodyne files for frames ['000042']"),
            (['--data', str(a2d2_root), '--scenes', '20190101_000000'],
             "no scene folders ['20190101_000000']"),
            (['--data', str(a2d2_root), '--format', 'kitti'], 'not a KITTI object root'),
            (['--data', str(a2d2_root), '--out', str(blocker / 'out')],  # the last --out wins
             f'--out {blocker / "out"}: {blocker / "out"}: Not a directory')):
        completed = subprocess.run(
            [sys.executable, '-m', 'training.evaluate', '--weights', tiny_weights,
             '--out', str(tmp_path / 'out'), *arguments],
            cwd=REPO, capture_output=True, text=True, timeout=120)
        assert completed.returncode != 0, arguments
        assert expected in completed.stderr, completed.stderr[-2000:]
        assert 'Traceback' not in completed.stderr, arguments
