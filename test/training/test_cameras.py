"""Cameras and looks of the synthetic world: drawn setups, their files, exact alignment."""

import json
import os

from bev_perception.a2d2_classes import SEMANTIC_CATEGORIES
from bev_perception.model.camera_geometry import describe, project
import numpy as np
import pytest
import torch
from training import cameras, synthetic
from training.a2d2 import A2D2Dataset, list_scenes
from training.a2d2_calibration import CameraModel, cams_lidars_dict
from training.make_weights import train_cameras

NOMINAL_SIZE = (160, 101)
SEED = 41  # scene 0 draws a camera of its own, scene 1 keeps A2D2's


def _drawn(*, distorting: bool = False) -> cameras.CameraSetup:
    """Return the first drawn camera of its own (with lens distortion if asked) by seed."""
    for seed in range(100):
        setup = cameras.draw_camera(np.random.default_rng(seed))
        if not setup.nominal and (setup.k1 != 0.0 or not distorting):
            return setup
    raise AssertionError('no such camera in 100 draws')


def _structure(value):
    if isinstance(value, dict):
        return {key: _structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_structure(item) for item in value]
    return type(value).__name__ if isinstance(value, str) else 'number'


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """Two scenes of one frame: a drawn camera and the front-center camera."""
    out = str(tmp_path_factory.mktemp('cameras') / 'root')
    synthetic.generate(out, scenes=2, frames=1, seed=SEED, image_size=NOMINAL_SIZE)
    return out


def test_drawn_cameras_cover_the_documented_ranges():
    rng = np.random.default_rng(0)
    drawn = [cameras.draw_camera(rng) for _ in range(400)]
    nominal = sum(c.nominal for c in drawn) / len(drawn)
    assert abs(nominal - cameras.NOMINAL_CAMERA_PROBABILITY) < 0.08
    own = [c for c in drawn if not c.nominal]
    fov = np.degrees(2 * np.arctan(0.5 / np.array([c.intrinsics[0] for c in own])))
    assert 42.0 <= fov.min() < 50.0 and 85.0 < fov.max() <= 95.0
    aspects = np.array([c.aspect for c in own])
    assert aspects.min() < 1.4 and aspects.max() > 3.0  # 4:3 to KITTI's 3.3
    square = np.array([c.intrinsics[1] / c.intrinsics[0] / c.aspect for c in own])
    np.testing.assert_allclose(square, 1.0, atol=0.03)  # square pixels
    pitch = np.array([c.rpy_rad[1] for c in own])
    assert pitch.min() < 0.0 < 0.1 < pitch.max()
    assert sum(c.k1 == 0.0 for c in own) > 0.3 * len(own)  # rectified cameras too
    assert cameras.draw_camera(np.random.default_rng(5)) == cameras.draw_camera(
        np.random.default_rng(5))


def test_a_drawn_camera_has_its_own_file_with_the_official_structure(root):
    scenes = list_scenes(root)
    own = os.path.join(root, scenes[0], 'cams_lidars.json')
    assert os.path.exists(own) and not os.path.exists(os.path.join(root, scenes[1],
                                                                   'cams_lidars.json'))
    with open(own, encoding='utf-8') as stream:
        document = json.load(stream)
    reference = cams_lidars_dict(NOMINAL_SIZE)
    del reference['cameras']['front_center']['view_']  # A2D2's second pose of that camera
    assert _structure(document) == _structure(reference)
    assert document['lidars'] == json.loads(json.dumps(reference['lidars']))
    entry = document['cameras']['front_center']
    assert entry['Resolution'][0] == NOMINAL_SIZE[0] and entry['Resolution'] != list(NOMINAL_SIZE)
    with pytest.raises(ValueError, match='nominal'):
        cameras.scene_camera_entry(cameras.CameraSetup(), NOMINAL_SIZE)


def test_the_summary_of_cameras_gives_their_fov_mounting_and_pitch():
    rng = np.random.default_rng(3)
    own = [c for c in (cameras.draw_camera(rng) for _ in range(30)) if not c.nominal]
    nominal_view = CameraModel.front_center(NOMINAL_SIZE).view
    geometries = [cameras.camera_model(c, NOMINAL_SIZE).camera_geometry(nominal_view)
                  for c in own]
    summary = cameras.summarize(geometries + geometries[:1])
    assert summary['cameras'] == len(own) + 1 and summary['distinct'] == len(own)
    fov = np.degrees(2 * np.arctan(0.5 / np.array([c.intrinsics[0] for c in own])))
    np.testing.assert_allclose(summary['horizontal_fov_deg'][::2], [fov.min(), fov.max()],
                               atol=0.01)
    x_m = [c.position_m[0] for c in own]
    np.testing.assert_allclose(summary['x_m'][::2], [min(x_m), max(x_m)], atol=0.002)
    pitch = np.degrees([c.rpy_rad[1] for c in own])  # positive: looking down
    np.testing.assert_allclose(summary['pitch_deg'][::2], [pitch.min(), pitch.max()],
                               atol=0.01)
    aspect = [c.aspect for c in own]
    np.testing.assert_allclose(summary['aspect'][::2], [min(aspect), max(aspect)], rtol=0.02)
    assert cameras.summarize([]) == {'cameras': 0, 'distinct': 0}


def test_make_weights_records_the_cameras_of_every_scene(root):
    summary = train_cameras(root)  # scene 0: a camera of its own, scene 1: A2D2's front one
    assert summary['cameras'] == 2 and summary['distinct'] == 2
    front = CameraModel.front_center(NOMINAL_SIZE)
    nominal = describe(front.camera_geometry(front.view))
    for key in ('horizontal_fov_deg', 'x_m', 'pitch_deg'):
        low, _, high = summary[key]
        assert min(abs(low - nominal[key]), abs(high - nominal[key])) < 2e-3, key
        assert high > low, key  # the scene's own camera differs


def test_the_rig_rays_and_the_calibration_vector_agree_to_a_pixel():
    setup = _drawn(distorting=True)
    rig = synthetic.SensorRig.build(NOMINAL_SIZE, setup)
    nominal_view = CameraModel.front_center(NOMINAL_SIZE).view
    geometry = rig.camera.camera_geometry(nominal_view)
    rows, cols = np.meshgrid(np.arange(1, rig.camera.height - 1, 7),
                             np.arange(1, rig.camera.width - 1, 5), indexing='ij')
    rows, cols = rows.ravel(), cols.ravel()
    pixels = rows * rig.camera.width + cols
    points = rig.pixels.origin + 12.0 * rig.pixels.directions[pixels]  # model frame
    uv, _, inside = project(torch.from_numpy(points), torch.from_numpy(geometry[None]).double())
    assert inside[0].all()
    np.testing.assert_allclose(uv[0, :, 0].numpy() * rig.camera.width, cols, atol=0.02)
    np.testing.assert_allclose(uv[0, :, 1].numpy() * rig.camera.height, rows, atol=0.02)


def test_labels_images_and_points_agree_for_a_drawn_camera(root):
    dataset = A2D2Dataset(root)
    car = SEMANTIC_CATEGORIES.index('Car')
    checked = 0
    for index in range(len(dataset)):
        frame = dataset[index]
        assert frame.image.shape[:2] == frame.semantic.shape
        inside = np.zeros(len(frame.points), bool)
        for box, label in zip(frame.boxes, frame.labels):
            if label != 0:
                continue
            offset = frame.points[:, :3] - box[:3]
            c, s = np.cos(box[6]), np.sin(box[6])
            along = c * offset[:, 0] + s * offset[:, 1]
            across = -s * offset[:, 0] + c * offset[:, 1]
            inside |= ((abs(along) < 0.4 * box[3]) & (abs(across) < 0.4 * box[4])
                       & (abs(offset[:, 2]) < 0.4 * box[5]))
        uv, _, seen = project(torch.from_numpy(frame.points[inside, :3]).double(),
                              torch.from_numpy(frame.camera_geometry[None]).double())
        uv = uv[0].numpy()[seen[0].numpy()]
        height, width = frame.semantic.shape
        cols = np.clip((uv[:, 0] * width).round().astype(int), 0, width - 1)
        rows = np.clip((uv[:, 1] * height).round().astype(int), 0, height - 1)
        if len(uv) >= 20:
            assert (frame.semantic[rows, cols] == car).mean() > 0.9, frame.scene
            checked += 1
    assert checked == 2  # both cameras: drawn and front-center


def test_a_fixed_camera_changes_the_view_and_nothing_else():
    setup = _drawn()
    drawn = synthetic.build_scene(SEED, 1, 1)
    fixed = synthetic.build_scene(SEED, 1, 1, synthetic.SyntheticConfig(camera=setup))
    assert drawn.camera.nominal and fixed.camera == setup
    np.testing.assert_array_equal(drawn.appearance.label_gain, fixed.appearance.label_gain)
    first = synthetic.render_frame(drawn, 0, synthetic.SensorRig.build((64, 40), drawn.camera))
    second = synthetic.render_frame(fixed, 0, synthetic.SensorRig.build((64, 40), setup))
    np.testing.assert_array_equal(first.lidar['points'], second.lidar['points'])
    assert first.image.shape != second.image.shape
    with pytest.raises(ValueError, match='another camera'):
        synthetic.render_frame(fixed, 0, synthetic.SensorRig.build((64, 40)))


def test_the_look_is_drawn_per_scene_and_the_sky_follows_the_weather():
    rng = np.random.default_rng(1)
    looks = [cameras.draw_appearance(rng, ('Nature object', 'Buildings', 'Sky'), 5)
             for _ in range(60)]
    foliage = np.array([look.label_gain[0] for look in looks])
    assert (foliage[:, 0] > foliage[:, 1]).any() and (foliage[:, 0] < foliage[:, 1]).any()
    assert any(look.jpeg_quality for look in looks) and any(not look.jpeg_quality
                                                            for look in looks)
    up = np.array([[0.0, 0.0, 1.0], [0.6, 0.0, 0.8]])
    clear = cameras.Appearance(**{**looks[0].__dict__, 'overcast': 0.0, 'cloud_cover': 0.0})
    grey = cameras.Appearance(**{**looks[0].__dict__, 'overcast': 1.0, 'cloud_cover': 0.0})
    blue = cameras.sky_colour(up, clear, 0)
    assert (blue[:, 2] > blue[:, 0] + 0.2).all()
    assert np.ptp(cameras.sky_colour(up, grey, 0), axis=1).max() < 0.1
    noise = cameras.smooth_noise(np.stack([np.linspace(0, 50, 2000), np.zeros(2000)], 1), 5.0, 3)
    assert np.abs(noise).max() <= 1.0 and np.abs(np.diff(noise)).max() < 0.05  # smooth
    image = np.full((20, 30, 3), 0.5)
    once = cameras.finish_image(image, 1.0, looks[0], np.random.default_rng(2))
    again = cameras.finish_image(image, 1.0, looks[0], np.random.default_rng(2))
    np.testing.assert_array_equal(once, again)
    assert once.dtype == np.uint8 and once.shape == (20, 30, 3)
