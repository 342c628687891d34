"""Pure conversions between ROS 2 messages and numpy arrays, and result message builders.

No node and no ROS graph: every function takes messages or arrays and returns messages or
arrays, so the node, the demo, the bag tools and the tests share one implementation.

``sensor_msgs``, ``std_msgs`` and ``geometry_msgs`` are imported at module level (they ship with
every ROS 2 install and with rclpy's wheels). ``vision_msgs`` and ``visualization_msgs`` are
imported inside the builders that need them, so the numpy conversions work without them.

Boxes are float32 arrays (K, 7): x, y, z (geometric centre, m), length, width, height (m, along
the box x/y/z axes), yaw (rad about +z, in (-pi, pi]).
"""

import array
import copy
from dataclasses import dataclass
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple
import zlib

from bev_perception.geometry import yaw_to_quaternion
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion, Vector3
import numpy as np
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header


#: Why a PointCloud2 is refused (``ConversionError.kind``): a requested field is absent, named
#: twice, of an unknown datatype, of count != 1 or past point_step; point_step is 0, row_step
#: shorter than a row, or the data length disagrees with the layout.
CLOUD_REJECTIONS: Tuple[str, ...] = (
    'missing_field', 'duplicate_field', 'unknown_datatype', 'field_count', 'field_offset',
    'point_step', 'row_step', 'data_size')
#: Why an Image is refused (``ConversionError.kind``): an encoding not read here, no pixels
#: (height or width 0), step shorter than a row, or the data length disagrees with the layout.
IMAGE_REJECTIONS: Tuple[str, ...] = ('encoding', 'empty', 'step', 'data_size')


class ConversionError(ValueError):
    """A message cannot be converted: missing field, unsupported encoding or bad layout.

    Attributes:
        kind: why, for messages read by the node: one of CLOUD_REJECTIONS or IMAGE_REJECTIONS
            ('invalid' for the message builders' argument errors).
        field: the PointCloud2 field concerned, or '' when the problem is not one field's.
    """

    def __init__(self, message: str, kind: str = 'invalid', field: str = '') -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


#: numpy base type of each PointField datatype constant.
POINT_FIELD_DTYPES: Dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}

#: Channels per pixel of the image encodings image_to_rgb() reads and rgb_to_image() writes.
IMAGE_ENCODING_CHANNELS: Dict[str, int] = {
    'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1,
}

DEFAULT_POINT_FIELDS: Tuple[str, ...] = ('x', 'y', 'z', 'intensity')

#: Constructor keyword with which rclpy messages store an ``array.array('B')`` given to a
#: uint8[] field as is. rosidl versions that have it (Kilted's, for one) check no fields by
#: default and then copy the array once more; older ones (Humble) always check, store it as is
#: and have no such keyword. The checks it turns on are per field, not per element.
KEEP_BYTE_ARRAYS: Dict[str, bool] = (
    {'check_fields': True} if '_check_fields' in getattr(Image, '__slots__', ()) else {})


def byte_array(values: np.ndarray) -> array.array:
    """Return the bytes of an array (C order) as the ``array.array('B')`` rclpy keeps for uint8[].

    One copy for a C-contiguous array (``tobytes`` then ``array.array`` would be two).
    """
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(values).reshape(-1).view(np.uint8))
    return data


@dataclass(frozen=True)
class CloudArray:
    """Points read from a PointCloud2 and what was dropped on the way.

    Attributes:
        points: (N, k) float32, one column per requested field, non-finite rows removed.
        num_input_points: width * height of the message.
        num_non_finite: rows dropped because a requested value was NaN or +-inf.
    """

    points: np.ndarray
    num_input_points: int
    num_non_finite: int


# --------------------------------------------------------------------------------------------
# PointCloud2
# --------------------------------------------------------------------------------------------

def _field_byte_order(msg: PointCloud2) -> str:
    return '>' if msg.is_bigendian else '<'


def _structured_point_dtype(msg: PointCloud2, names: Sequence[str]) -> np.dtype:
    """Return a structured dtype (itemsize = point_step) holding only the named fields."""
    by_name: Dict[str, List[PointField]] = {}
    for field in msg.fields:
        by_name.setdefault(field.name, []).append(field)
    formats = []
    offsets = []
    for name in names:
        if name not in by_name:
            present = ', '.join(repr(field.name) for field in msg.fields) or 'none'
            raise ConversionError(
                f'PointCloud2 has no field {name!r}; fields present: {present}',
                'missing_field', name)
        if len(by_name[name]) > 1:  # which one is meant? Reading either could be wrong.
            raise ConversionError(
                f'PointCloud2 has {len(by_name[name])} fields named {name!r} (offsets '
                + ', '.join(str(field.offset) for field in by_name[name])
                + '): ambiguous layout', 'duplicate_field', name)
        field = by_name[name][0]
        if field.datatype not in POINT_FIELD_DTYPES:
            raise ConversionError(
                f'PointCloud2 field {name!r} has unknown datatype {field.datatype}',
                'unknown_datatype', name)
        if field.count != 1:
            raise ConversionError(
                f'PointCloud2 field {name!r} has count {field.count}; only fields with '
                'count 1 can be read as a column', 'field_count', name)
        base = POINT_FIELD_DTYPES[field.datatype].newbyteorder(_field_byte_order(msg))
        if msg.point_step <= 0:
            raise ConversionError(f'PointCloud2 point_step is {msg.point_step}', 'point_step')
        if field.offset + base.itemsize > msg.point_step:
            raise ConversionError(
                f'PointCloud2 field {name!r} (offset {field.offset}, {base.itemsize} bytes) '
                f'does not fit in point_step {msg.point_step}', 'field_offset', name)
        formats.append(base)
        offsets.append(field.offset)
    return np.dtype({'names': list(names), 'formats': formats, 'offsets': offsets,
                     'itemsize': msg.point_step})


def _check_cloud_layout(msg: PointCloud2) -> None:
    num_points = msg.width * msg.height
    if num_points == 0:
        return
    if msg.point_step <= 0:
        raise ConversionError(
            f'PointCloud2 point_step is {msg.point_step} for {num_points} points', 'point_step')
    if msg.row_step < msg.width * msg.point_step:
        raise ConversionError(
            f'PointCloud2 row_step {msg.row_step} is smaller than width {msg.width} x '
            f'point_step {msg.point_step}', 'row_step')
    expected = msg.row_step * msg.height
    if len(msg.data) != expected:
        raise ConversionError(
            f'PointCloud2 data has {len(msg.data)} bytes, expected row_step {msg.row_step} x '
            f'height {msg.height} = {expected}', 'data_size')


def pointcloud2_to_structured(msg: PointCloud2, fields: Sequence[str]) -> np.ndarray:
    """Return the named fields of a PointCloud2 as a structured array (N,), rows flattened.

    A view of ``msg.data`` (no copy) unless rows are padded (``row_step > width * point_step``),
    where flattening copies. Values keep their wire dtype and byte order.

    Raises:
        ConversionError: a requested field is missing, named more than once, of an unknown
            datatype, has count != 1 or lies past point_step, or the layout is inconsistent
            (``kind`` says which, one of CLOUD_REJECTIONS).
    """
    if len(set(fields)) != len(fields):
        raise ConversionError(f'requested PointCloud2 fields repeat a name: {tuple(fields)}')
    point_dtype = _structured_point_dtype(msg, fields)
    _check_cloud_layout(msg)
    num_points = msg.width * msg.height
    if num_points == 0:
        return np.zeros(0, dtype=point_dtype)
    buffer = memoryview(msg.data).cast('B')
    if msg.row_step == msg.width * msg.point_step:
        return np.frombuffer(buffer, dtype=point_dtype, count=num_points)
    rows = np.ndarray(shape=(msg.height, msg.width), dtype=point_dtype, buffer=buffer,
                      strides=(msg.row_step, msg.point_step))  # (H, W), rows padded
    return rows.reshape(-1)  # (H * W,) copy: padded rows cannot be flattened in place


def _float32_column_view(structured: np.ndarray) -> Optional[np.ndarray]:
    """Return an (N, k) float32 view when the fields are native float32 and adjacent."""
    dtype = structured.dtype
    first_offset = None
    for index, name in enumerate(dtype.names):
        field_dtype, offset = dtype.fields[name][:2]
        if field_dtype != np.dtype(np.float32) or not field_dtype.isnative:
            return None
        if first_offset is None:
            first_offset = offset
        if offset != first_offset + 4 * index:
            return None
    base = structured.view(np.uint8).reshape(len(structured), dtype.itemsize)  # (N, step)
    return np.ndarray(shape=(len(structured), len(dtype.names)), dtype=np.float32,
                      buffer=base, offset=first_offset,
                      strides=(base.strides[0], 4))  # (N, k)


def pointcloud2_to_array_with_stats(
        msg: PointCloud2, fields: Sequence[str] = DEFAULT_POINT_FIELDS) -> CloudArray:
    """Read the named fields of a PointCloud2 as float32 columns and count dropped points.

    Fields are found by name and read by their datatype (any of the 8 PointField types,
    ``count`` must be 1), honouring ``point_step``, ``row_step`` padding, ``is_bigendian`` and
    organised clouds (height > 1, flattened row-major). Rows with a non-finite requested value
    are dropped. When the requested fields are native-endian float32 at adjacent offsets,
    unpadded, and every value is finite, ``points`` is a view of ``msg.data`` (no copy).

    Args:
        msg: the cloud.
        fields: names of the columns to return, in order.

    Returns:
        CloudArray with points (N, k) float32.

    Raises:
        ConversionError: a field is missing (the message names the fields present), named
            more than once, has count != 1, or data length disagrees with
            width/height/row_step/point_step (``kind``: one of CLOUD_REJECTIONS).
    """
    structured = pointcloud2_to_structured(msg, fields)
    num_input = len(structured)
    points = _float32_column_view(structured)
    if points is None:
        points = np.empty((num_input, len(fields)), dtype=np.float32)  # (N, k)
        for column, name in enumerate(fields):
            points[:, column] = structured[name]
    finite_values = np.isfinite(points)  # (N, k)
    num_non_finite = 0
    if not finite_values.all():
        finite_rows = np.ones(num_input, dtype=bool)
        for column in finite_values.T:  # a few column passes instead of .all(axis=1) per row
            finite_rows &= column
        num_non_finite = int(num_input - np.count_nonzero(finite_rows))
        points = points[finite_rows]
    return CloudArray(points=points, num_input_points=num_input, num_non_finite=num_non_finite)


def pointcloud2_to_array(
        msg: PointCloud2, fields: Sequence[str] = DEFAULT_POINT_FIELDS) -> np.ndarray:
    """Return the named fields of a PointCloud2 as (N, k) float32, non-finite rows dropped.

    See pointcloud2_to_array_with_stats() for the rules and the errors raised.
    """
    return pointcloud2_to_array_with_stats(msg, fields).points


def _point_field_datatype(dtype: np.dtype) -> int:
    for datatype, base in POINT_FIELD_DTYPES.items():
        if dtype.base.newbyteorder('=') == base:
            return datatype
    raise ConversionError(f'dtype {dtype} has no PointField datatype')


def structured_to_pointcloud2(points: np.ndarray, header: Header) -> PointCloud2:
    """Build a PointCloud2 from a numpy structured array.

    A 1-D array gives an unorganised cloud (height 1); a 2-D (H, W) array an organised one.
    Field offsets, padding (``itemsize`` larger than the fields) and the byte order of the
    dtype are kept; all fields must share one byte order. A field with a 1-D subarray shape
    (e.g. ``('rgb', 'u1', 3)``) becomes a PointField with that count.

    Raises:
        ConversionError: the dtype has no fields, mixed byte orders or unsupported types.
    """
    dtype = points.dtype
    if dtype.names is None:
        raise ConversionError('structured_to_pointcloud2 needs a structured array')
    if points.ndim not in (1, 2):
        raise ConversionError(f'expected a 1-D or 2-D structured array, got {points.ndim}-D')
    fields = []
    byte_orders = set()
    for name in dtype.names:
        field_dtype, offset = dtype.fields[name][:2]
        if len(field_dtype.shape) > 1:
            raise ConversionError(f'field {name!r} has a multi-dimensional shape')
        count = field_dtype.shape[0] if field_dtype.shape else 1
        base = field_dtype.base
        if base.itemsize > 1:
            native = '<' if sys.byteorder == 'little' else '>'
            byte_orders.add(native if base.byteorder == '=' else base.byteorder)
        fields.append(PointField(name=name, offset=offset,
                                 datatype=_point_field_datatype(base), count=count))
    if len(byte_orders) > 1:
        raise ConversionError('all fields of a PointCloud2 must share one byte order')
    height, width = (1, points.shape[0]) if points.ndim == 1 else points.shape
    msg = PointCloud2(header=header, height=height, width=width, fields=fields,
                      is_bigendian=byte_orders == {'>'}, point_step=dtype.itemsize,
                      row_step=dtype.itemsize * width, **KEEP_BYTE_ARRAYS)
    float_names = [name for name in dtype.names if dtype.fields[name][0].base.kind == 'f']
    msg.is_dense = bool(all(np.isfinite(points[name]).all() for name in float_names))
    msg.data = byte_array(points)
    return msg


def array_to_pointcloud2(points: np.ndarray, header: Header,
                         fields: Sequence[str] = DEFAULT_POINT_FIELDS) -> PointCloud2:
    """Build an unorganised little-endian PointCloud2 of float32 fields from (N, k) values.

    Args:
        points: (N, k) values, cast to float32.
        header: header copied into the message (stamp and frame).
        fields: k field names, in column order.
    """
    values = np.asarray(points, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != len(fields):
        raise ConversionError(
            f'points of shape {values.shape} do not match {len(fields)} fields {tuple(fields)}')
    point_dtype = np.dtype({'names': list(fields), 'formats': ['<f4'] * len(fields)})
    structured = np.empty(values.shape[0], dtype=point_dtype)
    structured.view('<f4').reshape(values.shape)[:] = values  # (N, k) into (N,) records
    return structured_to_pointcloud2(structured, header)


# --------------------------------------------------------------------------------------------
# Image
# --------------------------------------------------------------------------------------------

def _supported_encodings() -> str:
    return ', '.join(IMAGE_ENCODING_CHANNELS)


def check_image(msg: Image) -> int:
    """Check that an Image can be read by image_to_rgb(); return its channels per pixel.

    The one validation of camera images, shared by the node, the bag tools and the benchmark.

    Raises:
        ConversionError: unsupported encoding (the message lists the supported ones), no
            pixels (height or width 0), or ``step``/data length inconsistent with width and
            height (``kind``: one of IMAGE_REJECTIONS).
    """
    encoding = msg.encoding.lower()
    if encoding not in IMAGE_ENCODING_CHANNELS:
        raise ConversionError(
            f'unsupported image encoding {msg.encoding!r}; supported: {_supported_encodings()}',
            'encoding')
    channels = IMAGE_ENCODING_CHANNELS[encoding]
    height, width = msg.height, msg.width
    if height == 0 or width == 0:
        raise ConversionError(f'image has no pixels ({width} x {height})', 'empty')
    if msg.step < width * channels:
        raise ConversionError(
            f'image step {msg.step} is smaller than width {width} x {channels} channels',
            'step')
    if len(msg.data) != msg.step * height:
        raise ConversionError(
            f'image data has {len(msg.data)} bytes, expected step {msg.step} x height {height} '
            f'= {msg.step * height}', 'data_size')
    return channels


def image_to_rgb(msg: Image) -> np.ndarray:
    """Return an Image message as (H, W, 3) uint8 RGB.

    Reads rgb8, bgr8, rgba8, bgra8 and mono8 with any row padding (``step > width * channels``).
    For rgb8, bgr8, rgba8 and bgra8 the result is a view of ``msg.data`` (no copy; possibly
    non-contiguous, with a negative channel stride for bgr: call ``np.ascontiguousarray``
    before ``torch.from_numpy``, and copy before writing). mono8 is replicated into a new array.
    ``is_bigendian`` does not matter for these 8-bit encodings.

    Raises:
        ConversionError: see check_image(): unsupported encoding, an image without pixels, or
            ``step``/data length inconsistent with width and height.
    """
    channels = check_image(msg)
    encoding = msg.encoding.lower()
    height, width = msg.height, msg.width
    pixels = np.ndarray(shape=(height, width, channels), dtype=np.uint8,
                        buffer=memoryview(msg.data).cast('B'),
                        strides=(msg.step, channels, 1))  # (H, W, C) view
    if encoding == 'rgb8':
        return pixels
    if encoding == 'bgr8':
        return pixels[:, :, ::-1]
    if encoding == 'rgba8':
        return pixels[:, :, :3]
    if encoding == 'bgra8':
        return pixels[:, :, 2::-1]
    return np.repeat(pixels, 3, axis=2)  # mono8: (H, W, 1) -> (H, W, 3)


def rgb_to_image(rgb: np.ndarray, header: Header, encoding: str = 'rgb8') -> Image:
    """Build an Image message (no row padding) from RGB pixels.

    Args:
        rgb: (H, W, 3) uint8 RGB, or (H, W) uint8 intensities when ``encoding`` is mono8.
        header: header copied into the message.
        encoding: rgb8, bgr8, rgba8 (alpha 255), bgra8 (alpha 255) or mono8.
    """
    if encoding not in IMAGE_ENCODING_CHANNELS:
        raise ConversionError(
            f'unsupported image encoding {encoding!r}; supported: {_supported_encodings()}')
    pixels = np.asarray(rgb)
    if pixels.dtype != np.uint8:
        raise ConversionError(f'image pixels must be uint8, got {pixels.dtype}')
    if encoding == 'mono8':
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        if pixels.ndim != 2:
            raise ConversionError(f'mono8 needs (H, W) pixels, got shape {pixels.shape}')
        data = pixels
    else:
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ConversionError(f'{encoding} needs (H, W, 3) RGB pixels, got {pixels.shape}')
        if encoding.startswith('bgr'):
            pixels = pixels[:, :, ::-1]
        if encoding.endswith('a8'):
            alpha = np.full(pixels.shape[:2] + (1,), 255, dtype=np.uint8)
            pixels = np.concatenate([pixels, alpha], axis=2)  # (H, W, 4)
        data = pixels
    height, width = data.shape[:2]
    return _image_msg(header, height, width, encoding, byte_array(data))


def _image_msg(header: Header, height: int, width: int, encoding: str,
               data: array.array) -> Image:
    """Return an Image without row padding that stores ``data`` without copying it."""
    msg = Image(header=header, height=height, width=width, encoding=encoding,
                is_bigendian=False, step=width * IMAGE_ENCODING_CHANNELS[encoding],
                **KEEP_BYTE_ARRAYS)
    msg.data = data
    return msg


def _check_semantic_ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ConversionError(f'semantic ids must be (H, W), got shape {ids.shape}')
    if ids.dtype != np.uint8:
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ConversionError('semantic ids must fit in uint8 (0..255)')
        ids = ids.astype(np.uint8)
    return ids


def semantic_to_mono8(ids: np.ndarray, header: Header) -> Image:
    """Build a mono8 Image whose pixel values are the class ids (H, W) uint8."""
    return rgb_to_image(_check_semantic_ids(ids), header, encoding='mono8')


def semantic_to_color(ids: np.ndarray, palette: np.ndarray, header: Header,
                      ignore_colour: Tuple[int, int, int] = (0, 0, 0)) -> Image:
    """Build an rgb8 Image colouring class ids with a palette.

    Args:
        ids: (H, W) uint8 class ids.
        palette: (n, 3) uint8 RGB per class id, n <= 256.
        header: header copied into the message (the camera image's).
        ignore_colour: RGB for ids >= n (e.g. the ignore index 255).
    """
    ids = _check_semantic_ids(ids)
    colours = np.asarray(palette, dtype=np.uint8)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) > 256:
        raise ConversionError(f'palette must be (n <= 256, 3), got shape {colours.shape}')
    lookup = np.empty((256, 3), dtype=np.uint8)
    lookup[:] = np.asarray(ignore_colour, dtype=np.uint8)
    lookup[:len(colours)] = colours
    height, width = ids.shape
    data = array.array('B', [0]) * (height * width * 3)
    rgb = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)  # the message's pixels
    # A row equal to the one above (most rows of a nearest-neighbour upsampling, as the node's
    # ids are) is copied whole instead of looked up pixel by pixel.
    new_row = np.ones(height, dtype=bool)
    np.any(ids[1:] != ids[:-1], axis=1, out=new_row[1:])
    first_rows = np.flatnonzero(new_row)
    # np.take on axis 0 gathers whole colours (lookup[ids] goes element by element); 'clip' (the
    # indices are in range) writes straight into ``out`` instead of a buffer.
    if len(first_rows) == height:
        np.take(lookup, ids, axis=0, out=rgb, mode='clip')
    else:
        distinct = np.take(lookup, ids[first_rows], axis=0, mode='clip')  # (rows, W, 3)
        np.take(distinct, np.cumsum(new_row) - 1, axis=0, out=rgb, mode='clip')
    return _image_msg(header, height, width, 'rgb8', data)


# --------------------------------------------------------------------------------------------
# Detections
# --------------------------------------------------------------------------------------------

def _check_detections(boxes: np.ndarray, scores: np.ndarray,
                      class_names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)  # (K, 7)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)  # (K,)
    if not len(boxes) == len(scores) == len(class_names):
        raise ConversionError(
            f'{len(boxes)} boxes, {len(scores)} scores and {len(class_names)} class names differ')
    return boxes, scores


def box_to_pose(box: Sequence[float]) -> Pose:
    """Return the Pose of a box (7,): its centre and the yaw quaternion."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in box[:3])
    qx, qy, qz, qw = yaw_to_quaternion(float(box[6]))
    pose.orientation.x, pose.orientation.y = float(qx), float(qy)
    pose.orientation.z, pose.orientation.w = float(qz), float(qw)
    return pose


def boxes_to_poses(boxes: np.ndarray, quaternions: Optional[np.ndarray] = None) -> List[Pose]:
    """Return the poses of boxes (K, 7), with the numpy work done once for all.

    The orientation is ``quaternions`` (K, 4) x, y, z, w when given, else the yaw's.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    if quaternions is None:
        quaternions = yaw_to_quaternion(boxes[:, 6])
    quaternions = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4).tolist()
    return [Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
            for (x, y, z), (qx, qy, qz, qw) in zip(boxes[:, :3].tolist(), quaternions)]


def detections_to_msg(header: Header, boxes: np.ndarray, scores: np.ndarray,
                      class_names: Sequence[str], quaternions: Optional[np.ndarray] = None):
    """Build a vision_msgs/Detection3DArray.

    Args:
        header: the cloud's header; copied into the array and every detection.
        boxes: (K, 7) boxes in the header's frame.
        scores: (K,) confidences in [0, 1].
        class_names: K class names, written lower-case as ``hypothesis.class_id``.
        quaternions: (K, 4) x, y, z, w box orientations; None: the yaw column's.

    Each detection has one result whose ``pose.pose`` is the box pose (the same Pose object as
    ``bbox.center``); ``bbox.size`` is (length, width, height); ``Detection3D.id`` (a tracking
    id) is left empty. The detections are shallow copies of one built with the header (a
    message constructor builds every default sub-message first), so they share it.
    """
    from vision_msgs.msg import (BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose)

    boxes, scores = _check_detections(boxes, scores, class_names)
    detection_template = Detection3D(header=header)
    bbox_template = BoundingBox3D()
    result_template = ObjectHypothesisWithPose()
    detections = []
    for pose, box, score, name in zip(boxes_to_poses(boxes, quaternions), boxes.tolist(),
                                      scores.tolist(), class_names):
        result = copy.copy(result_template)
        result.hypothesis = ObjectHypothesis(class_id=str(name).lower(), score=score)
        result.pose = PoseWithCovariance(pose=pose)  # its own covariance array
        bbox = copy.copy(bbox_template)
        bbox.center = pose
        bbox.size = Vector3(x=box[3], y=box[4], z=box[5])
        detection = copy.copy(detection_template)
        detection.results = [result]
        detection.bbox = bbox
        detections.append(detection)
    return Detection3DArray(header=header, detections=detections)


#: Colours for class names without an explicit colour, picked by a stable hash of the name.
_FALLBACK_COLOURS: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)


def default_class_colour(class_name: str) -> Tuple[int, int, int]:
    """Return a fixed RGB colour for a class name (the same in every process)."""
    index = zlib.crc32(class_name.lower().encode('utf-8')) % len(_FALLBACK_COLOURS)
    return _FALLBACK_COLOURS[index]


def detections_to_markers(header: Header, boxes: np.ndarray, scores: np.ndarray,
                          class_names: Sequence[str], previous_count: int,
                          class_colours: Optional[Mapping[str, Sequence[int]]] = None,
                          namespace: str = 'bev_perception', lifetime_s: float = 0.0,
                          box_alpha: float = 0.4, quaternions: Optional[np.ndarray] = None):
    """Build a visualization_msgs/MarkerArray of boxes and labels for stock RViz2.

    Detection i gets a translucent CUBE with id 2 * i and a TEXT_VIEW_FACING label
    ("car 0.87") with id 2 * i + 1 above the box, both in ``namespace``. Stale markers are
    removed with explicit DELETE actions for the ids 2 * K .. 2 * previous_count - 1 (rather
    than a DELETEALL first, which would make every marker flicker and clear other namespaces on
    older RViz2): pass ``previous_count`` = the number of detections published last time.
    The markers share the header, the lifetime and their (empty) texture and mesh_file
    messages: copy one before changing it in place.

    Args:
        header: the cloud's header.
        boxes: (K, 7) boxes in the header's frame.
        scores: (K,) confidences, shown in the labels.
        class_names: K class names, shown lower-case.
        previous_count: detections in the previous MarkerArray of this namespace.
        class_colours: RGB 0..255 per lower-case class name; others use default_class_colour().
        namespace: marker namespace.
        lifetime_s: marker lifetime in seconds; 0 keeps markers until deleted.
        box_alpha: opacity of the cubes.
        quaternions: (K, 4) x, y, z, w box orientations; None: the yaw column's.
    """
    from visualization_msgs.msg import Marker, MarkerArray

    boxes, scores = _check_detections(boxes, scores, class_names)
    colours = {name.lower(): tuple(rgb) for name, rgb in (class_colours or {}).items()}
    lifetime_sec, lifetime_nanosec = divmod(int(round(max(lifetime_s, 0.0) * 1e9)), 10**9)
    lifetime = Duration(sec=lifetime_sec, nanosec=lifetime_nanosec)
    # Shallow copies of these (a Marker constructor builds its ten default sub-messages
    # first), each given its own pose, scale, colour and lists.
    cube_template = Marker(header=header, ns=namespace, type=Marker.CUBE, action=Marker.ADD,
                           lifetime=lifetime)
    text_template = Marker(header=header, ns=namespace, type=Marker.TEXT_VIEW_FACING,
                           action=Marker.ADD, lifetime=lifetime)
    rgb_by_name: Dict[str, Tuple[float, float, float]] = {}
    markers = []
    for index, (pose, box, score, name) in enumerate(zip(
            boxes_to_poses(boxes, quaternions), boxes.tolist(), scores.tolist(), class_names)):
        name = str(name).lower()
        if name not in rgb_by_name:
            rgb_by_name[name] = tuple(
                c / 255.0 for c in colours.get(name, default_class_colour(name)))
        red, green, blue = rgb_by_name[name]
        cube = _marker_from(cube_template, 2 * index)
        cube.pose = pose
        cube.scale = Vector3(x=max(box[3], 1e-3), y=max(box[4], 1e-3), z=max(box[5], 1e-3))
        cube.color = ColorRGBA(r=red, g=green, b=blue, a=float(box_alpha))
        text = _marker_from(text_template, 2 * index + 1)
        text.text = f'{name} {score:.2f}'
        text.pose = Pose(position=Point(x=box[0], y=box[1], z=box[2] + 0.5 * box[5] + 0.5),
                         orientation=Quaternion(w=1.0))
        text.scale = Vector3(z=0.8)  # text height, m
        text.color = ColorRGBA(r=red, g=green, b=blue, a=1.0)
        markers.extend([cube, text])
    stale_ids = range(2 * len(boxes), 2 * max(int(previous_count), 0))
    if stale_ids:
        delete_template = Marker(header=header, ns=namespace, action=Marker.DELETE)
        markers.extend(_marker_from(delete_template, stale_id) for stale_id in stale_ids)
    return MarkerArray(markers=markers)


def _marker_from(template, marker_id: int):
    """Return a shallow copy of a Marker with ``marker_id`` and its own (empty) lists."""
    marker = copy.copy(template)
    marker.id = marker_id
    marker.points, marker.colors, marker.uv_coordinates = [], [], []
    return marker


def label_info_msg(header: Header, class_names: Sequence[str], threshold: float = 0.0):
    """Build a vision_msgs/LabelInfo mapping class id i to ``class_names[i]``.

    Args:
        header: header of the message (frame and stamp of the publishing node).
        class_names: names in class-id order.
        threshold: the detection score threshold in use (float32 on the wire).
    """
    from vision_msgs.msg import LabelInfo, VisionClass

    if len(class_names) > 65536:
        raise ConversionError('LabelInfo class ids are uint16: at most 65536 classes')
    class_map = [VisionClass(class_id=index, class_name=str(name))
                 for index, name in enumerate(class_names)]
    return LabelInfo(header=header, class_map=class_map, threshold=float(threshold))
