#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "checkpoint.h"
#include "cli.h"
#include "dataset.h"
#include "h5util.h"

static const char *const info_help =
    "usage: xray-dp info FILE.h5 [--verify] [--mem-limit SIZE]\n"
    "\n"
    "Describes an xray-dp file. A dataset: source, image size, classes, and the number of images per\n"
    "split and class (the file is validated on the way: declared sizes against what the file stores,\n"
    "every label in range). A checkpoint (best.h5, last.h5): whether it holds the full training state,\n"
    "input size, classes, epoch and step, best epoch and its metric, the decision threshold, the\n"
    "optimizer, whether it has checksums, the command line that trained it, and the model summary.\n"
    "Every tensor and attribute of a checkpoint is read and checked (checksums, finite values, ranges,\n"
    "shapes): a corrupted or implausible file exits 1 with one line naming the file and the problem.\n"
    "\n"
    "options:\n"
    "  --verify       a dataset: also read every image (checks every stored checksum; reads the whole\n"
    "                 file). A checkpoint is always read completely.\n"
    ARG_MEM_LIMIT_HELP
    "  -h, --help     show this help\n";

/* One line on stderr, whatever the file name holds (a newline or tab in it becomes '?'). */
static int fail1(xd_err *e) {
  xd_msg_oneline(e->msg);
  fprintf(stderr, "xray-dp info: %s\n", e->msg);
  return 1;
}

/* Reads every image of the split (in blocks of 64), so that every chunk's checksum is checked. */
static int verify_images(xd_dataset *d, xd_err *e) {
  const xd_dataset_info *in = xd_dataset_get_info(d);
  size_t hw = (size_t)in->height * (size_t)in->width;
  uint8_t *buf = xd_alloc(64 * hw, "the verification buffer", e);
  if (!buf) return -1;
  int rc = 0;
  for (int64_t a = 0; rc == 0 && a < in->n; a += 64) rc = xd_dataset_read_u8(d, a, a + 64 < in->n ? a + 64 : in->n, buf, NULL, e);
  xd_free(buf);
  return rc;
}

static int info_dataset(const char *path, int verify, FILE *out) {
  xd_err e = {{0}};
  char splits[3][8];
  int ns = xd_dataset_splits(path, splits, &e);
  if (ns < 0) return fail1(&e);
  if (ns == 0) {
    xd_fail(&e, "%s: dataset has no train, val or test split", path);
    return fail1(&e);
  }
  /* every split is opened and checked before anything is printed: a bad file prints only its error */
  static int64_t count[3][XD_MAX_CLASSES];
  int64_t n[3] = {0, 0, 0};
  xd_dataset_info first;
  int checksummed = 1;
  memset(count, 0, sizeof count);
  for (int s = 0; s < ns; s++) {
    xd_dataset *d = NULL;
    if (xd_dataset_open(&d, path, splits[s], &e) != 0) return fail1(&e);
    const xd_dataset_info *in = xd_dataset_get_info(d);
    if (s == 0) first = *in;
    n[s] = in->n;
    checksummed = checksummed && in->checksummed;
    uint8_t lab[4096];
    int rc = 0;
    for (int64_t a = 0; rc == 0 && a < in->n; a += (int64_t)sizeof lab) {
      int64_t b = a + (int64_t)sizeof lab < in->n ? a + (int64_t)sizeof lab : in->n;
      rc = xd_dataset_read_u8(d, a, b, NULL, lab, &e);
      for (int64_t i = 0; rc == 0 && i < b - a; i++) count[s][lab[i]]++;
    }
    if (rc == 0 && verify) rc = verify_images(d, &e);
    xd_dataset_close(d);
    if (rc != 0) return fail1(&e);
  }
  fprintf(out, "%s: xray-dp dataset, version 1\n", path);
  fprintf(out, "source: %s\n", first.source);
  fprintf(out, "images: %dx%d, %d channel, uint8\n", first.height, first.width, first.channels);
  fprintf(out, "checksums: %s\n", checksummed ? (verify ? "Fletcher-32 on images and labels (all verified)"
                                                  : "Fletcher-32 on images and labels (labels verified; --verify reads every image)")
                                      : "none (written without checksums)");
  fprintf(out, "classes:");
  for (int c = 0; c < first.nclasses; c++) fprintf(out, " %d=%s", c, first.class_names[c]);
  fprintf(out, "\n%-6s %8s", "split", "images");
  for (int c = 0; c < first.nclasses; c++) fprintf(out, " %10s", first.class_names[c]);
  fprintf(out, "\n");
  for (int s = 0; s < ns; s++) {
    fprintf(out, "%-6s %8lld", splits[s], (long long)n[s]);
    for (int c = 0; c < first.nclasses; c++) fprintf(out, " %10lld", (long long)count[s][c]);
    fprintf(out, "\n");
  }
  return 0;
}

int cmd_info(int argc, char **argv) {
  const char *path = NULL;
  int verify = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      fputs(info_help, stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--verify")) {
      verify = 1;
      continue;
    }
    if (!strcmp(argv[i], "--mem-limit")) {
      const char *v = arg_value("info", argc, argv, &i);
      if (!v || arg_mem_limit("info", v)) return 2;
      continue;
    }
    if ((argv[i][0] == '-' && argv[i][1] != '\0') || path) {
      xd_err u;
      xd_fail(&u, "unexpected argument '%s' (see xray-dp info --help)", argv[i]);
      fail1(&u);
      return 2;
    }
    path = argv[i];
  }
  if (!path) {
    fprintf(stderr, "xray-dp info: needs FILE.h5 (see xray-dp info --help)\n");
    return 2;
  }
  xd_err e = {{0}};
  char format[64];
  if (xd_h5_file_format(path, format, sizeof format, &e) != 0) return fail1(&e);
  if (strcmp(format, "xray-dp-dataset") != 0 && strcmp(format, "xray-dp-checkpoint") != 0) {
    xd_fail(&e, "%s: neither a dataset nor a checkpoint (format attribute is '%s')", path, format);
    return fail1(&e);
  }
  /* the description is composed in memory and written to stdout only when complete, checked */
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);
  if (!out) {
    xd_fail(&e, "%s: out of memory", path);
    return fail1(&e);
  }
  int rc;
  if (!strcmp(format, "xray-dp-dataset")) rc = info_dataset(path, verify, out);
  else rc = xd_checkpoint_describe(path, out, &e) == 0 ? 0 : fail1(&e);
  if (fclose(out) != 0 && rc == 0) rc = fail1(&(xd_err){"out of memory composing the description"});
  if (rc == 0 && xd_write_stdout(buf, len, &e) != 0) rc = fail1(&e);
  free(buf);
  return rc;
}
