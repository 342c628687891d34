"""The node's name and topic names, written once for the node, its launch file and the tools.

* in: ``~/input/pointcloud`` (sensor_msgs/PointCloud2), ``~/input/image`` (sensor_msgs/Image),
  ``~/input/camera_info`` (sensor_msgs/CameraInfo of that image, read by weights that fuse by
  calibration), sensor-data QoS (best effort) by default.
* out: ``~/output/detections`` (vision_msgs/Detection3DArray, the cloud's header),
  ``~/output/semantic`` (mono8 class ids, the image's header), ``~/output/semantic_color``
  (rgb8), ``~/output/markers`` (visualization_msgs/MarkerArray), ``~/output/label_info``
  (vision_msgs/LabelInfo, transient local), ``/diagnostics`` and the debug topics
  ``~/debug/timings`` (diagnostic_msgs/DiagnosticArray: one status named ``timings`` whose
  values are ``<stage>_ms`` numbers and frame facts, header = the cloud's header) and
  ``~/debug/end_to_end_latency_ms`` (std_msgs/Float64, now minus the cloud stamp).

Node-private names (``~/...``) resolve under the node's namespace and name:
``~/output/detections`` of ``perception_node`` in namespace ``/`` is
``/perception_node/output/detections``.
"""

from typing import Dict

#: The node's default name (the launch file and the tools use it).
NODE_NAME = 'perception_node'

#: Input topics (PointCloud2, Image and its CameraInfo), remapped by users.
INPUT_TOPICS: Dict[str, str] = {
    'pointcloud': '~/input/pointcloud',
    'image': '~/input/image',
    'camera_info': '~/input/camera_info',
}

#: Output topics by name: (ROS message type, node-private topic).
OUTPUT_TOPICS: Dict[str, tuple] = {
    'detections': ('vision_msgs/msg/Detection3DArray', '~/output/detections'),
    'semantic': ('sensor_msgs/msg/Image', '~/output/semantic'),
    'semantic_color': ('sensor_msgs/msg/Image', '~/output/semantic_color'),
    'markers': ('visualization_msgs/msg/MarkerArray', '~/output/markers'),
    'label_info': ('vision_msgs/msg/LabelInfo', '~/output/label_info'),
    'timings': ('diagnostic_msgs/msg/DiagnosticArray', '~/debug/timings'),
    'latency': ('std_msgs/msg/Float64', '~/debug/end_to_end_latency_ms'),
}

#: The health status topic (global, as diagnostic aggregators expect).
DIAGNOSTICS_TOPIC = '/diagnostics'


def resolve(topic: str, node_name: str = NODE_NAME, namespace: str = '/') -> str:
    """Return the absolute name of a topic of the node (``~/x`` -> ``/<ns>/<node>/x``)."""
    if not topic.startswith('~/'):
        return topic
    prefix = '/'.join(part for part in (namespace.strip('/'), node_name) if part)
    return f'/{prefix}/{topic[2:]}'
