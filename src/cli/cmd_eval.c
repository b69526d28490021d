/* xray-dp eval: clinical metrics of a checkpoint on one split. Under mpirun each rank scores its shard
 * and rank 0 gathers the probabilities (metrics need them all: ROC-AUC is not a sum). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "checkpoint.h"
#include "cli.h"
#include "dataset.h"
#include "dist.h"
#include "infer.h"
#include "metrics.h"

static const char *HELP =
    "usage: xray-dp eval --ckpt C.h5 --data D.h5 [--split test] [--threshold 0.5|auto|T] [--json]\n"
    "                    [--roc FILE] [--scores FILE] [--batch 64]\n"
    "\n"
    "Loss, accuracy, precision, recall (sensitivity), specificity, F1, ROC-AUC, PR-AUC and the confusion\n"
    "matrix (rows actual, columns predicted, in class_names order) of the checkpoint on one split.\n"
    "A case is called positive (class 1, PNEUMONIA) when its probability >= the threshold.\n"
    "  --threshold auto   the threshold stored in the checkpoint: chosen on the validation split during\n"
    "                     training as the best specificity reaching >= 95% sensitivity\n"
    "  --json             one JSON object on stdout: n, loss, accuracy, precision, recall, specificity,\n"
    "                     f1, roc_auc, pr_auc, threshold, confusion (undefined values are null)\n"
    "  --roc FILE         write the ROC curve (threshold, fpr, tpr) for scripts/plot_eval.sh\n"
    "  --scores FILE      write path<TAB>probability<TAB>label for every image of the split\n";

int cmd_eval(int argc, char **argv) {
  xd_dist d;
  if (xd_dist_init(&d, &argc, &argv)) {
    fprintf(stderr, "xray-dp eval: MPI initialisation failed\n");
    return 1;
  }
  const char *cmd = "eval", *ckpt = NULL, *data = NULL, *split = "test", *thr_s = "0.5", *roc = NULL, *scores = NULL;
  int json = 0, status = 0, quiet_rank = d.rank != 0;
  int64_t batch = 64;
  for (int i = 1; i < argc && status == 0; i++) {
    const char *a = argv[i], *v = NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      if (!quiet_rank) fputs(HELP, stdout);
      goto out;
    }
    if (!strcmp(a, "--json")) { json = 1; continue; }
    const char **dst = !strcmp(a, "--ckpt") ? &ckpt : !strcmp(a, "--data") ? &data : !strcmp(a, "--split") ? &split
                     : !strcmp(a, "--threshold") ? &thr_s : !strcmp(a, "--roc") ? &roc : !strcmp(a, "--scores") ? &scores
                     : NULL;
    if (!dst && strcmp(a, "--batch")) {
      if (!quiet_rank) fprintf(stderr, "xray-dp eval: unknown option '%s' (see xray-dp eval --help)\n", a);
      status = 2;
      break;
    }
    if (!(v = arg_value(cmd, argc, argv, &i))) { status = 2; break; }
    if (dst) *dst = v;
    else if (arg_int(cmd, a, v, 1, 65536, &batch)) status = 2;
  }
  if (status == 0 && (!ckpt || !data)) {
    if (!quiet_rank) fprintf(stderr, "xray-dp eval: --ckpt and --data are required (see xray-dp eval --help)\n");
    status = 2;
  }
  double thr = 0.5;
  int thr_auto = !strcmp(thr_s, "auto");
  if (status == 0 && !thr_auto && arg_double(cmd, "--threshold", thr_s, 0, 1, &thr)) status = 2;
  if (status) goto out;

  xd_err e = {{0}};
  xd_model m;
  xd_train_state st;
  xd_ckpt_meta meta;
  xd_dataset *ds = NULL;
  xd_workspace ws;
  int have_m = 0, have_ws = 0;
  uint8_t *img = NULL, *lab = NULL, *all_lab = NULL;
  float *prob = NULL, *all_prob = NULL;
  int rc = xd_checkpoint_load(ckpt, &m, &st, &meta, &e);
  have_m = rc == 0;
  if (rc == 0) rc = xd_dataset_open(&ds, data, split, &e);
  const xd_dataset_info *info = rc == 0 ? xd_dataset_get_info(ds) : NULL;
  if (rc == 0 && (info->height != m.in_h || info->width != m.in_w))
    rc = xd_fail(&e, "%s: images are %dx%d but %s expects %dx%d", data, info->height, info->width, ckpt, m.in_h, m.in_w);
  if (rc == 0 && info->nclasses != 2)
    rc = xd_fail(&e, "%s: eval reports binary metrics and needs 2 classes, the file has %d", data, info->nclasses);
  if (rc == 0 && thr_auto) thr = st.threshold;
  int64_t a = 0, b = 0, n = info ? info->n : 0;
  if (rc == 0 && n == 0) rc = xd_fail(&e, "%s: split '%s' is empty", data, split);
  if (rc == 0) {
    xd_shard_range(n, d.rank, d.size, &a, &b);
    size_t px = (size_t)m.in_h * m.in_w;
    img = xd_alloc((size_t)(b - a) * px + 1, "images", &e);
    lab = img ? xd_alloc((size_t)(b - a) + 1, "labels", &e) : NULL;
    prob = lab ? xd_alloc(((size_t)(b - a) + 1) * sizeof(float), "probabilities", &e) : NULL;
    rc = prob ? 0 : -1;
  }
  if (rc == 0 && b > a) rc = xd_dataset_read_u8(ds, a, b, img, lab, &e);
  if (rc == 0) rc = xd_workspace_alloc(&ws, &m, (int)batch, &e);
  have_ws = rc == 0;
  /* Every rank opens the same files, so an error is usually everyone's: agree on it (no MPI_Abort
   * banner), let rank 0 say it once, and a rank speak only when rank 0 itself is fine. */
  int64_t worst = xd_dist_max_i64(&d, rc ? (d.rank == 0 ? 2 : 1) : 0);
  if (worst) {
    if (rc && d.rank == 0) fprintf(stderr, "xray-dp eval: %s\n", e.msg);
    else if (rc && worst == 1) fprintf(stderr, "xray-dp eval: rank %d: %s\n", d.rank, e.msg);
    status = 1;
    goto cleanup;
  }
  double loss = 0;
  xd_infer(&m, &ws, b - a, img, lab, prob, &loss);
  if (d.size > 1) {
    int *counts = calloc((size_t)d.size, sizeof(int)), *displs = calloc((size_t)d.size, sizeof(int));
    for (int r = 0; r < d.size; r++) {
      int64_t ra, rb;
      xd_shard_range(n, r, d.size, &ra, &rb);
      counts[r] = (int)(rb - ra);
      displs[r] = (int)ra;
    }
    if (d.rank == 0) {
      all_prob = malloc((size_t)n * sizeof(float));
      all_lab = malloc((size_t)n);
    }
    MPI_Gatherv(prob, (int)(b - a), MPI_FLOAT, all_prob, counts, displs, MPI_FLOAT, 0, d.comm);
    MPI_Gatherv(lab, (int)(b - a), MPI_UINT8_T, all_lab, counts, displs, MPI_UINT8_T, 0, d.comm);
    MPI_Reduce(d.rank == 0 ? MPI_IN_PLACE : &loss, &loss, 1, MPI_DOUBLE, MPI_SUM, 0, d.comm);
    free(counts);
    free(displs);
  } else {
    all_prob = prob;
    all_lab = lab;
  }
  if (d.rank == 0) {
    xd_binary_metrics mt;
    xd_metrics_binary(n, all_prob, all_lab, thr, &mt);
    mt.loss = loss / (double)n;
    if (roc) {
      FILE *f = fopen(roc, "w");
      if (!f || xd_roc_curve_write(f, n, all_prob, all_lab, &e) || fclose(f)) {
        fprintf(stderr, "xray-dp eval: %s: %s\n", roc, f ? e.msg : strerror(errno));
        status = 1;
      }
    }
    if (scores && status == 0) {
      FILE *f = fopen(scores, "w");
      char path[1024];
      for (int64_t i = 0; f && i < n; i++) {
        if (xd_dataset_read_path(ds, i, path, sizeof path, &e)) snprintf(path, sizeof path, "#%lld", (long long)i);
        fprintf(f, "%s\t%.9g\t%s\n", path, all_prob[i], meta.nclasses > 1 ? info->class_names[all_prob[i] >= thr] : "");
      }
      if (!f || fclose(f)) {
        fprintf(stderr, "xray-dp eval: %s: cannot write: %s\n", scores, strerror(errno));
        status = 1;
      }
    }
    if (status) {
      /* an output file failed: no results on stdout, so a script never reads a half-done run */
    } else if (json) {
      xd_metrics_json(stdout, &mt);
    } else {
      const char *names[2] = {info->class_names[0], info->class_names[1]};
      printf("%s on %s [%s], %lld images, threshold %.4f%s\n", ckpt, data, split, (long long)n, thr,
             thr_auto ? " (auto: chosen on validation for >= 95% sensitivity)" : "");
      xd_metrics_print_table(stdout, &mt, names);
    }
  }
cleanup:
  if (all_prob != prob) free(all_prob);
  if (all_lab != lab) free(all_lab);
  xd_free(img);
  xd_free(lab);
  xd_free(prob);
  if (have_ws) xd_workspace_free(&ws, &m);
  if (ds) xd_dataset_close(ds);
  if (have_m) xd_model_free(&m);
out:
  xd_dist_finalize(&d);
  return status;
}
