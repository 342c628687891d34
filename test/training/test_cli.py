"""Tests of training/cli.py."""

import errno
import os

import pytest
from training.cli import output_error


def test_output_error_names_the_option_the_failing_path_and_the_reason(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    out = str(blocker / 'weights.safetensors')
    with pytest.raises(OSError) as raised:
        os.makedirs(out)
    message = str(output_error('training.export', out, raised.value).code)
    assert message == f'training.export: --out {out}: {out}: Not a directory'
    assert '\n' not in message


def test_output_error_without_a_file_name_still_says_why():
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    message = str(output_error('training.evaluate', 'out/eval', error).code)
    assert message == f'training.evaluate: --out out/eval: {os.strerror(errno.ENOSPC)}'
