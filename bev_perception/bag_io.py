"""rosbag2 files without a ROS install: a typestore with vision_msgs, a reader and a writer.

Bags are read and written with the pure-Python ``rosbags`` library (sqlite3 and mcap storage,
rosbag2 format version 8). Its typestores know the standard ROS 2 messages but not
``vision_msgs``; ``make_typestore`` registers those from their ``.msg`` definitions, found under
``share/vision_msgs/msg`` of every prefix in ``AMENT_PREFIX_PATH`` (a ROS install, or this
project's build in ``.ros_interfaces``) and, when running from a source checkout, in
``interfaces/vision_msgs/msg``. Bags written here embed every message definition, so any
rosbag2 reader can decode them; bags read here may bring their own definitions, which are
registered too.

Messages read from a bag are ``rosbags`` objects. They have the same field names as rclpy
messages (``bev_perception.conversions`` reads both); ``MessageFactory`` builds the ``rosbags``
objects a writer needs from numpy arrays.

Topics of a converted A2D2 scene (``DEFAULT_TOPICS``; stamps are the recorded TAI times):

* ``/a2d2/lidar/points`` sensor_msgs/PointCloud2: float32 x, y, z (m, camera view frame),
  intensity (raw reflectance 0..255) and time (s after the header stamp = sweep start).
* ``/a2d2/camera/front_center/image_raw`` sensor_msgs/Image rgb8 (distorted original) and
  ``/a2d2/camera/front_center/camera_info`` sensor_msgs/CameraInfo (plumb_bob).
* ``/a2d2/ground_truth/detections`` vision_msgs/Detection3DArray with the cloud's header and
  ``/a2d2/ground_truth/semantic`` mono8 category ids (255 ignore) with the image's header.
* ``/tf_static`` tf2_msgs/TFMessage: vehicle -> camera view -> camera optical frame.
"""

from dataclasses import dataclass
import math
import os
from pathlib import Path
import shutil
import struct
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from bev_perception.geometry import quaternion_to_yaw, rotation_to_quaternion
import numpy as np
from rosbags.interfaces import (MessageDefinitionFormat, Qos, QosDurability, QosHistory,
                                QosLiveliness, QosReliability, QosTime)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import get_types_from_idl, get_types_from_msg, get_typestore, Stores
from rosbags.typesys.store import Typestore

PathLike = Union[str, os.PathLike]

#: The ROS 2 distribution whose message definitions seed the typestore (the messages used here
#: are identical, type hashes included, from Humble to Kilted).
BASE_STORE = Stores.ROS2_HUMBLE
#: rosbag2 metadata version written (Jazzy's; readable by rosbag2 from Jazzy on and rosbags).
BAG_VERSION = 8
STORAGE_PLUGINS = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
#: Interface packages whose .msg files are registered when the typestore lacks them.
EXTRA_PACKAGES = ('vision_msgs',)

POINTCLOUD_TYPE = 'sensor_msgs/msg/PointCloud2'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
DETECTIONS_TYPE = 'vision_msgs/msg/Detection3DArray'
TF_TYPE = 'tf2_msgs/msg/TFMessage'


@dataclass(frozen=True)
class BagTopics:
    """Topic names of a converted A2D2 scene (and the evaluator's defaults)."""

    pointcloud: str = '/a2d2/lidar/points'
    image: str = '/a2d2/camera/front_center/image_raw'
    camera_info: str = '/a2d2/camera/front_center/camera_info'
    gt_detections: str = '/a2d2/ground_truth/detections'
    gt_semantic: str = '/a2d2/ground_truth/semantic'
    tf_static: str = '/tf_static'


DEFAULT_TOPICS = BagTopics()

#: Frame ids written by the converter.
VEHICLE_FRAME = 'a2d2_vehicle'
CAMERA_VIEW_FRAME = 'a2d2_cam_front_center_view'
CAMERA_OPTICAL_FRAME = 'a2d2_cam_front_center_optical'

#: PointField datatype constants (sensor_msgs/PointField).
POINT_FIELD_FLOAT32 = 7


class BagError(Exception):
    """A bag cannot be used; the message names the bag file or topic and the problem."""


class BagMessage(NamedTuple):
    """One message of a bag: topic, type, log time (ns) and the decoded message or raw CDR."""

    topic: str
    msgtype: str
    log_time_ns: int
    message: object


# ------------------------------------------------------------------------------- typestore

def interface_msg_dirs(package: str, ament_prefix_path: Optional[str] = None) -> List[Path]:
    """Return the folders holding ``package``'s .msg files, most specific first.

    Every ``<prefix>/share/<package>/msg`` of ``ament_prefix_path`` (default: the
    ``AMENT_PREFIX_PATH`` variable) that exists: a sourced ROS 2 install, or the checkout's
    build of the definitions that ``env.sh`` puts on the path.
    """
    text = os.environ.get('AMENT_PREFIX_PATH', '') if ament_prefix_path is None \
        else ament_prefix_path
    folders = [Path(prefix) / 'share' / package / 'msg'
               for prefix in text.split(os.pathsep) if prefix]
    found = []
    for folder in folders:
        if folder.is_dir() and any(folder.glob('*.msg')) and folder not in found:
            found.append(folder)
    return found


def register_msg_dir(typestore: Typestore, package: str, folder: PathLike) -> List[str]:
    """Register every ``<folder>/*.msg`` as ``<package>/msg/<Name>``; return the type names."""
    types = {}
    for path in sorted(Path(folder).glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(encoding='utf-8'),
                                        f'{package}/msg/{path.stem}'))
    typestore.register(types)
    return sorted(types)


def make_typestore(ament_prefix_path: Optional[str] = None) -> Typestore:
    """Return a ROS 2 typestore with vision_msgs registered from their .msg definitions.

    Raises:
        BagError: no vision_msgs definitions were found (names the folders searched).
    """
    typestore = get_typestore(BASE_STORE)
    for package in EXTRA_PACKAGES:
        folders = interface_msg_dirs(package, ament_prefix_path)
        if not folders:
            raise BagError(
                f'no {package} message definitions found: looked for share/{package}/msg in '
                f'every AMENT_PREFIX_PATH prefix; source a ROS 2 install with {package} '
                '(or, in a checkout, env.sh after make setup)')
        register_msg_dir(typestore, package, folders[0])
    return typestore


def _register_bag_definition(typestore: Typestore, msgtype: str, msgdef) -> None:
    """Register the types of a bag connection's embedded definition that the store lacks."""
    if not msgdef.data.strip():
        return  # recorded without a definition: the type stays unknown
    if msgdef.format == MessageDefinitionFormat.MSG:
        types = get_types_from_msg(msgdef.data, msgtype)
    elif msgdef.format == MessageDefinitionFormat.IDL:
        types = {}
        separator = '=' * 80 + '\n'
        parts = msgdef.data.split(separator)[1:] if msgdef.data.startswith(
            f'{separator}IDL: ') else [f'IDL: x\n{msgdef.data}']
        for part in parts:
            types.update(get_types_from_idl(part.split('\n', 1)[1]))
    else:
        return
    missing = {name: value for name, value in types.items() if name not in typestore.types}
    if missing:
        typestore.register(missing)


# ------------------------------------------------------------------------------- time

def ns_to_time(stamp_ns: int) -> Tuple[int, int]:
    """Return (sec, nanosec) of a time in integer nanoseconds."""
    sec, nanosec = divmod(int(stamp_ns), 10**9)
    return sec, nanosec


def stamp_ns(header) -> int:
    """Return a message header's stamp as integer nanoseconds (rclpy or rosbags message)."""
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def cdr_header_stamp_ns(data: bytes) -> int:
    """Return the header stamp (ns) of a CDR message whose first field is a std_msgs/Header."""
    little = data[1] == 1  # encapsulation id 0x0001 = CDR little endian
    sec, nanosec = struct.unpack_from('<iI' if little else '>iI', data, 4)
    return sec * 10**9 + nanosec


def us_to_ns(stamp_us: int) -> int:
    """Return microseconds (A2D2 TAI timestamps) as nanoseconds."""
    return int(stamp_us) * 1000


# ------------------------------------------------------------------------------- building

class MessageFactory:
    """Build ``rosbags`` message objects of one typestore from numpy arrays."""

    def __init__(self, typestore: Typestore) -> None:
        """Use the message classes of ``typestore`` (see ``make_typestore``)."""
        self.typestore = typestore
        self._types = typestore.types

    def time(self, stamp_ns_: int):
        """Return a builtin_interfaces/Time."""
        sec, nanosec = ns_to_time(stamp_ns_)
        return self._types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec)

    def header(self, stamp_ns_: int, frame_id: str):
        """Return a std_msgs/Header."""
        return self._types['std_msgs/msg/Header'](stamp=self.time(stamp_ns_), frame_id=frame_id)

    def pointcloud(self, stamp_ns_: int, frame_id: str, points: np.ndarray):
        """Return an unorganised PointCloud2 of a structured array (N,) of float32 fields."""
        point_field = self._types['sensor_msgs/msg/PointField']
        dtype = points.dtype
        fields = []
        for name in dtype.names:
            field_dtype, offset = dtype.fields[name][:2]
            if field_dtype != np.dtype('<f4'):
                raise ValueError(f'point field {name!r} is {field_dtype}, expected float32')
            fields.append(point_field(name=name, offset=offset, datatype=POINT_FIELD_FLOAT32,
                                      count=1))
        data = np.frombuffer(np.ascontiguousarray(points).tobytes(), dtype=np.uint8)
        finite = all(np.isfinite(points[name]).all() for name in dtype.names)
        return self._types[POINTCLOUD_TYPE](
            header=self.header(stamp_ns_, frame_id), height=1, width=len(points),
            fields=fields, is_bigendian=False, point_step=dtype.itemsize,
            row_step=dtype.itemsize * len(points), data=data, is_dense=bool(finite))

    def image(self, stamp_ns_: int, frame_id: str, pixels: np.ndarray, encoding: str = 'rgb8'):
        """Return an Image (no row padding) of (H, W, 3) rgb8 or (H, W) mono8 uint8 pixels."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        channels = {'rgb8': 3, 'mono8': 1}[encoding]
        if pixels.ndim != (3 if channels == 3 else 2) or (
                channels == 3 and pixels.shape[2] != 3):
            raise ValueError(f'{encoding} needs {"(H, W, 3)" if channels == 3 else "(H, W)"} '
                             f'pixels, got {pixels.shape}')
        height, width = pixels.shape[:2]
        return self._types[IMAGE_TYPE](
            header=self.header(stamp_ns_, frame_id), height=height, width=width,
            encoding=encoding, is_bigendian=0, step=width * channels,
            data=pixels.reshape(-1))

    def camera_info(self, stamp_ns_: int, frame_id: str, width: int, height: int,
                    camera_matrix: np.ndarray, distortion: Sequence[float],
                    projection_matrix: np.ndarray, distortion_model: str = 'plumb_bob'):
        """Return a CameraInfo.

        Args:
            stamp_ns_: stamp, ns.
            frame_id: the image's (optical) frame.
            width: image width, pixels.
            height: image height, pixels.
            camera_matrix: (3, 3) intrinsics of the raw (distorted) image, K.
            distortion: coefficients (k1, k2, p1, p2, k3 for plumb_bob), D.
            projection_matrix: (3, 3) intrinsics of the rectified image; P = [this | 0].
            distortion_model: name of the model.
        """
        projection = np.zeros((3, 4))
        projection[:, :3] = projection_matrix
        roi = self._types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self._types[CAMERA_INFO_TYPE](
            header=self.header(stamp_ns_, frame_id), height=int(height), width=int(width),
            distortion_model=distortion_model,
            d=np.asarray(distortion, dtype=np.float64),
            k=np.asarray(camera_matrix, dtype=np.float64).reshape(9),
            r=np.eye(3).reshape(9), p=projection.reshape(12), binning_x=0, binning_y=0,
            roi=roi)

    def pose(self, position: Sequence[float], quaternion_xyzw: Sequence[float]):
        """Return a geometry_msgs/Pose."""
        x, y, z = (float(v) for v in position)
        qx, qy, qz, qw = (float(v) for v in quaternion_xyzw)
        return self._types['geometry_msgs/msg/Pose'](
            position=self._types['geometry_msgs/msg/Point'](x=x, y=y, z=z),
            orientation=self._types['geometry_msgs/msg/Quaternion'](x=qx, y=qy, z=qz, w=qw))

    def detections(self, stamp_ns_: int, frame_id: str, boxes: np.ndarray, scores: np.ndarray,
                   class_ids: Sequence[str], object_ids: Optional[Sequence[str]] = None):
        """Return a Detection3DArray laid out like ``conversions.detections_to_msg``.

        Args:
            stamp_ns_: stamp, ns.
            frame_id: the boxes' frame.
            boxes: (K, 7) x, y, z, length, width, height (m), yaw (rad).
            scores: (K,) scores.
            class_ids: K class names (written as given).
            object_ids: K ``Detection3D.id`` strings (default empty).
        """
        types = self._types
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)  # (K, 7)
        header = self.header(stamp_ns_, frame_id)
        detections = []
        for index, box in enumerate(boxes):
            half_yaw = 0.5 * float(box[6])
            pose = self.pose(box[:3], (0.0, 0.0, math.sin(half_yaw), math.cos(half_yaw)))
            hypothesis = types['vision_msgs/msg/ObjectHypothesis'](
                class_id=str(class_ids[index]), score=float(scores[index]))
            result = types['vision_msgs/msg/ObjectHypothesisWithPose'](
                hypothesis=hypothesis, pose=types['geometry_msgs/msg/PoseWithCovariance'](
                    pose=pose, covariance=np.zeros(36)))
            size = types['geometry_msgs/msg/Vector3'](
                x=float(box[3]), y=float(box[4]), z=float(box[5]))
            detections.append(types['vision_msgs/msg/Detection3D'](
                header=header, results=[result],
                bbox=types['vision_msgs/msg/BoundingBox3D'](center=pose, size=size),
                id='' if object_ids is None else str(object_ids[index])))
        return types[DETECTIONS_TYPE](header=header, detections=detections)

    def transforms(self, stamp_ns_: int,
                   transforms: Sequence[Tuple[str, str, np.ndarray]]):
        """Return a tf2_msgs/TFMessage of (parent frame, child frame, (4, 4) child->parent)."""
        types = self._types
        stamped = []
        for parent, child, matrix in transforms:
            matrix = np.asarray(matrix, dtype=np.float64)
            x, y, z, w = rotation_to_quaternion(matrix[:3, :3])
            translation = types['geometry_msgs/msg/Vector3'](
                x=float(matrix[0, 3]), y=float(matrix[1, 3]), z=float(matrix[2, 3]))
            rotation = types['geometry_msgs/msg/Quaternion'](x=x, y=y, z=z, w=w)
            stamped.append(types['geometry_msgs/msg/TransformStamped'](
                header=self.header(stamp_ns_, parent), child_frame_id=child,
                transform=types['geometry_msgs/msg/Transform'](
                    translation=translation, rotation=rotation)))
        return types[TF_TYPE](transforms=stamped)


# ------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class DetectionArrays:
    """Boxes of a Detection3DArray as arrays (the first hypothesis of each detection)."""

    stamp_ns: int
    frame_id: str
    boxes: np.ndarray  # (K, 7) float32 x, y, z, length, width, height (m), yaw (rad)
    scores: np.ndarray  # (K,) float32
    class_ids: List[str]  # (K,) hypothesis class ids as written


def detections_from_msg(msg) -> DetectionArrays:
    """Return the boxes, scores and class ids of a Detection3DArray (rclpy or rosbags).

    Box centre, size and yaw come from ``bbox``; class id and score from ``results[0]``
    (a detection without results gets class id '' and score 0).
    """
    count = len(msg.detections)
    boxes = np.zeros((count, 7), dtype=np.float32)
    scores = np.zeros(count, dtype=np.float32)
    class_ids = []
    for index, detection in enumerate(msg.detections):
        center, size = detection.bbox.center, detection.bbox.size
        orientation = center.orientation
        boxes[index] = (center.position.x, center.position.y, center.position.z,
                        size.x, size.y, size.z,
                        float(quaternion_to_yaw((orientation.x, orientation.y, orientation.z,
                                                 orientation.w))))
        if len(detection.results):
            scores[index] = detection.results[0].hypothesis.score
            class_ids.append(str(detection.results[0].hypothesis.class_id))
        else:
            class_ids.append('')
    return DetectionArrays(stamp_ns=stamp_ns(msg.header), frame_id=str(msg.header.frame_id),
                           boxes=boxes, scores=scores, class_ids=class_ids)


def mono8_to_array(msg) -> np.ndarray:
    """Return the (H, W) uint8 pixels of a mono8 Image (rclpy or rosbags), row padding removed.

    Raises:
        ValueError: another encoding, or a data length that disagrees with step x height.
    """
    if msg.encoding.lower() != 'mono8':
        raise ValueError(f'expected a mono8 image, got {msg.encoding!r}')
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(memoryview(msg.data).cast('B'), dtype=np.uint8)
    if step < width or len(data) != step * height:
        raise ValueError(f'mono8 image data has {len(data)} bytes for step {step} x height '
                         f'{height} (width {width})')
    return data.reshape(height, step)[:, :width]  # (H, W)


def resolve_bag_path(path: PathLike) -> Path:
    """Return the bag folder of ``path`` (a bag folder, or a storage file inside one).

    Raises:
        BagError: nothing at ``path``, or no ``metadata.yaml`` next to it.
    """
    bag = Path(path)
    if not bag.exists():
        raise BagError(f'{bag}: no such bag (file or folder)')
    if bag.is_file():
        if (bag.parent / 'metadata.yaml').is_file():
            return bag.parent
        raise BagError(f'{bag}: a rosbag2 bag is a folder with metadata.yaml; this file has '
                       'none next to it (pass the bag folder; `ros2 bag reindex` rebuilds a '
                       'lost metadata.yaml)')
    if not (bag / 'metadata.yaml').is_file():
        raise BagError(f'{bag}: not a rosbag2 bag (no metadata.yaml in the folder)')
    return bag


class BagReader:
    """Read a rosbag2 bag (mcap or sqlite3); errors name the bag, the file or the topic.

    Use as a context manager::

        with BagReader(path) as bag:
            bag.require(topic, [POINTCLOUD_TYPE])
            for item in bag.messages([topic]):
                ...
    """

    def __init__(self, path: PathLike, typestore: Optional[Typestore] = None) -> None:
        """Open the bag at ``path`` (folder or a file in it); see ``resolve_bag_path``."""
        self.path = resolve_bag_path(path)
        self.typestore = typestore if typestore is not None else make_typestore()
        self._reader = Reader(self.path)
        try:
            self._reader.open()
        except Exception as error:  # noqa: B902 - storage back ends raise their own types
            files = ', '.join(self.storage_files) or 'no storage file'
            raise BagError(f'{self.path}: cannot open the bag ({files}): {error} '
                           '(truncated or unfinished file?)') from None
        self._connections = {}
        for connection in self._reader.connections:
            self._connections.setdefault(connection.topic, []).append(connection)
            if connection.msgtype not in self.typestore.types:
                try:
                    _register_bag_definition(self.typestore, connection.msgtype,
                                             connection.msgdef)
                except Exception as error:  # noqa: B902 - parser errors of several kinds
                    raise BagError(f'{self.path}: topic {connection.topic}: cannot parse the '
                                   f'definition of {connection.msgtype}: {error}') from None

    def __enter__(self) -> 'BagReader':
        """Return the open reader."""
        return self

    def __exit__(self, *exc_info) -> None:
        """Close the bag."""
        self.close()

    def close(self) -> None:
        """Close the bag (idempotent)."""
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # noqa: B902 - closing a broken file must not hide the cause
                pass
            self._reader = None

    @property
    def topics(self) -> Dict[str, str]:
        """Return topic -> message type of every topic in the bag."""
        return {topic: connections[0].msgtype
                for topic, connections in self._connections.items()}

    @property
    def message_counts(self) -> Dict[str, int]:
        """Return topic -> number of messages (from the bag's metadata)."""
        return {topic: sum(c.msgcount for c in connections)
                for topic, connections in self._connections.items()}

    @property
    def start_time_ns(self) -> int:
        """Return the log time of the first message, ns."""
        return int(self._reader.start_time)

    @property
    def storage_files(self) -> List[str]:
        """Return the bag's storage file paths."""
        return sorted(str(p) for p in self.path.iterdir()
                      if p.suffix in ('.mcap', '.db3', '.zstd'))

    def has_topic(self, topic: str) -> bool:
        """Return True when the bag holds ``topic``."""
        return topic in self._connections

    def require(self, topic: str, msgtypes: Sequence[str], what: str = 'topic') -> str:
        """Check that ``topic`` exists with one of ``msgtypes`` and a known type; return it.

        Raises:
            BagError: naming the bag and the topic (missing, wrong type or unknown type).
        """
        if topic not in self._connections:
            present = ', '.join(f'{name} ({kind})' for name, kind in sorted(self.topics.items()))
            raise BagError(f'{self.path}: {what} {topic} is not in the bag; topics: '
                           f'{present or "none"}')
        msgtype = self.topics[topic]
        if msgtype not in msgtypes:
            raise BagError(f'{self.path}: {what} {topic} has type {msgtype}, expected '
                           + ' or '.join(msgtypes))
        self.check_known(topic)
        return msgtype

    def check_known(self, topic: str) -> None:
        """Raise BagError when the type of ``topic`` cannot be decoded."""
        msgtype = self.topics[topic]
        if msgtype not in self.typestore.types:
            raise BagError(f'{self.path}: topic {topic} has the unknown message type {msgtype}: '
                           'the bag carries no definition of it and the ROS 2 typestore '
                           '(with vision_msgs) does not know it')

    def deserialize(self, data: bytes, msgtype: str, topic: str = '?'):
        """Decode CDR bytes of ``msgtype``; BagError naming the topic when they are broken."""
        try:
            return self.typestore.deserialize_cdr(data, msgtype)
        except (SerdeError, ValueError, IndexError, KeyError, AssertionError,
                struct.error) as error:
            raise BagError(f'{self.path}: topic {topic}: a {msgtype} message cannot be '
                           f'decoded ({type(error).__name__}: {error}); truncated '
                           'file?') from None

    def messages(self, topics: Sequence[str], raw: bool = False) -> Iterator[BagMessage]:
        """Yield the messages of ``topics`` in log-time order (decoded unless ``raw``).

        Raises:
            BagError: a topic is missing or unknown, or a storage file is truncated/corrupt.
        """
        connections = []
        for topic in topics:
            if topic not in self._connections:
                raise BagError(f'{self.path}: topic {topic} is not in the bag')
            if not raw:
                self.check_known(topic)
            connections += self._connections[topic]
        return self._iterate(connections, raw)

    def _iterate(self, connections: list, raw: bool) -> Iterator[BagMessage]:
        iterator = self._reader.messages(connections=connections)
        while True:
            try:
                connection, log_time_ns, data = next(iterator)
            except StopIteration:
                return
            except BagError:
                raise
            except Exception as error:  # noqa: B902 - storage back ends raise their own types
                raise BagError(f'{self.path}: cannot read messages from '
                               f'{", ".join(self.storage_files) or "the bag"} '
                               f'({type(error).__name__}: {error}); is the file '
                               'truncated?') from None
            payload = bytes(data) if raw else self.deserialize(
                data, connection.msgtype, connection.topic)
            yield BagMessage(connection.topic, connection.msgtype, int(log_time_ns), payload)


# ------------------------------------------------------------------------------- writing

def _qos(durability: QosDurability, reliability: QosReliability = QosReliability.RELIABLE,
         depth: int = 1) -> Qos:
    never = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=reliability,
               durability=durability, deadline=never, lifespan=never,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never,
               avoid_ros_namespace_conventions=False)


#: Offered QoS of latched topics (/tf_static): reliable, transient local.
LATCHED_QOS = _qos(QosDurability.TRANSIENT_LOCAL)


class BagWriter:
    """Write a rosbag2 bag (mcap or sqlite3) with embedded message definitions.

    Use as a context manager; on an exception the partial bag is removed.
    """

    def __init__(self, path: PathLike, storage: str = 'mcap',
                 typestore: Optional[Typestore] = None, overwrite: bool = False) -> None:
        """Create the bag folder ``path`` (must not exist unless ``overwrite``)."""
        if storage not in STORAGE_PLUGINS:
            raise BagError(f'unknown storage {storage!r}; choose one of '
                           + ', '.join(STORAGE_PLUGINS))
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise BagError(f'{self.path}: already exists (choose another --out or '
                               'pass --overwrite)')
            if self.path.is_dir() and not (self.path / 'metadata.yaml').exists() and any(
                    self.path.iterdir()):
                raise BagError(f'{self.path}: exists and is not a bag; not overwriting it')
            if self.path.is_dir():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        self.typestore = typestore if typestore is not None else make_typestore()
        self.factory = MessageFactory(self.typestore)
        self._writer = Writer(self.path, version=BAG_VERSION,
                              storage_plugin=STORAGE_PLUGINS[storage])
        self._connections: Dict[str, object] = {}
        self.counts: Dict[str, int] = {}

    def __enter__(self) -> 'BagWriter':
        """Open the bag for writing."""
        try:
            self._writer.open()
        except WriterError as error:
            raise BagError(f'{self.path}: cannot create the bag: {error}') from None
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        """Finish the bag, or remove it when an exception ends the block."""
        self._writer.close()
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    def add_topic(self, topic: str, msgtype: str, latched: bool = False) -> None:
        """Declare a topic (idempotent for the same type)."""
        if topic in self._connections:
            return
        if msgtype not in self.typestore.types:
            raise BagError(f'cannot write {topic}: unknown message type {msgtype}')
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore,
            offered_qos_profiles=[LATCHED_QOS] if latched else [])
        self.counts[topic] = 0

    def write(self, topic: str, log_time_ns: int, message) -> None:
        """Serialize and write a ``rosbags`` message on a declared topic."""
        self.write_raw(topic, log_time_ns,
                       self.typestore.serialize_cdr(message, message.__msgtype__))

    def write_raw(self, topic: str, log_time_ns: int, data: bytes) -> None:
        """Write CDR bytes on a declared topic."""
        self._writer.write(self._connections[topic], int(log_time_ns), data)
        self.counts[topic] += 1
