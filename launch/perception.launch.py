r"""Launch the BEV perception node, and RViz2 with the shipped view when asked.

    ros2 launch bev_perception perception.launch.py pointcloud_topic:=/points \
        image_topic:=/camera/image_raw device:=cuda rviz:=true

Empty ``weights_path`` / ``profile`` / ``device`` arguments leave the params file's values in
force; non-empty ones override them (``profile:=lite device:=cpu`` on a machine without a GPU).
DDS discovery is left to the environment (ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE): on a
robot the node must be reachable from other machines.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = 'bev_perception'
EXECUTABLE = 'perception_node'
NODE_NAME = 'perception_node'
PARAMS_FILE = ('config', 'perception.yaml')
RVIZ_CONFIG = ('config', 'perception.rviz')

#: Node topic -> launch argument giving the topic it is remapped to.
REMAPPINGS = {
    '~/input/pointcloud': 'pointcloud_topic',
    '~/input/image': 'image_topic',
    '~/input/camera_info': 'camera_info_topic',
}
#: Launch arguments forwarded as node parameters of the same name when not empty.
FORWARDED_PARAMETERS = ('weights_path', 'profile', 'device')

#: Every launch argument: name -> (default, description). The params file default is filled in
#: from the package's share directory.
ARGUMENTS = {
    'params_file': (None, 'Parameters file of the node (default: the installed '
                          'config/perception.yaml).'),
    'weights_path': ('', "Weights file (.safetensors); empty: the params file's value, whose "
                         'default is the shipped weights.'),
    'profile': ('', "default or lite (the CPU profile's shipped weights); empty: the params "
                    "file's value."),
    'device': ('', "cuda, cuda:N or cpu; empty: the params file's value (cuda, falling back "
                   'to cpu when no GPU is usable).'),
    'pointcloud_topic': ('/points', 'sensor_msgs/PointCloud2 input topic (remaps '
                                    '~/input/pointcloud).'),
    'image_topic': ('/camera/image', 'sensor_msgs/Image input topic of the front camera (remaps '
                                     '~/input/image).'),
    'camera_info_topic': ('/camera/camera_info', 'sensor_msgs/CameraInfo of that camera '
                                                 '(remaps ~/input/camera_info).'),
    'namespace': ('', 'Namespace of the node (and of its private topics).'),
    'use_sim_time': ('false', 'Use /clock (bag replay with --clock).'),
    'rviz': ('false', 'Start RViz2 with the shipped config/perception.rviz.'),
}


def _node_actions(context):
    """Build the node (and RViz2) once the argument values are known."""
    overrides = {}
    for name in FORWARDED_PARAMETERS:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    remappings = [(topic, LaunchConfiguration(argument))
                  for topic, argument in REMAPPINGS.items()]
    node = Node(
        package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME,
        namespace=LaunchConfiguration('namespace'), output='screen', emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'), overrides,
                    {'use_sim_time': use_sim_time}],
        remappings=remappings)
    share = get_package_share_directory(PACKAGE)
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='screen',
        arguments=['-d', os.path.join(share, *RVIZ_CONFIG)],
        parameters=[{'use_sim_time': use_sim_time}],
        condition=IfCondition(LaunchConfiguration('rviz')))
    return [node, rviz]


def generate_launch_description():
    """Return the launch description: arguments, the node and the optional RViz2."""
    share = get_package_share_directory(PACKAGE)
    defaults = {'params_file': os.path.join(share, *PARAMS_FILE)}
    arguments = [
        DeclareLaunchArgument(name, default_value=defaults.get(name, default),
                              description=description)
        for name, (default, description) in ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node_actions)])
