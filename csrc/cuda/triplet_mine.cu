// CUDA triplet mining (pyinstance.ops.triplet_mine on GPU arrays). The anchors are processed
// in chunks: a tiled kernel writes the chunk's similarities to all references into a
// workspace (at most kWorkspaceBytes), then per-anchor kernels reduce each row with the
// rules of pyinstance/triplet_mine.h and pyinstance/topk_select.h, the same functions the
// CPU kernel uses. Entry points and return contract: pyinstance/triplet_mine.h; the bindings
// mirror the CPU ones with the caller's stream and device in place of the thread count.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <thrust/device_ptr.h>
#include <thrust/execution_policy.h>
#include <thrust/iterator/zip_iterator.h>
#include <thrust/remove.h>
#include <thrust/tuple.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "pyinstance/checks.h"
#include "pyinstance/cuda_utils.cuh"
#include "pyinstance/triplet_mine.h"

namespace py = pybind11;

namespace pyinstance::cuda {

using triplet::Output;
using triplet::Problem;
using triplet::SemihardFallback;
using triplet::Strategy;

namespace {

constexpr int64_t kWorkspaceBytes = int64_t{256} << 20;
constexpr int kTile = 16;
constexpr int64_t kMaxChunk = int64_t{65535} * kTile;  // gridDim.y limit of similarity_kernel
constexpr int kThreads = 256;

// sims[r * nr + j] = <emb[a0 + r], ref[j]> for r < rows: 16 x 16 shared-memory tiles.
__global__ void similarity_kernel(Problem pb, int64_t a0, int64_t rows, float* sims) {
  __shared__ float a_tile[kTile][kTile + 1];
  __shared__ float r_tile[kTile][kTile + 1];
  const int64_t r = static_cast<int64_t>(blockIdx.y) * kTile + threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  const int64_t j_load = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.y;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < pb.dim; k0 += kTile) {
    const int64_t k = k0 + threadIdx.x;
    a_tile[threadIdx.y][threadIdx.x] =
        (r < rows && k < pb.dim) ? pb.emb[(a0 + r) * pb.dim + k] : 0.0f;
    r_tile[threadIdx.y][threadIdx.x] =
        (j_load < pb.nr && k < pb.dim) ? pb.ref[j_load * pb.dim + k] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kTile; ++t) acc = fmaf(a_tile[threadIdx.y][t], r_tile[threadIdx.x][t], acc);
    __syncthreads();
  }
  if (r < rows && j < pb.nr) sims[r * pb.nr + j] = acc;
}

// An output slot no triplet was written to (anchor -1).
struct EmptySlot {
  __host__ __device__ bool operator()(const thrust::tuple<int64_t, int64_t, int64_t>& t) const {
    return thrust::get<0>(t) < 0;
  }
};

__device__ __forceinline__ bool is_positive(const Problem& pb, int64_t a, int64_t j) {
  return pb.ref_labels[j] == pb.labels[a] && !(pb.same_set && j == a);
}

// Block-wide selection of the best (value, index) under `low` (min) or max order.
__device__ void block_select(float& value, int64_t& index, bool low) {
  __shared__ float values[kThreads];
  __shared__ int64_t indices[kThreads];
  values[threadIdx.x] = value;
  indices[threadIdx.x] = index;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      const int other = threadIdx.x + half;
      float v = values[threadIdx.x];
      int64_t i = indices[threadIdx.x];
      if (indices[other] >= 0) {
        if (low)
          triplet::offer_easiest(v, i, values[other], indices[other]);
        else
          triplet::offer_hardest(v, i, values[other], indices[other]);
      }
      values[threadIdx.x] = v;
      indices[threadIdx.x] = i;
    }
    __syncthreads();
  }
  value = values[0];
  index = indices[0];
  __syncthreads();
}

__device__ int64_t block_sum(int64_t value) {
  __shared__ int64_t sums[kThreads];
  sums[threadIdx.x] = value;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) sums[threadIdx.x] += sums[threadIdx.x + half];
    __syncthreads();
  }
  const int64_t total = sums[0];
  __syncthreads();
  return total;
}

// Where the anchor itself sits in its label range (within the batch), else pos_end[a].
__device__ int64_t self_position(const Problem& pb, int64_t a) {
  if (pb.same_set)
    for (int64_t u = pb.pos_start[a]; u < pb.pos_end[a]; ++u)
      if (pb.order[u] == a) return u;
  return pb.pos_end[a];
}

// Positive number q of anchor a (in increasing index order); self = self_position(pb, a).
__device__ int64_t positive_at(const Problem& pb, int64_t a, int64_t self, int64_t q) {
  const int64_t t = pb.pos_start[a] + q;
  return pb.order[t >= self ? t + 1 : t];
}

// One block per anchor row: batch_hard, hard_negative and semihard.
__global__ void pairs_kernel(Problem pb, int64_t a0, const float* sims, int strategy, int fallback,
                             Output out) {
  const int64_t a = a0 + blockIdx.x;
  const float* row = sims + static_cast<int64_t>(blockIdx.x) * pb.nr;
  const int64_t la = pb.labels[a];
  float hard = 0.0f, easy = 0.0f, hard_pos = 0.0f;
  int64_t hard_j = -1, easy_j = -1, hard_pos_j = -1;
  for (int64_t j = threadIdx.x; j < pb.nr; j += kThreads) {
    if (pb.ref_labels[j] != la) {
      triplet::offer_hardest(hard, hard_j, row[j], j);
      triplet::offer_easiest(easy, easy_j, row[j], j);
    } else if (is_positive(pb, a, j)) {
      triplet::offer_easiest(hard_pos, hard_pos_j, row[j], j);
    }
  }
  block_select(hard, hard_j, false);
  const auto s = static_cast<Strategy>(strategy);
  if (s == Strategy::BatchHard) {
    block_select(hard_pos, hard_pos_j, true);
    if (threadIdx.x == 0) {
      const bool ok = hard_j >= 0 && hard_pos_j >= 0;
      out.put(a, ok ? a : -1, hard_pos_j, hard_j);
    }
    return;
  }
  const int64_t npairs = pb.pair_off[a + 1] - pb.pair_off[a];
  const int64_t self = self_position(pb, a);
  if (s == Strategy::HardNegative) {
    for (int64_t q = threadIdx.x; q < npairs; q += kThreads)
      out.put(pb.pair_off[a] + q, hard_j >= 0 ? a : -1, positive_at(pb, a, self, q), hard_j);
    return;
  }
  block_select(easy, easy_j, true);
  for (int64_t q = 0; q < npairs; ++q) {
    const int64_t p = positive_at(pb, a, self, q);
    const float s_ap = row[p];
    float best = 0.0f;
    int64_t best_j = -1;
    for (int64_t j = threadIdx.x; j < pb.nr; j += kThreads)
      if (pb.ref_labels[j] != la) triplet::offer_semihard(s_ap, best, best_j, row[j], j);
    block_select(best, best_j, false);
    if (threadIdx.x == 0) {
      if (best_j < 0 && fallback == static_cast<int>(SemihardFallback::Easiest)) best_j = easy_j;
      out.put(pb.pair_off[a] + q, best_j >= 0 ? a : -1, p, best_j);
    }
  }
}

// batch_all pass 1: violating negatives per positive pair, one block per anchor row.
__global__ void count_kernel(Problem pb, int64_t a0, const float* sims, float margin,
                             int64_t* counts) {
  const int64_t a = a0 + blockIdx.x;
  const float* row = sims + static_cast<int64_t>(blockIdx.x) * pb.nr;
  const int64_t la = pb.labels[a];
  const int64_t npairs = pb.pair_off[a + 1] - pb.pair_off[a];
  const int64_t self = self_position(pb, a);
  for (int64_t q = 0; q < npairs; ++q) {
    const float s_ap = row[positive_at(pb, a, self, q)];
    int64_t c = 0;
    for (int64_t j = threadIdx.x; j < pb.nr; j += kThreads)
      c += (pb.ref_labels[j] != la && triplet::violates(s_ap, row[j], margin)) ? 1 : 0;
    c = block_sum(c);
    if (threadIdx.x == 0) counts[pb.pair_off[a] + q] = c;
  }
}

__device__ int64_t lower_bound(const int64_t* values, int64_t size, int64_t key) {
  int64_t lo = 0, hi = size;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (values[mid] < key)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// batch_all pass 2: one warp per positive pair scans the row in order; a ballot numbers the
// violating negatives, so triplet numbers follow (a, p, n) order as on the CPU.
__global__ void fill_kernel(Problem pb, int64_t a0, const float* sims, float margin,
                            const int64_t* pair_base, const int64_t* sample, int64_t n_sample,
                            Output out) {
  const int64_t a = a0 + blockIdx.x;
  const float* row = sims + static_cast<int64_t>(blockIdx.x) * pb.nr;
  const int64_t la = pb.labels[a];
  const int lane = threadIdx.x % 32;
  const int64_t npairs = pb.pair_off[a + 1] - pb.pair_off[a];
  const int64_t self = self_position(pb, a);
  for (int64_t q = threadIdx.x / 32; q < npairs; q += kThreads / 32) {
    const int64_t pair = pb.pair_off[a] + q;
    const int64_t p = positive_at(pb, a, self, q);
    const float s_ap = row[p];
    int64_t number = pair_base[pair];
    for (int64_t j0 = 0; j0 < pb.nr; j0 += 32) {
      const int64_t j = j0 + lane;
      const bool hit =
          j < pb.nr && pb.ref_labels[j] != la && triplet::violates(s_ap, row[j], margin);
      const unsigned ballot = __ballot_sync(0xffffffffu, hit);
      if (hit) {
        const int64_t mine = number + __popc(ballot & ((1u << lane) - 1u));
        if (mine < pair_base[pair + 1]) {
          int64_t slot = mine;
          if (sample != nullptr) {
            slot = lower_bound(sample, n_sample, mine);
            if (slot >= n_sample || sample[slot] != mine) slot = -1;
          }
          if (slot >= 0) out.put(slot, a, p, j);
        }
      }
      number += __popc(ballot);
    }
  }
}

// offline: one thread per anchor row keeps its n best positives, m best negatives and the
// best n_triplets combinations in scratch lists (the CPU kernel's rules and tie-breaks).
__global__ void offline_kernel(Problem pb, int64_t a0, int64_t rows, const float* sims,
                               int64_t n_pos, int64_t n_neg, int64_t n_triplets, float* scratch_f,
                               int64_t* scratch_i, Output out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const int64_t a = a0 + r;
  const float* row = sims + r * pb.nr;
  const int64_t width = n_pos + n_neg + n_triplets;
  float* pos_v = scratch_f + r * width;
  float* neg_v = pos_v + n_pos;
  float* combo_v = neg_v + n_neg;
  int64_t* pos_i = scratch_i + r * width;
  int64_t* neg_i = pos_i + n_pos;
  int64_t* combo_i = neg_i + n_neg;
  int64_t npos = 0, nneg = 0, ncombo = 0;
  const int64_t la = pb.labels[a];
  for (int64_t j = 0; j < pb.nr; ++j) {
    if (pb.ref_labels[j] != la)
      topk_offer(neg_v, neg_i, nneg, n_neg, row[j], j);
    else if (is_positive(pb, a, j))
      topk_offer(pos_v, pos_i, npos, n_pos, row[j], j);
  }
  for (int64_t u = 0; u < npos; ++u)
    for (int64_t v = 0; v < nneg; ++v)
      topk_offer(combo_v, combo_i, ncombo, n_triplets, triplet::offline_score(pos_v[u], neg_v[v]),
                 u * n_neg + v);
  for (int64_t t = 0; t < n_triplets; ++t) {
    const int64_t slot = a * n_triplets + t;
    if (t < ncombo)
      out.put(slot, a, pos_i[combo_i[t] / n_neg], neg_i[combo_i[t] % n_neg]);
    else
      out.put(slot, -1, -1, -1);
  }
}

// Anchors per chunk: their similarity rows fit the workspace and the launch grid.
int64_t chunk_rows(int64_t na, int64_t nr) {
  return std::max<int64_t>(1, std::min({na, kMaxChunk, kWorkspaceBytes / (nr * int64_t{4})}));
}

// Calls body(a0, rows, sims) for chunks of anchors whose similarity rows fit the workspace.
template <class Body>
void for_each_chunk(const Problem& pb, cudaStream_t stream, Body&& body) {
  const int64_t chunk = chunk_rows(pb.na, pb.nr);
  DeviceBuffer sims(static_cast<size_t>(chunk * pb.nr) * sizeof(float), stream);
  for (int64_t a0 = 0; a0 < pb.na; a0 += chunk) {
    const int64_t rows = std::min(chunk, pb.na - a0);
    const dim3 grid(blocks_for(pb.nr, kTile), blocks_for(rows, kTile));
    similarity_kernel<<<grid, dim3(kTile, kTile), 0, stream>>>(pb, a0, rows, sims.as<float>());
    body(a0, rows, sims.as<float>());
    check_cuda(cudaGetLastError(), "launching kernels");
  }
}

// Moves the filled slots (anchor >= 0) to the front in order; returns how many (syncs).
int64_t compact(const Output& out, int64_t slots, cudaStream_t stream) {
  auto first = thrust::make_zip_iterator(thrust::make_tuple(
      thrust::device_pointer_cast(out.anchors), thrust::device_pointer_cast(out.positives),
      thrust::device_pointer_cast(out.negatives)));
  const auto last =
      thrust::remove_if(thrust::cuda::par.on(stream), first, first + slots, EmptySlot());
  check_cuda(cudaGetLastError(), "compacting the triplets");
  return static_cast<int64_t>(last - first);
}

}  // namespace

int64_t triplet_mine(const Problem& pb, Strategy strategy, SemihardFallback fallback, int64_t n_pos,
                     int64_t n_neg, int64_t n_triplets, const Output& out, cudaStream_t stream) {
  triplet::check_mine_args(static_cast<int>(strategy), static_cast<int>(fallback), n_pos, n_neg,
                           n_triplets);
  if (strategy == Strategy::Offline) {
    const int64_t chunk = chunk_rows(pb.na, pb.nr);
    const int64_t width = n_pos + n_neg + n_triplets;
    // Indices first: the int64 part stays 8-byte aligned.
    const size_t index_bytes = static_cast<size_t>(chunk * width) * sizeof(int64_t);
    DeviceBuffer lists(index_bytes + static_cast<size_t>(chunk * width) * sizeof(float), stream);
    for_each_chunk(pb, stream, [&](int64_t a0, int64_t rows, const float* sims) {
      offline_kernel<<<blocks_for(rows, 128), 128, 0, stream>>>(
          pb, a0, rows, sims, n_pos, n_neg, n_triplets, lists.as<float>(index_bytes),
          lists.as<int64_t>(), out);
    });
  } else {
    for_each_chunk(pb, stream, [&](int64_t a0, int64_t rows, const float* sims) {
      pairs_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
          pb, a0, sims, static_cast<int>(strategy), static_cast<int>(fallback), out);
    });
  }
  return compact(out, triplet::output_slots(strategy, pb.na, pb.npairs, n_triplets), stream);
}

void triplet_mine_count(const Problem& pb, float margin, int64_t* counts, cudaStream_t stream) {
  for_each_chunk(pb, stream, [&](int64_t a0, int64_t rows, const float* sims) {
    count_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(pb, a0, sims, margin,
                                                                       counts);
  });
}

void triplet_mine_fill(const Problem& pb, float margin, const int64_t* pair_base,
                       const int64_t* sample, int64_t n_sample, const Output& out,
                       cudaStream_t stream) {
  for_each_chunk(pb, stream, [&](int64_t a0, int64_t rows, const float* sims) {
    fill_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        pb, a0, sims, margin, pair_base, sample, n_sample, out);
  });
}

}  // namespace pyinstance::cuda

namespace pyinstance::bindings {

// The argument names every triplet binding shares (CPU and CUDA), in order.
#define PYI_TRIPLET_PROBLEM_ARGS                                                                \
  py::arg("embeddings"), py::arg("n_anchors"), py::arg("dim"), py::arg("labels"),               \
      py::arg("ref_embeddings"), py::arg("n_refs"), py::arg("ref_labels"), py::arg("same_set"), \
      py::arg("order"), py::arg("pos_start"), py::arg("pos_end"), py::arg("pair_off"),          \
      py::arg("n_pairs")

void register_triplet_mine_cuda(py::module_& m) {
  m.def(
      "triplet_mine",
      [](int strategy, uintptr_t emb, int64_t na, int64_t dim, uintptr_t labels, uintptr_t ref,
         int64_t nr, uintptr_t ref_labels, bool same_set, uintptr_t order, uintptr_t pos_start,
         uintptr_t pos_end, uintptr_t pair_off, int64_t n_pairs, int fallback, int64_t n_pos,
         int64_t n_neg, int64_t n_triplets, uintptr_t out_a, uintptr_t out_p, uintptr_t out_n,
         uintptr_t stream, int device) {
        const triplet::Problem pb =
            triplet::make_problem(emb, na, dim, labels, ref, nr, ref_labels, same_set, order,
                                  pos_start, pos_end, pair_off, n_pairs);
        triplet::check_mine_args(strategy, fallback, n_pos, n_neg, n_triplets);
        py::gil_scoped_release release;
        const cuda::DeviceGuard guard(device);
        return cuda::triplet_mine(pb, static_cast<triplet::Strategy>(strategy),
                                  static_cast<triplet::SemihardFallback>(fallback), n_pos, n_neg,
                                  n_triplets, triplet::make_output(out_a, out_p, out_n),
                                  cuda::as_stream(stream));
      },
      py::arg("strategy"), PYI_TRIPLET_PROBLEM_ARGS, py::arg("fallback"), py::arg("n_pos"),
      py::arg("n_neg"), py::arg("n_triplets"), py::arg("out_anchors"), py::arg("out_positives"),
      py::arg("out_negatives"), py::arg("stream"), py::arg("device"),
      "Mine triplets into triplet_output_slots(...) preallocated slots on `stream` of `device`; "
      "returns how many were found (compacted to the front; synchronises the stream).");
  m.def(
      "triplet_mine_count",
      [](uintptr_t emb, int64_t na, int64_t dim, uintptr_t labels, uintptr_t ref, int64_t nr,
         uintptr_t ref_labels, bool same_set, uintptr_t order, uintptr_t pos_start,
         uintptr_t pos_end, uintptr_t pair_off, int64_t n_pairs, float margin, uintptr_t counts,
         uintptr_t stream, int device) {
        const triplet::Problem pb =
            triplet::make_problem(emb, na, dim, labels, ref, nr, ref_labels, same_set, order,
                                  pos_start, pos_end, pair_off, n_pairs);
        py::gil_scoped_release release;
        const cuda::DeviceGuard guard(device);
        cuda::triplet_mine_count(pb, margin, reinterpret_cast<int64_t*>(counts),
                                 cuda::as_stream(stream));
      },
      PYI_TRIPLET_PROBLEM_ARGS, py::arg("margin"), py::arg("counts"), py::arg("stream"),
      py::arg("device"), "batch_all pass 1: number of violating negatives of every positive pair.");
  m.def(
      "triplet_mine_fill",
      [](uintptr_t emb, int64_t na, int64_t dim, uintptr_t labels, uintptr_t ref, int64_t nr,
         uintptr_t ref_labels, bool same_set, uintptr_t order, uintptr_t pos_start,
         uintptr_t pos_end, uintptr_t pair_off, int64_t n_pairs, float margin, uintptr_t pair_base,
         uintptr_t sample, int64_t n_sample, uintptr_t out_a, uintptr_t out_p, uintptr_t out_n,
         uintptr_t stream, int device) {
        const triplet::Problem pb =
            triplet::make_problem(emb, na, dim, labels, ref, nr, ref_labels, same_set, order,
                                  pos_start, pos_end, pair_off, n_pairs);
        py::gil_scoped_release release;
        const cuda::DeviceGuard guard(device);
        cuda::triplet_mine_fill(pb, margin, reinterpret_cast<const int64_t*>(pair_base),
                                reinterpret_cast<const int64_t*>(sample), n_sample,
                                triplet::make_output(out_a, out_p, out_n), cuda::as_stream(stream));
      },
      PYI_TRIPLET_PROBLEM_ARGS, py::arg("margin"), py::arg("pair_base"), py::arg("sample"),
      py::arg("n_sample"), py::arg("out_anchors"), py::arg("out_positives"),
      py::arg("out_negatives"), py::arg("stream"), py::arg("device"),
      "batch_all pass 2: write every violating triplet, or only the sampled ones.");
}

#undef PYI_TRIPLET_PROBLEM_ARGS

}  // namespace pyinstance::bindings
