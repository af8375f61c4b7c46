from dataclasses import dataclass, field

import pytest

from wmrl.config import ExperimentConfig, from_dict, load_experiment, load_yaml, to_dict
from wmrl.envs.card import EnvCard, card_paths, load_card, load_card_file
from wmrl.errors import ConfigError, EnvError
from wmrl.resources import shipped_dir


@dataclass
class Inner:
    size: tuple[int, int] = (64, 64)
    name: str | None = None


@dataclass
class Outer:
    lr: float = 1e-3
    steps: int = 10
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)


def test_from_dict_converts_nested_and_numbers():
    cfg = from_dict(Outer, {"lr": 1, "inner": {"size": [32, 16]}, "tags": ["a"]})
    assert cfg == Outer(lr=1.0, steps=10, inner=Inner((32, 16)), tags=["a"])
    assert isinstance(cfg.lr, float)


@pytest.mark.parametrize("data, fragment", [
    ({"lr": 0.1, "stpes": 3}, "unknown key 'stpes'"),
    ({"inner": {"sise": [1, 2]}}, "unknown key 'inner.sise'"),
    ({"steps": "ten"}, "key 'steps' expects int"),
    ({"steps": True}, "key 'steps' expects int"),
    ({"inner": {"size": [1, 2, 3]}}, "key 'inner.size'"),
    ({"inner": 5}, "'inner' expects a mapping"),
])
def test_from_dict_rejects_with_key_and_source(data, fragment):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data, source="my.yaml")
    assert fragment in str(e.value) and "my.yaml" in str(e.value)


def test_every_shipped_card_and_config_loads():
    cards = [load_card_file(p) for p in card_paths()]
    names = {c.name for c in cards}
    assert {"breakout", "crafter", "pusht", "reacher", "fetch_reach", "fetch_push"} <= names
    from wmrl.train.onex import OnexConfig

    for path in sorted(shipped_dir("configs").glob("*.yaml")):
        if path.stem.startswith("onex"):  # the 1X token pipeline's configs have no env
            load_yaml(OnexConfig, path)
            continue
        cfg = load_yaml(ExperimentConfig, path)
        if path.stem == "vpt":  # offline VPT shards: no env, a vpt section
            assert cfg.env is None and cfg.vpt.frame_stack == cfg.stage1.model.encoder.tubelet
            continue
        assert load_card(cfg.env).name == cfg.env


def test_card_found_by_name_gym_id_and_path(tmp_path):
    assert load_card("ALE/Breakout-v5").name == "breakout"
    assert load_card("breakout-sticky").preprocess.sticky_actions == 0.25  # a variant card: by its name only
    assert load_card("breakout").gym_id == "ALE/Breakout-v5"
    path = tmp_path / "mine.yaml"
    path.write_text("name: cartpole\ngym_id: CartPole-v1\npixels: render\n")
    card = load_card(str(path))
    assert isinstance(card, EnvCard) and card.pixels == "render"


def test_card_errors_name_the_key_and_file(tmp_path):
    with pytest.raises(EnvError, match="unknown env 'Pong-v9'"):
        load_card("Pong-v9")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngym_id: CartPole-v1\npreprocess: {frame_skp: 4}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*preprocess\.frame_skp"):
        load_card(str(bad))
    bad.write_text("name: x\ngym_id: CartPole-v1\nstate: [{name: s, source: ram}]\n")
    with pytest.raises(ConfigError, match="unknown source 'ram'"):
        load_card(str(bad))
    bad.write_text("name: x\ngym_id: CartPole-v1\ngoal: {achieved: tip, threshold: 0.1}\n")
    with pytest.raises(ConfigError, match="state field 'tip'"):
        load_card(str(bad))


def test_experiment_config_by_name_and_typo(tmp_path):
    assert load_experiment("breakout").env == "breakout"
    path = tmp_path / "exp.yaml"
    path.write_text("env: breakout\ncollect: {stepz: 5}\n")
    with pytest.raises(ConfigError, match="collect.stepz"):
        load_experiment(str(path))
    with pytest.raises(ConfigError, match="config file not found"):
        load_experiment(str(tmp_path / "missing.yaml"))


def test_retired_keys_are_errors_in_config_files_and_skipped_in_stored_run_records(tmp_path):
    stored = to_dict(load_experiment("breakout"))
    stored["data"]["batch_size"] = 32  # what earlier versions wrote into run.json
    assert from_dict(ExperimentConfig, stored, source=str(tmp_path / "run.json")).data == load_experiment("breakout").data
    with pytest.raises(ConfigError, match="data.batch_size' was removed"):
        from_dict(ExperimentConfig, stored, source="configs/mine.yaml")
