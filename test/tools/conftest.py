"""Tests of bev_perception.tools: the shared helpers of test/ (ros_testing, ...) importable."""

import os
import sys

_TEST_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TEST_ROOT not in sys.path:
    sys.path.insert(0, _TEST_ROOT)
