"""The node's name and topic names, written once for the node, its launch file and the tools.

Node-private names (``~/...``) resolve under the node's namespace and name:
``~/output/detections`` of ``perception_node`` in namespace ``/`` is
``/perception_node/output/detections``.
"""

from typing import Dict

#: The node's default name (the launch file and the tools use it).
NODE_NAME = 'perception_node'

#: Input topics (PointCloud2 and Image), remapped by users.
INPUT_TOPICS: Dict[str, str] = {
    'pointcloud': '~/input/pointcloud',
    'image': '~/input/image',
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
