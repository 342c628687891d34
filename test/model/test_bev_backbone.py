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


def _receptive_field(backbone: TinyBEVBackbone, size: int = 41) -> int:
    """Return how many canvas columns reach the centre output cell (from the gradient)."""
    with torch.no_grad():  # positive weights and input: no ReLU hides a path
        for parameter in backbone.parameters():
            parameter.fill_(0.1)
    canvas = torch.ones(1, 2, size, size, requires_grad=True)
    output = backbone(canvas)
    output[0, :, output.shape[2] // 2, output.shape[3] // 2].sum().backward()
    columns = canvas.grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
    return int(columns.max() - columns.min() + 1)


@pytest.mark.parametrize('full_res_blocks, out_blocks', [(2, 1), (0, 2)])
def test_context_dilation_widens_the_view_at_the_same_size_and_cost(full_res_blocks, out_blocks):
    plain, dilated = (TinyBEVBackbone(in_channels=2, channels=4, out_channels=6, stride=2,
                                      full_res_blocks=full_res_blocks, out_blocks=out_blocks,
                                      context_dilation=d).eval() for d in (1, 3))
    # 1 + 2 per full-resolution block + 2 (downsample) + 4 per block after it, 12 dilated.
    assert _receptive_field(plain) == 1 + 2 * full_res_blocks + 2 + 4 * out_blocks
    assert _receptive_field(dilated) == _receptive_field(plain) + 8
    assert dilated.state_dict().keys() == plain.state_dict().keys()
    assert [p.shape for p in dilated.parameters()] == [p.shape for p in plain.parameters()]
    assert dilated(torch.randn(1, 2, 9, 7)).shape == plain(torch.randn(1, 2, 9, 7)).shape


def test_context_dilation_below_one_is_refused():
    with pytest.raises(ValueError, match='context_dilation'):
        TinyBEVBackbone(in_channels=2, channels=4, out_channels=6, stride=2, context_dilation=0)
