/* libFuzzer target: image decoding and resizing from memory (src/image.c: libjpeg-turbo, libpng,
 * stb_image for BMP/GIF/PNM), at a shrinking and an enlarging size. Refusals must carry a one-line
 * printable ASCII reason. The memory limit is lowered so that huge declared sizes are refused quickly. */
#include "fuzz_util.h"
#include "image.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  xd_mem_limit_set((uint64_t)256 << 20);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  static uint8_t out[48 * 48];
  static const int sizes[2] = {48, 5};
  for (int k = 0; k < 2; k++) {
    xd_err e = {{0}};
    if (xd_image_decode_gray_mem(d, n, "fuzz.img", sizes[k], out, &e) != 0) {
      fz_check_msg("image", e.msg, 1);
      if (strncmp(e.msg, "fuzz.img: ", 10) != 0) {
        fprintf(stderr, "image: message does not name the file: '%s'\n", e.msg);
        abort();
      }
      return 0;
    }
  }
  return 0;
}
