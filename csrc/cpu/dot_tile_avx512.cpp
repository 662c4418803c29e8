// AVX-512 dot-product tile: 8 rows x 32 columns (two panels) in 16 zmm accumulators; see
// dot_tile.h.
#include <immintrin.h>

#include <algorithm>

#include "pyinstance/dot_tile.h"

namespace pyinstance::cpu {

namespace {

template <int kRows, int kPanels>
inline void tile(const float* const* rows, int64_t live, const float* panel, int64_t dim,
                 float* out, int64_t ldo) {
  const float* second = panel + dim * kDotPanel;
  __m512 acc[kRows][kPanels];
  for (int r = 0; r < kRows; ++r)
    for (int p = 0; p < kPanels; ++p) acc[r][p] = _mm512_setzero_ps();
  for (int64_t k = 0; k < dim; ++k) {
    __m512 b[kPanels];
    b[0] = _mm512_loadu_ps(panel + k * kDotPanel);
    if (kPanels == 2) b[kPanels - 1] = _mm512_loadu_ps(second + k * kDotPanel);
    for (int r = 0; r < kRows; ++r) {
      const __m512 v = _mm512_set1_ps(rows[r][k]);
      for (int p = 0; p < kPanels; ++p) acc[r][p] = _mm512_fmadd_ps(v, b[p], acc[r][p]);
    }
  }
  for (int64_t r = 0; r < live; ++r)
    for (int p = 0; p < kPanels; ++p) _mm512_storeu_ps(out + r * ldo + p * kDotPanel, acc[r][p]);
}

template <int kRows>
void rows_impl(const float* a, int64_t lda, int64_t nrows, const float* packed, int64_t npanels,
               int64_t dim, float* out, int64_t ldo) {
  for (int64_t r0 = 0; r0 < nrows; r0 += kRows) {
    const float* rows[kRows];
    for (int64_t r = 0; r < kRows; ++r) rows[r] = a + std::min(r0 + r, nrows - 1) * lda;
    const int64_t live = std::min<int64_t>(kRows, nrows - r0);
    float* dst = out + r0 * ldo;
    int64_t q = 0;
    for (; q + 2 <= npanels; q += 2)
      tile<kRows, 2>(rows, live, packed + q * dim * kDotPanel, dim, dst + q * kDotPanel, ldo);
    if (q < npanels)
      tile<kRows, 1>(rows, live, packed + q * dim * kDotPanel, dim, dst + q * kDotPanel, ldo);
  }
}

}  // namespace

void dot_rows_avx512(const float* a, int64_t lda, int64_t nrows, const float* packed,
                     int64_t npanels, int64_t dim, float* out, int64_t ldo) {
  rows_impl<8>(a, lda, nrows, packed, npanels, dim, out, ldo);
}

}  // namespace pyinstance::cpu
