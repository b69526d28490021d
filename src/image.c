/* Image decoding: JPEG with libjpeg-turbo, PNG with libpng, BMP/GIF/PGM/PPM with stb_image, each chosen by
 * the file's signature (nothing else is tried, so no bytes are ever guessed to be some other format).
 *
 * A decoder that reports damage is believed: libjpeg's warnings ("Premature end of JPEG file", "Corrupt
 * JPEG data: ...") and libpng's errors (CRC, missing image data, truncation) refuse the file, because the
 * pixels they would hand back are partly invented. stb_image is not told about damage in BMP and PNM, so
 * those get the size checks it does not do itself. Every pixel buffer is allocated zeroed and filled to
 * its end or the file is refused, so nothing downstream ever reads undefined memory. Dimensions are
 * checked from the header and the memory the decode needs against the budget (xd_mem_check) before any
 * pixel buffer exists. Messages are one line of printable ASCII: the file name (control characters
 * escaped) and a reason from a fixed vocabulary or the library's own message text, sanitised. */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

/* A private copy of stb_image's decoders that knows only the three formats it is used for here (so no
 * bytes are ever taken for a TGA, PSD or HDR file), allocates zeroed memory (a pixel it leaves unwritten
 * is black, never undefined) and has no stdio. The shared libstb stays linked for stb_image_write. */
static void *stb_zalloc(size_t n) { return calloc(1, n ? n : 1); }
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS XD_IMAGE_MAX_SIDE
#define STBI_MALLOC(n) stb_zalloc(n)
#define STBI_REALLOC(p, n) realloc(p, n)
#define STBI_FREE(p) free(p)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#include <stb_image.h>
#pragma GCC diagnostic pop
/* (its declarations of the zlib helpers that STBI_ONLY_* leaves out are checked at the end of the file) */
#pragma GCC diagnostic ignored "-Wunused-function"

/* No image of a sane size needs more: the largest accepted raster compresses to far less. */
#define XD_IMAGE_MAX_FILE_BYTES ((size_t)1 << 30)
/* A real progressive JPEG has about ten scans; thousands of tiny ones only burn time. */
#define XD_JPEG_MAX_SCANS 500

/* The file name as it may appear in a one-line message: control characters and DEL as \xNN. */
static void safe_name(const char *path, char *out, size_t n) {
  size_t k = 0;
  for (const unsigned char *p = (const unsigned char *)(path ? path : "(null)"); *p && k + 5 < n; p++) {
    if (*p < 0x20 || *p == 0x7f) k += (size_t)snprintf(out + k, n - k, "\\x%02x", *p);
    else out[k++] = (char)*p;
  }
  out[k] = '\0';
}

/* A library's message made safe for ours: printable ASCII only, first letter lower-case, no trailing
 * period, never empty. */
static void safe_reason(const char *msg, char *out, size_t n) {
  size_t k = 0;
  for (const unsigned char *p = (const unsigned char *)(msg ? msg : ""); *p && k + 1 < n; p++)
    out[k++] = (*p >= 0x20 && *p < 0x7f) ? (char)*p : '?';
  while (k > 0 && (out[k - 1] == ' ' || out[k - 1] == '.')) k--;
  out[k] = '\0';
  if (k == 0) snprintf(out, n, "no reason given by the decoder");
  else if (out[0] >= 'A' && out[0] <= 'Z' && !(out[1] >= 'A' && out[1] <= 'Z')) out[0] = (char)(out[0] - 'A' + 'a');
}

static int fail_name(xd_err *e, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_name(xd_err *e, const char *name, const char *fmt, ...) {
  char sn[1024], what[XD_ERR_MAX];
  safe_name(name, sn, sizeof sn);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return xd_fail(e, "%s: %s", sn, what);
}

static int read_whole_file(const char *path, unsigned char **buf, size_t *len, xd_err *e) {
  /* A FIFO would block in open(): refuse anything but a regular file first, then open without blocking
   * and look again at what was opened (the name may have been replaced in between). */
  struct stat st;
  if (stat(path, &st) != 0) return fail_name(e, path, "cannot open: %s", strerror(errno));
  xd_err nr;
  if (xd_check_regular(path, &nr) != 0) { /* "PATH: not a regular file (a FIFO)", with PATH made safe */
    size_t pl = strlen(path);
    const char *why = strncmp(nr.msg, path, pl) == 0 && nr.msg[pl] == ':' ? nr.msg + pl + 2 : "not a regular file";
    return fail_name(e, path, "%s", why);
  }
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return fail_name(e, path, "cannot open: %s", strerror(errno));
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return fail_name(e, path, "not a regular file");
  }
  if (st.st_size == 0) {
    close(fd);
    return fail_name(e, path, "zero-byte file");
  }
  if ((uint64_t)st.st_size > XD_IMAGE_MAX_FILE_BYTES) {
    close(fd);
    return fail_name(e, path, "file too large for an image (%lld bytes)", (long long)st.st_size);
  }
  size_t n = (size_t)st.st_size, got = 0;
  unsigned char *p = malloc(n);
  if (!p) {
    close(fd);
    return fail_name(e, path, "out of memory reading %zu bytes", n);
  }
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      free(p);
      close(fd);
      return fail_name(e, path, "read error: %s", strerror(err));
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got != n) {
    free(p);
    return fail_name(e, path, "short read (%zu of %zu bytes; the file shrank while being read)", got, n);
  }
  *buf = p;
  *len = n;
  return 0;
}

/* A decoded raster: c = 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA) or 5 (CMYK as libjpeg gives it). */
typedef struct {
  unsigned char *px;
  int w, h, c;
} raster;

/* The header's dimensions against the limits, and the decode's memory (bytes_per_pixel for everything
 * the decoder and this file allocate per source pixel) against the budget, before any pixel buffer. */
static int check_dims(const char *name, uint64_t w, uint64_t h, uint64_t bytes_per_pixel, xd_err *e) {
  if (w == 0 || h == 0) return fail_name(e, name, "empty image (%llux%llu)", (unsigned long long)w, (unsigned long long)h);
  if (w > XD_IMAGE_MAX_SIDE || h > XD_IMAGE_MAX_SIDE || w * h > XD_IMAGE_MAX_PIXELS)
    return fail_name(e, name, "absurd dimensions %llux%llu (limit %d per side, %u pixels)", (unsigned long long)w,
                     (unsigned long long)h, XD_IMAGE_MAX_SIDE, XD_IMAGE_MAX_PIXELS);
  xd_err m;
  if (xd_mem_check(xd_mul_sat(w * h, bytes_per_pixel), "decoding the image", &m) != 0)
    return fail_name(e, name, "%llux%llu: %s", (unsigned long long)w, (unsigned long long)h, m.msg);
  return 0;
}

/* ---- JPEG (libjpeg-turbo) ---- */

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jb;
  int kind; /* 0 error, 1 warning (damaged data), 2 truncated, 3 too many scans, 4 unsupported, 5 memory,
              * 6 dimensions above libjpeg's limit */
  char msg[JMSG_LENGTH_MAX];
} jpeg_fail;

static void jpeg_on_error(j_common_ptr ci) {
  jpeg_fail *f = (jpeg_fail *)ci->err;
  int code = ci->err->msg_code;
  f->kind = code == JERR_IMAGE_TOO_BIG                               ? 6
            : (code == JERR_OUT_OF_MEMORY || code == JERR_VIRTUAL_BUG) ? 5
            : (code == JERR_SOF_UNSUPPORTED || code == JERR_NOT_COMPILED || code == JERR_ARITH_NOTIMPL ||
               code == JERR_CONVERSION_NOTIMPL || code == JERR_BAD_PRECISION)
                ? 4
                : 0;
  ci->err->format_message(ci, f->msg);
  longjmp(f->jb, 1);
}

/* Warnings (level -1) are how libjpeg reports damaged data it decoded anyway: stop at the first. The
 * only one that says nothing about the pixels is an unknown JFIF revision number. Trace messages
 * (level >= 0) are ignored. */
static void jpeg_on_message(j_common_ptr ci, int level) {
  if (level >= 0 || ci->err->msg_code == JWRN_JFIF_MAJOR) return;
  jpeg_fail *f = (jpeg_fail *)ci->err;
  f->kind = ci->err->msg_code == JWRN_JPEG_EOF ? 2 : 1;
  ci->err->format_message(ci, f->msg);
  longjmp(f->jb, 1);
}

static void jpeg_no_output(j_common_ptr ci) { (void)ci; }

static void jpeg_scan_limit(j_common_ptr ci) {
  j_decompress_ptr d = (j_decompress_ptr)ci;
  if (d->input_scan_number <= XD_JPEG_MAX_SCANS) return;
  jpeg_fail *f = (jpeg_fail *)ci->err;
  f->kind = 3;
  snprintf(f->msg, sizeof f->msg, "more than %d scans", XD_JPEG_MAX_SCANS);
  longjmp(f->jb, 1);
}

static int decode_jpeg(const char *name, const unsigned char *buf, size_t len, raster *r, xd_err *e) {
  struct jpeg_decompress_struct ci;
  jpeg_fail f;
  struct jpeg_progress_mgr prog;
  memset(&ci, 0, sizeof ci);
  memset(&f, 0, sizeof f);
  memset(&prog, 0, sizeof prog);
  raster *volatile out = r; /* px lives in *r, which setjmp does not disturb */
  int volatile dims_failed = 0;
  ci.err = jpeg_std_error(&f.pub);
  f.pub.error_exit = jpeg_on_error;
  f.pub.emit_message = jpeg_on_message;
  f.pub.output_message = jpeg_no_output;
  if (setjmp(f.jb)) {
    jpeg_destroy_decompress(&ci);
    free(out->px);
    out->px = NULL;
    if (dims_failed) return -1;
    if (f.kind == 6) return check_dims(name, ci.image_width, ci.image_height, 1, e); /* above libjpeg's 65500 */
    char why[JMSG_LENGTH_MAX + 16];
    const char *m = f.msg;
    if (strncmp(m, "Corrupt JPEG data: ", 19) == 0) m += 19; /* "corrupt JPEG" is said once */
    safe_reason(m, why, sizeof why);
    switch (f.kind) {
      case 2: return fail_name(e, name, "truncated JPEG file (premature end of data)");
      case 3: return fail_name(e, name, "corrupt JPEG (%s)", why);
      case 4: return fail_name(e, name, "unsupported JPEG (%s)", why);
      case 5: return fail_name(e, name, "out of memory decoding JPEG (%s)", why);
      default: return fail_name(e, name, "corrupt JPEG (%s)", why);
    }
  }
  jpeg_create_decompress(&ci);
  ci.mem->max_memory_to_use = (long)(xd_mem_limit() > (uint64_t)(LONG_MAX / 2) ? LONG_MAX / 2 : xd_mem_limit());
  prog.progress_monitor = jpeg_scan_limit;
  ci.progress = &prog;
  jpeg_mem_src(&ci, buf, (unsigned long)len);
  jpeg_read_header(&ci, TRUE);
  int ncomp = ci.num_components;
  switch (ci.jpeg_color_space) {
    case JCS_GRAYSCALE:
      ci.out_color_space = JCS_GRAYSCALE;
      out->c = 1;
      break;
    case JCS_YCbCr: /* to RGB and then our luma, as PIL's decode + scripts/to_torch.py do: same bytes */
    case JCS_RGB:
      ci.out_color_space = JCS_RGB;
      out->c = 3;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      ci.out_color_space = JCS_CMYK;
      out->c = 5;
      break;
    default:
      snprintf(f.msg, sizeof f.msg, "colour space with %d components", ncomp);
      f.kind = 4;
      longjmp(f.jb, 1);
  }
  /* Every component's coefficients (a multi-scan file keeps them all: 2 bytes each), the output and the
   * gray copy and resize rows after it. */
  if (check_dims(name, ci.image_width, ci.image_height, 2u * (uint64_t)(ncomp > 0 ? ncomp : 1) + 4u + 1u + 4u, e) != 0) {
    dims_failed = 1;
    longjmp(f.jb, 1);
  }
  ci.dct_method = JDCT_ISLOW; /* the exact integer IDCT: the same pixels on every machine */
  ci.do_fancy_upsampling = TRUE;
  ci.do_block_smoothing = FALSE;
  jpeg_start_decompress(&ci);
  out->w = (int)ci.output_width;
  out->h = (int)ci.output_height;
  size_t stride = (size_t)ci.output_width * (size_t)ci.output_components;
  if ((int)ci.output_components != (out->c == 5 ? 4 : out->c) || out->w != (int)ci.image_width ||
      out->h != (int)ci.image_height) {
    snprintf(f.msg, sizeof f.msg, "unexpected output layout");
    f.kind = 4;
    longjmp(f.jb, 1);
  }
  out->px = calloc((size_t)out->h, stride);
  if (!out->px) {
    snprintf(f.msg, sizeof f.msg, "%dx%d pixels", out->w, out->h);
    f.kind = 5;
    longjmp(f.jb, 1);
  }
  while (ci.output_scanline < ci.output_height) {
    JSAMPROW rows[8];
    unsigned k = 0;
    for (; k < 8 && ci.output_scanline + k < ci.output_height; k++) rows[k] = out->px + (ci.output_scanline + k) * stride;
    if (jpeg_read_scanlines(&ci, rows, k) == 0) { /* cannot happen with a memory source: it never suspends */
      snprintf(f.msg, sizeof f.msg, "decoder stopped at row %u", ci.output_scanline);
      longjmp(f.jb, 1);
    }
  }
  jpeg_finish_decompress(&ci); /* reads on to the end-of-image marker: damage after the last row counts */
  jpeg_destroy_decompress(&ci);
  return 0;
}

/* ---- PNG (libpng) ---- */

typedef struct {
  const unsigned char *buf;
  size_t len, pos;
  int truncated;
  char msg[256];
} png_src;

static void png_on_error(png_structp p, png_const_charp msg) {
  png_src *s = png_get_error_ptr(p);
  snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "");
  png_longjmp(p, 1);
}

/* Warnings concern ancillary chunks (a bad CRC there drops the chunk): the pixels are unaffected. */
static void png_on_warning(png_structp p, png_const_charp msg) {
  (void)p;
  (void)msg;
}

static void png_read_mem(png_structp p, png_bytep data, size_t n) {
  png_src *s = png_get_io_ptr(p);
  if (n > s->len - s->pos) {
    s->truncated = 1;
    png_error(p, "premature end of data");
  }
  memcpy(data, s->buf + s->pos, n);
  s->pos += n;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int decode_png(const char *name, const unsigned char *buf, size_t len, raster *r, xd_err *e) {
  /* The IHDR's dimensions first, so that a bare header claiming 100000x100000 is refused for its size. */
  if (len >= 24 && memcmp(buf + 12, "IHDR", 4) == 0) {
    uint32_t w = be32(buf + 16), h = be32(buf + 20);
    if (w > XD_IMAGE_MAX_SIDE || h > XD_IMAGE_MAX_SIDE || (uint64_t)w * h > XD_IMAGE_MAX_PIXELS)
      return check_dims(name, w, h, 1, e);
  }
  png_src s = {buf, len, 0, 0, {0}};
  png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, png_on_error, png_on_warning);
  png_infop info = p ? png_create_info_struct(p) : NULL;
  if (!info) {
    png_destroy_read_struct(&p, NULL, NULL);
    return fail_name(e, name, "out of memory starting the PNG decoder");
  }
  raster *volatile out = r;
  png_bytep *volatile rows = NULL;
  int volatile dims_failed = 0;
  if (setjmp(png_jmpbuf(p))) {
    png_destroy_read_struct(&p, &info, NULL);
    free(out->px);
    out->px = NULL;
    free(rows);
    if (dims_failed) return -1;
    if (s.truncated) return fail_name(e, name, "corrupt PNG (truncated: premature end of data)");
    char why[300];
    safe_reason(s.msg, why, sizeof why);
    return fail_name(e, name, "corrupt PNG (%s)", why);
  }
  png_set_read_fn(p, &s, png_read_mem);
  png_set_user_limits(p, XD_IMAGE_MAX_SIDE, XD_IMAGE_MAX_SIDE);
  png_read_info(p, info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, ctype = 0, interlace = 0;
  png_get_IHDR(p, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
  /* libpng's row buffers (two rows of up to 8 bytes a pixel), the output, the gray copy, the resize. */
  if (check_dims(name, w, h, 4u + 1u + 4u + 1u, e) != 0) {
    dims_failed = 1;
    png_longjmp(p, 1);
  }
  if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
  if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(p);
  if (depth == 16) png_set_strip_16(p); /* the high byte, as stb_image did */
  (void)png_set_interlace_handling(p);
  png_read_update_info(p, info);
  int c = png_get_channels(p, info);
  size_t stride = png_get_rowbytes(p, info);
  if (c < 1 || c > 4 || png_get_bit_depth(p, info) != 8 || stride != (size_t)w * (size_t)c) {
    snprintf(s.msg, sizeof s.msg, "unexpected layout after conversion to 8 bits");
    png_longjmp(p, 1);
  }
  out->w = (int)w;
  out->h = (int)h;
  out->c = c;
  out->px = calloc((size_t)h, stride);
  rows = malloc(sizeof(png_bytep) * (size_t)h);
  if (!out->px || !rows) {
    snprintf(s.msg, sizeof s.msg, "out of memory for %ux%u pixels", (unsigned)w, (unsigned)h);
    png_longjmp(p, 1);
  }
  for (png_uint_32 y = 0; y < h; y++) rows[y] = out->px + (size_t)y * stride;
  png_read_image(p, rows);
  png_read_end(p, NULL); /* the rest of the file up to IEND: CRCs, the end of the compressed stream */
  png_destroy_read_struct(&p, &info, NULL);
  free(rows);
  return 0;
}

/* ---- BMP, GIF, PGM/PPM (stb_image) ---- */

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* stb_image reads missing BMP pixel rows as zeros; compare the size the header implies. */
static int bmp_truncated(const unsigned char *b, size_t n, int w, int h) {
  if (n < 26) return 1;
  uint32_t offset = le32(b + 10), hsz = le32(b + 14);
  int bpp;
  if (hsz == 12) { /* OS/2 1.x core header: 16-bit sizes, no compression */
    bpp = b[24] | b[25] << 8;
  } else if (hsz >= 40) {
    if (n < 34) return 1;
    bpp = b[28] | b[29] << 8;
    uint32_t compression = le32(b + 30);
    if (compression != 0 && compression != 3) return 0; /* RLE: stb_image refuses it */
  } else {
    return 0; /* other headers: stb_image refuses them */
  }
  uint64_t stride = (((uint64_t)w * (uint64_t)bpp + 31) / 32) * 4;
  return (uint64_t)offset + stride * (uint64_t)h > (uint64_t)n;
}

/* A binary PNM header read by stb_image's own rules (whitespace " \t\n\v\f\r", comments from '#' to the
 * end of the line), so that what is checked here is what stb_image will read: width, height, maxval and
 * where the raster starts. This stb_image version neither bounds the numbers (a long digit run overflows
 * an int) nor checks that the raster is complete (it leaves the rest of its buffer unwritten), so both
 * are checked here first. 0, or -1 when the header is malformed. */
static int pnm_header(const unsigned char *b, size_t n, uint32_t v[3], size_t *raster) {
  size_t i = 2;
  for (int k = 0; k < 3; k++) {
    for (;;) {
      while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\v' || b[i] == '\f' || b[i] == '\r')) i++;
      if (i < n && b[i] == '#') {
        while (i < n && b[i] != '\n' && b[i] != '\r') i++;
      } else {
        break;
      }
    }
    if (i >= n || b[i] < '0' || b[i] > '9') return -1;
    uint64_t x = 0;
    while (i < n && b[i] >= '0' && b[i] <= '9') {
      x = x * 10 + (uint64_t)(b[i++] - '0');
      if (x > 99999999u) return -1; /* far above any limit, and still far below INT_MAX */
    }
    v[k] = (uint32_t)x;
  }
  *raster = i + 1; /* the single whitespace character after maxval */
  return 0;
}

static int decode_stb(const char *name, const char *kind, const unsigned char *buf, size_t len, raster *r,
                      xd_err *e) {
  if (len > (size_t)0x7fffffff) return fail_name(e, name, "file too large");
  int x = 0, y = 0, comp = 0;
  int is_bmp = buf[0] == 'B', is_pnm = buf[0] == 'P', is_gif = buf[0] == 'G';
  if (is_pnm) {
    uint32_t v[3];
    size_t raster = 0;
    if (pnm_header(buf, len, v, &raster) != 0) return fail_name(e, name, "corrupt %s (malformed header)", kind);
    XD_TRY(check_dims(name, v[0], v[1], 4u * 3u + 1u + 4u, e));
    if (v[2] == 0 || v[2] > 65535) return fail_name(e, name, "corrupt %s (maximum value %u)", kind, v[2]);
    uint64_t need = (uint64_t)v[0] * v[1] * (buf[1] == '6' ? 3u : 1u) * (v[2] > 255 ? 2u : 1u);
    if (xd_add_sat(raster, need) > (uint64_t)len) return fail_name(e, name, "truncated %s file", kind);
  }
  if (is_gif && len >= 10) { /* stb_image refuses a large GIF screen with a generic reason */
    unsigned gw = buf[6] | (unsigned)buf[7] << 8, gh = buf[8] | (unsigned)buf[9] << 8;
    if (gw > XD_IMAGE_MAX_SIDE || gh > XD_IMAGE_MAX_SIDE || (uint64_t)gw * gh > XD_IMAGE_MAX_PIXELS)
      return check_dims(name, gw, gh, 1, e);
  }
  if (!stbi_info_from_memory(buf, (int)len, &x, &y, &comp)) {
    char why[128];
    safe_reason(stbi_failure_reason(), why, sizeof why);
    return fail_name(e, name, "corrupt %s (%s)", kind, why);
  }
  if (x < 0 || y < 0) return fail_name(e, name, "corrupt %s (negative dimensions)", kind);
  /* stb_image's output (up to 4 bytes a pixel, plus a GIF's frame history), the gray copy, the resize. */
  XD_TRY(check_dims(name, (uint64_t)x, (uint64_t)y, 4u * 3u + 1u + 4u, e));
  /* A GIF ends with its trailer byte; stb_image decodes a cut one with the missing pixels black. */
  if ((is_bmp && bmp_truncated(buf, len, x, y)) || (is_gif && buf[len - 1] != 0x3B))
    return fail_name(e, name, "truncated %s file", kind);
  int w = 0, h = 0, c = 0;
  unsigned char *p = NULL;
  if (is_pnm && stbi_is_16_bit_from_memory(buf, (int)len)) {
    /* stb_image 2.27 takes the low byte of big-endian 16-bit PNM samples (noise); keep the bytes as
     * read (file order: most significant first) and take the high byte of each sample ourselves. */
    stbi_us *p16 = stbi_load_16_from_memory(buf, (int)len, &w, &h, &c, 0);
    if (p16) {
      const unsigned char *bytes = (const unsigned char *)p16;
      size_t ns = (size_t)w * (size_t)h * (size_t)(c > 0 ? c : 1);
      p = malloc(ns);
      for (size_t i = 0; p && i < ns; i++) p[i] = bytes[2 * i];
      free(p16);
      if (!p) return fail_name(e, name, "out of memory for a %dx%d image", w, h);
    }
  } else {
    p = stbi_load_from_memory(buf, (int)len, &w, &h, &c, 0);
  }
  if (!p) {
    char why[128];
    safe_reason(stbi_failure_reason(), why, sizeof why);
    return fail_name(e, name, "corrupt %s (%s)", kind, why);
  }
  if (w != x || h != y || c < 1 || c > 4) {
    free(p);
    return fail_name(e, name, "corrupt %s (header and data disagree on the size)", kind);
  }
  r->px = p;
  r->w = w;
  r->h = h;
  r->c = c;
  return 0;
}

static int decode(const char *name, const unsigned char *buf, size_t len, raster *r, xd_err *e) {
  static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  memset(r, 0, sizeof *r);
  if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) return decode_jpeg(name, buf, len, r, e);
  if (len >= 8 && memcmp(buf, png_sig, 8) == 0) return decode_png(name, buf, len, r, e);
  if (len >= 2 && buf[0] == 'B' && buf[1] == 'M') return decode_stb(name, "BMP", buf, len, r, e);
  if (len >= 6 && (memcmp(buf, "GIF87a", 6) == 0 || memcmp(buf, "GIF89a", 6) == 0))
    return decode_stb(name, "GIF", buf, len, r, e);
  if (len >= 3 && buf[0] == 'P' && (buf[1] == '5' || buf[1] == '6') &&
      (buf[2] == ' ' || buf[2] == '\t' || buf[2] == '\r' || buf[2] == '\n' || buf[2] == '#'))
    return decode_stb(name, "PNM", buf, len, r, e);
  return fail_name(e, name, "not a supported image (not JPEG, PNG, BMP, GIF or binary PGM/PPM)");
}

/* stb_image's rounding of x*y/255 for its CMYK conversion. */
static unsigned mul255(unsigned x, unsigned y) {
  unsigned t = x * y + 128;
  return (t + (t >> 8)) >> 8;
}

/* BT.601 luma, rounded; alpha ignored. CMYK as libjpeg outputs an Adobe file (inverted: 255 = no ink),
 * to RGB by multiplying each ink with K, as stb_image did. */
static void to_gray(const unsigned char *p, size_t npix, int c, uint8_t *g) {
  if (c <= 2) {
    for (size_t i = 0; i < npix; i++) g[i] = p[i * (size_t)c];
    return;
  }
  size_t step = c == 5 ? 4 : (size_t)c;
  for (size_t i = 0; i < npix; i++) {
    const unsigned char *q = p + i * step;
    unsigned R = q[0], G = q[1], B = q[2];
    if (c == 5) {
      R = mul255(q[0], q[3]);
      G = mul255(q[1], q[3]);
      B = mul255(q[2], q[3]);
    }
    g[i] = (uint8_t)((299u * R + 587u * G + 114u * B + 500u) / 1000u);
  }
}

int xd_image_decode_gray_mem(const void *data, size_t len, const char *name, int size, uint8_t *out, xd_err *e) {
  if (size <= 0 || size > XD_IMAGE_MAX_SIDE) return fail_name(e, name, "invalid output size %d", size);
  if (len == 0) return fail_name(e, name, "zero-byte file");
  raster r;
  XD_TRY(decode(name, data, len, &r, e));
  size_t npix = (size_t)r.w * (size_t)r.h;
  uint8_t *gray = (r.c == 1) ? r.px : malloc(npix);
  if (!gray) {
    free(r.px);
    return fail_name(e, name, "out of memory for a %dx%d image", r.w, r.h);
  }
  if (r.c != 1) to_gray(r.px, npix, r.c, gray);
  xd_image_resize_gray(gray, r.w, r.h, out, size, size);
  if (gray != r.px) free(gray);
  free(r.px); /* stb_image's default allocator is malloc */
  return 0;
}

int xd_image_load_gray(const char *path, int size, uint8_t *out, xd_err *e) {
  if (size <= 0 || size > XD_IMAGE_MAX_SIDE) return fail_name(e, path, "invalid output size %d", size);
  unsigned char *buf = NULL;
  size_t len = 0;
  XD_TRY(read_whole_file(path, &buf, &len, e));
  int rc = xd_image_decode_gray_mem(buf, len, path, size, out, e);
  free(buf);
  return rc;
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
