/* vhdkit tests: the recording layer and the file rebuilder (see
 * crashsim.h).  The __wrap_ functions replace the libc calls that the
 * engine makes (the linker's --wrap); __real_ reaches libc.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <sys/uio.h>
#include <linux/falloc.h>

#include <liburing.h>

#include "crashsim.h"

struct vhd_segment;

ssize_t __real_pwrite (int fd, const void *buf, size_t n, off_t offset);
ssize_t __real_pwrite64 (int fd, const void *buf, size_t n, off_t offset);
int __real_fallocate (int fd, int mode, off_t offset, off_t len);
int __real_fallocate64 (int fd, int mode, off_t offset, off_t len);
int __real_posix_fallocate (int fd, off_t offset, off_t len);
int __real_fdatasync (int fd);
int __real_fsync (int fd);
int __real_ftruncate (int fd, off_t length);
int __real_ftruncate64 (int fd, off_t length);

ssize_t __wrap_pwrite (int fd, const void *buf, size_t n, off_t offset);
ssize_t __wrap_pwrite64 (int fd, const void *buf, size_t n, off_t offset);
int __wrap_fallocate (int fd, int mode, off_t offset, off_t len);
int __wrap_fallocate64 (int fd, int mode, off_t offset, off_t len);
int __wrap_posix_fallocate (int fd, off_t offset, off_t len);
int __wrap_fdatasync (int fd);
int __wrap_fsync (int fd);
int __wrap_ftruncate (int fd, off_t length);
int __wrap_ftruncate64 (int fd, off_t length);

int __real_openat (int dirfd, const char *path, int flags, ...);
int __real_openat64 (int dirfd, const char *path, int flags, ...);
int __real_linkat (int olddirfd, const char *oldpath, int newdirfd,
                   const char *newpath, int flags);
int __real_unlinkat (int dirfd, const char *path, int flags);
int __real_renameat2 (int olddirfd, const char *oldpath, int newdirfd,
                      const char *newpath, unsigned flags);
int __wrap_openat (int dirfd, const char *path, int flags, ...);
int __wrap_openat64 (int dirfd, const char *path, int flags, ...);
int __wrap_linkat (int olddirfd, const char *oldpath, int newdirfd,
                   const char *newpath, int flags);
int __wrap_unlinkat (int dirfd, const char *path, int flags);
int __wrap_renameat2 (int olddirfd, const char *oldpath, int newdirfd,
                      const char *newpath, unsigned flags);

int __real_io_uring_submit (struct io_uring *ring);
int __real_io_uring_submit_and_wait (struct io_uring *ring, unsigned wait_nr);
int __real_vhd_io_run (struct vhd_segment *segs, size_t n, bool write);
int __wrap_io_uring_submit (struct io_uring *ring);
int __wrap_io_uring_submit_and_wait (struct io_uring *ring, unsigned wait_nr);
int __wrap_vhd_io_run (struct vhd_segment *segs, size_t n, bool write);

struct file_id {
  dev_t dev;
  ino_t ino;
};

static bool recording;
static struct file_id tracked;
/* crash_record_create: the folder whose next new file is tracked
 * (armed until that file is made), and the folder's names are logged.
 */
static bool create_armed, dir_tracked;
static struct file_id tracked_dir;
static enum crash_fs_kind fs_kind;
static struct file_id forbidden[8];
static size_t n_forbidden;
static unsigned violations;

/* Several workload threads append to the log at once. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct crash_op *ops;
static size_t n_ops, cap_ops;
static size_t n_ring_ops, n_unaligned;
static unsigned inject_submit_errors;
static uint8_t *initial;
static uint64_t initial_size;

/* Which file does fd refer to: 1 the tracked image (while recording),
 * -1 a forbidden one, 0 anything else.
 */
static int
classify_fd (int fd)
{
  struct stat st;

  if ((!recording && n_forbidden == 0) || fstat (fd, &st) == -1)
    return 0;
  if (recording && st.st_dev == tracked.dev && st.st_ino == tracked.ino)
    return 1;
  for (size_t i = 0; i < n_forbidden; i++)
    if (st.st_dev == forbidden[i].dev && st.st_ino == forbidden[i].ino)
      return -1;
  return 0;
}

static void
violation (const char *what, int fd)
{
  __atomic_add_fetch (&violations, 1, __ATOMIC_RELAXED);
  fprintf (stderr, "crashsim: %s on fd %d, which must not be changed or"
           " cannot be modelled\n", what, fd);
}

static void
append_locked (const struct crash_op *op)
{
  /* A disk's atomic unit is the 512-byte sector: the engine writes whole
   * sectors (write_unaligned merges), so the sector-torn states are what
   * a disk can leave.  A write off that grid would make them too kind.
   */
  if (op->kind == CRASH_OP_WRITE && (op->offset | op->length) % 512)
    n_unaligned++;
  if (op->ring)
    n_ring_ops++;
  if (n_ops == cap_ops) {
    size_t cap = cap_ops ? 2 * cap_ops : 1024;
    struct crash_op *n = realloc (ops, cap * sizeof *n);
    if (n == NULL) {
      fprintf (stderr, "crashsim: out of memory for the op log\n");
      abort ();
    }
    ops = n;
    cap_ops = cap;
  }
  ops[n_ops] = *op;
  __atomic_store_n (&n_ops, n_ops + 1, __ATOMIC_RELEASE);
}

static void
append (const struct crash_op *op)
{
  pthread_mutex_lock (&log_lock);
  append_locked (op);
  pthread_mutex_unlock (&log_lock);
}

static bool
all_zero (const uint8_t *p, size_t n)
{
  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

/* A copy of a write's bytes, or NULL when they are all zeros (the
 * fallback that zeroes a new block by hand): those need no copy.
 */
static uint8_t *
copy_data (const void *buf, size_t n)
{
  uint8_t *data;

  if (all_zero (buf, n))
    return NULL;
  data = malloc (n);
  if (data == NULL) {
    fprintf (stderr, "crashsim: out of memory for a write's data\n");
    abort ();
  }
  memcpy (data, buf, n);
  return data;
}

static void
note_write (int fd, const void *buf, ssize_t done, off_t offset)
{
  struct crash_op op = {
    .kind = CRASH_OP_WRITE, .offset = (uint64_t) offset,
    .length = (uint64_t) done,
  };
  int c;

  if (done <= 0 || (c = classify_fd (fd)) == 0)
    return;
  if (c < 0) {
    violation ("pwrite", fd);
    return;
  }
  op.data = copy_data (buf, (size_t) done);
  append (&op);
}

ssize_t
__wrap_pwrite (int fd, const void *buf, size_t n, off_t offset)
{
  ssize_t r = __real_pwrite (fd, buf, n, offset);
  note_write (fd, buf, r, offset);
  return r;
}

ssize_t
__wrap_pwrite64 (int fd, const void *buf, size_t n, off_t offset)
{
  ssize_t r = __real_pwrite64 (fd, buf, n, offset);
  note_write (fd, buf, r, offset);
  return r;
}

static void
note_fallocate (int fd, int mode, off_t offset, off_t len)
{
  struct crash_op op = {
    .offset = (uint64_t) offset, .length = (uint64_t) len,
    .keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0,
  };
  int c = classify_fd (fd);

  if (c == 0)
    return;
  if (c < 0) {
    violation ("fallocate", fd);
    return;
  }
  if (mode & FALLOC_FL_PUNCH_HOLE)
    op.kind = CRASH_OP_PUNCH;
  else if (mode & FALLOC_FL_ZERO_RANGE)
    op.kind = CRASH_OP_ZERO;
  else if ((mode & ~FALLOC_FL_KEEP_SIZE) == 0)
    op.kind = CRASH_OP_EXTEND;
  else {
    violation ("fallocate with a mode that the log does not model", fd);
    return;
  }
  append (&op);
}

int
__wrap_fallocate (int fd, int mode, off_t offset, off_t len)
{
  int r = __real_fallocate (fd, mode, offset, len);
  if (r == 0)
    note_fallocate (fd, mode, offset, len);
  return r;
}

int
__wrap_fallocate64 (int fd, int mode, off_t offset, off_t len)
{
  int r = __real_fallocate64 (fd, mode, offset, len);
  if (r == 0)
    note_fallocate (fd, mode, offset, len);
  return r;
}

int
__wrap_posix_fallocate (int fd, off_t offset, off_t len)
{
  int r = __real_posix_fallocate (fd, offset, len);
  /* It may write zeros or allocate; the log does not model it. */
  if (r == 0 && classify_fd (fd) != 0)
    violation ("posix_fallocate", fd);
  return r;
}

/* Is fd the folder whose names are logged? */
static bool
is_tracked_dir (int fd)
{
  struct stat st;

  return dir_tracked && recording && fstat (fd, &st) == 0 &&
         st.st_dev == tracked_dir.dev && st.st_ino == tracked_dir.ino;
}

static void
note_sync (int fd)
{
  struct crash_op op = { .kind = CRASH_OP_SYNC };
  if (classify_fd (fd) > 0)
    append (&op);
  else if (is_tracked_dir (fd)) {
    op.kind = CRASH_OP_DIR_SYNC;
    append (&op);
  }
}

/* A sync changes no byte of the file, and what it makes durable is what
 * the log simulates, so the real one is skipped: on a disk-backed /tmp
 * each would cost milliseconds, thousands of times.
 * VHDKIT_CRASH_REAL_SYNC=1 makes the real call as well.
 */
static bool
real_sync_wanted (void)
{
  static int wanted = -1;
  if (wanted < 0) {
    const char *e = getenv ("VHDKIT_CRASH_REAL_SYNC");
    wanted = e && strcmp (e, "1") == 0;
  }
  return wanted;
}

/* The sync is logged when it is called, not when it returns: it makes
 * durable what had completed before the call; a write that another thread
 * completes while it runs comes after it in the log, so it is not covered
 * (conservative, as the kernel promises no more).
 */
int
__wrap_fdatasync (int fd)
{
  note_sync (fd);
  return real_sync_wanted () ? __real_fdatasync (fd) : 0;
}

int
__wrap_fsync (int fd)
{
  note_sync (fd);
  return real_sync_wanted () ? __real_fsync (fd) : 0;
}

/* The io_uring path.  What a thread's ring submits is read from the SQEs
 * themselves (between the ring's sqe_head and sqe_tail, before the real
 * submit moves them to the kernel), and the writes to the tracked file are
 * kept aside until the vhd_io_run call that made them returns: only then
 * have they all completed (run_uring waits for every CQE), so that is
 * where they enter the log, in submission order.  A sync called while
 * they are in flight therefore never covers them.  vhd_io_run must not
 * return with a request still in the kernel: its buffers are the caller's
 * (a bounce buffer that write_unaligned frees at once), so that is a
 * violation, found by counting the CQEs that the engine consumed.
 */
struct ring_batch {
  int depth;                    /* inside vhd_io_run */
  struct io_uring *ring;        /* the ring this batch used */
  unsigned cq_head;             /* its CQ head at the first submit */
  unsigned flushed;             /* SQEs handed to the kernel */
  struct crash_op *pending;
  size_t n, cap;
};

static _Thread_local struct ring_batch batch;

static void
batch_add (struct crash_op *op)
{
  if (batch.depth == 0) {
    /* A ring used outside vhd_io_run: log at submission. */
    append (op);
    return;
  }
  if (batch.n == batch.cap) {
    size_t cap = batch.cap ? 2 * batch.cap : 64;
    struct crash_op *p = realloc (batch.pending, cap * sizeof *p);
    if (p == NULL) {
      fprintf (stderr, "crashsim: out of memory for ring writes\n");
      abort ();
    }
    batch.pending = p;
    batch.cap = cap;
  }
  batch.pending[batch.n++] = *op;
}

static void
note_sqe (const struct io_uring_sqe *sqe)
{
  struct crash_op op = { .kind = CRASH_OP_WRITE, .ring = true };
  int c;

  if (sqe->opcode == IORING_OP_NOP || sqe->opcode == IORING_OP_READ ||
      sqe->opcode == IORING_OP_READV)
    return;
  if (sqe->flags & IOSQE_FIXED_FILE) {
    violation ("io_uring request on a fixed file", -1);
    return;
  }
  if ((c = classify_fd (sqe->fd)) == 0)
    return;
  if (c < 0) {
    violation ("io_uring write", sqe->fd);
    return;
  }
  op.offset = sqe->off;
  if (sqe->opcode == IORING_OP_WRITE) {
    op.length = sqe->len;
    op.data = copy_data ((const void *) (uintptr_t) sqe->addr, sqe->len);
  }
  else if (sqe->opcode == IORING_OP_WRITEV) {
    const struct iovec *iov = (const struct iovec *) (uintptr_t) sqe->addr;
    uint8_t *flat;
    for (unsigned i = 0; i < sqe->len; i++)
      op.length += iov[i].iov_len;
    flat = malloc (op.length ? op.length : 1);
    if (flat == NULL)
      abort ();
    for (unsigned i = 0, at = 0; i < sqe->len; at += iov[i].iov_len, i++)
      memcpy (flat + at, iov[i].iov_base, iov[i].iov_len);
    op.data = copy_data (flat, op.length);
    free (flat);
  }
  else {
    char what[80];
    snprintf (what, sizeof what, "io_uring opcode %u that the log does not"
              " model", sqe->opcode);
    violation (what, sqe->fd);
    return;
  }
  batch_add (&op);
}

/* Read the SQEs that the coming submit hands to the kernel. */
static void
note_submit (struct io_uring *ring)
{
  struct io_uring_sq *sq = &ring->sq;

  if (batch.depth > 0 && batch.ring == NULL) {
    batch.ring = ring;
    batch.cq_head = *ring->cq.khead;
  }
  for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++)
    note_sqe (&sq->sqes[i & sq->ring_mask]);
  if (batch.depth > 0)
    batch.flushed += sq->sqe_tail - sq->sqe_head;
}

int
__wrap_io_uring_submit (struct io_uring *ring)
{
  note_submit (ring);
  return __real_io_uring_submit (ring);
}

int
__wrap_io_uring_submit_and_wait (struct io_uring *ring, unsigned wait_nr)
{
  note_submit (ring);
  if (inject_submit_errors > 0) {
    /* The kernel took the requests, then the call failed (as a wait that
     * the CQ overflow turns into -EBUSY does): they are still in flight.
     */
    int r;
    inject_submit_errors--;
    r = __real_io_uring_submit (ring);
    return r < 0 ? r : -EBUSY;
  }
  return __real_io_uring_submit_and_wait (ring, wait_nr);
}

int
__wrap_vhd_io_run (struct vhd_segment *segs, size_t n, bool write)
{
  int r;

  if (batch.depth++ == 0) {
    batch.ring = NULL;
    batch.flushed = 0;
    batch.n = 0;
  }
  r = __real_vhd_io_run (segs, n, write);
  if (--batch.depth > 0)
    return r;
  if (batch.ring) {
    struct io_uring *ring = batch.ring;
    unsigned reaped = *ring->cq.khead - batch.cq_head;
    unsigned unsent = ring->sq.sqe_tail - ring->sq.sqe_head;
    if (reaped < batch.flushed || unsent > 0) {
      char what[160];
      snprintf (what, sizeof what, "vhd_io_run returned %d with %u io_uring"
                " request(s) still in flight and %u not submitted",
                r, batch.flushed - (reaped < batch.flushed ? reaped
                                                           : batch.flushed),
                unsent);
      violation (what, -1);
    }
  }
  pthread_mutex_lock (&log_lock);
  for (size_t i = 0; i < batch.n; i++)
    append_locked (&batch.pending[i]);
  pthread_mutex_unlock (&log_lock);
  /* Freed per batch: the array is thread-local, and the threads that
   * write (create's worker, nbdkit's) end without telling us.
   */
  free (batch.pending);
  batch.pending = NULL;
  batch.n = batch.cap = 0;
  return r;
}

void
crash_inject_submit_errors (unsigned n)
{
  inject_submit_errors = n;
}

static void
note_truncate (int fd, off_t length)
{
  struct crash_op op = {
    .kind = CRASH_OP_TRUNCATE, .offset = (uint64_t) length,
  };
  int c = classify_fd (fd);

  if (c < 0)
    violation ("ftruncate", fd);
  else if (c > 0)
    append (&op);
}

int
__wrap_ftruncate (int fd, off_t length)
{
  int r = __real_ftruncate (fd, length);
  if (r == 0)
    note_truncate (fd, length);
  return r;
}

int
__wrap_ftruncate64 (int fd, off_t length)
{
  int r = __real_ftruncate64 (fd, length);
  if (r == 0)
    note_truncate (fd, length);
  return r;
}

/* The names of the file recorded by crash_record_create.  Each wrapper
 * makes the real call, then logs what it did to a name of the tracked
 * file in the tracked folder.
 */
static char *
dup_name (const char *name)
{
  char *s = strdup (name);
  if (s == NULL) {
    fprintf (stderr, "crashsim: out of memory for a name\n");
    abort ();
  }
  return s;
}

static void
note_name (enum crash_op_kind kind, const char *name, const char *old_name)
{
  struct crash_op op = { .kind = kind, .name = dup_name (name) };
  if (old_name)
    op.old_name = dup_name (old_name);
  append (&op);
}

/* Is name in the folder dirfd the tracked file? */
static bool
names_tracked (int dirfd, const char *name)
{
  struct stat st;

  return recording && is_tracked_dir (dirfd) &&
         fstatat (dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         st.st_dev == tracked.dev && st.st_ino == tracked.ino;
}

static bool
dir_is_armed (int dirfd)
{
  struct stat st;

  return create_armed && fstat (dirfd, &st) == 0 &&
         st.st_dev == tracked_dir.dev && st.st_ino == tracked_dir.ino;
}

/* The armed folder's first new file: recording starts, from empty. */
static void
start_tracking_new (int fd, int dirfd, const char *path, int flags)
{
  struct stat st;

  if (fstat (fd, &st) == -1)
    return;
  create_armed = false;
  tracked.dev = st.st_dev;
  tracked.ino = st.st_ino;
  recording = true;
  if ((flags & O_TMPFILE) != O_TMPFILE && names_tracked (dirfd, path))
    note_name (CRASH_OP_NAME_ADD, path, NULL);
}

static int
wrapped_openat (bool is64, int dirfd, const char *path, int flags,
                mode_t mode)
{
  bool creates = (flags & O_TMPFILE) == O_TMPFILE ||
                 (flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL);
  bool armed = creates && dir_is_armed (dirfd);
  int fd;

  if (armed && (flags & O_TMPFILE) == O_TMPFILE &&
      fs_kind != CRASH_FS_TMPFILE) {
    errno = EOPNOTSUPP;         /* as a file system without it says */
    return -1;
  }
  fd = is64 ? __real_openat64 (dirfd, path, flags, mode)
            : __real_openat (dirfd, path, flags, mode);
  if (fd >= 0 && armed)
    start_tracking_new (fd, dirfd, path, flags);
  return fd;
}

int
__wrap_openat (int dirfd, const char *path, int flags, ...)
{
  mode_t mode = 0;
  if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
    va_list ap;
    va_start (ap, flags);
    mode = va_arg (ap, mode_t);
    va_end (ap);
  }
  return wrapped_openat (false, dirfd, path, flags, mode);
}

int
__wrap_openat64 (int dirfd, const char *path, int flags, ...)
{
  mode_t mode = 0;
  if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
    va_list ap;
    va_start (ap, flags);
    mode = va_arg (ap, mode_t);
    va_end (ap);
  }
  return wrapped_openat (true, dirfd, path, flags, mode);
}

int
__wrap_linkat (int olddirfd, const char *oldpath, int newdirfd,
               const char *newpath, int flags)
{
  int r;

  /* vfat: no hard links, between names or from /proc. */
  if (fs_kind == CRASH_FS_NO_LINKS && is_tracked_dir (newdirfd)) {
    errno = EPERM;
    return -1;
  }
  r = __real_linkat (olddirfd, oldpath, newdirfd, newpath, flags);
  if (r == 0 && names_tracked (newdirfd, newpath))
    note_name (CRASH_OP_NAME_ADD, newpath, NULL);
  return r;
}

int
__wrap_unlinkat (int dirfd, const char *path, int flags)
{
  bool tracked_name = names_tracked (dirfd, path);
  int r = __real_unlinkat (dirfd, path, flags);

  if (r == 0 && tracked_name)
    note_name (CRASH_OP_NAME_REMOVE, path, NULL);
  return r;
}

int
__wrap_renameat2 (int olddirfd, const char *oldpath, int newdirfd,
                  const char *newpath, unsigned flags)
{
  bool tracked_name = names_tracked (olddirfd, oldpath);
  int r = __real_renameat2 (olddirfd, oldpath, newdirfd, newpath, flags);

  if (r == 0 && tracked_name) {
    if (is_tracked_dir (newdirfd))
      note_name (CRASH_OP_NAME_MOVE, newpath, oldpath);
    else
      note_name (CRASH_OP_NAME_REMOVE, oldpath, NULL);
  }
  return r;
}

void
crash_set_fs_kind (enum crash_fs_kind kind)
{
  fs_kind = kind;
}

static int
file_id_of (const char *path, struct file_id *id)
{
  struct stat st;

  if (stat (path, &st) == -1)
    return -errno;
  id->dev = st.st_dev;
  id->ino = st.st_ino;
  return 0;
}

int
crash_record_start (const char *path)
{
  int fd, r;
  struct stat st;
  uint64_t done = 0;

  crash_record_free ();
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return -errno;
  if (fstat (fd, &st) == -1) {
    r = -errno;
    close (fd);
    return r;
  }
  initial_size = (uint64_t) st.st_size;
  initial = calloc (1, initial_size ? initial_size : 1);
  if (initial == NULL) {
    close (fd);
    return -ENOMEM;
  }
  while (done < initial_size) {
    ssize_t n = pread (fd, initial + done, initial_size - done, (off_t) done);
    if (n <= 0) {
      r = n < 0 ? -errno : -EIO;
      close (fd);
      return r;
    }
    done += (uint64_t) n;
  }
  close (fd);
  tracked.dev = st.st_dev;
  tracked.ino = st.st_ino;
  dir_tracked = false;
  recording = true;
  return 0;
}

int
crash_record_create (const char *dir)
{
  int r;

  crash_record_free ();
  r = file_id_of (dir, &tracked_dir);
  if (r < 0)
    return r;
  dir_tracked = true;
  create_armed = true;
  return 0;
}

void
crash_record_stop (void)
{
  recording = false;
}

void
crash_record_free (void)
{
  recording = false;
  create_armed = dir_tracked = false;
  for (size_t i = 0; i < n_ops; i++) {
    free (ops[i].data);
    free (ops[i].name);
    free (ops[i].old_name);
  }
  free (ops);
  ops = NULL;
  n_ops = cap_ops = 0;
  n_ring_ops = n_unaligned = 0;
  free (initial);
  initial = NULL;
  initial_size = 0;
}

int
crash_forbid_writes (const char *path)
{
  if (n_forbidden == sizeof forbidden / sizeof forbidden[0])
    return -ENOSPC;
  return file_id_of (path, &forbidden[n_forbidden++]);
}

void
crash_forbid_clear (void)
{
  n_forbidden = 0;
}

unsigned
crash_violations (void)
{
  return __atomic_load_n (&violations, __ATOMIC_RELAXED);
}

size_t
crash_n_ops (void)
{
  return __atomic_load_n (&n_ops, __ATOMIC_ACQUIRE);
}

size_t
crash_n_ring_ops (void)
{
  return n_ring_ops;
}

size_t
crash_n_unaligned (void)
{
  return n_unaligned;
}

const struct crash_op *
crash_get_op (size_t i)
{
  return i < n_ops ? &ops[i] : NULL;
}

static size_t
prefix_to_last (size_t k, enum crash_op_kind kind)
{
  if (k > n_ops)
    k = n_ops;
  while (k > 0 && ops[k - 1].kind != kind)
    k--;
  return k;
}

size_t
crash_durable_prefix (size_t k)
{
  return prefix_to_last (k, CRASH_OP_SYNC);
}

size_t
crash_names_durable_prefix (size_t k)
{
  return prefix_to_last (k, CRASH_OP_DIR_SYNC);
}

#define TORN_PIECE 512u

static void
shuffle (struct crash_piece *p, size_t n, struct rng *r)
{
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t) rng_below (r, i);
    struct crash_piece t = p[i - 1];
    p[i - 1] = p[j];
    p[j] = t;
  }
}

size_t
crash_random_pieces (size_t from, size_t k, bool torn, struct rng *r,
                     struct crash_piece *out)
{
  uint64_t p8 = 1 + rng_below (r, 7);
  size_t n = 0;

  for (size_t i = from; i < k; i++) {
    const struct crash_op *op = &ops[i];
    uint64_t at = 0;
    bool splits = torn && (op->kind == CRASH_OP_WRITE ||
                           op->kind == CRASH_OP_ZERO ||
                           op->kind == CRASH_OP_PUNCH);
    if (op->kind > CRASH_OP_SYNC)
      continue;
    do {
      uint64_t len = op->length - at;
      if (splits) {
        uint64_t next = (op->offset + at) / TORN_PIECE * TORN_PIECE
                        + TORN_PIECE;
        if (next - (op->offset + at) < len)
          len = next - (op->offset + at);
      }
      if (rng_below (r, 8) < p8)
        out[n++] = (struct crash_piece) { i, at, len };
      at += len;
    } while (at < op->length);
  }
  shuffle (out, n, r);
  return n;
}

size_t
crash_count_pieces (size_t from, size_t k)
{
  size_t n = 0;
  for (size_t i = from; i < k; i++)
    n += 2 + ops[i].length / TORN_PIECE;
  return n;
}

/* Grow the buffer to hold size bytes; bytes past f->size are kept zero. */
static int
reserve (struct crash_file *f, uint64_t size)
{
  uint64_t cap;
  uint8_t *n;

  if (size <= f->capacity)
    return 0;
  cap = f->capacity ? f->capacity : 1 << 20;
  while (cap < size)
    cap *= 2;
  n = realloc (f->bytes, cap);
  if (n == NULL)
    return -ENOMEM;
  memset (n + f->capacity, 0, cap - f->capacity);
  f->bytes = n;
  f->capacity = cap;
  return 0;
}

int
crash_file_init (struct crash_file *f)
{
  memset (f, 0, sizeof *f);
  if (reserve (f, initial_size) < 0)
    return -ENOMEM;
  if (initial_size)
    memcpy (f->bytes, initial, initial_size);
  f->size = initial_size;
  return 0;
}

void
crash_file_free (struct crash_file *f)
{
  free (f->bytes);
  memset (f, 0, sizeof *f);
}

int
crash_file_copy (struct crash_file *dst, const struct crash_file *src)
{
  uint64_t old = dst->size;

  if (reserve (dst, src->size) < 0)
    return -ENOMEM;
  memcpy (dst->bytes, src->bytes, src->size);
  if (old > src->size)
    memset (dst->bytes + src->size, 0, old - src->size);
  dst->size = src->size;
  return 0;
}

static void
zero_within_size (struct crash_file *f, uint64_t start, uint64_t end)
{
  if (end > f->size)
    end = f->size;
  if (start < end)
    memset (f->bytes + start, 0, end - start);
}

int
crash_file_apply (struct crash_file *f, const struct crash_op *op,
                  uint64_t piece_offset, uint64_t piece_length)
{
  uint64_t start = op->offset + piece_offset;
  uint64_t end = start + piece_length;

  switch (op->kind) {
  case CRASH_OP_WRITE:
    if (reserve (f, end) < 0)
      return -ENOMEM;
    if (op->data)
      memcpy (f->bytes + start, op->data + piece_offset, piece_length);
    else
      memset (f->bytes + start, 0, piece_length);
    if (end > f->size)
      f->size = end;
    break;
  case CRASH_OP_ZERO:
    if (!op->keep_size && end > f->size) {
      if (reserve (f, end) < 0)
        return -ENOMEM;
      f->size = end;
    }
    zero_within_size (f, start, end);
    break;
  case CRASH_OP_PUNCH:
    zero_within_size (f, start, end);
    break;
  case CRASH_OP_EXTEND:
    if (!op->keep_size && end > f->size) {
      if (reserve (f, end) < 0)
        return -ENOMEM;
      f->size = end;
    }
    break;
  case CRASH_OP_TRUNCATE:
    if (op->offset < f->size)
      memset (f->bytes + op->offset, 0, f->size - op->offset);
    else if (reserve (f, op->offset) < 0)
      return -ENOMEM;
    f->size = op->offset;
    break;
  case CRASH_OP_SYNC:
  case CRASH_OP_NAME_ADD:
  case CRASH_OP_NAME_REMOVE:
  case CRASH_OP_NAME_MOVE:
  case CRASH_OP_DIR_SYNC:
    break;                      /* no byte of the file changes */
  }
  return 0;
}

int
crash_file_save (const struct crash_file *f, const char *path)
{
  const uint64_t page = 4096;
  uint64_t at = 0;
  int fd, r = 0;

  /* A new file, not a truncated one: ext4 flushes a file that was
   * truncated to 0 and rewritten when it is closed (auto_da_alloc).
   */
  if (unlink (path) == -1 && errno != ENOENT)
    return -errno;
  fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd == -1)
    return -errno;
  if (__real_ftruncate (fd, (off_t) f->size) == -1)
    r = -errno;
  /* Runs of pages with any non-zero byte; the rest stays a hole. */
  while (r == 0 && at < f->size) {
    uint64_t run_end, n;
    while (at < f->size &&
           all_zero (f->bytes + at, (size_t) (f->size - at < page
                                              ? f->size - at : page)))
      at += page;
    run_end = at;
    while (run_end < f->size &&
           !all_zero (f->bytes + run_end,
                      (size_t) (f->size - run_end < page ? f->size - run_end
                                                         : page)))
      run_end += page;
    if (run_end > f->size)
      run_end = f->size;
    for (n = 0; at + n < run_end; ) {
      ssize_t w = __real_pwrite (fd, f->bytes + at + n, run_end - at - n,
                                 (off_t) (at + n));
      if (w <= 0) {
        r = w < 0 ? -errno : -EIO;
        break;
      }
      n += (uint64_t) w;
    }
    at = run_end;
  }
  if (close (fd) == -1 && r == 0)
    r = -errno;
  return r;
}
