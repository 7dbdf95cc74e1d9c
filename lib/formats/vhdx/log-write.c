/* vhdkit: the VHDX log, writing side: encode entries for the driver to
 * write, flush and then apply in place ([MS-VHDX] 2.3).  Entries never
 * straddle the end of the log; a filler entry keeps a sequence
 * consecutive when the next entry has to start again at log offset 0.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "formats/vhdx/log.h"
#include "formats/vhdx/log-codec.h"

int
vhdx_log_writer_init (struct vhdx_log_writer *w, uint64_t log_offset,
                      uint32_t log_length, const uint8_t log_guid[16],
                      uint32_t start, uint64_t first_sequence)
{
  static const uint8_t zero[16];

  if (log_length == 0 || log_length % VHDX_LOG_MiB != 0
      || log_offset < VHDX_LOG_MiB || log_offset % VHDX_LOG_MiB != 0
      || log_offset > UINT64_MAX - log_length)
    return vhd_error (EINVAL, "log writer: log at %" PRIu64 " length %"
                      PRIu32 ": not 1 MiB multiples", log_offset,
                      log_length);
  if (start % VHDX_LOG_SECTOR != 0 || start >= log_length)
    return vhd_error (EINVAL, "log writer: start %" PRIu32 " not a 4 KiB "
                      "offset inside the log", start);
  if (first_sequence == 0)
    return vhd_error (EINVAL, "log writer: sequence numbers start at 1");
  if (memcmp (log_guid, zero, 16) == 0)
    return vhd_error (EINVAL, "log writer: LogGuid is zero (no log)");
  memset (w, 0, sizeof *w);
  w->log_offset = log_offset;
  w->log_length = log_length;
  memcpy (w->log_guid, log_guid, 16);
  w->head = w->tail = start;
  w->used = 0;
  w->sequence = first_sequence;
  return 0;
}

void
vhdx_log_writer_applied (struct vhdx_log_writer *w)
{
  w->tail = w->head;
  w->used = 0;
}

static bool
all_zero (const uint8_t *p, size_t n)
{
  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

/* Descriptors and data sectors that updates[0..n) need. */
static int
count_updates (const struct vhdx_log_writer *w,
               const struct vhdx_log_update *updates, size_t n,
               uint64_t last_file_offset, uint64_t *ndesc, uint64_t *ndata)
{
  *ndesc = *ndata = 0;
  for (size_t i = 0; i < n; i++) {
    const struct vhdx_log_update *u = &updates[i];
    const uint8_t *d = u->data;
    bool in_zero = false;

    if (u->file_offset % VHDX_LOG_SECTOR != 0 || u->length == 0
        || u->length % VHDX_LOG_SECTOR != 0)
      return vhd_error (EINVAL, "log writer: update %zu: offset %" PRIu64
                        " length %" PRIu64 " not 4 KiB-aligned", i,
                        u->file_offset, u->length);
    if (u->length > last_file_offset
        || u->file_offset > last_file_offset - u->length)
      return vhd_error (EINVAL, "log writer: update %zu: offset %" PRIu64
                        " length %" PRIu64 " beyond LastFileOffset %"
                        PRIu64, i, u->file_offset, u->length,
                        last_file_offset);
    if (u->file_offset < VHDX_LOG_PROTECTED_END
        || (u->file_offset < w->log_offset + w->log_length
            && w->log_offset < u->file_offset + u->length))
      return vhd_error (EINVAL, "log writer: update %zu: offset %" PRIu64
                        " length %" PRIu64 " in the headers or the log",
                        i, u->file_offset, u->length);
    if (d == NULL) {
      (*ndesc)++;
      continue;
    }
    for (uint64_t o = 0; o < u->length; o += VHDX_LOG_SECTOR) {
      if (all_zero (d + o, VHDX_LOG_SECTOR)) {
        if (!in_zero)
          (*ndesc)++;
        in_zero = true;
      }
      else {
        (*ndesc)++;
        (*ndata)++;
        in_zero = false;
      }
    }
  }
  return 0;
}

/* Header fields and checksum of the entry of length bytes at e. */
static void
finish_entry (const struct vhdx_log_writer *w, uint8_t *e, uint32_t length,
              uint32_t tail, uint64_t seq, uint32_t ndesc,
              uint64_t flushed_file_offset, uint64_t last_file_offset)
{
  memcpy (e, "loge", 4);
  vhdx_put_le32 (e + 4, 0);
  vhdx_put_le32 (e + 8, length);
  vhdx_put_le32 (e + 12, tail);
  vhdx_put_le64 (e + 16, seq);
  vhdx_put_le32 (e + 24, ndesc);
  vhdx_put_le32 (e + 28, 0);
  memcpy (e + 32, w->log_guid, 16);
  vhdx_put_le64 (e + 48, flushed_file_offset);
  vhdx_put_le64 (e + 56, last_file_offset);
  vhdx_put_le32 (e + 4, vhdx_log_entry_crc (e, length));
}

/* Descriptors and data sectors of updates into the entry at e. */
static void
fill_entry (uint8_t *e, const struct vhdx_log_update *updates, size_t n,
            uint64_t seq, uint64_t dsectors)
{
  uint8_t *desc = e + VHDX_LOG_HEADER_SIZE;
  uint8_t *data = e + dsectors * VHDX_LOG_SECTOR;
  uint8_t *zero = NULL;         /* the open zero descriptor */

  for (size_t i = 0; i < n; i++) {
    const struct vhdx_log_update *u = &updates[i];
    const uint8_t *d = u->data;

    zero = NULL;
    for (uint64_t o = 0; o < u->length; o += VHDX_LOG_SECTOR) {
      if (d == NULL || all_zero (d + o, VHDX_LOG_SECTOR)) {
        if (zero != NULL) {
          vhdx_put_le64 (zero + 8, vhdx_le64 (zero + 8) + VHDX_LOG_SECTOR);
          continue;
        }
        zero = desc;
        desc += VHDX_LOG_DESC_SIZE;
        memcpy (zero, "zero", 4);
        vhdx_put_le32 (zero + 4, 0);
        vhdx_put_le64 (zero + 8, VHDX_LOG_SECTOR);
        vhdx_put_le64 (zero + 16, u->file_offset + o);
        vhdx_put_le64 (zero + 24, seq);
        continue;
      }
      zero = NULL;
      /* Sector bytes 0..7 and 4092..4095 go in the descriptor, the rest
       * in the data sector between the sequence number halves.
       */
      memcpy (desc, "desc", 4);
      memcpy (desc + 4, d + o + 4092, 4);
      memcpy (desc + 8, d + o, 8);
      vhdx_put_le64 (desc + 16, u->file_offset + o);
      vhdx_put_le64 (desc + 24, seq);
      desc += VHDX_LOG_DESC_SIZE;
      memcpy (data, "data", 4);
      vhdx_put_le32 (data + 4, (uint32_t) (seq >> 32));
      memcpy (data + 8, d + o + 8, VHDX_LOG_DATA_BYTES);
      vhdx_put_le32 (data + 4092, (uint32_t) seq);
      data += VHDX_LOG_SECTOR;
    }
  }
}

int
vhdx_log_encode_entry (struct vhdx_log_writer *w,
                       const struct vhdx_log_update *updates, size_t n,
                       uint64_t flushed_file_offset,
                       uint64_t last_file_offset,
                       struct vhdx_log_encoded *out)
{
  uint64_t ndesc, ndata, dsectors, size, filler = 0, need;
  uint32_t pos, tail;
  uint64_t seq = w->sequence;
  int r;

  memset (out, 0, sizeof *out);
  if (flushed_file_offset % VHDX_LOG_MiB != 0
      || last_file_offset % VHDX_LOG_MiB != 0
      || flushed_file_offset > VHDX_LOG_MAX_FILE_OFFSET
      || last_file_offset > VHDX_LOG_MAX_FILE_OFFSET)
    return vhd_error (EINVAL, "log writer: FlushedFileOffset %" PRIu64
                      " or LastFileOffset %" PRIu64 " not a 1 MiB multiple "
                      "up to the cap", flushed_file_offset,
                      last_file_offset);
  r = count_updates (w, updates, n, last_file_offset, &ndesc, &ndata);
  if (r < 0)
    return r;
  if (ndesc > UINT32_MAX)
    return vhd_error (EFBIG, "log writer: %" PRIu64 " descriptors", ndesc);
  dsectors = vhdx_log_descriptor_sectors (ndesc);
  size = (dsectors + ndata) * VHDX_LOG_SECTOR;
  if (size > w->log_length)
    return vhd_error (EFBIG, "log writer: an entry of %" PRIu64 " bytes "
                      "does not fit a log of %" PRIu32, size,
                      w->log_length);
  if (seq > UINT64_MAX - 2)
    return vhd_error (EOVERFLOW, "log writer: sequence numbers exhausted");

  /* Where it goes: at the head if it fits before the end of the log;
   * else at 0, after a filler entry up to the end when earlier entries
   * are still needed (so that the sequence stays consecutive), or
   * alone, as a new sequence, when none is.
   */
  pos = w->head;
  tail = w->used == 0 ? w->head : w->tail;
  if ((uint64_t) w->head + size > w->log_length) {
    pos = 0;
    if (w->used == 0)
      tail = 0;
    else
      filler = w->log_length - w->head;
  }
  need = filler + size;
  if (need > (uint64_t) w->log_length - w->used)
    return vhd_error (ENOSPC, "log writer: %" PRIu64 " bytes needed, %"
                      PRIu64 " free until the earlier entries are applied",
                      need, (uint64_t) w->log_length - w->used);

  out->len = need;
  out->buf = calloc (1, need);
  if (out->buf == NULL)
    return vhd_error (ENOMEM, "log writer: out of memory");
  if (filler) {
    finish_entry (w, out->buf, (uint32_t) filler, tail, seq, 0,
                  flushed_file_offset, last_file_offset);
    out->pieces[0].file_offset = w->log_offset + w->head;
    out->pieces[0].buf_offset = 0;
    out->pieces[0].len = filler;
    out->npieces = 1;
    seq++;
  }
  fill_entry (out->buf + filler, updates, n, seq, dsectors);
  finish_entry (w, out->buf + filler, (uint32_t) size, tail, seq,
                (uint32_t) ndesc, flushed_file_offset, last_file_offset);
  out->pieces[out->npieces].file_offset = w->log_offset + pos;
  out->pieces[out->npieces].buf_offset = filler;
  out->pieces[out->npieces].len = size;
  out->npieces++;
  out->sequence = seq;

  w->tail = tail;
  w->used = w->used == 0 ? (uint32_t) size : (uint32_t) (w->used + need);
  w->head = (uint32_t) (((uint64_t) pos + size) % w->log_length);
  w->sequence = seq + 1;
  return 0;
}
