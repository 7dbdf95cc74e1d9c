/* vhdkit tests: one crash-consistency run (crashrun.c): a recorded random
 * workload on one image, then power losses at chosen points of it, each
 * rebuilt with crashsim.c and checked.
 */

#ifndef VHDKIT_TESTS_CRASHRUN_H
#define VHDKIT_TESTS_CRASHRUN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crashsim.h"

double now_seconds (void);

/* How the ops after the last durable sync reach the file. */
enum subset_kind {
  SUBSET_NONE,                  /* all lost */
  SUBSET_ALL,                   /* all, in the order they were issued */
  SUBSET_RANDOM,                /* a random subset in a random order */
  SUBSET_TORN,                  /* the same over 512-byte sectors of the ops */
  SUBSET_KINDS
};

struct crash_stats {
  size_t requests;              /* workload requests (vhd_* calls) */
  size_t file_ops;              /* recorded changes and syncs */
  size_t ring_ops;              /* writes the io_uring ring submitted */
  size_t syncs;
  size_t points;                /* crash points tried */
  size_t subsets;               /* images rebuilt and checked */
  size_t by_kind[SUBSET_KINDS];
  size_t duplicates;            /* "none" states already checked */
  size_t footer_from_copy;      /* raw images that needed the copy at 0 */
  size_t recoverable;           /* raw images vhd_check calls recoverable */
  size_t new_sectors;           /* sectors read with a post-flush write's
                                 * content rather than the old one */
  size_t spec_reads;            /* images the spec reader read too */
  size_t qemu_checks;           /* VHDX states qemu-img check found clean */
  size_t leaky;                 /* vhd_check found leaks (allowed) */
  size_t post_writes;           /* recovered images written again */
  unsigned failures;
  unsigned kept;                /* images of failures kept so far */
  double seconds;
};

enum request_kind {
  REQ_WRITE, REQ_ZERO, REQ_TRIM, REQ_FLUSH, REQ_REOPEN,
};

/* One vhd_* call of the workload and the file ops it made.  Requests
 * are kept in the order they started (start_seq); each thread of a
 * multi-threaded workload owns its own sectors, so the requests that
 * touch one sector are that order too.
 */
struct request {
  enum request_kind kind;
  uint64_t offset, length;
  uint32_t flags;               /* VHD_IO_* */
  uint64_t data_seed;           /* REQ_WRITE: 0 writes zeros */
  unsigned thread;
  uint64_t start_seq, end_seq;  /* tickets taken before and after it */
  size_t log_start, log_end;    /* crashsim's log length then */
};

/* A flush (vhd_flush, FUA, or the one in vhd_close) that returned: it
 * covers the requests that had completed before it was called
 * (end_seq < call_seq), and a FUA request itself.
 */
struct flush_done {
  uint64_t call_seq;
  size_t log_end;               /* the log's length when it returned */
};

/* A state kept for the spec reader. */
struct spec_sample {
  size_t k;
  char label[48];
};

struct crash_run {
  /* Set by the caller. */
  const char *name;
  bool differencing;
  bool vhdx;                    /* a VHDX image, else a VHD */
  bool fixed;                   /* VHDX only: a fixed disk */
  uint32_t block_size;          /* 0: VHD_BLOCK_SIZE_SMALL (512 KiB) */
  unsigned qemu_check_every;    /* VHDX: qemu-img check reads 1 recovered
                                 * state in this many (0: never) */
  bool ring;                    /* the default backend (io_uring), not
                                 * VHDKIT_IO=pread */
  unsigned threads;             /* 0 or 1: one thread, with reopens */
  uint64_t seed;                /* this run's workload */
  uint64_t repro_seed;          /* VHDKIT_CRASH_SEED that gives this run */
  const char *repro_points;     /* VHDKIT_CRASH_POINTS, or NULL */
  size_t n_requests;
  /* The first requests of a one-thread workload, instead of random ones
   * (a case that a run must reach whatever its seed); n_requests counts
   * them.
   */
  const struct request *prologue;
  size_t n_prologue;
  uint64_t disk_size;           /* a multiple of 512 KiB, the block size */
  /* A virtual disk bigger than what the run models and reads (a
   * differencing VHDX over two sector bitmap chunks, 4 GiB each): the
   * model's bytes from gap_at on are the disk's from gap_at + gap_length
   * on, and the gap_length bytes between are never written, nor read
   * by the checks.  0: no gap.  Both are multiples of the block size.
   */
  uint64_t gap_at, gap_length;
  unsigned hot_percent;         /* requests kept in the first 4 MiB (big
                                 * disks: the rest spread over the BAT) */
  unsigned whole_block_percent; /* trims and zeros that cover whole
                                 * blocks (0: the default, 20) */
  unsigned min_bitmap_blocks;   /* differencing VHDX: the workload must
                                 * leave this many chunks with a sector
                                 * bitmap block (else the run tests less
                                 * than it says) */
  unsigned random_subsets;      /* random states per crash point, besides
                                 * none, all and one torn */
  bool newest_alone;            /* and the newest pending op alone, every
                                 * one before it lost (a disk that wrote
                                 * the last request first) */
  unsigned post_write_percent;  /* states that are written after recovery */
  unsigned spec_every;          /* the spec reader reads 1 state in this */
  unsigned show_failures;       /* print this many failures in full */
  const char *program;          /* "test-crash-vhdx": reproduce lines */
  const char *keep_dir;         /* where the images of failures go */
  unsigned *kept_images;
  char dir[300];                /* a fresh folder for this run */

  /* Set by crash_run_workload. */
  char path[400], parent_path[400], scratch_path[400];
  uint8_t *initial_virtual;     /* the disk's contents before the workload */
  uint8_t *parent_raw;          /* the parent file's bytes, to compare */
  uint64_t parent_raw_size;
  struct request *requests;
  size_t n_req;
  struct flush_done *flushes;
  size_t n_flushes;
  uint64_t seq;                 /* the ticket counter */
  pthread_mutex_t lock;         /* flushes[] while threads run */
  int status;

  /* Set by crash_run_points. */
  struct spec_sample spec[64];
  size_t n_spec;

  struct crash_stats stats;
};

/* Make the images and run the recorded workload, in threads of its own
 * with the backend run->ring asks for.  Returns 0, or -1 after printing
 * why.
 */
int crash_run_workload (struct crash_run *run);
/* Lose power at each of ks[0..n) (ascending file-op indexes) and check
 * the rebuilt images; failures are printed and counted in run->stats.
 */
void crash_run_points (struct crash_run *run, const size_t *ks, size_t n);
void crash_run_free (struct crash_run *run);

/* Shared by crashrun.c and crashcheck.c. */
void crash_fill_data (uint64_t seed, uint8_t *buf, uint64_t len);
const char *crash_request_name (const struct request *q);
/* What the disk reads after request q, as the engine documents it. */
void crash_apply_request (const struct crash_run *run,
                          const struct request *q, uint8_t *disk);
/* The run's block size, and its images' file name extension. */
uint32_t crash_block_size (const struct crash_run *run);
const char *crash_ext (const struct crash_run *run);
struct vhd_disk;
int crash_open_disk (const char *path, bool readonly, struct vhd_disk **d);
/* The run's virtual disk: disk_size plus the gap. */
uint64_t crash_virtual_size (const struct crash_run *run);
/* vhd_pread, vhd_pwrite, vhd_zero, vhd_trim of the model's bytes
 * [offset, offset+length): one call for each side of the gap (FUA on the
 * last one only, so that its flush covers both).  buf is NULL for zero
 * and trim.
 */
enum crash_io { CRASH_IO_READ, CRASH_IO_WRITE, CRASH_IO_ZERO, CRASH_IO_TRIM };
int crash_disk_io (const struct crash_run *run, struct vhd_disk *d,
                   enum crash_io io, void *buf, uint64_t length,
                   uint64_t offset, uint32_t flags);

/* What the crash test programs share: want crash points chosen at random
 * among n_log + 1 (want 0: every one), ascending; totals; one run in the
 * child process (the workload, then its points; only_k >= 0: that point
 * alone).
 */
size_t *crash_choose_points (size_t n_log, uint64_t seed, size_t want,
                             size_t *n_ks);
void crash_add_stats (struct crash_stats *to, const struct crash_stats *s);
struct crash_run;
void crash_run_in_child (struct crash_run *run, size_t random_points,
                         long long only_k);

/* crashmain.c: what a crash test program keeps: its options, from the
 * environment (test-crash.c's header lists them), and its totals.
 */
struct crash_program {
  const char *name;             /* "test-crash" */
  uint64_t base_seed;           /* VHDKIT_CRASH_SEED */
  char only_name[128];          /* VHDKIT_CRASH_ONLY's NAME, or "" */
  long long only_k;             /* its K, or -1 */
  size_t short_requests;        /* VHDKIT_CRASH_REQUESTS */
  unsigned random_subsets;      /* VHDKIT_CRASH_SUBSETS */
  unsigned post_write_percent;  /* VHDKIT_CRASH_POST_WRITES */
  unsigned spec_every;          /* VHDKIT_CRASH_SPEC_EVERY */
  unsigned qemu_every;          /* VHDKIT_CRASH_QEMU_EVERY */
  unsigned show_failures;       /* VHDKIT_CRASH_SHOW */
  char keep_dir[512];           /* VHDKIT_CRASH_KEEP */
  unsigned kept_images;
  struct crash_stats totals;
};

void crash_program_init (struct crash_program *p, const char *name,
                         uint64_t default_seed);
void crash_print_stats (const char *what, const struct crash_stats *s);
/* Run *run (its shape and seed set by the caller; the rest comes from
 * p) in a child process under folder scratch, unless VHDKIT_CRASH_ONLY
 * names another run; print its counts and add them to p's totals.
 */
void crash_program_run (struct crash_program *p, const char *scratch,
                        struct crash_run *run, size_t random_points);
/* Fail the cmocka test when runs failed since the totals had before. */
void crash_program_assert_no_failures (const struct crash_program *p,
                                       unsigned before);

#endif /* VHDKIT_TESTS_CRASHRUN_H */
