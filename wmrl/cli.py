"""The `wmrl` command line: parse arguments, call the library, print.

User mistakes (`wmrl.errors.UserError`) end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wmrl.errors import UserError


def cmd_collect(args: argparse.Namespace) -> None:
    from wmrl.config import CollectConfig, load_experiment
    from wmrl.data.collect import collect, open_writer
    from wmrl.envs import load_card, make_vector_env
    from wmrl.data.store import check_new_dataset_path, is_dataset, read_metadata
    from wmrl.policies import check_policy_spec, make_policy

    cfg = load_experiment(args.config) if args.config else None
    defaults = cfg.collect if cfg else CollectConfig()
    env_name = args.env or (cfg.env if cfg else None)
    if env_name is None:
        raise UserError("collect needs --env (or --config naming one)")
    steps = args.steps or defaults.steps
    num_envs = args.num_envs or defaults.num_envs
    policy_spec = args.policy or defaults.policy
    card = load_card(env_name)
    check_policy_spec(policy_spec)  # cheap checks first, before any env is built
    appending = args.append and is_dataset(args.out)
    if not appending:
        check_new_dataset_path(args.out)
    if args.seed is not None:
        seed = args.seed
    else:  # appending without a seed: continue with fresh seeds rather than repeat episodes
        seed = defaults.seed + (read_metadata(args.out)["total_episodes"] if appending else 0)

    venv = make_vector_env(card, num_envs, asynchronous=False if args.sync else None)
    try:
        writer = open_writer(args.out, card, venv, args.append)
        policy = make_policy(policy_spec, venv, seed)
        stats = collect(venv, policy, writer, steps, seed=seed, progress=not args.no_progress, policy_name=policy_spec)
    finally:
        venv.close()
    ret = stats.returns
    ret_text = f"return {_mean(ret):.2f} ± {_std(ret):.2f} over {len(ret)} finished" if ret else "no episode finished"
    print(f"collected {stats.steps} steps, {stats.episodes} episodes ({ret_text}) in {stats.seconds:.1f} s "
          f"({stats.steps_per_second:.0f} steps/s) -> {args.out}")


def cmd_data_info(args: argparse.Namespace) -> None:
    from wmrl.data.info import dataset_info

    print(dataset_info(args.path))


def _mean(x):
    return sum(x) / len(x)


def _std(x):
    m = _mean(x)
    return (sum((v - m) ** 2 for v in x) / len(x)) ** 0.5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wmrl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="gather frame-stacked rollouts into a Minari dataset")
    p.add_argument("--env", help="env card name, Gymnasium id of a shipped card, or path to a card .yaml")
    p.add_argument("--config", help="experiment config (name or path); its collect section gives defaults")
    p.add_argument("--out", required=True, type=Path, help="dataset folder to create (or grow, with --append)")
    p.add_argument("--steps", type=int, help="agent steps to collect, summed over envs (default 20000)")
    p.add_argument("--policy", help="'random' (default) or the path of a Stable-Baselines3 model zip")
    p.add_argument("--num-envs", type=int, help="parallel envs (subprocesses when > 1)")
    p.add_argument("--seed", type=int, help="env i of the first reset gets seed+i (default 0)")
    p.add_argument("--append", action="store_true", help="add episodes to an existing dataset")
    p.add_argument("--sync", action="store_true", help="step all envs in this process, even when > 1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("data", help="inspect replay datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("info", help="episodes, steps, returns, size on disk")
    q.add_argument("path", type=Path)
    q.set_defaults(func=cmd_data_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("steps", "num_envs"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            print(f"wmrl: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        args.func(args)
    except UserError as e:
        print(f"wmrl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wmrl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
