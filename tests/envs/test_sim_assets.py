"""Every MJCF under sim/ compiles and steps 1 s of random control with no MuJoCo warning."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from robot_rl.envs.native.assets import sim_dir

SCENES = sorted(p.relative_to(sim_dir()).as_posix() for p in sim_dir().rglob("*.xml"))


def test_scenes_found():
    assert {"panda/panda.xml", "scenes/table.xml", "tasks/reach.xml", "tasks/push.xml", "tasks/lift.xml"} <= set(SCENES)


@pytest.mark.parametrize("scene", SCENES)
def test_scene_steps_without_warnings(scene):
    model = mujoco.MjModel.from_xml_path(str(sim_dir() / scene))
    data = mujoco.MjData(model)
    if model.nkey:
        mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    rng = np.random.default_rng(0)
    low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    steps_per_second = round(1.0 / model.opt.timestep)
    for step in range(steps_per_second):
        if step % 50 == 0:  # new random target every 0.1 s
            data.ctrl[:] = rng.uniform(low, high)
        mujoco.mj_step(model, data)
    warnings = {mujoco.mjtWarning(i).name: int(data.warning[i].number) for i in range(len(data.warning))}
    assert not any(warnings.values()), f"{scene}: MuJoCo warnings {warnings}"
    assert np.all(np.isfinite(data.qpos))


def test_robot_has_home_keyframe_and_classes():
    model = mujoco.MjModel.from_xml_path(str(sim_dir() / "panda/panda.xml"))
    assert model.key("home").qpos.shape == (model.nq,)
    groups = {int(g) for g in model.geom_group}
    assert {2, 3} <= groups  # visual and collision classes
    visual = model.geom_group == 2
    assert np.all(model.geom_contype[visual] == 0) and np.all(model.geom_conaffinity[visual] == 0)
