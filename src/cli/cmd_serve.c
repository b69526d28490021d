/* xray-dp serve: the HTTP server (src/serve.c, include/serve.h) from the command line: options, the
 * checkpoint's validation figures for the page, signals (SIGTERM/SIGINT drain and exit 0). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "dataset.h"
#include "ensemble.h"
#include "metrics.h"
#include "serve.h"

static const char *HELP =
    "usage: xray-dp serve --ckpt C.h5 [--host 127.0.0.1] [--port 8080] [--threads N] [--queue N]\n"
    "                     [--max-upload-mb M] [--timeout-s S] [--token-file F] [--insecure]\n"
    "                     [--threshold auto|T] [--val-data V.h5 | --no-val] [--access-log] [--mem-limit SIZE]\n"
    "\n"
    "Serves the checkpoint's predictions over HTTP (libmicrohttpd): a web page and a JSON API. The\n"
    "probability is bitwise the one `xray-dp predict --ckpt C.h5 IMAGE` prints for the same file (same\n"
    "decode, resize and inference code). Endpoints (every other path is 404; no file is served from disk):\n"
    "  GET  /            the page: drop or pick an X-ray, see it with its Grad-CAM heat map, the probability\n"
    "                    against the threshold, the checkpoint's validation confusion matrix\n"
    "  POST /v1/predict  the image's bytes (JPEG/PNG/BMP/GIF/PGM/PPM) or a multipart form with a file part;\n"
    "                    ?gradcam=1 adds the overlay as a base64 PNG. JSON: probability, label, threshold and\n"
    "                    its meaning, classes, model file and SHA-256, preprocessing, seconds\n"
    "                      curl --data-binary @xray.jpeg http://127.0.0.1:8080/v1/predict\n"
    "                      curl -F image=@xray.jpeg 'http://127.0.0.1:8080/v1/predict?gradcam=1'\n"
    "  GET  /v1/model    model, SHA-256, threshold, preprocessing, validation figures, limits\n"
    "  GET  /healthz     {\"status\": \"ok\"}\n"
    "  GET  /metrics     Prometheus text format: requests by handler and status, latency histogram,\n"
    "                    images processed, queue length\n"
    "Errors are JSON {\"error\": \"...\", \"status\": N}: 400 not an image / corrupt / empty (the reason named),\n"
    "401 token, 404 unknown path, 405 wrong method, 413 upload over --max-upload-mb, 503 queue full or\n"
    "waited past --timeout-s (Retry-After: 1), 500 anything else.\n"
    "  --ckpt C.h5         the checkpoint (loaded once per worker)\n"
    "  --host H            address to bind (default 127.0.0.1). A host that is not loopback needs\n"
    "                      --token-file, or --insecure to serve without one\n"
    "  --port P            default 8080; 0 picks a free port. The first line on stdout gives the address:\n"
    "                      \"xray-dp serve: listening on http://127.0.0.1:8080/ ...\"\n"
    "  --threads N         workers, each with its own copy of the model (default 2, at most 256)\n"
    "  --queue N           predictions that may wait for a worker (default 32); more: 503\n"
    "  --max-upload-mb M   largest request body in MiB (default 16); more: 413\n"
    "  --timeout-s S       a connection idle for S seconds is closed, a prediction that waited S seconds for\n"
    "                      a worker gets 503, and a shutdown waits at most S seconds (default 30)\n"
    "  --token-file F      a file holding one token (its first line): requests to /metrics and /v1/... from\n"
    "                      other machines need \"Authorization: Bearer TOKEN\"; a wrong token is refused from\n"
    "                      anywhere; / and /healthz stay open (the page asks for the token when needed)\n"
    "  --insecure          allow a non-loopback --host without --token-file\n"
    "  --threshold auto|T  the operating point: auto (default) = the checkpoint's, chosen on validation\n"
    "                      for >= 95% sensitivity; or a number in [0, 1]\n"
    "  --val-data V.h5     score V.h5's val split at start for the page's confusion matrix (default: the\n"
    "                      dataset the checkpoint was trained on, when that file is there and can be\n"
    "                      scored; else the page says why there are no figures)\n"
    "  --no-val            do not compute validation figures\n"
    "  --access-log        one line per request on stderr (peer, method, path, status, seconds)\n"
    ARG_MEM_LIMIT_HELP
    "SIGTERM or SIGINT: stop accepting connections, answer the requests in flight (queued ones included),\n"
    "exit 0. Memory is bounded: at most threads + queue + 32 connections, each buffering at most\n"
    "--max-upload-mb, plus one decoded image per worker.\n"
    "Exit status: 0 after a signal and a complete drain, 2 bad usage, 1 any other error (one line on\n"
    "stderr naming the file: checkpoint, token file, address in use, requests left unanswered).\n";

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static void log_stderr(void *ctx, const char *line) {
  (void)ctx;
  pthread_mutex_lock(&log_mu);
  fprintf(stderr, "xray-dp serve: %s\n", line);
  pthread_mutex_unlock(&log_mu);
}

static void err_line(const char *msg) {
  char m[XD_ERR_MAX];
  snprintf(m, sizeof m, "%s", msg[0] ? msg : "unknown error");
  xd_msg_oneline(m);
  fprintf(stderr, "xray-dp serve: %s\n", m);
}

/* The token: the file's first line without trailing blanks; printable ASCII without spaces. */
static int read_token(const char *path, char *tok, size_t n, xd_err *e) {
  XD_TRY(xd_check_regular(path, e));
  FILE *f = fopen(path, "r");
  if (!f) return xd_fail(e, "%s: cannot open: %s", path, strerror(errno));
  if (!fgets(tok, (int)n, f)) tok[0] = 0;
  int err = ferror(f);
  fclose(f);
  if (err) return xd_fail(e, "%s: cannot read", path);
  size_t L = strlen(tok);
  if (L == n - 1 && tok[L - 1] != '\n') return xd_fail(e, "%s: the token is longer than %zu bytes", path, n - 2);
  while (L && (tok[L - 1] == '\n' || tok[L - 1] == '\r' || tok[L - 1] == ' ' || tok[L - 1] == '\t')) tok[--L] = 0;
  if (L == 0) return xd_fail(e, "%s: the token file is empty", path);
  if (L < 16) return xd_fail(e, "%s: the token has %zu characters; use at least 16 (e.g. openssl rand -hex 32)", path, L);
  for (size_t i = 0; i < L; i++)
    if (tok[i] <= ' ' || tok[i] > '~')
      return xd_fail(e, "%s: the token must be printable ASCII without spaces (character %zu is not)", path, i + 1);
  return 0;
}

/* The served threshold's confusion matrix on a val split. 1 filled, 0 not available (note says why),
 * -1 error. */
static int validation(const char *ckpt, const char *val_data, int explicit_data, double thr_opt,
                      xd_serve_validation *v, xd_err *e) {
  cli_ensemble E;
  memset(&E, 0, sizeof E);
  E.k = 1;
  E.path[0] = ckpt;
  int rc = cli_ensemble_load(&E, e);
  const char *data = val_data;
  if (rc == 0 && !data) {
    data = E.meta[0].data[0] ? E.meta[0].data : NULL;
    if (!data || !xd_file_exists(data)) {
      snprintf(v->note, sizeof v->note,
               "No validation figures: the checkpoint does not store them and its training data (%.800s) is not "
               "here; start the server with --val-data V.h5 to show them.",
               data ? data : "not recorded");
      cli_ensemble_free(&E);
      return 0;
    }
  }
  xd_dataset *ds = NULL;
  float *p = NULL;
  uint8_t *y = NULL;
  int has = rc == 0 ? xd_dataset_has_split(data, "val", e) : -1;
  if (has < 0) rc = -1;
  if (rc == 0 && has == 0) {
    if (explicit_data) rc = xd_fail(e, "%s: no val split (--val-data)", data);
    else snprintf(v->note, sizeof v->note, "No validation figures: %.900s (the training data) has no val split.", data);
    cli_ensemble_free(&E);
    return rc;
  }
  if (rc == 0) rc = cli_ensemble_workspaces(&E, 64, e);
  if (rc == 0) rc = xd_dataset_open(&ds, data, "val", e);
  const xd_dataset_info *info = rc == 0 ? xd_dataset_get_info(ds) : NULL;
  if (rc == 0) rc = cli_ensemble_check_data(&E, info, data, e);
  if (rc == 0 && info->nclasses != 2) rc = xd_fail(e, "%s: confusion figures need 2 classes, the file has %d", data, info->nclasses);
  if (rc == 0 && info->n == 0) rc = xd_fail(e, "%s: the val split is empty", data);
  if (rc == 0) rc = xd_mem_check(xd_mul_sat((uint64_t)info->n, sizeof *p + 1), "the val probabilities", e);
  if (rc == 0) {
    p = malloc((size_t)info->n * sizeof *p);
    y = malloc((size_t)info->n);
    if (!p || !y) rc = xd_fail(e, "%s: out of memory for the val probabilities", data);
  }
  if (rc == 0) rc = cli_ensemble_score_range(&E, ds, 0, info->n, 0, p, y, e);
  if (rc == 0) {
    double thr = thr_opt >= 0 ? thr_opt : E.st[0].threshold;
    xd_binary_metrics m;
    xd_metrics_binary(info->n, p, y, thr, &m);
    v->have = 1;
    v->tn = m.confusion[0][0];
    v->fp = m.confusion[0][1];
    v->fn = m.confusion[1][0];
    v->tp = m.confusion[1][1];
    snprintf(v->source, sizeof v->source, "val split of %.900s (%lld images), at the threshold served", data,
             (long long)info->n);
  }
  free(p);
  free(y);
  if (ds) xd_dataset_close(ds);
  cli_ensemble_free(&E);
  if (rc != 0 && !explicit_data && data) { /* the recorded training data is only a default: say why, serve */
    char m[XD_ERR_MAX];
    snprintf(m, sizeof m, "%s", e->msg);
    xd_msg_oneline(m);
    snprintf(v->note, sizeof v->note, "No validation figures: the training data could not be scored (%.900s).", m);
    e->msg[0] = 0;
    return 0;
  }
  return rc;
}

int cmd_serve(int argc, char **argv) {
  const char *cmd = "serve", *ckpt = NULL, *host = "127.0.0.1", *token_file = NULL, *val_data = NULL;
  int64_t port = 8080, threads = 2, queue = 32;
  double max_mb = 16, timeout_s = 30, thr = -1;
  int insecure = 0, no_val = 0, access_log = 0;
  const char *v;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(HELP, stdout);
      return 0;
    }
    if (!strcmp(a, "--insecure")) insecure = 1;
    else if (!strcmp(a, "--no-val")) no_val = 1;
    else if (!strcmp(a, "--access-log")) access_log = 1;
    else if (!strcmp(a, "--ckpt") || !strcmp(a, "--host") || !strcmp(a, "--port") || !strcmp(a, "--threads") ||
             !strcmp(a, "--queue") || !strcmp(a, "--max-upload-mb") || !strcmp(a, "--timeout-s") ||
             !strcmp(a, "--token-file") || !strcmp(a, "--threshold") || !strcmp(a, "--val-data") ||
             !strcmp(a, "--mem-limit")) {
      if (!(v = arg_value(cmd, argc, argv, &i))) return 2;
      int bad = 0;
      if (!strcmp(a, "--ckpt")) ckpt = v;
      else if (!strcmp(a, "--host")) host = v;
      else if (!strcmp(a, "--port")) bad = arg_int(cmd, a, v, 0, 65535, &port);
      else if (!strcmp(a, "--threads")) bad = arg_int(cmd, a, v, 1, 256, &threads);
      else if (!strcmp(a, "--queue")) bad = arg_int(cmd, a, v, 0, 100000, &queue);
      else if (!strcmp(a, "--max-upload-mb")) bad = arg_double(cmd, a, v, 0.001, 4096, &max_mb);
      else if (!strcmp(a, "--timeout-s")) bad = arg_double(cmd, a, v, 0.01, 86400, &timeout_s);
      else if (!strcmp(a, "--token-file")) token_file = v;
      else if (!strcmp(a, "--val-data")) val_data = v;
      else if (!strcmp(a, "--mem-limit")) bad = arg_mem_limit(cmd, v);
      else if (strcmp(v, "auto") != 0) bad = arg_double(cmd, a, v, 0, 1, &thr);
      if (bad) return 2;
      if (!v[0] && (!strcmp(a, "--ckpt") || !strcmp(a, "--host") || !strcmp(a, "--token-file") ||
                    !strcmp(a, "--val-data"))) {
        fprintf(stderr, "xray-dp serve: %s: empty value\n", a);
        return 2;
      }
    } else {
      fprintf(stderr, "xray-dp serve: unknown %s '%s' (see xray-dp serve --help)\n",
              a[0] == '-' ? "option" : "argument", a);
      return 2;
    }
  }
  if (!ckpt) {
    fprintf(stderr, "xray-dp serve: needs --ckpt C.h5 (see xray-dp serve --help)\n");
    return 2;
  }
  if (no_val && val_data) {
    fprintf(stderr, "xray-dp serve: --no-val and --val-data contradict each other\n");
    return 2;
  }
  xd_err e = {{0}};
  int lb = xd_serve_host_loopback(host, &e);
  if (lb < 0) {
    err_line(e.msg);
    return 2;
  }
  if (!lb && !token_file && !insecure) {
    fprintf(stderr, "xray-dp serve: --host %s is reachable from other machines: give --token-file F (or --insecure "
                    "to serve without a token)\n", host);
    return 2;
  }
  char token[1024];
  if (token_file && read_token(token_file, token, sizeof token, &e) != 0) {
    err_line(e.msg);
    return 1;
  }
  xd_serve_opts o;
  memset(&o, 0, sizeof o);
  o.ckpt = ckpt;
  o.host = host;
  o.port = (int)port;
  o.threads = (int)threads;
  o.queue = (int)queue;
  o.max_upload = (uint64_t)(max_mb * 1024 * 1024);
  o.timeout_s = timeout_s;
  o.token = token_file ? token : NULL;
  o.threshold = thr;
  o.log = access_log ? log_stderr : NULL;
  const char *delay = getenv("XD_SERVE_TEST_DELAY_MS"); /* tests only: a slow worker, for 503 and drains */
  if (delay) o.test_delay_ms = atoi(delay);
  if (no_val) snprintf(o.val.note, sizeof o.val.note, "No validation figures: the server was started with --no-val.");
  else if (validation(ckpt, val_data, val_data != NULL, thr, &o.val, &e) != 0) {
    err_line(e.msg);
    return 1;
  }
  /* the signals are taken by sigwait below: blocked before any thread exists, so every thread inherits it */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  xd_server *s = NULL;
  if (xd_serve_start(&s, &o, &e) != 0) {
    err_line(e.msg);
    return 1;
  }
  const char *shown = host;
  printf("xray-dp serve: listening on http://%s%s%s:%d/ (%s, sha256 %.12s, %d worker%s, queue %d)\n",
         strchr(shown, ':') ? "[" : "", shown, strchr(shown, ':') ? "]" : "", xd_serve_port(s), ckpt,
         xd_serve_sha256(s), o.threads, o.threads > 1 ? "s" : "", o.queue);
  fflush(stdout);
  int sig = 0;
  while (sigwait(&sigs, &sig) != 0) {
  }
  printf("xray-dp serve: %s: no new connections; answering the requests in flight\n",
         sig == SIGINT ? "SIGINT" : "SIGTERM");
  fflush(stdout);
  int left = xd_serve_drain(s, timeout_s);
  xd_serve_free(s);
  if (left > 0) {
    fprintf(stderr, "xray-dp serve: %d request%s still unanswered after %g s (--timeout-s); stopped anyway\n", left,
            left > 1 ? "s were" : " was", timeout_s);
    return 1;
  }
  printf("xray-dp serve: stopped\n");
  fflush(stdout);
  return 0;
}
