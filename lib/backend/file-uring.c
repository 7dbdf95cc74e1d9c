/* vhdkit: the file backend's batches.  io_uring (liburing) with one ring
 * per thread, created the first time a thread does I/O (so after nbdkit
 * forks), and a pread/pwrite fallback used when io_uring cannot be had (a kernel without
 * it, kernel.io_uring_disabled, a seccomp filter) or when VHDKIT_IO=pread.
 *
 * Every segment of a multi-segment request is prepared, submitted once
 * and reaped in one loop that matches completions to segments by
 * user_data; a short transfer is resubmitted for its remainder.  A
 * single segment goes straight to pread/pwrite (see vhd_file_run).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <liburing.h>

#include "backend.h"
#include "core/error.h"
#include "file.h"
#include "vhdkit.h"

#define RING_ENTRIES 128

enum ring_state { RING_UNTRIED = 0, RING_READY, RING_UNAVAILABLE };

struct thread_ring {
  enum ring_state state;
  unsigned fork_generation;
  struct io_uring ring;
};

/* A ring must not be used across fork: the child would share the
 * parent's queues.  The child handler bumps this, and a thread that finds
 * its ring from an older generation sets up a new one.
 */
static unsigned fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
after_fork_in_child (void)
{
  __atomic_add_fetch (&fork_generation, 1, __ATOMIC_RELAXED);
}

static void
register_atfork (void)
{
  pthread_atfork (NULL, NULL, after_fork_in_child);
}

static pthread_key_t ring_key;
static pthread_once_t ring_key_once = PTHREAD_ONCE_INIT;
static _Thread_local struct thread_ring *this_ring;

static void
destroy_ring (void *p)
{
  struct thread_ring *tr = p;

  if (tr->state == RING_READY)
    io_uring_queue_exit (&tr->ring);
  free (tr);
}

static void
make_ring_key (void)
{
  /* The destructor frees the ring when a worker thread exits. */
  pthread_key_create (&ring_key, destroy_ring);
}

static bool
forced_pread (void)
{
  const char *e = getenv ("VHDKIT_IO");
  return e && strcmp (e, "pread") == 0;
}

static struct thread_ring *
get_ring (void)
{
  struct thread_ring *tr = this_ring;
  unsigned generation;
  int r;

  pthread_once (&atfork_once, register_atfork);
  generation = __atomic_load_n (&fork_generation, __ATOMIC_RELAXED);
  if (tr && tr->fork_generation == generation)
    return tr;
  if (tr == NULL) {
    tr = calloc (1, sizeof *tr);
    if (tr == NULL)
      return NULL;
  }
  else if (tr->state == RING_READY)
    /* Inherited across fork: unmap our copy, leave the parent's alone. */
    io_uring_queue_exit (&tr->ring);
  tr->fork_generation = generation;
  tr->state = RING_UNAVAILABLE;
  if (!forced_pread ()) {
    r = io_uring_queue_init (RING_ENTRIES, &tr->ring, 0);
    if (r == 0)
      tr->state = RING_READY;
    else if (getenv ("VHDKIT_DEBUG"))
      fprintf (stderr, "vhdkit: io_uring unavailable (%s), using pread\n",
               strerror (-r));
  }
  if (this_ring == NULL) {
    pthread_once (&ring_key_once, make_ring_key);
    pthread_setspecific (ring_key, tr);
    this_ring = tr;
  }
  return tr;
}

const char *
vhd_io_backend (void)
{
  struct thread_ring *tr = get_ring ();
  return tr && tr->state == RING_READY ? "io_uring" : "pread";
}

static int
io_error (const struct vhd_segment *s, bool write, int err)
{
  if (err == 0)
    return vhd_error (EIO, "%s: %s at offset %" PRIu64 ": unexpected end of"
                      " file", s->be->name, write ? "write" : "read",
                      s->file_offset);
  errno = err;
  return vhd_error (err, "%s: %s of %" PRIu64 " bytes at offset %" PRIu64
                    ": %m", s->be->name, write ? "write" : "read", s->length,
                    s->file_offset);
}

static int
run_pread (struct vhd_segment *segs, size_t n, bool write)
{
  for (size_t i = 0; i < n; i++) {
    struct vhd_segment *s = &segs[i];
    uint64_t done = 0;

    if (s->be == NULL) {
      memset (s->buf, 0, s->length);
      continue;
    }
    while (done < s->length) {
      uint64_t left = s->length - done;
      ssize_t r = write
        ? pwrite (vhd_file_fd_of (s->be), s->buf + done,
                  left < VHD_FILE_MAX_WRITE ? left : VHD_FILE_MAX_WRITE,
                  (off_t) (s->file_offset + done))
        : pread (vhd_file_fd_of (s->be), s->buf + done, s->length - done,
                 (off_t) (s->file_offset + done));
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        return io_error (s, write, r < 0 ? errno : 0);
      done += (uint64_t) r;
    }
  }
  return 0;
}

/* Progress of one segment in the ring. */
struct inflight {
  uint64_t done;
};

static void
prep (struct io_uring_sqe *sqe, struct vhd_segment *s, uint64_t done,
      bool write, size_t index)
{
  size_t len = s->length - done;
  int fd = vhd_file_fd_of (s->be);

  /* One SQE moves at most 2 GiB, a write at most VHD_FILE_MAX_WRITE
   * (file.h says why); the rest is resubmitted.
   */
  if (len > (1u << 30))
    len = 1u << 30;
  if (write && len > VHD_FILE_MAX_WRITE)
    len = VHD_FILE_MAX_WRITE;
  if (write)
    io_uring_prep_write (sqe, fd, s->buf + done, (unsigned) len,
                         s->file_offset + done);
  else
    io_uring_prep_read (sqe, fd, s->buf + done, (unsigned) len,
                        s->file_offset + done);
  io_uring_sqe_set_data64 (sqe, index);
}

/* Consecutive failed submits before a ring is given up. */
#define MAX_SUBMIT_FAILURES 10000

/* After a failed submit: the SQEs that never reached the kernel point
 * into the caller's buffers and would go out with this thread's next
 * submit.  Make them no-ops (keeping user_data, so that their completions
 * are counted like the others').
 */
static void
cancel_unsubmitted (struct io_uring *ring)
{
  for (unsigned i = ring->sq.sqe_head; i != ring->sq.sqe_tail; i++) {
    struct io_uring_sqe *sqe = &ring->sq.sqes[i & ring->sq.ring_mask];
    uint64_t data = sqe->user_data;
    io_uring_prep_nop (sqe);
    io_uring_sqe_set_data64 (sqe, data);
  }
}

static int
run_uring (struct thread_ring *tr, struct vhd_segment *segs, size_t n,
           bool write)
{
  struct io_uring *ring = &tr->ring;
  unsigned failures = 0;
  struct inflight small[32];
  struct inflight *st = n <= 32 ? small : calloc (n, sizeof *st);
  size_t next = 0, in_flight = 0;
  int err = 0;

  if (st == NULL)
    return vhd_error (ENOMEM, "out of memory for %zu I/O segments", n);
  memset (st, 0, (n <= 32 ? 32 : n) * sizeof *st);

  while (next < n || in_flight > 0) {
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int r;

    /* Queue as many segments as the ring has room for. */
    while (next < n && err == 0) {
      struct io_uring_sqe *sqe;
      if (segs[next].be == NULL) {
        memset (segs[next].buf, 0, segs[next].length);
        next++;
        continue;
      }
      sqe = io_uring_get_sqe (ring);
      if (sqe == NULL)
        break;
      prep (sqe, &segs[next], 0, write, next);
      next++;
      in_flight++;
    }
    if (in_flight == 0)
      break;
    r = io_uring_submit_and_wait (ring, 1);
    if (r < 0 && r != -EINTR) {
      /* The kernel may hold some of the requests already, reading or
       * filling the caller's buffers (write_unaligned frees its bounce
       * buffer as soon as we return): queue nothing more, but reap every
       * request before returning the error.
       */
      if (err == 0)
        err = vhd_error (-r, "io_uring_submit: %s", strerror (-r));
      cancel_unsubmitted (ring);
      if (++failures > MAX_SUBMIT_FAILURES) {
        /* Nothing completes and nothing can be waited for: give the ring
         * up (closing it makes the kernel cancel what it holds) and fall
         * back to pread for this thread.
         */
        io_uring_queue_exit (ring);
        tr->state = RING_UNAVAILABLE;
        break;
      }
      if (io_uring_cq_ready (ring) == 0) {
        sched_yield ();
        continue;
      }
    }
    else
      failures = 0;
    io_uring_for_each_cqe (ring, head, cqe) {
      size_t i = (size_t) io_uring_cqe_get_data64 (cqe);
      struct vhd_segment *s = &segs[i];
      seen++;
      in_flight--;
      if (cqe->res <= 0) {
        if (err == 0)
          err = io_error (s, write, -cqe->res);
        continue;
      }
      st[i].done += (uint64_t) cqe->res;
      if (st[i].done < s->length && err == 0) {
        /* Short transfer: queue the rest.  A CQE was just consumed, so
         * there is room once we advance; get_sqe may still fail if the
         * SQ is full of unsubmitted entries, so submit first if needed.
         */
        struct io_uring_sqe *sqe = io_uring_get_sqe (ring);
        if (sqe == NULL) {
          io_uring_submit (ring);
          sqe = io_uring_get_sqe (ring);
        }
        if (sqe == NULL) {
          err = vhd_error (EIO, "%s: io_uring: no submission slot to finish"
                           " a short transfer", s->be->name);
          continue;
        }
        prep (sqe, s, st[i].done, write, i);
        in_flight++;
      }
    }
    io_uring_cq_advance (ring, seen);
  }
  if (st != small)
    free (st);
  return err;
}

int
vhd_file_run (struct vhd_segment *segs, size_t n, bool write)
{
  struct thread_ring *tr;

  /* One segment is one system call either way, and a plain one is
   * cheaper: the kernel cannot do a buffered ext4 write inline from the
   * ring and hands it to an io-wq worker thread, which cost 40% of the
   * IOPS of random 4 KiB writes (scripts/bench).  The ring earns its keep
   * when a request has several segments to run at once.
   */
  if (n <= 1)
    return run_pread (segs, n, write);
  tr = get_ring ();
  if (tr == NULL || tr->state != RING_READY)
    return run_pread (segs, n, write);
  return run_uring (tr, segs, n, write);
}
