// Row-major GEMM overloads over OpenBLAS so that the SAE core is one template for float (training) and
// double (gradient checks against finite differences).
#pragma once
#ifdef VITSAE_ACCELERATE
#include <Accelerate/Accelerate.h>  // macOS without Homebrew's OpenBLAS: Apple's CBLAS
#else
#include <cblas.h>
#endif

namespace vitsae {

// C[M,N] = alpha * op(A) op(B) + beta * C, row major; op = transpose when the flag is set.
inline void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                 float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
              ldb, beta, C, ldc);
}

inline void gemm(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda, const double* B,
                 int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
              ldb, beta, C, ldc);
}

}  // namespace vitsae
