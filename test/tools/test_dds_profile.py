"""The shipped Fast DDS profile carries full-size camera images between two real processes.

Without it, Fast DDS sends a 1920x1208 rgb8 image (7 MB) as fragmented UDP datagrams even on
one machine, and with best-effort QoS a lost fragment loses the image. With the profile the
images go through a 32 MB shared-memory segment: the test publishes them best effort and
expects nearly all to arrive. Discovery stays loopback-only (conftest's environment).
"""

import filecmp
import os
import subprocess
import sys
import textwrap

from bev_perception.tools.replay import (FASTDDS_PROFILE_NAME, fastdds_profile_path,
                                         FASTDDS_PROFILE_VARIABLES, large_message_dds_env)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = 20

SUBSCRIBER = textwrap.dedent("""
    import sys, time
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node('profile_test_subscriber')
    sizes = []
    node.create_subscription(Image, 'profile_test/image', lambda m: sizes.append(len(m.data)),
                             qos_profile_sensor_data)
    print('ready', flush=True)
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline and len(sizes) < int(sys.argv[2]):
        rclpy.spin_once(node, timeout_sec=0.05)
    print('received', len(sizes), min(sizes, default=0), flush=True)
""")

PUBLISHER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from bev_perception.conversions import rgb_to_image
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    rclpy.init()
    node = rclpy.create_node('profile_test_publisher')
    publisher = node.create_publisher(Image, 'profile_test/image', qos_profile_sensor_data)
    rgb = np.random.default_rng(0).integers(0, 256, (1208, 1920, 3), dtype=np.uint8)
    message = rgb_to_image(rgb, Header(frame_id='camera'))
    deadline = time.monotonic() + 20.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # discovery in both directions
    for _ in range(int(sys.argv[1])):
        publisher.publish(message)
        time.sleep(0.1)
    time.sleep(0.5)
""")


def test_profile_file_is_shipped_and_selected(monkeypatch):
    monkeypatch.chdir(REPO)  # a source checkout: ./config, unless the package is installed
    path = fastdds_profile_path()
    assert os.path.basename(path) == FASTDDS_PROFILE_NAME
    assert filecmp.cmp(path, os.path.join(REPO, 'config', FASTDDS_PROFILE_NAME), shallow=False)
    environment = large_message_dds_env()
    if not any(os.environ.get(name) for name in FASTDDS_PROFILE_VARIABLES):
        assert environment == {'FASTDDS_DEFAULT_PROFILES_FILE': path}
    with open(path, encoding='utf-8') as stream:
        text = stream.read()
    assert '<type>SHM</type>' in text and '<segment_size>33554432</segment_size>' in text
    assert '127.0.0.1' not in text and 'initialPeersList' not in text  # transports only


def test_full_size_images_arrive_best_effort_with_the_profile(ros_env):
    env = dict(ros_env)
    env.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = fastdds_profile_path()
    subscriber = subprocess.Popen([sys.executable, '-c', SUBSCRIBER, '40', str(IMAGES)], env=env,
                                  stdout=subprocess.PIPE, text=True)
    try:
        assert subscriber.stdout.readline().strip() == 'ready'
        subprocess.run([sys.executable, '-c', PUBLISHER, str(IMAGES)], env=env, check=True,
                       timeout=60)
        output, _ = subscriber.communicate(timeout=60)
    finally:
        subscriber.kill()
    _, count, smallest = output.split()
    assert int(smallest) == 1208 * 1920 * 3 or int(count) == 0
    assert int(count) >= IMAGES - 2, output
