"""Camera geometry vectors and the projection the calibration-aware fusion uses."""

import math

from bev_perception.geometry import rotation_from_rpy
from bev_perception.model.camera_geometry import (camera_geometry, describe, forward_camera,
                                                  mirror_left_right, MODEL_TO_OPTICAL, moved,
                                                  NEAR_M, project, SIZE)
import numpy as np
import pytest
import torch

K = np.array([[800.0, 0.0, 640.0], [0.0, 820.0, 360.0], [0.0, 0.0, 1.0]])


def _geometry(distortion=(), translation=(0.0, 0.0, 0.0), image_wh=(1280, 720), k=K):
    return torch.from_numpy(camera_geometry(MODEL_TO_OPTICAL, translation, k, distortion,
                                            image_wh))[None]


def test_describe_gives_back_the_fov_aspect_and_mounting():
    forward = describe(forward_camera((1280, 720), horizontal_fov_rad=1.0))
    assert forward['horizontal_fov_deg'] == pytest.approx(math.degrees(1.0), abs=1e-4)
    assert forward['aspect'] == pytest.approx(1280 / 720, rel=1e-6)
    assert [forward[k] for k in ('x_m', 'y_m', 'z_m', 'pitch_deg', 'yaw_deg')] == [0.0] * 5
    camera_to_model = rotation_from_rpy(0.01, math.radians(4.0), math.radians(-3.0))
    rotation = MODEL_TO_OPTICAL @ camera_to_model.T  # model -> optical
    position = np.array([-1.2, 0.3, 0.25])
    mounted = describe(camera_geometry(rotation, -rotation @ position, K, (-0.2,), (1280, 720)))
    np.testing.assert_allclose([mounted[k] for k in ('x_m', 'y_m', 'z_m')], position,
                               atol=1e-5)
    assert mounted['pitch_deg'] == pytest.approx(4.0, abs=1e-4)
    assert mounted['yaw_deg'] == pytest.approx(-3.0, abs=1e-4)
    assert mounted['k1'] == pytest.approx(-0.2)
    assert mounted['horizontal_fov_deg'] == pytest.approx(
        math.degrees(2 * math.atan(640 / 800)), abs=1e-4)


def test_vector_layout_and_image_size_invariance():
    vector = camera_geometry(MODEL_TO_OPTICAL, (0.1, 0.2, 0.3), K, (0.1, -0.02), (1280, 720))
    assert vector.shape == (SIZE,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector[:9], MODEL_TO_OPTICAL.ravel())
    np.testing.assert_allclose(vector[9:12], (0.1, 0.2, 0.3), rtol=1e-6)
    np.testing.assert_allclose(vector[12:16], (800 / 1280, 820 / 720, 0.5, 0.5), rtol=1e-6)
    np.testing.assert_allclose(vector[16:], (0.1, -0.02, 0.0, 0.0, 0.0), rtol=1e-6)
    # The same camera described at half the resolution gives the same vector.
    half = camera_geometry(MODEL_TO_OPTICAL, (0.1, 0.2, 0.3), K * [[0.5], [0.5], [1.0]],
                           (0.1, -0.02), (640, 360))
    np.testing.assert_allclose(half, vector, rtol=1e-6)


@pytest.mark.parametrize('bad', [{'k': K * 0.0}, {'image_wh': (0, 720)},
                                 {'translation': (float('nan'), 0.0, 0.0)}])
def test_bad_calibration_is_refused(bad):
    with pytest.raises(ValueError, match='finite with a positive'):
        _geometry(**bad)


def test_pinhole_projection_matches_the_intrinsics():
    points = torch.tensor([[10.0, 0.0, 0.0], [10.0, 2.0, -1.0], [20.0, -3.0, 0.5]])
    uv, depth, inside = project(points, _geometry())
    assert uv.shape == (1, 3, 2) and depth.shape == (1, 3) and inside.shape == (1, 3)
    for index, (x, y, z) in enumerate(points.tolist()):
        col = K[0, 2] + K[0, 0] * (-y / x)
        row = K[1, 2] + K[1, 1] * (-z / x)
        expected = torch.tensor([col / 1280, row / 720], dtype=torch.float32)
        torch.testing.assert_close(uv[0, index], expected)
        assert depth[0, index] == pytest.approx(x)
    assert inside.all()


def test_behind_beside_and_too_near_are_not_inside():
    points = torch.tensor([[-5.0, 0.0, 0.0], [5.0, 10.0, 0.0], [NEAR_M / 2, 0.0, 0.0],
                           [5.0, 0.0, 0.0]])
    _, _, inside = project(points, _geometry())
    assert inside.tolist() == [[False, False, False, True]]


def test_translation_moves_the_camera():
    # The model origin 1.5 m in front of the camera, i.e. the camera 1.5 m behind it.
    _, depth, _ = project(torch.tensor([[10.0, 0.0, 0.0]]), _geometry(translation=(0, 0, 1.5)))
    assert depth[0, 0] == pytest.approx(11.5)


def test_distortion_bends_and_fold_over_is_not_inside():
    barrel = (-0.3, 0.08)
    straight_uv, _, _ = project(torch.tensor([[10.0, 4.0, 0.0]]), _geometry())
    bent_uv, _, bent_inside = project(torch.tensor([[10.0, 4.0, 0.0]]), _geometry(barrel))
    # Barrel distortion pulls an off-axis point towards the centre.
    assert abs(bent_uv[0, 0, 0] - 0.5) < abs(straight_uv[0, 0, 0] - 0.5)
    assert bent_inside.all()
    # Far off-axis a strong barrel polynomial turns back towards the centre; it must not be
    # taken as seen even though its (u, v) falls in the image.
    folded_uv, _, folded_inside = project(torch.tensor([[1.0, -1.6, 0.0]]), _geometry((-0.3,)))
    assert (folded_uv >= 0).all() and (folded_uv <= 1).all()
    assert not folded_inside.any()


def test_batch_of_cameras_and_leading_point_shape():
    points = torch.zeros(4, 3, 3)
    points[..., 0] = 10.0
    geometry = torch.cat([_geometry(), _geometry(translation=(0.0, 0.0, 5.0))])
    uv, depth, inside = project(points, geometry)
    assert uv.shape == (2, 4, 3, 2) and depth.shape == (2, 4, 3) and inside.shape == (2, 4, 3)
    assert torch.allclose(depth[1] - depth[0], torch.full((4, 3), 5.0))


def test_mirrored_camera_sees_the_mirrored_world_in_the_mirrored_image():
    rng = np.random.default_rng(4)
    rotation = MODEL_TO_OPTICAL @ np.array([[0.99, -0.1, 0.05], [0.1, 0.99, 0.0],
                                            [-0.05, 0.0, 0.99]])
    geometry = camera_geometry(rotation, (0.2, -0.3, 0.4), K, (-0.2, 0.05, 0.004, -0.006, 0.01),
                               (1280, 720))
    points = np.stack([rng.uniform(3.0, 40.0, 200), rng.uniform(-8.0, 8.0, 200),
                       rng.uniform(-2.0, 2.0, 200)], axis=1)
    mirrored_points = points * (1.0, -1.0, 1.0)
    uv, depth, inside = project(torch.from_numpy(points),
                                torch.from_numpy(geometry)[None].double())
    uv_m, depth_m, inside_m = project(torch.from_numpy(mirrored_points), torch.from_numpy(
        mirror_left_right(geometry))[None].double())
    torch.testing.assert_close(uv_m[..., 0], 1.0 - uv[..., 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(uv_m[..., 1], uv[..., 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(depth_m, depth, atol=1e-5, rtol=0)
    assert torch.equal(inside_m, inside) and inside.any()
    np.testing.assert_allclose(mirror_left_right(mirror_left_right(geometry)), geometry)


def test_forward_camera_sees_half_its_field_of_view_to_each_side():
    geometry = torch.from_numpy(forward_camera((640, 480), horizontal_fov_rad=1.0))[None]
    edge = torch.tensor([[10.0, -10.0 * math.tan(0.49), 0.0], [10.0, -10.0 * math.tan(0.51), 0.0]])
    uv, _, inside = project(edge, geometry)
    assert inside.tolist() == [[True, False]]
    assert uv[0, 0, 1] == pytest.approx(0.5)


def test_moved_camera_sees_moved_points_where_it_saw_the_originals():
    geometry = camera_geometry(MODEL_TO_OPTICAL, (0.1, -0.2, 0.3), K, (-0.1,), (1280, 720))
    c, s = np.cos(0.2), np.sin(0.2)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    translation = np.array([1.0, -0.5, 0.2])
    points = np.array([[10.0, 1.0, -0.5], [25.0, -3.0, 1.0]])
    before = project(torch.from_numpy(points), torch.from_numpy(geometry)[None].double())
    after = project(torch.from_numpy(points @ rotation.T + translation),
                    torch.from_numpy(moved(geometry, rotation, translation))[None].double())
    for first, second in zip(before, after):
        torch.testing.assert_close(second.double(), first.double(), atol=1e-5, rtol=0)
