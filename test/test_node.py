"""The perception node over real DDS: started through its console script, fed synthetic frames.

One node process (module scope) runs with the shipped params file, random tiny weights and the
launch file's remappings; the tests publish clouds and images made from a small synthetic A2D2
scene and check every output, then malformed input, parameter validation and clean shutdown.
The pure helpers of the node (extrinsic maths, resizing, weights lookup) are tested in-process.
"""

import collections
import math
import os
import shutil
import signal
import subprocess
import sys
import time

from bev_perception.conversions import array_to_pointcloud2, rgb_to_image
from bev_perception.outputs import MARKER_COLOURS
from bev_perception.tools.replay import stop_node
from model_testing import write_tiny_weights
import numpy as np
import pytest
from ros_testing import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS_FILE = os.path.join(ROOT, 'config', 'perception.yaml')
NODE = '/perception_node'
CLOUD_TOPIC = '/test_sensors/points'
IMAGE_TOPIC = '/test_sensors/image'
CLOUD_FRAME = 'a2d2_cam_front_center_view'
IMAGE_FRAME = 'a2d2_cam_front_center_optical'
SCORE_THRESHOLD = 0.02  # random weights score about 0.1: detections appear
SimpleFrame = collections.namedtuple('SimpleFrame', 'points image')


# ------------------------------------------------------------------------------ node process

@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory):
    """Write random weights of the tiny model config; return (path, config)."""
    path = tmp_path_factory.mktemp('weights') / 'tiny_random.safetensors'
    return str(path), write_tiny_weights(path)


@pytest.fixture(scope='module')
def scene_frames(tmp_path_factory):
    """Generate two small synthetic A2D2 frames; return the loaded Frame objects."""
    from training.a2d2 import A2D2Dataset, DEFAULT_CLASS_MAP, DEFAULT_CLASSES
    from training.synthetic import generate

    root = tmp_path_factory.mktemp('synthetic')
    generate(str(root), scenes=1, frames=2, seed=911, image_size=(200, 126))
    dataset = A2D2Dataset(str(root), class_map=DEFAULT_CLASS_MAP, classes=DEFAULT_CLASSES)
    frames = [dataset[index] for index in range(len(dataset))]
    shutil.rmtree(root)
    return frames


def node_command(weights_path, *extra):
    """Return the command line starting the node as the launch file would, plus extras."""
    executable = shutil.which('perception_node', path=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get('PATH', '')]))
    assert executable, 'perception_node console script not installed (run make setup)'
    return [executable, '--ros-args', '--params-file', PARAMS_FILE,
            '-p', f'weights_path:={weights_path}', '-p', 'device:=cpu',
            '-r', f'~/input/pointcloud:={CLOUD_TOPIC}', '-r', f'~/input/image:={IMAGE_TOPIC}',
            *extra]


def max_points(scene_frames):
    """Return the node's max_points for the tests: just above the largest synthetic cloud."""
    return max(1000, max(len(frame.points) for frame in scene_frames) + 1)


@pytest.fixture(scope='module')
def node_process(tiny_weights, scene_frames, ros_env, tmp_path_factory):
    log_path = tmp_path_factory.mktemp('node_log') / 'node.log'
    with open(log_path, 'w') as log:
        process = subprocess.Popen(
            node_command(tiny_weights[0], '-p', f'score_thresholds:=[{SCORE_THRESHOLD}]',
                         '-p', f'max_points:={max_points(scene_frames)}',
                         '-p', 'diagnostics_period_s:=0.2'),
            env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log_path
    yield process
    stop_node(process)


class Peer:
    """A test-side node: publishers to the node's inputs, subscriptions to all its outputs."""

    def __init__(self):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, qos_profile_sensor_data, QoSProfile
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image, PointCloud2
        from std_msgs.msg import Float64
        from vision_msgs.msg import Detection3DArray, LabelInfo
        from visualization_msgs.msg import MarkerArray

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('node_test_peer', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.cloud_pub = self.node.create_publisher(
            PointCloud2, CLOUD_TOPIC, qos_profile_sensor_data)
        self.image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.received = {}
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        topics = {
            'detections': (Detection3DArray, f'{NODE}/output/detections', 10),
            'semantic': (Image, f'{NODE}/output/semantic', 10),
            'semantic_color': (Image, f'{NODE}/output/semantic_color', 10),
            'markers': (MarkerArray, f'{NODE}/output/markers', 10),
            'label_info': (LabelInfo, f'{NODE}/output/label_info', latched),
            'diagnostics': (DiagnosticArray, '/diagnostics', 10),
            'timings': (DiagnosticArray, f'{NODE}/debug/timings', 10),
            'latency': (Float64, f'{NODE}/debug/end_to_end_latency_ms', 10),
        }
        self.subscriptions = [
            self.node.create_subscription(kind, topic, self._keeper(name), qos)
            for name, (kind, topic, qos) in topics.items()]

    def _keeper(self, name):
        return lambda msg: self.received.setdefault(name, []).append(msg)

    def spin_until(self, predicate, timeout_s):
        def spun():
            self.executor.spin_once(timeout_sec=0.02)
            return predicate()
        return wait_until(spun, timeout_s, poll_s=0.0)

    def messages(self, name):
        return self.received.get(name, [])

    def wait_message(self, name, predicate, timeout_s=10.0):
        """Return the latest message of a topic satisfying predicate, waiting for one."""
        def matching():
            return [msg for msg in self.messages(name) if predicate(msg)]
        assert self.spin_until(matching, timeout_s), f'no matching {name} message'
        return matching()[-1]

    def detections_with_stamp(self, stamp):
        return [msg for msg in self.messages('detections') if msg.header.stamp == stamp]

    def latest_counters(self):
        for array in reversed(self.messages('diagnostics')):
            for status in array.status:
                if status.name.startswith('perception_node'):
                    return status, {kv.key: kv.value for kv in status.values}
        return None, {}

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture(scope='module')
def peer(node_process):
    peer = Peer()
    connected = peer.spin_until(
        lambda: peer.cloud_pub.get_subscription_count() > 0
        and peer.image_pub.get_subscription_count() > 0, timeout_s=60.0)
    if not connected:
        with open(node_process.log_path) as log:
            pytest.fail('the node did not subscribe within 60 s; its log:\n' + log.read())
    peer.log_path = node_process.log_path
    yield peer
    peer.close()


def headers(stamp_us, offset_us=0):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    total_us = stamp_us + offset_us
    stamp = Time(sec=total_us // 10**6, nanosec=(total_us % 10**6) * 1000)
    return Header(stamp=stamp, frame_id=CLOUD_FRAME), stamp


def publish_frame(peer, frame, stamp_us, with_image=True):
    """Publish one synthetic frame (image 50 ms after the cloud); return the cloud header."""
    cloud_header, _ = headers(stamp_us)
    image_header, _ = headers(stamp_us, 50000)
    image_header.frame_id = IMAGE_FRAME
    peer.cloud_pub.publish(array_to_pointcloud2(frame.points, cloud_header))
    if with_image:
        peer.image_pub.publish(rgb_to_image(frame.image, image_header))
    return cloud_header, image_header


def publish_until_processed(peer, frame, stamp_us, with_image=True, attempts=3):
    """Publish a frame until its detections arrive (best effort may lose one)."""
    for _ in range(attempts):
        cloud_header, image_header = publish_frame(peer, frame, stamp_us, with_image)
        if peer.spin_until(lambda: peer.detections_with_stamp(cloud_header.stamp), 15.0):
            return cloud_header, image_header
    with open(peer.log_path) as log:
        pytest.fail(f'no detections for the cloud stamped {cloud_header.stamp}; node log:\n'
                    + log.read()[-3000:])


def test_synced_frames_produce_every_output(peer, scene_frames, tiny_weights):
    from bev_perception.a2d2_classes import SEMANTIC_PALETTE

    config = tiny_weights[1]
    frame = scene_frames[0]
    base_us = frame.lidar_timestamp_us
    cloud_header, image_header = publish_until_processed(peer, frame, base_us)
    second = scene_frames[1]
    cloud_header, image_header = publish_until_processed(
        peer, second, second.lidar_timestamp_us)

    (detections,) = peer.detections_with_stamp(cloud_header.stamp)
    assert detections.header.frame_id == CLOUD_FRAME
    assert 0 < len(detections.detections) <= config.head.max_objects
    for detection in detections.detections:
        assert detection.header == cloud_header
        hypothesis = detection.results[0].hypothesis
        assert hypothesis.class_id in config.detection_classes
        assert SCORE_THRESHOLD <= hypothesis.score <= 1.0
        assert min(detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z) > 0

    height, width = second.image.shape[:2]
    semantic = peer.wait_message('semantic', lambda msg: msg.header == image_header)
    assert (semantic.encoding, semantic.height, semantic.width) == ('mono8', height, width)
    ids = np.frombuffer(bytes(semantic.data), np.uint8)
    assert ids.size == height * width and ids.max() < len(config.semantic_classes)
    colour = peer.wait_message('semantic_color', lambda msg: msg.header == image_header)
    assert (colour.encoding, colour.height, colour.width) == ('rgb8', height, width)
    pixels = np.frombuffer(bytes(colour.data), np.uint8).reshape(height, width, 3)
    np.testing.assert_array_equal(pixels, np.asarray(SEMANTIC_PALETTE, np.uint8)[
        ids.reshape(height, width)])

    markers = peer.wait_message(
        'markers', lambda msg: msg.markers and msg.markers[0].header == cloud_header)
    added = [marker for marker in markers.markers if marker.action == marker.ADD]
    assert len(added) == 2 * len(detections.detections)
    for cube, detection in zip(added[::2], detections.detections):  # one colour per class
        class_index = config.detection_classes.index(detection.results[0].hypothesis.class_id)
        expected = np.array(MARKER_COLOURS[class_index]) / 255.0
        np.testing.assert_allclose([cube.color.r, cube.color.g, cube.color.b], expected,
                                   atol=1e-6)
        assert cube.pose == detection.bbox.center

    assert peer.spin_until(lambda: peer.messages('label_info'), 10.0)
    label_info = peer.messages('label_info')[0]
    assert [c.class_name for c in label_info.class_map] == list(config.detection_classes)
    assert label_info.threshold == pytest.approx(SCORE_THRESHOLD)

    timing = peer.wait_message('timings', lambda msg: msg.header == cloud_header)
    values = {kv.key: kv.value for kv in timing.status[0].values}
    for key in ('convert_ms', 'voxelize_ms', 'backbone_ms', 'fusion_ms', 'decode_ms',
                'publish_ms', 'end_to_end_ms'):
        assert float(values[key]) >= 0.0, key
    assert values['lidar_only'] == 'false' and values['image_offset_ms'] == '50.000'
    assert int(values['num_points']) == len(second.points)
    assert peer.messages('latency')

    assert peer.spin_until(lambda: int(peer.latest_counters()[1].get('frames_out', 0)) >= 2,
                           10.0)
    status, counters = peer.latest_counters()
    assert int(counters['fused_frames']) >= 2
    assert counters['device'] == 'cpu'


def test_missing_camera_runs_lidar_only(peer, scene_frames):
    frame = scene_frames[0]
    stamp_us = frame.lidar_timestamp_us + 10 * 10**6
    cloud_header, _ = publish_until_processed(peer, frame, stamp_us, with_image=False)
    timing = peer.wait_message('timings', lambda msg: msg.header == cloud_header)
    assert {kv.key: kv.value for kv in timing.status[0].values}['lidar_only'] == 'true'
    assert not [msg for msg in peer.messages('semantic') if msg.header.stamp == cloud_header.stamp]


def malformed_messages(frame, stamp_us):
    """Return (topic kind, message, counter it should raise) for a burst of bad input."""
    from sensor_msgs.msg import PointField

    cloud_header, _ = headers(stamp_us)
    image_header, _ = headers(stamp_us, 50000)
    good_cloud = array_to_pointcloud2(frame.points, cloud_header)
    good_image = rgb_to_image(frame.image, image_header)

    no_intensity = array_to_pointcloud2(frame.points[:, :3], cloud_header, fields=('x', 'y', 'z'))
    truncated_cloud = array_to_pointcloud2(frame.points, cloud_header)
    truncated_cloud.data = truncated_cloud.data[:-7]
    bad_step = array_to_pointcloud2(frame.points, cloud_header)
    bad_step.row_step = 3
    no_fields = array_to_pointcloud2(frame.points, cloud_header)
    no_fields.fields = []
    unknown_type = array_to_pointcloud2(frame.points, cloud_header)
    unknown_type.fields = [PointField(name=f.name, offset=f.offset, datatype=99, count=1)
                           for f in unknown_type.fields]

    yuv = rgb_to_image(frame.image, image_header)
    yuv.encoding = 'yuv422'
    no_encoding = rgb_to_image(frame.image, image_header)
    no_encoding.encoding = ''
    truncated_image = rgb_to_image(frame.image, image_header)
    truncated_image.data = truncated_image.data[:100]
    narrow_step = rgb_to_image(frame.image, image_header)
    narrow_step.step = 5
    return good_cloud, good_image, [
        ('cloud', no_intensity, 'bad_clouds'), ('cloud', truncated_cloud, 'bad_clouds'),
        ('cloud', bad_step, 'bad_clouds'), ('cloud', no_fields, 'bad_clouds'),
        ('cloud', unknown_type, 'bad_clouds'), ('image', yuv, 'bad_images'),
        ('image', no_encoding, 'bad_images'), ('image', truncated_image, 'bad_images'),
        ('image', narrow_step, 'bad_images'),
    ]


def test_malformed_input_is_counted_and_the_node_keeps_publishing(
        peer, scene_frames, node_process):
    frame = scene_frames[1]
    base_us = frame.lidar_timestamp_us + 20 * 10**6
    _, before = peer.latest_counters()
    good_cloud, good_image, burst = malformed_messages(frame, base_us)
    for kind, msg, _ in burst * 2:  # paced: the node's input history is qos_depth deep
        (peer.cloud_pub if kind == 'cloud' else peer.image_pub).publish(msg)
        peer.spin_until(lambda: False, 0.03)

    # NaN-only and empty clouds, then a time jump back, each processed (empty detections).
    nan_points = np.full((500, 4), np.nan, dtype=np.float32)
    empty_points = np.zeros((0, 4), dtype=np.float32)
    special = [nan_points, empty_points]
    for index, points in enumerate(special):
        stamp_us = base_us + (index + 1) * 100000
        cloud_header, _ = headers(stamp_us)
        for _ in range(3):
            peer.cloud_pub.publish(array_to_pointcloud2(points, cloud_header))
            if peer.spin_until(lambda: peer.detections_with_stamp(cloud_header.stamp), 10.0):
                break
        (result,) = peer.detections_with_stamp(cloud_header.stamp)[:1]
        assert result.detections == []
    # Just over max_points (kept small: best effort over UDP loses multi-MB messages).
    huge = np.concatenate([frame.points] * (max_points(scene_frames) // len(frame.points) + 1))
    publish_until_processed(peer, SimpleFrame(huge, frame.image), base_us + 300000)
    publish_until_processed(peer, frame, base_us - 3600 * 10**6)  # one hour back in time
    cloud_header, _ = publish_until_processed(peer, frame, base_us - 3600 * 10**6 + 100000)

    assert node_process.poll() is None
    expected_bad = {name: sum(1 for _, _, counter in burst if counter == name) * 2
                    for name in ('bad_clouds', 'bad_images')}

    def counted():
        _, counters = peer.latest_counters()
        if not counters:
            return False
        grew = {name: int(counters[name]) - int(before.get(name, 0)) for name in counters
                if counters[name].isdigit()}
        return (grew['bad_clouds'] >= expected_bad['bad_clouds'] - 2
                and grew['bad_images'] >= expected_bad['bad_images'] - 2
                and grew['empty_clouds'] >= 2 and grew['non_finite_points'] >= 500
                and grew['time_jumps'] >= 1 and grew['points_subsampled'] > 0)
    assert peer.spin_until(counted, 10.0), peer.latest_counters()
    status, counters = peer.latest_counters()
    assert counters['last_error'].startswith('ignoring')  # the last malformed message's reason
    # Still fused after the burst: good images were paired again.
    timing = peer.wait_message('timings', lambda msg: msg.header == cloud_header)
    assert {kv.key: kv.value for kv in timing.status[0].values}['lidar_only'] == 'false'


def test_diagnostics_warn_on_bad_input(peer, scene_frames):
    from diagnostic_msgs.msg import DiagnosticStatus

    frame = scene_frames[0]
    cloud_header, _ = headers(frame.lidar_timestamp_us + 30 * 10**6)
    bad = array_to_pointcloud2(frame.points[:, :3], cloud_header, fields=('x', 'y', 'z'))
    peer.received['diagnostics'] = []
    peer.cloud_pub.publish(bad)

    def warned():
        status, _ = peer.latest_counters()
        return status is not None and status.level == DiagnosticStatus.WARN and (
            'malformed clouds (missing_field' in status.message)
    for _ in range(3):
        if peer.spin_until(warned, 3.0):
            break
        peer.cloud_pub.publish(bad)
    assert warned(), peer.latest_counters()


def set_parameters(peer, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = peer.node.create_client(SetParameters, f'{NODE}/set_parameters')
    try:
        assert client.wait_for_service(timeout_sec=10.0)
        request = SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
        future = client.call_async(request)
        assert peer.spin_until(future.done, 10.0)
        return future.result().results
    finally:
        peer.node.destroy_client(client)


def test_runtime_parameters_are_validated(peer):
    (wrong_count,) = set_parameters(peer, score_thresholds=[0.1, 0.2])
    assert not wrong_count.successful
    assert 'needs 1 or 4 (one per class)' in wrong_count.reason
    (read_only,) = set_parameters(peer, device='cuda')
    assert not read_only.successful and 'read-only' in read_only.reason
    (out_of_range,) = set_parameters(peer, max_image_age_s=-1.0)
    assert not out_of_range.successful
    (accepted,) = set_parameters(peer, score_thresholds=[0.02, 0.03, 0.04, 0.05])
    assert accepted.successful
    # A new threshold republishes the latched LabelInfo.
    assert peer.spin_until(lambda: any(
        msg.threshold == pytest.approx(0.02) and len(msg.class_map) == 4
        for msg in peer.messages('label_info')[1:]), 10.0)


def test_sigterm_stops_the_node_cleanly(node_process, peer):
    node_process.send_signal(signal.SIGTERM)
    exit_code = node_process.wait(timeout=30)
    with open(node_process.log_path) as log:
        text = log.read()
    assert exit_code == 0, text
    assert 'ready: device cpu' in text
    assert 'Traceback' not in text, text


# ------------------------------------------------------------------------------ start-up errors

def weights_with_metadata(source, path, dotted, value):
    """Write ``source``'s tensors to ``path`` with one metadata value changed (dotted path)."""
    import json

    from safetensors.torch import load_file, save_file

    from bev_perception.weights import METADATA_KEY, read_metadata

    document = read_metadata(source)
    keys = [int(key) if key.isdigit() else key for key in dotted.split('.')]
    target = document
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    save_file(load_file(source), str(path), metadata={METADATA_KEY: json.dumps(document)})
    return str(path)


def test_start_up_errors_are_clear(tiny_weights, ros_env, tmp_path):
    corrupt = tmp_path / 'corrupt.safetensors'
    corrupt.write_bytes(b'not a safetensors file at all')
    broken_yaml = tmp_path / 'broken.yaml'
    broken_yaml.write_text('/**:\n  ros__parameters:\n    device: [cpu\n')
    missing_yaml = tmp_path / 'missing.yaml'

    def with_params_file(path):
        command = node_command(tiny_weights[0])
        command[command.index('--params-file') + 1] = str(path)
        return command

    def bad_weights(name, dotted, value):
        path = weights_with_metadata(tiny_weights[0], tmp_path / f'{name}.safetensors', dotted,
                                     value)
        return node_command(path)

    cases = {
        'params_file_missing': (with_params_file(missing_yaml),
                                [f'params file {str(missing_yaml)!r} does not exist']),
        'params_file_not_yaml': (with_params_file(broken_yaml),
                                 [f'params file {str(broken_yaml)!r} is not valid YAML',
                                  'line 4']),
        'weights_directory': (node_command(str(tmp_path)),
                              ['is a directory, not a weights file']),
        'max_objects_0': (bad_weights('zero', 'config.head.max_objects', 0),
                          ['zero.safetensors', 'config.head.max_objects is 0']),
        'max_objects_negative': (bad_weights('negative', 'config.head.max_objects', -1),
                                 ['negative.safetensors', 'config.head.max_objects is -1']),
        'intensity_scale_nan': (bad_weights('nan', 'config.point.intensity_scale', math.nan),
                                ['nan.safetensors', 'config.point.intensity_scale is nan']),
        'palette_300': (bad_weights('palette', 'config.semantic_palette.3', [300, 0, 0]),
                        ['palette.safetensors', 'config.semantic_palette[3] is [300, 0, 0]']),
        'contradiction': (node_command(tiny_weights[0], '-p', 'score_thresholds:=[0.1, 0.2]'),
                          ['parameters contradict the weights', 'score_thresholds has 2 values',
                           'car, truck, pedestrian, cyclist']),
        'corrupt': (node_command(str(corrupt)), ['cannot load weights', str(corrupt)]),
        'range': (node_command(tiny_weights[0], '-p', 'max_image_age_s:=50.0'),
                  ['max_image_age_s']),
    }
    try:
        import message_filters  # noqa: F401
    except ImportError:
        cases['approximate'] = (node_command(tiny_weights[0], '-p', 'sync_policy:=approximate'),
                                ['message_filters', "sync_policy 'lidar_triggered'"])
    names = list(cases)
    for first in range(0, len(names), 4):  # four at a time: each imports torch
        processes = {name: subprocess.Popen(cases[name][0], env=ros_env, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True)
                     for name in names[first:first + 4]}
        try:
            check_start_up_errors(processes, cases)
        finally:
            for process in processes.values():  # a node that started after all: stop it
                if process.poll() is None:
                    process.kill()
                    process.communicate()


def check_start_up_errors(processes, cases):
    """Check that each process ended with exit code 1 and the expected 'cannot start' line."""
    started = time.monotonic()
    for name, process in processes.items():
        try:
            output, _ = process.communicate(
                timeout=max(5.0, 90.0 - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            pytest.fail(f'{name}: the node did not stop on a start-up error')
        assert process.returncode == 1, f'{name}: {output}'
        assert 'Traceback' not in output, f'{name}: {output}'
        assert output.count('cannot start') == 1, f'{name}: {output}'
        for expected in cases[name][1]:
            assert expected in output, f'{name}: {expected!r} not in {output}'
        if name == 'max_objects_negative':
            assert 'max_detections' not in output, output
