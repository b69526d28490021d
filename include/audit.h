/* Shortcut audit (issue 8, item 5): how much a model's predictions on one split move under image
 * perturbations that should not change the diagnosis, and where its Grad-CAM evidence lies.
 *
 * Every perturbation is a pure, deterministic function of one uint8 image at the model's input size
 * (bilinear, edge-clamped resampling where geometry changes; results rounded half up to uint8), so the
 * audit is bitwise reproducible for any thread count. The audit itself calls xd_infer and xd_gradcam,
 * so it sees exactly the pixels-to-probability path that eval and predict use.
 *
 * Library code: nothing here prints; failures fill an xd_err and return -1. */
#ifndef XD_AUDIT_H
#define XD_AUDIT_H
#include <stdint.h>

#include "common.h"
#include "dataset.h"
#include "model.h"

/* ---- perturbations ---- */

typedef enum {
  XD_PT_IDENTITY,    /* returns the same bytes (a sanity check of the whole pipeline) */
  XD_PT_SCALE_X,     /* a = horizontal scale factor, content centred, y unchanged */
  XD_PT_BORDER,      /* a = frame width as a fraction of width/height; b = fill value, or -1 for the median */
  XD_PT_TOP_CORNERS, /* a, b = patch width, height fractions; both top corners filled with the median */
  XD_PT_TONE,        /* a = brightness shift on [0,1], b = gamma: out = clamp(x + a)^b on x in [0,1] */
  XD_PT_DOWN_NEAREST,/* a = factor: area-average down by a, nearest-neighbour back up */
  XD_PT_BOX_BLUR,    /* a = radius: (2a+1)x(2a+1) mean, edge-clamped */
} xd_perturb_kind;

typedef struct xd_perturbation {
  const char *name; /* stable identifier: CLI --perturb, JSON "name" */
  xd_perturb_kind kind;
  double a, b;
  const char *what; /* one-line description for --help and reports */
} xd_perturbation;

/* All perturbations the audit knows, in report order; *count receives their number. The default set
 * is every one except "identity". */
const xd_perturbation *xd_perturbations(int *count);
/* By name, or NULL. */
const xd_perturbation *xd_perturbation_find(const char *name);

/* Applies p to one h x w image. src and dst must not overlap. Deterministic and thread-safe. */
void xd_perturb_apply(const xd_perturbation *p, const uint8_t *src, int h, int w, uint8_t *dst);

/* The primitives behind xd_perturb_apply (exposed for tests). */
/* Output column x samples source column (x + 0.5 - w/2) / sx + w/2 - 0.5, clamped to [0, w-1],
 * bilinearly: sx < 1 squeezes (edge columns repeat into the sides), sx > 1 stretches (sides cropped);
 * sx = 1 returns the same bytes. */
void xd_perturb_scale_x(const uint8_t *src, int h, int w, double sx, uint8_t *dst);
/* Frame of round(frac*w) columns left and right and round(frac*h) rows top and bottom set to value
 * (0..255), or to the image's median when value < 0. */
void xd_perturb_border(const uint8_t *src, int h, int w, double frac, int value, uint8_t *dst);
/* Top-left and top-right patches of round(fw*w) x round(fh*h) pixels set to the image's median. */
void xd_perturb_top_corners(const uint8_t *src, int h, int w, double fw, double fh, uint8_t *dst);
/* out = round(255 * clamp(x/255 + brightness, 0, 1)^gamma); ties round in the direction of the shift
 * (brightness 0.1 = 25.5 grey levels moves a pixel by +26, -0.1 by -26, before clamping). */
void xd_perturb_tone(const uint8_t *src, int h, int w, double brightness, double gamma, uint8_t *dst);
/* Down by `factor` with area averaging (cells at the right/bottom edge average the pixels they cover),
 * then back up by nearest neighbour: out(y, x) = cell(y / factor, x / factor). factor 1 = identity. */
void xd_perturb_down_nearest(const uint8_t *src, int h, int w, int factor, uint8_t *dst);
/* (2r+1)^2 box mean with edge clamping, rounded half up. r = 0 = identity. */
void xd_perturb_box_blur(const uint8_t *src, int h, int w, int radius, uint8_t *dst);
/* Lower median of n pixels (the value at sorted index (n-1)/2). */
uint8_t xd_image_median(const uint8_t *px, int64_t n);

/* ---- regions (shared by the border/marker perturbations' documentation and the Grad-CAM shares) ---- */

/* Central box covering `frac` of a side of n pixels, symmetric: [lo, hi) with lo = round(n*(1-frac)/2),
 * hi = n - lo. */
void xd_audit_central_range(int n, double frac, int *lo, int *hi);
/* Shares of a non-negative map's mass inside the central box (box_w x box_h fractions) and inside the
 * outer frame (frame fraction, as xd_perturb_border). Returns -1 (shares untouched) when the map's sum
 * is not positive and finite. */
int xd_cam_shares(const float *cam, int h, int w, double box_w, double box_h, double frame, double *center,
                  double *border);

/* ---- the audit ---- */

#define XD_AUDIT_MAX_ROWS 32
#define XD_AUDIT_BOX_W 0.60  /* central thorax box for the Grad-CAM shares: 60% width x 70% height */
#define XD_AUDIT_BOX_H 0.70
#define XD_AUDIT_FRAME 0.08  /* outer frame: 8% of width/height on each side (as border masking) */

typedef struct xd_audit_opts {
  double threshold;       /* a case is predicted positive iff prob >= threshold */
  int batch;              /* inference batch (results do not depend on it) */
  int64_t cam_images;     /* Grad-CAM on at most this many images, evenly spaced over the split; 0 = none */
  int nperturb;           /* 0 = the default set */
  const xd_perturbation *perturb[XD_AUDIT_MAX_ROWS];
} xd_audit_opts;

typedef struct xd_audit_row {
  const xd_perturbation *p;
  double roc_auc, delta_auc;    /* under the perturbation; minus the clean ROC-AUC */
  double sensitivity, specificity;
  double flip_rate;             /* share of images whose predicted label differs from the clean one */
  int64_t flips_to_pos, flips_to_neg;
  double mean_abs_dprob;        /* mean over images of |p_perturbed - p_clean| */
  double max_abs_dprob;
} xd_audit_row;

typedef struct xd_audit_cam {
  int64_t images;               /* maps averaged */
  int64_t empty;                /* maps that were all zero (no positive evidence), left out of the means */
  int available;                /* 0: no Grad-CAM (model without a conv layer, or cam_images = 0) */
  double center_share, border_share;           /* mean over images of each region's share of the mass */
  double center_area, border_area;             /* each region's share of the pixels (a uniform map's shares) */
  double center_share_pos, center_share_neg;   /* center_share by actual class (NAN if none) */
  int64_t images_pos, images_neg;
} xd_audit_cam;

typedef struct xd_audit_result {
  int64_t n, positives;         /* images in the split; actual class-1 cases */
  double threshold;
  double roc_auc, sensitivity, specificity; /* clean */
  double positive_rate;         /* clean share predicted positive */
  int nrows;
  xd_audit_row rows[XD_AUDIT_MAX_ROWS];
  xd_audit_cam cam;
} xd_audit_result;

/* Runs the audit of model m (built and loaded) on every image of ds, which must match the model's
 * input size and have 2 classes. The split is read in chunks (memory O(chunk x perturbations)). */
int xd_audit_run(xd_model *m, xd_dataset *ds, const xd_audit_opts *o, xd_audit_result *r, xd_err *e);

#endif
