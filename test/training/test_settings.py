"""settings: ``key.path=value`` overrides of nested YAML settings."""

import pytest
from training.settings import apply_override


def test_sets_nested_keys_creating_the_mappings_on_the_way():
    raw = {'optim': {'lr': 0.1, 'epochs': 2}}
    apply_override(raw, 'optim.lr=0.002')
    apply_override(raw, 'model.overrides.head.semantic_levels=[c2, c3]')
    apply_override(raw, ' augment . zoom_range =[1.0, 1.6]')
    assert raw == {'optim': {'lr': 0.002, 'epochs': 2},
                   'model': {'overrides': {'head': {'semantic_levels': ['c2', 'c3']}}},
                   'augment': {'zoom_range': [1.0, 1.6]}}


@pytest.mark.parametrize('text, value', [
    ('true', True), ('null', None), ('3', 3), ('3.0', 3.0), ('fast', 'fast'),
    ('{a: 1}', {'a': 1}), ('a=b', 'a=b')])
def test_the_value_is_read_as_yaml(text, value):
    raw = {}
    apply_override(raw, f'key={text}')
    assert raw == {'key': value}


@pytest.mark.parametrize('assignment, message', [
    ('optim.lr', r"--world 'optim.lr': expected key.path=value"),
    ('optim..lr=1', r"--world 'optim..lr=1': empty key in 'optim..lr'"),
    ('=1', r"--world '=1': empty key"),
    ('optim.lr=[1,', r"--world 'optim.lr=\[1,': the value is not valid YAML"),
    ('optim.lr.step=1', r"--world 'optim.lr.step=1': 'lr' is not a mapping"),
])
def test_bad_assignments_raise_naming_the_option_and_change_nothing(assignment, message):
    raw = {'optim': {'lr': 0.1}}
    with pytest.raises(ValueError, match=message):
        apply_override(raw, assignment, option='--world')
    assert raw == {'optim': {'lr': 0.1}}
