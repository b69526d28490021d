#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "pack.h"

/* One patient's images share this prefix in the Kaggle "Chest X-Ray Images (Pneumonia)" set. */
#define XD_KAGGLE_GROUP_RE "^(person[0-9]+|IM-[0-9]+|NORMAL2-IM-[0-9]+)"

static const char *const pack_help =
    "usage: xray-dp pack SRC OUT.h5 [--size 128] [--val-fraction 0.1] [--seed 1] [--threads T]\n"
    "                    [--group-regex RE] [--mem-limit SIZE]\n"
    "\n"
    "Packs a folder of images into an xray-dp dataset file (HDF5).\n"
    "\n"
    "SRC is either SRC/<split>/<CLASS>/<image> with splits train, val, test, or SRC/<CLASS>/<image>\n"
    "(everything goes into train). Class names are the sorted class folder names and must be the same\n"
    "in every split. Hidden files and folders are ignored. Images (JPEG, PNG, BMP, GIF, PGM/PPM) are\n"
    "converted to 8-bit grayscale and resized to SIZE x SIZE (area averaging when shrinking, bilinear\n"
    "when enlarging; the aspect ratio is not kept). Files are stored sorted by path.\n"
    "\n"
    "Validation split: when SRC has no val split, or one with fewer than 5% as many files as train\n"
    "(the Kaggle set's 16 images), that val is merged into train and a stratified, seeded fraction F of\n"
    "each class of train is moved to val (about round(F * class count) files per class). Files move in\n"
    "groups that never straddle train and val: byte-identical files always form a group (the Kaggle set\n"
    "has some), and so do files whose names share --group-regex's match (by default the Kaggle set's\n"
    "patient ids), so validation does not see patients that training saw. With F = 0 the val split\n"
    "of SRC, if any, is kept as it is. The split is decided on the file list, before decoding.\n"
    "\n"
    "Unreadable files (corrupt, truncated, zero-byte, not an image, dimensions over 16384 per side or\n"
    "2^27 pixels) are skipped with one 'skip PATH: REASON' line each on stderr and counted; pack fails\n"
    "only if no image at all can be read (file names with control characters are shown with '?'). A\n"
    "progress line is shown when stderr is a terminal; a summary (images per split and class, skipped,\n"
    "files/s) is printed on stderr at the end.\n"
    "\n"
    "options:\n"
    "  --size N            output side in pixels (default 128)\n"
    "  --val-fraction F    fraction of each class of train carved into val, 0 <= F < 1 (default 0.1)\n"
    "  --seed S            seed of the validation carve-out (default 1)\n"
    "  --threads T         decoding threads (default: OMP_NUM_THREADS or all cores); the output does\n"
    "                      not depend on T\n"
    "  --group-regex RE    POSIX extended regex on file names; files with the same match (capture\n"
    "                      group 1 if there is one) go to the same split. Default: the Kaggle\n"
    "                      pneumonia set's patient ids, '" XD_KAGGLE_GROUP_RE "'\n"
    "                      (names that do not match form groups of one); 'none' turns grouping off;\n"
    "                      an invalid expression is bad usage (exit 2)\n"
    ARG_MEM_LIMIT_HELP
    "  -h, --help          show this help\n"
    "\n"
    "Output: OUT.h5 is written as OUT.h5.tmp.<pid> and renamed over OUT.h5 only when complete and flushed;\n"
    "on any failure (a full disk, a file size limit) the temporary is removed and an existing OUT.h5 is\n"
    "left as it was. Temporaries of dead earlier runs (OUT.h5.tmp.<pid> whose process is gone) are\n"
    "removed first. OUT.h5 must not be a directory, a device or one of the images in SRC; a symbolic\n"
    "link is followed (its target is replaced). Images and labels carry HDF5 Fletcher-32 checksums and\n"
    "the file's metadata is checksummed, so a corrupted file fails to read instead of giving other\n"
    "pixels. Class folder names must be printable UTF-8 of at most 63 bytes.\n"
    "\n"
    "Exit status: 0 success, 2 bad usage, 1 any other error (one line on stderr naming the file).\n";

static int usage(const char *msg) {
  fprintf(stderr, "xray-dp pack: %s (see xray-dp pack --help)\n", msg);
  return 2;
}

int cmd_pack(int argc, char **argv) {
  xd_pack_opts o = {.size = 128, .val_fraction = 0.1, .seed = 1, .threads = 0, .progress = 0, .log = stderr,
                    .group_regex = XD_KAGGLE_GROUP_RE};
  const char *pos[2] = {NULL, NULL};
  int npos = 0;
  for (int i = 1; i < argc; i++) {
    const char *v = NULL;
    int64_t x = 0;
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      fputs(pack_help, stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--size")) {
      if (!(v = arg_value("pack", argc, argv, &i)) || arg_int("pack", "--size", v, 1, 4096, &x)) return 2;
      o.size = (int)x;
    } else if (!strcmp(argv[i], "--val-fraction")) {
      if (!(v = arg_value("pack", argc, argv, &i)) || arg_double("pack", "--val-fraction", v, 0, 0.99, &o.val_fraction))
        return 2;
    } else if (!strcmp(argv[i], "--seed")) {
      if (!(v = arg_value("pack", argc, argv, &i)) || arg_int("pack", "--seed", v, 0, INT64_MAX, &x)) return 2;
      o.seed = (uint64_t)x;
    } else if (!strcmp(argv[i], "--group-regex")) {
      if (!(v = arg_value("pack", argc, argv, &i))) return 2;
      o.group_regex = !strcmp(v, "none") || !*v ? NULL : v;
    } else if (!strcmp(argv[i], "--mem-limit")) {
      if (!(v = arg_value("pack", argc, argv, &i)) || arg_mem_limit("pack", v)) return 2;
    } else if (!strcmp(argv[i], "--threads")) {
      if (!(v = arg_value("pack", argc, argv, &i)) || arg_int("pack", "--threads", v, 1, 1024, &x)) return 2;
      o.threads = (int)x;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      char msg[256];
      snprintf(msg, sizeof msg, "unknown option '%s'", argv[i]);
      return usage(msg);
    } else if (npos < 2) {
      pos[npos++] = argv[i];
    } else {
      return usage("too many arguments");
    }
  }
  if (npos < 2) return usage("needs SRC and OUT.h5");
  if (!pos[0][0]) return usage("SRC is an empty path");
  if (!pos[1][0]) return usage("OUT.h5 is an empty path");
  if (o.group_regex) {
    regex_t re;
    int rerr = regcomp(&re, o.group_regex, REG_EXTENDED);
    if (rerr != 0) {
      char why[256], msg[600];
      regerror(rerr, &re, why, sizeof why);
      snprintf(msg, sizeof msg, "--group-regex: '%s' is not a valid extended regular expression: %s", o.group_regex, why);
      xd_msg_oneline(msg);
      return usage(msg);
    }
    regfree(&re);
  }
  /* a file size limit (ulimit -f) must be a write error with a message, not a signal */
  signal(SIGXFSZ, SIG_IGN);
  o.progress = isatty(fileno(stderr));
  xd_err e = {{0}};
  if (xd_pack(pos[0], pos[1], &o, NULL, &e) != 0) {
    xd_msg_oneline(e.msg);
    fprintf(stderr, "xray-dp pack: %s\n", e.msg);
    return 1;
  }
  return 0;
}
