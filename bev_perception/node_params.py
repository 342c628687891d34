"""The perception node's parameters, described once.

``PARAMETERS`` is the single table (name, type, default, range, read-only, description). The node
declares its ROS parameters from it, validates values with it (at start-up and in its
set-parameters callback) and the README parameter table is generated from it
(``python -m bev_perception.node_params`` prints the Markdown). No ROS import at module level:
``descriptor()`` imports ``rcl_interfaces`` when called.
"""

from dataclasses import dataclass, fields, make_dataclass
import math
import os
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bev_perception.model.config import NMS_KINDS
from bev_perception.sync import SyncSettings

#: Shipped weights by profile, ``weights/<profile>.safetensors`` in the package: ``default``
#: (``make weights``) and ``lite``, the CPU profile (``make weights-lite``).
SHIPPED_PROFILES = ('default', 'lite')

#: Parameter types, named as in ``ros2 param describe``.
PARAMETER_KINDS = ('bool', 'integer', 'double', 'string', 'integer_array', 'double_array')

#: Sections of the README table, in order.
SECTIONS = ('Model', 'Detection', 'Input', 'Synchronisation', 'Outputs', 'Health')


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter.

    Attributes:
        name: ROS parameter name.
        kind: one of PARAMETER_KINDS.
        default: default value (a list for arrays: never empty, ROS cannot type an empty list).
        description: one or two sentences, with units.
        section: README table section (one of SECTIONS).
        value_range: inclusive (min, max) for numbers and for every element of numeric arrays.
        choices: allowed strings.
        pattern: regular expression a string must match in full (instead of choices).
        lengths: allowed array lengths; the text 'classes' stands for one per detection class.
        read_only: True when a change needs a restart.
    """

    name: str
    kind: str
    default: Any
    description: str
    section: str
    value_range: Optional[Tuple[float, float]] = None
    choices: Tuple[str, ...] = ()
    pattern: Optional[str] = None
    lengths: Tuple[Any, ...] = ()
    read_only: bool = False

    def __post_init__(self) -> None:
        if self.kind not in PARAMETER_KINDS:
            raise ValueError(f'parameter {self.name}: unknown kind {self.kind!r}')
        if self.section not in SECTIONS:
            raise ValueError(f'parameter {self.name}: unknown section {self.section!r}')
        error = validate_value(self, self.default)
        if error:
            raise ValueError(f'default of {error}')


def _is_number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def validate_value(spec: ParameterSpec, value: Any,
                   num_classes: Optional[int] = None) -> Optional[str]:
    """Return why ``value`` is not valid for ``spec`` (a sentence naming it), or None.

    Args:
        spec: the parameter.
        value: the candidate value (Python types as rclpy gives them).
        num_classes: detection classes of the loaded weights, for 'classes' lengths; None
            skips that check.
    """
    name = spec.name
    kind = spec.kind
    if kind == 'bool':
        return None if isinstance(value, bool) else f'{name} must be true or false'
    if kind == 'string':
        if not isinstance(value, str):
            return f'{name} must be a string'
        if spec.choices and value not in spec.choices:
            return f'{name} is {value!r}; choose one of {", ".join(spec.choices)}'
        if spec.pattern and not re.fullmatch(spec.pattern, value):
            return f'{name} is {value!r}; it must match {spec.pattern}'
        return None
    integer = kind.startswith('integer')
    if kind.endswith('_array'):
        if isinstance(value, (str, bytes)) or not hasattr(value, '__len__'):
            return f'{name} must be a list'
        values = list(value)
        allowed = [num_classes if length == 'classes' else length for length in spec.lengths]
        if spec.lengths and None not in allowed and len(values) not in allowed:
            wanted = ' or '.join(
                f'{length} (one per class)' if spec_length == 'classes' else str(length)
                for spec_length, length in zip(spec.lengths, allowed))
            return f'{name} has {len(values)} values; it needs {wanted}'
        if not values:
            return f'{name} must not be empty'
    else:
        values = [value]
    for item in values:
        if not _is_number(item, integer):
            return f'{name} must hold {"integers" if integer else "numbers"}, got {item!r}'
        if not math.isfinite(item):
            return f'{name} must be finite, got {item!r}'
        if spec.value_range is not None:
            low, high = spec.value_range
            if not low <= item <= high:
                return f'{name} value {item} is outside [{low:g}, {high:g}]'
    return None


PARAMETERS: Tuple[ParameterSpec, ...] = (
    # Model
    ParameterSpec(
        'weights_path', 'string', '',
        'Deployable weights file (.safetensors with metadata). Empty: the shipped weights of '
        '`profile` (installed with the package).',
        'Model', read_only=True),
    ParameterSpec(
        'profile', 'string', 'default',
        'Shipped weights used when `weights_path` is empty: `default` (`default.safetensors`) '
        'or `lite` (`lite.safetensors`, the CPU profile: about a third of the compute, for '
        'machines without a GPU; see README "Performance").',
        'Model', choices=SHIPPED_PROFILES, read_only=True),
    ParameterSpec(
        'device', 'string', 'cuda',
        'Torch device: `cuda`, `cuda:N` or `cpu`. Without a usable GPU the node falls back to '
        'the CPU and says so in the log.',
        'Model', pattern=r'cpu|cuda(:\d+)?', read_only=True),
    ParameterSpec(
        'precision', 'string', 'fp32',
        '`fp32`, or `fp16` (autocast, CUDA only; fp32 on the CPU with a log message).',
        'Model', choices=('fp32', 'fp16'), read_only=True),
    ParameterSpec(
        'torch_compile', 'bool', False,
        '`torch.compile` the fixed-shape network stages (backbone, camera encoder, fusion, '
        'heads); start-up takes longer (compilation during warm-up).',
        'Model', read_only=True),
    ParameterSpec(
        'cuda_graphs', 'bool', False,
        'Replay backbone to decode as a CUDA graph per frame kind (camera / LiDAR-only), '
        'captured during warm-up; CUDA only (ignored with a log message on the CPU).',
        'Model', read_only=True),
    ParameterSpec(
        'cpu_threads', 'integer', 0,
        "Torch intra-op threads for CPU inference; 0: torch's default (one per core). On a "
        'machine shared with other busy processes 1 avoids waiting for descheduled threads.',
        'Model', value_range=(0, 256), read_only=True),
    # Detection
    ParameterSpec(
        'score_thresholds', 'double_array', [0.3],
        'Minimum detection score: one value for every class, or one per class in the order '
        "of the weights' classes (published on `~/output/label_info`).",
        'Detection', value_range=(0.0, 1.0), lengths=(1, 'classes')),
    ParameterSpec(
        'max_detections', 'integer', 0,
        "Most detections published per frame; 0: the weights' top-K (`head.max_objects`), "
        'which is also the upper limit.',
        'Detection', value_range=(0, 1000)),
    ParameterSpec(
        'nms_kind', 'string', 'model',
        "Same-class suppression: `model` (the weights' setting), `distance` (BEV centre "
        'distance), `rotated` (rotated BEV IoU) or `none`.',
        'Detection', choices=('model',) + NMS_KINDS),
    ParameterSpec(
        'nms_radius_scale', 'double', 1.0,
        "Factor on the weights' per-class suppression radii (distance NMS).",
        'Detection', value_range=(0.01, 10.0)),
    ParameterSpec(
        'nms_iou_threshold', 'double', 0.0,
        "Rotated-IoU above which the weaker box is suppressed; 0: the weights' value.",
        'Detection', value_range=(0.0, 1.0)),
    # Input
    ParameterSpec(
        'intensity_field', 'string', 'intensity',
        'Name of the PointCloud2 field read as intensity (any datatype); empty: the clouds '
        "have none, the network sees intensity 0 (as in the training's intensity dropout).",
        'Input', pattern=r'([A-Za-z_][A-Za-z0-9_]*)?', read_only=True),
    ParameterSpec(
        'intensity_scale', 'double', 0.0,
        "Factor from the cloud's intensity to the 0..1 network input. 0: the weights' value "
        '(1/255, for 0..255 reflectance as in A2D2); use 1.0 for drivers publishing 0..1. '
        'Scaled values far above 1 are counted and reported.',
        'Input', value_range=(0.0, 1.0e6)),
    ParameterSpec(
        'max_points', 'integer', 200000,
        'Clouds with more finite points are subsampled (uniform stride) to this many; counted '
        'in diagnostics.',
        'Input', value_range=(1000, 10000000)),
    ParameterSpec(
        'extrinsic_translation_m', 'double_array', [0.0, 0.0, 0.0],
        "Position (x, y, z, metres) of the cloud frame's origin in the model frame (A2D2 "
        'front-centre camera view frame: x forward, y left, z up). Boxes are published back '
        "in the cloud's frame.",
        'Input', value_range=(-1000.0, 1000.0), lengths=(3,)),
    ParameterSpec(
        'extrinsic_rpy_rad', 'double_array', [0.0, 0.0, 0.0],
        'Rotation (roll, pitch, yaw, radians; R = Rz(yaw) Ry(pitch) Rx(roll)) from the cloud '
        'frame to the model frame: p_model = R p_cloud + t.',
        'Input', value_range=(-2.0 * math.pi, 2.0 * math.pi), lengths=(3,)),
    ParameterSpec(
        'camera_position_m', 'double_array', [0.0, 0.0, 0.0],
        'Position (x, y, z, metres) of the camera in the cloud frame. With the intrinsics of '
        '`~/input/camera_info` it places the camera for weights that fuse by calibration '
        '(others ignore it), where `/tf` does not link the two frames (see `use_tf`).',
        'Input', value_range=(-1000.0, 1000.0), lengths=(3,)),
    ParameterSpec(
        'camera_rpy_rad', 'double_array', [0.0, 0.0, 0.0],
        'Orientation (roll, pitch, yaw, radians) of the camera body (x forward, y left, z up; '
        'its optical frame follows) in the cloud frame.',
        'Input', value_range=(-2.0 * math.pi, 2.0 * math.pi), lengths=(3,)),
    ParameterSpec(
        'use_tf', 'bool', True,
        'Take the camera pose from `/tf` and `/tf_static` (the frame of the cloud to the '
        'frame of the camera_info) when they link the two; otherwise, or when false, from '
        '`camera_position_m` / `camera_rpy_rad`. Needs the tf2_msgs package.',
        'Input', read_only=True),
    ParameterSpec(
        'qos_depth', 'integer', 5,
        'History depth of the input subscriptions.',
        'Input', value_range=(1, 1000), read_only=True),
    ParameterSpec(
        'input_reliability', 'string', 'best_effort',
        'Reliability of the input subscriptions: `best_effort` (sensor data QoS, receives '
        'from both kinds of publisher) or `reliable` (only from reliable publishers).',
        'Input', choices=('best_effort', 'reliable'), read_only=True),
    # Synchronisation
    ParameterSpec(
        'sync_policy', 'string', 'lidar_triggered',
        '`lidar_triggered`: every cloud is processed, with the nearest image or LiDAR-only. '
        '`approximate`: message_filters ApproximateTimeSynchronizer (needs message_filters; '
        'clouds without an image are not processed).',
        'Synchronisation', choices=('lidar_triggered', 'approximate'), read_only=True),
    ParameterSpec(
        'max_image_age_s', 'double', 0.1,
        'Largest |image stamp - cloud stamp - image_time_offset_s| paired; further images '
        'mean a LiDAR-only frame.',
        'Synchronisation', value_range=(0.0, 10.0)),
    ParameterSpec(
        'image_time_offset_s', 'double', 0.05,
        'Expected image stamp minus cloud stamp of a matching pair (A2D2: the camera fires '
        '40-60 ms after the LiDAR sweep starts).',
        'Synchronisation', value_range=(-1.0, 1.0)),
    ParameterSpec(
        'max_image_wait_s', 'double', 0.1,
        'How long (wall time) a cloud may wait for an image stamped at or after its expected '
        'time; 0 pairs at once with the buffered images.',
        'Synchronisation', value_range=(0.0, 2.0)),
    ParameterSpec(
        'image_buffer_size', 'integer', 10,
        'Images kept for pairing.',
        'Synchronisation', value_range=(1, 100)),
    ParameterSpec(
        'time_jump_threshold_s', 'double', 0.5,
        'A stamp stepping back by more than this (bag loop, driver restart) resets the '
        'buffers; counted in diagnostics.',
        'Synchronisation', value_range=(0.0, 3600.0)),
    ParameterSpec(
        'approximate_queue_size', 'integer', 10,
        'Queue size of the approximate synchroniser.',
        'Synchronisation', value_range=(1, 1000), read_only=True),
    ParameterSpec(
        'approximate_slop_s', 'double', 0.1,
        'Slop (seconds) of the approximate synchroniser.',
        'Synchronisation', value_range=(0.001, 10.0), read_only=True),
    # Outputs
    ParameterSpec(
        'publish_detections', 'bool', True,
        'Publish `~/output/detections` (vision_msgs/Detection3DArray).',
        'Outputs', read_only=True),
    ParameterSpec(
        'publish_semantic', 'bool', True,
        'Publish `~/output/semantic` (mono8 class ids).',
        'Outputs', read_only=True),
    ParameterSpec(
        'publish_semantic_color', 'bool', True,
        'Publish `~/output/semantic_color` (rgb8, dataset palette).',
        'Outputs', read_only=True),
    ParameterSpec(
        'publish_markers', 'bool', True,
        'Publish `~/output/markers` (visualization_msgs/MarkerArray).',
        'Outputs', read_only=True),
    ParameterSpec(
        'publish_debug', 'bool', True,
        'Publish per-stage timings and end-to-end latency on `~/debug/timings`.',
        'Outputs', read_only=True),
    ParameterSpec(
        'semantic_output_hw', 'integer_array', [0, 0],
        'Height and width of the semantic images (nearest-neighbour); [0, 0]: the camera '
        "image's size (pixel-aligned with it).",
        'Outputs', value_range=(0, 16384), lengths=(2,)),
    ParameterSpec(
        'skip_when_no_subscribers', 'bool', False,
        'Skip inference while no output has a subscriber (counted as skipped).',
        'Outputs'),
    # Health
    ParameterSpec(
        'inference_budget_ms', 'double', 100.0,
        'Frames whose processing (conversion to publishing) takes longer are counted as over '
        'budget.',
        'Health', value_range=(1.0, 100000.0)),
    ParameterSpec(
        'diagnostics_period_s', 'double', 1.0,
        'Period of the `/diagnostics` status.',
        'Health', value_range=(0.1, 60.0), read_only=True),
)

_SPECS: Dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


def parameter_spec(name: str) -> ParameterSpec:
    """Return the spec of a parameter (KeyError for unknown names)."""
    return _SPECS[name]


#: Python type of each parameter kind (NodeSettings' field types).
_PYTHON_TYPES = {'bool': bool, 'integer': int, 'double': float, 'string': str,
                 'integer_array': Tuple[int, ...], 'double_array': Tuple[float, ...]}


class _SettingsBehaviour:
    """Methods of NodeSettings (its fields come from PARAMETERS)."""

    @classmethod
    def from_values(cls, values: Mapping[str, Any],
                    num_classes: Optional[int] = None) -> Any:
        """Build settings from parameter values; missing names take their defaults.

        Raises:
            ValueError: unknown names, or values that fail validate_value (all listed).
        """
        unknown = sorted(set(values) - set(_SPECS))
        errors = [f'unknown parameter {name}' for name in unknown]
        kwargs = {}
        for spec in PARAMETERS:
            value = values.get(spec.name, spec.default)
            error = validate_value(spec, value, num_classes)
            if error:
                errors.append(error)
                continue
            if spec.kind == 'double':
                value = float(value)
            elif spec.kind == 'double_array':
                value = tuple(float(v) for v in value)
            elif spec.kind == 'integer_array':
                value = tuple(int(v) for v in value)
            kwargs[spec.name] = value
        if errors:
            raise ValueError('; '.join(errors))
        return cls(**kwargs)

    @classmethod
    def defaults(cls) -> Any:
        """Return the settings with every parameter at its default."""
        return cls.from_values({})

    def values(self) -> Dict[str, Any]:
        """Return the values by parameter name (arrays as lists, as ROS gives them)."""
        return {field.name: (list(getattr(self, field.name))
                             if isinstance(getattr(self, field.name), tuple)
                             else getattr(self, field.name)) for field in fields(self)}

    def cloud_fields(self) -> Tuple[str, ...]:
        """Return the PointCloud2 fields read: x, y, z and the intensity field if any."""
        return ('x', 'y', 'z') + ((self.intensity_field,) if self.intensity_field else ())

    def sync_settings(self) -> SyncSettings:
        """Return the LiDAR-triggered pairing settings."""
        return SyncSettings(
            max_image_age_s=self.max_image_age_s, image_time_offset_s=self.image_time_offset_s,
            max_image_wait_s=self.max_image_wait_s, image_buffer_size=self.image_buffer_size,
            time_jump_threshold_s=self.time_jump_threshold_s)

    def class_score_thresholds(self, num_classes: int) -> Tuple[float, ...]:
        """Return one score threshold per detection class."""
        if len(self.score_thresholds) == 1:
            return self.score_thresholds * num_classes
        return self.score_thresholds


#: All parameter values of the node: one frozen field per entry of PARAMETERS, in its order
#: (bool, int, float, str, or tuples for arrays).
NodeSettings = make_dataclass(
    'NodeSettings', [(spec.name, _PYTHON_TYPES[spec.kind]) for spec in PARAMETERS],
    bases=(_SettingsBehaviour,), frozen=True, namespace={'__module__': __name__})
NodeSettings.__doc__ = 'All parameter values of the node, one field per entry of PARAMETERS.'


def check_against_model(settings: NodeSettings, detection_classes: Sequence[str],
                        max_objects: int) -> List[str]:
    """Return the ways ``settings`` contradict the loaded weights (empty when they agree).

    Args:
        settings: the node's settings.
        detection_classes: class names stored in the weights.
        max_objects: the weights' decoding top-K (``head.max_objects``).
    """
    errors = []
    error = validate_value(
        parameter_spec('score_thresholds'), list(settings.score_thresholds),
        len(detection_classes))
    if error:
        errors.append(f'{error}: {", ".join(detection_classes)}')
    if settings.max_detections > max_objects:
        errors.append(
            f'max_detections is {settings.max_detections} but the weights decode at most '
            f'{max_objects} candidates per frame (head.max_objects); lower max_detections')
    return errors


def descriptor(spec: ParameterSpec):
    """Return the rcl_interfaces ParameterDescriptor of a parameter (type, range, read-only)."""
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    ParameterType)

    types = {
        'bool': ParameterType.PARAMETER_BOOL,
        'integer': ParameterType.PARAMETER_INTEGER,
        'double': ParameterType.PARAMETER_DOUBLE,
        'string': ParameterType.PARAMETER_STRING,
        'integer_array': ParameterType.PARAMETER_INTEGER_ARRAY,
        'double_array': ParameterType.PARAMETER_DOUBLE_ARRAY,
    }
    result = ParameterDescriptor(
        name=spec.name, type=types[spec.kind], description=spec.description,
        read_only=spec.read_only, additional_constraints=_constraints_text(spec))
    if spec.value_range is not None and spec.kind == 'integer':
        result.integer_range = [IntegerRange(
            from_value=int(spec.value_range[0]), to_value=int(spec.value_range[1]), step=0)]
    elif spec.value_range is not None and spec.kind == 'double':
        result.floating_point_range = [FloatingPointRange(
            from_value=float(spec.value_range[0]), to_value=float(spec.value_range[1]),
            step=0.0)]
    return result


def _constraints_text(spec: ParameterSpec) -> str:
    parts = []
    if spec.value_range is not None:
        low, high = spec.value_range
        each = 'each ' if spec.kind.endswith('_array') else ''
        parts.append(f'{each}in [{low:g}, {high:g}]')
    if spec.choices:
        parts.append('one of ' + ', '.join(spec.choices))
    if spec.pattern:
        parts.append(f'matches {spec.pattern}')
    if spec.lengths:
        parts.append('length ' + ' or '.join(
            'one per class' if length == 'classes' else str(length) for length in spec.lengths))
    return '; '.join(parts)


def _format_default(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f"`'{value}'`" if value else "`''`"
    if isinstance(value, list):
        return '`[' + ', '.join(_format_default(v).strip('`') for v in value) + ']`'
    return f'`{value!r}`'


def markdown_table() -> str:
    """Return the README parameter table (Markdown), one block per section."""
    lines = []
    for section in SECTIONS:
        lines += [f'**{section}**', '',
                  '| Name | Type | Default | Constraints | Description |',
                  '| --- | --- | --- | --- | --- |']
        for spec in PARAMETERS:
            if spec.section != section:
                continue
            constraints = _constraints_text(spec).replace('|', '\\|')
            if spec.read_only:
                constraints = (constraints + '; ' if constraints else '') + 'read-only'
            lines.append(f'| `{spec.name}` | {spec.kind} | {_format_default(spec.default)} | '
                         f'{constraints} | {spec.description} |')
        lines.append('')
    return '\n'.join(lines)


# ------------------------------------------------------------------ command line

def params_files(args: List[str]) -> List[str]:
    """Return the ``--params-file`` paths among the ROS arguments of a command line."""
    paths = []
    ros_args = False
    for index, arg in enumerate(args):
        if arg == '--ros-args':
            ros_args = True
        elif arg == '--':
            ros_args = False
        elif ros_args and arg == '--params-file' and index + 1 < len(args):
            paths.append(args[index + 1])
    return paths


def check_params_files(args: List[str]) -> Optional[str]:
    """Return why a ``--params-file`` of a command line is unusable (missing, not YAML), or None.

    rclpy.init would refuse it with an RCLError; this names the file and the YAML problem.
    """
    for path in params_files(args):
        if not os.path.exists(path):
            return f'params file {path!r} does not exist'
        if not os.path.isfile(path):
            return f'params file {path!r} is not a file'
        try:
            import yaml

            with open(path, encoding='utf-8') as stream:
                yaml.safe_load(stream)
        except ImportError:
            return None  # no PyYAML: rclpy.init will say it
        except (OSError, UnicodeDecodeError) as read_error:
            return f'cannot read params file {path!r}: {read_error}'
        except yaml.YAMLError as yaml_error:
            mark = getattr(yaml_error, 'problem_mark', None)
            problem = getattr(yaml_error, 'problem', None) or str(yaml_error)
            place = '' if mark is None else f' (line {mark.line + 1}, column {mark.column + 1})'
            return f'params file {path!r} is not valid YAML: {problem}{place}'
    return None


def explain_init_error(error: Exception, args: List[str]) -> str:
    """Say in one line why rclpy.init refused a command line."""
    problem = check_params_files(args)
    if problem is not None:
        return problem
    text = ' '.join(str(error).split())
    text = re.sub(r', at \S+:\d+', '', text)  # rcl's source locations
    return f'invalid ROS arguments: {text}'


def main() -> None:
    """Print the Markdown parameter table (for the README)."""
    sys.stdout.write(markdown_table())


if __name__ == '__main__':
    main()
