/* vhdkit: the VHD driver's parent locators: reading them, and the
 * places they offer for the parent, in the order the core tries them
 * (W2ru relative to the child's folder, W2ku absolute, by its file name
 * when it is a Windows drive path, MacX file URLs, then the header's
 * parent name in the child's folder).  The core confines and opens.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/driver.h"
#include "core/winpath.h"
#include "formats/vhd/format.h"
#include "formats/vhd/vhd.h"

#define MAX_LOCATOR_BYTES 65536

static const char *
base_name (const char *p)
{
  const char *slash = strrchr (p, '/');
  return slash ? slash + 1 : p;
}

static int
percent_decode (char *p)
{
  char *out = p;

  for (; *p; p++) {
    if (*p == '%') {
      unsigned v;
      if (sscanf (p + 1, "%2x", &v) != 1 || v == 0)
        return -EINVAL;
      *out++ = (char) v;
      p += 2;
    }
    else
      *out++ = *p;
  }
  *out = '\0';
  return 0;
}

/* Copy a UTF-8 payload (it ends at len or a NUL), checking that it is
 * well-formed UTF-8 and fits.  Returns the length, or -EINVAL.
 */
static int
copy_utf8 (const uint8_t *in, size_t len, char *out, size_t out_size)
{
  size_t n = 0, i = 0;

  while (i < len && in[i] != 0) {
    unsigned follow = in[i] < 0x80 ? 0 : (in[i] & 0xe0) == 0xc0 ? 1
                      : (in[i] & 0xf0) == 0xe0 ? 2
                      : (in[i] & 0xf8) == 0xf0 ? 3 : 4;
    if (follow == 4 || follow >= len - i)
      return -EINVAL;
    for (unsigned k = 1; k <= follow; k++)
      if ((in[i + k] & 0xc0) != 0x80)
        return -EINVAL;
    if (n + follow + 1 >= out_size)
      return -ENAMETOOLONG;
    memcpy (out + n, in + i, follow + 1);
    n += follow + 1;
    i += follow + 1;
  }
  if (out_size == 0)
    return -EINVAL;
  out[n] = '\0';
  return (int) n;
}

int
vhd_locator_read_path (const struct vhd_disk *disk, unsigned i,
                       char *out, size_t out_size)
{
  const struct vhd_parent_locator *loc = &vhd_image_of (disk)->header.locators[i];
  uint8_t *buf;
  int r;

  if (loc->platform_data_length == 0 ||
      loc->platform_data_length > MAX_LOCATOR_BYTES)
    return vhd_error (EINVAL, "%s: parent locator %u: platform_data_length %"
                      PRIu32 " is not in 1..%d", disk->path, i,
                      loc->platform_data_length, MAX_LOCATOR_BYTES);
  if (loc->platform_data_offset > disk->file_size ||
      disk->file_size - loc->platform_data_offset < loc->platform_data_length)
    return vhd_error (EINVAL, "%s: parent locator %u: platform_data_offset %"
                      PRIu64 " + platform_data_length %" PRIu32
                      " is past the end of the file", disk->path, i,
                      loc->platform_data_offset, loc->platform_data_length);
  buf = malloc (loc->platform_data_length);
  if (buf == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  r = vhd_backend_pread_exact (disk->be, buf, loc->platform_data_length,
                               loc->platform_data_offset,
                               "parent locator data");
  if (r == 0) {
    if (loc->platform_code == VHD_PLATFORM_MACX)
      r = copy_utf8 (buf, loc->platform_data_length,
                                    out, out_size);
    else
      r = vhd_utf16_to_utf8 (buf, loc->platform_data_length & ~1u, false,
                             out, out_size);
    if (r == -ENAMETOOLONG)
      r = vhd_error (ENAMETOOLONG, "%s: parent locator %u: the path in its"
                     " platform data is longer than %zu bytes", disk->path,
                     i, out_size - 1);
    else if (r < 0)
      r = vhd_error (EINVAL, "%s: parent locator %u: platform data is not"
                     " valid %s", disk->path, i,
                     loc->platform_code == VHD_PLATFORM_MACX
                     ? "UTF-8" : "UTF-16LE");
    else
      r = 0;
  }
  free (buf);
  return r;
}

/* Turn a MacX payload (a file URL) into a path; false if it is not one. */
static bool
mac_url_to_path (char *url)
{
  const char *prefixes[] = { "file://localhost/", "file:///", "file://" };

  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    size_t n = strlen (prefixes[i]);
    if (strncmp (url, prefixes[i], n) == 0) {
      /* Keep the leading slash of the path. */
      size_t keep = prefixes[i][n - 1] == '/' ? n - 1 : n;
      memmove (url, url + keep, strlen (url + keep) + 1);
      return percent_decode (url) == 0;
    }
  }
  return false;
}

/* Offer the places that one kind of locator names, in header order. */
static void
offer_locators (const struct vhd_disk *child, uint32_t code,
                const struct vhd_parent_sink *sink)
{
  const struct vhd_image *img = vhd_image_of (child);
  char p[PATH_MAX * 2];

  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++) {
    if (img->header.locators[i].platform_code != code)
      continue;
    if (vhd_locator_read_path (child, i, p, sizeof p) < 0) {
      sink->unreadable (sink->opaque, code == VHD_PLATFORM_W2RU ? "W2ru"
                        : code == VHD_PLATFORM_W2KU ? "W2ku" : "MacX",
                        vhd_last_error ());
      continue;
    }
    switch (code) {
    case VHD_PLATFORM_W2RU:
      vhd_windows_to_forward_slashes (p);
      sink->path (sink->opaque, p, "W2ru locator");
      break;
    case VHD_PLATFORM_W2KU:
      vhd_windows_to_forward_slashes (p);
      if (!vhd_is_windows_absolute (p))
        sink->path (sink->opaque, p, "W2ku locator");
      sink->file_name (sink->opaque, p, "W2ku locator, by file name");
      break;
    case VHD_PLATFORM_MACX:
      if (!mac_url_to_path (p))
        break;
      sink->path (sink->opaque, p, "MacX locator");
      sink->file_name (sink->opaque, p, "MacX locator, by file name");
      break;
    }
  }
}

/* The parent name of the dynamic header, or "" when it does not decode. */
static void
parent_name (const struct vhd_disk *child, char *out, size_t out_size)
{
  const struct vhd_dyn_header *h = &vhd_image_of (child)->header;

  if (vhd_utf16_to_utf8 (h->parent_unicode_name,
                         sizeof h->parent_unicode_name, true,
                         out, out_size) <= 0)
    out[0] = '\0';
}

void
vhd_vhd_parent_candidates (const struct vhd_disk *child,
                           const struct vhd_parent_sink *sink)
{
  char name[1024];

  offer_locators (child, VHD_PLATFORM_W2RU, sink);
  offer_locators (child, VHD_PLATFORM_W2KU, sink);
  offer_locators (child, VHD_PLATFORM_MACX, sink);
  parent_name (child, name, sizeof name);
  if (name[0]) {
    vhd_windows_to_forward_slashes (name);
    sink->path (sink->opaque, base_name (name), "parent name");
  }
}

bool
vhd_vhd_is_parent (const struct vhd_disk *child,
                   const struct vhd_disk *parent, bool ignore_id,
                   char *why, size_t why_size)
{
  const struct vhd_image *c = vhd_image_of (child);
  const struct vhd_guid *id;

  /* A parent of another format would have its own identity: none is
   * known to VHD yet.
   */
  if (parent->ops != child->ops) {
    snprintf (why, why_size, "it is a %s image, not a VHD one",
              parent->ops->name);
    return false;
  }
  id = &vhd_image_of (parent)->footer.unique_id;
  if (memcmp (id, &c->header.parent_unique_id,
              sizeof (struct vhd_guid)) != 0 && !ignore_id) {
    char want[37], got[37];
    vhd_guid_to_string (&c->header.parent_unique_id, want);
    vhd_guid_to_string (id, got);
    snprintf (why, why_size, "its unique id %s is not the parent id %s"
              " that %s records", got, want, child->path);
    return false;
  }
  if (parent->size != child->size) {
    snprintf (why, why_size, "its size %" PRIu64 " differs from the"
              " child's %" PRIu64, parent->size, child->size);
    return false;
  }
  return true;
}

void
vhd_vhd_describe_parent (const struct vhd_disk *child, char *out,
                         size_t out_size)
{
  char name[1024], uuid[37];

  parent_name (child, name, sizeof name);
  vhd_guid_to_string (&vhd_image_of (child)->header.parent_unique_id, uuid);
  snprintf (out, out_size, "%s (unique id %s)",
            name[0] ? name : "(unnamed)", uuid);
}
