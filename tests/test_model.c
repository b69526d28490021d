/* Model descriptions: presets build with the documented shapes and parameter counts, and impossible or
 * malformed descriptions fail with the line number and a clear reason. Also the lr schedules. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "model.h"
#include "optim.h"

static void expect_error(const char *text, const char *want) {
  xd_model m;
  xd_err e = {{0}};
  int rc = xd_model_build(&m, text, "m.txt", &e);
  CHECK_MSG(rc != 0, "built although it should fail with '%s'", want);
  if (rc == 0) {
    xd_model_free(&m);
    return;
  }
  CHECK_MSG(strstr(e.msg, want) != NULL, "error '%s' does not contain '%s'", e.msg, want);
}

int main(void) {
  xd_err e = {{0}};
  xd_model m;
  /* keras-seed at 128: PyTorch/Keras parameter count 1,848,129; 16x126x126 after conv 1; flatten 28800 */
  CHECK(xd_model_from_arg(&m, "keras-seed", 1, 128, 128, &e) == 0);
  size_t total = 0;
  for (int i = 0; i < m.nlayers; i++) total += m.layers[i].w_n + m.layers[i].b_n;
  CHECK(total == 1848129);
  CHECK(m.layers[0].out_c == 16 && m.layers[0].out_h == 126);
  CHECK(m.layers[4].out_c == 28800 && m.layers[4].flat);
  CHECK(m.loss == XD_LOSS_BCE && m.nout == 1);
  xd_model_free(&m);
  /* every preset builds at 128; petre-bn keeps 128 -> 64 -> 32 with same padding */
  const char *presets[] = {"tripathi5", "petre-bn", "default"};
  for (int i = 0; i < 3; i++) {
    CHECK_MSG(xd_model_from_arg(&m, presets[i], 1, 128, 128, &e) == 0, "%s: %s", presets[i], e.msg);
    if (!strcmp(presets[i], "petre-bn")) CHECK(m.layers[11].out_h == 32 && m.layers[12].out_c == 64 * 32 * 32);
    xd_model_free(&m);
  }
  /* same padding with stride 2 and odd input: out = ceil(H/2), pad_top = total/2 (Keras/PyTorch) */
  CHECK(xd_model_build(&m, "input 1x9x8\nconv 4 3x3 stride=2 pad=same\nflatten\ndense 2 softmax\n", "t", &e) == 0);
  CHECK(m.layers[0].out_h == 5 && m.layers[0].out_w == 4 && m.layers[0].p.conv.pad_top == 1 &&
        m.layers[0].p.conv.pad_left == 0);
  CHECK(m.loss == XD_LOSS_CE && m.nout == 2);
  xd_model_free(&m);
  /* not a preset and no such file */
  CHECK(xd_model_from_arg(&m, "kerasseed", 1, 128, 128, &e) != 0 && strstr(e.msg, "not a preset"));
  /* input size must match the data */
  CHECK(xd_model_build(&m, "input 1x64x64\nflatten\ndense 1 sigmoid\n", "t", &e) == 0);
  xd_model_free(&m);

  expect_error("conv 8 3x3\n", "m.txt:1: the first line must be 'input CxHxW'");
  expect_error("input 1x32x32\nconv 8 3x3 relu\ndense 1 sigmoid\n", "m.txt:3: dense after a 4-D tensor");
  expect_error("input 1x32x32\n\n# comment\nconv 8 40x40 relu\nflatten\ndense 1 sigmoid\n", "m.txt:4: conv kernel 40x40 is larger");
  expect_error("input 1x32x32\nconvolution 8 3x3\n", "m.txt:2: unknown layer 'convolution'");
  expect_error("input 1x32x32\nconv 8 3x3 swish\n", "m.txt:2: unknown activation 'swish'");
  expect_error("input 1x32x32\nconv 8 3x3 relu pad=full\n", "pad must be same, valid or a number");
  expect_error("input 1x32x32\ndropout 1.5\n", "m.txt:2: expected 'dropout RATE'");
  expect_error("input 1x32x32\nflatten\nflatten\n", "m.txt:3: flatten after an already flat tensor");
  expect_error("input 1x32x32\nflatten\ndense 3 relu\n", "m.txt:3: the last layer must be");
  expect_error("input 1x32x32\nflatten\ndense 1 softmax\n", "the last layer must be");
  expect_error("input 1x4x4\nmaxpool 8x8\n", "m.txt:2: pool window 8x8 is larger");
  expect_error("input 1x32x32\nflatten\nconv 4 3x3\n", "m.txt:3: conv needs a 4-D input");
  expect_error("input 1x32x32\ninput 1x32x32\n", "m.txt:2: 'input' must come once");
  expect_error("input 1x32x32\nconv 8 3x3 relu stride=0\n", "stride must be a positive integer");
  expect_error("", "no 'input CxHxW' line");
  /* graphs: names, references, add */
  expect_error("input 1x8x8\nconv 4 3x3 pad=1 name=a\nadd b relu\nflatten\ndense 1 sigmoid\n",
               "m.txt:3: unknown layer name 'b': a layer can only take the model input or an EARLIER named layer (named so far: a)");
  expect_error("input 1x8x8\nconv 4 3x3 pad=1 in=later\nconv 4 3x3 pad=1 name=later\nflatten\ndense 1 sigmoid\n",
               "m.txt:2: unknown layer name 'later'");
  expect_error("input 1x8x8\nconv 4 3x3 pad=1 name=a\nconv 4 3x3 pad=1 name=a\nflatten\ndense 1 sigmoid\n",
               "m.txt:3: layer name 'a' is already used (line 2)");
  expect_error("input 1x8x8\nconv 4 3x3 pad=1 name=a\nconv 4 3x3\nadd a\nflatten\ndense 1 sigmoid\n",
               "m.txt:4: add: shapes differ: 4x6x6 (its input) vs 4x8x8 (a)");
  expect_error("input 1x8x8\nconv 4 3x3 pad=1 name=a\nconv 4 3x3 pad=1\nflatten in=a\ndense 1 sigmoid\n",
               "m.txt:3: the output of this layer is never used");
  expect_error("input 1x8x8\nconv 4 3x3 name=9x\n", "m.txt:2: bad name '9x'");
  expect_error("input 1x8x8\nadd\n", "m.txt:2: expected 'add NAME");
  expect_error("input 1x8x8\nconv 4 3x3 bias=no\n", "m.txt:2: bias must be 0 or 1, got 'no'");
  expect_error("input 1x8x8\nconv 4 3x3 pad=1 relu\n", "m.txt:2: unexpected 'relu': the activation comes before");
  expect_error("input 1x8x8\nconv 4 3x3 relu stride=1 pad=1 name=a name=b name=c name=d name=e name=f name=g name=h "
               "name=i name=j name=k name=l\n", "m.txt:2: more than 16 words on one line");
  CHECK(xd_model_build(&m, "input 1x4x4\nflatten\ndense 4 name=h\ndense 1 sigmoid in=h\n", "t", &e) == 0);
  CHECK(m.layers[1].act == XD_ACT_LINEAR && !strcmp(m.layers[1].name, "h"));
  xd_model_free(&m);
  expect_error("input 1x8x8\nstandardize eps=0\n", "m.txt:2: bad eps '0'");
  expect_error("input 1x8x8\nconv 4 3x3 pad=3\n", "m.txt:2: pad=3 must be smaller than the 3x3 kernel");
  /* a skip connection from the model input, and in=input */
  CHECK(xd_model_build(&m, "input 1x8x8\nstandardize\nconv 1 3x3 pad=1\nadd input relu name=r\nconv 1 1x1 in=input\n"
                           "add r\nglobalavgpool\ndense 1 sigmoid\n", "t", &e) == 0);
  CHECK(m.layers[2].in0 == 2 && m.layers[2].in1 == 0 && m.layers[3].in0 == 0 && m.layers[4].in1 == 3);
  xd_model_free(&m);
  /* resnet-s: 128 -> stem 64 -> 32 -> 16 -> 8, 128 channels into the head; PyTorch-style pad=1 */
  CHECK(xd_model_from_arg(&m, "resnet-s", 1, 128, 128, &e) == 0);
  {
    int gap = -1;
    for (int i = 0; i < m.nlayers; i++)
      if (m.layers[i].kind == XD_L_GAP) gap = i;
    CHECK(gap > 0 && m.layers[gap].in_c == 128 && m.layers[gap].in_h == 8 && m.layers[gap].in_w == 8);
    CHECK(m.layers[1].out_h == 128 && m.layers[1].p.conv.pad_top == 1);
    CHECK(xd_model_cam_layer(&m) == gap - 1 && m.layers[gap - 1].kind == XD_L_ADD);
  }
  xd_model_free(&m);
  CHECK(xd_model_from_arg(&m, "keras-seed", 1, 128, 128, &e) == 0);
  CHECK(xd_model_cam_layer(&m) == 2); /* the second conv, not the pool after it */
  xd_model_free(&m);

  /* schedules */
  xd_schedule s;
  CHECK(xd_schedule_parse("step:3:0.5", &s) == 0);
  CHECK_CLOSE(xd_schedule_lr(&s, 1.0f, 2, 10), 1.0, 0, 0);
  CHECK_CLOSE(xd_schedule_lr(&s, 1.0f, 3, 10), 0.5, 0, 0);
  CHECK_CLOSE(xd_schedule_lr(&s, 1.0f, 7, 10), 0.25, 0, 0);
  CHECK(xd_schedule_parse("cosine", &s) == 0);
  CHECK_CLOSE(xd_schedule_lr(&s, 1.0f, 0, 10), 1.0, 0, 1e-7);
  CHECK_CLOSE(xd_schedule_lr(&s, 1.0f, 5, 10), 0.5, 0, 1e-7);
  CHECK(xd_schedule_lr(&s, 1.0f, 9, 10) > 0 && xd_schedule_lr(&s, 1.0f, 9, 10) < 0.05);
  CHECK(xd_schedule_parse("cosine:0.1", &s) == 0);
  CHECK_CLOSE(xd_schedule_lr(&s, 1.0f, 5, 10), 0.55, 0, 1e-6);
  CHECK(xd_schedule_parse("step:0:0.5", &s) != 0);
  CHECK(xd_schedule_parse("linear", &s) != 0);
  return check_done("model");
}
