// AVX-512 streaming class maximum for topk_region_pool (compiled with -mavx512f ...).
#include <immintrin.h>

#include "pyinstance/topk_region_pool.h"
#include "topk_region_pool_simd.h"

namespace pyinstance::cpu::region_pool_detail {

bool class_max_f32_avx512(const float* rows, int64_t num_rows, int64_t row_stride, int64_t n,
                          float* acc) {
  __mmask16 nan_seen = 0;
  const int64_t vec_end = n - n % 64;
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* row = rows + r * row_stride;
    int64_t j = 0;
    for (; j < vec_end; j += 64) {
      __m512 v0 = _mm512_loadu_ps(row + j), v1 = _mm512_loadu_ps(row + j + 16);
      __m512 v2 = _mm512_loadu_ps(row + j + 32), v3 = _mm512_loadu_ps(row + j + 48);
      nan_seen |=
          _mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v2, v3, _CMP_UNORD_Q);
      // max_ps(a, b) returns b when either is NaN: NaN never enters the running maximum;
      // it is reported through nan_seen.
      _mm512_storeu_ps(acc + j, _mm512_max_ps(v0, _mm512_loadu_ps(acc + j)));
      _mm512_storeu_ps(acc + j + 16, _mm512_max_ps(v1, _mm512_loadu_ps(acc + j + 16)));
      _mm512_storeu_ps(acc + j + 32, _mm512_max_ps(v2, _mm512_loadu_ps(acc + j + 32)));
      _mm512_storeu_ps(acc + j + 48, _mm512_max_ps(v3, _mm512_loadu_ps(acc + j + 48)));
    }
    // Masked tail: one 16-lane step at a time.
    for (; j < n; j += 16) {
      const __mmask16 lanes = n - j >= 16 ? static_cast<__mmask16>(0xffff)
                                          : static_cast<__mmask16>((1u << (n - j)) - 1u);
      __m512 v = _mm512_maskz_loadu_ps(lanes, row + j);
      nan_seen |= _mm512_mask_cmp_ps_mask(lanes, v, v, _CMP_UNORD_Q);
      _mm512_mask_storeu_ps(acc + j, lanes,
                            _mm512_max_ps(v, _mm512_maskz_loadu_ps(lanes, acc + j)));
    }
  }
  return nan_seen != 0;
}

}  // namespace pyinstance::cpu::region_pool_detail
