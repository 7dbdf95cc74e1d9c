/* vhdkit: the VHDX header section: little-endian codec, GUIDs, the file
 * type identifier, the two headers and the choice between them, the
 * region table, and the check of the whole file's layout.  Pure: no I/O.
 * The metadata region is metadata.c's, the BAT bat.c's.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "format.h"
#include "crc32c.h"
#include "core/guid.h"
#include "core/utf16.h"

/* Byte offsets of the header's fields. */
#define H_SIGNATURE        0
#define H_CHECKSUM         4
#define H_SEQUENCE         8
#define H_FILE_WRITE_GUID  16
#define H_DATA_WRITE_GUID  32
#define H_LOG_GUID         48
#define H_LOG_VERSION      64
#define H_VERSION          66
#define H_LOG_LENGTH       68
#define H_LOG_OFFSET       72

/* Region table header and entries. */
#define R_SIGNATURE        0
#define R_CHECKSUM         4
#define R_ENTRY_COUNT      8
#define R_ENTRIES          16
#define R_ENTRY_SIZE       32
#define RE_GUID            0
#define RE_OFFSET          16
#define RE_LENGTH          24
#define RE_FLAGS           28
#define RE_REQUIRED        UINT32_C (1)

static const char file_id_signature[8] = { 'v','h','d','x','f','i','l','e' };
static const char header_signature[4] = { 'h','e','a','d' };
static const char region_signature[4] = { 'r','e','g','i' };

const struct vhd_guid vhdx_region_bat = { {
  0x2d, 0xc2, 0x77, 0x66, 0xf6, 0x23, 0x42, 0x00,
  0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 } };
const struct vhd_guid vhdx_region_metadata = { {
  0x8b, 0x7c, 0xa2, 0x06, 0x47, 0x90, 0x4b, 0x9a,
  0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e } };
const struct vhd_guid vhdx_item_file_parameters = { {
  0xca, 0xa1, 0x67, 0x37, 0xfa, 0x36, 0x4d, 0x43,
  0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b } };
const struct vhd_guid vhdx_item_virtual_disk_size = { {
  0x2f, 0xa5, 0x42, 0x24, 0xcd, 0x1b, 0x48, 0x76,
  0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 } };
const struct vhd_guid vhdx_item_virtual_disk_id = { {
  0xbe, 0xca, 0x12, 0xab, 0xb2, 0xe6, 0x45, 0x23,
  0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46 } };
const struct vhd_guid vhdx_item_logical_sector_size = { {
  0x81, 0x41, 0xbf, 0x1d, 0xa9, 0x6f, 0x47, 0x09,
  0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f } };
const struct vhd_guid vhdx_item_physical_sector_size = { {
  0xcd, 0xa3, 0x48, 0xc7, 0x44, 0x5d, 0x44, 0x71,
  0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56 } };
const struct vhd_guid vhdx_item_parent_locator = { {
  0xa8, 0xd3, 0x5f, 0x2d, 0xb3, 0x0b, 0x45, 0x4d,
  0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c } };
const struct vhd_guid vhdx_locator_type_vhdx = { {
  0xb0, 0x4a, 0xef, 0xb7, 0xd1, 0x9e, 0x4a, 0x81,
  0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13 } };

uint16_t
vhdx_get_le16 (const uint8_t *p)
{
  return (uint16_t) (p[0] | (unsigned) p[1] << 8);
}

uint32_t
vhdx_get_le32 (const uint8_t *p)
{
  return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
    (uint32_t) p[3] << 24;
}

uint64_t
vhdx_get_le64 (const uint8_t *p)
{
  return vhdx_get_le32 (p) | (uint64_t) vhdx_get_le32 (p + 4) << 32;
}

void
vhdx_put_le16 (uint8_t *p, uint16_t v)
{
  p[0] = (uint8_t) v;
  p[1] = (uint8_t) (v >> 8);
}

void
vhdx_put_le32 (uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t) v;
  p[1] = (uint8_t) (v >> 8);
  p[2] = (uint8_t) (v >> 16);
  p[3] = (uint8_t) (v >> 24);
}

void
vhdx_put_le64 (uint8_t *p, uint64_t v)
{
  vhdx_put_le32 (p, (uint32_t) v);
  vhdx_put_le32 (p + 4, (uint32_t) (v >> 32));
}

/* Windows' GUID struct written field by field on a little-endian machine:
 * the first three fields (4, 2 and 2 bytes) are byte-swapped relative to
 * the printed order, the last 8 bytes are as printed.  The permutation is
 * its own inverse, so it serves both ways.
 */
static void
guid_swap (const uint8_t in[16], uint8_t out[16])
{
  static const uint8_t from[16] = {
    3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15
  };

  for (size_t i = 0; i < 16; i++)
    out[i] = in[from[i]];
}

void
vhdx_guid_decode (const uint8_t p[16], struct vhd_guid *guid)
{
  guid_swap (p, guid->bytes);
}

void
vhdx_guid_encode (const struct vhd_guid *guid, uint8_t p[16])
{
  guid_swap (guid->bytes, p);
}

bool
vhdx_guid_equal (const struct vhd_guid *a, const struct vhd_guid *b)
{
  return memcmp (a->bytes, b->bytes, sizeof a->bytes) == 0;
}

/* The CRC-32C of size bytes at buf with the 4 bytes at checksum_at as
 * zeros ([MS-VHDX] 2.1: every checksum is computed so).
 */
static uint32_t
crc_with_hole (const uint8_t *buf, size_t size, size_t checksum_at)
{
  static const uint8_t zero[4];
  uint32_t crc;

  crc = vhdx_crc32c_update (0, buf, checksum_at);
  crc = vhdx_crc32c_update (crc, zero, sizeof zero);
  return vhdx_crc32c_update (crc, buf + checksum_at + 4,
                             size - checksum_at - 4);
}

/* ---- File type identifier ---- */

int
vhdx_file_id_decode (const uint8_t buf[VHDX_FILE_ID_SIZE],
                     const char *file, struct vhdx_file_id *id)
{
  char text[64];
  int r;

  if (memcmp (buf, file_id_signature, 8) != 0)
    return vhd_error (EINVAL, "%s: file type identifier: signature \"%s\""
                      " is not \"vhdxfile\"", file,
                      vhd_printable_bytes (buf, 8, text, sizeof text));

  r = vhd_utf16_to_utf8 (buf + 8, VHDX_CREATOR_UNITS * 2, false,
                         id->creator, sizeof id->creator);
  if (r < 0) {
    /* Diagnostic text only: a bad creator must not make the disk
     * unreadable, so it is dropped (and its message with it).
     */
    id->creator[0] = '\0';
    vhd_clear_error ();
  }
  return 0;
}

int
vhdx_file_id_encode (const struct vhdx_file_id *id,
                     uint8_t buf[VHDX_FILE_ID_SIZE])
{
  int r;

  memset (buf, 0, VHDX_FILE_ID_SIZE);
  memcpy (buf, file_id_signature, 8);
  /* 512 bytes of room: 255 units and a NUL at most, so the field always
   * ends with a NUL (the reserved bytes after it are zero anyway).
   */
  r = vhd_utf8_to_utf16 (id->creator, false, buf + 8,
                         VHDX_CREATOR_UNITS * 2);
  return r < 0 ? r : 0;
}

/* ---- Headers ---- */

/* Signature and checksum: what makes a header valid ([MS-VHDX] 2.2.2). */
static int
header_integrity (const uint8_t buf[VHDX_HEADER_SIZE], const char *file,
                  int which)
{
  uint32_t stored, computed;
  char text[64];

  if (memcmp (buf + H_SIGNATURE, header_signature, 4) != 0)
    return vhd_error (EINVAL, "%s: header %d: signature \"%s\" is not"
                      " \"head\"", file, which,
                      vhd_printable_bytes (buf + H_SIGNATURE, 4, text,
                                      sizeof text));
  stored = vhdx_get_le32 (buf + H_CHECKSUM);
  computed = crc_with_hole (buf, VHDX_HEADER_SIZE, H_CHECKSUM);
  if (stored != computed)
    return vhd_error (EINVAL, "%s: header %d: checksum 0x%08" PRIx32
                      " does not match the CRC-32C of its 4 KiB"
                      " (0x%08" PRIx32 ")", file, which, stored, computed);
  return 0;
}

static int
check_header_fields (const struct vhdx_header *h, const char *file,
                     int which)
{
  if (h->version != VHDX_HEADER_VERSION)
    return vhd_error (EINVAL, "%s: header %d: version %" PRIu16
                      " is not 1", file, which, h->version);
  if (h->log_version != VHDX_LOG_VERSION)
    return vhd_error (EINVAL, "%s: header %d: log version %" PRIu16
                      " is not 0", file, which, h->log_version);
  if (h->log_length % VHDX_ALIGNMENT != 0)
    return vhd_error (EINVAL, "%s: header %d: log length %" PRIu32
                      " is not a multiple of 1 MiB", file, which,
                      h->log_length);
  if (h->log_offset % VHDX_ALIGNMENT != 0 ||
      h->log_offset < VHDX_HEADER_AREA_SIZE)
    return vhd_error (EINVAL, "%s: header %d: log offset %" PRIu64
                      " is not a multiple of 1 MiB at or above 1 MiB",
                      file, which, h->log_offset);
  if (h->log_offset > UINT64_MAX - h->log_length)
    return vhd_error (EINVAL, "%s: header %d: log offset %" PRIu64
                      " + length %" PRIu32 " overflows", file, which,
                      h->log_offset, h->log_length);
  if (h->log_length == 0 && !vhd_guid_is_zero (&h->log_guid))
    return vhd_error (EINVAL, "%s: header %d: log GUID set but the log"
                      " length is 0", file, which);
  return 0;
}

static void
header_fields (const uint8_t buf[VHDX_HEADER_SIZE], struct vhdx_header *h)
{
  h->checksum = vhdx_get_le32 (buf + H_CHECKSUM);
  h->sequence_number = vhdx_get_le64 (buf + H_SEQUENCE);
  vhdx_guid_decode (buf + H_FILE_WRITE_GUID, &h->file_write_guid);
  vhdx_guid_decode (buf + H_DATA_WRITE_GUID, &h->data_write_guid);
  vhdx_guid_decode (buf + H_LOG_GUID, &h->log_guid);
  h->log_version = vhdx_get_le16 (buf + H_LOG_VERSION);
  h->version = vhdx_get_le16 (buf + H_VERSION);
  h->log_length = vhdx_get_le32 (buf + H_LOG_LENGTH);
  h->log_offset = vhdx_get_le64 (buf + H_LOG_OFFSET);
}

int
vhdx_header_decode (const uint8_t buf[VHDX_HEADER_SIZE], const char *file,
                    int which, struct vhdx_header *header)
{
  struct vhdx_header h;
  int r;

  r = header_integrity (buf, file, which);
  if (r < 0)
    return r;
  header_fields (buf, &h);
  r = check_header_fields (&h, file, which);
  if (r < 0)
    return r;
  *header = h;
  return 0;
}

void
vhdx_header_encode (struct vhdx_header *h, uint8_t buf[VHDX_HEADER_SIZE])
{
  memset (buf, 0, VHDX_HEADER_SIZE);
  memcpy (buf + H_SIGNATURE, header_signature, 4);
  vhdx_put_le64 (buf + H_SEQUENCE, h->sequence_number);
  vhdx_guid_encode (&h->file_write_guid, buf + H_FILE_WRITE_GUID);
  vhdx_guid_encode (&h->data_write_guid, buf + H_DATA_WRITE_GUID);
  vhdx_guid_encode (&h->log_guid, buf + H_LOG_GUID);
  vhdx_put_le16 (buf + H_LOG_VERSION, h->log_version);
  vhdx_put_le16 (buf + H_VERSION, h->version);
  vhdx_put_le32 (buf + H_LOG_LENGTH, h->log_length);
  vhdx_put_le64 (buf + H_LOG_OFFSET, h->log_offset);
  h->checksum = crc_with_hole (buf, VHDX_HEADER_SIZE, H_CHECKSUM);
  vhdx_put_le32 (buf + H_CHECKSUM, h->checksum);
}

int
vhdx_pick_header (const uint8_t buf1[VHDX_HEADER_SIZE],
                  const uint8_t buf2[VHDX_HEADER_SIZE],
                  const char *file, struct vhdx_header *header, int *which)
{
  char reason1[512];
  bool valid1, valid2;
  int pick;

  valid1 = header_integrity (buf1, file, 1) == 0;
  if (!valid1)
    snprintf (reason1, sizeof reason1, "%s", vhd_last_error ());
  valid2 = header_integrity (buf2, file, 2) == 0;
  if (!valid1 && !valid2)
    return vhd_error (EINVAL, "%s: no valid header: %s; %s", file,
                      reason1, vhd_last_error ());
  vhd_clear_error ();

  if (valid1 && valid2) {
    /* The spec defines "current" only by a strictly greater sequence
     * number, so two valid headers with equal numbers (Disk2vhd writes
     * both as 1) leave it open; header 1 is chosen so that every reader
     * of this library sees the same one.
     */
    pick = vhdx_get_le64 (buf2 + H_SEQUENCE) > vhdx_get_le64 (buf1 + H_SEQUENCE)
      ? 2 : 1;
  }
  else
    pick = valid1 ? 1 : 2;

  *which = pick;
  return vhdx_header_decode (pick == 1 ? buf1 : buf2, file, pick, header);
}

/* ---- Region table ---- */

/* Entry i against the entries before it ([MS-VHDX] 2.2.3.2): GUIDs
 * unique, objects not overlapping.  Quadratic in at most 2047 entries of a
 * table read once per open.  Offsets and lengths are already checked not
 * to wrap.
 */
static int
check_region_against_earlier (const uint8_t *buf, uint32_t i,
                              const char *file, int which)
{
  const uint8_t *e = buf + R_ENTRIES + (size_t) i * R_ENTRY_SIZE;
  uint64_t off = vhdx_get_le64 (e + RE_OFFSET);
  uint32_t len = vhdx_get_le32 (e + RE_LENGTH);
  struct vhd_guid guid;
  char g[37];

  vhdx_guid_decode (e + RE_GUID, &guid);
  vhd_guid_to_string (&guid, g);
  for (uint32_t j = 0; j < i; j++) {
    const uint8_t *f = buf + R_ENTRIES + (size_t) j * R_ENTRY_SIZE;
    uint64_t foff = vhdx_get_le64 (f + RE_OFFSET);
    uint32_t flen = vhdx_get_le32 (f + RE_LENGTH);

    if (memcmp (e + RE_GUID, f + RE_GUID, 16) == 0)
      return vhd_error (EINVAL, "%s: region table %d: entries %" PRIu32
                        " and %" PRIu32 " are both region %s", file, which,
                        j, i, g);
    if (len != 0 && flen != 0 && off < foff + flen && foff < off + len)
      return vhd_error (EINVAL, "%s: region table %d: entry %" PRIu32
                        " (%s, at %" PRIu64 ", %" PRIu32 " bytes) overlaps"
                        " entry %" PRIu32 " (at %" PRIu64 ", %" PRIu32
                        " bytes)", file, which, i, g, off, len, j, foff,
                        flen);
  }
  return 0;
}

static int
check_region_entry (const struct vhd_guid *guid, uint64_t offset,
                    uint32_t length, uint32_t index, const char *file,
                    int which)
{
  char g[37];
  /* The spec asks only for a multiple of 1 MiB; an empty BAT or metadata
   * region cannot hold what it must, an empty unknown one is harmless.
   */
  bool known = vhdx_guid_equal (guid, &vhdx_region_bat) ||
    vhdx_guid_equal (guid, &vhdx_region_metadata);

  vhd_guid_to_string (guid, g);
  if (offset % VHDX_ALIGNMENT != 0 || offset < VHDX_HEADER_AREA_SIZE)
    return vhd_error (EINVAL, "%s: region table %d: entry %" PRIu32
                      " (%s): file offset %" PRIu64 " is not a multiple"
                      " of 1 MiB at or above 1 MiB", file, which, index, g,
                      offset);
  if ((known && length == 0) || length % VHDX_ALIGNMENT != 0)
    return vhd_error (EINVAL, "%s: region table %d: entry %" PRIu32
                      " (%s): length %" PRIu32 " is not a%s"
                      " multiple of 1 MiB", file, which, index, g, length,
                      known ? " non-zero" : "");
  if (offset > UINT64_MAX - length)
    return vhd_error (EINVAL, "%s: region table %d: entry %" PRIu32
                      " (%s): offset %" PRIu64 " + length %" PRIu32
                      " overflows", file, which, index, g, offset, length);
  return 0;
}

static void
take_region (struct vhdx_region *dst, bool *seen, uint64_t offset,
             uint32_t length, bool required)
{
  *seen = true;
  dst->offset = offset;
  dst->length = length;
  dst->required = required;
}

int
vhdx_region_table_decode (const uint8_t buf[VHDX_REGION_TABLE_SIZE],
                          const char *file, int which,
                          struct vhdx_regions *regions)
{
  struct vhdx_regions out = { 0 };
  bool have_bat = false, have_metadata = false;
  uint32_t computed;
  char text[64];
  int r;

  if (memcmp (buf + R_SIGNATURE, region_signature, 4) != 0)
    return vhd_error (EINVAL, "%s: region table %d: signature \"%s\" is"
                      " not \"regi\"", file, which,
                      vhd_printable_bytes (buf + R_SIGNATURE, 4, text,
                                      sizeof text));
  out.checksum = vhdx_get_le32 (buf + R_CHECKSUM);
  computed = crc_with_hole (buf, VHDX_REGION_TABLE_SIZE, R_CHECKSUM);
  if (out.checksum != computed)
    return vhd_error (EINVAL, "%s: region table %d: checksum 0x%08" PRIx32
                      " does not match the CRC-32C of its 64 KiB"
                      " (0x%08" PRIx32 ")", file, which, out.checksum,
                      computed);
  out.entry_count = vhdx_get_le32 (buf + R_ENTRY_COUNT);
  if (out.entry_count > VHDX_REGION_MAX_ENTRIES)
    return vhd_error (EINVAL, "%s: region table %d: entry count %" PRIu32
                      " is more than 2047", file, which, out.entry_count);

  for (uint32_t i = 0; i < out.entry_count; i++) {
    const uint8_t *e = buf + R_ENTRIES + (size_t) i * R_ENTRY_SIZE;
    struct vhd_guid guid;
    uint64_t offset = vhdx_get_le64 (e + RE_OFFSET);
    uint32_t length = vhdx_get_le32 (e + RE_LENGTH);
    bool required = vhdx_get_le32 (e + RE_FLAGS) & RE_REQUIRED;
    char g[37];

    vhdx_guid_decode (e + RE_GUID, &guid);
    r = check_region_entry (&guid, offset, length, i, file, which);
    if (r == 0)
      r = check_region_against_earlier (buf, i, file, which);
    if (r < 0)
      return r;
    /* Each GUID is unique (checked above), so neither is seen twice. */
    if (vhdx_guid_equal (&guid, &vhdx_region_bat))
      take_region (&out.bat, &have_bat, offset, length, required);
    else if (vhdx_guid_equal (&guid, &vhdx_region_metadata))
      take_region (&out.metadata, &have_metadata, offset, length, required);
    else if (required) {
      vhd_guid_to_string (&guid, g);
      return vhd_error (ENOTSUP, "%s: region table %d: entry %" PRIu32
                        ": unknown region %s is marked required", file,
                        which, i, g);
    }
  }
  if (!have_bat || !have_metadata)
    return vhd_error (EINVAL, "%s: region table %d: no %s region", file,
                      which, !have_bat ? "BAT" : "metadata");
  *regions = out;
  return 0;
}

static void
put_region_entry (uint8_t *e, const struct vhd_guid *guid,
                  const struct vhdx_region *region)
{
  vhdx_guid_encode (guid, e + RE_GUID);
  vhdx_put_le64 (e + RE_OFFSET, region->offset);
  vhdx_put_le32 (e + RE_LENGTH, region->length);
  vhdx_put_le32 (e + RE_FLAGS, region->required ? RE_REQUIRED : 0);
}

void
vhdx_region_table_encode (struct vhdx_regions *regions,
                          uint8_t buf[VHDX_REGION_TABLE_SIZE])
{
  memset (buf, 0, VHDX_REGION_TABLE_SIZE);
  memcpy (buf + R_SIGNATURE, region_signature, 4);
  regions->entry_count = 2;
  vhdx_put_le32 (buf + R_ENTRY_COUNT, regions->entry_count);
  put_region_entry (buf + R_ENTRIES, &vhdx_region_bat, &regions->bat);
  put_region_entry (buf + R_ENTRIES + R_ENTRY_SIZE, &vhdx_region_metadata,
                    &regions->metadata);
  regions->checksum = crc_with_hole (buf, VHDX_REGION_TABLE_SIZE,
                                     R_CHECKSUM);
  vhdx_put_le32 (buf + R_CHECKSUM, regions->checksum);
}

/* ---- The whole layout ---- */

struct span {
  const char *name;
  uint64_t start;
  uint64_t length;
};

int
vhdx_layout_check (const struct vhdx_header *header,
                   const struct vhdx_regions *regions,
                   const struct vhdx_metadata *md,
                   uint64_t file_size, const char *file,
                   struct vhdx_bat_geometry *geom)
{
  struct span spans[4] = {
    { "header area", 0, VHDX_HEADER_AREA_SIZE },
    { "log", header->log_offset, header->log_length },
    { "BAT region", regions->bat.offset, regions->bat.length },
    { "metadata region", regions->metadata.offset, regions->metadata.length },
  };
  size_t n = sizeof spans / sizeof spans[0];

  for (size_t i = 0; i < n; i++) {
    /* An empty log takes no room (its offset means nothing then). */
    if (spans[i].length == 0)
      continue;
    if (spans[i].start > file_size ||
        spans[i].length > file_size - spans[i].start)
      return vhd_error (EINVAL, "%s: %s at %" PRIu64 ", %" PRIu64
                        " bytes, goes past the end of the file (%" PRIu64
                        " bytes)", file, spans[i].name, spans[i].start,
                        spans[i].length, file_size);
    for (size_t j = 0; j < i; j++) {
      if (spans[j].length == 0)
        continue;
      /* Both ends are inside the file, so neither sum wraps. */
      if (spans[i].start < spans[j].start + spans[j].length &&
          spans[j].start < spans[i].start + spans[i].length)
        return vhd_error (EINVAL, "%s: %s at %" PRIu64 ", %" PRIu64
                          " bytes, overlaps the %s at %" PRIu64 ", %"
                          PRIu64 " bytes", file, spans[i].name,
                          spans[i].start, spans[i].length, spans[j].name,
                          spans[j].start, spans[j].length);
    }
  }
  return vhdx_bat_geometry (md->virtual_size, md->block_size,
                            md->logical_sector_size, md->has_parent,
                            regions->bat.length, file, geom);
}
