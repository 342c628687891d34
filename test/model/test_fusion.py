"""FuTr fusion: positional encodings, LiDAR-only pass-through, batch independence, gradients."""

import math

from bev_perception.model.config import FusionConfig
from bev_perception.model.fusion import bev_cell_centres, FuTrFusion, sinusoidal_encoding_2d
import pytest
import torch

HEAD_HW = (5, 7)
CAMERA_CHANNELS = {'c3': 4, 'c4': 6, 'c5': 8}


def _fusion(levels=('c4', 'c5')):
    torch.manual_seed(0)
    return FuTrFusion(bev_channels=16, camera_channels=CAMERA_CHANNELS,
                      config=FusionConfig(camera_levels=levels, num_heads=2, gate_init=0.5),
                      head_hw=HEAD_HW, origin_m=(0.0, -2.24), cell_size_m=0.64).eval()


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
