"""Pairing of LiDAR clouds with camera images, and the latest-wins hand-over to a worker.

No ROS here: stamps are float seconds and payloads are opaque objects, so the node, the bag
evaluator and the tests share one implementation.

LiDAR-triggered pairing (``LidarTriggeredSync``): images are buffered; every cloud becomes one
frame, paired with the buffered image whose stamp is nearest to ``cloud stamp +
image_time_offset_s`` (the camera's expected delay after the LiDAR sweep: 40-60 ms on A2D2) if
that distance is at most ``max_image_age_s``, else LiDAR-only. Because images arrive after the
cloud they belong to, a cloud may wait up to ``max_image_wait_s`` (receive time) for an image
stamped at or after its target time; once such an image is buffered, and it or the image before
it lies within ``max_image_age_s`` of the target, no later image can be nearer, so the pairing
is final. (An image far past the target alone does not end the wait: it may be a stamp outlier
whose successors step back to the cloud's time.)

A stamp that steps backwards by more than ``time_jump_threshold_s`` in either stream (a looping
bag, a restarted driver, one outlier stamped far ahead) is a time jump: the images of the old
timeline (stamped ahead of the new stamp by more than ``max(max_image_age_s,
time_jump_threshold_s)``) leave the buffer, and a cloud waiting for its image is released with
the old images unless the new image is nearer to it (then it belongs to the new timeline and
keeps waiting).
"""

import bisect
from dataclasses import dataclass, fields
import threading
from typing import Dict, Generic, List, Optional, Tuple, TypeVar

Payload = TypeVar('Payload')


@dataclass(frozen=True)
class SyncSettings:
    """Settings of the LiDAR-triggered pairing (seconds).

    Attributes:
        max_image_age_s: largest |image stamp - (cloud stamp + image_time_offset_s)| paired.
        image_time_offset_s: expected image stamp minus cloud stamp of a matching pair.
        max_image_wait_s: how long (receive time) a cloud may wait for its image; 0 pairs at once
            with what is buffered.
        image_buffer_size: images kept, newest first out when full.
        time_jump_threshold_s: a backwards stamp step larger than this resets the buffer.
    """

    max_image_age_s: float = 0.1
    image_time_offset_s: float = 0.05
    max_image_wait_s: float = 0.1
    image_buffer_size: int = 10
    time_jump_threshold_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ('max_image_age_s', 'max_image_wait_s', 'time_jump_threshold_s'):
            if getattr(self, name) < 0:
                raise ValueError(f'SyncSettings.{name} must not be negative')
        if self.image_buffer_size < 1:
            raise ValueError('SyncSettings.image_buffer_size must be at least 1')


@dataclass
class SyncCounters:
    """What the pairing has seen since it was created (plain ints)."""

    clouds: int = 0  # clouds added
    images: int = 0  # images added
    fused: int = 0  # frames released with an image
    lidar_only: int = 0  # frames released without an image
    time_jumps: int = 0  # resets caused by stamps going backwards
    waited_out: int = 0  # clouds whose wait for an image expired
    images_unused: int = 0  # images that left the buffer without being paired

    def as_dict(self) -> Dict[str, int]:
        """Return the counters by name."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True)
class SyncedFrame(Generic[Payload]):
    """One cloud and the image paired with it (or none).

    Attributes:
        cloud: the cloud payload.
        cloud_stamp_s: its stamp.
        image: the paired image payload, or None for a LiDAR-only frame.
        image_stamp_s: the paired image's stamp, or None.
        nearest_image_offset_s: image stamp - cloud stamp of the nearest buffered image (paired
            or not), None when no image was buffered; tells a clock mismatch from a dead camera.
        received_s: receive time of the cloud (the clock passed to ``add_cloud``).
    """

    cloud: Payload
    cloud_stamp_s: float
    image: Optional[Payload]
    image_stamp_s: Optional[float]
    nearest_image_offset_s: Optional[float]
    received_s: float

    @property
    def lidar_only(self) -> bool:
        """Return True when no image was paired."""
        return self.image is None


class LidarTriggeredSync(Generic[Payload]):
    """Pair each cloud with the nearest buffered image; see the module docstring.

    All methods return the frames they release, in cloud order. Not thread-safe: call from one
    thread (the node calls it from its executor only).
    """

    def __init__(self, settings: SyncSettings = SyncSettings()) -> None:
        self._settings = settings
        self._image_stamps: List[float] = []  # ascending
        self._images: List[Payload] = []
        self._image_used: List[bool] = []
        self._pending: Optional[Tuple[float, Payload, float]] = None  # (stamp, cloud, received)
        self._last_cloud_stamp: Optional[float] = None
        self._last_image_stamp: Optional[float] = None
        self.counters = SyncCounters()

    @property
    def settings(self) -> SyncSettings:
        """Return the settings in use."""
        return self._settings

    @settings.setter
    def settings(self, settings: SyncSettings) -> None:
        self._settings = settings
        self._trim_buffer()

    @property
    def buffered_images(self) -> int:
        """Return the number of images in the buffer."""
        return len(self._images)

    @property
    def has_pending_cloud(self) -> bool:
        """Return True while a cloud waits for its image."""
        return self._pending is not None

    def add_image(self, stamp_s: float, image: Payload, now_s: float) -> List[SyncedFrame]:
        """Buffer an image; return the pending frame if this image completes it."""
        released: List[SyncedFrame] = []
        self.counters.images += 1
        if (self._last_image_stamp is not None
                and stamp_s < self._last_image_stamp - self._settings.time_jump_threshold_s):
            if self._pending is not None and self._image_stamps:
                target_s = self._pending[0] + self._target_offset()
                if abs(self._image_stamps[-1] - target_s) <= abs(stamp_s - target_s):
                    released += self.flush()  # the waiting cloud belongs to the old images
            self._time_jump(stamp_s)
        self._last_image_stamp = stamp_s
        index = bisect.bisect_right(self._image_stamps, stamp_s)
        self._image_stamps.insert(index, stamp_s)
        self._images.insert(index, image)
        self._image_used.insert(index, False)
        if (self._pending is not None
                and self._pairing_is_final(self._pending[0] + self._target_offset())):
            released.append(self._release_pending(waited_out=False))
        self._trim_buffer()
        return released

    def add_cloud(self, stamp_s: float, cloud: Payload, now_s: float) -> List[SyncedFrame]:
        """Add a cloud; return the frames released (this one when it needs no wait)."""
        released: List[SyncedFrame] = []
        self.counters.clouds += 1
        if (self._last_cloud_stamp is not None
                and stamp_s < self._last_cloud_stamp - self._settings.time_jump_threshold_s):
            released += self.flush()  # the waiting cloud belongs to the old images
            self._time_jump(stamp_s + self._target_offset())
        self._last_cloud_stamp = stamp_s
        if self._pending is not None:  # a newer cloud ends the wait of the older one
            released.append(self._release_pending(waited_out=True))
        self._pending = (stamp_s, cloud, now_s)
        if (self._settings.max_image_wait_s <= 0.0
                or self._pairing_is_final(stamp_s + self._target_offset())):
            released.append(self._release_pending(waited_out=False))
        return released

    def poll(self, now_s: float) -> List[SyncedFrame]:
        """Release the pending cloud if its wait has expired at receive time ``now_s``."""
        if self._pending is None or now_s - self._pending[2] < self._settings.max_image_wait_s:
            return []
        return [self._release_pending(waited_out=True)]

    def flush(self) -> List[SyncedFrame]:
        """Release the pending cloud with what is buffered now (end of a bag)."""
        return [] if self._pending is None else [self._release_pending(waited_out=False)]

    def reset(self) -> None:
        """Forget buffered images, the pending cloud and the last stamps (counters stay)."""
        self.counters.images_unused += self._image_used.count(False)
        self._image_stamps, self._images, self._image_used = [], [], []
        self._pending = None
        self._last_cloud_stamp = None
        self._last_image_stamp = None

    def _target_offset(self) -> float:
        return self._settings.image_time_offset_s

    def _pairing_is_final(self, target_s: float) -> bool:
        """Return True when no image still to come can pair better with ``target_s``.

        Images arrive in stamp order (up to reordering below the jump threshold), so once one
        is stamped at or after the target the later ones are further away; it must lie, or the
        image before it must lie, within ``max_image_age_s``, so that a lone outlier far ahead
        does not end the wait.
        """
        index = bisect.bisect_left(self._image_stamps, target_s)
        if index == len(self._image_stamps):
            return False
        age_s = self._settings.max_image_age_s
        return (self._image_stamps[index] - target_s <= age_s
                or (index > 0 and target_s - self._image_stamps[index - 1] <= age_s))

    def _time_jump(self, new_time_s: float) -> None:
        """Forget the old timeline: images ahead of ``new_time_s`` and both last stamps."""
        margin_s = max(self._settings.max_image_age_s, self._settings.time_jump_threshold_s)
        keep = bisect.bisect_right(self._image_stamps, new_time_s + margin_s)
        self.counters.images_unused += self._image_used[keep:].count(False)
        del self._image_stamps[keep:], self._images[keep:], self._image_used[keep:]
        self._last_cloud_stamp = None
        self._last_image_stamp = None
        self.counters.time_jumps += 1

    def _trim_buffer(self) -> None:
        while len(self._images) > self._settings.image_buffer_size:
            if not self._image_used[0]:
                self.counters.images_unused += 1
            del self._image_stamps[0], self._images[0], self._image_used[0]

    def _release_pending(self, waited_out: bool) -> SyncedFrame:
        stamp_s, cloud, received_s = self._pending
        self._pending = None
        if waited_out:
            self.counters.waited_out += 1
        target_s = stamp_s + self._target_offset()
        nearest = None
        if self._image_stamps:
            distances = [abs(image_s - target_s) for image_s in self._image_stamps]
            # Ties go to the later image (the one taken during or after the sweep).
            nearest = min(range(len(distances)), key=lambda i: (distances[i], -i))
        if nearest is not None and abs(
                self._image_stamps[nearest] - target_s) <= self._settings.max_image_age_s:
            self.counters.fused += 1
            self._image_used[nearest] = True
            image, image_stamp_s = self._images[nearest], self._image_stamps[nearest]
        else:
            self.counters.lidar_only += 1
            image, image_stamp_s = None, None
        return SyncedFrame(
            cloud=cloud, cloud_stamp_s=stamp_s, image=image, image_stamp_s=image_stamp_s,
            nearest_image_offset_s=(
                None if nearest is None else self._image_stamps[nearest] - stamp_s),
            received_s=received_s)


class LatestWinsSlot(Generic[Payload]):
    """A thread-safe hand-over of depth 1: a new item replaces the one not yet taken.

    ``put`` never blocks (the ROS callbacks call it); ``get`` blocks the worker until an item
    arrives, the timeout passes or the slot is closed. Items replaced before being taken are
    counted in ``dropped``.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Optional[Payload] = None
        self._has_item = False
        self._closed = False
        self.dropped = 0

    def put(self, item: Payload) -> Optional[Payload]:
        """Offer an item; return the item it replaced (dropped), or None."""
        with self._condition:
            replaced = self._item if self._has_item else None
            if self._has_item:
                self.dropped += 1
            self._item, self._has_item = item, True
            self._condition.notify()
            return replaced

    def get(self, timeout_s: Optional[float] = None) -> Optional[Payload]:
        """Take the item; wait up to ``timeout_s`` (None: forever); None when closed/timed out."""
        with self._condition:
            self._condition.wait_for(lambda: self._has_item or self._closed, timeout=timeout_s)
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        """Wake every waiting ``get``; later ``get`` calls return what is left, then None."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        """Return True once ``close`` was called."""
        return self._closed


def stamp_to_seconds(sec: int, nanosec: int) -> float:
    """Return a ROS time (sec, nanosec) as float seconds."""
    return sec + nanosec * 1e-9
