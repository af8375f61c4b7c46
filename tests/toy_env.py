"""Pixel contextual bandits the online agent's tests can learn in seconds (registered on import).

SideEnv (discrete): each step shows a 12x12 frame with a bright 4x4 block on the left or right
half; action 0 (left) or 1 (right) pays 1 when it points at the block, else 0. Ten steps per
episode: a random policy earns 5 on average, a policy that reads the frame earns 10.

ReachEnv (continuous): the block sits at one of 9 columns, position p in [-1, 1]; the action
a in [-1, 1] pays 1 - |a - p|. Ten steps per episode: a uniformly random policy earns ~3.3, one
that reads the frame 10.
"""

import gymnasium as gym
import numpy as np

ID = "WmrlToySide-v0"


class SideEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (12, 12, 1), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 10):
        self.length = length

    def _obs(self):
        frame = np.zeros((12, 12, 1), np.uint8)
        if self.side == 0:
            frame[4:8, 1:5] = 255
        else:
            frame[4:8, 7:11] = 255
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.side = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.side)
        self.t += 1
        self.side = int(self.np_random.integers(2))
        return self._obs(), reward, False, self.t >= self.length, {}


class ReachEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (12, 12, 1), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, length: int = 10):
        self.length = length

    def _obs(self):
        frame = np.zeros((12, 12, 1), np.uint8)
        frame[4:8, self.col:self.col + 4] = 255
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.col = 0, int(self.np_random.integers(9))
        return self._obs(), {}

    def step(self, action):
        reward = 1.0 - abs(float(np.asarray(action).reshape(-1)[0]) - (self.col / 4 - 1))
        self.t += 1
        self.col = int(self.np_random.integers(9))
        return self._obs(), reward, False, self.t >= self.length, {}


REACH_ID = "WmrlToyReach-v0"
if ID not in gym.registry:
    gym.register(ID, entry_point=SideEnv)
    gym.register(REACH_ID, entry_point=ReachEnv)

CARD = f"""name: toyside
gym_id: {ID}
description: pixel contextual bandit for tests
imports: [toy_env]
pixels: obs
frame_stack: 2
action: {{type: discrete}}
"""

REACH_CARD = f"""name: toyreach
gym_id: {REACH_ID}
description: pixel continuous bandit for tests
imports: [toy_env]
pixels: obs
frame_stack: 2
action: {{type: continuous}}
"""
