/* vhdkit: the exports of `nbdkit vhd dir=DIR` (every VHD in a folder,
 * named by its file name).
 *
 * Bookkeeping only: which images are open, for how many connections.  An
 * image is opened when its first connection arrives, shared by every
 * later one, and closed when its last one closes, so that an image nobody
 * uses holds no lock (and can be opened for writing elsewhere, or as
 * another export's parent).
 */

#ifndef VHDKIT_PLUGIN_EXPORTS_H
#define VHDKIT_PLUGIN_EXPORTS_H

#include <stdbool.h>

#include "vhdkit.h"

struct nbdkit_exports;
struct export;

/* Serve the images in dir (already a real path) with these options (the
 * pointers in them must stay valid until exports_unload).  Opens the
 * folder.  Returns 0, or -1 after nbdkit_error.
 */
int exports_init (const char *dir, const struct vhd_open_options *options);

/* Add every VHD directly in the folder to list, with a description. */
int exports_list (struct nbdkit_exports *list);

/* The image named name, opened (or shared) for one more connection:
 * read-only when the server is, or when readonly says this connection
 * is.  NULL after nbdkit_error when the name is refused or the image does
 * not open.
 */
struct export *export_acquire (const char *name, bool readonly);

/* One connection fewer; the last one closes the image. */
void export_release (struct export *export);

vhd_disk *export_disk (const struct export *export);
bool export_readonly (const struct export *export);

/* Close the folder (every export has been released by now). */
void exports_unload (void);

#endif /* VHDKIT_PLUGIN_EXPORTS_H */
