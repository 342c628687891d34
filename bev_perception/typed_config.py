"""Typed dataclass configs to and from plain nested values (JSON, YAML).

One converter for every config of the project: the model config inside a weights file
(``ModelConfig``), the training config and the synthetic world's settings (``training/``).
``to_plain`` turns a dataclass into dicts, lists and scalars; ``build_dataclass`` rebuilds it
from such values by the fields' type hints, so that tuples stay tuples, numbers are checked, and
an unknown key or a wrong type raises a ``ValueError`` naming where it is
(``config.optim.lr: expected a number, got 'fast'``). No torch and no ROS here.
"""

import dataclasses
import typing
from typing import Any, Union


def to_plain(value: Any) -> Any:
    """Return ``value`` with dataclasses as dicts and tuples as lists, recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def build_dataclass(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a dict, converting values by the field type hints.

    Missing keys take the field defaults (``None`` counts as an empty mapping); unknown keys
    and values of the wrong type raise ``ValueError`` with ``where`` and the key path.
    """
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
    """Convert a plain value to the type ``hint`` or raise ValueError naming ``where``."""
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
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f'{where}: expected true or false, got {value!r}')
        return value
    if hint is type(None):
        if value is not None:
            raise ValueError(f'{where}: expected null, got {value!r}')
        return None
    if hint in (int, str):
        if not isinstance(value, hint) or isinstance(value, bool):
            raise ValueError(f'{where}: expected {hint.__name__}, got {value!r}')
        return value
    raise ValueError(f'{where}: unsupported type {hint}')
