"""Tests of training.train, training.data and training.augment on tiny synthetic scenes (CPU)."""

import dataclasses
import math
import os
import socket
import subprocess
import sys

from bev_perception.model.camera_geometry import mirror_left_right, SIZE as GEOMETRY_SIZE
from bev_perception.model.config import ModelConfig
from bev_perception.model.network import BEVFusionNet
from bev_perception.weights import save_weights
import numpy as np
import pytest
from safetensors.torch import load_file
import torch
from training import synthetic
from training.a2d2 import A2D2Dataset
from training.augment import augment_sample, AugmentConfig, flip_left_right, Sample, wrap_yaw
from training.data import collate_examples, FrameCache, resize_labels_nearest, TrainingDataset
from training.train import (
    _grown, _initial_state, _semantic_losses, _train_step, apply_override, DETECTION_MODULES,
    frozen_modules, InitWeightsError, load_checkpoint, load_config, main, OptimConfig,
    TrainConfig, TRAINED_MODEL, WarmupCosine)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, 'training', 'configs', 'tiny_test.yaml')


@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    """Write 2 scenes x 2 frames of small synthetic A2D2-format data."""
    root = str(tmp_path_factory.mktemp('synthetic') / 'root')
    synthetic.generate(root, scenes=2, frames=2, seed=11, image_size=(192, 121))
    return root


#: One intra-op thread in the training subprocesses: tests compare runs bit for bit, and a CPU
#: kernel's reduction order may follow the thread team it gets on a busy machine.
SINGLE_THREAD = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}


def _run_train(*args, env=None, module=('-m', 'training.train')):
    command = [sys.executable, *module, '--config', TINY_CONFIG, '--no-progress', *args]
    env = dict(os.environ if env is None else env, **SINGLE_THREAD)
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                               env=env)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def _state(path):
    return load_checkpoint(path)


def test_config_defaults_round_trip_and_unknown_keys_fail():
    config = load_config(TINY_CONFIG, ('optim.lr=0.25', 'model.name=tiny'))
    assert config.optim.lr == 0.25
    assert isinstance(config.optim.betas, tuple)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match='unknown keys'):
        TrainConfig.from_dict({'optim': {'learning_rate': 1.0}})
    with pytest.raises(ValueError, match='expected a number'):
        TrainConfig.from_dict({'optim': {'lr': 'fast'}})
    raw = {}
    apply_override(raw, 'model.overrides.camera.input_hw=[32, 64]')
    built = TrainConfig.from_dict(raw).model.build()
    assert built.camera.input_hw == (32, 64)
    assert built == ModelConfig(camera=built.camera)


@pytest.mark.parametrize('args, message', [
    (['--config', 'no_such.yaml'], "No such file or directory: 'no_such.yaml'"),
    (['--config', TINY_CONFIG, '--override', 'optim.lr'],
     "tiny_test.yaml: --override 'optim.lr': expected key.path=value"),
    (['--config', TINY_CONFIG, '--override', 'optim.lr=['],
     'the value is not valid YAML'),
    (['--config', TINY_CONFIG, '--override', 'optim.lr=fast'],
     "tiny_test.yaml: config.optim.lr: expected a number, got 'fast'"),
    (['--config', os.path.join(REPO, 'README.md')], 'README.md'),
    (['--resume', 'no_such.pt'], 'no_such.pt: no such checkpoint file'),
])
def test_command_line_config_errors_exit_with_the_file_or_option_named(args, message):
    with pytest.raises(SystemExit) as raised:
        main(args + ['--no-progress'])
    assert str(raised.value).startswith('training.train: ')
    assert message in str(raised.value)


def test_warmup_cosine_schedule_shape():
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, start_ratio=0.1, min_ratio=0.01)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.01 + 0.99 * 0.5)
    assert schedule(110) == pytest.approx(0.01)
    assert all(schedule(s) >= schedule(s + 1) for s in range(10, 120))


def test_warm_restarts_repeat_the_shorter_schedule_then_restart_lower():
    short = WarmupCosine(warmup_steps=10, total_steps=110, start_ratio=0.1, min_ratio=0.01)
    restarted = WarmupCosine(warmup_steps=10, total_steps=160, start_ratio=0.1, min_ratio=0.01,
                             restarts=(110,), restart_ratio=0.5)
    assert all(restarted(s) == short(s) for s in range(110))  # the first cycle is unchanged
    assert restarted(110) == pytest.approx(0.5)
    assert restarted(135) == pytest.approx(0.01 + 0.49 * 0.5)
    assert restarted(160) == pytest.approx(0.01)
    assert all(restarted(s) >= restarted(s + 1) for s in range(110, 170))
    with pytest.raises(ValueError, match='restart_epochs'):
        OptimConfig(epochs=8, restart_epochs=(8,))
    with pytest.raises(ValueError, match='restart_epochs'):
        OptimConfig(epochs=8, restart_epochs=(4, 2))
    with pytest.raises(ValueError, match='restart_lr_ratio'):
        OptimConfig(epochs=8, restart_epochs=(4,), restart_lr_ratio=0.0)


def test_flip_is_consistent_and_an_involution():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 4)).astype(np.float32)
    boxes = np.array([[10.0, 2.0, -1.0, 4.0, 2.0, 1.5, 0.3],
                      [20.0, -3.0, -1.0, 4.0, 2.0, 1.5, math.pi]], dtype=np.float32)
    image = rng.integers(0, 255, size=(5, 7, 3), dtype=np.uint8)
    semantic = rng.integers(0, 38, size=(5, 7), dtype=np.uint8)
    sample = Sample(points, boxes, np.array([0, 1]), image, semantic, True)
    flipped = flip_left_right(sample)
    np.testing.assert_array_equal(flipped.points[:, 1], -points[:, 1])
    np.testing.assert_array_equal(flipped.image, image[:, ::-1])
    np.testing.assert_array_equal(flipped.semantic, semantic[:, ::-1])
    assert flipped.boxes[0, 6] == pytest.approx(-0.3)
    assert flipped.boxes[1, 6] == pytest.approx(math.pi)  # -pi wraps to +pi
    back = flip_left_right(flipped)
    np.testing.assert_allclose(back.boxes, boxes, atol=1e-6)
    np.testing.assert_array_equal(back.image, image)
    assert wrap_yaw(np.array([-math.pi], np.float32))[0] == pytest.approx(math.pi)


def test_flip_mirrors_the_camera_geometry_and_the_cache_keeps_it(tiny_root, tmp_path):
    dataset = A2D2Dataset(tiny_root)
    geometry = dataset[0].camera_geometry
    assert geometry is not None and geometry.shape == (GEOMETRY_SIZE,)
    sample = Sample(np.zeros((0, 4), np.float32), np.zeros((0, 7), np.float32),
                    np.zeros(0, np.int64), None, None, True, geometry)
    flipped = flip_left_right(sample)
    np.testing.assert_array_equal(flipped.camera_geometry, mirror_left_right(geometry))
    cache = FrameCache.build(dataset, ModelConfig.tiny(), str(tmp_path / 'cache'),
                             show_progress=False)
    np.testing.assert_array_equal(cache[0].camera_geometry, geometry)
    batch = collate_examples([TrainingDataset(cache, ModelConfig.tiny(), AugmentConfig.none(),
                                              0)[i] for i in range(2)])
    assert batch.camera_geometry.shape == (2, GEOMETRY_SIZE)
    torch.testing.assert_close(batch.camera_geometry[0], torch.from_numpy(geometry))


def test_read_only_cached_arrays_are_copied_before_torch_shares_them():
    from training.data import _tensor
    frozen = np.arange(12, dtype=np.float32).reshape(3, 4)
    frozen.flags.writeable = False  # as np.load gives a cached frame's arrays
    copied = _tensor(frozen)
    assert not np.shares_memory(copied.numpy(), frozen)
    copied[0, 0] = 5.0  # allowed: its own memory
    assert frozen[0, 0] == 0.0
    writable = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.shares_memory(_tensor(writable).numpy(), writable)  # no copy needed
    assert _tensor(writable, np.int64).dtype == torch.int64


def test_augment_is_deterministic_and_camera_dropout_marks_invalid():
    points = np.random.default_rng(1).normal(size=(1000, 4)).astype(np.float32)
    sample = Sample(points, np.zeros((0, 7), np.float32), np.zeros(0, np.int64),
                    np.full((4, 6, 3), 100, np.uint8), np.zeros((4, 6), np.uint8), True)
    config = AugmentConfig(camera_dropout_prob=1.0)
    first = augment_sample(sample, config, np.random.default_rng([1, 2, 3]))
    second = augment_sample(sample, config, np.random.default_rng([1, 2, 3]))
    np.testing.assert_array_equal(first.points, second.points)
    assert not first.camera_valid
    assert 800 <= len(first.points) <= 1000  # at most 20 % dropped
    unchanged = augment_sample(sample, AugmentConfig.none(), np.random.default_rng(0))
    np.testing.assert_array_equal(unchanged.points, points)
    np.testing.assert_array_equal(unchanged.image, sample.image)
    assert unchanged.camera_valid


def test_lidar_only_samples_shift_vertically_with_their_boxes():
    points = np.random.default_rng(2).normal(size=(500, 4)).astype(np.float32)
    boxes = np.array([[10.0, 2.0, -1.0, 4.0, 2.0, 1.5, 0.3]], np.float32)
    sample = Sample(points, boxes, np.array([0]), np.full((4, 6, 3), 100, np.uint8),
                    np.zeros((4, 6), np.uint8), True)
    still = AugmentConfig.none()
    for dropout, moves in ((1.0, True), (0.0, False)):
        config = dataclasses.replace(still, camera_dropout_prob=dropout,
                                     lidar_only_z_shift_m=0.3)
        out = augment_sample(sample, config, np.random.default_rng(7))
        shift = out.boxes[0, 2] - boxes[0, 2]
        assert (abs(shift) > 0) == moves and abs(shift) <= 0.3
        np.testing.assert_allclose(out.points[:, 2] - points[:, 2], shift, atol=1e-6)
        np.testing.assert_array_equal(out.points[:, :2], points[:, :2])
        assert sample.boxes[0, 2] == -1.0  # the input is left alone
    with pytest.raises(ValueError, match='lidar_only_z_shift_m'):
        AugmentConfig(lidar_only_z_shift_m=-0.1)


def test_nearest_label_resize_keeps_ids_and_alignment():
    labels = np.repeat(np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4), 10, 0), 10, 1)
    resized = resize_labels_nearest(labels, (6, 8))  # (30, 40) -> (6, 8)
    np.testing.assert_array_equal(resized[::2, ::2], np.arange(12).reshape(3, 4))
    assert set(np.unique(resized)) <= set(range(12))


@pytest.mark.parametrize('targets', [(), ('--override', 'target.footprint_regression=0.2')],
                         ids=['centres', 'footprints'])
def test_short_cpu_run_overfits_a_few_frames(tiny_root, tmp_path, targets):
    # Four frames in one batch, no augmentation, 30 steps: the total loss must fall 3x.
    out = tmp_path / 'overfit'
    _run_train('--out', str(out), '--override', f'data.root={tiny_root}', *targets,
               '--override', 'optim.epochs=30', '--override', 'optim.batch_size=4',
               '--override', 'optim.lr=0.01', '--override', 'optim.warmup_steps=3',
               '--override', 'deterministic=false',
               '--override', 'keep_checkpoints=1',
               '--override', 'augment={flip_prob: 0.0, camera_dropout_prob: 0.0, '
               'point_dropout_max: 0.0, point_jitter_m: 0.0, intensity_scale_range: [1.0, 1.0],'
               ' brightness: 0.0, contrast: 0.0, saturation: 0.0}')
    history = _state(out / 'checkpoints' / 'last.pt')['history']
    assert len(history) == 30
    first, last = history[0], history[-1]
    assert last['total'] < first['total'] / 3.0, (first, last)
    assert last['heatmap'] < first['heatmap'] / 2.0
    assert last['regression'] < first['regression'] / 2.0
    assert last['semantic'] < first['semantic'] / 2.0
    assert (out / 'tensorboard').is_dir() and os.listdir(out / 'tensorboard')


def test_calibration_aware_model_trains_on_each_frames_calibration(tiny_root, tmp_path):
    out = tmp_path / 'calibrated'
    _run_train('--out', str(out), '--override', f'data.root={tiny_root}',
               '--override', 'model.overrides.fusion={geometry_heights_m: [-1.6, -0.6, 0.4]}')
    state = _state(out / 'checkpoints' / 'last.pt')
    assert state['model_config']['fusion']['geometry_heights_m'] == [-1.6, -0.6, 0.4]
    assert 'fusion.geometry_uv.weight' in state['model']
    assert len(state['history']) == 2
    assert all(math.isfinite(epoch['total']) for epoch in state['history'])


@pytest.mark.parametrize('averaged', [False, True], ids=['last-step', 'weight-average'])
def test_resume_continues_bit_identically(tiny_root, tmp_path, averaged):
    common = ('--override', f'data.root={tiny_root}', '--override', 'optim.epochs=3',
              '--override', f'optim.ema_decay={0.9 if averaged else 0}')
    _run_train('--out', str(tmp_path / 'straight'), *common)
    _run_train('--out', str(tmp_path / 'broken'), '--stop-after-epoch', '1', *common)
    interrupted = _state(tmp_path / 'broken' / 'checkpoints' / 'last.pt')
    assert interrupted['epoch'] == 1
    _run_train('--out', str(tmp_path / 'broken'), '--resume', 'last', *common)
    straight = _state(tmp_path / 'straight' / 'checkpoints' / 'last.pt')
    resumed = _state(tmp_path / 'broken' / 'checkpoints' / 'last.pt')
    assert straight['step'] == resumed['step'] == 3 * 2
    assert straight['model'].keys() == resumed['model'].keys()
    for name, value in straight['model'].items():
        assert torch.equal(value, resumed['model'][name]), name
    for key in ('exp_avg', 'exp_avg_sq'):
        for index, entry in straight['optimizer']['state'].items():
            assert torch.equal(entry[key], resumed['optimizer']['state'][index][key])
    assert straight['scheduler']['last_epoch'] == resumed['scheduler']['last_epoch']
    assert [h['total'] for h in straight['history']] == [h['total'] for h in resumed['history']]
    # The first epoch already moved the parameters, so the comparison is not vacuous.
    assert any(not torch.equal(value, interrupted['model'][name])
               for name, value in straight['model'].items())
    if averaged:  # the optimiser's weights resumed too, and the average lags them
        assert straight['ema_updates'] == resumed['ema_updates'] == 3 * 2
        for name, value in straight[TRAINED_MODEL].items():
            assert torch.equal(value, resumed[TRAINED_MODEL][name]), name
        assert any(not torch.equal(value, straight[TRAINED_MODEL][name])
                   for name, value in straight['model'].items())
    else:
        assert TRAINED_MODEL not in straight


def test_a_finished_run_resumed_with_a_restart_equals_that_schedule_from_the_start(
        tiny_root, tmp_path):
    # How a finished recipe grows (e.g. 16 -> 24 epochs): its last checkpoint resumed with a
    # restart at its old end must continue exactly as the longer run would have.
    base = ('--override', f'data.root={tiny_root}')
    longer = ('--override', 'optim.epochs=3', '--override', 'optim.restart_epochs=[2]',
              '--override', 'optim.restart_lr_ratio=0.5')
    _run_train('--out', str(tmp_path / 'straight'), *base, *longer)
    _run_train('--out', str(tmp_path / 'grown'), *base, '--override', 'optim.epochs=2')
    _run_train('--out', str(tmp_path / 'grown'), '--resume', 'last', *base, *longer)
    straight = _state(tmp_path / 'straight' / 'checkpoints' / 'last.pt')
    grown = _state(tmp_path / 'grown' / 'checkpoints' / 'last.pt')
    assert straight['step'] == grown['step'] == 3 * 2
    # The learning rate for the step after epoch 2: the restart (0.5 x 0.005) in the straight
    # run; the grown run logged its old schedule's end there, then took the restart's steps.
    assert straight['history'][1]['lr'] == pytest.approx(0.0025)
    assert grown['history'][1]['lr'] < 0.001
    assert straight['history'][2]['lr'] == grown['history'][2]['lr']
    for name, value in straight['model'].items():
        assert torch.equal(value, grown['model'][name]), name


def _start_weights(path, seed):
    """Write a randomly initialised tiny model to ``path``; return (model, config, tensors)."""
    config = load_config(TINY_CONFIG).model.build()
    torch.manual_seed(seed)
    model = BEVFusionNet(config).eval()
    save_weights(path, model, config, {})
    return model, config, load_file(path)


def test_init_weights_start_the_run_and_a_mismatch_is_named(tiny_root, tmp_path):
    weights = tmp_path / 'start.safetensors'
    _, config, start = _start_weights(weights, 5)
    common = ('--override', f'data.root={tiny_root}', '--override', 'optim.epochs=1',
              '--override', 'optim.lr=0.000000001')
    _run_train('--out', str(tmp_path / 'tuned'), '--override', f'init_weights={weights}',
               *common)
    tuned = _state(tmp_path / 'tuned' / 'checkpoints' / 'last.pt')['model']
    _run_train('--out', str(tmp_path / 'fresh'), *common)
    fresh = _state(tmp_path / 'fresh' / 'checkpoints' / 'last.pt')['model']
    parameters = [name for name, _ in BEVFusionNet(config).named_parameters()]  # no BN stats
    for name in parameters:  # lr 1e-9: the run ends where it started
        torch.testing.assert_close(tuned[name], start[name], atol=1e-6, rtol=0.0, msg=name)
    assert any(not torch.allclose(fresh[name], start[name]) for name in parameters)

    other = tmp_path / 'other.safetensors'
    save_weights(other, BEVFusionNet(ModelConfig.lite()).eval(), ModelConfig.lite(), {})
    completed = subprocess.run(
        [sys.executable, '-m', 'training.train', '--config', TINY_CONFIG, '--no-progress',
         '--out', str(tmp_path / 'bad'), '--override', f'init_weights={other}', *common],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    assert str(other) in completed.stderr and 'another model config' in completed.stderr
    assert 'Traceback' not in completed.stderr


@pytest.mark.parametrize('averaged', [False, True], ids=['last-step', 'weight-average'])
def test_frozen_modules_keep_their_weights_statistics_and_lidar_only_outputs(tiny_root,
                                                                             tmp_path, averaged):
    weights = tmp_path / 'start.safetensors'
    start_model, config, start = _start_weights(weights, 6)
    frozen = ('pillar_net', 'backbone', 'detection_head')
    _run_train('--out', str(tmp_path / 'tuned'), '--override', f'data.root={tiny_root}',
               '--override', 'optim.epochs=1', '--override', f'init_weights={weights}',
               '--override', f'freeze=[{",".join(frozen)}]',
               '--override', f'optim.ema_decay={0.9 if averaged else 0}')
    tuned = _state(tmp_path / 'tuned' / 'checkpoints' / 'last.pt')['model']
    for name, value in tuned.items():  # parameters and BatchNorm statistics alike
        if name.split('.')[0] in frozen:
            assert torch.equal(value, start[name]), name
    moved = [name for name in tuned if name.startswith(('camera_encoder.', 'semantic_head.'))
             and tuned[name].is_floating_point() and not torch.equal(tuned[name], start[name])]
    assert moved  # the rest trained
    model = BEVFusionNet(config).eval()
    model.load_state_dict(tuned)
    points = [torch.rand(500, 4) * torch.tensor([40.0, 20.0, 2.0, 1.0])]
    with torch.no_grad():
        before, after = start_model(points), model(points)
    assert torch.equal(before.heatmap, after.heatmap)  # LiDAR-only: bit-identical

    with pytest.raises(ValueError, match='needs init_weights'):
        TrainConfig.from_dict({'freeze': ['backbone']})
    with pytest.raises(ValueError, match="'voxelizer' is not a module with parameters"):
        frozen_modules(start_model, ['voxelizer'])


def test_init_fresh_starts_a_new_semantic_head_on_loaded_weights(tiny_root, tmp_path):
    weights = tmp_path / 'start.safetensors'
    _, _, start = _start_weights(weights, 7)
    finer = ('--override', 'model.overrides.head.semantic_levels=[c2, c3, c4, c5]',
             '--override', 'model.overrides.head.semantic_stem_detail=true')
    _run_train('--out', str(tmp_path / 'tuned'), '--override', f'data.root={tiny_root}',
               '--override', 'optim.epochs=1', '--override', 'optim.lr=0.000000001',
               '--override', f'init_weights={weights}', '--override',
               'init_fresh=[semantic_head]', *finer)
    tuned = _state(tmp_path / 'tuned' / 'checkpoints' / 'last.pt')['model']
    assert any(name.startswith('semantic_head.detail.') for name in tuned)
    assert any(name.startswith('semantic_head.') and name not in start for name in tuned)
    finer_config = load_config(TINY_CONFIG, finer[1::2]).model.build()
    for name, _ in BEVFusionNet(finer_config).named_parameters():  # lr 1e-9; no BN stats
        if not name.startswith('semantic_head.'):
            torch.testing.assert_close(tuned[name], start[name], atol=1e-6, rtol=0.0, msg=name)

    completed = subprocess.run(
        [sys.executable, '-m', 'training.train', '--config', TINY_CONFIG, '--no-progress',
         '--out', str(tmp_path / 'bad'), '--override', f'data.root={tiny_root}',
         '--override', f'init_weights={weights}', '--override', 'init_fresh=[semantic_head]',
         '--override', 'model.overrides.head.shared_channels=12', *finer],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    assert 'differs in head.shared_channels' in completed.stderr
    assert 'Traceback' not in completed.stderr
    with pytest.raises(ValueError, match='both frozen and started fresh'):
        TrainConfig.from_dict({'init_weights': str(weights), 'freeze': ['semantic_head'],
                               'init_fresh': ['semantic_head']})


def test_a_trained_camera_encoder_may_switch_instance_norm_on(tmp_path):
    weights = tmp_path / 'start.safetensors'
    _, config, start = _start_weights(weights, 9)
    encoder = dataclasses.replace(config.camera_encoder, instance_norm_levels=('stem', 'c2'))
    styled = dataclasses.replace(config, camera_encoder=encoder)
    state = _initial_state(styled, str(weights), frozen=('pillar_net', 'backbone'))
    assert state.keys() == start.keys()  # no tensors of its own: the file loads as it is
    BEVFusionNet(styled).load_state_dict(state)
    with pytest.raises(InitWeightsError, match='differs in camera_encoder.instance_norm_levels'):
        _initial_state(styled, str(weights), frozen=('camera_encoder',))


def test_a_semantic_encoder_starts_as_a_copy_of_the_camera_encoder(tmp_path):
    weights = tmp_path / 'start.safetensors'
    _, config, start = _start_weights(weights, 10)
    head = dataclasses.replace(config.head, semantic_encoder=True)
    own = dataclasses.replace(config, head=head)
    state = _initial_state(own, str(weights), frozen=('camera_encoder', 'fusion'))
    copied = [name for name in state if name.startswith('semantic_encoder.')]
    assert copied and len(copied) == sum(name.startswith('camera_encoder.') for name in start)
    for name in copied:
        assert torch.equal(state[name], start['camera_encoder' + name[len('semantic_encoder'):]])
    BEVFusionNet(own).load_state_dict(state)  # strict: nothing missing, nothing left over

    with_encoder = tmp_path / 'with_encoder.safetensors'
    save_weights(with_encoder, BEVFusionNet(own).eval(), own, {})
    with pytest.raises(InitWeightsError, match='differs in head.semantic_encoder'):
        _initial_state(config, str(with_encoder))  # a run does not drop the file's encoder


def test_a_deeper_semantic_encoder_grows_from_the_camera_encoder(tmp_path):
    weights = tmp_path / 'start.safetensors'
    start_model, config, _ = _start_weights(weights, 11)
    blocks = (1, 2, 1, 2)
    deep = dataclasses.replace(config, head=dataclasses.replace(
        config.head, semantic_encoder=True, semantic_encoder_blocks=blocks))
    frozen = DETECTION_MODULES
    state = _initial_state(deep, str(weights), frozen=frozen)
    assert not any('extra_blocks' in name for name in state)  # the file has none
    model = BEVFusionNet(deep).eval()
    model.load_state_dict(_grown(model, state))  # strict: the extra blocks are the model's own
    images = torch.rand(1, 3, *deep.camera.input_hw)
    with torch.no_grad():  # identities at the start: the logits of the seed's features
        seeded = start_model.semantic_head(start_model.camera_encoder(images), None)
        torch.testing.assert_close(model.semantic_head(model.semantic_encoder(images), None),
                                   seeded, atol=0.0, rtol=0.0)
    assert _grown(start_model, dict(start_model.state_dict())).keys() == \
        start_model.state_dict().keys()  # nothing seeded: nothing added

    with_encoder = tmp_path / 'with_encoder.safetensors'
    shallow = dataclasses.replace(
        config, head=dataclasses.replace(config.head, semantic_encoder=True))
    save_weights(with_encoder, BEVFusionNet(shallow).eval(), shallow, {})
    with pytest.raises(InitWeightsError, match='differs in head.semantic_encoder_blocks'):
        _initial_state(deep, str(with_encoder), frozen=frozen)  # grows only from a seed


def test_a_camera_stage_grows_and_trains_a_semantic_encoder_alone(tiny_root, tmp_path):
    weights = tmp_path / 'start.safetensors'
    _, _, start = _start_weights(weights, 13)
    completed = _run_train(
        '--out', str(tmp_path / 'stage'), '--override', f'data.root={tiny_root}',
        '--override', 'optim.epochs=1', '--override', f'init_weights={weights}',
        '--override', f'freeze=[{", ".join(DETECTION_MODULES)}]',
        '--override', 'model.overrides.head={semantic_encoder: true, '
                      'semantic_encoder_blocks: [1, 1, 2, 2]}')
    assert 'training the semantics alone' in completed.stderr + completed.stdout
    state = _state(tmp_path / 'stage' / 'checkpoints' / 'last.pt')
    assert state['history'][0]['heatmap'] == 0 and state['history'][0]['semantic'] > 0
    for name, value in start.items():  # the detection's tensors are the file's
        if name.split('.')[0] in DETECTION_MODULES:
            assert torch.equal(state['model'][name], value), name
    grown = [name for name in state['model'] if name.startswith('semantic_encoder.extra_')]
    assert grown and any(not torch.equal(state['model'][name], start['camera_encoder' + name[
        len('semantic_encoder'):]]) for name in state['model']
        if name.startswith('semantic_encoder.stages.') and name.endswith('.weight'))


def test_a_run_of_the_semantics_alone_steps_as_the_whole_forward(tiny_root, tmp_path):
    config = load_config(TINY_CONFIG, (f'data.root={tiny_root}', 'augment.camera_dropout_prob=0'))
    model_config = config.model.build()
    frames = FrameCache.build(A2D2Dataset(tiny_root), model_config, str(tmp_path / 'cache'),
                              show_progress=False)
    batch = collate_examples([TrainingDataset(frames, model_config, config.augment, 0)[i]
                              for i in range(2)])
    batch.camera_valid[1] = False  # a sample without its image trains nothing
    torch.manual_seed(12)
    start = BEVFusionNet(model_config).state_dict()
    updated, results = [], []
    for semantic_only in (False, True):
        model = BEVFusionNet(model_config)
        model.load_state_dict(start)
        model.train()
        for module in frozen_modules(model, DETECTION_MODULES):
            module.eval()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        scaler = torch.amp.GradScaler('cuda', enabled=False)
        results.append(_train_step(model, optimizer, scaler, batch, config, False,
                                   semantic_only))
        updated.append(model.state_dict())
    (full, full_norm), (alone, alone_norm) = results
    bare = collate_examples([TrainingDataset(frames, model_config, config.augment, 0,
                                             with_targets=False)[i] for i in range(2)])
    assert bare.targets is None and torch.equal(bare.images, batch.images)  # the same draws
    with pytest.raises(ValueError, match='1 of 2 have them'):
        collate_examples([TrainingDataset(frames, model_config, config.augment, 0)[0],
                          TrainingDataset(frames, model_config, config.augment, 0,
                                          with_targets=False)[1]])
    assert torch.equal(bare.semantic, batch.semantic) and bare.to('cpu').targets is None
    model = BEVFusionNet(model_config)
    model.load_state_dict(start)
    model.train()
    for module in frozen_modules(model, DETECTION_MODULES):
        module.eval()
    bare.camera_valid[1] = False
    torch.testing.assert_close(_semantic_losses(model, bare, config.loss).semantic,
                               alone.semantic)
    torch.testing.assert_close(alone.semantic, full.semantic)
    assert full.heatmap > 0 and alone.heatmap == 0  # not computed when nothing reads it
    assert alone_norm == pytest.approx(full_norm, rel=1e-4) and alone_norm > 0
    moved = 0
    for name, value in updated[0].items():
        torch.testing.assert_close(updated[1][name], value, atol=1e-6, rtol=1e-5, msg=name)
        moved += not torch.equal(value, start[name])
    assert moved  # the semantic head trained, the same way in both


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def test_torchrun_two_processes_keep_ranks_identical(tiny_root, tmp_path):
    env = dict(os.environ, GLOO_SOCKET_IFNAME='lo')
    out = tmp_path / 'ddp'
    completed = _run_train(
        '--out', str(out), '--save-rank-states', '--override', f'data.root={tiny_root}',
        '--override', 'deterministic=false', '--override', 'optim.epochs=2',
        '--override', 'augment.camera_dropout_prob=0.5', env=env,
        module=('-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr',
                '127.0.0.1', '--master_port', str(_free_port()), '-m', 'training.train'))
    rank0 = torch.load(out / 'rank0_final.pt', weights_only=True)
    rank1 = torch.load(out / 'rank1_final.pt', weights_only=True)
    assert rank0.keys() == rank1.keys()
    for name, value in rank0.items():  # parameters and BatchNorm buffers
        assert torch.equal(value, rank1[name]), name
    initial = load_checkpoint(out / 'checkpoints' / 'epoch_001.pt')['model']
    assert any(not torch.equal(value, initial[name]) for name, value in rank0.items())
    state = _state(out / 'checkpoints' / 'last.pt')
    assert state['world_size'] == 2
    assert state['step'] == 2  # 4 frames / (2 ranks x batch 2) = 1 step per epoch
    assert completed.stdout.count('"checkpoint"') == 1  # only rank 0 reports


@pytest.mark.parametrize('name', ['synthetic.yaml', 'a2d2.yaml', 'tiny_test.yaml'])
def test_shipped_configs_load_and_build_their_model(name):
    config = load_config(os.path.join(REPO, 'training', 'configs', name))
    model_config = config.model.build()
    assert set(config.data.resolved_class_map().values()) - {None} <= set(
        model_config.detection_classes)
    if name == 'a2d2.yaml':
        assert config.data.val_scenes == ('20180807_145028',)
        assert config.data.split == 'train'
