/* vhdkit: Windows-style paths that parent locators record (internal). */

#ifndef VHDKIT_WINPATH_H
#define VHDKIT_WINPATH_H

#include <stddef.h>

/* The relative path from folder from_dir to file to (both resolved,
 * absolute), Windows style, as VHD's W2ru locator and VHDX's
 * relative_path hold it: ".\base.vhd", "..\dir\base.vhd".  Returns 0
 * or -ENAMETOOLONG.
 */
int vhd_relative_windows_path (const char *from_dir, const char *to,
                               char *out, size_t out_size);

#endif /* VHDKIT_WINPATH_H */
