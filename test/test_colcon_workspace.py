"""The ROS 2 workspace route, for real: colcon builds a clean copy, the installed tree runs.

A copy of the checkout's files (what git tracks, plus new files it does not ignore; never build
outputs) goes to ``ws/src/bev_perception`` in a temporary folder outside the checkout, and
``python -m colcon build`` (the venv's interpreter, as ROS 2 recommends for a venv) builds it
once per module. Everything after that runs from outside the checkout in the environment that
``source install/setup.bash`` gives, with no checkout folder on ``PYTHONPATH`` (the interfaces
built by ``make setup`` in ``.ros_interfaces`` stand in for a distro underlay's vision_msgs):
the installed ``perception_node`` with the installed params file and shipped weights is fed
synthetic frames over real DDS, and the installed ``bev_perception_eval`` and
``bev_perception_bench`` start, the evaluator on a small bag.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

from bev_perception.model.config import ModelConfig
from bev_perception.weights import read_metadata
import pytest
from ros_testing import wait_until, write_scene_bag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'bev_perception'
CONSOLE_SCRIPTS = ('perception_node', 'bev_perception_eval', 'bev_perception_bench')
WEIGHTS_FILES = ('default.safetensors', 'lite.safetensors')
FRAMES = 2
CLOUD_TOPIC = '/colcon_test/points'
IMAGE_TOPIC = '/colcon_test/image'
DETECTIONS_TOPIC = '/perception_node/output/detections'
# colcon is a test requirement (requirements.txt); skip only where it is truly missing.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('colcon_core') is None,
    reason='colcon is not installed (requirements.txt lists colcon-core, colcon-ros, ...: '
           'run make setup)')


def source_files(root):
    """Return the checkout's files as git sees them: tracked, plus untracked not ignored.

    The working tree's copies are used (not HEAD), so the build sees what the rest of the
    suite tests; tracked files deleted in the working tree are left out.
    """
    listed = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=root,
        check=True, capture_output=True).stdout.decode().split('\0')
    return sorted({path for path in listed if path and os.path.isfile(os.path.join(root, path))})


def without_checkout(pythonpath):
    """Return PYTHONPATH without entries from which the checkout's Python packages import."""
    kept = []
    for entry in filter(None, (pythonpath or '').split(os.pathsep)):
        real = os.path.realpath(entry)
        if real == os.path.realpath(ROOT) or any(
                os.path.isdir(os.path.join(real, name)) for name in (PACKAGE, 'training')):
            continue
        kept.append(entry)
    return os.pathsep.join(kept)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, ros_env):
    """Copy the package to ws/src, build it with colcon once; return the workspace's paths."""
    base = tmp_path_factory.mktemp('colcon')
    assert not os.path.realpath(base).startswith(os.path.realpath(ROOT) + os.sep)
    ws = base / 'ws'
    source = ws / 'src' / PACKAGE
    for path in source_files(ROOT):
        target = source / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, path), target)
    env = dict(ros_env, PYTHONPATH=without_checkout(ros_env.get('PYTHONPATH')),
               COLCON_HOME=str(base / 'colcon_home'))
    env.pop('COLCON_PREFIX_PATH', None)
    started = time.monotonic()
    build = subprocess.run(
        [sys.executable, '-m', 'colcon', 'build', '--event-handlers', 'console_direct+'],
        cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    prefix = ws / 'install' / PACKAGE
    version = f'python{sys.version_info.major}.{sys.version_info.minor}'
    return types.SimpleNamespace(
        base=base, ws=ws, env=env, build_log=build.stdout + build.stderr,
        build_s=time.monotonic() - started, prefix=prefix,
        site_packages=prefix / 'lib' / version / 'site-packages',
        lib=prefix / 'lib' / PACKAGE, share=prefix / 'share' / PACKAGE)


@pytest.fixture(scope='module')
def installed_env(workspace):
    """Return the environment of `source install/setup.bash` over the build's environment."""
    dump = subprocess.run(
        ['bash', '-c', 'source "$1" && exec "$2" -c '
         '"import json, os; print(json.dumps(dict(os.environ)))"', 'source',
         str(workspace.ws / 'install' / 'setup.bash'), sys.executable],
        cwd=workspace.base, env=workspace.env, capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    env = json.loads(dump.stdout.strip().splitlines()[-1])
    pythonpath = env['PYTHONPATH'].split(os.pathsep)
    assert pythonpath[0] == str(workspace.site_packages), pythonpath
    assert env['AMENT_PREFIX_PATH'].split(os.pathsep)[0] == str(workspace.prefix)
    return env


def run_installed(workspace, env, command, timeout=120):
    """Run a command from outside the checkout in the installed environment."""
    return subprocess.run(command, cwd=workspace.base, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_build_installs_the_ros_layout(workspace):
    for name in CONSOLE_SCRIPTS:
        script = workspace.lib / name
        assert os.access(script, os.X_OK), script
        with open(script) as handle:  # run with the interpreter that ran colcon (the venv's)
            assert handle.readline().strip() == '#!' + sys.executable, name
    for path in ('package.xml', 'launch/perception.launch.py', 'config/perception.yaml',
                 'config/perception.rviz', 'config/fastdds_large_messages.xml'):
        assert (workspace.share / path).is_file(), path
    assert (workspace.prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
            / PACKAGE).is_file()
    assert (workspace.site_packages / PACKAGE / 'node.py').is_file()
    installed = {path.name for path in (workspace.ws / 'install').iterdir() if path.is_dir()}
    assert installed == {PACKAGE}, 'vision_msgs (COLCON_IGNORE) must not be built'
    assert not (workspace.site_packages / 'training').exists(), 'training/ is source-only'


def test_shipped_weights_are_installed_exactly_once(workspace):
    found = sorted(workspace.ws.glob('install/**/*.safetensors'))
    expected = sorted(workspace.site_packages / PACKAGE / 'weights' / name
                      for name in WEIGHTS_FILES)
    assert found == expected
    for path in found:  # the installed copies are the checkout's, byte for byte
        with open(path, 'rb') as installed, open(
                os.path.join(ROOT, PACKAGE, 'weights', path.name), 'rb') as checkout:
            assert installed.read() == checkout.read(), path.name


def test_the_installed_package_is_what_imports(workspace, installed_env):
    probe = ('import importlib.util, json, bev_perception, bev_perception.weights as w; '
             'print(json.dumps([bev_perception.__file__, w.SHIPPED_WEIGHTS_DIR, '
             'importlib.util.find_spec("training") is None]))')
    result = run_installed(workspace, installed_env, [sys.executable, '-c', probe])
    assert result.returncode == 0, result.stderr
    module_file, weights_dir, no_training = json.loads(result.stdout)
    assert module_file == str(workspace.site_packages / PACKAGE / '__init__.py')
    assert weights_dir == str(workspace.site_packages / PACKAGE / 'weights')
    assert no_training, 'training/ importable: the checkout leaks into the installed run'


# ------------------------------------------------------------------------------ installed node

@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """Generate a small synthetic A2D2 scene; return (frames, mcap bag of it)."""
    from training.a2d2 import A2D2Dataset, DEFAULT_CLASS_MAP, DEFAULT_CLASSES

    root, bag = write_scene_bag(str(tmp_path_factory.mktemp('colcon_scene')), FRAMES, seed=911)
    dataset = A2D2Dataset(root, class_map=DEFAULT_CLASS_MAP, classes=DEFAULT_CLASSES)
    return [dataset[index] for index in range(len(dataset))], bag


@pytest.fixture(scope='module')
def installed_node(workspace, installed_env, scene):
    """Start the installed perception_node (installed params file, shipped weights)."""
    frames, _ = scene
    log_path = workspace.base / 'node.log'
    command = [str(workspace.lib / 'perception_node'), '--ros-args',
               '--params-file', str(workspace.share / 'config' / 'perception.yaml'),
               '-p', 'device:=cpu', '-p', f'max_points:={max(len(f.points) for f in frames) + 1}',
               '-r', f'~/input/pointcloud:={CLOUD_TOPIC}', '-r', f'~/input/image:={IMAGE_TOPIC}']
    with open(log_path, 'w') as log:
        process = subprocess.Popen(command, cwd=workspace.base, env=installed_env, stdout=log,
                                   stderr=subprocess.STDOUT)
    process.log_path = log_path
    yield process
    if process.poll() is None:  # SIGINT, as ros2 launch stops it: a clean exit is 0
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log_path.read_text()[-3000:]


class SensorPeer:
    """A test-side node: publishes clouds and images, collects the node's detections."""

    def __init__(self):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, PointCloud2
        from vision_msgs.msg import Detection3DArray

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('colcon_test_peer', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.cloud_pub = self.node.create_publisher(
            PointCloud2, CLOUD_TOPIC, qos_profile_sensor_data)
        self.image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.detections = []
        self.subscription = self.node.create_subscription(
            Detection3DArray, DETECTIONS_TOPIC, self.detections.append, 10)

    def spin_until(self, predicate, timeout_s):
        """Spin until predicate() is true or timeout_s passes; return its last value."""
        def spun():
            self.executor.spin_once(timeout_sec=0.02)
            return predicate()
        return wait_until(spun, timeout_s, poll_s=0.0)

    def detections_for(self, frame, node_process, attempts=3):
        """Publish a frame (image 50 ms after the cloud) until its detections arrive."""
        from bev_perception.conversions import array_to_pointcloud2, rgb_to_image
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        def header(stamp_us, frame_id):
            return Header(stamp=Time(sec=stamp_us // 10**6, nanosec=stamp_us % 10**6 * 1000),
                          frame_id=frame_id)

        cloud_header = header(frame.lidar_timestamp_us, 'a2d2_cam_front_center_view')
        image_header = header(frame.lidar_timestamp_us + 50000, 'a2d2_cam_front_center_optical')

        def matching():
            return [msg for msg in self.detections if msg.header.stamp == cloud_header.stamp]

        for _ in range(attempts):  # best effort input: a message may be lost
            self.cloud_pub.publish(array_to_pointcloud2(frame.points, cloud_header))
            self.image_pub.publish(rgb_to_image(frame.image, image_header))
            if self.spin_until(lambda: matching() or node_process.poll() is not None, 20.0):
                break
        return (matching() or [None])[0]

    def close(self):
        """Destroy the node and shut its context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture(scope='module')
def peer(installed_node):
    peer = SensorPeer()
    connected = peer.spin_until(
        lambda: peer.cloud_pub.get_subscription_count() > 0
        and peer.image_pub.get_subscription_count() > 0
        and peer.subscription.get_publisher_count() > 0
        or installed_node.poll() is not None, timeout_s=60.0)
    if not connected or installed_node.poll() is not None:
        pytest.fail('the installed node did not connect within 60 s; its log:\n'
                    + installed_node.log_path.read_text()[-3000:])
    yield peer
    peer.close()


def test_installed_node_detects_over_dds(workspace, scene, installed_node, peer):
    frames, _ = scene
    weights = workspace.site_packages / PACKAGE / 'weights' / 'default.safetensors'
    classes = ModelConfig.from_dict(read_metadata(str(weights))['config']).detection_classes
    arrays = [peer.detections_for(frame, installed_node) for frame in frames]
    log = installed_node.log_path.read_text()
    assert None not in arrays, 'no detections came back; node log:\n' + log[-3000:]
    assert sum(len(array.detections) for array in arrays) > 0, 'the shipped weights found nothing'
    for array in arrays:
        assert array.header.frame_id == 'a2d2_cam_front_center_view'
        for detection in array.detections:
            hypothesis = detection.results[0].hypothesis
            assert hypothesis.class_id in classes and 0.0 < hypothesis.score <= 1.0
    assert f'weights {weights} (' in log, log[-3000:]  # the installed copy, found by the node


# ------------------------------------------------------------------------------ installed tools

@pytest.mark.parametrize('name, options', [('bev_perception_eval', ('--live', '--params-file')),
                                           ('bev_perception_bench', ('--out',))])
def test_installed_tool_prints_its_help(workspace, installed_env, name, options):
    result = run_installed(workspace, installed_env, [str(workspace.lib / name), '--help'])
    assert result.returncode == 0, f'{name} --help failed:\n{result.stderr[-3000:]}'
    assert result.stdout.startswith(f'usage: {name} '), result.stdout
    for option in options:
        assert option in result.stdout, option


def test_installed_evaluator_runs_on_a_bag(workspace, installed_env, scene):
    _, bag = scene
    out = workspace.base / 'eval'
    result = run_installed(workspace, installed_env, [
        str(workspace.lib / 'bev_perception_eval'), bag, '--device', 'cpu', '--params-file',
        str(workspace.share / 'config' / 'perception.yaml'), '--out', str(out),
        '--no-progress'], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'report: ' in result.stdout
    report = json.loads((out / 'report.json').read_text())
    assert report['frames']['frames'] == FRAMES
    assert report['weights'] == str(workspace.site_packages / PACKAGE / 'weights'
                                    / 'default.safetensors')
    assert (out / 'report.md').stat().st_size > 0
