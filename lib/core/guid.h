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

#endif /* VHDKIT_GUID_H */
