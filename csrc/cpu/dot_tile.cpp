// Portable dot-product tile (baseline flags) and the ISA dispatch; see dot_tile.h.
#include "pyinstance/dot_tile.h"

#include <algorithm>

namespace pyinstance::cpu {

namespace {
constexpr int64_t kRows = 4;
}  // namespace

void dot_rows_generic(const float* a, int64_t lda, int64_t nrows, const float* packed,
                      int64_t npanels, int64_t dim, float* out, int64_t ldo) {
  for (int64_t r0 = 0; r0 < nrows; r0 += kRows) {
    const float* rows[kRows];
    for (int64_t r = 0; r < kRows; ++r) rows[r] = a + std::min(r0 + r, nrows - 1) * lda;
    for (int64_t q = 0; q < npanels; ++q) {
      const float* panel = packed + q * dim * kDotPanel;
      float acc[kRows][kDotPanel] = {};
      for (int64_t k = 0; k < dim; ++k) {
        const float* col = panel + k * kDotPanel;
        for (int64_t r = 0; r < kRows; ++r) {
          const float v = rows[r][k];
          for (int64_t c = 0; c < kDotPanel; ++c) acc[r][c] += v * col[c];
        }
      }
      for (int64_t r = 0; r < kRows && r0 + r < nrows; ++r)
        std::copy(acc[r], acc[r] + kDotPanel, out + (r0 + r) * ldo + q * kDotPanel);
    }
  }
}

DotRowsFn dot_rows_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return dot_rows_avx512;
    case Isa::Avx2:
      return dot_rows_avx2;
    default:
      return dot_rows_generic;
  }
}

void pack_dot_panels(const float* r, int64_t j0, int64_t count, int64_t dim, float* packed) {
  const int64_t npanels = (count + kDotPanel - 1) / kDotPanel;
  for (int64_t q = 0; q < npanels; ++q) {
    const float* src[kDotPanel];
    int64_t valid = std::min<int64_t>(kDotPanel, count - q * kDotPanel);
    for (int64_t c = 0; c < valid; ++c) src[c] = r + (j0 + q * kDotPanel + c) * dim;
    float* dst = packed + q * dim * kDotPanel;
    for (int64_t k = 0; k < dim; ++k) {
      float* col = dst + k * kDotPanel;
      for (int64_t c = 0; c < valid; ++c) col[c] = src[c][k];
      for (int64_t c = valid; c < kDotPanel; ++c) col[c] = 0.0f;
    }
  }
}

}  // namespace pyinstance::cpu
