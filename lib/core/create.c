/* vhdkit: vhd_create_virtual_disk(), the CreateVirtualDisk contract.
 *
 * The arguments are checked first, one rule at a time in a fixed order,
 * each failure naming the parameter and its value.  The image is then
 * built in an unnamed file in the target's folder and linked under its
 * name only once it is complete and
 * synced, so that a failure at any point leaves nothing behind and an
 * existing file is never overwritten.
 *
 * With a source path the new disk is then filled from the source
 * (source.c, copy.c) before it is linked.  With an overlapped argument
 * everything up to the creation of the unnamed file happens in the
 * caller's thread, so that every argument error is returned at once, and
 * the rest (layout, copy, link) in a background thread (async.c).
 *
 * The layout of each type is in layout.c.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "async.h"
#include "chain.h"
#include "cleanup.h"
#include "copy.h"
#include "backend/file.h"
#include "guid.h"
#include "image.h"
#include "driver.h"
#include "source.h"

#define FN "vhd_create_virtual_disk"


/* The parameters of either version, in one shape: req holds those that
 * the format has rules for (core/driver.h).
 */
struct create_args {
  struct vhd_create_request req;        /* paths NULL when not set (or "") */
  struct vhd_guid unique_id;
  uint32_t open_flags;                  /* version 2 only */
  const struct vhd_storage_type *parent_type; /* version 2 only, else NULL */
  const struct vhd_storage_type *source_type;
  const char *const *parent_dirs;       /* version VHDKIT_1 only */
};

static const char *
nonempty (const char *s)
{
  return s && *s ? s : NULL;
}

static void
unpack_parameters (const struct vhd_create_parameters *p, uint32_t flags,
                   struct create_args *a)
{
  memset (a, 0, sizeof *a);
  a->req.version = p->version;
  a->req.flags = flags;
  if (p->version == VHD_CREATE_VERSION_1) {
    a->unique_id = p->version1.unique_id;
    a->req.maximum_size = p->version1.maximum_size;
    a->req.block_size = p->version1.block_size_in_bytes;
    a->req.sector_size = p->version1.sector_size_in_bytes;
    a->req.parent_path = nonempty (p->version1.parent_path);
    a->req.source_path = nonempty (p->version1.source_path);
  }
  else {
    /* Version VHDKIT_1 starts with version 2's fields, read here through
     * version2 (the two structs' common initial sequence).
     * resiliency_guid is for shared VHDX disks; VHD has no use for it.
     */
    a->unique_id = p->version2.unique_id;
    a->req.maximum_size = p->version2.maximum_size;
    a->req.block_size = p->version2.block_size_in_bytes;
    a->req.sector_size = p->version2.sector_size_in_bytes;
    a->req.physical_sector_size =
      p->version2.physical_sector_size_in_bytes;
    a->req.parent_path = nonempty (p->version2.parent_path);
    a->req.source_path = nonempty (p->version2.source_path);
    a->open_flags = p->version2.open_flags;
    a->parent_type = &p->version2.parent_virtual_storage_type;
    a->source_type = &p->version2.source_virtual_storage_type;
    if (p->version == VHD_CREATE_VERSION_VHDKIT_1)
      a->parent_dirs = p->vhdkit1.parent_dirs;
  }
}

/* The vendor, then the format that writes the new disk (format). */
static int
check_storage_type (const struct vhd_storage_type *st, const char *path,
                    const struct vhd_format_ops **format)
{
  static const struct vhd_guid microsoft = VHD_VENDOR_MICROSOFT;
  const struct vhd_format_ops *ops;
  char uuid[37];

  if (!vhd_guid_is_zero (&st->vendor_id) &&
      memcmp (&st->vendor_id, &microsoft, sizeof microsoft) != 0) {
    vhd_guid_to_string (&st->vendor_id, uuid);
    return vhd_error (EINVAL, FN ": storage_type->vendor_id %s is not"
                      " VHD_VENDOR_MICROSOFT (ec984aec-a0f9-47e9-901f-"
                      "71415a66345b) or all zero", uuid);
  }
  ops = vhd_format_for_storage (st->device_id, path);
  if (ops == NULL)
    return vhd_error (EINVAL, FN ": storage_type->device_id %" PRIu32
                      " cannot be created; use VHD_STORAGE_DEVICE_VHD (2) or"
                      " VHD_STORAGE_DEVICE_VHDX (3)",
                      st->device_id);
  if (!vhd_format_has_driver (ops) &&
      st->device_id == VHD_STORAGE_DEVICE_UNKNOWN)
    return vhd_error (ENOTSUP, FN ": storage_type->device_id 0 (UNKNOWN)"
                      " picks %s for path %s by its extension, as Windows"
                      " does: %s is not supported; use"
                      " VHD_STORAGE_DEVICE_VHD or another extension",
                      ops->name, path, ops->name);
  if (!vhd_format_has_driver (ops))
    return vhd_error (ENOTSUP, FN ": storage_type->device_id %" PRIu32
                      " (%s): %s is not supported; use"
                      " VHD_STORAGE_DEVICE_VHD", st->device_id, ops->name,
                      ops->name);
  *format = ops;
  return 0;
}

/* Flags that Windows documents but that the VHD provider rejects. */
static const struct {
  uint32_t flag;
  const char *name;
} unsupported_flags[] = {
  { VHD_CREATE_FLAG_CREATE_BACKING_STORAGE, "CREATE_BACKING_STORAGE" },
  { VHD_CREATE_FLAG_USE_CHANGE_TRACKING_SOURCE_LIMIT,
    "USE_CHANGE_TRACKING_SOURCE_LIMIT" },
  { VHD_CREATE_FLAG_PRESERVE_PARENT_CHANGE_TRACKING_STATE,
    "PRESERVE_PARENT_CHANGE_TRACKING_STATE" },
  { VHD_CREATE_FLAG_VHD_SET_USE_ORIGINAL_BACKING_STORAGE,
    "VHD_SET_USE_ORIGINAL_BACKING_STORAGE" },
  { VHD_CREATE_FLAG_PMEM_COMPATIBLE, "PMEM_COMPATIBLE" },
};

#define KNOWN_CREATE_FLAGS UINT32_C (0x7ff)

static int
check_access_and_flags (uint32_t version, uint32_t access_mask,
                        uint32_t flags, uint32_t provider_specific_flags)
{
  if (version != VHD_CREATE_VERSION_1 && access_mask != VHD_ACCESS_NONE)
    return vhd_error (EINVAL, FN ": access_mask is 0x%" PRIx32 "; with"
                      " parameters version 2 (or vhdkit's) it must be"
                      " VHD_ACCESS_NONE (0)", access_mask);
  if (access_mask & ~(uint32_t) VHD_ACCESS_ALL)
    return vhd_error (EINVAL, FN ": access_mask 0x%" PRIx32 " has bits"
                      " 0x%" PRIx32 " outside VHD_ACCESS_ALL (0x%x)",
                      access_mask, access_mask & ~(uint32_t) VHD_ACCESS_ALL,
                      VHD_ACCESS_ALL);
  if (flags & ~KNOWN_CREATE_FLAGS)
    return vhd_error (EINVAL, FN ": flags 0x%" PRIx32 " has unknown bits"
                      " 0x%" PRIx32 " (the VHD_CREATE_FLAG_* set is 0x%"
                      PRIx32 ")", flags, flags & ~KNOWN_CREATE_FLAGS,
                      KNOWN_CREATE_FLAGS);
  for (size_t i = 0;
       i < sizeof unsupported_flags / sizeof unsupported_flags[0]; i++)
    if (flags & unsupported_flags[i].flag)
      return vhd_error (EINVAL, FN ": flags: VHD_CREATE_FLAG_%s (0x%" PRIx32
                        ") does not apply to VHD images; remove it",
                        unsupported_flags[i].name, unsupported_flags[i].flag);
  if (provider_specific_flags != 0)
    return vhd_error (EINVAL, FN ": provider_specific_flags is 0x%" PRIx32
                      "; the VHD provider takes none, pass 0",
                      provider_specific_flags);
  return 0;
}

/* The logical sector size a request asks for: every format's default is
 * 512 bytes (its check_create_geometry refused the sizes it cannot take).
 */
static uint32_t
logical_sector_size (const struct vhd_create_request *req)
{
  return req->sector_size ? req->sector_size : 512;
}

/* maximum_size against the format's bounds (struct vhd_format_ops). */
static int
check_size (const struct vhd_format_ops *format,
            const struct vhd_create_request *req)
{
  uint64_t size = req->maximum_size;
  uint32_t sector = logical_sector_size (req);

  if (size != 0 && size < format->min_disk_size)
    return vhd_error (EINVAL, FN ": maximum_size %" PRIu64 " is under the"
                      " minimum of %" PRIu64 " MiB (%" PRIu64 " bytes)", size,
                      format->min_disk_size >> 20, format->min_disk_size);
  if (size % sector != 0)
    return vhd_error (EINVAL, FN ": maximum_size %" PRIu64 " is not a"
                      " multiple of the %" PRIu32 "-byte logical sector size",
                      size, sector);
  if (size > format->max_disk_size)
    return vhd_error (EINVAL, FN ": maximum_size %" PRIu64 " is over the"
                      " %s limit of %s (%" PRIu64 " bytes)", size,
                      format->name, format->max_disk_size_text,
                      format->max_disk_size);
  return 0;
}

/* A source must be whole sectors even when maximum_size bounds it; its
 * size must be within the format's bounds only when it becomes the new
 * disk's.  what names it: "source_path /x.raw (a raw file)".
 */
static int
check_source_size (const struct vhd_format_ops *format,
                   const struct vhd_create_request *req, const char *what,
                   uint64_t size)
{
  uint32_t sector = logical_sector_size (req);

  if (size % sector != 0)
    return vhd_error (EINVAL, FN ": %s is %" PRIu64 " bytes, not a whole"
                      " number of %" PRIu32 "-byte sectors; as on Windows, a"
                      " source must be (pad it to %" PRIu64 " bytes first)",
                      what, size, sector, (size / sector + 1) * sector);
  if (req->maximum_size != 0)
    return 0;
  if (size < format->min_disk_size)
    return vhd_error (EINVAL, FN ": %s is %" PRIu64 " bytes, under the"
                      " minimum %s size of %" PRIu64 " MiB (%" PRIu64
                      " bytes); pass a maximum_size of at least that to"
                      " extend it with zeros", what, size, format->name,
                      format->min_disk_size >> 20, format->min_disk_size);
  if (size > format->max_disk_size)
    return vhd_error (EINVAL, FN ": %s is %" PRIu64 " bytes, over the %s"
                      " limit of %s (%" PRIu64 " bytes)", what, size,
                      format->name, format->max_disk_size_text,
                      format->max_disk_size);
  return 0;
}

/* The size rules, among the rules that every format shares. */
static int
check_size_and_parent (const struct vhd_format_ops *format,
                       const struct create_args *a)
{
  const struct vhd_create_request *req = &a->req;
  uint64_t size = req->maximum_size;
  int r;

  if (req->parent_path && req->source_path)
    return vhd_error (EINVAL, FN ": parent_path (%s) and source_path (%s)"
                      " are both set; a new disk has one or the other",
                      req->parent_path, req->source_path);
  if (size == 0 && !req->parent_path && !req->source_path)
    return vhd_error (EINVAL, FN ": maximum_size is 0; it may only be 0"
                      " when parent_path or source_path gives the size");
  if ((r = check_size (format, req)) < 0)
    return r;
  if (size != 0 && req->parent_path)
    return vhd_error (EINVAL, FN ": maximum_size is %" PRIu64 " with"
                      " parent_path %s; a differencing disk takes its"
                      " parent's size, pass 0", size, req->parent_path);
  if ((req->flags & VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION) &&
      req->parent_path)
    return vhd_error (EINVAL, FN ": flags has FULL_PHYSICAL_ALLOCATION with"
                      " parent_path %s; a differencing disk cannot be"
                      " fixed", req->parent_path);
  return 0;
}

static int
check_other_storage_type (const struct vhd_storage_type *st,
                          const char *name)
{
  const struct vhd_format_ops *ops;

  if (st == NULL || st->device_id == VHD_STORAGE_DEVICE_UNKNOWN)
    return 0;
  ops = vhd_format_for_device (st->device_id);
  if (ops && vhd_format_has_driver (ops))
    return 0;
  if (ops)
    return vhd_error (ENOTSUP, FN ": %s.device_id %" PRIu32 " (%s): %s is"
                      " not supported; use VHD_STORAGE_DEVICE_VHD", name,
                      st->device_id, ops->name, ops->name);
  return vhd_error (EINVAL, FN ": %s.device_id is %" PRIu32 "; it must be"
                    " 0, VHD_STORAGE_DEVICE_VHD (2) or VHD_STORAGE_DEVICE_VHDX"
                    " (3)", name, st->device_id);
}

/* Every rule, in order; on success *a holds the unpacked parameters and
 * *format the format of the new disk.
 */
static int
check_arguments (const struct vhd_storage_type *storage_type,
                 const char *path, uint32_t access_mask, uint32_t flags,
                 uint32_t provider_specific_flags,
                 const struct vhd_create_parameters *parameters,
                 const struct vhd_overlapped *overlapped,
                 vhd_disk **handle, struct create_args *a,
                 const struct vhd_format_ops **format)
{
  int r;

  if (storage_type == NULL)
    return vhd_error (EINVAL, FN ": storage_type is NULL");
  if (parameters == NULL)
    return vhd_error (EINVAL, FN ": parameters is NULL");
  if (path == NULL || *path == '\0')
    return vhd_error (EINVAL, FN ": path is %s", path ? "empty" : "NULL");
  if (handle == NULL)
    return vhd_error (EINVAL, FN ": handle is NULL");
  if (parameters->version != VHD_CREATE_VERSION_1 &&
      parameters->version != VHD_CREATE_VERSION_2 &&
      parameters->version != VHD_CREATE_VERSION_VHDKIT_1)
    return vhd_error (EINVAL, FN ": parameters->version is %" PRIu32 "; it"
                      " must be 1, 2 or VHD_CREATE_VERSION_VHDKIT_1"
                      " (0x%x)", parameters->version,
                      VHD_CREATE_VERSION_VHDKIT_1);
  unpack_parameters (parameters, flags, a);

  if ((r = check_access_and_flags (a->req.version, access_mask, flags,
                                   provider_specific_flags)) < 0 ||
      (r = check_storage_type (storage_type, path, format)) < 0 ||
      (r = (*format)->check_create_geometry (&a->req)) < 0 ||
      (r = check_size_and_parent (*format, a)) < 0 ||
      (r = check_other_storage_type (a->parent_type,
                                     "parent_virtual_storage_type")) < 0 ||
      (r = check_other_storage_type (a->source_type,
                                     "source_virtual_storage_type")) < 0)
    return r;
  if (a->open_flags & ~(uint32_t) VHD_OPEN_FLAG_NO_PARENTS)
    return vhd_error (EINVAL, FN ": open_flags 0x%" PRIx32 " has bits that"
                      " vhdkit does not know (only VHD_OPEN_FLAG_NO_PARENTS)",
                      a->open_flags);
  return vhd_operation_check_overlapped (overlapped);
}

static int
open_parent (const char *parent_path, const char *const *parent_dirs,
             vhd_disk **parent)
{
  const struct vhd_open_options options = {
    .readonly = true, .parent_dirs = parent_dirs,
  };
  char why[1024];
  int r;

  r = vhd_open (parent_path, &options, parent);
  if (r < 0) {
    /* vhd_error formats into the buffer that holds the cause. */
    snprintf (why, sizeof why, "%s", vhd_last_error ());
    return vhd_error (r, FN ": parent_path %s: cannot open the parent"
                      " disk: %s", parent_path, why);
  }
  return 0;
}

/* The folders of every image in the parent's chain, resolved, for the
 * new child's own open to be allowed to reach them.
 */
struct folder_list {
  char *dirs[VHD_MAX_PARENT_DIRS + 1];      /* NULL-terminated */
  size_t n;
};

static void
cleanup_folder_list (struct folder_list *l)
{
  for (size_t i = 0; i < l->n; i++)
    free (l->dirs[i]);
}

static int
collect_chain_folders (const vhd_disk *parent, struct folder_list *l)
{
  for (const vhd_disk *p = parent; p && l->n < VHD_MAX_PARENT_DIRS;
       p = p->parent) {
    char copy[PATH_MAX], *dir;

    if (snprintf (copy, sizeof copy, "%s", p->path) >= (int) sizeof copy)
      return vhd_error (ENAMETOOLONG, "%s: path too long", p->path);
    dir = realpath (dirname (copy), NULL);
    if (dir == NULL)
      return vhd_error (errno, "%s: resolving its folder: %m", p->path);
    l->dirs[l->n++] = dir;
  }
  return 0;
}

/* Open the finished image from fd (which this takes over, closing it on
 * failure too) under its final path, before it is linked there: the
 * handle is the file that was built, and a failure here still leaves
 * nothing behind.
 */
static int
open_handle (int fd, const char *path, const struct create_args *a,
             const vhd_disk *parent, vhd_disk **disk)
{
  __attribute__ ((cleanup (cleanup_folder_list))) struct folder_list
    folders = { .n = 0 };
  struct vhd_open_options options = {
    .flags = a->open_flags,
    .parent_dirs = (const char *const *) folders.dirs,
  };
  int r;

  r = collect_chain_folders (parent, &folders);
  if (r < 0) {
    close (fd);
    return r;
  }
  return vhd_open_fd (fd, path, false, a->open_flags,
                      &(struct vhd_chain_context) {
                        .options = &options, .depth = 0,
                      },
                      disk);
}

/* The file being built: unnamed (O_TMPFILE) where the filesystem allows,
 * else under a hidden temporary name that the cleanup removes.
 */
struct new_file {
  int dirfd;
  int fd;
  const char *name;             /* the target's name in dirfd */
  char temp_name[NAME_MAX + 1]; /* "" unless the fallback is in use */
};

static void
cleanup_new_file (struct new_file *nf)
{
  if (nf->fd >= 0)
    close (nf->fd);
  if (nf->temp_name[0])
    unlinkat (nf->dirfd, nf->temp_name, 0);
  if (nf->dirfd >= 0)
    close (nf->dirfd);
}

static int
open_temp_name (struct new_file *nf, mode_t mode, const char *path)
{
  for (int attempt = 0; attempt < 100; attempt++) {
    struct vhd_guid random;
    int r;

    /* Never leave a name that we did not create for the cleanup. */
    nf->temp_name[0] = '\0';
    r = vhd_guid_generate (&random);
    if (r < 0)
      return r;
    snprintf (nf->temp_name, sizeof nf->temp_name,
              ".%.200s.%02x%02x%02x%02x%02x%02x.tmp", nf->name,
              random.bytes[10], random.bytes[11], random.bytes[12],
              random.bytes[13], random.bytes[14], random.bytes[15]);
    nf->fd = openat (nf->dirfd, nf->temp_name,
                     O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (nf->fd >= 0)
      return 0;
    if (errno != EEXIST) {
      nf->temp_name[0] = '\0';
      return vhd_error (errno, "%s: creating a temporary file in its"
                        " folder: %m", path);
    }
  }
  nf->temp_name[0] = '\0';
  return vhd_error (EEXIST, "%s: no free temporary name in its folder",
                    path);
}

/* mode: as for open(2), the umask applies. */
static int
open_new_file (struct new_file *nf, const char *dir, mode_t mode,
               const char *path)
{
  nf->dirfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (nf->dirfd == -1)
    return vhd_error (errno, "%s: opening its folder %s: %m", path, dir);
  nf->fd = openat (nf->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
  if (nf->fd >= 0)
    return 0;
  /* Filesystems without O_TMPFILE say so in one of these ways. */
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
    return vhd_error (errno, "%s: creating the file in %s: %m", path, dir);
  return open_temp_name (nf, mode, path);
}

static int
link_unnamed (struct new_file *nf, int fd)
{
  char proc[64];

  snprintf (proc, sizeof proc, "/proc/self/fd/%d", fd);
  if (linkat (AT_FDCWD, proc, nf->dirfd, nf->name, AT_SYMLINK_FOLLOW) == 0)
    return 0;
  /* Without /proc; this one needs CAP_DAC_READ_SEARCH. */
  if (errno == ENOENT &&
      linkat (fd, "", nf->dirfd, nf->name, AT_EMPTY_PATH) == 0)
    return 0;
  return -1;
}

static int
link_temp_name (struct new_file *nf)
{
  if (linkat (nf->dirfd, nf->temp_name, nf->dirfd, nf->name, 0) == 0) {
    unlinkat (nf->dirfd, nf->temp_name, 0);
    nf->temp_name[0] = '\0';
    return 0;
  }
  /* Filesystems without hard links (vfat) may still rename atomically. */
  if ((errno == EPERM || errno == EOPNOTSUPP) &&
      renameat2 (nf->dirfd, nf->temp_name, nf->dirfd, nf->name,
                 RENAME_NOREPLACE) == 0) {
    nf->temp_name[0] = '\0';
    return 0;
  }
  return -1;
}

/* Give the finished file its name, never replacing one that exists, and
 * make the name durable.  fd: the file (with O_TMPFILE).
 */
static int
link_new_file (struct new_file *nf, int fd, const char *path)
{
  int r = nf->temp_name[0] ? link_temp_name (nf) : link_unnamed (nf, fd);

  if (r == -1 && errno == EEXIST)
    return vhd_error (EEXIST, "%s: the file exists (it appeared while the"
                      " disk was being built); nothing was overwritten",
                      path);
  if (r == -1)
    return vhd_error (errno, "%s: linking the new file into place: %m",
                      path);
  if (fsync (nf->dirfd) == -1) {
    r = vhd_error (errno, "%s: fsync of its folder: %m", path);
    unlinkat (nf->dirfd, nf->name, 0);
    return r;
  }
  return 0;
}

static int
apply_security (int fd, const struct vhd_security_descriptor *security,
                const char *path)
{
  if (security == NULL)
    return 0;
  /* Owner first: chown may clear the set-id bits of the mode. */
  if (security->set_owner && fchown (fd, security->uid, security->gid) == -1)
    return vhd_error (errno, "%s: security: setting the owner to %u:%u: %m",
                      path, (unsigned) security->uid,
                      (unsigned) security->gid);
  if (security->set_mode && fchmod (fd, security->mode) == -1)
    return vhd_error (errno, "%s: security: setting mode 0%o: %m", path,
                      (unsigned) security->mode);
  return 0;
}

/* The target's folder (allocated) and its name within it. */
static int
split_path (const char *path, char **dir, const char **name)
{
  const char *slash = strrchr (path, '/');

  *name = slash ? slash + 1 : path;
  if (**name == '\0' || strcmp (*name, ".") == 0 || strcmp (*name, "..") == 0)
    return vhd_error (EINVAL, FN ": path %s does not end in a file name",
                      path);
  if (slash == NULL)
    *dir = strdup (".");
  else if (slash == path)
    *dir = strdup ("/");
  else
    *dir = strndup (path, (size_t) (slash - path));
  if (*dir == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  return 0;
}

/* A source's size settles the new disk's size (maximum_size 0), or
 * bounds it; the format says which sizes it can take.
 */
static int
size_from_source (const struct vhd_format_ops *format, struct create_args *a,
                  const struct vhd_source *src)
{
  CLEANUP_FREE char *what = NULL;
  uint64_t size = src->size;
  int r;

  if (asprintf (&what, "source_path %s (%s)", src->path,
                vhd_source_describe (src)) == -1) {
    what = NULL;
    return vhd_error (ENOMEM, FN ": out of memory");
  }
  if ((r = check_source_size (format, &a->req, what, size)) < 0)
    return r;
  if (a->req.maximum_size == 0) {
    a->req.maximum_size = size;
    return 0;
  }
  if (a->req.maximum_size < size)
    return vhd_error (EINVAL, FN ": maximum_size %" PRIu64 " is smaller"
                      " than source_path %s (%s, %" PRIu64 " bytes); the"
                      " new disk must hold all of the source: pass 0 (the"
                      " source's size) or more", a->req.maximum_size,
                      src->path, vhd_source_describe (src), size);
  return 0;
}

/* A disk's partition table and file systems count in its logical
 * sectors: copied into a disk whose sectors have another size, every LBA
 * in them would point elsewhere.  So the new disk takes the source's
 * logical sector size (when sector_size is 0) or must have it, and a
 * format that cannot have it (VHD, for 4096-byte sectors) is refused.  A
 * raw source has no sector size of its own; it is copied as 512-byte
 * sectors, or into whatever the caller asked for.
 */
static int
sector_size_from_source (const struct vhd_format_ops *format,
                         struct create_args *a, const struct vhd_source *src)
{
  struct vhd_create_request req = a->req;
  uint32_t sector;
  char why[1024];

  if (src->kind != VHD_SOURCE_VHD)
    return 0;
  sector = src->disk->sector_size;
  if (a->req.sector_size != 0 && a->req.sector_size != sector)
    return vhd_error (EINVAL, FN ": sector_size_in_bytes is %" PRIu32 " but"
                      " source_path %s (%s) has %" PRIu32 "-byte logical"
                      " sectors; every LBA in its partition table and file"
                      " systems would change meaning (pass 0 or %" PRIu32
                      ")", a->req.sector_size, src->path,
                      vhd_source_describe (src), sector, sector);
  if (sector == 512 && a->req.sector_size == 0)
    return 0;                   /* every format's default */
  /* Could the new disk have the source's sectors? (Its own rules, as if
   * the caller had asked for them with version 2 parameters.)
   */
  req.version = VHD_CREATE_VERSION_2;
  req.sector_size = sector;
  if (format->check_create_geometry (&req) < 0) {
    snprintf (why, sizeof why, "%s", vhd_last_error ());
    return vhd_error (EINVAL, FN ": source_path %s (%s) has %" PRIu32
                      "-byte logical sectors, which a %s cannot have (%s);"
                      " every LBA in its partition table and file systems"
                      " would change meaning: convert it to a format with"
                      " %" PRIu32 "-byte sectors", src->path,
                      vhd_source_describe (src), sector, format->name, why,
                      sector);
  }
  a->req.sector_size = sector;
  return 0;
}

/* Everything that building the disk needs, owned by whoever runs it. */
struct create_job {
  char *path;                   /* a copy of the target's path */
  char *child_dir;              /* its folder, resolved */
  struct new_file nf;           /* nf.name points into path */
  struct create_args a;         /* maximum_size settled; paths unused */
  uint32_t flags;
  const struct vhd_format_ops *format;  /* the new disk's */
  vhd_disk *parent;
  struct vhd_create_parent parent_info; /* for format->create */
  char *parent_real_path;
  struct vhd_source *source;
  vhd_disk **handle;
};

static void
free_job (void *opaque)
{
  struct create_job *job = opaque;

  if (job == NULL)
    return;
  cleanup_new_file (&job->nf);
  if (job->parent)
    vhd_close (job->parent);
  vhd_source_close (job->source);
  free (job->parent_real_path);
  free (job->child_dir);
  free (job->path);
  free (job);
}

/* Close a disk whose file was never linked (or was removed again): what
 * it holds is going away, so vhd_close's flush would only waste time.
 */
static void
discard_unlinked_disk (vhd_disk *disk)
{
  disk->readonly = true;
  vhd_close (disk);
}

/* Lay the image out, fill it from the source, link it under its name and
 * deliver the handle.  op is NULL when the caller's thread runs it.
 */
static int
build_disk (void *opaque, struct vhd_operation *op)
{
  struct create_job *job = opaque;
  vhd_disk *disk = NULL;
  int fd, r;

  r = job->format->create (job->nf.fd, job->path, job->child_dir,
                           &job->a.unique_id, job->a.req.maximum_size,
                           job->a.req.block_size, job->a.req.sector_size,
                           job->a.req.physical_sector_size, job->flags,
                           job->parent ? &job->parent_info : NULL);
  if (r < 0)
    return r;
  /* With a source, the flush after the copy makes it all durable. */
  if (!job->source && fsync (job->nf.fd) == -1)
    return vhd_error (errno, "%s: fsync: %m", job->path);

  fd = job->nf.fd;
  job->nf.fd = -1;              /* open_handle owns it now */
  r = open_handle (fd, job->path, &job->a, job->parent, &disk);
  if (r < 0)
    return r;
  if (job->source) {
    r = vhd_copy_source (job->source, disk, op);
    if (r == 0)
      r = vhd_flush (disk);
    /* Durable now, so the pages are clean and can go: left in the cache
     * (in large folios), they slow down the image's first user.
     */
    if (r == 0)
      vhd_file_drop_cache (vhd_backend_file_fd (disk->be), 0, 0);
  }
  if (r == 0 && !vhd_operation_commit (op))
    r = vhd_error (ECANCELED, "%s: the create was cancelled; nothing was"
                   " left behind", job->path);
  if (r == 0)
    r = link_new_file (&job->nf, vhd_backend_file_fd (disk->be),
                       job->path);
  if (r < 0) {
    discard_unlinked_disk (disk);
    return r;
  }
  *job->handle = disk;
  return 0;
}

/* What the new disk's driver needs of the parent (opened), found here so
 * that a driver never reaches into another disk's storage: the path as
 * the caller gave it is the parent's, resolved to where it really is.
 */
static int
describe_parent (struct create_job *job)
{
  const vhd_disk *parent = job->parent;
  struct stat st;

  job->parent_real_path = realpath (parent->path, NULL);
  if (job->parent_real_path == NULL)
    return vhd_error (errno, "parent %s: resolving its path: %m",
                      parent->path);
  if (fstat (vhd_backend_file_fd (parent->be), &st) == -1)
    return vhd_error (errno, "parent %s: fstat: %m", parent->path);
  job->parent_info = (struct vhd_create_parent) {
    .disk = parent,
    .ops = parent->ops,
    .path = parent->path,
    .real_path = job->parent_real_path,
    .size = parent->size,
    .mtime = (int64_t) st.st_mtime,
  };
  return 0;
}

/* The checks that need the file system, and the unnamed file: everything
 * that can fail before the work starts.
 */
static int
prepare_job (struct create_job *job, const char *path,
             const struct vhd_security_descriptor *security)
{
  struct create_args *a = &job->a;
  CLEANUP_FREE char *dir = NULL;
  struct stat st;
  int r;

  /* A friendly early answer; the link at the end is what guarantees it. */
  if (lstat (path, &st) == 0)
    return vhd_error (EEXIST, "%s: the file exists; vhd_create_virtual_disk"
                      " never overwrites one (remove it or pick another"
                      " path)", path);
  job->path = strdup (path);
  if (job->path == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", path);
  if ((r = split_path (job->path, &dir, &job->nf.name)) < 0)
    return r;
  job->child_dir = realpath (dir, NULL);
  if (job->child_dir == NULL)
    return vhd_error (errno, "%s: its folder %s: %m", path, dir);
  if (vhd_guid_is_zero (&a->unique_id) &&
      (r = vhd_guid_generate (&a->unique_id)) < 0)
    return vhd_error (r, "%s: generating a unique id: %s", path,
                      strerror (-r));
  if (a->req.parent_path &&
      ((r = open_parent (a->req.parent_path, a->parent_dirs,
                         &job->parent)) < 0 ||
       (r = describe_parent (job)) < 0))
    return r;
  if (a->req.source_path) {
    r = vhd_source_open (a->req.source_path,
                         a->source_type ? a->source_type->device_id
                                        : VHD_STORAGE_DEVICE_UNKNOWN,
                         job->flags
                         & VHD_CREATE_FLAG_PREVENT_WRITES_TO_SOURCE_DISK,
                         a->parent_dirs, &job->source);
    if (r == 0)
      r = sector_size_from_source (job->format, a, job->source);
    if (r == 0)
      r = size_from_source (job->format, a, job->source);
    if (r < 0)
      return r;
  }
  /* The caller's strings need not outlive the call. */
  a->req.parent_path = a->req.source_path = NULL;
  a->parent_type = a->source_type = NULL;
  a->parent_dirs = NULL;

  if ((r = open_new_file (&job->nf, dir, security && security->set_mode
                          ? 0600 : 0666, path)) < 0 ||
      (r = apply_security (job->nf.fd, security, path)) < 0)
    return r;
  return 0;
}

int
vhd_create_virtual_disk (const struct vhd_storage_type *storage_type,
                         const char *path,
                         uint32_t access_mask,
                         const struct vhd_security_descriptor *security,
                         uint32_t flags,
                         uint32_t provider_specific_flags,
                         const struct vhd_create_parameters *parameters,
                         struct vhd_overlapped *overlapped,
                         vhd_disk **handle)
{
  struct create_job *job;
  uint64_t size;
  int r;

  vhd_clear_error ();
  if (handle)
    *handle = NULL;
  job = calloc (1, sizeof *job);
  if (job == NULL)
    return vhd_error (ENOMEM, FN ": out of memory");
  job->nf.dirfd = job->nf.fd = -1;
  job->flags = flags;
  job->handle = handle;

  r = check_arguments (storage_type, path, access_mask, flags,
                       provider_specific_flags, parameters, overlapped,
                       handle, &job->a, &job->format);
  if (r == 0)
    r = prepare_job (job, path, security);
  if (r < 0) {
    free_job (job);
    return r;
  }

  if (overlapped) {
    size = job->parent ? vhd_get_size (job->parent) : job->a.req.maximum_size;
    return vhd_operation_start (overlapped, size, build_disk, free_job, job);
  }
  r = build_disk (job, NULL);
  free_job (job);
  return r;
}
