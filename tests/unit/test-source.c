/* Unit tests of a create from a source disk (SourcePath), blocking: raw
 * files (written and sparse), VHD sources of each type, a differencing
 * chain flattened, the size rules, source detection, the lock against
 * writers, and the source's extents.  (The asynchronous create:
 * unit/test-async.c; block devices, samples and other readers: the shell
 * tests test-convert-*.sh.)
 */

#include <config.h>

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "convert-helpers.h"
#include "require.h"
#include "source.h"
#include "vhdkit.h"

#define SOURCE_SIZE (20 * MiB)          /* 10 blocks, 5 of them data */

static int
setup (void **state)
{
  return make_scratch ("test-source");
}

static int
teardown (void **state)
{
  return remove_scratch ();
}

static vhd_disk *
convert (const char *source, char *path, size_t n, uint32_t flags)
{
  struct from_source o = { .flags = flags };
  vhd_disk *disk = NULL;

  scratch_path (path, n, "vhd");
  if (create_from (source, path, &o, &disk) < 0)
    fail_msg ("create %s from %s: %s", path, source, vhd_last_error ());
  assert_non_null (disk);
  return disk;
}

static void
expect_create_failure (const char *source, const struct from_source *o,
                       int err, const char *mention)
{
  char path[PATH_MAX];
  vhd_disk *disk = NULL;
  int r;

  scratch_path (path, sizeof path, "vhd");
  r = create_from (source, path, o, &disk);
  if (r != -err)
    fail_msg ("expected %d (%s), got %d: %s", -err, strerror (err), r,
              vhd_last_error ());
  if (strstr (vhd_last_error (), mention) == NULL)
    fail_msg ("message does not mention \"%s\": %s", mention,
              vhd_last_error ());
  assert_null (disk);
  assert_nothing_left (path);
}

static void
test_raw_to_dynamic (void **state)
{
  char raw[PATH_MAX], path[PATH_MAX];
  vhd_disk *disk;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, SOURCE_SIZE, 1, false);
  disk = convert (raw, path, sizeof path, 0);
  assert_int_equal (vhd_get_size (disk), SOURCE_SIZE);
  assert_disk_holds_pattern (disk, SOURCE_SIZE, 1);
  /* The written zeros left their blocks unallocated. */
  assert_int_equal (allocated_blocks (disk), 5);
  vhd_close (disk);
}

static void
test_round_trip (void **state)
{
  char raw[PATH_MAX], dyn[PATH_MAX], fixed[PATH_MAX], dyn2[PATH_MAX];
  struct vhd_image_info info;
  vhd_disk *disk;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, SOURCE_SIZE, 2, true);
  vhd_close (convert (raw, dyn, sizeof dyn, 0));

  disk = convert (dyn, fixed, sizeof fixed,
                  VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION);
  assert_int_equal (vhd_get_image_info (disk, &info), 0);
  assert_int_equal (info.disk_type, VHD_TYPE_FIXED);
  assert_disk_holds_pattern (disk, SOURCE_SIZE, 2);
  vhd_close (disk);

  disk = convert (fixed, dyn2, sizeof dyn2, 0);
  assert_int_equal (vhd_get_image_info (disk, &info), 0);
  assert_int_equal (info.disk_type, VHD_TYPE_DYNAMIC);
  assert_int_equal (info.allocated_blocks, 5);
  assert_disk_holds_pattern (disk, SOURCE_SIZE, 2);
  vhd_close (disk);
}

static void
test_small_blocks (void **state)
{
  char raw[PATH_MAX], path[PATH_MAX];
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 1 };
  vhd_disk *disk = NULL;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, SOURCE_SIZE, 3, false);
  scratch_path (path, sizeof path, "vhd");
  p.version1.source_path = raw;
  p.version1.block_size_in_bytes = VHD_BLOCK_SIZE_SMALL;
  assert_int_equal (vhd_create_virtual_disk (&st, path, VHD_ACCESS_ALL,
                                             NULL, 0, 0, &p, NULL, &disk),
                    0);
  assert_disk_holds_pattern (disk, SOURCE_SIZE, 3);
  assert_int_equal (allocated_blocks (disk), 20);      /* 5 x 4 */
  vhd_close (disk);
}

static void
test_extend (void **state)
{
  char raw[PATH_MAX], path[PATH_MAX];
  struct from_source o = { .size = 32 * MiB };
  vhd_disk *disk = NULL;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, SOURCE_SIZE, 4, false);
  scratch_path (path, sizeof path, "vhd");
  assert_int_equal (create_from (raw, path, &o, &disk), 0);
  assert_int_equal (vhd_get_size (disk), 32 * MiB);
  assert_disk_holds_pattern (disk, SOURCE_SIZE, 4);
  vhd_close (disk);

  o.flags = VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION;
  scratch_path (path, sizeof path, "vhd");
  assert_int_equal (create_from (raw, path, &o, &disk), 0);
  assert_disk_holds_pattern (disk, SOURCE_SIZE, 4);
  vhd_close (disk);
}

static void
test_size_rules (void **state)
{
  char raw[PATH_MAX], odd[PATH_MAX], tiny[PATH_MAX], path[PATH_MAX];
  struct from_source o = { .size = SOURCE_SIZE - 512 };
  vhd_disk *disk = NULL;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, SOURCE_SIZE, 5, false);
  expect_create_failure (raw, &o, EINVAL, "is smaller than source_path");

  scratch_path (odd, sizeof odd, "raw");
  write_raw (odd, 4 * MiB + 100, 5, false);
  o.size = 0;
  expect_create_failure (odd, &o, EINVAL,
                         "not a whole number of 512-byte sectors");
  o.size = 8 * MiB;
  expect_create_failure (odd, &o, EINVAL, "pad it to 4194816 bytes");

  /* Under 3 MiB: only with a size that extends it. */
  scratch_path (tiny, sizeof tiny, "raw");
  write_raw (tiny, MiB, 5, false);
  o.size = 0;
  expect_create_failure (tiny, &o, EINVAL, "under the minimum VHD size");
  o.size = 3 * MiB;
  scratch_path (path, sizeof path, "vhd");
  assert_int_equal (create_from (tiny, path, &o, &disk), 0);
  assert_disk_holds_pattern (disk, MiB, 5);
  vhd_close (disk);

  /* A parent and a source: a new disk has one or the other. */
  o.size = 0;
  o.parent = path;
  expect_create_failure (raw, &o, EINVAL, "are both set");
}

static void
test_source_missing_or_odd (void **state)
{
  struct from_source o = { 0 };

  expect_create_failure ("/nonexistent/disk.raw", &o, ENOENT,
                         "source_path /nonexistent/disk.raw");
  expect_create_failure (dir, &o, EINVAL, "is a directory");
  expect_create_failure ("/dev/null", &o, EINVAL, "is a character device");
}

static void
test_source_type (void **state)
{
  char raw[PATH_MAX], vhd[PATH_MAX], path[PATH_MAX];
  struct from_source o = { .source_device = VHD_STORAGE_DEVICE_VHD };
  vhd_disk *disk = NULL;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, SOURCE_SIZE, 6, false);
  expect_create_failure (raw, &o, EINVAL, "is not a VHD image");

  vhd_close (convert (raw, vhd, sizeof vhd, 0));
  scratch_path (path, sizeof path, "vhd");
  assert_int_equal (create_from (vhd, path, &o, &disk), 0);
  assert_disk_holds_pattern (disk, SOURCE_SIZE, 6);
  vhd_close (disk);

  /* A VHD is not what a source type of VHDX asks for. */
  o.source_device = VHD_STORAGE_DEVICE_VHDX;
  expect_create_failure (vhd, &o, EINVAL, "is not a VHDX image (VHD)");
}

/* A "conectix" cookie without a valid footer is a damaged VHD: it is not
 * copied as a raw disk either.
 */
static void
test_damaged_vhd (void **state)
{
  char raw[PATH_MAX];
  struct from_source o = { 0 };
  uint8_t sector[512];
  int fd;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, SOURCE_SIZE, 7, false);
  memset (sector, 0x55, sizeof sector);
  memcpy (sector, "conectix", 8);
  fd = open (raw, O_WRONLY);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, sector, 512, SOURCE_SIZE - 512), 512);
  close (fd);
  expect_create_failure (raw, &o, EINVAL, "no valid footer");
}

/* A differencing chain flattens into one disk with the chain's view. */
static void
test_differencing_source (void **state)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  char raw[PATH_MAX], base[PATH_MAX], child[PATH_MAX], flat[PATH_MAX];
  static uint8_t a[3 * MiB], b[3 * MiB];
  vhd_disk *chain, *disk;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, SOURCE_SIZE, 8, true);
  vhd_close (convert (raw, base, sizeof base, 0));
  scratch_path (child, sizeof child, "vhd");
  p.version2.parent_path = base;
  assert_int_equal (vhd_create_virtual_disk (&st, child, VHD_ACCESS_NONE,
                                             NULL, 0, 0, &p, NULL, &chain),
                    0);
  /* Over data, over zeros, across blocks, unaligned. */
  memset (a, 0xa7, sizeof a);
  assert_int_equal (vhd_pwrite (chain, a, 3 * MiB, 3 * MiB + 512, 0), 0);
  assert_int_equal (vhd_pwrite (chain, a, 4096, 17 * MiB + 7, 0), 0);
  assert_int_equal (vhd_flush (chain), 0);

  disk = convert (child, flat, sizeof flat, 0);
  assert_int_equal (vhd_get_size (disk), SOURCE_SIZE);
  assert_null (vhd_get_parent (disk));
  for (uint64_t off = 0; off < SOURCE_SIZE; off += sizeof a) {
    size_t n = SOURCE_SIZE - off < sizeof a ? SOURCE_SIZE - off : sizeof a;
    assert_int_equal (vhd_pread (chain, a, n, off), 0);
    assert_int_equal (vhd_pread (disk, b, n, off), 0);
    assert_memory_equal (a, b, n);
  }
  vhd_close (disk);
  vhd_close (chain);
}

static void
test_prevent_writes (void **state)
{
  char raw[PATH_MAX], vhd[PATH_MAX], path[PATH_MAX];
  struct from_source o = {
    .flags = VHD_CREATE_FLAG_PREVENT_WRITES_TO_SOURCE_DISK,
  };
  vhd_disk *writer, *disk = NULL;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, SOURCE_SIZE, 9, false);
  vhd_close (convert (raw, vhd, sizeof vhd, 0));
  assert_int_equal (vhd_open (vhd, NULL, &writer), 0);

  expect_create_failure (vhd, &o, EBUSY, "open for writing");
  /* Without the flag, the source is read as it is. */
  o.flags = 0;
  scratch_path (path, sizeof path, "vhd");
  assert_int_equal (create_from (vhd, path, &o, &disk), 0);
  assert_disk_holds_pattern (disk, SOURCE_SIZE, 9);
  vhd_close (disk);
  vhd_close (writer);

  /* With no writer, the flag lets the copy run, and the lock goes with
   * it: a writer can open the source afterwards.
   */
  o.flags = VHD_CREATE_FLAG_PREVENT_WRITES_TO_SOURCE_DISK;
  scratch_path (path, sizeof path, "vhd");
  assert_int_equal (create_from (vhd, path, &o, &disk), 0);
  vhd_close (disk);
  assert_int_equal (vhd_open (vhd, NULL, &writer), 0);
  vhd_close (writer);
}

struct extent_log {
  uint64_t next;
  unsigned holes, data;
};

static int
log_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  struct extent_log *l = opaque;

  assert_int_equal (offset, l->next);
  l->next = offset + length;
  if (flags & VHD_EXTENT_ZERO)
    l->holes++;
  else
    l->data++;
  return 0;
}

/* The source's extents: holes of a sparse file, unallocated blocks of a
 * VHD, nothing of a file without holes.
 */
static void
test_extents (void **state)
{
  char sparse[PATH_MAX], full[PATH_MAX], vhd[PATH_MAX];
  struct vhd_source *src;
  struct extent_log log = { 0 };

  scratch_path (sparse, sizeof sparse, "raw");
  write_raw (sparse, SOURCE_SIZE, 10, true);
  assert_int_equal (vhd_source_open (sparse, 0, false, NULL, &src), 0);
  assert_int_equal (src->kind, VHD_SOURCE_RAW_FILE);
  assert_int_equal (vhd_source_extents (src, 0, SOURCE_SIZE, log_extent,
                                        &log), 0);
  assert_int_equal (log.next, SOURCE_SIZE);
  if (!src->seek_data)
    skip_or_fail ("%s: the file system has no SEEK_DATA: the holes of a"
                  " raw source cannot be found\n", sparse);
  assert_int_equal (log.data, 5);
  assert_int_equal (log.holes, 5);
  vhd_source_close (src);

  scratch_path (full, sizeof full, "raw");
  write_raw (full, SOURCE_SIZE, 10, false);
  vhd_close (convert (full, vhd, sizeof vhd, 0));
  assert_int_equal (vhd_source_open (vhd, 0, false, NULL, &src), 0);
  assert_int_equal (src->kind, VHD_SOURCE_VHD);
  assert_string_equal (vhd_source_describe (src), "dynamic VHD");
  assert_int_equal (src->size, SOURCE_SIZE);
  log = (struct extent_log) { 0 };
  assert_int_equal (vhd_source_extents (src, 0, SOURCE_SIZE, log_extent,
                                        &log), 0);
  assert_int_equal (log.next, SOURCE_SIZE);
  assert_int_equal (log.holes, 5);
  assert_int_equal (log.data, 5);
  assert_int_equal (vhd_source_extents (src, SOURCE_SIZE, 1, log_extent,
                                        &log), -EINVAL);
  vhd_source_close (src);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_raw_to_dynamic),
    cmocka_unit_test (test_round_trip),
    cmocka_unit_test (test_small_blocks),
    cmocka_unit_test (test_extend),
    cmocka_unit_test (test_size_rules),
    cmocka_unit_test (test_source_missing_or_odd),
    cmocka_unit_test (test_source_type),
    cmocka_unit_test (test_damaged_vhd),
    cmocka_unit_test (test_differencing_source),
    cmocka_unit_test (test_prevent_writes),
    cmocka_unit_test (test_extents),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
