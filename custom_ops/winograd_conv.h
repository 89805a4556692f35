// 3x3 stride-1 "same" convolution by Winograd's minimal filtering, F(m x m, 3 x 3), float32, NHWC,
// for the CPU (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks").
//
// Each m x m block of outputs ("tile") is computed from an (m+2) x (m+2) block of input:
//   V = B^T d B (input transform), M = sum_c V[c] * U[c, k] (one small GEMM per of the (m+2)^2
//   positions), Y = A^T M A (output transform), where U = G g G^T is the transformed kernel,
// so a tile costs (m+2)^2 multiplications per (c, k) pair instead of 9 m^2: 2.25x fewer for m = 2,
// 4x fewer for m = 4. Everything stays in the cache: a chunk of a row's tiles is transformed
// into a per-thread buffer (L2), multiplied 16 output channels at a time into a small buffer (L1)
// and transformed back from there.
//
// Layouts: x [N, H, W, C]; g [3, 3, C, K] (HWIO, TensorFlow's); u [P = (m+2)^2, C, Kp] (U, the
// output channels zero-padded to Kp, a multiple of 16, or 8 when K <= 8: transform_kernel makes
// it from g);
// bias [K]; y [N, H, W, K]. C must be a multiple of 8. Threads split the rows of tiles (any
// range [begin, end) of n * tile_rows).
#ifndef ZSM_TF_WINOGRAD_CONV_H_
#define ZSM_TF_WINOGRAD_CONV_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace zsm_winograd {

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  // unaligned access

inline v8 load8(const float* p) { return *reinterpret_cast<const v8u*>(p); }
inline void store8(float* p, v8 v) { *reinterpret_cast<v8u*>(p) = v; }
inline v8 splat(float s) { return v8{s, s, s, s, s, s, s, s}; }
inline v8 max8(v8 a, v8 b) {
#if defined(__AVX__)
  return (v8)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return a > b ? a : b;
#endif
}
inline v8 fma8(v8 a, v8 b, v8 c) {
#if defined(__AVX2__) && defined(__FMA__)
  return (v8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

// 1-D transforms along one axis, on 8 channels at a time: in[i] -> out[i] (strides in v8s).
template <int M> struct Tr;

template <> struct Tr<2> {  // F(2, 3): B^T 4x4, A^T 2x4, G 4x3
  static constexpr int A = 4;
  static constexpr double G[4][3] = {{1, 0, 0}, {.5, .5, .5}, {.5, -.5, .5}, {0, 0, 1}};
  static inline void bt(const v8* d, v8* r) {
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
  }
  static inline void at(const v8* m, v8* o) {
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
  }
};

template <> struct Tr<4> {  // F(4, 3): B^T 6x6, A^T 4x6, G 6x3 (points 0, +-1, +-2)
  static constexpr int A = 6;
  static constexpr double G[6][3] = {{1. / 4, 0, 0},          {-1. / 6, -1. / 6, -1. / 6},
                                     {-1. / 6, 1. / 6, -1. / 6}, {1. / 24, 1. / 12, 1. / 6},
                                     {1. / 24, -1. / 12, 1. / 6}, {0, 0, 1}};
  static inline void bt(const v8* d, v8* r) {
    const v8 four = splat(4.f), five = splat(5.f), two = splat(2.f);
    v8 t1 = d[4] - four * d[2];       // -4 d2 + d4
    v8 t2 = d[3] - four * d[1];       // -4 d1 + d3
    v8 t3 = d[4] - d[2];              // -d2 + d4
    v8 t4 = two * (d[3] - d[1]);      // -2 d1 + 2 d3
    r[0] = fma8(four, d[0], d[4]) - five * d[2];
    r[1] = t1 + t2;
    r[2] = t1 - t2;
    r[3] = t3 + t4;
    r[4] = t3 - t4;
    r[5] = fma8(four, d[1], d[5]) - five * d[3];
  }
  static inline void at(const v8* m, v8* o) {
    const v8 two = splat(2.f), four = splat(4.f), eight = splat(8.f);
    v8 s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + s12 + s34;
    o[1] = fma8(two, d34, d12);
    o[2] = fma8(four, s34, s12);
    o[3] = fma8(eight, d34, d12) + m[5];
  }
};

template <> struct Tr<6> {  // F(6, 3): B^T 8x8, A^T 6x8, G 8x3 (points 0, +-1, +-2, +-1/2)
  static constexpr int A = 8;
  static constexpr double G[8][3] = {{1, 0, 0},
                                     {-2. / 9, -2. / 9, -2. / 9},
                                     {-2. / 9, 2. / 9, -2. / 9},
                                     {1. / 90, 1. / 45, 2. / 45},
                                     {1. / 90, -1. / 45, 2. / 45},
                                     {32. / 45, 16. / 45, 8. / 45},
                                     {32. / 45, -16. / 45, 8. / 45},
                                     {0, 0, 1}};
  static inline void bt(const v8* d, v8* r) {
    const v8 c525 = splat(5.25f), c425 = splat(4.25f), c25 = splat(2.5f), c125 = splat(1.25f),
             quarter = splat(.25f), half = splat(.5f), two = splat(2.f), four = splat(4.f);
    r[0] = fma8(c525, d[4] - d[2], d[0] - d[6]);
    r[7] = fma8(c525, d[3] - d[5], d[7] - d[1]);
    v8 t1 = d[2] + d[6] - c425 * d[4];     // d2 - 17/4 d4 + d6
    v8 t2 = d[1] + d[5] - c425 * d[3];     // d1 - 17/4 d3 + d5
    r[1] = t1 + t2;
    r[2] = t1 - t2;
    t1 = fma8(quarter, d[2], d[6]) - c125 * d[4];          // d2 / 4 - 5/4 d4 + d6
    t2 = fma8(half, d[1], two * d[5]) - c25 * d[3];        // d1 / 2 - 5/2 d3 + 2 d5
    r[3] = t1 + t2;
    r[4] = t1 - t2;
    t1 = fma8(four, d[2] - c125 * d[4], d[6]);             // 4 d2 - 5 d4 + d6
    t2 = fma8(two, d[1], half * d[5]) - c25 * d[3];        // 2 d1 - 5/2 d3 + d5 / 2
    r[5] = t1 + t2;
    r[6] = t1 - t2;
  }
  static inline void at(const v8* m, v8* o) {
    const v8 two = splat(2.f), four = splat(4.f), eight = splat(8.f), c16 = splat(16.f),
             c32 = splat(32.f), half = splat(.5f), quarter = splat(.25f), eighth = splat(.125f),
             c1_16 = splat(.0625f), c1_32 = splat(.03125f);
    const v8 s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4],
             s56 = m[5] + m[6], d56 = m[5] - m[6];
    o[0] = m[0] + s12 + s34 + s56;
    o[1] = fma8(two, d34, fma8(half, d56, d12));
    o[2] = fma8(four, s34, fma8(quarter, s56, s12));
    o[3] = fma8(eight, d34, fma8(eighth, d56, d12));
    o[4] = fma8(c16, s34, fma8(c1_16, s56, s12));
    o[5] = fma8(c32, d34, fma8(c1_32, d56, d12)) + m[7];
  }
};

#if defined(__AVX512F__)
// GEMM micro-kernel on AVX-512: 12 tiles x 16 output channels, one 16-lane accumulator per tile
// (12 FMAs per loaded row of U, each with its V value broadcast from memory)
constexpr int kRows = 12;
constexpr int kCols = 16;

// c[r][0..16) = sum_k a[r][k] * b[k][0..16) for the R (12) rows r (a: lda, b: ldb, c: ldc floats)
template <int R = kRows>
inline void micro_kernel(const float* a, int lda, const float* b, int ldb, float* c, int ldc,
                         int depth) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int k = 0; k < depth; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b + k * ldb);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * lda + k]), b0, acc[r]);
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(c + r * ldc, acc[r]);
}
#else
constexpr int kRows = 6;   // GEMM micro-kernel: 6 tiles x 16 output channels
constexpr int kCols = 16;

// c[r][0..16) = sum_k a[r][k] * b[k][0..16) for the R (6) rows r (a: lda, b: ldb, c: ldc floats)
template <int R = kRows>
inline void micro_kernel(const float* a, int lda, const float* b, int ldb, float* c, int ldc,
                         int depth) {
  v8 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = splat(0.f);
  for (int k = 0; k < depth; ++k) {
    const v8 b0 = load8(b + k * ldb), b1 = load8(b + k * ldb + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const v8 ar = splat(a[r * lda + k]);
      acc[r][0] = fma8(ar, b0, acc[r][0]);
      acc[r][1] = fma8(ar, b1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    store8(c + r * ldc, acc[r][0]);
    store8(c + r * ldc + 8, acc[r][1]);
  }
}
#endif

// Narrow outputs (K <= 8, e.g. the network's last convolution, 64 -> 3): the kernel is padded
// to 8 output channels instead of kCols = 16 and this 12 x 8 micro-kernel (12 accumulators,
// enough to keep both FMA ports busy) halves the padded GEMM.
constexpr int kNarrowRows = 12;
constexpr int kNarrowCols = 8;

// c[r][0..8) = sum_k a[r][k] * b[k][0..8) for the R (12) rows r (a: lda, b: ldb, c: ldc floats)
template <int R = kNarrowRows>
inline void micro_kernel_narrow(const float* a, int lda, const float* b, int ldb, float* c,
                                int ldc, int depth) {
  v8 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = splat(0.f);
  for (int k = 0; k < depth; ++k) {
    const v8 b0 = load8(b + k * ldb);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) acc[r] = fma8(splat(a[r * lda + k]), b0, acc[r]);
  }
  for (int r = 0; r < R; ++r) store8(c + r * ldc, acc[r]);
}

// f(std::integral_constant<int, r>()) for a run-time r in [1, Max]: the micro-kernels for the
// last, partial block of rows (a chunk's tiles need not fill whole blocks)
template <int Max, class F>
inline void with_rows(int r, F&& f) {
  if constexpr (Max >= 1) {
    if (r == Max) {
      f(std::integral_constant<int, Max>());
      return;
    }
    with_rows<Max - 1>(r, f);
  }
}

// The output channels the transformed kernel is padded to: 8 for k <= 8 (the narrow
// micro-kernel), else a multiple of kCols. (Chunk: the tiles per GEMM batch; any works, a
// partial block of rows runs its own micro-kernel.)
template <int Chunk>
inline int64_t padded_outputs(int64_t k) {
  return k <= kNarrowCols ? kNarrowCols : (k + kCols - 1) / kCols * kCols;
}

struct Shape {
  int64_t n, h, w, c, k, kp;
};

template <int M>
struct Winograd {
  static constexpr int A = Tr<M>::A;
  static constexpr int P = A * A;
#ifndef ZSM_WINO_CHUNK
#define ZSM_WINO_CHUNK 12
#endif
  // tiles per GEMM batch (a multiple of kRows, 6 or 12): 12 keeps V and M in a 512 KB L2 for
  // C = 64
  static constexpr int kChunk = ZSM_WINO_CHUNK;
  static_assert(kChunk % kRows == 0, "ZSM_WINO_CHUNK must be a multiple of the micro-kernel's rows");

  static int64_t tile_rows(const Shape& s) { return (s.h + M - 1) / M; }

  // V = B^T d B of one tile's 8 channels d[A*A] (t: scratch), stored at v[p * kChunk * C]
  static inline void input_tile(const v8* d, v8* t, float* v, int64_t C) {
    v8 r[A];
    for (int j = 0; j < A; ++j) {  // rows: t[k][j] = sum_i BT[k][i] d[i][j]
      v8 col[A];
      for (int i = 0; i < A; ++i) col[i] = d[i * A + j];
      Tr<M>::bt(col, r);
      for (int k = 0; k < A; ++k) t[k * A + j] = r[k];
    }
    for (int k = 0; k < A; ++k) {  // columns: V[k][l] = sum_j t[k][j] BT[l][j]
      Tr<M>::bt(&t[k * A], r);
      for (int l = 0; l < A; ++l) store8(v + (k * A + l) * kChunk * C, r[l]);
    }
  }

  // U = G g G^T for the input channels [c0, c1): u[p][c][0..Kp) (zeros from K on), in double
  static void transform_kernel(const Shape& s, const float* g, float* u, int64_t c0, int64_t c1) {
    const auto& G = Tr<M>::G;
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t k = 0; k < s.kp; ++k) {
        float* out = u + c * s.kp + k;
        if (k >= s.k) {
          for (int p = 0; p < P; ++p) out[p * s.c * s.kp] = 0.f;
          continue;
        }
        double w[3][3], t[A][3];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) w[i][j] = g[((i * 3 + j) * s.c + c) * s.k + k];
        for (int a = 0; a < A; ++a)
          for (int j = 0; j < 3; ++j) t[a][j] = G[a][0] * w[0][j] + G[a][1] * w[1][j] + G[a][2] * w[2][j];
        for (int a = 0; a < A; ++a)
          for (int b = 0; b < A; ++b)
            out[(a * A + b) * s.c * s.kp] =
                static_cast<float>(t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2]);
      }
    }
  }
  static int64_t tile_cols(const Shape& s) { return (s.w + M - 1) / M; }

  // rows of tiles [begin, end) over all images (row index = n * tile_rows + ty); the outputs
  // are max(conv + bias, slope * (conv + bias)): slope 1 none, 0 ReLU, 0.1 LeakyReLU(0.1)
  // The input is the channel concatenation of `parts` tensors xs[i] [N, H, W, cs[i]] (each cs[i]
  // a multiple of 8, summing to s.c): the concatenation is never made.
  // With `shuffle` r > 1 the output is pixel-shuffled as it is stored: y [N, r H, r W, K / r^2],
  // output channel k = (i r + j) K/r^2 + c going to sub-pixel (i, j), channel c (the caller
  // orders the kernel's outputs so; K / r^2 must be a multiple of 8).
  static void run(const Shape& s, const float* const* xs, const int64_t* cs, int parts,
                  const float* u, const float* bias, float* y, int64_t begin, int64_t end,
                  float slope = 1.f, int shuffle = 1) {
    const v8 sv = splat(slope);
    const int64_t th = tile_rows(s), tw = tile_cols(s), C = s.c, K = s.k, Kp = s.kp;
    const int64_t r = shuffle, Kr = K / (r * r), row_stride = s.w * r * Kr;
    std::vector<float> vbuf(static_cast<size_t>(P) * kChunk * C);
    std::vector<float> mbuf(static_cast<size_t>(P) * kChunk * kCols);
    v8 d[A * A], t[A * A];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / th, ty = row % th;
      float* yn = y + n * s.h * s.w * K;
      for (int64_t tx0 = 0; tx0 < tw; tx0 += kChunk) {
        const int64_t nt = std::min<int64_t>(kChunk, tw - tx0);
        const bool narrow = Kp == kNarrowCols;   // padded_outputs chose the narrow kernel
        const int64_t rows_per = narrow ? kNarrowRows : kRows;
        const int64_t full = nt / rows_per * rows_per;   // tiles in whole blocks of rows
        const int rest = static_cast<int>(nt - full);     // then a partial block
        // input transform: V[p][t][c]
        for (int64_t ti = 0; ti < nt; ++ti) {
          const int64_t y0 = ty * M - 1, x0 = (tx0 + ti) * M - 1;
          for (int part = 0, coff = 0; part < parts; coff += static_cast<int>(cs[part]), ++part) {
            const int64_t cp = cs[part];
            const float* xn = xs[part] + n * s.h * s.w * cp;
            const float* src[A * A];  // each input position's pixel, or null outside the image
            bool interior = true;
            for (int i = 0; i < A; ++i) {
              for (int j = 0; j < A; ++j) {
                const int64_t yy = y0 + i, xx = x0 + j;
                const bool in = yy >= 0 && yy < s.h && xx >= 0 && xx < s.w;
                src[i * A + j] = in ? xn + (yy * s.w + xx) * cp : nullptr;
                interior = interior && in;
              }
            }
            float* vt = &vbuf[ti * C + coff];
            if (interior) {
              // the next tile's new input columns, fetched while this one is transformed: inputs
              // far larger than the caches (1280x720) come from memory 5-10% faster
              if (ti + 1 < nt) {
                for (int i = 0; i < A; ++i)
                  for (int j = A - M; j < A; ++j)
                    for (int64_t c = 0; c < cp; c += 16)
                      __builtin_prefetch(src[i * A + j] + M * cp + c, 0, 3);
              }
              for (int64_t c = 0; c < cp; c += 8) {
                for (int q = 0; q < A * A; ++q) d[q] = load8(src[q] + c);
                input_tile(d, t, vt + c, C);
              }
            } else {
              for (int64_t c = 0; c < cp; c += 8) {
                for (int q = 0; q < A * A; ++q) d[q] = src[q] ? load8(src[q] + c) : splat(0.f);
                input_tile(d, t, vt + c, C);
              }
            }
          }
        }
        // per block of `cols` output channels: one GEMM per position, M[p] (nt x cols) =
        // V[p] (nt x C) * U[p] (C x cols), into mbuf (P x kChunk x cols floats: L1-resident),
        // then the output transform of those channels of the chunk's tiles from there
        const int64_t cols = narrow ? kNarrowCols : kCols;
        for (int64_t k0 = 0; k0 < Kp; k0 += cols) {
          for (int p = 0; p < P; ++p) {
            const float* vp = &vbuf[p * kChunk * C];
            const float* up = u + p * C * Kp + k0;
            float* mp = &mbuf[p * kChunk * cols];
            const float* vr = vp + full * C;   // the partial block's rows
            float* mr = mp + full * cols;
            if (narrow) {
              for (int64_t t0 = 0; t0 < full; t0 += kNarrowRows)
                micro_kernel_narrow(vp + t0 * C, C, up, Kp, mp + t0 * cols, cols, C);
              with_rows<kNarrowRows - 1>(rest, [&](auto r) {
                micro_kernel_narrow<decltype(r)::value>(vr, C, up, Kp, mr, cols, C);
              });
            } else {
              for (int64_t t0 = 0; t0 < full; t0 += kRows)
                micro_kernel(vp + t0 * C, C, up, Kp, mp + t0 * cols, cols, C);
              with_rows<kRows - 1>(rest, [&](auto r) {
                micro_kernel<decltype(r)::value>(vr, C, up, Kp, mr, cols, C);
              });
            }
          }
          if (k0 >= K) continue;   // padding channels only
          // output transform, bias, store the in-bounds outputs
          for (int64_t ti = 0; ti < nt; ++ti) {
            const int64_t y0 = ty * M, x0 = (tx0 + ti) * M;
            for (int64_t k = k0; k < k0 + cols && k < K; k += 8) {
              const int64_t sub = k / Kr;   // the sub-pixel (i, j) = (sub / r, sub % r)
              float* yk = yn + (sub / r) * row_stride + (sub % r) * Kr + k % Kr;
              const float* mk = &mbuf[ti * cols + (k - k0)];
              v8 o[M], q[A * M];
              for (int l = 0; l < A; ++l) {  // rows: q[p'][l] = sum_k AT[p'][k] M[k][l]
                v8 col[A];
                for (int kk = 0; kk < A; ++kk) col[kk] = load8(mk + (kk * A + l) * kChunk * cols);
                Tr<M>::at(col, o);
                for (int pp = 0; pp < M; ++pp) q[pp * A + l] = o[pp];
              }
              const int lanes = static_cast<int>(std::min<int64_t>(8, K - k));
              v8 bv;
              if (lanes == 8) {
                bv = load8(bias + k);
              } else {
                float bb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                std::memcpy(bb, bias + k, lanes * sizeof(float));
                bv = load8(bb);
              }
              for (int pp = 0; pp < M; ++pp) {
                const int64_t yy = y0 + pp;
                if (yy >= s.h) break;
                Tr<M>::at(&q[pp * A], o);
                for (int qq = 0; qq < M; ++qq) {
                  const int64_t xx = x0 + qq;
                  if (xx >= s.w) break;
                  float* dst = yk + yy * r * row_stride + xx * r * Kr;
                  const v8 val = max8(o[qq] + bv, sv * (o[qq] + bv));
                  if (lanes == 8) {
                    store8(dst, val);
                  } else {
                    float tmp[8];
                    store8(tmp, val);
                    std::memcpy(dst, tmp, lanes * sizeof(float));
                  }
                }
              }
            }
          }
        }
      }
    }
  }
};

}  // namespace zsm_winograd

#endif  // ZSM_TF_WINOGRAD_CONV_H_
