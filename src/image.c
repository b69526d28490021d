/* Image decoding (stb_image) with the checks stb_image does not do itself: empty files, absurd
 * dimensions (rejected from the header, before any pixel buffer is allocated) and truncation of formats
 * whose stb decoders silently pad missing data with zeros (JPEG, BMP). */
#include "image.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb_image.h>

/* No image of a sane size needs more: the largest accepted raster compresses to far less. */
#define XD_IMAGE_MAX_FILE_BYTES ((size_t)1 << 30)

static int read_whole_file(const char *path, unsigned char **buf, size_t *len, xd_err *e) {
  FILE *f = fopen(path, "rb");
  if (!f) return xd_fail(e, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(f);
    return xd_fail(e, "%s: not a regular file", path);
  }
  if (st.st_size == 0) {
    fclose(f);
    return xd_fail(e, "%s: zero-byte file", path);
  }
  if ((size_t)st.st_size > XD_IMAGE_MAX_FILE_BYTES) {
    fclose(f);
    return xd_fail(e, "%s: file too large for an image (%lld bytes)", path, (long long)st.st_size);
  }
  size_t n = (size_t)st.st_size;
  unsigned char *p = malloc(n);
  if (!p) {
    fclose(f);
    return xd_fail(e, "%s: out of memory reading %zu bytes", path, n);
  }
  size_t got = fread(p, 1, n, f);
  fclose(f);
  if (got != n) {
    free(p);
    return xd_fail(e, "%s: short read (%zu of %zu bytes)", path, got, n);
  }
  *buf = p;
  *len = n;
  return 0;
}

/* Entropy-coded JPEG data escapes every 0xFF, so an end-of-image marker near the end of the file is
 * the only reliable sign that it was not cut short (stb_image decodes truncated scans as grey). */
static int jpeg_truncated(const unsigned char *b, size_t n) {
  size_t from = n > 4096 ? n - 4096 : 2;
  for (size_t i = n - 1; i > from; i--)
    if (b[i - 1] == 0xFF && b[i] == 0xD9) return 0;
  return 1;
}

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* stb_image reads missing BMP pixel rows as zeros; compare the size the header implies. */
static int bmp_truncated(const unsigned char *b, size_t n, int w, int h) {
  if (n < 34) return 1;
  uint32_t offset = le32(b + 10), hsz = le32(b + 14);
  if (hsz < 40) return 0; /* old OS/2 headers: leave to stb_image */
  int bpp = b[28] | b[29] << 8;
  uint32_t compression = le32(b + 30);
  if (compression != 0 && compression != 3) return 0; /* RLE: size not implied by the header */
  uint64_t stride = (((uint64_t)w * (uint64_t)bpp + 31) / 32) * 4;
  return (uint64_t)offset + stride * (uint64_t)h > (uint64_t)n;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* stb_image's PNG header check refuses very large images with a generic error; read the IHDR ourselves
 * so that the reason given is the dimensions. */
static int png_header_dims(const unsigned char *b, size_t n, int *w, int *h) {
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n < 24 || memcmp(b, sig, 8) != 0 || memcmp(b + 12, "IHDR", 4) != 0) return 0;
  uint32_t pw = be32(b + 16), ph = be32(b + 20);
  *w = pw > 0x7fffffffu ? 0x7fffffff : (int)pw;
  *h = ph > 0x7fffffffu ? 0x7fffffff : (int)ph;
  return 1;
}

/* This stb_image version does not check that binary PNM pixel data is complete (and leaves the rest of
 * the buffer uninitialised), so compare against the size the header implies. */
static int pnm_truncated(const unsigned char *b, size_t n) {
  size_t i = 2;
  uint64_t v[3] = {0, 0, 0};
  for (int k = 0; k < 3; k++) {
    for (;;) { /* whitespace and comments */
      while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n')) i++;
      if (i < n && b[i] == '#') {
        while (i < n && b[i] != '\n') i++;
      } else {
        break;
      }
    }
    if (i >= n || b[i] < '0' || b[i] > '9') return 1;
    while (i < n && b[i] >= '0' && b[i] <= '9' && v[k] < ((uint64_t)1 << 40)) v[k] = v[k] * 10 + (uint64_t)(b[i++] - '0');
  }
  i++; /* the single whitespace before the raster */
  uint64_t need = v[0] * v[1] * (b[1] == '6' ? 3u : 1u) * (v[2] > 255 ? 2u : 1u);
  return (uint64_t)i + need > (uint64_t)n;
}

static int decode(const char *path, const unsigned char *buf, size_t len, unsigned char **pix, int *w,
                  int *h, int *c, xd_err *e) {
  if (len > (size_t)0x7fffffff) return xd_fail(e, "%s: file too large", path);
  int x = 0, y = 0, comp = 0;
  if (!stbi_info_from_memory(buf, (int)len, &x, &y, &comp) && !png_header_dims(buf, len, &x, &y))
    return xd_fail(e, "%s: not a supported image (%s)", path, stbi_failure_reason());
  if (x <= 0 || y <= 0 || x > XD_IMAGE_MAX_SIDE || y > XD_IMAGE_MAX_SIDE ||
      (uint64_t)x * (uint64_t)y > XD_IMAGE_MAX_PIXELS)
    return xd_fail(e, "%s: absurd dimensions %dx%d (limit %d per side, %u pixels)", path, x, y,
                   XD_IMAGE_MAX_SIDE, XD_IMAGE_MAX_PIXELS);
  int is_jpeg = len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF;
  int is_bmp = len >= 2 && buf[0] == 'B' && buf[1] == 'M';
  int is_pnm = len >= 2 && buf[0] == 'P' && (buf[1] == '5' || buf[1] == '6');
  if ((is_jpeg && jpeg_truncated(buf, len)) || (is_bmp && bmp_truncated(buf, len, x, y)) ||
      (is_pnm && pnm_truncated(buf, len)))
    return xd_fail(e, "%s: truncated %s file", path, is_jpeg ? "JPEG" : is_bmp ? "BMP" : "PNM");
  unsigned char *p = stbi_load_from_memory(buf, (int)len, w, h, c, 0);
  if (!p) return xd_fail(e, "%s: corrupt image (%s)", path, stbi_failure_reason());
  if (*w != x || *h != y) {
    stbi_image_free(p);
    return xd_fail(e, "%s: corrupt image (header and data disagree on size)", path);
  }
  *pix = p;
  return 0;
}

/* BT.601 luma, rounded; alpha ignored. */
static void to_gray(const unsigned char *p, size_t npix, int c, uint8_t *g) {
  if (c <= 2) {
    for (size_t i = 0; i < npix; i++) g[i] = p[i * (size_t)c];
    return;
  }
  for (size_t i = 0; i < npix; i++) {
    const unsigned char *q = p + i * (size_t)c;
    g[i] = (uint8_t)((299u * q[0] + 587u * q[1] + 114u * q[2] + 500u) / 1000u);
  }
}

int xd_image_load_gray(const char *path, int size, uint8_t *out, xd_err *e) {
  if (size <= 0) return xd_fail(e, "%s: invalid output size %d", path, size);
  unsigned char *buf = NULL;
  size_t len = 0;
  XD_TRY(read_whole_file(path, &buf, &len, e));
  unsigned char *pix = NULL;
  int w = 0, h = 0, c = 0;
  int rc = decode(path, buf, len, &pix, &w, &h, &c, e);
  free(buf);
  if (rc != 0) return -1;
  size_t npix = (size_t)w * (size_t)h;
  uint8_t *gray = (c == 1) ? pix : malloc(npix);
  if (!gray) {
    stbi_image_free(pix);
    return xd_fail(e, "%s: out of memory for %dx%d image", path, w, h);
  }
  if (c != 1) to_gray(pix, npix, c, gray);
  xd_image_resize_gray(gray, w, h, out, size, size);
  if (gray != pix) free(gray);
  stbi_image_free(pix);
  return 0;
}

/* One axis of the separable resize: output sample i is sum_k w[k] * src[idx[k]] over k in
 * [start[i], start[i+1]). Weights are normalised so constant input stays exactly constant. */
typedef struct {
  int *start, *idx;
  float *w;
} axis_weights;

static void axis_free(axis_weights *a) {
  free(a->start);
  free(a->idx);
  free(a->w);
}

static int axis_build(axis_weights *a, int sn, int dn) {
  /* Area: each output covers sn/dn source pixels, touching at most ceil(sn/dn)+1 of them. */
  int per = sn > dn ? sn / dn + 2 : 2;
  a->start = malloc(sizeof(int) * (size_t)(dn + 1));
  a->idx = malloc(sizeof(int) * (size_t)dn * (size_t)per);
  a->w = malloc(sizeof(float) * (size_t)dn * (size_t)per);
  if (!a->start || !a->idx || !a->w) return -1;
  int k = 0;
  for (int i = 0; i < dn; i++) {
    a->start[i] = k;
    int k0 = k;
    if (sn > dn) { /* shrink: exact overlap of [i*sn/dn, (i+1)*sn/dn) with each source pixel */
      double lo = (double)i * sn / dn, hi = (double)(i + 1) * sn / dn;
      for (int s = (int)floor(lo); s < sn && s < hi; s++) {
        double ov = fmin(hi, s + 1.0) - fmax(lo, (double)s);
        if (ov <= 1e-12) continue;
        a->idx[k] = s;
        a->w[k++] = (float)ov;
      }
    } else if (sn == dn) {
      a->idx[k] = i;
      a->w[k++] = 1.0f;
    } else { /* enlarge: bilinear on pixel centres, edges clamped */
      double x = ((double)i + 0.5) * sn / dn - 0.5;
      if (x < 0) x = 0;
      if (x > sn - 1) x = sn - 1;
      int s0 = (int)floor(x);
      double f = x - s0;
      a->idx[k] = s0;
      a->w[k++] = (float)(1.0 - f);
      if (f > 0 && s0 + 1 < sn) {
        a->idx[k] = s0 + 1;
        a->w[k++] = (float)f;
      }
    }
    double sum = 0;
    for (int j = k0; j < k; j++) sum += a->w[j];
    for (int j = k0; j < k; j++) a->w[j] = (float)(a->w[j] / sum);
  }
  a->start[dn] = k;
  return 0;
}

static uint8_t to_u8(float v) {
  if (v <= 0.0f) return 0;
  if (v >= 255.0f) return 255;
  return (uint8_t)(v + 0.5f);
}

void xd_image_resize_gray(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh) {
  axis_weights ax = {0}, ay = {0};
  float *tmp = malloc(sizeof(float) * ((size_t)sh + 1) * (size_t)dw);
  if (!tmp || axis_build(&ax, sw, dw) != 0 || axis_build(&ay, sh, dh) != 0) {
    /* Allocation of a few small tables failed: nearest neighbour needs no memory. */
    for (int y = 0; y < dh; y++)
      for (int x = 0; x < dw; x++)
        dst[(size_t)y * dw + x] = src[(size_t)(y * (int64_t)sh / dh) * sw + (size_t)(x * (int64_t)sw / dw)];
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return;
  }
  for (int y = 0; y < sh; y++) {
    const uint8_t *row = src + (size_t)y * sw;
    float *t = tmp + (size_t)y * dw;
    for (int x = 0; x < dw; x++) {
      float acc = 0.0f;
      for (int k = ax.start[x]; k < ax.start[x + 1]; k++) acc += ax.w[k] * (float)row[ax.idx[k]];
      t[x] = acc;
    }
  }
  float *acc = tmp + (size_t)sh * dw; /* one output row, accumulated row by row for locality */
  for (int y = 0; y < dh; y++) {
    for (int x = 0; x < dw; x++) acc[x] = 0.0f;
    for (int k = ay.start[y]; k < ay.start[y + 1]; k++) {
      const float *t = tmp + (size_t)ay.idx[k] * dw;
      float wk = ay.w[k];
      for (int x = 0; x < dw; x++) acc[x] += wk * t[x];
    }
    uint8_t *d = dst + (size_t)y * dw;
    for (int x = 0; x < dw; x++) d[x] = to_u8(acc[x]);
  }
  free(tmp);
  axis_free(&ax);
  axis_free(&ay);
}
