"""`wmrl run` with the online agent: act, record, learn, all interleaved, at a budget of env steps.

    seed phase    `run.seed_steps` random steps (all envs stepped in one batch)
    pretraining   stage-1 V-JEPA on those steps for `run.stage1_steps` (0: none; none for the
                  keypoints latent, which has no ViT); its EMA target
                  encoder initialises the agent's encoder
    learning      the search agent acts (epsilon-greedy, `search.*`); after every vector step the
                  learner catches up to `run.replay_ratio` updates per env step since the seed phase
    stored latents (with `learner.freeze_encoder_after` > 0) once the learner has made that many
                  updates the encoder stays as it is, each replay stack's latent is stored and the
                  learner goes on from those at `run.frozen_replay_ratio` updates per env step
    evaluation    `run.eval_episodes` full episodes with the deterministic search agent

Every transition goes to the Minari dataset under out/data (the record of the run) and to the
in-memory replay the learner samples from. Every `run.checkpoint_every` steps the learner and the
counters are saved; a killed run resumes from that checkpoint and refills its replay from the
dataset. The budget counts the dataset's stored steps, so steps of episodes unfinished at a
SIGKILL are collected again (Ctrl-C / SIGTERM store them truncated first).

    out/data/        the replay dataset           out/encoder/     the stage-1 run (when pretrained)
    out/learner.pt   learner + counters            out/agent.pt     the acting agent (a `--policy`)
    out/run.json     config, progress rows (seconds count across resumes), the final evaluation
    out/metrics.jsonl  losses every `LOG_EVERY` updates and every finished episode's return
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from wmrl.config import ExperimentConfig, from_dict, to_dict
from wmrl.control.search import SearchAgent, to_unit
from wmrl.data.collect import EpisodeBuffer, open_writer
from wmrl.data.memory import TransitionMemory
from wmrl.data.replay import ReplayDataset, state_spans
from wmrl.data.store import is_dataset, read_episode, read_metadata, write_json_atomic
from wmrl.envs import load_card, make_env, make_vector_env
from wmrl.errors import UserError
from wmrl.eval.episodes import run_episodes
from wmrl.eval.tasks import episode_measure
from wmrl.models.agent_model import AgentWorldModel
from wmrl.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from wmrl.train.learner import Learner
from wmrl.train.logger import MetricsLog
from wmrl.train.stage1 import Stage1Trainer

LOG_EVERY = 100  # updates per averaged loss row


class OnlineRun:
    def __init__(self, cfg: ExperimentConfig, out: str | Path, device: str = "cpu", progress: bool = True):
        if cfg.env is None:
            raise UserError("wmrl run needs an env: the config names none (env: ...)")
        self.cfg, self.out, self.device, self.progress = cfg, Path(out), device, progress
        self.card = load_card(cfg.env)
        self.record_path = self.out / "run.json"
        self.record = {"config": to_dict(cfg), "loop": "online", "steps": 0, "updates": 0, "progress": [], "eval": None}

    @classmethod
    def resume(cls, out: str | Path, record: dict, cfg: ExperimentConfig, **kwargs) -> OnlineRun:
        run = cls(cfg, out, **kwargs)
        run.record = {**record, "config": to_dict(cfg)}
        return run

    # ------------------------------------------------------------------ pieces
    def _memory(self, frame_shape: tuple[int, ...]) -> TransitionMemory:
        """The replay, refilled from the dataset's stored episodes (a resumed run)."""
        r = self.cfg.run
        # Each episode adds one frame beyond its steps; Breakout episodes last >= ~100 steps.
        capacity = r.budget + r.budget // 20 + 4 * r.num_envs + 1000
        space = self.action_space
        continuous = not hasattr(space, "n")
        memory = TransitionMemory(capacity, frame_shape, self.card.frame_stack, seed=r.seed,
                                  action_dim=space.shape[0] if continuous else None)
        data = self.out / "data"
        if is_dataset(data):
            meta = read_metadata(data)
            lives = state_spans([tuple(x) for x in meta["wmrl"].get("state_layout", [])]).get("lives")
            for i in range(meta["total_episodes"]):
                episode = read_episode(data, i, frame_shape)
                if continuous:  # the dataset keeps the env's units; the model learns on [-1, 1]
                    episode = dataclasses.replace(episode, actions=self._unit(episode.actions))
                memory.add_episode(episode, None if lives is None or episode.states is None else episode.states[:, lives][:, 0])
        return memory

    def _model(self, stack_shape: tuple[int, ...]) -> AgentWorldModel:
        torch.manual_seed(self.cfg.run.seed)
        space = self.action_space
        continuous = not hasattr(space, "n")
        return AgentWorldModel(self.cfg.stage1.model.encoder, self.cfg.learner.model, stack_shape,
                               space.shape[0] if continuous else space.n, continuous)

    def _agent(self, model: AgentWorldModel, seed: int, epsilon: float = 0.0, trained: bool = False) -> SearchAgent:
        """The acting agent; `trained`: the one saved for after learning (at `search.eval_depth`)."""
        s, space = self.cfg.search, self.action_space
        bounds = {"low": space.low, "high": space.high} if model.continuous else {}
        depth = s.trained_depth if trained else s.depth
        return SearchAgent(model, depth, self.cfg.learner.gamma, epsilon, seed=seed, mppi=s.mppi, **bounds)

    def _unit(self, actions: np.ndarray) -> np.ndarray:
        """Continuous env actions [..., A] -> [-1, 1]."""
        return to_unit(actions, self.action_space.low, self.action_space.high)

    def _pretrain(self, model: AgentWorldModel) -> None:
        """Stage-1 V-JEPA on the seed data; the agent's encoder starts from its EMA target encoder."""
        import copy

        stage1 = copy.deepcopy(self.cfg.stage1)  # this run's step count; the config stays as given
        stage1.optim.steps = self.cfg.run.stage1_steps
        folder = self.out / "encoder"
        trainer = Stage1Trainer(stage1, ReplayDataset(self.out / "data"), folder, val_fraction=self.cfg.data.val_fraction,
                                device=self.device, progress=self.progress)
        trainer.train(resume=(folder / CHECKPOINT_NAME).is_file())
        state = load_checkpoint(folder)["model"]
        model.encoder.load_state_dict({k.removeprefix("target_encoder."): v for k, v in state.items()
                                       if k.startswith("target_encoder.")})

    def _save(self, learner: Learner, steps: int, episodes: int) -> None:
        # The checkpoint carries the progress rows: a kill between its write and run.json's leaves
        # run.json behind, and a resumed run takes its record from here.
        save_checkpoint(self.out / "learner.pt", {"learner": learner.state_dict(), "steps": steps, "episodes": episodes,
                                                   "memory_rng": self.memory.rng.bit_generator.state,
                                                   "progress": self.record["progress"]})
        self.record.update(steps=steps, updates=learner.updates)
        write_json_atomic(self.record_path, self.record)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        cfg, r = self.cfg, self.cfg.run
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.record_path, self.record)
        venv = make_vector_env(self.card, r.num_envs, asynchronous=False)
        try:
            self._learn(venv)
        finally:
            venv.close()
        if r.eval_episodes and self.record["eval"] is None:
            self.record["eval"] = self.evaluate()
            write_json_atomic(self.record_path, self.record)
        return self.record

    def _learn(self, venv) -> None:
        cfg, r = self.cfg, self.cfg.run
        writer = open_writer(self.out / "data", self.card, venv, append=True)
        self.action_space = venv.single_action_space  # Discrete, or Box (continuous)
        if hasattr(self.action_space, "n") and min(cfg.search.depth, cfg.search.trained_depth) < 1:
            raise UserError(f"search.depth 0 (acting by the policy prior) needs continuous actions; {self.card.name}'s are discrete")
        frame_shape = tuple(venv.single_observation_space.shape[1:])
        stack_shape = tuple(venv.single_observation_space.shape)
        self.memory = self._memory(frame_shape)
        steps = writer.meta["total_steps"]
        if steps >= r.budget and (self.out / "learner.pt").is_file():
            return
        log = MetricsLog(self.out)
        model = self._model(stack_shape)
        learner, checkpoint = None, self.out / "learner.pt"
        if checkpoint.is_file():
            learner = Learner(model, cfg.learner, self.device, seed=r.seed)
            saved = load_checkpoint(checkpoint)
            learner.load_state_dict(saved["learner"])
            self.memory.rng.bit_generator.state = saved["memory_rng"]
            self.record.update(progress=saved.get("progress", self.record["progress"]), updates=learner.updates)
            log.truncate_after(saved["steps"])
        else:  # no checkpoint: a new run, or one killed (or its learner.pt lost) before learning saved
            # anything; only the dataset's steps survive, so rows and seconds logged past them go
            self.record["progress"] = [row for row in self.record["progress"] if row["steps"] <= steps]
            self.record["eval"] = None  # of a model that is gone
            log.truncate_after(steps)
        agent = None if learner is None else self._agent(learner.model, seed=r.seed + steps)
        action_rng = np.random.default_rng(r.seed + steps)

        obs, info = venv.reset(seed=r.seed + steps)
        writer.set_state_layout(venv.get_attr("layout")[0] if info.get("state") is not None else [])
        writer.add_collection({"policy": "online search agent", "seed": r.seed + steps, "num_envs": r.num_envs,
                               "steps": r.budget - steps})
        state = info.get("state")
        buffers = [EpisodeBuffer(obs[i, -1].copy(), None if state is None else state[i], None) for i in range(r.num_envs)]
        last = [self.memory.start(obs[i, -1]) for i in range(r.num_envs)]
        lives = np.asarray(info.get("lives", np.zeros(r.num_envs)))
        returns, episodes, losses = [], 0, []

        def store_running() -> None:
            """Write every env's unfinished episode, truncated; each goes on as a new one from `obs`."""
            for i, buf in enumerate(buffers):
                if buf.actions:
                    buf.truncations[-1] = True
                    writer.write(buf.to_episode())
                    buffers[i] = EpisodeBuffer(obs[i, -1].copy(), None if state is None else state[i], None)

        next_checkpoint = (steps // r.checkpoint_every + 1) * r.checkpoint_every
        done_before = self.record["progress"][-1]["seconds"] if self.record["progress"] else 0.0  # a resumed run's time so far
        start = time.perf_counter() - done_before
        try:
            while steps < r.budget:
                if learner is None and steps >= r.seed_steps:  # the seed phase is over: start learning
                    # Stage 1 pretrains the ViT; the keypoints latent has its own conv tower and
                    # no ViT (the same config's rounds loop still trains its encoder for that many steps).
                    if r.stage1_steps > 0 and cfg.learner.model.latent == "keypoints":
                        if self.progress:
                            print("stage 1 skipped: the keypoints latent does not use the ViT it pretrains", flush=True)
                    elif r.stage1_steps > 0:
                        store_running()  # stage 1 reads the dataset: every seed step is there to learn from
                        self._pretrain(model)
                    learner = Learner(model, cfg.learner, self.device, seed=r.seed)
                    agent = self._agent(learner.model, seed=r.seed + steps)
                if agent is None:
                    space = venv.single_action_space
                    actions = (action_rng.integers(space.n, size=r.num_envs) if hasattr(space, "n") else
                               action_rng.uniform(space.low, space.high, (r.num_envs, *space.shape)).astype(np.float32))
                else:
                    learner.model.eval()
                    actions = agent.act(obs, cfg.search.epsilon(steps - r.seed_steps), sample=True)
                obs, rewards, terminated, truncated, info = venv.step(actions)
                learned = actions if self.memory.action.ndim == 1 else self._unit(actions)  # what the memory keeps
                state = info.get("state")
                new_lives = np.asarray(info.get("lives", lives))
                done = terminated | truncated
                for i in range(r.num_envs):
                    if done[i]:
                        final = info["final_obs"][i][-1].copy()
                        final_state = info["final_info"].get("state")
                        buffers[i].add(actions[i], rewards[i], terminated[i], truncated[i], final,
                                       None if final_state is None else final_state[i])
                        self.memory.add(last[i], learned[i], rewards[i], bool(terminated[i]), True, final)
                        writer.write(buffers[i].to_episode())
                        returns.append(float(np.sum(buffers[i].rewards)))
                        log.log({"step": steps + r.num_envs, "episode_return": returns[-1], "episode_steps": len(buffers[i].rewards)})
                        episodes += 1
                        buffers[i] = EpisodeBuffer(obs[i, -1].copy(), None if state is None else state[i], None)
                        last[i] = self.memory.start(obs[i, -1])
                    else:
                        frame = obs[i, -1].copy()
                        lost = bool(new_lives[i] < lives[i])  # terminal for learning; the episode goes on
                        buffers[i].add(actions[i], rewards[i], False, False, frame, None if state is None else state[i])
                        last[i] = self.memory.add(last[i], learned[i], rewards[i], lost, lost, frame)
                lives = new_lives
                steps += r.num_envs
                if learner is not None:
                    learner.model.train()
                    while learner.updates < self._updates_due(steps):
                        losses.append(learner.update(self._batch(learner)))
                        if len(losses) == LOG_EVERY:
                            row = {k: float(np.mean([x[k] for x in losses])) for k in losses[0]}
                            log.log({"step": steps, "updates": learner.updates, **row})
                            losses = []
                if steps >= next_checkpoint or steps >= r.budget:
                    next_checkpoint += r.checkpoint_every
                    self._progress(steps, learner, returns, start)
                    if learner is not None:
                        self._save(learner, writer.meta["total_steps"], episodes)
        finally:
            store_running()  # budget spent or interrupted: keep the unfinished episodes
            if learner is not None:
                self._save(learner, writer.meta["total_steps"], episodes)
                self._agent(learner.model, r.seed, cfg.search.explore_end, trained=True).save(self.out / "agent.pt")
            log.close()

    def _updates_due(self, steps: int) -> float:
        """Updates the learner should have made after `steps` env steps: `replay_ratio` per step
        past the seed phase until the encoder freezes, then `frozen_replay_ratio` per step."""
        r, freeze = self.cfg.run, self.cfg.learner.freeze_encoder_after
        due = r.replay_ratio * (steps - r.seed_steps)
        if freeze == 0 or due <= freeze:
            return due
        frozen_at = r.seed_steps + freeze / r.replay_ratio  # the env step at which the encoder froze
        return freeze + r.frozen_replay_ratio * (steps - frozen_at)

    def _batch(self, learner: Learner):
        """The next update's sequences: observation stacks, or stored latents once the encoder is frozen."""
        cfg = self.cfg.learner
        if cfg.freeze_encoder_after == 0 or learner.updates < cfg.freeze_encoder_after:
            return self.memory.sample(cfg.batch_size, cfg.sequence_length)
        model = learner.model
        if self.memory.encoded < len(self.memory):  # the frozen encoder's latents of the stacks stored since
            with torch.no_grad():                    # the last update, encoded as the agent acting sees them
                model.eval()
                self.memory.encode_new(lambda stacks: model.encode(torch.as_tensor(stacks, device=learner.device)).cpu())
                model.train()
        return self.memory.sample(cfg.frozen_batch_size, cfg.sequence_length, latents=True)

    def _progress(self, steps: int, learner: Learner | None, returns: list[float], start: float) -> None:
        recent = returns[-20:]
        row = {"steps": steps, "updates": 0 if learner is None else learner.updates,
               "return_recent": float(np.mean(recent)) if recent else None, "seconds": time.perf_counter() - start}
        self.record["progress"].append(row)
        if self.progress:
            ret = "-" if row["return_recent"] is None else f"{row['return_recent']:.2f}"
            print(f"{steps} steps, {row['updates']} updates, return (last 20 episodes) {ret}, {row['seconds']:.0f} s", flush=True)

    def evaluate(self) -> dict:
        r = self.cfg.run
        agent = SearchAgent.load(self.out / "agent.pt", device=self.device)
        agent.epsilon = self.cfg.search.eval_epsilon
        env = make_env(self.card)
        try:
            torch.manual_seed(r.seed)
            stats, _ = run_episodes(env, agent, r.eval_episodes, seed=r.seed + 10**6, max_steps=r.eval_max_steps,
                                    measure=episode_measure(self.card, env))
        finally:
            env.close()
        return stats.summary(self.card)


def load_agent(out: str | Path) -> SearchAgent:
    """The acting agent of the run in `out`: its agent.pt once the run has ended, else the agent of
    its last learner checkpoint (to diagnose a run that is still going or was killed)."""
    out = Path(out)
    if (out / "agent.pt").is_file() or not (out / "learner.pt").is_file():
        return SearchAgent.load(out / "agent.pt")
    record = json.loads((out / "run.json").read_text())
    run = OnlineRun(from_dict(ExperimentConfig, record["config"], source=str(out / "run.json")), out)
    env = make_env(run.card)
    run.action_space, stack_shape = env.action_space, tuple(env.observation_space.shape)
    env.close()
    model = run._model(stack_shape)
    model.load_state_dict(load_checkpoint(out / "learner.pt")["learner"]["model"])
    return run._agent(model, run.cfg.run.seed, run.cfg.search.explore_end, trained=True)


def new_run(cfg: ExperimentConfig, out: str | Path, **kwargs):
    """The run of `cfg.run.loop`: the online agent, or the rounds of the two-stage design."""
    from wmrl.mbrl import ModelBasedRun

    return (OnlineRun if cfg.run.loop == "online" else ModelBasedRun)(cfg, out, **kwargs)


def resume_run(out: str | Path, budget: int | None = None, **kwargs):
    """Continue the run in `out` with its stored config (`budget` may extend it)."""
    from wmrl.mbrl import ModelBasedRun

    path = Path(out) / "run.json"
    if not path.is_file():
        raise UserError(f"nothing to resume: {out} has no run.json")
    record = json.loads(path.read_text())
    cfg = from_dict(ExperimentConfig, record["config"], source=str(path))
    if cfg.run.loop == "rounds":
        return ModelBasedRun.resume(out, budget, **kwargs)
    if budget is not None and budget != cfg.run.budget:
        cfg.run.budget = budget
        record["eval"] = None  # a longer run is evaluated again at its new end
    return OnlineRun.resume(out, record, cfg, **kwargs)
