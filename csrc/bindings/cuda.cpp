// Module pyinstance._C_cuda: the CUDA kernels. libcudart is linked statically, so this
// module imports on machines with no GPU or no CUDA runtime; device_count() is then 0.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "register.h"

namespace py = pybind11;

namespace {

int visible_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return count;
}

std::vector<std::string> split_archs(const std::string& joined) {
  std::vector<std::string> archs;
  size_t start = 0;
  while (start <= joined.size()) {
    size_t end = joined.find(',', start);
    if (end == std::string::npos) end = joined.size();
    if (end > start) archs.push_back(joined.substr(start, end - start));
    start = end + 1;
  }
  return archs;
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "pyinstance CUDA kernels";

  m.def("device_count", &visible_device_count,
        "Number of CUDA devices visible (0 without a driver).");

  m.def(
      "build_info",
      [] {
        py::dict info;
        info["compiler"] = PYI_CUDA_COMPILER;
        info["architectures"] = split_archs(PYI_CUDA_ARCHS);
        info["runtime_version"] = CUDART_VERSION;
        int driver = 0;
        info["driver_version"] = cudaDriverGetVersion(&driver) == cudaSuccess ? driver : 0;
        py::list devices;
        int count = visible_device_count();
        for (int i = 0; i < count; ++i) {
          cudaDeviceProp prop;
          if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
          py::dict device;
          device["index"] = i;
          device["name"] = std::string(prop.name);
          device["capability"] = std::to_string(prop.major) + "." + std::to_string(prop.minor);
          device["memory_bytes"] = prop.totalGlobalMem;
          devices.append(device);
        }
        info["devices"] = devices;
        return info;
      },
      "CUDA compiler, architectures compiled, runtime and visible devices.");

  // Kernels (declared in register.h):
  pyinstance::bindings::register_knn_dot_cuda(m);
  pyinstance::bindings::register_topk_region_pool_cuda(m);
  pyinstance::bindings::register_triplet_mine_cuda(m);
}
