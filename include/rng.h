/* Counter-based randomness: every random number is a pure function of (key, counter), so dropout masks,
 * shuffles and augmentation depend only on (seed, epoch, step, sample), never on thread scheduling or
 * on how many ranks share the work. */
#ifndef XD_RNG_H
#define XD_RNG_H
#include <stdint.h>

/* Stream tags keep independent uses of one seed apart. */
enum { XD_STREAM_INIT = 1, XD_STREAM_SHUFFLE = 2, XD_STREAM_DROPOUT = 3, XD_STREAM_AUGMENT = 4,
       XD_STREAM_SPLIT = 5, XD_STREAM_SYNTH = 6, XD_STREAM_BENCH = 7 };

/* A strong 64-bit mix (splitmix64 finaliser applied twice over the combined inputs). */
static inline uint64_t xd_mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
/* Key for a stream: derive once, then draw with xd_rand_u64(key, counter). */
static inline uint64_t xd_key(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b) {
  return xd_mix64(xd_mix64(xd_mix64(seed ^ 0x5851f42d4c957f2dULL) ^ stream) ^ xd_mix64(a) * 3 ^ xd_mix64(b + 0x1234567ULL));
}
static inline uint64_t xd_rand_u64(uint64_t key, uint64_t counter) {
  return xd_mix64(key ^ xd_mix64(counter));
}
/* Uniform in [0, 1) with 24 random bits (exactly representable as float). */
static inline float xd_rand_uniform(uint64_t key, uint64_t counter) {
  return (float)(xd_rand_u64(key, counter) >> 40) * (1.0f / 16777216.0f);
}
/* Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias < 2^-32 for n < 2^32). */
static inline uint64_t xd_rand_below(uint64_t key, uint64_t counter, uint64_t n) {
  return (uint64_t)(((unsigned __int128)(xd_rand_u64(key, counter) >> 32) * n) >> 32);
}

/* Sequential generator state for code that draws many numbers in a fixed order (init, synth). */
typedef struct { uint64_t key, counter; } xd_rng;
static inline xd_rng xd_rng_make(uint64_t key) { xd_rng r = {key, 0}; return r; }
static inline uint64_t xd_rng_next(xd_rng *r) { return xd_rand_u64(r->key, r->counter++); }
static inline float xd_rng_uniform(xd_rng *r) { return xd_rand_uniform(r->key, r->counter++); }
/* Standard normal via Box-Muller (one value per call; deterministic). */
float xd_rng_normal(xd_rng *r);
/* Fisher-Yates shuffle of idx[0..n) driven by r. */
void xd_shuffle(xd_rng *r, int64_t *idx, int64_t n);

#endif
