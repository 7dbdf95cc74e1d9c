/* vhdkit: the VHDX log ([MS-VHDX] 2.3): find the active sequence,
 * replay it, and encode new entries.  Pure code over callbacks: nothing
 * here opens a file or knows where the bytes go, so that the driver can
 * replay into the image (read-write open) or into an in-memory overlay
 * (read-only open), and the tests can run it over a buffer.
 *
 * On-disk layout (all little-endian, all sizes from the spec):
 *
 *   The log is a circular buffer of 4 KiB sectors at LogOffset, LogLength
 *   bytes long (both from the current header).  An entry is EntryLength
 *   bytes (a multiple of 4 KiB; it may wrap around the end of the log):
 *   descriptor sectors, then one data sector per data descriptor, then
 *   (optionally) padding up to EntryLength.
 *
 *   entry header (64 bytes, at the start of the first descriptor sector)
 *     0  Signature "loge"          4  Checksum (CRC-32C over EntryLength
 *     8  EntryLength                  bytes, this field as zero)
 *    12  Tail (log offset of the   16  SequenceNumber (> 0)
 *        sequence's first entry)   24  DescriptorCount   28 Reserved
 *    32  LogGuid (16 bytes)        48  FlushedFileOffset 56 LastFileOffset
 *
 *   descriptors (32 bytes each, right after the header: 126 fit in the
 *   first sector, 128 in each further descriptor sector)
 *     "zero": 4 Reserved, 8 ZeroLength, 16 FileOffset, 24 SequenceNumber
 *     "desc": 4 TrailingBytes (sector bytes 4092..4095), 8 LeadingBytes
 *             (sector bytes 0..7), 16 FileOffset, 24 SequenceNumber
 *
 *   data sector (4 KiB): 0 "data", 4 SequenceHigh, 8 Data (sector bytes
 *   8..4091, 4084 bytes), 4092 SequenceLow.
 *
 * Every byte read here is untrusted: all of it is validated before use.
 */

#ifndef VHDKIT_VHDX_LOG_H
#define VHDKIT_VHDX_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHDX_LOG_SECTOR 4096u
/* Bytes of a 4 KiB update that a data sector carries (8..4091). */
#define VHDX_LOG_DATA_BYTES 4084u

/* The first 192 KiB (file type identifier at 0, headers at 64 and 128
 * KiB) are never a target of the log: the spec says header updates
 * cannot go through the log (the header locates the log), and the
 * identifier is written once at create.  Region tables (192 KiB on) may
 * be.
 */
#define VHDX_LOG_PROTECTED_END (192u * 1024)

/* The largest LastFileOffset (and replay target) accepted: a 64 TiB
 * virtual disk (the VHDX maximum) plus room for its metadata (BAT,
 * sector bitmaps: 16 GiB for 64 TiB of 512-byte sectors), generously.
 */
#define VHDX_LOG_MAX_FILE_OFFSET \
  ((UINT64_C (64) << 40) + (UINT64_C (64) << 30))

/* Read len bytes at file offset into buf: 0, or -errno (a short read
 * is an error: the callback returns -EIO or similar).
 */
typedef int (*vhdx_log_read_fn) (void *opaque, void *buf, size_t len,
                                 uint64_t offset);
/* Write one reassembled 4 KiB sector (len is always 4096). */
typedef int (*vhdx_log_write_fn) (void *opaque, const void *buf, size_t len,
                                  uint64_t offset);
/* Make [offset, offset + len) read as zeros (len a multiple of 4096). */
typedef int (*vhdx_log_zero_fn) (void *opaque, uint64_t offset,
                                 uint64_t len);

/* Where the log is: from the current header, plus the file's size now.
 * log_guid is the header's LogGuid as the 16 bytes on disk (no byte
 * swapping: entries are compared with it byte for byte).
 */
struct vhdx_log_params {
  const char *path;             /* for error messages only */
  uint64_t log_offset;          /* LogOffset: 1 MiB multiple, >= 1 MiB */
  uint32_t log_length;          /* LogLength: 1 MiB multiple, > 0 */
  uint8_t log_guid[16];         /* LogGuid, raw */
  uint64_t file_size;           /* the file's size now */
};

/* The active sequence: entries from tail to head, consecutive in the
 * circular log with consecutive sequence numbers.  entry_count == 0
 * means there is none (nothing to replay; not an error).
 */
struct vhdx_log_sequence {
  uint32_t entry_count;
  uint32_t tail;                /* log offset of the first entry */
  uint32_t head;                /* log offset of the last entry */
  uint32_t end;                 /* log offset just past the last entry
                                 * (mod LogLength): where a writer that
                                 * continues this log would go next */
  uint64_t first_sequence;      /* SequenceNumber of the first entry */
  uint64_t last_sequence;       /* ... and of the last */
  uint64_t flushed_file_offset; /* the last entry's FlushedFileOffset */
  uint64_t last_file_offset;    /* the last entry's LastFileOffset: after
                                 * replay the file must be at least this
                                 * long (the caller extends it) */
  uint64_t descriptor_count;    /* over all entries, for reports */
};

/* Find the active sequence ([MS-VHDX] 2.3.3): every 4 KiB-aligned
 * position of the log is tried as an entry; an entry is valid when its
 * signature, EntryLength (a nonzero 4 KiB multiple no longer than the
 * log), CRC-32C, LogGuid, descriptor and data sector signatures and
 * sequence numbers all check out; anything else there (a torn or stale
 * write, another log's entry) is simply not an entry.  A valid entry
 * whose content breaks a rule (descriptor count that does not fit the
 * entry, unknown descriptor, Tail outside the log, a target not 4 KiB
 * aligned, in the first 192 KiB, in the log, past LastFileOffset or the
 * cap) is an error: it passed the checksum, so it is corruption, not a
 * torn write.  The active sequence is the valid sequence ending at the
 * highest sequence number; a chain that would wrap onto itself is an
 * error, as is a file shorter than the sequence's FlushedFileOffset
 * (truncated).
 *
 * Returns 0 with out->entry_count > 0 (found) or == 0 (none), or
 * -errno with the message naming the file, the log offset and the field.
 */
int vhdx_log_find_active (const struct vhdx_log_params *p,
                          vhdx_log_read_fn read_fn, void *opaque,
                          struct vhdx_log_sequence *out);

/* Replay seq (from vhdx_log_find_active with the same p): each entry
 * from tail to head is read again and re-validated (-EIO if it changed
 * since), then its descriptors are applied in order: a data descriptor
 * as one write_fn of the reassembled 4 KiB sector, a zero descriptor as
 * one zero_fn.  The caller then makes the file at least
 * seq->last_file_offset long, and flushes.  Replaying twice is harmless.
 */
int vhdx_log_replay (const struct vhdx_log_params *p,
                     vhdx_log_read_fn read_fn, void *ropaque,
                     const struct vhdx_log_sequence *seq,
                     vhdx_log_write_fn write_fn, vhdx_log_zero_fn zero_fn,
                     void *wopaque);

/* ---- writing ---- */

/* One metadata update: length bytes (a nonzero multiple of 4096) at
 * file_offset (4 KiB aligned), from data, or zeros when data is NULL.
 * The encoder turns all-zero 4 KiB sectors into zero descriptors.
 */
struct vhdx_log_update {
  uint64_t file_offset;
  uint64_t length;
  const void *data;
};

/* The writer's state, explicit so that the driver can reason about it:
 *
 *   head: log offset where the next entry goes;
 *   tail: log offset of the oldest entry whose in-place writes may not
 *         be durable yet (every new entry's Tail field);
 *   used: bytes of the log from tail to head (what must not be
 *         overwritten);
 *   sequence: SequenceNumber of the next entry.
 *
 * The protocol per batch of metadata updates: vhdx_log_encode_entry,
 * write the piece(s) it returns, flush; then write the updates in place;
 * and only after a later flush made those in-place writes durable, call
 * vhdx_log_writer_applied, which lets the tail advance to the head (so
 * the log space is reused).  Until then the tail stays, so that a crash
 * replays every entry whose in-place writes may be lost.
 */
struct vhdx_log_writer {
  uint64_t log_offset;
  uint32_t log_length;
  uint8_t log_guid[16];
  uint32_t head;
  uint32_t tail;
  uint32_t used;
  uint64_t sequence;
};

/* A fresh log: head = tail = start (a 4 KiB multiple inside the log,
 * e.g. 0, or a replayed sequence's end), nothing in use, the first
 * entry numbered first_sequence (> 0; e.g. random, or one past the
 * replayed sequence's last).  The header's LogGuid must be log_guid
 * before any entry is written.  Returns 0 or -EINVAL.
 */
int vhdx_log_writer_init (struct vhdx_log_writer *w, uint64_t log_offset,
                          uint32_t log_length, const uint8_t log_guid[16],
                          uint32_t start, uint64_t first_sequence);

/* Every entry encoded so far has been applied in place and flushed:
 * the next entry starts a new sequence (tail = head).
 */
void vhdx_log_writer_applied (struct vhdx_log_writer *w);

/* An encoded entry: buf (malloc'd, the caller frees it) holds one or two
 * whole entries, to be written as pieces[0..npieces) (each at a file
 * offset inside the log; no piece straddles the end of the log).  Two
 * pieces when the entry did not fit before the end of the log while
 * earlier entries were still needed: the first is a filler entry (no
 * descriptors) up to the end, keeping the sequence consecutive, the
 * second the entry at log offset 0.
 */
struct vhdx_log_encoded {
  uint8_t *buf;
  size_t len;
  unsigned npieces;
  struct {
    uint64_t file_offset;
    size_t buf_offset;
    size_t len;
  } pieces[2];
  uint64_t sequence;            /* SequenceNumber of the (last) entry */
};

/* Encode updates[0..n) as one entry (plus a filler if needed) and
 * advance w (head, used, sequence).  flushed_file_offset and
 * last_file_offset are the entry's fields (1 MiB multiples; the file's
 * durable size and the size all structures fit in).  Every update is
 * checked as the reader would (aligned, outside the first 192 KiB and
 * the log, inside last_file_offset): -EINVAL.  -ENOSPC when the log has
 * no room until vhdx_log_writer_applied (w is unchanged); -EFBIG when
 * the entry could never fit in this log.
 */
int vhdx_log_encode_entry (struct vhdx_log_writer *w,
                           const struct vhdx_log_update *updates, size_t n,
                           uint64_t flushed_file_offset,
                           uint64_t last_file_offset,
                           struct vhdx_log_encoded *out);

#endif /* VHDKIT_VHDX_LOG_H */
