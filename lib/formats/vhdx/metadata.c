/* vhdkit: the VHDX metadata region: the metadata table, the known items
 * (file parameters, sizes, disk id; the parent locator item is
 * locator.c's) and the layout of a new region for create.  Pure: no I/O.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "format.h"

/* Table header and entries ([MS-VHDX] 2.6.1). */
#define M_SIGNATURE        0
#define M_ENTRY_COUNT      10
#define M_ENTRIES          32
#define M_ENTRY_SIZE       32
#define ME_ITEM_ID         0
#define ME_OFFSET          16
#define ME_LENGTH          20
#define ME_FLAGS           24
#define ME_IS_USER         UINT32_C (1)
#define ME_IS_VIRTUAL_DISK UINT32_C (2)
#define ME_IS_REQUIRED     UINT32_C (4)

/* Item sizes and bits ([MS-VHDX] 2.6.2). */
#define FP_SIZE                  8
#define FP_LEAVE_BLOCK_ALLOCATED UINT32_C (1)
#define FP_HAS_PARENT            UINT32_C (2)

static const char metadata_signature[8] = {
  'm','e','t','a','d','a','t','a'
};

/* The known items: a name for messages and a place in the table struct. */
struct known_item {
  const struct vhd_guid *guid;
  const char *name;
  size_t field;                     /* offsetof in vhdx_metadata_table */
};

/* In the order that Hyper-V writes its table (and vhdx_metadata_table_encode
 * does); the enum names each one's index.
 */
enum {
  K_FILE_PARAMETERS, K_VIRTUAL_DISK_SIZE, K_LOGICAL_SECTOR_SIZE,
  K_PHYSICAL_SECTOR_SIZE, K_VIRTUAL_DISK_ID, K_PARENT_LOCATOR,
};
static const struct known_item known_items[] = {
  [K_FILE_PARAMETERS] = { &vhdx_item_file_parameters, "file parameters",
    offsetof (struct vhdx_metadata_table, file_parameters) },
  [K_VIRTUAL_DISK_SIZE] = { &vhdx_item_virtual_disk_size,
    "virtual disk size",
    offsetof (struct vhdx_metadata_table, virtual_disk_size) },
  [K_LOGICAL_SECTOR_SIZE] = { &vhdx_item_logical_sector_size,
    "logical sector size",
    offsetof (struct vhdx_metadata_table, logical_sector_size) },
  [K_PHYSICAL_SECTOR_SIZE] = { &vhdx_item_physical_sector_size,
    "physical sector size",
    offsetof (struct vhdx_metadata_table, physical_sector_size) },
  [K_VIRTUAL_DISK_ID] = { &vhdx_item_virtual_disk_id, "virtual disk id",
    offsetof (struct vhdx_metadata_table, virtual_disk_id) },
  [K_PARENT_LOCATOR] = { &vhdx_item_parent_locator, "parent locator",
    offsetof (struct vhdx_metadata_table, parent_locator) },
};
#define N_KNOWN (sizeof known_items / sizeof known_items[0])

static struct vhdx_metadata_item *
item_of (struct vhdx_metadata_table *t, size_t k)
{
  return (struct vhdx_metadata_item *) ((char *) t + known_items[k].field);
}

static const struct vhdx_metadata_item *
citem_of (const struct vhdx_metadata_table *t, size_t k)
{
  return (const struct vhdx_metadata_item *)
    ((const char *) t + known_items[k].field);
}

/* ---- Metadata table ---- */

static int
check_metadata_entry (const uint8_t *e, uint32_t i, uint32_t region_length,
                      const char *file)
{
  uint32_t offset = vhdx_get_le32 (e + ME_OFFSET);
  uint32_t length = vhdx_get_le32 (e + ME_LENGTH);
  struct vhd_guid guid;
  char g[37];

  vhdx_guid_decode (e + ME_ITEM_ID, &guid);
  vhd_guid_to_string (&guid, g);
  if (length > VHDX_METADATA_ITEM_MAX)
    return vhd_error (EINVAL, "%s: metadata table: entry %" PRIu32
                      " (%s): length %" PRIu32 " is more than 1 MiB",
                      file, i, g, length);
  if (length == 0) {
    if (offset != 0)
      return vhd_error (EINVAL, "%s: metadata table: entry %" PRIu32
                        " (%s): offset %" PRIu32 " with length 0 (must be"
                        " 0)", file, i, g, offset);
    return 0;
  }
  if (offset < VHDX_METADATA_TABLE_SIZE)
    return vhd_error (EINVAL, "%s: metadata table: entry %" PRIu32
                      " (%s): offset %" PRIu32 " is inside the table's"
                      " 64 KiB", file, i, g, offset);
  /* Both are 32 bits: their sum in 64 cannot wrap. */
  if ((uint64_t) offset + length > region_length)
    return vhd_error (EINVAL, "%s: metadata table: entry %" PRIu32
                      " (%s): item at %" PRIu32 ", %" PRIu32 " bytes,"
                      " leaves the metadata region (%" PRIu32 " bytes)",
                      file, i, g, offset, length, region_length);
  return 0;
}

/* Entry i against the entries before it: no (ItemId, IsUser) pair twice,
 * no overlap.  Quadratic, but in at most 2047 entries of a 64 KiB table
 * that is read once per open.
 */
static int
check_against_earlier (const uint8_t *buf, uint32_t i, const char *file)
{
  const uint8_t *e = buf + M_ENTRIES + (size_t) i * M_ENTRY_SIZE;
  uint32_t off = vhdx_get_le32 (e + ME_OFFSET);
  uint32_t len = vhdx_get_le32 (e + ME_LENGTH);
  bool user = vhdx_get_le32 (e + ME_FLAGS) & ME_IS_USER;
  struct vhd_guid guid;
  char g[37];

  vhdx_guid_decode (e + ME_ITEM_ID, &guid);
  vhd_guid_to_string (&guid, g);
  for (uint32_t j = 0; j < i; j++) {
    const uint8_t *f = buf + M_ENTRIES + (size_t) j * M_ENTRY_SIZE;
    uint32_t foff = vhdx_get_le32 (f + ME_OFFSET);
    uint32_t flen = vhdx_get_le32 (f + ME_LENGTH);
    bool fuser = vhdx_get_le32 (f + ME_FLAGS) & ME_IS_USER;

    if (user == fuser && memcmp (e + ME_ITEM_ID, f + ME_ITEM_ID, 16) == 0)
      return vhd_error (EINVAL, "%s: metadata table: entries %" PRIu32
                        " and %" PRIu32 " are both item %s", file, j, i, g);
    if (len != 0 && flen != 0 &&
        (uint64_t) off < (uint64_t) foff + flen &&
        (uint64_t) foff < (uint64_t) off + len)
      return vhd_error (EINVAL, "%s: metadata table: entry %" PRIu32
                        " (%s, at %" PRIu32 ", %" PRIu32 " bytes) overlaps"
                        " entry %" PRIu32 " (at %" PRIu32 ", %" PRIu32
                        " bytes)", file, i, g, off, len, j, foff, flen);
  }
  return 0;
}

int
vhdx_metadata_table_decode (const uint8_t buf[VHDX_METADATA_TABLE_SIZE],
                            uint32_t region_length, const char *file,
                            struct vhdx_metadata_table *table)
{
  struct vhdx_metadata_table t = { 0 };
  uint32_t user_entries = 0;
  char text[64];
  int r;

  if (memcmp (buf + M_SIGNATURE, metadata_signature, 8) != 0)
    return vhd_error (EINVAL, "%s: metadata table: signature \"%s\" is"
                      " not \"metadata\"", file,
                      vhd_printable_bytes (buf + M_SIGNATURE, 8, text,
                                      sizeof text));
  t.entry_count = vhdx_get_le16 (buf + M_ENTRY_COUNT);
  if (t.entry_count > VHDX_METADATA_MAX_ENTRIES)
    return vhd_error (EINVAL, "%s: metadata table: entry count %" PRIu16
                      " is more than 2047", file, t.entry_count);

  for (uint32_t i = 0; i < t.entry_count; i++) {
    const uint8_t *e = buf + M_ENTRIES + (size_t) i * M_ENTRY_SIZE;
    uint32_t flags = vhdx_get_le32 (e + ME_FLAGS);
    struct vhd_guid guid;
    size_t k;

    r = check_metadata_entry (e, i, region_length, file);
    if (r == 0)
      r = check_against_earlier (buf, i, file);
    if (r < 0)
      return r;
    if ((flags & ME_IS_USER) && ++user_entries > 1024)
      return vhd_error (EINVAL, "%s: metadata table: more than 1024 user"
                        " items", file);

    vhdx_guid_decode (e + ME_ITEM_ID, &guid);
    for (k = 0; k < N_KNOWN; k++)
      if (vhdx_guid_equal (&guid, known_items[k].guid))
        break;
    /* The known items are system metadata: a user item that happens to
     * carry one of their GUIDs is somebody else's and is skipped.
     */
    if (k < N_KNOWN && !(flags & ME_IS_USER)) {
      struct vhdx_metadata_item *it = item_of (&t, k);

      it->present = true;
      it->offset = vhdx_get_le32 (e + ME_OFFSET);
      it->length = vhdx_get_le32 (e + ME_LENGTH);
      it->is_user = false;
      it->is_virtual_disk = flags & ME_IS_VIRTUAL_DISK;
      it->is_required = flags & ME_IS_REQUIRED;
    }
    else if (flags & ME_IS_REQUIRED) {
      char g[37];

      vhd_guid_to_string (&guid, g);
      return vhd_error (ENOTSUP, "%s: metadata table: entry %" PRIu32
                        ": unknown %s item %s is marked required", file, i,
                        flags & ME_IS_USER ? "user" : "system", g);
    }
  }
  *table = t;
  return 0;
}

void
vhdx_metadata_table_encode (struct vhdx_metadata_table *table,
                            uint8_t buf[VHDX_METADATA_TABLE_SIZE])
{
  uint16_t n = 0;

  memset (buf, 0, VHDX_METADATA_TABLE_SIZE);
  memcpy (buf + M_SIGNATURE, metadata_signature, 8);
  for (size_t k = 0; k < N_KNOWN; k++) {
    const struct vhdx_metadata_item *it = citem_of (table, k);
    uint8_t *e = buf + M_ENTRIES + (size_t) n * M_ENTRY_SIZE;
    uint32_t flags = 0;

    if (!it->present)
      continue;
    if (it->is_user)
      flags |= ME_IS_USER;
    if (it->is_virtual_disk)
      flags |= ME_IS_VIRTUAL_DISK;
    if (it->is_required)
      flags |= ME_IS_REQUIRED;
    vhdx_guid_encode (known_items[k].guid, e + ME_ITEM_ID);
    vhdx_put_le32 (e + ME_OFFSET, it->offset);
    vhdx_put_le32 (e + ME_LENGTH, it->length);
    vhdx_put_le32 (e + ME_FLAGS, flags);
    n++;
  }
  table->entry_count = n;
  vhdx_put_le16 (buf + M_ENTRY_COUNT, n);
}

/* ---- Items ---- */

/* The bytes of known item k, checked to be there and of `size` bytes. */
static int
item_bytes (const uint8_t *region, size_t region_len,
            const struct vhdx_metadata_table *t, size_t k, uint32_t size,
            const char *file, const uint8_t **out)
{
  const struct vhdx_metadata_item *it = citem_of (t, k);

  if (!it->present)
    return vhd_error (EINVAL, "%s: metadata: no %s item", file,
                      known_items[k].name);
  if (it->length != size)
    return vhd_error (EINVAL, "%s: metadata: %s item: length %" PRIu32
                      " is not %" PRIu32, file, known_items[k].name,
                      it->length, size);
  if (it->offset > region_len || size > region_len - it->offset)
    return vhd_error (EINVAL, "%s: metadata: %s item at %" PRIu32
                      " is outside the %zu bytes read of the region",
                      file, known_items[k].name, it->offset, region_len);
  *out = region + it->offset;
  return 0;
}

static int
check_sector_size (uint32_t v, const char *what, const char *file)
{
  if (v != 512 && v != 4096)
    return vhd_error (EINVAL, "%s: metadata: %s %" PRIu32 " is neither 512"
                      " nor 4096", file, what, v);
  return 0;
}

static int
check_metadata_values (const struct vhdx_metadata *md, uint32_t reserved,
                       const char *file)
{
  int r;

  if (reserved != 0)
    return vhd_error (EINVAL, "%s: metadata: file parameters: reserved"
                      " bits 0x%08" PRIx32 " are set", file, reserved);
  if (md->block_size < VHDX_MIN_BLOCK_SIZE ||
      md->block_size > VHDX_MAX_BLOCK_SIZE ||
      (md->block_size & (md->block_size - 1)) != 0)
    return vhd_error (EINVAL, "%s: metadata: file parameters: block size %"
                      PRIu32 " is not a power of two from 1 MiB to 256 MiB",
                      file, md->block_size);
  r = check_sector_size (md->logical_sector_size, "logical sector size",
                         file);
  if (r == 0)
    r = check_sector_size (md->physical_sector_size,
                           "physical sector size", file);
  if (r < 0)
    return r;
  /* A disk of 0 bytes has no last block for the BAT's formulas. */
  if (md->virtual_size == 0 || md->virtual_size > VHDX_MAX_VIRTUAL_SIZE)
    return vhd_error (EINVAL, "%s: metadata: virtual disk size %" PRIu64
                      " is not from 1 byte to 64 TiB", file,
                      md->virtual_size);
  if (md->virtual_size % md->logical_sector_size != 0)
    return vhd_error (EINVAL, "%s: metadata: virtual disk size %" PRIu64
                      " is not a multiple of the logical sector size %"
                      PRIu32, file, md->virtual_size,
                      md->logical_sector_size);
  return 0;
}

int
vhdx_metadata_decode (const uint8_t *region, size_t region_len,
                      const struct vhdx_metadata_table *table,
                      const char *file, struct vhdx_metadata *md)
{
  struct vhdx_metadata out = { 0 };
  const uint8_t *p;
  uint32_t flags;
  int r;

  r = item_bytes (region, region_len, table, K_FILE_PARAMETERS, FP_SIZE,
                  file, &p);
  if (r < 0)
    return r;
  out.block_size = vhdx_get_le32 (p);
  flags = vhdx_get_le32 (p + 4);
  out.leave_block_allocated = flags & FP_LEAVE_BLOCK_ALLOCATED;
  out.has_parent = flags & FP_HAS_PARENT;
  r = item_bytes (region, region_len, table, K_VIRTUAL_DISK_SIZE, 8, file,
                  &p);
  if (r < 0)
    return r;
  out.virtual_size = vhdx_get_le64 (p);
  r = item_bytes (region, region_len, table, K_VIRTUAL_DISK_ID, 16, file,
                  &p);
  if (r < 0)
    return r;
  vhdx_guid_decode (p, &out.virtual_disk_id);
  r = item_bytes (region, region_len, table, K_LOGICAL_SECTOR_SIZE, 4, file,
                  &p);
  if (r < 0)
    return r;
  out.logical_sector_size = vhdx_get_le32 (p);
  r = item_bytes (region, region_len, table, K_PHYSICAL_SECTOR_SIZE, 4,
                  file, &p);
  if (r < 0)
    return r;
  out.physical_sector_size = vhdx_get_le32 (p);

  r = check_metadata_values (&out, flags & ~(FP_LEAVE_BLOCK_ALLOCATED |
                                             FP_HAS_PARENT), file);
  if (r < 0)
    return r;
  if (out.has_parent && !table->parent_locator.present)
    return vhd_error (EINVAL, "%s: metadata: HasParent is set but there is"
                      " no parent locator item", file);
  *md = out;
  return 0;
}

enum vhdx_disk_kind
vhdx_disk_kind (const struct vhdx_metadata *md)
{
  /* [MS-VHDX] 2.6.2.1: LeaveBlockAllocated is ignored with a parent. */
  if (md->has_parent)
    return VHDX_KIND_DIFFERENCING;
  return md->leave_block_allocated ? VHDX_KIND_FIXED : VHDX_KIND_DYNAMIC;
}

const char *
vhdx_disk_kind_name (enum vhdx_disk_kind kind)
{
  switch (kind) {
  case VHDX_KIND_FIXED: return "fixed";
  case VHDX_KIND_DYNAMIC: return "dynamic";
  case VHDX_KIND_DIFFERENCING: return "differencing";
  }
  return "unknown";
}

/* ---- A new metadata region ---- */

static void
place_item (struct vhdx_metadata_item *it, uint32_t *at, uint32_t length,
            bool is_virtual_disk)
{
  it->present = true;
  it->offset = *at;
  it->length = length;
  it->is_user = false;
  it->is_virtual_disk = is_virtual_disk;
  it->is_required = true;
  *at += length;
}

int
vhdx_metadata_encode (const struct vhdx_metadata *md,
                      const struct vhdx_parent_locator *loc,
                      uint8_t *region, size_t region_len)
{
  struct vhdx_metadata_table t = { 0 };
  uint32_t at = VHDX_METADATA_TABLE_SIZE;
  uint32_t flags = 0;
  int r;

  /* Items fixed in size: 8 + 8 + 4 + 4 + 16 bytes after the table. */
  if (region_len < VHDX_METADATA_TABLE_SIZE + 40)
    return -ENOSPC;
  if (md->has_parent && loc == NULL)
    return -EINVAL;
  memset (region, 0, region_len);

  /* The flags Hyper-V gives each item: the file parameters describe the
   * file (not copied to a child), the rest the virtual disk.
   */
  place_item (&t.file_parameters, &at, FP_SIZE, false);
  place_item (&t.virtual_disk_size, &at, 8, true);
  place_item (&t.logical_sector_size, &at, 4, true);
  place_item (&t.physical_sector_size, &at, 4, true);
  place_item (&t.virtual_disk_id, &at, 16, true);

  if (md->leave_block_allocated)
    flags |= FP_LEAVE_BLOCK_ALLOCATED;
  if (md->has_parent)
    flags |= FP_HAS_PARENT;
  vhdx_put_le32 (region + t.file_parameters.offset, md->block_size);
  vhdx_put_le32 (region + t.file_parameters.offset + 4, flags);
  vhdx_put_le64 (region + t.virtual_disk_size.offset, md->virtual_size);
  vhdx_put_le32 (region + t.logical_sector_size.offset,
                 md->logical_sector_size);
  vhdx_put_le32 (region + t.physical_sector_size.offset,
                 md->physical_sector_size);
  vhdx_guid_encode (&md->virtual_disk_id,
                    region + t.virtual_disk_id.offset);

  if (md->has_parent) {
    size_t len;
    size_t room = region_len - at;

    if (room > VHDX_METADATA_ITEM_MAX)
      room = VHDX_METADATA_ITEM_MAX;
    r = vhdx_parent_locator_encode (loc, region + at, room, &len);
    if (r < 0)
      return r;
    place_item (&t.parent_locator, &at, (uint32_t) len, false);
  }
  vhdx_metadata_table_encode (&t, region);
  return 0;
}
