// CPU dot-product tiles: rows of A against a block of reference rows packed into panels of
// kDotPanel columns (panel-major, k-major inside: packed[(q * D + k) * kDotPanel + c]).
// One variant per ISA level (dot_tile.cpp, dot_tile_avx2.cpp, dot_tile_avx512.cpp); pick it
// with dot_rows_for(active_isa()). Each dot product is accumulated by one thread in a fixed
// order, so results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "pyinstance/cpu_features.h"

namespace pyinstance::cpu {

constexpr int64_t kDotPanel = 16;

// out[r * ldo + c] = <a[r], packed column c> for r < nrows, c < npanels * kDotPanel.
using DotRowsFn = void (*)(const float* a, int64_t lda, int64_t nrows, const float* packed,
                           int64_t npanels, int64_t dim, float* out, int64_t ldo);

void dot_rows_generic(const float* a, int64_t lda, int64_t nrows, const float* packed,
                      int64_t npanels, int64_t dim, float* out, int64_t ldo);
void dot_rows_avx2(const float* a, int64_t lda, int64_t nrows, const float* packed, int64_t npanels,
                   int64_t dim, float* out, int64_t ldo);
void dot_rows_avx512(const float* a, int64_t lda, int64_t nrows, const float* packed,
                     int64_t npanels, int64_t dim, float* out, int64_t ldo);

DotRowsFn dot_rows_for(Isa isa);

// Packs rows [j0, j0 + count) of the row-major matrix r (dim columns) into panels; columns
// past `count` up to the next multiple of kDotPanel are zero.
void pack_dot_panels(const float* r, int64_t j0, int64_t count, int64_t dim, float* packed);

}  // namespace pyinstance::cpu
