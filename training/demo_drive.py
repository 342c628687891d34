"""The demo's drive: a synthetic A2D2-format scene converted into a rosbag2 with ground truth.

    python -m training.demo_drive --out out/demo/drive_bag [--frames 60] [--seed 880017]
                                  [--image-size 960 604] [--workers 2]

``training.synthetic`` writes one scene of ``--frames`` frames (10 Hz) into a temporary folder
next to the bag, ``training.to_bag`` converts it (PointCloud2, Image, CameraInfo, ground truth
detections with the training class names and semantic ids, recorded stamps; see
``bev_perception.bag_io``), and the folder is removed. ``drive.json`` in the bag folder says
how the drive was made; ``bev_perception.tools.demo`` (``make demo``) and the benchmark's node
replay (``make bench``) replay the bag.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from training.a2d2 import list_scenes
from training.cameras import CameraSetup
from training.synthetic import generate, SyntheticConfig, WORLD_VERSION
from training.to_bag import convert_scene

#: Seed of the demo drive: outside the seeds the shipped weights were trained on, and a scene
#: of the current world with all four detection classes in view (cars, a lorry, people, a
#: cyclist) beside a car park.
DEMO_SEED = 880_017
#: Written into the bag folder: how the drive was made.
DESCRIPTION_FILE = 'drive.json'


def write_drive(out: str, frames: int = 60, seed: int = DEMO_SEED,
                image_size: Tuple[int, int] = (960, 604), workers: int = 2) -> Dict[str, Any]:
    """Write the drive bag at ``out`` (replaced if there); return its description.

    Args:
        out: bag folder to write.
        frames: frames of the drive (10 Hz).
        seed: scene seed.
        image_size: (width, height) of the camera images.
        workers: processes generating the scene (the files do not depend on it).
    """
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='bev_drive_', dir=parent) as work:
        # A2D2's front-center camera, whose view frame is the cloud frame: the node's default
        # camera pose parameters (zero) are then exact.
        generate(work, scenes=1, frames=frames, seed=seed, image_size=image_size,
                 workers=workers, config=SyntheticConfig(camera=CameraSetup()))
        (scene,) = list_scenes(work)
        convert_scene(work, scene, out, storage='mcap', overwrite=True, progress=False)
    description = {'generator': 'training.synthetic', 'world': WORLD_VERSION, 'seed': seed,
                   'frames': frames, 'image_size': list(image_size), 'camera': 'front_center'}
    with open(os.path.join(out, DESCRIPTION_FILE), 'w', encoding='utf-8') as stream:
        json.dump(description, stream, indent=2)
    return description


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write the drive bag from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, help='bag folder to write (replaced)')
    parser.add_argument('--frames', type=int, default=60, help='frames of the drive (10 Hz)')
    parser.add_argument('--seed', type=int, default=DEMO_SEED, help='drive seed')
    parser.add_argument('--image-size', type=int, nargs=2, default=(960, 604),
                        metavar=('WIDTH', 'HEIGHT'), help='camera image size')
    parser.add_argument('--workers', type=int, default=2, help='processes generating the drive')
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error('--frames must be positive')
    started = time.monotonic()
    print(f'[drive] generating a {args.frames}-frame synthetic drive (seed {args.seed}) and '
          'converting it to a rosbag2', flush=True)
    write_drive(args.out, args.frames, args.seed, tuple(args.image_size), args.workers)
    print(f'[drive] wrote {args.out} after {time.monotonic() - started:.0f} s', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
