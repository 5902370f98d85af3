"""Training and inference throughput of the PyTorch SKD-TSTSAN (skd_tstsan.py beside this file),
with the official losses and optimiser, for comparison with `mer bench-train`.

Usage: bench_skd_tstsan.py [--batch 16] [--iters 10] [--warmup 2] [--device cpu|cuda]
Prints one JSON object with the same fields as `mer bench-train`.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from skd_tstsan import SKD_TSTSAN  # noqa: E402


def focal(logits, y, w, gamma=2.0):
    logp = F.log_softmax(logits, dim=-1)
    return F.nll_loss((1 - logp.exp()) ** gamma * logp, y, weight=w)


def kd(student, teacher, t=3.0):
    q = F.softmax(teacher.detach() / t, dim=-1)
    return F.kl_div(F.log_softmax(student / t, dim=-1), q, reduction="batchmean") * t * t


def feat(student, teacher):
    teacher = teacher.detach()
    mask = ((student > 0) | (teacher > 0)).float()
    return ((student - teacher) ** 2 * mask).sum()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = SKD_TSTSAN(5, 2.0).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=5e-4)
    x = torch.rand(a.batch, 38, 48, 48, device=dev)
    y = torch.arange(a.batch, device=dev) % 5
    w = torch.full((5,), 0.2, device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step():
        model.train()
        z, z1, z2, f, f1, f2 = model(x)
        loss = focal(z, y, w) + 0.9 * (focal(z1, y, w) + focal(z2, y, w)) + 0.1 * (kd(z1, z) + kd(z2, z)) + 1e-6 * (feat(f1, f) + feat(f2, f))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(a.iters):
        step()
    sync()
    train = (time.perf_counter() - t) / a.iters
    model.eval()
    with torch.no_grad():
        for _ in range(a.warmup):
            model(x)
        sync()
        t = time.perf_counter()
        for _ in range(a.iters):
            model(x)
        sync()
        infer = (time.perf_counter() - t) / a.iters
    print(json.dumps({
        "implementation": "pytorch " + torch.__version__,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "batch": a.batch,
        "iterations": a.iters,
        "train_ms_per_iteration": train * 1e3,
        "train_samples_per_s": a.batch / train,
        "infer_ms_per_batch": infer * 1e3,
        "infer_samples_per_s": a.batch / infer,
    }, indent=2))


if __name__ == "__main__":
    main()
