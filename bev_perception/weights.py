"""Deployable weights: safetensors tensors plus JSON metadata in the safetensors header.

The header's ``__metadata__`` (str -> str) holds one key, ``bev_perception``, whose value is a
JSON object: format_version, the full model config, class names, palette, point features,
intensity scale, image input size and normalisation, provenance and metrics. Loading never
unpickles anything: the header is parsed as JSON and the tensors are read by safetensors.
"""

import json
import os
import struct
from typing import Any, Dict, Optional, Tuple, Union

from bev_perception.model.config import ModelConfig
from bev_perception.model.network import BEVFusionNet
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
import torch

#: Version of the metadata layout written by ``save_weights``; newer files are refused.
FORMAT_VERSION = 1
#: Key of the JSON document inside the safetensors ``__metadata__``.
METADATA_KEY = 'bev_perception'
#: Largest safetensors header accepted (bytes), against corrupted length fields.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
#: Shipped weights by profile, ``weights/<profile>.safetensors`` in the package: ``default``
#: (``make weights``) and ``lite``, the CPU profile (``make weights-lite``).
SHIPPED_PROFILES = ('default', 'lite')
#: Folder of the shipped weights inside the package.
SHIPPED_WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights')

PathLike = Union[str, os.PathLike]


class WeightsError(Exception):
    """A weights file cannot be used; the message names the file and the problem."""


def build_metadata(config: ModelConfig, provenance: Dict[str, Any],
                   metrics: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Return the metadata document stored with the weights."""
    return {
        'format_version': FORMAT_VERSION,
        'config': config.to_dict(),
        'detection_classes': list(config.detection_classes),
        'semantic_classes': list(config.semantic_classes),
        'semantic_palette': [list(colour) for colour in config.semantic_palette],
        'point_features': list(config.point.features),
        'intensity_scale': config.point.intensity_scale,
        'image_input_hw': list(config.camera.input_hw),
        'image_mean': list(config.camera.mean),
        'image_std': list(config.camera.std),
        'provenance': dict(provenance),
        'metrics': None if metrics is None else dict(metrics),
    }


def save_weights(path: PathLike, model: BEVFusionNet, config: ModelConfig,
                 provenance: Dict[str, Any], metrics: Optional[Dict[str, Any]] = None) -> None:
    """Write the model's state and metadata to a safetensors file.

    Args:
        path: output file (parent folders are created); written atomically via a temp file.
        model: the network; its config must equal ``config``.
        config: the model config.
        provenance: JSON-safe facts about how the weights were made (command, seed, git rev,
            dataset, date, ...).
        metrics: optional JSON-safe evaluation results.
    """
    if model.config != config:
        raise ValueError('save_weights: model.config differs from the config to be saved')
    metadata = build_metadata(config, provenance, metrics)
    text = json.dumps(metadata, sort_keys=True, allow_nan=False)
    tensors = {name: value.detach().to('cpu').contiguous().clone()
               for name, value in model.state_dict().items()}
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = path + '.tmp'
    save_file(tensors, temporary, metadata={METADATA_KEY: text})
    os.replace(temporary, path)


def read_header(path: PathLike) -> Dict[str, Any]:
    """Return the safetensors JSON header of ``path``, checking it against the file size."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, 'rb') as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise WeightsError(f'{path}: not a safetensors file (only {size} bytes)')
            (header_length,) = struct.unpack('<Q', prefix)
            if header_length > min(size - 8, _MAX_HEADER_BYTES):
                raise WeightsError(
                    f'{path}: not a safetensors file or truncated (header length '
                    f'{header_length} bytes, file {size} bytes)')
            raw = stream.read(header_length)
    except OSError as error:
        raise WeightsError(f'{path}: cannot read weights file: {error}') from error
    try:
        header = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f'{path}: not a safetensors file (header is not JSON)') from error
    if not isinstance(header, dict):
        raise WeightsError(f'{path}: not a safetensors file (header is not an object)')
    data_end = 0
    for name, entry in header.items():
        if name == '__metadata__':
            continue
        try:
            data_end = max(data_end, int(entry['data_offsets'][1]))
        except (TypeError, KeyError, IndexError, ValueError) as error:
            raise WeightsError(f'{path}: malformed safetensors entry {name!r}') from error
    if 8 + header_length + data_end > size:
        raise WeightsError(
            f'{path}: truncated: tensors need {8 + header_length + data_end} bytes, '
            f'file has {size}')
    return header


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """Return the bev_perception metadata document of a weights file, without the tensors."""
    path = os.fspath(path)
    header = read_header(path)
    text = (header.get('__metadata__') or {}).get(METADATA_KEY)
    if text is None:
        raise WeightsError(f'{path}: missing metadata (no {METADATA_KEY!r} key in the header)')
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise WeightsError(f'{path}: metadata is not valid JSON: {error}') from error
    if not isinstance(metadata, dict):
        raise WeightsError(f'{path}: metadata is not a JSON object')
    version = metadata.get('format_version')
    if not isinstance(version, int) or isinstance(version, bool):
        raise WeightsError(f'{path}: metadata has no integer format_version')
    if version > FORMAT_VERSION:
        raise WeightsError(
            f'{path}: format version {version} is newer than this code supports '
            f'({FORMAT_VERSION}); update bev_perception')
    if 'config' not in metadata:
        raise WeightsError(f'{path}: metadata lacks the model config')
    return metadata


def load_weights(path: PathLike, device: Union[str, torch.device] = 'cpu'
                 ) -> Tuple[BEVFusionNet, ModelConfig, Dict[str, Any]]:
    """Load deployable weights.

    Args:
        path: a file written by ``save_weights``.
        device: where to put the model.

    Returns:
        (model in eval mode on ``device``, its config, the metadata document).

    Raises:
        WeightsError: unreadable, truncated or non-safetensors file, missing metadata, newer
            format version, invalid config, missing/unexpected tensors or shape mismatches.
    """
    path = os.fspath(path)
    metadata = read_metadata(path)
    try:
        config = ModelConfig.from_dict(metadata['config'])
    except (ValueError, TypeError) as error:
        raise WeightsError(f'{path}: invalid model config in metadata: {error}') from error
    try:
        tensors = load_file(path, device='cpu')
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f'{path}: cannot read tensors: {error}') from error
    model = BEVFusionNet(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise WeightsError(f'{path}: missing tensor(s) {missing[:5]}'
                           + (f' and {len(missing) - 5} more' if len(missing) > 5 else ''))
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise WeightsError(f'{path}: unexpected tensor(s) {unexpected[:5]}'
                           + (f' and {len(unexpected) - 5} more' if len(unexpected) > 5 else ''))
    for name, value in expected.items():
        if tuple(tensors[name].shape) != tuple(value.shape):
            raise WeightsError(
                f'{path}: shape mismatch for {name}: file {tuple(tensors[name].shape)}, '
                f'model {tuple(value.shape)}')
        if tensors[name].dtype != value.dtype:
            tensors[name] = tensors[name].to(value.dtype)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), config, metadata
