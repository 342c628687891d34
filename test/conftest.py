"""Shared pytest set-up: every ROS test stays on this machine, in a DDS domain of its own.

The variables are set at import time, before any test module imports rclpy, and are inherited
by every subprocess a test starts (nodes, peers). `BEV_TEST_ROS_DOMAIN_ID` overrides the domain.
The tests run DDS as the README tells users to: with the shipped Fast DDS profile (unless one
is already chosen). Without it a best-effort point cloud over the 0.5 MB default shared-memory
segment travels as UDP fragments, and with a 208 KiB default socket buffer (a common
``net.core.rmem_default``) whole clouds are lost, as the node tests showed.
"""

import os

from bev_perception.tools.replay import (FASTDDS_PROFILE_NAME, FASTDDS_PROFILE_VARIABLES,
                                         large_message_dds_env, local_dds_env)
import pytest

#: The checkout's Fast DDS profile: found from here, wherever pytest is started.
_CHECKOUT_PROFILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 'config', FASTDDS_PROFILE_NAME)


def _domain_id_for_this_run() -> int:
    """Return a DDS domain id unique enough per test run (1..100, valid with default ports)."""
    override = os.environ.get('BEV_TEST_ROS_DOMAIN_ID')
    return int(override) if override else 1 + os.getpid() % 100


def _large_message_env():
    """Return the profile variables; the checkout's profile when none is installed or chosen."""
    if any(os.environ.get(name) for name in FASTDDS_PROFILE_VARIABLES):
        return {}
    return large_message_dds_env() or {FASTDDS_PROFILE_VARIABLES[0]: _CHECKOUT_PROFILE}


LOCAL_DDS_ENV = dict(local_dds_env(_domain_id_for_this_run()), **_large_message_env())
os.environ.update(LOCAL_DDS_ENV)


@pytest.fixture(scope='session')
def ros_env():
    """Return the environment for ROS subprocesses: loopback-only DDS, this run's domain."""
    env = dict(os.environ)
    env.update(LOCAL_DDS_ENV)
    env['PYTHONUNBUFFERED'] = '1'
    env['PYTHONFAULTHANDLER'] = '1'  # a native crash prints its Python stack into the output
    return env


@pytest.fixture
def rclpy_context():
    """Yield an initialised rclpy context of its own; shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()
