/* The small operations of a decoding step on the CPU, in float32, where PyTorch's general kernels spend more on
 * their set-up than on the arithmetic (a step of a 30-layer model makes ~60 norms and 30 attentions):
 *
 * RMSNorm: y[m] = x[m] / sqrt(mean(x[m]²) + eps) · w.
 *
 * Attention, one query per head over a key/value cache:
 *
 *   out[b, h] = Σ_s softmax_s(scale · q[b, h] · k[b, h / group, s]  (masked keys: -inf)) · v[b, h / group, s]
 *
 * q is (B, H, D) with any strides over its first two dimensions, out contiguous (B, H, D); k and v are
 * (B, KVH, S, D) views with any strides over their first three dimensions (a cache's buffers hold room for later positions) and D contiguous; mask, where given, is (B, S)
 * bytes, 1 where a key may be attended to (the rows of a batch sit at different positions). The H / KVH query
 * heads of a group read their key and value rows together, once from memory.
 *
 * PyTorch's fused CPU kernel is built for many queries: for one it spends ~150 µs on 8 rows, 9 heads and 120
 * keys, this ~60 (reading the cache from memory).
 *
 * Greedy choice: the index of each row's largest logit, as argmax.
 *
 * Built with quant_gemm.c by folio.nn.kernels. */

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define LANES 8

int omp_get_thread_num(void);  /* libgomp's (see quant_gemm.c) */
int omp_get_num_threads(void);

/* y (N) = RMSNorm(x (N)) · w; N a multiple of 8. Sums of squares in float32, as PyTorch's */
static void rms_row(const float *row, int64_t N, const float *w, float eps, float *y) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    int64_t i = 0;
    for (; i + 2 * LANES <= N; i += 2 * LANES) {
        __m256 u = _mm256_loadu_ps(row + i), v = _mm256_loadu_ps(row + i + LANES);
        a0 = _mm256_fmadd_ps(u, u, a0), a1 = _mm256_fmadd_ps(v, v, a1);
    }
    for (; i < N; i += LANES) {
        __m256 u = _mm256_loadu_ps(row + i);
        a0 = _mm256_fmadd_ps(u, u, a0);
    }
    __m256 scale = _mm256_set1_ps(1.0f / sqrtf(hsum(_mm256_add_ps(a0, a1)) / (float)N + eps));
    for (i = 0; i < N; i += LANES)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(row + i), scale), _mm256_loadu_ps(w + i)));
}

/* y (M, N) = RMSNorm(x (M, N)) · w, rows contiguous; N a multiple of 8 */
void folio_rms_norm(const float *x, int64_t M, int64_t N, const float *w, float eps, float *y, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && M >= 64)
    for (int64_t m = 0; m < M; m++) rms_row(x + m * N, N, w, eps, y + m * N);
}

/* e^x for x ≤ 0 in eight lanes, to about one unit in the last place: x = n·ln 2 + r with |r| ≤ ln 2 / 2,
 * e^r by its Taylor series to r⁷ (the first term left out is below 2⁻²⁴ of the sum), then 2^n put into the
 * exponent bits. Below -87 (e^x under float's smallest normal number, and -inf for a masked key) gives 0. */
static inline __m256 exp_nonpositive(__m256 x) {
    const __m256 floor_x = _mm256_set1_ps(-87.0f);
    __m256 keep = _mm256_cmp_ps(x, floor_x, _CMP_GE_OQ);
    x = _mm256_max_ps(x, floor_x);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* ln 2 in two parts, so that n·ln2_high is exact and r keeps its low bits */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i power = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(power)), keep);
}

/* the G queries of one key/value head of one row: scores (G, S) is this task's scratch */
/* o (D) = inverse · Σ_s w[s] v[s], `chunk` (a constant after inlining) columns at a time, their sums in registers:
 * chunk / 8 chains of multiply-adds that do not wait on each other */
static inline __attribute__((always_inline)) void weigh_values(const float *w, const float *v, int64_t S, int64_t D,
                                                               int64_t vs, float inverse, float *o, int chunk) {
    for (int64_t d0 = 0; d0 < D; d0 += chunk) {
        __m256 acc[64 / LANES];
        for (int c = 0; c < chunk / LANES; c++) acc[c] = _mm256_setzero_ps();
        for (int64_t s = 0; s < S; s++) {
            if (w[s] == 0.0f) continue;  /* a masked key */
            __m256 weight = _mm256_set1_ps(w[s]);
            const float *value = v + s * vs + d0;
            for (int c = 0; c < chunk / LANES; c++)
                acc[c] = _mm256_fmadd_ps(weight, _mm256_loadu_ps(value + c * LANES), acc[c]);
        }
        for (int c = 0; c < chunk / LANES; c++)
            _mm256_storeu_ps(o + d0 + c * LANES, _mm256_mul_ps(acc[c], _mm256_set1_ps(inverse)));
    }
}

static inline float dot(const float *a, const float *b, int64_t D) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < D; i += LANES) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    return hsum(acc);
}

static void attend_group(const float *q, int64_t qh, const float *k, const float *v, const uint8_t *mask, int64_t G,
                         int64_t S, int64_t D, int64_t ks, int64_t vs, float scale, float *scores, float *out) {
    /* scores: eight keys at a time, eight chains of multiply-adds that overlap (one chain waits on itself: ~40
     * cycles a 64-wide dot product), their sums reduced together into one vector of eight scores */
    const __m256 scaled = _mm256_set1_ps(scale);
    for (int64_t g = 0; g < G; g++) {
        const float *query = q + g * qh;
        float *row = scores + g * S;
        int64_t s = 0;
        for (; s + LANES <= S; s += LANES) {
            const float *key = k + s * ks;
            __m256 a[LANES];
            for (int j = 0; j < LANES; j++) a[j] = _mm256_setzero_ps();
            for (int64_t i = 0; i < D; i += LANES) {
                __m256 x = _mm256_loadu_ps(query + i);
                for (int j = 0; j < LANES; j++) a[j] = _mm256_fmadd_ps(x, _mm256_loadu_ps(key + j * ks + i), a[j]);
            }
            /* a[j]'s eight lanes summed into lane j: pairwise within 128-bit halves, then the halves added */
            __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
            __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
            __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);  /* keys 0-3 | 0-3, 4-7 | 4-7 */
            __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
            _mm256_storeu_ps(row + s, _mm256_mul_ps(sums, scaled));
        }
        for (; s < S; s++) row[s] = dot(query, k + s * ks, D) * scale;
        if (mask)
            for (s = 0; s < S; s++)
                if (!mask[s]) row[s] = -INFINITY;
    }
    for (int64_t g = 0; g < G; g++) {
        float *w = scores + g * S, top = -INFINITY, total = 0.0f;
        for (int64_t s = 0; s < S; s++)
            top = w[s] > top ? w[s] : top;
        float *o = out + g * D;
        if (top == -INFINITY) {  /* every key masked: nothing to attend to */
            for (int64_t i = 0; i < D; i++) o[i] = 0.0f;
            continue;
        }
        __m256 shift = _mm256_set1_ps(top), sums = _mm256_setzero_ps();
        int64_t s = 0;
        for (; s + LANES <= S; s += LANES) {
            __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(w + s), shift));
            _mm256_storeu_ps(w + s, e);
            sums = _mm256_add_ps(sums, e);
        }
        total = hsum(sums);
        for (; s < S; s++) {  /* the last few keys: the same function, one lane used */
            float e = _mm256_cvtss_f32(exp_nonpositive(_mm256_set1_ps(w[s] - top)));
            w[s] = e;
            total += e;
        }
        const float inverse = 1.0f / total;
        if (D % 64 == 0) weigh_values(w, v, S, D, vs, inverse, o, 64);
        else if (D % 32 == 0) weigh_values(w, v, S, D, vs, inverse, o, 32);
        else weigh_values(w, v, S, D, vs, inverse, o, 8);
    }
}

/* The G query heads of group h of row b (task b·KVH + h), their scores in scratch of their own. Returns 0, or -1
 * where the scratch could not be had */
static int attend_task(const float *q, const float *k, const float *v, const uint8_t *mask, int64_t H, int64_t KVH,
                       int64_t S, int64_t D, int64_t qb, int64_t qh, int64_t kb, int64_t kh, int64_t ks, int64_t vb,
                       int64_t vh, int64_t vs, float scale, float *out, int64_t task) {
    int64_t G = H / KVH, b = task / KVH, h = task % KVH;
    float *scores = malloc(sizeof(float) * G * (S > 0 ? S : 1));
    if (!scores) return -1;
    attend_group(q + b * qb + h * G * qh, qh, k + b * kb + h * kh, v + b * vb + h * vh, mask ? mask + b * S : 0,
                 G, S, D, ks, vs, scale, scores, out + (b * H + h * G) * D);
    free(scores);
    return 0;
}

/* D a multiple of 8; H a multiple of KVH. Returns 0, or -1 where the scratch could not be had */
int folio_attend_one(const float *q, const float *k, const float *v, const uint8_t *mask, int64_t B, int64_t H,
                     int64_t KVH, int64_t S, int64_t D, int64_t qb, int64_t qh, int64_t kb, int64_t kh, int64_t ks, int64_t vb, int64_t vh,
                     int64_t vs, float scale, float *out, int threads) {
    int64_t tasks = B * KVH;
    int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && tasks >= 2 * threads)
    for (int64_t t = 0; t < tasks; t++)
        if (attend_task(q, k, v, mask, H, KVH, S, D, qb, qh, kb, kh, ks, vb, vh, vs, scale, out, t)) failed = 1;
    return failed ? -1 : 0;
}

/* out[m] = the index of the first largest value of row m of x (M, N), rows `ld` apart (a sampler's greedy
 * choice over a vocabulary's logits: PyTorch's argmax reads them one at a time, ~50 µs for 49,152). Returns 0,
 * or -1 where a row holds a NaN (PyTorch's argmax picks the NaN: the caller asks it). */
int folio_argmax_rows(const float *x, int64_t M, int64_t N, int64_t ld, int64_t *out) {
    for (int64_t m = 0; m < M; m++) {
        const float *row = x + m * ld;
        __m256 top[4], nan = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) top[j] = _mm256_set1_ps(-INFINITY);
        int64_t i = 0;
        for (; i + 4 * LANES <= N; i += 4 * LANES)
            for (int j = 0; j < 4; j++) {
                __m256 v = _mm256_loadu_ps(row + i + j * LANES);
                top[j] = _mm256_max_ps(top[j], v);
                nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            }
        float best = -INFINITY;
        for (; i < N; i++) {
            if (row[i] != row[i]) return -1;
            best = row[i] > best ? row[i] : best;
        }
        if (_mm256_movemask_ps(nan)) return -1;
        __m256 t = _mm256_max_ps(_mm256_max_ps(top[0], top[1]), _mm256_max_ps(top[2], top[3]));
        float lanes[LANES];
        _mm256_storeu_ps(lanes, t);
        for (int j = 0; j < LANES; j++) best = lanes[j] > best ? lanes[j] : best;
        const __m256 target = _mm256_set1_ps(best);
        int64_t at = -1;
        for (i = 0; i + LANES <= N && at < 0; i += LANES) {
            int hits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + i), target, _CMP_EQ_OQ));
            if (hits) at = i + __builtin_ctz(hits);
        }
        for (; at < 0 && i < N; i++)
            if (row[i] == best) at = i;
        out[m] = at;
    }
    return 0;
}

/* out (M, F) = silu(gate) · up, where each row of gu (M, 2F) holds the gate then the up projection (a fused
 * product's output; F a multiple of 8): Llama's gated feed-forward between its two products. silu(g) =
 * g / (1 + e^-g), computed as g·s / (1 + t) with t = e^-|g| ≤ 1 (s = 1 for g ≥ 0, else t): no overflow. */
static void swiglu_range(const float *g, const float *u, int64_t j0, int64_t j1, float *o) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (int64_t j = j0; j < j1; j += LANES) {
        __m256 x = _mm256_loadu_ps(g + j);
        __m256 t = exp_nonpositive(_mm256_or_ps(x, sign));  /* e^-|x| */
        __m256 s = _mm256_blendv_ps(one, t, x);            /* x's sign bit set: t */
        __m256 silu = _mm256_div_ps(_mm256_mul_ps(x, s), _mm256_add_ps(one, t));
        _mm256_storeu_ps(o + j, _mm256_mul_ps(silu, _mm256_loadu_ps(u + j)));
    }
}

void folio_swiglu(const float *gu, int64_t M, int64_t F, float *out) {
    for (int64_t m = 0; m < M; m++) swiglu_range(gu + m * 2 * F, gu + m * 2 * F + F, 0, F, out + m * F);
}

/* One head's row rotated: out[i] = x[i]·cos[i] + x[i ± D/2]·sin[i], sin the table's signed row (-sin, sin)
 * (RotaryEmbedding's own arithmetic: two products and a sum); D a multiple of 16 */
static inline void rope_row(const float *row, const float *c, const float *s, int64_t D, float *o) {
    int64_t half = D / 2;
    for (int64_t i = 0; i < half; i += LANES) {
        __m256 low = _mm256_loadu_ps(row + i), high = _mm256_loadu_ps(row + half + i);
        _mm256_storeu_ps(o + i, _mm256_add_ps(_mm256_mul_ps(low, _mm256_loadu_ps(c + i)),
                                              _mm256_mul_ps(high, _mm256_loadu_ps(s + i))));
        _mm256_storeu_ps(o + half + i, _mm256_add_ps(_mm256_mul_ps(high, _mm256_loadu_ps(c + half + i)),
                                                     _mm256_mul_ps(low, _mm256_loadu_ps(s + half + i))));
    }
}

/* Rotary positions: out (B, H, T, D) = x·cos + (-x₂, x₁)·sin (`rope_row`). x is a view with any strides over
 * (B, H, T) and D contiguous (the query and key heads of a fused projection); cos and sin rows are `ct` apart
 * over T and `cb` over B (0: the same positions for every row); D a multiple of 16 */
void folio_rope(const float *x, int64_t B, int64_t H, int64_t T, int64_t D, int64_t xb, int64_t xh, int64_t xt,
                const float *cos, const float *sin, int64_t cb, int64_t ct, float *out) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < T; t++)
                rope_row(x + b * xb + h * xh + t * xt, cos + b * cb + t * ct, sin + b * cb + t * ct, D,
                         out + ((b * H + h) * T + t) * D);
}

/* A decoding step's self-attention after its fused projection: qkv (B, (H + 2 KVH)·D), each row `qkvb` apart,
 * holds the query, key and value heads of one new position. The query and key heads are rotated (cos/sin rows
 * `cb` apart over B), the key and value heads written at position `at` of the cache's buffers k and v (strides
 * over B, heads and positions; D contiguous), and the rotated queries attend over the S = at + 1 positions
 * (`attend_group`, mask (B, S) or none) into out (B, H, D). q: scratch (B, H, D) for the rotated queries. D a
 * multiple of 16; H a multiple of KVH. */
typedef struct {
    const float *qkv;
    int64_t B, H, KVH, D, qkvb;
    const float *cos, *sin;
    int64_t cb;
    float *k, *v;
    int64_t kb, kh, ks, vb, vh, vs, at;
    const uint8_t *mask;
    float scale;
    float *q, *out;
} step_attention;

/* Row b's key/value head h (task b·KVH + h): the query heads of its group rotated into q, its key rotated and
 * its value copied into the cache at `at` */
static void decode_write(const step_attention *a, int64_t task) {
    int64_t H = a->H, KVH = a->KVH, D = a->D, G = H / KVH, b = task / KVH, h = task % KVH;
    const float *row = a->qkv + b * a->qkvb, *c = a->cos + b * a->cb, *s = a->sin + b * a->cb;
    for (int64_t g = h * G; g < (h + 1) * G; g++) rope_row(row + g * D, c, s, D, a->q + (b * H + g) * D);
    rope_row(row + (H + h) * D, c, s, D, a->k + b * a->kb + h * a->kh + a->at * a->ks);
    memcpy(a->v + b * a->vb + h * a->vh + a->at * a->vs, row + (H + KVH + h) * D, sizeof(float) * D);
}

/* One task of it: `decode_write`, then the group's attention. Returns 0, or -1 (`attend_task`'s) */
static int decode_task(const step_attention *a, int64_t task) {
    decode_write(a, task);
    return attend_task(a->q, a->k, a->v, a->mask, a->H, a->KVH, a->at + 1, a->D, a->H * a->D, a->D, a->kb, a->kh,
                       a->ks, a->vb, a->vh, a->vs, a->scale, a->out, task);
}

/* The attention of query head g of row b alone (query b·H + g), once every `decode_write` of the step is done:
 * the numbers of its group's task, in a share that splits a row's few groups among threads. Returns 0, or -1 */
static int attend_query(const step_attention *a, int64_t query) {
    int64_t H = a->H, D = a->D, S = a->at + 1, b = query / H, g = query % H, h = g / (H / a->KVH);
    float *scores = malloc(sizeof(float) * S);
    if (!scores) return -1;
    attend_group(a->q + query * D, D, a->k + b * a->kb + h * a->kh, a->v + b * a->vb + h * a->vh,
                 a->mask ? a->mask + b * S : 0, 1, S, D, a->ks, a->vs, a->scale, scores, a->out + query * D);
    free(scores);
    return 0;
}

/* Tasks [first, last) of thread t of T: a share each where there are at least two per thread, else all on the
 * first thread (a parallel loop's start costs more than a few heads) */
static void task_share(int64_t tasks, int t, int T, int64_t *first, int64_t *last) {
    if (tasks >= 2 * T) *first = tasks * t / T, *last = tasks * (t + 1) / T;
    else *first = 0, *last = t == 0 ? tasks : 0;
}

/* Returns 0, or -1 where a task's scratch could not be had */
int folio_decode_attend(const float *qkv, int64_t B, int64_t H, int64_t KVH, int64_t D, int64_t qkvb,
                        const float *cos, const float *sin, int64_t cb, float *k, float *v, int64_t kb, int64_t kh,
                        int64_t ks, int64_t vb, int64_t vh, int64_t vs, int64_t at, const uint8_t *mask, float scale,
                        float *q, float *out, int threads) {
    step_attention a = {qkv, B, H, KVH, D, qkvb, cos, sin, cb, k, v, kb, kh, ks, vb, vh, vs, at, mask, scale, q, out};
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && B * KVH >= 2 * threads)
    {
        int64_t first, last;
        task_share(B * KVH, omp_get_thread_num(), omp_get_num_threads(), &first, &last);
        for (int64_t task = first; task < last; task++)
            if (decode_task(&a, task)) {
#pragma omp atomic write
                failed = 1;
            }
    }
    return failed ? -1 : 0;
}

/* A Llama block's weights as `folio_decode_blocks` reads them (folio.nn.transformer's TransformerBlock with
 * pre-norm RMSNorm, rotary self-attention with fused q/k/v, SwiGLU with fused gate/up, quantized linear layers
 * and no biases) */
typedef struct {
    folio_linear qkv, o, gate_up, down;
    const float *norm1, *norm2;
    double eps1, eps2, scale;
    int64_t C, H, KVH, D, F;
} folio_block;

/* Thread t of T's part of one block applied to one new position of each row, y (B, C) from x (B, C) (y may be
 * x), inside a parallel region: the operations of PyTorch's path in their order, so the same numbers,
 *
 *   h = norm1(x); qkv = h·Wqkvᵀ; a = attention (`decode_write`: the cache written at `at`; `attend_query`);
 *   y = x + a·Woᵀ;
 *   h = norm2(y); gu = h·Wguᵀ; y = y + (silu(gate)·up)·Wdownᵀ
 *
 * with a barrier between them. A row's norms and sums are its thread's (r ≡ t mod T) */
static void block_part(const folio_block *w, const float *x, float *y, int64_t B, step_attention *s, float *scratch,
                       int t, int T, int *failed) {
    int64_t C = w->C, H = w->H, KVH = w->KVH, D = w->D, F = w->F, QKV = (H + 2 * KVH) * D, first, last;
    float *h = scratch, *qkv = h + B * C, *q = qkv + B * QKV, *att = q + B * H * D, *o = att + B * H * D;
    float *gu = o + B * C, *a = gu + B * 2 * F;
    s->qkv = qkv, s->qkvb = QKV, s->q = q, s->out = att, s->H = H, s->KVH = KVH, s->D = D, s->scale = (float)w->scale;
    for (int64_t r = t; r < B; r += T) rms_row(x + r * C, C, w->norm1, (float)w->eps1, h + r * C);
#pragma omp barrier
    linear_share(&w->qkv, h, B, qkv, t, T);
#pragma omp barrier
    task_share(B * KVH, t, T, &first, &last);
    for (int64_t task = first; task < last; task++) decode_write(s, task);
#pragma omp barrier
    for (int64_t query = B * H * t / T; query < B * H * (t + 1) / T; query++)  /* (one row's 9 heads: 5 and 4) */
        if (attend_query(s, query)) {
#pragma omp atomic write
            *failed = 1;
        }
#pragma omp barrier
    linear_share(&w->o, att, B, o, t, T);
#pragma omp barrier
    for (int64_t r = t; r < B; r += T) {
        for (int64_t j = 0; j < C; j++) y[r * C + j] = x[r * C + j] + o[r * C + j];
        rms_row(y + r * C, C, w->norm2, (float)w->eps2, h + r * C);
    }
#pragma omp barrier
    linear_share(&w->gate_up, h, B, gu, t, T);
#pragma omp barrier
    int64_t j0 = F / LANES * t / T * LANES, j1 = F / LANES * (t + 1) / T * LANES;
    for (int64_t r = 0; r < B; r++) swiglu_range(gu + r * 2 * F, gu + r * 2 * F + F, j0, j1, a + r * F);
#pragma omp barrier
    linear_share(&w->down, a, B, o, t, T);
#pragma omp barrier
    for (int64_t r = t; r < B; r += T)
        for (int64_t j = 0; j < C; j++) y[r * C + j] += o[r * C + j];
}

/* y (B, C) = blocks w[0] .. w[n - 1] applied one after another to one new position of each row of x (B, C), in
 * one parallel region, where a Python step makes some twenty kernel calls a block, each starting the threads
 * anew. Block i's cache: buffers k[i], v[i], the same strides in every block (`folio_decode_attend`'s other
 * arguments, shared by the blocks). scratch: B·(2C + (H + 2 KVH)·D + 2·H·D + 3F) floats of the widest block.
 * Returns 0, or -1 where an attention's scratch could not be had (y is then not the blocks' output) */
int folio_decode_blocks(const folio_block *const *w, int64_t n, const float *x, int64_t B, const float *cos,
                        const float *sin, int64_t cb, float *const *k, float *const *v, int64_t kb, int64_t kh,
                        int64_t ks, int64_t vb, int64_t vh, int64_t vs, int64_t at, const uint8_t *mask,
                        float *scratch, float *y, int threads) {
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        for (int64_t i = 0; i < n; i++) {
            step_attention s = {0, B, 0, 0, 0, 0, cos, sin, cb, k[i], v[i], kb, kh, ks, vb, vh, vs, at, mask, 0, 0, 0};
            block_part(w[i], i ? y : x, y, B, &s, scratch, t, T, &failed);
#pragma omp barrier
        }
    }
    return failed ? -1 : 0;
}
