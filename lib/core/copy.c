/* vhdkit: the copy loop of a create from a source.
 *
 * Two threads and a bounded queue: a reader walks the source in chunks of
 * CHUNK_SIZE, asks the source for its extents so that holes are never
 * read, and reads each chunk's data ranges as one I/O batch (io_uring
 * where the kernel has it) into a free buffer of the queue; the caller's
 * thread takes the chunks in order and writes them into the new disk,
 * while the reader is already reading the next ones.  QUEUE_DEPTH buffers
 * bound the memory (16 MiB) and keep the reader at most that far ahead.
 *
 * Zeros are never written: the target is new and has no parent, so all
 * of it reads as zeros already, and every all-zero piece (ZERO_PIECE) of
 * the source is skipped.  In a fixed target that leaves the file's
 * zeros; in a dynamic one, a block that gets no data stays unallocated,
 * and a block that gets some reads as zeros elsewhere (a new block's
 * space is zeros, as for any write that allocates), so a half-zero block
 * costs half the writes.  Since chunks are written in order, a dynamic
 * target's blocks
 * are appended in the source's order, each one's data 4 KiB aligned (io.c
 * lays them out).
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "async.h"
#include "copy.h"
#include "image.h"
#include "source.h"

#define CHUNK_SIZE (UINT64_C (4) << 20)
#define QUEUE_DEPTH 4
/* Data ranges of one chunk; past this, the last range grows to cover the
 * next (reading a hole in between is harmless: it reads as zeros).
 */
#define MAX_RANGES 64
/* Holes shorter than this between two data ranges are read, not skipped:
 * one larger read beats two small ones.
 */
#define MERGE_GAP (UINT64_C (64) << 10)
/* The target skips zeros in pieces of this size. */
#define ZERO_PIECE (UINT64_C (64) << 10)
/* Start the writeback of what was written every so often, so that the
 * final sync has little left to wait for.
 */
#define WRITEBACK_EVERY (UINT64_C (64) << 20)

struct range {
  uint64_t offset, length;
};

struct chunk {
  uint64_t offset, length;
  size_t n_ranges;
  struct range ranges[MAX_RANGES];
  uint8_t *buf;                 /* CHUNK_SIZE bytes; ranges at their
                                 * offset - chunk offset */
};

struct copier {
  struct vhd_source *src;
  vhd_disk *target;
  struct vhd_operation *op;
  uint64_t size;

  pthread_mutex_t lock;
  pthread_cond_t changed;
  struct chunk chunks[QUEUE_DEPTH];
  size_t head;                  /* the oldest filled chunk */
  size_t count;                 /* filled chunks, head first */
  bool reader_done;
  bool stop;                    /* the writer has stopped */
  int reader_error;
  char reader_message[2048];
};

static int
add_range (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  struct chunk *c = opaque;
  struct range *last = c->n_ranges ? &c->ranges[c->n_ranges - 1] : NULL;

  if (flags & VHD_EXTENT_ZERO)
    return 0;
  if (last && (offset - (last->offset + last->length) <= MERGE_GAP ||
               c->n_ranges == MAX_RANGES)) {
    last->length = offset + length - last->offset;
    return 0;
  }
  c->ranges[c->n_ranges++] = (struct range) { offset, length };
  return 0;
}

/* Find the chunk's data ranges and read them, in one batch. */
static int
fill_chunk (struct copier *cp, struct chunk *c)
{
  struct vhd_segment_list segs;
  int r;

  c->n_ranges = 0;
  r = vhd_source_extents (cp->src, c->offset, c->length, add_range, c);
  if (r < 0 || c->n_ranges == 0)
    return r;
  vhd_segments_init (&segs);
  for (size_t i = 0; i < c->n_ranges && r == 0; i++)
    r = vhd_source_map (cp->src, c->ranges[i].offset, c->ranges[i].length,
                        c->buf + (c->ranges[i].offset - c->offset), &segs);
  if (r == 0)
    r = vhd_io_run (segs.segs, segs.n, false);
  vhd_segments_free (&segs);
  return r;
}

static void *
reader_main (void *arg)
{
  struct copier *cp = arg;
  uint64_t offset = 0;
  size_t slot = 0;
  int r = 0;

  while (offset < cp->size) {
    struct chunk *c = &cp->chunks[slot];
    bool stop;

    pthread_mutex_lock (&cp->lock);
    while (cp->count == QUEUE_DEPTH && !cp->stop)
      pthread_cond_wait (&cp->changed, &cp->lock);
    stop = cp->stop;
    pthread_mutex_unlock (&cp->lock);
    if (stop || vhd_operation_cancelled (cp->op))
      break;

    /* This slot is free: the writer is done with it. */
    c->offset = offset;
    c->length = cp->size - offset < CHUNK_SIZE ? cp->size - offset
                                               : CHUNK_SIZE;
    r = fill_chunk (cp, c);
    if (r < 0)
      break;
    if (c->n_ranges > 0)        /* else it read nothing */
      vhd_source_release (cp->src, c->offset, c->length);
    pthread_mutex_lock (&cp->lock);
    cp->count++;
    pthread_cond_broadcast (&cp->changed);
    pthread_mutex_unlock (&cp->lock);
    offset += c->length;
    slot = (slot + 1) % QUEUE_DEPTH;
  }

  pthread_mutex_lock (&cp->lock);
  if (r < 0) {
    cp->reader_error = r;
    snprintf (cp->reader_message, sizeof cp->reader_message, "%s",
              vhd_last_error ());
  }
  cp->reader_done = true;
  pthread_cond_broadcast (&cp->changed);
  pthread_mutex_unlock (&cp->lock);
  return NULL;
}

static bool
is_zero (const uint8_t *p, uint64_t len)
{
  return len == 0 || (p[0] == 0 && memcmp (p, p + 1, len - 1) == 0);
}

/* Write one data range, leaving out what needs no writing. */
static int
write_range (struct copier *cp, const uint8_t *buf, uint64_t offset,
             uint64_t length)
{
  uint64_t run = 0, pos, n;
  bool in_run = false;
  int r;

  /* Skipping zeros relies on the target reading as zeros where nothing
   * was written: a differencing target would show its parent there.
   */
  if (cp->target->parent != NULL)
    return vhd_pwrite (cp->target, buf, length, offset, 0);

  for (pos = 0; pos < length; pos += n) {
    bool zero;

    n = length - pos < ZERO_PIECE ? length - pos : ZERO_PIECE;
    zero = is_zero (buf + pos, n);
    if (!zero && !in_run) {
      run = pos;
      in_run = true;
    }
    else if (zero && in_run) {
      r = vhd_pwrite (cp->target, buf + run, pos - run, offset + run, 0);
      if (r < 0)
        return r;
      in_run = false;
    }
  }
  if (in_run)
    return vhd_pwrite (cp->target, buf + run, length - run, offset + run, 0);
  return 0;
}

static int
write_chunk (struct copier *cp, const struct chunk *c)
{
  for (size_t i = 0; i < c->n_ranges; i++) {
    const struct range *rg = &c->ranges[i];
    int r = write_range (cp, c->buf + (rg->offset - c->offset), rg->offset,
                         rg->length);
    if (r < 0)
      return r;
  }
  return 0;
}

/* The writer: the calling thread. */
static int
write_chunks (struct copier *cp)
{
  uint64_t since_writeback = 0;

  for (;;) {
    struct chunk *c;
    int r;

    pthread_mutex_lock (&cp->lock);
    while (cp->count == 0 && !cp->reader_done)
      pthread_cond_wait (&cp->changed, &cp->lock);
    c = cp->count ? &cp->chunks[cp->head] : NULL;
    pthread_mutex_unlock (&cp->lock);
    /* The reader stops early when cancelled (or on an error, which the
     * caller reports).
     */
    if (vhd_operation_cancelled (cp->op))
      return vhd_error (ECANCELED, "%s: the copy from %s was cancelled",
                        cp->target->path, cp->src->path);
    if (c == NULL)
      return 0;
    r = write_chunk (cp, c);
    if (r < 0)
      return r;
    vhd_operation_set_progress (cp->op, c->offset + c->length);
    since_writeback += c->length;
    if (since_writeback >= WRITEBACK_EVERY) {
      /* A hint: start writing back now, without waiting for it. */
      vhd_backend_writeback (cp->target->be);
      since_writeback = 0;
    }

    pthread_mutex_lock (&cp->lock);
    cp->head = (cp->head + 1) % QUEUE_DEPTH;
    cp->count--;
    pthread_cond_broadcast (&cp->changed);
    pthread_mutex_unlock (&cp->lock);
  }
}

static void
free_buffers (struct copier *cp)
{
  for (size_t i = 0; i < QUEUE_DEPTH; i++)
    free (cp->chunks[i].buf);
}

int
vhd_copy_source (struct vhd_source *src, vhd_disk *target,
                 struct vhd_operation *op)
{
  struct copier *cp;
  pthread_t reader;
  int r;

  if (src->size == 0)
    return 0;
  cp = calloc (1, sizeof *cp);
  if (cp == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", target->path);
  cp->src = src;
  cp->target = target;
  cp->op = op;
  cp->size = src->size;
  for (size_t i = 0; i < QUEUE_DEPTH; i++) {
    if (posix_memalign ((void **) &cp->chunks[i].buf, 4096, CHUNK_SIZE)
        != 0) {
      free_buffers (cp);
      free (cp);
      return vhd_error (ENOMEM, "%s: out of memory for copy buffers",
                        target->path);
    }
  }
  pthread_mutex_init (&cp->lock, NULL);
  pthread_cond_init (&cp->changed, NULL);

  r = vhd_thread_create (&reader, reader_main, cp);
  if (r < 0)
    r = vhd_error (r, "%s: starting the copy's reader thread: %s",
                   target->path, strerror (-r));
  else {
    r = write_chunks (cp);
    pthread_mutex_lock (&cp->lock);
    cp->stop = true;
    pthread_cond_broadcast (&cp->changed);
    pthread_mutex_unlock (&cp->lock);
    pthread_join (reader, NULL);
    if (r == 0 && cp->reader_error < 0)
      r = vhd_error (cp->reader_error, "%s", cp->reader_message);
  }

  pthread_cond_destroy (&cp->changed);
  pthread_mutex_destroy (&cp->lock);
  free_buffers (cp);
  free (cp);
  return r;
}
