"""TinyBEVBackbone: declared output shape for even and odd canvases."""

from bev_perception.model.bev_backbone import TinyBEVBackbone
import pytest
import torch


@pytest.mark.parametrize('height, width', [(27, 31), (8, 6), (1, 1)])
def test_output_is_strided_and_declared(height, width):
    backbone = TinyBEVBackbone(in_channels=5, channels=6, out_channels=10, stride=2).eval()
    output = backbone(torch.randn(2, 5, height, width))
    assert backbone.out_channels == 10 and backbone.out_stride == 2
    assert output.shape == (2, 10, -(-height // 2), -(-width // 2))
    assert torch.isfinite(output).all()


def test_stride_one_keeps_the_resolution():
    backbone = TinyBEVBackbone(in_channels=4, channels=4, out_channels=8, stride=1).eval()
    assert backbone(torch.randn(1, 4, 9, 7)).shape == (1, 8, 9, 7)


def test_samples_are_independent_in_eval_mode():
    backbone = TinyBEVBackbone(in_channels=3, channels=4, out_channels=8, stride=2).eval()
    inputs = torch.randn(2, 3, 11, 13)
    alone = backbone(inputs[:1])
    changed = inputs.clone()
    changed[1] = torch.randn(3, 11, 13)
    torch.testing.assert_close(backbone(changed)[:1], alone)
