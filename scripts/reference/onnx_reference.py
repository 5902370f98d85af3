"""onnx + onnxruntime reference for exported models.

Usage:
  onnx_reference.py check MODEL.onnx INPUT.npy OUTPUT.npy [--threads N]
      onnx.checker (full check, shape inference included), then onnxruntime's CPU logits for
      INPUT (float32, N x C x H x W) written to OUTPUT. Prints a JSON line with the opset.
  onnx_reference.py bench MODEL.onnx --batch B [--threads N] [--iters K] [--warmup W]
      Latency of onnxruntime on random inputs; prints JSON with the median and all times (ms).
"""
import argparse
import json
import time

import numpy as np
import onnx
import onnxruntime as ort


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def check(args):
    model = onnx.load(args.model)
    onnx.checker.check_model(model, full_check=True)
    sess = session(args.model, args.threads)
    x = np.load(args.input).astype(np.float32)
    (logits,) = sess.run(None, {sess.get_inputs()[0].name: x})
    np.save(args.output, logits.astype(np.float32))
    opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    print(json.dumps({"checker": "passed", "opset": opset[0] if opset else None, "ir_version": model.ir_version}))


def bench(args):
    sess = session(args.model, args.threads)
    inp = sess.get_inputs()[0]
    shape = [args.batch] + [int(d) for d in inp.shape[1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(args.warmup):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({
        "runtime": f"onnxruntime {ort.__version__}",
        "batch": args.batch,
        "threads": args.threads,
        "median_ms": float(np.median(times)),
        "times_ms": times,
    }))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("model")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--threads", type=int, default=1)
    b = sub.add_parser("bench")
    b.add_argument("model")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--iters", type=int, default=20)
    b.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    check(args) if args.cmd == "check" else bench(args)


if __name__ == "__main__":
    main()
