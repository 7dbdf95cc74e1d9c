/* vhdkit: opening the files an image lives in (internal). */

#ifndef VHDKIT_FILE_H
#define VHDKIT_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Open path (O_RDONLY or O_RDWR in flags) so that a FIFO or a device
 * cannot block the open, and accept only a regular file or a block
 * device.  Returns the fd (blocking again, close-on-exec), or -errno with
 * a message that names the file and what it is.
 */
int vhd_file_open (const char *path, int flags);

/* The most one write system call (pwrite, or a write SQE) moves; longer
 * writes go in pieces.  The kernel caches a buffered write of 2 MiB or
 * more at a 2 MiB boundary in 2 MiB folios, and copying into those was 30
 * times slower than into smaller ones here (Linux 6.18 guest: 512 MiB in
 * 2 MiB writes at 2 MiB boundaries took 2.1 s of system time, in 1 MiB
 * writes 0.07 s).  VHDX puts blocks at 1 MiB boundaries, so converting to
 * it hit that on every block; a 2 MiB folio is also what makes a later
 * 4 KiB write dirty 2 MiB (vhd_file_drop_cache).
 */
#define VHD_FILE_MAX_WRITE ((size_t) 1 << 20)

/* The second half of vhd_file_open, for an fd that the caller opened with
 * O_NONBLOCK (openat2 beneath a folder): check what it is and clear
 * O_NONBLOCK.  Returns 0 or -errno with a message; fd stays the caller's.
 */
int vhd_file_settle (int fd, const char *path);

/* Drop from the page cache what it holds of [offset, offset + length) of
 * fd (length 0: to the end).  Only clean pages go, so a writer calls it
 * after its sync.  A hint: failures are ignored.
 */
void vhd_file_drop_cache (int fd, uint64_t offset, uint64_t length);

/* Whether the page cache holds any page of [offset, offset + length) of
 * fd (length 0: to the end).  True when it cannot tell (a kernel before
 * Linux 6.5), so that a caller deciding what to drop leaves alone what
 * it cannot see.
 */
bool vhd_file_cached (int fd, uint64_t offset, uint64_t length);

/* Read exactly count bytes at offset; a short read (the file ended) is an
 * error.  Write exactly count bytes, finishing short writes.  Both return
 * 0 or -errno with a message naming file and what.
 */
int vhd_file_pread_exact (int fd, void *buf, size_t count, uint64_t offset,
                          const char *file, const char *what);
int vhd_file_pwrite_exact (int fd, const void *buf, size_t count,
                           uint64_t offset, const char *file,
                           const char *what);

/* Take the image's locks on fd (file-lock.c: qemu's lock bytes, as open
 * file description locks): a writer's, or a reader's that refuses
 * writers.  Returns 0, -EBUSY with a message saying who is in the way, or
 * -errno.  Closing fd drops them.
 */
int vhd_file_lock (int fd, const char *path, bool writer);

/* The fd of a file backend (file.c keeps it in opaque). */
static inline int
vhd_file_fd_of (const struct vhd_backend *be)
{
  return (int) (intptr_t) be->opaque;
}

/* Run a batch of segments of file backends (file-uring.c): on the
 * thread's io_uring ring, or with pread/pwrite.
 */
int vhd_file_run (struct vhd_segment *segs, size_t n, bool write);

#endif /* VHDKIT_FILE_H */
