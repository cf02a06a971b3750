/* apr_cuda.h - what tests and benchmarks may ask the CUDA backend directly
 * (the forward pass itself is reached through forward.h / graph.h).
 * Only declared when the backend is compiled in (APR_HAVE_CUDA). */
#ifndef APR_CUDA_H
#define APR_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "formats.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct apr_cuda_info {
    int n_devices;
    char name[256];        /* device 0 */
    int cc_major, cc_minor;
    uint64_t total_bytes;  /* device 0 memory */
    uint64_t free_bytes;
    int n_sms;
} apr_cuda_info;

/* 0 and *info filled when at least one CUDA device is usable; otherwise
 * APR_E_UNSUPPORTED with the reason in err ("no CUDA device: ..."). */
int apr_cuda_probe(apr_cuda_info *info, apr_err *err);

/* Matmul precision of the CUDA backend, read from the environment variable
 * APR_CUDA_MATH when a backend is created: "f32" (default: plain FP32 GEMM,
 * the verification setting), "tf32", "f16" or "bf16" (cuBLAS tensor-core
 * compute with f32 inputs and f32 accumulation; faster, less exact). */
const char *apr_cuda_math_name(void);

/* APR_CUDA_MAX_MB=N (environment, read when a backend is created) caps the
 * device memory one backend may allocate at N MiB: loading a bigger model
 * then fails with the same "CUDA out of memory" error as a full device (and
 * APR_DEV_AUTO falls back to the CPU). For sharing a GPU, and for tests. */

/* Device bytes held by CUDA backends now alive (weights, KV cache, scratch). */
uint64_t apr_cuda_bytes_in_use(void);

#ifdef __cplusplus
}
#endif
#endif /* APR_CUDA_H */
