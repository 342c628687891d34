"""CameraInfo fields and the LiDAR-to-camera extrinsic -> the network's camera geometry."""

from bev_perception.calibration import (CalibrationError, CameraIntrinsics,
                                        cloud_to_camera_from_pose, unfamiliar_camera)
from bev_perception.geometry import rotation_from_rpy
from bev_perception.model.camera_geometry import forward_camera, MODEL_TO_OPTICAL, project
import numpy as np
import pytest
import torch

K = [721.5, 0.0, 609.6, 0.0, 721.5, 172.9, 0.0, 0.0, 1.0]  # KITTI camera 2, 1242 x 375


def test_camera_info_fields_are_checked():
    good = CameraIntrinsics.from_camera_info(1242, 375, K, 'plumb_bob', [0.1, -0.2, 0.0, 0.0, 0.0])
    assert good.distortion == (0.1, -0.2, 0.0, 0.0, 0.0) and good.k.shape == (3, 3)
    assert CameraIntrinsics.from_camera_info(1242, 375, K, '', []).distortion == (0.0,) * 5
    rational = CameraIntrinsics.from_camera_info(1242, 375, K, 'rational_polynomial',
                                                 [0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert rational.distortion[0] == 0.1
    cases = [((0, 375, K, 'plumb_bob', []), 'empty'),
             ((1242, 375, [0.0] * 9, 'plumb_bob', []), 'focal length'),
             ((1242, 375, K[:8], 'plumb_bob', []), '9 finite values'),
             ((1242, 375, K, 'equidistant', [0.1] * 4), 'not supported'),
             ((1242, 375, K, 'rational_polynomial', [0.0] * 5 + [0.3, 0.0, 0.0]), 'beyond k3'),
             ((1242, 375, K, 'plumb_bob', [float('nan')] * 5), 'non-finite')]
    for arguments, message in cases:
        with pytest.raises(CalibrationError, match=message):
            CameraIntrinsics.from_camera_info(*arguments)


def test_geometry_projects_model_points_where_the_camera_sees_their_cloud_points():
    intrinsics = CameraIntrinsics.from_camera_info(1242, 375, K, 'plumb_bob', [])
    # A LiDAR 0.27 m behind and 0.08 m above the camera, both facing forward (KITTI-like).
    cloud_to_camera = (MODEL_TO_OPTICAL, MODEL_TO_OPTICAL @ np.array([-0.27, 0.0, 0.08]))
    cloud_to_model = (rotation_from_rpy(0.0, 0.02, 0.1), np.array([0.5, -0.2, -0.14]))
    geometry = intrinsics.geometry(cloud_to_camera, cloud_to_model)
    rng = np.random.default_rng(0)
    cloud = np.stack([rng.uniform(5, 50, 100), rng.uniform(-10, 10, 100),
                      rng.uniform(-2, 1, 100)], axis=1)
    camera = cloud @ cloud_to_camera[0].T + cloud_to_camera[1]
    expected = np.stack([K[0] * camera[:, 0] / camera[:, 2] + K[2],
                         K[4] * camera[:, 1] / camera[:, 2] + K[5]], axis=1)
    model = cloud @ cloud_to_model[0].T + cloud_to_model[1]
    uv, depth, _ = project(torch.from_numpy(model), torch.from_numpy(geometry)[None].double())
    np.testing.assert_allclose(uv[0].numpy() * (1242, 375), expected, atol=2e-3)
    np.testing.assert_allclose(depth[0].numpy(), camera[:, 2], atol=1e-5)


def test_camera_pose_in_the_cloud_frame_gives_the_optical_extrinsic():
    # A camera 1 m ahead of and 0.5 m above the LiDAR, turned 90 degrees left.
    rotation, translation = cloud_to_camera_from_pose((1.0, 0.0, 0.5), (0.0, 0.0, np.pi / 2))
    # A point 3 m to the LiDAR's left of the camera lies straight ahead of it, depth 3 m.
    camera = rotation @ np.array([1.0, 3.0, 0.5]) + translation
    np.testing.assert_allclose(camera, (0.0, 0.0, 3.0), atol=1e-12)
    # Above the camera is up in the image (optical y points down).
    above = rotation @ np.array([1.0, 3.0, 1.5]) + translation
    np.testing.assert_allclose(above, (0.0, -1.0, 3.0), atol=1e-12)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)


#: A training range as ``training.make_weights`` records it ([min, median, max]).
TRAIN_CAMERAS = {'cameras': 600, 'distinct': 431, 'horizontal_fov_deg': [42.2, 59.1, 95.0],
                 'aspect': [1.24, 1.61, 3.54], 'x_m': [-1.5, -0.2, 0.3], 'y_m': [-0.48, 0.0, 0.42],
                 'z_m': [-0.4, 0.0, 0.3], 'pitch_deg': [-2.0, 0.5, 6.8],
                 'yaw_deg': [-6.4, 0.0, 7.5], 'k1': [-0.51, -0.08, 0.0]}


def test_a_camera_outside_the_training_range_is_named():
    kitti = CameraIntrinsics.from_camera_info(1242, 375, K, 'plumb_bob', [])
    pose = cloud_to_camera_from_pose((0.27, 0.0, 0.08), (0.0, 0.0, 0.0))
    identity = (np.eye(3), np.zeros(3))
    assert unfamiliar_camera(kitti.geometry(pose, identity), TRAIN_CAMERAS) == []
    wide = forward_camera((1920, 1080), horizontal_fov_rad=np.radians(120.0))
    assert unfamiliar_camera(wide, TRAIN_CAMERAS) == [
        'horizontal_fov_deg 120.00 (trained 42.20..95.00)']
    # A camera 2 m above the model origin and looking 20 degrees down breaks two ranges.
    high = kitti.geometry(cloud_to_camera_from_pose((0.0, 0.0, 2.0), (0.0, 0.35, 0.0)),
                          identity)
    notes = unfamiliar_camera(high, TRAIN_CAMERAS)
    assert [note.split()[0] for note in notes] == ['z_m', 'pitch_deg']
    # Weights without the record check nothing.
    assert unfamiliar_camera(wide, {}) == []
