"""Tests of training.make_weights: the synthetic roots it generates and reuses."""

import dataclasses
import filecmp
import json
import os

import pytest
from training import make_weights, synthetic

SEED = 23
FRAMES = 1


def _recipe(workers: int = 1) -> make_weights.Recipe:
    return dataclasses.replace(make_weights.Recipe(), image_size=(64, 40),
                               generator_workers=workers)


def _files(root) -> list:
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def _same_tree(first, second) -> None:
    files = _files(first)
    assert files == _files(second)
    match, mismatch, errors = filecmp.cmpfiles(first, second, files, shallow=False)
    assert mismatch == [] and errors == []


def test_a_root_grows_and_shrinks_to_the_files_a_fresh_run_writes(tmp_path, capsys):
    grown, fresh, small = (str(tmp_path / name) for name in ('grown', 'fresh', 'small'))
    make_weights._generate(grown, 2, FRAMES, SEED, _recipe())
    first_scene = os.path.join(grown, synthetic.scene_name(SEED, 0))
    before = os.path.getmtime(first_scene)
    capsys.readouterr()
    description = make_weights._generate(grown, 3, FRAMES, SEED, _recipe())
    assert 'scenes 2..2; the first 2 were there' in capsys.readouterr().out
    assert os.path.getmtime(first_scene) == before  # kept, not written again
    make_weights._generate(fresh, 3, FRAMES, SEED, _recipe(workers=2))
    _same_tree(grown, fresh)
    with open(os.path.join(grown, 'generated.json'), encoding='utf-8') as stream:
        assert json.load(stream) == description and description['scenes'] == 3

    make_weights._generate(grown, 2, FRAMES, SEED, _recipe())  # back to two scenes
    assert 'trimmed' in capsys.readouterr().out
    make_weights._generate(small, 2, FRAMES, SEED, _recipe())
    _same_tree(grown, small)


def test_another_seed_or_frame_count_generates_the_root_again(tmp_path):
    root = str(tmp_path / 'root')
    make_weights._generate(root, 2, FRAMES, SEED, _recipe())
    make_weights._generate(root, 3, FRAMES, SEED + 1, _recipe())
    names = {synthetic.scene_name(SEED + 1, index) for index in range(3)}
    assert {name for name in os.listdir(root) if name[0].isdigit()} == names


def test_first_scene_must_leave_something_to_generate(tmp_path):
    with pytest.raises(ValueError, match='first_scene'):
        synthetic.generate(str(tmp_path), 2, 1, SEED, image_size=(64, 40), first_scene=2)


def test_a_corrupt_stamp_means_the_root_is_generated_again(tmp_path, capsys):
    root, fresh = str(tmp_path / 'root'), str(tmp_path / 'fresh')
    make_weights._generate(root, 2, FRAMES, SEED, _recipe())
    stamp = os.path.join(root, 'generated.json')
    with open(stamp, 'w', encoding='utf-8') as stream:
        stream.write('{"generator": "training.synth')  # an interrupted write
    lidar = os.path.join(root, synthetic.scene_name(SEED, 1), 'lidar', 'cam_front_center')
    os.remove(os.path.join(lidar, os.listdir(lidar)[0]))  # a root the stamp vouches for no more
    capsys.readouterr()
    description = make_weights._generate(root, 2, FRAMES, SEED, _recipe())
    assert 'generated.json: unreadable' in capsys.readouterr().out
    make_weights._generate(fresh, 2, FRAMES, SEED, _recipe())
    _same_tree(root, fresh)
    with open(stamp, encoding='utf-8') as stream:
        assert json.load(stream) == description
