"""Smoke test of bev_perception_bench: every code path with tiny inputs (not a timed test)."""

import json
import math
import os

from bev_perception.model.config import ModelConfig
from bev_perception.tools import bench
from bev_perception.weights import load_weights, read_metadata
import numpy as np
import pytest

#: Stages that run on the CPU with a camera image (their p50 must be positive).
CPU_STAGES = ('cloud_conversion', 'preprocess', 'voxelize', 'pillar_net', 'backbone',
              'camera_encoder', 'fusion', 'heads', 'decode', 'semantic_resize',
              'message_building', 'model_forward', 'inference_total', 'end_to_end')


@pytest.fixture(scope='module')
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench')
    assert bench.main(['--out', str(out), '--quick', '--configs', 'tiny', '--devices', 'cpu',
                       '--skip-node']) == 0
    with open(out / 'bench.json') as stream:
        report = json.load(stream)
    return report, (out / 'bench.md').read_text()


def test_json_holds_every_section_with_positive_numbers(quick_report):
    report, _ = quick_report
    assert report['machine']['cpu_cores'] == os.cpu_count()
    assert len(report['machine']['load_average_at_start']) == 3
    assert [(row['config'], row['device'], row['input']) for row in report['stages']] == [
        ('tiny', 'cpu', 'front'), ('tiny', 'cpu', 'surround')]
    for row in report['stages']:
        assert row['precision'] == 'fp32' and row['iterations'] == 2
        assert set(row['stages_ms']) == {key for key, _ in bench.BENCH_STAGES}
        for key in CPU_STAGES:
            stats = row['stages_ms'][key]
            assert stats['count'] == 2 and stats['p50'] > 0 and stats['p95'] >= stats['p50'], key
        assert row['stages_ms']['cuda_graph']['p50'] == 0
        assert row['stages_ms']['end_to_end']['p50'] >= row['stages_ms']['voxelize']['p50']
        assert row['memory']['peak_mb'] is None or row['memory']['peak_mb'] >= 0
        assert 0 < row['points_in_grid'] <= row['points']
    (voxelizer,) = report['voxelizer']
    assert voxelizer['ours_ms']['p50'] > 0 and voxelizer['ours_pillars'] > 0
    if voxelizer['spconv_ms'] is None:
        assert 'make bench' in voxelizer['note']
    else:
        assert voxelizer['ratio_ours_over_spconv'] > 0 and voxelizer['spconv_pillars'] > 0
    conversion = report['conversion']
    assert conversion['outputs_agree']
    for name in ('python_loop_ms', 'numpy_column_copy_ms', 'zero_copy_ms'):
        assert conversion[name]['p50'] > 0, name
    assert conversion['speedup_zero_copy_vs_python_loop'] > 1
    assert report['node'] == [] and report['fast_path'] == []
    assert any('fp16' in item for item in report['not_measured'])


def test_markdown_has_the_tables(quick_report):
    report, text = quick_report
    for heading in ('## Per-stage latency', '## Voxelizer vs spconv', '## PointCloud2 ->',
                    '## Not measured here'):
        assert heading in text
    assert '| voxelize |' in text and '| PFN + scatter |' in text
    assert '| peak memory (MB) |' in text and report['machine']['cpu_model'] in text
    assert 'CUDA graph' not in text  # a stage that never ran is left out


def test_lidar_cloud_is_deterministic_and_in_the_field_of_view():
    cloud = bench.lidar_cloud(3001, bench.FRONT_FOV_DEG, seed=4)
    assert cloud.shape == (3001, 4) and cloud.dtype == np.float32
    np.testing.assert_array_equal(cloud, bench.lidar_cloud(3001, bench.FRONT_FOV_DEG, seed=4))
    azimuth = np.degrees(np.arctan2(cloud[:, 1], cloud[:, 0]))
    assert np.mean(np.abs(azimuth) <= bench.FRONT_FOV_DEG / 2 + 2) > 0.95
    assert np.isclose(np.median(cloud[:, 2]), -bench.SENSOR_HEIGHT_M, atol=0.2)
    surround = bench.lidar_cloud(2000, 360.0, seed=4)
    assert np.mean(surround[:, 0] < 0) > 0.3  # points behind the car too


def test_conversion_methods_agree_and_drop_non_finite_points():
    points = bench.lidar_cloud(57, 360.0, seed=5)
    points[[3, 40], 1] = [math.nan, math.inf]
    msg = bench.cloud_message(points)
    assert msg.point_step == 24
    loop = bench.points_by_python_loop(msg, ('x', 'y', 'z', 'intensity'))
    copied = bench.points_by_column_copy(msg, ('x', 'y', 'z', 'intensity'))
    assert loop.shape == (55, 4)
    np.testing.assert_array_equal(loop, copied)
    np.testing.assert_array_equal(loop, np.delete(points, [3, 40], axis=0))


def test_node_weights_are_written_for_untrained_configs(tmp_path):
    path, origin = bench._node_weights('tiny', {}, str(tmp_path))
    assert origin == 'random init' and os.path.isfile(path)
    _, config, metadata = load_weights(path, device='cpu')
    assert config == ModelConfig.tiny() and 'random' in metadata['provenance']['dataset']


def test_bad_arguments_exit_with_usage_errors(tmp_path):
    with pytest.raises(SystemExit) as raised:
        bench.main(['--out', str(tmp_path), '--configs', 'huge'])
    assert raised.value.code == 2
    missing = tmp_path / 'missing.safetensors'
    with pytest.raises(SystemExit) as raised:  # a message naming the file, not a traceback
        bench.main(['--out', str(tmp_path), '--quick', '--configs', 'tiny', '--devices', 'cpu',
                    '--skip-node', '--weights', f'tiny={missing}'])
    assert str(raised.value.code).startswith(f'bev_perception_bench: {missing}: cannot read')


@pytest.mark.parametrize('name,profile', [('shipped', 'default'), ('shipped-lite', 'lite')])
def test_shipped_config_comes_from_the_shipped_weights_metadata(name, profile):
    shipped = bench.shipped_weights_path(profile)
    if shipped is None:
        with pytest.raises(ValueError, match=f'--configs {name} needs the shipped weights'):
            bench.model_config(name)
        return
    expected = ModelConfig.from_dict(read_metadata(shipped)['config'])
    assert bench.model_config(name) == expected
    model, config, origin = bench.model_and_weights(name, {})
    assert config == expected and origin.endswith(f'{profile}.safetensors')


def test_weights_that_fuse_by_calibration_are_timed_with_a_camera():
    spec = bench.input_specs(quick=True)['front']
    row = bench.bench_stages('shipped', 'cpu', 'fp32', 'front', spec, iterations=1, warmup=0,
                             weights={}, score_threshold=0.1)
    assert bench.model_config('shipped').fusion.geometry_heights_m  # fuses by calibration
    assert row['stages_ms']['fusion']['p50'] > 0.0
    rows = bench.bench_fast_path('shipped', 'cpu', 'fp32', spec, ['eager'], iterations=1,
                                 warmup=0, weights={}, score_threshold=0.1)
    assert rows and rows[0]['variant'] == 'eager'
