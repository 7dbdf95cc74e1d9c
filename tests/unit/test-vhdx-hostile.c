/* Hostile VHDX images through the public vhd_open.
 *
 * Valid small images (a dynamic and a fixed one made by
 * vhd_create_virtual_disk, and the samples dissect-dynamic.vhdx, written
 * by Hyper-V, and qemu-iotest-dirtylog-10G-4M.vhdx, written by qemu with
 * a log to replay) are copied and damaged one way at a time; each copy is
 * opened read-only and then read-write.  A damaged image must either be
 * refused cleanly, with an error that names the file and the structure
 * or field at fault, or, where the format keeps a second copy (the
 * headers, the region tables) or the damage is a torn log entry, open
 * and read exactly what the intact image reads.  Nothing may crash; run
 * under valgrind by `make check-valgrind` to catch reads outside buffers.
 *
 * The damage: truncation at every structure boundary and inside each
 * structure; one header or both; one region table or both; overlapping
 * regions (checksums fixed, so the check behind the checksum is what
 * refuses them); BAT entries past the end of the file, over the metadata
 * region, the log or another block; a torn log entry and a looping log
 * chain; metadata values whose chunk ratio or sizes overflow.
 * Truncations print the message they get; VHDKIT_HOSTILE_SHOW=1 prints
 * every other refusal's message too.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
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
#include "formats/vhdx/crc32c.h"
#include "formats/vhdx/format.h"
#include "scratch.h"
#include "require.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
/* What the tests compare of a disk: all of a small one, the start of a
 * big one (the dirty-log sample is 10 GiB, its data in the first 18 MiB).
 */
#define COMPARE_MAX (32 * MiB)

static int counter;

/* ---- files ---- */

static uint8_t *
slurp (const char *path, uint64_t *n)
{
  FILE *f = fopen (path, "rb");
  struct stat st;
  uint8_t *b;

  assert_non_null (f);
  assert_int_equal (fstat (fileno (f), &st), 0);
  *n = (uint64_t) st.st_size;
  b = malloc (*n ? *n : 1);
  assert_non_null (b);
  assert_int_equal (fread (b, 1, *n, f), *n);
  fclose (f);
  return b;
}

static void
spit (const char *path, const uint8_t *b, uint64_t n)
{
  FILE *f = fopen (path, "wb");

  assert_non_null (f);
  assert_int_equal (fwrite (b, 1, n, f), n);
  assert_int_equal (fclose (f), 0);
}

/* ---- an image's layout, read with the library's decoders from the
 * intact file (the damage is then placed by these offsets).
 */

struct layout {
  char path[300];               /* the intact image */
  const char *name;
  uint64_t file_size;
  uint64_t log_offset, log_length;
  uint64_t bat_offset, bat_length;
  uint64_t md_offset, md_length;
  /* Absolute offsets of metadata item values. */
  uint64_t fp_at, size_at, lss_at;
  uint32_t block_size;
  uint64_t virtual_size;
  uint64_t chunk_ratio;
  /* Payload blocks present (entry index, offset), at most 4 kept. */
  uint64_t present_index[4], present_offset[4];
  unsigned n_present;
  int current_header;           /* 1 or 2 */
  uint8_t *expected;            /* the disk's first compare_len bytes */
  uint64_t compare_len;
};

static struct layout dyn, fixed, dissect, dirtylog;
static bool have_samples;

static void
read_layout (struct layout *L)
{
  uint64_t n;
  uint8_t *b = slurp (L->path, &n);
  struct vhdx_header h;
  struct vhdx_regions rg;
  struct vhdx_metadata_table mt;
  struct vhdx_metadata md;

  L->file_size = n;
  assert_int_equal (vhdx_pick_header (b + VHDX_HEADER1_OFFSET,
                                      b + VHDX_HEADER2_OFFSET, L->path, &h,
                                      &L->current_header), 0);
  L->log_offset = h.log_offset;
  L->log_length = h.log_length;
  assert_int_equal (vhdx_region_table_decode (b + VHDX_REGION_TABLE1_OFFSET,
                                              L->path, 1, &rg), 0);
  L->bat_offset = rg.bat.offset;
  L->bat_length = rg.bat.length;
  L->md_offset = rg.metadata.offset;
  L->md_length = rg.metadata.length;
  assert_int_equal (vhdx_metadata_table_decode (b + L->md_offset,
                                                (uint32_t) L->md_length,
                                                L->path, &mt), 0);
  assert_int_equal (vhdx_metadata_decode (b + L->md_offset, L->md_length,
                                          &mt, L->path, &md), 0);
  L->fp_at = L->md_offset + mt.file_parameters.offset;
  L->size_at = L->md_offset + mt.virtual_disk_size.offset;
  L->lss_at = L->md_offset + mt.logical_sector_size.offset;
  L->block_size = md.block_size;
  L->virtual_size = md.virtual_size;
  L->chunk_ratio = (UINT64_C (1) << 23) * md.logical_sector_size
                   / md.block_size;
  L->n_present = 0;
  for (uint64_t i = 0; i * 8 < L->bat_length && L->n_present < 4; i++) {
    uint64_t e = vhdx_get_le64 (b + L->bat_offset + i * 8);
    if (i % (L->chunk_ratio + 1) == L->chunk_ratio)
      continue;                 /* a sector bitmap entry */
    if ((e & 7) == VHDX_PAYLOAD_FULLY_PRESENT) {
      L->present_index[L->n_present] = i;
      L->present_offset[L->n_present++] = (e >> 20) << 20;
    }
  }
  free (b);
}

/* A fresh copy of L's image, damaged by the caller. */
static void
copy_of (const struct layout *L, const char *what, char *out, size_t n)
{
  uint64_t size;
  uint8_t *b = slurp (L->path, &size);

  snprintf (out, n, "%s/%s-%s-%d.vhdx", dir, L->name, what, counter++);
  spit (out, b, size);
  free (b);
}

static void
patch (const char *path, uint64_t at, const void *bytes, size_t len)
{
  int fd = open (path, O_WRONLY);

  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, bytes, len, (off_t) at), (ssize_t) len);
  close (fd);
}

static void
patch_le32 (const char *path, uint64_t at, uint32_t v)
{
  uint8_t b[4];
  vhdx_put_le32 (b, v);
  patch (path, at, b, 4);
}

static void
patch_le64 (const char *path, uint64_t at, uint64_t v)
{
  uint8_t b[8];
  vhdx_put_le64 (b, v);
  patch (path, at, b, 8);
}

static void
flip_byte (const char *path, uint64_t at)
{
  uint64_t size;
  uint8_t *b = slurp (path, &size);

  assert_true (at < size);
  b[at] ^= 0x5a;
  spit (path, b, size);
  free (b);
}

/* ---- expectations ---- */

/* Opening path (read-only, then read-write) fails, and the message names
 * the file and contains `words` (and `words2` when not NULL).
 */
static void
expect_refused (const char *path, const char *words, const char *words2)
{
  for (int ro = 1; ro >= 0; ro--) {
    struct vhd_open_options o = { .readonly = ro };
    vhd_disk *d = NULL;
    int r = vhd_open (path, &o, &d);
    const char *msg = vhd_last_error ();

    if (r >= 0) {
      vhd_close (d);
      fail_msg ("%s opened (%s) but should be refused for \"%s\"", path,
                ro ? "read-only" : "read-write", words);
    }
    assert_null (d);
    if (getenv ("VHDKIT_HOSTILE_SHOW"))
      print_message ("  %s\n", msg);
    if (r == -ENOMEM || strstr (msg, path) == NULL ||
        strstr (msg, words) == NULL ||
        (words2 && strstr (msg, words2) == NULL))
      fail_msg ("%s (%s): error %d \"%s\" lacks the file name or \"%s\"%s%s",
                path, ro ? "read-only" : "read-write", r, msg, words,
                words2 ? " or " : "", words2 ? words2 : "");
    /* "(another block)" only where the other extent is a block. */
    if (strstr (msg, "(another block)") &&
        !strstr (msg, "overlaps the payload block") &&
        !strstr (msg, "overlaps the sector bitmap block"))
      fail_msg ("%s: \"%s\" calls a region another block", path, msg);
  }
}

/* Opening path read-only, then read-write, reads what L's intact image
 * reads.
 */
static void
expect_reads_same (const struct layout *L, const char *path)
{
  uint8_t *got = malloc (L->compare_len);

  assert_non_null (got);
  for (int ro = 1; ro >= 0; ro--) {
    struct vhd_open_options o = { .readonly = ro };
    vhd_disk *d;

    if (vhd_open (path, &o, &d) < 0)
      fail_msg ("%s (%s) does not open: %s", path,
                ro ? "read-only" : "read-write", vhd_last_error ());
    assert_int_equal (vhd_get_size (d), L->virtual_size);
    assert_int_equal (vhd_pread (d, got, L->compare_len, 0), 0);
    vhd_close (d);
    if (memcmp (got, L->expected, L->compare_len) != 0) {
      uint64_t i = 0;
      while (got[i] == L->expected[i])
        i++;
      fail_msg ("%s (%s): byte %" PRIu64 " reads 0x%02x, the intact image"
                " 0x%02x", path, ro ? "read-only" : "read-write", i,
                got[i], L->expected[i]);
    }
  }
  free (got);
}

static void
read_expected (struct layout *L)
{
  struct vhd_open_options o = { .readonly = true };
  vhd_disk *d;

  L->compare_len = L->virtual_size < COMPARE_MAX ? L->virtual_size
                                                 : COMPARE_MAX;
  L->expected = malloc (L->compare_len);
  assert_non_null (L->expected);
  if (vhd_open (L->path, &o, &d) < 0)
    fail_msg ("%s: %s", L->path, vhd_last_error ());
  assert_int_equal (vhd_pread (d, L->expected, L->compare_len, 0), 0);
  vhd_close (d);
}

/* ---- the images ---- */

static void
create_image (struct layout *L, const char *name, bool full, uint64_t size)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHDX,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = VHD_CREATE_VERSION_2 };
  uint8_t *buf = malloc (MiB);
  vhd_disk *d;

  assert_non_null (buf);
  L->name = name;
  snprintf (L->path, sizeof L->path, "%s/%s.vhdx", dir, name);
  p.version2.maximum_size = size;
  p.version2.block_size_in_bytes = (uint32_t) MiB;
  if (vhd_create_virtual_disk (&st, L->path, VHD_ACCESS_NONE, NULL,
                               full ? VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
                                    : 0, 0, &p, NULL, &d) < 0)
    fail_msg ("create %s: %s", L->path, vhd_last_error ());
  /* Data in blocks 0, 2 and 5 (a few BAT entries present), a pattern
   * that a wrong block or a wrong offset cannot read.
   */
  for (unsigned b = 0; b < 6; b += b == 0 ? 2 : 3) {
    for (uint64_t i = 0; i < MiB; i++)
      buf[i] = (uint8_t) (i * 7 + b * 13 + (i >> 9));
    if (vhd_pwrite (d, buf, MiB, b * MiB, 0) < 0)
      fail_msg ("write %s: %s", L->path, vhd_last_error ());
  }
  vhd_close (d);
  free (buf);
}

static bool
sample (struct layout *L, const char *name)
{
  const char *s = getenv ("VHDKIT_SAMPLES");
  char src[600], cmd[1500];

  if (s == NULL || *s == '\0')
    return false;
  snprintf (src, sizeof src, "%s/vhdx/%s.vhdx.xz", s, name);
  if (access (src, R_OK) != 0)
    return false;
  L->name = name;
  snprintf (L->path, sizeof L->path, "%s/%s.vhdx", dir, name);
  snprintf (cmd, sizeof cmd, "xz -dc '%s' > '%s'", src, L->path);
  return system (cmd) == 0;
}

static int
setup (void **state)
{
  if (make_scratch ("test-vhdx-hostile") < 0)
    return -1;
  create_image (&dyn, "dynamic", false, 8 * MiB);
  create_image (&fixed, "fixed", true, 6 * MiB);
  have_samples = sample (&dissect, "dissect-dynamic")
                 && sample (&dirtylog, "qemu-iotest-dirtylog-10G-4M");
  read_layout (&dyn);
  read_layout (&fixed);
  read_expected (&dyn);
  read_expected (&fixed);
  if (have_samples) {
    read_layout (&dissect);
    read_layout (&dirtylog);
    read_expected (&dissect);
    read_expected (&dirtylog);
  }
  return 0;
}

static int
teardown (void **state)
{
  free (dyn.expected);
  free (fixed.expected);
  free (dissect.expected);
  free (dirtylog.expected);
  return remove_scratch ();
}

/* The images each test runs on: the samples when they are there. */
static size_t
images (struct layout **out)
{
  size_t n = 0;

  out[n++] = &dyn;
  out[n++] = &fixed;
  if (have_samples) {
    out[n++] = &dissect;
    out[n++] = &dirtylog;
  }
  else if (vhdkit_require ())
    fail_msg ("VHDKIT_REQUIRE=%s: the VHDX samples are missing (set"
              " VHDKIT_SAMPLES)", vhdkit_require ());
  else
    print_message ("VHDX samples missing (VHDKIT_SAMPLES): created images"
                   " only\n");
  return n;
}

/* ---- truncation ---- */

static void
truncated_at (const struct layout *L, uint64_t size, const char *where)
{
  char path[400];
  struct vhd_open_options ro = { .readonly = true };
  vhd_disk *d = NULL;
  int r;

  if (size >= L->file_size)
    return;
  copy_of (L, where, path, sizeof path);
  assert_int_equal (truncate (path, (off_t) size), 0);
  /* Every message names the file; which structure it blames depends on
   * where the cut is (the test prints it so that a reader can judge).
   */
  for (int pass = 0; pass < 2; pass++) {
    ro.readonly = pass == 0;
    r = vhd_open (path, &ro, &d);
    if (r >= 0) {
      vhd_close (d);
      fail_msg ("%s cut at %" PRIu64 " (%s) opened %s", L->name, size,
                where, ro.readonly ? "read-only" : "read-write");
    }
    if (strstr (vhd_last_error (), path) == NULL)
      fail_msg ("%s cut at %" PRIu64 " (%s): \"%s\" does not name the file",
                L->name, size, where, vhd_last_error ());
  }
  print_message ("  %s cut at %" PRIu64 " (%s): %s\n", L->name, size, where,
                 vhd_last_error () + strlen (path) + 2);
}

static void
test_truncation (void **state)
{
  struct layout *ims[4];
  size_t n = images (ims);

  for (size_t i = 0; i < n; i++) {
    const struct layout *L = ims[i];
    static const struct { uint64_t at; const char *what; } fixed_cuts[] = {
      { 0, "empty" }, { 8, "in the file type identifier" },
      { 64 * KiB, "at header 1" }, { 64 * KiB + 100, "in header 1" },
      { 128 * KiB, "at header 2" }, { 128 * KiB + 4095, "in header 2" },
      { 192 * KiB, "at region table 1" }, { 200 * KiB, "in region table 1" },
      { 256 * KiB, "at region table 2" }, { 300 * KiB, "in region table 2" },
      { MiB, "at 1 MiB" },
    };
    for (size_t k = 0; k < sizeof fixed_cuts / sizeof fixed_cuts[0]; k++)
      truncated_at (L, fixed_cuts[k].at, fixed_cuts[k].what);
    truncated_at (L, L->log_offset + L->log_length / 2, "in the log");
    truncated_at (L, L->md_offset, "at the metadata region");
    truncated_at (L, L->md_offset + 4 * KiB, "in the metadata table");
    truncated_at (L, L->fp_at + 4, "in the file parameters item");
    truncated_at (L, L->bat_offset, "at the BAT");
    truncated_at (L, L->bat_offset + 4, "in a BAT entry");
    if (L->n_present) {
      uint64_t last = 0;
      for (unsigned k = 0; k < L->n_present; k++)
        if (L->present_offset[k] > last)
          last = L->present_offset[k];
      truncated_at (L, L->present_offset[0] + 512, "in a block");
      truncated_at (L, last + L->block_size - 512, "in the last block");
    }
  }
}

/* ---- headers and region tables ---- */

static void
test_one_header_corrupt (void **state)
{
  struct layout *ims[4];
  size_t n = images (ims);
  char path[400];

  for (size_t i = 0; i < n; i++)
    for (uint64_t at = VHDX_HEADER1_OFFSET; at <= VHDX_HEADER2_OFFSET;
         at += VHDX_HEADER2_OFFSET - VHDX_HEADER1_OFFSET) {
      /* A byte of its GUIDs: the checksum no longer matches. */
      copy_of (ims[i], "header", path, sizeof path);
      flip_byte (path, at + 20);
      expect_reads_same (ims[i], path);
      /* Its signature. */
      copy_of (ims[i], "header-sig", path, sizeof path);
      flip_byte (path, at);
      expect_reads_same (ims[i], path);
    }
}

static void
test_both_headers_corrupt (void **state)
{
  struct layout *ims[4];
  size_t n = images (ims);
  char path[400];

  for (size_t i = 0; i < n; i++) {
    copy_of (ims[i], "headers", path, sizeof path);
    flip_byte (path, VHDX_HEADER1_OFFSET + 20);
    flip_byte (path, VHDX_HEADER2_OFFSET + 4000);
    expect_refused (path, "header 1", "header 2");
    /* The checksums fixed up, but a field wrong in each: the version. */
    copy_of (ims[i], "headers-version", path, sizeof path);
    for (uint64_t at = VHDX_HEADER1_OFFSET; at <= VHDX_HEADER2_OFFSET;
         at += VHDX_HEADER2_OFFSET - VHDX_HEADER1_OFFSET) {
      uint64_t size;
      uint8_t *b = slurp (path, &size);
      vhdx_put_le16 (b + at + 66, 2);
      vhdx_put_le32 (b + at + 4, 0);
      vhdx_put_le32 (b + at + 4, vhdx_crc32c (b + at, VHDX_HEADER_SIZE));
      spit (path, b, size);
      free (b);
    }
    expect_refused (path, "version", NULL);
  }
}

static void
test_region_tables (void **state)
{
  struct layout *ims[4];
  size_t n = images (ims);
  char path[400];

  for (size_t i = 0; i < n; i++) {
    copy_of (ims[i], "rt1", path, sizeof path);
    flip_byte (path, VHDX_REGION_TABLE1_OFFSET + 40);
    expect_reads_same (ims[i], path);
    /* Table 2 damaged alone: table 1 is used, nothing to see. */
    copy_of (ims[i], "rt2", path, sizeof path);
    flip_byte (path, VHDX_REGION_TABLE2_OFFSET + 40);
    expect_reads_same (ims[i], path);
    copy_of (ims[i], "rt12", path, sizeof path);
    flip_byte (path, VHDX_REGION_TABLE1_OFFSET + 40);
    flip_byte (path, VHDX_REGION_TABLE2_OFFSET + 1);
    expect_refused (path, "region table 1", "region table 2");
  }
}

/* Both region tables rewritten with the BAT and metadata regions as
 * given (checksums right), so that the layout check is what refuses.
 */
static void
set_regions (const char *path, uint64_t bat_offset, uint32_t bat_length,
             uint64_t md_offset, uint32_t md_length)
{
  uint64_t size;
  uint8_t *b = slurp (path, &size);
  struct vhdx_regions rg;

  for (int t = 0; t < 2; t++) {
    uint8_t *tb = b + (t ? VHDX_REGION_TABLE2_OFFSET
                         : VHDX_REGION_TABLE1_OFFSET);
    assert_int_equal (vhdx_region_table_decode (tb, path, t + 1, &rg), 0);
    rg.bat.offset = bat_offset;
    rg.bat.length = bat_length;
    rg.metadata.offset = md_offset;
    rg.metadata.length = md_length;
    memset (tb, 0, VHDX_REGION_TABLE_SIZE);
    vhdx_region_table_encode (&rg, tb);
  }
  spit (path, b, size);
  free (b);
}

/* Move a region's bytes from `from` to `to` (len bytes), so that what
 * refuses the moved region is the layout check, not its contents.
 */
static void
move_bytes (const char *path, uint64_t from, uint64_t to, uint64_t len)
{
  uint64_t size;
  uint8_t *b = slurp (path, &size);

  assert_true (from + len <= size && to + len <= size);
  memmove (b + to, b + from, len);
  spit (path, b, size);
  free (b);
}

static void
test_overlapping_regions (void **state)
{
  struct layout *ims[4];
  size_t n = images (ims);
  char path[400];

  for (size_t i = 0; i < n; i++) {
    const struct layout *L = ims[i];
    uint32_t bl = (uint32_t) L->bat_length, ml = (uint32_t) L->md_length;

    /* Metadata over the BAT: the region table's own check. */
    copy_of (L, "md-on-bat", path, sizeof path);
    set_regions (path, L->bat_offset, bl, L->bat_offset, ml);
    expect_refused (path, "region table", "overlaps");
    /* The log is not in the region table: the BAT over the log, its
     * bytes there (a log that is empty, or that a dirty image's header
     * still points to: then the replay refuses the entries it finds).
     */
    copy_of (L, "bat-on-log", path, sizeof path);
    set_regions (path, L->log_offset, bl, L->md_offset, ml);
    move_bytes (path, L->bat_offset, L->log_offset,
                bl < L->log_length ? bl : L->log_length);
    expect_refused (path, "BAT region at", "bytes, overlaps the log at");
    /* The metadata region over the log, its bytes moved there. */
    copy_of (L, "md-on-log", path, sizeof path);
    set_regions (path, L->bat_offset, bl, L->log_offset, ml);
    move_bytes (path, L->md_offset, L->log_offset,
                ml < L->log_length ? ml : L->log_length);
    expect_refused (path, "metadata region at",
                    "bytes, overlaps the log at");
  }
}

/* ---- the BAT ---- */

static void
test_bat_entries (void **state)
{
  struct layout *ims[4];
  size_t n = images (ims);
  char path[400];

  for (size_t i = 0; i < n; i++) {
    const struct layout *L = ims[i];
    struct layout replayed;
    uint64_t at;

    /* The dirty-log sample's entry rewrites its BAT page at open (the
     * damage would be replayed away): damage it after a replay.
     */
    if (L == &dirtylog) {
      vhd_disk *d;
      replayed = *L;
      replayed.name = "dirtylog-replayed";
      copy_of (L, "replay", replayed.path, sizeof replayed.path);
      assert_int_equal (vhd_open (replayed.path, NULL, &d), 0);
      vhd_close (d);
      read_layout (&replayed);
      L = &replayed;
    }

    if (L->n_present == 0)
      fail_msg ("%s has no block present", L->name);
    at = L->bat_offset + L->present_index[0] * 8;
    copy_of (L, "bat-past-end", path, sizeof path);
    patch_le64 (path, at, (L->file_size + 16 * MiB) | 6);
    expect_refused (path, "BAT entry", "past the end of the file");
    copy_of (L, "bat-far-past-end", path, sizeof path);
    patch_le64 (path, at, (VHDX_BAT_MAX_OFFSET_MB << 20) | 6);
    expect_refused (path, "BAT entry", "past the end of the file");
    copy_of (L, "bat-header-area", path, sizeof path);
    patch_le64 (path, at, 6);
    expect_refused (path, "BAT entry", "header area");
    copy_of (L, "bat-on-metadata", path, sizeof path);
    patch_le64 (path, at, L->md_offset | 6);
    expect_refused (path, "overlaps the metadata region at", NULL);
    copy_of (L, "bat-on-bat", path, sizeof path);
    patch_le64 (path, at, L->bat_offset | 6);
    expect_refused (path, "overlaps the BAT region at", NULL);
    copy_of (L, "bat-on-log", path, sizeof path);
    patch_le64 (path, at, L->log_offset | 6);
    expect_refused (path, "overlaps the log at", NULL);
    /* Two blocks in one place, and one half a block into another: the
     * next payload entry after the first present one (dissect-dynamic
     * has a single payload block: not there).
     */
    if (L->virtual_size > L->block_size) {
      uint64_t other = L->present_index[0] + 1;
      if (other % (L->chunk_ratio + 1) == L->chunk_ratio)
        other++;
      copy_of (L, "bat-on-block", path, sizeof path);
      patch_le64 (path, L->bat_offset + other * 8, L->present_offset[0] | 6);
      expect_refused (path, "overlaps the payload block at",
                      "(another block)");
      copy_of (L, "bat-in-block", path, sizeof path);
      patch_le64 (path, L->bat_offset + other * 8,
                  (L->present_offset[0] + L->block_size / 2) | 6);
      if (L->block_size > MiB)
        expect_refused (path, "overlaps the payload block at",
                        "(another block)");
      else if (L->present_offset[0] + L->block_size / 2
               != L->present_offset[0])
        expect_refused (path, "overlaps", NULL);
    }
    /* A state no dynamic disk may have (5 is reserved). */
    copy_of (L, "bat-state", path, sizeof path);
    patch_le64 (path, at, L->present_offset[0] | 5);
    expect_refused (path, "BAT entry", "state 5");
  }
}

/* ---- metadata values ---- */

static void
test_metadata_values (void **state)
{
  struct layout *ims[4];
  size_t n = images (ims);
  char path[400];
  static const uint32_t bad_block_sizes[] = {
    0, 512, 3 * (uint32_t) MiB, 512 * (uint32_t) MiB, UINT32_C (1) << 31,
    UINT32_MAX,
  };
  static const uint32_t bad_sector_sizes[] = { 0, 1, 1024, 8192, UINT32_MAX };
  static const uint64_t bad_sizes[] = {
    0, 513, VHDX_MAX_VIRTUAL_SIZE + 512, UINT64_MAX - 511,
    UINT64_C (1) << 63,
  };

  for (size_t i = 0; i < n; i++) {
    const struct layout *L = ims[i];

    for (size_t k = 0; k < sizeof bad_block_sizes / sizeof *bad_block_sizes;
         k++) {
      copy_of (L, "md-block-size", path, sizeof path);
      patch_le32 (path, L->fp_at, bad_block_sizes[k]);
      expect_refused (path, "metadata", "block size");
    }
    for (size_t k = 0;
         k < sizeof bad_sector_sizes / sizeof *bad_sector_sizes; k++) {
      copy_of (L, "md-sector-size", path, sizeof path);
      patch_le32 (path, L->lss_at, bad_sector_sizes[k]);
      expect_refused (path, "metadata", "logical sector size");
    }
    for (size_t k = 0; k < sizeof bad_sizes / sizeof *bad_sizes; k++) {
      copy_of (L, "md-size", path, sizeof path);
      patch_le64 (path, L->size_at, bad_sizes[k]);
      expect_refused (path, "metadata", "size");
    }
    /* Valid values that the BAT region cannot hold: the biggest disk in
     * the smallest blocks needs 512 MiB of BAT; and 4096-byte sectors
     * with 1 MiB blocks make a chunk ratio of 2^15, valid, whose entry
     * count no longer matches the region (or does: then it opens).
     */
    copy_of (L, "md-64t", path, sizeof path);
    patch_le64 (path, L->size_at, VHDX_MAX_VIRTUAL_SIZE);
    patch_le32 (path, L->fp_at, (uint32_t) MiB);
    expect_refused (path, "BAT region", "too small");
    /* A block size that makes the chunk ratio a fraction: 256 MiB blocks
     * with 512-byte sectors give 2^23 * 512 / 2^28 = 16, a whole number;
     * with the sector size patched to 4096 too it is 128.  The fraction
     * needs a non-power-of-two, refused earlier: see bad_block_sizes.
     */
  }
}

/* ---- the log ---- */

/* A copy of the dynamic image as it is between a flush and its close,
 * with two log entries: the image with one more block, flushed (its log
 * entry at the start of the log), then another block, flushed (the next
 * entry of the same sequence, right after it).  Returns the file offsets
 * of the two entries.
 */
static void
image_with_log (char *path, size_t n, uint64_t *e1, uint64_t *e2,
                uint8_t *after1, uint8_t *after2)
{
  char live[400];
  uint8_t *buf = malloc (MiB);  /* the data of the new blocks */
  vhd_disk *d;
  uint64_t size;
  uint8_t *b;

  assert_non_null (buf);
  copy_of (&dyn, "live", live, sizeof live);
  assert_int_equal (vhd_open (live, NULL, &d), 0);
  memset (buf, 0xc1, MiB);
  assert_int_equal (vhd_pwrite (d, buf, MiB, 1 * MiB, 0), 0);
  assert_int_equal (vhd_flush (d), 0);
  memset (buf, 0xc2, MiB);
  assert_int_equal (vhd_pwrite (d, buf, MiB, 3 * MiB, 0), 0);
  assert_int_equal (vhd_flush (d), 0);
  b = slurp (live, &size);
  snprintf (path, n, "%s/log-after2-%d.vhdx", dir, counter++);
  spit (path, b, size);
  *e1 = dyn.log_offset;
  *e2 = *e1 + vhdx_get_le32 (b + *e1 + 8);
  free (b);
  assert_int_equal (vhd_pread (d, after2, 8 * MiB, 0), 0);
  memcpy (after1, after2, 8 * MiB);
  memset (after1 + 3 * MiB, 0, MiB);
  vhd_close (d);
  free (buf);
}

static void
read_all (const char *path, bool ro, uint8_t *got, uint64_t len)
{
  struct vhd_open_options o = { .readonly = ro };
  vhd_disk *d;

  if (vhd_open (path, &o, &d) < 0)
    fail_msg ("%s (%s): %s", path, ro ? "read-only" : "read-write",
              vhd_last_error ());
  assert_int_equal (vhd_pread (d, got, len, 0), 0);
  vhd_close (d);
}

static void
test_log_torn_entry (void **state)
{
  char path[400], torn[400];
  uint64_t e1, e2, size;
  uint8_t *after1 = malloc (8 * MiB), *after2 = malloc (8 * MiB);
  uint8_t *got = malloc (8 * MiB), *b;

  assert_non_null (after1);
  assert_non_null (after2);
  assert_non_null (got);
  image_with_log (path, sizeof path, &e1, &e2, after1, after2);
  b = slurp (path, &size);
  assert_memory_equal (b + e1, "loge", 4);
  assert_memory_equal (b + e2, "loge", 4);
  free (b);
  /* Intact: the newest entry is replayed; the image reads as flushed. */
  for (int ro = 1; ro >= 0; ro--) {
    uint8_t *c;
    snprintf (torn, sizeof torn, "%s/log-intact-%d.vhdx", dir, counter++);
    c = slurp (path, &size);
    spit (torn, c, size);
    free (c);
    read_all (torn, ro, got, 8 * MiB);
    assert_memory_equal (got, after2, 8 * MiB);
  }
  /* The second entry torn (a sector of its data sector): the first is
   * the newest intact one, and its BAT page (the first block only) is
   * put back: the disk reads as after the first flush.  The second block's
   * data is in the file but no longer mapped.
   */
  for (int ro = 1; ro >= 0; ro--) {
    uint8_t *c = slurp (path, &size);
    snprintf (torn, sizeof torn, "%s/log-torn-%d.vhdx", dir, counter++);
    c[e2 + 4096 + 100] ^= 0xff;
    spit (torn, c, size);
    free (c);
    read_all (torn, ro, got, 8 * MiB);
    assert_memory_equal (got, after1, 8 * MiB);
  }
  /* The header sector of the second entry torn instead. */
  for (int ro = 1; ro >= 0; ro--) {
    uint8_t *c = slurp (path, &size);
    snprintf (torn, sizeof torn, "%s/log-torn-head-%d.vhdx", dir,
              counter++);
    c[e2 + 60] ^= 0xff;
    spit (torn, c, size);
    free (c);
    read_all (torn, ro, got, 8 * MiB);
    assert_memory_equal (got, after1, 8 * MiB);
  }
  free (after1);
  free (after2);
  free (got);
}

/* The checksum of the log entry at pos of the log at log (length
 * log_len), over its EntryLength bytes, wrapping at the log's end.
 */
static void
entry_crc (uint8_t *log, uint32_t log_len, uint32_t pos)
{
  uint32_t len = vhdx_get_le32 (log + pos + 8);
  uint8_t *tmp = malloc (len);

  assert_non_null (tmp);
  for (uint32_t i = 0; i < len; i++)
    tmp[i] = log[(pos + i) % log_len];
  memset (tmp + 4, 0, 4);
  vhdx_put_le32 (log + pos + 4, vhdx_crc32c (tmp, len));
  free (tmp);
}

static void
entry_header (uint8_t *log, uint32_t pos, uint32_t len, uint32_t tail,
              uint64_t seq, const uint8_t guid[16], uint64_t file_size)
{
  uint8_t *e = log + pos;

  memset (e, 0, 4096);
  memcpy (e, "loge", 4);
  vhdx_put_le32 (e + 8, len);
  vhdx_put_le32 (e + 12, tail);
  vhdx_put_le64 (e + 16, seq);
  memcpy (e + 32, guid, 16);
  vhdx_put_le64 (e + 48, file_size);
  vhdx_put_le64 (e + 56, file_size);
}

/* A chain of three checksummed entries whose walk from the tail covers
 * more than the log (E2 wraps over E1's start, E3 sits inside E1):
 * refused, never looped over.  And a chain that is fine but whose
 * LastFileOffset is past 2^63.
 */
static void
test_log_looping_chain (void **state)
{
  static const uint8_t guid[16] = {
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
    0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0, 0x01
  };
  uint32_t log_len = (uint32_t) dyn.log_length;
  char path[400];
  uint64_t size;
  uint8_t *b, *log;
  struct vhdx_header h;
  int which;

  assert_true (log_len == MiB);         /* the positions assume 1 MiB */
  copy_of (&dyn, "log-loop", path, sizeof path);
  b = slurp (path, &size);
  log = b + dyn.log_offset;
  memset (log, 0, log_len);
  entry_header (log, 256 * KiB, 4096, 0, 3, guid, size);
  entry_crc (log, log_len, 256 * KiB);
  entry_header (log, 0, 768 * KiB, 0, 1, guid, size);
  entry_crc (log, log_len, 0);
  entry_header (log, 768 * KiB, 512 * KiB, 0, 2, guid, size);
  /* E2 wraps over the log's end: its header sector is whole. */
  entry_crc (log, log_len, 768 * KiB);
  /* The current header now says the log is in use, with this GUID. */
  assert_int_equal (vhdx_pick_header (b + VHDX_HEADER1_OFFSET,
                                      b + VHDX_HEADER2_OFFSET, path, &h,
                                      &which), 0);
  vhdx_guid_decode (guid, &h.log_guid);
  vhdx_header_encode (&h, b + (which == 1 ? VHDX_HEADER1_OFFSET
                                          : VHDX_HEADER2_OFFSET));
  spit (path, b, size);
  free (b);
  expect_refused (path, "log", "wraps onto itself");
}

/* The dirty-log sample with its one entry torn: nothing to replay, so it
 * opens as the file is (the notes' "without replay" content, the BAT as
 * qemu left it in place).
 */
static void
test_sample_log_torn (void **state)
{
  char path[400];
  uint64_t size;
  uint8_t *b;
  struct vhd_open_options o = { .readonly = true };
  vhd_disk *d;

  if (!have_samples) {
    skip_or_fail ("VHDX samples missing (VHDKIT_SAMPLES)\n");
    return;
  }
  copy_of (&dirtylog, "torn", path, sizeof path);
  b = slurp (path, &size);
  assert_memory_equal (b + dirtylog.log_offset, "loge", 4);
  free (b);
  flip_byte (path, dirtylog.log_offset + 4096 + 17);
  /* Both opens succeed; what they read is the file without the entry. */
  assert_int_equal (vhd_open (path, &o, &d), 0);
  vhd_close (d);
  assert_int_equal (vhd_open (path, NULL, &d), 0);
  vhd_close (d);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_truncation),
    cmocka_unit_test (test_one_header_corrupt),
    cmocka_unit_test (test_both_headers_corrupt),
    cmocka_unit_test (test_region_tables),
    cmocka_unit_test (test_overlapping_regions),
    cmocka_unit_test (test_bat_entries),
    cmocka_unit_test (test_metadata_values),
    cmocka_unit_test (test_log_torn_entry),
    cmocka_unit_test (test_log_looping_chain),
    cmocka_unit_test (test_sample_log_torn),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
