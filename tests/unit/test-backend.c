/* Unit tests of the callback storage backend (vhd_open_with_backend):
 * images held in a memory buffer that the test's callbacks serve, checked
 * against the same bytes opened from a file by path (the file backend),
 * and against the buffer itself.
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
#include "rng.h"
#include "scratch.h"

#define MiB (UINT64_C (1) << 20)
#define DISK_SIZE (8 * MiB)

static int
setup (void **state)
{
  (void) state;
  return make_scratch ("test-backend");
}

static int
teardown (void **state)
{
  (void) state;
  return remove_scratch ();
}

/* Create an image at dir/name: fixed, dynamic, or differencing on
 * parent.
 */
static void
create_image (const char *path, bool fixed, const char *parent)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  vhd_disk *d = NULL;

  p.version2.maximum_size = parent ? 0 : DISK_SIZE;
  p.version2.parent_path = parent;
  if (vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL,
                               fixed ? VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
                               : 0, 0, &p, NULL, &d) < 0)
    fail_msg ("create %s: %s", path, vhd_last_error ());
  vhd_close (d);
}

static void
load_file (const char *path, struct mem *m)
{
  FILE *f = fopen (path, "rb");
  struct stat st;

  assert_non_null (f);
  assert_int_equal (fstat (fileno (f), &st), 0);
  m->size = (size_t) st.st_size;
  m->buf = malloc (m->size);
  assert_non_null (m->buf);
  assert_int_equal (fread (m->buf, 1, m->size, f), m->size);
  fclose (f);
  m->fail = 0;
  m->flushes = 0;
}

static void
save_file (const char *path, const struct mem *m)
{
  FILE *f = fopen (path, "wb");

  assert_non_null (f);
  assert_int_equal (fwrite (m->buf, 1, m->size, f), m->size);
  assert_int_equal (fclose (f), 0);
}

static vhd_disk *
open_mem (struct mem *m, const char *name, bool readonly,
          const char *const *parent_dirs)
{
  struct vhd_open_options o = { .readonly = readonly,
                                .parent_dirs = parent_dirs };
  vhd_disk *d = NULL;

  if (vhd_open_with_backend (&mem_callbacks, m, name, &o, &d) < 0)
    fail_msg ("open %s through callbacks: %s", name, vhd_last_error ());
  return d;
}

/* Read the whole disk opened by path (the file backend). */
static uint8_t *
read_by_path (const char *path)
{
  struct vhd_open_options o = { .readonly = true };
  vhd_disk *d = NULL;
  uint8_t *buf = malloc (DISK_SIZE);

  assert_non_null (buf);
  if (vhd_open (path, &o, &d) < 0)
    fail_msg ("open %s: %s", path, vhd_last_error ());
  assert_int_equal (vhd_get_size (d), DISK_SIZE);
  assert_int_equal (vhd_pread (d, buf, DISK_SIZE, 0), 0);
  vhd_close (d);
  return buf;
}

/* (a) Random writes, aligned or not, through callbacks to a fixed image
 * read back through them, and the buffer they leave is the image that a
 * path open reads.
 */
static void
test_fixed_random_writes_round_trip (void **state)
{
  char path[300], copy[300];
  struct mem m;
  uint8_t *ref = calloc (1, DISK_SIZE), *got = malloc (DISK_SIZE), *data;
  vhd_disk *d;

  (void) state;
  assert_non_null (ref);
  assert_non_null (got);
  snprintf (path, sizeof path, "%s/fixed.vhd", dir);
  snprintf (copy, sizeof copy, "%s/fixed-copy.vhd", dir);
  create_image (path, true, NULL);
  load_file (path, &m);
  d = open_mem (&m, "mem:fixed", false, NULL);
  assert_int_equal (vhd_get_size (d), DISK_SIZE);

  for (int i = 0; i < 300; i++) {
    uint64_t len = 1 + rnd () % (i % 3 == 0 ? 300000 : 9000);
    uint64_t off = rnd () % (DISK_SIZE - len);
    uint8_t *p = ref + off;
    if (i % 2 == 0) {           /* every other one sector-aligned */
      off &= ~UINT64_C (511);
      len = (len + 511) & ~UINT64_C (511);
      p = ref + off;
    }
    for (uint64_t k = 0; k < len; k++)
      p[k] = (uint8_t) rnd ();
    assert_int_equal (vhd_pwrite (d, p, len, off, 0), 0);
  }
  assert_int_equal (vhd_flush (d), 0);
  assert_true (m.flushes > 0);
  assert_int_equal (vhd_pread (d, got, DISK_SIZE, 0), 0);
  assert_memory_equal (got, ref, DISK_SIZE);
  vhd_close (d);

  /* A fixed image's data is the file's first bytes, as written. */
  assert_memory_equal (m.buf, ref, DISK_SIZE);
  save_file (copy, &m);
  data = read_by_path (copy);
  assert_memory_equal (data, ref, DISK_SIZE);
  free (data);
  free (got);
  free (ref);
  free (m.buf);
}

/* (b) A dynamic image: an allocated block is writable, a write that
 * needs a new block fails with ENOSPC and changes nothing.
 */
static void
test_dynamic_allocated_only (void **state)
{
  char path[300], copy[300];
  uint8_t block0[4096], over[4096], *before, *data;
  struct mem m;
  vhd_disk *d;
  int r;

  (void) state;
  snprintf (path, sizeof path, "%s/dynamic.vhd", dir);
  snprintf (copy, sizeof copy, "%s/dynamic-copy.vhd", dir);
  create_image (path, false, NULL);
  /* Allocate block 0 (2 MiB blocks) by path. */
  memset (block0, 0x5a, sizeof block0);
  {
    vhd_disk *w = NULL;
    assert_int_equal (vhd_open (path, NULL, &w), 0);
    assert_int_equal (vhd_pwrite (w, block0, sizeof block0, 0, 0), 0);
    vhd_close (w);
  }
  load_file (path, &m);
  before = malloc (m.size);
  assert_non_null (before);

  d = open_mem (&m, "mem:dynamic", false, NULL);
  memset (over, 0xc3, sizeof over);
  assert_int_equal (vhd_pwrite (d, over, 1000, 100, 0), 0);
  assert_int_equal (vhd_flush (d), 0);
  memcpy (before, m.buf, m.size);

  /* Block 2 is not allocated. */
  r = vhd_pwrite (d, over, sizeof over, 2 * 2 * MiB + 512, 0);
  assert_int_equal (r, -ENOSPC);
  assert_non_null (strstr (vhd_last_error (), "mem:dynamic"));
  assert_non_null (strstr (vhd_last_error (), "cannot grow"));
  assert_int_equal (vhd_flush (d), 0);
  assert_memory_equal (m.buf, before, m.size);
  vhd_close (d);
  assert_memory_equal (m.buf, before, m.size);

  save_file (copy, &m);
  data = read_by_path (copy);
  memcpy (block0 + 100, over, 1000);
  assert_memory_equal (data, block0, sizeof block0);
  for (uint64_t k = sizeof block0; k < DISK_SIZE; k++)
    if (data[k] != 0)
      fail_msg ("byte %" PRIu64 " is %u, not 0", k, data[k]);
  free (data);
  free (before);
  free (m.buf);
}

/* (c) A failing storage's errno comes back from every operation. */
static void
test_callback_errors_surface (void **state)
{
  char path[300];
  uint8_t buf[4096] = { 1 };
  struct mem m;
  vhd_disk *d;

  (void) state;
  snprintf (path, sizeof path, "%s/eio.vhd", dir);
  create_image (path, true, NULL);
  load_file (path, &m);
  d = open_mem (&m, "mem:eio", false, NULL);
  m.fail = -EIO;
  assert_int_equal (vhd_pread (d, buf, sizeof buf, 0), -EIO);
  assert_non_null (strstr (vhd_last_error (), "mem:eio"));
  assert_int_equal (vhd_pwrite (d, buf, sizeof buf, 4096, 0), -EIO);
  assert_int_equal (vhd_pwrite (d, buf, 100, 4097, 0), -EIO);
  assert_int_equal (vhd_flush (d), -EIO);
  assert_non_null (strstr (vhd_last_error (), "mem:eio"));
  m.fail = 0;
  vhd_close (d);
  free (m.buf);
}

/* (d) A differencing image through callbacks finds its parent in the
 * parent folders given, and only there.
 */
static void
test_differencing_parent_dirs (void **state)
{
  char sub[300], parent[400], child[400], empty[300];
  const char *dirs[] = { sub, NULL };
  const char *elsewhere[] = { empty, NULL };
  struct vhd_open_options o = { .readonly = true };
  uint8_t data[8192], got[8192];
  struct mem m;
  vhd_disk *d = NULL;

  (void) state;
  snprintf (sub, sizeof sub, "%s/chain", dir);
  snprintf (empty, sizeof empty, "%s/empty", dir);
  assert_int_equal (mkdir (sub, 0700), 0);
  assert_int_equal (mkdir (empty, 0700), 0);
  snprintf (parent, sizeof parent, "%s/parent.vhd", sub);
  snprintf (child, sizeof child, "%s/child.vhd", sub);
  create_image (parent, false, NULL);
  for (size_t k = 0; k < sizeof data; k++)
    data[k] = (uint8_t) rnd ();
  {
    vhd_disk *w = NULL;
    assert_int_equal (vhd_open (parent, NULL, &w), 0);
    assert_int_equal (vhd_pwrite (w, data, sizeof data, 3 * MiB, 0), 0);
    vhd_close (w);
  }
  create_image (child, false, parent);
  load_file (child, &m);

  d = open_mem (&m, "mem:child", true, dirs);
  assert_non_null (vhd_get_parent (d));
  assert_int_equal (vhd_pread (d, got, sizeof got, 3 * MiB), 0);
  assert_memory_equal (got, data, sizeof data);
  vhd_close (d);

  /* No parent folder: refused, saying so. */
  d = NULL;
  assert_int_equal (vhd_open_with_backend (&mem_callbacks, &m, "mem:child",
                                           &o, &d), -ENOENT);
  assert_null (d);
  assert_non_null (strstr (vhd_last_error (), "mem:child"));
  assert_non_null (strstr (vhd_last_error (), "parent_dirs"));

  /* A folder that does not hold it: not found there. */
  o.parent_dirs = elsewhere;
  assert_true (vhd_open_with_backend (&mem_callbacks, &m, "mem:child",
                                      &o, &d) < 0);
  assert_null (d);
  assert_non_null (strstr (vhd_last_error (), "could not be opened"));
  free (m.buf);
}

/* (e) Garbage and a cut image are refused with the name in the message. */
static void
test_bad_storage_refused (void **state)
{
  char path[300];
  struct vhd_open_options o = { .readonly = true };
  struct mem m;
  vhd_disk *d = NULL;

  (void) state;
  m.size = 64 * 1024;
  m.buf = malloc (m.size);
  assert_non_null (m.buf);
  for (size_t k = 0; k < m.size; k++)
    m.buf[k] = (uint8_t) rnd ();
  m.fail = 0;
  assert_true (vhd_open_with_backend (&mem_callbacks, &m, "mem:garbage",
                                      &o, &d) < 0);
  assert_null (d);
  assert_non_null (strstr (vhd_last_error (), "mem:garbage"));
  free (m.buf);

  /* A fixed image without its footer (its last sector). */
  snprintf (path, sizeof path, "%s/cut.vhd", dir);
  create_image (path, true, NULL);
  load_file (path, &m);
  m.size -= 512;
  assert_true (vhd_open_with_backend (&mem_callbacks, &m, "mem:cut",
                                      &o, &d) < 0);
  assert_null (d);
  assert_non_null (strstr (vhd_last_error (), "mem:cut"));

  /* Empty storage. */
  m.size = 0;
  assert_true (vhd_open_with_backend (&mem_callbacks, &m, "mem:empty",
                                      &o, &d) < 0);
  assert_non_null (strstr (vhd_last_error (), "mem:empty"));
  free (m.buf);
}

/* (f) Callbacks from a caller that knows fewer fields than are needed,
 * or that lack a required one, are refused.
 */
static void
test_callbacks_checked (void **state)
{
  struct vhd_backend_callbacks cb = mem_callbacks;
  struct mem m = { 0 };
  vhd_disk *d = NULL;

  (void) state;
  cb.size = offsetof (struct vhd_backend_callbacks, get_size);
  assert_int_equal (vhd_open_with_backend (&cb, &m, "mem:small", NULL, &d),
                    -EINVAL);
  assert_null (d);
  assert_non_null (strstr (vhd_last_error (), "size"));
  cb.size = 0;
  assert_int_equal (vhd_open_with_backend (&cb, &m, "mem:small", NULL, &d),
                    -EINVAL);

  cb = mem_callbacks;
  cb.pwrite = NULL;
  assert_int_equal (vhd_open_with_backend (&cb, &m, "mem:nowrite", NULL, &d),
                    -EINVAL);
  assert_non_null (strstr (vhd_last_error (), "pwrite"));
  assert_int_equal (vhd_open_with_backend (NULL, &m, "mem:null", NULL, &d),
                    -EINVAL);
  assert_int_equal (vhd_open_with_backend (&mem_callbacks, &m, "", NULL, &d),
                    -EINVAL);
  assert_null (d);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_fixed_random_writes_round_trip),
    cmocka_unit_test (test_dynamic_allocated_only),
    cmocka_unit_test (test_callback_errors_surface),
    cmocka_unit_test (test_differencing_parent_dirs),
    cmocka_unit_test (test_bad_storage_refused),
    cmocka_unit_test (test_callbacks_checked),
  };
  return cmocka_run_group_tests (tests, setup, teardown);
}
