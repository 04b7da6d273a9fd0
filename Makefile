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

DEMO_DIR      ?= data/quickstart
DEMO_TASK     ?= push
DEMO_EPISODES ?= 100
DEMO_STEPS    ?= 6500
EVAL_EPISODES ?= 50
CRITIC_STEPS  ?= 2000

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

# The main job on the embedded default: demos, behaviour cloning, evaluation. Reuses what exists.
demo: $(VENV)/.installed
	$(RR) tasks
	test -d $(DEMO_DIR)/demos.zarr || \
	  $(RR) collect --task $(DEMO_TASK) --episodes $(DEMO_EPISODES) --out $(DEMO_DIR)/demos.zarr
	$(RR) info $(DEMO_DIR)/demos.zarr
	$(RR) video $(DEMO_DIR)/demos.zarr --episode 0 --out $(DEMO_DIR)/demo_episode0.mp4
	$(RR) pretrain --policy flow --data $(DEMO_DIR)/demos.zarr --out $(DEMO_DIR)/bc_flow --steps $(DEMO_STEPS) \
	  $$(test -d $(DEMO_DIR)/bc_flow/checkpoints && echo --resume)
	$(RR) eval --checkpoint $(DEMO_DIR)/bc_flow --episodes $(EVAL_EPISODES) --video $(DEMO_DIR)/bc_flow/eval_videos
	test -d $(DEMO_DIR)/critic_demos.zarr || $(RR) collect --task $(DEMO_TASK) --episodes 40 --extra-steps 3 \
	  --seed 20000 --out $(DEMO_DIR)/critic_demos.zarr
	test -d $(DEMO_DIR)/critic_failed.zarr || $(RR) collect --task $(DEMO_TASK) --episodes 15 --noise 1.0 \
	  --max-steps 40 --seed 30000 --out $(DEMO_DIR)/critic_failed.zarr
	$(RR) critic train --data $(DEMO_DIR)/critic_demos.zarr $(DEMO_DIR)/critic_failed.zarr \
	  --out $(DEMO_DIR)/critic --steps $(CRITIC_STEPS) $$(test -f $(DEMO_DIR)/critic/train_state.pt && echo --resume)
	$(RR) critic eval --checkpoint $(DEMO_DIR)/critic --data $(DEMO_DIR)/critic_demos.zarr $(DEMO_DIR)/critic_failed.zarr
	$(RR) critic plot --checkpoint $(DEMO_DIR)/critic --data $(DEMO_DIR)/critic_demos.zarr --episode 0 \
	  --failed-data $(DEMO_DIR)/critic_failed.zarr --out $(DEMO_DIR)/critic/value_curves.png

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check robot_rl tests benchmarks

clean-venv:
	rm -rf $(VENV)
