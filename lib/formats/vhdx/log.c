/* vhdkit: the VHDX log, reading side: validate entries, find the active
 * sequence, replay it ([MS-VHDX] 2.3).  See log.h for the layout.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "formats/vhdx/crc32c.h"
#include "formats/vhdx/log.h"
#include "formats/vhdx/log-codec.h"

/* What is known about one valid entry after the scan. */
struct entry_info {
  uint32_t offset;
  uint32_t length;
  uint32_t tail;
  uint64_t sequence;
  uint64_t flushed_file_offset;
  uint64_t last_file_offset;
  uint32_t descriptor_count;
};

static int
check_params (const struct vhdx_log_params *p)
{
  if (p->log_length == 0 || p->log_length % VHDX_LOG_MiB != 0)
    return vhd_error (EINVAL, "%s: header: LogLength %" PRIu32
                      " not a nonzero multiple of 1 MiB", p->path,
                      p->log_length);
  if (p->log_offset < VHDX_LOG_MiB || p->log_offset % VHDX_LOG_MiB != 0)
    return vhd_error (EINVAL, "%s: header: LogOffset %" PRIu64
                      " not a multiple of 1 MiB past the first", p->path,
                      p->log_offset);
  if (p->log_offset > p->file_size
      || p->file_size - p->log_offset < p->log_length)
    return vhd_error (EINVAL, "%s: header: log at %" PRIu64 " (%" PRIu32
                      " bytes) beyond the end of the file (%" PRIu64 ")",
                      p->path, p->log_offset, p->log_length, p->file_size);
  return 0;
}

/* Read len bytes (<= log_length) of the circular log from log offset
 * pos, wrapping at its end.
 */
static int
read_log (const struct vhdx_log_params *p, vhdx_log_read_fn read_fn,
          void *opaque, uint32_t pos, void *buf, size_t len)
{
  size_t first = len;
  int r;

  if (len > p->log_length || pos >= p->log_length)
    return vhd_error (EINVAL, "%s: log read of %zu bytes at %" PRIu32
                      " outside the log", p->path, len, pos);
  if ((uint64_t) pos + len > p->log_length)
    first = p->log_length - pos;
  r = read_fn (opaque, buf, first, p->log_offset + pos);
  if (r == 0 && first < len)
    r = read_fn (opaque, (uint8_t *) buf + first, len - first,
                 p->log_offset);
  if (r < 0)
    return vhd_error (-r, "%s: reading the log at log offset %" PRIu32
                      ": %s", p->path, pos, strerror (-r));
  return 0;
}

/* [off, off + len) as a replay target: inside LastFileOffset, outside
 * the first 192 KiB and the log.
 */
static int
check_target (const struct vhdx_log_params *p, uint32_t pos, uint32_t i,
              const char *what, uint64_t off, uint64_t len,
              uint64_t last_file_offset)
{
  if (off % VHDX_LOG_SECTOR != 0)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": descriptor %" PRIu32 " (%s): file offset %" PRIu64
                      " not 4 KiB-aligned", p->path, pos, i, what, off);
  if (len > last_file_offset || off > last_file_offset - len)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": descriptor %" PRIu32 " (%s): file offset %" PRIu64
                      " length %" PRIu64 " beyond LastFileOffset %" PRIu64,
                      p->path, pos, i, what, off, len, last_file_offset);
  if (off < VHDX_LOG_PROTECTED_END)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": descriptor %" PRIu32 " (%s): file offset %" PRIu64
                      " inside the file identifier and headers (the first "
                      "192 KiB)", p->path, pos, i, what, off);
  if (off < p->log_offset + p->log_length && p->log_offset < off + len)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": descriptor %" PRIu32 " (%s): file offset %" PRIu64
                      " length %" PRIu64 " overlaps the log itself",
                      p->path, pos, i, what, off, len);
  return 0;
}

/* Parse the entry at log offset pos into *bufp (grown as needed, up to
 * log_length).  Returns 1 and fills *e for a valid entry, 0 when there
 * is no valid entry at pos (not "loge", bad length, another LogGuid,
 * bad checksum, or sequence numbers that do not match: a torn or stale
 * write), or -errno when a checksummed entry of this log breaks a rule.
 */
static int
parse_entry (const struct vhdx_log_params *p, vhdx_log_read_fn read_fn,
             void *opaque, uint32_t pos, uint8_t **bufp, size_t *capp,
             struct entry_info *e)
{
  uint8_t sector[VHDX_LOG_SECTOR];
  uint8_t *buf;
  uint32_t length, sectors;
  uint64_t count, dsectors, ndata = 0, seq;
  int r;

  r = read_log (p, read_fn, opaque, pos, sector, sizeof sector);
  if (r < 0)
    return r;
  if (memcmp (sector, "loge", 4) != 0)
    return 0;
  length = vhdx_le32 (sector + 8);
  if (length == 0 || length % VHDX_LOG_SECTOR != 0
      || length > p->log_length)
    return 0;
  if (memcmp (sector + 32, p->log_guid, 16) != 0)
    return 0;

  if (*capp < length) {
    buf = realloc (*bufp, length);
    if (buf == NULL)
      return vhd_error (ENOMEM, "%s: log entry at log offset %" PRIu32
                        ": %" PRIu32 " bytes: out of memory", p->path, pos,
                        length);
    *bufp = buf;
    *capp = length;
  }
  buf = *bufp;
  memcpy (buf, sector, sizeof sector);
  if (length > VHDX_LOG_SECTOR) {
    r = read_log (p, read_fn, opaque,
                  (uint32_t) (((uint64_t) pos + VHDX_LOG_SECTOR)
                              % p->log_length),
                  buf + VHDX_LOG_SECTOR, length - VHDX_LOG_SECTOR);
    if (r < 0)
      return r;
  }
  if (vhdx_log_entry_crc (buf, length) != vhdx_le32 (buf + 4))
    return 0;

  /* Checksummed and ours.  Where the descriptors and data sectors are. */
  seq = vhdx_le64 (buf + 16);
  count = vhdx_le32 (buf + 24);
  sectors = length / VHDX_LOG_SECTOR;
  dsectors = vhdx_log_descriptor_sectors (count);
  if (dsectors > sectors)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": DescriptorCount %" PRIu64 " needs %" PRIu64
                      " descriptor sectors, EntryLength %" PRIu32
                      " holds %" PRIu32, p->path, pos, count, dsectors,
                      length, sectors);
  for (uint64_t i = 0; i < count; i++) {
    const uint8_t *d = buf + VHDX_LOG_HEADER_SIZE + i * VHDX_LOG_DESC_SIZE;

    if (memcmp (d, "desc", 4) == 0)
      ndata++;
    else if (memcmp (d, "zero", 4) != 0)
      return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                        ": descriptor %" PRIu64 ": unknown signature "
                        "%02x%02x%02x%02x", p->path, pos, i, d[0], d[1],
                        d[2], d[3]);
    if (vhdx_le64 (d + 24) != seq)
      return 0;
  }
  if (dsectors + ndata > sectors)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": %" PRIu64 " descriptor sectors and %" PRIu64
                      " data sectors do not fit EntryLength %" PRIu32,
                      p->path, pos, dsectors, ndata, length);
  for (uint64_t k = 0; k < ndata; k++) {
    const uint8_t *s = buf + (dsectors + k) * VHDX_LOG_SECTOR;

    if (memcmp (s, "data", 4) != 0
        || vhdx_le32 (s + 4) != (uint32_t) (seq >> 32)
        || vhdx_le32 (s + 4092) != (uint32_t) seq)
      return 0;
  }

  /* A valid entry: now every field must make sense. */
  e->offset = pos;
  e->length = length;
  e->tail = vhdx_le32 (buf + 12);
  e->sequence = seq;
  e->descriptor_count = (uint32_t) count;
  e->flushed_file_offset = vhdx_le64 (buf + 48);
  e->last_file_offset = vhdx_le64 (buf + 56);
  if (seq == 0)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": SequenceNumber 0", p->path, pos);
  if (e->tail % VHDX_LOG_SECTOR != 0 || e->tail >= p->log_length)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": Tail %" PRIu32 " not a 4 KiB-aligned offset "
                      "inside the log (%" PRIu32 " bytes)", p->path, pos,
                      e->tail, p->log_length);
  if (e->flushed_file_offset % VHDX_LOG_MiB != 0
      || e->flushed_file_offset > VHDX_LOG_MAX_FILE_OFFSET)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": FlushedFileOffset %" PRIu64 " not a multiple of "
                      "1 MiB up to %" PRIu64, p->path, pos,
                      e->flushed_file_offset, VHDX_LOG_MAX_FILE_OFFSET);
  if (e->last_file_offset % VHDX_LOG_MiB != 0
      || e->last_file_offset > VHDX_LOG_MAX_FILE_OFFSET)
    return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                      ": LastFileOffset %" PRIu64 " not a multiple of "
                      "1 MiB up to %" PRIu64, p->path, pos,
                      e->last_file_offset, VHDX_LOG_MAX_FILE_OFFSET);
  for (uint64_t i = 0; i < count; i++) {
    const uint8_t *d = buf + VHDX_LOG_HEADER_SIZE + i * VHDX_LOG_DESC_SIZE;
    uint64_t off = vhdx_le64 (d + 16);

    if (memcmp (d, "zero", 4) == 0) {
      uint64_t len = vhdx_le64 (d + 8);
      if (len % VHDX_LOG_SECTOR != 0)
        return vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                          ": descriptor %" PRIu64 " (zero): ZeroLength %"
                          PRIu64 " not a multiple of 4 KiB", p->path, pos,
                          i, len);
      r = check_target (p, pos, (uint32_t) i, "zero", off, len,
                        e->last_file_offset);
    }
    else
      r = check_target (p, pos, (uint32_t) i, "data", off, VHDX_LOG_SECTOR,
                        e->last_file_offset);
    if (r < 0)
      return r;
  }
  return 1;
}

static int
by_sequence_desc (const void *a, const void *b)
{
  const struct entry_info *x = *(const struct entry_info *const *) a;
  const struct entry_info *y = *(const struct entry_info *const *) b;

  if (x->sequence != y->sequence)
    return x->sequence > y->sequence ? -1 : 1;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The valid entry at log offset pos, or NULL: entries are in offset
 * order (the scan's).
 */
static const struct entry_info *
entry_at (const struct entry_info *v, size_t n, uint32_t pos)
{
  size_t lo = 0, hi = n;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (v[mid].offset == pos)
      return &v[mid];
    if (v[mid].offset < pos)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

/* Does the sequence that head names (from its Tail to it) hold?  1 and
 * *out filled, 0 if not (a missing entry or a gap in the numbers), or
 * -EINVAL when the chain would wrap onto itself.
 */
static int
try_head (const struct vhdx_log_params *p, const struct entry_info *v,
          size_t n, const struct entry_info *head,
          struct vhdx_log_sequence *out)
{
  uint32_t pos = head->tail;
  uint64_t span = 0, prev = 0, descs = 0;
  uint32_t count = 0;

  for (;;) {
    const struct entry_info *e = entry_at (v, n, pos);

    if (e == NULL)
      return 0;
    if (count > 0 && e->sequence != prev + 1)
      return 0;
    if (e->sequence > head->sequence)
      return 0;
    span += e->length;
    if (span > p->log_length)
      return vhd_error (EINVAL, "%s: log sequence ending at log offset %"
                        PRIu32 " (SequenceNumber %" PRIu64 "): the chain "
                        "from Tail %" PRIu32 " wraps onto itself (more "
                        "than LogLength %" PRIu32 " bytes)", p->path,
                        head->offset, head->sequence, head->tail,
                        p->log_length);
    count++;
    descs += e->descriptor_count;
    if (e == head) {
      out->entry_count = count;
      out->tail = head->tail;
      out->head = head->offset;
      out->end = (uint32_t) (((uint64_t) head->offset + head->length)
                             % p->log_length);
      out->first_sequence = head->sequence - (count - 1);
      out->last_sequence = head->sequence;
      out->flushed_file_offset = head->flushed_file_offset;
      out->last_file_offset = head->last_file_offset;
      out->descriptor_count = descs;
      return 1;
    }
    if (e->sequence == head->sequence)
      return 0;                 /* a stale twin, not the head itself */
    prev = e->sequence;
    pos = (uint32_t) (((uint64_t) pos + e->length) % p->log_length);
  }
}

int
vhdx_log_find_active (const struct vhdx_log_params *p,
                      vhdx_log_read_fn read_fn, void *opaque,
                      struct vhdx_log_sequence *out)
{
  struct entry_info *v = NULL, **order = NULL;
  size_t n = 0, cap = 0, bufcap = 0;
  uint8_t *buf = NULL;
  int r;

  memset (out, 0, sizeof *out);
  r = check_params (p);
  if (r < 0)
    return r;

  /* Every 4 KiB position may start an entry (entries of older sequences
   * sit between and inside the active ones' gaps), so try them all.
   */
  for (uint32_t pos = 0; pos < p->log_length; pos += VHDX_LOG_SECTOR) {
    struct entry_info e;

    r = parse_entry (p, read_fn, opaque, pos, &buf, &bufcap, &e);
    if (r < 0)
      goto out;
    if (r == 0)
      continue;
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      struct entry_info *nv = realloc (v, ncap * sizeof *nv);
      if (nv == NULL) {
        r = vhd_error (ENOMEM, "%s: log scan: out of memory", p->path);
        goto out;
      }
      v = nv;
      cap = ncap;
    }
    v[n++] = e;
  }

  r = 0;
  if (n == 0)
    goto out;
  order = malloc (n * sizeof *order);
  if (order == NULL) {
    r = vhd_error (ENOMEM, "%s: log scan: out of memory", p->path);
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    order[i] = &v[i];
  qsort (order, n, sizeof *order, by_sequence_desc);

  /* The valid sequence whose last entry has the highest number wins. */
  for (size_t i = 0; i < n; i++) {
    r = try_head (p, v, n, order[i], out);
    if (r < 0)
      goto out;
    if (r == 1)
      break;
  }
  r = 0;
  if (out->entry_count > 0 && p->file_size < out->flushed_file_offset)
    r = vhd_error (EINVAL, "%s: log entry at log offset %" PRIu32
                   ": FlushedFileOffset %" PRIu64 " beyond the end of the "
                   "file (%" PRIu64 " bytes): the file was truncated",
                   p->path, out->head, out->flushed_file_offset,
                   p->file_size);

 out:
  if (r < 0)
    memset (out, 0, sizeof *out);
  free (order);
  free (v);
  free (buf);
  return r;
}

/* Apply the descriptors of the parsed entry in buf. */
static int
apply_entry (const struct vhdx_log_params *p, const uint8_t *buf,
             const struct entry_info *e, vhdx_log_write_fn write_fn,
             vhdx_log_zero_fn zero_fn, void *wopaque)
{
  uint8_t sector[VHDX_LOG_SECTOR];
  uint64_t dsectors = vhdx_log_descriptor_sectors (e->descriptor_count);
  uint64_t k = 0;
  int r;

  for (uint32_t i = 0; i < e->descriptor_count; i++) {
    const uint8_t *d = buf + VHDX_LOG_HEADER_SIZE + i * VHDX_LOG_DESC_SIZE;
    uint64_t off = vhdx_le64 (d + 16);

    if (memcmp (d, "desc", 4) == 0) {
      const uint8_t *s = buf + (dsectors + k++) * VHDX_LOG_SECTOR;

      /* LeadingBytes are sector bytes 0..7, TrailingBytes 4092..4095,
       * the data sector's payload the rest.
       */
      memcpy (sector, d + 8, 8);
      memcpy (sector + 8, s + 8, VHDX_LOG_DATA_BYTES);
      memcpy (sector + 4092, d + 4, 4);
      r = write_fn (wopaque, sector, VHDX_LOG_SECTOR, off);
    }
    else {
      uint64_t len = vhdx_le64 (d + 8);
      r = len ? zero_fn (wopaque, off, len) : 0;
    }
    if (r < 0)
      return vhd_error (-r, "%s: log replay: entry at log offset %" PRIu32
                        ": descriptor %" PRIu32 ": writing at file offset %"
                        PRIu64 ": %s", p->path, e->offset, i, off,
                        strerror (-r));
  }
  return 0;
}

int
vhdx_log_replay (const struct vhdx_log_params *p,
                 vhdx_log_read_fn read_fn, void *ropaque,
                 const struct vhdx_log_sequence *seq,
                 vhdx_log_write_fn write_fn, vhdx_log_zero_fn zero_fn,
                 void *wopaque)
{
  uint8_t *buf = NULL;
  size_t bufcap = 0;
  uint32_t pos;
  int r;

  r = check_params (p);
  if (r < 0)
    return r;
  if (seq->entry_count == 0)
    return 0;
  if (seq->tail % VHDX_LOG_SECTOR != 0 || seq->tail >= p->log_length)
    return vhd_error (EINVAL, "%s: log replay: tail %" PRIu32
                      " outside the log", p->path, seq->tail);

  pos = seq->tail;
  for (uint32_t i = 0; i < seq->entry_count; i++) {
    struct entry_info e;

    r = parse_entry (p, read_fn, ropaque, pos, &buf, &bufcap, &e);
    if (r < 0)
      goto out;
    if (r == 0 || e.sequence != seq->first_sequence + i
        || (i + 1 == seq->entry_count && pos != seq->head)) {
      r = vhd_error (EIO, "%s: log replay: entry %" PRIu32 " at log "
                     "offset %" PRIu32 " changed since the log was "
                     "scanned", p->path, i, pos);
      goto out;
    }
    r = apply_entry (p, buf, &e, write_fn, zero_fn, wopaque);
    if (r < 0)
      goto out;
    pos = (uint32_t) (((uint64_t) pos + e.length) % p->log_length);
  }
  r = 0;
 out:
  free (buf);
  return r;
}
