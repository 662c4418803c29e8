// AVX2 + FMA dot-product tile: 6 rows x 16 columns in 12 ymm accumulators; see dot_tile.h.
#include <immintrin.h>

#include <algorithm>

#include "pyinstance/dot_tile.h"

namespace pyinstance::cpu {

namespace {
constexpr int64_t kRows = 6;
}  // namespace

void dot_rows_avx2(const float* a, int64_t lda, int64_t nrows, const float* packed, int64_t npanels,
                   int64_t dim, float* out, int64_t ldo) {
  for (int64_t r0 = 0; r0 < nrows; r0 += kRows) {
    const float* rows[kRows];
    for (int64_t r = 0; r < kRows; ++r) rows[r] = a + std::min(r0 + r, nrows - 1) * lda;
    const int64_t live = std::min(kRows, nrows - r0);
    for (int64_t q = 0; q < npanels; ++q) {
      const float* panel = packed + q * dim * kDotPanel;
      __m256 acc[kRows][2];
      for (int64_t r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        const __m256 b0 = _mm256_loadu_ps(panel + k * kDotPanel);
        const __m256 b1 = _mm256_loadu_ps(panel + k * kDotPanel + 8);
        for (int64_t r = 0; r < kRows; ++r) {
          const __m256 v = _mm256_broadcast_ss(rows[r] + k);
          acc[r][0] = _mm256_fmadd_ps(v, b0, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(v, b1, acc[r][1]);
        }
      }
      for (int64_t r = 0; r < live; ++r) {
        float* dst = out + (r0 + r) * ldo + q * kDotPanel;
        _mm256_storeu_ps(dst, acc[r][0]);
        _mm256_storeu_ps(dst + 8, acc[r][1]);
      }
    }
  }
}

}  // namespace pyinstance::cpu
