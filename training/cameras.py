"""Cameras and image appearance of the synthetic world, randomised per scene.

Camera (``CameraSetup``, drawn by ``draw_camera``): 30 % of the scenes keep A2D2's
front-center camera, whose view frame is the model frame (the exact A2D2 files). The others
get a camera of their own, so that the calibration-aware fusion sees many geometries:

- horizontal field of view 42-95 degrees (A2D2 front 55, Argoverse 2 front 47, nuScenes 64,
  KITTI 81), square pixels, principal point off-centre by a few percent;
- aspect ratio (width / height) 1.33, 1.6, 1.78, 2.0 or 3.3 (KITTI's 1242 x 375) with a little
  spread; the image keeps the recipe's width;
- plumb-bob radial distortion k1 (none for 45 %, rectified images), scaled with the focal
  length so that the fold-over radius stays outside the image;
- mounting relative to the model origin: 1.5 m behind to 0.3 m ahead, sideways sd 0.15 m,
  0.4 m lower to 0.3 m higher; pitch -2..+7 degrees (down), yaw sd 2.3, roll sd 0.6 degrees.

Such a scene writes its camera to ``<scene>/cams_lidars.json`` (the root's file with the
front-center entry replaced); points and boxes stay in the root's front-center view frame, so
``training.a2d2`` gives the frames the scene's calibration relative to the model frame.

Appearance (``Appearance``, drawn by ``draw_appearance``): per scene colour gains by semantic
label (foliage in summer, dark, autumn, dry or winter tones; facades from white to brick and
dark; lighter or darker asphalt) and per material, fine texture on foliage, a clear or overcast
sky with clouds, and the camera's processing: exposure, white balance, saturation, gamma,
blur, noise and JPEG compression. Label images are untouched (exact).

It is a training-time module: nothing under ``bev_perception/`` imports it.
"""

from dataclasses import dataclass
import io
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

from bev_perception.geometry import rotation_from_rpy
from bev_perception.model.camera_geometry import describe
import numpy as np
from PIL import Image, ImageFilter
from training.a2d2_calibration import (camera_calibration, CameraCalibration, CameraModel,
                                       cams_lidars_dict, Intrinsics, SensorView,
                                       view_to_vehicle)
from training.world import hash_noise

Vector3 = Tuple[float, float, float]

#: Probability that a scene keeps A2D2's front-center camera.
NOMINAL_CAMERA_PROBABILITY = 0.3
#: Aspect ratios (width / height) of the drawn cameras and their probabilities.
ASPECTS: Tuple[Tuple[float, float], ...] = ((1.33, 0.15), (1.6, 0.25), (1.78, 0.25),
                                            (2.0, 0.1), (3.3, 0.25))


@dataclass(frozen=True)
class CameraSetup:
    """One scene's camera; the default is A2D2's front-center camera (the model frame).

    ``intrinsics`` (fx / W, fy / H, cx / W, cy / H) of None means the front-center camera at
    the recipe's image size; the pose is the camera view frame (x forward, y left, z up) in the
    model frame.
    """

    intrinsics: Optional[Tuple[float, float, float, float]] = None
    aspect: float = 0.0  # width / height of the image (drawn cameras only)
    k1: float = 0.0  # radial distortion (drawn cameras only)
    position_m: Vector3 = (0.0, 0.0, 0.0)
    rpy_rad: Vector3 = (0.0, 0.0, 0.0)  # roll, pitch (positive: down), yaw

    @property
    def nominal(self) -> bool:
        """Whether this is the front-center camera of the root's ``cams_lidars.json``."""
        return self.intrinsics is None

    def image_size(self, nominal_size: Tuple[int, int]) -> Tuple[int, int]:
        """Return (width, height) of this camera's images for the recipe's ``nominal_size``."""
        if self.nominal:
            return tuple(nominal_size)
        return nominal_size[0], max(8, int(round(nominal_size[0] / self.aspect)))

    def camera_to_model(self) -> np.ndarray:
        """Return the (4, 4) transform camera view frame -> model frame."""
        transform = np.eye(4)
        transform[:3, :3] = rotation_from_rpy(*self.rpy_rad)
        transform[:3, 3] = self.position_m
        return transform


def draw_camera(rng: np.random.Generator) -> CameraSetup:
    """Draw a scene's camera (see the module docstring for the ranges)."""
    if rng.random() < NOMINAL_CAMERA_PROBABILITY:
        return CameraSetup()
    aspects, weights = zip(*ASPECTS)
    aspect = aspects[int(rng.choice(len(aspects), p=np.array(weights) / sum(weights)))]
    aspect *= float(np.exp(rng.normal(0.0, 0.03)))
    fx_w = 0.5 / math.tan(math.radians(float(rng.uniform(42.0, 95.0))) / 2.0)
    fy_h = fx_w * aspect * float(1.0 + rng.normal(0.0, 0.005))
    cx_w = 0.5 + float(rng.normal(0.0, 0.015))
    cy_h = 0.5 + float(rng.normal(0.0, 0.04))
    # k1 acts on normalised coordinates: scale with the focal length squared so that a wide
    # lens does not fold over inside its image (A2D2's front camera: -0.26 at fx / W 0.96).
    k1 = 0.0 if rng.random() < 0.45 else -float(rng.uniform(0.0, 0.3)) * (fx_w / 0.96) ** 2
    return CameraSetup(
        intrinsics=(fx_w, fy_h, cx_w, cy_h), aspect=aspect, k1=k1,
        position_m=(float(rng.uniform(-1.5, 0.3)), float(rng.normal(0.0, 0.15)),
                    float(rng.uniform(-0.4, 0.3))),
        rpy_rad=(float(rng.normal(0.0, 0.01)), float(rng.uniform(-0.035, 0.12)),
                 float(rng.normal(0.0, 0.04))))


def scene_camera_entry(setup: CameraSetup, nominal_size: Tuple[int, int]) -> Mapping:
    """Return the ``cameras.front_center`` object of ``cams_lidars.json`` for a drawn camera.

    Its view is the root's front-center view moved by the setup's pose (orthonormal axes).
    """
    if setup.nominal:
        raise ValueError("the nominal camera is the root file's; it has no scene entry")
    width, height = setup.image_size(nominal_size)
    fx_w, fy_h, cx_w, cy_h = setup.intrinsics
    nominal = camera_calibration('front_center')
    view = view_to_vehicle(nominal.view.to_json()) @ setup.camera_to_model()
    k = Intrinsics(fx_w * width, fy_h * height, cx_w * width - 0.5, cy_h * height - 0.5)
    calibration = CameraCalibration(
        view=SensorView(tuple(view[:3, 3]), tuple(view[:3, 0]), tuple(view[:3, 1])),
        alternative_view=None, cam_matrix=k, cam_matrix_original=k,
        distortion=(setup.k1, 0.0, 0.0, 0.0, 0.0), lens='Telecam',
        has_corrected_image_port=False, tstamp_delay_us=nominal.tstamp_delay_us,
        resolution=(width, height))
    return cams_lidars_dict((width, height), {'front_center': calibration}
                            )['cameras']['front_center']


def camera_model(setup: CameraSetup, nominal_size: Tuple[int, int]) -> CameraModel:
    """Return the camera model (intrinsics, distortion, size) of ``setup``."""
    if setup.nominal:
        return CameraModel.front_center(nominal_size)
    return CameraModel.from_json(scene_camera_entry(setup, nominal_size))


# ----------------------------------------------------------------------------- appearance

#: Colour gains of foliage and grass by season: summer, dark summer, autumn yellow, autumn
#: brown, dry, winter (against the generator's mid-green albedos).
FOLIAGE_GAINS = np.array([(1.0, 1.0, 1.0), (0.65, 0.75, 0.7), (1.9, 0.9, 0.75),
                          (1.5, 0.62, 0.85), (2.0, 1.1, 1.8), (1.25, 0.67, 1.5)])
#: Colour gains of facades and walls: as built, white, beige, brick, grey, dark.
FACADE_GAINS = np.array([(1.0, 1.0, 1.0), (1.45, 1.45, 1.45), (1.35, 1.2, 0.95),
                         (1.2, 0.7, 0.55), (0.85, 0.88, 0.92), (0.5, 0.5, 0.52)])
#: Linear albedos of dry grass: straw, pale, brown, green gone yellow (against the verge's
#: mid-green). A dry verge beside green trees is common in summer; the seasons of
#: ``FOLIAGE_GAINS`` tint grass and leaves alike.
DRY_GRASS = ((0.55, 0.45, 0.22), (0.62, 0.55, 0.38), (0.38, 0.28, 0.15), (0.42, 0.40, 0.18))
_FOLIAGE_LABELS = ('Nature object',)
#: Labels that take a scene's facade colour. World 5 tinted its guard rails, posts and
#: concrete blocks with it too (``WORLD5_FACADE_LABELS``); with ``SyntheticConfig.delineators``
#: they keep their own colours.
FACADE_LABELS = ('Buildings',)
WORLD5_FACADE_LABELS = ('Buildings', 'Sidebars', 'Road blocks')


@dataclass(frozen=True)
class Appearance:
    """How one scene's images look (all drawn per scene)."""

    label_gain: np.ndarray  # (labels, 3) albedo gain per semantic label name index
    material_gain: np.ndarray  # (materials, 3) albedo gain per material
    foliage_texture: float  # amplitude of the fine texture on foliage
    overcast: float  # 0 clear blue sky .. 1 closed grey cloud
    cloud_cover: float  # fraction of the sky with clouds
    sun_strength: float  # direct light against ambient (low when overcast)
    white_balance: np.ndarray  # (3,) channel gains
    saturation: float
    gamma: float
    blur_px: float  # Gaussian blur sigma, pixels
    noise: float  # std of the pixel noise in 8-bit levels
    jpeg_quality: int  # 0: no compression artefacts
    # (3,) linear albedo of grass verges and fields apart from the foliage's season (a dry
    # verge, ``draw_dry_verge``); None: the ground's verge colour under the foliage's gain.
    verge_albedo: Optional[np.ndarray] = None


def draw_dry_verge(rng: np.random.Generator) -> np.ndarray:
    """Return the (3,) linear albedo of a dry verge: a row of ``DRY_GRASS``, varied."""
    return np.asarray(DRY_GRASS[int(rng.integers(len(DRY_GRASS)))]) * np.exp(
        rng.normal(0.0, 0.08, 3))


def draw_appearance(rng: np.random.Generator, label_names: Tuple[str, ...],
                    materials: int, facade_labels: Tuple[str, ...] = WORLD5_FACADE_LABELS
                    ) -> Appearance:
    """Draw a scene's appearance for the label table ``label_names`` and its materials.

    ``facade_labels`` take the scene's facade colour (``FACADE_GAINS``).
    """
    label_gain = np.exp(rng.normal(0.0, 0.07, (len(label_names), 3)))
    foliage = FOLIAGE_GAINS[int(rng.integers(len(FOLIAGE_GAINS)))]
    facade = FACADE_GAINS[int(rng.integers(len(FACADE_GAINS)))]
    for index, name in enumerate(label_names):
        if name in _FOLIAGE_LABELS:
            label_gain[index] *= foliage
        elif name in facade_labels:
            label_gain[index] *= facade
        elif name in ('RD normal street', 'Parking area'):
            label_gain[index] = float(np.exp(rng.normal(0.0, 0.25)))  # grey asphalt
    overcast = float(rng.uniform(0.0, 1.0)) if rng.random() < 0.5 else 0.0
    return Appearance(
        label_gain=label_gain,
        material_gain=np.exp(rng.normal(0.0, 0.2, (materials, 1))
                             + rng.normal(0.0, 0.06, (materials, 3))),
        foliage_texture=float(rng.uniform(0.2, 0.7)),
        overcast=overcast, cloud_cover=float(rng.uniform(0.0, 0.9)),
        sun_strength=float(rng.uniform(0.45, 0.75)) * (1.0 - 0.8 * overcast),
        white_balance=np.exp(rng.normal(0.0, 0.06, 3)),
        saturation=float(rng.uniform(0.55, 1.3)), gamma=float(rng.uniform(0.75, 1.3)),
        blur_px=float(rng.uniform(0.0, 1.2)) if rng.random() < 0.6 else 0.0,
        noise=float(rng.uniform(1.0, 6.0)),
        jpeg_quality=int(rng.integers(30, 95)) if rng.random() < 0.6 else 0)


def smooth_noise(xy: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Return bilinear value noise in [-1, 1] of 2-D points (N, 2) on a ``cell`` lattice."""
    scaled = xy / cell
    base = np.floor(scaled)
    fraction = scaled - base
    fraction = fraction * fraction * (3.0 - 2.0 * fraction)  # smoothstep: no creases
    total = np.zeros(len(xy))
    for dx in (0, 1):
        for dy in (0, 1):
            corner = np.zeros((len(xy), 3))
            corner[:, 0], corner[:, 1] = base[:, 0] + dx, base[:, 1] + dy
            weight = ((fraction[:, 0] if dx else 1.0 - fraction[:, 0])
                      * (fraction[:, 1] if dy else 1.0 - fraction[:, 1]))
            total += weight * hash_noise(corner + 0.5, 1.0, seed)
    return total


def sky_colour(directions: np.ndarray, appearance: Appearance, seed: int) -> np.ndarray:
    """Return the sky's linear RGB (N, 3) seen along world ``directions`` (N, 3)."""
    up = np.clip(directions[:, 2], 0.0, 1.0)
    clear_horizon, clear_zenith = np.array((0.78, 0.84, 0.92)), np.array((0.32, 0.52, 0.85))
    grey = np.array((0.86, 0.87, 0.89))
    horizon = clear_horizon + (grey - clear_horizon) * appearance.overcast
    zenith = clear_zenith + (grey * 0.92 - clear_zenith) * appearance.overcast
    colour = horizon + (zenith - horizon) * np.clip(up * 3.0, 0.0, 1.0)[:, None]
    # Clouds on a plane 1 km up, seen along the ray: two octaves of value noise.
    plane = directions[:, :2] / np.maximum(directions[:, 2:3], 0.03) * 1000.0
    cloud = 0.65 * smooth_noise(plane, 900.0, seed) + 0.35 * smooth_noise(plane, 260.0, seed + 1)
    density = np.clip((cloud + 1.0) / 2.0 - (1.0 - appearance.cloud_cover), 0.0, 0.25) * 4.0
    cloud_rgb = np.array((0.93, 0.93, 0.95)) - 0.25 * appearance.overcast
    return colour + (cloud_rgb - colour) * density[:, None]


def finish_image(linear: np.ndarray, exposure: float, appearance: Appearance,
                 rng: np.random.Generator) -> np.ndarray:
    """Return the 8-bit image (H, W, 3) of a linear rendering (H, W, 3) through the camera.

    Exposure, white balance, saturation, gamma, blur, noise and (for some scenes) a JPEG round
    trip, in the order a camera applies them.
    """
    rgb = np.clip(linear * exposure * appearance.white_balance, 0.0, None)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    rgb = grey[..., None] + (rgb - grey[..., None]) * appearance.saturation
    rgb = np.clip(rgb, 0.0, 1.0) ** appearance.gamma * 255.0
    image = Image.fromarray(np.clip(rgb + 0.5, 0.0, 255.0).astype(np.uint8))
    if appearance.blur_px > 0.0:
        image = image.filter(ImageFilter.GaussianBlur(appearance.blur_px))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(
        0.0, appearance.noise, (image.height, image.width, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(noisy + 0.5, 0.0, 255.0).astype(np.uint8))
    if appearance.jpeg_quality:
        buffer = io.BytesIO()
        image.save(buffer, format='JPEG', quality=appearance.jpeg_quality)
        buffer.seek(0)
        image = Image.open(buffer).convert('RGB')
    return np.asarray(image, dtype=np.uint8)


def summarize(geometries: Sequence[np.ndarray]) -> Dict[str, object]:
    """Return the range of cameras a set of geometry vectors spans (for the weights' metadata).

    Args:
        geometries: (camera_geometry.SIZE,) vectors, one per scene.

    Returns:
        ``cameras`` (how many), ``distinct`` (how many differ) and, per quantity of
        ``camera_geometry.describe``, ``[min, median, max]`` over the cameras, rounded.
    """
    if not len(geometries):
        return {'cameras': 0, 'distinct': 0}
    vectors = np.stack([np.asarray(g, dtype=np.float32) for g in geometries])  # (S, SIZE)
    described = [describe(v) for v in vectors]
    summary: Dict[str, object] = {'cameras': len(vectors),
                                  'distinct': len(np.unique(vectors, axis=0))}
    for key in described[0]:
        values = np.array([d[key] for d in described])
        summary[key] = [round(float(v), 3) for v in np.percentile(values, [0, 50, 100])]
    return summary
