"""The agents a benchmark compares. Each trains at a budget of real env agent steps inside its own
run folder, resumes there after a kill, and hands back a policy with SB3's ``predict`` that the
runner evaluates like every other agent (same card, same seeds, full episodes).

    random          uniform actions; no training
    ppo a2c dqn     SB3 model-free baselines on the card's frame stacks (CnnPolicy); dqn: discrete
    ppo-zoo a2c-zoo dqn-zoo
                    the same algorithms and settings on SB3's own Atari preprocessing (AtariWrapper,
                    84x84, VecFrameStack 4), as the rl-zoo trains them; Atari cards only
    sac             SB3 SAC, continuous actions
    wmrl            `wmrl run` with the online agent of the env's config: Q learned end to end with a
                    world model beside it, acting greedily on Q or by search with Q at the leaves
                    (discrete actions: every short action sequence; continuous: MPPI with policy-prior samples)
    wmrl-search, wmrl-pretrain, wmrl-frozen, wmrl-model-grad
                    `wmrl` with overrides (ABLATIONS): acting by search while learning, stage-1
                    pretraining, the pretrained encoder frozen, the world model's losses on the encoder
    wmrl-mpc        `wmrl run` with run.loop rounds: collect -> stage 1 -> stage 2 rounds, then the MPC planner
    wmrl-imagine    an SB3 policy trained in the imagination env of the wmrl-mpc run's last world
                    model (the same seed's folder, so no extra real steps)

SB3 agents learn from the card's env with the Atari conventions the published baselines use:
rewards clipped to [-1, 1] and a lost life as a terminal (SB3's EpisodicLifeEnv), for learning only; the curve and the
evaluation count full episodes and raw rewards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from wmrl.envs import make_env
from wmrl.envs.card import EnvCard
from wmrl.envs.wrappers import FireOnLifeLoss, StackToChannels
from wmrl.errors import UserError
from wmrl.policies import SB3Policy

# The online agent's ablations: `wmrl` with one config override each, run like `wmrl`.
ABLATIONS = {"wmrl-search": ("search.depth=2",),  # act by the 2-step search over the world model while learning
             "wmrl-greedy": ("search.eval_depth=1",),  # the trained agent acts greedily on Q, not by the search
             "wmrl-pretrain": ("run.stage1_steps=1000",),  # stage-1 V-JEPA on the seed steps first
             "wmrl-frozen": ("run.stage1_steps=1000", "learner.encoder_lr_scale=0"),  # the encoder as stage 1 left it
             "wmrl-model-grad": ("learner.model_grad=true",)}  # the world model's losses train the encoder too (SPR)
AGENTS = ("random", "ppo", "a2c", "dqn", "ppo-zoo", "a2c-zoo", "dqn-zoo", "sac", "wmrl", *ABLATIONS, "wmrl-mpc",
          "wmrl-imagine")
DISCRETE_ONLY, CONTINUOUS_ONLY = {"dqn", "dqn-zoo"}, {"sac"}
ZOO = {"ppo-zoo": "ppo", "a2c-zoo": "a2c", "dqn-zoo": "dqn"}  # SB3's Atari preprocessing -> the algorithm

# SB3 zoo Atari settings; replay buffers hold at most the whole budget (zoo: 10M steps, 1M-step buffers).
SB3_SETTINGS = {
    "ppo": dict(n_envs=8, n_steps=128, n_epochs=4, batch_size=256, learning_rate=2.5e-4, clip_range=0.1,
                ent_coef=0.01, vf_coef=0.5),
    "a2c": dict(n_envs=16, ent_coef=0.01, vf_coef=0.25),
    "dqn": dict(n_envs=1, buffer_size=100_000, learning_rate=1e-4, batch_size=32, learning_starts=1000,
                target_update_interval=1000, train_freq=4, gradient_steps=1, exploration_fraction=0.1,
                exploration_final_eps=0.01, optimize_memory_usage=True,  # next obs not stored twice: half the RAM
                replay_buffer_kwargs=dict(handle_timeout_termination=False)),
    "sac": dict(n_envs=1, buffer_size=100_000, learning_starts=1000, batch_size=256),
}
CHUNKS = 10  # an SB3 run saves (model, replay buffer) this many times, so a kill loses at most a tenth


def supports(agent: str, card: EnvCard) -> bool:
    discrete = card.action.type == "discrete"
    if agent in ZOO and "ale_py" not in card.imports:
        return False
    return not (agent in DISCRETE_ONLY and not discrete or agent in CONTINUOUS_ONLY and discrete)


def zoo_atari_env(card: EnvCard, train: bool, monitor: Path | None = None) -> gym.Env:
    """The card's game through SB3's AtariWrapper, as the rl-zoo trains Atari agents: no-op starts,
    frame skip 4 with a max over the last two frames, FIRE at reset, 84x84 grayscale by OpenCV, and
    while learning a lost life as terminal and rewards clipped to [-1, 1]. Sticky actions and no-op
    counts come from the card, so both variants face the same game. `monitor`: a Monitor under the
    wrapper records full episodes with raw rewards (lengths in raw frames)."""
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.monitor import Monitor

    from wmrl.envs.make import import_env_packages

    import_env_packages(card)  # registers the ALE's envs
    p = card.preprocess
    env = gym.make(card.gym_id, frameskip=1, repeat_action_probability=p.sticky_actions, full_action_space=False)
    if monitor is not None:
        env = Monitor(env, str(monitor), override_existing=False)
    env = AtariWrapper(env, noop_max=p.noop_max, frame_skip=p.frame_skip, screen_size=84,
                       terminal_on_life_loss=train, clip_reward=train)
    if not train and p.fire_on_life_loss:
        # Full games serve the ball after a lost life, as the card's own games do: trained with a
        # lost life as terminal and FIRE at every reset, the agent never learned to press it, and
        # without this all 20 evaluation games of SB3 DQN ran to the 27k-step cap (3.05 points).
        env = FireOnLifeLoss(env)
    return env


def zoo_eval_env(card: EnvCard) -> gym.Env:
    """Evaluation env of the zoo variants: full games, raw rewards, stacks [K, 84, 84, 1] (the
    layout SB3Policy flattens to the model's channel-first [K, 84, 84])."""
    return gym.wrappers.FrameStackObservation(zoo_atari_env(card, train=False), card.frame_stack)


def sb3_training_env(card: EnvCard, folder: Path, index: int) -> gym.Env:
    from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv
    from stable_baselines3.common.monitor import Monitor

    env = make_env(card)
    env = Monitor(env, str(folder / f"{index}"), override_existing=False)  # full episodes, raw rewards
    if "ale_py" in card.imports:
        env = gym.wrappers.ClipReward(EpisodicLifeEnv(env), -1.0, 1.0)  # a lost life ends a learning episode
    return StackToChannels(env)


def sb3_settings(algo: str, budget: int) -> dict:
    """The SB3 settings of `algo` at `budget` (n_envs included), as the cell records them."""
    settings = dict(SB3_SETTINGS[algo])
    if "buffer_size" in settings:  # frame stacks are large: never allocate more than the budget needs
        settings["buffer_size"] = min(settings["buffer_size"], budget)
    return settings


def train_sb3(card: EnvCard, algo: str, budget: int, seed: int, folder: Path, progress: bool = False,
              device: str = "cpu") -> SB3Policy:
    """Learn `budget` agent steps in `chunks`, saving after each; a rerun continues from the last save."""
    import stable_baselines3
    from stable_baselines3.common.vec_env import DummyVecEnv

    zoo = algo in ZOO
    algo = ZOO.get(algo, algo)
    settings = sb3_settings(algo, budget)
    n_envs = settings.pop("n_envs")
    monitors = folder / "monitor"
    monitors.mkdir(parents=True, exist_ok=True)
    if zoo:
        from stable_baselines3.common.vec_env import VecFrameStack

        venv = VecFrameStack(DummyVecEnv([lambda i=i: zoo_atari_env(card, True, monitors / str(i)) for i in range(n_envs)]),
                             card.frame_stack)
        stack_shape = (card.frame_stack, 1, 84, 84)
    else:
        venv = DummyVecEnv([lambda i=i: sb3_training_env(card, monitors, i) for i in range(n_envs)])
        stack_shape = venv.envs[0].env.observation_space.shape  # under StackToChannels: [K, C, H, W]
    cls = getattr(stable_baselines3, algo.upper())
    model_path, buffer_path = folder / "model.zip", folder / "replay_buffer.pkl"
    if model_path.is_file():
        model = cls.load(model_path, env=venv, device=device)
        if buffer_path.is_file():
            model.load_replay_buffer(buffer_path)
    else:
        policy = "CnnPolicy" if len(venv.observation_space.shape) == 3 else "MlpPolicy"  # VecFrameStack: [84, 84, K]
        model = cls(policy, venv, seed=seed, device=device, verbose=0, **settings)
    chunk = max(1, budget // CHUNKS)
    while model.num_timesteps < budget:
        model.learn(min(chunk, budget - model.num_timesteps), reset_num_timesteps=False, progress_bar=progress)
        model.save(model_path)
        if hasattr(model, "save_replay_buffer"):
            model.save_replay_buffer(buffer_path)
    venv.close()
    return SB3Policy(model_path, stack_shape, deterministic=True)


def sb3_curve(folder: Path, frames_per_step: int = 1) -> list[tuple[int, float]]:
    """(agent steps at the episode's end, full-episode return) over all envs, in wall-time order.
    `frames_per_step`: the zoo variants' monitors count raw frames."""
    rows = []
    for path in sorted((folder / "monitor").glob("*.monitor.csv")):
        # SB3 writes its "#{json}" and "r,l,t" header lines only when it overrides a file (not in
        # the append mode a resumable run needs): keep the lines that are numbers
        lines = [line for line in path.read_text().splitlines() if line and line[0] not in "#r"]
        rows += [tuple(map(float, line.split(",")[:3])) for line in lines]
    rows.sort(key=lambda r: r[2])
    steps = (np.cumsum([r[1] for r in rows]) // frames_per_step).astype(int)
    return [(int(s), r[0]) for s, r in zip(steps, rows)]


def wmrl_run(card: EnvCard, config: str, budget: int, seed: int, folder: Path, progress: bool = False,
             device: str = "cpu", loop: str = "rounds", overrides: tuple[str, ...] = ()):
    """`wmrl run` in `folder` with the config's `loop` set to `loop` (one config serves both wmrl
    agents: learner/search for the online one, stage2/plan for the MPC one) and `overrides`
    (`section.key=value`); resumed if the folder holds a run. Returns the finished run."""
    from wmrl.config import load_experiment
    from wmrl.online import new_run, resume_run

    if (folder / "run.json").is_file():
        run = resume_run(folder, budget=budget, device=device, progress=progress)
    else:
        cfg = load_experiment(config, (f"run.loop={loop}", *overrides))
        if cfg.env != card.name:
            raise UserError(f"config '{config}' is for env '{cfg.env}', the benchmark cell is '{card.name}'")
        cfg.run.budget, cfg.run.seed, cfg.run.eval_episodes = budget, seed, 0  # the runner evaluates
        run = new_run(cfg, folder, device=device, progress=progress)
    run.run()
    return run


def online_agent(card: EnvCard, config: str, budget: int, seed: int, folder: Path, progress: bool = False,
                 device: str = "cpu", overrides: tuple[str, ...] = ()):
    """The online agent's `wmrl run` in `folder` (resumed if there); returns (agent, learning curve)."""
    from wmrl.control.search import SearchAgent
    from wmrl.train.logger import MetricsLog

    wmrl_run(card, config, budget, seed, folder, progress, device, loop="online", overrides=overrides)
    curve = [(row["step"], row["episode_return"]) for row in MetricsLog(folder).rows() if "episode_return" in row]
    return SearchAgent.load(folder / "agent.pt"), curve


def mpc_curve(folder: Path) -> list[tuple[int, float]]:
    """(real steps at the round's end, mean return of the episodes that round collected)."""
    rounds = json.loads((folder / "run.json").read_text())["rounds"]
    return [(r["steps"], r["return_mean"]) for r in rounds if r["return_mean"] is not None]


def action_space(card: EnvCard) -> gym.Space:
    env = make_env(card)
    env.close()
    return env.action_space


def train_agent(agent: str, card: EnvCard, budget: int, seed: int, folder: Path, config: str,
                imagine_steps: int, progress: bool = False, device: str = "cpu"):
    """Train `agent` (resuming in `folder`); returns (policy with SB3's predict, curve rows)."""
    from wmrl.control.agent import MPCAgent
    from wmrl.policies import RandomPolicy
    from wmrl.train.checkpoint import load_checkpoint

    if agent == "random":
        return RandomPolicy(action_space(card), seed), []
    if agent in SB3_SETTINGS or agent in ZOO:  # the zoo's monitor counts raw frames
        frames_per_step = card.preprocess.frame_skip if agent in ZOO else 1
        return train_sb3(card, agent, budget, seed, folder, progress, device), sb3_curve(folder, frames_per_step)
    if agent == "wmrl" or agent in ABLATIONS:
        return online_agent(card, config, budget, seed, folder, progress, device, ABLATIONS.get(agent, ()))
    mbrl = folder.parent.parent / "wmrl-mpc" / folder.name  # the same seed's model-based run
    run = wmrl_run(card, config, budget, seed, mbrl, progress, device)
    payload = load_checkpoint(run.world_model_dir(len(run.record["rounds"]) - 1))
    if agent == "wmrl-mpc":
        return MPCAgent.from_checkpoint(payload, run.cfg.plan, action_space(card)), mpc_curve(mbrl)
    if agent == "wmrl-imagine":
        from wmrl.control.imagination import LatentPolicy
        from wmrl.imagine import imagine
        from wmrl.models.world_model import WorldModel

        from stable_baselines3 import PPO

        if not (folder / "model.zip").is_file():  # no mid-run resume: imagination is cheap beside the real run
            imagine(payload, mbrl / "data", "ppo", imagine_steps, folder, eval_episodes=0, seed=seed, progress=progress)
        model = PPO.load(folder / "model.zip", device="cpu")
        return LatentPolicy(WorldModel.from_checkpoint(payload), model), []
    raise UserError(f"unknown agent '{agent}' (agents: {', '.join(AGENTS)})")


def evaluate(card: EnvCard, policy, episodes: int, seed: int, max_steps: int | None = None, zoo: bool = False) -> dict:
    """Full episodes from seeds seed, seed+1, ...; plus what the card measures (success rate,
    final goal distance, Crafter score: wmrl.eval.tasks). `zoo`: the game through SB3's Atari
    preprocessing, which the zoo variants learned on (same seeds, full games, raw rewards)."""
    from wmrl.eval.episodes import run_episodes
    from wmrl.eval.tasks import episode_measure

    env = zoo_eval_env(card) if zoo else make_env(card)
    try:
        start = time.perf_counter()
        stats, _ = run_episodes(env, policy, episodes, seed=seed, max_steps=max_steps, measure=episode_measure(card, env))
    finally:
        env.close()
    return {**stats.summary(card), "eval_seconds": time.perf_counter() - start}
