// Portable dot-product tile (baseline flags) and the ISA dispatch; see dot_tile.h.
#include "pyinstance/dot_tile.h"

#include "tile_filter_impl.h"

#include <algorithm>
#include <cmath>

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

namespace {

// Transposes rows [j0, j0 + count) of a row-major matrix of 4-byte elements into panels.
template <class T>
void pack_panels(const T* r, int64_t j0, int64_t count, int64_t dim, T* packed) {
  const int64_t npanels = (count + kDotPanel - 1) / kDotPanel;
  for (int64_t q = 0; q < npanels; ++q) {
    const T* src[kDotPanel];
    int64_t valid = std::min<int64_t>(kDotPanel, count - q * kDotPanel);
    for (int64_t c = 0; c < valid; ++c) src[c] = r + (j0 + q * kDotPanel + c) * dim;
    T* dst = packed + q * dim * kDotPanel;
    for (int64_t k = 0; k < dim; ++k) {
      T* col = dst + k * kDotPanel;
      for (int64_t c = 0; c < valid; ++c) col[c] = src[c][k];
      for (int64_t c = valid; c < kDotPanel; ++c) col[c] = T{0};
    }
  }
}

}  // namespace

void pack_dot_panels(const float* r, int64_t j0, int64_t count, int64_t dim, float* packed) {
  pack_panels(r, j0, count, dim, packed);
}

void pack_bf16_panels(const uint32_t* r, int64_t j0, int64_t count, int64_t pairs,
                      uint32_t* packed) {
  pack_panels(r, j0, count, pairs, packed);
}

namespace {

// One lane: the reference semantics of the vector variants.
struct Scalar {
  static constexpr int W = 1;
  static bool live(int64_t n) { return n > 0; }
  static float load(const float* p, bool live) { return live ? *p : 0.0f; }
  static int32_t load_i(const int32_t* p, bool live) { return live ? *p : 0; }
  static void store(float* p, bool live, float v) {
    if (live) *p = v;
  }
  static float set1(float v) { return v; }
  static int32_t set1_i(int32_t v) { return v; }
  static bool differ(int32_t a, int32_t b, bool live) { return live && a != b; }
  static float max_where(bool m, float a, float v) { return m && v > a ? v : a; }
  static bool not_below(float v, float t) { return !(v < t); }
  static bool both(bool a, bool b) { return a && b; }
  static bool either(bool a, bool b) { return a || b; }
  static unsigned bits(bool m) { return m ? 1u : 0u; }
  static float reduce_max(float v) { return v; }
};

}  // namespace

TileFilterFns tile_filter_generic() { return TileFilter<Scalar>::fns(); }

TileFilterFns tile_filter_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return tile_filter_avx512();
    case Isa::Avx2:
      return tile_filter_avx2();
    default:
      return tile_filter_generic();
  }
}

double bf16_dot_error_bound(int64_t dim, double norm_a, double norm_b, double maxabs_a,
                            double maxabs_b) {
  // Products of rounded values: (2u + u^2) |x y| with u = 2^-8; each float32 sum adds at
  // most dim * 2^-24 |x y| (three sums' worth, rounded up). sum |x y| <= norm_a * norm_b.
  const double u = std::ldexp(1.0, -8), gamma = static_cast<double>(dim) * std::ldexp(1.0, -24);
  const double relative = (2 * u + u * u + 3 * gamma) * (1 + u) * (1 + u);
  // A flushed subnormal (below 2^-126) loses at most 2^-126 times the other factor (or the
  // partial sum) per term: generously dim * 2^-122 * (1 + maxabs_a + maxabs_b).
  const double flushed =
      static_cast<double>(dim) * std::ldexp(1.0, -122) * (1 + maxabs_a + maxabs_b);
  return relative * norm_a * norm_b + flushed;
}

}  // namespace pyinstance::cpu
