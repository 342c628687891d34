"""Tests of training.export: checkpoint -> safetensors round trip with provenance and metrics."""

import json
import os
import subprocess
import sys

from bev_perception.model.config import ModelConfig
from bev_perception.model.network import BEVFusionNet
from bev_perception.weights import load_weights, read_metadata, save_weights
import pytest
import torch
from training import synthetic
from training.train import load_checkpoint, model_from_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, 'training', 'configs', 'tiny_test.yaml')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Train the tiny config for one epoch on 2 synthetic frames; return last.pt."""
    base = tmp_path_factory.mktemp('export')
    root = str(base / 'root')
    synthetic.generate(root, scenes=1, frames=2, seed=31, image_size=(160, 101))
    completed = subprocess.run(
        [sys.executable, '-m', 'training.train', '--config', TINY_CONFIG, '--no-progress',
         '--out', str(base / 'run'), '--override', f'data.root={root}',
         '--override', 'optim.epochs=1', '--override', 'seed=5'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return str(base / 'run' / 'checkpoints' / 'last.pt')


def test_export_round_trip_keeps_outputs_and_records_provenance(checkpoint, tmp_path):
    metrics_path = tmp_path / 'metrics.json'
    metrics = {'summary': {'map_2m_fused': 0.75, 'miou_gt_present': 0.6}, 'num_frames': 3,
               'semantic': {'miou': 0.5, 'pixel_accuracy': 0.9, 'iou': {'Sky': 0.9, 'Car': None}}}
    metrics_path.write_text(json.dumps(metrics))
    out = tmp_path / 'exported.safetensors'
    completed = subprocess.run(
        [sys.executable, '-m', 'training.export', '--checkpoint', checkpoint, '--out', str(out),
         '--metrics', str(metrics_path), '--dataset', 'two synthetic frames'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]

    state = load_checkpoint(checkpoint)
    expected_model, expected_config = model_from_checkpoint(state)
    model, config, metadata = load_weights(out)
    assert config == expected_config
    torch.manual_seed(1)
    points = [torch.rand(300, 4) * torch.tensor([40.0, 30.0, 3.0, 255.0])
              - torch.tensor([0.0, 15.0, 2.5, 0.0])]
    images = torch.randn(1, 3, *config.camera.input_hw)
    with torch.no_grad():
        first = expected_model(points, images)
        second = model(points, images)
    for name in ('heatmap', 'offset', 'z', 'log_size', 'yaw', 'semantic'):
        assert torch.equal(getattr(first, name), getattr(second, name)), name

    provenance = metadata['provenance']
    assert provenance['seed'] == 5
    assert provenance['train_config']['seed'] == 5
    assert 'training.train' in provenance['command']
    assert 'training.export' in provenance['export_command']
    assert provenance['dataset']['root'].endswith('root')
    assert provenance['dataset_note'] == 'two synthetic frames'
    assert provenance['epochs'] == 1 and provenance['steps'] == 1
    assert provenance['training_time_s'] >= 0.0
    assert provenance['date'][:2] == '20'
    # The revision the training ran at, recorded in the checkpoint when it started.
    assert provenance['git_revision'] == load_checkpoint(checkpoint)['git_revision']
    assert metadata['metrics']['summary']['map_2m_fused'] == 0.75
    assert metadata['metrics']['semantic']['iou'] == {'Sky': 0.9}
    assert read_metadata(out)['metrics'] == metadata['metrics']


def test_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / 'bogus.pt'
    torch.save({'model': {}}, bogus)
    completed = subprocess.run(
        [sys.executable, '-m', 'training.export', '--checkpoint', str(bogus), '--out',
         str(tmp_path / 'x.safetensors')], cwd=REPO, capture_output=True, text=True,
        timeout=120)
    assert completed.returncode != 0
    assert 'not a bev_perception training checkpoint' in completed.stderr
    assert 'Traceback' not in completed.stderr


def test_export_names_an_output_it_cannot_write(checkpoint, tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    out = blocker / 'x.safetensors'
    completed = subprocess.run(
        [sys.executable, '-m', 'training.export', '--checkpoint', checkpoint, '--out', str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert f'training.export: --out {out}: {blocker}: File exists' in completed.stderr, (
        completed.stderr)
    assert 'Traceback' not in completed.stderr


@pytest.mark.parametrize('content', [None, b'not a checkpoint', 'truncated'])
def test_training_tools_name_a_missing_or_corrupt_checkpoint(checkpoint, tmp_path, content):
    # Every tool that reads a checkpoint exits with the file and the fault, never a traceback.
    path = tmp_path / 'broken.pt'
    if content == 'truncated':
        with open(checkpoint, 'rb') as stream:
            path.write_bytes(stream.read(5000))
    elif content is not None:
        path.write_bytes(content)
    expected = 'no such checkpoint file' if content is None else 'not a readable checkpoint'
    commands = (
        ['training.export', '--checkpoint', str(path), '--out', str(tmp_path / 'x.safetensors')],
        ['training.train', '--resume', str(path)],
        ['training.evaluate', '--checkpoint', str(path), '--data', str(tmp_path)],
        ['training.make_weights', '--resume', str(path)],
    )
    for command in commands:
        completed = subprocess.run([sys.executable, '-m', *command], cwd=REPO,
                                   capture_output=True, text=True, timeout=120)
        assert completed.returncode != 0, command
        assert f'{path}: {expected}' in completed.stderr, (command, completed.stderr[-2000:])
        assert 'Traceback' not in completed.stderr, command


def test_make_weights_refuses_no_training_scenes_before_generating_any(tmp_path):
    completed = subprocess.run(
        [sys.executable, '-m', 'training.make_weights', '--train-scenes', '0', '--weights',
         str(tmp_path / 'w.safetensors')], cwd=REPO, capture_output=True, text=True,
        timeout=120)
    assert completed.returncode == 2
    assert '--train-scenes must be at least 1, got 0' in completed.stderr
    assert not os.path.exists(tmp_path / 'w.safetensors')


def test_make_weights_refuses_a_first_stage_of_another_recipe_before_generating(tmp_path):
    other = tmp_path / 'other.safetensors'
    config = ModelConfig.tiny()
    save_weights(other, BEVFusionNet(config).eval(), config, {})
    for content, expected in ((None, 'not trained by the first stage of this recipe'),
                              (b'garbage', 'not a safetensors')):
        if content is not None:
            other.write_bytes(content)
        completed = subprocess.run(
            [sys.executable, '-m', 'training.make_weights', '--first-stage', str(other),
             '--weights', str(tmp_path / 'w.safetensors')], cwd=REPO, capture_output=True,
            text=True, timeout=120)
        assert completed.returncode == 1, completed.stderr[-2000:]
        assert str(other) in completed.stderr and expected in completed.stderr, (
            completed.stderr[-2000:])
        assert 'Traceback' not in completed.stderr
        assert not os.path.exists(tmp_path / 'w.safetensors')
