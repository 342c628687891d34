"""Training augmentation that keeps LiDAR, boxes, camera image and semantic labels consistent.

The camera image is fixed to the LiDAR by the calibration, so only transforms that act on both
(or that cannot break their agreement) are used:

* **Horizontal flip** (``flip_prob``): LiDAR ``y -> -y``, box ``y -> -y`` and ``yaw -> -yaw``,
  image and semantic label mirrored left-right, and the camera geometry, when the sample has
  one, mirrored exactly (``camera_geometry.mirror_left_right``: the flipped sample is a real
  camera seeing a real mirrored world). For the calibration-blind fusion, which has no
  geometry to adjust, the flip is exact when the principal point sits at the image centre.
  A2D2's front-center camera has cx = 965.43 px for a 1920 px wide image (centre 959.5 px), so
  a mirrored point lands about 6 px (0.3 % of the width) away from where the real camera would
  see it; the lens distortion is radial about the principal point and shifts by the same
  amount. That approximation is accepted there: the blind fusion relates BEV cells and camera
  tokens through learned attention, and the shift is well below one camera token (16 or 32 px
  at the network input). A flipped frame also turns
  right-hand traffic into left-hand traffic, which is harmless for detection and segmentation.
* **Point dropout / jitter / intensity scale**: drop a random fraction of the points, add a small
  Gaussian to x, y, z (a few centimetres, below the sensor's own range noise), scale the raw
  reflectance and, with ``intensity_dropout_prob``, zero it for the whole frame (sensors differ
  in how, and whether, they report intensity: the network must not depend on one calibration);
  none of these moves anything the image sees.
* **Recolouring by category** (``recolour_prob``, ``recolour_strength``): every semantic
  category in the label image gets its own brightness gain, hue turn and saturation, so that
  no category keeps one colour. Synthetic surfaces come from a few albedos (road darker than
  pavement, facades in a few tints); real ones do not, and a network that learnt the albedos
  calls light asphalt pavement and autumn trees facades. The labels stay exact.
* **Photometric jitter** of the image (brightness, contrast, saturation, hue, white balance,
  gamma, grey, blur, noise): real cameras differ in all of them; geometry unchanged.
* **Global yaw rotation and scaling** (``rotation_rad``, ``scale_range``) of samples whose
  camera is calibrated (or not used): points and boxes turn about the model z axis and scale
  about the origin, and the camera geometry moves with them (``camera_geometry.moved`` for the
  turn; scaling the world scales the camera's translation and leaves every projection where it
  was), so the image still agrees exactly. Samples that keep an image without a calibration
  are left as they are: the calibration-blind fusion has nothing to adjust.
* **Zoom** (``zoom_prob``, ``zoom_range``): a calibrated sample's image and label are cropped
  to 1 / z of their width and height at a random place and resized back (bilinear, nearest),
  and the camera geometry follows exactly (``camera_geometry.cropped``: the same camera with a
  z times longer focal length), so the fusion still sees every cell where it is. Real cameras
  show the world at scales the generator's focal lengths do not cover, and a segmenter trained
  at one scale learns texture sizes rather than things.
* **Camera dropout** (``camera_dropout_prob``): the sample is marked camera-invalid, so the
  network runs it LiDAR-only and the semantic loss skips it.
* **Vertical shift of LiDAR-only samples** (``lidar_only_z_shift_m``): a camera-dropped sample
  moves its points and boxes up or down by a uniform amount in [-s, s] metres. The image is
  not used, so nothing can disagree; the LiDAR path learns the spread of road heights that
  mounting heights and extrinsic errors of real sensors give.
* **Mixed returns** (``mixed_returns_max``, ``mixed_returns_depth_m``): where a laser beam
  straddles a depth edge, real sensors report points between the edge and what lies behind it;
  people and poles in real clouds show them as a tail along the ray. A random fraction of the
  points gets such a second, weaker return a few decimetres behind it. Only LiDAR points are
  added, so the image still agrees. The shipped recipe adds them to up to 10 % of the points
  (see training/EXPERIMENTS.md).

Not used, because they would break the camera-LiDAR agreement with a fixed image: translation
of samples that keep their image, and copy-paste of objects.

All randomness comes from the ``numpy.random.Generator`` passed in, so a sample's augmentation
is a pure function of (seed, epoch, index).
"""

import dataclasses
import math
from typing import Optional, Tuple

from bev_perception.model.camera_geometry import cropped, mirror_left_right, moved
import numpy as np
from PIL import Image, ImageFilter


#: Mixed returns lie at least this far behind the point they come from (metres).
MIXED_RETURN_MIN_DEPTH_M = 0.05


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and magnitudes of the training augmentation (see the module docstring)."""

    flip_prob: float = 0.5
    camera_dropout_prob: float = 0.2
    point_dropout_max: float = 0.2  # drop a uniform random fraction in [0, max] of the points
    point_jitter_m: float = 0.01  # std of the Gaussian added to x, y, z, metres
    intensity_scale_range: Tuple[float, float] = (0.9, 1.1)
    intensity_dropout_prob: float = 0.0  # zero the whole frame's intensity (sensors without it)
    brightness: float = 0.2  # multiply by a factor in [1 - b, 1 + b]
    contrast: float = 0.2  # blend with the mean grey level, factor in [1 - c, 1 + c]
    saturation: float = 0.2  # blend with the grey image, factor in [1 - s, 1 + s]
    hue_rad: float = 0.0  # turn the chroma by an angle in [-h, h]
    white_balance: float = 0.0  # channel gains exp(N(0, wb))
    gamma: float = 0.0  # exponent exp(U(-g, g)) on the 0..1 image
    grey_prob: float = 0.0  # the image becomes grey
    blur_prob: float = 0.0  # Gaussian blur, sigma 0.3..1.2 pixels
    noise: float = 0.0  # std of the pixel noise in 8-bit levels, drawn in [0, noise]
    rotation_rad: float = 0.0  # global yaw in [-r, r] (calibrated or LiDAR-only samples)
    scale_range: Tuple[float, float] = (1.0, 1.0)  # global scale (the same samples)
    lidar_only_z_shift_m: float = 0.0  # camera-dropped samples move up/down by up to this
    # A fraction in [0, max] of the points gets a second, weaker return up to depth_m behind
    # it along its ray (the mixed returns real LiDARs give at depth edges; see the docstring).
    mixed_returns_max: float = 0.0
    mixed_returns_depth_m: float = 0.6
    # With recolour_prob, each labelled category gets a brightness gain exp(N(0, s)), a hue
    # turn in [-s, s] radians and a saturation factor exp(N(0, s)) (s = recolour_strength).
    recolour_prob: float = 0.0
    recolour_strength: float = 0.3
    # With zoom_prob, a calibrated image (and its label) is cropped to 1 / z of its size and
    # resized back, z uniform in zoom_range; the camera geometry follows.
    zoom_prob: float = 0.0
    zoom_range: Tuple[float, float] = (1.0, 1.5)

    def __post_init__(self) -> None:
        for name in ('flip_prob', 'camera_dropout_prob', 'point_dropout_max',
                     'intensity_dropout_prob', 'grey_prob', 'blur_prob', 'mixed_returns_max',
                     'recolour_prob', 'zoom_prob'):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'AugmentConfig.{name} must be in [0, 1], got {value}')
        for name in ('point_jitter_m', 'brightness', 'contrast', 'saturation', 'hue_rad',
                     'white_balance', 'gamma', 'noise', 'rotation_rad', 'lidar_only_z_shift_m',
                     'recolour_strength'):
            if getattr(self, name) < 0:
                raise ValueError(f'AugmentConfig.{name} must be >= 0')
        if self.mixed_returns_depth_m <= MIXED_RETURN_MIN_DEPTH_M:
            raise ValueError(f'AugmentConfig.mixed_returns_depth_m must exceed '
                             f'{MIXED_RETURN_MIN_DEPTH_M} m')
        low, high = self.intensity_scale_range
        if not 0 < low <= high:
            raise ValueError('AugmentConfig.intensity_scale_range must be 0 < low <= high')
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError('AugmentConfig.scale_range must be 0 < low <= high')
        low, high = self.zoom_range
        if not 1 <= low <= high:
            raise ValueError('AugmentConfig.zoom_range must be 1 <= low <= high')

    @classmethod
    def none(cls) -> 'AugmentConfig':
        """Return a config that changes nothing (evaluation, tests)."""
        return cls(flip_prob=0.0, camera_dropout_prob=0.0, point_dropout_max=0.0,
                   point_jitter_m=0.0, intensity_scale_range=(1.0, 1.0), brightness=0.0,
                   contrast=0.0, saturation=0.0)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One frame as numpy arrays, in the model frame.

    Attributes:
        points: (N, 4) float32 x, y, z (metres), raw reflectance.
        boxes: (K, 7) float32 x, y, z, length, width, height, yaw (radians, (-pi, pi]).
        labels: (K,) int64 detection class ids.
        image: (H, W, 3) uint8 RGB or None.
        semantic: (H, W) uint8 category ids (255 = ignore) or None.
        camera_valid: whether the network may use the image.
        camera_geometry: (camera_geometry.SIZE,) calibration of the image, or None.
    """

    points: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image: Optional[np.ndarray]
    semantic: Optional[np.ndarray]
    camera_valid: bool
    camera_geometry: Optional[np.ndarray] = None


def wrap_yaw(yaw: np.ndarray) -> np.ndarray:
    """Map angles (radians) into (-pi, pi]."""
    wrapped = np.remainder(yaw + math.pi, 2.0 * math.pi) - math.pi  # [-pi, pi)
    return np.where(wrapped <= -math.pi, wrapped + 2.0 * math.pi, wrapped).astype(yaw.dtype)


def flip_left_right(sample: Sample) -> Sample:
    """Mirror a sample about the model-frame x-z plane (y -> -y), image and label left-right."""
    points = sample.points.copy()
    points[:, 1] = -points[:, 1]
    boxes = sample.boxes.copy()
    boxes[:, 1] = -boxes[:, 1]
    boxes[:, 6] = wrap_yaw(-boxes[:, 6])
    image = None if sample.image is None else np.ascontiguousarray(sample.image[:, ::-1])
    semantic = (None if sample.semantic is None
                else np.ascontiguousarray(sample.semantic[:, ::-1]))
    geometry = (None if sample.camera_geometry is None
                else mirror_left_right(sample.camera_geometry))
    return dataclasses.replace(sample, points=points, boxes=boxes, image=image,
                               semantic=semantic, camera_geometry=geometry)


def jitter_points(points: np.ndarray, config: AugmentConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """Drop a random fraction of points, jitter x, y, z, scale (or zero) the reflectance."""
    keep_prob = 1.0 - rng.uniform(0.0, config.point_dropout_max)
    keep = rng.random(len(points)) < keep_prob
    points = points[keep].copy()
    if config.point_jitter_m > 0:
        noise = rng.normal(0.0, config.point_jitter_m, size=(len(points), 3))
        points[:, :3] += noise.astype(np.float32)
    low, high = config.intensity_scale_range
    points[:, 3] *= np.float32(rng.uniform(low, high))
    if rng.random() < config.intensity_dropout_prob:
        points[:, 3] = 0.0
    return points


def add_mixed_returns(points: np.ndarray, config: AugmentConfig,
                      rng: np.random.Generator) -> np.ndarray:
    """Return (N + M, 4) points: the input and M mixed returns behind a random subset of them.

    Each chosen point gets a copy moved 5 cm to ``mixed_returns_depth_m`` further along its
    ray from the model origin (where the LiDAR sits, near enough beyond a few metres) with
    20-100 % of its reflectance, as a beam split between an edge and what lies behind it gives.
    """
    count = int(round(rng.uniform(0.0, config.mixed_returns_max) * len(points)))
    if count == 0:
        return points
    extra = points[rng.choice(len(points), count, replace=False)]  # (M, 4) copies
    distance = np.linalg.norm(extra[:, :3], axis=1, keepdims=True)  # (M, 1)
    step = rng.uniform(MIXED_RETURN_MIN_DEPTH_M, config.mixed_returns_depth_m, (count, 1))
    extra[:, :3] += extra[:, :3] / np.maximum(distance, 1e-3) * step.astype(np.float32)
    extra[:, 3] *= rng.uniform(0.2, 1.0, count).astype(np.float32)
    return np.concatenate([points, extra])


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _split_luma(rgb: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Return the grey level (...) and the chroma (..., 3) of float RGB (..., 3)."""
    grey = rgb @ _LUMA
    return grey, rgb - grey[..., None]  # chroma: zero mean over the luma weights


def _turn_hue(chroma: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Turn chroma (..., 3) about the grey axis by ``angle`` (scalar or (...,)) radians."""
    axis = np.full(3, 1.0 / math.sqrt(3.0), dtype=np.float32)  # Rodrigues about (1, 1, 1)
    cos = np.asarray(np.cos(angle), dtype=chroma.dtype)[..., None]
    sin = np.asarray(np.sin(angle), dtype=chroma.dtype)[..., None]
    turned = (chroma * cos + np.cross(axis, chroma) * sin
              + axis * (chroma @ axis)[..., None] * (1.0 - cos))
    return turned - (turned @ _LUMA)[..., None]  # keep the luma


def recolour_categories(image: np.ndarray, semantic: np.ndarray, strength: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Give every category of ``semantic`` (H, W) its own look in ``image`` (H, W, 3) uint8.

    Per category id (the ignore id included): brightness gain exp(N(0, strength)), hue turn
    U(-strength, strength) radians, saturation factor exp(N(0, strength)).
    """
    categories = 256
    gain = np.exp(rng.normal(0.0, strength, categories)).astype(np.float32)
    hue = rng.uniform(-strength, strength, categories).astype(np.float32)
    saturation = np.exp(rng.normal(0.0, strength, categories)).astype(np.float32)
    grey, chroma = _split_luma(image.astype(np.float32))
    ids = semantic.astype(np.intp)
    chroma = _turn_hue(chroma, hue[ids]) * saturation[ids][..., None]
    rgb = (grey[..., None] + chroma) * gain[ids][..., None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def jitter_photometric(image: np.ndarray, config: AugmentConfig,
                       rng: np.random.Generator) -> np.ndarray:
    """Randomly change the look of an (H, W, 3) uint8 image (see ``AugmentConfig``)."""
    brightness = rng.uniform(1.0 - config.brightness, 1.0 + config.brightness)
    contrast = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
    saturation = rng.uniform(1.0 - config.saturation, 1.0 + config.saturation)
    hue = rng.uniform(-config.hue_rad, config.hue_rad)
    gains = np.exp(rng.normal(0.0, config.white_balance, 3)).astype(np.float32)
    gamma = math.exp(rng.uniform(-config.gamma, config.gamma))
    grey_out = rng.random() < config.grey_prob
    blur = rng.uniform(0.3, 1.2) if rng.random() < config.blur_prob else 0.0
    noise = rng.uniform(0.0, config.noise)
    rgb = image.astype(np.float32) * (brightness * gains)
    grey, chroma = _split_luma(rgb)  # (H, W), (H, W, 3)
    if hue:
        chroma = _turn_hue(chroma, hue)
    rgb = grey[..., None] + chroma * (0.0 if grey_out else saturation)
    rgb = grey.mean() + (rgb - grey.mean()) * contrast
    if gamma != 1.0:
        rgb = 255.0 * (np.clip(rgb, 0.0, 255.0) / 255.0) ** np.float32(gamma)
    if noise:
        rgb += rng.normal(0.0, noise, rgb.shape).astype(np.float32)
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if blur:
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(blur)))
    return out


def zoom_camera(sample: Sample, zoom: float, left: float, top: float) -> Sample:
    """Crop the image and label to 1 / ``zoom`` of their size and resize them back.

    The crop starts at (``left``, ``top``), fractions of the width and height in
    [0, 1 - 1 / zoom]; the camera geometry becomes the zoomed camera's (``cropped``). The image
    resizes bilinearly, the label by nearest neighbour (ids stay ids).
    """
    if sample.image is None or sample.camera_geometry is None:
        raise ValueError('a zoom needs an image and its camera geometry')
    height, width = sample.image.shape[:2]
    box = (left * width, top * height, (left + 1.0 / zoom) * width, (top + 1.0 / zoom) * height)
    image = np.asarray(Image.fromarray(sample.image).resize(
        (width, height), Image.Resampling.BILINEAR, box=box))
    semantic = sample.semantic
    if semantic is not None:
        semantic = np.asarray(Image.fromarray(semantic).resize(
            (width, height), Image.Resampling.NEAREST, box=box))
    geometry = cropped(sample.camera_geometry, left, top, zoom)
    return dataclasses.replace(sample, image=image, semantic=semantic, camera_geometry=geometry)


def rotate_scale(sample: Sample, yaw: float, scale: float) -> Sample:
    """Turn a sample by ``yaw`` about the model z axis and scale it about the origin.

    Points and boxes move; the camera geometry follows (see the module docstring), so the
    image and the label stay valid. The sample must have a geometry or no usable image.
    """
    if sample.camera_valid and sample.image is not None and sample.camera_geometry is None:
        raise ValueError('an image without camera geometry cannot follow a rotation')
    c, s = math.cos(yaw), math.sin(yaw)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    points = sample.points.copy()
    points[:, :3] = (points[:, :3] @ rotation.T.astype(np.float32)) * np.float32(scale)
    boxes = sample.boxes.copy()
    boxes[:, :3] = (boxes[:, :3] @ rotation.T.astype(np.float32)) * np.float32(scale)
    boxes[:, 3:6] *= np.float32(scale)
    boxes[:, 6] = wrap_yaw(boxes[:, 6] + np.float32(yaw))
    geometry = sample.camera_geometry
    if geometry is not None:
        geometry = moved(geometry, rotation, (0.0, 0.0, 0.0))
        geometry[9:12] *= np.float32(scale)
    return dataclasses.replace(sample, points=points, boxes=boxes, camera_geometry=geometry)


def augment_sample(sample: Sample, config: AugmentConfig, rng: np.random.Generator) -> Sample:
    """Apply the consistent augmentations of ``config`` to one sample (see the module docstring).

    The random draws happen in a fixed order regardless of which steps are enabled, so changing
    one probability does not reshuffle the others.
    """
    do_flip = rng.random() < config.flip_prob
    drop_camera = rng.random() < config.camera_dropout_prob
    point_rng, image_rng = rng.spawn(2)
    (shift_rng,) = rng.spawn(1)  # drawn after the others: their streams stay as they were
    (pose_rng,) = rng.spawn(1)  # likewise
    (mixed_rng,) = rng.spawn(1)  # likewise
    (recolour_rng,) = rng.spawn(1)  # likewise
    (zoom_rng,) = rng.spawn(1)  # likewise
    if do_flip:
        sample = flip_left_right(sample)
    image = sample.image
    if image is not None and not drop_camera:
        if sample.semantic is not None and recolour_rng.random() < config.recolour_prob:
            image = recolour_categories(image, sample.semantic, config.recolour_strength,
                                        recolour_rng)
        image = jitter_photometric(image, config, image_rng)
    camera_valid = sample.camera_valid and not drop_camera
    zoom = zoom_rng.uniform(*config.zoom_range)
    left, top = zoom_rng.uniform(0.0, 1.0 - 1.0 / zoom, 2)
    if (camera_valid and image is not None and sample.camera_geometry is not None
            and zoom_rng.random() < config.zoom_prob):
        sample = zoom_camera(dataclasses.replace(sample, image=image), zoom, left, top)
        image = sample.image
    points, boxes = jitter_points(sample.points, config, point_rng), sample.boxes
    if config.mixed_returns_max:
        points = add_mixed_returns(points, config, mixed_rng)
    shift = shift_rng.uniform(-config.lidar_only_z_shift_m, config.lidar_only_z_shift_m)
    if not camera_valid and shift:
        points[:, 2] += np.float32(shift)  # jitter_points returned a copy
        boxes = boxes.copy()
        boxes[:, 2] += np.float32(shift)
    sample = dataclasses.replace(sample, points=points, boxes=boxes, image=image,
                                 camera_valid=camera_valid)
    yaw = pose_rng.uniform(-config.rotation_rad, config.rotation_rad)
    scale = pose_rng.uniform(*config.scale_range)
    if (yaw or scale != 1.0) and (sample.camera_geometry is not None or not camera_valid
                                  or sample.image is None):
        sample = rotate_scale(sample, yaw, scale)
    return sample
