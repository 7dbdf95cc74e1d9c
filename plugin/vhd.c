/* vhdkit: nbdkit plugin serving a Microsoft VHD image, or every VHD in
 * a folder as named exports (dir=).
 *
 * Thin by design: configuration keys become vhd_open() options and every
 * data callback is one engine call on the connection's disk.  In
 * single-file mode the image (with its parent chain) is opened once,
 * before nbdkit accepts connections, and shared by all of them; in dir=
 * mode exports.c opens each image for its first connection and shares it
 * the same way.  The engine is thread-safe and holds the lock that keeps
 * other writers away from the image file.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "exports.h"
#include "vhdkit.h"

/* Configuration, set by .config and checked in .config_complete. */
static char *filename;
static char *dirname;                   /* dir=: serve the folder's images */
static bool readonly;
static bool force_share;
static bool ignore_parent_id_mismatch;
static unsigned max_chain_depth;        /* 0: the engine's default */
static int64_t max_metadata;            /* 0: the engine's default */
static char **parent_dirs;              /* NULL-terminated once non-empty */
static size_t nr_parent_dirs;

/* Single-file mode: the one open disk, shared by every connection. */
static vhd_disk *disk;

/* A connection: the disk it serves (in dir= mode, its export's). */
struct handle {
  vhd_disk *disk;
  bool readonly;
  struct export *export;        /* dir= mode only */
};

static void
vhd_unload (void)
{
  size_t i;

  if (disk)
    vhd_close (disk);
  if (dirname)
    exports_unload ();
  free (filename);
  free (dirname);
  for (i = 0; i < nr_parent_dirs; ++i)
    free (parent_dirs[i]);
  free (parent_dirs);
}

static int
add_parent_dir (const char *value)
{
  char *dir, **dirs;

  /* The engine would refuse the list only when it looks for a parent,
   * and only for a differencing image: refuse it now, whatever the image.
   */
  if (nr_parent_dirs == VHD_MAX_PARENT_DIRS) {
    nbdkit_error ("parent-dir: too many parent folders (at most %d)",
                  VHD_MAX_PARENT_DIRS);
    return -1;
  }
  dir = nbdkit_realpath (value);
  if (dir == NULL)
    return -1;
  /* One more for the new entry, one for the terminating NULL. */
  dirs = realloc (parent_dirs, (nr_parent_dirs + 2) * sizeof *dirs);
  if (dirs == NULL) {
    nbdkit_error ("realloc: %m");
    free (dir);
    return -1;
  }
  parent_dirs = dirs;
  parent_dirs[nr_parent_dirs++] = dir;
  parent_dirs[nr_parent_dirs] = NULL;
  return 0;
}

static int
parse_bool_key (const char *value, bool *out)
{
  int r = nbdkit_parse_bool (value);

  if (r == -1)
    return -1;
  *out = r;
  return 0;
}

static int
vhd_config (const char *key, const char *value)
{
  if (strcmp (key, "file") == 0) {
    free (filename);
    filename = nbdkit_realpath (value);
    if (filename == NULL)
      return -1;
  }
  else if (strcmp (key, "dir") == 0) {
    free (dirname);
    dirname = nbdkit_realpath (value);
    if (dirname == NULL)
      return -1;
  }
  else if (strcmp (key, "readonly") == 0)
    return parse_bool_key (value, &readonly);
  else if (strcmp (key, "force-share") == 0)
    return parse_bool_key (value, &force_share);
  else if (strcmp (key, "parent-dir") == 0)
    return add_parent_dir (value);
  else if (strcmp (key, "max-chain-depth") == 0) {
    if (nbdkit_parse_unsigned ("max-chain-depth", value,
                               &max_chain_depth) == -1)
      return -1;
    if (max_chain_depth == 0 || max_chain_depth > VHD_MAX_CHAIN_DEPTH) {
      nbdkit_error ("max-chain-depth must be from 1 to %d",
                    VHD_MAX_CHAIN_DEPTH);
      return -1;
    }
  }
  else if (strcmp (key, "ignore-parent-id-mismatch") == 0)
    return parse_bool_key (value, &ignore_parent_id_mismatch);
  else if (strcmp (key, "max-metadata") == 0) {
    max_metadata = nbdkit_parse_size (value);
    if (max_metadata == -1)
      return -1;
  }
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

static int
vhd_config_complete (void)
{
  if (filename && dirname) {
    nbdkit_error ("file= and dir= cannot be used together: serve one image"
                  " or a folder of them");
    return -1;
  }
  if (filename == NULL && dirname == NULL) {
    nbdkit_error ("you must supply the file=<DISK.vhd> or dir=<DIR>"
                  " parameter");
    return -1;
  }
  /* A writer never shares (qemu's rule too): say so now, not at open. */
  if (force_share && !readonly) {
    nbdkit_error ("force-share=true needs readonly=true");
    return -1;
  }
  return 0;
}

/* The public limits, spelled into the help text. */
#define VHD_STR_(x) #x
#define VHD_STR(x) VHD_STR_(x)

#define vhd_config_help \
  "[file=]<DISK.vhd>      The VHD image to serve (or dir=).\n" \
  "dir=<DIR>              Serve every VHD image in DIR as a named export.\n" \
  "readonly=true          Open the image read-only (shared with other readers).\n" \
  "force-share=true       With readonly=true: take no lock (as qemu-img -U).\n" \
  "parent-dir=<DIR>       Also look for parent images in DIR (repeatable,\n" \
  "                       up to " VHD_STR (VHD_MAX_PARENT_DIRS) " times).\n" \
  "max-chain-depth=<N>    Refuse differencing chains deeper than N (default\n" \
  "                       " VHD_STR (VHD_DEFAULT_MAX_CHAIN_DEPTH) \
  ", at most " VHD_STR (VHD_MAX_CHAIN_DEPTH) ").\n" \
  "ignore-parent-id-mismatch=true\n" \
  "                       Open a parent whose unique ID does not match.\n" \
  "max-metadata=<SIZE>    Memory an image's block table may take (default 1G)."

static void
vhd_dump_plugin (void)
{
  printf ("vhd_version=%s\n", vhd_get_version ());
  printf ("vhd_io_uring=%s\n",
          strcmp (vhd_io_backend (), "io_uring") == 0 ? "yes" : "no");
}

/* Open the image here, before nbdkit forks and listens, so that a bad
 * image (bad checksum, missing parent, locked by another writer) stops
 * nbdkit from starting, with the engine's message.
 */
static int
vhd_get_ready (void)
{
  const struct vhd_open_options opts = {
    .readonly = readonly,
    .parent_dirs = (const char *const *) parent_dirs,
    .max_chain_depth = max_chain_depth,
    .ignore_parent_id_mismatch = ignore_parent_id_mismatch,
    .flags = force_share ? VHD_OPEN_FLAG_FORCE_SHARE : 0,
    .max_metadata_bytes = (uint64_t) max_metadata,
  };
  int r;

  /* dir=: each image is opened by its first connection. */
  if (dirname)
    return exports_init (dirname, &opts);

  r = vhd_open (filename, &opts, &disk);
  if (r < 0) {
    nbdkit_error ("%s", vhd_last_error ());
    disk = NULL;
    return -1;
  }
  nbdkit_debug ("vhd: opened %s%s, %" PRIu64 " bytes",
                filename, readonly ? " read-only" : "", vhd_get_size (disk));
  return 0;
}

/* dir=: the exports are the folder's images. */
static int
vhd_list_exports (int conn_readonly, int is_tls,
                  struct nbdkit_exports *exports)
{
  if (dirname == NULL)
    return nbdkit_use_default_export (exports);
  return exports_list (exports);
}

/* dir= has no default export: "" stays "", and .open refuses it with a
 * message saying to name one.
 */
static const char *
vhd_default_export (int conn_readonly, int is_tls)
{
  return "";
}

/* A connection holds only which disk it serves.  (A read-only
 * connection, nbdkit -r, is enforced by nbdkit, which then never calls
 * the write callbacks; in dir= mode it also opens an image that is not
 * open yet read-only.)
 */
static void *
vhd_open_connection (int conn_readonly)
{
  struct handle *h = calloc (1, sizeof *h);

  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  if (dirname == NULL) {
    h->disk = disk;
    h->readonly = readonly;
    return h;
  }
  h->export = export_acquire (nbdkit_export_name (), conn_readonly);
  if (h->export == NULL) {
    free (h);
    return NULL;
  }
  h->disk = export_disk (h->export);
  h->readonly = export_readonly (h->export);
  return h;
}

static void
vhd_close_connection (void *handle)
{
  struct handle *h = handle;

  if (h->export)
    export_release (h->export);
  free (h);
}

static vhd_disk *
disk_of (void *handle)
{
  return ((struct handle *) handle)->disk;
}

/* Every engine failure goes to the client as its errno and to the log
 * with the engine's message, which names the image.
 */
static int
engine_error (int r)
{
  nbdkit_error ("%s", vhd_last_error ());
  nbdkit_set_error (-r);
  return -1;
}

static int64_t
vhd_get_size_cb (void *handle)
{
  return (int64_t) vhd_get_size (disk_of (handle));
}

/* Minimum 1: the engine does read-modify-write for sub-sector requests,
 * so clients that send unaligned requests (nbdsh, byte-granular tools)
 * are served directly instead of being refused by a strict client-side
 * alignment check.  Preferred 4096, the page size, which keeps clients
 * that honour it from asking for read-modify-write at all.  Maximum
 * 32 MiB: the largest request nbdcopy sends, half of what nbdkit accepts,
 * and no more than 17 blocks of 2 MiB, so one request's batch of
 * segments stays small.
 */
static int
vhd_block_size (void *handle,
                uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  *minimum = 1;
  *preferred = 4096;
  *maximum = 32 * 1024 * 1024;
  return 0;
}

static int
vhd_can_write (void *handle)
{
  return !((struct handle *) handle)->readonly;
}

static int
vhd_can_true (void *handle)
{
  return 1;
}

/* One disk serves every connection, so a flush on any connection makes
 * the writes of all connections durable: that is the multi-conn promise.
 */
static int
vhd_can_multi_conn (void *handle)
{
  return 1;
}

static int
vhd_can_fua (void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

/* nbdkit emulates a cache request by reading the range, which brings the
 * image's data into the host page cache: what the client asked for, and
 * free for unallocated ranges.
 */
static int
vhd_can_cache (void *handle)
{
  return NBDKIT_CACHE_EMULATE;
}

static int
vhd_pread_cb (void *handle, void *buf, uint32_t count, uint64_t offset,
              uint32_t flags)
{
  int r = vhd_pread (disk_of (handle), buf, count, offset);

  return r < 0 ? engine_error (r) : 0;
}

static uint32_t
io_flags (uint32_t flags)
{
  uint32_t f = 0;

  if (flags & NBDKIT_FLAG_FUA)
    f |= VHD_IO_FUA;
  if (flags & NBDKIT_FLAG_MAY_TRIM)
    f |= VHD_IO_MAY_TRIM;
  if (flags & NBDKIT_FLAG_FAST_ZERO)
    f |= VHD_IO_FAST_ZERO;
  return f;
}

static int
vhd_pwrite_cb (void *handle, const void *buf, uint32_t count,
               uint64_t offset, uint32_t flags)
{
  int r = vhd_pwrite (disk_of (handle), buf, count, offset, io_flags (flags));

  return r < 0 ? engine_error (r) : 0;
}

static int
vhd_flush_cb (void *handle, uint32_t flags)
{
  int r = vhd_flush (disk_of (handle));

  return r < 0 ? engine_error (r) : 0;
}

static int
vhd_trim_cb (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int r = vhd_trim (disk_of (handle), count, offset, io_flags (flags));

  return r < 0 ? engine_error (r) : 0;
}

static int
vhd_zero_cb (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int r = vhd_zero (disk_of (handle), count, offset, io_flags (flags));

  /* A fast zero that would be slow is an expected answer, not a failure
   * worth logging: the client falls back to writing zeros itself.
   */
  if (r == -ENOTSUP && (flags & NBDKIT_FLAG_FAST_ZERO)) {
    nbdkit_set_error (ENOTSUP);
    return -1;
  }
  return r < 0 ? engine_error (r) : 0;
}

struct extents_state {
  struct nbdkit_extents *extents;
  bool add_failed;              /* nbdkit_add_extent failed (and logged) */
};

static int
add_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  struct extents_state *state = opaque;
  uint32_t type = 0;

  if (flags & VHD_EXTENT_HOLE)
    type |= NBDKIT_EXTENT_HOLE;
  if (flags & VHD_EXTENT_ZERO)
    type |= NBDKIT_EXTENT_ZERO;
  if (nbdkit_add_extent (state->extents, offset, length, type) == -1) {
    state->add_failed = true;
    return -EIO;
  }
  return 0;
}

static int
vhd_extents_cb (void *handle, uint32_t count, uint64_t offset,
                uint32_t flags, struct nbdkit_extents *extents)
{
  struct extents_state state = { .extents = extents };
  int r = vhd_extents (disk_of (handle), count, offset, add_extent, &state);

  if (r < 0) {
    if (state.add_failed) {
      nbdkit_set_error (EIO);
      return -1;
    }
    return engine_error (r);
  }
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name              = "vhd",
  .longname          = "nbdkit Microsoft VHD plugin (vhdkit)",
  .version           = PACKAGE_VERSION,
  .unload            = vhd_unload,
  .config            = vhd_config,
  .config_complete   = vhd_config_complete,
  .config_help       = vhd_config_help,
  .magic_config_key  = "file",
  .dump_plugin       = vhd_dump_plugin,
  .get_ready         = vhd_get_ready,
  .list_exports      = vhd_list_exports,
  .default_export    = vhd_default_export,
  .open              = vhd_open_connection,
  .close             = vhd_close_connection,
  .get_size          = vhd_get_size_cb,
  .block_size        = vhd_block_size,
  .can_write         = vhd_can_write,
  .can_flush         = vhd_can_true,
  .can_trim          = vhd_can_true,
  .can_zero          = vhd_can_true,
  .can_fast_zero     = vhd_can_true,
  .can_extents       = vhd_can_true,
  .can_fua           = vhd_can_fua,
  .can_multi_conn    = vhd_can_multi_conn,
  .can_cache         = vhd_can_cache,
  .pread             = vhd_pread_cb,
  .pwrite            = vhd_pwrite_cb,
  .flush             = vhd_flush_cb,
  .trim              = vhd_trim_cb,
  .zero              = vhd_zero_cb,
  .extents           = vhd_extents_cb,
  .errno_is_preserved = 0,
};

/* The engine is thread-safe: requests from every connection run at once. */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

NBDKIT_REGISTER_PLUGIN (plugin)
