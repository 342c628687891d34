"""Tests of bev_perception.health: counters and the status they give."""

from bev_perception.conversions import CLOUD_REJECTIONS, IMAGE_REJECTIONS
from bev_perception.health import Counters, ERROR, HealthReport, OK, WARN


def test_every_rejection_reason_has_its_counter():
    names = Counters().names()
    for reason in CLOUD_REJECTIONS:
        assert f'bad_cloud_{reason}' in names
    for reason in IMAGE_REJECTIONS:
        assert f'bad_image_{reason}' in names
    assert len(set(names)) == len(names)


def test_status_says_what_changed_since_the_last_report():
    counters, report = Counters(), HealthReport()
    assert report.update(counters.snapshot(), worker_alive=True) == (
        WARN, 'no point cloud received yet')
    counters.add(clouds_in=3, frames_out=3, fused_frames=2, lidar_only_frames=1)
    level, message = report.update(counters.snapshot(), worker_alive=True)
    assert (level, message) == (WARN, '1 LiDAR-only frames')
    counters.add(clouds_in=2, frames_out=2, fused_frames=2)
    assert report.update(counters.snapshot(), worker_alive=True) == (
        OK, '2 frames (2 fused) since last report')
    counters.add(bad_clouds=2, bad_cloud_row_step=1, bad_cloud_missing_field=1)
    assert report.update(counters.snapshot(), worker_alive=True) == (
        WARN, '2 malformed clouds (missing_field 1, row_step 1)')
    counters.add(inference_errors=1)
    assert report.update(counters.snapshot(), worker_alive=True) == (ERROR, '1 failed frames')
    assert report.update(counters.snapshot(), worker_alive=False) == (
        ERROR, 'inference worker stopped')
