"""Control: optimizers on toy problems, objectives, the MPC agent (warm start, save/load), planning."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from wmrl.control.agent import MPCAgent
from wmrl.control.config import PlannerConfig
from wmrl.control.objectives import goal_energy, imagined_return
from wmrl.control.optimizers import CEM, MPPI, Categorical, Gaussian
from test_stage2 import encoder_run  # noqa: F401  (a fixture: the tiny Breakout dataset and encoder)


@pytest.mark.parametrize("optimizer", [CEM(256, 32, 6, generator=torch.Generator().manual_seed(0)),
                                       MPPI(256, 64, 6, temperature=0.5, generator=torch.Generator().manual_seed(0))])
def test_gaussian_optimizers_solve_a_quadratic(optimizer):
    target = torch.tensor([[0.5, -0.3], [0.1, 0.9], [-0.7, 0.2], [0.0, 0.0], [0.8, -0.8]])  # [H=5, A=2]

    def objective(actions):  # [S, H, A] -> [S]
        return -((actions - target) ** 2).sum((1, 2))

    init = Gaussian.initial(5, -torch.ones(2), torch.ones(2), init_std=0.5)
    best, dist = optimizer.optimize(objective, init)
    assert best.shape == (5, 2)
    assert (best - target).abs().max() < 0.15 and (dist.mean - target).abs().max() < 0.15
    random_best = objective(init.sample(256, torch.Generator().manual_seed(1))).max()
    assert objective(best[None])[0] > random_best  # far better than the best of one random population


def test_gaussian_samples_respect_bounds():
    dist = Gaussian.initial(4, torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0]), init_std=3.0)
    samples = dist.sample(1000, torch.Generator().manual_seed(0))
    assert samples[..., 0].abs().max() <= 2.0 and samples[..., 1].min() >= 0 and samples[..., 1].max() <= 1


def test_categorical_cem_solves_a_combination_lock():
    code = torch.tensor([3, 1, 4, 1, 5, 0, 2, 5])  # 6 actions, horizon 8: 6^8 = 1.7M sequences

    def objective(actions):  # [S, H] long -> [S]: digits right, the first ones count most
        return ((actions == code) * torch.linspace(2, 1, 8)).sum(1)

    best, dist = CEM(256, 32, 8, generator=torch.Generator().manual_seed(0)).optimize(objective, Categorical.initial(8, 6))
    assert best.dtype == torch.long and best.tolist() == code.tolist()
    assert dist.mode().tolist() == code.tolist()


def test_batched_optimization_solves_each_problem_with_one_call_per_iteration():
    codes = torch.tensor([[3, 1, 4, 1, 5, 0], [2, 5, 1, 0, 2, 4]])  # two locks, 6 actions, horizon 6
    calls = []

    def objective(actions):  # [N, S, H] -> [N, S]: digits right, the first ones count most
        calls.append(actions.shape)
        return ((actions == codes[:, None]) * torch.linspace(2, 1, 6)).sum(2)

    cem = CEM(256, 32, 8, generator=torch.Generator().manual_seed(0))
    results = cem.optimize_batch(objective, [Categorical.initial(6, 6), Categorical.initial(6, 6)])
    assert [best.tolist() for best, _ in results] == codes.tolist()
    assert calls == [(2, 256, 6)] * 8


def test_categorical_first_action_is_stratified():
    dist = Categorical(torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3), smoothing=0.0)
    samples = dist.sample(8, torch.Generator().manual_seed(0))
    assert sorted(samples[1:, 0].tolist()) == [0, 1, 1, 2, 2, 3, 3] and (samples[:, 1:] == 0).all()


def test_warm_start_shifts_the_plan():
    g = Gaussian(torch.arange(8.0).view(4, 2), torch.ones(4, 2), -10 * torch.ones(2), 10 * torch.ones(2), init_std=0.5)
    shifted = g.shift()
    assert shifted.mean[:3].tolist() == g.mean[1:].tolist() and shifted.mean[3].tolist() == [0.0, 0.0]
    assert shifted.std[3].tolist() == [10.0, 10.0]  # the new step starts from the prior
    c = Categorical(torch.eye(3)).shift()
    assert c.probs[:2].tolist() == torch.eye(3)[1:].tolist() and torch.allclose(c.probs[2], torch.full((3,), 1 / 3))


def test_imagined_return_stops_at_termination():
    reward = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    cont = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])  # the second ends after step 2
    value = torch.tensor([10.0, 10.0])
    ret = imagined_return(reward, cont, 0.5, value)
    assert ret.tolist() == [1 + 0.5 + 0.25 + 0.125 * 10, 1 + 0.5]
    z = torch.zeros(2, 4, 8)  # the last imagined latents
    z[1] = 1.0
    assert goal_energy(z, torch.ones(4, 8)).tolist() == [-1.0, 0.0]


class LineWorld(torch.nn.Module):
    """A hand-built world model: the latent is a position x on a line ([1 token, 1 dim]); actions
    move it by 0.1 (discrete: left / stay / right; continuous: 0.1 * a); the reward is -|x'|."""

    num_latents, latent_dim, proprio_dim, has_value = 1, 1, 0, False

    def __init__(self, discrete: bool = True):
        super().__init__()
        self.discrete, self.action_dim = discrete, 3 if discrete else 1

    def encode(self, obs: torch.Tensor) -> torch.Tensor:  # [N, K, C, H, W] uint8 -> x = brightness in [-1, 1]
        return (obs.float().mean((1, 2, 3, 4)) / 127.5 - 1).view(-1, 1, 1)

    def rollout(self, z: torch.Tensor, actions: torch.Tensor):
        x = z.reshape(len(z), -1)[:, -1]  # [S]
        move = actions.float() - 1 if self.discrete else actions[..., 0].clamp(-1, 1)
        xs = x[:, None] + 0.1 * move.cumsum(1)  # [S, H]
        return xs[..., None, None], -xs.abs(), torch.ones_like(xs)

    def rollout_shared(self, z: torch.Tensor, actions: torch.Tensor, start: torch.Tensor):
        zs, reward, cont = self.rollout(z[start], actions)
        return zs[:, -1], reward, cont


def frame_of(x: float) -> np.ndarray:  # the observation LineWorld encodes as position x
    return np.full((4, 1, 8, 8), round((x + 1) * 127.5), np.uint8)


@pytest.mark.parametrize("discrete", [True, False])
def test_mpc_agent_drives_a_hand_built_model_to_its_goal(discrete):
    space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (1,), np.float32)
    agent = MPCAgent(LineWorld(discrete), PlannerConfig(horizon=6, population=64, elites=8, iterations=3), space)
    x = 0.6
    for _ in range(10):  # 6 steps of 0.1 reach 0; then it should stay near 0
        action, _ = agent.predict(frame_of(x))
        assert space.contains(action)
        x += 0.1 * (action - 1 if discrete else float(np.clip(action[0], -1, 1)))
    assert abs(x) < 0.05
    batch, _ = agent.predict(np.stack([frame_of(0.5), frame_of(-0.5)]))  # one warm start per env
    assert batch.shape[0] == 2 and len(agent.plans) == 2
    direction = batch - 1 if discrete else batch[:, 0]
    assert direction[0] < 0 < direction[1]


def test_exploration_only_when_not_deterministic():
    cfg = PlannerConfig(horizon=3, population=16, elites=4, iterations=1, explore=1.0)
    agent = MPCAgent(LineWorld(True), cfg, gym.spaces.Discrete(3))
    greedy = {int(agent.predict(frame_of(0.8))[0]) for _ in range(8)}
    explored = {int(agent(frame_of(0.8)[None])[0]) for _ in range(30)}
    assert greedy == {0} and explored == {0, 1, 2}


def test_imagination_env_passes_check_env_with_hand_built_and_real_models():
    from gymnasium.utils.env_checker import check_env
    from test_stage2 import tiny_world_model

    from wmrl.control.imagination import ImaginationEnv

    starts = torch.linspace(-1, 1, 9).view(9, 1, 1)
    check_env(ImaginationEnv(LineWorld(True), starts, horizon=5, action_space=gym.spaces.Discrete(3)), skip_render_check=True)
    wm = tiny_world_model()
    starts = torch.randn(6, wm.num_latents, wm.latent_dim)
    env = ImaginationEnv(wm, starts, horizon=4, action_space=gym.spaces.Discrete(4))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (wm.num_latents * wm.latent_dim,) and obs.dtype == np.float32
    lengths = []
    for _ in range(3):
        env.reset()
        steps, done = 0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            steps, done = steps + 1, terminated or truncated
        lengths.append(steps)
    assert max(lengths) <= 4


def test_imagination_vec_env_batches_and_resets_like_sb3_expects():
    from wmrl.control.imagination import ImaginationVecEnv

    starts = torch.linspace(-1, 1, 21).view(21, 1, 1)
    venv = ImaginationVecEnv(LineWorld(True), starts, num_envs=4, horizon=3, action_space=gym.spaces.Discrete(3))
    venv.seed(7)
    first = venv.reset()
    venv.seed(7)
    assert np.array_equal(venv.reset(), first)  # seeded resets repeat
    obs, reward, done, infos = venv.step(np.array([2, 2, 0, 1]))
    np.testing.assert_allclose(obs[:, 0], first[:, 0] + 0.1 * np.array([1, 1, -1, 0]), atol=1e-6)
    np.testing.assert_allclose(reward, -np.abs(obs[:, 0]), atol=1e-6)
    venv.step(np.ones(4, np.int64))
    obs, _, done, infos = venv.step(np.ones(4, np.int64))
    assert done.all() and all(i["TimeLimit.truncated"] for i in infos)  # horizon 3
    assert all("terminal_observation" in i for i in infos)


def test_sb3_ppo_learns_inside_the_imagination_env():
    from stable_baselines3 import PPO

    from wmrl.control.imagination import ImaginationVecEnv

    starts = torch.linspace(-1, 1, 41).view(41, 1, 1)
    venv = ImaginationVecEnv(LineWorld(True), starts, num_envs=16, horizon=10, action_space=gym.spaces.Discrete(3))

    def mean_reward(policy) -> float:
        venv.seed(1)
        obs, total = venv.reset(), 0.0
        for _ in range(10):
            obs, reward, _, _ = venv.step(policy(obs))
            total += reward.mean()
        return total / 10

    rng = np.random.default_rng(0)
    random_reward = mean_reward(lambda obs: rng.integers(3, size=len(obs)))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=256, learning_rate=3e-3, seed=0, device="cpu").learn(12_000)
    trained_reward = mean_reward(lambda obs: model.predict(obs, deterministic=True)[0])
    # Random: x wanders, mean |x| ~ 0.5; moving toward 0 halves it within 10 steps.
    assert trained_reward > random_reward + 0.15, (trained_reward, random_reward)


@pytest.fixture(scope="module")
def world_model_run(encoder_run, tmp_path_factory):
    """A tiny Breakout world model (stage 2, a few steps) over the tiny encoder of test_stage2."""
    from test_stage2 import tiny_stage2

    from wmrl.data.replay import ReplayDataset
    from wmrl.train.checkpoint import load_checkpoint
    from wmrl.train.stage2 import Stage2Trainer

    data_root, enc = encoder_run
    out = tmp_path_factory.mktemp("wm") / "wm"
    Stage2Trainer(tiny_stage2(4), load_checkpoint(enc), ReplayDataset(data_root), out, clip_len=6, val_fraction=0.5,
                  progress=False).train()
    return data_root, out


def test_mpc_agent_save_load_gives_identical_actions(world_model_run, tmp_path):
    from wmrl.data.replay import ReplayDataset
    from wmrl.train.checkpoint import load_checkpoint

    data_root, run = world_model_run
    cfg = PlannerConfig(horizon=4, population=32, elites=4, iterations=2, seed=3)
    agent = MPCAgent.from_checkpoint(load_checkpoint(run), cfg, gym.spaces.Discrete(4))
    agent.save(tmp_path / "agent.pt")
    loaded = MPCAgent.load(tmp_path / "agent.pt")
    assert loaded.cfg == cfg
    obs = ReplayDataset(data_root).stacks(np.arange(6))
    for o in obs:  # the same seeded sampling and warm starts, step after step
        assert agent.predict(o)[0] == loaded.predict(o)[0]
    with pytest.raises(ValueError, match="action space"):
        MPCAgent.from_checkpoint(load_checkpoint(run), cfg, gym.spaces.Discrete(6))


def test_plan_cli_smoke_and_errors(world_model_run, tmp_path):
    import json

    from conftest import run_cli

    _, run = world_model_run
    r = run_cli("plan", "--env", "breakout", "--checkpoint", run, "--episodes", 2, "--max-steps", 5, "--population", 16,
                "--horizon", 3, "--iterations", 1, "--video", tmp_path / "plan.mp4", "--save-agent", tmp_path / "agent.pt")
    assert r.returncode == 0, r.stderr
    assert "return" in r.stdout and "ms per action" in r.stdout
    result = json.loads((run / "plan.json").read_text())
    assert result["episodes"] == 2 and result["lengths"] == [5, 5] and result["capped"] == 2
    assert (tmp_path / "plan.mp4").stat().st_size > 0 and (tmp_path / "agent.pt").is_file()
    # The saved agent collects data like any policy (exploring).
    r = run_cli("collect", "--env", "breakout", "--policy", tmp_path / "agent.pt", "--steps", 12, "--out", tmp_path / "mpc-data",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "collected 12 steps" in r.stdout
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    r = run_cli("collect", "--env", "breakout", "--policy", tmp_path / "bad.pt", "--steps", 12, "--out", tmp_path / "x")
    assert r.returncode == 2 and "not a saved wmrl agent" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("plan", "--env", "reacher", "--checkpoint", run, "--episodes", 1)
    assert r.returncode == 2 and "stacks" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("plan", "--env", "breakout", "--checkpoint", tmp_path / "missing", "--episodes", 1)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_imagine_cli_trains_in_the_model_and_evaluates_in_the_real_env(world_model_run, tmp_path):
    import json

    from conftest import run_cli

    data_root, run = world_model_run
    # PPO collects whole rollouts: 2048 // 8 steps in each of 8 envs, however few --steps ask for.
    r = run_cli("imagine", "--checkpoint", run, "--data", data_root, "--algo", "ppo", "--steps", 64, "--num-envs", 8,
                "--horizon", 5, "--episodes", 1, "--max-steps", 10, "--out", tmp_path / "ppo", "--no-progress")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "ppo" / "imagine.json").read_text())
    assert result["imagined_steps"] == 2048 and result["episodes"] == 1 and result["lengths"] == [10]
    assert (tmp_path / "ppo" / "model.zip").is_file() and "real breakout: return" in r.stdout
    r = run_cli("imagine", "--checkpoint", run, "--data", data_root, "--algo", "sac", "--out", tmp_path / "sac")
    assert r.returncode == 2 and "discrete" in r.stderr and r.stderr.count("\n") == 1


def test_dataset_goals_choose_the_stack_that_shows_the_target_reached():
    from types import SimpleNamespace

    from wmrl.control.goals import DatasetGoals, goal_distance
    from wmrl.envs.card import GoalSpec

    # Rows: (fingertip x, y, target x, y). Row 2 has the fingertip on a far target; row 1 has it
    # near target (0.1, 0.1) with that target drawn nearby; row 0 is far from both.
    states = np.array([[0.0, 0.0, 0.1, 0.1], [0.09, 0.1, 0.11, 0.1], [0.1, 0.1, -0.2, 0.0]], np.float32)
    data = SimpleNamespace(root="fake", states=states, state_layout=[("fingertip", 2), ("target", 2)],
                           stacks=lambda rows: rows[:, None] * np.ones((1, 4), np.uint8))
    goal = GoalSpec(achieved="fingertip", desired="target", threshold=0.05)
    stack = DatasetGoals(data, goal).goal_stack(np.array([0.1, 0.1]))
    assert stack.tolist() == [1, 1, 1, 1]  # the stack of row 1
    assert goal_distance(states[1], data.state_layout, goal) == pytest.approx(0.02)


def test_plan_with_goal_images_on_reacher(world_model_run, tmp_path):
    import json

    from conftest import collect_random, run_cli
    from test_stage1 import tiny_config
    from test_stage2 import tiny_stage2

    from wmrl.data.replay import ReplayDataset
    from wmrl.train.checkpoint import load_checkpoint
    from wmrl.train.stage1 import Stage1Trainer
    from wmrl.train.stage2 import Stage2Trainer

    data = ReplayDataset(collect_random("reacher", tmp_path / "re", 150))
    Stage1Trainer(tiny_config(steps=2, patch=8), data, tmp_path / "enc", progress=False).train()
    Stage2Trainer(tiny_stage2(2), load_checkpoint(tmp_path / "enc"), data, tmp_path / "wm", clip_len=6,
                  val_fraction=0.5, progress=False).train()
    r = run_cli("plan", "--config", "reacher", "--checkpoint", tmp_path / "wm", "--goal", "from-dataset", "--episodes", 2,
                "--max-steps", 4, "--population", 16, "--horizon", 3, "--iterations", 1, "--compare-random")
    assert r.returncode == 0, r.stderr
    assert "planner: success" in r.stdout and "random policy: success" in r.stdout
    result = json.loads((tmp_path / "wm" / "plan.json").read_text())
    assert len(result["final_distance"]) == 2 and 0 <= result["success_rate"] <= 1
    assert len(result["random_policy"]["final_distance"]) == 2
    _, breakout_model = world_model_run
    r = run_cli("plan", "--env", "breakout", "--checkpoint", breakout_model, "--goal", "from-dataset", "--episodes", 1)
    assert r.returncode == 2 and "names no goal state fields" in r.stderr and r.stderr.count("\n") == 1
