"""Acceptance test of the shipped weights (both profiles) on freshly generated held-out scenes.

The scenes come from the synthetic generator with ``CI_TEST_SEED``, a seed that neither
training (``TRAIN_DATA_SEED``) nor the make_weights evaluation (``HELD_OUT_SEED``) uses, at the
image size of the training recipe; every scene films with a camera of its own drawn by the
generator (``training.cameras``). Targets (issue 4, and for the CPU profile issue 7: trained
by the same recipe): BEV mAP at 2 m >= 0.5 over the trained classes with ground truth, semantic
mIoU over the categories present in the ground truth, and fused detection not worse than
LiDAR-only beyond the noise of the set (0.02). The same scenes filmed by one fixed camera
unlike A2D2's (KITTI's wide, flat view, mounted elsewhere and turned) keep the fused quality
(issue 12).
"""

import math
import os

from bev_perception.calibration import unfamiliar_camera
from bev_perception.inference import InferenceRuntime
from bev_perception.model.camera_geometry import forward_camera
from bev_perception.model.config import ModelConfig
from bev_perception.weights import SHIPPED_PROFILES
import pytest
from training import synthetic
from training.a2d2 import A2D2Dataset
from training.a2d2_calibration import CameraModel
from training.cameras import camera_model, CameraSetup
from training.evaluate import class_map_for, evaluate
from training.make_weights import (
    CI_TEST_SEED, HELD_OUT_SEED, PROFILES, Recipe, recipe_stages, same_training,
    TRAIN_DATA_SEED, world_settings)
from training.train import TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Held-out scenes x frames. Frames of one scene share its world, sensors and camera, so the
#: spread of the AP follows the number of scenes: 24 scenes of 2 frames (not 8 of 4: mAP@2m of
#: the same weights moved by up to 0.07 between such 32-frame sets). About a minute.
SCENES, FRAMES = 24, 2
#: A camera no scene of the recipe has: KITTI's field of view (81 degrees) and aspect (3.3),
#: no distortion, 0.3 m ahead of and 0.2 m below the model origin, pitched down 4 degrees and
#: turned 3 degrees left.
OTHER_CAMERA = CameraSetup(intrinsics=(0.581, 1.917, 0.5, 0.46), aspect=3.3, k1=0.0,
                           position_m=(0.3, 0.0, -0.2), rpy_rad=(0.0, 0.07, 0.05))


def _weights(profile: str) -> str:
    path = os.path.join(REPO, PROFILES[profile].weights_path)
    if not os.path.exists(path):
        command = 'make weights' if profile == 'default' else f'make weights-{profile}'
        pytest.skip(f'{path} does not exist yet (run `{command}`)')
    return path


@pytest.fixture(scope='module')
def ci_scenes(tmp_path_factory):
    """Generate the CI scenes once for both profiles."""
    root = str(tmp_path_factory.mktemp('ci_scenes') / 'root')
    synthetic.generate(root, SCENES, FRAMES, CI_TEST_SEED, image_size=Recipe.image_size,
                       workers=2)
    return root


@pytest.fixture(scope='module')
def other_camera_scenes(tmp_path_factory):
    """Generate the CI scenes again, every one filmed by ``OTHER_CAMERA``."""
    root = str(tmp_path_factory.mktemp('other_camera') / 'root')
    synthetic.generate(root, SCENES, FRAMES, CI_TEST_SEED, image_size=Recipe.image_size,
                       workers=2, config=synthetic.SyntheticConfig(camera=OTHER_CAMERA))
    return root


@pytest.fixture(scope='module', params=SHIPPED_PROFILES)
def runtime(request):
    """Load one profile's shipped weights."""
    return InferenceRuntime.from_weights(_weights(request.param), device='cpu')


def _evaluate(runtime, root):
    dataset = A2D2Dataset(root, class_map=class_map_for(runtime),
                          classes=runtime.config.detection_classes)
    return evaluate(runtime, dataset, batch_size=4, show_progress=False)


@pytest.fixture(scope='module')
def result(runtime, ci_scenes):
    """Evaluate one profile's shipped weights on the CI scenes."""
    return _evaluate(runtime, ci_scenes)


def test_ci_seed_was_never_used_for_training():
    assert CI_TEST_SEED not in (TRAIN_DATA_SEED, HELD_OUT_SEED)


def test_profiles_are_the_shipped_ones():
    assert sorted(PROFILES) == sorted(SHIPPED_PROFILES)
    assert all(PROFILES[name].weights_path.endswith(f'/{name}.safetensors')
               for name in SHIPPED_PROFILES)


@pytest.mark.parametrize('profile', SHIPPED_PROFILES)
def test_weights_file_is_small_and_records_its_recipe(profile):
    path = _weights(profile)
    assert os.path.getsize(path) < 20 * 1024 * 1024
    metadata = InferenceRuntime.from_weights(path, device='cpu').metadata
    provenance = metadata['provenance']
    assert provenance['train_data']['seed'] == TRAIN_DATA_SEED
    # The camera stage's scenes: the same seed in the recipe's camera world.
    assert provenance['camera_train_data']['seed'] == TRAIN_DATA_SEED
    assert provenance['camera_train_data']['world_config'] == world_settings(
        PROFILES[profile].camera_world)
    assert provenance['ci_test_seed'] == CI_TEST_SEED
    assert metadata['metrics']['summary']['map_2m_fused'] is not None
    # The range of training cameras is recorded: the KITTI-like camera of the test below lies
    # inside it, a 130-degree lens does not.
    cameras = provenance['train_cameras']
    assert cameras['cameras'] == Recipe.train_scenes
    front = CameraModel.front_center(Recipe.image_size)
    other = camera_model(OTHER_CAMERA, Recipe.image_size)
    assert unfamiliar_camera(other.camera_geometry(front.view), cameras) == []
    wide = forward_camera(Recipe.image_size, math.radians(130.0))
    assert unfamiliar_camera(wide, cameras)[0].startswith('horizontal_fov_deg 130.00')


def test_lite_weights_are_the_cpu_profile_trained_by_the_same_recipe():
    default, lite = (InferenceRuntime.from_weights(_weights(name), device='cpu')
                     for name in ('default', 'lite'))
    first = TrainConfig.from_dict(lite.metadata['provenance']['first_stage']['train_config'])
    assert first.model.build() == ModelConfig.lite()
    # Read back through TrainConfig: a setting added after one run was trained takes its
    # default there, as it did in that run.
    for stage in (('train_config',), ('first_stage', 'train_config')):
        recipes = []
        for runtime in (default, lite):
            document = runtime.metadata['provenance']
            for key in stage:
                document = document[key]
            recipe = TrainConfig.from_dict(document).to_dict()
            for key in ('model', 'output_dir', 'init_weights'):  # paths name the profile
                recipe.pop(key)
            recipes.append(recipe)
        assert recipes[0] == recipes[1]  # data, schedule, augmentation, losses: the same


@pytest.mark.parametrize('profile', SHIPPED_PROFILES)
def test_weights_were_trained_by_the_recipe_in_the_repository(profile):
    # A recipe edited after the weights were trained no longer documents them: every setting
    # (data, schedule, augmentation, losses, and the model the profile builds) must match.
    # Both stages: the first (recorded as first_stage) and the camera stage.
    stages = recipe_stages(PROFILES[profile])
    runtime = InferenceRuntime.from_weights(_weights(profile), device='cpu')
    provenance = runtime.metadata['provenance']
    trained = TrainConfig.from_dict(provenance['train_config'])
    assert same_training(trained, stages.camera.config)
    assert runtime.config == stages.camera.config.model.build()
    first = TrainConfig.from_dict(provenance['first_stage']['train_config'])
    assert same_training(first, stages.first.config)


def test_detection_map_at_2m(result):
    assert result.num_frames == SCENES * FRAMES
    value = result.fused.map_by_threshold[2.0]
    assert value >= 0.5, result.summary()


def test_semantic_miou(result):
    # The synthetic world has 22 label categories, many thin and rare (poles, signs, bollards,
    # parked bicycles), and world 5 films them with cameras drawn per scene (fields of view of
    # 42-95 degrees, KITTI-wide images squeezed into the network's input): the shipped weights
    # measure 0.478 (default) and 0.463 (lite) on these scenes, 0.517 / 0.461 on the held-out
    # seed. This guards against a broken camera branch (which scores below 0.1).
    assert result.miou_gt_present >= 0.38, result.summary()


def test_fused_not_worse_than_lidar_only(result):
    # Fusing the image must not cost detection quality beyond the noise of a 48-frame set: on
    # synthetic scenes the fused result lies within -0.02..+0.05 of LiDAR-only (default on the
    # held-out seed +0.025, on a fresh seed +0.027, here +0.038; lite +0.014, +0.040, -0.011).
    # A fusion reading a wrong geometry costs far more (a quarter of the recall on KITTI).
    fused = result.fused.map_by_threshold[2.0]
    lidar_only = result.lidar_only.map_by_threshold[2.0]
    assert fused >= lidar_only - 0.02, result.summary()


def test_another_camera_keeps_the_fused_quality(runtime, result, other_camera_scenes):
    assert runtime.needs_calibration  # the weights read each frame's calibration
    other = _evaluate(runtime, other_camera_scenes)
    # The same world; the clouds differ only where a sensor keeps just the points inside the
    # camera's image (A2D2's files, some others). Fusion through a wrong geometry falls well
    # below LiDAR-only (a calibration-blind model lost a quarter of its KITTI recall); here the
    # fused result must stay within the noise of 48 frames (mAP@2m moves by 0.02-0.04 between
    # held-out seeds) of both LiDAR-only and the fused result with the scenes' own cameras.
    # Measured: default 0.587 against 0.584 LiDAR-only and 0.607 with the drawn cameras, lite
    # 0.584 against 0.570 and 0.539.
    fused = other.fused.map_by_threshold[2.0]
    assert fused >= other.lidar_only.map_by_threshold[2.0] - 0.02, other.summary()
    assert fused >= result.fused.map_by_threshold[2.0] - 0.04, other.summary()
