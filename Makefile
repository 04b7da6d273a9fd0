# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
RR     := $(VENV)/bin/robot-rl
# The CPU build on the development machines; an unpinned torch pulls several GB of CUDA wheels.
TORCH_PIN ?= torch==2.13.0

export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1

# The rclpy environment of the ROS 2 tests (third-party Jazzy wheels from PyPI, see ros_ws/README.md): its
# own venv, because those wheels re-execute Python with their own LD_LIBRARY_PATH.
ROS_VENV   ?= .venv-ros
ROS_WHEELS := "ros-rclpy[fastrtps]==7.1.6" ros-sensor-msgs==5.3.6 ros-std-msgs==5.3.6 ros-ament-package \
              colcon-common-extensions

# robosuite 1.5 needs numpy<2 and opencv-python (not headless): its own venv, like .venv-ros. Tests marked
# `robosuite` run there (the main venv skips them, saying why).
RS_VENV ?= .venv-robosuite
# LIBERO pins robosuite 1.4 (and through robomimic an unpinned torchvision): its own venv too. Its scene assets
# are not on PyPI: LIBERO_ASSETS is a local copy (../shared/libero-assets/assets where there is one).
LIBERO_VENV   ?= .venv-libero
LIBERO_ASSETS ?= $(firstword $(wildcard ../shared/libero-assets/assets shared/libero-assets/assets))

DEMO_CONFIG   ?= configs/quickstart.yaml
DEMO_DIR      ?= data/quickstart

.PHONY: demo test lint clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e .
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('$(subst torch==,,$(TORCH_PIN))') else f'torch {v} replaced the pinned $(TORCH_PIN)')"
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install -q -e ".[dev,ros,dist,data]"
	touch $@

# Never fails: where the wheels cannot be installed, it records why in $(ROS_VENV)/UNAVAILABLE and the ROS 2
# tests skip with that reason. colcon needs setuptools<80.
$(ROS_VENV)/.ready: pyproject.toml
	mkdir -p $(ROS_VENV)
	rm -f $(ROS_VENV)/UNAVAILABLE
	( test -x $(ROS_VENV)/bin/python || $(PYTHON) -m venv $(ROS_VENV) ) > $(ROS_VENV)/install.log 2>&1 && \
	$(ROS_VENV)/bin/pip install -q $(TORCH_PIN) >> $(ROS_VENV)/install.log 2>&1 && \
	$(ROS_VENV)/bin/pip install -q $(ROS_WHEELS) >> $(ROS_VENV)/install.log 2>&1 && \
	$(ROS_VENV)/bin/pip install -q -e ".[ros]" "setuptools<80" >> $(ROS_VENV)/install.log 2>&1 && \
	$(ROS_VENV)/bin/python -c "import rclpy, sensor_msgs.msg, torch, robot_rl.transport" >> $(ROS_VENV)/install.log 2>&1 \
	|| { cp $(ROS_VENV)/install.log $(ROS_VENV)/UNAVAILABLE; \
	     echo "rclpy environment could not be built (see $(ROS_VENV)/UNAVAILABLE): the ROS 2 tests will skip"; }
	touch $@

# Never fails: where robosuite cannot be installed, it records why in $(RS_VENV)/UNAVAILABLE and the robosuite
# tests skip with that reason.
$(RS_VENV)/.ready: pyproject.toml
	mkdir -p $(RS_VENV)
	rm -f $(RS_VENV)/UNAVAILABLE
	( test -x $(RS_VENV)/bin/python || $(PYTHON) -m venv $(RS_VENV) ) > $(RS_VENV)/install.log 2>&1 && \
	$(RS_VENV)/bin/pip install -q $(TORCH_PIN) >> $(RS_VENV)/install.log 2>&1 && \
	$(RS_VENV)/bin/pip install -q -e ".[robosuite,dev]" >> $(RS_VENV)/install.log 2>&1 && \
	$(RS_VENV)/bin/python -c "import robosuite, torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('$(subst torch==,,$(TORCH_PIN))') else f'torch {v} replaced the pinned $(TORCH_PIN)')" >> $(RS_VENV)/install.log 2>&1 \
	|| { cp $(RS_VENV)/install.log $(RS_VENV)/UNAVAILABLE; \
	     echo "robosuite environment could not be built (see $(RS_VENV)/UNAVAILABLE): the robosuite tests will skip"; }
	touch $@

# Never fails: where LIBERO cannot be installed, it records why in $(LIBERO_VENV)/UNAVAILABLE; without assets the
# LIBERO tests skip saying where they looked.
$(LIBERO_VENV)/.ready: pyproject.toml
	mkdir -p $(LIBERO_VENV)
	rm -f $(LIBERO_VENV)/UNAVAILABLE
	( test -x $(LIBERO_VENV)/bin/python || $(PYTHON) -m venv $(LIBERO_VENV) ) > $(LIBERO_VENV)/install.log 2>&1 && \
	$(LIBERO_VENV)/bin/pip install -q $(TORCH_PIN) torchvision==0.28.0 libero==0.1.1 mujoco==3.9.0 >> $(LIBERO_VENV)/install.log 2>&1 && \
	$(LIBERO_VENV)/bin/pip install -q -e ".[dev]" mujoco==3.9.0 >> $(LIBERO_VENV)/install.log 2>&1 && \
	$(LIBERO_VENV)/bin/python -c "import importlib.util, torch, sys; spec = importlib.util.find_spec('libero'); v = torch.__version__; sys.exit(0 if spec and v.startswith('$(subst torch==,,$(TORCH_PIN))') else f'libero {spec}, torch {v}')" >> $(LIBERO_VENV)/install.log 2>&1 \
	|| { cp $(LIBERO_VENV)/install.log $(LIBERO_VENV)/UNAVAILABLE; \
	     echo "LIBERO environment could not be built (see $(LIBERO_VENV)/UNAVAILABLE): the LIBERO tests will skip"; }
	test -f $(LIBERO_VENV)/UNAVAILABLE || test -z "$(LIBERO_ASSETS)" || \
	  ln -sfn "$$(realpath $(LIBERO_ASSETS))" "$$($(LIBERO_VENV)/bin/python -c 'import importlib.util, pathlib; print(pathlib.Path(next(iter(importlib.util.find_spec("libero").submodule_search_locations))) / "libero" / "assets")')"
	touch $@

# The main job on the embedded default: demos -> BC -> progress critic -> the off-policy chunk learner on the critic's reward
# -> evaluation before and after. Every stage found complete in $(DEMO_DIR) is reused; an interrupted
# run resumes from its last checkpoint.
demo: $(VENV)/.installed
	$(RR) tasks
	$(RR) train $(DEMO_CONFIG) --out=$(DEMO_DIR)
	$(RR) video $(DEMO_DIR)/demos.zarr --episode 0 --out $(DEMO_DIR)/demo_episode0.mp4
	$(RR) critic plot --checkpoint $(DEMO_DIR)/critic --data $(DEMO_DIR)/demos.zarr --episode 0 \
	  --failed-data $(DEMO_DIR)/failures.zarr --out $(DEMO_DIR)/critic/value_curves.png

test: $(VENV)/.dev-installed $(ROS_VENV)/.ready $(RS_VENV)/.ready $(LIBERO_VENV)/.ready
	$(PY) -m pytest -q
	test -f $(RS_VENV)/UNAVAILABLE || $(RS_VENV)/bin/python -m pytest -q -m robosuite tests/envs
	test -f $(RS_VENV)/UNAVAILABLE || $(RS_VENV)/bin/python -m pytest -q tests/replay/test_store.py tests/replay/test_integrity.py  # the store on zarr 3.1.5 / numpy<2
	test -f $(LIBERO_VENV)/UNAVAILABLE || LIBERO_CONFIG_PATH=$(CURDIR)/$(LIBERO_VENV)/libero-config \
	  $(LIBERO_VENV)/bin/python -m pytest -q -m libero tests/envs

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check robot_rl tests benchmarks

clean-venv:
	rm -rf $(VENV)
