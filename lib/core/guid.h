/* vhdkit: GUIDs, as every format uses them (internal; vhd_guid_to_string
 * is public, in vhdkit.h).
 */

#ifndef VHDKIT_GUID_H
#define VHDKIT_GUID_H

#include <stdbool.h>

#include "vhdkit.h"

/* A random (version 4) GUID from getrandom(2).  Returns 0 or -errno. */
int vhd_guid_generate (struct vhd_guid *guid);
bool vhd_guid_is_zero (const struct vhd_guid *guid);

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" and its NUL. */
#define VHD_BRACED_GUID_SIZE 39

/* The GUID as Hyper-V writes it in a VHDX parent locator (lower case, in
 * braces); messages quote it the same way, so that what they show can be
 * matched against the locator.
 */
void vhd_guid_to_braced (const struct vhd_guid *guid,
                         char out[VHD_BRACED_GUID_SIZE]);

#endif /* VHDKIT_GUID_H */
