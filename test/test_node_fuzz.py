"""Fuzzing the perception node over real DDS: malformed, odd and hostile input to one node.

One ``perception_node`` process (module scope: tiny random weights, CPU, the shipped params file)
receives a table of cases. Each case publishes its messages (a malformed or odd cloud, image or
stamp, usually with a good counterpart), then one good frame, and checks:

* the node is alive and has printed no traceback;
* the counters on ``/diagnostics`` moved as the case says: its rejection counter
  (``bad_cloud_<reason>`` / ``bad_image_<reason>``) by exactly one per bad message, no other
  rejection counter, never ``inference_errors``;
* the case's own cloud, when it has one, gives what it should: the fused or the LiDAR-only
  detections of the good frame (compared with the references taken at the start), none, or
  just a result;
* the good frame after it still gives exactly the fused reference detections.

At the end every rejection reason met must have been warned about with its topic and stamp.
"""

import os
import shutil
import subprocess
import sys
import time

from bev_perception.conversions import (array_to_pointcloud2, CLOUD_REJECTIONS,
                                        IMAGE_REJECTIONS, rgb_to_image,
                                        structured_to_pointcloud2)
from bev_perception.tools.replay import stop_node
from model_testing import write_tiny_weights
import numpy as np
import pytest
from ros_testing import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS_FILE = os.path.join(ROOT, 'config', 'perception.yaml')
NODE = '/fuzz_perception_node'
CLOUD_TOPIC = '/fuzz_sensors/points'
IMAGE_TOPIC = '/fuzz_sensors/image'
CLOUD_FRAME = 'fuzz_lidar'
IMAGE_FRAME = 'fuzz_camera'
SCORE_THRESHOLD = 0.02  # random tiny weights score about 0.1: many detections
DIAGNOSTICS_PERIOD_S = 0.2
MAX_IMAGE_WAIT_S = 0.3
IMAGE_OFFSET_S = 0.05  # the params file's image_time_offset_s
BASE_STAMP_S = 1_700_000_000  # stamps of case i: BASE_STAMP_S + 10 i (+ 5 for its good frame)
FAR_AHEAD_S = 10_000_000
BOX_TOLERANCE = 1e-4


# ------------------------------------------------------------------------------ the good frame

def good_points():
    """Return (N, 4) float32 points in the tiny grid: ground, three box-like clusters, noise.

    Intensities are whole numbers, so uint8 and float64 copies of the cloud are exact.
    """
    rng = np.random.default_rng(14)
    ground = np.column_stack([rng.uniform(0.5, 9.5, 1500), rng.uniform(-4.0, 4.3, 1500),
                              rng.normal(-1.8, 0.02, 1500)])
    clusters = [np.column_stack([rng.uniform(cx - 2.0, cx + 2.0, 400),
                                 rng.uniform(cy - 0.9, cy + 0.9, 400),
                                 rng.uniform(-1.8, -0.3, 400)])
                for cx, cy in ((4.0, 1.5), (7.5, -2.0), (2.5, -2.5))]
    noise = rng.uniform([0.0, -4.16, -3.0], [9.9, 4.4, 2.0], (300, 3))
    xyz = np.concatenate([ground] + clusters + [noise])
    intensity = rng.integers(0, 256, len(xyz)).astype(np.float64)
    return np.column_stack([xyz, intensity]).astype(np.float32)  # (N, 4)


def good_rgb():
    """Return an odd-sized (85, 131, 3) uint8 image with structure (gradients and blocks)."""
    rows, cols = np.mgrid[0:85, 0:131]
    rgb = np.stack([rows * 3 % 256, cols * 2 % 256, (rows + cols) % 256], axis=2)
    rgb[20:50, 30:70] = (200, 30, 30)
    return rgb.astype(np.uint8)


POINTS = good_points()
RGB = good_rgb()


def header(stamp_s, frame_id=CLOUD_FRAME):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    nanoseconds = int(round(stamp_s * 1e9))
    return Header(stamp=Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9),
                  frame_id=frame_id)


def cloud(stamp_s, points=POINTS):
    """Return the little-endian float32 x, y, z, intensity cloud of ``points``."""
    return array_to_pointcloud2(points, header(stamp_s))


def image(stamp_s, rgb=RGB, encoding='rgb8'):
    """Return the camera image stamped ``stamp_s`` + the expected camera offset."""
    return rgb_to_image(rgb, header(stamp_s + IMAGE_OFFSET_S, IMAGE_FRAME), encoding)


def structured_cloud(stamp_s, dtype, points=POINTS, shape=None):
    """Return POINTS in another point layout (dtype with x, y, z, intensity; maybe 2-D)."""
    values = np.zeros(len(points), dtype=dtype)
    for column, name in enumerate(('x', 'y', 'z', 'intensity')):
        values[name] = points[:, column]
    if shape is not None:
        values = values.reshape(shape)
    return structured_to_pointcloud2(values, header(stamp_s))


def edited(msg, **changes):
    """Return ``msg`` with attributes replaced (data given as bytes)."""
    import array

    for name, value in changes.items():
        setattr(msg, name, array.array('B', value) if name == 'data' else value)
    return msg


def padded_rows(msg, padding):
    """Return an organised cloud with ``padding`` garbage bytes after every row."""
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.row_step)
    garbage = np.full((msg.height, padding), 0xAB, np.uint8)
    return edited(msg, row_step=msg.row_step + padding,
                  data=np.concatenate([rows, garbage], axis=1).tobytes())


# ------------------------------------------------------------------------------ the table

def with_fields(stamp_s, fields):
    """Return the good cloud with its PointField list replaced by (name, offset, type, count)."""
    from sensor_msgs.msg import PointField

    return edited(cloud(stamp_s), fields=[
        PointField(name=name, offset=offset, datatype=datatype, count=count)
        for name, offset, datatype, count in fields])


F32 = 7  # PointField.FLOAT32
XYZI = [('x', 0, F32, 1), ('y', 4, F32, 1), ('z', 8, F32, 1), ('intensity', 12, F32, 1)]


def replace_field(index, **changes):
    fields = [list(field) for field in XYZI]
    for key, value in changes.items():
        fields[index][('name', 'offset', 'datatype', 'count').index(key)] = value
    return [tuple(field) for field in fields]


def nan_inf_points():
    points = POINTS.copy()
    bad = np.full((100, 4), np.nan, np.float32)
    bad[50:, 0] = np.inf
    bad[50:, 1:] = 1.0
    return np.insert(points, np.arange(0, 2000, 20), bad, axis=0)


class Case:
    """One row of the table.

    Args:
        name: test id.
        publish: stamp -> [('cloud' | 'image', message)], published in order.
        counters: counters that must grow, by at least this much (``bad_*`` by exactly this).
        outcome: what the case's cloud (stamped ``stamp``) gives: 'fused' / 'lidar_only' (the
            reference detections), 'empty' (no detections), 'any' (a result), or None (the
            cloud is refused or there is none).
        cloud_stamp: stamp -> the stamp of the case's cloud, when it is not ``stamp``.
    """

    def __init__(self, name, publish, counters=None, outcome=None, cloud_stamp=None):
        self.name = name
        self.publish = publish
        self.counters = dict(counters or {})
        self.outcome = outcome
        self.cloud_stamp = cloud_stamp or (lambda stamp: stamp)


def bad_cloud(name, reason, make):
    return Case(f'cloud_{name}', lambda s: [('cloud', make(s))],
                {'bad_clouds': 1, f'bad_cloud_{reason}': 1})


def bad_image(name, reason, make):
    """Return the case of a refused image with a good cloud (which runs LiDAR-only)."""
    return Case(f'image_{name}', lambda s: [('image', make(s)), ('cloud', cloud(s))],
                {'bad_images': 1, f'bad_image_{reason}': 1, 'lidar_only_frames': 1},
                'lidar_only')


def odd_cloud(name, make, counters=None, outcome='fused'):
    """Return the case of a valid cloud in an unusual form, with the good image."""
    return Case(f'cloud_{name}', lambda s: [('image', image(s)), ('cloud', make(s))],
                dict(counters or {'fused_frames': 1}), outcome)


def odd_image(name, make, outcome='fused'):
    return Case(f'image_{name}', lambda s: [('image', make(s)), ('cloud', cloud(s))],
                {'fused_frames': 1}, outcome)


def empty_image(height, width):
    def make(stamp_s):
        msg = image(stamp_s)
        return edited(msg, height=height, width=width, step=3 * width, data=b'')
    return make


CASES = [
    # Clouds the node must refuse (warn, count, skip).
    bad_cloud('without_intensity', 'missing_field', lambda s: array_to_pointcloud2(
        POINTS[:, :3], header(s), fields=('x', 'y', 'z'))),
    bad_cloud('without_x', 'missing_field', lambda s: with_fields(s, XYZI[1:])),
    bad_cloud('without_fields', 'missing_field', lambda s: with_fields(s, [])),
    bad_cloud('two_x_fields', 'duplicate_field', lambda s: with_fields(
        s, XYZI + [('x', 12, F32, 1)])),
    bad_cloud('two_intensity_fields', 'duplicate_field', lambda s: with_fields(
        s, [('intensity', 0, F32, 1)] + XYZI)),
    bad_cloud('datatype_0', 'unknown_datatype', lambda s: with_fields(
        s, replace_field(0, datatype=0))),
    bad_cloud('datatype_9', 'unknown_datatype', lambda s: with_fields(
        s, replace_field(1, datatype=9))),
    bad_cloud('datatype_255', 'unknown_datatype', lambda s: with_fields(
        s, replace_field(3, datatype=255))),
    bad_cloud('count_0', 'field_count', lambda s: with_fields(s, replace_field(0, count=0))),
    bad_cloud('count_3', 'field_count', lambda s: with_fields(s, replace_field(2, count=3))),
    bad_cloud('offset_past_point_step', 'field_offset', lambda s: with_fields(
        s, replace_field(3, offset=14))),
    bad_cloud('point_step_0', 'point_step', lambda s: edited(cloud(s), point_step=0)),
    bad_cloud('point_step_too_small', 'field_offset', lambda s: edited(
        cloud(s), point_step=8, row_step=8 * len(POINTS))),
    bad_cloud('row_step_too_small', 'row_step', lambda s: edited(cloud(s), row_step=15)),
    bad_cloud('data_short', 'data_size', lambda s: edited(
        cloud(s), data=bytes(cloud(s).data)[:-7])),
    bad_cloud('data_long', 'data_size', lambda s: edited(
        cloud(s), data=bytes(cloud(s).data) + bytes(16))),
    bad_cloud('huge_width', 'data_size', lambda s: edited(
        cloud(s), width=10**8, row_step=16 * 10**8)),
    bad_cloud('huge_width_short_row_step', 'row_step', lambda s: edited(
        cloud(s), width=2**32 - 1)),
    bad_cloud('huge_height', 'data_size', lambda s: edited(cloud(s), height=10**6)),
    # Valid clouds in unusual layouts: the same detections as the good frame.
    odd_cloud('big_endian', lambda s: structured_cloud(s, np.dtype(
        [('x', '>f4'), ('y', '>f4'), ('z', '>f4'), ('intensity', '>f4')]))),
    odd_cloud('driver_layout', lambda s: structured_cloud(s, np.dtype({
        'names': ['intensity', 'x', 'y', 'z'], 'formats': ['u1', '<f8', '<f4', '<f4'],
        'offsets': [0, 8, 16, 20], 'itemsize': 32}))),
    odd_cloud('organised_padded_rows', lambda s: padded_rows(structured_cloud(
        s, np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4')]),
        shape=(3, -1)), 24)),
    odd_cloud('nan_and_inf_points', lambda s: cloud(s, nan_inf_points()),
              {'non_finite_points': 100, 'fused_frames': 1}),
    odd_cloud('all_nan', lambda s: cloud(s, np.full((500, 4), np.nan, np.float32)),
              {'empty_clouds': 1, 'non_finite_points': 500}, 'empty'),
    odd_cloud('no_points', lambda s: cloud(s, np.zeros((0, 4), np.float32)),
              {'empty_clouds': 1}, 'empty'),
    odd_cloud('far_out_of_range', lambda s: cloud(s, POINTS * [1e6, 1e6, 1e6, 1]),
              {'points_out_of_range': len(POINTS), 'fused_frames': 1}, 'any'),
    # Images the node must refuse: the cloud still gets its boxes, LiDAR-only.
    bad_image('0x0', 'empty', empty_image(0, 0)),
    bad_image('0x0_again', 'empty', empty_image(0, 0)),
    bad_image('0x0_once_more', 'empty', empty_image(0, 0)),
    bad_image('height_0', 'empty', empty_image(0, RGB.shape[1])),
    bad_image('width_0', 'empty', empty_image(RGB.shape[0], 0)),
    *[bad_image(f'encoding_{encoding or "empty"}', 'encoding',
                lambda s, encoding=encoding: edited(image(s), encoding=encoding))
      for encoding in ('yuv422', '', '16UC1', '32FC1', 'bayer_rggb8', 'jpeg')],
    bad_image('step_too_short', 'step', lambda s: edited(image(s), step=3 * RGB.shape[1] - 1)),
    bad_image('data_short', 'data_size', lambda s: edited(
        image(s), data=bytes(image(s).data)[:-1])),
    bad_image('data_long', 'data_size', lambda s: edited(
        image(s), data=bytes(image(s).data) + bytes(3 * RGB.shape[1]))),
    bad_image('huge_width', 'step', lambda s: edited(image(s), width=10**7)),
    bad_image('huge_height', 'data_size', lambda s: edited(image(s), height=10**7)),
    # Valid images in unusual forms.
    odd_image('bgr8', lambda s: image(s, RGB, 'bgr8')),
    odd_image('rgba8_padded_rows', lambda s: edited(
        image(s, np.pad(RGB, ((0, 0), (0, 5), (0, 0))), 'rgba8'), width=RGB.shape[1])),
    odd_image('big_endian_flag', lambda s: edited(image(s), is_bigendian=True)),
    odd_image('upper_case_encoding', lambda s: edited(image(s), encoding='RGB8')),
    odd_image('mono8', lambda s: image(s, RGB[:, :, 0], 'mono8'), outcome='any'),
    odd_image('1x1', lambda s: image(s, RGB[:1, :1]), outcome='any'),
    odd_image('1x2000', lambda s: image(s, np.resize(RGB, (1, 2000, 3))), outcome='any'),
    # Stamps that jump: pairing resets and recovers.
    Case('stamps_one_hour_back', lambda s: [('cloud', cloud(s - 3600)),
                                            ('image', image(s - 3600))],
         {'time_jumps': 1, 'fused_frames': 1}, 'fused', lambda s: s - 3600),
    Case('stamps_far_ahead', lambda s: [('cloud', cloud(s + FAR_AHEAD_S)),
                                        ('image', image(s + FAR_AHEAD_S))],
         {'time_jumps': 1, 'fused_frames': 1}, 'fused', lambda s: s + FAR_AHEAD_S),
    Case('image_far_ahead', lambda s: [('image', image(s + FAR_AHEAD_S)), ('cloud', cloud(s))],
         {'time_jumps': 1, 'lidar_only_frames': 1}, 'lidar_only'),
    Case('cloud_far_ahead', lambda s: [('cloud', cloud(s + FAR_AHEAD_S)), ('image', image(s))],
         {'time_jumps': 1, 'lidar_only_frames': 1}, 'lidar_only', lambda s: s + FAR_AHEAD_S),
    Case('stamps_at_zero', lambda s: [('cloud', cloud(0.0)), ('image', image(0.0))],
         {'time_jumps': 1, 'fused_frames': 1}, 'fused', lambda s: 0.0),
    Case('stamps_back_again', lambda s: [('cloud', cloud(s - 3600)),
                                         ('image', image(s - 3600))],
         {'time_jumps': 1, 'fused_frames': 1}, 'fused', lambda s: s - 3600),
]


def test_the_table_covers_every_rejection_reason():
    met = {name for case in CASES for name in case.counters}
    assert {f'bad_cloud_{reason}' for reason in CLOUD_REJECTIONS} <= met
    assert {f'bad_image_{reason}' for reason in IMAGE_REJECTIONS} <= met
    assert len({case.name for case in CASES}) == len(CASES)


# ------------------------------------------------------------------------------ node and peer

@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory):
    """Write random weights of the tiny model config; return the path."""
    path = tmp_path_factory.mktemp('fuzz_weights') / 'tiny_random.safetensors'
    write_tiny_weights(path, seed=14)
    return str(path)


@pytest.fixture(scope='module')
def node_process(tiny_weights, ros_env, tmp_path_factory):
    executable = shutil.which('perception_node', path=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get('PATH', '')]))
    assert executable, 'perception_node console script not installed (run make setup)'
    log_path = tmp_path_factory.mktemp('fuzz_node_log') / 'node.log'
    command = [
        executable, '--ros-args', '-r', f'__node:={NODE[1:]}',
        '--params-file', PARAMS_FILE, '-p', f'weights_path:={tiny_weights}',
        '-p', 'device:=cpu', '-p', 'cpu_threads:=1',
        '-p', f'score_thresholds:=[{SCORE_THRESHOLD}]',
        '-p', f'max_image_wait_s:={MAX_IMAGE_WAIT_S}',
        '-p', f'diagnostics_period_s:={DIAGNOSTICS_PERIOD_S}',
        '-r', f'~/input/pointcloud:={CLOUD_TOPIC}', '-r', f'~/input/image:={IMAGE_TOPIC}']
    with open(log_path, 'w') as log:
        process = subprocess.Popen(command, env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log_path
    yield process
    stop_node(process)


def node_log(process):
    with open(process.log_path, errors='replace') as log:
        return log.read()


class Peer:
    """The test's node: publishers to the node's inputs, subscriptions to what is checked."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, PointCloud2
        from vision_msgs.msg import Detection3DArray

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('fuzz_peer', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.publishers = {
            'cloud': self.node.create_publisher(PointCloud2, CLOUD_TOPIC,
                                                qos_profile_sensor_data),
            'image': self.node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)}
        self.detections = {}  # (sec, nanosec) -> Detection3DArray
        self.diagnostics = []  # (monotonic receive time, {key: value})
        self.subscriptions = [
            self.node.create_subscription(Detection3DArray, f'{NODE}/output/detections',
                                          self._on_detections, 10),
            self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                          self._on_diagnostics, 10)]

    def _on_detections(self, msg):
        self.detections[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith(NODE[1:]):
                self.diagnostics.append(
                    (time.monotonic(), {kv.key: kv.value for kv in status.values}))

    def spin_until(self, predicate, timeout_s):
        def spun():
            self.executor.spin_once(timeout_sec=0.01)
            return predicate()
        return wait_until(spun, timeout_s, poll_s=0.0)

    def publish(self, messages):
        for kind, msg in messages:
            self.publishers[kind].publish(msg)
            self.spin_until(lambda: False, 0.005)

    def fresh_counters(self, timeout_s=5.0):
        """Return integer counters from a diagnostics report computed after this call."""
        since = time.monotonic() + 1.5 * DIAGNOSTICS_PERIOD_S  # skip one already in flight
        assert self.spin_until(lambda: self.diagnostics and self.diagnostics[-1][0] > since,
                               timeout_s), 'no diagnostics from the node'
        return {key: int(value) for key, value in self.diagnostics[-1][1].items()
                if value.isdigit()}

    def result(self, stamp_s, timeout_s):
        key = (header(stamp_s).stamp.sec, header(stamp_s).stamp.nanosec)
        self.spin_until(lambda: key in self.detections, timeout_s)
        return self.detections.get(key)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def boxes_of(msg):
    """Return the detections of a Detection3DArray as (class, score, x, y, z, l, w, h, qz, qw)."""
    rows = []
    for detection in msg.detections:
        hypothesis, box = detection.results[0].hypothesis, detection.bbox
        rows.append((hypothesis.class_id, hypothesis.score, box.center.position.x,
                     box.center.position.y, box.center.position.z, box.size.x, box.size.y,
                     box.size.z, box.center.orientation.z, box.center.orientation.w))
    return sorted(rows, key=lambda row: (-row[1], row[0], row[2]))


def same_boxes(actual, expected):
    return len(actual) == len(expected) and all(
        a[0] == e[0] and np.allclose(a[1:], e[1:], atol=BOX_TOLERANCE)
        for a, e in zip(actual, expected))


@pytest.fixture(scope='module')
def peer(node_process):
    peer = Peer()
    connected = peer.spin_until(lambda: all(
        publisher.get_subscription_count() > 0 for publisher in peer.publishers.values())
        and node_process.poll() is None, timeout_s=90.0)
    if not connected:
        pytest.fail('the node did not subscribe within 90 s; its log:\n'
                    + node_log(node_process)[-3000:])
    yield peer
    peer.close()


def publish_until_result(peer, messages, stamp_s, timeout_s=5.0, attempts=3):
    """Publish until the cloud stamped ``stamp_s`` gives detections (best effort may lose)."""
    for _ in range(attempts):
        peer.publish(messages)
        result = peer.result(stamp_s, timeout_s)
        if result is not None:
            return result
    return None


@pytest.fixture(scope='module')
def references(peer, node_process):
    """Return the fused and LiDAR-only detections of the good frame, taken twice each."""
    stamps = [BASE_STAMP_S - 40, BASE_STAMP_S - 30]
    fused = [publish_until_result(peer, [('cloud', cloud(s)), ('image', image(s))], s)
             for s in stamps]
    lidar_only = [publish_until_result(peer, [('cloud', cloud(s))], s)
                  for s in (BASE_STAMP_S - 20, BASE_STAMP_S - 10)]
    log = node_log(node_process)
    assert None not in fused + lidar_only, 'no detections for the good frame:\n' + log[-3000:]
    fused, lidar_only = [boxes_of(msg) for msg in fused], [boxes_of(msg) for msg in lidar_only]
    assert fused[0] and lidar_only[0], 'the good frame gives no detections'
    assert same_boxes(fused[1], fused[0]) and same_boxes(lidar_only[1], lidar_only[0]), (
        'the same frame gave different detections twice')
    assert not same_boxes(fused[0], lidar_only[0]), 'fusion changes nothing: a useless check'
    return {'fused': fused[0], 'lidar_only': lidar_only[0]}


# ------------------------------------------------------------------------------ the fuzz test

@pytest.mark.parametrize('case', CASES, ids=[case.name for case in CASES])
def test_node_survives_and_counts(case, peer, node_process, references):
    index = CASES.index(case)
    stamp = BASE_STAMP_S + 10.0 * index
    before = peer.fresh_counters()
    messages = case.publish(stamp)
    if case.outcome is None:
        peer.publish(messages)
    else:
        result = publish_until_result(peer, messages, case.cloud_stamp(stamp),
                                      timeout_s=MAX_IMAGE_WAIT_S + 5.0)
        assert result is not None, f"no result for the case's cloud:\n{node_log(node_process)}"
        if case.outcome == 'empty':
            assert result.detections == []
        elif case.outcome in references:
            assert same_boxes(boxes_of(result), references[case.outcome]), (
                f"the case's cloud did not give the {case.outcome} detections of the good "
                'frame')
    good_stamp = stamp + 5.0
    good = publish_until_result(peer, [('cloud', cloud(good_stamp)), ('image', image(good_stamp))],
                                good_stamp)
    assert node_process.poll() is None, f'the node died:\n{node_log(node_process)[-3000:]}'
    assert good is not None, f'no detections for the good frame:\n{node_log(node_process)}'
    assert same_boxes(boxes_of(good), references['fused']), (
        'the good frame after the case gave other detections than at the start')

    def grown():
        counters = peer.fresh_counters()
        return all(counters.get(name, 0) - before.get(name, 0) >= increase
                   for name, increase in case.counters.items()), counters

    deadline = time.monotonic() + 5.0
    ok, after = grown()
    while not ok and time.monotonic() < deadline:
        ok, after = grown()
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert ok, f'counters did not grow as expected: {case.counters}; grew: ' + str(
        {name: value for name, value in delta.items() if value})
    rejections = {name: value for name, value in delta.items()
                  if name.startswith('bad_') and value}
    assert rejections == {name: value for name, value in case.counters.items()
                          if name.startswith('bad_')}, rejections
    assert delta['inference_errors'] == 0
    assert 'Traceback' not in node_log(node_process)


def test_every_rejection_was_warned_about_with_topic_and_stamp(peer, node_process):
    log = node_log(node_process)
    for case in CASES:
        for name in case.counters:
            if not name.startswith(('bad_cloud_', 'bad_image_')):
                continue
            topic = CLOUD_TOPIC if name.startswith('bad_cloud_') else IMAGE_TOPIC
            lines = [line for line in log.splitlines() if line.endswith(f'[{name}]')]
            assert lines, f'no warning for {name}'
            assert all(f'on {topic} (stamp ' in line for line in lines), lines
    assert 'Traceback' not in log
