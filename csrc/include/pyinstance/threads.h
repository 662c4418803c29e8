// The CPU kernels' thread count: one bound and one default for every op (the Python side,
// pyinstance/ops/_args.py, checks the same range and reads the bound from _C.MAX_THREADS).
#pragma once
#include <omp.h>

#include <algorithm>

#include "pyinstance/checks.h"

namespace pyinstance::cpu {

// More threads than this is an error: OpenMP cannot start hundreds of thousands of threads
// (the process crashes), and no CPU kernel here scales past a few hundred.
constexpr int kMaxThreads = 1024;

// The number of threads to run: `threads` when it is in [1, kMaxThreads], OpenMP's default
// (capped at kMaxThreads) when it is 0; anything else throws std::invalid_argument.
inline int resolve_threads(int threads) {
  PYI_CHECK(threads >= 0 && threads <= kMaxThreads,
            "threads: expected 1 <= threads <= ", kMaxThreads, " (or 0 for OpenMP's default), got ",
            threads);
  return threads > 0 ? threads : std::min(omp_get_max_threads(), kMaxThreads);
}

}  // namespace pyinstance::cpu
