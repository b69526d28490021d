/* Checkpoints (SPEC section 4): HDF5 files readable by h5py, weights in PyTorch's shapes under
 * /params/<i>/{weight,bias,running_mean,running_var}, optimizer moments under /optim/{m,v}/<i>/...,
 * training state as root attributes. Written to a temporary file, fsynced and renamed: a checkpoint on
 * disk is always the old one or the new one.
 *
 * Checked (issue 9): a checkpoint (version 2) stores every tensor with HDF5's Fletcher-32 filter and its
 * metadata (superblock, object headers, attributes, fixed-length strings) in checksummed HDF5 structures
 * (libver bounds v110..latest), so a flipped bit is refused ("C.h5: checksum mismatch in
 * /params/3/weight (file corrupted)"). Version 1 checkpoints (before checksums) are still read: their
 * values are checked like any other and `info` says "none". Every load checks every tensor (present, a
 * dataset of this file, float, exactly the shape the stored description gives, finite; running variances
 * and second moments >= 0) and every attribute (type, range: threshold in [0, 1], counters >= 0,
 * ema_decay in [0, 1), train_prior in (0, 1), class names matching the model's outputs, strings never
 * truncated); the first problem is refused in one line naming the file and the tensor or attribute:
 * "best.h5: /params/3/weight holds NaN (layer 4, line 5 of the model)". Saving refuses what loading would:
 * nothing non-finite is ever written. */
#ifndef XD_CHECKPOINT_H
#define XD_CHECKPOINT_H
#include <stdint.h>
#include <stdio.h>

#include "common.h"
#include "dataset.h"
#include "model.h"
#include "optim.h"

typedef struct xd_train_state {
  int64_t step;          /* optimizer steps taken */
  int64_t epoch;         /* epochs completed */
  int64_t step_in_epoch; /* steps of the unfinished epoch (interrupted runs) */
  uint64_t seed;
  double best_metric;    /* by --monitor, of best_epoch */
  int64_t best_epoch;    /* 1-based; 0 = none yet */
  int64_t bad_epochs;    /* epochs without improvement, for early stopping */
  double threshold;      /* operating point chosen on the validation split (0.5 if none) */
  double part_loss, part_correct, part_count; /* train sums of the unfinished epoch */
  double part_seconds;
  int64_t stopped;       /* 1: early stopping fired */
  int64_t threshold_chosen; /* 1: threshold chosen on the val split; 0: the 0.5 default of a run without
                             * one (eval/predict --threshold auto refuse it). Absent (older files): 1 */
  int64_t lr_drops;      /* --schedule plateau: reductions of the lr so far (lr x FACTOR^lr_drops); absent: 0 */
  double plateau_best;   /* plateau: best monitored value so far (set by the first epoch); absent: 0 */
  int64_t plateau_bad;   /* plateau: epochs since it last improved or the lr last dropped; absent: 0 */
} xd_train_state;

typedef struct xd_ckpt_meta {
  int nclasses;
  char class_names[XD_MAX_CLASSES][XD_CLASS_NAME_MAX];
  char command[4096];
  char monitor[16];
  char data[1024];
  double train_prior;    /* the class-1 prior the loss saw (class weights included); 0 = unknown */
  char config[8192];     /* the whole training configuration (train.c's format; "" = none), root attr "train_config" */
} xd_ckpt_meta;

/* opt may be NULL (best.h5 holds weights only). The file is built in memory, then written to a temporary
 * name with checked write(2)s, fsynced and renamed over path. -1 with "PATH: checkpoint not written:
 * /params/3/weight holds NaN (layer 4, line 5 of the model)" (any value or attribute a load would
 * refuse), or "PATH: cannot write checkpoint: No space left on device" (the temporary removed, the
 * previous checkpoint untouched). */
int xd_checkpoint_save(const char *path, const xd_model *m, const xd_optimizer *opt, const xd_train_state *st,
                       const xd_ckpt_meta *meta, xd_err *e);

/* Builds the model from the checkpoint's stored description and loads its weights and batchnorm
 * statistics. st and meta may be NULL. */
int xd_checkpoint_load(const char *path, xd_model *m, xd_train_state *st, xd_ckpt_meta *meta, xd_err *e);
/* Loads weights into an already built model whose description must match the stored one's shapes. */
int xd_checkpoint_load_weights(const char *path, xd_model *m, xd_err *e);
/* Loads optimizer moments and step; the optimizer must be allocated for m. */
int xd_checkpoint_load_optim(const char *path, const xd_model *m, xd_optimizer *opt, xd_err *e);
/* The optimizer a full checkpoint (last.h5) holds state for: its kind and EMA decay (0 = none). */
int xd_checkpoint_optim_info(const char *path, xd_opt_kind *kind, double *ema_decay, xd_err *e);
/* 1 if the checkpoint has checksums (version 2), 0 if not (version 1), -1 if it cannot be opened. */
int xd_checkpoint_checksummed(const char *path, xd_err *e);
/* Every tensor of the model (weights, batchnorm statistics) and of opt (may be NULL: moments, EMA) finite,
 * running variances and second moments >= 0: 0, or -1 with "/params/3/weight holds NaN (layer 4, line 5
 * of the model)" (train's check after each epoch or step names the layer with it). */
int xd_checkpoint_check_values(const xd_model *m, const xd_optimizer *opt, xd_err *e);
/* 1 if the file is an xray-dp checkpoint, 0 if not, -1 if unreadable. */
int xd_checkpoint_probe(const char *path);
/* Prints a description (for `xray-dp info`) after loading and checking everything in the file, the
 * optimizer state of a last.h5 included. */
int xd_checkpoint_describe(const char *path, FILE *f, xd_err *e);

#endif
