"""OpenCV's DualTVL1 on the pairs written by `mer bench-flow` / the reference tests.

Usage: tvl1_opencv.py PAIRS_DIR N OUT_DIR
Reads PAIRS_DIR/a_{i}.png and b_{i}.png (8-bit gray), runs cv2.optflow.DualTVL1OpticalFlow with
its defaults on one thread, writes OUT_DIR/opencv_{i}.flo and OUT_DIR/opencv_times.json
(seconds per pair, I/O excluded).
"""
import json
import sys
import time

import cv2
import numpy as np


def write_flo(path, flow):
    h, w = flow.shape[:2]
    with open(path, "wb") as f:
        np.array([202021.25], np.float32).tofile(f)
        np.array([w, h], np.int32).tofile(f)
        flow.astype(np.float32).tofile(f)


def main():
    pairs, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cv2.setNumThreads(1)
    times = []
    for i in range(n):
        a = cv2.imread(f"{pairs}/a_{i}.png", cv2.IMREAD_GRAYSCALE)
        b = cv2.imread(f"{pairs}/b_{i}.png", cv2.IMREAD_GRAYSCALE)
        if a is None or b is None:
            sys.exit(f"cannot read pair {i} in {pairs}")
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        start = time.perf_counter()
        flow = tvl1.calc(a, b, None)
        times.append(time.perf_counter() - start)
        write_flo(f"{out}/opencv_{i}.flo", flow)
    with open(f"{out}/opencv_times.json", "w") as f:
        json.dump({"seconds": times, "opencv": cv2.__version__}, f)


if __name__ == "__main__":
    main()
