// The SAE compute core: forward, backward and Adam for ReLU+L1, TopK, BatchTopK and Matryoshka SAEs.
// One template serves float (training) and double (gradient checks against finite differences).
//
// Shape letters: B tokens in the batch, D d_model, S d_sae (latents), P matryoshka prefixes (1 otherwise),
// E active (token, latent) entries of the batch.
//
// Storage: both W_enc and W_dec are kept as [S, D] (row s is latent s's encoder / decoder direction), so the
// sparse paths touch contiguous rows only. The checkpoint's W_enc [D, S] is the transpose, made at save time.
//
// Sparse variants never run a dense decoder or a dense backward: the only dense product is the encoder's
// x @ W_enc^T. The decoder gathers the E active rows of W_dec; the backward computes per-entry gradients
// (pass A, over tokens) and then per-latent row gradients (pass B, over latents, entries grouped by latent so
// that threads never write the same row and sums are deterministic).
#pragma once
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "bf16.h"
#include "blas.h"
#include "topk.h"

namespace vitsae {

// Allocator of the core's buffers: blocks of 2 MB and more are 2 MB aligned, so that resize_zeroed can ask for
// transparent huge pages, and resize() leaves elements uninitialised, so that resize_zeroed touches the pages with
// every thread (page faults are slow in virtual machines: the core's ~300 MB took ~0.3 s on the main thread).
template <typename T>
struct BigAllocator {
  using value_type = T;
  static constexpr size_t kHuge = size_t(1) << 21;
  BigAllocator() = default;
  template <typename U>
  BigAllocator(const BigAllocator<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kHuge) return std::allocator<T>().allocate(n);
    void* p = std::aligned_alloc(kHuge, (bytes + kHuge - 1) / kHuge * kHuge);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    if (n * sizeof(T) < kHuge) std::allocator<T>().deallocate(p, n);
    else std::free(p);
  }
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
  template <typename U>
  bool operator==(const BigAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const BigAllocator<U>&) const { return false; }
};

template <typename T>
using Buf = std::vector<T, BigAllocator<T>>;

// How a buffer is read. Gathered: rows at random (W_enc, W_dec, their gradients, the [B, D] rows), where 4 KB
// pages miss the TLB on nearly every row, so it gets transparent huge pages (Linux). Streamed: in order (Adam's
// moments, the [B, S] pre-activations), where huge pages gain nothing per step and cost at creation: on the virtual
// machines measured here a cold huge page faults in ~5x slower than 4 KB pages (320 MB: 0.46 s against 0.09 s).
enum class Access { Gathered, Streamed };

// Resizes v to n elements, all zero, the pages touched in parallel (huge pages first asked for when gathered).
template <typename V>
void resize_zeroed(V& v, size_t n, Access access) {
  using T = typename V::value_type;
  v.resize(n);
  T* p = v.data();
#ifdef MADV_HUGEPAGE
  const size_t bytes = n * sizeof(T), huge = size_t(1) << 21;
  if (access == Access::Gathered && bytes >= huge) madvise(p, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE);
#else
  (void)access;
#endif
  const int64_t chunks = (int64_t)((n + 65535) / 65536);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; c++) {
    const size_t lo = (size_t)c * 65536, hi = std::min(n, lo + 65536);
    std::memset(static_cast<void*>(p + lo), 0, (hi - lo) * sizeof(T));
  }
}

// The activations, in the order of their ids; the names are exported by the addon and checked against the
// registry in src/sae/activations.ts when it loads.
enum class Act : int { ReLU = 0, TopK = 1, BatchTopK = 2, Matryoshka = 3 };
inline constexpr const char* kActNames[] = {"relu", "topk", "batchtopk", "matryoshka"};

struct CoreOptions {
  int d = 0, s = 0;
  Act act = Act::TopK;
  int k = 32;
  std::vector<int> prefixes;  // ascending, last = s; one prefix unless matryoshka
  int k_aux = 0;
  double aux_coeff = 0;
  double dead_window = 1e7;
  double threshold_momentum = 0.99;
  // ReLU trains through the sparse paths when at most this fraction of (token, latent) pairs fire, as after
  // the first steps of any useful L1 run; denser batches use dense GEMMs.
  double sparse_relu_density = 0.02;
};

struct StepHyper {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, clip = 0;
};

struct StepStats {
  double loss = 0;      // total loss that was differentiated: mean over tokens of ||x - x_hat||^2 (+ terms)
  double mse = 0;       // mean squared error per element of the full reconstruction (scaled space)
  double prefix_mse = 0;  // matryoshka: sum over prefixes of their mse (= mse otherwise)
  double l1_loss = 0;   // relu: l1 * mean over tokens of sum_s f_s
  double aux_loss = 0;  // auxk term (already weighted)
  double l0 = 0;        // mean active latents per token
  double grad_norm = 0;  // global gradient norm before clipping (set by update)
  double n_dead = 0;    // latents counted dead when the batch was drawn
};

// A training step's phases; the core sums the wall time of each (read by the benchmark's breakdown).
enum class Phase : int { Encode, Select, Decode, Backward, Update };
inline constexpr const char* kPhaseNames[] = {"encode", "select", "decode", "backward", "update"};

// Adds the wall time of its scope to a phase's total.
class PhaseTimer {
 public:
  explicit PhaseTimer(double& total) : total(total), t0(std::chrono::steady_clock::now()) {}
  ~PhaseTimer() { total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }

 private:
  double& total;
  std::chrono::steady_clock::time_point t0;
};

// Float64 sums over every token seen since the last take(): enough for MSE, FVU and explained variance.
struct Metrics {
  double n = 0, sse = 0, l0 = 0, sum_x2 = 0, sum_r2 = 0;
  std::vector<double> sum_x, sum_r, fires;  // [D], [D], [S]
  void reset(int d, int s) {
    n = sse = l0 = sum_x2 = sum_r2 = 0;
    sum_x.assign(d, 0);
    sum_r.assign(d, 0);
    fires.assign(s, 0);
  }
};

// The build targets generic x86-64 (or any CPU); the float loops that dominate a sparse step are compiled again
// for AVX-512 and AVX2 and picked at load time by the CPU's features (GCC's target_clones: an ifunc on Linux).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define VITSAE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VITSAE_CLONES
#endif

// Dot product that the compiler may vectorise: strict IEEE order would force one serial add chain per call.
template <typename T>
[[gnu::always_inline]] inline T dot_body(const T* a, const T* b, int n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int i = 0; i < n; i++) acc += a[i] * b[i];
  return acc;
}

// y += a x
template <typename T>
[[gnu::always_inline]] inline void axpy_body(T a, const T* x, T* y, int n) {
#pragma omp simd
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

// Adam on n values: the moments take the (scaled) gradient, the parameter moves by step * m / (sqrt(v) / sbc2 + eps).
template <typename T>
[[gnu::always_inline]] inline void adam_body(T* p, const T* g, T* m, T* v, size_t n, T b1, T b2, T sc, T step, T sbc2,
                                             T eps) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) {
    T gi = g[i] * sc;
    T mi = b1 * m[i] + (1 - b1) * gi;
    T vi = b2 * v[i] + (1 - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= step * mi / (std::sqrt(vi) / sbc2 + eps);
  }
}

// Scales w to unit norm (the norm summed in double) and returns the new |w|^2.
template <typename T>
[[gnu::always_inline]] inline T normalize_body(T* w, int n) {
  double sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int i = 0; i < n; i++) sq += (double)w[i] * w[i];
  if (sq > 0) {
    const double inv = 1 / std::sqrt(sq);
#pragma omp simd
    for (int i = 0; i < n; i++) w[i] = (T)(w[i] * inv);
  }
  return dot_body(w, w, n);
}

// The float versions (training) are the cloned ones; the double versions serve the gradient checks.
VITSAE_CLONES static float dot(const float* a, const float* b, int n) { return dot_body(a, b, n); }
inline double dot(const double* a, const double* b, int n) { return dot_body(a, b, n); }
VITSAE_CLONES static void axpy(float a, const float* x, float* y, int n) { axpy_body(a, x, y, n); }
inline void axpy(double a, const double* x, double* y, int n) { axpy_body(a, x, y, n); }
VITSAE_CLONES static float normalize(float* w, int n) { return normalize_body(w, n); }
inline double normalize(double* w, int n) { return normalize_body(w, n); }
VITSAE_CLONES static void adam_span(float* p, const float* g, float* m, float* v, size_t n, float b1, float b2,
                                    float sc, float step, float sbc2, float eps) {
  adam_body(p, g, m, v, n, b1, b2, sc, step, sbc2, eps);
}
inline void adam_span(double* p, const double* g, double* m, double* v, size_t n, double b1, double b2, double sc,
                      double step, double sbc2, double eps) {
  adam_body(p, g, m, v, n, b1, b2, sc, step, sbc2, eps);
}

// One latent's two gradient rows over its n entries: gd = sum_j a_j g_j, ge = sum_j p_j x_j (rows g_j of G or the
// AuxK residual, x_j of x - b_dec); adds |gd|^2 and |ge|^2 to sums.
template <typename T>
[[gnu::always_inline]] inline void grad_rows_body(const T* const* g, const T* const* x, const T* a, const T* p,
                                                  int64_t n, int D, T* gd, T* ge, double* sums) {
  std::fill(gd, gd + D, (T)0);
  std::fill(ge, ge + D, (T)0);
  for (int64_t j = 0; j < n; j++) {
    const T* gj = g[j];
    const T* xj = x[j];
    const T aj = a[j], pj = p[j];
#pragma omp simd
    for (int d = 0; d < D; d++) {
      gd[d] += aj * gj[d];
      ge[d] += pj * xj[d];
    }
  }
  T dd = 0, ee = 0;
#pragma omp simd reduction(+ : dd, ee)
  for (int d = 0; d < D; d++) {
    dd += gd[d] * gd[d];
    ee += ge[d] * ge[d];
  }
  sums[0] += dd;
  sums[1] += ee;
}
VITSAE_CLONES static void grad_rows(const float* const* g, const float* const* x, const float* a, const float* p,
                                   int64_t n, int D, float* gd, float* ge, double* sums) {
  grad_rows_body(g, x, a, p, n, D, gd, ge, sums);
}
inline void grad_rows(const double* const* g, const double* const* x, const double* a, const double* p, int64_t n,
                      int D, double* gd, double* ge, double* sums) {
  grad_rows_body(g, x, a, p, n, D, gd, ge, sums);
}

// dst [cols, rows] = src [rows, cols] transposed, in 64 x 64 blocks (cache-sized), the row blocks split over threads.
template <typename T>
void transpose_rows(const T* src, int rows, int cols, T* dst) {
  constexpr int kBlock = 64;
#pragma omp parallel for schedule(static)
  for (int r0 = 0; r0 < rows; r0 += kBlock) {
    const int r1 = std::min(rows, r0 + kBlock);
    for (int c0 = 0; c0 < cols; c0 += kBlock) {
      const int c1 = std::min(cols, c0 + kBlock);
      for (int r = r0; r < r1; r++)
        for (int c = c0; c < c1; c++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
    }
  }
}

template <typename T>
class SaeCore {
 public:
  const int D, S;
  const Act act;
  const int K;
  const std::vector<int> prefixes;
  const int P;
  int k_aux;
  double aux_coeff, dead_window, thr_mom, sparse_relu_density;

  Buf<T> W_enc, b_enc, W_dec, b_dec;  // [S,D], [S], [S,D], [D]
  Buf<T> gW_enc, gb_enc, gW_dec, gb_dec;
  Buf<T> mW_enc, mb_enc, mW_dec, mb_dec, vW_enc, vb_enc, vW_dec, vb_dec;
  double adam_step = 0;
  double threshold = -1;             // batchtopk inference threshold; < 0 until the first training batch
  std::vector<double> since_fired;   // [S] tokens since each latent last fired (training only)
  std::array<double, std::size(kPhaseNames)> phase_s{};  // seconds spent in each Phase since the core was made
  Metrics metrics;

  // Sparse activations of the last forward, CSR by token.
  std::vector<int64_t> rowptr;  // [B+1]
  std::vector<int32_t> idx;     // [E]
  std::vector<T> val;           // [E]

  explicit SaeCore(const CoreOptions& o)
      : D(o.d), S(o.s), act(o.act), K(o.k), prefixes(o.prefixes.empty() ? std::vector<int>{o.s} : o.prefixes),
        P((int)prefixes.size()), k_aux(o.k_aux), aux_coeff(o.aux_coeff), dead_window(o.dead_window),
        thr_mom(o.threshold_momentum), sparse_relu_density(o.sparse_relu_density) {
    if (D <= 0 || S <= 0) throw std::invalid_argument("d and s must be positive");
    if (act != Act::ReLU && (K <= 0 || K > S)) throw std::invalid_argument("k must be in 1..d_sae");
    if (prefixes.back() != S) throw std::invalid_argument("the last prefix must equal d_sae");
    size_t sd = (size_t)S * D;
    for (auto* v : {&W_enc, &W_dec, &gW_enc, &gW_dec}) resize_zeroed(*v, sd, Access::Gathered);
    for (auto* v : {&mW_enc, &mW_dec, &vW_enc, &vW_dec}) resize_zeroed(*v, sd, Access::Streamed);
    for (auto* v : {&b_enc, &gb_enc, &mb_enc, &vb_enc}) resize_zeroed(*v, S, Access::Streamed);
    for (auto* v : {&b_dec, &gb_dec, &mb_dec, &vb_dec}) resize_zeroed(*v, D, Access::Streamed);
    since_fired.assign(S, 0);
    group_of.assign(S, 0);
    for (int s = 0, g = 0; s < S; s++) {
      while (s >= prefixes[g]) g++;
      group_of[s] = (uint8_t)g;
    }
    metrics.reset(D, S);
  }

  // TopK, BatchTopK and Matryoshka choose their active latents; ReLU keeps every positive one.
  bool selects() const { return act != Act::ReLU; }
  const char* compute_name() const { return bf16_kernel_name(bf16_kernel); }

  // Encoder GEMM in bf16 (fp32 accumulation; weights, gradients and Adam state stay fp32). Float cores only; where
  // the CPU has no bf16 kernel the core stays in fp32 and says so through compute_name().
  void set_bf16(bool on) {
    if constexpr (std::is_same_v<T, float>) bf16_kernel = on ? detect_bf16_kernel() : Bf16Kernel::None;
    W_enc_bf_fresh = false;
  }

  // Forward and backward on x_BD (already scaled). Fills the g* buffers with raw gradients of the loss and
  // returns its terms. aux_target_BD, when given, replaces the AuxK target x - x_hat (which is otherwise a
  // constant of the graph, as in the papers): it lets a finite-difference test see the same function.
  StepStats forward_backward(const T* x, int B, double l1, const T* aux_target = nullptr) {
    StepStats st;
    row_stats_valid = false;
    {
      PhaseTimer t(phase(Phase::Encode));
      encode_pre(x, B);
    }
    l1_grad = 0;
    bool dense = false;
    {
      PhaseTimer t(phase(Phase::Select));
      dense = !selects() && !dense_to_csr(B, sparse_relu_density);
    }
    if (dense) {
      PhaseTimer t(phase(Phase::Backward));
      dense_relu_backward(x, B, l1, st);
      return st;
    }
    int n_dead = 0;
    {
      PhaseTimer t(phase(Phase::Select));
      if (selects()) select(B, true);
      else l1_grad = l1 / B;
      exact_values(B);
      std::vector<double> fired_batch = batch_fires(B);
      n_dead = select_aux(B);
      st.n_dead = n_dead;
      for (int s = 0; s < S; s++) since_fired[s] = fired_batch[s] > 0 ? 0 : since_fired[s] + B;
    }
    {
      PhaseTimer t(phase(Phase::Decode));
      decode_and_loss(x, B, st, aux_target, n_dead > 0, true);
      if (l1_grad > 0) {
        double sum = 0;
        for (int64_t e = 0; e < rowptr[B]; e++) sum += val[e];
        st.l1_loss = l1 * sum / B;
        st.loss += st.l1_loss;
      }
    }
    PhaseTimer t(phase(Phase::Backward));
    sparse_backward(B);
    return st;
  }

  // The step's input x * scale in the core's own rows, reused from step to step; scaled in double as JS would.
  const T* load_input(const T* x, int B, double scale) {
    const size_t n = (size_t)B * D;
    if (x_in.size() < n) resize_zeroed(x_in, n, Access::Gathered);
    T* o = x_in.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)n; i++) o[i] = (T)((double)x[i] * scale);
    return o;
  }

  // Inference: activations (CSR in rowptr/idx/val) and, if xhat_out, the reconstruction. Accumulates metrics.
  void infer(const T* x, int B, T* xhat_out) {
    encode_pre(x, B);
    if (selects()) {
      select(B, false);
    } else {
      dense_to_csr(B);
    }
    exact_values(B);
    StepStats st;
    decode_and_loss(x, B, st, nullptr, false, false);
    if (xhat_out) std::memcpy(xhat_out, xhat.data(), sizeof(T) * (size_t)B * D);
  }

  // Decoder-row gradient projection, global-norm clipping, Adam, decoder-row renormalisation.
  //
  // The sparse backward leaves each decoder row's g.w and each latent's squared gradient norm (rows still in
  // cache then), so the update reads the big matrices once: per block of 16 latents, Adam on the encoder rows
  // (and their bf16 panel), projection, Adam and renormalisation of the decoder rows.
  double update(const StepHyper& h) {
    PhaseTimer t(phase(Phase::Update));
    const bool fused = row_stats_valid;
    row_stats_valid = false;
    double sq = sumsq(gb_enc) + sumsq(gb_dec);
    if (fused) {
      for (int s = 0; s < S; s++) sq += row_sq[s];
    } else {
      // Remove the gradient component parallel to each (unit) decoder row: the norm constraint's tangent space.
#pragma omp parallel for schedule(static)
      for (int s = 0; s < S; s++) {
        T* g = &gW_dec[(size_t)s * D];
        const T* w = &W_dec[(size_t)s * D];
        const T gw = dot(g, w, D);
        axpy(-gw, w, g, D);
      }
      sq += sumsq(gW_enc) + sumsq(gW_dec);
    }
    double norm = std::sqrt(sq);
    double scale = (h.clip > 0 && norm > h.clip) ? h.clip / norm : 1.0;
    adam_step += 1;
    const AdamStep a(h, scale, adam_step);
    const bool pack = bf16_kernel != Bf16Kernel::None && !W_enc_bf.empty();
    row_ww.resize(S);
#pragma omp parallel for schedule(static)
    for (int s0 = 0; s0 < S; s0 += 16) {
      const int s1 = std::min(S, s0 + 16);
      const size_t o = (size_t)s0 * D, n = (size_t)(s1 - s0) * D;
      a.run(&W_enc[o], &gW_enc[o], &mW_enc[o], &vW_enc[o], n);
      if constexpr (std::is_same_v<T, float>) {
        if (pack) pack_panel_bf16(W_enc.data(), S, D, W_enc_bf.data(), s0 / 16, round_up(D, 32));
      }
      for (int s = s0; s < s1; s++) {
        T* g = &gW_dec[(size_t)s * D];
        T* w = &W_dec[(size_t)s * D];
        if (fused) axpy(-row_gw[s], w, g, D);
        a.run(w, g, &mW_dec[(size_t)s * D], &vW_dec[(size_t)s * D], D);
        row_ww[s] = normalize_row(w);
      }
    }
    row_ww_valid = true;
    W_enc_bf_fresh = pack;
    a.run(b_enc.data(), gb_enc.data(), mb_enc.data(), vb_enc.data(), S);
    a.run(b_dec.data(), gb_dec.data(), mb_dec.data(), vb_dec.data(), D);
    return norm;
  }

  double& phase(Phase p) { return phase_s[(int)p]; }

  void normalize_decoder() {
#pragma omp parallel for schedule(static)
    for (int s = 0; s < S; s++) normalize_row(&W_dec[(size_t)s * D]);
    row_ww_valid = false;
  }

  // JS replaced a parameter or gradient: the bf16 copy of the encoder and the backward's row statistics are stale.
  void weights_changed() { W_enc_bf_fresh = row_stats_valid = row_ww_valid = false; }

 private:
  std::vector<uint8_t> group_of;  // [S] matryoshka group of each latent
  Bf16Kernel bf16_kernel = Bf16Kernel::None;
  Buf<bf16> xc_bf, W_enc_bf;  // bf16 copies for the encoder GEMM: [Bp, Dp] rows, [Sp, Dp] packed panels
  Buf<bf16> W_dec_bf;         // dense ReLU's G @ W_dec^T in bf16: W_dec's packed panels, [Sp, Dp]
  bool W_enc_bf_fresh = false;        // the update packed W_enc_bf from the current W_enc
  // Left by the sparse backward for the next update: per latent, its decoder row's g.w and the squared norm of
  // its (projected) gradient rows.
  std::vector<T> row_gw;
  std::vector<double> row_sq;
  bool row_stats_valid = false;
  std::vector<T> row_ww;  // |w|^2 of each decoder row, as the update left it
  bool row_ww_valid = false;
  std::vector<T> edot;    // [E + E_aux] per entry, G_b . w_s (AuxK entries: AuxK residual . w_s)
  std::vector<double> g0_sum;  // [D] column sums of G[:, 0]
  // The entries in latent order, for the per-latent gradient rows: source rows and their coefficients.
  std::vector<const T*> ent_g, ent_x;
  std::vector<T> ent_a, ent_p, ent_dot;
  int B_cap = 0;
  Buf<T> x_in, xc, xhat, G, aux_diff;  // [B,D], [B,D], [B,D], [B,P,D], [B,D]
  Buf<T> pre, dense_d;  // [B, S]
  std::vector<int64_t> aux_rowptr;
  std::vector<int32_t> aux_idx;
  std::vector<T> aux_val;
  double aux_grad_scale = 0;
  double l1_grad = 0;  // dL1/df per active entry on ReLU's sparse path

  void ensure(int B) {
    if (B <= B_cap) return;
    B_cap = B;
    for (auto* v : {&xc, &xhat, &aux_diff}) resize_zeroed(*v, (size_t)B * D, Access::Gathered);
    resize_zeroed(G, (size_t)B * P * D, Access::Gathered);
    resize_zeroed(pre, (size_t)B * S, Access::Streamed);
    if (!selects()) resize_zeroed(dense_d, (size_t)B * S, Access::Streamed);
  }

  static double sumsq(const Buf<T>& v) {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < v.size(); i++) s += (double)v[i] * v[i];
    return s;
  }

  // Adam's constants for one step (bias corrections, clipping scale).
  struct AdamStep {
    T b1, b2, sc, step, sbc2, eps;
    AdamStep(const StepHyper& h, double scale, double t)
        : b1((T)h.beta1), b2((T)h.beta2), sc((T)scale), step((T)(h.lr / (1 - std::pow(h.beta1, t)))),
          sbc2((T)std::sqrt(1 - std::pow(h.beta2, t))), eps((T)h.eps) {}
    void run(T* p, const T* g, T* m, T* v, size_t n) const { adam_span(p, g, m, v, n, b1, b2, sc, step, sbc2, eps); }
  };

  T normalize_row(T* w) const { return normalize(w, D); }

  // xc = x - b_dec; pre = xc @ W_enc^T (without b_enc, which the selections add on the fly).
  void encode_pre(const T* x, int B) {
    ensure(B);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)
      for (int d = 0; d < D; d++) xc[(size_t)b * D + d] = x[(size_t)b * D + d] - b_dec[d];
    if constexpr (std::is_same_v<T, float>) {
      if (bf16_kernel != Bf16Kernel::None) {
        const int Bp = round_up(B, 32), Dp = round_up(D, 32), Sp = round_up(S, 32);
        if (xc_bf.size() < (size_t)Bp * Dp) resize_zeroed(xc_bf, (size_t)Bp * Dp, Access::Gathered);
        if (W_enc_bf.size() < (size_t)Sp * Dp) resize_zeroed(W_enc_bf, (size_t)Sp * Dp, Access::Gathered);
        pack_rows_bf16(xc.data(), B, D, D, xc_bf.data(), Bp, Dp);
        if (!W_enc_bf_fresh) pack_panels_bf16(W_enc.data(), S, D, W_enc_bf.data(), Sp, Dp);
        W_enc_bf_fresh = true;
        gemm_bf16(bf16_kernel, B, S, Dp, xc_bf.data(), W_enc_bf.data(), pre.data(), S);
        return;
      }
    }
    gemm(false, true, B, S, D, (T)1, xc.data(), D, W_enc.data(), D, (T)0, pre.data(), S);
  }

  // After a bf16 encoder GEMM, bf16 has chosen the active latents (a swap at the selection's edge is harmless),
  // but their values are recomputed in fp32, so the reconstruction, the loss and every gradient are fp32's for that
  // choice: without this, TopK runs on synthetic atoms ended 3-6% worse in nmse than fp32.
  void exact_values(int B) {
    if (bf16_kernel == Bf16Kernel::None) return;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
      const T* xb = &xc[(size_t)b * D];
      for (int64_t e = rowptr[b]; e < rowptr[b + 1]; e++)
        val[e] = std::max(dot(xb, &W_enc[(size_t)idx[e] * D], D) + b_enc[idx[e]], (T)0);
    }
  }

  // Chooses the active entries into rowptr/idx/val: per token for TopK, per batch for BatchTopK/Matryoshka.
  void select(int B, bool train) {
    rowptr.assign(B + 1, 0);
    if (act == Act::TopK) select_topk(B);
    else select_batch(B, train);
  }

  // TopK: the k largest pre-activations per token, ties going to the lower latent (values ReLU'd, so an entry may
  // be 0 only when fewer than k are positive); see topk.h.
  void select_topk(int B) {
    idx.resize((size_t)B * K);
    val.resize((size_t)B * K);
#pragma omp parallel
    {
      TopkScratch<T> scratch;
#pragma omp for schedule(static)
      for (int b = 0; b < B; b++)
        topk_row(&pre[(size_t)b * S], b_enc.data(), S, K, scratch, &idx[(size_t)b * K], &val[(size_t)b * K]);
    }
    for (int b = 0; b <= B; b++) rowptr[b] = (int64_t)b * K;
  }

  // BatchTopK/Matryoshka: training keeps the k*B largest positive values of the batch and moves the threshold
  // toward the smallest kept one; inference keeps the values above the learned threshold.
  void select_batch(int B, bool train) {
    T thr;
    int64_t take_ties = 0;  // how many entries equal to thr are kept (train), in token order
    if (train) {
      const int64_t want_all = (int64_t)K * B;
      std::vector<T> cand = batch_candidates(B, want_all);
      const int64_t want = std::min<int64_t>(want_all, (int64_t)cand.size());
      if (want == 0) {
        thr = std::numeric_limits<T>::infinity();
      } else {
        std::nth_element(cand.begin(), cand.begin() + (want - 1), cand.end(), std::greater<T>());
        thr = cand[want - 1];
        int64_t above = 0;
        for (T v : cand) above += v > thr;
        take_ties = want - above;
        double t = (double)thr;
        threshold = threshold < 0 ? t : thr_mom * threshold + (1 - thr_mom) * t;
      }
    } else {
      thr = threshold < 0 ? (T)0 : (T)threshold;
    }
    // Count per row, then fill; ties at thr go to the earliest tokens and latents, which is deterministic.
    std::vector<int64_t> cnt(B, 0), ties(B, 0);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
      const T* row = &pre[(size_t)b * S];
      int64_t c = 0, t = 0;
      for (int s = 0; s < S; s++) {
        T v = row[s] + b_enc[s];
        if (v > thr && v > 0) c++;
        else if (train && v == thr && v > 0) t++;
      }
      cnt[b] = c;
      ties[b] = t;
    }
    std::vector<int64_t> tie_quota(B, 0);
    for (int b = 0; b < B; b++) {
      tie_quota[b] = std::min(ties[b], take_ties);
      take_ties -= tie_quota[b];
      rowptr[b + 1] = rowptr[b] + cnt[b] + tie_quota[b];
    }
    idx.resize(rowptr[B]);
    val.resize(rowptr[B]);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
      const T* row = &pre[(size_t)b * S];
      int64_t o = rowptr[b], q = tie_quota[b];
      for (int s = 0; s < S; s++) {
        T v = row[s] + b_enc[s];
        bool keep = v > thr && v > 0;
        if (!keep && q > 0 && v == thr && v > 0) {
          keep = true;
          q--;
        }
        if (keep) {
          idx[o] = s;
          val[o++] = v;
        }
      }
    }
  }

  // The positive values of the batch that may be among its `want` largest: a histogram of (0, max] finds a
  // lower bound whose bin still holds the want-th value, so only a little more than `want` values are
  // collected for the exact selection, in three parallel passes instead of one serial pass over B x S.
  std::vector<T> batch_candidates(int B, int64_t want) {
    constexpr int NB = 4096;
    T vmax = 0;
#pragma omp parallel for reduction(max : vmax) schedule(static)
    for (int b = 0; b < B; b++) {
      const T* row = &pre[(size_t)b * S];
      for (int s = 0; s < S; s++) vmax = std::max(vmax, row[s] + b_enc[s]);
    }
    if (!(vmax > 0)) return {};
    const T scale = (T)NB / vmax;
    std::vector<int64_t> hist(NB, 0);
#pragma omp parallel
    {
      std::vector<int64_t> h(NB, 0);
#pragma omp for schedule(static)
      for (int b = 0; b < B; b++) {
        const T* row = &pre[(size_t)b * S];
        for (int s = 0; s < S; s++) {
          const T v = row[s] + b_enc[s];
          if (v > 0) h[std::min(NB - 1, (int)(v * scale))]++;
        }
      }
#pragma omp critical
      for (int i = 0; i < NB; i++) hist[i] += h[i];
    }
    int lo_bin = NB - 1;
    for (int64_t c = hist[NB - 1]; lo_bin > 0 && c < want; c += hist[--lo_bin]) {
    }
    // Keep values in bins >= lo_bin, binned exactly as above so no boundary value is lost; the candidates' order
    // depends on thread timing, but the selected value and count do not.
    std::vector<T> cand;
#pragma omp parallel
    {
      std::vector<T> mine;
#pragma omp for schedule(static) nowait
      for (int b = 0; b < B; b++) {
        const T* row = &pre[(size_t)b * S];
        for (int s = 0; s < S; s++) {
          const T v = row[s] + b_enc[s];
          if (v > 0 && (lo_bin == 0 || std::min(NB - 1, (int)(v * scale)) >= lo_bin)) mine.push_back(v);
        }
      }
#pragma omp critical
      cand.insert(cand.end(), mine.begin(), mine.end());
    }
    return cand;
  }

  // Fires per latent in the current batch (entries with a positive value).
  std::vector<double> batch_fires(int B) {
    std::vector<double> f(S, 0);
    for (int64_t e = 0; e < rowptr[B]; e++)
      if (val[e] > 0) f[idx[e]] += 1;
    return f;
  }

  // AuxK: per token, the k_aux largest (ReLU'd) pre-activations among dead latents. Returns the dead count.
  int select_aux(int B) {
    aux_rowptr.assign(B + 1, 0);
    aux_idx.clear();
    aux_val.clear();
    if (aux_coeff <= 0 || k_aux <= 0) return 0;
    std::vector<int32_t> dead;
    for (int s = 0; s < S; s++)
      if (since_fired[s] >= dead_window) dead.push_back(s);
    if (dead.empty()) return 0;
    const int ka = std::min<int>(k_aux, (int)dead.size());
    aux_idx.resize((size_t)B * ka);
    aux_val.resize((size_t)B * ka);
#pragma omp parallel
    {
      std::vector<std::pair<T, int32_t>> cand(dead.size());
#pragma omp for schedule(static)
      for (int b = 0; b < B; b++) {
        const T* row = &pre[(size_t)b * S];
        for (size_t j = 0; j < dead.size(); j++) cand[j] = {row[dead[j]] + b_enc[dead[j]], dead[j]};
        std::nth_element(cand.begin(), cand.begin() + (ka - 1), cand.end(),
                         [](auto& a, auto& c) { return a.first > c.first || (a.first == c.first && a.second < c.second); });
        std::sort(cand.begin(), cand.begin() + ka, [](auto& a, auto& c) { return a.second < c.second; });
        for (int j = 0; j < ka; j++) {
          aux_idx[(size_t)b * ka + j] = cand[j].second;
          aux_val[(size_t)b * ka + j] = std::max(cand[j].first, (T)0);
        }
      }
    }
    for (int b = 0; b <= B; b++) aux_rowptr[b] = (int64_t)b * ka;
    return (int)dead.size();
  }

  // ReLU: the dense activations as CSR, so that one sparse decoder serves every variant. Returns false, having
  // only counted, when more than `max_density` of the entries fire.
  bool dense_to_csr(int B, double max_density = 1.0) {
    std::vector<int64_t> cnt(B, 0);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
      int64_t c = 0;
      for (int s = 0; s < S; s++) c += pre[(size_t)b * S + s] + b_enc[s] > 0;
      cnt[b] = c;
    }
    rowptr.assign(B + 1, 0);
    for (int b = 0; b < B; b++) rowptr[b + 1] = rowptr[b] + cnt[b];
    if ((double)rowptr[B] > max_density * B * S) return false;
    idx.resize(rowptr[B]);
    val.resize(rowptr[B]);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
      int64_t o = rowptr[b];
      for (int s = 0; s < S; s++) {
        T v = pre[(size_t)b * S + s] + b_enc[s];
        if (v > 0) {
          idx[o] = s;
          val[o++] = v;
        }
      }
    }
    return true;
  }

  // Adds one token's metric sums (thread-local partials, merged by the caller).
  struct Partial {
    double sse = 0, x2 = 0, r2 = 0, l0 = 0, prefix_sse = 0, aux_sq = 0, e_sq = 0;
    std::vector<double> sx, sr, se, sg;
  };

  // Sparse decoder (every prefix), the losses, dL/dx_hat per prefix turned into suffix sums G, and the AuxK
  // reconstruction of the residual. Also accumulates the metrics. With `backward`, also each entry's G . W_dec row
  // (edot; the AuxK entries' with the AuxK residual, unweighted), while the token's decoder rows are in cache, and
  // the column sums of G[:, 0] for b_dec (g0_sum).
  void decode_and_loss(const T* x, int B, StepStats& st, const T* aux_target, bool with_aux, bool backward) {
    const int nt = omp_get_max_threads();
    std::vector<Partial> parts(nt);
    for (auto& p : parts) {
      p.sx.assign(D, 0);
      p.sr.assign(D, 0);
      p.se.assign(D, 0);
      p.sg.assign(backward ? D : 0, 0);
    }
    const int64_t E = rowptr[B];
    if (backward) edot.resize(E + aux_rowptr[B]);
    const T inv = (T)(2.0 / B);  // loss = mean over tokens of ||x - x_hat||^2 (summed over d)
#pragma omp parallel
    {
      Partial& pt = parts[omp_get_thread_num()];
      std::vector<T> part((size_t)P * D), ehat(D);
#pragma omp for schedule(static)
      for (int b = 0; b < B; b++) {
        std::fill(part.begin(), part.end(), (T)0);
        int64_t nz = 0;
        for (int64_t e = rowptr[b]; e < rowptr[b + 1]; e++) {
          const T v = val[e];
          if (v == 0) continue;
          nz++;
          const T* w = &W_dec[(size_t)idx[e] * D];
          T* acc = &part[(size_t)group_of[idx[e]] * D];
          axpy(v, w, acc, D);
        }
        const T* xb = x + (size_t)b * D;
        T* xh = &xhat[(size_t)b * D];
        T* Gb = &G[(size_t)b * P * D];
        for (int d = 0; d < D; d++) xh[d] = b_dec[d];
        for (int m = 0; m < P; m++) {
          double sse = 0;
#pragma omp simd reduction(+ : sse)
          for (int d = 0; d < D; d++) {
            xh[d] += part[(size_t)m * D + d];
            T r = xh[d] - xb[d];
            sse += (double)r * r;
            Gb[(size_t)m * D + d] = inv * r;
          }
          pt.prefix_sse += sse;
          if (m == P - 1) pt.sse += sse;
        }
        for (int m = P - 2; m >= 0; m--)
          for (int d = 0; d < D; d++) Gb[(size_t)m * D + d] += Gb[(size_t)(m + 1) * D + d];
        double x2 = 0, r2 = 0;
#pragma omp simd reduction(+ : x2, r2)
        for (int d = 0; d < D; d++) {
          double xv = xb[d], rv = (double)xh[d] - xv;
          x2 += xv * xv;
          r2 += rv * rv;
          pt.sx[d] += xv;
          pt.sr[d] += rv;
        }
        pt.x2 += x2;
        pt.r2 += r2;
        pt.l0 += (double)nz;
        if (backward) {
          for (int d = 0; d < D; d++) pt.sg[d] += Gb[d];
          for (int64_t e = rowptr[b]; e < rowptr[b + 1]; e++) {
            const int s = idx[e];
            edot[e] = val[e] > 0 ? dot(&Gb[(size_t)group_of[s] * D], &W_dec[(size_t)s * D], D) : (T)0;
          }
        }
        if (with_aux) {
          std::fill(ehat.begin(), ehat.end(), (T)0);
          for (int64_t e = aux_rowptr[b]; e < aux_rowptr[b + 1]; e++) {
            const T* w = &W_dec[(size_t)aux_idx[e] * D];
            axpy(aux_val[e], w, ehat.data(), D);
          }
          T* ad = &aux_diff[(size_t)b * D];
          for (int d = 0; d < D; d++) {
            T target = aux_target ? aux_target[(size_t)b * D + d] : xb[d] - xh[d];
            ad[d] = ehat[d] - target;
            pt.aux_sq += (double)ad[d] * ad[d];
            pt.e_sq += (double)target * target;
            pt.se[d] += target;
          }
          if (backward)
            for (int64_t e = aux_rowptr[b]; e < aux_rowptr[b + 1]; e++)
              edot[E + e] = aux_val[e] > 0 ? dot(ad, &W_dec[(size_t)aux_idx[e] * D], D) : (T)0;
        }
      }
    }
    double sse = 0, prefix_sse = 0, l0 = 0, aux_sq = 0, e_sq = 0;
    std::vector<double> se(D, 0);
    g0_sum.assign(D, 0);
    for (auto& p : parts) {
      for (size_t d = 0; d < p.sg.size(); d++) g0_sum[d] += p.sg[d];
      sse += p.sse;
      prefix_sse += p.prefix_sse;
      l0 += p.l0;
      aux_sq += p.aux_sq;
      e_sq += p.e_sq;
      metrics.sse += p.sse;
      metrics.sum_x2 += p.x2;
      metrics.sum_r2 += p.r2;
      metrics.l0 += p.l0;
      for (int d = 0; d < D; d++) {
        metrics.sum_x[d] += p.sx[d];
        metrics.sum_r[d] += p.sr[d];
        se[d] += p.se[d];
      }
    }
    metrics.n += B;
    for (int b = 0; b < B; b++)
      for (int64_t e = rowptr[b]; e < rowptr[b + 1]; e++)
        if (val[e] > 0) metrics.fires[idx[e]] += 1;
    st.mse = sse / ((double)B * D);
    st.prefix_mse = prefix_sse / ((double)B * D);
    st.l0 = l0 / B;
    st.loss = prefix_sse / B;
    aux_grad_scale = 0;
    if (with_aux) {
      // Normalised like an FVU: ||e_hat - e||^2 / ||e - mean(e)||^2 over the batch.
      double mean_sq = 0;
      for (int d = 0; d < D; d++) mean_sq += se[d] * se[d];
      double denom = std::max(e_sq - mean_sq / B, 1e-12);
      st.aux_loss = aux_coeff * aux_sq / denom;
      st.loss += st.aux_loss;
      aux_grad_scale = 2 * aux_coeff / denom;
    }
  }

  // Per-latent gradient rows from the per-entry dot products of the decode. Entries are grouped by latent (counting
  // sort in token order, so sums are deterministic); each thread takes a contiguous range of latents holding about
  // its share of the work. The update's statistics need no pass over W_dec: g.w = sum over entries of a (G_b . w),
  // and |w|^2 is left by the update that normalised w.
  void sparse_backward(int B) {
    const int64_t E = rowptr[B], Ea = aux_rowptr[B], N = E + Ea;
    const T ag = (T)aux_grad_scale, l1g = (T)l1_grad;
    std::vector<int64_t> colptr(S + 1, 0);
    for (int64_t e = 0; e < E; e++) colptr[idx[e] + 1]++;
    for (int64_t e = 0; e < Ea; e++) colptr[aux_idx[e] + 1]++;
    for (int s = 0; s < S; s++) colptr[s + 1] += colptr[s];
    std::vector<int64_t> cursor(colptr.begin(), colptr.end() - 1);
    ent_g.resize(N);
    ent_x.resize(N);
    ent_a.resize(N);
    ent_p.resize(N);
    ent_dot.resize(N);
    // Entry e of token b: gd += a G_b (or the AuxK residual), ge += p (x_b - b_dec), with p = dL/dpre.
    for (int b = 0; b < B; b++) {
      for (int64_t e = rowptr[b]; e < rowptr[b + 1]; e++) {
        const int s = idx[e];
        const int64_t j = cursor[s]++;
        ent_g[j] = &G[((size_t)b * P + group_of[s]) * D];
        ent_x[j] = &xc[(size_t)b * D];
        ent_a[j] = val[e];
        ent_p[j] = val[e] > 0 ? edot[e] + l1g : (T)0;
        ent_dot[j] = edot[e];
      }
      for (int64_t e = aux_rowptr[b]; e < aux_rowptr[b + 1]; e++) {
        const int64_t j = cursor[aux_idx[e]]++;
        ent_g[j] = &aux_diff[(size_t)b * D];
        ent_x[j] = &xc[(size_t)b * D];
        ent_a[j] = aux_val[e] * ag;
        ent_p[j] = aux_val[e] > 0 ? ag * edot[E + e] : (T)0;
        ent_dot[j] = edot[E + e];
      }
    }
    if (!row_ww_valid) {
      row_ww.resize(S);
#pragma omp parallel for schedule(static)
      for (int s = 0; s < S; s++) row_ww[s] = dot(&W_dec[(size_t)s * D], &W_dec[(size_t)s * D], D);
      row_ww_valid = true;
    }
    row_gw.resize(S);
    row_sq.resize(S);
#pragma omp parallel
    {
      const int nt = omp_get_num_threads(), t = omp_get_thread_num();
      // First latent of thread i: a latent costs its entries plus one (clearing and measuring its rows).
      auto first = [&](int i) {
        const int64_t target = (N + S) * i / nt;
        int lo = 0, hi = S;
        while (lo < hi) {
          const int mid = (lo + hi) / 2;
          if (colptr[mid] + mid < target) lo = mid + 1;
          else hi = mid;
        }
        return lo;
      };
      const int s0 = first(t), s1 = first(t + 1);
      for (int s = s0; s < s1; s++) {
        const int64_t j0 = colptr[s], n = colptr[s + 1] - j0;
        double sq[2] = {0, 0};  // |gd|^2, |ge|^2
        grad_rows(&ent_g[j0], &ent_x[j0], &ent_a[j0], &ent_p[j0], n, D, &gW_dec[(size_t)s * D], &gW_enc[(size_t)s * D], sq);
        T gbe = 0, gw = 0;
        for (int64_t j = j0; j < j0 + n; j++) {
          gbe += ent_p[j];
          gw += ent_a[j] * ent_dot[j];
        }
        gb_enc[s] = gbe;
        row_gw[s] = gw;
        row_sq[s] = sq[1] + sq[0] - (double)gw * gw * (2 - (double)row_ww[s]);
      }
    }
    row_stats_valid = true;
    decoder_bias_grad();
  }

  // b_dec: every prefix's reconstruction contains it (G[:, 0] sums the prefixes' gradients), and the encoder reads
  // x - b_dec, whose gradient summed over tokens is sum_s gb_enc[s] W_enc[s]: one vector-matrix product instead of
  // a per-token [B, S] @ [S, D] product.
  void decoder_bias_grad() {
    gemm(false, false, 1, D, S, (T)-1, gb_enc.data(), S, W_enc.data(), D, (T)0, gb_dec.data(), D);
    for (int d = 0; d < D; d++) gb_dec[d] += (T)g0_sum[d];
  }

  // dp = G @ W_dec^T, the encoder GEMM's shape, so in bf16 it runs on the same kernel (G and W_dec rounded, fp32
  // accumulation): only this gradient's inputs are rounded, the loss and the weights stay fp32.
  void grad_pre_gemm(int B, T* dp) {
    if constexpr (std::is_same_v<T, float>) {
      if (bf16_kernel != Bf16Kernel::None) {
        const int Bp = round_up(B, 32), Dp = round_up(D, 32), Sp = round_up(S, 32);
        // xc_bf held x - b_dec for the encoder GEMM, which is done with it.
        pack_rows_bf16(G.data(), B, D, D, xc_bf.data(), Bp, Dp);
        if (W_dec_bf.size() < (size_t)Sp * Dp) resize_zeroed(W_dec_bf, (size_t)Sp * Dp, Access::Gathered);
        pack_panels_bf16(W_dec.data(), S, D, W_dec_bf.data(), Sp, Dp);
        gemm_bf16(bf16_kernel, B, S, Dp, xc_bf.data(), W_dec_bf.data(), dp, S);
        return;
      }
    }
    gemm(false, true, B, S, D, (T)1, G.data(), D, W_dec.data(), D, (T)0, dp, S);
  }

  // The paper's recipe, dense: five GEMMs (the encoder input's gradient is only needed summed, for b_dec).
  void dense_relu_backward(const T* x, int B, double l1, StepStats& st) {
    T* f = pre.data();
    int64_t nnz_total = 0;
    double l1_sum = 0;
    // f = relu(pre + b_enc) in place, each thread over its latents for every token, counting each latent's fires
    // on the way (one pass over [B, S] instead of two).
    std::vector<double> fired(S, 0);
#pragma omp parallel reduction(+ : nnz_total, l1_sum)
    {
      const int nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int s0 = (int)((int64_t)S * t / nt), s1 = (int)((int64_t)S * (t + 1) / nt);
      std::vector<int32_t> fires(s1 - s0, 0);
      for (int b = 0; b < B; b++) {
        T* row = f + (size_t)b * S;
        int64_t nnz = 0;
        double sum = 0;
#pragma omp simd reduction(+ : nnz, sum)
        for (int s = s0; s < s1; s++) {
          T v = row[s] + b_enc[s];
          v = v > 0 ? v : (T)0;
          row[s] = v;
          fires[s - s0] += v > 0;
          nnz += v > 0;
          sum += v;
        }
        nnz_total += nnz;
        l1_sum += sum;
      }
      for (int s = s0; s < s1; s++) fired[s] = fires[s - s0];
    }
    gemm(false, false, B, D, S, (T)1, f, S, W_dec.data(), D, (T)0, xhat.data(), D);
    const T inv = (T)(2.0 / B);  // loss = mean over tokens of ||x - x_hat||^2 (summed over d)
    double sse = 0, x2 = 0, r2 = 0;
    std::vector<double> sx(D, 0), sr(D, 0);
    g0_sum.assign(D, 0);
    for (int b = 0; b < B; b++) {
      T* xh = &xhat[(size_t)b * D];
      const T* xb = x + (size_t)b * D;
      T* g = &G[(size_t)b * D];
#pragma omp simd reduction(+ : sse, x2)
      for (int d = 0; d < D; d++) {
        xh[d] += b_dec[d];
        T r = xh[d] - xb[d];
        g[d] = inv * r;
        g0_sum[d] += g[d];
        sse += (double)r * r;
        x2 += (double)xb[d] * xb[d];
        sx[d] += xb[d];
        sr[d] += r;
      }
    }
    r2 = sse;
    metrics.n += B;
    metrics.sse += sse;
    metrics.sum_x2 += x2;
    metrics.sum_r2 += r2;
    metrics.l0 += (double)nnz_total;
    for (int d = 0; d < D; d++) {
      metrics.sum_x[d] += sx[d];
      metrics.sum_r[d] += sr[d];
    }
    for (int s = 0; s < S; s++) {
      metrics.fires[s] += fired[s];
      since_fired[s] = fired[s] > 0 ? 0 : since_fired[s] + B;
    }
    st.mse = st.prefix_mse = sse / ((double)B * D);
    st.l0 = (double)nnz_total / B;
    st.l1_loss = l1 * l1_sum / B;
    st.loss = sse / B + st.l1_loss;
    // dL/dpre = (dL/dx_hat @ W_dec^T + l1/B) where f > 0.
    T* dp = dense_d.data();
    grad_pre_gemm(B, dp);
    const T l1b = (T)(l1 / B);
    // The mask and gb_enc's column sums in one pass, each thread over its latents (sums in token order).
#pragma omp parallel
    {
      const int nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int s0 = (int)((int64_t)S * t / nt), s1 = (int)((int64_t)S * (t + 1) / nt);
      std::vector<double> colsum(s1 - s0, 0.0);
      for (int b = 0; b < B; b++) {
        T* dr = dp + (size_t)b * S;
        const T* fr = f + (size_t)b * S;
#pragma omp simd
        for (int s = s0; s < s1; s++) {
          dr[s] = fr[s] > 0 ? dr[s] + l1b : (T)0;
          colsum[s - s0] += dr[s];
        }
      }
      for (int s = s0; s < s1; s++) gb_enc[s] = (T)colsum[s - s0];
    }
    gemm(true, false, S, D, B, (T)1, f, S, G.data(), D, (T)0, gW_dec.data(), D);
    gemm(true, false, S, D, B, (T)1, dp, S, xc.data(), D, (T)0, gW_enc.data(), D);
    decoder_bias_grad();
  }
};

}  // namespace vitsae
