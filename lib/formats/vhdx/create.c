/* vhdkit: new VHDX images, laid out as Hyper-V lays them out (the
 * samples show it): the header section in the first MiB, the log at
 * 1 MiB (1 MiB, empty), the metadata region at 2 MiB (1 MiB), the BAT at
 * 3 MiB (whole MiB), then the blocks on 1 MiB boundaries.
 *
 * A dynamic disk is that and nothing more: every BAT entry NOT_PRESENT,
 * the BAT region never written (it reads as zeros, a sparse file's
 * holes), so even a 64 TiB disk takes a few MiB of disk.  A fixed disk
 * has every payload block FULLY_PRESENT, in order, its space allocated
 * (fallocate: no holes, unless VHD_CREATE_FLAG_SPARSE_FILE asks for
 * them).
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/file.h"
#include "core/cleanup.h"
#include "core/driver.h"
#include "core/guid.h"
#include "core/winpath.h"
#include "formats/vhdx/vhdx.h"
#include "vhdkit-version.h"

#define MiB VHDX_MiB
#define LOG_OFFSET (1 * MiB)
#define LOG_LENGTH (1 * MiB)
#define METADATA_OFFSET (2 * MiB)
#define METADATA_LENGTH (1 * MiB)
#define BAT_OFFSET (3 * MiB)

/* Windows' defaults (New-VHD, CreateVirtualDisk with 0): 32 MiB blocks,
 * and 2 MiB for a differencing disk (every Hyper-V checkpoint has them).
 */
#define DEFAULT_BLOCK_SIZE (UINT32_C (32) << 20)
#define DEFAULT_DIFF_BLOCK_SIZE (UINT32_C (2) << 20)

static int
write_all (int fd, const char *path, const void *buf, size_t len,
           uint64_t offset, const char *what)
{
  return vhd_file_pwrite_exact (fd, buf, len, offset, path, what);
}

static int
write_header_section (int fd, const char *path)
{
  CLEANUP_FREE uint8_t *buf = calloc (1, VHDX_FILE_ID_SIZE);
  struct vhdx_file_id id;
  struct vhdx_header h = {
    .version = VHDX_HEADER_VERSION,
    .log_version = VHDX_LOG_VERSION,
    .log_length = LOG_LENGTH,
    .log_offset = LOG_OFFSET,
  };
  int r;

  if (buf == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  memset (&id, 0, sizeof id);
  snprintf (id.creator, sizeof id.creator, "vhdkit %s",
            VHDKIT_VERSION_STRING);
  r = vhdx_file_id_encode (&id, buf);
  if (r == 0)
    r = write_all (fd, path, buf, VHDX_FILE_ID_SIZE, 0,
                   "file type identifier");
  if (r < 0)
    return r;

  r = vhd_guid_generate (&h.file_write_guid);
  if (r == 0)
    r = vhd_guid_generate (&h.data_write_guid);
  if (r < 0)
    return r;
  /* Both headers valid, the second current (as Hyper-V leaves them). */
  for (int i = 0; i < 2 && r == 0; i++) {
    memset (buf, 0, VHDX_HEADER_SIZE);
    h.sequence_number = (uint64_t) i + 1;
    vhdx_header_encode (&h, buf);
    r = write_all (fd, path, buf, VHDX_HEADER_SIZE,
                   i == 0 ? VHDX_HEADER1_OFFSET : VHDX_HEADER2_OFFSET,
                   i == 0 ? "header 1" : "header 2");
  }
  return r;
}

static int
write_regions (int fd, const char *path, uint32_t bat_length)
{
  CLEANUP_FREE uint8_t *buf = calloc (1, VHDX_REGION_TABLE_SIZE);
  struct vhdx_regions regions = {
    .bat = { .offset = BAT_OFFSET, .length = bat_length, .required = true },
    .metadata = { .offset = METADATA_OFFSET, .length = METADATA_LENGTH,
                  .required = true },
  };
  int r;

  if (buf == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  vhdx_region_table_encode (&regions, buf);
  r = write_all (fd, path, buf, VHDX_REGION_TABLE_SIZE,
                 VHDX_REGION_TABLE1_OFFSET, "region table 1");
  if (r == 0)
    r = write_all (fd, path, buf, VHDX_REGION_TABLE_SIZE,
                   VHDX_REGION_TABLE2_OFFSET, "region table 2");
  return r;
}

static int
write_metadata (int fd, const char *path, const struct vhdx_metadata *md,
                const struct vhdx_parent_locator *loc)
{
  CLEANUP_FREE uint8_t *region = malloc (METADATA_LENGTH);
  int r;

  if (region == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  r = vhdx_metadata_encode (md, loc, region, METADATA_LENGTH);
  if (r < 0)
    return vhd_error (-r, "%s: laying out the metadata region", path);
  return write_all (fd, path, region, METADATA_LENGTH, METADATA_OFFSET,
                    "metadata region");
}

/* A fixed disk's BAT: payload block i at data + i * block size. */
static int
write_fixed_bat (int fd, const char *path,
                 const struct vhdx_bat_geometry *g, uint32_t block_size,
                 uint64_t data)
{
  CLEANUP_FREE uint8_t *bat = calloc (1, g->bat_bytes);

  if (bat == NULL)
    return vhd_error (ENOMEM, "%s: out of memory for the BAT", path);
  for (uint64_t b = 0; b < g->payload_blocks; b++) {
    struct vhdx_bat_entry e = {
      .state = VHDX_PAYLOAD_FULLY_PRESENT,
      .offset_mb = (data + b * block_size) / MiB,
    };
    vhdx_bat_entry_encode (&e, bat + vhdx_bat_payload_index (g, b)
                                     * VHDX_BAT_ENTRY_SIZE);
  }
  return write_all (fd, path, bat, g->bat_bytes, BAT_OFFSET, "BAT");
}

static void
cleanup_locator (struct vhdx_parent_locator *loc)
{
  vhdx_parent_locator_free (loc);
}

/* A differencing disk's metadata from its parent (a VHDX, as the core
 * found and opened it): its size and logical sector size, its physical
 * sector size unless the caller gave one, and the locator, whose
 * parent_linkage is the parent's DataWriteGuid.  The locator is what
 * Hyper-V writes, except for the paths: relative_path from the child's
 * folder (".\name" when they share one), absolute_win32_path the
 * parent's resolved Linux path as it is (the VHD driver's W2ku does the
 * same; chain.c tries an absolute path that is not a drive path as a
 * path here, and Windows finds the pair by relative_path), and no
 * volume_path, which names a Windows volume GUID that a Linux file does
 * not have.  parent_linkage2 is written nil, as Hyper-V writes it.
 */
static int
describe_parent (const struct vhd_create_parent *parent,
                 const char *child_dir, uint32_t sector_size,
                 uint32_t physical_sector_size, struct vhdx_metadata *md,
                 struct vhdx_parent_locator *loc, const char *path)
{
  const struct vhdx_image *p;
  char relative[4096 * 3];
  struct vhdx_parent_link link = { 0 };
  CLEANUP_FREE uint8_t *item = NULL;
  size_t len;
  int r;

  if (parent->ops != &vhd_format_vhdx)
    return vhd_error (EINVAL, "%s: parent %s is a %s image: the parent of a"
                      " differencing VHDX must be a VHDX (a chain is one"
                      " format)", path, parent->path, parent->ops->name);
  p = vhdx_image_of (parent->disk);
  if (sector_size && sector_size != p->md.logical_sector_size)
    return vhd_error (EINVAL, "%s: logical sector size %" PRIu32 " differs"
                      " from the parent's (%" PRIu32 " bytes, %s): a"
                      " differencing disk has its parent's", path,
                      sector_size, p->md.logical_sector_size, parent->path);
  md->has_parent = true;
  md->leave_block_allocated = false;
  md->virtual_size = parent->size;
  md->logical_sector_size = p->md.logical_sector_size;
  md->physical_sector_size = physical_sector_size ? physical_sector_size
                                                  : p->md.physical_sector_size;

  if (vhd_relative_windows_path (child_dir, parent->real_path, relative,
                                 sizeof relative) < 0)
    return vhd_error (ENAMETOOLONG, "parent %s: the relative path from %s"
                      " is too long", parent->path, child_dir);
  link.parent_linkage = p->header.data_write_guid;
  link.has_parent_linkage2 = true;      /* nil */
  link.relative_path = relative;
  link.absolute_win32_path = (char *) parent->real_path;
  item = malloc (VHDX_METADATA_ITEM_MAX);
  if (item == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  r = vhdx_parent_link_encode (&link, item, VHDX_METADATA_ITEM_MAX, &len);
  if (r == 0)
    r = vhdx_parent_locator_decode (item, len, path, loc);
  return r;
}

int
vhdx_create_image (int fd, const char *path, const char *child_dir,
                   const struct vhd_guid *unique_id, uint64_t size,
                   uint32_t block_size, uint32_t sector_size,
                   uint32_t physical_sector_size, uint32_t flags,
                   const struct vhd_create_parent *parent)
{
  bool fixed = flags & VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION;
  struct vhdx_metadata md = {
    .block_size = block_size ? block_size : DEFAULT_BLOCK_SIZE,
    .leave_block_allocated = fixed,
    .virtual_size = size,
    .virtual_disk_id = *unique_id,
    .logical_sector_size = sector_size ? sector_size : 512,
    .physical_sector_size = physical_sector_size ? physical_sector_size
                                                 : 4096,
  };
  __attribute__ ((cleanup (cleanup_locator)))
    struct vhdx_parent_locator loc = { .pairs = NULL };
  struct vhdx_bat_geometry g;
  uint64_t bat_length, data, end;
  int r;

  if (parent) {
    if (block_size == 0)
      md.block_size = DEFAULT_DIFF_BLOCK_SIZE;
    r = describe_parent (parent, child_dir, sector_size,
                         physical_sector_size, &md, &loc, path);
    if (r < 0)
      return r;
    size = md.virtual_size;
  }
  r = vhdx_bat_geometry (size, md.block_size, md.logical_sector_size,
                         md.has_parent, UINT32_MAX & ~(uint32_t) (MiB - 1),
                         path, &g);
  if (r < 0)
    return r;
  bat_length = (g.bat_bytes + MiB - 1) & ~(MiB - 1);
  if (bat_length > UINT32_MAX - MiB)
    return vhd_error (EINVAL, "%s: a BAT of %" PRIu64 " bytes is too large",
                      path, g.bat_bytes);
  data = BAT_OFFSET + bat_length;
  end = fixed ? data + g.payload_blocks * md.block_size : data;

  r = write_header_section (fd, path);
  if (r == 0)
    r = write_regions (fd, path, (uint32_t) bat_length);
  if (r == 0)
    r = write_metadata (fd, path, &md, parent ? &loc : NULL);
  if (r == 0 && fixed)
    r = write_fixed_bat (fd, path, &g, md.block_size, data);
  if (r < 0)
    return r;
  if (ftruncate (fd, (off_t) end) == -1)
    return vhd_error (errno, "%s: extending the file to %" PRIu64 " bytes:"
                      " %m", path, end);
  if (fixed && !(flags & VHD_CREATE_FLAG_SPARSE_FILE)) {
    r = posix_fallocate (fd, (off_t) data, (off_t) (end - data));
    if (r != 0 && r != EOPNOTSUPP && r != EINVAL)
      return vhd_error (r, "%s: allocating %" PRIu64 " bytes of blocks: %s",
                        path, end - data, strerror (r));
  }
  return 0;
}
