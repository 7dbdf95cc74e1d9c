/* Unit tests of the overlay backend (lib/backend/overlay.c), how a
 * read-only open sees a VHDX log replayed without writing the file:
 * random writes and zeros laid over a file, in order, checked against a
 * plain array that applies the same changes; reads past the file's end;
 * and that nothing reaches the file.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/backend.h"
#include "rng.h"
#include "scratch.h"

#define FILE_SIZE (256 * 1024)
#define VIEW_SIZE (320 * 1024)  /* the replay extends the file */

static int
setup (void **state)
{
  (void) state;
  return make_scratch ("test-overlay");
}

static int
teardown (void **state)
{
  (void) state;
  return remove_scratch ();
}

/* A file of FILE_SIZE pseudo-random bytes, also copied into model. */
static struct vhd_backend *
make_file (const char *name, uint8_t *model)
{
  char path[300];
  int fd;
  struct vhd_backend *be;

  for (size_t i = 0; i < FILE_SIZE; i++)
    model[i] = (uint8_t) rnd ();
  snprintf (path, sizeof path, "%s/%s", dir, name);
  fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, model, FILE_SIZE, 0), FILE_SIZE);
  be = vhd_backend_file_new (fd, path);
  assert_non_null (be);
  return be;
}

static void
test_changes_in_order (void **state)
{
  static uint8_t model[VIEW_SIZE], got[VIEW_SIZE], file_before[FILE_SIZE];
  struct vhd_backend *lower = make_file ("a", model);
  struct vhd_backend *ov;
  uint64_t size;
  int fd;

  (void) state;
  memcpy (file_before, model, FILE_SIZE);
  memset (model + FILE_SIZE, 0, VIEW_SIZE - FILE_SIZE);
  fd = vhd_backend_file_fd (lower);
  assert_int_equal (vhd_backend_overlay_new (lower, &ov), 0);
  /* Still the same file underneath, for the chain's identity checks. */
  assert_int_equal (vhd_backend_file_fd (ov), fd);

  /* Overlapping writes and zeros, later ones winning where they meet,
   * some of them past the file's end.
   */
  for (int i = 0; i < 300; i++) {
    uint64_t len = 1 + rnd () % 9000;
    uint64_t off = rnd () % (VIEW_SIZE - len);
    if (rnd () % 3 == 0) {
      assert_int_equal (vhd_backend_overlay_zero (ov, off, len), 0);
      memset (model + off, 0, len);
    }
    else {
      uint8_t data[9000];
      for (uint64_t j = 0; j < len; j++)
        data[j] = (uint8_t) rnd ();
      assert_int_equal (vhd_backend_overlay_write (ov, data, len, off), 0);
      memcpy (model + off, data, len);
    }
  }
  assert_int_equal (vhd_backend_overlay_extend (ov, VIEW_SIZE), 0);
  assert_int_equal (vhd_backend_get_size (ov, &size), 0);
  assert_int_equal (size, VIEW_SIZE);

  /* Whole, and in random pieces through both entry points. */
  assert_int_equal (vhd_backend_pread_exact (ov, got, VIEW_SIZE, 0, "all"),
                    0);
  assert_memory_equal (got, model, VIEW_SIZE);
  for (int i = 0; i < 500; i++) {
    uint64_t len = 1 + rnd () % 20000;
    uint64_t off = rnd () % (VIEW_SIZE - len);
    struct vhd_segment segs[2] = {
      { .be = ov, .file_offset = off, .length = len / 2, .buf = got },
      { .be = ov, .file_offset = off + len / 2, .length = len - len / 2,
        .buf = got + len / 2 },
    };
    memset (got, 0xee, len);
    assert_int_equal (vhd_io_run (segs, 2, false), 0);
    assert_memory_equal (got, model + off, len);
  }

  /* Past the end of the view: an error, not zeros. */
  assert_true (vhd_backend_pread_exact (ov, got, 2, VIEW_SIZE - 1, "x") < 0);

  /* Nothing was written to the file, and nothing can be. */
  assert_int_equal (vhd_backend_pwrite_exact (ov, got, 512, 0, "x"),
                    -EROFS);
  assert_int_equal (vhd_backend_truncate (ov, 0), -EROFS);
  assert_int_equal (pread (fd, got, FILE_SIZE, 0), FILE_SIZE);
  assert_memory_equal (got, file_before, FILE_SIZE);
  vhd_backend_close (ov);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_changes_in_order),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
