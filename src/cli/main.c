/* xray-dp: git-style dispatch. With no subcommand, or only options, the command is `train`, so that
 * `mpirun -np 4 xray-dp --data d.h5` works. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <hdf5.h>

#include "cli.h"

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *help;
} CMDS[] = {
    {"pack", cmd_pack, "pack a folder of JPEG/PNG X-rays into an HDF5 dataset"},
    {"synth", cmd_synth, "write the built-in synthetic chest X-ray dataset"},
    {"train", cmd_train, "train a model (data-parallel under mpirun)"},
    {"eval", cmd_eval, "clinical metrics of a checkpoint on a dataset split"},
    {"predict", cmd_predict, "per-image probabilities (and Grad-CAM maps) for image files"},
    {"audit", cmd_audit, "shortcut audit: predictions under perturbations that should not matter"},
    {"bench", cmd_bench, "time training steps of a model on random data"},
    {"info", cmd_info, "describe a dataset or checkpoint file"},
    {"export", cmd_export, "write a checkpoint as an ONNX model (onnxruntime, TensorRT, ...)"},
    {"serve", cmd_serve, "HTTP server: web page and JSON API for a checkpoint's predictions"},
};
#define NCMDS (int)(sizeof CMDS / sizeof CMDS[0])

static void usage(FILE *f) {
  fprintf(f, "usage: xray-dp <command> [options]   (xray-dp <command> --help for each)\n\ncommands:\n");
  for (int i = 0; i < NCMDS; i++) fprintf(f, "  %-8s %s\n", CMDS[i].name, CMDS[i].help);
  fprintf(f, "\nWith no command (or only train options) xray-dp trains: `mpirun -np 4 xray-dp --data d.h5`.\n"
             "Without --data it trains on data/default.h5, creating it with `synth` if missing.\n");
}

int main(int argc, char **argv) {
  H5dont_atexit();
  /* every command ends with a status and a message, never by a signal: a file size limit (ulimit -f) and
   * a reader that went away (`| head`) become write errors that the writers report (or, for train's
   * progress lines on stdout, ignore: the run and its files go on) */
  signal(SIGXFSZ, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
    usage(stdout);
    return 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "--version")) {
    printf("xray-dp %s\n", XD_VERSION);
    return 0;
  }
  if (argc < 2 || argv[1][0] == '-') {
    /* implicit train: argv[0] plays the subcommand name */
    return cmd_train(argc, argv);
  }
  for (int i = 0; i < NCMDS; i++)
    if (!strcmp(argv[1], CMDS[i].name)) return CMDS[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "xray-dp: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
