"""A camera's calibration as ROS gives it, turned into the network's camera geometry (no ROS).

``sensor_msgs/CameraInfo`` carries the image size, the intrinsic matrix K (row-major, 9
values), the distortion model and its coefficients D. Together with where the camera sits
relative to the cloud (the LiDAR-to-camera extrinsic: p_camera = R p_cloud + t in the camera's
optical frame, x right, y down, z forward, as ``/tf`` or KITTI's ``Tr_velo_to_cam`` give it)
and the node's cloud-to-model extrinsic, it gives the ``camera_geometry`` vector the
calibration-aware fusion reads.

``unfamiliar_camera`` compares a camera geometry with the range of cameras the weights were
trained with (their metadata's ``provenance.train_cameras``, written by
``training.make_weights``): fusion can match by geometry for any camera, but it has learned
from that range only, and a user should hear when a camera lies well outside it.

Distortion models: ``plumb_bob`` (k1, k2, p1, p2, k3), ``rational_polynomial`` when its
k4..k6 are zero (the same model), and no coefficients at all (a rectified image). Fisheye
(``equidistant``) and other models are refused with a message.
"""

from dataclasses import dataclass
import math
from typing import Any, List, Mapping, Sequence, Tuple

from bev_perception.geometry import rotation_from_rpy
from bev_perception.model.camera_geometry import (camera_geometry, describe, MODEL_TO_OPTICAL,
                                                  moved)
import numpy as np

#: Distortion models whose first five coefficients are plumb-bob's.
PLUMB_BOB_MODELS = ('plumb_bob', 'rational_polynomial', '')


#: Quantities of ``camera_geometry.describe`` checked against the training cameras: how far
#: beyond the trained [min, max] a camera may lie before it counts as unfamiliar (in the
#: quantity's unit).
TRAINED_RANGE_SLACK = {'horizontal_fov_deg': 5.0, 'aspect': 0.15, 'x_m': 0.5, 'y_m': 0.3,
                       'z_m': 0.3, 'pitch_deg': 3.0, 'yaw_deg': 5.0}


class CalibrationError(ValueError):
    """A calibration the network cannot use; the message says why."""


@dataclass(frozen=True, eq=False)
class CameraIntrinsics:
    """Image size, K and plumb-bob distortion of one camera.

    Attributes:
        width: image width in pixels.
        height: image height in pixels.
        k: (3, 3) float64 intrinsic matrix, pixels.
        distortion: (k1, k2, p1, p2, k3).
    """

    width: int
    height: int
    k: np.ndarray
    distortion: Tuple[float, float, float, float, float]

    @classmethod
    def from_camera_info(cls, width: int, height: int, k: Sequence[float],
                         distortion_model: str, d: Sequence[float]) -> 'CameraIntrinsics':
        """Check and convert the fields of a CameraInfo message.

        Raises:
            CalibrationError: a zero size or focal length, non-finite values, or a distortion
                model other than plumb-bob.
        """
        matrix = np.asarray(k, dtype=np.float64)
        if matrix.size != 9 or not np.isfinite(matrix).all():
            raise CalibrationError('camera_info K must hold 9 finite values')
        matrix = matrix.reshape(3, 3)
        if width <= 0 or height <= 0:
            raise CalibrationError(f'camera_info size {width}x{height} is empty (uncalibrated '
                                   'camera?)')
        if matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
            raise CalibrationError('camera_info K has no positive focal length (uncalibrated '
                                   'camera?)')
        coefficients = [float(value) for value in d]
        if not all(math.isfinite(value) for value in coefficients):
            raise CalibrationError('camera_info D holds non-finite values')
        model = distortion_model or ''
        if model not in PLUMB_BOB_MODELS:
            raise CalibrationError(f'camera_info distortion model {model!r} is not supported '
                                   '(plumb_bob, or a rectified image without D)')
        if any(coefficients[5:]):
            raise CalibrationError(f'camera_info {model} coefficients beyond k3 must be 0, got '
                                   f'{coefficients[5:]}')
        padded = (coefficients + [0.0] * 5)[:5]
        return cls(int(width), int(height), matrix, tuple(padded))

    def geometry(self, cloud_to_camera: Tuple[np.ndarray, Sequence[float]],
                 cloud_to_model: Tuple[np.ndarray, Sequence[float]]) -> np.ndarray:
        """Return the ``camera_geometry`` vector of this camera in the model frame.

        Args:
            cloud_to_camera: (R (3, 3), t (3,)) with p_camera_optical = R p_cloud + t.
            cloud_to_model: (R (3, 3), t (3,)) with p_model = R p_cloud + t (the node's
                ``extrinsic_*`` parameters).
        """
        rotation, translation = cloud_to_camera
        in_cloud = camera_geometry(rotation, translation, self.k, self.distortion,
                                   (self.width, self.height))
        model_rotation, model_translation = cloud_to_model
        return moved(in_cloud, model_rotation, model_translation)


def cloud_to_camera_from_pose(position_m: Sequence[float], rpy_rad: Sequence[float]
                              ) -> Tuple[np.ndarray, np.ndarray]:
    """Return (R, t), p_camera_optical = R p_cloud + t, of a camera posed in the cloud frame.

    The pose is the camera body's (x forward, y left, z up, as ROS ``camera_link`` frames and
    the node's ``camera_*`` parameters give it): position in the cloud frame and roll, pitch,
    yaw of R_body = Rz(yaw) Ry(pitch) Rx(roll); the optical axes follow from the body's.
    """
    body = rotation_from_rpy(*rpy_rad)  # body -> cloud
    rotation = MODEL_TO_OPTICAL @ body.T  # cloud -> optical
    return rotation, -rotation @ np.asarray(position_m, dtype=np.float64)


def unfamiliar_camera(geometry: np.ndarray, train_cameras: Mapping[str, Any]) -> List[str]:
    """Return how a camera lies outside the range of the training cameras (empty: inside).

    Args:
        geometry: (camera_geometry.SIZE,) the camera in the model frame.
        train_cameras: the weights' ``provenance.train_cameras`` (``[min, median, max]`` per
            quantity); weights without it (or quantities missing from it) check nothing.

    Returns:
        One phrase per quantity beyond its trained range by more than ``TRAINED_RANGE_SLACK``,
        e.g. ``'horizontal_fov_deg 120.00 (trained 42.16..94.98)'``.
    """
    notes = []
    described = describe(geometry)
    for key, slack in TRAINED_RANGE_SLACK.items():
        trained = train_cameras.get(key)
        if not (isinstance(trained, (list, tuple)) and len(trained) == 3):
            continue
        low, high = float(trained[0]), float(trained[2])
        value = described[key]
        if not low - slack <= value <= high + slack:
            notes.append(f'{key} {value:.2f} (trained {low:.2f}..{high:.2f})')
    return notes
