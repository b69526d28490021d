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

#endif
