// Each kernel defines its binding next to its code (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu)
// as register_<op>(module); the module files (cpu.cpp, cuda.cpp) call them.
// Bindings take plain pointers, shapes, strides, dtype codes and (CUDA) a stream
// handle: no torch headers, so one build serves every torch version.
#pragma once
#include <pybind11/pybind11.h>

namespace pyinstance::bindings {

// CPU kernels (module _C).
void register_knn_dot(pybind11::module_& m);
void register_topk_region_pool(pybind11::module_& m);
void register_triplet_mine(pybind11::module_& m);

// CUDA kernels (module _C_cuda).
void register_knn_dot_cuda(pybind11::module_& m);
void register_topk_region_pool_cuda(pybind11::module_& m);
void register_triplet_mine_cuda(pybind11::module_& m);

}  // namespace pyinstance::bindings
