"""Deployable weights: exact round trip, metadata, and clear errors for bad files."""

import dataclasses
import json
import math
import os
import pickle
import re
import struct

from bev_perception.model.config import HeadConfig, ModelConfig
from bev_perception.model.network import BEVFusionNet
from bev_perception.weights import (
    build_metadata, describe_provenance, FORMAT_VERSION, load_weights, METADATA_KEY,
    read_metadata, resolve_weights_path, save_weights, SHIPPED_PROFILES, validate_metadata,
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


def _set(dotted, value):
    """Return an edit setting a dotted path (list indices as numbers) of the metadata."""
    def edit(document):
        keys = [int(key) if key.isdigit() else key for key in dotted.split('.')]
        target = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


#: name -> (edit of the metadata, text the error must contain after the file name)
BAD_METADATA = {
    'max_objects_0': (_set('config.head.max_objects', 0),
                      'metadata field config.head.max_objects is 0; it must be an integer in '
                      '[1, 10000]'),
    'max_objects_negative': (_set('config.head.max_objects', -1),
                             'config.head.max_objects is -1'),
    'max_objects_text': (_set('config.head.max_objects', '20'),
                         "config.head.max_objects is '20'; it must be an integer"),
    'intensity_scale_nan': (_set('config.point.intensity_scale', math.nan),
                            'config.point.intensity_scale is nan; it must be a finite number '
                            'in (0, 1e+06]'),
    'intensity_scale_zero': (_set('config.point.intensity_scale', 0.0),
                             'config.point.intensity_scale is 0.0'),
    'copied_intensity_scale_nan': (_set('intensity_scale', math.nan),
                                   'metadata field intensity_scale is nan; it must be equal to '
                                   'config.point.intensity_scale'),
    'palette_300': (_set('config.semantic_palette.3', [300, 0, 0]),
                    'config.semantic_palette[3] is [300, 0, 0]; it must be three integers in '
                    '[0, 255]'),
    'palette_negative': (_set('config.semantic_palette.0.2', -1),
                         'config.semantic_palette[0] is [255, 0, -1]'),
    'num_heads_0': (_set('config.fusion.num_heads', 0), 'config.fusion.num_heads is 0'),
    'stage_channels_0': (_set('config.camera_encoder.stage_channels.2', 0),
                         'config.camera_encoder.stage_channels[2] is 0'),
    'std_inf': (_set('config.camera.std.1', math.inf), 'config.camera.std[1] is inf'),
    'score_threshold_2': (_set('config.head.score_threshold', 2.0),
                          'config.head.score_threshold is 2.0'),
    'nms_radius_negative': (_set('config.head.nms.radius_m.0', -1.0),
                            'config.head.nms.radius_m[0] is -1.0'),
    'grid_too_fine': (_set('config.grid.pillar_size_m', 0.001),
                      'config.grid.pillar_size_m is 0.001; it must be large enough for at most '
                      '8192 cells'),
    'class_named_twice': (_set('config.detection_classes.1', 'CAR'),
                          "config.detection_classes[1] is 'CAR'; it must be unique"),
    'class_without_name': (_set('config.detection_classes.2', ' '),
                           "config.detection_classes[2] is ' '; it must be a non-empty string"),
    'copied_classes_differ': (_set('detection_classes', ['bus']),
                              "detection_classes is ['bus']; it must be equal to "
                              'config.detection_classes'),
    'copied_input_size_differs': (_set('image_input_hw', [64, 64]),
                                  'image_input_hw is [64, 64]'),
    'provenance_list': (_set('provenance', ['a']), "provenance is ['a']; it must be an object"),
    'config_list': (_set('config', []), 'config is []; it must be an object'),
    'format_version_0': (_set('format_version', 0), 'format_version is 0'),
}


@pytest.mark.parametrize('name', sorted(BAD_METADATA))
def test_invalid_metadata_is_refused_naming_the_file_and_field(tmp_path, name):
    edit, expected = BAD_METADATA[name]
    document = build_metadata(CONFIG, PROVENANCE)
    edit(document)
    path = tmp_path / f'{name}.safetensors'
    _rewrite(path, metadata=document)
    for reader in (load_weights, read_metadata):
        with pytest.raises(WeightsError, match=re.escape(f'{path}: ')) as error:
            reader(path)
        assert expected in str(error.value), str(error.value)
        assert '\n' not in str(error.value)


def test_valid_metadata_gives_its_config():
    assert validate_metadata(build_metadata(CONFIG, PROVENANCE)) == CONFIG
    lite = build_metadata(ModelConfig.lite(), {})
    del lite['intensity_scale'], lite['provenance']  # copies and provenance are optional
    assert validate_metadata(lite, 'lite.safetensors') == ModelConfig.lite()


def test_non_finite_tensors_and_directories_are_refused(tmp_path):
    state = _state()
    name = 'detection_head.towers.heatmap.1.weight'
    state[name] = state[name].clone()
    state[name].view(-1)[3] = float('nan')
    _rewrite(tmp_path / 'nan.safetensors', tensors=state)
    _expect_error(tmp_path / 'nan.safetensors', f'tensor {name} has 1 non-finite values')
    _expect_error(tmp_path, 'is a directory, not a weights file')


def test_weights_lookup_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match='does not exist'):
        resolve_weights_path(str(tmp_path / 'missing.safetensors'))
    present = tmp_path / 'w.safetensors'
    present.write_bytes(b'x')
    assert resolve_weights_path(str(present)) == str(present)
    assert resolve_weights_path(str(present), 'lite') == str(present)  # the file wins
    with pytest.raises(WeightsError, match="profile 'huge' is not one of default, lite"):
        resolve_weights_path('', 'huge')
    with pytest.raises(WeightsError, match=f"weights_path '{tmp_path}' is a directory"):
        resolve_weights_path(str(tmp_path))
    with pytest.raises(WeightsError, match='is not a regular file'):
        resolve_weights_path('/dev/null')


@pytest.mark.parametrize('profile', SHIPPED_PROFILES)
def test_empty_weights_path_picks_the_profiles_shipped_file(profile):
    path = resolve_weights_path('', profile)
    assert os.path.basename(path) == f'{profile}.safetensors'
    config = ModelConfig.from_dict(read_metadata(path)['config'])
    # The lite file is ModelConfig.lite() with the camera stage's semantic encoder and head.
    lite = ModelConfig.lite()
    head = dataclasses.replace(config.head, semantic_levels=lite.head.semantic_levels,
                               semantic_encoder=lite.head.semantic_encoder,
                               semantic_encoder_blocks=lite.head.semantic_encoder_blocks,
                               semantic_stem_detail=lite.head.semantic_stem_detail)
    assert (dataclasses.replace(config, head=head) == lite) == (profile == 'lite')


def test_provenance_is_one_readable_line():
    metadata = {'provenance': {'dataset': {'root': 'data/synthetic/train', 'split': None},
                               'date': '2026-12-03', 'git_revision': 'abc123'}}
    assert describe_provenance(metadata) == (
        'data data/synthetic/train, date 2026-12-03, git abc123')
    assert describe_provenance({}) == 'no provenance recorded'
