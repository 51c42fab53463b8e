/* kgz: gzip stdin to stdout with zlib and report the CRC-32 on stderr; the
 * shape of a small C tool with a library dependency. */
#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include "version.h"

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("kgz %s (zlib %s)\n", KGZ_VERSION, zlibVersion());
        return 0;
    }
    gzFile out = gzdopen(fileno(stdout), "wb9");
    if (out == NULL) {
        fputs("kgz: gzdopen failed\n", stderr);
        return 1;
    }
    unsigned char buf[8192];
    size_t n;
    unsigned long crc = crc32(0L, Z_NULL, 0);
    unsigned long total = 0;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        crc = crc32(crc, buf, (unsigned)n);
        total += n;
        if (gzwrite(out, buf, (unsigned)n) != (int)n) {
            fputs("kgz: write failed\n", stderr);
            return 1;
        }
    }
    if (gzclose(out) != Z_OK) {
        fputs("kgz: close failed\n", stderr);
        return 1;
    }
    fprintf(stderr, "kgz: %lu bytes, crc32 %08lx\n", total, crc);
    return 0;
}
