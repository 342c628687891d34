"""A2D2 scene -> rosbag2 converter: messages read back equal the source files (mcap, sqlite3)."""

import json
import math
import os
from pathlib import Path
import shutil

from bev_perception import bag_io
from bev_perception.bag_io import (BagError, BagReader, DEFAULT_TOPICS, detections_from_msg,
                                   mono8_to_array)
from bev_perception.calibration import CameraIntrinsics
from bev_perception.conversions import image_to_rgb, pointcloud2_to_array
from bev_perception.transforms import TransformTree
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import get_typestore, Stores
from training.a2d2 import (A2D2Dataset, DEFAULT_CLASS_MAP, frame_path, read_boxes,
                           read_camera_info, read_image, read_lidar, read_lidar_arrays,
                           read_semantic)
from training.a2d2_calibration import view_to_vehicle, view_to_view
from training.synthetic import generate
from training.to_bag import (camera_info_data, convert_scene, main, parse_frame_range,
                             scene_frame_ids, static_transforms)

FRAMES = 3
IMAGE_SIZE = (160, 96)  # (width, height): small and not the native aspect


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """Write a small synthetic A2D2-format root; return (root, scene name)."""
    root = str(tmp_path_factory.mktemp('a2d2'))
    report = generate(root, scenes=1, frames=FRAMES, seed=41, image_size=IMAGE_SIZE)
    return root, report.scenes[0]


def _by_topic(bag_path):
    messages = {}
    with BagReader(bag_path) as bag:
        log_times = []
        for item in bag.messages(list(bag.topics)):
            messages.setdefault(item.topic, []).append(item)
            log_times.append(item.log_time_ns)
    assert log_times == sorted(log_times)  # written in log-time order
    return messages


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_messages_equal_the_source_files(scene, tmp_path, storage):
    root, name = scene
    bag = tmp_path / f'scene_{storage}'
    report = convert_scene(root, name, str(bag), storage=storage, progress=False)
    assert report.frames == FRAMES and not report.skipped
    suffix = '.mcap' if storage == 'mcap' else '.db3'
    assert any(path.suffix == suffix for path in bag.iterdir())
    messages = _by_topic(bag)
    topics = DEFAULT_TOPICS
    for topic in (topics.pointcloud, topics.image, topics.camera_info, topics.gt_detections,
                  topics.gt_semantic):
        assert len(messages[topic]) == FRAMES, topic
    assert len(messages[topics.tf_static]) == 1

    cams_lidars = json.load(open(os.path.join(root, 'cams_lidars.json')))
    # Seed 41 films with a camera of its own: CameraInfo and the optical frame are that
    # camera's, the cloud stays in the root's front-center view frame.
    filming = json.load(open(os.path.join(root, name, 'cams_lidars.json')))
    for index, frame_id in enumerate(scene_frame_ids(root, name)):
        path = {kind: frame_path(root, name, frame_id, kind)
                for kind in ('lidar', 'label3D', 'camera', 'camera_info', 'label')}
        arrays = read_lidar_arrays(path['lidar'])
        sweep_start_us = int(arrays['timestamp'].min())
        camera_us = read_camera_info(path['camera_info'])['cam_tstamp']

        cloud_item = messages[topics.pointcloud][index]
        cloud = cloud_item.message
        assert bag_io.stamp_ns(cloud.header) == sweep_start_us * 1000
        assert cloud_item.log_time_ns == int(arrays['timestamp'].max()) * 1000
        assert cloud.header.frame_id == bag_io.CAMERA_VIEW_FRAME
        assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'intensity', 'time']
        np.testing.assert_array_equal(pointcloud2_to_array(cloud), read_lidar(path['lidar']))
        point_time_s = pointcloud2_to_array(cloud, ('time',))[:, 0].astype(np.float64)
        np.testing.assert_array_equal(
            sweep_start_us + np.round(point_time_s * 1e6).astype(np.int64), arrays['timestamp'])

        image = messages[topics.image][index].message
        assert image.encoding == 'rgb8' and bag_io.stamp_ns(image.header) == camera_us * 1000
        assert bag_io.stamp_ns(image.header) != bag_io.stamp_ns(cloud.header)  # kept apart
        np.testing.assert_array_equal(image_to_rgb(image), read_image(path['camera']))

        info = messages[topics.camera_info][index].message
        entry = filming['cameras']['front_center']
        assert (info.width, info.height) == tuple(entry['Resolution'])
        assert info.width == IMAGE_SIZE[0] and info.height != IMAGE_SIZE[1]
        assert info.distortion_model == 'plumb_bob'
        np.testing.assert_allclose(info.k.reshape(3, 3), entry['CamMatrixOriginal'])
        np.testing.assert_allclose(info.p.reshape(3, 4)[:, :3], entry['CamMatrix'])
        np.testing.assert_allclose(info.d, np.ravel(entry['Distortion']))
        assert info.header.frame_id == image.header.frame_id == bag_io.CAMERA_OPTICAL_FRAME

        semantic = messages[topics.gt_semantic][index].message
        assert semantic.encoding == 'mono8'
        assert bag_io.stamp_ns(semantic.header) == camera_us * 1000
        ids, _ = read_semantic(path['label'], os.path.join(root, 'class_list.json'))
        np.testing.assert_array_equal(mono8_to_array(semantic), ids)

        gt = detections_from_msg(messages[topics.gt_detections][index].message)
        assert gt.stamp_ns == bag_io.stamp_ns(cloud.header)
        boxes = [box for box in read_boxes(path['label3D'])
                 if DEFAULT_CLASS_MAP[box.class_name] is not None]
        assert gt.class_ids == [DEFAULT_CLASS_MAP[box.class_name] for box in boxes]
        expected = np.stack([box.as_array() for box in boxes]).reshape(-1, 7)
        np.testing.assert_array_equal(gt.boxes[:, :6], expected[:, :6])
        yaw_error = np.angle(np.exp(1j * (gt.boxes[:, 6] - expected[:, 6])))
        np.testing.assert_allclose(yaw_error, 0.0, atol=1e-6)
        np.testing.assert_array_equal(gt.scores, 1.0)

    transforms = messages[topics.tf_static][0].message.transforms
    assert [(t.header.frame_id, t.child_frame_id) for t in transforms] == [
        (bag_io.VEHICLE_FRAME, bag_io.CAMERA_VIEW_FRAME),
        (bag_io.CAMERA_VIEW_FRAME, bag_io.CAMERA_OPTICAL_FRAME)]
    expected = view_to_vehicle(cams_lidars['cameras']['front_center']['view'])
    translation = transforms[0].transform.translation
    np.testing.assert_allclose([translation.x, translation.y, translation.z], expected[:3, 3])
    camera = view_to_view(filming['cameras']['front_center']['view'],
                          cams_lidars['cameras']['front_center']['view'])
    offset = transforms[1].transform.translation
    np.testing.assert_allclose([offset.x, offset.y, offset.z], camera[:3, 3], atol=1e-9)
    assert np.linalg.norm(camera[:3, 3]) > 0.05  # the camera is not at the cloud's origin
    # What a node makes of /tf_static and CameraInfo is the calibration training reads.
    tree = TransformTree()
    assert tree.update_from_message(messages[topics.tf_static][0].message, True, 0.0) == []
    pose = tree.lookup(info.header.frame_id, cloud.header.frame_id, 0.0)
    intrinsics = CameraIntrinsics.from_camera_info(info.width, info.height, info.k,
                                                   info.distortion_model, info.d)
    np.testing.assert_allclose(intrinsics.geometry(pose, (np.eye(3), np.zeros(3))),
                               A2D2Dataset(root).scene_camera_geometry(name), atol=1e-5)


def test_bag_decodes_with_plain_rosbags_from_its_embedded_definitions(scene, tmp_path):
    root, name = scene
    bag = tmp_path / 'plain'
    convert_scene(root, name, str(bag), frames=slice(0, 1), progress=False)
    with AnyReader([bag], default_typestore=get_typestore(Stores.EMPTY)) as reader:
        connection = next(c for c in reader.connections
                          if c.topic == DEFAULT_TOPICS.gt_detections)
        _, _, data = next(reader.messages(connections=[connection]))
        msg = reader.deserialize(data, connection.msgtype)
    assert connection.msgtype == 'vision_msgs/msg/Detection3DArray'
    assert msg.detections and msg.detections[0].results[0].hypothesis.score == 1.0


def test_frame_slice_and_a2d2_class_ids(scene, tmp_path):
    root, name = scene
    bag = tmp_path / 'a2d2_ids'
    assert main(['--a2d2-root', root, '--scene', name, '--frames', '1:', '--out', str(bag),
                 '--gt-classes', 'a2d2', '--no-progress']) == 0
    messages = _by_topic(bag)
    assert len(messages[DEFAULT_TOPICS.pointcloud]) == FRAMES - 1
    second = scene_frame_ids(root, name)[1]
    names = [box.class_name.lower()
             for box in read_boxes(frame_path(root, name, second, 'label3D'))]
    gt = detections_from_msg(messages[DEFAULT_TOPICS.gt_detections][0].message)
    assert gt.class_ids == names  # every box, A2D2 names in lower case


def test_missing_and_corrupt_files_are_reported_and_skipped(scene, tmp_path, caplog):
    root, name = scene
    copy = tmp_path / 'root'
    shutil.copytree(root, copy)
    first, second = scene_frame_ids(str(copy), name)[:2]
    os.remove(frame_path(str(copy), name, first, 'label3D'))
    lidar = frame_path(str(copy), name, second, 'lidar')
    with open(lidar, 'r+b') as stream:
        stream.truncate(os.path.getsize(lidar) // 3)
    report = convert_scene(str(copy), name, str(tmp_path / 'bag'), progress=False)
    assert report.frames == FRAMES - 1
    reasons = dict(report.skipped)
    assert 'without detection ground truth' in reasons[frame_path(str(copy), name, first,
                                                                  'label3D')]
    assert 'frame skipped' in reasons[lidar]
    assert lidar in caplog.text
    messages = _by_topic(tmp_path / 'bag')
    assert len(messages[DEFAULT_TOPICS.gt_detections]) == FRAMES - 2


def test_cli_errors_name_the_problem(scene, tmp_path, capsys):
    root, name = scene
    assert main(['--a2d2-root', root, '--scene', '20990101_000000', '--out',
                 str(tmp_path / 'x'), '--no-progress']) == 1
    assert '20990101_000000' in capsys.readouterr().err
    existing = tmp_path / 'existing'
    existing.mkdir()
    (existing / 'notes.txt').write_text('keep me')
    assert main(['--a2d2-root', root, '--scene', name, '--out', str(existing),
                 '--no-progress']) == 1
    assert 'already exists' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--a2d2-root', root, '--scene', name, '--out', str(tmp_path / 'y'),
              '--frames', '1-2'])


def test_frame_range_parsing():
    assert parse_frame_range(None) == slice(None)
    assert parse_frame_range('2:5') == slice(2, 5)
    assert parse_frame_range(':3') == slice(None, 3)
    assert parse_frame_range('-4:') == slice(-4, None)
    with pytest.raises(ValueError, match='a:b'):
        parse_frame_range('3')


def test_camera_info_scales_to_the_written_image_size():
    cams_lidars = {'cameras': {'front_center': {
        'CamMatrixOriginal': [[1844.0, 0.0, 964.5], [0.0, 1841.0, 679.5], [0.0, 0.0, 1.0]],
        'CamMatrix': [[1687.0, 0.0, 965.5], [0.0, 1783.0, 684.5], [0.0, 0.0, 1.0]],
        'Distortion': [[-0.26, 0.0, 0.0, 0.0, 0.0]], 'Lens': 'Telecam',
        'Resolution': [1920, 1208],
        'view': {'origin': [1.7, 0.0, 0.9], 'x-axis': [1.0, 0.0, 0.0],
                 'y-axis': [0.0, 1.0, 0.0]}}}}
    half = camera_info_data(cams_lidars, image_size=(960, 604))
    assert (half.width, half.height) == (960, 604)
    assert half.camera_matrix[0, 0] == pytest.approx(922.0)
    assert half.camera_matrix[0, 2] == pytest.approx((964.5 + 0.5) * 0.5 - 0.5)
    assert half.distortion == (-0.26, 0.0, 0.0, 0.0, 0.0)
    assert half.distortion_model == 'plumb_bob'
    (_, _, view), (_, _, optical) = static_transforms(cams_lidars)
    np.testing.assert_allclose(view[:3, 3], [1.7, 0.0, 0.9])
    # Optical z (forward) is view x; optical x (right) is view -y; optical y (down) is view -z.
    np.testing.assert_allclose(optical[:3, :3] @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_allclose(optical[:3, :3] @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_allclose(optical[:3, :3] @ [0, 1, 0], [0, 0, -1])


def test_vision_msgs_definitions_come_from_the_ament_prefixes(tmp_path):
    prefix = tmp_path / 'prefix'
    folder = prefix / 'share' / 'vision_msgs' / 'msg'
    folder.mkdir(parents=True)
    source = Path(__file__).resolve().parents[2] / 'interfaces' / 'vision_msgs' / 'msg'
    for path in source.glob('*.msg'):
        shutil.copy(path, folder)
    assert bag_io.interface_msg_dirs('vision_msgs', ament_prefix_path='') == []
    found = bag_io.interface_msg_dirs(
        'vision_msgs', ament_prefix_path=os.pathsep.join([str(tmp_path / 'empty'), str(prefix)]))
    assert found == [folder]
    store = bag_io.make_typestore(ament_prefix_path=str(prefix))
    assert 'vision_msgs/msg/Detection3DArray' in store.types
    with pytest.raises(BagError, match='vision_msgs'):
        bag_io.make_typestore(ament_prefix_path=str(tmp_path / 'empty'))


def test_yaw_survives_the_detection_message_near_pi(tmp_path):
    factory = bag_io.MessageFactory(bag_io.make_typestore())
    yaws = np.array([math.pi, -math.pi + 1e-6, 0.0, 2.5, -1.0])
    boxes = np.zeros((len(yaws), 7))
    boxes[:, 6] = yaws
    boxes[:, 3:6] = 1.0
    msg = factory.detections(5, 'f', boxes, np.ones(len(yaws)), ['car'] * len(yaws))
    read = detections_from_msg(msg)
    error = np.angle(np.exp(1j * (read.boxes[:, 6] - yaws)))
    np.testing.assert_allclose(error, 0.0, atol=1e-6)
    assert np.all(read.boxes[:, 6] > -math.pi) and np.all(read.boxes[:, 6] <= math.pi)
