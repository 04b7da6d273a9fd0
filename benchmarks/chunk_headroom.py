"""Where a cloned chunk policy's failures come from, before any learning; prints JSON.

1. ``per_start``: each of S held-out starts tried M times with fresh sampling noise. Starts that succeed on
   some tries and fail on others are failures a better choice of chunks could fix; starts that always
   fail need new behaviour.
2. ``selection``: held-out success (E episodes, the same seeds for every rule) when each decision picks
   among N chunks sampled from the policy by a rule that needs no learning: one sample (the baseline),
   the chunk most coherent with the previous chunk's unexecuted tail (backward coherence, as BID), the
   zero-noise chunk, one fixed noise for every decision, and a sampling temperature. Ratios to the
   baseline come with each.

    python benchmarks/chunk_headroom.py --policy data/quickstart/bc/policy [--starts 24 --tries 8 --episodes 48]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robot_rl.envs import get_task  # noqa: E402
from robot_rl.policy import Policy, load_policy  # noqa: E402
from robot_rl.runtime.training.evaluate import (  # noqa: E402
    EVAL_SEED,
    ObservationWindows,
    action_chunks,
    env_config_for,
    wilson_interval,
)
from robot_rl.runtime.training.vec_env import ChunkVectorEnv  # noqa: E402

# a rule: (condition vectors (B, C), previous chosen chunks (B, H*A) or None, generator) -> chunks (B, H*A)
Rule = Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], torch.Tensor]


def run_episodes(envs: ChunkVectorEnv, policy: Policy, seeds: list[int], rule: Rule,
                 generator: torch.Generator) -> list[bool]:
    """Success of one episode per seed, in waves of ``envs.num_envs``, the decisions made by ``rule``."""
    n, out = envs.num_envs, []
    instruction = get_task(envs.env_config.task).instruction
    for wave in range(0, len(seeds), n):
        part = seeds[wave : wave + n]
        active = [i < len(part) for i in range(n)]
        obs = envs.reset(part + [s + 10**8 for s in range(n - len(part))])
        hist = ObservationWindows(n, policy.config.n_obs_steps, instruction)
        for i, o in enumerate(obs):
            hist.start(i, o)
        prev, result = None, [False] * len(part)
        while any(active):
            chosen = rule(policy.encode(hist.batch()), prev, generator)
            prev = chosen
            for i, r in enumerate(envs.step_chunks(list(action_chunks(policy, chosen)), active=active,
                                                   auto_reset=False)):
                if r is None:
                    continue
                hist.push(i, r.obs)
                if r.ended:
                    active[i], result[i] = False, bool(r.success)
        out += result
    return out


def rules(policy: Policy, candidates: int, temperature: float) -> dict[str, Rule]:
    pc = policy.config
    h, shape = pc.n_action_steps, (pc.horizon, pc.features.action_dim)
    fixed = torch.randn(policy.chunk_dim, generator=torch.Generator().manual_seed(123))

    def sample(cond, prev, g):
        return policy.sample(cond, generator=g)

    def coherent(cond, prev, g):
        b = cond.shape[0]
        c = policy.sample(cond.repeat_interleave(candidates, 0), generator=g).reshape(b, candidates, *shape)
        if prev is None:
            return c[:, 0].reshape(b, -1)
        tail = prev.reshape(b, *shape)[:, h:]  # what the previous chunk planned for the steps now starting
        pick = ((c[:, :, : tail.shape[1]] - tail[:, None]) ** 2).sum((-1, -2)).argmin(1)
        return c[torch.arange(b), pick].reshape(b, -1)

    def zero(cond, prev, g):
        return policy.decode_noise(cond, torch.zeros(cond.shape[0], policy.chunk_dim))

    def one_noise(cond, prev, g):
        return policy.decode_noise(cond, fixed.expand(cond.shape[0], -1))

    def hot(cond, prev, g):
        return policy.decode_noise(cond, temperature * torch.randn(cond.shape[0], policy.chunk_dim, generator=g))

    return {"sample": sample, f"coherent_of_{candidates}": coherent, "zero_noise": zero, "one_fixed_noise": one_noise,
            f"temperature_{temperature:g}": hot}


def summary(wins: list[bool]) -> dict:
    k = int(sum(wins))
    low, high = wilson_interval(k, len(wins))
    return {"success": k / len(wins), "ci95": [round(low, 3), round(high, 3)], "episodes": len(wins)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="data/quickstart/bc/policy", help="a saved policy (a run's policy/ folder)")
    ap.add_argument("--task", default="push")
    ap.add_argument("--starts", type=int, default=24)
    ap.add_argument("--tries", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=48, help="held-out episodes per selection rule")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.3)
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    policy = load_policy(args.policy).eval()
    env_file = os.path.join(os.path.dirname(os.path.abspath(args.policy)), "env.json")
    saved = json.load(open(env_file)) if os.path.isfile(env_file) else None
    env = env_config_for(policy, args.task, saved)
    report: dict = {"policy": args.policy, "task": args.task}
    with ChunkVectorEnv(env, args.num_envs, args.workers) as envs, torch.no_grad():
        g = torch.Generator().manual_seed(0)
        seeds = [EVAL_SEED + s for _ in range(args.tries) for s in range(args.starts)]
        wins = run_episodes(envs, policy, seeds, rules(policy, 1, 1.0)["sample"], g)
        rates = np.array(wins, float).reshape(args.tries, args.starts).mean(0)
        report["per_start"] = {
            "tries": args.tries, "success_per_start": sorted(rates.round(3).tolist()), "mean": float(rates.mean()),
            "always": int((rates == 1).sum()), "never": int((rates == 0).sum()),
            "mixed": int(((rates > 0) & (rates < 1)).sum()),
            "share_of_starts_ever_solved": float((rates > 0).mean()),
        }
        selection = {}
        for name, rule in rules(policy, args.candidates, args.temperature).items():
            generator = torch.Generator().manual_seed(EVAL_SEED)  # the same noise stream for every rule
            selection[name] = summary(run_episodes(envs, policy, [EVAL_SEED + i for i in range(args.episodes)],
                                                   rule, generator))
        base = selection["sample"]["success"]
        for res in selection.values():
            res["ratio_to_sample"] = round(res["success"] / base, 3) if base else None
        report["selection"] = selection
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
