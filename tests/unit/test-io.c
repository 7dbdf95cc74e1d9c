/* Unit tests of the read/write engine against an in-memory reference
 * model: random writes (unaligned, crossing blocks) on dynamic and fixed
 * disks, with both I/O backends; allocation rules; concurrency; trim and
 * zero; locking; a simulated crash.  (The shell tests check the same
 * images against qemu-img, an independent reader.)
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "image.h"
#include "vhdkit.h"
#include "rng.h"
#include "scratch.h"
#include "require.h"

#define MiB (UINT64_C (1) << 20)

static int image_counter;

static int
setup (void **state)
{
  return make_scratch ("test-io");
}

static int
teardown (void **state)
{
  return remove_scratch ();
}

static void
new_path (char *out, size_t n)
{
  snprintf (out, n, "%s/img%d.vhd", dir, image_counter++);
}

static vhd_disk *
create (char *path, size_t n, uint64_t size, bool fixed)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  vhd_disk *d = NULL;
  int r;

  new_path (path, n);
  p.version2.maximum_size = size;
  r = vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL,
                               fixed ? VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
                               : 0, 0, &p, NULL, &d);
  if (r < 0)
    fail_msg ("create %s: %s", path, vhd_last_error ());
  return d;
}

static vhd_disk *
reopen (const char *path, bool readonly)
{
  struct vhd_open_options o = { .readonly = readonly };
  vhd_disk *d = NULL;
  if (vhd_open (path, &o, &d) < 0)
    fail_msg ("open %s: %s", path, vhd_last_error ());
  return d;
}

static void
assert_matches (vhd_disk *d, const uint8_t *ref, uint64_t size)
{
  uint8_t *buf = malloc (size);
  assert_non_null (buf);
  assert_int_equal (vhd_pread (d, buf, size, 0), 0);
  for (uint64_t i = 0; i < size; i++)
    if (buf[i] != ref[i])
      fail_msg ("byte %llu: read 0x%02x, expected 0x%02x",
                (unsigned long long) i, buf[i], ref[i]);
  free (buf);
}

/* Random writes, some unaligned, some crossing 2 MiB blocks, some zero. */
static void
random_writes (vhd_disk *d, uint8_t *ref, uint64_t size, int n)
{
  uint8_t *buf = malloc (3 * MiB);
  assert_non_null (buf);
  for (int i = 0; i < n; i++) {
    uint64_t len = 1 + rnd () % (i % 4 == 0 ? 3 * MiB : 9000);
    uint64_t off;
    if (i % 5 == 0)   /* straddle a block boundary */
      off = (rnd () % (size / (2 * MiB))) * 2 * MiB + 2 * MiB - len / 2;
    else
      off = rnd () % size;
    if (off >= size)
      off = size - 1;
    if (off + len > size)
      len = size - off;
    if (i % 7 == 0)
      memset (buf, 0, len);
    else
      for (uint64_t k = 0; k < len; k++)
        buf[k] = (uint8_t) rnd ();
    if (vhd_pwrite (d, buf, len, off, 0) < 0)
      fail_msg ("write %llu@%llu: %s", (unsigned long long) len,
                (unsigned long long) off, vhd_last_error ());
    memcpy (ref + off, buf, len);
    if (i % 10 == 9)
      assert_int_equal (vhd_flush (d), 0);
  }
  free (buf);
}

static void
roundtrip (bool fixed)
{
  char path[300];
  uint64_t size = 32 * MiB + 3 * 512;   /* not a whole number of blocks */
  uint8_t *ref = calloc (1, size);
  vhd_disk *d = create (path, sizeof path, size, fixed);

  rng_state = 0x1234567 + fixed;
  random_writes (d, ref, size, 200);
  assert_matches (d, ref, size);
  assert_int_equal (vhd_flush (d), 0);
  vhd_close (d);
  d = reopen (path, true);
  assert_matches (d, ref, size);
  vhd_close (d);
  free (ref);
}

static void
test_dynamic_random_writes_read_back (void **state)
{
  roundtrip (false);
}

static void
test_fixed_random_writes_read_back (void **state)
{
  roundtrip (true);
}

/* The random writes above ran on this thread's default backend: the ring
 * where the kernel allows it.  Where it does not, they tested pread and
 * pwrite alone, which must not pass for a test of the ring on CI.
 */
static void
test_default_backend_is_the_ring (void **state)
{
  const char *io = getenv ("VHDKIT_IO");

  if (io && strcmp (io, "pread") == 0) {
    /* Asked for (make check-valgrind): pread is then the default. */
    assert_string_equal (vhd_io_backend (), "pread");
    return;
  }
  if (strcmp (vhd_io_backend (), "io_uring") != 0)
    skip_or_fail ("io_uring is not available here (VHDKIT_DEBUG=1 says"
                  " why): the engine's ring path was not tested\n");
}

static void *
roundtrip_with_pread_backend (void *arg)
{
  /* The backend is chosen when a thread first does I/O. */
  assert_string_equal (vhd_io_backend (), "pread");
  roundtrip (false);
  roundtrip (true);
  return NULL;
}

static void
test_pread_backend_random_writes_read_back (void **state)
{
  pthread_t t;
  setenv ("VHDKIT_IO", "pread", 1);
  pthread_create (&t, NULL, roundtrip_with_pread_backend, NULL);
  pthread_join (t, NULL);
  unsetenv ("VHDKIT_IO");
}

static uint32_t
allocated_blocks (vhd_disk *d)
{
  struct vhd_image_info info;
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  return info.allocated_blocks;
}

static void
test_zero_write_does_not_allocate (void **state)
{
  char path[300];
  vhd_disk *d = create (path, sizeof path, 16 * MiB, false);
  uint8_t *zeros = calloc (1, 4 * MiB);

  assert_int_equal (vhd_pwrite (d, zeros, 4 * MiB, 2 * MiB, 0), 0);
  assert_int_equal (vhd_pwrite (d, zeros, 1000, 123, 0), 0);
  assert_int_equal (allocated_blocks (d), 0);
  zeros[0] = 1;
  assert_int_equal (vhd_pwrite (d, zeros, 1, 5 * MiB, 0), 0);
  assert_int_equal (allocated_blocks (d), 1);
  vhd_close (d);
  free (zeros);
}

struct racer {
  vhd_disk *d;
  int index;
};

static void *
race_into_one_block (void *arg)
{
  struct racer *r = arg;
  uint8_t buf[4096];
  memset (buf, 0x40 + r->index, sizeof buf);
  /* Every thread writes its own 4 KiB of block 3. */
  if (vhd_pwrite (r->d, buf, sizeof buf,
                  6 * MiB + (uint64_t) r->index * 4096, 0) < 0)
    fail_msg ("write: %s", vhd_last_error ());
  return NULL;
}

static void
test_concurrent_writers_allocate_once (void **state)
{
  enum { N = 16 };
  char path[300];
  vhd_disk *d = create (path, sizeof path, 16 * MiB, false);
  pthread_t t[N];
  struct racer r[N];
  uint8_t buf[4096];

  for (int i = 0; i < N; i++) {
    r[i] = (struct racer) { d, i };
    pthread_create (&t[i], NULL, race_into_one_block, &r[i]);
  }
  for (int i = 0; i < N; i++)
    pthread_join (t[i], NULL);
  assert_int_equal (allocated_blocks (d), 1);
  for (int i = 0; i < N; i++) {
    assert_int_equal (vhd_pread (d, buf, sizeof buf,
                                 6 * MiB + (uint64_t) i * 4096), 0);
    for (size_t k = 0; k < sizeof buf; k++)
      assert_int_equal (buf[k], 0x40 + i);
  }
  vhd_close (d);
}

struct extent_log {
  uint64_t off[64], len[64];
  uint32_t flags[64];
  int n;
};

static int
log_extent (void *opaque, uint64_t off, uint64_t len, uint32_t flags)
{
  struct extent_log *l = opaque;
  if (l->n > 0 && l->flags[l->n - 1] == flags &&
      l->off[l->n - 1] + l->len[l->n - 1] == off) {
    l->len[l->n - 1] += len;
    return 0;
  }
  assert_true (l->n < 64);
  l->off[l->n] = off;
  l->len[l->n] = len;
  l->flags[l->n] = flags;
  l->n++;
  return 0;
}

static void
test_trim_whole_block_reads_zero_and_is_a_hole (void **state)
{
  char path[300];
  vhd_disk *d = create (path, sizeof path, 8 * MiB, false);
  uint8_t *buf = malloc (2 * MiB);
  struct extent_log log = { .n = 0 };

  memset (buf, 0x77, 2 * MiB);
  assert_int_equal (vhd_pwrite (d, buf, 2 * MiB, 2 * MiB, 0), 0);
  assert_int_equal (vhd_pwrite (d, buf, 512, 6 * MiB, 0), 0);
  assert_int_equal (vhd_flush (d), 0);
  assert_int_equal (vhd_trim (d, 2 * MiB, 2 * MiB, 0), 0);
  assert_int_equal (vhd_pread (d, buf, 2 * MiB, 2 * MiB), 0);
  for (size_t k = 0; k < 2 * MiB; k++)
    assert_int_equal (buf[k], 0);

  assert_int_equal (vhd_extents (d, 8 * MiB, 0, log_extent, &log), 0);
  /* 0-6 MiB: unallocated, trimmed, unallocated; 6-8 MiB: a new dynamic
   * block, allocated whole.
   */
  assert_int_equal (log.n, 2);
  assert_int_equal (log.off[0], 0);
  assert_int_equal (log.len[0], 6 * MiB);
  assert_int_equal (log.flags[0], VHD_EXTENT_HOLE | VHD_EXTENT_ZERO);
  assert_int_equal (log.off[1], 6 * MiB);
  assert_int_equal (log.len[1], 2 * MiB);
  assert_int_equal (log.flags[1], 0);

  /* The cleared bits survive a reopen. */
  vhd_close (d);
  d = reopen (path, true);
  assert_int_equal (vhd_pread (d, buf, 2 * MiB, 2 * MiB), 0);
  for (size_t k = 0; k < 2 * MiB; k++)
    assert_int_equal (buf[k], 0);
  vhd_close (d);
  free (buf);
}

static void
test_zero_partial_range_keeps_the_rest (void **state)
{
  char path[300];
  vhd_disk *d = create (path, sizeof path, 4 * MiB, false);
  uint8_t buf[8192];

  memset (buf, 0x99, sizeof buf);
  assert_int_equal (vhd_pwrite (d, buf, sizeof buf, 1 * MiB, 0), 0);
  assert_int_equal (vhd_zero (d, 1000, 1 * MiB + 100, VHD_IO_MAY_TRIM), 0);
  assert_int_equal (vhd_zero (d, 1024, 1 * MiB + 4096, 0), 0);
  assert_int_equal (vhd_pread (d, buf, sizeof buf, 1 * MiB), 0);
  for (size_t k = 0; k < sizeof buf; k++) {
    bool zeroed = (k >= 100 && k < 1100) || (k >= 4096 && k < 5120);
    if (buf[k] != (zeroed ? 0 : 0x99))
      fail_msg ("byte %zu is 0x%02x", k, buf[k]);
  }
  vhd_close (d);
}

static void
test_readonly_refuses_writes (void **state)
{
  char path[300];
  vhd_disk *d = create (path, sizeof path, 4 * MiB, false);
  uint8_t b = 1;
  vhd_close (d);
  d = reopen (path, true);
  assert_int_equal (vhd_pwrite (d, &b, 1, 0, 0), -EROFS);
  assert_int_equal (vhd_zero (d, 512, 0, 0), -EROFS);
  vhd_close (d);
}

static void
test_range_past_end_is_einval (void **state)
{
  char path[300];
  vhd_disk *d = create (path, sizeof path, 4 * MiB, false);
  uint8_t b[2];
  assert_int_equal (vhd_pread (d, b, 2, 4 * MiB - 1), -EINVAL);
  assert_int_equal (vhd_pwrite (d, b, 1, 4 * MiB, 0), -EINVAL);
  assert_int_equal (vhd_pread (d, b, 1, UINT64_MAX), -EINVAL);
  vhd_close (d);
}

static void
test_second_writer_is_refused (void **state)
{
  char path[300];
  vhd_disk *d = create (path, sizeof path, 4 * MiB, false);
  struct vhd_open_options o = { .readonly = false };
  vhd_disk *d2 = NULL;

  assert_int_equal (vhd_open (path, &o, &d2), -EBUSY);
  assert_non_null (strstr (vhd_last_error (), "in use"));
  /* A plain reader is refused too (qemu's rule); force-share gets in. */
  o.readonly = true;
  assert_int_equal (vhd_open (path, &o, &d2), -EBUSY);
  assert_non_null (strstr (vhd_last_error (), "open for writing"));
  o.flags = VHD_OPEN_FLAG_FORCE_SHARE;
  assert_int_equal (vhd_open (path, &o, &d2), 0);
  vhd_close (d2);
  vhd_close (d);
}

/* A process that dies without closing: what it flushed is there, and
 * the image opens.
 */
static void
test_crash_after_flush_keeps_flushed_data (void **state)
{
  char path[300];
  vhd_disk *d = create (path, sizeof path, 16 * MiB, false);
  uint8_t buf[4096];
  pid_t pid;
  int status;

  vhd_close (d);
  pid = fork ();
  if (pid == 0) {
    vhd_disk *c = reopen (path, false);
    memset (buf, 0xaa, sizeof buf);
    vhd_pwrite (c, buf, sizeof buf, 3 * MiB, 0);
    vhd_flush (c);
    memset (buf, 0xbb, sizeof buf);
    vhd_pwrite (c, buf, sizeof buf, 9 * MiB, 0);      /* never flushed */
    _exit (0);
  }
  waitpid (pid, &status, 0);
  d = reopen (path, false);
  assert_int_equal (vhd_pread (d, buf, sizeof buf, 3 * MiB), 0);
  for (size_t k = 0; k < sizeof buf; k++)
    assert_int_equal (buf[k], 0xaa);
  vhd_close (d);
}

struct half_writer {
  vhd_disk *d;
  int half;                     /* 0: first 256 bytes of each sector */
};

static void *
write_halves (void *arg)
{
  struct half_writer *w = arg;
  uint8_t buf[256];

  memset (buf, 0x10 + w->half, sizeof buf);
  for (uint64_t s = 0; s < 2000; s++)
    if (vhd_pwrite (w->d, buf, sizeof buf, s * 512 + 256 * w->half, 0) < 0)
      fail_msg ("write: %s", vhd_last_error ());
  return NULL;
}

/* Two writers that never overlap but share every sector: the
 * read-modify-write of one must not undo the other's bytes.
 */
static void
test_concurrent_subsector_writes_keep_both (void **state)
{
  char path[300];
  vhd_disk *d = create (path, sizeof path, 4 * MiB, false);
  struct half_writer w[2] = { { d, 0 }, { d, 1 } };
  pthread_t t[2];
  uint8_t *buf = malloc (2000 * 512);

  for (int i = 0; i < 2; i++)
    pthread_create (&t[i], NULL, write_halves, &w[i]);
  for (int i = 0; i < 2; i++)
    pthread_join (t[i], NULL);
  assert_int_equal (vhd_pread (d, buf, 2000 * 512, 0), 0);
  for (size_t k = 0; k < 2000 * 512; k++)
    if (buf[k] != ((k % 512) < 256 ? 0x10 : 0x11))
      fail_msg ("byte %zu is 0x%02x: a half-sector write was lost", k,
                buf[k]);
  free (buf);
  vhd_close (d);
}

/* Zero into a differencing block allocated by an earlier open (its
 * bitmap not loaded yet) reads zeros there and the parent elsewhere.
 */
static void
test_zero_on_reopened_differencing_block (void **state)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  char base[300], child[300];
  vhd_disk *d = create (base, sizeof base, 4 * MiB, false);
  uint8_t buf[16384];

  memset (buf, 0xcd, sizeof buf);
  assert_int_equal (vhd_pwrite (d, buf, sizeof buf, 0, 0), 0);
  vhd_close (d);
  new_path (child, sizeof child);
  p.version2.parent_path = base;
  if (vhd_create_virtual_disk (&st, child, VHD_ACCESS_NONE, NULL, 0, 0, &p,
                               NULL, &d) < 0)
    fail_msg ("create child: %s", vhd_last_error ());
  memset (buf, 0xee, 4096);
  assert_int_equal (vhd_pwrite (d, buf, 4096, 0, 0), 0);
  vhd_close (d);

  d = reopen (child, false);
  assert_int_equal (vhd_zero (d, 4096, 8192, 0), 0);
  assert_int_equal (vhd_pread (d, buf, sizeof buf, 0), 0);
  for (size_t k = 0; k < sizeof buf; k++) {
    uint8_t want = k < 4096 ? 0xee : k >= 8192 && k < 12288 ? 0 : 0xcd;
    if (buf[k] != want)
      fail_msg ("byte %zu is 0x%02x, expected 0x%02x", k, buf[k], want);
  }
  vhd_close (d);
}

/* The sector bitmap cache holds at most its budget of clean bitmaps and
 * reads dropped ones back; bitmaps with unflushed changes stay however
 * many there are, and nothing written is lost across evictions, flush and
 * reopen.  A differencing child over a full parent, one sector of each
 * 2 MiB block written twice; the budget cut to a few bitmaps.
 */
static void
test_bitmap_cache_bounded_and_lossless (void **state)
{
  const uint64_t size = 64 * MiB, block = 2 * MiB;
  const uint32_t blocks = (uint32_t) (size / block);
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  char parent_path[300], path[300];
  uint8_t *ref = malloc (size), sector[512];
  vhd_disk *parent, *d = NULL;
  struct vhd_bitmap_cache *c;

  assert_non_null (ref);
  for (uint64_t i = 0; i < size; i++)
    ref[i] = (uint8_t) (i * 7 + (i >> 12));
  parent = create (parent_path, sizeof parent_path, size, false);
  assert_int_equal (vhd_pwrite (parent, ref, size, 0, 0), 0);
  vhd_close (parent);

  new_path (path, sizeof path);
  p.version2.parent_path = parent_path;
  if (vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL, 0, 0, &p,
                               NULL, &d) < 0)
    fail_msg ("create %s: %s", path, vhd_last_error ());
  c = &((struct vhd_disk *) d)->bitmap_cache;
  c->budget = 4096;

  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t b = 0; b < blocks; b++) {
      uint64_t off = b * block + (pass ? 100 : 3) * 512;
      memset (sector, 0xa0 + pass, sizeof sector);
      memcpy (ref + off, sector, sizeof sector);
      assert_int_equal (vhd_pwrite (d, sector, sizeof sector, off, 0), 0);
    }
    /* Every changed bitmap is pinned until the flush writes it. */
    assert_true (c->count >= blocks);
    assert_matches (d, ref, size);
    assert_int_equal (vhd_flush (d), 0);
    assert_true (c->bytes <= c->budget);
    assert_matches (d, ref, size);
    assert_true (c->bytes <= c->budget);
  }
  /* The reads above found most bitmaps dropped and read them back. */
  assert_true (c->loads >= blocks);
  vhd_close (d);

  d = reopen (path, true);
  assert_matches (d, ref, size);
  vhd_close (d);
  free (ref);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_dynamic_random_writes_read_back),
    cmocka_unit_test (test_fixed_random_writes_read_back),
    cmocka_unit_test (test_default_backend_is_the_ring),
    cmocka_unit_test (test_pread_backend_random_writes_read_back),
    cmocka_unit_test (test_zero_write_does_not_allocate),
    cmocka_unit_test (test_concurrent_writers_allocate_once),
    cmocka_unit_test (test_trim_whole_block_reads_zero_and_is_a_hole),
    cmocka_unit_test (test_zero_partial_range_keeps_the_rest),
    cmocka_unit_test (test_readonly_refuses_writes),
    cmocka_unit_test (test_range_past_end_is_einval),
    cmocka_unit_test (test_second_writer_is_refused),
    cmocka_unit_test (test_crash_after_flush_keeps_flushed_data),
    cmocka_unit_test (test_concurrent_subsector_writes_keep_both),
    cmocka_unit_test (test_zero_on_reopened_differencing_block),
    cmocka_unit_test (test_bitmap_cache_bounded_and_lossless),
  };
  return cmocka_run_group_tests (tests, setup, teardown);
}
