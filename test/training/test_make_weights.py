"""Tests of training.make_weights: the synthetic roots it generates and reuses."""

import dataclasses
import filecmp
import json
import os

from bev_perception.model.network import BEVFusionNet
from bev_perception.weights import load_weights
import numpy as np
import pytest
import torch
from training import make_weights, synthetic
from training.train import DETECTION_MODULES, frozen_modules

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, 'training', 'configs', 'tiny_test.yaml')
SEED = 23
FRAMES = 1


def _recipe(workers: int = 1) -> make_weights.Recipe:
    return dataclasses.replace(make_weights.Recipe(), image_size=(64, 40),
                               generator_workers=workers)


def _files(root) -> list:
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def _same_tree(first, second) -> None:
    files = _files(first)
    assert files == _files(second)
    match, mismatch, errors = filecmp.cmpfiles(first, second, files, shallow=False)
    assert mismatch == [] and errors == []


def test_a_root_grows_and_shrinks_to_the_files_a_fresh_run_writes(tmp_path, capsys):
    grown, fresh, small = (str(tmp_path / name) for name in ('grown', 'fresh', 'small'))
    make_weights._generate(grown, 2, FRAMES, SEED, _recipe())
    first_scene = os.path.join(grown, synthetic.scene_name(SEED, 0))
    before = os.path.getmtime(first_scene)
    capsys.readouterr()
    description = make_weights._generate(grown, 3, FRAMES, SEED, _recipe())
    assert 'scenes 2..2; the first 2 were there' in capsys.readouterr().out
    assert os.path.getmtime(first_scene) == before  # kept, not written again
    make_weights._generate(fresh, 3, FRAMES, SEED, _recipe(workers=2))
    _same_tree(grown, fresh)
    with open(os.path.join(grown, 'generated.json'), encoding='utf-8') as stream:
        assert json.load(stream) == description and description['scenes'] == 3

    make_weights._generate(grown, 2, FRAMES, SEED, _recipe())  # back to two scenes
    assert 'trimmed' in capsys.readouterr().out
    make_weights._generate(small, 2, FRAMES, SEED, _recipe())
    _same_tree(grown, small)


def test_another_seed_or_frame_count_generates_the_root_again(tmp_path):
    root = str(tmp_path / 'root')
    make_weights._generate(root, 2, FRAMES, SEED, _recipe())
    make_weights._generate(root, 3, FRAMES, SEED + 1, _recipe())
    names = {synthetic.scene_name(SEED + 1, index) for index in range(3)}
    assert {name for name in os.listdir(root) if name[0].isdigit()} == names


def test_first_scene_must_leave_something_to_generate(tmp_path):
    with pytest.raises(ValueError, match='first_scene'):
        synthetic.generate(str(tmp_path), 2, 1, SEED, image_size=(64, 40), first_scene=2)


def test_a_corrupt_stamp_means_the_root_is_generated_again(tmp_path, capsys):
    root, fresh = str(tmp_path / 'root'), str(tmp_path / 'fresh')
    make_weights._generate(root, 2, FRAMES, SEED, _recipe())
    stamp = os.path.join(root, 'generated.json')
    with open(stamp, 'w', encoding='utf-8') as stream:
        stream.write('{"generator": "training.synth')  # an interrupted write
    lidar = os.path.join(root, synthetic.scene_name(SEED, 1), 'lidar', 'cam_front_center')
    os.remove(os.path.join(lidar, os.listdir(lidar)[0]))  # a root the stamp vouches for no more
    capsys.readouterr()
    description = make_weights._generate(root, 2, FRAMES, SEED, _recipe())
    assert 'generated.json: unreadable' in capsys.readouterr().out
    make_weights._generate(fresh, 2, FRAMES, SEED, _recipe())
    _same_tree(root, fresh)
    with open(stamp, encoding='utf-8') as stream:
        assert json.load(stream) == description


def test_a_root_of_another_world_records_it_and_holds_other_scenes(tmp_path):
    assert make_weights.world_settings(synthetic.SyntheticConfig()) == {}
    forests = synthetic.SyntheticConfig(forest_side_weight=100.0)
    plain, forest = str(tmp_path / 'plain'), str(tmp_path / 'forest')
    assert 'world_config' not in make_weights._generate(plain, 1, FRAMES, SEED, _recipe())
    description = make_weights._generate(forest, 1, FRAMES, SEED, _recipe(), forests)
    assert description['world_config'] == {'forest_side_weight': 100.0}
    clouds = [[np.load(os.path.join(root, name))['points'] for name in _files(root)
               if '/lidar/' in name] for root in (plain, forest)]  # one frame each
    (plain_points,), (forest_points,) = clouds
    assert plain_points.shape != forest_points.shape or not np.array_equal(plain_points,
                                                                           forest_points)
    # A recipe without a camera world trains both stages on the same scenes.
    stages = make_weights.recipe_stages(dataclasses.replace(_recipe(), camera_world=None))
    assert stages.camera.config.data == stages.first.config.data


def test_the_camera_stage_gets_as_many_frames_as_the_first_from_its_own_scene_count():
    recipe = make_weights.Recipe(train_scenes=30, train_frames_per_scene=4,
                                 camera_frames_per_scene=1)
    assert recipe.camera_scenes == (120, 1)  # four times the streets, one frame each
    assert dataclasses.replace(recipe, camera_frames_per_scene=None).camera_scenes == (30, 4)
    assert dataclasses.replace(recipe, camera_frames_per_scene=8).camera_scenes == (15, 8)
    assert dataclasses.replace(recipe, train_scenes=1, train_frames_per_scene=1,
                               camera_frames_per_scene=2).camera_scenes == (1, 2)


def test_the_camera_stage_trains_from_the_first_and_keeps_its_lidar_only_outputs(tmp_path):
    stage_file = tmp_path / 'camera_stage.yaml'
    stage_file.write_text('freeze: [pillar_net, backbone, detection_head]\n'
                          'init_fresh: [semantic_head]\n'
                          'model: {overrides: {head: {semantic_levels: [c2, c3, c4, c5]}}}\n'
                          'optim: {epochs: 1, lr: 0.01}\n', encoding='utf-8')
    recipe = dataclasses.replace(
        _recipe(), config_path=TINY_CONFIG, camera_stage_path=str(stage_file),
        data_dir=str(tmp_path / 'data'), out_dir=str(tmp_path / 'out'),
        weights_path=str(tmp_path / 'tiny.safetensors'), train_scenes=2,
        train_frames_per_scene=1, held_out_scenes=1, held_out_frames_per_scene=1)
    summary = make_weights.make_weights(recipe)
    stages = make_weights.recipe_stages(recipe)
    assert summary['epochs'] == 1  # the camera stage's
    first, first_config, _ = load_weights(stages.first_weights)
    final, final_config, metadata = load_weights(recipe.weights_path)
    assert final_config.head.semantic_levels == ('c2', 'c3', 'c4', 'c5')
    assert first_config.head.semantic_levels == ('c3', 'c4', 'c5')
    provenance = metadata['provenance']
    assert provenance['train_config'] == stages.camera.config.to_dict()
    assert provenance['first_stage']['train_config'] == stages.first.config.to_dict()
    assert provenance['train_config']['init_weights'] == stages.first_weights
    camera_root = os.path.join(recipe.data_dir, 'train_camera')  # the recipe's camera_world
    assert stages.camera.config.data.root == camera_root
    assert provenance['camera_train_data']['world_config'] == make_weights.world_settings(
        recipe.camera_world) != {}
    camera_data = provenance['camera_train_data']
    assert (camera_data['scenes'], camera_data['frames_per_scene']) == recipe.camera_scenes
    points = [torch.rand(800, 4) * torch.tensor([40.0, 40.0, 3.0, 1.0])
              - torch.tensor([0.0, 20.0, 1.5, 0.0])]
    with torch.no_grad():
        assert torch.equal(first(points).heatmap, final(points).heatmap)  # LiDAR-only
    for name, value in first.camera_encoder.state_dict().items():
        if value.is_floating_point() and not torch.equal(
                value, final.camera_encoder.state_dict()[name]):
            break
    else:
        raise AssertionError('the camera stage left the camera encoder as it was')

    # A finished camera stage resumed: nothing trains again, the same weights come out.
    camera_last = os.path.join(stages.camera.config.output_dir, 'checkpoints', 'last.pt')
    first_stamp = os.path.getmtime(stages.first_weights)
    again = make_weights.make_weights(recipe, resume=camera_last)
    assert again['epochs'] == 1 and os.path.getmtime(stages.first_weights) == first_stamp
    resumed, _, _ = load_weights(recipe.weights_path)
    for name, value in final.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name

    # This camera stage trained the camera encoder and the fusion: its file does not hold the
    # first stage, and the camera stage cannot start from it.
    with pytest.raises(ValueError, match=r"trained \['camera_encoder', 'fusion'\]"):
        make_weights.check_first_stage(stages, recipe.weights_path)

    # The camera stage alone, from first-stage weights kept elsewhere: recorded as such.
    kept = tmp_path / 'kept_stage1.safetensors'
    os.replace(stages.first_weights, kept)
    third = make_weights.make_weights(recipe, first_stage_weights=str(kept))
    assert third['command'].endswith(f' --first-stage {kept.name}')  # no machine path
    alone, _, metadata = load_weights(recipe.weights_path)
    assert metadata['provenance']['first_stage']['train_config'] == (
        stages.first.config.to_dict())
    with torch.no_grad():
        assert torch.equal(first(points).heatmap, alone(points).heatmap)


@pytest.mark.parametrize('profile', sorted(make_weights.PROFILES))
def test_the_shipped_weights_give_back_their_first_stage(profile, tmp_path):
    # The recipe's camera stage freezes everything of the first stage but the semantic head,
    # which it starts afresh: the shipped file holds the first stage, and a camera stage can
    # start from it on a machine where the first stage's own file is gone.
    recipe = make_weights.PROFILES[profile]
    stages = make_weights.recipe_stages(recipe)
    shipped = os.path.join(make_weights.REPO_ROOT, recipe.weights_path)
    make_weights.check_first_stage(stages, shipped)
    out = str(tmp_path / 'stage1.safetensors')
    make_weights.rebuild_first_stage(stages, shipped, out)
    first, first_config, metadata = load_weights(out)
    final, _, final_metadata = load_weights(shipped)
    assert first_config == stages.first.config.model.build()
    recorded = final_metadata['provenance']['first_stage']
    assert {k: metadata['provenance'][k] for k in recorded} == recorded
    make_weights.check_first_stage(stages, out)  # now a first-stage file itself
    points = [torch.rand(800, 4) * torch.tensor([40.0, 40.0, 3.0, 1.0])
              - torch.tensor([0.0, 20.0, 1.5, 0.0])]
    with torch.no_grad():
        assert torch.equal(first(points).heatmap, final(points).heatmap)  # LiDAR-only
    for name, value in first.camera_encoder.state_dict().items():
        assert torch.equal(value, final.camera_encoder.state_dict()[name]), name
    # A truncated copy is refused before anything runs, the file named.
    truncated = tmp_path / 'truncated.safetensors'
    data = open(shipped, 'rb').read()
    truncated.write_bytes(data[:len(data) - 1000])
    with pytest.raises(ValueError, match='truncated.safetensors'):
        make_weights.check_first_stage(stages, str(truncated))


def test_a_bad_camera_stage_file_is_named_before_anything_runs(tmp_path):
    stage_file = tmp_path / 'camera_stage.yaml'
    stage_file.write_text('optim: {epochs: many}\n', encoding='utf-8')
    recipe = dataclasses.replace(_recipe(), config_path=TINY_CONFIG,
                                 camera_stage_path=str(stage_file))
    with pytest.raises(ValueError, match='optim.epochs'):
        make_weights.recipe_stages(recipe)


@pytest.mark.parametrize('args, message', [
    (['--camera-override', 'optim..lr=1'], "--camera-override 'optim..lr=1': empty key"),
    (['--override', 'optim.lr'], "--override 'optim.lr': expected key.path=value"),
    (['--override', 'optim.lr=0.1', '--camera-override', 'optim.lr=[0.1,'],
     "--camera-override 'optim.lr=[0.1,': the value is not valid YAML"),
    (['--camera-world', 'bare_trees=1'], "--camera-world: unknown keys ['bare_trees']"),
    (['--camera-world', 'dry_verge_share=[1]'], '--camera-world.dry_verge_share'),
    (['--one-stage', '--camera-world', 'dry_verge_share=1'],
     '--camera-world needs a camera stage'),
])
def test_a_malformed_override_is_a_usage_error_naming_its_option(args, message, capsys):
    with pytest.raises(SystemExit) as raised:
        make_weights.main(args)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_camera_world_settings_change_the_recipe_and_are_recorded_in_its_command():
    recipe = make_weights.PROFILES['default']
    assert make_weights.camera_world_options(recipe) == []
    changed = dataclasses.replace(recipe, camera_world=synthetic.world_config(
        ['dry_verge_share=0.3', 'forest_side_weight=0'], recipe.camera_world))
    assert changed.camera_world.dry_verge_share == 0.3
    assert changed.camera_world.forest_side_weight == 0.0  # back to the default, recorded
    options = make_weights.camera_world_options(changed)
    assert options == ['dry_verge_share=0.3', 'forest_side_weight=0.0']
    # The options rebuild the world from the profile's.
    assert synthetic.world_config(options, recipe.camera_world) == changed.camera_world


@pytest.mark.parametrize('profile', sorted(make_weights.PROFILES))
def test_the_recipes_camera_stage_trains_the_semantics_alone(profile):
    # Everything the detection reads stays the first stage's: fused and LiDAR-only boxes of
    # the shipped weights are the first stage's, and only the semantics change.
    stages = make_weights.recipe_stages(make_weights.PROFILES[profile])
    model = BEVFusionNet(stages.camera.config.model.build())
    frozen_modules(model, stages.camera.config.freeze)  # as training.train freezes them
    training = {name.split('.')[0] for name, value in model.named_parameters()
                if value.requires_grad}
    assert training == {'semantic_encoder', 'semantic_head'}
    assert stages.camera.config.init_fresh == ('semantic_head',)
    # ... and its steps take training.train's semantic-only path, which skips exactly the
    # modules the detection reads: every module with weights but the semantic ones.
    assert set(DETECTION_MODULES) <= set(stages.camera.config.freeze)
    weighted = {name for name, module in model.named_children() if list(module.parameters())}
    assert set(DETECTION_MODULES) == weighted - training
    # The default alone predicts its semantics at stride 2 (its camera_model_overrides).
    assert stages.camera.config.model.build().head.semantic_stem_detail == (profile != 'lite')
