"""`wmrl bench`: the quick suite end to end on an even smaller budget, resumption, reports, errors."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv

from wmrl.bench import runner
from wmrl.bench.agents import SB3_SETTINGS, train_sb3
from wmrl.bench.report import HEADLINE_BEGIN, HEADLINE_END, headline, interval_estimates, write_report
from wmrl.cli import main
from wmrl.envs import load_card, make_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_quick(monkeypatch):
    """The quick suite's cells, every agent kind, at budgets of a few hundred steps."""
    cells = [dataclasses.replace(c, budget=600 if c.env == "breakout" else 200, eval_episodes=2,
                                 eval_max_steps=60, imagine_steps=256) for c in runner.SUITES["quick"]]
    monkeypatch.setitem(runner.SUITES, "quick", cells)
    return cells


def test_quick_suite_runs_every_agent_resumes_and_reports(tiny_quick, tmp_path, capsys, monkeypatch):
    from wmrl.config import load_experiment

    tiny = load_experiment("quick-breakout")  # 400 random steps, then rounds of 100 with the planner
    tiny.run.seed_steps, tiny.run.round_steps = 400, 100
    def tiny_with(name, overrides=()):  # the bench sets the loop by override
        loop = dict(item.split("=", 1) for item in overrides).get("run.loop", tiny.run.loop)
        return dataclasses.replace(tiny, run=dataclasses.replace(tiny.run, loop=loop))

    monkeypatch.setattr("wmrl.config.load_experiment", tiny_with)
    out = tmp_path / "quick"
    assert main(["bench", "--suite", "quick", "--out", str(out), "--no-progress"]) == 0
    results = {(c.env, c.agent): json.loads((runner.cell_dir(out, c, 0) / "result.json").read_text()) for c in tiny_quick}
    assert set(a for _, a in results) == {"random", "ppo", "dqn", "a2c", "ppo-zoo", "dqn-zoo", "a2c-zoo", "sac", "wmrl",
                                          "wmrl-mpc", "wmrl-imagine"}
    for (env, agent), r in results.items():
        assert r["episodes"] == 2 and np.isfinite(r["return_mean"]) and max(r["lengths"]) <= 60
        assert ("success_rate" in r) == (env == "reacher")
        assert r["train_resumed"] is False
    # Every agent meets the same seeded evaluation episodes; the model-based ones used the budget's real steps.
    mbrl = json.loads((out / "breakout/wmrl-mpc/seed-0/run.json").read_text())
    assert mbrl["rounds"][-1]["steps"] == 600
    online = json.loads((out / "breakout/wmrl/seed-0/run.json").read_text())
    assert online["loop"] == "online" and online["steps"] == 600 and online["updates"] == 50
    assert (out / "breakout/ppo/seed-0/model.zip").is_file() and (out / "breakout/wmrl-imagine/seed-0/model.zip").is_file()
    # A cell records its SB3 settings (the replay buffer capped at the budget) and the machine.
    cell = json.loads((out / "breakout/dqn/seed-0/cell.json").read_text())
    assert cell["sb3_settings"]["buffer_size"] == 600 and cell["machine"]["cpus"] >= 1 and cell["device"] == "cpu"
    assert json.loads((out / "breakout/random/seed-0/cell.json").read_text())["sb3_settings"] is None
    # The zoo variants: the same algorithm's settings, a learning curve in agent steps (monitors count frames).
    zoo = json.loads((out / "breakout/dqn-zoo/seed-0/cell.json").read_text())["sb3_settings"]
    assert zoo == cell["sb3_settings"]
    curve = np.loadtxt(out / "breakout/dqn-zoo/seed-0/curve.csv", delimiter=",", skiprows=1, ndmin=2)
    assert len(curve) >= 1 and curve[:, 0].max() <= 600

    report = (out / "report.md").read_text()
    for agent in ("random", "ppo", "dqn", "a2c", "wmrl", "wmrl-mpc", "wmrl-imagine"):
        assert f"| breakout | {agent} | 600 |" in report
    assert "| reacher | sac | 200 |" in report and "Published breakout" in report
    assert (out / "curves_breakout.png").stat().st_size > 1000 and (out / "summary.csv").is_file()

    # The headline table is written between its markers from these results; the rest stays as it was.
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{HEADLINE_BEGIN}\nold table\n{HEADLINE_END}\n\nafter\n")
    assert main(["bench", "--report", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"# title\n\n{HEADLINE_BEGIN}\n| env | agent |") and text.endswith(f"{HEADLINE_END}\n\nafter\n")
    assert "old table" not in text and "| breakout | wmrl-mpc | 600 | 1 |" in text and "| reacher | sac | 200 | 1 |" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| breakout", "| reacher"))]
    for env in ("breakout", "reacher"):  # the best mean return of each env in bold (ties: all of them)
        means = {row[4].strip("*").split(" [")[0]: row[4].startswith("**") for row in rows if row[0] == f"| {env}"}
        best = max(means, key=float)
        assert all(bold == (float(m) == float(best)) for m, bold in means.items())

    # A rerun finds every cell done and changes nothing.
    before = {p: p.read_text() for p in out.glob("**/result.json")}
    capsys.readouterr()
    assert main(["bench", "--suite", "quick", "--out", str(out), "--no-progress"]) == 0
    assert {p: p.read_text() for p in out.glob("**/result.json")} == before
    assert "(0 s)" in capsys.readouterr().out

    # A cell whose result is lost after training is evaluated again and keeps its training time;
    # one killed before its training was recorded reruns from its saves, and its training time
    # (this process's only) is then marked as a lower bound.
    killed = out / "breakout/random/seed-0"
    trained = json.loads((killed / "result.json").read_text())["train_seconds"]
    (killed / "result.json").unlink()
    assert main(["bench", "--suite", "quick", "--out", str(out), "--no-progress"]) == 0
    again = json.loads((killed / "result.json").read_text())
    assert again["train_resumed"] is False and again["train_seconds"] >= trained
    (killed / "result.json").unlink()
    (killed / "train_time.json").unlink()
    assert main(["bench", "--suite", "quick", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((killed / "result.json").read_text())["train_resumed"] is True
    assert "| breakout | random | 600 |" in (report := (out / "report.md").read_text()) and "| ≥0.00 |" in report


def test_sb3_run_resumes_from_its_last_save(tmp_path):
    card = load_card("breakout")
    agent = train_sb3(card, "a2c", 160, seed=0, folder=tmp_path)
    assert agent.model.num_timesteps == 160
    agent = train_sb3(card, "a2c", 320, seed=0, folder=tmp_path)  # a longer budget continues the same model
    assert agent.model.num_timesteps == 320
    action, _ = agent.predict(make_env(card).reset(seed=0)[0])
    assert 0 <= int(action) < 4


def test_sac_learns_from_the_card_frame_stacks(tmp_path, monkeypatch):
    # The suites' SAC cells start learning after 1,000 steps, beyond the quick suite's budget: this
    # runs a few real updates on Reacher's pixel stacks, saved and reloaded for evaluation.
    monkeypatch.setitem(SB3_SETTINGS, "sac", {**SB3_SETTINGS["sac"], "learning_starts": 40, "batch_size": 16})
    agent = train_sb3(load_card("reacher"), "sac", 48, seed=0, folder=tmp_path)
    assert agent.model.num_timesteps == 48 and agent.model._n_updates == 8
    assert agent.model.replay_buffer.buffer_size == 48  # capped at the budget
    action, _ = agent.predict(make_env(load_card("reacher")).reset(seed=0)[0])
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)


def test_life_loss_ends_learning_episodes_not_the_game():
    env = EpisodicLifeEnv(make_env(load_card("breakout")))  # as the SB3 agents learn
    env.reset(seed=0)
    ends, game_overs, lives = 0, 0, []
    for _ in range(3000):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        lives.append(info["lives"])
        if terminated or truncated:
            ends += 1
            game_overs += env.was_real_done
            env.reset()
            if game_overs:
                break
    assert game_overs == 1 and ends == 5  # five lives: four lost lives, then the game's end
    assert lives[-1] == 0 and max(lives) == 5


def test_zoo_variant_learns_per_life_on_sb3_frames_and_is_evaluated_on_full_games():
    from wmrl.bench.agents import zoo_atari_env, zoo_eval_env
    from wmrl.envs import load_card

    card = load_card("breakout")
    learn, play = zoo_atari_env(card, train=True), zoo_eval_env(card)
    obs, _ = play.reset(seed=0)
    assert obs.shape == (4, 84, 84, 1) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    ends = []
    for env in (learn, play):
        env.reset(seed=0)
        done, info = False, {}
        while not done:
            _, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
            done = terminated or truncated
        ends.append(info["lives"])
    assert ends == [4, 0]  # learning: a lost life ends the episode; evaluation: the whole game
    # evaluation serves the ball after each lost life, as the card's games do: an agent that never
    # presses FIRE (trained per life, it never had to) still ends its game, far before the step cap
    play.reset(seed=1)
    for step in range(3000):
        _, _, terminated, truncated, info = play.step(0)
        if terminated or truncated:
            break
    assert terminated and info["lives"] == 0 and step < 3000


def test_interval_estimates_match_independent_computations():
    """rliable's mean / IQM / bootstrap CIs against scipy's trimmed mean and a plain numpy bootstrap."""
    from scipy.stats import trim_mean

    x = np.array([0.0, 1, 2, 3, 4, 5, 6, 100])
    e = interval_estimates(x, reps=4000)
    assert e["mean"] == pytest.approx(x.mean()) and e["iqm"] == pytest.approx(trim_mean(x, 0.25))
    assert e["iqm"] == pytest.approx(np.mean([2, 3, 4, 5]))
    y = np.linspace(0, 9, 10) ** 1.5  # a smooth sample: its bootstrap percentiles are stable
    e_y, rng = interval_estimates(y, reps=4000), np.random.default_rng(1)
    boot = y[rng.integers(0, len(y), (20000, len(y)))].mean(1)  # percentile bootstrap of the mean
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert e_y["mean_lo"] == pytest.approx(lo, abs=0.05 * (hi - lo)) and e_y["mean_hi"] == pytest.approx(hi, abs=0.05 * (hi - lo))
    assert e["iqm_lo"] <= e["iqm"] <= e["iqm_hi"] and x.min() <= e["iqm_lo"] and e["iqm_hi"] <= x.max()
    assert interval_estimates(x, reps=4000) == e  # seeded: the same report twice
    one = interval_estimates([3.5])
    assert one["mean"] == one["mean_lo"] == one["mean_hi"] == 3.5


def test_bench_errors(tmp_path):
    r = run_cli("bench", "--suite", "nope", "--out", tmp_path / "x")
    assert r.returncode == 2 and "unknown suite 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("bench", "--suite", "quick", "--agents", "ppo", "dqnn", "--out", tmp_path / "x")
    assert r.returncode == 2 and "unknown agent(s) dqnn" in r.stderr
    r = run_cli("bench", "--report", tmp_path)
    assert r.returncode == 2 and "no finished benchmark cells" in r.stderr
    r = run_cli("bench")
    assert r.returncode == 2 and "exactly one of --suite" in r.stderr
    r = run_cli("bench", "--suite", "atari100k", "--envs", "pongg", "--out", tmp_path / "x")
    assert r.returncode == 2 and "pongg" in r.stderr and "Traceback" not in r.stderr
    # A card the suite does not list, without a config for the wmrl agents: refused before any training.
    r = run_cli("bench", "--suite", "robots", "--envs", "fetch_push", "--out", tmp_path / "x")
    assert r.returncode == 2 and "need configs/fetch_push.yaml" in r.stderr and not (tmp_path / "x").exists()
    if not torch.cuda.is_available():
        r = run_cli("bench", "--suite", "quick", "--device", "cuda", "--out", tmp_path / "x")
        assert r.returncode == 2 and "sees no CUDA device" in r.stderr and not (tmp_path / "x").exists()
    r = run_cli("bench", "--suite", "quick", "--readme", tmp_path / "README.md")
    assert r.returncode == 2 and "--readme goes with --report" in r.stderr
    (tmp_path / "README.md").write_text("no markers\n")
    results = shutil.copytree(REPO / "benchmarks/results/atari100k-64px", tmp_path / "results")  # the report is rewritten
    r = run_cli("bench", "--report", results, "--readme", tmp_path / "README.md")
    assert r.returncode == 2 and "needs the headline markers" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "README.md").read_text() == "no markers\n"
    corrupt = tmp_path / "c" / "breakout" / "random" / "seed-0"
    corrupt.mkdir(parents=True)
    (corrupt / "result.json").write_text("{not json")
    with pytest.raises(Exception, match="corrupt benchmark result"):
        write_report(tmp_path / "c")


def test_readme_headline_table_is_the_committed_results():
    """The README's table is what `wmrl bench --report ... --readme` writes from benchmarks/results/."""
    text = (REPO / "README.md").read_text()
    table = text.split(HEADLINE_BEGIN + "\n")[1].split(HEADLINE_END)[0]
    roots = [REPO / "benchmarks/results/atari100k", REPO / "benchmarks/results/robots", REPO / "benchmarks/results/crafter"]
    assert table == headline(roots)


def test_every_suite_cell_has_a_config_for_its_env():
    from wmrl.config import load_experiment

    for suite, cells in runner.SUITES.items():
        for cell in cells:
            if cell.agent.startswith("wmrl"):
                assert load_experiment(cell.config or cell.env).env == cell.env, (suite, cell)


def test_crafter_cell_reports_its_score(tmp_path):
    """A Crafter cell's result carries the achievement score; the report normalises the score, not
    the return, by the card's reference scores (random 1.6%, human 50.5%)."""
    cell = runner.Cell("crafter", "random", budget=100, eval_episodes=2, eval_max_steps=200)
    result = runner.run_cell(cell, 0, tmp_path)
    assert 0 <= result["score"] <= 100 and len(result["achievement_rates"]) == 22
    report = write_report(tmp_path).read_text()
    hns = (result["score"] - 1.6) / (50.5 - 1.6)
    assert f"| {hns:.3f} | {result['score']:.1f}% ± 0.0 |" in report
    assert "Published crafter, Crafter score (%) at 1M env steps" in report and "| DreamerV3 | 14.5 |" in report
    assert f"| collect_wood | {result['achievement_rates']['collect_wood']:.1f} |" in report


def test_achievement_table_averages_each_achievement_over_seeds():
    from wmrl.bench.report import achievement_table

    results = [{"env": "crafter", "agent": "ppo", "achievement_rates": {"collect_wood": 50.0, "place_table": 0.0}},
               {"env": "crafter", "agent": "ppo", "achievement_rates": {"collect_wood": 100.0, "place_table": 10.0}},
               {"env": "crafter", "agent": "random", "achievement_rates": {"collect_wood": 20.0, "place_table": 0.0}},
               {"env": "reacher", "agent": "ppo"}]
    lines = achievement_table(results)
    assert "| achievement | crafter ppo | crafter random |" in lines
    assert "| collect_wood | 75.0 | 20.0 |" in lines and "| place_table | 5.0 | 0.0 |" in lines
    assert achievement_table(results[3:]) == []


def test_report_shows_success_and_progress():
    from wmrl.bench.report import markdown, summarise

    results = [{"env": "pusht", "agent": "random", "budget": 100, "episodes": 2, "return_mean": r, "train_seconds": 0.0,
                "ms_per_action_mean": 1.0, "success_rate": s, "progress_mean": p}
               for r, s, p in ((1.0, 0.0, 0.2), (3.0, 0.5, 0.6))]
    report = markdown(summarise(results))
    # mean [bootstrap CI], std, IQM [CI]: two seeds 1 and 3 resample to means 1, 2 or 3
    assert "| 2.00 [1.00, 3.00] | 1.00 | 2.00 [1.00, 3.00] | – | 0.25 (progress 0.40) |" in report
    assert "Published pusht, success rate at their own data budgets" in report and "| DINO-WM (its own PushT goal definition) | 0.9 |" in report


def test_suite_cells_for_a_card_the_suite_does_not_list():
    cells = runner.suite_cells("atari100k", ["crafter", "breakout"])  # crafter: the template's cells
    agents = (*runner.DISCRETE_AGENTS, *runner.ABLATIONS)
    assert [(c.env, c.agent) for c in cells] == [("crafter", a) for a in agents] + [("breakout", a) for a in agents]
    assert {(c.budget, c.eval_episodes, c.config) for c in cells} == {(100_000, 20, "")}
    assert runner.suite_cells("robots", ["reacher"]) == [c for c in runner.SUITES["robots"] if c.env == "reacher"]


def test_ablation_agents_are_valid_overrides_of_the_agent_configs():
    from wmrl.config import load_experiment

    for config in ("breakout", "reacher"):
        search, greedy, pretrain, frozen, model_grad = (
            load_experiment(config, ("run.loop=online", *runner.ABLATIONS[a]))
            for a in ("wmrl-search", "wmrl-greedy", "wmrl-pretrain", "wmrl-frozen", "wmrl-model-grad"))
        assert search.search.depth == 2 and pretrain.run.stage1_steps > 0 and model_grad.learner.model_grad
        assert greedy.search.eval_depth == 1
        assert frozen.learner.encoder_lr_scale == 0 and frozen.run.stage1_steps > 0
    breakout = load_experiment("breakout")  # each ablation changes what it names
    assert breakout.search.depth == 1 and breakout.search.eval_depth == 2  # learns greedily, acts by the search
    assert breakout.run.stage1_steps == 0 and not breakout.learner.model_grad
    assert breakout.learner.encoder_lr_scale > 0




def test_report_names_the_machine_each_cell_trained_on(tmp_path):
    from wmrl.bench.report import machines

    cpu = {"cpu": "AMD EPYC", "cpus": 2, "torch_threads": 1, "torch": "2.13.0+cpu", "cuda": None}
    gpu = {"cpu": "Xeon", "cpus": 16, "torch_threads": 1, "torch": "2.11.0+cu130", "cuda": "NVIDIA H200"}
    results = []
    for agent, seed, machine, device in (("dqn", 0, cpu, "cpu"), ("ppo", 0, gpu, "cuda"), ("ppo", 1, gpu, "cuda"),
                                         ("random", 0, gpu, "cpu")):
        folder = tmp_path / agent / str(seed)
        folder.mkdir(parents=True)
        (folder / "cell.json").write_text(json.dumps({"machine": machine, "device": device}))
        results.append({"agent": agent, "seed": seed, "folder": folder})
    lines = machines(results).splitlines()
    assert lines[0].startswith("Machines") and len(lines) == 4
    assert "AMD EPYC, 2 CPUs, 1 torch threads, torch 2.13.0+cpu, trained on the CPU: dqn seed 0" in lines[1]
    assert lines[2].endswith("trained on GPU NVIDIA H200: ppo seed 0, ppo seed 1")
    assert lines[3].endswith("trained on the CPU: random seed 0")  # a GPU machine's cell run on its CPU
    assert machines(results[:1]).startswith("Machine: AMD EPYC")


def test_a_reevaluated_cell_keeps_its_training_time(tmp_path):
    cell = runner.Cell("breakout", "random", budget=100, eval_episodes=1, eval_max_steps=30)
    first = runner.run_cell(cell, 0, tmp_path)
    folder = runner.cell_dir(tmp_path, cell, 0)
    stored = json.loads((folder / "train_time.json").read_text())["train_seconds"]
    assert first["train_resumed"] is False and first["train_seconds"] == stored
    (folder / "train_time.json").write_text(json.dumps({"train_seconds": 1234.5}))  # as if training had taken that long
    (folder / "result.json").unlink()  # evaluate again: the cell resumes, its training is not redone
    again = runner.run_cell(cell, 0, tmp_path)
    assert again["train_seconds"] == 1234.5 and again["train_resumed"] is False
    (folder / "train_time.json").unlink()  # a resumed cell without its record: the time is a lower bound
    (folder / "result.json").unlink()
    assert runner.run_cell(cell, 0, tmp_path)["train_resumed"] is True
