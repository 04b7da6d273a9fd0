"""Rebuilding episodes from a robot's recorded topics: step/action alignment, late images, a recording cut
mid-step, lost messages, and clear errors for bags of another robot or image transport."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robot_rl.core.errors import ConfigError
from robot_rl.runtime.robot.import_bag import EpisodeAssembler, bag_cameras
from robot_rl.transport.convert import RobotTopics, image_to_msg, state_to_msg
from robot_rl.transport.messages import Header, String, Time

TOPICS = RobotTopics()


def episode_messages(episode: int, steps: int, start: int, terminal: bool = True) -> list[list[tuple]]:
    """Per step, what the bridge publishes: the camera image and the state (stamped alike), then the report.
    State, image and action of step k are filled with k."""
    out = []
    for k in range(steps + 1):
        header = Header(stamp=Time(sec=start + k, nanosec=0), frame_id="base")
        image = np.full((4, 4, 3), k, np.uint8)
        report = {"episode": episode, "step": k, "stamp": [start + k, 0], "reward": float(k),
                  "terminated": terminal and k == steps, "truncated": False, "success": terminal and k == steps,
                  "held": None, "intervention": k % 2 == 0, "answers": None,
                  "action": None if k == 0 else [float(k), -float(k)]}
        if k == 0:
            report.update(task="push", instruction="push it", control_hz=10.0)
        out.append([(TOPICS.image("front"), image_to_msg(image, header)),
                    (TOPICS.state, state_to_msg(np.array([k, -k], np.float32), ["a", "b"], header)),
                    (TOPICS.step, String(data=json.dumps(report)))])
    return out


def feed(assembler: EpisodeAssembler, messages: list[tuple]) -> list:
    episodes = []
    for topic, msg in messages:
        episodes += assembler.add(topic, msg)
    return episodes + assembler.finish()


def flat(steps: list[list[tuple]]) -> list[tuple]:
    return [m for step in steps for m in step]


def test_alignment_and_a_last_image_that_arrives_after_the_next_episode_began():
    first, second = episode_messages(0, 3, 100), episode_messages(1, 2, 200, terminal=False)
    late = first[-1].pop(0)  # the first episode's last image comes after the second's first report
    messages = flat(first) + flat(second[:1]) + [late] + flat(second[1:])
    assembler = EpisodeAssembler(TOPICS, ["front"])
    episodes = feed(assembler, messages)
    assert [len(e) for e in episodes] == [3, 2] and assembler.skipped == []
    ep = episodes[0]
    # step i: observation i, then the action, reward and flags the arm reported after it (report i + 1)
    np.testing.assert_array_equal(ep.obs["state"][:, 0], [0, 1, 2])
    np.testing.assert_array_equal(ep.obs["images/front"][:, 0, 0, 0], [0, 1, 2])
    np.testing.assert_array_equal(ep.action[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(ep.reward, [1, 2, 3])
    assert ep.terminated.tolist() == [False, False, True] and not ep.truncated.any()
    assert ep.intervention.tolist() == [False, True, False]
    assert ep.final_obs["state"].tolist() == [3, -3] and ep.final_obs["images/front"][0, 0, 0] == 3
    assert (ep.meta.task, ep.meta.instruction, ep.meta.success, ep.meta.source) == ("push", "push it", True, "policy")
    # the recording ended before the robot ended the second: kept, marked cut short
    assert episodes[1].truncated.tolist() == [False, True] and assembler.cut_short == 1
    assert assembler.control_hz == 10.0


def test_a_recording_stopped_mid_step_keeps_the_steps_before():
    steps = episode_messages(0, 4, 100, terminal=False)
    steps[-1].pop(0)  # the recorder stopped after the report, before the last image
    assembler = EpisodeAssembler(TOPICS, ["front"])
    episodes = feed(assembler, flat(steps))
    assert len(episodes) == 1 and len(episodes[0]) == 3 and episodes[0].truncated[-1]


def test_lost_messages_skip_that_episode_only():
    holey, jumpy, good = episode_messages(0, 3, 100), episode_messages(1, 3, 200), episode_messages(2, 2, 300)
    holey[1].pop(0)  # step 1 image lost
    del jumpy[2]  # step 2's messages lost, report included
    assembler = EpisodeAssembler(TOPICS, ["front"])
    episodes = feed(assembler, flat(holey) + flat(jumpy) + flat(good))
    assert [len(e) for e in episodes] == [2]
    assert len(assembler.skipped) == 2
    assert "episode 0" in assembler.skipped[0] and "no ['front'] for step 1" in assembler.skipped[0]
    assert "episode 1" in assembler.skipped[1] and "jump from step 1 to 3" in assembler.skipped[1]


def test_bag_cameras_names_what_is_wrong():
    ours = {TOPICS.step: "std_msgs/msg/String", TOPICS.image("front"): "sensor_msgs/msg/Image",
            TOPICS.image("wrist"): "sensor_msgs/msg/Image", "/robot/joint_states": "sensor_msgs/msg/JointState"}
    assert bag_cameras(ours, TOPICS) == ["front", "wrist"]
    assert bag_cameras(ours, TOPICS, ["wrist"]) == ["wrist"]
    with pytest.raises(ConfigError, match=r"no raw images from \['side'\]; it has \['front', 'wrist'\]"):
        bag_cameras(ours, TOPICS, ["side"])
    with pytest.raises(ConfigError, match=r"step reports on \['/robot/robot_rl/step'\] \(pass --namespace\)"):
        bag_cameras(ours, RobotTopics("/arm2"))
    jpeg = {TOPICS.step: "std_msgs/msg/String",
            "/robot/front/image_raw/compressed": "sensor_msgs/msg/CompressedImage"}
    with pytest.raises(ConfigError, match="are jpeg images; pass --image-transport jpeg"):
        bag_cameras(jpeg, TOPICS)
    assert bag_cameras(jpeg, RobotTopics(image_transport="jpeg")) == ["front"]
