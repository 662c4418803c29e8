// The tile filter (see TileFilterFns in pyinstance/dot_tile.h), written once over a SIMD
// traits type S and instantiated per ISA (dot_tile.cpp: scalar, dot_tile_avx2.cpp,
// dot_tile_avx512.cpp). Everything lives in an anonymous namespace so each ISA file keeps
// its own copy.
//
// S provides: V (W floats), I (W int32), M (lane mask), live(n) (lanes [0, n)),
// load(p, m) / load_i(p, m) (masked-out lanes read nothing), store(p, m, v), set1, set1_i,
// differ(a, b, m) (lanes of m where a != b), max_where(m, a, v) (max(v, a) where m, else a;
// a NaN v leaves a), not_below(v, t) (!(v < t): NaN passes), both / either, bits(m) (one bit
// per lane), reduce_max(v).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "pyinstance/dot_tile.h"

namespace pyinstance::cpu {
namespace {

template <class S>
struct TileFilter {
  static constexpr int W = S::W;

  static int64_t first_col(int64_t r, int64_t diag) { return std::max<int64_t>(0, r + diag + 1); }

  static void max(const float* tile, int64_t ld, int64_t nrows, int64_t ncols, int64_t diag,
                  const int32_t* row_group, const int32_t* col_group, float* row_max,
                  float* col_max) {
    const float lowest = -std::numeric_limits<float>::infinity();
    if (col_max != nullptr) std::fill(col_max, col_max + ncols, lowest);
    for (int64_t r = 0; r < nrows; ++r) {
      const float* row = tile + r * ld;
      const auto group = S::set1_i(row_group[r]);
      auto best = S::set1(lowest);
      for (int64_t c = first_col(r, diag); c < ncols; c += W) {
        const auto live = S::live(ncols - c);
        const auto counted = S::differ(group, S::load_i(col_group + c, live), live);
        const auto v = S::load(row + c, live);
        best = S::max_where(counted, best, v);
        if (col_max != nullptr)
          S::store(col_max + c, live, S::max_where(counted, S::load(col_max + c, live), v));
      }
      row_max[r] = S::reduce_max(best);
    }
  }

  static int64_t hits(const float* tile, int64_t ld, int64_t nrows, int64_t ncols, int64_t diag,
                      const int32_t* row_group, const int32_t* col_group, const float* row_thr,
                      const float* col_thr, uint32_t* out) {
    int64_t n = 0;
    for (int64_t r = 0; r < nrows; ++r) {
      const float* row = tile + r * ld;
      const auto group = S::set1_i(row_group[r]);
      const auto thr = S::set1(row_thr[r]);
      for (int64_t c = first_col(r, diag); c < ncols; c += W) {
        const auto live = S::live(ncols - c);
        const auto v = S::load(row + c, live);
        auto pass = S::not_below(v, thr);
        if (col_thr != nullptr) pass = S::either(pass, S::not_below(v, S::load(col_thr + c, live)));
        pass = S::both(pass, S::differ(group, S::load_i(col_group + c, live), live));
        for (unsigned bits = S::bits(pass); bits != 0; bits &= bits - 1)
          out[n++] = static_cast<uint32_t>(r << 16 | (c + __builtin_ctz(bits)));
      }
    }
    return n;
  }

  static TileFilterFns fns() { return {max, hits}; }
};

}  // namespace
}  // namespace pyinstance::cpu
