/* Binary-classification metrics; conventions for undefined values are in include/metrics.h. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct scored {
  float p;
  uint8_t y;
} scored;

static int by_prob_desc(const void *a, const void *b) {
  float pa = ((const scored *)a)->p, pb = ((const scored *)b)->p;
  return (pa < pb) - (pa > pb);
}

/* A copy of (prob, label) sorted by descending probability, or NULL (allocation failed, or a NaN
 * score, which would make the order and every threshold meaningless). Counts positives into *pos. */
static scored *sorted_scores(int64_t n, const float *prob, const uint8_t *label, int64_t *pos) {
  *pos = 0;
  if (n <= 0) return NULL;
  scored *s = malloc((size_t)n * sizeof *s);
  if (!s) return NULL;
  for (int64_t i = 0; i < n; i++) {
    if (isnan(prob[i])) {
      free(s);
      return NULL;
    }
    s[i].p = prob[i];
    s[i].y = label[i] != 0;
    *pos += s[i].y;
  }
  qsort(s, (size_t)n, sizeof *s, by_prob_desc);
  return s;
}

/* Index one past the run of equal scores starting at i: a tie group is one threshold. */
static int64_t group_end(const scored *s, int64_t n, int64_t i) {
  int64_t j = i + 1;
  while (j < n && s[j].p == s[i].p) j++;
  return j;
}

static double roc_auc_sorted(const scored *s, int64_t n, int64_t pos) {
  int64_t neg = n - pos;
  if (pos == 0 || neg == 0) return NAN;
  /* Twice the Mann-Whitney U in integers, so the only rounding is the final division: each negative
   * beats no positive above it and ties with the positives of its own group (counted 1/2). */
  uint64_t twice_u = 0;
  int64_t tp_above = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = group_end(s, n, i), tp = 0, fp = 0;
    for (int64_t k = i; k < j; k++) s[k].y ? tp++ : fp++;
    twice_u += (uint64_t)fp * (uint64_t)(2 * tp_above + tp);
    tp_above += tp;
    i = j;
  }
  return (double)twice_u / (2.0 * (double)pos * (double)neg);
}

/* Average precision with each negative counted w_neg times and each positive w_pos times (1, 1: the
 * plain one, bit for bit: tp/(tp+fp) of exact integers). */
static double pr_auc_sorted_weighted(const scored *s, int64_t n, int64_t pos, double w_neg, double w_pos) {
  if (pos == 0) return NAN;
  double ap = 0, prev_recall = 0;
  int64_t tp = 0, fp = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = group_end(s, n, i);
    for (int64_t k = i; k < j; k++) s[k].y ? tp++ : fp++;
    double recall = (double)tp / (double)pos, wtp = w_pos * (double)tp, wfp = w_neg * (double)fp;
    ap += (recall - prev_recall) * (wtp + wfp > 0 ? wtp / (wtp + wfp) : 0);
    prev_recall = recall;
    i = j;
  }
  return ap;
}

static double pr_auc_sorted(const scored *s, int64_t n, int64_t pos) { return pr_auc_sorted_weighted(s, n, pos, 1.0, 1.0); }

double xd_roc_auc(int64_t n, const float *prob, const uint8_t *label) {
  int64_t pos;
  scored *s = sorted_scores(n, prob, label, &pos);
  if (!s) return NAN;
  double auc = roc_auc_sorted(s, n, pos);
  free(s);
  return auc;
}

double xd_pr_auc(int64_t n, const float *prob, const uint8_t *label) {
  int64_t pos;
  scored *s = sorted_scores(n, prob, label, &pos);
  if (!s) return NAN;
  double ap = pr_auc_sorted(s, n, pos);
  free(s);
  return ap;
}

double xd_threshold_for_sensitivity(int64_t n, const float *prob, const uint8_t *label,
                                    double min_sensitivity) {
  int64_t pos;
  scored *s = sorted_scores(n, prob, label, &pos);
  if (!s) return NAN;
  double t = NAN;
  int64_t tp = 0;
  /* Sensitivity only grows as the threshold falls, so the first group that reaches the target is the
   * highest such threshold and has the best specificity. */
  for (int64_t i = 0; i < n && pos > 0;) {
    int64_t j = group_end(s, n, i);
    for (int64_t k = i; k < j; k++) tp += s[k].y;
    if ((double)tp / (double)pos >= min_sensitivity) {
      t = s[i].p;
      break;
    }
    i = j;
  }
  free(s);
  return t;
}

static double ratio(int64_t num, int64_t den) { return den ? (double)num / (double)den : NAN; }

void xd_metrics_binary(int64_t n, const float *prob, const uint8_t *label, double threshold,
                       xd_binary_metrics *m) {
  memset(m, 0, sizeof *m);
  m->n = n;
  m->loss = NAN;
  m->threshold = threshold;
  for (int64_t i = 0; i < n; i++) m->confusion[label[i] != 0][prob[i] >= threshold]++;
  int64_t tn = m->confusion[0][0], fp = m->confusion[0][1];
  int64_t fn = m->confusion[1][0], tp = m->confusion[1][1];
  m->accuracy = ratio(tp + tn, n);
  m->precision = ratio(tp, tp + fp);
  m->recall = ratio(tp, tp + fn);
  m->specificity = ratio(tn, tn + fp);
  /* 2TP/(2TP+FP+FN) rather than the harmonic mean, so F1 stays defined (0) when precision is not. */
  m->f1 = ratio(2 * tp, 2 * tp + fp + fn);
  int64_t pos;
  scored *s = sorted_scores(n, prob, label, &pos);
  m->roc_auc = s ? roc_auc_sorted(s, n, pos) : NAN;
  m->pr_auc = s ? pr_auc_sorted(s, n, pos) : NAN;
  free(s);
}

void xd_json_number(FILE *f, double v) {
  if (!isfinite(v)) {
    fputs("null", f);
    return;
  }
  char buf[40];
  snprintf(buf, sizeof buf, "%.15g", v);
  if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
  fputs(buf, f);
}

/* Length of the valid UTF-8 sequence at p (1 to 4), or 0 if the bytes there are not one. */
static int utf8_len(const unsigned char *p) {
  unsigned c = p[0];
  int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
  if (len <= 1) return len;
  uint32_t cp = len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
  for (int k = 1; k < len; k++) {
    if ((p[k] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (p[k] & 0x3F);
  }
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

void xd_json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    unsigned c = *p;
    int len = utf8_len(p);
    if (len == 0) {
      fputs("\\ufffd", f);
      p++;
    } else if (len > 1) {
      fwrite(p, 1, (size_t)len, f);
      p += len;
    } else {
      if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
      else if (c == '\n') fputs("\\n", f);
      else if (c == '\t') fputs("\\t", f);
      else if (c == '\r') fputs("\\r", f);
      else if (c < 0x20 || c == 0x7f) fprintf(f, "\\u%04x", c);
      else fputc((int)c, f);
      p++;
    }
  }
  fputc('"', f);
}

void xd_tsv_field(FILE *f, const char *s) {
  for (; *s; s++) {
    switch (*s) {
      case '\\': fputs("\\\\", f); break;
      case '\t': fputs("\\t", f); break;
      case '\n': fputs("\\n", f); break;
      case '\r': fputs("\\r", f); break;
      default: fputc(*s, f);
    }
  }
}

static void json_body(FILE *f, const xd_binary_metrics *m) {
  const char *keys[] = {"loss", "accuracy", "precision", "recall", "specificity",
                        "f1",   "roc_auc",  "pr_auc",    "threshold"};
  const double vals[] = {m->loss, m->accuracy, m->precision, m->recall,   m->specificity,
                         m->f1,   m->roc_auc,  m->pr_auc,    m->threshold};
  fprintf(f, "{\"n\": %lld", (long long)m->n);
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    fprintf(f, ", \"%s\": ", keys[i]);
    xd_json_number(f, vals[i]);
  }
  fprintf(f, ", \"confusion\": [[%lld, %lld], [%lld, %lld]]", (long long)m->confusion[0][0],
          (long long)m->confusion[0][1], (long long)m->confusion[1][0], (long long)m->confusion[1][1]);
}

int xd_metrics_json(FILE *f, const xd_binary_metrics *m) {
  json_body(f, m);
  fputs("}\n", f);
  return ferror(f) ? -1 : 0;
}

/* "0.9744   (380 / 390 ...)" or "undefined (...)" for NAN. */
static void table_row(FILE *f, const char *name, double v, int64_t num, int64_t den, const char *what) {
  if (isnan(v))
    fprintf(f, "  %-22s undefined", name);
  else
    fprintf(f, "  %-22s %.4f", name, v);
  if (den >= 0)
    fprintf(f, "%s (%lld / %lld %s)", isnan(v) ? "" : "   ", (long long)num, (long long)den, what);
  fputc('\n', f);
}

void xd_metrics_print_table(FILE *f, const xd_binary_metrics *m, const char *class_names[2]) {
  const char *neg = class_names && class_names[0] ? class_names[0] : "negative";
  const char *pos = class_names && class_names[1] ? class_names[1] : "positive";
  const int64_t(*c)[2] = (const int64_t(*)[2])m->confusion;
  int64_t tn = c[0][0], fp = c[0][1], fn = c[1][0], tp = c[1][1];
  char h0[256], h1[256], r0[256], r1[256];
  snprintf(h0, sizeof h0, "predicted %s", neg);
  snprintf(h1, sizeof h1, "predicted %s", pos);
  snprintf(r0, sizeof r0, "actual %s", neg);
  snprintf(r1, sizeof r1, "actual %s", pos);
  int wr = (int)(strlen(r0) > strlen(r1) ? strlen(r0) : strlen(r1));
  int w0 = (int)strlen(h0), w1 = (int)strlen(h1);

  fprintf(f, "%lld images; predicted %s iff probability >= %.4g\n\n", (long long)m->n, pos,
          m->threshold);
  fprintf(f, "  %-*s  %*s  %*s\n", wr, "", w0, h0, w1, h1);
  fprintf(f, "  %-*s  %*lld  %*lld\n", wr, r0, w0, (long long)tn, w1, (long long)fp);
  fprintf(f, "  %-*s  %*lld  %*lld\n\n", wr, r1, w0, (long long)fn, w1, (long long)tp);

  char what[320];
  table_row(f, "loss", m->loss, 0, -1, "");
  table_row(f, "accuracy", m->accuracy, tp + tn, m->n, "correct");
  snprintf(what, sizeof what, "%s cases found", pos);
  table_row(f, "sensitivity (recall)", m->recall, tp, tp + fn, what);
  snprintf(what, sizeof what, "%s cases cleared", neg);
  table_row(f, "specificity", m->specificity, tn, tn + fp, what);
  snprintf(what, sizeof what, "%s calls correct", pos);
  table_row(f, "precision (PPV)", m->precision, tp, tp + fp, what);
  table_row(f, "F1", m->f1, 0, -1, "");
  table_row(f, "ROC-AUC", m->roc_auc, 0, -1, "");
  table_row(f, "PR-AUC (avg precision)", m->pr_auc, 0, -1, "");
  fprintf(f, "\n  missed %s (false negatives): %lld; false alarms (false positives): %lld\n", pos,
          (long long)fn, (long long)fp);
}

int xd_roc_curve_write(FILE *f, int64_t n, const float *prob, const uint8_t *label, xd_err *e) {
  int64_t pos;
  scored *s = sorted_scores(n, prob, label, &pos);
  if (!s) return xd_fail(e, "ROC curve: no scores, a NaN probability, or out of memory (%lld cases)",
                         (long long)n);
  int64_t neg = n - pos;
  if (pos == 0 || neg == 0) {
    free(s);
    return xd_fail(e, "ROC curve: needs both classes, got %lld positive and %lld negative cases",
                   (long long)pos, (long long)neg);
  }
  fprintf(f, "threshold\tfpr\ttpr\ninf\t0\t0\n");
  int64_t tp = 0, fp = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = group_end(s, n, i);
    for (int64_t k = i; k < j; k++) s[k].y ? tp++ : fp++;
    fprintf(f, "%.9g\t%.12g\t%.12g\n", s[i].p, (double)fp / (double)neg, (double)tp / (double)pos);
    i = j;
  }
  free(s);
  return ferror(f) ? xd_fail(e, "ROC curve: write error") : 0;
}

/* ---- weighted metrics, calibration ---- */


static double wratio(double num, double den) { return den > 0 ? num / den : NAN; }

void xd_metrics_binary_weighted(int64_t n, const float *prob, const uint8_t *label, double threshold,
                                double w_neg, double w_pos, xd_binary_metrics *m) {
  xd_metrics_binary(n, prob, label, threshold, m);
  if (w_neg == 1 && w_pos == 1) return;
  const double tn = w_neg * (double)m->confusion[0][0], fp = w_neg * (double)m->confusion[0][1];
  const double fn = w_pos * (double)m->confusion[1][0], tp = w_pos * (double)m->confusion[1][1];
  m->accuracy = wratio(tp + tn, tp + tn + fp + fn);
  m->precision = wratio(tp, tp + fp);
  m->f1 = wratio(2 * tp, 2 * tp + fp + fn);
  int64_t pos;
  scored *s = sorted_scores(n, prob, label, &pos);
  m->pr_auc = s ? pr_auc_sorted_weighted(s, n, pos, w_neg, w_pos) : NAN;
  free(s);
}

void xd_calibration_compute(int64_t n, const float *prob, const uint8_t *label, double w_neg, double w_pos,
                            xd_calibration *c) {
  double wsum[XD_CAL_BINS] = {0}, psum[XD_CAL_BINS] = {0}, ysum[XD_CAL_BINS] = {0};
  memset(c, 0, sizeof *c);
  double wtot = 0, sq = 0;
  int bad = n <= 0;
  for (int64_t i = 0; i < n && !bad; i++) {
    double p = prob[i], y = label[i] != 0, w = label[i] ? w_pos : w_neg;
    if (isnan(p)) {
      bad = 1;
      break;
    }
    /* p * 10 is exact in double for a float p, so the bin edges are exact tenths */
    int b = (int)floor(p * XD_CAL_BINS);
    b = b < 0 ? 0 : b >= XD_CAL_BINS ? XD_CAL_BINS - 1 : b;
    c->count[b]++;
    wsum[b] += w;
    psum[b] += w * p;
    ysum[b] += w * y;
    wtot += w;
    sq += w * (p - y) * (p - y);
  }
  double ece = 0;
  for (int b = 0; b < XD_CAL_BINS; b++) {
    c->bin_lo[b] = (double)b / XD_CAL_BINS;
    c->bin_hi[b] = (double)(b + 1) / XD_CAL_BINS;
    c->mean_prob[b] = c->count[b] && wsum[b] > 0 ? psum[b] / wsum[b] : NAN;
    c->frac_pos[b] = c->count[b] && wsum[b] > 0 ? ysum[b] / wsum[b] : NAN;
    if (!bad && wtot > 0 && wsum[b] > 0) ece += wsum[b] / wtot * fabs(c->mean_prob[b] - c->frac_pos[b]);
  }
  c->ece = bad || !(wtot > 0) ? NAN : ece;
  c->brier = bad || !(wtot > 0) ? NAN : sq / wtot;
}

static void csv_number(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, "%.9g", v);
}

int xd_reliability_csv_write(FILE *f, const xd_calibration *c) {
  fputs("bin_lo,bin_hi,count,mean_prob,frac_pos\n", f);
  for (int b = 0; b < XD_CAL_BINS; b++) {
    fprintf(f, "%.1f,%.1f,%lld,", c->bin_lo[b], c->bin_hi[b], (long long)c->count[b]);
    csv_number(f, c->mean_prob[b]);
    fputc(',', f);
    csv_number(f, c->frac_pos[b]);
    fputc('\n', f);
  }
  return ferror(f) ? -1 : 0;
}

double xd_bce_of_probs(int64_t n, const float *prob, const uint8_t *label, double w_neg, double w_pos) {
  const double eps = 1e-7;
  double sum = 0, wtot = 0;
  for (int64_t i = 0; i < n; i++) {
    double p = prob[i], w = label[i] ? w_pos : w_neg;
    if (isnan(p)) return NAN;
    p = p < eps ? eps : p > 1 - eps ? 1 - eps : p;
    sum -= w * (label[i] ? log(p) : log(1 - p));
    wtot += w;
  }
  return wtot > 0 ? sum / wtot : NAN;
}

int xd_metrics_json_full(FILE *f, const xd_binary_metrics *m, const xd_calibration *c, const char *extra) {
  json_body(f, m);
  fputs(", \"ece\": ", f);
  xd_json_number(f, c->ece);
  fputs(", \"brier\": ", f);
  xd_json_number(f, c->brier);
  fputs(", \"reliability\": [", f);
  for (int b = 0; b < XD_CAL_BINS; b++) {
    fprintf(f, "%s{\"bin_lo\": %.1f, \"bin_hi\": %.1f, \"count\": %lld, \"mean_prob\": ", b ? ", " : "",
            c->bin_lo[b], c->bin_hi[b], (long long)c->count[b]);
    xd_json_number(f, c->mean_prob[b]);
    fputs(", \"frac_pos\": ", f);
    xd_json_number(f, c->frac_pos[b]);
    fputc('}', f);
  }
  fputc(']', f);
  if (extra && *extra) fprintf(f, ", %s", extra);
  fputs("}\n", f);
  return ferror(f) ? -1 : 0;
}
