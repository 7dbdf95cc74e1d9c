/* Hostile images as regression tests (issue 5, item 6).
 *
 * Each test makes a small valid image with vhd_create_virtual_disk, breaks
 * one field of it with the format's own offsets (re-encoding the footer or
 * the dynamic header so that the checksum stays right and only the field
 * under test is wrong), and then asserts:
 *
 *  - vhd_open fails, read-only and read-write, with the exact -errno and a
 *    message that names the file and the field;
 *  - the failed opens leave the file as it was;
 *  - vhd_check on the same file does not call it clean: it reports at least
 *    one corruption (or says that it could not check it).
 *
 * and, for the cases the engine must survive (a lost trailing footer,
 * truncation of the trailing footer only), that every byte reads back as
 * written.  Differencing cases: hostile locators, a locator naming the
 * image itself, a cycle of two, chains of 40, 1000 and 2000 images and the
 * depth limit.  Run under valgrind (make check-valgrind) and in a
 * sanitizer build, a crash or a read outside a buffer shows too.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
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

#include "format.h"
#include "image.h"
#include "vhdkit.h"
#include "scratch.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
#define GiB (UINT64_C (1) << 30)

/* The sample dynamic disk of most tests: 4 MiB in 512 KiB blocks. */
#define SAMPLE_SIZE (4 * MiB)
#define SAMPLE_BLOCK (512 * KiB)
#define SAMPLE_ENTRIES ((uint32_t) (SAMPLE_SIZE / SAMPLE_BLOCK))

/* Where the parent name starts in the dynamic header (the spec). */
#define H_PARENT_NAME_AT 64

static int counter;

static int
setup (void **state)
{
  return make_scratch ("test-hostile");
}

static int
teardown (void **state)
{
  return remove_scratch ();
}

static void
new_path (char *out, size_t n, const char *what)
{
  snprintf (out, n, "%s/%s-%d.vhd", dir, what, counter++);
}

/* Buffers that a failing assertion would leak (cmocka leaves a test by
 * longjmp) are held here and freed after every test, so that valgrind
 * reports only the engine's leaks.
 */
static void *held[16];

static void *
hold (void *p)
{
  assert_non_null (p);
  for (size_t i = 0; i < sizeof held / sizeof held[0]; i++)
    if (held[i] == NULL)
      return held[i] = p;
  fail_msg ("test bug: too many buffers held");
  return NULL;
}

static void
release (void *p)
{
  for (size_t i = 0; i < sizeof held / sizeof held[0]; i++)
    if (held[i] == p)
      held[i] = NULL;
  free (p);
}

static int
release_all (void **state)
{
  for (size_t i = 0; i < sizeof held / sizeof held[0]; i++) {
    free (held[i]);
    held[i] = NULL;
  }
  return 0;
}

/* ---- Raw file access (the test trusts nothing of the engine here). ---- */

static uint64_t
file_size (const char *path)
{
  struct stat st;

  if (stat (path, &st) == -1)
    fail_msg ("stat %s: %s", path, strerror (errno));
  return (uint64_t) st.st_size;
}

static void
read_at (const char *path, void *buf, size_t n, uint64_t off)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  assert_true (fd >= 0);
  if (pread (fd, buf, n, (off_t) off) != (ssize_t) n)
    fail_msg ("%s: short read of %zu bytes at %" PRIu64, path, n, off);
  close (fd);
}

static void
write_at (const char *path, const void *buf, size_t n, uint64_t off)
{
  int fd = open (path, O_WRONLY | O_CLOEXEC);

  assert_true (fd >= 0);
  if (pwrite (fd, buf, n, (off_t) off) != (ssize_t) n)
    fail_msg ("%s: short write of %zu bytes at %" PRIu64, path, n, off);
  close (fd);
}

static void
fill_at (const char *path, int byte, uint64_t n, uint64_t off)
{
  uint8_t buf[65536];

  memset (buf, byte, sizeof buf);
  while (n > 0) {
    size_t k = n < sizeof buf ? (size_t) n : sizeof buf;
    write_at (path, buf, k, off);
    n -= k;
    off += k;
  }
}

static void
truncate_to (const char *path, uint64_t size)
{
  if (truncate (path, (off_t) size) == -1)
    fail_msg ("truncate %s: %s", path, strerror (errno));
}

static uint8_t *
slurp (const char *path, size_t *n)
{
  uint8_t *buf;

  *n = (size_t) file_size (path);
  buf = hold (malloc (*n ? *n : 1));
  if (*n)
    read_at (path, buf, *n, 0);
  return buf;
}

static void
copy_file (const char *from, const char *to)
{
  size_t n;
  uint8_t *buf = slurp (from, &n);
  int fd = open (to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

  assert_true (fd >= 0);
  assert_int_equal (write (fd, buf, n), (ssize_t) n);
  close (fd);
  release (buf);
}

/* ---- The image's structures, decoded with the format's codec. ---- */

struct meta {
  uint64_t file_size;
  uint64_t footer_at;
  struct vhd_footer footer;
  uint64_t header_at;
  struct vhd_dyn_header header;
  uint32_t bat[64];             /* the first entries */
};

/* Decode a valid image as it is (its trailing footer must be good). */
static void
load_meta (const char *path, struct meta *m)
{
  uint8_t buf[VHD_DYN_HEADER_SIZE];

  memset (m, 0, sizeof *m);
  m->file_size = file_size (path);
  m->footer_at = m->file_size - VHD_FOOTER_SIZE;
  read_at (path, buf, VHD_FOOTER_SIZE, m->footer_at);
  if (vhd_footer_decode (buf, &m->footer, path, m->footer_at) < 0)
    fail_msg ("test setup: %s", vhd_last_error ());
  if (m->footer.disk_type == VHD_TYPE_FIXED)
    return;
  m->header_at = m->footer.data_offset;
  read_at (path, buf, VHD_DYN_HEADER_SIZE, m->header_at);
  if (vhd_dyn_header_decode (buf, &m->header, path, m->header_at) < 0)
    fail_msg ("test setup: %s", vhd_last_error ());
  for (uint32_t i = 0; i < m->header.max_table_entries && i < 64; i++) {
    uint8_t e[4];
    read_at (path, e, 4, m->header.table_offset + 4 * (uint64_t) i);
    m->bat[i] = vhd_get_be32 (e);
  }
}

/* Write a footer (its checksum computed) at the end of the file, and for
 * dynamic and differencing disks its copy at offset 0 as well.
 */
static void
put_footers (const char *path, struct vhd_footer *f, uint64_t at)
{
  uint8_t buf[VHD_FOOTER_SIZE];

  vhd_footer_encode (f, buf);
  write_at (path, buf, sizeof buf, at);
  if (f->disk_type != VHD_TYPE_FIXED)
    write_at (path, buf, sizeof buf, 0);
}

static void
put_header (const char *path, struct vhd_dyn_header *h, uint64_t at)
{
  uint8_t buf[VHD_DYN_HEADER_SIZE];

  vhd_dyn_header_encode (h, buf);
  write_at (path, buf, sizeof buf, at);
}

static void
put_bat_entry (const char *path, const struct meta *m, uint32_t i,
               uint32_t sector)
{
  uint8_t e[4];

  vhd_put_be32 (e, sector);
  write_at (path, e, 4, m->header.table_offset + 4 * (uint64_t) i);
}

/* ---- Making valid images. ---- */

static vhd_disk *
create_disk (const char *path, uint64_t size, uint32_t block_size,
             bool fixed, const char *parent)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  vhd_disk *d = NULL;

  p.version2.maximum_size = size;
  p.version2.block_size_in_bytes = block_size;
  p.version2.parent_path = parent;
  if (vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL,
                               fixed ? VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
                                     : 0, 0, &p, NULL, &d) < 0)
    fail_msg ("test setup: create %s: %s", path, vhd_last_error ());
  return d;
}

static void
write_disk (vhd_disk *d, uint8_t *ref, uint64_t off, uint64_t len,
            unsigned seed)
{
  for (uint64_t i = 0; i < len; i++)
    ref[off + i] = (uint8_t) ((off + i) * 131 + seed + (i >> 9));
  if (vhd_pwrite (d, ref + off, len, off, 0) < 0)
    fail_msg ("test setup: write: %s", vhd_last_error ());
}

/* The sample: a 4 MiB dynamic disk in 512 KiB blocks with blocks 0 (full),
 * 3 (4 KiB, unaligned) and 7 (its last sector) written, in that order.
 * Returns what it holds (SAMPLE_SIZE bytes) if ref is not NULL.
 */
static void
make_sample (char *path, size_t n, const char *what, uint8_t **ref_out)
{
  uint8_t *ref = hold (calloc (1, SAMPLE_SIZE));
  vhd_disk *d;

  new_path (path, n, what);
  d = create_disk (path, SAMPLE_SIZE, SAMPLE_BLOCK, false, NULL);
  write_disk (d, ref, 0, SAMPLE_BLOCK, 1);
  write_disk (d, ref, 3 * SAMPLE_BLOCK + 12345, 4096, 2);
  write_disk (d, ref, SAMPLE_SIZE - 512, 512, 3);
  assert_int_equal (vhd_flush (d), 0);
  vhd_close (d);
  if (ref_out)
    *ref_out = ref;
  else
    release (ref);
}

/* ---- What every hostile image must get. ---- */

struct findings {
  unsigned corrupt, leak, repaired, recoverable;
  unsigned capped;              /* "... not shown": not problems */
  char text[4096];
};

static void
collect (void *opaque, int kind, const char *message)
{
  struct findings *f = opaque;
  size_t len = strlen (f->text);

  if (strstr (message, "more problems of this kind") != NULL) {
    f->capped++;
    kind = 0;
  }
  switch (kind) {
  case 0: break;
  case VHD_CHECK_CORRUPT: f->corrupt++; break;
  case VHD_CHECK_LEAK: f->leak++; break;
  case VHD_CHECK_REPAIRED: f->repaired++; break;
  case VHD_CHECK_RECOVERABLE: f->recoverable++; break;
  default: fail_msg ("vhd_check: finding of unknown kind %d", kind);
  }
  snprintf (f->text + len, sizeof f->text - len, "%s[%d] %s",
            len ? "; " : "", kind, message);
}

/* What vhd_check says of a file, for a failure message. */
static const char *
check_verdict (const char *path)
{
  static char text[4200];
  struct vhd_check_result res;
  struct findings f = { 0 };

  if (vhd_check (path, NULL, 0, collect, &f, &res) < 0)
    snprintf (text, sizeof text, "could not check: %s", vhd_last_error ());
  else
    snprintf (text, sizeof text, "%u corruptions, %u leaks%s%s",
              res.corruptions, res.leaks, f.text[0] ? ": " : "", f.text);
  return text;
}

/* vhd_check must not call the file clean: at least one corruption (or,
 * for a trailing footer lost beside a valid copy, a recoverable finding),
 * or an error saying that it could not check.  Without --repair it
 * changes nothing.
 */
static void
expect_check_not_clean (const char *path)
{
  struct vhd_check_result res;
  struct findings f = { 0 };
  size_t n0, n1;
  uint8_t *before = slurp (path, &n0), *after;
  int r;

  r = vhd_check (path, NULL, 0, collect, &f, &res);
  if (r == 0) {
    if (res.corruptions == 0 && res.recoverable == 0)
      fail_msg ("%s: vhd_check reports it free of corruption (%u leaks;"
                " findings: %s)", path, res.leaks,
                f.text[0] ? f.text : "none");
    if (f.capped == 0)
      assert_int_equal (res.corruptions, f.corrupt);
    else
      assert_true (res.corruptions > f.corrupt);
    assert_int_equal (res.recoverable, f.recoverable);
    assert_int_equal (res.leaks, f.leak);
    assert_int_equal (res.repaired, 0);
  }
  else if (strstr (vhd_last_error (), path) == NULL)
    fail_msg ("vhd_check could not check %s, but its error does not name"
              " the file: %s", path, vhd_last_error ());
  after = slurp (path, &n1);
  assert_int_equal (n0, n1);
  if (memcmp (before, after, n0) != 0)
    fail_msg ("%s: vhd_check without VHD_CHECK_REPAIR changed the file",
              path);
  release (before);
  release (after);
}

static void
expect_check_clean (const char *path)
{
  struct vhd_check_result res;
  struct findings f = { 0 };

  if (vhd_check (path, NULL, 0, collect, &f, &res) < 0)
    fail_msg ("vhd_check %s: %s", path, vhd_last_error ());
  if (res.corruptions || res.leaks)
    fail_msg ("%s: vhd_check: %u corruptions, %u leaks: %s", path,
              res.corruptions, res.leaks, f.text);
}

/* Open path read-only and read-write, expecting -err each time and a
 * message holding every string of the NULL-terminated list (the file and
 * the field); the file must be unchanged afterwards; then vhd_check.
 */
static void __attribute__ ((sentinel))
expect_rejected (const char *path, int err, ...)
{
  size_t n0, n1;
  uint8_t *before = slurp (path, &n0), *after;

  for (int readonly = 1; readonly >= 0; readonly--) {
    struct vhd_open_options o = { .readonly = readonly };
    vhd_disk *d = (vhd_disk *) &o;     /* must be set to NULL */
    const char *msg, *want;
    va_list ap;
    int r;

    r = vhd_open (path, &o, &d);
    msg = vhd_last_error ();
    if (r == 0) {
      vhd_close (d);
      fail_msg ("%s: wrongly accepted (opened %s); vhd_check says: %s",
                path, readonly ? "read-only" : "read-write",
                check_verdict (path));
    }
    if (r != -err)
      fail_msg ("%s: open (%s) returned %d (%s), expected %d (%s): %s",
                path, readonly ? "ro" : "rw", r, strerror (-r), -err,
                strerror (err), msg);
    assert_null (d);
    va_start (ap, err);
    while ((want = va_arg (ap, const char *)) != NULL)
      if (strstr (msg, want) == NULL) {
        va_end (ap);
        fail_msg ("%s: the error does not name \"%s\": %s", path, want, msg);
      }
    va_end (ap);
    print_message ("rejected (%s): %s\n", readonly ? "ro" : "rw", msg);
  }

  after = slurp (path, &n1);
  assert_int_equal (n0, n1);
  if (memcmp (before, after, n0) != 0)
    fail_msg ("%s: a failed open changed the file", path);
  release (before);
  release (after);

  expect_check_not_clean (path);
}

/* Read all of the disk, and then block by block, and compare. */
static void
expect_reads (vhd_disk *d, const uint8_t *ref, uint64_t size)
{
  uint8_t *buf = hold (malloc (size));

  assert_int_equal (vhd_get_size (d), size);
  memset (buf, 0xee, size);
  if (vhd_pread (d, buf, size, 0) < 0)
    fail_msg ("read of the whole disk: %s", vhd_last_error ());
  for (uint64_t i = 0; i < size; i++)
    if (buf[i] != ref[i])
      fail_msg ("byte %" PRIu64 ": read 0x%02x, wrote 0x%02x", i, buf[i],
                ref[i]);
  for (uint64_t off = 0; off < size; off += SAMPLE_BLOCK) {
    uint64_t len = size - off < SAMPLE_BLOCK ? size - off : SAMPLE_BLOCK;
    memset (buf, 0xee, len);
    if (vhd_pread (d, buf, len, off) < 0)
      fail_msg ("read at %" PRIu64 ": %s", off, vhd_last_error ());
    assert_memory_equal (buf, ref + off, len);
  }
  release (buf);
}

static vhd_disk *
open_ok (const char *path, bool readonly)
{
  struct vhd_open_options o = { .readonly = readonly };
  vhd_disk *d = NULL;

  if (vhd_open (path, &o, &d) < 0)
    fail_msg ("open %s: %s", path, vhd_last_error ());
  return d;
}

/* ---- Truncation. ---- */

/* The sample cut at every 512-byte boundary, from its full size down to
 * 0.  What is right:
 *
 *  - the full file opens and reads back exactly;
 *  - cut by exactly its trailing footer, it opens from the footer copy at
 *    offset 0 and reads back exactly: every block is still whole;
 *  - cut any shorter, some structure that the BAT, the header or the
 *    footer points at is gone, and the open fails with -EINVAL naming it:
 *    the BAT entry of a cut block, the BAT (table_offset), the dynamic
 *    header (data_offset), or the file that holds no footer at all.
 *    Opening anyway would serve a block whose data is not there.
 *
 * vhd_check calls each cut file corrupt (the last footer is missing in
 * all of them).
 */
static void
test_truncated_at_every_sector (void **state)
{
  char path[PATH_MAX];
  uint8_t *ref;
  struct meta m;
  uint64_t full, bat_end, header_end;
  unsigned opened = 0, rejected = 0;
  uint8_t *original;
  size_t n_original;

  make_sample (path, sizeof path, "truncated", &ref);
  original = slurp (path, &n_original);
  load_meta (path, &m);
  full = m.file_size;
  assert_int_equal (full % 512, 0);
  assert_int_equal (m.footer_at, full - 512);
  bat_end = m.header.table_offset + vhd_bat_size (m.header.max_table_entries);
  header_end = m.header_at + VHD_DYN_HEADER_SIZE;

  for (uint64_t t = full; ; t -= 512) {
    truncate_to (path, t);
    if (t == full || t == full - 512) {
      vhd_disk *d = open_ok (path, true);
      struct vhd_image_info info;
      assert_int_equal (vhd_get_image_info (d, &info), 0);
      assert_int_equal (info.footer_from_copy, t != full);
      assert_int_equal (info.allocated_blocks, 3);
      expect_reads (d, ref, SAMPLE_SIZE);
      vhd_close (d);
      assert_int_equal (file_size (path), t);
      if (t == full)
        expect_check_clean (path);
      else {
        /* A read-write open puts the trailing footer back where it was:
         * the file is again the original, byte for byte.
         */
        char copy[PATH_MAX];
        uint8_t *back;
        size_t n;
        expect_check_not_clean (path);
        new_path (copy, sizeof copy, "truncated-rw");
        copy_file (path, copy);
        vhd_close (open_ok (copy, false));
        back = slurp (copy, &n);
        assert_int_equal (n, full);
        if (memcmp (back, original, n) != 0)
          fail_msg ("%s: the footer restored by a read-write open leaves"
                    " the file different from the original", copy);
        release (back);
        unlink (copy);
      }
      opened++;
    }
    else {
      const char *field = t >= bat_end ? "BAT: entry"
                          : t >= header_end ? "table_offset"
                          : t >= 512 ? "data_offset" : "only 0 bytes";
      for (int readonly = 1; readonly >= 0; readonly--) {
        struct vhd_open_options o = { .readonly = readonly };
        vhd_disk *d = NULL;
        int r = vhd_open (path, &o, &d);
        if (r == 0) {
          vhd_close (d);
          fail_msg ("%s cut to %" PRIu64 " of %" PRIu64 " bytes: wrongly"
                    " accepted (%s)", path, t, full, readonly ? "ro" : "rw");
        }
        if (r != -EINVAL || strstr (vhd_last_error (), path) == NULL ||
            strstr (vhd_last_error (), field) == NULL)
          fail_msg ("%s cut to %" PRIu64 " bytes: expected -EINVAL naming"
                    " the file and \"%s\", got %d: %s", path, t, field, r,
                    vhd_last_error ());
        assert_null (d);
        assert_int_equal (file_size (path), t);
      }
      expect_check_not_clean (path);
      rejected++;
    }
    if (t == 0)
      break;
  }
  print_message ("%u truncation points: %u open, %u rejected\n",
                 opened + rejected, opened, rejected);
  assert_int_equal (opened + rejected, full / 512 + 1);
  assert_int_equal (n_original, full);
  release (original);
  release (ref);
}

/* ---- The lost trailing footer, which the engine must survive. ---- */

static void
trailing_footer_lost (const char *what, void (*spoil) (const char *path,
                                                       const struct meta *))
{
  char path[PATH_MAX];
  uint8_t *ref;
  struct meta m;
  vhd_disk *d;
  struct vhd_image_info info;

  make_sample (path, sizeof path, what, &ref);
  load_meta (path, &m);
  spoil (path, &m);

  /* Read-only: from the copy, every byte as written, nothing changed. */
  d = open_ok (path, true);
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  assert_true (info.footer_from_copy);
  expect_reads (d, ref, SAMPLE_SIZE);
  vhd_close (d);
  expect_check_not_clean (path);

  /* Read-write: the trailing footer goes back, and the image is clean. */
  d = open_ok (path, false);
  vhd_close (d);
  d = open_ok (path, true);
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  assert_false (info.footer_from_copy);
  expect_reads (d, ref, SAMPLE_SIZE);
  vhd_close (d);
  expect_check_clean (path);
  release (ref);
}

static void
zero_trailing_footer (const char *path, const struct meta *m)
{
  fill_at (path, 0, VHD_FOOTER_SIZE, m->footer_at);
}

static void
bad_checksum_in_trailing_footer (const char *path, const struct meta *m)
{
  uint8_t b;

  read_at (path, &b, 1, m->footer_at + 64);
  b ^= 0x01;
  write_at (path, &b, 1, m->footer_at + 64);
}

static void
test_trailing_footer_zeroed_opens_from_copy (void **state)
{
  trailing_footer_lost ("zeroed-footer", zero_trailing_footer);
}

static void
test_trailing_footer_bad_checksum_opens_from_copy (void **state)
{
  trailing_footer_lost ("bad-footer", bad_checksum_in_trailing_footer);
}

/* ---- Footer fields (both copies broken alike). ---- */

static void
hostile_footer (uint64_t (*field) (struct vhd_footer *), const char *what,
                int err, const char *name)
{
  char path[PATH_MAX];
  struct meta m;

  make_sample (path, sizeof path, what, NULL);
  load_meta (path, &m);
  field (&m.footer);
  put_footers (path, &m.footer, m.footer_at);
  expect_rejected (path, err, path, name, NULL);
}

static uint64_t
current_size_over_2040g (struct vhd_footer *f)
{
  return f->current_size = VHD_MAX_DISK_SIZE + 512;
}

static uint64_t
current_size_odd (struct vhd_footer *f)
{
  return f->current_size = SAMPLE_SIZE - 100;
}

static uint64_t
current_size_zero (struct vhd_footer *f)
{
  return f->current_size = 0;
}

static uint64_t
current_size_beyond_the_bat (struct vhd_footer *f)
{
  return f->current_size = 2 * SAMPLE_SIZE;
}

static uint64_t
data_offset_past_eof (struct vhd_footer *f)
{
  return f->data_offset = 64 * MiB;
}

static uint64_t
data_offset_huge (struct vhd_footer *f)
{
  return f->data_offset = UINT64_C (0xFFFFFFFFFFFFFE00);
}

static uint64_t
data_offset_zero (struct vhd_footer *f)
{
  return f->data_offset = 0;
}

static void
test_current_size_over_2040g (void **state)
{
  hostile_footer (current_size_over_2040g, "size-2040g", EINVAL,
                  "current_size");
}

static void
test_current_size_not_sector_multiple (void **state)
{
  hostile_footer (current_size_odd, "size-odd", EINVAL, "current_size");
}

static void
test_current_size_zero (void **state)
{
  hostile_footer (current_size_zero, "size-zero", EINVAL, "current_size");
}

/* A valid size, but twice what the BAT's entries cover. */
static void
test_current_size_beyond_the_bat (void **state)
{
  hostile_footer (current_size_beyond_the_bat, "size-beyond-bat", EINVAL,
                  "max_table_entries");
}

static void
test_data_offset_past_eof (void **state)
{
  hostile_footer (data_offset_past_eof, "header-past-eof", EINVAL,
                  "data_offset");
}

static void
test_data_offset_huge (void **state)
{
  hostile_footer (data_offset_huge, "header-huge", EINVAL, "data_offset");
}

static void
test_data_offset_zero (void **state)
{
  hostile_footer (data_offset_zero, "header-at-0", EINVAL, "data_offset");
}

static void
test_footer_checksum_bad_in_both (void **state)
{
  char path[PATH_MAX];
  struct meta m;
  uint8_t b;

  make_sample (path, sizeof path, "checksum", NULL);
  load_meta (path, &m);
  read_at (path, &b, 1, m.footer_at + 67);
  b ^= 0x40;
  write_at (path, &b, 1, m.footer_at + 67);
  write_at (path, &b, 1, 67);
  expect_rejected (path, EINVAL, path, "checksum", NULL);
}

/* A fixed disk's footer says it holds more than the file does. */
static void
test_fixed_current_size_past_eof (void **state)
{
  char path[PATH_MAX];
  struct meta m;

  new_path (path, sizeof path, "fixed-short");
  vhd_close (create_disk (path, 3 * MiB, 0, true, NULL));
  load_meta (path, &m);
  assert_int_equal (m.footer.disk_type, VHD_TYPE_FIXED);
  assert_int_equal (m.footer_at, 3 * MiB);
  m.footer.current_size = 3 * MiB + 512;
  put_footers (path, &m.footer, m.footer_at);
  expect_rejected (path, EINVAL, path, "current_size", NULL);
}

/* ---- Dynamic header fields. ---- */

static void
hostile_header (void (*field) (struct meta *), const char *what, int err,
                const char *name1, const char *name2)
{
  char path[PATH_MAX];
  struct meta m;

  make_sample (path, sizeof path, what, NULL);
  load_meta (path, &m);
  field (&m);
  put_header (path, &m.header, m.header_at);
  expect_rejected (path, err, path, name1, name2, NULL);
}

static void block_size_zero (struct meta *m) { m->header.block_size = 0; }
static void block_size_odd (struct meta *m)
{
  m->header.block_size = 3 * SAMPLE_BLOCK / 2;
}
static void block_size_tiny (struct meta *m) { m->header.block_size = 512; }
static void block_size_1g (struct meta *m)
{
  m->header.block_size = (uint32_t) GiB;
}
static void entries_too_small (struct meta *m)
{
  m->header.max_table_entries = SAMPLE_ENTRIES - 1;
}
static void entries_huge (struct meta *m)
{
  m->header.max_table_entries = UINT32_MAX;
}
/* Within the 2040 GiB limit, but the BAT runs past the end of the file. */
static void entries_past_eof (struct meta *m)
{
  m->header.max_table_entries = (uint32_t) (VHD_MAX_DISK_SIZE / SAMPLE_BLOCK);
}
static void table_offset_past_eof (struct meta *m)
{
  m->header.table_offset = m->file_size + 4096;
}
static void table_offset_huge (struct meta *m)
{
  m->header.table_offset = UINT64_C (0xFFFFFFFFFFFFFE00);
}
static void table_offset_zero (struct meta *m) { m->header.table_offset = 0; }
static void header_version_2 (struct meta *m)
{
  m->header.header_version = 0x00020000;
}

static void
test_block_size_zero (void **state)
{
  hostile_header (block_size_zero, "bs-0", EINVAL, "block_size", NULL);
}

static void
test_block_size_not_power_of_two (void **state)
{
  hostile_header (block_size_odd, "bs-odd", EINVAL, "block_size", NULL);
}

static void
test_block_size_below_minimum (void **state)
{
  hostile_header (block_size_tiny, "bs-512", EINVAL, "block_size", NULL);
}

static void
test_block_size_1g (void **state)
{
  hostile_header (block_size_1g, "bs-1g", EINVAL, "block_size", NULL);
}

static void
test_max_table_entries_too_small (void **state)
{
  hostile_header (entries_too_small, "mte-small", EINVAL,
                  "max_table_entries", "current_size");
}

static void
test_max_table_entries_huge (void **state)
{
  hostile_header (entries_huge, "mte-huge", EINVAL, "max_table_entries",
                  "2040 GiB");
}

static void
test_max_table_entries_bat_past_eof (void **state)
{
  hostile_header (entries_past_eof, "mte-past-eof", EINVAL, "table_offset",
                  "BAT");
}

static void
test_table_offset_past_eof (void **state)
{
  hostile_header (table_offset_past_eof, "bat-past-eof", EINVAL,
                  "table_offset", "BAT");
}

static void
test_table_offset_huge (void **state)
{
  hostile_header (table_offset_huge, "bat-huge", EINVAL, "table_offset",
                  "BAT");
}

/* The BAT on top of the footer copy. */
static void
test_table_offset_zero (void **state)
{
  hostile_header (table_offset_zero, "bat-at-0", EINVAL, "table_offset",
                  "footer copy");
}

static void
test_header_version_unknown (void **state)
{
  hostile_header (header_version_2, "hv-2", EINVAL, "header_version", NULL);
}

static void
test_header_checksum_bad (void **state)
{
  char path[PATH_MAX];
  struct meta m;
  uint8_t b;

  make_sample (path, sizeof path, "header-checksum", NULL);
  load_meta (path, &m);
  read_at (path, &b, 1, m.header_at + 39);
  b ^= 0x10;
  write_at (path, &b, 1, m.header_at + 39);
  expect_rejected (path, EINVAL, path, "dynamic header", "checksum", NULL);
}

/* max_table_entries one more than 2040 GiB needs, with the whole BAT in
 * the file (every entry unused) so that only the count is wrong.
 */
static void
test_max_table_entries_beyond_2040g (void **state)
{
  char path[PATH_MAX];
  struct meta m;
  uint8_t footer[VHD_FOOTER_SIZE];
  uint64_t bat_bytes, end;

  new_path (path, sizeof path, "mte-2040g");
  vhd_close (create_disk (path, SAMPLE_SIZE, SAMPLE_BLOCK, false, NULL));
  load_meta (path, &m);
  read_at (path, footer, sizeof footer, m.footer_at);
  m.header.max_table_entries =
    (uint32_t) (VHD_MAX_DISK_SIZE / SAMPLE_BLOCK) + 1;
  bat_bytes = vhd_bat_size (m.header.max_table_entries);
  end = m.header.table_offset + bat_bytes;
  fill_at (path, 0xff, bat_bytes, m.header.table_offset);
  write_at (path, footer, sizeof footer, end);
  truncate_to (path, end + VHD_FOOTER_SIZE);
  put_header (path, &m.header, m.header_at);
  expect_rejected (path, EINVAL, path, "max_table_entries", "2040 GiB",
                   NULL);
}

/* The BAT inside the dynamic header: its entries are the header's own
 * bytes (here 0xFFFFFFFF, "unused", in the parent name that a dynamic
 * disk does not use), so only the overlap is wrong.
 */
static void
test_table_offset_inside_header (void **state)
{
  char path[PATH_MAX];
  struct meta m;
  uint64_t at;

  new_path (path, sizeof path, "bat-in-header");
  vhd_close (create_disk (path, SAMPLE_SIZE, SAMPLE_BLOCK, false, NULL));
  load_meta (path, &m);
  at = m.header_at + 512;
  m.header.table_offset = at;
  memset (m.header.parent_unicode_name + (at - m.header_at
                                          - H_PARENT_NAME_AT),
          0xff, 4 * SAMPLE_ENTRIES);
  put_header (path, &m.header, m.header_at);
  expect_rejected (path, EINVAL, path, "table_offset", "dynamic header",
                   NULL);
}

/* ---- BAT entries. ---- */

static void
hostile_bat_entry (const char *what, uint32_t entry,
                   uint32_t (*sector) (const struct meta *), ...)
{
  char path[PATH_MAX];
  struct meta m;

  make_sample (path, sizeof path, what, NULL);
  load_meta (path, &m);
  assert_int_equal (m.bat[entry], VHD_BAT_UNUSED);
  put_bat_entry (path, &m, entry, sector (&m));
  {
    va_list ap;
    const char *a, *b, *c;
    va_start (ap, sector);
    a = va_arg (ap, const char *);
    b = a ? va_arg (ap, const char *) : NULL;
    c = b ? va_arg (ap, const char *) : NULL;
    va_end (ap);
    expect_rejected (path, EINVAL, path, "BAT", a, b, c, NULL);
  }
}

static uint32_t
sector_past_eof (const struct meta *m)
{
  return (uint32_t) (m->file_size / 512 + 8);
}

static uint32_t
sector_max (const struct meta *m)
{
  return 0xFFFFFFFE;
}

/* The block starts inside the file but its data runs over the trailing
 * footer and past the end.
 */
static uint32_t
sector_into_trailing_footer (const struct meta *m)
{
  return (uint32_t) (m->footer_at / 512 - 1);
}

static uint32_t
sector_footer_copy (const struct meta *m)
{
  return 0;
}

static uint32_t
sector_header (const struct meta *m)
{
  return (uint32_t) (m->header_at / 512);
}

static uint32_t
sector_bat (const struct meta *m)
{
  return (uint32_t) (m->header.table_offset / 512);
}

static uint32_t
sector_overlapping_block_0 (const struct meta *m)
{
  return m->bat[0] + 8;
}

static uint32_t
sector_same_as_block_3 (const struct meta *m)
{
  return m->bat[3];
}

static void
test_bat_entry_past_eof (void **state)
{
  hostile_bat_entry ("bat-entry-past-eof", 5, sector_past_eof, "entry 5",
                     NULL);
}

static void
test_bat_entry_max_sector (void **state)
{
  hostile_bat_entry ("bat-entry-max", 5, sector_max, "entry 5", NULL);
}

static void
test_bat_entry_into_trailing_footer (void **state)
{
  hostile_bat_entry ("bat-entry-footer", 5, sector_into_trailing_footer,
                     "entry 5", NULL);
}

static void
test_bat_entry_into_footer_copy (void **state)
{
  hostile_bat_entry ("bat-entry-copy", 5, sector_footer_copy, "entry 5",
                     "footer copy", NULL);
}

static void
test_bat_entry_into_header (void **state)
{
  hostile_bat_entry ("bat-entry-header", 5, sector_header, "entry 5",
                     "dynamic header", NULL);
}

static void
test_bat_entry_into_bat (void **state)
{
  hostile_bat_entry ("bat-entry-bat", 5, sector_bat, "entry 5", NULL);
}

static void
test_bat_entries_overlap (void **state)
{
  hostile_bat_entry ("bat-overlap", 5, sector_overlapping_block_0,
                     "entries 0 and 5", "overlap", NULL);
}

static void
test_bat_entries_identical (void **state)
{
  hostile_bat_entry ("bat-same", 5, sector_same_as_block_3, "overlap",
                     NULL);
}

/* ---- Differencing disks: locators and chains. ---- */

static struct vhd_guid
guid_of_level (unsigned k)
{
  struct vhd_guid g = { {
      0, 0, 0, 0, 0x5e, 0x1f, 0x40, 0x00, 0x80, 0x00,
      0x68, 0x6f, 0x73, 0x74, 0x69, 0x6c } };
  vhd_put_be32 (g.bytes, k);
  return g;
}

static void
set_unique_id (const char *path, const struct vhd_guid *id)
{
  struct meta m;

  load_meta (path, &m);
  m.footer.unique_id = *id;
  put_footers (path, &m.footer, m.footer_at);
}

/* Point a differencing disk at a parent: its id, the header's parent
 * name, and one W2ru locator ".\NAME" (in the data space that the first
 * locator reserved); the other locators are dropped.
 */
static void
set_parent_link (const char *path, const char *name,
                 const struct vhd_guid *id)
{
  struct meta m;
  char rel[PATH_MAX];
  uint8_t data[1024];
  int len;
  struct vhd_parent_locator loc;

  load_meta (path, &m);
  assert_int_equal (m.footer.disk_type, VHD_TYPE_DIFFERENCING);
  loc = m.header.locators[0];
  assert_int_not_equal (loc.platform_code, VHD_PLATFORM_NONE);
  snprintf (rel, sizeof rel, ".\\%s", name);
  len = vhd_utf8_to_utf16 (rel, false, data, sizeof data);
  assert_true (len > 0);
  assert_true ((uint32_t) len <= loc.platform_data_space);
  write_at (path, data, (size_t) len, loc.platform_data_offset);

  memset (m.header.locators, 0, sizeof m.header.locators);
  loc.platform_code = VHD_PLATFORM_W2RU;
  loc.platform_data_length = (uint32_t) len;
  m.header.locators[0] = loc;
  memset (m.header.parent_unicode_name, 0,
          sizeof m.header.parent_unicode_name);
  assert_true (vhd_utf8_to_utf16 (name, true, m.header.parent_unicode_name,
                                  sizeof m.header.parent_unicode_name) > 0);
  m.header.parent_unique_id = *id;
  put_header (path, &m.header, m.header_at);
}

static const char *
base_name (const char *path)
{
  return strrchr (path, '/') + 1;
}

/* A parent (4 MiB, 512 KiB blocks, some data) and an empty child. */
static void
make_pair (char *parent, char *child, size_t n, const char *what)
{
  char name[64];

  snprintf (name, sizeof name, "%s-parent", what);
  make_sample (parent, n, name, NULL);
  snprintf (name, sizeof name, "%s-child", what);
  new_path (child, n, name);
  vhd_close (create_disk (child, 0, 0, false, parent));
}

/* The child's only way to its parent is one locator with these fields:
 * the open fails with err, naming name (and, if not NULL, name2).
 */
static void
hostile_locator_err (const char *what, uint32_t length, uint64_t offset,
                     int err, const char *name, const char *name2)
{
  char parent[PATH_MAX], child[PATH_MAX];
  struct meta m;

  make_pair (parent, child, sizeof parent, what);
  load_meta (child, &m);
  memset (m.header.locators, 0, sizeof m.header.locators);
  memset (m.header.parent_unicode_name, 0,
          sizeof m.header.parent_unicode_name);
  m.header.locators[0] = (struct vhd_parent_locator) {
    .platform_code = VHD_PLATFORM_W2RU, .platform_data_space = 512,
    .platform_data_length = length, .platform_data_offset = offset,
  };
  put_header (child, &m.header, m.header_at);
  expect_rejected (child, err, child, "locator", name, name2, NULL);
}

static void
hostile_locator (const char *what, uint32_t length, uint64_t offset,
                 const char *name)
{
  hostile_locator_err (what, length, offset, ENOENT, name, NULL);
}

/* A locator's data past the trailing footer lies where the next block
 * goes: the guest's data would become the path to the parent.  So the
 * layout is refused, whatever the fields say.
 */
static void
test_locator_offset_past_eof (void **state)
{
  hostile_locator_err ("loc-off-eof", 40, 1 * MiB, EINVAL,
                       "parent locator 0", "the trailing footer");
}

static void
test_locator_length_past_eof (void **state)
{
  hostile_locator_err ("loc-len-eof", 65536, 1536, EINVAL,
                       "parent locator 0", "the trailing footer");
}

static void
test_locator_length_huge (void **state)
{
  hostile_locator_err ("loc-len-huge", UINT32_MAX, 1536, EINVAL,
                       "parent locator 0", "the trailing footer");
}

static void
test_locator_length_zero (void **state)
{
  hostile_locator ("loc-len-0", 0, 1536, "platform_data_length");
}

static void
test_locator_offset_plus_length_overflows (void **state)
{
  hostile_locator_err ("loc-overflow", 4096, UINT64_MAX - 1000, EINVAL,
                       "parent locator 0", "the trailing footer");
}

/* The locator's data is the dynamic header itself: two structures. */
static void
test_locator_data_in_header (void **state)
{
  hostile_locator_err ("loc-in-header", 512, 512, EINVAL,
                       "parent locator 0", "overlaps the dynamic header");
}

/* A bad locator beside a good one: the child would open through the
 * second, but the first one's data lies past the trailing footer, where
 * the next block would put the guest's bytes in it, so it is refused.
 */
static void
test_bad_locator_beside_a_good_one (void **state)
{
  char parent[PATH_MAX], child[PATH_MAX];
  struct meta m;

  make_pair (parent, child, sizeof parent, "loc-one-bad");
  load_meta (child, &m);
  m.header.locators[0].platform_data_offset = 1 * MiB;
  put_header (child, &m.header, m.header_at);
  expect_rejected (child, EINVAL, child, "parent locator 0",
                   "the trailing footer", NULL);
}

/* An allocated block of the child whose data holds a locator's data: a
 * write to the block would rewrite where the parent is.  Two structures
 * claim the same bytes, as two overlapping blocks do.
 */
static void
test_block_overlaps_locator_data (void **state)
{
  char parent[PATH_MAX], child[PATH_MAX];
  struct meta m;
  uint8_t text[1024], data[4096] = { 0 };
  struct vhd_parent_locator *loc;
  uint64_t data_at;
  vhd_disk *d;

  make_pair (parent, child, sizeof parent, "loc-in-block");
  d = open_ok (child, false);
  assert_int_equal (vhd_pwrite (d, data, sizeof data, 0, 0), 0);
  assert_int_equal (vhd_flush (d), 0);
  vhd_close (d);

  load_meta (child, &m);
  assert_int_not_equal (m.bat[0], VHD_BAT_UNUSED);
  data_at = (uint64_t) m.bat[0] * 512 + vhd_bitmap_size (m.header.block_size);
  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++) {
    loc = &m.header.locators[i];
    if (loc->platform_code == VHD_PLATFORM_NONE)
      continue;
    assert_true (loc->platform_data_length <= sizeof text);
    read_at (child, text, loc->platform_data_length,
             loc->platform_data_offset);
    write_at (child, text, loc->platform_data_length, data_at);
    loc->platform_data_offset = data_at;
    data_at += 1024;
  }
  put_header (child, &m.header, m.header_at);
  expect_rejected (child, EINVAL, child, "locator", NULL);
}

/* A child whose locator and parent id name the child itself. */
static void
test_locator_names_the_image_itself (void **state)
{
  char parent[PATH_MAX], child[PATH_MAX];
  struct meta m;

  make_pair (parent, child, sizeof parent, "self");
  load_meta (child, &m);
  set_parent_link (child, base_name (child), &m.footer.unique_id);
  expect_rejected (child, ENOENT, child, "loop", NULL);
}

/* A's parent is B and B's is A, with matching ids and sizes: only the
 * cycle stops it.
 */
static void
test_locator_cycle_of_two (void **state)
{
  char parent[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
  struct meta ma, mb;

  make_pair (parent, a, sizeof parent, "cycle-a");
  new_path (b, sizeof b, "cycle-b");
  vhd_close (create_disk (b, 0, 0, false, parent));
  load_meta (a, &ma);
  load_meta (b, &mb);
  set_parent_link (a, base_name (b), &mb.footer.unique_id);
  set_parent_link (b, base_name (a), &ma.footer.unique_id);
  expect_rejected (a, ENOENT, a, base_name (b), "loop", NULL);
  expect_rejected (b, ENOENT, b, base_name (a), "loop", NULL);
}

/* A chain c0000 (a dynamic disk with some data) <- c0001 <- ... <- c2000,
 * each a patched copy of one child that vhd_create_virtual_disk made.
 */
#define CHAIN_LEVELS 2000
static char chain_dir[300];
static uint8_t *chain_ref;

static void
chain_path (char *out, size_t n, unsigned k)
{
  snprintf (out, n, "%s/c%04u.vhd", chain_dir, k);
}

static void
make_chain (void)
{
  char base[PATH_MAX], tmpl[PATH_MAX], path[PATH_MAX], name[32];
  vhd_disk *d;

  if (chain_ref)
    return;
  snprintf (chain_dir, sizeof chain_dir, "%s/chain", dir);
  assert_int_equal (mkdir (chain_dir, 0755), 0);

  chain_path (base, sizeof base, 0);
  chain_ref = calloc (1, SAMPLE_SIZE);
  assert_non_null (chain_ref);
  d = create_disk (base, SAMPLE_SIZE, SAMPLE_BLOCK, false, NULL);
  write_disk (d, chain_ref, 1 * MiB + 77, 300 * KiB, 9);
  assert_int_equal (vhd_flush (d), 0);
  vhd_close (d);
  {
    struct vhd_guid g0 = guid_of_level (0);
    set_unique_id (base, &g0);
  }

  snprintf (tmpl, sizeof tmpl, "%s/template.vhd", chain_dir);
  vhd_close (create_disk (tmpl, 0, 0, false, base));
  for (unsigned k = 1; k <= CHAIN_LEVELS; k++) {
    struct vhd_guid me = guid_of_level (k), up = guid_of_level (k - 1);
    chain_path (path, sizeof path, k);
    copy_file (tmpl, path);
    set_unique_id (path, &me);
    snprintf (name, sizeof name, "c%04u.vhd", k - 1);
    set_parent_link (path, name, &up);
  }
  unlink (tmpl);
}

static unsigned
parents_of (const vhd_disk *d)
{
  unsigned n = 0;

  while ((d = vhd_get_parent (d)) != NULL)
    n++;
  return n;
}

/* The chain of depth 1000 is refused at the default limit (32), with an
 * error naming the limit, and still at a raised one (64).
 */
static void
test_chain_depth_1000_refused (void **state)
{
  char top[PATH_MAX];
  struct vhd_open_options o = { .readonly = true, .max_chain_depth = 64 };
  vhd_disk *d = NULL;

  make_chain ();
  chain_path (top, sizeof top, 1000);
  expect_rejected (top, ELOOP, "c09", "deeper than 32", "max_chain_depth",
                   NULL);
  assert_int_equal (vhd_open (top, &o, &d), -ELOOP);
  assert_null (d);
  if (strstr (vhd_last_error (), "deeper than 64") == NULL)
    fail_msg ("max_chain_depth 64: %s", vhd_last_error ());
}

/* A chain of depth 40 opens with max_chain_depth 64 and reads the base's
 * data through all of its levels.
 */
static void
test_chain_depth_40_opens_with_limit_64 (void **state)
{
  char top[PATH_MAX];
  struct vhd_open_options o = { .readonly = true, .max_chain_depth = 64 };
  vhd_disk *d = NULL;

  make_chain ();
  chain_path (top, sizeof top, 40);
  if (vhd_open (top, &o, &d) < 0)
    fail_msg ("%s: %s", top, vhd_last_error ());
  assert_int_equal (parents_of (d), 40);
  expect_reads (d, chain_ref, SAMPLE_SIZE);
  vhd_close (d);
  expect_rejected (top, ELOOP, "deeper than 32", NULL);
}

/* The limit's boundary, as nbdkit-vhd-plugin(1) documents max-chain-depth
 * ("Refuse a differencing chain with more than N images"): a chain of N
 * images opens, one of N + 1 images does not.  c(K) heads a chain of
 * K + 1 images.
 */
static void
test_chain_depth_limit_is_images (void **state)
{
  const unsigned limits[] = { 2, 5, 32 };

  make_chain ();
  for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
    unsigned n = limits[i];
    struct vhd_open_options o = { .readonly = true, .max_chain_depth = n };
    char top[PATH_MAX];
    vhd_disk *d = NULL;
    int r;

    chain_path (top, sizeof top, n - 1);        /* n images */
    if (vhd_open (top, &o, &d) < 0)
      fail_msg ("max_chain_depth %u: a chain of %u images is refused: %s",
                n, n, vhd_last_error ());
    assert_int_equal (parents_of (d) + 1, n);
    vhd_close (d);

    chain_path (top, sizeof top, n);            /* n + 1 images */
    d = NULL;
    r = vhd_open (top, &o, &d);
    if (r == 0) {
      unsigned images = parents_of (d) + 1;
      vhd_close (d);
      fail_msg ("max_chain_depth %u: a chain of %u images opens (the"
                " plugin's documentation says more than %u are refused)",
                n, images, n);
    }
    assert_int_equal (r, -ELOOP);
  }
}

/* An operator may raise max_chain_depth as far as they like; a hostile
 * chain deeper than the engine can walk must then get an error (or open),
 * not crash the process (a stack overflow in the recursive walk).  The
 * open runs in a child process so that a crash is reported as a failure
 * of this test alone.  Running out of file descriptors is an error too.
 */
static void
test_chain_depth_2000_unlimited_does_not_crash (void **state)
{
  char top[PATH_MAX];
  pid_t pid;
  int status;

  make_chain ();
  chain_path (top, sizeof top, 2000);
  fflush (NULL);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    struct vhd_open_options o = { .readonly = true,
                                  .max_chain_depth = UINT_MAX };
    vhd_disk *d = NULL;
    int r = vhd_open (top, &o, &d);
    const char *msg = vhd_last_error ();

    if (r == 0) {
      printf ("opened, %u parents\n", parents_of (d));
      vhd_close (d);
      _exit (0);
    }
    printf ("open: %d: %s\n", r, msg);
    _exit (r == -ELOOP || r == -EMFILE ||
           (r == -EINVAL && strstr (msg, "max_chain_depth")) ||
           (r == -ENOENT && strstr (msg, "open files")) ? 0 : 1);
  }
  assert_int_equal (waitpid (pid, &status, 0), pid);
  if (WIFSIGNALED (status))
    fail_msg ("vhd_open of a chain of 2000 images with max_chain_depth"
              " UINT_MAX crashed with signal %d (%s)", WTERMSIG (status),
              strsignal (WTERMSIG (status)));
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    fail_msg ("vhd_open of a chain of 2000 images with max_chain_depth"
              " UINT_MAX: an unexpected error (above)");
}

/* A parent that is itself hostile: the child's error names the parent and
 * what is wrong with it.
 */
static void
test_hostile_parent (void **state)
{
  char parent[PATH_MAX], child[PATH_MAX];
  struct meta m;

  make_pair (parent, child, sizeof parent, "bad-parent");
  load_meta (parent, &m);
  put_bat_entry (parent, &m, 5, (uint32_t) (m.file_size / 512 + 8));
  expect_rejected (child, ENOENT, child, parent, "BAT: entry 5", NULL);
}

/* Move the trailing footer of path back by len bytes, put data where it
 * was, and return that offset.
 */
static uint64_t
append_data (const char *path, const void *data, size_t len)
{
  struct meta m;
  uint8_t footer[VHD_FOOTER_SIZE];

  load_meta (path, &m);
  read_at (path, footer, sizeof footer, m.footer_at);
  write_at (path, data, len, m.footer_at);
  write_at (path, footer, sizeof footer, m.footer_at + len);
  return m.footer_at;
}

/* A locator whose data is a 64 KiB path (the most the engine reads): no
 * crash, and the error says which locator it was.
 */
static void
hostile_long_locator (const char *what, uint32_t code)
{
  char parent[PATH_MAX], child[PATH_MAX];
  struct meta m;
  uint8_t *data = hold (malloc (65536));
  uint64_t at;

  if (code == VHD_PLATFORM_MACX) {
    memset (data, 'a', 65536);
    memcpy (data, "file:///", 8);
    for (size_t i = 9; i < 65536; i += 9)
      data[i] = '/';
  }
  else
    for (size_t i = 0; i < 65536; i += 2) {
      data[i] = i % 8 == 6 ? '\\' : 'a';
      data[i + 1] = 0;
    }
  make_pair (parent, child, sizeof parent, what);
  at = append_data (child, data, 65536);
  release (data);
  load_meta (child, &m);
  memset (m.header.locators, 0, sizeof m.header.locators);
  memset (m.header.parent_unicode_name, 0,
          sizeof m.header.parent_unicode_name);
  m.header.locators[0] = (struct vhd_parent_locator) {
    .platform_code = code, .platform_data_space = 65536,
    .platform_data_length = 65536, .platform_data_offset = at,
  };
  put_header (child, &m.header, m.header_at);
  expect_rejected (child, ENOENT, child,
                   code == VHD_PLATFORM_MACX ? "MacX" : "W2ru", NULL);

  /* The data is well-formed, only too long: the error must not say that
   * it is malformed.
   */
  {
    vhd_disk *d = NULL;
    assert_int_equal (vhd_open (child, NULL, &d), -ENOENT);
    if (strstr (vhd_last_error (), "not valid") != NULL)
      fail_msg ("a well-formed locator that is too long is called"
                " malformed: %s", vhd_last_error ());
  }
}

static void
test_locator_w2ru_64k_path (void **state)
{
  hostile_long_locator ("loc-64k-w2ru", VHD_PLATFORM_W2RU);
}

static void
test_locator_macx_64k_url (void **state)
{
  hostile_long_locator ("loc-64k-macx", VHD_PLATFORM_MACX);
}

/* ---- Metadata that overlaps, footers that disagree (issue 10). ---- */

/* A dynamic header whose second half is the trailing footer: the header
 * sits at EOF-1024, the footer's bytes are its locator entries, and its
 * checksum covers them.  The first write would append a block at the
 * footer's offset, over the header.
 */
static void
test_header_second_half_is_trailing_footer (void **state)
{
  char path[PATH_MAX];
  struct meta m;
  uint8_t buf[VHD_DYN_HEADER_SIZE];
  uint64_t at;

  new_path (path, sizeof path, "header-is-footer");
  vhd_close (create_disk (path, SAMPLE_SIZE, SAMPLE_BLOCK, false, NULL));
  load_meta (path, &m);
  at = m.footer_at + VHD_FOOTER_SIZE;   /* the header's first half */
  m.footer.data_offset = at;
  put_footers (path, &m.footer, at + VHD_FOOTER_SIZE);
  vhd_dyn_header_encode (&m.header, buf);
  read_at (path, buf + VHD_FOOTER_SIZE, VHD_FOOTER_SIZE,
           at + VHD_FOOTER_SIZE);
  vhd_put_be32 (buf + 36, vhd_checksum (buf, sizeof buf, 36));
  write_at (path, buf, VHD_FOOTER_SIZE, at);
  assert_int_equal (file_size (path), at + VHD_DYN_HEADER_SIZE);
  expect_rejected (path, EINVAL, path, "the dynamic header",
                   "the trailing footer", "where the next block goes",
                   NULL);
}

/* A BAT whose last sector is the trailing footer: the footer's first four
 * bytes ("cone") are the last entry, a block at sector 0x636f6e65 (795
 * GiB into a sparse file) that lies just before the BAT.  One write to
 * block 0 would append its block on the footer, that is on the BAT.
 */
static void
test_bat_last_sector_is_trailing_footer (void **state)
{
  char path[PATH_MAX];
  struct meta m;
  uint8_t footer[VHD_FOOTER_SIZE];
  uint64_t cone = vhd_get_be32 ((const uint8_t *) "cone");
  uint64_t block_end, bat_at;
  vhd_disk *d = NULL;
  struct vhd_open_options o = { .readonly = false };
  struct vhd_check_result res;
  struct findings f = { 0 };

  new_path (path, sizeof path, "bat-is-footer");
  vhd_close (create_disk (path, SAMPLE_SIZE, SAMPLE_BLOCK, false, NULL));
  load_meta (path, &m);
  block_end = cone * 512 + vhd_bitmap_size (SAMPLE_BLOCK) + SAMPLE_BLOCK;
  bat_at = block_end;                   /* two sectors: 129 entries */
  m.header.max_table_entries = 129;
  m.header.table_offset = bat_at;
  put_header (path, &m.header, m.header_at);
  if (truncate (path, (off_t) (bat_at + 2 * VHD_SECTOR_SIZE)) == -1) {
    print_message ("skipped: this file system holds no sparse file of"
                   " 795 GiB: %s\n", strerror (errno));
    skip ();
  }
  fill_at (path, 0xff, VHD_SECTOR_SIZE, bat_at);
  put_footers (path, &m.footer, bat_at + VHD_SECTOR_SIZE);
  read_at (path, footer, 4, bat_at + VHD_SECTOR_SIZE);
  assert_memory_equal (footer, "cone", 4);

  /* The whole-file comparisons of expect_rejected would read 795 GiB. */
  for (int readonly = 1; readonly >= 0; readonly--) {
    o.readonly = readonly;
    if (vhd_open (path, &o, &d) == 0) {
      vhd_close (d);
      fail_msg ("%s: wrongly accepted (%s)", path,
                readonly ? "read-only" : "read-write");
    }
    print_message ("rejected: %s\n", vhd_last_error ());
    assert_non_null (strstr (vhd_last_error (), path));
    assert_non_null (strstr (vhd_last_error (), "the BAT"));
    assert_non_null (strstr (vhd_last_error (), "the trailing footer"));
  }
  assert_int_equal (vhd_check (path, NULL, 0, collect, &f, &res), 0);
  if (res.corruptions == 0)
    fail_msg ("vhd_check calls it clean: %s", f.text);
  assert_non_null (strstr (f.text, "the BAT"));
}

/* A parent locator's data in the padding of the BAT's last sector: the
 * first flush after a write rewrites that sector with 0xFF padding, and
 * the child then finds no parent (or another one by its parent name).
 */
static void
test_locator_in_bat_padding (void **state)
{
  char parent[PATH_MAX], child[PATH_MAX], rel[PATH_MAX];
  uint8_t data[1024];
  struct meta m;
  uint64_t at;
  int len;

  make_pair (parent, child, sizeof parent, "loc-in-bat-pad");
  load_meta (child, &m);
  assert_true (4 * (uint64_t) m.header.max_table_entries + 64 <= 512);
  at = m.header.table_offset + 4 * (uint64_t) m.header.max_table_entries
       + 16;
  snprintf (rel, sizeof rel, ".\\%s", base_name (parent));
  len = vhd_utf8_to_utf16 (rel, false, data, sizeof data);
  assert_true (len > 0 && at + (uint64_t) len
                          <= m.header.table_offset + 512);
  write_at (child, data, (size_t) len, at);
  memset (m.header.locators, 0, sizeof m.header.locators);
  m.header.locators[0] = (struct vhd_parent_locator) {
    .platform_code = VHD_PLATFORM_W2RU,
    .platform_data_space = (uint32_t) len,
    .platform_data_length = (uint32_t) len, .platform_data_offset = at,
  };
  put_header (child, &m.header, m.header_at);
  expect_rejected (child, EINVAL, child, "parent locator 0's data",
                   "overlaps the BAT", NULL);
}

/* A parent locator's data in the footer copy: two structures again. */
static void
test_locator_in_footer_copy (void **state)
{
  hostile_locator_err ("loc-in-copy", 64, 256, EINVAL, "parent locator 0",
                       "overlaps the footer copy");
}

/* The space reserved for a locator counts, not only its length: another
 * writer that rewrites the locator fills its space.  Here the space (in
 * sectors: smaller than the length in bytes) reaches into the BAT.
 */
static void
test_locator_space_in_sectors_reaches_bat (void **state)
{
  char parent[PATH_MAX], child[PATH_MAX];
  struct meta m;
  struct vhd_parent_locator *loc;

  make_pair (parent, child, sizeof parent, "loc-space");
  load_meta (child, &m);
  loc = &m.header.locators[0];
  assert_true (loc->platform_data_offset < m.header.table_offset);
  loc->platform_data_space =
    (uint32_t) ((m.header.table_offset - loc->platform_data_offset) / 512
                + 1);
  assert_true (loc->platform_data_space < loc->platform_data_length);
  put_header (child, &m.header, m.header_at);
  expect_rejected (child, EINVAL, child, "parent locator 0's data",
                   "overlaps the BAT", NULL);
}

/* Footer copies that disagree on size, type or identity. */
static void
disagreeing_copy (const char *what, void (*change) (struct vhd_footer *),
                  const char *field, const char *v1, const char *v2)
{
  char path[PATH_MAX];
  struct meta m;
  uint8_t buf[VHD_FOOTER_SIZE];

  make_sample (path, sizeof path, what, NULL);
  load_meta (path, &m);
  change (&m.footer);
  vhd_footer_encode (&m.footer, buf);
  write_at (path, buf, sizeof buf, 0);
  expect_rejected (path, EINVAL, path, "footer copy at offset 0", field, v1,
                   v2, NULL);
}

static void
smaller_size (struct vhd_footer *f)
{
  f->current_size = 2 * MiB;
}

static void
other_type (struct vhd_footer *f)
{
  f->disk_type = VHD_TYPE_DIFFERENCING;
}

static void
other_id (struct vhd_footer *f)
{
  f->unique_id.bytes[0] ^= 0xff;
}

static void
test_footer_copy_disagrees_on_size (void **state)
{
  disagreeing_copy ("copy-size", smaller_size, "current_size", "2097152",
                    "4194304");
}

static void
test_footer_copy_disagrees_on_type (void **state)
{
  disagreeing_copy ("copy-type", other_type, "disk_type", "differencing",
                    "dynamic");
}

static void
test_footer_copy_disagrees_on_id (void **state)
{
  disagreeing_copy ("copy-id", other_id, "unique_id", "-", "-");
}

/* The copies disagreed and the trailing footer, the larger, is lost: the
 * copy alone would shrink the disk under block 7.  Open refuses, check
 * calls it corrupt (not a recoverable lost footer) and --repair leaves
 * the file alone.
 */
static void
test_lost_footer_and_smaller_copy_never_shrink (void **state)
{
  char path[PATH_MAX];
  struct meta m;
  uint8_t buf[VHD_FOOTER_SIZE];
  struct vhd_check_result res;
  struct findings f = { 0 };
  size_t n0, n1;
  uint8_t *before, *after;

  make_sample (path, sizeof path, "copy-smaller-lost", NULL);
  load_meta (path, &m);
  assert_int_not_equal (m.bat[7], VHD_BAT_UNUSED);
  m.footer.current_size = 2 * MiB;
  vhd_footer_encode (&m.footer, buf);
  write_at (path, buf, sizeof buf, 0);
  fill_at (path, 0, VHD_FOOTER_SIZE, m.footer_at);
  expect_rejected (path, EINVAL, path, "entry 7", "current_size 2097152",
                   "lost", NULL);

  before = slurp (path, &n0);
  assert_int_equal (vhd_check (path, NULL, VHD_CHECK_REPAIR, collect, &f,
                               &res), 0);
  print_message ("check --repair: %s\n", f.text);
  assert_true (res.corruptions > 0);
  assert_int_equal (res.repaired, 0);
  assert_non_null (strstr (f.text, "entry 7"));
  after = slurp (path, &n1);
  assert_int_equal (n0, n1);
  assert_memory_equal (before, after, n0);
  release (before);
  release (after);
}

/* check's report is capped: a BAT of 1024 entries, every one of them
 * zero (the footer copy's sector), gives 1024 corruptions in the counts
 * but 100 findings and one that says how many more there were.
 */
static unsigned n_findings;
static char last_finding[512];

static void
count_findings (void *opaque, int kind, const char *message)
{
  n_findings++;
  snprintf (last_finding, sizeof last_finding, "%s", message);
}

static void
test_check_report_capped (void **state)
{
  char path[PATH_MAX];
  struct meta m;
  struct vhd_check_result res;
  uint64_t bat_at;

  new_path (path, sizeof path, "check-cap");
  vhd_close (create_disk (path, SAMPLE_SIZE, SAMPLE_BLOCK, false, NULL));
  load_meta (path, &m);
  bat_at = m.footer_at;
  m.header.table_offset = bat_at;
  m.header.max_table_entries = 1024;
  put_header (path, &m.header, m.header_at);
  fill_at (path, 0, 4096, bat_at);
  put_footers (path, &m.footer, bat_at + 4096);
  n_findings = 0;
  assert_int_equal (vhd_check (path, NULL, 0, count_findings, NULL, &res),
                    0);
  print_message ("%u findings, %u corruptions; last: %s\n", n_findings,
                 res.corruptions, last_finding);
  assert_int_equal (res.corruptions, 1024);
  assert_int_equal (n_findings, 101);
  assert_non_null (strstr (last_finding, "and 924 more problems"));
  assert_non_null (strstr (last_finding, "not shown"));
  expect_rejected (path, EINVAL, path, "entry 0", NULL);
}

/* ---- Memory and reads that an image controls (issue 10, point 5). ----
 *
 * The BAT is read a chunk at a time and checked as it is read, and what
 * an image would take in memory is checked against a cap before anything
 * is allocated.  Bytes read are measured with /proc/self/io (rchar) around
 * the open; peak RSS with VmHWM, reset through /proc/self/clear_refs, in
 * the normal build only (ASan inflates RSS: VHDKIT_SANITIZERS=1).
 */

static uint64_t
proc_number (const char *file, const char *key)
{
  char line[256];
  uint64_t v = 0;
  FILE *f = fopen (file, "r");

  assert_non_null (f);
  while (fgets (line, sizeof line, f))
    if (strncmp (line, key, strlen (key)) == 0)
      v = strtoull (line + strlen (key), NULL, 10);
  fclose (f);
  return v;
}

static uint64_t
bytes_read_so_far (void)
{
  return proc_number ("/proc/self/io", "rchar:");
}

static bool
measure_rss (void)
{
  const char *san = getenv ("VHDKIT_SANITIZERS");
  return !(san && strcmp (san, "1") == 0);
}

/* Reset the peak RSS to the current RSS; returns it in KiB. */
static uint64_t
reset_peak_rss (void)
{
  int fd = open ("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);

  assert_true (fd >= 0);
  assert_int_equal (write (fd, "5", 1), 1);
  close (fd);
  return proc_number ("/proc/self/status", "VmHWM:");
}

/* A dynamic image of entries blocks of block_size bytes, laid out by
 * vhd_create (footer copy, header, BAT), with a sparse BAT: all zeros
 * (every entry points at sector 0, the footer copy), or all 0xFF (unused)
 * when unused is set.  The trailing footer follows the BAT.
 */
static void
craft_big_bat (char *path, size_t n, const char *what, uint32_t block_size,
               uint32_t entries, bool unused)
{
  struct meta m;
  vhd_disk *d;
  uint64_t bat_end;

  new_path (path, n, what);
  d = create_disk (path, SAMPLE_SIZE, SAMPLE_BLOCK, false, NULL);
  vhd_close (d);
  load_meta (path, &m);
  m.footer.current_size = m.footer.original_size =
    (uint64_t) entries * block_size;
  m.header.block_size = block_size;
  m.header.max_table_entries = entries;
  bat_end = m.header.table_offset + vhd_bat_size (entries);
  truncate_to (path, m.header.table_offset);
  truncate_to (path, bat_end);
  if (unused)
    fill_at (path, 0xff, vhd_bat_size (entries), m.header.table_offset);
  put_header (path, &m.header, m.header_at);
  put_footers (path, &m.footer, bat_end);
}

/* Open read-only and read-write, expecting -err with a message naming
 * path and the words given, having read at most max_read bytes and grown
 * the peak RSS by at most max_rss_kib.
 */
static void __attribute__ ((sentinel))
expect_refused_cheaply (const char *path, int err, uint64_t max_read,
                        uint64_t max_rss_kib, ...)
{
  for (int readonly = 1; readonly >= 0; readonly--) {
    struct vhd_open_options o = { .readonly = readonly };
    vhd_disk *d = NULL;
    uint64_t rss0 = 0, read0, read1;
    const char *want;
    va_list ap;
    int r;

    if (measure_rss ())
      rss0 = reset_peak_rss ();
    read0 = bytes_read_so_far ();
    r = vhd_open (path, &o, &d);
    read1 = bytes_read_so_far ();
    if (r == 0)
      vhd_close (d);
    if (r != -err)
      fail_msg ("%s: open returned %d, expected %d: %s", path, r, -err,
                vhd_last_error ());
    if (strstr (vhd_last_error (), path) == NULL)
      fail_msg ("the error does not name the file: %s", vhd_last_error ());
    va_start (ap, max_rss_kib);
    while ((want = va_arg (ap, const char *)) != NULL)
      if (strstr (vhd_last_error (), want) == NULL) {
        va_end (ap);
        fail_msg ("the error does not say \"%s\": %s", want,
                  vhd_last_error ());
      }
    va_end (ap);
    print_message ("refused after reading %" PRIu64 " bytes: %s\n",
                   read1 - read0, vhd_last_error ());
    if (read1 - read0 > max_read)
      fail_msg ("%s: open read %" PRIu64 " bytes before refusing, more"
                " than %" PRIu64, path, read1 - read0, max_read);
    if (measure_rss ()) {
      uint64_t rss1 = proc_number ("/proc/self/status", "VmHWM:");
      print_message ("peak RSS grew by %" PRIu64 " KiB\n", rss1 - rss0);
      if (rss1 - rss0 > max_rss_kib)
        fail_msg ("%s: the open grew the peak RSS by %" PRIu64 " KiB",
                  path, rss1 - rss0);
    }
  }
}

/* 2040 GiB in 4 KiB blocks: 534773760 entries, a 2 GiB BAT (sparse) and
 * 7 GiB of memory.  Refused by the cap before the BAT is read.
 */
static void
test_bat_4k_blocks_2040g_refused_by_cap (void **state)
{
  char path[PATH_MAX];

  craft_big_bat (path, sizeof path, "bat-4k-2040g", 4096,
                 (uint32_t) (VHD_MAX_DISK_SIZE / 4096), false);
  expect_refused_cheaply (path, EFBIG, 64 * KiB, 16 * 1024,
                          "max_table_entries 534773760", "cap of 1073741824",
                          "max_metadata_bytes", NULL);
}

/* Within the cap (16 Mi entries, 64 MiB of BAT), every entry zero: entry
 * 0 puts its block on the footer copy, and the open stops there, after
 * reading the first chunk of the BAT, not the whole of it.
 */
static void
test_bat_all_zero_fails_after_first_chunk (void **state)
{
  char path[PATH_MAX];

  craft_big_bat (path, sizeof path, "bat-all-zero", 4096, 16u << 20, false);
  expect_refused_cheaply (path, EINVAL, 1 * MiB, 16 * 1024,
                          "entry 0 ", "overlaps", NULL);
}

/* The cap is the caller's: 1 Mi entries (4 MiB of BAT) is refused under
 * a 1 MiB cap, with what it needs and how to raise it, and opens under
 * a larger one and the default.
 */
static void
test_metadata_cap_option (void **state)
{
  char path[PATH_MAX];
  struct vhd_open_options o = { .readonly = true, .max_metadata_bytes = MiB };
  vhd_disk *d = NULL;
  uint8_t buf[4096], zero[4096] = { 0 };

  craft_big_bat (path, sizeof path, "cap-option", 4096, 1u << 20, true);
  assert_int_equal (vhd_open (path, &o, &d), -EFBIG);
  assert_null (d);
  print_message ("%s\n", vhd_last_error ());
  assert_non_null (strstr (vhd_last_error (), path));
  assert_non_null (strstr (vhd_last_error (), "cap of 1048576 bytes"));
  assert_non_null (strstr (vhd_last_error (), "max_metadata_bytes"));

  o.max_metadata_bytes = 64 * MiB;
  assert_int_equal (vhd_open (path, &o, &d), 0);
  assert_int_equal (vhd_get_size (d), 4 * GiB);
  assert_int_equal (vhd_pread (d, buf, sizeof buf, 3 * GiB), 0);
  assert_memory_equal (buf, zero, sizeof buf);
  vhd_close (d);

  o.max_metadata_bytes = 0;
  assert_int_equal (vhd_open (path, &o, &d), 0);
  vhd_close (d);
}

/* The default admits what Windows creates: 2040 GiB in 512 KiB and 2 MiB
 * blocks; the VHDX case (64 TiB in 1 MiB blocks, 512 MiB of 8-byte
 * entries) fits with its per-block state; 4 KiB blocks at 2040 GiB do not.
 */
static void
test_metadata_cap_default_admits_windows_sizes (void **state)
{
  uint64_t cap = VHD_DEFAULT_MAX_METADATA_BYTES;
  uint64_t vhdx_entries = (UINT64_C (64) << 40) / MiB;

  assert_true (vhd_metadata_bytes ((uint32_t) (VHD_MAX_DISK_SIZE
                                               / (512 * KiB))) < cap / 8);
  assert_true (vhd_metadata_bytes ((uint32_t) (VHD_MAX_DISK_SIZE
                                               / (2 * MiB))) < cap / 8);
  assert_true (vhdx_entries * (8 + 1) < cap);
  assert_true (vhd_metadata_bytes ((uint32_t) (VHD_MAX_DISK_SIZE / 4096))
               > cap);
  assert_true (vhd_metadata_bytes (UINT32_MAX) > cap);
}

#define TEST(f) cmocka_unit_test_teardown (f, release_all)

int
main (void)
{
  const struct CMUnitTest tests[] = {
    TEST (test_truncated_at_every_sector),
    TEST (test_trailing_footer_zeroed_opens_from_copy),
    TEST (test_trailing_footer_bad_checksum_opens_from_copy),
    TEST (test_footer_checksum_bad_in_both),
    TEST (test_current_size_over_2040g),
    TEST (test_current_size_not_sector_multiple),
    TEST (test_current_size_zero),
    TEST (test_current_size_beyond_the_bat),
    TEST (test_data_offset_past_eof),
    TEST (test_data_offset_huge),
    TEST (test_data_offset_zero),
    TEST (test_fixed_current_size_past_eof),
    TEST (test_header_checksum_bad),
    TEST (test_header_version_unknown),
    TEST (test_block_size_zero),
    TEST (test_block_size_not_power_of_two),
    TEST (test_block_size_below_minimum),
    TEST (test_block_size_1g),
    TEST (test_max_table_entries_too_small),
    TEST (test_max_table_entries_huge),
    TEST (test_max_table_entries_beyond_2040g),
    TEST (test_max_table_entries_bat_past_eof),
    TEST (test_table_offset_past_eof),
    TEST (test_table_offset_huge),
    TEST (test_table_offset_zero),
    TEST (test_table_offset_inside_header),
    TEST (test_bat_entry_past_eof),
    TEST (test_bat_entry_max_sector),
    TEST (test_bat_entry_into_trailing_footer),
    TEST (test_bat_entry_into_footer_copy),
    TEST (test_bat_entry_into_header),
    TEST (test_bat_entry_into_bat),
    TEST (test_bat_entries_overlap),
    TEST (test_bat_entries_identical),
    TEST (test_locator_offset_past_eof),
    TEST (test_locator_length_past_eof),
    TEST (test_locator_length_huge),
    TEST (test_locator_length_zero),
    TEST (test_locator_offset_plus_length_overflows),
    TEST (test_locator_data_in_header),
    TEST (test_locator_w2ru_64k_path),
    TEST (test_locator_macx_64k_url),
    TEST (test_hostile_parent),
    TEST (test_bad_locator_beside_a_good_one),
    TEST (test_block_overlaps_locator_data),
    TEST (test_locator_names_the_image_itself),
    TEST (test_locator_cycle_of_two),
    TEST (test_chain_depth_1000_refused),
    TEST (test_chain_depth_40_opens_with_limit_64),
    TEST (test_chain_depth_limit_is_images),
    TEST (test_chain_depth_2000_unlimited_does_not_crash),
    TEST (test_header_second_half_is_trailing_footer),
    TEST (test_bat_last_sector_is_trailing_footer),
    TEST (test_locator_in_bat_padding),
    TEST (test_locator_in_footer_copy),
    TEST (test_locator_space_in_sectors_reaches_bat),
    TEST (test_footer_copy_disagrees_on_size),
    TEST (test_footer_copy_disagrees_on_type),
    TEST (test_footer_copy_disagrees_on_id),
    TEST (test_lost_footer_and_smaller_copy_never_shrink),
    TEST (test_check_report_capped),
    TEST (test_bat_4k_blocks_2040g_refused_by_cap),
    TEST (test_bat_all_zero_fails_after_first_chunk),
    TEST (test_metadata_cap_option),
    TEST (test_metadata_cap_default_admits_windows_sizes),
  };
  int r;

  r = cmocka_run_group_tests (tests, setup, teardown);
  free (chain_ref);
  return r;
}
