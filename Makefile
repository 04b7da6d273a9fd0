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
	$(PIP) install -q -e ".[dev]"
	touch $@

# The main job on the embedded default: demos -> BC -> progress critic -> ReinFlow on the critic's reward
# -> evaluation before and after. Every stage found complete in $(DEMO_DIR) is reused; an interrupted
# run resumes from its last checkpoint.
demo: $(VENV)/.installed
	$(RR) tasks
	$(RR) train $(DEMO_CONFIG) --out=$(DEMO_DIR)
	$(RR) video $(DEMO_DIR)/demos.zarr --episode 0 --out $(DEMO_DIR)/demo_episode0.mp4
	$(RR) critic plot --checkpoint $(DEMO_DIR)/critic --data $(DEMO_DIR)/demos.zarr --episode 0 \
	  --failed-data $(DEMO_DIR)/failures.zarr --out $(DEMO_DIR)/critic/value_curves.png

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check robot_rl tests benchmarks

clean-venv:
	rm -rf $(VENV)
