"""A small transform tree fed from ``/tf`` and ``/tf_static`` (no ROS; the node feeds it).

Each ``geometry_msgs/TransformStamped`` says where a child frame sits in its parent:
p_parent = R p_child + t, R from the unit quaternion (x, y, z, w). The tree keeps the latest
transform of every (parent, child) edge and answers ``lookup(target, source)``: the (R, t)
with p_target = R p_source + t, through the frames' common ancestor. It is what the node needs
for the LiDAR-to-camera extrinsic, which is static on a rigid rig: there is no time
interpolation (a moving camera mount would need tf2's buffer), and a dynamic edge older than
``max_age_s`` counts as gone.

Frame names are compared without a leading '/', as tf2 does.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bev_perception.geometry import rotation_from_quaternion
import numpy as np

Rigid = Tuple[np.ndarray, np.ndarray]  # (R (3, 3), t (3,)) float64


class TransformError(ValueError):
    """A transform that cannot be used (not finite, not a unit quaternion, a frame loop)."""


def _frame(name: str) -> str:
    return name[1:] if name.startswith('/') else name


@dataclass(frozen=True)
class _Edge:
    parent: str
    rotation: np.ndarray  # child -> parent
    translation: np.ndarray
    static: bool
    received_s: float  # monotonic seconds


class TransformTree:
    """The latest transform of every frame to its parent (see the module docstring)."""

    def __init__(self, max_age_s: float = 10.0) -> None:
        """Keep dynamic edges for ``max_age_s`` seconds after they were last received."""
        self.max_age_s = max_age_s
        self._edges: Dict[str, _Edge] = {}  # child -> edge to its parent

    def update(self, parent: str, child: str, translation: Sequence[float],
               quaternion: Sequence[float], static: bool, now_s: float) -> None:
        """Store where ``child`` sits in ``parent`` (translation (3,), quaternion x, y, z, w).

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
        if child in self._chain(parent, now_s):
            raise TransformError(f'transform {parent!r} -> {child!r} would close a loop')
        self._edges[child] = _Edge(parent, rotation, vector, static, now_s)

    def update_from_message(self, msg: Any, static: bool, now_s: float) -> List[str]:
        """Store every transform of a tf2_msgs/TFMessage (rclpy's or rosbags' class).

        Returns the messages of the refused transforms (one per refused transform).
        """
        refused = []
        for stamped in msg.transforms:
            translation, rotation = stamped.transform.translation, stamped.transform.rotation
            try:
                self.update(stamped.header.frame_id, stamped.child_frame_id,
                            (translation.x, translation.y, translation.z),
                            (rotation.x, rotation.y, rotation.z, rotation.w), static, now_s)
            except TransformError as error:
                refused.append(str(error))
        return refused

    def _parent(self, frame: str, now_s: float) -> Optional[_Edge]:
        edge = self._edges.get(frame)
        if edge is None or (not edge.static and now_s - edge.received_s > self.max_age_s):
            return None
        return edge

    def _chain(self, frame: str, now_s: float) -> Dict[str, Rigid]:
        """Return {ancestor (frame itself included): (R, t) frame -> ancestor}."""
        rotation, translation = np.eye(3), np.zeros(3)
        chain = {frame: (rotation, translation)}
        while True:
            edge = self._parent(frame, now_s)
            if edge is None or edge.parent in chain:
                return chain
            rotation, translation = (edge.rotation @ rotation,
                                     edge.rotation @ translation + edge.translation)
            frame = edge.parent
            chain[frame] = (rotation, translation)

    def lookup(self, target: str, source: str, now_s: float) -> Optional[Rigid]:
        """Return (R, t) with p_target = R p_source + t, or None when the frames are not linked.

        ``now_s`` is the monotonic time that ages the dynamic edges.
        """
        target, source = _frame(target), _frame(source)
        if not target or not source:
            return None
        up_from_source = self._chain(source, now_s)
        up_from_target = self._chain(target, now_s)
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
