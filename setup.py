"""Install the bev_perception ROS 2 package (ament_python)."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'bev_perception'


def _files(pattern):
    return sorted(path for path in glob(pattern) if os.path.isfile(path))


setup(
    name=PACKAGE,
    version='0.1.0',
    # Only the node's package is installed; training/ is source-only and vision_msgs in
    # interfaces/ is never installed from here.
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    # The shipped weights are installed once, as package data next to the module: the node
    # finds them there (bev_perception.weights.SHIPPED_WEIGHTS_DIR) after `colcon build` and
    # after `pip install` alike.
    package_data={PACKAGE: ['weights/*.safetensors']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', _files('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', _files('config/*.yaml') + _files('config/*.rviz')
         + _files('config/*.xml')),
    ],
    install_requires=['setuptools'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='bev_perception maintainers',
    maintainer_email='bev-perception@example.com',
    description='LiDAR-camera BEV perception node: 3D detection and semantic segmentation.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'perception_node = bev_perception.node:main',
            'bev_perception_eval = bev_perception.tools.evaluate_bag:main',
            'bev_perception_bench = bev_perception.tools.bench:main',
        ],
    },
)
