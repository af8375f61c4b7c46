"""Strict mapping of YAML onto typed dataclasses.

Dataclasses are the single source of truth: a YAML key the dataclass does not declare, or a value
of the wrong type, is a `ConfigError` naming the key and the file. Nothing is silently dropped.

Example:
    >>> @dataclass
    ... class Opt:
    ...     lr: float = 1e-3
    >>> from_dict(Opt, {"lr": 0.1}, source="cfg.yaml")
    Opt(lr=0.1)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from wmrl.control.config import PlannerConfig, SearchConfig
from wmrl.errors import ConfigError
from wmrl.offline.vpt import VptConfig
from wmrl.train.config import LearnerConfig, Stage1Config, Stage2Config

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a non-mapping document is a `ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Load a YAML file into dataclass `cls`, strictly."""
    return from_dict(cls, read_yaml(path), source=str(path))


# Keys earlier versions wrote, and why they went: an error in a config file, skipped in a stored run.json.
RETIRED = {"data.batch_size": "it was read nowhere; each stage's optim.batch_size sets its batch size"}


def from_dict(cls: type[T], data: Any, source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking every key and type."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where}' expects a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    for key in [k for k in unknown if prefix + k in RETIRED]:
        if not source.endswith(".json"):  # a config a person writes: say what replaced it
            raise ConfigError(f"{source}: '{prefix}{key}' was removed ({RETIRED[prefix + key]})")
        unknown.remove(key)  # a stored config (run.json) of an earlier version: the key did nothing
        data = {k: v for k, v in data.items() if k != key}
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (allowed at {where}: {', '.join(fields)})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], source, prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{prefix}{name}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        raise ConfigError(f"{source}: {e}") from None


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML/JSON-ready structure (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def fail() -> typing.NoReturn:
        raise ConfigError(f"{source}: key '{key}' expects {_type_name(tp)}, got {value!r}")

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, source, key)
            except ConfigError:
                continue
        fail()
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{source}: key '{key}' must be one of {list(args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        fail()
    if tp is str:
        if isinstance(value, str):
            return value
        fail()
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                fail()
            return tuple(_convert(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            fail()
        kt, vt = args if args else (Any, Any)
        return {_convert(kt, k, source, f"{key}"): _convert(vt, v, source, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported config type {tp!r} for key {key}")  # a bug in a dataclass


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


# --------------------------------------------------------------------------------------------
# Experiment configs (configs/*.yaml). Later stages add their own sections here.


@dataclass
class CollectConfig:
    steps: int = 20_000
    num_envs: int = 1
    seed: int = 0
    policy: str = "random"  # "random" or a path to an SB3 model zip

    def __post_init__(self):
        if self.steps < 1 or self.num_envs < 1:
            raise ValueError("collect.steps and collect.num_envs must be >= 1")


@dataclass
class DataConfig:
    clip_len: int = 16  # T: observations per training clip (batch sizes are the stages' optim.batch_size)
    val_fraction: float = 0.1  # share of episodes held out, chosen by episode id

    def __post_init__(self):
        if self.clip_len < 1:
            raise ValueError("data.clip_len must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class RunConfig:
    """`wmrl run` at a fixed budget of real env agent steps (Atari-100k: 100,000), then an evaluation.

    loop "online" (the default): the agent of `learner` / `search` acts and learns as it goes,
    `replay_ratio` updates per env step after `seed_steps` random steps (stage 1 pretrains the
    encoder on those for `stage1_steps`, 0 = none). loop "rounds": collect -> stage 1 -> stage 2 ->
    MPC rounds of `round_steps` (the two-stage design, for continuous actions until the online agent has them)."""

    loop: Literal["online", "rounds"] = "online"
    budget: int = 100_000  # real env agent steps (evaluation episodes not counted)
    seed_steps: int = 10_000  # collected with random actions first
    replay_ratio: float = 0.25  # online: gradient updates per env step after the seed steps
    frozen_replay_ratio: float = 1.0  # online: the same once the encoder is frozen (learner.freeze_encoder_after)
    checkpoint_every: int = 5_000  # online: env steps between checkpoints (a killed run resumes from the last)
    round_steps: int = 10_000  # each later round collects with the MPC agent (plan.explore on)
    num_envs: int = 1
    stage1_steps: int = 1000  # stage-1 steps after round 0 / the online seed steps (online: 0 = no pretraining)
    stage1_round_steps: int = 0  # stage-1 steps added each later round (0: the encoder stays as it is)
    stage2_steps: int = 2000  # stage-2 steps after round 0
    stage2_round_steps: int = 1000  # stage-2 steps each later round, warm-started from the last model
    eval_episodes: int = 10  # full episodes with the deterministic planner, after the last round
    eval_max_steps: int = 27_000
    seed: int = 0

    def __post_init__(self):
        if min(self.budget, self.seed_steps, self.round_steps, self.num_envs, self.stage2_steps, self.checkpoint_every,
               self.stage2_round_steps, self.eval_max_steps) < 1 or self.stage1_round_steps < 0 or self.eval_episodes < 0:
            raise ValueError("run: step counts must be >= 1 (stage1_round_steps, eval_episodes >= 0)")
        if self.stage1_steps < (1 if self.loop == "rounds" else 0) or min(self.replay_ratio, self.frozen_replay_ratio) <= 0:
            raise ValueError("run: stage1_steps must be >= 1 for the rounds loop (>= 0 online), replay ratios > 0")


@dataclass
class ExperimentConfig:
    env: str | None = None  # env card name, Gymnasium id of a shipped card, or path to a card (None: offline data)
    collect: CollectConfig = field(default_factory=CollectConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    plan: PlannerConfig = field(default_factory=PlannerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)  # the online agent's update
    search: SearchConfig = field(default_factory=SearchConfig)  # the online agent's acting
    run: RunConfig = field(default_factory=RunConfig)
    vpt: VptConfig = field(default_factory=VptConfig)  # how `--data vpt:...` sources are read


def find_config(name_or_path: str) -> Path:
    """A config path as given, or the name of a shipped config (``breakout``)."""
    from wmrl.resources import shipped_dir

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    shipped = shipped_dir("configs") / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in shipped_dir("configs").glob("*.yaml"))
    raise ConfigError(f"unknown config '{name_or_path}' (shipped: {', '.join(names)})")


def load_experiment(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """A config by name or path, with `section.key=value` overrides (values in YAML) applied before
    the strict checks, so a typo'd key in an override fails like one in the file."""
    path = find_config(name_or_path)
    data = read_yaml(path)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected section.key=value (e.g. learner.encoder_lr_scale=0)")
        *sections, leaf = key.split(".")
        node = data
        for name in sections:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{name}' is a value, not a section")
        node[leaf] = yaml.safe_load(value)
    return from_dict(ExperimentConfig, data, source=str(path) + "".join(f" --set {o}" for o in overrides))
