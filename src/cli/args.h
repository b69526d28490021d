/* Option-value parsing for the subcommands: each returns 0, or prints
 * "xray-dp CMD: --opt: expected ..., got 'v'" and returns -1 (the caller exits 2). */
#ifndef XD_CLI_ARGS_H
#define XD_CLI_ARGS_H
#include <stdint.h>

/* Returns the value of option argv[*i] (advancing *i), or NULL after printing "needs a value". */
const char *arg_value(const char *cmd, int argc, char **argv, int *i);
int arg_int(const char *cmd, const char *opt, const char *v, int64_t lo, int64_t hi, int64_t *out);
int arg_double(const char *cmd, const char *opt, const char *v, double lo, double hi, double *out);
/* The command line as one shell-quoted string (for logs and checkpoints). */
void arg_join(int argc, char **argv, char *buf, int n);

#endif
