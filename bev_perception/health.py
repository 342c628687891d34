"""The node's health counters and the status they give, without ROS.

Every count is cumulative since start-up. Once per diagnostics period the node compares the
counts with the previous period's (``HealthReport.update``): the level and message say what
changed, the values carry the totals.
"""

from dataclasses import dataclass, field
import math
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Tuple

#: Longest frame id quoted in a message.
MAX_QUOTED_CHARS = 80

#: Status levels, as diagnostic_msgs/DiagnosticStatus names them.
OK, WARN, ERROR = 'OK', 'WARN', 'ERROR'

#: Counters whose increase within a diagnostics period makes the status WARN, with wording.
WARN_COUNTERS = (
    ('bad_clouds', 'malformed clouds'), ('bad_images', 'malformed images'),
    ('empty_clouds', 'empty clouds'), ('dropped_frames', 'dropped frames'),
    ('lidar_only_frames', 'LiDAR-only frames'), ('unpaired_clouds', 'clouds without image'),
    ('points_subsampled', 'points subsampled'), ('pillars_capped', 'pillars capped'),
    ('intensity_out_of_range', 'intensity out of range'), ('time_jumps', 'time jumps back'),
    ('over_budget', 'frames over budget'),
    ('uncalibrated_images', 'images without camera calibration'),
    ('unfamiliar_camera_frames', 'fused with a camera unlike the training cameras'),
    ('bad_camera_info', 'refused camera_info'),
    ('bad_transforms', 'refused /tf transforms'),
)


@dataclass
class Counters:
    """Cumulative counts shown in diagnostics; every update holds the lock."""

    clouds_in: int = 0
    images_in: int = 0
    frames_out: int = 0
    fused_frames: int = 0
    lidar_only_frames: int = 0
    dropped_frames: int = 0
    skipped_frames: int = 0
    unpaired_clouds: int = 0  # approximate sync: the pair's image was refused
    uncalibrated_images: int = 0  # weights that fuse by calibration got an image without one
    unfamiliar_camera_frames: int = 0  # fused with a camera outside the training cameras' range
    camera_infos_in: int = 0
    bad_camera_info: int = 0  # CameraInfo the network cannot use (calibration.CalibrationError)
    transforms_in: int = 0  # transforms received on /tf and /tf_static
    bad_transforms: int = 0  # refused ones (transforms.TransformError)
    bad_clouds: int = 0
    bad_images: int = 0
    empty_clouds: int = 0
    non_finite_points: int = 0
    points_out_of_range: int = 0
    points_subsampled: int = 0  # above max_points (node)
    pillar_points_capped: int = 0  # above the model's points per pillar (by design, no warning)
    pillars_capped: int = 0  # above the model's max_pillars
    intensity_out_of_range: int = 0
    time_jumps: int = 0
    over_budget: int = 0
    inference_errors: int = 0
    # Refused clouds by reason (conversions.CLOUD_REJECTIONS); their sum is bad_clouds.
    bad_cloud_missing_field: int = 0
    bad_cloud_duplicate_field: int = 0
    bad_cloud_unknown_datatype: int = 0
    bad_cloud_field_count: int = 0
    bad_cloud_field_offset: int = 0
    bad_cloud_point_step: int = 0
    bad_cloud_row_step: int = 0
    bad_cloud_data_size: int = 0
    # Refused images by reason (conversions.IMAGE_REJECTIONS); their sum is bad_images.
    bad_image_encoding: int = 0
    bad_image_empty: int = 0
    bad_image_step: int = 0
    bad_image_data_size: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def names(self) -> Tuple[str, ...]:
        """Return the counter names, in declaration order."""
        return tuple(name for name in self.__dataclass_fields__ if name != 'lock')

    def add(self, **increments: int) -> None:
        """Add to named counters."""
        with self.lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> Dict[str, int]:
        """Return a consistent copy of all counts."""
        with self.lock:
            return {name: getattr(self, name) for name in self.names()}


class HealthReport:
    """Turns successive counter snapshots and frame times into a status (thread-safe)."""

    def __init__(self) -> None:
        self._previous: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._processing_ms: List[float] = []
        self._last_latency_ms = math.nan

    def record_frame(self, processing_ms: float, end_to_end_ms: float) -> None:
        """Note a published frame's processing time and end-to-end latency."""
        with self._lock:
            self._processing_ms.append(processing_ms)
            self._last_latency_ms = end_to_end_ms

    def values(self, counts: Mapping[str, int]) -> List[Tuple[str, str]]:
        """Return the status values: every count, the last latency, the mean processing time.

        The processing times are those since the previous call.
        """
        with self._lock:
            processing, self._processing_ms = self._processing_ms, []
            latency = self._last_latency_ms
        return [(name, str(value)) for name, value in counts.items()] + [
            ('last_end_to_end_ms', f'{latency:.1f}'),
            ('mean_processing_ms', f'{sum(processing) / len(processing):.1f}'
             if processing else '')]

    def update(self, counts: Mapping[str, int], worker_alive: bool) -> Tuple[str, str]:
        """Return (level, message) for the change since the previous call."""
        delta = {name: counts[name] - self._previous.get(name, 0) for name in counts}
        self._previous = dict(counts)
        problems = [f'{delta[name]} {text}' + _reasons(name, delta)
                    for name, text in WARN_COUNTERS if delta[name]]
        if delta['inference_errors'] or not worker_alive:
            problems.insert(0, f'{delta["inference_errors"]} failed frames'
                            if worker_alive else 'inference worker stopped')
            return ERROR, ', '.join(problems)
        if problems:
            return WARN, ', '.join(problems)
        if counts['clouds_in'] == 0:
            return WARN, 'no point cloud received yet'
        return OK, (f'{delta["frames_out"]} frames ({delta["fused_frames"]} fused) since last '
                    'report')


def _reasons(counter: str, delta: Mapping[str, int]) -> str:
    """Return ' (reason n, ...)' of the per-reason counts behind bad_clouds / bad_images."""
    prefix = {'bad_clouds': 'bad_cloud_', 'bad_images': 'bad_image_'}.get(counter)
    if prefix is None:
        return ''
    reasons: List[str] = [f'{name[len(prefix):]} {count}' for name, count in delta.items()
                          if name.startswith(prefix) and count]
    return f' ({", ".join(reasons)})' if reasons else ''


class ThrottledLog:
    """Log at most one message per kind every ``period_s`` (monotonic clock).

    Args:
        log: where messages go (e.g. a ROS logger's ``warning``).
        period_s: seconds between two messages of the same kind.
    """

    def __init__(self, log: Callable[[str], Any], period_s: float) -> None:
        self._log = log
        self._period_s = period_s
        self._logged_at: Dict[str, float] = {}

    def __call__(self, kind: str, message: str) -> None:
        """Log ``message`` unless a message of ``kind`` was logged within the period."""
        now = time.monotonic()
        if now - self._logged_at.get(kind, -math.inf) >= self._period_s:
            self._logged_at[kind] = now
            self._log(message)


def describe_input(topic: str, header: Any, field_name: str = '') -> str:
    """Return 'on <topic> (stamp <s>, frame <id>[, field <name>])' of an input message."""
    frame_id = header.frame_id
    if len(frame_id) > MAX_QUOTED_CHARS:
        frame_id = frame_id[:MAX_QUOTED_CHARS] + '...'
    return (f'on {topic} (stamp {header.stamp.sec}.{header.stamp.nanosec:09d}, frame '
            f'{frame_id!r}' + (f', field {field_name!r}' if field_name else '') + ')')
