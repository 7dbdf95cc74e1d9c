/* vhdkit: the thread-local error message (internal). */

#ifndef VHDKIT_ERROR_H
#define VHDKIT_ERROR_H

/* Error reporting, shared by every file of the library: sets the calling
 * thread's message (printf format) and returns -err, so that a failure is
 * one line: `return vhd_error (EINVAL, "%s: footer: bad cookie", file);`.
 */
int vhd_error (int err, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
void vhd_clear_error (void);

#endif /* VHDKIT_ERROR_H */
