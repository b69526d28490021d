#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "pack.h"

static const char *const synth_help =
    "usage: xray-dp synth OUT.h5 [--n 2000] [--size 128] [--seed 1] [--threads T] [--mem-limit SIZE]\n"
    "\n"
    "Writes the built-in synthetic dataset: procedural chest-radiograph phantoms (torso, lung fields,\n"
    "ribs, clavicles, spine, heart shadow, vessels; varying patient size, position, rotation and\n"
    "exposure; film grain). PNEUMONIA images add patchy consolidation opacities of varying size,\n"
    "density and location inside the lung fields, some of them faint; NORMAL images have none.\n"
    "Classes NORMAL and PNEUMONIA are balanced within each split; splits train/val/test are\n"
    "70/15/15 percent of N. The file is a pure function of N, SIZE and SEED (bit for bit, for any\n"
    "thread count).\n"
    "\n"
    "Output: OUT.h5 is written as OUT.h5.tmp.<pid> and renamed over OUT.h5 only when complete and flushed;\n"
    "on any failure (a full disk, a file size limit) the temporary is removed and an existing OUT.h5 is\n"
    "left as it was. Temporaries of dead earlier runs are removed first. OUT.h5 must not be a directory\n"
    "or a device; a symbolic link is followed. Images and labels carry HDF5 Fletcher-32 checksums and the\n"
    "metadata is checksummed.\n"
    "\n"
    "options:\n"
    "  --n N          total number of images over all splits, at least 10 (default 2000)\n"
    "  --size N       image side in pixels, 16 to 4096 (default 128)\n"
    "  --seed S       seed (default 1)\n"
    "  --threads T    generation threads (default: OMP_NUM_THREADS or all cores)\n"
    ARG_MEM_LIMIT_HELP
    "  -h, --help     show this help\n"
    "\n"
    "Exit status: 0 success, 2 bad usage, 1 any other error (one line on stderr naming the file).\n";

static int usage(const char *msg) {
  fprintf(stderr, "xray-dp synth: %s (see xray-dp synth --help)\n", msg);
  return 2;
}

int cmd_synth(int argc, char **argv) {
  xd_synth_opts o = {.n = 2000, .size = 128, .seed = 1};
  int threads = 0;
  const char *out = NULL;
  for (int i = 1; i < argc; i++) {
    const char *v = NULL;
    int64_t x = 0;
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      fputs(synth_help, stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--n")) {
      if (!(v = arg_value("synth", argc, argv, &i)) || arg_int("synth", "--n", v, 10, 10000000, &x)) return 2;
      o.n = (int)x;
    } else if (!strcmp(argv[i], "--size")) {
      if (!(v = arg_value("synth", argc, argv, &i)) || arg_int("synth", "--size", v, 16, 4096, &x)) return 2;
      o.size = (int)x;
    } else if (!strcmp(argv[i], "--seed")) {
      if (!(v = arg_value("synth", argc, argv, &i)) || arg_int("synth", "--seed", v, 0, INT64_MAX, &x)) return 2;
      o.seed = (uint64_t)x;
    } else if (!strcmp(argv[i], "--mem-limit")) {
      if (!(v = arg_value("synth", argc, argv, &i)) || arg_mem_limit("synth", v)) return 2;
    } else if (!strcmp(argv[i], "--threads")) {
      if (!(v = arg_value("synth", argc, argv, &i)) || arg_int("synth", "--threads", v, 1, 1024, &x)) return 2;
      threads = (int)x;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown option '%s'", argv[i]);
      return usage(msg);
    } else if (!out) {
      out = argv[i];
    } else {
      return usage("too many arguments");
    }
  }
  if (!out) return usage("needs OUT.h5");
  if (!out[0]) return usage("OUT.h5 is an empty path");
  if (threads > 0) omp_set_num_threads(threads);
  signal(SIGXFSZ, SIG_IGN); /* a file size limit becomes a write error with a message, not a signal */
  xd_err e = {{0}};
  if (xd_synth(out, &o, &e) != 0) {
    xd_msg_oneline(e.msg);
    fprintf(stderr, "xray-dp synth: %s\n", e.msg);
    return 1;
  }
  return 0;
}
