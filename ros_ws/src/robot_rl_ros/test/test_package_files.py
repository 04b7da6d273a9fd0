"""The package's parameter files name only parameters its nodes declare, and its launch files compile."""

import ast
from pathlib import Path

import yaml

from robot_rl_ros import env_bridge, policy_node, teleop_node

PKG = Path(__file__).resolve().parents[1]
NODES = {"env_bridge": env_bridge.DEFAULTS, "policy_node": policy_node.DEFAULTS, "teleop_node": teleop_node.DEFAULTS}


def test_param_files_match_declared_parameters():
    for path in sorted((PKG / "config").glob("*.yaml")):
        for node, section in yaml.safe_load(path.read_text()).items():
            assert node in NODES, f"{path.name}: unknown node {node}"
            unknown = set(section["ros__parameters"]) - set(NODES[node])
            assert not unknown, f"{path.name}: {node} does not declare {sorted(unknown)}"
            for name, value in section["ros__parameters"].items():
                default = NODES[node][name]
                assert type(value) is type(default) or (isinstance(default, float) and isinstance(value, (int, float))), \
                    f"{path.name}: {node}.{name} is {type(value).__name__}, declared {type(default).__name__}"


def test_launch_files_start_our_nodes_with_our_param_files():
    """No launch/launch_ros wheels exist off a ROS install, so the files are checked as source: each
    defines generate_launch_description, starts only nodes setup.py installs, and loads a param file
    that exists (the sim-in-the-loop test runs the nodes with config/sim.yaml)."""
    scripts = {entry.split("=")[0].strip() for entry in ast.literal_eval(
        (PKG / "setup.py").read_text().split('"console_scripts": ')[1].split("]")[0] + "]")}
    files = sorted((PKG / "launch").glob("*.launch.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
        executables = {kw.value.value for n in ast.walk(tree) if isinstance(n, ast.Call)
                       for kw in n.keywords if kw.arg == "executable"}
        assert executables and executables <= scripts, f"{path.name}: {sorted(executables - scripts)}"
        yamls = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and str(n.value).endswith(".yaml")}
        assert yamls and all((PKG / "config" / y).is_file() for y in yamls), f"{path.name}: {sorted(yamls)}"
