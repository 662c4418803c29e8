// Internal interface between the knn_dot driver (knn_dot.cpp, baseline ISA) and its
// per-ISA scan loops (knn_dot_impl.h instantiated in knn_dot.cpp, knn_dot_avx2.cpp,
// knn_dot_avx512.cpp). Heap bookkeeping stays out of line in the baseline file so the
// ISA files emit no shared inline code compiled with wider instruction sets.
#pragma once
#include <cstdint>
#include <vector>

#include "pyinstance/dtype.h"

namespace pyinstance::cpu::knn_detail {

struct Problem {
  const float* q;    // Q x D float32
  const void* refs;  // N x D of dtype
  DType dtype;
  int64_t Q, N, D, k;
  const int64_t* exclude;  // nullptr or Q entries, -1 for none
};

// Heap slots: slot s holds Q heaps of capacity k at scores/indices + (s * Q + q) * k,
// with their fill counts at sizes[s * Q + q].
struct Heaps {
  float* scores;
  int64_t* indices;
  int64_t* sizes;
};

// Offers (score, index) to one heap; returns its score threshold afterwards (NaN while the
// heap is not full, see knn_heap_threshold in pyinstance/topk.h).
float offer(float* scores, int64_t* indices, int64_t* size, int64_t k, float score, int64_t index);

// How a scan ended: every score finite, a reference value NaN or infinite (the heaps are
// then meaningless), or a float32 accumulation that overflowed on finite inputs (the heaps
// may hold wrong scores: the caller recomputes them).
enum class ScanStatus : int { Ok = 0, NonFinite = 1, Overflow = 2 };

// An int8 screening copy of the references (see pyinstance::cpu::knn_dot_screened and
// pyinstance/ops/knn_screen.py): row i is scales[i] * codes[i * stride, + D); codes are zero
// from D to stride (a multiple of 64) and every array is readable up to row round_up(N, 64).
// norms[i] >= ||r_i||; slacks[i] >= ||r_i - scales[i] * codes_i|| + 16 u scales[i] ||codes_i||;
// sums[i] = the sum of codes_i.
struct Screen {
  const int8_t* codes;
  int64_t stride;
  const float* scales;
  const float* slacks;
  const float* norms;
  const int32_t* sums;
};

// The queries quantised for the screening pass: row q is scales[q] * codes[q * stride, +
// stride) (int16, |code| small enough for exact int32 sums) and, with u = 2^-24,
//   |float32 score of row i - screened score| <= code_norms[q] * slacks[i] + errors[q] *
//   norms[i] + tiny
// where code_norms[q] >= scales[q] ||codes_q||, errors[q] >= ||q - scales[q] codes_q|| +
// gamma_{D+4} ||q|| (the float32 sum's rounding) and tiny covers flushed subnormals.
// Rows are padded with zero codes up to a multiple of 4. For screen_vnni, the codes are
// instead signed bytes (|code| <= 127) stored biased: bytes[q * stride + d] = 128 + code.
struct QueryCodes {
  const int16_t* codes;
  const float* scales;
  const float* code_norms;
  const float* errors;
  float tiny;
  const uint8_t* bytes;
};

// Rows that may belong to one query's top-k, with the upper bound of their score.
struct Candidates {
  std::vector<int64_t> rows;
  std::vector<float> uppers;
};

// Appends (row, upper) to `list` (out of line, in the baseline-ISA file).
void keep(Candidates& list, int64_t row, float upper);

// The per-ISA entry points, each instantiated for the storage types T of dispatch_float
// (float, Half, BFloat16: pyinstance/dtype.h), which the driver dispatches once.
//
// scan_few: few queries, the threads split the references; thread t fills heap slot t (one
// slot per thread, `threads` slots). scan_many: many queries, the threads split the
// queries; one slot.
//
// screen: the screening pass over the codes (threads split the references, T-independent):
// thread t fills heap slot t with the k largest lower bounds of each query (screened score
// - bound, see QueryCodes) and appends to
// lists[t * Q + q] every row whose upper bound was not below that heap's threshold when
// the row was seen.
//
// rescore: the exact float32 scores of query q against `count` rows (ascending indices),
// computed with the arithmetic scan_few uses for p.Q queries (so bit-equal to knn_dot's),
// offered to one heap of capacity p.k (scores, indices, size); NonFinite/Overflow as the
// scan reports them.
#define PYI_KNN_ISA_ENTRIES(isa)                                                             \
  template <class T>                                                                         \
  ScanStatus scan_few_##isa(const Problem& p, const Heaps& h, int threads);                  \
  template <class T>                                                                         \
  ScanStatus scan_many_##isa(const Problem& p, const Heaps& h, int threads);                 \
  template <class T>                                                                         \
  ScanStatus rescore_##isa(const Problem& p, int64_t q, const int64_t* rows, int64_t count,  \
                           float* scores, int64_t* indices, int64_t* size);                  \
  void screen_##isa(const Problem& p, const Screen& s, const QueryCodes& qc, const Heaps& h, \
                    Candidates* lists, int threads);

PYI_KNN_ISA_ENTRIES(generic)
PYI_KNN_ISA_ENTRIES(avx2)
PYI_KNN_ISA_ENTRIES(avx512)

// The screening pass through AVX512_VNNI byte products (byte queries, see QueryCodes); the
// CPU must have AVX512_VNNI, and stride <= 32768 keeps its int32 sums exact.
void screen_vnni(const Problem& p, const Screen& s, const QueryCodes& qc, const Heaps& h,
                 Candidates* lists, int threads);

// Defines and instantiates the entry points of one ISA from its traits type.
#define PYI_KNN_ISA_DEFINE(isa, Traits)                                                      \
  template <class T>                                                                         \
  ScanStatus scan_few_##isa(const Problem& p, const Heaps& h, int threads) {                 \
    return Scan<Traits>::few_typed<T>(p, h, threads);                                        \
  }                                                                                          \
  template <class T>                                                                         \
  ScanStatus scan_many_##isa(const Problem& p, const Heaps& h, int threads) {                \
    return Scan<Traits>::many<T>(p, h, threads);                                             \
  }                                                                                          \
  template <class T>                                                                         \
  ScanStatus rescore_##isa(const Problem& p, int64_t q, const int64_t* rows, int64_t count,  \
                           float* scores, int64_t* indices, int64_t* size) {                 \
    return Scan<Traits>::rescore<T>(p, q, rows, count, scores, indices, size);               \
  }                                                                                          \
  void screen_##isa(const Problem& p, const Screen& s, const QueryCodes& qc, const Heaps& h, \
                    Candidates* lists, int threads) {                                        \
    Scan<Traits>::screen(p, s, qc, h, lists, threads);                                       \
  }                                                                                          \
  PYI_KNN_ISA_INSTANTIATE(isa, float)                                                        \
  PYI_KNN_ISA_INSTANTIATE(isa, Half)                                                         \
  PYI_KNN_ISA_INSTANTIATE(isa, BFloat16)

#define PYI_KNN_ISA_INSTANTIATE(isa, T)                                                          \
  template ScanStatus scan_few_##isa<T>(const Problem&, const Heaps&, int);                      \
  template ScanStatus scan_many_##isa<T>(const Problem&, const Heaps&, int);                     \
  template ScanStatus rescore_##isa<T>(const Problem&, int64_t, const int64_t*, int64_t, float*, \
                                       int64_t*, int64_t*);

}  // namespace pyinstance::cpu::knn_detail
