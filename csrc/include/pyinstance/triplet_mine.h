// Per-element rules of triplet mining, shared by the CPU and CUDA kernels and mirrored by
// pyinstance/ops/_reference.py. Similarities are float32 dot products s = x_a . x_r.
#pragma once
#include <cstdint>

#include "pyinstance/macros.h"
#include "pyinstance/topk_select.h"

namespace pyinstance::triplet {

// Strategy codes passed from pyinstance/ops/triplet_mine.py (STRATEGY_CODES there).
enum class Strategy : int {
  BatchHard = 0,
  HardNegative = 1,
  SemiHard = 2,
  BatchAll = 3,
  Offline = 4
};

// What a semi-hard pair without a negative below its positive gets.
enum class SemihardFallback : int { Drop = 0, Easiest = 1 };

// Kohl's hinge is positive: max(0, s_an - s_ap + margin) > 0, evaluated in float32 exactly as
// the reference does ((s_an - s_ap) + margin).
PYI_HD bool violates(float s_ap, float s_an, float margin) { return (s_an - s_ap) + margin > 0.0f; }

// Hardest negative: the most similar one (ties to the smaller index). best_index < 0: none yet.
PYI_HD void offer_hardest(float& best, int64_t& best_index, float s, int64_t j) {
  if (best_index < 0 || topk_better(s, j, best, best_index)) {
    best = s;
    best_index = j;
  }
}

// Easiest: the least similar (ties to the smaller index). Hardest positive uses the same rule.
PYI_HD void offer_easiest(float& best, int64_t& best_index, float s, int64_t j) {
  if (best_index < 0 || topk_better_low(s, j, best, best_index)) {
    best = s;
    best_index = j;
  }
}

// Semi-hard negative of a pair with positive similarity s_ap: the most similar negative
// that is still strictly less similar than the positive (FaceNet).
PYI_HD void offer_semihard(float s_ap, float& best, int64_t& best_index, float s, int64_t j) {
  if (s < s_ap) offer_hardest(best, best_index, s, j);
}

// Offline mining ranks the n*m (positive, negative) combinations of an anchor by
// s_an - s_ap (the hinge before clamping) and keeps the best; ties go to the combination
// that comes first in (positive rank, negative rank) order, i.e. the smaller code
// p_rank * n_neg + n_rank.
PYI_HD float offline_score(float s_ap, float s_an) { return s_an - s_ap; }

// splitmix64: the generator behind the batch_all subset (pyinstance.ops._reference mirrors it).
PYI_HD uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform integer in [0, bound) by rejection (bound >= 1), unbiased and portable.
PYI_HD uint64_t uniform_below(uint64_t& state, uint64_t bound) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x = splitmix64(state);
  while (x >= limit) x = splitmix64(state);
  return x % bound;
}

}  // namespace pyinstance::triplet
