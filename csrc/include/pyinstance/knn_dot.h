// Exact dot-product k-nearest-neighbour search: the C++ entry points behind
// pyinstance.ops.knn_dot, callable from other kernels (e.g. offline triplet mining).
//
// For every query row q (float32, D values) find the k reference rows r with the largest
// <q, r>, accumulated in float32. Results per query are sorted by descending score; equal
// scores are ordered by the smaller reference index. Memory beyond the inputs and outputs
// is O(threads * Q * k) for heaps plus bounded per-thread tiles; no Q x N matrix is formed.
#pragma once
#include <cstdint>

#include "pyinstance/dtype.h"

#if defined(__CUDACC__)
#include <cuda_runtime_api.h>
#endif

namespace pyinstance::cpu {

// q:          Q x D float32, row-major, contiguous.
// refs:       N x D row-major, contiguous, of type ref_dtype (Float32, Float16 or BFloat16);
//             read-only and streamed once per query block (it may be a memory-mapped file).
// k:          1 <= k <= N (k <= N - 1 when any exclude entry is >= 0).
// exclude:    nullptr, or Q entries: the reference index to skip for that query, -1 for none.
// out_scores: Q x k float32, written in descending order.
// out_idx:    Q x k int64, reference indices matching out_scores.
// threads:    OpenMP threads to use, 1..kMaxThreads (threads.h); 0 means OpenMP's default.
// Throws std::invalid_argument (PYI_CHECK) on bad sizes, dtypes or thread counts.
// Thread-safe: concurrent calls share no state. When a float32 accumulation overflows, every
// score is recomputed in float64 (slow, rare) and rounded to float32: true values beyond
// float32's range come back as +-inf and rank by their sign; values within it are finite.
void knn_dot(const float* q, const void* refs, DType ref_dtype, int64_t Q, int64_t N, int64_t D,
             int64_t k, const int64_t* exclude, float* out_scores, int64_t* out_idx, int threads);

// knn_dot through an int8 screening copy of refs: the same results, bit for bit, reading a
// quarter of the bytes of float32 references when Q is small (memory-bound). Row i of the
// copy is scales[i] * codes[i * code_stride, + D) (code_stride a multiple of 64, codes zero
// from D to code_stride, every array readable up to row round_up(N, 64)); norms[i] >=
// ||r_i||, slacks[i] >= ||r_i - scales[i] codes_i|| + 16 u scales[i] ||codes_i|| (u =
// 2^-24) and sums[i] is the sum of codes_i: pyinstance/ops/knn_screen.py builds them.
// Queries are quantised to int16 (or two byte parts with AVX512_VNNI); exact integer sums
// against the codes bound every row's float32 score (any summation order) from above and
// below. The rows whose upper bound reaches the k-th largest lower bound are scored
// exactly with knn_dot's arithmetic. NaN or infinite references and overflows end in knn_dot's
// behaviour. From 64 * threads queries on it is knn_dot itself.
void knn_dot_screened(const float* q, const void* refs, DType ref_dtype, int64_t Q, int64_t N,
                      int64_t D, int64_t k, const int64_t* exclude, const int8_t* codes,
                      int64_t code_stride, const float* scales, const float* slacks,
                      const float* norms, const int32_t* sums, float* out_scores, int64_t* out_idx,
                      int threads);

}  // namespace pyinstance::cpu

#if defined(__CUDACC__)
namespace pyinstance::cuda {

// The same contract on device pointers (exclude entries must already be valid and refs
// finite: the CUDA kernel does not re-check data values), enqueued on `stream` of the
// current device. Requires N < 2^32 - 1. Throws std::invalid_argument on bad sizes and
// std::runtime_error on CUDA errors.
void knn_dot(const float* q, const void* refs, DType ref_dtype, int64_t Q, int64_t N, int64_t D,
             int64_t k, const int64_t* exclude, float* out_scores, int64_t* out_idx,
             cudaStream_t stream);

}  // namespace pyinstance::cuda
#endif
