/* Metrics against hand-computed cases, against scikit-learn (fixtures from
 * scripts/make_metric_fixtures.py) and against brute-force searches. argv[1]: fixtures dir. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metrics.h"

#define TOL 1e-9
/* Equal to TOL, or both NAN (the library's "undefined"). */
#define CHECK_SAME(a, b)                                                                    \
  do {                                                                                      \
    double _x = (a), _y = (b);                                                              \
    CHECK_MSG((isnan(_x) && isnan(_y)) || fabs(_x - _y) <= TOL, "%s=%.17g expected %.17g", #a, \
              _x, _y);                                                                      \
  } while (0)

/* ---------- hand-computed cases ---------- */

static void test_ties(void) {
  /* P=3, N=3. Negative at 0.8 ties two positives and trails one: U = 1 + 2/2 = 2; the two negatives
   * at 0.3 trail all three positives: U = 3 + 3. AUC = 8/9. AP: (1/3)*1 + (2/3)*(3/4) = 5/6. */
  const float p[] = {0.9f, 0.8f, 0.8f, 0.8f, 0.3f, 0.3f};
  const uint8_t y[] = {1, 1, 0, 1, 0, 0};
  CHECK_SAME(xd_roc_auc(6, p, y), 8.0 / 9.0);
  CHECK_SAME(xd_pr_auc(6, p, y), 5.0 / 6.0);
  xd_binary_metrics m;
  /* The threshold equals three scores exactly: they count as predicted positive. */
  xd_metrics_binary(6, p, y, (double)0.8f, &m);
  CHECK(m.n == 6 && isnan(m.loss));
  CHECK(m.confusion[0][0] == 2 && m.confusion[0][1] == 1 && m.confusion[1][0] == 0 &&
        m.confusion[1][1] == 3);
  CHECK_SAME(m.accuracy, 5.0 / 6.0);
  CHECK_SAME(m.precision, 3.0 / 4.0);
  CHECK_SAME(m.recall, 1.0);
  CHECK_SAME(m.specificity, 2.0 / 3.0);
  CHECK_SAME(m.f1, 6.0 / 7.0);
  CHECK_SAME(m.roc_auc, 8.0 / 9.0);
  CHECK_SAME(m.pr_auc, 5.0 / 6.0);
  CHECK(m.threshold == (double)0.8f);
  /* Just above the tied scores: the group flips to negative as a whole. */
  xd_metrics_binary(6, p, y, nextafter((double)0.8f, 1.0), &m);
  CHECK(m.confusion[0][1] == 0 && m.confusion[1][1] == 1 && m.confusion[1][0] == 2);

  CHECK(xd_threshold_for_sensitivity(6, p, y, 0.95) == (double)0.8f);
  CHECK(xd_threshold_for_sensitivity(6, p, y, 1.0) == (double)0.8f);
  CHECK(xd_threshold_for_sensitivity(6, p, y, 1.0 / 3.0) == (double)0.9f); /* exactly TP/P */
  CHECK(xd_threshold_for_sensitivity(6, p, y, 0.34) == (double)0.8f);
  CHECK(xd_threshold_for_sensitivity(6, p, y, 0.0) == (double)0.9f);
  CHECK(isnan(xd_threshold_for_sensitivity(6, p, y, 1.01)));
}

static void test_threshold_edges(void) {
  const float p[] = {0.0f, 0.25f, 0.5f, nextafterf(0.5f, 0.0f), 0.75f, 1.0f};
  const uint8_t y[] = {0, 0, 1, 1, 0, 1};
  xd_binary_metrics m;
  xd_metrics_binary(6, p, y, 0.5, &m); /* 0.5 in, the float just below out */
  CHECK(m.confusion[0][0] == 2 && m.confusion[0][1] == 1 && m.confusion[1][0] == 1 &&
        m.confusion[1][1] == 2);
  xd_metrics_binary(6, p, y, 0.0, &m); /* everything, prob 0 included, is positive */
  CHECK(m.confusion[0][1] == 3 && m.confusion[1][1] == 3 && m.confusion[0][0] == 0);
  CHECK_SAME(m.recall, 1.0);
  CHECK_SAME(m.specificity, 0.0);
  CHECK_SAME(m.precision, 0.5);
  xd_metrics_binary(6, p, y, 1.0, &m); /* only prob == 1 is positive */
  CHECK(m.confusion[1][1] == 1 && m.confusion[0][1] == 0 && m.confusion[1][0] == 2);
  CHECK_SAME(m.specificity, 1.0);
  CHECK_SAME(m.precision, 1.0);
  xd_metrics_binary(5, p, y, 1.0, &m); /* without the 1.0: nothing predicted positive */
  CHECK(isnan(m.precision));
  CHECK_SAME(m.recall, 0.0);
  CHECK_SAME(m.f1, 0.0);
}

static void test_one_class_and_empty(void) {
  const float p[] = {0.1f, 0.4f, 0.4f, 0.9f};
  const uint8_t pos[] = {1, 1, 1, 1}, neg[] = {0, 0, 0, 0};
  xd_binary_metrics m;
  xd_metrics_binary(4, p, pos, 0.5, &m);
  CHECK(isnan(m.roc_auc));
  CHECK_SAME(m.pr_auc, 1.0);
  CHECK(isnan(m.specificity));
  CHECK_SAME(m.recall, 0.25);
  CHECK_SAME(m.precision, 1.0);
  CHECK(xd_threshold_for_sensitivity(4, p, pos, 0.5) == (double)0.4f);
  CHECK(xd_threshold_for_sensitivity(4, p, pos, 0.95) == (double)0.1f);

  xd_metrics_binary(4, p, neg, 0.5, &m);
  CHECK(isnan(m.roc_auc) && isnan(m.pr_auc) && isnan(m.recall));
  CHECK_SAME(m.precision, 0.0); /* FP = 1, TP = 0 */
  CHECK_SAME(m.specificity, 0.75);
  CHECK(isnan(m.f1) == 0 && m.f1 == 0.0);
  CHECK(isnan(xd_threshold_for_sensitivity(4, p, neg, 0.95)));

  xd_metrics_binary(0, p, neg, 0.5, &m);
  CHECK(m.n == 0 && isnan(m.accuracy) && isnan(m.roc_auc) && isnan(m.pr_auc) && isnan(m.f1));
  CHECK(m.confusion[0][0] == 0 && m.confusion[1][1] == 0);
  CHECK(isnan(xd_threshold_for_sensitivity(0, p, pos, 0.5)));

  const float bad[] = {0.2f, NAN, 0.7f};
  const uint8_t yb[] = {0, 1, 1};
  CHECK(isnan(xd_roc_auc(3, bad, yb)) && isnan(xd_pr_auc(3, bad, yb)));
  CHECK(isnan(xd_threshold_for_sensitivity(3, bad, yb, 0.5)));
}

/* ---------- JSON and table ---------- */

/* Pointer just past `"key": ` in s, or NULL. */
static const char *json_value(const char *s, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\": ", key);
  const char *q = strstr(s, pat);
  return q ? q + strlen(pat) : NULL;
}

static char *slurp(FILE *f) {
  long len = ftell(f);
  rewind(f);
  char *s = calloc((size_t)len + 1, 1);
  if (s && fread(s, 1, (size_t)len, f) != (size_t)len) s[0] = 0;
  return s;
}

static void test_json_and_table(void) {
  const float p[] = {0.9f, 0.8f, 0.8f, 0.8f, 0.3f, 0.3f};
  const uint8_t y[] = {1, 1, 0, 1, 0, 0};
  xd_binary_metrics m;
  xd_metrics_binary(6, p, y, 0.95, &m); /* nothing predicted positive: precision undefined */
  m.loss = 0.125;
  FILE *f = tmpfile();
  CHECK(f && xd_metrics_json(f, &m) == 0);
  char *s = slurp(f);
  fclose(f);
  CHECK(s[0] == '{' && strstr(s, "}\n") && !strstr(s, "nan") && !strstr(s, "NaN"));
  CHECK(strncmp(s, "{\"n\": 6, ", 9) == 0);
  const char *keys[] = {"loss", "accuracy", "recall", "specificity", "f1", "roc_auc", "pr_auc",
                        "threshold"};
  const double want[] = {m.loss, m.accuracy, m.recall, m.specificity, m.f1, m.roc_auc, m.pr_auc,
                         m.threshold};
  for (int i = 0; i < 8; i++) {
    const char *v = json_value(s, keys[i]);
    CHECK_MSG(v && strtod(v, NULL) == want[i], "JSON key %s", keys[i]); /* round-trip exact */
  }
  const char *v = json_value(s, "precision");
  CHECK(v && strncmp(v, "null", 4) == 0);
  v = json_value(s, "threshold");
  CHECK(v && strncmp(v, "0.95,", 5) == 0); /* shortest form, not 0.94999999999999996 */
  v = json_value(s, "confusion");
  CHECK(v && strncmp(v, "[[3, 0], [3, 0]]}", 17) == 0);
  free(s);

  f = tmpfile();
  xd_metrics_print_table(f, &m, (const char *[]){"NORMAL", "PNEUMONIA"});
  s = slurp(f);
  fclose(f);
  CHECK(strstr(s, "actual PNEUMONIA") && strstr(s, "predicted NORMAL") && strstr(s, "sensitivity"));
  CHECK(strstr(s, "specificity") && strstr(s, "undefined")); /* the NAN precision */
  CHECK(strstr(s, "(0 / 3 PNEUMONIA cases found)"));
  free(s);
}

/* ---------- calibration (ECE, Brier), weighted metrics ---------- */

static void test_calibration(void) {
  /* Dyadic probabilities (exact in float and double). Bins: 0.0625 -> [0, 0.1); 0.125, 0.1875 -> [0.1,
   * 0.2); 0.5 -> [0.5, 0.6) (lower edge inclusive); 0.75 -> [0.7, 0.8); 0.875 -> [0.8, 0.9); 1.0 -> the last.
   * |mean - frac| per bin: 0.0625, |0.15625 - 0.5| = 0.34375 (2 cases), 0.5, 0.75, 0.125, 0.
   * ECE = (0.0625 + 2 * 0.34375 + 0.5 + 0.75 + 0.125 + 0) / 7 = 2.125 / 7.
   * Brier = (0.0625^2 + 0.125^2 + 0.8125^2 + 0.5^2 + 0.75^2 + 0.125^2 + 0) / 7 = 1.5078125 / 7. */
  const float p[] = {0.0625f, 0.125f, 0.1875f, 0.5f, 0.75f, 0.875f, 1.0f};
  const uint8_t y[] = {0, 0, 1, 1, 0, 1, 1};
  xd_calibration c;
  xd_calibration_compute(7, p, y, 1, 1, &c);
  CHECK_SAME(c.ece, 2.125 / 7);
  CHECK_SAME(c.brier, 1.5078125 / 7);
  const int64_t want_count[XD_CAL_BINS] = {1, 2, 0, 0, 0, 1, 0, 1, 1, 1};
  for (int b = 0; b < XD_CAL_BINS; b++) {
    CHECK_MSG(c.count[b] == want_count[b], "bin %d count %lld", b, (long long)c.count[b]);
    CHECK_SAME(c.bin_lo[b], b / 10.0);
    CHECK_SAME(c.bin_hi[b], (b + 1) / 10.0);
    CHECK(want_count[b] ? !isnan(c.mean_prob[b]) && !isnan(c.frac_pos[b]) : isnan(c.mean_prob[b]) && isnan(c.frac_pos[b]));
  }
  CHECK_SAME(c.mean_prob[1], 0.15625);
  CHECK_SAME(c.frac_pos[1], 0.5);
  CHECK_SAME(c.mean_prob[9], 1.0);
  CHECK_SAME(c.frac_pos[7], 0.0);

  /* Bin edges are exact tenths of the float: the float nearest 0.3 lies above 0.3, the one below it in [0.2, 0.3). */
  const float e[] = {0.3f, nextafterf(0.3f, 0.0f), 0.0f, 0.7f};
  const uint8_t ye[] = {0, 0, 0, 0};
  xd_calibration_compute(4, e, ye, 1, 1, &c);
  CHECK(c.count[3] == ((double)0.3f >= 0.3 ? 1 : 0) + ((double)nextafterf(0.3f, 0.0f) >= 0.3 ? 1 : 0));
  CHECK(c.count[0] == 1 && c.count[2] + c.count[3] == 2);
  CHECK(c.count[6] == ((double)0.7f < 0.7 ? 1 : 0) && c.count[7] == ((double)0.7f >= 0.7 ? 1 : 0));

  /* Perfect calibration: ECE 0. Weights: two cases at 0.25, negative counted twice: the bin's weighted
   * positive fraction is 1/3, ECE = |0.25 - 1/3| = 1/12, Brier = (2 * 0.0625 + 0.5625) / 3. */
  const float q[] = {0.25f, 0.25f, 0.25f, 0.25f};
  const uint8_t yq[] = {1, 0, 0, 0};
  xd_calibration_compute(4, q, yq, 1, 1, &c);
  CHECK_SAME(c.ece, 0.0);
  CHECK_SAME(c.brier, (0.5625 + 3 * 0.0625) / 4);
  xd_calibration_compute(2, q, yq, 2, 1, &c);
  CHECK_SAME(c.ece, 1.0 / 12);
  CHECK_SAME(c.brier, (2 * 0.0625 + 0.5625) / 3);
  CHECK(c.count[2] == 2); /* counts stay unweighted */

  /* Undefined: no cases, a NaN probability. */
  xd_calibration_compute(0, q, yq, 1, 1, &c);
  CHECK(isnan(c.ece) && isnan(c.brier) && c.count[0] == 0);
  const float bad[] = {0.2f, NAN};
  xd_calibration_compute(2, bad, yq, 1, 1, &c);
  CHECK(isnan(c.ece) && isnan(c.brier));

  /* BCE of probabilities: -log(0.5) for 0.5; clipped at 1e-7 for a certain wrong answer. */
  const float b1[] = {0.5f, 1.0f};
  const uint8_t yb[] = {1, 0};
  CHECK_SAME(xd_bce_of_probs(1, b1, yb, 1, 1), log(2.0));
  CHECK_CLOSE(xd_bce_of_probs(2, b1, yb, 1, 1), (log(2.0) - log(1e-7)) / 2, 1e-6, 0);
  CHECK_CLOSE(xd_bce_of_probs(2, b1, yb, 3, 1), (log(2.0) - 3 * log(1e-7)) / 4, 1e-6, 0);

  /* Reliability CSV: header, 10 rows, empty fields for empty bins. */
  xd_calibration_compute(7, p, y, 1, 1, &c);
  FILE *f = tmpfile();
  CHECK(f && xd_reliability_csv_write(f, &c) == 0);
  char *s = slurp(f);
  fclose(f);
  const char *head = "bin_lo,bin_hi,count,mean_prob,frac_pos\n0.0,0.1,1,0.0625,0\n0.1,0.2,2,0.15625,0.5\n0.2,0.3,0,,\n";
  CHECK_MSG(strncmp(s, head, strlen(head)) == 0, "CSV:\n%s", s);
  int lines = 0;
  for (const char *t = s; *t; t++) lines += *t == '\n';
  CHECK(lines == 11 && strstr(s, "0.9,1.0,1,1,1\n"));
  free(s);

  /* JSON: the SPEC keys, then ece, brier, reliability, then the extra members. */
  xd_binary_metrics m;
  xd_metrics_binary(7, p, y, 0.5, &m);
  f = tmpfile();
  CHECK(f && xd_metrics_json_full(f, &m, &c, "\"tta\": 9") == 0);
  s = slurp(f);
  fclose(f);
  const char *v = json_value(s, "ece");
  CHECK(v && strtod(v, NULL) == c.ece);
  v = json_value(s, "brier");
  CHECK(v && strtod(v, NULL) == c.brier);
  CHECK(strstr(s, "\"confusion\": [[2, 1], [1, 3]], \"ece\": "));
  CHECK(strstr(s, "\"reliability\": [{\"bin_lo\": 0.0, \"bin_hi\": 0.1, \"count\": 1, \"mean_prob\": 0.0625, \"frac_pos\": 0}, "));
  CHECK(strstr(s, "{\"bin_lo\": 0.2, \"bin_hi\": 0.3, \"count\": 0, \"mean_prob\": null, \"frac_pos\": null}"));
  CHECK(strstr(s, "}], \"tta\": 9}\n"));
  free(s);
}

static void test_weighted(void) {
  /* TP 1, FP 1, FN 1, TN 1 at 0.5; negatives weigh 3: accuracy (1 + 3) / 8, precision 1 / (1 + 3),
   * F1 2 / (2 + 3 + 1); recall, specificity, ROC-AUC as unweighted. PR-AUC: 0.5 * 1 (at 0.9) + 0.5 *
   * 2 / (2 + 3) (at 0.3) = 0.7. */
  const float p[] = {0.9f, 0.8f, 0.3f, 0.1f};
  const uint8_t y[] = {1, 0, 1, 0};
  xd_binary_metrics a, b;
  xd_metrics_binary_weighted(4, p, y, 0.5, 3, 1, &a);
  CHECK_SAME(a.accuracy, 0.5);
  CHECK_SAME(a.precision, 0.25);
  CHECK_SAME(a.f1, 1.0 / 3);
  CHECK_SAME(a.pr_auc, 0.7);
  CHECK_SAME(a.recall, 0.5);
  CHECK_SAME(a.specificity, 0.5);
  CHECK_SAME(a.roc_auc, 0.75);
  CHECK(a.confusion[0][0] == 1 && a.confusion[0][1] == 1 && a.confusion[1][0] == 1 && a.confusion[1][1] == 1);
  /* weights 1, 1: exactly xd_metrics_binary */
  xd_metrics_binary_weighted(4, p, y, 0.5, 1, 1, &a);
  xd_metrics_binary(4, p, y, 0.5, &b);
  CHECK(memcmp(&a, &b, sizeof a) == 0);
}

/* ---------- fixtures (scikit-learn) ---------- */

typedef struct fixture {
  double threshold, min_sens;
  char keys[16][40];
  double vals[16];
  int nkeys;
  long long conf[4];
  double roc[2048][2];
  int nroc;
  int64_t n;
  float *p;
  uint8_t *y;
} fixture;

static int read_fixture(const char *path, fixture *fx) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  memset(fx, 0, sizeof *fx);
  char line[256], word[40];
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#' || sscanf(line, "%39s", word) != 1) continue;
    if (!strcmp(word, "threshold")) sscanf(line, "%*s %lf", &fx->threshold);
    if (!strcmp(word, "min_sensitivity")) sscanf(line, "%*s %lf", &fx->min_sens);
    if (!strcmp(word, "expect") && fx->nkeys < 16) {
      sscanf(line, "%*s %39s", fx->keys[fx->nkeys]);
      fx->vals[fx->nkeys++] = strtod(strchr(strchr(line, ' ') + 1, ' ') + 1, NULL);
    }
    if (!strcmp(word, "confusion"))
      sscanf(line, "%*s %lld %lld %lld %lld", &fx->conf[0], &fx->conf[1], &fx->conf[2], &fx->conf[3]);
    if (!strcmp(word, "roc") && fx->nroc < 2048) {
      sscanf(line, "%*s %lf %lf", &fx->roc[fx->nroc][0], &fx->roc[fx->nroc][1]);
      fx->nroc++;
    }
    if (!strcmp(word, "data")) {
      long long n = 0;
      sscanf(line, "%*s %lld", &n);
      fx->p = malloc((size_t)n * sizeof *fx->p);
      fx->y = malloc((size_t)n);
      for (fx->n = 0; fx->n < n && fgets(line, sizeof line, f); fx->n++) {
        int lab = 0;
        if (sscanf(line, "%f %d", &fx->p[fx->n], &lab) != 2) break;
        fx->y[fx->n] = (uint8_t)lab;
      }
      if (fx->n != n) fx->n = -1;
    }
  }
  fclose(f);
  return fx->n > 0 && fx->nkeys >= 8 ? 0 : -1;
}

static double fixture_value(const fixture *fx, const char *key) {
  for (int i = 0; i < fx->nkeys; i++)
    if (!strcmp(fx->keys[i], key)) return fx->vals[i];
  fprintf(stderr, "fixture has no key %s\n", key);
  return -12345.0;
}

/* Each ROC row the library writes must match scikit-learn's roc_curve point for point. */
static void check_roc_curve(const fixture *fx, const char *name) {
  FILE *f = tmpfile();
  xd_err e = {{0}};
  int rc = xd_roc_curve_write(f, fx->n, fx->p, fx->y, &e);
  if (fx->nroc == 0) {
    CHECK_MSG(rc == -1 && strstr(e.msg, "both classes"), "%s: one-class ROC must fail: %s", name, e.msg);
    fclose(f);
    return;
  }
  CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
  rewind(f);
  char line[256];
  CHECK(fgets(line, sizeof line, f) && !strcmp(line, "threshold\tfpr\ttpr\n"));
  CHECK(fgets(line, sizeof line, f) && !strcmp(line, "inf\t0\t0\n"));
  int rows = 0;
  double prev_t = INFINITY, t, fpr, tpr;
  while (fgets(line, sizeof line, f) && sscanf(line, "%lf %lf %lf", &t, &fpr, &tpr) == 3) {
    if (rows < fx->nroc) {
      CHECK_MSG(fabs(fpr - fx->roc[rows][0]) <= TOL && fabs(tpr - fx->roc[rows][1]) <= TOL,
                "%s: ROC row %d", name, rows);
    }
    CHECK(t < prev_t);
    prev_t = t;
    rows++;
  }
  CHECK_MSG(rows == fx->nroc, "%s: %d ROC rows, scikit-learn has %d", name, rows, fx->nroc);
  fclose(f);
}

static void test_fixture(const char *dir, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  static fixture fx;
  CHECK_MSG(read_fixture(path, &fx) == 0, "cannot read fixture %s", path);
  if (fx.n <= 0) return;
  xd_binary_metrics m;
  xd_metrics_binary(fx.n, fx.p, fx.y, fx.threshold, &m);
  CHECK(m.confusion[0][0] == fx.conf[0] && m.confusion[0][1] == fx.conf[1] &&
        m.confusion[1][0] == fx.conf[2] && m.confusion[1][1] == fx.conf[3]);
  struct { const char *key; double got; } got[] = {
      {"accuracy", m.accuracy}, {"precision", m.precision}, {"recall", m.recall},
      {"specificity", m.specificity}, {"f1", m.f1}, {"roc_auc", m.roc_auc}, {"pr_auc", m.pr_auc},
      {"threshold_for_sensitivity",
       xd_threshold_for_sensitivity(fx.n, fx.p, fx.y, fx.min_sens)}};
  for (size_t i = 0; i < sizeof got / sizeof *got; i++) {
    double want = fixture_value(&fx, got[i].key);
    CHECK_MSG((isnan(got[i].got) && isnan(want)) || fabs(got[i].got - want) <= TOL,
              "%s: %s = %.17g, scikit-learn %.17g", name, got[i].key, got[i].got, want);
  }
  CHECK_SAME(xd_roc_auc(fx.n, fx.p, fx.y), m.roc_auc);
  CHECK_SAME(xd_pr_auc(fx.n, fx.p, fx.y), m.pr_auc);
  check_roc_curve(&fx, name);
  free(fx.p);
  free(fx.y);
}

/* ---------- brute force ---------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform(void) {
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void sens_spec(int64_t n, const float *p, const uint8_t *y, double t, double *sens,
                      double *spec) {
  int64_t tp = 0, pos = 0, tn = 0, neg = 0;
  for (int64_t i = 0; i < n; i++) {
    pos += y[i], neg += !y[i];
    tp += y[i] && p[i] >= t;
    tn += !y[i] && p[i] < t;
  }
  *sens = (double)tp / (double)pos;
  *spec = (double)tn / (double)neg;
}

/* O(n^2) pair counting for the AUC and a scan of every score for the threshold. */
static void test_brute_force(void) {
  enum { N = 400 };
  float p[N];
  uint8_t y[N];
  const double targets[] = {0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0};
  for (int trial = 0; trial < 12; trial++) {
    int n = 20 + (int)(uniform() * (N - 20));
    double levels = trial % 3 == 0 ? 10 : trial % 3 == 1 ? 100 : 0; /* heavy ties, some, none */
    for (int i = 0; i < n; i++) {
      y[i] = uniform() < 0.3 + 0.05 * trial;
      double s = 0.6 * uniform() + (y[i] ? 0.4 * uniform() : 0.2 * uniform());
      p[i] = (float)(levels ? round(s * levels) / levels : s);
    }
    double u2 = 0, pos = 0, neg = 0;
    for (int i = 0; i < n; i++) {
      pos += y[i], neg += !y[i];
      for (int j = 0; j < n; j++)
        if (y[i] && !y[j]) u2 += p[i] > p[j] ? 2 : p[i] == p[j] ? 1 : 0;
    }
    CHECK_SAME(xd_roc_auc(n, p, y), u2 / (2 * pos * neg));

    for (size_t k = 0; k < sizeof targets / sizeof *targets; k++) {
      double best_t = NAN, best_spec = -1, sens, spec;
      for (int i = 0; i < n; i++) {
        sens_spec(n, p, y, p[i], &sens, &spec);
        if (sens >= targets[k] && (spec > best_spec || (spec == best_spec && p[i] > best_t)))
          best_t = p[i], best_spec = spec;
      }
      double t = xd_threshold_for_sensitivity(n, p, y, targets[k]);
      CHECK_MSG(t == best_t, "trial %d target %g: %.9g, brute force %.9g", trial, targets[k], t,
                best_t);
      sens_spec(n, p, y, t, &sens, &spec);
      CHECK(sens >= targets[k] && spec == best_spec);
    }
  }
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/fixtures";
  test_ties();
  test_threshold_edges();
  test_one_class_and_empty();
  test_json_and_table();
  test_calibration();
  test_weighted();
  const char *fixtures[] = {"metrics_continuous.txt", "metrics_ties_tenths.txt",
                            "metrics_three_levels.txt", "metrics_imbalanced.txt",
                            "metrics_all_negative.txt"};
  for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) test_fixture(dir, fixtures[i]);
  test_brute_force();
  return check_done("test_metrics");
}
