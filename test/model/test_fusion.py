"""FuTr fusion: positional encodings, LiDAR-only pass-through, batch independence, gradients."""

import math

from bev_perception.model.camera_geometry import camera_geometry, MODEL_TO_OPTICAL
from bev_perception.model.config import FusionConfig
from bev_perception.model.fusion import bev_cell_centres, FuTrFusion, sinusoidal_encoding_2d
import numpy as np
import pytest
import torch

HEAD_HW = (5, 7)
CAMERA_CHANNELS = {'c3': 4, 'c4': 6, 'c5': 8}


def _fusion(levels=('c4', 'c5'), heights=()):
    torch.manual_seed(0)
    return FuTrFusion(bev_channels=16, camera_channels=CAMERA_CHANNELS,
                      config=FusionConfig(camera_levels=levels, num_heads=2, gate_init=0.5,
                                          geometry_heights_m=heights),
                      head_hw=HEAD_HW, origin_m=(0.0, -2.24), cell_size_m=0.64).eval()


def _geometry(focal_over_width=0.5, yaw=0.0, height_m=0.0):
    """Return (1, SIZE) geometry of a forward camera at the model origin, turned by ``yaw``."""
    c, s = math.cos(yaw), math.sin(yaw)
    turn = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # model -> camera body
    k = np.array([[focal_over_width * 640, 0.0, 320.0], [0.0, focal_over_width * 640, 240.0],
                  [0.0, 0.0, 1.0]])
    return torch.from_numpy(camera_geometry(MODEL_TO_OPTICAL @ turn, (0.0, -height_m, 0.0), k, (),
                                            (640, 480)))[None]


def _camera(batch, seed):
    generator = torch.Generator().manual_seed(seed)
    sizes = {'c3': (8, 12), 'c4': (4, 6), 'c5': (2, 3)}
    return {level: torch.randn(batch, CAMERA_CHANNELS[level], *sizes[level], generator=generator)
            for level in sizes}


def test_sinusoidal_encoding_shape_range_and_distinctness():
    coords = torch.tensor([[0.0, 0.0], [0.64, 0.0], [0.0, 0.64], [60.0, -30.0]])
    encoding = sinusoidal_encoding_2d(coords, 16, (1.0, 200.0))
    assert encoding.shape == (4, 16)
    assert encoding.abs().max() <= 1.0
    assert torch.cdist(encoding, encoding)[~torch.eye(4, dtype=torch.bool)].min() > 0.1
    # First frequency of x: sin(2 pi x / 1 m) at x = 0.25 m is 1.
    assert sinusoidal_encoding_2d(torch.tensor([[0.25, 0.0]]), 16, (1.0, 200.0))[0, 0] == (
        pytest.approx(1.0))
    assert sinusoidal_encoding_2d(coords, 10, (1.0, 200.0)).shape == (4, 10)


def test_bev_cell_centres_are_metric_cell_centres():
    centres = bev_cell_centres(HEAD_HW, (0.0, -2.24), 0.64)
    assert centres.shape == (35, 2)
    torch.testing.assert_close(centres[0], torch.tensor([0.32, -1.92], dtype=torch.float64))
    # Row-major: index 8 is row 1, col 1.
    torch.testing.assert_close(centres[8], torch.tensor([0.96, -1.28], dtype=torch.float64))


def test_lidar_only_samples_pass_through_exactly():
    fusion = _fusion()
    bev = torch.randn(3, 16, *HEAD_HW)
    valid = torch.tensor([False, True, False])
    fused = fusion(bev, _camera(1, 0), valid)
    assert fused.shape == bev.shape
    assert torch.equal(fused[0], bev[0]) and torch.equal(fused[2], bev[2])
    assert not torch.allclose(fused[1], bev[1])
    assert torch.isfinite(fused).all()
    none_valid = fusion(bev, {}, torch.zeros(3, dtype=torch.bool))
    assert torch.equal(none_valid, bev)


def test_mixed_batch_equals_per_sample_runs():
    fusion = _fusion()
    bev = torch.randn(3, 16, *HEAD_HW)
    camera = _camera(2, 1)
    valid = torch.tensor([True, False, True])
    fused = fusion(bev, camera, valid)
    first = fusion(bev[:1], {k: v[:1] for k, v in camera.items()}, torch.tensor([True]))
    third = fusion(bev[2:], {k: v[1:] for k, v in camera.items()}, torch.tensor([True]))
    torch.testing.assert_close(fused[0], first[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused[2], third[0], atol=1e-5, rtol=1e-5)


def test_camera_changes_only_move_their_own_sample():
    fusion = _fusion(levels=('c3', 'c4', 'c5'))
    bev = torch.randn(2, 16, *HEAD_HW)
    camera = _camera(2, 2)
    valid = torch.ones(2, dtype=torch.bool)
    reference = fusion(bev, camera, valid)
    changed = {k: v.clone() for k, v in camera.items()}
    changed['c5'][1] += 3.0
    moved = fusion(bev, changed, valid)
    torch.testing.assert_close(moved[0], reference[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(moved[1], reference[1])


def test_checks_shapes():
    fusion = _fusion()
    with pytest.raises(ValueError, match='samples'):
        fusion(torch.randn(2, 16, *HEAD_HW), _camera(1, 3), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match='expects'):
        fusion(torch.randn(1, 16, 4, 4), _camera(1, 3), torch.ones(1, dtype=torch.bool))


def test_every_parameter_gets_a_gradient():
    fusion = _fusion().train()
    bev = torch.randn(2, 16, *HEAD_HW)
    fused = fusion(bev, _camera(1, 4), torch.tensor([True, False]))
    (fused * torch.randn_like(fused)).sum().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        assert torch.isfinite(parameter.grad).all(), name
    assert math.isclose(float(fusion.gate_attention.detach()[0]), 0.5)


def test_calibration_blind_block_has_no_geometry_parameters():
    names = {name for name, _ in _fusion().named_parameters()}
    assert not any(name.startswith('geometry') for name in names)
    aware = {name for name, _ in _fusion(heights=(-1.0, 0.0)).named_parameters()}
    assert aware - names == {'geometry_uv.weight', 'geometry_uv.bias',
                             'geometry_scalars.weight', 'geometry_scalars.bias'}


def test_cells_outside_the_camera_view_get_no_image_features():
    fusion = _fusion(heights=(-1.0, 0.0, 1.0))
    bev = torch.randn(1, 16, *HEAD_HW)
    geometry = _geometry(focal_over_width=1.5)  # narrow: about +-18 degrees
    fused = fusion(bev, _camera(1, 5), torch.ones(1, dtype=torch.bool), geometry)
    centres = bev_cell_centres(HEAD_HW, (0.0, -2.24), 0.64)  # (N, 2) x, y
    bearing = torch.atan2(centres[:, 1], centres[:, 0]).abs().reshape(HEAD_HW)
    changed = (fused[0] != bev[0]).any(0)  # (h, w)
    outside = bearing > math.radians(25.0)
    inside = bearing < math.radians(12.0)
    assert outside.any() and inside.any()
    assert not changed[outside].any(), 'a cell out of view received image features'
    assert changed[inside].all()


def test_calibration_decides_which_cells_fuse():
    fusion = _fusion(heights=(-1.0, 0.0, 1.0))
    bev = torch.randn(1, 16, *HEAD_HW)
    camera = _camera(1, 6)
    valid = torch.ones(1, dtype=torch.bool)
    ahead = (fusion(bev, camera, valid, _geometry(1.5)) != bev).any(1)[0]
    left = (fusion(bev, camera, valid, _geometry(1.5, yaw=math.radians(30.0))) != bev).any(1)[0]
    # Turning the camera left moves the fused cells to the left (+y, higher rows).
    rows = torch.arange(HEAD_HW[0], dtype=torch.float32)[:, None].expand(HEAD_HW)
    assert rows[left].mean() > rows[ahead].mean()
    wide = (fusion(bev, camera, valid, _geometry(0.3)) != bev).any(1)[0]
    assert wide.sum() > ahead.sum()


def test_calibration_aware_block_needs_the_geometry_and_keeps_lidar_only_exact():
    fusion = _fusion(heights=(0.0,))
    bev = torch.randn(2, 16, *HEAD_HW)
    with pytest.raises(ValueError, match='camera geometry'):
        fusion(bev, _camera(1, 7), torch.tensor([True, False]))
    fused = fusion(bev, _camera(1, 7), torch.tensor([True, False]), _geometry())
    assert torch.equal(fused[1], bev[1])
    assert not torch.equal(fused[0], bev[0])


def test_geometry_layers_get_gradients():
    fusion = _fusion(heights=(-1.0, 0.5)).train()
    bev = torch.randn(1, 16, *HEAD_HW)
    fused = fusion(bev, _camera(1, 8), torch.ones(1, dtype=torch.bool), _geometry(0.5))
    (fused * torch.randn_like(fused)).sum().backward()
    for name in ('geometry_uv.weight', 'geometry_scalars.weight'):
        grad = dict(fusion.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0 and torch.isfinite(grad).all(), name
