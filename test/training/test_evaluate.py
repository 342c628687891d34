"""Tests of training.evaluate: metric wiring with an oracle runtime, CLI outputs, mIoU variant."""

import dataclasses
import json
import os
import subprocess
import sys

from bev_perception.metrics import SemanticAccumulator
from bev_perception.model.config import ModelConfig
from bev_perception.model.network import BEVFusionNet
from bev_perception.weights import save_weights
import numpy as np
import pytest
import torch
from training import synthetic
from training.a2d2 import A2D2Dataset
from training.evaluate import evaluate, gt_present_miou, in_grid, write_report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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

    def __init__(self, dataset, config):
        self.config = config
        self.truth = {}
        for index in range(len(dataset)):
            frame = dataset[index]
            self.truth[frame.points.tobytes()] = frame
        self.calls = []

    def run_batch(self, frames, score_threshold=None):
        results = []
        self.calls.append([image is None for _, image in frames])
        for points, image in frames:
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


def test_gt_present_miou_ignores_categories_only_predicted():
    accumulator = SemanticAccumulator(4)
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 3, 1, 1]], np.uint8)  # one pixel of class 3, absent from the truth
    accumulator.add(pred, gt)
    metrics = accumulator.compute()
    # IoU: class 0 = 1/2, class 1 = 1, class 3 = 0 (predicted only), class 2 NaN.
    assert metrics.miou == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert gt_present_miou(metrics) == pytest.approx(0.75)


def test_cli_evaluates_weights_and_writes_report(tiny_root, tmp_path):
    torch.manual_seed(0)
    config = ModelConfig.tiny()
    weights = tmp_path / 'tiny.safetensors'
    save_weights(weights, BEVFusionNet(config).eval(), config, {'note': 'untrained'})
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
