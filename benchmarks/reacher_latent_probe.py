"""Can the agent's latent say where Reacher's target is? Each latent's encoder, with a linear head on
its latent, is trained supervised on random-play frames to the fingertip and target x, y, then
scored (held-out R²) on frames of other episodes. This is the upper bound of what reward and Q can
teach that latent: the target is a 2-pixel dot at 64x64.

* conv: the DQN conv stem (8x8 stride 4, 4x4 stride 2, 3x3) flattened, the `conv` latent;
* keypoints: the stride-2 tower and per-channel soft-argmax of the `keypoints` latent.

    wmrl collect --env reacher --out data/reacher-probe-train --steps 12000 --seed 0
    wmrl collect --env reacher --out data/reacher-probe-test --steps 12000 --seed 777
    python benchmarks/reacher_latent_probe.py data/reacher-probe-train data/reacher-probe-test
"""

import argparse

import numpy as np
import torch
from torch import nn

from wmrl.data.replay import state_spans
from wmrl.data.store import read_episode, read_metadata
from wmrl.models.agent_model import keypoint_encoder
from wmrl.models.vit import ConvStem

FIELDS = ["fingertip x", "fingertip y", "target x", "target y"]


def frames_and_targets(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Single frames [N, 3, 64, 64] uint8 and (fingertip x, y, target x, y) [N, 4] of a dataset."""
    spans = state_spans([tuple(field) for field in read_metadata(root)["wmrl"]["state_layout"]])
    cols = [spans["fingertip"].start, spans["fingertip"].start + 1, spans["target"].start, spans["target"].start + 1]
    frames, states = [], []
    for i in range(read_metadata(root)["total_episodes"]):
        episode = read_episode(root, i, (3, 64, 64))
        frames.append(episode.frames[:-1])
        states.append(episode.states[:-1, cols])
    return torch.as_tensor(np.concatenate(frames)), torch.as_tensor(np.concatenate(states)).float()


def encoders() -> dict[str, nn.Module]:
    stem = ConvStem(3, 64)  # its `convs` are the conv latent's layers
    return {"conv": nn.Sequential(stem.convs, nn.Flatten(), nn.Linear(64 * 4 * 4, 4)),  # 64x64: a 4x4 grid
            "keypoints": nn.Sequential(keypoint_encoder(3, 32), nn.Linear(64, 4))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train")
    p.add_argument("test")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    x_train, y_train = frames_and_targets(args.train)
    x_test, y_test = frames_and_targets(args.test)
    scale = y_train.std(0)  # targets in units of their spread, so each field weighs the same
    print(f"| latent | {' | '.join(FIELDS)} |\n|---|---|---|---|---|")
    torch.manual_seed(args.seed)
    for name, net in encoders().items():
        optimizer = torch.optim.Adam(net.parameters(), 3e-4)
        generator = torch.Generator().manual_seed(args.seed)
        for _ in range(args.steps):
            batch = torch.randint(0, len(x_train), (32,), generator=generator)
            loss = (net(x_train[batch].float() / 255) - y_train[batch] / scale).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            pred = torch.cat([net(x_test[i:i + 512].float() / 255) for i in range(0, len(x_test), 512)]) * scale
        r2 = 1 - (pred - y_test).pow(2).mean(0) / y_test.var(0)
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in r2.tolist()) + " |", flush=True)


if __name__ == "__main__":
    main()
