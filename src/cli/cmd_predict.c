/* xray-dp predict: probabilities for image files, through the same decode and resize as pack. */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_write.h>

#include "args.h"
#include "checkpoint.h"
#include "cli.h"
#include "image.h"
#include "infer.h"

static const char *HELP =
    "usage: xray-dp predict --ckpt C.h5 IMAGE... [--gradcam DIR] [--threshold 0.5|auto|T] [--json]\n"
    "\n"
    "Decodes each image exactly as `pack` does (grayscale, area-average resize to the model's input) and\n"
    "prints one line per image: path<TAB>probability<TAB>label, where probability is P(class 1) and label\n"
    "is class 1 when probability >= threshold (default 0.5; auto = the checkpoint's, chosen on validation\n"
    "for >= 95% sensitivity). Unreadable images are reported on stderr and skipped; the exit status is 1\n"
    "if any image failed.\n"
    "  --gradcam DIR   also write DIR/<image name>_p<probability>.png (at least 384x384): the Grad-CAM\n"
    "                  heat map of the last conv layer for the class-1 score over the X-ray, normalised\n"
    "                  per image (dark blue to red = weak to strongest evidence; uncoloured = none)\n"
    "  --json          one JSON object: {\"threshold\": T, \"predictions\": [{\"path\", \"probability\",\n"
    "                  \"label\"} or {\"path\", \"error\"}, ...]}\n";

/* A perceptual blue-to-red map (piecewise "turbo"-like), value in [0,1]. */
static void colormap(float v, float rgb[3]) {
  static const float stops[6][3] = {{0.19f, 0.07f, 0.23f}, {0.16f, 0.47f, 0.93f}, {0.10f, 0.83f, 0.62f},
                                    {0.65f, 0.99f, 0.23f}, {0.98f, 0.60f, 0.13f}, {0.80f, 0.10f, 0.05f}};
  float t = v * 5;
  int i = (int)t;
  if (i >= 5) i = 4;
  float f = t - i;
  for (int k = 0; k < 3; k++) rgb[k] = stops[i][k] * (1 - f) + stops[i + 1][k] * f;
}

/* Display size of the overlays: model inputs are small (128), and a heat map over a 128-pixel X-ray is
 * hard to read, so the X-ray is decoded again at >= 384 pixels and the map upsampled to it. */
static int gradcam_size(int H) { return H >= 384 ? H : 384; }

/* DIR/<image name>_p<probability>.png; a name already written by this run (same file name in two
 * folders) gets the image's position in the argument list appended, so no overlay is overwritten. */
static void gradcam_name(const char *dir, const char *path, float prob, int index, char **done, int ndone, char *out,
                         size_t cap) {
  char *dup = xd_strdup(path);
  const char *base = dup ? basename(dup) : "image";
  char *dot = dup ? strrchr(base, '.') : NULL;
  if (dot && dot != base) *dot = 0;
  snprintf(out, cap, "%s/%s_p%.3f.png", dir, base, prob);
  for (int i = 0; i < ndone; i++)
    if (done[i] && !strcmp(done[i], out)) {
      snprintf(out, cap, "%s/%s_%d_p%.3f.png", dir, base, index + 1, prob);
      break;
    }
  free(dup);
}

static int write_gradcam(const char *out, const uint8_t *img, const float *cam, int H, int W, xd_err *e) {
  uint8_t *rgb = malloc((size_t)H * W * 3);
  if (!rgb) return xd_fail(e, "%s: out of memory", out);
  for (int i = 0; i < H * W; i++) {
    float c[3], g = img[i] / 255.0f;
    colormap(cam[i], c);
    /* no evidence: the plain X-ray; strong evidence: mostly colour, the anatomy still visible */
    float t = (cam[i] - 0.15f) / 0.85f, a = t <= 0 ? 0 : 0.7f * sqrtf(t);
    for (int k = 0; k < 3; k++) {
      float v = (1 - a) * g + a * c[k];
      rgb[3 * i + k] = (uint8_t)lrintf(255.0f * (v < 0 ? 0 : v > 1 ? 1 : v));
    }
  }
  char tmp[4200];
  xd_tmp_name(out, tmp, sizeof tmp);
  int ok = stbi_write_png(tmp, W, H, 3, rgb, W * 3);
  free(rgb);
  if (!ok) return xd_fail(e, "%s: cannot write PNG", tmp);
  return xd_commit_file(tmp, out, e);
}

static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') printf("\\%c", ch);
    else if (ch < 0x20) printf("\\u%04x", ch);
    else putchar(ch);
  }
  putchar('"');
}

int cmd_predict(int argc, char **argv) {
  const char *cmd = "predict", *ckpt = NULL, *gradcam = NULL, *thr_s = "0.5";
  int json = 0, nimg = 0;
  char **imgs = calloc((size_t)argc + 1, sizeof *imgs);
  if (!imgs) return 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(HELP, stdout);
      free(imgs);
      return 0;
    }
    if (!strcmp(a, "--json")) json = 1;
    else if (!strcmp(a, "--ckpt") || !strcmp(a, "--gradcam") || !strcmp(a, "--threshold")) {
      if (!(v = arg_value(cmd, argc, argv, &i))) { free(imgs); return 2; }
      if (a[2] == 'c') ckpt = v;
      else if (a[2] == 'g') gradcam = v;
      else thr_s = v;
    } else if (a[0] == '-' && a[1] == '-') {
      fprintf(stderr, "xray-dp predict: unknown option '%s' (see xray-dp predict --help)\n", a);
      free(imgs);
      return 2;
    } else {
      imgs[nimg++] = argv[i];
    }
  }
  if (!ckpt || nimg == 0) {
    fprintf(stderr, "xray-dp predict: needs --ckpt C.h5 and at least one image (see xray-dp predict --help)\n");
    free(imgs);
    return 2;
  }
  double thr = 0.5;
  int thr_auto = !strcmp(thr_s, "auto");
  if (!thr_auto && arg_double(cmd, "--threshold", thr_s, 0, 1, &thr)) {
    free(imgs);
    return 2;
  }
  xd_err e = {{0}};
  xd_model m;
  xd_train_state st;
  xd_ckpt_meta meta;
  if (xd_checkpoint_load(ckpt, &m, &st, &meta, &e)) {
    fprintf(stderr, "xray-dp predict: %s\n", e.msg);
    free(imgs);
    return 1;
  }
  if (thr_auto) thr = st.threshold;
  if (gradcam && xd_mkdir_p(gradcam, &e)) {
    fprintf(stderr, "xray-dp predict: %s\n", e.msg);
    xd_model_free(&m);
    free(imgs);
    return 1;
  }
  xd_workspace ws;
  const int H = m.in_h, W = m.in_w, D = gradcam_size(H);
  uint8_t *px = malloc((size_t)H * W), *big = malloc((size_t)D * D);
  float *cam = malloc((size_t)D * D * sizeof(float));
  char **done = calloc((size_t)nimg, sizeof *done);
  if (!px || !big || !cam || !done || xd_workspace_alloc(&ws, &m, 1, &e)) {
    fprintf(stderr, "xray-dp predict: %s\n", px && big && cam && done ? e.msg : "out of memory");
    free(px);
    free(big);
    free(cam);
    free(done);
    xd_model_free(&m);
    free(imgs);
    return 1;
  }
  const char *pos = meta.nclasses > 1 ? meta.class_names[1] : "1", *neg = meta.nclasses > 1 ? meta.class_names[0] : "0";
  int failed = 0;
  if (json) printf("{\"threshold\": %.9g, \"predictions\": [", thr);
  for (int i = 0; i < nimg; i++) {
    float p;
    int rc = xd_image_load_gray(imgs[i], H, px, &e);
    if (rc == 0 && H != W) rc = xd_fail(&e, "%s: model input is not square", ckpt);
    if (rc == 0) xd_infer(&m, &ws, 1, px, NULL, &p, NULL);
    if (rc == 0 && gradcam) {
      float p2;
      char out[4096];
      if (xd_gradcam(&m, &ws, px, D, D, cam, &p2) != 0)
        rc = xd_fail(&e, "%s: model has no conv layer for Grad-CAM", ckpt);
      if (rc == 0) rc = xd_image_load_gray(imgs[i], D, big, &e);
      if (rc == 0) {
        gradcam_name(gradcam, imgs[i], p, i, done, i, out, sizeof out);
        rc = write_gradcam(out, big, cam, D, D, &e);
      }
      if (rc == 0) done[i] = xd_strdup(out);
    }
    if (json) {
      printf("%s{\"path\": ", i ? ", " : "");
      json_str(imgs[i]);
      if (rc == 0) {
        printf(", \"probability\": %.9g, \"label\": ", p);
        json_str(p >= thr ? pos : neg);
      } else {
        printf(", \"error\": ");
        json_str(e.msg);
      }
      putchar('}');
    } else if (rc == 0) {
      printf("%s\t%.9g\t%s\n", imgs[i], p, p >= thr ? pos : neg);
    }
    if (rc) {
      fprintf(stderr, "xray-dp predict: %s\n", e.msg);
      failed++;
    }
  }
  if (json) printf("]}\n");
  xd_workspace_free(&ws, &m);
  xd_model_free(&m);
  for (int i = 0; i < nimg; i++) free(done[i]);
  free(done);
  free(px);
  free(big);
  free(cam);
  free(imgs);
  return failed ? 1 : 0;
}
