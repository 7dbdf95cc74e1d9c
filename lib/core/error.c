/* vhdkit: the thread-local error message behind vhd_last_error(). */

#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "error.h"
#include "vhdkit.h"

/* Long enough for two paths and a sentence; vsnprintf truncates safely. */
static _Thread_local char last_error[4096];

int
vhd_error (int err, const char *fmt, ...)
{
  va_list ap;
  /* Formatting may touch errno (e.g. through %m); keep the caller's. */
  int saved_errno = errno;
  char raw[sizeof last_error];

  /* Messages embed names and paths that come from images (a parent's
   * name, its locators): escape control characters and bad UTF-8 in the
   * whole message, so that no image can write escape sequences or forged
   * lines into a terminal or a server's log.  (Formatting into raw first
   * also lets a caller pass vhd_last_error () as an argument.)
   */
  va_start (ap, fmt);
  vsnprintf (raw, sizeof raw, fmt, ap);
  va_end (ap);
  vhd_escape_text (raw, last_error, sizeof last_error);
  errno = saved_errno;
  return err > 0 ? -err : err;
}

void
vhd_clear_error (void)
{
  last_error[0] = '\0';
}

const char *
vhd_last_error (void)
{
  return last_error;
}
