// Per-element rules of triplet mining, shared by the CPU and CUDA kernels and mirrored by
// pyinstance/ops/_reference.py. Similarities are float32 dot products s = x_a . x_r.
#pragma once
#include <cstdint>

#include "pyinstance/checks.h"
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

// The batch, its references and the label grouping built by the Python wrapper.
struct Problem {
  const float* emb;
  int64_t na;
  const int64_t* labels;
  const float* ref;
  int64_t nr;
  const int64_t* ref_labels;
  int64_t dim;
  bool same_set;  // references are the batch itself: skip a == p, use symmetry
  const int64_t* order;
  const int64_t* pos_start;
  const int64_t* pos_end;
  const int64_t* pair_off;  // na + 1 entries
  int64_t npairs;           // pair_off[na], known on the host (pair_off may be on the device)
};

// The three preallocated int64 output columns; slot t holds (anchor, positive, negative).
struct Output {
  int64_t* anchors;
  int64_t* positives;
  int64_t* negatives;
  PYI_HD void put(int64_t slot, int64_t a, int64_t p, int64_t n) const {
    anchors[slot] = a;
    positives[slot] = p;
    negatives[slot] = n;
  }
  // Host only: moves the filled slots (anchor >= 0) to the front, in order; returns how many.
  int64_t compact(int64_t slots) const {
    int64_t kept = 0;
    for (int64_t t = 0; t < slots; ++t)
      if (anchors[t] >= 0) put(kept++, anchors[t], positives[t], negatives[t]);
    return kept;
  }
};

// Host side of the bindings (CPU and CUDA take the same arguments): checks the sizes and
// turns the raw addresses from Python into a Problem.
inline Problem make_problem(uintptr_t emb, int64_t na, int64_t dim, uintptr_t labels, uintptr_t ref,
                            int64_t nr, uintptr_t ref_labels, bool same_set, uintptr_t order,
                            uintptr_t pos_start, uintptr_t pos_end, uintptr_t pair_off,
                            int64_t npairs) {
  PYI_CHECK(na >= 1 && nr >= 1 && dim >= 1, "triplet_mine: empty inputs (", na, " anchors, ", nr,
            " references, dimension ", dim, ")");
  PYI_CHECK(!same_set || na == nr, "triplet_mine: same_set needs as many references as anchors");
  PYI_CHECK(npairs >= 0, "triplet_mine: negative pair count ", npairs);
  auto f = [](uintptr_t p) { return reinterpret_cast<const float*>(p); };
  auto i = [](uintptr_t p) { return reinterpret_cast<const int64_t*>(p); };
  return Problem{f(emb),   na,       i(labels),    f(ref),     nr,          i(ref_labels), dim,
                 same_set, i(order), i(pos_start), i(pos_end), i(pair_off), npairs};
}

inline Output make_output(uintptr_t a, uintptr_t p, uintptr_t n) {
  return Output{reinterpret_cast<int64_t*>(a), reinterpret_cast<int64_t*>(p),
                reinterpret_cast<int64_t*>(n)};
}

// The number of output slots a strategy fills before compaction (batch_all: -1, it is sized
// by its counting pass): the one place that sizes the outputs. The Python wrapper reads it
// through _C.triplet_output_slots.
inline int64_t output_slots(Strategy strategy, int64_t na, int64_t npairs, int64_t n_triplets) {
  switch (strategy) {
    case Strategy::BatchHard:
      return na;
    case Strategy::HardNegative:
    case Strategy::SemiHard:
      return npairs;
    case Strategy::Offline:
      return na * n_triplets;
    default:
      return -1;
  }
}

// Host side of the triplet_mine bindings: the strategy, fallback and offline sizes.
inline void check_mine_args(int strategy, int fallback, int64_t n_pos, int64_t n_neg,
                            int64_t n_triplets) {
  const auto s = static_cast<Strategy>(strategy);
  PYI_CHECK(strategy >= 0 && strategy <= 4 && s != Strategy::BatchAll,
            "triplet_mine: unknown strategy code ", strategy);
  PYI_CHECK(fallback == 0 || fallback == 1, "triplet_mine: unknown fallback code ", fallback);
  PYI_CHECK(s != Strategy::Offline || (n_pos >= 1 && n_neg >= 1 && n_triplets >= 1),
            "triplet_mine: offline needs n_pos, n_neg, n_triplets >= 1");
}

// Kohl's hinge is positive: max(0, s_an - s_ap + margin) > 0, evaluated in float32 exactly as
// the reference does ((s_an - s_ap) + margin).
PYI_HD bool violates(float s_ap, float s_an, float margin) { return (s_an - s_ap) + margin > 0.0f; }

// Hardest negative: the most similar one (ties to the smaller index). best_index < 0: none yet.
PYI_HD void offer_hardest(float& best, int64_t& best_index, float s, int64_t j) {
  if (best_index < 0 || knn_better(s, j, best, best_index)) {
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

// ---- Entry points (csrc/cpu/triplet_mine.cpp, csrc/cuda/triplet_mine.cu) -----------------
// One contract on both backends:
// * triplet_mine (batch_hard, hard_negative, semihard, offline) fills the first
//   output_slots(...) slots of `out` and returns how many triplets it found, compacted to
//   the front in slot order;
// * triplet_mine_count (batch_all pass 1) writes the number of violating negatives of every
//   positive pair to counts[pair_off[na]];
// * triplet_mine_fill (batch_all pass 2) writes every violating triplet at its number
//   (pair_base: exclusive prefix sums of the counts), or with a sorted sample of triplet
//   numbers only those, at their position in the sample.
// Throw std::invalid_argument on bad arguments and (CUDA) std::runtime_error on CUDA errors.

namespace pyinstance::cpu {

// threads: 1..kMaxThreads (pyinstance/threads.h), 0 for OpenMP's default.
int64_t triplet_mine(const triplet::Problem& pb, triplet::Strategy strategy,
                     triplet::SemihardFallback fallback, int64_t n_pos, int64_t n_neg,
                     int64_t n_triplets, const triplet::Output& out, int threads);
void triplet_mine_count(const triplet::Problem& pb, float margin, int64_t* counts, int threads);
void triplet_mine_fill(const triplet::Problem& pb, float margin, const int64_t* pair_base,
                       const int64_t* sample, int64_t n_sample, const triplet::Output& out,
                       int threads);

}  // namespace pyinstance::cpu

#if defined(__CUDACC__)
#include <cuda_runtime_api.h>

namespace pyinstance::cuda {

// Device pointers, enqueued on `stream` of the current device; triplet_mine synchronises
// the stream to return its count.
int64_t triplet_mine(const triplet::Problem& pb, triplet::Strategy strategy,
                     triplet::SemihardFallback fallback, int64_t n_pos, int64_t n_neg,
                     int64_t n_triplets, const triplet::Output& out, cudaStream_t stream);
void triplet_mine_count(const triplet::Problem& pb, float margin, int64_t* counts,
                        cudaStream_t stream);
void triplet_mine_fill(const triplet::Problem& pb, float margin, const int64_t* pair_base,
                       const int64_t* sample, int64_t n_sample, const triplet::Output& out,
                       cudaStream_t stream);

}  // namespace pyinstance::cuda
#endif
