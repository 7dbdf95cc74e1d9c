/* vhdkit tests: a fault-injection layer under the engine that records every
 * change made to one image file and rebuilds the file as a power loss at
 * any point could have left it.
 *
 * The test program is linked with -Wl,--wrap for pwrite, fallocate,
 * fdatasync, fsync and ftruncate (and their *64 names), and for
 * io_uring_submit, io_uring_submit_and_wait and the engine's vhd_io_run,
 * so that every byte the engine puts in the file passes through
 * crashsim.c, whichever backend (io_uring or pread) the engine uses.
 * Each call is applied to the real file first and, if it succeeded and
 * the file is the tracked image, appended to a log; what a ring submits
 * is read from its SQEs and logged when the vhd_io_run call that
 * submitted it has reaped every completion.  A sync is logged when it is
 * called.  A crash at op k keeps ops [0, k): everything up to the last
 * sync among them is durable, the ops after that sync are "in the disk's
 * cache" and may reach the platter in any subset and any order, or torn
 * into 512-byte sectors.
 */

#ifndef VHDKIT_TESTS_CRASHSIM_H
#define VHDKIT_TESTS_CRASHSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum crash_op_kind {
  CRASH_OP_WRITE,               /* data (NULL: all zeros); may extend */
  CRASH_OP_ZERO,                /* FALLOC_FL_ZERO_RANGE; extends unless keep */
  CRASH_OP_PUNCH,               /* FALLOC_FL_PUNCH_HOLE|KEEP_SIZE */
  CRASH_OP_EXTEND,              /* plain fallocate: size grows, data kept */
  CRASH_OP_TRUNCATE,            /* ftruncate: size set to offset */
  CRASH_OP_SYNC,                /* fdatasync or fsync returned */
  /* The folder's names for the file (recording that crash_record_create
   * started): a name made (openat O_CREAT, linkat), removed (unlinkat)
   * or moved (renameat2: old_name to name, atomically), and an fsync of
   * the folder, which makes the names before it durable.  They change
   * no byte of the file.
   */
  CRASH_OP_NAME_ADD,
  CRASH_OP_NAME_REMOVE,
  CRASH_OP_NAME_MOVE,
  CRASH_OP_DIR_SYNC,
};

struct crash_op {
  enum crash_op_kind kind;
  bool keep_size;               /* ZERO, EXTEND: FALLOC_FL_KEEP_SIZE */
  bool ring;                    /* WRITE submitted through io_uring */
  uint64_t offset, length;
  uint8_t *data;                /* WRITE only; NULL when the data was zeros */
  char *name, *old_name;        /* NAME_* only */
};

/* Start logging the changes to the file at path (found by device and
 * inode, whatever fd the engine opens it with); a copy of its bytes now is
 * the log's starting point.  Returns 0 or -errno.
 */
int crash_record_start (const char *path);
/* Start logging a file that does not exist yet: the first file that
 * the engine creates in the folder dir (openat with O_TMPFILE, or with
 * O_CREAT under a temporary name), from empty, and what happens to its
 * names in that folder (link, unlink, rename, the folder's fsync), so
 * that a crash can also lose the names made after the folder's last
 * fsync.  Returns 0 or -errno.
 */
int crash_record_create (const char *dir);
/* How the file system under a recorded create behaves, to reach each of
 * create.c's layouts: with O_TMPFILE (unnamed, then linkat), without it
 * (a temporary name, linkat, unlinkat), and without hard links too
 * (a temporary name, renameat2).
 */
enum crash_fs_kind { CRASH_FS_TMPFILE, CRASH_FS_NO_TMPFILE,
                     CRASH_FS_NO_LINKS };
void crash_set_fs_kind (enum crash_fs_kind kind);
/* Stop logging (the log is kept until crash_record_free). */
void crash_record_stop (void);
void crash_record_free (void);
/* Any change to the file at path (while it exists) is a test failure: the
 * parent of a differencing disk must never be written.
 */
int crash_forbid_writes (const char *path);
void crash_forbid_clear (void);
/* Changes seen to a forbidden file, and ops of a kind the log cannot
 * model (fallocate COLLAPSE/INSERT, posix_fallocate), since the start.
 */
unsigned crash_violations (void);

size_t crash_n_ops (void);
/* Of those, the writes that went through io_uring, and the writes that
 * were not whole 512-byte sectors.
 */
size_t crash_n_ring_ops (void);
size_t crash_n_unaligned (void);
/* The next n io_uring_submit_and_wait calls submit, then fail with
 * -EBUSY, leaving the requests in flight (a real submit error).
 */
void crash_inject_submit_errors (unsigned n);
const struct crash_op *crash_get_op (size_t i);
/* The number of ops that are durable when the power fails at op k: one
 * past the last sync among ops [0, k), or 0 if there is none.
 */
size_t crash_durable_prefix (size_t k);
/* The same for names: one past the last DIR_SYNC among ops [0, k). */
size_t crash_names_durable_prefix (size_t k);

/* splitmix64: small, seedable, good enough to pick offsets and bytes. */
struct rng {
  uint64_t s;
};

static inline uint64_t
rng_next (struct rng *r)
{
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline uint64_t
rng_below (struct rng *r, uint64_t n)
{
  return n ? rng_next (r) % n : 0;
}

/* A piece of a pending op that reaches the file: [offset, offset+length)
 * of op number op.
 */
struct crash_piece {
  size_t op;
  uint64_t offset, length;
};

/* The pending ops [from, k) that reach the file after a crash at k (from
 * is the durable prefix): each with a probability of 1/8 to 7/8, drawn
 * once from r, in a random order; torn, each write, zero and punch is
 * split on 512-byte sectors first, a disk's atomic unit.  Ops that change
 * no byte (syncs, names) are left out.  out must hold
 * crash_count_pieces (from, k) pieces.
 */
size_t crash_random_pieces (size_t from, size_t k, bool torn, struct rng *r,
                            struct crash_piece *out);
size_t crash_count_pieces (size_t from, size_t k);

/* An image file rebuilt in memory. */
struct crash_file {
  uint8_t *bytes;
  uint64_t size, capacity;
};

/* The file as it was when recording started. */
int crash_file_init (struct crash_file *f);
void crash_file_free (struct crash_file *f);
int crash_file_copy (struct crash_file *dst, const struct crash_file *src);
/* Apply [offset, offset+length) of an op (a torn op applies pieces); the
 * whole op is crash_file_apply (f, op, 0, op->length).  Returns 0 or
 * -ENOMEM.
 */
int crash_file_apply (struct crash_file *f, const struct crash_op *op,
                      uint64_t piece_offset, uint64_t piece_length);
/* Write the file out to path (created or replaced), holes where the
 * bytes are zero.  Returns 0 or -errno.
 */
int crash_file_save (const struct crash_file *f, const char *path);

#endif /* VHDKIT_TESTS_CRASHSIM_H */
