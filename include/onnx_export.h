/* ONNX export (`xray-dp export`, docs/deploy_onnx.md): a model with its weights as an ONNX ModelProto,
 * built with protobuf-c from Debian's onnx.proto and packed to memory.
 *
 * The graph: input "image" float32 [N, C, H, W] (pixels / 255, N free), output "probability" [N, K]
 * (the last layer's sigmoid or softmax applied; "logits" is the tensor before it). Every layer kind maps
 * to standard ONNX operators of the default domain (Conv with explicit pads, MaxPool, AveragePool,
 * GlobalAveragePool + Flatten, BatchNormalization with the running statistics, Flatten, Gemm, Add, the
 * activations; dropout is the identity; standardize is ReduceMean/Sub/Mul/ReduceMean/Sqrt/Max/Div).
 * Weights are initializers named like scripts/to_torch.py's state_dict: "layers.<i>.weight". The
 * preprocessing, class names, threshold and the checkpoint's training state go to metadata_props. */
#ifndef XD_ONNX_EXPORT_H
#define XD_ONNX_EXPORT_H
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "common.h"
#include "model.h"

#define XD_ONNX_OPSET_MIN 13
#define XD_ONNX_OPSET_MAX 17 /* ReduceMean takes `axes` as an attribute up to 17; onnx 1.12's newest */
#define XD_ONNX_OPSET_DEFAULT 17
#define XD_ONNX_IR_VERSION 8

typedef struct xd_onnx_source {
  const char *ckpt_name;        /* the checkpoint's file name, recorded in the metadata (may be NULL) */
  const xd_train_state *st;     /* may be NULL */
  const xd_ckpt_meta *meta;     /* may be NULL (class names "0", "1", ...) */
} xd_onnx_source;

/* Packs the model as ONNX. *buf (free with xd_free) holds *n bytes. -1 with a one-line message in e
 * (opset out of range, out of memory). */
int xd_onnx_export(const xd_model *m, const xd_onnx_source *src, int opset, uint8_t **buf, size_t *n, xd_err *e);

#endif
