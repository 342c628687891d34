"""LiDAR models of the synthetic world, randomised per scene.

A scene draws one ``LidarSetup``: a beam pattern (vertical angles of the lasers), its azimuth
resolution, where it is mounted (height above the road, position and tilt relative to the
camera whose frame is the model frame), and how it measures (range noise, ray drop by range,
incidence and material, per-laser calibration errors, maximum range, intensity model). The
patterns are the published vertical layouts of common sensors:

- ``vlp16``: 16 lasers, -15..+15 degrees every 2 degrees (Velodyne VLP-16; A2D2 has five);
- ``hdl32``: 32 lasers, -30.67..+10.67 degrees every 1.33 degrees (HDL-32E; nuScenes);
- ``vlp32c``: 32 lasers, -25..+15 degrees, dense around the horizon (VLP-32C; Argoverse 2);
- ``hdl64``: 64 lasers, +2..-8.33 degrees every 1/3 and -8.83..-24.33 every 1/2 (HDL-64E;
  KITTI, mounted 1.73 m above the road);
- ``os64`` / ``os128``: 64 / 128 lasers spread uniformly over -22.5..+22.5 degrees (Ouster);
- ``a2d2``: the five VLP-16 of A2D2 at their calibrated poses (``training.a2d2_calibration``).

Intensity models map the material reflectance, the incidence angle and the range to the 8-bit
value A2D2's files hold: linear, square-root (compressed), saturating, retro-reflector heavy,
constant, or absent (all zero). Training also rescales and drops intensity
(``training.augment``), so the network cannot lean on one sensor's calibration.
"""

from dataclasses import dataclass
import math
from typing import Dict, Tuple

from bev_perception.geometry import rotation_from_rpy
import numpy as np

#: Vertical laser angles in degrees, by pattern name.
PATTERNS: Dict[str, np.ndarray] = {
    'vlp16': np.arange(-15.0, 15.01, 2.0),
    'hdl32': np.linspace(-30.67, 10.67, 32),
    'vlp32c': np.concatenate([np.linspace(-25.0, -5.0, 8), np.linspace(-4.0, 4.0, 18),
                              np.linspace(5.5, 15.0, 6)]),
    'hdl64': np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.33, 32)]),
    'os64': np.linspace(-22.5, 22.5, 64),
    'os128': np.linspace(-22.5, 22.5, 128),
}
#: The pattern of the A2D2 rig (five VLP-16s at the calibrated poses).
A2D2_RIG = 'a2d2'
#: Probability of each pattern per scene.
PATTERN_WEIGHTS: Dict[str, float] = {
    'vlp16': 0.12, 'hdl32': 0.16, 'vlp32c': 0.14, 'hdl64': 0.24, 'os64': 0.1, 'os128': 0.08,
    A2D2_RIG: 0.16}
#: Azimuth steps per revolution, by pattern (a range: drawn per scene).
AZIMUTH_STEPS: Dict[str, Tuple[int, int]] = {
    'vlp16': (900, 1800), 'hdl32': (1000, 2200), 'vlp32c': (900, 1800), 'hdl64': (1700, 2200),
    'os64': (1024, 2048), 'os128': (1024, 1500), A2D2_RIG: (1800, 1800)}
INTENSITY_MODELS = ('linear', 'sqrt', 'saturating', 'retro', 'constant', 'absent')
_INTENSITY_WEIGHTS = (0.35, 0.2, 0.15, 0.15, 0.07, 0.08)


@dataclass(frozen=True)
class LidarSetup:
    """One scene's LiDAR (angles in radians, lengths in metres, camera view frame)."""

    pattern: str
    elevations: np.ndarray  # (L,) laser elevation angles
    azimuth_steps: int
    position_m: Tuple[float, float, float]  # in the camera view frame (z: relative to camera)
    tilt_rpy: Tuple[float, float, float]  # roll, pitch, yaw of the sensor in the camera frame
    range_noise_m: float
    drop_base: float  # probability that any return is lost
    drop_far: float  # extra loss at maximum range (grows with range^3)
    max_range_m: float
    min_range_m: float
    intensity_model: str
    intensity_gain: float
    fov_crop: bool  # keep only points inside the camera image (as A2D2 files do)
    half_azimuth_rad: float  # rays cast within this angle of the camera's forward axis
    laser_elevation_error: np.ndarray  # (L,) radians: each laser's calibration error ...
    laser_range_bias_m: np.ndarray  # (L,) ... and range offset (wavy, uneven rings)


def draw_setup(rng: np.random.Generator, camera_height_m: float) -> LidarSetup:
    """Draw a scene's LiDAR; ``camera_height_m`` is the camera (model origin) above the road."""
    names = list(PATTERN_WEIGHTS)
    weights = np.array([PATTERN_WEIGHTS[n] for n in names])
    pattern = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    low, high = AZIMUTH_STEPS[pattern]
    steps = int(rng.integers(low, high + 1))
    if pattern == A2D2_RIG:
        elevations = PATTERNS['vlp16']
        position = (0.0, 0.0, 0.0)  # per-lidar poses come from the calibration
        tilt = (0.0, 0.0, 0.0)
    else:
        elevations = PATTERNS[pattern]
        mount = (1.73 + rng.normal(0.0, 0.05) if pattern == 'hdl64' and rng.random() < 0.5
                 else float(rng.uniform(1.45, 2.3)))
        position = (float(rng.uniform(-1.6, 0.4)), float(rng.normal(0.0, 0.1)),
                    mount - camera_height_m)
        tilt = tuple(float(v) for v in rng.normal(0.0, math.radians(1.0), 3))
    model = INTENSITY_MODELS[int(rng.choice(len(INTENSITY_MODELS), p=_INTENSITY_WEIGHTS))]
    return LidarSetup(
        pattern=pattern, elevations=np.radians(np.asarray(elevations, dtype=np.float64)),
        azimuth_steps=steps, position_m=position, tilt_rpy=tilt,
        range_noise_m=float(rng.uniform(0.005, 0.04)), drop_base=float(rng.uniform(0.0, 0.12)),
        drop_far=float(rng.uniform(0.1, 0.6)), max_range_m=float(rng.uniform(70.0, 120.0)),
        min_range_m=float(rng.uniform(1.0, 2.5)), intensity_model=model,
        intensity_gain=float(rng.uniform(0.6, 1.6)),
        fov_crop=pattern == A2D2_RIG or bool(rng.random() < 0.2),
        half_azimuth_rad=math.radians(100.0),
        laser_elevation_error=rng.normal(0.0, math.radians(float(rng.uniform(0.0, 0.12))),
                                         len(elevations)),
        laser_range_bias_m=rng.normal(0.0, float(rng.uniform(0.0, 0.04)), len(elevations)))


def sensor_rays(setup: LidarSetup) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (directions (R, 3) in the sensor frame, laser (R,), azimuth step (R,), azimuth).

    Only rays within ``half_azimuth_rad`` of the sensor's forward axis are kept (the model
    looks ahead).
    """
    steps = np.arange(setup.azimuth_steps)
    azimuth = steps * (2.0 * math.pi / setup.azimuth_steps)
    forward = np.abs(np.angle(np.exp(1j * azimuth))) <= setup.half_azimuth_rad
    step_grid, laser_grid = np.meshgrid(steps[forward], np.arange(len(setup.elevations)),
                                        indexing='ij')
    step_grid, laser_grid = step_grid.ravel(), laser_grid.ravel()
    elevation = setup.elevations[laser_grid] + setup.laser_elevation_error[laser_grid]
    az = azimuth[step_grid]
    directions = np.stack([np.cos(elevation) * np.cos(az), np.cos(elevation) * np.sin(az),
                           np.sin(elevation)], axis=1)
    return directions, laser_grid, step_grid, az


def sensor_pose(setup: LidarSetup) -> Tuple[np.ndarray, np.ndarray]:
    """Return (rotation (3, 3), translation (3,)) sensor frame -> camera view frame."""
    return rotation_from_rpy(*setup.tilt_rpy), np.asarray(setup.position_m, dtype=np.float64)


def intensity(setup: LidarSetup, reflectance: np.ndarray, retro: np.ndarray,
              incidence_cos: np.ndarray, distance: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Return the 8-bit intensity, (R,) int64, of returns under the setup's intensity model."""
    count = len(reflectance)
    noise = rng.normal(1.0, 0.08, count)
    offset = rng.normal(0.0, 1.0, count)
    lambert = np.where(retro, 1.0, 0.3 + 0.7 * incidence_cos)
    value = reflectance * lambert * noise * setup.intensity_gain  # ~0..1.5
    value = value / (1.0 + (distance / 150.0) ** 2)
    model = setup.intensity_model
    if model == 'absent':
        return np.zeros(count, dtype=np.int64)
    if model == 'constant':
        return np.full(count, int(100 * setup.intensity_gain), dtype=np.int64)
    if model == 'sqrt':
        value = np.sqrt(np.clip(value, 0.0, None))
    elif model == 'saturating':
        value = 1.0 - np.exp(-2.5 * value)
    elif model == 'retro':
        value = np.where(retro, 1.0, value * 0.35)
    return np.clip(np.rint(value * 255.0 + offset), 0, 255).astype(np.int64)


def drop_probability(setup: LidarSetup, distance: np.ndarray, incidence_cos: np.ndarray,
                     reflectance: np.ndarray) -> np.ndarray:
    """Return the probability (R,) that a return is lost (range, grazing angle, dark surface)."""
    far = np.clip(distance / setup.max_range_m, 0.0, 1.0)
    grazing = np.clip(0.25 - incidence_cos, 0.0, 0.25) * 2.0
    dark = np.clip(0.12 - reflectance, 0.0, 0.12) * 2.5 * far
    return np.clip(setup.drop_base + setup.drop_far * far ** 3 + grazing + dark, 0.0, 0.95)
