/* The shortcut audit's perturbations and Grad-CAM region shares on tiny images, against expectations
 * computed by hand (in the comments). */
#include <string.h>

#include "audit.h"
#include "check.h"

static int same(const uint8_t *a, const uint8_t *b, int n) { return memcmp(a, b, (size_t)n) == 0; }

static void fill_pattern(uint8_t *px, int n, unsigned seed) {
  for (int i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    px[i] = (uint8_t)(seed >> 16);
  }
}

/* Strength-0 versions of every primitive, and the identity perturbation, return the same bytes. */
static void test_identities(void) {
  enum { H = 13, W = 17, N = H * W };
  uint8_t src[N], dst[N];
  fill_pattern(src, N, 7);
  memset(dst, 0xAA, N);
  xd_perturb_scale_x(src, H, W, 1.0, dst);
  CHECK(same(src, dst, N));
  memset(dst, 0xAA, N);
  xd_perturb_tone(src, H, W, 0.0, 1.0, dst);
  CHECK(same(src, dst, N));
  memset(dst, 0xAA, N);
  xd_perturb_down_nearest(src, H, W, 1, dst);
  CHECK(same(src, dst, N));
  memset(dst, 0xAA, N);
  xd_perturb_box_blur(src, H, W, 0, dst);
  CHECK(same(src, dst, N));
  memset(dst, 0xAA, N);
  xd_perturb_border(src, H, W, 0.0, 0, dst);
  CHECK(same(src, dst, N));
  memset(dst, 0xAA, N);
  xd_perturb_top_corners(src, H, W, 0.0, 0.0, dst);
  CHECK(same(src, dst, N));
  const xd_perturbation *id = xd_perturbation_find("identity");
  CHECK(id != NULL);
  if (id) {
    memset(dst, 0xAA, N);
    xd_perturb_apply(id, src, H, W, dst);
    CHECK(same(src, dst, N));
  }
}

/* The table: unique names, every one found by name, identity not in the default set's kinds. */
static void test_table(void) {
  int n;
  const xd_perturbation *all = xd_perturbations(&n);
  CHECK(n >= 12);
  for (int i = 0; i < n; i++) {
    CHECK(xd_perturbation_find(all[i].name) == &all[i]);
    CHECK(all[i].what && all[i].what[0]);
    for (int j = 0; j < i; j++) CHECK_MSG(strcmp(all[i].name, all[j].name), "duplicate %s", all[i].name);
  }
  CHECK(xd_perturbation_find("no-such") == NULL);
  const char *want[] = {"squeeze", "stretch", "border-median", "border-black", "markers", "brighter",
                        "darker", "gamma-0.7", "gamma-1.4", "nearest-2x", "box-3x3"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) CHECK_MSG(xd_perturbation_find(want[i]), "%s", want[i]);
}

/* Every perturbation of a constant image is constant (tone ones map the constant through the curve). */
static void test_constant(void) {
  enum { H = 16, W = 16, N = H * W };
  uint8_t src[N], dst[N];
  memset(src, 77, N);
  int n;
  const xd_perturbation *all = xd_perturbations(&n);
  for (int i = 0; i < n; i++) {
    if (all[i].kind == XD_PT_BORDER && all[i].b >= 0) continue; /* black frame: not constant */
    xd_perturb_apply(&all[i], src, H, W, dst);
    int bad = 0;
    for (int k = 1; k < N; k++) bad += dst[k] != dst[0];
    CHECK_MSG(bad == 0, "%s of a constant image is not constant", all[i].name);
    if (all[i].kind != XD_PT_TONE) CHECK_MSG(dst[0] == 77, "%s changed the constant to %d", all[i].name, dst[0]);
  }
}

/* Bilinear x scaling about the centre, on a 1-row ramp [0, 40, 80, 120] (w = 4, centre 2):
 * source x = (x + 0.5 - 2) / s + 2 - 0.5.
 *   s = 2:   x = 0..3 -> 0.75, 1.25, 1.75, 2.25 -> 30, 50, 70, 90
 *   s = 0.5: x = 0..3 -> -1.5 (clamped 0), 0.5, 2.5, 4.5 (clamped 3) -> 0, 20, 100, 120 */
static void test_scale_x(void) {
  const uint8_t ramp[4] = {0, 40, 80, 120};
  uint8_t out[4];
  xd_perturb_scale_x(ramp, 1, 4, 2.0, out);
  CHECK(out[0] == 30 && out[1] == 50 && out[2] == 70 && out[3] == 90);
  xd_perturb_scale_x(ramp, 1, 4, 0.5, out);
  CHECK(out[0] == 0 && out[1] == 20 && out[2] == 100 && out[3] == 120);
  /* y is untouched: two rows scale independently, each like the 1-row case */
  uint8_t two[8] = {0, 40, 80, 120, 120, 80, 40, 0}, o2[8];
  xd_perturb_scale_x(two, 2, 4, 2.0, o2);
  CHECK(o2[0] == 30 && o2[3] == 90 && o2[4] == 90 && o2[7] == 30);
  /* squeeze 0.8 of a 10-wide row with one bright centred pair keeps it centred and symmetric */
  uint8_t row[10] = {0, 0, 0, 0, 200, 200, 0, 0, 0, 0}, o3[10];
  xd_perturb_scale_x(row, 1, 10, 0.8, o3);
  for (int x = 0; x < 5; x++) CHECK_MSG(o3[x] == o3[9 - x], "x=%d: %d vs %d", x, o3[x], o3[9 - x]);
  CHECK(o3[4] == 175 && o3[0] == 0); /* x=4 samples 3.875: 0.875 * 200 */
}

/* Border: 10x10 at 8% -> round(0.8) = 1-pixel frame; 25x25 -> round(2.0) = 2. Median of 0..99 is 49
 * (lower median: sorted index 49). */
static void test_border(void) {
  uint8_t src[100], dst[100];
  for (int i = 0; i < 100; i++) src[i] = (uint8_t)i;
  CHECK(xd_image_median(src, 100) == 49);
  CHECK(xd_image_median(src, 99) == 49);
  CHECK(xd_image_median(src, 1) == 0);
  xd_perturb_border(src, 10, 10, 0.08, 0, dst);
  int bad = 0;
  for (int y = 0; y < 10; y++)
    for (int x = 0; x < 10; x++) {
      int frame = x == 0 || x == 9 || y == 0 || y == 9;
      bad += dst[y * 10 + x] != (frame ? 0 : src[y * 10 + x]);
    }
  CHECK_MSG(bad == 0, "black border: %d pixels wrong", bad);
  xd_perturb_border(src, 10, 10, 0.08, -1, dst);
  CHECK(dst[0] == 49 && dst[9] == 49 && dst[90] == 49 && dst[55] == 55 && dst[11] == 11 && dst[88] == 88);
  uint8_t big[625], bo[625];
  memset(big, 200, sizeof big);
  xd_perturb_border(big, 25, 25, 0.08, 0, bo);
  int zeros = 0;
  for (int i = 0; i < 625; i++) zeros += bo[i] == 0;
  CHECK_MSG(zeros == 625 - 21 * 21, "2-pixel frame: %d black pixels", zeros);
  CHECK(bo[2 * 25 + 2] == 200 && bo[1 * 25 + 2] == 0 && bo[2 * 25 + 22] == 200 && bo[2 * 25 + 23] == 0);
}

/* Marker patches on 20x20: round(0.2*20) = 4 columns, round(0.15*20) = 3 rows, at both top corners. */
static void test_top_corners(void) {
  uint8_t src[400], dst[400];
  for (int i = 0; i < 400; i++) src[i] = (uint8_t)(i % 200); /* two copies of 0..199: median 99 */
  CHECK(xd_image_median(src, 400) == 99);
  xd_perturb_top_corners(src, 20, 20, 0.20, 0.15, dst);
  int bad = 0;
  for (int y = 0; y < 20; y++)
    for (int x = 0; x < 20; x++) {
      int patch = y < 3 && (x < 4 || x >= 16);
      bad += dst[y * 20 + x] != (patch ? 99 : src[y * 20 + x]);
    }
  CHECK_MSG(bad == 0, "marker patches: %d pixels wrong", bad);
}

/* Tone: brightness 0.1 = 25.5 levels, ties away from the pixel: +26 / -26, clamped. Gamma:
 * 255 * (100/255)^0.7 = 132.42 -> 132, 255 * (100/255)^1.4 = 68.77 -> 69, 255 * (200/255)^0.7 = 215.12. */
static void test_tone(void) {
  const uint8_t src[5] = {0, 10, 100, 200, 250};
  uint8_t o[5];
  xd_perturb_tone(src, 1, 5, 0.1, 1.0, o);
  CHECK(o[0] == 26 && o[1] == 36 && o[2] == 126 && o[3] == 226 && o[4] == 255);
  xd_perturb_tone(src, 1, 5, -0.1, 1.0, o);
  CHECK(o[0] == 0 && o[1] == 0 && o[2] == 74 && o[3] == 174 && o[4] == 224);
  xd_perturb_tone(src, 1, 5, 0.0, 0.7, o);
  CHECK(o[0] == 0 && o[2] == 132 && o[3] == 215);
  xd_perturb_tone(src, 1, 5, 0.0, 1.4, o);
  CHECK(o[0] == 0 && o[2] == 69);
  const uint8_t full = 255;
  xd_perturb_tone(&full, 1, 1, 0.0, 1.4, o);
  CHECK(o[0] == 255);
}

/* 2x2 area average (rounded half up) then nearest neighbour back:
 *   [ 0  2 |  4  6 ]      cells: (0+2+2+4)/4 = 2,      (4+6+6+8)/4 = 6
 *   [ 2  4 |  6  8 ]             (10+10+10+11)/4 = 10.25 -> 10, (20+21+20+20)/4 = 20.25 -> 20
 *   [10 10 | 20 21 ]
 *   [10 11 | 20 20 ]
 * Odd 3x3 [1 2 3; 4 5 6; 7 8 9]: cells (1+2+4+5)/4 = 3, (3+6)/2 = 4.5 -> 5, (7+8)/2 = 7.5 -> 8, 9. */
static void test_down_nearest(void) {
  const uint8_t a[16] = {0, 2, 4, 6, 2, 4, 6, 8, 10, 10, 20, 21, 10, 11, 20, 20};
  const uint8_t want[16] = {2, 2, 6, 6, 2, 2, 6, 6, 10, 10, 20, 20, 10, 10, 20, 20};
  uint8_t o[16];
  xd_perturb_down_nearest(a, 4, 4, 2, o);
  CHECK(same(o, want, 16));
  const uint8_t b[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, wb[9] = {3, 3, 5, 3, 3, 5, 8, 8, 9};
  uint8_t ob[9];
  xd_perturb_down_nearest(b, 3, 3, 2, ob);
  CHECK(same(ob, wb, 9));
}

/* 3x3 box, edge-clamped, on the row [0 0 90] (h = 1: each column counted 3 times vertically):
 *   x=0: cols {0,0,1} -> 0;  x=1: cols {0,1,2} -> 3*90/9 = 30;  x=2: cols {1,2,2} -> 3*180/9 = 60.
 * A single 9 in the centre of a 3x3 image of zeros: every pixel's clamped window holds it once -> all 1. */
static void test_box(void) {
  const uint8_t row[3] = {0, 0, 90};
  uint8_t o[3];
  xd_perturb_box_blur(row, 1, 3, 1, o);
  CHECK(o[0] == 0 && o[1] == 30 && o[2] == 60);
  uint8_t dot[9] = {0, 0, 0, 0, 9, 0, 0, 0, 0}, od[9];
  xd_perturb_box_blur(dot, 3, 3, 1, od);
  int bad = 0;
  for (int i = 0; i < 9; i++) bad += od[i] != 1;
  CHECK(bad == 0);
  const uint8_t h[3] = {0, 27, 0}; /* x=0: cols {0,0,1}: 3*27/9 = 9; x=1: 9; x=2: 9 */
  xd_perturb_box_blur(h, 1, 3, 1, o);
  CHECK(o[0] == 9 && o[1] == 9 && o[2] == 9);
  const uint8_t t[3] = {0, 0, 3}; /* x=1: 3*3/9 = 1; x=2: 3*6/9 = 2; x=0: 0 */
  xd_perturb_box_blur(t, 1, 3, 1, o);
  CHECK(o[0] == 0 && o[1] == 1 && o[2] == 2);
  const uint8_t u[3] = {0, 0, 1}; /* x=1: 3/9 = 0.33 -> 0; x=2: 6/9 = 0.67 -> 1 */
  xd_perturb_box_blur(u, 1, 3, 1, o);
  CHECK(o[0] == 0 && o[1] == 0 && o[2] == 1);
}

/* Regions: central 60% of 128 -> round(25.6) = 26 -> [26, 102); 70% of 128 -> round(19.2) = 19 ->
 * [19, 109). On 20x20: box [4,16) x [3,17) = 12*14 = 168 of 400 pixels = 0.42; frame round(1.6) = 2 ->
 * 400 - 16*16 = 144 pixels = 0.36. */
static void test_cam_shares(void) {
  int lo, hi;
  xd_audit_central_range(128, 0.6, &lo, &hi);
  CHECK(lo == 26 && hi == 102);
  xd_audit_central_range(128, 0.7, &lo, &hi);
  CHECK(lo == 19 && hi == 109);
  xd_audit_central_range(20, 0.6, &lo, &hi);
  CHECK(lo == 4 && hi == 16);
  float cam[400];
  for (int i = 0; i < 400; i++) cam[i] = 1;
  double c = -1, b = -1;
  CHECK(xd_cam_shares(cam, 20, 20, 0.6, 0.7, 0.08, &c, &b) == 0);
  CHECK_CLOSE(c, 168.0 / 400, 0, 1e-12);
  CHECK_CLOSE(b, 144.0 / 400, 0, 1e-12);
  memset(cam, 0, sizeof cam);
  CHECK(xd_cam_shares(cam, 20, 20, 0.6, 0.7, 0.08, &c, &b) == -1);
  cam[10 * 20 + 10] = 0.5f; /* centre only */
  CHECK(xd_cam_shares(cam, 20, 20, 0.6, 0.7, 0.08, &c, &b) == 0);
  CHECK(c == 1.0 && b == 0.0);
  cam[0] = 0.5f; /* a corner as heavy as the centre: half the mass in the frame */
  CHECK(xd_cam_shares(cam, 20, 20, 0.6, 0.7, 0.08, &c, &b) == 0);
  CHECK(c == 0.5 && b == 0.5);
}

int main(int argc, char **argv) {
  test_identities();
  test_table();
  test_constant();
  test_scale_x();
  test_border();
  test_top_corners();
  test_tone();
  test_down_nearest();
  test_box();
  test_cam_shares();
  return check_done("test_audit_perturb");
}
