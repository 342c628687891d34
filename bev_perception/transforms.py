"""A small transform tree fed from ``/tf`` and ``/tf_static`` (no ROS; the node feeds it).

Each ``geometry_msgs/TransformStamped`` says where a child frame sits in its parent:
p_parent = R p_child + t, R from the unit quaternion (x, y, z, w). The tree answers
``lookup(target, source)``: the (R, t) with p_target = R p_source + t, through the frames'
common ancestor.

Time: a static edge holds one transform. A dynamic edge (``/tf``) keeps the transforms of the
last ``max_age_s`` seconds of header stamps; a lookup at a stamp interpolates between the two
around it (translation linearly, rotation by slerp), as tf2 does. Outside the kept span it takes
the nearest one (tf2 would refuse to extrapolate; a camera pose a few milliseconds older than
the image is what a rigid or slowly moving mount needs), and without a stamp the latest. A
dynamic edge not received for ``max_age_s`` seconds of the caller's clock counts as gone.

Frame names are compared without a leading '/', as tf2 does.
"""

import bisect
from dataclasses import dataclass
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bev_perception.geometry import rotation_from_quaternion
import numpy as np

Rigid = Tuple[np.ndarray, np.ndarray]  # (R (3, 3), t (3,)) float64


class TransformError(ValueError):
    """A transform that cannot be used (not finite, not a unit quaternion, a frame loop)."""


def _frame(name: str) -> str:
    return name[1:] if name.startswith('/') else name


@dataclass(frozen=True)
class _Sample:
    stamp_s: float  # header stamp
    quaternion: np.ndarray  # (4,) x, y, z, w, unit: child -> parent (for slerp)
    rotation: np.ndarray  # (3, 3) the same rotation
    translation: np.ndarray  # (3,)


@dataclass
class _Edge:
    parent: str
    static: bool
    samples: List[_Sample]  # by stamp; one for a static edge
    received_s: float  # caller's clock (monotonic seconds) at the latest sample

    def add(self, sample: _Sample, max_age_s: float) -> None:
        """Insert ``sample`` by stamp (replacing one of the same stamp); drop the too old."""
        index = bisect.bisect_left(self.samples, sample.stamp_s, key=_stamp)
        if index < len(self.samples) and self.samples[index].stamp_s == sample.stamp_s:
            self.samples[index] = sample
        else:
            self.samples.insert(index, sample)
        oldest = bisect.bisect_left(self.samples, self.samples[-1].stamp_s - max_age_s,
                                    key=_stamp)
        del self.samples[:oldest]

    def at(self, stamp_s: Optional[float]) -> Rigid:
        """Return (R, t) child -> parent at ``stamp_s`` (see the module docstring)."""
        samples = self.samples
        if stamp_s is None or stamp_s >= samples[-1].stamp_s:
            return samples[-1].rotation, samples[-1].translation
        if stamp_s <= samples[0].stamp_s:
            return samples[0].rotation, samples[0].translation
        after = bisect.bisect_right(samples, stamp_s, key=_stamp)
        before, later = samples[after - 1], samples[after]
        weight = (stamp_s - before.stamp_s) / (later.stamp_s - before.stamp_s)
        return (rotation_from_quaternion(*_slerp(before.quaternion, later.quaternion, weight)),
                (1.0 - weight) * before.translation + weight * later.translation)


def _stamp(sample: _Sample) -> float:
    return sample.stamp_s


def _slerp(first: np.ndarray, second: np.ndarray, weight: float) -> np.ndarray:
    """Return the unit quaternion (4,) a ``weight`` (0..1) of the way from first to second."""
    dot = float(np.dot(first, second))
    if dot < 0.0:  # q and -q are the same rotation: take the short way
        second, dot = -second, -dot
    if dot > 0.9995:  # nearly equal: linear is exact enough and stable
        blended = (1.0 - weight) * first + weight * second
        return blended / np.linalg.norm(blended)
    angle = math.acos(dot)
    return (math.sin((1.0 - weight) * angle) * first
            + math.sin(weight * angle) * second) / math.sin(angle)


class TransformTree:
    """Transforms of every frame to its parent over time (see the module docstring)."""

    def __init__(self, max_age_s: float = 10.0) -> None:
        """Keep ``max_age_s`` seconds of each dynamic edge (stamps) and age it out after that."""
        self.max_age_s = max_age_s
        self._edges: Dict[str, _Edge] = {}  # child -> edge to its parent

    def update(self, parent: str, child: str, translation: Sequence[float],
               quaternion: Sequence[float], static: bool, now_s: float,
               stamp_s: Optional[float] = None) -> None:
        """Store where ``child`` sits in ``parent`` (translation (3,), quaternion x, y, z, w).

        ``now_s`` is the caller's clock, ``stamp_s`` the header stamp (None: ``now_s``).

        Raises:
            TransformError: non-finite values, a non-unit quaternion, an empty or equal frame
                name, or a loop (``parent`` below ``child``).
        """
        parent, child = _frame(parent), _frame(child)
        if not parent or not child or parent == child:
            raise TransformError(f'transform {parent!r} -> {child!r} needs two frame names')
        vector = np.asarray(translation, dtype=np.float64).reshape(3)
        if not np.isfinite(vector).all():
            raise TransformError(f'transform {parent!r} -> {child!r}: translation is not finite')
        try:
            rotation = rotation_from_quaternion(*quaternion)
        except ValueError as error:
            raise TransformError(f'transform {parent!r} -> {child!r}: {error}') from None
        if child in self._chain(parent, now_s, None):
            raise TransformError(f'transform {parent!r} -> {child!r} would close a loop')
        unit = np.asarray(quaternion, dtype=np.float64)
        sample = _Sample(now_s if stamp_s is None else float(stamp_s),
                         unit / np.linalg.norm(unit), rotation, vector)
        edge = self._edges.get(child)
        if static or edge is None or edge.static or edge.parent != parent:
            self._edges[child] = _Edge(parent, static, [sample], now_s)
        else:
            edge.add(sample, self.max_age_s)
            edge.received_s = now_s

    def update_from_message(self, msg: Any, static: bool, now_s: float) -> List[str]:
        """Store every transform of a tf2_msgs/TFMessage (rclpy's or rosbags' class).

        Returns the messages of the refused transforms (one per refused transform).
        """
        refused = []
        for stamped in msg.transforms:
            translation, rotation = stamped.transform.translation, stamped.transform.rotation
            stamp = stamped.header.stamp
            try:
                self.update(stamped.header.frame_id, stamped.child_frame_id,
                            (translation.x, translation.y, translation.z),
                            (rotation.x, rotation.y, rotation.z, rotation.w), static, now_s,
                            stamp.sec + 1e-9 * stamp.nanosec)
            except TransformError as error:
                refused.append(str(error))
        return refused

    def _parent(self, frame: str, now_s: float) -> Optional[_Edge]:
        edge = self._edges.get(frame)
        if edge is None or (not edge.static and now_s - edge.received_s > self.max_age_s):
            return None
        return edge

    def _chain(self, frame: str, now_s: float, stamp_s: Optional[float]) -> Dict[str, Rigid]:
        """Return {ancestor (frame itself included): (R, t) frame -> ancestor} at ``stamp_s``."""
        rotation, translation = np.eye(3), np.zeros(3)
        chain = {frame: (rotation, translation)}
        while True:
            edge = self._parent(frame, now_s)
            if edge is None or edge.parent in chain:
                return chain
            edge_rotation, edge_translation = edge.at(stamp_s)
            rotation, translation = (edge_rotation @ rotation,
                                     edge_rotation @ translation + edge_translation)
            frame = edge.parent
            chain[frame] = (rotation, translation)

    def lookup(self, target: str, source: str, now_s: float,
               stamp_s: Optional[float] = None) -> Optional[Rigid]:
        """Return (R, t) with p_target = R p_source + t, or None when the frames are not linked.

        ``now_s`` is the caller's clock that ages the dynamic edges; ``stamp_s`` the time the
        transform is wanted at (a header stamp; None: the latest).
        """
        target, source = _frame(target), _frame(source)
        if not target or not source:
            return None
        up_from_source = self._chain(source, now_s, stamp_s)
        up_from_target = self._chain(target, now_s, stamp_s)
        common = next((frame for frame in up_from_target if frame in up_from_source), None)
        if common is None:
            return None
        source_rotation, source_translation = up_from_source[common]
        target_rotation, target_translation = up_from_target[common]
        rotation = target_rotation.T @ source_rotation
        return rotation, target_rotation.T @ (source_translation - target_translation)

    def frames(self) -> Tuple[str, ...]:
        """Return every frame named so far (children and parents), sorted."""
        return tuple(sorted(set(self._edges) | {e.parent for e in self._edges.values()}))
