/* vhdkit: the VHDX parent locator metadata item ([MS-VHDX] 2.6.2.6):
 * its key/value pairs, as stored (UTF-16LE on disk, UTF-8 here).  Pure:
 * no I/O.
 *
 * The item: a 20-byte header (LocatorType GUID, 2 reserved bytes,
 * KeyValueCount), then KeyValueCount 12-byte entries (KeyOffset,
 * ValueOffset: from the item's start; KeyLength, ValueLength: bytes),
 * then the strings, anywhere in the item.  Hyper-V writes them right
 * after the entries, each key then its value, without NULs or padding.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "core/utf16.h"

/* Parent locator header and entries ([MS-VHDX] 2.6.2.6.1, 2.6.2.6.2). */
#define PL_TYPE            0
#define PL_COUNT           18
#define PL_ENTRIES         20
#define PL_ENTRY_SIZE      12
#define PLE_KEY_OFFSET     0
#define PLE_VALUE_OFFSET   4
#define PLE_KEY_LENGTH     8
#define PLE_VALUE_LENGTH   10

/* ---- Key/value pairs ---- */

/* One key or value (what: "key", or "value" then the key it belongs to,
 * for messages): inside the item, not empty, whole code units, no NUL (a
 * NUL would end the string early and hide the rest), valid UTF-16.
 * Returns a malloc'd UTF-8 copy in *out.
 */
static int
locator_string (const uint8_t *item, size_t item_len, uint32_t offset,
                uint16_t length, uint16_t i, const char *what,
                const char *file, char **out)
{
  size_t size;
  char *s;
  int r;

  /* [MS-VHDX] 2.6.2.6.2: offsets and lengths MUST be greater than zero
   * (an offset of 0 would be the locator type).
   */
  if (offset == 0)
    return vhd_error (EINVAL, "%s: parent locator: entry %" PRIu16 ": %s"
                      " offset is 0", file, i, what);
  if (length == 0)
    return vhd_error (EINVAL, "%s: parent locator: entry %" PRIu16 ": %s"
                      " length is 0 (an empty string)", file, i, what);
  if (length % 2 != 0)
    return vhd_error (EINVAL, "%s: parent locator: entry %" PRIu16 ": %s"
                      " length %" PRIu16 " is odd (UTF-16 comes in 2-byte"
                      " units)", file, i, what, length);
  if (offset > item_len || length > item_len - offset)
    return vhd_error (EINVAL, "%s: parent locator: entry %" PRIu16 ": %s"
                      " at %" PRIu32 ", %" PRIu16 " bytes, leaves the"
                      " item (%zu bytes)", file, i, what, offset, length,
                      item_len);
  for (size_t u = 0; u < length; u += 2)
    if (vhdx_get_le16 (item + offset + u) == 0)
      return vhd_error (EINVAL, "%s: parent locator: entry %" PRIu16 ":"
                        " %s holds a NUL character at byte %zu", file, i,
                        what, u);
  /* At most 3 UTF-8 bytes per UTF-16 unit (a pair of units: 4). */
  size = (size_t) length / 2 * 3 + 1;
  s = malloc (size);
  if (s == NULL)
    return vhd_error (ENOMEM, "%s: parent locator: malloc: %m", file);
  r = vhd_utf16_to_utf8 (item + offset, length, false, s, size);
  if (r < 0) {
    free (s);
    return vhd_error (EINVAL, "%s: parent locator: entry %" PRIu16 ": %s"
                      " is not valid UTF-16 (an unpaired surrogate)", file,
                      i, what);
  }
  *out = s;
  return 0;
}

void
vhdx_parent_locator_free (struct vhdx_parent_locator *loc)
{
  if (loc->pairs != NULL)
    for (uint16_t i = 0; i < loc->count; i++) {
      free (loc->pairs[i].key);
      free (loc->pairs[i].value);
    }
  free (loc->pairs);
  loc->pairs = NULL;
  loc->count = 0;
}

const char *
vhdx_parent_locator_get (const struct vhdx_parent_locator *loc,
                         const char *key)
{
  for (uint16_t i = 0; i < loc->count; i++)
    if (strcmp (loc->pairs[i].key, key) == 0)
      return loc->pairs[i].value;
  return NULL;
}

static int
decode_locator_pair (const uint8_t *item, size_t item_len, uint16_t i,
                     const char *file, struct vhdx_locator_pair *pair)
{
  const uint8_t *e = item + PL_ENTRIES + (size_t) i * PL_ENTRY_SIZE;
  /* "value of key \"...\"": the key, cut short for the message. */
  char what[96];
  int r;

  r = locator_string (item, item_len, vhdx_get_le32 (e + PLE_KEY_OFFSET),
                      vhdx_get_le16 (e + PLE_KEY_LENGTH), i, "key", file,
                      &pair->key);
  if (r < 0)
    return r;
  snprintf (what, sizeof what, "value of key \"%.64s\"", pair->key);
  r = locator_string (item, item_len, vhdx_get_le32 (e + PLE_VALUE_OFFSET),
                      vhdx_get_le16 (e + PLE_VALUE_LENGTH), i, what,
                      file, &pair->value);
  if (r < 0) {
    free (pair->key);
    pair->key = NULL;
  }
  return r;
}

int
vhdx_parent_locator_decode (const uint8_t *item, size_t item_len,
                            const char *file,
                            struct vhdx_parent_locator *loc)
{
  struct vhdx_parent_locator out = { 0 };
  int r;

  if (item_len < PL_ENTRIES)
    return vhd_error (EINVAL, "%s: parent locator: %zu bytes, less than"
                      " its 20-byte header", file, item_len);
  /* The metadata table allows no bigger item; here it also keeps every
   * offset that fits in the item inside 32 bits.
   */
  if (item_len > VHDX_METADATA_ITEM_MAX)
    return vhd_error (EINVAL, "%s: parent locator: %zu bytes, more than"
                      " a metadata item's 1 MiB", file, item_len);
  vhdx_guid_decode (item + PL_TYPE, &out.type);
  out.count = vhdx_get_le16 (item + PL_COUNT);
  /* At most 65535 entries of 12 bytes: no overflow in size_t. */
  if ((size_t) out.count * PL_ENTRY_SIZE > item_len - PL_ENTRIES)
    return vhd_error (EINVAL, "%s: parent locator: key/value count %"
                      PRIu16 ": %" PRIu16 " entries do not fit in the"
                      " item (%zu bytes)", file, out.count, out.count,
                      item_len);
  if (out.count == 0)
    return vhd_error (EINVAL, "%s: parent locator: key/value count is 0",
                      file);

  out.pairs = calloc (out.count, sizeof *out.pairs);
  if (out.pairs == NULL)
    return vhd_error (ENOMEM, "%s: parent locator: calloc: %m", file);
  for (uint16_t i = 0; i < out.count; i++) {
    r = decode_locator_pair (item, item_len, i, file, &out.pairs[i]);
    /* Keys are case-sensitive and MUST be unique ([MS-VHDX] 2.6.2.6.2).
     * Quadratic, in at most a few thousand entries of a 1 MiB item.
     */
    if (r == 0) {
      for (uint16_t j = 0; j < i; j++)
        if (strcmp (out.pairs[j].key, out.pairs[i].key) == 0) {
          r = vhd_error (EINVAL, "%s: parent locator: entries %" PRIu16
                         " and %" PRIu16 " have the same key \"%.64s\"",
                         file, j, i, out.pairs[i].key);
          break;
        }
    }
    if (r < 0) {
      vhdx_parent_locator_free (&out);
      return r;
    }
  }
  *loc = out;
  return 0;
}

/* Append s (entry i's key or value, named by what for messages) as
 * UTF-16LE at *at, checking room, and return its length in bytes
 * through *len.
 */
static int
put_locator_string (const char *s, uint16_t i, const char *what,
                    uint8_t *buf, size_t buf_size, size_t *at,
                    uint16_t *len)
{
  int n;

  if (*at > buf_size)
    return vhd_error (ENOSPC, "parent locator: %zu bytes are not enough",
                      buf_size);
  /* This needs room for a NUL after the string, which the next string
   * (or nothing) overwrites: at most 2 bytes more than the item needs.
   */
  n = vhd_utf8_to_utf16 (s, false, buf + *at, buf_size - *at);
  if (n == -ENAMETOOLONG)
    return vhd_error (ENOSPC, "parent locator: %zu bytes are not enough"
                      " for entry %" PRIu16 "'s %s", buf_size, i, what);
  if (n < 0)
    return vhd_error (EINVAL, "parent locator: entry %" PRIu16 ": %s is"
                      " not valid UTF-8", i, what);
  if (n == 0 || n > UINT16_MAX)
    return vhd_error (EINVAL, "parent locator: entry %" PRIu16 ": %s is"
                      " %s", i, what, n == 0 ? "empty"
                      : "longer than 65535 bytes of UTF-16");
  *len = (uint16_t) n;
  *at += (size_t) n;
  return 0;
}

int
vhdx_parent_locator_encode (const struct vhdx_parent_locator *loc,
                            uint8_t *buf, size_t buf_size, size_t *len)
{
  size_t at = PL_ENTRIES + (size_t) loc->count * PL_ENTRY_SIZE;
  int r;

  if (at > buf_size)
    return vhd_error (ENOSPC, "parent locator: %zu bytes are not enough"
                      " for %" PRIu16 " entries", buf_size, loc->count);
  memset (buf, 0, at);
  vhdx_guid_encode (&loc->type, buf + PL_TYPE);
  vhdx_put_le16 (buf + PL_COUNT, loc->count);
  for (uint16_t i = 0; i < loc->count; i++) {
    uint8_t *e = buf + PL_ENTRIES + (size_t) i * PL_ENTRY_SIZE;
    char what[96];
    uint16_t klen, vlen;

    if (at > UINT32_MAX)
      return vhd_error (ENOSPC, "parent locator: entry %" PRIu16 " would"
                        " start past 4 GiB", i);
    vhdx_put_le32 (e + PLE_KEY_OFFSET, (uint32_t) at);
    r = put_locator_string (loc->pairs[i].key, i, "key", buf, buf_size,
                            &at, &klen);
    if (r < 0)
      return r;
    if (at > UINT32_MAX)
      return vhd_error (ENOSPC, "parent locator: entry %" PRIu16 " would"
                        " start past 4 GiB", i);
    vhdx_put_le32 (e + PLE_VALUE_OFFSET, (uint32_t) at);
    snprintf (what, sizeof what, "value of key \"%.64s\"",
              loc->pairs[i].key);
    r = put_locator_string (loc->pairs[i].value, i, what, buf, buf_size,
                            &at, &vlen);
    if (r < 0)
      return r;
    vhdx_put_le16 (e + PLE_KEY_LENGTH, klen);
    vhdx_put_le16 (e + PLE_VALUE_LENGTH, vlen);
  }
  *len = at;
  return 0;
}
