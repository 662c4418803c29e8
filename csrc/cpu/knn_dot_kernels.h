// Internal interface between the knn_dot driver (knn_dot.cpp, baseline ISA) and its
// per-ISA scan loops (knn_dot_impl.h instantiated in knn_dot.cpp, knn_dot_avx2.cpp,
// knn_dot_avx512.cpp). Heap bookkeeping stays out of line in the baseline file so the
// ISA files emit no shared inline code compiled with wider instruction sets.
#pragma once
#include <cstdint>

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

// Few queries: the threads split the references; thread t fills heap slot t (one slot per
// thread, `threads` slots). Many queries: the threads split the queries; one slot.
ScanStatus scan_few_generic(const Problem& p, const Heaps& h, int threads);
ScanStatus scan_many_generic(const Problem& p, const Heaps& h, int threads);
ScanStatus scan_few_avx2(const Problem& p, const Heaps& h, int threads);
ScanStatus scan_many_avx2(const Problem& p, const Heaps& h, int threads);
ScanStatus scan_few_avx512(const Problem& p, const Heaps& h, int threads);
ScanStatus scan_many_avx512(const Problem& p, const Heaps& h, int threads);

}  // namespace pyinstance::cpu::knn_detail
