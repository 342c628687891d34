# Source this file (bash/zsh) for a shell with the project's environment:
#   source env.sh
# It activates .venv and puts the interface builds (.ros_interfaces: vision_msgs, tf2_msgs) on
# the paths (a package a sourced ROS 2 install provides is not built there).
# Run `make setup` first. DDS discovery is not restricted here: set ROS_LOCALHOST_ONLY /
# ROS_AUTOMATIC_DISCOVERY_RANGE yourself if you want to stay on this machine.
_bev_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
export VIRTUAL_ENV=$_bev_root/.venv
export PATH=$VIRTUAL_ENV/bin:$PATH
_bev_iface=$_bev_root/.ros_interfaces
if [ -d "$_bev_iface/lib" ]; then
  for _bev_site in "$_bev_iface"/lib/python3*/site-packages; do
    [ -d "$_bev_site" ] && export PYTHONPATH=$_bev_site${PYTHONPATH:+:$PYTHONPATH}
  done
  export LD_LIBRARY_PATH=$_bev_iface/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export AMENT_PREFIX_PATH=$_bev_iface${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
fi
export AMENT_PREFIX_PATH=$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
unset _bev_root _bev_iface _bev_site
