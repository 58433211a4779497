/* What Folio's C kernels (quant_gemm.c, decode_step.c) share; built with them by folio.nn.kernels. */

#ifndef FOLIO_KERNELS_H
#define FOLIO_KERNELS_H

#include <immintrin.h>
#include <stdint.h>

/* the sum of a vector's eight lanes */
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Thread t of T's share of y (M, N) = x (M, K) · Wᵀ, W block-quantized (quant_gemm.c): for a caller's own
 * parallel region, each thread a contiguous share of the output rows */
void folio_q4_share(const float *x, int64_t M, int64_t K, const uint8_t *codes, const uint16_t *d,
                    const uint16_t *mins, int64_t N, float *y, int t, int T);
void folio_q8_share(const float *x, int64_t M, int64_t K, const int8_t *codes, const uint16_t *d,
                    const uint16_t *unused, int64_t N, float *y, int t, int T);

/* A quantized linear layer (folio.nn.quant's QuantizedLinear, no bias) as a kernel reads it: kind 4 or 8, W (N, K) */
typedef struct {
    int64_t kind, N, K;
    const void *codes;
    const uint16_t *d, *mins;
} folio_linear;

static inline void linear_share(const folio_linear *w, const float *x, int64_t M, float *y, int t, int T) {
    if (w->kind == 4) folio_q4_share(x, M, w->K, (const uint8_t *)w->codes, w->d, w->mins, w->N, y, t, T);
    else folio_q8_share(x, M, w->K, (const int8_t *)w->codes, w->d, w->mins, w->N, y, t, T);
}

#endif
