"""CameraEncoder: C2..C5 with declared channels and strides, odd image sizes."""

from bev_perception.model.camera_encoder import CameraEncoder
from bev_perception.model.config import CameraEncoderConfig
import pytest
import torch

CONFIG = CameraEncoderConfig(stem_channels=4, stage_channels=(4, 6, 8, 10))


@pytest.mark.parametrize('height, width', [(64, 96), (601, 967), (33, 47)])
def test_levels_have_declared_channels_and_strides(height, width):
    encoder = CameraEncoder(config=CONFIG).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, height, width))
    assert encoder.out_channels == {'c2': 4, 'c3': 6, 'c4': 8, 'c5': 10}
    assert encoder.out_strides == {'c2': 4, 'c3': 8, 'c4': 16, 'c5': 32}
    assert set(features) == set(encoder.out_channels)
    for level, feature in features.items():
        stride = encoder.out_strides[level]
        assert feature.shape == (1, encoder.out_channels[level], -(-height // stride),
                                 -(-width // stride)), level
        assert torch.isfinite(feature).all()


def test_every_parameter_gets_a_gradient():
    encoder = CameraEncoder(config=CONFIG).train()
    features = encoder(torch.randn(2, 3, 64, 64))
    sum(f.square().mean() for f in features.values()).backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
