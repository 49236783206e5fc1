/* Line input from stdin that keeps showing publications while it waits. It reads fd 0
 * directly (no stdio buffering) so that polling fd 0 never misses lines already read. */
#ifndef BBD_ENTRADA_H
#define BBD_ENTRADA_H

#include "rede.h"

#include <stdbool.h>
#include <stddef.h>

#define LINE_MAX_BYTES 4096 /* longest accepted input line, without the newline */

typedef struct {
    char buf[LINE_MAX_BYTES + 2]; /* room for the line, '\r' and '\n' */
    size_t len;
    bool eof;
    bool discarding;              /* inside an over-long line, dropping until its newline */
} entrada_t;

enum { LINHA_OK, LINHA_LONGA, LINHA_FIM };

/* Prints `prompt`, then waits for one line. On LINHA_OK the line (no newline, NUL-terminated,
 * may contain NUL bytes) is in out[0..*n); `out` must hold LINE_MAX_BYTES + 1 bytes.
 * LINHA_LONGA: the line was too long and was discarded. LINHA_FIM: end of input. */
int entrada_linha(entrada_t *in, rede_t *r, const char *prompt, char *out, size_t *n);

#endif
