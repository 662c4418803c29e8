// The knn_dot screening pass with AVX512_VNNI byte dot products (vpdpbusd: 64 products of
// an unsigned and a signed byte per instruction): queries as signed bytes biased to
// unsigned ones, codes read as they are. Called only when the CPU has AVX512_VNNI (knn_dot.cpp
// checks).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512vnni")
#endif

#include "knn_dot_avx512_traits.h"

namespace pyinstance::cpu::knn_detail {
namespace {

struct Avx512Vnni : Avx512 {
  static constexpr bool kByteQuery = true;
  static I dpbusd(I acc, const uint8_t* q, const int8_t* c) {
    return _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(q), _mm512_loadu_si512(c));
  }
  static I iload(const int32_t* p) { return _mm512_loadu_si512(p); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  // acc - 128 * sums
  static I unbias(I acc, I sums) { return _mm512_sub_epi32(acc, _mm512_slli_epi32(sums, 7)); }
  // Avx512::reduce with integer additions: lane i of the result is the sum of a[i].
  static I ireduce(const I* a) {
    I b[8], c[4];
    for (int i = 0; i < 8; ++i) {
      b[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]),
                              _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
    }
    for (int i = 0; i < 4; ++i) {
      const __m512 x = _mm512_castsi512_ps(b[2 * i]), y = _mm512_castsi512_ps(b[2 * i + 1]);
      c[i] =
          _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0))),
                           _mm512_castps_si512(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2))));
    }
    const I d0 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[0], c[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_i32x4(c[0], c[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const I d1 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[2], c[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_i32x4(c[2], c[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(d0, d1, _MM_SHUFFLE(3, 1, 3, 1)));
  }
};

}  // namespace

void screen_vnni(const Problem& p, const Screen& s, const QueryCodes& qc, const Heaps& h,
                 Candidates* lists, int threads) {
  Scan<Avx512Vnni>::screen(p, s, qc, h, lists, threads);
}

}  // namespace pyinstance::cpu::knn_detail

#if defined(__clang__)
#pragma clang attribute pop
#endif
