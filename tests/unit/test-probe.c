/* Unit tests of vhd_probe_format(): VHD images of each kind are told
 * from files that are no image (raw, empty, short, a cookie in the wrong
 * place), a VHDX signature is recognised, and what is not a regular file
 * is refused at once: a FIFO (whose plain open would wait for a writer
 * for ever) returns under an alarm that kills a hung test, a directory is
 * an error.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vhdkit.h"
#include "scratch.h"

#define MiB (UINT64_C(1) << 20)

static int setup (void **state) { return make_scratch ("test-probe"); }
static int teardown (void **state) { return remove_scratch (); }

static void
path_of (char *out, size_t n, const char *name)
{
  snprintf (out, n, "%s/%s", dir, name);
}

/* A new VHD at dir/name; fixed with FULL_PHYSICAL_ALLOCATION, else
 * dynamic.
 */
static void
create_image (const char *name, uint32_t flags, char *path, size_t n)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = VHD_CREATE_VERSION_1 };
  vhd_disk *disk = NULL;
  int r;

  path_of (path, n, name);
  p.version1.maximum_size = 8 * MiB;
  r = vhd_create_virtual_disk (&st, path, VHD_ACCESS_ALL, NULL, flags, 0,
                               &p, NULL, &disk);
  if (r < 0)
    fail_msg ("create %s: %s", path, vhd_last_error ());
  vhd_close (disk);
}

/* A file at dir/name holding len bytes of data (NULL: zeros). */
static void
write_file (const char *name, const void *data, size_t len, uint64_t size,
            char *path, size_t n)
{
  int fd;

  path_of (path, n, name);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true (fd >= 0);
  if (data)
    assert_int_equal (write (fd, data, len), (ssize_t) len);
  if (size)
    assert_int_equal (ftruncate (fd, (off_t) size), 0);
  close (fd);
}

static void
test_fixed_vhd (void **state)
{
  char path[512];

  create_image ("fixed.vhd", VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION,
                path, sizeof path);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_VHD);
}

static void
test_dynamic_vhd_any_name (void **state)
{
  char path[512], renamed[512];

  create_image ("dynamic.vhd", 0, path, sizeof path);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_VHD);
  /* The content decides, not the extension. */
  path_of (renamed, sizeof renamed, "dynamic.img");
  assert_int_equal (rename (path, renamed), 0);
  assert_int_equal (vhd_probe_format (renamed, 0), VHD_FORMAT_VHD);
}

/* A dynamic disk whose trailing footer was lost still opens from the
 * copy at offset 0, so it is still a VHD.
 */
static void
test_dynamic_vhd_footer_copy_only (void **state)
{
  char path[512];
  struct stat st;

  create_image ("lost-footer.vhd", 0, path, sizeof path);
  assert_int_equal (stat (path, &st), 0);
  assert_int_equal (truncate (path, st.st_size - 512), 0);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_VHD);
}

/* Old writers left a 511-byte footer: its cookie is 511 bytes from the
 * end.
 */
static void
test_fixed_vhd_511_byte_footer (void **state)
{
  char path[512];
  struct stat st;

  create_image ("short-footer.vhd", VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION,
                path, sizeof path);
  assert_int_equal (stat (path, &st), 0);
  assert_int_equal (truncate (path, st.st_size - 1), 0);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_VHD);
}

/* The registry tries VHDX's signature first: a file that opens with it
 * and ends with a VHD footer (a fixed VHD holding a VHDX) is reported as
 * VHDX, as it always was.
 */
static void
test_vhdx_signature_tried_first (void **state)
{
  char path[512];
  int fd;

  create_image ("both.vhd", VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION,
                path, sizeof path);
  fd = open (path, O_WRONLY);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, "vhdxfile", 8, 0), 8);
  close (fd);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_VHDX);
}

static void
test_vhdx_signature (void **state)
{
  char path[512];

  write_file ("disk.vhdx", "vhdxfile", 8, 1 * MiB, path, sizeof path);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_VHDX);
}

static void
test_not_images (void **state)
{
  char path[512];
  char middle[4096];

  write_file ("raw.vhd", NULL, 0, 4 * MiB, path, sizeof path);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_UNKNOWN);
  write_file ("empty.vhd", NULL, 0, 0, path, sizeof path);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_UNKNOWN);
  write_file ("short.vhd", "conecti", 7, 0, path, sizeof path);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_UNKNOWN);
  /* A cookie where no footer can be is no footer. */
  memset (middle, 'x', sizeof middle);
  memcpy (middle + 1024, "conectix", 8);
  write_file ("middle.vhd", middle, sizeof middle, 0, path, sizeof path);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_UNKNOWN);
}

static void
on_alarm (int sig)
{
  static const char msg[] = "test-probe: vhd_probe_format hung on a FIFO\n";
  (void) sig;
  (void) write (2, msg, sizeof msg - 1);
  _exit (1);
}

static void
test_fifo_never_hangs (void **state)
{
  char path[512];
  struct timespec t0, t1;
  int r;

  path_of (path, sizeof path, "fifo.vhd");
  assert_int_equal (mkfifo (path, 0600), 0);
  signal (SIGALRM, on_alarm);
  alarm (10);
  clock_gettime (CLOCK_MONOTONIC, &t0);
  r = vhd_probe_format (path, 0);
  clock_gettime (CLOCK_MONOTONIC, &t1);
  alarm (0);
  assert_true (r == -EINVAL || r == VHD_FORMAT_UNKNOWN);
  assert_true (t1.tv_sec - t0.tv_sec < 2);
  if (r < 0)
    assert_non_null (strstr (vhd_last_error (), "FIFO"));
}

static void
test_directory_is_an_error (void **state)
{
  char path[512];
  int r;

  path_of (path, sizeof path, "subdir.vhd");
  assert_int_equal (mkdir (path, 0700), 0);
  r = vhd_probe_format (path, 0);
  assert_int_equal (r, -EINVAL);
  assert_non_null (strstr (vhd_last_error (), "directory"));
  assert_non_null (strstr (vhd_last_error (), path));
}

static void
test_missing_and_bad_flags (void **state)
{
  char path[512];

  path_of (path, sizeof path, "no-such-file.vhd");
  assert_int_equal (vhd_probe_format (path, 0), -ENOENT);
  create_image ("flags.vhd", 0, path, sizeof path);
  assert_int_equal (vhd_probe_format (path, 1), -EINVAL);
  assert_int_equal (vhd_probe_format (NULL, 0), -EINVAL);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_fixed_vhd),
    cmocka_unit_test (test_dynamic_vhd_any_name),
    cmocka_unit_test (test_dynamic_vhd_footer_copy_only),
    cmocka_unit_test (test_vhdx_signature),
    cmocka_unit_test (test_fixed_vhd_511_byte_footer),
    cmocka_unit_test (test_vhdx_signature_tried_first),
    cmocka_unit_test (test_not_images),
    cmocka_unit_test (test_fifo_never_hangs),
    cmocka_unit_test (test_directory_is_an_error),
    cmocka_unit_test (test_missing_and_bad_flags),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
