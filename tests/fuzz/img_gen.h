/* Image files of every kind src/image.c decodes, made in memory with the real encoders (libjpeg-turbo,
 * libpng, stb_image_write) or, for GIF/PNM/8-bit BMP, by a few lines of header writing. Used by
 * tests/test_rel_image.c (the corruption sweep) and to write the fuzz seed corpus (tests/fuzz/corpus/image).
 * Every generator returns a malloc'd buffer (free it) or NULL. */
#ifndef XD_TEST_IMG_GEN_H
#define XD_TEST_IMG_GEN_H
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>
#include <stb_image_write.h>

typedef struct {
  unsigned char *b;
  size_t n, cap;
} gen_buf;

static inline void gen_put(gen_buf *g, const void *p, size_t n) {
  if (!g->b && g->cap == (size_t)-1) return; /* an earlier allocation failed */
  if (g->n + n > g->cap) {
    size_t cap = g->cap ? g->cap : 256;
    while (cap < g->n + n) cap *= 2;
    unsigned char *nb = realloc(g->b, cap);
    if (!nb) {
      free(g->b);
      g->b = NULL;
      g->cap = (size_t)-1;
      return;
    }
    g->b = nb;
    g->cap = cap;
  }
  memcpy(g->b + g->n, p, n);
  g->n += n;
}
static inline void gen_u8(gen_buf *g, unsigned v) {
  unsigned char c = (unsigned char)v;
  gen_put(g, &c, 1);
}
static inline void gen_le16(gen_buf *g, unsigned v) {
  gen_u8(g, v & 0xff);
  gen_u8(g, (v >> 8) & 0xff);
}
static inline void gen_le32(gen_buf *g, uint32_t v) {
  gen_le16(g, v & 0xffff);
  gen_le16(g, v >> 16);
}

/* A deterministic test picture: channel k of pixel (x, y), a gradient plus a little texture. */
static inline uint8_t gen_px(int x, int y, int k, int w, int h) {
  unsigned v = (unsigned)(30 + 150 * x / (w > 1 ? w - 1 : 1) + 40 * y / (h > 1 ? h - 1 : 1));
  v += (unsigned)((x * 7 + y * 13 + k * 29) % 23) + (unsigned)k * 17;
  return (uint8_t)(v > 255 ? 255 : v);
}
static inline uint8_t *gen_pixels(int w, int h, int comps) {
  uint8_t *p = malloc((size_t)w * h * comps);
  if (!p) return NULL;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < comps; k++) p[((size_t)y * w + x) * comps + k] = gen_px(x, y, k, w, h);
  return p;
}

/* ---- JPEG (libjpeg-turbo's encoder) ---- */
enum { GEN_JPEG_GRAY, GEN_JPEG_YCC420, GEN_JPEG_YCC444, GEN_JPEG_RGB, GEN_JPEG_CMYK, GEN_JPEG_YCCK };
typedef struct {
  int w, h, kind, progressive, restart_rows, arith, optimize, quality;
} gen_jpeg_opts;

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jb;
} gen_jerr;
static inline void gen_jerr_exit(j_common_ptr c) { longjmp(((gen_jerr *)c->err)->jb, 1); }

static inline unsigned char *gen_jpeg(const gen_jpeg_opts *o, size_t *n) {
  int comps = (o->kind == GEN_JPEG_GRAY) ? 1 : (o->kind == GEN_JPEG_CMYK || o->kind == GEN_JPEG_YCCK) ? 4 : 3;
  uint8_t *volatile px = gen_pixels(o->w, o->h, comps); /* volatile: read after longjmp */
  if (!px) return NULL;
  struct jpeg_compress_struct c;
  gen_jerr je;
  unsigned char *out = NULL;
  unsigned long len = 0;
  c.err = jpeg_std_error(&je.pub);
  je.pub.error_exit = gen_jerr_exit;
  if (setjmp(je.jb)) {
    jpeg_destroy_compress(&c);
    free(px);
    free(out);
    return NULL;
  }
  jpeg_create_compress(&c);
  jpeg_mem_dest(&c, &out, &len);
  c.image_width = (JDIMENSION)o->w;
  c.image_height = (JDIMENSION)o->h;
  c.input_components = comps;
  c.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&c);
  if (o->kind == GEN_JPEG_RGB) jpeg_set_colorspace(&c, JCS_RGB);
  if (o->kind == GEN_JPEG_YCCK) jpeg_set_colorspace(&c, JCS_YCCK);
  if (o->kind == GEN_JPEG_YCC444) c.comp_info[0].h_samp_factor = c.comp_info[0].v_samp_factor = 1;
  jpeg_set_quality(&c, o->quality ? o->quality : 90, TRUE);
  if (o->progressive) jpeg_simple_progression(&c);
  c.restart_in_rows = o->restart_rows;
  c.arith_code = o->arith ? TRUE : FALSE;
  c.optimize_coding = o->optimize ? TRUE : FALSE;
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = px + (size_t)c.next_scanline * o->w * comps;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  free(px);
  *n = len;
  return out;
}

/* ---- PNG (libpng's encoder) ---- */
typedef struct {
  int w, h, color_type, depth, interlace, trns;
} gen_png_opts;

static inline void gen_png_write(png_structp p, png_bytep d, size_t n) { gen_put(png_get_io_ptr(p), d, n); }
static inline void gen_png_flush(png_structp p) { (void)p; }

static inline unsigned char *gen_png(const gen_png_opts *o, size_t *n) {
  int ch = o->color_type == PNG_COLOR_TYPE_GRAY         ? 1
           : o->color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
           : o->color_type == PNG_COLOR_TYPE_RGB        ? 3
           : o->color_type == PNG_COLOR_TYPE_RGBA       ? 4
                                                        : 1; /* palette: one index */
  size_t rowbytes = ((size_t)o->w * ch * o->depth + 7) / 8;
  unsigned char *rowsbuf = calloc((size_t)o->h, rowbytes);
  png_bytep *rows = malloc(sizeof(png_bytep) * (size_t)o->h);
  gen_buf g = {0};
  png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = p ? png_create_info_struct(p) : NULL;
  if (!rowsbuf || !rows || !info || setjmp(png_jmpbuf(p))) {
    png_destroy_write_struct(&p, &info);
    free(rowsbuf);
    free(rows);
    free(g.b);
    return NULL;
  }
  unsigned maxv = (1u << o->depth) - 1;
  for (int y = 0; y < o->h; y++) {
    rows[y] = rowsbuf + (size_t)y * rowbytes;
    for (int x = 0; x < o->w; x++)
      for (int k = 0; k < ch; k++) {
        unsigned v = gen_px(x, y, k, o->w, o->h);
        if (o->color_type == PNG_COLOR_TYPE_PALETTE) v = (unsigned)(x + 3 * y) % (maxv + 1 < 16 ? maxv + 1 : 16);
        else if (o->depth == 16) v = v << 8 | (unsigned)((x * 31 + y) & 0xff);
        else if (o->depth < 8) v >>= 8 - o->depth;
        size_t bit = ((size_t)x * ch + k) * o->depth;
        if (o->depth == 16) {
          rows[y][bit / 8] = (png_byte)(v >> 8);
          rows[y][bit / 8 + 1] = (png_byte)v;
        } else {
          rows[y][bit / 8] |= (png_byte)((v & maxv) << (8 - o->depth - bit % 8));
        }
      }
  }
  png_set_write_fn(p, &g, gen_png_write, gen_png_flush);
  png_set_IHDR(p, info, (png_uint_32)o->w, (png_uint_32)o->h, o->depth, o->color_type,
               o->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (o->color_type == PNG_COLOR_TYPE_PALETTE) {
    png_color pal[16];
    png_byte alpha[16];
    for (int i = 0; i < 16; i++) {
      pal[i].red = (png_byte)(i * 16);
      pal[i].green = (png_byte)(255 - i * 15);
      pal[i].blue = (png_byte)(i * 7 + 40);
      alpha[i] = (png_byte)(255 - i * 10);
    }
    int np = (int)maxv + 1 < 16 ? (int)maxv + 1 : 16;
    png_set_PLTE(p, info, pal, np);
    if (o->trns) png_set_tRNS(p, info, alpha, np, NULL);
  } else if (o->trns && (o->color_type == PNG_COLOR_TYPE_GRAY || o->color_type == PNG_COLOR_TYPE_RGB)) {
    png_color_16 t = {0, 40, 40, 40, 40};
    png_set_tRNS(p, info, NULL, 0, &t);
  }
  png_write_info(p, info);
  png_write_image(p, rows);
  png_write_end(p, info);
  png_destroy_write_struct(&p, &info);
  free(rowsbuf);
  free(rows);
  *n = g.n;
  return g.b;
}

/* ---- BMP: stb_image_write (24/32-bit) or an 8-bit paletted one written here ---- */
static inline void gen_stbw(void *ctx, void *d, int n) { gen_put(ctx, d, (size_t)n); }

static inline unsigned char *gen_bmp(int w, int h, int bits, size_t *n) {
  gen_buf g = {0};
  if (bits == 24 || bits == 32) {
    uint8_t *px = gen_pixels(w, h, bits / 8);
    if (!px) return NULL;
    int ok = stbi_write_bmp_to_func(gen_stbw, &g, w, h, bits / 8, px);
    free(px);
    if (!ok) {
      free(g.b);
      return NULL;
    }
    *n = g.n;
    return g.b;
  }
  uint32_t stride = ((uint32_t)w + 3) & ~3u, off = 14 + 40 + 256 * 4;
  gen_put(&g, "BM", 2);
  gen_le32(&g, off + stride * (uint32_t)h);
  gen_le32(&g, 0);
  gen_le32(&g, off);
  gen_le32(&g, 40);
  gen_le32(&g, (uint32_t)w);
  gen_le32(&g, (uint32_t)h);
  gen_le16(&g, 1);
  gen_le16(&g, 8);
  for (int i = 0; i < 6; i++) gen_le32(&g, i == 4 ? 256 : 0); /* compression .. colours used */
  for (int i = 0; i < 256; i++) {
    gen_u8(&g, (unsigned)i); /* blue, green, red, 0: a gray ramp */
    gen_u8(&g, (unsigned)i);
    gen_u8(&g, (unsigned)i);
    gen_u8(&g, 0);
  }
  for (int y = h - 1; y >= 0; y--) {
    for (int x = 0; x < w; x++) gen_u8(&g, gen_px(x, y, 0, w, h));
    for (uint32_t x = (uint32_t)w; x < stride; x++) gen_u8(&g, 0);
  }
  *n = g.n;
  return g.b;
}

/* An OS/2 1.x BMP (12-byte core header), 24-bit. */
static inline unsigned char *gen_bmp_os2(int w, int h, size_t *n) {
  gen_buf g = {0};
  uint32_t stride = ((uint32_t)w * 3 + 3) & ~3u, off = 14 + 12;
  gen_put(&g, "BM", 2);
  gen_le32(&g, off + stride * (uint32_t)h);
  gen_le32(&g, 0);
  gen_le32(&g, off);
  gen_le32(&g, 12);
  gen_le16(&g, (unsigned)w);
  gen_le16(&g, (unsigned)h);
  gen_le16(&g, 1);
  gen_le16(&g, 24);
  for (int y = h - 1; y >= 0; y--) {
    for (int x = 0; x < w; x++)
      for (int k = 2; k >= 0; k--) gen_u8(&g, gen_px(x, y, k, w, h)); /* blue, green, red */
    for (uint32_t x = (uint32_t)w * 3; x < stride; x++) gen_u8(&g, 0);
  }
  *n = g.n;
  return g.b;
}

/* ---- GIF: 8-bit gray palette, LZW with a clear code every 250 pixels so codes stay 9 bits ---- */
static inline unsigned char *gen_gif(int w, int h, size_t *n) {
  gen_buf g = {0}, lzw = {0};
  gen_put(&g, "GIF89a", 6);
  gen_le16(&g, (unsigned)w);
  gen_le16(&g, (unsigned)h);
  gen_u8(&g, 0xF7); /* global colour table of 256 entries */
  gen_u8(&g, 0);
  gen_u8(&g, 0);
  for (int i = 0; i < 256; i++) {
    gen_u8(&g, (unsigned)i);
    gen_u8(&g, (unsigned)i);
    gen_u8(&g, (unsigned)i);
  }
  gen_u8(&g, 0x2C);
  gen_le16(&g, 0);
  gen_le16(&g, 0);
  gen_le16(&g, (unsigned)w);
  gen_le16(&g, (unsigned)h);
  gen_u8(&g, 0);
  gen_u8(&g, 8); /* LZW minimum code size */
  uint32_t acc = 0;
  int nbits = 0, since = 0;
#define GEN_GIF_CODE(c)                        \
  do {                                         \
    acc |= (uint32_t)(c) << nbits;             \
    nbits += 9;                                \
    while (nbits >= 8) {                       \
      gen_u8(&lzw, acc & 0xff);                \
      acc >>= 8;                               \
      nbits -= 8;                              \
    }                                          \
  } while (0)
  GEN_GIF_CODE(256);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      if (since == 250) {
        GEN_GIF_CODE(256);
        since = 0;
      }
      GEN_GIF_CODE(gen_px(x, y, 0, w, h));
      since++;
    }
  GEN_GIF_CODE(257);
#undef GEN_GIF_CODE
  if (nbits > 0) gen_u8(&lzw, acc & 0xff);
  for (size_t i = 0; i < lzw.n; i += 255) {
    size_t k = lzw.n - i < 255 ? lzw.n - i : 255;
    gen_u8(&g, (unsigned)k);
    gen_put(&g, lzw.b + i, k);
  }
  free(lzw.b);
  gen_u8(&g, 0);
  gen_u8(&g, 0x3B);
  *n = g.n;
  return g.b;
}

/* ---- PGM (P5) / PPM (P6), 8 or 16 bits ---- */
static inline unsigned char *gen_pnm(int w, int h, int color, int bits16, size_t *n) {
  gen_buf g = {0};
  char hdr[64];
  int k = snprintf(hdr, sizeof hdr, "P%c\n# xray-dp test\n%d %d\n%d\n", color ? '6' : '5', w, h, bits16 ? 65535 : 255);
  gen_put(&g, hdr, (size_t)k);
  int ch = color ? 3 : 1;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < ch; c++) {
        gen_u8(&g, gen_px(x, y, c, w, h));
        if (bits16) gen_u8(&g, (unsigned)(x + y));
      }
  *n = g.n;
  return g.b;
}

/* The gray value xray-dp should decode for pixel (x, y) of the lossless generators above: BT.601 luma
 * of the RGB ones, the gray channel of the gray ones. */
static inline uint8_t gen_luma(int x, int y, int w, int h, int rgb) {
  if (!rgb) return gen_px(x, y, 0, w, h);
  unsigned r = gen_px(x, y, 0, w, h), g = gen_px(x, y, 1, w, h), b = gen_px(x, y, 2, w, h);
  return (uint8_t)((299u * r + 587u * g + 114u * b + 500u) / 1000u);
}

#endif
