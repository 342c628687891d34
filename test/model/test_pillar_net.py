"""Pillar feature net: decorations, canvas layout, order invariance and degenerate inputs."""

from bev_perception.model.config import GridConfig, PointConfig
from bev_perception.model.pillar_net import PillarFeatureNet
from bev_perception.model.voxelizer import Voxelizer
import pytest
import torch

GRID = GridConfig(x_range_m=(0.0, 9.92), y_range_m=(-4.16, 4.48), max_points_per_pillar=8,
                  max_pillars=400)  # 27 x 31
POINT = PointConfig()


def _net(channels=6):
    torch.manual_seed(0)
    return PillarFeatureNet(grid=GRID, point=POINT, out_channels=channels)


def _cloud(count, seed):
    generator = torch.Generator().manual_seed(seed)
    low = torch.tensor([0.0, -4.0, -2.5, 0.0])
    high = torch.tensor([9.9, 4.4, 1.5, 255.0])
    return low + (high - low) * torch.rand(count, 4, generator=generator)


def test_decorations_are_mean_and_centre_offsets():
    points = torch.tensor([[1.0, 0.0, -1.0, 255.0], [1.2, 0.1, -0.5, 0.0]])  # one pillar
    pillars, _ = Voxelizer(grid=GRID)([points])
    features = _net().point_features(pillars)
    assert features.shape == (2, 9)
    ordered = pillars.points
    mean = ordered[:, :3].mean(0)
    centre_x = 0.0 + (3 + 0.5) * 0.32  # col 3
    centre_y = -4.16 + (13 + 0.5) * 0.32  # row 13
    torch.testing.assert_close(features[:, :3], ordered[:, :3])
    torch.testing.assert_close(features[:, 3], ordered[:, 3] / 255.0)
    torch.testing.assert_close(features[:, 4:7], ordered[:, :3] - mean)
    torch.testing.assert_close(features[:, 7], ordered[:, 0] - centre_x)
    torch.testing.assert_close(features[:, 8], ordered[:, 1] - centre_y)


def test_canvas_shape_and_empty_cells_are_zero():
    net = _net().eval()
    pillars, _ = Voxelizer(grid=GRID)([_cloud(300, 1), torch.zeros(0, 4)])
    canvas = net(pillars)
    assert canvas.shape == (2, 6, 27, 31)
    occupied = torch.zeros(2, 27, 31, dtype=torch.bool)
    occupied[pillars.coords[:, 0], pillars.coords[:, 1], pillars.coords[:, 2]] = True
    assert torch.all(canvas.permute(0, 2, 3, 1)[~occupied] == 0)
    assert torch.count_nonzero(canvas[0].abs().sum(0)) > 0
    assert torch.all(canvas[1] == 0)


def test_canvas_does_not_depend_on_point_order():
    net = _net().eval()
    cloud = _cloud(500, 2)
    voxelizer = Voxelizer(grid=GRID)
    reference = net(voxelizer([cloud])[0])
    shuffled = net(voxelizer([cloud[torch.randperm(500)]])[0])
    assert torch.equal(reference, shuffled)


@pytest.mark.parametrize('count', [0, 1, 5])
def test_training_mode_handles_tiny_clouds(count):
    net = _net().train()
    pillars, _ = Voxelizer(grid=GRID)([_cloud(count, 3)])
    canvas = net(pillars)
    assert canvas.shape == (1, 6, 27, 31)
    assert torch.isfinite(canvas).all()
    canvas.sum().backward()


def test_eval_pooling_before_normalisation_is_bit_identical():
    # Eval mode pools the linear outputs and normalises per pillar; BN weights of both signs
    # (and a zero) must give exactly the per-point path's features.
    net = _net(channels=8).eval()
    with torch.no_grad():
        net.norm.weight.copy_(torch.tensor([1.5, -0.7, 0.0, 2.0, -3.0, 0.2, -0.01, 1.0]))
        net.norm.bias.copy_(torch.linspace(-0.5, 0.5, 8))
        net.norm.running_mean.copy_(torch.linspace(-1.0, 1.0, 8))
        net.norm.running_var.copy_(torch.linspace(0.5, 2.0, 8))
    for seed in range(5):
        pillars, _ = Voxelizer(grid=GRID)([_cloud(600, seed), _cloud(50, seed + 10)])
        with torch.no_grad():
            fast = net._pool_linear_outputs(pillars)
            reference = net._pool_points(pillars)
            canvas = net(pillars)
        assert torch.equal(fast, reference)
        assert (reference > 0).any() and (reference == 0).any()
        assert canvas.shape == (2, 8) + GRID.canvas_hw
