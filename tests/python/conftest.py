"""Fixtures of the Python module's tests (ctest: python_engine_test).

The module is found on PYTHONPATH (ctest sets it to <build>/python), else in
$BATON_TEST_BUILD_DIR/python. The models are small variants of baton's zoo
(baton._zoo_model), written once per session into a temporary folder; the
engines plan without profiling, so nothing here is measured or timed.
"""

import os
import sys

import numpy as np
import pytest

try:
    import baton
except ImportError as e:  # pragma: no cover - a clear message instead of a collection error
    build = os.environ.get("BATON_TEST_BUILD_DIR")
    if build and os.path.isdir(os.path.join(build, "python")):
        sys.path.insert(0, os.path.join(build, "python"))
        import baton
    else:
        raise ImportError(
            "cannot import the baton module (%s): build the target baton_python and put <build>/python on "
            "PYTHONPATH, or set BATON_TEST_BUILD_DIR=<build>" % e
        ) from e

# name in the engine -> zoo model (small variant). squeezenet: one float32
# input; transformer: int64 token ids, two outputs.
MODELS = {"cam": "squeezenet", "text": "transformer"}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for zoo_name in sorted(set(MODELS.values())):
        (d / (zoo_name + ".onnx")).write_bytes(baton._zoo_model(zoo_name, small=True))
    return d


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def make_config(model_dir, high_level, stages=None, pus=2):
    """A config dict: `pus` one-thread CPU PUs, every model of MODELS by absolute path."""
    policy = {"high_level": high_level}
    if stages is not None:
        policy["stages"] = stages
    return {
        "devices": [{
            "name": "local",
            "pus": [{"name": "cpu%d" % i, "kind": "cpu", "threads": 1} for i in range(pus)],
        }],
        "models": [{"name": name, "path": str(model_dir / (zoo + ".onnx"))} for name, zoo in MODELS.items()],
        "policy": policy,
    }


@pytest.fixture(scope="session")
def config(model_dir):
    return lambda high_level, **kw: make_config(model_dir, high_level, **kw)


@pytest.fixture(scope="session")
def whole(config, cache_dir):
    """Each model in one ONNX Runtime session on one PU: whole-model ONNX Runtime."""
    with baton.Engine(config("whole", pus=1), no_profile=True, cache_dir=cache_dir) as eng:
        yield eng


@pytest.fixture(scope="session")
def partitioned(model_dir, cache_dir):
    """Each model cut into two pipeline stages over two CPU PUs, opened from a YAML file."""
    path = model_dir / "partitioned.yaml"
    # Relative model paths resolve against the file's folder.
    lines = ["devices:", "  - name: local", "    pus:"]
    lines += ["      - {name: cpu%d, kind: cpu, threads: 1}" % i for i in range(2)]
    lines += ["models:"]
    lines += ["  - {name: %s, path: %s.onnx}" % (name, zoo) for name, zoo in MODELS.items()]
    lines += ["policy: {high_level: balanced, stages: 2}", ""]
    path.write_text("\n".join(lines))
    with baton.Engine(str(path), no_profile=True, cache_dir=cache_dir) as eng:
        yield eng


def random_inputs(eng, model, seed):
    """Inputs of `model` from a seeded generator: floats ~ N(0, 1), integers (token ids) in [0, 8)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, type_name, shape in eng.inputs(model):
        shape = [1 if d < 0 else d for d in shape]
        if type_name.startswith("float"):
            out[name] = rng.standard_normal(shape).astype(type_name)
        else:
            out[name] = rng.integers(0, 8, size=shape).astype(type_name)
    return out


def assert_outputs_equal(got, want, tol=1e-5):
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype, name
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=name)
