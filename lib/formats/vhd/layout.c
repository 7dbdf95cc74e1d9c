/* vhdkit: the on-disk layout of new fixed, dynamic and differencing
 * images (what vhd_create_virtual_disk writes into its new file).
 *
 * Layout of dynamic and differencing images (chosen here; every reader
 * finds the structures through the footer and the header, so only the
 * alignment matters):
 *
 *   0       footer copy (512 bytes)
 *   512     dynamic header (1024 bytes)
 *   1536    differencing only: the W2ku, then the W2ru locator's data, each
 *           in its own space rounded up to 512 bytes
 *   BAT     at the next 4 KiB boundary (4096 for a dynamic disk), all
 *           entries 0xFFFFFFFF, padded with 0xFF (as Windows pads it) to a
 *           4 KiB multiple
 *   footer  right after the BAT's padding
 *
 * so that the metadata ends on a 4 KiB boundary and io.c, which aligns
 * every block's data to 4 KiB, wastes no space on the first block.  A
 * 2040 GiB dynamic disk with 2 MiB blocks is 4 KiB + 4080 KiB + 512 bytes.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "backend/file.h"           /* this file's own writes */
#include "format.h"
#include "core/image.h"
#include "core/winpath.h"
#include "layout.h"
#include "vhd.h"

#define METADATA_ALIGNMENT 4096u
#define BAT_WRITE_CHUNK (1u << 20)

static uint64_t
round_up (uint64_t n, uint64_t to)
{
  return (n + to - 1) / to * to;
}

static void
new_footer (struct vhd_footer *f, uint32_t disk_type, uint64_t size,
            const struct vhd_guid *unique_id)
{
  memset (f, 0, sizeof *f);
  memcpy (f->cookie, "conectix", 8);
  f->features = VHD_FEATURES_RESERVED;
  f->format_version = VHD_FORMAT_VERSION;
  f->data_offset = disk_type == VHD_TYPE_FIXED ? VHD_FIXED_DATA_OFFSET
                                               : VHD_FOOTER_SIZE;
  f->timestamp = vhd_timestamp_now ();
  memcpy (f->creator_app, VHD_CREATOR_APP, 4);
  f->creator_version = VHD_CREATOR_VERSION;
  f->creator_host_os = VHD_CREATOR_HOST_OS;
  f->original_size = size;
  f->current_size = size;
  vhd_chs_geometry (size, &f->cylinders, &f->heads, &f->sectors_per_track);
  f->disk_type = disk_type;
  f->unique_id = *unique_id;
  f->saved_state = 0;
}

/* Fixed: the data, then the footer.  The data is allocated for real (no
 * holes, as FULL_PHYSICAL_ALLOCATION promises) without writing it, unless
 * the caller asked for a sparse file.
 */
static int
write_fixed (int fd, const char *path, const struct vhd_footer *footer,
             bool sparse)
{
  uint8_t buf[VHD_FOOTER_SIZE];
  uint64_t size = footer->current_size;
  struct vhd_footer f = *footer;
  int r;

  if (!sparse) {
#ifdef HAVE_FALLOCATE
    r = fallocate (fd, 0, 0, (off_t) size) == 0 ? 0 : errno;
#else
    r = EOPNOTSUPP;
#endif
    /* Where the filesystem cannot allocate, glibc writes the blocks. */
    if (r == EOPNOTSUPP || r == ENOSYS)
      r = posix_fallocate (fd, 0, (off_t) size);
    if (r != 0)
      return vhd_error (r, "%s: allocating %" PRIu64 " bytes for the fixed"
                        " disk: %s", path, size, strerror (r));
  }
  vhd_footer_encode (&f, buf);
  return vhd_file_pwrite_exact (fd, buf, sizeof buf, size, path, "footer");
}

/* One parent locator to write: its platform code and UTF-16LE data. */
struct locator_data {
  uint32_t code;
  uint8_t *data;
  size_t length;
};

/* Dynamic and differencing: see the layout at the top of this file. */
static int
write_dynamic (int fd, const char *path, const struct vhd_footer *footer,
               struct vhd_dyn_header *header,
               const struct locator_data *locs, size_t n_locs)
{
  uint64_t bat_bytes = (uint64_t) header->max_table_entries * 4;
  uint64_t at = VHD_FOOTER_SIZE + VHD_DYN_HEADER_SIZE;
  uint64_t bat_space, footer_offset;
  CLEANUP_FREE uint8_t *prefix = NULL;
  CLEANUP_FREE uint8_t *fill = NULL;
  struct vhd_footer f = *footer;
  int r;

  for (size_t i = 0; i < n_locs; i++) {
    struct vhd_parent_locator *loc = &header->locators[i];
    loc->platform_code = locs[i].code;
    /* Space in bytes, as Windows 10 writes it (the specification says
     * sectors; readers take either).
     */
    loc->platform_data_space = (uint32_t) round_up (locs[i].length,
                                                    VHD_SECTOR_SIZE);
    loc->platform_data_length = (uint32_t) locs[i].length;
    loc->platform_data_offset = at;
    at += loc->platform_data_space;
  }
  header->table_offset = round_up (at, METADATA_ALIGNMENT);
  bat_space = round_up (bat_bytes, METADATA_ALIGNMENT);
  footer_offset = header->table_offset + bat_space;

  /* Everything before the BAT in one write. */
  prefix = calloc (1, header->table_offset);
  if (prefix == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  vhd_footer_encode (&f, prefix);
  vhd_dyn_header_encode (header, prefix + VHD_FOOTER_SIZE);
  for (size_t i = 0; i < n_locs; i++)
    memcpy (prefix + header->locators[i].platform_data_offset,
            locs[i].data, locs[i].length);
  r = vhd_file_pwrite_exact (fd, prefix, header->table_offset, 0, path,
                             "metadata");
  if (r < 0)
    return r;

  /* The BAT and its padding, all 0xFF, in large writes. */
  fill = malloc (BAT_WRITE_CHUNK);
  if (fill == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  memset (fill, 0xff, BAT_WRITE_CHUNK);
  for (uint64_t done = 0; done < bat_space; done += BAT_WRITE_CHUNK) {
    size_t n = bat_space - done < BAT_WRITE_CHUNK
               ? (size_t) (bat_space - done) : BAT_WRITE_CHUNK;
    r = vhd_file_pwrite_exact (fd, fill, n, header->table_offset + done,
                               path, "BAT");
    if (r < 0)
      return r;
  }

  return vhd_file_pwrite_exact (fd, prefix, VHD_FOOTER_SIZE, footer_offset,
                                path, "footer");
}

static void
new_dyn_header (struct vhd_dyn_header *h, uint64_t size, uint32_t block_size)
{
  memset (h, 0, sizeof *h);
  memcpy (h->cookie, "cxsparse", 8);
  h->data_offset = UINT64_C (0xFFFFFFFFFFFFFFFF);
  h->header_version = VHD_HEADER_VERSION;
  h->block_size = block_size;
  h->max_table_entries = (uint32_t) ((size + block_size - 1) / block_size);
}

/* The W2ku and W2ru locators of a differencing disk. */
static void
cleanup_locators (struct locator_data (*locs)[2])
{
  free ((*locs)[0].data);
  free ((*locs)[1].data);
}

/* Encode a path as UTF-16LE locator data (no terminating NUL, as Windows
 * writes it).
 */
static int
locator_from_path (struct locator_data *loc, uint32_t code, const char *text,
                   const char *path)
{
  /* UTF-16 needs at most two bytes per byte of UTF-8, plus the NUL. */
  size_t size = strlen (text) * 2 + 2;
  int n;

  loc->code = code;
  loc->data = malloc (size);
  if (loc->data == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  n = vhd_utf8_to_utf16 (text, false, loc->data, size);
  if (n < 0)
    return vhd_error (-n, "%s: parent path %s is not valid UTF-8",
                      path, text);
  loc->length = (size_t) n;
  return 0;
}

/* The header's parent fields and the locators, from the parent (a VHD)
 * as the core found it.  child_dir is the new disk's folder, resolved.
 */
static int
describe_parent (const struct vhd_create_parent *parent,
                 const char *child_dir, struct vhd_dyn_header *h,
                 struct locator_data locs[2], const char *path)
{
  const struct vhd_footer *pf = &vhd_image_of (parent->disk)->footer;
  const char *real = parent->real_path;
  char relative[PATH_MAX * 3];
  int r;

  h->parent_unique_id = pf->unique_id;
  h->parent_timestamp = vhd_timestamp_from_unix ((time_t) parent->mtime);
  r = vhd_utf8_to_utf16 (real, true, h->parent_unicode_name,
                         sizeof h->parent_unicode_name);
  if (r == -ENAMETOOLONG)
    return vhd_error (-r, "parent %s: its path %s does not fit the 255"
                      " UTF-16 characters of the header's parent name;"
                      " move it to a shorter path", parent->path, real);
  if (r < 0)
    return vhd_error (-r, "parent %s: its path %s is not valid UTF-8",
                      parent->path, real);
  if (vhd_relative_windows_path (child_dir, real, relative, sizeof relative) < 0)
    return vhd_error (ENAMETOOLONG, "parent %s: the relative path from %s"
                      " is too long", parent->path, child_dir);

  /* W2ku keeps the Linux path as it is: chain.c reads an absolute path
   * that is not a drive path as a path on this machine.
   */
  r = locator_from_path (&locs[0], VHD_PLATFORM_W2KU, real, path);
  if (r == 0)
    r = locator_from_path (&locs[1], VHD_PLATFORM_W2RU, relative, path);
  return r;
}

/* Write the whole image into fd.  child_dir: the new disk's folder,
 * resolved (differencing disks need it for the relative locator).
 */
int
vhd_layout_write_image (int fd, const char *path, const char *child_dir,
                        const struct vhd_guid *unique_id, uint64_t size,
                        uint32_t block_size, uint32_t sector_size,
                        uint32_t physical_sector_size, uint32_t flags,
                        const struct vhd_create_parent *parent)
{
  /* 512 (or 0) and 512 or 4096: the geometry check admitted nothing
   * else, and a VHD records neither.
   */
  (void) sector_size;
  (void) physical_sector_size;
  __attribute__ ((cleanup (cleanup_locators)))
    struct locator_data locs[2] = { { 0 }, { 0 } };
  const struct vhd_footer *pf;
  struct vhd_dyn_header header;
  struct vhd_footer footer;
  int r;

  if (block_size == 0)
    block_size = VHD_BLOCK_SIZE_DEFAULT;
  if (flags & VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION) {
    new_footer (&footer, VHD_TYPE_FIXED, size, unique_id);
    return write_fixed (fd, path, &footer,
                        flags & VHD_CREATE_FLAG_SPARSE_FILE);
  }
  if (parent == NULL) {
    new_footer (&footer, VHD_TYPE_DYNAMIC, size, unique_id);
    new_dyn_header (&header, size, block_size);
    return write_dynamic (fd, path, &footer, &header, NULL, 0);
  }

  /* Differencing: the parent's size, and its geometry as it stores it
   * (a parent of another format would need its own identity here).
   */
  if (parent->ops != &vhd_format_vhd)
    return vhd_error (EINVAL, "%s: parent %s is a %s image: a VHD's parent"
                      " must be a VHD", path, parent->path,
                      parent->ops->name);
  pf = &vhd_image_of (parent->disk)->footer;
  new_footer (&footer, VHD_TYPE_DIFFERENCING, pf->current_size,
              unique_id);
  footer.cylinders = pf->cylinders;
  footer.heads = pf->heads;
  footer.sectors_per_track = pf->sectors_per_track;
  new_dyn_header (&header, footer.current_size, block_size);
  r = describe_parent (parent, child_dir, &header, locs, path);
  if (r < 0)
    return r;
  return write_dynamic (fd, path, &footer, &header, locs, 2);
}

