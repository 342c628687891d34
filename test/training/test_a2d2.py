"""The A2D2 reader and dataset, on generated A2D2-format scenes and hand-made files."""

import json
import logging
import math
import os
import shutil

from bev_perception.a2d2_classes import (
    BOX_CLASSES, hex_to_rgb, IGNORE_INDEX, SEMANTIC_CATEGORIES, SEMANTIC_COLOURS)
import numpy as np
from PIL import Image
import pytest
from training import a2d2, synthetic
from training.a2d2_calibration import CameraModel

IMAGE_SIZE = (96, 61)
SEED, SCENES, FRAMES = 11, 2, 3
EXAMPLE = '20180807_145028/lidar/cam_front_center/20180807145028_lidar_frontcenter_000001617.npz'


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """Generate a dataset of 2 scenes x 3 frames with tiny images; return its path."""
    out = str(tmp_path_factory.mktemp('a2d2') / 'root')
    synthetic.generate(out, SCENES, FRAMES, SEED, image_size=IMAGE_SIZE)
    return out


@pytest.fixture(scope='module')
def intended():
    """Return the generator's frames of scene 0 as rendered in memory."""
    scene = synthetic.build_scene(SEED, 0, FRAMES)
    rig = synthetic.SensorRig.build(IMAGE_SIZE, scene.camera)
    return [synthetic.render_frame(scene, k, rig) for k in range(FRAMES)]


def _write_json(path, document):
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write(json.dumps(document, indent=4, sort_keys=True))


def _box(axis, rot_angle, class_name='Car'):
    return {'center': [10.0, 2.0, -1.0], 'size': [4.5, 1.8, 1.5], 'axis': axis,
            'rot_angle': rot_angle, 'class': class_name, 'occlusion': 0.0, 'truncation': 1.0,
            'id': 0, 'alpha': 0.0, '2d_bbox': [0, 0, 1, 1], '3d_points': [[0, 0, 0]] * 8}


# ----------------------------------------------------------------------------- paths


def test_sibling_path_on_the_documented_example():
    assert a2d2.sibling_path(EXAMPLE, 'camera') == (
        '20180807_145028/camera/cam_front_center/20180807145028_camera_frontcenter_000001617.png')
    assert a2d2.sibling_path(EXAMPLE, 'camera_info').endswith(
        'camera/cam_front_center/20180807145028_camera_frontcenter_000001617.json')
    assert a2d2.sibling_path(EXAMPLE, 'label') == (
        '20180807_145028/label/cam_front_center/20180807145028_label_frontcenter_000001617.png')
    label3d = a2d2.sibling_path(EXAMPLE, 'label3D')
    assert label3d == ('20180807_145028/label3D/cam_front_center/'
                       '20180807145028_label3D_frontcenter_000001617.json')
    assert a2d2.sibling_path(label3d, 'lidar') == EXAMPLE


def test_sibling_path_never_replaces_blindly():
    path = '/data/lidar_lidar/camera/' + EXAMPLE
    assert a2d2.sibling_path(path, 'label') == (
        '/data/lidar_lidar/camera/20180807_145028/label/cam_front_center/'
        '20180807145028_label_frontcenter_000001617.png')
    with pytest.raises(ValueError, match='not an A2D2 frame file'):
        a2d2.sibling_path('/data/lidar/frame.npz', 'camera')
    with pytest.raises(ValueError, match='unknown file kind'):
        a2d2.sibling_path(EXAMPLE, 'radar')


def test_frame_path_and_scene_split(root):
    scenes = a2d2.list_scenes(root)
    assert len(scenes) == SCENES
    path = a2d2.frame_path('/r', '20180807_145028', '000001617', 'lidar')
    assert path == '/r/' + EXAMPLE
    assert a2d2.split_scenes(root, 1) == (scenes[:1], scenes[1:])
    assert a2d2.split_scenes(scenes, [scenes[0]]) == (scenes[1:], scenes[:1])
    with pytest.raises(ValueError, match='20180807_145028'):
        a2d2.split_scenes(root, a2d2.DEFAULT_VAL_SCENES)


# ----------------------------------------------------------------------------- files


def test_read_lidar_round_trip(root, intended):
    for frame in intended:
        path = a2d2.frame_path(root, frame.scene, frame.frame_id, 'lidar')
        points = a2d2.read_lidar(path)
        assert points.dtype == np.float32 and points.shape == (len(frame.lidar['points']), 4)
        np.testing.assert_array_equal(points[:, :3], frame.lidar['points'].astype(np.float32))
        np.testing.assert_array_equal(points[:, 3], frame.lidar['reflectance'])
        arrays = a2d2.read_lidar_arrays(path)
        for key, value in frame.lidar.items():
            np.testing.assert_array_equal(arrays[key], value)


def test_read_lidar_without_row(tmp_path):
    path = str(tmp_path / 'x_lidar_frontcenter_000000001.npz')
    np.savez_compressed(path, points=np.ones((3, 3)), reflectance=np.arange(3))
    np.testing.assert_array_equal(a2d2.read_lidar(path)[:, 3], [0, 1, 2])
    np.savez_compressed(path, points=np.ones((3, 3)), reflectance=np.arange(4))
    with pytest.raises(a2d2.CorruptFrameError, match='x_lidar_frontcenter_000000001.npz'):
        a2d2.read_lidar(path)


def test_read_boxes_round_trip(root, intended):
    for frame in intended:
        boxes = a2d2.read_boxes(a2d2.frame_path(root, frame.scene, frame.frame_id, 'label3D'))
        assert len(boxes) == len(frame.boxes)
        for box in boxes:
            written = frame.boxes[f'box_{box.box_id}']
            np.testing.assert_array_equal(box.center, written['center'])
            np.testing.assert_array_equal(box.size, written['size'])
            assert box.yaw == pytest.approx(written['rot_angle'] * written['axis'][2])
            assert box.class_name == written['class'] in BOX_CLASSES
            assert box.occlusion == written['occlusion']
            assert box.as_array().dtype == np.float32


@pytest.mark.parametrize('axis, rot_angle, yaw', [
    ([0.0, 0.0, 1.0], 0.5, 0.5),
    ([0.0, 0.0, -1.0], 0.5, -0.5),
    ([1e-4, 0.0, -0.99999999], 2.0, -2.0),
    ([0.0, 0.0, -1.0], 1.5 * math.pi, 0.5 * math.pi),
    ([0.0, 0.0, 1.0], math.pi, math.pi),
    ([0.0, 0.0, -1.0], math.pi, math.pi),
    ([0.0, 0.0, 0.0], 0.0, 0.0),
])
def test_read_boxes_yaw_uses_the_axis_sign(tmp_path, axis, rot_angle, yaw):
    path = str(tmp_path / 'label3D.json')
    _write_json(path, {'box_0': _box(axis, rot_angle), 'box_1': _box([0, 0, 1], 0.0, 'Truck')})
    boxes = a2d2.read_boxes(path)
    assert boxes[0].yaw == pytest.approx(yaw) and -math.pi < boxes[0].yaw <= math.pi
    np.testing.assert_allclose(boxes[0].as_array(), [10, 2, -1, 4.5, 1.8, 1.5, yaw], rtol=1e-6)
    assert [b.class_name for b in boxes] == ['Car', 'Truck']


def test_read_boxes_rejects_bad_files(tmp_path):
    path = str(tmp_path / 'label3D.json')
    _write_json(path, {'box_0': _box([1.0, 0.0, 0.0], 0.3)})
    with pytest.raises(a2d2.CorruptFrameError, match='not vertical'):
        a2d2.read_boxes(path)
    broken = _box([0, 0, 1], 0.3)
    del broken['size']
    _write_json(path, {'box_0': broken})
    with pytest.raises(a2d2.CorruptFrameError, match='label3D.json.*box_0'):
        a2d2.read_boxes(path)
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write('{"box_0": {')
    with pytest.raises(a2d2.CorruptFrameError, match='unreadable JSON'):
        a2d2.read_boxes(path)
    with pytest.raises(a2d2.CorruptFrameError, match='missing file'):
        a2d2.read_boxes(str(tmp_path / 'absent.json'))


def test_read_semantic_round_trip(root, intended):
    class_list = os.path.join(root, 'class_list.json')
    for frame in intended:
        ids, categories = a2d2.read_semantic(
            a2d2.frame_path(root, frame.scene, frame.frame_id, 'label'), class_list)
        assert categories == SEMANTIC_CATEGORIES and len(categories) == 38
        assert ids.dtype == np.uint8 and ids.shape == frame.image.shape[:2]
        assert ids.shape[1] == IMAGE_SIZE[0]  # a scene's own camera keeps the width
        np.testing.assert_array_equal(ids, frame.semantic_ids)
        assert {SEMANTIC_CATEGORIES.index(n) for n in ('Sky', 'RD normal street')} <= set(
            np.unique(ids).tolist())


def test_read_semantic_collapses_and_ignores(tmp_path, root):
    colours = {name: hex_to_rgb(colour) for colour, name in SEMANTIC_COLOURS}
    pixels = [colours['Car 1'], colours['Car 4'], colours['Pedestrian 3'], colours['Sky'],
              colours['Ego car'], colours['Blurred area'], colours['Rain dirt'], (1, 2, 3)]
    path = str(tmp_path / 'label.png')
    Image.fromarray(np.array([pixels], dtype=np.uint8)).save(path)
    ids, _ = a2d2.read_semantic(path, os.path.join(root, 'class_list.json'))
    car, pedestrian, sky = (SEMANTIC_CATEGORIES.index(n) for n in ('Car', 'Pedestrian', 'Sky'))
    assert ids.tolist() == [[car, car, pedestrian, sky] + [IGNORE_INDEX] * 4]


def test_class_list_with_other_categories_is_refused(tmp_path):
    table = dict(SEMANTIC_COLOURS)
    reordered = dict(list(table.items())[4:] + list(table.items())[:4])  # Bicycle before Car
    path = str(tmp_path / 'class_list.json')
    _write_json(path, reordered)
    with pytest.raises(a2d2.A2D2FormatError, match='class_list.json.*categories'):
        a2d2.SemanticDecoder.from_class_list(path)


def test_read_image_and_camera_info(root, intended):
    frame = intended[0]
    image = a2d2.read_image(a2d2.frame_path(root, frame.scene, frame.frame_id, 'camera'))
    assert image.dtype == np.uint8 and image.shape[1:] == (IMAGE_SIZE[0], 3)
    np.testing.assert_array_equal(image, frame.image)
    info = a2d2.read_camera_info(
        a2d2.frame_path(root, frame.scene, frame.frame_id, 'camera_info'))
    assert info == frame.camera_info


# ----------------------------------------------------------------------------- dataset


def test_default_class_map_covers_every_box_class():
    assert set(a2d2.DEFAULT_CLASS_MAP) == set(BOX_CLASSES)
    assert set(a2d2.DEFAULT_CLASS_MAP.values()) == set(a2d2.DEFAULT_CLASSES) | {None}
    assert a2d2.DEFAULT_CLASS_MAP['VanSUV'] == 'car' and a2d2.DEFAULT_CLASS_MAP['Animal'] is None
    with pytest.raises(TypeError):
        a2d2.DEFAULT_CLASS_MAP['Car'] = 'truck'


def test_dataset_frames(root, intended):
    dataset = a2d2.A2D2Dataset(root)
    assert len(dataset) == SCENES * FRAMES and dataset.skipped == []
    assert dataset.frame_keys == sorted(dataset.frame_keys)
    frame = dataset[0]
    truth = intended[0]
    assert (frame.scene, frame.frame_id) == (truth.scene, truth.frame_id)
    assert frame.points.dtype == np.float32 and frame.points.shape[1] == 4
    assert frame.boxes.dtype == np.float32 and frame.boxes.shape == (len(frame.labels), 7)
    assert frame.labels.dtype == np.int64
    expected = [a2d2.DEFAULT_CLASSES.index(a2d2.DEFAULT_CLASS_MAP[b['class']])
                for b in truth.boxes.values() if a2d2.DEFAULT_CLASS_MAP[b['class']]]
    assert sorted(frame.labels.tolist()) == sorted(expected)
    assert frame.image.shape == truth.image.shape
    np.testing.assert_array_equal(frame.semantic, truth.semantic_ids)
    assert frame.lidar_timestamp_us == int(truth.lidar['timestamp'].min())
    assert frame.camera_timestamp_us == truth.camera_info['cam_tstamp']
    assert 0 < frame.camera_timestamp_us - frame.lidar_timestamp_us < 100_000
    assert frame.paths['lidar'] == a2d2.frame_path(root, truth.scene, truth.frame_id, 'lidar')
    # Scene 0 films with a camera of its own (its cams_lidars.json, placed relative to the
    # root's front-center view, the frame of the points); scene 1 with the root's camera.
    root_camera = CameraModel.from_json(_front_center(root))
    own = CameraModel.from_json(_front_center(os.path.join(root, truth.scene)))
    np.testing.assert_array_equal(frame.camera_geometry, own.camera_geometry(root_camera.view))
    assert (own.width, own.height) == frame.image.shape[1::-1]
    later = dataset[FRAMES]
    assert later.scene != truth.scene and later.image.shape == (IMAGE_SIZE[1], IMAGE_SIZE[0], 3)
    np.testing.assert_array_equal(later.camera_geometry, root_camera.camera_geometry())


def _front_center(folder):
    with open(os.path.join(folder, 'cams_lidars.json'), encoding='utf-8') as stream:
        return json.load(stream)['cameras']['front_center']


def test_root_without_or_with_a_corrupt_cams_lidars(tmp_path, root):
    copy = str(tmp_path / 'root')
    shutil.copytree(root, copy)
    os.remove(os.path.join(copy, 'cams_lidars.json'))
    own = [os.path.join(copy, scene, 'cams_lidars.json') for scene in a2d2.list_scenes(copy)]
    assert os.path.exists(own[0])  # scene 0 of the seed films with a camera of its own
    with pytest.raises(a2d2.CorruptFrameError, match='a scene camera needs'):
        a2d2.A2D2Dataset(copy)  # its pose is relative to the root's camera
    os.remove(own[0])
    assert a2d2.A2D2Dataset(copy)[0].camera_geometry is None
    with open(os.path.join(copy, 'cams_lidars.json'), 'w', encoding='utf-8') as stream:
        stream.write('{"cameras": {}}')
    with pytest.raises(a2d2.CorruptFrameError, match='cams_lidars.json.*front_center'):
        a2d2.A2D2Dataset(copy)


def test_dataset_class_map_split_and_lidar_only(root):
    only_cars = dict.fromkeys(BOX_CLASSES)
    only_cars['Car'] = 'saloon'
    dataset = a2d2.A2D2Dataset(root, split='val', val_scenes=1, class_map=only_cars,
                               classes=('saloon',), load_image=False, load_semantic=False)
    assert len(dataset) == FRAMES
    assert {scene for scene, _ in dataset.frame_keys} == {a2d2.list_scenes(root)[-1]}
    frames = [dataset[i] for i in range(len(dataset))]
    assert all(f.image is None and f.semantic is None for f in frames)
    assert all((f.labels == 0).all() for f in frames)
    assert sum(len(f.labels) for f in frames) > 0
    lengths = np.concatenate([f.boxes[:, 3] for f in frames])
    heights = np.concatenate([f.boxes[:, 5] for f in frames])
    assert (lengths > 3.2).all() and (heights < 1.7).all(), 'only cars are left'
    with pytest.raises(ValueError, match='not in classes'):
        a2d2.A2D2Dataset(root, classes=('car',))


def test_corrupt_and_missing_files_are_reported_and_skipped(tmp_path, root, caplog):
    copy = str(tmp_path / 'copy')
    shutil.copytree(root, copy)
    reference = a2d2.A2D2Dataset(copy)
    (scene, first_id), (_, second_id), (_, third_id) = reference.frame_keys[:3]
    deleted = a2d2.frame_path(copy, scene, first_id, 'label3D')
    os.remove(deleted)
    truncated = a2d2.frame_path(copy, scene, second_id, 'lidar')
    with open(truncated, 'rb') as stream:
        data = stream.read()
    with open(truncated, 'wb') as stream:
        stream.write(data[:len(data) // 2])
    broken_png = a2d2.frame_path(copy, scene, third_id, 'camera')
    with open(broken_png, 'r+b') as stream:
        stream.truncate(200)

    with caplog.at_level(logging.WARNING, logger='training.a2d2'):
        dataset = a2d2.A2D2Dataset(copy)
    assert len(dataset) == SCENES * FRAMES - 1
    assert dataset.skipped == [(deleted, 'missing file; frame skipped')]
    assert deleted in caplog.text

    with pytest.raises(a2d2.CorruptFrameError, match=truncated):
        dataset[0]
    with pytest.raises(a2d2.CorruptFrameError, match=broken_png):
        dataset[1]
    batch = a2d2.collate_frames([dataset.skipping()[i] for i in range(len(dataset))])
    assert len(batch) == SCENES * FRAMES - 3
    assert [path for path, _ in dataset.skipped] == [deleted, truncated, broken_png]
    assert dataset.safe_getitem(0) is None and len(dataset.skipped) == 3, 'reported once'
    assert caplog.text.count(truncated) == 1


def test_dataset_works_with_a_torch_data_loader(root):
    torch = pytest.importorskip('torch')
    dataset = a2d2.A2D2Dataset(root, load_image=False, load_semantic=False)
    loader = torch.utils.data.DataLoader(dataset.skipping(), batch_size=4, num_workers=2,
                                         collate_fn=a2d2.collate_frames)
    batches = list(loader)
    assert [len(batch) for batch in batches] == [4, 2]
    assert [(f.scene, f.frame_id) for batch in batches for f in batch] == dataset.frame_keys


def test_unknown_box_class_is_dropped_with_a_warning(tmp_path, root, caplog):
    copy = str(tmp_path / 'copy')
    shutil.copytree(root, copy)
    scene, frame_id = a2d2.A2D2Dataset(copy, load_image=False).frame_keys[0]
    path = a2d2.frame_path(copy, scene, frame_id, 'label3D')
    _write_json(path, {'box_0': _box([0, 0, 1], 0.1, 'Hovercraft'),
                       'box_1': _box([0, 0, -1], 0.1, 'Bus')})
    dataset = a2d2.A2D2Dataset(copy, load_image=False, load_semantic=False)
    with caplog.at_level(logging.WARNING, logger='training.a2d2'):
        frame = dataset[0]
    assert frame.labels.tolist() == [a2d2.DEFAULT_CLASSES.index('truck')]
    assert frame.boxes[0, 6] == pytest.approx(-0.1)
    assert 'Hovercraft' in caplog.text
