/* Several checkpoints scored as one model (eval/predict --ckpt A --ckpt B ...): loading, the checks
 * that make their probabilities comparable, and scoring dataset images through xd_infer_ensemble. */
#ifndef XD_CLI_ENSEMBLE_H
#define XD_CLI_ENSEMBLE_H
#include <stdint.h>

#include "checkpoint.h"
#include "dataset.h"
#include "infer.h"

#define XD_MAX_CKPTS 64

typedef struct cli_ensemble {
  int k;                          /* checkpoints */
  const char *path[XD_MAX_CKPTS]; /* as given on the command line */
  xd_model *m;                    /* [k] */
  xd_workspace *ws;               /* [k], after cli_ensemble_workspaces */
  xd_train_state *st;             /* [k] */
  xd_ckpt_meta *meta;             /* [k] */
  int loaded, have_ws;            /* how many models / workspaces exist (for cli_ensemble_free) */
} cli_ensemble;

/* Loads E->path[0..k). All must have the same input (CxHxW), output kind (number of outputs) and class
 * names as the first; otherwise -1 with "B.h5: input 1x20x20, but A.h5 has 1x16x16 (...)". */
int cli_ensemble_load(cli_ensemble *E, xd_err *e);
int cli_ensemble_workspaces(cli_ensemble *E, int batch, xd_err *e);
void cli_ensemble_free(cli_ensemble *E);

/* "a.h5" or "a.h5 + b.h5 + ..." (truncated to n bytes). */
void cli_ensemble_names(const cli_ensemble *E, char *buf, size_t n);

/* The dataset's images must fit the models: -1 naming data_path otherwise. */
int cli_ensemble_check_data(const cli_ensemble *E, const xd_dataset_info *info, const char *data_path, xd_err *e);

/* The prior P(class 1) the checkpoints' probabilities assume, averaged over them: per checkpoint its
 * root attribute `train_prior` when stored (*from = "checkpoint"), else the positive share of the train
 * split of the dataset file it was trained on (its `data` attribute; *from = "training data"). NAN when
 * neither can be had for some checkpoint. */
double cli_ensemble_train_prior(const cli_ensemble *E, const char **from);

/* Reads images [a, b) of an open split (and their labels into lab, may be NULL) and scores them:
 * prob[b - a]. */
int cli_ensemble_score_range(cli_ensemble *E, xd_dataset *ds, int64_t a, int64_t b, int tta, float *prob,
                             uint8_t *lab, xd_err *e);

/* Chooses the operating point for --threshold auto when the probabilities are not the ones a checkpoint's
 * stored threshold was chosen on (several checkpoints, or --tta): scores the whole `val` split of
 * data_path with the ensemble (and TTA) and returns the highest threshold reaching >= 95% sensitivity
 * there (xd_threshold_for_sensitivity, as training does). Single process (predict). */
int cli_ensemble_val_threshold(cli_ensemble *E, const char *data_path, int tta, double *thr, xd_err *e);

#endif
