/* Binary-classification metrics for eval and the validation pass (SPEC section 5).
 *
 * The positive class is label 1 (PNEUMONIA in class_names order); a case is predicted positive iff
 * prob >= threshold, everywhere in this module.
 *
 * Undefined values are NAN, never a made-up 0 (scikit-learn returns 0 with a warning): a ratio whose
 * denominator is 0 is NAN (precision with no predicted positives, recall with no actual positives,
 * specificity with no actual negatives, F1 when TP = FP = FN = 0, accuracy when n = 0), ROC-AUC is NAN
 * unless both classes are present, PR-AUC is NAN without positives, and both AUCs are NAN if any
 * probability is NaN (a diverged model must not get a score). The JSON writer prints NAN as null.
 * NaN compares false, so a NAN metric never wins an early-stopping comparison.
 *
 * The AUC functions sort a copy of the scores (O(n log n), 8 bytes per case from malloc); they return
 * NAN if that allocation fails. */
#ifndef XD_METRICS_H
#define XD_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "common.h"

typedef struct xd_binary_metrics {
  int64_t n;
  double loss; /* left NAN by xd_metrics_binary: the caller owns the loss */
  double accuracy, precision, recall, specificity, f1, roc_auc, pr_auc, threshold;
  int64_t confusion[2][2]; /* rows actual, columns predicted: [0][0]=TN [0][1]=FP [1][0]=FN [1][1]=TP */
} xd_binary_metrics;

/* Fills every field of *m from n predictions (label 0 or 1; any non-zero label counts as 1). A NaN
 * probability is counted as predicted negative in the confusion matrix (and makes both AUCs NAN). */
void xd_metrics_binary(int64_t n, const float *prob, const uint8_t *label, double threshold,
                       xd_binary_metrics *m);

/* Exact ROC-AUC (Mann-Whitney U with midranks: a tied positive/negative pair counts 1/2). */
double xd_roc_auc(int64_t n, const float *prob, const uint8_t *label);

/* Average precision exactly as scikit-learn's average_precision_score: sum over distinct thresholds
 * (descending, ties grouped) of (R_k - R_{k-1}) * P_k. All-positive input gives 1. */
double xd_pr_auc(int64_t n, const float *prob, const uint8_t *label);

/* The highest distinct score t such that predicting prob >= t reaches sensitivity >= min_sensitivity,
 * i.e. the best specificity among those thresholds. NAN when there are no positives, n = 0, an
 * allocation fails, or min_sensitivity > 1. Sensitivity is compared as TP/P, the same double the
 * metrics report. */
double xd_threshold_for_sensitivity(int64_t n, const float *prob, const uint8_t *label,
                                    double min_sensitivity);

/* One JSON object (SPEC section 5 keys, confusion as [[TN,FP],[FN,TP]]) and a newline. Doubles are
 * printed with 17 significant digits (round-trip exact). Returns 0, or -1 if the stream reports an
 * error (the caller names the file). */
int xd_metrics_json(FILE *f, const xd_binary_metrics *m);

/* Human-readable report: confusion matrix labelled with class_names (NULL: "negative"/"positive"),
 * then the metrics with sensitivity/specificity spelled out. */
void xd_metrics_print_table(FILE *f, const xd_binary_metrics *m, const char *class_names[2]);

/* The ROC curve as text for scripts/plot_eval.sh: a header line `threshold<TAB>fpr<TAB>tpr`, then one
 * row per distinct score, descending, preceded by the (inf, 0, 0) row, so the curve runs from (0,0)
 * to (1,1). Requires both classes. Returns 0, or -1 with e filled (one class only, allocation,
 * write error). */
int xd_roc_curve_write(FILE *f, int64_t n, const float *prob, const uint8_t *label, xd_err *e);

/* ---- calibration (eval: table, --json, --reliability) ----
 *
 * XD_CAL_BINS equal-width bins over [0, 1]: bin b holds b/10 <= p < (b+1)/10, the last one also p = 1.
 * Cases may be weighted per class (w_neg for label 0, w_pos for label 1; 1 and 1 = plain counts), which
 * is how `eval --prior` re-weights the split to another prevalence.
 *   ECE   = sum over bins of (W_b / W) * |mean_prob_b - frac_pos_b|  (W = weights, means weighted)
 *   Brier = sum of w_i (p_i - y_i)^2 / sum of w_i
 * Both NAN when n = 0 or a probability is NaN. An empty bin has count 0 and NAN means. */
#define XD_CAL_BINS 10
typedef struct xd_calibration {
  double ece, brier;
  double bin_lo[XD_CAL_BINS], bin_hi[XD_CAL_BINS];
  int64_t count[XD_CAL_BINS];                          /* cases in the bin (unweighted) */
  double mean_prob[XD_CAL_BINS], frac_pos[XD_CAL_BINS]; /* weighted means; NAN when empty */
} xd_calibration;

void xd_calibration_compute(int64_t n, const float *prob, const uint8_t *label, double w_neg, double w_pos,
                            xd_calibration *c);

/* The reliability table as CSV: header `bin_lo,bin_hi,count,mean_prob,frac_pos`, one row per bin,
 * empty fields for an empty bin's means. Returns 0, or -1 if the stream reports an error. */
int xd_reliability_csv_write(FILE *f, const xd_calibration *c);

/* Mean binary cross-entropy of probabilities (clipped to [1e-7, 1 - 1e-7], as Keras), cases weighted
 * per class as above: the loss of an averaged (ensemble / TTA) or prior-adjusted probability. */
double xd_bce_of_probs(int64_t n, const float *prob, const uint8_t *label, double w_neg, double w_pos);

/* xd_metrics_binary with per-class case weights: accuracy, precision, F1 and PR-AUC become those of a
 * population where each negative counts w_neg and each positive w_pos; recall, specificity, ROC-AUC
 * and the confusion matrix (raw counts) do not depend on the class mix and stay unweighted.
 * w_neg = w_pos = 1 is exactly xd_metrics_binary. */
void xd_metrics_binary_weighted(int64_t n, const float *prob, const uint8_t *label, double threshold,
                                double w_neg, double w_pos, xd_binary_metrics *m);

/* eval --json: the SPEC keys of xd_metrics_json, then "ece", "brier", "reliability": [{"bin_lo",
 * "bin_hi", "count", "mean_prob", "frac_pos"}, ...], then `extra` verbatim when not NULL (a fragment
 * of further members: "\"key\": value, ..." without a leading comma). One line. Returns 0 or -1. */
int xd_metrics_json_full(FILE *f, const xd_binary_metrics *m, const xd_calibration *c, const char *extra);

/* A JSON number: the shortest of %.15g/%.17g that reads back as the same double; NaN and infinities
 * as null. */
void xd_json_number(FILE *f, double v);

/* A JSON string that is always valid JSON whatever the bytes (file names are bytes, not text): '"',
 * '\\' and control characters escaped (\n, \t, \u00XX), valid UTF-8 copied, and every byte that is not
 * part of valid UTF-8 written as U+FFFD (\ufffd). */
void xd_json_string(FILE *f, const char *s);

/* A TSV field that cannot split a row or a column: backslash, tab, newline and carriage return are
 * written as \\, \t, \n and \r (other bytes as they are). Reading back: undo those four escapes. */
void xd_tsv_field(FILE *f, const char *s);

#endif
