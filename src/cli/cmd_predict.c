/* xray-dp predict: probabilities for image files, through the same decode and resize as pack. */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "checkpoint.h"
#include "cli.h"
#include "ensemble.h"
#include "image.h"
#include "infer.h"
#include "metrics.h"
#include "render.h"

static const char *HELP =
    "usage: xray-dp predict --ckpt C.h5 [--ckpt C2.h5 ...] IMAGE... [--gradcam DIR [--gradcam-class WHICH]]\n"
    "                       [--threshold 0.5|auto|T] [--tta] [--val-data V.h5] [--json] [--mem-limit SIZE]\n"
    "\n"
    "Decodes each image exactly as `pack` does (grayscale, area-average resize to the model's input) and\n"
    "prints one line per image: path<TAB>probability<TAB>label, where probability is P(class 1) and label\n"
    "is class 1 when probability >= threshold (default 0.5; auto = the checkpoint's, chosen on validation\n"
    "for >= 95% sensitivity). In the path and the label a backslash, tab, newline and carriage return are\n"
    "written as \\\\, \\t, \\n and \\r, so every line has 3 fields. Unreadable images, and images the model\n"
    "gives a non-finite probability (NaN weights), are reported on stderr (one line each, naming the image)\n"
    "and skipped; the exit status is 1 if any image failed. The probabilities are bitwise those of\n"
    "`eval --scores` for the same pixels and the same --ckpt/--tta options.\n"
    "Output: the results are printed when all images are done (stdout is checked: a full disk is an error).\n"
    "Each Grad-CAM PNG is written to NAME.tmp.<pid> and renamed into place only when complete and flushed;\n"
    "if one cannot be written (a full disk, a file size limit) predict stops with one line naming it, exit\n"
    "1, no temporary left and nothing on stdout (the PNGs completed before stay, each whole). A PNG name\n"
    "that is an input (an image or checkpoint given) gets the image's position appended instead.\n"
    "Temporaries of dead earlier runs (DIR/*.png.tmp.<pid> whose process is gone) are removed first.\n"
    "  --ckpt C.h5     repeat for an ensemble: the mean probability of the checkpoints (same input size,\n"
    "                  output layer and class names, as for eval)\n"
    "  --tta           test-time augmentation: mean over the image and 8 fixed variants (zoom in/out 6%,\n"
    "                  horizontal stretch/squeeze 6%, shifts of 3%; bilinear, edge-clamped; no flips)\n"
    "  --threshold auto  one checkpoint without --tta: the checkpoint's threshold (an error if it is not\n"
    "                  a number in [0, 1]). Several checkpoints or\n"
    "                  --tta: chosen afresh, by the same rule, on the val split of --val-data V.h5 with\n"
    "                  these probabilities (required then: a stored threshold does not fit them)\n"
    "  --gradcam DIR   also write DIR/<image name>_p<probability>.png: the Grad-CAM heat map (of the last\n"
    "                  feature map before the head, first --ckpt) over the X-ray at the source image's aspect\n"
    "                  ratio (longest side 512), with a panel under it: the call, P(class 1), the threshold,\n"
    "                  the class the map is for and a colour bar (weak to strong evidence, relative to this\n"
    "                  image's maximum; uncoloured below 20% of it; opacity at most 50%, so the anatomy\n"
    "                  stays visible); the probability in the name is the one printed\n"
    "  --gradcam-class predicted|positive|negative|both\n"
    "                  whose evidence the map shows (default predicted: the called class; for a sigmoid\n"
    "                  model the evidence for class 0 is the Grad-CAM of the negated logit); both writes two\n"
    "                  files, DIR/<image name>_p<probability>_<class name>.png\n"
    "  --json          one JSON object: {\"threshold\": T, \"predictions\": [{\"path\", \"probability\",\n"
    "                  \"label\"} or {\"path\", \"error\"}, ...]}; always valid JSON: bytes of a path that are\n"
    "                  not UTF-8 become U+FFFD, control characters are escaped\n"
    ARG_MEM_LIMIT_HELP
    "Exit status: 0 success, 2 bad usage, 1 any other error (one line on stderr naming the file).\n";

/* DIR/<image name>_p<probability>.png; a name already written by this run (same file name in two
 * folders) gets the image's position in the argument list appended, so no overlay is overwritten. */
/* (device, inode) of every input file, sorted: an overlay must never be renamed over one. */
typedef struct {
  dev_t dev;
  ino_t ino;
} file_id;

static int cmp_id(const void *a, const void *b) {
  const file_id *x = a, *y = b;
  if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
  return (x->ino > y->ino) - (x->ino < y->ino);
}

static int is_input(const file_id *ids, int n, const char *path) {
  struct stat st;
  if (n == 0 || stat(path, &st) != 0) return 0;
  file_id k = {st.st_dev, st.st_ino};
  return bsearch(&k, ids, (size_t)n, sizeof k, cmp_id) != NULL;
}

/* DIR/<image name>_p<probability>.png; a name already written by this run (same file name in two
 * folders), or one that is an input file, gets the image's position in the argument list appended, so
 * no overlay is overwritten and no input replaced. */
static void gradcam_name(const char *dir, const char *path, float prob, const char *cls, int index, char **done,
                         int ndone, const file_id *ids, int nids, char *out, size_t cap) {
  char *dup = xd_strdup(path);
  const char *base = dup ? basename(dup) : "image";
  char *dot = dup ? strrchr(base, '.') : NULL;
  if (dot && dot != base) *dot = 0;
  char suf[80] = ""; /* _<class name>, only for --gradcam-class both; characters other than [A-Za-z0-9-] become _ */
  if (cls) {
    snprintf(suf, sizeof suf, "_%s", cls);
    for (char *q = suf + 1; *q; q++)
      if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '-')) *q = '_';
  }
  snprintf(out, cap, "%s/%s_p%.3f%s.png", dir, base, prob, suf);
  int clash = is_input(ids, nids, out);
  for (int i = 0; i < ndone && !clash; i++) clash = done[i] && !strcmp(done[i], out);
  if (clash) snprintf(out, cap, "%s/%s_%d_p%.3f%s.png", dir, base, index + 1, prob, suf);
  free(dup);
}

/* the bytes of an image file (for the Grad-CAM picture: its aspect ratio and a sharper X-ray) */
static int read_all(const char *path, unsigned char **buf, size_t *len, xd_err *e) {
  *buf = NULL;
  *len = 0;
  XD_TRY(xd_check_regular(path, e));
  FILE *f = fopen(path, "rb");
  if (!f) return xd_fail(e, "%s: %s", path, strerror(errno));
  size_t cap = 0, n = 0;
  unsigned char *b = NULL;
  for (;;) {
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 1 << 16;
      unsigned char *nb = realloc(b, nc);
      if (!nb) {
        free(b);
        fclose(f);
        return xd_fail(e, "%s: out of memory reading it", path);
      }
      b = nb;
      cap = nc;
    }
    size_t r = fread(b + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(b);
    return xd_fail(e, "%s: read error", path);
  }
  *buf = b;
  *len = n;
  return 0;
}

static int write_png(const char *out, const unsigned char *png, size_t len, xd_err *e) {
  /* encoded in memory, then written with every write, the fsync and the close checked (stb's own
   * stbi_write_png ignores write errors: a full disk left a truncated PNG and exit 0) */
  char target[4096];
  int r = xd_output_check(out, 0, target, sizeof target, e);
  if (r == 0) r = xd_write_file_atomic(target, png, len, e);
  return r == 0 ? 0 : -1;
}

static void err_line(const char *msg) {
  char m[XD_ERR_MAX];
  snprintf(m, sizeof m, "%s", msg[0] ? msg : "unknown error");
  xd_msg_oneline(m);
  fprintf(stderr, "xray-dp predict: %s\n", m);
}

/* (dev, ino) of the inputs, so no Grad-CAM overlay replaces one. */
static file_id *input_ids(char **imgs, int nimg, const cli_ensemble *E, const char *val_data, int *n) {
  file_id *ids = malloc(sizeof *ids * ((size_t)nimg + (size_t)E->k + 1));
  *n = 0;
  if (!ids) return NULL;
  struct stat st;
  for (int i = 0; i < nimg + E->k + 1; i++) {
    const char *p = i < nimg ? imgs[i] : i < nimg + E->k ? E->path[i - nimg] : val_data;
    if (p && stat(p, &st) == 0) ids[(*n)++] = (file_id){st.st_dev, st.st_ino};
  }
  qsort(ids, (size_t)*n, sizeof *ids, cmp_id);
  return ids;
}

int cmd_predict(int argc, char **argv) {
  const char *cmd = "predict", *gradcam = NULL, *gc_class = "predicted", *thr_s = "0.5", *val_data = NULL;
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
    else if (!strcmp(a, "--gradcam-class")) {
      if (!(v = arg_value(cmd, argc, argv, &i))) { free(imgs); return 2; }
      if (strcmp(v, "predicted") && strcmp(v, "positive") && strcmp(v, "negative") && strcmp(v, "both")) {
        fprintf(stderr, "xray-dp predict: --gradcam-class: '%s' is not predicted, positive, negative or both\n", v);
        free(imgs);
        return 2;
      }
      gc_class = v;
    }
    else if (!strcmp(a, "--mem-limit")) {
      if (!(v = arg_value(cmd, argc, argv, &i)) || arg_mem_limit(cmd, v)) { free(imgs); return 2; }
    } else if (!strcmp(a, "--ckpt") || !strcmp(a, "--gradcam") || !strcmp(a, "--threshold") || !strcmp(a, "--val-data")) {
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
  if (gradcam && !gradcam[0]) {
    fprintf(stderr, "xray-dp predict: --gradcam: empty folder name\n");
    free(imgs);
    return 2;
  }
  if (!gradcam && strcmp(gc_class, "predicted")) {
    fprintf(stderr, "xray-dp predict: --gradcam-class needs --gradcam DIR\n");
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
  signal(SIGXFSZ, SIG_IGN); /* a file size limit becomes a write error with a message, not a signal */
  xd_err e = {{0}};
  /* a batch for scoring the val split; one image at a time otherwise (same numbers either way) */
  if (cli_ensemble_load(&E, &e) || cli_ensemble_workspaces(&E, fresh_thr ? 64 : 1, &e) ||
      (fresh_thr && cli_ensemble_val_threshold(&E, val_data, tta, &thr, &e)) || (gradcam && xd_mkdir_p(gradcam, &e)) ||
      (gradcam && xd_clean_stale_tmp_suffix(gradcam, ".png") < 0)) {
    err_line(e.msg);
    cli_ensemble_free(&E);
    free(imgs);
    return 1;
  }
  if (thr_auto && !fresh_thr) {
    thr = E.st[0].threshold;
    if (!(thr >= 0 && thr <= 1) || !E.st[0].threshold_chosen) { /* a stored NaN or 2.0 would call every image negative */
      if (!(thr >= 0 && thr <= 1)) xd_fail(&e, "%s: the stored threshold %g is not a number in [0, 1]", E.path[0], thr);
      else xd_fail(&e, "%s: its threshold %g was not chosen (the run had no val split): give --threshold T", E.path[0], thr);
      err_line(e.msg);
      cli_ensemble_free(&E);
      free(imgs);
      return 1;
    }
  }
  xd_model *mp = &E.m[0];
  xd_workspace *wsp = &E.ws[0];
  const char *ckpt = E.path[0];
  const xd_ckpt_meta *metap = &E.meta[0];
  const int H = mp->in_h, W = mp->in_w;
  const int both = !strcmp(gc_class, "both");
  uint8_t *px = malloc((size_t)H * W);
  char **done = calloc((size_t)nimg * 2, sizeof *done);
  char *so_buf = NULL;
  size_t so_len = 0;
  FILE *so = open_memstream(&so_buf, &so_len); /* results, printed when every image is done */
  int nids = 0;
  file_id *ids = gradcam ? input_ids(imgs, nimg, &E, val_data, &nids) : NULL;
  int failed = 0, fatal = 0;
  if (!px || !done || !so || (gradcam && !ids)) {
    fprintf(stderr, "xray-dp predict: out of memory\n");
    fatal = 1;
    goto end;
  }
  char names[2048];
  cli_ensemble_names(&E, names, sizeof names);
  const char *pos = metap->nclasses > 1 ? metap->class_names[1] : "1",
             *neg = metap->nclasses > 1 ? metap->class_names[0] : "0";
  if (json) {
    fprintf(so, "{\"threshold\": %.9g, \"predictions\": [", thr); /* finite: checked above */
  }
  for (int i = 0; i < nimg && !fatal; i++) {
    float p = NAN;
    int rc = xd_image_load_gray(imgs[i], H, px, &e);
    if (rc == 0 && H != W) rc = xd_fail(&e, "%s: model input is not square", ckpt);
    if (rc == 0) rc = xd_infer_ensemble(E.k, E.m, E.ws, 1, px, tta, &p, &e);
    if (rc == 0 && !(p >= 0 && p <= 1))
      rc = xd_fail(&e, "%s: %s gives the probability %g, not a number in [0, 1] (non-finite weights or activations)",
                   imgs[i], names, isnan(p) ? NAN : (double)p);
    if (rc == 0 && gradcam) {
      unsigned char *src = NULL;
      size_t slen = 0;
      rc = read_all(imgs[i], &src, &slen, &e);
      for (int k = 0; rc == 0 && k < 1 + both; k++) {
        xd_gradcam_info gi = {p, thr, pos, neg, -1};
        if (both) gi.map_class = k == 0 ? (p >= thr) : !(p >= thr); /* the called class first */
        else if (!strcmp(gc_class, "positive")) gi.map_class = 1;
        else if (!strcmp(gc_class, "negative")) gi.map_class = 0;
        unsigned char *png = NULL;
        size_t plen = 0;
        char out[4096];
        rc = xd_gradcam_png(mp, wsp, ckpt, px, src, slen, imgs[i], &gi, &png, &plen, &e);
        if (rc != 0) break;
        gradcam_name(gradcam, imgs[i], p, both ? (gi.map_class ? pos : neg) : NULL, i, done, 2 * i + k, ids, nids,
                     out, sizeof out);
        if (write_png(out, png, plen, &e) != 0) {
          free(png);
          /* an output that cannot be written is not a bad image: stop, print no results */
          fatal = 1;
          break;
        }
        free(png);
        done[2 * i + k] = xd_strdup(out);
      }
      free(src);
      if (fatal) {
        err_line(e.msg);
        break;
      }
    }
    if (json) {
      fputs(i ? ", {\"path\": " : "{\"path\": ", so);
      xd_json_string(so, imgs[i]);
      if (rc == 0) {
        fprintf(so, ", \"probability\": %.9g, \"label\": ", p); /* in [0, 1]: checked above */
        xd_json_string(so, p >= thr ? pos : neg);
      } else {
        fputs(", \"error\": ", so);
        xd_json_string(so, e.msg[0] ? e.msg : "unknown error");
      }
      fputc('}', so);
    } else if (rc == 0) {
      xd_tsv_field(so, imgs[i]);
      fprintf(so, "\t%.9g\t", p);
      xd_tsv_field(so, p >= thr ? pos : neg);
      fputc('\n', so);
    }
    if (rc) {
      err_line(e.msg);
      failed++;
    }
  }
  if (json) fputs("]}\n", so);
end:
  if (so) {
    int bad = ferror(so);
    if (fclose(so) != 0) bad = 1;
    if (!fatal && bad) {
      fprintf(stderr, "xray-dp predict: out of memory composing the results\n");
      fatal = 1;
    }
    if (!fatal && xd_write_stdout(so_buf, so_len, &e) != 0) {
      err_line(e.msg);
      fatal = 1;
    }
  }
  free(so_buf);
  free(ids);
  cli_ensemble_free(&E);
  for (int i = 0; i < 2 * nimg && done; i++) free(done[i]);
  free(done);
  free(px);
  free(imgs);
  return failed || fatal ? 1 : 0;
}
