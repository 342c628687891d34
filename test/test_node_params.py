"""The node's parameter schema: validation, descriptors, params file and README table."""

import dataclasses
import os

from bev_perception.node_params import (check_against_model, check_params_files, descriptor,
                                        explain_init_error, markdown_table, NodeSettings,
                                        parameter_spec, PARAMETERS, params_files,
                                        validate_value)
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS_FILE = os.path.join(ROOT, 'config', 'perception.yaml')
TABLE_BEGIN = '<!-- parameters-table:begin (python -m bev_perception.node_params) -->'
TABLE_END = '<!-- parameters-table:end -->'


def test_schema_names_are_unique_and_match_the_settings_fields():
    names = [spec.name for spec in PARAMETERS]
    assert len(names) == len(set(names))
    assert names == [field.name for field in dataclasses.fields(NodeSettings)]
    assert all(spec.description.endswith(('.', ')')) for spec in PARAMETERS)


def test_defaults_round_trip_through_settings():
    settings = NodeSettings.defaults()
    assert settings.values() == {spec.name: spec.default for spec in PARAMETERS}
    assert settings.sync_settings().max_image_age_s == parameter_spec('max_image_age_s').default
    assert settings.class_score_thresholds(3) == (0.3, 0.3, 0.3)


@pytest.mark.parametrize('name, value, message', [
    ('device', 'tpu', "device is 'tpu'; it must match"),
    ('device', 'cuda:1', None),
    ('precision', 'fp64', 'choose one of fp32, fp16'),
    ('max_detections', 5.0, 'must hold integers'),
    ('max_detections', True, 'must hold integers'),
    ('max_detections', 1001, 'outside [0, 1000]'),
    ('max_image_age_s', 1, None),
    ('max_image_age_s', float('nan'), 'must be finite'),
    ('publish_markers', 1, 'must be true or false'),
    ('extrinsic_rpy_rad', [0.0, 0.0], 'has 2 values; it needs 3'),
    ('extrinsic_rpy_rad', [0.0, 0.0, 7.0], 'value 7.0 is outside'),
    ('semantic_output_hw', [120, 'a'], 'must hold integers'),
    ('score_thresholds', [], 'must not be empty'),
    ('score_thresholds', [0.2, 1.5], 'value 1.5 is outside [0, 1]'),
    ('intensity_field', 'bad name', 'must match'),
])
def test_validate_value_names_the_problem(name, value, message):
    error = validate_value(parameter_spec(name), value)
    if message is None:
        assert error is None
    else:
        assert message in error and name in error


def test_per_class_lengths_need_the_class_count():
    spec = parameter_spec('score_thresholds')
    assert validate_value(spec, [0.1, 0.2, 0.3], num_classes=3) is None
    assert validate_value(spec, [0.1], num_classes=3) is None
    error = validate_value(spec, [0.1, 0.2], num_classes=3)
    assert 'has 2 values; it needs 1 or 3 (one per class)' in error
    assert validate_value(spec, [0.1, 0.2]) is None  # class count unknown: not checked


def test_from_values_lists_every_error():
    with pytest.raises(ValueError) as error:
        NodeSettings.from_values({'precision': 'fp8', 'qos_depth': 0, 'no_such_thing': 1})
    text = str(error.value)
    assert 'unknown parameter no_such_thing' in text
    assert 'precision' in text and 'qos_depth value 0 is outside' in text


def test_settings_that_contradict_the_weights_are_reported():
    settings = NodeSettings.from_values(
        {'score_thresholds': [0.1, 0.2], 'max_detections': 150})
    errors = check_against_model(settings, ('car', 'truck', 'pedestrian'), max_objects=100)
    assert len(errors) == 2
    assert 'score_thresholds has 2 values' in errors[0] and 'car, truck, pedestrian' in errors[0]
    assert 'max_detections is 150' in errors[1] and 'at most 100' in errors[1]
    assert check_against_model(NodeSettings.defaults(), ('car',), max_objects=20) == []


def test_descriptors_carry_type_range_and_read_only():
    from rcl_interfaces.msg import ParameterType

    age = descriptor(parameter_spec('max_image_age_s'))
    assert age.type == ParameterType.PARAMETER_DOUBLE and not age.read_only
    assert (age.floating_point_range[0].from_value, age.floating_point_range[0].to_value) == (
        0.0, 10.0)
    depth = descriptor(parameter_spec('qos_depth'))
    assert depth.read_only and depth.integer_range[0].to_value == 1000
    thresholds = descriptor(parameter_spec('score_thresholds'))
    assert thresholds.type == ParameterType.PARAMETER_DOUBLE_ARRAY
    assert 'each in [0, 1]' in thresholds.additional_constraints


def test_params_file_declares_only_known_parameters_with_exact_types():
    with open(PARAMS_FILE) as handle:
        document = yaml.safe_load(handle)
    values = document['/**']['ros__parameters']
    assert set(values) == {spec.name for spec in PARAMETERS}
    # The shipped file states every default: a value drifting from the schema fails here.
    assert NodeSettings.from_values(values) == NodeSettings.defaults()
    for spec in PARAMETERS:
        value = values[spec.name]
        items = value if spec.kind.endswith('_array') else [value]
        wanted = {'double': float, 'integer': int, 'bool': bool, 'string': str}[
            spec.kind.replace('_array', '')]
        # rclpy refuses 1 for a double parameter: the file must say 1.0.
        assert all(type(item) is wanted for item in items), spec.name


def test_parameters_declare_on_a_real_node(rclpy_context):
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    node = Node('params_probe', context=rclpy_context)
    try:
        for spec in PARAMETERS:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
        assert list(node.get_parameter('score_thresholds').value) == [0.3]
        read_only = node.set_parameters([Parameter('device', value='cpu')])[0]
        assert not read_only.successful and 'read-only' in read_only.reason
        out_of_range = node.set_parameters([Parameter('max_image_age_s', value=20.0)])[0]
        assert not out_of_range.successful
        assert node.set_parameters([Parameter('max_image_age_s', value=0.2)])[0].successful
    finally:
        node.destroy_node()


def test_readme_table_is_generated_from_the_schema():
    table = markdown_table()
    for spec in PARAMETERS:
        assert f'| `{spec.name}` |' in table
    with open(os.path.join(ROOT, 'README.md')) as handle:
        text = handle.read()
    assert TABLE_BEGIN in text and TABLE_END in text, 'README.md lacks the parameter table'
    inside = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0]
    assert inside.strip() == table.strip(), (
        'README.md: regenerate the table with python -m bev_perception.node_params')


def test_params_file_problems_are_named(tmp_path):
    good = tmp_path / 'good.yaml'
    good.write_text('/**:\n  ros__parameters:\n    device: cpu\n')
    broken = tmp_path / 'broken.yaml'
    broken.write_text('/**:\n  ros__parameters:\n    device: [cpu\n')
    missing = tmp_path / 'missing.yaml'
    command = ['perception_node', '--params-file', 'not/a/ros/arg', '--ros-args', '-p', 'a:=1',
               '--params-file', str(good), '--params-file', str(broken), '--', 'x']
    assert params_files(command) == [str(good), str(broken)]
    assert check_params_files(['n', '--ros-args', '--params-file', str(good)]) is None
    assert check_params_files(['n', '--ros-args', '--params-file', str(missing)]) == (
        f'params file {str(missing)!r} does not exist')
    assert check_params_files(['n', '--ros-args', '--params-file', str(tmp_path)]) == (
        f'params file {str(tmp_path)!r} is not a file')
    problem = check_params_files(command)
    assert problem.startswith(f'params file {str(broken)!r} is not valid YAML: ')
    assert problem.endswith('(line 4, column 1)')
    rcl_text = ("failed to initialize rcl: Couldn't parse remap rule: '-r foo'. Error: "
                'Expected lexeme type (19) not found, search ended at index 3, at '
                '/project/src/rcl/lexer_lookahead.c:233, at /project/src/rcl/arguments.c:415')
    assert explain_init_error(RuntimeError(rcl_text), ['n', '--ros-args', '-r', 'foo']) == (
        "invalid ROS arguments: failed to initialize rcl: Couldn't parse remap rule: '-r foo'. "
        'Error: Expected lexeme type (19) not found, search ended at index 3')
