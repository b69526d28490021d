/* xray-dp serve: the HTTP server (src/serve.c) from the command line. */
#include <stdio.h>

#include "cli.h"

int cmd_serve(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "xray-dp serve: not built yet\n");
  return 1;
}
