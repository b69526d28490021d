/* Option-value parsing for the subcommands: each returns 0, or prints
 * "xray-dp CMD: --opt: expected ..., got 'v'" and returns -1 (the caller exits 2). */
#ifndef XD_CLI_ARGS_H
#define XD_CLI_ARGS_H
#include <stdint.h>

/* Returns the value of option argv[*i] (advancing *i), or NULL after printing "needs a value". */
const char *arg_value(const char *cmd, int argc, char **argv, int *i);
int arg_int(const char *cmd, const char *opt, const char *v, int64_t lo, int64_t hi, int64_t *out);
int arg_double(const char *cmd, const char *opt, const char *v, double lo, double hi, double *out);
/* --mem-limit SIZE (K/M/G/T suffixes, powers of 1024): sets the process's memory budget (common.h). */
int arg_mem_limit(const char *cmd, const char *v);
#define ARG_MEM_LIMIT_HELP \
  "  --mem-limit SIZE  refuse work needing more memory than SIZE (e.g. 8G; default 90% of RAM)\n"
/* The command line as one shell-quoted string (for logs and checkpoints). */
void arg_join(int argc, char **argv, char *buf, int n);

#endif
