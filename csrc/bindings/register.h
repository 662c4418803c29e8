// Each kernel defines its binding next to its code (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu)
// as register_<op>(module); the module files (cpu.cpp, cuda.cpp) call them.
// Bindings take plain pointers, shapes, strides, dtype codes and (CUDA) a stream handle
// and a device index: no torch headers, so one build serves every torch version.
//
// Namespaces, one scheme for every op:
//   pyinstance::cpu, pyinstance::cuda   typed entry points per backend (pyinstance/<op>.h)
//   pyinstance::bindings                pybind11 registration (named arguments, GIL released)
//   pyinstance::triplet, ::region_pool  per-element rules shared by both backends
//   pyinstance                          shared dtype, checks and top-k helpers
//   pyinstance::cpu::<op>_detail        one op's ISA-specific internals
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
