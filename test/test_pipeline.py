"""Tests of bev_perception.pipeline: a frame from points to boxes in the cloud frame."""

import math

from bev_perception.calibration import CameraIntrinsics
from bev_perception.geometry import quaternion_to_yaw, rotation_from_rpy, rotation_to_quaternion
from bev_perception.geometry import yaw_to_quaternion
from bev_perception.inference import InferenceRuntime
from bev_perception.model.camera_geometry import forward_camera
from bev_perception.model.config import ModelConfig
from bev_perception.model.network import BEVFusionNet
from bev_perception.node_params import NodeSettings
from bev_perception.pipeline import Extrinsic, FramePipeline, FrameSettings, resize_ids_nearest
from model_testing import calibrated_tiny_config, random_points
import numpy as np
import pytest
import torch


@pytest.fixture(scope='module')
def runtime():
    """Return a CPU runtime of the tiny config with random weights (scores about 0.1)."""
    torch.manual_seed(0)
    config = ModelConfig.tiny()
    return InferenceRuntime(BEVFusionNet(config), config, device='cpu')


def test_extrinsic_maps_boxes_back_into_the_cloud_frame():
    extrinsic = Extrinsic.from_parameters((1.5, -0.5, 0.25), (0.0, 0.0, 0.4))
    boxes_cloud = np.array([[10.0, 2.0, -1.0, 4.5, 1.8, 1.5, 3.0],
                            [5.0, -3.0, -0.5, 0.6, 0.6, 1.7, -0.2]], dtype=np.float32)
    # The same boxes in the model frame: centre through the extrinsic, yaw + 0.4.
    boxes_model = boxes_cloud.copy()
    boxes_model[:, :3] = extrinsic.points_to_model(boxes_cloud[:, :3].copy())
    boxes_model[:, 6] += 0.4
    back, quaternions = extrinsic.boxes_to_cloud(boxes_model)
    np.testing.assert_array_equal(quaternions, yaw_to_quaternion(back[:, 6].astype(np.float64)))
    np.testing.assert_allclose(back[:, :6], boxes_cloud[:, :6], atol=1e-5)
    wrapped = np.angle(np.exp(1j * (back[:, 6] - boxes_cloud[:, 6])))
    np.testing.assert_allclose(wrapped, 0.0, atol=1e-6)
    assert back[0, 6] == pytest.approx(3.0, abs=1e-6) and -math.pi < back[1, 6] <= math.pi


def test_tilted_extrinsic_returns_full_box_orientations():
    extrinsic = Extrinsic.from_parameters(rpy_rad=(0.0, 0.1, 0.0))
    boxes, quaternions = extrinsic.boxes_to_cloud(
        np.array([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.5]], dtype=np.float32))
    expected = rotation_to_quaternion(extrinsic.rotation.T @ rotation_from_rpy(0.0, 0.0, 0.5))
    np.testing.assert_allclose(quaternions[0], expected, atol=1e-6)
    assert boxes[0, 6] == pytest.approx(float(quaternion_to_yaw(quaternions[0])), abs=1e-6)
    np.testing.assert_allclose(boxes[0, :3], extrinsic.rotation.T @ [10.0, 0.0, 0.0],
                               atol=1e-5)


def test_identity_extrinsic_leaves_points_alone():
    extrinsic = Extrinsic.from_parameters()
    points = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert extrinsic.is_identity
    np.testing.assert_array_equal(extrinsic.points_to_model(points.copy()), points)


def test_boxes_to_model_and_back_round_trip():
    extrinsic = Extrinsic.from_parameters((1.0, -2.0, 0.5), (0.0, 0.0, 0.4))
    boxes = np.array([[10.0, 2.0, -1.0, 4.5, 1.8, 1.5, 3.0]], dtype=np.float32)
    back, _ = extrinsic.boxes_to_cloud(extrinsic.boxes_to_model(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-5)
    np.testing.assert_allclose(extrinsic.points_from_model(
        extrinsic.points_to_model(boxes[:, :3].copy())), boxes[:, :3], atol=1e-5)


def test_frame_settings_follow_the_weights_unless_overridden():
    config = ModelConfig.tiny()
    defaults = FrameSettings.build(NodeSettings.defaults(), config)
    assert defaults.nms == config.head.nms
    assert defaults.max_detections == config.head.max_objects
    assert defaults.intensity_gain == 1.0
    assert defaults.score_thresholds == (0.3,) * 4
    custom = FrameSettings.build(NodeSettings.from_values({
        'nms_kind': 'rotated', 'nms_radius_scale': 2.0, 'nms_iou_threshold': 0.5,
        'intensity_scale': 1.0, 'max_detections': 7}), config)
    assert custom.nms.kind == 'rotated' and custom.nms.iou_threshold == 0.5
    assert custom.nms.radius_m == tuple(2.0 * r for r in config.head.nms.radius_m)
    assert custom.intensity_gain == pytest.approx(255.0)  # 0..1 driver -> raw 0..255 units
    assert custom.max_detections == 7


def test_prepare_subsamples_scales_and_moves_a_copy(runtime):
    pipeline = FramePipeline(runtime, NodeSettings.from_values({
        'max_points': 1000, 'intensity_scale': 1.0, 'extrinsic_translation_m': [1.0, 0.0, -0.5]}))
    points = np.tile(np.array([[1.0, 2.0, 3.0, 0.5]], np.float32), (2500, 1))
    points[:, 0] += np.arange(2500)
    prepared = pipeline.prepare(points)
    assert (len(prepared.points), prepared.num_subsampled) == (834, 1666)  # stride 3
    np.testing.assert_allclose(prepared.points[1], [1.0 + 3 + 1.0, 2.0, 2.5, 0.5 * 255.0])
    assert points[1, 0] == 2.0 and points[0, 3] == 0.5  # the input is left alone
    assert prepared.max_scaled_intensity == pytest.approx(0.5)  # back in the weights' 0..1
    assert not prepared.intensity_out_of_range
    small = pipeline.prepare(points[:10])
    assert len(small.points) == 10 and small.num_subsampled == 0
    too_bright = points[:10] * np.float32([1.0, 1.0, 1.0, 2000.0])  # 1000 raw = 3.9 scaled
    assert FramePipeline(runtime, NodeSettings.defaults()).prepare(
        too_bright).intensity_out_of_range
    assert math.isnan(pipeline.prepare(points[:0]).max_scaled_intensity)


def test_clouds_without_intensity_get_zero_intensity(runtime):
    settings = NodeSettings.from_values({'intensity_field': ''})
    assert settings.cloud_fields() == ('x', 'y', 'z')
    assert NodeSettings.defaults().cloud_fields() == ('x', 'y', 'z', 'intensity')
    xyz = random_points(300, seed=4)[:, :3]
    prepared = FramePipeline(runtime, settings).prepare(xyz)
    assert prepared.points.shape == (300, 4) and not prepared.points[:, 3].any()
    np.testing.assert_array_equal(prepared.points[:, :3], xyz)
    with_zeros = np.column_stack([xyz, np.zeros(300, np.float32)])
    assert FramePipeline(runtime, settings).run(prepared, None).result.boxes.tobytes() == \
        FramePipeline(runtime, settings).run(
            FramePipeline(runtime, settings).prepare(with_zeros), None).result.boxes.tobytes()


def test_a_cloud_without_points_gives_no_boxes_but_semantics(runtime):
    settings = NodeSettings.from_values({'score_thresholds': [0.0]})
    pipeline = FramePipeline(runtime, settings)
    image = np.zeros((48, 64, 3), np.uint8)
    with_points = pipeline.run(pipeline.prepare(random_points(2000, seed=1)), image)
    assert len(with_points.boxes) > 0  # threshold 0: the random model gives boxes
    empty = pipeline.run(pipeline.prepare(np.zeros((0, 4), np.float32)), image)
    assert len(empty.boxes) == 0 and empty.quaternions.shape == (0, 4)
    assert empty.result.semantic.shape == (48, 64)


def test_weights_that_fuse_by_calibration_run_an_uncalibrated_image_lidar_only(runtime):
    config = calibrated_tiny_config()
    torch.manual_seed(0)
    calibrated = InferenceRuntime(BEVFusionNet(config), config, device='cpu')
    settings = NodeSettings.from_values({'score_thresholds': [0.0]})
    pipeline = FramePipeline(calibrated, settings)
    cloud, image = pipeline.prepare(random_points(2000, seed=2)), np.zeros((48, 64, 3), np.uint8)
    blind = pipeline.run(cloud, image)
    assert blind.image_uncalibrated and blind.result.lidar_only
    np.testing.assert_array_equal(blind.scores, pipeline.run(cloud, None).scores)
    fused = pipeline.run(cloud, image, camera_geometry=forward_camera((64, 48)))
    assert not fused.image_uncalibrated and not fused.result.lidar_only
    # Weights without calibration-aware fusion never flag an image.
    plain = FramePipeline(runtime, settings).run(cloud, image)
    assert not plain.image_uncalibrated and not plain.result.lidar_only
    # Which images get a geometry (the node and the bag evaluator look up /tf only for them).
    camera = CameraIntrinsics.from_camera_info(64, 48, [60.0, 0, 32, 0, 60.0, 24, 0, 0, 1],
                                               'plumb_bob', [0.0] * 5)
    assert pipeline.places_images(camera) and not pipeline.places_images(None)
    assert pipeline.camera_geometry(camera, (48, 64)) is not None
    assert pipeline.camera_geometry(camera, (48, 96)) is None  # another aspect: not this camera
    assert not FramePipeline(runtime, settings).places_images(camera)
    assert FramePipeline(runtime, settings).camera_geometry(camera, (48, 64)) is None


def test_a_fused_camera_unlike_the_training_cameras_is_flagged():
    config = calibrated_tiny_config()
    torch.manual_seed(0)
    trained = {'horizontal_fov_deg': [42.0, 60.0, 95.0], 'z_m': [-0.4, 0.0, 0.3]}
    runtime = InferenceRuntime(BEVFusionNet(config), config,
                               {'provenance': {'train_cameras': trained}}, device='cpu')
    pipeline = FramePipeline(runtime, NodeSettings.defaults())
    cloud, image = pipeline.prepare(random_points(500, seed=3)), np.zeros((48, 64, 3), np.uint8)
    usual = pipeline.run(cloud, image, camera_geometry=forward_camera((64, 48), 1.0))
    assert usual.unfamiliar_camera == ()
    wide = forward_camera((64, 48), math.radians(130.0))
    assert pipeline.run(cloud, image, camera_geometry=wide).unfamiliar_camera == (
        'horizontal_fov_deg 130.00 (trained 42.00..95.00)',)
    assert pipeline.run(cloud, None, camera_geometry=wide).unfamiliar_camera == ()  # not fused


def test_nms_is_passed_per_call_and_the_runtime_config_is_untouched(runtime):
    before = runtime.config
    points = random_points(3000, seed=2)
    none = FramePipeline(runtime, NodeSettings.from_values(
        {'nms_kind': 'none', 'score_thresholds': [0.0]}))
    wide = FramePipeline(runtime, NodeSettings.from_values(
        {'nms_kind': 'distance', 'nms_radius_scale': 10.0, 'score_thresholds': [0.0]}))
    unsuppressed = none.run(none.prepare(points), None)
    suppressed = wide.run(wide.prepare(points), None)
    assert len(suppressed.boxes) < len(unsuppressed.boxes)
    assert runtime.config is before


def test_boxes_come_back_in_the_cloud_frame_with_quaternions(runtime):
    settings = NodeSettings.from_values({'score_thresholds': [0.0],
                                         'extrinsic_translation_m': [2.0, 1.0, 0.0],
                                         'extrinsic_rpy_rad': [0.0, 0.0, 0.3]})
    pipeline = FramePipeline(runtime, settings)
    points = random_points(2000, seed=3)
    output = pipeline.run(pipeline.prepare(points), None)
    extrinsic = pipeline.frame_settings.extrinsic
    expected, _ = extrinsic.boxes_to_cloud(output.result.boxes)
    np.testing.assert_array_equal(output.boxes, expected)
    np.testing.assert_allclose(quaternion_to_yaw(output.quaternions), output.boxes[:, 6],
                               atol=1e-6)
    np.testing.assert_array_equal(output.published_boxes()[:, :6], output.boxes[:, :6])


def test_settings_that_contradict_the_weights_are_refused(runtime):
    with pytest.raises(ValueError, match='max_detections'):
        FramePipeline(runtime, NodeSettings.from_values({'max_detections': 1000}))
    pipeline = FramePipeline(runtime, NodeSettings.defaults())
    with pytest.raises(ValueError, match='score_thresholds'):
        pipeline.configure(NodeSettings.from_values({'score_thresholds': [0.1, 0.2]}))
    assert pipeline.settings == NodeSettings.defaults()  # unchanged after a refusal


def test_resize_ids_is_nearest_neighbour():
    ids = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    np.testing.assert_array_equal(resize_ids_nearest(ids, (4, 4)),
                                  np.repeat(np.repeat(ids, 2, 0), 2, 1))
    assert resize_ids_nearest(ids, (0, 0)) is ids
    assert resize_ids_nearest(ids, (1, 3)).tolist() == [[2, 3, 3]]  # pixel centres: row 1


@pytest.mark.parametrize('size_hw', [(604, 960), (2416, 3840), (1208, 960), (7, 3001)])
def test_resize_ids_equals_fancy_indexing(size_hw):
    ids = np.random.default_rng(0).integers(0, 38, (1208, 1920)).astype(np.uint8)
    rows = np.minimum(((np.arange(size_hw[0]) + 0.5) * 1208 / size_hw[0]).astype(np.int64), 1207)
    cols = np.minimum(((np.arange(size_hw[1]) + 0.5) * 1920 / size_hw[1]).astype(np.int64), 1919)
    np.testing.assert_array_equal(resize_ids_nearest(ids, size_hw), ids[rows][:, cols])
