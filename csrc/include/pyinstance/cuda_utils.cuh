// Host-side CUDA helpers shared by every CUDA kernel file: error checks, stream-ordered
// device buffers, grid sizing and the device guard that every binding uses (the device and
// stream come from pyinstance/ops/_arrays.py::cuda_launch). Include from .cu files only.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace pyinstance::cuda {

// Throws std::runtime_error("pyinstance (CUDA): <what>: <CUDA's message>") on failure.
inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("pyinstance (CUDA): ") + what + ": " +
                             cudaGetErrorString(status));
}

// Blocks of `threads` covering `items`, capped at `max_blocks` (grid-stride kernels).
inline unsigned int blocks_for(int64_t items, int64_t threads,
                               int64_t max_blocks = int64_t{2147483647}) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned int>(blocks < max_blocks ? (blocks > 0 ? blocks : 1) : max_blocks);
}

// Device memory allocated and freed in stream order (cudaMallocAsync / cudaFreeAsync),
// released on every exit path.
class DeviceBuffer {
 public:
  DeviceBuffer(size_t bytes, cudaStream_t stream) : stream_(stream) {
    check_cuda(cudaMallocAsync(&data_, bytes > 0 ? bytes : 1, stream), "allocating a work buffer");
  }
  ~DeviceBuffer() { cudaFreeAsync(data_, stream_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as(size_t offset_bytes = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(data_) + offset_bytes);
  }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_;
};

// Makes `device` current for the lifetime of the guard and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

inline cudaStream_t as_stream(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

}  // namespace pyinstance::cuda
