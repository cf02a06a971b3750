/* cpu.c - run-time CPU feature detection for libquant's SIMD kernels.
 * The library is compiled for baseline x86-64; AVX2 kernels carry
 * __attribute__((target)) and run only when this says the CPU (and the OS,
 * for the YMM state) supports them. APR_NO_SIMD=1 in the environment forces
 * the scalar kernels (used by tests and the bench to compare the two). */
#include "quant_internal.h"

#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static int g_avx2 = -1, g_avx512 = -1, g_vnni = -1;

static bool detect_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    const char *e = getenv("APR_NO_SIMD");
    if (e && *e && *e != '0')
        return false;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return false; /* the float kernels' steps are FMAs (dot.c's fmaf) */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    return (c & (1u << 29)) != 0; /* F16C, used by the f16 kernels */
#else
    return false;
#endif
}

/* AVX-512 F/DQ/BW/VL (libgcc's check includes the OS's ZMM state);
 * APR_NO_AVX512=1 keeps the AVX2 kernels. */
static bool detect_avx512(void)
{
#if defined(__x86_64__)
    const char *e = getenv("APR_NO_AVX512");
    if (!detect_avx2() || (e && *e && *e != '0'))
        return false;
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    return false;
#endif
}

bool aprq_cpu_avx512(void)
{
    if (!aprq_cpu_avx2())
        return false;
    int v = __atomic_load_n(&g_avx512, __ATOMIC_RELAXED);
    if (v < 0) {
        v = detect_avx512() ? 1 : 0;
        __atomic_store_n(&g_avx512, v, __ATOMIC_RELAXED);
    }
    return v == 1;
}

void apr_quant_force_no_avx512(bool on)
{
    __atomic_store_n(&g_avx512, on ? 0 : (detect_avx512() ? 1 : 0), __ATOMIC_RELAXED);
    __atomic_store_n(&g_vnni, -1, __ATOMIC_RELAXED); /* its choice depends on AVX-512 */
}

bool aprq_cpu_avx2(void)
{
    int v = __atomic_load_n(&g_avx2, __ATOMIC_RELAXED);
    if (v < 0) {
        v = detect_avx2() ? 1 : 0;
        __atomic_store_n(&g_avx2, v, __ATOMIC_RELAXED);
    }
    return v == 1;
}

void apr_quant_force_scalar(bool on)
{
    __atomic_store_n(&g_avx2, on ? 0 : (detect_avx2() ? 1 : 0), __ATOMIC_RELAXED);
    __atomic_store_n(&g_vnni, -1, __ATOMIC_RELAXED);
}

/* The integer dot instruction of the packed block kernels: AVX512-VNNI
 * (with AVX-512 on), else AVX-VNNI, else none (AVX2 maddubs/madd).
 * APR_NO_VNNI=1 keeps maddubs; APR_NO_AVX512=1 leaves AVX-VNNI. */
static int detect_vnni(void)
{
#if defined(__x86_64__)
    const char *e = getenv("APR_NO_VNNI");
    if (!aprq_cpu_avx2() || (e && *e && *e != '0'))
        return APRQ_VNNI_NONE;
    if (aprq_cpu_avx512() && __builtin_cpu_supports("avx512vnni"))
        return APRQ_VNNI_512;
    /* AVX-VNNI is CPUID.(EAX=7,ECX=1):EAX bit 4, read directly: clang < 15
     * has no "avxvnni" for __builtin_cpu_supports (the clang fuzz build
     * failed on it); the YMM state is already checked by aprq_cpu_avx2. */
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d))
        return APRQ_VNNI_NONE;
    return (a >> 4) & 1 ? APRQ_VNNI_AVX : APRQ_VNNI_NONE;
#else
    return APRQ_VNNI_NONE;
#endif
}

int aprq_cpu_vnni(void)
{
    int v = __atomic_load_n(&g_vnni, __ATOMIC_RELAXED);
    if (v < 0) {
        v = detect_vnni();
        __atomic_store_n(&g_vnni, v, __ATOMIC_RELAXED);
    }
    return v;
}

void apr_quant_force_no_vnni(bool on)
{
    __atomic_store_n(&g_vnni, on ? APRQ_VNNI_NONE : detect_vnni(), __ATOMIC_RELAXED);
}

const char *apr_quant_simd_name(void)
{
    return aprq_cpu_avx2() ? "avx2" : "scalar";
}
