"""Reader for the KITTI 3D object layout, with boxes converted into the model frame.

Layout (the KITTI object devkit's ``training`` split; ``root`` is the folder that holds
``training/`` or the ``training`` folder itself)::

    velodyne/<id>.bin   float32 x, y, z, reflectance (0..1), N x 4, Velodyne frame
    calib/<id>.txt      'KEY: numbers' lines; P2 (3x4), R0_rect (3x3), Tr_velo_to_cam (3x4)
    label_2/<id>.txt    one object a line (below)
    image_2/<id>.png    left colour camera (camera 2), about 1242 x 375

Label line (15 fields; a 16th, the score of a result file, is ignored): type, truncated,
occluded, alpha, 2D box (left, top, right, bottom, pixels), height h, width w, length l
(metres), location x, y, z of the box's BOTTOM centre in the rectified camera frame (x right,
y down, z forward), rotation_y (about the camera's y axis, radians).

Frames:

* Velodyne (= the cloud frame): x forward, y left, z up, origin at the HDL-64E, 1.73 m
  above the road.
* Rectified camera 2: ``p_rect = R0_rect · Tr_velo_to_cam · p_velo`` (both padded to 4 x 4
  homogeneous matrices); the image pixel is ``P2 · p_rect`` divided by its third component.
  So ``p_velo = inv(R0_rect · Tr_velo_to_cam) · p_rect``.
* Model frame: ``p_model = R p_velo + t`` with the node's extrinsic (``extrinsic_rpy_rad``,
  ``extrinsic_translation_m``; ``SensorExtrinsic`` here holds those parameters and maps with
  the node's own ``bev_perception.pipeline.Extrinsic``). ``KITTI_EXTRINSIC`` is the one
  chosen for KITTI (see there).

Box conversion (model convention: (7,) x, y, z of the geometric centre, length, width,
height, yaw about +z):

* centre: the bottom centre raised by h/2 along the rectified camera's up axis,
  ``(x, y - h/2, z)`` in the rectified frame, then ``inv(R0_rect · Tr_velo_to_cam)``;
* size: length = l, width = w, height = h;
* yaw: the box's length axis in the rectified frame is ``(cos ry, 0, -sin ry)``; mapped by the
  rotation of ``inv(R0_rect · Tr_velo_to_cam)`` its heading in the Velodyne frame is
  ``-rotation_y - pi/2`` up to the calibration's small rotation (within 0.01 rad on the
  real-dev frames; the points of every labelled object confirm the convention, see
  test/training/test_kitti.py);
* then the extrinsic: centre ``R c + t``, yaw plus the extrinsic's rotation about z.

Classes (``KITTI_CLASS_MAP``, onto the model's detection classes, grouped as the A2D2
``DEFAULT_CLASS_MAP`` groups A2D2's): Car, Van -> car; Truck -> truck; Pedestrian,
Person_sitting -> pedestrian; Cyclist -> cyclist. Tram, Misc and DontCare are not evaluated.
Tram is ignored rather than called a truck: neither A2D2 nor the synthetic training data has
trams (A2D2's Bus is the nearest thing), so a tram is neither a miss nor, when detected as
a truck, a false positive.

Evaluation scope (``KittiFrame.gt_in_scope`` and ``KittiFrame.detection_in_scope``): KITTI
labels only objects inside camera 2's image, so ground truth and detections are both
restricted to the camera's field of view: a box whose centre (at mid height) lies behind the
camera or projects outside ``[0, image width)`` is not evaluated, nor one outside the model's
BEV grid (the caller's in-grid test). Detections are also out of scope when their centre
projects into a DontCare rectangle grown by what ``IGNORE_MARGIN_M`` spans at the
detection's depth (DontCare areas have no 3D box), or lies in the BEV footprint of a Tram or
Misc box grown by ``IGNORE_MARGIN_M`` on every side. An out-of-scope detection is ignored
(neither a true nor a false positive) unless it matches an evaluated ground-truth box, as
the KITTI devkit treats DontCare areas (``bev_perception.metrics``, ``pred_ignorable``): a
detection of a labelled car in front of a DontCare area, or with its centre just outside the
image, still counts.

Errors: a missing or malformed file raises ``CorruptFrameError`` (from ``training.a2d2``)
whose message starts with the file and says what is wrong. ``KittiDataset`` behaves like
``A2D2Dataset``: frames with a missing file are reported and skipped when indexed, and
``skipping()`` gives a DataLoader view that reports and skips corrupt frames.
"""

from dataclasses import dataclass
import logging
import math
import os
import types
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from bev_perception.geometry import in_footprints, wrap_angle
from bev_perception.model.camera_geometry import camera_geometry as geometry_vector, moved
from bev_perception.pipeline import Extrinsic
import numpy as np
from PIL import Image
from training.a2d2 import CorruptFrameError, PathLike, read_image, SkipReports

LOGGER = logging.getLogger(__name__)

#: Object types of KITTI label files.
KITTI_TYPES: Tuple[str, ...] = ('Car', 'Van', 'Truck', 'Pedestrian', 'Person_sitting',
                                'Cyclist', 'Tram', 'Misc', 'DontCare')

#: KITTI type -> model detection class (None: not evaluated; see the module docstring).
KITTI_CLASS_MAP: Mapping[str, Optional[str]] = types.MappingProxyType({
    'Car': 'car', 'Van': 'car',
    'Truck': 'truck',
    'Pedestrian': 'pedestrian', 'Person_sitting': 'pedestrian',
    'Cyclist': 'cyclist',
    'Tram': None, 'Misc': None, 'DontCare': None,
})

#: Types whose 3D boxes are ignore regions for detections (DontCare has only a 2D box).
IGNORED_BOX_TYPES: Tuple[str, ...] = ('Tram', 'Misc')

#: Margin of the ignore regions (DontCare rectangles, Tram and Misc boxes), metres.
IGNORE_MARGIN_M = 1.0

#: Ground height in the Velodyne frame measured on the real-dev frames: median z of the points
#: 3-8 m ahead within 2 m of the x axis is -1.66, -1.68, -1.70, -1.66, -1.62 m (frames 000000,
#: 000001, 000002, 000114, 000134; mean and median -1.66); the HDL-64E's nominal mounting
#: height, 1.73 m, is measured to the road further out.
KITTI_GROUND_Z_M = -1.66

#: Road height in the model frame of the shipped weights: their synthetic A2D2-format training
#: scenes put the front camera 1.74-1.86 m above the road (``synthetic.SensorRig``), mean 1.80.
MODEL_GROUND_Z_M = -1.80

#: Intensity scale of KITTI clouds (reflectance is 0..1), as the node's ``intensity_scale``.
KITTI_INTENSITY_SCALE = 1.0

_CALIB_KEYS: Mapping[str, Tuple[Tuple[str, ...], Tuple[int, int]]] = types.MappingProxyType({
    'P2': (('P2',), (3, 4)),
    'R0_rect': (('R0_rect', 'R_rect'), (3, 3)),
    'Tr_velo_to_cam': (('Tr_velo_to_cam', 'Tr_velo_cam'), (3, 4)),
})


# ----------------------------------------------------------------------------- extrinsic


@dataclass(frozen=True)
class SensorExtrinsic:
    """Cloud frame -> model frame as the node's ``extrinsic_*`` parameters give it.

    Attributes:
        translation_m: position (x, y, z) of the cloud frame's origin in the model frame.
        rpy_rad: roll, pitch, yaw of R = Rz(yaw) Ry(pitch) Rx(roll).

    The arithmetic is the node's own (``bev_perception.pipeline.Extrinsic``).
    """

    translation_m: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy_rad: Tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def transform(self) -> Extrinsic:
        """Return the node's transform for these parameters."""
        return Extrinsic.from_parameters(self.translation_m, self.rpy_rad)

    @property
    def is_identity(self) -> bool:
        """Return True for the identity transform."""
        return not any(self.translation_m) and not any(self.rpy_rad)

    def points_to_model(self, points: np.ndarray) -> np.ndarray:
        """Return a copy of (N, >=3) points with x, y, z mapped into the model frame."""
        return self.transform.points_to_model(np.array(points, copy=True))

    def points_from_model(self, points: np.ndarray) -> np.ndarray:
        """Return (N, 3) float64 cloud-frame x, y, z of model-frame (N, >=3) points."""
        return self.transform.points_from_model(points)

    def boxes_to_model(self, boxes: np.ndarray) -> np.ndarray:
        """Return (K, 7) float32 boxes mapped into the model frame."""
        return self.transform.boxes_to_model(boxes)


#: The extrinsic used for KITTI: the HDL-64E frame is already x forward, y left, z up, so only
#: the height changes: it lowers the measured road (KITTI_GROUND_Z_M) to where the shipped
#: weights saw it in training (MODEL_GROUND_Z_M), i.e. z -0.14 m.
KITTI_EXTRINSIC = SensorExtrinsic(
    translation_m=(0.0, 0.0, round(MODEL_GROUND_Z_M - KITTI_GROUND_Z_M, 2)))


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True, eq=False)
class KittiCalibration:
    """The calibration of one frame (camera 2 and the Velodyne)."""

    p2: np.ndarray  # (3, 4) projection of the rectified camera 2, pixels
    r0_rect: np.ndarray  # (3, 3) rectifying rotation
    tr_velo_to_cam: np.ndarray  # (3, 4) Velodyne -> (unrectified) camera 0, metres

    @property
    def velo_to_rect(self) -> np.ndarray:
        """Return (4, 4) R0_rect · Tr_velo_to_cam, both padded to 4 x 4."""
        r0 = np.eye(4)
        r0[:3, :3] = self.r0_rect
        tr = np.eye(4)
        tr[:3, :] = self.tr_velo_to_cam
        return r0 @ tr

    @property
    def rect_to_velo(self) -> np.ndarray:
        """Return (4, 4) inv(R0_rect · Tr_velo_to_cam)."""
        return np.linalg.inv(self.velo_to_rect)

    def velodyne_to_rect(self, points: np.ndarray) -> np.ndarray:
        """Return (N, 3) float64 rectified-camera x, y, z of (N, >=3) Velodyne points."""
        xyz = np.asarray(points, dtype=np.float64)[:, :3]  # (N, 3)
        transform = self.velo_to_rect
        return xyz @ transform[:3, :3].T + transform[:3, 3]

    def rect_to_velodyne(self, points: np.ndarray) -> np.ndarray:
        """Return (N, 3) float64 Velodyne x, y, z of (N, >=3) rectified-camera points."""
        xyz = np.asarray(points, dtype=np.float64)[:, :3]  # (N, 3)
        transform = self.rect_to_velo
        return xyz @ transform[:3, :3].T + transform[:3, 3]

    def camera_geometry(self, extrinsic: 'SensorExtrinsic', image_wh: Tuple[int, int]
                        ) -> np.ndarray:
        """Return camera 2's ``camera_geometry`` vector for model-frame points.

        model -> Velodyne (the inverse of ``extrinsic``) -> rectified camera 0 (R0_rect ·
        Tr_velo_to_cam) -> camera 2: P2 = K2 [I | K2^-1 p4], so camera 2 sits at
        K2^-1 p4 from the rectified camera 0 with the same axes. No distortion (rectified).
        """
        k2 = self.p2[:, :3]
        shift = np.linalg.solve(k2, self.p2[:, 3])  # (3,)
        velo_to_rect = self.velo_to_rect
        in_velodyne = geometry_vector(velo_to_rect[:3, :3], velo_to_rect[:3, 3] + shift, k2, (),
                                      image_wh)
        transform = extrinsic.transform  # velo -> model: p_model = R p_velo + t
        return moved(in_velodyne, transform.rotation, transform.translation)

    def project_rect(self, points_rect: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) rectified-camera points with P2.

        Returns:
            ((N, 2) pixel u, v (NaN where the depth is not positive), (N,) depth along the
            optical axis, metres).
        """
        xyz = np.asarray(points_rect, dtype=np.float64).reshape(-1, 3)
        projected = xyz @ self.p2[:, :3].T + self.p2[:, 3]  # (N, 3)
        depth = projected[:, 2]
        with np.errstate(divide='ignore', invalid='ignore'):
            uv = np.where((depth > 0)[:, None], projected[:, :2] / depth[:, None], np.nan)
        return uv, depth


def _parse_numbers(path: PathLike, where: str, texts: Sequence[str]) -> np.ndarray:
    try:
        values = np.array([float(text) for text in texts], dtype=np.float64)
    except ValueError as error:
        raise CorruptFrameError(path, f'{where}: not a number ({error})') from None
    if not np.all(np.isfinite(values)):
        raise CorruptFrameError(path, f'{where}: non-finite value')
    return values


def _read_text(path: PathLike) -> str:
    try:
        with open(path, 'r', encoding='utf-8') as stream:
            return stream.read()
    except FileNotFoundError:
        raise CorruptFrameError(path, 'missing file') from None
    except (OSError, UnicodeDecodeError) as error:
        raise CorruptFrameError(path, f'unreadable ({type(error).__name__}: {error})') from None


def read_calibration(path: PathLike) -> KittiCalibration:
    """Read a calib/<id>.txt file (``KEY: numbers`` lines; other keys are ignored).

    Raises:
        CorruptFrameError: missing file, a line without ``:``, a missing key, a wrong count
            or a non-number.
    """
    entries: Dict[str, List[str]] = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        key, separator, values = line.partition(':')
        if not separator:
            raise CorruptFrameError(path, f'line {number}: no "KEY: values" ({line[:40]!r})')
        entries[key.strip()] = values.split()
    matrices = {}
    for name, (aliases, shape) in _CALIB_KEYS.items():
        key = next((alias for alias in aliases if alias in entries), None)
        if key is None:
            raise CorruptFrameError(path, f'no {name} line (has {sorted(entries)})')
        values = _parse_numbers(path, key, entries[key])
        if values.size != shape[0] * shape[1]:
            raise CorruptFrameError(
                path, f'{key} has {values.size} numbers, expected {shape[0] * shape[1]}')
        matrices[name] = values.reshape(shape)
    calibration = KittiCalibration(p2=matrices['P2'], r0_rect=matrices['R0_rect'],
                                   tr_velo_to_cam=matrices['Tr_velo_to_cam'])
    if abs(np.linalg.det(calibration.velo_to_rect)) < 1e-6:
        raise CorruptFrameError(path, 'R0_rect · Tr_velo_to_cam is singular')
    return calibration


@dataclass(frozen=True)
class KittiObject:
    """One label_2 line, as written (rectified camera frame, metres, radians, pixels)."""

    type: str  # noqa: A003 (the devkit's field name)
    truncated: float
    occluded: int
    alpha: float
    bbox: Tuple[float, float, float, float]  # left, top, right, bottom
    height: float
    width: float
    length: float
    location: Tuple[float, float, float]  # bottom centre x, y, z
    rotation_y: float

    def box_velodyne(self, calibration: KittiCalibration) -> np.ndarray:
        """Return the (7,) float64 box in the Velodyne frame (see the module docstring)."""
        x, y, z = self.location
        centre = calibration.rect_to_velodyne(np.array([[x, y - 0.5 * self.height, z]]))[0]
        length_axis = np.array([math.cos(self.rotation_y), 0.0, -math.sin(self.rotation_y)])
        heading = calibration.rect_to_velo[:3, :3] @ length_axis  # (3,)
        yaw = float(wrap_angle(math.atan2(heading[1], heading[0])))
        return np.array([*centre, self.length, self.width, self.height, yaw])


def read_labels(path: PathLike) -> List[KittiObject]:
    """Read a label_2/<id>.txt file.

    Raises:
        CorruptFrameError: missing file, a line without 15 (or 16) fields, an unknown type, a
            non-number, or a non-positive size of an object other than DontCare.
    """
    objects = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f'line {number}'
        if len(fields) not in (15, 16):
            raise CorruptFrameError(path, f'{where}: {len(fields)} fields, expected 15 (type, '
                                    'truncated, occluded, alpha, bbox x4, h, w, l, x, y, z, '
                                    'rotation_y)')
        kind = fields[0]
        if kind not in KITTI_TYPES:
            raise CorruptFrameError(path, f'{where}: unknown type {kind!r} (expected one of '
                                    f'{", ".join(KITTI_TYPES)})')
        values = _parse_numbers(path, where, fields[1:15])  # (14,)
        height, width, length = values[7:10]
        if kind != 'DontCare' and min(height, width, length) <= 0:
            raise CorruptFrameError(path, f'{where}: {kind} has a non-positive size h, w, l = '
                                    f'{height:g}, {width:g}, {length:g}')
        objects.append(KittiObject(
            type=kind, truncated=float(values[0]), occluded=int(values[1]),
            alpha=float(values[2]), bbox=tuple(float(v) for v in values[3:7]),
            height=float(height), width=float(width), length=float(length),
            location=tuple(float(v) for v in values[10:13]), rotation_y=float(values[13])))
    return objects


def read_velodyne(path: PathLike) -> np.ndarray:
    """Return the (N, 4) float32 x, y, z (Velodyne frame, metres), reflectance of a .bin file.

    Raises:
        CorruptFrameError: missing file, or a size that is not a whole number of points.
    """
    try:
        raw = np.fromfile(os.fspath(path), dtype='<f4')
    except FileNotFoundError:
        raise CorruptFrameError(path, 'missing file') from None
    except (OSError, ValueError) as error:
        raise CorruptFrameError(path, f'unreadable ({type(error).__name__}: {error})') from None
    if raw.size % 4:
        raise CorruptFrameError(path, f'size {raw.size * 4} bytes is not a multiple of 16 '
                                '(float32 x, y, z, reflectance per point)')
    return raw.reshape(-1, 4).astype(np.float32)  # (N, 4)


#: Lasers of KITTI's HDL-64E: one ring each per sweep.
KITTI_LASERS = 64
#: A ring ends where the azimuth (``laser_rings``) falls back by more than this (radians):
#: within a ring it only grows, by about 0.003 rad per point.
RING_START_DROP_RAD = 0.5
#: How far before the first point's azimuth the other lasers' sweeps may start (radians).
SEAM_MARGIN_RAD = 0.1


def laser_rings(points: np.ndarray) -> np.ndarray:
    """Return the (N,) int64 ring of each point of a KITTI velodyne file, in file order.

    The files keep the HDL-64E's scan order: laser after laser, each one's sweep by
    increasing azimuth (most of a turn, or the camera's view in files cropped to it), every
    sweep starting near the same azimuth (within 6 degrees on the real-dev frames). The
    azimuth is measured from the first point less ``SEAM_MARGIN_RAD``, so a new ring begins
    where it falls back, to within the few points of a sweep that run past that seam. Ring 0
    is the top laser's; a laser with no return in the file gets no ring, so later rings
    count one lower (rings of the cropped real-dev frame 000134: 46).

    Raises:
        ValueError: more rings than the sensor has lasers: the points are not in scan order.
    """
    azimuth = np.arctan2(points[:, 1], points[:, 0])  # (N,)
    if not len(azimuth):
        return np.zeros(0, dtype=np.int64)
    swept = np.mod(azimuth - azimuth[0] + SEAM_MARGIN_RAD, 2.0 * np.pi)
    rings = np.concatenate([[0], np.cumsum(np.diff(swept) < -RING_START_DROP_RAD)])
    if rings[-1] >= KITTI_LASERS:
        raise ValueError(f"{rings[-1] + 1} laser rings found, more than the HDL-64E's "
                         f'{KITTI_LASERS}: the points are not in the scan order of a KITTI '
                         'velodyne file')
    return rings.astype(np.int64)


def image_size(path: PathLike) -> Tuple[int, int]:
    """Return (width, height) of an image file from its header."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise CorruptFrameError(path, 'missing file') from None
    except (OSError, ValueError, SyntaxError) as error:
        raise CorruptFrameError(path, f'unreadable image ({type(error).__name__}: {error})')


# ----------------------------------------------------------------------------- dataset


#: File kinds of one frame: kind -> (folder, extension).
FILE_KINDS: Mapping[str, Tuple[str, str]] = types.MappingProxyType({
    'velodyne': ('velodyne', 'bin'),
    'calib': ('calib', 'txt'),
    'label': ('label_2', 'txt'),
    'image': ('image_2', 'png'),
})


def split_folder(root: PathLike) -> str:
    """Return the folder with velodyne/, calib/... : ``root/training`` or ``root`` itself.

    Raises:
        ValueError: neither holds a velodyne and a label_2 folder.
    """
    root = os.fspath(root)
    for candidate in (os.path.join(root, 'training'), root):
        if all(os.path.isdir(os.path.join(candidate, FILE_KINDS[kind][0]))
               for kind in ('velodyne', 'label')):
            return candidate
    raise ValueError(f'{root}: not a KITTI object root (no training/velodyne and '
                     'training/label_2, nor velodyne and label_2)')


def is_kitti_root(root: PathLike) -> bool:
    """Return True when ``root`` has the KITTI object layout (see ``split_folder``)."""
    try:
        split_folder(root)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, eq=False)
class KittiFrame:
    """One KITTI frame in the model frame (via the dataset's extrinsic)."""

    frame_id: str  # e.g. '000134'
    points: np.ndarray  # (N, 4) float32 x, y, z model frame, reflectance 0..1 as recorded
    boxes: np.ndarray  # (K, 7) float32 evaluated classes: x, y, z, length, width, height, yaw
    labels: np.ndarray  # (K,) int64 indices into the dataset's classes
    objects: Tuple[KittiObject, ...]  # the (K,) labelled objects behind ``boxes``, in order
    ignore_boxes: np.ndarray  # (M, 7) float32 Tram and Misc boxes, model frame
    dont_care: np.ndarray  # (D, 4) float64 DontCare rectangles left, top, right, bottom
    image: Optional[np.ndarray]  # (H, W, 3) uint8 RGB of image_2 (None: not loaded)
    image_size: Tuple[int, int]  # image_2 width, height in pixels
    calibration: KittiCalibration
    extrinsic: SensorExtrinsic
    paths: Dict[str, str]  # file kind -> path
    semantic: None = None  # KITTI object frames have no semantic labels

    @property
    def name(self) -> str:
        """Return the frame's name in reports."""
        return self.frame_id

    @property
    def camera_geometry(self) -> np.ndarray:
        """Return camera 2's ``camera_geometry`` vector (model frame -> image_2 pixels)."""
        return self.calibration.camera_geometry(self.extrinsic, self.image_size)

    def project(self, centres_model: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return ((K, 2) pixel u, v (NaN behind the camera), (K,) depth) of model-frame points."""
        velodyne = self.extrinsic.points_from_model(np.asarray(centres_model).reshape(-1, 3))
        return self.calibration.project_rect(self.calibration.velodyne_to_rect(velodyne))

    def in_camera_view(self, boxes: np.ndarray) -> np.ndarray:
        """Return (K,) bool: box centres (mid height) in front of camera 2 and inside its width."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        uv, depth = self.project(boxes[:, :3])
        with np.errstate(invalid='ignore'):
            return (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < self.image_size[0])

    def gt_in_scope(self) -> np.ndarray:
        """Return (K,) bool over ``boxes``: the ground truth evaluated (camera view)."""
        return self.in_camera_view(self.boxes)

    def detection_in_scope(self, boxes: np.ndarray) -> np.ndarray:
        """Return (P,) bool: detections in scope (camera view, outside the ignore regions).

        Detections out of scope are ignorable: ignored unless they match a ground-truth box.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        keep = self.in_camera_view(boxes)
        if len(self.dont_care) and len(boxes):
            uv, depth = self.project(boxes[:, :3])
            focal = self.calibration.p2[0, 0]
            with np.errstate(divide='ignore', invalid='ignore'):
                margin = focal * IGNORE_MARGIN_M / np.maximum(depth, 1e-3)  # (P,) pixels
            left, top, right, bottom = (self.dont_care[None, :, i] for i in range(4))  # (1, D)
            u, v, grow = uv[:, :1], uv[:, 1:], margin[:, None]  # (P, 1)
            with np.errstate(invalid='ignore'):
                inside = ((u >= left - grow) & (u <= right + grow) & (v >= top - grow)
                          & (v <= bottom + grow))  # (P, D)
            keep &= ~inside.any(axis=1)
        keep &= ~in_footprints(boxes[:, :2], self.ignore_boxes, IGNORE_MARGIN_M)
        return keep


class KittiDataset(SkipReports):
    """Frames of a KITTI object root, sorted by id.

    Args:
        root: the folder holding ``training/``, or the ``training`` folder itself.
        classes: model detection classes; a frame's labels index this tuple.
        class_map: KITTI type -> class in ``classes`` or None (not evaluated).
        extrinsic: Velodyne -> model frame (default: ``KITTI_EXTRINSIC``).
        load_image: load image_2 (its size is read in any case, for the camera view).
        frame_ids: the frames to use (default: every velodyne file).
        ring_step: keep every ``ring_step``-th laser ring (``laser_rings``) from the top: 2
            and 4 give the clouds of a 32- and a 16-beam sensor of the same field of view
            (1: all 64).
    """

    def __init__(self, root: PathLike, classes: Sequence[str],
                 class_map: Mapping[str, Optional[str]] = KITTI_CLASS_MAP,
                 extrinsic: SensorExtrinsic = KITTI_EXTRINSIC, load_image: bool = True,
                 frame_ids: Optional[Sequence[str]] = None, ring_step: int = 1):
        if ring_step < 1:
            raise ValueError(f'ring_step must be at least 1, got {ring_step}')
        self.ring_step = ring_step
        self.root = split_folder(root)
        self.classes = tuple(classes)
        unknown_types = sorted(set(KITTI_TYPES) - set(class_map))
        if unknown_types:
            raise ValueError(f'class_map lacks the KITTI types {unknown_types}')
        targets = sorted({v for v in class_map.values() if v is not None} - set(self.classes))
        if targets:
            raise ValueError(f'class_map maps to {targets}, not in classes {self.classes}')
        self.class_map = dict(class_map)
        self.extrinsic = extrinsic
        self.load_image = load_image
        self._skipped: List[Tuple[str, str]] = []
        folder = os.path.join(self.root, FILE_KINDS['velodyne'][0])
        available = sorted(name[:-4] for name in os.listdir(folder) if name.endswith('.bin'))
        if frame_ids is not None:
            missing = sorted(set(frame_ids) - set(available))
            if missing:
                raise ValueError(f'{folder}: no velodyne files for frames {missing}')
            available = sorted(frame_ids)
        self._frames: List[Tuple[str, Dict[str, str]]] = []
        for frame_id in available:
            paths = self.frame_paths(frame_id)
            absent = [kind for kind in FILE_KINDS if not os.path.isfile(paths[kind])]
            if absent:
                self._report(paths[absent[0]], 'missing file; frame skipped')
                continue
            self._frames.append((frame_id, paths))

    def frame_paths(self, frame_id: str) -> Dict[str, str]:
        """Return file kind -> path of one frame."""
        return {kind: os.path.join(self.root, folder, f'{frame_id}.{extension}')
                for kind, (folder, extension) in FILE_KINDS.items()}

    @property
    def frame_ids(self) -> List[str]:
        """Ids of the indexed frames, in order."""
        return [frame_id for frame_id, _ in self._frames]

    def __len__(self) -> int:
        """Return the number of indexed frames."""
        return len(self._frames)

    def __getitem__(self, index: int) -> KittiFrame:
        """Load frame ``index``; raises CorruptFrameError naming a bad file."""
        frame_id, paths = self._frames[index]
        calibration = read_calibration(paths['calib'])
        objects = read_labels(paths['label'])
        points = read_velodyne(paths['velodyne'])  # (N, 4)
        if self.ring_step > 1:
            try:
                points = points[laser_rings(points) % self.ring_step == 0]
            except ValueError as error:
                raise CorruptFrameError(paths['velodyne'], str(error)) from None
        points = self.extrinsic.points_to_model(points)
        image = read_image(paths['image']) if self.load_image else None
        size = (image.shape[1], image.shape[0]) if image is not None \
            else image_size(paths['image'])
        kept, labels, ignored, dont_care = [], [], [], []
        for item in objects:
            if item.type == 'DontCare':
                dont_care.append(item.bbox)
            elif self.class_map[item.type] is not None:
                kept.append(item)
                labels.append(self.classes.index(self.class_map[item.type]))
            elif item.type in IGNORED_BOX_TYPES:
                ignored.append(item.box_velodyne(calibration))
        boxes = (np.stack([item.box_velodyne(calibration) for item in kept]) if kept
                 else np.zeros((0, 7)))
        return KittiFrame(
            frame_id=frame_id, points=points, boxes=self.extrinsic.boxes_to_model(boxes),
            labels=np.asarray(labels, dtype=np.int64), objects=tuple(kept),
            ignore_boxes=self.extrinsic.boxes_to_model(
                np.stack(ignored) if ignored else np.zeros((0, 7))),
            dont_care=np.asarray(dont_care, dtype=np.float64).reshape(-1, 4), image=image,
            image_size=(int(size[0]), int(size[1])), calibration=calibration,
            extrinsic=self.extrinsic, paths=dict(paths))
