"""The synthetic world's meshes, ray caster and shapes."""

import math

import numpy as np
import pytest
from training import shapes
from training.world import MAX_PASSES, MeshBuilder, rotation_z, triangulate, WorldBuilder


def _world(transmit=0.0):
    """Return a world with a 2 m cube at x in [4, 6] and a pane (transmit) at x = 2."""
    builder = WorldBuilder()
    solid = builder.material('Buildings', (0.5, 0.5, 0.5), 0.5)
    pane = builder.material('Buildings', (0.1, 0.1, 0.1), 0.1, transmit=transmit)
    mesh = MeshBuilder()
    mesh.box((4.0, -1.0, -1.0), (6.0, 1.0, 1.0), solid)
    mesh.box((2.0, -1.0, -1.0), (2.01, 1.0, 1.0), pane)
    mesh.place(np.eye(3), (0.0, 0.0, 0.0), 7, builder)
    return builder.build()


def test_cast_returns_nearest_hit_distance_normal_and_owner():
    world = _world()
    directions = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                           [math.cos(0.3), math.sin(0.3), 0.0]])
    hits = world.cast(np.zeros(3), directions)
    assert hits.distance[0] == pytest.approx(2.0, abs=1e-4)
    assert not hits.hit[1] and math.isinf(hits.distance[1])
    assert hits.distance[2] == pytest.approx(2.0 / math.cos(0.3), abs=1e-4)
    np.testing.assert_allclose(hits.normal[0], (-1.0, 0.0, 0.0), atol=1e-6)
    assert world.mesh.owner[hits.face[0]] == 7


def test_transparent_surfaces_pass_rays_with_their_probability():
    rays = np.tile([1.0, 0.0, 0.0], (4000, 1))
    opaque = _world(0.0).cast(np.zeros(3), rays, rng=np.random.default_rng(0))
    assert np.allclose(opaque.distance, 2.0, atol=1e-3)
    clear = _world(1.0).cast(np.zeros(3), rays, rng=np.random.default_rng(0))
    assert np.allclose(clear.distance, 4.0, atol=1e-2)
    half = _world(0.5).cast(np.zeros(3), rays, rng=np.random.default_rng(0))
    behind = np.isclose(half.distance, 4.0, atol=1e-2).mean()
    assert 0.45 < behind < 0.55
    # The camera (no rng) always stops at the first surface.
    assert np.allclose(_world(1.0).cast(np.zeros(3), rays).distance, 2.0, atol=1e-3)
    assert MAX_PASSES >= 2


def test_triangulate_concave_polygon_covers_its_area():
    # An L shape (area 3) with a reflex corner.
    polygon = np.array([(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)], dtype=float)
    triangles = triangulate(polygon)
    assert triangles.shape == (4, 3)
    a, b, c = (polygon[triangles[:, k]] for k in range(3))
    area = 0.5 * np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1])
                        - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    assert area.sum() == pytest.approx(3.0)
    with pytest.raises(ValueError, match='simple'):
        triangulate(polygon[::-1])


@pytest.mark.parametrize('kind', sorted(shapes.ROAD_USERS))
def test_road_users_have_plausible_boxes_that_hold_the_mesh(kind):
    builder = WorldBuilder()
    build, box_class, base = shapes.ROAD_USERS[kind]
    mesh, (length, width, height) = build(np.random.default_rng(3), builder, f'{base} 1')
    low, high = mesh.local_bounds()
    assert low[2] == pytest.approx(0.0) and high[2] == pytest.approx(height)
    assert length >= high[0] - low[0] - 1e-9
    limits = {'Car': (3.2, 5.3, 1.3, 1.7), 'VanSUV': (4.0, 6.1, 1.5, 2.7),
              'Truck': (5.0, 12.5, 2.4, 4.1), 'Bus': (8.5, 18.5, 2.7, 3.7),
              'Pedestrian': (0.3, 1.0, 0.95, 2.05), 'Cyclist': (1.4, 2.0, 1.3, 2.1)}
    low_l, high_l, low_h, high_h = limits[box_class]
    assert low_l <= length <= high_l and low_h <= height <= high_h
    labels = {m.label for m in builder.materials}
    assert labels == {f'{base} 1'}


@pytest.mark.parametrize('kind', ['car', 'small', 'suv', 'van', 'truck', 'bus'])
def test_vehicle_details_add_lamps_and_bumpers_to_the_same_body(kind):
    build, _, base = shapes.ROAD_USERS[kind]
    plain_builder, detailed_builder = WorldBuilder(), WorldBuilder()
    _, plain_size = build(np.random.default_rng(4), plain_builder, f'{base} 1')
    detailed, size = build(np.random.default_rng(4), detailed_builder, f'{base} 1',
                           details=True)
    # The body's draws come first: the same vehicle, 1-3 cm longer at each end.
    assert 0.0 < size[0] - plain_size[0] <= 0.07
    assert size[1:] == pytest.approx(plain_size[1:])
    albedos = {m.albedo for m in detailed_builder.materials}
    assert {shapes.TAIL_LIGHT, shapes.HEAD_LIGHT} <= albedos
    assert not {shapes.TAIL_LIGHT, shapes.HEAD_LIGHT} & {m.albedo for m in
                                                         plain_builder.materials}
    assert {m.label for m in detailed_builder.materials} == {f'{base} 1'}
    # A ray from behind at lamp height near the side meets a red tail light.
    detailed.place(rotation_z(0.0), (0.0, 0.0, 0.0), 0, detailed_builder)
    world = detailed_builder.build()
    tail = np.array([m.albedo == shapes.TAIL_LIGHT for m in world.materials])
    centres = world.mesh.vertices[world.mesh.faces].mean(axis=1)  # (F, 3)
    left_lamp = centres[tail[world.mesh.material] & (centres[:, 1] > 0)].mean(axis=0)
    hit = world.cast(np.array([detailed.local_bounds()[0][0] - 5.0, *left_lamp[1:]]),
                     np.array([[1.0, 0.0, 0.0]]))
    assert world.materials[world.mesh.material[hit.face[0]]].albedo == shapes.TAIL_LIGHT


def test_lorries_with_details_carry_fleet_white_cargo():
    cargo = set()
    for seed in range(12):
        builder = WorldBuilder()
        shapes.truck(np.random.default_rng(seed), builder, 'Truck 1', details=True)
        cargo |= {m.albedo for m in builder.materials} & set(shapes.CARGO)
    assert len(cargo) >= 4  # drawn from the cargo table, not the facades


def test_platform_lorries_show_a_light_tailgate_and_their_load():
    sizes, boards = [], set()
    for seed in range(20):
        builder = WorldBuilder()
        mesh, size = shapes.platform_lorry(np.random.default_rng(seed), builder, 'Truck 1')
        low, high = mesh.local_bounds()
        np.testing.assert_allclose(high - low, size)
        assert low[2] == pytest.approx(0.0)
        sizes.append(size)
        boards |= {m.albedo for m in builder.materials if m.own_colour}
        if seed == 0:  # from behind at tailgate height, a ray meets the boards first
            mesh.place(rotation_z(0.0), (20.0, 0.0, 0.0), 0, builder)
            world = builder.build()
            hit = world.cast(np.array([0.0, 0.0, 1.35]), np.array([[1.0, 0.0, 0.0]]))
            material = world.materials[world.mesh.material[hit.face[0]]]
            assert material.own_colour and material.albedo in shapes.CARGO
            assert hit.distance[0] == pytest.approx(20.0 - size[0] / 2, abs=0.1)
    lengths, widths, heights = np.array(sizes).T
    assert 5.0 <= lengths.min() and lengths.max() <= 8.6
    assert 2.1 <= widths.min() and widths.max() <= 2.6
    assert 2.4 <= heights.min() and heights.max() <= 3.8
    assert heights.std() > 0.1  # with and without a load above the boards
    assert boards <= set(shapes.CARGO) and len(boards) >= 3
    assert {m.label for m in builder.materials} == {'Truck 1'}


def test_car_glass_lets_lidar_through_and_body_does_not():
    builder = WorldBuilder()
    mesh, (length, width, height) = shapes.car(np.random.default_rng(1), builder, 'Car 1')
    mesh.place(rotation_z(0.0), (10.0, 0.0, 0.0), 0, builder)
    world = builder.build()
    transmit = {m.transmit for m in world.materials}
    assert 0.0 in transmit and max(transmit) > 0.5
    # A ray from the side at window height reaches glass; at door height, the body.
    window = world.cast(np.array([10.0, -10.0, height - 0.25]), np.array([[0.0, 1.0, 0.0]]))
    door = world.cast(np.array([10.0, -10.0, 0.6]), np.array([[0.0, 1.0, 0.0]]))
    assert world.materials[world.mesh.material[window.face[0]]].transmit > 0.5
    assert world.materials[world.mesh.material[door.face[0]]].transmit == 0.0


def test_scenery_is_unlabelled_clutter():
    builder = WorldBuilder()
    rng = np.random.default_rng(5)
    for mesh in (shapes.tree(rng, builder), shapes.bush(rng, builder, 6.0),
                 shapes.pole(rng, builder, 'sign'), shapes.fence(rng, builder, 10.0, 'mesh'),
                 shapes.fence(rng, builder, 10.0, 'guardrail'),
                 shapes.small_object(rng, builder, 'bicycle'),
                 shapes.building(rng, builder, 20.0, 10.0, 12.0)):
        low, high = mesh.local_bounds()
        assert (high - low).min() > 0.0
    labels = {m.label for m in builder.materials}
    assert labels <= {'Nature object', 'Poles', 'Traffic sign 1', 'Grid structure', 'Sidebars',
                      'Small vehicles 1', 'Buildings'}
    shapes.fence(rng, builder, 10.0, 'guardrail', shapes.GUARD_RAIL_LABEL)
    assert {m.label for m in builder.materials} - labels == {'Road blocks'}
    foliage = [m for m in builder.materials if m.label == 'Nature object' and m.transmit > 0]
    assert foliage and all(m.scatter_m > 0 for m in foliage), 'leaves scatter returns'


def test_bare_trees_are_bark_coloured_lattices_the_sky_shows_through():
    builder = WorldBuilder()
    rng = np.random.default_rng(8)
    heights, widths = [], []
    for _ in range(30):
        low, high = shapes.bare_tree(rng, builder).local_bounds()
        heights.append(high[2] - low[2])
        widths.append(min(high[0] - low[0], high[1] - low[1]))
    assert 3.0 < min(heights) and max(heights) < 27.0
    # Poplars: tall and narrow; broadleaf crowns: wide.
    assert any(h > 10.0 and h > 3 * w for h, w in zip(heights, widths))
    assert any(w > 4.0 for w in widths)
    assert {m.label for m in builder.materials} == {'Nature object'}
    twigs = [m for m in builder.materials if m.sky_through > 0]
    assert twigs and all(m.own_colour and m.transmit >= 0.6 and m.albedo in shapes.TWIGS
                         for m in twigs)
    # Leafy trees take the scene's season (no own colour) and hide the sky.
    shapes.tree(rng, builder)
    leafy = [m for m in builder.materials if m.albedo in shapes.FOLIAGE]
    assert leafy and not any(m.own_colour or m.sky_through for m in leafy)


def test_delineator_is_a_white_post_with_a_black_band_and_reflectors_both_ways():
    builder = WorldBuilder()
    mesh = shapes.delineator(np.random.default_rng(3), builder)
    low, high = mesh.local_bounds()
    assert 0.9 <= high[2] <= 1.2 and low[2] == pytest.approx(0.0)
    assert high[0] - low[0] < 0.15 and high[1] - low[1] < 0.15  # a post, not a panel
    assert {m.label for m in builder.materials} == {'Sidebars'}
    bright = [m for m in builder.materials if min(m.albedo) > 0.7 and not m.retro]
    assert bright and any(max(m.albedo) < 0.1 for m in builder.materials)
    mesh.place(np.eye(3), (0.0, 0.0, 0.0), -1, builder)
    world = builder.build()
    # Along the road (x) both ways, at the band's height, rays meet a retro-reflector; across
    # it, the black band; lower down, the white post.
    band = high[2] - 0.32 + 0.13
    for origin, direction in (((5.0, 0.0, band), (-1.0, 0.0, 0.0)),
                              ((-5.0, 0.0, band), (1.0, 0.0, 0.0))):
        hits = world.cast(np.array(origin), np.array([direction]))
        assert hits.hit[0] and world.materials[world.mesh.material[hits.face[0]]].retro
    across = world.cast(np.array((0.0, 5.0, band)), np.array([[0.0, -1.0, 0.0]]))
    assert max(world.materials[world.mesh.material[across.face[0]]].albedo) < 0.1
    low_hit = world.cast(np.array((0.0, 5.0, 0.3)), np.array([[0.0, -1.0, 0.0]]))
    assert min(world.materials[world.mesh.material[low_hit.face[0]]].albedo) > 0.7


@pytest.mark.parametrize('kind', shapes.DISTRACTORS)
def test_distractors_are_unlabelled_and_road_user_sized(kind):
    builder = WorldBuilder()
    rng = np.random.default_rng(3)
    for _ in range(10):
        mesh = shapes.distractor(rng, builder, kind)
        low, high = mesh.local_bounds()
        size = high - low
        # Hard negatives stand on the ground at the size of a person, a bicycle or a car.
        assert abs(low[2]) < 0.05 and 0.4 < size[2] < 3.8, (kind, size)
        assert 0.05 < max(size[0], size[1]) < 7.0, (kind, size)
    labels = {m.label for m in builder.materials}
    assert not labels & {'Car 1', 'Pedestrian 1', 'Bicycle 1', 'Truck 1'}


def test_mesh_builder_rotate_and_extend_keep_faces_valid():
    builder = WorldBuilder()
    material = builder.material('Buildings', (0.5, 0.5, 0.5), 0.5)
    part = MeshBuilder()
    part.box((0.0, 0.0, 0.0), (2.0, 1.0, 1.0), material)
    part.box((5.0, 0.0, 0.0), (6.0, 1.0, 1.0), material)
    part.rotate_z(math.pi / 2)
    low, high = part.local_bounds()
    np.testing.assert_allclose(low, (-1.0, 0.0, 0.0), atol=1e-9)
    np.testing.assert_allclose(high, (0.0, 6.0, 1.0), atol=1e-9)
    whole = MeshBuilder()
    whole.box((10.0, 0.0, 0.0), (11.0, 1.0, 1.0), material)
    whole.extend(part)
    whole.place(np.eye(3), (0.0, 0.0, 0.0), 1, builder)
    world = builder.build()
    # A ray down onto the extended part hits it: the faces point at the right vertices.
    hits = world.cast(np.array([[-0.5, 5.5, 5.0]]), np.array([[0.0, 0.0, -1.0]]))
    assert hits.hit[0] and hits.distance[0] == pytest.approx(4.0, abs=1e-4)
