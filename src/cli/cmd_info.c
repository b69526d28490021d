#include <stdio.h>
#include <string.h>

#include "checkpoint.h"
#include "cli.h"
#include "dataset.h"
#include "h5util.h"

static const char *const info_help =
    "usage: xray-dp info FILE.h5\n"
    "\n"
    "Describes an xray-dp file. A dataset: source, image size, classes, and the number of images per\n"
    "split and class (the file is validated on the way). A checkpoint (best.h5, last.h5): whether it\n"
    "holds the full training state, input size, classes, epoch and step, best epoch and its metric,\n"
    "the decision threshold, the command line that trained it, and the model summary.\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help\n";

static int info_dataset(const char *path) {
  xd_err e = {{0}};
  char splits[3][8];
  int ns = xd_dataset_splits(path, splits, &e);
  if (ns < 0) {
    fprintf(stderr, "xray-dp info: %s\n", e.msg);
    return 1;
  }
  if (ns == 0) {
    fprintf(stderr, "xray-dp info: %s: dataset has no train, val or test split\n", path);
    return 1;
  }
  for (int s = 0; s < ns; s++) {
    xd_dataset *d = NULL;
    if (xd_dataset_open(&d, path, splits[s], &e) != 0) {
      fprintf(stderr, "xray-dp info: %s\n", e.msg);
      return 1;
    }
    const xd_dataset_info *in = xd_dataset_get_info(d);
    int64_t count[XD_MAX_CLASSES] = {0};
    uint8_t lab[4096];
    for (int64_t a = 0; a < in->n; a += (int64_t)sizeof lab) {
      int64_t b = a + (int64_t)sizeof lab < in->n ? a + (int64_t)sizeof lab : in->n;
      if (xd_dataset_read_u8(d, a, b, NULL, lab, &e) != 0) {
        fprintf(stderr, "xray-dp info: %s\n", e.msg);
        xd_dataset_close(d);
        return 1;
      }
      for (int64_t i = 0; i < b - a; i++) count[lab[i]]++;
    }
    if (s == 0) {
      printf("%s: xray-dp dataset, version 1\n", path);
      printf("source: %s\n", in->source);
      printf("images: %dx%d, %d channel, uint8\n", in->height, in->width, in->channels);
      printf("classes:");
      for (int c = 0; c < in->nclasses; c++) printf(" %d=%s", c, in->class_names[c]);
      printf("\n%-6s %8s", "split", "images");
      for (int c = 0; c < in->nclasses; c++) printf(" %10s", in->class_names[c]);
      printf("\n");
    }
    printf("%-6s %8lld", splits[s], (long long)in->n);
    for (int c = 0; c < in->nclasses; c++) printf(" %10lld", (long long)count[c]);
    printf("\n");
    xd_dataset_close(d);
  }
  return 0;
}

int cmd_info(int argc, char **argv) {
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      fputs(info_help, stdout);
      return 0;
    }
    if ((argv[i][0] == '-' && argv[i][1] != '\0') || path) {
      fprintf(stderr, "xray-dp info: unexpected argument '%s' (see xray-dp info --help)\n", argv[i]);
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
  if (xd_h5_file_format(path, format, sizeof format, &e) != 0) {
    fprintf(stderr, "xray-dp info: %s\n", e.msg);
    return 1;
  }
  if (!strcmp(format, "xray-dp-dataset")) return info_dataset(path);
  if (!strcmp(format, "xray-dp-checkpoint")) {
    if (xd_checkpoint_describe(path, stdout, &e) == 0) return 0;
    fprintf(stderr, "xray-dp info: %s\n", e.msg);
    return 1;
  }
  fprintf(stderr, "xray-dp info: %s: neither a dataset nor a checkpoint (format attribute is '%s')\n", path, format);
  return 1;
}
