#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "dist.h"
#include "pack.h"
#include "train.h"

/* The one piece of process-wide state: set by SIGTERM/SIGUSR1 (SLURM preemption) and SIGINT (Ctrl-C), read
 * at step boundaries. The first Ctrl-C says what happens; a second one stops at once (exit 130, as a shell
 * reports a Ctrl-C): last.h5 keeps the previous state (checkpoints are written atomically). */
static volatile sig_atomic_t g_stop = 0;
static int g_rank = 0;
static void on_stop_signal(int sig) {
  if (sig == SIGINT && g_stop) {
    static const char msg[] = "xray-dp train: interrupted twice: stopping now, last.h5 as last written\n";
    if (g_rank == 0) {
      ssize_t w = write(2, msg, sizeof msg - 1);
      (void)w;
    }
    _exit(130);
  }
  if (sig == SIGINT && g_rank == 0) {
    static const char msg[] = "\nxray-dp train: Ctrl-C: finishing this step and saving last.h5 (Ctrl-C again to stop "
                              "at once)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
  }
  g_stop = 1;
}

/* Whether what this process prints reaches a terminal: its stdout is one, or, under Open MPI's mpirun (which
 * gives each rank a pseudo-terminal of its own, whatever mpirun's output is), the stdout of the mpirun that
 * started it is one. */
static int stdout_is_terminal(void) {
  if (!getenv("OMPI_COMM_WORLD_RANK")) return isatty(1);
  char link[64], target[256];
  snprintf(link, sizeof link, "/proc/%ld/fd/1", (long)getppid());
  ssize_t n = readlink(link, target, sizeof target - 1);
  if (n <= 0) return 0;
  target[n] = 0;
  return !strncmp(target, "/dev/pts/", 9) || !strncmp(target, "/dev/tty", 8) || !strcmp(target, "/dev/console");
}

static const char *HELP =
    "usage: xray-dp train [options]          (also: mpirun -np N xray-dp [train] [options])\n"
    "\n"
    "Trains a CNN data-parallel: each MPI rank reads its shard of the train split, gradients are summed\n"
    "across ranks each step and every rank takes the same optimizer step. Rank 0 validates on the val\n"
    "split after each epoch, writes DIR/metrics.csv, DIR/train.log, DIR/best.h5 and DIR/last.h5.\n"
    "\n"
    "  --data D.h5          dataset (default data/default.h5, created with `synth` if missing); its val\n"
    "                       split, if it has one, must hold images of both classes\n"
    "  --model PRESET|FILE  default (the recipe below), keras-seed, tripathi5, petre-bn, resnet-s, resnet-m,\n"
    "                       or a model description file (docs/models.md)\n"
    "  --epochs N           default 10\n"
    "  --batch B            GLOBAL batch, divided among ranks (default 32)\n"
    "  --lr LR              learning rate (default 1e-3)\n"
    "  --optimizer NAME     adam (default), adamw (decoupled weight decay), sgd (momentum 0.9), rmsprop, adagrad\n"
    "  --momentum M         SGD/RMSProp momentum (SGD default 0.9, RMSProp 0)\n"
    "  --nesterov           Nesterov momentum for SGD\n"
    "  --weight-decay WD    L2 penalty added to the gradient, as PyTorch's weight_decay (default 0); with\n"
    "                       adamw the decoupled decay p -= lr*WD*p, as torch.optim.AdamW\n"
    "  --schedule S         lr schedule: constant (default), cosine, cosine:MIN_FACTOR (0..1),\n"
    "                       step:EVERY:GAMMA (GAMMA in (0, 1]), or plateau[:FACTOR:PATIENCE]: the lr times\n"
    "                       FACTOR (default 0.1) after PATIENCE (default 2) epochs in a row without improvement\n"
    "                       of the --monitor metric by more than --min-delta (val_loss for `last`; train_loss\n"
    "                       without a val split), as Keras' ReduceLROnPlateau; kept in last.h5 for --resume\n"
    "  --warmup E           linear lr warm-up over the first E epochs; the lr then changes every step\n"
    "  --ema DECAY          keep an exponential moving average of the weights (e.g. 0.998): it is what is\n"
    "                       validated and written to best.h5 (default 0 = off)\n"
    "  --seed S             seeds init, shuffles, dropout, augmentation (default 1)\n"
    "  --init KIND          torch (default: PyTorch's), glorot (Keras'), he\n"
    "  --patience P         early stopping after P epochs without improvement (default 3; 0 = off)\n"
    "  --min-delta D        smallest change that counts as improvement (default 0)\n"
    "  --monitor M          val_loss (default), val_auc, or last (best.h5 = the latest epoch's model)\n"
    "  --class-weight W     none (default), balanced, or W0,W1\n"
    "  --augment A          none (default), default (rot 7 deg, shift 6%, zoom 8%, contrast/brightness\n"
    "                       jitter; no flips), shortcut (aimed at this data's shortcuts: rot 10, shift 8%,\n"
    "                       independent x/y scale +-25%, gamma/contrast +-30%, brightness 0.1, noise,\n"
    "                       cutout and border blanking, each with p 0.5), or KEY=V,... with keys rot, shift,\n"
    "                       zoom, contrast, brightness, aspect, gamma, noise, erase, border\n"
    "  --sync-bn            batchnorm statistics over the global batch (default: each rank's batch;\n"
    "                       the default recipe turns it on, --no-sync-bn off)\n"
    "  --no-shuffle         keep each rank's shard in file order\n"
    "\n"
    "  --out DIR            run folder (default runs/<UTC timestamp>). One training at a time: a run holds\n"
    "                       DIR/.lock (released when it ends in any way); a second one exits 1. A folder\n"
    "                       that already holds a run is refused unless --resume or --overwrite.\n"
    "  --resume             continue the run in DIR from DIR/last.h5 (needs --out; exit 1 when there is no\n"
    "                       last.h5) with the run's own settings, stored in last.h5: the options above can\n"
    "                       be left out, and those given must agree with the run's, except --epochs (to\n"
    "                       extend or end the run; a cosine schedule then spans the new length),\n"
    "                       --patience and --min-delta, and --data naming the same classes and image size.\n"
    "                       Rank count and threads may change. Ends with the same weights as an\n"
    "                       uninterrupted run.\n"
    "  --resume auto        resume when DIR holds last.h5, else start a new run there, replacing what a\n"
    "                       run killed before its first last.h5 left (job scripts: a requeue)\n"
    "  --overwrite          start a new run in a folder holding an earlier one, replacing its last.h5,\n"
    "                       best.h5, metrics.csv and train.log (once the new run is set up)\n"
    "  --max-steps N        stop after N optimizer steps in total (0: write the initial weights)\n"
    "  --detect-anomaly     check activations, loss, gradients and weights for NaN/Inf at every step and\n"
    "                       stop naming the step and layer (weights and optimizer state are checked after\n"
    "                       every epoch in any case; a non-finite state is never written)\n"
    "  --threads T          OpenMP threads per rank (default OMP_NUM_THREADS, else the rank's cores)\n"
    "  --mem-cap MB         largest train shard a rank holds in memory (default 8192); a bigger shard is\n"
    "                       streamed from the file, the next batch read while the current one computes\n"
    "  --mem-limit SIZE     refuse a run needing more memory than SIZE (model, optimizer state,\n"
    "                       activations and images; e.g. 8G; default 90% of RAM), before reading the data\n"
    "  --quiet              no progress bar or epoch lines (errors still go to stderr)\n"
    "  --progress           rank 0 draws a progress bar on stdout: the epoch's steps, then its validation,\n"
    "                       with the ETA of the epoch and of the whole run (default: when the terminal is\n"
    "                       stdout, of xray-dp or, under mpirun, of mpirun; else only the epoch lines)\n"
    "  --no-progress        only the epoch lines, also on a terminal\n"
    "\n"
    "The default model is a recipe, not only a network: --model default (also when --model is not given)\n"
    "first applies\n"
    "  --optimizer adamw --lr 2e-3 --weight-decay 5e-4 --warmup 1 --schedule cosine --epochs 20 --batch 32\n"
    "  --augment shortcut --class-weight balanced --ema 0.998 --sync-bn --monitor last --patience 0\n"
    "to the network resnet-s; any option given on the command line overrides the recipe's. The other\n"
    "presets use the plain defaults listed above.\n"
    "\n"
    "SIGTERM, SIGUSR1 or Ctrl-C makes all ranks finish the current step, rank 0 write last.h5, print the\n"
    "command that resumes the run, and exit 0 (a second Ctrl-C stops at once with status 130, last.h5 as\n"
    "last written). Under mpirun, send SIGUSR1 to mpirun: it forwards it, whereas it answers SIGINT and\n"
    "SIGTERM by killing the ranks within 2 s. A NaN or Inf in the loss, the weights, the optimizer state or\n"
    "a validation metric stops the run with status 1, last.h5 as last written (never a non-finite state). Bad options exit 2; any other error ends every rank with status 1 and one line\n"
    "on stderr.\n";

/* ---- the run's settings ----
 * What makes a training run what it is. They are stored in last.h5 as key=value lines ("train_config")
 * and --resume takes them from there; an option given with --resume must agree with the stored value,
 * except those meant to change (SET[].change). Values are kept in one canonical text form, so that
 * "--lr 1e-3" and "lr=0.00100000005" compare equal. */
enum { S_DATA, S_MODEL, S_EPOCHS, S_BATCH, S_LR, S_OPTIMIZER, S_MOMENTUM, S_NESTEROV, S_WD, S_SCHEDULE, S_WARMUP,
       S_EMA, S_SEED, S_INIT, S_PATIENCE, S_MIN_DELTA, S_MONITOR, S_CLASS_WEIGHT, S_AUGMENT, S_SYNC_BN,
       S_NO_SHUFFLE, NSET };
typedef enum { T_PATH, T_WORD, T_INT, T_FLT, T_DBL, T_BOOL } vtype;
static const struct {
  const char *key, *opt;
  vtype t;
  int64_t ilo, ihi; /* T_INT */
  double lo, hi;    /* T_FLT, T_DBL */
  int change;       /* may differ from the run's on --resume */
  const char *def;  /* NULL: none (data: data/default.h5; momentum: the optimizer's) */
} SET[NSET] = {
    [S_DATA] = {"data", "--data", T_PATH, 0, 0, 0, 0, 1, NULL},
    [S_MODEL] = {"model", "--model", T_PATH, 0, 0, 0, 0, 1, "default"},
    [S_EPOCHS] = {"epochs", "--epochs", T_INT, 1, 1000000, 0, 0, 1, "10"},
    [S_BATCH] = {"batch", "--batch", T_INT, 1, 1 << 20, 0, 0, 0, "32"},
    [S_LR] = {"lr", "--lr", T_FLT, 0, 0, 0, 100, 0, "1e-3"},
    [S_OPTIMIZER] = {"optimizer", "--optimizer", T_WORD, 0, 0, 0, 0, 0, "adam"},
    [S_MOMENTUM] = {"momentum", "--momentum", T_FLT, 0, 0, 0, 0.9999, 0, NULL},
    [S_NESTEROV] = {"nesterov", "--nesterov", T_BOOL, 0, 0, 0, 0, 0, "0"},
    [S_WD] = {"weight_decay", "--weight-decay", T_FLT, 0, 0, 0, 10, 0, "0"},
    [S_SCHEDULE] = {"schedule", "--schedule", T_WORD, 0, 0, 0, 0, 0, "constant"},
    [S_WARMUP] = {"warmup", "--warmup", T_INT, 0, 1000000, 0, 0, 0, "0"},
    [S_EMA] = {"ema", "--ema", T_DBL, 0, 0, 0, 0.999999, 0, "0"},
    [S_SEED] = {"seed", "--seed", T_INT, 0, INT64_MAX, 0, 0, 0, "1"},
    [S_INIT] = {"init", "--init", T_WORD, 0, 0, 0, 0, 0, "torch"},
    [S_PATIENCE] = {"patience", "--patience", T_INT, 0, 1000000, 0, 0, 1, "3"},
    [S_MIN_DELTA] = {"min_delta", "--min-delta", T_DBL, 0, 0, 0, 1e9, 1, "0"},
    [S_MONITOR] = {"monitor", "--monitor", T_WORD, 0, 0, 0, 0, 0, "val_loss"},
    [S_CLASS_WEIGHT] = {"class_weight", "--class-weight", T_WORD, 0, 0, 0, 0, 0, "none"},
    [S_AUGMENT] = {"augment", "--augment", T_WORD, 0, 0, 0, 0, 0, "none"},
    [S_SYNC_BN] = {"sync_bn", "--sync-bn", T_BOOL, 0, 0, 0, 0, 0, "0"},
    [S_NO_SHUFFLE] = {"no_shuffle", "--no-shuffle", T_BOOL, 0, 0, 0, 0, 0, "0"},
};
#define VAL_MAX 4096
typedef struct settings {
  int set[NSET];
  char v[NSET][VAL_MAX];
} settings;

static const char *CMD = "train";
#define NOTES_MAX 8192
static const char *INIT_NAMES[] = {"torch", "glorot", "he"};

/* Canonical form of value v of setting k into out, or -1 after printing "xray-dp train: LABEL: expected ...". */
static int canon(int k, const char *v, const char *label, char *out) {
  int64_t iv;
  double dv;
  switch (SET[k].t) {
    case T_PATH:
      if (!v[0] || strlen(v) >= VAL_MAX) {
        fprintf(stderr, "xray-dp train: %s: expected a path, got '%s'\n", label, strlen(v) < 200 ? v : "(too long)");
        return -1;
      }
      snprintf(out, VAL_MAX, "%s", v);
      return 0;
    case T_INT:
      if (arg_int(CMD, label, v, SET[k].ilo, SET[k].ihi, &iv)) return -1;
      snprintf(out, VAL_MAX, "%lld", (long long)iv);
      return 0;
    case T_FLT:
      if (arg_double(CMD, label, v, SET[k].lo, SET[k].hi, &dv)) return -1;
      snprintf(out, VAL_MAX, "%.9g", (double)(float)dv);
      return 0;
    case T_DBL:
      if (arg_double(CMD, label, v, SET[k].lo, SET[k].hi, &dv)) return -1;
      snprintf(out, VAL_MAX, "%.17g", dv);
      return 0;
    case T_BOOL:
      if (strcmp(v, "0") && strcmp(v, "1")) {
        fprintf(stderr, "xray-dp train: %s: expected 0 or 1, got '%s'\n", label, v);
        return -1;
      }
      snprintf(out, VAL_MAX, "%s", v);
      return 0;
    case T_WORD:
      break;
  }
  if (k == S_OPTIMIZER) {
    xd_opt_kind kind;
    if (xd_opt_parse(v, &kind)) {
      fprintf(stderr, "xray-dp train: %s: expected adam, adamw, sgd, rmsprop or adagrad, got '%s'\n", label, v);
      return -1;
    }
    snprintf(out, VAL_MAX, "%s", xd_opt_name(kind));
  } else if (k == S_SCHEDULE) {
    xd_schedule s;
    /* the parser takes strtod's word for numbers: NaN, Inf and a growing step factor are refused here */
    const char *colon = strrchr(v, ':');
    long long every = !strncmp(v, "step:", 5) ? strtoll(v + 5, NULL, 10) : 1;
    if (strlen(v) > 200 || (colon && !colon[1]) || every < 1 || every > 1000000 || xd_schedule_parse(v, &s) ||
        !isfinite(s.min_factor) || s.min_factor < 0 ||
        s.min_factor > 1 || (s.kind == 1 && (!isfinite(s.gamma) || s.gamma <= 0 || s.gamma > 1 || s.every <= 0))) {
      fprintf(stderr, "xray-dp train: %s: expected constant, cosine, cosine:MIN (0..1), step:EVERY:GAMMA (EVERY in "
                      "1..1000000, GAMMA in (0, 1]) or plateau[:FACTOR:PATIENCE] (FACTOR in (0, 1), PATIENCE in "
                      "1..1000000), got '%s'\n", label, strlen(v) < 200 ? v : "(too long)");
      return -1;
    }
    if (s.kind == 0) snprintf(out, VAL_MAX, "constant");
    else if (s.kind == 2 && s.min_factor == 0) snprintf(out, VAL_MAX, "cosine");
    else if (s.kind == 2) snprintf(out, VAL_MAX, "cosine:%.17g", s.min_factor);
    else if (s.kind == 3) snprintf(out, VAL_MAX, "plateau:%.17g:%d", s.gamma, s.every);
    else snprintf(out, VAL_MAX, "step:%d:%.17g", s.every, s.gamma);
  } else if (k == S_INIT) {
    xd_init_kind kind;
    if (xd_init_parse(v, &kind) || (unsigned)kind > 2) {
      fprintf(stderr, "xray-dp train: %s: expected torch, glorot or he, got '%s'\n", label, v);
      return -1;
    }
    snprintf(out, VAL_MAX, "%s", INIT_NAMES[kind]);
  } else if (k == S_MONITOR) {
    if (strcmp(v, "val_loss") && strcmp(v, "val_auc") && strcmp(v, "last")) {
      fprintf(stderr, "xray-dp train: %s: expected val_loss, val_auc or last, got '%s'\n", label, v);
      return -1;
    }
    snprintf(out, VAL_MAX, "%s", v);
  } else if (k == S_CLASS_WEIGHT) {
    if (!strcmp(v, "none") || !strcmp(v, "balanced")) {
      snprintf(out, VAL_MAX, "%s", v);
      return 0;
    }
    char *end;
    float w0 = strtof(v, &end), w1 = 0;
    int ok = *end == ',' && isfinite(w0) && w0 > 0;
    if (ok) {
      const char *b = end + 1;
      w1 = strtof(b, &end);
      ok = end != b && !*end && isfinite(w1) && w1 > 0;
    }
    if (!ok) {
      fprintf(stderr, "xray-dp train: %s: expected none, balanced or W0,W1 (positive), got '%s'\n", label, v);
      return -1;
    }
    snprintf(out, VAL_MAX, "%.9g,%.9g", (double)w0, (double)w1);
  } else if (k == S_AUGMENT) {
    xd_augment a;
    if (xd_augment_parse(v, &a)) {
      fprintf(stderr, "xray-dp train: %s: expected none, default, shortcut or KEY=V,... (keys rot, shift, zoom, "
                      "contrast, brightness, aspect, gamma, noise, erase, border), got '%s'\n", label,
              strlen(v) < 300 ? v : "(too long)");
      return -1;
    }
    snprintf(out, VAL_MAX, "%s", v);
  }
  return 0;
}

/* Options that are not settings: they belong to this invocation only. */
typedef struct invocation {
  const char *out;
  int resume;       /* 0, 1 (--resume), 2 (--resume auto) */
  int overwrite, quiet, detect_anomaly;
  int progress;     /* -1: when stdout is a terminal, 0 --no-progress, 1 --progress */
  int64_t max_steps, threads;
  double mem_cap_mb;
} invocation;

/* Parses argv[1..] into settings (and, with inv, the invocation's own options). Returns 0, 1 for --help,
 * -1 after a usage message. */
static int parse_args(int argc, char **argv, settings *s, invocation *inv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
    int k = -1;
    for (int j = 0; j < NSET; j++)
      if (!strcmp(a, SET[j].opt)) k = j;
    if (k >= 0 && SET[k].t == T_BOOL) {
      snprintf(s->v[k], VAL_MAX, "1");
      s->set[k] = 1;
      continue;
    }
    if (!strcmp(a, "--no-sync-bn")) {
      snprintf(s->v[S_SYNC_BN], VAL_MAX, "0");
      s->set[S_SYNC_BN] = 1;
      continue;
    }
    if (k >= 0) {
      if (!(v = arg_value(CMD, argc, argv, &i))) return -1;
      if (canon(k, v, a, s->v[k])) return -1;
      s->set[k] = 1;
      continue;
    }
    int64_t iv;
    if (inv && !strcmp(a, "--out")) {
      if (!(v = arg_value(CMD, argc, argv, &i))) return -1;
      if (!v[0] || strlen(v) > 2000) {
        fprintf(stderr, "xray-dp train: --out: expected a folder, got '%s'\n", v[0] ? "(over 2000 characters)" : "");
        return -1;
      }
      inv->out = v;
    } else if (inv && !strcmp(a, "--resume")) {
      inv->resume = 1;
      if (i + 1 < argc && !strcmp(argv[i + 1], "auto")) {
        inv->resume = 2;
        i++;
      }
    } else if (inv && !strcmp(a, "--overwrite")) {
      inv->overwrite = 1;
    } else if (inv && !strcmp(a, "--detect-anomaly")) {
      inv->detect_anomaly = 1;
    } else if (inv && !strcmp(a, "--quiet")) {
      inv->quiet = 1;
    } else if (inv && !strcmp(a, "--progress")) {
      inv->progress = 1;
    } else if (inv && !strcmp(a, "--no-progress")) {
      inv->progress = 0;
    } else if (inv && !strcmp(a, "--max-steps")) {
      if (!(v = arg_value(CMD, argc, argv, &i)) || arg_int(CMD, a, v, 0, INT64_MAX, &iv)) return -1;
      inv->max_steps = iv;
    } else if (inv && !strcmp(a, "--threads")) {
      if (!(v = arg_value(CMD, argc, argv, &i)) || arg_int(CMD, a, v, 1, 4096, &inv->threads)) return -1;
    } else if (inv && !strcmp(a, "--mem-cap")) {
      if (!(v = arg_value(CMD, argc, argv, &i)) || arg_double(CMD, a, v, 0, 1e9, &inv->mem_cap_mb)) return -1;
    } else if (inv && !strcmp(a, "--mem-limit")) {
      if (!(v = arg_value(CMD, argc, argv, &i)) || arg_mem_limit(CMD, v)) return -1;
    } else {
      fprintf(stderr, "xray-dp train: unknown option '%s' (see xray-dp train --help)\n", a);
      return -1;
    }
  }
  return 0;
}

/* key=value lines; backslash and newline in values escaped as \\ and \n. */
static int config_format(const settings *s, char *buf, size_t n) {
  size_t at = 0;
  int w = snprintf(buf, n, "version=1\n");
  if (w < 0 || (size_t)w >= n) return -1;
  at = (size_t)w;
  for (int k = 0; k < NSET; k++) {
    if (!s->set[k]) continue;
    w = snprintf(buf + at, n - at, "%s=", SET[k].key);
    if (w < 0 || (size_t)w >= n - at) return -1;
    at += (size_t)w;
    for (const char *p = s->v[k]; *p; p++) {
      const char *esc = *p == '\\' ? "\\\\" : (*p == '\n' ? "\\n" : NULL);
      size_t len = esc ? 2 : 1;
      if (at + len + 2 > n) return -1;
      if (esc) memcpy(buf + at, esc, 2);
      else buf[at] = *p;
      at += len;
    }
    buf[at++] = '\n';
    buf[at] = 0;
  }
  return 0;
}

/* The stored settings; unknown keys or bad values are refused (exit 1) naming the file. */
static int config_parse(const char *cfg, const char *file, settings *s) {
  char label[2300], line[VAL_MAX + 64];
  int version = 0;
  const char *p = cfg;
  while (*p) {
    size_t len = strcspn(p, "\n");
    if (len >= sizeof line) {
      fprintf(stderr, "xray-dp train: %s: train_config has a line over %zu characters\n", file, sizeof line);
      return -1;
    }
    /* unescape */
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
      if (p[i] == '\\' && i + 1 < len && (p[i + 1] == '\\' || p[i + 1] == 'n')) {
        line[o++] = p[i + 1] == 'n' ? '\n' : '\\';
        i++;
      } else {
        line[o++] = p[i];
      }
    }
    line[o] = 0;
    p += len + (p[len] == '\n');
    if (!line[0]) continue;
    char *eq = strchr(line, '=');
    if (!eq) {
      fprintf(stderr, "xray-dp train: %s: train_config has a line without '=': '%.60s'\n", file, line);
      return -1;
    }
    *eq = 0;
    const char *key = line, *val = eq + 1;
    if (!strcmp(key, "version")) {
      version = atoi(val);
      continue;
    }
    int k = -1;
    for (int j = 0; j < NSET; j++)
      if (!strcmp(key, SET[j].key)) k = j;
    if (k < 0) {
      fprintf(stderr, "xray-dp train: %s: train_config has an unknown setting '%.60s' (written by a newer xray-dp?)\n",
              file, key);
      return -1;
    }
    snprintf(label, sizeof label, "%.2200s: train_config %.60s", file, key);
    if (canon(k, val, label, s->v[k])) return -1;
    s->set[k] = 1;
  }
  if (version != 1) {
    fprintf(stderr, "xray-dp train: %s: train_config version %d, this xray-dp reads version 1\n", file, version);
    return -1;
  }
  return 0;
}

/* A setting as the command line gave it ("--batch 16", "--no-sync-bn") and as the run had it ("with
 * --batch 8", "without --no-shuffle"), for messages. */
static const char *pretty(int k, const char *v, char *buf, size_t n) {
  if (SET[k].t == T_FLT) snprintf(buf, n, "%.7g", strtod(v, NULL));
  else if (SET[k].t == T_DBL) snprintf(buf, n, "%.15g", strtod(v, NULL));
  else snprintf(buf, n, "%.300s", v);
  return buf;
}
static void show_given(int k, const char *v, char *buf, size_t n) {
  char p[320];
  if (SET[k].t != T_BOOL) snprintf(buf, n, "%s %s", SET[k].opt, pretty(k, v, p, sizeof p));
  else if (!strcmp(v, "1")) snprintf(buf, n, "%s", SET[k].opt);
  else snprintf(buf, n, "%s", k == S_SYNC_BN ? "--no-sync-bn" : SET[k].opt);
}
static void show_stored(int k, const char *v, char *buf, size_t n) {
  char p[320];
  if (SET[k].t != T_BOOL) snprintf(buf, n, "with %s %s", SET[k].opt, pretty(k, v, p, sizeof p));
  else snprintf(buf, n, "%s %s", strcmp(v, "1") ? "without" : "with", SET[k].opt);
}

/* Fills the options from complete settings. -1 after a message (usage or stored-file error). */
static int finalize(settings *s, xd_train_opts *o) {
  for (int k = 0; k < NSET; k++)
    if (!s->set[k] && SET[k].def) {
      if (canon(k, SET[k].def, SET[k].opt, s->v[k])) return -1;
      s->set[k] = 1;
    }
  o->data = s->v[S_DATA];
  o->model = s->v[S_MODEL];
  o->epochs = atoi(s->v[S_EPOCHS]);
  o->batch = atoi(s->v[S_BATCH]);
  xd_opt_kind kind;
  xd_opt_parse(s->v[S_OPTIMIZER], &kind);
  o->opt = xd_opt_defaults(kind, strtof(s->v[S_LR], NULL));
  o->opt.weight_decay = strtof(s->v[S_WD], NULL);
  if (s->set[S_MOMENTUM]) o->opt.momentum = strtof(s->v[S_MOMENTUM], NULL);
  else {
    snprintf(s->v[S_MOMENTUM], VAL_MAX, "%.9g", (double)o->opt.momentum);
    s->set[S_MOMENTUM] = 1;
  }
  o->opt.nesterov = !strcmp(s->v[S_NESTEROV], "1");
  if (o->opt.nesterov && (kind != XD_OPT_SGD || o->opt.momentum <= 0)) {
    fprintf(stderr, "xray-dp train: --nesterov needs --optimizer sgd with momentum > 0\n");
    return -1;
  }
  xd_schedule_parse(s->v[S_SCHEDULE], &o->sched);
  o->sched.warmup_epochs = atoi(s->v[S_WARMUP]);
  o->ema = strtod(s->v[S_EMA], NULL);
  o->seed = strtoull(s->v[S_SEED], NULL, 10);
  xd_init_parse(s->v[S_INIT], &o->init);
  o->patience = atoi(s->v[S_PATIENCE]);
  o->min_delta = strtod(s->v[S_MIN_DELTA], NULL);
  o->monitor_auc = !strcmp(s->v[S_MONITOR], "val_auc");
  o->monitor_last = !strcmp(s->v[S_MONITOR], "last");
  const char *cw = s->v[S_CLASS_WEIGHT];
  o->class_weight = !strcmp(cw, "none") ? 0 : (!strcmp(cw, "balanced") ? 1 : 2);
  if (o->class_weight == 2) {
    char *end;
    o->cw[0] = strtof(cw, &end);
    o->cw[1] = strtof(end + 1, NULL);
  }
  o->augment = s->v[S_AUGMENT];
  o->sync_bn = !strcmp(s->v[S_SYNC_BN], "1");
  o->no_shuffle = !strcmp(s->v[S_NO_SHUFFLE], "1");
  return 0;
}

/* What rank 0 found in the run folder and decided, told to every rank. */
enum { MODE_FRESH, MODE_RESUME, MODE_RESUME_OLD /* last.h5 without stored settings */ };
typedef struct folder_plan {
  int32_t status; /* 0 ok, else the exit status (rank 0 printed the message) */
  int32_t mode;
  int32_t existed;
  int32_t auto_replace; /* --resume auto, no last.h5, leftovers of a run that never checkpointed */
  char config[8192];
} folder_plan;

/* Rank 0: what the folder holds and what this command does with it. */
static void plan_folder(const invocation *inv, folder_plan *p) {
  const char *dir = inv->out;
  xd_err e = {{0}};
  struct stat sb;
  p->existed = stat(dir, &sb) == 0;
  if (p->existed && !S_ISDIR(sb.st_mode)) {
    fprintf(stderr, "xray-dp train: %s: --out exists and is not a folder\n", dir);
    p->status = 1;
    return;
  }
  xd_run_files f;
  if (xd_run_inspect(dir, &f, &e)) {
    fprintf(stderr, "xray-dp train: %s\n", e.msg);
    p->status = 1;
    return;
  }
  if (inv->resume == 1 && !f.last) {
    fprintf(stderr, "xray-dp train: %s: nothing to resume (no last.h5)\n", dir);
    p->status = 1;
    return;
  }
  if (inv->resume && f.last) {
    char lp[2100];
    snprintf(lp, sizeof lp, "%s/last.h5", dir);
    if (xd_run_read_config(lp, p->config, sizeof p->config, &e)) {
      fprintf(stderr, "xray-dp train: %s\n", e.msg);
      p->status = 1;
      return;
    }
    p->mode = p->config[0] ? MODE_RESUME : MODE_RESUME_OLD;
    return;
  }
  p->mode = MODE_FRESH;
  /* --resume auto without last.h5: a run that never wrote its state (killed during its first epoch's
   * checkpoints) cannot be continued; its leftovers are replaced, as a job script's requeue needs */
  if (inv->resume == 2 && (f.best || f.csv_rows > 0)) {
    p->auto_replace = 1;
    return;
  }
  if ((f.last || f.best || f.csv_rows > 0) && !inv->overwrite) {
    char what[200];
    snprintf(what, sizeof what, "%s%s%s", f.last ? "last.h5" : "", f.last && f.best ? ", " : "", f.best ? "best.h5" : "");
    if (f.csv_rows > 0)
      snprintf(what + strlen(what), sizeof what - strlen(what), "%smetrics.csv with %lld epoch%s", what[0] ? ", " : "",
               (long long)f.csv_rows, f.csv_rows == 1 ? "" : "s");
    fprintf(stderr, "xray-dp train: %s: already holds a run (%s): --resume continues it, --overwrite replaces it\n",
            dir, what);
    p->status = 1;
  }
}

/* Rank 0: the lock, then a second look (another training may have been faster), then stale temporaries.
 * *fresh_lock: the lock file is this process's (a failed start removes it again). */
static int lock_folder(const invocation *inv, const folder_plan *p, int *fd, int *fresh_lock) {
  xd_err e = {{0}};
  char lockp[2100];
  snprintf(lockp, sizeof lockp, "%s/.lock", inv->out);
  *fresh_lock = !xd_file_exists(lockp);
  *fd = xd_run_lock(inv->out, &e);
  if (*fd < 0) {
    fprintf(stderr, "xray-dp train: %s\n", e.msg);
    return 1;
  }
  xd_run_files f;
  if (xd_run_inspect(inv->out, &f, &e)) {
    fprintf(stderr, "xray-dp train: %s\n", e.msg);
    return 1;
  }
  int resume = p->mode != MODE_FRESH;
  int changed = resume ? !f.last
                       : (inv->overwrite ? 0 : (p->auto_replace ? f.last : (f.last || f.best || f.csv_rows > 0)));
  if (changed) {
    fprintf(stderr, "xray-dp train: %s: another training changed the folder while this one started; run again\n",
            inv->out);
    return 1;
  }
  xd_run_clean_tmp(inv->out);
  return 0;
}

int cmd_train(int argc, char **argv) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  xd_dist d;
  if (xd_dist_init(&d, &argc, &argv) != 0) {
    fprintf(stderr, "xray-dp train: MPI initialisation failed\n");
    return 1;
  }
  g_rank = d.rank;
  int status = 0, lock_fd = -1, fresh_lock = 0;
  /* only rank 0 reports errors that every rank detects alike: every rank parses the same argv and agrees */
  FILE *devnull = NULL, *saved_stderr = stderr;
  if (d.rank != 0) {
    devnull = fopen("/dev/null", "w");
    if (devnull) stderr = devnull;
  }
  settings *given = calloc(1, sizeof *given), *eff = calloc(1, sizeof *eff), *recipe_s = calloc(1, sizeof *recipe_s);
  folder_plan *plan = calloc(1, sizeof *plan);
  char *config = malloc(8192);
  char *recipe_buf = NULL, **rargv = NULL;
  char outbuf[256], command[4096], notes[NOTES_MAX] = "";
  xd_err e = {{0}};
  invocation inv = {NULL, 0, 0, 0, 0, -1, -1, 0, 8192};
  xd_train_opts o;
  memset(&o, 0, sizeof o);
  if (!given || !eff || !recipe_s || !plan || !config) {
    fprintf(stderr, "xray-dp train: out of memory\n");
    status = 1;
    goto out;
  }
  int pr = parse_args(argc, argv, given, &inv);
  if (pr == 1) {
    if (d.rank == 0) fputs(HELP, stdout);
    goto out;
  }
  if (pr < 0) {
    status = 2;
    goto out;
  }
  if (inv.resume && !inv.out) {
    fprintf(stderr, "xray-dp train: --resume needs --out DIR (the run folder holding last.h5)\n");
    status = 2;
    goto out;
  }
  if (inv.resume && inv.overwrite) {
    fprintf(stderr, "xray-dp train: --resume and --overwrite contradict each other: continue the run or replace it\n");
    status = 2;
    goto out;
  }
  if (inv.threads > 0) omp_set_num_threads((int)inv.threads);
  if (!inv.out) {
    /* rank 0's clock names the run for everyone */
    if (d.rank == 0) {
      time_t now = time(NULL);
      strftime(outbuf, sizeof outbuf, "runs/%Y%m%dT%H%M%SZ", gmtime(&now));
      /* two runs started in the same second get two folders */
      size_t len = strlen(outbuf);
      for (int k = 2; k < 1000 && xd_file_exists(outbuf); k++) snprintf(outbuf + len, sizeof outbuf - len, "-%d", k);
    }
    xd_dist_bcast_idle(&d, outbuf, sizeof outbuf);
    inv.out = outbuf;
  }

  /* the run folder: rank 0 looks (holding the lock already when the folder has been a run folder, so that
   * a folder in use says so first) and decides; everyone learns the plan and the stored settings */
  if (d.rank == 0) {
    struct stat sb;
    char lockp[2100];
    snprintf(lockp, sizeof lockp, "%s/.lock", inv.out);
    if (stat(inv.out, &sb) == 0 && S_ISDIR(sb.st_mode) && xd_file_exists(lockp)) {
      lock_fd = xd_run_lock(inv.out, &e);
      if (lock_fd < 0) {
        fprintf(stderr, "xray-dp train: %s\n", e.msg);
        plan->status = 1;
      }
    }
    if (!plan->status) plan_folder(&inv, plan);
  }
  xd_dist_bcast_idle(&d, plan, sizeof *plan);
  if (plan->status) {
    status = plan->status;
    goto out;
  }

  /* the settings: the run's own on --resume, else defaults < the preset's recipe < the command line */
  const char *lp_label = NULL;
  char lp[2100];
  snprintf(lp, sizeof lp, "%s/last.h5", inv.out);
  if (plan->mode == MODE_RESUME) {
    lp_label = lp;
    if (config_parse(plan->config, lp, eff)) {
      status = 1;
      goto out;
    }
    for (int k = 0; k < NSET; k++) {
      if (!given->set[k]) continue;
      if (eff->set[k] && strcmp(given->v[k], eff->v[k]) && !SET[k].change) {
        char a[360], b[360];
        show_given(k, given->v[k], a, sizeof a);
        show_stored(k, eff->v[k], b, sizeof b);
        fprintf(stderr, "xray-dp train: %s: the run in %s was started %s (leave the option out to resume with the "
                        "run's own settings)\n", a, lp, b);
        status = 1;
        goto out;
      }
      int differs = eff->set[k] && strcmp(given->v[k], eff->v[k]);
      if (differs && k == S_DATA) { /* the same file by another name is no news */
        char *abs = realpath(given->v[k], NULL);
        differs = !abs || strcmp(abs, eff->v[k]);
        free(abs);
      }
      if (differs && k != S_MODEL && strlen(notes) + 900 < NOTES_MAX)
      {
        char a[320], b[320];
        snprintf(notes + strlen(notes), NOTES_MAX - strlen(notes), "xray-dp: resuming with %s %s (the run had %s)\n",
                 SET[k].opt, pretty(k, given->v[k], a, sizeof a), pretty(k, eff->v[k], b, sizeof b));
      }
      memcpy(eff->v[k], given->v[k], VAL_MAX);
      eff->set[k] = 1;
    }
    o.model_given = given->set[S_MODEL];
    o.data_given = given->set[S_DATA];
    o.patience_given = given->set[S_PATIENCE];
  } else {
    if (plan->mode == MODE_RESUME_OLD)
      snprintf(notes, NOTES_MAX, "xray-dp: %.2100s records no settings (written by an earlier xray-dp): using the "
               "options given\n", lp);
    const char *model_arg = given->set[S_MODEL] ? given->v[S_MODEL] : SET[S_MODEL].def;
    const char *recipe = xd_model_preset_recipe(model_arg);
    if (recipe) {
      recipe_buf = xd_strdup(recipe);
      rargv = calloc(64, sizeof *rargv);
      if (!recipe_buf || !rargv) {
        fprintf(stderr, "xray-dp train: out of memory\n");
        status = 1;
        goto out;
      }
      int rn = 0;
      rargv[rn++] = argv[0];
      char *save = NULL;
      for (char *t = strtok_r(recipe_buf, " ", &save); t && rn < 63; t = strtok_r(NULL, " ", &save)) rargv[rn++] = t;
      if (parse_args(rn, rargv, recipe_s, NULL)) {
        status = 1;
        goto out;
      }
      o.recipe = recipe;
    }
    for (int k = 0; k < NSET; k++) {
      const settings *src = given->set[k] ? given : (recipe_s->set[k] ? recipe_s : NULL);
      if (!src) continue;
      memcpy(eff->v[k], src->v[k], VAL_MAX);
      eff->set[k] = 1;
    }
    if (plan->mode == MODE_RESUME_OLD) o.model_given = o.data_given = o.patience_given = 0;
  }
  if (!eff->set[S_DATA]) {
    snprintf(eff->v[S_DATA], VAL_MAX, "data/default.h5");
    eff->set[S_DATA] = 1;
  }
  if (finalize(eff, &o)) {
    status = lp_label ? 1 : 2;
    goto out;
  }
  if (o.batch % d.size) {
    fprintf(stderr, "xray-dp train: --batch %d is the global batch and must be divisible by the %d ranks\n", o.batch,
            d.size);
    status = 2;
    goto out;
  }
  o.out = inv.out;
  o.resume = plan->mode != MODE_FRESH;
  o.overwrite = inv.overwrite || plan->auto_replace;
  if (plan->auto_replace)
    snprintf(notes + strlen(notes), NOTES_MAX - strlen(notes), "xray-dp: --resume auto: %.2000s holds no last.h5, "
             "only what a run killed before its first checkpoint left: starting the run again\n", inv.out);
  o.max_steps = inv.max_steps;
  o.quiet = inv.quiet;
  o.progress = d.rank == 0 && (inv.progress < 0 ? stdout_is_terminal() : inv.progress);
  o.mem_cap_mb = inv.mem_cap_mb;
  o.detect_anomaly = inv.detect_anomaly;
  o.stop_flag = &g_stop;

  /* the folder is taken only now that the command is known to be valid */
  int32_t rc32 = 0;
  if (d.rank == 0) {
    if (lock_fd < 0) rc32 = lock_folder(&inv, plan, &lock_fd, &fresh_lock);
    else xd_run_clean_tmp(inv.out);
  }
  xd_dist_bcast_idle(&d, &rc32, sizeof rc32);
  if (rc32) {
    status = rc32;
    goto out;
  }

  if (!o.resume && !given->set[S_DATA]) {
    int32_t rc = 0;
    if (d.rank == 0 && !xd_file_exists(o.data)) {
      fprintf(stdout, "xray-dp: %s is missing: creating the built-in synthetic dataset\n", o.data);
      xd_synth_opts so = {2000, 128, 1};
      rc = xd_mkdir_p("data", &e) || xd_synth(o.data, &so, &e);
      if (rc) fprintf(stderr, "xray-dp train: %s\n", e.msg);
    }
    xd_dist_bcast_idle(&d, &rc, sizeof rc);
    if (rc) {
      status = 1;
      goto out;
    }
  }
  /* the stored settings name the dataset by its absolute path: a resume from another folder finds it */
  settings *stored = recipe_s; /* reuse: a copy of eff with the data path made absolute */
  memcpy(stored, eff, sizeof *stored);
  char *abs = realpath(o.data, NULL);
  if (abs) {
    if (strlen(abs) < VAL_MAX) snprintf(stored->v[S_DATA], VAL_MAX, "%s", abs);
    free(abs);
  }
  if (config_format(stored, config, 8192)) {
    fprintf(stderr, "xray-dp train: the settings (with the --data and --model paths) exceed the 8 KiB that last.h5 "
                    "records; use shorter paths\n");
    status = 2;
    goto out;
  }
  o.config = config;
  o.notes = notes;
  arg_join(argc, argv, command, sizeof command);
  o.command = command;

  int rc = xd_train(&o, &d, &e);
  if (rc < 0) {
    stderr = saved_stderr;
    if (e.msg[0]) {
      if (d.rank == 0) fprintf(stderr, "xray-dp train: %s\n", e.msg);
      else fprintf(stderr, "xray-dp train: rank %d: %s\n", d.rank, e.msg);
      fflush(stderr);
    }
    if (rc == -2 && d.size > 1) xd_dist_abort(&d, 1);
    status = 1;
  }
out:
  stderr = saved_stderr;
  if (lock_fd >= 0) {
    /* a start that failed before writing anything leaves the folder as it found it */
    static const char *const files[] = {"last.h5", "best.h5", "metrics.csv", "train.log"};
    int clean = status != 0 && fresh_lock;
    for (int i = 0; clean && i < 4; i++) {
      char fp[2100];
      snprintf(fp, sizeof fp, "%s/%s", inv.out, files[i]);
      if (xd_file_exists(fp)) clean = 0;
    }
    xd_run_unlock(lock_fd, inv.out, clean);
    if (clean && !plan->existed) rmdir(inv.out);
  }
  free(given);
  free(eff);
  free(recipe_s);
  free(plan);
  free(config);
  free(rargv);
  free(recipe_buf);
  xd_dist_finalize(&d);
  if (devnull) fclose(devnull);
  return status;
}
