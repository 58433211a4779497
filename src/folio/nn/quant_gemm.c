/* Folio's quantized matrix products for the CPU: y = x Wᵀ with x float32 (M, K) and W stored in blocks of 32
 * weights along K, as GGUF stores them, dequantized in registers (never in memory) and multiplied in float32.
 *
 *   q4: codes (N, K/2) bytes: block b of row n is bytes [b·16, b·16 + 16) of the row; byte j holds weight j in its
 *       low nibble and weight j + 16 in its high one (GGUF's Q4_0/Q4_1 order). w = d·q + m, q in 0..15, with
 *       d and m (N, K/32) half floats: Q4_1 as stored; Q4_0 (w = d·(q - 8)) is m = -8·d.
 *   q8: codes (N, K) int8, d (N, K/32) half floats: w = d·q (GGUF's Q8_0).
 *
 * A block's weights are dequantized into registers once for up to eight rows of x (batched decoding, short
 * prompts), and each row's sums are one fused multiply-add per eight weights; tiles of x and chunks of W are
 * sized for the caches (see MATMUL_SHARE). Output rows are shared among `threads` OpenMP threads (torch's own
 * runtime: the same libgomp.so.1), or among the threads of a caller's parallel region (`folio_q4_share`).
 *
 * Built at first use by folio.nn.kernels with the machine's C compiler (-O3 -march=native); needs AVX2, FMA
 * and F16C, which folio.nn.kernels checks before loading it. */

#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"

#define BLOCK 32
#define TILE 8

/* OpenMP's runtime (libgomp, linked with -fopenmp), declared here rather than through omp.h, which not every
 * compiler install ships */
int omp_get_thread_num(void);
int omp_get_num_threads(void);

static inline float half(uint16_t h) { return _cvtsh_ss(h); }

/* y[r·ldy] = the sum of row r's accumulators: the first pass over K (b0 = 0) writes y, the others add to it */
static inline __attribute__((always_inline)) void store_sums(__m256 acc[][4], int rows, int64_t ldy, int64_t b0,
                                                             float *y) {
    for (int r = 0; r < rows; r++) {
        float sum = hsum(_mm256_add_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_add_ps(acc[r][2], acc[r][3])));
        y[r * ldy] = b0 ? y[r * ldy] + sum : sum;
    }
}

/* acc[r][·] += x·w over a block (p: the row's 32 inputs). A fused multiply-add waits ~5 cycles for its sum: one
 * or two rows split their sums four ways, three or four rows two ways, so that the adds do not wait on each
 * other; more rows (a constant after inlining) interleave on their own */
#define ACCUMULATE(r, p, w0, w1, w2, w3)                                                    \
    do {                                                                                    \
        int split = rows <= 2 ? 4 : rows <= 4 ? 2 : 1;                                      \
        acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(p), w0, acc[r][0]);                     \
        acc[r][1 % split] = _mm256_fmadd_ps(_mm256_loadu_ps((p) + 8), w1, acc[r][1 % split]); \
        acc[r][2 % split] = _mm256_fmadd_ps(_mm256_loadu_ps((p) + 16), w2, acc[r][2 % split]); \
        acc[r][3 % split] = _mm256_fmadd_ps(_mm256_loadu_ps((p) + 24), w3, acc[r][3 % split]); \
    } while (0)

/* y[m, n] for the rows m0 .. m0 + rows (rows ≤ TILE) of x and one output row n of a q4 matrix: each block's 32
 * weights are dequantized once into registers (w = d·q + m), then each row adds x·w to its own sums */
static inline __attribute__((always_inline)) void q4_row(const float *x, int64_t K, int64_t ldy, int64_t m0,
                                                         int rows, const uint8_t *codes, const uint16_t *d,
                                                         const uint16_t *mins, float *y, int64_t b0, int64_t b1) {
    __m256 acc[TILE][4];
    for (int r = 0; r < TILE; r++) for (int i = 0; i < 4; i++) acc[r][i] = _mm256_setzero_ps();
    const __m256i low = _mm256_set1_epi32(0x0F);
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *c = codes + b * 16;
        __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c));        /* bytes 0..7 */
        __m256i c1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(c + 8)));  /* bytes 8..15 */
        __m256 scale = _mm256_set1_ps(half(d[b])), minimum = _mm256_set1_ps(half(mins[b]));
        __m256 w0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(c0, low)), scale, minimum);  /* 0..7 */
        __m256 w1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(c1, low)), scale, minimum);  /* 8..15 */
        __m256 w2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(c0, 4)), scale, minimum);   /* 16..23 */
        __m256 w3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(c1, 4)), scale, minimum);   /* 24..31 */
        for (int r = 0; r < rows; r++) {
            const float *p = x + (m0 + r) * K + b * BLOCK;
            ACCUMULATE(r, p, w0, w1, w2, w3);
        }
    }
    store_sums(acc, rows, ldy, b0, y);
}

static inline __attribute__((always_inline)) void q8_row(const float *x, int64_t K, int64_t ldy, int64_t m0,
                                                         int rows, const int8_t *codes, const uint16_t *d,
                                                         const uint16_t *unused, float *y, int64_t b0, int64_t b1) {
    (void)unused;
    __m256 acc[TILE][4];
    for (int r = 0; r < TILE; r++) for (int i = 0; i < 4; i++) acc[r][i] = _mm256_setzero_ps();
    for (int64_t b = b0; b < b1; b++) {
        const int8_t *c = codes + b * BLOCK;
        __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)c)));
        __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(c + 8))));
        __m256 w2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(c + 16))));
        __m256 w3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(c + 24))));
        __m256 scale = _mm256_set1_ps(half(d[b]));
        w0 = _mm256_mul_ps(w0, scale), w1 = _mm256_mul_ps(w1, scale);
        w2 = _mm256_mul_ps(w2, scale), w3 = _mm256_mul_ps(w3, scale);
        for (int r = 0; r < rows; r++) {
            const float *p = x + (m0 + r) * K + b * BLOCK;
            ACCUMULATE(r, p, w0, w1, w2, w3);
        }
    }
    store_sums(acc, rows, ldy, b0, y);
}

/* Cache blocking. A tile of x (up to TILE rows) is multiplied by a chunk of W's rows at a time: the tile's part
 * of x stays in the 32 KB L1 cache across the chunk, and the chunk (N_CHUNK_BYTES of codes and scales) in the
 * L2 cache across the tiles. Where a tile's rows are wider than PASS_BYTES (eight rows of SmolLM2's 1536-wide
 * feed-forward output are 48 KB), K is summed in passes: read from L2 for each output row, those products took
 * 40 % longer a block */
#define PASS_BYTES (24 * 1024)
#define N_CHUNK_BYTES (192 * 1024)

static inline int64_t pass_blocks(int64_t rows, int64_t K) {
    int64_t blocks = K / BLOCK, passes = (rows * K * (int64_t)sizeof(float) + PASS_BYTES - 1) / PASS_BYTES;
    passes = passes < 1 ? 1 : passes > blocks ? blocks : passes;
    return (blocks + passes - 1) / passes;
}

/* Thread t of T's share of y (M, N) = x (M, K) · Wᵀ for `row` (q4_row or q8_row; `row_bytes`: a row of W's codes
 * and scales): a contiguous share of the output rows, the same in every pass over K, so that only it adds to
 * them; the share of an output row does not change its sums (any T gives the same numbers) */
#define MATMUL_SHARE(row, x, M, K, codes, codes_per_row, d, mins, N, y, t, T, row_bytes)                         \
    do {                                                                                                        \
        int64_t blocks = (K) / BLOCK, step = pass_blocks((M) < TILE ? (M) : TILE, K);                          \
        int64_t chunk = N_CHUNK_BYTES / (row_bytes) > 8 ? N_CHUNK_BYTES / (row_bytes) : 8;                      \
        int64_t first = (N) * (t) / (T), last = (N) * ((t) + 1) / (T);                                          \
        for (int64_t b0 = 0; b0 < blocks; b0 += step) {                                                         \
            int64_t b1 = b0 + step < blocks ? b0 + step : blocks;                                               \
            for (int64_t n0 = first; n0 < last; n0 += chunk)                                                    \
                for (int64_t m0 = 0; m0 < (M); m0 += TILE)                                                      \
                    for (int64_t n = n0; n < n0 + chunk && n < last; n++) {                                     \
                        const uint16_t *dn = (d) + n * blocks, *mn = (mins) ? (mins) + n * blocks : 0;          \
                        float *out = (y) + m0 * (N) + n;                                                        \
                        const __typeof__(*(codes)) *c = (codes) + n * (codes_per_row);                          \
                        switch ((M) - m0 < TILE ? (M) - m0 : TILE) { /* constant row counts: registers */       \
                        case 1: row(x, K, N, m0, 1, c, dn, mn, out, b0, b1); break;                             \
                        case 2: row(x, K, N, m0, 2, c, dn, mn, out, b0, b1); break;                             \
                        case 3: row(x, K, N, m0, 3, c, dn, mn, out, b0, b1); break;                             \
                        case 4: row(x, K, N, m0, 4, c, dn, mn, out, b0, b1); break;                             \
                        case 5: row(x, K, N, m0, 5, c, dn, mn, out, b0, b1); break;                             \
                        case 6: row(x, K, N, m0, 6, c, dn, mn, out, b0, b1); break;                             \
                        case 7: row(x, K, N, m0, 7, c, dn, mn, out, b0, b1); break;                             \
                        default: row(x, K, N, m0, 8, c, dn, mn, out, b0, b1);                                   \
                        }                                                                                       \
                    }                                                                                           \
        }                                                                                                       \
    } while (0)

void folio_q4_share(const float *x, int64_t M, int64_t K, const uint8_t *codes, const uint16_t *d,
                    const uint16_t *mins, int64_t N, float *y, int t, int T) {
    MATMUL_SHARE(q4_row, x, M, K, codes, K / 2, d, mins, N, y, t, T, K / 2 + K / 8);
}

void folio_q8_share(const float *x, int64_t M, int64_t K, const int8_t *codes, const uint16_t *d,
                    const uint16_t *unused, int64_t N, float *y, int t, int T) {
    MATMUL_SHARE(q8_row, x, M, K, codes, K, d, unused, N, y, t, T, K + K / 16);
}

/* y (M, N) = x (M, K) · Wᵀ, W q4 (see above); K a multiple of 32; the output rows shared among `threads` */
void folio_q4_matmul(const float *x, int64_t M, int64_t K, const uint8_t *codes, const uint16_t *d,
                     const uint16_t *mins, int64_t N, float *y, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    folio_q4_share(x, M, K, codes, d, mins, N, y, omp_get_thread_num(), omp_get_num_threads());
}

/* y (M, N) = x (M, K) · Wᵀ, W q8 (see above); `unused`: q4's minimums (the two functions take the same arguments) */
void folio_q8_matmul(const float *x, int64_t M, int64_t K, const int8_t *codes, const uint16_t *d,
                     const uint16_t *unused, int64_t N, float *y, int threads) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    folio_q8_share(x, M, K, codes, d, unused, N, y, omp_get_thread_num(), omp_get_num_threads());
}

/* The weights of rows n0 .. n1 in float32: out (n1 - n0, K). For products of many rows (prefill), where a
 * float32 matrix product of the dequantized rows runs at the CPU's full multiply-add rate */
void folio_q4_dequantize(const uint8_t *codes, const uint16_t *d, const uint16_t *mins, int64_t n0, int64_t n1,
                         int64_t K, float *out, int threads) {
    int64_t blocks = K / BLOCK;
    const __m256i low = _mm256_set1_epi32(0x0F);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t n = n0; n < n1; n++)
        for (int64_t b = 0; b < blocks; b++) {
            const uint8_t *c = codes + n * (K / 2) + b * 16;
            float *o = out + (n - n0) * K + b * BLOCK;
            __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c));
            __m256i c1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(c + 8)));
            __m256 scale = _mm256_set1_ps(half(d[n * blocks + b])), minimum = _mm256_set1_ps(half(mins[n * blocks + b]));
            _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(c0, low)), scale, minimum));
            _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(c1, low)), scale, minimum));
            _mm256_storeu_ps(o + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(c0, 4)), scale, minimum));
            _mm256_storeu_ps(o + 24, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(c1, 4)), scale, minimum));
        }
}

void folio_q8_dequantize(const int8_t *codes, const uint16_t *d, const uint16_t *unused, int64_t n0, int64_t n1,
                         int64_t K, float *out, int threads) {
    (void)unused;
    int64_t blocks = K / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t n = n0; n < n1; n++)
        for (int64_t b = 0; b < blocks; b++) {
            const int8_t *c = codes + n * K + b * BLOCK;
            float *o = out + (n - n0) * K + b * BLOCK;
            __m256 scale = _mm256_set1_ps(half(d[n * blocks + b]));
            for (int i = 0; i < BLOCK; i += 8)
                _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                                          _mm_loadl_epi64((const __m128i *)(c + i)))), scale));
        }
}
