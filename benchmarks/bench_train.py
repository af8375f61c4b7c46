"""Benchmark of stage-1 (V-JEPA) and stage-2 (world model) training speed: steps/s, frames/s and MFU against a same-run matmul peak.

For each training config it builds a ``Stage1Trainer`` on a Breakout replay dataset (random
policy; collected into a temp dir unless ``--data`` is given) and measures:

1. FLOPs of one ``train_step()`` (forward + backward, counted by
   ``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions and attention; the CPU
   flash-attention kernels, which torch's table lacks, are added with its own SDPA formulas), and
   of the forward alone (one forward of the model: target encoder + context encoder + predictor).
   Elementwise work (layer norms, GELU, softmax, AdamW, the EMA update) is not counted, as is
   usual for MFU. FLOPs vary by a few % from step to step with the random mask sizes.
2. Speed: after a warm-up, ``train_step()`` in a loop for ``--seconds`` (at least 3 steps):
   steps/s, frame stacks/s (batch_size per step), frames/s (stacks x K frames per stack).
3. Achieved GFLOP/s = FLOPs per step x steps/s, and MFU = achieved / the fp32 (``--precision bf16``: bf16) ``torch.mm`` peak
   of this machine measured in the same run with the same thread count (square matrices of
   ``--peak-size``, best of ``--peak-repeats``; GFLOP/s = 2n^3/t). The peak is measured right
   before and right after each config, and MFU uses the mean of those two, so that it compares
   numbers taken seconds apart. "MFU, best step vs run best" divides the FLOPs of the fastest
   timed step by the best peak of the whole run: both best-of figures, the quiet-machine estimate.
4. Memory: peak RSS (``ru_maxrss``; the process-wide peak, which never goes down, so each config
   also reports how much it raised it; configs run smallest first) and, on CUDA,
   ``torch.cuda.max_memory_allocated``. Parameters: trained (context encoder + predictor) and all
   (plus the EMA target encoder).
5. CPU cores used: process CPU time / wall time, during the timed loop and during the peak. Below
   the thread count means the machine was shared (other processes took the cores).

Stage 2: after the stage-1 configs, the ``stage2`` section of ``--config`` (clips of its
``data.clip_len``) is measured the same way (FLOPs, speed, MFU against the peaks right before and
after it, cores, memory) by a ``Stage2Trainer`` over a frozen encoder: a stage-1 checkpoint of the
default config made here after ``ENCODER_STEPS`` steps from random init (the weights do not change
the timing). The trainer encodes the whole dataset once at build time, so a step runs no encoder;
frames/s counts B x T x K frame slots per step (clips x observations per clip x frames per stack).

Configs: the ``stage1`` section of ``--config`` (default ``breakout``) as is, then variants of it:
``--variant width=384,depth=6,heads=6,batch=64`` (repeatable; keys: width, depth, heads, batch,
pred_width, pred_depth, pred_heads, threads, compile) or one variant from ``--width/--depth/
--heads/--batch``. A ``threads=N`` variant is still compared with the peak at the process's thread
count (``--threads``, default torch's), i.e. with what the whole machine can do. Without any
variant, the defaults are a larger batch, a wider encoder, and a wider and deeper one with a larger
batch, to show where the CPU time goes (per-op and elementwise overhead vs matmul efficiency).

Why same-run ratios: the machine is shared and noisy; absolute rates drift by tens of % from
minute to minute, and a 2-thread OpenMP process loses far more than half its speed when another
process also wants both cores (libgomp's threads spin at every barrier; a step of the default
config went from ~0.27 s to ~8 s next to one other 2-thread torch process, while with
``OMP_WAIT_POLICY=PASSIVE`` or 1 thread it took ~0.6 s). The peak is therefore re-measured next to
every config, and "cores used" shows whether the run had the machine to itself.

``--precision bf16`` times the peak in bf16 too (autocast). Never use it on an AVX2-only CPU: bf16 matmuls
there are ~100x slower (CPUs with AVX512-BF16 or AMX run them faster than fp32, see ``isa`` in the report).

    .venv/bin/python benchmarks/bench_train.py                      # default config + default variants
    .venv/bin/python benchmarks/bench_train.py --variant batch=128 --variant compile=1
    .venv/bin/python benchmarks/bench_train.py --device cuda --precision bf16
    .venv/bin/python benchmarks/bench_train.py --quick                # smoke test, well under a minute
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from wmrl.config import load_experiment
from wmrl.data.collect import collect, open_writer
from wmrl.data.replay import ReplayDataset
from wmrl.envs.card import load_card
from wmrl.envs.make import make_vector_env
from wmrl.policies import RandomPolicy
from wmrl.train.checkpoint import load_checkpoint
from wmrl.train.config import Stage1Config, Stage2Config
from wmrl.train.stage1 import Stage1Trainer
from wmrl.train.stage2 import Stage2Trainer

COLLECT_STEPS, QUICK_COLLECT_STEPS, SEED = 3000, 600, 0
ENCODER_STEPS = 2  # stage-1 steps behind the frozen stage-2 encoder: its weights do not change the timing
DEFAULT_VARIANTS = ["batch=128", "width=256,heads=4", "width=384,depth=6,heads=6,batch=64"]
QUICK_VARIANTS = ["batch=64"]
TARGETS = {"mfu": 0.40}  # for the default config on CPU
VARIANT_KEYS = {"width", "depth", "heads", "batch", "pred_width", "pred_depth", "pred_heads", "threads", "compile"}

aten = torch.ops.aten


# ------------------------------------------------------------------------------------- FLOPs
def _cpu_sdpa_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flop(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows the CUDA attention kernels only; on CPU, SDPA runs these two.
CPU_ATTENTION_FLOPS = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
                       aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop}


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)


def stage1_forward(trainer: Stage1Trainer, model: Callable) -> None:
    """One forward of the JEPA on a batch of batch_size, as in training: target encoder + context
    encoder + predictor."""
    obs, masks = trainer.val_set[0]
    model(torch.from_numpy(obs).to(trainer.device), masks)


def stage2_forward(trainer: Stage2Trainer, model: Callable) -> None:
    """Every loss term of batch_size clips, as in training: the teacher-forced pass, the rollout,
    the heads and the value target (the encoder does not run: the latents are cached)."""
    trainer.losses(trainer.val_rows[0], model)


def count_step_flops(trainer: Stage1Trainer | Stage2Trainer, forward: Callable = stage1_forward) -> dict:
    """FLOPs of one train_step (it is a real step: the trainer advances) and of the forward alone
    (`forward(trainer, eager model)`). Counted on the eager model even when the trainer compiles
    it: same arithmetic, and the dispatcher-level counter does not see inside compiled kernels."""
    # The trainer's forward callable: `train_module` (the model, maybe compiled) or, in older
    # versions of stage1.py, `loss_fn` (model.loss, maybe compiled).
    attr = "train_module" if hasattr(trainer, "train_module") else "loss_fn"
    compiled = getattr(trainer, attr)
    eager = trainer.model if attr == "train_module" else trainer.model.loss
    setattr(trainer, attr, eager)
    try:
        with flop_counter() as fc:
            trainer.train_step()
        step = fc.get_total_flops()
        by_op = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
        with flop_counter() as fc, trainer.autocast():
            forward(trainer, eager)
        fwd = fc.get_total_flops()
    finally:
        setattr(trainer, attr, compiled)
    return {"flops_per_step": int(step), "forward_flops_per_step": int(fwd), "flops_by_op": by_op}


# ------------------------------------------------------------------------------------- peak
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def matmul_peak(device: str, sizes: list[int], repeats: int, dtype: torch.dtype = torch.float32) -> dict:
    """Best-of-`repeats` GFLOP/s of torch.mm(n x n, n x n) for each n; `best` is the max over sizes.
    bf16 is timed under autocast from fp32 inputs, as the trainer runs it."""
    rates, cores = {}, []
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        ctx = torch.autocast(device_type=torch.device(device).type, dtype=dtype) if dtype != torch.float32 else None
        times = []
        for i in range(repeats + 1):  # the first call warms up (allocation, library dispatch)
            sync(device)
            t, c = time.perf_counter(), cpu_seconds()
            if ctx is None:
                torch.mm(a, b)
            else:
                with ctx:
                    torch.mm(a, b)
            sync(device)
            dt = time.perf_counter() - t
            if i:
                times.append(dt)
                cores.append((cpu_seconds() - c) / dt)
        rates[n] = 2 * n ** 3 / min(times) / 1e9
        del a, b
    return {"gflops": rates, "best": max(rates.values()), "cores_used": statistics.median(cores)}


# ------------------------------------------------------------------------------------- configs
def parse_variant(spec: str) -> dict:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, _, value = item.partition("=")
        if key not in VARIANT_KEYS or not value:
            raise SystemExit(f"bad variant item '{item}' in '{spec}' (keys: {', '.join(sorted(VARIANT_KEYS))})")
        out[key] = int(value)
    return out


def apply_variant(base: Stage1Config, v: dict) -> Stage1Config:
    cfg = copy.deepcopy(base)
    enc, pred = cfg.model.encoder, cfg.model.predictor
    if "width" in v or "depth" in v or "heads" in v:
        width, depth, heads = enc.dims()
        enc.width, enc.depth, enc.heads = v.get("width", width), v.get("depth", depth), v.get("heads", heads)
    pred.width, pred.depth, pred.heads = v.get("pred_width", pred.width), v.get("pred_depth", pred.depth), v.get("pred_heads", pred.heads)
    cfg.optim.batch_size = v.get("batch", cfg.optim.batch_size)
    cfg.compile = bool(v.get("compile", cfg.compile))
    return cfg


def describe(cfg: Stage1Config, threads: int) -> str:
    w, d, h = cfg.model.encoder.dims()
    p = cfg.model.predictor
    return (f"enc {w}x{d} h{h}, pred {p.width}x{p.depth}, batch {cfg.optim.batch_size}, {threads} thr"
            + (", compiled" if cfg.compile else "") + (f", {cfg.precision}" if cfg.precision != "fp32" else ""))


def time_steps(step: Callable[[], object], args, compiled: bool) -> tuple[float, list[float], float, float]:
    """Warm up, then call `step()` for about --seconds (at least --min-steps): (warm-up s, step
    times s, wall s of the timed loop, cores used in it). `step` must synchronise on CUDA."""
    warm, warm_times = time.perf_counter(), []
    # Compiling: the first steps compile (static shapes, then recompiles as stage 1's mask sizes
    # change and dynamic shapes kick in): warm up until a step is close to the fastest seen.
    while len(warm_times) < args.warmup or (compiled and len(warm_times) < 12 and (
            len(warm_times) < 4 or warm_times[-1] > 1.5 * min(warm_times))):
        t = time.perf_counter()
        step()
        warm_times.append(time.perf_counter() - t)
    warm = time.perf_counter() - warm
    times = []
    sync(args.device)
    start, c0 = time.perf_counter(), cpu_seconds()
    while len(times) < args.min_steps or (sum(times) < args.seconds and len(times) < args.max_steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    sync(args.device)
    elapsed = time.perf_counter() - start
    return warm, times, elapsed, (cpu_seconds() - c0) / elapsed


def bench_trainer(make_trainer: Callable[[str], Stage1Trainer | Stage2Trainer], forward: Callable, compiled: bool,
                  per_step: dict[str, int], args, threads: int, peak_before: dict) -> tuple[dict, dict]:
    """Build a trainer (`make_trainer(run_dir)`), count the FLOPs of a step, time its steps and
    re-measure the peak: (peak after, measurements). `per_step`: units per step (stacks, frames...),
    reported as rates `{name: units x steps/s}`."""
    device = args.device
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_train_run_") as run_dir:
            build = time.perf_counter()
            trainer = make_trainer(run_dir)
            build = time.perf_counter() - build
            trained = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in trainer.model.parameters())
            flops = count_step_flops(trainer, forward)  # also the first warm-up step
            # train_step returns float(loss): synchronises on CUDA
            warm, times, elapsed, cores = time_steps(trainer.train_step, args, compiled)
            cuda_peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
            del trainer
            gc.collect()
    finally:
        torch.set_num_threads(old_threads)
    peak_after = matmul_peak(device, args.peak_size, args.peak_repeats, args.peak_dtype)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    steps_per_s = len(times) / elapsed
    achieved = flops["flops_per_step"] * steps_per_s / 1e9
    peak = (peak_before["best"] + peak_after["best"]) / 2
    return peak_after, {
        "params_trained": trained, "params_total": total, "build_s": build, "warmup_s": warm,
        "steps": len(times), "seconds": elapsed, "step_ms_median": 1e3 * statistics.median(times),
        "step_ms_min": 1e3 * min(times), "step_ms_max": 1e3 * max(times), "steps_per_s": steps_per_s,
        **{name: steps_per_s * n for name, n in per_step.items()},
        **flops, "achieved_gflops": achieved, "peak_before": peak_before, "peak_after": peak_after,
        "peak_gflops": peak, "mfu": achieved / peak, "cores_used": cores,
        "best_step_gflops": flops["flops_per_step"] / min(times) / 1e9,
        "max_rss_before_mb": rss_before / 1024, "max_rss_after_mb": rss_after / 1024,
        "max_rss_increase_mb": (rss_after - rss_before) / 1024,
        "cuda_max_memory_allocated_mb": None if cuda_peak is None else cuda_peak / 2 ** 20}


def log_result(r: dict) -> None:
    print(f"  {r['label']}: {r['description']}: {r['steps_per_s']:.2f} steps/s ({r['steps']} steps), "
          f"{r['flops_per_step'] / 1e9:.1f} GFLOP/step, {r['achieved_gflops']:.1f} GFLOP/s, peak {r['peak_gflops']:.0f}, "
          f"MFU {r['mfu']:.1%}, {r['cores_used']:.2f} cores", file=sys.stderr)


def bench_config(label: str, cfg: Stage1Config, data: ReplayDataset, args, threads: int, peak_before: dict) -> tuple[dict, dict]:
    k, batch = data.frame_stack, cfg.optim.batch_size  # the trainer's stacks are the dataset's (K, C, H, W)
    peak_after, m = bench_trainer(
        lambda run_dir: Stage1Trainer(cfg, data, run_dir, val_fraction=0.1, device=args.device, progress=False),
        stage1_forward, cfg.compile, {"stacks_per_s": batch, "frames_per_s": batch * k}, args, threads, peak_before)
    w, d, h = cfg.model.encoder.dims()
    r = {"label": label, "description": describe(cfg, threads), "width": w, "depth": d, "heads": h,
         "pred_width": cfg.model.predictor.width, "pred_depth": cfg.model.predictor.depth, "batch_size": batch,
         "threads": threads, "compile": cfg.compile, "precision": cfg.precision, "frame_stack": k, **m}
    log_result(r)
    return peak_after, r


# ------------------------------------------------------------------------------------- stage 2
def encoder_checkpoint(cfg: Stage1Config, data: ReplayDataset, run_dir: Path, device: str) -> dict:
    """A stage-1 checkpoint for stage 2 to freeze, as the model-based loop hands one over
    (`load_checkpoint(encoder_dir)`): ENCODER_STEPS steps from random init, uncompiled."""
    cfg = copy.deepcopy(cfg)
    cfg.compile, cfg.optim.steps = False, ENCODER_STEPS
    trainer = Stage1Trainer(cfg, data, run_dir, val_fraction=0.1, device=device, progress=False)
    for _ in range(ENCODER_STEPS):
        trainer.train_step()
    trainer.save()
    del trainer
    return load_checkpoint(run_dir)


def describe_stage2(cfg: Stage2Config, clip_len: int, threads: int) -> str:
    m = cfg.model
    return (f"world model {m.width}x{m.depth} h{m.heads}, {m.step_tokens} tokens/step, pool {'x'.join(map(str, m.pool))}, "
            f"clips of {clip_len} (rollout {cfg.rollout_steps}), batch {cfg.optim.batch_size}, {threads} thr"
            + (", compiled" if cfg.compile else "") + (f", {cfg.precision}" if cfg.precision != "fp32" else ""))


def bench_stage2(cfg: Stage2Config, encoder: dict, clip_len: int, val_fraction: float, data: ReplayDataset, args,
                 threads: int, peak_before: dict) -> tuple[dict, dict]:
    """One stage-2 step: the world model on batch_size clips of clip_len cached latents [B, T, M, D]
    (the frozen encoder runs once over the dataset when the trainer is built: in build_s, not in a step)."""
    k, batch = data.frame_stack, cfg.optim.batch_size
    # Each observation is a stack of K frames (consecutive stacks share K-1 of them): frames/s
    # counts frame slots, B x T x K per step, as stage 1 counts stacks x K.
    per_step = {"clips_per_s": batch, "observations_per_s": batch * clip_len, "frames_per_s": batch * clip_len * k}
    peak_after, m = bench_trainer(
        lambda run_dir: Stage2Trainer(cfg, encoder, data, run_dir, clip_len=clip_len, val_fraction=val_fraction,
                                      device=args.device, progress=False),
        stage2_forward, cfg.compile, per_step, args, threads, peak_before)
    wm = cfg.model
    r = {"label": "stage2", "description": describe_stage2(cfg, clip_len, threads), "width": wm.width, "depth": wm.depth,
         "heads": wm.heads, "step_tokens": wm.step_tokens, "pool": list(wm.pool), "batch_size": batch, "clip_len": clip_len,
         "rollout_steps": cfg.rollout_steps, "threads": threads, "compile": cfg.compile, "precision": cfg.precision,
         "frame_stack": k, "encoder": f"stage-1 config '{args.config}' after {ENCODER_STEPS} steps from random init", **m}
    log_result(r)
    return peak_after, r


# ------------------------------------------------------------------------------------- data
def collect_dataset(root: Path, steps: int) -> None:
    card = load_card("breakout")
    venv = make_vector_env(card, 1, asynchronous=False)
    try:
        writer = open_writer(root, card, venv, append=False)
        collect(venv, RandomPolicy(venv.action_space, SEED), writer, steps, seed=SEED, progress=False, policy_name="random")
    finally:
        venv.close()


# ------------------------------------------------------------------------------------- report
def machine(device: str) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    versions = {"python": platform.python_version()}
    for pkg in ("numpy", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2", "fma") if f" {f}" in flags]
    return {"cpu": cpu, "isa": isa, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(), "blas": "MKL" if torch.backends.mkl.is_available() else "other",
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
            "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                              "KMP_BLOCKTIME", "LD_PRELOAD") if k in os.environ},
            "load_avg": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform(), "versions": versions,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join([os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable, *sys.argv])}


def mark(ok: bool | None) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def table(results: list[dict], run_best: float) -> str:
    rows = ["| config | params (trained / all) | GFLOP/step (fwd) | step ms (median) | steps/s | stacks/s | frames/s "
            "| GFLOP/s | peak GFLOP/s | MFU | MFU, best step vs run best | cores used | max RSS MB (+) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ok = r["mfu"] >= TARGETS["mfu"] if r["label"] == "default" and r.get("device", "cpu") == "cpu" else None
        mem = f"{r['max_rss_after_mb']:,.0f} (+{r['max_rss_increase_mb']:,.0f})"
        if r["cuda_max_memory_allocated_mb"] is not None:
            mem += f", CUDA {r['cuda_max_memory_allocated_mb']:,.0f}"
        rows.append(f"| {r['label']}: {r['description']} | {r['params_trained'] / 1e6:.2f}M / {r['params_total'] / 1e6:.2f}M "
                    f"| {r['flops_per_step'] / 1e9:.1f} ({r['forward_flops_per_step'] / 1e9:.1f}) | {r['step_ms_median']:,.0f} "
                    f"| {r['steps_per_s']:.2f} | {r['stacks_per_s']:,.0f} | {r['frames_per_s']:,.0f} | {r['achieved_gflops']:.1f} "
                    f"| {r['peak_gflops']:.0f} | {r['mfu']:.1%}{mark(ok)} | {r['best_step_gflops'] / run_best:.1%} "
                    f"| {r['cores_used']:.2f} | {mem} |")
    return "\n".join(rows)


def table_stage2(r: dict, run_best: float) -> str:
    mem = f"{r['max_rss_after_mb']:,.0f} (+{r['max_rss_increase_mb']:,.0f})"
    if r["cuda_max_memory_allocated_mb"] is not None:
        mem += f", CUDA {r['cuda_max_memory_allocated_mb']:,.0f}"
    # A small model: GFLOP and ms to 3 significant figures, not stage 1's whole numbers.
    return "\n".join([
        "| config | params (trained / all) | GFLOP/step (fwd) | step ms (median) | steps/s | clips/s | frames/s "
        "| GFLOP/s | peak GFLOP/s | MFU | MFU, best step vs run best | cores used | max RSS MB (+) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['label']}: {r['description']} | {r['params_trained'] / 1e6:.2f}M / {r['params_total'] / 1e6:.2f}M "
        f"| {r['flops_per_step'] / 1e9:.3g} ({r['forward_flops_per_step'] / 1e9:.3g}) | {r['step_ms_median']:,.3g} "
        f"| {r['steps_per_s']:.2f} | {r['clips_per_s']:,.0f} | {r['frames_per_s']:,.0f} | {r['achieved_gflops']:.1f} "
        f"| {r['peak_gflops']:.0f} | {r['mfu']:.1%} | {r['best_step_gflops'] / run_best:.1%} | {r['cores_used']:.2f} | {mem} |"])


def contention(results: list[dict], peaks: list[dict], m: dict, device: str) -> str:
    """A warning when other processes took CPU from this run (the numbers are then not the machine's)."""
    if device.startswith("cuda"):
        return ""
    threads = m["torch_threads"]
    low = [f"peak {i}: {p['cores_used']:.2f}" for i, p in enumerate(peaks) if p["cores_used"] < 0.85 * threads]
    low += [f"{r['label']}: {r['cores_used']:.2f}" for r in results if r["cores_used"] < 0.6 * r["threads"]]
    if not low:  # (the load average lags by a minute: it is no test)
        return ""
    return (f"**Shared machine:** load average {m['load_avg'][0]} at start; cores used below the thread count: "
            f"{'; '.join(low)}. Other processes competed for the cores: with the default active OpenMP "
            "wait, a 2-thread step on a busy 2-core machine runs many times slower (each small op waits for a "
            "descheduled thread); compare rows within the run, or rerun on a quiet machine (or OMP_WAIT_POLICY=PASSIVE).\n")


def report(results: list[dict], stage2: dict, peaks: list[dict], m: dict, args, dataset: str) -> str:
    v = m["versions"]
    run_best = max(p["best"] for p in peaks)
    peak_lines = "; ".join(", ".join(f"{n}: {g:.0f}" for n, g in p["gflops"].items()) + f" ({p['cores_used']:.2f} cores)" for p in peaks)
    dtype = str(args.peak_dtype).replace("torch.", "")
    details = "\n".join(f"- {r['label']}: {r['steps']} timed steps in {r['seconds']:.1f} s (step ms min/median/max "
                        f"{r['step_ms_min']:,.0f} / {r['step_ms_median']:,.0f} / {r['step_ms_max']:,.0f}); warm-up {r['warmup_s']:.1f} s; "
                        "FLOPs by op (GFLOP): " + ", ".join(f"{k.removeprefix('aten.')} {f / 1e9:.2f}" for k, f in r["flops_by_op"].items())
                        for r in [*results, stage2])
    return f"""# wmrl stage-1/2 training benchmark ({args.device}{', quick' if args.quick else ''})

{table(results, run_best)}

{contention([*results, stage2], peaks, m, args.device)}Target: MFU ≥ {TARGETS['mfu']:.0%} for the default config on CPU (✓ met, ✗ missed).

- GFLOP/step: one `train_step()` (forward + backward of the JEPA loss over both multiblock masks, the target
  encoder forward), counted by `FlopCounterMode` (matmul, conv and attention FLOPs; elementwise work, AdamW and
  the EMA update are not counted); in brackets the forward alone. Mask sizes are random, so it varies by a few %.
- stacks/s = batch × steps/s; frames/s = stacks/s × K (frames per stack).
- GFLOP/s = GFLOP/step × steps/s. MFU = that ÷ the {dtype} `torch.mm` peak measured right before and after the
  config (mean of the two, each the best of {args.peak_repeats} at n = {', '.join(map(str, args.peak_size))});
  "MFU, best step vs run best": the fastest timed step against the best peak of the run ({run_best:.0f} GFLOP/s),
  both best-of figures, so both taken in the quietest moments of a shared machine.
- cores used: process CPU time ÷ wall time in the timed loop; below the thread count, other processes shared the cores.
- max RSS: `ru_maxrss` after the config, and how much the config raised the process-wide peak.

## Stage-2 training

{table_stage2(stage2, run_best)}

- The `stage2` section of the config, trained by `Stage2Trainer` over a frozen encoder: {stage2['encoder']}
  (random-init weights for timing purposes; the weights do not change the arithmetic). The trainer encodes the
  whole dataset once when it is built ({stage2['build_s']:.1f} s, not timed), so a step runs no encoder.
- GFLOP/step: one `train_step()` (forward + backward of the teacher-forced pass over T − 1 = {stage2['clip_len'] - 1}
  transitions, the {stage2['rollout_steps']}-step rollout and the reward, continuation and value heads, plus the
  value target's forward), counted as for stage 1; in brackets the forward alone (every loss term).
- clips/s = batch × steps/s; frames/s = clips/s × T × K (T = {stage2['clip_len']} observations per clip, each a
  stack of K = {stage2['frame_stack']} frames): frame slots, as stage 1 counts stacks × K. Consecutive stacks share
  K − 1 frames, so the distinct frames are clips/s × (T + K − 1).
- MFU, cores used and max RSS as for stage 1; the peaks are the ones right after the last stage-1 config and
  right after this one.

Matmul peaks in GFLOP/s, in run order (n: GFLOP/s): {peak_lines}

{details}

Dataset: {dataset}

## Machine

- CPU: {m['cpu']} ({', '.join(m['isa'])}), {m['cores']} cores ({m['usable_cores']} usable), torch threads {m['torch_threads']}, {m['blas']}
{'' if m['gpu'] is None else '- GPU: ' + m['gpu'] + chr(10)}- load average at start {m['load_avg']}{'; env ' + str(m['env']) if m['env'] else ''}
- {m['platform']}
- python {v['python']}, numpy {v['numpy']}, torch {v['torch']}
- date: {m['date']}

Reproduce (from the repository root):

    {m['command']}
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="breakout", help="experiment config whose stage1 section is the default and whose stage2 section is benchmarked (default breakout)")
    p.add_argument("--data", type=Path, help="a Breakout replay dataset (default: collect one into a temp dir)")
    p.add_argument("--collect-steps", type=int, help=f"agent steps to collect without --data (default {COLLECT_STEPS})")
    p.add_argument("--variant", action="append", default=[], help="comma-separated key=value overrides of the config (repeatable)")
    p.add_argument("--width", type=int), p.add_argument("--depth", type=int), p.add_argument("--heads", type=int)
    p.add_argument("--batch", type=int, help="with --width/--depth/--heads: one variant")
    p.add_argument("--no-default-variants", action="store_true", help=f"bench only the config (and given variants), not {DEFAULT_VARIANTS}")
    p.add_argument("--threads", type=int, help="torch threads for the peak and every config (default: torch's own)")
    p.add_argument("--compile", action="store_true", help="torch.compile every config, stage 2 too (stage1/stage2.compile: true)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="override stage1/stage2.precision (bf16 only on GPUs)")
    p.add_argument("--seconds", type=float, default=10.0, help="time each config for about this long (default 10)")
    p.add_argument("--min-steps", type=int, default=3), p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the FLOP-counted one (compiled: until steady, >= 4)")
    p.add_argument("--peak-size", type=int, action="append", help="matmul sizes for the peak (default 1024 2048; CUDA 4096 8192)")
    p.add_argument("--peak-repeats", type=int, default=5)
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_COLLECT_STEPS} collected steps, 2 timed steps per config, "
                   f"variants {QUICK_VARIANTS}; writes train_<device>_quick.*")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    if args.quick:
        args.seconds, args.min_steps, args.warmup, args.peak_repeats = 0.0, 2, 1, 3
    args.peak_size = args.peak_size or ([4096, 8192] if cuda else [1024, 2048])
    args.peak_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32  # MFU against the peak of the precision used
    if args.precision == "bf16" and not cuda:
        print("warning: bf16 on CPU: without AVX512-BF16/AMX (e.g. AVX2 only) bf16 matmuls are ~100x slower than fp32",
              file=sys.stderr)

    exp = load_experiment(args.config)
    base, stage2_cfg = exp.stage1, exp.stage2
    for cfg in (base, stage2_cfg):
        if args.precision:
            cfg.precision = args.precision
        cfg.compile = cfg.compile or args.compile
    specs = [("default", {})]
    cli = {k: getattr(args, k) for k in ("width", "depth", "heads", "batch") if getattr(args, k) is not None}
    given = ([cli] if cli else []) + [parse_variant(s) for s in args.variant]
    if not given and not args.no_default_variants:
        given = [parse_variant(s) for s in (QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS)]
    specs += [(",".join(f"{k}={v}" for k, v in g.items()), g) for g in given]

    m = machine(args.device)
    results, peaks = [], []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        if args.data:
            root, dataset = args.data, str(args.data)
        else:
            root, steps = Path(tmp) / "breakout", args.collect_steps or (QUICK_COLLECT_STEPS if args.quick else COLLECT_STEPS)
            t = time.perf_counter()
            collect_dataset(root, steps)
            dataset = f"Breakout, random policy, {steps} agent steps collected into a temp dir in {time.perf_counter() - t:.1f} s"
        data = ReplayDataset(root)
        dataset += f" ({data.num_episodes} episodes, {len(data.frames)} frames, stacks of {data.frame_stack} x {data.frame_shape})"
        print(f"dataset: {dataset}", file=sys.stderr)
        # Made before the first peak, so that stage 2's "before" peak is the one right before it.
        encoder = encoder_checkpoint(base, data, Path(tmp) / "encoder", args.device)
        peak = matmul_peak(args.device, args.peak_size, args.peak_repeats, args.peak_dtype)
        peaks.append(peak)
        print(f"matmul peak: {peak['best']:.0f} GFLOP/s ({torch.get_num_threads()} threads)", file=sys.stderr)
        for label, v in specs:
            cfg = apply_variant(base, v)
            peak, r = bench_config(label, cfg, data, args, v.get("threads", torch.get_num_threads()), peak)
            r["device"] = args.device
            results.append(r), peaks.append(peak)
        peak, stage2 = bench_stage2(stage2_cfg, encoder, exp.data.clip_len, exp.data.val_fraction, data, args,
                                    torch.get_num_threads(), peak)
        stage2["device"] = args.device
        peaks.append(peak)
    text = report(results, stage2, peaks, m, args, dataset)
    print(text)
    stem = f"train_{'cuda' if cuda else 'cpu'}" + ("_quick" if args.quick else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.md").write_text(text)
    payload = {"machine": m, "targets": TARGETS, "dataset": dataset, "peaks": peaks, "results": results, "stage2": stage2,
               "args": {k: (str(v) if isinstance(v, (Path, torch.dtype)) else v) for k, v in vars(args).items()}}
    (args.out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"wrote {args.out_dir / stem}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
