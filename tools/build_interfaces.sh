#!/usr/bin/env bash
# Build the interface packages of interfaces/ (vision_msgs, tf2_msgs) into a private prefix.
# Usage: tools/build_interfaces.sh <venv> <install prefix>
# A package that a sourced ROS 2 install already provides is used from there and not built.
set -euo pipefail
venv=$(cd "$1" && pwd)
prefix=$2
root=$(cd "$(dirname "$0")/.." && pwd)
packages=(vision_msgs tf2_msgs)
declare -A checks=(
  [vision_msgs]='from vision_msgs.msg import Detection3DArray, LabelInfo; Detection3DArray(); LabelInfo()'
  [tf2_msgs]='from tf2_msgs.msg import TFMessage; TFMessage()'
)
own_prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)
outside=${AMENT_PREFIX_PATH:-}

# Our own prefix is on AMENT_PREFIX_PATH in a shell that sourced env.sh: not an external install.
external() {
  local p
  IFS=: read -r -a ament_prefixes <<< "$outside"
  for p in "${ament_prefixes[@]}"; do
    if [ -n "$p" ] && [ "$p" != "$venv" ] && [ "$p" != "$own_prefix" ] \
        && [ -e "$p/share/ament_index/resource_index/packages/$1" ]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

rm -rf "$prefix"
mkdir -p "$prefix"
# The Kilted wheels' CMake targets name include folders of their own build machine. CMake then
# reports a failed generate step although the build works; make the folders exist where we may,
# and judge the configure step by the build files it wrote and the final import instead.
for inc in /opt/python/cp311-cp311/include/python3.11 \
           /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include; do
  [ -d "$inc" ] || mkdir -p "$inc" 2>/dev/null || true
done
export AMENT_PREFIX_PATH=$venv
export PATH=$venv/bin:$PATH
for pkg in "${packages[@]}"; do
  if found=$(external "$pkg"); then
    echo "$pkg: using the sourced ROS 2 install at $found"
    echo "external $found" >> "$prefix/.external"
    continue
  fi
  build=$root/build/$pkg
  rm -rf "$build"
  mkdir -p "$build"
  echo "$pkg: building from interfaces/$pkg (about a minute)"
  cmake -S "$root/interfaces/$pkg" -B "$build" -DCMAKE_PREFIX_PATH="$venv" \
    -DCMAKE_INSTALL_PREFIX="$prefix" -DBUILD_TESTING=OFF \
    -DPython3_EXECUTABLE="$venv/bin/python" > "$build.log" 2>&1 || true
  [ -f "$build/Makefile" ] \
    || { tail -40 "$build.log"; echo "$pkg: cmake configure failed (log: $build.log)"; exit 1; }
  cmake --build "$build" -j2 >> "$build.log" 2>&1 \
    || { tail -40 "$build.log"; echo "$pkg: build failed (log: $build.log)"; exit 1; }
  cmake --install "$build" >> "$build.log" 2>&1 \
    || { tail -40 "$build.log"; echo "$pkg: install failed (log: $build.log)"; exit 1; }
  pysite=$(echo "$prefix"/lib/python3*/site-packages)
  PYTHONPATH=$pysite LD_LIBRARY_PATH=$prefix/lib AMENT_PREFIX_PATH=$prefix:$venv \
    "$venv/bin/python" -c "${checks[$pkg]}" \
    || { echo "$pkg: built, but importing it fails (log: $build.log)"; exit 1; }
  echo "$pkg: installed to $prefix"
done
