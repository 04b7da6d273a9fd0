"""`robot-rl import --format robomimic` as a real process, on small HDF5 files laid out as robomimic's."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from robot_rl.replay.store import EpisodeStore
from robot_rl.runtime.data.robomimic import import_robomimic
from tests.cli.test_cli import assert_clean_error, run
from tests.runtime.training.test_pretrain_eval import TINY

STEPS = 12
NUMBERS = [0, 1, 2, 10]  # demo_10 must come after demo_2, not after demo_1
# how the push task's 22-D state is split into robomimic keys
SPLIT = {"robot0_eef_pos": (0, 3), "robot0_eef_quat": (3, 7), "robot0_gripper_qpos": (7, 9), "object": (9, 22)}


def _demo_arrays(ep, failed: bool) -> dict[str, np.ndarray]:
    """A robomimic demo's datasets from the first STEPS steps of a real push episode."""
    def rows(key):  # obs rows with the observation after the last kept step appended
        whole = np.concatenate([ep.obs[key], ep.final_obs[key][None]])
        return whole[:STEPS + 1]

    state = rows("state").astype(np.float64)  # robomimic stores low-dim obs as float64
    arrays = {"agentview_image": rows("images/front"), "robot0_eye_in_hand_image": rows("images/wrist")}
    arrays.update({k: state[:, a:b] for k, (a, b) in SPLIT.items()})
    rewards = np.zeros(STEPS)
    dones = np.zeros(STEPS, dtype=np.int64)
    if not failed:
        rewards[-3:] = 1.0
        dones[-3:] = 1  # robomimic's done_mode 2: done on every success step, and at the end
    return {**{f"obs/{k}": v[:STEPS] for k, v in arrays.items()}, **{f"next_obs/{k}": v[1:] for k, v in arrays.items()},
            "actions": ep.action[:STEPS].astype(np.float64), "rewards": rewards, "dones": dones,
            "states": np.random.default_rng(0).normal(size=(STEPS, 30))}


def write_robomimic(path, push_episodes, numbers=NUMBERS, env_name="Lift", nan_demo=None, failed=(1,)):
    demos = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": env_name, "type": 1, "env_kwargs": {
            "control_freq": 20, "camera_names": ["agentview", "robot0_eye_in_hand"], "camera_heights": 32}})
        for n, ep in zip(numbers, push_episodes, strict=False):
            assert len(ep) >= STEPS
            arrays = _demo_arrays(ep, failed=n in failed)
            if n == nan_demo:
                arrays["actions"][4, 2] = np.nan
            group = data.create_group(f"demo_{n}")
            group.attrs["num_samples"] = STEPS
            for key, value in arrays.items():
                group.create_dataset(key, data=value)
            demos[n] = arrays
        data.attrs["total"] = STEPS * len(demos)
        mask = f.create_group("mask")
        mask.create_dataset("train", data=np.array([f"demo_{n}".encode() for n in numbers[:-1]]))
        mask.create_dataset("valid", data=np.array([f"demo_{numbers[-1]}".encode()]))
    return demos


@pytest.fixture
def hdf5(tmp_path, push_episodes):
    path = tmp_path / "lift_ph.hdf5"
    return path, write_robomimic(path, push_episodes)


def test_import_keeps_every_step(tmp_path, hdf5):
    path, demos = hdf5
    store_path = tmp_path / "lift.zarr"
    proc = run("import", str(path), "--format", "robomimic", "--out", str(store_path), "--quiet", "--json")
    assert f"imported 4 episodes ({4 * STEPS} steps, 0 operator steps)" in proc.stdout
    assert json.loads(proc.stdout.splitlines()[-1])["skipped"] == []
    with EpisodeStore.open(store_path) as store:
        store.verify()
        assert store.num_episodes == 4
        assert list(store.episode_ends) == [STEPS * (i + 1) for i in range(4)]
        for i, n in enumerate(NUMBERS):
            a = demos[n]
            ep = store.episode(i)
            state = np.concatenate([a[f"obs/{k}"] for k in ("robot0_eef_pos", "robot0_eef_quat",
                                                              "robot0_gripper_qpos")], axis=1)
            np.testing.assert_array_equal(ep.obs["state"], state.astype(np.float32))
            assert ep.obs["state"].dtype == np.float32 and ep.action.dtype == np.float32
            np.testing.assert_array_equal(ep.action, a["actions"].astype(np.float32))
            np.testing.assert_array_equal(ep.obs["images/agentview"], a["obs/agentview_image"])
            np.testing.assert_array_equal(ep.obs["images/robot0_eye_in_hand"], a["obs/robot0_eye_in_hand_image"])
            np.testing.assert_array_equal(ep.final_obs["images/agentview"], a["next_obs/agentview_image"][-1])
            np.testing.assert_array_equal(ep.final_obs["state"], np.concatenate(
                [a[f"next_obs/{k}"][-1] for k in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")]
            ).astype(np.float32))
            np.testing.assert_array_equal(ep.reward, a["rewards"].astype(np.float32))
            assert list(ep.terminated) == [False] * (STEPS - 1) + [bool(a["dones"][-1])]
            np.testing.assert_array_equal(ep.success, a["rewards"] > 0)
            assert list(ep.truncated) == [False] * (STEPS - 1) + [n == 1]  # demo_1 does not end done
            assert not ep.intervention.any()
            assert ep.meta.task == "robosuite/Lift" and ep.meta.instruction == "lift the cube"
            assert ep.meta.seed == n and ep.meta.source == "expert" and ep.meta.success == (n != 1)
        assert store.env_config is None


def test_imported_store_pretrains(tmp_path, hdf5):
    path, _ = hdf5
    store_path = tmp_path / "lift.zarr"
    run("import", str(path), "--format", "robomimic", "--out", str(store_path), "--quiet")
    out = tmp_path / "run"
    run("pretrain", "--policy", "flow", "--data", str(store_path), "--out", str(out), "--steps", "4", "--quiet",
        "--", *TINY)
    assert (out / "policy" / "model.safetensors").is_file()


def test_feature_map_and_image_size(tmp_path, hdf5):
    path, demos = hdf5
    fmap = tmp_path / "map.yaml"
    fmap.write_text("cameras:\n  wrist: obs/robot0_eye_in_hand_image\n"
                    "state: [object, obs/robot0_gripper_qpos]\naction: actions\n"
                    "task: lift_ph\ninstruction: pick up the cube\n")
    store_path = tmp_path / "small.zarr"
    run("import", str(path), "--format", "robomimic", "--out", str(store_path), "--map", str(fmap),
        "--image-size", "16", "--quiet")
    with EpisodeStore.open(store_path) as store:
        ep = store.episode(3)
        a = demos[NUMBERS[3]]
        assert sorted(ep.obs) == ["images/wrist", "state"]
        assert ep.obs["images/wrist"].shape == (STEPS, 16, 16, 3)
        assert ep.final_obs["images/wrist"].shape == (16, 16, 3)
        # an area-filtered 32 -> 16 resize is the mean of each 2x2 block (within rounding)
        block_means = a["obs/robot0_eye_in_hand_image"].reshape(STEPS, 16, 2, 16, 2, 3).mean(axis=(2, 4))
        assert np.abs(ep.obs["images/wrist"].astype(float) - block_means).max() <= 1
        np.testing.assert_array_equal(ep.obs["state"], np.concatenate(
            [a["obs/object"], a["obs/robot0_gripper_qpos"]], axis=1).astype(np.float32))
        assert ep.meta.task == "lift_ph" and ep.meta.instruction == "pick up the cube"


def test_flip_images_and_no_next_obs(tmp_path, push_episodes):
    path = tmp_path / "flip.hdf5"
    demos = write_robomimic(path, push_episodes[:2], numbers=[0, 1], env_name="Unregistered")
    with h5py.File(path, "a") as f:
        del f["data/demo_0/next_obs"]
    summary = import_robomimic(path, tmp_path / "flip.zarr", progress=False, flip_images=True)
    assert summary.episodes == 2 and summary.notes == []
    with EpisodeStore.open(tmp_path / "flip.zarr") as store:
        ep = store.episode(0)
        np.testing.assert_array_equal(ep.obs["images/agentview"], demos[0]["obs/agentview_image"][:, ::-1])
        # without next_obs the last observation is repeated as the final one
        np.testing.assert_array_equal(ep.final_obs["state"], ep.obs["state"][-1])
        assert ep.meta.task == "robosuite/Unregistered" and ep.meta.instruction == ""


def test_bad_demo_is_skipped_by_name(tmp_path, push_episodes):
    path = tmp_path / "nan.hdf5"
    write_robomimic(path, push_episodes, nan_demo=2)
    with h5py.File(path, "a") as f:  # a demo whose images are one step short
        short = f["data/demo_10/obs/agentview_image"][:-1]
        del f["data/demo_10/obs/agentview_image"]
        f["data/demo_10/obs/agentview_image"] = short
    store_path = tmp_path / "nan.zarr"
    proc = run("import", str(path), "--format", "robomimic", "--out", str(store_path), "--quiet")
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith(f"imported 2 episodes ({2 * STEPS} steps") and "skipped 2: demo_2: " in line
    assert "not finite" in line and "demo_10: obs/agentview_image has 11 steps" in line
    with EpisodeStore.open(store_path) as store:
        assert [int(s) for s in store.episode_field("seed")] == [0, 1]


def test_bad_inputs_give_one_clean_line(tmp_path, push_episodes):
    out = tmp_path / "out.zarr"

    def fails(source, *extra, fragments):
        assert_clean_error(run("import", str(source), "--format", "robomimic", "--out", str(out), "--quiet", *extra,
                               check=False), *fragments)
        assert not out.exists()
        assert not list(tmp_path.glob(".out.zarr*")), "scratch store left behind"

    text = tmp_path / "notes.hdf5"
    text.write_text("not an HDF5 file\n")
    fails(text, fragments=[str(text), "not a readable HDF5 file"])
    fails(tmp_path / "missing.hdf5", fragments=["missing.hdf5", "not a file"])

    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        f.create_group("data").attrs["env_args"] = json.dumps({"env_name": "Lift"})
    fails(empty, fragments=[str(empty), "no demos"])
    nodata = tmp_path / "nodata.hdf5"
    with h5py.File(nodata, "w") as f:
        f.create_group("something")
    fails(nodata, fragments=[str(nodata), "no 'data' group"])

    good = tmp_path / "good.hdf5"
    write_robomimic(good, push_episodes[:1], numbers=[0])
    fmap = tmp_path / "map.yaml"
    fmap.write_text("state: [robot0_joint_pos]\n")
    fails(good, "--map", str(fmap), fragments=["'robot0_joint_pos'", "robot0_eef_pos", str(good)])
    with h5py.File(good, "a") as f:
        f["data"].attrs["env_args"] = "{not json"
    fails(good, fragments=[str(good), "env_args"])
