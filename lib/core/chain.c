/* vhdkit: find and open the parent of a differencing disk.
 *
 * The parent is looked for through the header's locators in the order
 * W2ru (relative to the child's folder), W2ku (absolute; a Windows drive
 * path is tried by its file name in the child's folder and in each allowed
 * folder), MacX (a file:// URL), then the header's parent name in the
 * child's folder.  Locators are untrusted: a candidate is opened only if,
 * after resolving "..", and symlinks, it lies inside an allowed folder
 * (the top image's folder and the operator's parent_dirs), and the open
 * itself is done beneath that folder's fd so that nothing can swap a
 * symlink in between.  Every place tried is named in the error.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "chain.h"
#include "cleanup.h"
#include "backend/backend.h"
#include "backend/file.h"
#include "formats/vhd/format.h"
#include "image.h"

#define MAX_LOCATOR_BYTES 65536
#define MAX_CANDIDATES 64

struct candidate {
  char path[PATH_MAX];
  const char *first_via;        /* the first locator that led here */
  char via[128];                /* all of them, for the error */
};

struct search {
  const struct vhd_disk *child;
  char child_dir[PATH_MAX];
  /* Allowed folders, resolved; [0] is the top image's folder. */
  char *allowed[VHD_MAX_PARENT_DIRS + 1];
  size_t n_allowed;
  struct candidate cand[MAX_CANDIDATES];
  size_t n_cand;
  /* Files already looked at: locators often name one file in several
   * spellings ("dir/./p.vhd", "dir/p.vhd"), and each is opened once.
   */
  struct { dev_t dev; ino_t ino; } seen[MAX_CANDIDATES];
  size_t n_seen;
  char tried[3072];                     /* the error's list of attempts */
};

static void
free_search (struct search *s)
{
  for (size_t i = 0; i < s->n_allowed; i++)
    free (s->allowed[i]);
  free (s);
}

static void
cleanup_search (struct search **s)
{
  if (*s)
    free_search (*s);
}

/* Append "; PATH (via): why" to the list of attempts, truncating safely. */
static void
note_attempt (struct search *s, const char *path, const char *via,
              const char *why)
{
  size_t len = strlen (s->tried);
  snprintf (s->tried + len, sizeof s->tried - len, "%s%s (%s): %s",
            len ? "; " : "", path, via, why);
}

static void
add_candidate (struct search *s, const char *dir, const char *name,
               const char *via)
{
  char path[PATH_MAX];
  int n;

  if (*name == '\0')
    return;
  if (dir && name[0] != '/')
    n = snprintf (path, sizeof path, "%s/%s", dir, name);
  else
    n = snprintf (path, sizeof path, "%s", name);
  if (n < 0 || (size_t) n >= sizeof path) {
    note_attempt (s, "(a path)", via, "longer than PATH_MAX: not tried");
    return;
  }
  /* "dir/./p.vhd" is "dir/p.vhd": one spelling, one attempt, one name in
   * the error.  (".." is left for realpath and the confinement check.)
   */
  for (char *dot; (dot = strstr (path, "/./")) != NULL; )
    memmove (dot, dot + 2, strlen (dot + 2) + 1);
  n = (int) strlen (path);
  for (size_t i = 0; i < s->n_cand; i++) {
    if (strcmp (s->cand[i].path, path) == 0) {
      /* Tried once, but every locator that named it is reported. */
      size_t len = strlen (s->cand[i].via);
      if (strstr (s->cand[i].via, via) == NULL)
        snprintf (s->cand[i].via + len, sizeof s->cand[i].via - len,
                  " and %s", via);
      return;
    }
  }
  if (s->n_cand == MAX_CANDIDATES)
    return;
  memcpy (s->cand[s->n_cand].path, path, (size_t) n + 1);
  snprintf (s->cand[s->n_cand].via, sizeof s->cand[s->n_cand].via, "%s",
            via);
  s->cand[s->n_cand].first_via = via;
  s->n_cand++;
}

static void
to_forward_slashes (char *p)
{
  for (; *p; p++)
    if (*p == '\\')
      *p = '/';
}

static const char *
base_name (const char *p)
{
  const char *slash = strrchr (p, '/');
  return slash ? slash + 1 : p;
}

/* A Windows path "C:/x/y" (after slash conversion) or a UNC "//host/x". */
static bool
is_windows_absolute (const char *p)
{
  return (p[0] && p[1] == ':') || (p[0] == '/' && p[1] == '/');
}

/* Add a path by its file name in the child's folder and each allowed one. */
static void
add_by_file_name (struct search *s, const char *p, const char *via)
{
  const char *name = base_name (p);

  if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0)
    return;
  add_candidate (s, s->child_dir, name, via);
  for (size_t i = 0; i < s->n_allowed; i++)
    add_candidate (s, s->allowed[i], name, via);
}

static int
percent_decode (char *p)
{
  char *out = p;

  for (; *p; p++) {
    if (*p == '%') {
      unsigned v;
      if (sscanf (p + 1, "%2x", &v) != 1 || v == 0)
        return -EINVAL;
      *out++ = (char) v;
      p += 2;
    }
    else
      *out++ = *p;
  }
  *out = '\0';
  return 0;
}

/* Copy a UTF-8 payload (it ends at len or a NUL), checking that it is
 * well-formed UTF-8 and fits.  Returns the length, or -EINVAL.
 */
static int
copy_utf8 (const uint8_t *in, size_t len, char *out, size_t out_size)
{
  size_t n = 0, i = 0;

  while (i < len && in[i] != 0) {
    unsigned follow = in[i] < 0x80 ? 0 : (in[i] & 0xe0) == 0xc0 ? 1
                      : (in[i] & 0xf0) == 0xe0 ? 2
                      : (in[i] & 0xf8) == 0xf0 ? 3 : 4;
    if (follow == 4 || follow >= len - i)
      return -EINVAL;
    for (unsigned k = 1; k <= follow; k++)
      if ((in[i + k] & 0xc0) != 0x80)
        return -EINVAL;
    if (n + follow + 1 >= out_size)
      return -ENAMETOOLONG;
    memcpy (out + n, in + i, follow + 1);
    n += follow + 1;
    i += follow + 1;
  }
  if (out_size == 0)
    return -EINVAL;
  out[n] = '\0';
  return (int) n;
}

int
vhd_locator_read_path (const struct vhd_disk *disk, unsigned i,
                       char *out, size_t out_size)
{
  const struct vhd_parent_locator *loc = &disk->header.locators[i];
  uint8_t *buf;
  int r;

  if (loc->platform_data_length == 0 ||
      loc->platform_data_length > MAX_LOCATOR_BYTES)
    return vhd_error (EINVAL, "%s: parent locator %u: platform_data_length %"
                      PRIu32 " is not in 1..%d", disk->path, i,
                      loc->platform_data_length, MAX_LOCATOR_BYTES);
  if (loc->platform_data_offset > disk->file_size ||
      disk->file_size - loc->platform_data_offset < loc->platform_data_length)
    return vhd_error (EINVAL, "%s: parent locator %u: platform_data_offset %"
                      PRIu64 " + platform_data_length %" PRIu32
                      " is past the end of the file", disk->path, i,
                      loc->platform_data_offset, loc->platform_data_length);
  buf = malloc (loc->platform_data_length);
  if (buf == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  r = vhd_backend_pread_exact (disk->be, buf, loc->platform_data_length,
                               loc->platform_data_offset,
                               "parent locator data");
  if (r == 0) {
    if (loc->platform_code == VHD_PLATFORM_MACX)
      r = copy_utf8 (buf, loc->platform_data_length,
                                    out, out_size);
    else
      r = vhd_utf16_to_utf8 (buf, loc->platform_data_length & ~1u, false,
                             out, out_size);
    if (r == -ENAMETOOLONG)
      r = vhd_error (ENAMETOOLONG, "%s: parent locator %u: the path in its"
                     " platform data is longer than %zu bytes", disk->path,
                     i, out_size - 1);
    else if (r < 0)
      r = vhd_error (EINVAL, "%s: parent locator %u: platform data is not"
                     " valid %s", disk->path, i,
                     loc->platform_code == VHD_PLATFORM_MACX
                     ? "UTF-8" : "UTF-16LE");
    else
      r = 0;
  }
  free (buf);
  return r;
}

/* Turn a MacX payload (a file URL) into a path; false if it is not one. */
static bool
mac_url_to_path (char *url)
{
  const char *prefixes[] = { "file://localhost/", "file:///", "file://" };

  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    size_t n = strlen (prefixes[i]);
    if (strncmp (url, prefixes[i], n) == 0) {
      /* Keep the leading slash of the path. */
      size_t keep = prefixes[i][n - 1] == '/' ? n - 1 : n;
      memmove (url, url + keep, strlen (url + keep) + 1);
      return percent_decode (url) == 0;
    }
  }
  return false;
}

/* Collect candidates from one locator, in the caller's order. */
static void
add_locator_candidates (struct search *s, uint32_t code)
{
  const struct vhd_disk *child = s->child;
  char p[PATH_MAX * 2];

  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++) {
    if (child->header.locators[i].platform_code != code)
      continue;
    if (vhd_locator_read_path (child, i, p, sizeof p) < 0) {
      note_attempt (s, "(locator)", code == VHD_PLATFORM_W2RU ? "W2ru"
                    : code == VHD_PLATFORM_W2KU ? "W2ku" : "MacX",
                    vhd_last_error ());
      continue;
    }
    switch (code) {
    case VHD_PLATFORM_W2RU:
      to_forward_slashes (p);
      add_candidate (s, s->child_dir, p, "W2ru locator");
      break;
    case VHD_PLATFORM_W2KU:
      to_forward_slashes (p);
      if (!is_windows_absolute (p))
        add_candidate (s, s->child_dir, p, "W2ku locator");
      add_by_file_name (s, p, "W2ku locator, by file name");
      break;
    case VHD_PLATFORM_MACX:
      if (!mac_url_to_path (p))
        break;
      add_candidate (s, s->child_dir, p, "MacX locator");
      add_by_file_name (s, p, "MacX locator, by file name");
      break;
    }
  }
}

static int
set_up_search (struct search *s, const struct vhd_chain_context *ctx)
{
  char tmp[PATH_MAX];
  const char *const *dirs = ctx->options->parent_dirs;

  if (vhd_backend_file_fd (s->child->be) < 0 && ctx->top_dir == NULL) {
    /* The image asked for lives behind callbacks: it has no folder of
     * its own, so the first parent folder stands in for it.
     */
    if (dirs == NULL || *dirs == NULL)
      return vhd_error (ENOENT, "%s: a differencing image opened through"
                        " a backend finds its parent only in the parent"
                        " folders given (parent_dirs, parent-dir=), and"
                        " none were given", s->child->path);
    if (realpath (*dirs, s->child_dir) == NULL)
      return vhd_error (errno, "parent folder %s: %m", *dirs);
  }
  else {
    if (snprintf (tmp, sizeof tmp, "%s", s->child->path) >= (int) sizeof tmp)
      return vhd_error (ENAMETOOLONG, "%s: path too long", s->child->path);
    if (realpath (dirname (tmp), s->child_dir) == NULL)
      return vhd_error (errno, "%s: resolving its folder: %m",
                        s->child->path);
  }

  s->allowed[s->n_allowed++] = strdup (ctx->top_dir ? ctx->top_dir
                                                    : s->child_dir);
  for (; dirs && *dirs; dirs++) {
    if (s->n_allowed == sizeof s->allowed / sizeof s->allowed[0])
      return vhd_error (EINVAL, "too many parent folders (at most %d,"
                        " VHD_MAX_PARENT_DIRS)", VHD_MAX_PARENT_DIRS);
    s->allowed[s->n_allowed] = realpath (*dirs, NULL);
    if (s->allowed[s->n_allowed] == NULL)
      return vhd_error (errno, "parent folder %s: %m", *dirs);
    s->n_allowed++;
  }
  for (size_t i = 0; i < s->n_allowed; i++)
    if (s->allowed[i] == NULL)
      return vhd_error (ENOMEM, "out of memory");
  return 0;
}

/* Which allowed folder holds the resolved path; its index, or -1. */
static int
allowed_folder_of (const struct search *s, const char *real)
{
  for (size_t i = 0; i < s->n_allowed; i++) {
    size_t n = strlen (s->allowed[i]);
    if (strncmp (real, s->allowed[i], n) == 0 &&
        (real[n] == '/' || (n == 1 && real[0] == '/')))
      return (int) i;
  }
  return -1;
}

/* Open real (already resolved) beneath the allowed folder, so that a
 * symlink swapped in after realpath cannot lead outside it; with
 * O_NONBLOCK, so that a FIFO or a device that a locator names cannot
 * block, and then only a regular file or a block device is taken.
 */
static int
open_beneath (const char *folder, const char *real, const char **why)
{
  struct open_how how = {
    .flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
    .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
  };
  const char *rel = real + strlen (folder);
  CLEANUP_CLOSE int dirfd = -1;
  int fd;

  while (*rel == '/')
    rel++;
  dirfd = open (folder, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dirfd == -1) {
    *why = strerror (errno);
    return -1;
  }
  fd = (int) syscall (SYS_openat2, dirfd, rel, &how, sizeof how);
  if (fd == -1 && errno == ENOSYS)
    /* Kernels before 5.6: the realpath check is all we have; refuse any
     * symlink in the final component at least.
     */
    fd = openat (dirfd, rel,
                 O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (fd == -1) {
    struct stat st;
    /* A socket cannot be opened at all: say what it is. */
    if (errno == ENXIO && fstatat (dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0
        && S_ISSOCK (st.st_mode))
      *why = "refused: it is a socket, not an image (an image is a regular"
             " file or a block device)";
    else
      *why = errno == EXDEV ? "escapes the allowed folder"
                            : strerror (errno);
    return -1;
  }
  if (vhd_file_settle (fd, real) < 0) {
    *why = vhd_last_error ();
    close (fd);
    return -1;
  }
  return fd;
}

static bool
in_chain (const struct vhd_chain_link *link, const struct stat *st)
{
  for (; link; link = link->next)
    if (link->dev == st->st_dev && link->ino == st->st_ino)
      return true;
  return false;
}

static bool
seen_before (struct search *s, const struct stat *st)
{
  for (size_t i = 0; i < s->n_seen; i++)
    if (s->seen[i].dev == st->st_dev && s->seen[i].ino == st->st_ino)
      return true;
  if (s->n_seen < MAX_CANDIDATES) {
    s->seen[s->n_seen].dev = st->st_dev;
    s->seen[s->n_seen].ino = st->st_ino;
    s->n_seen++;
  }
  return false;
}

/* Is the opened image the parent the child records?  If not, why not. */
static bool
is_the_parent (const struct vhd_disk *child, const struct vhd_disk *parent,
               const struct vhd_open_options *options, char *why,
               size_t why_size)
{
  if (memcmp (&parent->footer.unique_id, &child->header.parent_unique_id,
              sizeof (struct vhd_guid)) != 0 &&
      !options->ignore_parent_id_mismatch) {
    char want[37], got[37];
    vhd_guid_to_string (&child->header.parent_unique_id, want);
    vhd_guid_to_string (&parent->footer.unique_id, got);
    snprintf (why, why_size, "its unique id %s is not the parent id %s"
              " that %s records", got, want, child->path);
    return false;
  }
  if (parent->footer.current_size != child->footer.current_size) {
    snprintf (why, why_size, "its size %" PRIu64 " differs from the"
              " child's %" PRIu64, parent->footer.current_size,
              child->footer.current_size);
    return false;
  }
  return true;
}

/* Try one candidate: 0 when it is the parent (child->parent is set), 1
 * to try the next one, or -errno when it is the parent but its own chain
 * failed: that error (which names what is missing further down) is the
 * answer, and no other spelling of the same file is worth a try.
 */
static int
try_candidate (struct search *s, const struct candidate *c,
               const struct vhd_chain_context *ctx,
               const struct vhd_chain_link *link)
{
  struct vhd_disk *child = (struct vhd_disk *) s->child;
  struct vhd_chain_context below = {
    .options = ctx->options, .depth = ctx->depth + 1, .children = link,
    .top_dir = s->allowed[0],
  };
  struct vhd_disk *parent;
  char real[PATH_MAX];
  const char *why = NULL;
  struct stat st;
  int folder, fd, r;
  char msg[1024];

  if (realpath (c->path, real) == NULL) {
    note_attempt (s, c->path, c->via, errno == ENOENT ? "not found"
                  : strerror (errno));
    return 1;
  }
  folder = allowed_folder_of (s, real);
  if (folder < 0) {
    note_attempt (s, c->path, c->via,
                  "refused: outside the allowed folders");
    return 1;
  }
  fd = open_beneath (s->allowed[folder], real, &why);
  if (fd == -1) {
    note_attempt (s, c->path, c->via, why);
    return 1;
  }
  if (fstat (fd, &st) == -1 || in_chain (link, &st)) {
    close (fd);
    note_attempt (s, c->path, c->via,
                  "refused: it is an image of this chain (a locator loop)");
    return 1;
  }
  if (seen_before (s, &st)) {
    close (fd);
    return 1;
  }

  /* The image alone first: its identity decides whether its chain is
   * worth resolving.
   */
  if (vhd_open_fd (fd, real, true, VHD_OPEN_FLAG_NO_PARENTS, &below,
                   &parent) < 0) {
    note_attempt (s, c->path, c->via, vhd_last_error ());
    return 1;
  }
  if (!is_the_parent (child, parent, ctx->options, msg, sizeof msg)) {
    note_attempt (s, c->path, c->via, msg);
    vhd_close (parent);
    return 1;
  }
  if (parent->footer.disk_type == VHD_TYPE_DIFFERENCING &&
      (r = vhd_chain_open_parent (parent, &below)) < 0) {
    vhd_close (parent);
    return r;
  }

  child->parent = parent;
  snprintf (child->parent_found_via, sizeof child->parent_found_via, "%s",
            c->first_via);
  return 0;
}

int
vhd_chain_open_parent (struct vhd_disk *child,
                       const struct vhd_chain_context *ctx)
{
  __attribute__ ((cleanup (cleanup_search))) struct search *s = NULL;
  unsigned max_depth = ctx->options->max_chain_depth
                       ? ctx->options->max_chain_depth
                       : VHD_DEFAULT_MAX_CHAIN_DEPTH;
  struct vhd_chain_link link;
  char name[1024] = "";
  char uuid[37];
  struct stat st;
  int r;

  if (max_depth > VHD_MAX_CHAIN_DEPTH)
    return vhd_error (EINVAL, "%s: max_chain_depth %u is above the limit of"
                      " %d images (each level of a chain costs stack and an"
                      " open file)", child->path, max_depth, VHD_MAX_CHAIN_DEPTH);
  /* The child is image depth + 1 of the chain; its parent would be the
   * next one.
   */
  if (ctx->depth + 2 > max_depth)
    return vhd_error (ELOOP, "%s: the parent chain is deeper than %u images"
                      " (the limit; raise max_chain_depth)", child->path,
                      max_depth);
  /* A child on callback storage is no file that a locator could name
   * again: it has no identity to compare (inode 0 is no file's).
   */
  memset (&st, 0, sizeof st);
  if (vhd_backend_file_fd (child->be) >= 0 &&
      fstat (vhd_backend_file_fd (child->be), &st) == -1)
    return vhd_error (errno, "%s: fstat: %m", child->path);
  link = (struct vhd_chain_link) {
    .dev = st.st_dev, .ino = st.st_ino, .path = child->path,
    .next = ctx->children,
  };

  s = calloc (1, sizeof *s);
  if (s == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", child->path);
  s->child = child;
  r = set_up_search (s, ctx);
  if (r < 0)
    return r;

  add_locator_candidates (s, VHD_PLATFORM_W2RU);
  add_locator_candidates (s, VHD_PLATFORM_W2KU);
  add_locator_candidates (s, VHD_PLATFORM_MACX);
  if (vhd_utf16_to_utf8 (child->header.parent_unicode_name,
                         sizeof child->header.parent_unicode_name, true,
                         name, sizeof name) > 0) {
    char slashed[sizeof name];
    memcpy (slashed, name, sizeof name);
    to_forward_slashes (slashed);
    add_candidate (s, s->child_dir, base_name (slashed), "parent name");
  }

  for (size_t i = 0; i < s->n_cand; i++) {
    r = try_candidate (s, &s->cand[i], ctx, &link);
    if (r <= 0)
      return r;
  }

  vhd_guid_to_string (&child->header.parent_unique_id, uuid);
  return vhd_error (ENOENT, "%s: parent %s (unique id %s) could not be"
                    " opened; tried: %s", child->path,
                    name[0] ? name : "(unnamed)", uuid,
                    s->tried[0] ? s->tried : "no locator or parent name");
}
