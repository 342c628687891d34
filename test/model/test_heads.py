"""CenterPoint and semantic FPN heads: channels, bias init, output sizes."""

from bev_perception.model.heads import CenterPointHead, REGRESSION_CHANNELS, SemanticFPNHead
from bev_perception.model.semantic_ids import upsampled_argmax_ids
import pytest
import torch


def test_detection_head_maps_and_bias_init():
    head = CenterPointHead(in_channels=16, shared_channels=8, tower_channels=4, num_classes=3,
                           heatmap_bias_init=-2.19).eval()
    maps = head(torch.randn(2, 16, 7, 9))
    assert maps.heatmap.shape == (2, 3, 7, 9)
    for name, channels in REGRESSION_CHANNELS.items():
        assert getattr(maps, name).shape == (2, channels, 7, 9), name
    assert torch.all(head.towers['heatmap'][-1].bias == -2.19)
    assert REGRESSION_CHANNELS == {'offset': 2, 'z': 1, 'log_size': 3, 'yaw': 2}


@pytest.mark.parametrize('height, width', [(64, 96), (601, 967)])
def test_semantic_head_returns_logits_at_the_requested_size(height, width):
    strides = {'c3': 8, 'c4': 16, 'c5': 32}
    channels = {'c3': 4, 'c4': 6, 'c5': 8}
    head = SemanticFPNHead(in_channels=channels, in_strides=strides, channels=5,
                           num_classes=7).eval()
    features = {level: torch.randn(1, channels[level], -(-height // s), -(-width // s))
                for level, s in strides.items()}
    with torch.no_grad():
        logits = head(features, (height, width))
        at_stride = head(features, None)  # before the final upsampling
    assert logits.shape == (1, 7, height, width)
    assert at_stride.shape == (1, 7) + tuple(features['c3'].shape[-2:])
    assert torch.equal(upsampled_argmax_ids(at_stride, (height, width)),
                       logits.max(1).indices.to(torch.uint8))
    assert len(head.level_convs['c5']) == 2 and len(head.level_convs['c3']) == 1


def test_semantic_head_needs_doubling_strides():
    with pytest.raises(ValueError, match='double'):
        SemanticFPNHead(in_channels={'c3': 4, 'c5': 4}, in_strides={'c3': 8, 'c5': 32},
                        channels=4, num_classes=2)
