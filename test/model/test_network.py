"""BEVFusionNet end to end: shapes, gradients, NaN safety, invariances, LiDAR-only batches."""

import contextlib
import dataclasses
import math

from bev_perception.model.camera_geometry import camera_geometry, MODEL_TO_OPTICAL
from bev_perception.model.config import ModelConfig
from bev_perception.model.network import BEVFusionNet, preprocess_image, STAGES
import numpy as np
import pytest
import torch
from training.losses import multitask_loss
from training.targets import build_targets, collate_targets

CONFIG = ModelConfig.tiny()  # canvas 27 x 31, head 14 x 16, camera 64 x 96
DETECTION_FIELDS = ('heatmap', 'offset', 'z', 'log_size', 'yaw')


def _net(config=CONFIG):
    torch.manual_seed(0)
    return BEVFusionNet(config).eval()


def _cloud(count, seed, config=CONFIG):
    generator = torch.Generator().manual_seed(seed)
    grid = config.grid
    low = torch.tensor([grid.x_range_m[0] - 1, grid.y_range_m[0] - 1, -3.2, 0.0])
    high = torch.tensor([grid.x_range_m[1] + 1, grid.y_range_m[1] + 1, 2.2, 255.0])
    return low + (high - low) * torch.rand(count, 4, generator=generator)


def _images(batch, seed, hw=CONFIG.camera.input_hw):
    return torch.randn(batch, 3, *hw, generator=torch.Generator().manual_seed(seed))


def _assert_sample_equal(output, index, reference, reference_index=0, semantic=True):
    for name in DETECTION_FIELDS:
        torch.testing.assert_close(getattr(output, name)[index],
                                   getattr(reference, name)[reference_index],
                                   atol=1e-5, rtol=1e-5, msg=name)
    if semantic:
        torch.testing.assert_close(output.semantic[index],
                                   reference.semantic[reference_index], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('count', [0, 1, 3000])
@pytest.mark.parametrize('image_hw', [(64, 96), (97, 161), None])
def test_output_shapes(count, image_hw):
    net = _net()
    images = None if image_hw is None else _images(2, 0, image_hw)
    with torch.no_grad():
        output = net([_cloud(count, 1), _cloud(7, 2)], images)
    rows, cols = CONFIG.head_hw
    assert output.heatmap.shape == (2, 4, rows, cols)
    assert output.offset.shape == (2, 2, rows, cols)
    assert output.z.shape == (2, 1, rows, cols)
    assert output.log_size.shape == (2, 3, rows, cols)
    assert output.yaw.shape == (2, 2, rows, cols)
    if image_hw is None:
        assert output.semantic is None and not output.camera_valid.any()
    else:
        assert output.semantic.shape == (2, len(CONFIG.semantic_classes), *image_hw)
        assert output.camera_valid.all()
    assert output.counts.non_finite_dropped.shape == (2,)
    assert all(torch.isfinite(getattr(output, name)).all() for name in DETECTION_FIELDS)


def test_semantic_levels_from_c2_predict_at_stride_4():
    head = dataclasses.replace(CONFIG.head, semantic_levels=('c2', 'c3', 'c4', 'c5'))
    net, plain = _net(dataclasses.replace(CONFIG, head=head)), _net()
    images = _images(1, 0)
    with torch.no_grad():
        logits = net.semantic_head(net.camera_encoder(images), None)
        output = net([_cloud(100, 1)], images)
    assert logits.shape == (1, len(CONFIG.semantic_classes), 16, 24)  # 64 x 96 at stride 4
    assert output.semantic.shape == (1, len(CONFIG.semantic_classes), 64, 96)
    assert net.semantic_head.levels == ('c2', 'c3', 'c4', 'c5')
    assert plain.semantic_head.levels == ('c3', 'c4', 'c5')  # the default, as weights before


def test_stem_detail_predicts_at_stride_2_from_the_semantic_encoders_stem():
    head = dataclasses.replace(CONFIG.head, semantic_levels=('c2', 'c3', 'c4', 'c5'),
                               semantic_encoder=True, semantic_stem_detail=True)
    net = _net(dataclasses.replace(CONFIG, head=head))
    images = _images(1, 0)
    with torch.no_grad():
        logits = net.semantic_head(net.semantic_encoder(images), None)
        output = net([_cloud(100, 1)], images)
        net.semantic_head.detail[-1].weight.normal_()
        moved = net.forward_semantic(images)
        net.semantic_encoder.stem[0].weight.add_(0.5)  # the semantic encoder's stem, not the
        restemmed = net.forward_semantic(images)  # fusion's, feeds the correction
    assert logits.shape == (1, len(CONFIG.semantic_classes), 32, 48)  # 64 x 96 at stride 2
    assert output.semantic.shape == (1, len(CONFIG.semantic_classes), 64, 96)
    assert not torch.allclose(moved, output.semantic)
    assert not torch.allclose(moved, restemmed)


def test_a_semantic_encoder_of_its_own_leaves_the_detection_to_the_camera_encoder():
    head = dataclasses.replace(CONFIG.head, semantic_encoder=True)
    net = _net(dataclasses.replace(CONFIG, head=head))
    assert _net().semantic_encoder is None  # the default shares the fusion's encoder
    points, images = [_cloud(2000, 1), _cloud(1500, 2)], _images(2, 3)
    with torch.no_grad():
        before = net(points, images, camera_valid=torch.tensor([True, False]))
        for parameter in net.semantic_encoder.parameters():
            parameter.add_(0.5)
        after = net(points, images, camera_valid=torch.tensor([True, False]))
        shared = net.semantic_head(net.camera_encoder(images[:1]), tuple(images.shape[2:]))
    for name in DETECTION_FIELDS:  # the fused detection does not read the semantic encoder
        assert torch.equal(getattr(before, name), getattr(after, name)), name
    assert not torch.allclose(before.semantic[0], after.semantic[0])
    assert not torch.allclose(after.semantic[0], shared[0])  # not the fusion's features
    assert not after.semantic[1].any()  # no image: zero logits, as without the encoder
    assert after.semantic.shape == (2, len(CONFIG.semantic_classes), *CONFIG.camera.input_hw)


def test_a2d2_sized_image_through_preprocessing():
    rgb = np.random.default_rng(0).integers(0, 256, size=(601, 967, 3), dtype=np.uint8)
    image = preprocess_image(rgb, CONFIG)
    assert image.shape == (3, 64, 96) and image.dtype == torch.float32
    with torch.no_grad():
        output = _net()([_cloud(100, 3)], image[None])
    assert output.semantic.shape == (1, 38, 64, 96)


def test_default_config_with_200k_points():
    config = ModelConfig()
    net = _net(config)
    with torch.no_grad():
        output = net([_cloud(200_000, 4, config)], _images(1, 1, config.camera.input_hw))
    assert output.heatmap.shape == (1, 4, 124, 108)
    assert output.semantic.shape == (1, 38, 256, 416)
    assert int(output.counts.pillars_capped[0]) > 0  # ~50k cells hit, 30k kept
    assert int(output.counts.out_of_range_dropped[0]) > 0
    assert torch.isfinite(output.heatmap).all()


def test_preprocess_image_normalises_and_resizes():
    mean = np.round(np.array(CONFIG.camera.mean) * 255).astype(np.uint8)
    rgb = np.broadcast_to(mean, (30, 50, 3)).copy()
    image = preprocess_image(rgb, CONFIG)
    assert image.shape == (3, 64, 96)
    assert image.abs().max() < 0.01
    torch.testing.assert_close(preprocess_image(torch.from_numpy(rgb), CONFIG), image)
    with pytest.raises(ValueError, match='uint8'):
        preprocess_image(rgb.astype(np.float32), CONFIG)
    with pytest.raises(ValueError, match='RGB'):
        preprocess_image(rgb[:, :, :2], CONFIG)


def _float_resize_grey_levels(rgb, size_hw):
    """Return the float32 bilinear resize of (H, W, 3) uint8 pixels, (3, h, w) on 0..255."""
    chw = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(torch.float32)  # (1, 3, H, W)
    shrinking = chw.shape[-2] > size_hw[0] or chw.shape[-1] > size_hw[1]
    return torch.nn.functional.interpolate(chw, size=size_hw, mode='bilinear',
                                           align_corners=False, antialias=shrinking)[0]


def _grey_levels(image, config=CONFIG):
    """Undo the normalisation of a (3, h, w) network input: values on the 0..255 scale."""
    mean = torch.tensor(config.camera.mean).view(3, 1, 1) * 255.0
    std = torch.tensor(config.camera.std).view(3, 1, 1) * 255.0
    return image * std + mean


@pytest.mark.parametrize('input_hw', [(1208, 1920), (301, 77), (37, 50)])
def test_preprocess_image_uint8_resize_within_a_grey_level_of_float(input_hw):
    # The CPU resizes the uint8 pixels, rounding after each separable pass: at most about one
    # grey level (0..255 scale) from the float32 resize, on noise, edges and smooth ramps.
    generator = np.random.default_rng(7)
    rows, cols = np.mgrid[0:input_hw[0], 0:input_hw[1]]
    images = [
        generator.integers(0, 256, (*input_hw, 3), dtype=np.uint8),
        generator.choice(np.array([0, 255], np.uint8), (*input_hw, 3)),
        np.stack([cols * 255 // max(input_hw[1] - 1, 1), rows * 255 // max(input_hw[0] - 1, 1),
                  (rows + cols) % 256], -1).astype(np.uint8)]
    for rgb in images:
        image = preprocess_image(rgb, CONFIG)
        assert image.shape == (3, *CONFIG.camera.input_hw) and image.dtype == torch.float32
        difference = (_grey_levels(image) - _float_resize_grey_levels(
            rgb, CONFIG.camera.input_hw)).abs()
        assert float(difference.max()) <= 1.05
        assert float(difference.mean()) <= 0.4
        # The uint8 result is whole grey levels.
        levels = _grey_levels(image)
        torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)


def test_preprocess_image_accepts_strided_tensors():
    rgba = np.random.default_rng(3).integers(0, 256, (90, 130, 4), dtype=np.uint8)
    expected = preprocess_image(np.ascontiguousarray(rgba[:, :, :3]), CONFIG)
    torch.testing.assert_close(preprocess_image(torch.from_numpy(rgba)[:, :, :3], CONFIG),
                               expected, atol=0, rtol=0)
    read_only = np.ascontiguousarray(rgba[:, :, :3])
    read_only.flags.writeable = False
    torch.testing.assert_close(preprocess_image(read_only, CONFIG), expected, atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_preprocess_image_cuda_within_a_grey_level_of_cpu():
    rgb = np.random.default_rng(5).integers(0, 256, (1208, 1920, 3), dtype=np.uint8)
    cuda = preprocess_image(rgb, CONFIG, 'cuda')  # float32 resize on the GPU
    assert cuda.is_cuda and cuda.shape == (3, *CONFIG.camera.input_hw)
    difference = (_grey_levels(cuda.cpu()) - _grey_levels(preprocess_image(rgb, CONFIG))).abs()
    assert float(difference.max()) <= 1.05


def _training_batch():
    boxes = np.array([[3.0, -1.0, -1.0, 4.0, 1.8, 1.5, 0.3], [6.0, 2.0, -0.8, 0.6, 0.6, 1.7, 2.0]],
                     dtype=np.float32)
    targets = collate_targets([build_targets(boxes, np.array([0, 2]), CONFIG),
                               build_targets(boxes[:1], np.array([1]), CONFIG)])
    labels = torch.randint(0, 38, (2, *CONFIG.camera.input_hw),
                           generator=torch.Generator().manual_seed(0))
    labels[:, :4] = 255
    return targets, labels


def test_every_parameter_gets_a_gradient_from_the_multitask_loss():
    net = _net().train()
    targets, labels = _training_batch()
    output = net([_cloud(3000, 5), _cloud(2000, 6)], _images(2, 2), torch.tensor([True, False]))
    loss = multitask_loss(output, targets, labels)
    loss.total.backward()
    assert all(math.isfinite(float(part.detach())) for part in loss)
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize('train', [False, True])
def test_no_nan_for_empty_all_nan_clouds_and_missing_images(train):
    net = _net().train(train)
    clouds = [torch.zeros(0, 4), torch.full((50, 4), math.nan)]
    targets, labels = _training_batch()
    for images, valid in ((None, None), (_images(2, 3), torch.tensor([False, True]))):
        output = net(clouds, images, valid)
        assert all(torch.isfinite(getattr(output, name)).all() for name in DETECTION_FIELDS)
        assert output.counts.non_finite_dropped.tolist() == [0, 50]
        loss = multitask_loss(output, targets, labels)
        assert torch.isfinite(loss.total)
        if train:
            net.zero_grad()
            loss.total.backward()
            for name, parameter in net.named_parameters():
                assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name


def test_outputs_do_not_depend_on_point_order():
    net = _net()
    cloud = _cloud(3000, 7)
    images = _images(1, 4)
    with torch.no_grad():
        reference = net([cloud], images)
        shuffled = net([cloud[torch.randperm(cloud.shape[0])]], images)
    _assert_sample_equal(shuffled, 0, reference)


def test_samples_do_not_depend_on_each_other():
    net = _net()
    images = _images(2, 5)
    with torch.no_grad():
        reference = net([_cloud(2000, 8), _cloud(2000, 9)], images)
        changed_images = images.clone()
        changed_images[1] = torch.randn(3, *CONFIG.camera.input_hw)
        changed = net([_cloud(2000, 8), _cloud(500, 10)], changed_images)
    _assert_sample_equal(changed, 0, reference, 0)
    assert not torch.allclose(changed.heatmap[1], reference.heatmap[1])


def test_lidar_only_samples_in_a_mixed_batch_equal_running_alone():
    net = _net()
    clouds = [_cloud(2000, 11), _cloud(1500, 12), _cloud(900, 13)]
    images = _images(3, 6)
    valid = torch.tensor([True, False, True])
    with torch.no_grad():
        mixed = net(clouds, images, valid)
        lidar_only = net([clouds[1]])
        camera_alone = net([clouds[2]], images[2:])
    _assert_sample_equal(mixed, 1, lidar_only, semantic=False)
    _assert_sample_equal(mixed, 2, camera_alone)
    assert mixed.camera_valid.tolist() == [True, False, True]
    assert torch.all(mixed.semantic[1] == 0)


@pytest.mark.parametrize('semantic_encoder', [False, True])
def test_stage_timer_sees_every_stage(semantic_encoder):
    entered = []

    @contextlib.contextmanager
    def timer(stage):
        entered.append(stage)
        yield

    head = dataclasses.replace(CONFIG.head, semantic_encoder=semantic_encoder)
    net = _net(dataclasses.replace(CONFIG, head=head))
    encoders = []
    for encoder in (net.camera_encoder, net.semantic_encoder):
        if encoder is not None:  # which stage is open while each encoder runs
            encoder.register_forward_pre_hook(lambda *_: encoders.append(entered[-1]))
    with torch.no_grad():
        net([_cloud(100, 14)], _images(1, 7), stage_timer=timer)
        net([_cloud(100, 14), _cloud(50, 15)], _images(2, 7),
            torch.tensor([True, False]), stage_timer=timer)  # the partial-batch path
    assert sorted(set(entered)) == sorted(STAGES) and len(entered) >= 2 * len(STAGES)
    assert encoders == ['camera_encoder', 'semantic_encoder'] * 2 if semantic_encoder else \
        ['camera_encoder'] * 2


def test_rejects_inconsistent_camera_inputs():
    with pytest.raises(ValueError, match='images must be'):
        _net()([_cloud(10, 15)], _images(2, 8))
    with pytest.raises(ValueError, match='camera_valid'):
        _net()([_cloud(10, 15)], _images(1, 8), torch.tensor([True, False]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    net = _net()
    clouds = [_cloud(3000, 16), _cloud(10, 17)]
    images = _images(2, 9)
    valid = torch.tensor([True, False])
    with torch.no_grad():
        cpu = net(clouds, images, valid)
        cuda = net.cuda()([c.cuda() for c in clouds], images.cuda(), valid.cuda())
    for name in DETECTION_FIELDS + ('semantic',):
        torch.testing.assert_close(getattr(cuda, name).cpu(), getattr(cpu, name),
                                   atol=1e-3, rtol=1e-3)


def test_calibration_aware_network_uses_each_samples_camera_and_keeps_lidar_only_exact():
    config = dataclasses.replace(CONFIG, fusion=dataclasses.replace(
        CONFIG.fusion, geometry_heights_m=(-1.5, 0.0)))
    net = _net(config)
    k = np.array([[400.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])
    wide = camera_geometry(MODEL_TO_OPTICAL, (0.0, 0.0, 0.0), k, (), (640, 480))
    long_focal = k.copy()
    long_focal[0, 0] = long_focal[1, 1] = 1600.0
    narrow = camera_geometry(MODEL_TO_OPTICAL, (0.0, 0.0, 0.0), long_focal, (), (640, 480))
    geometry = torch.from_numpy(np.stack([wide, narrow, wide]))
    clouds = [_cloud(2000, 21), _cloud(1500, 22), _cloud(900, 23)]
    images = _images(3, 7)
    valid = torch.tensor([True, True, False])
    with torch.no_grad():
        mixed = net(clouds, images, valid, camera_geometry=geometry)
        lidar_only = net([clouds[2]])
        alone = net([clouds[1]], images[1:2], camera_geometry=geometry[1:2])
        other_camera = net([clouds[1]], images[1:2], camera_geometry=geometry[:1])
    _assert_sample_equal(mixed, 2, lidar_only, semantic=False)
    _assert_sample_equal(mixed, 1, alone)
    assert not torch.equal(other_camera.heatmap, alone.heatmap), 'calibration is used'
    with pytest.raises(ValueError, match='camera geometry'):
        net(clouds, images, valid)
