/* The transforms of Winograd F(2x2, 3x3) and F(2x2, 4x4) convolutions of NHWC float32 tensors (stride 1, zero
 * padding).
 *
 * An r x r convolution's outputs in 2x2 tiles: each tile is A^T [(G g G^T) (.) (B^T d B)] A, d the tile's n x n
 * input patch (n = r + 1), g the kernel (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
 * 2016). Summed over input channels the elementwise product becomes n^2 matrix products, one per position of the
 * transformed tile: [tiles x C] @ [C x K]. For a tile's 4 outputs they do 16 multiplications where the direct
 * 3x3 convolution does 36 (2.25x fewer), 25 where the 4x4 does 64 (2.56x). B^T and A^T hold small integers,
 * applied in float32; G holds fractions, applied in double precision to the kernels (once a step, or once an
 * evaluation pass) and rounded once. The products run on MKL's sgemm (torch's, passed in by
 * deepobs/native/__init__.py), one thread's block of tiles at a time, between the transforms of that block.
 *
 * The matrices: F(2x2, 3x3) interpolates at 0, 1, -1 and infinity (Lavin and Gray's); F(2x2, 4x4) at 0, 1, -1,
 * 2 and infinity (Toom-Cook, B^T's and G's second rows negated), the points whose products round least of the
 * sets with one more point tried (2, -2, 1/2, -1/2: 1.65e-6 to 2.0e-6 of the largest output of a 64-channel
 * layer against float64; docs/benchmarks.md).
 *
 * Layouts: the input x is N x H x W x C, the output N x Ho x Wo x K. A block's transformed tiles are n^2 slabs
 * of block x C, its products n^2 slabs of block x K, each slab SLAB_PAD floats past the one before. Tile t is
 * image t / (th tw), tile row (t / tw) % th, tile column t % tw; its patch starts at row 2 i - top, column
 * 2 j - left, zeros outside the input. The caller guarantees C % 16 == 0, K % 16 == 0 and r in {3, 4}; every
 * exported function takes r first.
 */
#pragma GCC optimize("fp-contract=off")  /* the kernels' transform: the same bits with and without FMA */
#include <omp.h>
#include "vectors.h"  /* floats per vector: the widest the target has */

#define MAX_TILE 5
#define INLINE static inline __attribute__((always_inline))

static const double G3[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double G4[5][4] = {{0.5, 0, 0, 0}, {0.5, 0.5, 0.5, 0.5}, {-1.0 / 6, 1.0 / 6, -1.0 / 6, 1.0 / 6},
                                {1.0 / 6, 1.0 / 3, 2.0 / 3, 4.0 / 3}, {0, 0, 0, 1}};

/* B^T's rows applied to n values. */
INLINE void input_step3(const floats *d, floats *out) {
    out[0] = d[0] - d[2]; out[1] = d[1] + d[2]; out[2] = d[2] - d[1]; out[3] = d[1] - d[3];
}
INLINE void input_step4(const floats *d, floats *out) {  /* B^T = [[2,-1,-2,1,0],[0,2,1,-1,0],[0,2,-3,1,0],
                                                            [0,-1,0,1,0],[0,2,-1,-2,1]] */
    floats outer = d[0] - d[2], inner = d[1] - d[2], ends = d[1] - d[3];
    out[0] = (outer + outer) + (d[3] - d[1]); out[1] = (d[1] + d[1]) + (d[2] - d[3]);
    out[2] = (inner + inner) + (d[3] - d[2]); out[3] = d[3] - d[1]; out[4] = (ends + ends) + (d[4] - d[2]);
}
/* A^T's rows applied to n values: two outputs. */
INLINE void output_step3(const floats *m, floats *out) { out[0] = m[0] + m[1] + m[2]; out[1] = m[1] - m[2] - m[3]; }
INLINE void output_step4(const floats *m, floats *out) {  /* A^T = [[1,1,1,1,0],[0,1,-1,2,1]] */
    out[0] = (m[0] + m[1]) + (m[2] + m[3]); out[1] = (m[1] - m[2]) + ((m[3] + m[3]) + m[4]);
}
/* A's rows applied to two values: n of them. */
INLINE void spread_step3(const floats *g, floats *out) {
    out[0] = g[0]; out[1] = g[0] + g[1]; out[2] = g[0] - g[1]; out[3] = -g[1];
}
INLINE void spread_step4(const floats *g, floats *out) {
    out[0] = g[0]; out[1] = g[0] + g[1]; out[2] = g[0] - g[1]; out[3] = g[0] + (g[1] + g[1]); out[4] = g[1];
}
/* Which of the three steps, for F(2x2, (n - 1)x(n - 1)): a constant wherever it is called, so it folds away (a
 * function pointer was not inlined, and the transforms ran 1.5-2x slower). */
enum step { INPUT, OUTPUT, SPREAD };
INLINE void apply_step(enum step along, int n, const floats *in, floats *out) {
    if (along == INPUT) { if (n == 4) input_step3(in, out); else input_step4(in, out); }
    else if (along == OUTPUT) { if (n == 4) output_step3(in, out); else output_step4(in, out); }
    else { if (n == 4) spread_step3(in, out); else spread_step4(in, out); }
}

static inline floats relu(floats v) { floats zero = {0}; return (floats)((ints)v & ~(v <= zero)); }  /* NaN stays */

/* The address of pixel (row, column) of an image in an N x h x w x c tensor; NULL outside the image. */
static inline const float *pixel(const float *base, int64_t image, int64_t row, int64_t column, int64_t h,
                                 int64_t w, int64_t c) {
    return row >= 0 && row < h && column >= 0 && column < w ? base + ((image * h + row) * w + column) * c : NULL;
}

/* Where tile t is: its image and its top-left output (row, column). Tiles run image by image, row by row. */
typedef struct { int64_t image, row, column; } tile_place;
static inline tile_place place_of(int64_t t, int64_t th, int64_t tw) {
    return (tile_place){t / (th * tw), 2 * ((t / tw) % th), 2 * (t % tw)};
}

/* `call` with N the literal tile size n (4 or 5). OpenMP outlines a parallel loop's body into a function of its
 * own before inlining, where a tile size passed in is no longer a constant and the transforms would not fold
 * (they ran 1.5-2x slower so). */
#define TILE_SIZE(n, call) do { if ((n) == 4) { enum { N = 4 }; call; } else { enum { N = 5 }; call; } } while (0)

/* A separable transform of a rows x columns block of vectors: `along` on each column, then on each row of that;
 * out[i][j] for i, j < size. */
INLINE void transform2d(enum step along, int n, int rows, int columns, int size, floats in[MAX_TILE][MAX_TILE],
                        floats out[MAX_TILE][MAX_TILE]) {
    floats half[MAX_TILE][MAX_TILE];
    for (int q = 0; q < columns; q++) {
        floats column[MAX_TILE], stepped[MAX_TILE];
        for (int r = 0; r < rows; r++) column[r] = in[r][q];
        apply_step(along, n, column, stepped);
        for (int r = 0; r < size; r++) half[r][q] = stepped[r];
    }
    for (int r = 0; r < size; r++) apply_step(along, n, half[r], out[r]);
}

/* u[n^2][m] = G g G^T for each of the m = C x K kernels g[r][r][m] (G is n x r). In blocks of kernels, the
 * innermost loops over a block so they run as vectors. In double: each u is G g G^T rounded once (F(2x2, 3x3)'s
 * products by G are exact; F(2x2, 4x4)'s thirds and sixths are within double's rounding). */
#define KERNEL_BLOCK 64
INLINE void weight_transform(int r, const double *G, const float *g, float *u, int64_t m) {
    int n = r + 1;
    #pragma omp parallel for schedule(static)
    for (int64_t first = 0; first < m; first += KERNEL_BLOCK) {
        int64_t count = m - first < KERNEL_BLOCK ? m - first : KERNEL_BLOCK;
        double half[MAX_TILE][MAX_TILE - 1][KERNEL_BLOCK];
        for (int a = 0; a < n; a++)
            for (int j = 0; j < r; j++)
                for (int64_t e = 0; e < count; e++) {
                    double sum = G[a * r] * g[j * m + first + e];
                    for (int i = 1; i < r; i++) sum += G[a * r + i] * g[(i * r + j) * m + first + e];
                    half[a][j][e] = sum;
                }
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                for (int64_t e = 0; e < count; e++) {
                    double sum = half[a][0][e] * G[b * r];
                    for (int j = 1; j < r; j++) sum += half[a][j][e] * G[b * r + j];
                    u[(n * a + b) * m + first + e] = (float)sum;
                }
    }
}

void winograd_weight(int64_t r, const float *g, float *u, int64_t m) {
    if (r == 3) weight_transform(3, &G3[0][0], g, u, m);
    else weight_transform(4, &G4[0][0], g, u, m);
}

/* Tile t's transformed input patch, written at out + (n r + q) slab for its n^2 positions. */
INLINE void input_tile(int n, const float *x, float *out, int64_t slab, int64_t h, int64_t w, int64_t c,
                       int64_t top, int64_t left, tile_place place) {
    const float *patch[MAX_TILE][MAX_TILE];
    for (int r = 0; r < n; r++)
        for (int q = 0; q < n; q++)
            patch[r][q] = pixel(x, place.image, place.row - top + r, place.column - left + q, h, w, c);
    for (int64_t ch = 0; ch < c; ch += LANES) {
        floats d[MAX_TILE][MAX_TILE], tile[MAX_TILE][MAX_TILE];
        for (int r = 0; r < n; r++)
            for (int q = 0; q < n; q++) d[r][q] = patch[r][q] ? load(patch[r][q] + ch) : (floats){0};
        transform2d(INPUT, n, n, n, n, d, tile);
        for (int r = 0; r < n; r++)
            for (int q = 0; q < n; q++) store(out + (n * r + q) * slab + ch, tile[r][q]);
    }
}

/* Tile t's outputs y = A^T m A (+ bias, then ReLU where asked) from its products at in + (n r + q) slab. */
INLINE void output_tile(int n, const float *in, int64_t slab, const float *bias, float *y, int64_t ho,
                        int64_t wo, int64_t k, int with_relu, tile_place place) {
    for (int64_t ch = 0; ch < k; ch += LANES) {
        floats s[MAX_TILE][MAX_TILE], out[MAX_TILE][MAX_TILE];
        for (int a = 0; a < n * n; a++) s[a / n][a % n] = load(in + a * slab + ch);
        transform2d(OUTPUT, n, n, n, 2, s, out);
        floats shift = bias ? load(bias + ch) : (floats){0};
        for (int r = 0; r < 2; r++)
            for (int q = 0; q < 2; q++) {
                int64_t row = place.row + r, column = place.column + q;
                if (row >= ho || column >= wo) continue;
                floats value = bias ? out[r][q] + shift : out[r][q];
                store(y + ((place.image * ho + row) * wo + column) * k + ch, with_relu ? relu(value) : value);
            }
    }
}

/* The weight gradient, by the same transforms: with M = sum over input channels of U (.) V and Y = A^T M A,
 * dM = A dY A^T per tile, dU = sum over tiles of V (.) dM (n^2 products [C x tiles] @ [tiles x K]), and
 * dg = G^T dU G. Here tile t's dM, written at out + (n a + b) slab (outputs past the edge are 0). */
INLINE void output_gradient_tile(int n, const float *dy, float *out, int64_t slab, int64_t ho, int64_t wo, int64_t k,
                                 tile_place place) {
    const float *given[2][2];
    for (int r = 0; r < 2; r++)
        for (int q = 0; q < 2; q++) given[r][q] = pixel(dy, place.image, place.row + r, place.column + q, ho, wo, k);
    for (int64_t ch = 0; ch < k; ch += LANES) {
        floats g[MAX_TILE][MAX_TILE], spread[MAX_TILE][MAX_TILE];
        for (int r = 0; r < 2; r++)
            for (int q = 0; q < 2; q++) g[r][q] = given[r][q] ? load(given[r][q] + ch) : (floats){0};
        transform2d(SPREAD, n, 2, 2, n, g, spread);
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++) store(out + (n * a + b) * slab + ch, spread[a][b]);
    }
}

/* dg = G^T dU G for each of the C x K kernels; du is n^2 slabs of C x K, dg is written K x r x r x C (the
 * kernels' channels_last layout). */
INLINE void weight_gradient_transform(int r, const double *G, const float *du, float *dg, int64_t c, int64_t k) {
    int n = r + 1;
    int64_t m = c * k;
    #pragma omp parallel for schedule(static)
    for (int64_t at = 0; at < m; at++) {
        int64_t in = at / k, out = at % k;
        double d[MAX_TILE][MAX_TILE], half[MAX_TILE - 1][MAX_TILE];
        for (int a = 0; a < n * n; a++) d[a / n][a % n] = du[a * m + at];
        for (int i = 0; i < r; i++)
            for (int b = 0; b < n; b++) {
                double sum = G[i] * d[0][b];
                for (int a = 1; a < n; a++) sum += G[a * r + i] * d[a][b];
                half[i][b] = sum;
            }
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) {
                double sum = half[i][0] * G[j];
                for (int b = 1; b < n; b++) sum += half[i][b] * G[b * r + j];
                dg[((out * r + i) * r + j) * c + in] = (float)sum;
            }
    }
}

void winograd_weight_gradient(int64_t r, const float *du, float *dg, int64_t c, int64_t k) {
    if (r == 3) weight_gradient_transform(3, &G3[0][0], du, dg, c, k);
    else weight_gradient_transform(4, &G4[0][0], du, dg, c, k);
}

#define SLAB_PAD 16  /* floats between positions' slabs: slabs a multiple of 4 KB apart alias in L1 (1.5x slower) */

/* Fortran sgemm (column-major): MKL's, from torch's library, single-threaded inside the parallel region. */
typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *, const float *,
                         const float *, const int *, const float *, const int *, const float *, float *, const int *);

int winograd_threads(void) { return omp_get_max_threads(); }

/* The whole convolution, block by block of tiles: each thread transforms a block's input tiles into its own
 * scratch (n^2 slabs of block x C), multiplies each slab by its position's transformed kernels into its products
 * (n^2 slabs of block x K) and transforms those into y, so that a block's tiles stay in the core's cache (2.2x
 * faster than the three passes over the whole batch at the VAE's 64 channels). u is n^2 slabs of C x K, the
 * transformed kernels. scratch holds winograd_threads() x
 * n^2 x (block x (C + K) + 2 SLAB_PAD) floats. Each block's products are the same whichever thread runs it. */
INLINE void forward_tiles(int n, sgemm_fn gemm, const float *x, const float *u,
                          const float *bias, float *y, float *scratch, int64_t h, int64_t w, int64_t c, int64_t k,
                          int64_t top, int64_t left, int64_t ho, int64_t wo, int64_t th, int64_t tw, int64_t tiles,
                          int64_t block, int with_relu) {
    #pragma omp parallel
    {
        int64_t vslab = block * c + SLAB_PAD, mslab = block * k + SLAB_PAD;
        float *v = scratch + (int64_t)omp_get_thread_num() * n * n * (vslab + mslab), *m = v + n * n * vslab;
        #pragma omp for schedule(static)
        for (int64_t first = 0; first < tiles; first += block) {
            int64_t count = tiles - first < block ? tiles - first : block;
            for (int64_t t = first; t < first + count; t++)
                TILE_SIZE(n, input_tile(N, x, v + (t - first) * c, vslab, h, w, c, top, left, place_of(t, th, tw)));
            const int rows = (int)count, inner = (int)c, cols = (int)k;
            const float one = 1, zero = 0;
            for (int p = 0; p < n * n; p++)  /* column-major: m^T [K x count] = u^T [K x C] @ v^T [C x count] */
                gemm("N", "N", &cols, &rows, &inner, &one, u + p * c * k, &cols, v + p * vslab, &inner, &zero,
                     m + p * mslab, &cols);
            for (int64_t t = first; t < first + count; t++)
                TILE_SIZE(n, output_tile(N, m + (t - first) * k, mslab, bias, y, ho, wo, k, with_relu,
                                         place_of(t, th, tw)));
        }
    }
}

void winograd_forward(int64_t r, void *gemm, const float *x, const float *u,
                      const float *bias, float *y, float *scratch, int64_t h, int64_t w, int64_t c, int64_t k,
                      int64_t top, int64_t left, int64_t ho, int64_t wo, int64_t th, int64_t tw, int64_t tiles,
                      int64_t block, int with_relu) {
    forward_tiles(r + 1, (sgemm_fn)gemm, x, u, bias, y, scratch, h, w, c, k, top, left, ho, wo, th, tw,
                  tiles, block, with_relu);
}

/* The weight gradient's sums dU = sum over tiles of V (.) dM, block by block of tiles as forward_tiles: each
 * thread transforms a block's input tiles (V) and output gradients (dM = A dY A^T) into its scratch and adds
 * the block's n^2 products V^T dM [C x block] @ [block x K] into its own sums, du + thread x n^2 x C x K (zeroed
 * by the caller, who adds the threads' sums in order). scratch as forward_tiles'. */
INLINE void weight_sum_tiles(int n, sgemm_fn gemm, const float *x, const float *dy, float *du, float *scratch,
                             int64_t h, int64_t w, int64_t c, int64_t k, int64_t top, int64_t left, int64_t ho,
                             int64_t wo, int64_t th, int64_t tw, int64_t tiles, int64_t block) {
    #pragma omp parallel
    {
        int64_t vslab = block * c + SLAB_PAD, mslab = block * k + SLAB_PAD, thread = omp_get_thread_num();
        float *v = scratch + thread * n * n * (vslab + mslab), *dm = v + n * n * vslab;
        float *sums = du + thread * n * n * c * k;
        #pragma omp for schedule(static)
        for (int64_t first = 0; first < tiles; first += block) {
            int64_t count = tiles - first < block ? tiles - first : block;
            for (int64_t t = first; t < first + count; t++) {
                tile_place place = place_of(t, th, tw);
                TILE_SIZE(n, input_tile(N, x, v + (t - first) * c, vslab, h, w, c, top, left, place));
                TILE_SIZE(n, output_gradient_tile(N, dy, dm + (t - first) * k, mslab, ho, wo, k, place));
            }
            const int rows = (int)count, inner = (int)c, cols = (int)k;
            const float one = 1;
            for (int p = 0; p < n * n; p++)  /* column-major: sums^T [K x C] += dM^T [K x count] @ V [count x C] */
                gemm("N", "T", &cols, &inner, &rows, &one, dm + p * mslab, &cols, v + p * vslab, &inner, &one,
                     sums + p * c * k, &cols);
        }
    }
}

void winograd_weight_sums(int64_t r, void *gemm, const float *x, const float *dy, float *du, float *scratch,
                          int64_t h, int64_t w, int64_t c, int64_t k, int64_t top, int64_t left, int64_t ho,
                          int64_t wo, int64_t th, int64_t tw, int64_t tiles, int64_t block) {
    weight_sum_tiles(r + 1, (sgemm_fn)gemm, x, dy, du, scratch, h, w, c, k, top, left, ho, wo, th, tw, tiles, block);
}
