/* Kernel bodies compiled once per instruction set: src/gemm_<isa>.c defines XD_ISA_SUFFIX and
 * XD_ISA_ENUM, is compiled with that ISA's target flags, and includes this file; the tile sizes below
 * follow the target macros of that compilation (__AVX512F__, __AVX__, ...). Everything here is static
 * except the table XD_CAT(xd_kernels_, XD_ISA_SUFFIX), which src/isa.c hands out.
 *
 * SGEMM (single-threaded, row-major): C[M,N] = op(A) op(B) + beta C.
 * BLIS-style: K is cut into KC blocks, M into MC blocks packed as MR-row panels, N into NR-column strips;
 * an MR x NR register-blocked micro-kernel written with GCC vector extensions. Edge tiles run the same
 * micro-kernel on zero-padded panels, so every C element sees the same sequence of operations wherever
 * it sits: results do not depend on how callers split N or M between threads. */
#define XD_CAT2(a, b) a##b
#define XD_CAT(a, b) XD_CAT2(a, b)
#define SFX(name) XD_CAT(XD_CAT(name, _), XD_ISA_SUFFIX)

#include "isa.h"
#include "layers.h"

#include <string.h>
#if defined(__FMA__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VL 16
#define MR 8
#define NV 3
#elif defined(__AVX__)
#define VL 8
#define MR 4
#define NV 3
#else
#define VL 4
#define MR 4
#define NV 3
#endif
#define NR (NV * VL)
#define KC 256
#define MC (MR * 12)

typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4), may_alias));

/* Fused multiply-add where the hardware has it (fewer roundings, twice the throughput); the choice is
 * fixed at compile time, so a build is still bitwise deterministic. */
static inline vf vmadd(vf a, vf b, vf c) {
#if defined(__AVX512F__)
  return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__AVX__) && defined(__FMA__)
  return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

/* acc[MR][NR] = sum_k Ap[k][:] x Bp[k][:]; Ap is an MR-wide packed panel, Bp rows are ldb apart.
 * The tile goes to out (rows ldo apart): mode 0 stores it, 1 adds it, 2 stores acc + beta * out. Full
 * tiles write C directly; edge tiles go through a buffer and store_tile, with the same arithmetic. */
static inline void ukernel(int kc, const float *restrict Ap, const float *restrict Bp, long ldb,
                           float *restrict out, long ldo, int mode, float beta) {
  vf acc[MR][NV];
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = (vf){0};
  for (int k = 0; k < kc; k++) {
    vf bv[NV];
    for (int v = 0; v < NV; v++) bv[v] = *(const vfu *)(Bp + (long)k * ldb + v * VL);
    for (int i = 0; i < MR; i++) {
      vf a = (vf){0} + Ap[k * MR + i];
      for (int v = 0; v < NV; v++) acc[i][v] = vmadd(a, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) {
      vfu *o = (vfu *)(out + i * ldo + v * VL);
      if (mode == 0)
        *o = acc[i][v];
      else if (mode == 1)
        *o = *o + acc[i][v];
      else
        *o = acc[i][v] + beta * *o;
    }
}

/* d[u*ld + r] = s[r*ls + u] for r, u < 4: a 4x4 transpose in 128-bit vectors (every ISA has them). */
typedef float v4f __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));
/* Two-vector lane shuffle: GCC spells it __builtin_shuffle, clang __builtin_shufflevector. */
#if defined(__clang__)
#define XD_SHUF4(a, b, i, j, k, l) __builtin_shufflevector((a), (b), i, j, k, l)
#else
#define XD_SHUF4(a, b, i, j, k, l) __builtin_shuffle((a), (b), (v4i){i, j, k, l})
#endif
static inline void transpose4(const float *s, long ls, float *d, long ld) {
  v4f r0, r1, r2, r3;
  memcpy(&r0, s, sizeof r0);
  memcpy(&r1, s + ls, sizeof r1);
  memcpy(&r2, s + 2 * ls, sizeof r2);
  memcpy(&r3, s + 3 * ls, sizeof r3);
  const v4f t0 = XD_SHUF4(r0, r1, 0, 4, 1, 5), t1 = XD_SHUF4(r0, r1, 2, 6, 3, 7);
  const v4f t2 = XD_SHUF4(r2, r3, 0, 4, 1, 5), t3 = XD_SHUF4(r2, r3, 2, 6, 3, 7);
  const v4f o0 = XD_SHUF4(t0, t2, 0, 1, 4, 5), o1 = XD_SHUF4(t0, t2, 2, 3, 6, 7);
  const v4f o2 = XD_SHUF4(t1, t3, 0, 1, 4, 5), o3 = XD_SHUF4(t1, t3, 2, 3, 6, 7);
  memcpy(d, &o0, sizeof o0);
  memcpy(d + ld, &o1, sizeof o1);
  memcpy(d + 2 * ld, &o2, sizeof o2);
  memcpy(d + 3 * ld, &o3, sizeof o3);
}

/* Panel of MR rows of op(A) (rows i0.., k0..k0+kc), zero-padded to MR rows. */
static void pack_a(int transA, const float *A, int lda, int i0, int mr, int k0, int kc, float *restrict Ap) {
  if (!transA) {
    int i = 0;
    for (; i + 4 <= mr; i += 4) {
      const float *a = A + (long)(i0 + i) * lda + k0;
      int k = 0;
      for (; k + 4 <= kc; k += 4) transpose4(a + k, lda, Ap + k * MR + i, MR);
      for (; k < kc; k++)
        for (int r = 0; r < 4; r++) Ap[k * MR + i + r] = a[(long)r * lda + k];
    }
    for (; i < mr; i++) {
      const float *a = A + (long)(i0 + i) * lda + k0;
      for (int k = 0; k < kc; k++) Ap[k * MR + i] = a[k];
    }
  } else {
    for (int k = 0; k < kc; k++) {
      const float *a = A + (long)(k0 + k) * lda + i0;
      for (int i = 0; i < mr; i++) Ap[k * MR + i] = a[i];
    }
  }
  if (mr < MR)
    for (int k = 0; k < kc; k++)
      for (int i = mr; i < MR; i++) Ap[k * MR + i] = 0.0f;
}

/* Strip of NR columns of op(B) (k0..k0+kc, columns j0..j0+nr) packed as kc rows of NR, zero-padded. */
static void pack_b(int transB, const float *B, int ldb, int k0, int kc, int j0, int nr, float *restrict Bp) {
  if (!transB) {
    for (int k = 0; k < kc; k++) {
      const float *b = B + (long)(k0 + k) * ldb + j0;
      float *d = Bp + k * NR;
      for (int j = 0; j < nr; j++) d[j] = b[j];
      for (int j = nr; j < NR; j++) d[j] = 0.0f;
    }
  } else {
    /* blocks of 4 k x nr columns, 4x4 at a time: reads stay sequential per row, writes within a few lines */
    const float *b = B + (long)j0 * ldb + k0;
    int k = 0;
    for (; k + 4 <= kc; k += 4) {
      float *d = Bp + k * NR;
      int j = 0;
      for (; j + 4 <= nr; j += 4) transpose4(b + (long)j * ldb + k, ldb, d + j, NR);
      for (; j < nr; j++) {
        const float *s = b + (long)j * ldb + k;
        for (int u = 0; u < 4; u++) d[u * NR + j] = s[u];
      }
      for (int u = 0; u < 4; u++)
        for (int j = nr; j < NR; j++) d[u * NR + j] = 0.0f;
    }
    for (; k < kc; k++) {
      float *d = Bp + k * NR;
      for (int j = 0; j < nr; j++) d[j] = b[(long)j * ldb + k];
      for (int j = nr; j < NR; j++) d[j] = 0.0f;
    }
  }
}

/* C tile update: the first K block applies beta (beta == 0 never reads C, which may be garbage). */
static void store_tile(const float *restrict t, int mr, int nr, float *restrict C, int ldc, int first,
                       float beta) {
  for (int i = 0; i < mr; i++) {
    float *c = C + (long)i * ldc;
    const float *s = t + i * NR;
    if (!first)
      for (int j = 0; j < nr; j++) c[j] += s[j];
    else if (beta == 0.0f)
      for (int j = 0; j < nr; j++) c[j] = s[j];
    else
      for (int j = 0; j < nr; j++) c[j] = s[j] + beta * c[j];
  }
}

/* ---- A B^T with both operands contiguous along K: register-blocked dot products, no packing ----
 * (conv weight gradients, dense forward). Lanes hold partial sums over k = lane mod VL; they are reduced
 * in a fixed order, then the scalar tail is added. Edge tiles reuse the last row/column (results
 * discarded) so every element sees the same operations. */
#if defined(__AVX512F__)
#define DR 4
#else
#define DR 2
#endif
#define DC 4
#define DKC 1024
#if defined(__AVX__)
#define USE_DOT_NT 0
#else
#define USE_DOT_NT 0
#endif

static inline float hsum(vf v) {
  float l[VL], s = 0.0f;
  memcpy(l, &v, sizeof l);
  for (int i = 0; i < VL; i++) s += l[i];
  return s;
}

/* Rows a + i*lda (i < DR, clamped to ra) and b + j*ldb (j < DC, clamped to rb). */
static void dot_tile(int kc, const float *restrict a, long lda, int ra, const float *restrict b, long ldb, int rb,
                     float out[DR][DC]) {
  long ao[DR], bo[DC];
  for (int i = 0; i < DR; i++) ao[i] = (i < ra ? i : ra - 1) * lda;
  for (int j = 0; j < DC; j++) bo[j] = (j < rb ? j : rb - 1) * ldb;
  vf acc[DR][DC];
  for (int i = 0; i < DR; i++)
    for (int j = 0; j < DC; j++) acc[i][j] = (vf){0};
  const int kv = kc - kc % VL;
  for (int k = 0; k < kv; k += VL) {
    vf av[DR];
    for (int i = 0; i < DR; i++) av[i] = *(const vfu *)(a + ao[i] + k);
    for (int j = 0; j < DC; j++) {
      vf bv = *(const vfu *)(b + bo[j] + k);
      for (int i = 0; i < DR; i++) acc[i][j] = vmadd(av[i], bv, acc[i][j]);
    }
  }
  for (int i = 0; i < DR; i++)
    for (int j = 0; j < DC; j++) {
      float s = hsum(acc[i][j]);
      for (int k = kv; k < kc; k++) s += a[ao[i] + k] * b[bo[j] + k];
      out[i][j] = s;
    }
}

static void sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc) {
  for (int k0 = 0; k0 < K; k0 += DKC) {
    int kc = K - k0 < DKC ? K - k0 : DKC;
    for (int i0 = 0; i0 < M; i0 += DR) {
      for (int j0 = 0; j0 < N; j0 += DC) {
        float t[DR][DC];
        dot_tile(kc, A + (long)i0 * lda + k0, lda, M - i0, B + (long)j0 * ldb + k0, ldb, N - j0, t);
        for (int i = 0; i < DR && i0 + i < M; i++)
          for (int j = 0; j < DC && j0 + j < N; j++) {
            float *c = C + (long)(i0 + i) * ldc + j0 + j;
            if (k0 > 0)
              *c += t[i][j];
            else
              *c = beta == 0.0f ? t[i][j] : t[i][j] + beta * *c;
          }
      }
    }
  }
}

static void SFX(sgemm)(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  /* Long K with both operands K-contiguous: with narrow vectors dot products beat transposing B into
   * panels (measured on SSE2); with AVX/AVX-512 the packed path was faster (91 vs 43 GFLOP/s). */
  if (USE_DOT_NT && !transA && transB && K >= 4 * VL && K >= 4 * M) {
    sgemm_nt(M, N, K, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (K <= 0) {
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) C[(long)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(long)i * ldc + j];
    return;
  }
  float Apack[MC * KC] __attribute__((aligned(64)));
  float Bpack[KC * NR] __attribute__((aligned(64)));
  float tile[MR * NR] __attribute__((aligned(64)));
  for (int k0 = 0; k0 < K; k0 += KC) {
    int kc = K - k0 < KC ? K - k0 : KC;
    int first = k0 == 0;
    for (int i0 = 0; i0 < M; i0 += MC) {
      int mc = M - i0 < MC ? M - i0 : MC;
      for (int ir = 0; ir < mc; ir += MR)
        pack_a(transA, A, lda, i0 + ir, mc - ir < MR ? mc - ir : MR, k0, kc, Apack + ir * KC);
      for (int j0 = 0; j0 < N; j0 += NR) {
        int nr = N - j0 < NR ? N - j0 : NR;
        const float *bp;
        long ldbp;
        if (!transB && nr == NR) { /* rows of B are already contiguous: read them in place */
          bp = B + (long)k0 * ldb + j0;
          ldbp = ldb;
        } else {
          pack_b(transB, B, ldb, k0, kc, j0, nr, Bpack);
          bp = Bpack;
          ldbp = NR;
        }
        for (int ir = 0; ir < mc; ir += MR) {
          int mr = mc - ir < MR ? mc - ir : MR;
          float *c = C + (long)(i0 + ir) * ldc + j0;
          if (mr == MR && nr == NR) {
            ukernel(kc, Apack + ir * KC, bp, ldbp, c, ldc, !first ? 1 : beta == 0.0f ? 0 : 2, beta);
          } else {
            ukernel(kc, Apack + ir * KC, bp, ldbp, tile, NR, 0, 0.0f);
            store_tile(tile, mr, nr, c, ldc, first, beta);
          }
        }
      }
    }
  }
}

/* ---- conv2d with one input channel, stride 1, no padding (a network's first layer) ----
 * im2col there has only KH*KW rows, too few for the GEMM tiles; these direct kernels vectorise over
 * output columns instead. Each output is b + sum over (ky,kx) in order; each weight gradient lane sums
 * its columns in row order, lanes are reduced in a fixed order, then the scalar tail columns are added. */
#define C1_FB 4

static inline vf load_part(const float *p, int n) {
  float t[VL] = {0};
  memcpy(t, p, sizeof(float) * n);
  return *(const vfu *)t;
}

static inline void conv_c1_fwd_body(int W, int F, int KH, int KW, int OH, int OW, const float *restrict x,
                                    const float *restrict w, const float *restrict b, float *restrict y) {
  const int KK = KH * KW;
  for (int f0 = 0; f0 < F; f0 += C1_FB) {
    int fi[C1_FB];
    for (int f = 0; f < C1_FB; f++) fi[f] = f0 + f < F ? f0 + f : F - 1; /* extra lanes recompute the last */
    for (int oy = 0; oy < OH; oy++) {
      int ox = 0;
      /* two vectors of columns at a time: twice the independent FMA chains, each load of w used twice */
      for (; ox + 2 * VL <= OW; ox += 2 * VL) {
        vf acc[2][C1_FB];
        for (int f = 0; f < C1_FB; f++) acc[0][f] = acc[1][f] = (vf){0} + (b ? b[fi[f]] : 0.0f);
        for (int ky = 0; ky < KH; ky++)
          for (int kx = 0; kx < KW; kx++) {
            const float *xp = x + (long)(oy + ky) * W + ox + kx;
            const vf x0 = *(const vfu *)xp, x1 = *(const vfu *)(xp + VL);
            for (int f = 0; f < C1_FB; f++) {
              const vf wv = (vf){0} + w[fi[f] * KK + ky * KW + kx];
              acc[0][f] = vmadd(wv, x0, acc[0][f]);
              acc[1][f] = vmadd(wv, x1, acc[1][f]);
            }
          }
        for (int f = 0; f < C1_FB && f0 + f < F; f++) {
          float *yp = y + ((long)(f0 + f) * OH + oy) * OW + ox;
          *(vfu *)yp = acc[0][f];
          *(vfu *)(yp + VL) = acc[1][f];
        }
      }
      for (; ox < OW; ox += VL) {
        /* a partial last vector, when the row has a full one, is redone as the row's last full vector:
         * the columns it shares with the previous one get the same values again */
        if (OW - ox < VL && OW >= VL) ox = OW - VL;
        const int n = OW - ox < VL ? OW - ox : VL;
        vf acc[C1_FB];
        for (int f = 0; f < C1_FB; f++) acc[f] = (vf){0} + (b ? b[fi[f]] : 0.0f);
        for (int ky = 0; ky < KH; ky++)
          for (int kx = 0; kx < KW; kx++) {
            const float *xp = x + (long)(oy + ky) * W + ox + kx;
            vf xv;
            if (n == VL)
              xv = *(const vfu *)xp;
            else
              xv = load_part(xp, n);
            for (int f = 0; f < C1_FB; f++) acc[f] = vmadd((vf){0} + w[fi[f] * KK + ky * KW + kx], xv, acc[f]);
          }
        for (int f = 0; f < C1_FB && f0 + f < F; f++) {
          float *yp = y + ((long)(f0 + f) * OH + oy) * OW + ox;
          if (n == VL)
            *(vfu *)yp = acc[f];
          else
            memcpy(yp, &acc[f], sizeof(float) * n);
        }
      }
    }
  }
}

static void SFX(conv_c1_forward)(int H, int W, int F, int KH, int KW, int OH, int OW, const float *x,
                                 const float *w, const float *b, float *y) {
  if (KH == 3 && KW == 3) /* constant taps: fully unrolled */
    conv_c1_fwd_body(W, F, 3, 3, OH, OW, x, w, b, y);
  else
    conv_c1_fwd_body(W, F, KH, KW, OH, OW, x, w, b, y);
}

#define C1_MAXK 49
/* FB (1 or 2, a constant at each call) filters at a time: each x load feeds FB accumulators; every
 * accumulator sees the same operations in the same order whatever FB is. Inlined so FB, KH, KW fold. */
static inline __attribute__((always_inline)) void conv_c1_wgrad_fb(int W, int FB, int KH, int KW, int OH, int OW,
                                                                  const float *restrict x, const float *restrict dy,
                                                                  float *restrict dw) {
  const int KK = KH * KW, ov = OW - OW % VL;
  vf acc[2][C1_MAXK];
  float tail[2][C1_MAXK];
  for (int u = 0; u < FB; u++)
    for (int k = 0; k < KK; k++) acc[u][k] = (vf){0}, tail[u][k] = 0.0f;
  for (int oy = 0; oy < OH; oy++) {
    const float *gr = dy + (long)oy * OW;
    for (int ox = 0; ox < ov; ox += VL) {
      vf gv[2];
      for (int u = 0; u < FB; u++) gv[u] = *(const vfu *)(gr + (long)u * OH * OW + ox);
      for (int ky = 0; ky < KH; ky++)
        for (int kx = 0; kx < KW; kx++) {
          const vf xv = *(const vfu *)(x + (long)(oy + ky) * W + ox + kx);
          for (int u = 0; u < FB; u++) acc[u][ky * KW + kx] = vmadd(xv, gv[u], acc[u][ky * KW + kx]);
        }
    }
    for (int u = 0; u < FB; u++)
      for (int ox = ov; ox < OW; ox++)
        for (int ky = 0; ky < KH; ky++)
          for (int kx = 0; kx < KW; kx++)
            tail[u][ky * KW + kx] += gr[(long)u * OH * OW + ox] * x[(long)(oy + ky) * W + ox + kx];
  }
  for (int u = 0; u < FB; u++)
    for (int k = 0; k < KK; k++) dw[u * KK + k] = hsum(acc[u][k]) + tail[u][k];
}

/* Filters in pairs where the registers hold both sets of accumulators (AVX-512: 32 of them). */
static inline void conv_c1_wgrad_body(int W, int F, int KH, int KW, int OH, int OW, const float *restrict x,
                                      const float *restrict dy, float *restrict dw) {
  const int KK = KH * KW;
  int f = 0;
#if defined(__AVX512F__)
  if (KK <= 9)
    for (; f + 2 <= F; f += 2) conv_c1_wgrad_fb(W, 2, KH, KW, OH, OW, x, dy + (long)f * OH * OW, dw + f * KK);
#endif
  for (; f < F; f++) conv_c1_wgrad_fb(W, 1, KH, KW, OH, OW, x, dy + (long)f * OH * OW, dw + f * KK);
}

static void SFX(conv_c1_wgrad)(int H, int W, int F, int KH, int KW, int OH, int OW, const float *x,
                               const float *dy, float *dw) {
  if (KH == 3 && KW == 3)
    conv_c1_wgrad_body(W, F, 3, 3, OH, OW, x, dy, dw);
  else
    conv_c1_wgrad_body(W, F, KH, KW, OH, OW, x, dy, dw);
}

const xd_kernels XD_CAT(xd_kernels_, XD_ISA_SUFFIX) = {XD_ISA_ENUM, SFX(sgemm), SFX(conv_c1_forward),
                                                        SFX(conv_c1_wgrad)};
