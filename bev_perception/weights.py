"""Deployable weights: safetensors tensors plus JSON metadata in the safetensors header.

The header's ``__metadata__`` (str -> str) holds one key, ``bev_perception``, whose value is a
JSON object: format_version, the full model config, class names, palette, point features,
intensity scale, image input size and normalisation, provenance and metrics. Loading never
unpickles anything: the header is parsed as JSON and the tensors are read by safetensors.
"""

from dataclasses import dataclass
import json
import math
import os
import struct
from typing import Any, Dict, Optional, Tuple, Union

from bev_perception.model.config import ModelConfig
from bev_perception.model.network import BEVFusionNet
from bev_perception.node_params import SHIPPED_PROFILES
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
import torch

#: Version of the metadata layout written by ``save_weights``; newer files are refused.
FORMAT_VERSION = 1
#: Key of the JSON document inside the safetensors ``__metadata__``.
METADATA_KEY = 'bev_perception'
#: Largest safetensors header accepted (bytes), against corrupted length fields.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
#: Folder of the shipped weights inside the package.
SHIPPED_WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights')

PathLike = Union[str, os.PathLike]


class WeightsError(Exception):
    """A weights file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class _Range:
    """Allowed values of a metadata number (every element, for lists)."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False  # low itself is not allowed (must be above it)

    def allows(self, value: Any) -> bool:
        """Return True for a number of the right type inside the range (never NaN or inf)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        return (self.low < value if self.low_open else self.low <= value) and value <= self.high

    def describe(self) -> str:
        """Return the rule as words, e.g. 'an integer in [1, 4096]'."""
        kind = 'an integer' if self.integer else 'a finite number'
        return f'{kind} in {"(" if self.low_open else "["}{self.low:g}, {self.high:g}]'


_CHANNELS = _Range(1, 4096, integer=True)
#: Ranges of the model config's numbers, by dotted path under ``config`` (a key absent from the
#: file takes its valid default). Their upper limits lie far above any trained model and keep
#: a corrupt file from building a network that cannot fit in memory.
CONFIG_RANGES: Dict[str, _Range] = {
    'grid.x_range_m': _Range(-10000.0, 10000.0),
    'grid.y_range_m': _Range(-10000.0, 10000.0),
    'grid.z_range_m': _Range(-10000.0, 10000.0),
    'grid.pillar_size_m': _Range(0.0, 100.0, low_open=True),
    'grid.max_points_per_pillar': _Range(1, 4096, integer=True),
    'grid.max_pillars': _Range(1, 10_000_000, integer=True),
    'point.intensity_scale': _Range(0.0, 1.0e6, low_open=True),
    'camera.input_hw': _Range(32, 8192, integer=True),
    'camera.mean': _Range(-1000.0, 1000.0),
    'camera.std': _Range(0.0, 1000.0, low_open=True),
    'lidar_encoder.pfn_channels': _CHANNELS,
    'lidar_encoder.backbone_channels': _CHANNELS,
    'lidar_encoder.backbone_out_channels': _CHANNELS,
    'lidar_encoder.backbone_stride': _Range(1, 64, integer=True),
    'lidar_encoder.full_res_blocks': _Range(0, 64, integer=True),
    'lidar_encoder.out_blocks': _Range(0, 64, integer=True),
    'camera_encoder.stem_channels': _CHANNELS,
    'camera_encoder.stage_channels': _CHANNELS,
    'fusion.num_heads': _Range(1, 64, integer=True),
    'fusion.ffn_ratio': _Range(1, 64, integer=True),
    'fusion.gate_init': _Range(-1000.0, 1000.0),
    'fusion.bev_wavelengths_m': _Range(0.0, 1.0e6, low_open=True),
    'fusion.camera_wavelengths': _Range(0.0, 1.0e6, low_open=True),
    'head.shared_channels': _CHANNELS,
    'head.tower_channels': _CHANNELS,
    'head.semantic_channels': _CHANNELS,
    'head.heatmap_bias_init': _Range(-100.0, 100.0),
    'head.max_objects': _Range(1, 10000, integer=True),
    'head.score_threshold': _Range(0.0, 1.0),
    'head.nms.radius_m': _Range(0.0, 1000.0),
    'head.nms.iou_threshold': _Range(0.0, 1.0),
}
#: Largest BEV canvas side (cells) and number of detection classes accepted.
MAX_CANVAS_CELLS = 8192
MAX_DETECTION_CLASSES = 1000
#: Semantic class ids travel as mono8 pixels, with 255 kept for ignored pixels.
MAX_SEMANTIC_CLASSES = 255
#: Top-level metadata entries that repeat a config value: (key, config path).
_CONFIG_COPIES = (
    ('detection_classes', 'detection_classes'), ('semantic_classes', 'semantic_classes'),
    ('semantic_palette', 'semantic_palette'), ('point_features', 'point.features'),
    ('intensity_scale', 'point.intensity_scale'), ('image_input_hw', 'camera.input_hw'),
    ('image_mean', 'camera.mean'), ('image_std', 'camera.std'),
)


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


def _field_error(path: str, field: str, value: Any, expected: str) -> WeightsError:
    text = repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 60 else (
        f'a {type(value).__name__} of {len(value)}')
    return WeightsError(f'{path}: metadata field {field} is {text}; it must be {expected}')


def _config_value(data: Any, dotted: str) -> Tuple[bool, Any]:
    """Return (present, value) of a dotted path in the raw config document."""
    value = data
    for key in dotted.split('.'):
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def _check_names(path: str, field: str, names: Any, limit: int) -> None:
    if not isinstance(names, (list, tuple)) or not 1 <= len(names) <= limit:
        raise _field_error(path, field, names, f'a list of 1 to {limit} names')
    seen = set()
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise _field_error(path, f'{field}[{index}]', name, 'a non-empty string')
        if name.lower() in seen:
            raise _field_error(path, f'{field}[{index}]', name,
                               'unique (names are compared in lower case)')
        seen.add(name.lower())


def validate_metadata(metadata: Any, path: PathLike = '<metadata>') -> ModelConfig:
    """Check a whole metadata document and return its model config.

    Checks the format version, every number of the model config (type, finite, range:
    ``CONFIG_RANGES``), the config's own consistency, the class names (non-empty, unique,
    at most ``MAX_SEMANTIC_CLASSES`` semantic classes), the palette (0..255 per channel), the
    top-level copies of config values (they must equal the config) and the types of
    ``provenance`` and ``metrics``.

    Args:
        metadata: the parsed JSON document.
        path: the file, for the messages.

    Raises:
        WeightsError: the first problem found, naming the file and the field.
    """
    path = os.fspath(path)
    if not isinstance(metadata, dict):
        raise WeightsError(f'{path}: metadata is not a JSON object')
    version = metadata.get('format_version')
    if not isinstance(version, int) or isinstance(version, bool):
        raise WeightsError(f'{path}: metadata has no integer format_version')
    if version > FORMAT_VERSION:
        raise WeightsError(
            f'{path}: format version {version} is newer than this code supports '
            f'({FORMAT_VERSION}); update bev_perception')
    if version < 1:
        raise _field_error(path, 'format_version', version, f'in [1, {FORMAT_VERSION}]')
    if 'config' not in metadata:
        raise WeightsError(f'{path}: metadata lacks the model config')
    raw = metadata['config']
    if not isinstance(raw, dict):
        raise _field_error(path, 'config', raw, 'an object (the model config)')
    for dotted, allowed in CONFIG_RANGES.items():
        present, value = _config_value(raw, dotted)
        if not present:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for index, item in enumerate(values):
            if not allowed.allows(item):
                where = f'config.{dotted}' + (f'[{index}]' if values is value else '')
                raise _field_error(path, where, item, allowed.describe())
    try:
        config = ModelConfig.from_dict(raw)
    except (ValueError, TypeError, ArithmeticError) as error:
        raise WeightsError(f'{path}: invalid model config in metadata: {error}') from error
    rows, cols = config.grid.canvas_hw
    if max(rows, cols) > MAX_CANVAS_CELLS:
        raise _field_error(path, 'config.grid.pillar_size_m', config.grid.pillar_size_m,
                           f'large enough for at most {MAX_CANVAS_CELLS} cells per side of '
                           f'the point range (it gives {rows} x {cols})')
    _check_names(path, 'config.detection_classes', list(config.detection_classes),
                 MAX_DETECTION_CLASSES)
    _check_names(path, 'config.semantic_classes', list(config.semantic_classes),
                 MAX_SEMANTIC_CLASSES)
    for index, colour in enumerate(config.semantic_palette):
        if not all(0 <= channel <= 255 for channel in colour):
            raise _field_error(path, f'config.semantic_palette[{index}]', list(colour),
                               'three integers in [0, 255] (R, G, B)')
    document = config.to_dict()
    for key, dotted in _CONFIG_COPIES:
        if key not in metadata:
            continue
        expected = _config_value(document, dotted)[1]
        value = metadata[key]
        if isinstance(expected, float):
            agrees = (isinstance(value, (int, float)) and not isinstance(value, bool)
                      and math.isfinite(value) and math.isclose(value, expected, rel_tol=1e-9))
        else:
            agrees = value == expected
        if not agrees:
            raise _field_error(path, key, value, f'equal to config.{dotted} ({expected!r})')
    for key in ('provenance', 'metrics'):
        if metadata.get(key) is not None and not isinstance(metadata[key], dict):
            raise _field_error(path, key, metadata[key], 'an object or null')
    return config


def _read_document(path: str) -> Dict[str, Any]:
    """Return the parsed metadata document of a weights file (not yet validated)."""
    header = read_header(path)
    text = (header.get('__metadata__') or {}).get(METADATA_KEY)
    if text is None:
        raise WeightsError(f'{path}: missing metadata (no {METADATA_KEY!r} key in the header)')
    if not isinstance(text, str):
        raise WeightsError(f'{path}: metadata is not a string in the safetensors header')
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise WeightsError(f'{path}: metadata is not valid JSON: {error}') from error


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """Return the bev_perception metadata document of a weights file, without the tensors.

    The document is validated in full (``validate_metadata``).
    """
    path = os.fspath(path)
    metadata = _read_document(path)
    validate_metadata(metadata, path)
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
            format version, invalid metadata (see ``validate_metadata``), missing/unexpected
            tensors, shape mismatches or non-finite values.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise WeightsError(f'{path}: is a directory, not a weights file')
    metadata = _read_document(path)
    config = validate_metadata(metadata, path)
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
        if tensors[name].is_floating_point() and not bool(torch.isfinite(tensors[name]).all()):
            bad = int((~torch.isfinite(tensors[name])).sum())
            raise WeightsError(f'{path}: tensor {name} has {bad} non-finite values (NaN or inf)')
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), config, metadata


def shipped_weights_path(profile: str = 'default') -> str:
    """Return where the package keeps a profile's shipped weights (the file may be missing).

    Raises:
        WeightsError: an unknown profile.
    """
    if profile not in SHIPPED_PROFILES:
        raise WeightsError(f'profile {profile!r} is not one of {", ".join(SHIPPED_PROFILES)}')
    return os.path.join(SHIPPED_WEIGHTS_DIR, f'{profile}.safetensors')


def resolve_weights_path(weights_path: str, profile: str = 'default') -> str:
    """Return the weights file to load: ``weights_path``, else the profile's shipped file.

    Raises:
        WeightsError: the file does not exist, is a directory or is not a regular file.
    """
    if not weights_path:
        path = shipped_weights_path(profile)
        if not os.path.isfile(path):
            make = 'make weights' if profile == 'default' else f'make weights-{profile}'
            raise WeightsError(f'weights_path is empty and the shipped {profile!r} weights '
                               f'{path} are missing; run `{make}` or set weights_path')
        return path
    path = os.path.expanduser(weights_path)
    if os.path.isdir(path):
        raise WeightsError(f'weights_path {weights_path!r} is a directory, not a weights file')
    if not os.path.exists(path):
        raise WeightsError(f'weights_path {weights_path!r} does not exist')
    if not os.path.isfile(path):
        raise WeightsError(f'weights_path {weights_path!r} is not a regular file')
    return path


def describe_provenance(metadata: Dict[str, Any]) -> str:
    """Return one line on where weights come from: data, date and source revision."""
    provenance = metadata.get('provenance') or {}
    dataset = provenance.get('dataset')
    if isinstance(dataset, dict):  # the training data config: its root names the data
        dataset = dataset.get('root') or dataset.get('name')
    parts = [f'{name} {value}' for name, value in (
        ('data', dataset), ('date', provenance.get('date')),
        ('git', provenance.get('git_revision') or provenance.get('git_rev'))) if value]
    return ', '.join(parts) or 'no provenance recorded'
