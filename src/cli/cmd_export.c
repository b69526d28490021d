/* xray-dp export: a checkpoint as an ONNX model (include/onnx_export.h, docs/deploy_onnx.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "checkpoint.h"
#include "cli.h"
#include "onnx_export.h"

static const char *const export_help =
    "usage: xray-dp export --ckpt C.h5 --onnx OUT.onnx [--opset N] [--mem-limit SIZE]\n"
    "\n"
    "Writes the checkpoint's model with its weights as an ONNX model (onnxruntime, TensorRT, ...).\n"
    "Input \"image\": float32 [N, 1, H, W], the grayscale image resized to the model's size, pixels / 255.\n"
    "Output \"probability\": [N, 1] (sigmoid, P(class 1)) or [N, K] (softmax). The preprocessing, the class\n"
    "names, the decision threshold and the checkpoint's training state are in the model's metadata_props\n"
    "(docs/deploy_onnx.md). The file is written to a temporary name and renamed when complete.\n"
    "\n"
    "options:\n"
    "  --ckpt C.h5      checkpoint (best.h5 or last.h5)\n"
    "  --onnx OUT.onnx  the ONNX file to write\n"
    "  --opset N        ONNX opset of the default domain, 13..17 (default 17; IR version 8)\n"
    ARG_MEM_LIMIT_HELP
    "  -h, --help       show this help\n";

static int fail1(xd_err *e) {
  xd_msg_oneline(e->msg);
  fprintf(stderr, "xray-dp export: %s\n", e->msg);
  return 1;
}

int cmd_export(int argc, char **argv) {
  const char *ckpt = NULL, *onnx = NULL;
  int64_t opset = XD_ONNX_OPSET_DEFAULT;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(export_help, stdout);
      return 0;
    } else if (!strcmp(a, "--ckpt")) {
      if (!(ckpt = arg_value("export", argc, argv, &i))) return 2;
    } else if (!strcmp(a, "--onnx")) {
      if (!(onnx = arg_value("export", argc, argv, &i))) return 2;
    } else if (!strcmp(a, "--opset")) {
      if (!(v = arg_value("export", argc, argv, &i)) ||
          arg_int("export", "--opset", v, XD_ONNX_OPSET_MIN, XD_ONNX_OPSET_MAX, &opset) != 0)
        return 2;
    } else if (!strcmp(a, "--mem-limit")) {
      if (!(v = arg_value("export", argc, argv, &i)) || arg_mem_limit("export", v) != 0) return 2;
    } else {
      fprintf(stderr, "xray-dp export: unknown option '%s' (xray-dp export --help)\n", a);
      return 2;
    }
  }
  if (!ckpt || !*ckpt || !onnx || !*onnx) {
    fprintf(stderr, "xray-dp export: needs --ckpt C.h5 and --onnx OUT.onnx (xray-dp export --help)\n");
    return 2;
  }
  xd_err e = {{0}};
  if (!strcmp(ckpt, onnx) || xd_same_file(ckpt, onnx)) {
    xd_fail(&e, "%s: --onnx is the checkpoint itself", onnx);
    return fail1(&e);
  }
  char target[4096];
  if (xd_output_check(onnx, 0, target, sizeof target, &e) != 0) return fail1(&e);
  xd_model m;
  memset(&m, 0, sizeof m);
  xd_train_state st;
  static xd_ckpt_meta meta;
  memset(&st, 0, sizeof st);
  if (xd_checkpoint_load(ckpt, &m, &st, &meta, &e) != 0) return fail1(&e);
  const char *base = strrchr(ckpt, '/');
  xd_onnx_source src = {base ? base + 1 : ckpt, &st, &meta};
  uint8_t *buf = NULL;
  size_t n = 0;
  int rc = xd_onnx_export(&m, &src, (int)opset, &buf, &n, &e);
  if (rc != 0) {
    char msg[sizeof e.msg];
    snprintf(msg, sizeof msg, "%s", e.msg);
    xd_fail(&e, "%s: %s", ckpt, msg);
  }
  if (rc == 0) rc = xd_write_file_atomic(target, buf, n, &e);
  xd_free(buf);
  if (rc == 0)
    printf("wrote %s (%zu bytes, opset %d, %d layers, input \"image\" [N, %d, %d, %d], output \"probability\" [N, %d])\n",
           onnx, n, (int)opset, m.nlayers, m.in_c, m.in_h, m.in_w, m.nout);
  xd_model_free(&m);
  return rc != 0 ? fail1(&e) : 0;
}
