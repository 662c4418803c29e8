// Portability macros shared by the CPU (g++) and CUDA (nvcc) builds.
#pragma once

#if defined(__CUDACC__)
#define PYI_HD __host__ __device__ __forceinline__
#else
#define PYI_HD inline
#endif
