"""The synthetic A2D2-format writer: layout, file formats, geometry, determinism."""

import dataclasses
import filecmp
import json
import math
import os
import re

from bev_perception.a2d2_classes import BOX_CLASSES, hex_to_rgb, SEMANTIC_COLOURS
import numpy as np
from PIL import Image
import pytest
from training import cameras, sensors, shapes, synthetic
from training.a2d2_calibration import CameraModel, cams_lidars_dict
from training.cameras import CameraSetup
from training.world import WorldBuilder

IMAGE_SIZE = (160, 101)  # width, height: tiny, odd height
SCENES, FRAMES, SEED = 2, 3, 11
#: The format tests film with A2D2's front-center camera (test_cameras covers drawn cameras).
NOMINAL = synthetic.SyntheticConfig(camera=CameraSetup())
NPZ_DTYPES = {'points': np.float64, 'reflectance': np.int64, 'row': np.float64,
              'col': np.float64, 'depth': np.float64, 'distance': np.float64,
              'lidar_id': np.float64, 'timestamp': np.int64, 'azimuth': np.float64}
BOX_KEYS = {'2d_bbox', '3d_points', 'alpha', 'axis', 'center', 'class', 'id', 'occlusion',
            'rot_angle', 'size', 'truncation'}


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """Return a generated root of 2 scenes x 3 frames at a tiny image size."""
    out = str(tmp_path_factory.mktemp('synthetic') / 'a2d2')
    report = synthetic.generate(out, SCENES, FRAMES, SEED, image_size=IMAGE_SIZE, config=NOMINAL)
    assert report.frames == SCENES * FRAMES and len(report.scenes) == SCENES
    return out


def _frames(root):
    """Yield (scene, frame_id, {kind: path}) for every generated frame."""
    for scene in sorted(os.listdir(root)):
        if not os.path.isdir(os.path.join(root, scene)):
            continue
        lidar_dir = os.path.join(root, scene, 'lidar', 'cam_front_center')
        for name in sorted(os.listdir(lidar_dir)):
            frame_id = name.rsplit('_', 1)[1].split('.')[0]
            stem = scene.replace('_', '')
            paths = {
                'lidar': lidar_dir + '/' + name,
                'camera': f'{root}/{scene}/camera/cam_front_center/'
                          f'{stem}_camera_frontcenter_{frame_id}.png',
                'camera_info': f'{root}/{scene}/camera/cam_front_center/'
                               f'{stem}_camera_frontcenter_{frame_id}.json',
                'label': f'{root}/{scene}/label/cam_front_center/'
                         f'{stem}_label_frontcenter_{frame_id}.png',
                'label3D': f'{root}/{scene}/label3D/cam_front_center/'
                           f'{stem}_label3D_frontcenter_{frame_id}.json',
            }
            yield scene, frame_id, paths


def _load_json(path):
    with open(path, encoding='utf-8') as stream:
        return json.load(stream)


def _structure(value):
    """Return the nesting of a JSON value: dict keys, list lengths, leaf types."""
    if isinstance(value, dict):
        return {key: _structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_structure(item) for item in value]
    if value is None:
        return None
    return 'number' if isinstance(value, (int, float)) else type(value).__name__


def _official(name):
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.environ.get('A2D2_OFFICIAL_DIR', ''),
                  os.path.join(here, '..', '..', '..', 'shared', 'a2d2')]
    for directory in candidates:
        path = os.path.join(directory, name)
        if directory and os.path.exists(path):
            return path
    pytest.skip(f'official {name} not available (set A2D2_OFFICIAL_DIR)')


def test_root_layout_and_file_names(root):
    scenes = sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))
    assert len(scenes) == SCENES
    assert sorted(os.listdir(root)) == sorted(scenes + ['cams_lidars.json', 'class_list.json'])
    for scene in scenes:
        assert re.fullmatch(r'\d{8}_\d{6}', scene)
        assert sorted(os.listdir(os.path.join(root, scene))) == ['camera', 'label', 'label3D',
                                                                 'lidar']
        for folder in ('camera', 'label', 'label3D', 'lidar'):
            assert os.listdir(os.path.join(root, scene, folder)) == ['cam_front_center']
    frames = list(_frames(root))
    assert len(frames) == SCENES * FRAMES
    for scene, frame_id, paths in frames:
        assert re.fullmatch(r'\d{9}', frame_id)
        for path in paths.values():
            assert os.path.isfile(path), path
    ids = [int(frame_id) for scene, frame_id, _ in frames if scene == frames[0][0]]
    assert ids == list(range(ids[0], ids[0] + FRAMES))


def test_cams_lidars_structure_matches_official(root):
    generated = _load_json(os.path.join(root, 'cams_lidars.json'))
    official = _load_json(_official('cams_lidars.json'))
    assert _structure(generated) == _structure(official)


def test_cams_lidars_front_center_facts(root):
    front = cams_lidars_dict()['cameras']['front_center']
    assert front['CamMatrix'][0][0] == pytest.approx(1687.34, abs=0.01)
    assert front['CamMatrix'][1][1] == pytest.approx(1783.43, abs=0.01)
    assert front['CamMatrix'][0][2] == pytest.approx(965.43, abs=0.01)
    assert front['CamMatrix'][1][2] == pytest.approx(684.42, abs=0.01)
    assert front['Distortion'][0][0] == pytest.approx(-0.2611, abs=1e-4)
    assert front['Resolution'] == [1920, 1208] and front['Lens'] == 'Telecam'
    small = _load_json(os.path.join(root, 'cams_lidars.json'))['cameras']['front_center']
    assert small['Resolution'] == list(IMAGE_SIZE)
    assert small['CamMatrix'][0][0] == pytest.approx(1687.336914 * IMAGE_SIZE[0] / 1920)


def test_class_list_equals_official_and_table(root):
    generated = _load_json(os.path.join(root, 'class_list.json'))
    assert list(generated.items()) == list(SEMANTIC_COLOURS)
    assert generated == _load_json(_official('class_list.json'))


def _scenes(root):
    """Return {scene name: Scene} of the generated root (rebuilt from the seed)."""
    scenes = [synthetic.build_scene(SEED, index, FRAMES, NOMINAL) for index in range(SCENES)]
    assert sorted(scene.name for scene in scenes) == sorted(
        name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))
    return {scene.name: scene for scene in scenes}


def test_npz_keys_dtypes_and_geometry(root):
    camera = CameraModel.from_json(
        _load_json(os.path.join(root, 'cams_lidars.json'))['cameras']['front_center'])
    scenes = _scenes(root)
    for scene_name, _, paths in _frames(root):
        scene = scenes[scene_name]
        with np.load(paths['lidar']) as archive:
            arrays = {key: archive[key] for key in archive.files}
        assert set(arrays) == set(NPZ_DTYPES)
        for key, dtype in NPZ_DTYPES.items():
            assert arrays[key].dtype == dtype, key
        points = arrays['points']
        count = len(points)
        assert 1000 <= count <= 250_000
        assert points.shape == (count, 3)
        assert all(array.shape == (count,) for key, array in arrays.items() if key != 'points')
        np.testing.assert_array_equal(arrays['depth'], points[:, 0])
        np.testing.assert_allclose(arrays['distance'], np.linalg.norm(points, axis=1))
        row, col = camera.project_undistorted(points)
        np.testing.assert_allclose(arrays['row'], row)
        np.testing.assert_allclose(arrays['col'], col)
        assert (points[:, 0] > 0).all()
        in_image = (col >= 0) & (col < IMAGE_SIZE[0]) & (row >= 0) & (row < IMAGE_SIZE[1])
        if scene.lidar.fov_crop:
            assert in_image.all()
        else:
            assert not in_image.all(), 'a full scan keeps the points beside the image'
        ids = arrays['lidar_id']
        assert set(np.unique(ids)) <= {0.0, 1.0, 2.0, 3.0, 4.0}
        assert (np.diff(ids) >= 0).all(), 'points are stored in blocks per lidar'
        azimuth = arrays['azimuth']
        assert (azimuth >= 0).all() and (azimuth < 2 * math.pi).all()
        assert 0 <= arrays['reflectance'].min() and arrays['reflectance'].max() <= 255
        if scene.lidar.intensity_model not in ('absent', 'constant'):
            assert arrays['reflectance'].std() > 3, 'reflectance depends on the material'
        stamp = _load_json(paths['camera_info'])['cam_tstamp']
        stamps = arrays['timestamp']
        # One sweep; the lasers of the last azimuth step fire one after another.
        assert stamps.max() - stamps.min() < synthetic.FRAME_PERIOD_US + len(
            scene.lidar.elevations) * synthetic.LASER_INTERVAL_US
        assert (stamps >= stamp - 60_300).all() and (stamps < stamp + 60_300).all()
        # The road just ahead of the car (the lowest returns there; a car may stand in front)
        # is camera_height_m below the camera.
        near = (points[:, 0] < 12) & (np.abs(points[:, 1]) < 1.5)
        assert abs(np.percentile(points[near, 2], 5) + scene.camera_height_m) < 0.25


def test_lidar_patterns_and_setups():
    assert {name: len(angles) for name, angles in sensors.PATTERNS.items()} == {
        'vlp16': 16, 'hdl32': 32, 'vlp32c': 32, 'hdl64': 64, 'os64': 64, 'os128': 128}
    assert sensors.PATTERNS['hdl64'].max() == pytest.approx(2.0)
    assert sensors.PATTERNS['hdl64'].min() == pytest.approx(-24.33)
    setups = [sensors.draw_setup(np.random.default_rng(seed), 1.8) for seed in range(200)]
    assert {s.pattern for s in setups} == set(sensors.PATTERN_WEIGHTS)
    assert {s.intensity_model for s in setups} == set(sensors.INTENSITY_MODELS)
    assert any(s.fov_crop for s in setups) and not all(s.fov_crop for s in setups)
    heights = [s.position_m[2] + 1.8 for s in setups if s.pattern != sensors.A2D2_RIG]
    # Each laser has its own calibration error: rings are not perfect cones.
    errors = np.concatenate([s.laser_elevation_error for s in setups])
    assert 0.0 < np.degrees(errors).std() < 0.2
    assert all(len(s.laser_range_bias_m) == len(s.elevations) for s in setups)
    assert any(np.ptp(s.laser_range_bias_m) > 0.02 for s in setups)
    assert 1.4 < min(heights) and max(heights) < 2.35
    rng = np.random.default_rng(0)
    absent = dataclasses.replace(setups[0], intensity_model='absent')
    values = sensors.intensity(absent, np.full(10, 0.5), np.zeros(10, bool), np.ones(10),
                               np.full(10, 10.0), rng)
    assert (values == 0).all()
    linear = dataclasses.replace(setups[0], intensity_model='linear', intensity_gain=1.0)
    dark, bright = (sensors.intensity(linear, np.full(500, r), np.zeros(500, bool),
                                      np.ones(500), np.full(500, 10.0), rng).mean()
                    for r in (0.1, 0.6))
    assert bright > 3 * dark


def test_scenes_vary_in_street_sensor_and_content():
    scenes = [synthetic.build_scene(11, index, 1) for index in range(24)]
    assert len({s.lidar.pattern for s in scenes}) >= 4
    drawn = {kind for s in scenes for kind in s.street.side}
    assert drawn == set(synthetic.SIDE_KINDS) - {'forest'}  # forest: only when weighted
    assert any(abs(s.street.curvature) > 1 / 400 for s in scenes)
    assert any(s.street.junction_s_m is not None for s in scenes)
    heights = [s.camera_height_m for s in scenes]
    assert max(heights) - min(heights) > 0.3
    kinds = {obj.box_class for s in scenes for obj in s.objects}
    assert {'Car', 'VanSUV', 'Truck', 'Bus', 'Pedestrian', 'Cyclist', None} <= kinds
    unlabelled = sum(obj.box_class is None for s in scenes for obj in s.objects)
    assert unlabelled > sum(obj.box_class is not None for s in scenes for obj in s.objects) / 2


def test_forest_sides_grow_trees_taller_than_the_park_trees():
    config = synthetic.SyntheticConfig(forest_side_weight=3.0)
    scenes = [synthetic.build_scene(11, index, 1, config) for index in range(6)]
    forest = [s for s in scenes if 'forest' in s.street.side]
    assert len(forest) >= 3
    rng, materials = np.random.default_rng(0), WorldBuilder()
    tall = [shapes.tall_tree(rng, materials).local_bounds()[1][2] for _ in range(40)]
    park = [shapes.tree(rng, materials).local_bounds()[1][2] for _ in range(40)]
    assert min(tall) > 10.0 and max(tall) < 32.0
    assert max(park) < min(tall) + 2.0 and np.median(tall) > 2 * np.median(park)
    # A forest scene holds many more pieces of vegetation than the same street without it.
    plain = synthetic.build_scene(11, scenes.index(forest[0]), 1)
    assert len(forest[0].objects) > len(plain.objects) + 50


def test_delineators_line_rural_roads_and_leave_the_rest_of_the_scene_as_drawn():
    # Rural and forest roadsides get delineator posts ('Sidebars'), and guard rails take
    # A2D2's label for them ('Road blocks'); everything else is the world-5 scene.
    posts = synthetic.SyntheticConfig(delineators=True)
    added, rails, tinted = 0, 0, 0
    for index in range(12):
        plain = synthetic.build_scene(0, index, 1)
        lined = synthetic.build_scene(0, index, 1, posts)
        assert lined.street.side == plain.street.side
        kept = lined.objects[:len(plain.objects)]
        assert [(o.x_m, o.y_m, o.box_class) for o in kept] == [
            (o.x_m, o.y_m, o.box_class) for o in plain.objects]
        new = lined.objects[len(plain.objects):]
        assert all(o.box_class is None and 0.9 <= o.size_m[2] <= 1.2 for o in new)
        if not any(kind in ('rural', 'forest') for kind in plain.street.side):
            assert not new
        added += len(new)
        rail_labels = {m.label for m in lined.materials.materials if m.albedo == shapes.METAL}
        if any(m.label == 'Sidebars' for m in plain.materials.materials):
            rails += 1  # world 5 labelled this scene's guard rail 'Sidebars' ...
            assert 'Road blocks' in rail_labels and 'Sidebars' not in rail_labels  # ... now not
        assert bool(new) == any(m.label == 'Sidebars' for m in lined.materials.materials)
        # Rails, posts and blocks keep their colours: world 5 gave them the facades' tint.
        blocks = synthetic._LABEL_INDEX['Road blocks']
        tint = plain.appearance.label_gain[blocks] / lined.appearance.label_gain[blocks]
        assert np.isclose(tint, cameras.FACADE_GAINS).all(axis=1).any()
        tinted += not np.allclose(tint, 1.0)
    assert added >= 6 and rails >= 1 and tinted >= 6


def _render(scene, config, size=(320, 201)):
    # Without blur and compression, a pixel's colour is its own surface's (or a neighbour's,
    # through the lens distortion's resampling).
    scene.appearance = dataclasses.replace(scene.appearance, blur_px=0.0, jpeg_quality=0)
    return synthetic.render_frame(scene, 0, synthetic.SensorRig.build(size, scene.camera),
                                  config)


def test_bare_trees_keep_the_street_and_the_sky_shows_through_their_crowns():
    bare = synthetic.SyntheticConfig(forest_side_weight=1.0, bare_tree_share=1.0)
    leafy = dataclasses.replace(bare, bare_tree_share=0.0)
    for index in range(3):
        plain, scene = (synthetic.build_scene(0, index, 1, c) for c in (leafy, bare))
        assert repr(scene.street) == repr(plain.street)
        assert repr(scene.lidar) == repr(plain.lidar) and scene.camera == plain.camera
        assert any(m.sky_through for m in scene.materials.materials)
        assert not any(m.sky_through for m in plain.materials.materials)
    # The same frame with the twigs made opaque: only their pixels change, towards the sky.
    see_through = _render(scene, bare)
    twigs = [k for k, m in enumerate(scene.materials.materials) if m.sky_through]
    for k in twigs:
        scene.materials.materials[k] = dataclasses.replace(scene.materials.materials[k],
                                                           sky_through=0.0)
    opaque = _render(scene, bare)
    np.testing.assert_array_equal(see_through.label, opaque.label)  # labels stay exact
    changed = np.abs(see_through.image.astype(int) - opaque.image).max(axis=2) > 8
    nature = (see_through.label == hex_to_rgb(_colour('Nature object'))).all(axis=2)
    assert changed.sum() > 100 and nature[changed].mean() > 0.95
    # Bark against a blue or grey sky: the twig pixels get brighter and bluer.
    lighter = see_through.image[changed].astype(float)
    darker = opaque.image[changed].astype(float)
    assert lighter.mean() > darker.mean() + 5
    assert (lighter[:, 2] - lighter[:, 0]).mean() > (darker[:, 2] - darker[:, 0]).mean()


def test_platform_lorries_replace_the_lorries_and_leave_the_street():
    light = synthetic.SyntheticConfig(platform_lorry_share=1.0)
    lorries = 0
    for index in range(8):
        plain, scene = (synthetic.build_scene(2, index, 1, c)
                        for c in (synthetic.SyntheticConfig(), light))
        assert repr(scene.street) == repr(plain.street)
        assert repr(scene.lidar) == repr(plain.lidar) and scene.camera == plain.camera
        for item in scene.objects:
            if item.box_class == 'Truck':
                lorries += 1
                assert item.size_m[0] <= 8.6 and item.size_m[2] <= 3.8  # light lorries
        shares = [synthetic.build_scene(2, index, 1, dataclasses.replace(light, **change))
                  for change in ({'platform_lorry_share': 0.0},)]
        assert [o.size_m for o in shares[0].objects] == [o.size_m for o in plain.objects]
    assert lorries >= 2


def test_a_dry_verge_changes_the_grass_colour_alone():
    dry = synthetic.SyntheticConfig(dry_verge_share=1.0, camera=CameraSetup())
    green = dataclasses.replace(dry, dry_verge_share=0.0)
    for index in range(6):  # a rural or suburban side shows its verge
        scene = synthetic.build_scene(0, index, 1, dry)
        if any(kind in ('rural', 'suburban') for kind in scene.street.side):
            break
    plain = synthetic.build_scene(0, index, 1, green)
    assert plain.appearance.verge_albedo is None
    assert np.isclose(scene.appearance.verge_albedo, cameras.DRY_GRASS, rtol=0.35).all(
        axis=1).any()
    assert [(o.x_m, o.y_m) for o in scene.objects] == [(o.x_m, o.y_m) for o in plain.objects]
    straw, grass = _render(scene, dry), _render(plain, green)
    np.testing.assert_array_equal(straw.label, grass.label)
    nature = (grass.label == hex_to_rgb(_colour('Nature object'))).all(axis=2)
    changed = np.abs(straw.image.astype(int) - grass.image).max(axis=2) > 8
    assert changed.sum() > 100 and nature[changed].mean() > 0.95
    # Each channel moves the way the verge's albedo did (the season's gain against dry grass).
    seasonal = (synthetic.GROUND_SURFACES[synthetic.VERGE][1]
                * plain.appearance.label_gain[synthetic._LABEL_INDEX['Nature object']])
    expected = scene.appearance.verge_albedo - seasonal
    seen = straw.image[changed].mean(axis=0) - grass.image[changed].mean(axis=0)
    strong = np.abs(expected) > 0.05
    assert strong.any() and (np.sign(seen[strong]) == np.sign(expected[strong])).all()


def _colour(name):
    return next(colour for colour, label in SEMANTIC_COLOURS if label == name)


def test_world_settings_from_the_command_line():
    config = synthetic.world_config(['forest_side_weight=1', 'delineators=true',
                                     'camera_height_m=[1.5, 1.9]'])
    assert config == dataclasses.replace(synthetic.SyntheticConfig(), forest_side_weight=1.0,
                                         delineators=True, camera_height_m=(1.5, 1.9))
    assert isinstance(config.forest_side_weight, float)
    assert synthetic.world_config([]) == synthetic.SyntheticConfig()
    with pytest.raises(ValueError, match=r"unknown keys \['no_such_knob'\]"):
        synthetic.world_config(['no_such_knob=1'])
    with pytest.raises(ValueError, match='delineators: expected true or false, got 2'):
        synthetic.world_config(['delineators=2'])


def test_label3d_format_and_box_geometry(root):
    axis_signs, classes = set(), set()
    for _, _, paths in _frames(root):
        with open(paths['label3D'], encoding='utf-8') as stream:
            text = stream.read()
        boxes = json.loads(text)
        assert text == json.dumps(boxes, indent=4, sort_keys=True)
        for key, box in boxes.items():
            assert set(box) == BOX_KEYS and key == f'box_{box["id"]}'
            assert box['class'] in BOX_CLASSES
            assert box['rot_angle'] >= 0 and box['alpha'] == 0.0
            assert abs(abs(box['axis'][2]) - 1.0) < 1e-9 and box['axis'][:2] == [0.0, 0.0]
            assert 0.0 <= box['occlusion'] <= 1.0 and 0.0 <= box['truncation'] <= 1.0
            axis_signs.add(box['axis'][2])
            classes.add(box['class'])
            center, size = np.array(box['center']), np.array(box['size'])
            yaw = box['rot_angle'] * box['axis'][2]
            rotation = np.array([[math.cos(yaw), -math.sin(yaw), 0.0],
                                 [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
            signs = np.array([[-1, 1, -1], [1, 1, -1], [1, -1, -1], [-1, -1, -1],
                              [-1, 1, 1], [1, 1, 1], [1, -1, 1], [-1, -1, 1]])
            corners = center + (signs * size / 2) @ rotation.T
            np.testing.assert_allclose(box['3d_points'], corners, atol=1e-9)
            assert 0 < center[0] <= 80
    assert axis_signs == {1.0, -1.0}
    assert {'Car', 'Pedestrian'} <= classes


def test_boxes_stand_on_the_ground_and_hold_their_points(root):
    scenes = _scenes(root)
    checked = 0
    for scene_name, frame_id, paths in _frames(root):
        scene = scenes[scene_name]
        position, axes = scene.ego_pose(int(frame_id) - scene.first_frame_number)
        points = np.load(paths['lidar'])['points']
        for box in _load_json(paths['label3D']).values():
            center, size = np.array(box['center']), np.array(box['size'])
            yaw = box['rot_angle'] * box['axis'][2]
            offset = points - center
            along = math.cos(yaw) * offset[:, 0] + math.sin(yaw) * offset[:, 1]
            across = -math.sin(yaw) * offset[:, 0] + math.cos(yaw) * offset[:, 1]
            margin = 0.15  # range noise (up to 4 cm std) moves returns off the surface
            inside = ((np.abs(along) <= size[0] / 2 + margin)
                      & (np.abs(across) <= size[1] / 2 + margin)
                      & (np.abs(offset[:, 2]) <= size[2] / 2 + margin))
            assert inside.sum() >= 5, 'a labelled object holds at least min_box_points'
            # The box bottom is on the ground under the object: at the lowest footprint corner
            # (objects stand on slopes, banks and kerbs).
            corners = np.array(box['3d_points'])[:4] @ axes.T + position
            ground = scene.street.height(corners[:, 0], corners[:, 1]).min()
            bottom = (position + axes @ center)[2] - size[2] / 2
            assert abs(bottom - ground) < 0.25, paths['label3D']
            checked += 1
    assert checked > 10


def test_boxes_do_not_overlap_in_bev(root):
    def corners(box):
        yaw = box['rot_angle'] * box['axis'][2]
        c, s = math.cos(yaw), math.sin(yaw)
        half_l, half_w = box['size'][0] / 2, box['size'][1] / 2
        return np.array([[box['center'][0] + c * dx - s * dy, box['center'][1] + s * dx + c * dy]
                         for dx, dy in ((half_l, half_w), (half_l, -half_w), (-half_l, -half_w),
                                        (-half_l, half_w))])

    def separated(a, b):
        for polygon in (a, b):
            for i in range(4):
                edge = polygon[(i + 1) % 4] - polygon[i]
                normal = np.array([-edge[1], edge[0]])
                if (a @ normal).max() < (b @ normal).min() or \
                        (b @ normal).max() < (a @ normal).min():
                    return True
        return False

    for _, _, paths in _frames(root):
        boxes = [corners(box) for box in _load_json(paths['label3D']).values()]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert separated(boxes[i], boxes[j]), paths['label3D']


def test_class_sizes_are_realistic():
    sizes = {}
    for seed in (1, 2, 3):
        scene = synthetic.build_scene(seed, 0, 2)
        rig = synthetic.SensorRig.build((48, 30), scene.camera)
        for box in synthetic.render_frame(scene, 0, rig).boxes.values():
            sizes.setdefault(box['class'], []).append(box['size'])
    expected = {'Car': (4.3, 1.76, 1.47), 'VanSUV': (4.8, 1.9, 1.8),
                'Truck': (8.0, 2.5, 3.2), 'Pedestrian': (0.65, 0.62, 1.7),
                'Cyclist': (1.75, 0.62, 1.75)}
    for name, mean in expected.items():
        if name in sizes:
            np.testing.assert_allclose(np.mean(sizes[name], axis=0), mean, rtol=0.3)
    assert {'Car', 'Pedestrian'} <= set(sizes)


def test_png_formats_and_label_colours(root):
    palette = {hex_to_rgb(colour) for colour, _ in SEMANTIC_COLOURS}
    for _, _, paths in _frames(root):
        for kind in ('camera', 'label'):
            with Image.open(paths[kind]) as image:
                assert image.format == 'PNG' and image.mode == 'RGB'
                assert image.size == IMAGE_SIZE
        with Image.open(paths['label']) as image:
            colours = {tuple(c) for c in np.asarray(image).reshape(-1, 3)}
        assert colours <= palette, 'label pixels use the A2D2 colours only'
        assert len(colours) >= 6
        info = _load_json(paths['camera_info'])
        assert info['cam_name'] == 'front_center' and isinstance(info['cam_tstamp'], int)
        assert info['lidar_ids'] == {'0': 'front_left', '1': 'rear_right', '2': 'front_right',
                                     '3': 'front_center', '4': 'rear_left'}


def test_label_is_aligned_with_lidar_through_the_distortion(root):
    """Points inside an object's box project (distorted) onto label pixels of its category."""
    camera = CameraModel.from_json(
        _load_json(os.path.join(root, 'cams_lidars.json'))['cameras']['front_center'])
    category_colour = {'Car': (255, 0, 0), 'VanSUV': (255, 0, 0), 'Truck': (255, 128, 0),
                       'Pedestrian': (204, 153, 255), 'Cyclist': (182, 89, 6)}
    instance_colours = {}
    for colour, name in SEMANTIC_COLOURS:
        instance_colours.setdefault(name.rsplit(' ', 1)[0], set()).add(hex_to_rgb(colour))
    first = {hex_to_rgb(c): n.rsplit(' ', 1)[0] for c, n in SEMANTIC_COLOURS}
    agree = total = 0
    for _, _, paths in _frames(root):
        points = np.load(paths['lidar'])['points']
        label = np.asarray(Image.open(paths['label']))
        row, col = camera.distort(-points[:, 1] / points[:, 0], -points[:, 2] / points[:, 0])
        row, col = np.rint(row).astype(int), np.rint(col).astype(int)
        inside_image = (row >= 0) & (row < IMAGE_SIZE[1]) & (col >= 0) & (col < IMAGE_SIZE[0])
        # Far off-axis the distortion polynomial folds back into the image: keep the points
        # the generator counts as seen (inside the undistorted image, its fov_crop rule).
        flat_row, flat_col = camera.project_undistorted(points)
        inside_image &= ((flat_row >= 0) & (flat_row < IMAGE_SIZE[1]) & (flat_col >= 0)
                         & (flat_col < IMAGE_SIZE[0]))
        for box in _load_json(paths['label3D']).values():
            if box['class'] not in category_colour:
                continue
            yaw = box['rot_angle'] * box['axis'][2]
            offset = points - box['center']
            along = math.cos(yaw) * offset[:, 0] + math.sin(yaw) * offset[:, 1]
            across = -math.sin(yaw) * offset[:, 0] + math.cos(yaw) * offset[:, 1]
            inside = (inside_image & (np.abs(along) <= box['size'][0] / 2)
                      & (np.abs(across) <= box['size'][1] / 2)
                      & (np.abs(offset[:, 2]) <= box['size'][2] / 2))
            wanted = first[category_colour[box['class']]]
            seen = [first.get(tuple(c)) for c in label[row[inside], col[inside]]]
            agree += sum(name == wanted for name in seen)
            total += len(seen)
    assert total > 200
    # Not 1: ground under people, leaves scattered into a box beside a tree, riders in a group.
    assert agree / total > 0.8


def test_render_frame_matches_written_files(root):
    scene = synthetic.build_scene(SEED, 1, FRAMES, NOMINAL)
    frame = synthetic.render_frame(scene, 2, synthetic.SensorRig.build(IMAGE_SIZE))
    paths = [p for s, f, p in _frames(root) if s == scene.name and f == frame.frame_id][0]
    with np.load(paths['lidar']) as archive:
        for key, value in frame.lidar.items():
            np.testing.assert_array_equal(archive[key], value)
    assert _load_json(paths['label3D']) == json.loads(json.dumps(frame.boxes))
    np.testing.assert_array_equal(np.asarray(Image.open(paths['camera'])), frame.image)
    np.testing.assert_array_equal(np.asarray(Image.open(paths['label'])), frame.label)


def test_frames_form_a_drive():
    scene = synthetic.build_scene(3, 0, 10)
    (start, _), (later, axes) = scene.ego_pose(0), scene.ego_pose(5)
    travelled = np.linalg.norm(later[:2] - start[:2])
    assert travelled == pytest.approx(scene.ego_speed_mps * 0.5, rel=0.01)
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-9)
    rig = synthetic.SensorRig.build((48, 30), scene.camera)
    first, second = (synthetic.render_frame(scene, k, rig) for k in (0, 1))
    step = second.camera_info['cam_tstamp'] - first.camera_info['cam_tstamp']
    assert 100_000 - 21_000 < step < 100_000 + 21_000
    assert int(second.frame_id) == int(first.frame_id) + 1


def test_empty_scene_has_no_boxes_but_points():
    config = synthetic.SyntheticConfig(empty_scene_probability=1.0)
    scene = synthetic.build_scene(5, 0, 1, config)
    frame = synthetic.render_frame(scene, 0, synthetic.SensorRig.build((48, 30), scene.camera),
                                   config)
    assert frame.boxes == {} and len(frame.lidar['points']) > 1000
    assert not any(obj.box_class for obj in scene.objects)


def test_same_seed_same_bytes_any_workers(tmp_path):
    first, second, other = (str(tmp_path / name) for name in ('a', 'b', 'c'))
    synthetic.generate(first, 1, 2, SEED, image_size=IMAGE_SIZE, workers=1)
    synthetic.generate(second, 1, 2, SEED, image_size=IMAGE_SIZE, workers=2)
    synthetic.generate(other, 1, 2, SEED + 1, image_size=IMAGE_SIZE)
    files = sorted(os.path.relpath(os.path.join(d, f), first)
                   for d, _, names in os.walk(first) for f in names)
    # Root files, the scene's own camera (seed 11 draws one) and five files per frame.
    assert len(files) == 2 + 1 + 2 * 5
    match, mismatch, errors = filecmp.cmpfiles(first, second, files, shallow=False)
    assert mismatch == [] and errors == []
    other_files = sorted(os.path.relpath(os.path.join(d, f), other)
                         for d, _, names in os.walk(other) for f in names)
    assert other_files != files


def test_command_line(tmp_path):
    out = str(tmp_path / 'cli')
    assert synthetic.main(['--out', out, '--scenes', '1', '--frames', '1', '--seed', '0',
                           '--width', '64', '--height', '40']) == 0
    scene = [name for name in os.listdir(out) if re.fullmatch(r'\d{8}_\d{6}', name)]
    assert len(scene) == 1
    own = os.path.join(out, scene[0], 'cams_lidars.json')
    resolution = _load_json(own if os.path.exists(own) else os.path.join(out, 'cams_lidars.json')
                            )['cameras']['front_center']['Resolution']
    with Image.open(next(os.path.join(d, f) for d, _, names in os.walk(out) for f in names
                         if f.endswith('.png'))) as image:
        assert image.size == tuple(resolution) and image.size[0] == 64
    with pytest.raises(SystemExit) as raised:  # usage error before any work
        synthetic.main(['--out', out, '--scenes', '0', '--frames', '1', '--seed', '0'])
    assert raised.value.code == 2
    for setting in ('forest_side_weight', 'no_such_knob=1', 'camera.no_such_field=1',
                    'delineators=maybe', 'camera_height_m=[1.5]'):
        with pytest.raises(SystemExit) as raised:  # a bad --world: usage error, no work
            synthetic.main(['--out', str(tmp_path / 'never'), '--scenes', '1', '--frames',
                            '1', '--seed', '0', '--world', setting])
        assert raised.value.code == 2 and not os.path.exists(tmp_path / 'never')
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    with pytest.raises(SystemExit) as raised:  # the folder cannot be made: named, no traceback
        synthetic.main(['--out', str(blocker / 'root'), '--scenes', '1', '--frames', '1',
                        '--seed', '0', '--width', '64', '--height', '40'])
    assert str(raised.value.code).startswith(
        f'training.synthetic: --out {blocker / "root"}: {blocker}')
