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
