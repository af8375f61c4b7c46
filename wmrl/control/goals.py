"""Goal images for goal-reaching envs, from a replay dataset.

An env card's `goal:` names the state fields of the achieved and the desired position (Reacher:
fingertip and target). For an episode whose desired position is g, the goal image is the stored
frame stack that best shows g reached: the row minimising |achieved - g| + |desired_row - g|,
so the arm is at g and the target drawn in the image sits near g too. The planner then scores
how close its last imagined latent comes to that image's latent (V-JEPA 2-AC's goal energy).
"""

from __future__ import annotations

import numpy as np

from wmrl.data.replay import ReplayDataset, state_spans
from wmrl.envs.card import GoalSpec
from wmrl.errors import UserError


def state_field(state: np.ndarray, layout: list[tuple[str, int]], name: str) -> np.ndarray:
    """The named field of a state vector [..., S] laid out as (name, size) pairs -> [..., size]."""
    spans = state_spans(layout)
    if name not in spans:
        raise UserError(f"the env records no state field '{name}' (fields: {', '.join(spans)})")
    return state[..., spans[name]]


def has_goal_fields(goal: GoalSpec | None) -> bool:
    """Whether a card's goal names the state fields of the achieved and the desired position."""
    return goal is not None and goal.achieved is not None and goal.desired is not None


def info_distance(env, goal: GoalSpec):
    """info -> the achieved-desired distance of the state a step of `env` recorded (its layout is
    known from the env's first reset on)."""
    return lambda info: goal_distance(info["state"], env.get_wrapper_attr("layout"), goal)


def goal_distance(state: np.ndarray, layout: list[tuple[str, int]], goal: GoalSpec) -> float:
    """Distance between the achieved and the desired position of one state vector [S]."""
    return float(np.linalg.norm(state_field(state, layout, goal.achieved) - state_field(state, layout, goal.desired)))


class DatasetGoals:
    def __init__(self, data: ReplayDataset, goal: GoalSpec):
        if data.states is None:
            raise UserError(f"{data.root} records no ground-truth state, so no goal image can be chosen from it")
        self.data = data
        self.achieved = state_field(data.states, data.state_layout, goal.achieved)  # [R, G]
        self.desired = state_field(data.states, data.state_layout, goal.desired)  # [R, G]

    def goal_stack(self, desired: np.ndarray) -> np.ndarray:
        """The stored frame stack [K, C, H, W] that best shows `desired` [G] reached."""
        cost = np.linalg.norm(self.achieved - desired, axis=1) + np.linalg.norm(self.desired - desired, axis=1)
        return self.data.stacks(np.array([int(cost.argmin())]))[0]
