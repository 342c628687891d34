"""``key.path=value`` overrides of nested YAML settings, for the command lines.

Shared by the training config (``training.train --override``) and the synthetic world's knobs
(``training.synthetic --world``); the typed dataclasses are built from the result by
``bev_perception.typed_config.build_dataclass``. No torch, so the scene generator's workers
stay light.
"""

from typing import Any, Dict

import yaml


def apply_override(raw: Dict[str, Any], assignment: str, option: str = '--override') -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in the nested dict ``raw``, in place.

    ``option`` names the command-line option in the errors. A missing ``=``, an empty key,
    a value that is not YAML or a key path through a value that is not a mapping raise
    ``ValueError``; ``raw`` is changed only when the assignment is valid.
    """
    if '=' not in assignment:
        raise ValueError(f'{option} {assignment!r}: expected key.path=value')
    path, text = assignment.split('=', 1)
    keys = [key.strip() for key in path.split('.')]
    if not all(keys):
        raise ValueError(f'{option} {assignment!r}: empty key in {path.strip()!r}')
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, 'problem', None) or type(error).__name__
        raise ValueError(f'{option} {assignment!r}: the value is not valid YAML '
                         f'({problem})') from None
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f'{option} {assignment!r}: {key!r} is not a mapping')
    node[keys[-1]] = value
