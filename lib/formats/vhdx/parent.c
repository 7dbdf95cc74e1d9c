/* vhdkit: a differencing VHDX's parent: the places its locator offers,
 * in the order Windows tries them, and whether an opened image is it.
 *
 * [MS-VHDX] 2.6.2.6.3: relative_path is tried first (relative to the
 * child's folder), then absolute_win32_path and volume_path.  A Windows
 * absolute path ("C:\...", "\\?\Volume{...}\...") means nothing on Linux
 * but its file name, which is looked for in the child's folder and in
 * each allowed parent folder; a path that is absolute on Linux (what
 * vhdkit writes when the parent lives here, README) is tried as it is.
 * The core confines every candidate to the allowed folders and opens it.
 *
 * Identity: the parent's DataWriteGuid must be the child's
 * parent_linkage, or parent_linkage2 when that is there and not nil
 * (Hyper-V writes a nil one, which must never match: every fresh image
 * would).  A chain is one format: a VHD parent is refused here, as the
 * VHD driver refuses a VHDX one.
 */

#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/driver.h"
#include "core/guid.h"
#include "core/winpath.h"
#include "formats/vhdx/vhdx.h"

static void
offer (const struct vhd_parent_sink *sink, const char *value,
       const char *via_path, const char *via_name)
{
  char *p;

  if (value == NULL)
    return;
  p = strdup (value);
  if (p == NULL) {
    sink->unreadable (sink->opaque, via_path, "out of memory");
    return;
  }
  vhd_windows_to_forward_slashes (p);
  if (via_path && !vhd_is_windows_absolute (p))
    sink->path (sink->opaque, p, via_path);
  if (via_name)
    sink->file_name (sink->opaque, p, via_name);
  free (p);
}

void
vhdx_parent_candidates (const struct vhd_disk *child,
                        const struct vhd_parent_sink *sink)
{
  const struct vhdx_parent_link *l = &vhdx_image_of (child)->link;

  offer (sink, l->relative_path, "relative_path", NULL);
  offer (sink, l->absolute_win32_path, "absolute_win32_path",
         "absolute_win32_path, by file name");
  offer (sink, l->volume_path, NULL, "volume_path, by file name");
}

bool
vhdx_is_parent (const struct vhd_disk *child, const struct vhd_disk *parent,
                bool ignore_id, char *why, size_t why_size)
{
  const struct vhdx_image *c = vhdx_image_of (child), *p;
  const struct vhd_guid *got;
  bool match;

  if (parent->ops != child->ops) {
    snprintf (why, why_size, "it is a %s image, and the parent of a"
              " differencing VHDX must be a VHDX image (a chain is one"
              " format)", parent->ops->name);
    return false;
  }
  p = vhdx_image_of (parent);
  got = &p->header.data_write_guid;
  match = memcmp (got, &c->link.parent_linkage, sizeof *got) == 0 ||
          (c->link.has_parent_linkage2 &&
           !vhd_guid_is_zero (&c->link.parent_linkage2) &&
           memcmp (got, &c->link.parent_linkage2, sizeof *got) == 0);
  if (!match && !ignore_id) {
    char g[VHD_BRACED_GUID_SIZE], want[VHD_BRACED_GUID_SIZE];
    char want2[VHD_BRACED_GUID_SIZE];
    /* A nil parent_linkage2 (what Hyper-V writes) was not compared, so
     * quoting it would only send the reader after a GUID that no parent
     * can have.
     */
    bool quote2 = c->link.has_parent_linkage2 &&
                  !vhd_guid_is_zero (&c->link.parent_linkage2);

    vhd_guid_to_braced (got, g);
    vhd_guid_to_braced (&c->link.parent_linkage, want);
    vhd_guid_to_braced (&c->link.parent_linkage2, want2);
    snprintf (why, why_size, "its DataWriteGuid %s is not the"
              " parent_linkage %s that %s records%s%s%s", g, want,
              child->path,
              quote2 ? " (nor its parent_linkage2 " : "",
              quote2 ? want2 : "",
              quote2 ? ")" : "");
    return false;
  }
  if (parent->size != child->size) {
    snprintf (why, why_size, "its virtual size %" PRIu64 " differs from the"
              " child's %" PRIu64, parent->size, child->size);
    return false;
  }
  if (parent->sector_size != child->sector_size) {
    snprintf (why, why_size, "its logical sector size %" PRIu32 " differs"
              " from the child's %" PRIu32, parent->sector_size,
              child->sector_size);
    return false;
  }
  return true;
}

void
vhdx_describe_parent (const struct vhd_disk *child, char *out,
                      size_t out_size)
{
  const struct vhdx_parent_link *l = &vhdx_image_of (child)->link;
  const char *name = l->relative_path ? l->relative_path
                     : l->absolute_win32_path ? l->absolute_win32_path
                     : l->volume_path ? l->volume_path : "(unnamed)";
  char g[VHD_BRACED_GUID_SIZE];

  vhd_guid_to_braced (&l->parent_linkage, g);
  snprintf (out, out_size, "%s (parent_linkage %s)", name, g);
}
