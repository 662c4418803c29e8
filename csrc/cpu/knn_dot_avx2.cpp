// knn_dot scan loops for AVX2 + FMA + F16C: 8 float lanes, 6 x 16 register tile.
#include <immintrin.h>

#include "knn_dot_impl.h"

namespace pyinstance::cpu::knn_detail {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int W = 8;
  static constexpr bool kByteQuery = false;
  static constexpr int MR = 6;  // 12 accumulators + 2 query vectors + 1 broadcast of 16
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V load_bf16(const uint16_t* p) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  using H = __m256i;
  using I = __m256i;
  static H widen_i8(const int8_t* p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static H load_i16(const int16_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static I izero() { return _mm256_setzero_si256(); }
  static I madd(I acc, H a, H b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  static V to_float(I a) { return _mm256_cvtepi32_ps(a); }
  static uint32_t passes(V s, V t) {
    return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(s, t, _CMP_NLE_UQ)));
  }
  static bool any_nan(V v) { return _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0; }
  // Transposing reduction: lane i of the result is the sum of the lanes of a[i].
  static V reduce(const V* a) {
    V b[4], c[2];
    for (int i = 0; i < 4; ++i) {
      b[i] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                           _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    }
    for (int i = 0; i < 2; ++i) {
      c[i] = _mm256_add_ps(_mm256_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm256_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    return _mm256_add_ps(_mm256_permute2f128_ps(c[0], c[1], 0x20),
                         _mm256_permute2f128_ps(c[0], c[1], 0x31));
  }
};

}  // namespace

PYI_KNN_ISA_DEFINE(avx2, Avx2)

}  // namespace pyinstance::cpu::knn_detail
