"""ModelConfig: derived grid sizes, validation and exact JSON round trip."""

import dataclasses
import json

from bev_perception.a2d2_classes import SEMANTIC_CATEGORIES, SEMANTIC_PALETTE
from bev_perception.model.config import (
    CameraConfig, FusionConfig, GridConfig, HeadConfig, ModelConfig, NMSConfig, PointConfig)
import numpy as np
import pytest


def test_default_grid_matches_the_design():
    config = ModelConfig()
    assert config.grid.canvas_hw == (248, 216)
    assert config.head_hw == (124, 108)
    assert config.head_cell_size_m == pytest.approx(0.64)
    assert config.detection_classes == ('car', 'truck', 'pedestrian', 'cyclist')
    assert config.semantic_classes == SEMANTIC_CATEGORIES
    assert config.semantic_palette == SEMANTIC_PALETTE
    assert config.point.intensity_scale == pytest.approx(1 / 255)
    assert config.lidar_encoder.pfn_channels == 64
    assert config.lidar_encoder.backbone_out_channels == 128


def test_odd_grid_rounds_up_on_the_head():
    config = ModelConfig.tiny()
    assert config.grid.canvas_hw == (27, 31)
    assert config.head_hw == (14, 16)


@pytest.mark.parametrize('config', [ModelConfig(), ModelConfig.lite(), ModelConfig.tiny()])
def test_json_round_trip_is_exact_and_keeps_tuples(config):
    text = json.dumps(config.to_dict())
    restored = ModelConfig.from_dict(json.loads(text))
    assert restored == config
    assert isinstance(restored.grid.x_range_m, tuple)
    assert isinstance(restored.semantic_palette[0], tuple)
    assert isinstance(restored.head.nms.radius_m, tuple)


def test_from_dict_rejects_unknown_keys_and_wrong_types():
    data = ModelConfig().to_dict()
    data['grid']['voxel_size'] = 0.2
    with pytest.raises(ValueError, match='unknown keys'):
        ModelConfig.from_dict(data)
    data = ModelConfig().to_dict()
    data['grid']['max_pillars'] = 'many'
    with pytest.raises(ValueError, match='max_pillars'):
        ModelConfig.from_dict(data)
    data = ModelConfig().to_dict()
    data['camera']['input_hw'] = [256]
    with pytest.raises(ValueError, match='input_hw'):
        ModelConfig.from_dict(data)
    data = ModelConfig().to_dict()
    data['head']['semantic_encoder'] = 'yes'
    with pytest.raises(ValueError, match='semantic_encoder: expected true or false'):
        ModelConfig.from_dict(data)
    data['head']['semantic_encoder'] = True
    assert ModelConfig.from_dict(data).head.semantic_encoder is True


def test_missing_keys_take_defaults():
    data = ModelConfig().to_dict()
    del data['head']
    assert ModelConfig.from_dict(data).head == HeadConfig()


def test_validation_messages():
    with pytest.raises(ValueError, match='whole number'):
        GridConfig(x_range_m=(0.0, 10.0), pillar_size_m=0.3)
    with pytest.raises(ValueError, match='multiples of 32'):
        CameraConfig(input_hw=(250, 416))
    with pytest.raises(ValueError, match='radius_m'):
        ModelConfig(detection_classes=('car',))
    with pytest.raises(ValueError, match='kind'):
        NMSConfig(kind='soft')
    with pytest.raises(ValueError, match='camera_levels'):
        FusionConfig(camera_levels=('c2',))
    for levels in ((), ('c3', 'c5'), ('c4', 'c3'), ('c1', 'c2')):
        with pytest.raises(ValueError, match='semantic_levels'):
            HeadConfig(semantic_levels=levels)
    assert HeadConfig(semantic_levels=('c2', 'c3', 'c4', 'c5')).semantic_levels[0] == 'c2'
    for blocks in ((1, 1, 1), (1, 0, 1, 1)):
        with pytest.raises(ValueError, match='semantic_encoder_blocks must be 4 counts'):
            HeadConfig(semantic_encoder=True, semantic_encoder_blocks=blocks)
    with pytest.raises(ValueError, match='needs semantic_encoder: true'):
        HeadConfig(semantic_encoder_blocks=(1, 2, 2, 2))
    assert HeadConfig(semantic_encoder=True, semantic_encoder_blocks=(1, 2, 2, 2))
    with pytest.raises(ValueError, match='semantic_stem_detail needs semantic_levels to start'):
        HeadConfig(semantic_stem_detail=True)  # the default levels start at C3
    assert HeadConfig(semantic_levels=('c2', 'c3'), semantic_stem_detail=True)
    with pytest.raises(ValueError, match='features'):
        PointConfig(features=('y', 'x', 'z', 'intensity'))


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().grid.pillar_size_m = 0.2


def test_grid_contains_xy_is_half_open():
    grid = ModelConfig().grid
    (x_min, x_max), (y_min, y_max) = grid.x_range_m, grid.y_range_m
    xyz = np.array([[x_min, y_min, 0.0], [x_max, 0.0, 0.0], [1.0, y_max, 9.0],
                    [x_max - 1e-3, y_max - 1e-3, -9.0], [x_min - 1e-3, 0.0, 0.0]])
    assert grid.contains_xy(xyz).tolist() == [True, False, False, True, False]
