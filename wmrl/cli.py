"""The `wmrl` command line: parse arguments, call the library, print.

User mistakes (`wmrl.errors.UserError`) end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
from pathlib import Path

from wmrl import __version__
from wmrl.errors import UserError


def cmd_collect(args: argparse.Namespace) -> None:
    from wmrl.config import CollectConfig, load_experiment
    from wmrl.data.collect import collect, open_writer
    from wmrl.envs import load_card, make_vector_env
    from wmrl.data.store import check_new_dataset_path, data_dir, is_dataset, read_metadata
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
    existed, writer = Path(args.out).exists(), None
    try:
        writer = open_writer(args.out, card, venv, args.append)
        policy = make_policy(policy_spec, venv, seed)
        stats = collect(venv, policy, writer, steps, seed=seed, progress=not args.no_progress, policy_name=policy_spec)
    except UserError:
        if not appending and writer is not None and writer.total_episodes == 0:  # nothing collected: leave no empty dataset
            shutil.rmtree(data_dir(args.out), ignore_errors=True)
            if not existed:
                shutil.rmtree(args.out, ignore_errors=True)
        raise
    finally:
        venv.close()
    import numpy as np

    ret = np.array(stats.returns)
    ret_text = f"return {ret.mean():.2f} ± {ret.std():.2f} over {len(ret)} finished" if len(ret) else "no episode finished"
    print(f"collected {stats.steps} steps, {stats.episodes} episodes ({ret_text}) in {stats.seconds:.1f} s "
          f"({stats.steps_per_second:.0f} steps/s) -> {args.out}")


def cmd_data_info(args: argparse.Namespace) -> None:
    from wmrl.data.info import dataset_info

    print(dataset_info(args.path))


def cmd_train(args: argparse.Namespace) -> None:
    import json

    from wmrl.config import load_experiment, to_dict

    cfg = load_experiment(args.config)
    stage = cfg.stage1 if args.stage == 1 else cfg.stage2
    if args.steps is not None:
        stage.optim.steps = args.steps
    if args.stage == 2 and args.encoder is None:
        raise UserError("train --stage 2 needs --encoder (a stage-1 run folder or checkpoint)")
    if args.resume and not (args.out / "checkpoint.pt").is_file():
        raise UserError(f"nothing to resume: {args.out} has no checkpoint.pt")
    if not args.resume and (args.out / "checkpoint.pt").is_file():
        raise UserError(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")
    args.device = _device(args.device)
    data = open_data(args.data, cfg.vpt)
    common = dict(val_fraction=cfg.data.val_fraction, device=args.device, progress=not args.no_progress)
    if args.stage == 1:
        from wmrl.train.stage1 import Stage1Trainer

        trainer = Stage1Trainer(stage, data, args.out, **common)
    else:
        from wmrl.train.checkpoint import load_checkpoint
        from wmrl.train.stage2 import Stage2Trainer

        trainer = Stage2Trainer(stage, load_checkpoint(args.encoder), data, args.out, clip_len=cfg.data.clip_len, **common)
    if trainer.rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    final = trainer.train(resume=args.resume)
    if trainer.world > 1:
        import torch.distributed as dist

        dist.barrier()  # tear down together: a rank closing its gloo pairs while another still uses them can abort it
        dist.destroy_process_group()
        if trainer.rank > 0:
            return
        print(f"{trainer.world} processes, replica parameter spread {final.get('replica_spread', float('nan')):.3g}")
    nan = float("nan")
    if args.stage == 1:
        print(f"stage 1: step {trainer.step}, val loss {final.get('val_loss', nan):.4f}, "
              f"feature std {final.get('feat_std_mean', nan):.4f}, effective rank "
              f"{final.get('feat_effective_rank', nan):.1f} -> {args.out}")
    else:
        print(f"stage 2: step {trainer.step}, val loss {final.get('val_loss', nan):.4f}, next-latent L1 "
              f"{final.get('val_latent', nan):.4f} (copy-last {final.get('val_copy_last', nan):.4f}), "
              f"rollout {final.get('val_rollout', nan):.4f} -> {args.out}")


def cmd_eval(args: argparse.Namespace) -> None:
    import json

    from wmrl.train.checkpoint import load_checkpoint

    if args.agent is not None:
        return eval_agent(args)
    if args.stage is None or args.checkpoint is None or args.data is None:
        raise UserError("eval needs --stage, --checkpoint and --data (or --agent RUN)")

    run_dir = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    data = open_data(args.data, source=load_checkpoint(args.checkpoint).get("data_source"))
    if args.stage == 1:
        from wmrl.eval.encoder import evaluate_stage1, format_probe_table

        result = evaluate_stage1(args.checkpoint, data, fields=args.fields, max_rows=args.max_rows, seed=args.seed)
        print(format_probe_table(result, ["trained", "random init"]))
    else:
        from wmrl.eval.world_model import evaluate_stage2, format_stage2_table, plot_stage2

        result = evaluate_stage2(args.checkpoint, data, horizon=args.horizon, clips=args.clips, seed=args.seed)
        print(format_stage2_table(result))
        plot_stage2(result, run_dir / "eval_stage2.png")
        print(f"plot: {run_dir / 'eval_stage2.png'}")
        if args.video:
            from wmrl.eval.world_model import imagined_video

            frames = imagined_video(args.checkpoint, data, args.video, horizon=args.horizon, seed=args.seed)
            print(f"video: {frames} frames, real (left) vs imagined by nearest-neighbour latents (right) -> {args.video}")
    (run_dir / f"eval_stage{args.stage}.json").write_text(json.dumps(result, indent=1))


def eval_agent(args: argparse.Namespace) -> None:
    import json

    from wmrl.config import ExperimentConfig, from_dict
    from wmrl.control.search import SearchAgent
    from wmrl.data.replay import ReplayDataset
    from wmrl.data.store import is_dataset
    from wmrl.envs import load_card, make_env
    from wmrl.eval.agent import diagnose, format_diagnostics

    from wmrl.online import load_agent

    folder = args.agent if args.agent.is_dir() else args.agent.parent
    path = folder / "agent.pt" if args.agent.is_dir() else args.agent
    record = folder / "run.json"
    if not record.is_file() or not (path.is_file() or args.agent.is_dir() and (folder / "learner.pt").is_file()):
        raise UserError(f"--agent wants a `wmrl run` folder with run.json and agent.pt (or learner.pt), got {args.agent}")
    cfg = from_dict(ExperimentConfig, json.loads(record.read_text())["config"], source=str(record))
    card = load_card(cfg.env)
    env = make_env(card)
    try:
        agent = load_agent(folder) if args.agent.is_dir() else SearchAgent.load(path)  # a running run: its last checkpoint
        replay = ReplayDataset(folder / "data") if is_dataset(folder / "data") else None  # probes on the run's own play
        result = diagnose(agent, env, episodes=args.episodes, seed=args.seed,
                          gamma=cfg.learner.gamma, reward_clip=cfg.learner.reward_clip, replay=replay)
    finally:
        env.close()
    print(format_diagnostics(result))
    (folder / "eval_agent.json").write_text(json.dumps(result, indent=1))
    print(f"-> {folder / 'eval_agent.json'}")


def cmd_plan(args: argparse.Namespace) -> None:
    import json

    import numpy as np
    import torch

    from wmrl.config import ExperimentConfig, load_experiment
    from wmrl.control.agent import MPCAgent
    from wmrl.envs import load_card, make_env
    from wmrl.eval.episodes import run_episodes, write_video
    from wmrl.eval.tasks import episode_measure
    from wmrl.train.checkpoint import load_checkpoint

    folder = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    if (folder / "agent.pt").is_file() and (folder / "learner.pt").is_file():  # an online `wmrl run`
        return play_online_agent(args, folder)
    cfg = load_experiment(args.config) if args.config else None
    env_name = args.env or (cfg.env if cfg else None)
    if env_name is None:
        raise UserError("plan needs --env (or --config naming one)")
    plan = (cfg or ExperimentConfig(env=env_name)).plan
    for name in ("horizon", "population", "iterations"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    if plan.elites > plan.population:
        plan.elites = max(1, plan.population // 8)
    card = load_card(env_name)
    payload = load_checkpoint(args.checkpoint)
    if payload.get("stage") != 2:
        raise UserError(f"{args.checkpoint} is not a stage-2 (world model) checkpoint")
    env = make_env(card)
    try:
        if tuple(env.observation_space.shape) != tuple(payload["stack_shape"]):
            raise UserError(f"env card '{card.name}' gives stacks {env.observation_space.shape}, "
                            f"the world model wants {tuple(payload['stack_shape'])}")
        goal_of = goal_planning(args, card, payload, plan, env)
        measure = episode_measure(card, env)
        try:
            agent = MPCAgent.from_checkpoint(payload, plan, env.action_space)
        except ValueError as e:
            raise UserError(str(e)) from None
        on_reset = None if goal_of is None else lambda info: agent.set_goal(goal_of(info))
        torch.manual_seed(plan.seed)
        stats, frames = run_episodes(env, agent, args.episodes, seed=args.seed, max_steps=args.max_steps,
                                     record=1 if args.video else 0, measure=measure, on_reset=on_reset)
        baseline = None
        if args.compare_random:  # the same seeded episodes with uniform random actions
            from wmrl.policies import RandomPolicy

            random_stats = run_episodes(env, RandomPolicy(env.action_space, args.seed), args.episodes, seed=args.seed,
                                        max_steps=args.max_steps, measure=measure)[0]
            baseline = random_stats.summary(card)
    finally:
        env.close()
    summary = stats.summary(card)
    print(episodes_line(card.name, stats, summary, args.max_steps) + f" ({plan.method}, {plan.population} candidates x "
          f"horizon {plan.horizon} x {plan.iterations} iterations)")
    for name, result in (("planner", summary), ("random policy", baseline)):
        if result is not None and "success_rate" in result:
            print(f"{name}: success {result['success_rate']:.2f}", end="")
            if "final_distance" in result:
                d = np.array(result["final_distance"])
                print(f" (final distance < {card.goal.threshold}), final distance {d.mean():.3f} ± {d.std():.3f}", end="")
            print()
        if result is not None and "score" in result:
            print(f"{name}: Crafter score {result['score']:.2f}% over {result['episodes']} episodes")
    if baseline is not None:
        summary["random_policy"] = baseline
        print(f"random policy: return {baseline['return_mean']:.2f} ± {baseline['return_std']:.2f}")
    if args.video:
        write_video(frames, args.video)
        print(f"video: first episode, {len(frames)} frames -> {args.video}")
    run_dir = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    (run_dir / "plan.json").write_text(json.dumps({"env": card.name, "seed": args.seed, **summary}, indent=1))
    if args.save_agent:
        agent.save(args.save_agent)
        print(f"agent -> {args.save_agent}")


def episodes_line(name: str, stats, summary: dict, max_steps: int | None) -> str:
    """'<env>: return mean ± std over N episodes (lengths ...); ms per action' for `wmrl plan`."""
    capped = f", {summary['capped']} stopped at --max-steps {max_steps}" if summary["capped"] else ""
    return (f"{name}: return {summary['return_mean']:.2f} ± {summary['return_std']:.2f} over {summary['episodes']} "
            f"episodes (lengths {min(stats.lengths)}-{max(stats.lengths)}{capped}); "
            f"{summary['ms_per_action_mean']:.1f} ms per action")


def play_online_agent(args: argparse.Namespace, folder: Path) -> None:
    """`wmrl plan` with the search agent of an online `wmrl run` folder (env: --env or the run's)."""
    import json

    from wmrl.config import ExperimentConfig, from_dict
    from wmrl.control.search import SearchAgent
    from wmrl.envs import load_card, make_env
    from wmrl.eval.episodes import run_episodes, write_video
    from wmrl.eval.tasks import episode_measure

    cfg = from_dict(ExperimentConfig, json.loads((folder / "run.json").read_text())["config"], source=str(folder / "run.json"))
    card = load_card(args.env or cfg.env)
    agent = SearchAgent.load(folder / "agent.pt")
    if args.depth is not None:  # e.g. 1: greedy Q, the search's ablation
        try:
            agent = agent.with_depth(args.depth)
        except ValueError as e:
            raise UserError(f"--depth {args.depth}: {e}") from None
    env = make_env(card)
    try:
        if tuple(env.observation_space.shape) != agent.model.stack_shape:
            raise UserError(f"env card '{card.name}' gives stacks {env.observation_space.shape}, "
                            f"the agent wants {agent.model.stack_shape}")
        stats, frames = run_episodes(env, agent, args.episodes, seed=args.seed, max_steps=args.max_steps,
                                     record=1 if args.video else 0, measure=episode_measure(card, env))
    finally:
        env.close()
    summary = stats.summary(card)
    print(episodes_line(card.name, stats, summary, args.max_steps)
          + f" ({agent.describe_acting()})")
    if args.video:
        write_video(frames, args.video)
        print(f"video: first episode, {len(frames)} frames -> {args.video}")
    (folder / "plan.json").write_text(json.dumps({"env": card.name, "seed": args.seed, **summary}, indent=1))


def goal_planning(args: argparse.Namespace, card, payload: dict, plan, env):
    """The goal stack of an episode from its reset info, or None without `--goal`. With
    `--goal from-dataset` the plan scores goal energy alone unless the config weighs it already."""
    from wmrl.control.goals import DatasetGoals, has_goal_fields, state_field

    goal = card.goal
    if args.goal is None:
        return None
    if not has_goal_fields(goal):
        raise UserError(f"env card '{card.name}' names no goal state fields (goal: achieved, desired)")
    from wmrl.data.replay import ReplayDataset

    data = ReplayDataset(args.data or payload["dataset"])
    data.require_stack_shape(payload["stack_shape"], "the world model")
    goals = DatasetGoals(data, goal)
    if not plan.goal_weight:
        plan.goal_weight, plan.reward_weight = 1.0, 0.0
    return lambda info: goals.goal_stack(state_field(info["state"], env.get_wrapper_attr("layout"), goal.desired))


def cmd_imagine(args: argparse.Namespace) -> None:
    from wmrl.imagine import imagine
    from wmrl.train.checkpoint import load_checkpoint

    payload = load_checkpoint(args.checkpoint)
    if payload.get("stage") != 2:
        raise UserError(f"{args.checkpoint} is not a stage-2 (world model) checkpoint")
    data = args.data or payload["dataset"]
    r = imagine(payload, data, args.algo, args.steps, args.out, num_envs=args.num_envs, horizon=args.horizon,
                eval_episodes=args.episodes, max_steps=args.max_steps, seed=args.seed, progress=not args.no_progress)
    print(f"{r['algo']}: {r['imagined_steps']} imagined steps in {r['learn_seconds']:.0f} s "
          f"({r['imagined_steps_per_second']:.0f} steps/s); real {r['env']}: return {r['return_mean']:.2f} ± "
          f"{r['return_std']:.2f} over {r['episodes']} episodes -> {args.out}")


def cmd_run(args: argparse.Namespace) -> None:
    from wmrl.config import ExperimentConfig, load_experiment
    from wmrl.online import new_run, resume_run

    kwargs = dict(device=_device(args.device), progress=not args.no_progress)
    if args.resume:
        run = resume_run(args.out, args.budget, **kwargs)
    else:
        if (args.out / "run.json").is_file():
            raise UserError(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")
        if args.config is None and args.env is None:
            raise UserError("run needs --config or --env")
        if args.set and not args.config:
            raise UserError("--set changes a config: pass --config too")
        cfg = load_experiment(args.config, args.set) if args.config else ExperimentConfig(env=args.env)
        if args.env:
            cfg.env = args.env
        if args.budget is not None:
            cfg.run.budget = args.budget
        run = new_run(cfg, args.out, **kwargs)
    record = run.run()
    final = record["eval"]
    if final:
        success = f", success {final['success_rate']:.2f}" if "success_rate" in final else ""
        steps = record["steps"] if "steps" in record else record["rounds"][-1]["steps"]
        print(f"{run.card.name}: {steps} real steps; evaluation return {final['return_mean']:.2f} "
              f"± {final['return_std']:.2f} over {final['episodes']} episodes{success}, {final['ms_per_action_mean']:.1f} ms "
              f"per action -> {args.out / 'run.json'}")


def cmd_bench(args: argparse.Namespace) -> None:
    from wmrl.bench.report import update_readme, write_report
    from wmrl.bench.runner import run_speed, run_suite

    if (args.suite is None) == (args.report is None):
        raise UserError("bench needs exactly one of --suite NAME or --report DIR...")
    if args.readme is not None and args.report is None:
        raise UserError("--readme goes with --report DIR...: the headline table comes from those folders")
    if args.report is not None:
        for root in args.report:
            print(f"report -> {write_report(root)}")
        if args.readme is not None:
            update_readme(args.readme, args.report)
            print(f"headline table -> {args.readme}")
        return
    out = args.out or Path("benchmarks/results") / args.suite
    if args.suite == "speed":
        run_speed(out, quick=args.quick)
    else:
        run_suite(args.suite, args.seeds if args.seed is None else [args.seed], out, agents=args.agents, progress=not args.no_progress, envs=args.envs,
                  device=_device(args.device))
    print(f"report -> {write_report(out)}")


def cmd_onex_info(args: argparse.Namespace) -> None:
    import numpy as np

    from wmrl.offline.onex import TokenDataset, action_stats

    data = TokenDataset(args.data)
    evaluation = TokenDataset(args.data, filter_overlaps=True)
    hz = data.metadata.get("hz", 30)
    print(f"{data.root}: {data.num_frames} frames of {data.side}x{data.side} tokens "
          f"({data.metadata.get('token_dtype', 'uint32')}, largest id {data.check_token_range()}), "
          f"{data.segments()} segments, {data.num_frames / hz / 3600:.2f} h at {hz} Hz")
    print(f"windows of {data.window_len} frames {data.stride} apart: {len(data)} (training), "
          f"{len(evaluation)} without shared frames (evaluation)")
    spec = data.action_spec
    if spec.kind == "continuous":
        mean, std = action_stats(data)
        column = 0
        for name, width in spec.names:
            cols = slice(column, column + width)
            fmt = dict(precision=3, max_line_width=10_000)
            if width > 4:  # a range per statistic, not 21 numbers
                text = (f"mean in [{mean[cols].min():.3f}, {mean[cols].max():.3f}], "
                        f"std in [{std[cols].min():.3f}, {std[cols].max():.3f}]")
            else:
                text = f"mean {np.array2string(mean[cols], **fmt)}, std {np.array2string(std[cols], **fmt)}"
            print(f"  {name:16s} [{data.num_frames}, {width}]  {text}")
            column += width
    else:
        print(f"actions: {spec.kind}" + (f" (vocabulary {spec.dim})" if spec.kind == "tokens" else ""))


def cmd_onex_synth(args: argparse.Namespace) -> None:
    from wmrl.offline.onex import synthetic_split

    for split, segments, seed in (("train", args.segments, args.seed), ("val", args.val_segments, args.seed + 1)):
        path = synthetic_split(args.out / split, segments, args.frames, args.side, args.noise, seed)
        print(f"{split}: {segments} segments x {args.frames} frames of {args.side}x{args.side} tokens -> {path}")


def cmd_onex_train(args: argparse.Namespace) -> None:
    import json

    from wmrl.config import find_config, load_yaml, to_dict
    from wmrl.train.onex import OnexConfig, OnexTrainer, open_split

    cfg = load_yaml(OnexConfig, find_config(args.config))
    if args.steps is not None:
        cfg.optim.steps = args.steps
    if args.resume and not (args.out / "checkpoint.pt").is_file():
        raise UserError(f"nothing to resume: {args.out} has no checkpoint.pt")
    if not args.resume and (args.out / "checkpoint.pt").is_file():
        raise UserError(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")
    device = _device(args.device)
    train, val = open_split(args.data, cfg.data), open_split(args.val, cfg.data, evaluation=True)
    trainer = OnexTrainer(cfg, train, val, args.out, device=device, progress=not args.no_progress)
    if trainer.rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    params = sum(p.numel() for p in trainer.model.parameters())
    print(f"{len(train)} training windows, {len(val)} evaluation windows, model {params / 1e6:.2f} M parameters")
    final = trainer.train(resume=args.resume)
    nan = float("nan")
    print(f"onex: step {trainer.step}, val CE {final.get('val_ce', nan):.3f}, token accuracy "
          f"{final.get('val_acc', nan):.3f} -> {args.out}")


def _onex_checkpoint(path: Path, device: str):
    from wmrl.train.checkpoint import load_checkpoint
    from wmrl.train.onex import build_model

    payload = load_checkpoint(path, map_location=device)
    return payload, build_model(payload, device)


def cmd_onex_eval(args: argparse.Namespace) -> None:
    import json

    from wmrl.config import from_dict
    from wmrl.eval.onex import evaluate
    from wmrl.train.onex import OnexDataConfig, apply_action_stats, open_split

    device = _device(args.device)
    payload, model = _onex_checkpoint(args.checkpoint, device)
    data_cfg = from_dict(OnexDataConfig, payload["config"]["data"], source="checkpoint", prefix="data.")
    data = open_split(args.data, data_cfg, evaluation=True, actions=payload["action_kind"])
    apply_action_stats(data, payload)
    r = evaluate(model, data, args.max_examples, args.batch_size, device, progress=not args.no_progress)
    print(f"{r['examples']} examples of {data.root} ({r['seconds']:.0f} s), challenge protocol:")
    print(f"  {'predictor':10s} {'CE (nats)':>10s} {'token acc':>10s}")
    for name, ce, acc in (("model", r["ce"], r["acc"]), ("copy", r["copy_ce"], r["copy_acc"]),
                          ("unigram", r["unigram_ce"], r["unigram_acc"])):
        print(f"  {name:10s} {ce:10.3f} {acc:10.3f}")
    run_dir = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    (run_dir / "eval_onex.json").write_text(json.dumps({**r, "data": str(data.root)}, indent=1))


def cmd_onex_generate(args: argparse.Namespace) -> None:
    from wmrl.config import from_dict
    from wmrl.eval.onex import generate
    from wmrl.train.onex import OnexDataConfig, apply_action_stats, open_split

    device = _device(args.device)
    payload, model = _onex_checkpoint(args.checkpoint, device)
    data_cfg = from_dict(OnexDataConfig, payload["config"]["data"], source="checkpoint", prefix="data.")
    data = open_split(args.data, data_cfg, actions=payload["action_kind"])
    apply_action_stats(data, payload)
    r = generate(model, data, args.example, args.out, args.prompt_frames, args.temperature, args.top_k, args.seed, device)
    print(f"{r['prompt']} prompt + {r['predicted']} generated + {r['predicted']} true frames -> {r['out']} "
          f"(generated tokens equal to the truth: {r['token_acc']:.3f})")


def open_data(spec: str, vpt_config=None, source: dict | None = None):
    """The dataset behind --data: a replay dataset folder, or `vpt:<shards or folders>` decoded in
    memory. VPT data is read with the config's vpt section (training) or, for a checkpoint trained on
    VPT data, with the options and action scaler its `source` record carries (evaluation)."""
    from wmrl.data.replay import ReplayDataset

    if not str(spec).startswith("vpt:"):
        return ReplayDataset(spec)
    from wmrl.config import from_dict
    from wmrl.offline.vpt import ActionScaler, VptConfig, open_vpt

    scaler = None
    if source is not None:
        if source.get("kind") != "vpt":
            raise UserError(f"this checkpoint was trained on {source.get('kind')} data, not VPT")
        vpt_config = from_dict(VptConfig, source["options"], source="checkpoint")
        scaler = ActionScaler.from_dict(source["action_scaler"], "the checkpoint's action scaler")
    return open_vpt(str(spec)[4:], vpt_config or VptConfig(), scaler)


def _vpt_config(args: argparse.Namespace):
    """The vpt section of --config, with the command line's overrides."""
    from wmrl.config import load_experiment
    from wmrl.offline.vpt import VptConfig

    cfg = load_experiment(args.config).vpt if args.config else VptConfig()
    for name in ("frameskip", "null_frames", "max_segments"):
        if getattr(args, name, None) is not None:
            setattr(cfg, name, getattr(args, name))
    return cfg


def cmd_vpt_info(args: argparse.Namespace) -> None:
    from wmrl.offline.vpt import vpt_info

    print(vpt_info(args.shards, _vpt_config(args)))


def cmd_vpt_fit_scaler(args: argparse.Namespace) -> None:
    from wmrl.offline.vpt import SkipLog, fit_scaler

    skips = SkipLog()
    scaler = fit_scaler(args.shards, _vpt_config(args), skips)
    scaler.save(args.out)
    stats = ", ".join(f"{n} {m:+.3f} ± {s:.3f}" for n, m, s in zip(scaler.names, scaler.mean, scaler.std))
    print(f"action scaler over {scaler.count} steps ({skips.summary()} segments): {stats} -> {args.out}")


def cmd_vpt_synth(args: argparse.Namespace) -> None:
    import numpy as np

    from wmrl.offline.vpt import synthetic_segment, write_folder, write_shard

    if args.shards < 1:
        raise UserError("--shards must be >= 1")
    if args.out.exists() and any(args.out.iterdir()):
        raise UserError(f"{args.out} exists and is not empty; choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for shard in range(args.shards):
        segments = {f"synthetic-{shard:03d}-{i:03d}": synthetic_segment(rng, args.frames)
                    for i in range(args.segments)}
        if args.folders:
            write_folder(args.out / f"vpt-{shard:06d}", segments)
        else:
            write_shard(args.out / f"vpt-shards-{shard:06d}.tar", segments)
    last = f"{args.shards - 1:06d}"
    spec = (f"{args.out}/vpt-{{000000..{last}}}" if args.folders else f"{args.out}/vpt-shards-{{000000..{last}}}.tar")
    print(f"{args.shards} x {args.segments} synthetic segments of {args.frames} frames -> {spec}")


def _device(name: str) -> str:
    import torch

    try:
        torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name} is not a torch device (cpu, cuda or cuda:N)") from None
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}, but this torch build sees no CUDA device")
        if "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
            return f"cuda:{os.environ['LOCAL_RANK']}"
    return name


class _Help(argparse.HelpFormatter):
    """argparse's help, with each option's default where it has one that says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = action.default is None or action.default is False or action.default == [] or action.default is argparse.SUPPRESS
        if not quiet and "default" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wmrl", description=__doc__.splitlines()[0], formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"wmrl {__version__}")
    helped = functools.partial(argparse.ArgumentParser, formatter_class=_Help)  # every subcommand shows defaults
    sub = parser.add_subparsers(dest="command", required=True, parser_class=helped)

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

    p = sub.add_parser("train", help="train a model stage on a replay dataset")
    p.add_argument("--stage", type=int, choices=[1, 2], required=True,
                   help="1: V-JEPA encoder; 2: action-conditioned world model over a frozen stage-1 encoder")
    p.add_argument("--encoder", type=Path, help="stage 2: the stage-1 run folder or checkpoint to build on")
    p.add_argument("--config", required=True, help="experiment config (name or path)")
    p.add_argument("--data", required=True, help="replay dataset folder, or vpt:'<shards or folders>'")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoint, metrics.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--steps", type=int, help="override the config's optim.steps")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained stage, or diagnose an online agent (--agent)")
    p.add_argument("--stage", type=int, choices=[1, 2], help="1: probes; 2: error by horizon")
    p.add_argument("--checkpoint", type=Path, help="run folder or checkpoint file")
    p.add_argument("--data", help="replay dataset folder, or vpt:'<shards or folders>'")
    p.add_argument("--agent", type=Path, help="a `wmrl run` folder (or its agent.pt): probes of the acting latent, "
                   "Spearman(max Q, return), action effect vs model error, action histogram, from fresh episodes")
    p.add_argument("--episodes", type=int, default=3, help="--agent: episodes to play")
    p.add_argument("--fields", nargs="+", help="state fields to probe (default: every field of size <= 16)")
    p.add_argument("--max-rows", type=int, default=4000, help="training stacks for the probes")
    p.add_argument("--horizon", type=int, default=8, help="stage 2: imagined steps per clip")
    p.add_argument("--clips", type=int, default=512, help="stage 2: held-out clips")
    p.add_argument("--video", type=Path, help="stage 2: write real vs imagined rollouts to this .mp4")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plan", help="act in the real env by planning in a world model (MPC)")
    p.add_argument("--env", help="env card name or Gymnasium id (default: the config's)")
    p.add_argument("--checkpoint", required=True, type=Path, help="stage-2 run folder or checkpoint, or an online "
                   "`wmrl run` folder (its search agent plays)")
    p.add_argument("--depth", type=int, help="online agent: search depth instead of the run's (1: greedy Q; continuous 0: the policy prior)")
    p.add_argument("--config", help="experiment config whose plan section sets the planner (default: built-in)")
    p.add_argument("--episodes", type=int, default=10, help="episodes to play")
    p.add_argument("--seed", type=int, default=0, help="episode i resets with seed+i")
    p.add_argument("--max-steps", type=int, help="stop an episode after this many actions")
    p.add_argument("--horizon", type=int, help="override plan.horizon")
    p.add_argument("--population", type=int, help="override plan.population")
    p.add_argument("--iterations", type=int, help="override plan.iterations")
    p.add_argument("--video", type=Path, help="write the first episode to this .mp4")
    p.add_argument("--save-agent", type=Path, help="save the MPC agent (planner + world model) to this file")
    p.add_argument("--goal", choices=["from-dataset"],
                   help="goal-reaching: each episode's goal image is the dataset frame that best shows its target reached")
    p.add_argument("--data", type=Path, help="dataset for --goal (default: the world model's)")
    p.add_argument("--compare-random", action="store_true", help="also run the same episodes with random actions")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("imagine", help="train an SB3 algorithm inside a world model, evaluate it in the real env")
    p.add_argument("--checkpoint", required=True, type=Path, help="stage-2 run folder or checkpoint")
    p.add_argument("--data", type=Path, help="dataset whose frames start imagined episodes (default: the model's)")
    p.add_argument("--algo", choices=["ppo", "a2c", "dqn", "sac", "td3"], default="ppo", help="the SB3 algorithm")
    p.add_argument("--steps", type=int, default=200_000, help="imagined env steps to learn from")
    p.add_argument("--out", required=True, type=Path, help="folder for model.zip and imagine.json")
    p.add_argument("--num-envs", type=int, default=32, help="imagined envs stepped in one batch")
    p.add_argument("--horizon", type=int, default=15, help="imagined steps before an episode is truncated")
    p.add_argument("--episodes", type=int, default=10, help="real-env evaluation episodes")
    p.add_argument("--max-steps", type=int, help="stop a real episode after this many actions")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_imagine)

    p = sub.add_parser("run", help="the model-based loop: collect -> train -> plan, repeated, at a real-step budget")
    p.add_argument("--config", help="experiment config (its run: section sets the rounds)")
    p.add_argument("--env", help="env card (default: the config's)")
    p.add_argument("--budget", type=int, help="real env agent steps in all (override run.budget)")
    p.add_argument("--out", required=True, type=Path, help="run folder (data, encoder, world models, run.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (with its stored config)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. learner.encoder_lr_scale=0 run.stage1_steps=0 (repeatable)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="benchmark suites against model-free baselines at equal env steps, and reports")
    p.add_argument("--suite", help="quick, atari100k, robots or speed")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of every cell")
    p.add_argument("--seed", type=int, help="only this seed (e.g. one process per seed, side by side)")
    p.add_argument("--agents", nargs="+", help="only these agents (random ppo a2c dqn sac wmrl-mpc wmrl-imagine)")
    p.add_argument("--envs", nargs="+", help="only these env cards of the suite")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<suite>); reruns resume it")
    p.add_argument("--report", type=Path, nargs="+", help="rebuild the tables and plots of results folders, run nothing")
    p.add_argument("--readme", type=Path, help="with --report: rewrite this file's headline table from those folders")
    p.add_argument("--quick", action="store_true", help="speed suite: the benchmarks' smoke-test sizes")
    p.add_argument("--device", default="cpu", help="where the SB3 agents and the wmrl world models train: cpu (default) "
                   "or cuda[:N]; planning and evaluation stay on CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("onex", help="the 1X world-model challenge's token data: inspect, train, evaluate, generate")
    onex = p.add_subparsers(dest="onex_command", required=True, parser_class=helped)
    q = onex.add_parser("info", help="frames, segments, windows and action statistics of a split")
    q.add_argument("--data", required=True, type=Path, help="split folder (video.bin, metadata.json, ...)")
    q.set_defaults(func=cmd_onex_info)
    q = onex.add_parser("synth", help="write train/ and val/ splits of synthetic tokens that move with the actions")
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument("--segments", type=int, default=16, help="training segments")
    q.add_argument("--val-segments", type=int, default=48, help="validation segments")
    q.add_argument("--frames", type=int, default=600, help="frames per segment (30 Hz)")
    q.add_argument("--side", type=int, default=16, help="tokens per frame side")
    q.add_argument("--noise", type=float, default=0.05, help="share of tokens redrawn at random in each frame")
    q.add_argument("--seed", type=int, default=0, help="random seed")
    q.set_defaults(func=cmd_onex_synth)
    q = onex.add_parser("train", help="train the token world model")
    q.add_argument("--config", default="onex", help="config name or path (default: onex)")
    q.add_argument("--data", required=True, type=Path, help="training split")
    q.add_argument("--val", required=True, type=Path, help="validation split")
    q.add_argument("--out", required=True, type=Path, help="run folder")
    q.add_argument("--resume", action="store_true", help="continue the run in --out")
    q.add_argument("--steps", type=int, help="override optim.steps")
    q.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:N]")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_onex_train)
    q = onex.add_parser("eval", help="the challenge's CE and accuracy, beside copy and unigram predictors")
    q.add_argument("--checkpoint", required=True, type=Path, help="run folder or checkpoint")
    q.add_argument("--data", required=True, type=Path, help="split to evaluate on")
    q.add_argument("--max-examples", type=int, help="evaluate the first N windows (the challenge uses 1000)")
    q.add_argument("--batch-size", type=int, default=8, help="examples per batch")
    q.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:N]")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_onex_eval)
    q = onex.add_parser("generate", help="continue a window autoregressively; writes the challenge's generated layout")
    q.add_argument("--checkpoint", required=True, type=Path, help="a trained run folder or checkpoint file")
    q.add_argument("--data", required=True, type=Path, help="the data folder")
    q.add_argument("--example", type=int, default=0, help="window index (training-style windows, as the challenge)")
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument("--prompt-frames", type=int, default=8, help="frames given before generation starts")
    q.add_argument("--temperature", type=float, default=0.0, help="0: argmax")
    q.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest values of each factor (0: all)")
    q.add_argument("--seed", type=int, default=0, help="random seed")
    q.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:N]")
    q.set_defaults(func=cmd_onex_generate)

    p = sub.add_parser("vpt", help="OpenAI VPT Minecraft video + action shards: inspect, fit the action scaler, synthesise")
    vpt = p.add_subparsers(dest="vpt_command", required=True, parser_class=helped)
    for name, func, text in (("info", cmd_vpt_info, "segments, frames, duration and action statistics"),
                             ("fit-scaler", cmd_vpt_fit_scaler, "streaming mean/std of the continuous actions, saved as JSON")):
        q = vpt.add_parser(name, help=text)
        q.add_argument("--shards", required=True, help="shards or folders: 'data/vpt/vpt-shards-{000000..000123}.tar', globs")
        q.add_argument("--config", help="experiment config whose vpt section sets frameskip and null frames")
        q.add_argument("--frameskip", type=int, help="one step every N video frames (20 / N fps)")
        q.add_argument("--null-frames", choices=["keep", "drop"], help="frames with no action: keep or drop them")
        q.add_argument("--max-segments", type=int, help="read at most N segments")
        if name == "fit-scaler":
            q.add_argument("--out", required=True, type=Path, help="scaler JSON to write")
        q.set_defaults(func=func)
    q = vpt.add_parser("synth", help="write shards of synthetic segments in VPT's format (mp4 + jsonl) whose views follow the mouse")
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument("--shards", type=int, default=2, help="shards to write")
    q.add_argument("--segments", type=int, default=8, help="segments per shard")
    q.add_argument("--frames", type=int, default=400, help="frames per segment (20 fps)")
    q.add_argument("--folders", action="store_true", help="VPT's folder layout instead of WebDataset shards")
    q.add_argument("--seed", type=int, default=0, help="random seed")
    q.set_defaults(func=cmd_vpt_synth)

    p = sub.add_parser("data", help="inspect replay datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=helped)
    q = data_sub.add_parser("info", help="episodes, steps, returns, size on disk")
    q.add_argument("path", type=Path, help="the folder to inspect")
    q.set_defaults(func=cmd_data_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("steps", "num_envs", "episodes", "max_steps", "horizon", "population", "iterations", "budget", "seeds",
                 "max_examples", "batch_size", "segments", "val_segments", "frames", "side", "frameskip", "max_segments"):
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
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
