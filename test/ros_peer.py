"""A stand-alone ROS peer process for the DDS round-trip test (not a test module).

Usage: ``ros_peer.py pub`` publishes the sample messages until interrupted;
``ros_peer.py sub OUT_DIR`` receives one of each and writes them serialised to OUT_DIR.
"""

import os
import sys

import rclpy
from rclpy.serialization import serialize_message
from ros_testing import sample_cloud, sample_detections
from sensor_msgs.msg import PointCloud2
from vision_msgs.msg import Detection3DArray

TOPICS = {'detections': Detection3DArray, 'cloud': PointCloud2}


def publish() -> None:
    """Publish the sample messages at 10 Hz until killed."""
    node = rclpy.create_node('roundtrip_publisher')
    messages = {'detections': sample_detections(), 'cloud': sample_cloud()}
    publishers = {name: node.create_publisher(kind, f'roundtrip/{name}', 10)
                  for name, kind in TOPICS.items()}

    def tick():
        for name, publisher in publishers.items():
            publisher.publish(messages[name])

    node.create_timer(0.1, tick)
    rclpy.spin(node)


def subscribe(out_dir: str) -> None:
    """Receive one message per topic, write each serialised, then exit."""
    node = rclpy.create_node('roundtrip_subscriber')
    received = {}

    def keep(name):
        return lambda msg: received.setdefault(name, msg)

    subscriptions = [node.create_subscription(kind, f'roundtrip/{name}', keep(name), 10)
                     for name, kind in TOPICS.items()]
    while len(received) < len(TOPICS):
        rclpy.spin_once(node, timeout_sec=0.1)
    for name, msg in received.items():
        with open(os.path.join(out_dir, name + '.cdr'), 'wb') as handle:
            handle.write(serialize_message(msg))
    del subscriptions
    node.destroy_node()


def main() -> None:
    """Run the role given on the command line."""
    rclpy.init()
    try:
        if sys.argv[1] == 'pub':
            publish()
        else:
            subscribe(sys.argv[2])
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
