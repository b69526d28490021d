/* libFuzzer target: the dataset validator. The input is written to an in-memory file and opened by
 * path like `info`/`train` do: every split listed is opened (validated), its first and last images,
 * labels and paths are read. Refusals must be one line; no HDF5 object may stay open afterwards. */
#include "fuzz_util.h" /* first: it sets _GNU_SOURCE */
#include <hdf5.h>
#include "dataset.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  xd_mem_limit_set((uint64_t)256 << 20);
  return 0;
}

static void read_some(xd_dataset *d, int64_t a, int64_t b) {
  const xd_dataset_info *in = xd_dataset_get_info(d);
  uint64_t px = (uint64_t)in->height * (uint64_t)in->width * (uint64_t)(in->channels > 0 ? in->channels : 1);
  if (b <= a || px == 0 || px > ((uint64_t)1 << 22)) return;
  uint8_t *u = malloc((size_t)(b - a) * px), lab[4];
  float *f = malloc((size_t)(b - a) * px * sizeof(float));
  xd_err e = {{0}};
  if (u && xd_dataset_read_u8(d, a, b, u, lab, &e) != 0) fz_check_msg("dataset read", e.msg, 0);
  if (f && xd_dataset_read_f32(d, a, b, f, NULL, &e) != 0) fz_check_msg("dataset read", e.msg, 0);
  char path[256];
  if (xd_dataset_read_path(d, a, path, sizeof path, &e) != 0) fz_check_msg("dataset path", e.msg, 0);
  free(u);
  free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  int fd = -1;
  const char *path = fz_mem_file(data, n, &fd);
  if (!path) return 0;
  xd_err e = {{0}};
  char names[3][8];
  int k = xd_dataset_splits(path, names, &e);
  if (k < 0) fz_check_msg("dataset splits", e.msg, 0);
  for (int i = 0; i < k && i < 3; i++) {
    xd_dataset *d = NULL;
    if (xd_dataset_open(&d, path, names[i], &e) != 0) {
      fz_check_msg("dataset open", e.msg, 0);
      continue;
    }
    int64_t cnt = xd_dataset_get_info(d)->n;
    read_some(d, 0, cnt < 4 ? cnt : 4);
    if (cnt > 4) read_some(d, cnt - 1, cnt);
    xd_dataset_close(d);
  }
  if (xd_dataset_has_split(path, "val", &e) < 0) fz_check_msg("dataset has_split", e.msg, 0);
  close(fd);
  ssize_t open_objs = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
  if (open_objs > 0) {
    fprintf(stderr, "dataset: %zd HDF5 objects left open\n", open_objs);
    abort();
  }
  return 0;
}
