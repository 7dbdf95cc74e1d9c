/* vhdkit: Windows-style paths that parent locators record (internal). */

#ifndef VHDKIT_WINPATH_H
#define VHDKIT_WINPATH_H

#include <stdbool.h>
#include <stddef.h>

/* The relative path from folder from_dir to file to (both resolved,
 * absolute), Windows style, as VHD's W2ru locator and VHDX's
 * relative_path hold it: ".\base.vhd", "..\dir\base.vhd".  Returns 0
 * or -ENAMETOOLONG.
 */
int vhd_relative_windows_path (const char *from_dir, const char *to,
                               char *out, size_t out_size);

/* Windows separators to ours, in place: both formats' locators record
 * "..\dir\base.vhd", which the core resolves as a Linux path.
 */
void vhd_windows_to_forward_slashes (char *path);

/* Whether path (after vhd_windows_to_forward_slashes) is a Windows
 * absolute path, "C:/x", a UNC "//host/x" or "//?/Volume{...}/x": such a
 * path means nothing on Linux but its file name.
 */
bool vhd_is_windows_absolute (const char *path);

#endif /* VHDKIT_WINPATH_H */
