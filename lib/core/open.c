/* vhdkit: open an image and close it.
 *
 * What the image holds is walked and checked by the format's driver (for
 * VHD, the scanner that check shares: formats/vhd/scan.c), which stops at
 * the first problem that open refuses.  The parent chain of a
 * differencing disk is resolved in chain.c.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/abi.h"
#include "chain.h"
#include "backend/backend.h"
#include "backend/file.h"
#include "driver.h"
#include "image.h"

static void
free_disk (struct vhd_disk *disk)
{
  if (disk == NULL)
    return;
  if (disk->parent)
    vhd_close (disk->parent);
  vhd_io_fini (disk);
  if (disk->ops)
    disk->ops->close (disk);
  vhd_backend_close (disk->be);
  free (disk->path);
  free (disk);
}

/* What the core relies on from a driver's open, checked once, so that a
 * driver's mistake (or a value it forgot to validate) cannot turn into a
 * division by zero or an overrun on the data path.
 */
static int
check_geometry (const struct vhd_disk *disk)
{
  if (disk->sector_size != 512 && disk->sector_size != 4096)
    return vhd_error (EIO, "%s: %s driver: sector size %" PRIu32
                      " is neither 512 nor 4096", disk->path,
                      disk->ops->name, disk->sector_size);
  if (disk->size % disk->sector_size != 0)
    return vhd_error (EIO, "%s: %s driver: disk size %" PRIu64 " is not"
                      " a multiple of the sector size", disk->path,
                      disk->ops->name, disk->size);
  if (disk->layout == VHD_LAYOUT_FLAT)
    return 0;
  if (disk->block_size == 0 || disk->block_size % disk->sector_size ||
      (uint64_t) disk->bitmap_size * 8 <
      disk->block_size / disk->sector_size ||
      (uint64_t) disk->n_blocks * disk->block_size < disk->size)
    return vhd_error (EIO, "%s: %s driver: block size %" PRIu32 ", %"
                      PRIu32 " blocks and a %" PRIu32 "-byte bitmap do not"
                      " cover the disk", disk->path, disk->ops->name,
                      disk->block_size, disk->n_blocks, disk->bitmap_size);
  return 0;
}

int
vhd_open_backend (struct vhd_backend *be, bool readonly, uint32_t flags,
                  const struct vhd_chain_context *chain,
                  struct vhd_disk **out)
{
  const char *path = be->name;
  struct vhd_disk *disk;
  int r;

  disk = calloc (1, sizeof *disk);
  if (disk == NULL) {
    vhd_backend_close (be);
    return vhd_error (ENOMEM, "%s: out of memory", path);
  }
  disk->be = be;
  disk->readonly = readonly;
  disk->force_share = chain && chain->options &&
                      (chain->options->flags & VHD_OPEN_FLAG_FORCE_SHARE);
  disk->max_metadata_bytes = chain && chain->options &&
                             chain->options->max_metadata_bytes
                             ? chain->options->max_metadata_bytes
                             : VHD_DEFAULT_MAX_METADATA_BYTES;
  disk->path = strdup (path);
  if (disk->path == NULL) {
    r = vhd_error (ENOMEM, "%s: out of memory", path);
    goto fail;
  }

  r = vhd_backend_get_size (be, &disk->file_size);
  if (r < 0)
    goto fail;
  disk->ops = vhd_format_for_image (be);
  r = disk->ops->open (disk);
  if (r == 0)
    r = check_geometry (disk);
  if (r < 0)
    goto fail;

  if (disk->layout == VHD_LAYOUT_DIFFERENCING &&
      !(flags & VHD_OPEN_FLAG_NO_PARENTS))
    r = vhd_chain_open_parent (disk, chain);
  if (r == 0)
    r = vhd_io_init (disk);
  if (r < 0)
    goto fail;

  *out = disk;
  return 0;

 fail:
  free_disk (disk);
  return r;
}

int
vhd_open_fd (int fd, const char *path, bool readonly, uint32_t flags,
             const struct vhd_chain_context *chain, struct vhd_disk **out)
{
  struct vhd_backend *be = vhd_backend_file_new (fd, path);

  if (be == NULL)
    return -ENOMEM;
  return vhd_open_backend (be, readonly, flags, chain, out);
}

int
vhd_open_sized (const char *path, const struct vhd_open_options *options_in,
                size_t options_size, vhd_disk **disk_out)
{
  struct vhd_open_options options_buf;
  const struct vhd_open_options *options = &options_buf;
  int fd, r;

  vhd_clear_error ();
  if (disk_out == NULL)
    return vhd_error (EINVAL, "vhd_open: disk_out is NULL");
  *disk_out = NULL;
  if (path == NULL || *path == '\0')
    return vhd_error (EINVAL, "vhd_open: path is NULL or empty");
  r = vhd_import_open_options (&options_buf, options_in, options_size,
                               "vhd_open");
  if (r < 0)
    return r;

  if ((options->flags & VHD_OPEN_FLAG_FORCE_SHARE) && !options->readonly)
    return vhd_error (EINVAL, "%s: force-share is for read-only opens"
                      " only (a writer never shares)", path);

  /* No FIFO or device can block here; only files and block devices. */
  fd = vhd_file_open (path, options->readonly ? O_RDONLY : O_RDWR);
  if (fd < 0)
    return fd;

  return vhd_open_fd (fd, path, options->readonly, options->flags,
                      &(struct vhd_chain_context) {
                        .options = options, .depth = 0, .children = NULL,
                      },
                      disk_out);
}

int
(vhd_open) (const char *path, const struct vhd_open_options *options,
            vhd_disk **disk_out)
{
  return vhd_open_sized (path, options, VHD_OPEN_OPTIONS_SIZE_0_1, disk_out);
}

int
vhd_open_with_backend_sized (const struct vhd_backend_callbacks *cb,
                             void *opaque, const char *name,
                             const struct vhd_open_options *options_in,
                             size_t options_size, vhd_disk **disk_out)
{
  struct vhd_open_options options_buf;
  const struct vhd_open_options *options = &options_buf;
  struct vhd_backend *be;
  int r;

  vhd_clear_error ();
  if (disk_out == NULL)
    return vhd_error (EINVAL, "vhd_open_with_backend: disk_out is NULL");
  *disk_out = NULL;
  if (name == NULL || *name == '\0')
    return vhd_error (EINVAL, "vhd_open_with_backend: name is NULL or"
                      " empty (it names the image in messages)");
  r = vhd_import_open_options (&options_buf, options_in, options_size,
                               "vhd_open_with_backend");
  if (r < 0)
    return r;
  /* Callback storage has no lock to take or to share: force-share means
   * nothing more here than it does for a path.
   */
  if ((options->flags & VHD_OPEN_FLAG_FORCE_SHARE) && !options->readonly)
    return vhd_error (EINVAL, "%s: force-share is for read-only opens"
                      " only (a writer never shares)", name);

  r = vhd_backend_callbacks_new (cb, opaque, name, options->readonly, &be);
  if (r < 0)
    return r;
  return vhd_open_backend (be, options->readonly, options->flags,
                           &(struct vhd_chain_context) {
                             .options = options, .depth = 0,
                             .children = NULL,
                           },
                           disk_out);
}

void
vhd_close (vhd_disk *disk)
{
  /* Write back what a client left unflushed, as qemu does on close; a
   * caller that must know it succeeded calls vhd_flush first.
   */
  if (disk && !disk->readonly && disk->locks_initialized)
    disk->closed_flushed = vhd_flush (disk) == 0;
  free_disk (disk);
}

uint64_t
vhd_get_size (const vhd_disk *disk)
{
  return disk->size;
}

const vhd_disk *
vhd_get_parent (const vhd_disk *disk)
{
  return disk->parent;
}
