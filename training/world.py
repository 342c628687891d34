"""Triangle-mesh world of the synthetic generator and its ray caster (Embree through embreex).

A frame's world is one triangle soup: every triangle carries a material (semantic label name,
albedo, LiDAR reflectance, how often a LiDAR ray passes through it) and an owner (the actor it
belongs to, -1 for scenery). ``MeshBuilder`` collects shapes, ``World.cast`` returns the
nearest hit per ray. Unit primitives (box, cylinder, cone, sphere) come from trimesh and are
placed by scale, rotation and translation; car bodies are extruded side profiles.

Why Embree: the LiDAR of one frame casts 30k-250k rays and the camera 250k-2.3M against
30k-300k triangles; Embree's BVH does that in a fraction of a second on one core, is
deterministic, and embreex ships it as a wheel (no system package), so the world can hold real
shapes (bonnets, windscreens, legs, spokes, tree crowns) instead of a few hand-tested boxes.
It is a training-time dependency only: nothing under ``bev_perception/`` imports this module.

Transparent surfaces: a LiDAR ray that hits a triangle with ``transmit`` t continues behind it
with probability t (glass, foliage, spokes, mesh fences), up to ``MAX_PASSES`` surfaces; camera
rays stop at the first surface.
"""

from dataclasses import dataclass
import functools
import math
from typing import Dict, List, Optional, Sequence, Tuple

from embreex import rtcore_scene
from embreex.mesh_construction import TriangleMesh
import numpy as np
import trimesh

#: Surfaces a LiDAR ray may pass through before the hit is kept.
MAX_PASSES = 3
_EPSILON_M = 1e-3


@dataclass(frozen=True)
class Material:
    """How a surface looks to the camera and the LiDAR."""

    label: str  # A2D2 label colour name, e.g. 'Car 2', 'Nature object'
    albedo: Tuple[float, float, float]  # linear RGB 0..1
    reflectance: float  # diffuse LiDAR reflectivity 0..1 at normal incidence
    transmit: float = 0.0  # probability that a LiDAR ray passes through
    retro: bool = False  # retro-reflective (signs, number plates): bright at any incidence
    texture: float = 0.1  # amplitude of the procedural albedo variation
    scatter_m: float = 0.0  # LiDAR returns land up to this far behind the surface (foliage)
    sky_through: float = 0.0  # up to this share of a pixel shows the sky (bare crowns)
    own_colour: bool = False  # keeps its albedo under the scene's tint of its label (season)


@dataclass
class Mesh:
    """A triangle soup with per-face material and owner."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    material: np.ndarray  # (F,) int32 index into the material table
    owner: np.ndarray  # (F,) int32 actor index, -1 for scenery


# ----------------------------------------------------------------------------- primitives


@functools.lru_cache(maxsize=None)
def _unit(kind: str, detail: int) -> Tuple[np.ndarray, np.ndarray]:
    """Return (vertices, faces) of a unit primitive centred at the origin (z is the axis)."""
    if kind == 'box':
        mesh = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    elif kind == 'cylinder':
        mesh = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=detail)
    elif kind == 'cone':
        mesh = trimesh.creation.cone(radius=1.0, height=1.0, sections=detail)
        mesh.apply_translation((0.0, 0.0, -0.5))
    elif kind == 'sphere':
        mesh = trimesh.creation.icosphere(subdivisions=detail, radius=1.0)
    else:
        raise ValueError(f'unknown primitive {kind!r}')
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int32)


def rotation_z(yaw: float) -> np.ndarray:
    """Return the (3, 3) rotation about +z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _align_z(direction: np.ndarray) -> np.ndarray:
    """Return a rotation that maps +z onto the unit ``direction``."""
    z = direction / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


class MeshBuilder:
    """Collects shapes in a local frame; ``place`` moves them into the world."""

    def __init__(self) -> None:
        """Start empty."""
        self._vertices: List[np.ndarray] = []
        self._faces: List[np.ndarray] = []
        self._material: List[np.ndarray] = []
        self._count = 0

    def add(self, vertices: np.ndarray, faces: np.ndarray, material: int) -> None:
        """Add a mesh (vertices (V, 3), faces (F, 3)) with one material."""
        self._vertices.append(np.asarray(vertices, dtype=np.float64))
        self._faces.append(np.asarray(faces, dtype=np.int32) + self._count)
        self._material.append(np.full(len(faces), material, dtype=np.int32))
        self._count += len(vertices)

    def add_faces(self, vertices: np.ndarray, faces: np.ndarray, material: np.ndarray) -> None:
        """Add a mesh with a material per face."""
        self.add(vertices, faces, 0)
        self._material[-1] = np.asarray(material, dtype=np.int32)

    def primitive(self, kind: str, centre: Sequence[float], size: Sequence[float],
                  material: int, rotation: Optional[np.ndarray] = None, detail: int = 8) -> None:
        """Add a box/cylinder/cone/sphere of full ``size`` (x, y, z extents) at ``centre``."""
        vertices, faces = _unit(kind, detail)
        scale = np.asarray(size, dtype=np.float64) * (0.5 if kind in ('cylinder', 'cone',
                                                                      'sphere') else 1.0)
        if kind in ('cylinder', 'cone'):
            scale[2] *= 2.0  # unit height is 1, unit radius is 1
        placed = vertices * scale
        if rotation is not None:
            placed = placed @ rotation.T
        self.add(placed + np.asarray(centre, dtype=np.float64), faces, material)

    def box(self, low: Sequence[float], high: Sequence[float], material: int) -> None:
        """Add an axis-aligned box between two corners."""
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self.primitive('box', (low + high) / 2, high - low, material)

    def tube(self, start: Sequence[float], end: Sequence[float], radius: float, material: int,
             sections: int = 6) -> None:
        """Add a cylinder of ``radius`` from ``start`` to ``end``."""
        start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
        axis = end - start
        length = float(np.linalg.norm(axis))
        if length < 1e-6:
            return
        self.primitive('cylinder', (start + end) / 2, (2 * radius, 2 * radius, length),
                       material, _align_z(axis), detail=sections)

    def prism(self, profile_xz: np.ndarray, y_low: float, y_high: float,
              side_material: int, cap_material: int,
              strip_materials: Optional[Sequence[int]] = None) -> None:
        """Extrude a simple polygon in the x-z plane (counter-clockwise, (K, 2)) along y.

        Caps get ``cap_material``; the strip between vertex k and k + 1 gets
        ``strip_materials[k]`` (default ``side_material``).
        """
        profile = np.asarray(profile_xz, dtype=np.float64)
        count = len(profile)
        triangles = triangulate(profile)
        low = np.stack([profile[:, 0], np.full(count, y_low), profile[:, 1]], axis=1)
        high = np.stack([profile[:, 0], np.full(count, y_high), profile[:, 1]], axis=1)
        vertices = np.concatenate([low, high])
        k = np.arange(count)
        nxt = (k + 1) % count
        strips = np.concatenate([np.stack([k, nxt, count + nxt], axis=1),
                                 np.stack([k, count + nxt, count + k], axis=1)])
        caps = np.concatenate([triangles[:, ::-1], triangles + count])
        materials = np.asarray(strip_materials if strip_materials is not None
                               else [side_material] * count, dtype=np.int32)
        self.add_faces(vertices, np.concatenate([strips, caps]),
                       np.concatenate([materials, materials,
                                       np.full(len(caps), cap_material, dtype=np.int32)]))

    def place(self, rotation: np.ndarray, translation: Sequence[float], owner: int,
              into: 'WorldBuilder') -> np.ndarray:
        """Move everything added so far into ``into``; return the placed vertices (V, 3)."""
        if not self._vertices:
            return np.zeros((0, 3))
        vertices = np.concatenate(self._vertices) @ rotation.T + np.asarray(translation)
        faces = np.concatenate(self._faces)
        into.append(vertices, faces, np.concatenate(self._material), owner)
        return vertices

    def shift(self, offset: Sequence[float]) -> None:
        """Move everything added so far by ``offset`` (3,) in the local frame."""
        self._vertices = [v + np.asarray(offset, dtype=np.float64) for v in self._vertices]

    def rotate_z(self, yaw: float) -> None:
        """Turn everything added so far by ``yaw`` about the local z axis."""
        rotation = rotation_z(yaw)
        self._vertices = [v @ rotation.T for v in self._vertices]

    def extend(self, other: 'MeshBuilder') -> None:
        """Add everything ``other`` holds (its materials are indices of the same table)."""
        offset = 0  # other's faces index its concatenated vertices
        for vertices, faces, material in zip(other._vertices, other._faces, other._material):
            self.add_faces(vertices, faces - offset, material)
            offset += len(vertices)

    def local_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Return (min, max) corners (3,) of what was added, in the local frame."""
        vertices = np.concatenate(self._vertices)
        return vertices.min(axis=0), vertices.max(axis=0)


def triangulate(polygon: np.ndarray) -> np.ndarray:
    """Ear-clip a simple counter-clockwise polygon (K, 2); return (K - 2, 3) vertex indices."""
    remaining = list(range(len(polygon)))
    triangles = []

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    guard = 0
    while len(remaining) > 3 and guard < 10_000:
        guard += 1
        for position in range(len(remaining)):
            i, j, k = (remaining[position - 1], remaining[position],
                       remaining[(position + 1) % len(remaining)])
            a, b, c = polygon[i], polygon[j], polygon[k]
            if cross(a, b, c) <= 1e-12:
                continue  # reflex or degenerate corner
            if any(cross(a, b, polygon[m]) >= 0 and cross(b, c, polygon[m]) >= 0
                   and cross(c, a, polygon[m]) >= 0
                   for m in remaining if m not in (i, j, k)
                   and min(np.abs(polygon[m] - p).sum() for p in (a, b, c)) > 1e-12):
                continue  # another vertex inside the ear or on its border
            triangles.append((i, j, k))
            remaining.pop(position)
            break
        else:
            raise ValueError('polygon is not simple and counter-clockwise')
    triangles.append(tuple(remaining))
    return np.array(triangles, dtype=np.int32)


# ----------------------------------------------------------------------------- world


class WorldBuilder:
    """The material table and the placed meshes of one frame."""

    def __init__(self) -> None:
        """Start with an empty table."""
        self.materials: List[Material] = []
        self._index: Dict[Material, int] = {}
        self._parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []

    def material(self, label: str, albedo: Sequence[float], reflectance: float,
                 transmit: float = 0.0, retro: bool = False, texture: float = 0.1,
                 scatter_m: float = 0.0, sky_through: float = 0.0,
                 own_colour: bool = False) -> int:
        """Return the index of the material with these properties (created on first use)."""
        key = Material(label, tuple(float(a) for a in albedo), float(reflectance),
                       float(transmit), bool(retro), float(texture), float(scatter_m),
                       float(sky_through), bool(own_colour))
        if key not in self._index:
            self._index[key] = len(self.materials)
            self.materials.append(key)
        return self._index[key]

    def append(self, vertices: np.ndarray, faces: np.ndarray, material: np.ndarray,
               owner: int) -> None:
        """Add placed triangles."""
        self._parts.append((vertices, faces, material, owner))

    def build(self) -> 'World':
        """Concatenate everything into one mesh and its Embree scene."""
        vertices, faces, material, owner = [], [], [], []
        count = 0
        for v, f, m, o in self._parts:
            vertices.append(v)
            faces.append(f + count)
            material.append(m)
            owner.append(np.full(len(f), o, dtype=np.int32))
            count += len(v)
        mesh = Mesh(vertices=np.concatenate(vertices).astype(np.float32),
                    faces=np.concatenate(faces).astype(np.int32),
                    material=np.concatenate(material).astype(np.int32),
                    owner=np.concatenate(owner))
        return World(mesh, tuple(self.materials))


@dataclass(frozen=True)
class Hits:
    """Nearest kept hit per ray."""

    distance: np.ndarray  # (R,) float64 along the unit ray, inf = no hit
    face: np.ndarray  # (R,) int64 triangle index, -1 = no hit
    normal: np.ndarray  # (R, 3) float64 unit geometric normal facing the ray

    @property
    def hit(self) -> np.ndarray:
        """Return (R,) bool: the ray hit something."""
        return self.face >= 0


class World:
    """One frame's triangles, materials and Embree scene."""

    def __init__(self, mesh: Mesh, materials: Tuple[Material, ...]) -> None:
        """Build the Embree scene of ``mesh``."""
        self.mesh = mesh
        self.materials = materials
        self._scene = rtcore_scene.EmbreeScene()
        TriangleMesh(self._scene, mesh.vertices[mesh.faces])
        self.transmit = np.array([m.transmit for m in materials], dtype=np.float64)
        self.scatter_m = np.array([m.scatter_m for m in materials], dtype=np.float64)
        self.sky_through = np.array([m.sky_through for m in materials], dtype=np.float64)
        self.own_colour = np.array([m.own_colour for m in materials], dtype=bool)

    def _run(self, origins: np.ndarray, directions: np.ndarray,
             max_distance: Optional[np.ndarray] = None
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        result = self._scene.run(
            np.ascontiguousarray(origins, dtype=np.float32),
            np.ascontiguousarray(directions, dtype=np.float32),
            dists=None if max_distance is None else np.ascontiguousarray(
                max_distance, dtype=np.float32), output=1)
        face = result['primID'].astype(np.int64)
        distance = np.where(face >= 0, result['tfar'].astype(np.float64), np.inf)
        return distance, face, result['Ng'].astype(np.float64)

    def cast(self, origins: np.ndarray, directions: np.ndarray,
             rng: Optional[np.random.Generator] = None,
             max_distance: float = 1e4) -> Hits:
        """Cast unit rays (R, 3) from ``origins`` (R, 3); with ``rng``, pass transparent faces."""
        origins = np.broadcast_to(np.asarray(origins, dtype=np.float64), directions.shape)
        distance, face, normal = self._run(origins, directions,
                                           np.full(len(directions), max_distance))
        if rng is not None:
            # Draws for every ray and pass, so the random stream does not depend on the hits.
            draws = rng.random((MAX_PASSES, len(directions)))
            travelled = np.zeros(len(directions))
            for draw in draws:
                hit = face >= 0
                transmit = np.zeros(len(directions))
                transmit[hit] = self.transmit[self.mesh.material[face[hit]]]
                through = np.nonzero(hit & (draw < transmit))[0]
                if not len(through):
                    break
                travelled[through] = distance[through] + _EPSILON_M  # distances are totals
                start = origins[through] + travelled[through, None] * directions[through]
                d2, f2, n2 = self._run(start, directions[through],
                                       max_distance - travelled[through])
                distance[through] = np.where(f2 >= 0, d2 + travelled[through], np.inf)
                face[through], normal[through] = f2, n2
        length = np.linalg.norm(normal, axis=1, keepdims=True)
        normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
        facing = np.einsum('ij,ij->i', normal, directions)
        normal[facing > 0] *= -1.0
        return Hits(distance=distance, face=face, normal=normal)


def hash_noise(points: np.ndarray, cell_m: float, seed: int) -> np.ndarray:
    """Return a deterministic value noise in [-1, 1] of points (N, 3) on a ``cell_m`` lattice."""
    cells = np.floor(points / cell_m).astype(np.int64)
    mixed = (cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (cells[:, 2] * 83492791)
    mixed = (mixed ^ (seed * 2654435761)) & 0xFFFFFFFF
    mixed = (mixed * 2246822519) & 0xFFFFFFFF
    mixed ^= mixed >> 13
    return (mixed & 0xFFFF) / 32767.5 - 1.0
