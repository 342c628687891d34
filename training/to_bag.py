"""Convert one A2D2 scene (real or synthetic, same layout) into a rosbag2 bag.

    python -m training.to_bag --a2d2-root ROOT --scene S [--frames a:b] --out BAG
                              [--storage mcap|sqlite3] [--gt-classes training|a2d2]

Topics and frames are listed in ``bev_perception.bag_io`` (``DEFAULT_TOPICS``). Timing:

* Header stamps are the recorded TAI microseconds (no leap-second shift to UTC): the cloud is
  stamped with its sweep start (the earliest point timestamp, as ``training.a2d2`` does) and
  every point carries ``time`` = its timestamp minus that stamp (float32 seconds); the image,
  its camera_info and the semantic ground truth with ``cam_tstamp``; the detection ground
  truth with the cloud's stamp. LiDAR and camera stamps stay apart as recorded.
* Log (receive) times: a cloud at its sweep end (when a driver would publish it), the camera
  messages at ``cam_tstamp``, the detection ground truth with its cloud, ``/tf_static`` at the
  start of the bag. Messages are written in log-time order.

Ground truth class ids (``--gt-classes``): ``training`` (default) writes the training class
of each box through ``training.a2d2.DEFAULT_CLASS_MAP`` (boxes mapped to None, e.g. Animal,
are left out), so the evaluator compares them with the detector's classes directly; ``a2d2``
keeps every box with its A2D2 class name in lower case (e.g. ``vansuv``) and the evaluator then
needs a class map (``bev_perception_eval --class-map``).

``--frames a:b`` is a Python slice over the scene's frames sorted by id (``:20`` the first 20,
``-10:`` the last 10). Frames whose lidar file is missing or unreadable are skipped with a
warning naming the file; a frame without readable camera files keeps its cloud (a LiDAR-only
frame), one without a label3D file gets no detection ground truth.
"""

import argparse
from dataclasses import dataclass, field
import heapq
import json
import logging
import os
import re
import sys
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from bev_perception.bag_io import (BagError, BagWriter, CAMERA_INFO_TYPE, CAMERA_OPTICAL_FRAME,
                                   CAMERA_VIEW_FRAME, DEFAULT_TOPICS, DETECTIONS_TYPE,
                                   IMAGE_TYPE, POINTCLOUD_TYPE, STORAGE_PLUGINS, TF_TYPE,
                                   us_to_ns, VEHICLE_FRAME)
import numpy as np
from tqdm import tqdm
from training.a2d2 import (A2D2FormatError, CAMERA_FOLDER, CAMERA_TOKEN, DEFAULT_CLASS_MAP,
                           frame_path, list_scenes, read_boxes, read_camera_info, read_image,
                           read_lidar_arrays, SemanticDecoder)
from training.a2d2_calibration import view_to_vehicle, view_to_view

LOGGER = logging.getLogger(__name__)

#: Point fields written to the PointCloud2 (all float32, 20 bytes per point).
POINT_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4'),
                        ('time', '<f4')])

#: Rotation view frame (x forward, y left, z up) <- optical frame (x right, y down, z forward):
#: its columns are the optical axes written in the view frame.
VIEW_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

GT_CLASS_MODES = ('training', 'a2d2')


@dataclass
class ConversionReport:
    """What a conversion wrote."""

    bag: str
    scene: str
    frames: int = 0  # frames with a cloud written
    messages: Dict[str, int] = field(default_factory=dict)  # topic -> count
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (file, reason)
    dropped_boxes: Dict[str, int] = field(default_factory=dict)  # A2D2 class -> boxes left out
    seconds: float = 0.0


@dataclass(frozen=True)
class CameraInfoData:
    """Calibration of the front-center camera as CameraInfo needs it (pixels)."""

    width: int
    height: int
    camera_matrix: np.ndarray  # (3, 3) K of the distorted original image (CamMatrixOriginal)
    rectified_matrix: np.ndarray  # (3, 3) intrinsics of the undistorted image (CamMatrix)
    distortion: Tuple[float, ...]  # plumb_bob: k1, k2, p1, p2, k3; equidistant: k1..k4
    distortion_model: str


def parse_frame_range(text: Optional[str]) -> slice:
    """Return the slice of ``a:b`` (either side may be empty or negative); None is all."""
    if text is None or text.strip() in ('', ':'):
        return slice(None)
    match = re.fullmatch(r'\s*(-?\d*)\s*:\s*(-?\d*)\s*', text)
    if not match:
        raise ValueError(f'--frames must look like a:b (Python slice of the frames), '
                         f'got {text!r}')
    start, stop = (int(part) if part else None for part in match.groups())
    return slice(start, stop)


def _scale_intrinsics(matrix: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """Return intrinsics of the image resampled by (scale_x, scale_y), pixel centres at ints."""
    scaled = np.array(matrix, dtype=np.float64)
    scaled[0, 0] *= scale_x
    scaled[1, 1] *= scale_y
    scaled[0, 2] = (scaled[0, 2] + 0.5) * scale_x - 0.5
    scaled[1, 2] = (scaled[1, 2] + 0.5) * scale_y - 0.5
    return scaled


def camera_info_data(cams_lidars: Mapping, camera: str = 'front_center',
                     image_size: Optional[Tuple[int, int]] = None) -> CameraInfoData:
    """Return the CameraInfo facts of a ``cams_lidars.json`` camera.

    Args:
        cams_lidars: the parsed ``cams_lidars.json``.
        camera: camera name.
        image_size: (width, height) of the images actually written; the intrinsics are scaled
            from the file's ``Resolution`` when it differs.
    """
    entry = cams_lidars['cameras'][camera]
    resolution = tuple(int(v) for v in entry['Resolution'])
    width, height = image_size if image_size is not None else resolution
    scale_x, scale_y = width / resolution[0], height / resolution[1]
    distortion = tuple(float(v) for v in np.asarray(entry['Distortion'], dtype=np.float64)
                       .reshape(-1))
    model = 'equidistant' if str(entry.get('Lens', '')).lower() == 'fisheye' else 'plumb_bob'
    return CameraInfoData(
        width=int(width), height=int(height),
        camera_matrix=_scale_intrinsics(entry['CamMatrixOriginal'], scale_x, scale_y),
        rectified_matrix=_scale_intrinsics(entry['CamMatrix'], scale_x, scale_y),
        distortion=distortion, distortion_model=model)


def static_transforms(cams_lidars: Mapping, camera: str = 'front_center',
                      filming: Optional[Mapping] = None) -> List[Tuple[str, str, np.ndarray]]:
    """Return (parent, child, (4, 4) child -> parent) for vehicle -> view -> optical frames.

    ``filming`` is the ``cams_lidars.json`` of the camera that took the images where it is not
    the root's (a scene's own camera, ``training.a2d2.read_camera_geometry``): the view frame
    stays the root camera's (the points are in it) and the optical frame is that camera's.
    """
    view = cams_lidars['cameras'][camera]['view']
    view_to_vehicle_matrix = view_to_vehicle(view)
    optical_to_view = np.eye(4)
    optical_to_view[:3, :3] = VIEW_FROM_OPTICAL
    if filming is not None:
        optical_to_view = view_to_view(filming['cameras'][camera]['view'], view) @ optical_to_view
    return [(VEHICLE_FRAME, CAMERA_VIEW_FRAME, view_to_vehicle_matrix),
            (CAMERA_VIEW_FRAME, CAMERA_OPTICAL_FRAME, optical_to_view)]


def cloud_points(arrays: Mapping[str, np.ndarray], fallback_stamp_us: int
                 ) -> Tuple[np.ndarray, int, int]:
    """Return (points (N,) POINT_DTYPE, stamp_us = sweep start, sweep end us) of a lidar npz.

    Without a ``timestamp`` array the stamp is ``fallback_stamp_us`` and every time is 0.
    """
    points = np.zeros(len(arrays['points']), dtype=POINT_DTYPE)
    xyz = np.asarray(arrays['points'], dtype=np.float64)
    points['x'], points['y'], points['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    points['intensity'] = arrays['reflectance']
    stamps = arrays.get('timestamp')
    if stamps is None or len(stamps) == 0:
        return points, int(fallback_stamp_us), int(fallback_stamp_us)
    stamps = np.asarray(stamps, dtype=np.int64)
    start, end = int(stamps.min()), int(stamps.max())
    points['time'] = (stamps - start) * 1e-6
    return points, start, end


def scene_frame_ids(root: str, scene: str) -> List[str]:
    """Return the sorted 9-digit frame ids of a scene's lidar files."""
    folder = os.path.join(root, scene, 'lidar', CAMERA_FOLDER)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{folder}: no such folder (scene {scene} has no lidar files)')
    pattern = re.compile(re.escape(f'{scene.replace("_", "")}_lidar_{CAMERA_TOKEN}_')
                         + r'(\d{9})\.npz')
    return sorted(match.group(1) for match in map(pattern.fullmatch, os.listdir(folder))
                  if match)


class _OrderedWriter:
    """Write messages in log-time order: hold them until no earlier message can come."""

    def __init__(self, writer: BagWriter) -> None:
        self._writer = writer
        self._heap: List[Tuple[int, int, str, object]] = []
        self._sequence = 0

    def put(self, topic: str, log_time_ns: int, message) -> None:
        heapq.heappush(self._heap, (int(log_time_ns), self._sequence, topic, message))
        self._sequence += 1

    def flush_before(self, log_time_ns: Optional[int]) -> None:
        """Write every held message earlier than ``log_time_ns`` (all for None)."""
        while self._heap and (log_time_ns is None or self._heap[0][0] < log_time_ns):
            log_time, _, topic, message = heapq.heappop(self._heap)
            self._writer.write(topic, log_time, message)


def _read_json(path: str) -> dict:
    try:
        with open(path, 'r', encoding='utf-8') as stream:
            return json.load(stream)
    except (OSError, ValueError) as error:
        raise A2D2FormatError(path, f'unreadable ({type(error).__name__}: {error})') from None


def _gt_class_ids(boxes, gt_classes: str, report: ConversionReport, path: str
                  ) -> Tuple[np.ndarray, List[str], List[str]]:
    """Return (boxes (K, 7), class ids, box ids) of the boxes kept for the ground truth."""
    kept, names, ids = [], [], []
    for box in boxes:
        if gt_classes == 'a2d2':
            name = box.class_name.lower()
        else:
            if box.class_name not in DEFAULT_CLASS_MAP:
                LOGGER.warning('%s: class %r is not in the class map; box left out', path,
                               box.class_name)
            name = DEFAULT_CLASS_MAP.get(box.class_name)
            if name is None:
                report.dropped_boxes[box.class_name] = (
                    report.dropped_boxes.get(box.class_name, 0) + 1)
                continue
        kept.append(box.as_array())
        names.append(name)
        ids.append(str(box.box_id))
    array = np.stack(kept) if kept else np.zeros((0, 7), dtype=np.float32)
    return array, names, ids


def convert_scene(root: str, scene: str, out: str, frames: slice = slice(None),
                  storage: str = 'mcap', gt_classes: str = 'training', overwrite: bool = False,
                  progress: bool = True) -> ConversionReport:
    """Write one scene of an A2D2-format root as a rosbag2 bag; see the module docstring.

    Args:
        root: dataset root (scene folders, ``cams_lidars.json``, ``class_list.json``).
        scene: scene folder name, e.g. '20180807_145028'.
        out: bag folder to create.
        frames: slice over the scene's sorted frames.
        storage: 'mcap' or 'sqlite3'.
        gt_classes: 'training' or 'a2d2' class ids for the detection ground truth.
        overwrite: replace an existing bag at ``out``.
        progress: show a tqdm progress bar.

    Raises:
        FileNotFoundError / A2D2FormatError: the root files or the scene are missing or bad.
        BagError: the bag cannot be written.
    """
    if gt_classes not in GT_CLASS_MODES:
        raise ValueError(f'gt_classes must be one of {GT_CLASS_MODES}, got {gt_classes!r}')
    started = time.perf_counter()
    root = os.fspath(root)
    if scene not in list_scenes(root):
        raise FileNotFoundError(f'{os.path.join(root, scene)}: no such scene folder '
                                f'(scenes: {", ".join(list_scenes(root)) or "none"})')
    cams_lidars = _read_json(os.path.join(root, 'cams_lidars.json'))
    own_camera = os.path.join(root, scene, 'cams_lidars.json')
    filming = _read_json(own_camera) if os.path.exists(own_camera) else None
    decoder = SemanticDecoder.from_class_list(os.path.join(root, 'class_list.json'))
    frame_ids = scene_frame_ids(root, scene)[frames]
    report = ConversionReport(bag=os.fspath(out), scene=scene)
    topics = DEFAULT_TOPICS
    transforms = static_transforms(cams_lidars, filming=filming)
    calibration: Optional[CameraInfoData] = None
    with BagWriter(out, storage=storage, overwrite=overwrite) as writer:
        factory = writer.factory
        for topic, msgtype, latched in (
                (topics.tf_static, TF_TYPE, True), (topics.pointcloud, POINTCLOUD_TYPE, False),
                (topics.gt_detections, DETECTIONS_TYPE, False),
                (topics.image, IMAGE_TYPE, False), (topics.camera_info, CAMERA_INFO_TYPE, False),
                (topics.gt_semantic, IMAGE_TYPE, False)):
            writer.add_topic(topic, msgtype, latched=latched)
        ordered = _OrderedWriter(writer)
        wrote_tf = False
        for frame_id in tqdm(frame_ids, desc=f'{scene} -> {os.path.basename(out)}',
                             unit='frame', disable=not progress):
            paths = {kind: frame_path(root, scene, frame_id, kind)
                     for kind in ('lidar', 'label3D', 'camera', 'camera_info', 'label')}
            camera_stamp_us = None
            try:
                camera_stamp_us = int(read_camera_info(paths['camera_info'])['cam_tstamp'])
            except A2D2FormatError as error:
                _skip(report, error.path, f'{error.reason}; frame without image')
            try:
                arrays = read_lidar_arrays(paths['lidar'])
            except A2D2FormatError as error:
                _skip(report, error.path, f'{error.reason}; frame skipped')
                continue
            if camera_stamp_us is None and arrays.get('timestamp') is None:
                _skip(report, paths['lidar'], 'no timestamps and no camera info; frame skipped')
                continue
            points, stamp_us, sweep_end_us = cloud_points(arrays, camera_stamp_us or 0)
            frame_start_ns = us_to_ns(min(stamp_us, camera_stamp_us or stamp_us))
            ordered.flush_before(frame_start_ns)
            if not wrote_tf:
                writer.write(topics.tf_static, frame_start_ns,
                             factory.transforms(frame_start_ns, transforms))
                wrote_tf = True
            cloud_ns, cloud_log_ns = us_to_ns(stamp_us), us_to_ns(sweep_end_us)
            ordered.put(topics.pointcloud, cloud_log_ns,
                        factory.pointcloud(cloud_ns, CAMERA_VIEW_FRAME, points))
            report.frames += 1
            try:
                boxes, names, box_ids = _gt_class_ids(read_boxes(paths['label3D']), gt_classes,
                                                      report, paths['label3D'])
                scores = np.ones(len(boxes), dtype=np.float32)
                ordered.put(topics.gt_detections, cloud_log_ns, factory.detections(
                    cloud_ns, CAMERA_VIEW_FRAME, boxes, scores, names, box_ids))
            except A2D2FormatError as error:
                _skip(report, error.path, f'{error.reason}; frame without detection ground '
                                          'truth')
            if camera_stamp_us is None:
                continue
            camera_ns = us_to_ns(camera_stamp_us)
            try:
                rgb = read_image(paths['camera'])
            except A2D2FormatError as error:
                _skip(report, error.path, f'{error.reason}; frame without image')
                continue
            height, width = rgb.shape[:2]
            if calibration is None or (calibration.width, calibration.height) != (width, height):
                calibration = camera_info_data(filming or cams_lidars,
                                               image_size=(width, height))
            ordered.put(topics.image, camera_ns,
                        factory.image(camera_ns, CAMERA_OPTICAL_FRAME, rgb, 'rgb8'))
            ordered.put(topics.camera_info, camera_ns, factory.camera_info(
                camera_ns, CAMERA_OPTICAL_FRAME, width, height, calibration.camera_matrix,
                calibration.distortion, calibration.rectified_matrix,
                calibration.distortion_model))
            try:
                label = read_image(paths['label'])
                if label.shape != rgb.shape:
                    raise A2D2FormatError(paths['label'], f'size {label.shape[:2]} differs from '
                                          f'the camera image {rgb.shape[:2]}')
                ordered.put(topics.gt_semantic, camera_ns, factory.image(
                    camera_ns, CAMERA_OPTICAL_FRAME, decoder.decode(label), 'mono8'))
            except A2D2FormatError as error:
                _skip(report, error.path, f'{error.reason}; frame without semantic ground '
                                          'truth')
        ordered.flush_before(None)
        report.messages = dict(writer.counts)
    report.seconds = time.perf_counter() - started
    return report


def _skip(report: ConversionReport, path: str, reason: str) -> None:
    report.skipped.append((path, reason))
    LOGGER.warning('%s: %s', path, reason)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog='python -m training.to_bag',
        description='Convert one A2D2 (or synthetic A2D2-format) scene into a rosbag2 bag '
                    'with clouds, images, camera info, /tf_static and ground truth.')
    parser.add_argument('--a2d2-root', required=True,
                        help='dataset root: scene folders, cams_lidars.json, class_list.json')
    parser.add_argument('--scene', required=True, help='scene folder, e.g. 20180807_145028')
    parser.add_argument('--frames', default=None,
                        help="a:b slice of the scene's frames sorted by id (default: all)")
    parser.add_argument('--out', required=True, help='bag folder to create')
    parser.add_argument('--storage', choices=sorted(STORAGE_PLUGINS), default='mcap',
                        help='rosbag2 storage (default: mcap)')
    parser.add_argument('--gt-classes', choices=GT_CLASS_MODES, default='training',
                        help='detection ground truth class ids: training classes through the '
                             'default A2D2 class map, or the A2D2 names in lower case')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing bag')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the converter; return the exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s: %(message)s')
    try:
        frames = parse_frame_range(args.frames)
    except ValueError as error:
        parser.error(str(error))
    try:
        report = convert_scene(args.a2d2_root, args.scene, args.out, frames=frames,
                               storage=args.storage, gt_classes=args.gt_classes,
                               overwrite=args.overwrite, progress=not args.no_progress)
    except (OSError, A2D2FormatError, BagError, KeyError, ValueError) as error:
        text = str(error) if not isinstance(error, KeyError) else f'missing key {error}'
        print(f'error: {text}', file=sys.stderr)
        return 1
    if report.frames == 0:
        print(f'error: no frame of {args.scene} could be converted', file=sys.stderr)
        return 1
    counts = ', '.join(f'{topic} {count}' for topic, count in sorted(report.messages.items()))
    print(f'wrote {report.bag} ({args.storage}): {report.frames} frames in '
          f'{report.seconds:.1f} s; messages: {counts}')
    if report.dropped_boxes:
        print('boxes left out (class maps to no training class): ' + ', '.join(
            f'{name} {count}' for name, count in sorted(report.dropped_boxes.items())))
    if report.skipped:
        print(f'{len(report.skipped)} files skipped (see the warnings above)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
