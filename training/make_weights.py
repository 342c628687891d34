"""Make the shipped weights: generate scenes, train, evaluate held-out, export.

``make weights`` runs ``python -m training.make_weights`` (the default weights) and ``make
weights-lite`` runs it with ``--profile lite`` (the CPU profile, ``ModelConfig.lite()``, trained
by the same recipe: only the model preset differs). Steps (on a 2-core CPU about 1.5-2 hours
for the default and 1 hour for lite, plus about 35 min of scene generation the first time; a
GPU is used when present):

1. generate synthetic A2D2-format training scenes (seed ``TRAIN_DATA_SEED``) under
   ``data/synthetic/train``, the camera stage's scenes (the same seed in the world of
   ``Recipe.camera_world``: forest roadsides as well) under ``data/synthetic/train_camera`` and
   held-out scenes (seed ``HELD_OUT_SEED``) under ``data/synthetic/heldout`` (reused when
   already there with the same recipe);
2. train with ``training/configs/synthetic.yaml`` (checkpoints in ``out/weights/train``);
   then, when the recipe has a camera stage (``training/configs/synthetic_camera.yaml``),
   train the semantics (an encoder of their own and a new semantic head) from those weights
   with everything the detection reads frozen
   (``out/weights/stage1.safetensors`` -> checkpoints in ``out/weights/train_camera``), so
   that LiDAR-only and fused detections stay exactly those of the first stage;
3. evaluate the final checkpoint on the held-out scenes (``out/weights/eval``: metrics.json
   and plots);
4. export ``bev_perception/weights/<profile>.safetensors`` with provenance (including the range
   of the training cameras, ``train_cameras``) and those metrics;
5. print a summary (command, seeds, wall times, metrics) for the README.

Seeds of the synthetic generator: ``TRAIN_DATA_SEED`` for training only, ``HELD_OUT_SEED`` for
the evaluation here, and ``CI_TEST_SEED`` reserved for test/training/test_shipped_weights.py;
none of the scenes of the last two is ever trained on.
"""

import argparse
import dataclasses
import json
import logging
import os
import shlex
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from bev_perception.inference import InferenceRuntime
from bev_perception.model.network import BEVFusionNet
from bev_perception.typed_config import to_plain
from bev_perception.weights import load_weights, read_metadata, save_weights, WeightsError
import torch
from training import cameras, synthetic
from training.a2d2 import A2D2Dataset
from training.evaluate import class_map_for, evaluate, write_report
from training.export import export, portable_path
from training.settings import apply_override
from training.train import (
    CheckpointError, flat_settings, load_checkpoint, load_config, model_from_checkpoint, train,
    TrainConfig)
import yaml

#: Generator seed of the training scenes.
TRAIN_DATA_SEED = 1000
#: Generator seed of the held-out scenes evaluated by make_weights.
HELD_OUT_SEED = 2000
#: Generator seed reserved for the CI test of the shipped weights (never trained on).
CI_TEST_SEED = 3000

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How much data to generate and where everything goes (paths relative to the repo)."""

    config_path: str = 'training/configs/synthetic.yaml'
    # Second stage: a nested mapping of settings that change against the first stage's config
    # (frozen modules, schedule, ...), trained from the first stage's weights. None: one stage.
    camera_stage_path: Optional[str] = 'training/configs/synthetic_camera.yaml'
    data_dir: str = 'data/synthetic'
    out_dir: str = 'out/weights'
    weights_path: str = 'bev_perception/weights/default.safetensors'
    train_scenes: int = 600
    train_frames_per_scene: int = 2  # many short drives: the world varies per scene
    held_out_scenes: int = 30
    held_out_frames_per_scene: int = 2
    image_size: Tuple[int, int] = (640, 403)  # width, height: a third of A2D2's 1920 x 1208
    generator_workers: int = 2
    # The camera stage's scenes: the first stage's world with these generator settings (under
    # <data_dir>/train_camera, same seed and size). Forest roadsides: real images show forests
    # that the first stage's streets lack (training/EXPERIMENTS.md, "Camera stage: style, zoom
    # and forests"). None: the camera stage trains on the first stage's scenes.
    camera_world: Optional[synthetic.SyntheticConfig] = synthetic.SyntheticConfig(
        forest_side_weight=0.33)
    # Frames per scene of the camera stage's own scenes (None: train_frames_per_scene). It gets
    # as many frames as the first stage, so fewer frames per scene means more scenes: more
    # streets, cameras and looks for the same training time (``camera_scenes``). One frame per
    # scene was tried (training/EXPERIMENTS.md, E23): no gain on the real images.
    camera_frames_per_scene: Optional[int] = None
    model_overrides: Tuple[str, ...] = ()  # training config overrides that pick the model
    # Overrides of the camera stage's model (after its file) for this profile alone.
    camera_model_overrides: Tuple[str, ...] = ()
    profile: str = 'default'  # name in PROFILES (for the recorded command)

    @property
    def camera_scenes(self) -> Tuple[int, int]:
        """Return the camera stage's scenes and frames per scene (its own world's)."""
        frames = self.camera_frames_per_scene or self.train_frames_per_scene
        return max(1, self.train_scenes * self.train_frames_per_scene // frames), frames

    @property
    def command(self) -> str:
        """Return the command that makes these weights."""
        return 'python -m training.make_weights' + (
            '' if self.profile == 'default' else f' --profile {self.profile}')


#: Shipped weight profiles: the same data, schedule and augmentation; only the model differs.
PROFILES: Dict[str, Recipe] = {
    # The default's semantic head predicts at stride 2; the CPU profile keeps stride 4, where
    # stride 2 costs its runtime more than it gains (training/EXPERIMENTS.md, "Semantics at
    # stride 2").
    'default': Recipe(camera_model_overrides=('model.overrides.head.semantic_stem_detail=true',)),
    'lite': Recipe(profile='lite', out_dir='out/weights_lite',
                   weights_path='bev_perception/weights/lite.safetensors',
                   model_overrides=('model.name=lite', 'model.overrides={}')),
}


def stage_overrides(path: str) -> Tuple[str, ...]:
    """Return the ``KEY=VALUE`` overrides that the nested YAML mapping in ``path`` stands for."""
    with open(path, encoding='utf-8') as stream:
        mapping = yaml.safe_load(stream) or {}
    if not isinstance(mapping, dict):
        raise ValueError(f'{path}: expected a mapping of settings')
    return tuple(f'{key}={json.dumps(value)}'  # JSON is YAML
                 for key, value in flat_settings(mapping).items())


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training run of a recipe: its config and the overrides that make it."""

    config: TrainConfig
    overrides: Tuple[str, ...]  # applied to the recipe's config file, in order

    def command(self, config_path: str) -> str:
        """Return the ``training.train`` command line of this stage."""
        return ' '.join(shlex.quote(a) for a in [
            'python', '-m', 'training.train', '--config', config_path] + [
            item for o in self.overrides for item in ('--override', o)])


@dataclasses.dataclass(frozen=True)
class Stages:
    """The training runs of a recipe: the first stage and the camera stage (or None)."""

    first: Stage
    camera: Optional[Stage]
    first_weights: str  # the first stage's weights, where the camera stage starts


def stage_data(recipe: Recipe, camera: bool) -> Tuple[str, str]:
    """Return the (scenes, frame cache) folders of the first (or the camera) stage."""
    own = camera and recipe.camera_world is not None
    names = ('train_camera', 'cache_camera') if own else ('train', 'cache')
    return os.path.join(recipe.data_dir, names[0]), os.path.join(recipe.data_dir, names[1])


def _data_overrides(recipe: Recipe, camera: bool) -> Tuple[str, ...]:
    root, cache = stage_data(recipe, camera)
    return f'data.root={root}', f'data.cache_dir={cache}'


def recipe_stages(recipe: Recipe, overrides: Tuple[str, ...] = (),
                  camera_overrides: Tuple[str, ...] = ()) -> Stages:
    """Return the training runs of ``recipe``.

    Args:
        recipe: the recipe.
        overrides: the user's overrides of both stages (the camera stage's file still sets
            what it names).
        camera_overrides: the user's overrides of the camera stage alone.
    """
    first = _data_overrides(recipe, camera=False) + (
        f'output_dir={os.path.join(recipe.out_dir, "train")}',
    ) + recipe.model_overrides + tuple(overrides)
    first_weights = os.path.join(recipe.out_dir, 'stage1.safetensors')
    camera = None
    if recipe.camera_stage_path is not None:
        stage_file = os.path.join(REPO_ROOT, recipe.camera_stage_path)
        camera = _data_overrides(recipe, camera=True) + recipe.model_overrides + tuple(
            overrides) + stage_overrides(stage_file) + recipe.camera_model_overrides + tuple(
            camera_overrides) + (
            f'output_dir={os.path.join(recipe.out_dir, "train_camera")}',
            f'init_weights={first_weights}')
    config_path = os.path.join(REPO_ROOT, recipe.config_path)  # relative: to the repository
    return Stages(Stage(load_config(config_path, first), first),
                  None if camera is None else Stage(load_config(config_path, camera), camera),
                  first_weights)


def _read_stamp(stamp: str) -> Optional[Dict[str, Any]]:
    """Return what a root's ``generated.json`` says it holds, or None when that is unknown.

    A stamp that cannot be read or parsed (an interrupted write, a hand edit) says nothing: the
    root is then treated as foreign and generated again.
    """
    if not os.path.exists(stamp):
        return None
    try:
        with open(stamp, encoding='utf-8') as stream:
            written = json.load(stream)
    except (OSError, ValueError) as error:
        print(f'{stamp}: unreadable ({error}); generating the root again')
        return None
    return written if isinstance(written, dict) else None


def world_settings(world: synthetic.SyntheticConfig) -> Dict[str, Any]:
    """Return the generator settings of ``world`` that differ from the defaults (JSON types)."""
    default = synthetic.SyntheticConfig()
    changed = {f.name: getattr(world, f.name) for f in dataclasses.fields(world)
               if getattr(world, f.name) != getattr(default, f.name)}
    return json.loads(json.dumps(changed, default=dataclasses.asdict))


def camera_world_options(recipe: Recipe) -> List[str]:
    """Return the ``--camera-world`` settings that make the profile's camera world ``recipe``'s."""
    own = PROFILES[recipe.profile].camera_world
    if recipe.camera_world is None or own is None:
        return []
    mine, theirs = to_plain(recipe.camera_world), to_plain(own)
    return [f'{key}={json.dumps(mine[key])}' for key in sorted(mine) if mine[key] != theirs[key]]


def _generate(root: str, scenes: int, frames: int, seed: int, recipe: Recipe,
              world: synthetic.SyntheticConfig = synthetic.SyntheticConfig()) -> Dict[str, Any]:
    """Generate a synthetic root unless the same recipe already produced it.

    Scene i depends only on (seed, i), so a root of the same recipe with another scene count is
    grown by the missing scenes or trimmed, not generated again. The description records the
    generator settings that differ from the defaults (``world_config``) when there are any.
    """
    description = {'generator': 'training.synthetic', 'world': synthetic.WORLD_VERSION,
                   'seed': seed, 'scenes': scenes,
                   'frames_per_scene': frames, 'image_size': list(recipe.image_size)}
    changed = world_settings(world)
    if changed:
        description['world_config'] = changed
    stamp = os.path.join(root, 'generated.json')
    written = _read_stamp(stamp)
    if written == description:
        print(f'reusing {root} ({scenes} scenes x {frames} frames, seed {seed})')
        return description
    if os.path.exists(stamp):
        os.remove(stamp)  # the root is not what the stamp says until it is written again
    same_recipe = written is not None and dict(written, scenes=scenes) == description
    kept = written['scenes'] if same_recipe else 0  # scenes 0 .. kept - 1 are reusable
    if kept == 0 and os.path.exists(root):
        shutil.rmtree(root)
    for index in range(scenes, kept):  # fewer scenes than the root holds
        shutil.rmtree(os.path.join(root, synthetic.scene_name(seed, index)), ignore_errors=True)
    if kept < scenes:
        report = synthetic.generate(root, scenes, frames, seed, image_size=recipe.image_size,
                                    workers=recipe.generator_workers, config=world,
                                    first_scene=kept)
        print(f'generated {report.frames} frames in {report.seconds:.0f} s under {root}'
              + (f' (scenes {kept}..{scenes - 1}; the first {kept} were there)' if kept else ''))
    else:
        print(f'trimmed {root} to its first {scenes} scenes')
    with open(stamp, 'w', encoding='utf-8') as stream:
        json.dump(description, stream)
    return description


def train_cameras(root: str) -> Dict[str, Any]:
    """Return the range of the training scenes' cameras (``training.cameras.summarize``)."""
    dataset = A2D2Dataset(root, load_image=False, load_semantic=False)  # indexes, reads no frame
    geometries = [dataset.scene_camera_geometry(scene) for scene in dataset.scenes]
    return cameras.summarize([g for g in geometries if g is not None])


def _is_camera_stage(checkpoint: str) -> bool:
    return bool(load_checkpoint(checkpoint)['train_config'].get('freeze'))


def same_training(first: TrainConfig, second: TrainConfig) -> bool:
    """Return whether two configs train alike: the same model built, every other setting equal.

    (``model.name`` / ``model.overrides`` may spell the same model in two ways.)
    """
    return (first.model.build() == second.model.build()
            and dict(first.to_dict(), model=None) == dict(second.to_dict(), model=None))


#: What a first stage's provenance keeps into the camera stage's (``first_stage``).
FIRST_STAGE_FACTS = ('train_config', 'command', 'git_revision', 'training_time_s', 'epochs',
                     'steps')


def check_first_stage(stages: Stages, weights: str) -> Dict[str, Any]:
    """Check that ``weights`` were made by the first stage of ``stages``, or from it.

    ``weights`` is the first stage's file, or weights of both stages (e.g. the shipped ones)
    whose camera stage froze every module of the first stage that this recipe's camera stage
    does not start afresh (``rebuild_first_stage``).

    Returns:
        The file's provenance.

    Raises:
        ValueError: the file is unusable or was trained with another config.
    """
    try:
        provenance = read_metadata(weights).get('provenance', {})
    except WeightsError as error:
        raise ValueError(str(error)) from error
    two_stage = 'first_stage' in provenance
    first = provenance['first_stage'] if two_stage else provenance
    trained = first.get('train_config') if isinstance(first, dict) else None
    if trained is None or not same_training(TrainConfig.from_dict(trained),
                                            stages.first.config):
        raise ValueError(f'{weights}: not trained by the first stage of this recipe (its '
                         'recorded train_config differs)')
    if two_stage:
        if not isinstance(provenance.get('train_config'), dict):
            raise ValueError(f"{weights}: its camera stage's train_config is not recorded")
        _kept_modules(stages, weights, provenance, BEVFusionNet(stages.first.config.model.build()))
        try:  # its tensors are read only after the scenes are generated: checked here
            load_weights(weights)
        except WeightsError as error:
            raise ValueError(str(error)) from error
    return provenance


def _kept_modules(stages: Stages, weights: str, provenance: Dict[str, Any],
                  first_model: torch.nn.Module) -> List[str]:
    """Return the modules of ``first_model`` that the two-stage file ``weights`` holds as trained.

    Raises:
        ValueError: its camera stage trained a module that this recipe's camera stage reads.
    """
    frozen = TrainConfig.from_dict(provenance['train_config']).freeze
    fresh = stages.camera.config.init_fresh if stages.camera is not None else ()
    weighted = [name for name, module in first_model.named_children()
                if list(module.parameters())]
    trained = sorted(set(weighted) - set(frozen) - set(fresh))
    if trained:
        raise ValueError(f'{weights}: its camera stage trained {trained}, so it does not hold '
                         "them as the first stage left them; give the first stage's own file")
    return [name for name in weighted if name in frozen]


def rebuild_first_stage(stages: Stages, weights: str, out: str,
                        provenance: Optional[Dict[str, Any]] = None) -> None:
    """Write to ``out`` the first stage of ``weights``, a file of both stages.

    Its camera stage froze the first stage's modules (``_kept_modules``): they are copied; the
    modules this recipe's camera stage starts afresh (its ``init_fresh``) are initialised
    afresh here too. The provenance is the first stage's, as recorded in ``weights`` (whose
    provenance, when already read, is ``provenance``).
    """
    if provenance is None:
        provenance = read_metadata(weights)['provenance']
    config = stages.first.config.model.build()
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(stages.first.config.seed)
        model = BEVFusionNet(config)
    kept = _kept_modules(stages, weights, provenance, model)
    source, _, _ = load_weights(weights)
    state = model.state_dict()
    theirs = source.state_dict()
    for name in state:
        if name.split('.')[0] in kept:
            if name not in theirs or theirs[name].shape != state[name].shape:
                raise ValueError(f"{weights}: tensor {name} differs from the first stage's")
            state[name] = theirs[name]
    model.load_state_dict(state)
    first = {key: provenance['first_stage'][key] for key in FIRST_STAGE_FACTS}
    save_weights(out, model, config, dict(first, rebuilt_from=portable_path(weights)))


def use_first_stage(stages: Stages, weights: str) -> None:
    """Start the camera stage from ``weights`` (made by this recipe's first stage, or from it)."""
    provenance = check_first_stage(stages, weights)
    os.makedirs(os.path.dirname(stages.first_weights) or '.', exist_ok=True)
    if 'first_stage' in provenance:
        rebuild_first_stage(stages, weights, stages.first_weights, provenance)
    elif os.path.abspath(weights) != os.path.abspath(stages.first_weights):
        shutil.copyfile(weights, stages.first_weights)


def make_weights(recipe: Recipe, overrides: Tuple[str, ...] = (),
                 resume: Optional[str] = None,
                 camera_overrides: Tuple[str, ...] = (),
                 first_stage_weights: Optional[str] = None) -> Dict[str, Any]:
    """Run the whole recipe; return the summary that is also printed.

    Args:
        recipe: what to generate, train and export.
        overrides: training config overrides (both stages).
        resume: a checkpoint of this recipe's training to continue from (an interrupted run,
            or a finished one whose recipe gained epochs) instead of a fresh run: of the first
            stage (the camera stage then runs afresh) or of the camera stage.
        camera_overrides: overrides of the camera stage alone.
        first_stage_weights: weights of this recipe's first stage to start the camera stage
            from, instead of training the first stage.
    """
    started = time.perf_counter()
    os.chdir(REPO_ROOT)
    timings: Dict[str, float] = {}

    tick = time.perf_counter()
    train_root = stage_data(recipe, camera=False)[0]
    held_out_root = os.path.join(recipe.data_dir, 'heldout')
    train_data = _generate(train_root, recipe.train_scenes, recipe.train_frames_per_scene,
                           TRAIN_DATA_SEED, recipe)
    camera_data = None  # the camera stage's own scenes, when the recipe gives it a world
    if recipe.camera_stage_path is not None and recipe.camera_world is not None:
        camera_data = _generate(stage_data(recipe, camera=True)[0], *recipe.camera_scenes,
                                TRAIN_DATA_SEED, recipe, recipe.camera_world)
    held_out_data = _generate(held_out_root, recipe.held_out_scenes,
                              recipe.held_out_frames_per_scene, HELD_OUT_SEED, recipe)
    timings['generate_s'] = time.perf_counter() - tick

    tick = time.perf_counter()
    command = recipe.command + ''.join(f' --override {shlex.quote(o)}' for o in overrides) + (
        ''.join(f' --camera-world {shlex.quote(s)}' for s in camera_world_options(recipe))) + (
        ''.join(f' --camera-override {shlex.quote(o)}' for o in camera_overrides)) + (
        ' --one-stage' if recipe.camera_stage_path is None else '') + (
        '' if first_stage_weights is None
        else f' --first-stage {shlex.quote(portable_path(first_stage_weights))}')
    stages = recipe_stages(recipe, tuple(overrides), tuple(camera_overrides))
    resume_camera = stages.camera is not None and resume is not None and _is_camera_stage(
        resume)
    if first_stage_weights is not None:
        use_first_stage(stages, first_stage_weights)
    first_stage: Optional[Dict[str, Any]] = None
    if not resume_camera and first_stage_weights is None:
        if resume is None and os.path.isdir(stages.first.config.output_dir):
            shutil.rmtree(stages.first.config.output_dir)  # fresh: no stale checkpoints
        result = train(stages.first.config, resume=resume,
                       command=stages.first.command(recipe.config_path))
    if stages.camera is not None:
        if not resume_camera:
            if first_stage_weights is None:
                export(result.checkpoint, stages.first_weights, None,
                       {'recipe': 'training.make_weights (first stage)'})
            if os.path.isdir(stages.camera.config.output_dir):
                shutil.rmtree(stages.camera.config.output_dir)  # a fresh camera stage
        first = read_metadata(stages.first_weights)['provenance']
        first_stage = {key: first[key] for key in FIRST_STAGE_FACTS}
        result = train(stages.camera.config, resume=resume if resume_camera else None,
                       command=stages.camera.command(recipe.config_path))
    timings['train_s'] = time.perf_counter() - tick
    config = (stages.camera or stages.first).config

    tick = time.perf_counter()
    state = load_checkpoint(result.checkpoint)
    model, model_config = model_from_checkpoint(state)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    runtime = InferenceRuntime(model, model_config, {'train_config': state['train_config']},
                               device=device)
    dataset = A2D2Dataset(held_out_root, class_map=class_map_for(runtime),
                          classes=model_config.detection_classes)
    evaluation = evaluate(runtime, dataset)
    eval_dir = os.path.join(recipe.out_dir, 'eval')
    held_out = {'root': held_out_root, **held_out_data}
    metrics_path = write_report(evaluation, eval_dir, {'held_out': held_out})
    timings['evaluate_s'] = time.perf_counter() - tick

    with open(metrics_path, encoding='utf-8') as stream:
        metrics = json.load(stream)
    resumed_from = None if resume is None else portable_path(resume)  # no machine path
    provenance = export(result.checkpoint, recipe.weights_path, metrics, {
        'recipe': 'training.make_weights', 'make_command': command,
        'train_data': train_data, 'camera_train_data': camera_data,
        'held_out_data': held_out_data,
        'train_cameras': train_cameras(train_root), 'ci_test_seed': CI_TEST_SEED,
        'resumed_from': resumed_from, 'first_stage': first_stage}, command)
    timings['total_s'] = time.perf_counter() - started
    summary = {
        'command': command,
        'weights': recipe.weights_path,
        'weights_mb': round(os.path.getsize(recipe.weights_path) / 1e6, 2),
        'train_data': train_data,
        'camera_train_data': camera_data,
        'held_out_data': held_out_data,
        'train_seed': config.seed,
        'model': config.model.name,
        'epochs': result.epochs_done,
        'resumed_from': resumed_from,
        'steps': result.steps,
        'git_revision': provenance['git_revision'],  # recorded when the training started
        'device': device,
        'torch_threads': torch.get_num_threads(),
        'wall_times_s': {k: round(v, 1) for k, v in timings.items()},
        'held_out_metrics': evaluation.summary(),
        'held_out_ap_2m_fused': {name: round(v[2.0], 4) for name, v in evaluation.fused.ap.items()
                                 if v[2.0] == v[2.0]},
        'metrics_file': metrics_path,
    }
    return summary


def _restart_with_short_openmp_spin(argv: List[str]) -> None:
    """Re-run this command with ``GOMP_SPINCOUNT=1000`` unless an OpenMP wait policy is set.

    Idle OpenMP threads of torch then spin only briefly before they sleep. By default they spin
    for a long time, and on a small machine shared with other work a thread spinning while it
    waits for a descheduled peer costs a training step several times its compute. Measured
    here (2 cores, batch 2 step of the synthetic recipe): idle machine 0.36 s default, 0.41 s
    short spin, 0.55 s passive; two busy processes beside it 1-14 s default, 0.37-0.47 s short
    spin, 0.50-0.64 s passive. The variable must be set before torch starts its thread pool,
    hence the exec.
    """
    if 'OMP_WAIT_POLICY' in os.environ or 'GOMP_SPINCOUNT' in os.environ:
        return
    environment = dict(os.environ, GOMP_SPINCOUNT='1000')
    os.execve(sys.executable, [sys.executable, '-m', 'training.make_weights', *argv],
              environment)


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    if argv is None:
        _restart_with_short_openmp_spin(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                        help='training config override of both stages, e.g. optim.epochs=4 '
                             "(repeatable; the camera stage's file still sets what it names)")
    parser.add_argument('--camera-override', action='append', default=[], metavar='KEY=VALUE',
                        help='training config override of the camera stage alone (repeatable)')
    parser.add_argument('--camera-world', action='append', default=[], metavar='KEY=VALUE',
                        help="generator setting of the camera stage's scenes over the recipe's "
                             '(repeatable), e.g. bare_tree_share=0.25; see '
                             'training.synthetic.SyntheticConfig')
    parser.add_argument('--first-stage', metavar='WEIGHTS',
                        help='weights of the first stage (e.g. out/weights/stage1.safetensors '
                             'of an earlier run, or weights of both stages such as the shipped '
                             'ones): train only the camera stage from them')
    parser.add_argument('--one-stage', action='store_true',
                        help='skip the camera stage: export the first stage')
    parser.add_argument('--profile', choices=sorted(PROFILES), default='default',
                        help='which shipped weights to make (default: %(default)s)')
    parser.add_argument('--train-scenes', type=int, default=Recipe.train_scenes)
    parser.add_argument('--weights', help="output weights file (default: the profile's)")
    parser.add_argument('--resume', metavar='CHECKPOINT',
                        help='continue the training from a checkpoint of this profile, e.g. '
                             'out/weights/train/checkpoints/last.pt (default: a fresh run)')
    args = parser.parse_args(argv)
    if args.train_scenes < 1:
        parser.error(f'--train-scenes must be at least 1, got {args.train_scenes}')
    for option, assignments in (('--override', args.override),
                                ('--camera-override', args.camera_override)):
        for assignment in assignments:  # the form, named by its option; the keys: below
            try:
                apply_override({}, assignment, option)
            except ValueError as error:
                parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    recipe = dataclasses.replace(PROFILES[args.profile], train_scenes=args.train_scenes)
    if args.one_stage:
        recipe = dataclasses.replace(recipe, camera_stage_path=None)
    if args.weights:
        recipe = dataclasses.replace(recipe, weights_path=args.weights)
    if args.camera_world:
        if recipe.camera_stage_path is None or recipe.camera_world is None:
            parser.error('--camera-world needs a camera stage with scenes of its own')
        try:
            recipe = dataclasses.replace(recipe, camera_world=synthetic.world_config(
                args.camera_world, recipe.camera_world, '--camera-world'))
        except ValueError as error:
            parser.error(str(error))
    resume = None
    if args.resume:  # checked before minutes of scene generation; make_weights changes folder
        resume = os.path.abspath(args.resume)
        try:
            load_checkpoint(resume)
        except CheckpointError as error:
            raise SystemExit(f'training.make_weights: {error}') from None
    try:  # the configs are checked before minutes of generation, too
        stages = recipe_stages(recipe, tuple(args.override), tuple(args.camera_override))
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise SystemExit(f'training.make_weights: {error}') from None
    if resume is not None and _is_camera_stage(resume):
        if stages.camera is None:
            raise SystemExit(f'training.make_weights: {args.resume} is a camera-stage '
                             'checkpoint, but --one-stage trains the first stage only')
        first_weights = os.path.join(REPO_ROOT, stages.first_weights)
        if not os.path.isfile(first_weights):
            raise SystemExit(f'training.make_weights: {first_weights}: missing; a camera-stage '
                             'checkpoint continues from the first stage that made it')
    first_stage = None
    if args.first_stage:
        if stages.camera is None or resume is not None:
            parser.error('--first-stage needs the camera stage and no --resume')
        first_stage = os.path.abspath(args.first_stage)
        try:
            check_first_stage(stages, first_stage)  # before minutes of generation
        except ValueError as error:
            raise SystemExit(f'training.make_weights: {error}') from None
    summary = make_weights(recipe, tuple(args.override), resume, tuple(args.camera_override),
                           first_stage)
    print('\n=== make weights summary (paste into README) ===')
    print(json.dumps(summary, indent=2))
    return 0 if summary['held_out_metrics']['map_2m_fused'] is not None else 1


if __name__ == '__main__':
    sys.exit(main())
