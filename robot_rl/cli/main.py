"""``robot-rl``: parse arguments, call the library, print results; errors are one line, no traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from robot_rl import __version__
from robot_rl.core.errors import ConfigError, RobotRLError


def _cmd_tasks(args: argparse.Namespace) -> int:
    from robot_rl.envs import get_task, task_names

    rows = [get_task(n) for n in task_names()]
    if args.json:
        print(json.dumps([{"name": t.name, "suite": t.suite, "instruction": t.instruction} for t in rows]))
        return 0
    from robot_rl.envs.registry import task_families

    width = max(len(t.name) for t in rows)
    for t in rows:
        print(f"{t.name:<{width}}  [{t.suite}]  {t.instruction}")
    print("also by name: " + ", ".join(f"{prefix}<{'env' if prefix == 'robosuite/' else 'index'}>"
                                       for prefix in task_families()))
    return 0


def _cmd_teleop(args: argparse.Namespace) -> int:
    from robot_rl.config import EnvConfig
    from robot_rl.hil.readers import open_device
    from robot_rl.runtime.robot.teleop import record_teleop

    config = EnvConfig(task=args.task, control_hz=args.control_hz, max_steps=args.max_steps)
    if args.cameras is not None:
        config.cameras = [c for c in args.cameras.split(",") if c]
    config.validate()
    device, reader = open_device(args.device, args.device_path)
    keys = {f: b for f, b in device.map.buttons.items()}
    print(f"teleop {config.task} with {args.device}: buttons {keys}; recording into {args.out}", file=sys.stderr)
    result = record_teleop(config, device, reader, args.out, args.episodes, seed=args.seed)
    print(json.dumps(result))
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from robot_rl.config import EnvConfig, load_config
    from robot_rl.runtime.training.collect import collect_demos

    config = load_config(EnvConfig, args.config, args.overrides)
    if args.task is not None:
        config.task = args.task
    if args.cameras is not None:
        config.cameras = [c for c in args.cameras.split(",") if c]
    if args.image_size is not None:
        config.image_size = args.image_size
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    result = collect_demos(
        config, args.episodes, args.out, noise=args.noise, seed=args.seed,
        append=args.append, overwrite=args.overwrite, progress=not args.quiet, extra_steps=args.extra_steps,
    )
    print(
        f"collected {result.episodes} episodes ({result.steps} steps) of {config.task} into {args.out}: "
        f"success rate {result.success_rate:.3f}"
    )
    return 0


def _human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


def _cmd_info(args: argparse.Namespace) -> int:
    from robot_rl.core.errors import StoreCorruptError
    from robot_rl.replay.integrity import check_store
    from robot_rl.replay.store import EpisodeStore

    report = check_store(args.path, deep=args.verify, progress=args.verify and not (args.json or args.quiet))
    summary, unreadable = None, None
    try:
        summary = EpisodeStore.open(args.path).summary()
    except StoreCorruptError as exc:
        unreadable = str(exc)
    if args.json:
        print(json.dumps({**(summary or {"path": str(args.path), "error": unreadable}), "integrity": report.to_dict()}))
        return 0 if report.ok and unreadable is None else 1
    if summary is not None:
        print(f"store        {summary['path']} (version {summary['version']})")
        print(f"episodes     {summary['episodes']}")
        print(f"steps        {summary['steps']}")
        print(f"success rate {summary['success_rate']:.3f}")
        print(f"tasks        {', '.join(f'{k} ({v})' for k, v in summary['tasks'].items()) or '-'}")
        print(f"sources      {', '.join(f'{k} ({v})' for k, v in summary['sources'].items()) or '-'}")
        print(f"size on disk {_human_size(summary['size_bytes'])}")
        for key, spec in summary["fields"].items():
            print(f"  {key:<22} {spec['dtype']:<6} {tuple(spec['shape'])}")
        for key, rows in summary["extras"].items():
            print(f"  extras/{key:<15} {rows} rows committed")
    else:
        print(f"store        {args.path}: cannot be read")
    _print_integrity(report)
    if unreadable is not None:
        print(f"robot-rl info: error: {unreadable}", file=sys.stderr)
        return 1
    return 0 if report.ok else 1


def _print_integrity(report) -> None:
    state = "OK" if report.ok else "DAMAGED"
    print(f"integrity    {state if report.deep else 'metadata ' + state} (version {report.version}"
          f"{', every chunk read' if report.deep else '; chunks not read: add --verify'})")
    for line in report.checked:
        print(f"  checked      {line}")
    for line in report.unchecked:
        print(f"  not checked  {line}")
    for damage in report.damage:
        print(f"  damage       {damage.describe()}")
    if report.leftovers:
        print(f"  note         {report.leftovers} temporary file(s) of an interrupted writer (removed by the next one)")
    if report.deep and not report.ok:
        lost = [e.index for e in report.episodes if not e.keep]
        damaged = sorted(report.damaged_episodes())
        if lost:
            print(f"damaged episodes {_index_ranges(damaged)}: repair drops {_index_ranges(lost)}"
                  f"{' and keeps the others' if len(lost) < len(damaged) else ''}")
        else:
            print(f"damaged episodes {_index_ranges(damaged)}: repair keeps all of them (their damage is undone "
                  "from a second copy, or hits only derived extras)")
    if not report.ok:
        hint = "`robot-rl info --verify` lists the damaged episodes; " if not report.deep else ""
        print(f"{hint}`robot-rl repair {report.path} --out NEW` keeps every intact episode")


def _index_ranges(indices: list[int]) -> str:
    from robot_rl.replay.integrity import index_ranges

    return index_ranges(indices)


def _cmd_repair(args: argparse.Namespace) -> int:
    from robot_rl.replay.repair import repair_store

    result = repair_store(args.path, out=args.out, in_place=args.in_place, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0 if result.out is not None or result.report.ok else 1
    report = result.report
    print(f"{args.path}: {report.num_episodes} episodes; {len(result.kept)} intact"
          f"{f' ({len(result.restored)} restored from a second copy)' if result.restored else ''}, "
          f"{len(result.dropped)} lost")
    for verb, reasons in (("drop", result.dropped), ("keep", result.restored)):
        grouped: dict[str, list[int]] = {}
        for index, why in reasons.items():
            grouped.setdefault("; ".join(why), []).append(index)
        for why, indices in grouped.items():
            print(f"  {verb} episode{'s' if len(indices) > 1 else ''} {_index_ranges(indices)}: {why}")
    for name, (kept, before) in result.extras_rows.items():
        if kept != before:
            print(f"  extras/{name}: {kept} of {before} rows kept (the rest is damaged or follows damage; "
                  "recompute it, e.g. `robot-rl critic relabel`)")
    if result.out is None:
        if report.ok and report.version >= 2:
            print("the store is intact: nothing to repair")
            return 0
        print("dry run: nothing written. --out NEW writes the intact episodes into a new store; --in-place "
              "replaces the store, keeping the damaged original beside it")
        return 0 if report.ok else 1
    if result.backup is not None:
        print(f"repaired in place: {result.out} (the damaged original is kept at {result.backup})")
    else:
        print(f"wrote {len(result.kept)} episodes into {result.out} (verified); {args.path} is untouched")
    return 0


def _cmd_video(args: argparse.Namespace) -> int:
    from robot_rl.replay.store import EpisodeStore
    from robot_rl.replay.video import export_episode_video

    store = EpisodeStore.open(args.path)
    out = export_episode_video(store, args.episode, args.out, fps=args.fps)
    print(f"wrote {out} (episode {args.episode}, {store.episode_meta(args.episode).task})")
    return 0


def _split_overrides(overrides: list[str], prefix: str = "policy") -> tuple[list[str], dict]:
    """``--<prefix>.<field>=value`` go to a sub-config (values parsed as YAML); the rest to draccus."""
    import yaml

    rest, policy = [], {}
    for item in overrides:
        if item.startswith(f"--{prefix}."):
            key, sep, value = item[len(prefix) + 3 :].partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r} must look like --{prefix}.<field>=<value>")
            policy[key] = yaml.safe_load(value)
        else:
            rest.append(item)
    return rest, policy


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from robot_rl.config import load_config
    from robot_rl.runtime.training.pretrain import PretrainConfig, Pretrainer

    rest, policy_fields = _split_overrides(args.overrides)
    cfg = load_config(PretrainConfig, args.config, rest)
    cfg.policy.update(policy_fields)
    for name in ("steps", "batch_size", "max_minutes", "seed"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    trainer = Pretrainer(args.policy, args.data, args.out, cfg, resume=args.resume, progress=not args.quiet)
    result = trainer.train()
    print(f"trained {args.policy} to step {result['steps']} ({result['trained_steps']} this run, "
          f"{result['wall_s']:.0f} s); policy in {Path(args.out) / 'policy'}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from robot_rl.config import load_config
    from robot_rl.runtime.training.job import TrainJobConfig, run_job

    overrides = [o for o in args.overrides if o != "--quiet"]
    quiet = args.quiet or len(overrides) != len(args.overrides)
    # --ray.address=auto is short for --rl.distributed.ray.address=auto (and so for every rl.distributed.ray field)
    overrides = ["--rl.distributed." + o[2:] if o.startswith("--ray.") else o for o in overrides]
    cfg = load_config(TrainJobConfig, args.config, overrides)
    summary = run_job(cfg, progress=not quiet)
    print(json.dumps({k: summary[k] for k in ("success_before", "success_after", "env_steps", "wall_s")}))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from robot_rl.runtime.training.evaluate import EVAL_SEED, env_config_for, evaluate, load_checkpoint

    policy, saved_env = load_checkpoint(args.checkpoint)
    if args.suite:
        return _eval_suite(policy, saved_env, args)
    task = args.task or (saved_env or {}).get("task")
    if task is None:
        raise ConfigError("pass --task: the checkpoint does not record the task of its demos")
    env_cfg = _with_max_steps(env_config_for(policy, task, saved_env), args.max_steps)
    seed = args.seed if args.seed is not None else EVAL_SEED
    if args.record:
        result = _eval_recorded(policy, env_cfg, args, seed)
    else:
        result = evaluate(policy, env_cfg, args.episodes, seed=seed, steps=args.steps,
                          temporal_ensemble=args.temporal_ensemble, video_dir=args.video,
                          progress=not args.quiet and not args.json)
    if args.json:
        print(json.dumps(result))
    else:
        low, high = result["success_ci95"]
        latency = f", {result['latency_ms']:.1f} ms per chunk" if "latency_ms" in result else ""
        print(f"{task}: success {result['success_rate']:.3f} (95% CI {low:.2f}-{high:.2f}) over "
              f"{result['episodes']} episodes, mean length {result['mean_length']:.1f}{latency}")
        if args.record:
            print(f"episodes committed to {args.record}")
    return 0


def _with_max_steps(env_cfg, max_steps: int | None):
    """The env config with ``--max-steps`` as its episode time limit (a quick look, or a smoke test)."""
    import dataclasses

    if max_steps is None:
        return env_cfg
    env_cfg = dataclasses.replace(env_cfg, max_steps=max_steps)
    env_cfg.validate()
    return env_cfg


def _eval_suite(policy, saved_env, args: argparse.Namespace) -> int:
    """Every task of a suite (``--suite libero_spatial``): the per-task table as CSV, JSON and a bar plot."""
    from robot_rl.runtime.training.evaluate import EVAL_SEED, env_config_for
    from robot_rl.runtime.training.suite_eval import evaluate_suite

    if args.task or args.record or args.video or args.temporal_ensemble is not None:
        raise ConfigError("--suite evaluates every task of the suite: drop --task, --record, --video and "
                          "--temporal-ensemble")
    base = _with_max_steps(env_config_for(policy, args.suite, saved_env), args.max_steps)
    seed = args.seed if args.seed is not None else EVAL_SEED
    out = args.out or f"data/eval_{args.suite}"
    result = evaluate_suite(policy, base, args.suite, args.episodes, out, seed, steps=args.steps,
                            progress=not args.quiet and not args.json)
    if args.json:
        print(json.dumps(result))
    else:
        low, high = result["success_ci95"]
        for row in result["per_task"]:
            print(f"{row['task']}: success {row['success_rate']:.3f} over {row['episodes']} episodes  "
                  f"({row['instruction']})")
        print(f"{args.suite}: success {result['success_rate']:.3f} (95% CI {low:.2f}-{high:.2f}) over "
              f"{result['tasks']} tasks; table in {result['csv']}, {result['json']}, {result['plot']}")
    return 0


def _eval_recorded(policy, env_cfg, args: argparse.Namespace, seed: int) -> dict:
    """Evaluation in chunked vector envs that commits every episode to ``--record`` (a new store)."""
    from robot_rl.runtime.training.evaluate import evaluate_saved

    if args.temporal_ensemble is not None or args.video:
        raise ConfigError("--record runs whole chunks in vector envs: drop --temporal-ensemble and --video")
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if Path(args.record).exists():
        raise ConfigError(f"{args.record} exists: --record writes a new store")
    result = evaluate_saved(policy, env_cfg, args.episodes, seed, min(args.episodes, 16), args.workers,
                            record=Path(args.record), steps=args.steps)
    result.update(task=env_cfg.task, record=str(args.record))
    return result


def _cmd_critic_train(args: argparse.Namespace) -> int:
    from robot_rl.config import load_config
    from robot_rl.runtime.training.critic_train import CriticTrainConfig, train_critic

    rest, critic_fields = _split_overrides(args.overrides, "critic")
    cfg = load_config(CriticTrainConfig, args.config, rest)
    cfg.critic.update(critic_fields)
    for name in ("steps", "max_minutes"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    result = train_critic(args.data, args.out, cfg, resume=args.resume, progress=not args.quiet)
    print(f"trained the critic to step {result['steps']} ({result['wall_s']:.0f} s); "
          f"critic in {Path(args.out) / 'critic'}")
    return 0


def _cmd_critic_eval(args: argparse.Namespace) -> int:
    from robot_rl.runtime.training.critic_train import eval_critic

    result = eval_critic(args.checkpoint, args.data, args.rollouts, done_threshold=args.done_threshold)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<22} {value:.4f}" if isinstance(value, float) else f"{key:<22} {value}")
    return 0


def _cmd_critic_relabel(args: argparse.Namespace) -> int:
    from robot_rl.runtime.training.relabel import relabel_store

    result = relabel_store(args.data, args.checkpoint, skip=args.skip, progress=not args.quiet)
    print(f"relabelled {result['relabelled_now']} episodes of {args.data} "
          f"(resumed after {result['resumed_from']}); rewards in extras/critic_reward")
    return 0


def _cmd_critic_plot(args: argparse.Namespace) -> int:
    from robot_rl.critic.dataset import load_episodes
    from robot_rl.critic.model import ProgressCritic
    from robot_rl.critic.plot import plot_value_curves
    from robot_rl.critic.reward import CriticReward
    from robot_rl.replay.store import EpisodeStore

    ckpt = Path(args.checkpoint)
    critic = ProgressCritic.load(ckpt / "critic" if (ckpt / "critic" / "config.json").is_file() else ckpt)
    store = EpisodeStore.open(args.data)
    failed_store = EpisodeStore.open(args.failed_data) if args.failed_data else store
    chosen = [(f"episode {args.episode}", store, args.episode)]
    if args.failed is None:
        failed = [i for i, ok in enumerate(failed_store.episode_field("success")) if not ok]
        args.failed = failed[0] if failed else None
    if args.failed is not None:
        chosen.append((f"failed episode {args.failed}", failed_store, args.failed))
    for _, st, index in chosen:
        if not 0 <= index < st.num_episodes:
            raise ConfigError(f"episode {index} does not exist; {st.path} has {st.num_episodes} episodes")
    episodes = [(title, load_episodes(st, critic.config.cameras, [i])[0]) for title, st, i in chosen]
    out = plot_value_curves(CriticReward(critic), episodes, args.out)
    print(f"wrote {out}")
    return 0


def _ros_extra(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{exc}") from None


def _cmd_record(args: argparse.Namespace) -> int:
    import signal
    import threading
    import time

    from robot_rl.transport import make_transport
    from robot_rl.transport.convert import RobotTopics

    bag = _ros_extra("robot_rl.transport.bag")
    topics = RobotTopics(args.namespace, args.image_transport)
    cameras = None if args.cameras is None else [c for c in args.cameras.split(",") if c]
    config = bag.RecorderConfig(topics=topics, cameras=cameras, sensor_qos=args.sensor_qos,
                                split_episodes=not args.no_split)
    kwargs = {"domain_id": args.domain_id, "interface": args.interface,
              "peers": args.peers.split(",") if args.peers else None}
    transport = make_transport("dds", **{k: v for k, v in kwargs.items() if v is not None})
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        recorder = bag.BagRecorder(transport, args.out, config)
        print(f"recording {topics.namespace} into {args.out} (Ctrl-C to stop)", flush=True)
        end = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set() and recorder.error is None:  # a failing disk stops the session at once
            left = 1.0 if end is None else min(1.0, end - time.monotonic())
            if left <= 0:
                break
            stop.wait(left)
        summary = recorder.close()  # raises, naming the failure, when writing failed
    finally:
        transport.close()
    total = sum(summary["messages"].values())
    print(f"recorded {total} messages, {summary['episodes']} episodes, into {summary['bags']} bags in {args.out}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _print_import(summary, as_json: bool) -> int:
    for note in summary.notes:
        print(f"note: {note}")
    print(summary.line())
    if as_json:
        print(json.dumps(summary.to_dict()))
    return 0


def _feature_map(args: argparse.Namespace):
    from robot_rl.runtime.data.features import FeatureMap

    fmap = FeatureMap.load(args.map) if args.map else None
    if args.image_size is not None:
        fmap = fmap or FeatureMap()
        fmap.image_size = FeatureMap.from_dict({"image_size": args.image_size}, "--image-size").image_size
    return fmap


def _cmd_import(args: argparse.Namespace) -> int:
    kwargs = {"feature_map": _feature_map(args), "append": args.append, "overwrite": args.overwrite,
              "progress": not args.quiet}
    if args.format == "lerobot":
        from robot_rl.runtime.data.lerobot import import_lerobot

        summary = import_lerobot(args.source, args.out, **kwargs)
    else:
        from robot_rl.runtime.data.robomimic import import_robomimic

        summary = import_robomimic(args.source, args.out, **kwargs)
    return _print_import(summary, args.json)


def _cmd_export(args: argparse.Namespace) -> int:
    from robot_rl.runtime.data.lerobot import export_lerobot

    summary = export_lerobot(args.store, args.out, codec=args.codec, fps=args.fps, overwrite=args.overwrite,
                             progress=not args.quiet)
    return _print_summary(summary, args.json)


def _print_summary(summary: dict, as_json: bool) -> int:
    print(summary["line"])
    if as_json:
        print(json.dumps(summary))
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    from robot_rl.runtime.data.view import view

    try:
        episodes = None if args.episode is None else [int(e) for e in args.episode.split(",") if e.strip()]
    except ValueError:
        raise ConfigError(f"--episode takes comma-separated episode indices, e.g. 0,3; got {args.episode!r}") from None
    summary = view(args.path, episodes=episodes, out=args.out, spawn=args.spawn, critic=args.critic,
                   progress=not args.quiet)
    return _print_summary(summary, args.json)


def _cmd_import_bag(args: argparse.Namespace) -> int:
    from robot_rl.transport.convert import RobotTopics

    if args.map:
        bags = _ros_extra("robot_rl.runtime.data.bags")
        summary = bags.import_mapped_bag(args.bag, args.map, args.out, append=args.append, overwrite=args.overwrite,
                                         progress=not args.quiet)
        return _print_import(summary, args.json)
    importer = _ros_extra("robot_rl.runtime.robot.import_bag")
    cameras = None if args.cameras is None else [c for c in args.cameras.split(",") if c]
    result = importer.import_bag(args.bag, args.out, RobotTopics(args.namespace, args.image_transport),
                                 append=args.append, overwrite=args.overwrite, progress=not args.quiet,
                                 cameras=cameras)
    print(f"imported {result.episodes} episodes ({result.steps} steps, {result.interventions} operator steps) "
          f"from {args.bag} into {args.out}" + (f"; {result.cut_short} cut short by the recording's end"
                                                if result.cut_short else "")
          + (f"; skipped {len(result.skipped)}: {'; '.join(result.skipped)}" if result.skipped else ""))
    return 0


def _import_output_args(p: argparse.ArgumentParser, json_help: str) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to an existing store")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help=json_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-rl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"robot-rl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list the registered tasks and their instructions")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=_cmd_tasks)

    p = sub.add_parser("teleop", help="drive a simulated task live with a teleop device and record the episodes",
                       description="Drive a task at its control rate with a keyboard (this terminal), a gamepad "
                       "(/dev/input/eventN) or a SpaceMouse (/dev/hidrawN); every finished episode is appended to "
                       "the store (source: human). Keys and axes: configs/devices/<device>.yaml.")
    p.add_argument("--device", default="keyboard", help="keyboard, gamepad, spacemouse, or a device map YAML")
    p.add_argument("--device-path", default=None, help="the gamepad's /dev/input/eventN or SpaceMouse's /dev/hidrawN")
    p.add_argument("--task", default="lift", help="registered task name (see `robot-rl tasks`)")
    p.add_argument("--out", required=True, help="episode store path (created, or appended to)")
    p.add_argument("--episodes", type=int, default=5, help="episodes to record")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--control-hz", type=float, default=10.0, help="control rate (default 10)")
    p.add_argument("--max-steps", type=int, default=None, help="episode time limit (default: the task's)")
    p.add_argument("--cameras", default=None, help="comma-separated cameras (default front,wrist; '' for none)")
    p.set_defaults(func=_cmd_teleop)

    p = sub.add_parser("collect", help="collect scripted-expert demos into an episode store")
    p.add_argument("--task", default=None, help="registered task name (see `robot-rl tasks`; default push)")
    p.add_argument("--episodes", type=int, required=True, help="number of episodes to collect")
    p.add_argument("--out", required=True, help="episode store path (a .zarr folder)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to an existing store")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--noise", type=float, default=0.1, help="std of Gaussian action noise (default 0.1)")
    p.add_argument("--seed", type=int, default=None, help="seed of the first episode (default: continue)")
    p.add_argument("--cameras", default=None, help="comma-separated cameras (default front,wrist; '' for none)")
    p.add_argument("--image-size", type=int, default=None, help="image height and width (default 84)")
    p.add_argument("--max-steps", type=int, default=None, help="episode time limit (default: the task's)")
    p.add_argument("--extra-steps", type=int, default=None, metavar="K",
                   help="go on K steps after the first success (done frames for the critic)")
    p.add_argument("--config", default=None, help="EnvConfig YAML (e.g. configs/env/quickstart.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="EnvConfig overrides such as --shadows=true (after --)")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("pretrain", help="behaviour cloning of a policy from episode stores")
    p.add_argument("--policy", required=True, help="policy type: flow, shortcut, diffusion or vla")
    p.add_argument("--data", nargs="+", required=True, help="episode store(s)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps in total (default 20000)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--config", default=None, help="PretrainConfig YAML")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*",
                   help="after --: PretrainConfig overrides (--lr=1e-4) and policy ones (--policy.horizon=16)")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("train", help="the main job: demos, BC, critic, RL fine-tuning, before/after eval",
                       description="Run the main job from a TrainJobConfig YAML (e.g. configs/quickstart.yaml). "
                       "Stages found complete in its run folder are reused; an interrupted run resumes.")
    p.add_argument("config", help="TrainJobConfig YAML")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs=argparse.REMAINDER,
                   help="overrides such as --out=data/run2 --rl.iterations=10 --rl.reward.kind=sparse; "
                   "--ray.address=auto is short for --rl.distributed.ray.address=auto")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a policy in its task's env")
    p.add_argument("--checkpoint", required=True, help="run folder or saved-policy folder")
    p.add_argument("--task", default=None, help="task (default: the one its demos came from)")
    p.add_argument("--suite", default=None, help="every task of a suite (libero_spatial, libero_object, "
                   "libero_goal, libero_10, libero_90): a per-task table (CSV, JSON, bar plot) in --out")
    p.add_argument("--out", default=None, help="folder of the --suite table (default data/eval_<suite>)")
    p.add_argument("--episodes", type=int, default=50, help="episodes (per task with --suite; default 50)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the policy's)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="episode time limit in env steps (default: the task's; a shorter one for a quick look)")
    p.add_argument("--temporal-ensemble", type=float, default=None, metavar="M",
                   help="query every step and average chunks with weights exp(-M i) (ACT)")
    p.add_argument("--seed", type=int, default=None, help="first episode seed (default: held-out 1000000)")
    p.add_argument("--video", default=None, metavar="DIR", help="write one MP4 per episode here")
    p.add_argument("--record", default=None, metavar="STORE",
                   help="commit every episode to this new episode store (source: policy), e.g. for "
                        "`robot-rl critic eval --rollouts STORE`; runs 16 envs in vector processes")
    p.add_argument("--workers", type=int, default=2, help="env processes with --record (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_eval)

    critic = sub.add_parser("critic", help="train and evaluate the progress critic").add_subparsers(
        dest="critic_command", required=True)
    p = critic.add_parser("train", help="train the critic on episode stores")
    p.add_argument("--data", nargs="+", required=True, help="episode store(s): demos and failed rollouts")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 3000)")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--config", default=None, help="CriticTrainConfig YAML")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", help="after --: --lr=1e-4, --critic.backbone_preset=tiny, ...")
    p.set_defaults(func=_cmd_critic_train)
    p = critic.add_parser("eval", help="VOC, reversed VOC, mismatch |delta|, done F1 and latency on demos; "
                                       "success/failure ranking on a policy's own rollouts")
    p.add_argument("--checkpoint", required=True, help="critic run folder or saved critic")
    p.add_argument("--data", nargs="+", default=None, help="demo store(s); their held-out episodes are used")
    p.add_argument("--rollouts", nargs="+", default=None,
                   help="store(s) of a policy's own episodes with their outcome (e.g. RUN/rl/online.zarr): "
                        "final-value AUROC, done false positives on failures, failed/successful return")
    p.add_argument("--done-threshold", type=float, default=None,
                   help="done probability that counts as done (default: the critic's own, done_threshold)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_critic_eval)
    p = critic.add_parser("plot", help="value curves of a successful and a failed episode, with frames")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="episode store")
    p.add_argument("--episode", type=int, required=True, help="episode to plot")
    p.add_argument("--failed", type=int, default=None, help="a failed episode to plot beside it (default: "
                   "the first failed one, if any)")
    p.add_argument("--failed-data", default=None, help="store of the failed episode (default: --data)")
    p.add_argument("--out", required=True, help="PNG file")
    p.set_defaults(func=_cmd_critic_plot)
    p = critic.add_parser("relabel", help="write critic rewards for every step of a store (resumable)")
    p.add_argument("--checkpoint", required=True, help="critic run folder or saved critic")
    p.add_argument("--data", required=True, help="episode store")
    p.add_argument("--skip", type=int, default=1, help="compare frames this many steps apart")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_critic_relabel)

    p = sub.add_parser("record", help="record a robot's ROS 2 topics (DDS, no ROS install) as rosbag2 MCAP bags, "
                       "one per episode, until Ctrl-C")
    p.add_argument("--out", required=True, help="a new folder for the bags")
    p.add_argument("--namespace", default="/robot", help="the robot's topic namespace")
    p.add_argument("--image-transport", choices=["raw", "jpeg"], default="raw")
    p.add_argument("--cameras", default=None, help="comma-separated (default: ask the robot's episode service)")
    p.add_argument("--sensor-qos", choices=["reliable", "best_effort"], default="reliable",
                   help="best_effort for camera drivers that publish with the sensor-data profile")
    p.add_argument("--no-split", action="store_true", help="one bag for the whole session")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: $ROS_DOMAIN_ID or 0)")
    p.add_argument("--interface", default=None, help="network interface for DDS, e.g. lo")
    p.add_argument("--peers", default=None, help="comma-separated unicast peers, e.g. 127.0.0.1")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser("import-bag", help="rebuild episodes from a rosbag2 recording into an episode store")
    p.add_argument("bag", help="a rosbag2 bag folder (MCAP or sqlite3), or a folder of them as `record` writes")
    p.add_argument("--out", required=True, help="episode store path (a .zarr folder)")
    p.add_argument("--namespace", default="/robot", help="the robot's topic namespace in the bag")
    p.add_argument("--image-transport", choices=["raw", "jpeg"], default="raw")
    p.add_argument("--cameras", default=None, help="comma-separated cameras to keep (default: all in the bag)")
    p.add_argument("--map", default=None,
                   help="a bag of any arm's standard topics: a YAML mapping of the state, camera, action and episode "
                        "topics, the control rate and how episodes are split (see the README); without it the bag "
                        "must hold our bridge's step reports")
    _import_output_args(p, "also print the summary as JSON (with --map)")
    p.set_defaults(func=_cmd_import_bag)

    p = sub.add_parser("import", help="convert a LeRobot dataset (v3.0 or v2.1) or a robomimic HDF5 file into an "
                                      "episode store")
    p.add_argument("source", help="a LeRobot dataset folder (with meta/info.json) or a robomimic .hdf5 file")
    p.add_argument("--format", choices=["lerobot", "robomimic"], required=True)
    p.add_argument("--out", required=True, help="episode store path (a .zarr folder)")
    p.add_argument("--map", default=None,
                   help="YAML feature map: which dataset keys are our cameras, state, action and flags (default: "
                        "our own key names, as `export` writes them, or robomimic's standard keys)")
    p.add_argument("--image-size", type=int, default=None, help="resize every camera to this square size")
    _import_output_args(p, "also print the summary as JSON")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("export", help="write an episode store as a LeRobot v3.0 dataset (parquet + MP4)")
    p.add_argument("store")
    p.add_argument("--format", choices=["lerobot"], default="lerobot")
    p.add_argument("--out", required=True, help="the dataset folder to create")
    p.add_argument("--codec", choices=["ffv1", "h264", "av1"], default="ffv1",
                   help="camera video codec: ffv1 (lossless, default), h264 (near-lossless, crf 0... see README) "
                        "or av1 (LeRobot's default, lossy)")
    p.add_argument("--fps", type=float, default=None,
                   help="frames per second (default: the store's control rate, else 10)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder made by export")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("view", help="write an episode store or a run as a rerun recording (.rrd), or open the viewer")
    p.add_argument("path", help="an episode store, or a run folder (its learning curves, and its stores)")
    p.add_argument("--episode", default=None, help="comma-separated episode indices (default: every episode)")
    p.add_argument("--out", default=None, help="the .rrd file to write (default: PATH's name + .rrd beside it)")
    p.add_argument("--spawn", action="store_true", help="open the rerun viewer (needs a display) instead of a file")
    p.add_argument("--critic", default=None, help="a critic checkpoint: log its value for every step")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser("info", help="summarise an episode store")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--verify", action="store_true",
                   help="read every chunk of every array (existence, checksum, decode) and every episode against "
                        "its manifest; exit 1 when anything is damaged")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("repair", help="copy every intact episode of a damaged store into a new store (dry run "
                                      "without --out / --in-place)")
    p.add_argument("path")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="write the intact episodes into this new store")
    where.add_argument("--in-place", action="store_true",
                       help="build the repaired store beside PATH, verify it, then swap it in; the damaged "
                            "original is kept as PATH.damaged-<time>")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_repair)

    p = sub.add_parser("video", help="export an episode to MP4")
    p.add_argument("path")
    p.add_argument("--episode", type=int, required=True, help="episode index (0-based)")
    p.add_argument("--out", required=True, help="output .mp4 file")
    p.add_argument("--fps", type=float, default=10.0)
    p.set_defaults(func=_cmd_video)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RobotRLError as exc:
        print(f"robot-rl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"robot-rl {args.command}: interrupted; committed episodes are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
