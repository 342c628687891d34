"""The inference fast path: packed transfer, sync-free decode, compile and CUDA graphs, fp16.

Tolerances (stated once, used below and in the README):

* fp16 autocast vs fp32 on CUDA: heatmap probabilities within 0.02, regression maps within
  0.05 (cells, metres, log metres, sin/cos), semantic argmax identical on >= 98% of pixels.
* torch.compile (inductor) vs eager: boxes and scores within 1e-4, same classes (CPU: a LiDAR-only
  frame; CUDA: semantic maps identical on >= 99.9% of pixels); tracing backends: identical.
* CUDA graphs vs eager on CUDA: boxes within 1e-4, identical classes and semantic maps.
"""

import shutil

from bev_perception.inference import (InferenceRuntime, pack_tensors, StageClock, TIMING_KEYS,
                                      unpack_arrays)
from bev_perception.model.camera_geometry import forward_camera
from bev_perception.model.config import ModelConfig, NMSConfig
from bev_perception.model.decode import decode_detections, decode_padded
from bev_perception.model.network import BEVFusionNet, preprocess_image
from model_testing import calibrated_tiny_config, random_image, random_points
import numpy as np
import pytest
import torch

TINY = ModelConfig.tiny()
FP16_PROBABILITY_TOLERANCE = 0.02
FP16_REGRESSION_TOLERANCE = 0.05
FP16_SEMANTIC_AGREEMENT = 0.98
COMPILE_TOLERANCE = 1e-4
GRAPH_TOLERANCE = 1e-4
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def _model(config=TINY, seed=3):
    torch.manual_seed(seed)
    return BEVFusionNet(config).eval()


def _points(count, seed, config=TINY):
    return random_points(count, seed, config)


_image = random_image


def _assert_same_result(first, second, atol, semantic_agreement=1.0):
    np.testing.assert_allclose(first.boxes, second.boxes, atol=atol)
    np.testing.assert_allclose(first.scores, second.scores, atol=atol)
    np.testing.assert_array_equal(first.class_ids, second.class_ids)
    if first.semantic is None:
        assert second.semantic is None
    elif semantic_agreement == 1.0:
        np.testing.assert_array_equal(first.semantic, second.semantic)
    else:
        assert (first.semantic == second.semantic).mean() >= semantic_agreement
    assert first.overflow == second.overflow


# ------------------------------------------------------------------------------ CPU

def test_packed_transfer_round_trips_every_dtype_and_shape():
    tensors = [torch.randn(2, 3, 7), torch.arange(10, dtype=torch.int64).reshape(2, 5) - 4,
               torch.randint(0, 255, (5, 3), dtype=torch.uint8), torch.zeros(0, 7),
               torch.tensor([[1.5, -2.0]], dtype=torch.float64)]
    packed = pack_tensors(tensors)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == sum(t.numel() * t.element_size() for t in tensors)
    arrays = unpack_arrays(packed.numpy(), tensors)
    for tensor, array in zip(tensors, arrays):
        assert array.shape == tuple(tensor.shape) and array.dtype == tensor.numpy().dtype
        np.testing.assert_array_equal(array, tensor.numpy())
    with pytest.raises(ValueError, match='bytes'):
        unpack_arrays(packed.numpy()[:-1], tensors)
    noncontiguous = torch.randn(4, 6)[:, ::2]  # (4, 3) strided
    np.testing.assert_array_equal(
        unpack_arrays(pack_tensors([noncontiguous]).numpy(), [noncontiguous])[0],
        noncontiguous.numpy())


@pytest.mark.parametrize('nms_kind', ['distance', 'rotated', 'none'])
def test_sync_free_decode_matches_decode_detections(nms_kind):
    model = _model()
    nms = NMSConfig(kind=nms_kind, radius_m=(2.0, 3.0, 0.5, 1.0))
    with torch.no_grad():
        output = model([torch.from_numpy(_points(1500, 1)), torch.from_numpy(_points(40, 2))])
    expected = decode_detections(output, TINY, 0.05, max_detections=7, nms=nms)
    thresholds = torch.full((TINY.num_detection_classes,), 0.05)
    padded = decode_padded(output, TINY, thresholds, torch.tensor(7), nms)
    assert padded.boxes.shape == (2, TINY.head.max_objects, 7)
    assert padded.count.tolist() == [len(found.boxes) for found in expected]
    assert padded.count.max() > 0
    for index, found in enumerate(expected):
        count = int(padded.count[index])
        torch.testing.assert_close(padded.boxes[index, :count], found.boxes)
        torch.testing.assert_close(padded.scores[index, :count], found.scores)
        assert torch.equal(padded.labels[index, :count], found.labels)


def test_forward_without_a_camera_mask_equals_an_all_true_mask():
    model = _model()
    points = [torch.from_numpy(_points(800, 3)), torch.from_numpy(_points(500, 4))]
    images = torch.randn(2, 3, *TINY.camera.input_hw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        implicit = model(points, images)
        explicit = model(points, images, torch.tensor([True, True]))
    for name in ('heatmap', 'offset', 'z', 'log_size', 'yaw', 'semantic'):
        assert torch.equal(getattr(implicit, name), getattr(explicit, name)), name
    assert implicit.camera_valid.tolist() == [True, True]


def test_stage_clock_adds_repeated_stages_on_the_cpu():
    clock = StageClock(torch.device('cpu'))
    for _ in range(2):
        with clock('voxelize'):
            sum(range(20000))
    with clock('postprocess', host=True):
        pass
    times = clock.milliseconds()
    assert set(times) == {'voxelize', 'postprocess'}
    assert times['voxelize'] > 0 and times['postprocess'] >= 0


def test_cuda_graphs_on_the_cpu_fall_back_with_a_notice():
    runtime = InferenceRuntime(_model(), TINY, device='cpu', cuda_graphs=True)
    assert not runtime.cuda_graphs
    assert any('cuda_graphs' in notice for notice in runtime.notices)
    result = runtime(_points(300, 5), _image(30, 50, 1))
    assert result.timings_ms['cuda_graph'] == 0.0 and set(result.timings_ms) == set(TIMING_KEYS)


def _compile_supported():
    return hasattr(torch, 'compile') and torch._dynamo.is_dynamo_supported()


@pytest.mark.skipif(not _compile_supported(), reason='torch.compile is not supported here')
def test_compile_flag_traced_gives_identical_outputs():
    # aot_eager traces the stages through dynamo and AOTAutograd without code generation:
    # the compiled runtime must give exactly the eager result (fused and LiDAR-only).
    eager = InferenceRuntime(_model(), TINY, device='cpu')
    traced = InferenceRuntime(_model(), TINY, device='cpu', torch_compile=True,
                              compile_backend='aot_eager')
    points = _points(1200, 6)
    image = _image(70, 101, 2)
    for frame_image in (image, None):
        _assert_same_result(eager(points, frame_image, score_thresholds=0.05),
                            traced(points, frame_image, score_thresholds=0.05), atol=0.0)


@pytest.mark.skipif(not _compile_supported(), reason='torch.compile is not supported here')
@pytest.mark.skipif(shutil.which('c++') is None and shutil.which('g++') is None,
                    reason='torch.compile (inductor) needs a C++ compiler on the CPU')
def test_compile_flag_inductor_matches_eager_lidar_only():
    # LiDAR-only compiles two stages (backbone, detection head): inductor code generation is
    # exercised while the test stays short.
    eager = InferenceRuntime(_model(), TINY, device='cpu')
    compiled = InferenceRuntime(_model(), TINY, device='cpu', torch_compile=True)
    points = _points(1500, 7)
    _assert_same_result(eager(points, None, score_thresholds=0.05),
                        compiled(points, None, score_thresholds=0.05), atol=COMPILE_TOLERANCE)


# ------------------------------------------------------------------------------ CUDA

def _a2d2_like_frame(config, seed):
    points = _points(8000, seed, config)
    return points, _image(1208, 1920, seed)


@needs_cuda
def test_fp16_matches_fp32_within_tolerance():
    config = ModelConfig.lite()
    model = _model(config).cuda()
    points, rgb = _a2d2_like_frame(config, 11)
    runtime = InferenceRuntime(model, config, device='cuda')
    images = preprocess_image(rgb, config, 'cuda')[None]  # (1, 3, Hc, Wc)
    cloud = [torch.from_numpy(points).cuda()]
    with torch.inference_mode():
        full = model(cloud, images)
        with torch.autocast('cuda', dtype=torch.float16):
            half = model(cloud, images)
    probability = (torch.sigmoid(full.heatmap) - torch.sigmoid(half.heatmap.float())).abs()
    assert probability.max() <= FP16_PROBABILITY_TOLERANCE
    for name in ('offset', 'z', 'log_size', 'yaw'):
        difference = (getattr(full, name) - getattr(half, name).float()).abs().max()
        assert difference <= FP16_REGRESSION_TOLERANCE, name
    agreement = (full.semantic.argmax(1) == half.semantic.argmax(1)).float().mean()
    assert agreement >= FP16_SEMANTIC_AGREEMENT
    fp16_runtime = InferenceRuntime(_model(config), config, device='cuda', precision='fp16')
    fp32_result = runtime(points, rgb, score_thresholds=0.0, nms=NMSConfig(kind='none'))
    fp16_result = fp16_runtime(points, rgb, score_thresholds=0.0, nms=NMSConfig(kind='none'))
    top_fp16 = np.sort(fp16_result.scores)[-10:]
    top_fp32 = np.sort(fp32_result.scores)[-10:]
    np.testing.assert_allclose(top_fp16, top_fp32, atol=FP16_PROBABILITY_TOLERANCE)


@needs_cuda
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_cuda_graphs_match_eager_on_later_frames(precision):
    config = ModelConfig.lite()
    eager = InferenceRuntime(_model(config), config, device='cuda', precision=precision)
    graphed = InferenceRuntime(_model(config), config, device='cuda', precision=precision,
                               cuda_graphs=True)
    for seed in (21, 22, 23):  # the first frame captures, the later ones replay new inputs
        points, rgb = _a2d2_like_frame(config, seed)
        for image in (rgb, None):
            expected = eager(points, image, score_thresholds=0.1)
            result = graphed(points, image, score_thresholds=0.1)
            _assert_same_result(expected, result, atol=GRAPH_TOLERANCE)
            assert result.timings_ms['cuda_graph'] > 0 and result.timings_ms['backbone'] == 0
    tighter = graphed(points, rgb, score_thresholds=0.5, max_detections=3)  # new inputs only
    assert len(tighter.boxes) <= 3 and np.all(tighter.scores >= 0.5)


@needs_cuda
def test_cuda_graphs_replay_each_frames_camera_geometry():
    config = calibrated_tiny_config()
    eager = InferenceRuntime(_model(config), config, device='cuda')
    graphed = InferenceRuntime(_model(config), config, device='cuda', cuda_graphs=True)
    points, image = _points(3000, 31), random_image(240, 320, 32)
    for fov in (1.6, 0.4, 1.0):  # the first frame captures, the later ones replay a new camera
        geometry = forward_camera((320, 240), fov)
        expected = eager(points, image, score_thresholds=0.0, camera_geometry=geometry)
        result = graphed(points, image, score_thresholds=0.0, camera_geometry=geometry)
        _assert_same_result(expected, result, atol=GRAPH_TOLERANCE)


@needs_cuda
def test_cuda_runtime_matches_the_cpu_runtime():
    config = ModelConfig.lite()
    points, rgb = _a2d2_like_frame(config, 31)
    cpu = InferenceRuntime(_model(config), config, device='cpu')(points, rgb, 0.1)
    cuda_runtime = InferenceRuntime(_model(config), config, device='cuda')
    cuda = cuda_runtime(points, rgb, 0.1)
    np.testing.assert_allclose(cuda.boxes, cpu.boxes, atol=1e-3)
    np.testing.assert_array_equal(cuda.class_ids, cpu.class_ids)
    assert (cuda.semantic == cpu.semantic).mean() >= 0.999
    assert cuda.overflow == cpu.overflow
    assert all(value >= 0 for value in cuda.timings_ms.values())


@needs_cuda
def test_cuda_compile_matches_eager():
    config = ModelConfig.lite()
    points, rgb = _a2d2_like_frame(config, 41)
    eager = InferenceRuntime(_model(config), config, device='cuda')
    compiled = InferenceRuntime(_model(config), config, device='cuda', torch_compile=True)
    for image in (rgb, None):
        _assert_same_result(eager(points, image, 0.1), compiled(points, image, 0.1),
                            atol=COMPILE_TOLERANCE, semantic_agreement=0.999)
