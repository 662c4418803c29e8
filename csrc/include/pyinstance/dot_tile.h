// CPU dot-product tiles: rows of A against a block of reference rows packed into panels of
// kDotPanel columns (panel-major, k-major inside: packed[(q * D + k) * kDotPanel + c]).
// One variant per ISA level (dot_tile.cpp, dot_tile_avx2.cpp, dot_tile_avx512.cpp); pick it
// with dot_rows_for(active_isa()). Each dot product is accumulated by one thread in a fixed
// order, so results do not depend on the thread count.
//
// Screening tiles (AVX512_BF16 only, see bf16_dot_active()): the same layout over bf16
// pairs (one uint32_t holds elements 2k and 2k + 1), twice the multiply-adds per instruction.
// Their values are approximate: bf16_dot_error_bound() bounds the error, and callers
// recompute the few candidates that matter in float32.
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

// Filter for the largest "negative" entries of a tile (row stride ld): entry (r, c) counts
// when c > r + diag (diag <= -nrows: every column) and row_group[r] != col_group[c].
struct TileFilterFns {
  // row_max[r] = the largest counted value of row r, and, when col_max is given, col_max[c]
  // that of column c; -inf where nothing counts. NaN values are skipped.
  void (*max)(const float* tile, int64_t ld, int64_t nrows, int64_t ncols, int64_t diag,
              const int32_t* row_group, const int32_t* col_group, float* row_max, float* col_max);
  // Counted entries whose value v has !(v < row_thr[r]) or, when col_thr is given,
  // !(v < col_thr[c]) (NaN always passes): writes (r << 16) | c in row order to `hits` (room
  // for nrows * ncols; ncols < 65536) and returns their number.
  int64_t (*hits)(const float* tile, int64_t ld, int64_t nrows, int64_t ncols, int64_t diag,
                  const int32_t* row_group, const int32_t* col_group, const float* row_thr,
                  const float* col_thr, uint32_t* hits);
};

TileFilterFns tile_filter_generic();
TileFilterFns tile_filter_avx2();
TileFilterFns tile_filter_avx512();

TileFilterFns tile_filter_for(Isa isa);

// ---- bf16 screening (call only when bf16_dot_active()) ----------------------------------

// Number of bf16 pairs per row of dim values.
inline int64_t bf16_pairs(int64_t dim) { return (dim + 1) / 2; }

// Rows of x (rows x dim float32) rounded to bf16 (nearest even) into rows of
// bf16_pairs(dim) pairs (an odd dim is padded with zero), with each row's Euclidean norm
// (summed in float64: never under- or overflows) and largest absolute value.
void to_bf16_rows_avx512(const float* x, int64_t rows, int64_t dim, uint32_t* out, double* norm,
                         double* maxabs);

// pack_dot_panels for bf16 pair rows: packed[(q * pairs + k) * kDotPanel + c].
void pack_bf16_panels(const uint32_t* r, int64_t j0, int64_t count, int64_t pairs,
                      uint32_t* packed);

// dot_rows over bf16 pair rows (lda in pairs) and bf16 panels; float32 accumulation.
void dot_rows_bf16_avx512(const uint32_t* a, int64_t lda, int64_t nrows, const uint32_t* packed,
                          int64_t npanels, int64_t pairs, float* out, int64_t ldo);

// Bound on |screened - float32| for one dot product of dim terms, from the rows' Euclidean
// norms and largest absolute values: rounding both sides to bf16 (relative 2^-8 each), the
// float32 sums of both computations, and the flushing of bf16 subnormals to zero.
double bf16_dot_error_bound(int64_t dim, double norm_a, double norm_b, double maxabs_a,
                            double maxabs_b);

}  // namespace pyinstance::cpu
