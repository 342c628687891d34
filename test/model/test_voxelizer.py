"""Voxelizer: cell assignment, drops, caps, counts, order invariance and batch independence."""

import math

from bev_perception.model.config import GridConfig
from bev_perception.model.voxelizer import mix32, Voxelizer
import pytest
import torch

GRID = GridConfig(x_range_m=(0.0, 9.92), y_range_m=(-4.16, 4.48), z_range_m=(-3.0, 2.0),
                  max_points_per_pillar=8, max_pillars=400)  # 27 rows x 31 cols


def _point(x, y, z=0.0, intensity=10.0):
    return [x, y, z, intensity]


def _random_cloud(count, seed):
    generator = torch.Generator().manual_seed(seed)
    low = torch.tensor([-1.0, -5.0, -3.5, 0.0])
    high = torch.tensor([11.0, 5.0, 2.5, 255.0])
    return low + (high - low) * torch.rand(count, 4, generator=generator)


def _sorted_rows(tensor):
    """Return the rows of a 2D tensor in lexicographic order (for set comparisons)."""
    rows = sorted(tensor.tolist())
    return torch.tensor(rows) if rows else tensor


def test_points_land_in_the_documented_cells():
    points = torch.tensor([
        _point(0.0, -4.16),  # first cell: row 0, col 0
        _point(0.31, -3.85),  # still row 0, col 0
        _point(9.91, 4.47),  # last cell: row 26, col 30
        _point(1.0, 0.0),  # col floor(1.0 / 0.32) = 3, row floor(4.16 / 0.32) = 13
    ])
    pillars, counts = Voxelizer(grid=GRID)([points])
    assert pillars.coords.tolist() == [[0, 0, 0], [0, 13, 3], [0, 26, 30]]
    assert pillars.num_points.tolist() == [2, 1, 1]
    assert pillars.point_pillar.tolist() == [0, 0, 1, 2]
    assert sum(int(c.sum()) for c in counts) == 0


def test_non_finite_and_out_of_range_points_are_dropped_and_counted():
    points = torch.tensor([
        _point(1.0, 0.0),
        _point(math.nan, 0.0),
        _point(1.0, 0.0, intensity=math.inf),
        _point(-0.01, 0.0),  # x below range
        _point(9.92, 0.0),  # x at the exclusive upper bound
        _point(1.0, 4.48),  # y at the upper bound
        _point(1.0, 0.0, z=2.0),  # z at the upper bound
        _point(1.0, 0.0, z=-3.01),
    ])
    pillars, counts = Voxelizer(grid=GRID)([points])
    assert pillars.points.shape == (1, 4)
    assert counts.non_finite_dropped.tolist() == [2]
    assert counts.out_of_range_dropped.tolist() == [5]
    assert counts.points_capped.tolist() == [0]


def test_range_bounds_are_exact_in_float32():
    def below(value):
        return float(torch.nextafter(torch.tensor(value), torch.tensor(-math.inf)))

    points = torch.tensor([
        _point(below(9.92), 0.0),  # the largest float32 below x_max: kept
        _point(1.0, -4.16),  # y exactly at y_min (as float32): kept
        _point(1.0, below(-4.16)),  # just below y_min
        _point(1.0, 0.0, z=below(2.0)),  # just below z_max: kept
        _point(-0.0, 0.0),  # -0 >= x_min = 0: kept
    ])
    pillars, counts = Voxelizer(grid=GRID)([points])
    assert pillars.points.shape == (4, 4)
    assert counts.out_of_range_dropped.tolist() == [1]
    assert counts.non_finite_dropped.tolist() == [0]


def test_infinite_z_range_keeps_every_finite_height():
    grid = GridConfig(x_range_m=GRID.x_range_m, y_range_m=GRID.y_range_m,
                      z_range_m=(-math.inf, math.inf))
    points = torch.tensor([_point(1.0, 0.0, z=z) for z in (-3.4e38, 3.4e38, math.inf, -math.inf)])
    pillars, counts = Voxelizer(grid=grid)([points])
    assert pillars.num_points.tolist() == [2]
    assert counts.non_finite_dropped.tolist() == [2]
    assert counts.out_of_range_dropped.tolist() == [0]
    with pytest.raises(ValueError, match='lies beyond'):
        Voxelizer(grid=GridConfig(x_range_m=GRID.x_range_m, y_range_m=GRID.y_range_m,
                                  z_range_m=(1e30, 2e30)))


def test_points_per_pillar_are_capped():
    points = torch.tensor([_point(1.0 + 0.001 * i, 0.0, z=-1.0 + 0.01 * i) for i in range(20)])
    pillars, counts = Voxelizer(grid=GRID)([points])
    assert pillars.num_points.tolist() == [8]
    assert pillars.points.shape == (8, 4)
    assert counts.points_capped.tolist() == [12]


def test_pillars_per_sample_are_capped():
    grid = GridConfig(x_range_m=GRID.x_range_m, y_range_m=GRID.y_range_m, max_pillars=5)
    points = torch.tensor([_point(0.1 + 0.32 * i, 0.0) for i in range(12)])
    pillars, counts = Voxelizer(grid=grid)([points, points[:3]])
    per_sample = torch.bincount(pillars.coords[:, 0], minlength=2).tolist()
    assert per_sample == [5, 3]
    assert counts.pillars_capped.tolist() == [7, 0]
    assert pillars.points.shape[0] == 8
    assert int(pillars.point_pillar.max()) == pillars.coords.shape[0] - 1


def test_result_does_not_depend_on_point_order_even_when_capping():
    grid = GridConfig(x_range_m=GRID.x_range_m, y_range_m=GRID.y_range_m,
                      max_points_per_pillar=3, max_pillars=50)
    cloud = _random_cloud(3000, seed=1)
    voxelizer = Voxelizer(grid=grid)
    reference, reference_counts = voxelizer([cloud])
    assert int(reference_counts.points_capped[0]) > 0
    assert int(reference_counts.pillars_capped[0]) > 0
    shuffled, shuffled_counts = voxelizer([cloud[torch.randperm(cloud.shape[0])]])
    for name in ('points', 'point_pillar', 'coords', 'num_points'):
        assert torch.equal(getattr(reference, name), getattr(shuffled, name)), name
    assert all(torch.equal(a, b) for a, b in zip(reference_counts, shuffled_counts))


def test_samples_are_independent_of_their_batch_neighbours():
    grid = GridConfig(x_range_m=GRID.x_range_m, y_range_m=GRID.y_range_m,
                      max_points_per_pillar=3, max_pillars=50)
    voxelizer = Voxelizer(grid=grid)
    cloud = _random_cloud(2000, seed=2)
    alone, alone_counts = voxelizer([cloud])
    for neighbour in (_random_cloud(500, seed=3), torch.zeros(0, 4)):
        batch, batch_counts = voxelizer([neighbour, cloud])
        second = batch.coords[:, 0] == 1
        assert torch.equal(batch.coords[second][:, 1:], alone.coords[:, 1:])
        assert torch.equal(batch.num_points[second], alone.num_points)
        point_in_second = second[batch.point_pillar]
        assert torch.equal(batch.points[point_in_second], alone.points)
        assert all(torch.equal(b[1:], a) for a, b in zip(alone_counts, batch_counts))


def test_empty_and_all_nan_clouds():
    all_nan = torch.full((7, 4), math.nan)
    pillars, counts = Voxelizer(grid=GRID)([torch.zeros(0, 4), all_nan])
    assert pillars.coords.shape == (0, 3)
    assert pillars.points.shape == (0, 4)
    assert counts.non_finite_dropped.tolist() == [0, 7]
    assert pillars.batch_size == 2


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match='points must be'):
        Voxelizer(grid=GRID)([torch.zeros(5, 3)])


def test_hash_is_a_32_bit_mix():
    values = torch.arange(1000, dtype=torch.int64)
    hashed = mix32(values)
    assert int(hashed.min()) >= 0 and int(hashed.max()) < 2 ** 32
    assert hashed.unique().numel() == 1000


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    grid = GridConfig(x_range_m=GRID.x_range_m, y_range_m=GRID.y_range_m,
                      max_points_per_pillar=3, max_pillars=50)
    clouds = [_random_cloud(3000, seed=4), _random_cloud(100, seed=5)]
    voxelizer = Voxelizer(grid=grid)
    cpu, cpu_counts = voxelizer(clouds)
    cuda, cuda_counts = voxelizer([c.cuda() for c in clouds])
    for name in ('points', 'point_pillar', 'coords', 'num_points'):
        assert torch.equal(getattr(cpu, name), getattr(cuda, name).cpu()), name
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu_counts, cuda_counts))


def test_huge_finite_values_count_as_out_of_range_not_non_finite():
    points = torch.tensor([
        _point(1.0, 0.0),
        _point(3.0e38, 0.0, intensity=3.0e38),  # finite, but the sum of the row would overflow
        _point(1.0, 0.0, intensity=-math.inf),
    ])
    pillars, counts = Voxelizer(grid=GRID)([points])
    assert pillars.points.tolist() == [_point(1.0, 0.0)]
    assert counts.non_finite_dropped.tolist() == [1]
    assert counts.out_of_range_dropped.tolist() == [1]


def test_offset_views_and_other_feature_counts_give_the_same_pillars():
    cloud = _random_cloud(500, seed=6)
    flat = torch.cat([torch.zeros(1), cloud.reshape(-1)])
    offset_view = flat[1:].view(500, 4)  # storage offset 1: not 16-byte aligned
    reference, _ = Voxelizer(grid=GRID)([cloud])
    shifted, _ = Voxelizer(grid=GRID)([offset_view])
    assert torch.equal(reference.points, shifted.points)
    five = torch.cat([cloud, cloud[:, 3:]], 1)  # (500, 5): the general gather path
    wide, _ = Voxelizer(grid=GRID, num_features=5)([five])
    assert torch.equal(wide.coords, reference.coords)
    assert torch.equal(wide.num_points, reference.num_points)
    assert torch.equal(_sorted_rows(wide.points[:, :4]), _sorted_rows(reference.points))
