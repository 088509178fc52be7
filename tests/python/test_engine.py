"""The Python module `baton` (python/baton_module.cc): baton::Engine from Python.

Partitioned answers equal whole-model ONNX Runtime's, many Python threads at
once, deadlines, bad inputs refused with the engine's message, futures, stats,
close, and a clean interpreter exit with requests in flight. No sleeps and no
assertions about wall-clock time.
"""

import concurrent.futures
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import weakref

import numpy as np
import pytest

import baton
from conftest import MODELS, assert_outputs_equal, random_inputs


# ---- 1. partitioned == whole-model ONNX Runtime ---------------------------------


def test_describes_its_models(whole):
    assert whole.models == ["cam", "text"]
    assert whole.inputs("cam") == [("input", "float32", [1, 3, 64, 64])]
    (_, type_name, shape), = whole.outputs("cam")
    assert (type_name, len(shape)) == ("float32", 2)
    assert [t for _, t, _ in whole.inputs("text")] == ["int64"]
    assert whole.partitions("cam") == 1
    assert whole.device("cam") == "local"
    assert whole.labels("cam") == []
    devices = whole.stats()["devices"]
    assert list(devices) == ["local"]
    assert devices["local"]["remote"] is False and devices["local"]["reachable"] is True
    assert (devices["local"]["lost"], devices["local"]["returned"]) == (0, 0)
    assert "cam" in repr(whole)


@pytest.mark.parametrize("model", ["cam", "text"])
def test_partitioned_answers_equal_whole_model_ort(whole, partitioned, model_dir, model):
    assert partitioned.partitions(model) >= 2, "the balanced policy should cut the model in two"
    assert whole.partitions(model) == 1
    path = model_dir / (MODELS[model] + ".onnx")
    for seed in (1, 2, 3):
        x = random_inputs(whole, model, seed)
        # ONNX Runtime itself, outside any engine: the reference.
        want = baton.run_whole_model(path, x)
        assert sorted(want) == sorted(name for name, _, _ in whole.outputs(model))
        got = partitioned.infer(model, x)
        assert_outputs_equal(got, want)
        # The engine's one-partition plan answers the same.
        assert_outputs_equal(whole.infer(model, x), want)
        for name, type_name, shape in whole.outputs(model):
            assert got[name].dtype == np.dtype(type_name)
            assert list(got[name].shape) == shape


def test_run_whole_model_says_what_is_wrong(model_dir, tmp_path):
    path = model_dir / "squeezenet.onnx"
    with pytest.raises(baton.InvalidArgumentError, match="input 'input' is missing"):
        baton.run_whole_model(path, {})
    with pytest.raises(baton.NotFoundError, match="nothing.onnx' does not exist"):
        baton.run_whole_model(tmp_path / "nothing.onnx", {})
    with pytest.raises(baton.InvalidArgumentError, match=r"input 'input' expects float32\[1,3,64,64\] but got float32\[1,2\]"):
        baton.run_whole_model(path, {"input": np.zeros((1, 2), dtype=np.float32)})


def test_outputs_are_independent_arrays(whole):
    x = random_inputs(whole, "cam", 4)
    a = whole.infer("cam", x)["logits"]
    b = whole.infer("cam", x)["logits"]
    want = b.copy()
    a += 1  # writable, and not shared with another answer
    np.testing.assert_array_equal(b, want)


def test_non_contiguous_inputs_are_laid_out_not_cast(whole):
    x = random_inputs(whole, "cam", 5)["input"]
    want = whole.infer("cam", {"input": x})
    # The same values as a Fortran-ordered array and as a strided view.
    fortran = np.asfortranarray(x)
    assert not fortran.flags.c_contiguous
    assert_outputs_equal(whole.infer("cam", {"input": fortran}), want, tol=0)
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=np.float32)
    wide[..., ::2] = x
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    assert_outputs_equal(whole.infer("cam", {"input": view}), want, tol=0)
    read_only = x.copy()
    read_only.setflags(write=False)
    assert_outputs_equal(whole.infer("cam", {"input": read_only}), want, tol=0)


# ---- 2. many Python threads at once ---------------------------------------------


def test_many_python_threads_at_once(whole, partitioned):
    cases = []
    for seed in range(4):
        model = "cam" if seed % 2 == 0 else "text"
        x = random_inputs(whole, model, 100 + seed)
        cases.append((model, x, whole.infer(model, x)))
    before = partitioned.stats()["models"]
    threads_n, each = 8, 20
    barrier = threading.Barrier(threads_n)
    failures, good = [], []

    def worker(t):
        barrier.wait()
        for i in range(each):
            model, x, want = cases[(t + i) % len(cases)]
            try:
                assert_outputs_equal(partitioned.infer(model, x), want)
                good.append(1)
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(good) == threads_n * each
    after = partitioned.stats()["models"]
    done = sum(after[m]["completed"] - before[m]["completed"] for m in after)
    assert done == threads_n * each


# ---- 3. deadlines -------------------------------------------------------------------


def test_a_tiny_deadline_is_exceeded(whole):
    x = random_inputs(whole, "cam", 1)
    before = whole.stats()["models"]["cam"]
    with pytest.raises(baton.Error) as e:
        whole.infer("cam", x, deadline_ms=0.000001)
    assert e.value.code == "DEADLINE_EXCEEDED"
    assert isinstance(e.value, baton.DeadlineExceededError)
    assert isinstance(e.value, RuntimeError)
    fut = whole.infer_async("cam", x, deadline_ms=0.000001)
    assert fut.exception().code == "DEADLINE_EXCEEDED"
    after = whole.stats()["models"]["cam"]
    assert after["deadline_exceeded"] - before["deadline_exceeded"] == 2
    # A generous deadline, a priority and an SLO are carried out.
    out = whole.infer("cam", x, deadline_ms=60000, priority=3, slo_ms=60000.0)
    assert_outputs_equal(out, whole.infer("cam", x))
    final = whole.stats()["models"]["cam"]
    assert final["with_slo"] - after["with_slo"] == 1
    assert final["slo_met"] - after["slo_met"] == 1
    # Without batching every completed request is an execution of size 1.
    assert final["executions"] == final["completed"]
    assert final["batch_sizes"][1]["executions"] == final["completed"]
    assert final["batch_sizes"][1]["compute_s"] > 0


def test_a_cancel_token_cancels_its_requests(config, cache_dir):
    with baton.Engine(config("balanced", stages=2), no_profile=True, cache_dir=cache_dir) as eng:
        x = random_inputs(eng, "cam", 3)
        token = baton.CancelToken()
        assert not token.cancelled and "live" in repr(token)
        # Many requests on one token, cancelled while most still wait: each is
        # answered once, OK or CANCELLED, and the counts add up.
        futures = [eng.infer_async("cam", x, cancel=token) for _ in range(40)]
        token.cancel()
        token.cancel()  # again: nothing more
        assert token.cancelled and "cancelled" in repr(token)
        codes = []
        for f in futures:
            e = f.exception(timeout=60)
            codes.append("OK" if e is None else e.code)
        assert set(codes) <= {"OK", "CANCELLED"}, codes
        assert "CANCELLED" in codes
        cam = eng.stats()["models"]["cam"]
        assert cam["cancelled"] == codes.count("CANCELLED")
        assert cam["completed"] == codes.count("OK")
        # A cancelled token refuses at once, in infer() and infer_async().
        with pytest.raises(baton.Error) as e:
            eng.infer("cam", x, cancel=token)
        assert e.value.code == "CANCELLED" and "before it started" in str(e.value)
        assert eng.infer_async("cam", x, cancel=token).exception(timeout=60).code == "CANCELLED"
        # Other requests are not affected.
        assert_outputs_equal(eng.infer("cam", x, cancel=baton.CancelToken()), eng.infer("cam", x))


def test_ctrl_c_cancels_the_request_infer_waits_for(config, model_dir, cache_dir):
    """Ctrl-C reaches a caller blocked in infer(): its request is cancelled (the
    run stopped), KeyboardInterrupt is raised, and the engine serves on."""
    spin = model_dir / "spin.onnx"
    spin.write_bytes(baton._spin_model())
    cfg = config("whole", pus=2)
    cfg["models"].append({"name": "spin", "path": str(spin), "execution_timeout_ms": 600000})
    import signal

    with baton.Engine(cfg, no_profile=True, cache_dir=cache_dir) as eng:
        x = {"x": np.zeros([1], dtype=np.float32)}
        token = baton.CancelToken()  # a caller's token stays usable
        running = threading.Event()
        gave_up = threading.Event()

        def interrupt_once_running():
            # SIGINT once the request is in flight (bounded: 60 s).
            for _ in range(6000):
                if gave_up.is_set():
                    return
                if eng.stats()["in_flight"] == 1:
                    running.set()
                    os.kill(os.getpid(), signal.SIGINT)
                    return
                gave_up.wait(0.01)

        watcher = threading.Thread(target=interrupt_once_running)
        watcher.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                eng.infer("spin", x, cancel=token)  # runs for good unless stopped
        finally:
            gave_up.set()
            watcher.join()
        assert running.is_set()
        assert not token.cancelled
        assert eng.stats()["models"]["spin"]["cancelled"] == 1
        cam = random_inputs(eng, "cam", 1)
        assert_outputs_equal(eng.infer("cam", cam, cancel=token), eng.infer("cam", cam))


def test_ctrl_c_stops_an_engine_that_is_opening(config, tmp_path):
    """Ctrl-C reaches a caller blocked in Engine() while it profiles: the
    opening ends at its next step, KeyboardInterrupt is raised, and the next
    Engine() opens from what was measured."""
    import signal

    lines = []

    def progress(line):
        lines.append(line)
        if line.startswith("profiling into"):
            os.kill(os.getpid(), signal.SIGINT)  # seen by the caller's wait, within 50 ms

    cache = str(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        baton.Engine(config("balanced"), cache_dir=cache, progress=progress)
    assert any(line.startswith("profiling into") for line in lines), lines
    assert "ready" not in lines
    profiles = os.listdir(os.path.join(cache, "profiles"))
    assert len(profiles) == 1, profiles

    with baton.Engine(config("balanced"), cache_dir=cache) as eng:
        x = random_inputs(eng, "cam", 1)
        assert_outputs_equal(eng.infer("cam", x), eng.infer("cam", x))


def test_bad_option_values_raise_value_error(whole):
    x = random_inputs(whole, "cam", 1)
    for kw in ({"deadline_ms": -1}, {"deadline_ms": float("nan")}, {"slo_ms": float("inf")}):
        with pytest.raises(ValueError):
            whole.infer("cam", x, **kw)


# ---- 4. bad inputs --------------------------------------------------------------------


def expect_error(code, words, fn, *args, **kw):
    with pytest.raises(baton.Error) as e:
        fn(*args, **kw)
    assert e.value.code == code, str(e.value)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    return e.value


def test_bad_inputs_raise_with_the_engines_message(model_dir, config, cache_dir):
    with baton.Engine(config("whole", pus=1), no_profile=True, cache_dir=cache_dir) as eng:
        x = random_inputs(eng, "cam", 1)["input"]
        e = expect_error("NOT_FOUND", ["camera", "cam", "text"], eng.infer, "camera", {"input": x})
        assert isinstance(e, baton.NotFoundError)
        expect_error("NOT_FOUND", ["camera"], eng.inputs, "camera")
        e = expect_error("INVALID_ARGUMENT", ["input", "missing", "float32"], eng.infer, "cam", {})
        assert isinstance(e, baton.InvalidArgumentError)
        expect_error("INVALID_ARGUMENT", ["bogus", "input"], eng.infer, "cam",
                     {"input": x, "bogus": np.zeros(1, np.float32)})
        expect_error("INVALID_ARGUMENT", ["input", "float64", "expected float32"], eng.infer, "cam",
                     {"input": x.astype(np.float64)})
        expect_error("INVALID_ARGUMENT", ["input", "int64", "expected float32"], eng.infer, "cam",
                     {"input": np.zeros(x.shape, np.int64)})
        expect_error("INVALID_ARGUMENT", ["input", "shape", "expected"], eng.infer, "cam",
                     {"input": np.zeros(x.shape[:-1] + (x.shape[-1] + 1,), np.float32)})
        # Refused here: numpy dtypes without an ONNX element type.
        expect_error("INVALID_ARGUMENT", ["input", "datetime64"], eng.infer, "cam",
                     {"input": np.zeros(x.shape, "datetime64[s]")})
        expect_error("INVALID_ARGUMENT", ["input", "byte order"], eng.infer, "cam", {"input": x.astype(">f4")})
        with pytest.raises(TypeError):
            eng.infer("cam", [x])
        # The future form answers with the same errors.
        err = eng.infer_async("cam", {}).exception()
        assert isinstance(err, baton.InvalidArgumentError) and "missing" in str(err)
        assert eng.infer_async("camera", {"input": x}).exception().code == "NOT_FOUND"
        stats = eng.stats()["models"]["cam"]
        assert stats["invalid"] == 6  # missing, extra, 2 dtypes, shape, async missing
        assert stats["completed"] == 0
        assert all(pu["runs"] == 0 for pu in eng.stats()["pus"].values())


def test_open_errors_raise(model_dir, config, cache_dir, tmp_path):
    with pytest.raises(baton.Error) as e:
        baton.Engine(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in str(e.value)
    bad = config("whole")
    bad["models"][0]["colour"] = "red"
    with pytest.raises(baton.Error) as e:
        baton.Engine(bad, no_profile=True, cache_dir=cache_dir)
    assert e.value.code == "INVALID_ARGUMENT"
    assert "colour" in str(e.value)
    missing = config("whole")
    missing["models"][0]["path"] = "missing.onnx"
    with pytest.raises(baton.Error) as e:
        baton.Engine(missing, no_profile=True, cache_dir=cache_dir)
    assert "missing.onnx" in str(e.value)
    with pytest.raises(TypeError):
        baton.Engine(42)


def test_models_opens_only_the_models_named(config, cache_dir):
    with baton.Engine(config("whole", pus=1), no_profile=True, cache_dir=cache_dir, models=["text"]) as eng:
        assert eng.models == ["text"]
    with pytest.raises(baton.InvalidArgumentError) as e:
        baton.Engine(config("whole", pus=1), no_profile=True, cache_dir=cache_dir, models=["cam", "nope"])
    assert "model 'nope' is not in the config; its models: [cam, text]" in str(e.value)
    with pytest.raises(TypeError):
        baton.Engine(config("whole", pus=1), no_profile=True, cache_dir=cache_dir, models="cam")
    with pytest.raises(ValueError):
        baton.Engine(config("whole", pus=1), no_profile=True, cache_dir=cache_dir, models=[])


def test_progress_is_told_the_start_up_steps(config, cache_dir):
    said = []
    with baton.Engine(config("whole", pus=1), no_profile=True, cache_dir=cache_dir, progress=said.append) as eng:
        assert eng.models
    assert said and said[-1] == "ready"
    assert all(isinstance(s, str) for s in said)


# ---- 5. futures -------------------------------------------------------------------------


def test_infer_async_future_equals_infer(whole, partitioned):
    for eng in (whole, partitioned):
        xs = [random_inputs(eng, m, 20 + i) for i, m in enumerate(["cam", "text", "cam", "text"])]
        models = ["cam", "text", "cam", "text"]
        futures = [eng.infer_async(m, x) for m, x in zip(models, xs)]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        for m, x, f in zip(models, xs, futures):
            assert_outputs_equal(f.result(), eng.infer(m, x), tol=0)
        assert not futures[0].cancel()  # running or done: a request cannot be withdrawn


def test_future_callbacks_and_wait(whole):
    x = random_inputs(whole, "cam", 7)
    want = whole.infer("cam", x)
    seen = []
    futures = [whole.infer_async("cam", x, priority=1) for _ in range(6)]
    for f in futures:
        f.add_done_callback(lambda f: seen.append(f.result()["logits"].shape))
    done, not_done = concurrent.futures.wait(futures)
    assert not not_done
    for f in futures:
        assert_outputs_equal(f.result(), want, tol=0)
    assert len(seen) == 6


def test_async_inputs_are_kept_alive_then_released(config, cache_dir):
    eng = baton.Engine(config("balanced", stages=2), no_profile=True, cache_dir=cache_dir)
    x = random_inputs(eng, "cam", 8)["input"]
    want = eng.infer("cam", {"input": x})
    copy = x.copy()
    watch = weakref.ref(copy)
    fut = eng.infer_async("cam", {"input": copy})
    del copy  # the request holds the array now
    assert_outputs_equal(fut.result(), want, tol=0)
    eng.close()  # everything answered and released
    gc.collect()
    assert watch() is None


# ---- 6. stats ----------------------------------------------------------------------------


def test_stats_count_completed_requests(config, cache_dir):
    with baton.Engine(config("balanced", stages=2), no_profile=True, cache_dir=cache_dir) as eng:
        x = random_inputs(eng, "cam", 9)
        for _ in range(3):
            eng.infer("cam", x)
        eng.infer_async("cam", x).result()
        eng.infer("text", random_inputs(eng, "text", 9))
        s = eng.stats()
        assert set(s) == {"uptime_s", "in_flight", "models", "pus", "devices"}
        assert list(s["models"]) == ["cam", "text"]
        cam = s["models"]["cam"]
        assert cam["submitted"] == 4 and cam["completed"] == 4
        assert cam["failed"] == cam["invalid"] == cam["deadline_exceeded"] == cam["rejected"] == cam["cancelled"] == 0
        assert s["models"]["text"]["completed"] == 1
        lat = cam["latency"]
        assert set(lat) == {"p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"}
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert lat["mean_ms"] > 0
        assert list(s["pus"]) == ["cpu0", "cpu1"]
        assert sum(pu["runs"] for pu in s["pus"].values()) >= 5 * 2  # 5 requests x 2 partitions
        for pu in s["pus"].values():
            assert pu["kind"] == "cpu" and pu["device"] == "local"
            assert pu["busy_s"] >= 0 and pu["utilization"] >= 0
            assert 0 <= pu["run_cpu_s"] <= pu["busy_s"] * 1.05 + 0.01
        assert s["uptime_s"] > 0
        assert isinstance(s["in_flight"], int)


def test_write_trace_writes_the_runs(config, cache_dir, tmp_path, whole):
    with pytest.raises(baton.FailedPreconditionError, match="trace"):
        whole.write_trace(tmp_path / "none.json")
    with baton.Engine(config("balanced", stages=2), no_profile=True, cache_dir=cache_dir, trace=True) as eng:
        x = random_inputs(eng, "cam", 3)
        for _ in range(2):
            eng.infer("cam", x)
        path = tmp_path / "engine.trace.json"
        written = eng.write_trace(path)
        assert set(written) == {"runs", "dropped_events"}
        assert written["runs"] >= 2 and written["dropped_events"] == 0
        with open(path) as f:
            events = json.load(f)["traceEvents"]
        assert sum(1 for e in events if e["ph"] == "X") == written["runs"]
        assert {e["args"]["model"] for e in events if e["ph"] == "X"} == {"cam"}


# ---- 7. close --------------------------------------------------------------------------


def test_use_after_close_raises(config, cache_dir):
    with baton.Engine(config("whole", pus=1), no_profile=True, cache_dir=cache_dir) as eng:
        x = random_inputs(eng, "cam", 2)
        futures = [eng.infer_async("cam", x) for _ in range(4)]
        assert not eng.closed
    assert eng.closed
    for f in futures:
        assert f.done(), "close returned before an answer"
        f.result()
    e = expect_error("FAILED_PRECONDITION", ["closed"], eng.infer, "cam", x)
    assert isinstance(e, baton.FailedPreconditionError)
    assert eng.infer_async("cam", x).exception().code == "FAILED_PRECONDITION"
    eng.close()  # idempotent
    assert eng.stats()["models"]["cam"]["completed"] == 4
    assert eng.models == ["cam", "text"]


def test_error_class_hierarchy():
    assert issubclass(baton.Error, RuntimeError)
    for cls in (baton.InvalidArgumentError, baton.NotFoundError, baton.DeadlineExceededError,
                baton.ResourceExhaustedError, baton.FailedPreconditionError, baton.UnavailableError):
        assert issubclass(cls, baton.Error)
    e = baton.NotFoundError("no model 'x'")
    assert e.code == "NOT_FOUND" and str(e) == "no model 'x'"
    assert baton.Error("m", "INTERNAL").code == "INTERNAL"


def test_interpreter_exits_cleanly_with_requests_in_flight(config, cache_dir, tmp_path):
    # Engines left open (and futures left unanswered) when the interpreter
    # exits are closed by the module's atexit hook, while Python can still
    # answer their futures: the process must exit 0 without hanging.
    script = textwrap.dedent("""
        import sys, numpy as np, baton
        cfg, cache = eval(sys.argv[1]), sys.argv[2]
        eng = baton.Engine(cfg, no_profile=True, cache_dir=cache)
        x = np.random.default_rng(0).standard_normal([1, 3, 64, 64]).astype(np.float32)
        futures = [eng.infer_async("cam", {"input": x}) for _ in range(32)]
        futures[0].add_done_callback(lambda f: f.result())
        print("submitted", flush=True)
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(baton.__file__)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    r = subprocess.run([sys.executable, "-c", script, repr(config("balanced", stages=2)), cache_dir],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "submitted" in r.stdout
    assert "Traceback" not in r.stderr, r.stderr
