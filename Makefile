# The only set-up a user needs. `make demo` and `make test` do everything from a fresh clone.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
IFACES := .ros_interfaces
TORCH := torch==2.13.0
DEPS_STAMP := $(VENV)/.deps-installed
IFACES_STAMP := $(IFACES)/.built
RUN := source env.sh &&
# pip here warns about each missing local index folder; keep its real messages only.
PIP := $(VENV)/bin/python -m pip install --quiet
QUIET_PIP := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
# Every test and demo run keeps DDS on this machine, in a domain of its own.
LOCAL_DDS := ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOCALHOST_ONLY=1

.PHONY: setup system-tools test demo weights weights-lite bench lint shell clean

setup: system-tools $(DEPS_STAMP) $(IFACES_STAMP)

# xmllint (Debian: libxml2-utils) runs the ament_xmllint test; cmake and a C compiler build
# vision_msgs. Installed with apt when missing (as root, or through sudo).
system-tools:
	@missing=""; \
	command -v xmllint >/dev/null || missing="$$missing libxml2-utils"; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v c++ >/dev/null || missing="$$missing g++"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "Installing Debian packages:$$missing"; \
	  $$sudo apt-get install -y -q $$missing >/dev/null 2>&1 \
	    || { $$sudo apt-get update -q >/dev/null && $$sudo apt-get install -y -q $$missing >/dev/null; } \
	    || { echo "Could not install$$missing with apt-get; install them and rerun."; exit 1; }; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip

$(DEPS_STAMP): $(VENV)/bin/python requirements.txt setup.py
	$(PIP) $(TORCH) $(QUIET_PIP)
	$(PIP) -r requirements.txt $(TORCH) $(QUIET_PIP)
	$(PIP) --no-deps --no-build-isolation -e . $(QUIET_PIP)
	touch $@

$(IFACES_STAMP): $(DEPS_STAMP) tools/build_interfaces.sh $(wildcard interfaces/*/msg/*.msg) \
		$(wildcard interfaces/*/CMakeLists.txt) $(wildcard interfaces/*/package.xml)
	tools/build_interfaces.sh $(VENV) $(abspath $(IFACES))
	touch $@

test: setup
	$(RUN) $(LOCAL_DDS) python -m pytest test -ra

# The synthetic drive comes from training/ (source only); the demo replays it through the node.
demo: setup
	$(RUN) python -m training.demo_drive --out out/demo/drive_bag
	$(RUN) $(LOCAL_DDS) python -m bev_perception.tools.demo --bag out/demo/drive_bag --out out/demo

weights: setup
	$(RUN) python -m training.make_weights

weights-lite: setup
	$(RUN) python -m training.make_weights --profile lite

BENCH_STAMP := $(VENV)/.bench-installed

# spconv (CPU wheel) is only needed for the side-by-side voxelizer benchmark.
$(BENCH_STAMP): $(DEPS_STAMP)
	$(PIP) spconv $(TORCH) $(QUIET_PIP)
	touch $@

bench: setup $(BENCH_STAMP)
	$(RUN) python -m training.demo_drive --frames 40 --workers 1 --out out/bench/node_replay/drive_bag
	$(RUN) $(LOCAL_DDS) python -m bev_perception.tools.bench --out out/bench \
		--node-bag out/bench/node_replay/drive_bag

# Real-data evaluation of the shipped weights on ../shared/real-dev (beside the checkout):
# KITTI LiDAR-only and fused (the extrinsic and intensity scale are training.evaluate's
# KITTI defaults, see training/kitti.py) and the semantic head on the A2D2 camera frames; then
# the KITTI scenes again with every 2nd / 4th laser ring: what a 32- and a 16-beam sensor sees.
REAL_DEV ?= ../shared/real-dev
.PHONY: eval-real
eval-real: setup
	$(RUN) python -m training.evaluate --weights bev_perception/weights/default.safetensors \
		--data $(REAL_DEV)/kitti --format kitti --out out/eval_real/kitti
	$(RUN) python -m training.evaluate --weights bev_perception/weights/default.safetensors \
		--data $(REAL_DEV)/a2d2/camera_lidar_semantic --format a2d2 --semantic-only \
		--out out/eval_real/a2d2_semantic
	$(RUN) python -m training.evaluate --weights bev_perception/weights/lite.safetensors \
		--data $(REAL_DEV)/kitti --format kitti --out out/eval_real/kitti_lite
	$(RUN) python -m training.evaluate --weights bev_perception/weights/lite.safetensors \
		--data $(REAL_DEV)/a2d2/camera_lidar_semantic --format a2d2 --semantic-only \
		--out out/eval_real/a2d2_semantic_lite
	for profile in default lite; do for step in 2 4; do \
		$(RUN) python -m training.evaluate --weights bev_perception/weights/$$profile.safetensors \
			--data $(REAL_DEV)/kitti --format kitti --kitti-ring-step $$step --no-renders \
			--out out/eval_real/kitti_$${profile}_rings$$step || exit 1; done; done

lint: setup
	$(RUN) python -m pytest test/test_lint.py -q

shell: setup
	@echo "Entering a shell with the project environment (exit to leave)."
	@bash --rcfile <(echo 'source ~/.bashrc 2>/dev/null; source env.sh; PS1="(bev) $$PS1"') -i

clean:
	rm -rf $(VENV) $(IFACES) build out .pytest_cache *.egg-info
