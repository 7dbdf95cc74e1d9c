/* vhdkit: the lock of an image file against a second writer, on qemu's
 * lock bytes (the rules are below, beside the code that takes them).
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "file.h"

/* Image locking, on the bytes and with the rules of qemu's protocol so
 * that vhdkit and qemu keep each other out.  A permission p (bit 0:
 * consistent read, bit 1: write) has two bytes: 100 + p, locked (shared)
 * by whoever holds p, and 200 + p, locked by whoever does not share p
 * with others.  Open file description locks, so that two opens in one
 * process are two users, as they are to qemu.
 *
 *  - A writer holds consistent read and write, and does not share write:
 *    bytes 100, 101 and 201.  It opens only if nobody holds write (101:
 *    another writer) and nobody refuses to share what it holds (200, 201:
 *    a reader that shares no writer).
 *  - A reader (every parent of a chain too) holds consistent read and
 *    does not share write: bytes 100 and 201.  It opens only if nobody
 *    holds write (101) and nobody refuses to share consistent read (200).
 *  - A force-share reader (qemu-img -U) takes no lock at all.
 *
 * So a writer refuses other writers and plain readers, and a reader
 * admits readers and refuses writers, whichever of vhdkit and qemu each
 * is.  (Byte 200 stays unlocked, as qemu's writers leave it, so that a
 * qemu -U reader, which holds consistent read, still gets in.)
 */
#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200
#define PERM_CONSISTENT_READ 0
#define PERM_WRITE 1

/* Does another open file description lock byte off?  -errno on error. */
static int
lock_byte_taken (int fd, off_t off)
{
  struct flock fl = {
    .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1,
  };

  if (fcntl (fd, F_OFD_GETLK, &fl) == -1)
    return -errno;
  return fl.l_type != F_UNLCK;
}

/* Take our locks first and test for others' after, as qemu does: two
 * writers that race then both see the other and both fail, where testing
 * first could let both in.  On failure the caller closes fd, which drops
 * what was taken.
 */
int
vhd_file_lock (int fd, const char *path, bool writer)
{
  const off_t held[] = {
    LOCK_PERM_BASE + PERM_CONSISTENT_READ,
    LOCK_SHARED_BASE + PERM_WRITE,
    LOCK_PERM_BASE + PERM_WRITE,        /* writers only */
  };
  int r;

  for (size_t i = 0; i < (writer ? 3 : 2); i++) {
    struct flock fl = {
      .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = held[i],
      .l_len = 1,
    };
    if (fcntl (fd, F_OFD_SETLK, &fl) == -1) {
      /* Only an exclusive lock on the byte (neither vhdkit nor qemu
       * takes one) can be in the way of a shared one.
       */
      if (errno == EAGAIN || errno == EACCES)
        return vhd_error (EBUSY, "%s: the image is locked by another"
                          " process", path);
      return vhd_error (errno, "%s: locking the image: %m", path);
    }
  }

  /* Somebody writes it: neither a reader nor a writer may come in. */
  r = lock_byte_taken (fd, LOCK_PERM_BASE + PERM_WRITE);
  if (r == 1)
    return vhd_error (EBUSY, "%s: the image is in use: open for writing by"
                      " another process (vhdkit or qemu); stop it first, or read it"
                      " anyway with force-share (-U), at your own risk",
                      path);
  /* Somebody reads it and shares it with no writer. */
  if (r == 0 && writer)
    r = lock_byte_taken (fd, LOCK_SHARED_BASE + PERM_WRITE);
  if (r == 1)
    return vhd_error (EBUSY, "%s: the image is in use: open read-only by"
                      " another process (vhdkit or qemu, perhaps as the parent of a"
                      " chain); a writer cannot share it", path);
  /* Somebody refuses to share even consistent reads. */
  if (r == 0)
    r = lock_byte_taken (fd, LOCK_SHARED_BASE + PERM_CONSISTENT_READ);
  if (r == 1)
    return vhd_error (EBUSY, "%s: the image is in use by another process"
                      " (vhdkit or qemu) that shares it with nobody", path);
  if (r < 0)
    return vhd_error (-r, "%s: testing the image's locks: %s", path,
                      strerror (-r));
  return 0;
}
