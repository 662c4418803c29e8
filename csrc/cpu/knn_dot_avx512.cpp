// knn_dot scan loops for AVX-512 (F/BW/VL/DQ): 16 float lanes, 14 x 32 register tile.
#include "knn_dot_avx512_traits.h"

namespace pyinstance::cpu::knn_detail {

PYI_KNN_ISA_DEFINE(avx512, Avx512)

}  // namespace pyinstance::cpu::knn_detail
