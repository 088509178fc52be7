// The Python module `baton`: baton::Engine (baton/baton.h) for Python.
//
//   import baton, numpy as np
//   with baton.Engine("models.yaml") as eng:            # or a dict; plan=, profile=, cache_dir=, ...
//       eng.models                                      # ["camera", ...]
//       eng.inputs("camera")                            # [("input", "float32", [1, 3, 224, 224])]
//       out = eng.infer("camera", {"input": x}, deadline_ms=50, priority=1)   # {"output": ndarray}
//       fut = eng.infer_async("camera", {"input": x})  # concurrent.futures.Future
//       eng.stats()
//
// Errors are raised as baton.Error (a RuntimeError) carrying baton's message,
// with `code` the status code's name ("INVALID_ARGUMENT", ...); each code has
// its own subclass (baton.InvalidArgumentError, baton.DeadlineExceededError, ...).
//
// The GIL:
//  * it is released while the engine opens, while a request is submitted,
//    runs and is waited for, while stats are gathered, and while close drains;
//  * baton's threads (dispatcher, PU workers) take it (py::gil_scoped_acquire) to answer a
//    Future, to call `progress`, and to drop the references that kept input
//    arrays alive; nothing thrown there leaves the callback;
//  * at interpreter exit an atexit hook closes every open engine (draining
//    what is in flight) while Python is still whole; code that would touch
//    Python after finalisation has begun leaks its reference instead.
//
// Inputs: a numpy array of its own dtype (never cast: a float64 array for a
// float32 input is refused by the engine with its message), made C-contiguous
// and aligned only when it is not already (np.ascontiguousarray semantics).
//  * infer borrows the array's buffer: the call blocks until the answer, and
//    the array is referenced by this call's frame until then;
//  * infer_async adopts it without a copy: each input tensor holds a
//    reference to the array, dropped (under the GIL) when the engine releases
//    the tensor. Zero-copy is the point of baton's Tensor::Adopt, so the
//    caller must not modify the array until the future is done.
// Outputs: each output Tensor moves into a capsule that owns it and the
// ndarray is made over its buffer, so output bytes are not copied either.
#include <pybind11/eval.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "baton/baton.h"
#include "baton/zoo/zoo.h"

namespace py = pybind11;

namespace baton {
namespace {

// ---- the interpreter seen from baton's threads ----------------------------

bool PythonAlive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() != 0 && Py_IsFinalizing() == 0;
#else
  return Py_IsInitialized() != 0 && _Py_IsFinalizing() == 0;
#endif
}

// True on a thread while it runs one of this module's callbacks for baton
// (answering a Future, dropping an input's reference). An Engine whose last
// reference goes away there must not be closed there: Close waits for the
// dispatcher, which is this thread.
thread_local bool t_in_baton_callback = false;

class CallbackScope {
 public:
  CallbackScope() : was_(t_in_baton_callback) { t_in_baton_callback = true; }
  ~CallbackScope() { t_in_baton_callback = was_; }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;

 private:
  bool was_;
};

// infer() and close() wait for baton's threads: called from one of their
// callbacks (a Future's done-callback) they would wait forever.
void RefuseOnDispatcher(const char* what);

// A strong reference to a Python object that may be dropped on any thread:
// the deleter takes the GIL first. Once the interpreter is finalising, the
// reference is leaked rather than touched.
std::shared_ptr<py::object> Share(py::object o) {
  return std::shared_ptr<py::object>(new py::object(std::move(o)), [](py::object* p) noexcept {
    if (PythonAlive()) {
      CallbackScope scope;
      py::gil_scoped_acquire gil;
      delete p;
    } else {
      p->release();  // leak the reference: decref'ing now could crash
      delete p;
    }
  });
}

// ---- errors -----------------------------------------------------------------

// baton.Error and its per-code subclasses, by code value; strong references
// that are never dropped (they would otherwise be released after the
// interpreter is gone).
PyObject* g_error_types[17] = {};

py::object MakeError(StatusCode code, const std::string& message) {
  const int c = static_cast<int>(code);
  PyObject* type = (c >= 1 && c <= 16 && g_error_types[c] != nullptr) ? g_error_types[c] : g_error_types[0];
  return py::reinterpret_borrow<py::object>(type)(message, StatusCodeName(code));
}

[[noreturn]] void Raise(StatusCode code, const std::string& message) {
  py::object e = MakeError(code, message);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(e.ptr())), e.ptr());
  throw py::error_already_set();
}

[[noreturn]] void Raise(const Status& s) { Raise(s.code(), s.message()); }

void RefuseOnDispatcher(const char* what) {
  if (!t_in_baton_callback) return;
  Raise(StatusCode::kFailedPrecondition,
        std::string(what) + " called from a callback on one of baton's threads (a Future's done-callback) "
                            "would wait for that thread; use infer_async there, or act on the result elsewhere");
}

const char* const kErrorClasses = R"PY(
class Error(RuntimeError):
    """An error baton answered with.

    str(e) and e.message are baton's message; e.code is the status code's
    name ("INVALID_ARGUMENT", "NOT_FOUND", "DEADLINE_EXCEEDED", ...). Each
    code has a subclass: InvalidArgumentError, NotFoundError, ...
    """

    _code = "UNKNOWN"

    def __init__(self, message="", code=None):
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else type(self)._code

    def __reduce__(self):
        return (type(self), (self.message, self.code))


def _make_error_classes(names):
    made = []
    for code in names:
        cls_name = "".join(w.capitalize() for w in code.split("_")) + "Error"
        cls = type(cls_name, (Error,), {
            "__doc__": "baton.Error with code %s." % code,
            "__module__": __name__,
            "_code": code,
        })
        globals()[cls_name] = cls
        made.append(cls)
    return made
)PY";

void DefineErrors(py::module_& m) {
  py::exec(kErrorClasses, m.attr("__dict__"));
  g_error_types[0] = py::object(m.attr("Error")).release().ptr();
  py::list names;
  for (int c = 1; c <= 16; ++c) names.append(StatusCodeName(static_cast<StatusCode>(c)));
  py::list classes = m.attr("_make_error_classes")(names);
  for (int c = 1; c <= 16; ++c) g_error_types[c] = py::object(classes[static_cast<size_t>(c - 1)]).release().ptr();
  py::delattr(m, "_make_error_classes");
}

// ---- element types ----------------------------------------------------------

// The ONNX element type of a numpy dtype of native byte order; nullopt when
// none fits (strings are handled apart).
std::optional<ElemType> ElemTypeOf(const py::dtype& dt) {
  constexpr char kForeignOrder = std::endian::native == std::endian::little ? '>' : '<';
  if (dt.byteorder() == kForeignOrder) return std::nullopt;
  const py::ssize_t size = dt.itemsize();
  switch (dt.kind()) {
    case 'b':
      if (size == 1) return dtype::kBool;
      break;
    case 'f':
      if (size == 2) return dtype::kFloat16;
      if (size == 4) return dtype::kFloat;
      if (size == 8) return dtype::kDouble;
      break;
    case 'i':
      if (size == 1) return dtype::kInt8;
      if (size == 2) return dtype::kInt16;
      if (size == 4) return dtype::kInt32;
      if (size == 8) return dtype::kInt64;
      break;
    case 'u':
      if (size == 1) return dtype::kUint8;
      if (size == 2) return dtype::kUint16;
      if (size == 4) return dtype::kUint32;
      if (size == 8) return dtype::kUint64;
      break;
    case 'c':
      if (size == 8) return dtype::kComplex64;
      if (size == 16) return dtype::kComplex128;
      break;
    default:
      break;
  }
  return std::nullopt;
}

// The numpy dtype of an ONNX element type (not STRING); nullopt when numpy has none.
std::optional<py::dtype> NumpyDtypeOf(ElemType t) {
  switch (t) {
    case dtype::kFloat: return py::dtype("float32");
    case dtype::kUint8: return py::dtype("uint8");
    case dtype::kInt8: return py::dtype("int8");
    case dtype::kUint16: return py::dtype("uint16");
    case dtype::kInt16: return py::dtype("int16");
    case dtype::kInt32: return py::dtype("int32");
    case dtype::kInt64: return py::dtype("int64");
    case dtype::kBool: return py::dtype("bool");
    case dtype::kFloat16: return py::dtype("float16");
    case dtype::kDouble: return py::dtype("float64");
    case dtype::kUint32: return py::dtype("uint32");
    case dtype::kUint64: return py::dtype("uint64");
    case dtype::kComplex64: return py::dtype("complex64");
    case dtype::kComplex128: return py::dtype("complex128");
    default: return std::nullopt;
  }
}

// ---- inputs -----------------------------------------------------------------

struct Inputs {
  Tensors tensors;
  std::vector<py::object> arrays;  // keeps borrowed buffers alive (infer)
};

// `mapping` (name -> array-like) as tensors. adopt: each tensor holds a
// reference to its array (infer_async); else it borrows the buffer and the
// arrays are kept in the result (infer). Needs the GIL.
Inputs ToTensors(const py::object& mapping, bool adopt) {
  if (!py::isinstance<py::dict>(mapping) && !py::hasattr(mapping, "items")) {
    throw py::type_error("inputs must be a dict of input name -> numpy array, not " +
                         py::str(py::type::handle_of(mapping).attr("__name__")).cast<std::string>());
  }
  Inputs in;
  for (py::handle item : mapping.attr("items")()) {
    py::tuple kv = py::reinterpret_borrow<py::object>(item);
    if (kv.size() != 2 || !py::isinstance<py::str>(kv[0])) {
      throw py::type_error("inputs must be a dict whose keys are input names (str)");
    }
    const std::string name = kv[0].cast<std::string>();
    // Layout only: C order and aligned, the dtype is the array's own.
    py::array a = py::array::ensure(
        kv[1], static_cast<int>(py::array::c_style) | static_cast<int>(py::detail::npy_api::NPY_ARRAY_ALIGNED_));
    if (!a) {
      throw py::type_error("input '" + name + "': expected a numpy array, got " +
                           py::str(py::type::handle_of(kv[1]).attr("__name__")).cast<std::string>());
    }
    std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
    const py::dtype dt = a.dtype();
    const char kind = dt.kind();
    if (kind == 'U' || kind == 'S' || kind == 'O') {
      // STRING tensors hold std::strings: always copied.
      std::vector<std::string> strings;
      strings.reserve(static_cast<size_t>(a.size()));
      for (py::handle v : a.attr("ravel")().attr("tolist")()) {
        if (py::isinstance<py::str>(v) || py::isinstance<py::bytes>(v)) {
          strings.push_back(v.cast<std::string>());
        } else {
          Raise(StatusCode::kInvalidArgument,
                "input '" + name + "': an object array must hold str or bytes, found " +
                    py::str(py::type::handle_of(v).attr("__name__")).cast<std::string>());
        }
      }
      in.tensors.emplace(name, Tensor::Strings(std::move(shape), std::move(strings)));
      continue;
    }
    const std::optional<ElemType> type = ElemTypeOf(dt);
    if (!type) {
      Raise(StatusCode::kInvalidArgument,
            "input '" + name + "': numpy dtype " + py::str(py::object(dt)).cast<std::string>() +
                (dt.byteorder() == (std::endian::native == std::endian::little ? '>' : '<')
                     ? " is not in the machine's byte order; convert it with .astype(x.dtype.newbyteorder('='))"
                     : " has no ONNX element type; use bool, (u)int8/16/32/64, float16/32/64 or complex64/128"));
    }
    // ONNX Runtime reads inputs in place and never writes them.
    void* data = const_cast<void*>(a.data());
    const size_t bytes = static_cast<size_t>(a.nbytes());
    if (adopt) {
      in.tensors.emplace(name, Tensor::Adopt(*type, std::move(shape), data, bytes, Share(std::move(a))));
    } else {
      in.tensors.emplace(name, Tensor::Borrow(*type, std::move(shape), data, bytes));
      in.arrays.push_back(std::move(a));
    }
  }
  return in;
}

// ---- outputs ----------------------------------------------------------------

// One output as an ndarray over the tensor's own bytes (the tensor moves into
// a capsule the array keeps). Needs the GIL.
py::object ToArray(const std::string& name, Tensor&& t) {
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  if (t.elem_type() == dtype::kString) {
    py::list values;
    for (const std::string& s : t.strings()) values.append(py::str(s));
    return py::module_::import("numpy").attr("array")(values, py::arg("dtype") = "object").attr("reshape")(shape);
  }
  const std::optional<py::dtype> dt = NumpyDtypeOf(t.elem_type());
  if (!dt) {
    Raise(StatusCode::kUnimplemented, "output '" + name + "': element type " + ElemTypeName(t.elem_type()) +
                                          " has no numpy dtype");
  }
  if (t.byte_size() == 0 || t.bytes().data() == nullptr) return py::array(*dt, shape);
  auto* owned = new Tensor(std::move(t));
  py::capsule base(owned, [](void* p) { delete static_cast<Tensor*>(p); });
  return py::array(*dt, shape, std::vector<py::ssize_t>{}, owned->bytes().data(), base);
}

py::dict ToDict(Tensors&& out) {
  py::dict d;
  for (auto& [name, t] : out) d[py::str(name)] = ToArray(name, std::move(t));
  return d;
}

// ---- options ----------------------------------------------------------------

std::optional<std::chrono::nanoseconds> Millis(const char* what, std::optional<double> ms) {
  if (!ms) return std::nullopt;
  if (!std::isfinite(*ms) || *ms < 0 || *ms > 1e9) {
    throw py::value_error(std::string(what) + " must be a number of milliseconds in [0, 1e9], got " +
                          py::str(py::float_(*ms)).cast<std::string>());
  }
  return std::chrono::nanoseconds(static_cast<int64_t>(std::llround(*ms * 1e6)));
}

InferOptions Options(std::optional<double> deadline_ms, std::optional<int> priority, std::optional<double> slo_ms,
                     std::shared_ptr<CancelToken> cancel) {
  InferOptions o;
  o.deadline = Millis("deadline_ms", deadline_ms);
  o.priority = priority;
  o.slo = Millis("slo_ms", slo_ms);
  o.cancel = std::move(cancel);
  return o;
}

std::optional<std::string> PathArg(const py::object& o) {
  if (o.is_none()) return std::nullopt;
  return py::module_::import("os").attr("fsdecode")(o).cast<std::string>();
}

// ---- open engines, for the atexit hook ---------------------------------------

std::mutex& RegistryMu() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::vector<std::weak_ptr<Engine>>& Registry() {
  static auto* engines = new std::vector<std::weak_ptr<Engine>>;
  return *engines;
}

void Register(const std::shared_ptr<Engine>& e) {
  std::lock_guard<std::mutex> lock(RegistryMu());
  auto& r = Registry();
  std::erase_if(r, [](const std::weak_ptr<Engine>& w) { return w.expired(); });
  r.push_back(e);
}

// Runs from Python's atexit, before finalisation: every open engine drains and
// stops while its callbacks can still take the GIL.
void CloseAllEngines() {
  std::vector<std::shared_ptr<Engine>> open;
  {
    std::lock_guard<std::mutex> lock(RegistryMu());
    for (const std::weak_ptr<Engine>& w : Registry()) {
      if (std::shared_ptr<Engine> e = w.lock()) open.push_back(std::move(e));
    }
    Registry().clear();
  }
  py::gil_scoped_release nogil;
  for (const std::shared_ptr<Engine>& e : open) e->Close();
  open.clear();  // the last reference may destroy an engine: without the GIL
}

// ---- the Python Engine ----------------------------------------------------------

class PyEngine {
 public:
  explicit PyEngine(std::shared_ptr<Engine> engine) : engine_(std::move(engine)) { Register(engine_); }

  ~PyEngine() {
    if (!engine_) return;
    if (t_in_baton_callback) {
      // The last reference went away on one of baton's threads (e.g. in a
      // Future's done-callback): closing here would wait for this thread.
      std::thread([e = std::move(engine_)]() mutable { e.reset(); }).detach();
      return;
    }
    py::gil_scoped_release nogil;  // Close drains; answers need the GIL
    engine_.reset();
  }

  PyEngine(const PyEngine&) = delete;
  PyEngine& operator=(const PyEngine&) = delete;

  Engine& engine() { return *engine_; }

  const ModelInfo& Model(const std::string& name) const {
    if (const ModelInfo* m = engine_->FindModel(name)) return *m;
    std::string names;
    for (const ModelInfo& m : engine_->Models()) names += (names.empty() ? "" : ", ") + m.name;
    Raise(StatusCode::kNotFound, "no model '" + name + "' in this engine; its models: [" + names + "]");
  }

  void Close() {
    RefuseOnDispatcher("close()");
    {
      py::gil_scoped_release nogil;
      engine_->Close();
    }
    closed_ = true;
  }
  bool closed() const { return closed_; }

 private:
  std::shared_ptr<Engine> engine_;
  bool closed_ = false;
};

// How often a waiting infer() or Engine() looks for a signal (Ctrl-C).
constexpr std::chrono::milliseconds kSignalLook{50};

// Waits on `cv` (with `lock` held, the GIL released) until `done()`,
// looking for a signal every kSignalLook. When a handler raises
// (KeyboardInterrupt for Ctrl-C) its exception stays set, `on_signal` runs
// once, and the wait goes on until done(). Returns whether one raised.
template <typename Done>
bool WaitLookingForSignals(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Done done,
                           const std::function<void()>& on_signal) {
  bool interrupted = false;
  while (!cv.wait_for(lock, kSignalLook, done)) {
    if (interrupted) continue;  // on_signal ran: what it stopped ends soon
    lock.unlock();
    {
      py::gil_scoped_acquire gil;
      interrupted = PyErr_CheckSignals() != 0;
    }
    if (interrupted) on_signal();
    lock.lock();
  }
  return interrupted;
}

using Opened = Result<std::unique_ptr<Engine>>;

// Runs `open` (which may take minutes: profiling) on a thread of its own
// while this one looks for signals. A handler that raises (KeyboardInterrupt
// for Ctrl-C) sets EngineOptions::stop, so the opening ends at its next step
// (profiling keeps what it measured), and its exception is raised here.
// Called with the GIL held.
Opened OpenWatchingSignals(EngineOptions options, std::function<Opened(EngineOptions)> open) {
  std::atomic<bool> stop{false};
  options.stop = &stop;
  std::optional<Opened> opened;
  bool interrupted = false;
  {
    py::gil_scoped_release nogil;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;  // guarded by mu
    std::thread opener([&] {
      Opened r = Status(StatusCode::kInternal, "Engine() ended without an answer");
      try {
        r = open(std::move(options));
      } catch (const std::exception& e) {
        r = Status(StatusCode::kInternal, std::string("Engine(): ") + e.what());
      }
      std::lock_guard lock(mu);
      opened.emplace(std::move(r));
      done = true;
      cv.notify_all();
    });
    std::unique_lock lock(mu);
    // A signal stops the opening at its next step.
    interrupted = WaitLookingForSignals(cv, lock, [&] { return done; }, [&] { stop.store(true); });
    lock.unlock();
    opener.join();
    if (interrupted) opened.reset();  // an engine opened anyway is closed here, without the GIL
  }
  if (interrupted) throw py::error_already_set();
  return std::move(*opened);
}

std::unique_ptr<PyEngine> OpenEngine(const py::object& config, const py::object& plan, const py::object& profile,
                                     const py::object& cache_dir, bool no_profile, const py::object& progress,
                                     bool trace, const py::object& models) {
  EngineOptions options;
  options.trace = trace;
  if (!models.is_none()) {
    if (py::isinstance<py::str>(models)) throw py::type_error("models must be a list of model names, not a str");
    for (const py::handle& name : models) {
      if (!py::isinstance<py::str>(name)) throw py::type_error("models must be a list of model names (str)");
      options.models.push_back(name.cast<std::string>());
    }
    if (options.models.empty()) throw py::value_error("models is empty: name at least one model, or leave it out");
  }
  if (auto p = PathArg(plan)) options.plan_path = *p;
  if (auto p = PathArg(profile)) options.profile_path = *p;
  if (auto p = PathArg(cache_dir)) options.cache_dir = *p;
  options.no_profile = no_profile;
  if (!progress.is_none()) {
    if (!PyCallable_Check(progress.ptr())) throw py::type_error("progress must be a callable(str) or None");
    std::shared_ptr<py::object> fn = Share(progress);
    options.progress = [fn](const std::string& what) {
      if (!PythonAlive()) return;
      py::gil_scoped_acquire gil;
      try {
        (*fn)(what);
      } catch (py::error_already_set& e) {
        e.discard_as_unraisable("baton.Engine progress callback");
      } catch (...) {
      }
    };
  }

  const py::module_ os = py::module_::import("os");
  std::optional<Result<std::unique_ptr<Engine>>> opened;
  if (py::isinstance<py::dict>(config) || py::isinstance(config, py::module_::import("collections.abc").attr("Mapping"))) {
    // JSON is YAML; relative model paths resolve against the working directory.
    const std::string text = py::module_::import("json").attr("dumps")(py::dict(config)).cast<std::string>();
    const std::string base_dir = os.attr("getcwd")().cast<std::string>();
    opened.emplace(OpenWatchingSignals(std::move(options), [&](EngineOptions o) {
      return Engine::OpenText(text, base_dir, std::move(o));
    }));
  } else if (py::isinstance<py::str>(config) || py::isinstance<py::bytes>(config) ||
             py::hasattr(config, "__fspath__")) {
    const std::string path = os.attr("fsdecode")(config).cast<std::string>();
    opened.emplace(OpenWatchingSignals(std::move(options), [&](EngineOptions o) {
      return Engine::Open(path, std::move(o));
    }));
  } else {
    throw py::type_error("config must be a path (str or os.PathLike) to a YAML file or a dict, not " +
                         py::str(py::type::handle_of(config).attr("__name__")).cast<std::string>());
  }
  if (!opened->ok()) Raise(opened->status());
  return std::make_unique<PyEngine>(std::shared_ptr<Engine>(std::move(*opened).value()));
}

py::list Describe(const std::vector<TensorInfo>& infos) {
  py::list l;
  for (const TensorInfo& t : infos) {
    py::object shape = py::none();
    if (t.rank_known) shape = py::cast(t.shape);
    l.append(py::make_tuple(t.name, t.type_name, shape));
  }
  return l;
}

// How long a model's runs may take for one to run on the calling thread of
// infer(), where no signal is seen until it returns
// (InferOptions::run_here_up_to).
constexpr std::chrono::milliseconds kRunHereUpTo{50};

py::dict Infer(PyEngine& self, const std::string& model, const py::object& inputs, std::optional<double> deadline_ms,
               std::optional<int> priority, std::optional<double> slo_ms, std::shared_ptr<CancelToken> cancel) {
  RefuseOnDispatcher("infer()");
  InferOptions options = Options(deadline_ms, priority, slo_ms, nullptr);
  Inputs in = ToTensors(inputs, /*adopt=*/false);  // in.arrays keeps the borrowed buffers alive
  // The request's own token, so that a signal cancels this request and not
  // the others of a token the caller passed (which still cancels this one).
  auto mine = std::make_shared<CancelToken>();
  options.cancel = mine;
  options.run_here_up_to = kRunHereUpTo;
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result<Tensors>> r;  // guarded by mu
  };
  auto wait = std::make_shared<Wait>();
  bool interrupted = false;
  {
    const uint64_t hook = cancel ? cancel->OnCancel([mine] { mine->Cancel(); }) : 0;
    py::gil_scoped_release nogil;
    self.engine().InferAsync(model, std::move(in.tensors), options, [wait](Result<Tensors> r) {
      std::lock_guard lock(wait->mu);
      wait->r.emplace(std::move(r));
      wait->cv.notify_all();
    });
    std::unique_lock lock(wait->mu);
    // A signal cancels this request; its answer comes once no run holds the inputs.
    interrupted = WaitLookingForSignals(
        wait->cv, lock, [&] { return wait->r.has_value(); }, [&] { mine->Cancel(); });
    if (cancel) cancel->Remove(hook);
  }
  if (interrupted) throw py::error_already_set();  // the handler's exception, with the request cancelled
  if (!wait->r->ok()) Raise(wait->r->status());
  return ToDict(std::move(*wait->r).value());
}

// Answers `future` from a request's result. Runs on one of baton's threads
// (or the submitting thread when the request is refused up front), without
// the GIL; never throws.
void Answer(const std::shared_ptr<py::object>& future, Result<Tensors> r) noexcept {
  if (!PythonAlive()) return;
  CallbackScope scope;
  py::gil_scoped_acquire gil;
  try {
    if (r.ok()) {
      py::object value;
      try {
        value = ToDict(std::move(r).value());
      } catch (py::error_already_set& e) {
        future->attr("set_exception")(e.value());
        return;
      }
      future->attr("set_result")(value);
    } else {
      future->attr("set_exception")(MakeError(r.status().code(), r.status().message()));
    }
  } catch (py::error_already_set& e) {
    e.discard_as_unraisable("baton: answering a concurrent.futures.Future");
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    PyErr_WriteUnraisable(future->ptr());
  } catch (...) {
  }
}

py::object InferAsync(PyEngine& self, const std::string& model, const py::object& inputs,
                      std::optional<double> deadline_ms, std::optional<int> priority, std::optional<double> slo_ms,
                      std::shared_ptr<CancelToken> cancel) {
  const InferOptions options = Options(deadline_ms, priority, slo_ms, std::move(cancel));
  Inputs in = ToTensors(inputs, /*adopt=*/true);
  py::object future = py::module_::import("concurrent.futures").attr("Future")();
  // Running from now on: the Future's cancel() says False; a CancelToken
  // (cancel=) withdraws the request instead.
  future.attr("set_running_or_notify_cancel")();
  std::shared_ptr<py::object> shared = Share(future);
  {
    py::gil_scoped_release nogil;
    self.engine().InferAsync(model, std::move(in.tensors), options,
                             [shared](Result<Tensors> r) { Answer(shared, std::move(r)); });
  }
  return future;
}

py::dict StatsDict(PyEngine& self) {
  EngineStats s;
  {
    py::gil_scoped_release nogil;
    s = self.engine().Stats();
  }
  py::dict models;
  for (const ModelStats& m : s.models) {
    py::dict d;
    d["submitted"] = m.submitted;
    d["completed"] = m.completed;
    d["deadline_exceeded"] = m.deadline_exceeded;
    d["cancelled"] = m.cancelled;
    d["rejected"] = m.rejected;
    d["invalid"] = m.invalid;
    d["failed"] = m.failed;
    d["slo_met"] = m.slo_met;
    d["with_slo"] = m.with_slo;
    d["executions"] = m.executions;
    py::dict batches;  // {batch size: {"executions", "compute_s"}}
    for (const ModelStats::BatchSize& b : m.batch_sizes) {
      py::dict e;
      e["executions"] = b.executions;
      e["compute_s"] = b.compute_s;
      batches[py::int_(b.size)] = e;
    }
    d["batch_sizes"] = batches;
    py::dict lat;
    lat["p50_ms"] = m.latency.p50_ms;
    lat["p90_ms"] = m.latency.p90_ms;
    lat["p99_ms"] = m.latency.p99_ms;
    lat["max_ms"] = m.latency.max_ms;
    lat["mean_ms"] = m.latency.mean_ms;
    d["latency"] = lat;
    models[py::str(m.name)] = d;
  }
  py::dict pus;
  for (const PuStatsView& p : s.pus) {
    py::dict d;
    d["kind"] = p.kind;
    d["device"] = p.device;
    d["runs"] = p.runs;
    d["busy_s"] = p.busy_s;
    d["run_cpu_s"] = p.run_cpu_s;
    d["utilization"] = p.utilization;
    pus[py::str(p.name)] = d;
  }
  py::dict devices;
  for (const DeviceStatsView& v : s.devices) {
    py::dict d;
    d["remote"] = v.remote;
    d["reachable"] = v.reachable;
    d["queued"] = v.queued;
    d["running"] = v.running;
    d["policy_violations"] = v.policy_violations;
    d["lost"] = v.lost;
    d["returned"] = v.returned;
    devices[py::str(v.name)] = d;
  }
  py::dict out;
  out["uptime_s"] = s.uptime_s;
  out["in_flight"] = s.in_flight;
  out["models"] = models;
  out["pus"] = pus;
  out["devices"] = devices;
  return out;
}

py::dict RunWholeModelPy(const py::object& model_path, const py::object& inputs) {
  const std::optional<std::string> path = PathArg(model_path);
  if (!path) throw py::type_error("run_whole_model(): model_path must be a str or os.PathLike");
  Inputs in = ToTensors(inputs, /*adopt=*/false);  // in.arrays keeps the borrowed buffers alive
  Result<Tensors> out = Status(StatusCode::kUnknown, "not run");
  {
    py::gil_scoped_release nogil;
    out = RunWholeModel(*path, std::move(in.tensors));
  }
  if (!out.ok()) Raise(out.status());
  return ToDict(std::move(out).value());
}

py::bytes ZooModel(const std::string& name, bool small) {
  absl::StatusOr<std::string> bytes;
  {
    py::gil_scoped_release nogil;
    bytes = zoo::Generate(name, small);
  }
  if (!bytes.ok()) Raise(static_cast<StatusCode>(bytes.status().code()), std::string(bytes.status().message()));
  return py::bytes(*bytes);
}

}  // namespace
}  // namespace baton

PYBIND11_MODULE(baton, m) {
  using baton::PyEngine;
  namespace b = baton;
  m.doc() = "baton: run many ONNX models on the processing units of an edge device (baton::Engine).";
#ifdef BATON_VERSION
  m.attr("__version__") = BATON_VERSION;
#endif
  b::DefineErrors(m);

  py::class_<baton::CancelToken, std::shared_ptr<baton::CancelToken>>(m, "CancelToken", R"doc(Cancels the requests given it.

    token = baton.CancelToken()
    fut = eng.infer_async("camera", {"input": x}, cancel=token)
    token.cancel()   # fut raises baton.Error with code CANCELLED (unless already answered)

cancel() answers every request given the token that is not answered yet
CANCELLED and withdraws its work (waiting partitions are dropped, a running
one is stopped); a request given a cancelled token never runs. A request of a
model with dynamic batching leaves the batcher, or is answered at once if its
batch has left. Thread-safe; one token may serve many requests.)doc")
      .def(py::init<>())
      .def(
          "cancel",
          [](baton::CancelToken& t) {
            py::gil_scoped_release nogil;
            t.Cancel();
          },
          "Cancels every request given this token that is not answered yet.")
      .def_property_readonly("cancelled", &baton::CancelToken::cancelled, "Whether cancel() was called.")
      .def("__repr__", [](const baton::CancelToken& t) {
        return std::string("<baton.CancelToken ") + (t.cancelled() ? "cancelled>" : "live>");
      });

  py::class_<PyEngine>(m, "Engine", R"doc(
An engine running the models of a baton configuration.

Engine(config, plan=None, profile=None, cache_dir=None, no_profile=False, progress=None, trace=False,
       models=None)

config: a path to a YAML file (relative model paths resolve against its
folder), or a dict in the same form (relative model paths resolve against the
working directory). plan: carry out this plan file (`baton plan`); profile:
use this profile; cache_dir: zoo models and profiles (default
$BATON_CACHE_DIR, else ~/.cache/baton); no_profile: plan without profiling
(planned from estimated costs); progress: callable(str) told the start-up steps;
trace: record the dispatcher's events for write_trace(); models: open only
these of the config's models (names; default all of them).

Every method may be called from many threads at once. Use it as a context
manager, or call close(): it waits for every request in flight.
Raises baton.Error when the configuration, a model or the plan is refused.
Ctrl-C while it opens (profiling can take minutes) stops the opening at its
next step and raises KeyboardInterrupt; what profiling measured is kept, so
the next Engine() resumes it.)doc")
      .def(py::init(&b::OpenEngine), py::arg("config"), py::arg("plan") = py::none(),
           py::arg("profile") = py::none(), py::arg("cache_dir") = py::none(), py::arg("no_profile") = false,
           py::arg("progress") = py::none(), py::arg("trace") = false, py::arg("models") = py::none())
      .def(
          "write_trace",
          [](PyEngine& self, const py::object& path) {
            const std::optional<std::string> p = b::PathArg(path);
            if (!p) throw py::type_error("path must be a str or os.PathLike");
            b::Result<b::TraceSummary> written = [&] {
              py::gil_scoped_release nogil;
              return self.engine().WriteTrace(*p);
            }();
            if (!written.ok()) b::Raise(written.status());
            py::dict d;
            d["runs"] = written->runs;
            d["dropped_events"] = written->dropped_events;
            return d;
          },
          py::arg("path"),
          "Writes the events recorded so far (Engine(..., trace=True)) as a Chrome/Perfetto trace file: "
          "{\"runs\", \"dropped_events\"}. Raises baton.FailedPreconditionError without trace=True.")
      .def_property_readonly(
          "models",
          [](PyEngine& self) {
            py::list names;
            for (const b::ModelInfo& info : self.engine().Models()) names.append(info.name);
            return names;
          },
          "The models' names, in config order.")
      .def(
          "inputs", [](PyEngine& self, const std::string& model) { return b::Describe(self.Model(model).inputs); },
          py::arg("model"),
          "[(name, dtype name, shape)] of the model's inputs; -1 in a shape is a free dimension, "
          "shape None when the model does not say.")
      .def(
          "outputs", [](PyEngine& self, const std::string& model) { return b::Describe(self.Model(model).outputs); },
          py::arg("model"), "[(name, dtype name, shape)] of the model's outputs, like inputs().")
      .def(
          "partitions", [](PyEngine& self, const std::string& model) { return self.Model(model).partitions; },
          py::arg("model"), "How many partitions the model runs as (as deployed).")
      .def(
          "device", [](PyEngine& self, const std::string& model) { return self.Model(model).device; },
          py::arg("model"), "The device the model's partitions run on.")
      .def(
          "labels", [](PyEngine& self, const std::string& model) { return self.Model(model).labels; },
          py::arg("model"), "The model's class labels from its config's `labels` file (label i names class i); [] "
                            "without one.")
      .def("infer", &b::Infer, py::arg("model"), py::arg("inputs"), py::kw_only(),
           py::arg("deadline_ms") = py::none(), py::arg("priority") = py::none(), py::arg("slo_ms") = py::none(),
           py::arg("cancel") = py::none(),
           R"doc(Runs one request and waits for its answer: {output name: ndarray}.

inputs: {input name: numpy array} of the model's dtypes and shapes (arrays are
made C-contiguous if needed, never cast). deadline_ms: drop the request after
this many milliseconds (DEADLINE_EXCEEDED); priority: larger is more
important; slo_ms: an answer within this time counts as good in stats();
cancel: a baton.CancelToken whose cancel() answers the request CANCELLED.
Ctrl-C while it waits cancels the request and raises KeyboardInterrupt (any
signal handler that raises does the same, with its exception).
Raises baton.Error (INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED, ...).)doc")
      .def("infer_async", &b::InferAsync, py::arg("model"), py::arg("inputs"), py::kw_only(),
           py::arg("deadline_ms") = py::none(), py::arg("priority") = py::none(), py::arg("slo_ms") = py::none(),
           py::arg("cancel") = py::none(),
           R"doc(Submits one request: a concurrent.futures.Future of {output name: ndarray}.

Like infer(), but the error is set on the future. The input arrays are used
in place (no copy): do not modify them until the future is done. Callbacks
added to the future run on one of baton's threads: keep them short and do
not call infer() or close() from them.)doc")
      .def("stats", &b::StatsDict,
           R"doc(Counters since the engine opened:
{"uptime_s", "in_flight",
 "models": {name: {"submitted", "completed", "deadline_exceeded", "cancelled", "rejected", "invalid", "failed",
                   "slo_met", "with_slo", "executions", "batch_sizes": {size: {"executions", "compute_s"}},
                   "latency": {"p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"}}},
 "pus": {name: {"kind", "device", "runs", "busy_s", "run_cpu_s", "utilization"}},
 "devices": {name: {"remote", "reachable", "queued", "running", "policy_violations", "lost", "returned"}}})doc")
      .def("close", &PyEngine::Close,
           "Waits for every request in flight to be answered, then stops. Later requests raise "
           "baton.FailedPreconditionError. Idempotent.")
      .def_property_readonly("closed", &PyEngine::closed, "True once close() has been called.")
      .def("__enter__", [](py::object self) { return self; })
      .def(
          "__exit__",
          [](PyEngine& self, const py::object&, const py::object&, const py::object&) {
            self.Close();
            return false;
          },
          py::arg("exc_type"), py::arg("exc"), py::arg("tb"))
      .def("__repr__", [](PyEngine& self) {
        std::string names;
        for (const b::ModelInfo& info : self.engine().Models()) names += (names.empty() ? "'" : ", '") + info.name + "'";
        return "<baton.Engine models=[" + names + "]" + (self.closed() ? " closed" : "") + ">";
      });

  m.def(
      "_spin_model",
      [] {
        absl::StatusOr<std::string> bytes = baton::zoo::SpinModel();
        if (!bytes.ok()) {
          b::Raise(static_cast<baton::StatusCode>(bytes.status().code()), std::string(bytes.status().message()));
        }
        return py::bytes(*bytes);
      },
      "The serialized ONNX model whose runs practically never end (a Loop of 2^40 steps), for tests.");
  m.def("run_whole_model", &b::RunWholeModelPy, py::arg("model_path"), py::arg("inputs"),
        R"doc(run_whole_model(model_path, inputs) -> dict

Runs the ONNX model file once, whole, in plain ONNX Runtime (one session with
one intra-op thread, made for this call), and returns every output as a numpy
array: the reference that baton's partitioned answers are checked against.
For checks, not for serving: each call loads the model and creates a session.
Raises baton.InvalidArgumentError (a missing input, inputs ONNX Runtime refuses),
baton.NotFoundError (no such file), or the error ONNX Runtime gave.)doc");
  m.def("_zoo_model", &b::ZooModel, py::arg("name"), py::arg("small") = true,
        "The serialized ONNX model of baton's built-in zoo (`baton zoo`); small: the reduced variant.");

  // Engines still open at exit drain while Python can still answer their futures.
  py::module_::import("atexit").attr("register")(py::cpp_function(&b::CloseAllEngines));
}
