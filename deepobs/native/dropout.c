/* Dropout masks from Philox4x32-10 (Salmon et al., SC'11: the counter-based generator TF's dropout draws
 * from), on every thread at once.
 *
 * torch's CPU uniforms come from one mt19937, one number after another: 9.5 ns each here, 24.7 ms of the
 * VAE's training step against the reference's 12.3 ms (docs/benchmarks.md). A counter-based generator
 * gives element i a number that depends on (key, i) alone, so the draws split across threads and the
 * result does not depend on their count.
 *
 * Element i of a call with key k: block b = i / 64, word w = (i / 16) % 4, lane l = i % 16 takes word w of
 * philox4x32_10(counter = 16 b + l, key = k); the counter's low 32 bits go to word 0, its high 32 bits to
 * word 1. Its uniform is u = (bits >> 8) * 2^-24 in [0, 1), torch's float32 spelling; the mask keeps
 * `scale` where u >= p (tf.nn.dropout's rule), 0 elsewhere.
 */
#include <stdint.h>
#include <string.h>

#define COUNTERS 16  /* a block's counters: part of the stream's definition above, whatever the vector width */
#define BLOCK (4 * COUNTERS)
/* Words per vector: the widest the target has (vectors.h). A block is computed as PIECES vectors per word. */
#include "vectors.h"
#if LANES == 8
#include <immintrin.h>
#endif
#define PIECES (COUNTERS / LANES)
typedef uint32_t words __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef uint64_t wide __attribute__((vector_size(LANES * sizeof(uint64_t))));

/* The high and low words of a * m, lane by lane. On AVX2 with vpmuludq (32 x 32 -> 64 bits) by hand: GCC
 * spells the generic 64-bit product by a constant as shifts and adds there, 6 ms for the VAE's 2.8M mask
 * words instead of ~1. */
static inline void multiply(words a, uint32_t m, words *hi, words *lo) {
#if LANES == 8
    __m256i factor = _mm256_set1_epi32((int)m), as = (__m256i)a;
    __m256i even = _mm256_mul_epu32(as, factor), odd = _mm256_mul_epu32(_mm256_srli_epi64(as, 32), factor);
    *lo = (words)_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    *hi = (words)_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
#else
    wide product = __builtin_convertvector(a, wide) * m;
    *hi = __builtin_convertvector(product >> 32, words), *lo = __builtin_convertvector(product, words);
#endif
}

/* The 4 words of counters first .. first + LANES - 1, out[w] holding word w of each. */
static inline void philox_lanes(uint64_t first, uint64_t key, words out[4]) {
    words c0, c1, c2 = {0}, c3 = {0};
    for (int lane = 0; lane < LANES; lane++) {
        uint64_t counter = first + (uint64_t)lane;
        c0[lane] = (uint32_t)counter;
        c1[lane] = (uint32_t)(counter >> 32);
    }
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        words hi0, lo0, hi1, lo1;
        multiply(c0, 0xD2511F53u, &hi0, &lo0);
        multiply(c2, 0xCD9E8D57u, &hi1, &lo1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* One block: 4 x COUNTERS words, word-major, for counters first .. first + COUNTERS - 1 (vector
 * w * PIECES + piece holds word w of the piece's LANES counters). */
static inline void philox_block(uint64_t first, uint64_t key, words block[4 * PIECES]) {
    for (int piece = 0; piece < PIECES; piece++) {
        words part[4];
        philox_lanes(first + (uint64_t)(piece * LANES), key, part);
        for (int word = 0; word < 4; word++) block[word * PIECES + piece] = part[word];
    }
}

/* The raw words, element i as above (for tests against TF's Philox). */
void philox_bits(uint32_t *restrict out, int64_t n, uint64_t key) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        words block[4 * PIECES];
        philox_block((uint64_t)b * COUNTERS, key, block);
        int64_t start = b * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        memcpy(out + start, block, (size_t)count * sizeof(uint32_t));
    }
}

/* The mask of block b (64 elements from b * 64), as dropout_mask writes it. */
static inline void mask_block(int64_t b, uint64_t key, float p, float scale, floats kept[4 * PIECES]) {
    uint32_t scale_bits;
    memcpy(&scale_bits, &scale, sizeof scale_bits);
    words block[4 * PIECES];
    philox_block((uint64_t)b * COUNTERS, key, block);
    for (int v = 0; v < 4 * PIECES; v++) {
        floats u = __builtin_convertvector(block[v] >> 8, floats) * 0x1p-24f;
        kept[v] = (floats)((words)(u >= p) & scale_bits);
    }
}

/* mask[i] = scale if u_i >= p else 0. */
void dropout_mask(float *restrict mask, int64_t n, uint64_t key, float p, float scale) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        floats kept[4 * PIECES];
        mask_block(b, key, p, scale, kept);
        int64_t start = b * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        memcpy(mask + start, kept, (size_t)count * sizeof(float));
    }
}

static inline floats pick(words mask, floats yes, floats no) {
    return (floats)(((words)yes & mask) | ((words)no & ~mask));
}

/* An activation and the dropout after it, one pass each way, the mask drawn again in the backward instead of
 * kept. kind 0: the VAE's leaky ReLU, forward F.leaky_relu's x > 0 ? x : x * slope, backward TF's Maximum
 * rule x >= 0 ? g : g * slope; kind 1: ReLU, forward torch.relu's x < 0 ? 0 : x (-0.0 and NaN pass), backward
 * threshold_backward's x <= 0 ? 0 : g. The dropout multiplies the activation by the mask (forward) and the
 * gradient by it before the activation's rule (backward), as the layers one after the other do: the same bits. */
void act_dropout_forward(const float *restrict x, float *restrict out, int64_t n, uint64_t key, float p, float scale,
                         int kind, float slope) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        floats kept[4 * PIECES], values[4 * PIECES] = {{0}};
        mask_block(b, key, p, scale, kept);
        int64_t start = b * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        memcpy(values, x + start, (size_t)count * sizeof(float));
        for (int at = 0; at < 4 * PIECES; at++) {
            floats v = values[at], zero = {0};
            floats active = kind == 0 ? pick((words)(v > 0), v, v * slope) : pick((words)(v < 0), zero, v);
            values[at] = active * kept[at];
        }
        memcpy(out + start, values, (size_t)count * sizeof(float));
    }
}

void act_dropout_backward(const float *restrict grad, const float *restrict x, float *restrict grad_in, int64_t n,
                          uint64_t key, float p, float scale, int kind, float slope) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        floats kept[4 * PIECES], grads[4 * PIECES] = {{0}}, inputs[4 * PIECES] = {{0}};
        mask_block(b, key, p, scale, kept);
        int64_t start = b * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        memcpy(grads, grad + start, (size_t)count * sizeof(float));
        memcpy(inputs, x + start, (size_t)count * sizeof(float));
        for (int at = 0; at < 4 * PIECES; at++) {
            floats g = grads[at] * kept[at], v = inputs[at], zero = {0};
            grads[at] = kind == 0 ? pick((words)(v >= 0), g, g * slope) : pick((words)(v <= 0), zero, g);
        }
        memcpy(grad_in + start, grads, (size_t)count * sizeof(float));
    }
}
