#!/usr/bin/env bash
# Build the vision_msgs interface package from interfaces/vision_msgs into a private prefix.
# Usage: tools/build_vision_msgs.sh <venv> <install prefix>
# Skipped when a sourced ROS 2 install already provides vision_msgs (it is then used as is).
set -euo pipefail
venv=$(cd "$1" && pwd)
prefix=$2
root=$(cd "$(dirname "$0")/.." && pwd)
own_prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)

# Our own prefix is on AMENT_PREFIX_PATH in a shell that sourced env.sh: not an external install.
IFS=: read -r -a ament_prefixes <<< "${AMENT_PREFIX_PATH:-}"
for p in "${ament_prefixes[@]}"; do
  if [ -n "$p" ] && [ "$p" != "$venv" ] && [ "$p" != "$own_prefix" ] && [ -e "$p/share/ament_index/resource_index/packages/vision_msgs" ]; then
    echo "vision_msgs: using the sourced ROS 2 install at $p"
    mkdir -p "$prefix" && echo "external $p" > "$prefix/.external"
    exit 0
  fi
done

build=$root/build/vision_msgs
rm -rf "$build" "$prefix"
mkdir -p "$build"
# The Kilted wheels' CMake targets name include folders of their own build machine. CMake then
# reports a failed generate step although the build works; make the folders exist where we may,
# and judge the configure step by the build files it wrote and the final import instead.
for inc in /opt/python/cp311-cp311/include/python3.11 \
           /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include; do
  [ -d "$inc" ] || mkdir -p "$inc" 2>/dev/null || true
done
export AMENT_PREFIX_PATH=$venv
export PATH=$venv/bin:$PATH
echo "vision_msgs: building from interfaces/vision_msgs (about a minute)"
cmake -S "$root/interfaces/vision_msgs" -B "$build" -DCMAKE_PREFIX_PATH="$venv" \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DBUILD_TESTING=OFF \
  -DPython3_EXECUTABLE="$venv/bin/python" > "$build.log" 2>&1 || true
[ -f "$build/Makefile" ] \
  || { tail -40 "$build.log"; echo "vision_msgs: cmake configure failed (log: $build.log)"; exit 1; }
cmake --build "$build" -j2 >> "$build.log" 2>&1 \
  || { tail -40 "$build.log"; echo "vision_msgs: build failed (log: $build.log)"; exit 1; }
cmake --install "$build" >> "$build.log" 2>&1 \
  || { tail -40 "$build.log"; echo "vision_msgs: install failed (log: $build.log)"; exit 1; }
pysite=$(echo "$prefix"/lib/python3*/site-packages)
PYTHONPATH=$pysite LD_LIBRARY_PATH=$prefix/lib AMENT_PREFIX_PATH=$prefix:$venv \
  "$venv/bin/python" -c 'from vision_msgs.msg import Detection3DArray, LabelInfo; Detection3DArray(); LabelInfo()' \
  || { echo "vision_msgs: built, but 'import vision_msgs.msg' fails (log: $build.log)"; exit 1; }
echo "vision_msgs: installed to $prefix"
