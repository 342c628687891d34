"""Synthetic drives written in the A2D2 ``camera_lidar_semantic_bboxes`` format.

``python -m training.synthetic --out DIR --scenes S --frames F --seed K [--workers N]
[--world KEY=VALUE ...]`` (``SyntheticConfig`` settings, e.g. ``--world
forest_side_weight=0.33`` for the world of the shipped recipe's camera stage) writes a root
with ``cams_lidars.json`` and ``class_list.json`` (from the project's own tables) and S scene
folders ``YYYYMMDD_hhmmss`` of F frames, with the real dataset's folders, file names,
npz keys and dtypes, label3D JSON, camera PNG + info JSON and semantic label PNG;
``training.a2d2`` reads them like real A2D2 (its module docstring gives the layout).

The aim is a distribution wide enough that real sensors and streets fall inside it, not an
A2D2 look-alike. Each scene draws:

- a street: straight or curved (radius down to 60 m), 1-3 lanes each way or one-way, rising or
  falling with a vertical curve and bumps, sometimes a junction with a crossing road; each side
  is urban (kerb, pavement, facades with recesses, shop windows and balconies), suburban
  (kerb, pavement, verge, hedges, fences, walls, houses set back), rural (no kerb, verge or
  embankment, guard rails, trees, open fields) or a car park (rows of parked cars at any angle);
- road users built from real shapes (``training.shapes``): cars, small cars, SUVs and vans
  with bonnet, glass cabin and wheel arches, lorries and buses, walking and standing people
  (children included), cyclists on bicycles; driving in lanes, parked along the kerb or in
  bays, walking on pavements, crossing, standing in groups;
- clutter and hard negatives everywhere: trees, bushes, hedges, poles, lamps, signs, traffic
  lights, fences, guard rails, walls, bollards, bins, benches and parked bicycles (unlabelled);
- a LiDAR (``training.sensors``): beam pattern (16 to 128 lasers, or A2D2's five VLP-16s),
  mounting height and tilt, range noise, ray drop by range, incidence and material, intensity
  model; glass, foliage, spokes and mesh fences let some rays through; most scenes keep every
  return ahead of the car, some only those inside the camera image (as A2D2 files do);
- the height of the model frame's origin (A2D2's front-center camera) above the road,
  1.45-2.2 m;
- a camera (``training.cameras``): A2D2's front-center one, or one of its own (field of view,
  aspect, principal point, distortion, mounting, pitch and yaw), written to the scene's own
  ``cams_lidars.json``; and a look: colours by season and material, foliage texture, clear or
  overcast sky with clouds, exposure, white balance, gamma, blur, noise, JPEG artefacts.

Rays are cast with Embree (``training.world``) against the triangle mesh of each frame. The
camera renders the distorted original image and its label through CamMatrixOriginal +
Distortion, with sun shading, cast shadows, haze and a sky, so label, image and points are
exactly aligned. Everything is deterministic per seed: the same seed writes the same files
byte for byte, whatever the number of workers.
"""

import argparse
from dataclasses import dataclass, replace
import datetime
import json
import math
import multiprocessing
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple
import zipfile

from bev_perception.a2d2_classes import hex_to_rgb, IGNORE_INDEX, SEMANTIC_CATEGORIES, \
    SEMANTIC_COLOURS
from bev_perception.typed_config import build_dataclass, to_plain
import numpy as np
from PIL import Image
from training import cameras, sensors, shapes
from training.a2d2 import CAMERA_FOLDER, FILE_KINDS, frame_path, wrap_angle
from training.a2d2_calibration import (
    camera_calibration, CameraModel, cams_lidars_dict, LIDAR_IDS, lidar_view, NATIVE_RESOLUTION,
    view_to_view, write_cams_lidars)
from training.cli import output_error
from training.settings import apply_override
from training.world import hash_noise, Hits, MeshBuilder, rotation_z, World, WorldBuilder

# ----------------------------------------------------------------------------- constants

#: Changes whenever the generated world changes (data made by another version is regenerated).
WORLD_VERSION = 5
FRAME_PERIOD_US = 100_000  # 10 Hz lidar sweeps
TAI_MINUS_UTC_S = 37
LASER_INTERVAL_US = 2.304

# Ground surfaces: label name, albedo (linear 0..1), LiDAR reflectance 0..1, retro-reflective.
GROUND_SURFACES = (
    ('RD normal street', (0.30, 0.30, 0.32), 0.10, False),
    ('Solid line', (0.90, 0.90, 0.88), 0.55, True),
    ('Dashed line', (0.88, 0.88, 0.86), 0.50, True),
    ('Curbstone', (0.66, 0.65, 0.63), 0.30, False),
    ('Sidewalk', (0.58, 0.54, 0.50), 0.25, False),
    ('Nature object', (0.24, 0.42, 0.16), 0.35, False),  # verge, field
    ('Parking area', (0.36, 0.36, 0.37), 0.12, False),
    ('Non-drivable street', (0.45, 0.40, 0.34), 0.22, False),  # gravel shoulder
)
ROAD, SOLID, DASHED, CURB, PAVEMENT, VERGE, PARKING, SHOULDER = range(len(GROUND_SURFACES))
GUARD_RAIL_BEYOND_M = 0.5  # guard rails stand this far beyond the road's edge
SIDE_KINDS = ('urban', 'suburban', 'rural', 'car_park', 'forest')
_SIDE_WEIGHTS = (0.35, 0.3, 0.22, 0.13)  # of the first four; forest: SyntheticConfig

# Instance-numbered label colours per semantic category ('Car 1'..'Car 4', ...).
_LABEL_NAMES = {'Car': 4, 'Truck': 3, 'Pedestrian': 3, 'Bicycle': 4}

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

    camera_height_m: Tuple[float, float] = (1.45, 2.2)  # road surface at z = -height (view)
    ego_speed_mps: Tuple[float, float] = (0.0, 14.0)
    camera_delay_us: Tuple[int, int] = (40_000, 60_000)  # camera stamp after the sweep start
    min_box_points: int = 5  # an actor is labelled with at least this many LiDAR points
    max_box_depth_m: float = 80.0  # ... and its centre at most this far ahead
    empty_scene_probability: float = 0.06  # scenes without any road user
    camera: Optional[cameras.CameraSetup] = None  # None: drawn per scene, else every scene's
    png_compress_level: int = 1
    view_ahead_m: float = 110.0  # the world is built this far ahead of the ego ...
    view_behind_m: float = 30.0  # ... and this far behind
    view_side_m: float = 60.0  # ... and this far to each side
    # Weight of 'forest' roadsides (tall trees in depth from near the road edge) next to
    # _SIDE_WEIGHTS; 0 draws the streets exactly as before this kind existed.
    forest_side_weight: float = 0.0
    # Cars, vans, lorries and buses with tail lights, headlights and bumpers, lorries' cargo
    # boxes mostly fleet white (shapes.CARGO); False draws them exactly as before.
    vehicle_details: bool = False
    # Roadsides as A2D2 labels them: delineator posts ('Sidebars') along rural and forest
    # roads, and guard rails labelled 'Road blocks' (world 5 called them 'Sidebars', which is
    # what A2D2 calls the posts), rails, posts and concrete blocks in their own colours
    # instead of the scene's facade tint; False draws world 5 exactly.
    delineators: bool = False
    # Share of the trees drawn leafless or as poplars (``shapes.bare_tree``), from a stream of
    # their own: streets, sensors and cameras stay as drawn (what stands near a bare tree may
    # move, its footprint differs); 0 draws world 5's trees.
    bare_tree_share: float = 0.0
    # Share of scenes whose grass verges and fields are dry (``cameras.DRY_GRASS``) whatever
    # the trees' season; 0 lets the verge take the foliage's colour as world 5 did.
    dry_verge_share: float = 0.0
    # Share of the lorries drawn as light drop-side lorries with their load
    # (``shapes.platform_lorry``), from a stream of their own as ``bare_tree_share``; 0 draws
    # world 5's lorries.
    platform_lorry_share: float = 0.0


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Street:
    """The main road (a circular arc or a line) and what lines its two sides.

    Road coordinates: s along the centreline (0 at the world origin, heading +x), l to the left.
    """

    curvature: float  # 1 / radius, positive to the left; 0: straight
    edge_m: Tuple[float, float]  # l of the right (negative) and left road edges
    lane_width_m: float
    lanes: Tuple[int, int]  # lanes on the right (ego direction) and on the left
    side: Tuple[str, str]  # SIDE_KINDS of the right and left sides
    kerb: Tuple[bool, bool]
    kerb_height_m: float
    pavement_m: Tuple[float, float]  # pavement width beyond the kerb (0: none)
    dashed_centre: bool
    dash_period_m: float
    dash_phase_m: float
    grade: float  # slope along s at s = 0
    vertical_curve: float  # d(slope)/ds
    crossfall: float  # slope across the road (drainage)
    bumps: np.ndarray  # (K, 4) ground undulation waves (amplitude, kx, ky, phase)
    junction_s_m: Optional[float]  # s of a crossing road's centre, None: no junction
    junction_half_width_m: float
    # Terrain beyond each side (right, left): (start past the edge m, slope, run m); the ground
    # rises (embankment, hillside) or falls (ditch, valley) by slope * run at most.
    banks: Tuple[Tuple[float, float, float], Tuple[float, float, float]]

    def to_road(self, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return (s, l) of world points."""
        if abs(self.curvature) < 1e-9:
            return x, y
        radius = 1.0 / self.curvature
        angle = np.arctan2(x, (radius - y) * np.sign(radius))
        s = angle * abs(radius)
        l_ = radius - np.sign(radius) * np.hypot(x, radius - y)
        return s, l_

    def to_world(self, s: np.ndarray, l_: np.ndarray) -> Tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
        """Return (x, y, heading) of road coordinates."""
        s, l_ = np.asarray(s, dtype=np.float64), np.asarray(l_, dtype=np.float64)
        if abs(self.curvature) < 1e-9:
            return s, l_, np.zeros_like(s)
        heading = s * self.curvature
        radius = 1.0 / self.curvature
        x = (radius - l_) * np.sin(heading)
        y = radius - (radius - l_) * np.cos(heading)
        return x, y, heading

    def raised(self, s: np.ndarray, l_: np.ndarray) -> np.ndarray:
        """Return (N,) bool: beyond a kerb (on the pavement level)."""
        right = (l_ < self.edge_m[0]) & self.kerb[0]
        left = (l_ > self.edge_m[1]) & self.kerb[1]
        return (right | left) & ~self.in_junction(s, l_)

    def in_junction(self, s: np.ndarray, l_: np.ndarray) -> np.ndarray:
        """Return (N,) bool: on the crossing road."""
        if self.junction_s_m is None:
            return np.zeros(np.shape(s), dtype=bool)
        return np.abs(s - self.junction_s_m) < self.junction_half_width_m

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return the ground height at world points."""
        s, l_ = self.to_road(x, y)
        z = self.grade * s + 0.5 * self.vertical_curve * s * s - self.crossfall * np.abs(l_)
        z = z + _waves(x, y, self.bumps)
        for index, sign in ((0, -1.0), (1, 1.0)):
            start, slope, run = self.banks[index]
            beyond = sign * (l_ - self.edge_m[index]) - start
            z = z + slope * np.clip(beyond, 0.0, run)
        return z + self.kerb_height_m * self.raised(s, l_)

    def surface(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return the ground surface code (N,) at world points."""
        s, l_ = self.to_road(x, y)
        right, left = self.edge_m
        code = np.full(np.shape(x), VERGE, dtype=np.int64)
        for index, sign in ((0, -1.0), (1, 1.0)):
            edge = self.edge_m[index]
            beyond = sign * (l_ - edge)  # distance past this edge
            kind = self.side[index]
            near = (beyond > 0) & (sign * l_ > 0)
            if kind == 'car_park':
                code[near & (beyond < 60.0)] = PARKING
            elif kind in ('rural', 'forest'):
                code[near & (beyond < 0.8)] = SHOULDER
            if self.pavement_m[index] > 0:
                code[near & (beyond < self.pavement_m[index])] = PAVEMENT
            if self.kerb[index]:
                code[near & (beyond < 0.25)] = CURB
        on_road = (l_ >= right) & (l_ <= left)
        code[on_road] = ROAD
        line_w = 0.15
        lines = np.zeros(np.shape(x), dtype=bool)
        for edge in (right + 0.3, left - 0.3):
            lines |= np.abs(l_ - edge) < line_w / 2
        dashed = np.zeros(np.shape(x), dtype=bool)
        dash = np.mod(s + self.dash_phase_m, self.dash_period_m) < 3.0
        for k in range(1, self.lanes[0]):
            dashed |= (np.abs(l_ + k * self.lane_width_m) < line_w / 2) & dash
        for k in range(1, self.lanes[1]):
            dashed |= (np.abs(l_ - k * self.lane_width_m) < line_w / 2) & dash
        if self.lanes[1] > 0:
            centre = np.abs(l_) < line_w / 2
            if self.dashed_centre:
                dashed |= centre & dash
            else:
                lines |= centre
        junction = self.in_junction(s, l_)
        code[on_road & lines & ~junction] = SOLID
        code[on_road & dashed & ~junction] = DASHED
        crossing = junction & (np.abs(l_) < 60.0)
        code[crossing] = ROAD
        return code


def _waves(x: np.ndarray, y: np.ndarray, waves: np.ndarray) -> np.ndarray:
    total = np.zeros(np.broadcast(x, y).shape)
    for amplitude, kx, ky, phase in waves:
        total = total + amplitude * np.sin(kx * x + ky * y + phase)
    return total


@dataclass
class SceneObject:
    """An object of a scene: a mesh in its own frame and how it moves."""

    mesh: MeshBuilder
    x_m: float  # footprint centre at t = 0 (world)
    y_m: float
    z_m: float  # bottom
    yaw: float  # heading in the world
    speed_mps: float  # along the heading
    box_class: Optional[str]  # A2D2 box class, None: not labelled
    size_m: Tuple[float, float, float]  # labelled box (length, width, height)

    def pose(self, t: float) -> Tuple[float, float, float]:
        """Return (x, y, z of the footprint centre) at time ``t``."""
        return (self.x_m + self.speed_mps * t * math.cos(self.yaw),
                self.y_m + self.speed_mps * t * math.sin(self.yaw), self.z_m)


@dataclass
class Scene:
    """One synthetic drive: the street, the objects, the ego motion and the sensors."""

    name: str  # YYYYMMDD_hhmmss
    seed: int
    index: int
    frames: int
    first_frame_number: int
    start_tai_us: int
    street: Street
    materials: WorldBuilder  # the material table shared by every frame
    ground: Tuple[np.ndarray, np.ndarray]  # (V, 3) vertices, (F, 3) faces of the terrain
    ground_material: int
    objects: List[SceneObject]
    camera_height_m: float
    ego_speed_mps: float
    ego_lane_m: float
    ego_yaw_offset: float
    lidar: sensors.LidarSetup
    lidar_phase_steps: Tuple[int, ...]
    sun_direction: np.ndarray  # (3,) unit vector towards the sun
    exposure: float
    haze_distance_m: float
    camera: cameras.CameraSetup
    appearance: cameras.Appearance

    def ego_pose(self, frame_index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Return the camera position (3,) and the view axes (3, 3) (columns) in the world."""
        t = frame_index * FRAME_PERIOD_US * 1e-6
        s = self.ego_speed_mps * t
        x, y, heading = self.street.to_world(np.array([s]), np.array([self.ego_lane_m]))
        heading = float(heading[0]) + self.ego_yaw_offset
        ground = float(self.street.height(x, y)[0])
        grade = self.street.grade + self.street.vertical_curve * s
        pitch = math.atan(grade)
        c, sn = math.cos(heading), math.sin(heading)
        forward = np.array([c * math.cos(pitch), sn * math.cos(pitch), math.sin(pitch)])
        left = np.array([-sn, c, 0.0])
        up = np.cross(forward, left)
        return (np.array([float(x[0]), float(y[0]), ground + self.camera_height_m]),
                np.stack([forward, left, up], axis=1))


# ----------------------------------------------------------------------------- scene building


class _Placer:
    """Places objects without overlaps (rotated footprints, separating-axis test)."""

    def __init__(self, rng: np.random.Generator, scene_materials: WorldBuilder,
                 street: Street, vehicle_details: bool = False,
                 rail_label: str = shapes.WORLD5_GUARD_RAIL_LABEL,
                 bare_trees: Optional[Tuple[np.random.Generator, float]] = None,
                 platform_lorries: Optional[Tuple[np.random.Generator, float]] = None) -> None:
        self.rng = rng
        self.materials = scene_materials
        self.street = street
        self.vehicle_details = vehicle_details
        self.rail_label = rail_label
        self.bare_trees = bare_trees  # (their own stream, share of the trees)
        self.platform_lorries = platform_lorries  # (their own stream, share of the lorries)
        self.objects: List[SceneObject] = []
        self._footprints: List[np.ndarray] = []  # (4, 2) corners
        self._counts: Dict[str, int] = {}

    def label(self, base: str) -> str:
        number = self._counts.get(base, 0)
        self._counts[base] = number + 1
        return f'{base} {number % _LABEL_NAMES[base] + 1}' if base in _LABEL_NAMES else base

    def free(self, corners: np.ndarray) -> bool:
        for other in self._footprints:
            if _overlap(corners, other):
                return False
        return True

    def put(self, mesh: MeshBuilder, size: Tuple[float, float, float], x: float, y: float,
            yaw: float, speed: float = 0.0, box_class: Optional[str] = None,
            margin: float = 0.15, check: bool = True, on_ground: bool = True) -> bool:
        """Place ``mesh`` at (x, y) with heading ``yaw`` unless it overlaps; return placed."""
        corners = _footprint(x, y, size[0] + 2 * margin, size[1] + 2 * margin, yaw)
        if check and not self.free(corners):
            return False
        heights = self.street.height(corners[:, 0], corners[:, 1])
        z = float(heights.min() if on_ground else heights.max())
        self._footprints.append(corners)
        self.objects.append(SceneObject(mesh, x, y, z, wrap_angle(yaw), speed, box_class,
                                        size))
        return True

    def road_user(self, kind: str, x: float, y: float, yaw: float, speed: float = 0.0,
                  margin: float = 0.15) -> bool:
        build, box_class, base = shapes.ROAD_USERS[kind]
        details = ({'details': True} if self.vehicle_details and base in ('Car', 'Truck')
                   else {})
        label = self.label(base)
        mesh, size = build(self.rng, self.materials, label, **details)
        if kind == 'truck' and self.platform_lorries is not None:
            stream, share = self.platform_lorries  # world 5's lorry was drawn: rng goes on
            if stream.random() < share:
                mesh, size = shapes.platform_lorry(stream, self.materials, label)
        return self.put(mesh, size, x, y, yaw, speed, box_class, margin)

    def tree(self, rng: np.random.Generator, tall: bool = False) -> MeshBuilder:
        """Return a leafy tree, a forest's if ``tall``, or a bare one for its share.

        The leafy tree is drawn in any case, so that ``rng`` goes on as in world 5.
        """
        mesh = (shapes.tall_tree if tall else shapes.tree)(rng, self.materials)
        if self.bare_trees is not None:
            stream, share = self.bare_trees
            if stream.random() < share:
                return shapes.bare_tree(stream, self.materials)
        return mesh

    def scenery(self, mesh: MeshBuilder, x: float, y: float, yaw: float,
                margin: float = 0.05, check: bool = True) -> bool:
        low, high = mesh.local_bounds()
        size = (float(high[0] - low[0]), float(high[1] - low[1]), float(high[2] - low[2]))
        centre = (low + high) / 2
        # Move the mesh so its footprint is centred on the origin (placement is by centre).
        mesh.shift((-centre[0], -centre[1], 0.0))
        return self.put(mesh, size, x, y, yaw, 0.0, None, margin, check)


def _footprint(x: float, y: float, length: float, width: float, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64)
    local = signs * (length / 2, width / 2)
    return local @ np.array([[c, s], [-s, c]]) + (x, y)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Return whether two convex quadrilaterals (4, 2) overlap (separating axis test)."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        pa, pb = a @ normals.T, b @ normals.T  # (4, 4)
        if np.any((pa.max(axis=0) < pb.min(axis=0)) | (pb.max(axis=0) < pa.min(axis=0))):
            return False
    return True


def _scene_name(seed: int, index: int, rng: np.random.Generator) -> Tuple[str, int]:
    day = datetime.date(2018, 8, 1) + datetime.timedelta(days=(seed * 37) % 400 + index)
    start = datetime.datetime(day.year, day.month, day.day, int(rng.integers(8, 18)),
                              int(rng.integers(60)), int(rng.integers(60)),
                              tzinfo=datetime.timezone.utc)
    tai_us = (int(start.timestamp()) + TAI_MINUS_UTC_S) * 1_000_000
    return start.strftime('%Y%m%d_%H%M%S'), tai_us


def _draw_street(rng: np.random.Generator, config: SyntheticConfig) -> Street:
    lane_width = float(rng.uniform(2.8, 3.8))
    lanes = (int(rng.choice([1, 1, 2, 3])), int(rng.choice([0, 1, 1, 1, 2])))
    weights = _SIDE_WEIGHTS  # as drawn before the forest kind: world 5 stays byte for byte
    if config.forest_side_weight:
        weights = weights + (config.forest_side_weight,)
        weights = tuple(np.array(weights) / sum(weights))
    side = tuple(SIDE_KINDS[int(rng.choice(len(weights), p=weights))] for _ in range(2))
    margins = [float(rng.uniform(0.3, 3.0)) if rng.random() < 0.6 else 0.3 for _ in range(2)]
    kerb = tuple(bool(kind in ('urban', 'suburban')
                      or (kind == 'car_park' and rng.random() < 0.5)) for kind in side)
    pavement = tuple(float(rng.uniform(1.5, 6.0)) if kind in ('urban', 'suburban') else 0.0
                     for kind in side)
    curvature = 0.0 if rng.random() < 0.45 else float(rng.uniform(-1.0, 1.0)) / float(
        rng.uniform(60.0, 400.0))
    junction = float(rng.uniform(8.0, 60.0)) if rng.random() < 0.3 else None
    bumps = np.stack([rng.uniform(0.0, 0.08, 4), rng.uniform(-0.3, 0.3, 4),
                      rng.uniform(-0.3, 0.3, 4), rng.uniform(0.0, 2 * math.pi, 4)], axis=1)
    banks = tuple((pavement[k] + float(rng.uniform(0.5, 8.0)),
                   float(rng.uniform(-0.35, 0.5)) if side[k] in ('rural', 'suburban', 'forest')
                   and rng.random() < 0.6 else 0.0, float(rng.uniform(2.0, 25.0)))
                  for k in range(2))
    return Street(
        curvature=curvature,
        edge_m=(-(lanes[0] * lane_width + margins[0]), lanes[1] * lane_width + margins[1]),
        lane_width_m=lane_width, lanes=lanes, side=side, kerb=kerb,
        kerb_height_m=float(rng.uniform(0.08, 0.18)), pavement_m=pavement,
        dashed_centre=bool(rng.random() < 0.5), dash_period_m=float(rng.uniform(6.0, 12.0)),
        dash_phase_m=float(rng.uniform(0.0, 12.0)),
        grade=float(rng.normal(0.0, 0.03)), vertical_curve=float(rng.normal(0.0, 0.0006)),
        crossfall=float(rng.uniform(0.0, 0.025)), bumps=bumps, junction_s_m=junction,
        junction_half_width_m=float(rng.uniform(4.0, 8.0)), banks=banks)


def _ground_mesh(street: Street, config: SyntheticConfig, travel: float,
                 cell_m: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """Return the terrain heightfield (vertices (V, 3), faces (F, 3)) around the drive."""
    xs = np.arange(-config.view_behind_m - 10.0, config.view_ahead_m + travel + 10.0, cell_m)
    ys = np.arange(-config.view_side_m - 40.0, config.view_side_m + 40.0 + 1e-6, cell_m)
    gx, gy = np.meshgrid(xs, ys, indexing='ij')
    # Follow the curve: lay the grid out in road coordinates around the centreline.
    wx, wy, _ = street.to_world(gx.ravel(), gy.ravel())
    heights = street.height(wx, wy)
    vertices = np.stack([wx, wy, heights], axis=1)
    nx, ny = len(xs), len(ys)
    index = np.arange(nx * ny).reshape(nx, ny)
    a, b = index[:-1, :-1].ravel(), index[1:, :-1].ravel()
    c, d = index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], axis=1), np.stack([a, c, d], axis=1)])
    return vertices, faces.astype(np.int32)


def _scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index, 0]))


def scene_name(seed: int, index: int) -> str:
    """Return the folder name of scene ``index`` of ``seed`` without building the scene."""
    return _scene_name(seed, index, _scene_rng(seed, index))[0]


#: Stream key of the platform lorries: past the frame streams (1 + frame index) of any drive.
PLATFORM_LORRY_STREAM = 1000


def build_scene(seed: int, index: int, frames: int,
                config: SyntheticConfig = SyntheticConfig()) -> Scene:
    """Return scene ``index`` of the drives of ``seed`` (deterministic, independent of others)."""
    rng = _scene_rng(seed, index)
    name, start_tai_us = _scene_name(seed, index, rng)
    street = _draw_street(rng, config)
    materials = WorldBuilder()
    ground_material = materials.material('RD normal street', (0.3, 0.3, 0.32), 0.1)
    # Bare trees and dry verges come from streams of their own (the rest keeps its draws).
    bare_trees = (None if not config.bare_tree_share else (np.random.default_rng(
        np.random.SeedSequence([seed, index, 4])), config.bare_tree_share))
    platform_lorries = (None if not config.platform_lorry_share else (np.random.default_rng(
        np.random.SeedSequence([seed, index, PLATFORM_LORRY_STREAM])),
        config.platform_lorry_share))
    placer = _Placer(rng, materials, street, config.vehicle_details,
                     shapes.GUARD_RAIL_LABEL if config.delineators
                     else shapes.WORLD5_GUARD_RAIL_LABEL, bare_trees, platform_lorries)
    ego_speed = float(rng.uniform(*config.ego_speed_mps)) if rng.random() < 0.85 else 0.0
    duration = frames * FRAME_PERIOD_US * 1e-6
    travel = ego_speed * duration
    lane_w = street.lane_width_m
    ego_lane = -(int(rng.integers(street.lanes[0])) + 0.5) * lane_w
    # Keep the ego's own path free.
    ego_corners = _footprint(travel / 2 + 1.0, ego_lane, travel + 6.5, 2.2, 0.0)
    placer._footprints.append(ego_corners)
    s_low, s_high = -config.view_behind_m, config.view_ahead_m + travel

    def world(s: float, l_: float, yaw_road: float = 0.0) -> Tuple[float, float, float]:
        x, y, heading = street.to_world(np.array([s]), np.array([l_]))
        return float(x[0]), float(y[0]), float(heading[0]) + yaw_road

    busy = float(rng.uniform(0.2, 1.0))  # traffic and people density of this scene
    empty = bool(rng.random() < config.empty_scene_probability)
    _place_facing_rows(rng, placer, street, world, s_high)
    if not empty:
        _place_traffic(rng, placer, street, world, s_low, s_high, ego_speed, ego_lane, busy)
    rails = [_place_side(rng, placer, street, world, side, s_low, s_high, busy, empty)
             for side in (0, 1)]
    if street.junction_s_m is not None:
        _place_junction(rng, placer, street, world, busy, empty)
    if config.delineators:  # from a stream of their own: the rest of the scene stays as drawn
        posts_rng = np.random.default_rng(np.random.SeedSequence([seed, index, 3]))
        for side in (0, 1):
            if street.side[side] in ('rural', 'forest') and posts_rng.random() < 0.8:
                _place_delineators(posts_rng, placer, world, street.edge_m[side],
                                   -1.0 if side == 0 else 1.0, s_low, s_high, rails[side])

    camera_height = float(rng.uniform(*config.camera_height_m))
    lidar = sensors.draw_setup(rng, camera_height)
    elevation = float(rng.uniform(0.3, 1.2))
    azimuth = float(rng.uniform(-math.pi, math.pi))
    sun = np.array([math.cos(elevation) * math.cos(azimuth),
                    math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    # The camera and the look come from their own stream: the world above stays as drawn.
    look_rng = np.random.default_rng(np.random.SeedSequence([seed, index, 2]))
    camera = cameras.draw_camera(look_rng)  # drawn in any case: the look does not change
    camera = camera if config.camera is None else config.camera
    appearance = cameras.draw_appearance(
        look_rng, _LABEL_NAMES_ALL, len(materials.materials),
        cameras.FACADE_LABELS if config.delineators else cameras.WORLD5_FACADE_LABELS)
    if config.dry_verge_share:
        verge_rng = np.random.default_rng(np.random.SeedSequence([seed, index, 5]))
        if verge_rng.random() < config.dry_verge_share:
            appearance = replace(appearance,
                                 verge_albedo=cameras.draw_dry_verge(verge_rng))
    return Scene(
        name=name, seed=seed, index=index, frames=frames,
        first_frame_number=int(rng.integers(0, 3000)), start_tai_us=start_tai_us,
        street=street, materials=materials, ground=_ground_mesh(street, config, travel),
        ground_material=ground_material, objects=placer.objects,
        camera_height_m=camera_height, ego_speed_mps=ego_speed, ego_lane_m=ego_lane,
        ego_yaw_offset=float(rng.normal(0.0, 0.02)), lidar=lidar,
        lidar_phase_steps=tuple(int(p) for p in rng.integers(0, lidar.azimuth_steps, 5)),
        sun_direction=sun, exposure=float(rng.uniform(0.75, 1.15)),
        haze_distance_m=float(rng.uniform(200.0, 700.0)), camera=camera, appearance=appearance)


def _vehicle_kind(rng: np.random.Generator, heavy: float = 0.12) -> str:
    roll = rng.random()
    if roll < heavy:
        return 'bus' if rng.random() < 0.3 else 'truck'
    return str(rng.choice(['car', 'car', 'small', 'suv', 'van']))


def _place_traffic(rng, placer: _Placer, street: Street, world, s_low: float, s_high: float,
                   ego_speed: float, ego_lane: float, busy: float) -> None:
    """Vehicles in the lanes (both ways), cyclists at the road edge."""
    lane_w = street.lane_width_m
    for direction, count in ((1.0, street.lanes[0]), (-1.0, street.lanes[1])):
        for lane in range(count):
            l_ = -direction * (lane + 0.5) * lane_w
            speed = max(0.0, float(rng.normal(ego_speed, 3.0))) if direction > 0 else float(
                rng.uniform(0.0, 15.0))
            s = s_low + float(rng.uniform(0.0, 15.0))
            while s < s_high:
                kind = _vehicle_kind(rng)
                x, y, heading = world(s, l_ + float(rng.normal(0.0, 0.2)))
                yaw = heading + (0.0 if direction > 0 else math.pi) + float(rng.normal(0, 0.03))
                placer.road_user(kind, x, y, yaw, speed, margin=0.5)
                s += float(rng.uniform(5.0, 12.0) + rng.exponential(25.0 / busy))
    for side, sign in ((0, -1.0), (1, 1.0)):
        if rng.random() < 0.7 * busy and (side == 0 or street.lanes[1] > 0):
            s = s_low + float(rng.uniform(0.0, 20.0))
            while s < s_high:
                l_ = street.edge_m[side] - sign * float(rng.uniform(0.5, 1.0))
                x, y, heading = world(s, l_)
                yaw = heading + (0.0 if side == 0 else math.pi) + float(rng.normal(0, 0.08))
                for rider in range(1 if rng.random() < 0.7 else int(rng.integers(2, 5))):
                    # Riders in a group follow each other, sometimes two abreast.
                    along = -rider * float(rng.uniform(2.0, 3.0))
                    beside = -sign * 0.8 * (rider % 2) * (rng.random() < 0.5)
                    placer.road_user('cyclist', x + along * math.cos(yaw) - beside * math.sin(yaw),
                                     y + along * math.sin(yaw) + beside * math.cos(yaw), yaw,
                                     float(rng.uniform(2.0, 7.0)))
                s += float(rng.uniform(4.0, 10.0) + rng.exponential(25.0 / busy))
    # People crossing the road, now and then.
    for _ in range(int(rng.poisson(0.8 * busy))):
        s = float(rng.uniform(3.0, 45.0))
        l_ = float(rng.uniform(street.edge_m[0], street.edge_m[1]))
        x, y, heading = world(s, l_)
        placer.road_user(str(rng.choice(['pedestrian', 'pedestrian', 'standing'])), x, y,
                         heading + float(rng.choice([-1.0, 1.0])) * math.pi / 2
                         + float(rng.normal(0, 0.3)), float(rng.uniform(0.8, 1.6)))


def _place_side(rng, placer: _Placer, street: Street, world, side: int, s_low: float,
                s_high: float, busy: float, empty: bool) -> bool:
    """Place parked cars, pavement life, furniture, vegetation and buildings of one side.

    Returns:
        Whether the side got a guard rail (``GUARD_RAIL_BEYOND_M`` beyond the road's edge).
    """
    sign = -1.0 if side == 0 else 1.0
    edge = street.edge_m[side]
    kind = street.side[side]
    pavement = street.pavement_m[side]
    facing = 0.0 if side == 0 else math.pi  # parked along the traffic of that side

    def at(s: float, beyond: float, yaw_road: float = 0.0) -> Tuple[float, float, float]:
        return world(s, edge + sign * beyond, yaw_road)

    # Parallel parking at the road edge (inside the road margin or on the carriageway).
    if not empty and rng.random() < (0.7 if kind in ('urban', 'suburban') else 0.25):
        s = s_low + float(rng.uniform(0.0, 5.0))
        while s < s_high:
            if rng.random() < 0.8:
                x, y, heading = at(s, -1.1)
                turned = math.pi if rng.random() < 0.15 else 0.0
                placer.road_user(_vehicle_kind(rng, 0.06), x, y,
                                 heading + facing + turned + float(rng.normal(0, 0.05)))
            spacing = float(rng.uniform(4.5, 7.5))
            s += spacing + (float(rng.exponential(8.0)) if rng.random() < 0.3 else 0.0)
    # Kerb-line furniture: poles, lamps, signs, bollards, trees.
    line = 0.6 if pavement else float(rng.uniform(0.8, 2.5))
    s = s_low + float(rng.uniform(0.0, 8.0))
    while s < s_high:
        roll = rng.random()
        x, y, heading = at(s, line + float(rng.normal(0, 0.1)))
        if roll < 0.3:
            placer.scenery(placer.tree(rng), x, y, float(rng.uniform(0, 6.3)),
                           check=False)
        elif roll < 0.55:
            placer.scenery(shapes.pole(rng, placer.materials,
                                       str(rng.choice(['lamp', 'sign', 'pole', 'light']))),
                           x, y, heading + (math.pi if side == 0 else 0.0) + math.pi / 2,
                           check=False)
        elif roll < 0.7:
            placer.scenery(shapes.small_object(rng, placer.materials, 'bollard'), x, y, 0.0)
        s += float(rng.uniform(3.0, 25.0))
    # Pavement life: people walking and standing, parked bicycles, bins, benches.
    if pavement:
        if not empty:
            for _ in range(int(rng.poisson(busy * 10))):
                s, beyond = float(rng.uniform(s_low, s_high)), float(rng.uniform(0.8, pavement))
                x, y, heading = at(s, beyond)
                roll = rng.random()
                if roll < 0.5:
                    placer.road_user('pedestrian', x, y, heading + float(rng.choice([0, math.pi]))
                                     + float(rng.normal(0, 0.15)), float(rng.uniform(0.8, 1.7)))
                elif roll < 0.75:
                    group = int(rng.integers(1, 4))
                    for k in range(group):
                        placer.road_user('standing', x + float(rng.normal(0, 0.6)),
                                         y + float(rng.normal(0, 0.6)),
                                         float(rng.uniform(-math.pi, math.pi)))
                else:
                    placer.road_user('cyclist', x, y, heading + float(rng.choice([0, math.pi])),
                                     float(rng.uniform(0.0, 4.0)))
        for _ in range(int(rng.poisson(6))):
            s, beyond = float(rng.uniform(s_low, s_high)), float(rng.uniform(0.4, pavement))
            x, y, heading = at(s, beyond)
            what = str(rng.choice(['bicycle', 'bicycle', 'bin', 'bench', 'bollard', 'cone']))
            placer.scenery(shapes.small_object(rng, placer.materials, what), x, y,
                           heading + float(rng.choice([0.0, math.pi / 2, math.pi])))
    _scatter_distractors(rng, placer, at, s_low, s_high, (0.3, max(pavement, 0.3) + (
        0.0 if pavement else float(rng.uniform(2.0, 8.0)))), float(rng.uniform(0.02, 0.12)))
    # Beyond the pavement: buildings, gardens, fields, car parks.
    start = pavement + (0.0 if pavement else 0.8)
    if kind in ('rural', 'suburban') and rng.random() < 0.5:
        _vegetation_belt(rng, placer, at, s_low, s_high, start + float(rng.uniform(0.3, 2.0)))
    rail = False
    if kind == 'urban':
        _building_row(rng, placer, at, s_low, s_high, start + float(rng.uniform(0.0, 1.0)),
                      side, (8.0, 25.0))
    elif kind == 'suburban':
        boundary = start + float(rng.uniform(0.5, 3.0))
        _boundary_row(rng, placer, at, s_low, s_high, boundary, side)
        _building_row(rng, placer, at, s_low, s_high, boundary + float(rng.uniform(3.0, 15.0)),
                      side, (5.0, 10.0))
        _scatter_vegetation(rng, placer, at, s_low, s_high, boundary + 1.0, 20.0, 0.3)
    elif kind in ('rural', 'forest'):
        rail = rng.random() < 0.5
        if rail:  # guard rail in 8 m pieces (follows curves)
            for s in np.arange(s_low, s_high, 8.0):
                x, y, heading = at(float(s) + 4.0, GUARD_RAIL_BEYOND_M)
                placer.scenery(shapes.fence(rng, placer.materials, 8.0, 'guardrail',
                                            placer.rail_label), x, y,
                               heading + (0.0 if side == 1 else math.pi), check=False)
        if kind == 'forest':
            _forest(rng, placer, at, s_low, s_high, start + float(rng.uniform(0.5, 5.0)))
        else:
            _scatter_vegetation(rng, placer, at, s_low, s_high, start + 1.0, 45.0,
                                float(rng.uniform(0.1, 1.0)))
    else:
        _car_park(rng, placer, at, s_low, s_high, start + 1.0, side, busy, empty)
    return rail


def _place_delineators(rng, placer: _Placer, world, edge: float, sign: float, s_low: float,
                       s_high: float, rail: bool) -> None:
    """Delineator posts every 20-50 m along a road edge (``sign``: outwards), both ways.

    On a guard rail they stand on its line (on its posts, as they are mounted); elsewhere
    0.5-1.2 m beyond the edge, where nothing else stands.
    """
    s = s_low + float(rng.uniform(0.0, 50.0))
    while s < s_high:
        beyond = GUARD_RAIL_BEYOND_M if rail else float(rng.uniform(0.5, 1.2))
        x, y, heading = world(s, edge + sign * beyond)
        placer.scenery(shapes.delineator(rng, placer.materials), x, y, heading, check=not rail)
        s += float(rng.uniform(20.0, 50.0))


def _scatter_distractors(rng, placer: _Placer, at, s_low: float, s_high: float,
                         beyond: Tuple[float, float], per_m: float) -> None:
    """Scatter hard negatives (``shapes.DISTRACTORS``), ``per_m`` per metre of roadside."""
    for _ in range(int(rng.poisson(per_m * (s_high - s_low)))):
        s, b = float(rng.uniform(s_low, s_high)), float(rng.uniform(*beyond))
        x, y, heading = at(s, b)
        kind = str(rng.choice(shapes.DISTRACTORS))
        placer.scenery(shapes.distractor(rng, placer.materials, kind), x, y,
                       heading + float(rng.choice([0.0, math.pi / 2, math.pi]))
                       + float(rng.normal(0.0, 0.1)))


def _place_facing_rows(rng, placer: _Placer, street: Street, world, s_high: float) -> None:
    """Facades and walls across the view: a street's end, the far side of a junction.

    Real streets end in a T, bend out of sight or cross another road, so a LiDAR sees long
    structures square to its view 30-100 m ahead; the side rows alone never show those.
    """
    rows = []
    if rng.random() < 0.3:
        rows.append((float(rng.uniform(30.0, min(100.0, s_high))), (-60.0, 60.0)))
    if street.junction_s_m is not None and rng.random() < 0.6:
        far = street.junction_s_m + street.junction_half_width_m + float(rng.uniform(1.0, 6.0))
        rows.extend([(far, (-60.0, street.edge_m[0] - 1.0)),
                     (far, (street.edge_m[1] + 1.0, 60.0))])
    for s, (l_low, l_high) in rows:
        l_ = l_low
        while l_ < l_high:
            length = float(min(rng.uniform(6.0, 30.0), l_high - l_))
            kind = str(rng.choice(['building', 'building', 'wall', 'hedge', 'gap']))
            x, y, heading = world(s, l_ + length / 2)
            yaw = heading - math.pi / 2  # mesh x across the road, its -y towards the ego
            if kind == 'building' and length > 3.0:
                depth = float(rng.uniform(8.0, 20.0))
                mesh = shapes.building(rng, placer.materials, length, depth,
                                       float(rng.uniform(4.0, 20.0)))
                mesh.shift((0.0, -depth / 2, 0.0))
                x, y, _ = world(s + depth / 2, l_ + length / 2)
                placer.put(mesh, (length, depth, 1.0), x, y, yaw, check=False)
            elif kind == 'wall':
                placer.scenery(shapes.fence(rng, placer.materials, length, 'wall'), x, y, yaw,
                               check=False)
            elif kind == 'hedge':
                placer.scenery(shapes.bush(rng, placer.materials, length), x, y, yaw,
                               check=False)
            l_ += length + float(rng.uniform(0.0, 4.0))


def _building_row(rng, placer: _Placer, at, s_low: float, s_high: float, beyond: float,
                  side: int, height_range: Tuple[float, float]) -> None:
    s = s_low - 10.0
    while s < s_high:
        length = float(rng.uniform(8.0, 30.0))
        if rng.random() < 0.15:  # gap: a side street, a yard, a car park entrance
            s += length
            continue
        depth = float(rng.uniform(8.0, 20.0))
        setback = float(rng.uniform(0.0, 0.8)) if rng.random() < 0.7 else float(
            rng.uniform(1.0, 4.0))
        mesh = shapes.building(rng, placer.materials, length, depth,
                               float(rng.uniform(*height_range)))
        # The facade (y = 0 of the mesh, facing -y) looks at the road.
        x, y, heading = at(s + length / 2, beyond + setback + depth / 2)
        mesh.shift((0.0, -depth / 2, 0.0))
        yaw = heading + (0.0 if side == 1 else math.pi)
        placer.put(mesh, (length, depth, 1.0), x, y, yaw, check=False)
        s += length + (float(rng.uniform(0.0, 3.0)) if rng.random() < 0.4 else 0.0)


def _boundary_row(rng, placer: _Placer, at, s_low: float, s_high: float, beyond: float,
                  side: int) -> None:
    s = s_low
    while s < s_high:
        length = float(rng.uniform(6.0, 25.0))
        kind = str(rng.choice(['hedge', 'mesh', 'wood', 'wall', 'none']))
        x, y, heading = at(s + length / 2, beyond)
        if kind == 'hedge':
            placer.scenery(shapes.bush(rng, placer.materials, length), x, y, heading,
                           check=False)
        elif kind != 'none':
            placer.scenery(shapes.fence(rng, placer.materials, length, kind), x, y, heading,
                           check=False)
        s += length + float(rng.uniform(2.0, 6.0))  # gates and drives


def _vegetation_belt(rng, placer: _Placer, at, s_low: float, s_high: float,
                     beyond: float) -> None:
    """Plant a dense, irregular strip of bushes and small trees along the roadside."""
    s = s_low
    while s < s_high:
        x, y, _ = at(s, beyond + float(rng.uniform(0.0, 2.5)))
        mesh = (shapes.bush(rng, placer.materials) if rng.random() < 0.75
                else placer.tree(rng))
        placer.scenery(mesh, x, y, float(rng.uniform(0, 6.3)), check=False)
        s += float(rng.uniform(0.8, 4.0)) + (float(rng.uniform(3.0, 15.0))
                                             if rng.random() < 0.15 else 0.0)


def _scatter_vegetation(rng, placer: _Placer, at, s_low: float, s_high: float, beyond: float,
                        depth: float, density: float) -> None:
    for _ in range(int(rng.poisson(density * (s_high - s_low) * depth / 40.0))):
        s, b = float(rng.uniform(s_low, s_high)), beyond + float(rng.uniform(0.0, depth))
        x, y, _ = at(s, b)
        mesh = (placer.tree(rng) if rng.random() < 0.55
                else shapes.bush(rng, placer.materials))
        placer.scenery(mesh, x, y, float(rng.uniform(0, 6.3)), check=False)
    if rng.random() < 0.3:
        s = float(rng.uniform(s_low, s_high))
        placer.scenery(shapes.pole(rng, placer.materials, 'pole'), *at(s, beyond + 0.5)[:2],
                       0.0, check=False)


def _forest(rng, placer: _Placer, at, s_low: float, s_high: float, beyond: float) -> None:
    """Plant a forest from ``beyond`` metres off the road edge: tall trees and undergrowth."""
    _vegetation_belt(rng, placer, at, s_low, s_high, beyond)
    depth = float(rng.uniform(20.0, 45.0))
    per_m2 = float(rng.uniform(0.04, 0.1))  # a tree per 10-25 square metres
    for _ in range(int(rng.poisson(per_m2 * (s_high - s_low) * depth))):
        s, b = float(rng.uniform(s_low, s_high)), beyond + 1.0 + float(rng.uniform(0.0, depth))
        x, y, _ = at(s, b)
        mesh = (placer.tree(rng, tall=True) if rng.random() < 0.8
                else placer.tree(rng))
        placer.scenery(mesh, x, y, float(rng.uniform(0, 6.3)), check=False)


def _car_park(rng, placer: _Placer, at, s_low: float, s_high: float, beyond: float,
              side: int, busy: float, empty: bool) -> None:
    """Rows of bays (perpendicular or angled), lamp posts, people between the cars."""
    angle = float(rng.choice([math.pi / 2, math.pi / 2, math.pi / 3, 0.0]))
    bay_w, bay_l = float(rng.uniform(2.4, 2.8)), float(rng.uniform(4.8, 5.5))
    aisle = float(rng.uniform(5.5, 7.0))
    occupancy = float(rng.uniform(0.3, 0.95))
    row_beyond = beyond + bay_l / 2
    for _ in range(int(rng.integers(1, 5))):
        s = s_low + float(rng.uniform(0.0, 3.0))
        step = bay_w / max(math.sin(angle), 0.4) if angle else bay_l + 1.0
        while s < s_high:
            if not empty and rng.random() < occupancy:
                x, y, heading = at(s, row_beyond + float(rng.normal(0, 0.1)))
                yaw = heading + angle + float(rng.choice([0.0, math.pi])) + float(
                    rng.normal(0, 0.06))
                placer.road_user(_vehicle_kind(rng, 0.05), x, y, yaw)
            elif rng.random() < 0.08:
                x, y, _ = at(s, row_beyond)
                placer.scenery(shapes.pole(rng, placer.materials, 'lamp'), x, y, 0.0)
            s += step
        if not empty:
            for _ in range(int(rng.poisson(2 * busy))):
                s = float(rng.uniform(s_low, s_high))
                x, y, heading = at(s, row_beyond + bay_l / 2 + aisle / 2)
                placer.road_user(str(rng.choice(['pedestrian', 'standing', 'cyclist'])), x, y,
                                 float(rng.uniform(-math.pi, math.pi)), float(
                                     rng.uniform(0.0, 1.5)))
        row_beyond += bay_l + (aisle if rng.random() < 0.6 else 0.0)


def _place_junction(rng, placer: _Placer, street: Street, world, busy: float,
                    empty: bool) -> None:
    """Traffic lights at the corners and traffic on the crossing road."""
    s_j, half = street.junction_s_m, street.junction_half_width_m
    for s_corner in (s_j - half - 1.0, s_j + half + 1.0):
        for side in (0, 1):
            sign = -1.0 if side == 0 else 1.0
            x, y, heading = world(s_corner, street.edge_m[side] + sign * 0.8)
            placer.scenery(shapes.pole(rng, placer.materials, 'light'), x, y,
                           heading + (math.pi if s_corner < s_j else 0.0), check=False)
    if empty:
        return
    for _ in range(int(rng.poisson(3 * busy))):
        l_ = float(rng.uniform(-50.0, 50.0))
        offset = float(rng.uniform(-half + 1.5, half - 1.5))
        x, y, heading = world(s_j + offset, l_)
        placer.road_user(_vehicle_kind(rng), x, y,
                         heading + (math.pi / 2 if offset > 0 else -math.pi / 2)
                         + float(rng.normal(0, 0.05)), float(rng.uniform(0.0, 12.0)), margin=0.5)


# ----------------------------------------------------------------------------- sensors


@dataclass(frozen=True)
class PixelRays:
    """Model-frame unit rays of every pixel of the distorted image, row-major (H * W,)."""

    origin: np.ndarray  # (3,) the camera centre in the model frame
    directions: np.ndarray  # (H * W, 3) float64
    hood: np.ndarray  # bool: pixels covered by the ego car's bonnet


@dataclass(frozen=True)
class SensorRig:
    """A scene's camera for one nominal image size and its pixel rays."""

    setup: cameras.CameraSetup
    camera: CameraModel  # intrinsics and size; its view frame is the camera's own
    camera_to_model: np.ndarray  # (4, 4) camera view frame -> model frame
    pixels: PixelRays

    @staticmethod
    def build(image_size: Tuple[int, int] = NATIVE_RESOLUTION,
              setup: cameras.CameraSetup = cameras.CameraSetup()) -> 'SensorRig':
        """Precompute pixel rays of ``setup`` for the recipe's ``image_size`` (width, height).

        A drawn camera keeps the width and has its own height (``CameraSetup.image_size``).
        """
        camera = cameras.camera_model(setup, image_size)
        width, height = camera.width, camera.height
        rows, cols = np.meshgrid(np.arange(height, dtype=np.float64),
                                 np.arange(width, dtype=np.float64), indexing='ij')
        u, v = camera.undistort(rows.ravel(), cols.ravel())
        norm = np.sqrt(1.0 + u * u + v * v)
        hood_top = height * (0.975 + 0.015 * ((cols.ravel() - width / 2) / (width / 2)) ** 2)
        transform = setup.camera_to_model()
        directions = np.stack([1.0 / norm, -u / norm, -v / norm], axis=1) @ transform[:3, :3].T
        return SensorRig(setup=setup, camera=camera, camera_to_model=transform,
                         pixels=PixelRays(origin=transform[:3, 3].copy(), directions=directions,
                                          hood=(rows.ravel() >= hood_top) & setup.nominal))

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """Return model-frame points (..., 3) in the camera's view frame."""
        return (points - self.camera_to_model[:3, 3]) @ self.camera_to_model[:3, :3]


@dataclass(frozen=True)
class _LidarRays:
    """A scene's LiDAR rays in the camera view frame."""

    origins: np.ndarray  # (R, 3)
    directions: np.ndarray  # (R, 3) unit
    lidar_id: np.ndarray  # (R,) int64 index into LIDAR_IDS
    laser: np.ndarray  # (R,) int64
    step: np.ndarray  # (R,) int64 azimuth step
    azimuth: np.ndarray  # (R,) float64 radians in [0, 2 pi)


#: The sensor id written for a single (non-A2D2) LiDAR.
_SINGLE_LIDAR_ID = LIDAR_IDS.index('front_center')


def _lidar_rays(setup: sensors.LidarSetup) -> _LidarRays:
    directions, laser, step, azimuth = sensors.sensor_rays(setup)
    if setup.pattern != sensors.A2D2_RIG:
        rotation, translation = sensors.sensor_pose(setup)
        count = len(directions)
        return _LidarRays(np.repeat(translation[None], count, axis=0), directions @ rotation.T,
                          np.full(count, _SINGLE_LIDAR_ID, dtype=np.int64), laser, step,
                          azimuth)
    camera_view = camera_calibration('front_center').view.to_json()
    blocks = []
    for ident, name in enumerate(LIDAR_IDS):
        # The A2D2 lidars look sideways and backwards too: cast all around, keep what is ahead.
        d, la, st, az = sensors.sensor_rays(replace(setup, half_azimuth_rad=math.pi))
        transform = view_to_view(lidar_view(name).to_json(), camera_view)
        rotated = d @ transform[:3, :3].T
        keep = rotated[:, 0] > 0.05
        count = int(keep.sum())
        blocks.append((np.repeat(transform[None, :3, 3], count, axis=0), rotated[keep],
                       np.full(count, ident, dtype=np.int64), la[keep], st[keep], az[keep]))
    return _LidarRays(*(np.concatenate(p) for p in zip(*blocks)))


# ----------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class _Frame:
    """The world of one frame and the camera pose in it."""

    world: World
    ground_material: int
    position: np.ndarray  # (3,) camera position
    axes: np.ndarray  # (3, 3) view axes (columns) in the world
    objects: Tuple[SceneObject, ...]
    centres: np.ndarray  # (A, 3) world box centres
    t: float


def _frame_world(scene: Scene, frame_index: int) -> _Frame:
    t = frame_index * FRAME_PERIOD_US * 1e-6
    position, axes = scene.ego_pose(frame_index)
    builder = WorldBuilder()
    builder.materials = scene.materials.materials
    vertices, faces = scene.ground
    builder.append(vertices, faces, np.full(len(faces), scene.ground_material, np.int32), -1)
    centres = np.zeros((len(scene.objects), 3))
    for index, obj in enumerate(scene.objects):
        x, y, z = obj.pose(t)
        centres[index] = (x, y, z + obj.size_m[2] / 2)
        obj.mesh.place(rotation_z(obj.yaw), (x, y, z), index, builder)
    return _Frame(builder.build(), scene.ground_material, position, axes,
                  tuple(scene.objects), centres, t)


def _to_view(points: np.ndarray, frame: _Frame) -> np.ndarray:
    return (points - frame.position) @ frame.axes


def _surface_properties(scene: Scene, frame: _Frame, hits: Hits, points: np.ndarray
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                   np.ndarray]:
    """Return per hit: albedo (R, 3), reflectance, retro, label name index, texture amplitude."""
    materials = frame.world.materials
    face = np.where(hits.hit, hits.face, 0)
    material = frame.world.mesh.material[face]
    albedo = np.array([m.albedo for m in materials], dtype=np.float64)[material]
    reflectance = np.array([m.reflectance for m in materials])[material]
    retro = np.array([m.retro for m in materials])[material]
    texture = np.array([m.texture for m in materials])[material]
    labels = np.array([_LABEL_INDEX[m.label] for m in materials])[material]
    on_ground = hits.hit & (material == frame.ground_material)
    if on_ground.any():
        code = scene.street.surface(points[on_ground, 0], points[on_ground, 1])
        table = GROUND_SURFACES
        albedo[on_ground] = np.array([row[1] for row in table])[code]
        reflectance[on_ground] = np.array([row[2] for row in table])[code]
        retro[on_ground] = np.array([row[3] for row in table])[code]
        labels[on_ground] = np.array([_LABEL_INDEX[row[0]] for row in table])[code]
        texture[on_ground] = 0.12
    return albedo, reflectance, retro, labels, texture


_LABEL_NAMES_ALL = tuple(name for _, name in SEMANTIC_COLOURS)
_LABEL_INDEX = {name: index for index, name in enumerate(_LABEL_NAMES_ALL)}
_LABEL_RGB = np.array([hex_to_rgb(colour) for colour, _ in SEMANTIC_COLOURS], dtype=np.uint8)


def _category_id(name: str) -> int:
    category = name.rsplit(' ', 1)[0] if name[-1].isdigit() else name
    return IGNORE_INDEX if category == 'Ego car' else SEMANTIC_CATEGORIES.index(category)


_LABEL_CATEGORY = np.array([_category_id(name) for name in _LABEL_NAMES_ALL], dtype=np.uint8)


def _render_camera(scene: Scene, frame: _Frame, rig: SensorRig, rng: np.random.Generator):
    """Return (image, label, semantic ids, visible pixels per object)."""
    directions = rig.pixels.directions @ frame.axes.T  # (P, 3) world
    origin = frame.position + frame.axes @ rig.pixels.origin
    hits = frame.world.cast(origin, directions)
    points = origin + np.where(hits.hit, hits.distance, 0.0)[:, None] * directions
    albedo, _, _, labels, texture = _surface_properties(scene, frame, hits, points)
    look = scene.appearance
    material = frame.world.mesh.material[np.where(hits.hit, hits.face, 0)]
    tint = np.where(frame.world.own_colour[material][:, None], 1.0, look.label_gain[labels])
    albedo *= tint * look.material_gain[material]
    if look.verge_albedo is not None:  # a dry verge: its own colour, not the trees' season
        verge = hits.hit & (material == frame.ground_material) & (
            labels == _LABEL_INDEX['Nature object'])
        albedo[verge] = look.verge_albedo * look.material_gain[frame.ground_material]
    sky = ~hits.hit
    labels[sky] = _LABEL_INDEX['Sky']
    labels[rig.pixels.hood] = _LABEL_INDEX['Ego car']
    owner = np.where(hits.hit, frame.world.mesh.owner[np.where(hits.hit, hits.face, 0)], -1)
    owner[rig.pixels.hood] = -1
    visible = np.bincount(owner[owner >= 0], minlength=len(frame.objects))

    # Shading: ambient + sun, cast shadows, procedural texture, haze.
    lit = np.nonzero(hits.hit)[0]
    sun = scene.sun_direction
    facing = np.clip(hits.normal[lit] @ sun, 0.0, 1.0)
    shadow_rays = frame.world.cast(points[lit] + hits.normal[lit] * 0.02,
                                   np.broadcast_to(sun, (len(lit), 3)).copy(),
                                   max_distance=150.0)
    facing[shadow_rays.hit] = 0.0
    noise = hash_noise(points[lit], 0.35, scene.index) * 0.6 + hash_noise(
        points[lit], 0.07, scene.index + 1) * 0.4
    variation = texture[lit] * noise
    foliage = labels[lit] == _LABEL_INDEX['Nature object']  # leaves: fine, strong texture
    variation[foliage] += look.foliage_texture * hash_noise(points[lit][foliage], 0.03,
                                                            scene.index + 2)
    colour = np.zeros((len(directions), 3))
    shade = (1.0 - look.sun_strength + look.sun_strength * facing) * (1.0 + variation)
    sky_colour = cameras.sky_colour(directions, look, scene.index)
    haze = 1.0 - np.exp(-hits.distance[lit] / scene.haze_distance_m)
    colour[lit] = (albedo[lit] * (shade * (1.0 - haze))[:, None]
                   + haze[:, None] * sky_colour[lit] * 0.95)
    through = frame.world.sky_through[material[lit]]
    if through.any():  # bare crowns: the sky shows between the twigs, more in some pixels
        share = through * (0.5 + 0.5 * hash_noise(points[lit], 0.05, scene.index + 3))
        colour[lit] += share[:, None] * (sky_colour[lit] - colour[lit])
    colour[sky] = sky_colour[sky]
    colour[rig.pixels.hood] = (0.1, 0.11, 0.13)
    shape = (rig.camera.height, rig.camera.width)
    image = cameras.finish_image(colour.reshape(shape + (3,)), scene.exposure, look, rng)
    return (image, _LABEL_RGB[labels].reshape(shape + (3,)),
            _LABEL_CATEGORY[labels].reshape(shape), visible)


def _scan_lidar(scene: Scene, frame: _Frame, rays: _LidarRays, rng: np.random.Generator):
    """Cast the LiDAR; return (points in the view frame (R, 3), intensity, owner, valid)."""
    setup = scene.lidar
    origins = frame.position + rays.origins @ frame.axes.T
    directions = rays.directions @ frame.axes.T
    count = len(directions)
    hits = frame.world.cast(origins, directions, rng=rng, max_distance=setup.max_range_m)
    points = origins + np.where(hits.hit, hits.distance, 0.0)[:, None] * directions
    _, reflectance, retro, _, _ = _surface_properties(scene, frame, hits, points)
    incidence = np.abs(np.einsum('ij,ij->i', hits.normal, directions))
    range_noise = rng.normal(0.0, setup.range_noise_m, count)
    # Leaves return from inside the crown, not from its hull: a volumetric scatter.
    scatter = frame.world.scatter_m[frame.world.mesh.material[np.where(hits.hit, hits.face, 0)]]
    range_noise += rng.random(count) * scatter
    lost = rng.random(count)
    distance = np.where(hits.hit, hits.distance, 0.0)
    loss = sensors.drop_probability(setup, distance, incidence, reflectance)
    valid = hits.hit & (distance >= setup.min_range_m) & (lost >= loss)
    values = sensors.intensity(setup, reflectance, retro, incidence, distance, rng)
    range_noise += setup.laser_range_bias_m[rays.laser]
    measured = origins + (distance + range_noise)[:, None] * directions
    owner = np.where(hits.hit, frame.world.mesh.owner[np.where(hits.hit, hits.face, 0)], -1)
    return _to_view(measured, frame), values, owner, valid


def render_frame(scene: Scene, frame_index: int, rig: SensorRig,
                 config: SyntheticConfig = SyntheticConfig()) -> 'SyntheticFrame':
    """Render frame ``frame_index`` of ``scene`` (deterministic for the scene's seed).

    ``rig`` is ``SensorRig.build(image_size, scene.camera)`` (built once per scene).
    """
    if rig.setup != scene.camera:
        raise ValueError(f'scene {scene.name}: the rig was built for another camera')
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed, scene.index,
                                                        1 + frame_index]))
    frame = _frame_world(scene, frame_index)
    sweep_start = (scene.start_tai_us + frame_index * FRAME_PERIOD_US
                   + int(rng.integers(-300, 301)))
    camera_stamp = sweep_start + int(rng.integers(config.camera_delay_us[0],
                                                  config.camera_delay_us[1] + 1))
    rays = _lidar_rays(scene.lidar)
    points_view, reflectance, owner, valid = _scan_lidar(scene, frame, rays, rng)
    image, label, semantic, visible = _render_camera(scene, frame, rig, rng)

    camera = rig.camera
    in_camera = rig.to_camera(points_view)
    ahead = points_view[:, 0] > 0.5
    facing = ahead & (in_camera[:, 0] > 0.5)
    with np.errstate(divide='ignore', invalid='ignore'):
        row, col = camera.project_undistorted(np.where(facing[:, None], in_camera, 1.0))
    in_image = (facing & (col >= 0.0) & (col < camera.width) & (row >= 0.0)
                & (row < camera.height))
    keep = valid & (in_image if scene.lidar.fov_crop else ahead)
    steps = scene.lidar.azimuth_steps
    phases = np.array(scene.lidar_phase_steps)[rays.lidar_id]
    firing = np.mod(rays.step - phases, steps)
    stamps = sweep_start + np.floor(firing * (FRAME_PERIOD_US / steps)
                                    + rays.laser * LASER_INTERVAL_US).astype(np.int64)
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
    points_per_object = np.bincount(owner[order][owner[order] >= 0],
                                    minlength=len(frame.objects))
    boxes, box_points = _label_boxes(frame, rig, points_per_object, visible, config)
    info = {'cam_name': 'front_center', 'cam_tstamp': int(camera_stamp),
            'lidar_ids': {str(i): name for i, name in enumerate(LIDAR_IDS)}}
    return SyntheticFrame(scene=scene.name,
                          frame_id=f'{scene.first_frame_number + frame_index:09d}',
                          lidar=lidar, boxes=boxes, camera_info=info, image=image, label=label,
                          semantic_ids=semantic, box_points=box_points)


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


def box_corners(centre: np.ndarray, size: Sequence[float], yaw: float) -> np.ndarray:
    """Return the (8, 3) corners in the documented A2D2 order."""
    offsets = np.array(_BOX_CORNER_SIGNS, dtype=np.float64) * np.asarray(size) / 2
    return centre + offsets @ rotation_z(yaw).T


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


def _label_boxes(frame: _Frame, rig: SensorRig, points_per_object: np.ndarray,
                 visible: np.ndarray, config: SyntheticConfig
                 ) -> Tuple[Dict[str, dict], Dict[str, int]]:
    boxes, box_points = {}, {}
    camera = rig.camera
    heading = math.atan2(frame.axes[1, 0], frame.axes[0, 0])
    for index, obj in enumerate(frame.objects):
        centre = _to_view(frame.centres[index], frame)
        if (obj.box_class is None or points_per_object[index] < config.min_box_points
                or not 0.0 < centre[0] <= config.max_box_depth_m):
            continue
        yaw = wrap_angle(obj.yaw - heading)
        corners = box_corners(centre, obj.size_m, yaw)
        vertices = _clip_near(rig.to_camera(corners)[None])
        with np.errstate(divide='ignore', invalid='ignore'):
            row, col = camera.project_undistorted(vertices)
        if len(vertices):
            bbox = [float(col.min()), float(row.min()), float(col.max()), float(row.max())]
        else:
            bbox = [0.0, 0.0, 0.0, 0.0]
        area = max(bbox[2] - bbox[0], 1e-9) * max(bbox[3] - bbox[1], 1e-9)
        inside = (max(0.0, min(bbox[2], camera.width) - max(bbox[0], 0.0))
                  * max(0.0, min(bbox[3], camera.height) - max(bbox[1], 0.0)))
        # Occlusion: visible pixels against a filled silhouette of ~60 % of the in-image box.
        occlusion = 1.0 - min(1.0, visible[index] / max(0.6 * inside, 1.0))
        key = f'box_{len(boxes)}'
        boxes[key] = {
            '2d_bbox': bbox,
            '3d_points': corners.tolist(),
            'alpha': 0.0,
            'axis': [0.0, 0.0, 1.0 if yaw >= 0.0 else -1.0],
            'center': centre.tolist(),
            'class': obj.box_class,
            'id': len(boxes),
            'occlusion': round(float(occlusion), 2),
            'rot_angle': abs(yaw),
            'size': [float(v) for v in obj.size_m],
            'truncation': round(1.0 - inside / area, 2),
        }
        box_points[key] = int(points_per_object[index])
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


def write_scene_camera(scene_dir: str, camera: cameras.CameraSetup,
                       image_size: Tuple[int, int]) -> None:
    """Write a scene's own ``cams_lidars.json`` (its front-center camera is ``camera``)."""
    document = cams_lidars_dict(image_size)
    document['cameras']['front_center'] = cameras.scene_camera_entry(camera, image_size)
    os.makedirs(scene_dir, exist_ok=True)
    with open(os.path.join(scene_dir, 'cams_lidars.json'), 'w', encoding='utf-8') as stream:
        stream.write(json.dumps(document, indent=2) + '\n')


@dataclass(frozen=True)
class GenerationReport:
    """What ``generate`` wrote and how long it took."""

    root: str
    scenes: Tuple[str, ...]  # the scene folders written by this call
    frames: int  # frames written by this call
    seconds: float  # wall clock
    seconds_per_frame: float  # worker wall-clock seconds per frame (slower on a busy machine)
    cpu_seconds_per_frame: float  # worker CPU seconds per frame (one core)


def _render_chunk(task: Tuple[str, int, int, int, int, int, Tuple[int, int],
                              SyntheticConfig]) -> Tuple[str, float, float]:
    root, seed, scene_index, frames, first, stop, image_size, config = task
    started, cpu_started = time.perf_counter(), time.process_time()
    scene = build_scene(seed, scene_index, frames, config)
    rig = SensorRig.build(image_size, scene.camera)
    if first == 0 and not scene.camera.nominal:
        write_scene_camera(os.path.join(root, scene.name), scene.camera, image_size)
    for frame_index in range(first, stop):
        write_frame(root, render_frame(scene, frame_index, rig, config),
                    config.png_compress_level)
    return scene.name, time.perf_counter() - started, time.process_time() - cpu_started


def generate(out_dir: str, scenes: int, frames: int, seed: int,
             image_size: Tuple[int, int] = NATIVE_RESOLUTION, workers: int = 1,
             config: SyntheticConfig = SyntheticConfig(),
             first_scene: int = 0) -> GenerationReport:
    """Write ``scenes`` drives of ``frames`` frames each under ``out_dir``.

    Args:
        out_dir: dataset root (created).
        scenes: number of scene folders.
        frames: frames per scene (10 Hz).
        seed: base seed; scene i only depends on (seed, i).
        image_size: (width, height) of images and labels; intrinsics are scaled to it.
        workers: processes; the files do not depend on it.
        config: generator settings.
        first_scene: scenes below this index are already in ``out_dir`` (written by the same
            seed, frames, image size and config) and are left alone: a root grows by the
            scenes ``first_scene .. scenes - 1``, the same files a fresh run would write.
    """
    if scenes < 1 or frames < 1:
        raise ValueError('scenes and frames must be positive')
    if not 0 <= first_scene < scenes:
        raise ValueError(f'first_scene must lie in [0, {scenes}), got {first_scene}')
    started = time.perf_counter()
    write_root_files(out_dir, image_size)
    new_scenes = scenes - first_scene
    chunks_per_scene = max(1, min(frames, math.ceil(2 * workers / new_scenes))) \
        if workers > 1 else 1
    bounds = np.linspace(0, frames, chunks_per_scene + 1).round().astype(int)
    tasks = [(out_dir, seed, index, frames, int(bounds[i]), int(bounds[i + 1]),
              tuple(image_size), config)
             for index in range(first_scene, scenes) for i in range(chunks_per_scene)
             if bounds[i + 1] > bounds[i]]
    if workers > 1:
        with multiprocessing.Pool(min(workers, len(tasks))) as pool:
            results = pool.map(_render_chunk, tasks, chunksize=1)
    else:
        results = [_render_chunk(task) for task in tasks]
    names = tuple(dict.fromkeys(name for name, _, _ in results))
    return GenerationReport(
        root=out_dir, scenes=names, frames=new_scenes * frames,
        seconds=time.perf_counter() - started,
        seconds_per_frame=sum(wall for _, wall, _ in results) / (new_scenes * frames),
        cpu_seconds_per_frame=sum(cpu for _, _, cpu in results) / (new_scenes * frames))


def world_config(settings: Sequence[str], base: SyntheticConfig = SyntheticConfig(),
                 option: str = '--world') -> SyntheticConfig:
    """Return ``base`` with ``key=value`` settings (values in YAML) changed.

    Raises:
        ValueError: a setting without '=', an unknown key, or a value of the wrong type (the
            message names ``option``).
    """
    raw = to_plain(base)
    for setting in settings:
        apply_override(raw, setting, option)
    return build_dataclass(SyntheticConfig, raw, option)


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
    parser.add_argument('--world', action='append', default=[], metavar='KEY=VALUE',
                        help='a SyntheticConfig setting, e.g. forest_side_weight=0.33 '
                             '(repeatable; default: world %d as drawn)' % WORLD_VERSION)
    args = parser.parse_args(argv)
    for name in ('scenes', 'frames', 'workers', 'width', 'height'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be at least 1, got {getattr(args, name)}')
    if args.seed < 0:
        parser.error(f'--seed must be >= 0, got {args.seed}')
    try:
        config = world_config(args.world)
    except ValueError as error:  # apply_override turns YAML errors into ValueError too
        parser.error(str(error))
    try:
        report = generate(args.out, args.scenes, args.frames, args.seed,
                          image_size=(args.width, args.height), workers=args.workers,
                          config=config)
    except OSError as error:  # the output folder cannot be written
        raise output_error('training.synthetic', args.out, error) from None
    print(f'wrote {report.frames} frames in {len(report.scenes)} scenes to {report.root} '
          f'in {report.seconds:.1f} s; per frame and worker: {report.seconds_per_frame:.2f} s '
          f'wall, {report.cpu_seconds_per_frame:.2f} s CPU')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
