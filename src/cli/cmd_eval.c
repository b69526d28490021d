/* xray-dp eval: clinical metrics of a checkpoint (or an ensemble of checkpoints) on one split. Under
 * mpirun each rank scores its shard and rank 0 gathers the probabilities (metrics need them all:
 * ROC-AUC is not a sum). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "checkpoint.h"
#include "cli.h"
#include "dataset.h"
#include "dist.h"
#include "ensemble.h"
#include "infer.h"
#include "metrics.h"

static const char *HELP =
    "usage: xray-dp eval --ckpt C.h5 [--ckpt C2.h5 ...] --data D.h5 [--split test] [--threshold 0.5|auto|T]\n"
    "                    [--tta] [--prior P [--train-prior Q]] [--val-data V.h5] [--json] [--roc FILE]\n"
    "                    [--scores FILE] [--reliability FILE.csv] [--batch 64] [--mem-limit SIZE]\n"
    "\n"
    "Loss, accuracy, precision, recall (sensitivity), specificity, F1, ROC-AUC, PR-AUC, the confusion\n"
    "matrix (rows actual, columns predicted, in class_names order) and calibration (ECE, Brier score) of\n"
    "the checkpoint on one split. A case is called positive (class 1, PNEUMONIA) when its probability >=\n"
    "the threshold.\n"
    "  --ckpt C.h5        repeat to evaluate an ensemble (e.g. the seeds of a SLURM array): the probability\n"
    "                     of an image is the mean of the checkpoints' probabilities. All checkpoints must\n"
    "                     have the same input size (CxHxW), output layer and class names.\n"
    "  --threshold auto   one checkpoint without --tta: the threshold stored in it, chosen on the validation\n"
    "                     split during training as the best specificity reaching >= 95% sensitivity.\n"
    "                     Several checkpoints or --tta: their averaged probabilities are not the ones a\n"
    "                     stored threshold was chosen on (nor is the mean of stored thresholds), so the\n"
    "                     same rule is applied afresh to the ensemble's (and TTA's) probabilities on the\n"
    "                     `val` split of --val-data (default: --data); error if that file has no val split.\n"
    "  --tta              test-time augmentation: the probability is the mean over the image and 8 fixed,\n"
    "                     deterministic variants (zoom in/out 6%, horizontal stretch/squeeze 6%, shifts\n"
    "                     of 3% right/left/down/up; bilinear, edge-clamped; no flips). 9x the compute.\n"
    "  --prior P          evaluate for a deployment prevalence P of class 1 (0 < P < 1). With q the prior\n"
    "                     the model's probabilities assume: --train-prior Q if given, else per checkpoint\n"
    "                     its `train_prior` attribute if stored, else the class-1 share of the train split\n"
    "                     of the dataset it was trained on (its `data` attribute, if that file is\n"
    "                     readable), averaged over the checkpoints; else the class-1 share s of the\n"
    "                     evaluated split. (Class weights or balanced sampling make the effective prior\n"
    "                     0.5: say --train-prior 0.5 for such a model unless it stores train_prior.)\n"
    "                     1. every probability p becomes p' with odds(p') = odds(p) * odds(P) / odds(q)\n"
    "                        (Bayes' rule for a new prior); --scores, --roc and calibration show p';\n"
    "                        --threshold T applies to p'; --threshold auto is mapped by the same formula,\n"
    "                        so the same cases are called positive (sensitivity/specificity unchanged);\n"
    "                     2. each positive case counts P/s and each negative (1-P)/(1-s), so accuracy,\n"
    "                        precision, F1, PR-AUC, loss, ECE, Brier and the reliability table are those\n"
    "                        expected at prevalence P. Sensitivity, specificity, ROC-AUC and the confusion\n"
    "                        counts do not depend on prevalence and stay as measured.\n"
    "  --val-data V.h5    the file whose val split chooses the auto threshold of an ensemble or --tta\n"
    "  --json             one JSON object on stdout: n, loss, accuracy, precision, recall, specificity,\n"
    "                     f1, roc_auc, pr_auc, threshold, confusion, ece, brier, reliability (a list of\n"
    "                     {bin_lo, bin_hi, count, mean_prob, frac_pos}); with several checkpoints also\n"
    "                     \"checkpoints\": K, with --tta \"tta\": 9, with --prior \"prior\": {deployment,\n"
    "                     train (q), train_from (option|checkpoint|training data|split), split (s)}.\n"
    "                     Undefined values are null.\n"
    "  --roc FILE         write the ROC curve (threshold, fpr, tpr) for scripts/plot_eval.sh\n"
    "  --scores FILE      write path<TAB>probability<TAB>label for every image of the split; in the path\n"
    "                     and the label a backslash, tab, newline and carriage return are written as\n"
    "                     \\\\, \\t, \\n and \\r, so every row has 3 fields\n"
    "  --reliability FILE.csv\n"
    "                     write the reliability table (bin_lo,bin_hi,count,mean_prob,frac_pos) for\n"
    "                     scripts/plot_eval.sh's reliability diagram\n"
    ARG_MEM_LIMIT_HELP
    "Calibration: 10 equal-width probability bins; ECE = sum over bins of (cases in bin / n) *\n"
    "|mean probability - fraction positive|; Brier = mean (p - y)^2. The loss is the binary cross-entropy\n"
    "of the logits for one checkpoint, of the averaged (or prior-adjusted) probability otherwise.\n"
    "Output files are written atomically: each to FILE.tmp.<pid>, flushed to disk, and renamed over FILE\n"
    "only when every output (and stdout) was written completely. On any failure (a full disk: \"No space\n"
    "left on device\"; a file size limit: \"File too large\") no temporary is left, existing FILEs are left\n"
    "as they were, and nothing is printed on stdout. Temporaries of dead earlier runs are removed first.\n"
    "A device, a FIFO or /dev/stdout is written directly; a symbolic link is followed. An output that is a\n"
    "directory or in a missing or read-only folder fails before any work (exit 1); an empty FILE, two\n"
    "outputs naming the same file, or an output naming an input (--data, --ckpt, --val-data) is bad usage.\n"
    "JSON strings are valid UTF-8 (bytes that are not become U+FFFD). A non-finite probability (a model\n"
    "giving NaN) is an error naming the image, never a number in an output; so is a stored threshold\n"
    "(--threshold auto) that is not a number in [0, 1]. Non-finite metrics are null in JSON.\n"
    "Exit status: 0 success, 2 bad usage, 1 any other error (one line on stderr naming the file).\n";

/* One split's probabilities and labels, gathered on rank 0. */
typedef struct scored_split {
  xd_dataset *ds;
  const xd_dataset_info *info;
  int64_t n;
  float *prob;  /* rank 0: [n]; other ranks: NULL */
  uint8_t *lab; /* rank 0: [n] */
  double loss;  /* sum of the logit loss (one checkpoint without TTA), rank 0 */
} scored_split;

static void scored_free(scored_split *s) {
  free(s->prob);
  free(s->lab);
  if (s->ds) xd_dataset_close(s->ds);
  memset(s, 0, sizeof *s);
}

/* Errors that every rank may hit (the same files): agree on them (no MPI_Abort banner), let rank 0 say
 * it once, and a rank speak only when rank 0 itself is fine. Returns 1 if anyone failed. */
static int agree(xd_dist *d, int rc, const xd_err *e) {
  int64_t worst = xd_dist_max_i64(d, rc ? (d->rank == 0 ? 2 : 1) : 0);
  if (!worst) return 0;
  xd_err m = *e;
  xd_msg_oneline(m.msg);
  if (rc && d->rank == 0) fprintf(stderr, "xray-dp eval: %s\n", m.msg);
  else if (rc && worst == 1) fprintf(stderr, "xray-dp eval: rank %d: %s\n", d->rank, m.msg);
  return 1;
}

/* Scores `split` of `path` with the ensemble, sharded over the ranks, gathered on rank 0. Returns 0, or
 * 1 after the error has been printed. */
static int score_split(xd_dist *d, cli_ensemble *E, const char *path, const char *split, int tta, scored_split *s) {
  xd_err e = {{0}};
  memset(s, 0, sizeof *s);
  int rc = xd_dataset_open(&s->ds, path, split, &e);
  if (rc == 0) s->info = xd_dataset_get_info(s->ds);
  if (rc == 0) rc = cli_ensemble_check_data(E, s->info, path, &e);
  if (rc == 0 && s->info->nclasses != 2)
    rc = xd_fail(&e, "%s: eval reports binary metrics and needs 2 classes, the file has %d", path, s->info->nclasses);
  if (rc == 0 && s->info->n == 0) rc = xd_fail(&e, "%s: split '%s' is empty", path, split);
  int64_t a = 0, b = 0, n = rc == 0 ? s->info->n : 0;
  float *prob = NULL;
  uint8_t *lab = NULL;
  if (rc == 0) {
    char what[4200];
    snprintf(what, sizeof what, "%s: the probabilities and labels of %lld images", path, (long long)n);
    rc = xd_mem_check(xd_mul_sat((uint64_t)n, 2 * (sizeof(float) + 1)), what, &e);
  }
  if (rc == 0) {
    xd_shard_range(n, d->rank, d->size, &a, &b);
    prob = malloc(((size_t)(b - a) + 1) * sizeof *prob);
    lab = malloc((size_t)(b - a) + 1);
    if (d->rank == 0) {
      s->prob = malloc((size_t)n * sizeof *s->prob);
      s->lab = malloc((size_t)n);
    }
    if (!prob || !lab || (d->rank == 0 && (!s->prob || !s->lab)))
      rc = xd_fail(&e, "%s: out of memory for %lld probabilities", path, (long long)n);
  }
  if (agree(d, rc, &e)) goto fail;
  double loss = 0;
  int logit_loss = E->k == 1 && !tta;
  if (b > a) {
    if (logit_loss) {
      /* one checkpoint: xd_infer's own loss of the logits, as training reports it; read in blocks that
       * are whole multiples of the batch, so the batches (and the loss's sum) are those of one call */
      const xd_model *m = &E->m[0];
      const size_t px = (size_t)m->in_c * m->in_h * m->in_w;
      const int64_t bs = E->ws[0].batch, B = bs * ((256 + bs - 1) / bs);
      uint8_t *img = malloc((size_t)B * px);
      if (!img) rc = xd_fail(&e, "%s: out of memory for images", path);
      for (int64_t i = a; rc == 0 && i < b; i += B) {
        int64_t j = i + B < b ? i + B : b;
        rc = xd_dataset_read_u8(s->ds, i, j, img, lab + (i - a), &e);
        if (rc == 0) xd_infer(&E->m[0], &E->ws[0], j - i, img, lab + (i - a), prob + (i - a), &loss);
      }
      free(img);
    } else {
      rc = cli_ensemble_score_range(E, s->ds, a, b, tta, prob, lab, &e);
    }
  }
  if (agree(d, rc, &e)) goto fail;
  if (d->size > 1) {
    int *counts = calloc((size_t)d->size, sizeof(int)), *displs = calloc((size_t)d->size, sizeof(int));
    for (int r = 0; r < d->size; r++) {
      int64_t ra, rb;
      xd_shard_range(n, r, d->size, &ra, &rb);
      counts[r] = (int)(rb - ra);
      displs[r] = (int)ra;
    }
    MPI_Gatherv(prob, (int)(b - a), MPI_FLOAT, s->prob, counts, displs, MPI_FLOAT, 0, d->comm);
    MPI_Gatherv(lab, (int)(b - a), MPI_UINT8_T, s->lab, counts, displs, MPI_UINT8_T, 0, d->comm);
    MPI_Reduce(d->rank == 0 ? MPI_IN_PLACE : &loss, &loss, 1, MPI_DOUBLE, MPI_SUM, 0, d->comm);
    free(counts);
    free(displs);
  } else {
    memcpy(s->prob, prob, (size_t)n * sizeof *prob);
    memcpy(s->lab, lab, (size_t)n);
  }
  free(prob);
  free(lab);
  s->n = n;
  s->loss = loss;
  return 0;
fail:
  free(prob);
  free(lab);
  scored_free(s);
  return 1;
}

/* odds(p') = odds(p) * r, computed in double; 0 and 1 stay put. */
static double prior_adjust(double p, double r) {
  if (!(p > 0)) return p;
  if (p >= 1) return 1;
  return p * r / (p * r + (1 - p));
}

/* Output files. Each is composed in memory, then written to its temporary name with every write, the
 * fsync and the close checked (xd_tmp_write); stdout is written next; only when all of that succeeded
 * are the temporaries renamed into place. Targets that cannot be replaced by a rename (a device, a FIFO,
 * /dev/stdout) are written directly, after the temporaries. */
enum { OUT_ROC, OUT_SCORES, OUT_REL, NOUT };
static const char *const out_opt[NOUT] = {"--roc", "--scores", "--reliability"};

typedef struct outfile {
  const char *path;  /* as given; NULL when not asked for */
  char target[4096]; /* what to write (a symbolic link's target) */
  int direct;        /* xd_output_check said: write directly */
  char tmp[4200];    /* the written temporary, "" when none */
  char *buf;         /* composed content */
  size_t len;
} outfile;

/* The content of output k, composed in memory (cannot fail for disk reasons). */
static int compose(outfile *o, int k, const scored_split *s, double thr, const xd_calibration *cal, xd_err *e) {
  FILE *f = open_memstream(&o->buf, &o->len);
  if (!f) return xd_fail(e, "%s: out of memory composing the file", o->path);
  int rc = 0;
  if (k == OUT_ROC) {
    xd_err re;
    if (xd_roc_curve_write(f, s->n, s->prob, s->lab, &re)) rc = xd_fail(e, "%s: %s", o->path, re.msg);
  } else if (k == OUT_SCORES) {
    char path[4096];
    xd_err pe;
    for (int64_t i = 0; i < s->n; i++) {
      if (xd_dataset_read_path(s->ds, i, path, sizeof path, &pe)) snprintf(path, sizeof path, "#%lld", (long long)i);
      xd_tsv_field(f, path);
      fprintf(f, "\t%.9g\t", s->prob[i]);
      xd_tsv_field(f, s->info->class_names[s->prob[i] >= thr]);
      fputc('\n', f);
    }
  } else {
    xd_reliability_csv_write(f, cal);
  }
  int bad = ferror(f);
  if (fclose(f) != 0) bad = 1;
  if (rc == 0 && bad) rc = xd_fail(e, "%s: out of memory composing the file", o->path);
  return rc;
}

static void outputs_free(outfile *o) {
  for (int k = 0; k < NOUT; k++) {
    if (o[k].tmp[0]) unlink(o[k].tmp);
    o[k].tmp[0] = 0;
    free(o[k].buf);
    o[k].buf = NULL;
  }
}

/* Composes and writes every output and then stdout (so_buf), renaming the files into place only when all
 * of it succeeded. 0, or -1 with e filled and nothing left behind. */
static int write_outputs(outfile *o, const scored_split *s, double thr, const xd_calibration *cal, const char *so_buf,
                         size_t so_len, xd_err *e) {
  int rc = 0;
  for (int k = 0; k < NOUT && rc == 0; k++)
    if (o[k].path) rc = compose(&o[k], k, s, thr, cal, e);
  for (int k = 0; k < NOUT && rc == 0; k++)
    if (o[k].path && !o[k].direct) {
      xd_clean_stale_tmp(o[k].target);
      rc = xd_tmp_write(o[k].target, o[k].buf, o[k].len, o[k].tmp, sizeof o[k].tmp, e);
    }
  for (int k = 0; k < NOUT && rc == 0; k++)
    if (o[k].path && o[k].direct) rc = xd_write_direct(o[k].target, o[k].buf, o[k].len, e);
  if (rc == 0) rc = xd_write_stdout(so_buf, so_len, e);
  for (int k = 0; k < NOUT && rc == 0; k++)
    if (o[k].path && o[k].tmp[0]) {
      rc = xd_commit_file(o[k].tmp, o[k].target, e); /* removes the temporary on failure */
      o[k].tmp[0] = 0;
    }
  outputs_free(o);
  return rc;
}

/* The first image whose probability is not a number in [0, 1]: -1 naming it (never a "nan" in an output). */
static int check_probs(const scored_split *s, const char *data, const char *split, const cli_ensemble *E, xd_err *e) {
  for (int64_t i = 0; i < s->n; i++) {
    float p = s->prob[i];
    if (p >= 0 && p <= 1) continue;
    char path[4096], names[2048];
    xd_err pe;
    if (xd_dataset_read_path(s->ds, i, path, sizeof path, &pe)) snprintf(path, sizeof path, "#%lld", (long long)i);
    cli_ensemble_names(E, names, sizeof names);
    return xd_fail(e, "%s [%s] image %lld (%s): %s gives the probability %g, not a number in [0, 1] (non-finite "
                   "weights or activations)", data, split, (long long)i, path, names, isnan(p) ? NAN : (double)p); /* "nan", not "-nan" */
  }
  return 0;
}

int cmd_eval(int argc, char **argv) {
  xd_dist d;
  if (xd_dist_init(&d, &argc, &argv)) {
    fprintf(stderr, "xray-dp eval: MPI initialisation failed\n");
    return 1;
  }
  const char *cmd = "eval", *data = NULL, *split = "test", *thr_s = "0.5", *roc = NULL, *scores = NULL,
             *reliability = NULL, *val_data = NULL, *prior_s = NULL, *train_prior_s = NULL;
  int json = 0, tta = 0, status = 0, quiet_rank = d.rank != 0;
  int64_t batch = 64;
  cli_ensemble E;
  memset(&E, 0, sizeof E);
  for (int i = 1; i < argc && status == 0; i++) {
    const char *a = argv[i], *v = NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      if (!quiet_rank) fputs(HELP, stdout);
      goto out;
    }
    if (!strcmp(a, "--json")) { json = 1; continue; }
    if (!strcmp(a, "--tta")) { tta = 1; continue; }
    if (!strcmp(a, "--mem-limit")) {
      if (!(v = arg_value(cmd, argc, argv, &i)) || arg_mem_limit(cmd, v)) status = 2;
      continue;
    }
    int is_ckpt = !strcmp(a, "--ckpt");
    const char **dst = !strcmp(a, "--data") ? &data : !strcmp(a, "--split") ? &split
                     : !strcmp(a, "--threshold") ? &thr_s : !strcmp(a, "--roc") ? &roc : !strcmp(a, "--scores") ? &scores
                     : !strcmp(a, "--reliability") ? &reliability : !strcmp(a, "--val-data") ? &val_data
                     : !strcmp(a, "--prior") ? &prior_s : !strcmp(a, "--train-prior") ? &train_prior_s : NULL;
    if (!dst && !is_ckpt && strcmp(a, "--batch")) {
      if (!quiet_rank) fprintf(stderr, "xray-dp eval: unknown option '%s' (see xray-dp eval --help)\n", a);
      status = 2;
      break;
    }
    if (!(v = arg_value(cmd, argc, argv, &i))) { status = 2; break; }
    if (is_ckpt) {
      if (E.k == XD_MAX_CKPTS) {
        if (!quiet_rank) fprintf(stderr, "xray-dp eval: --ckpt: at most %d checkpoints\n", XD_MAX_CKPTS);
        status = 2;
      } else {
        E.path[E.k++] = v;
      }
    } else if (dst) {
      *dst = v;
    } else if (arg_int(cmd, a, v, 1, 65536, &batch)) {
      status = 2;
    }
  }
  if (status == 0 && (!E.k || !data)) {
    if (!quiet_rank) fprintf(stderr, "xray-dp eval: --ckpt and --data are required (see xray-dp eval --help)\n");
    status = 2;
  }
  double thr = 0.5, prior = NAN, train_prior = NAN;
  int thr_auto = !strcmp(thr_s, "auto");
  if (status == 0 && !thr_auto && arg_double(cmd, "--threshold", thr_s, 0, 1, &thr)) status = 2;
  const char *popt[2] = {"--prior", "--train-prior"}, *pval[2] = {prior_s, train_prior_s};
  double *pdst[2] = {&prior, &train_prior};
  for (int k = 0; k < 2 && status == 0; k++) {
    if (!pval[k]) continue;
    char *end;
    errno = 0;
    *pdst[k] = strtod(pval[k], &end);
    if (errno || end == pval[k] || *end || !(*pdst[k] > 0 && *pdst[k] < 1)) {
      if (!quiet_rank)
        fprintf(stderr, "xray-dp eval: %s: expected a prevalence strictly between 0 and 1, got '%s'\n", popt[k], pval[k]);
      status = 2;
    }
  }
  if (status == 0 && train_prior_s && !prior_s) {
    if (!quiet_rank) fprintf(stderr, "xray-dp eval: --train-prior is only used with --prior\n");
    status = 2;
  }
  if (status == 0 && val_data && !(thr_auto && (E.k > 1 || tta))) {
    if (!quiet_rank)
      fprintf(stderr, "xray-dp eval: --val-data is only used with --threshold auto and several --ckpt or --tta\n");
    status = 2;
  }
  outfile o[NOUT];
  memset(o, 0, sizeof o);
  o[OUT_ROC].path = roc;
  o[OUT_SCORES].path = scores;
  o[OUT_REL].path = reliability;
  /* outputs: not empty, not each other, not an input (a rename over --data would destroy it) */
  for (int k = 0; k < NOUT && status == 0; k++) {
    if (!o[k].path) continue;
    const char *clash = NULL, *clash_opt = NULL;
    if (!o[k].path[0]) {
      if (!quiet_rank) fprintf(stderr, "xray-dp eval: %s: empty file name\n", out_opt[k]);
      status = 2;
      break;
    }
    for (int j = 0; j < k && !clash; j++)
      if (o[j].path && (!strcmp(o[j].path, o[k].path) || xd_same_file(o[j].path, o[k].path)))
        clash = o[j].path, clash_opt = out_opt[j];
    const char *ins[2] = {data, val_data}, *in_opt[2] = {"--data", "--val-data"};
    for (int j = 0; j < 2 && !clash; j++)
      if (ins[j] && (!strcmp(ins[j], o[k].path) || xd_same_file(ins[j], o[k].path))) clash = ins[j], clash_opt = in_opt[j];
    for (int j = 0; j < E.k && !clash; j++)
      if (!strcmp(E.path[j], o[k].path) || xd_same_file(E.path[j], o[k].path)) clash = E.path[j], clash_opt = "--ckpt";
    if (clash) {
      char msg[9000];
      snprintf(msg, sizeof msg, "xray-dp eval: %s %s: the same file as %s %s (an output must not replace an input or "
               "another output)", out_opt[k], o[k].path, clash_opt, clash);
      xd_msg_oneline(msg);
      if (!quiet_rank) fprintf(stderr, "%s\n", msg);
      status = 2;
    }
  }
  if (status) goto out;
  /* a file size limit (ulimit -f) becomes a write error with a message, not a signal */
  signal(SIGXFSZ, SIG_IGN);

  xd_err e = {{0}};
  char *so_buf = NULL; /* rank 0's stdout, composed in memory and written with the output files */
  size_t so_len = 0;
  FILE *so = NULL;
  scored_split s, v;
  memset(&s, 0, sizeof s);
  memset(&v, 0, sizeof v);
  int rc = 0;
  /* an output that cannot be written (a directory, a missing or read-only folder) fails before any work */
  for (int k = 0; k < NOUT && rc == 0; k++)
    if (o[k].path && d.rank == 0) {
      int r = xd_output_check(o[k].path, 1, o[k].target, sizeof o[k].target, &e);
      if (r < 0) rc = -1;
      o[k].direct = r == 1;
    }
  if (rc == 0) rc = cli_ensemble_load(&E, &e);
  if (rc == 0) rc = cli_ensemble_workspaces(&E, (int)batch, &e);
  if (agree(&d, rc, &e)) {
    status = 1;
    goto cleanup;
  }
  /* --threshold auto for an ensemble or TTA: chosen afresh on the val split with these probabilities */
  const int fresh_thr = thr_auto && (E.k > 1 || tta);
  const char *vpath = val_data ? val_data : data;
  if (fresh_thr) {
    int has = xd_dataset_has_split(vpath, "val", &e);
    rc = has < 0 ? -1 : has == 0 ? xd_fail(&e, "%s: no val split to choose the threshold of %s on (give --val-data "
                                                "V.h5 or --threshold T)", vpath, E.k > 1 ? "an ensemble" : "--tta")
                                 : 0;
    if (agree(&d, rc, &e) || score_split(&d, &E, vpath, "val", tta, &v)) {
      status = 1;
      goto cleanup;
    }
    if (d.rank == 0) rc = check_probs(&v, vpath, "val", &E, &e);
    if (d.rank == 0 && rc == 0) {
      thr = xd_threshold_for_sensitivity(v.n, v.prob, v.lab, 0.95);
      if (isnan(thr))
        rc = xd_fail(&e, "%s: no threshold reaches 95%% sensitivity on the val split (no %s case there?)", vpath,
                     v.info->class_names[1]);
    }
    if (agree(&d, rc, &e)) {
      status = 1;
      goto cleanup;
    }
  } else if (thr_auto) {
    thr = E.st[0].threshold;
    /* a stored NaN or 2.0 would call every case negative */
    rc = thr >= 0 && thr <= 1 ? 0 : xd_fail(&e, "%s: the stored threshold %g is not a number in [0, 1]", E.path[0], thr);
    if (rc == 0 && !E.st[0].threshold_chosen)
      rc = xd_fail(&e, "%s: its threshold %g was not chosen (the run had no val split): give --threshold T", E.path[0],
                   thr);
    if (agree(&d, rc, &e)) {
      status = 1;
      goto cleanup;
    }
  }
  if (score_split(&d, &E, data, split, tta, &s)) {
    status = 1;
    goto cleanup;
  }
  if (d.rank == 0 && check_probs(&s, data, split, &E, &e)) {
    xd_msg_oneline(e.msg);
    fprintf(stderr, "xray-dp eval: %s\n", e.msg);
    status = 1;
    goto cleanup;
  }
  if (d.rank == 0 && !(so = open_memstream(&so_buf, &so_len))) {
    fprintf(stderr, "xray-dp eval: out of memory\n");
    status = 1;
    goto cleanup;
  }
  if (d.rank == 0) {
    const int64_t n = s.n;
    int64_t npos = 0;
    for (int64_t i = 0; i < n; i++) npos += s.lab[i] != 0;
    double w_neg = 1, w_pos = 1, share = (double)npos / (double)n, q = NAN;
    const char *q_from = "split";
    char extra[512] = "";
    if (!isnan(prior)) {
      if (npos == 0 || npos == n) {
        fprintf(stderr, "xray-dp eval: %s: --prior re-weights the classes and needs both in split '%s' (it has %lld "
                "positive of %lld)\n", data, split, (long long)npos, (long long)n);
        status = 1;
        goto cleanup;
      }
      if (!isnan(train_prior)) {
        q = train_prior;
        q_from = "option";
      } else {
        q = cli_ensemble_train_prior(&E, &q_from);
        if (isnan(q)) {
          q = share;
          q_from = "split";
        }
      }
      const double r = (prior / (1 - prior)) / (q / (1 - q));
      for (int64_t i = 0; i < n; i++) s.prob[i] = (float)prior_adjust(s.prob[i], r);
      if (thr_auto) thr = (float)prior_adjust(thr, r);
      w_pos = prior / share;
      w_neg = (1 - prior) / (1 - share);
    }
    xd_binary_metrics mt;
    xd_metrics_binary_weighted(n, s.prob, s.lab, thr, w_neg, w_pos, &mt);
    mt.loss = E.k == 1 && !tta && isnan(prior) ? s.loss / (double)n : xd_bce_of_probs(n, s.prob, s.lab, w_neg, w_pos);
    xd_calibration cal;
    xd_calibration_compute(n, s.prob, s.lab, w_neg, w_pos, &cal);
    if (json) {
      size_t l = 0;
      if (E.k > 1) l += (size_t)snprintf(extra + l, sizeof extra - l, "\"checkpoints\": %d", E.k);
      if (tta) l += (size_t)snprintf(extra + l, sizeof extra - l, "%s\"tta\": %d", l ? ", " : "", XD_TTA_VARIANTS);
      if (!isnan(prior))
        snprintf(extra + l, sizeof extra - l,
                 "%s\"prior\": {\"deployment\": %.17g, \"train\": %.17g, \"train_from\": \"%s\", \"split\": %.17g}",
                 l ? ", " : "", prior, q, q_from, share);
      xd_metrics_json_full(so, &mt, &cal, extra);
    } else {
      char names[2048];
      cli_ensemble_names(&E, names, sizeof names);
      const char *cn[2] = {s.info->class_names[0], s.info->class_names[1]};
      char how[600] = "";
      if (fresh_thr)
        snprintf(how, sizeof how, " (auto: chosen on %s [val] with these %s probabilities for >= 95%% sensitivity)",
                 vpath, E.k > 1 && tta ? "ensemble+TTA" : E.k > 1 ? "ensemble" : "TTA");
      else if (thr_auto)
        snprintf(how, sizeof how, " (auto: chosen on validation for >= 95%% sensitivity)");
      fprintf(so, "%s on %s [%s], %lld images, threshold %.4f%s\n", names, data, split, (long long)n, thr, how);
      if (E.k > 1) fprintf(so, "ensemble: mean probability of %d checkpoints\n", E.k);
      if (tta) fprintf(so, "test-time augmentation: mean over %d variants of each image\n", XD_TTA_VARIANTS);
      if (!isnan(prior))
        fprintf(so, "prior: deployment prevalence of %s %.4g; the model's prior %.4g (%s); this split's %.4g\n"
               "  probabilities moved to the new prior (odds x %.4g)%s; accuracy, precision, F1, PR-AUC, loss and\n"
               "  calibration re-weighted to it; sensitivity, specificity, ROC-AUC and the counts as measured\n",
               cn[1], prior, q,
               !strcmp(q_from, "option") ? "--train-prior" : !strcmp(q_from, "checkpoint") ? "stored in the checkpoint"
               : !strcmp(q_from, "training data") ? "share in the training data's train split"
                                                  : "no training data to read: this split's share",
               share, (prior / (1 - prior)) / (q / (1 - q)), thr_auto ? ", the auto threshold with them" : "");
      xd_metrics_print_table(so, &mt, cn);
      fprintf(so, "  calibration: ECE %.4f (%d equal-width bins), Brier score %.4f%s\n", cal.ece, XD_CAL_BINS, cal.brier,
             reliability ? "" : " (--reliability FILE.csv for the table)");
    }
    int bad = ferror(so);
    if (fclose(so) != 0) bad = 1;
    so = NULL;
    if (bad) rc = xd_fail(&e, "out of memory composing the report");
    else rc = write_outputs(o, &s, thr, &cal, so_buf, so_len, &e);
    if (rc) {
      /* an output failed: no file replaced, nothing on stdout, so a script never reads a half-done run */
      xd_msg_oneline(e.msg);
      fprintf(stderr, "xray-dp eval: %s\n", e.msg);
      status = 1;
    }
  }
cleanup:
  if (so) fclose(so);
  free(so_buf);
  outputs_free(o);
  scored_free(&s);
  scored_free(&v);
  cli_ensemble_free(&E);
out:
  xd_dist_finalize(&d);
  return status;
}
