"""Two processes exchange vision_msgs and sensor_msgs over real DDS on loopback."""

import os
import signal
import subprocess
import sys

from rclpy.serialization import deserialize_message
from ros_testing import msg_differences, sample_cloud, sample_detections
from sensor_msgs.msg import PointCloud2
from vision_msgs.msg import Detection3DArray

PEER = os.path.join(os.path.dirname(__file__), 'ros_peer.py')


def test_dds_environment_is_local(ros_env):
    assert ros_env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert ros_env['ROS_LOCALHOST_ONLY'] == '1'
    assert 0 < int(ros_env['ROS_DOMAIN_ID']) <= 101


def test_publisher_and_subscriber_processes_round_trip(ros_env, tmp_path):
    env = dict(ros_env, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(__file__)] + [p for p in [ros_env.get('PYTHONPATH')] if p]))
    subscriber = subprocess.Popen([sys.executable, PEER, 'sub', str(tmp_path)], env=env)
    publisher = subprocess.Popen([sys.executable, PEER, 'pub'], env=env)
    try:
        assert subscriber.wait(timeout=60) == 0
    finally:
        publisher.send_signal(signal.SIGINT)
        try:
            publisher.wait(timeout=10)
        except subprocess.TimeoutExpired:
            publisher.kill()
        if subscriber.poll() is None:
            subscriber.kill()

    detections = deserialize_message(
        (tmp_path / 'detections.cdr').read_bytes(), Detection3DArray)
    cloud = deserialize_message((tmp_path / 'cloud.cdr').read_bytes(), PointCloud2)
    assert msg_differences(sample_detections(), detections) == []
    assert msg_differences(sample_cloud(), cloud) == []
    # Spot checks that the comparison saw real content.
    assert [d.results[0].hypothesis.class_id for d in detections.detections] == [
        'car', 'pedestrian']
    assert cloud.width == 1000 and len(cloud.data) == 16000


def test_msg_differences_reports_the_differing_field():
    expected, actual = sample_detections(), sample_detections()
    actual.detections[1].bbox.size.z = 9.0
    assert msg_differences(expected, actual) == [
        'msg.detections[1].bbox.size.z: 2.5 != 9.0']
