/* A trim or a zero that covers a whole block of a dynamic VHDX releases
 * it: its BAT entry becomes UNMAPPED (trim) or ZERO (zero that allows
 * holes) with no file offset, extents report it as a hole, its space is
 * punched, and a later write gives it a new block at the end of the
 * file.  What keeps its space: part of a block, a zero with NO_HOLE (no
 * VHD_IO_MAY_TRIM), a fixed disk, a block that was never written, and
 * an image reached through callbacks (its storage cannot grow, so a
 * released block could never be written again).
 *
 * The BAT is read back from the file by hand ([MS-VHDX] 2.5: 64-bit
 * little-endian entries, the state in bits 0-2, FileOffsetMB in bits
 * 20-63), not through the library.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "vhdkit.h"
#include "mem-backend.h"
#include "scratch.h"

#define MiB (UINT64_C (1) << 20)
#define BLOCK MiB

enum {
  NOT_PRESENT = 0, ZERO = 2, UNMAPPED = 3, FULLY_PRESENT = 6,
};

static int setup (void **state) { (void) state;
                                  return make_scratch ("test-vhdx-release"); }
static int teardown (void **state) { (void) state; return remove_scratch (); }

static void
path_of (char *path, size_t size, const char *name)
{
  snprintf (path, size, "%s/%s", dir, name);
}

/* A new VHDX of size bytes in 1 MiB blocks, open read-write. */
static vhd_disk *
create (const char *path, uint64_t size, bool fixed)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHDX,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = VHD_CREATE_VERSION_2 };
  vhd_disk *d = NULL;

  p.version2.maximum_size = size;
  p.version2.block_size_in_bytes = BLOCK;
  if (vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL,
                               fixed ? VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
                                     : 0, 0, &p, NULL, &d) < 0)
    fail_msg ("create %s: %s", path, vhd_last_error ());
  return d;
}

static vhd_disk *
open_rw (const char *path)
{
  struct vhd_open_options o = { .readonly = false };
  vhd_disk *d = NULL;

  if (vhd_open (path, &o, &d) < 0)
    fail_msg ("open %s: %s", path, vhd_last_error ());
  return d;
}

static void
fill (uint8_t *buf, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (uint8_t) (seed * 131 + i * 7 + (i >> 9)) | 1;
}

static void
write_block (vhd_disk *d, uint64_t block, unsigned seed)
{
  uint8_t *buf = malloc (BLOCK);

  assert_non_null (buf);
  fill (buf, BLOCK, seed);
  assert_int_equal (vhd_pwrite (d, buf, BLOCK, block * BLOCK, 0), 0);
  free (buf);
}

/* Does [offset, offset+len) read as block seed's data (seed 0: zeros)? */
static void
assert_reads (vhd_disk *d, uint64_t offset, size_t len, unsigned seed)
{
  uint8_t *got = malloc (len), *want = malloc (BLOCK);

  assert_non_null (got);
  assert_non_null (want);
  assert_int_equal (vhd_pread (d, got, len, offset), 0);
  if (seed == 0)
    memset (want, 0, BLOCK);
  else
    fill (want, BLOCK, seed);
  assert_memory_equal (got, want + offset % BLOCK, len);
  free (got);
  free (want);
}

/* The payload BAT entry of block b, from the file. */
static uint64_t
bat_entry (const char *path, uint64_t b)
{
  struct vhd_open_options o = { .readonly = true };
  struct vhd_image_info info;
  vhd_disk *d = NULL;
  uint8_t raw[8];
  uint64_t index, v = 0;
  FILE *f;

  assert_int_equal (vhd_open (path, &o, &d), 0);
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  vhd_close (d);
  index = b + b / info.vhdx.chunk_ratio;
  f = fopen (path, "rb");
  assert_non_null (f);
  assert_int_equal (fseeko (f, (off_t) (info.vhdx.bat_offset + index * 8),
                            SEEK_SET), 0);
  assert_int_equal (fread (raw, 1, 8, f), 8);
  fclose (f);
  for (int i = 7; i >= 0; i--)
    v = v << 8 | raw[i];
  return v;
}

static unsigned
entry_state (uint64_t e)
{
  return (unsigned) (e & 7);
}

static uint64_t
entry_offset (uint64_t e)
{
  return (e >> 20) << 20;
}

static uint64_t
file_size (const char *path)
{
  struct stat st;

  assert_int_equal (stat (path, &st), 0);
  return (uint64_t) st.st_size;
}

static uint64_t
file_allocated (const char *path)
{
  struct stat st;

  assert_int_equal (stat (path, &st), 0);
  return (uint64_t) st.st_blocks * 512;
}

struct extent_list {
  uint64_t offset[64], length[64];
  uint32_t flags[64];
  size_t n;
};

static int
add_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  struct extent_list *l = opaque;

  /* Merge runs of the same kind, so that the test sees ranges. */
  if (l->n > 0 && l->flags[l->n - 1] == flags &&
      l->offset[l->n - 1] + l->length[l->n - 1] == offset) {
    l->length[l->n - 1] += length;
    return 0;
  }
  if (l->n == 64)
    return -ENOSPC;
  l->offset[l->n] = offset;
  l->length[l->n] = length;
  l->flags[l->n] = flags;
  l->n++;
  return 0;
}

/* The extent flags of block b (which must be one kind all through). */
static uint32_t
block_extent (vhd_disk *d, uint64_t b)
{
  struct extent_list l = { .n = 0 };

  assert_int_equal (vhd_extents (d, BLOCK, b * BLOCK, add_extent, &l), 0);
  assert_int_equal (l.n, 1);
  assert_int_equal (l.length[0], BLOCK);
  return l.flags[0];
}

static void
assert_check_clean (const char *path)
{
  struct vhd_open_options o = { .readonly = true };
  struct vhd_check_result res;

  assert_int_equal (vhd_check (path, &o, 0, NULL, NULL, &res), 0);
  assert_int_equal (res.corruptions, 0);
  assert_int_equal (res.leaks, 0);
  assert_int_equal (res.recoverable, 0);
}

#define HOLE (VHD_EXTENT_HOLE | VHD_EXTENT_ZERO)

/* Blocks 0-5 written; then block 1 trimmed, 2 zeroed with may-trim, 3
 * zeroed with NO_HOLE, 4 trimmed in part, 5 zeroed with may-trim in a
 * request that starts in block 4 (whole block 5 inside it).
 */
static void
test_whole_blocks_become_states (void **state)
{
  char path[300];
  struct vhd_image_info info;
  uint64_t before, e;
  vhd_disk *d;

  (void) state;
  path_of (path, sizeof path, "states.vhdx");
  d = create (path, 8 * MiB, false);
  for (unsigned b = 0; b < 6; b++)
    write_block (d, b, b + 1);
  assert_int_equal (vhd_flush (d), 0);
  before = file_allocated (path);

  assert_int_equal (vhd_trim (d, BLOCK, 1 * BLOCK, 0), 0);
  assert_int_equal (vhd_zero (d, BLOCK, 2 * BLOCK, VHD_IO_MAY_TRIM), 0);
  assert_int_equal (vhd_zero (d, BLOCK, 3 * BLOCK, 0), 0);
  assert_int_equal (vhd_trim (d, BLOCK / 2, 4 * BLOCK + 4096, 0), 0);
  assert_int_equal (vhd_zero (d, BLOCK + BLOCK / 2, 4 * BLOCK + BLOCK / 2,
                              VHD_IO_MAY_TRIM), 0);

  /* Before any flush: what the open disk says. */
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  assert_int_equal (info.vhdx.block_states[UNMAPPED], 1);
  assert_int_equal (info.vhdx.block_states[ZERO], 2);
  assert_int_equal (info.vhdx.block_states[FULLY_PRESENT], 3);
  assert_int_equal (info.allocated_blocks, 3);
  assert_int_equal (block_extent (d, 0), 0);
  assert_int_equal (block_extent (d, 1), HOLE);
  assert_int_equal (block_extent (d, 2), HOLE);
  assert_int_equal (block_extent (d, 3), 0);
  assert_int_equal (block_extent (d, 5), HOLE);
  assert_reads (d, 0, BLOCK, 1);
  assert_reads (d, 1 * BLOCK, BLOCK, 0);
  assert_reads (d, 2 * BLOCK, BLOCK, 0);
  assert_reads (d, 3 * BLOCK, BLOCK, 0);
  assert_reads (d, 4 * BLOCK, 4096, 5);
  assert_reads (d, 5 * BLOCK, BLOCK, 0);
  vhd_close (d);

  /* In the file, through the log and the close. */
  e = bat_entry (path, 1);
  assert_int_equal (entry_state (e), UNMAPPED);
  assert_int_equal (entry_offset (e), 0);
  e = bat_entry (path, 2);
  assert_int_equal (entry_state (e), ZERO);
  assert_int_equal (entry_offset (e), 0);
  assert_int_equal (entry_state (bat_entry (path, 3)), FULLY_PRESENT);
  assert_int_equal (entry_state (bat_entry (path, 4)), FULLY_PRESENT);
  assert_int_equal (entry_state (bat_entry (path, 5)), ZERO);
  /* Three blocks' space punched (block 4's half too). */
  assert_true (file_allocated (path) + 3 * BLOCK <= before);
  assert_check_clean (path);

  d = open_rw (path);
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  assert_int_equal (info.vhdx.block_states[UNMAPPED], 1);
  assert_int_equal (info.vhdx.block_states[ZERO], 2);
  assert_int_equal (info.allocated_blocks, 3);
  assert_reads (d, 0, BLOCK, 1);
  assert_reads (d, 1 * BLOCK, BLOCK, 0);
  assert_reads (d, 5 * BLOCK, BLOCK, 0);
  vhd_close (d);
}

/* Release, then write into the block before any flush: a new block at
 * the end of the file, not the old space; and the space of a released
 * last block is not given to the next new block either (the file's BAT
 * points at it until the flush).
 */
static void
test_write_after_release_allocates_at_end (void **state)
{
  char path[300];
  uint64_t old, old1, size, e;
  vhd_disk *d;

  (void) state;
  path_of (path, sizeof path, "rewrite.vhdx");
  d = create (path, 8 * MiB, false);
  write_block (d, 0, 1);
  write_block (d, 1, 2);
  vhd_close (d);
  old = entry_offset (bat_entry (path, 0));
  old1 = entry_offset (bat_entry (path, 1));
  assert_int_equal (entry_state (bat_entry (path, 0)), FULLY_PRESENT);
  size = file_size (path);
  assert_int_equal (old1 + BLOCK, size);        /* block 1 is the last */

  d = open_rw (path);
  /* The last block released, then a new block elsewhere. */
  assert_int_equal (vhd_trim (d, BLOCK, 1 * BLOCK, 0), 0);
  write_block (d, 2, 11);
  assert_int_equal (vhd_trim (d, BLOCK, 0, 0), 0);
  assert_reads (d, 0, BLOCK, 0);
  write_block (d, 0, 9);
  assert_reads (d, 0, BLOCK, 9);
  assert_int_equal (block_extent (d, 0), 0);
  /* Released again and written again, all before the flush. */
  assert_int_equal (vhd_zero (d, BLOCK, 0, VHD_IO_MAY_TRIM), 0);
  assert_int_equal (block_extent (d, 0), HOLE);
  write_block (d, 0, 10);
  assert_reads (d, 2 * BLOCK, BLOCK, 11);
  vhd_close (d);

  e = bat_entry (path, 0);
  assert_int_equal (entry_state (e), FULLY_PRESENT);
  assert_true (entry_offset (e) != old);
  assert_true (entry_offset (e) >= size);
  e = bat_entry (path, 2);
  assert_int_equal (entry_state (e), FULLY_PRESENT);
  assert_true (entry_offset (e) >= size);
  assert_int_equal (entry_state (bat_entry (path, 1)), UNMAPPED);
  assert_check_clean (path);
  d = open_rw (path);
  assert_reads (d, 0, BLOCK, 10);
  assert_reads (d, 1 * BLOCK, BLOCK, 0);
  assert_reads (d, 2 * BLOCK, BLOCK, 11);
  vhd_close (d);
}

/* A block never written stays NOT_PRESENT; nothing to release. */
static void
test_not_present_stays (void **state)
{
  char path[300];
  struct vhd_image_info info;
  vhd_disk *d;

  (void) state;
  path_of (path, sizeof path, "absent.vhdx");
  d = create (path, 8 * MiB, false);
  write_block (d, 0, 1);
  assert_int_equal (vhd_trim (d, BLOCK, 2 * BLOCK, 0), 0);
  assert_int_equal (vhd_zero (d, BLOCK, 3 * BLOCK, VHD_IO_MAY_TRIM), 0);
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  assert_int_equal (info.vhdx.block_states[UNMAPPED], 0);
  assert_int_equal (info.vhdx.block_states[ZERO], 0);
  assert_int_equal (info.allocated_blocks, 1);
  vhd_close (d);
  assert_int_equal (entry_state (bat_entry (path, 2)), NOT_PRESENT);
  assert_int_equal (entry_state (bat_entry (path, 3)), NOT_PRESENT);
  assert_int_equal (entry_state (bat_entry (path, 0)), FULLY_PRESENT);
}

/* The last block, shorter than a block inside the disk: a trim to the
 * disk's end covers it whole.
 */
static void
test_short_last_block (void **state)
{
  char path[300];
  uint8_t *buf = malloc (BLOCK);
  vhd_disk *d;

  (void) state;
  assert_non_null (buf);
  path_of (path, sizeof path, "short.vhdx");
  d = create (path, 3 * MiB + MiB / 2, false);
  fill (buf, BLOCK / 2, 4);
  assert_int_equal (vhd_pwrite (d, buf, BLOCK / 2, 3 * BLOCK, 0), 0);
  assert_int_equal (vhd_trim (d, BLOCK / 2, 3 * BLOCK, 0), 0);
  assert_int_equal (vhd_pread (d, buf, BLOCK / 2, 3 * BLOCK), 0);
  for (size_t i = 0; i < BLOCK / 2; i++)
    assert_int_equal (buf[i], 0);
  vhd_close (d);
  assert_int_equal (entry_state (bat_entry (path, 3)), UNMAPPED);
  assert_check_clean (path);
  free (buf);
}

/* A fixed disk stays fully allocated: trimmed and zeroed blocks keep
 * their space and state (and read as zeros).
 */
static void
test_fixed_keeps_blocks (void **state)
{
  char path[300];
  struct vhd_image_info info;
  vhd_disk *d;

  (void) state;
  path_of (path, sizeof path, "fixed.vhdx");
  d = create (path, 8 * MiB, true);
  write_block (d, 1, 1);
  write_block (d, 2, 2);
  assert_int_equal (vhd_trim (d, BLOCK, 1 * BLOCK, 0), 0);
  assert_int_equal (vhd_zero (d, BLOCK, 2 * BLOCK, VHD_IO_MAY_TRIM), 0);
  assert_reads (d, 1 * BLOCK, BLOCK, 0);
  assert_reads (d, 2 * BLOCK, BLOCK, 0);
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  assert_int_equal (info.vhdx.block_states[FULLY_PRESENT], 8);
  vhd_close (d);
  assert_int_equal (entry_state (bat_entry (path, 1)), FULLY_PRESENT);
  assert_int_equal (entry_state (bat_entry (path, 2)), FULLY_PRESENT);
  assert_check_clean (path);
}

/* ---- Through callbacks: storage that cannot grow. ---- */

/* A released block could never be written again (there is no room for
 * a new one): the block keeps its space, and is written again in place.
 */
static void
test_callbacks_keep_blocks (void **state)
{
  char path[300];
  struct vhd_open_options o = { .readonly = false };
  struct vhd_image_info info;
  struct mem m = { .buf = NULL };
  vhd_disk *d = NULL;
  FILE *f;

  (void) state;
  path_of (path, sizeof path, "callbacks.vhdx");
  d = create (path, 8 * MiB, false);
  write_block (d, 1, 1);
  vhd_close (d);
  m.size = (size_t) file_size (path);
  m.buf = malloc (m.size);
  assert_non_null (m.buf);
  f = fopen (path, "rb");
  assert_non_null (f);
  assert_int_equal (fread (m.buf, 1, m.size, f), m.size);
  fclose (f);

  assert_int_equal (vhd_open_with_backend (&mem_callbacks, &m, "mem", &o,
                                           &d), 0);
  assert_int_equal (vhd_trim (d, BLOCK, 1 * BLOCK, 0), 0);
  assert_reads (d, 1 * BLOCK, BLOCK, 0);
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  assert_int_equal (info.vhdx.block_states[FULLY_PRESENT], 1);
  assert_int_equal (info.vhdx.block_states[UNMAPPED], 0);
  write_block (d, 1, 3);
  assert_reads (d, 1 * BLOCK, BLOCK, 3);
  vhd_close (d);
  free (m.buf);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_whole_blocks_become_states),
    cmocka_unit_test (test_write_after_release_allocates_at_end),
    cmocka_unit_test (test_not_present_stays),
    cmocka_unit_test (test_short_last_block),
    cmocka_unit_test (test_fixed_keeps_blocks),
    cmocka_unit_test (test_callbacks_keep_blocks),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
