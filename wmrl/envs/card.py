"""Env cards: YAML files in envs/ that say how to build, preprocess and record an environment.

A card is data, not code: any registered Gymnasium id works from a card the user writes.
Field meanings are documented on the dataclasses below and in envs/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wmrl.config import from_dict, read_yaml
from wmrl.errors import ConfigError, EnvError
from wmrl.resources import shipped_dir

STATE_SOURCES = ("ale_ram", "qpos", "qvel", "body", "info", "obs")


@dataclass
class Preprocess:
    grayscale: bool = False
    size: tuple[int, int] | None = None  # (H, W) after resizing; None keeps the env's size
    frame_skip: int = 1  # raw steps per agent step; >1 max-pools the last two raw frames (Atari)
    sticky_actions: float = 0.0  # probability of repeating the previous action, per raw step
    noop_max: int = 0  # up to this many no-op raw steps after reset (Atari convention: 30)
    noop_action: int = 0
    # Press this action (Atari FIRE) after reset and after every lost life, as SB3's FireResetEnv
    # does at reset: in Breakout no ball is served until FIRE, which a planner need not discover.
    fire_on_life_loss: bool = False
    fire_action: int = 1

    def __post_init__(self):
        if self.frame_skip < 1:
            raise ValueError(f"preprocess.frame_skip must be >= 1, got {self.frame_skip}")
        if not 0.0 <= self.sticky_actions < 1.0:
            raise ValueError(f"preprocess.sticky_actions must be in [0, 1), got {self.sticky_actions}")
        if self.size is not None and min(self.size) < 8:
            raise ValueError(f"preprocess.size must be at least 8x8, got {self.size}")


@dataclass
class ActionSpec:
    """Discrete, or continuous within [low, high]: given bounds become the agent's action space and
    are mapped linearly onto the env's own (e.g. [-1, 1] for PushT's [0, 512]); None keeps the env's."""

    type: Literal["discrete", "continuous"]
    low: list[float] | None = None
    high: list[float] | None = None

    def __post_init__(self):
        if (self.low is None) != (self.high is None):
            raise ValueError("action.low and action.high go together")
        if self.low is not None and (self.type == "discrete" or any(lo >= hi for lo, hi in zip(self.low, self.high))):
            raise ValueError(f"action bounds need continuous actions and low < high, got {self.low}, {self.high}")


@dataclass
class StateField:
    """One named piece of ground-truth state, recorded beside every frame for later probes.

    source: ``ale_ram`` (Atari RAM), ``qpos`` / ``qvel`` (MuJoCo), ``body:NAME`` (MuJoCo body
    position), ``info:KEY`` (a key of the step/reset info; dict values are flattened in order),
    ``obs`` or ``obs:KEY`` (the env's own observation, before pixels replace it).
    """

    name: str
    source: str
    index: list[int] | None = None  # keep only these entries of the source vector

    def __post_init__(self):
        kind, _, arg = self.source.partition(":")
        if kind not in STATE_SOURCES:
            raise ValueError(f"state '{self.name}': unknown source '{self.source}' (kinds: {', '.join(STATE_SOURCES)})")
        if kind in ("body", "info") and not arg:
            raise ValueError(f"state '{self.name}': source '{kind}' needs a name, as '{kind}:NAME'")


@dataclass
class GoalSpec:
    """How success is judged in a goal-reaching env."""

    achieved: str | None = None  # state field holding the achieved position
    desired: str | None = None  # state field holding the goal position
    threshold: float | None = None  # success when ||achieved - desired|| < threshold
    success_info: str | None = None  # or: an info key the env sets on success
    progress_info: str | None = None  # an info key measuring how far the task got (PushT: coverage), averaged at the end


@dataclass
class EnvCard:
    name: str
    gym_id: str
    description: str = ""
    imports: list[str] = field(default_factory=list)  # modules whose import registers gym_id
    extra: str | None = None  # the wmrl extra that installs them: pip install 'wmrl[EXTRA]'
    make_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    pixels: Literal["obs", "render"] = "obs"  # where frames come from
    pixel_key: str | None = None  # for dict observations: the key holding the image
    mujoco_shadows: bool = True  # False turns shadows off in MuJoCo rendering (faster)
    preprocess: Preprocess = field(default_factory=Preprocess)
    frame_stack: int = 4  # K: the policy sees the last K frames
    action: ActionSpec = field(default_factory=lambda: ActionSpec("discrete"))
    max_episode_steps: int | None = None  # agent steps, on top of the env's registered limit
    state: list[StateField] = field(default_factory=list)
    goal: GoalSpec | None = None
    reference_scores: dict[str, float] = field(default_factory=dict)  # published: random, human
    reference_metric: str = "return"  # what reference_scores measure (Crafter: "score_pct")
    source_file: str = ""  # filled in by load_card

    def __post_init__(self):
        if self.frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {self.frame_stack}")
        names = [s.name for s in self.state]
        if len(set(names)) != len(names):
            raise ValueError(f"state field names must be unique, got {names}")
        if self.goal is not None:
            for ref in (self.goal.achieved, self.goal.desired):
                if ref is not None and ref not in names:
                    raise ValueError(f"goal refers to state field '{ref}', which the card does not record")


def card_paths() -> list[Path]:
    return sorted(shipped_dir("envs").glob("*.yaml"))


def load_card_file(path: str | Path) -> EnvCard:
    path = Path(path)
    data = read_yaml(path)
    data.setdefault("source_file", str(path))
    return from_dict(EnvCard, data, source=str(path))


def list_cards() -> list[EnvCard]:
    return [load_card_file(p) for p in card_paths()]


def load_card(name: str) -> EnvCard:
    """Find a card by path, file stem, card name, or Gymnasium id (an id that several cards share
    names the one with the shortest name: ALE/Breakout-v5 is `breakout`, not `breakout-sticky`).

    Raises:
        EnvError: no shipped card matches and `name` is not a card file.
        ConfigError: the card does not match the EnvCard schema.
    """
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise EnvError(f"env card not found: {path}")
        return load_card_file(path)
    for p in card_paths():
        if p.stem == name:
            return load_card_file(p)
    cards = list_cards()
    for card in cards:
        if name == card.name:
            return card
    # A Gymnasium id several cards share (breakout, breakout-sticky) names the plain card: the shortest name.
    same_id = sorted((c for c in cards if c.gym_id == name), key=lambda c: (len(c.name), c.name))
    if same_id:
        return same_id[0]
    known = ", ".join(f"{c.name} ({c.gym_id})" for c in cards)
    raise EnvError(
        f"unknown env '{name}': no env card has that name or Gymnasium id (cards: {known}); "
        "for another Gymnasium env, write a card (see envs/README.md) and pass its path"
    )


__all__ = ["ActionSpec", "ConfigError", "EnvCard", "GoalSpec", "Preprocess", "StateField", "load_card"]
