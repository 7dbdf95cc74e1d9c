/* vhdkit: the VHD on-disk structures: big-endian codec, checksums, footer
 * and dynamic header encode/decode with validation, CHS geometry,
 * timestamps, GUIDs, bitmap and BAT sizes, and the UTF-16 text of parent
 * names and locators.
 *
 * Everything here is pure (no file I/O): decoders validate what a single
 * structure can say about itself, and open.c checks the relations between
 * structures and the file.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/text.h"
#include "format.h"

/* Byte offsets of the footer's fields. */
#define F_COOKIE            0
#define F_FEATURES          8
#define F_FORMAT_VERSION    12
#define F_DATA_OFFSET       16
#define F_TIMESTAMP         24
#define F_CREATOR_APP       28
#define F_CREATOR_VERSION   32
#define F_CREATOR_HOST_OS   36
#define F_ORIGINAL_SIZE     40
#define F_CURRENT_SIZE      48
#define F_CYLINDERS         56
#define F_HEADS             58
#define F_SECTORS           59
#define F_DISK_TYPE         60
#define F_CHECKSUM          64
#define F_UNIQUE_ID         68
#define F_SAVED_STATE       84

/* Byte offsets of the dynamic header's fields. */
#define H_COOKIE            0
#define H_DATA_OFFSET       8
#define H_TABLE_OFFSET      16
#define H_HEADER_VERSION    24
#define H_MAX_TABLE_ENTRIES 28
#define H_BLOCK_SIZE        32
#define H_CHECKSUM          36
#define H_PARENT_UNIQUE_ID  40
#define H_PARENT_TIMESTAMP  56
#define H_RESERVED          60
#define H_PARENT_NAME       64
#define H_LOCATORS          576
#define H_LOCATOR_SIZE      24

static const char footer_cookie[8] = { 'c','o','n','e','c','t','i','x' };
static const char header_cookie[8] = { 'c','x','s','p','a','r','s','e' };

uint16_t
vhd_get_be16 (const uint8_t *p)
{
  return (uint16_t) ((unsigned) p[0] << 8 | p[1]);
}

uint32_t
vhd_get_be32 (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 |
    (uint32_t) p[2] << 8 | p[3];
}

uint64_t
vhd_get_be64 (const uint8_t *p)
{
  return (uint64_t) vhd_get_be32 (p) << 32 | vhd_get_be32 (p + 4);
}

void
vhd_put_be16 (uint8_t *p, uint16_t v)
{
  p[0] = (uint8_t) (v >> 8);
  p[1] = (uint8_t) v;
}

void
vhd_put_be32 (uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t) (v >> 24);
  p[1] = (uint8_t) (v >> 16);
  p[2] = (uint8_t) (v >> 8);
  p[3] = (uint8_t) v;
}

void
vhd_put_be64 (uint8_t *p, uint64_t v)
{
  vhd_put_be32 (p, (uint32_t) (v >> 32));
  vhd_put_be32 (p + 4, (uint32_t) v);
}

uint32_t
vhd_checksum (const uint8_t *buf, size_t len, size_t checksum_offset)
{
  uint32_t sum = 0;

  for (size_t i = 0; i < len; i++)
    if (i < checksum_offset || i >= checksum_offset + 4)
      sum += buf[i];
  return ~sum;
}

static bool
is_power_of_two (uint32_t v)
{
  return v != 0 && (v & (v - 1)) == 0;
}

/* The checks that need the footer's disk type, split out of
 * vhd_footer_decode() so that it fits on a screen.
 */
static int
check_footer_data_offset (const struct vhd_footer *f,
                          const char *file, uint64_t where)
{
  if (f->disk_type == VHD_TYPE_FIXED) {
    /* A fixed disk has no dynamic header, so the field means nothing; the
     * spec says all ones.  0 is accepted as well because it is the only
     * other value that a writer could plausibly mean as "none", and a
     * reader never follows it.
     */
    if (f->data_offset != VHD_FIXED_DATA_OFFSET && f->data_offset != 0)
      return vhd_error (EINVAL, "%s: footer at offset %" PRIu64
                        ": data_offset 0x%" PRIx64 " of a fixed disk is"
                        " neither 0xffffffffffffffff nor 0 (fixed disks"
                        " have no dynamic header)", file, where,
                        f->data_offset);
    return 0;
  }

  if (f->data_offset == VHD_FIXED_DATA_OFFSET)
    return vhd_error (EINVAL, "%s: footer at offset %" PRIu64
                      ": data_offset 0xffffffffffffffff (no dynamic header)"
                      " on a %s disk", file, where,
                      f->disk_type == VHD_TYPE_DYNAMIC
                      ? "dynamic" : "differencing");
  /* Offset 0 holds the footer copy, so the header cannot start there. */
  if (f->data_offset < VHD_FOOTER_SIZE ||
      f->data_offset % VHD_SECTOR_SIZE != 0)
    return vhd_error (EINVAL, "%s: footer at offset %" PRIu64
                      ": data_offset %" PRIu64 " (the dynamic header) is"
                      " not a non-zero multiple of 512", file, where,
                      f->data_offset);
  return 0;
}

/* The cookie and the checksum of a footer or dynamic header (what), which
 * are checked before any other field: a checksum mismatch means that the
 * other fields cannot be trusted, whatever values they hold.  Stores the
 * checksum as read in *checksum.
 */
static int
check_cookie_and_checksum (const uint8_t *buf, size_t size,
                           size_t cookie_at, const char cookie[8],
                           size_t checksum_at, const char *what,
                           const char *file, uint64_t where,
                           uint32_t *checksum)
{
  uint32_t computed;
  char text[64];

  if (memcmp (buf + cookie_at, cookie, 8) != 0)
    return vhd_error (EINVAL, "%s: %s at offset %" PRIu64
                      ": cookie \"%s\" is not \"%.8s\"", file, what, where,
                      vhd_printable_bytes (buf + cookie_at, 8, text, sizeof text),
                      cookie);
  *checksum = vhd_get_be32 (buf + checksum_at);
  computed = vhd_checksum (buf, size, checksum_at);
  if (*checksum != computed)
    return vhd_error (EINVAL, "%s: %s at offset %" PRIu64
                      ": checksum 0x%08" PRIx32 " does not match the"
                      " computed 0x%08" PRIx32, file, what, where,
                      *checksum, computed);
  return 0;
}

int
vhd_footer_decode (const uint8_t buf[VHD_FOOTER_SIZE],
                   struct vhd_footer *f, const char *file, uint64_t where)
{
  int r;

  memset (f, 0, sizeof *f);
  r = check_cookie_and_checksum (buf, VHD_FOOTER_SIZE, F_COOKIE,
                                 footer_cookie, F_CHECKSUM, "footer", file,
                                 where, &f->checksum);
  if (r < 0)
    return r;

  memcpy (f->cookie, buf + F_COOKIE, sizeof f->cookie);
  f->features = vhd_get_be32 (buf + F_FEATURES);
  f->format_version = vhd_get_be32 (buf + F_FORMAT_VERSION);
  f->data_offset = vhd_get_be64 (buf + F_DATA_OFFSET);
  f->timestamp = vhd_get_be32 (buf + F_TIMESTAMP);
  memcpy (f->creator_app, buf + F_CREATOR_APP, sizeof f->creator_app);
  f->creator_version = vhd_get_be32 (buf + F_CREATOR_VERSION);
  f->creator_host_os = vhd_get_be32 (buf + F_CREATOR_HOST_OS);
  f->original_size = vhd_get_be64 (buf + F_ORIGINAL_SIZE);
  f->current_size = vhd_get_be64 (buf + F_CURRENT_SIZE);
  f->cylinders = vhd_get_be16 (buf + F_CYLINDERS);
  f->heads = buf[F_HEADS];
  f->sectors_per_track = buf[F_SECTORS];
  f->disk_type = vhd_get_be32 (buf + F_DISK_TYPE);
  memcpy (f->unique_id.bytes, buf + F_UNIQUE_ID, sizeof f->unique_id.bytes);
  f->saved_state = buf[F_SAVED_STATE];

  /* The minor version has never changed; a different major version would
   * mean a layout that we do not know.  Unknown feature bits are allowed
   * (the spec defines only "temporary" and the always-set reserved bit).
   */
  if (f->format_version >> 16 != VHD_FORMAT_VERSION >> 16)
    return vhd_error (EINVAL, "%s: footer at offset %" PRIu64
                      ": format_version 0x%08" PRIx32 " is not 1.x"
                      " (0x0001xxxx)", file, where, f->format_version);
  if (f->disk_type != VHD_TYPE_FIXED && f->disk_type != VHD_TYPE_DYNAMIC &&
      f->disk_type != VHD_TYPE_DIFFERENCING)
    return vhd_error (EINVAL, "%s: footer at offset %" PRIu64
                      ": disk_type %" PRIu32 " is not 2 (fixed),"
                      " 3 (dynamic) or 4 (differencing)", file, where,
                      f->disk_type);
  if (f->current_size == 0 || f->current_size % VHD_SECTOR_SIZE != 0 ||
      f->current_size > VHD_MAX_DISK_SIZE)
    return vhd_error (EINVAL, "%s: footer at offset %" PRIu64
                      ": current_size %" PRIu64 " is not a non-zero"
                      " multiple of 512 of at most %" PRIu64
                      " (2040 GiB)", file, where, f->current_size,
                      VHD_MAX_DISK_SIZE);
  return check_footer_data_offset (f, file, where);
}

void
vhd_footer_encode (struct vhd_footer *f, uint8_t buf[VHD_FOOTER_SIZE])
{
  /* The cookie is a constant, not data: writing it here means that a
   * footer built from a zeroed struct still identifies itself.
   */
  memcpy (f->cookie, footer_cookie, sizeof f->cookie);

  memset (buf, 0, VHD_FOOTER_SIZE);
  memcpy (buf + F_COOKIE, f->cookie, sizeof f->cookie);
  vhd_put_be32 (buf + F_FEATURES, f->features);
  vhd_put_be32 (buf + F_FORMAT_VERSION, f->format_version);
  vhd_put_be64 (buf + F_DATA_OFFSET, f->data_offset);
  vhd_put_be32 (buf + F_TIMESTAMP, f->timestamp);
  memcpy (buf + F_CREATOR_APP, f->creator_app, sizeof f->creator_app);
  vhd_put_be32 (buf + F_CREATOR_VERSION, f->creator_version);
  vhd_put_be32 (buf + F_CREATOR_HOST_OS, f->creator_host_os);
  vhd_put_be64 (buf + F_ORIGINAL_SIZE, f->original_size);
  vhd_put_be64 (buf + F_CURRENT_SIZE, f->current_size);
  vhd_put_be16 (buf + F_CYLINDERS, f->cylinders);
  buf[F_HEADS] = f->heads;
  buf[F_SECTORS] = f->sectors_per_track;
  vhd_put_be32 (buf + F_DISK_TYPE, f->disk_type);
  memcpy (buf + F_UNIQUE_ID, f->unique_id.bytes, sizeof f->unique_id.bytes);
  buf[F_SAVED_STATE] = f->saved_state;

  f->checksum = vhd_checksum (buf, VHD_FOOTER_SIZE, F_CHECKSUM);
  vhd_put_be32 (buf + F_CHECKSUM, f->checksum);
}

int
vhd_dyn_header_decode (const uint8_t buf[VHD_DYN_HEADER_SIZE],
                       struct vhd_dyn_header *h,
                       const char *file, uint64_t where)
{
  int r;

  memset (h, 0, sizeof *h);
  r = check_cookie_and_checksum (buf, VHD_DYN_HEADER_SIZE, H_COOKIE,
                                 header_cookie, H_CHECKSUM, "dynamic header",
                                 file, where, &h->checksum);
  if (r < 0)
    return r;

  memcpy (h->cookie, buf + H_COOKIE, sizeof h->cookie);
  /* The spec says all ones and no reader uses it: kept, never checked. */
  h->data_offset = vhd_get_be64 (buf + H_DATA_OFFSET);
  h->table_offset = vhd_get_be64 (buf + H_TABLE_OFFSET);
  h->header_version = vhd_get_be32 (buf + H_HEADER_VERSION);
  h->max_table_entries = vhd_get_be32 (buf + H_MAX_TABLE_ENTRIES);
  h->block_size = vhd_get_be32 (buf + H_BLOCK_SIZE);
  memcpy (h->parent_unique_id.bytes, buf + H_PARENT_UNIQUE_ID,
          sizeof h->parent_unique_id.bytes);
  h->parent_timestamp = vhd_get_be32 (buf + H_PARENT_TIMESTAMP);
  h->reserved = vhd_get_be32 (buf + H_RESERVED);
  memcpy (h->parent_unicode_name, buf + H_PARENT_NAME,
          sizeof h->parent_unicode_name);
  /* Locators are taken as stored: which of them matter, and what their
   * sizes mean, depends on the disk type and the writer (chain.c).
   */
  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++) {
    const uint8_t *p = buf + H_LOCATORS + i * H_LOCATOR_SIZE;
    struct vhd_parent_locator *l = &h->locators[i];

    l->platform_code = vhd_get_be32 (p);
    l->platform_data_space = vhd_get_be32 (p + 4);
    l->platform_data_length = vhd_get_be32 (p + 8);
    l->reserved = vhd_get_be32 (p + 12);
    l->platform_data_offset = vhd_get_be64 (p + 16);
  }

  if (h->header_version >> 16 != VHD_HEADER_VERSION >> 16)
    return vhd_error (EINVAL, "%s: dynamic header at offset %" PRIu64
                      ": header_version 0x%08" PRIx32 " is not 1.x"
                      " (0x0001xxxx)", file, where, h->header_version);
  /* A block must hold whole sectors and whole bytes of bitmap; past the
   * upper bound the per-block bitmap and allocation get unreasonably big,
   * which is what a hostile image would aim for.
   */
  if (!is_power_of_two (h->block_size) ||
      h->block_size < VHD_MIN_BLOCK_SIZE || h->block_size > VHD_MAX_BLOCK_SIZE)
    return vhd_error (EINVAL, "%s: dynamic header at offset %" PRIu64
                      ": block_size %" PRIu32 " is not a power of two"
                      " from %" PRIu32 " to %" PRIu32, file, where,
                      h->block_size, VHD_MIN_BLOCK_SIZE, VHD_MAX_BLOCK_SIZE);
  if (h->max_table_entries == 0)
    return vhd_error (EINVAL, "%s: dynamic header at offset %" PRIu64
                      ": max_table_entries is 0 (the disk has no blocks)",
                      file, where);
  if (h->table_offset % VHD_SECTOR_SIZE != 0)
    return vhd_error (EINVAL, "%s: dynamic header at offset %" PRIu64
                      ": table_offset %" PRIu64 " (the BAT) is not a"
                      " multiple of 512", file, where, h->table_offset);
  return 0;
}

void
vhd_dyn_header_encode (struct vhd_dyn_header *h,
                       uint8_t buf[VHD_DYN_HEADER_SIZE])
{
  memcpy (h->cookie, header_cookie, sizeof h->cookie);

  memset (buf, 0, VHD_DYN_HEADER_SIZE);
  memcpy (buf + H_COOKIE, h->cookie, sizeof h->cookie);
  vhd_put_be64 (buf + H_DATA_OFFSET, h->data_offset);
  vhd_put_be64 (buf + H_TABLE_OFFSET, h->table_offset);
  vhd_put_be32 (buf + H_HEADER_VERSION, h->header_version);
  vhd_put_be32 (buf + H_MAX_TABLE_ENTRIES, h->max_table_entries);
  vhd_put_be32 (buf + H_BLOCK_SIZE, h->block_size);
  memcpy (buf + H_PARENT_UNIQUE_ID, h->parent_unique_id.bytes,
          sizeof h->parent_unique_id.bytes);
  vhd_put_be32 (buf + H_PARENT_TIMESTAMP, h->parent_timestamp);
  vhd_put_be32 (buf + H_RESERVED, h->reserved);
  memcpy (buf + H_PARENT_NAME, h->parent_unicode_name,
          sizeof h->parent_unicode_name);
  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++) {
    uint8_t *p = buf + H_LOCATORS + i * H_LOCATOR_SIZE;
    const struct vhd_parent_locator *l = &h->locators[i];

    vhd_put_be32 (p, l->platform_code);
    vhd_put_be32 (p + 4, l->platform_data_space);
    vhd_put_be32 (p + 8, l->platform_data_length);
    vhd_put_be32 (p + 12, l->reserved);
    vhd_put_be64 (p + 16, l->platform_data_offset);
  }

  h->checksum = vhd_checksum (buf, VHD_DYN_HEADER_SIZE, H_CHECKSUM);
  vhd_put_be32 (buf + H_CHECKSUM, h->checksum);
}

/* The specification's algorithm, step for step, because Windows follows it
 * exactly and a footer that we write must carry the geometry that Windows
 * would write for the same size.
 */
void
vhd_chs_geometry (uint64_t size_bytes, uint16_t *cylinders,
                  uint8_t *heads, uint8_t *sectors_per_track)
{
  const uint64_t max_sectors = UINT64_C (65535) * 16 * 255;
  uint64_t total = size_bytes / VHD_SECTOR_SIZE;
  uint64_t spt, h, cth;

  if (total > max_sectors)
    total = max_sectors;

  if (total >= UINT64_C (65535) * 16 * 63) {
    spt = 255;
    h = 16;
    cth = total / spt;
  }
  else {
    spt = 17;
    cth = total / spt;
    h = (cth + 1023) / 1024;
    if (h < 4)
      h = 4;
    if (cth >= h * 1024 || h > 16) {
      spt = 31;
      h = 16;
      cth = total / spt;
    }
    if (cth >= h * 1024) {
      spt = 63;
      h = 16;
      cth = total / spt;
    }
  }

  *cylinders = (uint16_t) (cth / h);
  *heads = (uint8_t) h;
  *sectors_per_track = (uint8_t) spt;
}

uint32_t
vhd_timestamp_from_unix (time_t t)
{
  /* Before 2000 cannot be stored: clamp to the format's epoch rather
   * than wrap to a date far in the future.
   */
  if ((int64_t) t <= VHD_EPOCH_OFFSET)
    return 0;
  return (uint32_t) ((int64_t) t - VHD_EPOCH_OFFSET);
}

time_t
vhd_timestamp_to_unix (uint32_t vhd_time)
{
  return (time_t) ((int64_t) vhd_time + VHD_EPOCH_OFFSET);
}

uint32_t
vhd_timestamp_now (void)
{
  return vhd_timestamp_from_unix (time (NULL));
}

uint32_t
vhd_bitmap_size (uint32_t block_size)
{
  uint64_t sectors = ((uint64_t) block_size + VHD_SECTOR_SIZE - 1)
    / VHD_SECTOR_SIZE;
  uint64_t bytes = (sectors + 7) / 8;

  return (uint32_t) ((bytes + VHD_SECTOR_SIZE - 1)
                     / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE);
}

uint64_t
vhd_bat_size (uint32_t max_table_entries)
{
  uint64_t bytes = (uint64_t) max_table_entries * 4;

  return (bytes + VHD_SECTOR_SIZE - 1) / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE;
}
