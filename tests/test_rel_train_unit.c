/* The run folder (issue 9): the lock (exclusive, naming its holder, released by a kill -9), what a
 * folder holds of a run, stale temporaries of dead writers, and the stored settings' reader.
 *
 * Also a small tool for the shell tests (tests/test_rel_*.sh), which need to damage checkpoints in ways
 * no xray-dp command would write (HDF5 recomputes the file's checksums, so the damage is "valid"):
 *   test_rel_train_unit set-int FILE NAME VALUE     a root int64 attribute (step, epoch, step_in_epoch, ...)
 *   test_rel_train_unit set-str FILE NAME TEXT      a root string attribute (train_config, ...)
 *   test_rel_train_unit get-str FILE NAME           prints a root string attribute
 *   test_rel_train_unit set-rows FILE SPLIT N       keeps the first N images of a dataset's split (0: empty) */
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common.h"
#include "h5util.h"
#include "train.h"

static int tool(int argc, char **argv) {
  if (argc < 4) return 2;
  const char *op = argv[1], *file = argv[2], *name = argv[3];
  int rdwr = strcmp(op, "get-str") != 0;
  hid_t f = H5Fopen(file, rdwr ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    fprintf(stderr, "%s: cannot open\n", file);
    return 1;
  }
  int rc = 0;
  if (!strcmp(op, "get-str")) {
    static char buf[1 << 16];
    rc = xd_h5_attr_read_str(f, name, buf, sizeof buf) != 0;
    if (!rc) fputs(buf, stdout);
  } else if (argc == 5 && !strcmp(op, "set-int")) {
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    int64_t v = strtoll(argv[4], NULL, 10);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    rc = a < 0 || H5Awrite(a, H5T_NATIVE_INT64, &v) < 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
  } else if (argc == 5 && !strcmp(op, "set-rows")) {
    const char *sets[] = {"images", "labels", "paths"};
    for (int i = 0; i < 3 && rc == 0; i++) {
      char path[256];
      snprintf(path, sizeof path, "/%s/%s", name, sets[i]);
      hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
      if (d < 0) {
        rc = 1;
        break;
      }
      hid_t sp = H5Dget_space(d);
      hsize_t dims[3] = {0, 0, 0};
      int rank = H5Sget_simple_extent_dims(sp, dims, NULL);
      H5Sclose(sp);
      dims[0] = (hsize_t)strtoull(argv[4], NULL, 10);
      rc = rank < 1 || H5Dset_extent(d, dims) < 0;
      H5Dclose(d);
    }
  } else if (argc == 5 && !strcmp(op, "set-str")) {
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    rc = xd_h5_attr_write_str(f, name, argv[4]) != 0;
  } else {
    rc = 2;
  }
  if (H5Fclose(f) < 0) rc = 1;
  if (rc) fprintf(stderr, "%s: %s %s failed\n", file, op, name);
  return rc;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strncmp(argv[1], "set-", 4)) return tool(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "get-str")) return tool(argc, argv);
  if (argc < 3) {
    fprintf(stderr, "usage: test_rel_train_unit FIXTURES WORKDIR\n");
    return 2;
  }
  char dir[2048], run[2300], p[2400];
  snprintf(dir, sizeof dir, "%s", argv[2]);
  xd_err e = {{0}};
  CHECK(xd_mkdir_p(dir, &e) == 0);
  snprintf(run, sizeof run, "%s/run%ld", dir, (long)getpid());

  /* the lock: creates the folder, names its holder, excludes a second holder (flock locks belong to the
   * open file description, so a second open in this process is refused like another process would be) */
  int fd = xd_run_lock(run, &e);
  CHECK_MSG(fd >= 0, "%s", e.msg);
  snprintf(p, sizeof p, "%s/.lock", run);
  FILE *lf = fopen(p, "r");
  char who[256] = "";
  if (lf) {
    if (!fgets(who, sizeof who, lf)) who[0] = 0;
    fclose(lf);
  }
  char want[64];
  snprintf(want, sizeof want, "pid %ld on host ", (long)getpid());
  CHECK_MSG(!strncmp(who, want, strlen(want)), "lock file says '%s'", who);
  int fd2 = xd_run_lock(run, &e);
  CHECK(fd2 < 0);
  CHECK_MSG(strstr(e.msg, "run folder is in use by another training (pid ") && strstr(e.msg, run),
            "message: %s", e.msg);
  CHECK_MSG(strstr(e.msg, want) != NULL, "message does not name the holder: %s", e.msg);
  xd_run_unlock(fd, run, 0);
  fd = xd_run_lock(run, &e);
  CHECK_MSG(fd >= 0, "lock not free after unlock: %s", e.msg);
  xd_run_unlock(fd, run, 0);

  /* unlock with remove: the lock file goes, the next lock makes a new one */
  fd = xd_run_lock(run, &e);
  CHECK(fd >= 0);
  xd_run_unlock(fd, run, 1);
  snprintf(p, sizeof p, "%s/.lock", run);
  CHECK(!xd_file_exists(p));
  fd = xd_run_lock(run, &e);
  CHECK(fd >= 0 && xd_file_exists(p));
  xd_run_unlock(fd, run, 0);

  /* a holder killed with SIGKILL leaves no stale lock */
  int pipefd[2];
  CHECK(pipe(pipefd) == 0);
  pid_t child = fork();
  if (child == 0) {
    xd_err ce;
    int cfd = xd_run_lock(run, &ce);
    char c = cfd >= 0 ? 'y' : 'n';
    if (write(pipefd[1], &c, 1) != 1) _exit(3);
    for (;;) pause();
  }
  char c = 0;
  CHECK(read(pipefd[0], &c, 1) == 1 && c == 'y');
  CHECK(xd_run_lock(run, &e) < 0 && strstr(e.msg, "in use"));
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  fd = xd_run_lock(run, &e);
  CHECK_MSG(fd >= 0, "lock of a killed holder is stale: %s", e.msg);
  xd_run_unlock(fd, run, 0);
  close(pipefd[0]);
  close(pipefd[1]);

  /* a path that is a file, and a folder that cannot be created: the reason, no crash */
  snprintf(p, sizeof p, "%s/afile", dir);
  write_file(p, "x");
  CHECK(xd_run_lock(p, &e) < 0 && strstr(e.msg, "not a directory"));
  snprintf(p, sizeof p, "%s/afile/sub", dir);
  CHECK(xd_run_lock(p, &e) < 0 && strstr(e.msg, "afile"));

  /* what the folder holds */
  xd_run_files rf;
  CHECK(xd_run_inspect(run, &rf, &e) == 0 && !rf.last && !rf.best && rf.csv_rows == 0);
  snprintf(p, sizeof p, "%s/metrics.csv", run);
  write_file(p, "epoch,train_loss\n");
  CHECK(xd_run_inspect(run, &rf, &e) == 0 && rf.csv_rows == 0);
  write_file(p, "epoch,train_loss\n1,0.5\n2,0.4\n");
  CHECK(xd_run_inspect(run, &rf, &e) == 0 && rf.csv_rows == 2);
  write_file(p, "epoch,train_loss\n1,0.5\n2,0.4"); /* a row without its newline is still a row */
  CHECK(xd_run_inspect(run, &rf, &e) == 0 && rf.csv_rows == 2);
  snprintf(p, sizeof p, "%s/best.h5", run);
  write_file(p, "x");
  CHECK(xd_run_inspect(run, &rf, &e) == 0 && rf.best && !rf.last);
  snprintf(p, sizeof p, "%s/nope", dir);
  CHECK(xd_run_inspect(p, &rf, &e) == 0 && !rf.last && !rf.best && rf.csv_rows == 0);
  snprintf(p, sizeof p, "%s/metrics.csv", run);
  unlink(p);
  CHECK(mkfifo(p, 0600) == 0);
  CHECK(xd_run_inspect(run, &rf, &e) < 0 && strstr(e.msg, "not a regular file"));
  unlink(p);

  /* stale temporaries: other writers' go (the lock says they are gone), ours and other names stay */
  const char *names[] = {"last.h5.tmp.999999", "best.h5.tmp.12", "metrics.csv.tmp.77", "last.h5.tmp.x1",
                         "last.h5.tmp.", "other.tmp.5", "last.h5"};
  int stale = 3;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", run, names[i]);
    write_file(p, "x");
  }
  char mine[2400];
  snprintf(mine, sizeof mine, "%s/last.h5.tmp.%ld", run, (long)getpid());
  write_file(mine, "x");
  CHECK(xd_run_clean_tmp(run) == stale);
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", run, names[i]);
    CHECK_MSG(xd_file_exists(p) == ((int)i >= stale), "%s", names[i]);
  }
  CHECK(xd_file_exists(mine));

  /* stored settings: only from a checkpoint */
  snprintf(p, sizeof p, "%s/last.h5", run);
  char cfg[8192];
  CHECK(xd_run_read_config(p, cfg, sizeof cfg, &e) < 0 && strstr(e.msg, "last.h5"));
  snprintf(p, sizeof p, "%s/missing.h5", run);
  CHECK(xd_run_read_config(p, cfg, sizeof cfg, &e) < 0 && strstr(e.msg, "missing.h5"));
  return check_done("rel_train_unit");
}
