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
#include "ensemble.h"
#include "image.h"
#include "infer.h"

static const char *HELP =
    "usage: xray-dp predict --ckpt C.h5 [--ckpt C2.h5 ...] IMAGE... [--gradcam DIR] [--threshold 0.5|auto|T]\n"
    "                       [--tta] [--val-data V.h5] [--json]\n"
    "\n"
    "Decodes each image exactly as `pack` does (grayscale, area-average resize to the model's input) and\n"
    "prints one line per image: path<TAB>probability<TAB>label, where probability is P(class 1) and label\n"
    "is class 1 when probability >= threshold (default 0.5; auto = the checkpoint's, chosen on validation\n"
    "for >= 95% sensitivity). Unreadable images are reported on stderr and skipped; the exit status is 1\n"
    "if any image failed. The probabilities are bitwise those of `eval --scores` for the same pixels and\n"
    "the same --ckpt/--tta options.\n"
    "  --ckpt C.h5     repeat for an ensemble: the mean probability of the checkpoints (same input size,\n"
    "                  output layer and class names, as for eval)\n"
    "  --tta           test-time augmentation: mean over the image and 8 fixed variants (zoom in/out 6%,\n"
    "                  horizontal stretch/squeeze 6%, shifts of 3%; bilinear, edge-clamped; no flips)\n"
    "  --threshold auto  one checkpoint without --tta: the checkpoint's threshold. Several checkpoints or\n"
    "                  --tta: chosen afresh, by the same rule, on the val split of --val-data V.h5 with\n"
    "                  these probabilities (required then: a stored threshold does not fit them)\n"
    "  --gradcam DIR   also write DIR/<image name>_p<probability>.png (at least 384x384): the Grad-CAM\n"
    "                  heat map of the last feature map before the head (of the first --ckpt) for the class-1 score over\n"
    "                  the X-ray, normalised per image (dark blue to red = weak to strongest evidence;\n"
    "                  uncoloured = none); the probability in the name is the one printed\n"
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
  const char *cmd = "predict", *gradcam = NULL, *thr_s = "0.5", *val_data = NULL;
  int json = 0, nimg = 0, tta = 0;
  cli_ensemble E;
  memset(&E, 0, sizeof E);
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
    else if (!strcmp(a, "--tta")) tta = 1;
    else if (!strcmp(a, "--ckpt") || !strcmp(a, "--gradcam") || !strcmp(a, "--threshold") || !strcmp(a, "--val-data")) {
      if (!(v = arg_value(cmd, argc, argv, &i))) { free(imgs); return 2; }
      if (a[2] == 'c') {
        if (E.k == XD_MAX_CKPTS) {
          fprintf(stderr, "xray-dp predict: --ckpt: at most %d checkpoints\n", XD_MAX_CKPTS);
          free(imgs);
          return 2;
        }
        E.path[E.k++] = v;
      } else if (a[2] == 'g') gradcam = v;
      else if (a[2] == 'v') val_data = v;
      else thr_s = v;
    } else if (a[0] == '-' && a[1] == '-') {
      fprintf(stderr, "xray-dp predict: unknown option '%s' (see xray-dp predict --help)\n", a);
      free(imgs);
      return 2;
    } else {
      imgs[nimg++] = argv[i];
    }
  }
  if (!E.k || nimg == 0) {
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
  const int fresh_thr = thr_auto && (E.k > 1 || tta);
  if (fresh_thr != (val_data != NULL)) {
    fprintf(stderr, fresh_thr ? "xray-dp predict: --threshold auto with several --ckpt or --tta needs --val-data V.h5 "
                                "(the threshold is chosen on its val split; see xray-dp predict --help)\n"
                              : "xray-dp predict: --val-data is only used with --threshold auto and several --ckpt "
                                "or --tta\n");
    free(imgs);
    return 2;
  }
  xd_err e = {{0}};
  /* a batch for scoring the val split; one image at a time otherwise (same numbers either way) */
  if (cli_ensemble_load(&E, &e) || cli_ensemble_workspaces(&E, fresh_thr ? 64 : 1, &e) ||
      (fresh_thr && cli_ensemble_val_threshold(&E, val_data, tta, &thr, &e)) || (gradcam && xd_mkdir_p(gradcam, &e))) {
    fprintf(stderr, "xray-dp predict: %s\n", e.msg);
    cli_ensemble_free(&E);
    free(imgs);
    return 1;
  }
  if (thr_auto && !fresh_thr) thr = E.st[0].threshold;
  xd_model *mp = &E.m[0];
  xd_workspace *wsp = &E.ws[0];
  const char *ckpt = E.path[0];
  const xd_ckpt_meta *metap = &E.meta[0];
  const int H = mp->in_h, W = mp->in_w, D = gradcam_size(H);
  uint8_t *px = malloc((size_t)H * W), *big = malloc((size_t)D * D);
  float *cam = malloc((size_t)D * D * sizeof(float));
  char **done = calloc((size_t)nimg, sizeof *done);
  if (!px || !big || !cam || !done) {
    fprintf(stderr, "xray-dp predict: out of memory\n");
    free(px);
    free(big);
    free(cam);
    free(done);
    cli_ensemble_free(&E);
    free(imgs);
    return 1;
  }
  const char *pos = metap->nclasses > 1 ? metap->class_names[1] : "1",
             *neg = metap->nclasses > 1 ? metap->class_names[0] : "0";
  int failed = 0;
  if (json) printf("{\"threshold\": %.9g, \"predictions\": [", thr);
  for (int i = 0; i < nimg; i++) {
    float p;
    int rc = xd_image_load_gray(imgs[i], H, px, &e);
    if (rc == 0 && H != W) rc = xd_fail(&e, "%s: model input is not square", ckpt);
    if (rc == 0) rc = xd_infer_ensemble(E.k, E.m, E.ws, 1, px, tta, &p, &e);
    if (rc == 0 && gradcam) {
      float p2;
      char out[4096];
      if (xd_gradcam(mp, wsp, px, D, D, cam, &p2) != 0)
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
  cli_ensemble_free(&E);
  for (int i = 0; i < nimg; i++) free(done[i]);
  free(done);
  free(px);
  free(big);
  free(cam);
  free(imgs);
  return failed ? 1 : 0;
}
