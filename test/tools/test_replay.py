"""The replay module: environment, node command, stopping a node, play-record-drain over DDS.

A stand-in node (a few lines of rclpy in a child process) answers every cloud with an empty
Detection3DArray carrying the cloud's header, so the replay is tested without the network.
"""

import os
import signal
import subprocess
import sys
import textwrap

from bev_perception.bag_io import BagReader, BagWriter, POINTCLOUD_TYPE
from bev_perception.tools import replay
import numpy as np
from ros_testing import wait_until

#: Answers each cloud on ~/input/pointcloud with detections; exits with code 3 on SIGINT.
STAND_IN_NODE = textwrap.dedent("""
    import sys
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from vision_msgs.msg import Detection3DArray
    rclpy.init()
    node = rclpy.create_node('perception_node')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(Detection3DArray, '~/output/detections', qos)
    node.create_subscription(
        PointCloud2, '~/input/pointcloud',
        lambda cloud: publisher.publish(Detection3DArray(header=cloud.header)), qos)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    sys.exit(3)
""")

CLOUD_TOPIC = '/replay_test/points'


def test_local_dds_env_and_node_command():
    assert replay.local_dds_env(7) == {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
                                       'ROS_LOCALHOST_ONLY': '1', 'ROS_DOMAIN_ID': '7'}
    assert 1 <= replay.default_domain_id() <= 100
    command = replay.node_command(
        {'use_sim_time': True, 'score_thresholds': [0.1, 0.2], 'intensity_field': '1',
         'weights_path': '/w/x.safetensors'}, 'params.yaml', {'~/input/pointcloud': '/points'})
    executable = command[:command.index('--ros-args')]
    assert (os.path.basename(executable[0]) == 'perception_node'
            or executable[1:] == ['-m', 'bev_perception.node'])
    assert command[len(executable) + 1:] == [
        '-r', '~/input/pointcloud:=/points', '--params-file', 'params.yaml',
        '-p', 'use_sim_time:=true', '-p', 'score_thresholds:=[0.1,0.2]',
        '-p', "intensity_field:='1'", '-p', 'weights_path:=/w/x.safetensors']


def test_stop_node_returns_the_exit_code_and_escalates_to_sigterm():
    done = subprocess.Popen([sys.executable, '-c', 'import sys; sys.exit(5)'])
    done.wait(timeout=30)
    assert replay.stop_node(done) == 5
    stubborn = subprocess.Popen(
        [sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGINT, '
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == 'ready'
    assert replay.stop_node(stubborn, timeout_s=0.5) == -signal.SIGTERM
    stubborn.stdout.close()


def test_replay_publishes_records_drains_and_stops(tmp_path):
    stamps = [1_533_652_238_000_000_000 + index * 100_000_000 for index in range(5)]
    points = np.zeros(10, dtype=[('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4')])
    with BagWriter(tmp_path / 'input') as writer:
        writer.add_topic(CLOUD_TOPIC, POINTCLOUD_TYPE)
        for stamp in stamps:
            writer.write(CLOUD_TOPIC, stamp, writer.factory.pointcloud(stamp, 'lidar', points))
    process = replay.NodeProcess([sys.executable, '-c', STAND_IN_NODE],
                                 str(tmp_path / 'node.log'))
    session = replay.RosSession('replay_test_player')
    try:
        with BagReader(tmp_path / 'input') as bag, BagWriter(
                tmp_path / 'outputs', typestore=bag.typestore) as writer:
            recorder = replay.OutputRecorder(session.node, writer, ('detections',))
            publishers = replay.bag_publishers(
                session.node, bag, {CLOUD_TOPIC: '/perception_node/input/pointcloud'})
            assert replay.wait_for_node(session.node, list(publishers.values()),
                                        recorder.topics['detections'], process, 60.0), \
                process.tail()
            played = replay.play(bag, publishers, 4.0, CLOUD_TOPIC, process=process)
            replay.drain(recorder, played.cloud_stamps, 10.0, process)
            recorder.stop_recording()
    finally:
        exit_code = process.stop()
        session.close()
    assert exit_code == 3, process.tail()
    assert played.cloud_stamps == stamps and sorted(played.publish_s) == stamps
    assert wait_until(lambda: sorted(recorder.received_s) == stamps, 0.1)
    assert recorder.topics == {'detections': '/perception_node/output/detections'}
    with BagReader(tmp_path / 'outputs') as outputs:
        assert outputs.message_counts == {'/perception_node/output/detections': len(stamps)}
