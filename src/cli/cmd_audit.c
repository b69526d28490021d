/* xray-dp audit: the shortcut audit of a checkpoint on one split (computation in src/audit.c). */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "audit.h"
#include "checkpoint.h"
#include "metrics.h"
#include "cli.h"
#include "dataset.h"

static const char *HELP_HEAD =
    "usage: xray-dp audit --ckpt C.h5 --data D.h5 [--split val] [--json] [--threads T]\n"
    "                     [--threshold auto|T] [--cam-images 200] [--perturb NAME,...] [--batch 64]\n"
    "                     [--mem-limit SIZE]\n"
    "\n"
    "Shortcut audit: does the model's diagnosis move under changes to the image that should not change\n"
    "it? Every image of the split is scored clean and under each perturbation below (applied to the\n"
    "stored uint8 image at the model's input size; deterministic; bilinear, edge-clamped resampling).\n"
    "One row per perturbation:\n"
    "  ROC-AUC     under the perturbation;  dAUC = that minus the clean ROC-AUC\n"
    "  flip rate   share of images whose predicted label (probability >= threshold) differs from the\n"
    "              clean one; ->pos / ->neg count the flips to class 1 / to class 0\n"
    "  mean|dp|    mean over images of |probability perturbed - probability clean| (max|dp|: the largest)\n"
    "Then Grad-CAM (last feature map before the head, class-1 score, map normalised to its maximum) on at most\n"
    "--cam-images images evenly spaced over the split: the average share of the map's mass inside the\n"
    "central thorax box (central 60% of the width x 70% of the height) and inside the outer frame (8%\n"
    "of the width/height on each side), next to those regions' share of the pixels (what a uniform map\n"
    "would give). All numbers are identical for any --threads and --batch. See docs/audit.md.\n"
    "\n"
    "perturbations (--perturb picks some, comma-separated; default: all but identity):\n";

static const char *HELP_TAIL =
    "\n"
    "options:\n"
    "  --split S          train, val or test (default val)\n"
    "  --threshold auto   the threshold stored in the checkpoint (default; chosen on validation for\n"
    "                     >= 95% sensitivity during training), or a number T in [0, 1]\n"
    "  --cam-images N     Grad-CAM on at most N images (default 200; 0 = skip Grad-CAM)\n"
    "  --threads T        OpenMP threads (default OMP_NUM_THREADS, else all cores); one process: do\n"
    "                     not launch under mpirun\n"
    "  --batch B          inference batch (default 64)\n"
    ARG_MEM_LIMIT_HELP
    "  --json             one JSON object on stdout: ckpt, data, split, n, positives, threshold,\n"
    "                     clean {roc_auc, sensitivity, specificity, positive_rate}, perturbations [{name,\n"
    "                     description, roc_auc, delta_auc, sensitivity, specificity, flip_rate,\n"
    "                     flips_to_pos, flips_to_neg, mean_abs_dprob, max_abs_dprob}], gradcam {images,\n"
    "                     empty, box_width, box_height, frame, center_share, border_share, center_area,\n"
    "                     border_area, center_share_pos, center_share_neg} or null (no conv layer, or\n"
    "                     --cam-images 0); undefined values are null; strings are valid UTF-8 (bytes\n"
    "                     of a file name that are not become U+FFFD)\n"
    "\n"
    "A non-finite probability (a model with NaN weights) is an error naming the image. The report is\n"
    "written to stdout when complete, and the write is checked (a full disk is an error, exit 1).\n"
    "Exit status: 0 ok, 2 bad usage, 1 any other error (one line on stderr naming the file); nothing is\n"
    "printed on stdout unless the whole audit succeeded.\n";

static void help(void) {
  fputs(HELP_HEAD, stdout);
  int cnt;
  const xd_perturbation *all = xd_perturbations(&cnt);
  for (int i = 0; i < cnt; i++) printf("  %-14s %s\n", all[i].name, all[i].what);
  fputs(HELP_TAIL, stdout);
}

static void jnum(FILE *f, double v) { xd_json_number(f, v); }

static void jstr(FILE *f, const char *s) { xd_json_string(f, s); }

static void print_json(FILE *f, const xd_audit_result *r, const char *ckpt, const char *data, const char *split) {
  fputs("{\"ckpt\": ", f);
  jstr(f, ckpt);
  fputs(", \"data\": ", f);
  jstr(f, data);
  fputs(", \"split\": ", f);
  jstr(f, split);
  fprintf(f, ", \"n\": %lld, \"positives\": %lld, \"threshold\": ", (long long)r->n, (long long)r->positives);
  jnum(f, r->threshold);
  fputs(", \"clean\": {\"roc_auc\": ", f);
  jnum(f, r->roc_auc);
  fputs(", \"sensitivity\": ", f);
  jnum(f, r->sensitivity);
  fputs(", \"specificity\": ", f);
  jnum(f, r->specificity);
  fputs(", \"positive_rate\": ", f);
  jnum(f, r->positive_rate);
  fputs("}, \"perturbations\": [", f);
  for (int i = 0; i < r->nrows; i++) {
    const xd_audit_row *w = &r->rows[i];
    fputs(i ? ", {\"name\": " : "{\"name\": ", f);
    jstr(f, w->p->name);
    fputs(", \"description\": ", f);
    jstr(f, w->p->what);
    const struct { const char *k; double v; } num[] = {
        {"roc_auc", w->roc_auc},         {"delta_auc", w->delta_auc},   {"sensitivity", w->sensitivity},
        {"specificity", w->specificity}, {"flip_rate", w->flip_rate},
    };
    for (size_t k = 0; k < sizeof num / sizeof num[0]; k++) {
      fprintf(f, ", \"%s\": ", num[k].k);
      jnum(f, num[k].v);
    }
    fprintf(f, ", \"flips_to_pos\": %lld, \"flips_to_neg\": %lld, \"mean_abs_dprob\": ", (long long)w->flips_to_pos,
            (long long)w->flips_to_neg);
    jnum(f, w->mean_abs_dprob);
    fputs(", \"max_abs_dprob\": ", f);
    jnum(f, w->max_abs_dprob);
    fputc('}', f);
  }
  fputs("], \"gradcam\": ", f);
  const xd_audit_cam *c = &r->cam;
  if (!c->available) {
    fputs("null", f);
  } else {
    fprintf(f, "{\"images\": %lld, \"empty\": %lld", (long long)c->images, (long long)c->empty);
    const struct { const char *k; double v; } num[] = {
        {"box_width", XD_AUDIT_BOX_W},     {"box_height", XD_AUDIT_BOX_H},       {"frame", XD_AUDIT_FRAME},
        {"center_share", c->center_share}, {"border_share", c->border_share},   {"center_area", c->center_area},
        {"border_area", c->border_area},   {"center_share_pos", c->center_share_pos},
        {"center_share_neg", c->center_share_neg},
    };
    for (size_t k = 0; k < sizeof num / sizeof num[0]; k++) {
      fprintf(f, ", \"%s\": ", num[k].k);
      jnum(f, num[k].v);
    }
    fputc('}', f);
  }
  fputs("}\n", f);
}

static void print_table(FILE *f, const xd_audit_result *r, const char *ckpt, const char *data, const char *split,
                        int thr_auto, const xd_dataset_info *info) {
  const char *pos = info->class_names[1], *neg = info->class_names[0];
  fprintf(f, "audit of %s on %s [%s]: %lld images (%lld %s), threshold %.4f%s\n", ckpt, data, split,
          (long long)r->n, (long long)r->positives, pos, r->threshold,
          thr_auto ? " (the checkpoint's, chosen on validation)" : "");
  fprintf(f, "clean: ROC-AUC %.4f  sensitivity %.4f  specificity %.4f  predicted %s %.4f\n\n", r->roc_auc,
          r->sensitivity, r->specificity, pos, r->positive_rate);
  fprintf(f, "%-14s %7s %8s %9s %5s %5s %9s %8s  %s\n", "perturbation", "ROC-AUC", "dAUC", "flip rate", "->pos",
          "->neg", "mean|dp|", "max|dp|", "what");
  for (int i = 0; i < r->nrows; i++) {
    const xd_audit_row *w = &r->rows[i];
    fprintf(f, "%-14s %7.4f %+8.4f %9.4f %5lld %5lld %9.4f %8.4f  %s\n", w->p->name, w->roc_auc, w->delta_auc,
            w->flip_rate, (long long)w->flips_to_pos, (long long)w->flips_to_neg, w->mean_abs_dprob, w->max_abs_dprob,
            w->p->what);
  }
  const xd_audit_cam *c = &r->cam;
  if (!c->available) {
    fprintf(f, "\nGrad-CAM: not computed (--cam-images 0, or the model has no conv layer)\n");
    return;
  }
  fprintf(f, "\nGrad-CAM (last feature map before the head, class-1 score) on %lld images evenly spaced over the split", (long long)c->images);
  if (c->empty) fprintf(f, " (%lld more with an all-zero map left out)", (long long)c->empty);
  fprintf(f, ":\n  mass in the central thorax box (%.0f%% x %.0f%%, %.1f%% of the pixels): %5.1f%%", 100 * XD_AUDIT_BOX_W,
          100 * XD_AUDIT_BOX_H, 100 * c->center_area, 100 * c->center_share);
  fprintf(f, "   (actual %s %.1f%%, actual %s %.1f%%)\n", pos, 100 * c->center_share_pos, neg, 100 * c->center_share_neg);
  fprintf(f, "  mass in the outer frame (%.0f%% each side, %.1f%% of the pixels):     %5.1f%%\n", 100 * XD_AUDIT_FRAME,
          100 * c->border_area, 100 * c->border_share);
}

static int env_ranks(void) {
  const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v && atoi(v) > 1) return atoi(v);
  }
  return 1;
}

int cmd_audit(int argc, char **argv) {
  const char *cmd = "audit", *ckpt = NULL, *data = NULL, *split = "val", *thr_s = "auto", *perturb = NULL;
  int json = 0;
  int64_t batch = 64, threads = 0, cam_images = 200;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      help();
      return 0;
    }
    if (!strcmp(a, "--json")) {
      json = 1;
      continue;
    }
    if (!strcmp(a, "--mem-limit")) {
      const char *mv = arg_value(cmd, argc, argv, &i);
      if (!mv || arg_mem_limit(cmd, mv)) return 2;
      continue;
    }
    const char **dst = !strcmp(a, "--ckpt") ? &ckpt : !strcmp(a, "--data") ? &data : !strcmp(a, "--split") ? &split
                     : !strcmp(a, "--threshold") ? &thr_s : !strcmp(a, "--perturb") ? &perturb : NULL;
    int64_t *idst = !strcmp(a, "--batch") ? &batch : !strcmp(a, "--threads") ? &threads
                  : !strcmp(a, "--cam-images") ? &cam_images : NULL;
    if (!dst && !idst) {
      fprintf(stderr, "xray-dp audit: unknown option '%s' (see xray-dp audit --help)\n", a);
      return 2;
    }
    if (!(v = arg_value(cmd, argc, argv, &i))) return 2;
    if (dst) *dst = v;
    else if (arg_int(cmd, a, v, idst == &cam_images ? 0 : 1, idst == &cam_images ? INT64_C(1) << 40 : 65536, idst))
      return 2;
  }
  if (!ckpt || !data) {
    fprintf(stderr, "xray-dp audit: --ckpt and --data are required (see xray-dp audit --help)\n");
    return 2;
  }
  if (strcmp(split, "train") && strcmp(split, "val") && strcmp(split, "test")) {
    fprintf(stderr, "xray-dp audit: --split: expected train, val or test, got '%s'\n", split);
    return 2;
  }
  double thr = 0.5;
  int thr_auto = !strcmp(thr_s, "auto");
  if (!thr_auto && arg_double(cmd, "--threshold", thr_s, 0, 1, &thr)) return 2;
  xd_audit_opts o = {.batch = (int)batch, .cam_images = cam_images};
  if (perturb) {
    char *list = xd_strdup(perturb), *save = NULL;
    for (char *t = list ? strtok_r(list, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
      const xd_perturbation *p = xd_perturbation_find(t);
      if (!p || o.nperturb >= XD_AUDIT_MAX_ROWS) {
        fprintf(stderr, "xray-dp audit: --perturb: %s '%s' (see xray-dp audit --help)\n",
                p ? "too many perturbations at" : "unknown perturbation", t);
        free(list);
        return 2;
      }
      o.perturb[o.nperturb++] = p;
    }
    free(list);
    if (o.nperturb == 0) {
      fprintf(stderr, "xray-dp audit: --perturb: expected a comma-separated list of names, got '%s'\n", perturb);
      return 2;
    }
  }
  if (env_ranks() > 1) {
    fprintf(stderr, "xray-dp audit: runs in one process; start it without mpirun (use --threads)\n");
    return 2;
  }
  if (threads > 0) omp_set_num_threads((int)threads);
  signal(SIGXFSZ, SIG_IGN); /* stdout past a file size limit: a write error with a message, not a signal */

  xd_err e = {{0}};
  xd_model m;
  xd_train_state st;
  xd_dataset *ds = NULL;
  xd_audit_result *r = calloc(1, sizeof *r);
  int have_m = 0, status = 0;
  int rc = r ? xd_checkpoint_load(ckpt, &m, &st, NULL, &e) : xd_fail(&e, "out of memory");
  have_m = r && rc == 0;
  if (rc == 0) rc = xd_dataset_open(&ds, data, split, &e);
  const xd_dataset_info *info = rc == 0 ? xd_dataset_get_info(ds) : NULL;
  if (rc == 0 && thr_auto && !(st.threshold >= 0 && st.threshold <= 1))
    rc = xd_fail(&e, "%s: the stored threshold %g is not a number in [0, 1]", ckpt, st.threshold);
  if (rc == 0 && thr_auto && !st.threshold_chosen)
    rc = xd_fail(&e, "%s: its threshold %g was not chosen (the run had no val split): give --threshold T", ckpt,
                 st.threshold);
  if (rc == 0 && (info->height != m.in_h || info->width != m.in_w || m.in_c != 1))
    rc = xd_fail(&e, "%s: images are %dx%d but %s expects %dx%d", data, info->height, info->width, ckpt, m.in_h, m.in_w);
  if (rc == 0 && info->nclasses != 2)
    rc = xd_fail(&e, "%s: the audit reports binary metrics and needs 2 classes, the file has %d", data, info->nclasses);
  if (rc == 0 && info->n == 0) rc = xd_fail(&e, "%s: split '%s' is empty", data, split);
  if (rc == 0) {
    o.threshold = thr_auto ? st.threshold : thr;
    if (xd_audit_run(&m, ds, &o, r, &e)) {
      /* dataset read errors name the file already; anything else gets the pair named */
      if (!strstr(e.msg, data) && !strstr(e.msg, ckpt)) {
        char msg[XD_ERR_MAX];
        snprintf(msg, sizeof msg, "%s", e.msg);
        xd_fail(&e, "%s on %s: %s", ckpt, data, msg);
      }
      rc = -1;
    }
  }
  if (rc == 0) {
    /* composed in memory, then written and flushed with every call checked */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
      rc = xd_fail(&e, "out of memory composing the report");
    } else {
      if (json) print_json(f, r, ckpt, data, split);
      else print_table(f, r, ckpt, data, split, thr_auto, info);
      int bad = ferror(f);
      if (fclose(f) != 0 || bad) rc = xd_fail(&e, "out of memory composing the report");
      else rc = xd_write_stdout(buf, len, &e);
    }
    free(buf);
  }
  if (rc) {
    xd_msg_oneline(e.msg);
    fprintf(stderr, "xray-dp audit: %s\n", e.msg);
    status = 1;
  }
  if (ds) xd_dataset_close(ds);
  if (have_m) xd_model_free(&m);
  free(r);
  return status;
}
