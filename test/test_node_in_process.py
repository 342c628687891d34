"""PerceptionNode built in this process (real rclpy, no peers): paths a DDS peer cannot reach.

The approximate synchroniser comes from ROS 2's message_filters, which has no PyPI wheel, so
its pair callback is called directly here; the CPU fallback needs a machine without CUDA.
"""

from bev_perception.conversions import array_to_pointcloud2, rgb_to_image
from model_testing import calibrated_tiny_config, write_tiny_weights
import numpy as np
import pytest
from ros_testing import wait_until
import torch

#: The two fallback notices (inference.resolve_device), each expected exactly once.
FALLBACK_NOTICES = ('CUDA is not available: running on CPU', 'precision fp16 needs CUDA')


@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory):
    """Write random weights of the tiny model config; return their path."""
    path = tmp_path_factory.mktemp('weights') / 'tiny_random.safetensors'
    write_tiny_weights(path)
    return str(path)


def make_node(context, weights, **parameters):
    from rclpy.parameter import Parameter

    from bev_perception.node import PerceptionNode

    overrides = [Parameter('weights_path', value=weights)]
    overrides += [Parameter(name, value=value) for name, value in parameters.items()]
    return PerceptionNode(context=context, parameter_overrides=overrides)


def messages(stamp_s, encoding='rgb8'):
    """Return a cloud and an image (same stamp) for the node's inputs."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    header = Header(stamp=Time(sec=int(stamp_s), nanosec=0), frame_id='lidar')
    rng = np.random.default_rng(int(stamp_s))
    points = np.column_stack([rng.uniform(2, 40, 2000), rng.uniform(-10, 10, 2000),
                              rng.uniform(-1.8, 0.5, 2000), rng.uniform(0, 1, 2000)])
    image = rgb_to_image(np.zeros((64, 96, 3), np.uint8),
                         Header(stamp=header.stamp, frame_id='camera'))
    image.encoding = encoding  # yuv422 is refused by the node (not a supported encoding)
    return array_to_pointcloud2(points.astype(np.float32), header), image


def test_approximate_pair_with_a_refused_image_is_skipped(rclpy_context, tiny_weights):
    node = make_node(rclpy_context, tiny_weights, device='cpu')
    try:
        node._on_approximate_pair(*messages(100, encoding='yuv422'))
        assert (node.counters.unpaired_clouds, node.counters.bad_images) == (1, 1)
        assert node.counters.bad_image_encoding == 1
        node._on_approximate_pair(*messages(101))
        assert wait_until(lambda: node.counters.frames_out == 1, 30.0)
        # The refused pair never ran, not even LiDAR-only; the good one ran fused.
        assert (node.counters.fused_frames, node.counters.lidar_only_frames) == (1, 0)
        assert node.counters.unpaired_clouds == 1 and node.counters.clouds_in == 2
    finally:
        node.destroy_node()


def test_clouds_without_intensity_run_with_an_empty_intensity_field(rclpy_context, tiny_weights):
    from sensor_msgs.msg import PointField

    node = make_node(rclpy_context, tiny_weights, device='cpu', intensity_field='',
                     max_image_wait_s=0.0)
    try:
        cloud, _ = messages(200)
        cloud.fields = [field for field in cloud.fields if field.name != 'intensity']
        assert [field.name for field in cloud.fields] == ['x', 'y', 'z']
        assert all(field.datatype == PointField.FLOAT32 for field in cloud.fields)
        node._on_cloud(cloud)  # point_step still 16: the fourth float is padding now
        assert wait_until(lambda: node.counters.frames_out == 1, 30.0)
        assert (node.counters.bad_clouds, node.counters.lidar_only_frames) == (0, 1)
    finally:
        node.destroy_node()


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU fallback needs a machine '
                    'without CUDA')
def test_cpu_fallback_is_told_once_and_shown_in_the_device_parameter(
        rclpy_context, tiny_weights, capfd):
    from rclpy.parameter import Parameter

    node = make_node(rclpy_context, tiny_weights, device='cuda', precision='fp16')
    try:
        assert node.get_parameter('device').value == 'cpu'
        assert node.get_parameter('precision').value == 'fp32'
        stderr = capfd.readouterr().err
        for notice in FALLBACK_NOTICES:  # the ROS logger only (not Python logging as well)
            assert stderr.count(notice) == 1, stderr
        refused = node.set_parameters([Parameter('device', value='cuda')])[0]
        assert not refused.successful and 'read-only' in refused.reason
    finally:
        node.destroy_node()


def camera_info(stamp_s, width=96, height=64, focal=80.0):
    """Return a CameraInfo of the test image (plumb-bob, no distortion)."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    return CameraInfo(header=Header(stamp=Time(sec=int(stamp_s), nanosec=0), frame_id='camera'),
                      width=width, height=height, distortion_model='plumb_bob',
                      d=[0.0] * 5, k=[focal, 0.0, width / 2, 0.0, focal, height / 2, 0.0, 0.0,
                                      1.0])


def test_weights_that_fuse_by_calibration_wait_for_camera_info(rclpy_context, tmp_path):
    weights = tmp_path / 'calibrated.safetensors'
    # Trained cameras narrower than the test camera (62 degrees): fused frames are flagged.
    write_tiny_weights(weights, config=calibrated_tiny_config(), provenance={
        'train_cameras': {'horizontal_fov_deg': [40.0, 45.0, 50.0]}})
    node = make_node(rclpy_context, str(weights), device='cpu', camera_position_m=[0.5, 0.0, 0.3])
    try:
        # No camera_info yet: the image is not used, and the node says why.
        node._on_approximate_pair(*messages(300))
        assert wait_until(lambda: node.counters.frames_out == 1, 30.0)
        assert (node.counters.uncalibrated_images, node.counters.lidar_only_frames) == (1, 1)
        assert 'none yet' in _value(node, 'camera_calibration')
        # A refused camera_info (zero focal length) changes nothing ...
        node._on_camera_info(camera_info(301, focal=0.0))
        assert (node.counters.camera_infos_in, node.counters.bad_camera_info) == (1, 1)
        node._on_approximate_pair(*messages(302))
        assert wait_until(lambda: node.counters.frames_out == 2, 30.0)
        assert node.counters.uncalibrated_images == 2
        # ... a good one makes the next frame fused.
        node._on_camera_info(camera_info(303))
        node._on_approximate_pair(*messages(304))
        assert wait_until(lambda: node.counters.frames_out == 3, 30.0)
        assert (node.counters.fused_frames, node.counters.uncalibrated_images) == (1, 2)
        assert node.counters.unfamiliar_camera_frames == 1
        assert 'camera_info 96x64' in _value(node, 'camera_calibration')
        # An image of another aspect ratio than the camera_info's is not trusted.
        node._on_camera_info(camera_info(305, width=128))
        node._on_approximate_pair(*messages(306))
        assert wait_until(lambda: node.counters.frames_out == 4, 30.0)
        assert node.counters.uncalibrated_images == 3
    finally:
        node.destroy_node()


def _value(node, key):
    return {item.key: item.value for item in node.diagnostic_status().values}[key]


def tf_message(parent, child, translation, quaternion):
    """Return a TFMessage with one transform (child posed in parent)."""
    from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=[TransformStamped(
        header=Header(frame_id=parent), child_frame_id=child,
        transform=Transform(translation=Vector3(x=translation[0], y=translation[1],
                                                z=translation[2]),
                            rotation=Quaternion(x=quaternion[0], y=quaternion[1],
                                                z=quaternion[2], w=quaternion[3])))])


def test_the_camera_pose_comes_from_tf_where_it_links_cloud_and_camera(rclpy_context,
                                                                       tmp_path):
    from bev_perception.calibration import cloud_to_camera_from_pose

    weights = tmp_path / 'calibrated.safetensors'
    # Trained cameras narrower than the test camera (62 degrees): fused frames are flagged.
    write_tiny_weights(weights, config=calibrated_tiny_config(), provenance={
        'train_cameras': {'horizontal_fov_deg': [40.0, 45.0, 50.0]}})
    node = make_node(rclpy_context, str(weights), device='cpu', camera_position_m=[0.5, 0.0, 0.3])
    try:
        node._on_camera_info(camera_info(400))
        node._on_approximate_pair(*messages(401))
        assert wait_until(lambda: node.counters.frames_out == 1, 30.0)
        assert _value(node, 'camera_calibration').endswith(
            "pose from parameters (/tf does not link 'lidar' and 'camera')")
        # lidar -> base_link -> camera: the camera 1.2 m ahead of the LiDAR, optical axes.
        half = 0.5
        node._on_tf(tf_message('base_link', 'lidar', (0.2, 0.0, 1.8), (0, 0, 0, 1)), True)
        node._on_tf(tf_message('base_link', 'camera', (1.4, 0.0, 1.8), (-half, half, -half, half)),
                    True)
        node._on_tf(tf_message('base_link', 'odd', (0.0, 0.0, 0.0), (0, 0, 0, 2.0)), False)
        assert (node.counters.transforms_in, node.counters.bad_transforms) == (3, 1)
        rotation, translation = node._camera_pose('lidar', 402.0)
        expected = cloud_to_camera_from_pose((1.2, 0.0, 0.0), (0.0, 0.0, 0.0))
        np.testing.assert_allclose(rotation, expected[0], atol=1e-12)
        np.testing.assert_allclose(translation, expected[1], atol=1e-12)
        node._on_approximate_pair(*messages(402))
        assert wait_until(lambda: node.counters.frames_out == 2, 30.0)
        assert (node.counters.fused_frames, node.counters.unfamiliar_camera_frames) == (2, 2)
        assert _value(node, 'camera_calibration').endswith('pose from /tf lidar -> camera')
    finally:
        node.destroy_node()
    ignoring = make_node(rclpy_context, str(weights), device='cpu', use_tf=False)
    try:
        assert ignoring._tf is None and ignoring._camera_pose('lidar', 0.0) is None
    finally:
        ignoring.destroy_node()
