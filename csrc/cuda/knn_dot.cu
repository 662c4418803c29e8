// Exact dot-product k-NN on the GPU, on the caller's stream.
//
// Queries are processed in blocks, references in chunks:
//   1. knn_scores_kernel: shared-memory tiled float32 dot products (references of any of the
//      three dtypes converted on load) for a query block x reference chunk.
//   2. knn_select_kernel: one thread block per query merges the chunk into its running
//      top-k by an 8-pass radix selection over 64-bit order keys (pyinstance/topk.h: score
//      descending, then index ascending, so every key is unique), skipping chunk scores that
//      cannot beat the running k-th key. Any k: the running set lives in global memory.
//   3. Final ordering: a shared-memory bitonic sort per query when k <= 2048, otherwise a
//      multi-pass bitonic sort in global memory (one launch per stage).
// Memory: 2 x Q x k running keys plus one bounded score tile (and the sort buffer for k > 2048).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "pyinstance/checks.h"
#include "pyinstance/cuda_utils.cuh"
#include "pyinstance/dtype.h"
#include "pyinstance/knn_dot.h"
#include "pyinstance/topk.h"

namespace pyinstance::cuda {
namespace {

constexpr int kTile = 64;   // score tile: kTile queries x kTile references
constexpr int kDepth = 16;  // descriptor values per shared-memory step
constexpr int kSelectThreads = 256;
constexpr int kSmallSort =
    2048;  // largest k (rounded up to a power of two) sorted in shared memory
constexpr int64_t kChunk = 8192;                    // references per chunk (at least)
constexpr int64_t kScoreBudget = int64_t{1} << 26;  // floats in the score tile (256 MiB)

// scores[i * chunk + j] = <q[i], refs[j]> for i < rows, j < chunk (pointers at the block).
template <typename T>
__global__ void knn_scores_kernel(const float* __restrict__ q, const T* __restrict__ refs,
                                  int64_t rows, int64_t chunk, int64_t dim,
                                  float* __restrict__ scores) {
  __shared__ float qs[kDepth][kTile + 1];
  __shared__ float rs[kDepth][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float acc[4][4] = {};
  for (int64_t d0 = 0; d0 < dim; d0 += kDepth) {
    for (int e = tid; e < kTile * kDepth; e += 256) {
      const int r = e / kDepth, c = e % kDepth;
      const int64_t d = d0 + c;
      const bool in_d = d < dim;
      qs[c][r] = (in_d && row0 + r < rows) ? q[(row0 + r) * dim + d] : 0.0f;
      rs[c][r] = (in_d && col0 + r < chunk) ? load(refs + (col0 + r) * dim + d) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kDepth; ++c) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = qs[c][ty * 4 + i];
        b[i] = rs[c][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int64_t row = row0 + ty * 4 + i;
    if (row >= rows) continue;
    for (int j = 0; j < 4; ++j) {
      const int64_t col = col0 + tx * 4 + j;
      if (col < chunk) scores[row * chunk + col] = acc[i][j];
    }
  }
}

// Merge one reference chunk into each query's running top-k keys (run_in -> run_out).
__global__ void knn_select_kernel(const float* __restrict__ scores, int64_t chunk, int64_t first,
                                  int64_t query0, int64_t k, const int64_t* __restrict__ exclude,
                                  const uint64_t* __restrict__ run_in,
                                  uint64_t* __restrict__ run_out) {
  __shared__ unsigned long long worst;
  __shared__ unsigned int hist[256];
  __shared__ unsigned long long prefix;
  __shared__ long long rank;
  __shared__ unsigned int below;
  const int tid = threadIdx.x;
  const int64_t row = blockIdx.x;
  const float* s = scores + row * chunk;
  const uint64_t* run = run_in + row * k;
  const int64_t skip = exclude != nullptr ? exclude[query0 + row] : -1;
  const int64_t total = k + chunk;

  if (tid == 0) {
    worst = 0;
    prefix = 0;
    rank = k;  // the k-th smallest key, 1-based
    below = 0;
  }
  __syncthreads();
  unsigned long long local = 0;
  for (int64_t i = tid; i < k; i += blockDim.x)
    local = max(local, static_cast<unsigned long long>(run[i]));
  atomicMax(&worst, local);
  __syncthreads();
  const uint64_t cut = worst;
  // Candidate i: the running keys, then the chunk keys that can still enter.
  auto candidate = [&](int64_t i, uint64_t& key) -> bool {
    if (i < k) {
      key = run[i];
      return true;
    }
    const int64_t index = first + (i - k);
    if (index == skip) return false;
    key = knn_order_key(s[i - k], index);
    return key < cut;
  };

  unsigned long long mask = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    const unsigned long long want = prefix;
    for (int64_t i = tid; i < total; i += blockDim.x) {
      uint64_t key;
      if (candidate(i, key) && (key & mask) == want) atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
    }
    __syncthreads();
    if (tid == 0) {
      long long need = rank;
      unsigned int digit = 0;
      for (; digit < 256; ++digit) {
        if (need <= static_cast<long long>(hist[digit])) break;
        need -= hist[digit];
      }
      rank = need;
      prefix |= static_cast<unsigned long long>(digit) << shift;
    }
    mask |= 0xffull << shift;
    __syncthreads();
  }
  const uint64_t kth = prefix;
  uint64_t* out = run_out + row * k;
  for (int64_t i = tid; i < total; i += blockDim.x) {
    uint64_t key;
    if (candidate(i, key) && key < kth) out[atomicAdd(&below, 1u)] = key;
  }
  __syncthreads();
  // Keys are unique except the empty key, so the remaining slots all hold the k-th key.
  for (int64_t i = below + tid; i < k; i += blockDim.x) out[i] = kth;
}

__device__ __forceinline__ void bitonic_pair(unsigned long long* keys, int64_t t, int64_t size,
                                             int64_t stride) {
  const int64_t lo = 2 * stride * (t / stride) + (t % stride), hi = lo + stride;
  const bool ascending = (lo & size) == 0;
  const unsigned long long a = keys[lo], b = keys[hi];
  if ((a > b) == ascending) {
    keys[lo] = b;
    keys[hi] = a;
  }
}

__device__ __forceinline__ void write_result(uint64_t key, float* score, int64_t* index) {
  *score = knn_key_score(key);
  *index = knn_key_index(key);
}

// k <= kSmallSort: sort each query's keys in shared memory and write the results.
__global__ void knn_sort_small_kernel(const uint64_t* __restrict__ run, int64_t k, int64_t padded,
                                      float* __restrict__ out_scores,
                                      int64_t* __restrict__ out_idx) {
  extern __shared__ unsigned long long keys[];
  const int64_t row = blockIdx.x;
  for (int64_t i = threadIdx.x; i < padded; i += blockDim.x)
    keys[i] = i < k ? run[row * k + i] : kKnnEmptyKey;
  __syncthreads();
  for (int64_t size = 2; size <= padded; size <<= 1) {
    for (int64_t stride = size / 2; stride > 0; stride >>= 1) {
      for (int64_t t = threadIdx.x; t < padded / 2; t += blockDim.x)
        bitonic_pair(keys, t, size, stride);
      __syncthreads();
    }
  }
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x)
    write_result(keys[i], out_scores + row * k + i, out_idx + row * k + i);
}

// k > kSmallSort: the same bitonic network in global memory, one stage per launch.
__global__ void knn_pad_kernel(const uint64_t* __restrict__ run, int64_t rows, int64_t k,
                               int64_t padded, unsigned long long* __restrict__ keys) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * padded) return;
  const int64_t row = i / padded, col = i % padded;
  keys[i] = col < k ? run[row * k + col] : kKnnEmptyKey;
}

__global__ void knn_bitonic_stage_kernel(unsigned long long* keys, int64_t rows, int64_t padded,
                                         int64_t size, int64_t stride) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t half = padded / 2;
  if (i >= rows * half) return;
  bitonic_pair(keys + (i / half) * padded, i % half, size, stride);
}

__global__ void knn_unpad_kernel(const unsigned long long* __restrict__ keys, int64_t rows,
                                 int64_t k, int64_t padded, float* __restrict__ out_scores,
                                 int64_t* __restrict__ out_idx) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * k) return;
  write_result(keys[(i / k) * padded + i % k], out_scores + i, out_idx + i);
}

// Scores of a query block against a reference chunk, references of any float32/16 dtype.
void launch_scores(const float* q, const void* refs, DType ref_dtype, int64_t rows, int64_t first,
                   int64_t chunk, int64_t dim, float* scores, cudaStream_t stream) {
  dispatch_float<false>(ref_dtype, "refs", [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(blocks_for(chunk, kTile), blocks_for(rows, kTile));
    knn_scores_kernel<T><<<grid, dim3(16, 16), 0, stream>>>(
        q, static_cast<const T*>(refs) + first * dim, rows, chunk, dim, scores);
  });
}

int64_t next_pow2(int64_t value) {
  int64_t p = 1;
  while (p < value) p <<= 1;
  return p;
}

}  // namespace

void check_arguments(DType ref_dtype, int64_t Q, int64_t N, int64_t D, int64_t k) {
  PYI_CHECK(
      ref_dtype == DType::Float32 || ref_dtype == DType::Float16 || ref_dtype == DType::BFloat16,
      "refs: expected dtype float32, float16 or bfloat16 (code ", static_cast<int>(ref_dtype), ")");
  PYI_CHECK(Q >= 0, "queries: expected Q >= 0 rows, got ", Q);
  PYI_CHECK(N >= 1, "refs: expected at least one reference row, got N=", N);
  PYI_CHECK(N < (int64_t{1} << 32) - 1, "refs: the CUDA kernel supports N < 2^32 - 1, got ", N);
  PYI_CHECK(D >= 1, "expected descriptor dimension D >= 1, got ", D);
  PYI_CHECK(k >= 1 && k <= N, "k: expected 1 <= k <= N=", N, ", got ", k);
}

void knn_dot(const float* q, const void* refs, DType ref_dtype, int64_t Q, int64_t N, int64_t D,
             int64_t k, const int64_t* exclude, float* out_scores, int64_t* out_idx,
             cudaStream_t stream) {
  check_arguments(ref_dtype, Q, N, D, k);
  if (Q == 0) return;

  // Chunks at least as large as k keep the selection passes proportional to N for any k.
  const int64_t chunk_max = std::min(N, std::max(kChunk, k));
  const int64_t block_max = std::max<int64_t>(1, std::min(Q, kScoreBudget / chunk_max));
  const int64_t padded = next_pow2(k);
  DeviceBuffer scores(sizeof(float) * block_max * chunk_max, stream);
  DeviceBuffer run_a(sizeof(uint64_t) * block_max * k, stream);
  DeviceBuffer run_b(sizeof(uint64_t) * block_max * k, stream);
  const bool small_sort = padded <= kSmallSort;
  DeviceBuffer sort_keys(small_sort ? 8 : sizeof(uint64_t) * block_max * padded, stream);

  for (int64_t q0 = 0; q0 < Q; q0 += block_max) {
    const int64_t rows = std::min(block_max, Q - q0);
    uint64_t* run_in = run_a.as<uint64_t>();
    uint64_t* run_out = run_b.as<uint64_t>();
    check_cuda(cudaMemsetAsync(run_in, 0xff, sizeof(uint64_t) * rows * k, stream), "memset");
    for (int64_t first = 0; first < N; first += chunk_max) {
      const int64_t chunk = std::min(chunk_max, N - first);
      const float* qb = q + q0 * D;
      launch_scores(qb, refs, ref_dtype, rows, first, chunk, D, scores.as<float>(), stream);
      knn_select_kernel<<<static_cast<unsigned int>(rows), kSelectThreads, 0, stream>>>(
          scores.as<float>(), chunk, first, q0, k, exclude, run_in, run_out);
      std::swap(run_in, run_out);
    }
    float* s_out = out_scores + q0 * k;
    int64_t* i_out = out_idx + q0 * k;
    if (small_sort) {
      const int threads =
          static_cast<int>(std::min<int64_t>(std::max<int64_t>(padded / 2, 32), 1024));
      knn_sort_small_kernel<<<static_cast<unsigned int>(rows), threads,
                              sizeof(unsigned long long) * padded, stream>>>(run_in, k, padded,
                                                                             s_out, i_out);
    } else {
      auto* keys = sort_keys.as<unsigned long long>();
      knn_pad_kernel<<<blocks_for(rows * padded, 256), 256, 0, stream>>>(run_in, rows, k, padded,
                                                                         keys);
      for (int64_t size = 2; size <= padded; size <<= 1) {
        for (int64_t stride = size / 2; stride > 0; stride >>= 1) {
          knn_bitonic_stage_kernel<<<blocks_for(rows * padded / 2, 256), 256, 0, stream>>>(
              keys, rows, padded, size, stride);
        }
      }
      knn_unpad_kernel<<<blocks_for(rows * k, 256), 256, 0, stream>>>(keys, rows, k, padded, s_out,
                                                                      i_out);
    }
    check_cuda(cudaGetLastError(), "launching the kernels");
  }
}

}  // namespace pyinstance::cuda

namespace pyinstance::bindings {

void register_knn_dot_cuda(pybind11::module_& m) {
  m.def(
      "knn_dot",
      [](uintptr_t q, uintptr_t refs, int ref_dtype, int64_t Q, int64_t N, int64_t D, int64_t k,
         uintptr_t exclude, uintptr_t out_scores, uintptr_t out_idx, uintptr_t stream, int device) {
        cuda::check_arguments(static_cast<DType>(ref_dtype), Q, N, D, k);
        pybind11::gil_scoped_release release;
        const cuda::DeviceGuard guard(device);
        cuda::knn_dot(reinterpret_cast<const float*>(q), reinterpret_cast<const void*>(refs),
                      static_cast<DType>(ref_dtype), Q, N, D, k,
                      reinterpret_cast<const int64_t*>(exclude),
                      reinterpret_cast<float*>(out_scores), reinterpret_cast<int64_t*>(out_idx),
                      cuda::as_stream(stream));
      },
      pybind11::arg("queries"), pybind11::arg("refs"), pybind11::arg("ref_dtype"),
      pybind11::arg("Q"), pybind11::arg("N"), pybind11::arg("D"), pybind11::arg("k"),
      pybind11::arg("exclude"), pybind11::arg("out_scores"), pybind11::arg("out_indices"),
      pybind11::arg("stream"), pybind11::arg("device"),
      "GPU top-k dot products (same contract as _C.knn_dot), enqueued on `stream` of `device`; "
      "exclude entries and finiteness are validated by the caller. Releases the GIL.");
}

}  // namespace pyinstance::bindings
