"""Static checks of launch/perception.launch.py (the launch package is not installable here).

The launch file is parsed, not run: its executable and package must match setup.py, its params
file and RViz config must exist and be installed, its remappings must name the node's declared
input topics, and every launch argument forwarded as a parameter must be a declared parameter.
"""

import ast
import fnmatch
import os

from bev_perception import node, topics
from bev_perception.node_params import PARAMETERS
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_FILE = os.path.join(ROOT, 'launch', 'perception.launch.py')
SETUP_FILE = os.path.join(ROOT, 'setup.py')


def module_constants(path):
    """Return the module-level NAME = <literal> assignments of a Python file."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    constants = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(
                statement.targets[0], ast.Name):
            try:
                constants[statement.targets[0].id] = ast.literal_eval(statement.value)
            except ValueError:
                pass  # not a literal (calls, names)
    return constants, tree


@pytest.fixture(scope='module')
def launch():
    return module_constants(LAUNCH_FILE)


@pytest.fixture(scope='module')
def setup_py():
    with open(SETUP_FILE) as handle:
        tree = ast.parse(handle.read(), SETUP_FILE)
    constants, _ = module_constants(SETUP_FILE)
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, 'id', '') == 'setup':
            keywords = {keyword.arg: keyword.value for keyword in call.keywords}
            entry_points = ast.literal_eval(keywords['entry_points'])
            data_files = ast.unparse(keywords['data_files'])
            return constants, entry_points, data_files
    raise AssertionError('setup() call not found in setup.py')


def test_executable_and_package_match_setup_py(launch, setup_py):
    constants, _ = launch
    setup_constants, entry_points, _ = setup_py
    assert constants['PACKAGE'] == setup_constants['PACKAGE'] == 'bev_perception'
    scripts = dict(line.replace(' ', '').split('=') for line in
                   entry_points['console_scripts'])
    assert scripts[constants['EXECUTABLE']] == 'bev_perception.node:main'
    assert callable(node.main)


def test_params_file_and_rviz_config_exist_and_are_installed(launch, setup_py):
    constants, _ = launch
    _, _, data_files = setup_py
    for key in ('PARAMS_FILE', 'RVIZ_CONFIG'):
        relative = os.path.join(*constants[key])
        assert os.path.isfile(os.path.join(ROOT, relative)), relative
        patterns = [text for text in data_files.replace('"', "'").split("'")
                    if text.startswith('config/')]
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), (
            f'{relative} is not installed by setup.py data_files {patterns}')


def test_remappings_name_the_node_topics(launch):
    constants, _ = launch
    remappings = constants['REMAPPINGS']
    assert set(remappings) == set(topics.INPUT_TOPICS.values())
    assert set(remappings.values()) <= set(constants['ARGUMENTS'])


def test_forwarded_arguments_are_declared_parameters(launch):
    constants, tree = launch
    declared = {spec.name for spec in PARAMETERS}
    for name in constants['FORWARDED_PARAMETERS']:
        assert name in declared and name in constants['ARGUMENTS']
    # use_sim_time is rclpy's own parameter; it is the only other forwarded one.
    source = ast.unparse(tree)
    assert "{'use_sim_time': use_sim_time}" in source


def test_every_argument_has_a_description_and_the_issue_asks_for_these(launch):
    constants, tree = launch
    arguments = constants['ARGUMENTS']
    assert {'params_file', 'weights_path', 'device', 'pointcloud_topic', 'image_topic',
            'namespace', 'use_sim_time', 'rviz'} <= set(arguments)
    for name, (default, description) in arguments.items():
        assert len(description) > 20 and description.endswith('.'), name
    calls = [call for call in ast.walk(tree) if isinstance(call, ast.Call)
             and getattr(call.func, 'id', '') == 'DeclareLaunchArgument']
    assert calls and all('description' in {kw.arg for kw in call.keywords} for call in calls)


def test_launch_file_leaves_dds_discovery_to_the_environment():
    with open(LAUNCH_FILE) as handle:
        text = handle.read()
    for variable in ('ROS_DOMAIN_ID', 'ROS_LOCALHOST_ONLY', 'ROS_AUTOMATIC_DISCOVERY_RANGE'):
        assert f"'{variable}'" not in text and f'"{variable}"' not in text
    assert 'SetEnvironmentVariable' not in text


def test_params_file_default_values_start_the_node_settings(launch):
    import yaml

    from bev_perception.node_params import NodeSettings

    constants, _ = launch
    with open(os.path.join(ROOT, *constants['PARAMS_FILE'])) as handle:
        values = yaml.safe_load(handle)['/**']['ros__parameters']
    settings = NodeSettings.from_values(values)
    # The launch file's empty weights/device arguments defer to the params file.
    assert constants['ARGUMENTS']['weights_path'][0] == ''
    assert constants['ARGUMENTS']['device'][0] == ''
    assert settings.weights_path == '' and settings.device in ('cuda', 'cpu')


def test_rviz_config_shows_the_launch_topics(launch):
    import yaml

    constants, _ = launch
    with open(os.path.join(ROOT, *constants['RVIZ_CONFIG'])) as handle:
        rviz = yaml.safe_load(handle)
    displays = {display['Class']: display for display in rviz['Visualization Manager'][
        'Displays'] if display.get('Enabled', True)}
    node_prefix = '/' + module_constants(LAUNCH_FILE)[0]['NODE_NAME']
    cloud = displays['rviz_default_plugins/PointCloud2']['Topic']
    assert cloud['Value'] == constants['ARGUMENTS']['pointcloud_topic'][0]
    assert cloud['Reliability Policy'] == 'Best Effort'
    markers = displays['rviz_default_plugins/MarkerArray']
    assert markers['Topic']['Value'] == node_prefix + '/output/markers'
    assert list(markers['Namespaces']) == ['bev_perception']
    image = displays['rviz_default_plugins/Image']['Topic']['Value']
    assert image == topics.resolve(topics.OUTPUT_TOPICS['semantic_color'][1])
    assert node_prefix == '/' + topics.NODE_NAME
