/* vhdkit: nbdkit filter serving the VHD image that the plugin below holds.
 *
 *   nbdkit --filter=vhd file disk.vhd
 *   nbdkit --filter=vhd curl https://example.com/disk.vhd
 *
 * The engine reaches the image through callbacks into the plugin below
 * (vhd_open_with_backend), so any storage nbdkit can reach serves a VHD in
 * place.  Everything but that backend is shared with the plugin
 * (serve/): the same keys, the same data path, the same messages.
 *
 * One image per export of the plugin below: it is opened at the first
 * connection to that export (a filter cannot reach the plugin before
 * nbdkit has forked, so that is where a bad image is reported), shared by
 * every connection to it through one shared plugin context, and closed
 * when the last of them closes.  Sharing one open disk is what keeps
 * connections coherent: each open disk caches the image's block table
 * and bitmaps, and two of them writing one image would each write back
 * its own stale copy.
 *
 * nbdkit's plugins cannot grow (nbdkit checks every request against the
 * size the plugin reported), so the engine's callback backend refuses a
 * write that would allocate a block, with ENOSPC and a message.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "serve.h"
#include "vhdkit.h"

static struct vhd_serve_config config;

/* With a plugin that serializes requests per connection, two connections
 * sharing one plugin context could otherwise call it at once.  Set once
 * in .get_ready, before any connection.
 */
static bool serialize_next;

/* An image opened from one export of the plugin below. */
struct image {
  struct image *next_image;     /* the list of open images */
  char *exportname;
  unsigned refs;                /* connections using it */
  nbdkit_next *next;            /* shared plugin context */
  pthread_mutex_t next_lock;    /* held around calls when serialize_next */
  bool can_flush;
  bool can_zero;
  bool readonly;
  int64_t size;                 /* of the plugin's export, at open */
  vhd_disk *disk;
  struct vhd_backend_callbacks callbacks;
};

static pthread_mutex_t images_lock = PTHREAD_MUTEX_INITIALIZER;
static struct image *images;

static void
vhd_filter_unload (void)
{
  vhd_serve_config_free (&config);
}

static int
vhd_filter_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                   const char *key, const char *value)
{
  int r = vhd_serve_config_key (&config, key, value, false);

  if (r == 0)                   /* not ours: the plugin's */
    return next (nxdata, key, value);
  return r == 1 ? 0 : -1;
}

#define vhd_filter_config_help VHD_SERVE_CHAIN_HELP

static int
vhd_filter_get_ready (int thread_model)
{
  serialize_next = thread_model != NBDKIT_THREAD_MODEL_PARALLEL;
  return 0;
}

/* The storage callbacks: each is one call into the plugin below, split
 * where nbdkit's 32-bit request length needs it.  A range beyond the
 * plugin's export is refused here rather than passed on: nbdkit asserts
 * that a filter never asks for one.
 */

/* Largest single request passed down. */
#define MAX_REQUEST (32 * 1024 * 1024)

static void
lock_next (struct image *img)
{
  if (serialize_next)
    pthread_mutex_lock (&img->next_lock);
}

static void
unlock_next (struct image *img)
{
  if (serialize_next)
    pthread_mutex_unlock (&img->next_lock);
}

static int
in_range (const struct image *img, size_t count, uint64_t offset)
{
  return offset <= (uint64_t) img->size &&
         count <= (uint64_t) img->size - offset;
}

/* What a storage callback asks of the plugin below. */
enum next_op { NEXT_PREAD, NEXT_PWRITE, NEXT_ZERO };

/* One call into the plugin per MAX_REQUEST bytes of [offset, offset +
 * count); buf is NULL for NEXT_ZERO.  Returns 0 or -errno.
 */
static int
call_next (struct image *img, enum next_op op, const void *buf,
           size_t count, uint64_t offset, uint32_t flags)
{
  const char *p = buf;
  int err = 0, r = 0;

  lock_next (img);
  while (count > 0 && r == 0) {
    uint32_t n = count > MAX_REQUEST ? MAX_REQUEST : count;

    switch (op) {
    case NEXT_PREAD:
      r = img->next->pread (img->next, (char *) p, n, offset, flags, &err);
      break;
    case NEXT_PWRITE:
      r = img->next->pwrite (img->next, p, n, offset, flags, &err);
      break;
    case NEXT_ZERO:
      r = img->next->zero (img->next, n, offset, flags, &err);
      break;
    }
    if (p)
      p += n;
    offset += n;
    count -= n;
  }
  unlock_next (img);
  return r == -1 ? -(err ? err : EIO) : 0;
}

static int
backend_pread (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct image *img = opaque;

  if (!in_range (img, count, offset))
    return -EIO;
  return call_next (img, NEXT_PREAD, buf, count, offset, 0);
}

static int
backend_pwrite (void *opaque, const void *buf, size_t count, uint64_t offset)
{
  struct image *img = opaque;

  if (!in_range (img, count, offset))
    return -ENOSPC;
  return call_next (img, NEXT_PWRITE, buf, count, offset, 0);
}

static int
backend_flush (void *opaque)
{
  struct image *img = opaque;
  int err = 0, r;

  /* A plugin that cannot flush (a read-only one) has nothing to flush. */
  if (!img->can_flush)
    return 0;
  lock_next (img);
  r = img->next->flush (img->next, 0, &err);
  unlock_next (img);
  return r == -1 ? -(err ? err : EIO) : 0;
}

static int
backend_zero (void *opaque, size_t count, uint64_t offset, unsigned flags)
{
  struct image *img = opaque;
  uint32_t f = 0;

  if (!in_range (img, count, offset))
    return -ENOSPC;
  if (flags & VHD_BACKEND_ZERO_MAY_TRIM)
    f |= NBDKIT_FLAG_MAY_TRIM;
  if (flags & VHD_BACKEND_ZERO_FAST)
    f |= NBDKIT_FLAG_FAST_ZERO;
  return call_next (img, NEXT_ZERO, NULL, count, offset, f);
}

static int64_t
backend_get_size (void *opaque)
{
  struct image *img = opaque;
  int64_t size;

  lock_next (img);
  size = img->next->get_size (img->next);
  unlock_next (img);
  return size == -1 ? -EIO : size;
}

/* Close an image whose last connection has gone (or that failed to open). */
static void
image_free (struct image *img)
{
  if (img == NULL)
    return;
  if (img->disk)
    vhd_close (img->disk);
  if (img->next) {
    img->next->finalize (img->next);
    nbdkit_next_context_close (img->next);
  }
  pthread_mutex_destroy (&img->next_lock);
  free (img->exportname);
  free (img);
}

/* Open the image behind EXPORTNAME: a shared context into the plugin, its
 * capabilities asked once (nbdkit requires get_size before a read and
 * can_write before a write on a context), then the engine over it.
 */
static struct image *
image_open (nbdkit_backend *backend, int readonly, const char *exportname)
{
  struct image *img;
  struct vhd_open_options opts;
  const char *name;
  int r;

  img = calloc (1, sizeof *img);
  if (img == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  pthread_mutex_init (&img->next_lock, NULL);
  img->exportname = strdup (exportname);
  if (img->exportname == NULL) {
    nbdkit_error ("strdup: %m");
    goto fail;
  }

  img->next = nbdkit_next_context_open (backend, readonly, exportname, 1);
  if (img->next == NULL)
    goto fail;                  /* nbdkit has said why */
  if (img->next->prepare (img->next) == -1) {
    nbdkit_next_context_close (img->next);
    img->next = NULL;
    goto fail;
  }
  img->size = img->next->get_size (img->next);
  if (img->size == -1)
    goto fail;
  r = readonly ? 0 : img->next->can_write (img->next);
  if (r == -1)
    goto fail;
  img->readonly = r == 0;
  r = img->next->can_flush (img->next);
  if (r == -1)
    goto fail;
  img->can_flush = r > 0;
  r = img->readonly ? NBDKIT_ZERO_NONE : img->next->can_zero (img->next);
  if (r == -1)
    goto fail;
  img->can_zero = r > NBDKIT_ZERO_NONE;

  img->callbacks = (struct vhd_backend_callbacks) {
    .size = sizeof img->callbacks,
    .pread = backend_pread,
    .pwrite = backend_pwrite,
    .flush = backend_flush,
    .zero = img->can_zero ? backend_zero : NULL,
    .get_size = backend_get_size,
  };
  opts = vhd_serve_open_options (&config);
  opts.readonly = img->readonly;
  /* The name the engine's messages give the image: the plugin below does
   * not say which file it serves, only which export.
   */
  name = *exportname ? exportname : "the plugin's disk";
  r = vhd_open_with_backend (&img->callbacks, img, name, &opts, &img->disk);
  if (r < 0) {
    nbdkit_error ("%s", vhd_last_error ());
    img->disk = NULL;
    goto fail;
  }
  nbdkit_debug ("vhd: opened the image of export \"%s\"%s, %" PRIu64 " bytes",
                exportname, img->readonly ? " read-only" : "",
                vhd_get_size (img->disk));
  return img;

 fail:
  image_free (img);
  return NULL;
}

/* A connection's handle: the image it uses. */
struct handle {
  struct image *img;
};

static void *
vhd_filter_open (nbdkit_next_open *next, nbdkit_context *context,
                 int readonly, const char *exportname, int is_tls)
{
  struct handle *h;
  struct image *img;

  /* The plugin is reached through the shared context only: this
   * connection gets no context of its own (next is not called), and the
   * filter's callbacks below never use their next parameter.
   */
  h = calloc (1, sizeof *h);
  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }

  pthread_mutex_lock (&images_lock);
  for (img = images; img; img = img->next_image)
    if (strcmp (img->exportname, exportname) == 0)
      break;
  if (img == NULL) {
    img = image_open (nbdkit_context_get_backend (context), readonly,
                      exportname);
    if (img) {
      img->next_image = images;
      images = img;
    }
  }
  if (img)
    img->refs++;
  pthread_mutex_unlock (&images_lock);

  if (img == NULL) {
    free (h);
    return NULL;
  }
  h->img = img;
  return h;
}

static void
vhd_filter_close (void *handle)
{
  struct handle *h = handle;
  struct image *img = h->img, **p;
  bool last;

  pthread_mutex_lock (&images_lock);
  last = --img->refs == 0;
  if (last) {
    for (p = &images; *p != img; p = &(*p)->next_image)
      ;
    *p = img->next_image;
  }
  pthread_mutex_unlock (&images_lock);

  /* Closing flushes what the engine holds, outside the list's lock. */
  if (last)
    image_free (img);
  free (h);
}

static int64_t
vhd_filter_get_size (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;

  return (int64_t) vhd_get_size (h->img->disk);
}

static int
vhd_filter_block_size (nbdkit_next *next, void *handle,
                       uint32_t *minimum, uint32_t *preferred,
                       uint32_t *maximum)
{
  vhd_serve_block_size (minimum, preferred, maximum);
  return 0;
}

static int
vhd_filter_can_write (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;

  return !h->img->readonly;
}

static int
vhd_filter_can_true (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
vhd_filter_can_fua (nbdkit_next *next, void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

static int
vhd_filter_can_cache (nbdkit_next *next, void *handle)
{
  return NBDKIT_CACHE_EMULATE;
}

/* The plugin's export (an image file) has no description worth passing
 * on as the disk's own; nbdkit would otherwise ask the plugin through the
 * context this connection does not have.
 */
static const char *
vhd_filter_export_description (nbdkit_next *next, void *handle)
{
  return NULL;
}

/* Not a rotational disk, whatever the plugin's storage: the image's
 * blocks are not laid out in the order of the disk's sectors.
 */
static int
vhd_filter_is_rotational (nbdkit_next *next, void *handle)
{
  return 0;
}

static int
vhd_filter_pread (nbdkit_next *next, void *handle, void *buf,
                  uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;

  return vhd_serve_pread (h->img->disk, buf, count, offset, err);
}

static int
vhd_filter_pwrite (nbdkit_next *next, void *handle, const void *buf,
                   uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;

  return vhd_serve_pwrite (h->img->disk, buf, count, offset, flags, err);
}

static int
vhd_filter_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  struct handle *h = handle;

  return vhd_serve_flush (h->img->disk, err);
}

static int
vhd_filter_trim (nbdkit_next *next, void *handle, uint32_t count,
                 uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;

  return vhd_serve_trim (h->img->disk, count, offset, flags, err);
}

static int
vhd_filter_zero (nbdkit_next *next, void *handle, uint32_t count,
                 uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;

  return vhd_serve_zero (h->img->disk, count, offset, flags, err);
}

static int
vhd_filter_extents (nbdkit_next *next, void *handle, uint32_t count,
                    uint64_t offset, uint32_t flags,
                    struct nbdkit_extents *extents, int *err)
{
  struct handle *h = handle;

  return vhd_serve_extents (h->img->disk, count, offset, extents, err);
}

static struct nbdkit_filter filter = {
  .name              = "vhd",
  .longname          = "nbdkit Microsoft VHD filter (vhdkit)",
  .unload            = vhd_filter_unload,
  .config            = vhd_filter_config,
  .config_help       = vhd_filter_config_help,
  .get_ready         = vhd_filter_get_ready,
  .open              = vhd_filter_open,
  .close             = vhd_filter_close,
  .get_size          = vhd_filter_get_size,
  .export_description = vhd_filter_export_description,
  .block_size        = vhd_filter_block_size,
  .can_write         = vhd_filter_can_write,
  .can_flush         = vhd_filter_can_true,
  .is_rotational     = vhd_filter_is_rotational,
  .can_trim          = vhd_filter_can_true,
  .can_zero          = vhd_filter_can_true,
  .can_fast_zero     = vhd_filter_can_true,
  .can_extents       = vhd_filter_can_true,
  .can_fua           = vhd_filter_can_fua,
  .can_multi_conn    = vhd_filter_can_true,
  .can_cache         = vhd_filter_can_cache,
  .pread             = vhd_filter_pread,
  .pwrite            = vhd_filter_pwrite,
  .flush             = vhd_filter_flush,
  .trim              = vhd_filter_trim,
  .zero              = vhd_filter_zero,
  .extents           = vhd_filter_extents,
};

NBDKIT_REGISTER_FILTER (filter)
