/* vhdkit: the VHDX parent locator metadata item ([MS-VHDX] 2.6.2.6), in
 * two layers: the key/value pairs as stored (any locator type; UTF-16LE
 * on disk, UTF-8 here), and what the pairs of the VHDX locator type say
 * (the parent's identity and its paths).  Pure: no I/O.
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
#include "core/guid.h"
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

/* The keys of the VHDX locator type ([MS-VHDX] 2.6.2.6.3), in the order
 * in which Hyper-V writes them (dissect-differencing.avhdx, Windows 10
 * 1809): the spec gives the entries no order, vhdx_parent_link_encode
 * follows this one.
 */
#define KEY_LINKAGE        "parent_linkage"
#define KEY_ABSOLUTE       "absolute_win32_path"
#define KEY_RELATIVE       "relative_path"
#define KEY_VOLUME         "volume_path"
#define KEY_LINKAGE2       "parent_linkage2"

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

/* ---- The VHDX locator type: the parent's identity and paths ---- */

static int
hex_digit (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Parse "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}", the registry form that
 * the linkage keys hold ([MS-VHDX] 2.6.2.6.3 asks for lower case but
 * shows upper case: either is taken), into printed (RFC 4122) order,
 * which is struct vhd_guid's.  Exactly that: no spaces, nothing after.
 */
static bool
parse_braced_guid (const char *s, struct vhd_guid *guid)
{
  size_t n = 0;

  if (strlen (s) != VHD_BRACED_GUID_SIZE - 1 || s[0] != '{' ||
      s[VHD_BRACED_GUID_SIZE - 2] != '}')
    return false;
  for (size_t i = 1; i < VHD_BRACED_GUID_SIZE - 2; ) {
    int hi, lo;

    /* Dashes after 8, 12, 16 and 20 hex digits. */
    if (i == 9 || i == 14 || i == 19 || i == 24) {
      if (s[i] != '-')
        return false;
      i++;
      continue;
    }
    hi = hex_digit (s[i]);
    lo = hex_digit (s[i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    guid->bytes[n++] = (uint8_t) (hi << 4 | lo);
    i += 2;
  }
  return n == 16;
}

void
vhdx_parent_link_free (struct vhdx_parent_link *link)
{
  free (link->relative_path);
  free (link->volume_path);
  free (link->absolute_win32_path);
  link->relative_path = NULL;
  link->volume_path = NULL;
  link->absolute_win32_path = NULL;
}

/* Where a path key's value goes, or NULL when key names no path. */
static char **
path_slot (struct vhdx_parent_link *link, const char *key)
{
  if (strcmp (key, KEY_RELATIVE) == 0)
    return &link->relative_path;
  if (strcmp (key, KEY_VOLUME) == 0)
    return &link->volume_path;
  if (strcmp (key, KEY_ABSOLUTE) == 0)
    return &link->absolute_win32_path;
  return NULL;
}

static int
linkage_value (const struct vhdx_locator_pair *pair, const char *file,
               struct vhd_guid *guid)
{
  if (!parse_braced_guid (pair->value, guid))
    return vhd_error (EINVAL, "%s: parent locator: %s: \"%.64s\" is not a"
                      " GUID in braces ({xxxxxxxx-xxxx-xxxx-xxxx-"
                      "xxxxxxxxxxxx})", file, pair->key, pair->value);
  return 0;
}

/* The pairs' meaning, taking the path values out of loc into *link.
 * Keys stay unique (the pair layer checked), so that nothing is set
 * twice.
 */
static int
interpret_pairs (struct vhdx_parent_locator *loc, const char *file,
                 struct vhdx_parent_link *link)
{
  bool have_linkage = false;
  int r;

  for (uint16_t i = 0; i < loc->count; i++) {
    struct vhdx_locator_pair *pair = &loc->pairs[i];
    char **slot;

    if (strcmp (pair->key, KEY_LINKAGE) == 0) {
      r = linkage_value (pair, file, &link->parent_linkage);
      if (r < 0)
        return r;
      have_linkage = true;
    }
    else if (strcmp (pair->key, KEY_LINKAGE2) == 0) {
      r = linkage_value (pair, file, &link->parent_linkage2);
      if (r < 0)
        return r;
      link->has_parent_linkage2 = true;
    }
    else if ((slot = path_slot (link, pair->key)) != NULL) {
      *slot = pair->value;
      pair->value = NULL;
    }
    /* Any other key is ignored: [MS-VHDX] 2.6.2.6 lets implementations
     * extend the locator, and a reader needs only the keys above.
     */
  }
  if (!have_linkage)
    return vhd_error (EINVAL, "%s: parent locator: no " KEY_LINKAGE " key"
                      " (the parent's identity, which MUST be there)",
                      file);
  if (link->relative_path == NULL && link->volume_path == NULL &&
      link->absolute_win32_path == NULL)
    return vhd_error (EINVAL, "%s: parent locator: no path to the parent"
                      " (none of the keys " KEY_RELATIVE ", " KEY_VOLUME
                      ", " KEY_ABSOLUTE ")", file);
  return 0;
}

int
vhdx_parent_link_decode (const uint8_t *item, size_t item_len,
                         const char *file, struct vhdx_parent_link *link)
{
  struct vhdx_parent_locator loc;
  struct vhdx_parent_link out = { 0 };
  int r;

  /* The type first (the pair layer refuses an item too short for it):
   * what this code cannot read at all is the news, before any flaw in
   * its pairs.
   */
  if (item_len >= PL_ENTRIES) {
    struct vhd_guid type;

    vhdx_guid_decode (item + PL_TYPE, &type);
    if (!vhdx_guid_equal (&type, &vhdx_locator_type_vhdx)) {
      char g[37];

      /* Another kind of parent (a SAN LUN, another format...) that a
       * valid file may name: not understood here, rather than corrupt.
       */
      vhd_guid_to_string (&type, g);
      return vhd_error (ENOTSUP, "%s: parent locator: locator type %s is"
                        " not the VHDX locator type"
                        " (b04aefb7-d19e-4a81-b789-25b8e9445913)", file, g);
    }
  }
  r = vhdx_parent_locator_decode (item, item_len, file, &loc);
  if (r < 0)
    return r;
  r = interpret_pairs (&loc, file, &out);
  vhdx_parent_locator_free (&loc);
  if (r < 0) {
    vhdx_parent_link_free (&out);
    return r;
  }
  *link = out;
  return 0;
}

int
vhdx_parent_link_encode (const struct vhdx_parent_link *link,
                         uint8_t *buf, size_t buf_size, size_t *len)
{
  char linkage[VHD_BRACED_GUID_SIZE], linkage2[VHD_BRACED_GUID_SIZE];
  struct vhdx_locator_pair pairs[5];
  struct vhdx_parent_locator loc = {
    .type = vhdx_locator_type_vhdx,
    .pairs = pairs,
  };
  const struct {
    const char *key;
    const char *value;
  } paths[] = {
    { KEY_ABSOLUTE, link->absolute_win32_path },
    { KEY_RELATIVE, link->relative_path },
    { KEY_VOLUME, link->volume_path },
  };
  uint16_t n = 0;
  size_t n_paths = 0;

  /* The pair layer only reads through these: the casts drop a const that
   * struct vhdx_locator_pair (which decode fills) cannot carry.
   */
  vhd_guid_to_braced (&link->parent_linkage, linkage);
  pairs[n++] = (struct vhdx_locator_pair) { (char *) KEY_LINKAGE, linkage };
  for (size_t k = 0; k < sizeof paths / sizeof paths[0]; k++) {
    if (paths[k].value == NULL)
      continue;
    if (paths[k].value[0] == '\0')
      return vhd_error (EINVAL, "parent locator: %s is empty (leave it out"
                        " instead)", paths[k].key);
    pairs[n++] = (struct vhdx_locator_pair) { (char *) paths[k].key,
                                              (char *) paths[k].value };
    n_paths++;
  }
  if (link->has_parent_linkage2) {
    vhd_guid_to_braced (&link->parent_linkage2, linkage2);
    pairs[n++] = (struct vhdx_locator_pair) { (char *) KEY_LINKAGE2,
                                              linkage2 };
  }
  if (n_paths == 0)
    return vhd_error (EINVAL, "parent locator: no path to the parent (one"
                      " of " KEY_RELATIVE ", " KEY_VOLUME ", " KEY_ABSOLUTE
                      " is needed)");
  loc.count = n;
  /* No metadata item may be larger. */
  if (buf_size > VHDX_METADATA_ITEM_MAX)
    buf_size = VHDX_METADATA_ITEM_MAX;
  return vhdx_parent_locator_encode (&loc, buf, buf_size, len);
}
