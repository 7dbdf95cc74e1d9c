/* vhdkit: Windows-style paths that parent locators record. */

#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "core/winpath.h"

/* The relative path from folder from_dir to file to (both resolved),
 * Windows style: ".\base.vhd", "..\dir\base.vhd".
 */
int
vhd_relative_windows_path (const char *from_dir, const char *to,
                           char *out, size_t out_size)
{
  char dir[PATH_MAX + 1];
  size_t common = 0, len = 0;
  unsigned up = 0;

  /* With a trailing slash, every folder of dir ends in '/'. */
  if (snprintf (dir, sizeof dir, "%s%s", from_dir,
                strcmp (from_dir, "/") == 0 ? "" : "/") >= (int) sizeof dir)
    return -ENAMETOOLONG;
  for (size_t i = 0; dir[i] && dir[i] == to[i]; i++)
    if (dir[i] == '/')
      common = i + 1;
  for (const char *p = dir + common; *p; p++)
    if (*p == '/')
      up++;

  if (up == 0)
    len = (size_t) snprintf (out, out_size, ".\\");
  for (unsigned i = 0; i < up && len < out_size; i++)
    len += (size_t) snprintf (out + len, out_size - len, "..\\");
  if (len >= out_size ||
      (size_t) snprintf (out + len, out_size - len, "%s", to + common)
      >= out_size - len)
    return -ENAMETOOLONG;
  for (char *p = out + len; *p; p++)
    if (*p == '/')
      *p = '\\';
  return 0;
}

void
vhd_windows_to_forward_slashes (char *path)
{
  for (; *path; path++)
    if (*path == '\\')
      *path = '/';
}

bool
vhd_is_windows_absolute (const char *path)
{
  return (path[0] && path[1] == ':') || (path[0] == '/' && path[1] == '/');
}
