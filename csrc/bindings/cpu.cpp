// Module pyinstance._C: the CPU kernels. Each kernel's binding lives beside its kernel
// (csrc/cpu/<op>.cpp defines register_<op>) and is registered here.
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "pyinstance/cpu_features.h"
#include "pyinstance/threads.h"
#include "register.h"

namespace py = pybind11;
using namespace pyinstance::cpu;

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyinstance CPU kernels (C++17, OpenMP, run-time SIMD dispatch)";

  m.def(
      "build_info",
      [] {
        py::dict info;
        info["version"] = PYI_VERSION;
        info["compiler"] = PYI_CXX_COMPILER;
        info["openmp"] = _OPENMP;
        info["isa_compiled"] = compiled_isas();
        info["isa_detected"] = isa_name(detected_isa());
        info["isa_active"] = isa_name(active_isa());
        info["bf16_dot"] = bf16_dot_active();
        info["cpu_features"] = detected_features();
        info["omp_max_threads"] = omp_get_max_threads();
        return info;
      },
      "Compiler, ISA levels (compiled, detected, active), bf16 screening and OpenMP threads.");

  m.attr("MAX_THREADS") = kMaxThreads;

  m.def(
      "active_isa", [] { return std::string(isa_name(active_isa())); },
      "ISA variant the kernels use now (PYINSTANCE_ISA caps it).");

  // Kernels (declared in register.h):
  pyinstance::bindings::register_knn_dot(m);
  pyinstance::bindings::register_topk_region_pool(m);
  pyinstance::bindings::register_triplet_mine(m);
}
