/* vhdkit: the exports of `nbdkit vhd dir=DIR`.
 *
 * An export is a regular file directly in DIR (not a subfolder, not a
 * symbolic link, which could lead out of it) whose content is a VHD,
 * named by its file name.  Each is opened by its first connection and
 * shared by every later one: one engine disk per image, as in
 * single-file mode, so that connections to one export see each other's
 * writes and the multi-conn promise holds.  The last connection closes
 * it, releasing its locks (and those of its parents).
 *
 * One mutex guards the table, and an image is opened and closed while
 * holding it: two first connections racing to open the same image would
 * otherwise open it twice, and the second writer would find the first
 * one's lock in its way; and a connection arriving while the last one
 * closes must not find a half-closed disk.  Opens are rare next to I/O,
 * which never takes this mutex.
 */

#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "exports.h"

struct export {
  char *name;                   /* the file name in the folder */
  char *path;                   /* folder/name */
  vhd_disk *disk;
  bool readonly;
  unsigned connections;
  struct export *next;
};

static char *folder;            /* a real path */
static int folder_fd = -1;
static struct vhd_open_options open_options;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct export *open_exports;     /* guarded by lock */

int
exports_init (const char *dir, const struct vhd_open_options *options)
{
  folder = strdup (dir);
  if (folder == NULL) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  folder_fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (folder_fd == -1) {
    nbdkit_error ("dir=%s: open: %m", dir);
    return -1;
  }
  open_options = *options;
  return 0;
}

void
exports_unload (void)
{
  if (folder_fd >= 0)
    close (folder_fd);
  free (folder);
}

vhd_disk *
export_disk (const struct export *export)
{
  return export->disk;
}

bool
export_readonly (const struct export *export)
{
  return export->readonly;
}

/* A name from the client, made safe for the log. */
#define ESCAPED_NAME_MAX 512
static const char *
escaped (const char *name, char buf[ESCAPED_NAME_MAX])
{
  return vhd_escape_text (name, buf, ESCAPED_NAME_MAX);
}

/* Only a plain file name in the folder is an export: no path, no way
 * up, and a regular file (not followed if it is a link).
 */
static int
check_export_name (const char *name)
{
  char esc[ESCAPED_NAME_MAX];
  struct stat st;

  if (*name == '\0') {
    nbdkit_error ("this server (dir=%s) has no default export: name one of"
                  " its images as the export name (nbdinfo --list shows"
                  " them)", folder);
    return -1;
  }
  if (strchr (name, '/') || strcmp (name, ".") == 0 ||
      strcmp (name, "..") == 0) {
    nbdkit_error ("export '%s' refused: an export name is the name of a"
                  " file directly in %s, without '/' and not '.' or '..'",
                  escaped (name, esc), folder);
    return -1;
  }
  if (fstatat (folder_fd, name, &st, AT_SYMLINK_NOFOLLOW) == -1) {
    /* The usual case in our own words: a client asked for a name that
     * is not there.  (It also keeps strerror's text out of nbdkit's exit
     * under AddressSanitizer, where nbdkit 1.32 then hangs in exit.)
     */
    if (errno == ENOENT)
      nbdkit_error ("export '%s': there is no file of that name in %s"
                    " (nbdinfo --list shows the exports)",
                    escaped (name, esc), folder);
    else
      nbdkit_error ("export '%s': %s/%s: %m", escaped (name, esc), folder,
                    esc);
    return -1;
  }
  if (!S_ISREG (st.st_mode)) {
    nbdkit_error ("export '%s' refused: %s/%s is not a regular file (only"
                  " regular files are served; links are not followed)",
                  escaped (name, esc), folder, esc);
    return -1;
  }
  return 0;
}

static struct export *
find_open_export (const char *name)
{
  struct export *e;

  for (e = open_exports; e; e = e->next)
    if (strcmp (e->name, name) == 0)
      return e;
  return NULL;
}

static bool
same_file (const char *a, const struct stat *b)
{
  struct stat st;

  return stat (a, &st) == 0 && st.st_dev == b->st_dev &&
         st.st_ino == b->st_ino;
}

/* The engine's lock messages speak of "another process", which in a
 * dir= server may be this one: a conflicting export of our own.  Say
 * which, so that the operator knows what to close.  Called with the lock
 * held, after vhd_open failed with a lock conflict and message.
 */
static void
explain_lock_conflict (const char *path, const char *message,
                       char *out, size_t out_size)
{
  struct vhd_image_info *info;
  const struct export *e;
  const vhd_disk *p;
  struct stat st;
  char esc[ESCAPED_NAME_MAX], in_use[PATH_MAX + 64];

  out[0] = '\0';
  if (stat (path, &st) == -1)
    return;
  info = malloc (sizeof *info);
  if (info == NULL)
    return;
  for (e = open_exports; e && !out[0]; e = e->next) {
    /* Our image is a parent in an open export's chain. */
    for (p = vhd_get_parent (e->disk); p; p = vhd_get_parent (p)) {
      if (vhd_get_image_info (p, info) == 0 && same_file (info->path, &st)) {
        snprintf (out, out_size, " (in this server, it is open read-only"
                  " as a parent of export '%s': it can be opened for"
                  " writing once that export's connections have closed)",
                  escaped (e->name, esc));
        break;
      }
    }
    /* An image of our chain is open as an export itself (the engine
     * names the image in use, possibly after the child that needs it).
     */
    if (!out[0] && snprintf (in_use, sizeof in_use,
                             "%s: the image is in use", e->path) > 0 &&
        strstr (message, in_use))
      snprintf (out, out_size, " (in this server, it is open%s as export"
                " '%s')", e->readonly ? " read-only" : " for writing",
                escaped (e->name, esc));
  }
  free (info);
}

static struct export *
open_export (const char *name, bool readonly)
{
  struct vhd_open_options options = open_options;
  struct export *e;
  /* The engine's message, kept: explaining it makes more engine calls. */
  char message[4096], why[1024];
  int r;

  e = calloc (1, sizeof *e);
  if (e == NULL || (e->name = strdup (name)) == NULL ||
      asprintf (&e->path, "%s/%s", folder, name) == -1) {
    nbdkit_error ("out of memory");
    if (e)
      free (e->name);
    free (e);
    return NULL;
  }
  e->readonly = readonly;
  options.readonly = readonly;

  r = vhd_open (e->path, &options, &e->disk);
  if (r < 0) {
    /* A parent's lock conflict reaches us wrapped in the child's error,
     * with that error's errno: look for the engine's words.
     */
    if (r == -EBUSY || strstr (vhd_last_error (), ": the image is in use")) {
      snprintf (message, sizeof message, "%s", vhd_last_error ());
      explain_lock_conflict (e->path, message, why, sizeof why);
      nbdkit_error ("%s%s", message, why);
    }
    else if (r != -ENOTSUP)
      nbdkit_error ("%s", vhd_last_error ());
    free (e->name);
    free (e->path);
    free (e);
    return NULL;
  }
  nbdkit_debug ("vhd: export %s: opened %s%s, %" PRIu64 " bytes", e->name,
                e->path, readonly ? " read-only" : "",
                vhd_get_size (e->disk));
  return e;
}

struct export *
export_acquire (const char *name, bool readonly)
{
  struct export *e;

  if (check_export_name (name) == -1)
    return NULL;
  readonly = readonly || open_options.readonly;

  pthread_mutex_lock (&lock);
  e = find_open_export (name);
  if (e == NULL) {
    e = open_export (name, readonly);
    if (e) {
      e->next = open_exports;
      open_exports = e;
    }
  }
  if (e)
    e->connections++;
  pthread_mutex_unlock (&lock);
  return e;
}

void
export_release (struct export *export)
{
  struct export **p;

  pthread_mutex_lock (&lock);
  if (--export->connections == 0) {
    for (p = &open_exports; *p != export; p = &(*p)->next)
      ;
    *p = export->next;
    nbdkit_debug ("vhd: export %s: last connection closed", export->name);
    vhd_close (export->disk);
    free (export->name);
    free (export->path);
    free (export);
  }
  pthread_mutex_unlock (&lock);
}

static const char *
type_name (uint32_t disk_type)
{
  switch (disk_type) {
  case VHD_TYPE_FIXED: return "fixed";
  case VHD_TYPE_DYNAMIC: return "dynamic";
  case VHD_TYPE_DIFFERENCING: return "differencing";
  default: return "unknown type";
  }
}

/* "VHDX dynamic, 16777216 bytes", and for a differencing disk the parent
 * as the image names it.  An image in use describes itself from its open
 * disk; any other is opened only for this, without its parents and
 * without locks (a writer may have it: the description is a hint).
 */
static void
describe (const char *name, const char *path, const char *format,
          char *out, size_t out_size)
{
  struct vhd_open_options options = {
    .readonly = true,
    .flags = VHD_OPEN_FLAG_NO_PARENTS | VHD_OPEN_FLAG_FORCE_SHARE,
    .max_metadata_bytes = open_options.max_metadata_bytes,
  };
  struct vhd_image_info *info = NULL;
  struct export *e;
  vhd_disk *disk = NULL;
  char parent[1024];
  int r = -ENOMEM;

  info = malloc (sizeof *info);
  pthread_mutex_lock (&lock);
  e = find_open_export (name);
  if (info && e)
    r = vhd_get_image_info (e->disk, info);
  pthread_mutex_unlock (&lock);
  if (info && !e) {
    r = vhd_open (path, &options, &disk);
    if (r == 0)
      r = vhd_get_image_info (disk, info);
  }
  if (r < 0) {
    nbdkit_debug ("vhd: describing export %s: %s", name, vhd_last_error ());
    snprintf (out, out_size, "%s that does not open (see the server's log"
              " when a client opens it)", format);
  }
  else if (info->disk_type == VHD_TYPE_DIFFERENCING)
    snprintf (out, out_size, "%s %s, %" PRIu64 " bytes, parent %s",
              format, type_name (info->disk_type), info->current_size,
              info->parent_name[0]
              ? vhd_escape_text (info->parent_name, parent, sizeof parent)
              : "(unnamed)");
  else
    snprintf (out, out_size, "%s %s, %" PRIu64 " bytes", format,
              type_name (info->disk_type), info->current_size);
  if (disk)
    vhd_close (disk);
  free (info);
}

static int
compare_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* The names of the regular files directly in the folder, sorted (so the
 * list is stable), or NULL after nbdkit_error.
 */
static char **
folder_entries (size_t *count)
{
  char **names = NULL, **more;
  size_t n = 0, allocated = 0;
  struct dirent *d;
  struct stat st;
  DIR *dir;
  int fd;

  /* A description of our own, so that listings in parallel connections
   * do not share a read position.
   */
  fd = openat (folder_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd == -1 || (dir = fdopendir (fd)) == NULL) {
    nbdkit_error ("%s: opendir: %m", folder);
    if (fd >= 0)
      close (fd);
    return NULL;
  }
  while ((errno = 0, d = readdir (dir)) != NULL) {
    if (fstatat (folder_fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
        !S_ISREG (st.st_mode))
      continue;
    if (n == allocated) {
      allocated = allocated ? 2 * allocated : 16;
      more = realloc (names, allocated * sizeof *names);
      if (more == NULL)
        goto nomem;
      names = more;
    }
    if ((names[n] = strdup (d->d_name)) == NULL)
      goto nomem;
    n++;
  }
  if (errno != 0) {
    nbdkit_error ("%s: readdir: %m", folder);
    goto fail;
  }
  closedir (dir);
  if (n)
    qsort (names, n, sizeof *names, compare_names);
  *count = n;
  /* An empty folder is a valid empty list. */
  return names ? names : calloc (1, sizeof *names);

 nomem:
  nbdkit_error ("out of memory");
 fail:
  while (n > 0)
    free (names[--n]);
  free (names);
  closedir (dir);
  return NULL;
}

int
exports_list (struct nbdkit_exports *list)
{
  char **names, *path, description[1200], esc[ESCAPED_NAME_MAX];
  int format;
  size_t n, i;
  int r = 0;

  names = folder_entries (&n);
  if (names == NULL)
    return -1;
  for (i = 0; i < n; i++) {
    /* A name that would need escaping cannot be typed by a client: it
     * is not listed (it may still be asked for).
     */
    if (strcmp (escaped (names[i], esc), names[i]) != 0)
      continue;
    if (asprintf (&path, "%s/%s", folder, names[i]) == -1) {
      nbdkit_error ("out of memory");
      r = -1;
      break;
    }
    /* The content decides, whatever the name; a file that cannot be
     * probed (gone, unreadable) is left out of the list.
     */
    format = vhd_probe_format (path, 0);
    if (format == VHD_FORMAT_VHD || format == VHD_FORMAT_VHDX) {
      describe (names[i], path, format == VHD_FORMAT_VHD ? "VHD" : "VHDX",
                description, sizeof description);
      if (nbdkit_add_export (list, names[i], description) == -1)
        r = -1;
    }
    free (path);
    if (r == -1)
      break;
  }
  for (i = 0; i < n; i++)
    free (names[i]);
  free (names);
  return r;
}
