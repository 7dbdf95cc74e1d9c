/* Unit tests of the VHDX codec (lib/formats/vhdx/format.c, metadata.c,
 * bat.c): every real image in the sample folder decodes to what its
 * MANIFEST.tsv says, every encoder round-trips, and each rule of
 * [MS-VHDX] that the codec enforces refuses a structure that breaks it,
 * naming the file and the structure.
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

#include <cmocka.h>

#include "formats/vhdx/format.h"
#include "formats/vhdx/crc32c.h"
#include "scratch.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
#define GiB (UINT64_C (1) << 30)
#define TiB (UINT64_C (1) << 40)

#define F "test.vhdx"

/* How much of each sample is decompressed: every sample's header section,
 * BAT and metadata regions lie in it (checked).
 */
#define SAMPLE_PREFIX (16 * MiB)

static void
assert_error (int r, int err, const char *needle)
{
  const char *msg = vhd_last_error ();

  if (r != -err || strstr (msg, needle) == NULL)
    fail_msg ("expected -%d with \"%s\", got %d: \"%s\"", err, needle, r,
              msg);
  /* Every message names the file. */
  if (strncmp (msg, F ": ", strlen (F ": ")) != 0)
    fail_msg ("message does not start with the file name: \"%s\"", msg);
}

static struct vhd_guid
guid_n (uint8_t n)
{
  struct vhd_guid g;

  for (int i = 0; i < 16; i++)
    g.bytes[i] = (uint8_t) (n + i * 7);
  return g;
}

/* Field by field: decoded structs have padding that memcmp would see. */
static void
assert_guid_equal (const struct vhd_guid *a, const struct vhd_guid *b)
{
  assert_memory_equal (a->bytes, b->bytes, 16);
}

static void
assert_header_equal (const struct vhdx_header *a, const struct vhdx_header *b)
{
  assert_int_equal (a->checksum, b->checksum);
  assert_int_equal (a->sequence_number, b->sequence_number);
  assert_guid_equal (&a->file_write_guid, &b->file_write_guid);
  assert_guid_equal (&a->data_write_guid, &b->data_write_guid);
  assert_guid_equal (&a->log_guid, &b->log_guid);
  assert_int_equal (a->log_version, b->log_version);
  assert_int_equal (a->version, b->version);
  assert_int_equal (a->log_length, b->log_length);
  assert_int_equal (a->log_offset, b->log_offset);
}

static void
assert_region_equal (const struct vhdx_region *a, const struct vhdx_region *b)
{
  assert_int_equal (a->offset, b->offset);
  assert_int_equal (a->length, b->length);
  assert_int_equal (a->required, b->required);
}

static void
assert_regions_equal (const struct vhdx_regions *a,
                      const struct vhdx_regions *b)
{
  assert_int_equal (a->checksum, b->checksum);
  assert_int_equal (a->entry_count, b->entry_count);
  assert_region_equal (&a->bat, &b->bat);
  assert_region_equal (&a->metadata, &b->metadata);
}

static void
assert_metadata_equal (const struct vhdx_metadata *a,
                       const struct vhdx_metadata *b)
{
  assert_int_equal (a->block_size, b->block_size);
  assert_int_equal (a->leave_block_allocated, b->leave_block_allocated);
  assert_int_equal (a->has_parent, b->has_parent);
  assert_int_equal (a->virtual_size, b->virtual_size);
  assert_guid_equal (&a->virtual_disk_id, &b->virtual_disk_id);
  assert_int_equal (a->logical_sector_size, b->logical_sector_size);
  assert_int_equal (a->physical_sector_size, b->physical_sector_size);
}

static void
assert_item_equal (const struct vhdx_metadata_item *a,
                   const struct vhdx_metadata_item *b)
{
  assert_int_equal (a->present, b->present);
  assert_int_equal (a->offset, b->offset);
  assert_int_equal (a->length, b->length);
  assert_int_equal (a->is_user, b->is_user);
  assert_int_equal (a->is_virtual_disk, b->is_virtual_disk);
  assert_int_equal (a->is_required, b->is_required);
}

static void
assert_table_equal (const struct vhdx_metadata_table *a,
                    const struct vhdx_metadata_table *b)
{
  assert_int_equal (a->entry_count, b->entry_count);
  assert_item_equal (&a->file_parameters, &b->file_parameters);
  assert_item_equal (&a->virtual_disk_size, &b->virtual_disk_size);
  assert_item_equal (&a->virtual_disk_id, &b->virtual_disk_id);
  assert_item_equal (&a->logical_sector_size, &b->logical_sector_size);
  assert_item_equal (&a->physical_sector_size, &b->physical_sector_size);
  assert_item_equal (&a->parent_locator, &b->parent_locator);
}

/* ---- GUIDs ---- */

static void
test_guid_mixed_endian (void **state)
{
  /* The BAT region GUID as the samples store it. */
  static const uint8_t disk[16] = {
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08
  };
  struct vhd_guid g;
  uint8_t back[16];
  char s[37];

  vhdx_guid_decode (disk, &g);
  vhd_guid_to_string (&g, s);
  assert_string_equal (s, "2dc27766-f623-4200-9d64-115e9bfd4a08");
  assert_true (vhdx_guid_equal (&g, &vhdx_region_bat));
  vhdx_guid_encode (&g, back);
  assert_memory_equal (back, disk, 16);
  vhd_guid_to_string (&vhdx_item_virtual_disk_size, s);
  assert_string_equal (s, "2fa54224-cd1b-4876-b211-5dbed83bf4b8");
  vhd_guid_to_string (&vhdx_locator_type_vhdx, s);
  assert_string_equal (s, "b04aefb7-d19e-4a81-b789-25b8e9445913");
}

/* ---- File type identifier ---- */

static void
test_file_id_round_trip (void **state)
{
  static uint8_t buf[VHDX_FILE_ID_SIZE];
  struct vhdx_file_id id = { .creator = "vhdkit 1.0 \xc3\xa9\xf0\x9f\x92\xbe" };
  struct vhdx_file_id back;

  assert_int_equal (vhdx_file_id_encode (&id, buf), 0);
  assert_memory_equal (buf, "vhdxfile", 8);
  assert_int_equal (vhdx_file_id_decode (buf, F, &back), 0);
  assert_string_equal (back.creator, id.creator);

  buf[0] = 'V';
  assert_error (vhdx_file_id_decode (buf, F, &back), EINVAL,
                "file type identifier: signature \"Vhdxfile\"");
}

/* ---- Headers ---- */

static struct vhdx_header
sample_header (uint64_t seq)
{
  struct vhdx_header h = {
    .sequence_number = seq,
    .file_write_guid = guid_n (1),
    .data_write_guid = guid_n (2),
    .log_guid = guid_n (3),
    .log_version = 0,
    .version = 1,
    .log_length = MiB,
    .log_offset = MiB,
  };
  return h;
}

static void
test_header_round_trip (void **state)
{
  uint8_t buf[VHDX_HEADER_SIZE];
  struct vhdx_header h = sample_header (0x123456789abcdef0), back;

  vhdx_header_encode (&h, buf);
  assert_int_equal (vhdx_header_decode (buf, F, 1, &back), 0);
  assert_header_equal (&back, &h);
  assert_int_equal (back.checksum,
                    vhdx_get_le32 (buf + 4));

  /* One byte anywhere in the 4 KiB, even in the reserved part. */
  buf[4000] ^= 1;
  assert_error (vhdx_header_decode (buf, F, 2, &back), EINVAL,
                "header 2: checksum");
}

/* Encode h, then let mutate() change the struct before encoding again
 * (so the checksum stays right) and expect decode to refuse.
 */
static void
assert_header_refused (struct vhdx_header h, const char *needle)
{
  uint8_t buf[VHDX_HEADER_SIZE];
  struct vhdx_header out;

  vhdx_header_encode (&h, buf);
  assert_error (vhdx_header_decode (buf, F, 1, &out), EINVAL, needle);
}

static void
test_header_rejections (void **state)
{
  uint8_t buf[VHDX_HEADER_SIZE];
  struct vhdx_header h = sample_header (1), out;

  vhdx_header_encode (&h, buf);
  memcpy (buf, "HEAD", 4);
  assert_error (vhdx_header_decode (buf, F, 1, &out), EINVAL,
                "header 1: signature \"HEAD\" is not \"head\"");

  h = sample_header (1); h.version = 2;
  assert_header_refused (h, "header 1: version 2");
  h = sample_header (1); h.log_version = 1;
  assert_header_refused (h, "header 1: log version 1");
  h = sample_header (1); h.log_offset = MiB + 4096;
  assert_header_refused (h, "log offset 1052672 is not a multiple of 1 MiB");
  h = sample_header (1); h.log_offset = 0;
  assert_header_refused (h, "log offset 0");
  h = sample_header (1); h.log_length = MiB / 2;
  assert_header_refused (h, "log length 524288");
  h = sample_header (1); h.log_length = 0;
  assert_header_refused (h, "log GUID set but the log length is 0");
  h = sample_header (1);
  h.log_offset = UINT64_MAX - MiB + 1;
  assert_header_refused (h, "overflows");
}

static void
test_pick_header (void **state)
{
  uint8_t b1[VHDX_HEADER_SIZE], b2[VHDX_HEADER_SIZE];
  struct vhdx_header h1 = sample_header (7), h2 = sample_header (8), out;
  int which = 0;

  vhdx_header_encode (&h1, b1);
  vhdx_header_encode (&h2, b2);
  assert_int_equal (vhdx_pick_header (b1, b2, F, &out, &which), 0);
  assert_int_equal (which, 2);
  assert_int_equal (out.sequence_number, 8);
  assert_int_equal (vhdx_pick_header (b2, b1, F, &out, &which), 0);
  assert_int_equal (which, 1);

  /* Equal numbers: header 1, whichever it is. */
  h2 = sample_header (7);
  h2.data_write_guid = guid_n (9);
  vhdx_header_encode (&h2, b2);
  assert_int_equal (vhdx_pick_header (b1, b2, F, &out, &which), 0);
  assert_int_equal (which, 1);
  assert_true (vhdx_guid_equal (&out.data_write_guid, &h1.data_write_guid));

  /* A broken header with the higher number loses to a valid one. */
  h2 = sample_header (100);
  vhdx_header_encode (&h2, b2);
  b2[100] ^= 0xff;
  assert_int_equal (vhdx_pick_header (b1, b2, F, &out, &which), 0);
  assert_int_equal (which, 1);
  assert_int_equal (vhdx_pick_header (b2, b1, F, &out, &which), 0);
  assert_int_equal (which, 2);

  /* The valid current header's fields are still checked. */
  h2 = sample_header (100);
  h2.version = 3;
  vhdx_header_encode (&h2, b2);
  assert_error (vhdx_pick_header (b1, b2, F, &out, &which), EINVAL,
                "header 2: version 3");

  /* Neither: both reasons. */
  memcpy (b1, "xead", 4);
  b2[100] ^= 0xff;
  assert_error (vhdx_pick_header (b1, b2, F, &out, &which), EINVAL,
                "no valid header");
  assert_non_null (strstr (vhd_last_error (), "header 1: signature"));
  assert_non_null (strstr (vhd_last_error (), "header 2: checksum"));
}

/* ---- Region table ---- */

static struct vhdx_regions
sample_regions (void)
{
  struct vhdx_regions r = {
    .bat = { .offset = 3 * MiB, .length = MiB, .required = true },
    .metadata = { .offset = 2 * MiB, .length = MiB, .required = true },
  };
  return r;
}

/* Append a raw entry to an encoded table and fix its checksum. */
static void
add_region_entry (uint8_t *buf, const struct vhd_guid *g, uint64_t offset,
                  uint32_t length, uint32_t flags)
{
  uint32_t n = vhdx_get_le32 (buf + 8);
  uint8_t *e = buf + 16 + n * 32;

  vhdx_guid_encode (g, e);
  vhdx_put_le64 (e + 16, offset);
  vhdx_put_le32 (e + 24, length);
  vhdx_put_le32 (e + 28, flags);
  vhdx_put_le32 (buf + 8, n + 1);
  vhdx_put_le32 (buf + 4, 0);
  vhdx_put_le32 (buf + 4, vhdx_crc32c (buf, VHDX_REGION_TABLE_SIZE));
}

static void
set_region_count (uint8_t *buf, uint32_t n)
{
  vhdx_put_le32 (buf + 8, n);
  vhdx_put_le32 (buf + 4, 0);
  vhdx_put_le32 (buf + 4, vhdx_crc32c (buf, VHDX_REGION_TABLE_SIZE));
}

static void
test_region_table_round_trip (void **state)
{
  static uint8_t buf[VHDX_REGION_TABLE_SIZE];
  struct vhdx_regions r = sample_regions (), back;
  struct vhd_guid other = guid_n (5);

  vhdx_region_table_encode (&r, buf);
  assert_int_equal (vhdx_region_table_decode (buf, F, 1, &back), 0);
  assert_int_equal (back.entry_count, 2);
  assert_regions_equal (&back, &r);

  /* Required clear, as qemu writes it, stays clear. */
  r.metadata.required = false;
  vhdx_region_table_encode (&r, buf);
  assert_int_equal (vhdx_region_table_decode (buf, F, 1, &back), 0);
  assert_regions_equal (&back, &r);
  assert_int_equal (vhdx_get_le32 (buf + 16 + 32 + 28), 0);

  /* An unknown optional region is skipped. */
  add_region_entry (buf, &other, 8 * MiB, MiB, 0);
  assert_int_equal (vhdx_region_table_decode (buf, F, 1, &back), 0);
  assert_int_equal (back.entry_count, 3);

  buf[60000] ^= 0x10;
  assert_error (vhdx_region_table_decode (buf, F, 2, &back), EINVAL,
                "region table 2: checksum");
}

static void
test_region_table_rejections (void **state)
{
  static uint8_t buf[VHDX_REGION_TABLE_SIZE];
  struct vhdx_regions r = sample_regions (), out;
  struct vhd_guid unknown = guid_n (0x40);
  char g[37], needle[80];

  vhdx_region_table_encode (&r, buf);
  memcpy (buf, "Regi", 4);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "region table 1: signature \"Regi\"");

  vhdx_region_table_encode (&r, buf);
  add_region_entry (buf, &unknown, 8 * MiB, MiB, 1);
  vhd_guid_to_string (&unknown, g);
  snprintf (needle, sizeof needle, "unknown region %s is marked required",
            g);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), ENOTSUP,
                needle);

  vhdx_region_table_encode (&r, buf);
  add_region_entry (buf, &vhdx_region_bat, 8 * MiB, MiB, 1);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "entries 0 and 2 are both region 2dc27766-f623-4200-9d64-"
                "115e9bfd4a08");
  vhdx_region_table_encode (&r, buf);
  add_region_entry (buf, &vhdx_region_metadata, 8 * MiB, MiB, 0);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "entries 1 and 2 are both region 8b7ca206");
  /* Unknown regions too: unique, and clear of the others. */
  vhdx_region_table_encode (&r, buf);
  add_region_entry (buf, &unknown, 8 * MiB, MiB, 0);
  add_region_entry (buf, &unknown, 9 * MiB, MiB, 0);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "entries 2 and 3 are both region");
  vhdx_region_table_encode (&r, buf);
  add_region_entry (buf, &unknown, 3 * MiB, 2 * MiB, 0);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "entry 2 (");
  assert_non_null (strstr (vhd_last_error (), "at 3145728, 2097152 bytes)"
                           " overlaps entry 0 (at 3145728, 1048576 bytes)"));
  /* An empty unknown region takes no room. */
  vhdx_region_table_encode (&r, buf);
  add_region_entry (buf, &unknown, 3 * MiB, 0, 0);
  assert_int_equal (vhdx_region_table_decode (buf, F, 1, &out), 0);

  vhdx_region_table_encode (&r, buf);
  set_region_count (buf, 1);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "no metadata region");
  set_region_count (buf, 0);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "no BAT region");
  set_region_count (buf, 2048);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "entry count 2048 is more than 2047");

  r = sample_regions (); r.bat.offset = 3 * MiB + 512;
  vhdx_region_table_encode (&r, buf);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "file offset 3146240 is not a multiple of 1 MiB");
  r = sample_regions (); r.metadata.offset = 0;
  vhdx_region_table_encode (&r, buf);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "file offset 0 is not");
  r = sample_regions (); r.bat.length = 4096;
  vhdx_region_table_encode (&r, buf);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "length 4096 is not a non-zero multiple of 1 MiB");
  r = sample_regions (); r.bat.length = 0;
  vhdx_region_table_encode (&r, buf);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "length 0 is not");
  r = sample_regions (); r.bat.offset = UINT64_MAX - MiB + 1;
  vhdx_region_table_encode (&r, buf);
  assert_error (vhdx_region_table_decode (buf, F, 1, &out), EINVAL,
                "overflows");
}

/* ---- Metadata ---- */

static struct vhdx_metadata
sample_metadata (bool has_parent)
{
  struct vhdx_metadata md = {
    .block_size = 32 * MiB,
    .leave_block_allocated = false,
    .has_parent = has_parent,
    .virtual_size = 127 * GiB + 512,
    .virtual_disk_id = guid_n (0x21),
    .logical_sector_size = 512,
    .physical_sector_size = 4096,
  };
  return md;
}

static struct vhdx_locator_pair sample_pairs[] = {
  { (char *) "parent_linkage", (char *) "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}" },
  { (char *) "relative_path", (char *) "..\\sdir \xc3\xa9\\parent.vhdx" },
  { (char *) "absolute_win32_path", (char *) "\\\\?\\d:\\p\\parent.vhdx" },
};

static struct vhdx_parent_locator
sample_locator (void)
{
  struct vhdx_parent_locator loc = {
    .type = vhdx_locator_type_vhdx,
    .count = 3,
    .pairs = sample_pairs,
  };
  return loc;
}

static uint8_t region[MiB];

/* Decode a whole metadata region: the table, then the items. */
static int
decode_region (const uint8_t *reg, uint32_t len,
               struct vhdx_metadata_table *t, struct vhdx_metadata *md)
{
  int r = vhdx_metadata_table_decode (reg, len, F, t);

  return r < 0 ? r : vhdx_metadata_decode (reg, len, t, F, md);
}

static void
test_metadata_round_trip (void **state)
{
  struct vhdx_metadata md = sample_metadata (false), back;
  struct vhdx_metadata_table t;

  assert_int_equal (vhdx_metadata_encode (&md, NULL, region, sizeof region),
                    0);
  assert_memory_equal (region, "metadata", 8);
  assert_int_equal (decode_region (region, MiB, &t, &back), 0);
  assert_metadata_equal (&back, &md);
  assert_int_equal (t.entry_count, 5);
  assert_false (t.parent_locator.present);
  /* Hyper-V's places and flags. */
  assert_int_equal (t.file_parameters.offset, 64 * KiB);
  assert_false (t.file_parameters.is_virtual_disk);
  assert_true (t.file_parameters.is_required);
  assert_int_equal (t.virtual_disk_id.offset, 64 * KiB + 24);
  assert_int_equal (t.logical_sector_size.offset, 64 * KiB + 16);
  assert_true (t.virtual_disk_id.is_virtual_disk);
  assert_int_equal (vhdx_disk_kind (&back), VHDX_KIND_DYNAMIC);

  md.leave_block_allocated = true;
  assert_int_equal (vhdx_metadata_encode (&md, NULL, region, sizeof region),
                    0);
  assert_int_equal (decode_region (region, MiB, &t, &back), 0);
  assert_int_equal (vhdx_disk_kind (&back), VHDX_KIND_FIXED);

  /* The table encoder alone: what it writes decodes to itself. */
  {
    static uint8_t again[VHDX_METADATA_TABLE_SIZE];
    struct vhdx_metadata_table t2;

    vhdx_metadata_table_encode (&t, again);
    assert_memory_equal (again, region, VHDX_METADATA_TABLE_SIZE);
    assert_int_equal (vhdx_metadata_table_decode (again, MiB, F, &t2), 0);
    assert_table_equal (&t2, &t);
  }
}

static void
test_differencing_metadata_round_trip (void **state)
{
  struct vhdx_metadata md = sample_metadata (true), back;
  struct vhdx_parent_locator loc = sample_locator (), got;
  struct vhdx_metadata_table t;

  assert_int_equal (vhdx_metadata_encode (&md, &loc, region, sizeof region),
                    0);
  assert_int_equal (decode_region (region, MiB, &t, &back), 0);
  assert_metadata_equal (&back, &md);
  assert_int_equal (vhdx_disk_kind (&back), VHDX_KIND_DIFFERENCING);
  assert_true (t.parent_locator.present);
  assert_int_equal (t.parent_locator.offset, 64 * KiB + 40);

  assert_int_equal (vhdx_parent_locator_decode (region
                                                + t.parent_locator.offset,
                                                t.parent_locator.length, F,
                                                &got), 0);
  assert_true (vhdx_guid_equal (&got.type, &vhdx_locator_type_vhdx));
  assert_int_equal (got.count, 3);
  for (int i = 0; i < 3; i++) {
    assert_string_equal (got.pairs[i].key, sample_pairs[i].key);
    assert_string_equal (got.pairs[i].value, sample_pairs[i].value);
  }
  assert_string_equal (vhdx_parent_locator_get (&got, "relative_path"),
                       sample_pairs[1].value);
  assert_null (vhdx_parent_locator_get (&got, "volume_path"));
  vhdx_parent_locator_free (&got);

  /* HasParent needs a locator, in the encoder and in the decoder. */
  assert_int_equal (vhdx_metadata_encode (&md, NULL, region, sizeof region),
                    -EINVAL);
  md = sample_metadata (false);
  assert_int_equal (vhdx_metadata_encode (&md, NULL, region, sizeof region),
                    0);
  vhdx_put_le32 (region + 64 * KiB + 4, 2);       /* HasParent */
  assert_error (decode_region (region, MiB, &t, &back), EINVAL,
                "HasParent is set but there is no parent locator");
}

/* Overwrite entry i of the table in region with raw values. */
static void
put_metadata_entry (uint8_t *reg, unsigned i, const struct vhd_guid *g,
                    uint32_t offset, uint32_t length, uint32_t flags)
{
  uint8_t *e = reg + 32 + i * 32;

  vhdx_guid_encode (g, e);
  vhdx_put_le32 (e + 16, offset);
  vhdx_put_le32 (e + 20, length);
  vhdx_put_le32 (e + 24, flags);
  if (i >= vhdx_get_le16 (reg + 10))
    vhdx_put_le16 (reg + 10, (uint16_t) (i + 1));
}

static void
fresh_region (void)
{
  struct vhdx_metadata md = sample_metadata (false);

  assert_int_equal (vhdx_metadata_encode (&md, NULL, region, sizeof region),
                    0);
}

static void
test_metadata_table_rejections (void **state)
{
  struct vhdx_metadata_table t;
  struct vhdx_metadata md;
  struct vhd_guid unknown = guid_n (0x77);
  char g[37], needle[100];

  fresh_region ();
  memcpy (region, "metadatA", 8);
  assert_error (decode_region (region, MiB, &t, &md), EINVAL,
                "metadata table: signature \"metadatA\"");

  /* Item past the region's end. */
  fresh_region ();
  put_metadata_entry (region, 5, &unknown, MiB - 8, 16, 0);
  assert_error (decode_region (region, MiB, &t, &md), EINVAL,
                "leaves the metadata region (1048576 bytes)");
  /* Near UINT32_MAX: must not wrap. */
  fresh_region ();
  put_metadata_entry (region, 5, &unknown, UINT32_MAX - 4, 16, 0);
  assert_error (decode_region (region, MiB, &t, &md), EINVAL,
                "leaves the metadata region");
  /* Inside the table's 64 KiB. */
  fresh_region ();
  put_metadata_entry (region, 5, &unknown, 4096, 16, 0);
  assert_error (decode_region (region, MiB, &t, &md), EINVAL,
                "offset 4096 is inside the table's 64 KiB");
  fresh_region ();
  put_metadata_entry (region, 5, &unknown, 128 * KiB, MiB + 1, 0);
  assert_error (decode_region (region, 4 * MiB, &t, &md), EINVAL,
                "length 1048577 is more than 1 MiB");
  fresh_region ();
  put_metadata_entry (region, 5, &unknown, 128 * KiB, 0, 0);
  assert_error (decode_region (region, MiB, &t, &md), EINVAL,
                "with length 0 (must be 0)");
  /* Overlapping the virtual disk size item (64 KiB + 8, 8 bytes). */
  fresh_region ();
  put_metadata_entry (region, 5, &unknown, 64 * KiB + 12, 8, 0);
  assert_error (decode_region (region, MiB, &t, &md), EINVAL,
                "overlaps entry 1");
  /* The same item twice. */
  fresh_region ();
  put_metadata_entry (region, 5, &vhdx_item_virtual_disk_size,
                      128 * KiB, 8, 6);
  assert_error (decode_region (region, MiB, &t, &md), EINVAL,
                "entries 1 and 5 are both item 2fa54224");
  /* ... but a user item with a system item's GUID is another item. */
  fresh_region ();
  put_metadata_entry (region, 5, &vhdx_item_virtual_disk_size,
                      128 * KiB, 8, 1);
  assert_int_equal (decode_region (region, MiB, &t, &md), 0);
  assert_int_equal (t.virtual_disk_size.offset, 64 * KiB + 8);
  /* Unknown and required. */
  fresh_region ();
  put_metadata_entry (region, 5, &unknown, 128 * KiB, 8, 4);
  vhd_guid_to_string (&unknown, g);
  snprintf (needle, sizeof needle, "unknown system item %s is marked"
            " required", g);
  assert_error (decode_region (region, MiB, &t, &md), ENOTSUP, needle);
  /* Unknown and optional: fine. */
  fresh_region ();
  put_metadata_entry (region, 5, &unknown, 128 * KiB, 8, 2);
  assert_int_equal (decode_region (region, MiB, &t, &md), 0);
  /* Counts. */
  fresh_region ();
  vhdx_put_le16 (region + 10, 2048);
  assert_error (decode_region (region, MiB, &t, &md), EINVAL,
                "entry count 2048 is more than 2047");
  fresh_region ();
  vhdx_put_le16 (region + 10, 4);     /* drops the virtual disk id */
  assert_error (decode_region (region, MiB, &t, &md), EINVAL,
                "metadata: no virtual disk id item");
}

/* Encode md, expect the item decoder to refuse it. */
static void
assert_metadata_refused (struct vhdx_metadata md, const char *needle)
{
  struct vhdx_metadata_table t;
  struct vhdx_metadata out;

  assert_int_equal (vhdx_metadata_encode (&md, NULL, region, sizeof region),
                    0);
  assert_error (decode_region (region, MiB, &t, &out), EINVAL, needle);
}

static void
test_metadata_item_rejections (void **state)
{
  struct vhdx_metadata md;
  struct vhdx_metadata_table t;
  struct vhdx_metadata out;

  md = sample_metadata (false); md.block_size = 3 * MiB;
  assert_metadata_refused (md, "block size 3145728 is not a power of two");
  md = sample_metadata (false); md.block_size = 512 * MiB;
  assert_metadata_refused (md, "block size 536870912");
  md = sample_metadata (false); md.block_size = 512 * KiB;
  assert_metadata_refused (md, "block size 524288");
  md = sample_metadata (false); md.logical_sector_size = 1024;
  assert_metadata_refused (md, "logical sector size 1024 is neither");
  md = sample_metadata (false); md.physical_sector_size = 1024;
  assert_metadata_refused (md, "physical sector size 1024 is neither");
  md = sample_metadata (false); md.virtual_size = 64 * TiB + 512;
  assert_metadata_refused (md, "virtual disk size 70368744178176 is not"
                           " from 1 byte to 64 TiB");
  md = sample_metadata (false); md.virtual_size = UINT64_MAX;
  assert_metadata_refused (md, "virtual disk size 18446744073709551615");
  md = sample_metadata (false); md.virtual_size = 0;
  assert_metadata_refused (md, "virtual disk size 0");
  md = sample_metadata (false); md.virtual_size = 64 * TiB;
  md.logical_sector_size = 4096;
  assert_int_equal (vhdx_metadata_encode (&md, NULL, region, sizeof region),
                    0);
  assert_int_equal (decode_region (region, MiB, &t, &out), 0);
  md = sample_metadata (false); md.virtual_size = GiB + 512;
  md.logical_sector_size = 4096;
  assert_metadata_refused (md, "virtual disk size 1073742336 is not a"
                           " multiple of the logical sector size 4096");

  /* Reserved bits of the file parameters. */
  fresh_region ();
  vhdx_put_le32 (region + 64 * KiB + 4, 8);
  assert_error (decode_region (region, MiB, &t, &out), EINVAL,
                "reserved bits 0x00000008");
  /* An item of the wrong size. */
  fresh_region ();
  vhdx_put_le32 (region + 32 + 20, 4);    /* file parameters: 4 bytes */
  assert_error (decode_region (region, MiB, &t, &out), EINVAL,
                "file parameters item: length 4 is not 8");
}

/* ---- Parent locator ---- */

static void
test_parent_locator_rejections (void **state)
{
  struct vhdx_parent_locator loc = sample_locator (), out;
  uint8_t buf[1024];
  size_t len;

  assert_int_equal (vhdx_parent_locator_encode (&loc, buf, sizeof buf, &len),
                    0);
  assert_int_equal (vhdx_parent_locator_decode (buf, len, F, &out), 0);
  vhdx_parent_locator_free (&out);

  /* Each key/value offset + length must lie inside the item: cut it. */
  assert_error (vhdx_parent_locator_decode (buf, len - 2, F, &out), EINVAL,
                "entry 2: value of key \"absolute_win32_path\" at");
  assert_error (vhdx_parent_locator_decode (buf, 19, F, &out), EINVAL,
                "less than its 20-byte header");
  assert_error (vhdx_parent_locator_decode (buf, 20 + 2 * 12, F, &out),
                EINVAL, "3 entries do not fit");
  /* A value offset far past the item (and near UINT32_MAX). */
  vhdx_put_le32 (buf + 20 + 12 + 4, UINT32_MAX - 1);
  assert_error (vhdx_parent_locator_decode (buf, len, F, &out), EINVAL,
                "entry 1: value of key \"relative_path\" at"
                " 4294967294");
  /* Odd length, zero offset, NUL inside, the same key twice. */
  assert_int_equal (vhdx_parent_locator_encode (&loc, buf, sizeof buf, &len),
                    0);
  vhdx_put_le16 (buf + 20 + 8, 27);
  assert_error (vhdx_parent_locator_decode (buf, len, F, &out), EINVAL,
                "entry 0: key length 27 is odd");
  assert_int_equal (vhdx_parent_locator_encode (&loc, buf, sizeof buf, &len),
                    0);
  vhdx_put_le32 (buf + 20, 0);
  assert_error (vhdx_parent_locator_decode (buf, len, F, &out), EINVAL,
                "entry 0: key offset is 0");
  assert_int_equal (vhdx_parent_locator_encode (&loc, buf, sizeof buf, &len),
                    0);
  vhdx_put_le16 (buf + vhdx_get_le32 (buf + 20 + 4) + 2, 0);
  assert_error (vhdx_parent_locator_decode (buf, len, F, &out), EINVAL,
                "entry 0: value of key \"parent_linkage\" holds a NUL");
  assert_int_equal (vhdx_parent_locator_encode (&loc, buf, sizeof buf, &len),
                    0);
  /* Entry 2's key now points at entry 0's. */
  vhdx_put_le32 (buf + 20 + 24, vhdx_get_le32 (buf + 20));
  vhdx_put_le16 (buf + 20 + 24 + 8, vhdx_get_le16 (buf + 20 + 8));
  assert_error (vhdx_parent_locator_decode (buf, len, F, &out), EINVAL,
                "entries 0 and 2 have the same key");
  /* Unpaired surrogate. */
  assert_int_equal (vhdx_parent_locator_encode (&loc, buf, sizeof buf, &len),
                    0);
  vhdx_put_le16 (buf + vhdx_get_le32 (buf + 20), 0xd800);
  assert_error (vhdx_parent_locator_decode (buf, len, F, &out), EINVAL,
                "entry 0: key is not valid UTF-16");
  /* No room. */
  assert_int_equal (vhdx_parent_locator_encode (&loc, buf, 100, &len),
                    -ENOSPC);
}

/* ---- BAT ---- */

static void
test_bat_geometry (void **state)
{
  struct vhdx_bat_geometry g;

  /* 127 GiB + 512 in 32 MiB blocks: 4065 blocks, chunk ratio 128. */
  assert_int_equal (vhdx_bat_geometry (127 * GiB + 512, 32 * MiB, 512,
                                       false, MiB, F, &g), 0);
  assert_int_equal (g.chunk_ratio, 128);
  assert_int_equal (g.payload_blocks, 4065);
  assert_int_equal (g.bitmap_blocks, 32);
  assert_int_equal (g.total_entries, 4065 + 31);
  assert_int_equal (g.bat_bytes, (4065 + 31) * 8);
  assert_int_equal (vhdx_bat_geometry (127 * GiB + 512, 32 * MiB, 512,
                                       true, MiB, F, &g), 0);
  assert_int_equal (g.total_entries, 32 * 129);
  /* Exactly one full chunk: no trailing bitmap entry when dynamic. */
  assert_int_equal (vhdx_bat_geometry (128 * 32 * MiB, 32 * MiB, 512,
                                       false, MiB, F, &g), 0);
  assert_int_equal (g.total_entries, 128);
  assert_int_equal (vhdx_bat_geometry (128 * 32 * MiB, 32 * MiB, 512,
                                       true, MiB, F, &g), 0);
  assert_int_equal (g.total_entries, 129);
  /* 4 KiB sectors: chunk ratio 2^23 * 4096 / 1 MiB. */
  assert_int_equal (vhdx_bat_geometry (64 * TiB, MiB, 4096, false,
                                       UINT32_MAX, F, &g), 0);
  assert_int_equal (g.chunk_ratio, 32768);
  assert_int_equal (g.payload_blocks, UINT64_C (1) << 26);

  /* Indices: chunk ratio 4 as in [MS-VHDX]'s figure 6. */
  g.chunk_ratio = 4;
  assert_int_equal (vhdx_bat_payload_index (&g, 0), 0);
  assert_int_equal (vhdx_bat_payload_index (&g, 3), 3);
  assert_int_equal (vhdx_bat_payload_index (&g, 4), 5);
  assert_int_equal (vhdx_bat_payload_index (&g, 9), 11);
  assert_int_equal (vhdx_bat_bitmap_index (&g, 0), 4);
  assert_int_equal (vhdx_bat_bitmap_index (&g, 2), 14);
  assert_true (vhdx_bat_is_bitmap_index (&g, 9));
  assert_false (vhdx_bat_is_bitmap_index (&g, 10));
}

static void
test_bat_geometry_rejections (void **state)
{
  struct vhdx_bat_geometry g;

  assert_error (vhdx_bat_geometry (GiB, 3 * MiB, 512, false, MiB, F, &g),
                EINVAL, "chunk ratio 2^23 * 512 / 3145728 is not a whole"
                " number");
  /* 10 GiB in 2 MiB blocks: 5120 + 2 entries, more than 1 MiB holds? No:
   * 40 KiB.  1 TiB in 1 MiB blocks: 2^20 + 255 entries, > 8 MiB.
   */
  assert_error (vhdx_bat_geometry (TiB, MiB, 512, false, 8 * MiB, F, &g),
                EINVAL, "BAT region: 8388608 bytes, too small for the"
                " 1048831 entries");
  /* Huge values that a hostile file could give without the metadata
   * checks: each sum and product must be refused, not wrapped.
   */
  assert_error (vhdx_bat_geometry (UINT64_MAX, 1, 512, false, UINT32_MAX,
                                   F, &g), EOVERFLOW, "overflows");
  assert_error (vhdx_bat_geometry (UINT64_MAX, 1, 512, true, UINT32_MAX,
                                   F, &g), EOVERFLOW, "overflows");
  /* 2^63 payload blocks: the entry count fits, its 8 bytes each not. */
  assert_error (vhdx_bat_geometry (UINT64_MAX, 2, 512, false, UINT32_MAX,
                                   F, &g), EOVERFLOW, "overflows");
  /* The largest that does not overflow is still far too big a BAT. */
  assert_error (vhdx_bat_geometry (UINT64_MAX, 512, 512, false, UINT32_MAX,
                                   F, &g), EINVAL, "too small");
  assert_error (vhdx_bat_geometry (UINT64_MAX, 256 * MiB, 4096, true,
                                   UINT32_MAX, F, &g), EINVAL,
                "too small");
  assert_error (vhdx_bat_geometry (0, MiB, 512, false, MiB, F, &g), EINVAL,
                "must all be non-zero");
  assert_error (vhdx_bat_geometry (GiB, 0, 512, false, MiB, F, &g), EINVAL,
                "must all be non-zero");
}

static void
test_bat_entry_round_trip (void **state)
{
  struct vhdx_bat_entry e = {
    .state = 6, .reserved = 0x1abcd, .offset_mb = VHDX_BAT_MAX_OFFSET_MB,
  }, back;
  uint8_t p[8];

  vhdx_bat_entry_encode (&e, p);
  vhdx_bat_entry_decode (p, &back);
  assert_int_equal (back.state, e.state);
  assert_int_equal (back.reserved, e.reserved);
  assert_int_equal (back.offset_mb, e.offset_mb);
  assert_int_equal (vhdx_get_le64 (p),
                    UINT64_C (0xfffffffffff00000) | 0x1abcd << 3 | 6);
  /* A Hyper-V entry: block at 4 MiB, fully present. */
  vhdx_put_le64 (p, UINT64_C (0x400006));
  vhdx_bat_entry_decode (p, &back);
  assert_int_equal (back.state, VHDX_PAYLOAD_FULLY_PRESENT);
  assert_int_equal (back.offset_mb, 4);
  assert_int_equal (back.reserved, 0);
}

static void
test_bat_entry_check (void **state)
{
  struct vhdx_bat_geometry g;
  struct vhdx_bat_entry e = { .state = VHDX_PAYLOAD_FULLY_PRESENT,
                              .offset_mb = 4 };
  const uint64_t fsize = 4 * MiB + 32 * MiB;

  /* 1 GiB in 32 MiB blocks: 32 payload entries, bitmap entry at 128+. */
  assert_int_equal (vhdx_bat_geometry (5 * GiB, 32 * MiB, 512, true, MiB,
                                       F, &g), 0);
  assert_int_equal (vhdx_bat_entry_check (&e, 0, &g, VHDX_KIND_DYNAMIC,
                                          32 * MiB, fsize, F), 0);
  /* One byte short of the block. */
  assert_error (vhdx_bat_entry_check (&e, 0, &g, VHDX_KIND_DYNAMIC,
                                      32 * MiB, fsize - 1, F), EINVAL,
                "BAT entry 0: block at offset 4194304, 33554432 bytes,"
                " goes past the end of the file");
  e.offset_mb = VHDX_BAT_MAX_OFFSET_MB;
  assert_error (vhdx_bat_entry_check (&e, 0, &g, VHDX_KIND_DYNAMIC,
                                      32 * MiB, UINT64_MAX, F), EINVAL,
                "goes past the end of the file");
  e.offset_mb = 0;
  assert_error (vhdx_bat_entry_check (&e, 0, &g, VHDX_KIND_DYNAMIC,
                                      32 * MiB, fsize, F), EINVAL,
                "inside the 1 MiB header area");
  /* States: reserved ones, partial outside differencing, bitmaps. */
  e.offset_mb = 4;
  e.state = 4;
  assert_error (vhdx_bat_entry_check (&e, 0, &g, VHDX_KIND_DIFFERENCING,
                                      32 * MiB, fsize, F), EINVAL,
                "BAT entry 0 (payload block): state 4 is not valid for a"
                " differencing disk");
  e.state = VHDX_PAYLOAD_PARTIALLY_PRESENT;
  assert_error (vhdx_bat_entry_check (&e, 1, &g, VHDX_KIND_FIXED,
                                      32 * MiB, fsize, F), EINVAL,
                "state 7 is not valid for a fixed disk");
  assert_int_equal (vhdx_bat_entry_check (&e, 1, &g, VHDX_KIND_DIFFERENCING,
                                          32 * MiB, fsize, F), 0);
  e.state = VHDX_SB_PRESENT;
  assert_error (vhdx_bat_entry_check (&e, 128, &g, VHDX_KIND_DYNAMIC,
                                      32 * MiB, fsize, F), EINVAL,
                "BAT entry 128 (sector bitmap): state 6 is not valid for a"
                " dynamic disk");
  assert_int_equal (vhdx_bat_entry_check (&e, 128, &g,
                                          VHDX_KIND_DIFFERENCING, 32 * MiB,
                                          fsize, F), 0);
  e.state = VHDX_PAYLOAD_ZERO;
  assert_error (vhdx_bat_entry_check (&e, 257, &g, VHDX_KIND_DIFFERENCING,
                                      32 * MiB, fsize, F), EINVAL,
                "BAT entry 257 (sector bitmap): state 2");
  /* A bitmap block is 1 MiB whatever the block size. */
  e.state = VHDX_SB_PRESENT;
  e.offset_mb = 35;
  assert_int_equal (vhdx_bat_entry_check (&e, 128, &g,
                                          VHDX_KIND_DIFFERENCING, 32 * MiB,
                                          fsize, F), 0);
  /* Offsets of blocks without data are reserved: not checked. */
  e.state = VHDX_PAYLOAD_ZERO;
  e.offset_mb = VHDX_BAT_MAX_OFFSET_MB;
  assert_int_equal (vhdx_bat_entry_check (&e, 0, &g, VHDX_KIND_DYNAMIC,
                                          32 * MiB, fsize, F), 0);
  assert_error (vhdx_bat_entry_check (&e, g.total_entries, &g,
                                      VHDX_KIND_DYNAMIC, 32 * MiB, fsize,
                                      F), EINVAL, "past the");
}

/* ---- Layout ---- */

static void
test_layout (void **state)
{
  struct vhdx_header h = sample_header (1);
  struct vhdx_regions r = sample_regions ();
  struct vhdx_metadata md = sample_metadata (false);
  struct vhdx_bat_geometry g;

  assert_int_equal (vhdx_layout_check (&h, &r, &md, 4 * MiB, F, &g), 0);
  assert_int_equal (g.payload_blocks, 4065);

  assert_error (vhdx_layout_check (&h, &r, &md, 4 * MiB - 1, F, &g), EINVAL,
                "BAT region at 3145728, 1048576 bytes, goes past the end"
                " of the file (4194303 bytes)");
  r.metadata.offset = 3 * MiB;
  assert_error (vhdx_layout_check (&h, &r, &md, 4 * MiB, F, &g), EINVAL,
                "metadata region at 3145728, 1048576 bytes, overlaps the"
                " BAT region");
  r = sample_regions ();
  r.bat.offset = MiB;
  r.bat.length = 2 * MiB;
  assert_error (vhdx_layout_check (&h, &r, &md, 4 * MiB, F, &g), EINVAL,
                "BAT region at 1048576, 2097152 bytes, overlaps the log");
  r = sample_regions ();
  h.log_offset = 2 * MiB;
  assert_error (vhdx_layout_check (&h, &r, &md, 4 * MiB, F, &g), EINVAL,
                "metadata region at 2097152, 1048576 bytes, overlaps the"
                " log");
  /* An empty log takes no room. */
  h.log_length = 0;
  h.log_guid = (struct vhd_guid) { { 0 } };
  assert_int_equal (vhdx_layout_check (&h, &r, &md, 4 * MiB, F, &g), 0);
  h = sample_header (1);
  h.log_offset = 16 * MiB;
  assert_error (vhdx_layout_check (&h, &r, &md, 4 * MiB, F, &g), EINVAL,
                "log at 16777216, 1048576 bytes, goes past the end");
  h = sample_header (1);
  assert_error (vhdx_layout_check (&h, &r, &md, 512 * KiB, F, &g), EINVAL,
                "header area");
  /* The BAT region must hold the geometry. */
  md.virtual_size = 64 * TiB;
  md.block_size = MiB;
  assert_error (vhdx_layout_check (&h, &r, &md, 4 * MiB, F, &g), EINVAL,
                "BAT region: 1048576 bytes, too small");
}

/* An image made only of the create encoders, laid out as Hyper-V does,
 * goes through every decoder and the layout check.
 */
static void
test_create_layout_decodes (void **state)
{
  static uint8_t img[4 * MiB];
  struct vhdx_file_id id = { .creator = "vhdkit" };
  struct vhdx_header h = sample_header (1), h1, got;
  struct vhdx_regions r = sample_regions (), rt;
  struct vhdx_metadata md = sample_metadata (false), mdo;
  struct vhdx_metadata_table t;
  struct vhdx_bat_geometry g;
  int which;

  memset (img, 0, sizeof img);
  assert_int_equal (vhdx_file_id_encode (&id, img), 0);
  vhdx_header_encode (&h, img + VHDX_HEADER1_OFFSET);
  h.sequence_number = 2;
  vhdx_header_encode (&h, img + VHDX_HEADER2_OFFSET);
  vhdx_region_table_encode (&r, img + VHDX_REGION_TABLE1_OFFSET);
  vhdx_region_table_encode (&r, img + VHDX_REGION_TABLE2_OFFSET);
  assert_int_equal (vhdx_metadata_encode (&md, NULL, img + 2 * MiB, MiB), 0);

  assert_int_equal (vhdx_pick_header (img + VHDX_HEADER1_OFFSET,
                                      img + VHDX_HEADER2_OFFSET, F, &got,
                                      &which), 0);
  assert_int_equal (which, 2);
  assert_int_equal (vhdx_header_decode (img + VHDX_HEADER1_OFFSET, F, 1,
                                        &h1), 0);
  assert_int_equal (vhdx_region_table_decode (img
                                              + VHDX_REGION_TABLE2_OFFSET,
                                              F, 2, &rt), 0);
  assert_int_equal (decode_region (img + rt.metadata.offset,
                                   rt.metadata.length, &t, &mdo), 0);
  assert_int_equal (vhdx_layout_check (&got, &rt, &mdo, sizeof img, F, &g),
                    0);
}

/* ---- Samples ---- */

struct manifest_row {
  char file[128];
  char kind[32];
  char creator[256];
  uint64_t virtual_size;
  uint32_t block_size;
  uint32_t logical_sector_size;
  char expect[64];
};

static const char *
vhdx_samples_dir (void)
{
  static char path[4096];
  const char *s = getenv ("VHDKIT_SAMPLES");

  snprintf (path, sizeof path, "%s/vhdx",
            s != NULL && *s != '\0' ? s : "/work/shared/samples");
  return path;
}

/* Split line into tab-separated fields (in place). */
static size_t
split_tabs (char *line, char **fields, size_t max)
{
  size_t n = 0;

  line[strcspn (line, "\n")] = '\0';
  while (n < max) {
    fields[n++] = line;
    line = strchr (line, '\t');
    if (line == NULL)
      break;
    *line++ = '\0';
  }
  return n;
}

static size_t
read_manifest (const char *sdir, struct manifest_row *rows, size_t max)
{
  char path[4200], line[4096];
  FILE *fp;
  size_t n = 0;

  snprintf (path, sizeof path, "%s/MANIFEST.tsv", sdir);
  fp = fopen (path, "r");
  if (fp == NULL)
    fail_msg ("%s: %s", path, strerror (errno));
  while (fgets (line, sizeof line, fp) != NULL && n < max) {
    char *f[12];

    if (line[0] == '#' || line[0] == '\n')
      continue;
    if (split_tabs (line, f, 12) < 7)
      fail_msg ("MANIFEST.tsv: short line for %s", f[0]);
    snprintf (rows[n].file, sizeof rows[n].file, "%s", f[0]);
    snprintf (rows[n].kind, sizeof rows[n].kind, "%s", f[1]);
    snprintf (rows[n].creator, sizeof rows[n].creator, "%s", f[2]);
    rows[n].virtual_size = strtoull (f[3], NULL, 10);
    rows[n].block_size = (uint32_t) strtoul (f[4], NULL, 10);
    rows[n].logical_sector_size = (uint32_t) strtoul (f[5], NULL, 10);
    snprintf (rows[n].expect, sizeof rows[n].expect, "%s", f[6]);
    n++;
  }
  fclose (fp);
  return n;
}

/* Decompress the first SAMPLE_PREFIX bytes of sdir/xz into the scratch
 * folder; returns the decompressed file's whole size (from xz -l).
 */
static uint64_t
unpack_sample (const char *sdir, const char *xz, char *out, size_t out_size)
{
  char cmd[9000], line[512];
  uint64_t size = 0;
  FILE *p;

  snprintf (out, out_size, "%s/%.*s", dir, (int) (strlen (xz) - 3),
            xz);
  snprintf (cmd, sizeof cmd, "xz --robot -l '%s/%s'", sdir, xz);
  p = popen (cmd, "r");
  assert_non_null (p);
  while (fgets (line, sizeof line, p) != NULL) {
    char *f[10];

    if (strncmp (line, "totals\t", 7) == 0 && split_tabs (line, f, 10) >= 5)
      size = strtoull (f[4], NULL, 10);
  }
  assert_int_equal (pclose (p), 0);
  if (size == 0)
    fail_msg ("%s: no size from xz -l", xz);
  snprintf (cmd, sizeof cmd, "xz -dc '%s/%s' 2>/dev/null | head -c %" PRIu64
            " > '%s'", sdir, xz, SAMPLE_PREFIX, out);
  if (system (cmd) != 0)
    fail_msg ("%s: cannot decompress", xz);
  return size;
}

static uint8_t *
slurp (const char *path, size_t *len)
{
  FILE *fp = fopen (path, "rb");
  uint8_t *buf = malloc (SAMPLE_PREFIX);

  assert_non_null (fp);
  assert_non_null (buf);
  *len = fread (buf, 1, SAMPLE_PREFIX, fp);
  fclose (fp);
  return buf;
}

/* Manifest errata, checked against the bytes (see the report): the
 * stand-in parent's file parameters say 16 MiB blocks (BAT of 513 entries,
 * chunk ratio 256), not the 32 MiB of its MANIFEST row.
 */
static uint32_t
expected_block_size (const struct manifest_row *row)
{
  if (strcmp (row->file,
              "standin-parent-of-dissect-differencing.vhdx.xz") == 0)
    return 16 * MiB;
  return row->block_size;
}

static void
check_locator (const uint8_t *img, const struct vhdx_metadata_table *t,
               uint64_t md_offset, const char *name)
{
  struct vhdx_parent_locator loc;

  assert_int_equal (vhdx_parent_locator_decode (img + md_offset
                                                + t->parent_locator.offset,
                                                t->parent_locator.length,
                                                name, &loc), 0);
  assert_true (vhdx_guid_equal (&loc.type, &vhdx_locator_type_vhdx));
  assert_int_equal (loc.count, 5);
  assert_string_equal (vhdx_parent_locator_get (&loc, "parent_linkage"),
                       "{ff34003b-11ed-4cf8-a166-b2be05e20b80}");
  assert_non_null (vhdx_parent_locator_get (&loc, "parent_linkage2"));
  assert_non_null (strstr (vhdx_parent_locator_get (&loc, "relative_path"),
                           "Generation 1_49C4BAF3-4B25-4406-8C4B-"
                           "D39E65C32385.avhdx"));
  assert_non_null (vhdx_parent_locator_get (&loc, "volume_path"));
  assert_non_null (vhdx_parent_locator_get (&loc, "absolute_win32_path"));
  vhdx_parent_locator_free (&loc);
}

/* A file that Hyper-V made is what our create encoders make from its
 * decoded values (the bytes that its tables hold past their entry counts
 * aside: stale entries, which no reader looks at).
 */
static void
check_hyperv_encoding (const uint8_t *img, const struct vhdx_regions *r1,
                       const struct vhdx_metadata_table *t,
                       const struct vhdx_metadata *md, const char *name)
{
  static uint8_t table[VHDX_REGION_TABLE_SIZE];
  static uint8_t mdr[MiB];
  const uint8_t *orig = img + r1->metadata.offset;
  struct vhdx_regions r = *r1;
  struct vhdx_parent_locator loc = { 0 };
  size_t items = 40;

  vhdx_region_table_encode (&r, table);
  assert_memory_equal (table, img + VHDX_REGION_TABLE1_OFFSET,
                       VHDX_REGION_TABLE_SIZE);

  if (md->has_parent) {
    assert_int_equal (vhdx_parent_locator_decode (orig
                                                  + t->parent_locator.offset,
                                                  t->parent_locator.length,
                                                  name, &loc), 0);
    items += t->parent_locator.length;
  }
  assert_int_equal (vhdx_metadata_encode (md, &loc, mdr, sizeof mdr), 0);
  vhdx_parent_locator_free (&loc);
  assert_memory_equal (mdr, orig, 32 + t->entry_count * 32);
  assert_memory_equal (mdr + 64 * KiB, orig + 64 * KiB, items);
}

static void
check_sample (const char *sdir, const struct manifest_row *row)
{
  char path[4200];
  uint64_t fsize = unpack_sample (sdir, row->file, path, sizeof path);
  size_t len;
  uint8_t *img = slurp (path, &len);
  const char *name = row->file;
  struct vhdx_file_id id;
  struct vhdx_header h1, h2, h;
  struct vhdx_regions r1, r2;
  struct vhdx_metadata_table t;
  struct vhdx_metadata md;
  struct vhdx_bat_geometry g;
  uint64_t present = 0;
  int which;

  assert_true (len >= VHDX_HEADER_AREA_SIZE);
  assert_int_equal (vhdx_file_id_decode (img, name, &id), 0);
  if (strcmp (row->expect, "parent-only") != 0)
    assert_string_equal (id.creator, row->creator);
  assert_int_equal (vhdx_header_decode (img + VHDX_HEADER1_OFFSET, name, 1,
                                        &h1), 0);
  assert_int_equal (vhdx_header_decode (img + VHDX_HEADER2_OFFSET, name, 2,
                                        &h2), 0);
  assert_int_equal (vhdx_pick_header (img + VHDX_HEADER1_OFFSET,
                                      img + VHDX_HEADER2_OFFSET, name, &h,
                                      &which), 0);
  assert_int_equal (which,
                    h2.sequence_number > h1.sequence_number ? 2 : 1);
  assert_int_equal (vhdx_region_table_decode (img
                                              + VHDX_REGION_TABLE1_OFFSET,
                                              name, 1, &r1), 0);
  assert_int_equal (vhdx_region_table_decode (img
                                              + VHDX_REGION_TABLE2_OFFSET,
                                              name, 2, &r2), 0);
  assert_regions_equal (&r1, &r2);
  assert_true (r1.metadata.offset + r1.metadata.length <= len);
  assert_true (r1.bat.offset + r1.bat.length <= len);

  assert_int_equal (decode_region (img + r1.metadata.offset,
                                   r1.metadata.length, &t, &md), 0);
  assert_string_equal (vhdx_disk_kind_name (vhdx_disk_kind (&md)),
                       row->kind);
  assert_int_equal (md.virtual_size, row->virtual_size);
  assert_int_equal (md.block_size, expected_block_size (row));
  assert_int_equal (md.logical_sector_size, row->logical_sector_size);
  if (md.has_parent)
    check_locator (img, &t, r1.metadata.offset, name);
  assert_int_equal (vhdx_layout_check (&h, &r1, &md, fsize, name, &g), 0);

  /* Every BAT entry is valid for this disk in this file. */
  for (uint64_t i = 0; i < g.total_entries; i++) {
    struct vhdx_bat_entry e;

    vhdx_bat_entry_decode (img + r1.bat.offset + i * 8, &e);
    if (vhdx_bat_entry_check (&e, i, &g, vhdx_disk_kind (&md), md.block_size,
                              fsize, name) < 0)
      fail_msg ("%s", vhd_last_error ());
    present += e.state == VHDX_PAYLOAD_FULLY_PRESENT ||
      e.state == VHDX_PAYLOAD_PARTIALLY_PRESENT;
  }
  print_message ("  %s: %s, %" PRIu64 " bytes, header %d (seq %" PRIu64
                 "), chunk ratio %" PRIu64 ", %" PRIu64 " BAT entries, %"
                 PRIu64 " with data\n", name, row->kind, md.virtual_size,
                 which, h.sequence_number, g.chunk_ratio, g.total_entries,
                 present);

  /* Our encoders write back what the writer wrote, byte for byte: the
   * header (whose reserved bytes every writer leaves zero) and, for
   * Hyper-V's files, the region table and the metadata region.
   */
  {
    uint8_t again[VHDX_HEADER_SIZE];

    vhdx_header_encode (&h1, again);
    assert_memory_equal (again, img + VHDX_HEADER1_OFFSET,
                         VHDX_HEADER_SIZE);
  }
  if (strncmp (id.creator, "Microsoft Windows", 17) == 0)
    check_hyperv_encoding (img, &r1, &t, &md, name);
  free (img);
  remove (path);
}

static void
test_samples (void **state)
{
  const char *sdir = vhdx_samples_dir ();
  struct manifest_row rows[64];
  struct stat st;
  size_t n;

  if (stat (sdir, &st) == -1 || !S_ISDIR (st.st_mode)) {
    print_message ("skipped: no VHDX samples at %s (set VHDKIT_SAMPLES)\n",
                   sdir);
    skip ();
  }
  n = read_manifest (sdir, rows, 64);
  assert_true (n >= 12);
  for (size_t i = 0; i < n; i++)
    check_sample (sdir, &rows[i]);

  /* The two odd ones the codec must cope with. */
  {
    char path[4200];
    size_t len;
    uint8_t *img;
    struct vhdx_header h;
    int which;

    unpack_sample (sdir, "qemu-test-disk2vhd.vhdx.xz", path, sizeof path);
    img = slurp (path, &len);
    /* Both headers are sequence 1: header 1 is the one. */
    assert_int_equal (vhdx_pick_header (img + VHDX_HEADER1_OFFSET,
                                        img + VHDX_HEADER2_OFFSET, "d2v",
                                        &h, &which), 0);
    assert_int_equal (h.sequence_number, 1);
    assert_int_equal (which, 1);
    free (img);
    remove (path);
  }
}

static int
setup (void **state)
{
  return make_scratch ("test-vhdx-format");
}

static int
teardown (void **state)
{
  return remove_scratch ();
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_guid_mixed_endian),
    cmocka_unit_test (test_file_id_round_trip),
    cmocka_unit_test (test_header_round_trip),
    cmocka_unit_test (test_header_rejections),
    cmocka_unit_test (test_pick_header),
    cmocka_unit_test (test_region_table_round_trip),
    cmocka_unit_test (test_region_table_rejections),
    cmocka_unit_test (test_metadata_round_trip),
    cmocka_unit_test (test_differencing_metadata_round_trip),
    cmocka_unit_test (test_metadata_table_rejections),
    cmocka_unit_test (test_metadata_item_rejections),
    cmocka_unit_test (test_parent_locator_rejections),
    cmocka_unit_test (test_bat_geometry),
    cmocka_unit_test (test_bat_geometry_rejections),
    cmocka_unit_test (test_bat_entry_round_trip),
    cmocka_unit_test (test_bat_entry_check),
    cmocka_unit_test (test_layout),
    cmocka_unit_test (test_create_layout_decodes),
    cmocka_unit_test (test_samples),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
