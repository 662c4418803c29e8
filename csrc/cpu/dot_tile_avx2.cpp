// AVX2 + FMA dot-product tile (6 rows x 16 columns in 12 ymm accumulators) and the tile
// filter; see dot_tile.h.
#include <immintrin.h>

#include <algorithm>

#include "pyinstance/dot_tile.h"
#include "tile_filter_impl.h"

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
      // A constant trip count keeps acc in registers (a loop to `live` spills it every k).
      for (int64_t r = 0; r < kRows; ++r) {
        if (r >= live) break;
        float* dst = out + (r0 + r) * ldo + q * kDotPanel;
        _mm256_storeu_ps(dst, acc[r][0]);
        _mm256_storeu_ps(dst + 8, acc[r][1]);
      }
    }
  }
}

namespace {

struct Avx2Lanes {
  static constexpr int W = 8;
  static __m256i live(int64_t n) {
    const int32_t count = static_cast<int32_t>(std::min<int64_t>(n, W));
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static __m256 load(const float* p, __m256i live) { return _mm256_maskload_ps(p, live); }
  static __m256i load_i(const int32_t* p, __m256i live) {
    return _mm256_maskload_epi32(reinterpret_cast<const int*>(p), live);
  }
  static void store(float* p, __m256i live, __m256 v) { _mm256_maskstore_ps(p, live, v); }
  static __m256 set1(float v) { return _mm256_set1_ps(v); }
  static __m256i set1_i(int32_t v) { return _mm256_set1_epi32(v); }
  static __m256i differ(__m256i a, __m256i b, __m256i live) {
    return _mm256_andnot_si256(_mm256_cmpeq_epi32(a, b), live);
  }
  static __m256 max_where(__m256i m, __m256 a, __m256 v) {
    return _mm256_blendv_ps(a, _mm256_max_ps(v, a), _mm256_castsi256_ps(m));
  }
  static __m256i not_below(__m256 v, __m256 t) {
    return _mm256_castps_si256(_mm256_cmp_ps(v, t, _CMP_NLT_UQ));
  }
  static __m256i both(__m256i a, __m256i b) { return _mm256_and_si256(a, b); }
  static __m256i either(__m256i a, __m256i b) { return _mm256_or_si256(a, b); }
  static unsigned bits(__m256i m) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(m)));
  }
  static float reduce_max(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
};

}  // namespace

TileFilterFns tile_filter_avx2() { return TileFilter<Avx2Lanes>::fns(); }

}  // namespace pyinstance::cpu
