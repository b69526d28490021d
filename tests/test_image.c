/* Decoding, grayscale conversion and resizing against independently computed expectations, and every
 * kind of bad file rejected with its reason. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "image.h"
#include "img_fixtures.h"

static char work[4096];

static const char *wpath(const char *name) {
  static char buf[8][4200];
  static int k = 0;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", work, name);
  return buf[k];
}

/* Exact area average on a common fine grid of sw*dw cells: source pixel s covers cells [s*dw, (s+1)*dw),
 * output pixel x covers [x*sw, (x+1)*sw). */
static double area_expect(const uint8_t *src, int sw, int dw, int x) {
  double acc = 0;
  for (long k = (long)x * sw; k < (long)(x + 1) * sw; k++) acc += src[k / dw];
  return acc / sw;
}

static void test_constant_files(void) {
  struct {
    const char *name;
    int w, h, comp;
    uint8_t px[4];
    int expect, tol, size;
  } cases[] = {
      {"c_gray_odd.png", 37, 53, 1, {173}, 173, 0, 16},
      {"c_rgb.png", 200, 91, 3, {200, 100, 50}, 125, 0, 16}, /* (299*200+587*100+114*50)/1000 = 124.2 + rounding */
      {"c_rgba.png", 301, 300, 4, {10, 20, 30, 7}, 18, 0, 32},
      {"c_rgb.bmp", 129, 130, 3, {0, 255, 0}, 150, 0, 16},
      {"c_gray.bmp", 5, 7, 1, {99}, 99, 0, 16}, /* enlarging */
      {"c_gray.jpg", 64, 48, 1, {140}, 140, 1, 16},
      {"c_rgb.jpeg", 77, 33, 3, {90, 160, 220}, 143, 3, 16},
      {"c_same.png", 16, 16, 1, {1}, 1, 0, 16},
  };
  /* Recompute the luma expectations here rather than trusting the table for the RGB cases. */
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (cases[i].comp >= 3) {
      const uint8_t *p = cases[i].px;
      cases[i].expect = (int)floor((0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) + 0.5);
    }
    const char *path = wpath(cases[i].name);
    CHECK(fx_write_const(path, cases[i].w, cases[i].h, cases[i].comp, cases[i].px) == 0);
    int s = cases[i].size;
    uint8_t *out = malloc((size_t)s * s);
    xd_err e = {{0}};
    int rc = xd_image_load_gray(path, s, out, &e);
    CHECK_MSG(rc == 0, "%s: %s", cases[i].name, e.msg);
    int bad = 0;
    for (int k = 0; rc == 0 && k < s * s; k++) bad += abs((int)out[k] - cases[i].expect) > cases[i].tol;
    CHECK_MSG(bad == 0, "%s: %d pixels differ from %d (first %d)", cases[i].name, bad, cases[i].expect, out[0]);
    free(out);
  }
}

static void test_gradient_resize(void) {
  /* horizontal gradient, non-integer ratio 50 -> 16 */
  enum { SW = 50, SH = 10, D = 16 };
  uint8_t src[SH * SW], row[SW], out[D * D];
  for (int x = 0; x < SW; x++) row[x] = (uint8_t)(x * 5);
  for (int y = 0; y < SH; y++) memcpy(src + y * SW, row, SW);
  xd_image_resize_gray(src, SW, SH, out, D, D);
  int mono = 1, exact = 1, rows_same = 1;
  for (int x = 0; x < D; x++) {
    double ex = area_expect(row, SW, D, x);
    if (fabs(out[x] - ex) > 0.5 + 1e-3) {
      exact = 0;
      fprintf(stderr, "x=%d got %d expected %.3f\n", x, out[x], ex);
    }
    if (x > 0 && out[x] <= out[x - 1]) mono = 0;
    for (int y = 1; y < D; y++) rows_same &= out[y * D + x] == out[x];
  }
  CHECK(exact);
  CHECK(mono);
  CHECK(rows_same);
  CHECK(out[0] < 10 && out[D - 1] > 235);

  /* vertical gradient through a PNG file, 7 wide x 45 high -> 16 (shrink vertically, enlarge horizontally) */
  enum { VW = 7, VH = 45 };
  uint8_t v[VH * VW], col[VH];
  for (int y = 0; y < VH; y++) {
    col[y] = (uint8_t)(250 - y * 5);
    for (int x = 0; x < VW; x++) v[y * VW + x] = col[y];
  }
  const char *p = wpath("grad_v.png");
  CHECK(fx_write(p, VW, VH, 1, v) == 0);
  xd_err e = {{0}};
  CHECK(xd_image_load_gray(p, D, out, &e) == 0);
  exact = mono = rows_same = 1;
  for (int y = 0; y < D; y++) {
    double ex = area_expect(col, VH, D, y);
    if (fabs(out[y * D] - ex) > 0.5 + 1e-3) exact = 0;
    if (y > 0 && out[y * D] >= out[(y - 1) * D]) mono = 0;
    for (int x = 1; x < D; x++) rows_same &= out[y * D + x] == out[y * D];
  }
  CHECK(exact);
  CHECK(mono);
  CHECK(rows_same);

  /* enlarging a gradient 4 -> 9 stays monotone, within the source range, ends near the end values */
  uint8_t s4[4 * 4], o9[9 * 9];
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 4; x++) s4[y * 4 + x] = (uint8_t)(20 + 60 * x);
  xd_image_resize_gray(s4, 4, 4, o9, 9, 9);
  mono = 1;
  for (int x = 1; x < 9; x++) mono &= o9[x] >= o9[x - 1];
  CHECK(mono);
  CHECK(o9[0] == 20 && o9[8] == 200);
}

static void expect_reject(const char *name, const char *keyword) {
  const char *path = wpath(name);
  uint8_t out[16 * 16];
  xd_err e = {{0}};
  int rc = xd_image_load_gray(path, 16, out, &e);
  CHECK_MSG(rc == -1, "%s was accepted", name);
  CHECK_MSG(strstr(e.msg, path) != NULL, "%s: message does not name the file: %s", name, e.msg);
  CHECK_MSG(strstr(e.msg, keyword) != NULL, "%s: expected '%s' in: %s", name, keyword, e.msg);
}

static void test_bad_files(void) {
  uint8_t px[3] = {10, 200, 30};
  CHECK(fx_write_const(wpath("good.png"), 120, 90, 3, px) == 0);
  CHECK(fx_write_const(wpath("good.jpg"), 120, 90, 3, px) == 0);
  CHECK(fx_write_const(wpath("good.bmp"), 120, 90, 3, px) == 0);
  CHECK(fx_write_bytes(wpath("empty.png"), "", 0) == 0);
  const char *text = "this is not an image, just text\n";
  CHECK(fx_write_bytes(wpath("text.jpeg"), text, strlen(text)) == 0);
  unsigned char junk[300];
  for (int i = 0; i < 300; i++) junk[i] = (unsigned char)(i * 37 + 11);
  CHECK(fx_write_bytes(wpath("junk.png"), junk, sizeof junk) == 0);
  CHECK(fx_truncate_copy(wpath("good.png"), wpath("trunc.png"), 0.6) == 0);
  CHECK(fx_truncate_copy(wpath("good.jpg"), wpath("trunc.jpg"), 0.6) == 0);
  CHECK(fx_truncate_copy(wpath("good.bmp"), wpath("trunc.bmp"), 0.6) == 0);
  CHECK(fx_write_png_header(wpath("huge.png"), 100000, 100000) == 0);
  CHECK(fx_write_png_header(wpath("wide.png"), 20000, 10) == 0);

  static unsigned char pgm[20 + 1600];
  int hl = snprintf((char *)pgm, 20, "P5\n# c\n40 40\n255\n");
  memset(pgm + hl, 77, 1600);
  CHECK(fx_write_bytes(wpath("good.pgm"), pgm, (size_t)hl + 1600) == 0);
  CHECK(fx_write_bytes(wpath("trunc.pgm"), pgm, (size_t)hl + 500) == 0);

  uint8_t out[16 * 16];
  xd_err e = {{0}};
  CHECK(xd_image_load_gray(wpath("good.pgm"), 16, out, &e) == 0 && out[0] == 77 && out[255] == 77);
  CHECK(xd_image_load_gray(wpath("good.png"), 16, out, &e) == 0);
  CHECK(xd_image_load_gray(wpath("good.jpg"), 16, out, &e) == 0);
  CHECK(xd_image_load_gray(wpath("good.bmp"), 16, out, &e) == 0);
  expect_reject("empty.png", "zero-byte");
  expect_reject("text.jpeg", "not a supported image");
  expect_reject("junk.png", "not a supported image");
  expect_reject("trunc.png", "corrupt");
  expect_reject("trunc.jpg", "truncated JPEG");
  expect_reject("trunc.bmp", "truncated BMP");
  expect_reject("trunc.pgm", "truncated PNM");
  expect_reject("huge.png", "absurd dimensions 100000x100000");
  expect_reject("wide.png", "absurd dimensions");
  expect_reject("missing.png", "cannot open");
  CHECK(fx_mkdir(wpath("adir.png")) == 0);
  expect_reject("adir.png", "not a regular file");
}

int main(int argc, char **argv) {
  snprintf(work, sizeof work, "%s", argc > 2 ? argv[2] : "/tmp/xd_test_image");
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
  if (system(cmd) != 0) return 1;
  xd_err e;
  if (xd_mkdir_p(work, &e) != 0) return 1;
  test_constant_files();
  test_gradient_resize();
  test_bad_files();
  return check_done("image");
}
