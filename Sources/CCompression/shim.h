// The decompression libraries of Debian (liblzma-dev, zlib1g-dev, libzstd-dev, libbz2-dev), and what Swift cannot
// import of them: macros.
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>
#include <bzlib.h>

/// xz decoder flags: concatenated streams (as `xz -dc` reads them), errors reported as soon as a thread meets one.
static const uint32_t ccompression_xz_flags = LZMA_CONCATENATED | LZMA_FAIL_FAST;

/// inflateInit2 is a macro: gzip framing only (15 window bits + 16).
static inline int ccompression_inflate_init_gzip(z_stream *stream) {
    return inflateInit2(stream, 15 + 16);
}
