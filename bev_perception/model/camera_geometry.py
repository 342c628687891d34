"""Where model-frame points appear in a camera image: the calibration the fusion matches by.

A camera's calibration travels through the network as one flat vector per sample (``SIZE``
floats, built by ``camera_geometry``):

    [ R (9, row-major) | t (3) | fx/W, fy/H, cx/W, cy/H | k1, k2, p1, p2, k3 ]

R, t map model-frame points (x forward, y left, z up, metres) into the camera's optical frame
(x right, y down, z forward): p_cam = R p + t. The intrinsics are divided by the image width W
and height H, so the vector does not depend on the size the image is resized to before the
camera encoder, and the projection comes out in the normalised (u, v) in [0, 1] that the camera
tokens are encoded with. The distortion is the plumb-bob model of ROS ``CameraInfo`` (and
OpenCV, and A2D2's front camera); all zeros for a rectified image (KITTI's P2).
"""

from typing import Dict, Sequence, Tuple

import numpy as np
import torch

#: Floats per camera in the geometry vector.
SIZE = 21

#: Points closer than this in front of the camera (metres) count as not seen.
NEAR_M = 0.3

#: Model frame (x forward, y left, z up) -> optical frame (x right, y down, z forward): the
#: rotation of a camera at the model origin looking along +x (A2D2's front-center camera,
#: whose view frame is the model frame).
MODEL_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def camera_geometry(rotation: np.ndarray, translation: Sequence[float], k: np.ndarray,
                    distortion: Sequence[float], image_wh: Tuple[int, int]) -> np.ndarray:
    """Return the (SIZE,) float32 geometry vector of one camera.

    Args:
        rotation: (3, 3) model frame -> camera optical frame.
        translation: (3,) the model origin in the camera optical frame, metres.
        k: (3, 3) intrinsic matrix in pixels of the ``image_wh`` image.
        distortion: plumb-bob (k1, k2, p1, p2, k3); fewer values are zero-padded
            (ROS gives 5, a rectified camera 0).
        image_wh: (width, height) of the image ``k`` belongs to, pixels.
    """
    rotation = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    width, height = image_wh
    if not (width > 0 and height > 0 and k[0, 0] > 0 and k[1, 1] > 0):
        raise ValueError('camera geometry must be finite with a positive focal length and size')
    coefficients = np.zeros(5)
    distortion = np.asarray(distortion, dtype=np.float64).ravel()[:5]
    coefficients[:len(distortion)] = distortion
    vector = np.concatenate([
        rotation.ravel(), np.asarray(translation, dtype=np.float64).reshape(3),
        [k[0, 0] / width, k[1, 1] / height, k[0, 2] / width, k[1, 2] / height], coefficients])
    if not np.isfinite(vector).all():
        raise ValueError('camera geometry must be finite with a positive focal length and size')
    return vector.astype(np.float32)


def project(points: torch.Tensor, geometry: torch.Tensor
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project model-frame points into each sample's camera.

    Args:
        points: (..., 3) model-frame points, shared by the samples.
        geometry: (B, SIZE) geometry vectors.

    Returns:
        uv: (B, ..., 2) normalised image position (u right, v down; [0, 1] inside the image).
        depth: (B, ...) distance in front of the camera along its optical axis, metres.
        inside: (B, ...) bool, in front of the camera, inside the image, and where the
            distortion polynomial still grows with the radius (beyond, it folds back and the
            projection lies).
    """
    batch = geometry.shape[0]
    shape = points.shape[:-1]
    flat = points.reshape(1, -1, 3).to(geometry.dtype)  # (1, P, 3)
    rotation = geometry[:, :9].reshape(batch, 3, 3)
    translation = geometry[:, 9:12].reshape(batch, 1, 3)
    camera = flat @ rotation.transpose(1, 2) + translation  # (B, P, 3)
    depth = camera[..., 2]
    safe = torch.where(depth > NEAR_M, depth, torch.ones_like(depth))
    x, y = camera[..., 0] / safe, camera[..., 1] / safe  # (B, P) each
    fx, fy, cx, cy, k1, k2, p1, p2, k3 = (geometry[:, i:i + 1] for i in range(12, SIZE))
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    x_d = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    y_d = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    uv = torch.stack([fx * x_d + cx, fy * y_d + cy], -1)  # (B, P, 2)
    # d(r * radial(r)) / dr > 0: the radial mapping is still one-to-one.
    growing = 1.0 + r2 * (3.0 * k1 + r2 * (5.0 * k2 + r2 * 7.0 * k3)) > 0.0
    inside = ((depth > NEAR_M) & growing & (uv >= 0.0).all(-1) & (uv <= 1.0).all(-1))
    return (uv.reshape((batch,) + shape + (2,)), depth.reshape((batch,) + shape),
            inside.reshape((batch,) + shape))


def _checked(geometry: np.ndarray, dtype: type) -> np.ndarray:
    """Return ``geometry`` as a (SIZE,) array of ``dtype``; ValueError for another shape."""
    geometry = np.asarray(geometry, dtype=dtype)
    if geometry.shape != (SIZE,):
        raise ValueError(f'a geometry vector has {SIZE} values, got shape {geometry.shape}')
    return geometry


def mirror_left_right(geometry: np.ndarray) -> np.ndarray:
    """Return the geometry (SIZE,) of the same camera after mirroring the world and the image.

    Mirroring maps model points y -> -y and image columns u -> 1 - u. The camera then sees the
    mirrored point where it saw the original, mirrored, exactly: the pose flips the optical x
    axis on both sides (R' = Mo R M, t' = Mo t with M = diag(1, -1, 1), Mo = diag(-1, 1, 1)),
    the principal point moves to 1 - cx, and the tangential coefficient p2 (the one odd in x)
    changes sign.
    """
    geometry = _checked(geometry, np.float32)
    rotation = geometry[:9].reshape(3, 3).copy()
    rotation[:, 1] *= -1.0  # R M
    rotation[0, :] *= -1.0  # Mo R M
    mirrored = geometry.copy()
    mirrored[:9] = rotation.ravel()
    mirrored[9] = -geometry[9]
    mirrored[14] = 1.0 - geometry[14]  # cx / W
    mirrored[19] = -geometry[19]  # p2
    return mirrored


def cropped(geometry: np.ndarray, left: float, top: float, scale: float) -> np.ndarray:
    """Return the geometry (SIZE,) of a crop of the image, resized back to the image's size.

    The crop starts at (``left``, ``top``) (fractions of the width and height) and spans
    1 / ``scale`` of each, so the result is the same camera with a ``scale`` times longer focal
    length (a zoom): a point at normalised u lands at (u - left) * scale, i.e. fx/W and cx/W
    become (fx/W) * scale and (cx/W - left) * scale (rows likewise). The distortion acts on
    the normalised camera coordinates, before the intrinsics, and stays as it is.
    """
    if not scale > 0:
        raise ValueError(f'a crop needs a positive scale, got {scale}')
    result = _checked(geometry, np.float64).copy()
    result[12:14] *= scale  # fx / W, fy / H
    result[14:16] = (result[14:16] - (left, top)) * scale  # cx / W, cy / H
    return result.astype(np.float32)


def forward_camera(image_wh: Tuple[int, int], horizontal_fov_rad: float = 1.0) -> np.ndarray:
    """Return the geometry (SIZE,) of an undistorted camera at the model origin looking along +x.

    The principal point is the image centre and the pixels are square. For warm-up runs and
    examples; real cameras bring their own calibration.
    """
    width, height = image_wh
    focal = 0.5 * width / np.tan(0.5 * horizontal_fov_rad)
    k = np.array([[focal, 0.0, 0.5 * width], [0.0, focal, 0.5 * height], [0.0, 0.0, 1.0]])
    return camera_geometry(MODEL_TO_OPTICAL, (0.0, 0.0, 0.0), k, (), image_wh)


def moved(geometry: np.ndarray, rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """Return the geometry (SIZE,) of the same camera after the world moved by p' = R p + t.

    For a cloud frame mapped into the model frame by an extrinsic (R, t): a camera calibrated
    against the cloud frame sees model point p' where it saw R^T (p' - t).
    """
    geometry = _checked(geometry, np.float64)
    rotation = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    pose = geometry[:9].reshape(3, 3) @ rotation.T
    result = geometry.copy()
    result[:9] = pose.ravel()
    result[9:12] = geometry[9:12] - pose @ np.asarray(translation, dtype=np.float64)
    return result.astype(np.float32)


def describe(geometry: np.ndarray) -> Dict[str, float]:
    """Return a camera's geometry (SIZE,) in the terms people set up cameras by.

    Keys: ``horizontal_fov_deg`` (distortion aside), ``aspect`` (image width / height, for
    square pixels), ``x_m``, ``y_m``, ``z_m`` (the camera in the model frame), ``pitch_deg``
    (optical axis below the horizon: positive looks down), ``yaw_deg`` (optical axis left of
    +x) and ``k1``.
    """
    geometry = _checked(geometry, np.float64)
    rotation = geometry[:9].reshape(3, 3)  # model -> optical
    position = -rotation.T @ geometry[9:12]  # (3,) camera centre, model frame
    axis = rotation.T @ np.array([0.0, 0.0, 1.0])  # (3,) optical axis, model frame
    fx_w, fy_h = float(geometry[12]), float(geometry[13])
    return {
        'horizontal_fov_deg': float(np.degrees(2.0 * np.arctan(0.5 / fx_w))),
        'aspect': fy_h / fx_w,
        'x_m': float(position[0]), 'y_m': float(position[1]), 'z_m': float(position[2]),
        'pitch_deg': float(np.degrees(np.arcsin(np.clip(-axis[2], -1.0, 1.0)))),
        'yaw_deg': float(np.degrees(np.arctan2(axis[1], axis[0]))),
        'k1': float(geometry[16]),
    }
