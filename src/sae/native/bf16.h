// bf16 GEMM for the SAE encoder, C[M,N] = A[M,K] @ W[N,K]^T in fp32, with both inputs rounded to bf16 and the
// products accumulated in fp32. OpenBLAS (Debian's 0.3.21) has no sbgemm, so the kernels are here, each compiled
// for its instruction set with a function attribute and chosen at run time: AMX tiles where the CPU and the kernel
// allow them, else AVX512-BF16 dot products (vdpbf16ps), else none (the caller stays in fp32).
//
// Layouts: A is row-major bf16 [Mp, Kp] (M padded to 32 rows, K to 32, zeros in the padding). W is packed in
// panels of 16 rows of W (16 latents): panel p holds, for each pair of k, the 16 latents' two values side by
// side (64 bytes), which is both the AMX B-tile layout and one zmm of vdpbf16ps.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VITSAE_X86 1
#include <immintrin.h>
#endif
#if defined(__linux__) && defined(VITSAE_X86)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace vitsae {

typedef uint16_t bf16;

enum class Bf16Kernel : int { None = 0, Avx512 = 1, Amx = 2 };

inline const char* bf16_kernel_name(Bf16Kernel k) {
  return k == Bf16Kernel::Amx ? "bf16-amx" : k == Bf16Kernel::Avx512 ? "bf16-avx512" : "fp32";
}

inline int round_up(int v, int m) { return (v + m - 1) / m * m; }

#ifdef VITSAE_X86

// 32 floats -> 32 bf16 (round to nearest even), masked at a row's end.
__attribute__((target("avx512f,avx512bf16"))) inline __m512i cvt32_bf16(const float* a, int n) {
  const __mmask16 lo = n >= 16 ? 0xffff : (__mmask16)((1u << std::max(n, 0)) - 1);
  const __mmask16 hi = n >= 32 ? 0xffff : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, a + 16), _mm512_maskz_loadu_ps(lo, a));
}

// A [M, K] fp32 (row stride lda) -> [Mp, Kp] bf16, zero padded.
__attribute__((target("avx512f,avx512bf16"))) inline void pack_rows_bf16(const float* A, int M, int K, int lda,
                                                                          bf16* out, int Mp, int Kp) {
#pragma omp parallel for schedule(static)
  for (int m = 0; m < Mp; m++) {
    bf16* o = out + (size_t)m * Kp;
    for (int k = 0; k < Kp; k += 32)
      _mm512_storeu_si512(o + k, m < M ? cvt32_bf16(A + (size_t)m * lda + k, K - k) : _mm512_setzero_si512());
  }
}

// Panel p (rows 16p..16p+15 of W [N, K]); each 16 latents x 16 pairs block is a 16 x 16 transpose of 32-bit pairs.
__attribute__((target("avx512f,avx512bf16"))) inline void pack_panel_bf16(const float* W, int N, int K, bf16* out,
                                                                           int p, int Kp) {
  uint32_t* o = (uint32_t*)(out + (size_t)p * Kp * 16);
  alignas(64) uint32_t blk[16][16];
  for (int k = 0; k < Kp; k += 32) {
    for (int j = 0; j < 16; j++) {
      const int n = p * 16 + j;
      _mm512_store_si512(blk[j], n < N ? cvt32_bf16(W + (size_t)n * K + k, K - k) : _mm512_setzero_si512());
    }
    uint32_t* ob = o + (size_t)(k / 2) * 16;
    for (int r = 0; r < 16; r++)
      for (int j = 0; j < 16; j++) ob[r * 16 + j] = blk[j][r];
  }
}

// W [N, K] fp32 -> panels of 16 rows with k pairs interleaved; Np = N rounded up to 32, Kp = K rounded up to 32.
__attribute__((target("avx512f,avx512bf16"))) inline void pack_panels_bf16(const float* W, int N, int K, bf16* out,
                                                                            int Np, int Kp) {
#pragma omp parallel for schedule(static)
  for (int p = 0; p < Np / 16; p++) pack_panel_bf16(W, N, K, out, p, Kp);
}

// 8 rows x 32 latents per block, the k loop in registers (16 accumulators).
__attribute__((target("avx512f,avx512bf16"))) inline void gemm_bf16_avx512(int M, int N, int Kp, const bf16* A,
                                                                            const bf16* Wp, float* C, int ldc) {
  const int pairs = Kp / 2, Np = round_up(N, 32);
  const size_t panel = (size_t)pairs * 32;
  // Latent chunks of 256 (393 KB of W at d 768) stay in L2 while every row block passes over them.
  constexpr int NC = 256;
#pragma omp parallel for schedule(dynamic, 1)
  for (int n0 = 0; n0 < Np; n0 += NC) {
    const int n1 = std::min(Np, n0 + NC);
    for (int m0 = 0; m0 < M; m0 += 8) {
      const int mr = std::min(8, M - m0);
      for (int n = n0; n < n1; n += 32) {
        __m512 acc[8][2];
        for (int i = 0; i < 8; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        const bf16* w0 = Wp + (size_t)(n / 16) * panel;
        const bf16* w1 = w0 + panel;
        const uint32_t* a = (const uint32_t*)(A + (size_t)m0 * Kp);
        const size_t as = Kp / 2;  // A row stride in pairs
        for (int r = 0; r < pairs; r++) {
          const __m512bh b0 = (__m512bh)_mm512_loadu_si512(w0 + (size_t)r * 32);
          const __m512bh b1 = (__m512bh)_mm512_loadu_si512(w1 + (size_t)r * 32);
#pragma GCC unroll 8
          for (int i = 0; i < 8; i++) {
            const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i * as + r]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
          }
        }
        const int nv = std::min(32, N - n);
        const __mmask16 k0 = nv >= 16 ? 0xffff : (__mmask16)((1u << std::max(nv, 0)) - 1);
        const __mmask16 k1 = nv >= 32 ? 0xffff : nv <= 16 ? 0 : (__mmask16)((1u << (nv - 16)) - 1);
        for (int i = 0; i < mr; i++) {
          float* c = C + (size_t)(m0 + i) * ldc + n;
          _mm512_mask_storeu_ps(c, k0, acc[i][0]);
          _mm512_mask_storeu_ps(c + 16, k1, acc[i][1]);
        }
      }
    }
  }
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// 32 rows x 32 latents per block: four C tiles, two A tiles, two B tiles (16 k pairs each).
__attribute__((target("amx-tile,amx-bf16,avx512f"))) inline void gemm_bf16_amx(int M, int N, int Kp, const bf16* A,
                                                                                const bf16* Wp, float* C, int ldc) {
  const int pairs = Kp / 2, Np = round_up(N, 32), Mp = round_up(M, 32);
  const size_t panel = (size_t)pairs * 32;
  constexpr int NC = 512;
#pragma omp parallel
  {
    TileConfig cfg;
    for (int t = 0; t < 8; t++) {
      cfg.rows[t] = 16;
      cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    alignas(64) float edge[32 * 32];
#pragma omp for schedule(dynamic, 1)
    for (int n0 = 0; n0 < Np; n0 += NC) {
      const int n1 = std::min(Np, n0 + NC);
      for (int m0 = 0; m0 < Mp; m0 += 32) {
        for (int n = n0; n < n1; n += 32) {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
          const bf16* w0 = Wp + (size_t)(n / 16) * panel;
          const bf16* w1 = w0 + panel;
          const bf16* a0 = A + (size_t)m0 * Kp;
          const bf16* a1 = a0 + (size_t)16 * Kp;
          for (int kb = 0; kb < Kp; kb += 32) {
            _tile_loadd(4, a0 + kb, Kp * 2);
            _tile_loadd(5, a1 + kb, Kp * 2);
            _tile_loadd(6, w0 + (size_t)kb * 16, 64);
            _tile_loadd(7, w1 + (size_t)kb * 16, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
          if (m0 + 32 <= M && n + 32 <= N) {
            float* c = C + (size_t)m0 * ldc + n;
            _tile_stored(0, c, ldc * 4);
            _tile_stored(1, c + 16, ldc * 4);
            _tile_stored(2, c + (size_t)16 * ldc, ldc * 4);
            _tile_stored(3, c + (size_t)16 * ldc + 16, ldc * 4);
          } else {
            _tile_stored(0, edge, 128);
            _tile_stored(1, edge + 16, 128);
            _tile_stored(2, edge + 16 * 32, 128);
            _tile_stored(3, edge + 16 * 32 + 16, 128);
            for (int i = 0; i < 32 && m0 + i < M; i++)
              for (int j = 0; j < 32 && n + j < N; j++) C[(size_t)(m0 + i) * ldc + n + j] = edge[i * 32 + j];
          }
        }
      }
    }
    _tile_release();
  }
}

#else

// Other CPUs have no bf16 kernel (detect_bf16_kernel says None), so these are never reached.
inline void pack_rows_bf16(const float*, int, int, int, bf16*, int, int) { throw std::logic_error("no bf16 kernel"); }
inline void pack_panels_bf16(const float*, int, int, bf16*, int, int) { throw std::logic_error("no bf16 kernel"); }
inline void pack_panel_bf16(const float*, int, int, bf16*, int, int) { throw std::logic_error("no bf16 kernel"); }

#endif  // VITSAE_X86

// Linux gives a process AMX tile state only after it asks (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA).
inline bool amx_permitted() {
#if defined(__linux__) && defined(VITSAE_X86)
  static const bool ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return ok;
#else
  return false;
#endif
}

// The best kernel this CPU runs. VITSAE_BF16_KERNEL=avx512|none caps it (tests reach every path on one machine).
inline Bf16Kernel detect_bf16_kernel() {
  const char* cap = std::getenv("VITSAE_BF16_KERNEL");
  const std::string c = cap ? cap : "";
  Bf16Kernel k = Bf16Kernel::None;
#ifdef VITSAE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16")) k = Bf16Kernel::Avx512;
  if (__builtin_cpu_supports("amx-bf16") && amx_permitted()) k = Bf16Kernel::Amx;
#endif
  if (c == "none") return Bf16Kernel::None;
  if (c == "avx512" && k == Bf16Kernel::Amx) return Bf16Kernel::Avx512;
  return k;
}

// C = A W^T on the chosen kernel; A [Mp, Kp] and Wp packed as above, Mp >= round_up(M, 32).
inline void gemm_bf16(Bf16Kernel k, int M, int N, int Kp, const bf16* A, const bf16* Wp, float* C, int ldc) {
#ifdef VITSAE_X86
  if (k == Bf16Kernel::Amx) return gemm_bf16_amx(M, N, Kp, A, Wp, C, ldc);
  if (k == Bf16Kernel::Avx512) return gemm_bf16_avx512(M, N, Kp, A, Wp, C, ldc);
#endif
  (void)M, (void)N, (void)Kp, (void)A, (void)Wp, (void)C, (void)ldc;
  throw std::logic_error("no bf16 kernel on this CPU");
}

}  // namespace vitsae
