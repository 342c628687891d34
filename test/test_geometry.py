"""Tests of bev_perception.geometry: rotations, quaternions, yaw and box outlines."""

import math

from bev_perception.geometry import (box_outline_xy, in_footprints, quaternion_to_yaw,
                                     rotation_from_quaternion, rotation_from_rpy,
                                     rotation_to_quaternion, wrap_angle, yaw_to_quaternion)
import numpy as np
import pytest


def test_rotation_quaternion_round_trip_for_every_branch():
    rng = np.random.default_rng(3)
    angles = np.concatenate([rng.uniform(-3.1, 3.1, (50, 3)),
                             [[0, 0, math.pi], [math.pi, 0, 0], [0, math.pi, 0]]])
    for roll, pitch, yaw in angles:
        rotation = rotation_from_rpy(roll, pitch, yaw)
        x, y, z, w = rotation_to_quaternion(rotation)
        rebuilt = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        np.testing.assert_allclose(rebuilt, rotation, atol=1e-9)
        assert w >= 0


def test_yaw_quaternion_round_trip_including_near_pi():
    eps = 1e-6
    yaws = np.array([0.0, 0.3, -2.0, np.pi - eps, -np.pi + eps, np.pi, 3.0, -3.1])
    quaternions = yaw_to_quaternion(yaws)
    assert quaternions.shape == (8, 4)
    np.testing.assert_allclose(np.linalg.norm(quaternions, axis=1), 1.0)
    np.testing.assert_array_equal(quaternions[:, :2], 0.0)  # rotation about z only
    np.testing.assert_allclose(quaternion_to_yaw(quaternions), yaws, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_yaw(-quaternions), yaws, atol=1e-12)  # q ~ -q
    assert quaternion_to_yaw(yaw_to_quaternion(-np.pi)) == pytest.approx(np.pi)  # (-pi, pi]
    assert quaternion_to_yaw(yaw_to_quaternion(np.pi)) == pytest.approx(np.pi)
    assert quaternion_to_yaw([0.0, 0.0, np.sin(0.25), np.cos(0.25)]) == pytest.approx(0.5)


def test_wrap_angle_keeps_pi_and_wraps_minus_pi():
    np.testing.assert_allclose(wrap_angle([0.5, 2 * math.pi + 0.5, -math.pi, math.pi]),
                               [0.5, 0.5, math.pi, math.pi], atol=1e-12)


def test_box_outline_is_closed_and_turns_with_the_yaw():
    outline = box_outline_xy([1.0, 2.0, 0.0, 4.0, 2.0, 1.5, math.pi / 2])
    assert outline.shape == (5, 2)
    np.testing.assert_allclose(outline[0], outline[-1])
    np.testing.assert_allclose(outline[0], [1.0 - 1.0, 2.0 + 2.0], atol=1e-12)  # front-left
    assert outline[:, 0].max() - outline[:, 0].min() == pytest.approx(2.0)
    assert outline[:, 1].max() - outline[:, 1].min() == pytest.approx(4.0)


def test_footprints_turn_with_the_yaw_and_grow_by_the_margin():
    boxes = np.array([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, math.pi / 2],  # long along y
                      [-5.0, -5.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    xy = np.array([[10.0, 1.8], [11.8, 0.0], [10.9, 0.0], [-5.0, -5.0], [0.0, 0.0]])
    np.testing.assert_array_equal(in_footprints(xy, boxes), [True, False, True, True, False])
    np.testing.assert_array_equal(in_footprints(xy, boxes, margin_m=1.0),
                                  [True, True, True, True, False])
    assert in_footprints(xy, np.zeros((0, 7))).tolist() == [False] * 5
    assert in_footprints(np.zeros((0, 2)), boxes).shape == (0,)


def test_quaternions_give_the_rotations_about_their_axes():
    for angle in (0.3, -1.2, math.pi):
        half_cos, half_sin = math.cos(angle / 2), math.sin(angle / 2)
        np.testing.assert_allclose(rotation_from_quaternion(half_sin, 0.0, 0.0, half_cos),
                                   rotation_from_rpy(angle, 0.0, 0.0), atol=1e-12)
        np.testing.assert_allclose(rotation_from_quaternion(0.0, half_sin, 0.0, half_cos),
                                   rotation_from_rpy(0.0, angle, 0.0), atol=1e-12)
        np.testing.assert_allclose(rotation_from_quaternion(0.0, 0.0, half_sin, half_cos),
                                   rotation_from_rpy(0.0, 0.0, angle), atol=1e-12)
    rotation = rotation_from_rpy(1.2, 0.4, -2.0)
    np.testing.assert_allclose(rotation_from_quaternion(*rotation_to_quaternion(rotation)),
                               rotation, atol=1e-12)
    with pytest.raises(ValueError, match='unit quaternion'):
        rotation_from_quaternion(0.0, 0.0, 0.0, 2.0)
    with pytest.raises(ValueError, match='unit quaternion'):
        rotation_from_quaternion(math.nan, 0.0, 0.0, 1.0)
