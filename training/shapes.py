"""Shapes of the synthetic world: road users with real outlines, street furniture, vegetation.

Every builder returns a ``MeshBuilder`` in the object's own frame (x forward, y left, z up,
origin at the centre of the footprint on the ground) and, for road users, the labelled box size
(length, width, height) = the extent of the mesh, as an annotator draws it. Materials come from
the frame's ``WorldBuilder`` table. Sizes follow published statistics of the classes (KITTI,
nuScenes and A2D2 box size distributions; e.g. cars 3.5-5.2 m long, pedestrians 1.0-2.0 m
tall) with wide spreads, so that no single dataset's mean is baked in.
"""

import functools
import math
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
from training.world import MeshBuilder, rotation_z, WorldBuilder

Size = Tuple[float, float, float]
Rng = np.random.Generator

CAR_PAINTS = ((0.62, 0.07, 0.06), (0.40, 0.05, 0.05), (0.10, 0.20, 0.55), (0.06, 0.09, 0.25),
              (0.62, 0.63, 0.65), (0.35, 0.36, 0.38), (0.05, 0.05, 0.06), (0.86, 0.86, 0.86),
              (0.10, 0.32, 0.18), (0.70, 0.64, 0.50), (0.80, 0.80, 0.82), (0.02, 0.02, 0.02))
CLOTHES = ((0.12, 0.15, 0.30), (0.06, 0.06, 0.07), (0.40, 0.40, 0.42), (0.60, 0.53, 0.40),
           (0.60, 0.10, 0.10), (0.15, 0.35, 0.20), (0.85, 0.85, 0.85), (0.85, 0.75, 0.20),
           (0.35, 0.15, 0.40))
SKIN = ((0.55, 0.40, 0.30), (0.30, 0.20, 0.12), (0.75, 0.60, 0.50), (0.10, 0.08, 0.06))
FACADES = ((0.85, 0.80, 0.68), (0.90, 0.90, 0.87), (0.62, 0.62, 0.64), (0.58, 0.32, 0.24),
           (0.82, 0.72, 0.48), (0.66, 0.70, 0.74), (0.75, 0.55, 0.45), (0.45, 0.42, 0.40))
FOLIAGE = ((0.20, 0.36, 0.12), (0.28, 0.42, 0.16), (0.16, 0.28, 0.10), (0.45, 0.40, 0.15),
           (0.55, 0.32, 0.10))
#: Cargo boxes and bodies of lorries with ``details``: mostly fleet white and silver.
CARGO = ((0.93, 0.93, 0.92), (0.88, 0.89, 0.90), (0.95, 0.95, 0.95), (0.78, 0.79, 0.80),
         (0.66, 0.67, 0.70), (0.90, 0.88, 0.80), (0.62, 0.07, 0.06), (0.10, 0.20, 0.55))
TAIL_LIGHT = (0.65, 0.04, 0.04)
HEAD_LIGHT = (0.85, 0.86, 0.84)
BUMPER = (0.09, 0.09, 0.10)
GLASS = (0.08, 0.10, 0.13)
TYRE = (0.04, 0.04, 0.04)
METAL = (0.45, 0.46, 0.48)
DARK_METAL = (0.18, 0.18, 0.19)


def pick(rng: Rng, table: Sequence):
    """Return a random row of ``table``."""
    return table[int(rng.integers(len(table)))]


def clipped_normal(rng: Rng, mean: float, std: float, low: float, high: float) -> float:
    """Return a normal draw clipped to [low, high]."""
    return float(np.clip(rng.normal(mean, std), low, high))


def _finish(builder: MeshBuilder) -> Tuple[MeshBuilder, Size]:
    """Re-centre the footprint on the origin with the bottom at z = 0; return (mesh, size)."""
    low, high = builder.local_bounds()
    shift = np.array([-(low[0] + high[0]) / 2, -(low[1] + high[1]) / 2, -low[2]])
    builder.shift(shift)
    extent = high - low
    return builder, (float(extent[0]), float(extent[1]), float(extent[2]))


# ----------------------------------------------------------------------------- vehicles


def _wheels(b: MeshBuilder, wb: WorldBuilder, label: str, axles_x: Sequence[float], track: float,
            radius: float, width: float) -> None:
    tyre = wb.material(label, TYRE, 0.08, texture=0.02)
    for x in axles_x:
        for side in (-1.0, 1.0):
            diameter = 2 * radius
            b.primitive('cylinder', (x, side * (track / 2), radius), (diameter, diameter, width),
                        tyre, rotation=np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0],
                                                 [0.0, 1.0, 0.0]]), detail=10)


def _lights(rng: Rng, b: MeshBuilder, wb: WorldBuilder, label: str, half: float, width: float,
            low: float, high: float, bumper_z: Tuple[float, float]) -> None:
    """Add tail lights, headlights and (most often) dark bumpers to a vehicle body.

    ``half`` is half the body length (front at +half), ``low``..``high`` the lamps' height and
    ``bumper_z`` the bumpers' height range; everything stands 1-3 cm proud of the body.
    """
    tail = wb.material(label, TAIL_LIGHT, 0.6, retro=True, texture=0.02)
    head = wb.material(label, HEAD_LIGHT, 0.5, texture=0.02)
    lamp_w = float(rng.uniform(0.18, 0.4))
    for side in (-1.0, 1.0):
        outer, inner = side * (width / 2 - 0.04), side * (width / 2 - 0.04 - lamp_w)
        y_low, y_high = min(outer, inner), max(outer, inner)
        b.box((-half - 0.02, y_low, low), (-half + 0.01, y_high, high), tail)
        b.box((half - 0.01, y_low, low), (half + 0.02, y_high, high - 0.04), head)
    if rng.random() < 0.7:
        bumper = wb.material(label, BUMPER, 0.1, texture=0.03)
        for x in (-half - 0.03, half - 0.01):
            b.box((x, -width / 2 + 0.02, bumper_z[0]), (x + 0.04, width / 2 - 0.02, bumper_z[1]),
                  bumper)


def car(rng: Rng, wb: WorldBuilder, label: str, kind: str = 'car', details: bool = False
        ) -> Tuple[MeshBuilder, Size]:
    """Return a car, small car, SUV or van with bonnet, glass cabin, wheel arches and wheels.

    ``details`` adds lamps and bumpers (``_lights``); without it the random draws are those of
    the world before they existed.
    """
    if kind == 'small':
        length, width, height = (clipped_normal(rng, 3.7, 0.2, 3.3, 4.1),
                                 clipped_normal(rng, 1.68, 0.05, 1.55, 1.8),
                                 clipped_normal(rng, 1.50, 0.06, 1.38, 1.65))
        bonnet, boot = 0.20, 0.04
    elif kind == 'suv':
        length, width, height = (clipped_normal(rng, 4.6, 0.25, 4.1, 5.1),
                                 clipped_normal(rng, 1.88, 0.06, 1.75, 2.0),
                                 clipped_normal(rng, 1.70, 0.07, 1.55, 1.85))
        bonnet, boot = 0.22, 0.05
    elif kind == 'van':
        length, width, height = (clipped_normal(rng, 5.0, 0.35, 4.4, 6.0),
                                 clipped_normal(rng, 1.98, 0.06, 1.85, 2.1),
                                 clipped_normal(rng, 2.0, 0.2, 1.75, 2.6))
        bonnet, boot = 0.14, 0.0
    else:
        length, width, height = (clipped_normal(rng, 4.45, 0.3, 3.9, 5.2),
                                 clipped_normal(rng, 1.80, 0.06, 1.68, 1.95),
                                 clipped_normal(rng, 1.47, 0.06, 1.35, 1.6))
        bonnet, boot = clipped_normal(rng, 0.24, 0.03, 0.18, 0.3), float(
            rng.choice([0.04, 0.16, 0.2]))  # hatchback, saloon
    paint = pick(rng, CAR_PAINTS)
    body = wb.material(label, paint, 0.55 if sum(paint) > 1.2 else 0.3, texture=0.04)
    glass = wb.material(label, GLASS, 0.08, transmit=0.7, texture=0.02)
    plate = wb.material(label, (0.9, 0.9, 0.85), 0.9, retro=True, texture=0.0)
    interior = wb.material(label, (0.07, 0.07, 0.08), 0.1)
    b = MeshBuilder()
    clearance = 0.16 + 0.1 * (kind in ('suv', 'van'))
    wheel_r = clipped_normal(rng, 0.31, 0.02, 0.28, 0.38)
    belt = clearance + (0.62 if kind != 'van' else 0.75) * (height - clearance) * (
        0.72 if kind == 'van' else 1.0)
    belt = min(belt, height - 0.42)
    half = length / 2
    front_axle, rear_axle = half - 0.85 - 0.1 * (kind == 'van'), -half + 0.8
    arch = wheel_r + 0.05
    # Lower body side profile (x, z), counter-clockwise, with wheel arches cut into the sill.
    lower = [(-half, clearance + 0.1), (rear_axle - arch, clearance)]
    for axle in (rear_axle, front_axle):
        angles = np.linspace(math.pi, 0.0, 7)
        if axle == front_axle:
            lower.append((axle - arch, clearance))
        lower += [(axle + arch * math.cos(a), wheel_r + arch * math.sin(a) * 0.8)
                  for a in angles]
        if axle == rear_axle:
            lower.append((axle + arch, clearance))
    lower += [(half, clearance + 0.12), (half, belt - 0.12), (half - 0.15, belt - 0.05),
              (half - bonnet * length, belt), (-half + boot * length, belt),
              (-half + 0.05, belt - 0.1 if boot > 0.1 else belt), (-half, belt - 0.2)]
    lower = _dedupe(np.array(lower))
    b.prism(lower, -width / 2, width / 2, body, body)
    # Cabin: windscreen, roof, rear window; glass on the sides (caps) and on the two slopes.
    cabin_w = width * 0.86
    screen_base = half - bonnet * length
    rear_base = -half + boot * length
    roof_front = screen_base - (0.75 if kind != 'van' else 0.45) * (height - belt)
    roof_rear = rear_base + (0.55 if boot > 0.1 else 0.15) * (height - belt)
    cabin = np.array([(rear_base, belt), (screen_base, belt), (roof_front, height),
                      (roof_rear, height)])
    b.prism(cabin, -cabin_w / 2, cabin_w / 2, body, glass,
            strip_materials=[body, glass, body, glass])
    # Interior seen through the glass: seats and dashboard.
    b.box((rear_base + 0.3, -cabin_w / 2 + 0.15, belt - 0.2),
          (screen_base - 0.2, cabin_w / 2 - 0.15, belt + 0.45), interior)
    _wheels(b, wb, label, (front_axle, rear_axle), width - 0.25, wheel_r, 0.22)
    b.box((half - 0.01, -0.26, clearance + 0.18), (half + 0.01, 0.26, clearance + 0.3), plate)
    b.box((-half - 0.01, -0.26, clearance + 0.3), (-half + 0.01, 0.26, clearance + 0.42), plate)
    for side in (-1.0, 1.0):  # mirrors
        b.box((screen_base - 0.15, side * width / 2, belt),
              (screen_base + 0.05, side * (width / 2 + 0.18), belt + 0.15), body)
    if details:
        _lights(rng, b, wb, label, half, width, belt - 0.3, belt - 0.08,
                (clearance + 0.05, clearance + 0.3))
    mesh, size = _finish(b)
    return mesh, (size[0], width, size[2])  # annotators leave the mirrors out


def _dedupe(points: np.ndarray) -> np.ndarray:
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-3
    if np.linalg.norm(points[0] - points[-1]) < 1e-3:
        keep[-1] = False
    return points[keep]


def truck(rng: Rng, wb: WorldBuilder, label: str, kind: str = 'truck', details: bool = False
          ) -> Tuple[MeshBuilder, Size]:
    """Return a lorry (cab + cargo box or tipper) or a bus.

    ``details`` adds lamps and bumpers and paints cargo boxes mostly fleet white (``CARGO``)
    instead of in facade colours.
    """
    b = MeshBuilder()
    glass = wb.material(label, GLASS, 0.08, transmit=0.6, texture=0.02)
    if kind == 'bus':
        length, width, height = (clipped_normal(rng, 12.0, 1.5, 9.0, 18.0),
                                 clipped_normal(rng, 2.55, 0.03, 2.45, 2.6),
                                 clipped_normal(rng, 3.1, 0.15, 2.8, 3.6))
        body = wb.material(label, pick(rng, CAR_PAINTS), 0.5, texture=0.04)
        half = length / 2
        b.box((-half, -width / 2, 0.35), (half, width / 2, 1.1), body)
        b.box((-half, -width / 2 + 0.02, 1.1), (half, width / 2 - 0.02, height - 0.35), glass)
        b.box((-half + 0.5, -width / 2 + 0.3, 0.9), (half - 1.0, width / 2 - 0.3, 1.6),
              wb.material(label, (0.2, 0.2, 0.25), 0.15))  # seats behind the windows
        b.box((-half, -width / 2, height - 0.35), (half, width / 2, height), body)
        axles = (half - 2.6, -half + 3.0)
    else:
        length, width, height = (clipped_normal(rng, 8.0, 2.0, 5.5, 12.0),
                                 clipped_normal(rng, 2.45, 0.08, 2.2, 2.55),
                                 clipped_normal(rng, 3.3, 0.4, 2.5, 4.0))
        cab_paint = pick(rng, CAR_PAINTS)
        cab = wb.material(label, cab_paint, 0.5, texture=0.04)
        cargo = wb.material(label, pick(rng, CARGO if details else FACADES),
                            float(rng.uniform(0.3, 0.7)))
        half = length / 2
        cab_len = float(rng.uniform(1.8, 2.4))
        cab_h = min(height, float(rng.uniform(2.6, 3.3)))
        b.box((half - cab_len, -width / 2, 0.5), (half, width / 2, cab_h * 0.55), cab)
        b.prism(np.array([(half - cab_len, cab_h * 0.55), (half, cab_h * 0.55),
                          (half - 0.15, cab_h), (half - cab_len, cab_h)]),
                -width / 2, width / 2, cab, glass, strip_materials=[cab, glass, cab, cab])
        chassis = wb.material(label, DARK_METAL, 0.15)
        b.box((-half, -0.5, 0.5), (half - cab_len, 0.5, 0.9), chassis)
        if rng.random() < 0.75:
            b.box((-half, -width / 2, 1.0), (half - cab_len - 0.2, width / 2, height), cargo)
        else:  # open platform or tipper
            wall_h = float(rng.uniform(0.4, 1.2))
            b.box((-half, -width / 2, 1.0), (half - cab_len - 0.2, width / 2, 1.1), cargo)
            for y in (-width / 2, width / 2 - 0.05):
                b.box((-half, y, 1.1), (half - cab_len - 0.2, y + 0.05, 1.1 + wall_h), cargo)
        axles = (half - 1.3, -half + 1.5) + (() if length < 8 else (-half + 2.9,))
    if details:
        _lights(rng, b, wb, label, length / 2, width, 0.75, 1.0, (0.45, 0.7))
    _wheels(b, wb, label, axles, width - 0.3, 0.5, 0.35)
    mesh, size = _finish(b)
    return mesh, size


def platform_lorry(rng: Rng, wb: WorldBuilder, label: str) -> Tuple[MeshBuilder, Size]:
    """Return a light lorry with a drop-side platform, its tailgate and its load.

    As delivery and trade lorries look from behind: a cab, a platform 1.0-1.25 m up closed by
    side boards and a tailgate 0.4-0.8 m high in their own light colours (``CARGO``, not
    tinted with the facades), and most often a load standing above the boards: metal racks
    (posts and rails), crates and boxes, or a small covered cargo box. Tail lights, bumper and
    wheels as on the other vehicles. 5-8.5 m long, 2.7-3.6 m high with the load.
    """
    b = MeshBuilder()
    glass = wb.material(label, GLASS, 0.08, transmit=0.6, texture=0.02)
    length = clipped_normal(rng, 6.8, 0.9, 5.0, 8.5)
    width = clipped_normal(rng, 2.35, 0.08, 2.1, 2.5)
    half = length / 2
    cab = wb.material(label, pick(rng, CAR_PAINTS), 0.5, texture=0.04)
    cab_len = float(rng.uniform(1.7, 2.2))
    cab_h = float(rng.uniform(2.4, 2.9))
    b.box((half - cab_len, -width / 2, 0.45), (half, width / 2, cab_h * 0.55), cab)
    b.prism(np.array([(half - cab_len, cab_h * 0.55), (half, cab_h * 0.55),
                      (half - 0.15, cab_h), (half - cab_len, cab_h)]),
            -width / 2, width / 2, cab, glass, strip_materials=[cab, glass, cab, cab])
    chassis = wb.material(label, DARK_METAL, 0.15)
    back = -half
    front = half - cab_len - 0.15  # the platform's front wall, behind the cab
    floor = float(rng.uniform(1.0, 1.25))
    b.box((back, -0.45, 0.45), (front, 0.45, floor - 0.1), chassis)
    boards = wb.material(label, pick(rng, CARGO), float(rng.uniform(0.4, 0.7)), texture=0.03,
                         own_colour=True)
    top = floor + float(rng.uniform(0.4, 0.8))
    b.box((back, -width / 2, floor - 0.1), (front, width / 2, floor), chassis)  # the deck
    b.box((back, -width / 2, floor), (back + 0.05, width / 2, top), boards)  # tailgate
    b.box((front - 0.05, -width / 2, floor), (front, width / 2, cab_h), boards)  # headboard
    for y in (-width / 2, width / 2 - 0.05):
        b.box((back, y, floor), (front, y + 0.05, top), boards)
    load = rng.random()
    inner = width / 2 - 0.15
    if load < 0.35:  # racks: posts and rails of bare metal
        metal = wb.material(label, METAL, float(rng.uniform(0.4, 0.8)), texture=0.05)
        rack_top = top + float(rng.uniform(0.6, 1.4))
        for x0 in np.arange(back + 0.3, front - 0.5, float(rng.uniform(1.2, 2.0))):
            x1 = min(x0 + 1.0, front - 0.2)
            for x in (x0, x1):
                for y in (-inner, inner - 0.06):
                    b.box((x, y, floor), (x + 0.06, y + 0.06, rack_top), metal)
            for z in (rack_top - 0.06, (floor + rack_top) / 2):
                for y in (-inner, inner - 0.06):
                    b.box((x0, y, z), (x1 + 0.06, y + 0.06, z + 0.06), metal)
                b.box((x0, -inner, z), (x0 + 0.06, inner, z + 0.06), metal)
    elif load < 0.7:  # crates and boxes
        for _ in range(int(rng.integers(1, 5))):
            size = rng.uniform((0.6, 0.6, 0.4), (1.4, 1.1, 1.3))
            x = float(rng.uniform(back + 0.1, front - 0.1 - size[0]))
            y = float(rng.uniform(-inner, inner - size[1]))
            crate = wb.material(label, pick(rng, FACADES), float(rng.uniform(0.2, 0.6)))
            b.box((x, y, floor), (x + size[0], y + size[1], floor + size[2]), crate)
    elif load < 0.85:  # a covered box on the platform
        cover = wb.material(label, pick(rng, CARGO), float(rng.uniform(0.3, 0.6)),
                            own_colour=True)
        roof = cab_h + float(rng.uniform(0.2, 0.7))
        b.box((back + 0.1, -inner, floor), (front - 0.1, inner, roof), cover)
    _lights(rng, b, wb, label, half, width, 0.7, 0.9, (0.4, 0.6))
    _wheels(b, wb, label, (half - 1.2, -half + 1.6), width - 0.3, 0.42, 0.3)
    return _finish(b)


# ----------------------------------------------------------------------------- people


def _limb(b: MeshBuilder, start, end, radius: float, material: int) -> None:
    b.tube(start, end, radius, material, sections=6)
    b.primitive('sphere', end, (2 * radius,) * 3, material, detail=1)


def person(rng: Rng, wb: WorldBuilder, label: str, pose: str = 'walk',
           height: float = 0.0) -> Tuple[MeshBuilder, Size]:
    """Return a pedestrian with legs, arms, torso and head ('walk', 'stand' or 'sit')."""
    height = height or (clipped_normal(rng, 1.72, 0.1, 1.5, 2.0) if rng.random() > 0.12
                        else float(rng.uniform(1.0, 1.45)))  # children
    scale = height / 1.75
    clothes_top, clothes_legs = pick(rng, CLOTHES), pick(rng, CLOTHES)
    top = wb.material(label, clothes_top, float(rng.uniform(0.15, 0.6)))
    legs = wb.material(label, clothes_legs, float(rng.uniform(0.1, 0.5)))
    skin = wb.material(label, pick(rng, SKIN), 0.35)
    b = MeshBuilder()
    hip_z, shoulder_z = 0.92 * scale, 1.45 * scale
    hip_w, shoulder_w = 0.11 * scale, 0.2 * scale
    phase = float(rng.uniform(-1.0, 1.0)) if pose == 'walk' else 0.0
    stride = 0.35 * scale * phase
    lean = float(rng.uniform(-0.05, 0.1))
    for side, swing in ((1.0, stride), (-1.0, -stride)):
        hip = np.array([0.0, side * hip_w, hip_z])
        if pose == 'sit':
            knee = hip + (0.45 * scale, 0.0, 0.0)
            foot = knee + (0.0, 0.0, -0.45 * scale)
        else:
            foot = np.array([swing, side * hip_w * 1.1, 0.06])
            knee = (hip + foot) / 2 + (0.04 * scale * abs(phase), 0.0, 0.0)
        _limb(b, hip, knee, 0.075 * scale, legs)
        _limb(b, knee, foot, 0.06 * scale, legs)
        b.box(foot + (-0.05, -0.05, -0.06), foot + (0.2 * scale, 0.05, 0.02), legs)
        shoulder = np.array([lean * 0.5, side * shoulder_w, shoulder_z])
        hand = shoulder + (-swing * 0.7, side * 0.05, -0.6 * scale)
        if rng.random() < 0.2:
            hand = shoulder + (0.35 * scale, -side * 0.05, -0.25 * scale)  # phone / bag
        elbow = (shoulder + hand) / 2 + (0.0, side * 0.04, 0.0)
        _limb(b, shoulder, elbow, 0.05 * scale, top)
        _limb(b, elbow, hand, 0.04 * scale, skin)
    torso_depth = 0.24 * scale * float(rng.uniform(0.9, 1.4))
    b.primitive('cylinder', (lean * 0.3, 0.0, (hip_z + shoulder_z) / 2),
                (torso_depth, 2 * shoulder_w + 0.06, shoulder_z - hip_z + 0.12), top, detail=10)
    b.primitive('sphere', (lean * 0.6, 0.0, 1.62 * scale), (0.2 * scale, 0.17 * scale,
                                                            0.24 * scale), skin, detail=2)
    if rng.random() < 0.25:  # backpack
        b.box((-0.28 * scale, -0.15, 1.0 * scale), (-0.1 * scale, 0.15, 1.4 * scale),
              wb.material(label, pick(rng, CLOTHES), 0.3))
    mesh, (length, width, height) = _finish(b)
    # Annotators draw people with room for the swinging limbs (KITTI and nuScenes boxes of
    # pedestrians are about 0.6-0.9 m by 0.55-0.7 m, whatever the pose).
    return mesh, (max(length, float(rng.uniform(0.55, 0.9))),
                  max(width, float(rng.uniform(0.55, 0.7))), height)


def bicycle(rng: Rng, wb: WorldBuilder, label: str, b: MeshBuilder) -> float:
    """Add a bicycle to ``b``: spoked wheels, frame, bars; return the saddle height."""
    frame = wb.material(label, pick(rng, CAR_PAINTS), 0.4)
    spokes = wb.material(label, METAL, 0.3, transmit=0.85, texture=0.0)
    tyre = wb.material(label, TYRE, 0.08)
    radius = float(rng.uniform(0.3, 0.36))
    base = float(rng.uniform(1.0, 1.12))
    rear, front = np.array([-base / 2, 0.0, radius]), np.array([base / 2, 0.0, radius])
    for centre in (rear, front):
        b.primitive('cylinder', centre, (2 * radius, 2 * radius, 0.04), spokes,
                    rotation=np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
                    detail=14)
        ring = np.linspace(0.0, 2.0 * math.pi, 13)
        for a0, a1 in zip(ring[:-1], ring[1:]):
            b.tube(centre + radius * np.array([math.cos(a0), 0.0, math.sin(a0)]),
                   centre + radius * np.array([math.cos(a1), 0.0, math.sin(a1)]), 0.025, tyre,
                   sections=4)
    crank = np.array([0.0, 0.0, radius])
    saddle = np.array([-0.2, 0.0, radius + 0.55])
    head = np.array([base / 2 - 0.15, 0.0, radius + 0.5])
    for start, end in ((rear, crank), (crank, saddle), (saddle, rear), (crank, head),
                       (saddle, head), (head, front)):
        b.tube(start, end, 0.022, frame, sections=4)
    b.tube(head + (0.0, -0.3, 0.12), head + (0.0, 0.3, 0.12), 0.02, frame, sections=4)
    b.box(saddle + (-0.12, -0.07, 0.0), saddle + (0.12, 0.07, 0.05), tyre)
    return float(saddle[2])


def cyclist(rng: Rng, wb: WorldBuilder, label: str) -> Tuple[MeshBuilder, Size]:
    """Return a rider on a bicycle (legs on the pedals, hands on the bars)."""
    b = MeshBuilder()
    saddle_z = bicycle(rng, wb, label, b)
    scale = clipped_normal(rng, 1.0, 0.06, 0.85, 1.12)
    clothes = wb.material(label, pick(rng, CLOTHES), float(rng.uniform(0.15, 0.6)))
    skin = wb.material(label, pick(rng, SKIN), 0.35)
    hip = np.array([-0.2, 0.0, saddle_z + 0.05])
    shoulder = hip + (0.3 * scale, 0.0, 0.5 * scale)
    phase = float(rng.uniform(0.0, 2.0 * math.pi))
    for side in (-1.0, 1.0):
        pedal = np.array([0.17 * math.cos(phase + (side > 0) * math.pi), side * 0.15,
                          0.34 + 0.17 * math.sin(phase + (side > 0) * math.pi)])
        h = hip + (0.0, side * 0.1, 0.0)
        knee = (h + pedal) / 2 + (0.2 * scale, 0.0, 0.1)
        _limb(b, h, knee, 0.07 * scale, clothes)
        _limb(b, knee, pedal, 0.055 * scale, clothes)
        s = shoulder + (0.0, side * 0.19, 0.0)
        hand = np.array([0.42, side * 0.28, saddle_z + 0.12])
        _limb(b, s, (s + hand) / 2 + (0.0, 0.0, 0.05), 0.045, clothes)
        _limb(b, (s + hand) / 2 + (0.0, 0.0, 0.05), hand, 0.04, skin)
    b.tube(hip, shoulder, 0.16 * scale, clothes, sections=8)
    b.primitive('sphere', shoulder + (0.08, 0.0, 0.2 * scale), (0.22, 0.18, 0.25),
                wb.material(label, pick(rng, CAR_PAINTS), 0.4) if rng.random() < 0.5
                else skin, detail=2)
    return _finish(b)


# ----------------------------------------------------------------------------- scenery


def _tree_materials(rng: Rng, wb: WorldBuilder, bark_albedo: Tuple[float, float, float],
                    transmit: Tuple[float, float]) -> Tuple[int, int]:
    """Return the bark and the foliage material of a tree (foliage lets LiDAR rays through)."""
    bark = wb.material('Nature object', bark_albedo, float(rng.uniform(0.2, 0.4)))
    leaves = wb.material('Nature object', pick(rng, FOLIAGE), float(rng.uniform(0.2, 0.5)),
                         transmit=float(rng.uniform(*transmit)), texture=0.35,
                         scatter_m=float(rng.uniform(0.3, 1.2)))
    return bark, leaves


def tree(rng: Rng, wb: WorldBuilder) -> MeshBuilder:
    """Return a tree: trunk and an irregular, partly transparent crown (or a conifer)."""
    b = MeshBuilder()
    bark, leaves = _tree_materials(rng, wb, (0.25, 0.18, 0.12), (0.2, 0.6))
    trunk_h = float(rng.uniform(1.5, 4.5))
    trunk_r = float(rng.uniform(0.08, 0.35))
    b.primitive('cylinder', (0.0, 0.0, trunk_h / 2), (2 * trunk_r, 2 * trunk_r, trunk_h),
                bark, detail=8)
    if rng.random() < 0.2:
        crown_h = float(rng.uniform(3.0, 10.0))
        b.primitive('cone', (0.0, 0.0, trunk_h * 0.5), (crown_h * 0.5,) * 2 + (crown_h,),
                    leaves, detail=10)
        return b
    crown_r = float(rng.uniform(1.2, 4.0))
    for _ in range(int(rng.integers(3, 8))):
        offset = rng.normal(0.0, crown_r * 0.45, 3)
        r = crown_r * float(rng.uniform(0.45, 0.9))
        b.primitive('sphere', (offset[0], offset[1], trunk_h + crown_r * 0.8 + offset[2] * 0.6),
                    (2 * r, 2 * r * float(rng.uniform(0.8, 1.2)), 2 * r * 0.85), leaves,
                    detail=1)
    return b


def tall_tree(rng: Rng, wb: WorldBuilder) -> MeshBuilder:
    """Return a forest tree, about 12-28 m tall: a long trunk under a deep crown, or a conifer.

    Roadside forests fill the upper half of a real camera's image with foliage and break the
    sky into gaps; the park trees of ``tree`` (at most about 12 m) never reach that high.
    """
    b = MeshBuilder()
    bark, leaves = _tree_materials(rng, wb, (0.22, 0.17, 0.12), (0.3, 0.7))
    trunk_r = float(rng.uniform(0.12, 0.4))
    if rng.random() < 0.3:  # spruce or pine: stacked cones from near the ground
        height = float(rng.uniform(12.0, 28.0))
        radius = float(rng.uniform(1.5, 3.5))
        b.primitive('cylinder', (0.0, 0.0, height * 0.4), (2 * trunk_r, 2 * trunk_r, height * 0.8),
                    bark, detail=8)
        base = float(rng.uniform(1.0, 4.0))
        tiers = int(rng.integers(2, 4))
        for tier in range(tiers):
            low = base + (height - base) * tier / (tiers + 1)
            width = 2 * radius * (1.0 - 0.25 * tier)
            b.primitive('cone', (0.0, 0.0, low), (width, width, height - low), leaves, detail=10)
        return b
    trunk_h = float(rng.uniform(4.0, 10.0))  # the crown spans trunk_h .. trunk_h + crown_h
    crown_r = float(rng.uniform(2.0, 5.0))
    crown_h = float(rng.uniform(8.0, 16.0))
    b.primitive('cylinder', (0.0, 0.0, (trunk_h + crown_h * 0.5) / 2),
                (2 * trunk_r, 2 * trunk_r, trunk_h + crown_h * 0.5), bark, detail=8)
    for blob in range(int(rng.integers(6, 15))):
        offset = rng.normal(0.0, crown_r * 0.5, 2)
        r = crown_r * float(rng.uniform(0.35, 0.7))
        z = trunk_h + r + (crown_h - 2 * r) * (1.0 if blob == 0 else float(rng.uniform(0, 1)))
        b.primitive('sphere', (offset[0], offset[1], z), (2 * r, 2 * r * float(
            rng.uniform(0.8, 1.2)), 2 * r), leaves, detail=1)
    return b


#: Bark of leafless crowns, grey to brown: seen against the sky, a bare crown is a fine, dull
#: lattice, nothing like the green blobs of ``tree``.
TWIGS = ((0.30, 0.27, 0.24), (0.24, 0.21, 0.18), (0.36, 0.34, 0.32), (0.28, 0.22, 0.16))


def bare_tree(rng: Rng, wb: WorldBuilder) -> MeshBuilder:
    """Return a leafless broadleaf tree or a poplar, as roadsides show them half the year.

    A broadleaf tree is its trunk, 3-6 limbs rising out of it at 20-60 degrees from the
    vertical, each forking into thinner branches, and around them a crown of twigs that
    LiDAR rays mostly pass through and the camera sees the sky through (``sky_through``). A
    poplar (a third) is a columnar crown 10-25 m tall and 2-4 m wide, leafy or bare.
    Everything is 'Nature object', as A2D2 labels trees, in bark colours whatever the season
    of the scene's leaves (``own_colour``).
    """
    b = MeshBuilder()
    bark = wb.material('Nature object', pick(rng, TWIGS), float(rng.uniform(0.2, 0.4)),
                       own_colour=True)
    twigs = wb.material('Nature object', pick(rng, TWIGS), float(rng.uniform(0.15, 0.35)),
                        transmit=float(rng.uniform(0.6, 0.9)), texture=0.3,
                        scatter_m=float(rng.uniform(0.5, 1.5)),
                        sky_through=float(rng.uniform(0.35, 0.75)), own_colour=True)
    trunk_r = float(rng.uniform(0.1, 0.35))
    if rng.random() < 1 / 3:  # poplar: a narrow column of crown from a few metres up
        height, width = float(rng.uniform(10.0, 25.0)), float(rng.uniform(2.0, 4.0))
        base = float(rng.uniform(1.0, 3.5))
        b.primitive('cylinder', (0.0, 0.0, height * 0.4),
                    (2 * trunk_r, 2 * trunk_r, height * 0.8), bark, detail=8)
        crown = twigs if rng.random() < 0.5 else _tree_materials(
            rng, wb, (0.25, 0.18, 0.12), (0.2, 0.5))[1]
        b.primitive('sphere', (0.0, 0.0, base + (height - base) / 2),
                    (width, width * float(rng.uniform(0.8, 1.0)), height - base), crown,
                    detail=1)
        return b
    trunk_h = float(rng.uniform(1.5, 4.0))
    b.primitive('cylinder', (0.0, 0.0, trunk_h / 2), (2 * trunk_r, 2 * trunk_r, trunk_h), bark,
                detail=8)
    top = np.array([0.0, 0.0, trunk_h])
    reach = float(rng.uniform(2.5, 7.0))
    tips = []
    for _ in range(int(rng.integers(3, 7))):
        azimuth, tilt = float(rng.uniform(0.0, 2 * math.pi)), math.radians(rng.uniform(20, 60))
        direction = np.array([math.sin(tilt) * math.cos(azimuth),
                              math.sin(tilt) * math.sin(azimuth), math.cos(tilt)])
        end = top + direction * reach * float(rng.uniform(0.6, 1.0))
        b.tube(top, end, trunk_r * 0.55, bark, sections=5)
        for _ in range(int(rng.integers(2, 4))):  # forks from the limb's upper half
            start = top + (end - top) * float(rng.uniform(0.5, 1.0))
            fork = direction + rng.normal(0.0, 0.45, 3)
            fork[2] = abs(fork[2]) + 0.3
            fork_end = start + fork / np.linalg.norm(fork) * reach * float(rng.uniform(0.3, 0.6))
            b.tube(start, fork_end, trunk_r * 0.25, bark, sections=4)
            tips.append(fork_end)
    tips = np.array(tips)
    centre = (tips.min(axis=0) + tips.max(axis=0)) / 2
    extent = np.maximum(tips.max(axis=0) - tips.min(axis=0), 1.0)
    b.primitive('sphere', centre, extent * 1.1, twigs, detail=1)  # the twigs around the tips
    return b


def bush(rng: Rng, wb: WorldBuilder, length: float = 0.0) -> MeshBuilder:
    """Return a bush, or a hedge of ``length`` metres."""
    b = MeshBuilder()
    leaves = wb.material('Nature object', pick(rng, FOLIAGE), float(rng.uniform(0.2, 0.5)),
                         transmit=float(rng.uniform(0.05, 0.3)), texture=0.35,
                         scatter_m=float(rng.uniform(0.1, 0.5)))
    if length:
        height, depth = float(rng.uniform(0.6, 2.5)), float(rng.uniform(0.5, 1.5))
        pieces = max(1, int(length / 1.5))
        for k in range(pieces):
            x = -length / 2 + (k + 0.5) * length / pieces
            b.primitive('sphere', (x, 0.0, height / 2), (length / pieces * 1.4, depth,
                                                         height * float(rng.uniform(0.9, 1.1))),
                        leaves, detail=1)
        return b
    r = float(rng.uniform(0.4, 1.3))
    for _ in range(int(rng.integers(1, 4))):
        o = rng.normal(0.0, r * 0.3, 2)
        b.primitive('sphere', (o[0], o[1], r * 0.7), (2 * r, 2 * r, 1.6 * r), leaves, detail=1)
    return b


def pole(rng: Rng, wb: WorldBuilder, kind: str) -> MeshBuilder:
    """Return a lamp post, sign, traffic light or bare pole."""
    b = MeshBuilder()
    metal = wb.material('Poles', METAL if rng.random() < 0.6 else DARK_METAL,
                        float(rng.uniform(0.3, 0.6)))
    height = {'lamp': rng.uniform(4.0, 9.0), 'sign': rng.uniform(2.2, 3.5),
              'light': rng.uniform(3.0, 5.5), 'pole': rng.uniform(2.0, 8.0)}[kind]
    radius = float(rng.uniform(0.04, 0.14))
    b.primitive('cylinder', (0.0, 0.0, height / 2), (2 * radius, 2 * radius, height), metal)
    if kind == 'lamp':
        arm = float(rng.uniform(0.5, 2.0))
        b.tube((0.0, 0.0, height), (0.0, -arm, height + 0.2), 0.05, metal)
        b.box((-0.2, -arm - 0.3, height), (0.2, -arm + 0.1, height + 0.25), metal)
    elif kind == 'sign':
        sign = wb.material('Traffic sign 1', pick(rng, ((0.9, 0.9, 0.9), (0.8, 0.1, 0.1),
                                                        (0.1, 0.3, 0.8), (0.95, 0.8, 0.1))),
                           0.9, retro=True, texture=0.0)
        w = float(rng.uniform(0.5, 1.0))
        b.box((0.03, -w / 2, height - w), (0.06, w / 2, height), sign)
    elif kind == 'light':
        housing = wb.material('Traffic signal 1', (0.05, 0.05, 0.05), 0.2)
        b.box((0.02, -0.18, height - 1.0), (0.35, 0.18, height), housing)
    return b


#: A2D2's label of guard rails and crash barriers (its "Sidebars" are delineator posts).
GUARD_RAIL_LABEL = 'Road blocks'
#: What world 5 labelled guard rails (kept so that world 5 is drawn as it was).
WORLD5_GUARD_RAIL_LABEL = 'Sidebars'


def fence(rng: Rng, wb: WorldBuilder, length: float, kind: str,
          rail_label: str = WORLD5_GUARD_RAIL_LABEL) -> MeshBuilder:
    """Return a fence, guard rail (labelled ``rail_label``) or wall ``length`` m along x."""
    b = MeshBuilder()
    if kind == 'guardrail':
        metal = wb.material(rail_label, METAL, 0.6)
        for x in np.arange(-length / 2, length / 2 + 1e-6, 2.0):
            b.box((x - 0.06, -0.06, 0.0), (x + 0.06, 0.06, 0.75), metal)
        b.box((-length / 2, 0.06, 0.45), (length / 2, 0.1, 0.78), metal)
    elif kind == 'wall':
        stone = wb.material('Buildings', pick(rng, FACADES), float(rng.uniform(0.2, 0.5)))
        height = float(rng.uniform(0.5, 2.5))
        b.box((-length / 2, -0.15, 0.0), (length / 2, 0.15, height), stone)
    else:
        height = float(rng.uniform(0.8, 2.2))
        post = wb.material('Grid structure', DARK_METAL, 0.3)
        panel = wb.material('Grid structure', (0.3, 0.32, 0.3) if kind == 'mesh'
                            else (0.45, 0.33, 0.2), 0.3,
                            transmit=float(rng.uniform(0.5, 0.85)) if kind == 'mesh' else 0.0)
        for x in np.arange(-length / 2, length / 2 + 1e-6, float(rng.uniform(2.0, 3.0))):
            b.box((x - 0.04, -0.04, 0.0), (x + 0.04, 0.04, height), post)
        b.box((-length / 2, -0.01, 0.05), (length / 2, 0.01, height), panel)
    return b


def delineator(rng: Rng, wb: WorldBuilder) -> MeshBuilder:
    """Return a roadside delineator post (A2D2's "Sidebars"), x along the road.

    A white post about a metre high with a black band below its top and a reflector on the
    band's faces towards both directions of traffic, as on European rural roads (every 25-50 m
    at the road's edge, or on top of a guard rail's posts).
    """
    b = MeshBuilder()
    height = float(rng.uniform(0.95, 1.15))
    half_x, half_y = 0.05, float(rng.uniform(0.05, 0.07))  # across the road is the wider side
    white = wb.material('Sidebars', pick(rng, ((0.88, 0.88, 0.85), (0.80, 0.80, 0.76))),
                        float(rng.uniform(0.5, 0.7)))
    band = wb.material('Sidebars', (0.04, 0.04, 0.04), 0.1)
    reflector = wb.material('Sidebars', pick(rng, ((0.95, 0.55, 0.08), (0.92, 0.92, 0.90))),
                            0.9, retro=True, texture=0.0)
    band_low, band_high = height - 0.32, height - 0.06
    b.box((-half_x, -half_y, 0.0), (half_x, half_y, band_low), white)
    b.box((-half_x, -half_y, band_low), (half_x, half_y, band_high), band)
    b.box((-half_x, -half_y, band_high), (half_x, half_y, height), white)
    for face in (-half_x, half_x):  # reflectors stand 5 mm proud of the band's faces
        proud = face + math.copysign(0.005, face)
        b.box((min(face, proud), -0.03, band_low + 0.06), (max(face, proud), 0.03,
                                                           band_low + 0.2), reflector)
    return b


def small_object(rng: Rng, wb: WorldBuilder, kind: str) -> MeshBuilder:
    """Return a bollard, bin, hydrant-like stub, bench or parked bicycle."""
    b = MeshBuilder()
    if kind == 'bicycle':
        bicycle(rng, wb, 'Small vehicles 1', b)
        return b
    material = wb.material('Obstacles / trash' if kind in ('bin', 'bench') else 'Road blocks',
                           pick(rng, ((0.2, 0.3, 0.2), (0.6, 0.6, 0.6), (0.8, 0.5, 0.1),
                                      (0.1, 0.1, 0.1))), float(rng.uniform(0.2, 0.7)))
    if kind == 'bollard':
        h = float(rng.uniform(0.5, 1.1))
        b.primitive('cylinder', (0.0, 0.0, h / 2), (0.2, 0.2, h), material)
    elif kind == 'bin':
        size = rng.uniform((0.5, 0.5, 0.9), (1.4, 1.0, 1.4))
        b.box((-size[0] / 2, -size[1] / 2, 0.0), (size[0] / 2, size[1] / 2, size[2]), material)
    elif kind == 'bench':
        b.box((-0.9, -0.25, 0.4), (0.9, 0.25, 0.48), material)
        b.box((-0.9, 0.2, 0.48), (0.9, 0.25, 0.9), material)
        for x in (-0.8, 0.8):
            b.box((x - 0.04, -0.2, 0.0), (x + 0.04, 0.2, 0.4), material)
    else:  # cone or stub
        b.primitive('cone', (0.0, 0.0, 0.0), (0.35, 0.35, 0.7), material)
    return b


#: Hard negatives: unlabelled objects of a road user's size and height, each a shape real
#: LiDAR detectors are known to confuse with cars, people or cyclists (utility cabinets, columns
#: and kiosks, planters, skips, concrete barriers, bus shelters, bike racks, signposts).
DISTRACTORS = ('cabinet', 'column', 'kiosk', 'planter', 'skip', 'barrier', 'shelter', 'rack',
               'signpost', 'board')


def distractor(rng: Rng, wb: WorldBuilder, kind: str) -> MeshBuilder:
    """Return a hard negative of ``kind`` (one of ``DISTRACTORS``), x along its length."""
    b = MeshBuilder()
    paint = pick(rng, ((0.55, 0.57, 0.55), (0.2, 0.3, 0.22), (0.75, 0.72, 0.65),
                       (0.12, 0.12, 0.13), (0.8, 0.55, 0.1), (0.25, 0.3, 0.45)))
    solid = wb.material('Obstacles / trash', paint, float(rng.uniform(0.15, 0.7)))
    if kind == 'cabinet':  # utility / switch cabinet, parking meter, post box
        size = rng.uniform((0.25, 0.25, 0.7), (1.4, 0.6, 1.7))
        b.box((-size[0] / 2, -size[1] / 2, 0.0), (size[0] / 2, size[1] / 2, size[2]), solid)
    elif kind == 'column':  # advertising column or thick pillar
        radius, height = float(rng.uniform(0.3, 0.8)), float(rng.uniform(1.8, 3.6))
        b.primitive('cylinder', (0.0, 0.0, height / 2), (2 * radius, 2 * radius, height), solid,
                    detail=12)
        b.primitive('cylinder', (0.0, 0.0, height + 0.1), (2 * radius + 0.2,) * 2 + (0.2,),
                    solid, detail=12)
    elif kind == 'kiosk':  # kiosk, ticket machine house, portable toilet
        size = rng.uniform((1.0, 1.0, 2.0), (3.5, 2.5, 2.8))
        b.box((-size[0] / 2, -size[1] / 2, 0.0), (size[0] / 2, size[1] / 2, size[2]), solid)
        b.box((-size[0] / 2 - 0.2, -size[1] / 2 - 0.2, size[2]),
              (size[0] / 2 + 0.2, size[1] / 2 + 0.2, size[2] + 0.12), solid)
    elif kind == 'planter':  # concrete planter with a shrub in it
        size = rng.uniform((0.8, 0.6, 0.4), (4.0, 1.6, 1.0))
        stone = wb.material('Road blocks', (0.6, 0.6, 0.58), float(rng.uniform(0.3, 0.6)))
        b.box((-size[0] / 2, -size[1] / 2, 0.0), (size[0] / 2, size[1] / 2, size[2]), stone)
        leaves = wb.material('Nature object', pick(rng, FOLIAGE), float(rng.uniform(0.2, 0.5)),
                             transmit=0.2, texture=0.35, scatter_m=0.2)
        crown = (size[0] * 0.9, size[1] * 0.9, float(rng.uniform(0.4, 1.4)))
        b.primitive('sphere', (0.0, 0.0, size[2] + 0.3), crown, leaves, detail=1)
    elif kind == 'skip':  # skip, dumpster, container, stacked pallets
        size = rng.uniform((1.4, 1.0, 0.9), (6.0, 2.5, 2.6))
        b.box((-size[0] / 2, -size[1] / 2, 0.0), (size[0] / 2, size[1] / 2, size[2]), solid)
    elif kind == 'barrier':  # concrete (Jersey) barrier or a low wall piece
        length, height = float(rng.uniform(1.5, 6.0)), float(rng.uniform(0.5, 1.1))
        stone = wb.material('Road blocks', (0.62, 0.62, 0.6), float(rng.uniform(0.3, 0.6)))
        b.prism(np.array([[-0.3, 0.0], [0.3, 0.0], [0.1, height], [-0.1, height]]),
                -length / 2, length / 2, stone, stone)
        b.rotate_z(math.pi / 2)  # prisms extrude along y; x is the length
    elif kind == 'shelter':  # bus shelter: glass back and sides, roof on posts
        length, depth, height = (float(rng.uniform(2.5, 6.0)), float(rng.uniform(1.2, 2.0)),
                                 float(rng.uniform(2.3, 2.8)))
        frame = wb.material('Poles', METAL, 0.5)
        glass = wb.material('Buildings', GLASS, 0.1, transmit=float(rng.uniform(0.4, 0.8)),
                            texture=0.05)
        b.box((-length / 2, depth / 2 - 0.02, 0.1), (length / 2, depth / 2, height - 0.1), glass)
        for x in (-length / 2, length / 2):
            b.box((x - 0.02, -depth / 2, 0.1), (x + 0.02, depth / 2, height - 0.1), glass)
            for y in (-depth / 2, depth / 2):
                b.box((x - 0.04, y - 0.04, 0.0), (x + 0.04, y + 0.04, height), frame)
        b.box((-length / 2 - 0.2, -depth / 2 - 0.2, height),
              (length / 2 + 0.2, depth / 2, height + 0.1), frame)
    elif kind == 'rack':  # bike rack: bicycles side by side
        for k in range(int(rng.integers(2, 7))):
            bike = MeshBuilder()
            bicycle(rng, wb, 'Small vehicles 1', bike)
            bike.rotate_z(math.pi / 2)
            bike.shift((k * float(rng.uniform(0.6, 0.9)), float(rng.normal(0.0, 0.1)), 0.0))
            b.extend(bike)
    elif kind == 'signpost':  # post with plates at body height, or a traffic light pole
        metal = wb.material('Poles', METAL if rng.random() < 0.6 else DARK_METAL, 0.4)
        height = float(rng.uniform(1.8, 3.2))
        b.primitive('cylinder', (0.0, 0.0, height / 2), (0.1, 0.1, height), metal)
        sign = wb.material('Traffic sign 1', pick(rng, ((0.9, 0.9, 0.9), (0.1, 0.3, 0.8),
                                                        (0.8, 0.1, 0.1))), 0.9, retro=True,
                           texture=0.0)
        for _ in range(int(rng.integers(1, 4))):
            w, z = float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.9, height))
            b.box((0.06, -w / 2, z - w * 0.8), (0.09, w / 2, z), sign)
    else:  # advertising board (A-frame) or flat billboard on legs
        width, height = float(rng.uniform(0.5, 3.0)), float(rng.uniform(0.8, 2.5))
        board = wb.material('Irrelevant signs', pick(rng, CAR_PAINTS), float(
            rng.uniform(0.3, 0.8)))
        b.box((-width / 2, -0.05, 0.0), (width / 2, 0.05, height), board)
    return b


def building(rng: Rng, wb: WorldBuilder, length: float, depth: float,
             height: float) -> MeshBuilder:
    """Return a building block: facade along x at y = 0 facing -y, recesses and balconies."""
    b = MeshBuilder()
    wall = wb.material('Buildings', pick(rng, FACADES), float(rng.uniform(0.25, 0.6)),
                       texture=0.15)
    glass = wb.material('Buildings', GLASS, 0.1, transmit=0.5, texture=0.05)
    b.box((-length / 2, 0.0, 0.0), (length / 2, depth, height), wall)
    floors = max(1, int(height / 3.0))
    if rng.random() < 0.6:  # shop windows / recessed entrance on the ground floor
        x0 = float(rng.uniform(-length / 2, length / 2 - 3.0))
        b.box((x0, -0.02, 0.3), (x0 + float(rng.uniform(1.5, 3.0)), 0.02, 2.5), glass)
    if rng.random() < 0.5 and floors > 1:
        balcony = wb.material('Buildings', pick(rng, FACADES), 0.4)
        for floor in range(1, floors):
            for x in np.arange(-length / 2 + 2.0, length / 2 - 2.0, float(rng.uniform(4, 7))):
                z = floor * 3.0
                b.box((x, -1.2, z), (x + 2.2, 0.0, z + 0.15), balcony)
                b.box((x, -1.2, z + 0.15), (x + 2.2, -1.15, z + 1.1), balcony)
    if rng.random() < 0.4:  # pillared arcade / recess: the ground-floor wall set back
        b.box((-length / 2, -0.01, 0.0), (-length / 2 + 0.4, 0.01, 3.0), wall)
    return b


#: Road-user builders by kind: (function, A2D2 box class, A2D2 label base name).
ROAD_USERS: Dict[str, Tuple[Callable[..., Tuple[MeshBuilder, Size]], str, str]] = {
    'car': (functools.partial(car, kind='car'), 'Car', 'Car'),
    'small': (functools.partial(car, kind='small'), 'Car', 'Car'),
    'suv': (functools.partial(car, kind='suv'), 'VanSUV', 'Car'),
    'van': (functools.partial(car, kind='van'), 'VanSUV', 'Car'),
    'truck': (functools.partial(truck, kind='truck'), 'Truck', 'Truck'),
    'bus': (functools.partial(truck, kind='bus'), 'Bus', 'Truck'),
    'pedestrian': (lambda rng, wb, label: person(rng, wb, label, 'walk'), 'Pedestrian',
                   'Pedestrian'),
    'standing': (lambda rng, wb, label: person(rng, wb, label, 'stand'), 'Pedestrian',
                 'Pedestrian'),
    'cyclist': (cyclist, 'Cyclist', 'Bicycle'),
}


def place_rotation(yaw: float) -> np.ndarray:
    """Return the placement rotation of an object with heading ``yaw``."""
    return rotation_z(yaw)
