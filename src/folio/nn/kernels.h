/* What Folio's C kernels (quant_gemm.c, decode_step.c) share; built with them by folio.nn.kernels. */

#ifndef FOLIO_KERNELS_H
#define FOLIO_KERNELS_H

#include <immintrin.h>

/* the sum of a vector's eight lanes */
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif
