// N-API bindings of the SAE core. `SaeF32` trains; `SaeF64` is the same code in double for gradient checks.
// Heavy calls (trainStep, infer) run on libuv's worker pool so the event loop stays live for progress bars and
// servers; a core refuses every call while one of its workers runs, so JS cannot race the native buffers.
#include <napi.h>

#include <chrono>
#include <functional>
#include <memory>
#include <type_traits>

#include "direct_io.h"
#include "sae_core.h"

namespace vitsae {

template <typename T>
using TA = Napi::TypedArrayOf<T>;

template <typename T>
class SaeWrap : public Napi::ObjectWrap<SaeWrap<T>> {
 public:
  static Napi::Function Define(Napi::Env env, const char* name) {
    return Napi::ObjectWrap<SaeWrap<T>>::DefineClass(
        env, name,
        {
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("getTensor", &SaeWrap::GetTensor),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("setTensor", &SaeWrap::SetTensor),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("getState", &SaeWrap::GetState),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("setState", &SaeWrap::SetState),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("forwardBackward", &SaeWrap::ForwardBackward),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("update", &SaeWrap::Update),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("trainStep", &SaeWrap::TrainStep),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("infer", &SaeWrap::Infer),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("takeMetrics", &SaeWrap::TakeMetrics),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("normalizeDecoder", &SaeWrap::NormalizeDecoder),
            Napi::ObjectWrap<SaeWrap<T>>::InstanceMethod("writeFile", &SaeWrap::WriteFile),
        });
  }

  explicit SaeWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SaeWrap<T>>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "expected an options object");
    auto o = info[0].As<Napi::Object>();
    CoreOptions c;
    c.d = o.Get("d").As<Napi::Number>().Int32Value();
    c.s = o.Get("s").As<Napi::Number>().Int32Value();
    c.act = (Act)o.Get("activation").As<Napi::Number>().Int32Value();
    c.k = o.Get("k").As<Napi::Number>().Int32Value();
    auto pre = o.Get("prefixes").As<Napi::Array>();
    for (uint32_t i = 0; i < pre.Length(); i++) c.prefixes.push_back(pre.Get(i).As<Napi::Number>().Int32Value());
    c.k_aux = o.Get("kAux").As<Napi::Number>().Int32Value();
    c.aux_coeff = o.Get("auxCoeff").As<Napi::Number>().DoubleValue();
    c.dead_window = o.Get("deadWindow").As<Napi::Number>().DoubleValue();
    c.threshold_momentum = o.Get("thresholdMomentum").As<Napi::Number>().DoubleValue();
    if (o.Has("sparseReluDensity")) c.sparse_relu_density = o.Get("sparseReluDensity").As<Napi::Number>().DoubleValue();
    try {
      core = std::make_unique<SaeCore<T>>(c);
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  std::unique_ptr<SaeCore<T>> core;
  bool busy = false;

 private:
  void CheckIdle(Napi::Env env) {
    if (busy) throw Napi::Error::New(env, "the SAE core is busy with an earlier call; await it first");
  }

  // The named buffers that JS may read and write: parameters, gradients and Adam moments.
  Buf<T>* Buffer(Napi::Env env, const std::string& name) {
    using Member = Buf<T> SaeCore<T>::*;
    static const std::pair<const char*, Member> kBuffers[] = {
        {"W_enc", &SaeCore<T>::W_enc},         {"b_enc", &SaeCore<T>::b_enc},         {"W_dec", &SaeCore<T>::W_dec},
        {"b_dec", &SaeCore<T>::b_dec},         {"grad.W_enc", &SaeCore<T>::gW_enc},   {"grad.b_enc", &SaeCore<T>::gb_enc},
        {"grad.W_dec", &SaeCore<T>::gW_dec},   {"grad.b_dec", &SaeCore<T>::gb_dec},   {"adam_m.W_enc", &SaeCore<T>::mW_enc},
        {"adam_m.b_enc", &SaeCore<T>::mb_enc}, {"adam_m.W_dec", &SaeCore<T>::mW_dec}, {"adam_m.b_dec", &SaeCore<T>::mb_dec},
        {"adam_v.W_enc", &SaeCore<T>::vW_enc}, {"adam_v.b_enc", &SaeCore<T>::vb_enc}, {"adam_v.W_dec", &SaeCore<T>::vW_dec},
        {"adam_v.b_dec", &SaeCore<T>::vb_dec},
    };
    for (const auto& [n, member] : kBuffers)
      if (name == n) return &((*core).*member);
    throw Napi::Error::New(env, "unknown tensor " + name);
  }

  Napi::Value GetTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckIdle(env);
    std::string name = info[0].As<Napi::String>();
    if (name == "since_fired") {
      auto out = Napi::Float64Array::New(env, core->since_fired.size());
      std::copy(core->since_fired.begin(), core->since_fired.end(), out.Data());
      return out;
    }
    Buf<T>* v = Buffer(env, name);
    auto out = TA<T>::New(env, v->size());
    std::copy(v->begin(), v->end(), out.Data());
    return out;
  }

  Napi::Value SetTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckIdle(env);
    std::string name = info[0].As<Napi::String>();
    if (name == "since_fired") {
      auto a = info[1].As<Napi::Float64Array>();
      if (a.ElementLength() != core->since_fired.size()) throw Napi::RangeError::New(env, "since_fired: wrong length");
      std::copy(a.Data(), a.Data() + a.ElementLength(), core->since_fired.begin());
      return env.Undefined();
    }
    Buf<T>* v = Buffer(env, name);
    core->weights_changed();
    auto a = info[1].As<TA<T>>();
    if (a.ElementLength() != v->size())
      throw Napi::RangeError::New(env, name + ": expected " + std::to_string(v->size()) + " values, got " +
                                           std::to_string(a.ElementLength()));
    std::copy(a.Data(), a.Data() + a.ElementLength(), v->begin());
    return env.Undefined();
  }

  Napi::Value GetState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto o = Napi::Object::New(env);
    o.Set("adamStep", core->adam_step);
    o.Set("threshold", core->threshold);
    o.Set("compute", core->compute_name());
    auto phases = Napi::Object::New(env);
    for (size_t i = 0; i < core->phase_s.size(); i++) phases.Set(kPhaseNames[i], core->phase_s[i]);
    o.Set("phaseSeconds", phases);
    return o;
  }

  Napi::Value SetState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckIdle(env);
    auto o = info[0].As<Napi::Object>();
    if (o.Has("adamStep")) core->adam_step = o.Get("adamStep").As<Napi::Number>().DoubleValue();
    if (o.Has("threshold")) core->threshold = o.Get("threshold").As<Napi::Number>().DoubleValue();
    if (o.Has("bf16")) core->set_bf16(o.Get("bf16").ToBoolean());
    return env.Undefined();
  }

  static Napi::Object Stats(Napi::Env env, const StepStats& s) {
    auto o = Napi::Object::New(env);
    o.Set("loss", s.loss);
    o.Set("mse", s.mse);
    o.Set("prefixMse", s.prefix_mse);
    o.Set("l1Loss", s.l1_loss);
    o.Set("auxLoss", s.aux_loss);
    o.Set("l0", s.l0);
    o.Set("gradNorm", s.grad_norm);
    o.Set("nDead", s.n_dead);
    return o;
  }

  static StepHyper Hyper(const Napi::Object& o) {
    StepHyper h;
    h.lr = o.Get("lr").As<Napi::Number>().DoubleValue();
    h.beta1 = o.Get("beta1").As<Napi::Number>().DoubleValue();
    h.beta2 = o.Get("beta2").As<Napi::Number>().DoubleValue();
    h.eps = o.Get("eps").As<Napi::Number>().DoubleValue();
    h.clip = o.Get("clip").As<Napi::Number>().DoubleValue();
    return h;
  }

  // The rows of a [B, d_model] typed array of the core's float type, validated; B through *B.
  const T* InputView(Napi::Env env, const Napi::Value& v, int* B) {
    constexpr napi_typedarray_type kType = std::is_same_v<T, float> ? napi_float32_array : napi_float64_array;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != kType)
      throw Napi::TypeError::New(env, std::string("input must be a ") + (std::is_same_v<T, float> ? "Float32Array" : "Float64Array"));
    auto a = v.As<TA<T>>();
    size_t n = a.ElementLength();
    if (n == 0 || n % core->D != 0)
      throw Napi::RangeError::New(env, "input has " + std::to_string(n) + " values, not a multiple of d_model = " +
                                           std::to_string(core->D));
    *B = (int)(n / core->D);
    return a.Data();
  }

  // A copy of them, so that a worker never reads memory that JS may free or change.
  std::vector<T> Input(Napi::Env env, const Napi::Value& v, int* B) {
    const T* in = InputView(env, v, B);
    return std::vector<T>(in, in + (size_t)*B * core->D);
  }

  Napi::Value ForwardBackward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckIdle(env);
    int B;
    auto x = Input(env, info[0], &B);
    double l1 = info[1].As<Napi::Number>().DoubleValue();
    std::vector<T> target;
    if (info.Length() > 2 && info[2].IsTypedArray()) {
      int B2;
      target = Input(env, info[2], &B2);
      if (B2 != B) throw Napi::RangeError::New(env, "aux target must have the input's shape");
    }
    StepStats s = core->forward_backward(x.data(), B, l1, target.empty() ? nullptr : target.data());
    return Stats(env, s);
  }

  Napi::Value Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckIdle(env);
    return Napi::Number::New(env, core->update(Hyper(info[0].As<Napi::Object>())));
  }

  Napi::Value NormalizeDecoder(const Napi::CallbackInfo& info) {
    CheckIdle(info.Env());
    core->normalize_decoder();
    return info.Env().Undefined();
  }

  // Runs `work` on libuv's pool while the core is marked busy, then settles a promise with `result`.
  class CoreWorker : public Napi::AsyncWorker {
   public:
    CoreWorker(Napi::Env env, SaeWrap* w, std::function<void()> work, std::function<Napi::Value(Napi::Env)> result)
        : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), w(w), work(std::move(work)),
          result(std::move(result)) {
      w->busy = true;
      self = Napi::Persistent(w->Value());
    }
    Napi::Promise::Deferred deferred;
    void Execute() override {
      try {
        work();
      } catch (const std::exception& e) {
        SetError(e.what());
      }
    }
    void OnOK() override {
      w->busy = false;
      deferred.Resolve(result(Env()));
    }
    void OnError(const Napi::Error& e) override {
      w->busy = false;
      deferred.Reject(e.Value());
    }

   private:
    SaeWrap* w;
    Napi::ObjectReference self;  // keeps the wrapper alive while the worker runs
    std::function<void()> work;
    std::function<Napi::Value(Napi::Env)> result;
  };

  Napi::Value Launch(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> result) {
    auto* wk = new CoreWorker(env, this, std::move(work), std::move(result));
    auto p = wk->deferred.Promise();
    wk->Queue();
    return p;
  }

  // writeFile(file, parts): the parts in order into a new file, fsynced (write_file_durably, O_DIRECT where the file
  // system allows), off the main thread while the core is busy, so no step changes a tensor mid-write. A part is a
  // typed array (held until the write ends) or the name of one of the core's tensors: "since_fired", a buffer
  // name, or "<name>.T" for an [S, D] buffer written transposed, as [D, S]. Checkpoints thus need no JS copies.
  Napi::Value WriteFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckIdle(env);
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray()) throw Napi::TypeError::New(env, "writeFile(file, parts)");
    std::string file = info[0].As<Napi::String>();
    auto parts = info[1].As<Napi::Array>();
    struct Part {
      Span span;
      const Buf<T>* transpose;
    };
    auto plan = std::make_shared<std::vector<Part>>();
    auto held = std::make_shared<std::vector<Napi::ObjectReference>>();
    for (uint32_t i = 0; i < parts.Length(); i++) {
      Napi::Value v = parts.Get(i);
      if (v.IsTypedArray()) {
        auto a = v.As<Napi::TypedArray>();
        plan->push_back({{static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset(), a.ByteLength()}, nullptr});
        held->push_back(Napi::Persistent(v.As<Napi::Object>()));
      } else if (v.IsString()) {
        std::string name = v.As<Napi::String>();
        if (name == "since_fired") {
          plan->push_back({{reinterpret_cast<const uint8_t*>(core->since_fired.data()), core->since_fired.size() * sizeof(double)}, nullptr});
        } else if (name.size() > 2 && name.compare(name.size() - 2, 2, ".T") == 0) {
          const Buf<T>* b = Buffer(env, name.substr(0, name.size() - 2));
          if (b->size() != (size_t)core->S * core->D) throw Napi::Error::New(env, name + ": only [S, D] tensors are written transposed");
          plan->push_back({{nullptr, b->size() * sizeof(T)}, b});
        } else {
          const Buf<T>* b = Buffer(env, name);
          plan->push_back({{reinterpret_cast<const uint8_t*>(b->data()), b->size() * sizeof(T)}, nullptr});
        }
      } else {
        throw Napi::TypeError::New(env, "writeFile: a part is a typed array or a tensor name");
      }
    }
    return Launch(
        env,
        [this, file, plan, held] {
          std::vector<Buf<T>> transposed;
          transposed.reserve(plan->size());
          std::vector<Span> spans;
          for (const Part& p : *plan) {
            if (!p.transpose) {
              spans.push_back(p.span);
              continue;
            }
            Buf<T>& t = transposed.emplace_back();
            t.resize(p.transpose->size());
            transpose_rows(p.transpose->data(), core->S, core->D, t.data());
            spans.push_back({reinterpret_cast<const uint8_t*>(t.data()), t.size() * sizeof(T)});
          }
          write_file_durably(file, spans, true);
        },
        [](Napi::Env e) { return e.Undefined(); });
  }

  // The batch stays in JS memory, held until the step ends (the caller leaves it unchanged meanwhile), and is scaled
  // into the core's own input rows on the worker by every thread: the main thread copies nothing (it used to copy
  // 12 MB into fresh pages per step, on a core the step's threads need).
  Napi::Value TrainStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckIdle(env);
    int B;
    const T* x = InputView(env, info[0], &B);
    auto held = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info[0].As<Napi::Object>()));
    const double scale = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : 1.0;
    const double l1 = info[1].As<Napi::Number>().DoubleValue();
    const StepHyper h = Hyper(info[2].As<Napi::Object>());
    auto out = std::make_shared<StepStats>();
    return Launch(
        env,
        [this, x, held, B, scale, l1, h, out] {
          *out = core->forward_backward(core->load_input(x, B, scale), B, l1);
          out->grad_norm = core->update(h);
        },
        [out](Napi::Env e) { return Stats(e, *out); });
  }

  Napi::Value Infer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckIdle(env);
    int B;
    auto x = std::make_shared<std::vector<T>>(Input(env, info[0], &B));
    const bool want_xhat = info.Length() > 1 && info[1].ToBoolean();
    auto xhat = std::make_shared<std::vector<T>>(want_xhat ? x->size() : 0);
    return Launch(
        env,
        [this, x, xhat, B, want_xhat] {
          core->infer(x->data(), B, want_xhat ? xhat->data() : nullptr);
          if (core->rowptr.back() > INT32_MAX) throw std::runtime_error("too many active latents in one batch; use a smaller batch");
        },
        [this, xhat, B, want_xhat](Napi::Env e) -> Napi::Value {
          auto& c = *core;
          auto o = Napi::Object::New(e);
          auto rp = Napi::Int32Array::New(e, B + 1);
          for (int b = 0; b <= B; b++) rp[b] = (int32_t)c.rowptr[b];
          size_t E = c.rowptr[B];
          auto id = Napi::Int32Array::New(e, E);
          std::copy(c.idx.begin(), c.idx.begin() + E, id.Data());
          auto va = TA<T>::New(e, E);
          std::copy(c.val.begin(), c.val.begin() + E, va.Data());
          o.Set("rowptr", rp);
          o.Set("idx", id);
          o.Set("val", va);
          if (want_xhat) {
            auto xh = TA<T>::New(e, xhat->size());
            std::copy(xhat->begin(), xhat->end(), xh.Data());
            o.Set("xhat", xh);
          }
          return o;
        });
  }

  Napi::Value TakeMetrics(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckIdle(env);
    Metrics& m = core->metrics;
    auto o = Napi::Object::New(env);
    auto vec = [&](const std::vector<double>& v) {
      auto a = Napi::Float64Array::New(env, v.size());
      std::copy(v.begin(), v.end(), a.Data());
      return a;
    };
    o.Set("n", m.n);
    o.Set("sse", m.sse);
    o.Set("l0", m.l0);
    o.Set("sumX2", m.sum_x2);
    o.Set("sumR2", m.sum_r2);
    o.Set("sumX", vec(m.sum_x));
    o.Set("sumR", vec(m.sum_r));
    o.Set("fires", vec(m.fires));
    m.reset(core->D, core->S);
    return o;
  }
};

// Times OpenBLAS sgemm alone on [M,K] @ [K,N] (GFLOP/s, best of `reps`): the ceiling the trainer is judged against.
Napi::Value SgemmGflops(const Napi::CallbackInfo& info) {
  int M = info[0].As<Napi::Number>().Int32Value(), N = info[1].As<Napi::Number>().Int32Value(),
      K = info[2].As<Napi::Number>().Int32Value(), reps = info[3].As<Napi::Number>().Int32Value();
  std::vector<float> A((size_t)M * K, 0.5f), B((size_t)K * N, 0.25f), C((size_t)M * N);
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    auto t0 = std::chrono::steady_clock::now();
    gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data(), N);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return Napi::Number::New(info.Env(), 2.0 * M * N * K / best / 1e9);
}

// C[M,N] = op(A) op(B) (+ C when accumulate), row major, float32, synchronous: for the analysis code's small
// and medium products (probes, correlations), which would otherwise run at pure-JS speed.
Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool ta = info[0].ToBoolean(), tb = info[1].ToBoolean();
  const int M = info[2].As<Napi::Number>().Int32Value(), N = info[3].As<Napi::Number>().Int32Value(),
            K = info[4].As<Napi::Number>().Int32Value();
  auto A = info[5].As<Napi::Float32Array>(), B = info[6].As<Napi::Float32Array>(), C = info[7].As<Napi::Float32Array>();
  const bool accumulate = info.Length() > 8 && info[8].ToBoolean();
  if (M < 0 || N < 0 || K < 0 || A.ElementLength() != (size_t)M * K || B.ElementLength() != (size_t)K * N ||
      C.ElementLength() != (size_t)M * N)
    throw Napi::RangeError::New(env, "sgemm: array lengths do not match M, N, K");
  if (M && N && K)
    gemm(ta, tb, M, N, K, 1.0f, A.Data(), ta ? M : K, B.Data(), tb ? K : N, accumulate ? 1.0f : 0.0f, C.Data(), N);
  return env.Undefined();
}

// Logistic regression's residual for independent sigmoids: err[n,c] = (sigmoid(logits[n,c] + bias[c]) - y[n,c]) *
// scale, and biasGrad[c] = sum_n err[n,c]. The analysis probes' inner loop: in JS its exp calls cost 20x the GEMMs.
Napi::Value LogisticResidual(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto logits = info[0].As<Napi::Float32Array>();
  auto bias = info[1].As<Napi::Float64Array>();
  auto y = info[2].As<Napi::Uint8Array>();
  const double scale = info[3].As<Napi::Number>().DoubleValue();
  auto err = info[4].As<Napi::Float32Array>();
  auto biasGrad = info[5].As<Napi::Float64Array>();
  const size_t C = bias.ElementLength(), NC = logits.ElementLength();
  if (!C || NC % C || y.ElementLength() != NC || err.ElementLength() != NC || biasGrad.ElementLength() != C)
    throw Napi::RangeError::New(env, "logisticResidual: logits, targets and err must be [N, C] with C = bias length");
  const float* z = logits.Data();
  const uint8_t* t = y.Data();
  float* e = err.Data();
  double* g = biasGrad.Data();
  std::fill(g, g + C, 0.0);
  for (size_t i = 0; i < NC; i += C)
    for (size_t c = 0; c < C; c++) {
      const double r = (1.0 / (1.0 + std::exp(-(z[i + c] + bias[c]))) - t[i + c]) * scale;
      e[i + c] = (float)r;
      g[c] += r;
    }
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("SaeF32", SaeWrap<float>::Define(env, "SaeF32"));
  exports.Set("SaeF64", SaeWrap<double>::Define(env, "SaeF64"));
  exports.Set("sgemmGflops", Napi::Function::New(env, SgemmGflops));
  exports.Set("sgemm", Napi::Function::New(env, Sgemm));
  exports.Set("logisticResidual", Napi::Function::New(env, LogisticResidual));
  exports.Set("threads", Napi::Number::New(env, omp_get_max_threads()));
  auto acts = Napi::Array::New(env);
  for (uint32_t i = 0; i < std::size(kActNames); i++) acts.Set(i, Napi::String::New(env, kActNames[i]));
  exports.Set("activations", acts);
  // What a core asked for bf16 computes in on this CPU: bf16-amx, bf16-avx512 or fp32 (no kernel).
  exports.Set("bf16Kernel", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
    return Napi::String::New(i.Env(), bf16_kernel_name(detect_bf16_kernel()));
  }));
  return exports;
}

NODE_API_MODULE(vitsae_native, Init)

}  // namespace vitsae
