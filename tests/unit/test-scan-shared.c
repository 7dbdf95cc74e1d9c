/* vhdkit unit tests: open and check judge an image by one scanner.
 *
 * For each damaged image here, vhd_open fails, and vhd_check reports the
 * very message that vhd_open failed with among its corruptions: the two
 * cannot drift apart in what they refuse or in how they say it.  (When
 * each parsed the image itself, a data_offset past the file, a fixed
 * image too short for its size and a file with no footer at all were
 * worded differently by the two.)
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

#include "format.h"
#include "vhdkit.h"
#include "scratch.h"

#define MiB (UINT64_C (1) << 20)

static int setup (void **state) { (void) state;
                                  return make_scratch ("test-scan-shared"); }
static int teardown (void **state) { (void) state; return remove_scratch (); }

static void
create_image (const char *path, bool fixed)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  vhd_disk *d = NULL;

  p.version2.maximum_size = 8 * MiB;
  p.version2.block_size_in_bytes = 512 * 1024;
  unlink (path);
  if (vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL,
                               fixed ? VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
                                     : 0, 0, &p, NULL, &d) < 0)
    fail_msg ("create %s: %s", path, vhd_last_error ());
  vhd_close (d);
}

static void
pwrite_at (const char *path, const void *buf, size_t len, off_t at)
{
  int fd = open (path, O_WRONLY);

  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, buf, len, at), (ssize_t) len);
  close (fd);
}

/* Rewrite both footers of a dynamic image (or the one of a fixed one)
 * with field changes applied by fn, checksums recomputed.
 */
static void
edit_footers (const char *path, void (*fn) (uint8_t *footer))
{
  int fd = open (path, O_RDWR);
  off_t size = lseek (fd, 0, SEEK_END);
  uint8_t buf[VHD_FOOTER_SIZE];

  assert_true (fd >= 0);
  assert_int_equal (pread (fd, buf, sizeof buf, size - VHD_FOOTER_SIZE),
                    VHD_FOOTER_SIZE);
  fn (buf);
  vhd_put_be32 (buf + 64, vhd_checksum (buf, sizeof buf, 64));
  assert_int_equal (pwrite (fd, buf, sizeof buf, size - VHD_FOOTER_SIZE),
                    VHD_FOOTER_SIZE);
  if (vhd_get_be32 (buf + 60) != 2)
    assert_int_equal (pwrite (fd, buf, sizeof buf, 0), VHD_FOOTER_SIZE);
  close (fd);
}

struct findings {
  char all[16384];
  const char *want;
  bool found;
};

static void
collect (void *opaque, int kind, const char *message)
{
  struct findings *f = opaque;
  size_t len = strlen (f->all);

  snprintf (f->all + len, sizeof f->all - len, "[%d] %s\n", kind, message);
  if (kind == VHD_CHECK_CORRUPT && strcmp (message, f->want) == 0)
    f->found = true;
}

/* vhd_open refuses path; vhd_check reports that same message. */
static void
expect_same_verdict (const char *path)
{
  struct vhd_open_options o = { .readonly = true };
  struct vhd_check_result res;
  struct findings f = { .all = "" };
  char open_msg[2048];
  vhd_disk *d = NULL;

  if (vhd_open (path, &o, &d) == 0) {
    vhd_close (d);
    fail_msg ("%s: vhd_open accepted a damaged image", path);
  }
  snprintf (open_msg, sizeof open_msg, "%s", vhd_last_error ());
  f.want = open_msg;
  assert_int_equal (vhd_check (path, NULL, 0, collect, &f, &res), 0);
  if (!f.found)
    fail_msg ("vhd_open said:\n  %s\nvhd_check said:\n%s", open_msg, f.all);
  assert_true (res.corruptions > 0);
}

static void
data_offset_past_end (uint8_t *footer)
{
  vhd_put_be64 (footer + 16, UINT64_C (1) << 40);
}

static void
data_offset_into_copy (uint8_t *footer)
{
  vhd_put_be64 (footer + 16, 256);
}

static void
size_too_large (uint8_t *footer)
{
  vhd_put_be64 (footer + 48, 16 * MiB);
}

static void
test_data_offset_past_the_file (void **state)
{
  char path[512];

  (void) state;
  snprintf (path, sizeof path, "%s/past.vhd", dir);
  create_image (path, false);
  edit_footers (path, data_offset_past_end);
  expect_same_verdict (path);
}

static void
test_data_offset_into_the_footer_copy (void **state)
{
  char path[512];

  (void) state;
  snprintf (path, sizeof path, "%s/into.vhd", dir);
  create_image (path, false);
  edit_footers (path, data_offset_into_copy);
  expect_same_verdict (path);
}

static void
test_fixed_image_shorter_than_its_size (void **state)
{
  char path[512];

  (void) state;
  snprintf (path, sizeof path, "%s/short.vhd", dir);
  create_image (path, true);
  edit_footers (path, size_too_large);
  expect_same_verdict (path);
}

static void
test_no_footer_at_all (void **state)
{
  char path[512];
  uint8_t junk[4096];

  (void) state;
  snprintf (path, sizeof path, "%s/junk.vhd", dir);
  memset (junk, 0x5a, sizeof junk);
  unlink (path);
  close (open (path, O_CREAT | O_WRONLY, 0644));
  pwrite_at (path, junk, sizeof junk, 0);
  expect_same_verdict (path);
}

static void
test_bat_entry_past_the_data (void **state)
{
  char path[512];
  uint8_t footer[VHD_FOOTER_SIZE], header[VHD_DYN_HEADER_SIZE], e[4];
  struct vhd_footer f;
  struct vhd_dyn_header h;
  int fd;

  (void) state;
  snprintf (path, sizeof path, "%s/bat.vhd", dir);
  create_image (path, false);
  fd = open (path, O_RDONLY);
  assert_int_equal (pread (fd, footer, sizeof footer, 0), VHD_FOOTER_SIZE);
  assert_int_equal (vhd_footer_decode (footer, &f, path, 0), 0);
  assert_int_equal (pread (fd, header, sizeof header,
                           (off_t) f.data_offset), VHD_DYN_HEADER_SIZE);
  assert_int_equal (vhd_dyn_header_decode (header, &h, path,
                                           f.data_offset), 0);
  close (fd);
  vhd_put_be32 (e, 0x00100000);         /* sector 1 Mi: far past the end */
  pwrite_at (path, e, sizeof e, (off_t) h.table_offset + 4);
  expect_same_verdict (path);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_data_offset_past_the_file),
    cmocka_unit_test (test_data_offset_into_the_footer_copy),
    cmocka_unit_test (test_fixed_image_shorter_than_its_size),
    cmocka_unit_test (test_no_footer_at_all),
    cmocka_unit_test (test_bat_entry_past_the_data),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
