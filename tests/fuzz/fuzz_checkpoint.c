/* libFuzzer target: the checkpoint loader. The input is written to an in-memory file and opened by path
 * like `eval`/`predict`/`info`/`train --resume` do: probe, full load (model built from the stored
 * description, every tensor and attribute checked), the optimizer summary and `info`'s description.
 * Refusals must be one line; no HDF5 object may stay open afterwards. */
#include "fuzz_util.h" /* first: it sets _GNU_SOURCE */
#include <hdf5.h>
#include <omp.h>
#include "checkpoint.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  xd_mem_limit_set((uint64_t)256 << 20);
  omp_set_num_threads(1);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  int fd = -1;
  const char *path = fz_mem_file(data, n, &fd);
  if (!path) return 0;
  static xd_ckpt_meta meta;
  xd_train_state st;
  xd_model m;
  memset(&m, 0, sizeof m);
  xd_err e = {{0}};
  if (xd_checkpoint_probe(path) == 1) {
    if (xd_checkpoint_load(path, &m, &st, &meta, &e) == 0) xd_model_free(&m);
    else fz_check_msg("checkpoint load", e.msg, 0);
    xd_opt_kind kind;
    double ema = 0;
    if (xd_checkpoint_optim_info(path, &kind, &ema, &e) != 0) fz_check_msg("checkpoint optim", e.msg, 0);
    if (xd_checkpoint_describe(path, fz_devnull(), &e) != 0) fz_check_msg("checkpoint describe", e.msg, 0);
  }
  close(fd);
  ssize_t open_objs = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
  if (open_objs > 0) {
    fprintf(stderr, "checkpoint: %zd HDF5 objects left open\n", open_objs);
    abort();
  }
  return 0;
}
