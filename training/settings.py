"""Typed settings: dataclasses from nested YAML values, and ``key.path=value`` overrides.

Shared by the training config (``training.train``) and the synthetic world's knobs
(``training.synthetic --world``); no torch, so the scene generator's workers stay light.
"""

import dataclasses
import typing
from typing import Any, Dict, Union

import yaml


def apply_override(raw: Dict[str, Any], assignment: str, option: str = '--override') -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in the nested dict ``raw``, in place.

    ``option`` names the command-line option in the errors.
    """
    if '=' not in assignment:
        raise ValueError(f'{option} {assignment!r}: expected key.path=value')
    path, text = assignment.split('=', 1)
    keys = path.strip().split('.')
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f'{option} {assignment!r}: {key!r} is not a mapping')
    node[keys[-1]] = yaml.safe_load(text)


def build_dataclass(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a dict, converting values by the field type hints."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f'{where}: expected a mapping, got {type(data).__name__}')
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f'{where}: unknown keys {unknown} (known: {names})')
    return cls(**{name: _convert(hints[name], value, f'{where}.{name}')
                  for name, value in data.items()})


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the type ``hint`` or raise ValueError naming ``where``."""
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(' / '.join(errors))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f'{where}: expected a list, got {value!r}')
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ValueError(f'{where}: expected {len(args)} values, got {len(value)}')
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f'{where}: expected a mapping, got {value!r}')
        return {_convert(args[0], k, where): _convert(args[1], v, f'{where}.{k}')
                for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{where}: expected a number, got {value!r}')
        return float(value)
    if hint is type(None):
        if value is not None:
            raise ValueError(f'{where}: expected null, got {value!r}')
        return None
    if hint in (int, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ValueError(f'{where}: expected {hint.__name__}, got {value!r}')
        return value
    raise ValueError(f'{where}: unsupported type {hint}')
