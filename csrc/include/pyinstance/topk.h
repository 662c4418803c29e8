// Per-query top-k bookkeeping shared by the CPU and CUDA k-NN kernels (__host__ __device__).
//
// A candidate is (score, index). "a is better than b" when a.score > b.score, or the
// scores are equal and a.index < b.index: the order every k-NN result follows. A heap of
// capacity k keeps its *worst* candidate at the root, so a new candidate only has to beat
// the root; knn_heap_threshold() gives the value a raw score must exceed to be offered.
#pragma once
#include <cstdint>

#include "pyinstance/dtype.h"
#include "pyinstance/macros.h"

namespace pyinstance {

// The comparator itself; pyinstance/topk_select.h (triplet mining) uses it too.
PYI_HD bool knn_better(float score_a, int64_t index_a, float score_b, int64_t index_b) {
  return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// NaN (only possible from inf - inf overflow) ranks as -inf.
PYI_HD float knn_sanitize(float score) {
  return score != score ? bits_to_float(0xff800000u) : score;
}

// Score filter value: NaN while the heap is not full (every score passes the unordered
// test `!(score <= threshold)`), then the root's score. Scanning references in increasing
// index order, a score equal to the root's can never win (its index is larger).
PYI_HD float knn_heap_threshold(const float* scores, int64_t size, int64_t k) {
  return size < k ? bits_to_float(0x7fc00000u) : scores[0];
}

PYI_HD bool knn_passes(float score, float threshold) { return !(score <= threshold); }

PYI_HD void knn_heap_sift_down(float* scores, int64_t* indices, int64_t size, int64_t pos) {
  float score = scores[pos];
  int64_t index = indices[pos];
  for (;;) {
    int64_t child = 2 * pos + 1;
    if (child >= size) break;
    // Move towards the worse child: the root must stay the worst.
    if (child + 1 < size &&
        knn_better(scores[child], indices[child], scores[child + 1], indices[child + 1]))
      ++child;
    if (!knn_better(score, index, scores[child], indices[child])) break;
    scores[pos] = scores[child];
    indices[pos] = indices[child];
    pos = child;
  }
  scores[pos] = score;
  indices[pos] = index;
}

PYI_HD void knn_heap_sift_up(float* scores, int64_t* indices, int64_t pos) {
  float score = scores[pos];
  int64_t index = indices[pos];
  while (pos > 0) {
    int64_t parent = (pos - 1) / 2;
    if (!knn_better(scores[parent], indices[parent], score, index)) break;
    scores[pos] = scores[parent];
    indices[pos] = indices[parent];
    pos = parent;
  }
  scores[pos] = score;
  indices[pos] = index;
}

// Offer a candidate to a heap holding `size` of at most `k` entries; returns true when the
// heap changed (so its threshold may have moved).
PYI_HD bool knn_heap_offer(float* scores, int64_t* indices, int64_t& size, int64_t k, float score,
                           int64_t index) {
  score = knn_sanitize(score);
  if (size < k) {
    scores[size] = score;
    indices[size] = index;
    knn_heap_sift_up(scores, indices, size);
    ++size;
    return true;
  }
  if (!knn_better(score, index, scores[0], indices[0])) return false;
  scores[0] = score;
  indices[0] = index;
  knn_heap_sift_down(scores, indices, size, 0);
  return true;
}

// Order keys (used by the CUDA radix selection): one uint64 per candidate whose ascending
// order is "better first", consistent with knn_better. High half: the score's bits mapped
// to descending order (NaN as -inf, -0 as +0); low half: the index (requires index < 2^32 - 1,
// so all-ones is free to mean "no candidate").
constexpr uint64_t kKnnEmptyKey = ~static_cast<uint64_t>(0);

PYI_HD uint64_t knn_order_key(float score, int64_t index) {
  score = knn_sanitize(score);
  if (score == 0.0f) score = 0.0f;  // -0 == +0: equal scores tie on the index
  const uint32_t bits = float_to_bits(score);
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(~ascending) << 32) | static_cast<uint32_t>(index);
}

PYI_HD float knn_key_score(uint64_t key) {
  const uint32_t ascending = ~static_cast<uint32_t>(key >> 32);
  return bits_to_float((ascending & 0x80000000u) ? (ascending & 0x7fffffffu) : ~ascending);
}

PYI_HD int64_t knn_key_index(uint64_t key) { return static_cast<int64_t>(key & 0xffffffffu); }

// Turn a heap into a list sorted best first (descending score, ascending index on ties).
PYI_HD void knn_heap_sort(float* scores, int64_t* indices, int64_t size) {
  for (int64_t end = size - 1; end > 0; --end) {
    float score = scores[0];
    int64_t index = indices[0];
    scores[0] = scores[end];
    indices[0] = indices[end];
    scores[end] = score;
    indices[end] = index;
    knn_heap_sift_down(scores, indices, end, 0);
  }
}

}  // namespace pyinstance
