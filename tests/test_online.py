"""The online agent: replay sequences, search vs greedy, learning a toy task, save/load, resume after SIGKILL."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import toy_env
from conftest import run_cli
from wmrl.control.config import MPPISettings
from wmrl.control.search import ExhaustiveSearch, SearchAgent, mppi, q_search_objective
from wmrl.data.memory import TransitionMemory
from wmrl.data.replay import ReplayDataset
from wmrl.models.agent_model import AgentWorldModel
from wmrl.models.config import AgentModelConfig, EncoderConfig
from wmrl.train.config import LearnerConfig
from wmrl.train.checkpoint import load_checkpoint
from wmrl.train.learner import Learner

TOY_CONFIG = """env: {card}
stage1:
  model: {{encoder: {{size: micro, width: 32, depth: 1, heads: 2, patch: 6, tubelet: 2}}, predictor: {{width: 32, depth: 1, heads: 2}}}}
  optim: {{steps: 5, batch_size: 8, warmup_steps: 1}}
  eval_every: 5
  checkpoint_every: 5
learner: {{batch_size: 16, lr: 0.001, unroll: 2, n_step: 1, shift: 0, model: {{hidden: 64}}}}
search: {{depth: 1, explore_steps: 300}}
run: {{budget: {budget}, seed_steps: 200, stage1_steps: {stage1}, num_envs: 4, replay_ratio: 0.5, checkpoint_every: 200,
      eval_episodes: {eval_episodes}}}
"""


def toy_config(tmp_path: Path, budget: int = 1200, stage1: int = 0, eval_episodes: int = 10, card_text: str = toy_env.CARD) -> Path:
    card = tmp_path / "card.yaml"
    card.write_text(card_text)
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_CONFIG.format(card=card, budget=budget, stage1=stage1, eval_episodes=eval_episodes))
    return path


def tiny_model(num_actions: int = 2, stack=(2, 1, 12, 12)) -> AgentWorldModel:
    torch.manual_seed(0)
    return AgentWorldModel(EncoderConfig(size="micro", width=32, depth=1, heads=2, patch=6, tubelet=2),
                           AgentModelConfig(hidden=64), stack, num_actions)


def test_memory_sequences_stop_at_lost_lives_and_pad_stacks_with_the_first_frame():
    memory = TransitionMemory(50, (1, 2, 2), frame_stack=3)
    frame = lambda v: np.full((1, 2, 2), v, np.uint8)  # noqa: E731
    i = memory.start(frame(0))
    for t in range(1, 6):  # step 2 loses a life (terminal for learning, the episode goes on)
        i = memory.add(i, t % 2, float(t), terminal=(t == 3), end=(t == 3), frame=frame(t))
    assert memory.steps == 5 and len(memory) == 6
    stacks = memory.stacks(np.array([0, 1, 4]))
    assert stacks[:, :, 0, 0, 0].tolist() == [[0, 0, 0], [0, 0, 1], [2, 3, 4]]
    memory.rng = np.random.default_rng(0)
    batch = memory.sample(64, 4)
    first = batch.obs[:, 0, -1, 0, 0, 0]  # frame value == record index here
    for b in range(64):
        steps_left_in_life = 3 - first[b] if first[b] < 3 else 5 - first[b]
        # the observation after a lost life starts a new life: not part of the sequence
        assert batch.valid[b].sum() == min(4, steps_left_in_life + (0 if first[b] < 3 else 1))
        assert batch.terminal[b].any() == (first[b] < 3 and steps_left_in_life <= 3)
        live = batch.live[b]
        assert live.sum() == min(3, steps_left_in_life)
        assert (batch.reward[b][live] == first[b] + 1 + np.arange(live.sum())).all()


class CliffModel(torch.nn.Module):
    """Two actions from state 0: action 0's Q looks better, but it leads to a lost life (no reward,
    continuation 0); action 1 pays 1 and leads to state 1, where Q is 1. Greedy Q picks 0, a depth-2
    search sees the lost life and picks 1."""

    num_actions, continuous = 2, False

    def step(self, z, action):
        nxt = action.float()[:, None].expand(-1, 1)  # state index = the action taken
        reward_logits = action.float()[:, None]  # decoded by `reward` below
        cont_logit = torch.where(action == 0, -20.0, 20.0)
        return nxt, reward_logits, cont_logit

    def reward(self, logits):
        return logits[:, 0]

    def q(self, z):
        q_state0 = torch.tensor([2.0, 1.5])
        q_state1 = torch.tensor([1.0, 1.0])
        return torch.where(z[:, :1] > 0.5, q_state1, q_state0)[None]  # [1, B, A]

    def q_taken(self, z, action):
        return self.q(z).gather(-1, action[None, :, None])[..., 0]


def test_search_sees_what_greedy_q_misses():
    model, z = CliffModel(), torch.zeros(1, 1)
    greedy, _ = ExhaustiveSearch(2, depth=1).optimize_batch(q_search_objective(model, z, 0.99), 1)
    searched, scores = ExhaustiveSearch(2, depth=2).optimize_batch(q_search_objective(model, z, 0.99), 1)
    assert greedy[0, 0] == 0 and searched[0, 0] == 1
    # the mean of the 1-step estimate Q(z0, 1) = 1.5 and the 2-step one 1 + 0.99 * 1.0
    assert scores.shape == (1, 4) and scores[0].max() == pytest.approx((1.5 + 1 + 0.99 * 1.0) / 2, abs=1e-4)


class BlindModel(CliffModel):
    """Dynamics that ignore the action (as an untrained model's do): every first action leads to the
    same predicted latent, reward and continuation, while Q prefers action 1."""

    def step(self, z, action):
        return torch.ones_like(z), torch.zeros(len(z), 1), torch.full((len(z),), 20.0)

    def q(self, z):
        return torch.where(z[:, :1] > 0.5, torch.tensor([3.0, 0.0]), torch.tensor([0.5, 1.0]))[None]


def test_search_keeps_q_s_ranking_when_the_model_ignores_actions():
    best, _ = ExhaustiveSearch(2, depth=3).optimize_batch(q_search_objective(BlindModel(), torch.zeros(4, 1), 0.99), 4)
    assert (best[:, 0] == 1).all()


def test_tree_search_scores_equal_stepping_every_sequence_alone():
    """The discrete search steps once per distinct prefix; its scores must be those of rolling each
    sequence out by itself (here with random reward and dynamics heads, 3 actions, depth 3)."""
    model = tiny_model(num_actions=3).eval()
    for head in (model.reward_head, model.next_head):
        torch.nn.init.normal_(head.weight, std=0.5)
    z = model.encode(torch.as_tensor(toy_memory().sample(2, 1).obs[:, 0]))
    candidates = ExhaustiveSearch(3, depth=3).candidates.expand(2, -1, -1)  # [2, 27, 3]
    with torch.no_grad():
        scores = q_search_objective(model, z, 0.9)(candidates)
        for env in range(2):
            for j, seq in enumerate(candidates[env]):
                zt, ret, disc, total = z[env:env + 1], 0.0, 1.0, 0.0
                for t, a in enumerate(seq.tolist()):
                    action = torch.tensor([a])
                    total += ret + disc * float(model.q_taken(zt, action).mean())
                    zt, reward_logits, cont_logit = model.step(zt, action)
                    ret += disc * float(model.reward(reward_logits))
                    disc *= 0.9 * float(torch.sigmoid(cont_logit))
                assert float(scores[env, j]) == pytest.approx(total / 3, rel=1e-4, abs=1e-5)


def toy_memory(steps: int = 300, continuous: bool = False) -> TransitionMemory:
    """Random play of the discrete toy env (or the continuous one) in a replay memory."""
    memory = TransitionMemory(steps + 100, (1, 12, 12), frame_stack=2, seed=0, action_dim=1 if continuous else None)
    env = toy_env.ReachEnv() if continuous else toy_env.SideEnv()
    obs, _ = env.reset(seed=0)
    i, rng = memory.start(obs.transpose(2, 0, 1)), np.random.default_rng(0)
    for _ in range(steps):
        action = rng.uniform(-1, 1, 1).astype(np.float32) if continuous else int(rng.integers(2))
        obs, reward, term, trunc, _ = env.step(action)
        i = memory.add(i, action, reward, term, term or trunc, obs.transpose(2, 0, 1))
        if term or trunc:
            obs, _ = env.reset()
            i = memory.start(obs.transpose(2, 0, 1))
    return memory


class BowlModel(torch.nn.Module):
    """One continuous action: the first step pays -(a - 0.6)^2, the latent stays put and Q is flat,
    so the best first action is 0.6 (the policy prior proposes 0: a search must do better)."""

    num_actions, continuous = 1, True

    def step(self, z, action):
        return z, -(action - 0.6).pow(2), torch.full((len(z),), 20.0)

    def reward(self, logits):
        return logits[:, 0]

    def q_taken(self, z, action):
        return torch.zeros(1, len(z))

    def pi(self, z, generator=None, deterministic=False):
        return torch.zeros(len(z), 1), torch.zeros(len(z))


def test_mppi_finds_the_best_continuous_action_of_a_hand_built_model():
    first = mppi(BowlModel(), torch.zeros(3, 4), 0.99, 2, MPPISettings(population=64, elites=8, iterations=5),
                 torch.Generator().manual_seed(0))
    assert first.shape == (3, 1) and torch.allclose(first, torch.full((3, 1), 0.6), atol=0.08)


@pytest.mark.parametrize("reward_head", ["trunk", "mlp"])
def test_continuous_learner_fits_q_and_the_agent_saves_and_loads(tmp_path, reward_head):
    torch.manual_seed(0)
    model = AgentWorldModel(EncoderConfig(size="micro", width=32, depth=1, heads=2, patch=6, tubelet=2),
                            AgentModelConfig(hidden=64, reward_head=reward_head), (2, 1, 12, 12), 1, continuous=True)
    learner = Learner(model, LearnerConfig(batch_size=32, lr=1e-3, unroll=2, n_step=1, shift=0))
    batch = toy_memory(continuous=True).sample(32, learner.cfg.sequence_length)
    assert batch.action.shape == (32, 2, 1) and batch.action.dtype == np.float32
    first = learner.update(batch)
    for _ in range(60):
        last = learner.update(batch)
    assert np.isfinite(last["pi"]) and last["reward"] < 0.7 * first["reward"]
    agent = SearchAgent(learner.model, depth=2, low=np.array([-2.0]), high=np.array([2.0]), mppi=MPPISettings(population=16, elites=4))
    obs = np.random.default_rng(0).integers(0, 255, (5, 2, 1, 12, 12), dtype=np.uint8)
    actions = agent.predict(obs)[0]
    assert actions.shape == (5, 1) and np.abs(actions).max() <= 2.0
    agent.save(tmp_path / "agent.pt")
    loaded = SearchAgent.load(tmp_path / "agent.pt")
    assert np.allclose(loaded.predict(obs)[0], actions) and loaded.mppi.population == 16


def test_own_reward_head_learns_an_action_cost_from_actions_scaled_to_the_latent():
    """Reward -a^2 whatever the state (Reacher's torque cost): read from (z, a) by its own MLP, with
    the action scaled to the latent's size, it is fitted within 300 updates on the toy frames."""
    torch.manual_seed(0)
    model = AgentWorldModel(EncoderConfig(size="micro", width=32, depth=1, heads=2, patch=6, tubelet=2),
                            AgentModelConfig(hidden=64, reward_head="mlp"), (2, 1, 12, 12), 1, continuous=True)
    assert model.action_gain == pytest.approx(np.sqrt(model.latent_dim))
    memory = toy_memory(continuous=True)
    memory.reward[:] = -memory.action[:, 0] ** 2
    learner = Learner(model, LearnerConfig(batch_size=32, lr=1e-3, unroll=1, n_step=1, shift=0))
    for _ in range(300):
        learner.update(memory.sample(32, learner.cfg.sequence_length))
    obs = torch.as_tensor(memory.stacks(np.arange(40)))
    action = torch.linspace(-1, 1, 40)[:, None]
    with torch.no_grad():
        predicted = model.reward(model.step(model.encode(obs), action)[1])
    assert torch.corrcoef(torch.stack([predicted, -action[:, 0] ** 2]))[0, 1] > 0.9


def test_continuous_agent_at_depth_0_acts_by_the_policy_prior_s_mean():
    torch.manual_seed(0)
    model = AgentWorldModel(EncoderConfig(size="micro", width=32, depth=1, heads=2, patch=6, tubelet=2),
                            AgentModelConfig(hidden=64), (2, 1, 12, 12), 2, continuous=True)
    torch.nn.init.normal_(model.policy[-1].weight)  # a prior that is not ~0 everywhere
    agent = SearchAgent(model, depth=0, low=np.array([-2.0, 0.0]), high=np.array([2.0, 1.0]))
    obs = np.random.default_rng(0).integers(0, 255, (5, 2, 1, 12, 12), dtype=np.uint8)
    with torch.no_grad():
        mean = model.pi(model.encode(torch.as_tensor(obs)), deterministic=True)[0].numpy()
    assert np.allclose(agent.predict(obs)[0], agent.to_env(mean), atol=1e-6) and np.abs(mean).max() > 0.1


def test_continuous_agent_samples_the_prior_only_when_asked():
    """Learning acts by a sample of the prior (SAC); evaluation by its mean."""
    torch.manual_seed(0)
    model = AgentWorldModel(EncoderConfig(size="micro", width=32, depth=1, heads=2, patch=6, tubelet=2),
                            AgentModelConfig(hidden=64), (2, 1, 12, 12), 2, continuous=True)
    agent = SearchAgent(model, depth=0, low=np.array([-1.0, -1.0]), high=np.array([1.0, 1.0]))
    obs = np.repeat(np.random.default_rng(0).integers(0, 255, (1, 2, 1, 12, 12), dtype=np.uint8), 64, axis=0)
    mean, drawn = agent.act(obs), agent.act(obs, sample=True)
    assert np.allclose(mean, mean[0]) and drawn.std(0).min() > 0.01  # one state: one mean, many samples


@pytest.mark.parametrize("target, rises", [(5.0, True), (-20.0, False)])
def test_learned_entropy_weight_moves_toward_the_target_entropy_and_is_saved(target, rises):
    """SAC's temperature: below the target entropy the weight grows, above it the weight shrinks."""
    def learner() -> Learner:
        torch.manual_seed(0)
        model = AgentWorldModel(EncoderConfig(size="micro", width=32, depth=1, heads=2, patch=6, tubelet=2),
                                AgentModelConfig(hidden=64), (2, 1, 12, 12), 1, continuous=True)
        return Learner(model, LearnerConfig(batch_size=16, lr=1e-3, unroll=1, n_step=1, shift=0, entropy_coef=0.1,
                                            target_entropy=target))
    trained, memory = learner(), toy_memory(continuous=True)
    for _ in range(30):
        info = trained.update(memory.sample(16, trained.cfg.sequence_length))
    assert (info["alpha"] > 0.1) == rises and (info["alpha"] < 0.1) != rises and np.isfinite(info["entropy"])
    loaded = learner()
    loaded.load_state_dict(trained.state_dict())
    assert float(loaded.log_alpha) == float(trained.log_alpha)


def test_a_discrete_run_at_depth_0_is_a_one_line_error(tmp_path):
    result = run_cli("run", "--config", toy_config(tmp_path), "--out", tmp_path / "run", "--no-progress", "--set", "search.depth=0",
                     env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert result.returncode == 2 and "search.depth 0" in result.stderr and "Traceback" not in result.stderr


def test_learner_reduces_its_losses_on_a_fixed_replay():
    memory = toy_memory()
    learner = Learner(tiny_model(), LearnerConfig(batch_size=32, lr=1e-3, unroll=2, n_step=1, shift=0))
    fixed = memory.sample(32, learner.cfg.sequence_length)
    first = learner.update(fixed)
    for _ in range(60):
        last = learner.update(fixed)
    assert last["reward"] < 0.5 * first["reward"] and last["q"] < first["q"] + 1e-3 and last["loss"] < 0.5 * first["loss"]


@pytest.mark.parametrize("model_grad", [True, False])
def test_world_model_losses_reach_the_encoder_only_with_model_grad(model_grad):
    """With Q's weight at 0 only the world model's losses train: they must move the dynamics, and
    the encoder exactly when `model_grad` is on."""
    memory = toy_memory()
    learner = Learner(tiny_model(), LearnerConfig(batch_size=16, lr=1e-3, unroll=2, n_step=1, shift=0, q_weight=0.0,
                                                  model_grad=model_grad))
    encoder = [p.detach().clone() for p in learner.model.encoder.parameters()]
    dynamics = [p.detach().clone() for p in learner.model.dynamics.parameters()]
    learner.update(memory.sample(16, learner.cfg.sequence_length))
    moved = lambda before, module: any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))  # noqa: E731
    assert moved(dynamics, learner.model.dynamics)
    assert moved(encoder, learner.model.encoder) == model_grad


def test_consistency_is_a_cosine_distance_that_fitting_reduces():
    """2 - 2 cos lies in [0, 4] whatever the latents' scale; fitted on one batch it must fall well
    below where it starts (an MSE between the previous design's latents measured ~1e-5 from the start
    and taught the dynamics nothing)."""
    memory = toy_memory()
    learner = Learner(tiny_model(), LearnerConfig(batch_size=32, lr=1e-3, unroll=2, n_step=1, shift=0))
    fixed = memory.sample(32, learner.cfg.sequence_length)
    first = learner.update(fixed)["consistency"]
    for _ in range(60):
        last = learner.update(fixed)["consistency"]
    assert 0.05 < first <= 4.0 and last < 0.5 * first


def test_mse_consistency_pulls_unrolled_latents_onto_the_target_encoder_s():
    """`consistency: mse` compares the standardised latents themselves: fitted on one batch, the
    error of the 2-step unroll against the target encoder's latents must fall well below its start
    (the other losses off, so nothing else moves the encoder under it)."""
    memory = toy_memory()
    learner = Learner(tiny_model(), LearnerConfig(batch_size=32, lr=1e-3, unroll=2, n_step=1, shift=0, consistency="mse",
                                                  q_weight=0.0, reward_weight=0.0, cont_weight=0.0))
    fixed = memory.sample(32, learner.cfg.sequence_length)
    first = learner.update(fixed)["consistency"]
    for _ in range(60):
        last = learner.update(fixed)["consistency"]
    assert first > 0.05 and last < 0.6 * first


def test_latents_are_renormalised_per_sample():
    model = tiny_model()
    obs = torch.as_tensor(toy_memory().sample(16, 1).obs[:, 0])
    with torch.no_grad():
        z = model.encode(obs)
        nxt = model.step(z, torch.zeros(16, dtype=torch.long))[0]
    for x in (z, nxt):
        assert torch.allclose(x.min(-1).values, torch.zeros(16)) and torch.allclose(x.max(-1).values, torch.ones(16))


def test_search_agent_save_load_gives_identical_actions(tmp_path):
    agent = SearchAgent(tiny_model(), depth=2, gamma=0.9)
    obs = np.random.default_rng(0).integers(0, 255, (5, 2, 1, 12, 12), dtype=np.uint8)
    agent.save(tmp_path / "agent.pt")
    loaded = SearchAgent.load(tmp_path / "agent.pt")
    assert (loaded.predict(obs)[0] == agent.predict(obs)[0]).all()
    assert loaded.depth == 2 and loaded.gamma == 0.9


def test_agent_checkpoints_that_do_not_fit_are_one_line_errors(tmp_path):
    from wmrl.errors import UserError

    good = tmp_path / "agent.pt"
    SearchAgent(tiny_model(), depth=2).save(good)
    payload = torch.load(good, weights_only=True)
    payload["model"]["state"].pop("projection.0.weight")  # an agent saved by a different layout of the model
    torch.save(payload, tmp_path / "old.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:1000])
    for name, words in [("old.pt", "not a search-agent checkpoint"), ("cut.pt", "not a search-agent checkpoint"),
                        ("missing.pt", "no agent checkpoint")]:
        with pytest.raises(UserError, match=words):
            SearchAgent.load(tmp_path / name)
    assert SearchAgent.load(good).depth == 2


def test_online_agent_learns_the_toy_task_far_above_random(tmp_path):
    """1,000 learning steps (500 updates): the deterministic agent must read the frame (random: 5/10)."""
    out = tmp_path / "run"
    result = run_cli("run", "--config", toy_config(tmp_path), "--out", out, "--no-progress",
                     env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "run.json").read_text())
    assert record["steps"] == 1200 and record["updates"] == 500
    assert record["eval"]["return_mean"] >= 9.0, record["eval"]
    assert ReplayDataset(out / "data").episode_steps.sum() == 1200


def test_online_agent_learns_a_continuous_toy_task_far_above_random(tmp_path):
    """The continuous agent (Q(z, a), the policy prior, MPPI): random play earns ~3.3 of 10."""
    out = tmp_path / "run"
    result = run_cli("run", "--config", toy_config(tmp_path, card_text=toy_env.REACH_CARD), "--out", out, "--no-progress",
                     env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "run.json").read_text())
    assert record["eval"]["return_mean"] >= 7.0, record["eval"]
    result = run_cli("eval", "--agent", out, "--episodes", "2", env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert result.returncode == 0, result.stderr[-2000:]
    diagnostics = json.loads((out / "eval_agent.json").read_text())
    assert len(diagnostics["action_histogram"]) == 5 and diagnostics["spearman_maxq_return"] == diagnostics["spearman_maxq_return"]
    result = run_cli("plan", "--checkpoint", out, "--depth", "0", "--episodes", "2",
                     env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert result.returncode == 0 and "the policy prior's mean" in result.stdout, result.stderr[-2000:]


def test_memory_stores_latents_of_its_stacks_and_samples_them():
    memory = TransitionMemory(20, (1, 2, 2), frame_stack=2, seed=0)
    frame = lambda v: np.full((1, 2, 2), v, np.uint8)  # noqa: E731
    i = memory.start(frame(0))
    for t in range(1, 8):
        i = memory.add(i, t % 2, float(t), terminal=False, end=(t == 7), frame=frame(t))
    encode = lambda stacks: stacks.reshape(len(stacks), 2, -1)[:, :, 0].astype(np.float32)  # noqa: E731  [N, 2]: the stack's two frames
    with pytest.raises(RuntimeError, match="encode_new"):
        memory.sample(4, 3, latents=True)
    memory.encode_new(encode, chunk=3)
    state = memory.rng.bit_generator.state
    batch = memory.sample(16, 3, latents=True)
    memory.rng.bit_generator.state = state
    stacks = memory.sample(16, 3)
    assert batch.obs is None and batch.latents.shape == (16, 3, 2)
    assert np.array_equal(batch.latents, stacks.obs.reshape(16, 3, 2, -1)[..., 0].astype(np.float32))
    assert np.array_equal(batch.reward, stacks.reward) and np.array_equal(batch.valid, stacks.valid)
    j = memory.start(frame(20))  # a new record waits for its latent
    memory.add(j, 1, 1.0, terminal=True, end=True, frame=frame(21))
    with pytest.raises(RuntimeError, match="encode_new"):
        memory.sample(4, 3, latents=True)
    memory.encode_new(encode)
    assert memory.latents[memory.size - 1].tolist() == [20.0, 21.0]


def test_learner_on_stored_latents_leaves_the_encoder_and_learns_the_heads():
    model = tiny_model()
    learner = Learner(model, LearnerConfig(batch_size=8, unroll=2, n_step=1, shift=0), seed=0)
    memory = TransitionMemory(200, (1, 12, 12), frame_stack=2, seed=0)
    rng = np.random.default_rng(0)
    i = memory.start(rng.integers(0, 255, (1, 12, 12), np.uint8))
    for t in range(100):
        i = memory.add(i, t % 2, float(t % 3 == 0), terminal=False, end=(t % 25 == 24),
                       frame=rng.integers(0, 255, (1, 12, 12), np.uint8))
        if t % 25 == 24:
            i = memory.start(rng.integers(0, 255, (1, 12, 12), np.uint8))
    with torch.no_grad():
        memory.encode_new(lambda stacks: model.encode(torch.as_tensor(stacks)))
    encoder = [p.detach().clone() for p in model.encoder_parameters()]
    heads = [p.detach().clone() for p in model.q_heads.parameters()]
    for _ in range(3):
        losses = learner.update(memory.sample(8, 3, latents=True))
    assert all(np.isfinite(v) for v in losses.values())
    assert all(torch.equal(a, b) for a, b in zip(encoder, model.encoder_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(heads, model.q_heads.parameters()))


def test_online_run_freezes_the_encoder_and_learns_from_stored_latents(tmp_path):
    """The continuous toy with the encoder frozen after 100 updates (at step 400), then 1 update per
    env step on stored latents: the updates follow both ratios and the agent still learns the task."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    result = run_cli("run", "--config", toy_config(tmp_path, card_text=toy_env.REACH_CARD), "--out", out, "--no-progress",
                     "--set", "learner.freeze_encoder_after=100", "learner.frozen_batch_size=64",
                     "run.frozen_replay_ratio=1.0", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "run.json").read_text())
    assert record["updates"] == 100 + (1200 - 400)
    assert record["eval"]["return_mean"] >= 7.0, record["eval"]


def test_online_run_resumes_after_sigkill_with_the_same_steps_and_updates(tmp_path):
    out = tmp_path / "run"
    config = toy_config(tmp_path, budget=1000, stage1=5, eval_episodes=0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen([sys.executable, "-m", "wmrl", "run", "--config", str(config), "--out", str(out), "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "learner.pt").is_file():
        time.sleep(0.05)
    assert (out / "learner.pt").is_file(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(out / "learner.pt")
    assert saved["steps"] < 1000 and saved["progress"]
    # The kill may fall between the checkpoint's write and run.json's: make it so, the resume must not care.
    stale = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**stale, "steps": 0, "updates": 0, "progress": []}))
    result = run_cli("run", "--resume", "--out", out, "--no-progress", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "run.json").read_text())
    data = ReplayDataset(out / "data")
    # What an uninterrupted run ends with: the budget of stored steps, 0.5 updates per step past the 200 seed steps.
    assert record["steps"] == data.episode_steps.sum() == 1000
    assert record["updates"] == 400
    assert (out / "encoder" / "checkpoint.pt").is_file()
    # the clock goes on from the killed run's last checkpoint: its seconds count in the total
    before = saved["progress"][-1]["seconds"]
    resumed = [row["seconds"] for row in record["progress"][len(saved["progress"]):]]
    assert resumed and min(resumed) >= before


def test_resume_without_checkpoint_or_dataset_starts_over_cleanly(tmp_path):
    """A run folder that kept only run.json and metrics.jsonl (a fresh clone of committed results):
    the resumed run learns again from step 0, with neither the old seconds nor the old rows."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    assert run_cli("run", "--config", toy_config(tmp_path, budget=400, eval_episodes=0), "--out", out, "--no-progress",
                   env=env).returncode == 0
    old = json.loads((out / "run.json").read_text())
    assert old["progress"]
    old["progress"] = [{**row, "seconds": row["seconds"] + 1e6} for row in old["progress"]]  # marks the old rows
    (out / "run.json").write_text(json.dumps(old))
    shutil.rmtree(out / "data")
    (out / "learner.pt").unlink(), (out / "agent.pt").unlink()
    result = run_cli("run", "--resume", "--out", out, "--no-progress", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "run.json").read_text())
    assert record["steps"] == ReplayDataset(out / "data").episode_steps.sum() == 400 and record["updates"] == old["updates"]
    assert len(record["progress"]) == len(old["progress"]) and max(row["seconds"] for row in record["progress"]) < 1e5
    steps = [row["step"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "step" in row]
    assert steps == sorted(steps) and steps[-1] <= 400


def test_returns_to_life_end_cut_at_lost_lives_and_clip_rewards():
    from wmrl.eval.agent import returns_to_life_end

    reward = np.array([0.0, 4.0, 0.0, 1.0])
    lives = np.array([5, 5, 4, 4, 4])  # step 1 loses a life
    g = returns_to_life_end(reward, lives, gamma=0.5, clip=1.0)
    assert g.tolist() == [0.5, 1.0, 0.5, 1.0]


def test_eval_agent_diagnoses_a_run(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    assert run_cli("run", "--config", toy_config(tmp_path, budget=400, eval_episodes=0), "--out", out, "--no-progress",
                   "--set", "search.eval_depth=2", env=env).returncode == 0
    assert SearchAgent.load(out / "agent.pt").depth == 2  # learned greedily (the toy's depth 1), acts by the search
    result = run_cli("eval", "--agent", out, "--episodes", "2", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    diag = json.loads((out / "eval_agent.json").read_text())
    assert diag["episodes"] == 2 and diag["steps"] == 20 and len(diag["action_histogram"]) == 2
    # The toy's best action is read from the frame: Q varies over states and prefers each action somewhere.
    assert diag["replay_q"]["maxq_std_over_states"] > 0.01 and min(diag["replay_q"]["argmax_share"]) > 0.2
    assert -1 <= diag["spearman_maxq_return"] <= 1 and diag["model_error_l1"] >= 0
    (out / "agent.pt").unlink()  # a run still going (or killed) has only its learner checkpoint
    assert run_cli("eval", "--agent", out, "--episodes", "2", env=env).returncode == 0
    assert json.loads((out / "eval_agent.json").read_text()) == diag  # the same agent, rebuilt from learner.pt
    assert run_cli("eval", "--agent", tmp_path / "nothing").returncode == 2


def test_conv_stem_tokens_and_jepa_pretraining_shapes():
    from wmrl.models.config import JEPAConfig, MaskConfig, PredictorConfig
    from wmrl.models.jepa import JEPA
    from wmrl.models.masks import sample_masks
    from wmrl.models.vit import VisionTransformer

    enc = EncoderConfig(size="micro", width=32, depth=1, heads=2, stem="conv", tubelet=4, patch=12)
    vit = VisionTransformer(enc, 4, 1, (84, 84))
    obs = torch.randint(0, 255, (3, 4, 1, 84, 84), dtype=torch.uint8)
    assert vit.grid == (1, 7, 7) and vit(obs).shape == (3, 49, 32)
    # One lit pixel in a black frame changes the tokens whose receptive field (36 px) covers it, no others.
    black = torch.zeros(1, 4, 1, 84, 84, dtype=torch.uint8)
    lit = black.clone()
    lit[0, :, 0, 42, 42] = 80
    change = (vit.tokens(lit) - vit.tokens(black)).abs().sum(-1)[0].view(7, 7)
    assert change[3, 3] > 0 and change[0, 0] == change[6, 6] == change[0, 6] == change[6, 0] == 0
    with pytest.raises(ValueError, match="tubelet"):
        VisionTransformer(EncoderConfig(stem="conv", tubelet=2), 4, 1, (84, 84))
    jepa = JEPA(JEPAConfig(encoder=enc, predictor=PredictorConfig(width=32, depth=1, heads=2)), (4, 1, 84, 84))
    masks = sample_masks(MaskConfig(), jepa.grid, 3, np.random.default_rng(0))
    assert torch.isfinite(jepa.loss(obs, masks))
    model = AgentWorldModel(enc, AgentModelConfig(hidden=64), (4, 1, 84, 84), 4)
    assert model.encode(obs).shape == (3, 49 * 16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_learner_update_and_search_on_cuda_match_the_cpu():
    """The same seeded update (random shifts included) on CUDA and on the CPU: equal losses and
    parameters up to float tolerance; the search agent acts on CUDA latents as on CPU ones."""
    memory = toy_memory()
    batch = memory.sample(16, LearnerConfig(unroll=2, n_step=1).sequence_length)
    cfg = LearnerConfig(batch_size=16, lr=1e-3, unroll=2, n_step=1, shift=2)
    cpu, gpu = Learner(tiny_model(), cfg, "cpu"), Learner(tiny_model(), cfg, "cuda")
    a, b = cpu.update(batch), gpu.update(batch)
    assert all(abs(a[k] - b[k]) < 1e-3 * (1 + abs(a[k])) for k in ("consistency", "reward", "cont", "q"))
    for p, q in zip(cpu.model.parameters(), gpu.model.parameters()):
        torch.testing.assert_close(p, q.cpu(), rtol=1e-3, atol=1e-4)
    obs = batch.obs[:, 0]
    with torch.no_grad():
        q_cpu = cpu.model.eval().q(cpu.model.encode(torch.as_tensor(obs)))
        q_gpu = gpu.model.eval().q(gpu.model.encode(torch.as_tensor(obs, device="cuda")))
    torch.testing.assert_close(q_cpu, q_gpu.cpu(), rtol=1e-3, atol=1e-4)
    assert SearchAgent(gpu.model, 2, 0.99).act(obs).shape == (16,)


def test_replay_probes_read_a_field_the_frames_show_and_not_noise():
    from wmrl.data.replay import ReplayDataset
    from wmrl.eval.agent import replay_probes
    from wmrl.types import Episode

    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(8):  # a bright 3x3 square at a random column; "pos_x" is that column, "noise" is not in the frames
        cols = rng.integers(0, 10, 41)
        frames = np.zeros((41, 1, 12, 12), np.uint8)
        for t, c in enumerate(cols):
            frames[t, 0, 4:7, c:c + 3] = 200
        states = np.stack([cols, rng.normal(size=41)], 1).astype(np.float32)
        episodes.append(Episode(frames, rng.integers(0, 2, 40), np.zeros(40), np.zeros(40, bool), np.zeros(40, bool), states))
    meta = {"action_space": None, "wmrl": {"frame_shape": [1, 12, 12], "frame_stack": 2,
                                           "state_layout": [["pos_x", 1], ["noise", 1]]}}
    replay = ReplayDataset.from_episodes("mem", meta, episodes)
    r2 = replay_probes(tiny_model(), replay, episodes=8)  # an untrained encoder still keeps where things are
    assert set(r2) == {"pos_x", "noise"}
    assert r2["pos_x"] > 0.5 and r2["noise"] < 0.1


def test_conv_stem_alone_is_an_encoder_of_depth_zero():
    from wmrl.models.config import JEPAConfig, MaskConfig, PredictorConfig
    from wmrl.models.jepa import JEPA
    from wmrl.models.masks import sample_masks
    from wmrl.models.vit import VisionTransformer

    enc = EncoderConfig(size="micro", width=32, depth=0, stem="conv", tubelet=4, patch=12)
    assert enc.dims() == (32, 0, 4)
    vit = VisionTransformer(enc, 4, 1, (84, 84))
    obs = torch.randint(0, 255, (3, 4, 1, 84, 84), dtype=torch.uint8)
    assert len(vit.blocks) == 0 and vit(obs).shape == (3, 49, 32)
    jepa = JEPA(JEPAConfig(encoder=enc, predictor=PredictorConfig(width=32, depth=1, heads=2)), (4, 1, 84, 84))
    assert torch.isfinite(jepa.loss(obs, sample_masks(MaskConfig(), jepa.grid, 3, np.random.default_rng(0))))
    with pytest.raises(ValueError, match="depth"):
        EncoderConfig(depth=0)  # a patch embedding alone sees each patch by itself: not an encoder


def test_standardiser_statistics_come_from_unshifted_real_latents_and_reach_the_target():
    memory = toy_memory()
    learner = Learner(tiny_model(), LearnerConfig(batch_size=32, lr=1e-3, unroll=2, n_step=1, shift=2))
    batch = memory.sample(32, learner.cfg.sequence_length)
    model = learner.model
    with torch.no_grad():
        clean = model.encode(torch.as_tensor(batch.obs[:, 0]))  # before the update changes the encoder
    learner.update(batch)
    std = model.standardise
    assert int(std.count) == 1  # the first batch sets the statistics outright
    assert torch.allclose(std.mean, clean.mean(0), atol=1e-6) and torch.allclose(std.var, clean.var(0, unbiased=False), atol=1e-6)
    assert torch.equal(learner.target.standardise.mean, std.mean)  # one standardisation for online and target
    learner.update(batch)
    assert int(std.count) == 2 and int(learner.target.standardise.count) == 2


def test_conv_latent_is_the_stem_feature_map():
    enc = EncoderConfig(size="micro", width=32, depth=0, stem="conv", tubelet=4, patch=12)
    model = AgentWorldModel(enc, AgentModelConfig(latent="conv", hidden=64), (4, 1, 84, 84), 4)
    obs = torch.randint(0, 255, (5, 4, 1, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        z = model.encode(obs)
        features = model.encoder.patch_embed.convs(obs.float().div(255).flatten(1, 2))
    assert model.latent_dim == 64 * 49 and torch.allclose(z, features.flatten(1), atol=1e-5) and (z >= 0).all()
    assert model.step(z, torch.zeros(5, dtype=torch.long))[0].shape == (5, 64 * 49) and model.q(z).shape == (2, 5, 4)
    with pytest.raises(ValueError, match="conv stem"):
        AgentWorldModel(EncoderConfig(size="micro", width=32, depth=1, patch=12), AgentModelConfig(latent="conv"), (4, 1, 84, 84), 4)


def test_spatial_soft_argmax_finds_where_each_channel_fires():
    from wmrl.models.agent_model import SpatialSoftArgmax

    layer = SpatialSoftArgmax(2)
    with torch.no_grad():
        layer.log_temperature.fill_(-4.0)  # sharp: the soft-argmax is the argmax
    x = torch.zeros(1, 2, 11, 11)
    x[0, 0, 3, 5] = x[0, 1, 10, 0] = 1.0  # channel 0 fires at row 3, column 5; channel 1 at the bottom-left corner
    assert torch.allclose(layer(x), torch.tensor([[0.0, -1.0, -0.4, 1.0]]), atol=1e-3)  # x0, x1, y0, y1


def test_keypoint_latent_is_coordinates_from_its_own_tower_and_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    enc = EncoderConfig(size="micro", width=32, depth=1, heads=2, patch=8, tubelet=2)
    model = AgentWorldModel(enc, AgentModelConfig(latent="keypoints", keypoints=8, hidden=64, reward_head="mlp"), (2, 3, 64, 64), 2,
                            continuous=True)
    obs = torch.randint(0, 255, (5, 2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        z = model.encode(obs)
    assert model.latent_dim == 16 and z.shape == (5, 16) and z.abs().max() <= 1.0
    tower = {id(p) for p in model.keypoints.parameters()}
    assert {id(p) for p in model.encoder_parameters()} == tower
    learner = Learner(model, LearnerConfig(batch_size=4, unroll=1, n_step=1, encoder_lr_scale=0.0))
    assert not any(p.requires_grad for p in model.keypoints.parameters())  # frozen means the tower
    agent = SearchAgent(learner.model, depth=1, low=np.array([-1.0, -1.0]), high=np.array([1.0, 1.0]),
                        mppi=MPPISettings(population=8, policy_samples=2, elites=2, iterations=1))
    agent.save(tmp_path / "agent.pt")
    loaded = SearchAgent.load(tmp_path / "agent.pt")
    with torch.no_grad():
        assert torch.equal(loaded.model.encode(obs), z)


def test_per_frame_keypoints_read_each_frame_alone_and_save_and_load(tmp_path):
    torch.manual_seed(0)
    enc = EncoderConfig(size="micro", width=32, depth=1, heads=2, patch=8, tubelet=2)
    cfg = AgentModelConfig(latent="keypoints", keypoints=4, keypoint_frames="each", hidden=64, reward_head="mlp")
    model = AgentWorldModel(enc, cfg, (4, 3, 64, 64), 2, continuous=True).eval()
    obs = torch.randint(0, 255, (5, 4, 3, 64, 64), dtype=torch.uint8)
    changed = obs.clone()
    changed[:, 1] = torch.randint(0, 255, (5, 3, 64, 64), dtype=torch.uint8)  # the middle frame only
    with torch.no_grad():
        z, z_changed = model.encode(obs), model.encode(changed)
    assert model.latent_dim == 32 and z.shape == (5, 32)  # 4 frames x 4 keypoints x (x, y)
    moved = (z - z_changed).abs().view(5, 4, 8).amax((0, 2))
    assert moved[1] > 0 and moved[[0, 2, 3]].eq(0).all()  # a frame's keypoints come from that frame alone
    agent = SearchAgent(model, depth=1, low=np.array([-1.0, -1.0]), high=np.array([1.0, 1.0]),
                        mppi=MPPISettings(population=8, policy_samples=2, elites=2, iterations=1))
    agent.save(tmp_path / "agent.pt")
    with torch.no_grad():
        assert torch.equal(SearchAgent.load(tmp_path / "agent.pt").model.encode(obs), z)
