"""The ament linters (flake8 at 99 columns, pep257, xmllint) pass over the project."""

import os

from ament_flake8.main import main_with_errors as flake8_main
from ament_pep257.main import main as pep257_main
from ament_xmllint.main import main as xmllint_main
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_PATHS = ['bev_perception', 'training', 'test', 'launch', 'setup.py']
XML_FILES = ['package.xml', os.path.join('interfaces', 'vision_msgs', 'package.xml')]


@pytest.fixture(autouse=True)
def _in_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _existing(paths):
    return [path for path in paths if os.path.exists(path)]


def test_flake8():
    rc, errors = flake8_main(argv=_existing(PYTHON_PATHS))
    assert rc == 0, 'flake8 found %d error(s):\n%s' % (len(errors), '\n'.join(errors))


# The ament convention plus Google-style docstrings (summary on the first line, `Args:` sections
# without underlines), as the project's style guide asks.
PEP257_EXTRA_IGNORES = ['D213', 'D406', 'D407', 'D413']


def test_pep257():
    argv = _existing(PYTHON_PATHS) + ['--add-ignore'] + PEP257_EXTRA_IGNORES
    assert pep257_main(argv=argv) == 0, 'pep257 found errors (see output)'


def test_xmllint():
    assert xmllint_main(argv=XML_FILES) == 0, 'xmllint found errors (see output)'
