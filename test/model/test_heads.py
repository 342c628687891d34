"""CenterPoint and semantic FPN heads: channels, bias init, output sizes."""

from bev_perception.model.camera_encoder import STEM
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


def _stem_detail_inputs(height, width):
    strides = {'c2': 4, 'c3': 8}
    channels = {'c2': 4, 'c3': 6}
    features = {level: torch.randn(2, channels[level], -(-height // s), -(-width // s))
                for level, s in strides.items()}
    features[STEM] = torch.randn(2, 3, -(-height // 2), -(-width // 2))
    return strides, channels, features


@pytest.mark.parametrize('height, width', [(64, 96), (61, 97)])
def test_stem_detail_predicts_at_stride_two_starting_from_the_coarse_logits(height, width):
    strides, channels, features = _stem_detail_inputs(height, width)
    plain = SemanticFPNHead(in_channels=channels, in_strides=strides, channels=5,
                            num_classes=7).eval()
    detailed = SemanticFPNHead(in_channels=channels, in_strides=strides, channels=5,
                               num_classes=7, detail_channels=3).eval()
    detailed.load_state_dict(plain.state_dict(), strict=False)  # the same FPN and predictor
    with torch.no_grad():
        coarse = plain(features, None)  # (2, 7, h/4, w/4)
        at_stride = detailed(features, None)
        logits = detailed(features, (height, width))
    assert at_stride.shape == (2, 7) + tuple(features[STEM].shape[-2:])
    assert logits.shape == (2, 7, height, width)
    # The correction starts at zero: the coarse logits, upsampled to the stem's size.
    assert torch.allclose(at_stride, torch.nn.functional.interpolate(
        coarse, size=at_stride.shape[-2:], mode='bilinear', align_corners=False), atol=1e-6)
    assert torch.equal(upsampled_argmax_ids(at_stride, (height, width)),
                       logits.max(1).indices.to(torch.uint8))


def test_stem_detail_trains_from_the_stems_pixels():
    strides, channels, features = _stem_detail_inputs(32, 48)
    head = SemanticFPNHead(in_channels=channels, in_strides=strides, channels=5,
                           num_classes=7, detail_channels=3).train()
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    for _ in range(2):  # the correction's first layer learns once its last is not zero
        optimizer.zero_grad()
        head(features, (32, 48)).square().mean().backward()
        optimizer.step()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # A stem pixel moves the logits at its own place only.
    head.eval()
    with torch.no_grad():
        before = head(features, None)
        features[STEM][:, :, 5, 7] += 10.0
        changed = (head(features, None) - before).abs().sum(dim=(0, 1)) > 0  # (h/2, w/2)
    assert changed[5, 7] and changed.sum() == 1
