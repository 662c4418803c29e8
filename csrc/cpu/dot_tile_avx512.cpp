// AVX-512 dot-product tiles: 8 rows x 32 columns (two panels) in 16 zmm accumulators, over
// float32 (FMA) or bf16 pairs (AVX512_BF16 dot products); the tile filter; the bf16
// conversion. See dot_tile.h.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "pyinstance/dot_tile.h"
#include "tile_filter_impl.h"

namespace pyinstance::cpu {

namespace {

// float32 elements: broadcast one value, fused multiply-add.
struct Float32 {
  using Elem = float;
  static __m512 broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static __m512 madd(__m512 acc, __m512 a, __m512 b) { return _mm512_fmadd_ps(a, b, acc); }
};

// bf16 pairs: broadcast one pair, two products per lane added to the float32 accumulator.
struct Bf16Pairs {
  using Elem = uint32_t;
  static __m512 broadcast(const uint32_t* p) {
    return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(*p)));
  }
  static __m512 madd(__m512 acc, __m512 a, __m512 b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
  }
};

template <class E, int kRows, int kPanels>
inline void tile(const typename E::Elem* const* rows, int64_t live, const typename E::Elem* panel,
                 int64_t dim, float* out, int64_t ldo) {
  const typename E::Elem* second = panel + dim * kDotPanel;
  __m512 acc[kRows][kPanels];
  for (int r = 0; r < kRows; ++r)
    for (int p = 0; p < kPanels; ++p) acc[r][p] = _mm512_setzero_ps();
  for (int64_t k = 0; k < dim; ++k) {
    __m512 b[kPanels];
    b[0] = _mm512_loadu_ps(panel + k * kDotPanel);
    if (kPanels == 2) b[kPanels - 1] = _mm512_loadu_ps(second + k * kDotPanel);
    for (int r = 0; r < kRows; ++r) {
      const __m512 v = E::broadcast(rows[r] + k);
      for (int p = 0; p < kPanels; ++p) acc[r][p] = E::madd(acc[r][p], v, b[p]);
    }
  }
  for (int64_t r = 0; r < live; ++r)
    for (int p = 0; p < kPanels; ++p) _mm512_storeu_ps(out + r * ldo + p * kDotPanel, acc[r][p]);
}

template <class E, int kRows>
void rows_impl(const typename E::Elem* a, int64_t lda, int64_t nrows,
               const typename E::Elem* packed, int64_t npanels, int64_t dim, float* out,
               int64_t ldo) {
  for (int64_t r0 = 0; r0 < nrows; r0 += kRows) {
    const typename E::Elem* rows[kRows];
    for (int64_t r = 0; r < kRows; ++r) rows[r] = a + std::min(r0 + r, nrows - 1) * lda;
    const int64_t live = std::min<int64_t>(kRows, nrows - r0);
    float* dst = out + r0 * ldo;
    int64_t q = 0;
    for (; q + 2 <= npanels; q += 2)
      tile<E, kRows, 2>(rows, live, packed + q * dim * kDotPanel, dim, dst + q * kDotPanel, ldo);
    if (q < npanels)
      tile<E, kRows, 1>(rows, live, packed + q * dim * kDotPanel, dim, dst + q * kDotPanel, ldo);
  }
}

__mmask16 low_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

}  // namespace

void dot_rows_avx512(const float* a, int64_t lda, int64_t nrows, const float* packed,
                     int64_t npanels, int64_t dim, float* out, int64_t ldo) {
  rows_impl<Float32, 8>(a, lda, nrows, packed, npanels, dim, out, ldo);
}

void dot_rows_bf16_avx512(const uint32_t* a, int64_t lda, int64_t nrows, const uint32_t* packed,
                          int64_t npanels, int64_t pairs, float* out, int64_t ldo) {
  rows_impl<Bf16Pairs, 8>(a, lda, nrows, packed, npanels, pairs, out, ldo);
}

namespace {

struct Avx512Lanes {
  static constexpr int W = 16;
  static __mmask16 live(int64_t n) { return low_lanes(n); }
  static __m512 load(const float* p, __mmask16 live) { return _mm512_maskz_loadu_ps(live, p); }
  static __m512i load_i(const int32_t* p, __mmask16 live) {
    return _mm512_maskz_loadu_epi32(live, p);
  }
  static void store(float* p, __mmask16 live, __m512 v) { _mm512_mask_storeu_ps(p, live, v); }
  static __m512 set1(float v) { return _mm512_set1_ps(v); }
  static __m512i set1_i(int32_t v) { return _mm512_set1_epi32(v); }
  static __mmask16 differ(__m512i a, __m512i b, __mmask16 live) {
    return _mm512_mask_cmpneq_epi32_mask(live, a, b);
  }
  static __m512 max_where(__mmask16 m, __m512 a, __m512 v) {
    return _mm512_mask_max_ps(a, m, v, a);
  }
  static __mmask16 not_below(__m512 v, __m512 t) { return _mm512_cmp_ps_mask(v, t, _CMP_NLT_UQ); }
  static __mmask16 both(__mmask16 a, __mmask16 b) { return a & b; }
  static __mmask16 either(__mmask16 a, __mmask16 b) { return a | b; }
  static unsigned bits(__mmask16 m) { return m; }
  static float reduce_max(__m512 v) { return _mm512_reduce_max_ps(v); }
};

}  // namespace

TileFilterFns tile_filter_avx512() { return TileFilter<Avx512Lanes>::fns(); }

void to_bf16_rows_avx512(const float* x, int64_t rows, int64_t dim, uint32_t* out, double* norm,
                         double* maxabs) {
  const int64_t pairs = bf16_pairs(dim);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t i = 0; i < rows; ++i) {
    const float* src = x + i * dim;
    uint16_t* dst = reinterpret_cast<uint16_t*>(out + i * pairs);
    __m512d squares = _mm512_setzero_pd();
    __m512 largest = _mm512_setzero_ps();
    for (int64_t k = 0; k < dim; k += 16) {
      const __mmask16 live = low_lanes(dim - k);
      const __m512 v = _mm512_maskz_loadu_ps(live, src + k);
      const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
      const __m512d hi =
          _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
      squares = _mm512_fmadd_pd(lo, lo, _mm512_fmadd_pd(hi, hi, squares));
      largest = _mm512_max_ps(largest, _mm512_andnot_ps(sign, v));
      _mm256_mask_storeu_epi16(dst + k, live, (__m256i)_mm512_cvtneps_pbh(v));
    }
    if (dim % 2) dst[dim] = 0;
    norm[i] = std::sqrt(_mm512_reduce_add_pd(squares));
    maxabs[i] = _mm512_reduce_max_ps(largest);
  }
}

}  // namespace pyinstance::cpu
