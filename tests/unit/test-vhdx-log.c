/* Unit tests of the VHDX log (lib/formats/vhdx/log.[ch]): the active
 * sequence of the two dirty-log samples, replayed and compared with
 * qemu-img's own replay; the writer's entries read back and replayed
 * exactly (wrap-around, filler, zero descriptors, leading and trailing
 * bytes, an older sequence left behind); and hostile logs built by hand
 * here (torn entries, mismatched data sectors, descriptor counts that do
 * not fit, bad lengths and offsets, targets in the log, absurd
 * LastFileOffset, a chain that wraps onto itself, another LogGuid), each
 * a clean error or simply no entry.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "vhdkit.h"
#include "core/error.h"
#include "formats/vhdx/crc32c.h"
#include "formats/vhdx/log.h"
#include "scratch.h"
#include "require.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
#define SECTOR 4096u

static int setup (void **state) { return make_scratch ("test-vhdx-log"); }
static int teardown (void **state) { return remove_scratch (); }

/* ---- little-endian helpers, written here on purpose (not the
 * library's), so that the hand-built entries are an independent
 * reading of the spec.
 */
static uint32_t
get32 (const uint8_t *b)
{
  return (uint32_t) b[0] | (uint32_t) b[1] << 8 | (uint32_t) b[2] << 16
    | (uint32_t) b[3] << 24;
}

static uint64_t
get64 (const uint8_t *b)
{
  return get32 (b) | (uint64_t) get32 (b + 4) << 32;
}

static void
put32 (uint8_t *b, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    b[i] = v >> (8 * i);
}

static void
put64 (uint8_t *b, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    b[i] = v >> (8 * i);
}

/* ---- a file in memory, reached through the log's callbacks ---- */

struct mem {
  uint8_t *buf;
  uint64_t size;
  unsigned writes, zeros;
  uint64_t written[64];         /* offsets of the first 64 writes/zeros */
  int fail_reads;               /* -errno to return from reads */
};

static void
mem_init (struct mem *m, uint64_t size)
{
  memset (m, 0, sizeof *m);
  m->buf = calloc (1, size);
  assert_non_null (m->buf);
  m->size = size;
}

static int
mem_read (void *opaque, void *buf, size_t len, uint64_t off)
{
  struct mem *m = opaque;

  if (m->fail_reads)
    return m->fail_reads;
  /* Every read must stay inside the file: the log never asks for more. */
  assert_true (off <= m->size && len <= m->size - off);
  memcpy (buf, m->buf + off, len);
  return 0;
}

static int
mem_write (void *opaque, const void *buf, size_t len, uint64_t off)
{
  struct mem *m = opaque;

  assert_int_equal (len, SECTOR);
  assert_true (off <= m->size && len <= m->size - off);
  if (m->writes + m->zeros < 64)
    m->written[m->writes + m->zeros] = off;
  m->writes++;
  memcpy (m->buf + off, buf, len);
  return 0;
}

static int
mem_zero (void *opaque, uint64_t off, uint64_t len)
{
  struct mem *m = opaque;

  assert_true (off <= m->size && len <= m->size - off);
  if (m->writes + m->zeros < 64)
    m->written[m->writes + m->zeros] = off;
  m->zeros++;
  memset (m->buf + off, 0, len);
  return 0;
}

static const uint8_t guid_a[16] = {
  0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
  0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0, 0x01
};
static const uint8_t guid_b[16] = {
  0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
  0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0, 0x02
};

/* The hand-built logs: 1 MiB at 1 MiB in a 4 MiB file. */
#define LOG_OFF MiB
#define LOG_LEN ((uint32_t) MiB)
#define FILE_SIZE (4 * MiB)

static struct vhdx_log_params
params_for (const char *path, uint64_t log_offset, uint32_t log_length,
            const uint8_t guid[16], uint64_t file_size)
{
  struct vhdx_log_params p = { .path = path, .log_offset = log_offset,
                               .log_length = log_length,
                               .file_size = file_size };
  memcpy (p.log_guid, guid, 16);
  return p;
}

/* Entry header at log offset pos (which must leave room for 4 KiB). */
static void
h_entry (struct mem *m, uint32_t pos, uint32_t len, uint32_t tail,
         uint64_t seq, uint32_t ndesc, const uint8_t guid[16],
         uint64_t flushed, uint64_t last)
{
  uint8_t *e = m->buf + LOG_OFF + pos;

  memset (e, 0, SECTOR);
  memcpy (e, "loge", 4);
  put32 (e + 8, len);
  put32 (e + 12, tail);
  put64 (e + 16, seq);
  put32 (e + 24, ndesc);
  memcpy (e + 32, guid, 16);
  put64 (e + 48, flushed);
  put64 (e + 56, last);
}

/* Descriptor i of the entry at pos (inside its first sector). */
static void
h_desc (struct mem *m, uint32_t pos, unsigned i, const char *sig,
        uint32_t w4, uint64_t w8, uint64_t off, uint64_t seq)
{
  uint8_t *d = m->buf + LOG_OFF + pos + 64 + 32 * i;

  memcpy (d, sig, 4);
  put32 (d + 4, w4);
  put64 (d + 8, w8);
  put64 (d + 16, off);
  put64 (d + 24, seq);
}

/* A data sector at log offset pos: payload bytes all fill. */
static void
h_data (struct mem *m, uint32_t pos, uint64_t seq, uint8_t fill)
{
  uint8_t *s = m->buf + LOG_OFF + pos;

  memcpy (s, "data", 4);
  put32 (s + 4, seq >> 32);
  memset (s + 8, fill, 4084);
  put32 (s + 4092, (uint32_t) seq);
}

/* The checksum of the entry at pos, over its EntryLength bytes, wrapping
 * at the end of the log.
 */
static void
h_crc (struct mem *m, uint32_t pos)
{
  uint8_t *log = m->buf + LOG_OFF;
  uint32_t len = get32 (log + pos + 8);
  uint8_t *tmp = malloc (len);

  assert_non_null (tmp);
  for (uint32_t i = 0; i < len; i++)
    tmp[i] = log[(pos + i) % LOG_LEN];
  memset (tmp + 4, 0, 4);
  put32 (log + pos + 4, vhdx_crc32c (tmp, len));
  free (tmp);
}

/* One entry at pos with one data descriptor writing a sector of fill
 * (leading bytes "LEADING!", trailing "TRL!") at target.
 */
static void
h_simple (struct mem *m, uint32_t pos, uint32_t tail, uint64_t seq,
          uint64_t target, uint8_t fill)
{
  uint64_t lead;
  uint32_t trail;

  memcpy (&lead, "LEADING!", 8);        /* raw bytes, as on disk */
  memcpy (&trail, "TRL!", 4);
  h_entry (m, pos, 2 * SECTOR, tail, seq, 1, guid_a, FILE_SIZE, FILE_SIZE);
  h_desc (m, pos, 0, "desc", 0, 0, target, seq);
  memcpy (m->buf + LOG_OFF + pos + 64 + 4, &trail, 4);
  memcpy (m->buf + LOG_OFF + pos + 64 + 8, &lead, 8);
  h_data (m, pos + SECTOR, seq, fill);
  h_crc (m, pos);
}

static int
find (struct mem *m, const uint8_t guid[16], struct vhdx_log_sequence *seq)
{
  struct vhdx_log_params p = params_for ("mem.vhdx", LOG_OFF, LOG_LEN, guid,
                                         m->size);
  return vhdx_log_find_active (&p, mem_read, m, seq);
}

static void
expect_error (struct mem *m, const char *words)
{
  struct vhdx_log_sequence seq;
  int r = find (m, guid_a, &seq);

  if (r != -EINVAL)
    fail_msg ("expected -EINVAL (%s), got %d, %u entries", words, r,
              seq.entry_count);
  if (strstr (vhd_last_error (), words) == NULL
      || strstr (vhd_last_error (), "mem.vhdx") == NULL)
    fail_msg ("message \"%s\" lacks \"%s\" or the file name",
              vhd_last_error (), words);
  assert_int_equal (seq.entry_count, 0);
}

static void
expect_none (struct mem *m, const uint8_t guid[16])
{
  struct vhdx_log_sequence seq;
  int r = find (m, guid, &seq);

  if (r != 0)
    fail_msg ("expected no sequence, got %d: %s", r, vhd_last_error ());
  assert_int_equal (seq.entry_count, 0);
}

/* ---- hostile logs ---- */

/* A good entry is found and replays the reassembled sector; the same
 * entry with one byte flipped (a torn write) is no entry at all.
 */
static void
test_simple_and_torn (void **state)
{
  struct mem m;
  struct vhdx_log_sequence seq;
  struct vhdx_log_params p = params_for ("mem.vhdx", LOG_OFF, LOG_LEN,
                                         guid_a, FILE_SIZE);

  mem_init (&m, FILE_SIZE);
  h_simple (&m, 0, 0, 5, 3 * MiB, 0xa5);
  assert_int_equal (find (&m, guid_a, &seq), 0);
  assert_int_equal (seq.entry_count, 1);
  assert_int_equal (seq.first_sequence, 5);
  assert_int_equal (seq.last_sequence, 5);
  assert_int_equal (seq.end, 2 * SECTOR);
  assert_int_equal (seq.last_file_offset, FILE_SIZE);
  assert_int_equal (vhdx_log_replay (&p, mem_read, &m, &seq, mem_write,
                                     mem_zero, &m), 0);
  assert_int_equal (m.writes, 1);
  assert_memory_equal (m.buf + 3 * MiB, "LEADING!", 8);
  for (unsigned i = 8; i < 4092; i++)
    assert_int_equal (m.buf[3 * MiB + i], 0xa5);
  assert_memory_equal (m.buf + 3 * MiB + 4092, "TRL!", 4);

  /* Torn: any byte of the entry changed. */
  m.buf[LOG_OFF + SECTOR + 100] ^= 1;
  expect_none (&m, guid_a);
  /* And replaying the old sequence now notices the change. */
  assert_int_equal (vhdx_log_replay (&p, mem_read, &m, &seq, mem_write,
                                     mem_zero, &m), -EIO);
  free (m.buf);
}

/* A torn newest entry ends the sequence: the one before it is active. */
static void
test_torn_head_keeps_previous (void **state)
{
  struct mem m;
  struct vhdx_log_sequence seq;

  mem_init (&m, FILE_SIZE);
  h_simple (&m, 0, 0, 10, 3 * MiB, 1);
  h_simple (&m, 2 * SECTOR, 0, 11, 3 * MiB + SECTOR, 2);
  h_simple (&m, 4 * SECTOR, 0, 12, 3 * MiB + 2 * SECTOR, 3);
  assert_int_equal (find (&m, guid_a, &seq), 0);
  assert_int_equal (seq.entry_count, 3);
  assert_int_equal (seq.last_sequence, 12);
  m.buf[LOG_OFF + 4 * SECTOR + 70] ^= 0x40;     /* entry 12's descriptor */
  assert_int_equal (find (&m, guid_a, &seq), 0);
  assert_int_equal (seq.entry_count, 2);
  assert_int_equal (seq.first_sequence, 10);
  assert_int_equal (seq.last_sequence, 11);
  assert_int_equal (seq.head, 2 * SECTOR);
  free (m.buf);
}

/* A data sector whose sequence halves do not match the entry is no
 * entry, even with a checksum that matches; the previous one stays.
 */
static void
test_data_sector_mismatch (void **state)
{
  struct mem m;
  struct vhdx_log_sequence seq;
  uint64_t big = (UINT64_C (7) << 32) | 9;

  mem_init (&m, FILE_SIZE);
  h_simple (&m, 0, 0, big, 3 * MiB, 1);
  put32 (m.buf + LOG_OFF + SECTOR + 4, 8);      /* SequenceHigh */
  h_crc (&m, 0);
  expect_none (&m, guid_a);

  h_simple (&m, 0, 0, big, 3 * MiB, 1);
  put32 (m.buf + LOG_OFF + SECTOR + 4092, 10);  /* SequenceLow */
  h_crc (&m, 0);
  expect_none (&m, guid_a);

  h_simple (&m, 0, 0, big - 1, 3 * MiB, 1);
  h_simple (&m, 2 * SECTOR, 0, big, 3 * MiB, 2);
  memcpy (m.buf + LOG_OFF + 3 * SECTOR, "dat!", 4);
  h_crc (&m, 2 * SECTOR);
  assert_int_equal (find (&m, guid_a, &seq), 0);
  assert_int_equal (seq.entry_count, 1);
  assert_int_equal (seq.last_sequence, big - 1);
  free (m.buf);
}

static void
test_descriptor_count_overflow (void **state)
{
  struct mem m;

  mem_init (&m, FILE_SIZE);
  /* 127 descriptors need two descriptor sectors; EntryLength has one. */
  h_entry (&m, 0, SECTOR, 0, 1, 127, guid_a, FILE_SIZE, FILE_SIZE);
  h_crc (&m, 0);
  expect_error (&m, "DescriptorCount 127");
  /* The largest count: no arithmetic overflow, still an error. */
  h_entry (&m, 0, SECTOR, 0, 1, UINT32_MAX, guid_a, FILE_SIZE, FILE_SIZE);
  h_crc (&m, 0);
  expect_error (&m, "DescriptorCount 4294967295");
  /* One data descriptor, but no room for its data sector. */
  h_entry (&m, 0, SECTOR, 0, 1, 1, guid_a, FILE_SIZE, FILE_SIZE);
  h_desc (&m, 0, 0, "desc", 0, 0, 3 * MiB, 1);
  h_crc (&m, 0);
  expect_error (&m, "data sectors do not fit");
  free (m.buf);
}

static void
test_entry_length (void **state)
{
  struct mem m;

  mem_init (&m, FILE_SIZE);
  h_simple (&m, 0, 0, 1, 3 * MiB, 1);
  put32 (m.buf + LOG_OFF + 8, 2 * SECTOR - 512);
  h_crc (&m, 0);
  expect_none (&m, guid_a);
  put32 (m.buf + LOG_OFF + 8, 0);
  expect_none (&m, guid_a);
  put32 (m.buf + LOG_OFF + 8, LOG_LEN + SECTOR);
  expect_none (&m, guid_a);
  put32 (m.buf + LOG_OFF + 8, UINT32_MAX & ~(SECTOR - 1));
  expect_none (&m, guid_a);
  free (m.buf);
}

static void
test_bad_targets (void **state)
{
  struct mem m;

  mem_init (&m, FILE_SIZE);
  h_simple (&m, 0, 0, 1, 3 * MiB + 512, 1);
  expect_error (&m, "descriptor 0 (data): file offset 3146240 not 4 KiB-aligned");

  h_simple (&m, 0, 0, 1, LOG_OFF + 8 * SECTOR, 1);
  expect_error (&m, "overlaps the log");

  h_simple (&m, 0, 0, 1, 64 * KiB, 1);
  expect_error (&m, "headers");

  h_simple (&m, 0, 0, 1, FILE_SIZE, 1);
  expect_error (&m, "beyond LastFileOffset");

  /* Zero descriptors: a length that is no 4 KiB multiple, a range that
   * runs into the log, one that wraps round 2^64.
   */
  h_entry (&m, 0, SECTOR, 0, 1, 1, guid_a, FILE_SIZE, FILE_SIZE);
  h_desc (&m, 0, 0, "zero", 0, 1000, 3 * MiB, 1);
  h_crc (&m, 0);
  expect_error (&m, "ZeroLength 1000");
  h_desc (&m, 0, 0, "zero", 0, 2 * MiB, 512 * KiB, 1);
  h_crc (&m, 0);
  expect_error (&m, "overlaps the log");
  h_desc (&m, 0, 0, "zero", 0, UINT64_MAX & ~(uint64_t) (SECTOR - 1),
          3 * MiB, 1);
  h_crc (&m, 0);
  expect_error (&m, "beyond LastFileOffset");
  h_desc (&m, 0, 0, "what", 0, 0, 3 * MiB, 1);
  h_crc (&m, 0);
  expect_error (&m, "unknown signature");
  free (m.buf);
}

static void
test_absurd_offsets (void **state)
{
  struct mem m;

  mem_init (&m, FILE_SIZE);
  h_entry (&m, 0, SECTOR, 0, 1, 0, guid_a, FILE_SIZE, UINT64_C (1) << 60);
  h_crc (&m, 0);
  expect_error (&m, "LastFileOffset 1152921504606846976");
  h_entry (&m, 0, SECTOR, 0, 1, 0, guid_a, FILE_SIZE, FILE_SIZE + 512);
  h_crc (&m, 0);
  expect_error (&m, "LastFileOffset");
  /* A file shorter than FlushedFileOffset was truncated. */
  h_entry (&m, 0, SECTOR, 0, 1, 0, guid_a, 2 * FILE_SIZE, 2 * FILE_SIZE);
  h_crc (&m, 0);
  expect_error (&m, "truncated");
  h_entry (&m, 0, SECTOR, 3 * SECTOR + 512, 1, 0, guid_a, FILE_SIZE,
           FILE_SIZE);
  h_crc (&m, 0);
  expect_error (&m, "Tail");
  h_entry (&m, 0, SECTOR, LOG_LEN, 1, 0, guid_a, FILE_SIZE, FILE_SIZE);
  h_crc (&m, 0);
  expect_error (&m, "Tail");
  free (m.buf);
}

/* Three checksummed entries whose chain from the tail covers more than
 * the log: E1 at 0 (768 KiB, mostly padding), E2 at 768 KiB (512 KiB,
 * wrapping over E1's start), E3 at 256 KiB (inside E1's padding).  Each
 * checksum covers the others' headers, so they are summed in order.
 */
static void
test_looping_tail (void **state)
{
  struct mem m;

  mem_init (&m, FILE_SIZE);
  h_entry (&m, 256 * KiB, SECTOR, 0, 3, 0, guid_a, FILE_SIZE, FILE_SIZE);
  h_crc (&m, 256 * KiB);
  h_entry (&m, 0, 768 * KiB, 0, 1, 0, guid_a, FILE_SIZE, FILE_SIZE);
  h_crc (&m, 0);
  h_entry (&m, 768 * KiB, 512 * KiB, 0, 2, 0, guid_a, FILE_SIZE,
           FILE_SIZE);
  h_crc (&m, 768 * KiB);
  expect_error (&m, "wraps onto itself");
  free (m.buf);
}

/* Entries of another log (another LogGuid) are not replayed. */
static void
test_wrong_guid (void **state)
{
  struct mem m;
  struct vhdx_log_sequence seq;

  mem_init (&m, FILE_SIZE);
  h_simple (&m, 0, 0, 1, 3 * MiB, 1);
  expect_none (&m, guid_b);
  assert_int_equal (find (&m, guid_a, &seq), 0);
  assert_int_equal (seq.entry_count, 1);
  free (m.buf);
}

/* A gap in the sequence numbers or a tail that names no entry breaks the
 * chain; the newest sequence that holds is active.
 */
static void
test_gaps (void **state)
{
  struct mem m;
  struct vhdx_log_sequence seq;

  mem_init (&m, FILE_SIZE);
  h_simple (&m, 0, 0, 1, 3 * MiB, 1);
  h_simple (&m, 2 * SECTOR, 0, 3, 3 * MiB, 2);          /* 2 missing */
  h_simple (&m, 4 * SECTOR, 4 * SECTOR, 2, 3 * MiB, 3); /* alone */
  assert_int_equal (find (&m, guid_a, &seq), 0);
  assert_int_equal (seq.entry_count, 1);
  assert_int_equal (seq.last_sequence, 2);
  assert_int_equal (seq.head, 4 * SECTOR);
  /* Tail pointing between entries. */
  h_simple (&m, 4 * SECTOR, SECTOR, 2, 3 * MiB, 3);
  assert_int_equal (find (&m, guid_a, &seq), 0);
  assert_int_equal (seq.last_sequence, 1);
  free (m.buf);
}

/* An entry may wrap round the end of the log (other writers do that):
 * header and first data sector in the last two sectors, the second data
 * sector at log offset 0, so that one read of the entry is split.
 */
static void
test_entry_wraps (void **state)
{
  struct mem m;
  struct vhdx_log_sequence seq;
  struct vhdx_log_params p = params_for ("mem.vhdx", LOG_OFF, LOG_LEN,
                                         guid_a, FILE_SIZE);
  uint32_t pos = LOG_LEN - 2 * SECTOR;

  mem_init (&m, FILE_SIZE);
  h_entry (&m, pos, 3 * SECTOR, pos, 77, 2, guid_a, FILE_SIZE, FILE_SIZE);
  h_desc (&m, pos, 0, "desc", 0x04030201, 0, 3 * MiB, 77);
  h_desc (&m, pos, 1, "desc", 0, 0x0807060504030201, 3 * MiB + SECTOR, 77);
  h_data (&m, pos + SECTOR, 77, 0x5a);
  h_data (&m, 0, 77, 0x6b);
  h_crc (&m, pos);
  assert_int_equal (find (&m, guid_a, &seq), 0);
  assert_int_equal (seq.entry_count, 1);
  assert_int_equal (seq.end, SECTOR);
  assert_int_equal (vhdx_log_replay (&p, mem_read, &m, &seq, mem_write,
                                     mem_zero, &m), 0);
  assert_int_equal (get64 (m.buf + 3 * MiB), 0);
  assert_int_equal (m.buf[3 * MiB + 8], 0x5a);
  assert_int_equal (m.buf[3 * MiB + 4091], 0x5a);
  assert_int_equal (get32 (m.buf + 3 * MiB + 4092), 0x04030201);
  assert_int_equal (get64 (m.buf + 3 * MiB + SECTOR), 0x0807060504030201);
  assert_int_equal (m.buf[3 * MiB + SECTOR + 8], 0x6b);
  assert_int_equal (m.buf[3 * MiB + SECTOR + 4091], 0x6b);
  assert_int_equal (get32 (m.buf + 3 * MiB + SECTOR + 4092), 0);
  free (m.buf);
}

static void
test_bad_params_and_read_errors (void **state)
{
  struct mem m;
  struct vhdx_log_sequence seq;
  struct vhdx_log_params p;

  mem_init (&m, FILE_SIZE);
  h_simple (&m, 0, 0, 1, 3 * MiB, 1);
  p = params_for ("mem.vhdx", LOG_OFF, LOG_LEN, guid_a, 1536 * KiB);
  assert_int_equal (vhdx_log_find_active (&p, mem_read, &m, &seq), -EINVAL);
  p = params_for ("mem.vhdx", LOG_OFF + 4096, LOG_LEN, guid_a, FILE_SIZE);
  assert_int_equal (vhdx_log_find_active (&p, mem_read, &m, &seq), -EINVAL);
  p = params_for ("mem.vhdx", LOG_OFF, LOG_LEN - 4096, guid_a, FILE_SIZE);
  assert_int_equal (vhdx_log_find_active (&p, mem_read, &m, &seq), -EINVAL);
  p = params_for ("mem.vhdx", UINT64_MAX & ~(MiB - 1), LOG_LEN, guid_a,
                  FILE_SIZE);
  assert_int_equal (vhdx_log_find_active (&p, mem_read, &m, &seq), -EINVAL);
  m.fail_reads = -EIO;
  assert_int_equal (find (&m, guid_a, &seq), -EIO);
  assert_non_null (strstr (vhd_last_error (), "mem.vhdx"));
  free (m.buf);
}

/* ---- the writer, read back ---- */

/* Apply updates in place on an image, as the driver will. */
static void
apply (uint8_t *img, const struct vhdx_log_update *u, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (u[i].data)
      memcpy (img + u[i].file_offset, u[i].data, u[i].length);
    else
      memset (img + u[i].file_offset, 0, u[i].length);
  }
}

static void
write_encoded (struct mem *m, const struct vhdx_log_encoded *e)
{
  for (unsigned i = 0; i < e->npieces; i++) {
    assert_true (e->pieces[i].file_offset >= LOG_OFF);
    assert_true (e->pieces[i].file_offset + e->pieces[i].len
                 <= LOG_OFF + LOG_LEN);
    memcpy (m->buf + e->pieces[i].file_offset,
            e->buf + e->pieces[i].buf_offset, e->pieces[i].len);
  }
}

/* Replay what the log in m holds into a copy of base; it must equal
 * expect outside the log.
 */
static void
replay_equals (struct mem *m, const uint8_t *base, const uint8_t *expect,
               struct vhdx_log_sequence *seq)
{
  struct vhdx_log_params p = params_for ("mem.vhdx", LOG_OFF, LOG_LEN,
                                         guid_a, FILE_SIZE);
  struct mem out;

  assert_int_equal (vhdx_log_find_active (&p, mem_read, m, seq), 0);
  mem_init (&out, FILE_SIZE);
  memcpy (out.buf, base, FILE_SIZE);
  assert_int_equal (vhdx_log_replay (&p, mem_read, m, seq, mem_write,
                                     mem_zero, &out), 0);
  assert_memory_equal (out.buf, expect, LOG_OFF);
  assert_memory_equal (out.buf + LOG_OFF + LOG_LEN,
                       expect + LOG_OFF + LOG_LEN,
                       FILE_SIZE - LOG_OFF - LOG_LEN);
  free (out.buf);
}

static void
test_writer_round_trip (void **state)
{
  struct mem m;
  struct vhdx_log_writer w;
  struct vhdx_log_encoded e;
  struct vhdx_log_sequence seq;
  uint8_t *base = malloc (FILE_SIZE), *expect = malloc (FILE_SIZE);
  uint8_t *a = malloc (3 * SECTOR), *b = malloc (SECTOR);
  uint64_t s0 = (UINT64_C (0x12345678) << 32) | 0xfffffffe;

  assert_non_null (base);
  assert_non_null (expect);
  assert_non_null (a);
  assert_non_null (b);
  mem_init (&m, FILE_SIZE);
  for (uint64_t i = 0; i < FILE_SIZE; i++)
    m.buf[i] = (uint8_t) (i * 7 + (i >> 12));
  memset (m.buf + LOG_OFF, 0, LOG_LEN);
  memcpy (base, m.buf, FILE_SIZE);
  memcpy (expect, base, FILE_SIZE);

  /* a: three sectors, the middle one all zero (a zero descriptor), the
   * others with distinct leading and trailing bytes.
   */
  for (unsigned i = 0; i < 3 * SECTOR; i++)
    a[i] = (uint8_t) (i * 13 + 1);
  memset (a + SECTOR, 0, SECTOR);
  memcpy (a, "ABCDEFGH", 8);
  memcpy (a + SECTOR - 4, "WXYZ", 4);
  memset (b, 0xee, SECTOR);

  /* Start 3 sectors before the end: entry 1 (2 sectors) fits, entry 2
   * (4 sectors) does not, so a filler entry covers the last sector and
   * entry 2 goes to log offset 0; all one sequence.
   */
  assert_int_equal (vhdx_log_writer_init (&w, LOG_OFF, LOG_LEN, guid_a,
                                          LOG_LEN - 3 * SECTOR, s0), 0);
  {
    struct vhdx_log_update u[] = { { 3 * MiB, SECTOR, b } };
    assert_int_equal (vhdx_log_encode_entry (&w, u, 1, FILE_SIZE,
                                             FILE_SIZE, &e), 0);
    assert_int_equal (e.npieces, 1);
    assert_int_equal (e.pieces[0].file_offset,
                      LOG_OFF + LOG_LEN - 3 * SECTOR);
    assert_int_equal (e.len, 2 * SECTOR);
    write_encoded (&m, &e);
    apply (expect, u, 1);
    free (e.buf);
  }
  {
    struct vhdx_log_update u[] = {
      { 3 * MiB + 8 * SECTOR, 3 * SECTOR, a },
      { 2 * MiB + 4 * SECTOR, 5 * SECTOR, NULL },
    };
    assert_int_equal (vhdx_log_encode_entry (&w, u, 2, FILE_SIZE,
                                             FILE_SIZE, &e), 0);
    assert_int_equal (e.npieces, 2);
    assert_int_equal (e.pieces[0].file_offset,
                      LOG_OFF + LOG_LEN - SECTOR);
    assert_int_equal (e.pieces[0].len, SECTOR);
    assert_int_equal (e.pieces[1].file_offset, LOG_OFF);
    assert_int_equal (e.pieces[1].len, 3 * SECTOR);   /* 1 desc + 2 data */
    write_encoded (&m, &e);
    apply (expect, u, 2);
    free (e.buf);
  }
  replay_equals (&m, base, expect, &seq);
  assert_int_equal (seq.entry_count, 3);
  assert_int_equal (seq.tail, LOG_LEN - 3 * SECTOR);
  assert_int_equal (seq.head, 0);
  assert_int_equal (seq.end, 3 * SECTOR);
  assert_int_equal (seq.first_sequence, s0);
  assert_int_equal (seq.last_sequence, s0 + 2);
  assert_int_equal (seq.descriptor_count, 1 + 0 + 4);

  /* Entries 1-2 applied and flushed: entry 3 starts a new sequence; the
   * old one stays behind in the log but is not replayed.
   */
  memcpy (base, expect, FILE_SIZE);
  vhdx_log_writer_applied (&w);
  {
    struct vhdx_log_update u[] = { { 3 * MiB + 64 * SECTOR, SECTOR, b } };
    assert_int_equal (vhdx_log_encode_entry (&w, u, 1, FILE_SIZE,
                                             FILE_SIZE, &e), 0);
    assert_int_equal (e.pieces[0].file_offset, LOG_OFF + 3 * SECTOR);
    write_encoded (&m, &e);
    apply (expect, u, 1);
    free (e.buf);
  }
  replay_equals (&m, base, expect, &seq);
  assert_int_equal (seq.entry_count, 1);
  assert_int_equal (seq.first_sequence, s0 + 3);
  assert_int_equal (seq.tail, 3 * SECTOR);
  {
    struct vhdx_log_params p = params_for ("mem.vhdx", LOG_OFF, LOG_LEN,
                                           guid_a, FILE_SIZE);
    struct mem out;
    mem_init (&out, FILE_SIZE);
    assert_int_equal (vhdx_log_replay (&p, mem_read, &m, &seq, mem_write,
                                       mem_zero, &out), 0);
    assert_int_equal (out.writes, 1);
    assert_int_equal (out.zeros, 0);
    assert_int_equal (out.written[0], 3 * MiB + 64 * SECTOR);
    free (out.buf);
  }

  /* Entry 3 torn: the older sequence (entries 1-2 with the filler) is
   * the newest that holds, and replaying it is still correct for what
   * it covers.
   */
  m.buf[LOG_OFF + 3 * SECTOR + 200] ^= 0xff;
  assert_int_equal (find (&m, guid_a, &seq), 0);
  assert_int_equal (seq.entry_count, 3);
  assert_int_equal (seq.last_sequence, s0 + 2);

  free (m.buf);
  free (base);
  free (expect);
  free (a);
  free (b);
}

/* The writer never overwrites entries still needed: -ENOSPC until they
 * are applied; an entry bigger than the log is -EFBIG; updates the
 * reader would refuse are refused.
 */
static void
test_writer_limits (void **state)
{
  struct vhdx_log_writer w;
  struct vhdx_log_encoded e;
  uint8_t *big = malloc (300 * SECTOR);
  struct vhdx_log_update u = { 3 * MiB, 100 * SECTOR, big };
  unsigned ok = 0;
  int r;

  assert_non_null (big);
  memset (big, 1, 300 * SECTOR);
  assert_int_equal (vhdx_log_writer_init (&w, LOG_OFF, LOG_LEN, guid_a, 0,
                                          1), 0);
  /* 100 data sectors + 1 descriptor sector each: two fit, not three. */
  while ((r = vhdx_log_encode_entry (&w, &u, 1, FILE_SIZE, 8 * MiB,
                                     &e)) == 0) {
    free (e.buf);
    ok++;
    assert_true (ok < 10);
  }
  assert_int_equal (r, -ENOSPC);
  assert_int_equal (ok, 2);
  vhdx_log_writer_applied (&w);
  assert_int_equal (vhdx_log_encode_entry (&w, &u, 1, FILE_SIZE, 8 * MiB,
                                           &e), 0);
  free (e.buf);

  u.length = 300 * SECTOR;
  assert_int_equal (vhdx_log_encode_entry (&w, &u, 1, FILE_SIZE, 8 * MiB,
                                           &e), -EFBIG);
  u.length = SECTOR;
  u.file_offset = LOG_OFF;
  assert_int_equal (vhdx_log_encode_entry (&w, &u, 1, FILE_SIZE, 8 * MiB,
                                           &e), -EINVAL);
  u.file_offset = 128 * KiB;
  assert_int_equal (vhdx_log_encode_entry (&w, &u, 1, FILE_SIZE, 8 * MiB,
                                           &e), -EINVAL);
  u.file_offset = 3 * MiB + 1;
  assert_int_equal (vhdx_log_encode_entry (&w, &u, 1, FILE_SIZE, 8 * MiB,
                                           &e), -EINVAL);
  u.file_offset = 8 * MiB;
  assert_int_equal (vhdx_log_encode_entry (&w, &u, 1, FILE_SIZE, 8 * MiB,
                                           &e), -EINVAL);
  free (big);
}

/* ---- the dirty-log samples, against qemu-img's replay ---- */

struct fd_io {
  int fd;
};

static int
fd_read (void *opaque, void *buf, size_t len, uint64_t off)
{
  struct fd_io *f = opaque;
  ssize_t r = pread (f->fd, buf, len, off);

  if (r < 0)
    return -errno;
  return (size_t) r == len ? 0 : -EIO;
}

static int
fd_write (void *opaque, const void *buf, size_t len, uint64_t off)
{
  struct fd_io *f = opaque;
  ssize_t r = pwrite (f->fd, buf, len, off);

  if (r < 0)
    return -errno;
  return (size_t) r == len ? 0 : -EIO;
}

static int
fd_zero (void *opaque, uint64_t off, uint64_t len)
{
  static const uint8_t zeros[SECTOR];

  for (uint64_t o = 0; o < len; o += SECTOR) {
    int r = fd_write (opaque, zeros, SECTOR, off + o);
    if (r < 0)
      return r;
  }
  return 0;
}

/* The current header's log fields, read here with a few lines at the
 * spec's offsets (the header codec is another helper's).
 */
static void
read_header_log (const uint8_t *file, uint8_t guid[16], uint64_t *log_off,
                 uint32_t *log_len)
{
  const uint8_t *best = NULL;

  for (int i = 1; i <= 2; i++) {
    const uint8_t *h = file + i * 64 * KiB;
    uint8_t tmp[SECTOR];

    memcpy (tmp, h, SECTOR);
    memset (tmp + 4, 0, 4);
    if (memcmp (h, "head", 4) != 0 || vhdx_crc32c (tmp, SECTOR) != get32 (h + 4))
      continue;
    if (best == NULL || get64 (h + 8) > get64 (best + 8))
      best = h;
  }
  assert_non_null (best);
  memcpy (guid, best + 48, 16);
  *log_len = get32 (best + 68);
  *log_off = get64 (best + 72);
}

static uint8_t *
slurp (const char *path, uint64_t *size)
{
  int fd = open (path, O_RDONLY);
  struct stat st;
  uint8_t *b;

  assert_true (fd >= 0);
  assert_int_equal (fstat (fd, &st), 0);
  b = malloc (st.st_size);
  assert_non_null (b);
  assert_int_equal (pread (fd, b, st.st_size, 0), st.st_size);
  close (fd);
  *size = st.st_size;
  return b;
}

static void
sample (const char *name, uint32_t count, uint64_t first, uint64_t last,
        uint32_t tail)
{
  const char *samples = getenv ("VHDKIT_SAMPLES");
  char xz[512], mine[512], qemu[512], cmd[4096];
  uint8_t guid[16], *file, *a, *b;
  uint64_t size, log_off, asize, bsize;
  uint32_t log_len;
  struct vhdx_log_params p;
  struct vhdx_log_sequence seq;
  struct fd_io io;

  snprintf (xz, sizeof xz, "%s/vhdx/%s.xz",
            samples && *samples ? samples : "/work/shared/samples", name);
  if (access (xz, R_OK) != 0)
    skip_or_fail ("%s: not found (set VHDKIT_SAMPLES)\n", xz);
  snprintf (mine, sizeof mine, "%s/mine-%s", dir, name);
  snprintf (qemu, sizeof qemu, "%s/qemu-%s", dir, name);
  snprintf (cmd, sizeof cmd, "xz -dc '%s' > '%s' && cp '%s' '%s'", xz,
            mine, mine, qemu);
  assert_int_equal (system (cmd), 0);

  file = slurp (mine, &size);
  read_header_log (file, guid, &log_off, &log_len);
  free (file);
  p = params_for (mine, log_off, log_len, guid, size);

  io.fd = open (mine, O_RDWR);
  assert_true (io.fd >= 0);
  if (vhdx_log_find_active (&p, fd_read, &io, &seq) != 0)
    fail_msg ("%s", vhd_last_error ());
  assert_int_equal (seq.entry_count, count);
  assert_int_equal (seq.first_sequence, first);
  assert_int_equal (seq.last_sequence, last);
  assert_int_equal (seq.tail, tail);
  if (vhdx_log_replay (&p, fd_read, &io, &seq, fd_write, fd_zero, &io) != 0)
    fail_msg ("%s", vhd_last_error ());
  if (size < seq.last_file_offset)
    assert_int_equal (ftruncate (io.fd, seq.last_file_offset), 0);
  close (io.fd);

  if (system ("qemu-img --version >/dev/null 2>&1") != 0)
    skip_or_fail ("qemu-img not installed: no independent replay\n");
  snprintf (cmd, sizeof cmd, "qemu-img check -r all -f vhdx '%s' "
            ">/dev/null 2>&1", qemu);
  assert_int_equal (system (cmd), 0);

  /* Byte-identical except the two headers (64-192 KiB), which qemu
   * rewrites (FileWriteGuid, LogGuid cleared) and replay does not touch.
   * Measured with cmp -l on both samples: qemu changes nothing else but
   * the replayed bytes; not the region tables, not the log itself.
   */
  a = slurp (mine, &asize);
  b = slurp (qemu, &bsize);
  assert_int_equal (asize, bsize);
  assert_memory_equal (a, b, 64 * KiB);
  assert_memory_equal (a + 192 * KiB, b + 192 * KiB, asize - 192 * KiB);
  /* And the replay changed something: the log was not a no-op. */
  snprintf (cmd, sizeof cmd, "xz -dc '%s' | cmp -s - '%s'", xz, mine);
  assert_int_not_equal (system (cmd), 0);
  free (a);
  free (b);
}

static void
test_sample_qemu (void **state)
{
  /* One entry of this LogGuid (seq 7); entries 1-6 of other logs. */
  sample ("qemu-iotest-dirtylog-10G-4M.vhdx", 1, 7, 7, 49152);
}

static void
test_sample_windows (void **state)
{
  /* The last entry (…391) names the entry at 20480 as its tail. */
  sample ("discutils-vhdx-log-replay.vhdx", 2,
          UINT64_C (80117443871106390), UINT64_C (80117443871106391),
          20480);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_simple_and_torn),
    cmocka_unit_test (test_torn_head_keeps_previous),
    cmocka_unit_test (test_data_sector_mismatch),
    cmocka_unit_test (test_descriptor_count_overflow),
    cmocka_unit_test (test_entry_length),
    cmocka_unit_test (test_bad_targets),
    cmocka_unit_test (test_absurd_offsets),
    cmocka_unit_test (test_looping_tail),
    cmocka_unit_test (test_wrong_guid),
    cmocka_unit_test (test_gaps),
    cmocka_unit_test (test_entry_wraps),
    cmocka_unit_test (test_bad_params_and_read_errors),
    cmocka_unit_test (test_writer_round_trip),
    cmocka_unit_test (test_writer_limits),
    cmocka_unit_test (test_sample_qemu),
    cmocka_unit_test (test_sample_windows),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
