"""cv2.resize reference for the Rust image tests.

Usage: resize_opencv.py DIR
Reads DIR/img.bin (float32, row-major) and DIR/cases.json
({"width": w, "height": h, "cases": [{"width": .., "height": .., "interp": "linear"|"area"}]}),
writes DIR/out_{k}.bin with cv2.resize of the image for each case.
"""
import json
import sys

import cv2
import numpy as np


def main():
    d = sys.argv[1]
    spec = json.load(open(f"{d}/cases.json"))
    img = np.fromfile(f"{d}/img.bin", dtype="<f4").reshape(spec["height"], spec["width"])
    modes = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}
    for k, case in enumerate(spec["cases"]):
        out = cv2.resize(img, (case["width"], case["height"]), interpolation=modes[case["interp"]])
        out.astype("<f4").tofile(f"{d}/out_{k}.bin")


if __name__ == "__main__":
    main()
