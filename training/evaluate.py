"""Evaluate weights or a checkpoint on A2D2-format data: BEV AP / mAP, semantic IoU, plots.

Usage::

    python -m training.evaluate --weights bev_perception/weights/default.safetensors
        --data data/synthetic/heldout [--scenes S1 S2] [--out out/eval]
    python -m training.evaluate --checkpoint out/train/checkpoints/last.pt --data ROOT

Every frame runs twice through the inference runtime (``bev_perception.inference``, the code
the node runs): fused (with the camera image) and LiDAR-only (no image). Detection metrics
come from ``bev_perception.metrics`` (BEV centre-distance AP per class at 0.5/1/2/4 m, mAP;
see there for the matching and AP definition), semantic IoU per class and mIoU from the
fused run, compared with the label at its native resolution (the runtime upsamples the
prediction by nearest neighbour, like the node does). ``miou`` follows the metrics library
(classes in ground truth or prediction); ``miou_gt_present`` averages only the categories that
occur in the ground truth. Ground-truth boxes whose centre lies outside the model's BEV grid
(``config.grid`` x and y range) cannot be detected and are not evaluated (like the range filter
of KITTI and nuScenes). Writes ``metrics.json``, ``pr_curves.png`` and ``semantic_iou.png``.
"""

import argparse
import dataclasses
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence

from bev_perception.a2d2_classes import IGNORE_INDEX
from bev_perception.inference import InferenceRuntime
from bev_perception.metrics import (
    DEFAULT_DISTANCE_THRESHOLDS_M, DetectionAccumulator, DetectionMetrics, SemanticAccumulator,
    SemanticMetrics)
from bev_perception.model.config import ModelConfig
from bev_perception.weights import load_weights
import numpy as np
import torch
import tqdm
from training.a2d2 import A2D2Dataset, collate_frames, DEFAULT_CLASS_MAP
from training.train import load_checkpoint, model_from_checkpoint

LOGGER = logging.getLogger(__name__)

#: Score threshold while evaluating: low, so the precision-recall curves are complete.
EVAL_SCORE_THRESHOLD = 0.05

#: The distance threshold of the headline mAP (metres).
HEADLINE_THRESHOLD_M = 2.0


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one evaluation run.

    Attributes:
        fused: detection metrics with the camera image.
        lidar_only: detection metrics without the image.
        semantic: semantic metrics of the fused run.
        miou_gt_present: mean IoU over the categories present in the ground truth.
        num_frames: frames evaluated.
        skipped: (path, reason) of frames the reader skipped.
    """

    fused: DetectionMetrics
    lidar_only: DetectionMetrics
    semantic: SemanticMetrics
    miou_gt_present: float
    num_frames: int
    skipped: List[Any]

    def summary(self) -> Dict[str, Optional[float]]:
        """Return the headline numbers (NaN as None)."""
        def plain(value: float) -> Optional[float]:
            return None if value is None or math.isnan(value) else round(float(value), 4)
        threshold = HEADLINE_THRESHOLD_M
        return {
            'map_2m_fused': plain(self.fused.map_by_threshold.get(threshold, float('nan'))),
            'map_2m_lidar_only': plain(
                self.lidar_only.map_by_threshold.get(threshold, float('nan'))),
            'map_fused': plain(self.fused.map),
            'map_lidar_only': plain(self.lidar_only.map),
            'miou': plain(self.semantic.miou),
            'miou_gt_present': plain(self.miou_gt_present),
            'pixel_accuracy': plain(self.semantic.pixel_accuracy),
        }

    def to_dict(self) -> Dict[str, Any]:
        """Return everything as plain JSON types (no PR curves)."""
        return {
            'summary': self.summary(),
            'num_frames': self.num_frames,
            'detection': {'fused': self.fused.to_dict(),
                          'lidar_only': self.lidar_only.to_dict()},
            'semantic': self.semantic.to_dict(),
            'skipped_files': [list(item) for item in self.skipped],
        }


def gt_present_miou(metrics: SemanticMetrics) -> float:
    """Return the mean IoU over the categories with ground-truth pixels (NaN if none)."""
    present = metrics.confusion.sum(axis=1) > 0
    values = metrics.iou[present]
    return float(np.mean(values)) if values.size else float('nan')


def in_grid(boxes: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Return (K,) bool: box centres (x, y) inside the BEV grid of ``config``."""
    return config.grid.contains_xy(np.asarray(boxes).reshape(-1, 7))


def evaluate(runtime: InferenceRuntime, dataset: A2D2Dataset, batch_size: int = 4,
             score_threshold: float = EVAL_SCORE_THRESHOLD, workers: int = 0,
             thresholds_m: Sequence[float] = DEFAULT_DISTANCE_THRESHOLDS_M,
             show_progress: bool = True) -> EvaluationResult:
    """Run every frame fused and LiDAR-only and accumulate the metrics.

    Args:
        runtime: the inference runtime (its config's classes must equal the dataset's).
        dataset: frames with images and semantic labels.
        batch_size: frames per runtime batch.
        score_threshold: detections below it are not evaluated.
        workers: DataLoader processes reading frames.
        thresholds_m: centre-distance thresholds of the AP, metres.
        show_progress: show a tqdm bar.
    """
    config = runtime.config
    if tuple(dataset.classes) != tuple(config.detection_classes):
        raise ValueError(f'dataset classes {dataset.classes} differ from the model classes '
                         f'{config.detection_classes}')
    fused = DetectionAccumulator(config.detection_classes, thresholds_m)
    lidar_only = DetectionAccumulator(config.detection_classes, thresholds_m)
    semantic = SemanticAccumulator(config.num_semantic_classes, IGNORE_INDEX,
                                   config.semantic_classes)
    loader = torch.utils.data.DataLoader(
        dataset.skipping(), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=collate_frames)
    num_frames = 0
    for frames in tqdm.tqdm(loader, desc='evaluating', unit='batch', disable=not show_progress):
        if not frames:
            continue
        with_image = runtime.run_batch([(f.points, f.image) for f in frames], score_threshold)
        without_image = runtime.run_batch([(f.points, None) for f in frames], score_threshold)
        for frame, result, lidar_result in zip(frames, with_image, without_image):
            keep = in_grid(frame.boxes, config)
            gt_boxes, gt_labels = frame.boxes[keep], frame.labels[keep]
            fused.add(result.boxes, result.scores, result.class_ids, gt_boxes, gt_labels)
            lidar_only.add(lidar_result.boxes, lidar_result.scores, lidar_result.class_ids,
                           gt_boxes, gt_labels)
            if frame.semantic is not None and result.semantic is not None:
                semantic.add(result.semantic, frame.semantic)
            num_frames += 1
    semantic_metrics = semantic.compute()
    return EvaluationResult(
        fused=fused.compute(), lidar_only=lidar_only.compute(), semantic=semantic_metrics,
        miou_gt_present=gt_present_miou(semantic_metrics), num_frames=num_frames,
        skipped=dataset.skipped)


def plot_results(result: EvaluationResult, out_dir: str) -> List[str]:
    """Write PR curves and per-class IoU bars as PNG files; return their paths."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    classes = result.fused.class_names
    thresholds = result.fused.thresholds_m
    figure, axes = pyplot.subplots(1, len(classes), figsize=(4.2 * len(classes), 4.0),
                                   squeeze=False)
    colours = pyplot.get_cmap('viridis')(np.linspace(0.0, 0.85, len(thresholds)))
    for axis, name in zip(axes[0], classes):
        for colour, threshold in zip(colours, thresholds):
            for metrics, style, label in ((result.fused, '-', 'fused'),
                                          (result.lidar_only, '--', 'LiDAR-only')):
                curve = metrics.curves[name][threshold]
                ap = metrics.ap[name][threshold]
                if curve.recall.size:
                    axis.plot(curve.recall, curve.precision, style, color=colour,
                              label=f'{label} {threshold:g} m AP {ap:.2f}')
        axis.set_title(f'{name} ({result.fused.num_gt[name]} GT)')
        axis.set_xlabel('recall')
        axis.set_ylabel('precision')
        axis.set_xlim(0.0, 1.0)
        axis.set_ylim(0.0, 1.02)
        axis.grid(alpha=0.3)
        if axis.get_lines():
            axis.legend(fontsize=6, loc='lower left')
    figure.tight_layout()
    paths.append(os.path.join(out_dir, 'pr_curves.png'))
    figure.savefig(paths[-1], dpi=110)
    pyplot.close(figure)

    present = result.semantic.confusion.sum(axis=1) > 0
    names = [n for n, keep in zip(result.semantic.class_names, present) if keep]
    values = result.semantic.iou[present]
    figure, axis = pyplot.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.5))
    axis.bar(range(len(names)), np.nan_to_num(values), color='tab:blue')
    axis.axhline(result.miou_gt_present, color='tab:red', linestyle='--',
                 label=f'mIoU (GT categories) {result.miou_gt_present:.3f}')
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=60, ha='right', fontsize=8)
    axis.set_ylim(0.0, 1.0)
    axis.set_ylabel('IoU')
    axis.legend()
    figure.tight_layout()
    paths.append(os.path.join(out_dir, 'semantic_iou.png'))
    figure.savefig(paths[-1], dpi=110)
    pyplot.close(figure)
    return paths


def write_report(result: EvaluationResult, out_dir: str,
                 extra: Optional[Dict[str, Any]] = None) -> str:
    """Write metrics.json (plus ``extra`` keys) and the plots; return the JSON path."""
    os.makedirs(out_dir, exist_ok=True)
    document = result.to_dict()
    document.update(extra or {})
    path = os.path.join(out_dir, 'metrics.json')
    with open(path, 'w', encoding='utf-8') as stream:
        json.dump(document, stream, indent=2, sort_keys=True)
    plot_results(result, out_dir)
    return path


def load_runtime(weights: Optional[str], checkpoint: Optional[str], device: str
                 ) -> InferenceRuntime:
    """Build the runtime from a safetensors weights file or a training checkpoint."""
    if (weights is None) == (checkpoint is None):
        raise ValueError('give exactly one of weights and checkpoint')
    if weights is not None:
        model, config, metadata = load_weights(weights, device='cpu')
    else:
        state = load_checkpoint(checkpoint)
        model, config = model_from_checkpoint(state)
        metadata = {'train_config': state['train_config']}
    return InferenceRuntime(model, config, metadata, device=device)


def class_map_for(runtime: InferenceRuntime) -> Dict[str, Optional[str]]:
    """Return the A2D2 class map of the run that made the model (default grouping if none)."""
    train_config = runtime.metadata.get('train_config')
    if train_config is None:
        train_config = (runtime.metadata.get('provenance') or {}).get('train_config')
    mapping = ((train_config or {}).get('data') or {}).get('class_map')
    return dict(DEFAULT_CLASS_MAP if mapping is None else mapping)


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--weights', help='deployable .safetensors weights')
    source.add_argument('--checkpoint', help='training checkpoint (.pt)')
    parser.add_argument('--data', required=True, help='A2D2-format dataset root')
    parser.add_argument('--scenes', nargs='+', help='scene folders (default: all)')
    parser.add_argument('--out', default='out/eval', help='folder for metrics.json and plots')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default cpu)")
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--workers', type=int, default=0, help='frame-reading processes')
    parser.add_argument('--score-threshold', type=float, default=EVAL_SCORE_THRESHOLD)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    runtime = load_runtime(args.weights, args.checkpoint, args.device)
    config: ModelConfig = runtime.config
    dataset = A2D2Dataset(args.data, scenes=args.scenes, class_map=class_map_for(runtime),
                          classes=config.detection_classes)
    result = evaluate(runtime, dataset, batch_size=args.batch_size,
                      score_threshold=args.score_threshold, workers=args.workers)
    path = write_report(result, args.out, {'data': os.path.abspath(args.data),
                                           'weights': args.weights or args.checkpoint})
    print(json.dumps({'metrics': path, 'frames': result.num_frames, **result.summary()}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
