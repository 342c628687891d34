"""Helpers for tests that use real ROS messages and real DDS (not a test module)."""

import array
import math
import os
import time
from typing import Callable, List, Tuple

import numpy as np


def msg_differences(expected, actual, path: str = 'msg') -> List[str]:
    """Compare two ROS messages field by field; return 'path: expected != actual' lines."""
    if hasattr(expected, 'get_fields_and_field_types'):
        if type(expected) is not type(actual):
            return [f'{path}: type {type(expected).__name__} != {type(actual).__name__}']
        diffs = []
        for field in expected.get_fields_and_field_types():
            diffs += msg_differences(
                getattr(expected, field), getattr(actual, field), f'{path}.{field}')
        return diffs
    if isinstance(expected, (list, tuple, array.array, np.ndarray)):
        expected_items, actual_items = list(expected), list(actual)
        if len(expected_items) != len(actual_items):
            return [f'{path}: length {len(expected_items)} != {len(actual_items)}']
        diffs = []
        for index, (left, right) in enumerate(zip(expected_items, actual_items)):
            diffs += msg_differences(left, right, f'{path}[{index}]')
        return diffs
    if isinstance(expected, float) and math.isnan(expected):
        both_nan = isinstance(actual, float) and math.isnan(actual)
        return [] if both_nan else [f'{path}: nan != {actual}']
    return [] if expected == actual else [f'{path}: {expected!r} != {actual!r}']


def write_scene_bag(base, frames: int, seed: int) -> Tuple[str, str]:
    """Generate one small synthetic A2D2 scene under ``base``; return (its root, mcap bag)."""
    from training.synthetic import generate
    from training.to_bag import convert_scene

    root, bag = os.path.join(base, 'a2d2'), os.path.join(base, 'scene_bag')
    scene = generate(root, scenes=1, frames=frames, seed=seed, image_size=(192, 120)).scenes[0]
    convert_scene(root, scene, bag, storage='mcap', progress=False)
    return root, bag


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll predicate until it is true or timeout_s passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


def sample_detections():
    """Return a deterministic Detection3DArray with two detections."""
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
    from std_msgs.msg import Header
    from vision_msgs.msg import (BoundingBox3D, Detection3D, Detection3DArray,
                                 ObjectHypothesis, ObjectHypothesisWithPose)
    from builtin_interfaces.msg import Time

    header = Header(stamp=Time(sec=1533652238, nanosec=123456789), frame_id='lidar_top')
    detections = []
    for index, (name, score, x, yaw) in enumerate(
            [('car', 0.91, 12.5, 0.3), ('pedestrian', 0.47, 7.25, -3.1)]):
        orientation = Quaternion(z=math.sin(yaw / 2), w=math.cos(yaw / 2))
        pose = Pose(position=Point(x=x, y=-1.5 * index, z=-0.9), orientation=orientation)
        hypothesis = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=name, score=score))
        hypothesis.pose.pose = pose
        hypothesis.pose.covariance[0] = 0.25
        detections.append(Detection3D(
            header=header, results=[hypothesis], id=f'track-{index}',
            bbox=BoundingBox3D(center=pose, size=Vector3(x=4.5, y=1.8, z=1.5 + index))))
    return Detection3DArray(header=header, detections=detections)


def sample_cloud():
    """Return a deterministic PointCloud2: float32 x, y, z, uint8 intensity, padded points."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    dtype = np.dtype({'names': ['x', 'y', 'z', 'intensity'],
                      'formats': ['<f4', '<f4', '<f4', 'u1'],
                      'offsets': [0, 4, 8, 12], 'itemsize': 16})
    rng = np.random.default_rng(7)
    points = np.zeros(1000, dtype=dtype)
    for name in ('x', 'y', 'z'):
        points[name] = rng.uniform(-50, 50, len(points)).astype(np.float32)
    points['intensity'] = rng.integers(0, 256, len(points), dtype=np.uint8)
    fields = [PointField(name=name, offset=offset, datatype=datatype, count=1)
              for name, offset, datatype in (('x', 0, PointField.FLOAT32),
                                             ('y', 4, PointField.FLOAT32),
                                             ('z', 8, PointField.FLOAT32),
                                             ('intensity', 12, PointField.UINT8))]
    return PointCloud2(
        header=Header(stamp=Time(sec=1533652238, nanosec=100000000), frame_id='lidar_top'),
        height=1, width=len(points), fields=fields, is_bigendian=False,
        point_step=dtype.itemsize, row_step=dtype.itemsize * len(points),
        data=points.tobytes(), is_dense=True)
