"""Tests of training.kitti: files, frames, box conversion and scope, on the real-dev KITTI frames.

The real frames are read from ``../shared/real-dev/kitti`` beside the checkout (or
``$BEV_REAL_DEV_DIR/kitti``); the tests that need them are skipped, saying so, without them.
"""

import math
import os

from bev_perception.geometry import wrap_angle
from bev_perception.model.camera_geometry import project
from bev_perception.model.config import ModelConfig
import numpy as np
import pytest
import torch
from training import kitti
from training.a2d2 import CorruptFrameError, DEFAULT_CLASS_MAP

HERE = os.path.dirname(os.path.abspath(__file__))
REAL_DEV = os.environ.get('BEV_REAL_DEV_DIR',
                          os.path.join(HERE, '..', '..', '..', 'shared', 'real-dev'))
KITTI_ROOT = os.path.join(REAL_DEV, 'kitti')
FRAME_IDS = ('000000', '000001', '000002', '000114', '000134')
CLASSES = ModelConfig().detection_classes

#: Objects nearer than this must hold LiDAR points (the HDL-64E's useful range here).
POINTS_RANGE_M = 40.0
MIN_POINTS = 5
#: KITTI boxes are drawn tight: at 30-40 m the returns of an object's near face can lie
#: 0.1-0.3 m outside its box (frame 000134), so points are counted in the box grown by this.
LABEL_TOLERANCE_M = 0.3


@pytest.fixture(scope='module')
def frames():
    """Load the real-dev KITTI frames into the model frame (KITTI_EXTRINSIC), no images."""
    if not os.path.isdir(KITTI_ROOT):
        pytest.skip(f'real-dev KITTI frames not found at {KITTI_ROOT} (../shared/real-dev '
                    'beside the checkout, or set BEV_REAL_DEV_DIR)')
    dataset = kitti.KittiDataset(KITTI_ROOT, classes=CLASSES, load_image=False)
    return [dataset[index] for index in range(len(dataset))]


def points_in_box(points: np.ndarray, box: np.ndarray, margin_m: float = 0.0) -> int:
    """Return how many (N, >=3) points lie in a (7,) box grown by ``margin_m`` on every side."""
    offset = points[:, :3].astype(np.float64) - box[:3]
    cos_yaw, sin_yaw = math.cos(box[6]), math.sin(box[6])
    along = offset[:, 0] * cos_yaw + offset[:, 1] * sin_yaw
    across = -offset[:, 0] * sin_yaw + offset[:, 1] * cos_yaw
    return int(np.count_nonzero((np.abs(along) <= 0.5 * box[3] + margin_m)
                                & (np.abs(across) <= 0.5 * box[4] + margin_m)
                                & (np.abs(offset[:, 2]) <= 0.5 * box[5] + margin_m)))


# ----------------------------------------------------------------------------- real frames


def test_reads_every_frame_from_either_root(frames):
    assert [frame.frame_id for frame in frames] == list(FRAME_IDS)
    direct = kitti.KittiDataset(os.path.join(KITTI_ROOT, 'training'), classes=CLASSES,
                                load_image=False)
    assert direct.frame_ids == list(FRAME_IDS) and direct.skipped == []
    for frame in frames:
        assert frame.points.dtype == np.float32 and frame.points.shape[1] == 4
        assert 0.0 <= frame.points[:, 3].min() and frame.points[:, 3].max() <= 1.0
        assert frame.image is None and frame.image_size[0] > 1000
    assert len(frames[-1].points) < 0.3 * len(frames[0].points)  # 000134: the reduced cloud


def test_labels_map_to_the_model_classes(frames):
    counts = {frame.frame_id: [CLASSES[label] for label in frame.labels] for frame in frames}
    assert counts['000000'] == ['pedestrian']
    assert sorted(counts['000001']) == ['car', 'cyclist', 'truck']
    assert counts['000002'] == ['car']  # and the Misc object is an ignore region
    assert len(frames[2].ignore_boxes) == 1 and len(frames[2].dont_care) == 0
    assert sorted(counts['000114']) == ['car'] * 10 + ['cyclist', 'pedestrian']  # 2 vans
    assert sorted(counts['000134']) == ['car'] * 3 + ['cyclist'] * 5 + ['pedestrian'] * 7
    assert [len(frame.dont_care) for frame in frames] == [0, 4, 0, 2, 2]


def test_class_table_groups_like_the_a2d2_table(tmp_path):
    assert set(kitti.KITTI_CLASS_MAP) == set(kitti.KITTI_TYPES)
    assert {v for v in kitti.KITTI_CLASS_MAP.values() if v} == set(CLASSES)
    for kitti_type, a2d2_type in (('Car', 'Car'), ('Van', 'VanSUV'), ('Truck', 'Truck'),
                                  ('Pedestrian', 'Pedestrian'), ('Cyclist', 'Cyclist')):
        assert kitti.KITTI_CLASS_MAP[kitti_type] == DEFAULT_CLASS_MAP[a2d2_type], kitti_type
    assert kitti.KITTI_CLASS_MAP['Person_sitting'] == 'pedestrian'
    for ignored in ('Tram', 'Misc', 'DontCare'):
        assert kitti.KITTI_CLASS_MAP[ignored] is None
    write_frame(tmp_path)
    with pytest.raises(ValueError, match='not in classes'):
        kitti.KittiDataset(tmp_path, classes=('car',))


def test_labelled_objects_hold_their_lidar_points(frames):
    checked = 0
    for frame in frames:
        for item, box in zip(frame.objects, frame.boxes):
            if math.hypot(box[0], box[1]) < POINTS_RANGE_M:
                count = points_in_box(frame.points, box, LABEL_TOLERANCE_M)
                assert count >= MIN_POINTS, (frame.frame_id, item)
                checked += 1
        for box in frame.ignore_boxes:  # the Misc object of 000002, 9 m ahead
            assert points_in_box(frame.points, box) >= MIN_POINTS
    assert checked >= 25


def test_yaw_convention_fits_the_points(frames):
    """-rotation_y - pi/2 puts more points of elongated objects in their boxes than others."""
    totals = np.zeros(4)
    for frame in frames:
        for item, box in zip(frame.objects, frame.boxes):
            assert box[6] == pytest.approx(
                float(wrap_angle(-item.rotation_y - math.pi / 2)), abs=0.01)
            if item.length < 1.5 * item.width:
                continue  # pedestrians: their boxes fit any yaw about as well
            candidates = []
            for yaw in (box[6], box[6] + math.pi / 2, -box[6], item.rotation_y):
                candidate = box.copy()
                candidate[6] = yaw
                candidates.append(points_in_box(frame.points, candidate))
            totals += candidates
    # Measured: 3460 points against 1724 (+90 deg), 3112 (mirrored), 1953 (rotation_y as is).
    assert totals[0] > 1.8 * totals[1]
    assert totals[0] > 1.08 * totals[2]
    assert totals[0] > 1.6 * totals[3]


def test_ground_lies_where_the_extrinsic_puts_it(frames):
    for frame in frames:
        ahead = frame.points[(frame.points[:, 0] > 3.0) & (frame.points[:, 0] < 8.0)
                             & (np.abs(frame.points[:, 1]) < 2.0)]
        assert len(ahead) > 500, frame.frame_id
        assert np.median(ahead[:, 2]) == pytest.approx(kitti.MODEL_GROUND_Z_M, abs=0.1)
    assert kitti.KITTI_EXTRINSIC.translation_m == (0.0, 0.0, -0.14)


def test_round_trip_and_projection(frames):
    rng = np.random.default_rng(0)
    velodyne = rng.uniform(-50.0, 50.0, size=(200, 3))
    for frame in frames:
        calibration = frame.calibration
        rect = calibration.velodyne_to_rect(velodyne)
        np.testing.assert_allclose(calibration.rect_to_velodyne(rect), velodyne, atol=1e-9)
        np.testing.assert_allclose(calibration.velo_to_rect @ calibration.rect_to_velo,
                                   np.eye(4), atol=1e-12)
        # Through the extrinsic as well: model -> Velodyne -> model.
        model = frame.extrinsic.points_to_model(velodyne)
        np.testing.assert_allclose(frame.extrinsic.points_from_model(model), velodyne,
                                   atol=1e-9)
        # Every object's centre projects into its 2D box.
        uv, depth = frame.project(frame.boxes[:, :3])
        for item, (u, v), z in zip(frame.objects, uv, depth):
            left, top, right, bottom = item.bbox
            assert z > 0 and left <= u <= right and top <= v <= bottom, item
    # The reduced cloud of 000134 is the camera's view: its points project into the image.
    reduced = frames[-1]
    uv, depth = reduced.project(reduced.points[:, :3])
    inside = (depth > 0) & (uv[:, 0] >= -2) & (uv[:, 0] < reduced.image_size[0] + 2)
    assert inside.mean() > 0.99


def test_camera_geometry_projects_like_p2(frames):
    rng = np.random.default_rng(1)
    points = np.stack([rng.uniform(3.0, 60.0, 300), rng.uniform(-20.0, 20.0, 300),
                       rng.uniform(-2.0, 1.0, 300)], axis=1)
    for frame in frames:
        uv, depth, inside = project(torch.from_numpy(points), torch.from_numpy(
            frame.camera_geometry)[None].to(torch.float64))
        pixels, expected_depth = frame.project(points)
        width, height = frame.image_size
        np.testing.assert_allclose(uv[0].numpy() * (width, height), pixels, atol=1e-3)
        np.testing.assert_allclose(depth[0].numpy(), expected_depth, atol=1e-4)
        seen = ((pixels[:, 0] >= 0) & (pixels[:, 0] <= width) & (pixels[:, 1] >= 0)
                & (pixels[:, 1] <= height))
        assert inside[0].numpy().tolist() == seen.tolist()
        assert 0 < seen.sum() < len(points)


def test_camera_view_scope(frames):
    frame = frames[3]  # 000114
    assert frame.gt_in_scope().all()
    boxes = np.zeros((4, 7), dtype=np.float32)
    boxes[:, 3:6] = (4.0, 1.8, 1.5)
    boxes[:, :3] = [(20.0, 0.0, -1.0),  # ahead: in view
                    (-5.0, 0.0, -1.0),  # behind the camera
                    (10.0, 30.0, -1.0),  # far left, outside the image
                    (10.0, -30.0, -1.0)]  # far right
    np.testing.assert_array_equal(frame.in_camera_view(boxes), [True, False, False, False])
    # A detection on a DontCare area is out of scope; the labelled cars are in scope.
    dont_care = frame.dont_care[0]
    centre = np.array([0.5 * (dont_care[0] + dont_care[2]), 0.5 * (dont_care[1] + dont_care[3])])
    depth = 60.0
    rect = np.array([(centre[0] - frame.calibration.p2[0, 2]) * depth
                     / frame.calibration.p2[0, 0],
                     (centre[1] - frame.calibration.p2[1, 2]) * depth
                     / frame.calibration.p2[1, 1], depth])
    velodyne = frame.calibration.rect_to_velodyne(rect[None])
    on_dont_care = np.zeros((1, 7), dtype=np.float32)
    on_dont_care[0, :3] = frame.extrinsic.points_to_model(velodyne)[0]
    on_dont_care[0, 3:6] = (4.0, 1.8, 1.5)
    assert frame.in_camera_view(on_dont_care).all()
    assert not frame.detection_in_scope(on_dont_care).any()
    misc = frames[2]  # 000002: a detection on the Misc object is out of scope
    assert not misc.detection_in_scope(misc.ignore_boxes).any()
    assert misc.detection_in_scope(misc.boxes).all()


# ----------------------------------------------------------------------------- transforms


def _raw_clouds():
    folder = os.path.join(KITTI_ROOT, 'training', 'velodyne')
    return {frame_id: kitti.read_velodyne(os.path.join(folder, f'{frame_id}.bin'))
            for frame_id in FRAME_IDS}


def test_laser_rings_run_from_the_top_laser_down(frames):
    for frame_id, points in _raw_clouds().items():
        rings = kitti.laser_rings(points)
        assert rings[0] == 0 and np.all(np.diff(rings) >= 0), frame_id  # file order
        # Four whole sweeps have all 64 rings; 000134 is cropped to the camera's view.
        assert rings[-1] + 1 == (46 if frame_id == '000134' else kitti.KITTI_LASERS), frame_id
        elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
        medians = [np.median(elevation[rings == ring]) for ring in range(rings[-1] + 1)]
        assert np.all(np.diff(medians) < 0), frame_id  # each ring below the one before
        assert medians[0] > 1.0 and medians[-1] < -13.0, frame_id  # HDL-64E: +2 .. -24.8 deg


def test_a_ring_step_keeps_every_kth_laser(frames):
    clouds = _raw_clouds()
    sparse = kitti.KittiDataset(KITTI_ROOT, classes=CLASSES, load_image=False, ring_step=2)
    for frame, thinned in zip(frames, (sparse[i] for i in range(len(sparse)))):
        rings = kitti.laser_rings(clouds[frame.frame_id])
        even = rings % 2 == 0
        assert 0.35 < even.mean() < 0.65, frame.frame_id
        np.testing.assert_array_equal(thinned.points, frame.points[even])
        np.testing.assert_array_equal(thinned.boxes, frame.boxes)  # the labels stay
    with pytest.raises(ValueError, match='ring_step must be at least 1'):
        kitti.KittiDataset(KITTI_ROOT, classes=CLASSES, ring_step=0)


def test_rings_of_a_written_sweep_and_points_out_of_order(tmp_path):
    sweeps = []  # three lasers, each sweeping most of a turn from near the same azimuth
    for start, elevation in ((0.4, 2.0), (0.33, -5.0), (0.45, -12.0)):
        azimuth = np.linspace(start, start + 2 * math.pi - 0.2, 400)
        sweeps.append(np.stack([20 * np.cos(azimuth), 20 * np.sin(azimuth),
                                np.full(400, 20 * math.tan(math.radians(elevation))),
                                np.full(400, 0.5)], 1))
    cloud = np.concatenate(sweeps).astype(np.float32)
    np.testing.assert_array_equal(kitti.laser_rings(cloud), np.repeat([0, 1, 2], 400))
    assert kitti.laser_rings(cloud[:0]).shape == (0,)
    shuffled = cloud[np.random.default_rng(0).permutation(len(cloud))]
    with pytest.raises(ValueError, match='not in the scan order'):
        kitti.laser_rings(shuffled)
    training = write_frame(tmp_path, cloud=shuffled)
    dataset = kitti.KittiDataset(training, classes=CLASSES, ring_step=2)
    with pytest.raises(CorruptFrameError, match='000007.bin: .* not in the scan order'):
        dataset[0]


def test_extrinsic_moves_points_and_boxes_alike():
    extrinsic = kitti.SensorExtrinsic(translation_m=(1.0, -2.0, 0.5), rpy_rad=(0.0, 0.0, 0.4))
    box = np.array([[10.0, 3.0, -1.0, 4.0, 2.0, 1.5, 0.3]])
    # A point 1 m ahead of the box centre along its heading stays so in the model frame.
    tip = box[:, :3] + [math.cos(0.3), math.sin(0.3), 0.0]
    moved_box = extrinsic.boxes_to_model(box)[0]
    moved_tip = extrinsic.points_to_model(tip)[0]
    np.testing.assert_allclose(moved_box[:3], extrinsic.points_to_model(box[:, :3])[0],
                               atol=1e-5)
    assert moved_box[6] == pytest.approx(0.7, abs=1e-6)
    np.testing.assert_allclose(moved_tip - moved_box[:3], [math.cos(0.7), math.sin(0.7), 0.0],
                               atol=1e-5)
    assert kitti.SensorExtrinsic().is_identity


# ----------------------------------------------------------------------------- errors


CALIB = ('P2: 7.07e+02 0 6.04e+02 4.57e+01 0 7.07e+02 1.80e+02 -3.45e-01 0 0 1 4.98e-03\n'
         'R0_rect: 1 0 0 0 1 0 0 0 1\n'
         'Tr_velo_to_cam: 0 -1 0 0 0 0 -1 -0.08 1 0 0 -0.27\n')
LABEL = 'Car 0.00 0 -1.59 589.01 187.21 668.42 253.27 1.36 1.69 3.38 0.35 1.73 17.14 -1.57\n'


def write_frame(root, calib=CALIB, label=LABEL, cloud=None, frame_id='000007'):
    """Write one KITTI frame under root/training; return the training folder."""
    from PIL import Image

    training = root / 'training'
    for folder in ('velodyne', 'calib', 'label_2', 'image_2'):
        (training / folder).mkdir(parents=True, exist_ok=True)
    points = np.array([[17.4, -0.3, -1.0, 0.5]] * 8, dtype=np.float32) if cloud is None \
        else cloud
    (training / 'velodyne' / f'{frame_id}.bin').write_bytes(np.asarray(points).tobytes())
    (training / 'calib' / f'{frame_id}.txt').write_text(calib)
    (training / 'label_2' / f'{frame_id}.txt').write_text(label)
    Image.new('RGB', (1242, 375)).save(training / 'image_2' / f'{frame_id}.png')
    return training


def test_a_written_frame_reads_back(tmp_path):
    write_frame(tmp_path)
    dataset = kitti.KittiDataset(tmp_path, classes=CLASSES, extrinsic=kitti.SensorExtrinsic())
    frame = dataset[0]
    assert frame.image.shape == (375, 1242, 3) and frame.image_size == (1242, 375)
    # Velodyne = (z + 0.27, -x, -y - 0.08) of the rectified camera; the centre is h/2 higher.
    np.testing.assert_allclose(frame.boxes[0, :3], [17.14 + 0.27, -0.35, -(1.73 - 0.68) - 0.08],
                               atol=1e-5)
    np.testing.assert_allclose(frame.boxes[0, 3:6], [3.38, 1.69, 1.36])
    assert frame.boxes[0, 6] == pytest.approx(1.57 - math.pi / 2, abs=1e-6)


@pytest.mark.parametrize('calib, message', [
    (CALIB.replace('P2:', 'P1:'), 'no P2 line'),
    (CALIB.replace(' 4.98e-03', ''), 'P2 has 11 numbers, expected 12'),
    (CALIB.replace('R0_rect: 1', 'R0_rect: one'), 'R0_rect: not a number'),
    (CALIB + 'garbage\n', 'line 4: no "KEY: values"'),
    (CALIB.replace('Tr_velo_to_cam: 0 -1 0 0 0 0 -1', 'Tr_velo_to_cam: 0 0 0 0 0 0 0'),
     'singular'),
])
def test_malformed_calibration_names_file_and_problem(tmp_path, calib, message):
    training = write_frame(tmp_path, calib=calib)
    path = str(training / 'calib' / '000007.txt')
    with pytest.raises(CorruptFrameError, match=message) as raised:
        kitti.read_calibration(path)
    assert str(raised.value).startswith(path + ': ') and raised.value.path == path


@pytest.mark.parametrize('label, message', [
    (LABEL.replace(' -1.57\n', '\n'), 'line 1: 14 fields, expected 15'),
    (LABEL.replace('Car', 'Bus'), "unknown type 'Bus'"),
    (LABEL.replace('1.36 1.69', 'x 1.69'), 'line 1: not a number'),
    (LABEL.replace('1.36 1.69', '0 1.69'), 'non-positive size'),
    ('\n' + LABEL + LABEL.replace('17.14', 'nan'), 'line 3: non-finite'),
])
def test_malformed_label_names_file_and_problem(tmp_path, label, message):
    training = write_frame(tmp_path, label=label)
    path = str(training / 'label_2' / '000007.txt')
    with pytest.raises(CorruptFrameError, match=message) as raised:
        kitti.read_labels(path)
    assert str(raised.value).startswith(path + ': ')
    dataset = kitti.KittiDataset(tmp_path, classes=CLASSES)
    with pytest.raises(CorruptFrameError, match=message):
        dataset[0]
    assert dataset.skipping()[0] is None
    assert dataset.skipped == [(path, f'{raised.value.reason}; frame skipped')]


def test_bad_cloud_and_missing_files(tmp_path):
    training = write_frame(tmp_path, cloud=np.zeros(10, dtype=np.float32))  # 40 bytes
    with pytest.raises(CorruptFrameError, match='40 bytes is not a multiple of 16'):
        kitti.read_velodyne(training / 'velodyne' / '000007.bin')
    for reader, name in ((kitti.read_velodyne, 'velodyne/000008.bin'),
                         (kitti.read_calibration, 'calib/000008.txt'),
                         (kitti.read_labels, 'label_2/000008.txt')):
        with pytest.raises(CorruptFrameError, match='missing file'):
            reader(training / name)
    (training / 'velodyne' / '000008.bin').write_bytes(b'')
    dataset = kitti.KittiDataset(training, classes=CLASSES)
    assert dataset.frame_ids == ['000007']
    assert dataset.skipped == [(str(training / 'calib' / '000008.txt'),
                                'missing file; frame skipped')]
    with pytest.raises(ValueError, match='not a KITTI object root'):
        kitti.KittiDataset(tmp_path / 'training' / 'calib', classes=CLASSES)
    assert kitti.is_kitti_root(tmp_path) and not kitti.is_kitti_root(training / 'calib')
