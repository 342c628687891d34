"""Evaluation report: JSON, Markdown and PNG plots (matplotlib, Agg backend).

``write_report(out_dir, report, plots)`` writes

* ``report.json``: the ``report`` dict as given (plain JSON types, NaN written as null),
* ``report.md``: a readable summary of the same numbers, linking the plots,
* ``pr_curves.png``: precision-recall curves per class at every distance threshold,
* ``semantic_iou.png``: IoU per semantic class,
* ``latency_hist.png``: histograms of the latency samples (end-to-end, per-frame inference),
* ``bev_strip.png``: a strip of frames: bird's-eye view of the points with ground truth and
  predicted boxes, and the camera image with the predicted semantic classes over it.

Plots with nothing to show are left out. The demo draws its pictures with the same functions
(``plot_bev``, ``plot_camera_semantics``), and ``percentiles`` is the one summary of timing
samples of the evaluation, the demo and the benchmark. No ROS imports: only numpy and
matplotlib.
"""

from dataclasses import dataclass, field
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bev_perception.geometry import box_outline_xy
from bev_perception.metrics import DetectionMetrics, SemanticMetrics
import numpy as np

_GT_COLOUR = '#1b9e77'
_PRED_COLOUR = '#d95f02'


def percentiles(values: Sequence[float], digits: Optional[int] = None
                ) -> Dict[str, Optional[float]]:
    """Return count, mean, p50, p95, p99 and max of samples (None values when there are none).

    The one summary of timing samples of the evaluation report, the demo and the benchmark.
    Non-finite and None samples are left out; ``digits`` rounds the values.
    """
    samples = np.asarray([v for v in values if v is not None and math.isfinite(v)],
                         dtype=np.float64)
    if samples.size == 0:
        return {'count': 0, 'mean': None, 'p50': None, 'p95': None, 'p99': None, 'max': None}
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    stats = {'mean': float(samples.mean()), 'p50': float(p50), 'p95': float(p95),
             'p99': float(p99), 'max': float(samples.max())}
    if digits is not None:
        stats = {key: round(value, digits) for key, value in stats.items()}
    return {'count': int(samples.size), **stats}


@dataclass(frozen=True)
class StripFrame:
    """One frame of the BEV strip (boxes (K, 7) in the model frame, metres / radians)."""

    stamp_ns: int
    points_xy: np.ndarray  # (N, 2) float32 x, y of (a subsample of) the cloud
    gt_boxes: np.ndarray  # (G, 7)
    pred_boxes: np.ndarray  # (P, 7)
    pred_labels: List[str]
    image: Optional[np.ndarray] = None  # (h, w, 3) uint8, downscaled camera image
    semantic: Optional[np.ndarray] = None  # (h, w) uint8 predicted ids at the image's size


@dataclass
class PlotData:
    """Inputs of the plots (any part may be empty)."""

    detection: Dict[str, DetectionMetrics] = field(default_factory=dict)  # run -> metrics
    semantic: Optional[SemanticMetrics] = None
    latency_ms: Dict[str, List[float]] = field(default_factory=dict)  # name -> samples
    strip: List[StripFrame] = field(default_factory=list)
    semantic_palette: Optional[np.ndarray] = None  # (C, 3) uint8
    x_range_m: Tuple[float, float] = (0.0, 69.12)
    y_range_m: Tuple[float, float] = (-39.68, 39.68)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    return value


def write_json(path: str, data: Mapping[str, Any]) -> None:
    """Write a dict as indented JSON (NaN and infinities as null, numpy values as numbers)."""
    with open(path, 'w', encoding='utf-8') as stream:
        json.dump(_json_safe(dict(data)), stream, indent=2)
        stream.write('\n')


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_pr_curves(runs: Mapping[str, DetectionMetrics], path: str) -> bool:
    """Plot precision over recall per class (one panel each), every threshold and run."""
    runs = {name: metrics for name, metrics in runs.items() if metrics is not None}
    if not runs:
        return False
    first = next(iter(runs.values()))
    classes = list(first.class_names)
    plt = _pyplot()
    columns = min(len(classes), 4)
    rows = math.ceil(len(classes) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows),
                                squeeze=False)
    styles = ['-', '--', ':', '-.']
    for index, name in enumerate(classes):
        axis = axes[index // columns][index % columns]
        for run_index, (run, metrics) in enumerate(runs.items()):
            for threshold in metrics.thresholds_m:
                curve = metrics.curves[name][threshold]
                ap = metrics.ap[name][threshold]
                label = f'{run} {threshold:g} m AP {ap:.2f}' if math.isfinite(ap) \
                    else f'{run} {threshold:g} m (no GT)'
                recall = np.concatenate([[0.0], curve.recall])
                precision = np.concatenate([[curve.precision[0] if len(curve.precision)
                                             else 0.0], curve.precision])
                axis.plot(recall, precision, styles[run_index % len(styles)], label=label)
        axis.set_title(f'{name} (GT {first.num_gt[name]})')
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.05)
        axis.set_xlabel('recall')
        axis.set_ylabel('precision')
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc='lower left')
    for index in range(len(classes), rows * columns):
        axes[index // columns][index % columns].axis('off')
    figure.suptitle('BEV detection precision-recall (centre-distance thresholds)')
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_semantic_iou(metrics: Optional[SemanticMetrics], path: str) -> bool:
    """Plot a horizontal bar of IoU per class present in ground truth or prediction."""
    if metrics is None or not np.isfinite(metrics.iou).any():
        return False
    plt = _pyplot()
    present = [i for i in range(len(metrics.iou)) if np.isfinite(metrics.iou[i])]
    names = [metrics.class_names[i] for i in present]
    values = [float(metrics.iou[i]) for i in present]
    figure, axis = plt.subplots(figsize=(7, 0.3 * len(present) + 1.4))
    axis.barh(range(len(present)), values, color='#7570b3')
    axis.set_yticks(range(len(present)))
    axis.set_yticklabels(names, fontsize=7)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel('IoU')
    axis.set_title(f'Semantic IoU per class (mIoU {metrics.miou:.3f})')
    axis.grid(axis='x', alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_latency_histogram(samples: Mapping[str, Sequence[float]], path: str) -> bool:
    """Plot one histogram per named latency series (ms) with its p50/p95/p99 marked."""
    series = {name: np.asarray(values, dtype=np.float64) for name, values in samples.items()
              if len(values)}
    if not series:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.4), squeeze=False)
    for axis, (name, values) in zip(axes[0], series.items()):
        axis.hist(values, bins=min(50, max(5, len(values) // 2)), color='#66a61e')
        for quantile, style in ((50, '-'), (95, '--'), (99, ':')):
            value = float(np.percentile(values, quantile))
            axis.axvline(value, color='k', linestyle=style, linewidth=1,
                         label=f'p{quantile} {value:.1f} ms')
        axis.set_title(f'{name} ({len(values)} frames)')
        axis.set_xlabel('ms')
        axis.set_ylabel('frames')
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def draw_bev(axis, frame: StripFrame, x_range_m: Tuple[float, float],
             y_range_m: Tuple[float, float], label_size: float = 5.0) -> None:
    """Draw one frame from above (x forward up, y left to the left) on a matplotlib axis.

    Points grey, ground truth boxes solid, predicted boxes dashed with their labels; the view
    covers the model's BEV grid.
    """
    points = np.asarray(frame.points_xy)
    if len(points):
        axis.scatter(-points[:, 1], points[:, 0], s=0.3, c='#555555', linewidths=0)
    for box in np.asarray(frame.gt_boxes).reshape(-1, 7):
        outline = box_outline_xy(box)
        axis.plot(-outline[:, 1], outline[:, 0], color=_GT_COLOUR, linewidth=1.2)
    for box, label in zip(np.asarray(frame.pred_boxes).reshape(-1, 7), frame.pred_labels):
        outline = box_outline_xy(box)
        axis.plot(-outline[:, 1], outline[:, 0], color=_PRED_COLOUR, linewidth=1.0,
                  linestyle='--')
        axis.text(-box[1], box[0] + 0.6 * box[3], label, fontsize=label_size,
                  color=_PRED_COLOUR)
    axis.set_xlim(-y_range_m[1], -y_range_m[0])
    axis.set_ylim(*x_range_m)
    axis.set_aspect('equal')


def semantic_overlay(image: np.ndarray, ids: np.ndarray, palette: np.ndarray,
                     alpha: float = 0.5) -> np.ndarray:
    """Return the (H, W, 3) uint8 image with the class colours of ``ids`` blended over it.

    Pixels of id 255 (ignore) keep the image's colour.
    """
    lookup = np.zeros((256, 3), dtype=np.uint8)
    lookup[:len(palette)] = palette
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * lookup[ids]  # (H, W, 3)
    return np.where((ids == 255)[..., None], image, blended).astype(np.uint8)


def plot_bev(frame: StripFrame, path: str, x_range_m: Tuple[float, float],
             y_range_m: Tuple[float, float], title: str) -> bool:
    """Plot one frame's bird's-eye view (``draw_bev``) large, with a legend."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 7.5))
    draw_bev(axis, frame, x_range_m, y_range_m, label_size=6.0)
    axis.plot([], [], color=_GT_COLOUR, label='ground truth')
    axis.plot([], [], color=_PRED_COLOUR, linestyle='--', label='prediction')
    axis.plot([0], [0], marker='^', color='black', markersize=8)
    axis.set_xlabel('-y (m, right)')
    axis.set_ylabel('x (m, forward)')
    axis.set_title(title, fontsize=9)
    axis.legend(loc='lower left', fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_camera_semantics(image: np.ndarray, predicted: Optional[np.ndarray],
                          truth: Optional[np.ndarray], palette: np.ndarray, path: str,
                          title: str) -> bool:
    """Plot the camera image above its predicted and true semantics (either may be None)."""
    plt = _pyplot()
    panels = [('camera', image)] + [
        (name, semantic_overlay(image, ids, palette, alpha=0.55))
        for name, ids in (('predicted semantics', predicted), ('ground truth semantics', truth))
        if ids is not None and ids.shape == image.shape[:2]]
    height, width = image.shape[:2]
    figure, axes = plt.subplots(len(panels), 1,
                                figsize=(8, 8 * height / width * len(panels) + 0.6))
    for axis, (name, shown) in zip(np.atleast_1d(axes), panels):
        axis.imshow(shown)
        axis.set_title(name, fontsize=9)
        axis.axis('off')
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_bev_strip(frames: Sequence[StripFrame], path: str,
                   x_range_m: Tuple[float, float], y_range_m: Tuple[float, float],
                   palette: Optional[np.ndarray] = None) -> bool:
    """Plot frames side by side: BEV (``draw_bev``) on top, camera + semantics below."""
    if not frames:
        return False
    plt = _pyplot()
    with_camera = any(frame.image is not None for frame in frames)
    rows = 2 if with_camera else 1
    figure, axes = plt.subplots(rows, len(frames), figsize=(3.6 * len(frames), 4.2 * rows),
                                squeeze=False)
    for column, frame in enumerate(frames):
        axis = axes[0][column]
        draw_bev(axis, frame, x_range_m, y_range_m)
        axis.set_title(f'stamp {frame.stamp_ns / 1e9:.3f} s', fontsize=8)
        axis.set_xlabel('-y (m, right)', fontsize=7)
        axis.set_ylabel('x (m, forward)', fontsize=7)
        axis.tick_params(labelsize=6)
        if rows == 2:
            camera_axis = axes[1][column]
            camera_axis.axis('off')
            if frame.image is not None:
                shown = frame.image
                if frame.semantic is not None and palette is not None:
                    shown = semantic_overlay(shown, frame.semantic, palette)
                camera_axis.imshow(shown)
                camera_axis.set_title('camera + predicted semantics', fontsize=8)
            else:
                camera_axis.set_title('LiDAR-only frame', fontsize=8)
    axes[0][0].plot([], [], color=_GT_COLOUR, label='ground truth')
    axes[0][0].plot([], [], color=_PRED_COLOUR, linestyle='--', label='prediction')
    axes[0][0].legend(fontsize=6, loc='upper right')
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        return 'n/a' if not math.isfinite(value) else f'{value:.{digits}f}'
    return str(value)


def markdown(report: Mapping[str, Any], images: Sequence[str] = ()) -> str:
    """Return the Markdown summary of a report dict (see evaluate_bag for its keys)."""
    lines = [f'# Bag evaluation ({report.get("mode", "?")})', '']
    facts = [('bag', report.get('bag')), ('weights', report.get('weights')),
             ('device', report.get('device')), ('elapsed', _fmt(report.get('elapsed_s'), 1)
                                                + ' s')]
    lines += [f'- {name}: `{value}`' for name, value in facts if value is not None]
    frames = report.get('frames', {})
    if frames:
        lines += ['', '## Frames', '', '| ' + ' | '.join(frames) + ' |',
                  '|' + ' --- |' * len(frames),
                  '| ' + ' | '.join(_fmt(v) for v in frames.values()) + ' |']
    detection = report.get('detection') or {}
    if detection:
        lines += ['', '## Detection (BEV centre distance)', '']
        runs = list(detection)
        thresholds = detection[runs[0]]['thresholds_m']
        lines += ['| run | ' + ' | '.join(f'mAP {t:g} m' for t in thresholds) + ' | mAP |',
                  '|' + ' --- |' * (len(thresholds) + 2)]
        for run in runs:
            values = detection[run]
            lines.append(f'| {run} | ' + ' | '.join(
                _fmt(values['map_by_threshold'][str(t)]) for t in thresholds)
                + f' | {_fmt(values["map"])} |')
        lines += ['', '| class | GT | ' + ' | '.join(
            f'{run} AP {t:g} m' for run in runs for t in thresholds) + ' |',
            '|' + ' --- |' * (2 + len(runs) * len(thresholds))]
        for name in detection[runs[0]]['ap']:
            lines.append(f'| {name} | {detection[runs[0]]["num_gt"][name]} | ' + ' | '.join(
                _fmt(detection[run]['ap'][name][str(t)]) for run in runs
                for t in thresholds) + ' |')
    semantic = report.get('semantic')
    if semantic:
        lines += ['', '## Semantic segmentation', '',
                  f'- mIoU: {_fmt(semantic.get("miou"))}, pixel accuracy: '
                  f'{_fmt(semantic.get("pixel_accuracy"))}, evaluated pixels: '
                  f'{semantic.get("num_evaluated_pixels")}']
    timing = report.get('timing_ms') or {}
    if timing:
        lines += ['', '## Timing (ms per frame)', '', '| stage | p50 | p95 | p99 | mean | max |',
                  '| --- | --- | --- | --- | --- | --- |']
        for stage, stats in timing.items():
            lines.append(f'| {stage} | ' + ' | '.join(
                _fmt(stats.get(key), 2) for key in ('p50', 'p95', 'p99', 'mean', 'max')) + ' |')
    live = report.get('live')
    if live:
        latency = live.get('end_to_end_latency_ms', {})
        lines += ['', '## Live replay', '',
                  f'- rate: {_fmt(live.get("rate"), 2)}, sim time: {live.get("use_sim_time")}',
                  f'- clouds published: {live.get("clouds_published")}, detections received: '
                  f'{live.get("detections_received")}, dropped frames: '
                  f'{live.get("dropped_frames")}',
                  f'- output rate: {_fmt(live.get("output_rate_hz"), 2)} Hz (input '
                  f'{_fmt(live.get("input_rate_hz"), 2)} Hz)',
                  f'- end-to-end latency (cloud published -> detections received): p50 '
                  f'{_fmt(latency.get("p50"), 1)} ms, p95 {_fmt(latency.get("p95"), 1)} ms, p99 '
                  f'{_fmt(latency.get("p99"), 1)} ms']
    notes = report.get('notes') or []
    if notes:
        lines += ['', '## Notes', ''] + [f'- {note}' for note in notes]
    if images:
        lines += ['', '## Plots', ''] + [f'![{os.path.splitext(name)[0]}]({name})'
                                         for name in images]
    return '\n'.join(lines) + '\n'


def write_report(out_dir: str, report: Mapping[str, Any],
                 plots: Optional[PlotData] = None) -> Dict[str, str]:
    """Write report.json, report.md and the PNG plots into ``out_dir``; return name -> path."""
    os.makedirs(out_dir, exist_ok=True)
    plots = plots or PlotData()
    written: Dict[str, str] = {}
    makers = (
        ('pr_curves.png', lambda path: plot_pr_curves(plots.detection, path)),
        ('semantic_iou.png', lambda path: plot_semantic_iou(plots.semantic, path)),
        ('latency_hist.png', lambda path: plot_latency_histogram(plots.latency_ms, path)),
        ('bev_strip.png', lambda path: plot_bev_strip(
            plots.strip, path, plots.x_range_m, plots.y_range_m, plots.semantic_palette)),
    )
    for name, make in makers:
        path = os.path.join(out_dir, name)
        if make(path):
            written[name] = path
    json_path = os.path.join(out_dir, 'report.json')
    write_json(json_path, report)
    written['report.json'] = json_path
    markdown_path = os.path.join(out_dir, 'report.md')
    with open(markdown_path, 'w', encoding='utf-8') as stream:
        stream.write(markdown(_json_safe(dict(report)),
                              [name for name in written if name.endswith('.png')]))
    written['report.md'] = markdown_path
    return written
