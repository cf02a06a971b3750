/* cuda_util.h - small helpers shared by the CUDA backend's .cu files
 * (C++ only, not part of the C interface). */
#ifndef APR_CUDA_UTIL_H
#define APR_CUDA_UTIL_H

#include <cuda_runtime.h>

#include <stdint.h>
#include <string.h>

/* Multiplication and subtraction rounded separately (nvcc would otherwise
 * contract d*q - m into one fma and differ from the CPU in the last bit). */
__host__ __device__ static inline float mul_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

__host__ __device__ static inline float sub_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

__host__ __device__ static inline float add_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

__host__ __device__ static inline float bits_to_f32(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

#endif /* APR_CUDA_UTIL_H */
