// vitcuda — VITCUDA_HD, the qualifiers of a small function compiled for host and device: the
// headers the kernels share with the CPU reference (kernels/philox.h, kernels/activation.h)
// define their functions with it. __host__ __device__ __forceinline__ under nvcc and in the
// emulation build (include kernels/common.cuh first there: the toolkit's host_defines.h, which
// it pulls in, gives those keywords their host meaning); a plain inline function for the host
// compiler everywhere else.
#pragma once

#if defined(__CUDACC__) || defined(VITCUDA_EMU)
#define VITCUDA_HD __host__ __device__ __forceinline__
#else
#define VITCUDA_HD inline
#endif
