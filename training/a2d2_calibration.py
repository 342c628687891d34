"""A2D2 sensor calibration: the project's own table of the ``cams_lidars.json`` facts.

The numbers are the published A2D2 calibration (poses in the vehicle frame, intrinsics,
distortion), written here as a typed table so that the synthetic scene writer can produce a
``cams_lidars.json`` with the real structure and the same geometry. Frames follow the A2D2
convention: every sensor has a "view" frame (x forward, y left, z up for cameras) given by an
origin and two axes in the vehicle frame; ``view_to_vehicle`` builds the 4x4 transform.

The camera model implements the front-center "Telecam" lens (OpenCV radial-tangential
distortion with coefficients k1, k2, p1, p2, k3); pixel centres sit at integer coordinates.
"""

from dataclasses import dataclass
import json
import os
from typing import Dict, Mapping, Optional, Tuple, Union

from bev_perception.model.camera_geometry import (camera_geometry as geometry_vector,
                                                  MODEL_TO_OPTICAL)
import numpy as np

Vector3 = Tuple[float, float, float]

#: Camera info ``lidar_ids``: index stored in the npz ``lidar_id`` array -> lidar name.
LIDAR_IDS: Tuple[str, ...] = (
    'front_left', 'rear_right', 'front_right', 'front_center', 'rear_left')

#: Native A2D2 image size (width, height) in pixels.
NATIVE_RESOLUTION: Tuple[int, int] = (1920, 1208)


@dataclass(frozen=True)
class SensorView:
    """A sensor's view frame in the vehicle frame (metres; axes need not be orthonormal)."""

    origin_m: Vector3
    x_axis: Vector3
    y_axis: Vector3

    def to_json(self) -> Dict[str, list]:
        """Return the ``view`` object as written in ``cams_lidars.json``."""
        return {'origin': list(self.origin_m), 'x-axis': list(self.x_axis),
                'y-axis': list(self.y_axis)}

    def matrix(self) -> np.ndarray:
        """Return the (4, 4) float64 transform view frame -> vehicle frame."""
        return view_to_vehicle(self.to_json())


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (pixel centres at integer coordinates)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def matrix(self) -> np.ndarray:
        """Return the (3, 3) camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, scale_x: float, scale_y: float) -> 'Intrinsics':
        """Return the intrinsics of the same camera resampled by (scale_x, scale_y)."""
        return Intrinsics(self.fx * scale_x, self.fy * scale_y,
                          (self.cx + 0.5) * scale_x - 0.5, (self.cy + 0.5) * scale_y - 0.5)


@dataclass(frozen=True)
class CameraCalibration:
    """One camera entry of ``cams_lidars.json``."""

    view: SensorView
    alternative_view: Optional[SensorView]  # the file's 'view_' entry, where it has one
    cam_matrix: Intrinsics  # undistorted image ('CamMatrix')
    cam_matrix_original: Intrinsics  # distorted original image ('CamMatrixOriginal')
    distortion: Tuple[float, ...]  # 5 (k1 k2 p1 p2 k3) for 'Telecam', 4 (k1..k4) for 'Fisheye'
    lens: str
    has_corrected_image_port: bool  # the file carries "CorrectedImagePort": null
    tstamp_delay_us: int = 25000
    resolution: Tuple[int, int] = NATIVE_RESOLUTION  # width, height


VEHICLE_VIEW = SensorView((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))

#: Ego vehicle extent in the vehicle frame, metres: name -> (min, max).
EGO_DIMENSIONS_M: Tuple[Tuple[str, Tuple[float, float]], ...] = (
    ('x-range', (-1.0, 4.0)), ('y-range', (-1.25, 1.25)), ('z-range', (-0.75, 1.5)))

#: The five VLP-16 lidars (spin axis = view z).
LIDARS: Tuple[Tuple[str, SensorView], ...] = (
    ('front_center', SensorView(
        (1.7184, 3.816391647e-17, 1.120140605),
        (-0.007840892071, -0.9999275832, -0.009129560068),
        (0.9807203123, -0.005906897013, -0.1953273601))),
    ('front_left', SensorView(
        (1.711547214, 0.6309253613, 1.118360341),
        (0.9997181757, -0.02247154566, -0.007654989886),
        (0.01357753516, 0.8057433542, -0.592109194))),
    ('front_right', SensorView(
        (1.705719249, -0.6546311502, 1.116209928),
        (-0.9998610375, 0.01066231722, 0.01281486089),
        (-0.01623086786, -0.798013739, -0.6024206432))),
    ('rear_left', SensorView(
        (-0.4309471412, 0.5880139308, 1.147958772),
        (0.9429395447, -0.007441303046, 0.3328808226),
        (0.09087818559, 0.967543357, -0.2357986591))),
    ('rear_right', SensorView(
        (-0.4335855802, -0.6050262251, 1.118308637),
        (-0.9461056561, 0.02227803802, -0.3230909725),
        (0.06774258602, -0.9619486437, -0.2646993557))),
)

#: The six cameras.
CAMERAS: Tuple[Tuple[str, CameraCalibration], ...] = (
    ('front_left', CameraCalibration(
        view=SensorView((1.711046059, 0.5800000386, 0.9431449351),
                        (0.9967143136, 0.08099673957, -0.0003245319645),
                        (-0.08098903495, 0.9966610511, 0.01036944768)),
        alternative_view=None,
        cam_matrix=Intrinsics(825.1019994, 824.1939803, 959.4618995, 642.4489174),
        cam_matrix_original=Intrinsics(972.2092673, 971.1393576, 959.7791294, 631.2212591),
        distortion=(-0.03751941844, -0.005757091133, 0.0, 0.0),
        lens='Fisheye', has_corrected_image_port=False)),
    ('front_right', CameraCalibration(
        view=SensorView((1.711045839, -0.5799999964, 0.9431449683),
                        (0.9999712127, -0.006632832144, -0.003685005573),
                        (0.00660285366, 0.999945486, -0.008088720385)),
        alternative_view=None,
        cam_matrix=Intrinsics(812.1396529, 811.0246412, 999.3646325, 650.7723532),
        cam_matrix_original=Intrinsics(966.532056, 965.2050742, 976.4248271, 636.8799213),
        distortion=(-0.05530181694, 0.01008128985, 0.0, 0.0),
        lens='Fisheye', has_corrected_image_port=False)),
    ('front_center', CameraCalibration(
        view=SensorView((1.711045726, -5.735179669e-09, 0.9431449279),
                        (0.9997595803, 0.02137218465, -0.004900139956),
                        (-0.02148263833, 0.999487774, -0.02372100031)),
        alternative_view=SensorView((1.711045726, -5.735179665e-09, 0.9431449279),
                                    (0.9996634643, 0.0227993515, -0.01237528649),
                                    (-0.02299750741, 0.9996056598, -0.01611333436)),
        cam_matrix=Intrinsics(1687.336914, 1783.428467, 965.4341406, 684.4193604),
        cam_matrix_original=Intrinsics(1844.177442, 1841.521224, 964.4299052, 679.5331912),
        distortion=(-0.2611312588, 0.0, 0.0, 0.0, 0.0),
        lens='Telecam', has_corrected_image_port=False)),
    ('side_left', CameraCalibration(
        view=SensorView((0.6510458406, 0.5799998572, 0.9431448238),
                        (-0.01854434403, 0.9768772958, -0.2129949679),
                        (-0.9997343869, -0.02103267918, -0.009422421415)),
        alternative_view=SensorView((0.6510458406, 0.5799998572, 0.9431448238),
                                    (-0.02370281061, 0.9754754725, -0.2188281958),
                                    (-0.9994396704, -0.0282960342, -0.01787958857)),
        cam_matrix=Intrinsics(821.9684391, 822.1628844, 989.8761361, 654.8293054),
        cam_matrix_original=Intrinsics(970.0690717, 970.2985518, 972.362992, 639.8728703),
        distortion=(-0.04337400139, 0.0, 0.0, 0.0),
        lens='Fisheye', has_corrected_image_port=True)),
    ('side_right', CameraCalibration(
        view=SensorView((0.6510460629, -0.5799999837, 0.9431451906),
                        (-0.05235015241, -0.9770854163, -0.2063093572),
                        (0.9983598206, -0.05600158848, 0.01189498462)),
        alternative_view=SensorView((0.6510460629, -0.5799999837, 0.9431451906),
                                    (-0.04145678286, -0.9755525668, -0.2158205842),
                                    (0.9990048566, -0.04402913499, 0.007122621082)),
        cam_matrix=Intrinsics(817.8212988, 817.9632118, 1004.41382, 646.0390568),
        cam_matrix_original=Intrinsics(966.1307103, 966.2983588, 978.1812745, 633.5579345),
        distortion=(-0.04298934672, 0.0, 0.0, 0.0),
        lens='Fisheye', has_corrected_image_port=False)),
    ('rear_center', CameraCalibration(
        view=SensorView((-0.4089539386, 3.697039307e-10, 0.9431450389),
                        (-0.9996986373, 0.009565466516, 0.02260832581),
                        (-0.009624100011, -0.9999505969, -0.002486062637)),
        alternative_view=SensorView((-0.4089539386, 3.697039341e-10, 0.9431450389),
                                    (-0.9997727738, 0.01327848123, 0.01667581017),
                                    (-0.0130863349, -0.9998473233, 0.0115792019)),
        cam_matrix=Intrinsics(820.1047259, 821.805624, 994.85365, 647.7406709),
        cam_matrix_original=Intrinsics(966.6137365, 968.6184944, 976.1807335, 635.4835977),
        distortion=(-0.05029733569, 0.01988294657, 0.0, 0.0),
        lens='Fisheye', has_corrected_image_port=True)),
)


def lidar_view(name: str) -> SensorView:
    """Return the calibrated view of the lidar called ``name`` (e.g. 'front_left')."""
    return dict(LIDARS)[name]


def camera_calibration(name: str) -> CameraCalibration:
    """Return the calibration of the camera called ``name`` (e.g. 'front_center')."""
    return dict(CAMERAS)[name]


def view_to_vehicle(view: Mapping[str, list]) -> np.ndarray:
    """Return the (4, 4) transform sensor view frame -> vehicle frame of a ``view`` JSON object.

    The x axis is normalised, y is made orthogonal to x and normalised, z = x cross y; the axes
    are the rotation's columns and ``origin`` its translation.
    """
    x_axis = np.asarray(view['x-axis'], dtype=np.float64)
    y_axis = np.asarray(view['y-axis'], dtype=np.float64)
    x_axis = x_axis / np.linalg.norm(x_axis)
    y_axis = y_axis - x_axis * np.dot(x_axis, y_axis)
    y_axis = y_axis / np.linalg.norm(y_axis)
    transform = np.eye(4)
    transform[:3, 0] = x_axis
    transform[:3, 1] = y_axis
    transform[:3, 2] = np.cross(x_axis, y_axis)
    transform[:3, 3] = np.asarray(view['origin'], dtype=np.float64)
    return transform


def view_to_view(source: Mapping[str, list], target: Mapping[str, list]) -> np.ndarray:
    """Return the (4, 4) transform from the ``source`` view frame to the ``target`` view frame."""
    return np.linalg.solve(view_to_vehicle(target), view_to_vehicle(source))


def _camera_json(camera: CameraCalibration, image_size: Tuple[int, int]) -> dict:
    scale_x = image_size[0] / camera.resolution[0]
    scale_y = image_size[1] / camera.resolution[1]
    entry: dict = {'tstamp_delay': camera.tstamp_delay_us, 'view': camera.view.to_json()}
    if camera.alternative_view is not None:
        entry['view_'] = camera.alternative_view.to_json()
    entry['Lens'] = camera.lens
    entry['CamMatrix'] = camera.cam_matrix.scaled(scale_x, scale_y).matrix().tolist()
    entry['CamMatrixOriginal'] = (
        camera.cam_matrix_original.scaled(scale_x, scale_y).matrix().tolist())
    if camera.has_corrected_image_port:
        entry['CorrectedImagePort'] = None
    entry['Distortion'] = [list(camera.distortion)]
    entry['Resolution'] = [int(image_size[0]), int(image_size[1])]
    return entry


def cams_lidars_dict(image_size: Tuple[int, int] = NATIVE_RESOLUTION,
                     cameras: Optional[Mapping[str, CameraCalibration]] = None) -> dict:
    """Return the calibration as the nested ``cams_lidars.json`` object.

    Args:
        image_size: (width, height) of the written camera images in pixels; the intrinsics are
            rescaled from their calibrated resolution when it differs.
        cameras: cameras that replace the published ones of the same name.
    """
    table = dict(CAMERAS, **(cameras or {}))
    return {
        'vehicle': {'view': VEHICLE_VIEW.to_json(),
                    'ego-dimensions': {key: list(span) for key, span in EGO_DIMENSIONS_M}},
        'lidars': {name: {'view': view.to_json()} for name, view in LIDARS},
        'cameras': {name: _camera_json(camera, image_size) for name, camera in table.items()},
    }


def write_cams_lidars(path: Union[str, os.PathLike],
                      image_size: Tuple[int, int] = NATIVE_RESOLUTION) -> None:
    """Write ``cams_lidars.json`` for images of ``image_size`` (width, height)."""
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write(json.dumps(cams_lidars_dict(image_size), indent=2) + '\n')


@dataclass(frozen=True)
class CameraModel:
    """A camera of ``cams_lidars.json`` for projection and (un)distortion.

    Coordinates: view frame (x forward, y left, z up, metres); normalised image coordinates
    (u, v) = (-y / x, -z / x) are the optical-frame (right, down) coordinates at unit depth.
    """

    view: SensorView
    cam_matrix: Intrinsics
    cam_matrix_original: Intrinsics
    distortion: Tuple[float, float, float, float, float]  # k1, k2, p1, p2, k3
    width: int
    height: int

    @staticmethod
    def from_json(camera: Mapping) -> 'CameraModel':
        """Build the model from one ``cameras`` entry of ``cams_lidars.json``."""
        if camera.get('Lens', 'Telecam') != 'Telecam':
            raise ValueError(f'lens {camera.get("Lens")!r} is not supported (Telecam only)')

        def intrinsics(matrix: list) -> Intrinsics:
            return Intrinsics(float(matrix[0][0]), float(matrix[1][1]), float(matrix[0][2]),
                              float(matrix[1][2]))

        coefficients = [float(c) for c in camera['Distortion'][0]] + [0.0] * 5
        return CameraModel(
            view=SensorView(tuple(camera['view']['origin']), tuple(camera['view']['x-axis']),
                            tuple(camera['view']['y-axis'])),
            cam_matrix=intrinsics(camera['CamMatrix']),
            cam_matrix_original=intrinsics(camera['CamMatrixOriginal']),
            distortion=tuple(coefficients[:5]),
            width=int(camera['Resolution'][0]), height=int(camera['Resolution'][1]))

    def camera_geometry(self, model_view: Optional[SensorView] = None) -> np.ndarray:
        """Return the ``camera_geometry`` vector of the distorted original image.

        Args:
            model_view: the view frame that is the model frame (points and boxes are in it);
                None: this camera's own view frame, and the pose is only the axis change to
                the optical frame (x right, y down, z forward).
        """
        k = self.cam_matrix_original
        model_to_view = (np.eye(4) if model_view is None
                         else view_to_view(model_view.to_json(), self.view.to_json()))
        return geometry_vector(MODEL_TO_OPTICAL @ model_to_view[:3, :3],
                               MODEL_TO_OPTICAL @ model_to_view[:3, 3],
                               np.array([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]]),
                               self.distortion, (self.width, self.height))

    @staticmethod
    def front_center(image_size: Tuple[int, int] = NATIVE_RESOLUTION) -> 'CameraModel':
        """Return the front-center camera for images of ``image_size`` (width, height)."""
        return CameraModel.from_json(cams_lidars_dict(image_size)['cameras']['front_center'])

    def project_undistorted(self, points_view: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return (row, col) of view-frame points (N, 3) in the undistorted image (CamMatrix).

        col = cx - fx * y / x, row = cy - fy * z / x; points need x > 0.
        """
        k = self.cam_matrix
        depth = points_view[:, 0]
        col = k.cx - k.fx * points_view[:, 1] / depth
        row = k.cy - k.fy * points_view[:, 2] / depth
        return row, col

    def distort(self, u: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return (row, col) in the distorted original image of normalised coordinates (u, v)."""
        k1, k2, p1, p2, k3 = self.distortion
        r2 = u * u + v * v
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        u_d = u * radial + 2.0 * p1 * u * v + p2 * (r2 + 2.0 * u * u)
        v_d = v * radial + p1 * (r2 + 2.0 * v * v) + 2.0 * p2 * u * v
        k = self.cam_matrix_original
        return k.cy + k.fy * v_d, k.cx + k.fx * u_d

    def undistort(self, row: np.ndarray, col: np.ndarray,
                  iterations: int = 20) -> Tuple[np.ndarray, np.ndarray]:
        """Return normalised (u, v) of distorted original pixel coordinates (fixed-point solve)."""
        k = self.cam_matrix_original
        k1, k2, p1, p2, k3 = self.distortion
        u_d = (np.asarray(col, dtype=np.float64) - k.cx) / k.fx
        v_d = (np.asarray(row, dtype=np.float64) - k.cy) / k.fy
        if p1 == 0.0 and p2 == 0.0 and u_d.size > 4096:
            # Radial only: invert r_d(r_u) once on a fine 1-D table (monotonic part).
            r_d = np.hypot(u_d, v_d)
            r_u_table = np.linspace(0.0, 2.0 * r_d.max() + 1e-9, 65537)
            r2 = r_u_table * r_u_table
            r_d_table = r_u_table * (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3)))
            rising = np.diff(r_d_table) > 0
            usable = int(np.argmin(rising)) if not rising.all() else len(rising)
            if r_d_table[usable] >= r_d.max():
                r_u = np.interp(r_d, r_d_table[:usable + 1], r_u_table[:usable + 1])
                scale = np.divide(r_u, r_d, out=np.ones_like(r_d), where=r_d > 0)
                return u_d * scale, v_d * scale
        u, v = u_d.copy(), v_d.copy()
        for _ in range(iterations):
            r2 = u * u + v * v
            radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
            tangential_u = 2.0 * p1 * u * v + p2 * (r2 + 2.0 * u * u)
            tangential_v = p1 * (r2 + 2.0 * v * v) + 2.0 * p2 * u * v
            u = (u_d - tangential_u) / radial
            v = (v_d - tangential_v) / radial
        return u, v
