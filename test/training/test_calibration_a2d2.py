"""The project's A2D2 calibration table, frame transforms and front-center camera model."""

import json
import os

from bev_perception.model.camera_geometry import project
import numpy as np
import pytest
import torch
from training import a2d2_calibration as calibration


def test_view_to_vehicle_is_a_rigid_transform():
    view = {'origin': [1.0, 2.0, 3.0], 'x-axis': [2.0, 0.1, 0.0], 'y-axis': [0.3, 1.0, 0.05]}
    transform = calibration.view_to_vehicle(view)
    rotation = transform[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(transform[:3, 0], np.array([2.0, 0.1, 0.0]) / np.hypot(2, 0.1))
    np.testing.assert_array_equal(transform[:3, 3], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(transform[3], [0, 0, 0, 1])


def test_lidars_sit_above_the_front_camera():
    camera = calibration.camera_calibration('front_center').view.to_json()
    origins = {name: calibration.view_to_view(view.to_json(), camera)[:3, 3]
               for name, view in calibration.LIDARS}
    assert set(origins) == set(calibration.LIDAR_IDS)
    front = origins['front_center']
    assert abs(front[0]) < 0.05 and abs(front[1]) < 0.05 and 0.15 < front[2] < 0.2
    assert -2.3 < origins['rear_left'][0] < -2.0
    # Round trip camera -> lidar -> camera is the identity.
    lidar = calibration.lidar_view('front_left').to_json()
    np.testing.assert_allclose(calibration.view_to_view(camera, lidar)
                               @ calibration.view_to_view(lidar, camera), np.eye(4), atol=1e-12)


def test_camera_model_projection_and_distortion():
    camera = calibration.CameraModel.front_center()
    points = np.array([[10.0, 1.0, -1.5], [30.0, -8.0, 2.0], [5.0, 0.0, 0.0]])
    row, col = camera.project_undistorted(points)
    np.testing.assert_allclose(col, 965.4341406 - 1687.336914 * points[:, 1] / points[:, 0])
    np.testing.assert_allclose(row, 684.4193604 - 1783.428467 * points[:, 2] / points[:, 0])
    rows, cols = np.meshgrid(np.linspace(0, 1207, 61), np.linspace(0, 1919, 97), indexing='ij')
    for count in (rows.size, 7):  # table inversion and the iterative path
        u, v = camera.undistort(rows.ravel()[:count], cols.ravel()[:count])
        back_row, back_col = camera.distort(u, v)
        np.testing.assert_allclose(back_row, rows.ravel()[:count], atol=1e-6)
        np.testing.assert_allclose(back_col, cols.ravel()[:count], atol=1e-6)
    # Barrel distortion: the image corner sees further out than the pinhole would.
    u, _ = camera.undistort(np.array([0.0]), np.array([0.0]))
    assert -u[0] > 964.43 / 1844.18


@pytest.mark.parametrize('image_size', [calibration.NATIVE_RESOLUTION, (640, 403)])
def test_camera_geometry_projects_like_the_distortion_model(image_size):
    camera = calibration.CameraModel.front_center(image_size)
    rng = np.random.default_rng(2)
    points = np.stack([rng.uniform(2.0, 60.0, 400), rng.uniform(-30.0, 30.0, 400),
                       rng.uniform(-2.0, 2.0, 400)], axis=1)
    uv, depth, inside = project(torch.from_numpy(points),
                                torch.from_numpy(camera.camera_geometry())[None].double())
    row, col = camera.distort(-points[:, 1] / points[:, 0], -points[:, 2] / points[:, 0])
    seen = inside[0].numpy()
    assert 0 < seen.sum() < len(points)
    scale = np.array(image_size, dtype=np.float64)
    np.testing.assert_allclose(uv[0].numpy()[seen] * scale, np.stack([col, row], 1)[seen],
                               atol=0.05 * scale.max() / 1920)
    np.testing.assert_allclose(depth[0].numpy(), points[:, 0], rtol=1e-6)


def test_scaled_intrinsics_keep_the_field_of_view():
    native = calibration.CameraModel.front_center()
    small = calibration.CameraModel.front_center((192, 121))
    assert (small.width, small.height) == (192, 121)
    points = np.array([[20.0, 5.0, 1.0], [8.0, -2.0, -1.7]])
    row, col = native.project_undistorted(points)
    small_row, small_col = small.project_undistorted(points)
    np.testing.assert_allclose((small_col + 0.5) * 10.0, col + 0.5)
    np.testing.assert_allclose((small_row + 0.5) * 1208 / 121, row + 0.5)


def test_written_cams_lidars_reads_back(tmp_path):
    path = str(tmp_path / 'cams_lidars.json')
    calibration.write_cams_lidars(path, (320, 202))
    with open(path, encoding='utf-8') as stream:
        document = json.load(stream)
    assert list(document) == ['vehicle', 'lidars', 'cameras']
    assert list(document['lidars']) == ['front_center', 'front_left', 'front_right',
                                        'rear_left', 'rear_right']
    assert len(document['cameras']) == 6
    camera = calibration.CameraModel.from_json(document['cameras']['front_center'])
    assert (camera.width, camera.height) == (320, 202)
    assert camera.distortion[0] == pytest.approx(-0.2611312588)
    with pytest.raises(ValueError, match='Fisheye'):
        calibration.CameraModel.from_json(document['cameras']['front_left'])


def test_table_matches_the_official_numbers():
    beside_checkout = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   '..', '..', '..', 'shared', 'a2d2')
    path = os.path.join(os.environ.get('A2D2_OFFICIAL_DIR', beside_checkout),
                        'cams_lidars.json')
    if not os.path.exists(path):
        pytest.skip('official cams_lidars.json not available (set A2D2_OFFICIAL_DIR)')
    with open(path, encoding='utf-8') as stream:
        official = json.load(stream)
    ours = calibration.cams_lidars_dict()

    def numbers(value):
        if isinstance(value, dict):
            return [n for key in sorted(value) for n in numbers(value[key])]
        if isinstance(value, list):
            return [n for item in value for n in numbers(item)]
        return [float(value)] if isinstance(value, (int, float)) else []

    np.testing.assert_allclose(numbers(ours), numbers(official), rtol=1e-8, atol=1e-12)
