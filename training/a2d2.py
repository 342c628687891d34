"""Reader for A2D2 ``camera_lidar_semantic_bboxes`` (front-center camera) and a frame dataset.

Layout (the dataset's published one): ``<root>/<scene>/{camera,lidar,label,label3D}/
cam_front_center/<scene without underscore>_<kind>_frontcenter_<9-digit id>.<ext>`` plus
``class_list.json`` and ``cams_lidars.json`` at the root. Points and boxes are in the
front-center camera "view" frame (x forward, y left, z up, metres), which is the model frame.
A scene folder may also hold a ``cams_lidars.json`` of its own (the synthetic world's extension
for drives filmed by another camera; ``read_camera_geometry``): its front-center entry is the
camera of that scene's images, placed relative to the root's front-center view.

Boxes leave the reader in the common convention: float32 (K, 7) x, y, z (geometric centre),
length, width, height, yaw (radians about +z in (-pi, pi], yaw = rot_angle * sign(axis_z)).

Bad data never stops a long run: the dataset checks that every frame's files exist when it
indexes the root and reports the missing ones (``logging.warning`` naming the file, once, and
``A2D2Dataset.skipped``); a file found corrupt when a frame is loaded raises
``CorruptFrameError`` naming it. For a DataLoader use ``dataset.skipping()`` (items are a
``Frame`` or None for a corrupt frame, which is then reported) with ``collate_frames``, which
drops the None items.
"""

from dataclasses import dataclass
import json
import logging
import math
import os
import re
import types
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
import zipfile
import zlib

from bev_perception.a2d2_classes import (
    category_of, hex_to_rgb, IGNORE_INDEX, IGNORED_CATEGORIES, SEMANTIC_CATEGORIES)
import numpy as np
from PIL import Image
from training.a2d2_calibration import CameraModel

LOGGER = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Camera of ``cams_lidars.json``, folder and file-name token of the front-center camera.
CAMERA_NAME = 'front_center'
CAMERA_FOLDER = 'cam_front_center'
CAMERA_TOKEN = 'frontcenter'

#: File kinds of one frame: kind -> (folder, second file-name token, extension).
FILE_KINDS: Mapping[str, Tuple[str, str, str]] = types.MappingProxyType({
    'camera': ('camera', 'camera', 'png'),
    'camera_info': ('camera', 'camera', 'json'),
    'lidar': ('lidar', 'lidar', 'npz'),
    'label': ('label', 'label', 'png'),
    'label3D': ('label3D', 'label3D', 'json'),
})

#: A2D2 box class -> training class (None: the box is dropped). Used by the training configs.
DEFAULT_CLASS_MAP: Mapping[str, Optional[str]] = types.MappingProxyType({
    'Car': 'car', 'VanSUV': 'car', 'EmergencyVehicle': 'car',
    'Truck': 'truck', 'Bus': 'truck', 'UtilityVehicle': 'truck', 'CaravanTransporter': 'truck',
    'Trailer': 'truck',
    'Pedestrian': 'pedestrian',
    'Cyclist': 'cyclist', 'Bicycle': 'cyclist', 'MotorBiker': 'cyclist', 'Motorcycle': 'cyclist',
    'Animal': None,
})

#: Training classes the default class map produces (index = label id).
DEFAULT_CLASSES: Tuple[str, ...] = ('car', 'truck', 'pedestrian', 'cyclist')

#: Scenes held out for validation by default (real A2D2 has no official split).
DEFAULT_VAL_SCENES: Tuple[str, ...] = ('20180807_145028',)

_SCENE_PATTERN = re.compile(r'^\d{8}_\d{6}$')
_BOX_KEYS = ('center', 'size', 'axis', 'rot_angle', 'class')


class A2D2FormatError(ValueError):
    """A file does not follow the A2D2 format; the message starts with the file name."""

    def __init__(self, path: PathLike, reason: str):
        super().__init__(f'{os.fspath(path)}: {reason}')
        self.path = os.fspath(path)
        self.reason = reason


class CorruptFrameError(A2D2FormatError):
    """A frame file is missing, unreadable or inconsistent; names the file and the problem."""


# ----------------------------------------------------------------------------- paths


def frame_file_name(scene: str, frame_id: str, kind: str,
                    camera_token: str = CAMERA_TOKEN) -> str:
    """Return the name of a frame's ``kind`` file, e.g. '<scene>_lidar_frontcenter_<id>.npz'."""
    _, token, extension = FILE_KINDS[kind]
    return f'{scene.replace("_", "")}_{token}_{camera_token}_{frame_id}.{extension}'


def frame_path(root: PathLike, scene: str, frame_id: str, kind: str,
               camera_folder: str = CAMERA_FOLDER, camera_token: str = CAMERA_TOKEN) -> str:
    """Return the path of a frame's ``kind`` file (a key of FILE_KINDS) under ``root``."""
    folder = FILE_KINDS[kind][0]
    return os.path.join(os.fspath(root), scene, folder, camera_folder,
                        frame_file_name(scene, frame_id, kind, camera_token))


def sibling_path(path: PathLike, kind: str) -> str:
    """Return the path of another file of the same frame.

    Swaps the kind folder (two levels up) and the second underscore token of the base name;
    the rest of the path is kept as given (the path itself may contain 'lidar', so nothing is
    replaced blindly).

    Args:
        path: any frame file, e.g. '.../lidar/cam_front_center/<s>_lidar_frontcenter_<id>.npz'.
        kind: one of FILE_KINDS ('camera', 'camera_info', 'lidar', 'label', 'label3D').
    """
    if kind not in FILE_KINDS:
        raise ValueError(f'unknown file kind {kind!r}; expected one of {sorted(FILE_KINDS)}')
    text = os.fspath(path)
    camera_dir, name = os.path.split(text)
    kind_dir, camera_folder = os.path.split(camera_dir)
    scene_dir = os.path.dirname(kind_dir)
    tokens = os.path.splitext(name)[0].split('_')
    if len(tokens) != 4 or not tokens[3].isdigit() or not camera_folder:
        raise ValueError(f'{text}: not an A2D2 frame file '
                         '(<scene>_<kind>_<camera>_<id>.<ext> in <scene>/<kind>/<camera>/)')
    folder, token, extension = FILE_KINDS[kind]
    tokens[1] = token
    return os.path.join(scene_dir, folder, camera_folder, '_'.join(tokens) + '.' + extension)


def list_scenes(root: PathLike) -> List[str]:
    """Return the sorted scene folder names (``YYYYMMDD_hhmmss``) under ``root``."""
    return sorted(name for name in os.listdir(root)
                  if _SCENE_PATTERN.match(name) and os.path.isdir(os.path.join(root, name)))


def split_scenes(root_or_scenes: Union[PathLike, Sequence[str]],
                 val_scenes: Union[Sequence[str], int] = DEFAULT_VAL_SCENES,
                 ) -> Tuple[List[str], List[str]]:
    """Split scenes into (train, val) by scene, both sorted.

    Args:
        root_or_scenes: a dataset root (its scene folders are listed) or scene names.
        val_scenes: the validation scene names, or an int n: the last n scenes in sorted order.
    """
    if isinstance(root_or_scenes, (str, os.PathLike)):
        scenes = list_scenes(root_or_scenes)
    else:
        scenes = sorted(root_or_scenes)
    if isinstance(val_scenes, int):
        if not 0 <= val_scenes <= len(scenes):
            raise ValueError(f'cannot hold out {val_scenes} of {len(scenes)} scenes')
        val = scenes[len(scenes) - val_scenes:]
    else:
        unknown = sorted(set(val_scenes) - set(scenes))
        if unknown:
            raise ValueError(f'validation scenes {unknown} are not among the scenes {scenes}')
        val = sorted(val_scenes)
    return [scene for scene in scenes if scene not in val], val


# ----------------------------------------------------------------------------- files


def read_lidar_arrays(npz_path: PathLike) -> Dict[str, np.ndarray]:
    """Return every array of an A2D2 lidar ``.npz`` (``points`` (N, 3), ``reflectance`` (N,)...).

    Raises CorruptFrameError (naming the file) for a missing or unreadable file, missing
    ``points``/``reflectance`` or arrays whose lengths disagree. ``row`` may be absent.
    """
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise CorruptFrameError(npz_path, 'missing file') from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise CorruptFrameError(npz_path, f'unreadable npz ({type(error).__name__}: {error})')
    for key in ('points', 'reflectance'):
        if key not in arrays:
            raise CorruptFrameError(npz_path, f'no {key!r} array (has {sorted(arrays)})')
    points = arrays['points']
    if points.ndim != 2 or points.shape[1] != 3:
        raise CorruptFrameError(npz_path, f'points have shape {points.shape}, expected (N, 3)')
    for key, array in arrays.items():
        if array.shape[:1] != points.shape[:1]:
            raise CorruptFrameError(
                npz_path, f'{key!r} has {array.shape[:1]} rows, points have {len(points)}')
    return arrays


def read_lidar(npz_path: PathLike) -> np.ndarray:
    """Return the (N, 4) float32 x, y, z (camera view frame, metres), raw reflectance."""
    arrays = read_lidar_arrays(npz_path)
    points = np.empty((len(arrays['points']), 4), dtype=np.float32)
    points[:, :3] = arrays['points']
    points[:, 3] = arrays['reflectance']
    return points


def wrap_angle(angle: float) -> float:
    """Return ``angle`` (radians) wrapped to (-pi, pi]."""
    return math.pi - (math.pi - angle) % (2.0 * math.pi)


@dataclass(frozen=True, eq=False)
class Box3D:
    """One label3D box in the camera view frame."""

    center: np.ndarray  # (3,) float64, metres, geometric centre
    size: np.ndarray  # (3,) float64, metres: length, width, height (box x, y, z)
    yaw: float  # radians about +z, (-pi, pi]
    class_name: str  # A2D2 class string, e.g. 'VanSUV'
    occlusion: float
    truncation: float
    box_id: int

    def as_array(self) -> np.ndarray:
        """Return (7,) float32 x, y, z, length, width, height, yaw."""
        return np.array([*self.center, *self.size, self.yaw], dtype=np.float32)


def _read_json(path: PathLike):
    try:
        with open(path, 'r', encoding='utf-8') as stream:
            return json.load(stream)
    except FileNotFoundError:
        raise CorruptFrameError(path, 'missing file') from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CorruptFrameError(path, f'unreadable JSON ({type(error).__name__}: {error})')


def _box_number(key: str) -> Tuple[int, str]:
    suffix = key.rsplit('_', 1)[-1]
    return (int(suffix), key) if suffix.isdigit() else (1 << 30, key)


def _vector(path: PathLike, key: str, entry: dict, name: str) -> np.ndarray:
    value = np.asarray(entry[name], dtype=np.float64)
    if value.shape != (3,) or not np.all(np.isfinite(value)):
        raise CorruptFrameError(path, f'{key}.{name} is {entry[name]!r}, expected 3 numbers')
    return value


def read_boxes(label3d_path: PathLike) -> List[Box3D]:
    """Return the boxes of a label3D JSON file, ordered by their box number.

    yaw = rot_angle * sign(axis_z), wrapped to (-pi, pi]; the axis must be about (0, 0, +-1).
    """
    document = _read_json(label3d_path)
    if not isinstance(document, dict):
        raise CorruptFrameError(label3d_path, 'top level is not a JSON object')
    boxes = []
    for key in sorted(document, key=_box_number):
        entry = document[key]
        if not isinstance(entry, dict) or any(name not in entry for name in _BOX_KEYS):
            raise CorruptFrameError(label3d_path, f'{key} lacks one of {list(_BOX_KEYS)}')
        try:
            axis = _vector(label3d_path, key, entry, 'axis')
            rot_angle = float(entry['rot_angle'])
            center = _vector(label3d_path, key, entry, 'center')
            size = _vector(label3d_path, key, entry, 'size')
            occlusion = float(entry.get('occlusion', 0.0))
            truncation = float(entry.get('truncation', 0.0))
            box_id = int(entry.get('id', _box_number(key)[0]))
        except (TypeError, ValueError) as error:
            raise CorruptFrameError(label3d_path, f'{key}: {error}')
        if rot_angle != 0.0 and abs(axis[2]) < 0.5:
            raise CorruptFrameError(label3d_path, f'{key}: rotation axis {axis.tolist()} is '
                                    'not vertical')
        yaw = wrap_angle(rot_angle * math.copysign(1.0, axis[2]))
        boxes.append(Box3D(center=center, size=size, yaw=yaw, class_name=str(entry['class']),
                           occlusion=occlusion, truncation=truncation, box_id=box_id))
    return boxes


def read_image(png_path: PathLike) -> np.ndarray:
    """Return the (H, W, 3) uint8 RGB pixels of a PNG (camera image or semantic label)."""
    try:
        with Image.open(png_path) as image:
            image.load()
            rgb = image if image.mode == 'RGB' else image.convert('RGB')
            return np.array(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise CorruptFrameError(png_path, 'missing file') from None
    except (OSError, ValueError, SyntaxError) as error:
        raise CorruptFrameError(png_path, f'unreadable image ({type(error).__name__}: {error})')


def read_camera_info(json_path: PathLike) -> dict:
    """Return the camera info JSON (``cam_name``, ``cam_tstamp`` in TAI us, ``lidar_ids``)."""
    info = _read_json(json_path)
    if not isinstance(info, dict) or not isinstance(info.get('cam_tstamp'), int):
        raise CorruptFrameError(json_path, 'no integer "cam_tstamp"')
    return info


class SemanticDecoder:
    """Map A2D2 label colours to the 38 category ids (IGNORE_INDEX for ignored/unknown colours).

    Built from a ``class_list.json`` colour table (``'#rrggbb' -> 'Name N'``); its categories
    (names without the instance number, in order of first appearance) must equal
    SEMANTIC_CATEGORIES.
    """

    def __init__(self, colour_names: Mapping[str, str], source: str = '<colour table>'):
        categories: List[str] = []
        self._ids: Dict[int, int] = {}
        for colour, name in colour_names.items():
            if not re.fullmatch(r'#[0-9a-fA-F]{6}', str(colour)):
                raise A2D2FormatError(source, f'{colour!r} is not a #rrggbb colour')
            category = category_of(str(name))
            if category not in categories:
                categories.append(category)
            red, green, blue = hex_to_rgb(colour.lower())
            ident = (IGNORE_INDEX if category in IGNORED_CATEGORIES
                     else SEMANTIC_CATEGORIES.index(category)
                     if category in SEMANTIC_CATEGORIES else IGNORE_INDEX)
            self._ids[(red << 16) | (green << 8) | blue] = ident
        if tuple(categories) != SEMANTIC_CATEGORIES:
            raise A2D2FormatError(source, f'categories {categories} differ from the expected '
                                  f'{list(SEMANTIC_CATEGORIES)}')
        self._lookup: Optional[np.ndarray] = None  # built on first use, in each process

    @classmethod
    def from_class_list(cls, class_list_path: PathLike) -> 'SemanticDecoder':
        """Build the decoder from a ``class_list.json`` file."""
        try:
            with open(class_list_path, 'r', encoding='utf-8') as stream:
                table = json.load(stream)
        except (OSError, ValueError) as error:
            raise A2D2FormatError(class_list_path, f'unreadable ({type(error).__name__}: '
                                  f'{error})') from None
        if not isinstance(table, dict):
            raise A2D2FormatError(class_list_path, 'top level is not a JSON object')
        return cls(table, os.fspath(class_list_path))

    def __getstate__(self) -> dict:
        """Pickle without the 16 MiB lookup table (rebuilt on first use)."""
        return {'_ids': self._ids, '_lookup': None}

    def decode(self, rgb: np.ndarray) -> np.ndarray:
        """Return (H, W) uint8 category ids of an (H, W, 3) uint8 label image."""
        if self._lookup is None:
            lookup = np.full(1 << 24, IGNORE_INDEX, dtype=np.uint8)
            lookup[np.fromiter(self._ids.keys(), dtype=np.int64)] = np.fromiter(
                self._ids.values(), dtype=np.int64)
            self._lookup = lookup
        rgb = np.asarray(rgb, dtype=np.uint8)
        keys = ((rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8)
                | rgb[..., 2])
        return self._lookup[keys]


def read_semantic(label_png_path: PathLike,
                  class_list_path: PathLike) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """Return ((H, W) uint8 category ids, the category table) of a semantic label PNG.

    55 colours collapse to 38 categories (SEMANTIC_CATEGORIES order); Ego car, Blurred area,
    Rain dirt and colours missing from ``class_list.json`` become IGNORE_INDEX (255).
    """
    decoder = SemanticDecoder.from_class_list(class_list_path)
    return decoder.decode(read_image(label_png_path)), SEMANTIC_CATEGORIES


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True, eq=False)
class Frame:
    """One loaded frame in the camera view (= model) frame."""

    scene: str
    frame_id: str  # 9 digits
    points: np.ndarray  # (N, 4) float32 x, y, z metres, raw reflectance
    boxes: np.ndarray  # (K, 7) float32 x, y, z, length, width, height, yaw
    labels: np.ndarray  # (K,) int64 indices into the dataset's classes
    image: Optional[np.ndarray]  # (H, W, 3) uint8 RGB, distorted original
    semantic: Optional[np.ndarray]  # (H, W) uint8 category ids, 255 = ignore
    lidar_timestamp_us: int  # earliest point timestamp (TAI us); camera stamp if none
    camera_timestamp_us: int  # cam_tstamp (TAI us); -1 if the camera info is absent
    paths: Dict[str, str]  # file kind -> path
    # (camera_geometry.SIZE,) float32 front-center calibration (the scene's or the root's
    # cams_lidars.json, see read_camera_geometry), None without that file
    camera_geometry: Optional[np.ndarray] = None


def read_camera_model(path: PathLike) -> Optional[CameraModel]:
    """Return the front-center camera of a ``cams_lidars.json``, None where the file is absent.

    A root without the file has no calibration (fusion that needs one is refused later, by the
    model). A file that is there but unreadable raises ``CorruptFrameError`` naming it.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as stream:
            return CameraModel.from_json(json.load(stream)['cameras'][CAMERA_NAME])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise CorruptFrameError(path, f'no usable {CAMERA_NAME} camera '
                                f'({type(error).__name__}: {error})') from None


def read_camera_geometry(root: PathLike, scenes: Sequence[str] = ()
                         ) -> Tuple[Optional[np.ndarray], Dict[str, np.ndarray]]:
    """Return the ``camera_geometry`` of a root's frames: (root's, {scene: scene's own}).

    The root's ``cams_lidars.json`` gives its front-center camera, whose view frame is the
    model frame. A scene folder may hold its own ``cams_lidars.json`` (the synthetic world's
    extension for scenes filmed by another camera): its front-center entry is that drive's
    camera, placed relative to the root's front-center view, in which points and boxes stay.
    """
    root_path = os.path.join(root, 'cams_lidars.json')
    root_camera = read_camera_model(root_path)
    own = {}
    for scene in scenes:
        path = os.path.join(root, scene, 'cams_lidars.json')
        camera = read_camera_model(path)
        if camera is None:
            continue
        if root_camera is None:
            raise CorruptFrameError(path, f'a scene camera needs {root_path} (its '
                                    f'{CAMERA_NAME} view is the frame of the points)')
        own[scene] = camera.camera_geometry(root_camera.view)
    return (None if root_camera is None else root_camera.camera_geometry()), own


@dataclass(frozen=True)
class _FrameRecord:
    scene: str
    frame_id: str
    paths: Dict[str, str]


class SkipReports:
    """What the datasets share: each missing or corrupt file is reported once and skipped.

    A dataset sets ``self._skipped = []`` before it indexes, calls ``_report`` for missing
    files and gets ``skipped``, ``safe_getitem`` (corrupt files while loading) and
    ``skipping`` (the DataLoader view).
    """

    _skipped: List[Tuple[str, str]]

    def _report(self, path: str, reason: str) -> None:
        if (path, reason) not in self._skipped:
            self._skipped.append((path, reason))
            LOGGER.warning('%s: %s', path, reason)

    @property
    def skipped(self) -> List[Tuple[str, str]]:
        """(path, reason) of every frame file reported missing or corrupt so far."""
        return list(self._skipped)

    def safe_getitem(self, index: int) -> Optional[Any]:
        """Load frame ``index``, or report the corrupt file (once) and return None."""
        try:
            return self[index]  # type: ignore[index]
        except CorruptFrameError as error:
            self._report(error.path, f'{error.reason}; frame skipped')
            return None

    def skipping(self) -> 'SkippingDataset':
        """Return a view for a DataLoader whose items are a frame or None (corrupt)."""
        return SkippingDataset(self)


class A2D2Dataset(SkipReports):
    """Frames of an A2D2 ``camera_lidar_semantic_bboxes`` root, indexed by scene and frame.

    Args:
        root: dataset root (scene folders, ``class_list.json``).
        scenes: scene names to use (default: every scene folder under root).
        split: None (all of ``scenes``), 'train' or 'val' (see ``split_scenes``).
        class_map: A2D2 box class -> training class or None (box dropped).
        classes: training classes; a frame's labels index this tuple.
        load_image: load the camera PNG (required then).
        load_semantic: load and decode the label PNG (required then).
        val_scenes: validation scenes for ``split`` (names, or an int: the last n scenes).
    """

    def __init__(self, root: PathLike, scenes: Optional[Sequence[str]] = None,
                 split: Optional[str] = None,
                 class_map: Mapping[str, Optional[str]] = DEFAULT_CLASS_MAP,
                 classes: Sequence[str] = DEFAULT_CLASSES, load_image: bool = True,
                 load_semantic: bool = True,
                 val_scenes: Union[Sequence[str], int] = DEFAULT_VAL_SCENES):
        self.root = os.fspath(root)
        self.classes = tuple(classes)
        unknown_targets = sorted({str(v) for v in class_map.values()
                                  if v is not None and v not in self.classes})
        if unknown_targets:
            raise ValueError(f'class_map maps to {unknown_targets}, not in classes {self.classes}')
        self.class_map = dict(class_map)
        self.load_image = load_image
        self.load_semantic = load_semantic
        available = list_scenes(self.root)
        chosen = available if scenes is None else sorted(scenes)
        missing_scenes = sorted(set(chosen) - set(available))
        if missing_scenes:
            raise ValueError(f'{self.root}: no scene folders {missing_scenes}')
        if split is not None:
            if split not in ('train', 'val'):
                raise ValueError(f"split must be None, 'train' or 'val', not {split!r}")
            train, val = split_scenes(chosen, val_scenes)
            chosen = train if split == 'train' else val
        self.scenes = tuple(chosen)
        self._decoder = (SemanticDecoder.from_class_list(os.path.join(self.root,
                                                                      'class_list.json'))
                         if load_semantic else None)
        self.camera_geometry, self._scene_geometry = read_camera_geometry(self.root,
                                                                          self.scenes)
        self._skipped: List[Tuple[str, str]] = []
        self._unknown_classes: set = set()
        self._records: List[_FrameRecord] = []
        for scene in self.scenes:
            self._index_scene(scene)

    def scene_camera_geometry(self, scene: str) -> Optional[np.ndarray]:
        """Return the calibration of ``scene``'s frames (its own camera's, else the root's)."""
        return self._scene_geometry.get(scene, self.camera_geometry)

    # -- indexing

    def _required_kinds(self) -> Tuple[str, ...]:
        kinds = ['lidar', 'label3D']
        if self.load_image:
            kinds += ['camera', 'camera_info']
        if self.load_semantic:
            kinds.append('label')
        return tuple(kinds)

    def _index_scene(self, scene: str) -> None:
        kinds = self._required_kinds()
        found: Dict[str, set] = {}
        for kind in kinds:
            folder, token, extension = FILE_KINDS[kind]
            directory = os.path.join(self.root, scene, folder, CAMERA_FOLDER)
            pattern = re.compile(re.escape(f'{scene.replace("_", "")}_{token}_{CAMERA_TOKEN}_')
                                 + r'(\d{9})' + re.escape(f'.{extension}'))
            if not os.path.isdir(directory):
                LOGGER.warning('%s: missing folder; frames of scene %s need it', directory, scene)
                found[kind] = set()
                continue
            found[kind] = {match.group(1) for match in map(pattern.fullmatch,
                                                           os.listdir(directory)) if match}
        for frame_id in sorted(set().union(*found.values())):
            paths = {kind: frame_path(self.root, scene, frame_id, kind)
                     for kind in ('lidar', 'label3D', 'camera', 'camera_info', 'label')}
            absent = [kind for kind in kinds if frame_id not in found[kind]]
            if absent:
                self._report(paths[absent[0]], 'missing file; frame skipped')
                continue
            self._records.append(_FrameRecord(scene, frame_id, paths))

    # -- access

    @property
    def frame_keys(self) -> List[Tuple[str, str]]:
        """(scene, frame_id) of every indexed frame, in index order."""
        return [(record.scene, record.frame_id) for record in self._records]

    def __len__(self) -> int:
        """Return the number of indexed frames."""
        return len(self._records)

    def __getitem__(self, index: int) -> Frame:
        """Load frame ``index``; raises CorruptFrameError naming a bad file."""
        record = self._records[index]
        paths = record.paths
        arrays = read_lidar_arrays(paths['lidar'])
        points = np.empty((len(arrays['points']), 4), dtype=np.float32)
        points[:, :3] = arrays['points']
        points[:, 3] = arrays['reflectance']
        boxes, labels = self._map_boxes(read_boxes(paths['label3D']), paths['label3D'])
        camera_stamp = -1
        if self.load_image or os.path.exists(paths['camera_info']):
            camera_stamp = int(read_camera_info(paths['camera_info'])['cam_tstamp'])
        stamps = arrays.get('timestamp')
        lidar_stamp = (int(stamps.min()) if stamps is not None and len(stamps)
                       else camera_stamp)
        image = read_image(paths['camera']) if self.load_image else None
        semantic = None
        if self._decoder is not None:
            label_rgb = read_image(paths['label'])
            if image is not None and label_rgb.shape != image.shape:
                raise CorruptFrameError(paths['label'], f'size {label_rgb.shape[:2]} differs '
                                        f'from the camera image {image.shape[:2]}')
            semantic = self._decoder.decode(label_rgb)
        return Frame(scene=record.scene, frame_id=record.frame_id, points=points, boxes=boxes,
                     labels=labels, image=image, semantic=semantic,
                     lidar_timestamp_us=lidar_stamp, camera_timestamp_us=camera_stamp,
                     paths=dict(paths),
                     camera_geometry=self.scene_camera_geometry(record.scene))

    def _map_boxes(self, boxes: List[Box3D], path: str) -> Tuple[np.ndarray, np.ndarray]:
        kept, labels = [], []
        for box in boxes:
            if box.class_name not in self.class_map:
                if box.class_name not in self._unknown_classes:
                    self._unknown_classes.add(box.class_name)
                    LOGGER.warning('%s: class %r is not in the class map; its boxes are dropped',
                                   path, box.class_name)
                continue
            target = self.class_map[box.class_name]
            if target is not None:
                kept.append(box.as_array())
                labels.append(self.classes.index(target))
        array = np.stack(kept) if kept else np.zeros((0, 7), dtype=np.float32)
        return array, np.asarray(labels, dtype=np.int64)


class SkippingDataset:
    """Map-style view of a dataset whose corrupt frames come out as None (reported).

    Works for any dataset with ``safe_getitem`` (A2D2, KITTI, camera-only A2D2 frames).

    Pair it with ``collate_frames``. In DataLoader worker processes the reports are logged by
    the worker; ``skipped`` of the parent object only sees reports made in its own process.
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        """Return the number of indexed frames."""
        return len(self.dataset)

    def __getitem__(self, index: int) -> Optional[Any]:
        """Return the frame or None when one of its files is corrupt."""
        return self.dataset.safe_getitem(index)


def collate_frames(batch: Sequence[Optional[Frame]]) -> List[Frame]:
    """Return the batch without the None items (frames skipped as corrupt)."""
    return [frame for frame in batch if frame is not None]
