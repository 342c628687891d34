"""One frame from cloud points and an image to boxes in the cloud frame, without ROS.

The node's worker and the offline bag evaluator both run a frame through ``FramePipeline``::

    points (N, 4) cloud frame, finite  --prepare-->  PreparedCloud (M, 4) model frame
        subsample to max_points (uniform stride), intensity gain, extrinsic p_m = R p_c + t
    PreparedCloud + RGB (H, W, 3) or None  --run-->  FrameOutput
        InferenceRuntime with the node's thresholds, top-K and NMS (per call)
        no points -> no boxes (the image still gives the semantic map)
        boxes back in the cloud frame, with their orientation quaternions

``FrameSettings`` is what a frame needs from the node's parameters and the weights, derived once
per parameter change; ``Extrinsic`` is the cloud-to-model-frame transform of the
``extrinsic_*`` parameters.
"""

from dataclasses import dataclass, replace
import math
from typing import Any, Callable, List, Optional, Sequence, Tuple

from bev_perception.calibration import (CameraIntrinsics, cloud_to_camera_from_pose,
                                        unfamiliar_camera)
from bev_perception.geometry import (quaternion_to_yaw, rotation_from_rpy,
                                     rotation_to_quaternion, wrap_angle, yaw_to_quaternion)
from bev_perception.inference import FrameResult, InferenceRuntime
from bev_perception.model.config import ModelConfig, NMSConfig
from bev_perception.node_params import check_against_model, NodeSettings
from bev_perception.weights import resolve_weights_path, WeightsError
import numpy as np

#: Scaled intensities above this mean the intensity_scale does not fit the driver.
MAX_PLAUSIBLE_SCALED_INTENSITY = 1.5


@dataclass(frozen=True)
class Extrinsic:
    """Rigid transform from the cloud frame into the model frame: p_model = R p_cloud + t."""

    rotation: np.ndarray  # (3, 3) float64
    translation: np.ndarray  # (3,) float64, metres

    @classmethod
    def from_parameters(cls, translation_m: Sequence[float] = (0.0, 0.0, 0.0),
                        rpy_rad: Sequence[float] = (0.0, 0.0, 0.0)) -> 'Extrinsic':
        """Build from ``extrinsic_translation_m`` and ``extrinsic_rpy_rad`` (Rz Ry Rx)."""
        return cls(rotation=rotation_from_rpy(*rpy_rad),
                   translation=np.array(translation_m, dtype=np.float64))

    @property
    def is_identity(self) -> bool:
        """Return True for the identity transform."""
        return bool(np.array_equal(self.rotation, np.eye(3)) and not self.translation.any())

    @property
    def keeps_up(self) -> bool:
        """Return True when the rotation is about z only (boxes stay upright in the cloud)."""
        return bool(abs(self.rotation[2, 2] - 1.0) < 1e-12)

    def points_to_model(self, points: np.ndarray) -> np.ndarray:
        """Map (N, >=3) points in place (x, y, z columns) and return them."""
        if not self.is_identity and len(points):
            xyz = points[:, :3].astype(np.float64)  # (N, 3)
            points[:, :3] = xyz @ self.rotation.T + self.translation
        return points

    def points_from_model(self, points: np.ndarray) -> np.ndarray:
        """Return (N, 3) float64 cloud-frame x, y, z of model-frame (N, >=3) points."""
        xyz = np.asarray(points, dtype=np.float64)[:, :3]  # (N, 3)
        return (xyz - self.translation) @ self.rotation  # R^T (p - t), row-wise

    def boxes_to_model(self, boxes: np.ndarray) -> np.ndarray:
        """Return (K, 7) float32 cloud-frame boxes mapped into the model frame.

        Centres go through ``R c + t``; the yaw turns by the heading of the rotated length
        axis (exact when R keeps z up, the heading of the tilted box otherwise).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)  # (K, 7)
        result = boxes.copy()
        if self.is_identity or not len(boxes):
            return result.astype(np.float32)
        result[:, :3] = boxes[:, :3] @ self.rotation.T + self.translation
        heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]),
                            np.zeros(len(boxes))], axis=1) @ self.rotation.T  # (K, 3)
        result[:, 6] = wrap_angle(np.arctan2(heading[:, 1], heading[:, 0]))
        return result.astype(np.float32)

    def boxes_to_cloud(self, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return model-frame boxes (K, 7) in the cloud frame and their orientations.

        Returns:
            (boxes (K, 7) float32 in the cloud frame, quaternions (K, 4) float64 x, y, z, w).
            The yaw column is exact when the rotation keeps z up; otherwise the quaternions are
            the full (tilted) box orientations and the yaw column their z-y-x Euler yaw.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)  # (K, 7)
        result = boxes.copy()
        if not self.is_identity:
            result[:, :3] = (boxes[:, :3] - self.translation) @ self.rotation  # R^T (c - t)
        if self.keeps_up:
            if not self.is_identity:
                yaw_offset = math.atan2(self.rotation[1, 0], self.rotation[0, 0])
                result[:, 6] = wrap_angle(boxes[:, 6] - yaw_offset)
            result = result.astype(np.float32)
            return result, yaw_to_quaternion(result[:, 6].astype(np.float64))
        cos_yaw, sin_yaw = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
        box_rotation = np.zeros((len(boxes), 3, 3))  # (K, 3, 3) Rz(yaw) in the model frame
        box_rotation[:, 0, 0], box_rotation[:, 0, 1] = cos_yaw, -sin_yaw
        box_rotation[:, 1, 0], box_rotation[:, 1, 1] = sin_yaw, cos_yaw
        box_rotation[:, 2, 2] = 1.0
        quaternions = rotation_to_quaternion(
            np.einsum('ji,kjl->kil', self.rotation, box_rotation))  # R^T Rz(yaw)
        result[:, 6] = quaternion_to_yaw(quaternions)
        return result.astype(np.float32), quaternions


@dataclass(frozen=True)
class FrameSettings:
    """What a frame needs, derived from NodeSettings and the weights' config (immutable)."""

    settings: NodeSettings
    score_thresholds: Tuple[float, ...]  # one per detection class
    max_detections: int
    nms: NMSConfig
    intensity_gain: float  # cloud intensity -> raw units the network expects
    extrinsic: Extrinsic

    @classmethod
    def build(cls, settings: NodeSettings, config: ModelConfig) -> 'FrameSettings':
        """Derive the per-frame settings."""
        model_nms = config.head.nms
        nms = NMSConfig(
            kind=model_nms.kind if settings.nms_kind == 'model' else settings.nms_kind,
            radius_m=tuple(r * settings.nms_radius_scale for r in model_nms.radius_m),
            iou_threshold=settings.nms_iou_threshold or model_nms.iou_threshold)
        gain = (settings.intensity_scale / config.point.intensity_scale
                if settings.intensity_scale > 0 else 1.0)
        return cls(
            settings=settings,
            score_thresholds=settings.class_score_thresholds(config.num_detection_classes),
            max_detections=settings.max_detections or config.head.max_objects,
            nms=nms, intensity_gain=gain,
            extrinsic=Extrinsic.from_parameters(settings.extrinsic_translation_m,
                                                settings.extrinsic_rpy_rad))


@dataclass(frozen=True)
class PreparedCloud:
    """A cloud ready for the network, and what preparing it changed."""

    points: np.ndarray  # (M, 4) float32 x, y, z (model frame), intensity (network units)
    num_subsampled: int  # points removed above max_points
    max_scaled_intensity: float  # largest intensity times the weights' scale; nan when empty

    @property
    def intensity_out_of_range(self) -> bool:
        """Return True when intensities exceed what the weights expect (wrong scale)."""
        return self.max_scaled_intensity > MAX_PLAUSIBLE_SCALED_INTENSITY


@dataclass(frozen=True)
class FrameOutput:
    """A frame's outputs as the node publishes them."""

    result: FrameResult  # the runtime's result (model-frame boxes, semantic ids, counts)
    boxes: np.ndarray  # (K, 7) float32 in the cloud frame
    quaternions: np.ndarray  # (K, 4) float64 x, y, z, w box orientations in the cloud frame
    # The frame had an image, but the weights fuse by calibration and none was known: it ran
    # LiDAR-only.
    image_uncalibrated: bool = False
    # How the fused image's camera lies outside the weights' training cameras (empty: inside,
    # or not fused by calibration; ``calibration.unfamiliar_camera``).
    unfamiliar_camera: Tuple[str, ...] = ()

    @property
    def scores(self) -> np.ndarray:
        """Return the (K,) float32 scores."""
        return self.result.scores

    @property
    def class_names(self) -> List[str]:
        """Return the K class names."""
        return self.result.class_names

    def published_boxes(self) -> np.ndarray:
        """Return (K, 7) float32 boxes as a subscriber reads them (yaw from the quaternion)."""
        boxes = self.boxes.copy()
        boxes[:, 6] = quaternion_to_yaw(self.quaternions)
        return boxes


class FramePipeline:
    """Runs frames through the network with the node's settings.

    Args:
        runtime: the loaded network.
        settings: the node's parameters.

    Raises:
        ValueError: settings that contradict the weights (classes, top-K).
    """

    def __init__(self, runtime: InferenceRuntime, settings: NodeSettings) -> None:
        self.runtime = runtime
        self.frame_settings = self._derive(settings)
        provenance = runtime.metadata.get('provenance')
        self._train_cameras = (provenance.get('train_cameras') or {}
                               if isinstance(provenance, dict) else {})
        self._checked_camera: Tuple[bytes, Tuple[str, ...]] = (b'', ())

    def unfamiliar_camera(self, camera_geometry: np.ndarray) -> Tuple[str, ...]:
        """Return how a camera lies outside the weights' training cameras (cached per camera)."""
        key = np.asarray(camera_geometry, dtype=np.float32).tobytes()
        if key != self._checked_camera[0]:
            notes = tuple(unfamiliar_camera(camera_geometry, self._train_cameras))
            self._checked_camera = (key, notes)
        return self._checked_camera[1]

    @property
    def settings(self) -> NodeSettings:
        """Return the node parameters in use."""
        return self.frame_settings.settings

    def configure(self, settings: NodeSettings) -> None:
        """Use new settings from the next frame on (ValueError: they contradict the weights)."""
        self.frame_settings = self._derive(settings)

    def _derive(self, settings: NodeSettings) -> FrameSettings:
        config = self.runtime.config
        errors = check_against_model(settings, config.detection_classes, config.head.max_objects)
        if errors:
            raise ValueError('; '.join(errors))
        return FrameSettings.build(settings, config)

    def prepare(self, points: np.ndarray,
                frame_settings: Optional[FrameSettings] = None) -> PreparedCloud:
        """Prepare finite cloud points (N, 4) x, y, z, intensity for the network.

        Clouds over ``max_points`` are subsampled with a uniform stride, intensities multiplied
        by the gain from ``intensity_scale`` and x, y, z mapped by the extrinsic into the model
        frame. Points (N, 3) without intensity get intensity 0, what the network saw for
        sensors without it in training (intensity dropout). ``points`` is never modified (a
        view of a message is fine).
        """
        frame_settings = frame_settings or self.frame_settings
        max_points = frame_settings.settings.max_points
        kept = (points[::math.ceil(len(points) / max_points)] if len(points) > max_points
                else points)
        prepared = np.empty((len(kept), 4), dtype=np.float32)  # (M, 4) own copy
        prepared[:, :kept.shape[1]] = kept
        if kept.shape[1] == 3:
            prepared[:, 3] = 0.0
        if frame_settings.intensity_gain != 1.0:
            prepared[:, 3] *= frame_settings.intensity_gain
        frame_settings.extrinsic.points_to_model(prepared)
        max_scaled = (float(prepared[:, 3].max()) * self.runtime.config.point.intensity_scale
                      if len(prepared) else math.nan)
        return PreparedCloud(points=prepared, num_subsampled=len(points) - len(prepared),
                             max_scaled_intensity=max_scaled)

    def places_images(self, camera: Optional[CameraIntrinsics]) -> bool:
        """Return whether images of ``camera`` get a camera geometry (worth a /tf lookup).

        True for weights that fuse by calibration once the camera's CameraInfo is known.
        """
        return camera is not None and self.runtime.needs_calibration

    def camera_geometry(self, camera: Optional[CameraIntrinsics], image_hw: Tuple[int, int],
                        frame_settings: Optional[FrameSettings] = None,
                        cloud_to_camera: Optional[Tuple[np.ndarray, np.ndarray]] = None
                        ) -> Optional[np.ndarray]:
        """Return an image's camera geometry (model frame) for weights that fuse by calibration.

        ``camera`` is the image's CameraInfo (None: none yet), placed by ``cloud_to_camera``
        ((R, t), p_camera_optical = R p_cloud + t, e.g. from ``/tf``) or else by the settings'
        ``camera_position_m`` / ``camera_rpy_rad`` in the cloud frame, and the extrinsic.
        None when the weights do not read a calibration, without ``camera``, or when the
        image's aspect ratio is not the camera_info's (another camera, or a crop): ``run``
        then runs such weights LiDAR-only.
        """
        if not self.places_images(camera):
            return None
        height, width = image_hw
        if abs(width * camera.height - height * camera.width) > 0.01 * width * camera.height:
            return None
        frame_settings = frame_settings or self.frame_settings
        settings, extrinsic = frame_settings.settings, frame_settings.extrinsic
        if cloud_to_camera is None:
            cloud_to_camera = cloud_to_camera_from_pose(settings.camera_position_m,
                                                        settings.camera_rpy_rad)
        return camera.geometry(cloud_to_camera, (extrinsic.rotation, extrinsic.translation))

    def run(self, cloud: PreparedCloud, rgb: Optional[np.ndarray],
            frame_settings: Optional[FrameSettings] = None,
            camera_geometry: Optional[np.ndarray] = None) -> FrameOutput:
        """Run the network on a prepared cloud and an RGB image (H, W, 3) uint8 or None.

        A cloud without points gives no boxes (no LiDAR evidence); the image still gives the
        semantic map. ``camera_geometry`` (``camera_geometry.SIZE``, model frame) is the image's
        calibration; weights that fuse by calibration run an image without one LiDAR-only
        (``FrameOutput.image_uncalibrated``), others ignore it.
        """
        frame_settings = frame_settings or self.frame_settings
        uncalibrated = (rgb is not None and camera_geometry is None
                        and self.runtime.needs_calibration)
        if uncalibrated:
            rgb = None
        result = self.runtime(cloud.points, rgb, score_thresholds=frame_settings.score_thresholds,
                              max_detections=frame_settings.max_detections,
                              nms=frame_settings.nms, camera_geometry=camera_geometry)
        if len(cloud.points) == 0:
            result = replace(result, boxes=np.zeros((0, 7), np.float32),
                             scores=np.zeros(0, np.float32), class_ids=np.zeros(0, np.int64),
                             class_names=[])
        boxes, quaternions = frame_settings.extrinsic.boxes_to_cloud(result.boxes)
        unfamiliar = (self.unfamiliar_camera(camera_geometry) if rgb is not None
                      and camera_geometry is not None and self.runtime.needs_calibration
                      else ())
        return FrameOutput(result=result, boxes=boxes, quaternions=quaternions,
                           image_uncalibrated=uncalibrated, unfamiliar_camera=unfamiliar)


class PipelineError(Exception):
    """The pipeline cannot be built; the message names the file or parameter and the problem."""


def load_pipeline(settings: NodeSettings, weights_path: str = '',
                  notify: Optional[Callable[[str], Any]] = None
                  ) -> Tuple[FramePipeline, str]:
    """Load the weights the node's settings name and build the frame pipeline.

    Args:
        settings: the node's parameters (weights_path, profile, device, precision, ...).
        weights_path: overrides ``settings.weights_path`` when not empty.
        notify: receives the runtime's fallback notices (default: the inference logger).

    Returns:
        (the pipeline, the weights file loaded).

    Raises:
        PipelineError: missing or unreadable weights, an unusable device, or settings that
            contradict the weights.
    """
    try:
        path = resolve_weights_path(weights_path or settings.weights_path, settings.profile)
        options = {} if notify is None else {'notify': notify}
        runtime = InferenceRuntime.from_weights(
            path, device=settings.device, precision=settings.precision,
            torch_compile=settings.torch_compile, cuda_graphs=settings.cuda_graphs, **options)
    except WeightsError as error:
        raise PipelineError(f'cannot load weights: {error}') from error
    except (RuntimeError, ValueError) as error:
        raise PipelineError(f'cannot start inference on {settings.device!r}: {error}') from error
    try:
        return FramePipeline(runtime, settings), path
    except ValueError as error:
        raise PipelineError(f'parameters contradict the weights {path}: {error}') from error


def resize_ids_nearest(ids: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Resize (H, W) class ids to size_hw by nearest neighbour; a 0 in size_hw keeps the size."""
    height, width = size_hw
    if height == 0 or width == 0 or (height, width) == ids.shape:
        return ids
    rows = ((np.arange(height) + 0.5) * ids.shape[0] / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * ids.shape[1] / width).astype(np.int64)
    rows, cols = np.minimum(rows, ids.shape[0] - 1), np.minimum(cols, ids.shape[1] - 1)
    if height <= ids.shape[0]:  # rows first: fewer pixels left to gather one by one
        return ids[rows][:, cols]
    # Growing: widen the source rows, then copy whole rows.
    return np.take(np.take(ids, cols, axis=1), rows, axis=0)
