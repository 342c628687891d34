"""LiDAR-triggered pairing and the latest-wins slot, without ROS."""

import threading

from bev_perception.sync import LatestWinsSlot, LidarTriggeredSync, SyncSettings
import pytest


def make_sync(**overrides):
    settings = {'max_image_age_s': 0.03, 'image_time_offset_s': 0.05, 'max_image_wait_s': 0.0,
                'image_buffer_size': 4, 'time_jump_threshold_s': 0.5}
    settings.update(overrides)
    return LidarTriggeredSync(SyncSettings(**settings))


def test_cloud_pairs_with_nearest_image_to_the_expected_offset():
    sync = make_sync()
    for stamp in (9.95, 10.04, 10.07):
        assert sync.add_image(stamp, f'image@{stamp}', now_s=0.0) == []
    (frame,) = sync.add_cloud(10.0, 'cloud', now_s=0.0)
    # Target 10.05: 10.04 is 0.01 away, 10.07 is 0.02 away, 9.95 is 0.10 away.
    assert frame.image == 'image@10.04' and frame.image_stamp_s == 10.04
    assert frame.cloud == 'cloud' and frame.cloud_stamp_s == 10.0 and not frame.lidar_only
    assert frame.nearest_image_offset_s == pytest.approx(0.04)
    assert sync.counters.fused == 1 and sync.counters.lidar_only == 0


def test_ties_go_to_the_later_image():
    sync = make_sync(image_time_offset_s=0.0, max_image_age_s=0.1)
    sync.add_image(9.95, 'before', 0.0)
    sync.add_image(10.05, 'after', 0.0)
    (frame,) = sync.add_cloud(10.0, 'cloud', 0.0)
    assert frame.image == 'after'


def test_no_image_close_enough_gives_lidar_only_with_the_offset_reported():
    sync = make_sync()
    sync.add_image(10.5, 'late image', 0.0)
    (frame,) = sync.add_cloud(10.0, 'cloud', 0.0)
    assert frame.lidar_only and frame.image is None and frame.image_stamp_s is None
    assert frame.nearest_image_offset_s == pytest.approx(0.5)
    (frame,) = make_sync().add_cloud(10.0, 'cloud', 0.0)
    assert frame.lidar_only and frame.nearest_image_offset_s is None


def test_age_limit_is_inclusive_and_symmetric():
    sync = make_sync(image_time_offset_s=0.0, max_image_age_s=0.25)
    sync.add_image(9.75, 'old', 0.0)
    assert sync.add_cloud(10.0, 'a', 0.0)[0].image == 'old'
    sync = make_sync(image_time_offset_s=0.0, max_image_age_s=0.25)
    sync.add_image(10.2500001, 'new', 0.0)
    assert sync.add_cloud(10.0, 'b', 0.0)[0].lidar_only


def test_cloud_waits_for_its_image_and_is_released_by_it():
    sync = make_sync(max_image_wait_s=0.1)
    sync.add_image(9.95, 'previous frame image', now_s=0.0)
    assert sync.add_cloud(10.0, 'cloud', now_s=1.0) == []
    assert sync.has_pending_cloud
    assert sync.add_image(10.02, 'too early', now_s=1.01) == []  # before the target 10.05
    (frame,) = sync.add_image(10.06, 'its image', now_s=1.05)
    assert frame.image == 'its image' and frame.received_s == 1.0
    assert not sync.has_pending_cloud and sync.counters.waited_out == 0


def test_wait_expires_on_poll_with_the_best_buffered_image():
    sync = make_sync(max_image_wait_s=0.1, max_image_age_s=0.2)
    sync.add_image(9.95, 'previous frame image', now_s=0.0)
    assert sync.add_cloud(10.0, 'cloud', now_s=1.0) == []
    assert sync.poll(now_s=1.09) == []
    (frame,) = sync.poll(now_s=1.1)
    assert frame.image == 'previous frame image'
    assert sync.counters.waited_out == 1 and sync.poll(now_s=5.0) == []


def test_next_cloud_releases_a_waiting_cloud_in_order():
    sync = make_sync(max_image_wait_s=10.0, max_image_age_s=0.2)
    assert sync.add_cloud(10.0, 'first', 0.0) == []
    released = sync.add_cloud(10.1, 'second', 0.1)
    assert [frame.cloud for frame in released] == ['first']
    assert released[0].lidar_only
    assert [frame.cloud for frame in sync.flush()] == ['second']


def test_image_already_past_the_target_releases_the_cloud_at_once():
    sync = make_sync(max_image_wait_s=1.0, max_image_age_s=0.1)
    sync.add_image(10.06, 'its image', 0.0)
    (frame,) = sync.add_cloud(10.0, 'cloud', 0.0)
    assert frame.image == 'its image'


def test_time_jump_backwards_resets_the_buffer():
    sync = make_sync(max_image_age_s=0.2)
    sync.add_image(100.05, 'end of bag', 0.0)
    assert sync.add_cloud(100.0, 'a', 0.0)[0].image == 'end of bag'
    sync.add_image(0.05, 'start of bag', 0.0)  # image stream jumps back: reset
    assert sync.counters.time_jumps == 1 and sync.buffered_images == 1
    (frame,) = sync.add_cloud(0.0, 'b', 0.0)
    assert frame.image == 'start of bag' and sync.counters.time_jumps == 1
    # The cloud stream jumping back on its own also resets (and drops the stale images).
    sync.add_image(0.15, 'x', 0.0)
    (frame,) = sync.add_cloud(-5.0, 'c', 0.0)
    assert frame.lidar_only and sync.counters.time_jumps == 2


def test_an_image_stamped_far_ahead_does_not_take_the_next_clouds_images():
    sync = make_sync(max_image_wait_s=0.1, max_image_age_s=0.1)
    sync.add_image(10.05, 'good', 0.0)
    assert sync.add_cloud(10.0, 'a', 0.0)[0].image == 'good'
    assert sync.add_image(1e7, 'outlier', 0.1) == []
    # The outlier is past the next cloud's target, but far from it: the cloud waits ...
    assert sync.add_cloud(10.2, 'b', 0.2) == [] and sync.has_pending_cloud
    # ... for its image, which steps back (a time jump) and completes it.
    (frame,) = sync.add_image(10.25, 'its image', 0.21)
    assert (frame.cloud, frame.image) == ('b', 'its image')
    assert sync.counters.time_jumps == 1 and sync.buffered_images == 2  # the outlier left


def test_a_cloud_stamped_far_ahead_leaves_the_images_of_the_clouds_after_it():
    sync = make_sync(max_image_wait_s=0.1, max_image_age_s=0.1)
    assert sync.add_cloud(1e7, 'outlier', 0.0) == []
    (frame,) = sync.poll(0.2)
    assert frame.cloud == 'outlier' and frame.lidar_only
    sync.add_image(10.05, 'good', 0.25)  # arrives before its cloud
    (frame,) = sync.add_cloud(10.0, 'a', 0.3)  # steps back: a jump that keeps 'good'
    assert (frame.cloud, frame.image) == ('a', 'good') and sync.counters.time_jumps == 1


def test_a_cloud_waiting_when_an_old_image_arrives_is_released_with_its_own_images():
    sync = make_sync(max_image_wait_s=1.0, max_image_age_s=0.1)
    sync.add_image(100.02, 'previous', 0.0)
    assert sync.add_cloud(100.0, 'waiting', 0.0) == []
    # An image from long ago: the waiting cloud belongs with the images before it.
    (frame,) = sync.add_image(5.0, 'old', 0.1)
    assert (frame.cloud, frame.image) == ('waiting', 'previous')
    assert sync.counters.time_jumps == 1 and sync.buffered_images == 1


def test_small_backwards_steps_are_reordering_not_jumps():
    sync = make_sync(image_time_offset_s=0.0, max_image_age_s=0.05)
    sync.add_image(10.2, 'b', 0.0)
    sync.add_image(10.1, 'a', 0.0)  # out of order by 0.1 s < threshold
    assert sync.counters.time_jumps == 0 and sync.buffered_images == 2
    assert sync.add_cloud(10.1, 'cloud', 0.0)[0].image == 'a'


def test_buffer_is_bounded_and_unused_images_are_counted():
    sync = make_sync(image_buffer_size=3, image_time_offset_s=0.0, max_image_age_s=0.01,
                     time_jump_threshold_s=10.0)
    for index in range(5):
        sync.add_image(float(index), index, 0.0)
    assert sync.buffered_images == 3 and sync.counters.images_unused == 2
    assert sync.add_cloud(3.0, 'cloud', 0.0)[0].image == 3
    sync.add_cloud(1.0, 'gone', 0.0)  # image 1 left the buffer: LiDAR-only
    assert sync.counters.as_dict() == {
        'clouds': 2, 'images': 5, 'fused': 1, 'lidar_only': 1, 'time_jumps': 0,
        'waited_out': 0, 'images_unused': 2}


def test_settings_are_validated():
    with pytest.raises(ValueError, match='max_image_age_s'):
        SyncSettings(max_image_age_s=-1.0)
    with pytest.raises(ValueError, match='image_buffer_size'):
        SyncSettings(image_buffer_size=0)


def test_latest_wins_slot_keeps_only_the_newest_item():
    slot = LatestWinsSlot()
    assert slot.put('a') is None
    assert slot.put('b') == 'a'
    assert slot.put('c') == 'b'
    assert slot.dropped == 2
    assert slot.get(timeout_s=0.0) == 'c'
    assert slot.get(timeout_s=0.01) is None


def test_latest_wins_slot_wakes_a_waiting_worker_and_closes():
    slot = LatestWinsSlot()
    received = []
    worker = threading.Thread(target=lambda: received.append(slot.get(timeout_s=10.0)))
    worker.start()
    slot.put('frame')
    worker.join(timeout=10.0)
    assert received == ['frame']
    waiting = threading.Thread(target=lambda: received.append(slot.get(timeout_s=30.0)))
    waiting.start()
    slot.close()
    waiting.join(timeout=10.0)
    assert not waiting.is_alive() and received == ['frame', None] and slot.closed
