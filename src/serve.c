/* xray-dp serve (include/serve.h): libmicrohttpd's poll thread reads requests; finished uploads of
 * /v1/predict go to a bounded FIFO and their connection is suspended; workers (each with its own model
 * and workspace) decode, infer and draw, then resume the connection, and the poll thread sends the
 * answer. The probability is xd_infer_ensemble's for one model without TTA on the pixels of
 * xd_image_decode_gray_mem: the path `predict` takes for a file. */
#include "serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <nettle/base64.h>
#include <nettle/memops.h>
#include <nettle/sha2.h>

#include "checkpoint.h"
#include "image.h"
#include "infer.h"
#include "metrics.h"
#include "model.h"
#include "render.h"

/* ---- routes and metrics ---- */

enum { R_PAGE, R_HEALTH, R_METRICS, R_MODEL, R_PREDICT, R_OTHER, NROUTES };
static const char *const ROUTE_NAME[NROUTES] = {"page", "healthz", "metrics", "model", "predict", "other"};
static const int CODES[] = {200, 400, 401, 404, 405, 413, 500, 503};
#define NCODES (int)(sizeof CODES / sizeof CODES[0])
static const double BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS (int)(sizeof BUCKETS / sizeof BUCKETS[0])

typedef struct req req;

typedef struct worker {
  struct xd_server *s;
  pthread_t tid;
  int started;
  xd_model m;
  xd_workspace ws;
  int have_m, have_ws;
} worker;

struct xd_server {
  xd_serve_opts o;
  char ckpt_file[256]; /* basename, for the JSON */
  char sha256[65];
  char model_source[256];
  char threshold_meaning[512];
  char preprocessing[512];
  char model_json[8192]; /* GET /v1/model, also the "model" member of predictions */
  char classes[2][XD_CLASS_NAME_MAX];
  double threshold;
  int H, W, D;
  struct MHD_Daemon *d;
  int listen_fd;
  worker *w;
  int nw;
  pthread_mutex_t mu;
  pthread_cond_t cv_work, cv_idle;
  req *qhead, *qtail;
  int qlen, busy, inflight, stop, draining;
  /* metrics (under mu) */
  uint64_t count[NROUTES][NCODES + 1];
  uint64_t hist[NROUTES][NBUCKETS + 1];
  double lat_sum[NROUTES];
  uint64_t lat_n[NROUTES];
  uint64_t images, gradcams, rejected_full, timed_out;
  pthread_mutex_t log_mu;
};

struct req {
  xd_server *s;
  struct MHD_Connection *conn;
  int route;
  double t0;
  char method[8];
  char path[96];
  char peer[64];
  struct MHD_PostProcessor *pp;
  int multipart, got_file, file_done, too_large, gradcam, responded;
  char filename[128];
  char file_field[64];
  unsigned char *body;
  size_t len, cap;
  /* the answer, made by a worker */
  int done, status;
  char *resp;
  size_t resp_len;
  req *next;
};

static void slog(xd_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void slog(xd_server *s, const char *fmt, ...) {
  if (!s->o.log) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  xd_msg_oneline(line);
  s->o.log(s->o.log_ctx, line);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap) {
  xd_server *s = cls;
  if (!s->o.log) return;
  char line[1024];
  int n = snprintf(line, sizeof line, "libmicrohttpd: ");
  vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  size_t L = strlen(line);
  while (L && (line[L - 1] == '\n' || line[L - 1] == '\r')) line[--L] = 0;
  xd_msg_oneline(line);
  s->o.log(s->o.log_ctx, line);
}

/* ---- responses ---- */

/* A JSON document built in memory with the library's escaping. */
typedef struct {
  char *buf;
  size_t len;
  FILE *f;
} jbuf;

static int jopen(jbuf *j) {
  j->buf = NULL;
  j->len = 0;
  j->f = open_memstream(&j->buf, &j->len);
  return j->f ? 0 : -1;
}
/* Closes the stream: 0 with j->buf owned by the caller, -1 (nothing to free) when it failed. */
static int jclose(jbuf *j) {
  int bad = ferror(j->f);
  if (fclose(j->f) != 0) bad = 1;
  j->f = NULL;
  if (bad) {
    free(j->buf);
    j->buf = NULL;
    return -1;
  }
  return 0;
}

/* {"error": MSG, "status": N} into r->resp (a static fallback when memory is short). */
static void set_error(req *r, int status, const char *msg) {
  jbuf j;
  free(r->resp);
  r->resp = NULL;
  r->status = status;
  if (jopen(&j) == 0) {
    fputs("{\"error\": ", j.f);
    xd_json_string(j.f, msg);
    fprintf(j.f, ", \"status\": %d}\n", status);
    if (jclose(&j) == 0) {
      r->resp = j.buf;
      r->resp_len = j.len;
    }
  }
}

static enum MHD_Result send_buf(req *r, int status, const char *ctype, const void *data, size_t len,
                                enum MHD_ResponseMemoryMode mode) {
  xd_server *s = r->s;
  struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)data, mode);
  if (!resp) {
    if (mode == MHD_RESPMEM_MUST_FREE) free((void *)data);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type", ctype);
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  if (r->route == R_PAGE && status == 200) {
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                            "img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'");
  } else {
    MHD_add_response_header(resp, "Cache-Control", "no-store");
  }
  if (status == 405)
    MHD_add_response_header(resp, "Allow", r->route == R_PREDICT ? "POST" : "GET, HEAD");
  if (status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
  if (status == 503) MHD_add_response_header(resp, "Retry-After", "1");
  pthread_mutex_lock(&s->mu);
  int draining = s->draining;
  pthread_mutex_unlock(&s->mu);
  if (draining) MHD_add_response_header(resp, "Connection", "close");
  r->status = status;
  r->responded = 1;
  enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* Sends r->resp (JSON), or a fixed error body when composing it failed. */
static enum MHD_Result send_json(req *r) {
  static const char oom[] = "{\"error\": \"out of memory composing the answer\", \"status\": 500}\n";
  if (!r->resp) return send_buf(r, 500, "application/json", oom, sizeof oom - 1, MHD_RESPMEM_PERSISTENT);
  char *b = r->resp;
  r->resp = NULL;
  return send_buf(r, r->status, "application/json", b, r->resp_len, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result send_error(req *r, int status, const char *msg) {
  set_error(r, status, msg);
  return send_json(r);
}

/* ---- the model's description, made once ---- */

static int sha256_file(const char *path, char hex[65], xd_err *e) {
  FILE *f = fopen(path, "rb");
  if (!f) return xd_fail(e, "%s: cannot open: %s", path, strerror(errno));
  struct sha256_ctx c;
  sha256_init(&c);
  unsigned char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(&c, n, buf);
  int err = ferror(f);
  int saved = errno;
  fclose(f);
  if (err) return xd_fail(e, "%s: cannot read: %s", path, strerror(saved));
  uint8_t dig[SHA256_DIGEST_SIZE];
  sha256_digest(&c, SHA256_DIGEST_SIZE, dig);
  for (int i = 0; i < SHA256_DIGEST_SIZE; i++) snprintf(hex + 2 * i, 3, "%02x", dig[i]);
  return 0;
}

static int make_model_json(xd_server *s, const xd_model *m) {
  jbuf j;
  if (jopen(&j)) return -1;
  const xd_serve_validation *v = &s->o.val;
  fputs("{\"model\": {\"file\": ", j.f);
  xd_json_string(j.f, s->ckpt_file);
  fputs(", \"source\": ", j.f);
  xd_json_string(j.f, s->model_source);
  fprintf(j.f, ", \"sha256\": \"%s\", \"input\": \"%dx%dx%d\", \"parameters\": %zu}, \"classes\": [", s->sha256,
          m->in_c, m->in_h, m->in_w, m->nparams);
  xd_json_string(j.f, s->classes[0]);
  fputs(", ", j.f);
  xd_json_string(j.f, s->classes[1]);
  fprintf(j.f, "], \"threshold\": %.9g, \"threshold_meaning\": ", s->threshold);
  xd_json_string(j.f, s->threshold_meaning);
  fputs(", \"preprocessing\": ", j.f);
  xd_json_string(j.f, s->preprocessing);
  if (v->have) {
    double sens = v->tp + v->fn ? (double)v->tp / (double)(v->tp + v->fn) : NAN;
    double spec = v->tn + v->fp ? (double)v->tn / (double)(v->tn + v->fp) : NAN;
    fprintf(j.f, ", \"validation\": {\"tn\": %lld, \"fp\": %lld, \"fn\": %lld, \"tp\": %lld, \"sensitivity\": ",
            (long long)v->tn, (long long)v->fp, (long long)v->fn, (long long)v->tp);
    xd_json_number(j.f, sens);
    fputs(", \"specificity\": ", j.f);
    xd_json_number(j.f, spec);
    fputs(", \"source\": ", j.f);
    xd_json_string(j.f, v->source);
    fputs("}", j.f);
  } else {
    fputs(", \"validation\": null, \"validation_note\": ", j.f);
    xd_json_string(j.f, v->note[0] ? v->note : "no validation figures were given to the server");
  }
  fprintf(j.f, ", \"limits\": {\"max_upload_bytes\": %llu, \"timeout_s\": %g, \"workers\": %d, \"queue\": %d}",
          (unsigned long long)s->o.max_upload, s->o.timeout_s, s->o.threads, s->o.queue);
  fputs(", \"notice\": \"Research software, not a medical device: not for diagnosis or treatment decisions.\"}",
        j.f);
  if (jclose(&j)) return -1;
  int fits = j.len < sizeof s->model_json;
  if (fits) memcpy(s->model_json, j.buf, j.len + 1);
  free(j.buf);
  return fits ? 0 : -1;
}

/* ---- the work of one prediction (a worker thread) ---- */

static double now(void) { return xd_now(); }

static void predict(worker *w, req *r) {
  xd_server *s = w->s;
  xd_err e = {{0}};
  const char *name = r->filename[0] ? r->filename : "upload";
  const int H = s->H, W = s->W;
  uint8_t *px = malloc((size_t)H * W);
  if (!px) {
    set_error(r, 500, "out of memory");
    return;
  }
  if (xd_image_decode_gray_mem(r->body, r->len, name, H, px, &e) != 0) {
    set_error(r, strstr(e.msg, "out of memory") ? 500 : 400, e.msg);
    free(px);
    return;
  }
  float p = NAN;
  if (xd_infer_ensemble(1, &w->m, &w->ws, 1, px, 0, &p, &e) != 0) {
    set_error(r, 500, e.msg);
    free(px);
    return;
  }
  if (!(p >= 0 && p <= 1)) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s gives the probability %g, not a number in [0, 1] (non-finite weights or "
             "activations)", name, s->ckpt_file, isnan(p) ? NAN : (double)p);
    set_error(r, 500, msg);
    free(px);
    return;
  }
  char *b64 = NULL;
  if (r->gradcam) {
    unsigned char *png = NULL;
    size_t plen = 0;
    /* the same picture as predict --gradcam for the same image, checkpoint and threshold: the map for the
     * called class, at the upload's aspect ratio, with the panel */
    xd_gradcam_info gi = {p, s->threshold, s->classes[1], s->classes[0], -1};
    int rc = xd_gradcam_png(&w->m, &w->ws, s->ckpt_file, px, r->body, r->len, name, &gi, &png, &plen, &e);
    if (rc == 0) {
      b64 = malloc(BASE64_ENCODE_RAW_LENGTH(plen) + 1);
      if (!b64) rc = xd_fail(&e, "out of memory for the Grad-CAM overlay");
      else {
        base64_encode_raw(b64, plen, png);
        b64[BASE64_ENCODE_RAW_LENGTH(plen)] = 0;
      }
    }
    free(png);
    if (rc != 0) {
      set_error(r, strstr(e.msg, "no conv layer") ? 400 : 500, e.msg);
      free(px);
      return;
    }
  }
  free(px);
  jbuf j;
  if (jopen(&j) == 0) {
    fprintf(j.f, "{\"probability\": %.9g, \"label\": ", p); /* %.9g: what predict prints */
    xd_json_string(j.f, p >= s->threshold ? s->classes[1] : s->classes[0]);
    fprintf(j.f, ", \"positive\": %s, \"threshold\": %.9g, \"threshold_meaning\": ",
            p >= s->threshold ? "true" : "false", s->threshold);
    xd_json_string(j.f, s->threshold_meaning);
    fputs(", \"classes\": [", j.f);
    xd_json_string(j.f, s->classes[0]);
    fputs(", ", j.f);
    xd_json_string(j.f, s->classes[1]);
    fputs("], \"model\": {\"file\": ", j.f);
    xd_json_string(j.f, s->ckpt_file);
    fputs(", \"source\": ", j.f);
    xd_json_string(j.f, s->model_source);
    fprintf(j.f, ", \"sha256\": \"%s\"}, \"preprocessing\": ", s->sha256);
    xd_json_string(j.f, s->preprocessing);
    fprintf(j.f, ", \"seconds\": %.6f", now() - r->t0);
    if (b64) fprintf(j.f, ", \"gradcam_png_base64\": \"%s\"", b64);
    fputs("}\n", j.f);
    if (jclose(&j) == 0) {
      free(r->resp);
      r->resp = j.buf;
      r->resp_len = j.len;
      r->status = 200;
    } else {
      set_error(r, 500, "out of memory composing the answer");
    }
  } else {
    set_error(r, 500, "out of memory composing the answer");
  }
  free(b64);
  pthread_mutex_lock(&s->mu);
  s->images++;
  if (r->gradcam) s->gradcams++;
  pthread_mutex_unlock(&s->mu);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  xd_server *s = w->s;
  omp_set_num_threads(1); /* batch 1 gives a sample-parallel layer nothing to split; workers are the parallelism */
  for (;;) {
    pthread_mutex_lock(&s->mu);
    while (!s->qhead && !s->stop) pthread_cond_wait(&s->cv_work, &s->mu);
    if (!s->qhead) { /* stop and nothing left: every queued request is answered before a worker leaves */
      pthread_mutex_unlock(&s->mu);
      break;
    }
    req *r = s->qhead;
    s->qhead = r->next;
    if (!s->qhead) s->qtail = NULL;
    s->qlen--;
    s->busy++;
    pthread_mutex_unlock(&s->mu);
    if (now() - r->t0 > s->o.timeout_s) {
      char msg[256];
      snprintf(msg, sizeof msg, "timed out: waited more than %g s for a worker (--timeout-s); try again",
               s->o.timeout_s);
      set_error(r, 503, msg);
      pthread_mutex_lock(&s->mu);
      s->timed_out++;
      pthread_mutex_unlock(&s->mu);
    } else {
      if (s->o.test_delay_ms > 0) {
        struct timespec ts = {s->o.test_delay_ms / 1000, (long)(s->o.test_delay_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
      }
      predict(w, r);
    }
    free(r->body); /* the upload is not needed any more: memory goes back before the answer is sent */
    r->body = NULL;
    r->len = r->cap = 0;
    pthread_mutex_lock(&s->mu);
    r->done = 1;
    s->busy--;
    pthread_mutex_unlock(&s->mu);
    MHD_resume_connection(r->conn);
  }
  return NULL;
}

/* ---- the HTTP side (libmicrohttpd's thread) ---- */

static int peer_is_loopback(struct MHD_Connection *c, char *peer, size_t n) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  snprintf(peer, n, "?");
  if (!ci || !ci->client_addr) return 0;
  const struct sockaddr *sa = ci->client_addr;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &a->sin_addr, peer, (socklen_t)n);
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &a->sin6_addr, peer, (socklen_t)n);
    if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) return 1;
    return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
  }
  return 0;
}

/* 0 allowed, else the status (401) with msg filled. A wrong token is refused from anywhere; no token is
 * fine from loopback. */
static int check_auth(xd_server *s, req *r, int loopback, char *msg, size_t n) {
  if (!s->o.token) return 0;
  const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  if (!h) {
    if (loopback) return 0;
    snprintf(msg, n, "this server needs \"Authorization: Bearer TOKEN\" from other machines (--token-file)");
    return 401;
  }
  size_t tl = strlen(s->o.token);
  if (strncasecmp(h, "Bearer ", 7) == 0 && strlen(h + 7) == tl && memeql_sec(h + 7, s->o.token, tl)) return 0;
  snprintf(msg, n, "wrong token in the Authorization header (expected \"Bearer TOKEN\" with --token-file's token)");
  return 401;
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                 const char *content_type, const char *transfer_encoding, const char *data,
                                 uint64_t off, size_t size) {
  req *r = cls;
  xd_server *s = r->s;
  if (!filename) { /* a plain field: only gradcam means something */
    if (key && !strcmp(key, "gradcam") && size >= 1 && data[0] == '1') r->gradcam = 1;
    return MHD_YES;
  }
  if (r->got_file && strcmp(r->file_field, key ? key : "")) {
    r->file_done = 1; /* a second file field: ignored */
    return MHD_YES;
  }
  if (!r->got_file) {
    r->got_file = 1;
    snprintf(r->file_field, sizeof r->file_field, "%s", key ? key : "");
    snprintf(r->filename, sizeof r->filename, "%s", filename[0] ? filename : "upload");
  }
  if (r->file_done || r->too_large || size == 0) return MHD_YES;
  if (r->len + size > s->o.max_upload) {
    r->too_large = 1;
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    return MHD_YES;
  }
  if (r->len + size > r->cap) {
    size_t nc = r->cap ? r->cap : 65536;
    while (nc < r->len + size) nc *= 2;
    if (nc > s->o.max_upload) nc = s->o.max_upload;
    unsigned char *b = realloc(r->body, nc);
    if (!b) return MHD_NO;
    r->body = b;
    r->cap = nc;
  }
  memcpy(r->body + r->len, data, size);
  r->len += size;
  return MHD_YES;
}

static int append_raw(req *r, const char *data, size_t size) {
  xd_server *s = r->s;
  if (r->too_large) return 0;
  if (r->len + size > s->o.max_upload) {
    r->too_large = 1;
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    return 0;
  }
  if (r->len + size > r->cap) {
    size_t nc = r->cap ? r->cap : 65536;
    while (nc < r->len + size) nc *= 2;
    if (nc > s->o.max_upload) nc = s->o.max_upload;
    unsigned char *b = realloc(r->body, nc);
    if (!b) return -1;
    r->body = b;
    r->cap = nc;
  }
  memcpy(r->body + r->len, data, size);
  r->len += size;
  return 0;
}

static void too_large_msg(xd_server *s, char *msg, size_t n) {
  snprintf(msg, n, "upload larger than the limit of %.1f MiB (--max-upload-mb)",
           (double)s->o.max_upload / (1024.0 * 1024.0));
}

static enum MHD_Result send_metrics(req *r);

/* URLs are matched as they come, never percent-decoded: "/%2e%2e/", "/%00" or "/v1%2fpredict" name no
 * route (libmicrohttpd's own unescaping turned "/%00" into "/"). Query values are not decoded either:
 * the only one read, gradcam, is "1" or "true". */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) { return strlen(s); }

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size,
                                  void **con_cls) {
  xd_server *s = cls;
  req *r = *con_cls;
  char msg[512];
  if (!r) {
    r = calloc(1, sizeof *r);
    if (!r) return MHD_NO;
    r->s = s;
    r->conn = c;
    r->t0 = now();
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url);
    *con_cls = r;
    pthread_mutex_lock(&s->mu);
    s->inflight++;
    pthread_mutex_unlock(&s->mu);
    int loopback = peer_is_loopback(c, r->peer, sizeof r->peer);
    r->route = !strcmp(url, "/")            ? R_PAGE
               : !strcmp(url, "/healthz")    ? R_HEALTH
               : !strcmp(url, "/metrics")    ? R_METRICS
               : !strcmp(url, "/v1/model")   ? R_MODEL
               : !strcmp(url, "/v1/predict") ? R_PREDICT
                                              : R_OTHER;
    const int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (r->route == R_OTHER) return send_error(r, 404, "no such page: the server has /, /healthz, /metrics, "
                                                       "/v1/model and /v1/predict");
    if (r->route == R_PREDICT ? strcmp(method, "POST") != 0 : !is_get) {
      snprintf(msg, sizeof msg, "%s is not allowed here (allowed: %s)", method,
               r->route == R_PREDICT ? "POST" : "GET, HEAD");
      return send_error(r, 405, msg);
    }
    if (r->route != R_PAGE && r->route != R_HEALTH) {
      int st = check_auth(s, r, loopback, msg, sizeof msg);
      if (st) return send_error(r, st, msg);
    }
    switch (r->route) {
    case R_PAGE:
      return send_buf(r, 200, "text/html; charset=utf-8", xd_serve_page, strlen(xd_serve_page),
                      MHD_RESPMEM_PERSISTENT);
    case R_HEALTH: {
      static const char ok[] = "{\"status\": \"ok\"}\n";
      return send_buf(r, 200, "application/json", ok, sizeof ok - 1, MHD_RESPMEM_PERSISTENT);
    }
    case R_MODEL:
      return send_buf(r, 200, "application/json", s->model_json, strlen(s->model_json), MHD_RESPMEM_PERSISTENT);
    case R_METRICS: return send_metrics(r);
    default: break;
    }
    /* POST /v1/predict: the body comes in the next calls */
    const char *g = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "gradcam");
    r->gradcam = g && (!strcmp(g, "1") || !strcmp(g, "true"));
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
      char *end;
      errno = 0;
      unsigned long long v = strtoull(cl, &end, 10);
      /* a multipart form carries a little more than the file: boundaries and part headers */
      if (errno == 0 && *end == 0 && v > s->o.max_upload + 65536) {
        too_large_msg(s, msg, sizeof msg);
        return send_error(r, 413, msg);
      }
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct && !strncasecmp(ct, "multipart/form-data", 19)) {
      r->multipart = 1;
      r->pp = MHD_create_post_processor(c, 65536, post_iter, r);
      if (!r->pp) return send_error(r, 400, "multipart/form-data without a usable boundary");
    }
    return MHD_YES;
  }
  if (r->responded) { /* answered early (413): the rest of the body is read and dropped */
    *upload_size = 0;
    return MHD_YES;
  }
  if (*upload_size) {
    if (r->multipart) {
      if (MHD_post_process(r->pp, upload_data, *upload_size) != MHD_YES) {
        *upload_size = 0;
        return send_error(r, 400, "malformed multipart/form-data body");
      }
    } else if (append_raw(r, upload_data, *upload_size) != 0) {
      *upload_size = 0;
      return send_error(r, 500, "out of memory for the upload");
    }
    *upload_size = 0;
    return MHD_YES;
  }
  /* the whole request is here */
  pthread_mutex_lock(&s->mu);
  int done = r->done;
  pthread_mutex_unlock(&s->mu);
  if (done) return send_json(r);
  if (r->too_large) {
    too_large_msg(s, msg, sizeof msg);
    return send_error(r, 413, msg);
  }
  if (r->multipart && !r->got_file)
    return send_error(r, 400, "multipart/form-data without a file field: send the image as a file part "
                              "(curl -F image=@xray.jpeg)");
  if (r->len == 0)
    return send_error(r, 400, "empty body: POST the image's bytes (curl --data-binary @xray.jpeg) or a "
                              "multipart form with a file");
  pthread_mutex_lock(&s->mu);
  if (s->qlen >= s->o.queue && !(s->busy < s->nw && s->qlen == 0)) {
    int q = s->qlen;
    s->rejected_full++;
    pthread_mutex_unlock(&s->mu);
    snprintf(msg, sizeof msg, "server busy: %d workers busy and %d requests queued (--queue %d); try again", s->nw,
             q, s->o.queue);
    return send_error(r, 503, msg);
  }
  MHD_suspend_connection(c); /* before it can be resumed by a worker */
  r->next = NULL;
  if (s->qtail) s->qtail->next = r;
  else s->qhead = r;
  s->qtail = r;
  s->qlen++;
  pthread_cond_signal(&s->cv_work);
  pthread_mutex_unlock(&s->mu);
  return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
  xd_server *s = cls;
  req *r = *con_cls;
  if (!r) return;
  double dt = now() - r->t0;
  pthread_mutex_lock(&s->mu);
  if (r->responded) {
    int k = NCODES;
    for (int i = 0; i < NCODES; i++)
      if (CODES[i] == r->status) k = i;
    s->count[r->route][k]++;
    int b = 0;
    while (b < NBUCKETS && dt > BUCKETS[b]) b++;
    s->hist[r->route][b]++;
    s->lat_sum[r->route] += dt;
    s->lat_n[r->route]++;
  }
  s->inflight--;
  pthread_cond_broadcast(&s->cv_idle);
  pthread_mutex_unlock(&s->mu);
  if (s->o.log)
    slog(s, "%s %s %s%s %d %.4fs", r->peer, r->method, r->path, r->gradcam ? "?gradcam=1" : "",
         r->responded ? r->status : 0, dt);
  if (r->pp) MHD_destroy_post_processor(r->pp);
  free(r->body);
  free(r->resp);
  free(r);
  *con_cls = NULL;
}

static enum MHD_Result send_metrics(req *r) {
  xd_server *s = r->s;
  jbuf j;
  if (jopen(&j)) return send_error(r, 500, "out of memory");
  pthread_mutex_lock(&s->mu);
  fputs("# HELP xray_dp_requests_total HTTP requests answered, by handler and status code.\n"
        "# TYPE xray_dp_requests_total counter\n", j.f);
  for (int h = 0; h < NROUTES; h++)
    for (int k = 0; k <= NCODES; k++)
      if (s->count[h][k] || (h == R_PREDICT && k < NCODES && CODES[k] == 200)) {
        if (k < NCODES)
          fprintf(j.f, "xray_dp_requests_total{handler=\"%s\",code=\"%d\"} %llu\n", ROUTE_NAME[h], CODES[k],
                  (unsigned long long)s->count[h][k]);
        else
          fprintf(j.f, "xray_dp_requests_total{handler=\"%s\",code=\"other\"} %llu\n", ROUTE_NAME[h],
                  (unsigned long long)s->count[h][k]);
      }
  fputs("# HELP xray_dp_request_duration_seconds Time from the request's headers to its answer, by handler.\n"
        "# TYPE xray_dp_request_duration_seconds histogram\n", j.f);
  for (int h = 0; h < NROUTES; h++) {
    if (!s->lat_n[h] && h != R_PREDICT) continue;
    uint64_t cum = 0;
    for (int b = 0; b <= NBUCKETS; b++) {
      cum += s->hist[h][b];
      if (b < NBUCKETS)
        fprintf(j.f, "xray_dp_request_duration_seconds_bucket{handler=\"%s\",le=\"%g\"} %llu\n", ROUTE_NAME[h],
                BUCKETS[b], (unsigned long long)cum);
      else
        fprintf(j.f, "xray_dp_request_duration_seconds_bucket{handler=\"%s\",le=\"+Inf\"} %llu\n", ROUTE_NAME[h],
                (unsigned long long)cum);
    }
    fprintf(j.f, "xray_dp_request_duration_seconds_sum{handler=\"%s\"} %.6f\n", ROUTE_NAME[h], s->lat_sum[h]);
    fprintf(j.f, "xray_dp_request_duration_seconds_count{handler=\"%s\"} %llu\n", ROUTE_NAME[h],
            (unsigned long long)s->lat_n[h]);
  }
  fprintf(j.f,
          "# HELP xray_dp_images_processed_total Images decoded and scored.\n"
          "# TYPE xray_dp_images_processed_total counter\nxray_dp_images_processed_total %llu\n"
          "# HELP xray_dp_gradcam_total Grad-CAM overlays drawn.\n"
          "# TYPE xray_dp_gradcam_total counter\nxray_dp_gradcam_total %llu\n"
          "# HELP xray_dp_rejected_queue_full_total Predictions refused with 503 because the queue was full.\n"
          "# TYPE xray_dp_rejected_queue_full_total counter\nxray_dp_rejected_queue_full_total %llu\n"
          "# HELP xray_dp_timed_out_total Predictions refused with 503 after waiting past --timeout-s.\n"
          "# TYPE xray_dp_timed_out_total counter\nxray_dp_timed_out_total %llu\n"
          "# HELP xray_dp_queue_length Predictions waiting for a worker.\n"
          "# TYPE xray_dp_queue_length gauge\nxray_dp_queue_length %d\n"
          "# HELP xray_dp_queue_capacity Largest number of predictions allowed to wait (--queue).\n"
          "# TYPE xray_dp_queue_capacity gauge\nxray_dp_queue_capacity %d\n"
          "# HELP xray_dp_workers_busy Workers running a prediction.\n"
          "# TYPE xray_dp_workers_busy gauge\nxray_dp_workers_busy %d\n"
          "# HELP xray_dp_workers Worker threads (--threads).\n"
          "# TYPE xray_dp_workers gauge\nxray_dp_workers %d\n"
          "# HELP xray_dp_requests_in_flight Requests received and not yet answered (this one included).\n"
          "# TYPE xray_dp_requests_in_flight gauge\nxray_dp_requests_in_flight %d\n",
          (unsigned long long)s->images, (unsigned long long)s->gradcams, (unsigned long long)s->rejected_full,
          (unsigned long long)s->timed_out, s->qlen, s->o.queue, s->busy, s->nw, s->inflight);
  pthread_mutex_unlock(&s->mu);
  fprintf(j.f, "# HELP xray_dp_model_info The checkpoint served.\n# TYPE xray_dp_model_info gauge\n"
               "xray_dp_model_info{file=\"");
  for (const char *p = s->ckpt_file; *p; p++) { /* label values: backslash, quote and newline escaped */
    if (*p == '\\' || *p == '"') fputc('\\', j.f);
    if (*p == '\n') fputs("\\n", j.f);
    else fputc(*p, j.f);
  }
  fprintf(j.f, "\",sha256=\"%s\",threshold=\"%.9g\"} 1\n", s->sha256, s->threshold);
  if (jclose(&j)) return send_error(r, 500, "out of memory");
  return send_buf(r, 200, "text/plain; version=0.0.4; charset=utf-8", j.buf, j.len, MHD_RESPMEM_MUST_FREE);
}

/* ---- start and stop ---- */

int xd_serve_host_loopback(const char *host, xd_err *e) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  int g = getaddrinfo(host, "0", &hints, &res);
  if (g != 0) return xd_fail(e, "%s: cannot resolve the host: %s", host, gai_strerror(g));
  int all = 1;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    if (a->ai_family == AF_INET)
      all &= (ntohl(((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr) >> 24) == 127;
    else if (a->ai_family == AF_INET6)
      all &= IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr) ? 1 : 0;
    else all = 0;
  }
  freeaddrinfo(res);
  return all;
}

static int bind_listen(const char *host, int port, int *fd_out, int *port_out, int *v6, xd_err *e) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  int g = getaddrinfo(host, ps, &hints, &res);
  if (g != 0) return xd_fail(e, "%s: cannot resolve the host: %s", host, gai_strerror(g));
  int fd = -1, err = 0;
  for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 128) != 0) {
      err = errno;
      close(fd);
      fd = -1;
      continue;
    }
    *v6 = a->ai_family == AF_INET6;
  }
  freeaddrinfo(res);
  if (fd < 0) return xd_fail(e, "%s:%d: cannot listen: %s", host, port, strerror(err ? err : EADDRNOTAVAIL));
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
    int en = errno;
    close(fd);
    return xd_fail(e, "%s:%d: getsockname: %s", host, port, strerror(en));
  }
  *port_out = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  *fd_out = fd;
  return 0;
}

static void stop_workers(xd_server *s) {
  pthread_mutex_lock(&s->mu);
  s->stop = 1;
  pthread_cond_broadcast(&s->cv_work);
  pthread_mutex_unlock(&s->mu);
  for (int i = 0; i < s->nw; i++)
    if (s->w[i].started) {
      pthread_join(s->w[i].tid, NULL);
      s->w[i].started = 0;
    }
}

void xd_serve_free(xd_server *s) {
  if (!s) return;
  stop_workers(s);
  if (s->d) MHD_stop_daemon(s->d);
  s->d = NULL;
  if (s->listen_fd >= 0) close(s->listen_fd);
  for (int i = 0; i < s->nw; i++) {
    if (s->w[i].have_ws) xd_workspace_free(&s->w[i].ws, &s->w[i].m);
    if (s->w[i].have_m) xd_model_free(&s->w[i].m);
  }
  free(s->w);
  pthread_mutex_destroy(&s->mu);
  pthread_mutex_destroy(&s->log_mu);
  pthread_cond_destroy(&s->cv_work);
  pthread_cond_destroy(&s->cv_idle);
  free(s);
}

int xd_serve_start(xd_server **out, const xd_serve_opts *o, xd_err *e) {
  *out = NULL;
  if (o->threads < 1 || o->queue < 0 || o->max_upload < 1 || !(o->timeout_s > 0))
    return xd_fail(e, "serve: threads >= 1, queue >= 0, max_upload >= 1 and timeout_s > 0 are needed");
  xd_server *s = calloc(1, sizeof *s);
  if (!s) return xd_fail(e, "serve: out of memory");
  s->o = *o;
  if (!s->o.host) s->o.host = "127.0.0.1";
  s->listen_fd = -1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_mutex_init(&s->log_mu, NULL);
  pthread_cond_init(&s->cv_work, NULL);
  pthread_cond_init(&s->cv_idle, NULL);
  const char *base = strrchr(o->ckpt, '/');
  snprintf(s->ckpt_file, sizeof s->ckpt_file, "%s", base ? base + 1 : o->ckpt);
  int rc = xd_check_regular(o->ckpt, e);
  if (rc == 0) rc = sha256_file(o->ckpt, s->sha256, e);
  s->w = calloc((size_t)o->threads, sizeof *s->w);
  if (rc == 0 && !s->w) rc = xd_fail(e, "serve: out of memory");
  xd_train_state st;
  xd_ckpt_meta *meta = calloc(1, sizeof *meta);
  if (rc == 0 && !meta) rc = xd_fail(e, "serve: out of memory");
  /* every worker's model is loaded here, in this thread (HDF5 is not used from two threads at once) */
  for (int i = 0; rc == 0 && i < o->threads; i++) {
    worker *w = &s->w[i];
    w->s = s;
    s->nw = i + 1;
    rc = xd_checkpoint_load(o->ckpt, &w->m, &st, i == 0 ? meta : NULL, e);
    if (rc == 0) w->have_m = 1;
    if (rc == 0) rc = xd_workspace_alloc(&w->ws, &w->m, 1, e);
    if (rc == 0) w->have_ws = 1;
  }
  char again[65];
  if (rc == 0) rc = sha256_file(o->ckpt, again, e);
  if (rc == 0 && strcmp(again, s->sha256))
    rc = xd_fail(e, "%s: the file changed while it was being loaded; start again", o->ckpt);
  if (rc == 0) {
    xd_model *m = &s->w[0].m;
    if (m->in_h != m->in_w || m->in_c != 1)
      rc = xd_fail(e, "%s: model input %dx%dx%d: serve needs a square grayscale input", o->ckpt, m->in_c, m->in_h,
                   m->in_w);
    s->H = m->in_h;
    s->W = m->in_w;
    s->D = xd_gradcam_display_size(s->H);
    /* the model's name: --model of the stored training command (a preset's name, or the file's), else
     * train's default */
    const char *mm = strstr(meta->command, "--model ");
    if (mm) {
      mm += 8;
      size_t L = strcspn(mm, " \t'\"");
      const char *sl = NULL;
      for (size_t k = 0; k < L; k++)
        if (mm[k] == '/') sl = mm + k;
      if (sl) {
        L -= (size_t)(sl + 1 - mm);
        mm = sl + 1;
      }
      snprintf(s->model_source, sizeof s->model_source, "%.*s", (int)(L < 200 ? L : 200), mm);
    } else {
      snprintf(s->model_source, sizeof s->model_source, "%s", meta->command[0] ? "default" : "unknown");
    }
    snprintf(s->classes[0], sizeof s->classes[0], "%s", meta->nclasses > 1 ? meta->class_names[0] : "0");
    snprintf(s->classes[1], sizeof s->classes[1], "%s", meta->nclasses > 1 ? meta->class_names[1] : "1");
    if (o->threshold >= 0) {
      s->threshold = o->threshold;
      snprintf(s->threshold_meaning, sizeof s->threshold_meaning,
               "set with --threshold: the label is %s when the probability is >= %.9g", s->classes[1], s->threshold);
    } else {
      s->threshold = st.threshold;
      if (rc == 0 && !(s->threshold >= 0 && s->threshold <= 1))
        rc = xd_fail(e, "%s: the stored threshold %g is not a number in [0, 1]", o->ckpt, s->threshold);
      if (rc == 0 && !st.threshold_chosen)
        rc = xd_fail(e, "%s: its threshold %g was not chosen (the run had no val split): give --threshold T", o->ckpt,
                     s->threshold);
      snprintf(s->threshold_meaning, sizeof s->threshold_meaning,
               "the checkpoint's operating point, chosen on its validation split as the highest threshold that "
               "still finds >= 95%% of %s cases: the label is %s when the probability is >= %.9g",
               s->classes[1], s->classes[1], s->threshold);
    }
    snprintf(s->preprocessing, sizeof s->preprocessing,
             "decoded as 8-bit grayscale (JPEG: the decoder's luma; PNG/BMP/GIF/PNM: ITU-R BT.601 luma; alpha "
             "ignored), resized to %dx%d (area average when shrinking, bilinear when enlarging), scaled x/255; "
             "the same code as xray-dp pack and predict",
             s->H, s->W);
  }
  free(meta);
  if (rc == 0 && make_model_json(s, &s->w[0].m) != 0) rc = xd_fail(e, "serve: out of memory describing the model");
  /* one warm-up pass in this thread: kernels chosen, a model that gives NaN refused before serving */
  if (rc == 0) {
    uint8_t *px = calloc((size_t)s->H * s->W, 1);
    float p = NAN;
    if (!px) rc = xd_fail(e, "serve: out of memory");
    if (rc == 0) rc = xd_infer_ensemble(1, &s->w[0].m, &s->w[0].ws, 1, px, 0, &p, e);
    if (rc == 0 && !(p >= 0 && p <= 1))
      rc = xd_fail(e, "%s: gives the probability %g for a black image (non-finite weights?)", o->ckpt, (double)p);
    free(px);
  }
  int v6 = 0, port = 0;
  if (rc == 0) rc = bind_listen(s->o.host, o->port, &s->listen_fd, &port, &v6, e);
  for (int i = 0; rc == 0 && i < s->nw; i++) {
    int pe = pthread_create(&s->w[i].tid, NULL, worker_main, &s->w[i]);
    if (pe) rc = xd_fail(e, "serve: cannot start a worker thread: %s", strerror(pe));
    else s->w[i].started = 1;
  }
  if (rc == 0) {
    unsigned int flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                         MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    unsigned int limit = (unsigned)(o->threads + o->queue + 32);
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)s->listen_fd, MHD_OPTION_CONNECTION_LIMIT, limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)ceil(o->timeout_s),
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_UNESCAPE_CALLBACK,
                            no_unescape, s, MHD_OPTION_END);
    if (!s->d) rc = xd_fail(e, "%s:%d: libmicrohttpd could not start", s->o.host, port);
  }
  if (rc != 0) {
    xd_serve_free(s);
    return -1;
  }
  s->o.port = port;
  *out = s;
  return 0;
}

int xd_serve_port(const xd_server *s) { return s->o.port; }
const char *xd_serve_sha256(const xd_server *s) { return s->sha256; }

int xd_serve_drain(xd_server *s, double wait_s) {
  if (!s->d) return 0;
  pthread_mutex_lock(&s->mu);
  s->draining = 1;
  pthread_mutex_unlock(&s->mu);
  MHD_socket lf = MHD_quiesce_daemon(s->d); /* no new connections; the ones open finish their request */
  if (lf != MHD_INVALID_SOCKET) {
    close(lf);
    s->listen_fd = -1;
  }
  double end = now() + wait_s;
  pthread_mutex_lock(&s->mu);
  while (s->inflight > 0 && now() < end) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->cv_idle, &s->mu, &ts);
  }
  int left = s->inflight;
  pthread_mutex_unlock(&s->mu);
  /* workers answer whatever is still queued, then leave; then the daemon closes the connections */
  stop_workers(s);
  MHD_stop_daemon(s->d);
  s->d = NULL;
  return left;
}
