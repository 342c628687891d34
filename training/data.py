"""Torch datasets for training: prepared frames, an on-disk frame cache, augmentation, targets.

Pipeline of one training example::

    A2D2Dataset frame (full-size image and label)
      -> prepare_frame: image resized to the network input (the same resize as
         ``preprocess_image``, kept as uint8), semantic label resized (nearest) to the same size
      -> [FrameCache: prepared frames stored once as .npz, so epochs skip PNG decoding]
      -> TrainingDataset: consistent augmentation (training.augment), normalisation through the
         model's ``preprocess_image``, CenterPoint targets (training.targets)
      -> collate_examples -> Batch

Augmentation randomness is a pure function of (seed, epoch, index): the same example comes out
the same in any worker process, after ``--resume`` and on any DDP rank layout.

Corrupt frames (``CorruptFrameError`` from the reader) are reported by the reader and replaced by
the next readable frame, so every DDP rank still runs the same number of steps.
"""

import dataclasses
import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Protocol, Sequence

from bev_perception.a2d2_classes import IGNORE_INDEX
from bev_perception.model.camera_geometry import SIZE as GEOMETRY_SIZE
from bev_perception.model.config import ModelConfig
from bev_perception.model.network import preprocess_image
import numpy as np
import torch
import tqdm
from training.a2d2 import A2D2Dataset, Frame, frame_path
from training.augment import augment_sample, AugmentConfig, Sample
from training.targets import (build_targets, collate_targets, points_in_boxes, TargetConfig,
                              Targets)

LOGGER = logging.getLogger(__name__)

#: Bumped whenever the cache layout or the preparation changes.
CACHE_FORMAT_VERSION = 3  # 2: images resized as uint8 on the CPU; 3: camera geometry


@dataclasses.dataclass(frozen=True)
class PreparedFrame:
    """A frame at network input resolution.

    Attributes:
        name: '<scene>/<frame_id>'.
        points: (N, 4) float32 x, y, z (metres), raw reflectance.
        boxes: (K, 7) float32 boxes in the common convention.
        labels: (K,) int64 detection class ids.
        image: (Hc, Wc, 3) uint8 RGB resized to ``camera.input_hw``, or None.
        semantic: (Hc, Wc) uint8 category ids (255 = ignore) resized (nearest), or None.
        camera_geometry: (camera_geometry.SIZE,) float32 calibration of the image, or None
            (normalised intrinsics: the resize does not change it).
    """

    name: str
    points: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image: Optional[np.ndarray]
    semantic: Optional[np.ndarray]
    camera_geometry: Optional[np.ndarray] = None


class FrameSource(Protocol):
    """Anything indexable that yields PreparedFrame objects."""

    def __len__(self) -> int:
        """Return the number of frames."""

    def __getitem__(self, index: int) -> PreparedFrame:
        """Return frame ``index``."""


def resize_image_to_input(rgb: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to ``camera.input_hw`` exactly as inference does.

    Runs ``preprocess_image`` (the inference resize) and undoes its normalisation, rounding
    back to uint8: on the CPU that is exactly the uint8 resize inference does there (about one
    grey level from the float resize of other devices).
    """
    normalised = preprocess_image(rgb, config)  # (3, Hc, Wc)
    mean = torch.tensor(config.camera.mean).view(3, 1, 1)
    std = torch.tensor(config.camera.std).view(3, 1, 1)
    rgb_float = (normalised * std + mean) * 255.0
    return rgb_float.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy().copy()


def resize_labels_nearest(labels: np.ndarray, output_hw: Sequence[int]) -> np.ndarray:
    """Resize an (H, W) id map to ``output_hw`` by nearest neighbour at pixel centres."""
    height, width = labels.shape
    out_height, out_width = output_hw
    rows = np.minimum(((np.arange(out_height) + 0.5) * height / out_height).astype(np.int64),
                      height - 1)
    cols = np.minimum(((np.arange(out_width) + 0.5) * width / out_width).astype(np.int64),
                      width - 1)
    return np.ascontiguousarray(labels[rows[:, None], cols[None, :]])


def prepare_frame(frame: Frame, config: ModelConfig) -> PreparedFrame:
    """Bring a reader frame to network input resolution (see the module docstring)."""
    image = None if frame.image is None else resize_image_to_input(frame.image, config)
    semantic = (None if frame.semantic is None
                else resize_labels_nearest(frame.semantic, config.camera.input_hw))
    return PreparedFrame(
        name=f'{frame.scene}/{frame.frame_id}', points=np.asarray(frame.points, np.float32),
        boxes=np.asarray(frame.boxes, np.float32).reshape(-1, 7),
        labels=np.asarray(frame.labels, np.int64).reshape(-1), image=image, semantic=semantic,
        camera_geometry=frame.camera_geometry)


def _read_frame_substituting(dataset: A2D2Dataset, index: int) -> Frame:
    """Return frame ``index`` or, if it is corrupt (reported by the reader), the next good one."""
    for offset in range(len(dataset)):
        frame = dataset.safe_getitem((index + offset) % len(dataset))
        if frame is not None:
            return frame
    raise RuntimeError(f'{dataset.root}: every frame is corrupt')


class PreparedFrames:
    """Prepare frames of an A2D2Dataset on the fly (no cache).

    Args:
        dataset: the reader's dataset.
        config: model config (camera input size).
    """

    def __init__(self, dataset: A2D2Dataset, config: ModelConfig) -> None:
        self.dataset = dataset
        self.config = config

    def __len__(self) -> int:
        """Return the number of indexed frames."""
        return len(self.dataset)

    def __getitem__(self, index: int) -> PreparedFrame:
        """Return prepared frame ``index`` (a corrupt frame is replaced by the next good one)."""
        return prepare_frame(_read_frame_substituting(self.dataset, index), self.config)


def dataset_fingerprint(dataset: A2D2Dataset, config: ModelConfig) -> Dict[str, Any]:
    """Return what a cache depends on: root, frames (file times), classes, input size, cameras."""
    frames = []
    for scene, frame_id in dataset.frame_keys:
        stamps = [os.stat(frame_path(dataset.root, scene, frame_id, kind)).st_mtime_ns
                  for kind in ('lidar', 'label3D')]
        frames.append([scene, frame_id] + stamps)
    geometries = {scene: dataset.scene_camera_geometry(scene) for scene in dataset.scenes}
    return {
        'format_version': CACHE_FORMAT_VERSION,
        'root': os.path.abspath(dataset.root),
        'frames': frames,
        'classes': list(dataset.classes),
        'class_map': dict(sorted(dataset.class_map.items())),
        'load_image': dataset.load_image,
        'load_semantic': dataset.load_semantic,
        'input_hw': list(config.camera.input_hw),
        'camera_geometry': {scene: None if geometry is None else np.asarray(geometry).tolist()
                            for scene, geometry in geometries.items()},  # None: uncalibrated
    }


class FrameCache:
    """Prepared frames stored as one uncompressed .npz per frame under a folder.

    ``index.json`` holds the fingerprint of the source (``dataset_fingerprint``); a cache whose
    fingerprint differs is rebuilt. Corrupt source frames are reported by the reader and left
    out of the cache.
    """

    def __init__(self, cache_dir: str) -> None:
        """Open an existing cache folder (use ``build`` to create one)."""
        self.cache_dir = cache_dir
        with open(os.path.join(cache_dir, 'index.json'), encoding='utf-8') as stream:
            index = json.load(stream)
        self.names: List[str] = index['names']
        self.fingerprint: Dict[str, Any] = index['fingerprint']

    @classmethod
    def build(cls, dataset: A2D2Dataset, config: ModelConfig, cache_dir: str,
              show_progress: bool = True) -> 'FrameCache':
        """Return the cache of ``dataset`` at ``cache_dir``, writing it if it is missing/stale."""
        fingerprint = dataset_fingerprint(dataset, config)
        index_path = os.path.join(cache_dir, 'index.json')
        if os.path.exists(index_path):
            cache = cls(cache_dir)
            if cache.fingerprint == fingerprint:
                return cache
            LOGGER.info('%s: stale frame cache, rebuilding', cache_dir)
            os.remove(index_path)
            for name in os.listdir(cache_dir):
                if re.fullmatch(r'\d{7}\.npz', name):
                    os.remove(os.path.join(cache_dir, name))
        os.makedirs(cache_dir, exist_ok=True)
        names = []
        for index in tqdm.tqdm(range(len(dataset)), desc='caching frames', unit='frame',
                               disable=not show_progress):
            frame = dataset.safe_getitem(index)
            if frame is None:
                continue
            prepared = prepare_frame(frame, config)
            file_name = f'{len(names):07d}.npz'
            arrays = {'points': prepared.points, 'boxes': prepared.boxes,
                      'labels': prepared.labels}
            if prepared.image is not None:
                arrays['image'] = prepared.image
            if prepared.semantic is not None:
                arrays['semantic'] = prepared.semantic
            if prepared.camera_geometry is not None:
                arrays['camera_geometry'] = prepared.camera_geometry
            temporary = os.path.join(cache_dir, file_name + '.tmp.npz')
            np.savez(temporary, **arrays)
            os.replace(temporary, os.path.join(cache_dir, file_name))
            names.append(prepared.name)
        if not names:
            raise RuntimeError(f'{dataset.root}: no readable frame to cache')
        temporary = index_path + '.tmp'
        with open(temporary, 'w', encoding='utf-8') as stream:
            json.dump({'names': names, 'fingerprint': fingerprint}, stream)
        os.replace(temporary, index_path)
        return cls(cache_dir)

    def __len__(self) -> int:
        """Return the number of cached frames."""
        return len(self.names)

    def __getitem__(self, index: int) -> PreparedFrame:
        """Load cached frame ``index``."""
        with np.load(os.path.join(self.cache_dir, f'{index:07d}.npz')) as arrays:
            return PreparedFrame(
                name=self.names[index], points=arrays['points'], boxes=arrays['boxes'],
                labels=arrays['labels'],
                image=arrays['image'] if 'image' in arrays.files else None,
                semantic=arrays['semantic'] if 'semantic' in arrays.files else None,
                camera_geometry=(arrays['camera_geometry'] if 'camera_geometry' in arrays.files
                                 else None))


class Example(dict):
    """One training example (a dict so the default DataLoader machinery can move it)."""


@dataclasses.dataclass
class Batch:
    """A collated batch of B examples.

    Attributes:
        points: B tensors (N_i, 4) float32.
        images: (B, 3, Hc, Wc) float32 normalised images (zeros where no image).
        camera_valid: (B,) bool.
        semantic: (B, Hc, Wc) uint8 ids, 255 where ignored or where the sample has no image.
        camera_geometry: (B, camera_geometry.SIZE) float32 calibration of each image (zeros
            where a sample has none; such a sample has no usable image for a model that needs
            the calibration).
        targets: collated CenterPoint targets; None from a dataset built without them.
        boxes: B tensors (K_i, 7) float32 ground truth boxes (after augmentation).
        labels: B tensors (K_i,) int64.
        names: B frame names.
    """

    points: List[torch.Tensor]
    images: torch.Tensor
    camera_valid: torch.Tensor
    semantic: torch.Tensor
    targets: Optional[Targets]
    boxes: List[torch.Tensor]
    labels: List[torch.Tensor]
    names: List[str]
    camera_geometry: torch.Tensor

    def to(self, device: torch.device) -> 'Batch':
        """Return the batch with every tensor on ``device`` (non-blocking)."""
        def move(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device, non_blocking=True)
        return Batch(
            points=[move(p) for p in self.points], images=move(self.images),
            camera_valid=move(self.camera_valid), semantic=move(self.semantic),
            targets=None if self.targets is None else Targets(*(move(t) for t in self.targets)),
            boxes=[move(b) for b in self.boxes], labels=[move(b) for b in self.labels],
            names=list(self.names), camera_geometry=move(self.camera_geometry))


class TrainingDataset(torch.utils.data.Dataset):
    """Augmented, normalised training examples with targets.

    Args:
        frames: a FrameCache or PreparedFrames.
        config: model config.
        augment: augmentation settings (``AugmentConfig.none()`` for evaluation).
        seed: base seed of the per-example random generator.
        target_config: heatmap Gaussian settings.
        with_targets: False leaves the detection targets out (``targets`` None), for a run
            that trains the semantics alone; the augmentation draws stay the same.
    """

    def __init__(self, frames: FrameSource, config: ModelConfig, augment: AugmentConfig,
                 seed: int, target_config: TargetConfig = TargetConfig(),
                 with_targets: bool = True) -> None:
        self.frames = frames
        self.config = config
        self.augment = augment
        self.seed = seed
        self.target_config = target_config
        self.with_targets = with_targets
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws are used (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Return the number of frames."""
        return len(self.frames)

    def __getitem__(self, index: int) -> Example:
        """Return example ``index`` of the current epoch."""
        frame = self.frames[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        needs_geometry = self.config.fusion.uses_calibration
        usable = frame.image is not None and (frame.camera_geometry is not None
                                              or not needs_geometry)
        sample = augment_sample(
            Sample(points=frame.points, boxes=frame.boxes, labels=frame.labels,
                   image=frame.image, semantic=frame.semantic, camera_valid=usable,
                   camera_geometry=frame.camera_geometry),
            self.augment, rng)
        height, width = self.config.camera.input_hw
        if sample.camera_valid:
            image = preprocess_image(sample.image, self.config)  # (3, Hc, Wc)
        else:
            image = torch.zeros(3, height, width)
        if sample.camera_valid and sample.semantic is not None:
            semantic = _tensor(sample.semantic)
        else:
            semantic = torch.full((height, width), IGNORE_INDEX, dtype=torch.uint8)
        boxes = _tensor(sample.boxes, np.float32)
        labels = _tensor(sample.labels, np.int64)
        targets = None
        if self.with_targets:
            num_points = (points_in_boxes(sample.points, sample.boxes)
                          if self.target_config.min_points > 0 else None)
            targets = build_targets(boxes, labels, self.config, self.target_config,
                                    num_points)
        geometry = (np.zeros(GEOMETRY_SIZE, np.float32) if sample.camera_geometry is None
                    else sample.camera_geometry)
        return Example(
            points=_tensor(sample.points, np.float32),
            image=image, camera_valid=bool(sample.camera_valid), semantic=semantic,
            targets=targets, boxes=boxes, labels=labels, name=frame.name,
            camera_geometry=_tensor(geometry, np.float32))


def _tensor(array: np.ndarray, dtype: Optional[type] = None) -> torch.Tensor:
    """Return ``array`` as a tensor, copied only where read-only, strided or of another dtype.

    Cached frames come from ``np.load`` read-only; torch warns about (and must not write into)
    memory it shares with them.
    """
    return torch.from_numpy(np.require(array, dtype, ('C', 'W')))


def collate_examples(examples: Sequence[Example]) -> Batch:
    """Stack examples into a Batch (points, boxes and labels stay lists).

    Raises:
        ValueError: some examples carry detection targets and others do not (a batch with
            half its targets would train the detection on the wrong samples).
    """
    with_targets = [e['targets'] is not None for e in examples]
    if any(with_targets) and not all(with_targets):
        raise ValueError(f'a batch mixes examples with and without detection targets '
                         f'({sum(with_targets)} of {len(examples)} have them)')
    return Batch(
        points=[e['points'] for e in examples],
        images=torch.stack([e['image'] for e in examples]),
        camera_valid=torch.tensor([e['camera_valid'] for e in examples], dtype=torch.bool),
        semantic=torch.stack([e['semantic'] for e in examples]),
        targets=(collate_targets([e['targets'] for e in examples])
                 if all(with_targets) else None),
        boxes=[e['boxes'] for e in examples], labels=[e['labels'] for e in examples],
        names=[e['name'] for e in examples],
        camera_geometry=torch.stack([e['camera_geometry'] for e in examples]))
