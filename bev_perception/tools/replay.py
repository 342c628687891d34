"""Replay a bag into ``perception_node`` over DDS and record what the node publishes.

The one implementation of "start the node, play a bag, record, drain, stop", used by the demo
(``bev_perception.tools.demo``), ``bev_perception_eval --live``, the benchmark's node replay and
the tests:

* ``local_dds_env`` and ``large_message_dds_env``: the environment of every process started
  here (DDS on this machine, in a domain of its own; the shipped Fast DDS profile for images).
* ``NodeProcess`` and ``stop_node``: ``perception_node`` as a child process with its output in
  a log file, stopped with SIGINT as ``ros2 launch`` does (then SIGTERM, then SIGKILL).
* ``RosSession``: this process's own rclpy context and node, spun by a thread.
* ``OutputRecorder``: subscribes to the node's outputs and writes them, raw, into an outputs bag
  as they arrive (so recording takes little CPU from the node); notes when each cloud's
  detections arrived and the node's latest diagnostics.
* ``play``: publishes a bag's messages with their recorded timing, ``/clock`` from ``SimClock``
  when the node runs on sim time; then ``drain`` and ``wait_for_diagnostics``.

No ROS import at module level: the environment helpers work without ROS.
"""

from dataclasses import dataclass, field
import importlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from bev_perception.bag_io import BagMessage, BagReader, BagWriter, cdr_header_stamp_ns
from bev_perception.topics import DIAGNOSTICS_TOPIC, NODE_NAME, OUTPUT_TOPICS, resolve
import yaml

#: DDS discovery on this machine only (Jazzy and later read the first variable, Humble the
#: second); add ROS_DOMAIN_ID (``local_dds_env``).
LOCAL_DDS = {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST', 'ROS_LOCALHOST_ONLY': '1'}
#: Fast DDS profile with a shared-memory segment that holds camera images (config/).
FASTDDS_PROFILE_NAME = 'fastdds_large_messages.xml'
#: Variables naming a Fast DDS XML profiles file: Fast DDS 3 (Jazzy and later), then 2.x
#: (Humble). Only the first is set here (Fast DDS 3 warns that the second is deprecated); one
#: set by the user, either, is left alone.
FASTDDS_PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
DIAGNOSTICS_TYPE = 'diagnostic_msgs/msg/DiagnosticArray'
#: Period of /clock while the player waits for the next message, seconds.
CLOCK_PERIOD_S = 0.01


class ReplayError(Exception):
    """The node cannot be started or used; the message says why (with the node's log)."""


# ------------------------------------------------------------------------------ environment

def default_domain_id() -> int:
    """Return a ROS_DOMAIN_ID for this process (1..100, valid with the default ports)."""
    return 1 + os.getpid() % 100


def local_dds_env(domain_id: int) -> Dict[str, str]:
    """Return the environment variables keeping DDS on this machine in ``domain_id``."""
    return dict(LOCAL_DDS, ROS_DOMAIN_ID=str(domain_id))


def config_file(name: str) -> Optional[str]:
    """Return a file of the package's ``config/``: the installed share directory's, else ./config.

    ``./config`` is the source checkout when a tool runs from the repository root (an editable
    install has no share directory).
    """
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(os.path.join(get_package_share_directory('bev_perception'), 'config',
                                       name))
    except (ImportError, LookupError, ValueError):
        pass
    candidates.append(os.path.abspath(os.path.join('config', name)))
    return next((path for path in candidates if os.path.isfile(path)), None)


def fastdds_profile_path() -> Optional[str]:
    """Return the shipped Fast DDS profile (see ``config_file``), None when not found."""
    return config_file(FASTDDS_PROFILE_NAME)


def large_message_dds_env() -> Dict[str, str]:
    """Return variables selecting the shipped Fast DDS profile, unless one is already chosen.

    Transports only (shared memory for images): discovery stays as ``local_dds_env`` sets it.
    """
    if any(os.environ.get(name) for name in FASTDDS_PROFILE_VARIABLES):
        return {}
    path = fastdds_profile_path()
    return {} if path is None else {FASTDDS_PROFILE_VARIABLES[0]: path}


# ------------------------------------------------------------------------------ the node

def node_executable() -> List[str]:
    """Return the command running perception_node.

    Its console script next to this Python (a virtual environment) or on PATH, else
    ``python -m bev_perception.node`` (a colcon install keeps scripts in lib/bev_perception).
    """
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get('PATH', '')])
    executable = shutil.which('perception_node', path=search)
    return [executable] if executable else [sys.executable, '-m', 'bev_perception.node']


def format_param(value: Any) -> str:
    """Return a parameter value as ``-p name:=VALUE`` wants it (YAML, strings quoted if needed)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(format_param(v) for v in value) + ']'
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        plain = value and value == value.strip() and isinstance(parsed, str)
        return value if plain else f"'{value}'"
    return repr(value)


def node_command(parameters: Mapping[str, Any], params_file: Optional[str] = None,
                 remaps: Optional[Mapping[str, str]] = None) -> List[str]:
    """Return the command line of perception_node with remaps, a params file and ``-p`` values."""
    command = node_executable() + ['--ros-args']
    for source, target in (remaps or {}).items():
        command += ['-r', f'{source}:={target}']
    if params_file:
        command += ['--params-file', params_file]
    for name, value in parameters.items():
        command += ['-p', f'{name}:={format_param(value)}']
    return command


def stop_node(process: subprocess.Popen, timeout_s: float = 30.0) -> Optional[int]:
    """Stop the node with SIGINT as ros2 launch does (then SIGTERM, SIGKILL); return its code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return process.returncode


class NodeProcess:
    """perception_node as a child process whose output goes to a log file."""

    def __init__(self, command: List[str], log_path: str,
                 env: Optional[Mapping[str, str]] = None) -> None:
        self.command = command
        self.log_path = log_path
        self._log = open(log_path, 'w', encoding='utf-8')
        try:
            self.process = subprocess.Popen(
                command, stdout=self._log, stderr=subprocess.STDOUT,
                env=dict(os.environ if env is None else env, PYTHONUNBUFFERED='1'))
        except OSError as error:
            self._log.close()
            raise ReplayError(f'cannot start {command[0]}: {error}') from None

    def tail(self, lines: int = 15) -> str:
        """Return the last lines of the node's output."""
        self._log.flush()
        try:
            with open(self.log_path, 'r', encoding='utf-8', errors='replace') as stream:
                return ''.join(stream.readlines()[-lines:])
        except OSError:
            return ''

    def check_alive(self) -> None:
        """Raise ReplayError with the node's last output when it has exited."""
        code = self.process.poll()
        if code is not None:
            raise ReplayError(f'perception_node exited with code {code} (log {self.log_path}):\n'
                              + self.tail())

    def stop(self, timeout_s: float = 15.0) -> Optional[int]:
        """Stop the node (``stop_node``); return its exit code."""
        code = stop_node(self.process, timeout_s)
        self._log.close()
        return code


# ------------------------------------------------------------------------------ ROS side

class RosSession:
    """This process's own rclpy context with one node, spun by an executor thread."""

    def __init__(self, node_name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)  # the tool's own arguments are not ROS's
        self.node = rclpy.create_node(node_name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except (ExternalShutdownException, RuntimeError):
            pass  # shutting down

    def close(self) -> None:
        """Stop the executor and the context."""
        self.executor.shutdown()
        self.context.try_shutdown()
        self._thread.join(timeout=5.0)


def message_class(msgtype: str):
    """Return the rclpy message class of 'pkg/msg/Type', or None when it is not installed."""
    package, _, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{package}.msg'), name)
    except (ImportError, AttributeError):
        return None


def bag_publishers(ros_node, bag: BagReader, targets: Mapping[str, str],
                   log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Return publishers (bag topic -> publisher on its target topic), reliable as ros2 bag play.

    ``/tf_static`` is latched (transient local). A topic whose message type is not installed
    is left out, with a log line.
    """
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    publishers = {}
    for topic, target in targets.items():
        msgtype = bag.topics[topic]
        kind = message_class(msgtype)
        if kind is None:
            log(f'not replaying {topic}: {msgtype} is not installed')
            continue
        latched = topic == '/tf_static'
        publishers[topic] = ros_node.create_publisher(kind, target, QoSProfile(
            depth=1 if latched else 10, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE))
    return publishers


class SimClock:
    """``/clock`` in bag time: set at each message, advancing with wall time x rate in between."""

    def __init__(self, ros_node, rate: float) -> None:
        from rosgraph_msgs.msg import Clock

        self._publisher = ros_node.create_publisher(Clock, '/clock', 10)
        self._rate = rate
        self._base_ns = 0  # bag time set last
        self._base_wall = 0.0
        self._published_ns = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def _publish(self, now_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        now_ns = max(now_ns, self._published_ns)  # never backwards
        self._published_ns = now_ns
        sec, nanosec = divmod(now_ns, 10**9)
        self._publisher.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))

    def _tick(self) -> None:
        while not self._stop.wait(CLOCK_PERIOD_S):
            with self._lock:
                elapsed_s = time.monotonic() - self._base_wall
                self._publish(self._base_ns + int(elapsed_s * 1e9 * self._rate))

    def jump(self, now_ns: int) -> None:
        """Jump to bag time ``now_ns`` and publish it; the first call starts the ticking."""
        with self._lock:
            self._base_ns, self._base_wall = now_ns, time.monotonic()
            self._publish(now_ns)
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def stop(self) -> None:
        """Stop publishing."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)


class OutputRecorder:
    """The node's outputs, written raw (CDR) into an outputs bag as they arrive.

    Also notes when each cloud's detections first arrived (``received_s``, by cloud stamp,
    monotonic seconds) and keeps the node's latest ``/diagnostics`` status (``diagnostics``:
    its values plus ``level`` and ``message``). Callbacks run on the executor thread.
    """

    def __init__(self, ros_node, writer: BagWriter,
                 outputs: Sequence[str] = ('detections', 'semantic', 'timings'),
                 node_name: str = NODE_NAME, namespace: str = '/',
                 record_diagnostics: bool = False) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self.writer = writer
        self.node_name = node_name
        self.topics = {name: resolve(OUTPUT_TOPICS[name][1], node_name, namespace)
                       for name in outputs}
        self.received_s: Dict[int, float] = {}
        self.last_output_s = 0.0
        self.diagnostics: Dict[str, str] = {}
        self.diagnostics_received_s = 0.0
        self._record_diagnostics = record_diagnostics
        self._recording = True
        self._lock = threading.Lock()
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subscriptions = []
        for name, topic in self.topics.items():
            msgtype = OUTPUT_TOPICS[name][0]
            writer.add_topic(topic, msgtype, latched=name == 'label_info')
            self._subscriptions.append(ros_node.create_subscription(
                message_class(msgtype), topic, self._callback(name, topic),
                latched if name == 'label_info' else reliable, raw=True))
        if record_diagnostics:
            writer.add_topic(DIAGNOSTICS_TOPIC, DIAGNOSTICS_TYPE)
        self._subscriptions.append(ros_node.create_subscription(
            message_class(DIAGNOSTICS_TYPE), DIAGNOSTICS_TOPIC, self._on_diagnostics,
            reliable, raw=True))

    def stop_recording(self) -> None:
        """Ignore messages from now on (the outputs bag is about to be closed)."""
        with self._lock:
            self._recording = False

    def _write(self, topic: str, data: bytes) -> bool:
        with self._lock:
            if self._recording:
                self.writer.write_raw(topic, time.time_ns(), data)
            return self._recording

    def _callback(self, name: str, topic: str) -> Callable[[bytes], None]:
        def keep(data: bytes) -> None:
            received = time.monotonic()
            if not self._write(topic, data):
                return
            self.last_output_s = received
            if name == 'detections':
                self.received_s.setdefault(cdr_header_stamp_ns(data), received)
        return keep

    def _on_diagnostics(self, data: bytes) -> None:
        if self._record_diagnostics and not self._write(DIAGNOSTICS_TOPIC, data):
            return
        msg = self.writer.typestore.deserialize_cdr(data, DIAGNOSTICS_TYPE)
        for status in msg.status:
            if status.name.startswith(f'{self.node_name}:'):
                values = {item.key: item.value for item in status.values}
                level = status.level
                values['level'] = str(int.from_bytes(level, 'little')
                                      if isinstance(level, bytes) else level)
                values['message'] = status.message
                with self._lock:
                    self.diagnostics = values
                    self.diagnostics_received_s = time.monotonic()


# ------------------------------------------------------------------------------ replay

@dataclass
class Played:
    """What ``play`` published."""

    cloud_stamps: List[int] = field(default_factory=list)  # in publishing order
    publish_s: Dict[int, float] = field(default_factory=dict)  # cloud stamp -> monotonic s
    image_stamps: List[int] = field(default_factory=list)


def play(bag: BagReader, publishers: Mapping[str, Any], rate: float, cloud_topic: str,
         image_topic: Optional[str] = None, clock: Optional[SimClock] = None,
         also_read: Sequence[str] = (), on_message: Optional[Callable[[BagMessage], None]] = None,
         max_clouds: Optional[int] = None, process: Optional[NodeProcess] = None) -> Played:
    """Publish the bag's messages (raw) at ``rate`` x their recorded timing; return what went out.

    Args:
        bag: the bag.
        publishers: bag topic -> publisher (``bag_publishers``).
        rate: replay speed factor (> 0).
        cloud_topic, image_topic: the bag topics of the clouds and images (their stamps are
            noted).
        clock: publish /clock in bag time (the node runs with use_sim_time).
        also_read: further bag topics passed to ``on_message`` without being published.
        on_message: called after each message (raw CDR) is published.
        max_clouds: stop before the cloud after this many.
        process: the node, checked for life every 10 clouds.

    Raises:
        ReplayError: the node exited.
    """
    played = Played()
    first_log_ns = None
    start = time.monotonic()
    for item in bag.messages(list(publishers) + list(also_read), raw=True):
        if item.topic == cloud_topic and max_clouds is not None and (
                len(played.cloud_stamps) >= max_clouds):
            break
        if first_log_ns is None:
            first_log_ns = item.log_time_ns
        delay = start + (item.log_time_ns - first_log_ns) * 1e-9 / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if process is not None and item.topic == cloud_topic and (
                len(played.cloud_stamps) % 10 == 0):
            process.check_alive()
        if clock is not None:
            clock.jump(item.log_time_ns)
        if item.topic in publishers:
            publishers[item.topic].publish(item.message)
        if item.topic == cloud_topic:
            stamp = cdr_header_stamp_ns(item.message)
            played.publish_s.setdefault(stamp, time.monotonic())
            played.cloud_stamps.append(stamp)
        elif item.topic == image_topic:
            played.image_stamps.append(cdr_header_stamp_ns(item.message))
        if on_message is not None:
            on_message(item)
    return played


def wait_for_node(ros_node, input_publishers: Sequence[Any], output_topic: str,
                  process: Optional[NodeProcess], timeout_s: float) -> bool:
    """Wait until the node subscribes to every input publisher and advertises ``output_topic``.

    Returns False on timeout; raises ReplayError when the node exits.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None:
            process.check_alive()
        if (all(publisher.get_subscription_count() > 0 for publisher in input_publishers)
                and ros_node.count_publishers(output_topic) > 0):
            time.sleep(0.5)  # let discovery finish in both directions
            return True
        time.sleep(0.1)
    return False


def drain(recorder: OutputRecorder, cloud_stamps: Sequence[int], quiet_s: float,
          process: Optional[NodeProcess] = None) -> None:
    """Wait for the outputs of the last clouds: until all arrived, or none came for ``quiet_s``."""
    wanted = set(cloud_stamps)
    quiet_since = time.monotonic()
    while True:
        if wanted.issubset(recorder.received_s):
            time.sleep(0.3)  # semantic and timings follow the detections
            return
        if time.monotonic() - max(recorder.last_output_s, quiet_since) > quiet_s:
            return
        if process is not None and process.process.poll() is not None:
            return
        time.sleep(0.05)


def wait_for_diagnostics(recorder: OutputRecorder, timeout_s: float) -> bool:
    """Wait for a diagnostics status of the node sent after its last output; True if one came."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if recorder.diagnostics_received_s > recorder.last_output_s:
            return True
        time.sleep(0.05)
    return False
