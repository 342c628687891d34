"""Random inputs and weights for tests of the network, the runtime and the node (not tests)."""

import os
from typing import Optional, Union

from bev_perception.model.config import ModelConfig
import numpy as np


def random_points(count: int, seed: int, config: ModelConfig = ModelConfig.tiny()) -> np.ndarray:
    """Return (count, 4) float32 points uniform over config's grid, intensity in 0..255."""
    generator = np.random.default_rng(seed)
    grid = config.grid
    low = [grid.x_range_m[0], grid.y_range_m[0], grid.z_range_m[0], 0.0]
    high = [grid.x_range_m[1], grid.y_range_m[1], grid.z_range_m[1], 255.0]
    return generator.uniform(low, high, size=(count, 4)).astype(np.float32)


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    """Return an (height, width, 3) uint8 random RGB image."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def calibrated_tiny_config() -> ModelConfig:
    """Return the tiny config with calibration-aware fusion (cells lifted to two heights)."""
    import dataclasses

    tiny = ModelConfig.tiny()
    return dataclasses.replace(tiny, fusion=dataclasses.replace(
        tiny.fusion, geometry_heights_m=(-1.5, 0.0)))


def write_tiny_weights(path: Union[str, os.PathLike], seed: int = 0,
                       config: Optional[ModelConfig] = None,
                       provenance: Optional[dict] = None) -> ModelConfig:
    """Write random weights of ``config`` (default: the tiny one), torch seed ``seed``.

    ``provenance`` adds entries to the recorded provenance. Returns the config.
    """
    import torch

    from bev_perception.model.network import BEVFusionNet
    from bev_perception.weights import save_weights

    torch.manual_seed(seed)
    config = ModelConfig.tiny() if config is None else config
    save_weights(path, BEVFusionNet(config).eval(), config,
                 provenance={'dataset': 'none (random weights for tests)', **(provenance or {})})
    return config
