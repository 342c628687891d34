"""Bag evaluation: offline equals training.evaluate, live over DDS equals offline, bad bags fail.

A small synthetic A2D2-format scene is converted to a bag; random weights of the tiny model
config stand in for trained ones (scores ~0.1, so a low threshold yields detections).
"""

import json
import os
import shutil
import signal
import subprocess
import sys

from bev_perception.bag_io import (BagError, BagReader, BagWriter, cdr_header_stamp_ns,
                                   DEFAULT_TOPICS)
from bev_perception.tools import evaluate_bag
from bev_perception.tools.evaluate_bag import (ClassMapper, EvalError, EvalOptions,
                                               evaluate_offline, load_params_file, node_command,
                                               parse_param_overrides)
from model_testing import calibrated_tiny_config, write_tiny_weights
import numpy as np
import pytest
from ros_testing import write_scene_bag
from training.a2d2 import A2D2Dataset, DEFAULT_CLASS_MAP
from training.evaluate import evaluate as training_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARAMS_FILE = os.path.join(ROOT, 'config', 'perception.yaml')
FRAMES = 3
SCORE_THRESHOLD = 0.05


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Return (A2D2-format root, mcap bag, tiny random weights path)."""
    base = tmp_path_factory.mktemp('bag_eval')
    root, bag = write_scene_bag(str(base), FRAMES, seed=17)
    weights = str(base / 'tiny_random.safetensors')
    write_tiny_weights(weights)
    return root, bag, weights


def _options(bag, weights, out, **kwargs):
    return EvalOptions(bag=bag, out=str(out), weights=weights, device='cpu',
                       params_file=PARAMS_FILE,
                       overrides={'score_thresholds': [SCORE_THRESHOLD]}, progress=False,
                       **kwargs)


def _frames(path):
    with open(path, 'r', encoding='utf-8') as stream:
        return [json.loads(line) for line in stream]


@pytest.fixture(scope='module')
def offline(data, tmp_path_factory):
    """Run the offline evaluation once; return (report, output folder)."""
    _, bag, weights = data
    out = tmp_path_factory.mktemp('offline')
    return evaluate_offline(_options(bag, weights, out)), out


def test_offline_report_files_and_counts(offline):
    report, out = offline
    for name in ('report.json', 'report.md', 'frames.jsonl', 'pr_curves.png',
                 'semantic_iou.png', 'latency_hist.png', 'bev_strip.png'):
        assert (out / name).stat().st_size > 0, name
    assert report['frames']['frames'] == FRAMES and report['frames']['fused'] == FRAMES
    assert report['sync']['fused'] == FRAMES and report['sync']['lidar_only'] == 0
    assert report['ground_truth']['frames_with_gt_detections'] == FRAMES
    assert report['ground_truth']['semantic_frames'] == FRAMES
    assert set(report['detection']) == {'fused', 'lidar_only'}
    for stage in ('convert', 'voxelize', 'camera_encoder', 'total'):
        stats = report['timing_ms'][stage]
        assert stats['count'] == FRAMES and stats['p50'] <= stats['p95'] <= stats['p99']
    frames = _frames(out / 'frames.jsonl')
    assert len(frames) == FRAMES and all(not f['lidar_only'] for f in frames)
    assert sum(len(f['boxes']) for f in frames) > 0
    assert 'mAP 2 m' in (out / 'report.md').read_text()


def test_offline_passes_the_bags_camera_info_to_calibration_aware_weights(data, tmp_path):
    root, bag, _ = data
    weights = str(tmp_path / 'calibrated.safetensors')
    write_tiny_weights(weights, config=calibrated_tiny_config())
    report = evaluate_offline(_options(bag, weights, tmp_path / 'with'))
    assert report['frames']['fused'] == FRAMES and report['frames']['uncalibrated_images'] == 0
    # The bag's /tf_static links the cloud's frame and the camera's: the pose comes from it.
    assert report['frames']['camera_pose_from_tf'] == FRAMES
    assert report['frames']['bad_transforms'] == 0
    # The same bag without its CameraInfo: the images cannot be placed, every frame LiDAR-only.
    stripped = str(tmp_path / 'without_camera_info')
    with BagReader(bag) as reader, BagWriter(stripped, storage='mcap') as writer:
        kept = [topic for topic in reader.topics if topic != DEFAULT_TOPICS.camera_info]
        for topic in kept:
            writer.add_topic(topic, reader.topics[topic])
        for item in reader.messages(kept, raw=True):
            writer.write_raw(item.topic, item.log_time_ns, item.message)
    report = evaluate_offline(_options(stripped, weights, tmp_path / 'without'))
    assert report['frames']['lidar_only'] == FRAMES
    assert report['frames']['uncalibrated_images'] == FRAMES


def test_offline_matches_training_evaluate_on_the_same_frames(data, offline):
    from bev_perception.inference import InferenceRuntime

    root, _, weights = data
    report, out = offline
    runtime = InferenceRuntime.from_weights(weights, device='cpu')
    dataset = A2D2Dataset(root, class_map=DEFAULT_CLASS_MAP,
                          classes=runtime.config.detection_classes)
    expected = training_evaluate(runtime, dataset, batch_size=1,
                                 score_threshold=SCORE_THRESHOLD, show_progress=False)
    for run, metrics in (('fused', expected.fused), ('lidar_only', expected.lidar_only)):
        assert report['detection'][run] == metrics.to_dict(), run  # NaN -> None: exact
        assert sum(metrics.num_pred.values()) > 0
    assert report['semantic'] == expected.semantic.to_dict()
    # Frame by frame: the bag frames carry the same boxes the runtime finds on the files.
    frames = _frames(out / 'frames.jsonl')
    for frame, index in zip(frames, range(len(dataset))):
        item = dataset[index]
        result = runtime(item.points, item.image, score_thresholds=SCORE_THRESHOLD)
        assert frame['class_names'] == result.class_names
        np.testing.assert_array_equal(np.asarray(frame['boxes']).reshape(-1, 7)[:, :6],
                                      result.boxes[:, :6])
        np.testing.assert_array_equal(frame['scores'], result.scores)


def test_live_replay_over_dds_matches_offline(data, offline, tmp_path, ros_env):
    _, bag, weights = data
    _, offline_out = offline
    out = tmp_path / 'live'
    executable = shutil.which('bev_perception_eval')
    command = ([executable] if executable else
               [sys.executable, '-m', 'bev_perception.tools.evaluate_bag'])
    command += [bag, '--live', '--rate', '1.0', '--use-sim-time', '--weights', weights,
                '--device', 'cpu', '--params-file', PARAMS_FILE, '-p',
                f'score_thresholds:=[{SCORE_THRESHOLD}]', '--out', str(out), '--no-progress']
    completed = subprocess.run(command, env=ros_env, capture_output=True, text=True,
                               timeout=240)
    log = (out / 'node.log').read_text() if (out / 'node.log').exists() else ''
    assert completed.returncode == 0, completed.stderr[-3000:] + log[-2000:]
    report = json.loads((out / 'report.json').read_text())
    live = report['live']
    assert live['clouds_published'] == FRAMES and live['detections_received'] == FRAMES
    assert live['dropped_frames'] == 0
    assert live['end_to_end_latency_ms']['count'] == FRAMES
    assert live['end_to_end_latency_ms']['p50'] > 0 and live['output_rate_hz'] > 0
    assert live['node_diagnostics']['frames_out'] == str(FRAMES)
    assert _frames(out / 'frames.jsonl') == _frames(offline_out / 'frames.jsonl')
    offline_report = json.loads((offline_out / 'report.json').read_text())
    assert report['detection']['fused'] == offline_report['detection']['fused']
    assert report['semantic'] == offline_report['semantic']
    with BagReader(out / 'outputs') as recorded:
        assert any(topic.endswith('/output/detections') for topic in recorded.topics)


def test_live_replay_into_a_running_node_with_remapped_inputs(
        data, offline, tmp_path, ros_env):
    _, bag, weights = data
    _, offline_out = offline
    namespace = f'/eval_running_{os.getpid()}'
    node = shutil.which('perception_node')
    command = ([node] if node else [sys.executable, '-m', 'bev_perception.node']) + [
        '--ros-args', '-r', f'__ns:={namespace}',
        '-r', f'~/input/pointcloud:={namespace}/points', '-r', f'~/input/image:={namespace}/image',
        '-r', f'~/input/camera_info:={namespace}/camera_info',
        '--params-file', PARAMS_FILE, '-p', f'weights_path:={weights}', '-p', 'device:=cpu',
        '-p', f'score_thresholds:=[{SCORE_THRESHOLD}]']
    log_path = tmp_path / 'node.log'
    with open(log_path, 'w') as log:
        process = subprocess.Popen(command, env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        out = tmp_path / 'live'
        code = evaluate_bag.main([  # in-process this time (the DDS variables are set)
            bag, '--live', '--node-namespace', namespace, '--node-pointcloud-topic',
            f'{namespace}/points', '--node-image-topic', f'{namespace}/image',
            '--node-camera-info-topic', f'{namespace}/camera_info', '--weights', weights,
            '--out', str(out), '--no-progress'])
        assert code == 0, log_path.read_text()[-2000:]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    report = json.loads((out / 'report.json').read_text())
    assert report['live']['started_node'] is False and report['live']['dropped_frames'] == 0
    assert _frames(out / 'frames.jsonl') == _frames(offline_out / 'frames.jsonl')
    assert not (out / 'node.log').exists()
    # The bag's camera_info reached the node on its remapped topic.
    assert int(report['live']['node_diagnostics']['camera_infos_in']) == FRAMES
    # ... and its /tf_static (vehicle -> view -> optical frame) reached the node's /tf tree.
    assert int(report['live']['node_diagnostics']['transforms_in']) == 2


def _run_cli(args, capsys):
    code = evaluate_bag.main(list(args) + ['--no-progress'])
    return code, capsys.readouterr().err


def test_missing_topic_names_the_topic(data, tmp_path, capsys):
    _, bag, weights = data
    code, err = _run_cli([bag, '--weights', weights, '--out', str(tmp_path / 'o'),
                          '--pointcloud-topic', '/velodyne_points'], capsys)
    assert code == 1 and '/velodyne_points' in err and DEFAULT_TOPICS.pointcloud in err


def test_unknown_type_names_the_topic_and_type(data, tmp_path, capsys):
    _, _, weights = data
    bag = tmp_path / 'odd_types'
    with BagWriter(bag) as writer:
        writer.add_topic(DEFAULT_TOPICS.pointcloud, 'sensor_msgs/msg/PointCloud2')
        # A type the bag carries no definition of (as recorded without its package).
        writer._writer.add_connection('/camera/frames', 'acme_msgs/msg/Frame', msgdef='',
                                      rihs01='RIHS01_' + '0' * 64)
    code, err = _run_cli([str(bag), '--weights', weights, '--out', str(tmp_path / 'o'),
                          '--image-topic', '/camera/frames'], capsys)
    assert code == 1
    assert '/camera/frames' in err and 'acme_msgs/msg/Frame' in err
    with BagReader(bag) as reader:
        with pytest.raises(BagError, match='unknown message type acme_msgs/msg/Frame'):
            next(reader.messages(['/camera/frames']))


@pytest.mark.parametrize('storage_suffix', ['.mcap'])
def test_truncated_bag_names_the_file(data, tmp_path, capsys, storage_suffix):
    _, bag, weights = data
    copy = tmp_path / 'cut'
    shutil.copytree(bag, copy)
    storage = next(path for path in copy.iterdir() if path.suffix == storage_suffix)
    with open(storage, 'r+b') as stream:
        stream.truncate(storage.stat().st_size // 2)
    code, err = _run_cli([str(copy), '--weights', weights, '--out', str(tmp_path / 'o')],
                         capsys)
    assert code == 1 and str(storage) in err


def test_not_a_bag_and_bad_weights(data, tmp_path, capsys):
    _, bag, _ = data
    code, err = _run_cli([str(tmp_path), '--out', str(tmp_path / 'o')], capsys)
    assert code == 1 and 'metadata.yaml' in err
    bad_weights = tmp_path / 'bad.safetensors'
    bad_weights.write_bytes(b'not weights')
    code, err = _run_cli([bag, '--weights', str(bad_weights), '--out', str(tmp_path / 'o')],
                         capsys)
    assert code == 1 and str(bad_weights) in err


def test_class_mapper_maps_names_and_counts_unknown_ids():
    mapper = ClassMapper(('car', 'truck', 'pedestrian', 'cyclist'),
                         {'VanSUV': 'car', 'Animal': None, 'Bus': 'truck'})
    kept, labels = mapper.labels(['Car', 'vansuv', 'animal', 'bus', 'ufo', 'Cyclist'])
    assert kept.tolist() == [True, True, False, True, False, True]
    assert labels.tolist() == [0, 0, 1, 3]
    assert mapper.unknown == {'ufo': 1} and mapper.ignored == {'animal': 1}
    with pytest.raises(EvalError, match='tram'):
        ClassMapper(('car',), {'Tram': 'tram'})


def test_parameters_and_node_command(tmp_path):
    assert parse_param_overrides(['score_thresholds:=[0.1, 0.2]', 'device:=cpu']) == {
        'score_thresholds': [0.1, 0.2], 'device': 'cpu'}
    with pytest.raises(ValueError, match='name:=value'):
        parse_param_overrides(['device=cpu'])
    values = load_params_file(PARAMS_FILE)
    assert values['sync_policy'] == 'lidar_triggered'
    (tmp_path / 'p.yaml').write_text('other_node:\n  ros__parameters: {max_points: 5}\n')
    with pytest.raises(EvalError, match='ros__parameters'):
        load_params_file(str(tmp_path / 'p.yaml'))
    options = EvalOptions(bag='b', out='o', params_file=PARAMS_FILE, use_sim_time=True)
    overrides = {'score_thresholds': [0.1], 'intensity_field': '1'}
    command = node_command(options, '/ns', '/w/x.safetensors', overrides)
    assert command[command.index('--ros-args') + 1:command.index('--params-file')] == [
        '-r', '__node:=perception_node', '-r', '__ns:=/ns']
    for expected in ('weights_path:=/w/x.safetensors', 'score_thresholds:=[0.1]',
                     "intensity_field:='1'", 'use_sim_time:=true'):
        assert expected in command


def test_cdr_header_stamp_is_read_without_decoding(data):
    _, bag, _ = data
    with BagReader(bag) as reader:
        raw = next(reader.messages([DEFAULT_TOPICS.pointcloud], raw=True))
        decoded = next(reader.messages([DEFAULT_TOPICS.pointcloud]))
    stamp = decoded.message.header.stamp
    assert cdr_header_stamp_ns(raw.message) == stamp.sec * 10**9 + stamp.nanosec
