/* The transforms of a Winograd F(2x2, 3x3) convolution of NHWC float32 tensors (stride 1, zero padding).
 *
 * A 3x3 convolution's outputs in 2x2 tiles: each tile is A^T [(G g G^T) (.) (B^T d B)] A, d the tile's 4x4
 * input patch, g the 3x3 kernel (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
 * Summed over input channels the elementwise product becomes 16 matrix products, one per position of the
 * 4x4 transformed tile: [tiles x C] @ [C x K]. Those run on MKL (deepobs/native/__init__.py); here are the
 * three transforms around them. The 16 products do 16 multiplications for a tile's 4 outputs, where the
 * direct convolution does 36: 2.25x fewer. B^T and A^T are additions and subtractions only; G holds halves,
 * applied in double precision to the kernel (once a step, or once an evaluation pass).
 *
 * Layouts: the input x is N x H x W x C; the transformed input for the tiles [t0, t1) is 16 slabs of
 * (t1 - t0) x C; the products 16 slabs of (t1 - t0) x K; the output N x Ho x Wo x K. Tile t is image
 * t / (th tw), tile row (t / tw) % th, tile column t % tw; its patch starts at row 2 i - top, column 2 j - left,
 * zeros outside the input. The caller guarantees C % 16 == 0 and K % 16 == 0.
 */
#include "vectors.h"  /* floats per vector: the widest the target has */

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

/* B^T d B's row (or column) step: [d0 - d2, d1 + d2, d2 - d1, d1 - d3]. */
#define INPUT_STEP(d0, d1, d2, d3, out) \
    do { out[0] = d0 - d2; out[1] = d1 + d2; out[2] = d2 - d1; out[3] = d1 - d3; } while (0)

/* u[16][m] = G g G^T for each of the m = C x K kernels g[3][3][m]; G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]].
 * In blocks of kernels, the innermost loops over a block so they run as vectors. Every product by G is exact,
 * and so are a kernel's sums in double unless its values span more than 2^29: each u is G g G^T rounded once. */
#define KERNEL_BLOCK 64
void winograd_weight(const float *g, float *u, int64_t m) {
    static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
    #pragma omp parallel for schedule(static)
    for (int64_t first = 0; first < m; first += KERNEL_BLOCK) {
        int64_t count = m - first < KERNEL_BLOCK ? m - first : KERNEL_BLOCK;
        double half[4][3][KERNEL_BLOCK];
        for (int a = 0; a < 4; a++)
            for (int j = 0; j < 3; j++)
                for (int64_t e = 0; e < count; e++)
                    half[a][j][e] = G[a][0] * g[j * m + first + e] + G[a][1] * g[(3 + j) * m + first + e] +
                                    G[a][2] * g[(6 + j) * m + first + e];
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++)
                for (int64_t e = 0; e < count; e++)
                    u[(4 * a + b) * m + first + e] =
                        (float)(half[a][0][e] * G[b][0] + half[a][1][e] * G[b][1] + half[a][2][e] * G[b][2]);
    }
}

void winograd_input(const float *x, float *v, int64_t h, int64_t w, int64_t c, int64_t top,
                    int64_t left, int64_t th, int64_t tw, int64_t t0, int64_t t1) {
    int64_t slab = (t1 - t0) * c;
    #pragma omp parallel for schedule(static)
    for (int64_t t = t0; t < t1; t++) {
        tile_place place = place_of(t, th, tw);
        const float *patch[4][4];
        for (int r = 0; r < 4; r++)
            for (int q = 0; q < 4; q++)
                patch[r][q] = pixel(x, place.image, place.row - top + r, place.column - left + q, h, w, c);
        float *out = v + (t - t0) * c;
        for (int64_t ch = 0; ch < c; ch += LANES) {
            floats d[4][4], rows[4][4], tile[4];
            for (int r = 0; r < 4; r++)
                for (int q = 0; q < 4; q++) d[r][q] = patch[r][q] ? load(patch[r][q] + ch) : (floats){0};
            for (int q = 0; q < 4; q++) {
                floats column[4];
                INPUT_STEP(d[0][q], d[1][q], d[2][q], d[3][q], column);
                for (int r = 0; r < 4; r++) rows[r][q] = column[r];
            }
            for (int r = 0; r < 4; r++) {
                INPUT_STEP(rows[r][0], rows[r][1], rows[r][2], rows[r][3], tile);
                for (int q = 0; q < 4; q++) store(out + (4 * r + q) * slab + ch, tile[q]);
            }
        }
    }
}

/* y = A^T m A (+ bias, then ReLU where asked) for the tiles [t0, t1); A^T = [[1,1,1,0],[0,1,-1,-1]]. */
void winograd_output(const float *m, const float *bias, float *y, int64_t ho, int64_t wo, int64_t k,
                     int64_t th, int64_t tw, int with_relu, int64_t t0, int64_t t1) {
    int64_t slab = (t1 - t0) * k;
    #pragma omp parallel for schedule(static)
    for (int64_t t = t0; t < t1; t++) {
        tile_place place = place_of(t, th, tw);
        const float *in = m + (t - t0) * k;
        for (int64_t ch = 0; ch < k; ch += LANES) {
            floats s[4][4], top[4], bottom[4];
            for (int a = 0; a < 16; a++) s[a / 4][a % 4] = load(in + a * slab + ch);
            for (int q = 0; q < 4; q++) {
                top[q] = s[0][q] + s[1][q] + s[2][q];
                bottom[q] = s[1][q] - s[2][q] - s[3][q];
            }
            floats out[2][2] = {{top[0] + top[1] + top[2], top[1] - top[2] - top[3]},
                                {bottom[0] + bottom[1] + bottom[2], bottom[1] - bottom[2] - bottom[3]}};
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
}

/* The weight gradient, by the same transforms: with M = sum over input channels of U (.) V and Y = A^T M A,
 * dM = A dY A^T per tile, dU = sum over tiles of V (.) dM (16 products [C x tiles] @ [tiles x K], on MKL), and
 * dg = G^T dU G. Here dM for the tiles [t0, t1) (16 slabs of (t1 - t0) x K; outputs past the edge are 0). */
void winograd_output_gradient(const float *dy, float *dm, int64_t ho, int64_t wo, int64_t k,
                              int64_t th, int64_t tw, int64_t t0, int64_t t1) {
    int64_t slab = (t1 - t0) * k;
    #pragma omp parallel for schedule(static)
    for (int64_t t = t0; t < t1; t++) {
        tile_place place = place_of(t, th, tw);
        const float *given[2][2];
        for (int r = 0; r < 2; r++)
            for (int q = 0; q < 2; q++)
                given[r][q] = pixel(dy, place.image, place.row + r, place.column + q, ho, wo, k);
        float *out = dm + (t - t0) * k;
        for (int64_t ch = 0; ch < k; ch += LANES) {
            floats g[2][2], spread[4][2];
            for (int r = 0; r < 2; r++)
                for (int q = 0; q < 2; q++) g[r][q] = given[r][q] ? load(given[r][q] + ch) : (floats){0};
            for (int q = 0; q < 2; q++) {  /* A = [[1,0],[1,1],[1,-1],[0,-1]] on the rows */
                spread[0][q] = g[0][q]; spread[1][q] = g[0][q] + g[1][q];
                spread[2][q] = g[0][q] - g[1][q]; spread[3][q] = -g[1][q];
            }
            for (int a = 0; a < 4; a++) {  /* and on the columns */
                floats row[4] = {spread[a][0], spread[a][0] + spread[a][1], spread[a][0] - spread[a][1], -spread[a][1]};
                for (int b = 0; b < 4; b++) store(out + (4 * a + b) * slab + ch, row[b]);
            }
        }
    }
}

/* dg = G^T dU G for each of the C x K kernels; du is 16 slabs of C x K, dg is written K x 3 x 3 x C (the
 * kernels' channels_last layout). */
void winograd_weight_gradient(const float *du, float *dg, int64_t c, int64_t k) {
    static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
    int64_t m = c * k;
    #pragma omp parallel for schedule(static)
    for (int64_t at = 0; at < m; at++) {
        int64_t in = at / k, out = at % k;
        double d[4][4], half[3][4];
        for (int a = 0; a < 16; a++) d[a / 4][a % 4] = du[a * m + at];
        for (int i = 0; i < 3; i++)
            for (int b = 0; b < 4; b++) half[i][b] = G[0][i] * d[0][b] + G[1][i] * d[1][b] + G[2][i] * d[2][b] + G[3][i] * d[3][b];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                dg[((out * 3 + i) * 3 + j) * c + in] = (float)(half[i][0] * G[0][j] + half[i][1] * G[1][j] +
                                                               half[i][2] * G[2][j] + half[i][3] * G[3][j]);
    }
}
