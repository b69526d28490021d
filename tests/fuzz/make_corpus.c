/* Writes the seed corpora of the image and model fuzz targets: make_corpus IMAGE_DIR MODEL_DIR.
 * Images: every kind tests/test_rel_image.c checks (img_gen.h), small. Models: every preset at two input
 * sizes, and descriptions that use every layer kind, activation and option of docs/models.md. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz/img_gen.h"
#include "model.h"

static int put(const char *dir, const char *name, const void *b, size_t n) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "wb");
  if (!f) return -1;
  size_t k = n ? fwrite(b, 1, n, f) : 0;
  return (fclose(f) == 0 && k == n) ? 0 : -1;
}

static const char *models[][2] = {
    {"chain_all_acts.txt",
     "# every activation, pools, flatten\ninput 1x24x20\nconv 4 3x3 relu pad=same\nconv 4 3 leakyrelu stride=2\n"
     "conv 3 2x3 elu pad=1 bias=0\nbatchnorm tanh eps=1e-3 momentum=0.2\nmaxpool 2x2\nconv 2 1x1 sigmoid\n"
     "avgpool 2 stride=1\nlinear\nflatten\ndense 6 relu\ndropout 0.25\ndense 3 softmax\n"},
    {"graph_add.txt",
     "input 1x16x16\nstandardize eps=1e-2\nconv 4 3x3 pad=1 bias=0 name=a\nbatchnorm relu\nconv 4 3x3 pad=1 name=b\n"
     "add a relu name=s\nmaxpool 3x3 stride=2 in=s name=p\nconv 4 1x1 name=q\nadd p\nglobalavgpool\n"
     "dense 1 sigmoid\n"},
    {"graph_input.txt",
     "input 2x9x7\nconv 2 3x3 pad=same name=x1\nadd input relu\navgpool 2x1 stride=1x1\nmaxpool 1x2 stride=2x1\n"
     "flatten\nbatchnorm\nrelu\nsoftmax\ndense 2 softmax\n"},
    {"crlf_comments.txt", "# comment\r\ninput 1x8x8   # trailing comment\r\n\r\n\tconv 2 3x3 relu\r\nflatten\r\ndense 1 sigmoid\r\n"},
    {"tiny.txt", "input 1x1x1\nflatten\ndense 1 sigmoid\n"},
};

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: make_corpus IMAGE_DIR MODEL_DIR\n");
    return 2;
  }
  mkdir(argv[1], 0755);
  mkdir(argv[2], 0755);
  int files = 0, fails = 0;
  /* images */
  struct {
    const char *name;
    gen_jpeg_opts o;
  } jp[] = {
      {"gray.jpg", {24, 20, GEN_JPEG_GRAY, 0, 0, 0, 0, 80}},  {"ycc420.jpg", {17, 19, GEN_JPEG_YCC420, 0, 0, 0, 0, 75}},
      {"ycc444_rst.jpg", {16, 16, GEN_JPEG_YCC444, 0, 1, 0, 0, 80}}, {"rgb.jpg", {12, 12, GEN_JPEG_RGB, 0, 0, 0, 0, 80}},
      {"cmyk.jpg", {12, 10, GEN_JPEG_CMYK, 0, 0, 0, 0, 80}}, {"ycck.jpg", {10, 12, GEN_JPEG_YCCK, 0, 0, 0, 0, 80}},
      {"prog.jpg", {24, 16, GEN_JPEG_YCC420, 1, 0, 0, 0, 80}}, {"prog_gray.jpg", {16, 24, GEN_JPEG_GRAY, 1, 0, 0, 0, 80}},
      {"arith.jpg", {16, 16, GEN_JPEG_YCC420, 0, 0, 1, 0, 80}}, {"arith_prog.jpg", {16, 16, GEN_JPEG_GRAY, 1, 0, 1, 0, 80}},
      {"1x1.jpg", {1, 1, GEN_JPEG_GRAY, 0, 0, 0, 0, 80}},
  };
  for (size_t i = 0; i < sizeof jp / sizeof jp[0]; i++) {
    size_t n = 0;
    unsigned char *b = gen_jpeg(&jp[i].o, &n);
    fails += !b || put(argv[1], jp[i].name, b, n) != 0;
    files++;
    free(b);
  }
  struct {
    const char *name;
    gen_png_opts o;
  } pn[] = {
      {"gray8.png", {16, 12, PNG_COLOR_TYPE_GRAY, 8, 0, 0}},   {"gray1.png", {13, 5, PNG_COLOR_TYPE_GRAY, 1, 0, 0}},
      {"gray4_il.png", {9, 11, PNG_COLOR_TYPE_GRAY, 4, 1, 0}}, {"gray16.png", {8, 8, PNG_COLOR_TYPE_GRAY, 16, 0, 0}},
      {"rgb8_trns.png", {10, 9, PNG_COLOR_TYPE_RGB, 8, 0, 1}}, {"rgb16.png", {7, 9, PNG_COLOR_TYPE_RGB, 16, 0, 0}},
      {"pal4_trns.png", {12, 12, PNG_COLOR_TYPE_PALETTE, 4, 0, 1}}, {"pal8_il.png", {10, 10, PNG_COLOR_TYPE_PALETTE, 8, 1, 0}},
      {"ga8.png", {8, 8, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, 0}},  {"rgba16_il.png", {9, 7, PNG_COLOR_TYPE_RGBA, 16, 1, 0}},
      {"1x1.png", {1, 1, PNG_COLOR_TYPE_GRAY, 8, 0, 0}},
  };
  for (size_t i = 0; i < sizeof pn / sizeof pn[0]; i++) {
    size_t n = 0;
    unsigned char *b = gen_png(&pn[i].o, &n);
    fails += !b || put(argv[1], pn[i].name, b, n) != 0;
    files++;
    free(b);
  }
  size_t n = 0;
  unsigned char *b;
  b = gen_bmp(9, 7, 24, &n), fails += !b || put(argv[1], "rgb24.bmp", b, n) != 0, files++, free(b);
  b = gen_bmp(6, 5, 32, &n), fails += !b || put(argv[1], "rgba32.bmp", b, n) != 0, files++, free(b);
  b = gen_bmp(7, 6, 8, &n), fails += !b || put(argv[1], "pal8.bmp", b, n) != 0, files++, free(b);
  b = gen_bmp_os2(5, 4, &n), fails += !b || put(argv[1], "os2.bmp", b, n) != 0, files++, free(b);
  b = gen_gif(12, 9, &n), fails += !b || put(argv[1], "gray.gif", b, n) != 0, files++, free(b);
  b = gen_pnm(10, 8, 0, 0, &n), fails += !b || put(argv[1], "gray.pgm", b, n) != 0, files++, free(b);
  b = gen_pnm(6, 5, 1, 0, &n), fails += !b || put(argv[1], "rgb.ppm", b, n) != 0, files++, free(b);
  b = gen_pnm(6, 6, 0, 1, &n), fails += !b || put(argv[1], "gray16.pgm", b, n) != 0, files++, free(b);
  /* models: the presets (as train builds them) at two sizes, then the handwritten ones */
  char names[512];
  snprintf(names, sizeof names, "%s", xd_model_preset_names());
  for (char *save = NULL, *tok = strtok_r(names, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    static const int sizes[2] = {64, 128};
    for (int k = 0; k < 2; k++) {
      char *t = xd_model_preset_text(tok, 1, sizes[k], sizes[k]);
      if (!t) continue;
      xd_model m;
      memset(&m, 0, sizeof m);
      xd_err e;
      if (xd_model_build(&m, t, tok, &e) != 0) { /* too small an input for this preset */
        free(t);
        continue;
      }
      xd_model_free(&m);
      char fn[128];
      snprintf(fn, sizeof fn, "preset_%s_%d.txt", tok, sizes[k]);
      fails += put(argv[2], fn, t, strlen(t)) != 0;
      files++;
      free(t);
    }
  }
  for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
    fails += put(argv[2], models[i][0], models[i][1], strlen(models[i][1])) != 0;
    files++;
  }
  printf("make_corpus: %d files, %d failed\n", files, fails);
  return fails ? 1 : 0;
}
