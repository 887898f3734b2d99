/* Max pooling of NHWC float32 tensors over TF 'SAME' windows, with an optional ReLU after it, for training.
 *
 * aten's channels_last max pool writes int64 indices, and its backward zero-fills the input gradient and
 * scatters into it: 15.6 ms per cifar10_3c3d step here against 7.1 ms for the reference's oneDNN pooling
 * (docs/benchmarks.md). Here the forward keeps one int32 window offset per output (-1 where the ReLU zeroed
 * it) and the backward gathers: every input gradient is written once, summed over the windows that hold
 * its position in ascending output order, as aten's scatter adds them: bit-identical to max_pool2d + relu.
 *
 * A window's maximum is its first largest element in row-major order, a NaN taking over (aten's rule);
 * positions outside the input (the 'SAME' padding) never win. The caller guarantees c % 16 == 0,
 * c <= MAX_CHANNELS and contiguous NHWC buffers (deepobs/native/__init__.py).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vectors.h"  /* floats per vector: the widest the target has */

#define MAX_CHANNELS 2048
static inline ints load_ints(const int32_t *from) { ints v; memcpy(&v, from, sizeof v); return v; }
static inline floats pick(ints mask, floats yes, floats no) { return (floats)(((ints)yes & mask) | ((ints)no & ~mask)); }

/* The first and last window (output index) along one axis that hold input index `at`. */
static inline int64_t first_window(int64_t at, int64_t before, int kernel, int stride) {
    int64_t reach = at + before - kernel + 1;
    return reach <= 0 ? 0 : (reach + stride - 1) / stride;
}
static inline int64_t last_window(int64_t at, int64_t before, int stride, int64_t windows) {
    int64_t last = (at + before) / stride;
    return last < windows - 1 ? last : windows - 1;
}

void max_pool_forward(const float *restrict x, float *restrict out, int32_t *restrict offsets,
                      int64_t n, int64_t h, int64_t w, int64_t c, int64_t out_h, int64_t out_w,
                      int kernel_h, int kernel_w, int stride_h, int stride_w, int top, int left, int relu) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < n; b++)
        for (int64_t i = 0; i < out_h; i++)
            for (int64_t j = 0; j < out_w; j++)
                for (int64_t k = 0; k < c; k += LANES) {
                    floats best = (floats){} - INFINITY;
                    ints best_offset = (ints){} - 1;
                    for (int p = 0; p < kernel_h; p++) {
                        int64_t y = i * stride_h - top + p;
                        if (y < 0 || y >= h) continue;
                        for (int q = 0; q < kernel_w; q++) {
                            int64_t z = j * stride_w - left + q;
                            if (z < 0 || z >= w) continue;
                            floats v = load(x + ((b * h + y) * w + z) * c + k);
                            ints take = (v > best) | (v != v);
                            best = pick(take, v, best);
                            best_offset = (((ints){} + (p * kernel_w + q)) & take) | (best_offset & ~take);
                        }
                    }
                    if (relu) {
                        ints zeroed = best <= 0.0f;  /* relu's gradient passes where its output is > 0 */
                        best = pick(best < 0.0f, (floats){}, best);
                        best_offset |= zeroed;
                    }
                    int64_t at = ((b * out_h + i) * out_w + j) * c + k;
                    memcpy(out + at, &best, sizeof best);
                    memcpy(offsets + at, &best_offset, sizeof best_offset);
                }
}

void max_pool_backward(const float *restrict grad_out, const int32_t *restrict offsets, float *restrict grad_in,
                       int64_t n, int64_t h, int64_t w, int64_t c, int64_t out_h, int64_t out_w,
                       int kernel_h, int kernel_w, int stride_h, int stride_w, int top, int left) {
    int64_t first_column[w], last_column[w];  /* per input column: integer division once, not per pixel */
    for (int64_t z = 0; z < w; z++) {
        first_column[z] = first_window(z, left, kernel_w, stride_w);
        last_column[z] = last_window(z, left, stride_w, out_w);
    }
    #pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < n; b++)
        for (int64_t y = 0; y < h; y++) {
            int64_t first_row = first_window(y, top, kernel_h, stride_h);
            int64_t last_row = last_window(y, top, stride_h, out_h);
            for (int64_t z = 0; z < w; z++) {
                floats sums[MAX_CHANNELS / LANES];
                for (int64_t v = 0; v < c / LANES; v++) sums[v] = (floats){};
                for (int64_t i = first_row; i <= last_row; i++)
                    for (int64_t j = first_column[z]; j <= last_column[z]; j++) {
                        ints mine = (ints){} + (int32_t)((y - (i * stride_h - top)) * kernel_w + z - (j * stride_w - left));
                        int64_t at = ((b * out_h + i) * out_w + j) * c;
                        for (int64_t v = 0; v < c / LANES; v++)
                            sums[v] = pick(load_ints(offsets + at + v * LANES) == mine,
                                           sums[v] + load(grad_out + at + v * LANES), sums[v]);
                    }
                memcpy(grad_in + ((b * h + y) * w + z) * c, sums, c * sizeof(float));
            }
        }
}
