"""Tests for bev_perception.conversions with real message classes and no ROS graph."""

import array
import struct

from bev_perception.a2d2_classes import IGNORE_INDEX, SEMANTIC_PALETTE
from bev_perception.conversions import (
    array_to_pointcloud2, box_to_pose, boxes_to_poses, check_image, CLOUD_REJECTIONS,
    ConversionError, default_class_colour, detections_to_markers, detections_to_msg,
    IMAGE_ENCODING_CHANNELS, IMAGE_REJECTIONS, image_to_rgb, label_info_msg,
    pointcloud2_to_array, pointcloud2_to_array_with_stats, rgb_to_image,
    semantic_to_color, semantic_to_mono8, structured_to_pointcloud2)
from bev_perception.geometry import quaternion_to_yaw
from builtin_interfaces.msg import Time
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header

try:
    import vision_msgs.msg  # noqa: F401
    HAVE_VISION_MSGS = True
except ImportError:
    HAVE_VISION_MSGS = False

needs_vision_msgs = pytest.mark.skipif(
    not HAVE_VISION_MSGS, reason='vision_msgs is not built (run `make setup`, source env.sh)')


def wrapped_difference(angle_a, angle_b):
    """Return angle_a - angle_b wrapped to [-pi, pi)."""
    return (angle_a - angle_b + np.pi) % (2 * np.pi) - np.pi


def make_header(frame_id='lidar_front', sec=1616161616, nanosec=123456789):
    """Return a Header with a distinctive stamp."""
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def mixed_dtype(byte_order='<', itemsize=40):
    """Return a driver-like point dtype with gaps between fields and padding at the end."""
    return np.dtype({
        'names': ['x', 'y', 'z', 'intensity', 'ring', 'time'],
        'formats': [byte_order + 'f4'] * 3 + ['u1', byte_order + 'u2', byte_order + 'f8'],
        'offsets': [0, 4, 8, 16, 18, 24],
        'itemsize': itemsize,
    })


def mixed_points(count, dtype, seed=0):
    """Return a structured array of ``count`` points with distinct values per field."""
    rng = np.random.default_rng(seed)
    points = np.zeros(count, dtype=dtype)
    for name in ('x', 'y', 'z'):
        points[name] = rng.uniform(-50.0, 50.0, count)
    points['intensity'] = rng.integers(0, 256, count)
    points['ring'] = rng.integers(0, 128, count)
    points['time'] = rng.uniform(0.0, 0.1, count)
    return points


def expected_columns(points, names):
    """Return (N, k) float32 of the named fields of a structured array."""
    return np.stack([points[name].astype(np.float32) for name in names], axis=1)


def cloud_from_rows(rows, fields, point_step, row_padding, is_bigendian=False):
    """Build an organised PointCloud2 whose rows carry ``row_padding`` garbage bytes."""
    height, width = rows.shape
    row_bytes = np.ascontiguousarray(rows).view(np.uint8).reshape(height, width * point_step)
    padding = np.full((height, row_padding), 0xFF, dtype=np.uint8)  # NaN bytes if ever read
    data = np.concatenate([row_bytes, padding], axis=1).tobytes()
    return PointCloud2(header=make_header(), height=height, width=width, fields=fields,
                       is_bigendian=is_bigendian, point_step=point_step,
                       row_step=width * point_step + row_padding,
                       data=array.array('B', data), is_dense=True)


def xyz_fields():
    """Return float32 x, y, z PointFields at offsets 0, 4, 8."""
    return [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
            for i, n in enumerate('xyz')]


# ----------------------------------------------------------------------------------------------
# PointCloud2
# ----------------------------------------------------------------------------------------------

def test_float32_round_trip_is_a_zero_copy_view():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(37, 4)).astype(np.float32)
    msg = array_to_pointcloud2(points, make_header())
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 37, 16, 16 * 37)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z', 'intensity']
    assert all(f.datatype == PointField.FLOAT32 and f.count == 1 for f in msg.fields)
    assert msg.is_dense and not msg.is_bigendian
    assert msg.header.frame_id == 'lidar_front'
    restored = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(restored, points)
    assert restored.dtype == np.float32
    assert np.shares_memory(restored, np.frombuffer(msg.data, dtype=np.uint8))
    # a subset in another order still reads correctly (a copy then)
    np.testing.assert_array_equal(pointcloud2_to_array(msg, ('z', 'x')), points[:, [2, 0]])


def test_round_trip_survives_serialisation():
    points = np.arange(30, dtype=np.float32).reshape(10, 3)
    msg = array_to_pointcloud2(points, make_header(), fields=('x', 'y', 'z'))
    wire = deserialize_message(serialize_message(msg), PointCloud2)
    np.testing.assert_array_equal(pointcloud2_to_array(wire, ('x', 'y', 'z')), points)
    assert wire.header.stamp.nanosec == 123456789


@pytest.mark.parametrize('intensity_type', ['u1', 'u2'])
def test_mixed_dtypes_with_point_step_padding(intensity_type):
    dtype = np.dtype({
        'names': ['x', 'y', 'z', 'intensity', 'ring', 'time'],
        'formats': ['<f4', '<f4', '<f4', intensity_type, '<u2', '<f8'],
        'offsets': [0, 4, 8, 12, 14, 16], 'itemsize': 32})
    points = mixed_points(23, dtype)
    if intensity_type == 'u2':
        points['intensity'] = np.arange(23) * 2000  # beyond uint8
    msg = structured_to_pointcloud2(points, make_header())
    assert msg.point_step == 32
    datatypes = {f.name: f.datatype for f in msg.fields}
    assert datatypes['ring'] == PointField.UINT16
    assert datatypes['time'] == PointField.FLOAT64
    assert datatypes['intensity'] == (PointField.UINT8 if intensity_type == 'u1'
                                      else PointField.UINT16)
    names = ('x', 'y', 'z', 'intensity', 'ring', 'time')
    np.testing.assert_array_equal(pointcloud2_to_array(msg, names),
                                  expected_columns(points, names))


def test_all_point_field_datatypes():
    formats = {'i8': 'i1', 'u8': 'u1', 'i16': '<i2', 'u16': '<u2', 'i32': '<i4', 'u32': '<u4',
               'f32': '<f4', 'f64': '<f8'}
    dtype = np.dtype({'names': list(formats), 'formats': list(formats.values())})
    values = np.zeros(3, dtype=dtype)
    for name in formats:
        info = np.iinfo(dtype[name]) if dtype[name].kind in 'iu' else None
        values[name] = ([info.min, 0, info.max] if info else [-1.5, 0.0, 2.25])
    msg = structured_to_pointcloud2(values, make_header())
    assert sorted(f.datatype for f in msg.fields) == list(range(1, 9))
    restored = pointcloud2_to_array(msg, tuple(formats))
    np.testing.assert_array_equal(restored, expected_columns(values, tuple(formats)))
    assert restored[0, 0] == -128 and restored[2, 3] == 65535


def test_big_endian_cloud():
    points = mixed_points(11, mixed_dtype('>'))
    msg = structured_to_pointcloud2(points, make_header())
    assert msg.is_bigendian
    assert bytes(msg.data[:4]) == struct.pack('>f', points['x'][0])
    names = ('x', 'y', 'z', 'intensity', 'ring', 'time')
    np.testing.assert_array_equal(pointcloud2_to_array(msg, names),
                                  expected_columns(points, names))
    # the same bytes read as little-endian would give other numbers
    msg.is_bigendian = False
    assert not np.array_equal(pointcloud2_to_array(msg, ('x',)), expected_columns(points, 'x'))


def test_mixed_byte_orders_are_rejected():
    dtype = np.dtype([('x', '>f4'), ('ring', '<u2')])
    with pytest.raises(ConversionError, match='byte order'):
        structured_to_pointcloud2(np.zeros(2, dtype=dtype), make_header())


def test_organised_cloud_round_trip():
    rows = mixed_points(12, mixed_dtype()).reshape(3, 4)
    msg = structured_to_pointcloud2(rows, make_header())
    assert (msg.height, msg.width, msg.row_step) == (3, 4, 4 * 40)
    names = ('x', 'y', 'z', 'time')
    np.testing.assert_array_equal(pointcloud2_to_array(msg, names),
                                  expected_columns(rows.reshape(-1), names))


@pytest.mark.parametrize('is_bigendian', [False, True])
def test_organised_cloud_with_row_step_padding(is_bigendian):
    order = '>' if is_bigendian else '<'
    rows = mixed_points(15, mixed_dtype(order, itemsize=34), seed=4).reshape(3, 5)
    fields = structured_to_pointcloud2(rows, make_header()).fields
    msg = cloud_from_rows(rows, fields, 34, row_padding=13, is_bigendian=is_bigendian)
    assert msg.row_step == 5 * 34 + 13
    stats = pointcloud2_to_array_with_stats(msg, ('x', 'y', 'z', 'intensity', 'ring'))
    assert stats.num_input_points == 15 and stats.num_non_finite == 0
    np.testing.assert_array_equal(
        stats.points, expected_columns(rows.reshape(-1), ('x', 'y', 'z', 'intensity', 'ring')))


def test_non_finite_points_are_dropped_and_counted():
    points = np.arange(24, dtype=np.float32).reshape(6, 4)
    points[1, 0] = np.nan
    points[3, 2] = np.inf
    points[4, 3] = -np.inf  # intensity
    msg = array_to_pointcloud2(points, make_header())
    assert not msg.is_dense
    stats = pointcloud2_to_array_with_stats(msg)
    np.testing.assert_array_equal(stats.points, points[[0, 2, 5]])
    assert (stats.num_input_points, stats.num_non_finite) == (6, 3)
    # only the requested fields decide: without intensity, row 4 stays
    np.testing.assert_array_equal(pointcloud2_to_array(msg, ('x', 'y', 'z')),
                                  points[[0, 2, 4, 5], :3])
    all_nan = array_to_pointcloud2(np.full((5, 4), np.nan), make_header())
    stats = pointcloud2_to_array_with_stats(all_nan)
    assert stats.points.shape == (0, 4) and stats.num_non_finite == 5


def test_empty_cloud():
    msg = array_to_pointcloud2(np.zeros((0, 4)), make_header())
    assert pointcloud2_to_array(msg).shape == (0, 4)
    bare = PointCloud2(height=0, width=0, fields=xyz_fields(), point_step=12)
    assert pointcloud2_to_array(bare, ('x', 'y', 'z')).shape == (0, 3)


def test_missing_field_names_field_and_fields_present():
    msg = array_to_pointcloud2(np.zeros((2, 3)), make_header(), fields=('x', 'y', 'z'))
    with pytest.raises(ConversionError) as error:
        pointcloud2_to_array(msg)
    text = str(error.value)
    assert "'intensity'" in text and "'x', 'y', 'z'" in text
    assert isinstance(error.value, ValueError)


def test_field_counts():
    dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('rgb', 'u1', (3,))])
    points = np.zeros(4, dtype=dtype)
    points['x'] = np.arange(4)
    points['rgb'] = 7
    msg = structured_to_pointcloud2(points, make_header())
    assert msg.fields[3].count == 3 and msg.point_step == 15
    np.testing.assert_array_equal(pointcloud2_to_array(msg, ('x',))[:, 0], np.arange(4))
    with pytest.raises(ConversionError, match="'rgb' has count 3"):
        pointcloud2_to_array(msg, ('x', 'rgb'))


def test_inconsistent_layouts_raise():
    points = np.zeros((4, 3), dtype=np.float32)
    msg = array_to_pointcloud2(points, make_header(), fields=('x', 'y', 'z'))
    msg.data = array.array('B', bytes(msg.data)[:-1])
    with pytest.raises(ConversionError, match='data has 47 bytes, expected'):
        pointcloud2_to_array(msg, ('x', 'y', 'z'))
    msg = array_to_pointcloud2(points, make_header(), fields=('x', 'y', 'z'))
    msg.row_step = 40
    with pytest.raises(ConversionError, match='row_step 40 is smaller'):
        pointcloud2_to_array(msg, ('x', 'y', 'z'))
    msg = array_to_pointcloud2(points, make_header(), fields=('x', 'y', 'z'))
    msg.fields[2].offset = 10
    with pytest.raises(ConversionError, match="'z'.*does not fit in point_step 12"):
        pointcloud2_to_array(msg, ('x', 'y', 'z'))
    msg = array_to_pointcloud2(points, make_header(), fields=('x', 'y', 'z'))
    msg.fields[0].datatype = 9
    with pytest.raises(ConversionError, match='unknown datatype 9'):
        pointcloud2_to_array(msg, ('x', 'y', 'z'))
    with pytest.raises(ConversionError, match='repeat'):
        pointcloud2_to_array(msg, ('y', 'y'))
    with pytest.raises(ConversionError, match='do not match'):
        array_to_pointcloud2(np.zeros((3, 2)), make_header(), fields=('x', 'y', 'z'))


def test_a_field_named_twice_is_ambiguous():
    points = np.arange(12, dtype=np.float32).reshape(3, 4)
    msg = array_to_pointcloud2(points, make_header())
    msg.fields.append(PointField(name='x', offset=12, datatype=PointField.FLOAT32, count=1))
    with pytest.raises(ConversionError, match=r"2 fields named 'x' \(offsets 0, 12\)") as error:
        pointcloud2_to_array(msg)
    assert (error.value.kind, error.value.field) == ('duplicate_field', 'x')
    # A field that is not read may repeat (padding fields of some drivers do).
    msg.fields[-1].name = '_'
    msg.fields.append(PointField(name='_', offset=12, datatype=PointField.UINT8, count=4))
    np.testing.assert_array_equal(pointcloud2_to_array(msg), points)


def cloud_rejection(change):
    """Return the kind and field of the ConversionError for the good cloud after ``change``."""
    msg = array_to_pointcloud2(np.ones((4, 4), np.float32), make_header())
    change(msg)
    with pytest.raises(ConversionError) as error:
        pointcloud2_to_array_with_stats(msg)
    return error.value.kind, error.value.field


def test_every_cloud_rejection_names_its_reason_and_field():
    def field(index, **values):
        def change(msg):
            for name, value in values.items():
                setattr(msg.fields[index], name, value)
        return change

    def layout(**values):
        return lambda msg: [setattr(msg, name, value) for name, value in values.items()]

    def duplicate(msg):
        msg.fields.append(PointField(name='z', offset=0, datatype=PointField.FLOAT32, count=1))

    cases = {
        'missing_field': (field(3, name='i'), 'intensity'),
        'duplicate_field': (duplicate, 'z'),
        'unknown_datatype': (field(1, datatype=42), 'y'),
        'field_count': (field(0, count=0), 'x'),
        'field_offset': (field(3, offset=13), 'intensity'),
        'point_step': (layout(point_step=0), ''),
        'row_step': (layout(row_step=63), ''),
        'data_size': (layout(data=array.array('B', bytes(65))), ''),
    }
    assert set(cases) == set(CLOUD_REJECTIONS)
    for kind, (change, field_name) in cases.items():
        assert cloud_rejection(change) == (kind, field_name), kind


# ----------------------------------------------------------------------------------------------
# Image
# ----------------------------------------------------------------------------------------------

def random_rgb(height=3, width=5, seed=0):
    """Return an odd-sized (H, W, 3) uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def padded_image(pixels, encoding, padding):
    """Build an Image whose rows end with ``padding`` garbage bytes."""
    height, width, channels = pixels.shape
    rows = pixels.reshape(height, width * channels)
    data = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    return Image(header=make_header('camera'), height=height, width=width, encoding=encoding,
                 is_bigendian=False, step=width * channels + padding,
                 data=array.array('B', data.tobytes()))


def encode(rgb, encoding):
    """Return the (H, W, C) wire pixels of RGB pixels in an encoding, written by hand."""
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    return {
        'rgb8': rgb, 'bgr8': rgb[:, :, ::-1],
        'rgba8': np.concatenate([rgb, alpha], axis=2),
        'bgra8': np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
        'mono8': rgb[:, :, :1],
    }[encoding]


@pytest.mark.parametrize('encoding', sorted(IMAGE_ENCODING_CHANNELS))
def test_image_round_trip_every_encoding(encoding):
    rgb = random_rgb()
    if encoding == 'mono8':
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
    msg = rgb_to_image(rgb if encoding != 'mono8' else rgb[:, :, 0], make_header('camera'),
                       encoding)
    assert (msg.height, msg.width, msg.encoding) == (3, 5, encoding)
    assert msg.step == 5 * IMAGE_ENCODING_CHANNELS[encoding]
    assert bytes(msg.data) == np.ascontiguousarray(encode(rgb, encoding)).tobytes()
    decoded = image_to_rgb(msg)
    assert decoded.shape == (3, 5, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, rgb)


@pytest.mark.parametrize('encoding', sorted(IMAGE_ENCODING_CHANNELS))
def test_image_row_padding_every_encoding(encoding):
    rgb = random_rgb(4, 7, seed=2)
    if encoding == 'mono8':
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
    msg = padded_image(encode(rgb, encoding), encoding, padding=5)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_colour_images_are_views_of_the_message():
    msg = rgb_to_image(random_rgb(), make_header(), 'bgra8')
    decoded = image_to_rgb(msg)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, dtype=np.uint8))


def test_unknown_encoding_is_named_with_the_supported_ones():
    msg = Image(height=2, width=2, encoding='16UC1', step=4, data=array.array('B', bytes(8)))
    with pytest.raises(ConversionError) as error:
        image_to_rgb(msg)
    assert "'16UC1'" in str(error.value)
    assert all(name in str(error.value) for name in IMAGE_ENCODING_CHANNELS)
    with pytest.raises(ConversionError, match="'yuv422'"):
        rgb_to_image(random_rgb(), make_header(), 'yuv422')


@pytest.mark.parametrize('height, width', [(0, 0), (0, 5), (3, 0)])
def test_images_without_pixels_are_refused(height, width):
    msg = Image(header=make_header('camera'), height=height, width=width, encoding='rgb8',
                step=3 * width, data=array.array('B'))
    with pytest.raises(ConversionError, match=rf'no pixels \({width} x {height}\)') as error:
        image_to_rgb(msg)
    assert error.value.kind == 'empty'


def test_every_image_rejection_names_its_reason():
    def rejected(**values):
        msg = rgb_to_image(random_rgb(), make_header(), 'rgb8')
        for name, value in values.items():
            setattr(msg, name, value)
        with pytest.raises(ConversionError) as error:
            check_image(msg)
        return error.value.kind

    kinds = {
        'encoding': rejected(encoding='nv12'),
        'empty': rejected(height=0, data=array.array('B')),
        'step': rejected(step=14),
        'data_size': rejected(data=array.array('B', bytes(44))),
    }
    assert set(kinds) == set(IMAGE_REJECTIONS)
    assert all(kind == expected for expected, kind in kinds.items()), kinds
    assert check_image(rgb_to_image(random_rgb(), make_header(), 'bgra8')) == 4


def test_inconsistent_image_layouts_raise():
    msg = rgb_to_image(random_rgb(), make_header(), 'rgb8')
    msg.step = 14
    with pytest.raises(ConversionError, match='step 14 is smaller'):
        image_to_rgb(msg)
    msg = rgb_to_image(random_rgb(), make_header(), 'rgb8')
    msg.data = array.array('B', bytes(msg.data)[:-3])
    with pytest.raises(ConversionError, match='42 bytes, expected step 15 x height 3 = 45'):
        image_to_rgb(msg)
    with pytest.raises(ConversionError, match='uint8'):
        rgb_to_image(random_rgb().astype(np.float32), make_header())
    with pytest.raises(ConversionError, match='RGB pixels'):
        rgb_to_image(random_rgb()[:, :, 0], make_header(), 'bgr8')


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------

def detections():
    """Return boxes (3, 7), scores and names of three detections."""
    boxes = np.array([[10.0, 2.0, -0.9, 4.5, 1.9, 1.6, 0.3],
                      [25.0, -4.0, -0.8, 0.8, 0.7, 1.8, np.pi],
                      [8.0, 6.0, -1.0, 1.8, 0.6, 1.7, -1.2]], dtype=np.float32)
    return boxes, np.array([0.91, 0.55, 0.3], dtype=np.float32), ['Car', 'pedestrian', 'CYCLIST']


@needs_vision_msgs
def test_detections_to_msg():
    from vision_msgs.msg import Detection3DArray

    boxes, scores, names = detections()
    header = make_header()
    msg = detections_to_msg(header, boxes, scores, names)
    msg = deserialize_message(serialize_message(msg), Detection3DArray)
    assert msg.header.frame_id == 'lidar_front'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1616161616, 123456789)
    assert len(msg.detections) == 3
    for detection, box, score, name in zip(msg.detections, boxes, scores, names):
        assert detection.header.frame_id == 'lidar_front'
        assert detection.header.stamp.sec == 1616161616
        assert detection.id == ''
        assert len(detection.results) == 1
        hypothesis = detection.results[0].hypothesis
        assert hypothesis.class_id == name.lower()
        assert hypothesis.score == pytest.approx(score)
        centre = detection.bbox.center
        np.testing.assert_allclose([centre.position.x, centre.position.y, centre.position.z],
                                   box[:3], rtol=1e-6)
        size = detection.bbox.size
        np.testing.assert_allclose([size.x, size.y, size.z], box[3:6], rtol=1e-6)
        q = centre.orientation
        yaw = quaternion_to_yaw([q.x, q.y, q.z, q.w])
        assert wrapped_difference(yaw, box[6]) == pytest.approx(0.0, abs=1e-6)
        assert detection.results[0].pose.pose == centre
    assert detections_to_msg(header, np.zeros((0, 7)), np.zeros(0), []).detections == []
    with pytest.raises(ConversionError, match='differ'):
        detections_to_msg(header, boxes, scores[:2], names)


def test_semantic_to_mono8():
    ids = np.arange(35, dtype=np.uint8).reshape(5, 7)
    ids[0, 0] = IGNORE_INDEX
    msg = semantic_to_mono8(ids, make_header('camera'))
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('mono8', 5, 7, 7)
    assert msg.header.frame_id == 'camera' and msg.header.stamp.sec == 1616161616
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7), ids)
    np.testing.assert_array_equal(image_to_rgb(msg)[:, :, 1], ids)
    with pytest.raises(ConversionError, match='uint8'):
        semantic_to_mono8(np.full((2, 2), 300), make_header())


@pytest.mark.parametrize('layout', ['upsampled', 'noise', 'strided', 'one_row'])
def test_semantic_to_color_equals_a_lookup_per_pixel(layout):
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 40, (30, 50)).astype(np.uint8)
    ids = {'upsampled': np.repeat(np.repeat(ids, 4, axis=0), 3, axis=1), 'noise': ids,
           'strided': np.repeat(ids, 3, axis=0)[::2, ::3], 'one_row': ids[:1]}[layout]
    palette = np.array(SEMANTIC_PALETTE, dtype=np.uint8)
    msg = semantic_to_color(ids, palette, make_header('camera'), ignore_colour=(1, 2, 3))
    lookup = np.tile(np.array([1, 2, 3], np.uint8), (256, 1))
    lookup[:len(palette)] = palette
    assert isinstance(msg.data, array.array)
    assert bytes(msg.data) == lookup[ids].tobytes()
    assert (msg.height, msg.width, msg.step) == (ids.shape[0], ids.shape[1], 3 * ids.shape[1])


def test_semantic_to_color_palette_and_ignore_colour():
    palette = np.array(SEMANTIC_PALETTE, dtype=np.uint8)
    ids = np.array([[0, 1, 37], [IGNORE_INDEX, 38, 2]], dtype=np.uint8)
    msg = semantic_to_color(ids, palette, make_header('camera'), ignore_colour=(1, 2, 3))
    assert msg.encoding == 'rgb8' and msg.header.frame_id == 'camera'
    colours = image_to_rgb(msg)
    np.testing.assert_array_equal(colours[0], palette[[0, 1, 37]])
    np.testing.assert_array_equal(colours[1, :2], [[1, 2, 3], [1, 2, 3]])  # 255 and 38 >= 38
    np.testing.assert_array_equal(colours[1, 2], palette[2])
    assert tuple(colours[0, 0]) == (255, 0, 0)  # 'Car' is #ff0000 in A2D2
    with pytest.raises(ConversionError, match='palette'):
        semantic_to_color(ids, np.zeros((3, 4), np.uint8), make_header())


def test_markers_boxes_labels_and_stale_deletion():
    from visualization_msgs.msg import Marker, MarkerArray

    boxes, scores, names = detections()
    msg = detections_to_markers(make_header(), boxes, scores, names, previous_count=5,
                                class_colours={'car': (255, 0, 0)}, lifetime_s=0.25)
    msg = deserialize_message(serialize_message(msg), MarkerArray)
    added = [m for m in msg.markers if m.action == Marker.ADD]
    deleted = [m for m in msg.markers if m.action == Marker.DELETE]
    assert [m.id for m in added] == list(range(6))
    assert [m.id for m in deleted] == [6, 7, 8, 9]
    assert all(m.ns == 'bev_perception' for m in msg.markers)
    assert all(m.header.frame_id == 'lidar_front' and m.header.stamp.sec == 1616161616
               for m in msg.markers)
    cubes, texts = added[0::2], added[1::2]
    assert all(m.type == Marker.CUBE for m in cubes)
    assert all(m.type == Marker.TEXT_VIEW_FACING for m in texts)
    assert [m.text for m in texts] == ['car 0.91', 'pedestrian 0.55', 'cyclist 0.30']
    assert (cubes[0].scale.x, cubes[0].scale.y) == pytest.approx((4.5, 1.9))
    assert (cubes[0].color.r, cubes[0].color.g, cubes[0].color.b) == (1.0, 0.0, 0.0)
    assert texts[0].pose.position.z > boxes[0, 2] + boxes[0, 5] / 2
    q = cubes[1].pose.orientation
    yaw = quaternion_to_yaw([q.x, q.y, q.z, q.w])  # float32 pi is a hair above pi
    assert wrapped_difference(yaw, np.pi) == pytest.approx(0.0, abs=1e-6)
    assert (cubes[0].lifetime.sec, cubes[0].lifetime.nanosec) == (0, 250000000)
    # fewer previous markers than now: nothing to delete; no detections: delete them all
    fewer = detections_to_markers(make_header(), boxes, scores, names, previous_count=1)
    assert all(m.action == Marker.ADD for m in fewer.markers) and len(fewer.markers) == 6
    cleared = detections_to_markers(make_header(), np.zeros((0, 7)), np.zeros(0), [], 3,
                                    namespace='other')
    assert [(m.id, m.action, m.ns) for m in cleared.markers] == [
        (i, Marker.DELETE, 'other') for i in range(6)]


def round_trip(msg, kind):
    """Return a message serialised and read back (float32 fields rounded as on the wire)."""
    return deserialize_message(serialize_message(msg), kind)


def random_detections(count, seed):
    """Return boxes (count, 7), scores and names; some boxes have a zero length."""
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([rng.uniform(-60, 60, (count, 3)), rng.uniform(0, 5, (count, 3)),
                            rng.uniform(-4, 4, (count, 1))], 1).astype(np.float32)
    boxes[:count // 10, 3] = 0.0
    names = [('Car', 'pedestrian', 'truck', 'bicycle')[i % 4] for i in range(count)]
    return boxes, rng.uniform(0, 1, count).astype(np.float32), names


def reference_detections_msg(header, boxes, scores, class_names):
    """detections_to_msg as one constructor per message (the reference for its fast path)."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    detections = []
    for box, score, name in zip(np.asarray(boxes, np.float64), np.asarray(scores, np.float64),
                                class_names):
        pose = box_to_pose(box)
        result = ObjectHypothesisWithPose()
        result.hypothesis.class_id = str(name).lower()
        result.hypothesis.score = float(score)
        result.pose.pose = pose
        detection = Detection3D(header=header, results=[result])
        detection.bbox.center = pose
        detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z = (
            float(v) for v in box[3:6])
        detections.append(detection)
    return Detection3DArray(header=header, detections=detections)


def reference_markers(header, boxes, scores, class_names, previous_count, colours, lifetime,
                      alpha):
    """detections_to_markers as one constructor per marker (the reference for its fast path)."""
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    markers = []
    for index, (box, score, name) in enumerate(zip(
            np.asarray(boxes, np.float64), np.asarray(scores, np.float64), class_names)):
        name = name.lower()
        red, green, blue = (c / 255.0 for c in colours.get(name, default_class_colour(name)))
        cube = Marker(header=header, ns='bev_perception', id=2 * index, type=Marker.CUBE,
                      action=Marker.ADD, pose=box_to_pose(box), lifetime=lifetime)
        cube.scale.x, cube.scale.y, cube.scale.z = (max(float(v), 1e-3) for v in box[3:6])
        cube.color = ColorRGBA(r=red, g=green, b=blue, a=alpha)
        text = Marker(header=header, ns='bev_perception', id=2 * index + 1,
                      type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, lifetime=lifetime,
                      text=f'{name} {score:.2f}')
        text.pose.position.x, text.pose.position.y = float(box[0]), float(box[1])
        text.pose.position.z = float(box[2] + 0.5 * box[5] + 0.5)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.8
        text.color = ColorRGBA(r=red, g=green, b=blue, a=1.0)
        markers.extend([cube, text])
    for stale_id in range(2 * len(boxes), 2 * previous_count):
        markers.append(Marker(header=header, ns='bev_perception', id=stale_id,
                              action=Marker.DELETE))
    return MarkerArray(markers=markers)


def test_boxes_to_poses_equals_box_to_pose():
    boxes, _, _ = random_detections(200, 0)
    boxes[:8, 6] = [np.pi, -np.pi, 0.0, -0.0, 1e-9, np.pi / 2, 3.1415925, -3.1415925]
    assert boxes_to_poses(boxes) == [box_to_pose(box) for box in boxes.astype(np.float64)]
    assert boxes_to_poses(np.zeros((0, 7))) == []


@needs_vision_msgs
@pytest.mark.parametrize('count', [0, 1, 100])
def test_detection_messages_equal_one_constructor_per_message(count):
    from builtin_interfaces.msg import Duration
    from vision_msgs.msg import Detection3DArray
    from visualization_msgs.msg import MarkerArray

    boxes, scores, names = random_detections(count, count)
    header = make_header()
    msg = detections_to_msg(header, boxes, scores, names)
    reference = reference_detections_msg(header, boxes, scores, names)
    assert msg == reference
    assert round_trip(msg, Detection3DArray) == round_trip(reference, Detection3DArray)
    for detection in msg.detections:
        assert detection.results[0].pose.pose is detection.bbox.center
    if count > 1:  # no covariance array shared between detections
        assert msg.detections[0].results[0].pose.covariance is not (
            msg.detections[1].results[0].pose.covariance)
    colours = {'car': (255, 0, 0)}
    markers = detections_to_markers(header, boxes, scores, names, previous_count=count + 3,
                                    class_colours=colours, lifetime_s=0.25, box_alpha=0.5)
    reference = reference_markers(header, boxes, scores, names, count + 3, colours,
                                  Duration(sec=0, nanosec=250000000), 0.5)
    assert markers == reference
    assert round_trip(markers, MarkerArray) == round_trip(reference, MarkerArray)
    if count > 1:  # each marker has its own pose, colour and lists
        first, second = markers.markers[0], markers.markers[2]
        assert first.pose is not second.pose and first.color is not second.color
        assert first.points is not second.points


def test_marker_colours_are_stable_per_class():
    boxes, scores, names = detections()
    first = detections_to_markers(make_header(), boxes, scores, names, 0)
    again = detections_to_markers(make_header(), boxes[::-1], scores[::-1], names[::-1], 0)
    assert first.markers[0].color == again.markers[4].color  # 'car' in both
    assert first.markers[0].color != first.markers[2].color


@needs_vision_msgs
def test_label_info_msg():
    from vision_msgs.msg import LabelInfo

    msg = label_info_msg(make_header('base_link'), ('car', 'truck', 'pedestrian'), 0.35)
    msg = deserialize_message(serialize_message(msg), LabelInfo)
    assert msg.header.frame_id == 'base_link'
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [
        (0, 'car'), (1, 'truck'), (2, 'pedestrian')]
    assert msg.threshold == pytest.approx(0.35)
