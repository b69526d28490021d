/* Reliability of model descriptions (issue 9, items 3, 4 and 10): every word of a description is
 * understood or refused with its line number (a table of bad lines), every valid description stays
 * valid (presets, the documented examples, CRLF and tab variants), sizes are computed in 64 bits and
 * refused above the int-safe limits, the memory of the arenas and of the workspace is checked before
 * anything big is allocated, and --model refuses FIFOs, directories, devices, huge files and NUL bytes.
 *
 * Also a helper for test_rel_model_cli.sh: `test_rel_model --hostile-ckpt OUT.h5 MODEL.txt` writes a
 * checkpoint of a small model whose stored description is replaced by MODEL.txt's text. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"
#include "h5util.h"
#include "model.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* builds `text` and expects a failure whose message contains `want` */
static int expect_fail(const char *text, const char *want) {
  xd_model m;
  xd_err e = {{0}};
  double t0 = now();
  int rc = xd_model_build(&m, text, "m.txt", &e);
  CHECK_MSG(rc != 0, "built although it should fail with '%s'", want);
  if (rc == 0) {
    xd_model_free(&m);
    return 0;
  }
  CHECK_MSG(strstr(e.msg, want) != NULL, "error '%s' does not contain '%s'", e.msg, want);
  CHECK_MSG(!strchr(e.msg, '\n'), "message of more than one line: '%s'", e.msg);
  CHECK_MSG(now() - t0 < 2.0, "refusing took %.1f s: '%s'", now() - t0, want);
  return strstr(e.msg, want) != NULL;
}

static int builds(const char *text, const char *what) {
  xd_model m;
  xd_err e = {{0}};
  int rc = xd_model_build(&m, text, what, &e);
  CHECK_MSG(rc == 0, "%s does not build: %s", what, e.msg);
  if (rc == 0) xd_model_free(&m);
  return rc == 0;
}

/* ---- the table: one bad line each, the line number and the reason the message must name ---- */
typedef struct {
  const char *body; /* after "input 1x16x16\n" (line 1), unless it starts with "input" */
  int line;         /* the line the message must name; 0: no line (whole-model errors) */
  const char *want;
} bad_case;

static const bad_case BAD[] = {
    /* kernel and window sizes: KHxKW or K exactly */
    {"conv 8 3x\n", 2, "conv: bad kernel size '3x'"},
    {"conv 8 xxx3\n", 2, "conv: bad kernel size 'xxx3'"},
    {"conv 8 3x3x3\n", 2, "bad kernel size '3x3x3'"},
    {"conv 8 x\n", 2, "bad kernel size 'x'"},
    {"conv 8 3X3\n", 2, "bad kernel size '3X3'"},
    {"conv 8 -3\n", 2, "bad kernel size '-3'"},
    {"conv 8 +3\n", 2, "bad kernel size '+3'"},
    {"conv 8 3x0\n", 2, "bad kernel size '3x0'"},
    {"conv 8 3xx3\n", 2, "bad kernel size '3xx3'"},
    {"maxpool 0x2\n", 2, "maxpool: bad window size '0x2'"},
    {"avgpool 2x\n", 2, "avgpool: bad window size '2x'"},
    /* strict integers */
    {"conv 8a 3x3\n", 2, "conv: bad number of filters '8a'"},
    {"conv 0 3x3\n", 2, "conv: bad number of filters '0'"},
    {"conv -8 3x3\n", 2, "bad number of filters '-8'"},
    {"conv +8 3x3\n", 2, "bad number of filters '+8'"},
    {"conv 99999999999999999999999 3x3\n", 2, "bad number of filters '99999999999999999999999'"},
    {"conv 1000001 3x3\n", 2, "bad number of filters '1000001'"},
    {"flatten\ndense 0 relu\n", 3, "expected 'dense UNITS [ACTIVATION]' with UNITS from 1 to 1000000, got '0'"},
    {"flatten\ndense 1.5\n", 3, "got '1.5'"},
    {"flatten\ndense 1000001\n", 3, "got '1000001'"},
    {"flatten\ndense 0x10 sigmoid\n", 3, "got '0x10'"},
    /* options: known keys, once, with a value in range */
    {"conv 8 3x3 stride=0\n", 2, "stride must be a positive integer"},
    {"conv 8 3x3 stride=2x\n", 2, "stride must be a positive integer up to 1000000, got '2x'"},
    {"conv 8 3x3 stride=1000001\n", 2, "stride must be a positive integer"},
    {"conv 8 3x3 stride=\n", 2, "option 'stride=' has no value"},
    {"conv 8 3x3 stride=1 stride=2\n", 2, "option 'stride' given twice"},
    {"conv 8 3x3 pad=-1\n", 2, "pad must be same, valid or a number of pixels, got '-1'"},
    {"conv 8 3x3 pad=1x\n", 2, "pad must be same, valid or a number of pixels, got '1x'"},
    {"conv 8 3x3 pad=Same\n", 2, "pad must be same, valid or a number of pixels, got 'Same'"},
    {"conv 8 3x3 pad=same pad=1\n", 2, "option 'pad' given twice"},
    {"conv 8 3x3 bias=2\n", 2, "bias must be 0 or 1, got '2'"},
    {"conv 8 3x3 bias=00\n", 2, "bias must be 0 or 1, got '00'"},
    {"conv 8 3x3 colour=red\n", 2, "unknown option 'colour' for this layer (conv takes stride=, pad=, bias=, name=, in=)"},
    {"conv 8 3x3 eps=1\n", 2, "unknown option 'eps' for this layer"},
    {"conv 8 3x3 =3\n", 2, "bad option '=3': expected key=value"},
    {"maxpool 2x2 stride=0\n", 2, "stride must be S or SHxSW"},
    {"avgpool 2x2 stride=2x0\n", 2, "stride must be S or SHxSW"},
    {"maxpool 2x2 pad=1\n", 2, "unknown option 'pad' for this layer (maxpool takes stride=, name=, in=)"},
    {"dropout 0.2 rate=0.2\n", 2, "unknown option 'rate' for this layer"},
    {"dropout 1\n", 2, "expected 'dropout RATE' with 0 <= RATE < 1, got '1'"},
    {"dropout -0.1\n", 2, "expected 'dropout RATE' with 0 <= RATE < 1, got '-0.1'"},
    {"dropout nan\n", 2, "got 'nan'"},
    {"dropout inf\n", 2, "got 'inf'"},
    {"dropout 0.5x\n", 2, "got '0.5x'"},
    {"dropout 0x1p-2\n", 2, "got '0x1p-2'"},
    {"dropout 1e-400\n", 2, "got '1e-400'"},
    {"dropout\n", 2, "expected 'dropout RATE'"},
    {"batchnorm eps=0\n", 2, "bad eps '0' (a positive number)"},
    {"batchnorm eps=nan\n", 2, "bad eps 'nan'"},
    {"batchnorm eps=-1e-5\n", 2, "bad eps '-1e-5'"},
    {"batchnorm eps=1e-50\n", 2, "bad eps '1e-50'"}, /* 0 as a float */
    {"standardize eps=1e300\n", 2, "bad eps '1e300'"}, /* infinite as a float */
    {"batchnorm momentum=1.5\n", 2, "bad momentum '1.5' (a number in (0, 1])"},
    {"batchnorm momentum=0\n", 2, "bad momentum '0'"},
    {"batchnorm momentum=\n", 2, "option 'momentum=' has no value"},
    {"batchnorm eps=1e-5 eps=1e-3\n", 2, "option 'eps' given twice"},
    /* activations: one, in its place, known */
    {"conv 8 3x3 relu relu\n", 2, "unexpected 'relu': a layer takes one activation"},
    {"conv 8 3x3 Relu\n", 2, "unknown activation 'Relu'"},
    {"conv 8 3x3 swish\n", 2, "unknown activation 'swish'"},
    {"conv 8 3x3 relu 5\n", 2, "unexpected '5'"},
    {"conv 8 3x3 pad=1 relu\n", 2, "unexpected 'relu': the activation comes before key=value options"},
    {"maxpool 2x2 relu\n", 2, "unexpected 'relu': maxpool takes no activation"},
    {"globalavgpool relu\n", 2, "unexpected 'relu': globalavgpool takes no activation"},
    {"relu sigmoid\n", 2, "unexpected 'sigmoid'"},
    {"flatten 3\n", 2, "unexpected '3'"},
    {"conv 8 3x3 softmax\n", 2, "softmax is only supported on dense layers"},
    /* layer words */
    {"foo\n", 2, "unknown layer 'foo'"},
    {"Conv 8 3x3\n", 2, "unknown layer 'Conv'"},
    {"conv\n", 2, "expected 'conv FILTERS KHxKW"},
    {"conv 8\n", 2, "expected 'conv FILTERS KHxKW"},
    {"maxpool\n", 2, "expected 'maxpool KHxKW"},
    {"add\n", 2, "expected 'add NAME"},
    {"flatten\ndense\n", 3, "expected 'dense UNITS"},
    /* the input line */
    {"input 1x16x\n", 1, "expected 'input CxHxW'"},
    {"input 1x16x16x3\n", 1, "expected 'input CxHxW'"},
    {"input 0x16x16\n", 1, "expected 'input CxHxW'"},
    {"input 1x16x16 extra\n", 1, "expected 'input CxHxW'"},
    {"input 16\n", 1, "expected 'input CxHxW'"},
    {"input 10000x10000x10000\nflatten\ndense 1 sigmoid\n", 1,
     "input 10000x10000x10000 has 1000000000000 values per image, more than 1073741824"},
    {"conv 8 3x3\ninput 1x16x16\n", 3, "'input' must come once, before any layer"},
    /* names and references */
    {"conv 8 3x3 name=relu\n", 2, "bad name 'relu': a layer or activation word cannot name a layer"},
    {"conv 8 3x3 name=conv\n", 2, "bad name 'conv'"},
    {"conv 8 3x3 name=input\n", 2, "bad name 'input'"},
    {"conv 8 3x3 name=\n", 2, "option 'name=' has no value"},
    {"conv 8 3x3 name=9x\n", 2, "bad name '9x'"},
    {"conv 8 3x3 name=a/b\n", 2, "bad name 'a/b'"},
    {"conv 8 3x3 name=abcdefghijabcdefghijabcdefghijab\n", 2, "bad name 'abcdefghijabcdefghijabcdefghijab'"},
    {"conv 8 3x3 name=a name=b\n", 2, "option 'name' given twice"},
    {"conv 8 3x3 pad=1 name=a in=a\n", 2, "layer 'a' cannot read its own output"},
    {"conv 8 3x3 pad=1 name=a\nadd a name=a\n", 3, "layer 'a' cannot read its own output"},
    {"conv 8 3x3 in=input in=input\n", 2, "option 'in' given twice"},
    {"conv 8 3x3 in=dense\n", 2, "bad in 'dense'"},
    {"conv 8 3x3 pad=1\nadd relu\n", 3, "'relu' is a layer or activation word, not a layer name"},
    {"conv 4 3x3 pad=1 in=later\nconv 4 3x3 pad=1 name=later\nflatten\ndense 1 sigmoid\n", 2,
     "unknown layer name 'later'"},
    {"conv 4 3x3 pad=1 name=a\nconv 4 3x3 pad=1 name=a\n", 3, "layer name 'a' is already used (line 2)"},
    {"conv 4 3x3 pad=1 name=a\nconv 4 3x3 pad=1\nflatten in=a\ndense 1 sigmoid\n", 3,
     "the output of this layer is never used"},
    /* shapes */
    {"maxpool 32x32\n", 2, "pool window 32x32 is larger than its 16x16 input"},
    {"conv 8 17x3\n", 2, "conv kernel 17x3 is larger than its 16x16 input"},
    {"conv 8 3x3 pad=3\n", 2, "pad=3 must be smaller than the 3x3 kernel"},
    {"conv 8 3x3\ndense 1 sigmoid\n", 3, "dense after a 4-D tensor (8x14x14) needs a flatten"},
    {"flatten\nflatten\n", 3, "flatten after an already flat tensor"},
    {"flatten\nconv 4 3x3\n", 3, "conv needs a 4-D input"},
    {"flatten\nmaxpool 2x2\n", 3, "pooling needs a 4-D input"},
    {"softmax\n", 2, "softmax needs a flat input"},
    {"conv 8 3x3 pad=1 name=a\nconv 8 3x3\nadd a\n", 4, "add: shapes differ: 8x14x14 (its input) vs 8x16x16 (a)"},
    /* sizes that would overflow an int or exceed the arenas' limits, before any allocation */
    {"input 1x128x128\nconv 1000000 3x3\n", 2, "layer output of 15876000000 values per image is too large"},
    {"input 1x32768x32768\nconv 2 1x1\n", 2, "layer output of 2147483648 values per image is too large"},
    {"input 1024x1024x1024\nflatten\ndense 1000 relu\ndense 1 sigmoid\n", 3,
     "dense: 1073741825000 parameters in this layer, 1073741825008 in the model so far: more than the limit of 500000000"},
    {"conv 16 3x3 relu\nflatten\ndense 1000000 relu\ndense 1 sigmoid\n", 4, "dense: 3137000000 parameters in this layer"},
    {"conv 1 1000000x1000000 pad=999999\n", 2, "layer output of"},
    {"input 1x1000000x1000\nconv 1000 1000000x1000\n", 2, "conv: 1000000001000 parameters in this layer"},
    {"input 1000000x1x1\nconv 1000000 1000000x1000000 stride=1000000 pad=999999\n", 2, "conv: more than 2^64 parameters in this layer"},
    /* the last layer: logits */
    {"flatten\ndense 2 sigmoid\n", 3, "the last layer must be 'dense 1 sigmoid'"},
    {"flatten\ndense 1 softmax\n", 3, "the last layer must be"},
    {"flatten\ndense 2\nsoftmax\n", 4, "the last layer must be"},
    {"flatten\ndense 1 sigmoid\ndropout 0\n", 4, "the last layer must be"},
    {"input 1x16x16\n# nothing else\n\n", 0, "m.txt: no layers"},
    {"# no input\n", 0, "m.txt: no 'input CxHxW' line"},
    {"conv 8 3x3\n", 1, "the first line must be 'input CxHxW'"},
    /* the text itself */
    {"conv 8 3x3 r\xc3\xa9lu\n", 2, "non-ASCII byte 0xc3 at column 13 (outside comments a model description is ASCII)"},
    {"conv 8\x0b" "3x3\n", 2, "control character 0x0b at column 7"},
    {"conv 8 3x3\x1b[0m\n", 2, "control character 0x1b"},
    {"conv 8 3x3\rrelu\n", 2, "carriage return at column 11 inside the line"},
    {"conv 8 3x3 # \x07 bell in a comment\n", 2, "control character 0x07"},
    {"conv 8 3x3\x7f\n", 2, "control character 0x7f"},
    {"conv\t8\t3x3\tbogus\n", 2, "unknown activation 'bogus'"},
    {"conv 8 3x3 relu stride=1 pad=1 name=a in=input x y z w v u t s r\n", 2, "more than 16 words on one line"},
    {"\r\n# c\r\n\r\nconv 8 3x3\r\nconv 8 3x\r\n", 6, "conv: bad kernel size '3x'"},
};

static void test_table(int *ncases) {
  char text[4096];
  for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
    const bad_case *c = &BAD[i];
    if (!strncmp(c->body, "input", 5) || !strncmp(c->body, "# no input", 10) || c->line == 1)
      snprintf(text, sizeof text, "%s", c->body);
    else
      snprintf(text, sizeof text, "input 1x16x16\n%s", c->body);
    /* the message starts with the source and the line, and names the reason */
    xd_model m;
    xd_err e = {{0}};
    char prefix[64];
    snprintf(prefix, sizeof prefix, c->line > 0 ? "m.txt:%d: " : "m.txt: ", c->line);
    if (xd_model_build(&m, text, "m.txt", &e) == 0) xd_model_free(&m);
    CHECK_MSG(!strncmp(e.msg, prefix, strlen(prefix)), "row %zu: '%s' does not start with '%s'", i, e.msg, prefix);
    if (!expect_fail(text, c->want)) fprintf(stderr, "  (table row %zu)\n", i);
    (*ncases)++;
  }
}

/* ---- valid descriptions stay valid ---- */
static const char *const GOOD[] = {
    /* docs/models.md, the first example */
    "# a small residual network for 128x128 X-rays\ninput 1x128x128\nstandardize\nconv 16 3x3 pad=1 bias=0\n"
    "batchnorm relu\nmaxpool 2x2 name=stem\nconv 32 3x3 stride=2 pad=1 bias=0\nbatchnorm relu\n"
    "conv 32 3x3 pad=1 bias=0\nbatchnorm name=main\nconv 32 1x1 stride=2 bias=0 in=stem\nbatchnorm\n"
    "add main relu\nglobalavgpool\ndropout 0.2\ndense 1 sigmoid\n",
    /* docs/models.md, the residual blocks (with an input and a head) */
    "input 1x32x32\nmaxpool 2x2 name=stem             # the block's input\nconv 32 3x3 stride=2 pad=1        # main path\n"
    "batchnorm relu\nconv 32 3x3 pad=1\nbatchnorm name=block1_main\nconv 32 1x1 stride=2 in=stem      # skip path\n"
    "batchnorm\nadd block1_main relu name=block1  # skip + main, then relu\nglobalavgpool\ndense 1 sigmoid\n",
    "input 1x16x16\nconv 32 3x3 pad=1\nbatchnorm relu name=x\nconv 32 3x3 pad=1\nbatchnorm relu\nconv 32 3x3 pad=1\n"
    "batchnorm\nadd x relu\nglobalavgpool\ndense 1 sigmoid\n",
    /* SPEC section 3 */
    "input 1x128x128\nconv 16 3x3 relu            # filters, kernel, activation; options: stride=S pad=same|valid\n"
    "maxpool 2x2                 # stride defaults to the window\nconv 32 3x3 relu\nmaxpool 2x2\nflatten\n"
    "dense 64 relu\ndropout 0.2\ndense 1 sigmoid\n",
    /* the PyTorch reference fixtures' descriptions (tests/fixtures/torch_*.h5) */
    "input 1x12x12\nconv 4 3x3 pad=1 name=c1\nstandardize eps=1e-4\nbatchnorm tanh name=a\nconv 4 3x3 elu pad=same\n"
    "add a leakyrelu name=r1\nconv 4 1x1 in=input\nadd r1 name=r2\nmaxpool 3x3 stride=2\nconv 3 2x3 pad=1\n"
    "batchnorm elu\navgpool 2x2 stride=1\nflatten\nbatchnorm sigmoid\ndense 6 tanh\ndropout 0\ndense 1 sigmoid\n",
    "input 1x20x20\nconv 6 3x3 leakyrelu stride=2 pad=same\navgpool 2x2\nconv 8 2x3 elu pad=same\nbatchnorm\ntanh\n"
    "conv 5 1x1 sigmoid\nglobalavgpool\ndense 7 relu\ndense 3 softmax\n",
    /* accepted spellings: a single K, SHxSW strides, pad=0/valid, eps/momentum, numbers in other forms,
     * names with '-', '.', '_', tabs, trailing comments without a space, UTF-8 in comments, no final newline */
    "input 1x16x16\t# r\xc3\xa9sum\xc3\xa9 \xe2\x9c\x93\nconv\t8\t3 relu\tpad=0#c\nmaxpool 3 stride=1x2\n"
    "conv 8 3x3 pad=valid name=_a-1.b\nbatchnorm eps=1e-3 momentum=1 name=B2\ndropout .5\ndropout 5e-1\n"
    "dropout 0\nbatchnorm momentum=0.01\nstandardize eps=1E-3\nflatten\ndense 2 linear\nsoftmax\ndense 2 softmax",
    /* the largest allowed tensor */
    "input 1x32768x32768\nmaxpool 2x2\nglobalavgpool\ndense 1 sigmoid\n",
};

static void test_good(int *ncases) {
  for (size_t i = 0; i < sizeof GOOD / sizeof GOOD[0]; i++) {
    char what[32];
    snprintf(what, sizeof what, "good[%zu]", i);
    builds(GOOD[i], what);
    (*ncases)++;
  }
  /* every preset at the sizes the tests and the docs use */
  const char *presets[] = {"keras-seed", "tripathi5", "petre-bn", "resnet-s", "resnet-m", "default"};
  const int sizes[] = {32, 64, 128, 224};
  for (int p = 0; p < 6; p++)
    for (int s = 0; s < 4; s++) {
      if (!strcmp(presets[p], "tripathi5") && sizes[s] < 128) continue; /* five conv+pool stages */
      xd_model m;
      xd_err e = {{0}};
      CHECK_MSG(xd_model_from_arg(&m, presets[p], 1, sizes[s], sizes[s], &e) == 0, "%s at %d: %s", presets[p],
                sizes[s], e.msg);
      if (!e.msg[0]) {
        /* the same text with CRLF line endings builds the same model */
        const char *t = m.text;
        size_t n = strlen(t), k = 0;
        char *crlf = malloc(2 * n + 1);
        for (size_t i = 0; i < n; i++) {
          if (t[i] == '\n') crlf[k++] = '\r';
          crlf[k++] = t[i];
        }
        crlf[k] = 0;
        xd_model m2;
        CHECK_MSG(xd_model_build(&m2, crlf, "crlf", &e) == 0, "CRLF %s: %s", presets[p], e.msg);
        if (!e.msg[0]) {
          CHECK(m2.nlayers == m.nlayers && m2.nparams == m.nparams && m2.nbuffers == m.nbuffers);
          for (int i = 0; i < m.nlayers && i < m2.nlayers; i++) {
            xd_layer a = m.layers[i], b = m2.layers[i];
            CHECK_MSG(a.kind == b.kind && a.in0 == b.in0 && a.in1 == b.in1 && a.act == b.act && a.out_c == b.out_c &&
                          a.out_h == b.out_h && a.out_w == b.out_w && !memcmp(&a.p, &b.p, sizeof a.p) &&
                          !strcmp(a.name, b.name),
                      "CRLF %s layer %d differs", presets[p], i);
          }
          xd_model_free(&m2);
        }
        free(crlf);
        xd_model_free(&m);
      }
      (*ncases)++;
    }
}

/* ---- valid but extreme shapes run forward and backward inside their buffers (ASan in scripts/test.sh) ---- */
static const char *const EXTREME[] = {
    "input 1x3x3\nconv 2 9x9 pad=same\nflatten\ndense 1 sigmoid\n",          /* kernel 3x the input */
    "input 2x5x4\nconv 3 7x2 stride=3 pad=same\nglobalavgpool\ndense 1 sigmoid\n",
    "input 1x9x9\nconv 2 2x2 stride=7\nflatten\ndense 1 sigmoid\n",           /* stride larger than the kernel */
    "input 1x9x9\nconv 2 3x3 stride=1000 pad=2\nflatten\ndense 1 sigmoid\n",  /* stride larger than the input */
    "input 1x1x1\nconv 3 1x1\nconv 2 3x3 pad=2\nflatten\ndense 2 softmax\n", /* 1x1 images */
    "input 1x7x6\nmaxpool 7x6\nflatten\ndense 1 sigmoid\n",                    /* window = the input */
    "input 1x8x8\nmaxpool 2x2 stride=5x3\navgpool 1x2 stride=9\nflatten\ndense 1 sigmoid\n",
    "input 1x1x50\nconv 2 1x49 pad=same\nbatchnorm relu\nflatten\ndense 1 sigmoid\n",
    "input 3x4x4\nstandardize\nadd input name=a\nconv 3 4x4 pad=3 in=a\nmaxpool 3x3 stride=2\nglobalavgpool\n"
    "batchnorm\ndense 1 sigmoid\n",
};

static void test_extreme(int *ncases) {
  for (size_t i = 0; i < sizeof EXTREME / sizeof EXTREME[0]; i++) {
    xd_model m;
    xd_err e = {{0}};
    if (xd_model_build(&m, EXTREME[i], "extreme", &e)) {
      CHECK_MSG(0, "extreme[%zu]: %s", i, e.msg);
      continue;
    }
    xd_model_init(&m, XD_INIT_TORCH, 3);
    const int B = 2;
    xd_workspace ws;
    CHECK(xd_workspace_alloc(&ws, &m, B, &e) == 0);
    size_t px = (size_t)m.in_c * m.in_h * m.in_w;
    for (size_t j = 0; j < B * px; j++) ws.act[0][j] = (float)((j * 37) % 11) / 11.0f;
    xd_step_ctx c = {1, 1, 0, 0, B, NULL};
    const float *z = xd_forward(&m, &ws, B, &c);
    int finite = 1;
    for (int j = 0; j < B * m.nout; j++) finite &= isfinite(z[j]) != 0, ws.dlast[j] = 0.5f - (float)j;
    xd_backward(&m, &ws, B, &c, -1);
    for (size_t j = 0; j < m.nparams; j++) finite &= isfinite(m.grads[j]) != 0;
    CHECK_MSG(finite, "extreme[%zu]: non-finite logits or gradients", i);
    xd_workspace_free(&ws, &m);
    xd_model_free(&m);
    (*ncases)++;
  }
}

/* ---- mutations of valid descriptions: each builds, or fails with one line naming the source ---- */
static uint64_t lcg(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return *s >> 33;
}

static void test_mutations(int *ncases) {
  static const char *const words[] = {
      "conv", "maxpool", "dense", "add", "in=", "name=", "pad=", "stride=", "x", "0", "1", "3x3", "1000000",
      "99999999999", "-1", "relu", "softmax", "=", "#", "\r", "\t", "\n", " ", "input", "flatten", "e-9",
      "nan", "2x", "x2", "\xff", "eps=", "momentum=", "bias=", "dropout", "globalavgpool", "batchnorm"};
  const char *seeds[] = {GOOD[0], GOOD[4], GOOD[5], GOOD[6], EXTREME[8], EXTREME[3]};
  const int nseed = (int)(sizeof seeds / sizeof seeds[0]), iters = UNDER_ASAN ? 5000 : 20000;
  uint64_t st = 12345;
  int built = 0, refused = 0;
  char buf[8192];
  for (int it = 0; it < iters; it++) {
    const char *src = seeds[lcg(&st) % nseed];
    size_t n = strlen(src);
    memcpy(buf, src, n + 1);
    int nmut = 1 + (int)(lcg(&st) % 4);
    for (int k = 0; k < nmut && n > 2; k++) {
      size_t at = lcg(&st) % n;
      switch (lcg(&st) % 4) {
        case 0: /* a random byte */
          buf[at] = (char)(lcg(&st) % 255 + 1);
          break;
        case 1: /* delete a run */
        {
          size_t len = 1 + lcg(&st) % 8;
          if (at + len > n) len = n - at;
          memmove(buf + at, buf + at + len, n - at - len + 1);
          n -= len;
          break;
        }
        default: { /* insert a word of the language (or of its edges) */
          const char *w = words[lcg(&st) % (sizeof words / sizeof words[0])];
          size_t len = strlen(w);
          if (n + len + 1 >= sizeof buf) break;
          memmove(buf + at + len, buf + at, n - at + 1);
          memcpy(buf + at, w, len);
          n += len;
        }
      }
    }
    xd_model m;
    xd_err e = {{0}};
    if (xd_model_build(&m, buf, "m.txt", &e) == 0) {
      built++;
      CHECK(m.nlayers > 0 && m.nparams <= XD_MODEL_PARAMS_MAX);
      xd_model_free(&m);
    } else {
      refused++;
      if (strncmp(e.msg, "m.txt:", 6) || strchr(e.msg, '\n') || strlen(e.msg) < 12) {
        CHECK_MSG(0, "mutation %d: message '%s'", it, e.msg);
        break;
      }
    }
  }
  printf("rel_model: %d mutated descriptions: %d built, %d refused\n", iters, built, refused);
  CHECK(built > iters / 200 && refused > iters / 2);
  (*ncases)++;
}

/* ---- limits on the number of layers and the length of the text ---- */
static void test_text_limits(int *ncases) {
  size_t cap = 64 + 6 * (XD_MODEL_MAX_LAYERS + 8);
  char *t = malloc(cap);
  size_t n = (size_t)snprintf(t, cap, "input 1x4x4\nflatten\n");
  for (int i = 0; i < XD_MODEL_MAX_LAYERS - 2; i++) n += (size_t)snprintf(t + n, cap - n, "tanh\n");
  snprintf(t + n, cap - n, "dense 1 sigmoid\n"); /* exactly the limit */
  builds(t, "4096 layers");
  snprintf(t + n, cap - n, "tanh\ntanh\ndense 1 sigmoid\n");
  char want[64];
  snprintf(want, sizeof want, "m.txt:%d: more than %d layers", XD_MODEL_MAX_LAYERS + 2, XD_MODEL_MAX_LAYERS);
  expect_fail(t, want);
  free(t);
  /* a line of exactly the limit is fine; one more character is not (an over-long comment too) */
  char line[XD_MODEL_LINE_MAX + 64];
  memset(line, ' ', sizeof line);
  memcpy(line, "flatten", 7);
  char *text = malloc(2 * sizeof line + 64);
  snprintf(text, 2 * sizeof line + 64, "input 1x4x4\n%.*s\ndense 1 sigmoid\n", XD_MODEL_LINE_MAX, line);
  builds(text, "longest line");
  snprintf(text, 2 * sizeof line + 64, "input 1x4x4\n%.*s\ndense 1 sigmoid\n", XD_MODEL_LINE_MAX + 1, line);
  snprintf(want, sizeof want, "m.txt:2: line of %d characters, longer than the limit of %d", XD_MODEL_LINE_MAX + 1,
           XD_MODEL_LINE_MAX);
  expect_fail(text, want);
  /* CRLF does not count in the length */
  snprintf(text, 2 * sizeof line + 64, "input 1x4x4\r\n%.*s\r\ndense 1 sigmoid\r\n", XD_MODEL_LINE_MAX, line);
  builds(text, "longest line, CRLF");
  free(text);
  /* a text over 1 MiB (e.g. from a checkpoint attribute) */
  char *big = malloc(XD_MODEL_TEXT_MAX + 64);
  memset(big, '\n', XD_MODEL_TEXT_MAX + 63);
  memcpy(big, "input 1x4x4\nflatten\ndense 1 sigmoid\n", 36);
  big[XD_MODEL_TEXT_MAX + 63] = 0;
  expect_fail(big, "m.txt: model description of 1048639 bytes, larger than the limit of 1048576");
  free(big);
  *ncases += 6;
}

/* ---- memory: refused before allocating ---- */

/* Runs fn in a child limited to `as_mb` MiB of address space (not under ASan, whose shadow memory
 * needs terabytes of it), so a refusal that came after a big allocation would show as a failure. */
static int in_child(int (*fn)(void), int as_mb) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    if (!UNDER_ASAN) {
      struct rlimit rl = {(rlim_t)as_mb << 20, (rlim_t)as_mb << 20};
      setrlimit(RLIMIT_AS, &rl);
    }
    _exit(fn());
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static const char *BIG_ARENAS = /* 254 M parameters: 2 arenas of 0.95 GiB */
    "input 1x128x128\nconv 16 3x3 relu\nflatten\ndense 1000 relu\ndense 1 sigmoid\n";

static int child_arenas(void) {
  xd_mem_limit_set((uint64_t)1 << 30);
  xd_model m;
  xd_err e = {{0}};
  double t0 = now();
  if (xd_model_build(&m, BIG_ARENAS, "model.txt", &e) == 0) return 10;
  const char *want = "model.txt:4: the model with its gradients (254018161 parameters, 254017000 in this layer) "
                     "needs 1.9 GiB, above the memory limit of 1.0 GiB (--mem-limit)";
  if (strcmp(e.msg, want)) {
    fprintf(stderr, "got '%s'\nwant '%s'\n", e.msg, want);
    return 11;
  }
  if (now() - t0 > 1.0) return 12;
  /* the same with dense 1000000: the parameter limit, whatever the memory */
  xd_mem_limit_set(0);
  if (xd_model_build(&m, "input 1x128x128\nconv 16 3x3 relu\nflatten\ndense 1000000 relu\ndense 1 sigmoid\n",
                     "ckpt.h5 (stored model)", &e) == 0)
    return 13;
  if (!strstr(e.msg, "ckpt.h5 (stored model):4: dense: 254017000000 parameters in this layer")) {
    fprintf(stderr, "got '%s'\n", e.msg);
    return 14;
  }
  return 0;
}

static const char *BIG_WS = /* 64 x 512 x 512 floats per image: 64 MiB each activation */
    "input 1x512x512\nconv 64 3x3 pad=1\nbatchnorm relu\nglobalavgpool\ndense 1 sigmoid\n";

static int child_workspace(void) {
  xd_mem_limit_set((uint64_t)1 << 30);
  xd_model m;
  xd_err e = {{0}};
  if (xd_model_build(&m, BIG_WS, "ws.txt", &e)) return 20;
  xd_workspace ws;
  double t0 = now();
  if (xd_workspace_alloc(&ws, &m, 32, &e) == 0) return 21;
  if (!strstr(e.msg, "ws.txt: the workspace for batch 32 (with the model's parameters) needs ") ||
      !strstr(e.msg, "GiB, above the memory limit of 1.0 GiB (--mem-limit)")) {
    fprintf(stderr, "got '%s'\n", e.msg);
    return 22;
  }
  if (now() - t0 > 1.0) return 23;
  if (xd_workspace_alloc(&ws, &m, 0, &e) == 0 || !strstr(e.msg, "ws.txt: batch of 0 samples")) return 24;
  if (xd_model_check_train(&m, 32, 1, &e) == 0 || !strstr(e.msg, "ws.txt: training with batch 32 needs ")) return 25;
  xd_model_free(&m);
  return 0;
}

static void test_memory(int *ncases) {
  CHECK_MSG(in_child(child_arenas, 400) == 0, "arena check (see above)");
  CHECK_MSG(in_child(child_workspace, 400) == 0, "workspace check (see above)");
  /* sizes: monotone in the batch, saturating, the training total above its parts */
  xd_model m;
  xd_err e = {{0}};
  CHECK(xd_model_from_arg(&m, "resnet-s", 1, 64, 64, &e) == 0);
  uint64_t w8 = xd_workspace_bytes(&m, 8), w16 = xd_workspace_bytes(&m, 16);
  CHECK(w8 > 0 && w16 > w8 && w16 < 2 * w8 + (1u << 20));
  CHECK(xd_workspace_bytes(&m, 0) == UINT64_MAX && xd_workspace_bytes(&m, -3) == UINT64_MAX);
  CHECK(xd_model_bytes(&m) >= 2 * m.nparams * sizeof(float));
  uint64_t tr = xd_model_train_bytes(&m, 8, 0), tre = xd_model_train_bytes(&m, 8, 1);
  CHECK(tr >= w8 + xd_model_bytes(&m) + 3 * m.nparams * sizeof(float) && tre > tr);
  CHECK(xd_model_train_bytes(&m, 0, 0) == UINT64_MAX);
  xd_mem_limit_set(0);
  CHECK(xd_model_check_train(&m, 8, 1, &e) == 0);
  /* the estimate covers what xd_workspace_alloc really takes (glibc's counters; not under ASan) */
  if (!UNDER_ASAN) {
    struct mallinfo2 a = mallinfo2();
    xd_workspace ws;
    CHECK(xd_workspace_alloc(&ws, &m, 8, &e) == 0);
    struct mallinfo2 b = mallinfo2();
    uint64_t used = (uint64_t)(b.uordblks + b.hblkhd) - (uint64_t)(a.uordblks + a.hblkhd);
    CHECK_MSG(used <= w8 + w8 / 20 + (1u << 16) && w8 <= used + used / 10 + (1u << 16), "workspace estimate %llu vs %llu allocated",
              (unsigned long long)w8, (unsigned long long)used);
    xd_workspace_free(&ws, &m);
  }
  xd_model_free(&m);
  *ncases += 4;
}

/* ---- --model FILE: only regular files of a sane size, no NUL bytes ---- */
static void expect_arg_fail(const char *arg, const char *want) {
  xd_model m;
  xd_err e = {{0}};
  double t0 = now();
  int rc = xd_model_from_arg(&m, arg, 1, 16, 16, &e);
  CHECK_MSG(rc != 0, "--model %s was accepted", arg);
  if (rc == 0) {
    xd_model_free(&m);
    return;
  }
  CHECK_MSG(strstr(e.msg, want) != NULL, "--model %s: '%s' does not contain '%s'", arg, e.msg, want);
  CHECK_MSG(now() - t0 < 2.0, "--model %s took %.1f s", arg, now() - t0);
}

static void write_bytes(const char *path, const char *data, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  CHECK(fwrite(data, 1, n, f) == n);
  fclose(f);
}

static void write_file(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static void test_model_arg(const char *dir, int *ncases) {
  char p[4096], want[4200];
  snprintf(p, sizeof p, "%s/fifo.txt", dir);
  unlink(p);
  CHECK(mkfifo(p, 0600) == 0);
  snprintf(want, sizeof want, "%s: not a regular file (a FIFO)", p);
  expect_arg_fail(p, want);
  unlink(p);
  expect_arg_fail(dir, "not a regular file (a directory)");
  expect_arg_fail("/dev/null", "/dev/null: not a regular file (a character device)");
  snprintf(p, sizeof p, "%s/nosuch.txt", dir);
  expect_arg_fail(p, "nosuch.txt: cannot open model description: No such file or directory");
  expect_arg_fail("kerasseed", "kerasseed: not a preset");
  /* over the size limit: refused from its size, before reading */
  snprintf(p, sizeof p, "%s/huge.txt", dir);
  {
    char *big = malloc(XD_MODEL_TEXT_MAX + 1);
    memset(big, '\n', XD_MODEL_TEXT_MAX + 1);
    write_bytes(p, big, XD_MODEL_TEXT_MAX + 1);
    free(big);
  }
  expect_arg_fail(p, "huge.txt: model description of 1048577 bytes, larger than the limit of 1048576");
  unlink(p);
  /* a NUL byte: named with its line */
  snprintf(p, sizeof p, "%s/nul.txt", dir);
  {
    static const char nul[] = "input 1x16x16\nflatten\ndense 1 sig\0moid\n";
    write_bytes(p, nul, sizeof nul - 1);
  }
  snprintf(want, sizeof want, "%s:3: NUL byte in the model description", p);
  expect_arg_fail(p, want);
  /* an unreadable file */
  snprintf(p, sizeof p, "%s/noperm.txt", dir);
  write_file(p, "input 1x16x16\nflatten\ndense 1 sigmoid\n");
  chmod(p, 0);
  if (geteuid() != 0) expect_arg_fail(p, "noperm.txt: cannot open model description: Permission denied");
  unlink(p);
  /* a CRLF file from Windows, a file without a final newline: accepted */
  snprintf(p, sizeof p, "%s/win.txt", dir);
  write_file(p, "input 1x16x16\r\nconv 4 3x3 relu\r\nflatten\r\ndense 1 sigmoid");
  xd_model m;
  xd_err e = {{0}};
  CHECK_MSG(xd_model_from_arg(&m, p, 1, 16, 16, &e) == 0, "CRLF file: %s", e.msg);
  if (!e.msg[0]) {
    CHECK(m.nlayers == 3 && m.layers[0].out_h == 14 && !strcmp(m.source, p));
    xd_model_free(&m);
  }
  /* ... and so is one saved by Notepad: a byte order mark, CRLF */
  write_file(p, "\xef\xbb\xbfinput 1x16x16\r\nflatten\r\ndense 1 sigmoid\r\n");
  CHECK_MSG(xd_model_from_arg(&m, p, 1, 16, 16, &e) == 0, "BOM file: %s", e.msg);
  if (!e.msg[0]) {
    CHECK(m.nlayers == 2 && !strncmp(m.text, "input", 5));
    xd_model_free(&m);
  }
  write_file(p, "input 1x16x16\n\xef\xbb\xbf\nflatten\ndense 1 sigmoid\n"); /* only at the start */
  snprintf(want, sizeof want, "%s:2: non-ASCII byte 0xef at column 1", p);
  expect_arg_fail(p, want);
  expect_arg_fail("", "--model: an empty name");
  /* a bad line in a file names the file and the line */
  write_file(p, "input 1x16x16\nconv 4 3x relu\nflatten\ndense 1 sigmoid\n");
  snprintf(want, sizeof want, "%s:2: conv: bad kernel size '3x'", p);
  expect_arg_fail(p, want);
  unlink(p);
  *ncases += 11;
}

/* ---- a checkpoint whose stored description is hostile ---- */
static int hostile_ckpt(const char *out, const char *text, xd_err *e) {
  xd_model m;
  if (xd_model_build(&m, "input 1x16x16\nflatten\ndense 1 sigmoid\n", "small", e)) return -1;
  xd_model_init(&m, XD_INIT_TORCH, 1);
  xd_train_state st;
  memset(&st, 0, sizeof st);
  st.threshold = 0.5;
  xd_ckpt_meta *meta = calloc(1, sizeof *meta);
  meta->nclasses = 2;
  snprintf(meta->class_names[0], XD_CLASS_NAME_MAX, "NORMAL");
  snprintf(meta->class_names[1], XD_CLASS_NAME_MAX, "PNEUMONIA");
  int rc = xd_checkpoint_save(out, &m, NULL, &st, meta, e);
  free(meta);
  xd_model_free(&m);
  if (rc) return -1;
  hid_t f = H5Fopen(out, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) return xd_fail(e, "%s: cannot reopen", out);
  /* the same kind of string as the writer's (fixed-length strings are inside the checksummed header) */
  int vlen = 1;
  hid_t a = H5Aopen(f, "model", H5P_DEFAULT);
  if (a >= 0) {
    hid_t t = H5Aget_type(a);
    vlen = H5Tis_variable_str(t) > 0;
    H5Tclose(t);
    H5Aclose(a);
  }
  rc = H5Adelete(f, "model") < 0 ||
       (vlen ? xd_h5_attr_write_str(f, "model", text) : xd_h5_attr_write_fstr(f, "model", text)) != 0;
  if (H5Fclose(f) < 0) rc = 1;
  return rc ? xd_fail(e, "%s: cannot replace the model attribute", out) : 0;
}

static void test_checkpoint(const char *dir, int *ncases) {
  char p[4096], want[4200];
  snprintf(p, sizeof p, "%s/hostile.h5", dir);
  xd_err e = {{0}};
  CHECK_MSG(hostile_ckpt(p, "input 1x32x32\nflatten\ndense 1000000 relu\ndense 1 sigmoid\n", &e) == 0, "%s", e.msg);
  xd_model m;
  CHECK(xd_checkpoint_load(p, &m, NULL, NULL, &e) != 0);
  snprintf(want, sizeof want, "%s (stored model):3: dense: ", p);
  CHECK_MSG(strstr(e.msg, want) != NULL, "'%s' does not contain '%s'", e.msg, want);
  CHECK_MSG(hostile_ckpt(p, "input 1x16x16\nflatten\ndense 8 relu extra\ndense 1 sigmoid\n", &e) == 0, "%s", e.msg);
  CHECK(xd_checkpoint_load(p, &m, NULL, NULL, &e) != 0);
  snprintf(want, sizeof want, "%s (stored model):3: unexpected 'extra'", p);
  CHECK_MSG(strstr(e.msg, want) != NULL, "'%s' does not contain '%s'", e.msg, want);
  unlink(p);
  *ncases += 2;
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "--hostile-ckpt")) { /* the helper for test_rel_model_cli.sh */
    FILE *f = fopen(argv[3], "rb");
    if (!f) return perror(argv[3]), 1;
    static char text[XD_MODEL_TEXT_MAX + 1];
    size_t n = fread(text, 1, XD_MODEL_TEXT_MAX, f);
    fclose(f);
    text[n] = 0;
    xd_err e = {{0}};
    if (hostile_ckpt(argv[2], text, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    return 0;
  }
  const char *dir = argc > 2 ? argv[2] : "testwork/rel_model";
  {
    xd_err e;
    if (xd_mkdir_p(dir, &e)) {
      fprintf(stderr, "%s\n", e.msg);
      return 1;
    }
  }
  int ncases = 0;
  test_table(&ncases);
  printf("rel_model: %zu bad descriptions in the table\n", sizeof BAD / sizeof BAD[0]);
  test_good(&ncases);
  test_extreme(&ncases);
  test_mutations(&ncases);
  test_text_limits(&ncases);
  test_memory(&ncases);
  test_model_arg(dir, &ncases);
  test_checkpoint(dir, &ncases);
  printf("rel_model: %d cases\n", ncases);
  return check_done("rel_model");
}
