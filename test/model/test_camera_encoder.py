"""CameraEncoder: C2..C5 and the stem with declared channels and strides, odd image sizes."""

from bev_perception.model.camera_encoder import CameraEncoder, HalfInstanceNorm, STEM
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
    assert set(features) == set(encoder.out_channels) | {STEM}
    stem = features.pop(STEM)
    assert stem.shape == (1, encoder.stem_channels, -(-height // 2), -(-width // 2))
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


def test_half_instance_norm_takes_out_each_images_style_only_in_its_half():
    features = torch.randn(2, 6, 9, 11)
    styled = features * torch.tensor([3.0, 0.5]).view(2, 1, 1, 1) + 4.0  # contrast, offset
    out, out_styled = HalfInstanceNorm()(features), HalfInstanceNorm()(styled)
    torch.testing.assert_close(out[:, :3], out_styled[:, :3], atol=1e-4, rtol=0.0)
    torch.testing.assert_close(out[:, :3].mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5,
                               rtol=0.0)
    assert torch.equal(out[:, 3:], features[:, 3:])  # the other half as it came


def test_instance_norm_levels_change_outputs_not_tensors():
    plain = CameraEncoder(config=CONFIG).eval()
    config = CameraEncoderConfig(stem_channels=4, stage_channels=(4, 6, 8, 10),
                                 instance_norm_levels=('stem', 'c2'))
    styled = CameraEncoder(config=config).eval()
    styled.load_state_dict(plain.state_dict())  # strict: the same tensors
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert not torch.allclose(plain(image)['c2'], styled(image)['c2'])
    with pytest.raises(ValueError, match='instance_norm_levels'):
        CameraEncoderConfig(instance_norm_levels=('c5',))


def test_extra_blocks_start_as_identities_then_add_depth():
    shallow = CameraEncoder(config=CONFIG).train()
    deep = CameraEncoder(config=CONFIG, blocks=(1, 2, 1, 3)).train()
    assert CameraEncoder(config=CONFIG, blocks=(1, 1, 1, 1)).extra_blocks is None
    assert [len(stage) for stage in deep.extra_blocks] == [0, 1, 0, 2]
    state = deep.state_dict()
    state.update(shallow.state_dict())  # the shallow encoder's tensors, the extra blocks' own
    deep.load_state_dict(state)
    image = torch.rand(2, 3, 64, 96)
    for mode in ('train', 'eval'):
        getattr(shallow, mode)(), getattr(deep, mode)()
        with torch.no_grad():
            same, grown = shallow(image), deep(image)
        for level in same:  # the same function at the start
            torch.testing.assert_close(grown[level], same[level], atol=0.0, rtol=0.0)
    features = deep.train()(image)
    sum(f.square().mean() for f in features.values()).backward()
    gain = deep.extra_blocks[3][1].bn2.weight
    assert gain.grad is not None and gain.grad.abs().sum() > 0  # and trains from there
    with torch.no_grad():
        gain.fill_(1.0)
        assert not torch.allclose(deep.eval()(image)['c5'], shallow.eval()(image)['c5'])
    with pytest.raises(ValueError, match='counts of at least 1'):
        CameraEncoder(config=CONFIG, blocks=(1, 0, 1, 1))
