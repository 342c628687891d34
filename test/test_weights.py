"""Deployable weights: exact round trip, metadata, and clear errors for bad files."""

import json
import os
import pickle
import struct

from bev_perception.model.config import HeadConfig, ModelConfig
from bev_perception.model.network import BEVFusionNet
from bev_perception.weights import (
    build_metadata, FORMAT_VERSION, load_weights, METADATA_KEY, read_metadata, save_weights,
    WeightsError)
import pytest
from safetensors.torch import save_file
import torch

CONFIG = ModelConfig.tiny()
PROVENANCE = {'command': 'pytest', 'seed': 0, 'git_rev': 'abc123', 'dataset': 'synthetic'}


def _trained_like_model(config=CONFIG):
    torch.manual_seed(1)
    model = BEVFusionNet(config)
    with torch.no_grad():  # non-default BN statistics, so buffers must round-trip too
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs():
    generator = torch.Generator().manual_seed(2)
    points = torch.rand(500, 4, generator=generator) * torch.tensor([9.9, 8.0, 4.0, 255.0])
    points[:, 1] -= 4.0
    points[:, 2] -= 3.0
    return [points], torch.randn(1, 3, *CONFIG.camera.input_hw, generator=generator)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / 'model.safetensors'
    model = _trained_like_model()
    save_weights(path, model, CONFIG, PROVENANCE, {'map': 0.5})
    return path, model


def test_round_trip_gives_identical_outputs(saved):
    path, model = saved
    loaded, config, metadata = load_weights(path)
    assert config == CONFIG and not loaded.training
    points, images = _inputs()
    with torch.no_grad():
        expected = model(points, images)
        actual = loaded(points, images)
    for name in ('heatmap', 'offset', 'z', 'log_size', 'yaw', 'semantic'):
        assert torch.equal(getattr(expected, name), getattr(actual, name)), name


def test_metadata_describes_the_model(saved):
    path, _ = saved
    metadata = read_metadata(path)
    assert metadata['format_version'] == FORMAT_VERSION == 1
    assert ModelConfig.from_dict(metadata['config']) == CONFIG
    assert metadata['detection_classes'] == ['car', 'truck', 'pedestrian', 'cyclist']
    assert len(metadata['semantic_classes']) == 38 and len(metadata['semantic_palette']) == 38
    assert metadata['point_features'] == ['x', 'y', 'z', 'intensity']
    assert metadata['intensity_scale'] == pytest.approx(1 / 255)
    assert metadata['image_input_hw'] == [64, 96]
    assert metadata['image_mean'] == list(CONFIG.camera.mean)
    assert metadata['provenance'] == PROVENANCE and metadata['metrics'] == {'map': 0.5}


def test_save_refuses_a_mismatched_config(tmp_path):
    with pytest.raises(ValueError, match='differs'):
        save_weights(tmp_path / 'x.safetensors', _trained_like_model(), ModelConfig.lite(), {})


def _rewrite(path, tensors=None, metadata=None):
    """Write a safetensors file at ``path`` from the saved one with edits."""
    model = _trained_like_model()
    tensors = tensors if tensors is not None else {
        k: v.contiguous() for k, v in model.state_dict().items()}
    document = build_metadata(CONFIG, PROVENANCE) if metadata is None else metadata
    header = None if document == 'none' else {METADATA_KEY: json.dumps(document)}
    save_file(tensors, str(path), metadata=header)


def _state():
    return {k: v.contiguous() for k, v in _trained_like_model().state_dict().items()}


def _expect_error(path, match):
    with pytest.raises(WeightsError, match=match) as error:
        load_weights(path)
    assert os.fspath(path) in str(error.value)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / 'newer.safetensors'
    document = build_metadata(CONFIG, PROVENANCE)
    document['format_version'] = FORMAT_VERSION + 1
    _rewrite(path, metadata=document)
    _expect_error(path, 'format version 2 is newer')


def test_missing_unexpected_and_mismatched_tensors(tmp_path):
    state = _state()
    name = 'detection_head.towers.heatmap.1.weight'
    missing = dict(state)
    del missing[name]
    _rewrite(tmp_path / 'missing.safetensors', tensors=missing)
    _expect_error(tmp_path / 'missing.safetensors', f'missing tensor.*{name}')
    extra = dict(state, **{'extra.weight': torch.zeros(2)})
    _rewrite(tmp_path / 'extra.safetensors', tensors=extra)
    _expect_error(tmp_path / 'extra.safetensors', 'unexpected tensor.*extra.weight')
    # Weights of a model with other widths under this config: shape mismatch.
    other = ModelConfig(grid=CONFIG.grid, camera=CONFIG.camera,
                        lidar_encoder=CONFIG.lidar_encoder, camera_encoder=CONFIG.camera_encoder,
                        fusion=CONFIG.fusion, head=HeadConfig(
                            shared_channels=12, tower_channels=8, semantic_channels=8,
                            max_objects=20))
    other_state = {k: v.contiguous() for k, v in BEVFusionNet(other).state_dict().items()}
    _rewrite(tmp_path / 'shape.safetensors', tensors=other_state)
    _expect_error(tmp_path / 'shape.safetensors', 'shape mismatch for detection_head')


def test_missing_metadata_and_bad_config(tmp_path):
    _rewrite(tmp_path / 'bare.safetensors', metadata='none')
    _expect_error(tmp_path / 'bare.safetensors', 'missing metadata')
    document = build_metadata(CONFIG, PROVENANCE)
    document['config']['grid']['pillar_size_m'] = 0.3
    _rewrite(tmp_path / 'config.safetensors', metadata=document)
    _expect_error(tmp_path / 'config.safetensors', 'invalid model config')


def test_corrupt_truncated_and_foreign_files(tmp_path, saved):
    path, _ = saved
    data = path.read_bytes()
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(data[:len(data) // 2])
    _expect_error(truncated, 'truncated')
    tiny = tmp_path / 'tiny.safetensors'
    tiny.write_bytes(b'abc')
    _expect_error(tiny, 'not a safetensors file')
    text = tmp_path / 'text.safetensors'
    text.write_bytes(struct.pack('<Q', 10) + b'not json!!' + b'\0' * 10)
    _expect_error(text, 'not a safetensors file')
    garbage = tmp_path / 'garbage.safetensors'
    garbage.write_bytes(os.urandom(4096))
    _expect_error(garbage, 'safetensors')
    _expect_error(tmp_path / 'absent.safetensors', 'cannot read')


def test_pickles_are_never_unpickled(tmp_path):
    marker = tmp_path / 'unpickled'
    path = tmp_path / 'model.pt'

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), 'w'))

    path.write_bytes(pickle.dumps({'state': Trap()}))
    _expect_error(path, 'safetensors')
    torch.save(_trained_like_model().state_dict(), tmp_path / 'checkpoint.pt')
    _expect_error(tmp_path / 'checkpoint.pt', 'safetensors')
    assert not marker.exists()
