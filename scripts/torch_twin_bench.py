#!/usr/bin/env python3
"""PyTorch twin of `xray-dp bench` for any xray-dp model: the same network (rebuilt from an xray-dp
checkpoint by scripts/to_torch.py, so it is the same architecture and the same initial weights), the
same random-data training step (forward, BCE with logits, backward, Adam), timed the same way (median
step time over --steps after 5 warm-up steps). Used by scripts/bench_vs_torch.sh with MODEL=...

usage: torch_twin_bench.py --xray-dp BIN --model PRESET [--threads 2] [--batch 32] [--size 128]
                           [--steps 30] [--flops-per-image F] [--json]
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import to_torch  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--xray-dp", required=True); ap.add_argument("--model", default="default")
ap.add_argument("--threads", type=int, default=2); ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--size", type=int, default=128); ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--flops-per-image", type=float, default=0.0); ap.add_argument("--json", action="store_true")
a = ap.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(0)
with tempfile.TemporaryDirectory() as tmp:
    data, run = os.path.join(tmp, "d.h5"), os.path.join(tmp, "run")
    subprocess.run([a.xray_dp, "synth", data, "--n", "100", "--size", str(a.size)], check=True, capture_output=True)
    subprocess.run([a.xray_dp, "train", "--data", data, "--model", a.model, "--max-steps", "0", "--out", run,
                    "--quiet", "--threads", "1"], check=True, capture_output=True)
    m = to_torch.load(os.path.join(run, "last.h5"))
m.train()
opt = torch.optim.Adam(m.parameters(), 1e-3); lossf = nn.BCEWithLogitsLoss()
x = torch.rand(a.batch, 1, a.size, a.size); y = (torch.rand(a.batch, 1) > 0.5).float()
def step():
    opt.zero_grad(); lossf(m(x).reshape(a.batch, 1), y).backward(); opt.step()
for _ in range(5): step()
times = []
for _ in range(a.steps):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
med = float(np.median(times)); ips = a.batch / med
out = dict(images_per_s=ips, step_ms=med * 1e3, gflops=ips * a.flops_per_image / 1e9, threads=a.threads,
           batch=a.batch, size=a.size, model=a.model, torch=torch.__version__,
           peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(out) if a.json else " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items()))
