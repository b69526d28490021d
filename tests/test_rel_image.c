/* Issue 9, item 7 and its kind: damaged images never give pixels from undefined memory, and are refused
 * with a reason instead of being decoded into invented pixels.
 *
 * 44 valid files of every kind src/image.c decodes (JPEG: gray, 4:2:0, 4:4:4, RGB, CMYK, YCCK,
 * progressive, arithmetic, restart markers, 1-pixel and 1-row; PNG: 1/2/4/8/16-bit gray, RGB, palette with
 * transparency, gray+alpha, RGBA, interlaced; BMP 8/24/32-bit and OS/2; GIF; PGM/PPM 8/16-bit) are made with the
 * real encoders and decoded exactly (lossless) or closely (JPEG). Then every one is cut at up to ~170
 * places and has bytes flipped at ~80 places, three ways each: every cut file must be refused, and each
 * damaged file is decoded twice, the allocator filling fresh memory with a different byte each time
 * (glibc M_PERTURB) and the output buffer pre-filled differently: both results must be identical (the
 * same refusal, or the same pixels), and every message one line of printable ASCII naming the file with
 * a non-empty reason. Where valgrind is installed (and this is not a sanitizer build) the sweep runs again
 * under memcheck (every 5th variant), which fails on any read of undefined memory.
 * Also: a FIFO and a directory are refused without blocking; absurd header dimensions (65535x65535 in
 * every format) are refused before any allocation; a decode above --mem-limit is refused; control
 * characters in a file name are escaped. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "check.h"
#include "fuzz/img_gen.h"
#include "image.h"

#if defined(__SANITIZE_ADDRESS__)
#define XD_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define XD_SANITIZED 1
#endif
#endif
#ifndef XD_SANITIZED
#define XD_SANITIZED 0
#endif

static char work[2048];
static int stride = 1; /* every stride-th damaged variant (5 under valgrind) */

static const char *wpath(const char *name) {
  static char buf[8][4200];
  static int k = 0;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%.1000s", work, name);
  return buf[k];
}

static int write_file(const char *path, const void *b, size_t n) {
  unlink(path); /* a new file, not a truncated one: ext4 flushes a truncated file on close (slow) */
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t k = n ? fwrite(b, 1, n, f) : 0;
  return (fclose(f) == 0 && k == n) ? 0 : -1;
}

enum { F_JPEG, F_PNG, F_BMP, F_GIF, F_PNM };
typedef struct {
  char name[64];
  int fmt, w, h;
  unsigned char *b;
  size_t n;
  int exact;    /* lossless: decoded pixels known exactly (expect[]) */
  int cmyk;     /* JPEG with four components */
  int rgb;      /* JPEG with three */
  uint8_t *expect;
} base_img;

static base_img bases[64];
static int nbases = 0;

static void add_base(const char *name, int fmt, int w, int h, unsigned char *b, size_t n) {
  CHECK_MSG(b != NULL && n > 0, "generating %s failed", name);
  if (!b || nbases == 64) return;
  base_img *x = &bases[nbases++];
  memset(x, 0, sizeof *x);
  snprintf(x->name, sizeof x->name, "%s", name);
  x->fmt = fmt;
  x->w = w;
  x->h = h;
  x->b = b;
  x->n = n;
}

/* The expected gray image of a lossless base, from the generator's formula. */
static void set_expect(base_img *x, int rgb, int gray_bits, int palette) {
  x->exact = 1;
  x->expect = malloc((size_t)x->w * x->h);
  for (int y = 0; y < x->h; y++)
    for (int xx = 0; xx < x->w; xx++) {
      uint8_t v = gen_luma(xx, y, x->w, x->h, rgb);
      if (gray_bits && gray_bits < 8) {
        unsigned maxv = (1u << gray_bits) - 1, q = (unsigned)gen_px(xx, y, 0, x->w, x->h) >> (8 - gray_bits);
        v = (uint8_t)(q * 255u / maxv);
      }
      if (palette) {
        unsigned np = palette, i = (unsigned)(xx + 3 * y) % np;
        unsigned r = i * 16, g = 255 - i * 15, b = i * 7 + 40;
        v = (uint8_t)((299u * r + 587u * g + 114u * b + 500u) / 1000u);
      }
      x->expect[(size_t)y * x->w + xx] = v;
    }
}

static void make_bases(void) {
  struct {
    const char *name;
    gen_jpeg_opts o;
  } jp[] = {
      {"jpeg_gray.jpg", {40, 40, GEN_JPEG_GRAY, 0, 0, 0, 0, 90}},
      {"jpeg_420.jpg", {41, 37, GEN_JPEG_YCC420, 0, 0, 0, 0, 85}},
      {"jpeg_444_restart.jpg", {40, 40, GEN_JPEG_YCC444, 0, 1, 0, 0, 92}},
      {"jpeg_rgb.jpg", {24, 24, GEN_JPEG_RGB, 0, 0, 0, 0, 90}},
      {"jpeg_cmyk.jpg", {32, 32, GEN_JPEG_CMYK, 0, 0, 0, 0, 95}},
      {"jpeg_ycck.jpg", {32, 32, GEN_JPEG_YCCK, 0, 0, 0, 0, 95}},
      {"jpeg_prog_420.jpg", {48, 40, GEN_JPEG_YCC420, 1, 0, 0, 0, 88}},
      {"jpeg_prog_gray.jpg", {40, 40, GEN_JPEG_GRAY, 1, 0, 0, 0, 90}},
      {"jpeg_arith.jpg", {40, 40, GEN_JPEG_YCC420, 0, 0, 1, 0, 90}},
      {"jpeg_arith_prog.jpg", {40, 40, GEN_JPEG_GRAY, 1, 0, 1, 0, 90}},
      {"jpeg_optimized.jpg", {40, 40, GEN_JPEG_YCC420, 0, 0, 0, 1, 90}},
      {"jpeg_1x1_gray.jpg", {1, 1, GEN_JPEG_GRAY, 0, 0, 0, 0, 90}},
      {"jpeg_1x1_420.jpg", {1, 1, GEN_JPEG_YCC420, 0, 0, 0, 0, 90}},
      {"jpeg_1x300.jpg", {1, 300, GEN_JPEG_GRAY, 0, 0, 0, 0, 90}},
      {"jpeg_300x1_prog.jpg", {300, 1, GEN_JPEG_YCC420, 1, 0, 0, 0, 90}},
  };
  for (size_t i = 0; i < sizeof jp / sizeof jp[0]; i++) {
    size_t n = 0;
    unsigned char *b = gen_jpeg(&jp[i].o, &n);
    add_base(jp[i].name, F_JPEG, jp[i].o.w, jp[i].o.h, b, n);
    if (!b) continue;
    bases[nbases - 1].cmyk = jp[i].o.kind == GEN_JPEG_CMYK || jp[i].o.kind == GEN_JPEG_YCCK;
    bases[nbases - 1].rgb = jp[i].o.kind != GEN_JPEG_GRAY && !bases[nbases - 1].cmyk;
  }
  struct {
    const char *name;
    gen_png_opts o;
    int rgb, palette;
  } pn[] = {
      {"png_gray8.png", {40, 40, PNG_COLOR_TYPE_GRAY, 8, 0, 0}, 0, 0},
      {"png_gray1.png", {33, 9, PNG_COLOR_TYPE_GRAY, 1, 0, 0}, 0, 0},
      {"png_gray2.png", {17, 17, PNG_COLOR_TYPE_GRAY, 2, 0, 0}, 0, 0},
      {"png_gray4.png", {19, 23, PNG_COLOR_TYPE_GRAY, 4, 1, 0}, 0, 0},
      {"png_gray16.png", {40, 40, PNG_COLOR_TYPE_GRAY, 16, 0, 0}, 0, 0},
      {"png_gray8_trns.png", {20, 20, PNG_COLOR_TYPE_GRAY, 8, 0, 1}, 0, 0},
      {"png_rgb8.png", {40, 40, PNG_COLOR_TYPE_RGB, 8, 0, 0}, 1, 0},
      {"png_rgb16.png", {21, 19, PNG_COLOR_TYPE_RGB, 16, 0, 0}, 1, 0},
      {"png_palette4_trns.png", {40, 40, PNG_COLOR_TYPE_PALETTE, 4, 0, 1}, 0, 16},
      {"png_palette8.png", {30, 30, PNG_COLOR_TYPE_PALETTE, 8, 1, 0}, 0, 16},
      {"png_palette1.png", {9, 9, PNG_COLOR_TYPE_PALETTE, 1, 0, 0}, 0, 2},
      {"png_gray_alpha.png", {40, 40, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, 0}, 0, 0},
      {"png_rgba8.png", {40, 40, PNG_COLOR_TYPE_RGBA, 8, 0, 0}, 1, 0},
      {"png_rgba16_interlaced.png", {23, 31, PNG_COLOR_TYPE_RGBA, 16, 1, 0}, 1, 0},
      {"png_gray8_interlaced.png", {40, 40, PNG_COLOR_TYPE_GRAY, 8, 1, 0}, 0, 0},
      {"png_1x1.png", {1, 1, PNG_COLOR_TYPE_GRAY, 8, 0, 0}, 0, 0},
      {"png_1x1_palette.png", {1, 1, PNG_COLOR_TYPE_PALETTE, 8, 0, 1}, 0, 16},
  };
  for (size_t i = 0; i < sizeof pn / sizeof pn[0]; i++) {
    size_t n = 0;
    unsigned char *b = gen_png(&pn[i].o, &n);
    add_base(pn[i].name, F_PNG, pn[i].o.w, pn[i].o.h, b, n);
    if (b) set_expect(&bases[nbases - 1], pn[i].rgb, pn[i].o.color_type == PNG_COLOR_TYPE_GRAY ? pn[i].o.depth : 0,
                      pn[i].palette);
  }
  struct {
    const char *name;
    int w, h, bits;
  } bm[] = {{"bmp24.bmp", 40, 40, 24}, {"bmp32.bmp", 40, 40, 32}, {"bmp8.bmp", 40, 40, 8},
            {"bmp8_1x1.bmp", 1, 1, 8},  {"bmp24_3x5.bmp", 3, 5, 24}};
  for (size_t i = 0; i < sizeof bm / sizeof bm[0]; i++) {
    size_t n = 0;
    unsigned char *b = gen_bmp(bm[i].w, bm[i].h, bm[i].bits, &n);
    add_base(bm[i].name, F_BMP, bm[i].w, bm[i].h, b, n);
    if (b) set_expect(&bases[nbases - 1], bm[i].bits != 8, 0, 0);
  }
  size_t n = 0;
  unsigned char *b = gen_bmp_os2(40, 40, &n);
  add_base("bmp_os2.bmp", F_BMP, 40, 40, b, n);
  if (b) set_expect(&bases[nbases - 1], 1, 0, 0);
  b = gen_gif(40, 40, &n);
  add_base("gif.gif", F_GIF, 40, 40, b, n);
  if (b) set_expect(&bases[nbases - 1], 0, 0, 0);
  b = gen_gif(1, 1, &n);
  add_base("gif_1x1.gif", F_GIF, 1, 1, b, n);
  if (b) set_expect(&bases[nbases - 1], 0, 0, 0);
  struct {
    const char *name;
    int w, h, color, b16;
  } pm[] = {{"pgm.pgm", 40, 40, 0, 0}, {"ppm.ppm", 40, 40, 1, 0}, {"pgm16.pgm", 40, 40, 0, 1}, {"pgm_1x1.pgm", 1, 1, 0, 0}};
  for (size_t i = 0; i < sizeof pm / sizeof pm[0]; i++) {
    b = gen_pnm(pm[i].w, pm[i].h, pm[i].color, pm[i].b16, &n);
    add_base(pm[i].name, F_PNM, pm[i].w, pm[i].h, b, n);
    if (b) set_expect(&bases[nbases - 1], pm[i].color, 0, 0);
  }
}

/* One line of printable ASCII naming the file, with a non-empty reason. */
static int msg_sane(const char *msg, const char *path) {
  size_t n = strlen(msg);
  if (n < 5 || n > 600) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)msg[i] < 0x20 || (unsigned char)msg[i] > 0x7e) return 0;
  if (strstr(msg, "()") || strstr(msg, "( ") || msg[n - 1] == ':' || msg[n - 1] == ' ') return 0;
  return path == NULL || strncmp(msg, path, strlen(path)) == 0;
}

/* Decodes the file at path twice: fresh malloc memory filled with 0x11 then 0xEE, the output buffer with
 * 0x00 then 0xFF. Returns 1 accepted, 0 refused, -1 the two runs disagree (bytes or message). */
static int decode_twice(const char *path, int size, uint8_t *out, char *msg, size_t msgn) {
  static uint8_t o2[64 * 64];
  xd_err e1 = {{0}}, e2 = {{0}};
  mallopt(M_PERTURB, 0x11);
  memset(out, 0x00, (size_t)size * size);
  int r1 = xd_image_load_gray(path, size, out, &e1);
  mallopt(M_PERTURB, 0xEE);
  memset(o2, 0xFF, (size_t)size * size);
  int r2 = xd_image_load_gray(path, size, o2, &e2);
  mallopt(M_PERTURB, 0);
  snprintf(msg, msgn, "%s", r1 ? e1.msg : "");
  if (r1 != r2) return -1;
  if (r1 != 0) return strcmp(e1.msg, e2.msg) == 0 ? 0 : -1;
  return memcmp(out, o2, (size_t)size * size) == 0 ? 1 : -1;
}

static long n_variants = 0, n_refused = 0, n_accepted = 0;

static void damaged(const base_img *x, const unsigned char *b, size_t n, int must_refuse, const char *how) {
  const char *path = wpath("damaged.img");
  if (write_file(path, b, n) != 0) {
    CHECK_MSG(0, "cannot write %s", path);
    return;
  }
  uint8_t out[32 * 32];
  char msg[XD_ERR_MAX];
  int r = decode_twice(path, 32, out, msg, sizeof msg);
  n_variants++;
  if (r == 1) n_accepted++;
  if (r == 0) n_refused++;
  CHECK_MSG(r >= 0, "%s %s: two decodes differ (undefined memory?): %s", x->name, how, msg);
  if (must_refuse) CHECK_MSG(r == 0, "%s %s: a cut file was accepted", x->name, how);
  if (r == 0) CHECK_MSG(msg_sane(msg, path), "%s %s: bad message: '%s'", x->name, how, msg);
}

static void sweep(void) {
  for (int i = 0; i < nbases; i++) {
    const base_img *x = &bases[i];
    unsigned char *v = malloc(x->n);
    /* cuts: everywhere in small files, ~150 places plus the last 16 bytes in larger ones */
    size_t step = x->n > 150 ? x->n / 150 : 1;
    long k = 0;
    for (size_t t = 1; t < x->n; t += (t + 16 >= x->n ? 1 : step)) {
      if (k++ % stride) continue;
      char how[64];
      snprintf(how, sizeof how, "cut at %zu of %zu", t, x->n);
      damaged(x, x->b, t, 1, how);
    }
    /* flips at ~80 places, three masks each */
    static const unsigned char masks[3] = {0x01, 0x10, 0xFF};
    size_t fstep = x->n > 80 ? x->n / 80 : 1;
    for (size_t pos = 0; pos < x->n; pos += fstep)
      for (int m = 0; m < 3; m++) {
        if (k++ % stride) continue;
        memcpy(v, x->b, x->n);
        v[pos] ^= masks[m];
        char how[64];
        snprintf(how, sizeof how, "byte %zu ^ 0x%02x", pos, masks[m]);
        damaged(x, v, x->n, 0, how);
      }
    free(v);
  }
}

static void valid_decodes(void) {
  for (int i = 0; i < nbases; i++) {
    const base_img *x = &bases[i];
    const char *path = wpath(x->name);
    CHECK(write_file(path, x->b, x->n) == 0);
    /* identity size where the file is square: the decoded pixels themselves */
    int size = x->w == x->h ? x->w : 24;
    uint8_t *out = malloc((size_t)size * size);
    xd_err e = {{0}};
    int rc = xd_image_load_gray(path, size, out, &e);
    CHECK_MSG(rc == 0, "%s refused: %s", x->name, e.msg);
    if (rc == 0 && x->w == x->h && x->exact) {
      int bad = 0;
      for (int k = 0; k < size * size; k++) bad += out[k] != x->expect[k];
      CHECK_MSG(bad == 0, "%s: %d of %d pixels differ from the encoded ones (first %d vs %d)", x->name, bad,
                size * size, out[0], x->expect[0]);
    }
    if (rc == 0 && x->w == x->h && x->fmt == F_JPEG) { /* lossy: close to what was encoded */
      double sum = 0;
      for (int yy = 0; yy < size; yy++)
        for (int xx = 0; xx < size; xx++) {
          int want;
          if (x->cmyk) {
            unsigned K = gen_px(xx, yy, 3, x->w, x->h), c[3];
            for (int ch = 0; ch < 3; ch++) {
              unsigned t = gen_px(xx, yy, ch, x->w, x->h) * K + 128;
              c[ch] = (t + (t >> 8)) >> 8;
            }
            want = (int)((299u * c[0] + 587u * c[1] + 114u * c[2] + 500u) / 1000u);
          } else {
            want = gen_luma(xx, yy, x->w, x->h, x->rgb);
          }
          sum += abs(out[yy * size + xx] - want);
        }
      CHECK_MSG(sum / (size * size) < 4.0, "%s: mean error %.2f grey levels", x->name, sum / (size * size));
    }
    /* and at another size, twice under different heap garbage: the same bytes */
    uint8_t o1[32 * 32];
    char msg[XD_ERR_MAX];
    CHECK_MSG(decode_twice(path, 32, o1, msg, sizeof msg) == 1, "%s: not accepted identically twice: %s", x->name, msg);
    free(out);
  }
}

/* Overwrites the width/height of a JPEG's SOF, a PNG's IHDR (libpng's CRC is not reached: the size is
 * refused first), a BMP, GIF or PNM header, so every format claims 65535x65535. */
static void absurd_dimensions(void) {
  for (int i = 0; i < nbases; i++) {
    const base_img *x = &bases[i];
    if (strcmp(x->name, "jpeg_gray.jpg") && strcmp(x->name, "png_gray8.png") && strcmp(x->name, "bmp24.bmp") &&
        strcmp(x->name, "gif.gif") && strcmp(x->name, "pgm.pgm"))
      continue;
    unsigned char *v = malloc(x->n + 64);
    memcpy(v, x->b, x->n);
    size_t n = x->n;
    if (x->fmt == F_JPEG) {
      for (size_t k = 2; k + 9 < n; k++)
        if (v[k] == 0xFF && v[k + 1] == 0xC0) {
          v[k + 5] = v[k + 6] = v[k + 7] = v[k + 8] = 0xFF;
          break;
        }
    } else if (x->fmt == F_PNG) {
      v[16] = v[17] = v[20] = v[21] = 0;
      v[18] = v[19] = v[22] = v[23] = 0xFF;
    } else if (x->fmt == F_BMP) {
      v[18] = v[19] = v[22] = v[23] = 0xFF;
    } else if (x->fmt == F_GIF) {
      v[6] = v[7] = v[8] = v[9] = 0xFF;
    } else {
      n = (size_t)snprintf((char *)v, x->n + 64, "P5\n65535 65535\n255\n");
    }
    const char *path = wpath("absurd.img");
    CHECK(write_file(path, v, n) == 0);
    uint8_t out[16 * 16];
    xd_err e = {{0}};
    double t0 = xd_now();
    int rc = xd_image_load_gray(path, 16, out, &e);
    CHECK_MSG(rc == -1 && strstr(e.msg, "absurd dimensions 65535x65535"), "%s at 65535x65535: %s", x->name,
              rc ? e.msg : "accepted");
    CHECK_MSG(xd_now() - t0 < 2.0, "%s: refusing took %.1f s", x->name, xd_now() - t0);
    CHECK(msg_sane(e.msg, path));
    /* a zero dimension */
    if (x->fmt == F_JPEG || x->fmt == F_GIF) {
      memcpy(v, x->b, x->n);
      if (x->fmt == F_GIF) v[8] = v[9] = 0;
      for (size_t k = 2; x->fmt == F_JPEG && k + 9 < x->n; k++)
        if (v[k] == 0xFF && v[k + 1] == 0xC0) {
          v[k + 5] = v[k + 6] = 0;
          break;
        }
      CHECK(write_file(path, v, x->n) == 0);
      rc = xd_image_load_gray(path, 16, out, &e);
      CHECK_MSG(rc == -1 && msg_sane(e.msg, path), "%s with a zero side: %s", x->name, rc ? e.msg : "accepted");
    }
    free(v);
  }
}

static const base_img *find_base(const char *name) {
  for (int i = 0; i < nbases; i++)
    if (!strcmp(bases[i].name, name)) return &bases[i];
  return NULL;
}

static void special_files(void) {
  uint8_t out[16 * 16];
  xd_err e = {{0}};
  /* a FIFO: refused at once (a blocking open would hang here; the alarm turns that into a failure) */
  const char *fifo = wpath("pipe.jpg");
  CHECK(mkfifo(fifo, 0600) == 0);
  alarm(20);
  int rc = xd_image_load_gray(fifo, 16, out, &e);
  alarm(0);
  CHECK_MSG(rc == -1 && strstr(e.msg, "not a regular file (a FIFO)") && msg_sane(e.msg, fifo), "FIFO: %s", e.msg);
  const char *dir = wpath("dir.png");
  CHECK(mkdir(dir, 0700) == 0);
  rc = xd_image_load_gray(dir, 16, out, &e);
  CHECK_MSG(rc == -1 && strstr(e.msg, "not a regular file (a directory)") && msg_sane(e.msg, dir), "dir: %s", e.msg);
  rc = xd_image_load_gray(wpath("missing.png"), 16, out, &e);
  CHECK_MSG(rc == -1 && strstr(e.msg, "cannot open: No such file or directory"), "missing: %s", e.msg);

  /* a name with a newline and a control character: escaped, the message stays one line */
  const base_img *g = find_base("jpeg_gray.jpg");
  if (g) {
    const char *odd = wpath("bad\nname\001.jpg");
    CHECK(write_file(odd, g->b, g->n / 2) == 0);
    rc = xd_image_load_gray(odd, 16, out, &e);
    CHECK_MSG(rc == -1 && msg_sane(e.msg, NULL) && strstr(e.msg, "bad\\x0aname\\x01.jpg: truncated JPEG file"),
              "odd name: %s", e.msg);
    /* trailing bytes after the end-of-image marker are not damage */
    unsigned char *v = malloc(g->n + 100);
    memcpy(v, g->b, g->n);
    memset(v + g->n, 0x55, 100);
    uint8_t a[16 * 16], b2[16 * 16];
    CHECK(write_file(wpath("tail.jpg"), v, g->n + 100) == 0);
    CHECK(write_file(wpath("clean.jpg"), g->b, g->n) == 0);
    CHECK(xd_image_load_gray(wpath("tail.jpg"), 16, a, &e) == 0);
    CHECK(xd_image_load_gray(wpath("clean.jpg"), 16, b2, &e) == 0 && memcmp(a, b2, sizeof a) == 0);
    /* a lossless JPEG (SOF3) is refused as unsupported */
    memcpy(v, g->b, g->n);
    for (size_t k = 2; k + 1 < g->n; k++)
      if (v[k] == 0xFF && v[k + 1] == 0xC0) {
        v[k + 1] = 0xC3;
        break;
      }
    CHECK(write_file(wpath("sof3.jpg"), v, g->n) == 0);
    rc = xd_image_load_gray(wpath("sof3.jpg"), 16, out, &e);
    CHECK_MSG(rc == -1 && strstr(e.msg, "JPEG") && msg_sane(e.msg, wpath("sof3.jpg")), "SOF3: %s", e.msg);
    free(v);
  }
  /* a progressive JPEG whose last scan repeats 600 times: refused, quickly */
  const base_img *p = find_base("jpeg_prog_gray.jpg");
  if (p) {
    size_t last = 0;
    for (size_t k = 2; k + 1 < p->n; k++)
      if (p->b[k] == 0xFF && p->b[k + 1] == 0xDA) last = k;
    size_t seg = p->n - 2 - last, n = last + 600 * seg + 2;
    unsigned char *v = malloc(n);
    memcpy(v, p->b, last);
    for (int r = 0; r < 600; r++) memcpy(v + last + (size_t)r * seg, p->b + last, seg);
    v[n - 2] = 0xFF;
    v[n - 1] = 0xD9;
    CHECK(write_file(wpath("scans.jpg"), v, n) == 0);
    double t0 = xd_now();
    rc = xd_image_load_gray(wpath("scans.jpg"), 16, out, &e);
    CHECK_MSG(rc == -1 && strstr(e.msg, "corrupt JPEG") && xd_now() - t0 < 5, "600 scans: %s", rc ? e.msg : "accepted");
    free(v);
  }
  /* a PNG whose IDAT fails its CRC */
  const base_img *q = find_base("png_gray8.png");
  if (q) {
    unsigned char *v = malloc(q->n);
    memcpy(v, q->b, q->n);
    for (size_t k = 8; k + 8 < q->n; k++)
      if (!memcmp(v + k, "IDAT", 4)) { /* flip a bit of the stored CRC itself: the data are intact */
        uint32_t len = (uint32_t)v[k - 4] << 24 | (uint32_t)v[k - 3] << 16 | (uint32_t)v[k - 2] << 8 | v[k - 1];
        if (k + 4 + len < q->n) v[k + 4 + len] ^= 0x40;
        break;
      }
    CHECK(write_file(wpath("crc.png"), v, q->n) == 0);
    rc = xd_image_load_gray(wpath("crc.png"), 16, out, &e);
    CHECK_MSG(rc == -1 && strstr(e.msg, "corrupt PNG (IDAT: CRC error)"), "IDAT CRC: %s", rc ? e.msg : "accepted");
    free(v);
  }
  /* PNM headers whose numbers stb_image would overflow an int on (UBSan found it) or with maxval 0 */
  static const char *pnm_bad[] = {"P5\n28888888888888888888 5\n255\n\x01\x02", "P6 4 4 0\n0123456789abcdef0123456789abcdef",
                                  "P5\n4\v4\n99999999999\n0123456789abcdef"};
  for (int i = 0; i < 3; i++) {
    CHECK(write_file(wpath("bad.pgm"), pnm_bad[i], strlen(pnm_bad[i])) == 0);
    rc = xd_image_load_gray(wpath("bad.pgm"), 16, out, &e);
    CHECK_MSG(rc == -1 && strstr(e.msg, "corrupt PNM") && msg_sane(e.msg, wpath("bad.pgm")), "PNM header %d: %s", i,
              rc ? e.msg : "accepted");
  }
  /* the memory budget: a 200x200 decode under a 64 KiB limit */
  gen_png_opts po = {200, 200, PNG_COLOR_TYPE_GRAY, 8, 0, 0};
  size_t n = 0;
  unsigned char *big = gen_png(&po, &n);
  CHECK(big && write_file(wpath("big.png"), big, n) == 0);
  xd_mem_limit_set(64 << 10);
  rc = xd_image_load_gray(wpath("big.png"), 16, out, &e);
  xd_mem_limit_set(0);
  CHECK_MSG(rc == -1 && strstr(e.msg, "above the memory limit") && msg_sane(e.msg, wpath("big.png")), "mem limit: %s",
            rc ? e.msg : "accepted");
  CHECK(xd_image_load_gray(wpath("big.png"), 16, out, &e) == 0);
  free(big);
}

int main(int argc, char **argv) {
  snprintf(work, sizeof work, "%s", argc > 2 ? argv[2] : "/tmp/xd_test_rel_image");
  int memcheck_child = argc > 3 && !strcmp(argv[3], "--memcheck");
  if (!memcheck_child) {
    char cmd[2100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
    if (system(cmd) != 0) return 1;
  }
  xd_err e;
  if (xd_mkdir_p(work, &e) != 0) return 1;
  make_bases();
  /* big buffers come from the heap too (not fresh zero pages), so M_PERTURB reaches them */
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  if (memcheck_child) {
    stride = 5;
    sweep();
    printf("memcheck pass: %ld damaged files decoded\n", n_variants);
    return check_failures ? 1 : 0;
  }
  valid_decodes();
  absurd_dimensions();
  special_files();
  double t0 = xd_now();
  sweep();
  printf("%d valid files; %ld damaged variants: %ld refused, %ld accepted (all identical twice) in %.1f s\n", nbases,
         n_variants, n_refused, n_accepted, xd_now() - t0);
  if (XD_SANITIZED) {
    printf("sanitizer build: the valgrind pass is left to the plain build\n");
  } else if (system("command -v valgrind >/dev/null 2>&1") != 0) {
    printf("valgrind not installed: memcheck pass skipped (scripts/deps.sh --test installs it)\n");
  } else {
    char cmd[9000];
    snprintf(cmd, sizeof cmd,
             "valgrind -q --error-exitcode=99 --undef-value-errors=yes '%s' '%s' '%s' --memcheck 2>'%s/valgrind.txt'",
             argv[0], argc > 1 ? argv[1] : ".", work, work);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "valgrind memcheck pass failed (status %d): see %s/valgrind.txt", rc, work);
  }
  return check_done("rel_image");
}
