/* Replays inputs through a fuzz target without libFuzzer (the ordinary gcc builds, ASan included):
 * replay_<target> DIR_OR_FILE... runs LLVMFuzzerTestOneInput on every file, in name order. The seed
 * corpus and every input that once crashed (tests/fuzz/regress/<target>/) are replayed by ctest. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return -1;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
  size_t got = b ? fread(b, 1, (size_t)n, f) : 0;
  fclose(f);
  if (!b || got != (size_t)n) {
    free(b);
    fprintf(stderr, "replay: cannot read %s\n", path);
    return -1;
  }
  LLVMFuzzerTestOneInput(b, (size_t)n);
  free(b);
  return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  LLVMFuzzerInitialize(&argc, &argv);
  int files = 0, errors = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) continue; /* a regress folder that does not exist yet */
    if (!S_ISDIR(st.st_mode)) {
      errors += run_file(argv[i]) != 0;
      files++;
      continue;
    }
    DIR *dir = opendir(argv[i]);
    if (!dir) continue;
    char **names = NULL;
    size_t nn = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
      if (de->d_name[0] == '.') continue;
      names = realloc(names, (nn + 1) * sizeof *names);
      names[nn++] = strdup(de->d_name);
    }
    closedir(dir);
    qsort(names, nn, sizeof *names, by_name);
    for (size_t k = 0; k < nn; k++) {
      char p[4096];
      snprintf(p, sizeof p, "%s/%s", argv[i], names[k]);
      errors += run_file(p) != 0;
      files++;
      free(names[k]);
    }
    free(names);
  }
  printf("replay: %d inputs, %d unreadable\n", files, errors);
  return errors || files == 0 ? 1 : 0;
}
