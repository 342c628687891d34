"""typed_config: dataclasses to plain values and back, with errors that name the key."""

import dataclasses
import json
from typing import Any, Dict, Optional, Tuple, Union

from bev_perception.typed_config import build_dataclass, to_plain
import pytest


@dataclasses.dataclass(frozen=True)
class Inner:
    size: Tuple[int, int] = (2, 3)
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = 'x'
    enabled: bool = False
    count: int = 1
    inner: Inner = dataclasses.field(default_factory=Inner)
    levels: Tuple[str, ...] = ('a', 'b')
    limit: Optional[float] = None
    table: Dict[str, Tuple[float, float]] = dataclasses.field(default_factory=dict)
    choice: Union[int, Tuple[int, ...]] = 0
    extra: Any = None


def test_round_trip_through_json_restores_tuples_and_nested_dataclasses():
    config = Outer(name='y', enabled=True, count=4, inner=Inner((5, 6), 0.5),
                   levels=('c',), limit=2.5, table={'k': (1.0, 2.0)}, choice=(1, 2),
                   extra={'free': [1]})
    plain = to_plain(config)
    assert plain['inner'] == {'size': [5, 6], 'scale': 0.5}
    assert plain['table'] == {'k': [1.0, 2.0]}
    restored = build_dataclass(Outer, json.loads(json.dumps(plain)), 'outer')
    assert restored == config
    assert isinstance(restored.inner.size, tuple)
    assert isinstance(restored.table['k'], tuple)


def test_missing_keys_and_none_take_the_defaults():
    assert build_dataclass(Outer, {}, 'outer') == Outer()
    assert build_dataclass(Outer, None, 'outer') == Outer()
    assert build_dataclass(Outer, {'inner': None}, 'outer') == Outer()
    assert build_dataclass(Outer, {'limit': None}, 'outer').limit is None


def test_ints_become_floats_where_a_float_is_declared():
    built = build_dataclass(Outer, {'limit': 3, 'inner': {'scale': 2}}, 'outer')
    assert built.limit == 3.0 and isinstance(built.limit, float)
    assert isinstance(built.inner.scale, float)


@pytest.mark.parametrize('data, message', [
    ({'colour': 1}, r"outer: unknown keys \['colour'\]"),
    ({'inner': {'sise': [1, 2]}}, r"outer.inner: unknown keys \['sise'\]"),
    ({'inner': []}, 'outer.inner: expected a mapping, got list'),
    ({'enabled': 1}, 'outer.enabled: expected true or false, got 1'),
    ({'count': True}, 'outer.count: expected int, got True'),
    ({'count': 1.5}, 'outer.count: expected int, got 1.5'),
    ({'name': 3}, 'outer.name: expected str, got 3'),
    ({'inner': {'scale': 'big'}}, "outer.inner.scale: expected a number, got 'big'"),
    ({'inner': {'scale': False}}, 'outer.inner.scale: expected a number, got False'),
    ({'inner': {'size': [1]}}, 'outer.inner.size: expected 2 values, got 1'),
    ({'levels': 'a'}, "outer.levels: expected a list, got 'a'"),
    ({'table': {'k': [1.0]}}, 'outer.table.k: expected 2 values, got 1'),
    ({'choice': 'one'}, 'expected int.*expected a list'),
])
def test_wrong_values_raise_naming_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        build_dataclass(Outer, data, 'outer')


def test_a_type_it_cannot_check_is_an_error_not_a_silent_pass():
    @dataclasses.dataclass
    class Odd:
        value: complex = 0j

    with pytest.raises(ValueError, match='odd.value: unsupported type'):
        build_dataclass(Odd, {'value': 1}, 'odd')
