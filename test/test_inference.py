"""Inference runtime: numpy in, FrameResult out; LiDAR-only, fallbacks, batches, A2D2 sizes."""

import logging

from bev_perception import inference
from bev_perception.inference import (
    FrameResult, InferenceRuntime, OverflowCounts, resize_nearest, TIMING_KEYS)
from bev_perception.model.camera_geometry import forward_camera
from bev_perception.model.config import ModelConfig, NMSConfig
from bev_perception.model.decode import decode_detections
from bev_perception.model.network import BEVFusionNet, preprocess_image
from bev_perception.node_params import SHIPPED_PROFILES
from bev_perception.weights import save_weights, shipped_weights_path
from model_testing import calibrated_tiny_config, random_image, random_points
import numpy as np
import pytest
import torch
from torch import nn

CONFIG = ModelConfig.tiny()


def _model(config=CONFIG):
    torch.manual_seed(3)
    return BEVFusionNet(config).eval()


def _points(count, seed, config=CONFIG):
    return random_points(count, seed, config)


_image = random_image


@pytest.fixture
def runtime():
    return InferenceRuntime(_model(), CONFIG, {}, device='cpu')


def test_from_weights_runs_a_frame_end_to_end(tmp_path):
    path = tmp_path / 'model.safetensors'
    save_weights(path, _model(), CONFIG, {'command': 'pytest'})
    runtime = InferenceRuntime.from_weights(path, device='cpu')
    assert runtime.metadata['provenance'] == {'command': 'pytest'}
    points = np.concatenate([_points(3000, 0), [[np.nan, 0, 0, 0], [50.0, 0, 0, 0]]])
    points = points.astype(np.float32)
    result = runtime(points, _image(601, 967, 1), score_thresholds=0.0, max_detections=5)
    assert isinstance(result, FrameResult)
    assert result.boxes.shape == (5, 7) and result.boxes.dtype == np.float32
    assert result.scores.shape == (5,) and result.scores.dtype == np.float32
    assert np.all(np.diff(result.scores) <= 0)
    assert result.class_ids.dtype == np.int64
    assert result.class_names == [CONFIG.detection_classes[i] for i in result.class_ids]
    assert result.semantic.shape == (601, 967) and result.semantic.dtype == np.uint8
    assert result.semantic.max() < len(CONFIG.semantic_classes)
    assert not result.lidar_only
    assert result.overflow == OverflowCounts(non_finite_dropped=1, out_of_range_dropped=1,
                                             points_capped=result.overflow.points_capped,
                                             pillars_capped=result.overflow.pillars_capped)
    assert set(result.timings_ms) == set(TIMING_KEYS)
    assert all(value >= 0 for value in result.timings_ms.values())
    assert result.timings_ms['total'] >= result.timings_ms['backbone'] > 0


def test_read_only_inputs_are_accepted_without_warnings(runtime, recwarn):
    points = _points(500, 1)
    image = _image(40, 60, 1)
    points.flags.writeable = False
    image.flags.writeable = False
    result = runtime(points, image)
    assert result.semantic.shape == (40, 60)
    assert not [w for w in recwarn if 'not writable' in str(w.message)]


def test_lidar_only_frame(runtime):
    result = runtime(_points(500, 2), None)
    assert result.lidar_only and result.semantic is None
    assert result.timings_ms['camera_encoder'] == 0.0 and result.timings_ms['fusion'] == 0.0
    empty = runtime(np.zeros((0, 4), np.float32), None)
    assert empty.overflow == OverflowCounts(0, 0, 0, 0)


def test_matches_the_network_and_decoder(runtime):
    points = _points(2000, 3)
    image = _image(64, 96, 4)
    result = runtime(points, image, score_thresholds=0.05)
    with torch.no_grad():
        output = _model()([torch.from_numpy(points)], preprocess_image(image, CONFIG)[None])
    (expected,) = decode_detections(output, CONFIG, 0.05)
    np.testing.assert_allclose(result.boxes, expected.boxes.numpy(), atol=1e-5)
    np.testing.assert_array_equal(result.class_ids, expected.labels.numpy())
    np.testing.assert_array_equal(result.semantic, output.semantic[0].argmax(0).numpy())


@pytest.mark.parametrize('profile', SHIPPED_PROFILES)
def test_shipped_weights_give_the_same_results_with_batch_norms_folded(profile, monkeypatch):
    path = shipped_weights_path(profile)
    folded = InferenceRuntime.from_weights(path, device='cpu')
    monkeypatch.setattr(inference, 'fold_batch_norms', lambda model: 0)
    unfolded = InferenceRuntime.from_weights(path, device='cpu')
    batch_norms = [m for m in unfolded.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert folded.folded_batch_norms == len(batch_norms) > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.model.modules())
    config = folded.config
    points, image = _points(20000, 31, config), _image(300, 480, 32)
    geometry = forward_camera((480, 300), 1.2) if folded.needs_calibration else None
    for frame_image in (None, image):  # LiDAR-only, fused
        results = [runtime(points, frame_image, score_thresholds=0.0, max_detections=30,
                           camera_geometry=geometry) for runtime in (folded, unfolded)]
        np.testing.assert_array_equal(results[0].class_ids, results[1].class_ids)
        np.testing.assert_allclose(results[0].scores, results[1].scores, atol=1e-5)
        np.testing.assert_allclose(results[0].boxes, results[1].boxes, atol=1e-4)
        if frame_image is not None:  # ids may differ only where two logits (nearly) tie
            assert (results[0].semantic == results[1].semantic).mean() > 0.9999


def test_thresholds_caps_and_nms(runtime):
    points = _points(2000, 5)
    assert runtime(points, None, score_thresholds=1.0).boxes.shape == (0, 7)
    assert runtime(points, None, score_thresholds=0.0, max_detections=3).boxes.shape == (3, 7)
    loose = runtime(points, None, score_thresholds=0.0, nms=NMSConfig(kind='none'))
    strict = runtime(points, None, score_thresholds=0.0,
                     nms=NMSConfig(kind='distance', radius_m=(50.0,) * 4))
    assert len(strict.scores) <= len(CONFIG.detection_classes) < len(loose.scores)
    with pytest.raises(ValueError, match='points must be'):
        runtime(points[:, :3], None)


def test_run_batch_equals_single_frames(runtime):
    frames = [(_points(1500, 6), _image(50, 70, 7)), (_points(800, 8), None)]
    batch = runtime.run_batch(frames, score_thresholds=0.05)
    for (points, image), batched in zip(frames, batch):
        single = runtime(points, image, score_thresholds=0.05)
        np.testing.assert_allclose(batched.boxes, single.boxes, atol=1e-5)
        np.testing.assert_allclose(batched.scores, single.scores, atol=1e-5)
        assert batched.lidar_only == single.lidar_only
    np.testing.assert_array_equal(batch[0].semantic, runtime(*frames[0]).semantic)
    assert runtime.run_batch([]) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the fallback without CUDA')
def test_cuda_request_falls_back_to_cpu_with_a_message(caplog):
    with caplog.at_level(logging.WARNING):
        runtime = InferenceRuntime(_model(), CONFIG, device='cuda', precision='fp16')
    assert runtime.device.type == 'cpu' and runtime.precision == 'fp32'
    assert any('CUDA is not available' in notice for notice in runtime.notices)
    assert any('fp16 needs CUDA' in notice for notice in runtime.notices)
    assert 'CUDA is not available' in caplog.text
    with pytest.raises(ValueError, match='precision'):
        InferenceRuntime(_model(), CONFIG, precision='int8')


def test_warmup_runs(runtime):
    runtime.warmup(iterations=1)


def test_resize_nearest_uses_pixel_centres():
    ids = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.uint8)
    up = resize_nearest(ids, (4, 6))
    assert up.tolist()[0] == [0, 0, 1, 1, 2, 2] and up.tolist()[3] == [3, 3, 4, 4, 5, 5]
    down = resize_nearest(up, (2, 3))
    assert torch.equal(down, ids)
    assert resize_nearest(ids, (5, 7)).shape == (5, 7)


def _resize_nearest_by_gather(ids, size_hw):
    """Return the element-by-element gather that resize_nearest replaced on the CPU."""
    rows_in, cols_in = ids.shape
    rows = ((torch.arange(size_hw[0]) + 0.5) * rows_in / size_hw[0]).long()
    cols = ((torch.arange(size_hw[1]) + 0.5) * cols_in / size_hw[1]).long()
    return ids[rows.clamp_(max=rows_in - 1)][:, cols.clamp_(max=cols_in - 1)]


@pytest.mark.parametrize('size_in, size_out', [
    ((256, 416), (1208, 1920)), ((7, 5), (3, 11)), ((5, 6), (5, 6)), ((64, 96), (37, 1000))])
def test_resize_nearest_equals_the_gather(size_in, size_out):
    ids = torch.randint(0, 38, size_in, dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(sum(size_in)))
    resized = resize_nearest(ids, size_out)
    assert resized.dtype == torch.uint8 and resized.is_contiguous()
    assert torch.equal(resized, _resize_nearest_by_gather(ids, size_out))


def test_semantic_ids_equal_the_argmax_of_the_upsampled_logits(runtime):
    # On the CPU the runtime never materialises the upsampled logits (semantic_ids); the ids
    # must be those of the network's forward: argmax at the input size, nearest to the image's.
    points = _points(1500, 13)
    image = _image(150, 200, 14)
    result = runtime(points, image)
    with torch.no_grad():
        output = _model()([torch.from_numpy(points)], preprocess_image(image, CONFIG)[None])
    expected = _resize_nearest_by_gather(output.semantic[0].max(0).indices.to(torch.uint8),
                                         (150, 200))
    np.testing.assert_array_equal(result.semantic, expected.numpy())


def test_a2d2_sized_frame_on_cpu():
    """One 1920x1208 image and 120k points through the default-size model (prints timings)."""
    config = ModelConfig()
    runtime = InferenceRuntime(_model(config), config, device='cpu')
    generator = np.random.default_rng(9)
    points = np.column_stack([
        generator.uniform(-80, 80, 120_000), generator.uniform(-80, 80, 120_000),
        generator.uniform(-3, 3, 120_000), generator.uniform(0, 255, 120_000)]).astype(np.float32)
    result = runtime(points, _image(1208, 1920, 10))
    assert result.semantic.shape == (1208, 1920)
    assert result.overflow.out_of_range_dropped > 0
    assert result.boxes.shape[1] == 7 and len(result.class_names) == len(result.scores)
    print({key: round(value, 1) for key, value in result.timings_ms.items()})


CALIBRATED = calibrated_tiny_config()


def test_calibration_aware_weights_take_each_images_geometry():
    runtime = InferenceRuntime(_model(CALIBRATED), CALIBRATED, {}, device='cpu')
    assert runtime.needs_calibration and not InferenceRuntime(
        _model(), CONFIG, {}, device='cpu').needs_calibration
    points, image = _points(3000, 21), _image(240, 320, 22)
    wide, narrow = forward_camera((320, 240), 1.6), forward_camera((320, 240), 0.4)
    first = runtime(points, image, score_thresholds=0.0, camera_geometry=wide)
    again = runtime(points, image, score_thresholds=0.0, camera_geometry=wide)
    other = runtime(points, image, score_thresholds=0.0, camera_geometry=narrow)
    np.testing.assert_array_equal(first.scores, again.scores)
    assert not np.array_equal(first.scores, other.scores)
    batch = runtime.run_batch([(points, image, wide), (points, None), (points, image, narrow)],
                              score_thresholds=0.0)
    np.testing.assert_allclose(batch[0].scores, first.scores, atol=1e-5)
    np.testing.assert_allclose(batch[2].scores, other.scores, atol=1e-5)
    np.testing.assert_allclose(batch[1].scores, runtime(points, None, score_thresholds=0.0)
                               .scores, atol=1e-5)
    with pytest.raises(ValueError, match='needs its camera_geometry'):
        runtime(points, image)
    with pytest.raises(ValueError, match='finite values'):
        runtime(points, image, camera_geometry=wide[:5])
    runtime.warmup(iterations=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_cuda_runtime(precision):
    runtime = InferenceRuntime(_model(), CONFIG, device='cuda', precision=precision)
    runtime.warmup(iterations=1)
    result = runtime(_points(2000, 11), _image(601, 967, 12), score_thresholds=0.0,
                     max_detections=4)
    assert runtime.device.type == 'cuda' and runtime.precision == precision
    assert result.boxes.shape == (4, 7) and result.semantic.shape == (601, 967)
    assert np.isfinite(result.boxes).all()
