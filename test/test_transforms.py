"""The transform tree the node feeds from /tf and /tf_static (no ROS)."""

import math

from bev_perception.geometry import rotation_from_rpy
from bev_perception.transforms import TransformError, TransformTree
import numpy as np
import pytest


def _quaternion(roll, pitch, yaw):
    """Return (x, y, z, w) of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


def test_lookup_goes_through_the_common_ancestor():
    tree = TransformTree()
    lidar_pose = (rotation_from_rpy(0.0, 0.02, 0.1), np.array([0.3, -0.1, 1.9]))
    mount_pose = (rotation_from_rpy(0.0, 0.1, 0.0), np.array([1.5, 0.0, 1.4]))
    camera_in_mount = (rotation_from_rpy(0.01, 0.0, -0.05), np.array([0.05, 0.02, 0.0]))
    tree.update('/base_link', 'lidar', lidar_pose[1], _quaternion(0.0, 0.02, 0.1), True, 0.0)
    tree.update('base_link', 'mount', mount_pose[1], _quaternion(0.0, 0.1, 0.0), True, 0.0)
    tree.update('mount', 'camera', camera_in_mount[1], _quaternion(0.01, 0.0, -0.05), True, 0.0)
    rotation, translation = tree.lookup('camera', 'lidar', 1.0)
    point = np.array([12.0, -3.0, 0.5])  # in the LiDAR frame
    in_base = lidar_pose[0] @ point + lidar_pose[1]
    in_mount = mount_pose[0].T @ (in_base - mount_pose[1])
    in_camera = camera_in_mount[0].T @ (in_mount - camera_in_mount[1])
    np.testing.assert_allclose(rotation @ point + translation, in_camera, atol=1e-12)
    back_rotation, back_translation = tree.lookup('lidar', 'camera', 1.0)
    np.testing.assert_allclose(back_rotation @ in_camera + back_translation, point, atol=1e-12)
    identity = tree.lookup('lidar', '/lidar', 1.0)
    np.testing.assert_allclose(identity[0], np.eye(3))
    assert tree.lookup('camera', 'radar', 1.0) is None
    assert tree.frames() == ('base_link', 'camera', 'lidar', 'mount')


def test_dynamic_edges_age_and_bad_ones_are_refused():
    with pytest.raises(TransformError, match='unit quaternion'):
        TransformTree().update('a', 'b', (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 2.0), True, 0.0)
    tree = TransformTree(max_age_s=2.0)
    tree.update('odom', 'base_link', (1.0, 0.0, 0.0), (0, 0, 0, 1), False, 10.0)
    tree.update('base_link', 'lidar', (0.0, 0.0, 1.8), (0, 0, 0, 1), True, 10.0)
    assert tree.lookup('odom', 'lidar', 11.0) is not None
    assert tree.lookup('odom', 'lidar', 12.5) is None  # /tf went quiet
    assert tree.lookup('base_link', 'lidar', 1000.0) is not None  # static stays
    with pytest.raises(TransformError, match='loop'):
        tree.update('lidar', 'odom', (0.0, 0.0, 0.0), (0, 0, 0, 1), True, 11.0)
    with pytest.raises(TransformError, match='two frame names'):
        tree.update('lidar', '/lidar', (0.0, 0.0, 0.0), (0, 0, 0, 1), True, 11.0)
    with pytest.raises(TransformError, match='not finite'):
        tree.update('base_link', 'camera', (math.inf, 0.0, 0.0), (0, 0, 0, 1), True, 11.0)
    assert 'camera' not in tree.frames()


def test_a_moving_edge_is_interpolated_at_the_stamp():
    tree = TransformTree(max_age_s=5.0)
    tree.update('base_link', 'lidar', (0.0, 0.0, 1.8), (0, 0, 0, 1), True, 0.0)
    # A pan mount turning from 0 to 90 degrees and sliding 2 m between stamps 100 and 101,
    # received out of order.
    tree.update('base_link', 'camera', (2.0, 0.0, 0.0), _quaternion(0, 0, math.pi / 2), False,
                0.1, stamp_s=101.0)
    tree.update('base_link', 'camera', (0.0, 0.0, 0.0), _quaternion(0, 0, 0), False, 0.2,
                stamp_s=100.0)

    def camera_in_base(stamp_s):
        rotation, translation = tree.lookup('base_link', 'camera', 0.3, stamp_s)
        return math.atan2(rotation[1, 0], rotation[0, 0]), translation

    yaw, translation = camera_in_base(100.25)
    assert yaw == pytest.approx(math.pi / 8, abs=1e-9)  # slerp: a quarter of the turn
    np.testing.assert_allclose(translation, (0.5, 0.0, 0.0), atol=1e-12)
    assert camera_in_base(99.0)[0] == pytest.approx(0.0)  # before the kept span: the first
    assert camera_in_base(102.0)[0] == pytest.approx(math.pi / 2)  # after it: the latest
    assert camera_in_base(None)[0] == pytest.approx(math.pi / 2)
    # Through the static LiDAR edge: a LiDAR point seen from the camera at the stamp.
    rotation, translation = tree.lookup('camera', 'lidar', 0.3, 100.5)
    quarter = rotation_from_rpy(0.0, 0.0, math.pi / 4)
    np.testing.assert_allclose(rotation @ np.zeros(3) + translation,
                               quarter.T @ (np.array([0.0, 0.0, 1.8]) - [1.0, 0.0, 0.0]),
                               atol=1e-12)
    # Samples older than max_age_s of stamps behind the newest are dropped.
    tree.update('base_link', 'camera', (4.0, 0.0, 0.0), (0, 0, 0, 1), False, 0.4, stamp_s=106.0)
    yaw, translation = camera_in_base(100.25)  # the stamp-100 sample is gone: 101 is first
    assert yaw == pytest.approx(math.pi / 2)
    np.testing.assert_allclose(translation, (2.0, 0.0, 0.0))
    np.testing.assert_allclose(camera_in_base(103.5)[1], (3.0, 0.0, 0.0), atol=1e-12)
