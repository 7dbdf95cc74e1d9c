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
#include "serve.h"
#include "vhdkit.h"

/* Configuration, set by .config and checked in .config_complete. */
static char *filename;
static char *dirname;                   /* dir=: serve the folder's images */
static struct vhd_serve_config config;  /* the keys the filter takes too */

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
  if (disk)
    vhd_close (disk);
  if (dirname)
    exports_unload ();
  free (filename);
  free (dirname);
  vhd_serve_config_free (&config);
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
  else {
    switch (vhd_serve_config_key (&config, key, value, true)) {
    case 1:
      break;
    case 0:
      nbdkit_error ("unknown parameter '%s'", key);
      return -1;
    default:
      return -1;
    }
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
  if (config.force_share && !config.readonly) {
    nbdkit_error ("force-share=true needs readonly=true");
    return -1;
  }
  return 0;
}

#define vhd_config_help \
  "[file=]<DISK.vhd>      The VHD image to serve (or dir=).\n" \
  "dir=<DIR>              Serve every VHD image in DIR as a named export.\n" \
  "readonly=true          Open the image read-only (shared with other readers).\n" \
  "force-share=true       With readonly=true: take no lock (as qemu-img -U).\n" \
  VHD_SERVE_CHAIN_HELP

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
  const struct vhd_open_options opts = vhd_serve_open_options (&config);
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
                filename, config.readonly ? " read-only" : "",
                vhd_get_size (disk));
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
    h->readonly = config.readonly;
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

/* The shared data path reports an errno in *err (and has logged the
 * engine's message, which names the image); a plugin hands it to nbdkit.
 */
static int
plugin_error (int err)
{
  nbdkit_set_error (err);
  return -1;
}

static int64_t
vhd_get_size_cb (void *handle)
{
  return (int64_t) vhd_get_size (disk_of (handle));
}

static int
vhd_block_size (void *handle,
                uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  vhd_serve_block_size (minimum, preferred, maximum);
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
  int err;

  if (vhd_serve_pread (disk_of (handle), buf, count, offset, &err) == -1)
    return plugin_error (err);
  return 0;
}

static int
vhd_pwrite_cb (void *handle, const void *buf, uint32_t count,
               uint64_t offset, uint32_t flags)
{
  int err;

  if (vhd_serve_pwrite (disk_of (handle), buf, count, offset, flags,
                        &err) == -1)
    return plugin_error (err);
  return 0;
}

static int
vhd_flush_cb (void *handle, uint32_t flags)
{
  int err;

  if (vhd_serve_flush (disk_of (handle), &err) == -1)
    return plugin_error (err);
  return 0;
}

static int
vhd_trim_cb (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int err;

  if (vhd_serve_trim (disk_of (handle), count, offset, flags, &err) == -1)
    return plugin_error (err);
  return 0;
}

static int
vhd_zero_cb (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  int err;

  if (vhd_serve_zero (disk_of (handle), count, offset, flags, &err) == -1)
    return plugin_error (err);
  return 0;
}

static int
vhd_extents_cb (void *handle, uint32_t count, uint64_t offset,
                uint32_t flags, struct nbdkit_extents *extents)
{
  int err;

  if (vhd_serve_extents (disk_of (handle), count, offset, extents,
                         &err) == -1)
    return plugin_error (err);
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
