/* vhdkit: the thread-local error message behind vhd_last_error(). */

#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "format.h"

/* Long enough for two paths and a sentence; vsnprintf truncates safely. */
static _Thread_local char last_error[4096];

int
vhd_error (int err, const char *fmt, ...)
{
  va_list ap;
  /* Formatting may touch errno (e.g. through %m); keep the caller's. */
  int saved_errno = errno;

  va_start (ap, fmt);
  vsnprintf (last_error, sizeof last_error, fmt, ap);
  va_end (ap);
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
