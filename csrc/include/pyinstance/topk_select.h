// Bounded top-k selection shared by the CPU and CUDA kernels (__host__ __device__).
//
// A candidate is (score, index); "a is better than b" when a.score > b.score, or the scores
// are equal and a.index < b.index. This is a total order on distinct indices, so the k best
// of a set do not depend on the order candidates arrive in: per-thread partial lists merge
// into the same result whatever the thread count. The list is kept sorted best first, which
// suits the small k (tens) of triplet mining; index -1 marks an empty slot.
//
// The comparison is knn_better from pyinstance/topk.h, the k-NN order. Scores are compared
// as given: unlike knn_heap_offer, nothing here maps NaN to -inf (no knn_sanitize).
#pragma once
#include <cstdint>

#include "pyinstance/macros.h"
#include "pyinstance/topk.h"

namespace pyinstance {

// The reverse order for "smallest score wins" selections; ties still go to the smaller index.
PYI_HD bool topk_better_low(float score_a, int64_t index_a, float score_b, int64_t index_b) {
  return score_a < score_b || (score_a == score_b && index_a < index_b);
}

// Would (score, index) enter a best-first list holding `size` of at most `k` entries?
PYI_HD bool topk_admits(const float* scores, const int64_t* indices, int64_t size, int64_t k,
                        float score, int64_t index) {
  return size < k || knn_better(score, index, scores[size - 1], indices[size - 1]);
}

// Insert into the sorted best-first list; returns false when the candidate did not enter.
PYI_HD bool topk_offer(float* scores, int64_t* indices, int64_t& size, int64_t k, float score,
                       int64_t index) {
  if (k <= 0 || !topk_admits(scores, indices, size, k, score, index)) return false;
  int64_t pos = size < k ? size++ : k - 1;
  while (pos > 0 && knn_better(score, index, scores[pos - 1], indices[pos - 1])) {
    scores[pos] = scores[pos - 1];
    indices[pos] = indices[pos - 1];
    --pos;
  }
  scores[pos] = score;
  indices[pos] = index;
  return true;
}

}  // namespace pyinstance
