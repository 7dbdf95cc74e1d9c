/* vhdkit: operations that run in the background (internal; see async.c).
 *
 * The work of an operation takes a struct vhd_operation *op that is NULL
 * when the caller runs it in its own thread (a blocking call): every
 * helper below accepts NULL and then does what a blocking call needs.
 */

#ifndef VHDKIT_ASYNC_H
#define VHDKIT_ASYNC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vhdkit.h"

/* The work: returns 0 or -errno, with the message in this thread's
 * vhd_last_error().
 */
typedef int (*vhd_operation_fn) (void *job, struct vhd_operation *op);
/* Releases the job, whatever the work returned (runs in the worker). */
typedef void (*vhd_operation_free_fn) (void *job);

/* Start fn(job, op) in a new thread (with every signal blocked) and
 * return -EINPROGRESS; completion: the progress value of a finished
 * operation.  The operation owns job from this call on, even when it
 * fails (then free_fn has been called and -errno is returned).
 */
int vhd_operation_start (struct vhd_overlapped *overlapped,
                         uint64_t completion, vhd_operation_fn fn,
                         vhd_operation_free_fn free_fn, void *job);

/* Check overlapped before anything starts: an event_fd that is open (or
 * -1) and no operation in it yet.
 */
int vhd_operation_check_overlapped (const struct vhd_overlapped *overlapped);

/* For the work: report progress (monotonic: a smaller value is ignored). */
void vhd_operation_set_progress (struct vhd_operation *op, uint64_t current);
/* Has the caller asked to cancel?  (false when op is NULL) */
bool vhd_operation_cancelled (const struct vhd_operation *op);
/* Before the work makes its result visible (links the new file): returns
 * false if it was cancelled, and otherwise makes every later cancel fail
 * with -ENOENT, so that a cancel that returned 0 always means "nothing
 * left behind".  true when op is NULL.
 */
bool vhd_operation_commit (struct vhd_operation *op);

/* Start a thread with every signal blocked (they belong to the
 * application's threads).  Returns 0 or -errno.
 */
int vhd_thread_create (pthread_t *thread, void *(*fn) (void *), void *arg);

#endif /* VHDKIT_ASYNC_H */
