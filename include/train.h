/* The training loop: shards, steps, the gradient all-reduce, the optimizer step, and rank 0's duties
 * (validation, checkpoints, early stopping). Every decision (stop, save) happens in one place. */
#ifndef XD_TRAIN_H
#define XD_TRAIN_H
#include <signal.h>
#include <stdint.h>

#include "common.h"
#include "dist.h"
#include "model.h"
#include "optim.h"

typedef struct xd_train_opts {
  const char *data;      /* dataset file */
  const char *model;     /* preset or file */
  const char *out;       /* run directory */
  const char *command;   /* the command line, recorded in checkpoints and train.log */
  int epochs, batch;     /* batch is GLOBAL */
  xd_opt_config opt;
  xd_schedule sched;
  uint64_t seed;
  int patience;
  double min_delta;
  int monitor_auc;       /* 0: val_loss, 1: val_auc */
  int monitor_last;      /* best.h5 is the latest epoch's model (a recipe with a fixed schedule + EMA) */
  double ema;            /* EMA decay of the weights kept as the model (0: off) */
  int class_weight;      /* 0 none, 1 balanced, 2 given */
  float cw[2];
  const char *augment;   /* "none", "default", "shortcut" or a spec */
  const char *recipe;    /* the preset recipe applied before the user's options (for the log), or NULL */
  int resume;            /* 1: continue DIR/last.h5, which must exist (the CLI decides, under the run lock) */
  int overwrite;         /* 1: DIR holds an earlier run to replace: its files are removed once setup succeeded */
  int model_given, data_given, patience_given; /* resume: given on the command line (checked against the run) */
  const char *config;    /* the run's settings, key=value lines: stored in last.h5 ("train_config") */
  int detect_anomaly;    /* check gradients, weights and activations for NaN/Inf every step, naming the layer */
  const char *notes;     /* lines for stdout and train.log once the run is set up (what --resume changed) */
  int64_t max_steps;     /* -1: no limit */
  int no_shuffle, quiet, sync_bn;
  int progress;          /* rank 0 draws a progress bar on stdout (steps, validation, ETA of epoch and run) */
  xd_init_kind init;
  double mem_cap_mb;     /* in-memory shard cap per rank */
  volatile sig_atomic_t *stop_flag; /* set by SIGTERM/SIGUSR1 handlers (may be NULL) */
} xd_train_opts;

/* Status on return: 0 finished (all epochs, max-steps or early stop), 1 interrupted by a signal
 * (last.h5 written), -1 error that every rank returns together (e holds the message on the ranks that
 * failed and "" on the others, which print nothing), -2 error on this rank alone while the others may
 * wait in a collective (the caller ends the job: xd_dist_abort). The caller holds the run lock. */
int xd_train(const xd_train_opts *o, xd_dist *d, xd_err *e);

/* ---- the run folder (rank 0) ----
 * Lock: an exclusive flock on DIR/.lock (DIR is created), held until xd_run_unlock or the end of the
 * process in any way (the kernel releases it: a kill -9 leaves no stale lock). Returns the descriptor,
 * or -1 with "DIR: run folder is in use by another training (pid N on host H)" or the system's reason. */
int xd_run_lock(const char *dir, xd_err *e);
/* Releases the lock; with remove, the lock file goes first (for a run that wrote nothing into a folder it
 * created: another process that opened the file meanwhile notices and locks a new one). */
void xd_run_unlock(int fd, const char *dir, int remove);

/* What DIR holds of an earlier run. */
typedef struct xd_run_files {
  int last, best;        /* last.h5, best.h5 exist */
  int64_t csv_rows;      /* epoch rows in metrics.csv (0 when absent) */
} xd_run_files;
int xd_run_inspect(const char *dir, xd_run_files *f, xd_err *e);
/* Removes the temporaries that writers killed mid-write left in DIR (last.h5.tmp.PID, best.h5.tmp.PID,
 * metrics.csv.tmp.PID of other processes). Call with the lock held. Returns the number removed. */
int xd_run_clean_tmp(const char *dir);
/* Reads the settings stored in a checkpoint ("train_config"; "" when it has none). */
int xd_run_read_config(const char *ckpt, char *buf, size_t n, xd_err *e);

/* Augmentation: per-sample random affine warp and intensity jitter of uint8 images into float [0,1].
 * Spec: "none", "default", "shortcut", or comma-separated key=value with keys rot (degrees), shift, zoom,
 * contrast, brightness, aspect, gamma, noise, erase, border. */
typedef struct xd_augment {
  int on;
  float rot_deg, shift, zoom, contrast, brightness;
  float aspect;  /* independent x and y scale: each exp(U(-1,1) * log(1 + aspect)) */
  float gamma;   /* intensity gamma exp(U(-1,1) * log(1 + gamma)) */
  float noise;   /* Gaussian pixel noise with sigma U(0, noise) */
  float erase;   /* probability of erasing one random rectangle (cutout: markers, tubes) */
  float border;  /* probability of blanking a random frame at the image's edges */
} xd_augment;
int xd_augment_parse(const char *spec, xd_augment *a);
/* src uint8 [H,W] -> dst float [H,W]; key and counter make the draw a function of (seed, step, sample). */
void xd_augment_apply(const xd_augment *a, uint64_t key, uint64_t sample, const uint8_t *src, int H, int W,
                      float *dst);

#endif
