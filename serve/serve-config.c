/* vhdkit: the configuration keys shared by the nbdkit plugin and filter. */

#include <config.h>

#include <stdlib.h>
#include <string.h>

/* The nbdkit_* helpers used here are declared by both nbdkit headers;
 * the filter's is the one that also declares what serve-io.c needs.
 */
#include <nbdkit-filter.h>

#include "serve.h"

static int
add_parent_dir (struct vhd_serve_config *config, const char *value)
{
  char *dir, **dirs;

  /* The engine would refuse the list only when it looks for a parent,
   * and only for a differencing image: refuse it now, whatever the image.
   */
  if (config->nr_parent_dirs == VHD_MAX_PARENT_DIRS) {
    nbdkit_error ("parent-dir: too many parent folders (at most %d)",
                  VHD_MAX_PARENT_DIRS);
    return -1;
  }
  dir = nbdkit_realpath (value);
  if (dir == NULL)
    return -1;
  /* One more for the new entry, one for the terminating NULL. */
  dirs = realloc (config->parent_dirs,
                  (config->nr_parent_dirs + 2) * sizeof *dirs);
  if (dirs == NULL) {
    nbdkit_error ("realloc: %m");
    free (dir);
    return -1;
  }
  config->parent_dirs = dirs;
  config->parent_dirs[config->nr_parent_dirs++] = dir;
  config->parent_dirs[config->nr_parent_dirs] = NULL;
  return 0;
}

static int
parse_bool_key (const char *value, bool *out)
{
  int r = nbdkit_parse_bool (value);

  if (r == -1)
    return -1;
  *out = r;
  return 0;
}

/* Returns 1, 0 or -1 as serve.h says. */
int
vhd_serve_config_key (struct vhd_serve_config *config,
                      const char *key, const char *value,
                      bool accept_readonly)
{
  int r;

  if (accept_readonly && strcmp (key, "readonly") == 0)
    r = parse_bool_key (value, &config->readonly);
  else if (accept_readonly && strcmp (key, "force-share") == 0)
    r = parse_bool_key (value, &config->force_share);
  else if (strcmp (key, "parent-dir") == 0)
    r = add_parent_dir (config, value);
  else if (strcmp (key, "max-chain-depth") == 0) {
    r = nbdkit_parse_unsigned ("max-chain-depth", value,
                               &config->max_chain_depth);
    if (r == 0 && (config->max_chain_depth == 0 ||
                   config->max_chain_depth > VHD_MAX_CHAIN_DEPTH)) {
      nbdkit_error ("max-chain-depth must be from 1 to %d",
                    VHD_MAX_CHAIN_DEPTH);
      r = -1;
    }
  }
  else if (strcmp (key, "ignore-parent-id-mismatch") == 0)
    r = parse_bool_key (value, &config->ignore_parent_id_mismatch);
  else if (strcmp (key, "max-metadata") == 0) {
    config->max_metadata = nbdkit_parse_size (value);
    r = config->max_metadata == -1 ? -1 : 0;
  }
  else
    return 0;
  return r == -1 ? -1 : 1;
}

void
vhd_serve_config_free (struct vhd_serve_config *config)
{
  size_t i;

  for (i = 0; i < config->nr_parent_dirs; ++i)
    free (config->parent_dirs[i]);
  free (config->parent_dirs);
  config->parent_dirs = NULL;
  config->nr_parent_dirs = 0;
}

struct vhd_open_options
vhd_serve_open_options (const struct vhd_serve_config *config)
{
  struct vhd_open_options opts = {
    .readonly = config->readonly,
    .parent_dirs = (const char *const *) config->parent_dirs,
    .max_chain_depth = config->max_chain_depth,
    .ignore_parent_id_mismatch = config->ignore_parent_id_mismatch,
    .flags = config->force_share ? VHD_OPEN_FLAG_FORCE_SHARE : 0,
    .max_metadata_bytes = (uint64_t) config->max_metadata,
  };

  return opts;
}
