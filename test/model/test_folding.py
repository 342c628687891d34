"""Folding BatchNorms into convolutions: same eval outputs, every foldable one folded, eval only.

The network's BatchNorms get random statistics, so that folding them changes the weights.
"""

import copy
import dataclasses

from bev_perception.model.camera_encoder import BasicBlock, CameraEncoder, LEVEL_STRIDES
from bev_perception.model.config import ModelConfig
from bev_perception.model.folding import fold_batch_norms
from bev_perception.model.network import BEVFusionNet, NetworkOutput
import pytest
import torch
from torch import nn

TINY = ModelConfig.tiny()
#: Every conv-BatchNorm layout the network has: several blocks per backbone stage, a semantic
#: encoder with extra (identity-initialised) blocks, the stride-2 detail head, and style
#: normalisations between some convs and their BatchNorms (those BatchNorms must stay).
EVERY_LAYOUT = dataclasses.replace(
    TINY,
    lidar_encoder=dataclasses.replace(TINY.lidar_encoder, full_res_blocks=1, out_blocks=2,
                                      context_dilation=2),
    camera_encoder=dataclasses.replace(TINY.camera_encoder,
                                       instance_norm_levels=('stem', 'c2', 'c3')),
    head=dataclasses.replace(TINY.head, semantic_encoder=True,
                             semantic_encoder_blocks=(2, 1, 2, 2),
                             semantic_levels=('c2', 'c3', 'c4', 'c5'),
                             semantic_stem_detail=True))
TENSOR_FIELDS = ('heatmap', 'offset', 'z', 'log_size', 'yaw', 'semantic')


def _randomise_batch_norms(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            shape = module.running_mean.shape
            signs = torch.where(torch.rand(shape, generator=generator) < 0.2, -1.0, 1.0)
            with torch.no_grad():
                module.running_mean.copy_(0.5 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.25 + 1.75 * torch.rand(shape, generator=generator))
                module.weight.copy_(signs * (0.5 + torch.rand(shape, generator=generator)))
                module.bias.copy_(0.3 * torch.randn(shape, generator=generator))


def _net(config: ModelConfig, seed: int = 0) -> BEVFusionNet:
    torch.manual_seed(seed)
    net = BEVFusionNet(config)
    _randomise_batch_norms(net, seed + 1)
    return net.eval()


def _cloud(count: int, seed: int, config: ModelConfig) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    grid = config.grid
    low = torch.tensor([grid.x_range_m[0], grid.y_range_m[0], grid.z_range_m[0], 0.0])
    high = torch.tensor([grid.x_range_m[1], grid.y_range_m[1], grid.z_range_m[1], 255.0])
    return low + (high - low) * torch.rand(count, 4, generator=generator)


def _batch_norms(model: nn.Module) -> list:
    return [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]


def _batch_norms_after_style_norms(model: nn.Module) -> set:
    """Return the BatchNorm2d modules with an instance normalisation between them and a conv."""
    kept = set()
    for encoder in model.modules():
        if not isinstance(encoder, CameraEncoder):
            continue
        if not isinstance(encoder.stem_norm, nn.Identity):
            kept.add(encoder.stem[1])
        for block in encoder.stages:
            if not isinstance(block.norm1, nn.Identity):
                kept.add(block.bn1)
    return kept


def _assert_outputs_close(folded: NetworkOutput, reference: NetworkOutput,
                          tolerance: float = 1e-4) -> None:
    """Assert every output tensor agrees within ``tolerance`` relative to its magnitude."""
    for name in TENSOR_FIELDS:
        expected, actual = getattr(reference, name), getattr(folded, name)
        if expected is None:
            assert actual is None, name
            continue
        scale = max(1.0, expected.abs().max().item())
        torch.testing.assert_close(actual, expected, atol=tolerance * scale, rtol=tolerance,
                                   msg=name)
    assert torch.equal(folded.camera_valid, reference.camera_valid)


@pytest.mark.parametrize('config', [TINY, EVERY_LAYOUT], ids=['tiny', 'every_layout'])
def test_folded_network_computes_the_same(config):
    reference = _net(config)
    folded = copy.deepcopy(reference)
    count = fold_batch_norms(folded)
    points = [_cloud(600, 1, config), _cloud(300, 2, config)]
    images = torch.randn(2, 3, *config.camera.input_hw,
                         generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for inputs in ((points, None), (points, images)):  # LiDAR-only, fused
            expected = reference(*inputs)
            # The statistics matter: a network with its BatchNorms dropped computes otherwise.
            assert (expected.heatmap - _without_batch_norms(reference)(*inputs).heatmap
                    ).abs().max() > 1e-2
            _assert_outputs_close(folded(*inputs), expected)
    kept = _batch_norms_after_style_norms(reference)
    assert count == len(_batch_norms(reference)) - len(kept) > 0
    assert len(_batch_norms(folded)) == len(kept)
    assert (config is TINY) == (not kept)


def _without_batch_norms(model: nn.Module) -> nn.Module:
    stripped = copy.deepcopy(model)
    for module in list(stripped.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.Identity())
    return stripped


def test_only_batch_norms_behind_style_norms_are_kept():
    net = _net(EVERY_LAYOUT)
    fold_batch_norms(net)
    for encoder in (net.camera_encoder, net.semantic_encoder):
        assert isinstance(encoder.stem[1], nn.BatchNorm2d)  # behind the stem's style norm
        for block, level in zip(encoder.stages, LEVEL_STRIDES):
            assert isinstance(block.bn1, nn.BatchNorm2d) == (level in ('c2', 'c3'))
            assert isinstance(block.bn2, nn.Identity) and block.conv2.bias is not None
    assert isinstance(net.pillar_net.norm, nn.BatchNorm1d)  # not after a conv
    assert isinstance(net.backbone.stem[1], nn.Identity)
    assert net.backbone.stem[0].bias is not None


def test_folding_twice_finds_nothing_left():
    net = _net(TINY)
    assert fold_batch_norms(net) > 0
    state = {name: value.clone() for name, value in net.state_dict().items()}
    assert fold_batch_norms(net) == 0
    assert all(torch.equal(value, state[name]) for name, value in net.state_dict().items())


def test_a_block_folds_on_its_own():
    block = BasicBlock(4, 6, stride=2)
    _randomise_batch_norms(block, 5)
    block.eval()
    reference = copy.deepcopy(block)
    assert fold_batch_norms(block) == 3  # conv1 -> bn1, conv2 -> bn2, shortcut projection
    x = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference(x), atol=1e-5, rtol=1e-5)


def test_folding_needs_eval_mode():
    net = BEVFusionNet(TINY)  # training mode
    with pytest.raises(ValueError, match='eval mode'):
        fold_batch_norms(net)
    net.eval()
    net.detection_head.train()  # one submodule still training
    with pytest.raises(ValueError, match='eval mode'):
        fold_batch_norms(net)
    assert len(_batch_norms(net)) == len(_batch_norms(BEVFusionNet(TINY)))  # nothing changed
