/* `xray-dp serve`: a checkpoint's predictions over HTTP (libmicrohttpd), a JSON API and one embedded web
 * page. Library code: it reports through return values and the log sink it is given, never prints,
 * never installs signal handlers (the caller blocks SIGTERM/SIGINT, waits for one and calls
 * xd_serve_drain).
 *
 * Endpoints (any other path: 404; nothing maps to the file system):
 *   GET  /            the page (embedded, self-contained: no CDN, no other file)
 *   GET  /healthz     {"status": "ok"} (no token needed: liveness probes)
 *   GET  /metrics     Prometheus text format 0.0.4
 *   GET  /v1/model    the model, its checkpoint's SHA-256, threshold, preprocessing, validation figures
 *   POST /v1/predict  the image's bytes (JPEG/PNG/BMP/GIF/PGM/PPM, told by signature), or a
 *                     multipart/form-data form whose first file field is the image; ?gradcam=1 (or a form
 *                     field gradcam=1) adds the Grad-CAM overlay as base64 PNG
 * Wrong method on a known path: 405. Errors are JSON: {"error": "one line naming the problem", "status": N}.
 *
 * Threads: one HTTP thread (libmicrohttpd's internal poll loop) reads requests and writes responses;
 * `threads` workers each own a model loaded from the checkpoint and a batch-1 workspace, and run decode,
 * inference and Grad-CAM for one request at a time (one OpenMP thread each). A finished upload waits in a
 * FIFO of at most `queue` requests (503 when full); a request that waited past `timeout_s` gets 503
 * instead of being run. Memory is bounded: connections are capped at threads + queue + 32, each holding
 * at most max_upload bytes. */
#ifndef XD_SERVE_H
#define XD_SERVE_H
#include <stdint.h>

#include "common.h"

/* One line without a newline (access log, libmicrohttpd's own warnings). Called from server threads,
 * possibly at the same time: the sink serialises if it needs to. */
typedef void (*xd_serve_log_fn)(void *ctx, const char *line);

/* The checkpoint's validation confusion matrix at its threshold, shown on the page and in /v1/model;
 * computed by the caller (it needs a dataset). */
typedef struct xd_serve_validation {
  int have;                /* 1: the counts below are filled */
  int64_t tn, fp, fn, tp;  /* at the threshold served */
  char source[1024];       /* "val split of d.h5 (600 images)" */
  char note[1024];         /* have = 0: why there are none */
} xd_serve_validation;

typedef struct xd_serve_opts {
  const char *ckpt;        /* one checkpoint (loaded once per worker) */
  const char *host;        /* name or address to bind (default "127.0.0.1") */
  int port;                /* 0: any free port (xd_serve_port tells which) */
  int threads;             /* workers >= 1 */
  int queue;               /* requests waiting for a worker, >= 0 */
  uint64_t max_upload;     /* bytes of one request body; more: 413 */
  double timeout_s;        /* per request: idle connection time-out, and the longest wait for a worker */
  const char *token;       /* NULL: none; else required as "Authorization: Bearer TOKEN" from non-loopback
                              peers (a wrong token is refused from anywhere) for /metrics and /v1/... */
  double threshold;        /* < 0: the checkpoint's stored one */
  xd_serve_validation val;
  int test_delay_ms;       /* tests only: each worker sleeps this long before a job (0 = off) */
  xd_serve_log_fn log;     /* NULL: silent */
  void *log_ctx;
} xd_serve_opts;

typedef struct xd_server xd_server;

/* Hashes the checkpoint, loads it `threads` times (each load checked like any other), binds host:port
 * and starts the HTTP thread and the workers. -1 with one line: "C.h5: ...", "127.0.0.1:8080: cannot
 * bind: Address already in use", ... */
int xd_serve_start(xd_server **out, const xd_serve_opts *o, xd_err *e);
int xd_serve_port(const xd_server *s);
const char *xd_serve_sha256(const xd_server *s); /* 64 hex digits */
/* Stops accepting connections, waits up to wait_s for the requests in flight (queued ones included) to be
 * answered, then stops everything. Returns how many requests were still unanswered (0: clean drain). */
int xd_serve_drain(xd_server *s, double wait_s);
void xd_serve_free(xd_server *s);

/* 1 if every address `host` resolves to is a loopback one (127.0.0.0/8, ::1), 0 if not, -1 (e filled)
 * if it does not resolve. */
int xd_serve_host_loopback(const char *host, xd_err *e);

/* The embedded page (GET /), NUL-terminated. */
extern const char xd_serve_page[];

#endif
