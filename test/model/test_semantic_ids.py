"""Semantic class ids: identical to torch's max over channels of the upsampled logits."""

from bev_perception.model import semantic_ids
from bev_perception.model.semantic_ids import argmax_ids, upsampled_argmax_ids
import pytest
import torch
import torch.nn.functional as F


def _reference(logits, output_hw=None):
    """Return the plain torch ids: (optional) bilinear upsampling, then the first maximum."""
    if output_hw is not None:
        logits = F.interpolate(logits, size=output_hw, mode='bilinear', align_corners=False)
    return logits.max(1).indices.to(torch.uint8)


def _logits(shape, seed, ties=True):
    logits = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if ties and shape[1] > 3:
        logits[:, 3] = logits[:, 1]  # exact ties: the first channel wins
        logits[:, 2, ::2] = 5.0
        logits[:, 0, ::2] = 5.0
    return logits


def test_argmax_ids_equals_torch_max_with_ties_signed_zeros_and_infinities():
    logits = _logits((2, 38, 17, 29), 0)
    logits[0, :, 0, 0] = 0.0
    logits[0, 5, 0, 0] = -0.0  # -0 == +0: channel 0 is the first maximum
    logits[0, 7, 1, 1] = float('inf')
    logits[1, :, 2, 2] = float('-inf')
    ids = argmax_ids(logits)
    assert ids.dtype == torch.uint8 and ids.shape == (2, 17, 29)
    assert torch.equal(ids, _reference(logits))
    assert int(ids[0, 0, 0]) == 0 and int(ids[0, 1, 1]) == 7 and int(ids[1, 2, 2]) == 0


def test_argmax_ids_nan_is_the_maximum_as_in_torch():
    logits = _logits((1, 6, 4, 5), 1)
    logits[0, 4, 1, 2] = float('nan')
    logits[0, 2, 3, 3] = float('nan')
    logits[0, 5, 3, 3] = float('nan')
    ids = argmax_ids(logits)
    assert torch.equal(ids, _reference(logits))
    assert int(ids[0, 1, 2]) == 4 and int(ids[0, 3, 3]) == 2


@pytest.mark.parametrize('shape, output_hw', [
    ((1, 38, 32, 52), (256, 416)),  # shipped weights: stride 8 under a 256 x 416 input
    ((2, 38, 8, 12), (64, 96)),  # tiny config, batch 2
    ((1, 5, 17, 23), (61, 97)),  # odd, non-integer scales
    ((1, 7, 33, 53), (256, 416)),
    ((1, 3, 40, 30), (33, 400)),  # shrinking one side
])
def test_upsampled_argmax_ids_equals_upsampling_then_max(shape, output_hw):
    logits = _logits(shape, sum(shape))
    ids = upsampled_argmax_ids(logits, output_hw)
    assert ids.dtype == torch.uint8 and ids.shape == (shape[0],) + output_hw
    assert torch.equal(ids, _reference(logits, output_hw))


def test_banded_upsampling_is_exact_on_the_shipped_sizes():
    # Holds for this torch build; where it fails the plain path runs (same ids, slower).
    assert semantic_ids._banded_upsampling_is_exact(torch.zeros(1, 38, 32, 52), (256, 416))


def test_upsampled_argmax_ids_with_nan_small_outputs_and_channels_last():
    logits = _logits((1, 38, 32, 52), 3)
    logits[0, 9, 10, 10] = float('nan')
    assert torch.equal(upsampled_argmax_ids(logits, (256, 416)),
                       _reference(logits, (256, 416)))
    small = _logits((1, 6, 5, 5), 4)  # H + W <= 128: torch's other kernel, plain path
    assert torch.equal(upsampled_argmax_ids(small, (20, 20)), _reference(small, (20, 20)))
    channels_last = _logits((1, 8, 9, 11), 5).contiguous(memory_format=torch.channels_last)
    assert torch.equal(upsampled_argmax_ids(channels_last, (72, 88)),
                       _reference(channels_last, (72, 88)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_takes_the_torch_path():
    logits = _logits((1, 38, 32, 52), 6).cuda()
    ids = upsampled_argmax_ids(logits, (256, 416))
    assert ids.is_cuda and torch.equal(ids, _reference(logits, (256, 416)))
    assert torch.equal(argmax_ids(logits), _reference(logits))
