"""Multi-task training of BEVFusionNet on A2D2-format data (single process, or DDP via torchrun).

Usage::

    python -m training.train --config training/configs/synthetic.yaml [--out DIR]
        [--resume CKPT|last] [--override optim.lr=0.001 --override model.name=lite ...]
    torchrun --nproc_per_node 4 -m training.train --config training/configs/a2d2.yaml

The YAML file is read into the typed ``TrainConfig`` (every key checked, unknown keys fail).
``--override key.path=value`` sets one value (parsed as YAML) before the check.

What happens: AdamW (no weight decay on biases and norm weights), linear warm-up then cosine
decay per step (optionally restarted: ``optim.restart_epochs``), gradient clipping, AMP
(float16 autocast + GradScaler) on CUDA only, optionally an exponential moving average of the
weights (``optim.ema_decay``: the checkpoint's model is then the average, ``training.averaging``),
consistent augmentation and camera dropout (``training.augment``), a tqdm bar and TensorBoard
scalars on rank 0, and after every epoch a checkpoint written atomically (temporary file +
``os.replace``) holding model, optimiser, scheduler, scaler, epoch, step and the python /
numpy / torch / CUDA random states as plain types and tensors, so ``torch.load(...,
weights_only=True)`` reads it.
``--resume`` restores all of it and continues exactly where the run stopped: data order and
augmentation are functions of (seed, epoch, index), so an interrupted run resumed at an epoch
boundary equals an uninterrupted one (bit for bit in deterministic mode on the same machine
with one intra-op thread, ``OMP_NUM_THREADS=1``; with more, CPU reductions may round in
another order and the runs agree to float precision).
The schedule comes from the config, not the checkpoint: a finished run resumed with more epochs
and a restart at its old end continues as a run that had that schedule from the start.

Under ``torchrun`` (``WORLD_SIZE`` > 1) it initialises ``torch.distributed`` from env://
(NCCL on CUDA, else gloo), wraps the model in DDP and shards the data with a DistributedSampler
(``set_epoch`` every epoch); ``optim.batch_size`` is per process. Only rank 0 logs and writes.
"""

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import random
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from bev_perception.model.config import ModelConfig
from bev_perception.model.network import BEVFusionNet
from bev_perception.typed_config import build_dataclass, to_plain
from bev_perception.weights import load_weights, WeightsError
import numpy as np
import torch
from torch import distributed
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
import tqdm
from training.a2d2 import A2D2Dataset, DEFAULT_CLASS_MAP, DEFAULT_VAL_SCENES
from training.augment import AugmentConfig
from training.averaging import WeightAverage
from training.data import Batch, collate_examples, FrameCache, PreparedFrames, TrainingDataset
from training.losses import LossBreakdown, LossWeights, multitask_loss, semantic_loss
from training.settings import apply_override
from training.targets import TargetConfig
import yaml

LOGGER = logging.getLogger(__name__)

#: Identifies training checkpoints (deployable weights are safetensors, see training.export).
CHECKPOINT_FORMAT = 'bev_perception.train_checkpoint'
#: With ``optim.ema_decay``, the checkpoint's ``model`` is the weight average (what evaluation
#: and export read) and this key holds the weights the optimiser steps.
TRAINED_MODEL = 'trained_model'
CHECKPOINT_VERSION = 1

#: Model presets selectable by name in the config.
MODEL_PRESETS = {'default': ModelConfig, 'lite': ModelConfig.lite, 'tiny': ModelConfig.tiny}


# ----------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the frames come from and how box classes map to the detection classes."""

    root: str = 'data/synthetic/train'
    scenes: Optional[Tuple[str, ...]] = None  # None: every scene folder under root
    split: Optional[str] = None  # None (all scenes), 'train' or 'val' (see val_scenes)
    val_scenes: Union[int, Tuple[str, ...]] = DEFAULT_VAL_SCENES  # names, or the last n
    class_map: Optional[Dict[str, Optional[str]]] = None  # None: training.a2d2's default
    load_semantic: bool = True
    cache_dir: Optional[str] = None  # prepared-frame cache (None: prepare on the fly)

    def resolved_class_map(self) -> Dict[str, Optional[str]]:
        """Return the class map, defaulting to the reader's A2D2 grouping."""
        return dict(DEFAULT_CLASS_MAP if self.class_map is None else self.class_map)


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """Model preset ('default', 'lite', 'tiny') and nested overrides of its config dict."""

    name: str = 'default'
    overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def build(self) -> ModelConfig:
        """Return the preset's ModelConfig with the overrides merged in."""
        if self.name not in MODEL_PRESETS:
            raise ValueError(f'model.name {self.name!r} not in {sorted(MODEL_PRESETS)}')
        merged = _deep_merge(MODEL_PRESETS[self.name]().to_dict(), self.overrides, 'model')
        return ModelConfig.from_dict(merged)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule (steps are optimiser steps)."""

    epochs: int = 20
    batch_size: int = 4  # per process
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100  # linear warm-up from warmup_start_ratio * lr
    warmup_start_ratio: float = 0.01
    min_lr_ratio: float = 0.01  # cosine decays to min_lr_ratio * lr at the last step
    # Warm restarts: the cosine ends (at min_lr_ratio) after each of these epochs and starts
    # again from restart_lr_ratio * lr, decaying to min_lr_ratio by the next restart or the end.
    restart_epochs: Tuple[int, ...] = ()
    restart_lr_ratio: float = 0.5
    grad_clip_norm: float = 10.0  # 0 disables clipping
    amp: bool = True  # float16 autocast + GradScaler, on CUDA only
    # Exponential moving average of the weights (training.averaging), evaluated and exported
    # instead of the last step's: the decay per step, 0 = off.
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError('optim.epochs and optim.batch_size must be at least 1')
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError('optim.lr must be positive and optim.warmup_steps >= 0')
        restarts = list(self.restart_epochs)
        if restarts != sorted(set(restarts)) or any(not 0 < e < self.epochs for e in restarts):
            raise ValueError(f'optim.restart_epochs {restarts} must be increasing epochs between '
                             f'0 and optim.epochs ({self.epochs}), exclusive')
        if not 0 < self.restart_lr_ratio <= 1:
            raise ValueError(f'optim.restart_lr_ratio must be in (0, 1], got '
                             f'{self.restart_lr_ratio}')
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f'optim.ema_decay must be in [0, 1), got {self.ema_decay}')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs (one YAML file)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    loss: LossWeights = dataclasses.field(default_factory=LossWeights)
    target: TargetConfig = dataclasses.field(default_factory=TargetConfig)
    seed: int = 0
    # Weights file (.safetensors) whose parameters start the run (fine-tuning); its model
    # config must equal this run's (but see init_fresh). None: random initialisation. A
    # resumed run ignores it.
    init_weights: Optional[str] = None
    # Top-level modules of the network (``BEVFusionNet`` attributes, e.g. pillar_net, backbone,
    # detection_head) held at their starting values: no gradient, no weight decay, BatchNorm
    # statistics fixed. Freezing the LiDAR path keeps LiDAR-only outputs bit-identical while
    # the camera branch trains. Needs init_weights.
    freeze: Tuple[str, ...] = ()
    # Top-level modules that start fresh instead of from init_weights (a new head: the
    # semantic head at other camera levels); FRESH_CONFIG_FIELDS says which ones may.
    init_fresh: Tuple[str, ...] = ()
    deterministic: bool = False  # torch.use_deterministic_algorithms, no cudnn autotune
    workers: int = 2  # DataLoader worker processes per rank
    device: str = 'auto'  # 'auto' (CUDA when available), 'cpu', 'cuda'
    output_dir: str = 'out/train'  # checkpoints and TensorBoard logs (--out overrides)
    log_every_steps: int = 10  # TensorBoard scalar period
    keep_checkpoints: int = 3  # per-epoch files kept besides last.pt (0: keep all)

    def __post_init__(self) -> None:
        if self.freeze and self.init_weights is None:
            raise ValueError(f'freeze {list(self.freeze)} needs init_weights: frozen modules '
                             'would stay at their random initialisation')
        if set(self.freeze) & set(self.init_fresh):
            raise ValueError(f'{sorted(set(self.freeze) & set(self.init_fresh))} both frozen '
                             'and started fresh')

    def to_dict(self) -> Dict[str, Any]:
        """Return a JSON/YAML-safe nested dict."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'TrainConfig':
        """Build and check a config from nested dicts (unknown keys fail)."""
        return build_dataclass(cls, data, 'config')


def _deep_merge(base: Dict[str, Any], overrides: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Return ``base`` with ``overrides`` merged in recursively (keys must exist in base)."""
    merged = dict(base)
    for key, value in overrides.items():
        if key not in merged:
            raise ValueError(f'{where}.overrides: unknown key {key!r}')
        if isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _deep_merge(merged[key], value, f'{where}.{key}')
        else:
            merged[key] = value
    return merged


def load_config(path: Optional[str], overrides: Tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    raw: Dict[str, Any] = {}
    if path is not None:
        with open(path, encoding='utf-8') as stream:
            raw = yaml.safe_load(stream) or {}
    for assignment in overrides:
        apply_override(raw, assignment)
    return TrainConfig.from_dict(raw)


# ----------------------------------------------------------------------------- schedule


class WarmupCosine:
    """Learning-rate factor per step: linear warm-up, then cosine decay to ``min_ratio``.

    With ``restarts`` (steps, increasing) the decay runs in cycles: the first from 1 (after the
    warm-up) to ``min_ratio`` at the first restart, each later one from ``restart_ratio`` to
    ``min_ratio`` at the next restart or ``total_steps``. The first cycle does not depend on
    the later ones, so a run with restarts repeats a shorter run's schedule up to its end.
    A callable object with plain-number state, so ``LambdaLR.state_dict`` stores it.
    """

    def __init__(self, warmup_steps: int, total_steps: int, start_ratio: float,
                 min_ratio: float, restarts: Tuple[int, ...] = (),
                 restart_ratio: float = 0.5) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.start_ratio = float(start_ratio)
        self.min_ratio = float(min_ratio)
        self.restarts = [int(step) for step in restarts]
        self.restart_ratio = float(restart_ratio)

    def __call__(self, step: int) -> float:
        """Return the factor applied to the peak learning rate at optimiser step ``step``."""
        if step < self.warmup_steps:
            return self.start_ratio + (1.0 - self.start_ratio) * step / self.warmup_steps
        starts = [self.warmup_steps] + self.restarts
        ends = self.restarts + [self.total_steps]
        cycle = sum(step >= restart for restart in self.restarts)
        peak = 1.0 if cycle == 0 else self.restart_ratio
        progress = min((step - starts[cycle]) / max(ends[cycle] - starts[cycle], 1), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (peak - self.min_ratio) * cosine


# ----------------------------------------------------------------------------- distributed


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Return whether this process logs and writes files."""
        return self.rank == 0


def init_process_group(device_name: str) -> ProcessGroup:
    """Join the torchrun process group when WORLD_SIZE > 1 and pick this process's device."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    use_cuda = torch.cuda.is_available() if device_name == 'auto' else device_name == 'cuda'
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("config.device is 'cuda' but CUDA is not available")
    if device_name not in ('auto', 'cpu', 'cuda'):
        raise ValueError(f"config.device must be 'auto', 'cpu' or 'cuda', not {device_name!r}")
    device = torch.device('cuda', local_rank) if use_cuda else torch.device('cpu')
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not distributed.is_initialized():
        distributed.init_process_group(backend='nccl' if use_cuda else 'gloo',
                                       init_method='env://')
    return ProcessGroup(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


# ----------------------------------------------------------------------------- checkpoints


def rng_state() -> Dict[str, Any]:
    """Return the python, numpy, torch and CUDA random states as plain types and tensors."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        'python': [version, list(python_state), gauss],
        'numpy': [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss),
                  float(cached)],
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore random states saved by ``rng_state``."""
    version, python_state, gauss = state['python']
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder + replace)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f'{path}.tmp{os.getpid()}'
    torch.save(state, temporary)
    os.replace(temporary, path)


class CheckpointError(ValueError):
    """A training checkpoint that cannot be used; the message names the file and the problem."""


def load_checkpoint(path: str, map_location: Union[str, torch.device] = 'cpu'
                    ) -> Dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True`` (no arbitrary unpickling).

    Raises:
        CheckpointError: a missing, unreadable, truncated or foreign file, or a newer version.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f'{path}: no such checkpoint file') from None
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        reason = str(error).split('\n')[0].split('. ')[0]  # torch's first sentence: the fault
        raise CheckpointError(f'{path}: not a readable checkpoint ({type(error).__name__}: '
                              f'{reason})') from None
    if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(f'{path}: not a bev_perception training checkpoint')
    if state.get('version', 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f'{path}: checkpoint version {state["version"]} is newer than '
                              f'{CHECKPOINT_VERSION}')
    return state


def model_from_checkpoint(state: Dict[str, Any]) -> Tuple[BEVFusionNet, ModelConfig]:
    """Return the network (eval mode, CPU) and its config from a loaded checkpoint."""
    config = ModelConfig.from_dict(state['model_config'])
    model = BEVFusionNet(config)
    model.load_state_dict(state['model'])
    return model.eval(), config


def _prune_checkpoints(folder: str, keep: int) -> None:
    if keep <= 0:
        return
    epochs = sorted(name for name in os.listdir(folder)
                    if name.startswith('epoch_') and name.endswith('.pt'))
    for name in epochs[:-keep]:
        os.remove(os.path.join(folder, name))


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Outcome of ``train``."""

    checkpoint: str  # last.pt of the run
    epochs_done: int
    steps: int
    train_seconds: float  # optimisation wall time summed over resumed runs
    history: List[Dict[str, float]]  # per epoch: mean losses, lr, seconds


def build_train_frames(config: TrainConfig, model_config: ModelConfig,
                       process: ProcessGroup, show_progress: bool = True):
    """Return the frame source (cache or on-the-fly) for the training split."""
    dataset = A2D2Dataset(
        config.data.root, scenes=config.data.scenes, split=config.data.split,
        class_map=config.data.resolved_class_map(), classes=model_config.detection_classes,
        load_image=True, load_semantic=config.data.load_semantic,
        val_scenes=config.data.val_scenes)
    if config.data.cache_dir is None:
        return PreparedFrames(dataset, model_config)
    if process.is_main:
        FrameCache.build(dataset, model_config, config.data.cache_dir, show_progress)
    if process.world_size > 1:
        distributed.barrier()
    return FrameCache.build(dataset, model_config, config.data.cache_dir, show_progress=False)


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:  # frozen modules stay out of the optimiser
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{'params': decay, 'weight_decay': weight_decay},
            {'params': no_decay, 'weight_decay': 0.0}]


def frozen_modules(model: torch.nn.Module, names: Sequence[str]) -> List[torch.nn.Module]:
    """Freeze the top-level modules ``names`` of ``model`` and return them.

    Raises:
        ValueError: a name is not a module of ``model`` that holds parameters.
    """
    children = dict(model.named_children())
    trainable = sorted(n for n, m in children.items() if any(True for _ in m.parameters()))
    modules = []
    for name in names:
        if name not in trainable:
            raise ValueError(f'freeze: {name!r} is not a module with parameters '
                             f'(known: {trainable})')
        children[name].requires_grad_(False)
        modules.append(children[name])
    return modules


def _configure_determinism(config: TrainConfig) -> None:
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _reduce_mean(values: torch.Tensor, process: ProcessGroup) -> torch.Tensor:
    if process.world_size > 1:
        reduced = values.to(process.device)
        distributed.all_reduce(reduced)
        values = reduced.cpu() / process.world_size
    return values


class InitWeightsError(ValueError):
    """``init_weights`` is unusable; the message names the file and the problem."""


#: Model config fields each freshly initialised module (``init_fresh``) may change against
#: the ``init_weights`` file; every other field must match it.
FRESH_CONFIG_FIELDS = {'semantic_head': ('head.semantic_levels', 'head.semantic_channels',
                                         'head.semantic_stem_detail')}
#: Model config fields without tensors of their own that a module which trains on (is not in
#: ``freeze``) may change against the ``init_weights`` file.
TRAINED_CONFIG_FIELDS = {'camera_encoder': ('camera_encoder.instance_norm_levels',)}
#: The modules every detection output depends on: a run that freezes them all trains the
#: semantics alone, and (on one process) its steps skip the LiDAR path, the fusion and the
#: detection head (``_semantic_losses``) and its data the detection targets.
DETECTION_MODULES = ('pillar_net', 'backbone', 'camera_encoder', 'fusion', 'detection_head')
#: Modules a run may add to the ``init_weights`` file's model: module -> (the config field that
#: adds it, the file's module it starts as a copy of, a config field that may give it blocks its
#: seed lacks: those keep their initialisation, identities, so the copy computes as its seed).
SEEDED_MODULES = {'semantic_encoder': ('head.semantic_encoder', 'camera_encoder',
                                       'head.semantic_encoder_blocks')}


def flat_settings(data: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    """Return a nested mapping as {dotted key: value} (an empty mapping is a value)."""
    flat: Dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flat_settings(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def _initial_state(model_config: ModelConfig, path: str, fresh: Sequence[str] = (),
                   frozen: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """Return the tensors of the weights file ``path`` that start this run.

    Args:
        model_config: the run's model config; the file's must equal it, except in the fields
            ``FRESH_CONFIG_FIELDS`` lists for the modules in ``fresh``, those
            ``TRAINED_CONFIG_FIELDS`` lists for modules not in ``frozen`` and those that add a
            ``SEEDED_MODULES`` module the file lacks (it starts as a copy of its seed; tensors
            its seed lacks are left out of the result, see ``_grown``).
        path: the ``init_weights`` file.
        fresh: top-level modules that keep their fresh initialisation (left out of the result).
        frozen: top-level modules that do not train (``TrainConfig.freeze``).

    Raises:
        InitWeightsError: the file is unusable or holds another model config.
    """
    try:
        source, source_config, _ = load_weights(path)
    except WeightsError as error:
        raise InitWeightsError(f'init_weights: {error}') from error
    unknown = sorted(set(fresh) - set(FRESH_CONFIG_FIELDS))
    if unknown:
        raise InitWeightsError(f'init_fresh: {unknown} cannot start fresh (possible: '
                               f'{sorted(FRESH_CONFIG_FIELDS)})')
    mine, theirs = (flat_settings(c.to_dict()) for c in (model_config, source_config))
    allowed = {field for module in fresh for field in FRESH_CONFIG_FIELDS[module]}
    allowed.update(field for module, fields in TRAINED_CONFIG_FIELDS.items()
                   if module not in frozen for field in fields)
    state = source.state_dict()
    for module, (field, seed, grows) in SEEDED_MODULES.items():
        if mine.get(field) and not theirs.get(field):  # this run adds the module
            allowed.update((field, grows))
            state.update({module + name[len(seed):]: value for name, value in list(state.items())
                          if name.startswith(seed + '.')})
    differ = sorted(k for k in set(mine) | set(theirs)
                    if mine.get(k) != theirs.get(k) and k not in allowed)
    if differ:
        raise InitWeightsError(f'init_weights: {path} holds another model config than this '
                               "run (model.name / model.overrides must match the file's; "
                               f'differs in {", ".join(differ)})')
    return {name: value for name, value in state.items() if name.split('.')[0] not in fresh}


def _grown(model: torch.nn.Module, initial: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Return ``initial`` with the model's own tensors where a seeded module outgrew its seed.

    A ``SEEDED_MODULES`` module with more blocks than the module it was copied from keeps its
    extra blocks' initialisation (identities); every other tensor comes from ``initial``.
    """
    seeded = tuple(module + '.' for module in SEEDED_MODULES)
    if not any(name.startswith(seeded) for name in initial):
        return initial
    extra = {name: value for name, value in model.state_dict().items()
             if name.startswith(seeded) and name not in initial}
    return {**initial, **extra}


def git_revision(folder: str) -> Optional[str]:
    """Return the git commit of ``folder`` (+dirty: uncommitted/untracked files), or None."""
    try:
        revision = subprocess.run(
            ['git', 'rev-parse', 'HEAD'], cwd=folder, capture_output=True, text=True,
            timeout=10, check=True).stdout.strip()
        status = subprocess.run(
            ['git', 'status', '--porcelain'], cwd=folder,
            capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ('+dirty' if status else '') if revision else None


def train(config: TrainConfig, output_dir: Optional[str] = None, resume: Optional[str] = None,
          stop_after_epoch: Optional[int] = None, save_rank_states: bool = False,
          command: Optional[str] = None, show_progress: bool = True) -> TrainResult:
    """Train (or resume) a model as described by ``config``; see the module docstring.

    Args:
        config: the run's configuration.
        output_dir: where checkpoints and TensorBoard logs go (default ``config.output_dir``).
        resume: a checkpoint to continue from, or 'last' for ``<output_dir>/checkpoints/last.pt``.
        stop_after_epoch: stop once this many epochs are complete (simulates an interruption;
            the schedule still spans ``optim.epochs``).
        save_rank_states: every rank writes its final model state to
            ``<output_dir>/rank<r>_final.pt`` (to check that DDP kept the ranks identical).
        command: the command line recorded in the checkpoint.
        show_progress: show the tqdm bar on rank 0.

    Returns:
        Where the last checkpoint is and what was done.
    """
    output_dir = output_dir or config.output_dir
    checkpoint_dir = os.path.join(output_dir, 'checkpoints')
    revision = git_revision(os.path.dirname(os.path.abspath(__file__)))  # the code that trains
    process = init_process_group(config.device)
    _configure_determinism(config)
    model_config = config.model.build()
    initial = None  # checked before the frames are cached: a bad file fails at once
    if config.init_weights is not None and resume is None:
        initial = _initial_state(model_config, config.init_weights, config.init_fresh,
                                 config.freeze)
    frames = build_train_frames(config, model_config, process, show_progress)
    semantic_only = process.world_size == 1 and set(DETECTION_MODULES) <= set(config.freeze)
    dataset = TrainingDataset(frames, model_config, config.augment, config.seed, config.target,
                              with_targets=not semantic_only)
    sampler = DistributedSampler(dataset, num_replicas=process.world_size, rank=process.rank,
                                 shuffle=True, seed=config.seed, drop_last=False)
    loader = DataLoader(dataset, batch_size=config.optim.batch_size, sampler=sampler,
                        num_workers=config.workers, collate_fn=collate_examples,
                        pin_memory=process.device.type == 'cuda', drop_last=False,
                        persistent_workers=False)
    steps_per_epoch = len(loader)

    model = BEVFusionNet(model_config)
    if initial is not None:
        model.load_state_dict(_grown(model, initial), strict=not config.init_fresh)
        if process.is_main:
            LOGGER.info('initialised from %s', config.init_weights)
    frozen = frozen_modules(model, config.freeze)
    model = model.to(process.device)
    optimizer = torch.optim.AdamW(_parameter_groups(model, config.optim.weight_decay),
                                  lr=config.optim.lr, betas=config.optim.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(config.optim, steps_per_epoch))
    use_amp = config.optim.amp and process.device.type == 'cuda'
    if config.optim.amp and not use_amp and process.is_main:
        LOGGER.info('optim.amp: mixed precision needs CUDA; training in float32 on %s',
                    process.device)
    scaler = torch.amp.GradScaler('cuda', enabled=use_amp)

    start_epoch, step, train_seconds = 0, 0, 0.0
    history: List[Dict[str, float]] = []
    if resume is not None:
        path = os.path.join(checkpoint_dir, 'last.pt') if resume == 'last' else resume
        state = load_checkpoint(path, map_location='cpu')
        if ModelConfig.from_dict(state['model_config']) != model_config:
            raise ValueError(f'{path}: the checkpoint was trained with another model config')
        if state['train_config'] != config.to_dict() and process.is_main:
            LOGGER.warning('%s: resuming with a config that differs from the saved one', path)
        model.load_state_dict(state.get(TRAINED_MODEL, state['model']))
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        # load_state_dict wrote the saved schedule's numbers into the scheduler's object
        _use_schedule(scheduler, _schedule(config.optim, steps_per_epoch))
        scaler.load_state_dict(state['scaler'])
        start_epoch, step = int(state['epoch']), int(state['step'])
        train_seconds = float(state['train_seconds'])
        history = list(state['history'])
        set_rng_state(state['rng'])
        if process.is_main:
            LOGGER.info('resumed from %s at epoch %d, step %d', path, start_epoch, step)
    average = (WeightAverage(model, config.optim.ema_decay, config.freeze)
               if config.optim.ema_decay else None)  # starts from the (resumed) weights
    if average is not None and resume is not None and TRAINED_MODEL in state:
        average.load(state['model'], int(state['ema_updates']))

    network: torch.nn.Module = model
    if semantic_only and process.is_main:
        LOGGER.info('freeze holds every detection module: training the semantics alone '
                    '(no detection targets; the heatmap and regression losses read 0)')
    if process.world_size > 1:
        network = DistributedDataParallel(
            model, device_ids=[process.device.index] if process.device.type == 'cuda' else None,
            find_unused_parameters=True)  # camera branch idles when a batch has no image
    writer = None
    if process.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(output_dir, 'tensorboard'), purge_step=step)
    last_path = os.path.join(checkpoint_dir, 'last.pt')
    epochs_done = start_epoch
    for epoch in range(start_epoch, config.optim.epochs):
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        network.train()
        for module in frozen:
            module.eval()  # BatchNorm keeps the statistics the frozen weights were trained with
        epoch_start = time.perf_counter()
        sums = torch.zeros(4, dtype=torch.float64)
        bar = tqdm.tqdm(loader, desc=f'epoch {epoch + 1}/{config.optim.epochs}', unit='step',
                        disable=not (process.is_main and show_progress), dynamic_ncols=True)
        for batch in bar:
            batch = batch.to(process.device)
            losses, grad_norm = _train_step(network, optimizer, scaler, batch, config, use_amp,
                                            semantic_only)
            scheduler.step()
            if average is not None:
                average.update(model)
            step += 1
            values = torch.stack([t.detach().double().cpu() for t in losses])
            sums += values
            if process.is_main:
                bar.set_postfix(loss=f'{values[0]:.3f}', hm=f'{values[1]:.3f}',
                                sem=f'{values[3]:.3f}')
                if writer is not None and step % config.log_every_steps == 0:
                    for name, value in zip(LossBreakdown._fields, values.tolist()):
                        writer.add_scalar(f'loss/{name}', value, step)
                    writer.add_scalar('optim/lr', optimizer.param_groups[0]['lr'], step)
                    writer.add_scalar('optim/grad_norm', grad_norm, step)
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        if process.world_size > 1:
            # DDP syncs buffers from rank 0 before each forward, so BatchNorm statistics of the
            # last step differ per rank; make every rank hold rank 0's (the checkpointed) ones.
            for buffer in model.buffers():
                distributed.broadcast(buffer, src=0)
        means = _reduce_mean(sums / max(len(loader), 1), process)
        record = dict(zip(LossBreakdown._fields, means.tolist()))
        record.update(epoch=epoch + 1, lr=optimizer.param_groups[0]['lr'], seconds=epoch_seconds)
        history.append(record)
        if process.is_main:
            LOGGER.info('epoch %d: %s', epoch + 1, json.dumps(record))
            if writer is not None:
                for name in LossBreakdown._fields:
                    writer.add_scalar(f'epoch/{name}', record[name], epoch + 1)
            state = {
                'format': CHECKPOINT_FORMAT, 'version': CHECKPOINT_VERSION,
                'epoch': epoch + 1, 'step': step,
                'model': model.state_dict() if average is None else average.state_dict(model),
                'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                'scaler': scaler.state_dict(), 'rng': rng_state(),
                'train_config': config.to_dict(), 'model_config': model_config.to_dict(),
                'train_seconds': train_seconds, 'history': history,
                'command': command or '', 'world_size': process.world_size,
                'git_revision': revision,
            }
            if average is not None:  # the optimiser's own weights, to resume from
                state.update({TRAINED_MODEL: model.state_dict(), 'ema_updates': average.updates})
            epoch_path = os.path.join(checkpoint_dir, f'epoch_{epoch + 1:03d}.pt')
            save_checkpoint(epoch_path, state)
            save_checkpoint(last_path, state)
            _prune_checkpoints(checkpoint_dir, config.keep_checkpoints)
        epochs_done = epoch + 1
    if writer is not None:
        writer.close()
    if save_rank_states:
        save_checkpoint(os.path.join(output_dir, f'rank{process.rank}_final.pt'),
                        {k: v.detach().cpu() for k, v in model.state_dict().items()})
    if process.world_size > 1:
        distributed.barrier()
        distributed.destroy_process_group()
    return TrainResult(checkpoint=last_path, epochs_done=epochs_done, steps=step,
                       train_seconds=train_seconds, history=history)


def _schedule(optim: OptimConfig, steps_per_epoch: int) -> WarmupCosine:
    """Return the learning-rate schedule of ``optim`` for epochs of ``steps_per_epoch``."""
    return WarmupCosine(optim.warmup_steps, steps_per_epoch * optim.epochs,
                        optim.warmup_start_ratio, optim.min_lr_ratio,
                        tuple(e * steps_per_epoch for e in optim.restart_epochs),
                        optim.restart_lr_ratio)


def _use_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR,
                  schedule: WarmupCosine) -> None:
    """Make a resumed scheduler follow this run's schedule at the step it restored.

    ``LambdaLR.load_state_dict`` restores the saved schedule's numbers; the config's win, so a
    run resumed with more epochs or a restart follows them (the same ones when nothing changed).
    """
    scheduler.lr_lambdas = [schedule] * len(scheduler.lr_lambdas)
    for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group['lr'] = base_lr * schedule(scheduler.last_epoch)


def _train_step(network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, batch: Batch, config: TrainConfig,
                use_amp: bool, semantic_only: bool = False) -> Tuple[LossBreakdown, float]:
    """Run forward, loss, backward, clipping and the optimiser step on one batch.

    ``semantic_only``: the network (not DDP-wrapped) trains nothing the detection reads, so
    only the semantic path runs (``_semantic_losses``); the gradients are those of the whole
    forward.
    """
    autocast = (torch.autocast('cuda', dtype=torch.float16) if use_amp
                else contextlib.nullcontext())
    if semantic_only:
        with autocast:
            losses = _semantic_losses(network, batch, config.loss)
        if losses is None:  # no image in the batch: nothing to train
            zero = torch.zeros((), device=batch.images.device)
            return LossBreakdown(zero, zero, zero, zero), 0.0
    else:
        with autocast:
            output = network(batch.points, batch.images, batch.camera_valid,
                             camera_geometry=batch.camera_geometry)
        losses = multitask_loss(output, batch.targets, batch.semantic, config.loss)
    if not torch.isfinite(losses.total):
        raise FloatingPointError(
            f'non-finite loss {losses} on frames {batch.names}; lower optim.lr or check data')
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses.total).backward()
    scaler.unscale_(optimizer)
    parameters = [p for group in optimizer.param_groups for p in group['params']]
    if config.optim.grad_clip_norm > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters,
                                                         config.optim.grad_clip_norm))
    else:
        grads = [p.grad.norm() for p in parameters if p.grad is not None]
        grad_norm = float(torch.stack(grads).norm()) if grads else 0.0
    scaler.step(optimizer)
    scaler.update()
    return losses, grad_norm


def _semantic_losses(model: BEVFusionNet, batch: Batch,
                     weights: LossWeights) -> Optional[LossBreakdown]:
    """Return the losses of the semantic path alone on the batch's images (None: it has none).

    The heatmap and regression parts are zeros: with every detection module frozen they have
    no gradient, so the total's gradient is that of ``multitask_loss`` on the whole forward.
    """
    valid = torch.nonzero(batch.camera_valid).squeeze(1)  # (Bv,)
    if valid.numel() == 0:
        return None
    logits = model.forward_semantic(batch.images.index_select(0, valid))  # (Bv, n_sem, Hc, Wc)
    semantic = semantic_loss(logits, batch.semantic.index_select(0, valid),
                             batch.camera_valid.index_select(0, valid), weights.semantic_balance,
                             weights.semantic_lovasz)
    zero = semantic.new_zeros(())
    return LossBreakdown(total=weights.semantic * semantic, heatmap=zero, regression=zero,
                         semantic=semantic)


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', help='YAML training config (training/configs/*.yaml)')
    parser.add_argument('--resume', help="checkpoint to continue from, or 'last'")
    parser.add_argument('--out', help='output folder (default: output_dir of the config)')
    parser.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                        help='set a config value, e.g. optim.lr=0.001 (repeatable)')
    parser.add_argument('--stop-after-epoch', type=int,
                        help='stop once this many epochs are done (simulated interruption)')
    parser.add_argument('--save-rank-states', action='store_true',
                        help='every rank writes its final model state (DDP consistency checks)')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def _config_of(args: argparse.Namespace) -> TrainConfig:
    """Return the run's config: the YAML file's, or the checkpoint's to resume, overridden."""
    if args.config is not None:
        return load_config(args.config, tuple(args.override))
    path = args.resume
    if path == 'last':
        path = os.path.join(args.out or TrainConfig().output_dir, 'checkpoints', 'last.pt')
    saved = load_checkpoint(path)['train_config']
    for assignment in args.override:
        apply_override(saved, assignment)
    return TrainConfig.from_dict(saved)


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    if args.config is None and args.resume is None:
        raise SystemExit('--config is required (or --resume with a checkpoint)')
    try:
        config = _config_of(args)
    except (CheckpointError, OSError, yaml.YAMLError) as error:  # they name the file
        raise SystemExit(f'training.train: {error}') from None
    except ValueError as error:  # a setting of the file or of an --override
        raise SystemExit(f'training.train: {args.config or args.resume}: {error}') from None
    try:
        command = ' '.join(shlex.quote(a) for a in [sys.executable, '-m', 'training.train']
                           + list(sys.argv[1:] if argv is None else argv))
        result = train(config, output_dir=args.out, resume=args.resume,
                       stop_after_epoch=args.stop_after_epoch,
                       save_rank_states=args.save_rank_states, command=command,
                       show_progress=not args.no_progress)
    except (InitWeightsError, CheckpointError) as error:
        raise SystemExit(f'training.train: {error}') from None
    if int(os.environ.get('RANK', '0')) == 0:
        print(json.dumps({'checkpoint': result.checkpoint, 'epochs': result.epochs_done,
                          'steps': result.steps, 'train_seconds': round(result.train_seconds, 1),
                          'last_epoch': result.history[-1] if result.history else None}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
