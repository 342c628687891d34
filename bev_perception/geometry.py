"""Rotations, quaternions and box outlines, in numpy (no ROS, no torch).

Conventions (REP 103): right-handed frames, angles in radians, quaternions as (x, y, z, w) with
w >= 0, a box as (7,) x, y, z (centre), length, width, height, yaw about +z.
"""

import math
from typing import Sequence

import numpy as np

#: BEV corner signs of a box (5, 2), closed: front-left, front-right, rear-right, rear-left.
_CORNER_SIGNS = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1], [1, 1]], dtype=np.float64)


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Return R = Rz(yaw) Ry(pitch) Rx(roll) (3, 3) float64."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch),
                              math.sin(pitch), math.cos(yaw), math.sin(yaw))
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Return the unit quaternions (..., 4) x, y, z, w (w >= 0) of rotations (..., 3, 3)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    candidates = np.stack([  # four numerically stable branches, (..., 4, 4) as (branch, xyzw)
        np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                  r[..., 1, 0] - r[..., 0, 1], 1.0 + trace], -1),
        np.stack([1.0 + r[..., 0, 0] - r[..., 1, 1] - r[..., 2, 2],
                  r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0],
                  r[..., 2, 1] - r[..., 1, 2]], -1),
        np.stack([r[..., 0, 1] + r[..., 1, 0],
                  1.0 - r[..., 0, 0] + r[..., 1, 1] - r[..., 2, 2],
                  r[..., 1, 2] + r[..., 2, 1], r[..., 0, 2] - r[..., 2, 0]], -1),
        np.stack([r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1],
                  1.0 - r[..., 0, 0] - r[..., 1, 1] + r[..., 2, 2],
                  r[..., 1, 0] - r[..., 0, 1]], -1),
    ], -2)
    diagonal = np.stack([trace, r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]], -1)
    best = np.argmax(diagonal, axis=-1)[..., None, None]
    quaternion = np.take_along_axis(candidates, np.broadcast_to(
        best, best.shape[:-2] + (1, 4)), axis=-2)[..., 0, :]
    quaternion /= np.linalg.norm(quaternion, axis=-1, keepdims=True)
    return np.where(quaternion[..., 3:] < 0, -quaternion, quaternion)


def rotation_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Return the (3, 3) rotation of a unit quaternion; ValueError unless it is one (1e-3)."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(q).all() or abs(norm - 1.0) > 1e-3:
        raise ValueError(f'rotation quaternion {q.tolist()} is not a unit quaternion')
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def yaw_to_quaternion(yaw) -> np.ndarray:
    """Return the quaternion(s) (..., 4) as x, y, z, w of a rotation by ``yaw`` rad about +z."""
    half = 0.5 * np.asarray(yaw, dtype=np.float64)
    zeros = np.zeros_like(half)
    return np.stack([zeros, zeros, np.sin(half), np.cos(half)], axis=-1)  # (..., 4)


def quaternion_to_yaw(quaternion) -> np.ndarray:
    """Return the yaw (rad about +z, in (-pi, pi]) of quaternion(s) (..., 4) given as x, y, z, w.

    For rotations that are not pure yaw this is the z angle of the z-y-x Euler decomposition.
    """
    q = np.asarray(quaternion, dtype=np.float64)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    yaw = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return np.where(yaw <= -np.pi, yaw + 2.0 * np.pi, yaw)


def wrap_angle(angle) -> np.ndarray:
    """Return angles wrapped into (-pi, pi]."""
    wrapped = np.arctan2(np.sin(angle), np.cos(angle))
    return np.where(wrapped <= -np.pi, np.pi, wrapped)


def box_outline_xy(box: Sequence[float]) -> np.ndarray:
    """Return the closed BEV outline (5, 2) x, y of a box (>= 7 values)."""
    x, y, _, length, width, _, yaw = (float(v) for v in box[:7])
    local = _CORNER_SIGNS * np.array([0.5 * length, 0.5 * width])  # (5, 2)
    cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
    rotation = np.array([[cos_yaw, -sin_yaw], [sin_yaw, cos_yaw]])
    return local @ rotation.T + np.array([x, y])


def in_footprints(xy: np.ndarray, boxes: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
    """Return (P,) bool: points (P, 2) x, y inside the BEV footprint of any box (K, >= 7).

    Each footprint is grown by ``margin_m`` on every side.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    offset = xy[:, None, :] - boxes[None, :, :2]  # (P, K, 2)
    cos_yaw, sin_yaw = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])  # (K,)
    along = offset[..., 0] * cos_yaw + offset[..., 1] * sin_yaw  # (P, K)
    across = -offset[..., 0] * sin_yaw + offset[..., 1] * cos_yaw
    inside = ((np.abs(along) <= 0.5 * boxes[:, 3] + margin_m)
              & (np.abs(across) <= 0.5 * boxes[:, 4] + margin_m))  # (P, K)
    return inside.any(axis=1)
