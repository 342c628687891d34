"""The node's output topics: messages are built only for topics that have a subscriber.

Detections, markers, both semantic images and the debug topics are lazy, like
image_transport's publishers: nothing is spent on an output nobody reads. ``label_info``
(transient local) and ``/diagnostics`` are always published.
"""

from typing import Any, Dict, Optional, Sequence

from bev_perception import conversions
from bev_perception.model.config import ModelConfig
from bev_perception.node_params import NodeSettings
from bev_perception.pipeline import FrameOutput, resize_ids_nearest
from bev_perception.topics import DIAGNOSTICS_TOPIC, OUTPUT_TOPICS
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, Header
from vision_msgs.msg import Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

#: Marker colours (RGB) of the detection classes, by class index (weights order).
MARKER_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                  (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34),
                  (23, 190, 207), (127, 127, 127))

_RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                       history=HistoryPolicy.KEEP_LAST)
_LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)


class OutputPublishers:
    """Publishers of one node; the ``publish_*`` methods build only what is subscribed.

    Args:
        node: the node that owns the publishers.
        settings: its parameters (``publish_*`` switch topics off entirely).
        config: the weights' config (class names and palette).
    """

    def __init__(self, node: Node, settings: NodeSettings, config: ModelConfig) -> None:
        def create(enabled, kind, name, qos=_RELIABLE):
            return node.create_publisher(kind, OUTPUT_TOPICS[name][1], qos) if enabled else None

        self._detections = create(settings.publish_detections, Detection3DArray, 'detections')
        self._semantic = create(settings.publish_semantic, Image, 'semantic')
        self._semantic_color = create(settings.publish_semantic_color, Image, 'semantic_color')
        self._markers = create(settings.publish_markers, MarkerArray, 'markers')
        self._label_info = create(True, LabelInfo, 'label_info', _LATCHED)
        self._timings = create(settings.publish_debug, DiagnosticArray, 'timings')
        self._latency = create(settings.publish_debug, Float64, 'latency')
        self._diagnostics = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, _RELIABLE)
        self._class_names = config.detection_classes
        self._palette = np.asarray(config.semantic_palette, dtype=np.uint8)
        self._marker_colours = {name: MARKER_COLOURS[index % len(MARKER_COLOURS)]
                                for index, name in enumerate(config.detection_classes)}
        self._previous_marker_count = 0

    def any_subscribed(self) -> bool:
        """Return True when any per-frame output has a subscriber."""
        return any(_subscribed(publisher) for publisher in (
            self._detections, self._semantic, self._semantic_color, self._markers,
            self._timings, self._latency))

    def publish_frame(self, cloud_header: Header, image_header: Optional[Header],
                      output: FrameOutput, settings: NodeSettings) -> None:
        """Publish a frame's detections, markers and semantic images (the subscribed ones)."""
        if _subscribed(self._detections):
            self._detections.publish(conversions.detections_to_msg(
                cloud_header, output.boxes, output.scores, output.class_names,
                output.quaternions))
        if _subscribed(self._markers):  # stale markers: those of the last published array
            self._markers.publish(conversions.detections_to_markers(
                cloud_header, output.boxes, output.scores, output.class_names,
                previous_count=self._previous_marker_count, class_colours=self._marker_colours,
                quaternions=output.quaternions))
            self._previous_marker_count = len(output.boxes)
        mono, colour = _subscribed(self._semantic), _subscribed(self._semantic_color)
        if output.result.semantic is None or image_header is None or not (mono or colour):
            return
        ids = resize_ids_nearest(output.result.semantic, settings.semantic_output_hw)
        if mono:
            self._semantic.publish(conversions.semantic_to_mono8(ids, image_header))
        if colour:
            self._semantic_color.publish(
                conversions.semantic_to_color(ids, self._palette, image_header))

    def publish_timings(self, cloud_header: Header, timings_ms: Dict[str, float],
                        facts: Dict[str, str], end_to_end_ms: float) -> None:
        """Publish the stage times and frame facts, and the end-to-end latency (debug)."""
        if self._timings is None:
            return
        values = [KeyValue(key=f'{stage}_ms', value=f'{value:.3f}')
                  for stage, value in timings_ms.items()]
        values += [KeyValue(key='end_to_end_ms', value=f'{end_to_end_ms:.3f}')]
        values += [KeyValue(key=key, value=value) for key, value in facts.items()]
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name='timings',
                                  message='per-stage times in ms', values=values)
        self._timings.publish(DiagnosticArray(header=cloud_header, status=[status]))
        self._latency.publish(Float64(data=end_to_end_ms))

    def publish_label_info(self, header: Header, thresholds: Sequence[float]) -> None:
        """Publish the class map with the lowest score threshold in use (latched)."""
        self._label_info.publish(conversions.label_info_msg(
            header, self._class_names, min(thresholds)))

    def publish_diagnostics(self, header: Header, status: DiagnosticStatus) -> None:
        """Publish the node's health status."""
        self._diagnostics.publish(DiagnosticArray(header=header, status=[status]))


def _subscribed(publisher: Any) -> bool:
    """Return True for an enabled publisher that has a matched subscription."""
    return publisher is not None and publisher.get_subscription_count() > 0
