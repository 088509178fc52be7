#!/usr/bin/env python3
"""Per-request overhead of the Python module over C++ Engine::Infer (issue
target: <= 40 us). Alternates, ROUNDS times: a run of bench/engine_bench (C++
Engine::Infer on float32[1,64], median us/call over its rounds), then the same
model and engine settings through baton.Engine.infer in this process. Prints
the medians and their difference.

  PYTHONPATH=build/release/python /usr/bin/python3 bench/engine_py_bench.py build/release/bench/engine_bench [ROUNDS]
"""
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import baton


def main():
    exe = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    calls = 2000
    cpp_us, py_us = [], []
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([exe, "--keep", d, "--rounds", "1", "--calls", "10"], check=True, capture_output=True)
        config = {
            "devices": [{"name": "local", "pus": [{"name": "cpu0", "kind": "cpu", "threads": 1}]}],
            "models": [{"name": "affine", "path": d + "/affine.onnx"}],
            "policy": {"high_level": "whole", "low_level": "share"},
        }
        x = np.full((1, 64), 0.5, dtype=np.float32)
        with baton.Engine(config, no_profile=True, cache_dir=d + "/cache") as eng:
            for _ in range(200):
                eng.infer("affine", {"x": x})
            for _ in range(rounds):
                out = subprocess.run([exe, "--rounds", "3", "--calls", str(calls)], check=True,
                                     capture_output=True, text=True).stdout
                cpp_us.append(float(re.search(r"Engine::Infer.*median ([0-9.]+) us/call", out).group(1)))
                start = time.perf_counter()
                for _ in range(calls):
                    eng.infer("affine", {"x": x})
                py_us.append((time.perf_counter() - start) / calls * 1e6)
    c, p = statistics.median(cpp_us), statistics.median(py_us)
    print("engine_py_bench: float32[1,64] affine model, %d alternating rounds x %d calls" % (rounds, calls))
    print("  C++ Engine::Infer      median %.2f us/call" % c)
    print("  Python Engine.infer    median %.2f us/call" % p)
    print("  Python over C++        %.2f us/call (target <= 40)" % (p - c))


if __name__ == "__main__":
    main()
