/* Test helpers: write small image files of every supported kind, and broken ones, with stb_image_write
 * (its implementation is in Debian's libstb, which xdcore links). */
#ifndef XD_TEST_IMG_FIXTURES_H
#define XD_TEST_IMG_FIXTURES_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb_image_write.h>

/* Writes a w x h image with `comp` channels where every pixel is px[0..comp). Format by extension:
 * .png, .jpg/.jpeg, .bmp. Returns 0 on success. */
static inline int fx_write(const char *path, int w, int h, int comp, const uint8_t *data) {
  const char *ext = strrchr(path, '.');
  if (!ext) return -1;
  if (!strcmp(ext, ".png")) return stbi_write_png(path, w, h, comp, data, w * comp) ? 0 : -1;
  if (!strcmp(ext, ".bmp")) return stbi_write_bmp(path, w, h, comp, data) ? 0 : -1;
  if (!strcmp(ext, ".jpg") || !strcmp(ext, ".jpeg")) return stbi_write_jpg(path, w, h, comp, data, 95) ? 0 : -1;
  return -1;
}

static inline int fx_write_const(const char *path, int w, int h, int comp, const uint8_t *px) {
  uint8_t *d = malloc((size_t)w * h * comp);
  if (!d) return -1;
  for (int i = 0; i < w * h; i++) memcpy(d + (size_t)i * comp, px, (size_t)comp);
  int rc = fx_write(path, w, h, comp, d);
  free(d);
  return rc;
}

static inline int fx_write_bytes(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t k = n ? fwrite(b, 1, n, f) : 0;
  return (fclose(f) == 0 && k == n) ? 0 : -1;
}

/* Copies the first `keep` of every 1000 bytes' fraction of src to dst (a truncated file). */
static inline int fx_truncate_copy(const char *src, const char *dst, double fraction) {
  FILE *f = fopen(src, "rb");
  if (!f) return -1;
  static unsigned char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  return fx_write_bytes(dst, buf, (size_t)((double)n * fraction));
}

static inline uint32_t fx_crc32(const unsigned char *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

static inline void fx_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* A PNG signature + valid IHDR claiming w x h 8-bit gray, then a tiny IDAT and IEND: a well-formed
 * header whose decode would need w*h bytes. */
static inline int fx_write_png_header(const char *path, uint32_t w, uint32_t h) {
  unsigned char b[64];
  size_t n = 0;
  const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  memcpy(b, sig, 8);
  n = 8;
  fx_be32(b + n, 13);
  memcpy(b + n + 4, "IHDR", 4);
  fx_be32(b + n + 8, w);
  fx_be32(b + n + 12, h);
  b[n + 16] = 8; /* bit depth */
  b[n + 17] = 0; /* gray */
  b[n + 18] = b[n + 19] = b[n + 20] = 0;
  fx_be32(b + n + 21, fx_crc32(b + n + 4, 17));
  n += 25;
  fx_be32(b + n, 0);
  memcpy(b + n + 4, "IEND", 4);
  fx_be32(b + n + 8, fx_crc32(b + n + 4, 4));
  n += 12;
  return fx_write_bytes(path, b, n);
}

static inline int fx_mkdir(const char *p) { return mkdir(p, 0755) == 0 ? 0 : -1; }

#endif
