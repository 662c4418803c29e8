// ISA variants of the streaming class-maximum pass of topk_region_pool (float32 scores).
// Defined in topk_region_pool_avx2.cpp / topk_region_pool_avx512.cpp; call them only when
// pyinstance::cpu::active_isa() allows.
#pragma once
#include <cstdint>

namespace pyinstance::cpu::region_pool_detail {

// acc[j] = max(acc[j], rows[r * row_stride + j]) for r < num_rows, j < n (acc holds the
// running maximum on entry). Returns true when any value read is NaN.
bool class_max_f32_avx2(const float* rows, int64_t num_rows, int64_t row_stride, int64_t n,
                        float* acc);
bool class_max_f32_avx512(const float* rows, int64_t num_rows, int64_t row_stride, int64_t n,
                          float* acc);

}  // namespace pyinstance::cpu::region_pool_detail
