/* GCC generic vectors of the widest width the target has, for the kernels in this directory.
 *
 * Wider generic vectors are split by GCC, their compares into scalar ones: 16 lanes built for an AVX2 CPU ran
 * the max pool 9x slower than aten (docs/benchmarks.md). Callers keep their data in multiples of 16 floats,
 * a multiple of every width. Hashed with the sources into the library's cache key (deepobs.cbuild). */
#ifndef DEEPOBS_NATIVE_VECTORS_H
#define DEEPOBS_NATIVE_VECTORS_H
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX2__)
#define LANES 8
#else
#define LANES 4
#endif
typedef float floats __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t ints __attribute__((vector_size(LANES * sizeof(int32_t))));

static inline floats load(const float *from) { floats v; memcpy(&v, from, sizeof v); return v; }
static inline void store(float *to, floats v) { memcpy(to, &v, sizeof v); }

#endif
