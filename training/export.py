"""Export a training checkpoint to deployable safetensors weights with provenance and metrics.

Usage::

    python -m training.export --checkpoint out/train/checkpoints/last.pt
        --out bev_perception/weights/default.safetensors [--metrics out/eval/metrics.json]

The weights file (``bev_perception.weights.save_weights``) carries the model config and, in its
provenance, the training command, the training config, the seed, the git revision (when the
code is in a git checkout), a dataset description, the export date and the training time; the
evaluation numbers of ``training.evaluate`` go into its metrics. The export is read back and
compared tensor by tensor before the command returns.
"""

import argparse
import datetime
import json
import os
import sys
from typing import Any, Dict, List, Optional

from bev_perception.weights import load_weights, save_weights
import torch
from training.cli import output_error
from training.train import CheckpointError, git_revision, load_checkpoint, model_from_checkpoint


def portable_path(path: str) -> str:
    """Return path relative to the repository when inside it, so no machine path is recorded."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    absolute = os.path.abspath(path)
    inside = os.path.commonpath([repo, absolute]) == repo
    return os.path.relpath(absolute, repo) if inside else os.path.basename(absolute)


def describe_dataset(train_config: Dict[str, Any]) -> Dict[str, Any]:
    """Return the data section of a training config as a dataset description."""
    data = dict(train_config.get('data') or {})
    data.pop('cache_dir', None)
    return data


def compact_metrics(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Keep the numbers worth shipping from a ``training.evaluate`` metrics.json document."""
    keep = ('summary', 'num_frames', 'detection', 'data', 'held_out')
    result = {key: metrics[key] for key in keep if key in metrics}
    semantic = metrics.get('semantic')
    if semantic is not None:
        result['semantic'] = {
            'miou': semantic.get('miou'), 'pixel_accuracy': semantic.get('pixel_accuracy'),
            'iou': {name: value for name, value in (semantic.get('iou') or {}).items()
                    if value is not None}}
    return result


def export(checkpoint: str, out: str, metrics: Optional[Dict[str, Any]] = None,
           extra_provenance: Optional[Dict[str, Any]] = None,
           command: Optional[str] = None) -> Dict[str, Any]:
    """Write ``out`` from ``checkpoint``; return the provenance written.

    Args:
        checkpoint: training checkpoint (read with ``weights_only=True``).
        out: the .safetensors file to write.
        metrics: evaluation results (a metrics.json document) or None.
        extra_provenance: more facts to record (e.g. how the data was generated).
        command: the export command line.
    """
    state = load_checkpoint(checkpoint)
    model, config = model_from_checkpoint(state)
    train_config = state['train_config']
    provenance: Dict[str, Any] = {
        'command': state.get('command') or None,
        'export_command': command,
        'train_config': train_config,
        'seed': train_config.get('seed'),
        # The revision the training ran at (recorded when it started), else the current one.
        'git_revision': (state.get('git_revision')
                         or git_revision(os.path.dirname(os.path.abspath(__file__)))),
        'dataset': describe_dataset(train_config),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'training_time_s': round(float(state['train_seconds']), 1),
        'epochs': int(state['epoch']),
        'steps': int(state['step']),
        'world_size': int(state.get('world_size', 1)),
        'checkpoint': portable_path(checkpoint),
    }
    provenance.update(extra_provenance or {})
    save_weights(out, model, config, provenance,
                 None if metrics is None else compact_metrics(metrics))
    os.chmod(out, 0o644)  # safetensors writes 0600; the installed file must be world-readable
    loaded, loaded_config, _ = load_weights(out)
    if loaded_config != config:
        raise RuntimeError(f'{out}: the written config does not read back equal')
    expected = model.state_dict()
    for name, value in loaded.state_dict().items():
        if not torch.equal(value, expected[name]):
            raise RuntimeError(f'{out}: tensor {name} does not read back equal')
    return provenance


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', required=True, help='training checkpoint (.pt)')
    parser.add_argument('--out', required=True, help='weights file to write (.safetensors)')
    parser.add_argument('--metrics', help='metrics.json written by training.evaluate')
    parser.add_argument('--dataset', help='free-text dataset description for the provenance')
    args = parser.parse_args(argv)
    metrics = None
    if args.metrics:
        with open(args.metrics, encoding='utf-8') as stream:
            metrics = json.load(stream)
    extra = {'dataset_note': args.dataset} if args.dataset else None
    command = ' '.join(['python', '-m', 'training.export'] + list(
        argv if argv is not None else sys.argv[1:]))
    try:
        export(args.checkpoint, args.out, metrics, extra, command)
    except CheckpointError as error:
        raise SystemExit(f'training.export: {error}') from None
    except OSError as error:  # the weights file cannot be written
        raise output_error('training.export', args.out, error) from None
    print(f'wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
