// libarchive (Debian's libarchive-dev): zip, 7z and tar archives holding a disk image.
#include <archive.h>
#include <archive_entry.h>
