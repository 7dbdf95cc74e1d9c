/* Unit tests of lib/format.c: the big-endian codec, checksums, footer and
 * dynamic header round trips and every rejection, CHS geometry (against
 * the footers and images that real writers left in the sample folder),
 * timestamps, GUIDs, bitmap and BAT sizes, and the UTF-16 text codecs.
 */

#include <config.h>

#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "format.h"
#include "guid.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
#define GiB (UINT64_C (1) << 30)

/* A valid footer of a 3 GiB dynamic disk, every field set to something
 * that is not 0 so that a field lost in a round trip shows.
 */
static struct vhd_footer
sample_footer (void)
{
  struct vhd_footer f = {
    .features = VHD_FEATURES_RESERVED,
    .format_version = VHD_FORMAT_VERSION,
    .data_offset = 512,
    .timestamp = 0x12345678,
    .creator_app = { 'w', 'i', 'n', ' ' },
    .creator_version = VHD_CREATOR_VERSION,
    .creator_host_os = VHD_CREATOR_HOST_OS,
    .original_size = 2 * GiB,
    .current_size = 3 * GiB,
    .cylinders = 6241,
    .heads = 16,
    .sectors_per_track = 63,
    .disk_type = VHD_TYPE_DYNAMIC,
    .unique_id = { { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                     0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10 } },
    .saved_state = 1,
  };
  return f;
}

static struct vhd_dyn_header
sample_header (void)
{
  struct vhd_dyn_header h = {
    .data_offset = VHD_FIXED_DATA_OFFSET,
    .table_offset = 1536,
    .header_version = VHD_HEADER_VERSION,
    .max_table_entries = 1536,
    .block_size = 2 * MiB,
    .parent_unique_id = { { 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4,
                            5, 6, 7, 8, 9, 10, 11, 12 } },
    .parent_timestamp = 0x0badf00d,
    .reserved = 0,
  };
  return h;
}

/* Re-seal a footer or header buffer after a test has patched a field, so
 * that the decoder gets past the checksum to the field under test.
 */
static void
reseal (uint8_t *buf, size_t len, size_t checksum_offset)
{
  vhd_put_be32 (buf + checksum_offset,
                vhd_checksum (buf, len, checksum_offset));
}

static void
encode_footer (const struct vhd_footer *f, uint8_t buf[VHD_FOOTER_SIZE])
{
  struct vhd_footer copy = *f;
  vhd_footer_encode (&copy, buf);
}

/* Decoding must fail with -EINVAL and a message naming the file, the
 * structure and the field.
 */
static void
assert_footer_rejected (const uint8_t buf[VHD_FOOTER_SIZE],
                        const char *field)
{
  struct vhd_footer f;
  const char *msg;

  vhd_clear_error ();
  assert_int_equal (vhd_footer_decode (buf, &f, "disk.vhd", 1024), -EINVAL);
  msg = vhd_last_error ();
  print_message ("  %s\n", msg);
  assert_non_null (strstr (msg, "disk.vhd: footer at offset 1024: "));
  assert_non_null (strstr (msg, field));
}

static void
assert_header_rejected (const uint8_t buf[VHD_DYN_HEADER_SIZE],
                        const char *field)
{
  struct vhd_dyn_header h;
  const char *msg;

  vhd_clear_error ();
  assert_int_equal (vhd_dyn_header_decode (buf, &h, "disk.vhd", 512),
                    -EINVAL);
  msg = vhd_last_error ();
  print_message ("  %s\n", msg);
  assert_non_null (strstr (msg, "disk.vhd: dynamic header at offset 512: "));
  assert_non_null (strstr (msg, field));
}

/* Big-endian codec. */

static void
test_be16_round_trips_most_significant_byte_first (void **state)
{
  uint8_t b[2];

  vhd_put_be16 (b, 0xbeef);
  assert_int_equal (b[0], 0xbe);
  assert_int_equal (b[1], 0xef);
  assert_int_equal (vhd_get_be16 (b), 0xbeef);
}

static void
test_be32_round_trips_most_significant_byte_first (void **state)
{
  uint8_t b[4];
  const uint8_t want[4] = { 0xde, 0xad, 0xbe, 0xef };

  vhd_put_be32 (b, 0xdeadbeef);
  assert_memory_equal (b, want, 4);
  assert_int_equal (vhd_get_be32 (b), 0xdeadbeef);
}

static void
test_be64_round_trips_most_significant_byte_first (void **state)
{
  uint8_t b[8];
  const uint8_t want[8] = { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef };

  vhd_put_be64 (b, UINT64_C (0x0123456789abcdef));
  assert_memory_equal (b, want, 8);
  assert_true (vhd_get_be64 (b) == UINT64_C (0x0123456789abcdef));
}

/* Checksums. */

static void
test_checksum_is_complement_of_byte_sum (void **state)
{
  uint8_t buf[VHD_FOOTER_SIZE] = { 0 };

  assert_int_equal (vhd_checksum (buf, sizeof buf, 64), 0xffffffff);
  memcpy (buf, "conectix", 8);
  /* 'c'+'o'+'n'+'e'+'c'+'t'+'i'+'x' = 861 = 0x35d */
  assert_int_equal (vhd_checksum (buf, sizeof buf, 64), ~UINT32_C (0x35d));
  /* The checksum field itself does not count. */
  memset (buf + 64, 0xff, 4);
  assert_int_equal (vhd_checksum (buf, sizeof buf, 64), ~UINT32_C (0x35d));
  /* Every byte counts as an unsigned value. */
  buf[511] = 0xff;
  assert_int_equal (vhd_checksum (buf, sizeof buf, 64),
                    ~(UINT32_C (0x35d) + 0xff));
}

/* Footer. */

static void
test_footer_round_trips_every_field (void **state)
{
  struct vhd_footer in = sample_footer (), out;
  uint8_t buf[VHD_FOOTER_SIZE];

  vhd_footer_encode (&in, buf);
  assert_memory_equal (buf, "conectix", 8);
  assert_int_equal (vhd_get_be32 (buf + 64), in.checksum);
  assert_int_equal (vhd_checksum (buf, sizeof buf, 64), in.checksum);
  /* The bytes after saved_state are reserved and zero. */
  for (size_t i = 85; i < sizeof buf; i++)
    assert_int_equal (buf[i], 0);

  assert_int_equal (vhd_footer_decode (buf, &out, "disk.vhd", 0), 0);
  assert_memory_equal (out.cookie, "conectix", 8);
  assert_int_equal (out.features, in.features);
  assert_int_equal (out.format_version, in.format_version);
  assert_true (out.data_offset == in.data_offset);
  assert_int_equal (out.timestamp, in.timestamp);
  assert_memory_equal (out.creator_app, in.creator_app, 4);
  assert_int_equal (out.creator_version, in.creator_version);
  assert_int_equal (out.creator_host_os, in.creator_host_os);
  assert_true (out.original_size == in.original_size);
  assert_true (out.current_size == in.current_size);
  assert_int_equal (out.cylinders, in.cylinders);
  assert_int_equal (out.heads, in.heads);
  assert_int_equal (out.sectors_per_track, in.sectors_per_track);
  assert_int_equal (out.disk_type, in.disk_type);
  assert_int_equal (out.checksum, in.checksum);
  assert_memory_equal (out.unique_id.bytes, in.unique_id.bytes, 16);
  assert_int_equal (out.saved_state, in.saved_state);
}

static void
test_footer_fields_sit_at_spec_offsets (void **state)
{
  struct vhd_footer f = sample_footer ();
  uint8_t buf[VHD_FOOTER_SIZE];

  vhd_footer_encode (&f, buf);
  assert_int_equal (vhd_get_be32 (buf + 8), f.features);
  assert_int_equal (vhd_get_be32 (buf + 12), f.format_version);
  assert_true (vhd_get_be64 (buf + 16) == f.data_offset);
  assert_int_equal (vhd_get_be32 (buf + 24), f.timestamp);
  assert_memory_equal (buf + 28, "win ", 4);
  assert_int_equal (vhd_get_be32 (buf + 32), f.creator_version);
  assert_int_equal (vhd_get_be32 (buf + 36), f.creator_host_os);
  assert_true (vhd_get_be64 (buf + 40) == f.original_size);
  assert_true (vhd_get_be64 (buf + 48) == f.current_size);
  assert_int_equal (vhd_get_be16 (buf + 56), 6241);
  assert_int_equal (buf[58], 16);
  assert_int_equal (buf[59], 63);
  assert_int_equal (vhd_get_be32 (buf + 60), VHD_TYPE_DYNAMIC);
  assert_memory_equal (buf + 68, f.unique_id.bytes, 16);
  assert_int_equal (buf[84], 1);
}

static void
test_footer_bad_cookie_rejected (void **state)
{
  struct vhd_footer f = sample_footer ();
  uint8_t buf[VHD_FOOTER_SIZE];

  encode_footer (&f, buf);
  memcpy (buf, "conectiy", 8);
  reseal (buf, sizeof buf, 64);
  assert_footer_rejected (buf, "cookie \"conectiy\"");
}

static void
test_footer_bad_checksum_rejected (void **state)
{
  struct vhd_footer f = sample_footer ();
  uint8_t buf[VHD_FOOTER_SIZE];
  uint32_t good;

  encode_footer (&f, buf);
  good = vhd_get_be32 (buf + 64);
  /* One flipped bit in a reserved byte: everything else is plausible. */
  buf[300] ^= 1;
  assert_footer_rejected (buf, "checksum");
  {
    char want[80];
    snprintf (want, sizeof want, "checksum 0x%08" PRIx32
              " does not match the computed 0x%08" PRIx32, good, good - 1);
    assert_non_null (strstr (vhd_last_error (), want));
  }
}

static void
test_footer_major_version_2_rejected (void **state)
{
  struct vhd_footer f = sample_footer ();
  uint8_t buf[VHD_FOOTER_SIZE];

  f.format_version = 0x00020000;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "format_version 0x00020000");
}

static void
test_footer_any_minor_version_and_features_accepted (void **state)
{
  struct vhd_footer f = sample_footer (), out;
  uint8_t buf[VHD_FOOTER_SIZE];

  f.format_version = 0x00010007;
  f.features = 0xfffffff3;
  encode_footer (&f, buf);
  assert_int_equal (vhd_footer_decode (buf, &out, "disk.vhd", 0), 0);
  assert_int_equal (out.features, 0xfffffff3);
}

static void
test_footer_bad_disk_type_rejected (void **state)
{
  struct vhd_footer f = sample_footer ();
  uint8_t buf[VHD_FOOTER_SIZE];

  f.disk_type = 5;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "disk_type 5");
  f.disk_type = 1;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "disk_type 1");
}

static void
test_footer_size_not_multiple_of_512_rejected (void **state)
{
  struct vhd_footer f = sample_footer ();
  uint8_t buf[VHD_FOOTER_SIZE];

  f.current_size = 3 * GiB + 100;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "current_size 3221225572");
}

static void
test_footer_size_over_2040_gib_rejected (void **state)
{
  struct vhd_footer f = sample_footer (), out;
  uint8_t buf[VHD_FOOTER_SIZE];

  f.current_size = VHD_MAX_DISK_SIZE;
  encode_footer (&f, buf);
  assert_int_equal (vhd_footer_decode (buf, &out, "disk.vhd", 0), 0);

  f.current_size = VHD_MAX_DISK_SIZE + 512;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "current_size 2190433321472");
}

static void
test_footer_size_zero_rejected (void **state)
{
  struct vhd_footer f = sample_footer ();
  uint8_t buf[VHD_FOOTER_SIZE];

  f.current_size = 0;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "current_size 0");
}

static void
test_footer_fixed_with_wrong_data_offset_rejected (void **state)
{
  struct vhd_footer f = sample_footer ();
  uint8_t buf[VHD_FOOTER_SIZE];

  f.disk_type = VHD_TYPE_FIXED;
  f.data_offset = 512;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "data_offset 0x200");
}

static void
test_footer_fixed_data_offset_all_ones_or_0_accepted (void **state)
{
  struct vhd_footer f = sample_footer (), out;
  uint8_t buf[VHD_FOOTER_SIZE];

  f.disk_type = VHD_TYPE_FIXED;
  f.data_offset = VHD_FIXED_DATA_OFFSET;
  encode_footer (&f, buf);
  assert_int_equal (vhd_footer_decode (buf, &out, "disk.vhd", 0), 0);
  f.data_offset = 0;
  encode_footer (&f, buf);
  assert_int_equal (vhd_footer_decode (buf, &out, "disk.vhd", 0), 0);
}

static void
test_footer_dynamic_without_header_offset_rejected (void **state)
{
  struct vhd_footer f = sample_footer ();
  uint8_t buf[VHD_FOOTER_SIZE];

  f.data_offset = VHD_FIXED_DATA_OFFSET;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "data_offset 0xffffffffffffffff");
  f.data_offset = 0;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "data_offset 0");
  f.disk_type = VHD_TYPE_DIFFERENCING;
  f.data_offset = 1000;
  encode_footer (&f, buf);
  assert_footer_rejected (buf, "data_offset 1000");
}

/* Dynamic header. */

static void
test_dyn_header_round_trips_locators_and_name (void **state)
{
  struct vhd_dyn_header in = sample_header (), out;
  uint8_t buf[VHD_DYN_HEADER_SIZE];
  char name[256];
  int n;

  n = vhd_utf8_to_utf16 ("C:\\Disks\\père.vhd", true,
                         in.parent_unicode_name,
                         sizeof in.parent_unicode_name);
  assert_int_equal (n, 17 * 2);
  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++) {
    in.locators[i].platform_code = i < 2 ? VHD_PLATFORM_W2RU + i : 0;
    in.locators[i].platform_data_space = 1 + i;
    in.locators[i].platform_data_length = 100 + i;
    in.locators[i].reserved = i;
    in.locators[i].platform_data_offset = UINT64_C (0x100000000) + 512 * i;
  }

  vhd_dyn_header_encode (&in, buf);
  assert_memory_equal (buf, "cxsparse", 8);
  assert_int_equal (vhd_get_be32 (buf + 36), in.checksum);
  /* Locator 3 at 576 + 3 * 24, its offset 16 bytes further in. */
  assert_true (vhd_get_be64 (buf + 576 + 3 * 24 + 16) ==
               UINT64_C (0x100000000) + 512 * 3);
  for (size_t i = 768; i < sizeof buf; i++)
    assert_int_equal (buf[i], 0);

  assert_int_equal (vhd_dyn_header_decode (buf, &out, "disk.vhd", 512), 0);
  assert_memory_equal (out.cookie, "cxsparse", 8);
  assert_true (out.data_offset == in.data_offset);
  assert_true (out.table_offset == in.table_offset);
  assert_int_equal (out.header_version, in.header_version);
  assert_int_equal (out.max_table_entries, in.max_table_entries);
  assert_int_equal (out.block_size, in.block_size);
  assert_int_equal (out.checksum, in.checksum);
  assert_memory_equal (out.parent_unique_id.bytes,
                       in.parent_unique_id.bytes, 16);
  assert_int_equal (out.parent_timestamp, in.parent_timestamp);
  assert_int_equal (out.reserved, in.reserved);
  assert_memory_equal (out.parent_unicode_name, in.parent_unicode_name,
                       sizeof in.parent_unicode_name);
  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++) {
    const struct vhd_parent_locator *a = &in.locators[i];
    const struct vhd_parent_locator *b = &out.locators[i];
    assert_int_equal (b->platform_code, a->platform_code);
    assert_int_equal (b->platform_data_space, a->platform_data_space);
    assert_int_equal (b->platform_data_length, a->platform_data_length);
    assert_int_equal (b->reserved, a->reserved);
    assert_true (b->platform_data_offset == a->platform_data_offset);
  }
  assert_int_equal (vhd_utf16_to_utf8 (out.parent_unicode_name,
                                       sizeof out.parent_unicode_name, true,
                                       name, sizeof name), 18);
  assert_string_equal (name, "C:\\Disks\\père.vhd");
}

static void
test_dyn_header_other_data_offset_ignored (void **state)
{
  struct vhd_dyn_header in = sample_header (), out;
  uint8_t buf[VHD_DYN_HEADER_SIZE];

  in.data_offset = 0;
  vhd_dyn_header_encode (&in, buf);
  assert_int_equal (vhd_dyn_header_decode (buf, &out, "disk.vhd", 512), 0);
}

static void
assert_block_size_rejected (uint32_t block_size)
{
  struct vhd_dyn_header h = sample_header ();
  uint8_t buf[VHD_DYN_HEADER_SIZE];
  char want[64];

  h.block_size = block_size;
  vhd_dyn_header_encode (&h, buf);
  snprintf (want, sizeof want, "block_size %" PRIu32 " ", block_size);
  assert_header_rejected (buf, want);
}

static void
test_dyn_header_block_size_0_rejected (void **state)
{
  assert_block_size_rejected (0);
}

static void
test_dyn_header_block_size_not_power_of_two_rejected (void **state)
{
  assert_block_size_rejected (3 * MiB);
  assert_block_size_rejected (2 * MiB + 512);
}

static void
test_dyn_header_block_size_1_gib_rejected (void **state)
{
  assert_block_size_rejected (1 * GiB);
}

static void
test_dyn_header_block_size_under_4_kib_rejected (void **state)
{
  assert_block_size_rejected (2048);
  assert_block_size_rejected (512);
}

static void
test_dyn_header_block_size_limits_accepted (void **state)
{
  struct vhd_dyn_header h = sample_header (), out;
  uint8_t buf[VHD_DYN_HEADER_SIZE];

  h.block_size = VHD_MIN_BLOCK_SIZE;
  vhd_dyn_header_encode (&h, buf);
  assert_int_equal (vhd_dyn_header_decode (buf, &out, "disk.vhd", 512), 0);
  h.block_size = VHD_MAX_BLOCK_SIZE;
  vhd_dyn_header_encode (&h, buf);
  assert_int_equal (vhd_dyn_header_decode (buf, &out, "disk.vhd", 512), 0);
  h.block_size = 512 * KiB;
  vhd_dyn_header_encode (&h, buf);
  assert_int_equal (vhd_dyn_header_decode (buf, &out, "disk.vhd", 512), 0);
}

static void
test_dyn_header_bad_cookie_rejected (void **state)
{
  struct vhd_dyn_header h = sample_header ();
  uint8_t buf[VHD_DYN_HEADER_SIZE];

  vhd_dyn_header_encode (&h, buf);
  /* A footer where a header should be, as a bad data_offset would give. */
  memcpy (buf, "conectix", 8);
  reseal (buf, sizeof buf, 36);
  assert_header_rejected (buf, "cookie \"conectix\" is not \"cxsparse\"");
  /* Control bytes are escaped, not copied into the message. */
  memcpy (buf, "cx\nspars", 8);
  reseal (buf, sizeof buf, 36);
  assert_header_rejected (buf, "cookie \"cx\\x0aspars\"");
}

static void
test_dyn_header_bad_checksum_rejected (void **state)
{
  struct vhd_dyn_header h = sample_header ();
  uint8_t buf[VHD_DYN_HEADER_SIZE];

  vhd_dyn_header_encode (&h, buf);
  buf[1000] = 1;
  assert_header_rejected (buf, "checksum");
}

static void
test_dyn_header_max_table_entries_0_rejected (void **state)
{
  struct vhd_dyn_header h = sample_header ();
  uint8_t buf[VHD_DYN_HEADER_SIZE];

  h.max_table_entries = 0;
  vhd_dyn_header_encode (&h, buf);
  assert_header_rejected (buf, "max_table_entries");
}

static void
test_dyn_header_unaligned_table_offset_rejected (void **state)
{
  struct vhd_dyn_header h = sample_header ();
  uint8_t buf[VHD_DYN_HEADER_SIZE];

  h.table_offset = 1537;
  vhd_dyn_header_encode (&h, buf);
  assert_header_rejected (buf, "table_offset 1537");
}

static void
test_dyn_header_major_version_2_rejected (void **state)
{
  struct vhd_dyn_header h = sample_header ();
  uint8_t buf[VHD_DYN_HEADER_SIZE];

  h.header_version = 0x00020000;
  vhd_dyn_header_encode (&h, buf);
  assert_header_rejected (buf, "header_version 0x00020000");
}

/* CHS geometry. */

static void
assert_chs (uint64_t size, unsigned c, unsigned h, unsigned s)
{
  uint16_t cyl;
  uint8_t heads, spt;

  vhd_chs_geometry (size, &cyl, &heads, &spt);
  if (cyl != c || heads != h || spt != s)
    fail_msg ("size %" PRIu64 ": CHS %u/%u/%u, expected %u/%u/%u",
              size, cyl, heads, spt, c, h, s);
}

static void
test_chs_matches_spec_algorithm_for_known_sizes (void **state)
{
  assert_chs (3 * GiB, 6241, 16, 63);
  assert_chs (100 * MiB, 1003, 12, 17);
  assert_chs (UINT64_C (1000000000000), 65535, 16, 255);
  assert_chs (1022999998464, 65535, 16, 255);
  assert_chs (VHD_MAX_DISK_SIZE, 65535, 16, 255);
  assert_chs (UINT64_MAX, 65535, 16, 255);
  /* Sizes of the sample images, one per branch of the algorithm. */
  assert_chs (3 * MiB, 90, 4, 17);
  assert_chs (40 * MiB, 963, 5, 17);
  assert_chs (200 * MiB, 825, 16, 31);
  assert_chs (1 * GiB, 2080, 16, 63);
  assert_chs (32 * GiB, 16448, 16, 255);
  assert_chs (UINT64_C (136365211648), 65278, 16, 255);
  assert_chs (0, 0, 4, 17);
}

/* Samples written by real tools. */

static const char *
samples_dir (void)
{
  static char path[4096];
  const char *s = getenv ("VHDKIT_SAMPLES");
  const char *src = getenv ("VHDKIT_SRCDIR");
  struct stat st;

  if (s != NULL && *s != '\0')
    snprintf (path, sizeof path, "%s", s);
  else
    snprintf (path, sizeof path, "%s/../../shared/samples",
              src != NULL ? src : ".");
  /* A missing folder must fail the test, not skip it: the geometry rule
   * is only proven against these files.
   */
  if (stat (path, &st) == -1 || !S_ISDIR (st.st_mode))
    fail_msg ("sample folder not found: %s (set VHDKIT_SAMPLES)", path);
  return path;
}

static bool
creator_is_windows (const struct vhd_footer *f)
{
  return memcmp (f->creator_app, "win ", 4) == 0 ||
    memcmp (f->creator_app, "wa\0\0", 4) == 0;
}

/* The geometry that Windows (and Azure) stored must be what the spec's
 * algorithm computes from current_size, since we write the same.
 */
static void
assert_windows_geometry (const struct vhd_footer *f, const char *name)
{
  uint16_t c;
  uint8_t h, s;

  vhd_chs_geometry (f->current_size, &c, &h, &s);
  print_message ("  %s: %" PRIu64 " bytes, stored %u/%u/%u, computed"
                 " %u/%u/%u\n", name, f->current_size, f->cylinders,
                 f->heads, f->sectors_per_track, c, h, s);
  if (c != f->cylinders || h != f->heads || s != f->sectors_per_track)
    fail_msg ("%s: stored CHS %u/%u/%u is not the computed %u/%u/%u",
              name, f->cylinders, f->heads, f->sectors_per_track, c, h, s);
}

static void
read_footer_file (const char *path, uint8_t buf[VHD_FOOTER_SIZE])
{
  FILE *fp = fopen (path, "rb");

  if (fp == NULL)
    fail_msg ("%s: %s", path, strerror (errno));
  if (fread (buf, 1, VHD_FOOTER_SIZE, fp) != VHD_FOOTER_SIZE)
    fail_msg ("%s: shorter than 512 bytes", path);
  fclose (fp);
}

static void
test_sample_footers_decode_with_windows_chs (void **state)
{
  char pattern[4200];
  glob_t g;
  unsigned decoded = 0, windows = 0, rejected = 0;

  snprintf (pattern, sizeof pattern, "%s/footers/*", samples_dir ());
  if (glob (pattern, 0, NULL, &g) != 0)
    fail_msg ("no footers found: %s", pattern);

  for (size_t i = 0; i < g.gl_pathc; i++) {
    const char *path = g.gl_pathv[i];
    const char *name = strrchr (path, '/') + 1;
    uint8_t buf[VHD_FOOTER_SIZE];
    struct vhd_footer f;
    int r;

    if (strstr (name, ".bin") == NULL &&
        strcmp (name, "libvhdi-file_footer.1") != 0)
      continue;
    read_footer_file (path, buf);
    r = vhd_footer_decode (buf, &f, name, 0);
    if (strcmp (name, "VhdAttach-footer6.bin") == 0) {
      assert_int_equal (r, -EINVAL);
      assert_non_null (strstr (vhd_last_error (), "checksum"));
      print_message ("  %s: rejected: %s\n", name, vhd_last_error ());
      rejected++;
      continue;
    }
    if (r < 0)
      fail_msg ("%s: %s", name, vhd_last_error ());
    decoded++;
    if (creator_is_windows (&f)) {
      assert_windows_geometry (&f, name);
      windows++;
    }
  }
  globfree (&g);

  /* 13 footers: 12 good, 8 of them from Windows or Azure. */
  assert_int_equal (decoded, 12);
  assert_int_equal (rejected, 1);
  assert_int_equal (windows, 8);
}

/* What the test needs of an image: the first bytes (the footer copy and
 * the dynamic header) and the last 512 (the footer).  Streaming through
 * xz keeps the 264 MB Disk2vhd image out of memory.
 */
#define HEAD_BYTES (64 * 1024)

struct image_ends {
  uint8_t head[HEAD_BYTES];
  uint8_t tail[VHD_FOOTER_SIZE];
  uint64_t size;
};

static void
read_image_ends (const char *xz_path, struct image_ends *e)
{
  static uint8_t chunk[1 << 20];
  char cmd[4300];
  FILE *fp;
  size_t n;

  memset (e, 0, sizeof *e);
  snprintf (cmd, sizeof cmd, "xz -dc '%s'", xz_path);
  fp = popen (cmd, "r");
  if (fp == NULL)
    fail_msg ("%s: %s", cmd, strerror (errno));
  while ((n = fread (chunk, 1, sizeof chunk, fp)) > 0) {
    if (e->size < HEAD_BYTES) {
      size_t k = HEAD_BYTES - e->size < n ? HEAD_BYTES - e->size : n;
      memcpy (e->head + e->size, chunk, k);
    }
    if (n >= VHD_FOOTER_SIZE)
      memcpy (e->tail, chunk + n - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE);
    else {
      memmove (e->tail, e->tail + n, VHD_FOOTER_SIZE - n);
      memcpy (e->tail + VHD_FOOTER_SIZE - n, chunk, n);
    }
    e->size += n;
  }
  if (pclose (fp) != 0)
    fail_msg ("%s failed (is xz installed?)", cmd);
  if (e->size < 2 * VHD_FOOTER_SIZE)
    fail_msg ("%s: only %" PRIu64 " bytes", xz_path, e->size);
}

struct manifest_row {
  char file[256];
  unsigned type;
  uint64_t current_size;
  char expect[64];
};

static bool
parse_manifest_row (char *line, struct manifest_row *row)
{
  char *field[6];
  char *save = NULL;
  size_t n = 0;

  if (line[0] == '#' || line[0] == '\n')
    return false;
  for (char *t = strtok_r (line, "\t\n", &save); t != NULL && n < 6;
       t = strtok_r (NULL, "\t\n", &save))
    field[n++] = t;
  if (n < 6)
    fail_msg ("MANIFEST.tsv: a row with %zu columns", n);
  snprintf (row->file, sizeof row->file, "%s", field[0]);
  row->type = (unsigned) strtoul (field[1], NULL, 10);
  row->current_size = strtoull (field[3], NULL, 10);
  snprintf (row->expect, sizeof row->expect, "%s", field[5]);
  return true;
}

/* An image whose footer(s) must decode: the trailing footer agrees with
 * the manifest, and a dynamic or differencing image has a valid copy at
 * offset 0 and a valid dynamic header.
 */
static void
check_good_image (const struct manifest_row *row, const struct image_ends *e)
{
  struct vhd_footer f, copy;
  struct vhd_dyn_header h;

  if (vhd_footer_decode (e->tail, &f, row->file,
                         e->size - VHD_FOOTER_SIZE) < 0)
    fail_msg ("%s", vhd_last_error ());
  assert_int_equal (f.disk_type, row->type);
  assert_true (f.current_size == row->current_size);
  if (creator_is_windows (&f))
    assert_windows_geometry (&f, row->file);
  if (f.disk_type == VHD_TYPE_FIXED)
    return;

  if (vhd_footer_decode (e->head, &copy, row->file, 0) < 0)
    fail_msg ("%s", vhd_last_error ());
  assert_memory_equal (e->head, e->tail, VHD_FOOTER_SIZE);
  if (f.data_offset + VHD_DYN_HEADER_SIZE > HEAD_BYTES ||
      f.data_offset + VHD_DYN_HEADER_SIZE > e->size)
    fail_msg ("%s: header at %" PRIu64 " is past the bytes kept",
              row->file, f.data_offset);
  if (vhd_dyn_header_decode (e->head + f.data_offset, &h, row->file,
                             f.data_offset) < 0)
    fail_msg ("%s", vhd_last_error ());
}

static void
check_bad_checksum_image (const struct manifest_row *row,
                          const struct image_ends *e)
{
  struct vhd_footer f;

  assert_int_equal (vhd_footer_decode (e->tail, &f, row->file,
                                       e->size - VHD_FOOTER_SIZE), -EINVAL);
  assert_non_null (strstr (vhd_last_error (), "checksum"));
  print_message ("  %s\n", vhd_last_error ());
  assert_int_equal (vhd_footer_decode (e->head, &f, row->file, 0), -EINVAL);
  assert_non_null (strstr (vhd_last_error (), "checksum"));
  print_message ("  %s\n", vhd_last_error ());
}

static void
test_sample_images_footers_decode_or_fail_on_checksum (void **state)
{
  static struct image_ends ends;
  const char *dir = samples_dir ();
  char path[4200];
  char line[4096];
  FILE *fp;
  unsigned good = 0, bad = 0;

  snprintf (path, sizeof path, "%s/MANIFEST.tsv", dir);
  fp = fopen (path, "r");
  if (fp == NULL)
    fail_msg ("%s: %s", path, strerror (errno));
  while (fgets (line, sizeof line, fp) != NULL) {
    struct manifest_row row;

    if (!parse_manifest_row (line, &row))
      continue;
    snprintf (path, sizeof path, "%s/images/%s", dir, row.file);
    read_image_ends (path, &ends);
    if (strcmp (row.expect, "reject:checksum") == 0) {
      check_bad_checksum_image (&row, &ends);
      bad++;
    }
    else {
      /* "open" (21 images), and also "reject:parent-missing" (one),
       * whose own structures are sound.
       */
      check_good_image (&row, &ends);
      good++;
    }
  }
  fclose (fp);
  print_message ("  %u images decoded, %u rejected for their checksum\n",
                 good, bad);
  assert_int_equal (good, 22);
  assert_int_equal (bad, 2);
}

/* Timestamps. */

static void
test_timestamp_epoch_is_2000_01_01_utc (void **state)
{
  assert_int_equal (vhd_timestamp_from_unix (946684800), 0);
  assert_true (vhd_timestamp_to_unix (0) == 946684800);
}

static void
test_timestamp_known_date_round_trips (void **state)
{
  /* 2024-01-01 00:00:00 UTC is unix 1704067200. */
  struct tm tm = { .tm_year = 124, .tm_mon = 0, .tm_mday = 1 };
  time_t t = timegm (&tm);

  assert_true (t == 1704067200);
  assert_int_equal (vhd_timestamp_from_unix (t), 1704067200 - 946684800);
  assert_true (vhd_timestamp_to_unix (757382400) == t);
  /* The Windows 10 fixed sample's footer: 638382933. */
  assert_true (vhd_timestamp_to_unix (638382933) == 1585067733);
}

static void
test_timestamp_before_2000_clamps_to_0 (void **state)
{
  assert_int_equal (vhd_timestamp_from_unix (0), 0);
}

static void
test_timestamp_now_is_current (void **state)
{
  uint32_t now = vhd_timestamp_now ();
  int64_t expected = (int64_t) time (NULL) - VHD_EPOCH_OFFSET;

  assert_true ((int64_t) now >= expected - 2 && (int64_t) now <= expected);
}

/* GUIDs. */

static void
test_guid_generate_gives_distinct_version_4_guids (void **state)
{
  struct vhd_guid a, b;

  assert_int_equal (vhd_guid_generate (&a), 0);
  assert_int_equal (vhd_guid_generate (&b), 0);
  assert_memory_not_equal (a.bytes, b.bytes, 16);
  assert_false (vhd_guid_is_zero (&a));
  assert_int_equal (a.bytes[6] >> 4, 4);
  assert_int_equal (b.bytes[6] >> 4, 4);
  assert_int_equal (a.bytes[8] & 0xc0, 0x80);
}

static void
test_guid_is_zero_only_for_all_zero_bytes (void **state)
{
  struct vhd_guid g = { { 0 } };

  assert_true (vhd_guid_is_zero (&g));
  g.bytes[15] = 1;
  assert_false (vhd_guid_is_zero (&g));
}

static void
test_guid_to_string_is_lower_case_8_4_4_4_12 (void **state)
{
  struct vhd_guid g = VHD_VENDOR_MICROSOFT;
  char s[37];

  memset (s, 'x', sizeof s);
  vhd_guid_to_string (&g, s);
  assert_string_equal (s, "ec984aec-a0f9-47e9-901f-71415a66345b");
}

/* Bitmaps and the BAT. */

static void
test_bitmap_size_rounds_to_whole_sectors (void **state)
{
  assert_int_equal (vhd_bitmap_size (2 * MiB), 512);
  assert_int_equal (vhd_bitmap_size (512 * KiB), 512);
  assert_int_equal (vhd_bitmap_size (4096), 512);
  assert_int_equal (vhd_bitmap_size (4 * MiB), 1024);
  assert_int_equal (vhd_bitmap_size (256 * MiB), 65536);
}

static void
test_bat_size_rounds_to_whole_sectors (void **state)
{
  assert_true (vhd_bat_size (1) == 512);
  assert_true (vhd_bat_size (128) == 512);
  assert_true (vhd_bat_size (129) == 1024);
  assert_true (vhd_bat_size (UINT32_MAX) == UINT64_C (4) * UINT32_MAX + 4);
}

static void
test_bitmap_bits_are_most_significant_first (void **state)
{
  uint8_t bm[2] = { 0, 0 };

  vhd_bitmap_set (bm, 0);
  assert_int_equal (bm[0], 0x80);
  vhd_bitmap_set (bm, 7);
  assert_int_equal (bm[0], 0x81);
  vhd_bitmap_set (bm, 9);
  assert_int_equal (bm[1], 0x40);
  assert_true (vhd_bitmap_test (bm, 0));
  assert_false (vhd_bitmap_test (bm, 1));
  assert_true (vhd_bitmap_test (bm, 9));
  vhd_bitmap_clear (bm, 0);
  assert_int_equal (bm[0], 0x01);
  assert_false (vhd_bitmap_test (bm, 0));
  assert_true (vhd_bitmap_test (bm, 7));
}

/* Text. */

/* "Ünïcødé €" then U+1F600 (a surrogate pair in UTF-16). */
static const char text_utf8[] =
  "\xc3\x9cn\xc3\xaf" "c\xc3\xb8" "d\xc3\xa9 \xe2\x82\xac\xf0\x9f\x98\x80";

static void
test_utf16_round_trips_non_ascii_and_surrogate_pair (void **state)
{
  for (int be = 0; be <= 1; be++) {
    uint8_t u16[64];
    char back[64];
    int n;

    n = vhd_utf8_to_utf16 (text_utf8, be, u16, sizeof u16);
    /* 9 BMP characters and one pair. */
    assert_int_equal (n, (9 + 2) * 2);
    /* U+1F600 is D83D DE00. */
    assert_int_equal (be ? vhd_get_be16 (u16 + 18)
                         : (u16[19] << 8 | u16[18]), 0xd83d);
    assert_int_equal (be ? vhd_get_be16 (u16 + 20)
                         : (u16[21] << 8 | u16[20]), 0xde00);
    assert_int_equal (u16[22], 0);
    assert_int_equal (u16[23], 0);
    n = vhd_utf16_to_utf8 (u16, (size_t) n, be, back, sizeof back);
    assert_int_equal (n, (int) strlen (text_utf8));
    assert_string_equal (back, text_utf8);
  }
}

static void
test_utf16_stops_at_nul_code_unit (void **state)
{
  const uint8_t in[] = { 0, 'a', 0, 'b', 0, 0, 0, 'c' };
  char out[16];

  assert_int_equal (vhd_utf16_to_utf8 (in, sizeof in, true,
                                       out, sizeof out), 2);
  assert_string_equal (out, "ab");
}

static void
test_utf16_lone_surrogates_rejected (void **state)
{
  const uint8_t lone_high_at_end[] = { 0, 'a', 0xd8, 0x3d };
  const uint8_t high_then_letter[] = { 0xd8, 0x3d, 0, 'a' };
  const uint8_t lone_low[] = { 0, 'a', 0xde, 0x00, 0, 'b' };
  const uint8_t high_then_nul[] = { 0xd8, 0x3d, 0, 0 };
  char out[16];

  assert_int_equal (vhd_utf16_to_utf8 (lone_high_at_end,
                                       sizeof lone_high_at_end, true,
                                       out, sizeof out), -EINVAL);
  assert_string_equal (out, "");
  assert_non_null (strstr (vhd_last_error (), "surrogate"));
  assert_int_equal (vhd_utf16_to_utf8 (high_then_letter,
                                       sizeof high_then_letter, true,
                                       out, sizeof out), -EINVAL);
  assert_int_equal (vhd_utf16_to_utf8 (lone_low, sizeof lone_low, true,
                                       out, sizeof out), -EINVAL);
  assert_int_equal (vhd_utf16_to_utf8 (high_then_nul, sizeof high_then_nul,
                                       true, out, sizeof out), -EINVAL);
}

static void
test_utf16_to_utf8_truncates_on_character_boundary (void **state)
{
  uint8_t u16[64];
  char out[16];
  int n = vhd_utf8_to_utf16 (text_utf8, true, u16, sizeof u16);

  assert_true (n > 0);
  /* "Ün" is 3 bytes, "ï" 2 more: with room for 4 bytes and the NUL,
   * "ï" must not be split.
   */
  memset (out, 'X', sizeof out);
  assert_int_equal (vhd_utf16_to_utf8 (u16, (size_t) n, true, out, 5), 3);
  assert_string_equal (out, "\xc3\x9cn");
  assert_int_equal (out[5], 'X');
  /* Room only for the NUL, and no room at all. */
  assert_int_equal (vhd_utf16_to_utf8 (u16, (size_t) n, true, out, 1), 0);
  assert_string_equal (out, "");
  out[0] = 'X';
  assert_int_equal (vhd_utf16_to_utf8 (u16, (size_t) n, true, out, 0), 0);
  assert_int_equal (out[0], 'X');
  /* Nothing after a character that did not fit is written, even if it
   * would fit: the 4-byte U+1F600 does not fit in 5, "a" would.
   */
  {
    const uint8_t pair_then_a[] = { 0xd8, 0x3d, 0xde, 0x00, 0, 'a' };
    assert_int_equal (vhd_utf16_to_utf8 (pair_then_a, sizeof pair_then_a,
                                         true, out, 4), 0);
    assert_string_equal (out, "");
  }
}

static void
test_utf8_to_utf16_too_long_fails_without_overflow (void **state)
{
  uint8_t out[8];

  memset (out, 0xee, sizeof out);
  /* "abcd" needs 8 bytes and the NUL 2 more; 6 bytes hold "ab" + NUL. */
  assert_int_equal (vhd_utf8_to_utf16 ("abcd", true, out, 6), -ENAMETOOLONG);
  assert_int_equal (vhd_get_be16 (out), 'a');
  assert_int_equal (vhd_get_be16 (out + 2), 'b');
  assert_int_equal (vhd_get_be16 (out + 4), 0);
  assert_int_equal (out[6], 0xee);
  /* A surrogate pair is never split. */
  memset (out, 0xee, sizeof out);
  assert_int_equal (vhd_utf8_to_utf16 ("a\xf0\x9f\x98\x80", false, out, 6),
                    -ENAMETOOLONG);
  assert_int_equal (out[0], 'a');
  assert_int_equal (out[2], 0);
  assert_int_equal (out[3], 0);
  assert_int_equal (out[4], 0xee);
  /* Exactly enough room. */
  assert_int_equal (vhd_utf8_to_utf16 ("abc", true, out, 8), 6);
  assert_int_equal (vhd_get_be16 (out + 6), 0);
}

static void
test_utf8_invalid_sequences_rejected (void **state)
{
  static const char *const bad[] = {
    "a\xff",                    /* never valid */
    "\xc0\x80",                 /* overlong NUL */
    "\xe0\x80\xaf",             /* overlong '/' */
    "\xed\xa0\x80",             /* an encoded surrogate */
    "\xf4\x90\x80\x80",         /* past U+10FFFF */
    "\xe2\x82",                 /* truncated at the end */
    "\x80",                     /* continuation byte first */
  };
  uint8_t out[32];

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    memset (out, 0xee, sizeof out);
    if (vhd_utf8_to_utf16 (bad[i], true, out, sizeof out) != -EINVAL)
      fail_msg ("bad UTF-8 #%zu accepted", i);
    assert_int_equal (vhd_get_be16 (out), 0);
    assert_non_null (strstr (vhd_last_error (), "UTF-8"));
  }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_be16_round_trips_most_significant_byte_first),
    cmocka_unit_test (test_be32_round_trips_most_significant_byte_first),
    cmocka_unit_test (test_be64_round_trips_most_significant_byte_first),
    cmocka_unit_test (test_checksum_is_complement_of_byte_sum),
    cmocka_unit_test (test_footer_round_trips_every_field),
    cmocka_unit_test (test_footer_fields_sit_at_spec_offsets),
    cmocka_unit_test (test_footer_bad_cookie_rejected),
    cmocka_unit_test (test_footer_bad_checksum_rejected),
    cmocka_unit_test (test_footer_major_version_2_rejected),
    cmocka_unit_test (test_footer_any_minor_version_and_features_accepted),
    cmocka_unit_test (test_footer_bad_disk_type_rejected),
    cmocka_unit_test (test_footer_size_not_multiple_of_512_rejected),
    cmocka_unit_test (test_footer_size_over_2040_gib_rejected),
    cmocka_unit_test (test_footer_size_zero_rejected),
    cmocka_unit_test (test_footer_fixed_with_wrong_data_offset_rejected),
    cmocka_unit_test (test_footer_fixed_data_offset_all_ones_or_0_accepted),
    cmocka_unit_test (test_footer_dynamic_without_header_offset_rejected),
    cmocka_unit_test (test_dyn_header_round_trips_locators_and_name),
    cmocka_unit_test (test_dyn_header_other_data_offset_ignored),
    cmocka_unit_test (test_dyn_header_block_size_0_rejected),
    cmocka_unit_test (test_dyn_header_block_size_not_power_of_two_rejected),
    cmocka_unit_test (test_dyn_header_block_size_1_gib_rejected),
    cmocka_unit_test (test_dyn_header_block_size_under_4_kib_rejected),
    cmocka_unit_test (test_dyn_header_block_size_limits_accepted),
    cmocka_unit_test (test_dyn_header_bad_cookie_rejected),
    cmocka_unit_test (test_dyn_header_bad_checksum_rejected),
    cmocka_unit_test (test_dyn_header_max_table_entries_0_rejected),
    cmocka_unit_test (test_dyn_header_unaligned_table_offset_rejected),
    cmocka_unit_test (test_dyn_header_major_version_2_rejected),
    cmocka_unit_test (test_chs_matches_spec_algorithm_for_known_sizes),
    cmocka_unit_test (test_sample_footers_decode_with_windows_chs),
    cmocka_unit_test (test_sample_images_footers_decode_or_fail_on_checksum),
    cmocka_unit_test (test_timestamp_epoch_is_2000_01_01_utc),
    cmocka_unit_test (test_timestamp_known_date_round_trips),
    cmocka_unit_test (test_timestamp_before_2000_clamps_to_0),
    cmocka_unit_test (test_timestamp_now_is_current),
    cmocka_unit_test (test_guid_generate_gives_distinct_version_4_guids),
    cmocka_unit_test (test_guid_is_zero_only_for_all_zero_bytes),
    cmocka_unit_test (test_guid_to_string_is_lower_case_8_4_4_4_12),
    cmocka_unit_test (test_bitmap_size_rounds_to_whole_sectors),
    cmocka_unit_test (test_bat_size_rounds_to_whole_sectors),
    cmocka_unit_test (test_bitmap_bits_are_most_significant_first),
    cmocka_unit_test (test_utf16_round_trips_non_ascii_and_surrogate_pair),
    cmocka_unit_test (test_utf16_stops_at_nul_code_unit),
    cmocka_unit_test (test_utf16_lone_surrogates_rejected),
    cmocka_unit_test (test_utf16_to_utf8_truncates_on_character_boundary),
    cmocka_unit_test (test_utf8_to_utf16_too_long_fails_without_overflow),
    cmocka_unit_test (test_utf8_invalid_sequences_rejected),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
