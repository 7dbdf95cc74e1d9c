/* vhdkit: the storage backend, every byte of I/O that the engine does on
 * the storage an image lives in (internal).
 *
 * The engine never touches a file descriptor: it reads and writes
 * batches of segments, flushes, zeroes or punches ranges, asks the size
 * and takes the writer lock through a backend.  Two implementations:
 * the local file (file.c, with io_uring in file-uring.c and the lock in
 * file-lock.c) and caller-supplied callbacks (callback.c, public as
 * vhd_open_with_backend), which is how the nbdkit filter reaches the
 * plugin below it.
 *
 * Every operation returns 0 or -errno with a message (vhd_error) that
 * names the backend's name (a path for a file).
 */

#ifndef VHDKIT_BACKEND_H
#define VHDKIT_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vhd_backend;
struct vhd_backend_callbacks;

/* One piece of I/O.  be == NULL means "zero-fill buf" (reads only). */
struct vhd_segment {
  struct vhd_backend *be;
  uint64_t file_offset;
  uint64_t length;
  uint8_t *buf;
};

struct vhd_backend_ops {
  /* Run every segment (all reads or all writes; their backends all have
   * these ops, zero-fill segments may be among them) and wait once;
   * short transfers are finished, not errors.
   */
  int (*run) (struct vhd_segment *segs, size_t n, bool write);
  /* Exactly count bytes at offset; a short read is an error.  what names
   * the structure for messages ("footer", "BAT").
   */
  int (*pread_exact) (struct vhd_backend *be, void *buf, size_t count,
                      uint64_t offset, const char *what);
  int (*pwrite_exact) (struct vhd_backend *be, const void *buf, size_t count,
                       uint64_t offset, const char *what);
  /* Make what was written durable: the data (and what is needed to read
   * it back), or with metadata also the file's own metadata (fsync).
   */
  int (*flush) (struct vhd_backend *be, bool metadata);
  /* Make a range read as zeros and stay allocated.  -EOPNOTSUPP (no
   * message) when the storage cannot do it quickly: the caller writes
   * zeros instead.
   */
  int (*zero) (struct vhd_backend *be, uint64_t offset, uint64_t len);
  /* Make a range read as zeros and give its space back; -EOPNOTSUPP (no
   * message) when the storage cannot.
   */
  int (*punch) (struct vhd_backend *be, uint64_t offset, uint64_t len);
  int (*get_size) (struct vhd_backend *be, uint64_t *size);
  /* Set the size (cut or extend). */
  int (*truncate) (struct vhd_backend *be, uint64_t size);
  /* Keep a second writer out: a writer's lock, or a reader's that refuses
   * writers.  Storage with no lock to take returns 0.
   */
  int (*lock) (struct vhd_backend *be, bool writer);
  /* A hint to start writing back what was written; failures ignored. */
  void (*writeback) (struct vhd_backend *be);
  /* Release what opaque holds (the file's fd). */
  void (*close) (struct vhd_backend *be);
};

struct vhd_backend {
  const struct vhd_backend_ops *ops;
  void *opaque;
  char *name;                   /* for messages: the path, or the
                                 * caller's name for callbacks */
  bool can_grow;                /* writes past the end extend it */
};

/* backend.c: the engine's entry points. */

/* Run every segment as one batch per kind of backend and wait: the
 * batch of a read that crosses a chain may mix a file and zero fill.
 */
int vhd_io_run (struct vhd_segment *segs, size_t n, bool write);
int vhd_backend_pread_exact (struct vhd_backend *be, void *buf, size_t count,
                             uint64_t offset, const char *what);
int vhd_backend_pwrite_exact (struct vhd_backend *be, const void *buf,
                              size_t count, uint64_t offset,
                              const char *what);
int vhd_backend_flush (struct vhd_backend *be, bool metadata);
int vhd_backend_zero (struct vhd_backend *be, uint64_t offset, uint64_t len);
int vhd_backend_punch (struct vhd_backend *be, uint64_t offset, uint64_t len);
int vhd_backend_get_size (struct vhd_backend *be, uint64_t *size);
int vhd_backend_truncate (struct vhd_backend *be, uint64_t size);
int vhd_backend_lock (struct vhd_backend *be, bool writer);
void vhd_backend_writeback (struct vhd_backend *be);
/* Close and free; NULL is fine. */
void vhd_backend_close (struct vhd_backend *be);

/* Allocate a backend named name (copied) around ops and opaque; NULL
 * with a message when out of memory (ops->close is then the caller's).
 */
struct vhd_backend *vhd_backend_new (const struct vhd_backend_ops *ops,
                                     void *opaque, const char *name,
                                     bool can_grow);

/* file.c: the local file backend, taking over fd (closed on failure
 * too).  NULL with a message on failure.
 */
struct vhd_backend *vhd_backend_file_new (int fd, const char *path);
/* The fd under a file backend, or -1 for any other backend.  Only for
 * what needs the file itself: its identity in a chain, linking a new
 * file into its folder, a source's holes.
 */
int vhd_backend_file_fd (const struct vhd_backend *be);

/* callback.c: a backend over the caller's callbacks (vhdkit.h), checked
 * (cb->size, the callbacks that must be there for a reader or a writer).
 */
int vhd_backend_callbacks_new (const struct vhd_backend_callbacks *cb,
                               void *opaque, const char *name,
                               bool readonly, struct vhd_backend **out);

/* overlay.c: a read-only view of lower (which it takes over) with changes
 * laid over it, in the order they were recorded: how a read-only open
 * sees a VHDX log replayed without writing the file.  Recording past
 * lower's end (or extend) makes the view longer, reading zeros there.
 */
int vhd_backend_overlay_new (struct vhd_backend *lower,
                             struct vhd_backend **out);
int vhd_backend_overlay_write (struct vhd_backend *be, const void *buf,
                               size_t len, uint64_t offset);
int vhd_backend_overlay_zero (struct vhd_backend *be, uint64_t offset,
                              uint64_t len);
int vhd_backend_overlay_extend (struct vhd_backend *be, uint64_t size);
/* Free an overlay and give back the storage under it (any other backend
 * is returned as it is).
 */
struct vhd_backend *vhd_backend_overlay_release (struct vhd_backend *be);
/* The storage under an overlay, or NULL for any other backend. */
const struct vhd_backend *
vhd_backend_overlay_lower (const struct vhd_backend *be);

#endif /* VHDKIT_BACKEND_H */
