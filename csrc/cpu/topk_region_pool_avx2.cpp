// AVX2 streaming class maximum for topk_region_pool (compiled with -mavx2 -mfma -mf16c).
#include <immintrin.h>

#include "pyinstance/topk_region_pool.h"
#include "topk_region_pool_simd.h"

namespace pyinstance::cpu::region_pool_detail {

bool class_max_f32_avx2(const float* rows, int64_t num_rows, int64_t row_stride, int64_t n,
                        float* acc) {
  __m256 nan_seen = _mm256_setzero_ps();
  const int64_t vec_end = n - n % 32;
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* row = rows + r * row_stride;
    int64_t j = 0;
    for (; j < vec_end; j += 32) {
      __m256 v0 = _mm256_loadu_ps(row + j), v1 = _mm256_loadu_ps(row + j + 8);
      __m256 v2 = _mm256_loadu_ps(row + j + 16), v3 = _mm256_loadu_ps(row + j + 24);
      nan_seen = _mm256_or_ps(nan_seen, _mm256_or_ps(_mm256_cmp_ps(v0, v1, _CMP_UNORD_Q),
                                                     _mm256_cmp_ps(v2, v3, _CMP_UNORD_Q)));
      // max_ps(a, b) returns b when either is NaN: the running maximum stays first-seen
      // finite; NaN is reported through nan_seen.
      _mm256_storeu_ps(acc + j, _mm256_max_ps(v0, _mm256_loadu_ps(acc + j)));
      _mm256_storeu_ps(acc + j + 8, _mm256_max_ps(v1, _mm256_loadu_ps(acc + j + 8)));
      _mm256_storeu_ps(acc + j + 16, _mm256_max_ps(v2, _mm256_loadu_ps(acc + j + 16)));
      _mm256_storeu_ps(acc + j + 24, _mm256_max_ps(v3, _mm256_loadu_ps(acc + j + 24)));
    }
    bool nan_tail = false;
    for (; j < n; ++j) {
      nan_tail |= region_pool::is_nan(row[j]);
      acc[j] = region_pool::score_max(acc[j], row[j]);
    }
    if (nan_tail) return true;
  }
  return _mm256_movemask_ps(nan_seen) != 0;
}

}  // namespace pyinstance::cpu::region_pool_detail
