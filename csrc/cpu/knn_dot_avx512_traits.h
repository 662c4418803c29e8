// SIMD traits of the AVX-512 knn_dot scan loops (F/BW/VL/DQ): 16 float lanes, 14 x 32
// register tile. Included only by files compiled for AVX-512 (knn_dot_avx512.cpp,
// knn_dot_vnni_avx512.cpp), each keeping its own copy (anonymous namespace).
#pragma once
#include <immintrin.h>

#include "knn_dot_impl.h"

namespace pyinstance::cpu::knn_detail {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int W = 16;
  static constexpr int MR = 14;  // 28 accumulators + 2 query vectors of 32 registers
  static V zero() { return _mm512_setzero_ps(); }
  static constexpr bool kByteQuery = false;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V load_bf16(const uint16_t* p) {
    const __m512i wide =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  using H = __m512i;
  using I = __m512i;
  static H widen_i8(const int8_t* p) {
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static H load_i16(const int16_t* p) { return _mm512_loadu_si512(p); }
  static I izero() { return _mm512_setzero_si512(); }
  static I madd(I acc, H a, H b) { return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b)); }
  static V to_float(I a) { return _mm512_cvtepi32_ps(a); }
  static uint32_t passes(V s, V t) { return _mm512_cmp_ps_mask(s, t, _CMP_NLE_UQ); }
  static bool any_nan(V v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0; }
  // Transposing reduction: lane i of the result is the sum of the lanes of a[i].
  static V reduce(const V* a) {
    V b[8], c[4];
    for (int i = 0; i < 8; ++i) {
      b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                           _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    }
    for (int i = 0; i < 4; ++i) {
      c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    const V d0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const V d1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(d0, d1, _MM_SHUFFLE(3, 1, 3, 1)));
  }
};

}  // namespace
}  // namespace pyinstance::cpu::knn_detail
