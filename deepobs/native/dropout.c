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

#define LANES 16
#define BLOCK (4 * LANES)
typedef uint32_t words __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef uint64_t wide __attribute__((vector_size(LANES * sizeof(uint64_t))));
typedef float floats __attribute__((vector_size(LANES * sizeof(float))));

/* One block: 4 x LANES words, word-major, for counters first .. first + LANES - 1. */
static inline void philox_block(uint64_t first, uint64_t key, words out[4]) {
    words c0, c1, c2 = {0}, c3 = {0};
    for (int lane = 0; lane < LANES; lane++) {
        uint64_t counter = first + (uint64_t)lane;
        c0[lane] = (uint32_t)counter;
        c1[lane] = (uint32_t)(counter >> 32);
    }
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        wide p0 = __builtin_convertvector(c0, wide) * 0xD2511F53u;
        wide p1 = __builtin_convertvector(c2, wide) * 0xCD9E8D57u;
        words hi0 = __builtin_convertvector(p0 >> 32, words), lo0 = __builtin_convertvector(p0, words);
        words hi1 = __builtin_convertvector(p1 >> 32, words), lo1 = __builtin_convertvector(p1, words);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* The raw words, element i as above (for tests against TF's Philox). */
void philox_bits(uint32_t *restrict out, int64_t n, uint64_t key) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        words block[4];
        philox_block((uint64_t)b * LANES, key, block);
        int64_t start = b * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        memcpy(out + start, block, (size_t)count * sizeof(uint32_t));
    }
}

/* The mask of block b (64 elements from b * 64), as dropout_mask writes it. */
static inline void mask_block(int64_t b, uint64_t key, float p, float scale, floats kept[4]) {
    uint32_t scale_bits;
    memcpy(&scale_bits, &scale, sizeof scale_bits);
    words block[4];
    philox_block((uint64_t)b * LANES, key, block);
    for (int word = 0; word < 4; word++) {
        floats u = __builtin_convertvector(block[word] >> 8, floats) * 0x1p-24f;
        kept[word] = (floats)((words)(u >= p) & scale_bits);
    }
}

/* mask[i] = scale if u_i >= p else 0. */
void dropout_mask(float *restrict mask, int64_t n, uint64_t key, float p, float scale) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        floats kept[4];
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
        floats kept[4], values[4] = {{0}};
        mask_block(b, key, p, scale, kept);
        int64_t start = b * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        memcpy(values, x + start, (size_t)count * sizeof(float));
        for (int word = 0; word < 4; word++) {
            floats v = values[word], zero = {0};
            floats active = kind == 0 ? pick((words)(v > 0), v, v * slope) : pick((words)(v < 0), zero, v);
            values[word] = active * kept[word];
        }
        memcpy(out + start, values, (size_t)count * sizeof(float));
    }
}

void act_dropout_backward(const float *restrict grad, const float *restrict x, float *restrict grad_in, int64_t n,
                          uint64_t key, float p, float scale, int kind, float slope) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        floats kept[4], grads[4] = {{0}}, inputs[4] = {{0}};
        mask_block(b, key, p, scale, kept);
        int64_t start = b * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        memcpy(grads, grad + start, (size_t)count * sizeof(float));
        memcpy(inputs, x + start, (size_t)count * sizeof(float));
        for (int word = 0; word < 4; word++) {
            floats g = grads[word] * kept[word], v = inputs[word], zero = {0};
            grads[word] = kind == 0 ? pick((words)(v >= 0), g, g * slope) : pick((words)(v <= 0), zero, g);
        }
        memcpy(grad_in + start, grads, (size_t)count * sizeof(float));
    }
}
