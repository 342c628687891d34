"""SIGINT and SIGTERM stop perception_node cleanly at every moment of its start-up.

The node (console script, shipped lite weights, CPU) gets a signal at moments recognised from
outside through /proc, so each lands where it is meant to:

* ``import``: as soon as the node's module has installed its handlers (SIGTERM is caught),
  before torch is loaded;
* ``torch``: while torch is being imported (its library is mapped);
* ``rclpy``: once rclpy's extension is loaded;
* ``weights``: once the node exists in DDS (its sockets are open): the weights are being loaded
  and the model warmed up;
* ``spinning``: after the ``ready`` line.

Each time the exit code must be 0, with no traceback, within seconds. (Before the interpreter
runs the node's first line, about 0.1 s after exec, a signal still has Python's default effect.)
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

SIGTERM_CAUGHT = 1 << (signal.SIGTERM - 1)  # bit of SIGTERM in /proc/<pid>/status SigCgt
POINTS = ('import', 'torch', 'rclpy', 'weights', 'spinning')

pytestmark = pytest.mark.skipif(not os.path.isdir('/proc/self/fd'),
                                reason='needs /proc (Linux) to see where the start-up is')


def _read(path):
    try:
        with open(path, errors='replace') as stream:
            return stream.read()
    except OSError:
        return ''


def _reached(point, pid, log_path):
    """Return True once the process with ``pid`` has reached ``point`` of its start-up."""
    if point == 'import':
        for line in _read(f'/proc/{pid}/status').splitlines():
            if line.startswith('SigCgt:'):
                return bool(int(line.split()[1], 16) & SIGTERM_CAUGHT)
        return False
    if point in ('torch', 'rclpy'):
        return ('libtorch_cpu' if point == 'torch' else '_rclpy_pybind11') in _read(
            f'/proc/{pid}/maps')
    if point == 'weights':
        try:
            links = [os.readlink(f'/proc/{pid}/fd/{fd}') for fd in os.listdir(f'/proc/{pid}/fd')]
        except OSError:
            return False
        return any(link.startswith('socket:') for link in links)
    return 'ready:' in _read(log_path)


def _start(ros_env, log_path):
    executable = shutil.which('perception_node', path=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get('PATH', '')]))
    assert executable, 'perception_node console script not installed (run make setup)'
    with open(log_path, 'w') as log:
        return subprocess.Popen(
            [executable, '--ros-args', '-p', 'profile:=lite', '-p', 'device:=cpu',
             '-p', 'cpu_threads:=1', '-r', '__node:=signal_test_node'],
            env=ros_env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize('point', POINTS)
def test_a_signal_stops_the_start_up_cleanly(point, ros_env, tmp_path):
    runs = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        log_path = tmp_path / f'{signum.name}.log'
        runs[signum] = (_start(ros_env, log_path), log_path)
    try:
        states = _signal_at(point, runs)
        for signum, (process, log_path) in runs.items():
            try:
                exit_code = process.wait(timeout=30.0)
            except subprocess.TimeoutExpired:
                pytest.fail(f'{signum.name} at {point!r}: the node did not stop within 30 s')
            output = _read(log_path)
            context = f'{signum.name} at {point!r} ({states[signum]}):\n{output[-3000:]}'
            assert exit_code == 0, context
            assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, context
            if point == 'import':
                assert not states[signum]['torch loaded'], context
            if point != 'spinning':
                assert not states[signum]['ready'] and 'ready:' not in output, context
    finally:
        for process, _ in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _signal_at(point, runs):
    """Send each run its signal once it reaches ``point``; return what was seen at that moment."""
    pending = dict(runs)
    deadline = time.monotonic() + 120.0
    states = {}
    while pending and time.monotonic() < deadline:
        for signum, (process, log_path) in list(pending.items()):
            if process.poll() is not None or _reached(point, process.pid, log_path):
                states[signum] = {'torch loaded': _reached('torch', process.pid, log_path),
                                  'ready': _reached('spinning', process.pid, log_path)}
                process.send_signal(signum)
                del pending[signum]
        time.sleep(0.002)
    assert not pending, f'the start-up never reached {point!r}'
    return states


def test_an_executor_whose_constructor_failed_cleans_up_quietly():
    from bev_perception import node

    executor = node._Executor.__new__(node._Executor)  # as left by an __init__ cut short
    assert executor._sigint_gc is None
    executor.__del__()  # rclpy's clean-up reads _sigint_gc: no AttributeError
