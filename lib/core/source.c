/* vhdkit: the source disk of CreateVirtualDisk's SourcePath.
 *
 * A source is a raw disk in a regular file, a block device (raw), or any
 * VHD that this library opens, a differencing chain read through the
 * chain.  A file or device is a VHD when it carries a valid footer: the
 * trailing one (or the 511-byte variant that old writers left), or the
 * copy at offset 0 of a dynamic or differencing disk whose trailing
 * footer is damaged.  A "conectix" cookie without a valid footer is an
 * error: such a file is a damaged VHD, and copying its bytes as a raw disk
 * would give a disk that nobody asked for.
 *
 * Nothing is ever written to a source.  PREVENT_WRITES_TO_SOURCE_DISK
 * opens a VHD source and its chain as every reader does (locked against
 * writers, io.c), and for a raw source takes an open file description
 * read lock on byte 201, the byte that qemu locks to deny the "write"
 * permission to others: vhdkit's writers and qemu's then fail to open the
 * source for writing while the copy runs.  Without it (vhdtool -U) the
 * source is read with no lock, as qemu-img -U reads.
 *
 * The source is opened so that a FIFO or a device cannot block the open
 * (file.c), and only a regular file or a block device is copied.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "chain.h"
#include "backend/file.h"
#include "driver.h"
#include "image.h"
#include "source.h"

#define FN "vhd_create_virtual_disk"

/* The bytes of qemu's image locking protocol that vhdkit shares. */
#define LOCK_BYTE_WRITE 101             /* held by a writer */
#define LOCK_BYTE_DENY_WRITE 201        /* held by whoever denies writers */

static int
source_size (int fd, const char *path, enum vhd_source_kind *kind,
             uint64_t *size)
{
  struct stat st;

  if (fstat (fd, &st) == -1)
    return vhd_error (errno, FN ": source_path %s: fstat: %m", path);
  if (S_ISREG (st.st_mode)) {
    *kind = VHD_SOURCE_RAW_FILE;
    *size = (uint64_t) st.st_size;
    return 0;
  }
  if (S_ISBLK (st.st_mode)) {
    *kind = VHD_SOURCE_BLOCK_DEVICE;
    if (ioctl (fd, BLKGETSIZE64, size) == -1)
      return vhd_error (errno, FN ": source_path %s: BLKGETSIZE64: %m", path);
    return 0;
  }
  return vhd_error (EINVAL, FN ": source_path %s is %s; a source is a raw"
                    " disk in a regular file, a block device or a VHD",
                    path, S_ISDIR (st.st_mode) ? "a folder"
                    : "neither a regular file nor a block device");
}

/* 1 when the file or device holds an image of a format vhdkit knows, 0
 * when it is a raw disk.  A damaged image is neither: copied as raw, its
 * metadata would become the new disk's data.
 */
static int
probe_image (int fd, uint64_t size, const char *path,
             const struct vhd_format_ops **found)
{
  const struct vhd_format_ops *ops;

  *found = NULL;
  for (size_t i = 0; (ops = vhd_format_at (i)) != NULL; i++) {
    char why[1200] = "";
    int r;

    if (!vhd_format_has_driver (ops))
      continue;
    r = ops->recognise (fd, path, size, why, sizeof why);
    if (r == 2)
      return vhd_error (EINVAL, FN ": source_path %s has %s; a damaged %s"
                        " is not copied, neither as a %s nor as a raw disk"
                        " (vhdtool check --repair may restore it)", path,
                        why, ops->name, ops->name);
    if (r != 0) {
      *found = ops;
      return r;
    }
  }
  return 0;
}

/* Deny writers for as long as fd stays open; fail if one holds it now. */
static int
lock_against_writers (int fd, const char *path)
{
  struct flock probe = {
    .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = LOCK_BYTE_WRITE,
    .l_len = 1,
  };
  struct flock deny = {
    .l_type = F_RDLCK, .l_whence = SEEK_SET,
    .l_start = LOCK_BYTE_DENY_WRITE, .l_len = 1,
  };

  if (fcntl (fd, F_OFD_GETLK, &probe) == -1)
    return vhd_error (errno, FN ": source_path %s: testing for writers: %m",
                      path);
  if (probe.l_type == F_UNLCK && fcntl (fd, F_OFD_SETLK, &deny) == 0)
    return 0;
  if (probe.l_type != F_UNLCK || errno == EAGAIN || errno == EACCES)
    return vhd_error (EBUSY, FN ": source_path %s is open for writing by"
                      " another process (vhdkit or qemu), and"
                      " PREVENT_WRITES_TO_SOURCE_DISK asks for a source"
                      " that nobody writes; stop the writer first", path);
  return vhd_error (errno, FN ": source_path %s: locking out writers: %m",
                    path);
}

static int
open_vhd_source (struct vhd_source *src, int fd, bool prevent_writes,
                 const char *const *parent_dirs)
{
  const struct vhd_open_options options = {
    .readonly = true,
    .flags = prevent_writes ? 0 : VHD_OPEN_FLAG_FORCE_SHARE,
    .parent_dirs = parent_dirs,
  };
  char why[2048];
  int r;

  r = vhd_open_fd (fd, src->path, true, 0,
                   &(struct vhd_chain_context) {
                     .options = &options, .depth = 0,
                   },
                   &src->disk);
  if (r < 0) {
    /* vhd_error formats into the buffer that holds the cause.  "disk",
     * not "VHD": the source may be a VHDX as well.
     */
    snprintf (why, sizeof why, "%s", vhd_last_error ());
    return vhd_error (r, FN ": source_path %s: cannot open the source disk:"
                      " %s", src->path, why);
  }
  src->kind = VHD_SOURCE_VHD;
  src->size = src->disk->size;
  return 0;
}

/* Reading a raw source of some GiB leaves it all in the page cache,
 * pushing out what the machine had there: the copy drops again what it
 * brought in (vhd_source_release).  Only granules with nothing cached
 * now count as the copy's, so a cache the user had (a file just written,
 * or read on purpose) stays.  Noted at open, not as the copy goes: the
 * copy's own readahead runs ahead into the next granule.  Without the
 * memory for the bits, or a kernel that tells (Linux 6.5's cachestat),
 * nothing is dropped.
 */
static void
note_uncached (struct vhd_source *src, int fd)
{
  uint64_t n = (src->size + VHD_SOURCE_CACHE_GRANULE - 1)
               / VHD_SOURCE_CACHE_GRANULE;

  src->uncached = calloc ((size_t) ((n + 7) / 8), 1);
  if (src->uncached == NULL)
    return;
  /* The usual case, in one call: nothing of it is cached. */
  if (!vhd_file_cached (fd, 0, 0)) {
    memset (src->uncached, 0xff, (size_t) ((n + 7) / 8));
    return;
  }
  for (uint64_t g = 0; g < n; g++)
    if (!vhd_file_cached (fd, g * VHD_SOURCE_CACHE_GRANULE,
                          VHD_SOURCE_CACHE_GRANULE))
      src->uncached[g / 8] |= (uint8_t) (1u << (g % 8));
}

void
vhd_source_release (struct vhd_source *src, uint64_t offset, uint64_t count)
{
  uint64_t end = offset + count;
  int fd;

  if (src->uncached == NULL || src->be == NULL)
    return;
  fd = vhd_backend_file_fd (src->be);
  if (fd < 0)
    return;
  for (uint64_t g = offset / VHD_SOURCE_CACHE_GRANULE;
       g * VHD_SOURCE_CACHE_GRANULE < end; g++) {
    uint64_t lo = g * VHD_SOURCE_CACHE_GRANULE;
    uint64_t hi = lo + VHD_SOURCE_CACHE_GRANULE;

    if (!(src->uncached[g / 8] & (1u << (g % 8))))
      continue;
    lo = lo < offset ? offset : lo;
    hi = hi > end ? end : hi;
    vhd_file_drop_cache (fd, lo, hi - lo);
  }
}

static int
setup_source (struct vhd_source *src, int fd, uint32_t device_id,
              bool prevent_writes, const char *const *parent_dirs)
{
  const struct vhd_format_ops *format;
  const struct vhd_format_ops *wanted = vhd_format_for_device (device_id);
  int r, is_image;

  r = source_size (fd, src->path, &src->kind, &src->size);
  if (r < 0) {
    close (fd);
    return r;
  }
  /* Before the probe reads anything. */
  note_uncached (src, fd);
  is_image = probe_image (fd, src->size, src->path, &format);
  if (is_image < 0) {
    close (fd);
    return is_image;
  }
  if (wanted && format != wanted) {
    close (fd);
    return vhd_error (EINVAL, FN ": source_path %s is not a %s image (%s),"
                      " but source_virtual_storage_type says %s; pass"
                      " VHD_STORAGE_DEVICE_UNKNOWN to copy %s", src->path,
                      wanted->name,
                      format ? format->name : "no valid signature",
                      wanted->name,
                      format ? "any image" : "a raw disk");
  }

  if (is_image) {
    /* Read through the VHD engine, which the bits do not cover. */
    free (src->uncached);
    src->uncached = NULL;
    /* Owns fd now; the chain is locked against writers as it opens. */
    return open_vhd_source (src, fd, prevent_writes, parent_dirs);
  }

  /* The backend owns fd from here; fd stays ours to lock and seek. */
  src->be = vhd_backend_file_new (fd, src->path);
  if (src->be == NULL)
    return -ENOMEM;
  if (prevent_writes && (r = lock_against_writers (fd, src->path)) < 0)
    return r;
  /* A hint: the copy reads the source once, from start to end. */
  posix_fadvise (fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  if (src->kind == VHD_SOURCE_RAW_FILE)
    src->seek_data = lseek (fd, 0, SEEK_DATA) >= 0 || errno == ENXIO;
  return 0;
}

int
vhd_source_open (const char *path, uint32_t device_id, bool prevent_writes,
                 const char *const *parent_dirs, struct vhd_source **out)
{
  struct vhd_source *src;
  int fd, r;

  *out = NULL;
  src = calloc (1, sizeof *src);
  if (src == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  src->path = strdup (path);
  if (src->path == NULL) {
    free (src);
    return vhd_error (ENOMEM, "%s: out of memory", path);
  }

  fd = vhd_file_open (path, O_RDONLY);
  if (fd < 0) {
    /* "PATH is a FIFO, ..." or "PATH: open: ...", said of the source. */
    const char *why = vhd_last_error ();
    size_t n = strlen (path);
    if (strncmp (why, path, n) == 0)
      why += n + (why[n] == ':' ? 2 : 1);
    if (strncmp (why, "is ", 3) == 0)
      r = vhd_error (fd, FN ": source_path %s %s", path, why);
    else
      r = vhd_error (fd, FN ": source_path %s: cannot open the source"
                     " disk: %s", path, why);
  }
  else
    r = setup_source (src, fd, device_id, prevent_writes, parent_dirs);
  if (r < 0) {
    vhd_source_close (src);
    return r;
  }
  *out = src;
  return 0;
}

void
vhd_source_close (struct vhd_source *src)
{
  if (src == NULL)
    return;
  /* Closing the descriptors drops the locks with them. */
  if (src->disk)
    vhd_close (src->disk);
  vhd_backend_close (src->be);
  free (src->uncached);
  free (src->path);
  free (src);
}

const char *
vhd_source_describe (const struct vhd_source *src)
{
  switch (src->kind) {
  case VHD_SOURCE_RAW_FILE: return "raw file";
  case VHD_SOURCE_BLOCK_DEVICE: return "block device";
  case VHD_SOURCE_VHD:
    if (src->disk->ops->probe_format == VHD_FORMAT_VHDX)
      switch (src->disk->layout) {
      case VHD_LAYOUT_FLAT: return "fixed VHDX";
      case VHD_LAYOUT_SPARSE: return "dynamic VHDX";
      default: return "differencing VHDX";
      }
    switch (src->disk->layout) {
    case VHD_LAYOUT_FLAT: return "fixed VHD";
    case VHD_LAYOUT_SPARSE: return "dynamic VHD";
    default: return "differencing VHD";
    }
  }
  return "source";
}

/* The data and holes of a raw file, by SEEK_DATA and SEEK_HOLE. */
static int
file_extents (struct vhd_source *src, uint64_t offset, uint64_t count,
              vhd_extent_fn fn, void *opaque)
{
  uint64_t end = offset + count, pos = offset;
  int fd = vhd_backend_file_fd (src->be);
  int r;

  while (pos < end) {
    off_t data = lseek (fd, (off_t) pos, SEEK_DATA);
    off_t hole;
    uint64_t to;

    if (data == -1 && errno != ENXIO)
      return vhd_error (errno, "%s: lseek SEEK_DATA at %" PRIu64 ": %m",
                        src->path, pos);
    /* ENXIO: no data from pos on. */
    to = data == -1 || (uint64_t) data > end ? end : (uint64_t) data;
    if (to > pos) {
      r = fn (opaque, pos, to - pos, VHD_EXTENT_HOLE | VHD_EXTENT_ZERO);
      if (r < 0)
        return r;
      pos = to;
      if (pos == end)
        break;
    }
    hole = lseek (fd, (off_t) pos, SEEK_HOLE);
    if (hole == -1)
      return vhd_error (errno, "%s: lseek SEEK_HOLE at %" PRIu64 ": %m",
                        src->path, pos);
    to = (uint64_t) hole > end || (uint64_t) hole <= pos ? end
                                                         : (uint64_t) hole;
    r = fn (opaque, pos, to - pos, 0);
    if (r < 0)
      return r;
    pos = to;
  }
  return 0;
}

int
vhd_source_extents (struct vhd_source *src, uint64_t offset, uint64_t count,
                    vhd_extent_fn fn, void *opaque)
{
  if (offset > src->size || count > src->size - offset)
    return vhd_error (EINVAL, "%s: extents of %" PRIu64 " bytes at %" PRIu64
                      " go past the source's size %" PRIu64, src->path,
                      count, offset, src->size);
  if (count == 0)
    return 0;
  if (src->kind == VHD_SOURCE_VHD)
    return vhd_extents (src->disk, count, offset, fn, opaque);
  if (src->seek_data)
    return file_extents (src, offset, count, fn, opaque);
  /* A block device tells nothing; the copy finds its zeros by reading. */
  return fn (opaque, offset, count, 0);
}

int
vhd_source_map (struct vhd_source *src, uint64_t offset, uint64_t count,
                uint8_t *buf, struct vhd_segment_list *l)
{
  if (offset > src->size || count > src->size - offset)
    return vhd_error (EINVAL, "%s: read of %" PRIu64 " bytes at %" PRIu64
                      " goes past the source's size %" PRIu64, src->path,
                      count, offset, src->size);
  if (src->kind == VHD_SOURCE_VHD)
    return vhd_map_read (src->disk, offset, count, buf, l);
  return vhd_segments_add (l, src->be, offset, count, buf);
}
