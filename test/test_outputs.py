"""Tests of bev_perception.outputs: messages are built only for subscribed topics."""

from bev_perception.geometry import yaw_to_quaternion
from bev_perception.inference import FrameResult, OverflowCounts
from bev_perception.node_params import NodeSettings
from bev_perception.outputs import OutputPublishers
from bev_perception.pipeline import FrameOutput
import numpy as np
import pytest


class RecordingPublisher:
    """Stands in for an rclpy publisher with a fixed number of matched subscriptions."""

    def __init__(self, subscriptions):
        self.subscriptions = subscriptions
        self.messages = []

    def get_subscription_count(self):
        return self.subscriptions

    def publish(self, msg):
        self.messages.append(msg)


@pytest.mark.parametrize('subscribed', [(), ('markers',), ('semantic_color',),
                                        ('detections', 'semantic')])
def test_outputs_are_built_only_for_subscribers(subscribed):
    from std_msgs.msg import Header

    publishers = {name: RecordingPublisher(int(name in subscribed))
                  for name in ('detections', 'markers', 'semantic', 'semantic_color')}
    outputs = OutputPublishers.__new__(OutputPublishers)  # its publishers replaced below
    outputs.__dict__.update(
        _detections=publishers['detections'], _markers=publishers['markers'],
        _semantic=publishers['semantic'], _semantic_color=publishers['semantic_color'],
        _previous_marker_count=4, _marker_colours={}, _palette=np.zeros((38, 3), np.uint8))
    result = FrameResult(
        boxes=np.array([[5.0, 1.0, -1.0, 4.0, 2.0, 1.5, 0.2]], np.float32),
        scores=np.array([0.5], np.float32), class_ids=np.array([0]), class_names=['car'],
        semantic=np.zeros((6, 8), np.uint8), lidar_only=False,
        overflow=OverflowCounts(0, 0, 0, 0), timings_ms={})
    output = FrameOutput(result=result, boxes=result.boxes,
                         quaternions=yaw_to_quaternion(result.boxes[:, 6].astype(np.float64)))
    outputs.publish_frame(Header(frame_id='lidar'), Header(frame_id='camera'), output,
                          NodeSettings.defaults())
    assert {name for name, publisher in publishers.items() if publisher.messages} == set(
        subscribed)
    assert outputs._previous_marker_count == (1 if 'markers' in subscribed else 4)
