"""Synthetic drives written in the A2D2 ``camera_lidar_semantic_bboxes`` format.

``python -m training.synthetic --out DIR --scenes S --frames F --seed K [--workers N]`` writes
a root with ``cams_lidars.json`` and ``class_list.json`` (from the project's own tables) and S
scene folders ``YYYYMMDD_hhmmss`` of F frames, with the real dataset's folders, file names,
npz keys and dtypes, label3D JSON, camera PNG + info JSON and semantic label PNG (see
../shared/docs/a2d2-format.md); ``training.a2d2`` reads them like real A2D2.

The world lives in a road frame (X along a straight street, Y left, Z up, road surface at
Z = 0): lanes with solid and dashed markings, curbs, raised sidewalks, grass strips, a facade
row on each side (buildings with windows, or hedges), trees, and cars, vans, trucks,
pedestrians and cyclists built from yaw-rotated boxes, each class with its own shape, colours
and LiDAR reflectance. The ego vehicle drives along its lane at 10 Hz; actors move
consistently (lane traffic, walkers, cyclists) or stand still (parked cars, waiting people).
Semantic labels use instance colours ('Car 1'..'Car 4', ...); a cyclist (bicycle and rider)
is labelled Bicycle, the facades Buildings (windows included) or Nature object (hedges).

Sensors use the A2D2 calibration (``training.a2d2_calibration``): the five VLP-16 lidars cast
their rays (16 lasers, 0.2 degree azimuth steps) from their mounting poses against the world
(nearest hit, range noise, dropout, reflectance by material and incidence), keeping only
points inside the front-center camera image, as A2D2 does. The camera renders the distorted
original image and its label pixel by pixel through CamMatrixOriginal + Distortion, so label,
image and points are exactly aligned. Everything is vectorised numpy and deterministic per
seed: the same seed writes the same files byte for byte, whatever the number of workers.
"""

import argparse
from dataclasses import dataclass, field, replace
import datetime
import json
import math
import multiprocessing
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple
import zipfile

from bev_perception.a2d2_classes import hex_to_rgb, SEMANTIC_CATEGORIES, SEMANTIC_COLOURS
import numpy as np
from PIL import Image
from training.a2d2 import CAMERA_FOLDER, FILE_KINDS, frame_path, wrap_angle
from training.a2d2_calibration import (
    camera_calibration, CameraModel, LIDAR_IDS, lidar_view, NATIVE_RESOLUTION, view_to_view,
    write_cams_lidars)

# ----------------------------------------------------------------------------- constants

FRAME_PERIOD_US = 100_000  # 10 Hz lidar sweeps
TAI_MINUS_UTC_S = 37
VLP16_ELEVATIONS_DEG = tuple(float(e) for e in range(-15, 16, 2))  # 16 lasers
VLP16_AZIMUTH_STEPS = 1800  # 0.2 degree at 10 Hz
VLP16_LASER_INTERVAL_US = 2.304
VLP16_MAX_RANGE_M = 100.0

# Static surface codes of a ray hit. Codes index a per-frame surface table: these static rows,
# then one row per facade segment (FACADE_OFFSET + segment), then one per actor part.
SKY, ROAD, SOLID_LINE, DASHED_LINE, CURB, SIDEWALK, GRASS, WINDOW, EGO_HOOD = range(9)
_STATIC_SURFACES = (  # semantic label name, albedo (linear 0..1), LiDAR reflectance
    ('Sky', (0.0, 0.0, 0.0), 0.0),
    ('RD normal street', (0.30, 0.30, 0.32), 9.0),
    ('Solid line', (0.90, 0.90, 0.88), 85.0),
    ('Dashed line', (0.88, 0.88, 0.86), 80.0),
    ('Curbstone', (0.66, 0.65, 0.63), 30.0),
    ('Sidewalk', (0.58, 0.54, 0.50), 24.0),
    ('Nature object', (0.24, 0.42, 0.16), 14.0),
    ('Buildings', (0.15, 0.18, 0.23), 8.0),  # window glass
    ('Ego car', (0.10, 0.11, 0.13), 0.0),
)
FACADE_OFFSET = len(_STATIC_SURFACES)
_BUILDING_REFLECTANCE, _HEDGE_REFLECTANCE = 36.0, 18.0
_HORIZON = (0.78, 0.84, 0.92)
_ZENITH = (0.32, 0.52, 0.85)

# Face codes: axis * 2 + (1 if the outward normal points to -axis); normals per code.
_FACE_NORMALS = ((1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0),
                 (0.0, 0.0, 1.0), (0.0, 0.0, -1.0))
_UP, _TOWARD_LEFT, _TOWARD_RIGHT = 4, 2, 3  # +Z, +Y, -Y

# Instance-numbered label colours per semantic category ('Car 1'..'Car 4', ...).
_LABEL_NAMES = {'Car': 4, 'Truck': 3, 'Pedestrian': 3, 'Bicycle': 4}

_CAR_PAINTS = ((0.62, 0.07, 0.06), (0.40, 0.05, 0.05), (0.10, 0.20, 0.55), (0.06, 0.09, 0.25),
               (0.62, 0.63, 0.65), (0.35, 0.36, 0.38), (0.05, 0.05, 0.06), (0.86, 0.86, 0.86),
               (0.10, 0.32, 0.18), (0.70, 0.64, 0.50))
_TRUCK_CARGO = ((0.90, 0.90, 0.88), (0.72, 0.72, 0.72), (0.85, 0.70, 0.10), (0.85, 0.42, 0.08),
                (0.15, 0.30, 0.60), (0.20, 0.38, 0.22), (0.50, 0.10, 0.08))
_TRUCK_CAB = ((0.90, 0.90, 0.90), (0.65, 0.08, 0.06), (0.12, 0.22, 0.55), (0.25, 0.25, 0.27),
              (0.85, 0.72, 0.10))
_CLOTHES = ((0.12, 0.15, 0.30), (0.06, 0.06, 0.07), (0.40, 0.40, 0.42), (0.60, 0.53, 0.40),
            (0.60, 0.10, 0.10), (0.15, 0.35, 0.20), (0.85, 0.85, 0.85), (0.85, 0.75, 0.20),
            (0.35, 0.15, 0.40))
_SKIN = ((0.55, 0.40, 0.30), (0.30, 0.20, 0.12), (0.75, 0.60, 0.50), (0.10, 0.08, 0.06))
_BRIGHT = ((0.95, 0.80, 0.05), (0.95, 0.45, 0.05), (0.80, 0.10, 0.10), (0.10, 0.40, 0.85),
           (0.20, 0.75, 0.30), (0.90, 0.90, 0.90))
_FACADES = ((0.85, 0.80, 0.68), (0.90, 0.90, 0.87), (0.62, 0.62, 0.64), (0.58, 0.32, 0.24),
            (0.82, 0.72, 0.48), (0.66, 0.70, 0.74), (0.75, 0.55, 0.45))
_GLASS = (0.08, 0.10, 0.13)
_TYRE = (0.04, 0.04, 0.04)
_DARK_METAL = (0.18, 0.18, 0.19)

_BOX_CORNER_SIGNS = ((-1, 1, -1), (1, 1, -1), (1, -1, -1), (-1, -1, -1),
                     (-1, 1, 1), (1, 1, 1), (1, -1, 1), (-1, -1, 1))
_BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
              (0, 4), (1, 5), (2, 6), (3, 7))


def _label_colours() -> Dict[str, Tuple[int, int, int]]:
    return {name: hex_to_rgb(colour) for colour, name in SEMANTIC_COLOURS}


def class_list_dict() -> Dict[str, str]:
    """Return the ``class_list.json`` object (55 '#rrggbb' -> name) from the project's table."""
    return dict(SEMANTIC_COLOURS)


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic drives (units in the names)."""

    camera_height_m: Tuple[float, float] = (1.74, 1.86)  # road surface at z = -height (view)
    ego_speed_mps: Tuple[float, float] = (3.0, 13.0)
    camera_delay_us: Tuple[int, int] = (40_000, 60_000)  # camera stamp after the sweep start
    range_noise_m: float = 0.02  # std of the LiDAR range noise
    dropout: float = 0.03  # probability that a return is lost
    foliage_dropout: float = 0.35  # extra loss on tree crowns
    min_box_points: int = 5  # an actor is labelled with at least this many LiDAR points
    max_box_depth_m: float = 80.0  # ... and its centre at most this far ahead
    empty_scene_probability: float = 0.08  # scenes without any actor
    image_noise: float = 3.0  # std of the pixel noise in 8-bit levels
    png_compress_level: int = 1


# ----------------------------------------------------------------------------- scene model


@dataclass(frozen=True)
class RoadLayout:
    """Cross-section of the street in the road frame (metres, Y left)."""

    edge_right_m: float  # Y of the right curb face (negative)
    edge_left_m: float  # Y of the left curb face
    curb_height_m: float  # raised level of sidewalks and grass
    curb_width_m: float  # curbstone strip on top of the raised level
    sidewalk_width_m: Tuple[float, float]  # right, left (from the curb face)
    solid_lines: Tuple[Tuple[float, float], ...]  # (y, width)
    dashed_lines: Tuple[Tuple[float, float, float, float, float], ...]  # y, width, dash,
    # period, phase


@dataclass(frozen=True)
class FacadeRows:
    """Facade planes along both sides: segments sorted by start X, per side."""

    y_m: Tuple[float, float]  # right (negative), left
    starts_m: Tuple[np.ndarray, np.ndarray]  # (S_side,) segment start X
    offset: Tuple[int, int]  # first index of each side in the concatenated arrays
    heights_m: np.ndarray  # (S,) concatenated right then left
    is_building: np.ndarray  # (S,) bool; False: hedge / vegetation wall
    albedo: np.ndarray  # (S, 3)
    floor_height_m: np.ndarray  # (S,) window rows
    window_spacing_m: np.ndarray  # (S,) window columns


@dataclass(frozen=True)
class Parts:
    """Boxes that make up an actor, in its box frame (origin at the geometric centre)."""

    centres_m: np.ndarray  # (P, 3)
    half_sizes_m: np.ndarray  # (P, 3)
    albedo: np.ndarray  # (P, 3)
    reflectance: np.ndarray  # (P,)
    foliage: np.ndarray  # (P,) bool


@dataclass(frozen=True)
class Actor:
    """A road user or a tree; moves along X at constant speed."""

    class_name: Optional[str]  # A2D2 box class; None for scenery (not labelled)
    category: str  # semantic label name, e.g. 'Car 2' or 'Nature object'
    size_m: Tuple[float, float, float]  # length, width, height
    x_m: float  # box centre X at t = 0
    y_m: float  # box centre Y
    bottom_m: float  # Z of the box bottom (0 on the road, the curb height on sidewalks)
    yaw: float  # radians about +Z in the road frame
    speed_x_mps: float  # signed velocity along X
    parts: Parts


@dataclass(frozen=True)
class Scene:
    """One synthetic drive: the static street, the actors and the ego motion."""

    name: str  # YYYYMMDD_hhmmss
    seed: int
    index: int
    frames: int
    first_frame_number: int
    start_tai_us: int
    camera_height_m: float
    ego_speed_mps: float
    ego_lane_y_m: float
    sway_amplitude_m: float
    sway_period_s: float
    sway_phase: float
    road: RoadLayout
    facades: FacadeRows
    actors: Tuple[Actor, ...]
    sun_direction: Tuple[float, float, float]  # unit vector towards the sun (road frame)
    exposure: float
    haze_distance_m: float
    lidar_phase_steps: Tuple[int, ...]  # azimuth step where each lidar's sweep starts

    def ego_pose(self, frame_index: int) -> Tuple[np.ndarray, float]:
        """Return the camera position (3,) in the road frame and its heading (radians)."""
        t = frame_index * FRAME_PERIOD_US * 1e-6
        omega = 2.0 * math.pi / self.sway_period_s
        y = self.ego_lane_y_m + self.sway_amplitude_m * math.sin(omega * t + self.sway_phase)
        lateral_speed = self.sway_amplitude_m * omega * math.cos(omega * t + self.sway_phase)
        heading = math.atan2(lateral_speed, self.ego_speed_mps) if self.ego_speed_mps else 0.0
        return np.array([self.ego_speed_mps * t, y, self.camera_height_m]), heading


_PartSpec = Tuple[Tuple[float, float, float, float, float, float], Sequence[float], float, bool]


def _parts(boxes: Sequence[_PartSpec], size: Tuple[float, float, float]) -> Parts:
    """Build Parts from (x0, x1, y0, y1, z0, z1 above the box bottom), albedo, reflectance."""
    bounds = np.array([b[0] for b in boxes], dtype=np.float64)
    centres = np.stack([(bounds[:, 0] + bounds[:, 1]) / 2, (bounds[:, 2] + bounds[:, 3]) / 2,
                        (bounds[:, 4] + bounds[:, 5]) / 2 - size[2] / 2], axis=1)
    halves = np.stack([bounds[:, 1] - bounds[:, 0], bounds[:, 3] - bounds[:, 2],
                       bounds[:, 5] - bounds[:, 4]], axis=1) / 2
    return Parts(centres_m=centres, half_sizes_m=halves,
                 albedo=np.array([b[1] for b in boxes], dtype=np.float64),
                 reflectance=np.array([b[2] for b in boxes], dtype=np.float64),
                 foliage=np.array([b[3] for b in boxes], dtype=bool))


def _luminance(colour: Sequence[float]) -> float:
    return 0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2]


def _pick(rng: np.random.Generator, table: Sequence) -> Tuple[float, float, float]:
    return tuple(table[int(rng.integers(len(table)))])


def _normal(rng: np.random.Generator, mean: float, std: float, low: float, high: float) -> float:
    return float(np.clip(rng.normal(mean, std), low, high))


def _car_shape(rng: np.random.Generator, van: bool) -> Tuple[Tuple[float, float, float], Parts]:
    if van:
        size = (_normal(rng, 4.85, 0.25, 4.3, 5.4), _normal(rng, 1.95, 0.06, 1.82, 2.08),
                _normal(rng, 1.8, 0.09, 1.62, 2.0))
    else:
        size = (_normal(rng, 4.5, 0.25, 3.9, 5.1), _normal(rng, 1.8, 0.07, 1.65, 1.95),
                _normal(rng, 1.48, 0.06, 1.35, 1.62))
    length, width, height = size
    paint = _pick(rng, _CAR_PAINTS)
    paint_reflectance = 12.0 + 40.0 * _luminance(paint)
    belt = (0.55 if van else 0.6) * height
    cabin = (-0.42, 0.22) if van else (-0.36, 0.16)
    axle = length / 2 - 0.85
    boxes = [
        ((axle - 0.32, axle + 0.32, -width / 2, width / 2, 0.0, 0.64), _TYRE, 4.0, False),
        ((-axle - 0.32, -axle + 0.32, -width / 2, width / 2, 0.0, 0.64), _TYRE, 4.0, False),
        ((-length / 2, length / 2, -width / 2 + 0.03, width / 2 - 0.03, 0.3, belt), paint,
         paint_reflectance, False),
        ((cabin[0] * length, cabin[1] * length, -width / 2 + 0.12, width / 2 - 0.12, belt,
          0.93 * height), _GLASS, 6.0, False),
        ((cabin[0] * length + 0.1, cabin[1] * length - 0.1, -width / 2 + 0.12,
          width / 2 - 0.12, 0.93 * height, height), paint, paint_reflectance, False),
    ]
    return size, _parts(boxes, size)


def _truck_shape(rng: np.random.Generator) -> Tuple[Tuple[float, float, float], Parts]:
    size = (float(rng.uniform(7.5, 10.5)), _normal(rng, 2.48, 0.04, 2.4, 2.55),
            float(rng.uniform(3.0, 3.6)))
    length, width, height = size
    cargo, cab = _pick(rng, _TRUCK_CARGO), _pick(rng, _TRUCK_CAB)
    boxes = [((x - 0.5, x + 0.5, -width / 2, width / 2, 0.0, 1.0), _TYRE, 4.0, False)
             for x in (length / 2 - 1.4, -length / 2 + 1.5, -length / 2 + 2.8)]
    boxes += [
        ((-length / 2, length / 2, -width / 2 + 0.25, width / 2 - 0.25, 0.55, 1.05), _DARK_METAL,
         10.0, False),
        ((length / 2 - 2.2, length / 2 - 0.04, -width / 2, width / 2, 0.6, 0.84 * height), cab,
         15.0 + 40.0 * _luminance(cab), False),
        ((length / 2 - 0.6, length / 2, -width / 2 + 0.08, width / 2 - 0.08, 0.52 * height,
          0.78 * height), _GLASS, 6.0, False),
        ((-length / 2, length / 2 - 2.4, -width / 2, width / 2, 1.05, height), cargo,
         30.0 + 50.0 * _luminance(cargo), False),
    ]
    return size, _parts(boxes, size)


def _pedestrian_shape(rng: np.random.Generator) -> Tuple[Tuple[float, float, float], Parts]:
    size = (_normal(rng, 0.62, 0.08, 0.45, 0.85), _normal(rng, 0.62, 0.06, 0.48, 0.8),
            _normal(rng, 1.74, 0.09, 1.5, 1.98))
    length, width, height = size
    trousers, jacket, skin = _pick(rng, _CLOTHES), _pick(rng, _CLOTHES), _pick(rng, _SKIN)
    boxes = [
        ((-0.3 * length, 0.3 * length, -0.28 * width, 0.28 * width, 0.0, 0.48 * height),
         trousers, 8.0 + 25.0 * _luminance(trousers), False),
        ((-0.28 * length, 0.28 * length, -0.45 * width, 0.45 * width, 0.48 * height,
          0.83 * height), jacket, 8.0 + 25.0 * _luminance(jacket), False),
        ((-0.1, 0.1, -0.09, 0.09, 0.86 * height, height), skin, 18.0, False),
    ]
    return size, _parts(boxes, size)


def _cyclist_shape(rng: np.random.Generator) -> Tuple[Tuple[float, float, float], Parts]:
    size = (_normal(rng, 1.75, 0.08, 1.55, 1.95), _normal(rng, 0.62, 0.05, 0.5, 0.75),
            _normal(rng, 1.72, 0.06, 1.55, 1.9))
    length, width, height = size
    frame, jacket, helmet = _pick(rng, _BRIGHT), _pick(rng, _BRIGHT), _pick(rng, _BRIGHT)
    trousers = _pick(rng, _CLOTHES)
    boxes = [
        ((length / 2 - 0.68, length / 2, -0.03, 0.03, 0.0, 0.68), _TYRE, 110.0, False),
        ((-length / 2, -length / 2 + 0.68, -0.03, 0.03, 0.0, 0.68), _TYRE, 110.0, False),
        ((-length / 2 + 0.34, length / 2 - 0.34, -0.04, 0.04, 0.3, 0.85), frame, 35.0, False),
        ((length / 2 - 0.45, length / 2 - 0.35, -0.45 * width, 0.45 * width, 0.56 * height,
          0.62 * height), _DARK_METAL, 20.0, False),
        ((-0.1 * length, 0.12 * length, -0.15, 0.15, 0.22 * height, 0.52 * height), trousers,
         10.0 + 25.0 * _luminance(trousers), False),
        ((-0.2 * length, 0.1 * length, -0.4 * width, 0.4 * width, 0.52 * height, 0.84 * height),
         jacket, 10.0 + 25.0 * _luminance(jacket), False),
        ((-0.12, 0.06, -0.1, 0.1, 0.85 * height, height), helmet, 25.0, False),
    ]
    return size, _parts(boxes, size)


def _animal_shape(rng: np.random.Generator) -> Tuple[Tuple[float, float, float], Parts]:
    size = (_normal(rng, 0.9, 0.1, 0.7, 1.1), _normal(rng, 0.3, 0.03, 0.25, 0.38),
            _normal(rng, 0.6, 0.06, 0.45, 0.75))
    length, width, height = size
    fur = _pick(rng, _SKIN)
    boxes = [
        ((-0.35 * length, 0.35 * length, -0.3 * width, 0.3 * width, 0.0, 0.3 * height), fur,
         15.0, False),
        ((-0.4 * length, 0.3 * length, -0.5 * width, 0.5 * width, 0.3 * height, 0.75 * height),
         fur, 15.0, False),
        ((0.3 * length, 0.5 * length, -0.3 * width, 0.3 * width, 0.6 * height, height), fur,
         15.0, False),
    ]
    return size, _parts(boxes, size)


def _tree_shape(rng: np.random.Generator) -> Tuple[Tuple[float, float, float], Parts]:
    crown = float(rng.uniform(2.5, 4.5))
    trunk_height = float(rng.uniform(2.3, 3.2))
    crown_height = float(rng.uniform(2.5, 4.5))
    size = (crown, crown, trunk_height + crown_height)
    leaves = (float(rng.uniform(0.1, 0.2)), float(rng.uniform(0.28, 0.42)),
              float(rng.uniform(0.08, 0.15)))
    boxes = [
        ((-0.15, 0.15, -0.15, 0.15, 0.0, trunk_height + 0.3), (0.3, 0.2, 0.12), 12.0, False),
        ((-crown / 2, crown / 2, -crown / 2, crown / 2, trunk_height,
          trunk_height + 0.6 * crown_height), leaves, 22.0, True),
        ((-0.35 * crown, 0.35 * crown, -0.35 * crown, 0.35 * crown,
          trunk_height + 0.6 * crown_height, trunk_height + crown_height), leaves, 22.0, True),
    ]
    return size, _parts(boxes, size)


@dataclass
class _ActorFactory:
    """Creates actors with per-category instance numbers for the label colours."""

    rng: np.random.Generator
    counts: Dict[str, int] = field(default_factory=dict)

    def _category(self, base: str) -> str:
        number = self.counts.get(base, 0)
        self.counts[base] = number + 1
        return f'{base} {number % _LABEL_NAMES[base] + 1}' if base in _LABEL_NAMES else base

    def make(self, kind: str, x_m: float, y_m: float, bottom_m: float, yaw: float,
             speed_x_mps: float) -> Actor:
        rng = self.rng
        if kind == 'car':
            van = bool(rng.random() < 0.25)
            size, parts = _car_shape(rng, van)
            class_name, base = ('VanSUV' if van else 'Car'), 'Car'
        elif kind == 'truck':
            (size, parts), class_name, base = _truck_shape(rng), 'Truck', 'Truck'
        elif kind == 'pedestrian':
            (size, parts), class_name, base = _pedestrian_shape(rng), 'Pedestrian', 'Pedestrian'
        elif kind == 'cyclist':
            (size, parts), class_name, base = _cyclist_shape(rng), 'Cyclist', 'Bicycle'
        elif kind == 'animal':
            (size, parts), class_name, base = _animal_shape(rng), 'Animal', 'Animals'
        else:
            (size, parts), class_name, base = _tree_shape(rng), None, 'Nature object'
        return Actor(class_name=class_name, category=self._category(base), size_m=size,
                     x_m=x_m, y_m=y_m, bottom_m=bottom_m, yaw=wrap_angle(yaw),
                     speed_x_mps=speed_x_mps, parts=parts)

    def fill_row(self, kinds: Callable[[], str], x_range: Tuple[float, float], y_m: float,
                 bottom_m: float, heading: float, yaw_jitter: Callable[[], float],
                 speed_x_mps: float, gap: Callable[[], float], lateral_jitter_m: float,
                 keep_out: Tuple[float, float] = (0.0, 0.0),
                 max_half_width_m: float = math.inf) -> List[Actor]:
        """Place actors one after another along X with the same speed (so they never meet).

        An actor whose rotated footprint would reach further than ``max_half_width_m`` from
        the row's centre line is straightened (keeps its direction, loses the jitter).
        """
        actors = []
        x = x_range[0] + float(self.rng.uniform(0.0, gap()))
        while x < x_range[1]:
            actor = self.make(kinds(), 0.0, 0.0, bottom_m, heading + yaw_jitter(), speed_x_mps)
            length, width, _ = actor.size_m
            turn = actor.yaw - heading
            lateral = float(self.rng.uniform(-lateral_jitter_m, lateral_jitter_m))
            if (length * abs(math.sin(turn)) + width * abs(math.cos(turn))) / 2 + abs(lateral) \
                    > max_half_width_m:
                actor = replace(actor, yaw=wrap_angle(
                    heading + (math.pi if math.cos(turn) < 0 else 0.0)))
            footprint = length * abs(math.cos(actor.yaw)) + width * abs(math.sin(actor.yaw))
            centre = x + footprint / 2
            if not keep_out[0] - footprint / 2 < centre < keep_out[1] + footprint / 2:
                actors.append(replace(actor, x_m=centre, y_m=y_m + lateral))
            x += footprint + gap()
        return actors


def _facade_rows(rng: np.random.Generator, y_right: float, y_left: float,
                 x_range: Tuple[float, float]) -> FacadeRows:
    starts, heights, buildings, albedo, floors, spacing, offsets = [], [], [], [], [], [], []
    for _ in range(2):
        offsets.append(len(heights))
        side_starts = []
        x = x_range[0]
        while x < x_range[1]:
            side_starts.append(x)
            building = bool(rng.random() < 0.72)
            buildings.append(building)
            heights.append(float(rng.uniform(6.0, 20.0) if building else rng.uniform(3.0, 9.0)))
            albedo.append(_pick(rng, _FACADES) if building else
                          (float(rng.uniform(0.12, 0.2)), float(rng.uniform(0.28, 0.4)),
                           float(rng.uniform(0.1, 0.16))))
            floors.append(float(rng.uniform(2.8, 3.5)))
            spacing.append(float(rng.uniform(2.2, 3.6)))
            x += float(rng.uniform(8.0, 28.0))
        starts.append(np.array(side_starts))
    return FacadeRows(y_m=(y_right, y_left), starts_m=(starts[0], starts[1]),
                      offset=(offsets[0], offsets[1]), heights_m=np.array(heights),
                      is_building=np.array(buildings), albedo=np.array(albedo),
                      floor_height_m=np.array(floors), window_spacing_m=np.array(spacing))


def _scene_name(seed: int, index: int, rng: np.random.Generator) -> Tuple[str, int]:
    day = datetime.date(2018, 8, 1) + datetime.timedelta(days=(seed * 37) % 400 + index)
    start = datetime.datetime(day.year, day.month, day.day, int(rng.integers(8, 18)),
                              int(rng.integers(60)), int(rng.integers(60)),
                              tzinfo=datetime.timezone.utc)
    tai_us = (int(start.timestamp()) + TAI_MINUS_UTC_S) * 1_000_000
    return start.strftime('%Y%m%d_%H%M%S'), tai_us


def build_scene(seed: int, index: int, frames: int,
                config: SyntheticConfig = SyntheticConfig()) -> Scene:
    """Return scene ``index`` of the drives of ``seed`` (deterministic, independent of others)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0]))
    name, start_tai_us = _scene_name(seed, index, rng)
    lane_width = float(rng.uniform(3.2, 3.6))
    lanes_same, lanes_opposite = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    # Strip between the driving lanes and the curb, per side (right, left).
    strips = [str(rng.choice(['parking', 'bike', 'parking_bike', 'none'],
                             p=[0.3, 0.35, 0.25, 0.1])) for _ in range(2)]
    strip_width = {'parking': 2.7, 'bike': 1.6, 'parking_bike': 4.3, 'none': 0.4}
    edge_right = -(lanes_same * lane_width + strip_width[strips[0]])
    edge_left = lanes_opposite * lane_width + strip_width[strips[1]]
    curb_height = float(rng.uniform(0.1, 0.16))
    sidewalks = (float(rng.uniform(3.2, 4.5)), float(rng.uniform(3.2, 4.5)))
    grass = tuple(0.0 if rng.random() < 0.4 else float(rng.uniform(1.5, 5.0)) for _ in range(2))
    solid_width, dashed_width = float(rng.uniform(0.22, 0.3)), float(rng.uniform(0.18, 0.24))
    solid = [(-lanes_same * lane_width, solid_width), (lanes_opposite * lane_width, solid_width)]
    if strips[0] == 'parking_bike':
        solid.append((edge_right + strip_width['parking'], solid_width))
    if strips[1] == 'parking_bike':
        solid.append((edge_left - strip_width['parking'], solid_width))
    dashed = []
    period, phase = float(rng.uniform(8.0, 12.0)), float(rng.uniform(0.0, 12.0))
    if rng.random() < 0.5:
        solid.append((0.0, solid_width))
    else:
        dashed.append((0.0, dashed_width, 3.0, period, phase))
    if lanes_same == 2:
        dashed.append((-lane_width, dashed_width, 3.0, period, phase))
    if lanes_opposite == 2:
        dashed.append((lane_width, dashed_width, 3.0, period, phase))
    road = RoadLayout(edge_right_m=edge_right, edge_left_m=edge_left, curb_height_m=curb_height,
                      curb_width_m=0.25, sidewalk_width_m=sidewalks,
                      solid_lines=tuple(solid), dashed_lines=tuple(dashed))

    ego_speed = float(rng.uniform(*config.ego_speed_mps))
    ego_lane = int(rng.integers(lanes_same))
    ego_lane_y = -(ego_lane + 0.5) * lane_width
    duration = frames * FRAME_PERIOD_US * 1e-6
    travel = ego_speed * duration
    facade_y = (edge_right - sidewalks[0] - grass[0], edge_left + sidewalks[1] + grass[1])
    facades = _facade_rows(rng, facade_y[0], facade_y[1], (-60.0, travel + 200.0))

    factory = _ActorFactory(rng)
    actors: List[Actor] = []

    def span(speed: float) -> Tuple[float, float]:
        relative = (speed - ego_speed) * duration  # drift relative to the ego over the drive
        return -25.0 - max(0.0, relative), 125.0 - min(0.0, relative)

    def jitter(std: float) -> Callable[[], float]:
        return lambda: float(rng.normal(0.0, std))

    def vehicle_kind() -> str:
        return 'truck' if rng.random() < 0.18 else 'car'

    empty = bool(rng.random() < config.empty_scene_probability)
    if not empty:
        for lane in range(lanes_same):
            speed = ego_speed if lane == ego_lane else max(0.0, ego_speed + rng.uniform(-3, 4))
            keep_out = (-14.0, 7.0) if lane == ego_lane else (0.0, 0.0)
            low, high = span(speed)
            actors += factory.fill_row(
                vehicle_kind, (low, high), -(lane + 0.5) * lane_width, 0.0, 0.0, jitter(0.015),
                speed, lambda: 8.0 + float(rng.exponential(18.0)), 0.1,
                keep_out=keep_out, max_half_width_m=lane_width / 2 - 0.05)
        for lane in range(lanes_opposite):
            speed = -float(rng.uniform(7.0, 14.0))
            low, high = span(speed)
            actors += factory.fill_row(
                vehicle_kind, (low, high), (lane + 0.5) * lane_width, 0.0, math.pi,
                jitter(0.015), speed, lambda: 10.0 + float(rng.exponential(25.0)), 0.1,
                max_half_width_m=lane_width / 2 - 0.05)
        for side, strip in enumerate(strips):
            sign = -1.0 if side == 0 else 1.0
            edge = edge_right if side == 0 else edge_left
            heading = 0.0 if side == 0 else math.pi
            if strip in ('parking', 'parking_bike'):
                centre_y = edge - sign * strip_width['parking'] / 2
                low, high = span(0.0)

                def parked_yaw() -> float:
                    turned = math.pi if rng.random() < 0.1 else 0.0  # parked the other way
                    return turned + float(rng.uniform(-0.3, 0.3) if rng.random() < 0.2
                                          else rng.normal(0.0, 0.03))

                actors += factory.fill_row(
                    lambda: 'truck' if rng.random() < 0.1 else 'car', (low, high), centre_y,
                    0.0, heading, parked_yaw, 0.0,
                    lambda: (float(rng.uniform(6.0, 25.0)) if rng.random() < 0.15
                             else 0.8 + float(rng.exponential(2.0))), 0.05,
                    max_half_width_m=strip_width['parking'] / 2 + 0.05)
            if strip in ('bike', 'parking_bike'):
                centre_y = edge - sign * (strip_width[strip] - 0.8)
                speed = -sign * float(rng.uniform(3.0, 7.0))
                low, high = span(speed)
                actors += factory.fill_row(
                    lambda: 'cyclist', (low, high), centre_y, 0.0, heading, jitter(0.03), speed,
                    lambda: 4.0 + float(rng.exponential(14.0)), 0.1, max_half_width_m=0.7)
            # Sidewalk: people waiting at the curb (any yaw), two walking rows.
            curb_y = edge + sign * 0.6
            low, high = span(0.0)
            actors += factory.fill_row(
                lambda: 'animal' if rng.random() < 0.04 else 'pedestrian', (low, high), curb_y,
                curb_height, 0.0, lambda: float(rng.uniform(-math.pi, math.pi)), 0.0,
                lambda: 3.0 + float(rng.exponential(22.0)), 0.05)
            for row_y, direction in ((edge + sign * 1.7, 1.0),
                                     (edge + sign * (sidewalks[side] - 0.6), -1.0)):
                speed = direction * float(rng.uniform(1.0, 1.6))
                low, high = span(speed)
                actors += factory.fill_row(
                    lambda: 'pedestrian', (low, high), row_y, curb_height,
                    0.0 if direction > 0 else math.pi, jitter(0.1), speed,
                    lambda: 2.5 + float(rng.exponential(18.0)), 0.1)
    for side in range(2):
        if grass[side] >= 1.5 and rng.random() < 0.8:
            sign = -1.0 if side == 0 else 1.0
            edge = edge_right if side == 0 else edge_left
            y = edge + sign * (sidewalks[side] + grass[side] / 2)
            actors += factory.fill_row(
                lambda: 'tree', (-40.0, travel + 180.0), y, curb_height, 0.0, jitter(0.3), 0.0,
                lambda: float(rng.uniform(4.0, 14.0)), max(0.0, min(0.3, grass[side] / 2 - 1.3)))

    elevation = float(rng.uniform(0.45, 1.05))
    azimuth = float(rng.uniform(-math.pi, math.pi))
    sun = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
           math.sin(elevation))
    return Scene(
        name=name, seed=seed, index=index, frames=frames,
        first_frame_number=int(rng.integers(0, 3000)), start_tai_us=start_tai_us,
        camera_height_m=float(rng.uniform(*config.camera_height_m)), ego_speed_mps=ego_speed,
        ego_lane_y_m=ego_lane_y, sway_amplitude_m=float(rng.uniform(0.0, 0.3)),
        sway_period_s=float(rng.uniform(6.0, 15.0)),
        sway_phase=float(rng.uniform(0.0, 2.0 * math.pi)), road=road, facades=facades,
        actors=tuple(actors), sun_direction=sun, exposure=float(rng.uniform(0.85, 1.1)),
        haze_distance_m=float(rng.uniform(250.0, 600.0)),
        lidar_phase_steps=tuple(int(p) for p in rng.integers(0, VLP16_AZIMUTH_STEPS, 5)))


# ----------------------------------------------------------------------------- sensors


@dataclass(frozen=True)
class PixelRays:
    """View-frame unit rays of every pixel of the distorted image, row-major (H * W,)."""

    dx: np.ndarray  # float32
    dy: np.ndarray
    dz: np.ndarray
    u: np.ndarray  # normalised undistorted coordinates (-y / x, -z / x), float32
    v: np.ndarray
    hood: np.ndarray  # bool: pixels covered by the ego car's bonnet


@dataclass(frozen=True)
class LidarRays:
    """The VLP-16 rays that can land in the camera image, view frame, sorted by lidar id."""

    origins: np.ndarray  # (R, 3) float64
    directions: np.ndarray  # (R, 3) float64 unit
    lidar_id: np.ndarray  # (R,) int64, index into LIDAR_IDS
    azimuth_step: np.ndarray  # (R,) int64, 0..1799
    laser: np.ndarray  # (R,) int64, 0..15
    azimuth: np.ndarray  # (R,) float64 radians in [0, 2 pi)


@dataclass(frozen=True)
class SensorRig:
    """The front-center camera and the five lidars for one image size."""

    camera: CameraModel
    pixels: PixelRays
    lidar: LidarRays

    @staticmethod
    def build(image_size: Tuple[int, int] = NATIVE_RESOLUTION) -> 'SensorRig':
        """Precompute pixel and lidar rays for images of ``image_size`` (width, height)."""
        camera = CameraModel.front_center(image_size)
        width, height = image_size
        rows, cols = np.meshgrid(np.arange(height, dtype=np.float64),
                                 np.arange(width, dtype=np.float64), indexing='ij')
        u, v = camera.undistort(rows.ravel(), cols.ravel())
        norm = np.sqrt(1.0 + u * u + v * v)
        hood_top = height * (0.975 + 0.015 * ((cols.ravel() - width / 2) / (width / 2)) ** 2)
        pixels = PixelRays(
            dx=(1.0 / norm).astype(np.float32), dy=(-u / norm).astype(np.float32),
            dz=(-v / norm).astype(np.float32), u=u.astype(np.float32), v=v.astype(np.float32),
            hood=rows.ravel() >= hood_top)
        return SensorRig(camera=camera, pixels=pixels, lidar=_lidar_rays(camera))


def _lidar_rays(camera: CameraModel) -> LidarRays:
    camera_view = camera_calibration('front_center').view.to_json()
    k = camera.cam_matrix
    tan_h = max(k.cx + 0.5, camera.width - 0.5 - k.cx) / k.fx + 0.35
    tan_v = max(k.cy + 0.5, camera.height - 0.5 - k.cy) / k.fy + 0.35
    steps = np.arange(VLP16_AZIMUTH_STEPS)
    azimuth = steps * (2.0 * math.pi / VLP16_AZIMUTH_STEPS)
    elevation = np.radians(np.array(VLP16_ELEVATIONS_DEG))
    step_grid, laser_grid = np.meshgrid(steps, np.arange(len(elevation)), indexing='ij')
    step_grid, laser_grid = step_grid.ravel(), laser_grid.ravel()
    local = np.stack([np.cos(elevation[laser_grid]) * np.cos(azimuth[step_grid]),
                      np.cos(elevation[laser_grid]) * np.sin(azimuth[step_grid]),
                      np.sin(elevation[laser_grid])], axis=1)  # (1800 * 16, 3)
    blocks = []
    for ident, name in enumerate(LIDAR_IDS):
        transform = view_to_view(lidar_view(name).to_json(), camera_view)
        directions = local @ transform[:3, :3].T
        forward = directions[:, 0]
        with np.errstate(divide='ignore', invalid='ignore'):
            keep = ((forward > 0.05) & (np.abs(directions[:, 1] / forward) < tan_h)
                    & (np.abs(directions[:, 2] / forward) < tan_v))
        count = int(keep.sum())
        blocks.append((np.repeat(transform[None, :3, 3], count, axis=0), directions[keep],
                       np.full(count, ident), step_grid[keep], laser_grid[keep]))
    origins, directions, ids, steps_kept, lasers = (np.concatenate(p) for p in zip(*blocks))
    return LidarRays(origins=origins, directions=directions, lidar_id=ids.astype(np.int64),
                     azimuth_step=steps_kept.astype(np.int64), laser=lasers.astype(np.int64),
                     azimuth=steps_kept * (2.0 * math.pi / VLP16_AZIMUTH_STEPS))


# ----------------------------------------------------------------------------- ray casting


@dataclass
class _Hits:
    """Nearest hit per ray (road frame)."""

    t: np.ndarray  # distance along the unit ray, inf = none
    code: np.ndarray  # int32 surface code (row of the frame's surface table)
    face: np.ndarray  # int8 face code (normal), in the part's frame for part hits

    @staticmethod
    def empty(count: int, dtype) -> '_Hits':
        return _Hits(t=np.full(count, np.inf, dtype=dtype), code=np.zeros(count, np.int32),
                     face=np.full(count, _UP, dtype=np.int8))

    def update(self, rays: np.ndarray, t: np.ndarray, code, face) -> None:
        """Keep the hits of ``rays`` (indices) that are nearer than the current ones."""
        closer = t < self.t[rays]
        chosen = rays[closer]
        self.t[chosen] = t[closer]
        self.code[chosen] = code[closer] if np.ndim(code) else code
        self.face[chosen] = face[closer] if np.ndim(face) else face


@dataclass(frozen=True)
class _SurfaceTable:
    """Properties of every surface code of one frame (static, facade segments, parts)."""

    albedo: np.ndarray  # (K, 3) float32
    label_rgb: np.ndarray  # (K, 3) uint8 A2D2 label colour
    category_id: np.ndarray  # (K,) uint8 category id, 255 = ignore
    reflectance: np.ndarray  # (K,) float64 LiDAR reflectance at normal incidence
    foliage: np.ndarray  # (K,) bool
    owner: np.ndarray  # (K,) int64 actor index, -1 for static surfaces and facades
    cos_yaw: np.ndarray  # (K,) rotation of face normals into the road frame
    sin_yaw: np.ndarray
    sun_dot: np.ndarray  # (K, 6) float32 max(0, normal(face) . sun)


@dataclass(frozen=True)
class _World:
    """Actors of one frame in the road frame, and the surface table."""

    centres: np.ndarray  # (P, 3) part centres
    half_sizes: np.ndarray  # (P, 3)
    cos_yaw: np.ndarray  # (P,)
    sin_yaw: np.ndarray  # (P,)
    slices: Tuple[Tuple[int, int], ...]  # part range per actor
    actors: Tuple[Actor, ...]
    actor_centres: np.ndarray  # (A, 3) box centres
    part_offset: int  # surface code of part 0
    table: _SurfaceTable


def _category_id(name: str) -> int:
    category = name.rsplit(' ', 1)[0] if name[-1].isdigit() else name
    return 255 if category == 'Ego car' else SEMANTIC_CATEGORIES.index(category)


def _frame_world(scene: Scene, frame_index: int, ego_x: float) -> _World:
    t = frame_index * FRAME_PERIOD_US * 1e-6
    chosen, centres, halves, yaws, owners, slices, actor_centres = [], [], [], [], [], [], []
    parts_total = 0
    for actor in scene.actors:
        x = actor.x_m + actor.speed_x_mps * t
        reach = 0.5 * max(actor.size_m[0], actor.size_m[1])
        if x - ego_x + reach < -25.0 or x - ego_x - reach > 140.0:
            continue
        centre = np.array([x, actor.y_m, actor.bottom_m + actor.size_m[2] / 2])
        c, s = math.cos(actor.yaw), math.sin(actor.yaw)
        local = actor.parts.centres_m
        centres.append(np.stack([centre[0] + c * local[:, 0] - s * local[:, 1],
                                 centre[1] + s * local[:, 0] + c * local[:, 1],
                                 centre[2] + local[:, 2]], axis=1))
        halves.append(actor.parts.half_sizes_m)
        yaws.append(np.full(len(local), actor.yaw))
        owners.append(np.full(len(local), len(chosen)))
        slices.append((parts_total, parts_total + len(local)))
        parts_total += len(local)
        chosen.append(actor)
        actor_centres.append(centre)

    colours = _label_colours()
    facades = scene.facades
    facade_names = np.where(facades.is_building, 'Buildings', 'Nature object')
    part_names = [actor.category for actor in chosen for _ in range(len(actor.parts.foliage))]
    names = [name for name, _, _ in _STATIC_SURFACES] + list(facade_names) + part_names
    yaw = np.concatenate([np.zeros(FACADE_OFFSET + len(facade_names))] + yaws)
    sun = np.array(scene.sun_direction)
    sun_local = np.stack([np.cos(yaw) * sun[0] + np.sin(yaw) * sun[1],
                          -np.sin(yaw) * sun[0] + np.cos(yaw) * sun[1],
                          np.full(len(yaw), sun[2])], axis=1)
    parts = [actor.parts for actor in chosen]
    table = _SurfaceTable(
        albedo=np.concatenate([np.array([a for _, a, _ in _STATIC_SURFACES]), facades.albedo]
                              + [p.albedo for p in parts]).astype(np.float32),
        label_rgb=np.array([colours[name] for name in names], dtype=np.uint8),
        category_id=np.array([_category_id(name) for name in names], dtype=np.uint8),
        reflectance=np.concatenate([
            [r for _, _, r in _STATIC_SURFACES],
            np.where(facades.is_building, _BUILDING_REFLECTANCE, _HEDGE_REFLECTANCE)]
            + [p.reflectance for p in parts]),
        foliage=np.concatenate([np.zeros(FACADE_OFFSET + len(facade_names), dtype=bool)]
                               + [p.foliage for p in parts]),
        owner=np.concatenate([np.full(FACADE_OFFSET + len(facade_names), -1)] + owners),
        cos_yaw=np.cos(yaw), sin_yaw=np.sin(yaw),
        sun_dot=np.clip(sun_local @ np.array(_FACE_NORMALS).T, 0.0, 1.0).astype(np.float32))

    def join(arrays: list, shape: Tuple[int, ...]) -> np.ndarray:
        return np.concatenate(arrays).astype(np.float64) if arrays else np.zeros(shape)

    part_yaw = join(yaws, (0,))
    return _World(centres=join(centres, (0, 3)), half_sizes=join(halves, (0, 3)),
                  cos_yaw=np.cos(part_yaw), sin_yaw=np.sin(part_yaw), slices=tuple(slices),
                  actors=tuple(chosen),
                  actor_centres=np.array(actor_centres, dtype=np.float64).reshape(-1, 3),
                  part_offset=FACADE_OFFSET + len(facade_names), table=table)


def _cast_ground(origin: Sequence, d: Sequence[np.ndarray], road: RoadLayout,
                 hits: _Hits) -> None:
    """Road (with markings), curb faces and the raised sidewalk / grass level."""
    rays = np.nonzero(d[2] < -1e-6)[0]  # only rays going down reach the ground
    ox, oy, oz = (value[rays] if np.ndim(value) else value for value in origin)
    dx, dy, dz = (component[rays] for component in d)
    inv_dz = 1.0 / dz
    t_top = (road.curb_height_m - oz) * inv_dz
    y_top = oy + t_top * dy
    t_low = -oz * inv_dz
    y_low = oy + t_low * dy
    raised_left = y_top > road.edge_left_m
    raised_right = y_top < road.edge_right_m
    raised = raised_left | raised_right
    face_left = ~raised & (y_low > road.edge_left_m)
    face_right = ~raised & (y_low < road.edge_right_m)
    faces = face_left | face_right
    with np.errstate(divide='ignore', invalid='ignore'):
        t_face = np.where(face_left, road.edge_left_m - oy, road.edge_right_m - oy) / dy
    t = np.where(raised, t_top, np.where(faces, t_face, t_low))

    offset = np.where(raised_left, y_top - road.edge_left_m, road.edge_right_m - y_top)
    sidewalk = np.where(raised_left, road.sidewalk_width_m[1], road.sidewalk_width_m[0])
    code = np.where(offset < road.curb_width_m, CURB,
                    np.where(offset < sidewalk, SIDEWALK, GRASS)).astype(np.int32)
    code[faces] = CURB
    flat = np.nonzero(~raised & ~faces)[0]
    flat_y = y_low[flat]
    flat_code = np.full(len(flat), ROAD, dtype=np.int32)
    for y, width in road.solid_lines:
        flat_code[np.abs(flat_y - y) < width / 2] = SOLID_LINE
    if road.dashed_lines:
        flat_x = (ox[flat] if np.ndim(ox) else ox) + t_low[flat] * dx[flat]
        for y, width, dash, period, phase in road.dashed_lines:
            on_line = np.abs(flat_y - y) < width / 2
            on_line[on_line] = np.mod(flat_x[on_line] - phase, period) < dash
            flat_code[on_line] = DASHED_LINE
    code[flat] = flat_code
    face = np.where(face_left, _TOWARD_RIGHT, np.where(face_right, _TOWARD_LEFT, _UP))
    hits.update(rays, t, code, face.astype(np.int8))


def _cast_facades(origin: Sequence, d: Sequence[np.ndarray], facades: FacadeRows,
                  hits: _Hits) -> None:
    """Facade planes Y = const on both sides; a segment is hit below its height."""
    for side in range(2):
        rays = np.nonzero(d[1] < -1e-6 if side == 0 else d[1] > 1e-6)[0]
        ox, oy, oz = (value[rays] if np.ndim(value) else value for value in origin)
        dx, dy, dz = (component[rays] for component in d)
        t = (facades.y_m[side] - oy) / dy
        x = ox + t * dx
        z = oz + t * dz
        starts = facades.starts_m[side]
        segment = (np.clip(np.searchsorted(starts, x, side='right') - 1, 0, len(starts) - 1)
                   + facades.offset[side])
        hit = np.nonzero((t > 0) & (z <= facades.heights_m[segment]))[0]
        segment, x, z = segment[hit], x[hit], z[hit]
        floor = np.mod(z, facades.floor_height_m[segment]) / facades.floor_height_m[segment]
        column = (np.mod(x, facades.window_spacing_m[segment])
                  / facades.window_spacing_m[segment])
        window = (facades.is_building[segment] & (floor > 0.3) & (floor < 0.75)
                  & (column > 0.25) & (column < 0.75))
        code = np.where(window, WINDOW, FACADE_OFFSET + segment).astype(np.int32)
        hits.update(rays[hit], t[hit], code, _TOWARD_LEFT if side == 0 else _TOWARD_RIGHT)


def _cast_parts(origin: np.ndarray, d: Sequence[np.ndarray], world: _World, start: int,
                stop: int, chunk: int = 1 << 16) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slab test of rays against parts [start, stop); returns (t, part, face) of the nearest.

    Args:
        origin: (3,) or (R, 3) ray origins (road frame).
        d: dx, dy, dz (R,) unit directions.
        world: the frame's parts.
        start: first part to test.
        stop: one past the last part.
        chunk: rays per vectorised block (bounds the (rays, parts) temporaries).
    """
    count = len(d[0])
    t = np.empty(count, dtype=d[0].dtype)
    part = np.empty(count, dtype=np.int32)
    face = np.empty(count, dtype=np.int8)
    origin = np.asarray(origin)
    for first in range(0, count, chunk):
        block = slice(first, min(first + chunk, count))
        block_origin = origin[block] if origin.ndim == 2 else origin
        t[block], part[block], face[block] = _slab_test(
            block_origin, [component[block] for component in d], world, start, stop)
    return t, part, face


def _slab_test(origin: np.ndarray, d: Sequence[np.ndarray], world: _World, start: int,
               stop: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    dtype = d[0].dtype
    dx, dy, dz = (component[:, None] for component in d)  # (R, 1)
    c = world.cos_yaw[start:stop].astype(dtype)
    s = world.sin_yaw[start:stop].astype(dtype)
    half = world.half_sizes[start:stop].astype(dtype)
    rel = (origin[..., None, :] - world.centres[start:stop]).astype(dtype)  # (P, 3) | (R, P, 3)
    local_origin = (c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1],
                    rel[..., 2])
    local_dir = (c * dx + s * dy, -s * dx + c * dy, np.broadcast_to(dz, (len(dz), len(c))))
    t_enter = np.full(local_dir[0].shape, -np.inf, dtype=dtype)  # (R, P)
    t_exit = np.full(local_dir[0].shape, np.inf, dtype=dtype)
    entering_sign = np.zeros(local_dir[0].shape, dtype=bool)
    axis = np.zeros(local_dir[0].shape, dtype=np.int8)
    for a in range(3):
        direction = local_dir[a]
        positive = direction >= 0
        safe = np.where(positive, np.maximum(direction, 1e-12), np.minimum(direction, -1e-12))
        bound = np.where(positive, half[:, a], -half[:, a])
        near = (-bound - local_origin[a]) / safe
        far = (bound - local_origin[a]) / safe
        larger = near > t_enter
        t_enter = np.where(larger, near, t_enter)
        axis = np.where(larger, np.int8(a), axis)
        entering_sign = np.where(larger, positive, entering_sign)
        t_exit = np.minimum(t_exit, far)
    hit = (t_enter <= t_exit) & (t_enter > 1e-4)
    t = np.where(hit, t_enter, np.inf)
    best = np.argmin(t, axis=1)
    rows = np.arange(len(best))
    face = (axis[rows, best] * 2 + entering_sign[rows, best]).astype(np.int8)
    return t[rows, best], (best + start).astype(np.int32), face


def _box_corners(centre: np.ndarray, size: Sequence[float], yaw: float) -> np.ndarray:
    """Return the (8, 3) corners in the documented A2D2 order."""
    offsets = np.array(_BOX_CORNER_SIGNS, dtype=np.float64) * np.asarray(size) / 2
    c, s = math.cos(yaw), math.sin(yaw)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return centre + offsets @ rotation.T


def _part_corners(world: _World) -> np.ndarray:
    """Return the (P, 8, 3) corners of every part (road frame)."""
    offsets = np.array(_BOX_CORNER_SIGNS, dtype=np.float64) * world.half_sizes[:, None, :]
    c, s = world.cos_yaw[:, None], world.sin_yaw[:, None]
    return world.centres[:, None, :] + np.stack(
        [c * offsets[..., 0] - s * offsets[..., 1], s * offsets[..., 0] + c * offsets[..., 1],
         offsets[..., 2]], axis=-1)


def _clip_near(corners: np.ndarray, near_m: float = 0.05) -> np.ndarray:
    """Return the vertices of boxes (B, 8, 3) clipped to x >= near_m (view frame), (V, 3)."""
    edges = np.array(_BOX_EDGES)
    a, b = corners[:, edges[:, 0]], corners[:, edges[:, 1]]  # (B, 12, 3)
    crossing = (a[..., 0] - near_m) * (b[..., 0] - near_m) < 0
    with np.errstate(divide='ignore', invalid='ignore'):
        fraction = (near_m - a[..., 0]) / (b[..., 0] - a[..., 0])
        intersections = a + fraction[..., None] * (b - a)
    inside = corners.reshape(-1, 3)
    return np.concatenate([inside[inside[:, 0] >= near_m], intersections[crossing]])


def _to_view(points_road: np.ndarray, position: np.ndarray, heading: float) -> np.ndarray:
    c, s = math.cos(heading), math.sin(heading)
    rel = points_road - position
    return np.stack([c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1],
                     rel[..., 2]], axis=-1)


def _pixel_block(camera: CameraModel, pixels: PixelRays, vertices_view: np.ndarray,
                 u_bounds: Tuple[float, float], v_bounds: Tuple[float, float]
                 ) -> Optional[np.ndarray]:
    """Return flat indices of the pixels whose rays may hit the convex hull of the vertices."""
    if len(vertices_view) == 0:
        return None
    u = -vertices_view[:, 1] / vertices_view[:, 0]
    v = -vertices_view[:, 2] / vertices_view[:, 0]
    u0, u1 = max(u.min(), u_bounds[0]), min(u.max(), u_bounds[1])
    v0, v1 = max(v.min(), v_bounds[0]), min(v.max(), v_bounds[1])
    if u0 > u1 or v0 > v1:
        return None
    # The rectangle's outline, plus where it crosses the axes (extremes of radial distortion).
    samples = np.linspace(0.0, 1.0, 9)
    along_u, along_v = u0 + (u1 - u0) * samples, v0 + (v1 - v0) * samples
    axis_u, axis_v = min(max(0.0, u0), u1), min(max(0.0, v0), v1)
    edge_u = np.concatenate([along_u, along_u, np.full(9, u0), np.full(9, u1),
                             [axis_u, axis_u, u0, u1]])
    edge_v = np.concatenate([np.full(9, v0), np.full(9, v1), along_v, along_v,
                             [v0, v1, axis_v, axis_v]])
    rows, cols = camera.distort(edge_u, edge_v)
    r0 = max(int(math.floor(rows.min())) - 2, 0)
    r1 = min(int(math.ceil(rows.max())) + 2, camera.height - 1)
    c0 = max(int(math.floor(cols.min())) - 2, 0)
    c1 = min(int(math.ceil(cols.max())) + 2, camera.width - 1)
    if r0 > r1 or c0 > c1:
        return None
    index = (np.arange(r0, r1 + 1)[:, None] * camera.width + np.arange(c0, c1 + 1)).ravel()
    margin = 1e-3
    inside = ((pixels.u[index] >= u0 - margin) & (pixels.u[index] <= u1 + margin)
              & (pixels.v[index] >= v0 - margin) & (pixels.v[index] <= v1 + margin))
    index = index[inside]
    return index if len(index) else None


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class SyntheticFrame:
    """Everything written for one frame, exactly as stored in the files."""

    scene: str
    frame_id: str  # 9 digits
    lidar: Dict[str, np.ndarray]  # npz arrays (points float64 (N, 3), reflectance int64, ...)
    boxes: Dict[str, dict]  # label3D JSON object
    camera_info: dict
    image: np.ndarray  # (H, W, 3) uint8 distorted camera image
    label: np.ndarray  # (H, W, 3) uint8 semantic label in A2D2 colours
    semantic_ids: np.ndarray  # (H, W) uint8 intended category ids (255 = ignore)
    box_points: Dict[str, int]  # label3D key -> LiDAR points on the actor


def _gaussian_levels(std: float) -> np.ndarray:
    """Return 256 equiprobable N(0, std) values (a random byte indexes one: Gaussian noise)."""
    normal = statistics.NormalDist(0.0, std)
    return np.array([normal.inv_cdf((i + 0.5) / 256) for i in range(256)], dtype=np.float32)


_LARGE_BLOCK_PIXELS = 40_000  # above: test parts one by one on their own pixel blocks


def _render_camera(scene: Scene, world: _World, position: np.ndarray, heading: float,
                   rig: SensorRig, rng: np.random.Generator, config: SyntheticConfig):
    """Return (image, label, semantic ids, silhouette and visible pixel counts per actor)."""
    pixels, camera = rig.pixels, rig.camera
    c, s = np.float32(math.cos(heading)), np.float32(math.sin(heading))
    d = (c * pixels.dx - s * pixels.dy, s * pixels.dx + c * pixels.dy, pixels.dz)
    origin = tuple(float(p) for p in position)
    count = len(pixels.dx)
    hits = _Hits.empty(count, np.float32)
    _cast_ground(origin, d, scene.road, hits)
    _cast_facades(origin, d, scene.facades, hits)

    bounds = ((float(pixels.u.min()), float(pixels.u.max())),
              (float(pixels.v.min()), float(pixels.v.max())))
    part_corners = _to_view(_part_corners(world), position, heading)  # (P, 8, 3)
    silhouette = np.zeros(len(world.actors), dtype=np.int64)
    shadow = np.zeros(count, dtype=bool)
    covered = np.zeros(count, dtype=bool)  # scratch: pixels on the current actor
    origin_array = np.array(origin)
    for index, (start, stop) in enumerate(world.slices):
        actor = world.actors[index]
        box = _to_view(_box_corners(world.actor_centres[index], actor.size_m, actor.yaw),
                       position, heading)
        block = _pixel_block(camera, pixels, _clip_near(box[None]), *bounds)
        if block is None:
            continue
        if len(block) * (stop - start) <= _LARGE_BLOCK_PIXELS * 2:
            part_blocks = [(block, start, stop)]
        else:
            part_blocks = [(_pixel_block(camera, pixels, _clip_near(part_corners[p:p + 1]),
                                         *bounds), p, p + 1) for p in range(start, stop)]
        touched = []
        for rays, first, last in part_blocks:
            if rays is None:
                continue
            t, part, face = _cast_parts(origin_array, [component[rays] for component in d],
                                        world, first, last)
            on_actor = rays[np.isfinite(t)]
            silhouette[index] += len(on_actor) - int(np.count_nonzero(covered[on_actor]))
            covered[on_actor] = True
            touched.append(on_actor)
            hits.update(rays, t, world.part_offset + part, face)
        for on_actor in touched:
            covered[on_actor] = False
        if silhouette[index]:
            # Contact shadow: the (enlarged) footprint on the ground level below the actor.
            footprint = _to_view(_box_corners(
                world.actor_centres[index] - (0.0, 0.0, actor.size_m[2] / 2),
                (actor.size_m[0] + 0.4, actor.size_m[1] + 0.4, 0.0), actor.yaw),
                position, heading)
            rays = _pixel_block(camera, pixels, _clip_near(footprint[None]), *bounds)
            if rays is None:
                continue
            dx, dy, dz = (component[rays] for component in d)
            ground_t = (actor.bottom_m - origin[2]) / np.minimum(dz, -1e-6)
            gx = origin[0] + ground_t * dx - world.actor_centres[index, 0]
            gy = origin[1] + ground_t * dy - world.actor_centres[index, 1]
            cy, sy = math.cos(actor.yaw), math.sin(actor.yaw)
            under = ((dz < -1e-6) & (np.abs(cy * gx + sy * gy) < actor.size_m[0] / 2 + 0.2)
                     & (np.abs(-sy * gx + cy * gy) < actor.size_m[1] / 2 + 0.2))
            shadow[rays[under]] = True
    hits.code[pixels.hood] = EGO_HOOD
    hits.face[pixels.hood] = _UP

    table, code = world.table, hits.code
    label = table.label_rgb[code]
    semantic = table.category_id[code]
    owner = table.owner[code]
    visible = np.bincount(owner[owner >= 0], minlength=len(world.actors))

    shade = 0.45 + 0.55 * table.sun_dot[code, hits.face]
    shade[shadow & (code >= ROAD) & (code <= GRASS)] *= np.float32(0.55)
    sky = code == SKY
    haze = 1.0 - np.exp(-hits.t / np.float32(scene.haze_distance_m))
    haze[sky] = 0.0
    horizon = np.array(_HORIZON, dtype=np.float32)
    colour = table.albedo[code] * (shade * (1.0 - haze))[:, None] + haze[:, None] * horizon
    sky_rays = np.nonzero(sky)[0]
    elevation = np.clip(d[2][sky_rays] * 3.0, 0.0, 1.0)[:, None]
    colour[sky_rays] = horizon + (np.array(_ZENITH, dtype=np.float32) - horizon) * elevation
    colour *= np.float32(255.0 * scene.exposure)
    noise = _gaussian_levels(config.image_noise)[
        np.frombuffer(rng.bytes(colour.size), dtype=np.uint8)].reshape(colour.shape)
    colour += noise
    colour += np.float32(0.5)
    image = np.clip(colour, 0.0, 255.0).astype(np.uint8)
    shape = (camera.height, camera.width)
    return (image.reshape(shape + (3,)), label.reshape(shape + (3,)), semantic.reshape(shape),
            silhouette, visible)


def _scan_lidar(scene: Scene, world: _World, position: np.ndarray, heading: float,
                rig: SensorRig, rng: np.random.Generator, config: SyntheticConfig):
    """Cast the lidar rays; return (points_view (R, 3), reflectance, owner per ray, valid)."""
    rays = rig.lidar
    c, s = math.cos(heading), math.sin(heading)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    origins = position + rays.origins @ rotation.T
    directions = rays.directions @ rotation.T
    d = (directions[:, 0], directions[:, 1], directions[:, 2])
    count = len(directions)
    hits = _Hits.empty(count, np.float64)
    _cast_ground((origins[:, 0], origins[:, 1], origins[:, 2]), d, scene.road, hits)
    _cast_facades((origins[:, 0], origins[:, 1], origins[:, 2]), d, scene.facades, hits)
    for index, (start, stop) in enumerate(world.slices):
        # Cull with the actor's bounding sphere, then slab-test the candidate rays.
        radius = 0.5 * math.hypot(*world.actors[index].size_m) + 0.05
        rel = world.actor_centres[index] - origins  # (R, 3)
        along = np.einsum('ij,ij->i', rel, directions)
        miss = np.einsum('ij,ij->i', rel, rel) - along * along
        candidates = np.nonzero((along > -radius) & (miss < radius * radius)
                                & (along - radius < hits.t))[0]
        if len(candidates):
            t, part, face = _cast_parts(origins[candidates], [c[candidates] for c in d],
                                        world, start, stop)
            hits.update(candidates, t, world.part_offset + part, face)

    table, code = world.table, hits.code
    local = np.array(_FACE_NORMALS)[hits.face]
    cos_yaw, sin_yaw = table.cos_yaw[code], table.sin_yaw[code]
    normals = np.stack([cos_yaw * local[:, 0] - sin_yaw * local[:, 1],
                        sin_yaw * local[:, 0] + cos_yaw * local[:, 1], local[:, 2]], axis=1)
    incidence = np.abs(np.einsum('ij,ij->i', normals, directions))

    # Random draws for every ray (same count every frame): noise, dropout, intensity jitter.
    range_noise = rng.normal(0.0, config.range_noise_m, count)
    lost = rng.random(count)
    gain = rng.normal(1.0, 0.08, count)
    offset = rng.normal(0.0, 1.0, count)
    far = np.clip(hits.t / VLP16_MAX_RANGE_M, 0.0, 1.0)
    loss = config.dropout + config.foliage_dropout * table.foliage[code] + 0.3 * far ** 4
    valid = np.isfinite(hits.t) & (hits.t <= VLP16_MAX_RANGE_M) & (lost >= loss)
    distance = np.where(valid, hits.t + range_noise, 0.0)
    points_view = _to_view(origins + distance[:, None] * directions, position, heading)
    reflectance = np.clip(np.rint(table.reflectance[code] * (0.5 + 0.5 * incidence) * gain
                                  + offset), 0, 255)
    return points_view, reflectance.astype(np.int64), table.owner[code], valid


def render_frame(scene: Scene, frame_index: int, rig: SensorRig,
                 config: SyntheticConfig = SyntheticConfig()) -> SyntheticFrame:
    """Render frame ``frame_index`` of ``scene`` (deterministic for the scene's seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed, scene.index,
                                                        1 + frame_index]))
    position, heading = scene.ego_pose(frame_index)
    world = _frame_world(scene, frame_index, float(position[0]))
    sweep_start = (scene.start_tai_us + frame_index * FRAME_PERIOD_US
                   + int(rng.integers(-300, 301)))
    camera_stamp = sweep_start + int(rng.integers(config.camera_delay_us[0],
                                                  config.camera_delay_us[1] + 1))

    points_view, reflectance, owner, valid = _scan_lidar(scene, world, position, heading, rig,
                                                         rng, config)
    image, label, semantic, silhouette, visible = _render_camera(
        scene, world, position, heading, rig, rng, config)

    camera = rig.camera
    with np.errstate(divide='ignore', invalid='ignore'):
        row, col = camera.project_undistorted(points_view)
    keep = (valid & (points_view[:, 0] > 0.0) & (col >= 0.0) & (col < camera.width)
            & (row >= 0.0) & (row < camera.height))
    rays = rig.lidar
    phases = np.array(scene.lidar_phase_steps)[rays.lidar_id]
    firing = np.mod(rays.azimuth_step - phases, VLP16_AZIMUTH_STEPS)
    stamps = sweep_start + np.floor(firing * (FRAME_PERIOD_US / VLP16_AZIMUTH_STEPS)
                                    + rays.laser * VLP16_LASER_INTERVAL_US).astype(np.int64)
    order = np.lexsort((rays.laser, firing, rays.lidar_id))
    order = order[keep[order]]
    points = points_view[order]
    lidar = {
        'points': points,
        'reflectance': reflectance[order],
        'row': row[order],
        'col': col[order],
        'depth': points[:, 0].copy(),
        'distance': np.linalg.norm(points, axis=1),
        'lidar_id': rays.lidar_id[order].astype(np.float64),
        'timestamp': stamps[order],
        'azimuth': rays.azimuth[order],
    }
    points_per_actor = np.bincount(owner[order][owner[order] >= 0],
                                   minlength=len(world.actors))
    boxes, box_points = _label_boxes(world, position, heading, camera, points_per_actor,
                                     silhouette, visible, config)
    info = {'cam_name': 'front_center', 'cam_tstamp': int(camera_stamp),
            'lidar_ids': {str(i): name for i, name in enumerate(LIDAR_IDS)}}
    return SyntheticFrame(scene=scene.name,
                          frame_id=f'{scene.first_frame_number + frame_index:09d}',
                          lidar=lidar, boxes=boxes, camera_info=info, image=image, label=label,
                          semantic_ids=semantic, box_points=box_points)


def _label_boxes(world: _World, position: np.ndarray, heading: float, camera: CameraModel,
                 points_per_actor: np.ndarray, silhouette: np.ndarray, visible: np.ndarray,
                 config: SyntheticConfig) -> Tuple[Dict[str, dict], Dict[str, int]]:
    boxes, box_points = {}, {}
    for index, actor in enumerate(world.actors):
        centre = _to_view(world.actor_centres[index], position, heading)
        if (actor.class_name is None or points_per_actor[index] < config.min_box_points
                or not 0.0 < centre[0] <= config.max_box_depth_m):
            continue
        yaw = wrap_angle(actor.yaw - heading)
        corners = _box_corners(centre, actor.size_m, yaw)
        vertices = _clip_near(corners[None])
        row, col = camera.project_undistorted(vertices)
        bbox = [float(col.min()), float(row.min()), float(col.max()), float(row.max())]
        area = max(bbox[2] - bbox[0], 1e-9) * max(bbox[3] - bbox[1], 1e-9)
        inside = (max(0.0, min(bbox[2], camera.width) - max(bbox[0], 0.0))
                  * max(0.0, min(bbox[3], camera.height) - max(bbox[1], 0.0)))
        occlusion = 1.0 - visible[index] / silhouette[index] if silhouette[index] else 1.0
        key = f'box_{len(boxes)}'
        boxes[key] = {
            '2d_bbox': bbox,
            '3d_points': corners.tolist(),
            'alpha': 0.0,
            'axis': [0.0, 0.0, 1.0 if yaw >= 0.0 else -1.0],
            'center': centre.tolist(),
            'class': actor.class_name,
            'id': len(boxes),
            'occlusion': round(float(occlusion), 2),
            'rot_angle': abs(yaw),
            'size': [float(v) for v in actor.size_m],
            'truncation': round(1.0 - inside / area, 2),
        }
        box_points[key] = int(points_per_actor[index])
    return boxes, box_points


# ----------------------------------------------------------------------------- writing


def _write_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write a compressed npz like np.savez_compressed, with fixed zip timestamps."""
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + '.npy', date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, 'w', force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.asanyarray(value), allow_pickle=False)


def write_frame(root: str, frame: SyntheticFrame, png_compress_level: int = 1) -> None:
    """Write the five files of a frame under ``root`` (folders are created)."""
    for folder in {kind[0] for kind in FILE_KINDS.values()}:
        os.makedirs(os.path.join(root, frame.scene, folder, CAMERA_FOLDER), exist_ok=True)
    _write_npz(frame_path(root, frame.scene, frame.frame_id, 'lidar'), frame.lidar)
    for kind, document in (('label3D', frame.boxes), ('camera_info', frame.camera_info)):
        with open(frame_path(root, frame.scene, frame.frame_id, kind), 'w',
                  encoding='utf-8') as stream:
            stream.write(json.dumps(document, indent=4, sort_keys=True))
    for kind, pixels in (('camera', frame.image), ('label', frame.label)):
        Image.fromarray(pixels).save(
            frame_path(root, frame.scene, frame.frame_id, kind), format='PNG',
            compress_level=png_compress_level)


def write_root_files(root: str, image_size: Tuple[int, int] = NATIVE_RESOLUTION) -> None:
    """Write ``cams_lidars.json`` and ``class_list.json`` at the dataset root."""
    os.makedirs(root, exist_ok=True)
    write_cams_lidars(os.path.join(root, 'cams_lidars.json'), image_size)
    with open(os.path.join(root, 'class_list.json'), 'w', encoding='utf-8') as stream:
        stream.write(json.dumps(class_list_dict(), indent=4) + '\n')


@dataclass(frozen=True)
class GenerationReport:
    """What ``generate`` wrote and how long it took."""

    root: str
    scenes: Tuple[str, ...]
    frames: int  # frames written in total
    seconds: float  # wall clock
    seconds_per_frame: float  # worker wall-clock seconds per frame (slower on a busy machine)
    cpu_seconds_per_frame: float  # worker CPU seconds per frame (one core)


def _render_chunk(task: Tuple[str, int, int, int, int, int, Tuple[int, int],
                              SyntheticConfig]) -> Tuple[str, float, float]:
    root, seed, scene_index, frames, first, stop, image_size, config = task
    started, cpu_started = time.perf_counter(), time.process_time()
    scene = build_scene(seed, scene_index, frames, config)
    rig = SensorRig.build(image_size)
    for frame_index in range(first, stop):
        write_frame(root, render_frame(scene, frame_index, rig, config),
                    config.png_compress_level)
    return scene.name, time.perf_counter() - started, time.process_time() - cpu_started


def generate(out_dir: str, scenes: int, frames: int, seed: int,
             image_size: Tuple[int, int] = NATIVE_RESOLUTION, workers: int = 1,
             config: SyntheticConfig = SyntheticConfig()) -> GenerationReport:
    """Write ``scenes`` drives of ``frames`` frames each under ``out_dir``.

    Args:
        out_dir: dataset root (created).
        scenes: number of scene folders.
        frames: frames per scene (10 Hz).
        seed: base seed; scene i only depends on (seed, i).
        image_size: (width, height) of images and labels; intrinsics are scaled to it.
        workers: processes; the files do not depend on it.
        config: generator settings.
    """
    if scenes < 1 or frames < 1:
        raise ValueError('scenes and frames must be positive')
    started = time.perf_counter()
    write_root_files(out_dir, image_size)
    chunks_per_scene = max(1, min(frames, math.ceil(2 * workers / scenes))) if workers > 1 \
        else 1
    bounds = np.linspace(0, frames, chunks_per_scene + 1).round().astype(int)
    tasks = [(out_dir, seed, index, frames, int(bounds[i]), int(bounds[i + 1]),
              tuple(image_size), config)
             for index in range(scenes) for i in range(chunks_per_scene)
             if bounds[i + 1] > bounds[i]]
    if workers > 1:
        with multiprocessing.Pool(min(workers, len(tasks))) as pool:
            results = pool.map(_render_chunk, tasks, chunksize=1)
    else:
        results = [_render_chunk(task) for task in tasks]
    names = tuple(dict.fromkeys(name for name, _, _ in results))
    return GenerationReport(
        root=out_dir, scenes=names, frames=scenes * frames,
        seconds=time.perf_counter() - started,
        seconds_per_frame=sum(wall for _, wall, _ in results) / (scenes * frames),
        cpu_seconds_per_frame=sum(cpu for _, _, cpu in results) / (scenes * frames))


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='dataset root to write')
    parser.add_argument('--scenes', type=int, required=True, help='number of scenes')
    parser.add_argument('--frames', type=int, required=True, help='frames per scene')
    parser.add_argument('--seed', type=int, required=True, help='base seed (>= 0)')
    parser.add_argument('--workers', type=int, default=1, help='processes (default 1)')
    parser.add_argument('--width', type=int, default=NATIVE_RESOLUTION[0], help='image width')
    parser.add_argument('--height', type=int, default=NATIVE_RESOLUTION[1],
                        help='image height')
    args = parser.parse_args(argv)
    report = generate(args.out, args.scenes, args.frames, args.seed,
                      image_size=(args.width, args.height), workers=args.workers)
    print(f'wrote {report.frames} frames in {len(report.scenes)} scenes to {report.root} '
          f'in {report.seconds:.1f} s; per frame and worker: {report.seconds_per_frame:.2f} s '
          f'wall, {report.cpu_seconds_per_frame:.2f} s CPU')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
