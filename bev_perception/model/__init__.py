"""Pure-PyTorch BEV fusion network: config, stages, decoding (no ROS, no dataset objects)."""

from bev_perception.model.config import ModelConfig
from bev_perception.model.decode import decode_detections, Detections
from bev_perception.model.network import BEVFusionNet, NetworkOutput, preprocess_image

__all__ = [
    'BEVFusionNet', 'Detections', 'ModelConfig', 'NetworkOutput', 'decode_detections',
    'preprocess_image',
]
