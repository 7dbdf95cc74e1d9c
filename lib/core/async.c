/* vhdkit: asynchronous operations, the OVERLAPPED side of
 * CreateVirtualDisk.
 *
 * An operation is one background thread running one job.  Its state is
 * shared with the caller's threads through a few atomics (status,
 * current, cancel) and a mutex that orders a cancel against the job's
 * commit.  When the job has ended, and its resources are released, the
 * thread stores the final status (release order: the job's result, *handle
 * among it, is visible to whoever sees the status) and writes 1 to the
 * caller's eventfd, once.  vhd_get_overlapped_result joins the thread and
 * frees the operation.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "async.h"
#include "error.h"

struct vhd_operation {
  pthread_t thread;
  int event_fd;
  vhd_operation_fn fn;
  vhd_operation_free_fn free_fn;
  void *job;

  uint64_t completion;
  uint64_t current;             /* atomic */
  int status;                   /* atomic: -EINPROGRESS, then final */
  bool cancel_requested;        /* atomic */

  pthread_mutex_t lock;         /* orders cancel against commit */
  bool committed;

  char message[4096];           /* the job's vhd_last_error() */
};

int
vhd_thread_create (pthread_t *thread, void *(*fn) (void *), void *arg)
{
  sigset_t all, old;
  int r;

  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  r = pthread_create (thread, NULL, fn, arg);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  return -r;
}

int
vhd_operation_check_overlapped (const struct vhd_overlapped *overlapped)
{
  if (overlapped == NULL)
    return 0;
  if (overlapped->internal != NULL)
    return vhd_error (EBUSY, "vhd_create_virtual_disk: overlapped holds an"
                      " operation that has not been released (call"
                      " vhd_get_overlapped_result first; initialise a new"
                      " overlapped with internal = NULL)");
  if (overlapped->event_fd < -1 ||
      (overlapped->event_fd >= 0 &&
       fcntl (overlapped->event_fd, F_GETFD) == -1))
    return vhd_error (EBADF, "vhd_create_virtual_disk: overlapped->event_fd"
                      " %d is not an open file descriptor (pass an eventfd,"
                      " or -1 for none)", overlapped->event_fd);
  return 0;
}

static void
signal_event (int fd)
{
  uint64_t one = 1;

  if (fd < 0)
    return;
  /* An eventfd's counter only overflows after 2^64-2 writes: this write
   * succeeds unless the caller broke the contract and closed it.
   */
  while (write (fd, &one, sizeof one) == -1 && errno == EINTR)
    ;
}

static void *
run_operation (void *arg)
{
  struct vhd_operation *op = arg;
  int r;

  vhd_clear_error ();
  r = op->fn (op->job, op);
  if (r < 0)
    snprintf (op->message, sizeof op->message, "%s", vhd_last_error ());
  op->free_fn (op->job);
  op->job = NULL;
  if (r == 0)
    __atomic_store_n (&op->current, op->completion, __ATOMIC_RELEASE);
  __atomic_store_n (&op->status, r, __ATOMIC_RELEASE);
  signal_event (op->event_fd);
  return NULL;
}

int
vhd_operation_start (struct vhd_overlapped *overlapped, uint64_t completion,
                     vhd_operation_fn fn, vhd_operation_free_fn free_fn,
                     void *job)
{
  struct vhd_operation *op = calloc (1, sizeof *op);
  int r;

  if (op == NULL) {
    free_fn (job);
    return vhd_error (ENOMEM, "vhd_create_virtual_disk: out of memory");
  }
  op->event_fd = overlapped->event_fd;
  op->fn = fn;
  op->free_fn = free_fn;
  op->job = job;
  op->completion = completion;
  op->status = -EINPROGRESS;
  pthread_mutex_init (&op->lock, NULL);

  /* Before the thread starts: its event may wake another thread of the
   * caller's before this call has returned.
   */
  overlapped->internal = op;
  r = vhd_thread_create (&op->thread, run_operation, op);
  if (r < 0) {
    overlapped->internal = NULL;
    free_fn (job);
    pthread_mutex_destroy (&op->lock);
    free (op);
    return vhd_error (r, "vhd_create_virtual_disk: starting the background"
                      " thread: %s", strerror (-r));
  }
  vhd_error (EINPROGRESS, "vhd_create_virtual_disk: the operation runs in"
             " the background; wait for overlapped->event_fd, then call"
             " vhd_get_overlapped_result");
  return -EINPROGRESS;
}

void
vhd_operation_set_progress (struct vhd_operation *op, uint64_t current)
{
  uint64_t seen;

  if (op == NULL)
    return;
  /* Only one thread reports, but keep the value monotonic regardless. */
  seen = __atomic_load_n (&op->current, __ATOMIC_RELAXED);
  while (current > seen &&
         !__atomic_compare_exchange_n (&op->current, &seen, current, true,
                                       __ATOMIC_RELEASE, __ATOMIC_RELAXED))
    ;
}

bool
vhd_operation_cancelled (const struct vhd_operation *op)
{
  return op && __atomic_load_n (&op->cancel_requested, __ATOMIC_ACQUIRE);
}

bool
vhd_operation_commit (struct vhd_operation *op)
{
  bool go;

  if (op == NULL)
    return true;
  pthread_mutex_lock (&op->lock);
  go = !op->cancel_requested;
  if (go)
    op->committed = true;
  pthread_mutex_unlock (&op->lock);
  return go;
}

static int
no_operation (const char *fn)
{
  return vhd_error (EINVAL, "%s: overlapped holds no operation (it was"
                    " never started, or was already released)", fn);
}

int
vhd_get_operation_progress (const struct vhd_overlapped *overlapped,
                            struct vhd_operation_progress *progress)
{
  const struct vhd_operation *op;

  if (progress == NULL)
    return vhd_error (EINVAL, "vhd_get_operation_progress: progress is"
                      " NULL");
  if (overlapped == NULL || overlapped->internal == NULL)
    return no_operation ("vhd_get_operation_progress");
  op = overlapped->internal;
  /* Status first: a final status guarantees the final progress. */
  progress->status = __atomic_load_n (&op->status, __ATOMIC_ACQUIRE);
  progress->current = __atomic_load_n (&op->current, __ATOMIC_ACQUIRE);
  progress->completion = op->completion;
  return 0;
}

int
vhd_cancel_operation (struct vhd_overlapped *overlapped)
{
  struct vhd_operation *op;
  bool late;

  if (overlapped == NULL || overlapped->internal == NULL)
    return no_operation ("vhd_cancel_operation");
  op = overlapped->internal;
  pthread_mutex_lock (&op->lock);
  late = op->committed ||
         __atomic_load_n (&op->status, __ATOMIC_ACQUIRE) != -EINPROGRESS;
  if (!late)
    __atomic_store_n (&op->cancel_requested, true, __ATOMIC_RELEASE);
  pthread_mutex_unlock (&op->lock);
  if (late)
    return vhd_error (ENOENT, "vhd_cancel_operation: too late to cancel:"
                      " the operation has ended or is linking its finished"
                      " disk into place; its result stands");
  return 0;
}

int
vhd_get_overlapped_result (struct vhd_overlapped *overlapped, bool wait)
{
  struct vhd_operation *op;
  int status;

  if (overlapped == NULL || overlapped->internal == NULL)
    return no_operation ("vhd_get_overlapped_result");
  op = overlapped->internal;
  if (!wait &&
      __atomic_load_n (&op->status, __ATOMIC_ACQUIRE) == -EINPROGRESS)
    return vhd_error (EINPROGRESS, "vhd_get_overlapped_result: the"
                      " operation is still running");

  pthread_join (op->thread, NULL);
  status = __atomic_load_n (&op->status, __ATOMIC_ACQUIRE);
  if (status < 0)
    vhd_error (status, "%s", op->message);
  else
    vhd_clear_error ();
  overlapped->internal = NULL;
  pthread_mutex_destroy (&op->lock);
  free (op);
  return status;
}
