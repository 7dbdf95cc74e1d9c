/* vhdkit: vhd_get_version(), the version of the library in use (which
 * may be newer than the headers a program was built with).
 */

#include <config.h>

#include "vhdkit.h"

const char *
vhd_get_version (void)
{
  return VHDKIT_VERSION_STRING;
}
