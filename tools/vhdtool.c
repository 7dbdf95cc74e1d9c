/* vhdtool: the command line over libvhdkit.
 *
 * Exit status: 0 success, 1 the operation failed or the image is invalid
 * (a message on stderr names the file and the field), 2 a usage error,
 * 130 a create or convert interrupted (and cancelled) by a signal; check
 * adds 3, 4 and 5 (below).  Images are VHD or VHDX: a new one's format
 * is the one its name says (.vhdx, else VHD) unless --format says.
 *
 * convert, and create --source, are in convert.c.
 */

#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "vhdkit.h"
#include "vhdtool.h"

const char *program = "vhdtool";

void
usage (FILE *fp)
{
  fprintf (fp,
"Usage:\n"
"  %s create [--fixed|--dynamic] [LAYOUT] [--uuid UUID] SIZE PATH\n"
"  %s create --parent PARENT [--parent-dir DIR]... [--block-size SIZE]\n"
"                 [--uuid UUID] PATH\n"
"  %s create --source SRC [--fixed|--dynamic] [LAYOUT] [--uuid UUID]\n"
"                 [-p] [-U] [--parent-dir DIR]... [SIZE] PATH\n"
"  %s convert [-O fixed|dynamic] [LAYOUT] [-p] [-U] [--parent-dir DIR]...\n"
"                 SRC DST\n"
"  %s info [--json] [-U] [--parent-dir DIR]... PATH\n"
"  %s check [--repair] [-U] [--parent-dir DIR]... PATH\n"
"  %s --help | --version\n"
"\n"
"LAYOUT: [--format vhd|vhdx] [--block-size SIZE] [--sector-size 512|4096]\n"
"        [--physical-sector-size 512|4096]; without --format, a PATH\n"
"        ending in .vhdx is VHDX and any other a VHD.\n"
"SIZE is bytes, or a number with K, M, G or T (binary units): 3M, 10G.\n"
"See vhdtool(1).\n", program, program, program, program, program, program,
           program);
}

int
usage_error (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "%s: ", program);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\nTry '%s --help'.\n", program);
  return EXIT_USAGE;
}

/* "10G", "512M", "1000000512": bytes, with binary suffixes.  Returns false
 * for junk or overflow.
 */
bool
parse_size (const char *s, uint64_t *out)
{
  char *end;
  unsigned shift = 0;
  uint64_t v;

  if (!isdigit ((unsigned char) *s))
    return false;
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno != 0)
    return false;
  switch (toupper ((unsigned char) *end)) {
  case '\0': break;
  case 'K': shift = 10; end++; break;
  case 'M': shift = 20; end++; break;
  case 'G': shift = 30; end++; break;
  case 'T': shift = 40; end++; break;
  default: return false;
  }
  if (shift && (strcmp (end, "iB") == 0 || strcmp (end, "B") == 0))
    end += strlen (end);
  if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
    return false;
  *out = v << shift;
  return true;
}

/* --format: "vhd" or "vhdx"; without it the library picks by the
 * path's extension (.vhdx is VHDX, anything else VHD), as Windows does.
 */
int
parse_layout_option (int opt, const char *arg, uint32_t *device_id,
                     struct vhd_create_parameters *params)
{
  uint64_t v;

  switch (opt) {
  case OPT_FORMAT:
    if (strcasecmp (arg, "vhd") == 0)
      *device_id = VHD_STORAGE_DEVICE_VHD;
    else if (strcasecmp (arg, "vhdx") == 0)
      *device_id = VHD_STORAGE_DEVICE_VHDX;
    else
      return usage_error ("--format: '%s' is not a format (vhd or vhdx)",
                          arg);
    return 0;
  case OPT_BLOCK_SIZE:
    /* Any size: the library says which ones the format takes, and why. */
    if (!parse_size (arg, &v) || v > UINT32_MAX)
      return usage_error ("--block-size: '%s' is not a size", arg);
    params->version2.block_size_in_bytes = (uint32_t) v;
    return 0;
  case OPT_SECTOR_SIZE:
  case OPT_PHYSICAL_SECTOR_SIZE:
    if (strcmp (arg, "512") != 0 && strcmp (arg, "4096") != 0)
      return usage_error ("--%s: '%s' is not 512 or 4096",
                          opt == OPT_SECTOR_SIZE ? "sector-size"
                          : "physical-sector-size", arg);
    if (opt == OPT_SECTOR_SIZE)
      params->version2.sector_size_in_bytes = (uint32_t) atoi (arg);
    else
      params->version2.physical_sector_size_in_bytes = (uint32_t) atoi (arg);
    return 0;
  }
  return EXIT_USAGE;
}

static bool
parse_guid (const char *s, struct vhd_guid *g)
{
  size_t n = 0;

  for (const char *p = s; *p; p++) {
    if (*p == '-' && (p - s == 8 || p - s == 13 || p - s == 18 ||
                      p - s == 23))
      continue;
    if (!isxdigit ((unsigned char) p[0]) || !isxdigit ((unsigned char) p[1])
        || n == 16)
      return false;
    sscanf (p, "%2hhx", &g->bytes[n++]);
    p++;
  }
  return n == 16 && strlen (s) == 36;
}

static bool
ends_with_nocase (const char *s, const char *suffix)
{
  size_t n = strlen (s), m = strlen (suffix);

  return n >= m && strcasecmp (s + n - m, suffix) == 0;
}

/* A differencing disk is of its parent's format (a chain is one format):
 * without --format, the parent says which, and a child path whose
 * extension names the other format is refused rather than given a
 * misleading name.  Returns 0, or the exit status.
 */
static int
child_format (const char *parent, const char *path, uint32_t *device_id)
{
  int f = vhd_probe_format (parent, 0);
  bool vhdx_name = ends_with_nocase (path, ".vhdx") ||
                   ends_with_nocase (path, ".avhdx");
  bool vhd_name = ends_with_nocase (path, ".vhd") ||
                  ends_with_nocase (path, ".avhd");

  if (f < 0) {
    fprintf (stderr, "%s: create: --parent %s: %s\n", program, parent,
             vhd_last_error ());
    return EXIT_FAILURE;
  }
  if (f == VHD_FORMAT_VHDX && vhd_name)
    return usage_error ("%s is a VHDX image, so its child is a VHDX, which"
                        " %s would misname: name it .vhdx or .avhdx",
                        parent, path);
  if (f == VHD_FORMAT_VHD && vhdx_name)
    return usage_error ("%s is a VHD image, so its child is a VHD, which"
                        " %s would misname: name it .vhd or .avhd",
                        parent, path);
  if (f == VHD_FORMAT_VHDX)
    *device_id = VHD_STORAGE_DEVICE_VHDX;
  else if (f == VHD_FORMAT_VHD)
    *device_id = VHD_STORAGE_DEVICE_VHD;
  /* Anything else: the library's open of the parent says what it is. */
  return 0;
}

static int
cmd_create (int argc, char **argv)
{
  enum {
    OPT_FIXED = 256, OPT_DYNAMIC, OPT_UUID, OPT_PARENT, OPT_SOURCE,
    OPT_PARENT_DIR,
  };
  static const struct option long_options[] = {
    { "fixed", no_argument, NULL, OPT_FIXED },
    { "dynamic", no_argument, NULL, OPT_DYNAMIC },
    LAYOUT_LONG_OPTIONS,
    { "uuid", required_argument, NULL, OPT_UUID },
    { "parent", required_argument, NULL, OPT_PARENT },
    { "parent-dir", required_argument, NULL, OPT_PARENT_DIR },
    { "source", required_argument, NULL, OPT_SOURCE },
    { "progress", no_argument, NULL, 'p' },
    { "force-share", no_argument, NULL, 'U' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  /* UNKNOWN: the library picks the format by the path's extension. */
  struct vhd_storage_type storage = {
    .device_id = VHD_STORAGE_DEVICE_UNKNOWN,
    .vendor_id = VHD_VENDOR_MICROSOFT,
  };
  struct vhd_create_parameters params = { .version = VHD_CREATE_VERSION_2 };
  const char *parent_dirs[VHD_MAX_PARENT_DIRS + 1] = { NULL };
  size_t n_dirs = 0;
  uint32_t flags = VHD_CREATE_FLAG_NONE;
  bool fixed = false, dynamic = false, progress = false, share = false;
  const char *path, *source;
  vhd_disk *disk;
  uint64_t size = 0;
  int c, r;

  while ((c = getopt_long (argc, argv, "hpU", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_FIXED: fixed = true; break;
    case OPT_DYNAMIC: dynamic = true; break;
    case OPT_FORMAT: case OPT_BLOCK_SIZE: case OPT_SECTOR_SIZE:
    case OPT_PHYSICAL_SECTOR_SIZE:
      if (parse_layout_option (c, optarg, &storage.device_id, &params) != 0)
        return EXIT_USAGE;
      break;
    case OPT_UUID:
      if (!parse_guid (optarg, &params.version2.unique_id))
        return usage_error ("--uuid: '%s' is not a UUID "
                            "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", optarg);
      break;
    case OPT_PARENT: params.version2.parent_path = optarg; break;
    case OPT_SOURCE: params.version2.source_path = optarg; break;
    case OPT_PARENT_DIR:
      if (!add_parent_dir (parent_dirs, &n_dirs, optarg))
        return EXIT_USAGE;
      break;
    case 'p': progress = true; break;
    case 'U': share = true; break;
    case 'h': usage (stdout); return 0;
    default: return EXIT_USAGE;
    }
  }
  source = params.version2.source_path;
  if (fixed && dynamic)
    return usage_error ("%s", "--fixed and --dynamic are exclusive");
  if (fixed && params.version2.parent_path)
    return usage_error ("%s", "a differencing disk (--parent) cannot be "
                        "--fixed");
  if (source && params.version2.parent_path)
    return usage_error ("%s", "--parent and --source are exclusive: a new "
                        "disk has a parent or a source, not both");
  if (!source && (progress || share))
    return usage_error ("%s", "-p and -U go with --source");
  if (n_dirs && !source && !params.version2.parent_path)
    return usage_error ("%s", "--parent-dir goes with --parent or --source"
                        " (where the parent's, or the source's, parents"
                        " are looked for)");
  use_parent_dirs (&params, parent_dirs);

  if (source && argc - optind != 1 && argc - optind != 2)
    return usage_error ("%s", "create --source takes [SIZE] PATH");
  if (source && argc - optind == 1)
    ;                           /* the size comes from the source */
  else if (params.version2.parent_path) {
    if (argc - optind != 1)
      return usage_error ("%s", "create --parent takes only PATH "
                          "(the size comes from the parent)");
  }
  else {
    if (argc - optind != 2)
      return usage_error ("%s", "create needs SIZE and PATH");
    if (!parse_size (argv[optind], &size))
      return usage_error ("'%s' is not a size (e.g. 3M, 10G, 1000000512)",
                          argv[optind]);
    optind++;
  }
  path = argv[optind];
  params.version2.maximum_size = size;
  if (fixed)
    flags |= VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION;
  if (source) {
    if (!share)
      flags |= VHD_CREATE_FLAG_PREVENT_WRITES_TO_SOURCE_DISK;
    return create_from_source ("create", path, storage.device_id, flags,
                               &params, progress);
  }

  if (params.version2.parent_path &&
      storage.device_id == VHD_STORAGE_DEVICE_UNKNOWN &&
      (r = child_format (params.version2.parent_path, path,
                         &storage.device_id)) != 0)
    return r;

  r = vhd_create_virtual_disk (&storage, path, VHD_ACCESS_NONE, NULL, flags,
                               0, &params, NULL, &disk);
  if (r < 0) {
    fprintf (stderr, "%s: create: %s\n", program, vhd_last_error ());
    return EXIT_FAILURE;
  }
  vhd_close (disk);
  return EXIT_SUCCESS;
}

static const char *
type_name (uint32_t type)
{
  switch (type) {
  case VHD_TYPE_FIXED: return "fixed";
  case VHD_TYPE_DYNAMIC: return "dynamic";
  case VHD_TYPE_DIFFERENCING: return "differencing";
  default: return "unknown";
  }
}

static void
format_time (uint32_t vhd_time, char buf[32])
{
  time_t t = (time_t) vhd_time + 946684800; /* 2000-01-01 UTC */
  struct tm tm;

  gmtime_r (&t, &tm);
  strftime (buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void
host_os_string (uint32_t os, char out[5])
{
  for (int i = 0; i < 4; i++) {
    unsigned char ch = (unsigned char) (os >> (24 - 8 * i));
    out[i] = isprint (ch) ? (char) ch : '?';
  }
  out[4] = '\0';
}

/* Bytes as a JSON string: escapes quotes, backslashes and controls
 * (a creator application may hold NULs).
 */
static void
json_string_n (FILE *fp, const char *s, size_t n)
{
  fputc ('"', fp);
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char) s[i];
    if (ch == '"' || ch == '\\')
      fprintf (fp, "\\%c", ch);
    else if (ch < 0x20 || ch == 0x7f)
      fprintf (fp, "\\u%04x", ch);
    else
      fputc (ch, fp);
  }
  fputc ('"', fp);
}

static void
json_string (FILE *fp, const char *s)
{
  json_string_n (fp, s, strlen (s));
}

/* The creator application as text: NULs shown as \0. */
static void
creator_text (const struct vhd_image_info *info, char out[20])
{
  size_t n = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char ch = (unsigned char) info->creator_application[i];
    if (isprint (ch))
      out[n++] = (char) ch;
    else
      n += (size_t) sprintf (out + n, "\\x%02x", ch);
  }
  out[n] = '\0';
}

#define ESCAPED_MAX 1024            /* bytes of a name, before escaping */

/* Text that an image supplies (a parent's name, a locator, a parent's
 * path found through one) with control characters and bad UTF-8 escaped,
 * so that no image writes escape sequences or forged lines to the
 * terminal.  (--json escapes in its own way.)
 */
static const char *
escaped (const char *s, char out[4 * ESCAPED_MAX])
{
  return vhd_escape_text (s, out, 4 * ESCAPED_MAX);
}

static const char *
format_name (uint32_t format)
{
  return format == VHD_FORMAT_VHDX ? "VHDX" : "VHD";
}

/* The BAT states of [MS-VHDX] 2.5.1.1 that a payload block can be in,
 * by their value (4 and 5 are reserved).
 */
static const char *const payload_state_names[8] = {
  "not-present", "undefined", "zero", "unmapped", NULL, NULL,
  "fully-present", "partially-present",
};

/* The VHDX part of `vhdtool info`, after the lines VHD and VHDX share. */
static void
print_vhdx_text (const struct vhd_image_info *info)
{
  const struct vhd_vhdx_info *x = &info->vhdx;
  char uuid[37], text[4 * ESCAPED_MAX];
  bool first = true;

  printf ("logical sector size: %" PRIu32 "\n", info->logical_sector_size);
  printf ("physical sector size: %" PRIu32 "\n", info->physical_sector_size);
  printf ("creator: %s\n", escaped (x->creator, text));
  vhd_guid_to_string (&info->unique_id, uuid);
  printf ("virtual disk id: %s\n", uuid);
  printf ("current header: %d (sequence number %" PRIu64 ")\n",
          x->current_header, x->header_sequence);
  vhd_guid_to_string (&x->file_write_guid, uuid);
  printf ("file write guid: %s\n", uuid);
  vhd_guid_to_string (&x->data_write_guid, uuid);
  printf ("data write guid: %s\n", uuid);
  printf ("log: offset %" PRIu64 ", %" PRIu32 " bytes, ", x->log_offset,
          x->log_length);
  if (x->log_replayed)
    /* info opens read-only: the replay went to memory, not the file. */
    printf ("%" PRIu32 " entries replayed in memory at open (`vhdtool"
            " check --repair` writes them to the file)\n",
            x->log_entries_replayed);
  else
    printf ("empty\n");
  printf ("BAT region: offset %" PRIu64 ", %" PRIu32 " bytes\n",
          x->bat_offset, x->bat_length);
  printf ("metadata region: offset %" PRIu64 ", %" PRIu32 " bytes\n",
          x->metadata_offset, x->metadata_length);
  printf ("chunk ratio: %" PRIu32 "\n", x->chunk_ratio);
  printf ("block states:");
  for (int i = 0; i < 8; i++) {
    if (payload_state_names[i] == NULL || x->block_states[i] == 0)
      continue;
    printf ("%s %s %" PRIu64, first ? "" : ",", payload_state_names[i],
            x->block_states[i]);
    first = false;
  }
  printf ("\n");
}

static void
print_vhdx_json (const struct vhd_image_info *info, int in)
{
  const struct vhd_vhdx_info *x = &info->vhdx;
  char uuid[37];
  const int in2 = in + 2;
  bool first = true;

  printf (",\n%*s\"logical-sector-size\": %" PRIu32, in, "",
          info->logical_sector_size);
  printf (",\n%*s\"physical-sector-size\": %" PRIu32, in, "",
          info->physical_sector_size);
  printf (",\n%*s\"vhdx\": {", in, "");
  printf ("\n%*s\"creator\": ", in2, "");
  json_string (stdout, x->creator);
  printf (",\n%*s\"current-header\": %d", in2, "", x->current_header);
  printf (",\n%*s\"header-sequence-number\": %" PRIu64, in2, "",
          x->header_sequence);
  vhd_guid_to_string (&x->file_write_guid, uuid);
  printf (",\n%*s\"file-write-guid\": \"%s\"", in2, "", uuid);
  vhd_guid_to_string (&x->data_write_guid, uuid);
  printf (",\n%*s\"data-write-guid\": \"%s\"", in2, "", uuid);
  vhd_guid_to_string (&x->log_guid, uuid);
  printf (",\n%*s\"log-guid\": \"%s\"", in2, "", uuid);
  printf (",\n%*s\"log-offset\": %" PRIu64, in2, "", x->log_offset);
  printf (",\n%*s\"log-length\": %" PRIu32, in2, "", x->log_length);
  printf (",\n%*s\"log-replayed\": %s", in2, "",
          x->log_replayed ? "true" : "false");
  printf (",\n%*s\"log-entries-replayed\": %" PRIu32, in2, "",
          x->log_entries_replayed);
  printf (",\n%*s\"bat-offset\": %" PRIu64, in2, "", x->bat_offset);
  printf (",\n%*s\"bat-length\": %" PRIu32, in2, "", x->bat_length);
  printf (",\n%*s\"metadata-offset\": %" PRIu64, in2, "",
          x->metadata_offset);
  printf (",\n%*s\"metadata-length\": %" PRIu32, in2, "",
          x->metadata_length);
  printf (",\n%*s\"chunk-ratio\": %" PRIu32, in2, "", x->chunk_ratio);
  printf (",\n%*s\"block-states\": {", in2, "");
  for (int i = 0; i < 8; i++) {
    if (payload_state_names[i] == NULL)
      continue;
    printf ("%s\"%s\": %" PRIu64, first ? "" : ", ", payload_state_names[i],
            x->block_states[i]);
    first = false;
  }
  printf ("}");
  if (info->disk_type == VHD_TYPE_DIFFERENCING) {
    printf (",\n%*s\"sector-bitmap-blocks\": %" PRIu64, in2, "",
            x->sector_bitmap_blocks);
    vhd_guid_to_string (&x->parent_linkage, uuid);
    printf (",\n%*s\"parent-linkage\": \"%s\"", in2, "", uuid);
    if (x->has_parent_linkage2) {
      vhd_guid_to_string (&x->parent_linkage2, uuid);
      printf (",\n%*s\"parent-linkage2\": \"%s\"", in2, "", uuid);
    }
    printf (",\n%*s\"locator\": {", in2, "");
    printf ("\"relative_path\": ");
    json_string (stdout, x->relative_path);
    printf (", \"absolute_win32_path\": ");
    json_string (stdout, x->absolute_win32_path);
    printf (", \"volume_path\": ");
    json_string (stdout, x->volume_path);
    printf ("}");
  }
  printf ("\n%*s}", in, "");
}

static void print_info_text (const vhd_disk *disk, const char *parent_error);

/* The rest of a differencing disk's chain, or why it did not open. */
static void
print_parent_text (const vhd_disk *disk, const struct vhd_image_info *info,
                   const char *parent_error)
{
  char text[4 * ESCAPED_MAX];

  if (vhd_get_parent (disk)) {
    const vhd_disk *parent = vhd_get_parent (disk);
    struct vhd_image_info pinfo;
    vhd_get_image_info (parent, &pinfo);
    printf ("parent: %s (found by %s)\n", escaped (pinfo.path, text),
            info->parent_found_via);
    printf ("\n");
    print_info_text (parent, NULL);
  }
  else
    printf ("parent: not opened: %s\n", parent_error ? parent_error : "");
}

/* A differencing VHDX's parent locator. */
static void
print_vhdx_parent_text (const struct vhd_image_info *info)
{
  const struct vhd_vhdx_info *x = &info->vhdx;
  char uuid[37], text[4 * ESCAPED_MAX];

  printf ("sector bitmap blocks: %" PRIu64 "\n", x->sector_bitmap_blocks);
  vhd_guid_to_string (&x->parent_linkage, uuid);
  printf ("parent linkage: %s\n", uuid);
  if (x->has_parent_linkage2) {
    vhd_guid_to_string (&x->parent_linkage2, uuid);
    printf ("parent linkage2: %s\n", uuid);
  }
  if (x->relative_path[0])
    printf ("locator: relative_path %s\n", escaped (x->relative_path, text));
  if (x->absolute_win32_path[0])
    printf ("locator: absolute_win32_path %s\n",
            escaped (x->absolute_win32_path, text));
  if (x->volume_path[0])
    printf ("locator: volume_path %s\n", escaped (x->volume_path, text));
}

static void
print_info_text (const vhd_disk *disk, const char *parent_error)
{
  struct vhd_image_info info;
  char uuid[37], when[32], os[5], creator[20];
  char text[4 * ESCAPED_MAX];

  vhd_get_image_info (disk, &info);
  vhd_guid_to_string (&info.unique_id, uuid);
  format_time (info.timestamp, when);
  host_os_string (info.creator_host_os, os);
  creator_text (&info, creator);

  printf ("image: %s\n", escaped (info.path, text));
  printf ("format: %s\n", format_name (info.format));
  printf ("type: %s\n", type_name (info.disk_type));
  printf ("virtual size: %" PRIu64 "\n", info.current_size);
  printf ("file size: %" PRIu64 "\n", info.file_size);
  if (info.format == VHD_FORMAT_VHDX) {
    /* Fixed VHDX has blocks too, all of them present. */
    printf ("block size: %" PRIu32 "\n", info.block_size);
    printf ("blocks: %" PRIu32 "\n", info.max_table_entries);
    printf ("allocated blocks: %" PRIu32 "\n", info.allocated_blocks);
    print_vhdx_text (&info);
    if (info.disk_type == VHD_TYPE_DIFFERENCING) {
      print_vhdx_parent_text (&info);
      print_parent_text (disk, &info, parent_error);
    }
    return;
  }
  printf ("geometry: %u/%u/%u\n", info.cylinders, info.heads,
          info.sectors_per_track);
  if (info.disk_type != VHD_TYPE_FIXED) {
    printf ("block size: %" PRIu32 "\n", info.block_size);
    printf ("blocks: %" PRIu32 "\n", info.max_table_entries);
    printf ("allocated blocks: %" PRIu32 "\n", info.allocated_blocks);
  }
  printf ("creator: \"%s\" version 0x%08" PRIx32 " on \"%s\"\n",
          creator, info.creator_version, os);
  printf ("uuid: %s\n", uuid);
  printf ("timestamp: %s\n", when);
  if (info.footer_from_copy)
    printf ("footer: the copy at offset 0 (the trailing footer is missing "
            "or damaged)\n");
  if (info.disk_type != VHD_TYPE_DIFFERENCING)
    return;

  vhd_guid_to_string (&info.parent_unique_id, uuid);
  printf ("parent uuid: %s\n", uuid);
  printf ("parent name: %s\n", escaped (info.parent_name, text));
  for (unsigned i = 0; i < info.n_locators; i++)
    printf ("locator: %s %s\n", info.locators[i].platform_code,
            escaped (info.locators[i].path, text));
  print_parent_text (disk, &info, parent_error);
}

static void print_info_json (const vhd_disk *disk, const char *parent_error,
                             int indent);

static void
print_parent_json (const vhd_disk *disk, const struct vhd_image_info *info,
                   const char *parent_error, int in)
{
  if (vhd_get_parent (disk)) {
    printf (",\n%*s\"parent-found-by\": ", in, "");
    json_string (stdout, info->parent_found_via);
    printf (",\n%*s\"parent\": ", in, "");
    print_info_json (vhd_get_parent (disk), NULL, in);
  }
  else {
    printf (",\n%*s\"parent-error\": ", in, "");
    json_string (stdout, parent_error ? parent_error : "");
  }
}

static void
print_info_json (const vhd_disk *disk, const char *parent_error, int indent)
{
  struct vhd_image_info info;
  char uuid[37], when[32], os[5];
  const int in = indent + 2;

  vhd_get_image_info (disk, &info);
  vhd_guid_to_string (&info.unique_id, uuid);
  format_time (info.timestamp, when);
  host_os_string (info.creator_host_os, os);

  printf ("{\n%*s\"path\": ", in, "");
  json_string (stdout, info.path);
  printf (",\n%*s\"format\": \"%s\"", in, "", format_name (info.format));
  printf (",\n%*s\"type\": \"%s\"", in, "", type_name (info.disk_type));
  printf (",\n%*s\"virtual-size\": %" PRIu64, in, "", info.current_size);
  printf (",\n%*s\"file-size\": %" PRIu64, in, "", info.file_size);
  if (info.format == VHD_FORMAT_VHDX) {
    printf (",\n%*s\"uuid\": \"%s\"", in, "", uuid);
    printf (",\n%*s\"block-size\": %" PRIu32, in, "", info.block_size);
    printf (",\n%*s\"max-table-entries\": %" PRIu32, in, "",
            info.max_table_entries);
    printf (",\n%*s\"allocated-blocks\": %" PRIu32, in, "",
            info.allocated_blocks);
    print_vhdx_json (&info, in);
    if (info.disk_type == VHD_TYPE_DIFFERENCING)
      print_parent_json (disk, &info, parent_error, in);
    printf ("\n%*s}", indent, "");
    if (indent == 0)
      printf ("\n");
    return;
  }
  printf (",\n%*s\"cylinders\": %u", in, "", info.cylinders);
  printf (",\n%*s\"heads\": %u", in, "", info.heads);
  printf (",\n%*s\"sectors-per-track\": %u", in, "", info.sectors_per_track);
  printf (",\n%*s\"creator-application\": ", in, "");
  json_string_n (stdout, info.creator_application, 4);
  printf (",\n%*s\"creator-version\": %" PRIu32, in, "", info.creator_version);
  printf (",\n%*s\"creator-host-os\": ", in, "");
  json_string (stdout, os);
  printf (",\n%*s\"uuid\": \"%s\"", in, "", uuid);
  printf (",\n%*s\"timestamp\": \"%s\"", in, "", when);
  printf (",\n%*s\"footer-from-copy\": %s", in, "",
          info.footer_from_copy ? "true" : "false");
  if (info.disk_type != VHD_TYPE_FIXED) {
    printf (",\n%*s\"block-size\": %" PRIu32, in, "", info.block_size);
    printf (",\n%*s\"max-table-entries\": %" PRIu32, in, "",
            info.max_table_entries);
    printf (",\n%*s\"allocated-blocks\": %" PRIu32, in, "",
            info.allocated_blocks);
  }
  if (info.disk_type == VHD_TYPE_DIFFERENCING) {
    vhd_guid_to_string (&info.parent_unique_id, uuid);
    printf (",\n%*s\"parent-uuid\": \"%s\"", in, "", uuid);
    printf (",\n%*s\"parent-name\": ", in, "");
    json_string (stdout, info.parent_name);
    printf (",\n%*s\"locators\": [", in, "");
    for (unsigned i = 0; i < info.n_locators; i++) {
      printf ("%s{\"platform\": ", i ? ", " : "");
      json_string (stdout, info.locators[i].platform_code);
      printf (", \"path\": ");
      json_string (stdout, info.locators[i].path);
      printf ("}");
    }
    printf ("]");
    print_parent_json (disk, &info, parent_error, in);
  }
  printf ("\n%*s}", indent, "");
  if (indent == 0)
    printf ("\n");
}

bool
add_parent_dir (const char **dirs, size_t *n, const char *dir)
{
  if (*n == VHD_MAX_PARENT_DIRS) {
    usage_error ("too many --parent-dir options (at most %d)",
                 VHD_MAX_PARENT_DIRS);
    return false;
  }
  dirs[(*n)++] = dir;
  return true;
}

void
use_parent_dirs (struct vhd_create_parameters *params,
                 const char *const *dirs)
{
  if (dirs[0] == NULL)
    return;
  /* vhdkit1 begins with version2's fields, so what was set stays. */
  params->version = VHD_CREATE_VERSION_VHDKIT_1;
  params->vhdkit1.parent_dirs = dirs;
}

static int
cmd_info (int argc, char **argv)
{
  enum { OPT_JSON = 256, OPT_PARENT_DIR };
  static const struct option long_options[] = {
    { "json", no_argument, NULL, OPT_JSON },
    { "parent-dir", required_argument, NULL, OPT_PARENT_DIR },
    { "force-share", no_argument, NULL, 'U' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char *parent_dirs[VHD_MAX_PARENT_DIRS + 1] = { NULL };
  size_t n_dirs = 0;
  struct vhd_open_options opts = { .readonly = true,
                                   .parent_dirs = parent_dirs };
  char parent_error[4096] = "";
  struct vhd_image_info image;
  bool json = false;
  vhd_disk *disk;
  int c, r;

  while ((c = getopt_long (argc, argv, "hU", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_JSON: json = true; break;
    case 'U': opts.flags |= VHD_OPEN_FLAG_FORCE_SHARE; break;
    case OPT_PARENT_DIR:
      if (!add_parent_dir (parent_dirs, &n_dirs, optarg))
        return EXIT_USAGE;
      break;
    case 'h': usage (stdout); return 0;
    default: return EXIT_USAGE;
    }
  }
  if (argc - optind != 1)
    return usage_error ("%s", "info needs exactly one PATH");

  /* The image alone first: if it is bad, that is the answer, and a bad
   * image is read once, not twice.  Then, for a differencing disk, with
   * its chain; when the chain does not resolve, show the image itself and
   * say why the chain did not.
   */
  opts.flags |= VHD_OPEN_FLAG_NO_PARENTS;
  if (vhd_open (argv[optind], &opts, &disk) < 0) {
    fprintf (stderr, "%s: %s\n", program, vhd_last_error ());
    return EXIT_FAILURE;
  }
  r = vhd_get_image_info (disk, &image);
  if (r == 0 && image.disk_type == VHD_TYPE_DIFFERENCING) {
    vhd_disk *chain;
    opts.flags &= ~(uint32_t) VHD_OPEN_FLAG_NO_PARENTS;
    if (vhd_open (argv[optind], &opts, &chain) < 0)
      snprintf (parent_error, sizeof parent_error, "%s", vhd_last_error ());
    else {
      vhd_close (disk);
      disk = chain;
    }
  }
  if (json)
    print_info_json (disk, parent_error, 0);
  else
    print_info_text (disk, parent_error);
  vhd_close (disk);
  return EXIT_SUCCESS;
}

/* Exit codes of `vhdtool check`, beside 0 (clean), 1 (could not check)
 * and 2 (usage).
 */
enum {
  EXIT_CHECK_REPAIRED = 3,      /* problems were found and all repaired */
  EXIT_CHECK_CORRUPT = 4,       /* corruption remains */
  EXIT_CHECK_LEAKS = 5,         /* no corruption, only leaked space, a
                                 * lost trailing footer (VHD) or a log to
                                 * replay (VHDX): --repair fixes it */
};

static void
print_finding (void *opaque, int kind, const char *message)
{
  const char *path = opaque;
  printf ("%s: %s: %s\n", path,
          kind == VHD_CHECK_CORRUPT ? "corrupt"
          : kind == VHD_CHECK_LEAK ? "leak"
          : kind == VHD_CHECK_RECOVERABLE ? "recoverable" : "repaired",
          message);
}

static int
cmd_check (int argc, char **argv)
{
  enum { OPT_REPAIR = 256, OPT_PARENT_DIR };
  static const struct option long_options[] = {
    { "repair", no_argument, NULL, OPT_REPAIR },
    { "parent-dir", required_argument, NULL, OPT_PARENT_DIR },
    { "force-share", no_argument, NULL, 'U' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char *parent_dirs[VHD_MAX_PARENT_DIRS + 1] = { NULL };
  size_t n_dirs = 0;
  struct vhd_open_options opts = { .readonly = true,
                                   .parent_dirs = parent_dirs };
  struct vhd_check_result result;
  uint32_t flags = 0;
  int c;

  while ((c = getopt_long (argc, argv, "hU", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_REPAIR: flags |= VHD_CHECK_REPAIR; break;
    case 'U': opts.flags |= VHD_OPEN_FLAG_FORCE_SHARE; break;
    case OPT_PARENT_DIR:
      if (!add_parent_dir (parent_dirs, &n_dirs, optarg))
        return EXIT_USAGE;
      break;
    case 'h': usage (stdout); return 0;
    default: return EXIT_USAGE;
    }
  }
  if (argc - optind != 1)
    return usage_error ("%s", "check needs exactly one PATH");
  if ((flags & VHD_CHECK_REPAIR) && (opts.flags & VHD_OPEN_FLAG_FORCE_SHARE))
    return usage_error ("%s", "--repair writes: it cannot be -U");

  if (vhd_check (argv[optind], &opts, flags, print_finding, argv[optind],
                 &result) < 0) {
    fprintf (stderr, "%s: check: %s\n", program, vhd_last_error ());
    return EXIT_FAILURE;
  }
  if (result.corruptions) {
    printf ("%s: %u corruption(s) found\n", argv[optind],
            result.corruptions);
    return EXIT_CHECK_CORRUPT;
  }
  if (result.leaks || result.recoverable) {
    printf ("%s: no corruption: %" PRIu64 " bytes leaked, %u recoverable"
            " problem(s); `vhdtool check --repair` fixes them without"
            " losing data\n", argv[optind], result.leaked_bytes,
            result.recoverable);
    return EXIT_CHECK_LEAKS;
  }
  if (result.repaired) {
    printf ("%s: repaired; the image is now clean\n", argv[optind]);
    return EXIT_CHECK_REPAIRED;
  }
  printf ("%s: no errors found (%s", argv[optind],
          type_name (result.disk_type));
  if (result.disk_type != VHD_TYPE_FIXED)
    printf (", %" PRIu32 " blocks allocated", result.allocated_blocks);
  printf (")\n");
  return EXIT_SUCCESS;
}

int
main (int argc, char **argv)
{
  const char *verb;

  if (argc < 2) {
    usage (stderr);
    return EXIT_USAGE;
  }
  verb = argv[1];
  if (strcmp (verb, "--help") == 0 || strcmp (verb, "-h") == 0) {
    usage (stdout);
    return EXIT_SUCCESS;
  }
  if (strcmp (verb, "--version") == 0) {
    printf ("%s %s\n", program, vhd_get_version ());
    return EXIT_SUCCESS;
  }
  /* Each verb parses its own options, from argv[1] on. */
  if (strcmp (verb, "create") == 0)
    return cmd_create (argc - 1, argv + 1);
  if (strcmp (verb, "info") == 0)
    return cmd_info (argc - 1, argv + 1);
  if (strcmp (verb, "check") == 0)
    return cmd_check (argc - 1, argv + 1);
  if (strcmp (verb, "convert") == 0)
    return cmd_convert (argc - 1, argv + 1);
  return usage_error ("unknown command '%s'", verb);
}
