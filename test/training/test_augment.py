"""Tests of training.augment: the photometric look, the global turn and scale, the zoom."""

import dataclasses
import math

from bev_perception.model.camera_geometry import camera_geometry, MODEL_TO_OPTICAL, project
import numpy as np
import pytest
import torch
from training.augment import (augment_sample, AugmentConfig, jitter_photometric,
                              recolour_categories, rotate_scale, Sample, zoom_camera)


def _calibrated_sample(rng: np.random.Generator) -> Sample:
    """Return a sample with points ahead of a camera 1.2 m behind and above the origin."""
    points = np.zeros((400, 4), np.float32)
    points[:, 0] = rng.uniform(5.0, 40.0, 400)
    points[:, 1] = rng.uniform(-10.0, 10.0, 400)
    points[:, 2] = rng.uniform(-1.8, 1.0, 400)
    boxes = np.array([[12.0, 3.0, -1.0, 4.2, 1.8, 1.5, 0.4]], np.float32)
    k = np.array([[300.0, 0.0, 160.0], [0.0, 300.0, 100.0], [0.0, 0.0, 1.0]])
    geometry = camera_geometry(MODEL_TO_OPTICAL, MODEL_TO_OPTICAL @ np.array([1.2, 0.1, -0.3]),
                               k, (-0.1, 0.01, 0.0, 0.0, 0.0), (320, 200))
    return Sample(points, boxes, np.array([0]), np.zeros((200, 320, 3), np.uint8),
                  np.zeros((200, 320), np.uint8), True, geometry)


def _uv(points: np.ndarray, geometry: np.ndarray):
    uv, _, inside = project(torch.from_numpy(points[:, :3]).double(),
                            torch.from_numpy(geometry[None]).double())
    return uv[0].numpy(), inside[0].numpy()


def test_turn_and_scale_keep_every_point_where_the_camera_sees_it():
    sample = _calibrated_sample(np.random.default_rng(0))
    before, seen = _uv(sample.points, sample.camera_geometry)
    assert seen.mean() > 0.5  # the check below is about points the camera sees
    turned = rotate_scale(sample, 0.35, 1.04)
    after, seen_after = _uv(turned.points, turned.camera_geometry)
    np.testing.assert_array_equal(seen_after, seen)
    np.testing.assert_allclose(after[seen], before[seen], atol=2e-5)
    # The world moved: points and boxes turned about z and scaled, sizes scaled, yaw turned.
    radius = np.hypot(sample.points[:, 0], sample.points[:, 1]) * 1.04
    np.testing.assert_allclose(np.hypot(turned.points[:, 0], turned.points[:, 1]), radius,
                               rtol=1e-5)
    assert turned.boxes[0, 6] == pytest.approx(0.75)
    np.testing.assert_allclose(turned.boxes[0, 3:6], sample.boxes[0, 3:6] * 1.04, rtol=1e-6)
    np.testing.assert_allclose(math.atan2(turned.boxes[0, 1], turned.boxes[0, 0]),
                               math.atan2(3.0, 12.0) + 0.35, atol=1e-6)
    np.testing.assert_array_equal(turned.image, sample.image)  # the image is not touched


def test_zoom_keeps_every_labelled_point_where_the_zoomed_camera_sees_it():
    sample = _calibrated_sample(np.random.default_rng(4))
    height, width = sample.semantic.shape
    uv, seen = _uv(sample.points, sample.camera_geometry)
    semantic = np.zeros_like(sample.semantic)
    marked = []  # (label id, point index): a 3 x 3 blob of its own id at each of 60 points
    for index in np.flatnonzero(seen & (uv[:, 0] > 0.3) & (uv[:, 1] > 0.35))[:60]:
        col, row = int(uv[index, 0] * width), int(uv[index, 1] * height)
        if (semantic[row - 1:row + 2, col - 1:col + 2] == 0).all():
            semantic[row - 1:row + 2, col - 1:col + 2] = len(marked) + 1
            marked.append(index)
    assert len(marked) > 20
    zoom, left, top = 1.4, 0.15, 0.25
    zoomed = zoom_camera(dataclasses.replace(sample, semantic=semantic), zoom, left, top)
    assert zoomed.image.shape == sample.image.shape and zoomed.semantic.shape == (height, width)
    assert set(np.unique(zoomed.semantic)) <= set(range(len(marked) + 1))  # ids stay ids
    after, seen_after = _uv(sample.points, zoomed.camera_geometry)
    np.testing.assert_allclose(after, (uv - (left, top)) * zoom, atol=1e-5)
    for label, index in enumerate(marked, start=1):
        rows, cols = np.nonzero(zoomed.semantic == label)
        if not seen_after[index]:
            continue  # cropped away
        assert len(rows) >= 9  # the blob grew by the zoom
        centre = ((cols.mean() + 0.5) / width, (rows.mean() + 0.5) / height)
        np.testing.assert_allclose(centre, after[index], atol=1.5 / height)
    np.testing.assert_array_equal(zoomed.points, sample.points)  # the world stays where it is


def test_an_image_without_calibration_is_never_turned():
    sample = dataclasses.replace(_calibrated_sample(np.random.default_rng(1)),
                                 camera_geometry=None)
    with pytest.raises(ValueError, match='camera geometry'):
        rotate_scale(sample, 0.2, 1.0)
    config = dataclasses.replace(AugmentConfig.none(), rotation_rad=0.5, scale_range=(0.9, 1.1))
    out = augment_sample(sample, config, np.random.default_rng(3))
    np.testing.assert_array_equal(out.points, sample.points)
    calibrated = augment_sample(_calibrated_sample(np.random.default_rng(1)), config,
                                np.random.default_rng(3))
    assert not np.allclose(calibrated.points, sample.points)  # the same draw turns this one


def test_photometric_jitter_changes_the_look_within_its_ranges():
    rng = np.random.default_rng(4)
    image = rng.integers(20, 235, size=(24, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(jitter_photometric(image, AugmentConfig.none(), rng), image)
    grey = jitter_photometric(image, dataclasses.replace(AugmentConfig.none(), grey_prob=1.0),
                              rng).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1
    assert np.abs(grey[..., 1] - grey[..., 2]).max() <= 1
    # A hue turn keeps the luma and moves the colours.
    turned = jitter_photometric(image, dataclasses.replace(AugmentConfig.none(), hue_rad=0.6),
                                np.random.default_rng(5)).astype(np.float64)
    luma = np.array([0.299, 0.587, 0.114])
    clipped = (turned == 0) | (turned == 255)
    keep = ~clipped.any(axis=2)
    np.testing.assert_allclose((turned @ luma)[keep], (image @ luma)[keep], atol=1.0)
    assert np.abs(turned - image).mean() > 3.0
    blurred = jitter_photometric(image, dataclasses.replace(AugmentConfig.none(), blur_prob=1.0),
                                 rng)
    assert np.diff(blurred.astype(int), axis=1).std() < np.diff(image.astype(int), axis=1).std()
    with pytest.raises(ValueError, match='scale_range'):
        AugmentConfig(scale_range=(1.1, 0.9))


def test_mixed_returns_trail_behind_their_points_and_leave_the_rest_alone():
    rng = np.random.default_rng(3)
    sample = _calibrated_sample(rng)
    sample.points[:, 3] = rng.uniform(0.1, 1.0, len(sample.points))
    config = dataclasses.replace(AugmentConfig.none(), mixed_returns_max=0.5,
                                 mixed_returns_depth_m=0.6)
    plain = augment_sample(sample, AugmentConfig.none(), np.random.default_rng(7))
    mixed = augment_sample(sample, config, np.random.default_rng(7))
    n = len(sample.points)
    np.testing.assert_array_equal(mixed.points[:n], plain.points)  # the originals, in order
    extra = mixed.points[n:]
    assert 0 < len(extra) <= n // 2
    # Each added return lies on the ray of an original point, 5-60 cm further out, weaker.
    directions = sample.points[:, :3] / np.linalg.norm(sample.points[:, :3], axis=1)[:, None]
    for point in extra:
        along = directions @ point[:3]  # (N,) distance along each original ray
        off_ray = np.linalg.norm(point[:3] - along[:, None] * directions, axis=1)
        source = int(np.argmin(off_ray))
        assert off_ray[source] < 1e-3
        depth = along[source] - np.linalg.norm(sample.points[source, :3])
        assert 0.05 - 1e-4 <= depth <= 0.6 + 1e-4
        assert 0.2 * sample.points[source, 3] - 1e-6 <= point[3] <= sample.points[source, 3]
    np.testing.assert_array_equal(mixed.boxes, sample.boxes)
    np.testing.assert_array_equal(mixed.image, sample.image)
    again = augment_sample(sample, config, np.random.default_rng(7))
    np.testing.assert_array_equal(again.points, mixed.points)  # a function of the seed
    with pytest.raises(ValueError, match='mixed_returns_depth_m'):
        AugmentConfig(mixed_returns_depth_m=0.05)
    with pytest.raises(ValueError, match='mixed_returns_max'):
        AugmentConfig(mixed_returns_max=1.5)


def test_recolouring_gives_each_category_its_own_look_and_keeps_the_labels():
    rng = np.random.default_rng(8)
    image = np.full((20, 30, 3), (90, 120, 60), np.uint8)  # one colour everywhere
    semantic = np.zeros((20, 30), np.uint8)
    semantic[:, 10:20], semantic[:, 20:] = 3, 255  # three regions: ids 0, 3 and ignore
    out = recolour_categories(image, semantic, 0.4, rng).astype(int)
    looks = [out[:, :10], out[:, 10:20], out[:, 20:]]
    for look in looks:  # one look per category, uniform inside it
        assert (look == look[0, 0]).all()
    colours = {tuple(look[0, 0]) for look in looks}
    assert len(colours) == 3  # the categories no longer share a colour
    np.testing.assert_array_equal(recolour_categories(image, semantic, 0.0, rng), image)

    sample = dataclasses.replace(_calibrated_sample(rng), image=image, semantic=semantic)
    config = dataclasses.replace(AugmentConfig.none(), recolour_prob=1.0)
    recoloured = augment_sample(sample, config, np.random.default_rng(2))
    assert not np.array_equal(recoloured.image, image)
    np.testing.assert_array_equal(recoloured.semantic, semantic)
    np.testing.assert_array_equal(recoloured.points, sample.points)
    plain = augment_sample(sample, AugmentConfig.none(), np.random.default_rng(2))
    np.testing.assert_array_equal(plain.image, image)  # recolour_prob 0: untouched
    with pytest.raises(ValueError, match='recolour_prob'):
        AugmentConfig(recolour_prob=2.0)
