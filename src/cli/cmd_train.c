#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "dist.h"
#include "pack.h"
#include "train.h"

/* The one piece of process-wide state: set by SIGTERM/SIGUSR1 (SLURM preemption), read at step boundaries. */
static volatile sig_atomic_t g_stop = 0;
static void on_stop_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static const char *HELP =
    "usage: xray-dp train [options]          (also: mpirun -np N xray-dp [train] [options])\n"
    "\n"
    "Trains a CNN data-parallel: each MPI rank reads its shard of the train split, gradients are summed\n"
    "across ranks each step and every rank takes the same optimizer step. Rank 0 validates on the val\n"
    "split after each epoch, writes DIR/metrics.csv, DIR/train.log, DIR/best.h5 and DIR/last.h5.\n"
    "\n"
    "  --data D.h5          dataset (default data/default.h5, created with `synth` if missing)\n"
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
    "  --schedule S         lr schedule: constant (default), cosine, cosine:MIN_FACTOR, step:EVERY:GAMMA\n"
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
    "  --out DIR            run directory (default runs/<UTC timestamp>)\n"
    "  --resume             continue from DIR/last.h5 (needs --out); same weights as an uninterrupted run\n"
    "  --max-steps N        stop after N optimizer steps in total (0: write the initial weights)\n"
    "  --no-shuffle         keep each rank's shard in file order\n"
    "  --threads T          OpenMP threads per rank (default OMP_NUM_THREADS, else the rank's cores)\n"
    "  --mem-cap MB         largest train shard a rank holds in memory (default 8192); a bigger shard is\n"
    "                       streamed from the file, the next batch read while the current one computes\n"
    "  --quiet              no progress or epoch lines (errors still go to stderr)\n"
    "\n"
    "The default model is a recipe, not only a network: --model default (also when --model is not given)\n"
    "first applies\n"
    "  --optimizer adamw --lr 2e-3 --weight-decay 5e-4 --warmup 1 --schedule cosine --epochs 20 --batch 32\n"
    "  --augment shortcut --class-weight balanced --ema 0.998 --sync-bn --monitor last --patience 0\n"
    "to the network resnet-s; any option given on the command line overrides the recipe's. The other\n"
    "presets use the plain defaults listed above.\n"
    "\n"
    "SIGTERM or SIGUSR1 makes all ranks finish the current step, rank 0 write last.h5, and exit 0.\n";

#define USAGE_FAIL()  \
  do {                \
    status = 2;       \
    goto out;         \
  } while (0)

int cmd_train(int argc, char **argv) {
  xd_dist d;
  if (xd_dist_init(&d, &argc, &argv) != 0) {
    fprintf(stderr, "xray-dp train: MPI initialisation failed\n");
    return 1;
  }
  const char *cmd = "train";
  int status = 0;
  /* only rank 0 reports usage errors: every rank parses the same argv and agrees */
  FILE *devnull = NULL, *saved_stderr = stderr;
  if (d.rank != 0) {
    devnull = fopen("/dev/null", "w");
    if (devnull) stderr = devnull;
  }
  xd_train_opts o;
  memset(&o, 0, sizeof o);
  o.data = NULL;
  o.model = "default";
  o.epochs = 10;
  o.batch = 32;
  o.seed = 1;
  o.patience = 3;
  o.augment = "none";
  o.max_steps = -1;
  o.mem_cap_mb = 8192;
  o.stop_flag = &g_stop;
  const char *optname = "adam", *sched = "constant", *cw = "none", *init = "torch", *monitor = "val_loss";
  double lr = 1e-3, wd = 0, momentum = -1;
  int nesterov = 0;
  int64_t threads = 0;
  char outbuf[256];
  /* a preset's recipe goes in front of the user's options, which therefore override it */
  const char *model_arg = "default";
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], "--model")) model_arg = argv[i + 1];
  const char *recipe = xd_model_preset_recipe(model_arg);
  char *recipe_buf = NULL, **all = NULL;
  int nall = argc;
  if (recipe) {
    recipe_buf = xd_strdup(recipe);
    all = calloc((size_t)argc + 64, sizeof *all);
    if (!recipe_buf || !all) {
      fprintf(stderr, "xray-dp train: out of memory\n");
      status = 1;
      goto out;
    }
    nall = 0;
    all[nall++] = argv[0];
    char *save = NULL;
    for (char *t = strtok_r(recipe_buf, " ", &save); t && nall < 60; t = strtok_r(NULL, " ", &save)) all[nall++] = t;
    for (int i = 1; i < argc; i++) all[nall++] = argv[i];
    o.recipe = recipe;
  }
  char **av = all ? all : argv;
  int ac = nall;
  double ema = 0;
  int64_t warmup = 0;
  for (int i = 1; i < ac; i++) {
    const char *a = av[i], *v;
    int64_t iv;
    double dv;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      if (d.rank == 0) fputs(HELP, stdout);
      goto out;
    }
#define VAL() \
  if (!(v = arg_value(cmd, ac, av, &i))) USAGE_FAIL()
    if (!strcmp(a, "--data")) { VAL(); o.data = v; }
    else if (!strcmp(a, "--model")) { VAL(); o.model = v; }
    else if (!strcmp(a, "--out")) { VAL(); o.out = v; }
    else if (!strcmp(a, "--epochs")) { VAL(); if (arg_int(cmd, a, v, 1, 1000000, &iv)) USAGE_FAIL(); o.epochs = (int)iv; }
    else if (!strcmp(a, "--batch")) { VAL(); if (arg_int(cmd, a, v, 1, 1 << 20, &iv)) USAGE_FAIL(); o.batch = (int)iv; }
    else if (!strcmp(a, "--lr")) { VAL(); if (arg_double(cmd, a, v, 0, 100, &lr)) USAGE_FAIL(); }
    else if (!strcmp(a, "--optimizer")) { VAL(); optname = v; }
    else if (!strcmp(a, "--momentum")) { VAL(); if (arg_double(cmd, a, v, 0, 0.9999, &momentum)) USAGE_FAIL(); }
    else if (!strcmp(a, "--nesterov")) nesterov = 1;
    else if (!strcmp(a, "--weight-decay")) { VAL(); if (arg_double(cmd, a, v, 0, 10, &wd)) USAGE_FAIL(); }
    else if (!strcmp(a, "--schedule")) { VAL(); sched = v; }
    else if (!strcmp(a, "--seed")) { VAL(); if (arg_int(cmd, a, v, 0, INT64_MAX, &iv)) USAGE_FAIL(); o.seed = (uint64_t)iv; }
    else if (!strcmp(a, "--init")) { VAL(); init = v; }
    else if (!strcmp(a, "--patience")) { VAL(); if (arg_int(cmd, a, v, 0, 1000000, &iv)) USAGE_FAIL(); o.patience = (int)iv; }
    else if (!strcmp(a, "--min-delta")) { VAL(); if (arg_double(cmd, a, v, 0, 1e9, &dv)) USAGE_FAIL(); o.min_delta = dv; }
    else if (!strcmp(a, "--monitor")) { VAL(); monitor = v; }
    else if (!strcmp(a, "--class-weight")) { VAL(); cw = v; }
    else if (!strcmp(a, "--augment")) { VAL(); o.augment = v; }
    else if (!strcmp(a, "--sync-bn")) o.sync_bn = 1;
    else if (!strcmp(a, "--no-sync-bn")) o.sync_bn = 0;
    else if (!strcmp(a, "--ema")) { VAL(); if (arg_double(cmd, a, v, 0, 0.999999, &ema)) USAGE_FAIL(); }
    else if (!strcmp(a, "--warmup")) { VAL(); if (arg_int(cmd, a, v, 0, 1000000, &warmup)) USAGE_FAIL(); }
    else if (!strcmp(a, "--resume")) o.resume = 1;
    else if (!strcmp(a, "--max-steps")) { VAL(); if (arg_int(cmd, a, v, 0, INT64_MAX, &iv)) USAGE_FAIL(); o.max_steps = iv; }
    else if (!strcmp(a, "--no-shuffle")) o.no_shuffle = 1;
    else if (!strcmp(a, "--quiet")) o.quiet = 1;
    else if (!strcmp(a, "--threads")) { VAL(); if (arg_int(cmd, a, v, 1, 4096, &threads)) USAGE_FAIL(); }
    else if (!strcmp(a, "--mem-cap")) { VAL(); if (arg_double(cmd, a, v, 0, 1e9, &o.mem_cap_mb)) USAGE_FAIL(); }
    else {
      fprintf(stderr, "xray-dp train: unknown option '%s' (see xray-dp train --help)\n", a);
      USAGE_FAIL();
    }
#undef VAL
  }
  xd_opt_kind kind;
  if (xd_opt_parse(optname, &kind)) {
    fprintf(stderr, "xray-dp train: --optimizer: expected adam, adamw, sgd, rmsprop or adagrad, got '%s'\n", optname);
    USAGE_FAIL();
  }
  o.opt = xd_opt_defaults(kind, (float)lr);
  o.opt.weight_decay = (float)wd;
  if (momentum >= 0) o.opt.momentum = (float)momentum;
  o.opt.nesterov = nesterov;
  if (nesterov && (kind != XD_OPT_SGD || o.opt.momentum <= 0)) {
    fprintf(stderr, "xray-dp train: --nesterov needs --optimizer sgd with momentum > 0\n");
    USAGE_FAIL();
  }
  if (xd_schedule_parse(sched, &o.sched)) {
    fprintf(stderr, "xray-dp train: --schedule: expected constant, cosine, cosine:MIN or step:EVERY:GAMMA, got '%s'\n", sched);
    USAGE_FAIL();
  }
  if (xd_init_parse(init, &o.init)) {
    fprintf(stderr, "xray-dp train: --init: expected torch, glorot or he, got '%s'\n", init);
    USAGE_FAIL();
  }
  o.ema = ema;
  o.sched.warmup_epochs = (int)warmup;
  if (!strcmp(monitor, "val_auc")) o.monitor_auc = 1;
  else if (!strcmp(monitor, "last")) o.monitor_last = 1;
  else if (strcmp(monitor, "val_loss")) {
    fprintf(stderr, "xray-dp train: --monitor: expected val_loss, val_auc or last, got '%s'\n", monitor);
    USAGE_FAIL();
  }
  if (!strcmp(cw, "none")) o.class_weight = 0;
  else if (!strcmp(cw, "balanced")) o.class_weight = 1;
  else {
    char *end;
    o.class_weight = 2;
    o.cw[0] = strtof(cw, &end);
    if (*end != ',' || !(o.cw[0] > 0) || (o.cw[1] = strtof(end + 1, &end), *end) || !(o.cw[1] > 0)) {
      fprintf(stderr, "xray-dp train: --class-weight: expected none, balanced or W0,W1 (positive), got '%s'\n", cw);
      USAGE_FAIL();
    }
  }
  xd_augment aug;
  if (xd_augment_parse(o.augment, &aug)) {
    fprintf(stderr, "xray-dp train: --augment: expected none, default, shortcut or KEY=V,... (keys rot, shift, zoom, "
                    "contrast, brightness, aspect, gamma, noise, erase, border), got '%s'\n", o.augment);
    USAGE_FAIL();
  }
  if (o.resume && !o.out) {
    fprintf(stderr, "xray-dp train: --resume needs --out DIR (the run directory holding last.h5)\n");
    USAGE_FAIL();
  }
  if (o.batch % d.size) {
    fprintf(stderr, "xray-dp train: --batch %d is the global batch and must be divisible by the %d ranks\n", o.batch, d.size);
    USAGE_FAIL();
  }
  if (threads > 0) omp_set_num_threads((int)threads);

  if (!o.out) {
    /* rank 0's clock names the run for everyone */
    if (d.rank == 0) {
      time_t now = time(NULL);
      strftime(outbuf, sizeof outbuf, "runs/%Y%m%dT%H%M%SZ", gmtime(&now));
    }
    xd_dist_bcast_idle(&d, outbuf, sizeof outbuf);
    o.out = outbuf;
  }
  xd_err e = {{0}};
  if (!o.data) {
    o.data = "data/default.h5";
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
  char command[4096];
  arg_join(argc, argv, command, sizeof command);
  o.command = command;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);

  int rc = xd_train(&o, &d, &e);
  if (rc < 0) {
    stderr = saved_stderr;
    if (d.size > 1) {
      fprintf(stderr, "xray-dp train: rank %d: %s\n", d.rank, e.msg);
      fflush(stderr);
      xd_dist_abort(&d, 1);
    }
    fprintf(stderr, "xray-dp train: %s\n", e.msg);
    status = 1;
  }
out:
  stderr = saved_stderr;
  free(all);
  free(recipe_buf);
  xd_dist_finalize(&d);
  if (devnull) fclose(devnull);
  return status;
}
